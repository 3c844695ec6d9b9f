//! Admin commands for outages, the queue and message tracking: `outage start|stop|status`,
//! `queue list|show|retry|hold|release|purge`, `track`. Each is a function of the store
//! and its parsed arguments writing to `out`, so the admin socket can run it too (the
//! commands are serde types so they can cross that socket).

use std::io::Write;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use understudy_storage::outage::OutagePhase;
use understudy_storage::{QueueEntry, RecipientStatus, Store};

use super::machine::{Event, OutageMachine, Thresholds};
use super::monitor::apply_effects;
use super::notify::{format_age, format_time, phase_name};
use crate::admin::AdminContext;

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum OutageCommand {
    /// Engage an outage by hand (maintenance window); it lasts until `outage stop`.
    Start {
        domain: String,
        /// Why: shown by `outage status` and in the notification.
        #[arg(long, default_value = "started by an admin")]
        reason: String,
    },
    /// End an outage: the domain moves to draining and its spooled mail is released.
    Stop {
        domain: String,
        #[arg(long, default_value = "stopped by an admin")]
        reason: String,
    },
    /// Every domain's state, since when, why, queue depth and oldest queued message.
    Status {
        /// Only this domain.
        domain: Option<String>,
        /// Also list each domain's transitions.
        #[arg(long)]
        history: bool,
    },
}

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

#[derive(Debug, Args, Serialize, Deserialize)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["message_id", "address"])))]
pub struct TrackArgs {
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

pub fn outage(ctx: &AdminContext, command: OutageCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        OutageCommand::Start { domain, reason } => manual(ctx, &domain, Event::ManualStart(reason), out),
        OutageCommand::Stop { domain, reason } => manual(ctx, &domain, Event::ManualStop(reason), out),
        OutageCommand::Status { domain, history } => status(ctx.store, domain.as_deref(), history, out),
    }
}

fn manual(ctx: &AdminContext, name: &str, event: Event, out: &mut dyn Write) -> anyhow::Result<()> {
    let (store, hostname) = (ctx.store, ctx.config.hostname.as_str());
    let domain = store.domain(name)?.with_context(|| format!("no domain {name}"))?;
    let state = store.outage_state(&domain.name)?;
    let memo = store.outage_memo(&domain.name)?;
    let starting = matches!(event, Event::ManualStart(_));
    if !starting && state.phase != OutagePhase::Outage {
        bail!(
            "{} is not in an outage (state: {})",
            domain.name,
            phase_name(state.phase)
        );
    }
    if starting && state.phase == OutagePhase::Outage && state.manual {
        writeln!(
            out,
            "{} is already in a manual outage since {}",
            domain.name,
            format_time(state.since)
        )?;
        return Ok(());
    }
    let mut machine = OutageMachine::resume(state, memo.clone());
    let now = store.now();
    let effects = machine.handle(event, now, Thresholds::of(&domain));
    apply_effects(store, hostname, &domain, &machine, &memo, &effects, now)?;
    ctx.events.outage_changed();
    let s = machine.state();
    writeln!(
        out,
        "{}: {} since {} ({})",
        domain.name,
        phase_name(s.phase),
        format_time(s.since),
        s.reason
    )?;
    if domain.alert_recipients.is_empty() {
        writeln!(out, "no alert recipients: nobody was notified")?;
    }
    Ok(())
}

fn status(store: &Store, only: Option<&str>, history: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let now = store.now();
    let summaries = store.queue_summaries()?;
    let mut domains = store.domains()?;
    if let Some(name) = only {
        domains.retain(|d| d.name.eq_ignore_ascii_case(name));
        if domains.is_empty() {
            bail!("no domain {name}");
        }
    }
    writeln!(
        out,
        "{:<24} {:<9} {:<24} {:>6} {:>8}  WHY",
        "DOMAIN", "STATE", "SINCE", "QUEUED", "OLDEST"
    )?;
    for d in &domains {
        let s = store.outage_state(&d.name)?;
        let q = summaries.get(&d.name).copied().unwrap_or_default();
        let since = if s.since == 0 {
            "-".to_string()
        } else {
            format_time(s.since)
        };
        let oldest = q
            .oldest_relay
            .map(|at| format_age(now - at))
            .unwrap_or_else(|| "-".into());
        let why = match (s.reason.is_empty(), s.manual) {
            (true, _) => "-".to_string(),
            (false, true) => format!("manual: {}", s.reason),
            (false, false) => s.reason.clone(),
        };
        writeln!(
            out,
            "{:<24} {:<9} {:<24} {:>6} {:>8}  {}",
            d.name,
            phase_name(s.phase),
            since,
            q.relay_depth,
            oldest,
            why
        )?;
        let held = store.queue_held_count(&d.name)?;
        if held > 0 || store.domain_held(&d.name)? {
            writeln!(
                out,
                "    queue held: {held} entr{} waiting (`queue release {}` resumes delivery)",
                if held == 1 { "y" } else { "ies" },
                d.name
            )?;
        }
        if history {
            for t in store.outage_history(&d.name)? {
                writeln!(
                    out,
                    "    {}  {} -> {}: {}",
                    format_time(t.at),
                    phase_name(t.from),
                    phase_name(t.to),
                    t.reason
                )?;
            }
        }
    }
    Ok(())
}

fn kind_name(entry: &QueueEntry) -> String {
    format!("{:?}", entry.kind).to_lowercase()
}

pub fn queue(store: &Store, command: QueueCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let now = store.now();
    match command {
        QueueCommand::List { domain } => {
            let entries = store.queue_entries(domain.as_deref())?;
            writeln!(
                out,
                "{:>8}  {:<12} {:<20} {:<28} {:>5} {:>9} {:>8}  NEXT / STATUS",
                "ID", "KIND", "DOMAIN", "FROM", "RCPTS", "SIZE", "AGE"
            )?;
            for e in &entries {
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
            )?;
        }
        QueueCommand::Show { id } => {
            let e = store
                .queue_entry(id)?
                .with_context(|| format!("no queue entry {id}"))?;
            writeln!(out, "queue entry:   {}", e.id)?;
            writeln!(out, "kind:          {}", kind_name(&e))?;
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
            for ev in store.tracking_events(e.tracking_id)? {
                writeln!(out, "  {}  {:<10} {}", format_time(ev.at), ev.kind, ev.detail)?;
            }
        }
        QueueCommand::Retry { target } => {
            let ids: Vec<u64> = match target.as_deref() {
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
            writeln!(
                out,
                "{} entr{} due now",
                ids.len(),
                if ids.len() == 1 { "y" } else { "ies" }
            )?;
        }
        QueueCommand::Hold { domain } => hold(store, &domain, true, out)?,
        QueueCommand::Release { domain } => hold(store, &domain, false, out)?,
        QueueCommand::Purge { id, yes } => {
            let e = store
                .queue_entry(id)?
                .with_context(|| format!("no queue entry {id}"))?;
            if !yes {
                bail!(
                    "purging queue entry {id} drops a message for {} pending recipient(s) without delivering it; repeat with --yes to confirm",
                    e.pending().count()
                );
            }
            store.purge(id)?;
            writeln!(out, "purged queue entry {id}")?;
        }
    }
    Ok(())
}

/// Holds or releases a whole domain: its entries now, and (through the domain's hold
/// flag, which the queue runner reads) the mail that arrives while it is held.
fn hold(store: &Store, domain: &str, held: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let name = store
        .domain(domain)?
        .map(|d| d.name)
        .unwrap_or_else(|| domain.to_ascii_lowercase());
    let changed = store.set_domain_held(&name, held, store.now())?;
    let verb = if held { "held" } else { "released" };
    writeln!(
        out,
        "{changed} entr{} of {domain} {verb}",
        if changed == 1 { "y" } else { "ies" }
    )?;
    Ok(())
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

pub fn track(store: &Store, args: TrackArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let ids = if let Some(mid) = &args.message_id {
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
        bail!("give --message-id or --address");
    };
    if ids.is_empty() {
        writeln!(out, "no message found")?;
        return Ok(());
    }
    let queued_now = store.queue_entries(None)?;
    for id in &ids {
        let events = store.tracking_events(*id)?;
        writeln!(out, "message {id}")?;
        for ev in &events {
            writeln!(out, "  {}  {:<10} {}", format_time(ev.at), ev.kind, ev.detail)?;
        }
        // Where it is now: still queued for someone?
        for e in queued_now.iter().filter(|e| e.tracking_id == *id) {
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
    }
    Ok(())
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
