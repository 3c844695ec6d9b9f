//! One domain: its settings (`domain set`), outage start and stop with a reason
//! (`outage start|stop`), the failover drill's form (`drill`), and a DKIM key with the
//! DNS records to publish (`domain dkim-keygen`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Form;
use clap::ValueEnum;
use maud::{html, Markup};
use serde::Deserialize;
use understudy_storage::Domain;

use super::filled;
use crate::admin::audit::Action;
use crate::admin::domains::{self, DomainCommand, DomainSettings};
use crate::admin::outage::{self, ManualChange, OutageCommand};
use crate::admin::Command;
use crate::outage::notify::phase_name;
use crate::web::console::layout::{csrf_field, flash, page, time};
use crate::web::console::{AdminSession, AppError, Console};

fn choice<T: ValueEnum>(value: &str) -> Result<Option<T>, AppError> {
    match filled(value) {
        None => Ok(None),
        Some(v) => T::from_str(&v, true)
            .map(Some)
            .map_err(|_| AppError::Failed(format!("'{v}' is not one of the choices"))),
    }
}

fn number(value: &str) -> Result<Option<u32>, AppError> {
    match filled(value) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| AppError::Failed(format!("'{v}' is not a number"))),
    }
}

async fn render(
    console: &Arc<Console>,
    admin: &AdminSession,
    name: &str,
    message: Option<String>,
) -> Result<Markup, AppError> {
    admin.require(name)?;
    let wanted = name.to_string();
    let ((domain, state), _) = console
        .run(None, move |ctx| {
            let d = domains::show(ctx, &wanted)?;
            let s = ctx.store.outage_state(&d.name)?;
            Ok((d, s))
        })
        .await
        .map_err(|_| AppError::NotFound)?;
    let csrf = &admin.session.csrf;
    let d = &domain;
    let body = html! {
        (flash(message.as_deref()))
        p { "Phase: " strong class={"phase-" (phase_name(state.phase))} { (phase_name(state.phase)) }
            " since " (time(state.since)) @if !state.reason.is_empty() { " — " (state.reason) } }
        fieldset {
            legend { "Outage" }
            form method="post" action={"/domains/" (d.name) "/outage"} {
                (csrf_field(csrf))
                label { "Reason " input name="reason" value="maintenance"; }
                button name="action" value="start" { "Start outage" }
                " "
                button name="action" value="stop" { "Stop outage" }
            }
        }
        (super::drill::form(&d.name, csrf))
        (settings_form(d, csrf))
        fieldset {
            legend { "DKIM" }
            p { "Selector: " (d.dkim_selector.as_deref().unwrap_or("-")) ", key: " (d.dkim_key_path.as_deref().unwrap_or("-")) }
            form method="post" action={"/domains/" (d.name) "/dkim"} {
                (csrf_field(csrf))
                label { "Selector " input name="selector" value="understudy"; }
                button { "Make a new key" }
            }
        }
    };
    Ok(page(
        &format!("Domain {}", d.name),
        Some(&admin.who()),
        csrf,
        body,
    ))
}

fn settings_form(d: &Domain, csrf: &str) -> Markup {
    let select = |name: &str, current: String, options: &[&str]| {
        html! {
            select name=(name) {
                @for o in options { option value=(o) selected[current.eq_ignore_ascii_case(&o.replace('-', ""))] { (o) } }
            }
        }
    };
    html! {
        fieldset {
            legend { "Settings" }
            form method="post" action={"/domains/" (d.name) "/settings"} {
                (csrf_field(csrf))
                label { "Mode " (select("mode", format!("{:?}", d.delivery_mode), &["relay", "both"])) }
                label { "Relay host " input name="relay_host" value=(d.relay_host.clone().unwrap_or_default()); }
                label { "Relay TLS " (select("relay_tls", format!("{:?}", d.relay_tls), &["opportunistic", "required", "disabled"])) }
                label { "Engagement " (select("engagement", format!("{:?}", d.engagement), &["automatic", "manual"])) }
                label { "Monitoring " (select("monitoring", d.monitoring.to_string(), &["true", "false"])) }
                label { "Probe every (s) " input name="probe_interval" value=(d.probe_interval_secs); }
                label { "Failures before an outage " input name="failures" value=(d.failures_before_engage); }
                label { "Successes before recovery " input name="successes" value=(d.successes_before_recover); }
                label { "Alert recipients (comma-separated, up to four) " input name="alerts" value=(d.alert_recipients.join(", ")); }
                label { "Access " (select("access", format!("{:?}", d.access), &["full", "read-only", "none"])) }
                label { "Access window " (select("access_window", format!("{:?}", d.access_window), &["always", "outage-only"])) }
                label { "Retention (days) " input name="retention_days" value=(d.retention_days); }
                label { "Queue lifetime (days) " input name="queue_lifetime_days" value=(d.queue_lifetime_days); }
                button { "Save settings" }
            }
        }
    }
}

pub async fn show(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path(name): Path<String>,
) -> Result<Markup, AppError> {
    render(&console, &admin, &name, None).await
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    relay_host: Option<String>,
    #[serde(default)]
    relay_tls: String,
    #[serde(default)]
    engagement: String,
    #[serde(default)]
    monitoring: String,
    #[serde(default)]
    probe_interval: String,
    #[serde(default)]
    failures: String,
    #[serde(default)]
    successes: String,
    #[serde(default)]
    alerts: String,
    #[serde(default)]
    access: String,
    #[serde(default)]
    access_window: String,
    #[serde(default)]
    retention_days: String,
    #[serde(default)]
    queue_lifetime_days: String,
}

pub async fn settings(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path(name): Path<String>,
    Form(f): Form<SettingsForm>,
) -> Result<Response, AppError> {
    admin.may_change(&name, &f.csrf)?;
    let settings = DomainSettings {
        mode: choice(&f.mode)?,
        relay_host: f.relay_host.map(|h| h.trim().to_string()),
        relay_tls: choice(&f.relay_tls)?,
        engagement: choice(&f.engagement)?,
        monitoring: match filled(&f.monitoring).as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(v) => return Err(AppError::Failed(format!("'{v}' is not true or false"))),
        },
        probe_interval: number(&f.probe_interval)?,
        failures: number(&f.failures)?,
        successes: number(&f.successes)?,
        alerts: f.alerts.split(',').filter_map(filled).collect(),
        access: choice(&f.access)?,
        access_window: choice(&f.access_window)?,
        retention_days: number(&f.retention_days)?,
        queue_lifetime_days: number(&f.queue_lifetime_days)?,
        dkim_selector: None,
        dkim_key: None,
        redeliver_deleted: None,
        save_sent: None,
    };
    let wanted = name.clone();
    let result = console
        .run(admin.audit(Action::new("domain set", &name)), move |ctx| {
            domains::set(ctx, &wanted, &settings)
        })
        .await
        .map(|_| "Settings saved.".to_string());
    answer(&console, &admin, &name, result).await
}

/// The domain page again with what a change did, or why the operation refused it.
async fn answer(
    console: &Arc<Console>,
    admin: &AdminSession,
    name: &str,
    result: Result<String, AppError>,
) -> Result<Response, AppError> {
    let message = match result {
        Ok(m) | Err(AppError::Failed(m)) => m,
        Err(e) => return Err(e),
    };
    Ok(render(console, admin, name, Some(message)).await?.into_response())
}

/// Runs an outage start or stop (the drill's too).
pub fn run_outage(ctx: &crate::admin::AdminContext, command: OutageCommand) -> anyhow::Result<ManualChange> {
    match command {
        OutageCommand::Start { domain, reason } => outage::start(ctx, &domain, reason),
        OutageCommand::Stop { domain, reason } => outage::stop(ctx, &domain, reason),
        OutageCommand::Status { .. } => anyhow::bail!("not a change"),
    }
}

/// What an outage start or stop did, as the page and the drill say it.
pub fn change_text(c: &ManualChange) -> String {
    if c.already {
        return format!("{} is already in a manual outage.", c.domain);
    }
    format!(
        "{}: {} since {}{}",
        c.domain,
        phase_name(c.state.phase),
        time(c.state.since),
        if c.no_recipients {
            " (no alert recipients: nobody was notified)"
        } else {
            ""
        }
    )
}

#[derive(Deserialize)]
pub struct OutageForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

pub async fn outage(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path(name): Path<String>,
    Form(f): Form<OutageForm>,
) -> Result<Response, AppError> {
    admin.may_change(&name, &f.csrf)?;
    let reason = filled(&f.reason).unwrap_or_else(|| format!("by {} in the console", admin.name));
    let command = match f.action.as_str() {
        "start" => OutageCommand::Start {
            domain: name.clone(),
            reason,
        },
        "stop" => OutageCommand::Stop {
            domain: name.clone(),
            reason,
        },
        _ => return Err(AppError::Failed("unknown action".into())),
    };
    let audit = admin.audit(Action::of(&Command::Outage(command.clone())));
    let result = console
        .run(audit, move |ctx| run_outage(ctx, command))
        .await
        .map(|(c, _)| change_text(&c));
    answer(&console, &admin, &name, result).await
}

#[derive(Deserialize)]
pub struct DkimForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    selector: String,
}

pub async fn dkim(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path(name): Path<String>,
    Form(f): Form<DkimForm>,
) -> Result<Response, AppError> {
    admin.may_change(&name, &f.csrf)?;
    let selector = filled(&f.selector).unwrap_or_else(|| "understudy".into());
    let command = Command::Domain(DomainCommand::DkimKeygen {
        name: name.clone(),
        selector: selector.clone(),
    });
    let wanted = name.clone();
    let (key, _) = console
        .run(admin.audit(Action::of(&command)), move |ctx| {
            domains::dkim_keygen(ctx, &wanted, &selector)
        })
        .await?;
    let body = html! {
        p { "A new key was written to " code { (key.key_path.display()) } ". Publish these records:" }
        pre { (key.selector) "._domainkey." (key.domain) ". IN TXT \"" (key.txt) "\"\n"
              (key.domain) ". IN TXT \"v=spf1 mx a:" (key.hostname) " ~all\"" }
        p { a href={"/domains/" (key.domain)} { "Back to " (key.domain) } }
    };
    Ok(page("DKIM key", Some(&admin.who()), &admin.session.csrf, body).into_response())
}
