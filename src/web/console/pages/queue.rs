//! The queue manager: entries filtered by domain, kind, state and recipient
//! (`queue list`), one entry with its recipients, attempts, replies and events (`queue
//! show`), and bulk actions on the entries ticked or on every entry the filter matches:
//! retry, hold, release, purge and bounce (`queue::bulk`), and a whole domain's hold
//! (`queue hold|release`). A bulk action (any action on the filter or on more than one
//! entry, and every purge or bounce) first shows the entries it would change, the count
//! and the filter, with a single-use confirmation bound to this session, the action and
//! the selection (`confirm`); posted back unchanged it acts on exactly the entries
//! listed, so mail arriving in between is not swept in. A used, foreign or altered
//! confirmation changes nothing and the page says why.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup};
use understudy_storage::{QueueEntry, RecipientStatus};

use super::filled;
use crate::admin::audit::Action;
use crate::admin::queue::{self, BulkAction, QueueFilter};
use crate::outage::notify::format_age;
use crate::web::console::confirm::Selection;
use crate::web::console::layout::{csrf_field, flash, page, time};
use crate::web::console::{AdminSession, AppError, Console};

fn kind_name(e: &QueueEntry) -> String {
    format!("{:?}", e.kind).to_lowercase()
}

/// The entries `filter` matches that the administrator may see, oldest first.
async fn matching(
    console: &Arc<Console>,
    admin: &AdminSession,
    filter: &QueueFilter,
) -> Result<(i64, Vec<QueueEntry>), AppError> {
    filter.check().map_err(|e| AppError::Failed(e.to_string()))?;
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
        .filter(|e| admin.role.covers(&e.domain) && filter.matches(e, now))
        .collect();
    Ok((now, entries))
}

fn filter_fields(filter: &QueueFilter) -> Markup {
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

/// What the queue page says above the list after an action.
enum Notice {
    None,
    Done(String),
    Refused(String),
}

async fn render(
    console: &Arc<Console>,
    admin: &AdminSession,
    filter: QueueFilter,
    notice: Notice,
) -> Result<Markup, AppError> {
    let (now, entries) = matching(console, admin, &filter).await?;
    let csrf = &admin.session.csrf;
    let body = html! {
        @match &notice {
            Notice::Done(m) => (flash(Some(m.as_str()))),
            Notice::Refused(m) => p class="error" role="alert" id="refused" { (m) },
            Notice::None => {},
        }
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
                p { "Purge drops the messages without delivering them; bounce gives them up and tells each sender. Both, and any action on the whole filter or on more than one entry, show the entries first and ask for a confirmation." }
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

/// The confirmation step: the entries the action would change, the filter, and a form
/// that posts the same selection back with the confirmation token.
fn confirmation(
    admin: &AdminSession,
    selection: &Selection,
    (token, until): (String, i64),
    now: i64,
    entries: &[QueueEntry],
) -> Markup {
    let csrf = &admin.session.csrf;
    let action = selection.action;
    let filter = &selection.filter;
    let verb = match action {
        BulkAction::Retry => "Retry",
        BulkAction::Hold => "Hold",
        BulkAction::Release => "Release",
        BulkAction::Purge => "Purge",
        BulkAction::Bounce => "Bounce",
    };
    let warning = match action {
        BulkAction::Purge => "They are dropped without being delivered and nobody is told.",
        BulkAction::Bounce => {
            "Their pending recipients are given up and each sender gets a delivery status notification."
        }
        BulkAction::Retry => "They are attempted now.",
        BulkAction::Hold => "They are not attempted until released.",
        BulkAction::Release => "They are attempted at once.",
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
        p id="confirm-filter" {
            @match &selection.ticked {
                None => { "Every entry of the filter: " }
                Some(_) => { "The entries ticked, of the filter: " }
            }
            (filter.describe()) ". Only the entries listed here are changed, not mail that arrives meanwhile; the confirmation can be used once, until " (time(until)) "."
        }
        table id="confirm-entries" {
            tr { th { "ID" } th { "Kind" } th { "Domain" } th { "From" } th { "Pending" } th { "Size" } th { "Age" } th { "Next / state" } th { "Last reply" } }
            @for e in entries { (entry_row(e, now, false)) }
        }
        form method="post" action="/queue/bulk" {
            (csrf_field(csrf))
            (filter_fields(filter))
            input type="hidden" name="action" value=(action.name());
            input type="hidden" name="confirmation" value=(token);
            @match &selection.ticked {
                None => { input type="hidden" name="scope" value="filter"; }
                Some(ids) => {
                    input type="hidden" name="scope" value="ticked";
                    @for id in ids { input type="hidden" name="id" value=(id); }
                }
            }
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
pub fn ids_target(ids: &[u64]) -> String {
    let shown: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
    match ids.len() {
        n if n > 20 => format!("{} and {} more", shown.join(","), n - 20),
        _ => shown.join(","),
    }
}

pub async fn list(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Query(filter): Query<QueueFilter>,
) -> Result<Markup, AppError> {
    render(&console, &admin, filter, Notice::None).await
}

/// Runs a confirmed (or single-entry) bulk action on `ids`, audited; its report or why
/// it failed, for the page.
async fn act(
    console: &Arc<Console>,
    admin: &AdminSession,
    action: BulkAction,
    filter: &QueueFilter,
    ids: Vec<u64>,
) -> Result<Notice, AppError> {
    let role = admin.role.clone();
    let target = format!("{} (filter: {})", ids_target(&ids), filter.describe());
    let audit = admin.audit(Action::new(format!("queue {}", action.name()), target));
    match console
        .run(audit, move |ctx| {
            queue::bulk(ctx, action, &ids, &|d| role.covers(d))
        })
        .await
    {
        Ok((outcome, _)) => Ok(Notice::Done(outcome.text())),
        Err(AppError::Failed(m)) => Ok(Notice::Refused(m)),
        Err(e) => Err(e),
    }
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
    let filter = QueueFilter {
        domain: field("f_domain"),
        kind: field("f_kind"),
        state: field("f_state"),
        recipient: field("f_recipient"),
    };
    if let Some(d) = filled(&filter.domain) {
        admin.require(&d)?;
    }
    if let Some(held) = match action.as_str() {
        "hold-domain" => Some(true),
        "release-domain" => Some(false),
        _ => None,
    } {
        let domain = field("domain");
        admin.require(&domain)?;
        let d = domain.clone();
        let notice = match console
            .run(
                admin.audit(Action::new(format!("queue {action}"), &domain)),
                move |ctx| queue::hold(ctx, &d, held),
            )
            .await
        {
            Ok((n, _)) => Notice::Done(format!(
                "{n} entries of {domain} {}",
                if held { "held" } else { "released" }
            )),
            Err(AppError::Failed(m)) => Notice::Refused(m),
            Err(e) => return Err(e),
        };
        return Ok(render(&console, &admin, filter, notice).await?.into_response());
    }
    let Some(action) = BulkAction::parse(&action) else {
        return Err(AppError::Failed(format!("unknown action {action}")));
    };
    let ticked: Vec<u64> = fields
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let on_filter = field("scope") == "filter";
    let selection = Selection::new(action, &filter, (!on_filter).then_some(ticked));
    let token = field("confirmation");
    if !token.is_empty() {
        let (c, owner, asked) = (console.clone(), admin.confirmation_owner(), selection.clone());
        let redeemed = tokio::task::spawn_blocking(move || c.confirmations.redeem(&token, &owner, &asked))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        return Ok(match redeemed {
            Ok(listed) => {
                let notice = act(&console, &admin, action, &filter, listed).await?;
                render(&console, &admin, filter, notice).await?.into_response()
            }
            Err(why) => (
                StatusCode::CONFLICT,
                render(&console, &admin, filter, Notice::Refused(why)).await?,
            )
                .into_response(),
        });
    }
    // One entry retried, held or released (the entry page's buttons, or one ticked) is
    // not a bulk action: it is done at once.
    if let Some([id]) = selection.ticked.as_deref() {
        if !action.gives_up() {
            let notice = act(&console, &admin, action, &filter, vec![*id]).await?;
            return Ok(render(&console, &admin, filter, notice).await?.into_response());
        }
    }
    let (now, mut entries) = matching(&console, &admin, &filter).await?;
    if let Some(ids) = &selection.ticked {
        entries.retain(|e| ids.contains(&e.id));
    }
    if entries.is_empty() {
        let notice = Notice::Done("No entries were selected.".into());
        return Ok(render(&console, &admin, filter, notice).await?.into_response());
    }
    let listed = entries.iter().map(|e| e.id).collect();
    let (c, owner, asked) = (console.clone(), admin.confirmation_owner(), selection.clone());
    let issued = tokio::task::spawn_blocking(move || c.confirmations.issue(&owner, asked, listed))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(AppError::Internal)?;
    Ok(confirmation(&admin, &selection, issued, now, &entries).into_response())
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
