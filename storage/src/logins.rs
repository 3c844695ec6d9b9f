//! Each user's last successful login per protocol (`imap`, `pop3`, `submission`), for
//! `user list` and `user show`: who has set up their devices before the outage day.
//! Written without sync: no reply promises it, and a login lost in a crash is only an
//! older time shown.

use std::collections::BTreeMap;

use crate::db::Batch;

use crate::db::{read_i64, Store};
use crate::error::StoreResult;
use crate::keys::*;

fn login_key(user_id: u64, protocol: &str) -> Vec<u8> {
    let mut key = u64_key(user_id).to_vec();
    key.extend_from_slice(protocol.as_bytes());
    key
}

impl Store {
    /// Records a login of `user_id` over `protocol` at `at`.
    pub fn record_login(&self, user_id: u64, protocol: &str, at: i64) -> StoreResult<()> {
        let mut batch = Batch::default();
        batch.put(CF_LOGINS, login_key(user_id, protocol), at.to_be_bytes());
        self.commit_lazy(batch)
    }

    /// The last login per protocol of `user_id`.
    pub fn last_logins(&self, user_id: u64) -> StoreResult<BTreeMap<String, i64>> {
        let prefix = u64_key(user_id);
        let mut out = BTreeMap::new();
        for (k, v) in self.scan_prefix(CF_LOGINS, &prefix)? {
            let protocol = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(at) = read_i64(&v) {
                out.insert(protocol, at);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn last_login_per_protocol_is_kept_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.record_login(1, "imap", 100).unwrap();
        store.record_login(1, "pop3", 50).unwrap();
        store.record_login(1, "imap", 200).unwrap();
        store.record_login(12, "submission", 7).unwrap();
        let logins = store.last_logins(1).unwrap();
        assert_eq!(
            logins.into_iter().collect::<Vec<_>>(),
            [("imap".into(), 200), ("pop3".into(), 50)]
        );
        assert_eq!(store.last_logins(12).unwrap().len(), 1);
        assert!(store.last_logins(2).unwrap().is_empty());
    }
}
