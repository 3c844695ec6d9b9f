//! A message's life: `track --message-id | --address [--since]`, the tracking events of
//! each matching message and where it is queued now. [`track`] returns them as a
//! serialisable value; [`execute`] writes the CLI's report.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use serde::{Deserialize, Serialize};
use understudy_storage::{QueueEntry, RecipientStatus, Recoverable, TrackingEvent, TrackingId};

use super::queue::kind_name;
use super::AdminContext;
use crate::outage::notify::format_time;

#[derive(Debug, Args, Serialize, Deserialize)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["id", "message_id", "address"])))]
pub struct TrackArgs {
    /// The message's tracking id: the id in `250 2.0.0 Ok: queued as ID`, in the
    /// `Received` header (`by HOST with ESMTP id ID`) and in the log.
    pub id: Option<String>,
    /// The message's Message-ID (with or without angle brackets).
    #[arg(long)]
    pub message_id: Option<String>,
    /// Messages from or to this address.
    #[arg(long)]
    pub address: Option<String>,
    /// Only messages with events at or after this date (YYYY-MM-DD, "YYYY-MM-DD HH:MM",
    /// RFC 3339, or Unix seconds).
    #[arg(long, requires = "address")]
    pub since: Option<String>,
}

/// One tracked message: its events, the queue entries still holding it, and the
/// copies a user deleted during an outage that `queue redeliver` can still send.
#[derive(Debug, Clone, Serialize)]
pub struct TrackedMessage {
    /// As printed everywhere (`000000002A`).
    pub tracking_id: String,
    pub events: Vec<TrackingEvent>,
    pub queued: Vec<QueueEntry>,
    pub recoverable: Vec<Recoverable>,
}

/// Runs `track` and writes its report to `out`.
pub fn execute(ctx: &AdminContext, args: TrackArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let messages = track(ctx, &args)?;
    if messages.is_empty() {
        writeln!(out, "no message found")?;
        return Ok(());
    }
    for m in &messages {
        writeln!(out, "message {}", m.tracking_id)?;
        if let Some(mid) = m.queued.iter().find_map(|e| e.message_id.as_deref()) {
            writeln!(out, "  message-id: {mid}")?;
        }
        for ev in &m.events {
            writeln!(out, "  {}  {:<10} {}", format_time(ev.at), ev.kind, ev.detail)?;
        }
        // Where it is now: still queued for someone?
        for e in &m.queued {
            let pending: Vec<&str> = e
                .recipients
                .iter()
                .filter(|r| r.status == RecipientStatus::Pending)
                .map(|r| r.address.as_str())
                .collect();
            writeln!(
                out,
                "  now: queue {} ({}) for {}{}",
                e.id,
                kind_name(e),
                pending.join(", "),
                if e.held { ", held" } else { "" }
            )?;
        }
        for r in &m.recoverable {
            let rcpts: Vec<&str> = r.recipients.iter().map(|(a, _)| a.as_str()).collect();
            writeln!(
                out,
                "  now: deleted by the user during the outage, not redelivered to {}; recoverable until retention: `understudy queue redeliver {}`",
                rcpts.join(", "),
                m.tracking_id
            )?;
        }
    }
    Ok(())
}

/// The messages `args` names, with their events and current queue entries.
pub fn track(ctx: &AdminContext, args: &TrackArgs) -> anyhow::Result<Vec<TrackedMessage>> {
    let store = ctx.store;
    let ids = if let Some(id) = &args.id {
        let id: TrackingId = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        if store.tracking_events(id.0)?.is_empty() {
            Vec::new()
        } else {
            vec![id.0]
        }
    } else if let Some(mid) = &args.message_id {
        let bare = mid.trim().trim_start_matches('<').trim_end_matches('>');
        let mut ids = store.tracking_ids_for_message_id(&format!("<{bare}>"))?;
        ids.extend(store.tracking_ids_for_message_id(bare)?);
        ids.sort_unstable();
        ids.dedup();
        ids
    } else if let Some(address) = &args.address {
        let since = args.since.as_deref().map(parse_since).transpose()?;
        store.tracking_ids_mentioning(address.trim(), since)?
    } else {
        bail!("give a tracking id, --message-id or --address");
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let queued_now = store.queue_entries(None)?;
    let mut messages = Vec::new();
    for id in ids {
        messages.push(TrackedMessage {
            tracking_id: TrackingId(id).to_string(),
            recoverable: store.recoverable(id)?,
            events: store.tracking_events(id)?,
            queued: queued_now
                .iter()
                .filter(|e| e.tracking_id == id)
                .cloned()
                .collect(),
        });
    }
    Ok(messages)
}

/// Parses `--since`: a date, a date and time (UTC), RFC 3339, or Unix seconds.
pub fn parse_since(text: &str) -> anyhow::Result<i64> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let t = text.trim();
    if let Ok(secs) = t.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(dt) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return Ok(dt.unix_timestamp());
    }
    let normalized = t.replace('T', " ");
    for format in [
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]"),
    ] {
        if let Ok(dt) = time::PrimitiveDateTime::parse(&normalized, format) {
            return Ok(dt.assume_utc().unix_timestamp());
        }
    }
    if let Ok(d) = time::Date::parse(t, format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc().unix_timestamp());
    }
    bail!("'{text}' is not a date (YYYY-MM-DD, 'YYYY-MM-DD HH:MM', RFC 3339 or Unix seconds)")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn since_formats() {
        assert_eq!(parse_since("2023-11-14").unwrap(), 1_699_920_000);
        assert_eq!(parse_since("2023-11-14 22:13").unwrap(), 1_700_000_000 - 20);
        assert_eq!(parse_since("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000);
        assert_eq!(parse_since("1700000000").unwrap(), 1_700_000_000);
        assert!(parse_since("yesterday").is_err());
    }
}
