//! Console sessions, their cookie, CSRF tokens and the failed-login throttle.
//!
//! A session is a random 256-bit id in the `__Host-us_session` cookie (HttpOnly, Secure,
//! SameSite=Strict, Path=/), kept in the store under the SHA-256 of the id (never the id
//! itself), so every node on a shared store knows it and a restart keeps it, with an
//! idle and an absolute expiry read from an injected clock. A new id is made at every
//! login, so an id planted before login (session fixation) never becomes a logged-in
//! one. Each session has its own CSRF token, checked on every state change; the login
//! forms, which have no session yet, use a double-submit token in `__Host-us_login`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use understudy_storage::admins::ConsoleSession;
use understudy_storage::{Clock, Store, StoreResult};

pub const SESSION_COOKIE: &str = "__Host-us_session";
pub const LOGIN_COOKIE: &str = "__Host-us_login";

/// Who a session belongs to (as the store keeps it).
pub use understudy_storage::admins::SessionOwner as Who;

pub type Session = ConsoleSession;

/// The sessions, in the store, shared by every request (and every node).
pub struct Sessions {
    store: Store,
    clock: Arc<dyn Clock>,
    idle: i64,
    max: i64,
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The SHA-256 of a secret: what the store keeps instead of a session id or a token.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    pub fn new(store: Store, clock: Arc<dyn Clock>, idle_secs: u64, max_secs: u64) -> Sessions {
        Sessions {
            store,
            clock,
            idle: i64::try_from(idle_secs).unwrap_or(i64::MAX),
            max: i64::try_from(max_secs).unwrap_or(i64::MAX),
        }
    }

    /// Starts a session for `who` under a new id (synced); returns the id. Blocks on the
    /// store: call it off the async threads.
    pub fn create(&self, who: Who) -> StoreResult<String> {
        let now = self.clock.now();
        // Expired sessions are dropped here, so the store holds only live ones.
        self.store.prune_console_sessions(&|s| self.alive(s, now))?;
        let id = random_token();
        self.store.put_console_session(
            &secret_hash(&id),
            &Session {
                who,
                csrf: random_token(),
                created: now,
                last_seen: now,
            },
        )?;
        Ok(id)
    }

    fn alive(&self, s: &Session, now: i64) -> bool {
        now - s.last_seen < self.idle && now - s.created < self.max
    }

    /// How stale the stored `last_seen` may get before a request writes it again: a
    /// synced write per page (the dashboard reloads every 10 s) would cost more than
    /// the idle limit needs; a session may so end up to this much before its idle limit.
    fn touch_every(&self) -> i64 {
        (self.idle / 4).clamp(1, 60)
    }

    /// The live session with this id (its idle clock restarts), or `None`. Blocks on
    /// the store.
    pub fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        let now = self.clock.now();
        let hash = secret_hash(id);
        let Some(mut session) = self.store.console_session(&hash)? else {
            return Ok(None);
        };
        if !self.alive(&session, now) {
            self.store.remove_console_session(&hash)?;
            return Ok(None);
        }
        if now - session.last_seen >= self.touch_every() {
            // Ended meanwhile (a logout on another node): not written back.
            if !self.store.touch_console_session(&hash, now)? {
                return Ok(None);
            }
            session.last_seen = now;
        }
        Ok(Some(session))
    }

    /// Ends the session with this id (synced). Blocks on the store.
    pub fn remove(&self, id: &str) -> StoreResult<()> {
        self.store.remove_console_session(&secret_hash(id))
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// `Set-Cookie` for a session or login cookie; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

/// Failed console logins per name and per client address, with a lock-out.
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u32, i64)>>,
    clock: Arc<dyn Clock>,
    max: u32,
    lockout: i64,
}

impl LoginThrottle {
    pub fn new(clock: Arc<dyn Clock>, max: u32, lockout_secs: u64) -> LoginThrottle {
        LoginThrottle {
            failures: Mutex::new(HashMap::new()),
            clock,
            max,
            lockout: i64::try_from(lockout_secs).unwrap_or(i64::MAX),
        }
    }

    fn keys(name: &str, ip: IpAddr) -> [String; 2] {
        [format!("name {}", name.to_ascii_lowercase()), format!("ip {ip}")]
    }

    /// Locked out: the name from anywhere after `max` failures, the address after 4×.
    pub fn locked(&self, name: &str, ip: IpAddr) -> bool {
        let now = self.clock.now();
        let map = self.failures.lock();
        let [by_name, by_ip] = Self::keys(name, ip);
        let over = |key: &str, max: u32| {
            map.get(key)
                .is_some_and(|(n, since)| *n >= max && now - since < self.lockout)
        };
        over(&by_name, self.max) || over(&by_ip, self.max.saturating_mul(4))
    }

    /// The name or the client address failed recently: its check waits in the hash
    /// pool's suspect lane, behind the clean ones.
    pub fn suspect(&self, name: &str, ip: IpAddr) -> bool {
        let now = self.clock.now();
        let map = self.failures.lock();
        Self::keys(name, ip).iter().any(|key| {
            map.get(key)
                .is_some_and(|(n, since)| *n > 0 && now - since < self.lockout)
        })
    }

    pub fn failed(&self, name: &str, ip: IpAddr) {
        let now = self.clock.now();
        let mut map = self.failures.lock();
        map.retain(|_, (_, since)| now - *since < self.lockout);
        for key in Self::keys(name, ip) {
            let entry = map.entry(key).or_insert((0, now));
            entry.0 += 1;
        }
    }

    pub fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .remove(&format!("name {}", name.to_ascii_lowercase()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use understudy_storage::ManualClock;

    #[test]
    fn sessions_expire_when_idle_and_at_their_absolute_limit() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1000));
        let store = Store::open_with(&dir.path().join("db"), Default::default(), clock.clone()).unwrap();
        let sessions = Sessions::new(store.clone(), clock.clone(), 60, 300);
        let who = Who::User {
            address: "anna@example.com".into(),
        };
        let id = sessions.create(who.clone()).unwrap();
        clock.advance(59);
        assert!(sessions.get(&id).unwrap().is_some(), "used within the idle time");
        clock.advance(59);
        assert!(sessions.get(&id).unwrap().is_some(), "the idle clock restarted");
        clock.advance(61);
        assert!(sessions.get(&id).unwrap().is_none(), "idle too long");
        let id = sessions.create(who.clone()).unwrap();
        for _ in 0..6 {
            clock.advance(50);
            let _ = sessions.get(&id);
        }
        assert!(
            sessions.get(&id).unwrap().is_none(),
            "past the absolute limit however busy"
        );
        assert!(sessions.get("planted").unwrap().is_none());
        // Only the id's hash is stored; another handle on the store (another node, or
        // after a restart) knows the session; removing it ends it for every handle.
        let id = sessions.create(who).unwrap();
        assert!(store.console_session(&secret_hash(&id)).unwrap().is_some());
        let again = Sessions::new(store.clone(), clock.clone(), 60, 300);
        assert!(again.get(&id).unwrap().is_some(), "the other handle knows it");
        again.remove(&id).unwrap();
        assert!(sessions.get(&id).unwrap().is_none(), "ended for both");
    }

    #[test]
    fn the_throttle_locks_a_name_then_lets_go() {
        let clock = Arc::new(ManualClock::new(1000));
        let t = LoginThrottle::new(clock.clone(), 3, 60);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(!t.locked("root", ip));
            t.failed("root", ip);
        }
        assert!(t.locked("ROOT", ip));
        assert!(
            t.locked("root", "192.0.2.2".parse().unwrap()),
            "the name from anywhere"
        );
        assert!(!t.locked("other", ip));
        clock.advance(61);
        assert!(!t.locked("root", ip));
    }

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(
            cookie("a=1; __Host-us_session=abc; b=2", SESSION_COOKIE),
            Some("abc")
        );
        assert_eq!(cookie("a=1", SESSION_COOKIE), None);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
