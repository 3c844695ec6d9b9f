//! The web console: admin pages, user self-service and the JSON API, each a thin layer
//! over the operations in `crate::admin` (the CLI and the admin socket run the same
//! functions). Server-rendered HTML (maud), plain forms, no script of its own.
//!
//! - [`session`]: sessions, cookies, CSRF tokens, the failed-login throttle;
//! - [`confirm`]: single-use confirmations of bulk queue actions;
//! - [`layout`]: the page frame and small HTML helpers;
//! - [`login`]: admin and user login and logout;
//! - [`pages`]: dashboard, domain, queue, tracking, users, readiness, audit;
//! - [`me`]: user self-service (password, access, client settings);
//! - [`api`]: the JSON API with token auth and its OpenAPI document.
//!
//! Every handler that changes something checks the session's CSRF token (or, in the
//! API, a token that is not read-only), checks the role's scope (a domain administrator
//! reaches only their domains, whatever the URL or form says), runs the admin operation
//! on the blocking pool and writes an audit entry.

pub mod api;
pub mod confirm;
pub mod layout;
pub mod login;
pub mod me;
pub mod pages;
pub mod session;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use understudy_storage::admins::AdminRole;

use self::session::{LoginThrottle, Session, Sessions, Who, SESSION_COOKIE};
use crate::admin::audit::{self, Action};
use crate::admin::{AdminContext, AdminEvents};
use crate::outage::handles::MonitorWake;
use crate::shared::Shared;

/// What every console request reaches.
pub struct Console {
    pub shared: Arc<Shared>,
    pub monitor: MonitorWake,
    /// Wakes the queue runner after a change it should act on now.
    pub queue_wakeup: crate::delivery::QueueWakeup,
    pub sessions: Sessions,
    pub throttle: LoginThrottle,
    /// CSV imports in progress or done, by job id (`pages::users`).
    pub imports: Mutex<std::collections::HashMap<String, Arc<pages::users::ImportJob>>>,
    /// Failover drills in progress or done, by job id (`pages::drill`).
    pub drills: Mutex<std::collections::HashMap<String, Arc<pages::drill::DrillJob>>>,
    /// Confirmations of bulk queue actions handed out (`confirm`).
    pub confirmations: confirm::Confirmations,
}

/// A long operation's progress, written by the operation, read by the page.
#[derive(Default)]
pub struct Progress {
    pub done: std::sync::atomic::AtomicU64,
    pub total: std::sync::atomic::AtomicU64,
}

impl Console {
    pub fn new(
        shared: Arc<Shared>,
        monitor: MonitorWake,
        queue_wakeup: crate::delivery::QueueWakeup,
    ) -> Arc<Console> {
        let web = shared.config.web.clone().unwrap_or_default();
        Arc::new(Console {
            sessions: Sessions::new(
                shared.store.clone(),
                shared.clock.clone(),
                web.session_idle_secs,
                web.session_max_secs,
            ),
            throttle: LoginThrottle::new(shared.clock.clone(), web.max_failures, web.lockout_secs),
            confirmations: confirm::Confirmations::new(shared.store.clone(), shared.clock.clone()),
            shared,
            monitor,
            queue_wakeup,
            imports: Mutex::new(std::collections::HashMap::new()),
            drills: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Runs an admin operation on the blocking pool. `audited`: the action to record
    /// (with its outcome) for `actor` from `source`. Returns the value and the secrets
    /// the operation produced (generated passwords, shown once).
    pub async fn run<T, F>(
        self: &Arc<Self>,
        audited: Option<(Action, String, IpAddr)>,
        op: F,
    ) -> Result<(T, String), AppError>
    where
        T: Send + 'static,
        F: FnOnce(&AdminContext) -> anyhow::Result<T> + Send + 'static,
    {
        self.run_with_progress(audited, None, op).await
    }

    /// As [`Console::run`], the operation's progress reported into `progress`.
    pub async fn run_with_progress<T, F>(
        self: &Arc<Self>,
        audited: Option<(Action, String, IpAddr)>,
        progress: Option<Arc<Progress>>,
        op: F,
    ) -> Result<(T, String), AppError>
    where
        T: Send + 'static,
        F: FnOnce(&AdminContext) -> anyhow::Result<T> + Send + 'static,
    {
        let console = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let events = WebEvents {
                console: &console,
                secrets: Mutex::new(String::new()),
                progress,
            };
            let ctx = AdminContext {
                store: &console.shared.store,
                config: &console.shared.config,
                events: &events,
            };
            let result = op(&ctx);
            if let Some((action, actor, ip)) = &audited {
                let error = result.as_ref().err().map(|e| format!("{e:#}"));
                audit::record(
                    &console.shared.store,
                    actor,
                    &ip.to_string(),
                    action,
                    error.as_deref().map_or(Ok(()), Err),
                );
            }
            result.map(|v| (v, events.secrets.into_inner()))
        })
        .await;
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(AppError::Failed(format!("{e:#}"))),
            Err(e) => Err(AppError::Internal(e.to_string())),
        }
    }
}

/// Side effects of admin operations run by the console, as in the admin socket.
struct WebEvents<'a> {
    console: &'a Console,
    secrets: Mutex<String>,
    progress: Option<Arc<Progress>>,
}

impl AdminEvents for WebEvents<'_> {
    fn revoked(&self, user_id: u64) {
        // No receiver means no connection is open: nothing to end.
        let _ = self.console.shared.revocations.send(user_id);
    }
    fn progress(&self, done: u64, total: u64) {
        if let Some(p) = &self.progress {
            p.done.store(done, std::sync::atomic::Ordering::Relaxed);
            p.total.store(total, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn secret(&self, line: &str) {
        let mut s = self.secrets.lock();
        s.push_str(line);
        s.push('\n');
    }
    fn outage_changed(&self) {
        self.console.monitor.wake();
        // The transition's notice is queued already: send it now, not at the next poll.
        self.console.queue_wakeup.notify_one();
    }
    fn queue_changed(&self) {
        self.console.queue_wakeup.notify_one();
    }
}

/// Why a console request failed, as the page (or status) the browser gets.
#[derive(Debug)]
pub enum AppError {
    /// Not logged in (or the session expired): to this login page.
    Login(&'static str),
    /// Outside the role's scope. Answered like a missing page, so a domain administrator
    /// cannot probe which other domains exist.
    NotFound,
    /// A state change without the session's CSRF token.
    Csrf,
    /// The operation refused (its message is for the administrator).
    Failed(String),
    Internal(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::Login(to) => return Redirect::to(to).into_response(),
            AppError::NotFound => (StatusCode::NOT_FOUND, "Not found.".to_string()),
            AppError::Csrf => (
                StatusCode::FORBIDDEN,
                "The form had expired or did not come from this console; reload the page and try again."
                    .to_string(),
            ),
            AppError::Failed(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            AppError::Internal(e) => {
                tracing::error!(error = %e, "console request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong; see the server log.".into(),
                )
            }
        };
        (status, layout::message_page("Error", &message)).into_response()
    }
}

/// A logged-in administrator (the extractor redirects to `/login` otherwise).
pub struct AdminSession {
    pub name: String,
    pub role: AdminRole,
    /// The account's creation time (see [`Who::Admin`]).
    pub since: i64,
    pub account_id: String,
    pub session: Session,
    /// The session's id: what a bulk confirmation is bound to.
    pub session_id: String,
    pub ip: IpAddr,
}

impl AdminSession {
    /// Fails (as "not found") unless the role covers `domain`.
    pub fn require(&self, domain: &str) -> Result<(), AppError> {
        if self.role.covers(domain) {
            Ok(())
        } else {
            Err(AppError::NotFound)
        }
    }

    /// A change to `domain` from a form: the role must cover the domain and `token`
    /// must be this session's CSRF token.
    pub fn may_change(&self, domain: &str, token: &str) -> Result<(), AppError> {
        self.require(domain)?;
        self.csrf(token)
    }

    /// Fails unless `token` is this session's CSRF token.
    pub fn csrf(&self, token: &str) -> Result<(), AppError> {
        check_csrf(&self.session, token)
    }

    /// The audit tuple for [`Console::run`].
    pub fn audit(&self, action: Action) -> Option<(Action, String, IpAddr)> {
        Some((action, self.name.clone(), self.ip))
    }

    /// Who a bulk confirmation shown to this session belongs to.
    pub fn confirmation_owner(&self) -> String {
        // The id's hash: the owner is kept in the store, the id never is.
        format!("session {}", hex::encode(session::secret_hash(&self.session_id)))
    }

    pub fn who(&self) -> Who {
        Who::Admin {
            name: self.name.clone(),
            role: self.role.clone(),
            since: self.since,
            account_id: self.account_id.clone(),
        }
    }
}

pub fn check_csrf(session: &Session, token: &str) -> Result<(), AppError> {
    if session::same_secret(&session.csrf, token) {
        Ok(())
    } else {
        Err(AppError::Csrf)
    }
}

/// The session named by the request's cookie, if it is live (read from the store).
pub async fn session_of(
    console: &Arc<Console>,
    headers: &HeaderMap,
) -> Result<Option<(String, Session)>, AppError> {
    let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|cookies| session::cookie(cookies, SESSION_COOKIE))
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let (c, wanted) = (console.clone(), id.clone());
    let session = tokio::task::spawn_blocking(move || c.sessions.get(&wanted))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(format!("reading the session: {e}")))?;
    Ok(session.map(|s| (id, s)))
}

/// Ends the session with this id (in the store; a failure is logged).
pub async fn end_session(console: &Arc<Console>, id: String) {
    let c = console.clone();
    match tokio::task::spawn_blocking(move || c.sessions.remove(&id)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot end a console session"),
        Err(e) => tracing::warn!(error = %e, "cannot end a console session"),
    }
}

fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<crate::web::Peer>()
        .map(|p| p.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

impl FromRequestParts<Arc<Console>> for AdminSession {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, AppError> {
        let Some((id, session)) = session_of(console, &parts.headers).await? else {
            return Err(AppError::Login("/login"));
        };
        let Who::Admin {
            name,
            role,
            since,
            account_id,
        } = session.who.clone()
        else {
            return Err(AppError::Login("/login"));
        };
        // The account as the store has it now, read on every request: an administrator
        // removed (here, through the admin socket, or on another node), or replaced
        // under the same name, or given another role, is logged out at once.
        let store = console.shared.store.clone();
        let wanted = name.clone();
        let account = tokio::task::spawn_blocking(move || store.admin(&wanted))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .map_err(|e| AppError::Internal(format!("reading administrator {name}: {e}")))?;
        match account {
            Some(a) if a.created_at == since && a.account_id == account_id && a.role == role => {
                Ok(AdminSession {
                    name,
                    role,
                    since,
                    account_id,
                    ip: peer_ip(parts),
                    session,
                    session_id: id,
                })
            }
            _ => {
                end_session(console, id).await;
                Err(AppError::Login("/login"))
            }
        }
    }
}

/// A logged-in mail user on the self-service pages.
pub struct UserSession {
    pub address: String,
    pub session: Session,
    pub ip: IpAddr,
}

impl FromRequestParts<Arc<Console>> for UserSession {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, AppError> {
        let Some((id, session)) = session_of(console, &parts.headers).await? else {
            return Err(AppError::Login("/me/login"));
        };
        let Who::User { address } = session.who.clone() else {
            return Err(AppError::Login("/me/login"));
        };
        // As for administrators: a user removed or deactivated is logged out at once.
        let store = console.shared.store.clone();
        let wanted = address.clone();
        let user = tokio::task::spawn_blocking(move || store.user_by_address(&wanted))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .map_err(|e| AppError::Internal(format!("reading user {address}: {e}")))?;
        if !user.is_some_and(|u| u.is_active()) {
            end_session(console, id).await;
            return Err(AppError::Login("/me/login"));
        }
        Ok(UserSession {
            address,
            ip: peer_ip(parts),
            session,
        })
    }
}

/// The client address of a request (for login throttling and the audit log).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(peer_ip(parts)))
    }
}

/// Headers every console response carries: no framing (clickjacking), no sniffing, no
/// referrer leaking query strings, no caching of pages with personal data, and a
/// content security policy that allows no script at all.
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("strict-transport-security", "max-age=31536000"),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    response
}

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    let upload = console
        .shared
        .config
        .web
        .as_ref()
        .map(|w| w.max_upload_bytes)
        .unwrap_or(8 * 1024 * 1024);
    Router::new()
        .route("/style.css", get(layout::stylesheet))
        .route("/login", get(login::admin_form).post(login::admin_login))
        .route("/logout", post(login::logout))
        .route("/me/login", get(login::user_form).post(login::user_login))
        .merge(pages::routes())
        .merge(me::routes())
        .merge(api::routes())
        .fallback(|| async { AppError::NotFound })
        .layer(axum::middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(upload))
        .with_state(console)
}
