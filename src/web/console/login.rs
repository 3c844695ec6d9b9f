//! Logging in and out: administrators (name, password, and a TOTP code when they have
//! one) at `/login`, mail users (address and password, checked by the same
//! authenticator as IMAP, with its throttle) at `/me/login`.
//!
//! No user enumeration: an unknown name, a wrong password, a wrong or missing code, a
//! deactivated user, a user without a password and a locked-out name all get the same
//! bytes (but for the token and the date) after the same argon2 work (an unknown name
//! is checked against a decoy hash) and, on the users' page, the same failure delay.
//! Both pages check passwords on the authenticator's bounded hash pool, like IMAP: a
//! full lane answers 503 "busy" at once, for every name alike. The forms carry a
//! double-submit token (cookie and field), and a successful login always starts a
//! session under a new id.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use understudy_protocol::{AuthError, Credentials, Secret};

use super::layout::{csrf_field, page};
use super::session::{self, random_token, set_cookie, Who, LOGIN_COOKIE, SESSION_COOKIE};
use super::{session_of, AppError, ClientIp, Console};
use crate::admin::audit::{self, Action};
use crate::auth::{Lane, LoginPacer};

const FAILED: &str = "Login failed: check what you typed and try again.";
const BUSY: &str = "The server is busy checking passwords: try again in a moment.";

#[derive(Deserialize)]
pub struct AdminLogin {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct UserLogin {
    #[serde(default)]
    address: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// A login page with a fresh double-submit token in its cookie and its form.
fn login_page(
    status: StatusCode,
    title: &str,
    form: impl FnOnce(&str) -> Markup,
    error: Option<&str>,
) -> Response {
    let token = random_token();
    let body = html! {
        @if let Some(e) = error { p class="error" role="alert" { (e) } }
        (form(&token))
    };
    (
        status,
        [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, 3600))],
        page(title, None, "", body),
    )
        .into_response()
}

fn admin_fields(token: &str) -> Markup {
    html! {
        form method="post" action="/login" {
            (csrf_field(token))
            label { "Name " input name="name" autocomplete="username" required; }
            label { "Password " input name="password" type="password" autocomplete="current-password" required; }
            label { "Code (if you use an authenticator app) " input name="code" inputmode="numeric" autocomplete="one-time-code"; }
            button type="submit" { "Log in" }
        }
        p { a href="/me/login" { "Mail users: your account" } }
    }
}

fn user_fields(token: &str) -> Markup {
    html! {
        form method="post" action="/me/login" {
            (csrf_field(token))
            label { "Email address " input name="address" type="email" autocomplete="username" required; }
            label { "Password " input name="password" type="password" autocomplete="current-password" required; }
            button type="submit" { "Log in" }
        }
    }
}

pub async fn admin_form() -> Response {
    login_page(StatusCode::OK, "Administrator login", admin_fields, None)
}

pub async fn user_form() -> Response {
    login_page(StatusCode::OK, "Your mail account", user_fields, None)
}

/// The double-submit check of a login form.
fn login_token_ok(headers: &HeaderMap, field: &str) -> bool {
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| session::cookie(c, LOGIN_COOKIE))
        .is_some_and(|cookie| !field.is_empty() && session::same_secret(cookie, field))
}

/// Answers a successful login: the session cookie (a new id), the login cookie gone.
async fn logged_in(console: &Arc<Console>, who: Who, to: &str) -> Response {
    let c = console.clone();
    let id = match tokio::task::spawn_blocking(move || c.sessions.create(who)).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return AppError::Internal(format!("cannot keep the session: {e}")).into_response(),
        Err(e) => return AppError::Internal(e.to_string()).into_response(),
    };
    let max = console
        .shared
        .config
        .web
        .as_ref()
        .map(|w| w.session_max_secs)
        .unwrap_or(43_200);
    let mut response = Redirect::to(to).into_response();
    let headers = response.headers_mut();
    for value in [
        set_cookie(SESSION_COOKIE, &id, i64::try_from(max).unwrap_or(43_200)),
        set_cookie(LOGIN_COOKIE, "", 0),
    ] {
        if let Ok(v) = value.parse() {
            headers.append(header::SET_COOKIE, v);
        }
    }
    response
}

pub async fn admin_login(
    State(console): State<Arc<Console>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<AdminLogin>,
) -> Response {
    if !login_token_ok(&headers, &form.csrf) {
        return login_page(
            StatusCode::FORBIDDEN,
            "Administrator login",
            admin_fields,
            Some(FAILED),
        );
    }
    let name: String = form.name.trim().chars().take(64).collect();
    let c = console.clone();
    let checked_name = name.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let store = &c.shared.store;
        let locked = c.throttle.locked(&checked_name, ip);
        let lane = if c.throttle.suspect(&checked_name, ip) {
            Lane::Suspect
        } else {
            Lane::Clean
        };
        let admin = store.admin(&checked_name).ok().flatten();
        let password = Secret::new(form.password);
        // The same argon2 work whether or not the name exists (a decoy hash), on the
        // bounded hash pool of the mail logins, never on the blocking pool other
        // requests need: a full lane is a temporary failure, whatever the name.
        let hash = admin.as_ref().map(|a| a.password_hash.as_str());
        let Ok(password_ok) = c.shared.auth.check_hash(&password, hash, lane) else {
            return AdminOutcome::Busy;
        };
        let now = store.now();
        let Some(mut admin) = admin.filter(|_| password_ok && !locked) else {
            return AdminOutcome::Failed;
        };
        if let Some(secret) = &admin.totp_secret {
            match crate::admin::admins::check_totp(secret, &form.code, now, admin.totp_last_step) {
                Some(step) => admin.totp_last_step = step,
                None => return AdminOutcome::Failed,
            }
        }
        admin.last_login = Some(now);
        if let Err(e) = store.update_admin(&admin) {
            tracing::warn!(error = %e, "cannot record the administrator's login");
        }
        AdminOutcome::LoggedIn(admin)
    })
    .await
    .unwrap_or(AdminOutcome::Failed);
    let store = console.shared.store.clone();
    let action = Action {
        action: "login".into(),
        target: name.clone(),
        domain: None,
    };
    match outcome {
        AdminOutcome::LoggedIn(admin) => {
            console.throttle.succeeded(&name);
            audit_async(store, name.clone(), ip, action, Ok(())).await;
            logged_in(
                &console,
                Who::Admin {
                    name: admin.name,
                    role: admin.role,
                    since: admin.created_at,
                    account_id: admin.account_id,
                },
                "/",
            )
            .await
        }
        // Nothing was checked: no failure counted, nothing audited (a flood must not
        // turn into synced writes); the same answer for every name.
        AdminOutcome::Busy => {
            tracing::info!(peer = %ip, "administrator login refused: password checks queue full");
            login_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Administrator login",
                admin_fields,
                Some(BUSY),
            )
        }
        AdminOutcome::Failed => {
            console.throttle.failed(&name, ip);
            audit_async(store, name, ip, action, Err("failed".into())).await;
            login_page(
                StatusCode::UNAUTHORIZED,
                "Administrator login",
                admin_fields,
                Some(FAILED),
            )
        }
    }
}

/// What an administrator's login came to.
enum AdminOutcome {
    LoggedIn(understudy_storage::admins::AdminAccount),
    Failed,
    /// The hash pool's lane was full: nothing checked.
    Busy,
}

async fn audit_async(
    store: understudy_storage::Store,
    actor: String,
    ip: std::net::IpAddr,
    action: Action,
    result: Result<(), String>,
) {
    let _ = tokio::task::spawn_blocking(move || {
        audit::record(
            &store,
            &actor,
            &ip.to_string(),
            &action,
            result.as_ref().map(|_| ()).map_err(String::as_str),
        )
    })
    .await;
}

pub async fn user_login(
    State(console): State<Arc<Console>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<UserLogin>,
) -> Response {
    if !login_token_ok(&headers, &form.csrf) {
        return login_page(
            StatusCode::FORBIDDEN,
            "Your mail account",
            user_fields,
            Some(FAILED),
        );
    }
    let username: String = form.address.trim().chars().take(320).collect();
    let c = console.clone();
    let checked = username.clone();
    // Paced like an IMAP login: a failure is answered after the throttle's delay for
    // the address (`[auth] failure_delay_ms`), waited here without holding a thread.
    let pacer = LoginPacer::default();
    let auth = pacer.auth(console.shared.auth.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let credentials = Credentials {
            username: checked.clone(),
            password: Secret::new(form.password),
            peer: ip,
            protocol: "web",
        };
        match auth.authenticate(&credentials) {
            Ok(account) => UserOutcome::LoggedIn(account.address),
            // The password was right; the self-service page is where a user with a
            // temporary password, or outside their access window, goes to see why.
            Err(
                AuthError::AccessDenied
                | AuthError::OutsideOutage
                | AuthError::PasswordChangeRequired
                | AuthError::TooManySessions,
            ) => c
                .shared
                .store
                .user_by_address(&checked)
                .ok()
                .flatten()
                .map_or(UserOutcome::Failed, |u| UserOutcome::LoggedIn(u.address)),
            // Nothing was checked (the hash pool's lane was full, or the store did not
            // answer): what IMAP answers NO [UNAVAILABLE], for every address alike.
            Err(AuthError::Temporary(_)) => UserOutcome::Busy,
            Err(_) => UserOutcome::Failed,
        }
    })
    .await
    .unwrap_or(UserOutcome::Failed);
    if let Some(delay) = pacer.take_delay() {
        tokio::time::sleep(delay).await;
    }
    match outcome {
        UserOutcome::LoggedIn(address) => logged_in(&console, Who::User { address }, "/me").await,
        UserOutcome::Busy => login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Your mail account",
            user_fields,
            Some(BUSY),
        ),
        UserOutcome::Failed => login_page(
            StatusCode::UNAUTHORIZED,
            "Your mail account",
            user_fields,
            Some(FAILED),
        ),
    }
}

/// What a mail user's login came to.
enum UserOutcome {
    LoggedIn(String),
    Failed,
    /// Nothing checked: a temporary failure.
    Busy,
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, AppError> {
    let Some((id, session)) = session_of(&console, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    super::check_csrf(&session, &form.csrf)?;
    super::end_session(&console, id).await;
    let to = match session.who {
        Who::Admin { .. } => "/login",
        Who::User { .. } => "/me/login",
    };
    Ok((
        [(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0))],
        Redirect::to(to),
    )
        .into_response())
}
