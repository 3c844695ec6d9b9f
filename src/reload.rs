//! SIGHUP: re-read the configuration file and the TLS certificate and key without
//! dropping a connection. A configuration with problems is refused (every problem is
//! logged) and the running one stays; so does the old certificate if the new one cannot
//! be loaded. The certificate takes effect for new connections and STARTTLS at once;
//! other changed sections are reported as needing a restart.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::shared::Shared;

pub async fn on_sighup(shared: Arc<Shared>, path: Option<PathBuf>, mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; reload needs a restart");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => reload(&shared, path.as_ref()),
                _ = shutdown.changed() => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (shared, path);
        let _ = shutdown.changed().await;
    }
}

fn reload(shared: &Shared, path: Option<&PathBuf>) {
    tracing::info!("SIGHUP: reloading the configuration");
    let loaded = match path {
        Some(p) => Config::load(p),
        None => Config::dev(),
    };
    let new = match loaded {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration refused, the running one stays: {e}");
            return;
        }
    };
    match &new.tls {
        Some(tls) => match crate::tls::acceptor(tls) {
            Ok(acceptor) => {
                *shared.tls.write() = Some(acceptor);
                tracing::info!(certificate = %tls.certificate.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!("new TLS certificate refused, the old one stays: {e:#}");
                return;
            }
        },
        None => tracing::warn!("the new configuration has no [tls]; keeping the current certificate"),
    }
    let old = &shared.config;
    let mut restart = Vec::new();
    for (section, changed) in [
        ("hostname", old.hostname != new.hostname),
        ("data_dir", old.data_dir != new.data_dir),
        (
            "listen",
            format!("{:?}", old.listen) != format!("{:?}", new.listen),
        ),
        (
            "limits",
            format!("{:?}", old.limits) != format!("{:?}", new.limits),
        ),
        ("auth", format!("{:?}", old.auth) != format!("{:?}", new.auth)),
        (
            "password_policy",
            format!("{:?}", old.password_policy) != format!("{:?}", new.password_policy),
        ),
        ("log", format!("{:?}", old.log) != format!("{:?}", new.log)),
        (
            "metrics",
            format!("{:?}", old.metrics) != format!("{:?}", new.metrics),
        ),
    ] {
        if changed {
            restart.push(section);
        }
    }
    if restart.is_empty() {
        tracing::info!("configuration reloaded");
    } else {
        tracing::warn!(sections = %restart.join(", "), "configuration reloaded; these sections take effect at the next restart");
    }
}
