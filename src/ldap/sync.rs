//! Directory sync: reads the domain's mail users from the directory and brings the
//! store to match — creates users, updates names and aliases, deactivates users who are
//! disabled or gone from the directory (their mail is never deleted) — each user in one
//! synced write (`Store::upsert_user`). Running it twice changes nothing the second time.
//!
//! Only addresses of the section's protected domain are taken; users created by hand
//! (no directory DN recorded) are left alone; if the directory returns no users at all
//! nobody is deactivated (a wrong base DN or filter must not lock everyone out).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use understudy_storage::accounts::normalize_address;
use understudy_storage::provisioning::{UserChange, UserSpec};
use understudy_storage::EmailAddress;
use understudy_storage::{Store, StoreError, UserStatus};

use super::config::{DisabledRule, LdapConfig};
use super::directory::{self, DirectoryEntry};

/// A directory entry turned into the user it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub dn: String,
    pub address: String,
    pub display_name: String,
    pub aliases: Vec<String>,
    pub disabled: bool,
}

/// Strips the `smtp:`/`SMTP:` prefix of `proxyAddresses`; `None` for other address
/// types (`X500:`, `sip:`...).
fn mail_value(value: &str) -> Option<&str> {
    match value.split_once(':') {
        Some((kind, rest)) if kind.eq_ignore_ascii_case("smtp") => Some(rest),
        Some((kind, _)) if !kind.contains('@') => None,
        _ => Some(value),
    }
}

fn in_domain(address: &str, domain: &str) -> bool {
    EmailAddress::parse(address).is_some_and(|a| a.domain() == domain)
}

/// The user an entry describes, or why it is skipped.
pub fn map_entry(config: &LdapConfig, domain: &str, entry: &DirectoryEntry) -> Result<DirectoryUser, String> {
    let map = config.attributes();
    let mut address = None;
    let mut seen_outside = None;
    'found: for attribute in &map.address {
        for value in entry.values(attribute) {
            let Some(v) = mail_value(value) else { continue };
            let Ok(a) = normalize_address(v) else { continue };
            if in_domain(&a, domain) {
                address = Some(a);
                break 'found;
            }
            seen_outside.get_or_insert(a);
        }
    }
    let Some(address) = address else {
        return Err(match seen_outside {
            Some(a) => format!("address {a} is not in {domain}"),
            None => format!("no address in {}", map.address.join(", ")),
        });
    };
    let mut aliases = Vec::new();
    for attribute in &map.aliases {
        for value in entry.values(attribute) {
            let Some(a) = mail_value(value).and_then(|v| normalize_address(v).ok()) else {
                continue;
            };
            if in_domain(&a, domain) && a != address && !aliases.contains(&a) {
                aliases.push(a);
            }
        }
    }
    aliases.sort();
    let display_name = map
        .name
        .iter()
        .find_map(|a| entry.values(a).first())
        .cloned()
        .unwrap_or_default();
    let disabled = match &map.disabled {
        None => false,
        Some(DisabledRule::Bit { attribute, mask }) => entry
            .values(attribute)
            .iter()
            .any(|v| v.trim().parse::<i64>().is_ok_and(|n| (n as u64) & mask != 0)),
        Some(DisabledRule::Value { attribute, value }) => entry
            .values(attribute)
            .iter()
            .any(|v| v.eq_ignore_ascii_case(value)),
        Some(DisabledRule::Present { attribute }) => !entry.values(attribute).is_empty(),
    };
    Ok(DirectoryUser {
        dn: entry.dn.clone(),
        address,
        display_name,
        aliases,
        disabled,
    })
}

/// Counts a sync reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub domain: String,
    pub created: usize,
    pub updated: usize,
    pub deactivated: usize,
    pub unchanged: usize,
    /// DN (or address) and why.
    pub skipped: Vec<(String, String)>,
}

impl SyncReport {
    pub fn summary(&self, dry_run: bool) -> String {
        format!(
            "{}ldap sync {}: {} created, {} updated, {} deactivated, {} unchanged, {} skipped",
            if dry_run { "dry run, nothing changed: " } else { "" },
            self.domain,
            self.created,
            self.updated,
            self.deactivated,
            self.unchanged,
            self.skipped.len()
        )
    }
}

/// What the sync needs from where it runs.
pub trait SyncEvents {
    /// The user's open sessions must end (deactivated).
    fn revoked(&self, user_id: u64);
    fn progress(&self, done: u64, total: u64);
}

/// Syncs one domain from its directory. `out` gets one line per change and skip.
pub fn sync_domain(
    store: &Store,
    config: &LdapConfig,
    dry_run: bool,
    events: &dyn SyncEvents,
    out: &mut dyn Write,
) -> anyhow::Result<SyncReport> {
    let domain = understudy_storage::accounts::normalize_domain(&config.domain)?;
    if store.domain(&domain)?.is_none() {
        anyhow::bail!("{domain} is not a protected domain (understudy domain add {domain})");
    }
    // One sync per process at a time: the periodic one and an admin's must not race.
    static RUNNING: parking_lot::Mutex<()> = parking_lot::const_mutex(());
    let _one = RUNNING.lock();
    let entries =
        directory::search_users(config).map_err(|e| anyhow::anyhow!("{} ({}): {e}", domain, config.url))?;
    apply(store, &domain, config, &entries, dry_run, events, out)
}

/// Applies the directory's entries to the store (the part of a sync after the search).
pub fn apply(
    store: &Store,
    domain: &str,
    config: &LdapConfig,
    entries: &[DirectoryEntry],
    dry_run: bool,
    events: &dyn SyncEvents,
    out: &mut dyn Write,
) -> anyhow::Result<SyncReport> {
    let mut report = SyncReport {
        domain: domain.to_string(),
        ..SyncReport::default()
    };
    let mut users: BTreeMap<String, DirectoryUser> = BTreeMap::new();
    for entry in entries {
        match map_entry(config, domain, entry) {
            Ok(u) => {
                if let Some(first) = users.get(&u.address) {
                    let why = format!("{} is also the address of {}", u.address, first.dn);
                    writeln!(out, "skipped {}: {why}", u.dn)?;
                    report.skipped.push((u.dn, why));
                } else {
                    users.insert(u.address.clone(), u);
                }
            }
            Err(why) => {
                writeln!(out, "skipped {}: {why}", entry.dn)?;
                report.skipped.push((entry.dn.clone(), why));
            }
        }
    }
    // An alias one user lost and another gained may be refused while the first still
    // holds it: those users are tried again after everyone else.
    let total = users.len() as u64;
    let mut done = 0u64;
    let mut retry = Vec::new();
    for user in users.values() {
        match apply_user(store, user, dry_run) {
            Err(StoreError::AlreadyExists(_)) => retry.push(user),
            result => {
                record(&mut report, user, result, dry_run, events, out)?;
                done += 1;
                events.progress(done, total);
            }
        }
    }
    for user in retry {
        let result = apply_user(store, user, dry_run);
        record(&mut report, user, result, dry_run, events, out)?;
        done += 1;
        events.progress(done, total);
    }

    // Users that came from the directory and are no longer in it.
    let present: HashSet<&str> = users.keys().map(String::as_str).collect();
    let gone: Vec<_> = store
        .users(domain)?
        .into_iter()
        .filter(|u| u.ldap_dn.is_some() && !present.contains(u.address.as_str()))
        .collect();
    if users.is_empty() && !gone.is_empty() {
        writeln!(
            out,
            "the directory returned no users: not deactivating the {} synced users of {domain} (check base_dn and filter)",
            gone.len()
        )?;
        tracing::warn!(
            domain,
            "ldap sync: the directory returned no users; nobody deactivated"
        );
        return Ok(report);
    }
    for mut u in gone {
        if !u.is_active() {
            report.unchanged += 1;
            continue;
        }
        if !dry_run {
            u.status = UserStatus::Inactive;
            store.update_user(&u)?;
            events.revoked(u.id);
        }
        report.deactivated += 1;
        writeln!(
            out,
            "{} {}: not in the directory",
            if dry_run {
                "would deactivate"
            } else {
                "deactivated"
            },
            u.address
        )?;
    }
    writeln!(out, "{}", report.summary(dry_run))?;
    Ok(report)
}

/// Brings one user to the directory's state; also records the entry's DN, which marks
/// the user as the directory's to deactivate later.
fn apply_user(store: &Store, user: &DirectoryUser, dry_run: bool) -> Result<UserChange, StoreError> {
    let spec = UserSpec {
        address: user.address.clone(),
        display_name: Some(user.display_name.clone()),
        password_hash: None,
        aliases: Some(user.aliases.clone()),
        status: Some(if user.disabled {
            UserStatus::Inactive
        } else {
            UserStatus::Active
        }),
    };
    let change = store.upsert_user(&spec, dry_run)?;
    if !dry_run {
        if let Some(mut u) = store.user(change.user_id)? {
            if u.ldap_dn.as_deref() != Some(user.dn.as_str()) {
                u.ldap_dn = Some(user.dn.clone());
                store.update_user(&u)?;
            }
        }
    }
    Ok(change)
}

fn record(
    report: &mut SyncReport,
    user: &DirectoryUser,
    result: Result<UserChange, StoreError>,
    dry_run: bool,
    events: &dyn SyncEvents,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let change = match result {
        Ok(c) => c,
        Err(e) => {
            let why = e.to_string();
            writeln!(out, "skipped {}: {why}", user.dn)?;
            report.skipped.push((user.dn.clone(), why));
            return Ok(());
        }
    };
    if change.is_empty() {
        report.unchanged += 1;
        return Ok(());
    }
    let mut parts = Vec::new();
    if change.name && !change.created {
        parts.push("name".to_string());
    }
    match change.status {
        Some(UserStatus::Inactive) => parts.push("disabled in the directory".to_string()),
        Some(UserStatus::Active) if !change.created => parts.push("enabled again".to_string()),
        _ => {}
    }
    for a in &change.aliases_added {
        parts.push(format!("+alias {a}"));
    }
    for a in &change.aliases_removed {
        parts.push(format!("-alias {a}"));
    }
    let deactivated = change.status == Some(UserStatus::Inactive);
    let verb = match (change.created, deactivated, dry_run) {
        (true, _, true) => "would create",
        (true, _, false) => "created",
        (false, true, true) => "would deactivate",
        (false, true, false) => "deactivated",
        (false, false, true) => "would update",
        (false, false, false) => "updated",
    };
    if change.created {
        report.created += 1;
    } else if deactivated {
        report.deactivated += 1;
        if !dry_run {
            events.revoked(change.user_id);
        }
    } else {
        report.updated += 1;
    }
    if parts.is_empty() {
        writeln!(out, "{verb} {}", user.address)
    } else {
        writeln!(out, "{verb} {}: {}", user.address, parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_storage::Domain;

    fn ad() -> LdapConfig {
        toml::from_str(
            "domain = \"example.com\"\nurl = \"ldaps://dc1\"\nbase_dn = \"dc=x\"\npreset = \"active-directory\"\n",
        )
        .unwrap()
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> DirectoryEntry {
        DirectoryEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        }
    }

    struct NoEvents;
    impl SyncEvents for NoEvents {
        fn revoked(&self, _: u64) {}
        fn progress(&self, _: u64, _: u64) {}
    }

    #[test]
    fn active_directory_entry() {
        let e = entry(
            "CN=Anna,DC=example,DC=com",
            &[
                ("mail", &["Anna@Example.com"]),
                (
                    "proxyAddresses",
                    &[
                        "SMTP:anna@example.com",
                        "smtp:a@example.com",
                        "smtp:anna@other.org",
                        "X500:/o=Org/cn=anna",
                        "sip:anna@example.com",
                    ],
                ),
                ("displayName", &["Anna A."]),
                ("userAccountControl", &["514"]),
            ],
        );
        let u = map_entry(&ad(), "example.com", &e).unwrap();
        assert_eq!(u.address, "anna@example.com");
        assert_eq!(u.aliases, ["a@example.com"]);
        assert_eq!(u.display_name, "Anna A.");
        assert!(u.disabled);
        let e = entry("CN=X", &[("userPrincipalName", &["x@corp.local"])]);
        assert_eq!(
            map_entry(&ad(), "example.com", &e).unwrap_err(),
            "address x@corp.local is not in example.com"
        );
    }

    #[test]
    fn apply_twice_changes_nothing_and_gone_users_are_deactivated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.add_domain(&Domain::new("example.com")).unwrap();
        store.create_user("local@example.com", "By hand", None).unwrap();
        let entries = vec![
            entry(
                "CN=Anna",
                &[
                    ("mail", &["anna@example.com"]),
                    ("proxyAddresses", &["smtp:a@example.com"]),
                ],
            ),
            entry(
                "CN=Bob",
                &[("mail", &["bob@example.com"]), ("userAccountControl", &["512"])],
            ),
            entry("CN=Bob2", &[("mail", &["bob@example.com"])]),
        ];
        let c = ad();
        let mut out = Vec::new();
        let r = apply(&store, "example.com", &c, &entries, false, &NoEvents, &mut out).unwrap();
        assert_eq!(
            (r.created, r.updated, r.deactivated, r.unchanged, r.skipped.len()),
            (2, 0, 0, 0, 1)
        );
        let r = apply(&store, "example.com", &c, &entries, false, &NoEvents, &mut out).unwrap();
        assert_eq!((r.created, r.updated, r.deactivated, r.unchanged), (0, 0, 0, 2));
        // Bob's alias moves to Anna (refused at first, Bob still holds it: retried),
        // and a user leaves the directory.
        let entries = vec![
            entry(
                "CN=Anna",
                &[
                    ("mail", &["anna@example.com"]),
                    ("proxyAddresses", &["smtp:a@example.com", "smtp:b@example.com"]),
                ],
            ),
            entry(
                "CN=Carl",
                &[
                    ("mail", &["carl@example.com"]),
                    ("proxyAddresses", &["smtp:c@example.com"]),
                ],
            ),
        ];
        apply(&store, "example.com", &c, &entries, false, &NoEvents, &mut out).unwrap();
        let entries = vec![
            entry(
                "CN=Anna",
                &[
                    ("mail", &["anna@example.com"]),
                    ("proxyAddresses", &["smtp:a@example.com", "smtp:c@example.com"]),
                ],
            ),
            entry("CN=Carl", &[("mail", &["carl@example.com"])]),
        ];
        let r = apply(&store, "example.com", &c, &entries, false, &NoEvents, &mut out).unwrap();
        let log = String::from_utf8_lossy(&out);
        assert_eq!(
            (r.created, r.updated, r.deactivated, r.skipped.len()),
            (0, 2, 0, 0),
            "{log}"
        );
        assert!(
            log.contains("updated anna@example.com: +alias c@example.com, -alias b@example.com"),
            "{log}"
        );
        assert!(
            log.contains("deactivated bob@example.com: not in the directory"),
            "{log}"
        );
        let anna = store.user_by_address("anna@example.com").unwrap().unwrap();
        assert_eq!(
            store.aliases_of(anna.id).unwrap(),
            ["a@example.com", "c@example.com"]
        );
        assert!(!store
            .user_by_address("bob@example.com")
            .unwrap()
            .unwrap()
            .is_active());
        assert!(store
            .user_by_address("local@example.com")
            .unwrap()
            .unwrap()
            .is_active());
        // An empty answer deactivates nobody.
        let r = apply(&store, "example.com", &c, &[], false, &NoEvents, &mut out).unwrap();
        assert_eq!(r.deactivated, 0);
        assert!(store
            .user_by_address("anna@example.com")
            .unwrap()
            .unwrap()
            .is_active());
    }
}
