//! Message tracking: messages by Message-ID, or by address with a time range (`track`),
//! each with its events and the remote SMTP replies they carry, and where it is queued
//! now. A domain administrator sees only messages that concern their domains.

use std::sync::Arc;

use axum::extract::{Query, State};
use maud::{html, Markup};
use serde::Deserialize;

use super::filled;
use crate::admin::tracking::{self, parse_since, TrackArgs, TrackedMessage};
use crate::web::console::layout::{page, time};
use crate::web::console::{AdminSession, AppError, Console};

#[derive(Debug, Default, Deserialize)]
pub struct Search {
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

/// Whether a domain administrator may see this message: it is queued for one of their
/// domains or an event names an address in one.
pub fn visible(m: &TrackedMessage, covers: &dyn Fn(&str) -> bool) -> bool {
    m.queued.iter().any(|e| covers(&e.domain))
        || m.events.iter().any(|ev| {
            ev.detail
                .split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '(' | ')'))
                .filter_map(|w| w.rsplit_once('@').map(|(_, d)| d.trim_end_matches(['.', ':'])))
                .any(covers)
        })
}

pub async fn search(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Query(q): Query<Search>,
) -> Result<Markup, AppError> {
    let args = TrackArgs {
        id: None,
        message_id: filled(&q.message_id),
        address: filled(&q.address),
        since: filled(&q.since).filter(|_| q.message_id.trim().is_empty()),
    };
    let until = match filled(&q.until) {
        Some(u) => Some(parse_since(&u).map_err(|e| AppError::Failed(format!("{e:#}")))?),
        None => None,
    };
    let searched = args.message_id.is_some() || args.address.is_some();
    let messages = if searched {
        let role = admin.role.clone();
        console
            .run(None, move |ctx| {
                let mut found = tracking::track(ctx, &args)?;
                found.retain(|m| visible(m, &|d| role.covers(d)));
                if let Some(until) = until {
                    found.retain(|m| m.events.first().is_some_and(|e| e.at <= until));
                }
                Ok(found)
            })
            .await?
            .0
    } else {
        Vec::new()
    };
    let body = html! {
        form method="get" action="/tracking" {
            label { "Message-ID " input name="message_id" value=(q.message_id); }
            label { "or address " input name="address" value=(q.address); }
            label { "from " input name="since" value=(q.since) placeholder="YYYY-MM-DD HH:MM"; }
            label { "to " input name="until" value=(q.until) placeholder="YYYY-MM-DD HH:MM"; }
            button { "Search" }
        }
        @if searched && messages.is_empty() { p { "No message found." } }
        @for m in &messages {
            section class="message" {
                h2 { "Message " (m.tracking_id) }
                table {
                    tr { th { "When" } th { "What" } th { "Detail" } }
                    @for ev in &m.events { tr { td { (time(ev.at)) } td { (ev.kind) } td class="detail" { (ev.detail) } } }
                }
                @for e in &m.queued {
                    p { "Now queued: " a href={"/queue/" (e.id)} { "entry " (e.id) } " for " (e.pending().map(|r| r.address.as_str()).collect::<Vec<_>>().join(", ")) @if e.held { " (held)" } }
                }
            }
        }
    };
    Ok(page(
        "Message tracking",
        Some(&admin.who()),
        &admin.session.csrf,
        body,
    ))
}
