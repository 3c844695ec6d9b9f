//! The retention task: applies each domain's rolling archive retention once an hour in
//! small batches on the blocking pool, yielding between batches, then sweeps released
//! body objects when bodies are in an S3 bucket (`Store::sweep_bodies`).

use std::time::Duration;

use tokio::sync::watch;
use understudy_storage::Store;

const BATCH: usize = 200;
const INTERVAL: Duration = Duration::from_secs(3600);

pub async fn run(store: Store, mut shutdown: watch::Receiver<bool>) {
    loop {
        if !store.leads() {
            // Another node of a shared store runs retention; check again shortly, in
            // case it goes.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => continue,
                _ = shutdown.changed() => return,
            }
        }
        let task_store = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            // A short pause between batches lets sessions waiting on the same mailbox
            // locks go first.
            let removed =
                task_store.apply_retention(BATCH, || std::thread::sleep(Duration::from_millis(20)))?;
            // Bodies in an S3 bucket: the objects released (here or by any writer)
            // longer ago than the grace period, and orphans (`bodies.rs`).
            if let Err(e) = task_store.sweep_bodies() {
                tracing::error!(error = %e, "sweep of body objects failed");
            }
            Ok::<_, understudy_storage::StoreError>(removed)
        })
        .await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "retention pass done"),
            Ok(Err(e)) => tracing::error!(error = %e, "retention pass failed"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}
