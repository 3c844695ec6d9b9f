//! Password hashing (argon2id), the password policy, the verified-credential cache and
//! login throttling; `Authenticator` implements the protocols' `AuthBackend` on the store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use understudy_protocol::{AccessLevel, Account, AuthBackend, AuthError, Credentials, Secret};
use understudy_storage::outage::OutagePhase;
use understudy_storage::{AccessWindow, Clock, Store};

use crate::config::AuthConfig;

/// Hashes a password with argon2id and the OWASP parameters (19 MiB, 2 passes, 1 lane),
/// returning the PHC string stored in the user record.
pub fn hash_password(password: &Secret) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash password: {e}"))
}

/// Checks a password against a stored PHC string.
pub fn verify_password(password: &Secret, phc: &str) -> bool {
    #[cfg(test)]
    tests::VERIFICATIONS.with(|n| n.set(n.get() + 1));
    Argon2::default()
        .verify_password(password.expose().as_bytes(), phc)
        .is_ok()
}

/// A fixed hash verified when the user does not exist, so that the reply takes as long as
/// for a wrong password and cannot reveal which addresses exist.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&Secret::new("understudy-decoy-password")).unwrap_or_default())
}

/// Checks a new password against the policy; the error says which rule failed.
pub use crate::admin::password::check_policy;

/// Generates a random password that satisfies the default policy (for bulk creation).
pub fn random_password() -> String {
    use rand::Rng;
    const SETS: [&[u8]; 3] = [
        b"ABCDEFGHJKLMNPQRSTUVWXYZ",
        b"abcdefghijkmnopqrstuvwxyz",
        b"23456789",
    ];
    let mut rng = rand::rng();
    let mut out: Vec<u8> = SETS
        .iter()
        .map(|set| set[rng.random_range(0..set.len())])
        .collect();
    let all: Vec<u8> = SETS.concat();
    while out.len() < 16 {
        out.push(all[rng.random_range(0..all.len())]);
    }
    for i in (1..out.len()).rev() {
        out.swap(i, rng.random_range(0..=i));
    }
    String::from_utf8(out).unwrap_or_default()
}

struct CacheEntry {
    digest: [u8; 32],
    phc: String,
    expires: i64,
}

/// Dovecot-style auth cache: a client that logs in every minute pays for argon2 once per
/// TTL. Keyed by address; holds a keyed SHA-256 of the password (the key is random per
/// process, so the cache is useless to anyone who dumps memory for offline guessing of
/// other processes) and the PHC string it was checked against, so a password change
/// invalidates it at once.
struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<String, CacheEntry>>,
}

impl CredentialCache {
    fn new() -> Self {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        CredentialCache {
            key,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, address: &str, password: &Secret) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(address.as_bytes());
        h.update([0]);
        h.update(password.expose().as_bytes());
        h.finalize().into()
    }

    fn hit(&self, address: &str, password: &Secret, phc: &str, now: i64) -> bool {
        let digest = self.digest(address, password);
        let entries = self.entries.lock();
        entries
            .get(address)
            .is_some_and(|e| e.expires > now && e.phc == phc && e.digest == digest)
    }

    fn insert(&self, address: &str, password: &Secret, phc: &str, expires: i64, now: i64) {
        let digest = self.digest(address, password);
        let mut entries = self.entries.lock();
        if entries.len() >= 100_000 {
            entries.retain(|_, e| e.expires > now);
        }
        entries.insert(
            address.to_string(),
            CacheEntry {
                digest,
                phc: phc.to_string(),
                expires,
            },
        );
    }
}

#[derive(Default, Clone, Copy)]
struct FailureCount {
    failures: u32,
    last: i64,
    locked_until: i64,
}

/// Failed-login throttling per address and per client IP: after `max_failures` within the
/// lock-out window, further attempts are refused until the lock-out ends.
struct Throttle {
    max_failures: u32,
    lockout: i64,
    /// Per recent failure of the address, before a failed login is answered.
    failure_delay: std::time::Duration,
    by_address: Mutex<HashMap<String, FailureCount>>,
    by_ip: Mutex<HashMap<IpAddr, FailureCount>>,
}

impl Throttle {
    fn locked(&self, address: &str, ip: IpAddr, now: i64) -> bool {
        let a = self
            .by_address
            .lock()
            .get(address)
            .is_some_and(|c| c.locked_until > now);
        // The per-IP limit is looser: an office behind one NAT address shares it.
        a || self.by_ip.lock().get(&ip).is_some_and(|c| c.locked_until > now)
    }

    /// Counts a failure; returns how long to wait before answering it: the delay grows
    /// with the address's failures in the window (the lock-out then takes over).
    fn fail(&self, address: &str, ip: IpAddr, now: i64) -> std::time::Duration {
        let lockout = self.lockout;
        let bump = |c: &mut FailureCount, max: u32| -> u32 {
            if now - c.last > lockout {
                c.failures = 0;
            }
            c.failures += 1;
            c.last = now;
            let counted = c.failures;
            if c.failures >= max {
                c.locked_until = now + lockout;
                c.failures = 0;
            }
            counted
        };
        let failures = {
            let mut map = self.by_address.lock();
            if map.len() > 100_000 {
                map.retain(|_, c| now - c.last <= lockout || c.locked_until > now);
            }
            bump(map.entry(address.to_string()).or_default(), self.max_failures)
        };
        let mut map = self.by_ip.lock();
        if map.len() > 100_000 {
            map.retain(|_, c| now - c.last <= lockout || c.locked_until > now);
        }
        bump(map.entry(ip).or_default(), self.max_failures.saturating_mul(5));
        (self.failure_delay * failures).min(std::time::Duration::from_secs(5))
    }

    fn succeed(&self, address: &str) {
        self.by_address.lock().remove(address);
    }
}

/// Checks logins for IMAP, POP3 and submission against the store.
pub struct Authenticator {
    store: Store,
    clock: Arc<dyn Clock>,
    cache: CredentialCache,
    cache_ttl: i64,
    throttle: Throttle,
    slots: HashSlots,
    /// Domains whose passwords the directory checks (`crate::ldap::login`); replaced
    /// when a reload changes the `[[ldap]]` sections.
    directory: parking_lot::RwLock<Arc<crate::ldap::login::DirectoryLogins>>,
}

/// Bounds how many argon2 checks run at once. Each one holds 19 MiB while it runs, and
/// session steps run on tokio's blocking pool (up to 512 threads), so a burst of logins
/// that miss the cache (every client reconnecting after a restart, or guesses at unknown
/// users) would otherwise peak at hundreds of times 19 MiB: 300 simultaneous first logins
/// measured 3.9 GB VmHWM. More checks at once than cores would not finish sooner anyway.
struct HashSlots {
    free: Mutex<usize>,
    freed: parking_lot::Condvar,
}

impl HashSlots {
    fn new(slots: usize) -> Self {
        HashSlots {
            free: Mutex::new(slots.max(1)),
            freed: parking_lot::Condvar::new(),
        }
    }

    /// Runs `f` once a slot is free (waiting on this blocking-pool thread).
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock();
            while *free == 0 {
                self.freed.wait(&mut free);
            }
            *free -= 1;
        }
        // Gives the slot back even if `f` unwinds.
        struct Release<'a>(&'a HashSlots);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                *self.0.free.lock() += 1;
                self.0.freed.notify_one();
            }
        }
        let _release = Release(self);
        f()
    }
}

impl Authenticator {
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: &AuthConfig) -> Self {
        Authenticator {
            store,
            clock,
            cache: CredentialCache::new(),
            cache_ttl: config.cache_ttl_secs as i64,
            throttle: Throttle {
                max_failures: config.max_failures,
                lockout: config.lockout_secs as i64,
                failure_delay: std::time::Duration::from_millis(config.failure_delay_ms),
                by_address: Mutex::new(HashMap::new()),
                by_ip: Mutex::new(HashMap::new()),
            },
            slots: HashSlots::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            directory: parking_lot::RwLock::new(Arc::default()),
        }
    }

    /// Checks passwords of these domains by LDAP bind (see `crate::ldap::login`).
    pub fn with_directory_logins(self, directory: crate::ldap::login::DirectoryLogins) -> Self {
        self.replace_directory_logins(directory);
        self
    }

    /// The directories logins are checked against from now on (a reload).
    pub fn replace_directory_logins(&self, directory: crate::ldap::login::DirectoryLogins) {
        *self.directory.write() = Arc::new(directory);
    }

    /// The directory accepted `password` for `user`: keep its argon2id hash as the
    /// credential for when the directory is down. A failure here is logged, not fatal:
    /// the directory said yes.
    fn remember_directory_password(&self, user: &understudy_storage::User, password: &Secret, now: i64) {
        let address = user.address.as_str();
        if let Some(phc) = &user.password_hash {
            if self.cache.hit(address, password, phc, now) {
                return;
            }
        }
        let stored = self.slots.run(|| -> anyhow::Result<String> {
            if let Some(phc) = user
                .password_hash
                .as_ref()
                .filter(|phc| verify_password(password, phc))
            {
                return Ok(phc.clone());
            }
            let phc = hash_password(password)?;
            // Re-read: a sync may have changed the record since the login began.
            let mut current = self
                .store
                .user(user.id)?
                .ok_or_else(|| anyhow::anyhow!("user removed during the login"))?;
            current.password_hash = Some(phc.clone());
            self.store.update_user(&current)?;
            tracing::info!(user = %address, "cached the directory password");
            Ok(phc)
        });
        match stored {
            Ok(phc) => self
                .cache
                .insert(address, password, &phc, now + self.cache_ttl, now),
            Err(e) => {
                tracing::warn!(user = %address, error = %format!("{e:#}"), "cannot cache the directory password")
            }
        }
    }

    /// Checks a password against the stored argon2id hash (through the in-memory cache).
    fn verify_local(
        &self,
        address: &str,
        user: Option<&understudy_storage::User>,
        phc: Option<&str>,
        password: &Secret,
        now: i64,
    ) -> bool {
        match (user, phc) {
            (Some(_), Some(phc)) => {
                self.cache.hit(address, password, phc, now)
                    || self.slots.run(|| {
                        // Another login for this user may have filled the cache while
                        // this one waited for a slot.
                        if self.cache.hit(address, password, phc, now) {
                            return true;
                        }
                        let ok = verify_password(password, phc);
                        if ok {
                            self.cache
                                .insert(address, password, phc, now + self.cache_ttl, now);
                        }
                        ok
                    })
            }
            _ => {
                // Same work as a real check, so timing does not tell which users exist.
                let _ = self.slots.run(|| verify_password(password, decoy_hash()));
                false
            }
        }
    }

    fn check(&self, credentials: &Credentials) -> Result<Account, AuthError> {
        let now = self.clock.now();
        let address = credentials.username.trim().to_ascii_lowercase();
        if self.throttle.locked(&address, credentials.peer, now) {
            tracing::warn!(user = %address, peer = %credentials.peer, proto = credentials.protocol, "login refused: too many failures");
            return Err(AuthError::RateLimited);
        }
        let user = self
            .store
            .user_by_address(&address)
            .map_err(|e| AuthError::Temporary(e.to_string()))?;
        let phc = user
            .as_ref()
            .filter(|u| u.is_active())
            .and_then(|u| u.password_hash.clone());
        let directory = self.directory.read().clone();
        let directory_user = user
            .as_ref()
            .filter(|u| u.is_active() && directory.handles(u.domain()));
        let verified = match directory_user {
            Some(u) => match directory.bind(&address, &credentials.password) {
                crate::ldap::login::BindOutcome::Accepted => {
                    self.remember_directory_password(u, &credentials.password, now);
                    true
                }
                // The directory's no is final: the cache may hold an old password.
                crate::ldap::login::BindOutcome::Refused => false,
                crate::ldap::login::BindOutcome::Unavailable => self.verify_local(
                    &address,
                    user.as_ref(),
                    phc.as_deref(),
                    &credentials.password,
                    now,
                ),
            },
            None => self.verify_local(
                &address,
                user.as_ref(),
                phc.as_deref(),
                &credentials.password,
                now,
            ),
        };
        let Some(user) = user.filter(|_| verified) else {
            crate::metrics::METRICS
                .logins_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let delay = self.throttle.fail(&address, credentials.peer, now);
            tracing::info!(user = %address, peer = %credentials.peer, proto = credentials.protocol, "login failed");
            // On the session's blocking-pool thread: slows this connection only, and
            // the per-IP connection limit bounds how many threads a guesser can hold.
            std::thread::sleep(delay);
            return Err(AuthError::Invalid);
        };
        self.throttle.succeed(&address);
        if user.force_password_reset {
            tracing::info!(user = %address, "login refused: the password must be changed (force_password_reset)");
            return Err(AuthError::PasswordChangeRequired);
        }
        let domain = self
            .store
            .domain(user.domain())
            .map_err(|e| AuthError::Temporary(e.to_string()))?
            .unwrap_or_default();
        let level = user.access.unwrap_or(domain.access);
        let window = user.access_window.unwrap_or(domain.access_window);
        if window == AccessWindow::OutageOnly {
            let phase = self
                .store
                .outage_state(&domain.name)
                .map_err(|e| AuthError::Temporary(e.to_string()))?
                .phase;
            if phase == OutagePhase::Normal {
                tracing::info!(user = %address, "login refused: mailbox reachable only during an outage");
                return Err(AuthError::OutsideOutage);
            }
        }
        let access = match level {
            understudy_storage::AccessLevel::Full => AccessLevel::Full,
            understudy_storage::AccessLevel::ReadOnly => AccessLevel::ReadOnly,
            understudy_storage::AccessLevel::None => {
                tracing::info!(user = %address, "login refused: access policy none");
                return Err(AuthError::AccessDenied);
            }
        };
        crate::metrics::METRICS
            .logins_ok
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(user = %address, peer = %credentials.peer, proto = credentials.protocol, "login");
        Ok(Account {
            id: user.id,
            address: user.address,
            access,
        })
    }
}

impl AuthBackend for Authenticator {
    fn authenticate(&self, credentials: &Credentials) -> Result<Account, AuthError> {
        self.check(credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PasswordPolicy;
    use understudy_storage::{Domain, ManualClock};

    thread_local! {
        /// argon2 verifications run on this thread (the unknown-user path must run one).
        pub(super) static VERIFICATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn unknown_user_and_wrong_password_both_run_argon2_and_fail_alike() {
        let (_dir, store, clock) = setup();
        let config = AuthConfig {
            failure_delay_ms: 0,
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(store, clock, &config);
        for user in ["anna@example.com", "nobody@example.com", "x@unknown.example"] {
            let before = VERIFICATIONS.with(|n| n.get());
            let err = auth
                .authenticate(&creds(user, "Wrong1horse", "192.0.2.9"))
                .unwrap_err();
            assert_eq!(err, AuthError::Invalid, "{user}");
            assert_eq!(
                VERIFICATIONS.with(|n| n.get()),
                before + 1,
                "{user}: one argon2 verify"
            );
        }
    }

    #[test]
    fn failure_delay_grows_until_the_lockout() {
        let throttle = Throttle {
            max_failures: 4,
            lockout: 60,
            failure_delay: std::time::Duration::from_millis(100),
            by_address: Mutex::new(HashMap::new()),
            by_ip: Mutex::new(HashMap::new()),
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let delays: Vec<u128> = (0..4)
            .map(|_| throttle.fail("a@b", ip, 1000).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 300, 400]);
        assert!(throttle.locked("a@b", ip, 1000));
        assert!(throttle.locked("a@b", ip, 1059));
        assert!(!throttle.locked("a@b", ip, 1061), "the lock-out ends");
        // A new window starts from the first step again.
        assert_eq!(throttle.fail("a@b", ip, 1200).as_millis(), 100);
    }

    fn setup() -> (tempfile::TempDir, Store, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let store = Store::open_with(&dir.path().join("db"), Default::default(), clock.clone()).unwrap();
        store.add_domain(&Domain::new("example.com")).unwrap();
        let hash = hash_password(&Secret::new("Correct1horse")).unwrap();
        store.create_user("anna@example.com", "Anna", Some(hash)).unwrap();
        (dir, store, clock)
    }

    fn creds(user: &str, pass: &str, ip: &str) -> Credentials {
        Credentials {
            username: user.into(),
            password: Secret::new(pass),
            peer: ip.parse().unwrap(),
            protocol: "test",
        }
    }

    #[test]
    fn policy_names_the_failed_rules() {
        let p = PasswordPolicy::default();
        assert_eq!(
            check_policy(&p, "short"),
            Err("the password needs at least 8 characters, an upper-case letter, a digit".into())
        );
        assert!(check_policy(&p, "Longenough1").is_ok());
        assert!(check_policy(&p, &random_password()).is_ok());
    }

    #[test]
    fn hash_slots_bound_concurrent_checks() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let slots = HashSlots::new(2);
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    slots.run(|| {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        // Holds the slot a while so the others pile up; the assertion
                        // below holds whatever the timing.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                });
            }
        });
        assert!((1..=2).contains(&peak.load(Ordering::SeqCst)));
        assert_eq!(*slots.free.lock(), 2);
    }

    #[test]
    fn hash_is_argon2id_and_verifies() {
        let h = hash_password(&Secret::new("pw")).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(&Secret::new("pw"), &h));
        assert!(!verify_password(&Secret::new("pW"), &h));
    }

    #[test]
    fn login_cache_and_lockout() {
        let (_dir, store, clock) = setup();
        let auth = Authenticator::new(
            store.clone(),
            clock.clone(),
            &AuthConfig {
                max_failures: 3,
                lockout_secs: 60,
                failure_delay_ms: 0,
                ..AuthConfig::default()
            },
        );
        let ok = auth
            .authenticate(&creds("Anna@Example.com", "Correct1horse", "192.0.2.1"))
            .unwrap();
        assert_eq!(ok.address, "anna@example.com");
        // Cached: works again, and a wrong password is still refused.
        assert!(auth
            .authenticate(&creds("anna@example.com", "Correct1horse", "192.0.2.1"))
            .is_ok());
        assert_eq!(
            auth.authenticate(&creds("anna@example.com", "wrong", "192.0.2.1")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.authenticate(&creds("nobody@example.com", "x", "192.0.2.1")),
            Err(AuthError::Invalid)
        );
        auth.authenticate(&creds("anna@example.com", "wrong", "192.0.2.1"))
            .unwrap_err();
        auth.authenticate(&creds("anna@example.com", "wrong", "192.0.2.1"))
            .unwrap_err();
        // Locked out even with the right password, until the lock-out ends.
        assert_eq!(
            auth.authenticate(&creds("anna@example.com", "Correct1horse", "192.0.2.9")),
            Err(AuthError::RateLimited)
        );
        clock.advance(61);
        assert!(auth
            .authenticate(&creds("anna@example.com", "Correct1horse", "192.0.2.9"))
            .is_ok());
    }

    #[test]
    fn forced_reset_refuses_only_the_right_password_with_its_own_error() {
        let (_dir, store, clock) = setup();
        let auth = Authenticator::new(store.clone(), clock, &AuthConfig::default());
        let mut user = store.user_by_address("anna@example.com").unwrap().unwrap();
        user.force_password_reset = true;
        store.update_user(&user).unwrap();
        assert_eq!(
            auth.authenticate(&creds("anna@example.com", "Correct1horse", "192.0.2.1")),
            Err(AuthError::PasswordChangeRequired)
        );
        assert_eq!(
            auth.authenticate(&creds("anna@example.com", "wrong", "192.0.2.1")),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn password_change_invalidates_cache_and_inactive_cannot_log_in() {
        let (_dir, store, clock) = setup();
        let auth = Authenticator::new(store.clone(), clock, &AuthConfig::default());
        auth.authenticate(&creds("anna@example.com", "Correct1horse", "192.0.2.1"))
            .unwrap();
        let mut user = store.user_by_address("anna@example.com").unwrap().unwrap();
        user.password_hash = Some(hash_password(&Secret::new("Other2horse")).unwrap());
        store.update_user(&user).unwrap();
        assert_eq!(
            auth.authenticate(&creds("anna@example.com", "Correct1horse", "192.0.2.1")),
            Err(AuthError::Invalid)
        );
        user.status = understudy_storage::UserStatus::Inactive;
        store.update_user(&user).unwrap();
        assert_eq!(
            auth.authenticate(&creds("anna@example.com", "Other2horse", "192.0.2.1")),
            Err(AuthError::Invalid)
        );
    }
}
