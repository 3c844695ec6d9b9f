//! The queue manager: entries filtered by domain, kind, state and recipient
//! (`queue list`), one entry with its recipients, attempts, replies and events (`queue
//! show`), and bulk actions on the entries ticked or on every entry the filter matches:
//! retry (`queue retry`), hold and release (`queue::hold_entries`), purge (`queue
//! purge`) and bounce (`queue bounce`), and a whole domain's hold (`queue hold|release`).
//! Purge and bounce, and any action on a filter, first show the entries they would
//! change and act only when that confirmation is posted back (with those entries' ids,
//! so mail arriving in between is not swept in).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use understudy_storage::{QueueEntry, RecipientStatus};

use super::filled;
use crate::admin::audit::Action;
use crate::admin::queue;
use crate::outage::notify::format_age;
use crate::web::console::layout::{csrf_field, flash, page, time};
use crate::web::console::{AdminSession, AppError, Console};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    recipient: String,
}

fn kind_name(e: &QueueEntry) -> String {
    format!("{:?}", e.kind).to_lowercase()
}

fn matches(e: &QueueEntry, f: &Filter, now: i64) -> bool {
    let state_ok = match f.state.as_str() {
        "held" => e.held,
        "due" => !e.held && e.next_attempt <= now,
        "waiting" => !e.held && e.next_attempt > now,
        _ => true,
    };
    let recipient = f.recipient.trim().to_ascii_lowercase();
    state_ok
        && (f.kind.is_empty() || kind_name(e) == f.kind)
        && (recipient.is_empty()
            || e.recipients
                .iter()
                .any(|r| r.address.to_ascii_lowercase().contains(&recipient)))
}

/// The entries `filter` matches that the administrator may see, oldest first.
async fn matching(
    console: &Arc<Console>,
    admin: &AdminSession,
    filter: &Filter,
) -> Result<(i64, Vec<QueueEntry>), AppError> {
    let domain = filled(&filter.domain);
    if let Some(d) = &domain {
        admin.require(d)?;
    }
    let (listing, _) = console
        .run(None, move |ctx| queue::list(ctx, domain.as_deref()))
        .await?;
    let now = listing.now;
    let entries = listing
        .entries
        .into_iter()
        .map(|listed| listed.entry)
        .filter(|e| admin.role.covers(&e.domain) && matches(e, filter, now))
        .collect();
    Ok((now, entries))
}

fn filter_fields(filter: &Filter) -> Markup {
    html! {
        input type="hidden" name="f_domain" value=(filter.domain);
        input type="hidden" name="f_kind" value=(filter.kind);
        input type="hidden" name="f_state" value=(filter.state);
        input type="hidden" name="f_recipient" value=(filter.recipient);
    }
}

fn entry_row(e: &QueueEntry, now: i64, tick: bool) -> Markup {
    html! {
        tr {
            @if tick { td { input type="checkbox" name="id" value=(e.id); } }
            td class="id" { a href={"/queue/" (e.id)} { (e.id) } }
            td { (kind_name(e)) }
            td { (e.domain) }
            td { "<" (e.mail_from) ">" }
            td { (e.pending().count()) "/" (e.recipients.len()) }
            td { (e.size) }
            td { (format_age(now - e.created_at)) }
            td class="state" { @if e.held { "held" } @else if e.next_attempt <= now { "due now" } @else { "next " (time(e.next_attempt)) } }
            td { (e.recipients.iter().filter_map(|r| r.last_reply.as_deref()).next_back().unwrap_or("-")) }
        }
    }
}

async fn render(
    console: &Arc<Console>,
    admin: &AdminSession,
    filter: Filter,
    message: Option<String>,
) -> Result<Markup, AppError> {
    let (now, entries) = matching(console, admin, &filter).await?;
    let csrf = &admin.session.csrf;
    let body = html! {
        (flash(message.as_deref()))
        form method="get" action="/queue" {
            label { "Domain " input name="domain" value=(filter.domain); }
            label { "Kind " select name="kind" {
                @for k in ["", "relay", "outbound", "notification"] { option value=(k) selected[filter.kind == k] { (if k.is_empty() { "any" } else { k }) } }
            } }
            label { "State " select name="state" {
                @for k in ["", "due", "waiting", "held"] { option value=(k) selected[filter.state == k] { (if k.is_empty() { "any" } else { k }) } }
            } }
            label { "Recipient " input name="recipient" value=(filter.recipient); }
            button { "Filter" }
        }
        form method="post" action="/queue/bulk" {
            (csrf_field(csrf))
            (filter_fields(&filter))
            table id="queue" {
                tr { th {} th { "ID" } th { "Kind" } th { "Domain" } th { "From" } th { "Pending" } th { "Size" } th { "Age" } th { "Next / state" } th { "Last reply" } }
                @for e in &entries { (entry_row(e, now, true)) }
            }
            p id="queue-count" { (entries.len()) " entries" }
            fieldset {
                legend { "Bulk action" }
                label { input type="radio" name="scope" value="ticked" checked; " on the entries ticked" }
                label { input type="radio" name="scope" value="filter"; " on every entry the filter matches (" (entries.len()) " now)" }
                button name="action" value="retry" { "Retry now" } " "
                button name="action" value="hold" { "Hold" } " "
                button name="action" value="release" { "Release" } " "
                button name="action" value="purge" { "Purge…" } " "
                button name="action" value="bounce" { "Bounce to the sender…" }
                p { "Purge drops the messages without delivering them; bounce gives them up and tells each sender. Both, and any action on the whole filter, ask for a confirmation first." }
            }
            @if let Some(d) = filled(&filter.domain) {
                fieldset {
                    legend { "The whole domain " (d) }
                    input type="hidden" name="domain" value=(d);
                    button name="action" value="hold-domain" { "Hold all mail of " (d) } " "
                    button name="action" value="release-domain" { "Release " (d) }
                }
            }
        }
    };
    Ok(page("Queue", Some(&admin.who()), csrf, body))
}

/// The confirmation step: the entries `action` would change, and a form that posts
/// their ids back with `confirm=yes`.
fn confirmation(
    admin: &AdminSession,
    action: &str,
    filter: &Filter,
    now: i64,
    entries: &[QueueEntry],
) -> Markup {
    let csrf = &admin.session.csrf;
    let (verb, warning) = match action {
        "purge" => (
            "Purge",
            "They are dropped without being delivered and nobody is told.",
        ),
        "bounce" => (
            "Bounce",
            "Their pending recipients are given up and each sender gets a delivery status notification.",
        ),
        "retry" => ("Retry", "They are attempted now."),
        "hold" => ("Hold", "They are not attempted until released."),
        _ => ("Release", "They are attempted at once."),
    };
    let back = format!(
        "/queue?domain={}&kind={}&state={}&recipient={}",
        urlencoding(&filter.domain),
        urlencoding(&filter.kind),
        urlencoding(&filter.state),
        urlencoding(&filter.recipient)
    );
    let body = html! {
        p id="confirm-question" { strong { (verb) " " (entries.len()) " entries?" } " " (warning) }
        table id="confirm-entries" {
            tr { th { "ID" } th { "Kind" } th { "Domain" } th { "From" } th { "Pending" } th { "Size" } th { "Age" } th { "Next / state" } th { "Last reply" } }
            @for e in entries { (entry_row(e, now, false)) }
        }
        form method="post" action="/queue/bulk" {
            (csrf_field(csrf))
            (filter_fields(filter))
            input type="hidden" name="action" value=(action);
            input type="hidden" name="scope" value="ticked";
            input type="hidden" name="confirm" value="yes";
            @for e in entries { input type="hidden" name="id" value=(e.id); }
            button id="confirm" { "Yes, " (verb.to_lowercase()) " these " (entries.len()) " entries" }
            " "
            a href=(back) { "Cancel" }
        }
    };
    page(&format!("{verb} queue entries"), Some(&admin.who()), csrf, body)
}

/// Percent-encodes a query value.
fn urlencoding(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The audit target for a set of entries: their ids, the first twenty of many.
fn ids_target(ids: &[u64]) -> String {
    let shown: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
    match ids.len() {
        n if n > 20 => format!("{} and {} more", shown.join(","), n - 20),
        _ => shown.join(","),
    }
}

pub async fn list(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Query(filter): Query<Filter>,
) -> Result<Markup, AppError> {
    render(&console, &admin, filter, None).await
}

pub async fn bulk(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    admin.csrf(&field("csrf"))?;
    let action = field("action");
    let confirmed = field("confirm") == "yes";
    let domain = field("domain");
    let filter = Filter {
        domain: field("f_domain"),
        kind: field("f_kind"),
        state: field("f_state"),
        recipient: field("f_recipient"),
    };
    if !matches!(
        action.as_str(),
        "retry" | "hold" | "release" | "purge" | "bounce" | "hold-domain" | "release-domain"
    ) {
        return Err(AppError::Failed(format!("unknown action {action}")));
    }
    let domain_wide = action.ends_with("-domain");
    let on_filter = field("scope") == "filter" && !domain_wide;
    let mut ids: Vec<u64> = fields
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    if on_filter || (!domain_wide && !confirmed && matches!(action.as_str(), "purge" | "bounce")) {
        let (now, mut entries) = matching(&console, &admin, &filter).await?;
        if !on_filter {
            entries.retain(|e| ids.contains(&e.id));
        }
        if entries.is_empty() {
            return Ok(
                render(&console, &admin, filter, Some("No entries were selected.".into()))
                    .await?
                    .into_response(),
            );
        }
        if !confirmed {
            return Ok(confirmation(&admin, &action, &filter, now, &entries).into_response());
        }
        ids = entries.iter().map(|e| e.id).collect();
    }
    if !domain_wide && ids.is_empty() {
        return Ok(
            render(&console, &admin, filter, Some("No entries were selected.".into()))
                .await?
                .into_response(),
        );
    }
    let role = admin.role.clone();
    let target = if domain_wide {
        admin.require(&domain)?;
        domain.clone()
    } else {
        ids_target(&ids)
    };
    let verb = format!("queue {action}");
    let (message, _) = console
        .run(admin.audit(Action::new(verb, target)), move |ctx| {
            // Every entry named must be in the administrator's domains, whatever the
            // form says.
            for id in &ids {
                let e = ctx
                    .store
                    .queue_entry(*id)?
                    .ok_or_else(|| anyhow::anyhow!("no queue entry {id}"))?;
                if !role.covers(&e.domain) {
                    anyhow::bail!("no queue entry {id}");
                }
            }
            // Each entry on its own: one that cannot be changed is reported, the rest
            // still are.
            let each = |verb: &str, op: &dyn Fn(u64) -> anyhow::Result<()>| {
                let mut failed = Vec::new();
                for id in &ids {
                    if let Err(e) = op(*id) {
                        failed.push(format!("{id}: {e:#}"));
                    }
                }
                let done = ids.len() - failed.len();
                if failed.is_empty() {
                    format!("{done} entries {verb}")
                } else {
                    format!("{done} entries {verb}; not {verb}: {}", failed.join("; "))
                }
            };
            Ok(match action.as_str() {
                "retry" => {
                    let mut n = 0;
                    for id in &ids {
                        n += queue::retry(ctx, Some(&id.to_string()))?.due.len();
                    }
                    format!("{n} entries due now")
                }
                "hold" => format!("{} entries held", queue::hold_entries(ctx, &ids, true)?),
                "release" => format!("{} entries released", queue::hold_entries(ctx, &ids, false)?),
                "purge" if confirmed => each("purged", &|id| queue::purge(ctx, id, true)),
                "bounce" if confirmed => each("bounced", &|id| queue::bounce(ctx, id, true).map(|_| ())),
                "purge" | "bounce" => anyhow::bail!("{action} needs the confirmation"),
                "hold-domain" => format!("{} entries of {domain} held", queue::hold(ctx, &domain, true)?),
                "release-domain" => format!(
                    "{} entries of {domain} released",
                    queue::hold(ctx, &domain, false)?
                ),
                other => anyhow::bail!("unknown action {other}"),
            })
        })
        .await
        .or_else(|e| match e {
            AppError::Failed(m) => Ok((m, String::new())),
            e => Err(e),
        })?;
    Ok(render(&console, &admin, filter, Some(message))
        .await?
        .into_response())
}

pub async fn show(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path(id): Path<u64>,
) -> Result<Markup, AppError> {
    let (report, _) = console
        .run(None, move |ctx| queue::show(ctx, id))
        .await
        .map_err(|_| AppError::NotFound)?;
    admin.require(&report.entry.domain)?;
    let e = &report.entry;
    let body = html! {
        table {
            tr { th { "Kind" } td { (kind_name(e)) } }
            tr { th { "Domain" } td { (e.domain) } }
            tr { th { "From" } td { "<" (e.mail_from) ">" } }
            tr { th { "Message-ID" } td { (e.message_id.as_deref().unwrap_or("-")) } }
            tr { th { "Size" } td { (e.size) " bytes" } }
            tr { th { "Queued" } td { (time(e.created_at)) } }
            tr { th { "Next attempt" } td { @if e.held { "held" } @else { (time(e.next_attempt)) } } }
        }
        h2 { "Recipients" }
        table id="recipients" {
            tr { th { "Address" } th { "Status" } th { "Attempts" } th { "Last reply" } }
            @for r in &e.recipients {
                tr { td { (r.address) } td { (if r.status == RecipientStatus::Pending { "pending".to_string() } else { format!("{:?}", r.status).to_lowercase() }) } td { (r.attempts) } td { (r.last_reply.as_deref().unwrap_or("-")) } }
            }
        }
        h2 { "Events" }
        table id="events" {
            tr { th { "When" } th { "What" } th { "Detail" } }
            @for ev in &report.events { tr { td { (time(ev.at)) } td { (ev.kind) } td { (ev.detail) } } }
        }
        form method="post" action="/queue/bulk" {
            (csrf_field(&admin.session.csrf))
            input type="hidden" name="id" value=(e.id);
            input type="hidden" name="f_domain" value=(e.domain);
            button name="action" value="retry" { "Retry now" } " "
            button name="action" value="hold" { "Hold" } " "
            button name="action" value="release" { "Release" } " "
            button name="action" value="purge" { "Purge…" } " "
            button name="action" value="bounce" { "Bounce to the sender…" }
        }
    };
    Ok(page(
        &format!("Queue entry {id}"),
        Some(&admin.who()),
        &admin.session.csrf,
        body,
    ))
}
