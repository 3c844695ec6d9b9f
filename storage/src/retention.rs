//! Rolling archive retention: removes messages older than a domain's retention from the
//! continuity mailboxes (never from the relay queue), a small batch at a time so the
//! mailbox locks are held only briefly.

use crate::db::Store;
use crate::error::StoreResult;

impl Store {
    /// Expunges up to `limit` messages of one mailbox whose INTERNALDATE is before
    /// `cutoff` (Unix seconds). Returns how many went; call again while it returns `limit`.
    pub fn expire_messages(
        &self,
        user_id: u64,
        mailbox_id: u64,
        cutoff: i64,
        limit: usize,
    ) -> StoreResult<usize> {
        let (_, messages) = self.messages(user_id, mailbox_id)?;
        let old: Vec<u32> = messages
            .iter()
            .filter(|m| m.internal_date < cutoff)
            .take(limit)
            .map(|m| m.uid)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        Ok(self.expunge(user_id, mailbox_id, &old)?.len())
    }

    /// Applies every domain's retention once; returns the number of messages removed.
    /// `pause` runs between batches (the server yields there so sessions are not stalled).
    pub fn apply_retention(&self, batch: usize, mut pause: impl FnMut()) -> StoreResult<usize> {
        let now = self.now();
        let mut removed = 0;
        let domains = self.domains()?;
        // Deleted copies kept for `queue redeliver` go with the rest of the archive.
        let cutoffs: std::collections::HashMap<String, i64> = domains
            .iter()
            .filter(|d| d.retention_days > 0)
            .map(|d| (d.name.clone(), now - d.retention_days as i64 * 86_400))
            .collect();
        let expired = self.expire_recoverable(|domain| cutoffs.get(domain).copied())?;
        if expired > 0 {
            tracing::info!(
                removed = expired,
                "retention: deleted copies no longer recoverable"
            );
        }
        for domain in domains {
            if domain.retention_days == 0 {
                continue;
            }
            let cutoff = now - domain.retention_days as i64 * 86_400;
            for user in self.users(&domain.name)? {
                for mailbox in self.mailboxes(user.id)? {
                    loop {
                        let n = self.expire_messages(user.id, mailbox.id, cutoff, batch)?;
                        removed += n;
                        if n > 0 {
                            tracing::info!(user = %user.address, mailbox = %mailbox.name, removed = n, "retention");
                            pause();
                        }
                        if n < batch {
                            break;
                        }
                    }
                }
            }
        }
        Ok(removed)
    }
}
