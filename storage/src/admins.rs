//! Console administrators, their API tokens and the audit log of admin actions.
//!
//! - `admins`: name → [`AdminAccount`] (argon2id PHC hash, optional TOTP secret, role);
//! - `api_tokens`: SHA-256 of the token → [`ApiToken`] (the token itself is shown once
//!   and never stored);
//! - `audit`: time (offset so it sorts) + sequence → [`AuditEntry`], newest last;
//! - `console_sessions`: SHA-256 of the session id → [`ConsoleSession`] (the id is only
//!   in the cookie);
//! - `console_confirmations`: SHA-256 of the token → [`ConsoleConfirmation`], used once.
//!
//! Sessions and confirmations are in the store, not one node's memory, so every node on
//! a shared PostgreSQL store honours them and a restart keeps them.

use crate::db::{Batch, Direction, IterMode};
use serde::{Deserialize, Serialize};

use crate::db::{decode, Store};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;

/// What an administrator may see and change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Every domain, the server's own settings and other administrators.
    Global,
    /// Only these domains (an MSP's customer): their settings, users, queue, tracking.
    Domains(Vec<String>),
}

impl AdminRole {
    /// Whether this role covers `domain` (case-insensitive).
    pub fn covers(&self, domain: &str) -> bool {
        match self {
            AdminRole::Global => true,
            AdminRole::Domains(list) => list.iter().any(|d| d.eq_ignore_ascii_case(domain)),
        }
    }

    pub fn is_global(&self) -> bool {
        matches!(self, AdminRole::Global)
    }
}

/// A console administrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminAccount {
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Base32 TOTP secret (RFC 6238, SHA-1, 6 digits, 30 s) when the second factor is on.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// The last TOTP time step accepted, so a code is accepted once (RFC 6238 §5.2).
    #[serde(default)]
    pub totp_last_step: u64,
    pub role: AdminRole,
    pub created_at: i64,
    /// Random, made with the account: a session outlives neither its account nor a new
    /// account of the same name, even one made within the same second. Empty for
    /// accounts made before it existed.
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub last_login: Option<i64>,
}

/// A token for the JSON API, owned by an administrator and scoped like them (or less).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    /// Short public identifier (shown in listings, used to revoke).
    pub id: String,
    pub admin: String,
    pub label: String,
    /// Only reads are allowed with it.
    pub read_only: bool,
    pub created_at: i64,
}

/// One admin action: who, what, on what, when, from where, and whether it worked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    /// Administrator name, `user:ADDRESS` for self-service, `cli (uid N)` for the socket.
    pub actor: String,
    /// e.g. "outage start", "login failed".
    pub action: String,
    pub target: String,
    /// The domain the action concerns, so a domain admin sees their domains' entries.
    #[serde(default)]
    pub domain: Option<String>,
    /// Client address or "admin socket".
    pub source: String,
    pub ok: bool,
    #[serde(default)]
    pub detail: String,
}

/// Who a console session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionOwner {
    Admin {
        name: String,
        role: AdminRole,
        /// When the account was made and its random id: a session outlives neither
        /// its account nor a new account of the same name.
        since: i64,
        account_id: String,
    },
    /// A mail user on the self-service pages.
    User { address: String },
}

impl SessionOwner {
    /// The name written in the audit log.
    pub fn actor(&self) -> String {
        match self {
            SessionOwner::Admin { name, .. } => name.clone(),
            SessionOwner::User { address } => format!("user:{address}"),
        }
    }
}

/// A console session. Expiry (idle and absolute) is the console's to judge from
/// `created` and `last_seen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSession {
    pub who: SessionOwner,
    /// The session's CSRF token (useless without the session cookie).
    pub csrf: String,
    pub created: i64,
    pub last_seen: i64,
}

/// A bulk action's confirmation: for whom, what was asked (the console's own JSON), the
/// entries listed when it was shown, when, and when it was used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleConfirmation {
    pub owner: String,
    pub selection: String,
    pub listed: Vec<u64>,
    pub issued: i64,
    #[serde(default)]
    pub used: Option<i64>,
}

fn audit_key(at: i64, seq: u64) -> [u8; 16] {
    u64_pair((at as u64) ^ (1 << 63), seq)
}

impl Store {
    /// Creates an administrator; fails if the name is taken.
    pub fn create_admin(&self, admin: &AdminAccount) -> StoreResult<()> {
        let _guard = self.lock(&[("admin", admin.name.as_str())])?;
        if self.admin(&admin.name)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("administrator {}", admin.name)));
        }
        self.put_admin(admin)
    }

    /// Replaces an administrator's record (synced).
    pub fn update_admin(&self, admin: &AdminAccount) -> StoreResult<()> {
        if self.admin(&admin.name)?.is_none() {
            return Err(StoreError::NotFound(format!("administrator {}", admin.name)));
        }
        self.put_admin(admin)
    }

    fn put_admin(&self, admin: &AdminAccount) -> StoreResult<()> {
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_ADMINS, admin.name.as_bytes(), admin)?;
        self.commit(batch)
    }

    pub fn admin(&self, name: &str) -> StoreResult<Option<AdminAccount>> {
        self.get_json(CF_ADMINS, name.as_bytes())
    }

    pub fn admins(&self) -> StoreResult<Vec<AdminAccount>> {
        self.scan_prefix(CF_ADMINS, b"")?
            .iter()
            .map(|(_, v)| decode(CF_ADMINS, v))
            .collect()
    }

    /// Removes an administrator and every API token they own, in one synced write.
    pub fn remove_admin(&self, name: &str) -> StoreResult<()> {
        if self.admin(name)?.is_none() {
            return Err(StoreError::NotFound(format!("administrator {name}")));
        }
        let mut batch = Batch::default();
        self.delete(&mut batch, CF_ADMINS, name.as_bytes())?;
        for (key, value) in self.scan_prefix(CF_API_TOKENS, b"")? {
            let token: ApiToken = decode(CF_API_TOKENS, &value)?;
            if token.admin == name {
                self.delete(&mut batch, CF_API_TOKENS, &key)?;
            }
        }
        self.commit(batch)
    }

    /// Stores a token under the SHA-256 of its secret.
    pub fn add_api_token(&self, secret_hash: &[u8; 32], token: &ApiToken) -> StoreResult<()> {
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_API_TOKENS, secret_hash, token)?;
        self.commit(batch)
    }

    /// The token whose secret hashes to `secret_hash`.
    pub fn api_token(&self, secret_hash: &[u8; 32]) -> StoreResult<Option<ApiToken>> {
        self.get_json(CF_API_TOKENS, secret_hash)
    }

    pub fn api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.scan_prefix(CF_API_TOKENS, b"")?
            .iter()
            .map(|(_, v)| decode(CF_API_TOKENS, v))
            .collect()
    }

    /// Revokes the token with this public id; false if there is none.
    pub fn remove_api_token(&self, id: &str) -> StoreResult<bool> {
        for (key, value) in self.scan_prefix(CF_API_TOKENS, b"")? {
            let token: ApiToken = decode(CF_API_TOKENS, &value)?;
            if token.id == id {
                let mut batch = Batch::default();
                self.delete(&mut batch, CF_API_TOKENS, &key)?;
                self.commit(batch)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Appends an audit entry (synced: the record of an action outlives a crash after it).
    pub fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        // One appender at a time, so two entries of one second get distinct sequences.
        let _guard = self.lock(&["audit log"])?;
        let cf = CF_AUDIT;
        let prefix = audit_key(entry.at, 0);
        let mut seq = 0;
        let upper = audit_key(entry.at, u64::MAX);
        if let Some(item) = self.iter(cf, IterMode::From(&upper, Direction::Reverse))?.next() {
            let (key, _) = item?;
            if key.len() == 16 && key[..8] == prefix[..8] {
                seq = split_u64_pair(&key).map(|(_, s)| s + 1).unwrap_or(0);
            }
        }
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_AUDIT, &audit_key(entry.at, seq), entry)?;
        self.commit(batch)
    }

    /// Stores a console session under `id_hash` (synced).
    pub fn put_console_session(&self, id_hash: &[u8; 32], session: &ConsoleSession) -> StoreResult<()> {
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_CONSOLE_SESSIONS, id_hash, session)?;
        self.commit(batch)
    }

    pub fn console_session(&self, id_hash: &[u8; 32]) -> StoreResult<Option<ConsoleSession>> {
        self.get_json(CF_CONSOLE_SESSIONS, id_hash)
    }

    /// Ends a session (synced); nothing if there is none.
    pub fn remove_console_session(&self, id_hash: &[u8; 32]) -> StoreResult<()> {
        let _guard = self.lock(&[("console session", &id_hash[..])])?;
        let mut batch = Batch::default();
        self.delete(&mut batch, CF_CONSOLE_SESSIONS, id_hash)?;
        self.commit(batch)
    }

    /// Records that a session was used at `now` (synced), if it still exists: under the
    /// store's lock for the session, like [`Store::remove_console_session`], so a
    /// request that read the session just before a logout (on this node or another)
    /// cannot write it back.
    pub fn touch_console_session(&self, id_hash: &[u8; 32], now: i64) -> StoreResult<bool> {
        let _guard = self.lock(&[("console session", &id_hash[..])])?;
        let Some(mut session) = self.console_session(id_hash)? else {
            return Ok(false);
        };
        session.last_seen = session.last_seen.max(now);
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_CONSOLE_SESSIONS, id_hash, &session)?;
        self.commit(batch)?;
        Ok(true)
    }

    /// Removes every session `keep` refuses (expired ones), in one synced write; returns
    /// how many went.
    pub fn prune_console_sessions(&self, keep: &dyn Fn(&ConsoleSession) -> bool) -> StoreResult<usize> {
        let mut batch = Batch::default();
        let mut removed = 0;
        for (key, value) in self.scan_prefix(CF_CONSOLE_SESSIONS, b"")? {
            // An unreadable record is dropped too: it can log no one in.
            if !decode(CF_CONSOLE_SESSIONS, &value).is_ok_and(|s: ConsoleSession| keep(&s)) {
                self.delete(&mut batch, CF_CONSOLE_SESSIONS, &key)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.commit(batch)?;
        }
        Ok(removed)
    }

    /// Stores a new confirmation under `token_hash` (synced), first dropping those
    /// `keep` refuses (expired).
    pub fn put_console_confirmation(
        &self,
        token_hash: &[u8; 32],
        confirmation: &ConsoleConfirmation,
        keep: &dyn Fn(&ConsoleConfirmation) -> bool,
    ) -> StoreResult<()> {
        let mut batch = Batch::default();
        for (key, value) in self.scan_prefix(CF_CONSOLE_CONFIRMATIONS, b"")? {
            if !decode(CF_CONSOLE_CONFIRMATIONS, &value).is_ok_and(|c: ConsoleConfirmation| keep(&c)) {
                self.delete(&mut batch, CF_CONSOLE_CONFIRMATIONS, &key)?;
            }
        }
        self.put_json(&mut batch, CF_CONSOLE_CONFIRMATIONS, token_hash, confirmation)?;
        self.commit(batch)
    }

    /// Redeems the confirmation under `token_hash`: `judge` sees it (or `None`) and may
    /// change it (mark it used); a change is written (synced) before this returns. Under
    /// the store's lock for the token, taken by every node on a shared store, so two
    /// requests presenting it at once, on one node or two, are judged one after the
    /// other and only one finds it unused.
    pub fn redeem_console_confirmation<R>(
        &self,
        token_hash: &[u8; 32],
        judge: impl FnOnce(Option<&mut ConsoleConfirmation>) -> R,
    ) -> StoreResult<R> {
        let _guard = self.lock(&[("console confirmation", &token_hash[..])])?;
        let mut current: Option<ConsoleConfirmation> = self.get_json(CF_CONSOLE_CONFIRMATIONS, token_hash)?;
        let before = current.clone();
        let result = judge(current.as_mut());
        if current != before {
            if let Some(changed) = &current {
                let mut batch = Batch::default();
                self.put_json(&mut batch, CF_CONSOLE_CONFIRMATIONS, token_hash, changed)?;
                self.commit(batch)?;
            }
        }
        Ok(result)
    }

    /// The newest `limit` audit entries that `keep` accepts, newest first.
    pub fn audit_entries(
        &self,
        limit: usize,
        keep: &dyn Fn(&AuditEntry) -> bool,
    ) -> StoreResult<Vec<AuditEntry>> {
        let cf = CF_AUDIT;
        let mut out = Vec::new();
        for item in self.iter(cf, IterMode::End)? {
            let (_, value) = item?;
            let entry: AuditEntry = decode(CF_AUDIT, &value)?;
            if keep(&entry) {
                out.push(entry);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ManualClock, StoreOptions};

    fn entry(at: i64, action: &str) -> AuditEntry {
        AuditEntry {
            at,
            actor: "root".into(),
            action: action.into(),
            target: "example.com".into(),
            domain: Some("example.com".into()),
            source: "192.0.2.1".into(),
            ok: true,
            detail: String::new(),
        }
    }

    #[test]
    fn audit_entries_come_back_newest_first_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        {
            let store = Store::open_with(&path, StoreOptions::default(), clock.clone()).unwrap();
            for (at, action) in [(10, "a"), (10, "b"), (5, "early"), (20, "c")] {
                store.append_audit(&entry(at, action)).unwrap();
            }
        }
        let store = Store::open_with(&path, StoreOptions::default(), clock).unwrap();
        let all: Vec<String> = store
            .audit_entries(10, &|_| true)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(all, ["c", "b", "a", "early"]);
        let two = store.audit_entries(2, &|e| e.action != "c").unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].action, "b");
    }

    #[test]
    fn admins_and_their_tokens_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let admin = AdminAccount {
            name: "msp".into(),
            password_hash: "x".into(),
            totp_secret: None,
            totp_last_step: 0,
            role: AdminRole::Domains(vec!["Example.com".into()]),
            created_at: 1,
            account_id: "a1".into(),
            last_login: None,
        };
        store.create_admin(&admin).unwrap();
        assert!(store.create_admin(&admin).is_err(), "names are unique");
        assert!(admin.role.covers("example.COM") && !admin.role.covers("other.org"));
        let token = ApiToken {
            id: "t1".into(),
            admin: "msp".into(),
            label: "script".into(),
            read_only: true,
            created_at: 1,
        };
        store.add_api_token(&[7; 32], &token).unwrap();
        assert_eq!(store.api_token(&[7; 32]).unwrap().unwrap().id, "t1");
        store.remove_admin("msp").unwrap();
        assert!(store.api_token(&[7; 32]).unwrap().is_none());
        assert!(store.admins().unwrap().is_empty());
    }
}
