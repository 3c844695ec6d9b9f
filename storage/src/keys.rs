//! Column family names and key encodings. Numeric parts are big-endian so that RocksDB's
//! byte order is numeric order and prefix scans walk one owner's records in order.
//!
//! | cf          | key                                   | value                      |
//! |-------------|---------------------------------------|----------------------------|
//! | meta        | name                                  | schema version, counters   |
//! | domains     | domain name                           | `Domain` JSON              |
//! | users       | user id (u64)                         | `User` JSON                |
//! | addresses   | domain 0x00 local-part                | `AddressEntry` JSON        |
//! | mailboxes   | user id (u64) mailbox id (u64)        | `Mailbox` JSON             |
//! | subscriptions | user id (u64) mailbox name (UTF-8)  | empty                      |
//! | messages    | mailbox id (u64) uid (u32)            | `MessageRecord` JSON       |
//! | changes     | mailbox id (u64) modseq (u64)         | `ChangeRecord` JSON        |
//! | blobs       | sha-256 of body                       | body octets                |
//! | blob_refs   | sha-256 of body                       | reference count (u64)      |
//! | queue       | queue id (u64)                        | `QueueEntry` JSON          |
//! | queue_due   | next attempt (i64) queue id (u64)     | empty                      |
//! | tracking    | tracking id (u64) sequence (u32)      | `TrackingEvent` JSON       |
//! | message_ids | Message-ID 0x00 tracking id (u64)     | empty                      |
//! | outage      | domain name / domain 0x00 time seq    | `OutageState` / transition |
//! | outage_notices | domain 0x00 time (i64, offset) tracking id | empty             |
//! | admins      | administrator name                    | `AdminAccount` JSON        |
//! | api_tokens  | sha-256 of the token                  | `ApiToken` JSON            |
//! | audit       | time (i64, offset) sequence (u64)     | `AuditEntry` JSON          |
//! | console_sessions | sha-256 of the session id        | `ConsoleSession` JSON      |
//! | console_confirmations | sha-256 of the token        | `ConsoleConfirmation` JSON |
//! | logins      | user id (u64) protocol                | last login time (i64)      |
//! | recoverable | tracking id (u64) queue id (u64)      | `Recoverable` JSON         |
//! | held        | mailbox id (u64) uid (u32)            | `HeldMessage` JSON         |
//! | sort_keys   | mailbox id (u64) uid (u32)            | body id (32) + summary     |
//! | body_objects | sha-256 of body                      | empty (body in S3)         |
//! | body_sweep  | sha-256 of body                       | released at (i64)          |
//! | view_holds  | `h` mailbox (u64) node (u64) hold (u64) / `n` node (u64) | horizon (u64) / lease end (i64) |

pub const CF_META: &str = "meta";
pub const CF_DOMAINS: &str = "domains";
pub const CF_USERS: &str = "users";
pub const CF_ADDRESSES: &str = "addresses";
pub const CF_MAILBOXES: &str = "mailboxes";
/// A user's subscribed mailbox names, kept apart from the mailboxes (`subscriptions.rs`).
pub const CF_SUBSCRIPTIONS: &str = "subscriptions";
pub const CF_MESSAGES: &str = "messages";
pub const CF_CHANGES: &str = "changes";
pub const CF_BLOBS: &str = "blobs";
pub const CF_BLOB_REFS: &str = "blob_refs";
/// Per body (SHA-256): a small summary of its header that the caller's summariser
/// computed when the body was first written (IMAP SORT and THREAD keys), opaque here.
pub const CF_SUMMARIES: &str = "summaries";
pub const CF_QUEUE: &str = "queue";
pub const CF_QUEUE_DUE: &str = "queue_due";
pub const CF_TRACKING: &str = "tracking";
pub const CF_MESSAGE_IDS: &str = "message_ids";
pub const CF_OUTAGE: &str = "outage";
pub const CF_OUTAGE_HISTORY: &str = "outage_history";
/// Each outage notice queued, by domain and time, pointing at its tracking id: what
/// the dashboard lists without reading the whole tracking log (`outage.rs`).
pub const CF_OUTAGE_NOTICES: &str = "outage_notices";
pub const CF_ADMINS: &str = "admins";
pub const CF_API_TOKENS: &str = "api_tokens";
pub const CF_AUDIT: &str = "audit";
/// Console sessions, under the SHA-256 of their id (`admins.rs`): every node behind a
/// balancer sees them, and they survive a restart.
pub const CF_CONSOLE_SESSIONS: &str = "console_sessions";
/// Single-use confirmations of bulk queue actions, under the SHA-256 of their token.
pub const CF_CONSOLE_CONFIRMATIONS: &str = "console_confirmations";
/// Each user's last login per protocol (`logins.rs`).
pub const CF_LOGINS: &str = "logins";
/// Relay copies not redelivered because the user deleted the message during the
/// outage, kept (with their body) until retention so an admin can still redeliver them
/// (`recoverable.rs`).
pub const CF_RECOVERABLE: &str = "recoverable";
/// Expunged messages kept, with a body reference each, for the IMAP views that still
/// show them (`view_holds.rs`); released when the last such view is told or gone.
pub const CF_HELD: &str = "held";
/// Per message: its body's id and summary (as in `summaries`), written and deleted with
/// the message record, so the SORT keys of a whole mailbox are one ordered scan.
pub const CF_SORT_KEYS: &str = "sort_keys";
/// Per body kept in the S3 object store (`bodies.rs`): a marker in place of its `blobs`
/// record, written and deleted under the same rules.
pub const CF_BODY_OBJECTS: &str = "body_objects";
/// Bodies whose last reference went while they were objects: their objects are deleted
/// by the sweep after a grace period (`Store::sweep_bodies`).
pub const CF_BODY_SWEEP: &str = "body_sweep";
/// On a store shared by several nodes: each selected IMAP view's hold (mailbox, node,
/// hold id, its horizon) and each node's liveness (its lease's end), so an expunge on
/// one node keeps what another node's views show (`view_holds.rs`).
pub const CF_VIEW_HOLDS: &str = "view_holds";

pub const ALL_CFS: &[&str] = &[
    CF_META,
    CF_DOMAINS,
    CF_USERS,
    CF_ADDRESSES,
    CF_MAILBOXES,
    CF_SUBSCRIPTIONS,
    CF_MESSAGES,
    CF_CHANGES,
    CF_BLOBS,
    CF_BLOB_REFS,
    CF_SUMMARIES,
    CF_QUEUE,
    CF_QUEUE_DUE,
    CF_TRACKING,
    CF_MESSAGE_IDS,
    CF_OUTAGE,
    CF_OUTAGE_HISTORY,
    CF_OUTAGE_NOTICES,
    CF_ADMINS,
    CF_API_TOKENS,
    CF_AUDIT,
    CF_CONSOLE_SESSIONS,
    CF_CONSOLE_CONFIRMATIONS,
    CF_LOGINS,
    CF_RECOVERABLE,
    CF_HELD,
    CF_SORT_KEYS,
    CF_BODY_OBJECTS,
    CF_BODY_SWEEP,
    CF_VIEW_HOLDS,
];

pub fn u64_key(a: u64) -> [u8; 8] {
    a.to_be_bytes()
}

pub fn u64_pair(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

pub fn message_key(mailbox: u64, uid: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&mailbox.to_be_bytes());
    k[8..].copy_from_slice(&uid.to_be_bytes());
    k
}

pub fn tracking_key(tracking: u64, seq: u32) -> [u8; 12] {
    message_key(tracking, seq)
}

/// Time keys are offset so that negative times still sort before positive ones.
pub fn due_key(at: i64, queue_id: u64) -> [u8; 16] {
    u64_pair((at as u64) ^ (1 << 63), queue_id)
}

pub fn due_key_time(key: &[u8]) -> Option<(i64, u64)> {
    let (a, b) = split_u64_pair(key)?;
    Some(((a ^ (1 << 63)) as i64, b))
}

pub fn split_u64_pair(key: &[u8]) -> Option<(u64, u64)> {
    let a: [u8; 8] = key.get(..8)?.try_into().ok()?;
    let b: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some((u64::from_be_bytes(a), u64::from_be_bytes(b)))
}

pub fn split_message_key(key: &[u8]) -> Option<(u64, u32)> {
    let a: [u8; 8] = key.get(..8)?.try_into().ok()?;
    let b: [u8; 4] = key.get(8..12)?.try_into().ok()?;
    Some((u64::from_be_bytes(a), u32::from_be_bytes(b)))
}

/// `domain 0x00 local` so one domain's addresses are one prefix scan. `address` is a
/// normalized one (`EmailAddress::normalized`), as every stored address is.
pub fn address_key(address: &str) -> Option<Vec<u8>> {
    let (local, domain) = crate::address::split(address)?;
    let mut k = Vec::with_capacity(address.len() + 1);
    k.extend_from_slice(domain.as_bytes());
    k.push(0);
    k.extend_from_slice(local.as_bytes());
    Some(k)
}

pub fn address_from_key(key: &[u8]) -> Option<String> {
    let pos = key.iter().position(|b| *b == 0)?;
    let domain = std::str::from_utf8(&key[..pos]).ok()?;
    let local = std::str::from_utf8(&key[pos + 1..]).ok()?;
    Some(format!("{local}@{domain}"))
}

pub fn domain_prefix(domain: &str) -> Vec<u8> {
    let mut k = domain.as_bytes().to_vec();
    k.push(0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically() {
        assert!(message_key(1, 2) < message_key(1, 10));
        assert!(message_key(1, u32::MAX) < message_key(2, 0));
        assert!(due_key(-5, 9) < due_key(3, 1));
        assert_eq!(due_key_time(&due_key(-5, 9)), Some((-5, 9)));
    }

    #[test]
    fn address_keys_round_trip() {
        let k = address_key("anna@example.com").unwrap();
        assert!(k.starts_with(&domain_prefix("example.com")));
        assert_eq!(address_from_key(&k).unwrap(), "anna@example.com");
    }
}
