//! Create-or-update of one user and their aliases in a single synced write, for bulk
//! import (and later directory sync): a row is applied whole or not at all, and applying
//! the same row twice changes nothing the second time.

use crate::db::Batch;

use crate::address::EmailAddress;
use crate::db::{Store, COUNTER_USER};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::model::*;

/// The wanted state of a user; `None` fields keep the current value (for a new user:
/// empty name, no password, no aliases, active).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSpec {
    pub address: String,
    pub display_name: Option<String>,
    /// PHC string of an argon2id hash.
    pub password_hash: Option<String>,
    /// Exactly these aliases: missing ones are added, others of the user removed.
    pub aliases: Option<Vec<String>>,
    pub status: Option<UserStatus>,
}

/// What `upsert_user` changed (or, in a dry run, would change).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserChange {
    pub created: bool,
    /// The user's id; 0 for a user a dry run would create.
    pub user_id: u64,
    pub name: bool,
    pub password: bool,
    /// The new status, if it changed.
    pub status: Option<UserStatus>,
    pub aliases_added: Vec<String>,
    pub aliases_removed: Vec<String>,
}

impl UserChange {
    pub fn is_empty(&self) -> bool {
        !self.created
            && !self.name
            && !self.password
            && self.status.is_none()
            && self.aliases_added.is_empty()
            && self.aliases_removed.is_empty()
    }
}

impl Store {
    /// Brings one user (and their aliases) to `spec` in one synced write; with `dry_run`
    /// only reports what would change. Refuses (changing nothing) when the address is
    /// someone's alias, an alias belongs to someone else, or a domain is not protected.
    pub fn upsert_user(&self, spec: &UserSpec, dry_run: bool) -> StoreResult<UserChange> {
        let parsed = EmailAddress::normalized(&spec.address)?;
        let domain = parsed.domain().to_string();
        let address = parsed.into_string();
        if self.domain(&domain)?.is_none() {
            return Err(StoreError::Invalid(format!(
                "{domain} is not a protected domain; add it first (understudy domain add {domain})"
            )));
        }
        let wanted_aliases = match &spec.aliases {
            Some(list) => {
                let mut out: Vec<String> = Vec::new();
                for alias in list {
                    let parsed = EmailAddress::normalized(alias)?;
                    let d = parsed.domain().to_string();
                    let alias = parsed.into_string();
                    if alias == address {
                        return Err(StoreError::Invalid(format!(
                            "{alias} is the user's own address, not an alias"
                        )));
                    }
                    if self.domain(&d)?.is_none() {
                        return Err(StoreError::NotFound(format!("domain {d} of alias {alias}")));
                    }
                    if !out.contains(&alias) {
                        out.push(alias);
                    }
                }
                Some(out)
            }
            None => None,
        };
        let existing = self.user_by_address(&address)?;
        let old_aliases = match &existing {
            Some(u) => self.aliases_of(u.id)?,
            None => Vec::new(),
        };
        let mut lock_keys: Vec<(&str, &str)> = vec![("address", address.as_str())];
        for a in old_aliases.iter().chain(wanted_aliases.iter().flatten()) {
            lock_keys.push(("address", a.as_str()));
        }
        let _guard = self.lock(&lock_keys)?;

        let key = address_key(&address).ok_or_else(|| StoreError::Invalid(address.clone()))?;
        let entry = self.get_json::<AddressEntry>(CF_ADDRESSES, &key)?;
        let mut change = UserChange::default();
        let mut batch = Batch::default();
        let user = match (entry, existing) {
            (
                Some(AddressEntry {
                    kind: AddressKind::Alias,
                    ..
                }),
                _,
            ) => {
                return Err(StoreError::AlreadyExists(format!(
                    "{address} is already an alias of another user"
                )));
            }
            (Some(e), Some(mut user)) if e.user_id == user.id => {
                change.user_id = user.id;
                if let Some(name) = &spec.display_name {
                    if *name != user.display_name {
                        user.display_name = name.clone();
                        change.name = true;
                    }
                }
                if let Some(hash) = &spec.password_hash {
                    if user.password_hash.as_ref() != Some(hash) {
                        user.password_hash = Some(hash.clone());
                        change.password = true;
                    }
                }
                if let Some(status) = spec.status {
                    if status != user.status {
                        user.status = status;
                        change.status = Some(status);
                    }
                }
                user
            }
            (Some(_), _) | (None, Some(_)) => {
                // The address index and the user record disagree: changed under us.
                return Err(StoreError::Invalid(format!(
                    "{address} changed during the import; run it again"
                )));
            }
            (None, None) => {
                change.created = true;
                change.name = spec.display_name.as_ref().is_some_and(|n| !n.is_empty());
                change.password = spec.password_hash.is_some();
                let status = spec.status.unwrap_or(UserStatus::Active);
                if status != UserStatus::Active {
                    change.status = Some(status);
                }
                User {
                    id: 0,
                    address: address.clone(),
                    display_name: spec.display_name.clone().unwrap_or_default(),
                    status,
                    password_hash: spec.password_hash.clone(),
                    created_at: self.now(),
                    ..User::default()
                }
            }
        };
        if let Some(wanted) = &wanted_aliases {
            for alias in wanted {
                if old_aliases.contains(alias) {
                    continue;
                }
                let alias_key = address_key(alias).ok_or_else(|| StoreError::Invalid(alias.clone()))?;
                if let Some(e) = self.get_json::<AddressEntry>(CF_ADDRESSES, &alias_key)? {
                    let what = if e.kind == AddressKind::Primary {
                        "a user's own address"
                    } else {
                        "an alias of another user"
                    };
                    return Err(StoreError::AlreadyExists(format!("{alias} is already {what}")));
                }
                change.aliases_added.push(alias.clone());
            }
            change.aliases_removed = old_aliases
                .iter()
                .filter(|a| !wanted.contains(a))
                .cloned()
                .collect();
        }
        if dry_run || change.is_empty() {
            return Ok(change);
        }

        let mut user = user;
        if change.created {
            user.id = self.next_id(COUNTER_USER)?;
            change.user_id = user.id;
            self.put_json(
                &mut batch,
                CF_ADDRESSES,
                &key,
                &AddressEntry {
                    user_id: user.id,
                    kind: AddressKind::Primary,
                },
            )?;
            self.counter_merge(&mut batch, COUNTER_USER, user.id)?;
            self.default_mailboxes_into(&mut batch, user.id)?;
        }
        self.put_json(&mut batch, CF_USERS, &u64_key(user.id), &user)?;
        for alias in &change.aliases_added {
            if let Some(k) = address_key(alias) {
                self.put_json(
                    &mut batch,
                    CF_ADDRESSES,
                    &k,
                    &AddressEntry {
                        user_id: user.id,
                        kind: AddressKind::Alias,
                    },
                )?;
            }
        }
        for alias in &change.aliases_removed {
            if let Some(k) = address_key(alias) {
                self.delete(&mut batch, CF_ADDRESSES, &k)?;
            }
        }
        self.commit(batch)?;
        self.accounts_changed();
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.add_domain(&Domain::new("example.com")).unwrap();
        (dir, store)
    }

    fn spec(address: &str, aliases: &[&str]) -> UserSpec {
        UserSpec {
            address: address.into(),
            display_name: Some("Anna".into()),
            password_hash: None,
            aliases: Some(aliases.iter().map(|a| a.to_string()).collect()),
            status: Some(UserStatus::Active),
        }
    }

    #[test]
    fn create_then_same_again_changes_nothing() {
        let (_dir, store) = store();
        let s = spec("Anna@example.com", &["a@example.com"]);
        let dry = store.upsert_user(&s, true).unwrap();
        assert!(dry.created);
        assert!(store.user_by_address("anna@example.com").unwrap().is_none());
        let c = store.upsert_user(&s, false).unwrap();
        assert!(c.created && c.user_id > 0);
        assert_eq!(c.aliases_added, ["a@example.com"]);
        assert_eq!(store.mailboxes(c.user_id).unwrap().len(), DEFAULT_MAILBOXES.len());
        assert!(store.upsert_user(&s, false).unwrap().is_empty());
    }

    #[test]
    fn aliases_follow_the_spec_and_conflicts_change_nothing() {
        let (_dir, store) = store();
        store
            .upsert_user(
                &spec("anna@example.com", &["a@example.com", "b@example.com"]),
                false,
            )
            .unwrap();
        let c = store
            .upsert_user(
                &spec("anna@example.com", &["b@example.com", "c@example.com"]),
                false,
            )
            .unwrap();
        assert_eq!(c.aliases_added, ["c@example.com"]);
        assert_eq!(c.aliases_removed, ["a@example.com"]);
        // bob wants anna's alias and a new one: refused whole, bob not created.
        let err = store
            .upsert_user(
                &spec("bob@example.com", &["d@example.com", "c@example.com"]),
                false,
            )
            .unwrap_err();
        assert!(err.to_string().contains("c@example.com"), "{err}");
        assert!(store.user_by_address("bob@example.com").unwrap().is_none());
        assert!(matches!(
            store.resolve_recipient("d@example.com").unwrap(),
            crate::accounts::Recipient::Unknown
        ));
        // An alias's address cannot become a user.
        assert!(store.upsert_user(&spec("b@example.com", &[]), false).is_err());
    }
}
