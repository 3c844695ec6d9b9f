//! The dashboard: every domain the administrator manages with its phase (normal,
//! outage, draining), since when and why, queue depth and oldest entry, whether the
//! queue is held, the last probe of the relay host (or relay attempt counted as one)
//! and the notices to the alert recipients since the current or last outage began
//! (`outage status`, the outage memo, the notices' tracking records).
//! Reloads itself every 10 seconds.

use std::sync::Arc;

use axum::extract::State;
use maud::{html, Markup, PreEscaped};
use understudy_storage::admins::AdminRole;
use understudy_storage::outage::OutagePhase;
use understudy_storage::outage_ops::OutageMemo;

use crate::admin::{outage, AdminContext};
use crate::outage::notify::{format_age, phase_name};
use crate::web::console::layout::{opt_time, page, time};
use crate::web::console::{AdminSession, AppError, Console};

/// Every domain `role` covers with its outage memo (the last probe, the notices sent),
/// for the dashboard and the API's domain list.
pub fn domains_with_memos(
    ctx: &AdminContext,
    role: &AdminRole,
) -> anyhow::Result<(outage::OutageStatus, Vec<OutageMemo>)> {
    let mut status = outage::status(ctx, None, false)?;
    status.domains.retain(|d| role.covers(&d.domain));
    let memos = status
        .domains
        .iter()
        .map(|d| ctx.store.outage_memo(&d.domain))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((status, memos))
}

/// A notice kind (`outage::notify`'s slug) as the dashboard names it.
fn notice_name(slug: &str) -> &str {
    match slug {
        "lost" => "outage began",
        "spooling" => "mail being spooled",
        "restored" => "primary back",
        "released" => "all spooled mail released",
        "reminder" => "still draining",
        other => other,
    }
}

pub async fn show(State(console): State<Arc<Console>>, admin: AdminSession) -> Result<Markup, AppError> {
    let role = admin.role.clone();
    let ((status, memos, notices), _) = console
        .run(None, move |ctx| {
            let (status, memos) = domains_with_memos(ctx, &role)?;
            let since: Vec<(String, i64)> = status
                .domains
                .iter()
                .zip(&memos)
                .filter_map(|(d, m)| Some((d.domain.clone(), m.outage_started_at?)))
                .collect();
            let notices = outage::notices_since(ctx, &since)?;
            Ok((status, memos, notices))
        })
        .await?;
    let now = status.now;
    let body = html! {
        // Reloads itself: no script, so it works with the console's script-free policy.
        (PreEscaped(r#"<meta http-equiv="refresh" content="10">"#))
        table id="domains" {
            tr { th { "Domain" } th { "Phase" } th { "Since" } th { "Why" } th { "Queued" } th { "Oldest" } th { "Held" } th { "Last probe" } th { "Notices" } }
            @for (d, memo) in status.domains.iter().zip(&memos) {
                @let phase = d.state.phase;
                tr data-domain=(d.domain) {
                    td { a href={"/domains/" (d.domain)} { (d.domain) } }
                    td class={"phase-" (phase_name(phase))} { (phase_name(phase)) }
                    td { (time(d.state.since)) }
                    td { (if d.state.manual && !d.state.reason.is_empty() { format!("manual: {}", d.state.reason) } else { d.state.reason.clone() }) }
                    td class="depth" { (d.queued) }
                    td { (d.oldest_relay.map(|t| format_age(now - t)).unwrap_or_else(|| "-".into())) }
                    td { @if d.domain_held { "held (" (d.held) ")" } @else { (d.held) } }
                    td class="probe" {
                        @match (memo.last_probe_at, &memo.last_probe_error) {
                            (None, _) => "-",
                            (Some(at), None) => { "answered " (time(at)) }
                            (Some(at), Some(why)) => { "failed " (time(at)) ": " (why) }
                        }
                    }
                    td class="notices" {
                        @match notices.get(&d.domain) {
                            Some(sent) => ul {
                                @for n in sent {
                                    li class={"notice-" (n.state)} { (notice_name(&n.kind)) " " (time(n.at)) ", " (n.state) " to " (n.to) }
                                }
                            },
                            None => { @if memo.outage_started_at.is_some() { "none sent; " } }
                        }
                        @if phase != OutagePhase::Normal && memo.spooling_notified_since.is_some() { "spooling notice sent; " }
                        "last reminder " (opt_time(memo.last_reminder_at))
                    }
                }
            }
        }
        @if status.domains.is_empty() { p { "No domains yet." } }
        p { "Updated " (time(now)) "." }
    };
    Ok(page("Dashboard", Some(&admin.who()), &admin.session.csrf, body))
}
