//! Outage notifications: plain-text mail to a domain's alert recipients (at most four)
//! saying what happened, when, how much mail is queued and what to do next. They are
//! queued as `Notification` entries, which go out through outbound delivery, never
//! through the primary server that is down.

use understudy_storage::mailbox::DeliveryRequest;
use understudy_storage::outage::{OutagePhase, OutageState};
use understudy_storage::outage_ops::{QueueSummary, RelayReport};
use understudy_storage::{NewQueueEntry, QueueKind, StoreResult};

use super::machine::NoticeKind;

/// SPEC "Domains": up to four alert recipients.
pub const MAX_ALERT_RECIPIENTS: usize = 4;

/// Everything a notice says.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    pub kind: NoticeKind,
    pub domain: &'a str,
    pub state: &'a OutageState,
    pub queue: QueueSummary,
    pub now: i64,
    /// Our host name: the sender is `understudy@hostname`.
    pub hostname: &'a str,
    /// For the last notice ("all spooled mail released"): what happened since the
    /// outage began.
    pub summary: Option<OutageSummary>,
}

/// The episode an "all spooled mail released" notice closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageSummary {
    pub started_at: i64,
    pub report: RelayReport,
    /// Entries still held by `queue hold`.
    pub held: usize,
}

pub fn phase_name(phase: OutagePhase) -> &'static str {
    match phase {
        OutagePhase::Normal => "normal",
        OutagePhase::Outage => "outage",
        OutagePhase::Draining => "draining",
    }
}

/// "2026-11-23 19:28:20 UTC".
pub fn format_time(at: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| at.to_string())
}

/// "3d 4h", "2h 5m", "40s".
pub fn format_age(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

impl Notice<'_> {
    pub fn subject(&self) -> String {
        let d = self.domain;
        let manual = self.state.manual;
        match self.kind {
            NoticeKind::ConnectivityLost if manual => {
                format!("[Understudy] {d}: outage started by an admin")
            }
            NoticeKind::ConnectivityLost => {
                format!("[Understudy] {d}: primary mail server unreachable, outage engaged")
            }
            NoticeKind::ConnectivityRestored if manual => {
                format!("[Understudy] {d}: outage ended by an admin, releasing spooled mail")
            }
            NoticeKind::SpoolingBegan => format!("[Understudy] {d}: mail is being spooled during the outage"),
            NoticeKind::ConnectivityRestored => {
                format!("[Understudy] {d}: primary reachable again, releasing spooled mail")
            }
            NoticeKind::AllReleased => format!("[Understudy] {d}: all spooled mail released, back to normal"),
            NoticeKind::DrainingReminder => format!("[Understudy] {d}: still releasing spooled mail"),
        }
    }

    pub fn body(&self) -> String {
        let d = self.domain;
        let what = match self.kind {
            NoticeKind::ConnectivityLost if self.state.manual => format!(
                "An admin started an outage for {d} (a maintenance window or a drill).\n\
                 Nothing is known to be wrong with the primary mail server; Understudy keeps\n\
                 the mail for {d} until the outage is stopped, and users can read and\n\
                 send it over IMAP, POP3 and submission."
            ),
            NoticeKind::ConnectivityRestored if self.state.manual => format!(
                "An admin ended the outage of {d}. Understudy has stopped spooling and is\n\
                 handing the queued mail to the primary mail server, oldest first."
            ),
            NoticeKind::ConnectivityLost => format!(
                "Understudy can no longer reach the primary mail server of {d} and has\n\
                 engaged an outage. Mail for {d} is now accepted and kept by Understudy;\n\
                 users can read and send it over IMAP, POP3 and submission."
            ),
            NoticeKind::SpoolingBegan => format!(
                "The first message for {d} since the outage began has been queued.\n\
                 Understudy keeps it, and all that follow, until the primary is back."
            ),
            NoticeKind::ConnectivityRestored => format!(
                "The primary mail server of {d} is reachable again. Understudy has\n\
                 stopped spooling and is handing the queued mail to it, oldest first."
            ),
            NoticeKind::AllReleased => format!(
                "Every message spooled for {d} during the outage has been released to\n\
                 the primary mail server. The domain is back to normal."
            ),
            NoticeKind::DrainingReminder => format!(
                "Understudy is still releasing mail spooled for {d} to the primary mail\n\
                 server. This reminder repeats every four hours until the queue is empty."
            ),
        };
        let next = match self.kind {
            NoticeKind::ConnectivityLost | NoticeKind::SpoolingBegan if self.state.manual => {
                "This outage was started by an admin and does not end by itself: run\n\
                 `understudy outage stop DOMAIN` when the primary is ready to receive."
            }
            NoticeKind::ConnectivityLost | NoticeKind::SpoolingBegan => {
                "Check the primary mail server and its network. Understudy probes it and\n\
                 ends the outage by itself once it answers again; `understudy outage\n\
                 status` shows the state, `understudy queue list DOMAIN` the queue."
            }
            NoticeKind::ConnectivityRestored | NoticeKind::DrainingReminder => {
                "Nothing to do unless the queue stops shrinking: then check\n\
                 `understudy queue list DOMAIN` for the primary's replies, and\n\
                 `understudy track --message-id ID` for a single message."
            }
            NoticeKind::AllReleased => "Nothing to do.",
        };
        let mut text = String::new();
        text.push_str(&what);
        text.push_str("\n\n");
        text.push_str(&format!("Domain:            {d}\n"));
        text.push_str(&format!("State:             {}\n", phase_name(self.state.phase)));
        text.push_str(&format!("Since:             {}\n", format_time(self.state.since)));
        text.push_str(&format!("Reason:            {}\n", self.state.reason));
        text.push_str(&format!(
            "Queued:            {} message(s) for the primary\n",
            self.queue.relay_depth
        ));
        let oldest = match self.queue.oldest_relay {
            Some(at) => format!("{} (queued {})", format_age(self.now - at), format_time(at)),
            None => "-".into(),
        };
        text.push_str(&format!("Oldest queued:     {oldest}\n"));
        text.push_str(&format!("Sent at:           {}\n\n", format_time(self.now)));
        if let Some(summary) = &self.summary {
            let r = &summary.report;
            text.push_str("Summary of the outage:\n");
            text.push_str(&format!(
                "Began:             {}\n",
                format_time(summary.started_at)
            ));
            text.push_str(&format!(
                "Lasted:            {}\n",
                format_age(self.now - summary.started_at)
            ));
            text.push_str(&format!("Messages received: {}\n", r.received));
            text.push_str(&format!(
                "Messages sent:     {} (records for the primary)\n",
                r.sent
            ));
            text.push_str(&format!("Delivered:         {} to the primary\n", r.delivered));
            text.push_str(&format!(
                "Cancelled:         {} deleted by their users (not redelivered; `understudy queue redeliver ID` recovers one)\n",
                r.cancelled
            ));
            text.push_str(&format!(
                "Bounced:           {} (refused by the primary or expired)\n",
                r.bounced
            ));
            text.push_str(&format!("Still held:        {}\n\n", summary.held));
        }
        text.push_str("What to do next:\n");
        text.push_str(&next.replace("DOMAIN", d));
        text.push_str("\n\n-- \nUnderstudy email continuity\n");
        text
    }

    /// The complete message, CRLF line ends.
    pub fn message(&self, to: &[String]) -> std::io::Result<(Vec<u8>, String)> {
        let from = sender(self.hostname);
        let message_id = format!(
            "understudy.{}.{}.{}@{}",
            self.now,
            self.domain,
            kind_slug(self.kind),
            self.hostname
        );
        let body = mail_builder::MessageBuilder::new()
            .from(("Understudy", from.as_str()))
            .to(to.iter().map(|a| a.as_str()).collect::<Vec<_>>())
            .subject(self.subject())
            .date(self.now)
            .message_id(message_id.as_str())
            .header(
                "Auto-Submitted",
                mail_builder::headers::raw::Raw::new("auto-generated"),
            )
            .text_body(self.body())
            .write_to_vec()?;
        Ok((body, format!("<{message_id}>")))
    }
}

fn kind_slug(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::ConnectivityLost => "lost",
        NoticeKind::SpoolingBegan => "spooling",
        NoticeKind::ConnectivityRestored => "restored",
        NoticeKind::AllReleased => "released",
        NoticeKind::DrainingReminder => "reminder",
    }
}

pub fn sender(hostname: &str) -> String {
    format!("understudy@{hostname}")
}

/// A notice built for its recipients, ready to be queued in the write that records the
/// outage change it announces (`Store::record_outage_change`).
#[derive(Debug, Clone)]
pub struct PreparedNotice {
    pub kind: NoticeKind,
    body: Vec<u8>,
    message_id: String,
    entry: NewQueueEntry,
    summary: String,
}

impl PreparedNotice {
    /// The delivery that queues it (one `Notification` entry, no mailbox copy).
    pub fn request(&self) -> DeliveryRequest<'_> {
        DeliveryRequest {
            body: &self.body,
            users: Vec::new(),
            queue: vec![self.entry.clone()],
            message_id: Some(self.message_id.clone()),
            summary: self.summary.clone(),
        }
    }
}

/// Builds a notice for the alert recipients; `None` when the domain has none (logged:
/// nobody to tell).
pub fn prepare(notice: &Notice<'_>, alert_recipients: &[String]) -> StoreResult<Option<PreparedNotice>> {
    let to: Vec<String> = alert_recipients
        .iter()
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        .take(MAX_ALERT_RECIPIENTS)
        .collect();
    if to.is_empty() {
        tracing::warn!(domain = notice.domain, kind = ?notice.kind, "no alert recipients; notice not sent");
        return Ok(None);
    }
    let (body, message_id) = notice
        .message(&to)
        .map_err(|e| understudy_storage::StoreError::Invalid(format!("cannot build notice: {e}")))?;
    Ok(Some(PreparedNotice {
        kind: notice.kind,
        body,
        message_id,
        entry: NewQueueEntry {
            kind: QueueKind::Notification,
            domain: notice.domain.to_string(),
            mail_from: sender(notice.hostname),
            recipients: to.iter().map(|a| (a.clone(), None)).collect(),
            next_attempt: notice.now,
            sent_copy: false,
        },
        summary: format!(
            "notice '{}' for {} to {}",
            kind_slug(notice.kind),
            notice.domain,
            to.join(", ")
        ),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn notice_says_what_when_how_much_and_what_next() {
        let state = OutageState {
            phase: OutagePhase::Outage,
            since: 1_700_000_000,
            reason: "3 failed probe(s) in a row; last: connection refused".into(),
            manual: false,
        };
        let notice = Notice {
            kind: NoticeKind::ConnectivityLost,
            domain: "example.com",
            state: &state,
            queue: QueueSummary {
                relay_depth: 7,
                oldest_relay: Some(1_700_000_000 - 3_700),
                ..QueueSummary::default()
            },
            now: 1_700_000_000,
            hostname: "mx.understudy.test",
            summary: None,
        };
        let (raw, mid) = notice.message(&["ops@example.net".into()]).unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(
            text.contains("From: \"Understudy\" <understudy@mx.understudy.test>"),
            "{text}"
        );
        assert!(text.contains("To: <ops@example.net>"), "{text}");
        assert!(text.contains("Subject: [Understudy] example.com: primary mail server unreachable"));
        assert!(
            text.contains("Queued:            7 message(s) for the primary"),
            "{text}"
        );
        assert!(text.contains("Oldest queued:     1h 1m"), "{text}");
        assert!(text.contains("2023-11-14 22:13:20 UTC"), "{text}");
        assert!(text.contains("connection refused"));
        assert!(text.contains("What to do next:"));
        assert!(text.contains("State:             outage\r\n"), "{text}");
        assert!(text.contains("\r\n"));
        assert!(mid.starts_with("<understudy.") && mid.ends_with("@mx.understudy.test>"));
    }

    #[test]
    fn ages() {
        assert_eq!(format_age(40), "40s");
        assert_eq!(format_age(125), "2m 5s");
        assert_eq!(format_age(7_500), "2h 5m");
        assert_eq!(format_age(90_000), "1d 1h");
    }
}
