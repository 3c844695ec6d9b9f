//! User self-service: a mail user sees their access and the settings for their devices
//! (the autoconfig data, a QR code and an Apple profile download) and changes their
//! password under the policy (`user passwd`, the admin operation, after the current
//! password is checked).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use understudy_protocol::Secret;

use super::layout::{csrf_field, flash, page, qr};
use super::{AppError, Console, UserSession};
use crate::admin::audit::Action;
use crate::admin::users::{self, PasswordState};
use crate::autoconfig::{self, Settings};
use crate::config_types::Service;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/me", get(show))
        .route("/me/password", post(password))
        .route("/me/apple.mobileconfig", get(mobileconfig))
}

fn settings(console: &Console, address: &str) -> Option<Settings> {
    let shared = &console.shared;
    let bound = |service: Service| shared.bound_port(service);
    autoconfig::settings_with_ports(&shared.config, &shared.store, address, &bound)
}

async fn render(
    console: &Arc<Console>,
    me: &UserSession,
    message: Option<(bool, String)>,
) -> Result<Markup, AppError> {
    let address = me.address.clone();
    let c = console.clone();
    let ((report, settings), _) = console
        .run(None, move |ctx| {
            let report = users::show(ctx, &address)?;
            Ok((report, settings(&c, &address)))
        })
        .await?;
    // The port the autoconfig listener bound (the configured one may be 0).
    let bound = *console.shared.autoconfig_bound.lock();
    let autoconfig_url = bound
        .or_else(|| {
            console
                .shared
                .config
                .autoconfig
                .listen
                .as_ref()
                .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
        })
        .map(|a| {
            format!(
                "https://{}:{}/apple.mobileconfig?email={}",
                console.shared.config.hostname,
                a.port(),
                report.address
            )
        });
    let csrf = &me.session.csrf;
    let body = html! {
        @match &message {
            Some((true, m)) => (flash(Some(m))),
            Some((false, m)) => p class="error" role="alert" { (m) },
            None => {}
        }
        h2 { "Access" }
        table {
            tr { th { "Status" } td { (format!("{:?}", report.status).to_lowercase()) } }
            tr { th { "Access" } td id="access" { (format!("{:?}", report.access)) ", " (format!("{:?}", report.access_window)) } }
            tr { th { "Password" } td { (match report.password { PasswordState::NotSet => "not set", PasswordState::MustChange => "temporary: change it below", PasswordState::Set => "set" }) } }
        }
        h2 { "Change your password" }
        form method="post" action="/me/password" {
            (csrf_field(csrf))
            label { "Current password " input name="current" type="password" autocomplete="current-password" required; }
            label { "New password " input name="new" type="password" autocomplete="new-password" required; }
            label { "Repeat it " input name="repeat" type="password" autocomplete="new-password" required; }
            button { "Change password" }
        }
        h2 { "Settings for your devices" }
        @if let Some(s) = &settings { pre id="client-settings" { (autoconfig::describe(s)) } }
        p { a href="/me/apple.mobileconfig" download="understudy.mobileconfig" { "Profile for iPhone and iPad" } }
        @if let Some(url) = &autoconfig_url { p { "Or scan this with the phone's camera:" } (qr(url)) }
    };
    Ok(page(
        "Your mail account",
        Some(&super::session::Who::User {
            address: me.address.clone(),
        }),
        csrf,
        body,
    ))
}

pub async fn show(State(console): State<Arc<Console>>, me: UserSession) -> Result<Markup, AppError> {
    render(&console, &me, None).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    repeat: String,
}

pub async fn password(
    State(console): State<Arc<Console>>,
    me: UserSession,
    Form(f): Form<PasswordForm>,
) -> Result<Response, AppError> {
    super::check_csrf(&me.session, &f.csrf)?;
    let refused = |m: &str| Some((false, m.to_string()));
    let outcome = if f.new != f.repeat {
        refused("The two new passwords differ.")
    } else if let Err(rule) = crate::auth::check_policy(&console.shared.config.password_policy, &f.new) {
        refused(&format!("Not changed: {rule}."))
    } else {
        let address = me.address.clone();
        let (current, new) = (Secret::new(f.current), Secret::new(f.new));
        let result = console
            .run(
                Some((
                    Action::new("password change", &me.address),
                    format!("user:{}", me.address),
                    me.ip,
                )),
                move |ctx| {
                    let user = ctx
                        .store
                        .user_by_address(&address)?
                        .ok_or_else(|| anyhow::anyhow!("no such user"))?;
                    let ok = user
                        .password_hash
                        .as_deref()
                        .is_some_and(|h| crate::auth::verify_password(&current, h));
                    if !ok {
                        anyhow::bail!("the current password is not right");
                    }
                    let traits = crate::password_policy::PasswordTraits::of(new.expose());
                    let hash = crate::auth::hash_password(&new)?;
                    users::passwd(
                        ctx,
                        &address,
                        users::NewPassword::checked(ctx, hash, Some(traits))?,
                        false,
                    )
                },
            )
            .await;
        match result {
            Ok(_) => Some((
                true,
                "Password changed. Use the new one in your mail apps.".into(),
            )),
            Err(AppError::Failed(m)) => refused(&format!("Not changed: {m}.")),
            Err(e) => return Err(e),
        }
    };
    Ok(render(&console, &me, outcome).await?.into_response())
}

pub async fn mobileconfig(
    State(console): State<Arc<Console>>,
    me: UserSession,
) -> Result<Response, AppError> {
    let s = settings(&console, &me.address).ok_or(AppError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-apple-aspen-config"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"understudy.mobileconfig\"",
            ),
        ],
        autoconfig::apple(&s),
    )
        .into_response())
}
