//! The audit log page: the newest 500 entries (a domain administrator's: those of their
//! domains and their own).

use std::sync::Arc;

use axum::extract::State;
use maud::{html, Markup};

use crate::web::console::layout::{page, time};
use crate::web::console::{AdminSession, AppError, Console};

pub async fn show(State(console): State<Arc<Console>>, admin: AdminSession) -> Result<Markup, AppError> {
    let role = admin.role.clone();
    let me = admin.name.clone();
    let (entries, _) = console
        .run(None, move |ctx| {
            Ok(ctx.store.audit_entries(500, &|e| {
                role.is_global() || e.actor == me || e.domain.as_deref().is_some_and(|d| role.covers(d))
            })?)
        })
        .await?;
    let body = html! {
        table id="audit" {
            tr { th { "When" } th { "Who" } th { "From" } th { "What" } th { "On" } th { "Result" } }
            @for e in &entries {
                tr { td { (time(e.at)) } td { (e.actor) } td { (e.source) } td { (e.action) } td { (e.target) }
                     td { @if e.ok { "ok" } @else { "failed: " (e.detail) } } }
            }
        }
    };
    Ok(page("Audit log", Some(&admin.who()), &admin.session.csrf, body))
}
