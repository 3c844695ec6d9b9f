//! Change notification: a session watching a mailbox wakes when a write to it commits
//! (in this process, or on another node of a shared store), without polling the store.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::watch;

/// One watch channel per mailbox that someone is watching; the value is the mailbox's
/// highest modseq after the last committed change.
#[derive(Default)]
pub(crate) struct Notifier {
    channels: Mutex<HashMap<u64, watch::Sender<u64>>>,
}

impl Notifier {
    pub fn subscribe(&self, mailbox: u64, current: u64) -> watch::Receiver<u64> {
        let mut channels = self.channels.lock();
        // Drop channels nobody listens to any more, so the map stays as small as the
        // number of open sessions.
        if channels.len() > 64 {
            channels.retain(|_, tx| tx.receiver_count() > 0);
        }
        channels
            .entry(mailbox)
            .or_insert_with(|| watch::channel(current).0)
            .subscribe()
    }

    /// Wakes every watcher (after a lost connection to the other nodes' announcements:
    /// anything may have changed); they re-read the store.
    pub fn wake_all(&self) {
        for tx in self.channels.lock().values() {
            tx.send_modify(|_| {});
        }
    }

    pub fn publish(&self, mailbox: u64, modseq: u64) {
        let channels = self.channels.lock();
        if let Some(tx) = channels.get(&mailbox) {
            tx.send_if_modified(|v| {
                if modseq > *v {
                    *v = modseq;
                    true
                } else {
                    false
                }
            });
        }
    }
}
