//! The relay, outbound and notification queue: `queue list|show|retry|hold|release|
//! purge|bounce`. Each operation takes typed arguments and returns a serialisable value;
//! [`execute`] runs a parsed [`QueueCommand`] and writes the CLI's report.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use understudy_storage::outage::OutagePhase;
use understudy_storage::{QueueEntry, QueueKind, TrackingEvent, TrackingId};

use super::format::{or_dash, write_listing, ListFormat, Table};
use super::AdminContext;
use crate::outage::notify::{format_age, format_time};

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum QueueCommand {
    /// Queue entries, of one domain or all, oldest first, with what each is waiting for.
    List {
        /// Only this domain.
        domain: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// One entry with its recipients and its tracking events.
    Show {
        /// The queue id (first column of `queue list`).
        id: u64,
    },
    /// Attempt now: one entry (ID), a domain's entries, or every entry. Held entries
    /// and relay entries of a domain in an outage stay as they are (the report says so).
    Retry {
        /// A queue id or a domain; none: every entry.
        target: Option<String>,
    },
    /// Hold every entry of a domain: not attempted until released.
    Hold {
        /// The domain.
        domain: String,
    },
    /// Release a domain's held entries.
    Release {
        /// The domain.
        domain: String,
    },
    /// Delete an entry without delivering it.
    Purge {
        /// The queue id.
        id: u64,
        /// Confirm that the message is to be dropped.
        #[arg(long)]
        yes: bool,
    },
    /// Return an entry to its sender: its pending recipients are given up and a
    /// delivery status notification tells the sender (none for a null sender).
    Bounce {
        /// The queue id.
        id: u64,
        /// Confirm that the message is to be returned undelivered.
        #[arg(long)]
        yes: bool,
    },
    /// Hand the primary a message a user deleted here during an outage (it was not
    /// redelivered): `track` shows it as recoverable until retention removes it.
    Redeliver {
        /// The message's tracking id (as in `track` and `250 ... queued as`).
        tracking_id: String,
    },
}

/// What an entry is waiting for, as `queue list` and `queue retry` say it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum EntryState {
    /// Held by `queue hold`: nothing happens until `queue release`.
    Held,
    /// A relay entry of a domain in an outage: it goes when the outage ends.
    WaitingForOutage,
    /// Attempted at the runner's next look.
    DueNow,
    /// Next attempt at this time (after a deferral).
    Next { at: i64 },
}

impl EntryState {
    fn of(entry: &QueueEntry, phase: OutagePhase, now: i64) -> EntryState {
        if entry.held {
            EntryState::Held
        } else if entry.kind == QueueKind::Relay && phase == OutagePhase::Outage {
            EntryState::WaitingForOutage
        } else if entry.next_attempt <= now {
            EntryState::DueNow
        } else {
            EntryState::Next {
                at: entry.next_attempt,
            }
        }
    }

    fn text(&self) -> String {
        match self {
            EntryState::Held => "held".into(),
            EntryState::WaitingForOutage => "waiting: outage".into(),
            EntryState::DueNow => "due now".into(),
            EntryState::Next { at } => format!("next {}", format_time(*at)),
        }
    }
}

/// One line of `queue list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListedEntry {
    #[serde(flatten)]
    pub entry: QueueEntry,
    /// The tracking id as printed everywhere (`000000002A`).
    pub tracking: String,
    pub state: EntryState,
}

/// Queue entries as of `now`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueListing {
    pub now: i64,
    pub entries: Vec<ListedEntry>,
}

/// One entry with its tracking events, as of `now`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueEntryReport {
    pub now: i64,
    pub entry: QueueEntry,
    pub state: EntryState,
    pub events: Vec<TrackingEvent>,
}

/// What `queue retry` did to each entry it looked at.
#[derive(Debug, Clone, Serialize)]
pub struct RetryReport {
    /// Made due now.
    pub due: Vec<u64>,
    /// Left alone: held (release the domain first).
    pub held: Vec<u64>,
    /// Left alone: relay entries of a domain in an outage.
    pub waiting_for_outage: Vec<u64>,
}

/// What `queue redeliver` queued.
#[derive(Debug, Clone, Serialize)]
pub struct Redelivery {
    pub tracking_id: String,
    pub queue_ids: Vec<u64>,
}

/// Runs a `queue` command and writes its report to `out`.
pub fn execute(ctx: &AdminContext, command: QueueCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        QueueCommand::List { domain, format } => {
            let listing = list(ctx, domain.as_deref())?;
            write_listing(format, &listing, || list_table(&listing), out)?;
            if format == ListFormat::Text {
                let n = listing.entries.len();
                writeln!(out, "{n} entr{}", if n == 1 { "y" } else { "ies" })?;
            }
        }
        QueueCommand::Show { id } => print_entry(&show(ctx, id)?, out)?,
        QueueCommand::Retry { target } => print_retry(&retry(ctx, target.as_deref())?, out)?,
        QueueCommand::Hold { domain } => {
            print_hold(hold(ctx, &domain, true)?, &domain, "held", out)?;
            writeln!(
                out,
                "mail arriving for {domain} is held too (alert notices excepted) until `queue release {domain}`"
            )?;
        }
        QueueCommand::Release { domain } => print_hold(hold(ctx, &domain, false)?, &domain, "released", out)?,
        QueueCommand::Purge { id, yes } => {
            purge(ctx, id, yes)?;
            writeln!(out, "purged queue entry {id}")?;
        }
        QueueCommand::Bounce { id, yes } => {
            let b = bounce(ctx, id, yes)?;
            match b.dsn_tracking_id {
                Some(t) => writeln!(
                    out,
                    "bounced queue entry {id}: {} recipient(s) given up, notice to <{}> is message {t}",
                    b.recipients, b.sender
                )?,
                None => writeln!(
                    out,
                    "bounced queue entry {id}: {} recipient(s) given up, no notice (null sender)",
                    b.recipients
                )?,
            }
        }
        QueueCommand::Redeliver { tracking_id } => {
            let r = redeliver(ctx, &tracking_id)?;
            writeln!(
                out,
                "message {} queued again for the primary: queue {}",
                r.tracking_id,
                r.queue_ids
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
    }
    Ok(())
}

/// Each domain's outage phase, for the entries' states.
fn phases(ctx: &AdminContext, entries: &[QueueEntry]) -> anyhow::Result<HashMap<String, OutagePhase>> {
    let mut phases = HashMap::new();
    for e in entries {
        if !phases.contains_key(&e.domain) {
            phases.insert(e.domain.clone(), ctx.store.outage_state(&e.domain)?.phase);
        }
    }
    Ok(phases)
}

/// Entries of one domain or all, oldest first.
pub fn list(ctx: &AdminContext, domain: Option<&str>) -> anyhow::Result<QueueListing> {
    let now = ctx.store.now();
    let entries = ctx.store.queue_entries(domain)?;
    let phases = phases(ctx, &entries)?;
    Ok(QueueListing {
        now,
        entries: entries
            .into_iter()
            .map(|entry| {
                let phase = phases.get(&entry.domain).copied().unwrap_or(OutagePhase::Normal);
                ListedEntry {
                    state: EntryState::of(&entry, phase, now),
                    tracking: TrackingId(entry.tracking_id).to_string(),
                    entry,
                }
            })
            .collect(),
    })
}

pub fn show(ctx: &AdminContext, id: u64) -> anyhow::Result<QueueEntryReport> {
    let now = ctx.store.now();
    let entry = ctx
        .store
        .queue_entry(id)?
        .with_context(|| format!("there is no queue entry {id}"))?;
    let events = ctx.store.tracking_events(entry.tracking_id)?;
    let phase = ctx.store.outage_state(&entry.domain)?.phase;
    Ok(QueueEntryReport {
        now,
        state: EntryState::of(&entry, phase, now),
        entry,
        events,
    })
}

/// Makes entries due now: one (`target` is its id), a domain's, or all. Held entries
/// and relay entries of a domain in an outage are left as they are and reported: a
/// retry would change nothing for them.
pub fn retry(ctx: &AdminContext, target: Option<&str>) -> anyhow::Result<RetryReport> {
    let store = ctx.store;
    let now = store.now();
    let entries: Vec<QueueEntry> = match target {
        Some(t) if t.chars().all(|c| c.is_ascii_digit()) => {
            let id: u64 = t.parse().context("queue id")?;
            vec![store
                .queue_entry(id)?
                .with_context(|| format!("there is no queue entry {id}"))?]
        }
        Some(domain) => {
            if store.domain(domain)?.is_none() && store.queue_entries(Some(domain))?.is_empty() {
                bail!("{domain} is neither a queue id nor a domain with queued mail");
            }
            store.queue_entries(Some(domain))?
        }
        None => store.queue_entries(None)?,
    };
    let phases = phases(ctx, &entries)?;
    let mut report = RetryReport {
        due: Vec::new(),
        held: Vec::new(),
        waiting_for_outage: Vec::new(),
    };
    for e in &entries {
        let phase = phases.get(&e.domain).copied().unwrap_or(OutagePhase::Normal);
        match EntryState::of(e, phase, now) {
            EntryState::Held => report.held.push(e.id),
            EntryState::WaitingForOutage => report.waiting_for_outage.push(e.id),
            EntryState::DueNow | EntryState::Next { .. } => {
                store.retry_at(e.id, now)?;
                report.due.push(e.id);
            }
        }
    }
    if !report.due.is_empty() {
        ctx.events.queue_changed();
    }
    Ok(report)
}

/// Queues again, for the primary, the copies of a message that were not redelivered
/// because the user deleted it during the outage.
pub fn redeliver(ctx: &AdminContext, tracking_id: &str) -> anyhow::Result<Redelivery> {
    let id: TrackingId = tracking_id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let store = ctx.store;
    let ids = store.redeliver_recoverable(id.0, store.now())?;
    if ids.is_empty() {
        if store.tracking_events(id.0)?.is_empty() {
            bail!("no message has the tracking id {id}");
        }
        bail!(
            "message {id} has no copy to redeliver: only messages a user deleted during an outage \
             (and not yet removed by retention) can be; `understudy track {id}` shows what happened to it"
        );
    }
    ctx.events.queue_changed();
    Ok(Redelivery {
        tracking_id: id.to_string(),
        queue_ids: ids,
    })
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
    let changed = store.set_domain_held(&name, held, store.now())?;
    if !held {
        // Released mail is due now: the runner looks at once.
        ctx.events.queue_changed();
    }
    Ok(changed)
}

/// Holds (or releases) single entries, whatever their domain's hold flag says: the
/// console's per-entry hold. Returns how many changed.
pub fn hold_entries(ctx: &AdminContext, ids: &[u64], held: bool) -> anyhow::Result<usize> {
    Ok(ctx.store.set_entries_held(ids, held, ctx.store.now())?)
}

/// Deletes an entry without delivering it; `confirmed` is the admin's `--yes`.
pub fn purge(ctx: &AdminContext, id: u64, confirmed: bool) -> anyhow::Result<()> {
    let e = ctx
        .store
        .queue_entry(id)?
        .with_context(|| format!("there is no queue entry {id}"))?;
    if !confirmed {
        bail!(
            "purging queue entry {id} drops a message for {} pending recipient(s) without delivering it; repeat with --yes to confirm",
            e.pending().count()
        );
    }
    Ok(ctx.store.purge(id)?)
}

/// What `queue bounce` did.
#[derive(Debug, Clone, Serialize)]
pub struct Bounced {
    pub id: u64,
    pub sender: String,
    /// Pending recipients given up.
    pub recipients: usize,
    /// The notice to the sender (`None`: a null sender gets none).
    pub dsn_tracking_id: Option<String>,
}

/// The reply recorded for each recipient of a bounced entry, and the DSN's diagnostic.
pub const BOUNCE_REASON: &str = "550 5.3.0 returned to the sender by an administrator";

/// Returns an entry to its sender; `confirmed` is the admin's `--yes`. The notice is
/// stored (synced) before the recipients are given up: a crash between the two leaves
/// the message queued, never dropped without a word to the sender.
pub fn bounce(ctx: &AdminContext, id: u64, confirmed: bool) -> anyhow::Result<Bounced> {
    let e = ctx
        .store
        .queue_entry(id)?
        .with_context(|| format!("there is no queue entry {id}"))?;
    let pending: Vec<String> = e.pending().map(|r| r.address.clone()).collect();
    if !confirmed {
        bail!(
            "bouncing queue entry {id} returns a message for {} pending recipient(s) to <{}> undelivered; repeat with --yes to confirm",
            pending.len(),
            e.mail_from
        );
    }
    if pending.is_empty() {
        bail!("queue entry {id} has no pending recipient");
    }
    let failed: Vec<crate::delivery::dsn::FailedRecipient> = pending
        .iter()
        .map(|address| crate::delivery::dsn::FailedRecipient {
            address: address.clone(),
            diagnostic: BOUNCE_REASON.into(),
            remote_mta: None,
            expired: false,
        })
        .collect();
    let dsn = crate::delivery::enqueue_dsn(ctx.store, &ctx.config.hostname, &e, &failed)?;
    ctx.store.finish_recipients(
        id,
        &pending,
        understudy_storage::RecipientStatus::Failed,
        BOUNCE_REASON,
    )?;
    crate::metrics::METRICS
        .bounced
        .fetch_add(pending.len() as u64, std::sync::atomic::Ordering::Relaxed);
    // The notice is due now.
    ctx.events.queue_changed();
    Ok(Bounced {
        id,
        sender: e.mail_from,
        recipients: pending.len(),
        dsn_tracking_id: dsn.map(|t| TrackingId(t).to_string()),
    })
}

/// Which queue entries a bulk action is for: those of one domain (or all) narrowed by
/// kind, state and recipient, each left empty for "any". The console's queue manager and
/// the JSON API filter with it, and a bulk confirmation is bound to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueFilter {
    /// Only this domain.
    #[serde(default)]
    pub domain: String,
    /// relay, outbound or notification.
    #[serde(default)]
    pub kind: String,
    /// due, waiting or held.
    #[serde(default)]
    pub state: String,
    /// Entries with a recipient address containing this (case-insensitive).
    #[serde(default)]
    pub recipient: String,
}

impl QueueFilter {
    /// The filter as compared: fields trimmed, domain and recipient lower-cased.
    pub fn normalised(&self) -> QueueFilter {
        QueueFilter {
            domain: self.domain.trim().to_ascii_lowercase(),
            kind: self.kind.trim().to_string(),
            state: self.state.trim().to_string(),
            recipient: self.recipient.trim().to_ascii_lowercase(),
        }
    }

    /// Refuses a kind or state that matches nothing (a typo would select every entry).
    pub fn check(&self) -> anyhow::Result<()> {
        if !["", "relay", "outbound", "notification"].contains(&self.kind.trim()) {
            bail!("unknown kind {:?}: relay, outbound or notification", self.kind);
        }
        if !["", "due", "waiting", "held"].contains(&self.state.trim()) {
            bail!("unknown state {:?}: due, waiting or held", self.state);
        }
        Ok(())
    }

    pub fn matches(&self, e: &QueueEntry, now: i64) -> bool {
        let f = self.normalised();
        let state_ok = match f.state.as_str() {
            "held" => e.held,
            "due" => !e.held && e.next_attempt <= now,
            "waiting" => !e.held && e.next_attempt > now,
            _ => true,
        };
        state_ok
            && (f.domain.is_empty() || e.domain.eq_ignore_ascii_case(&f.domain))
            && (f.kind.is_empty() || kind_name(e) == f.kind)
            && (f.recipient.is_empty()
                || e.recipients
                    .iter()
                    .any(|r| r.address.to_ascii_lowercase().contains(&f.recipient)))
    }

    /// `domain example.com, recipient anna`, or `every entry`.
    pub fn describe(&self) -> String {
        let f = self.normalised();
        let parts: Vec<String> = [
            ("domain", &f.domain),
            ("kind", &f.kind),
            ("state", &f.state),
            ("recipient", &f.recipient),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
        if parts.is_empty() {
            "every entry".into()
        } else {
            parts.join(", ")
        }
    }
}

/// An action on a set of queue entries at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    Retry,
    Hold,
    Release,
    Purge,
    Bounce,
}

impl BulkAction {
    pub fn parse(name: &str) -> Option<BulkAction> {
        Some(match name {
            "retry" => BulkAction::Retry,
            "hold" => BulkAction::Hold,
            "release" => BulkAction::Release,
            "purge" => BulkAction::Purge,
            "bounce" => BulkAction::Bounce,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Hold => "hold",
            BulkAction::Release => "release",
            BulkAction::Purge => "purge",
            BulkAction::Bounce => "bounce",
        }
    }

    /// What the entries are afterwards: `3 entries held`.
    pub fn done(self) -> &'static str {
        match self {
            BulkAction::Retry => "due now",
            BulkAction::Hold => "held",
            BulkAction::Release => "released",
            BulkAction::Purge => "purged",
            BulkAction::Bounce => "bounced",
        }
    }

    /// Purge and bounce give the message up for its pending recipients: no undo.
    pub fn gives_up(self) -> bool {
        matches!(self, BulkAction::Purge | BulkAction::Bounce)
    }
}

/// What a bulk action did to the entries it was given.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkOutcome {
    pub action: Option<BulkAction>,
    /// Entries changed.
    pub changed: usize,
    /// Entries no longer queued (delivered, purged or expired since they were listed).
    pub gone: Vec<u64>,
    /// Entries left as they were, each with why.
    pub unchanged: Vec<String>,
}

impl BulkOutcome {
    /// `2 entries held; 1 no longer queued: 7`.
    pub fn text(&self) -> String {
        let verb = self.action.map_or("changed", BulkAction::done);
        let mut text = format!("{} entries {verb}", self.changed);
        if !self.gone.is_empty() {
            let ids: Vec<String> = self.gone.iter().map(u64::to_string).collect();
            text.push_str(&format!("; {} no longer queued: {}", ids.len(), ids.join(", ")));
        }
        if !self.unchanged.is_empty() {
            text.push_str(&format!("; not {verb}: {}", self.unchanged.join("; ")));
        }
        text
    }
}

/// Runs `action` on each of `ids`, the listed entries of a confirmed bulk action. Every
/// entry still queued must be in a domain `covers` allows, or nothing is done at all;
/// entries gone since they were listed are reported, and one entry that cannot be
/// changed is reported while the others still are.
pub fn bulk(
    ctx: &AdminContext,
    action: BulkAction,
    ids: &[u64],
    covers: &dyn Fn(&str) -> bool,
) -> anyhow::Result<BulkOutcome> {
    let mut outcome = BulkOutcome {
        action: Some(action),
        ..BulkOutcome::default()
    };
    let mut present = Vec::new();
    for id in ids {
        match ctx.store.queue_entry(*id)? {
            None => outcome.gone.push(*id),
            Some(e) if !covers(&e.domain) => bail!("no queue entry {id}"),
            Some(e) if e.pending().next().is_none() => outcome.gone.push(*id),
            Some(_) => present.push(*id),
        }
    }
    match action {
        BulkAction::Hold | BulkAction::Release => {
            let held = action == BulkAction::Hold;
            outcome.changed = hold_entries(ctx, &present, held)?;
            let same = present.len() - outcome.changed;
            if same > 0 {
                outcome
                    .unchanged
                    .push(format!("{same} were {} already", action.done()));
            }
        }
        BulkAction::Retry => {
            for id in &present {
                let r = retry(ctx, Some(&id.to_string()))?;
                if r.due.contains(id) {
                    outcome.changed += 1;
                } else if r.held.contains(id) {
                    outcome.unchanged.push(format!("{id}: held"));
                } else {
                    outcome
                        .unchanged
                        .push(format!("{id}: waiting for the end of its domain's outage"));
                }
            }
        }
        BulkAction::Purge | BulkAction::Bounce => {
            for id in &present {
                let done = match action {
                    BulkAction::Purge => purge(ctx, *id, true),
                    _ => bounce(ctx, *id, true).map(|_| ()),
                };
                match done {
                    Ok(()) => outcome.changed += 1,
                    Err(e) => outcome.unchanged.push(format!("{id}: {e:#}")),
                }
            }
        }
    }
    Ok(outcome)
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

fn list_table(listing: &QueueListing) -> Table {
    let now = listing.now;
    let mut t = Table::new(&[
        "ID", "KIND", "DOMAIN", "FROM", "TO", "PENDING", "SIZE", "AGE", "TRACKING", "STATE",
    ]);
    for l in &listing.entries {
        let e = &l.entry;
        let pending: Vec<&str> = e.pending().map(|r| r.address.as_str()).collect();
        let last = e
            .recipients
            .iter()
            .filter_map(|r| r.last_reply.as_deref())
            .next_back()
            .map(|r| format!("; last reply: {r}"))
            .unwrap_or_default();
        t.push(vec![
            e.id.to_string(),
            kind_name(e),
            e.domain.clone(),
            format!("<{}>", e.mail_from),
            or_dash(pending.join(", ")),
            format!("{}/{}", pending.len(), e.recipients.len()),
            e.size.to_string(),
            format_age(now - e.created_at),
            l.tracking.clone(),
            format!("{}{last}", l.state.text()),
        ]);
    }
    t
}

fn print_retry(r: &RetryReport, out: &mut dyn Write) -> std::io::Result<()> {
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let n = r.due.len();
    writeln!(out, "{n} entr{} due now", if n == 1 { "y" } else { "ies" })?;
    if !r.held.is_empty() {
        writeln!(
            out,
            "{} held, left as they are (`queue release DOMAIN` first): {}",
            r.held.len(),
            ids(&r.held)
        )?;
    }
    if !r.waiting_for_outage.is_empty() {
        writeln!(
            out,
            "{} waiting for the end of their domain's outage, left as they are (`outage stop DOMAIN` releases them): {}",
            r.waiting_for_outage.len(),
            ids(&r.waiting_for_outage)
        )?;
    }
    Ok(())
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
    writeln!(out, "state:         {}", report.state.text())?;
    writeln!(out, "tracking id:   {}", TrackingId(e.tracking_id))?;
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
