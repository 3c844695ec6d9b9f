//! Ending a user's open sessions at once when an administrator deactivates or removes
//! them (or sets their access to `none`): admin commands broadcast the user id, every
//! connection's driver listens, and a session whose login matches says goodbye with
//! `Goodbye::Revoked`.
//!
//! The protocol sessions do not expose who logged in, so each connection gets its own
//! [`SessionAccount`]: a wrapper around the shared authenticator records the account a
//! successful login returned, and a wrapper around the session reports it to the driver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;
use understudy_protocol::{Account, AuthBackend, AuthError, Credentials, Goodbye, Output, Session};
use understudy_storage::Store;

/// Sends the ids of users whose sessions must end now.
pub type Revocations = broadcast::Sender<u64>;

/// Deactivating a whole CSV of users at once stays well within this; a connection that
/// still falls behind re-checks its user in the store (see `driver`).
const CAPACITY: usize = 4096;

pub fn revocations() -> Revocations {
    broadcast::channel(CAPACITY).0
}

/// The account one connection logged in as (0: none yet; user ids start at 1).
#[derive(Clone, Default)]
pub struct SessionAccount(Arc<AtomicU64>);

impl SessionAccount {
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    /// The authenticator this connection's session should use. Successful logins are
    /// also recorded in `store` as the user's last login over that protocol.
    pub fn auth(&self, inner: Arc<dyn AuthBackend>, store: &Store) -> Arc<dyn AuthBackend> {
        Arc::new(RecordingAuth {
            inner,
            account: self.clone(),
            store: store.clone(),
        })
    }

    /// Wraps the connection's session so the driver can ask who is logged in.
    pub fn track(self, session: Box<dyn Session>) -> Box<dyn Session> {
        Box::new(Tracked {
            inner: session,
            account: self,
        })
    }
}

struct RecordingAuth {
    inner: Arc<dyn AuthBackend>,
    account: SessionAccount,
    store: Store,
}

impl AuthBackend for RecordingAuth {
    fn authenticate(&self, credentials: &Credentials) -> Result<Account, AuthError> {
        let result = self.inner.authenticate(credentials);
        if let Ok(account) = &result {
            self.account.0.store(account.id, Ordering::Release);
            // For `user list`: who has set up which protocol. Not worth failing a login.
            if let Err(e) = self
                .store
                .record_login(account.id, credentials.protocol, self.store.now())
            {
                tracing::warn!(user = %account.address, error = %e, "cannot record the login time");
            }
        }
        result
    }
}

struct Tracked {
    inner: Box<dyn Session>,
    account: SessionAccount,
}

impl Session for Tracked {
    fn greeting(&mut self) -> Output {
        self.inner.greeting()
    }
    fn receive(&mut self, input: &[u8]) -> Output {
        self.inner.receive(input)
    }
    fn receive_inline(&mut self, input: &[u8]) -> Option<Output> {
        self.inner.receive_inline(input)
    }
    fn tls_started(&mut self) {
        self.inner.tls_started()
    }
    fn mailbox_changed(&mut self) -> Output {
        self.inner.mailbox_changed()
    }
    fn goodbye(&mut self, why: Goodbye) -> Vec<u8> {
        self.inner.goodbye(why)
    }
    fn authenticated(&self) -> bool {
        self.inner.authenticated()
    }
    fn busy(&self) -> bool {
        self.inner.busy()
    }
    fn has_pending(&self) -> bool {
        self.inner.has_pending()
    }
    fn account_id(&self) -> Option<u64> {
        self.account.get()
    }
    fn commands(&self) -> u64 {
        self.inner.commands()
    }
}
