//! The queue manager: entries filtered by domain, kind, state and recipient
//! (`queue list`), one entry with its recipients, attempts, replies and events (`queue
//! show`), and actions on the entries ticked: retry (`queue retry`), hold and release
//! (`queue::hold_entries`), a whole domain's hold (`queue hold|release`) and purge
//! (`queue purge`, which needs the confirmation box ticked).

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

#[derive(Debug, Default, Deserialize)]
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

async fn render(
    console: &Arc<Console>,
    admin: &AdminSession,
    filter: Filter,
    message: Option<String>,
) -> Result<Markup, AppError> {
    let domain = filled(&filter.domain);
    if let Some(d) = &domain {
        admin.require(d)?;
    }
    let role = admin.role.clone();
    let (listing, _) = console
        .run(None, move |ctx| queue::list(ctx, domain.as_deref()))
        .await?;
    let now = listing.now;
    let entries: Vec<&QueueEntry> = listing
        .entries
        .iter()
        .map(|listed| &listed.entry)
        .filter(|e| role.covers(&e.domain) && matches(e, &filter, now))
        .collect();
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
            table id="queue" {
                tr { th {} th { "ID" } th { "Kind" } th { "Domain" } th { "From" } th { "Pending" } th { "Size" } th { "Age" } th { "Next / state" } th { "Last reply" } }
                @for e in &entries {
                    tr {
                        td { input type="checkbox" name="id" value=(e.id); }
                        td { a href={"/queue/" (e.id)} { (e.id) } }
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
            p { (entries.len()) " entries" }
            fieldset {
                legend { "With the ticked entries" }
                button name="action" value="retry" { "Retry now" } " "
                button name="action" value="hold" { "Hold" } " "
                button name="action" value="release" { "Release" } " "
                label { input type="checkbox" name="confirm" value="yes"; " I confirm: purging drops the messages without delivering them" }
                button name="action" value="purge" { "Purge" }
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
    let ids: Vec<u64> = fields
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let role = admin.role.clone();
    let target = if action.ends_with("-domain") {
        admin.require(&domain)?;
        domain.clone()
    } else {
        ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
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
                "purge" => {
                    if !confirmed {
                        anyhow::bail!("tick the confirmation box to purge");
                    }
                    for id in &ids {
                        queue::purge(ctx, *id, true)?;
                    }
                    format!("{} entries purged", ids.len())
                }
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
    Ok(render(&console, &admin, Filter::default(), Some(message))
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
    };
    Ok(page(
        &format!("Queue entry {id}"),
        Some(&admin.who()),
        &admin.session.csrf,
        body,
    ))
}
