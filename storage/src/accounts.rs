//! Domains, users and aliases.

use std::collections::HashMap;

use crate::db::Batch;

use crate::address::EmailAddress;
use crate::db::{decode, Store, COUNTER_MAILBOX, COUNTER_USER};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::model::*;

/// Lower-cases and checks an address of an account or alias (see
/// [`EmailAddress::normalized`]).
pub fn normalize_address(address: &str) -> StoreResult<String> {
    EmailAddress::normalized(address).map(EmailAddress::into_string)
}

pub fn normalize_domain(name: &str) -> StoreResult<String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(name)
    } else {
        Err(StoreError::Invalid(format!(
            "'{name}' is not a valid domain name"
        )))
    }
}

/// Where mail for an address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A user of a protected domain (directly or through an alias).
    Local(User),
    /// The domain is protected but nobody has this address.
    Unknown,
    /// Not a protected domain: relaying would be needed.
    NotLocal,
}

/// What every RCPT and delivery reads: protected domains' settings and local
/// recipients (address or alias to user), as last read from the store. Only what exists
/// is kept, so a flood of RCPTs for unknown or foreign addresses cannot grow it. Every
/// committed write to domains, users or addresses clears it and bumps `generation`, so
/// a read that raced a write never puts the old value back.
#[derive(Default)]
pub(crate) struct AccountsCache {
    generation: u64,
    domains: HashMap<String, Domain>,
    recipients: HashMap<String, User>,
}

impl Store {
    // ----- domains -----

    pub fn add_domain(&self, domain: &Domain) -> StoreResult<Domain> {
        let mut domain = domain.clone();
        domain.name = normalize_domain(&domain.name)?;
        validate_domain(&domain)?;
        let _guard = self.lock(&[("domain", domain.name.as_str())])?;
        if self.domain(&domain.name)?.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "{} is already a protected domain",
                domain.name
            )));
        }
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_DOMAINS, domain.name.as_bytes(), &domain)?;
        self.commit(batch)?;
        self.accounts_changed();
        Ok(domain)
    }

    pub fn update_domain(&self, domain: &Domain) -> StoreResult<()> {
        validate_domain(domain)?;
        let _guard = self.lock(&[("domain", domain.name.as_str())])?;
        if self.domain(&domain.name)?.is_none() {
            return Err(StoreError::NotFound(format!("domain {}", domain.name)));
        }
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_DOMAINS, domain.name.as_bytes(), domain)?;
        self.commit(batch)?;
        self.accounts_changed();
        Ok(())
    }

    /// A protected domain's settings; None for any other domain.
    pub fn domain(&self, name: &str) -> StoreResult<Option<Domain>> {
        let name = name.to_ascii_lowercase();
        let generation = {
            let cache = self.inner.accounts_cache.lock();
            if let Some(domain) = cache.domains.get(&name) {
                return Ok(Some(domain.clone()));
            }
            cache.generation
        };
        let found: Option<Domain> = self.get_json(CF_DOMAINS, name.as_bytes())?;
        if let Some(domain) = &found {
            let mut cache = self.inner.accounts_cache.lock();
            // A write committed since the read above may have made it stale.
            if cache.generation == generation && !self.shared() {
                cache.domains.insert(name, domain.clone());
            }
        }
        Ok(found)
    }

    /// Called after every committed write to domains, users or addresses.
    pub(crate) fn accounts_changed(&self) {
        let mut cache = self.inner.accounts_cache.lock();
        cache.generation += 1;
        cache.domains.clear();
        cache.recipients.clear();
    }

    pub fn domains(&self) -> StoreResult<Vec<Domain>> {
        self.scan_prefix(CF_DOMAINS, b"")?
            .iter()
            .map(|(_, v)| decode(CF_DOMAINS, v))
            .collect()
    }

    /// Removes a domain that has no users or aliases left.
    pub fn remove_domain(&self, name: &str) -> StoreResult<()> {
        let name = name.to_ascii_lowercase();
        let _guard = self.lock(&[("domain", name.as_str())])?;
        if self.domain(&name)?.is_none() {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        if !self.scan_prefix(CF_ADDRESSES, &domain_prefix(&name))?.is_empty() {
            return Err(StoreError::Invalid(format!(
                "domain {name} still has users or aliases; remove them first"
            )));
        }
        let mut batch = Batch::default();
        self.delete(&mut batch, CF_DOMAINS, name.as_bytes())?;
        self.commit(batch)?;
        self.accounts_changed();
        Ok(())
    }

    // ----- users -----

    /// Creates a user with the default mailboxes (INBOX, Sent, Drafts, Trash, Junk,
    /// Archive) in one synced write.
    pub fn create_user(
        &self,
        address: &str,
        display_name: &str,
        password_hash: Option<String>,
    ) -> StoreResult<User> {
        let parsed = EmailAddress::normalized(address)?;
        let domain = parsed.domain().to_string();
        let address = parsed.into_string();
        if self.domain(&domain)?.is_none() {
            return Err(StoreError::Invalid(format!(
                "{domain} is not a protected domain; add it first (understudy domain add {domain})"
            )));
        }
        let key = address_key(&address).ok_or_else(|| StoreError::Invalid(address.clone()))?;
        let _guard = self.lock(&[("address", address.as_str())])?;
        if self.get_json::<AddressEntry>(CF_ADDRESSES, &key)?.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "{address} is already in use (by a user or an alias)"
            )));
        }
        let id = self.next_id(COUNTER_USER)?;
        let user = User {
            id,
            address: address.clone(),
            display_name: display_name.to_string(),
            status: UserStatus::Active,
            password_hash,
            created_at: self.now(),
            ..User::default()
        };
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_USERS, &u64_key(id), &user)?;
        self.put_json(
            &mut batch,
            CF_ADDRESSES,
            &key,
            &AddressEntry {
                user_id: id,
                kind: AddressKind::Primary,
            },
        )?;
        self.counter_merge(&mut batch, COUNTER_USER, id)?;
        self.default_mailboxes_into(&mut batch, id)?;
        self.commit(batch)?;
        self.accounts_changed();
        Ok(user)
    }

    /// A new user's mailboxes (`DEFAULT_MAILBOXES`), each subscribed, into `batch`.
    pub(crate) fn default_mailboxes_into(&self, batch: &mut Batch, user_id: u64) -> StoreResult<()> {
        for (name, special_use) in DEFAULT_MAILBOXES {
            self.new_mailbox_into(batch, user_id, name, *special_use)?;
            self.subscribe_into(batch, user_id, name)?;
        }
        Ok(())
    }

    /// Adds a mailbox record to `batch` and returns it. Not subscribed: as in RFC 3501,
    /// CREATE does not subscribe (clients that want it say SUBSCRIBE), and a subscription
    /// outlives its mailbox, so one made by every CREATE would pile up after each DELETE.
    pub(crate) fn new_mailbox_into(
        &self,
        batch: &mut Batch,
        user_id: u64,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> StoreResult<Mailbox> {
        let id = self.next_id(COUNTER_MAILBOX)?;
        let mailbox = Mailbox {
            id,
            user_id,
            name: name.to_string(),
            special_use,
            uid_validity: self.next_uid_validity()?,
            uid_next: 1,
            highest_modseq: 1,
            exists: 0,
            size: 0,
            unseen: 0,
            recent_uid: 1,
        };
        self.put_json(batch, CF_MAILBOXES, &u64_pair(user_id, id), &mailbox)?;
        self.counter_merge(batch, COUNTER_MAILBOX, id)?;
        self.counter_merge(batch, crate::db::COUNTER_UIDVALIDITY, mailbox.uid_validity as u64)?;
        Ok(mailbox)
    }

    pub fn user(&self, id: u64) -> StoreResult<Option<User>> {
        self.get_json(CF_USERS, &u64_key(id))
    }

    /// Looks a user up by their own address (not an alias).
    pub fn user_by_address(&self, address: &str) -> StoreResult<Option<User>> {
        let Ok(address) = normalize_address(address) else {
            return Ok(None);
        };
        let Some(key) = address_key(&address) else {
            return Ok(None);
        };
        match self.get_json::<AddressEntry>(CF_ADDRESSES, &key)? {
            Some(AddressEntry {
                user_id,
                kind: AddressKind::Primary,
            }) => self.user(user_id),
            _ => Ok(None),
        }
    }

    /// Resolves an envelope recipient: a user's address or alias in a protected domain.
    pub fn resolve_recipient(&self, address: &str) -> StoreResult<Recipient> {
        let Ok(parsed) = EmailAddress::normalized(address) else {
            return Ok(Recipient::NotLocal);
        };
        let generation = {
            let cache = self.inner.accounts_cache.lock();
            if let Some(user) = cache.recipients.get(parsed.as_str()) {
                return Ok(Recipient::Local(user.clone()));
            }
            cache.generation
        };
        if self.domain(parsed.domain())?.is_none() {
            return Ok(Recipient::NotLocal);
        }
        let Some(key) = address_key(parsed.as_str()) else {
            return Ok(Recipient::Unknown);
        };
        let address = parsed.into_string();
        let Some(entry) = self.get_json::<AddressEntry>(CF_ADDRESSES, &key)? else {
            return Ok(Recipient::Unknown);
        };
        let Some(user) = self.user(entry.user_id)? else {
            return Ok(Recipient::Unknown);
        };
        let mut cache = self.inner.accounts_cache.lock();
        if cache.generation == generation && !self.shared() {
            cache.recipients.insert(address, user.clone());
        }
        Ok(Recipient::Local(user))
    }

    /// `resolve_recipient` if the answer is in memory (a local recipient seen before and
    /// unchanged since); None when only the store can tell. Never blocks on the store.
    pub fn cached_recipient(&self, address: &str) -> Option<Recipient> {
        let address = normalize_address(address).ok()?;
        let cache = self.inner.accounts_cache.lock();
        cache.recipients.get(&address).cloned().map(Recipient::Local)
    }

    /// Users of a domain, by address.
    pub fn users(&self, domain: &str) -> StoreResult<Vec<User>> {
        let mut users = Vec::new();
        for (_, v) in self.scan_prefix(CF_ADDRESSES, &domain_prefix(&domain.to_ascii_lowercase()))? {
            let entry: AddressEntry = decode(CF_ADDRESSES, &v)?;
            if entry.kind == AddressKind::Primary {
                if let Some(user) = self.user(entry.user_id)? {
                    users.push(user);
                }
            }
        }
        Ok(users)
    }

    /// Replaces a user's record (status, password hash, policy...). The address cannot change.
    pub fn update_user(&self, user: &User) -> StoreResult<()> {
        let _guard = self.lock(&[("address", user.address.as_str())])?;
        let current = self
            .user(user.id)?
            .ok_or_else(|| StoreError::NotFound(format!("user {}", user.address)))?;
        if current.address != user.address {
            return Err(StoreError::Invalid("a user's address cannot be changed".into()));
        }
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_USERS, &u64_key(user.id), user)?;
        self.commit(batch)?;
        self.accounts_changed();
        Ok(())
    }

    /// Removes a user, their aliases, mailboxes and messages.
    pub fn remove_user(&self, address: &str) -> StoreResult<()> {
        let user = self
            .user_by_address(address)?
            .ok_or_else(|| StoreError::NotFound(format!("user {address}")))?;
        {
            let _mailboxes = self.lock_outer(("mailboxes-of", user.id))?;
            for mailbox in self.mailboxes(user.id)? {
                self.destroy_mailbox(&mailbox)?;
            }
            let mut batch = Batch::default();
            self.unsubscribe_all_into(&mut batch, user.id)?;
            self.commit(batch)?;
        }
        let _guard = self.lock(&[("address", user.address.as_str())])?;
        let mut batch = Batch::default();
        for alias in self.aliases_of(user.id)? {
            if let Some(key) = address_key(&alias) {
                self.delete(&mut batch, CF_ADDRESSES, &key)?;
            }
        }
        if let Some(key) = address_key(&user.address) {
            self.delete(&mut batch, CF_ADDRESSES, &key)?;
        }
        self.delete(&mut batch, CF_USERS, &u64_key(user.id))?;
        self.commit(batch)?;
        self.accounts_changed();
        Ok(())
    }

    // ----- aliases -----

    /// Adds `alias` (in any protected domain) delivering to the user `target`.
    pub fn add_alias(&self, alias: &str, target: &str) -> StoreResult<()> {
        let parsed = EmailAddress::normalized(alias)?;
        let domain = parsed.domain().to_string();
        let alias = parsed.into_string();
        if self.domain(&domain)?.is_none() {
            return Err(StoreError::Invalid(format!(
                "{domain} is not a protected domain; add it first (understudy domain add {domain})"
            )));
        }
        let user = self
            .user_by_address(target)?
            .ok_or_else(|| StoreError::NotFound(format!("user {target}")))?;
        let key = address_key(&alias).ok_or_else(|| StoreError::Invalid(alias.clone()))?;
        let _guard = self.lock(&[("address", alias.as_str())])?;
        if self.get_json::<AddressEntry>(CF_ADDRESSES, &key)?.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "{alias} is already in use (by a user or an alias)"
            )));
        }
        let mut batch = Batch::default();
        self.put_json(
            &mut batch,
            CF_ADDRESSES,
            &key,
            &AddressEntry {
                user_id: user.id,
                kind: AddressKind::Alias,
            },
        )?;
        self.commit(batch)?;
        self.accounts_changed();
        Ok(())
    }

    pub fn remove_alias(&self, alias: &str) -> StoreResult<()> {
        let alias = normalize_address(alias)?;
        let key = address_key(&alias).ok_or_else(|| StoreError::Invalid(alias.clone()))?;
        let _guard = self.lock(&[("address", alias.as_str())])?;
        match self.get_json::<AddressEntry>(CF_ADDRESSES, &key)? {
            Some(AddressEntry {
                kind: AddressKind::Alias,
                ..
            }) => {
                let mut batch = Batch::default();
                self.delete(&mut batch, CF_ADDRESSES, &key)?;
                self.commit(batch)?;
                self.accounts_changed();
                Ok(())
            }
            Some(_) => Err(StoreError::Invalid(format!(
                "{alias} is a user's own address, not an alias"
            ))),
            None => Err(StoreError::NotFound(format!("alias {alias}"))),
        }
    }

    /// Aliases of a domain as `(alias, user address)`.
    pub fn aliases(&self, domain: &str) -> StoreResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (k, v) in self.scan_prefix(CF_ADDRESSES, &domain_prefix(&domain.to_ascii_lowercase()))? {
            let entry: AddressEntry = decode(CF_ADDRESSES, &v)?;
            if entry.kind == AddressKind::Alias {
                let target = self.user(entry.user_id)?.map(|u| u.address).unwrap_or_default();
                out.push((address_from_key(&k).unwrap_or_default(), target));
            }
        }
        Ok(out)
    }

    /// Every alias (in any domain) of one user. Scans all addresses: used by admin
    /// commands and the sender check, where the numbers are small.
    pub fn aliases_of(&self, user_id: u64) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        for (k, v) in self.scan_prefix(CF_ADDRESSES, b"")? {
            let entry: AddressEntry = decode(CF_ADDRESSES, &v)?;
            if entry.kind == AddressKind::Alias && entry.user_id == user_id {
                out.push(address_from_key(&k).unwrap_or_default());
            }
        }
        Ok(out)
    }

    /// True if `address` is the user's own address or one of their aliases.
    pub fn address_belongs_to(&self, user_id: u64, address: &str) -> StoreResult<bool> {
        let Ok(address) = normalize_address(address) else {
            return Ok(false);
        };
        let Some(key) = address_key(&address) else {
            return Ok(false);
        };
        Ok(self
            .get_json::<AddressEntry>(CF_ADDRESSES, &key)?
            .is_some_and(|e| e.user_id == user_id))
    }
}

fn validate_domain(domain: &Domain) -> StoreResult<()> {
    if domain.alert_recipients.len() > 4 {
        return Err(StoreError::Invalid("at most four alert recipients".into()));
    }
    for r in &domain.alert_recipients {
        normalize_address(r)?;
    }
    if domain.failures_before_engage == 0 || domain.successes_before_recover == 0 {
        return Err(StoreError::Invalid(
            "failure and success thresholds must be at least 1".into(),
        ));
    }
    if domain.probe_interval_secs == 0 {
        return Err(StoreError::Invalid(
            "probe interval must be at least 1 second".into(),
        ));
    }
    Ok(())
}
