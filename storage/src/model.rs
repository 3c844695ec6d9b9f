//! Records kept in the store. They are serialised as JSON: readable with `ldb` when an
//! engineer must look at a damaged database, and new optional fields need no migration.

use serde::{Deserialize, Serialize};

/// How mail for a protected domain is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMode {
    /// Queue for the primary only; no local mailbox.
    Relay,
    /// Store in the recipient's mailbox and queue for the primary.
    #[default]
    Both,
}

/// TLS toward the primary server when redelivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RelayTls {
    /// STARTTLS when offered, plaintext otherwise.
    #[default]
    Opportunistic,
    /// STARTTLS required; certificate verified.
    Required,
    /// Never STARTTLS (legacy primaries with broken TLS).
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Engagement {
    #[default]
    Automatic,
    Manual,
}

/// What a user may do: read and send, read only, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AccessLevel {
    #[default]
    Full,
    ReadOnly,
    None,
}

/// When mailboxes are reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AccessWindow {
    /// 24/7 archive access.
    #[default]
    Always,
    /// Only while the domain is in an outage (or draining).
    OutageOnly,
}

/// A protected domain and its settings (SPEC "Domains").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Domain {
    pub name: String,
    pub delivery_mode: DeliveryMode,
    /// Primary server, `host[:port]`.
    pub relay_host: Option<String>,
    pub relay_tls: RelayTls,
    pub engagement: Engagement,
    pub monitoring: bool,
    pub probe_interval_secs: u32,
    pub failures_before_engage: u32,
    pub successes_before_recover: u32,
    /// Up to four addresses hosted elsewhere than the primary.
    pub alert_recipients: Vec<String>,
    pub access: AccessLevel,
    pub access_window: AccessWindow,
    pub retention_days: u32,
    pub queue_lifetime_days: u32,
    pub dkim_selector: Option<String>,
    /// Path of the PEM private key used to sign mail sent during outages.
    pub dkim_key_path: Option<String>,
    /// Redeliver messages the user deleted during the outage (default: no, like the anchors).
    pub redeliver_deleted: bool,
    /// Store a copy of submitted mail in Sent (for POP users whose client cannot).
    pub save_sent: bool,
}

impl Default for Domain {
    fn default() -> Self {
        Domain {
            name: String::new(),
            delivery_mode: DeliveryMode::Both,
            relay_host: None,
            relay_tls: RelayTls::Opportunistic,
            engagement: Engagement::Automatic,
            monitoring: true,
            probe_interval_secs: 60,
            failures_before_engage: 3,
            successes_before_recover: 2,
            alert_recipients: Vec::new(),
            access: AccessLevel::Full,
            access_window: AccessWindow::Always,
            retention_days: 90,
            queue_lifetime_days: 15,
            dkim_selector: None,
            dkim_key_path: None,
            redeliver_deleted: false,
            save_sent: false,
        }
    }
}

impl Domain {
    pub fn new(name: &str) -> Self {
        Domain {
            name: name.to_ascii_lowercase(),
            ..Domain::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UserStatus {
    #[default]
    Active,
    Inactive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct User {
    pub id: u64,
    /// Canonical lower-case address.
    pub address: String,
    pub display_name: String,
    pub status: UserStatus,
    /// PHC string of an argon2id hash; `None` means the user cannot log in yet.
    pub password_hash: Option<String>,
    /// Overrides the domain's access level.
    pub access: Option<AccessLevel>,
    pub access_window: Option<AccessWindow>,
    /// Bytes; `None` is unlimited.
    pub quota_bytes: Option<u64>,
    /// The user must change the password (set by `user passwd --force-reset`).
    pub force_password_reset: bool,
    pub created_at: i64,
    /// Distinguished name when the user comes from LDAP sync.
    pub ldap_dn: Option<String>,
}

impl User {
    pub fn domain(&self) -> &str {
        crate::address::split(&self.address).map_or("", |(_, d)| d)
    }
    pub fn is_active(&self) -> bool {
        self.status == UserStatus::Active
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressKind {
    Primary,
    Alias,
}

/// An address that receives mail: a user's own or one of their aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressEntry {
    pub user_id: u64,
    pub kind: AddressKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
}

/// Mailboxes every new user gets, with their special-use attributes (RFC 6154).
pub const DEFAULT_MAILBOXES: &[(&str, Option<SpecialUse>)] = &[
    ("INBOX", None),
    ("Sent", Some(SpecialUse::Sent)),
    ("Drafts", Some(SpecialUse::Drafts)),
    ("Trash", Some(SpecialUse::Trash)),
    ("Junk", Some(SpecialUse::Junk)),
    ("Archive", Some(SpecialUse::Archive)),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    pub id: u64,
    pub user_id: u64,
    /// Full name, "/" as hierarchy delimiter; the inbox is always "INBOX".
    pub name: String,
    pub special_use: Option<SpecialUse>,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    /// Number of messages.
    pub exists: u32,
    /// Sum of message sizes.
    pub size: u64,
    /// Messages without \Seen (IMAP STATUS UNSEEN without a scan).
    #[serde(default)]
    pub unseen: u32,
    /// Lowest UID not yet claimed as \Recent by a session.
    pub recent_uid: u32,
}

/// System flags as a bit set.
pub mod flags {
    pub const SEEN: u8 = 1;
    pub const ANSWERED: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const DELETED: u8 = 8;
    pub const DRAFT: u8 = 16;
}

/// Content address of a body: its SHA-256.
pub type BlobId = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub uid: u32,
    #[serde(with = "hex_blob")]
    pub blob: BlobId,
    pub flags: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    pub modseq: u64,
    pub internal_date: i64,
    #[serde(default)]
    pub tz_offset_minutes: i16,
    pub size: u32,
    /// Tracking id of the delivery that created it (copies keep it).
    #[serde(default)]
    pub tracking_id: u64,
    /// What SORT DATE orders by (RFC 5256 §2.2): the Date header in Unix seconds, or
    /// `internal_date` when it has none that parses; written with the record when the
    /// server set a summariser, so such a SORT reads the records SELECT already holds.
    /// `None`: not known (a record written before, or without a summariser); IMAP then
    /// reads the body's summary once and fills it in (`Store::put_sent_dates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_date: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Added,
    Flags,
    Expunged,
}

/// One entry of a mailbox's change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub uid: u32,
    pub modseq: u64,
    pub kind: ChangeKind,
}

/// How a flag update applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// Why a message is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueKind {
    /// Inbound mail (or a user's sent mail) to hand to the domain's primary server.
    Relay,
    /// A user's mail to external recipients (MX lookup or smarthost).
    Outbound,
    /// A notification or DSN we generated.
    Notification,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientStatus {
    Pending,
    Delivered,
    /// Permanent failure (5xx); a DSN was or will be sent.
    Failed,
    /// Queue lifetime ran out.
    Expired,
    /// Not redelivered because the user deleted the message during the outage.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecipient {
    pub address: String,
    pub status: RecipientStatus,
    pub attempts: u32,
    pub last_reply: Option<String>,
    /// User whose mailbox holds the local copy (for "deleted during the outage").
    #[serde(default)]
    pub local_user: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: u64,
    pub kind: QueueKind,
    /// Domain whose relay host (Relay) or whose sender (Outbound) this belongs to.
    pub domain: String,
    pub mail_from: String,
    pub recipients: Vec<QueueRecipient>,
    #[serde(with = "hex_blob")]
    pub blob: BlobId,
    pub size: u64,
    pub created_at: i64,
    pub next_attempt: i64,
    pub tracking_id: u64,
    pub message_id: Option<String>,
    /// Held by an admin (`queue hold`): not attempted until released.
    #[serde(default)]
    pub held: bool,
    /// The record of a message a user sent during the outage, for the primary to file
    /// in Sent: redelivered with an `X-Understudy-Sent: yes` header on top.
    #[serde(default)]
    pub sent_copy: bool,
    /// The queue runner of one node is attempting the entry (`lease.rs`); while the
    /// lease runs, `next_attempt` is its end, so no other runner finds it due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// A queue runner's claim on an entry: which node, which claim of that node, until when
/// (store clock, seconds). An outcome is recorded only under the lease it was attempted
/// under; once another node has claimed the entry the late outcome is discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub node: u64,
    pub claim: u64,
    pub until: i64,
}

impl QueueEntry {
    /// The lease, if it still runs at `now`.
    pub fn live_lease(&self, now: i64) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.until > now)
    }

    pub fn pending(&self) -> impl Iterator<Item = &QueueRecipient> {
        self.recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Pending)
    }
    pub fn is_done(&self) -> bool {
        self.pending().next().is_none()
    }
}

/// What a queued message needs at delivery time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueueEntry {
    pub kind: QueueKind,
    pub domain: String,
    pub mail_from: String,
    pub recipients: Vec<(String, Option<u64>)>,
    pub next_attempt: i64,
    /// See [`QueueEntry::sent_copy`].
    pub sent_copy: bool,
}

/// A relay copy that was not redelivered because the user deleted the message here
/// during the outage, kept with its body until the domain's retention removes it, so
/// an admin can still hand it to the primary (`queue redeliver TRACKING-ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recoverable {
    pub tracking_id: u64,
    /// The relay entry it came from.
    pub queue_id: u64,
    pub domain: String,
    pub mail_from: String,
    /// The recipients not redelivered, with the user whose copy was deleted.
    pub recipients: Vec<(String, Option<u64>)>,
    #[serde(with = "hex_blob")]
    pub blob: BlobId,
    pub size: u64,
    pub message_id: Option<String>,
    /// When the message arrived (retention counts from here).
    pub created_at: i64,
    pub cancelled_at: i64,
    #[serde(default)]
    pub sent_copy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingEvent {
    pub at: i64,
    pub kind: String,
    pub detail: String,
}

mod hex_blob {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(blob: &super::BlobId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(blob))
    }

    /// Straight from the JSON text into the id, with no allocation: SELECT decodes one
    /// per message of the mailbox.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::BlobId, D::Error> {
        d.deserialize_str(HexVisitor)
    }

    struct HexVisitor;

    impl serde::de::Visitor<'_> for HexVisitor {
        type Value = super::BlobId;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a body id of 64 hex digits")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<super::BlobId, E> {
            let mut blob = [0u8; 32];
            hex::decode_to_slice(text, &mut blob).map_err(E::custom)?;
            Ok(blob)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_bad_body_id_is_refused() {
        let record = MessageRecord {
            uid: 7,
            blob: [0xab; 32],
            flags: 1,
            keywords: vec!["$label1".into()],
            modseq: 9,
            internal_date: 1_700_000_000,
            tz_offset_minutes: 60,
            size: 120,
            tracking_id: 3,
            sent_date: Some(1_600_000_000),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<MessageRecord>(&json).unwrap(), record);
        // Written before sent dates existed: none.
        let old = json.replace(",\"sent_date\":1600000000", "");
        assert_ne!(old, json);
        let old: MessageRecord = serde_json::from_str(&old).unwrap();
        assert_eq!(old.sent_date, None);
        for bad in ["ab".repeat(31), "zz".repeat(32), "ab".repeat(33)] {
            let text = json.replace(&"ab".repeat(32), &bad);
            assert!(serde_json::from_str::<MessageRecord>(&text).is_err(), "{bad}");
        }
    }
}
