//! Outages by hand and at a glance: `outage start|stop|status`. `start` and `stop` feed
//! the domain's outage state machine (`crate::outage::machine`) the admin's event and
//! record its effects as the monitor does; [`execute`] runs a parsed [`OutageCommand`]
//! and writes the CLI's report.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use understudy_storage::outage::{OutagePhase, OutageState, OutageTransition};
use understudy_storage::StoreError;

use super::format::{or_dash, write_listing, ListFormat, Table};
use super::AdminContext;
use crate::outage::effects::apply_effects;
use crate::outage::machine::{Event, OutageMachine, Thresholds};
use crate::outage::notify::{format_age, format_time, phase_name};

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum OutageCommand {
    /// Engage an outage by hand (maintenance window, drill); it lasts until `outage stop`.
    Start {
        /// The domain.
        domain: String,
        /// Why: shown by `outage status` and in the notification.
        #[arg(long, default_value = "started by an admin")]
        reason: String,
    },
    /// End an outage: the domain moves to draining and its spooled mail is released.
    Stop {
        /// The domain.
        domain: String,
        /// Why: shown by `outage status` and in the notification.
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
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
}

/// What `outage start|stop` did.
#[derive(Debug, Clone, Serialize)]
pub struct ManualChange {
    pub domain: String,
    /// The domain's state afterwards.
    pub state: OutageState,
    /// `start` on a domain already in a manual outage: nothing changed.
    pub already: bool,
    /// Nobody was notified: the domain has no alert recipients.
    pub no_recipients: bool,
}

/// One domain in `outage status`.
#[derive(Debug, Clone, Serialize)]
pub struct DomainOutage {
    pub domain: String,
    pub state: OutageState,
    /// Relay entries (mail for the primary) pending, and the oldest one's time.
    pub queued: usize,
    pub oldest_relay: Option<i64>,
    /// Entries held by `queue hold`, and whether the domain itself is held.
    pub held: usize,
    pub domain_held: bool,
    /// Transitions, when asked for.
    pub history: Vec<OutageTransition>,
}

/// `outage status`: every domain (or one) at `now`.
#[derive(Debug, Clone, Serialize)]
pub struct OutageStatus {
    pub now: i64,
    pub domains: Vec<DomainOutage>,
}

/// Runs an `outage` command and writes its report to `out`.
pub fn execute(ctx: &AdminContext, command: OutageCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        OutageCommand::Start { domain, reason } => print_change(&start(ctx, &domain, reason)?, out)?,
        OutageCommand::Stop { domain, reason } => print_change(&stop(ctx, &domain, reason)?, out)?,
        OutageCommand::Status {
            domain,
            history,
            format,
        } => {
            let report = status(ctx, domain.as_deref(), history)?;
            match format {
                ListFormat::Text => print_status(&report, out)?,
                _ => write_listing(format, &report, || status_table(&report), out)?,
            }
        }
    }
    Ok(())
}

/// Engages a manual outage (lasts until [`stop`]).
pub fn start(ctx: &AdminContext, domain: &str, reason: String) -> anyhow::Result<ManualChange> {
    manual(ctx, domain, Event::ManualStart(reason))
}

/// Ends an outage: the domain moves to draining.
pub fn stop(ctx: &AdminContext, domain: &str, reason: String) -> anyhow::Result<ManualChange> {
    manual(ctx, domain, Event::ManualStop(reason))
}

fn manual(ctx: &AdminContext, name: &str, event: Event) -> anyhow::Result<ManualChange> {
    let store = ctx.store;
    let domain = store
        .domain(name)?
        .with_context(|| format!("{name} is not a protected domain"))?;
    // As stored, not as cached: what the write below is compared with.
    let (state, memo) = store.outage_record(&domain.name)?;
    let starting = matches!(event, Event::ManualStart(_));
    if !starting && state.phase != OutagePhase::Outage {
        bail!(
            "{} is not in an outage (state: {})",
            domain.name,
            phase_name(state.phase)
        );
    }
    if starting && state.phase == OutagePhase::Outage && state.manual {
        return Ok(ManualChange {
            domain: domain.name,
            state,
            already: true,
            no_recipients: false,
        });
    }
    let now = store.now();
    let mut decided_from = OutageMachine::resume(state, memo);
    let mut attempt = 0;
    let machine = loop {
        attempt += 1;
        let mut machine = decided_from.clone();
        let effects = machine.handle(event.clone(), now, Thresholds::of(&domain));
        match apply_effects(
            store,
            &ctx.config.hostname,
            &domain,
            &decided_from,
            &machine,
            &effects,
            now,
        ) {
            Ok(()) => break machine,
            // The monitor (of this node or another) recorded a change first: decide
            // again from what it wrote.
            Err(StoreError::Conflict(_)) if attempt < 5 => {
                let (state, memo) = store.outage_record(&domain.name)?;
                decided_from = OutageMachine::resume(state, memo);
            }
            Err(e) => return Err(e.into()),
        }
    };
    ctx.events.outage_changed();
    Ok(ManualChange {
        state: machine.state().clone(),
        already: false,
        no_recipients: domain.alert_recipients.is_empty(),
        domain: domain.name,
    })
}

/// Every domain's outage state and queue (or one domain's), with the transitions if
/// `history`.
/// A notice to a domain's alert recipients, as its tracking records tell it.
#[derive(Debug, Clone, Serialize)]
pub struct NoticeSent {
    /// lost, spooling, restored, released or reminder (`outage::notify`).
    pub kind: String,
    pub at: i64,
    pub to: String,
    /// queued, delivered or failed.
    pub state: &'static str,
}

/// The notices about each of `domains` sent at or after its time (when its current or
/// last outage began), oldest first: the domain's notices from the store's notice index
/// (`Store::outage_notice_ids`, no scan of the tracking log: the dashboard asks every
/// 10 s), then the few notices' own events.
pub fn notices_since(
    ctx: &AdminContext,
    domains: &[(String, i64)],
) -> anyhow::Result<HashMap<String, Vec<NoticeSent>>> {
    let mut found: HashMap<String, Vec<NoticeSent>> = HashMap::new();
    for (name, since) in domains {
        for id in ctx.store.outage_notice_ids(name, *since)? {
            let events = ctx.store.tracking_events(id)?;
            let Some((received, kind, to)) = events.iter().find_map(|ev| {
                let rest = ev
                    .detail
                    .strip_prefix("notice '")
                    .filter(|_| ev.kind == "received")?;
                let (kind, rest) = rest.split_once("' for ")?;
                let (domain, to) = rest.split_once(" to ")?;
                domain.eq_ignore_ascii_case(name).then_some((ev.at, kind, to))
            }) else {
                continue;
            };
            let state = if events.iter().any(|ev| ev.kind == "delivered") {
                "delivered"
            } else if events
                .iter()
                .any(|ev| ev.kind == "failed" || ev.kind == "expired")
            {
                "failed"
            } else {
                "queued"
            };
            found.entry(name.clone()).or_default().push(NoticeSent {
                kind: kind.to_string(),
                at: received,
                to: to.to_string(),
                state,
            });
        }
    }
    Ok(found)
}

pub fn status(ctx: &AdminContext, only: Option<&str>, history: bool) -> anyhow::Result<OutageStatus> {
    let store = ctx.store;
    let now = store.now();
    let summaries = store.queue_summaries()?;
    let mut domains = store.domains()?;
    if let Some(name) = only {
        domains.retain(|d| d.name.eq_ignore_ascii_case(name));
        if domains.is_empty() {
            bail!("{name} is not a protected domain");
        }
    }
    let mut report = Vec::new();
    for d in domains {
        let q = summaries.get(&d.name).copied().unwrap_or_default();
        report.push(DomainOutage {
            state: store.outage_state(&d.name)?,
            queued: q.relay_depth,
            oldest_relay: q.oldest_relay,
            held: store.queue_held_count(&d.name)?,
            domain_held: store.domain_held(&d.name)?,
            history: if history {
                store.outage_history(&d.name)?
            } else {
                Vec::new()
            },
            domain: d.name,
        });
    }
    Ok(OutageStatus { now, domains: report })
}

fn print_change(c: &ManualChange, out: &mut dyn Write) -> std::io::Result<()> {
    let s = &c.state;
    if c.already {
        return writeln!(
            out,
            "{} is already in a manual outage since {}",
            c.domain,
            format_time(s.since)
        );
    }
    writeln!(
        out,
        "{}: {} since {} ({})",
        c.domain,
        phase_name(s.phase),
        format_time(s.since),
        s.reason
    )?;
    if c.no_recipients {
        writeln!(out, "no alert recipients: nobody was notified")?;
    }
    Ok(())
}

fn status_table(status: &OutageStatus) -> Table {
    let mut t = Table::new(&[
        "DOMAIN", "STATE", "MANUAL", "SINCE", "QUEUED", "OLDEST", "HELD", "WHY",
    ]);
    for d in &status.domains {
        let s = &d.state;
        t.push(vec![
            d.domain.clone(),
            phase_name(s.phase).into(),
            s.manual.to_string(),
            if s.since == 0 {
                "-".into()
            } else {
                format_time(s.since)
            },
            d.queued.to_string(),
            d.oldest_relay
                .map(|at| format_age(status.now - at))
                .unwrap_or_else(|| "-".into()),
            d.held.to_string(),
            or_dash(s.reason.clone()),
        ]);
    }
    t
}

fn print_status(status: &OutageStatus, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<9} {:<24} {:>6} {:>8}  WHY",
        "DOMAIN", "STATE", "SINCE", "QUEUED", "OLDEST"
    )?;
    for d in &status.domains {
        let s = &d.state;
        let since = if s.since == 0 {
            "-".to_string()
        } else {
            format_time(s.since)
        };
        let oldest = d
            .oldest_relay
            .map(|at| format_age(status.now - at))
            .unwrap_or_else(|| "-".into());
        let why = match (s.reason.is_empty(), s.manual) {
            (true, _) => "-".to_string(),
            (false, true) => format!("manual: {}", s.reason),
            (false, false) => s.reason.clone(),
        };
        writeln!(
            out,
            "{:<24} {:<9} {:<24} {:>6} {:>8}  {}",
            d.domain,
            phase_name(s.phase),
            since,
            d.queued,
            oldest,
            why
        )?;
        if d.held > 0 || d.domain_held {
            writeln!(
                out,
                "    queue held: {} entr{} waiting (`queue release {}` resumes delivery)",
                d.held,
                if d.held == 1 { "y" } else { "ies" },
                d.domain
            )?;
        }
        for t in &d.history {
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
    Ok(())
}
