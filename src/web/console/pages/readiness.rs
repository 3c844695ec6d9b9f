//! The readiness page and its CSV export (`admin::readiness`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use crate::admin::readiness::{self, ReadinessReport};
use crate::web::console::layout::{page, time};
use crate::web::console::{AdminSession, AppError, Console};

async fn load(console: &Arc<Console>, admin: &AdminSession) -> Result<ReadinessReport, AppError> {
    let role = admin.role.clone();
    Ok(console
        .run(None, move |ctx| {
            readiness::report(ctx, &|d| role.covers(d), role.is_global())
        })
        .await?
        .0)
}

pub async fn show(State(console): State<Arc<Console>>, admin: AdminSession) -> Result<Markup, AppError> {
    let report = load(&console, &admin).await?;
    let body = html! {
        p { "Who could not log in on the day, and what would not work, as of " (time(report.now)) ". " a href="/readiness.csv" download="readiness.csv" { "Download as CSV" } }
        @if report.items.is_empty() { p { "Nothing found: ready." } }
        table id="readiness" {
            tr { th { "Kind" } th { "Subject" } th { "Problem" } }
            @for i in &report.items { tr { td { (i.kind) } td { (i.subject) } td { (i.problem) } } }
        }
    };
    Ok(page("Readiness", Some(&admin.who()), &admin.session.csrf, body))
}

pub async fn csv(State(console): State<Arc<Console>>, admin: AdminSession) -> Result<Response, AppError> {
    let report = load(&console, &admin).await?;
    let text = readiness::csv(&report).map_err(|e| AppError::Internal(format!("{e:#}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"readiness.csv\"",
            ),
        ],
        text,
    )
        .into_response())
}
