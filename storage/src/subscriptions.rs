//! Mailbox subscriptions (IMAP SUBSCRIBE, UNSUBSCRIBE, LSUB and LIST (SUBSCRIBED)): a set
//! of names per user, kept apart from the mailbox records because a subscription
//! outlives its mailbox. RFC 3501 §6.3.9 forbids the server to drop a subscribed name
//! when the mailbox goes away, and RFC 5258 lists such a name as `\NonExistent`.
//!
//! Key: user id (u64 big-endian) followed by the name's UTF-8 octets; value: empty. One
//! prefix scan reads a user's subscriptions in name order. Every writer holds the user's
//! outer lock (the one CREATE, RENAME and DELETE take), so a rename moves exactly the
//! subscriptions that existed when it read them.
//!
//! Schema 1 kept a `subscribed` flag in each mailbox record; [`migrate_from_v1`] turns
//! those flags into entries here in the same batch that rewrites the records without
//! them and records schema 2, so a crash leaves either the old layout or the new one.

use crate::db::{Batch, IterMode, KvBackend, Store, SCHEMA_KEY};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::mailbox::validate_mailbox_name;

/// More subscriptions than this are refused: each SUBSCRIBE needs an existing mailbox,
/// but the names stay after DELETE, so create/subscribe/delete in a loop would grow
/// the set without bound.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

pub(crate) fn subscription_key(user_id: u64, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + name.len());
    key.extend_from_slice(&user_id.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// "INBOX" in any case is the inbox (RFC 3501 §5.1).
fn canonical(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

impl Store {
    /// The user's subscribed names in byte order, whether or not the mailboxes exist.
    pub fn subscriptions(&self, user_id: u64) -> StoreResult<Vec<String>> {
        self.scan_prefix(CF_SUBSCRIPTIONS, &u64_key(user_id))?
            .iter()
            .map(|(k, _)| {
                String::from_utf8(k[8..].to_vec()).map_err(|_| StoreError::Corrupt {
                    cf: CF_SUBSCRIPTIONS,
                    reason: format!("subscription key {} is not UTF-8", hex::encode(k)),
                })
            })
            .collect()
    }

    /// The user's mailboxes and subscriptions as of one instant, for LIST: a RENAME or
    /// DELETE between two separate reads would show a name as both gone and present.
    pub fn mailboxes_and_subscriptions(
        &self,
        user_id: u64,
    ) -> StoreResult<(Vec<crate::model::Mailbox>, Vec<String>)> {
        let snapshot = self.snapshot()?;
        let prefix = u64_key(user_id);
        let mailboxes = self
            .scan_prefix_at(snapshot.as_ref(), CF_MAILBOXES, &prefix)?
            .iter()
            .map(|(_, v)| crate::db::decode(CF_MAILBOXES, v))
            .collect::<StoreResult<Vec<_>>>()?;
        let names = self
            .scan_prefix_at(snapshot.as_ref(), CF_SUBSCRIPTIONS, &prefix)?
            .iter()
            .filter_map(|(k, _)| String::from_utf8(k[8..].to_vec()).ok())
            .collect();
        Ok((mailboxes, names))
    }

    /// SUBSCRIBE (`true`) or UNSUBSCRIBE (`false`), synced. Subscribing needs an
    /// existing mailbox (RFC 3501 §6.3.6 lets the server check) and stays within
    /// [`MAX_SUBSCRIPTIONS`]; unsubscribing works whether or not the mailbox still exists,
    /// which is how a client removes a name whose mailbox was deleted. `NotFound` when
    /// there is neither a mailbox nor a subscription of that name.
    pub fn set_subscribed(&self, user_id: u64, name: &str, subscribed: bool) -> StoreResult<()> {
        let name = canonical(name);
        let _guard = self.lock_outer(crate::mailbox::mailboxes_of(user_id))?;
        let key = subscription_key(user_id, name);
        let cf = CF_SUBSCRIPTIONS;
        let present = self.get_raw(cf, &key)?.is_some();
        if !present && self.mailbox_by_name(user_id, name)?.is_none() {
            return Err(StoreError::NotFound(format!("mailbox {name}")));
        }
        if present == subscribed {
            return Ok(());
        }
        let mut batch = Batch::default();
        if subscribed {
            if self.subscriptions(user_id)?.len() >= MAX_SUBSCRIPTIONS {
                return Err(StoreError::Invalid(format!(
                    "more than {MAX_SUBSCRIPTIONS} subscriptions"
                )));
            }
            batch.put(cf, &key, []);
        } else {
            batch.delete(cf, &key);
        }
        self.commit(batch)
    }

    /// Adds a subscription of `name` to `batch` (a new user's default mailboxes).
    pub(crate) fn subscribe_into(&self, batch: &mut Batch, user_id: u64, name: &str) -> StoreResult<()> {
        batch.put(CF_SUBSCRIPTIONS, subscription_key(user_id, name), []);
        Ok(())
    }

    /// Moves the subscriptions of `from` and its children (`from/...`) to the same names
    /// under `to`, in `batch`: RENAME takes the mailbox's subscription along, as the
    /// user subscribed to the mailbox and not to a string. The caller holds the outer lock.
    pub(crate) fn rename_subscriptions_into(
        &self,
        batch: &mut Batch,
        user_id: u64,
        from: &str,
        to: &str,
    ) -> StoreResult<()> {
        let cf = CF_SUBSCRIPTIONS;
        let children = format!("{from}/");
        let mut renamed = Vec::new();
        for name in self.subscriptions(user_id)? {
            let new = if name == from {
                to.to_string()
            } else if let Some(rest) = name.strip_prefix(&children) {
                format!("{to}/{rest}")
            } else {
                continue;
            };
            validate_mailbox_name(&new)?;
            batch.delete(cf, subscription_key(user_id, &name));
            renamed.push(new);
        }
        // Puts after every delete: in a batch the later write wins, and a new name may be
        // an old one (`a/b` renamed to `a` turns `a/b/b/x` into `a/b/x`).
        for name in renamed {
            batch.put(cf, subscription_key(user_id, &name), []);
        }
        Ok(())
    }

    /// Removes every subscription of a user (the user is being removed).
    pub(crate) fn unsubscribe_all_into(&self, batch: &mut Batch, user_id: u64) -> StoreResult<()> {
        let cf = CF_SUBSCRIPTIONS;
        for (k, _) in self.scan_prefix(CF_SUBSCRIPTIONS, &u64_key(user_id))? {
            batch.delete(cf, k);
        }
        Ok(())
    }
}

/// Schema 1 → 2: every mailbox record's `subscribed: true` becomes a subscription entry,
/// and the records are rewritten without the flag, all in one synced batch with the new
/// schema version. Runs at open, before any other reader or writer exists.
pub(crate) fn migrate_from_v1(db: &dyn KvBackend) -> StoreResult<usize> {
    let mut batch = Batch::default();
    let mut moved = 0;
    for item in db.iter(CF_MAILBOXES, IterMode::Start)? {
        let (key, value) = item?;
        let mut record: serde_json::Value =
            serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
                cf: CF_MAILBOXES,
                reason: e.to_string(),
            })?;
        let Some(fields) = record.as_object_mut() else {
            return Err(StoreError::Corrupt {
                cf: CF_MAILBOXES,
                reason: format!("record {} is not an object", hex::encode(&key)),
            });
        };
        let subscribed = fields
            .remove("subscribed")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let user_id = fields.get("user_id").and_then(|v| v.as_u64());
        let name = fields.get("name").and_then(|v| v.as_str());
        if subscribed {
            let (Some(user_id), Some(name)) = (user_id, name) else {
                return Err(StoreError::Corrupt {
                    cf: CF_MAILBOXES,
                    reason: format!("record {} has no user or name", hex::encode(&key)),
                });
            };
            batch.put(CF_SUBSCRIPTIONS, subscription_key(user_id, name), []);
            moved += 1;
        }
        let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
        batch.put(CF_MAILBOXES, &key, bytes);
    }
    batch.put(CF_META, SCHEMA_KEY, 2u32.to_be_bytes());
    db.write(batch, true)?;
    Ok(moved)
}
