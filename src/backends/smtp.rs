//! SMTP on the store: recipient validation for the MX side, sender checks for
//! submission, and delivery — local copies, the relay queue for each domain's primary
//! and the outbound queue — in one synced write per message.

use std::collections::BTreeMap;
use std::sync::Arc;

use understudy_protocol::smtp::{
    DeliveryError, DeliveryReceipt, Envelope, RcptVerdict, SmtpBackend, SmtpMode,
};
use understudy_protocol::Account;
use understudy_storage::accounts::Recipient;
use understudy_storage::address::domain_of;
use understudy_storage::mailbox::DeliveryRequest;
use understudy_storage::outage::OutagePhase;
use understudy_storage::{
    flags, DeliveryMode, NewQueueEntry, QueueKind, SpecialUse, Store, StoreError, TrackingId,
};

use crate::inbound_auth::InboundVerifier;

pub struct SmtpStore {
    store: Store,
    /// Wakes the queue runner so that queued mail goes out at once.
    queue_wakeup: Option<crate::delivery::QueueWakeup>,
    /// SPF/DKIM/DMARC for MX mail (`[smtp] verify_inbound`); `None` when off. Swapped
    /// by a reload (`replace_inbound_auth`).
    inbound_auth: parking_lot::RwLock<Option<Arc<InboundVerifier>>>,
    /// `delivery.outage_recheck_secs`: a relay copy for a domain in an outage is queued
    /// parked this long, as the queue runner would park it, instead of due at once.
    outage_recheck_secs: Option<i64>,
}

impl SmtpStore {
    pub fn new(store: Store) -> Self {
        SmtpStore {
            store,
            queue_wakeup: None,
            inbound_auth: parking_lot::RwLock::new(None),
            outage_recheck_secs: None,
        }
    }

    /// Queue relay copies for a domain in an outage parked for `secs` (see the field).
    pub fn with_outage_parking(mut self, secs: u64) -> Self {
        self.outage_recheck_secs = Some(i64::try_from(secs).unwrap_or(i64::MAX));
        self
    }

    /// When a new relay copy for `domain` is first due: now, or, during the domain's
    /// outage, at the runner's next recheck. Waking the runner for a copy it can only
    /// park cost a due-index scan and a rewrite of the entry per message.
    fn relay_due(&self, domain: &str, now: i64) -> Result<i64, StoreError> {
        let Some(secs) = self.outage_recheck_secs else {
            return Ok(now);
        };
        Ok(match self.store.outage_state(domain)?.phase {
            OutagePhase::Outage => now.saturating_add(secs),
            _ => now,
        })
    }

    pub fn with_inbound_auth(self, verifier: Option<Arc<InboundVerifier>>) -> Self {
        self.replace_inbound_auth(verifier);
        self
    }

    /// The checks messages delivered from now on get (SIGHUP with a changed `[smtp]`).
    pub fn replace_inbound_auth(&self, verifier: Option<Arc<InboundVerifier>>) {
        *self.inbound_auth.write() = verifier;
    }

    pub fn with_queue_wakeup(mut self, wakeup: crate::delivery::QueueWakeup) -> Self {
        self.queue_wakeup = Some(wakeup);
        self
    }
}

/// The Message-ID header of a message, if any (first header block only).
fn message_id(message: &[u8]) -> Option<String> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let headers = String::from_utf8_lossy(&message[..end]);
    let mut lines = headers.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 11 && line[..11].eq_ignore_ascii_case("message-id:") {
            let mut value = line[11..].trim().to_string();
            while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
                value.push_str(next.trim());
                lines.next();
            }
            return (!value.is_empty()).then(|| value.chars().take(998).collect());
        }
    }
    None
}

/// The reply a store error gets: `452 4.3.1` when the device is full (RocksDB's ENOSPC,
/// or a filesystem write that hit it), `451 4.3.0` otherwise. Either way the sender
/// keeps the message and retries; nothing was half-written (one batch per message).
fn delivery_error(e: StoreError) -> DeliveryError {
    let full =
        e.is_no_space() || matches!(&e, StoreError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull);
    if full {
        tracing::error!(error = %e, "store full: message refused with 452");
        DeliveryError::StorageFull
    } else {
        tracing::error!(error = %e, "delivery failed: message refused with 451");
        DeliveryError::Temporary(e.to_string())
    }
}

impl SmtpBackend for SmtpStore {
    fn check_recipient(&self, mode: SmtpMode, account: Option<&Account>, rcpt: &str) -> RcptVerdict {
        let verdict = match self.store.resolve_recipient(rcpt) {
            Ok(Recipient::Local(user)) if user.is_active() => RcptVerdict::Accept,
            Ok(Recipient::Local(_)) => RcptVerdict::Inactive,
            Ok(Recipient::Unknown) => RcptVerdict::Unknown,
            Ok(Recipient::NotLocal) => match (mode, account) {
                (SmtpMode::Submission, Some(_)) => RcptVerdict::Accept,
                _ => RcptVerdict::RelayDenied,
            },
            Err(e) => {
                tracing::error!(error = %e, "recipient check failed");
                RcptVerdict::Temporary
            }
        };
        log_refusal(mode, account, rcpt, verdict);
        verdict
    }

    fn check_recipient_now(
        &self,
        mode: SmtpMode,
        account: Option<&Account>,
        rcpt: &str,
    ) -> Option<RcptVerdict> {
        // Only local recipients are held in memory; anything else waits for the store.
        let verdict = match self.store.cached_recipient(rcpt)? {
            Recipient::Local(user) if user.is_active() => RcptVerdict::Accept,
            Recipient::Local(_) => RcptVerdict::Inactive,
            _ => return None,
        };
        log_refusal(mode, account, rcpt, verdict);
        Some(verdict)
    }

    /// The store's next tracking id: the `Received` header, the log and the `250`
    /// reply all name the id `track` finds the message by.
    fn reserve_id(&self) -> Option<String> {
        match self.store.reserve_tracking_id() {
            Ok(id) => Some(TrackingId(id).to_string()),
            Err(e) => {
                // The delivery reserves one itself (and fails as the store does).
                tracing::warn!(error = %e, "smtp: no tracking id reserved");
                None
            }
        }
    }

    /// `postmaster@` the first protected domain (in name order) where that address is
    /// an active user or an alias.
    fn postmaster(&self) -> Option<String> {
        let domains = match self.store.domains() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "postmaster look-up failed");
                return None;
            }
        };
        let mut names: Vec<String> = domains.into_iter().map(|d| d.name).collect();
        names.sort();
        names
            .into_iter()
            .map(|d| format!("postmaster@{d}"))
            .find(|a| matches!(self.store.resolve_recipient(a), Ok(Recipient::Local(u)) if u.is_active()))
    }

    fn sender_allowed(&self, account: &Account, address: &str) -> bool {
        match self.store.address_belongs_to(account.id, address) {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(error = %e, "sender check failed");
                false
            }
        }
    }

    fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReceipt, DeliveryError> {
        let fail = delivery_error;
        // Configuration C: check the sender before anything is written; a DMARC
        // `p=reject` failure is refused here and nothing is stored.
        let checked;
        let verifier = self.inbound_auth.read().clone();
        let message = match (&verifier, envelope.mode) {
            (Some(verifier), SmtpMode::Mx) => match verifier.check(envelope, message)? {
                Some(with_results) => {
                    checked = with_results;
                    &checked[..]
                }
                None => message,
            },
            _ => message,
        };
        let now = self.store.now();
        let mut users = Vec::new();
        // Relay copies for each protected domain's primary, by domain.
        let mut relay: BTreeMap<String, Vec<(String, Option<u64>)>> = BTreeMap::new();
        let mut external = Vec::new();
        for rcpt in &envelope.rcpts {
            match self.store.resolve_recipient(rcpt).map_err(fail)? {
                Recipient::Local(user) => {
                    let domain = domain_of(rcpt);
                    let settings = self.store.domain(&domain).map_err(fail)?.unwrap_or_default();
                    if settings.delivery_mode == DeliveryMode::Both {
                        users.push(user.id);
                    }
                    relay
                        .entry(domain)
                        .or_default()
                        .push((rcpt.to_ascii_lowercase(), Some(user.id)));
                }
                // Accepted at RCPT for submission only (the session never gets here for
                // a foreign recipient on the MX side).
                Recipient::NotLocal if envelope.mode == SmtpMode::Submission => external.push(rcpt.clone()),
                other => {
                    tracing::warn!(rcpt = %rcpt, ?other, "recipient changed since RCPT; refusing the message");
                    return Err(DeliveryError::Temporary("recipient no longer valid".into()));
                }
            }
        }
        let mut queue = Vec::with_capacity(relay.len() + 2);
        for (domain, recipients) in relay {
            queue.push(NewQueueEntry {
                kind: QueueKind::Relay,
                next_attempt: self.relay_due(&domain, now).map_err(fail)?,
                domain,
                mail_from: envelope.mail_from.clone(),
                recipients,
                sent_copy: false,
            });
        }
        if let (SmtpMode::Submission, Some(account)) = (envelope.mode, &envelope.account) {
            let sender_domain = domain_of(&account.address);
            if !external.is_empty() {
                queue.push(NewQueueEntry {
                    kind: QueueKind::Outbound,
                    domain: sender_domain.clone(),
                    mail_from: envelope.mail_from.clone(),
                    recipients: external.iter().map(|r| (r.clone(), None)).collect(),
                    next_attempt: now,
                    sent_copy: false,
                });
            }
            // A record of the sent mail for the company's own server (SPEC "Redelivery"):
            // addressed to the sender only, so the primary files it and nobody gets a
            // second copy.
            queue.push(NewQueueEntry {
                kind: QueueKind::Relay,
                next_attempt: self.relay_due(&sender_domain, now).map_err(fail)?,
                domain: sender_domain,
                mail_from: envelope.mail_from.clone(),
                recipients: vec![(account.address.clone(), None)],
                // Marked for the primary's rules, which file it in Sent.
                sent_copy: true,
            });
        }
        let rcpts = envelope.rcpts.join(", ");
        let summary = match &envelope.account {
            Some(a) => format!("submitted by {} from [{}] to {rcpts}", a.address, envelope.peer),
            None => format!(
                "from <{}> via {} [{}] to {rcpts}",
                envelope.mail_from, envelope.helo, envelope.peer
            ),
        };
        let request = DeliveryRequest {
            body: message,
            users,
            queue,
            message_id: message_id(message),
            summary,
        };
        let started = std::time::Instant::now();
        // The id the session wrote into the Received header (see `reserve_id`).
        let tracking_id = match envelope.id.parse::<TrackingId>() {
            Ok(id) => id.0,
            Err(_) => self.store.reserve_tracking_id().map_err(fail)?,
        };
        let outcome = self.store.deliver_as(tracking_id, &request).map_err(fail)?;
        if let (SmtpMode::Submission, Some(account)) = (envelope.mode, &envelope.account) {
            self.save_sent(account, message);
        }
        let m = &crate::metrics::METRICS;
        m.store_write(started.elapsed());
        m.messages_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        m.messages_stored
            .fetch_add(outcome.stored.len() as u64, std::sync::atomic::Ordering::Relaxed);
        m.messages_queued.fetch_add(
            outcome.queue_ids.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let due_now = request.queue.iter().any(|entry| entry.next_attempt <= now);
        if let (Some(wakeup), true) = (&self.queue_wakeup, due_now) {
            wakeup.notify_one();
        }
        // The session logs "message accepted" with the receipt; this adds where it went.
        let id = TrackingId(outcome.tracking_id);
        tracing::debug!(
            %id,
            stored = outcome.stored.len(),
            queue = ?outcome.queue_ids,
            "message stored"
        );
        Ok(DeliveryReceipt { id: id.to_string() })
    }
}

impl SmtpStore {
    /// `save_sent` domains: a copy of what the user sent goes into their Sent folder,
    /// \Seen, for mail apps that do not save one themselves (POP3 users, some phones).
    /// After the message is queued: a failure here is logged, and the message still goes
    /// out (it is the user's copy, not the mail).
    fn save_sent(&self, account: &Account, message: &[u8]) {
        let saved = (|| -> Result<bool, StoreError> {
            let domain = domain_of(&account.address);
            if !self.store.domain(&domain)?.is_some_and(|d| d.save_sent) {
                return Ok(false);
            }
            let Some(sent) = self
                .store
                .mailboxes(account.id)?
                .into_iter()
                .find(|m| m.special_use == Some(SpecialUse::Sent))
            else {
                return Ok(false);
            };
            self.store
                .append(account.id, sent.id, message, flags::SEEN, &[], None)?;
            Ok(true)
        })();
        match saved {
            Ok(true) => tracing::debug!(user = %account.address, "copy saved in Sent"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(user = %account.address, error = %e, "cannot save the sent copy in Sent")
            }
        }
    }
}

/// Refused recipients are logged with the reason; the client only sees the reply.
fn log_refusal(mode: SmtpMode, account: Option<&Account>, rcpt: &str, verdict: RcptVerdict) {
    let reason = match verdict {
        RcptVerdict::Accept | RcptVerdict::Temporary => return,
        RcptVerdict::Unknown => "unknown recipient",
        RcptVerdict::Inactive => "recipient deactivated",
        RcptVerdict::RelayDenied => "relaying denied: not a protected domain",
    };
    let mode = match mode {
        SmtpMode::Mx => "mx",
        SmtpMode::Submission => "submission",
    };
    match account {
        Some(a) => tracing::info!(%rcpt, mode, user = %a.address, "recipient refused: {reason}"),
        None => tracing::info!(%rcpt, mode, "recipient refused: {reason}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::{delivery_error, message_id, SmtpStore};
    use understudy_protocol::smtp::{DeliveryError, Envelope, SmtpBackend, SmtpMode};
    use understudy_storage::outage::{OutagePhase, OutageState};
    use understudy_storage::{Clock, Domain, ManualClock, Store, StoreError, StoreOptions};

    /// During the domain's outage the relay copy is queued parked until the runner's next
    /// recheck (the runner no longer has to be woken to park it); otherwise it is due now.
    #[test]
    fn relay_copies_are_queued_parked_during_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let store = Store::open_with(dir.path(), StoreOptions::default(), clock.clone()).unwrap();
        store.add_domain(&Domain::new("example.com")).unwrap();
        store.create_user("anna@example.com", "Anna", None).unwrap();
        let wakeup = crate::delivery::QueueWakeup::default();
        let smtp = SmtpStore::new(store.clone())
            .with_outage_parking(60)
            .with_queue_wakeup(wakeup.clone());
        let envelope = Envelope {
            id: String::new(),
            mode: SmtpMode::Mx,
            mail_from: "x@remote.test".into(),
            rcpts: vec!["anna@example.com".into()],
            helo: "remote.test".into(),
            peer: "192.0.2.1".parse().unwrap(),
            tls: false,
            account: None,
            smtputf8: false,
            body_8bit: false,
        };
        let next_attempts = |store: &Store| -> Vec<i64> {
            store
                .queue_entries(Some("example.com"))
                .unwrap()
                .iter()
                .map(|e| e.next_attempt)
                .collect()
        };
        let woken = |wakeup: &crate::delivery::QueueWakeup| {
            let notified = wakeup.notified();
            tokio::pin!(notified);
            notified.as_mut().enable()
        };

        smtp.deliver(&envelope, b"Subject: one\r\n\r\nx\r\n").unwrap();
        let now = clock.now();
        assert_eq!(next_attempts(&store), vec![now]);
        assert!(woken(&wakeup), "a due copy wakes the runner");

        let outage = OutageState {
            phase: OutagePhase::Outage,
            since: now,
            reason: "test".into(),
            manual: true,
        };
        store.set_outage_state("example.com", &outage).unwrap();
        smtp.deliver(&envelope, b"Subject: two\r\n\r\nx\r\n").unwrap();
        assert_eq!(next_attempts(&store), vec![now, now + 60]);
        assert!(!woken(&wakeup), "a parked copy does not wake the runner");
    }

    #[test]
    fn a_full_store_gives_452_any_other_store_error_451() {
        assert_eq!(
            delivery_error(StoreError::NoSpace("No space left on device".into())),
            DeliveryError::StorageFull
        );
        assert_eq!(
            delivery_error(StoreError::Io(std::io::Error::from_raw_os_error(28))),
            DeliveryError::StorageFull,
            "ENOSPC from a file write"
        );
        assert!(matches!(
            delivery_error(StoreError::Io(std::io::Error::other("EIO"))),
            DeliveryError::Temporary(_)
        ));
        assert!(matches!(
            delivery_error(StoreError::Corrupt {
                cf: "messages",
                reason: "bad".into()
            }),
            DeliveryError::Temporary(_)
        ));
    }

    #[test]
    fn message_id_is_read_from_headers_only() {
        assert_eq!(
            message_id(b"Subject: x\r\nMessage-Id: <a@b>\r\n\r\nMessage-ID: <c@d>\r\n").as_deref(),
            Some("<a@b>")
        );
        assert_eq!(
            message_id(b"Message-ID:\r\n <folded@x>\r\n\r\n").as_deref(),
            Some("<folded@x>")
        );
        assert_eq!(message_id(b"Subject: x\r\n\r\nMessage-ID: <c@d>\r\n"), None);
    }
}
