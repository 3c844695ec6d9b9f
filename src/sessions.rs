//! Per-user limit on open mailbox sessions (IMAP and POP3): a login that would exceed it
//! is refused with a reason the user can act on, and the slot is given back when the
//! connection ends.
//!
//! One misconfigured phone that opens a new connection per folder every minute must not
//! starve the user's other devices or the server's descriptors, while an ordinary user
//! with a phone, a tablet and Outlook (five to ten connections each) stays well under
//! the default of 50.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use understudy_protocol::{Account, AuthBackend, AuthError, Credentials};

/// Open mailbox sessions per user id.
pub struct UserSessions {
    limit: usize,
    open: Mutex<HashMap<u64, usize>>,
}

impl UserSessions {
    /// `limit` 0 means unlimited.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(UserSessions {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for `user_id`, or `None` when the user already has `limit` open.
    pub fn try_open(self: &Arc<Self>, user_id: u64) -> Option<SessionSlot> {
        let mut open = self.open.lock();
        let count = open.entry(user_id).or_insert(0);
        if self.limit > 0 && *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SessionSlot {
            sessions: self.clone(),
            user_id,
        })
    }

    /// Sessions `user_id` has open now.
    pub fn open(&self, user_id: u64) -> usize {
        self.open.lock().get(&user_id).copied().unwrap_or(0)
    }

    /// An authenticator for one connection: logins succeed only while a slot is free, and
    /// the slot is held until the connection (and so the returned authenticator) is gone.
    pub fn limit(self: &Arc<Self>, inner: Arc<dyn AuthBackend>) -> Arc<dyn AuthBackend> {
        Arc::new(Limited {
            inner,
            sessions: self.clone(),
            slot: Mutex::new(None),
        })
    }
}

/// One open session; dropping it gives the slot back.
pub struct SessionSlot {
    sessions: Arc<UserSessions>,
    user_id: u64,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = self.sessions.open.lock();
        if let Some(count) = open.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

struct Limited {
    inner: Arc<dyn AuthBackend>,
    sessions: Arc<UserSessions>,
    slot: Mutex<Option<SessionSlot>>,
}

impl AuthBackend for Limited {
    fn authenticate(&self, credentials: &Credentials) -> Result<Account, AuthError> {
        let account = self.inner.authenticate(credentials)?;
        let mut slot = self.slot.lock();
        // A second login on one connection keeps its slot (or moves it to the new user).
        if slot.as_ref().is_some_and(|s| s.user_id == account.id) {
            return Ok(account);
        }
        *slot = None;
        match self.sessions.try_open(account.id) {
            Some(taken) => {
                *slot = Some(taken);
                Ok(account)
            }
            None => {
                tracing::warn!(
                    user = %account.address,
                    protocol = credentials.protocol,
                    limit = self.sessions.limit,
                    "login refused: too many open sessions for this user"
                );
                Err(AuthError::TooManySessions)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_protocol::{AccessLevel, Secret};

    struct Always;
    impl AuthBackend for Always {
        fn authenticate(&self, c: &Credentials) -> Result<Account, AuthError> {
            Ok(Account {
                id: if c.username == "a" { 1 } else { 2 },
                address: c.username.clone(),
                access: AccessLevel::Full,
            })
        }
    }

    fn creds(user: &str) -> Credentials {
        Credentials {
            username: user.into(),
            password: Secret::new("x"),
            peer: "192.0.2.1".parse().unwrap(),
            protocol: "imap",
        }
    }

    #[test]
    fn slots_are_per_user_and_given_back_when_the_connection_ends() {
        let sessions = UserSessions::new(2);
        let inner: Arc<dyn AuthBackend> = Arc::new(Always);
        let first = sessions.limit(inner.clone());
        let second = sessions.limit(inner.clone());
        let third = sessions.limit(inner.clone());
        assert!(first.authenticate(&creds("a")).is_ok());
        assert!(second.authenticate(&creds("a")).is_ok());
        // Logging in again on a connection that holds a slot does not take another.
        assert!(second.authenticate(&creds("a")).is_ok());
        assert_eq!(sessions.open(1), 2);
        assert_eq!(third.authenticate(&creds("a")), Err(AuthError::TooManySessions));
        // Another user is not affected.
        assert!(sessions.limit(inner.clone()).authenticate(&creds("b")).is_ok());
        drop(first);
        assert_eq!(sessions.open(1), 1);
        assert!(third.authenticate(&creds("a")).is_ok());
        drop(second);
        drop(third);
        assert_eq!(sessions.open(1), 0);
    }

    #[test]
    fn zero_means_unlimited() {
        let sessions = UserSessions::new(0);
        let held: Vec<_> = (0..100).filter_map(|_| sessions.try_open(7)).collect();
        assert_eq!(held.len(), 100);
    }
}
