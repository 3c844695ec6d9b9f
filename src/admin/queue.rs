//! The relay, outbound and notification queue: `queue list|show|retry|hold|release|
//! purge`. Each operation takes typed arguments and returns a serialisable value;
//! [`execute`] runs a parsed [`QueueCommand`] and writes the CLI's report.

use std::io::Write;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use understudy_storage::{QueueEntry, TrackingEvent};

use super::AdminContext;
use crate::outage::notify::{format_age, format_time};

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum QueueCommand {
    /// Queue entries, of one domain or all, oldest first.
    List { domain: Option<String> },
    /// One entry with its recipients and its tracking events.
    Show { id: u64 },
    /// Attempt now: one entry (ID), a domain's entries, or every entry.
    Retry { target: Option<String> },
    /// Hold every entry of a domain: not attempted until released.
    Hold { domain: String },
    /// Release a domain's held entries.
    Release { domain: String },
    /// Delete an entry without delivering it.
    Purge {
        id: u64,
        /// Confirm that the message is to be dropped.
        #[arg(long)]
        yes: bool,
    },
}

/// Queue entries as of `now`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueListing {
    pub now: i64,
    pub entries: Vec<QueueEntry>,
}

/// One entry with its tracking events, as of `now`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueEntryReport {
    pub now: i64,
    pub entry: QueueEntry,
    pub events: Vec<TrackingEvent>,
}

/// Runs a `queue` command and writes its report to `out`.
pub fn execute(ctx: &AdminContext, command: QueueCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        QueueCommand::List { domain } => print_list(&list(ctx, domain.as_deref())?, out)?,
        QueueCommand::Show { id } => print_entry(&show(ctx, id)?, out)?,
        QueueCommand::Retry { target } => {
            let n = retry(ctx, target.as_deref())?;
            writeln!(out, "{n} entr{} due now", if n == 1 { "y" } else { "ies" })?;
        }
        QueueCommand::Hold { domain } => print_hold(hold(ctx, &domain, true)?, &domain, "held", out)?,
        QueueCommand::Release { domain } => print_hold(hold(ctx, &domain, false)?, &domain, "released", out)?,
        QueueCommand::Purge { id, yes } => {
            purge(ctx, id, yes)?;
            writeln!(out, "purged queue entry {id}")?;
        }
    }
    Ok(())
}

/// Entries of one domain or all, oldest first.
pub fn list(ctx: &AdminContext, domain: Option<&str>) -> anyhow::Result<QueueListing> {
    Ok(QueueListing {
        now: ctx.store.now(),
        entries: ctx.store.queue_entries(domain)?,
    })
}

pub fn show(ctx: &AdminContext, id: u64) -> anyhow::Result<QueueEntryReport> {
    let now = ctx.store.now();
    let entry = ctx
        .store
        .queue_entry(id)?
        .with_context(|| format!("no queue entry {id}"))?;
    let events = ctx.store.tracking_events(entry.tracking_id)?;
    Ok(QueueEntryReport { now, entry, events })
}

/// Makes entries due now: one (`target` is its id), a domain's, or all. Returns how many.
pub fn retry(ctx: &AdminContext, target: Option<&str>) -> anyhow::Result<usize> {
    let store = ctx.store;
    let now = store.now();
    let ids: Vec<u64> = match target {
        Some(t) if t.chars().all(|c| c.is_ascii_digit()) => {
            let id: u64 = t.parse().context("queue id")?;
            store
                .queue_entry(id)?
                .with_context(|| format!("no queue entry {id}"))?;
            vec![id]
        }
        Some(domain) => store.queue_entries(Some(domain))?.iter().map(|e| e.id).collect(),
        None => store.queue_entries(None)?.iter().map(|e| e.id).collect(),
    };
    for id in &ids {
        store.retry_at(*id, now)?;
    }
    Ok(ids.len())
}

/// Holds or releases a whole domain: its entries now, and (through the domain's hold
/// flag, which the queue runner reads) the mail that arrives while it is held. Returns
/// how many entries changed.
pub fn hold(ctx: &AdminContext, domain: &str, held: bool) -> anyhow::Result<usize> {
    let store = ctx.store;
    let name = store
        .domain(domain)?
        .map(|d| d.name)
        .unwrap_or_else(|| domain.to_ascii_lowercase());
    Ok(store.set_domain_held(&name, held, store.now())?)
}

/// Deletes an entry without delivering it; `confirmed` is the admin's `--yes`.
pub fn purge(ctx: &AdminContext, id: u64, confirmed: bool) -> anyhow::Result<()> {
    let e = ctx
        .store
        .queue_entry(id)?
        .with_context(|| format!("no queue entry {id}"))?;
    if !confirmed {
        bail!(
            "purging queue entry {id} drops a message for {} pending recipient(s) without delivering it; repeat with --yes to confirm",
            e.pending().count()
        );
    }
    Ok(ctx.store.purge(id)?)
}

fn print_hold(n: usize, domain: &str, verb: &str, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{n} entr{} of {domain} {verb}",
        if n == 1 { "y" } else { "ies" }
    )
}

pub(super) fn kind_name(entry: &QueueEntry) -> String {
    format!("{:?}", entry.kind).to_lowercase()
}

fn print_list(listing: &QueueListing, out: &mut dyn Write) -> std::io::Result<()> {
    let now = listing.now;
    let entries = &listing.entries;
    writeln!(
        out,
        "{:>8}  {:<12} {:<20} {:<28} {:>5} {:>9} {:>8}  NEXT / STATUS",
        "ID", "KIND", "DOMAIN", "FROM", "RCPTS", "SIZE", "AGE"
    )?;
    for e in entries {
        let pending = e.pending().count();
        let next = if e.held {
            "held".to_string()
        } else if e.next_attempt <= now {
            "due now".to_string()
        } else {
            format!("next {}", format_time(e.next_attempt))
        };
        let last = e
            .recipients
            .iter()
            .filter_map(|r| r.last_reply.as_deref())
            .next_back()
            .map(|r| format!("; last: {r}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{:>8}  {:<12} {:<20} {:<28} {:>5} {:>9} {:>8}  {next}{last}",
            e.id,
            kind_name(e),
            e.domain,
            format!("<{}>", e.mail_from),
            format!("{pending}/{}", e.recipients.len()),
            e.size,
            format_age(now - e.created_at),
        )?;
    }
    writeln!(
        out,
        "{} entr{}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    )
}

fn print_entry(report: &QueueEntryReport, out: &mut dyn Write) -> std::io::Result<()> {
    let (e, now) = (&report.entry, report.now);
    writeln!(out, "queue entry:   {}", e.id)?;
    writeln!(out, "kind:          {}", kind_name(e))?;
    writeln!(out, "domain:        {}", e.domain)?;
    writeln!(out, "from:          <{}>", e.mail_from)?;
    writeln!(out, "message-id:    {}", e.message_id.as_deref().unwrap_or("-"))?;
    writeln!(out, "size:          {} bytes", e.size)?;
    writeln!(
        out,
        "queued:        {} ({} ago)",
        format_time(e.created_at),
        format_age(now - e.created_at)
    )?;
    writeln!(
        out,
        "next attempt:  {}{}",
        format_time(e.next_attempt),
        if e.held { " (held)" } else { "" }
    )?;
    writeln!(out, "tracking id:   {}", e.tracking_id)?;
    writeln!(out, "recipients:")?;
    for r in &e.recipients {
        writeln!(
            out,
            "  {:<32} {:<10} {} attempt(s){}",
            r.address,
            format!("{:?}", r.status).to_lowercase(),
            r.attempts,
            r.last_reply
                .as_deref()
                .map(|x| format!(", last reply: {x}"))
                .unwrap_or_default()
        )?;
    }
    writeln!(out, "events:")?;
    for ev in &report.events {
        writeln!(out, "  {}  {:<10} {}", format_time(ev.at), ev.kind, ev.detail)?;
    }
    Ok(())
}
