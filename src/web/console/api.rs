//! The JSON API (`/api/v1`) for scripts: the same operations as the pages (outage
//! status, start and stop; the queue and its bulk actions; users; tracking; readiness),
//! authenticated by an
//! API token (`Authorization: Bearer us_…`, made with `admin token add`) and scoped like
//! its administrator's role; a read-only token may only read. Described by an OpenAPI
//! document generated from these handlers (`/api/v1/openapi.json`, utoipa). Every
//! error, extractor rejections included, is JSON `{"error": "…"}` with a documented
//! status.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use understudy_storage::admins::AdminRole;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{AppError, ClientIp, Console};
use crate::admin::audit::{domain_of, Action};
use crate::admin::queue::{BulkAction, QueueFilter};
use crate::admin::readiness::{self, ReadinessItem, ReadinessReport};
use crate::admin::{outage, queue, tracking, users};
use crate::outage::notify::phase_name;
use crate::web::console::confirm::Selection;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/domains", get(domains))
        .route("/api/v1/domains/{domain}/outage", post(set_outage))
        .route("/api/v1/queue", get(queue_list))
        .route("/api/v1/queue/bulk/preview", post(bulk_preview))
        .route("/api/v1/queue/bulk/confirm", post(bulk_confirm))
        .route("/api/v1/queue/{id}/{action}", post(queue_action))
        .route("/api/v1/users", get(user_list).post(user_add))
        .route("/api/v1/tracking", get(track))
        .route("/api/v1/readiness", get(readiness_report))
        .route(
            "/api/v1/{*rest}",
            axum::routing::any(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") }),
        )
        .layer(axum::middleware::from_fn(read_body_first))
}

/// Largest API request body (JSON of one operation).
const MAX_API_BODY: usize = 1024 * 1024;

/// Reads every request body whole before any handler runs. A handler that refuses a
/// request early (no token, wrong content type) would otherwise answer with the body
/// still arriving: hyper then closes the connection and the client, still sending,
/// gets a reset instead of the answer.
async fn read_body_first(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_API_BODY).await {
        Ok(bytes) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Err(_) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or cut off").into_response()
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Understudy console API", version = "1", description = "Outages, queue, users, tracking and readiness of an Understudy email continuity server."),
    paths(domains, set_outage, queue_list, queue_action, bulk_preview, bulk_confirm, user_list, user_add, track, readiness_report),
    components(schemas(ErrorBody, DomainStatus, OutageRequest, OutageResult, QueueItem, QueueRecipientItem, QueueActionResult, QueueFilter, BulkAction, BulkRequest, BulkConfirm, BulkPreview, BulkResult, UserItem, NewUser, UserCreated, TrackedItem, EventItem, ReadinessReport, ReadinessItem)),
    modifiers(&BearerAuth),
    security(("token" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "token",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()).into_response(),
    }
}

/// Every error the API answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: &str) -> ApiError {
        ApiError(status, message.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        match e {
            AppError::Login(_) => ApiError::new(StatusCode::UNAUTHORIZED, "a valid API token is needed"),
            AppError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not found"),
            AppError::Csrf => ApiError::new(StatusCode::FORBIDDEN, "forbidden"),
            AppError::Failed(m) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, m),
            AppError::Internal(m) => {
                tracing::error!(error = %m, "api request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

/// The caller: a token's administrator, with the token's limits.
pub struct ApiCaller {
    name: String,
    role: AdminRole,
    read_only: bool,
    token_id: String,
    ip: IpAddr,
}

impl ApiCaller {
    /// Who a bulk confirmation given to this token belongs to.
    fn confirmation_owner(&self) -> String {
        format!("token {}", self.token_id)
    }

    fn require(&self, domain: &str) -> Result<(), ApiError> {
        if self.role.covers(domain) {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::NOT_FOUND, "not found"))
        }
    }

    fn write(&self, action: Action) -> Result<Option<(Action, String, IpAddr)>, ApiError> {
        if self.read_only {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "this token may only read"));
        }
        Ok(Some((
            action,
            format!("{} (token {})", self.name, self.token_id),
            self.ip,
        )))
    }
}

impl FromRequestParts<Arc<Console>> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, ApiError> {
        let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "a valid API token is needed");
        let ClientIp(ip) = ClientIp::from_request_parts(parts, console)
            .await
            .unwrap_or(ClientIp(IpAddr::from([0, 0, 0, 0])));
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 200)
            .ok_or_else(unauthorized)?
            .to_string();
        let store = console.shared.store.clone();
        let found = tokio::task::spawn_blocking(move || {
            let token = store
                .api_token(&crate::admin::admins::token_hash(&secret))
                .ok()
                .flatten()?;
            let admin = store.admin(&token.admin).ok().flatten()?;
            Some((token, admin))
        })
        .await
        .ok()
        .flatten();
        let (token, admin) = found.ok_or_else(unauthorized)?;
        Ok(ApiCaller {
            name: admin.name,
            role: admin.role,
            read_only: token.read_only,
            token_id: token.id,
            ip,
        })
    }
}

/// A domain's outage state and queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainStatus {
    pub domain: String,
    /// normal, outage or draining.
    pub phase: String,
    /// Unix seconds; 0 if never changed.
    pub since: i64,
    pub reason: String,
    pub manual: bool,
    pub queued: u64,
    pub oldest_queued: Option<i64>,
    pub held: u64,
    pub domain_held: bool,
    /// Unix seconds of the last probe of the relay host (or relay attempt counted as
    /// one); absent: none yet.
    pub last_probe_at: Option<i64>,
    /// Why that probe failed; absent: it answered (or there was none).
    pub last_probe_error: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/domains", tag = "outage",
    responses((status = 200, description = "Every domain the token may see", body = [DomainStatus]),
              (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn domains(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
) -> Result<Json<Vec<DomainStatus>>, ApiError> {
    let role = caller.role.clone();
    let ((status, memos), _) = console
        .run(None, move |ctx| {
            super::pages::dashboard::domains_with_memos(ctx, &role)
        })
        .await?;
    Ok(Json(
        status
            .domains
            .into_iter()
            .zip(memos)
            .map(|(d, memo)| DomainStatus {
                last_probe_at: memo.last_probe_at,
                last_probe_error: memo.last_probe_at.and(memo.last_probe_error),
                phase: phase_name(d.state.phase).to_string(),
                since: d.state.since,
                reason: d.state.reason,
                manual: d.state.manual,
                queued: d.queued as u64,
                oldest_queued: d.oldest_relay,
                held: d.held as u64,
                domain_held: d.domain_held,
                domain: d.domain,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OutageRequest {
    /// start or stop.
    pub action: OutageAction,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutageAction {
    Start,
    Stop,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutageResult {
    pub domain: String,
    pub phase: String,
    /// Already in a manual outage: nothing changed.
    pub already: bool,
    /// Nobody was notified: no alert recipients.
    pub no_recipients: bool,
}

#[utoipa::path(post, path = "/api/v1/domains/{domain}/outage", tag = "outage",
    params(("domain" = String, Path, description = "A protected domain")),
    request_body = OutageRequest,
    responses((status = 200, body = OutageResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 500, body = ErrorBody)))]
async fn set_outage(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
    domain: Result<Path<String>, PathRejection>,
    body: Result<Json<OutageRequest>, JsonRejection>,
) -> Result<Json<OutageResult>, ApiError> {
    let Path(domain) = domain?;
    let Json(body) = body?;
    caller.require(&domain)?;
    let verb = match body.action {
        OutageAction::Start => "outage start",
        OutageAction::Stop => "outage stop",
    };
    let audit = caller.write(Action::new(verb, &domain))?;
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| format!("by {} (API)", caller.name));
    let (c, _) = console
        .run(audit, move |ctx| match body.action {
            OutageAction::Start => outage::start(ctx, &domain, reason),
            OutageAction::Stop => outage::stop(ctx, &domain, reason),
        })
        .await?;
    Ok(Json(OutageResult {
        phase: phase_name(c.state.phase).to_string(),
        domain: c.domain,
        already: c.already,
        no_recipients: c.no_recipients,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DomainFilter {
    /// Only this domain.
    pub domain: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueRecipientItem {
    pub address: String,
    /// pending, delivered or failed.
    pub status: String,
    pub attempts: u64,
    pub last_reply: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueItem {
    pub id: u64,
    /// relay, outbound or notification.
    pub kind: String,
    pub domain: String,
    pub mail_from: String,
    pub message_id: Option<String>,
    pub size: u64,
    pub created_at: i64,
    pub next_attempt: i64,
    pub held: bool,
    pub recipients: Vec<QueueRecipientItem>,
}

#[utoipa::path(get, path = "/api/v1/queue", tag = "queue", params(DomainFilter),
    responses((status = 200, body = [QueueItem]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn queue_list(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
    filter: Result<Query<DomainFilter>, QueryRejection>,
) -> Result<Json<Vec<QueueItem>>, ApiError> {
    let Query(filter) = filter?;
    if let Some(d) = &filter.domain {
        caller.require(d)?;
    }
    let role = caller.role.clone();
    let (listing, _) = console
        .run(None, move |ctx| queue::list(ctx, filter.domain.as_deref()))
        .await?;
    Ok(Json(
        listing
            .entries
            .into_iter()
            .filter(|e| role.covers(&e.entry.domain))
            .map(|listed| queue_item(listed.entry))
            .collect(),
    ))
}

fn queue_item(e: understudy_storage::QueueEntry) -> QueueItem {
    QueueItem {
        id: e.id,
        kind: format!("{:?}", e.kind).to_lowercase(),
        recipients: e
            .recipients
            .iter()
            .map(|r| QueueRecipientItem {
                address: r.address.clone(),
                status: format!("{:?}", r.status).to_lowercase(),
                attempts: u64::from(r.attempts),
                last_reply: r.last_reply.clone(),
            })
            .collect(),
        domain: e.domain,
        mail_from: e.mail_from,
        message_id: e.message_id,
        size: e.size,
        created_at: e.created_at,
        next_attempt: e.next_attempt,
        held: e.held,
    }
}

/// A bulk action asked for: the action, the filter, and (optionally) the entries
/// ticked among those it matches.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct BulkRequest {
    pub action: BulkAction,
    #[serde(default)]
    pub filter: QueueFilter,
    /// Only these entries of those the filter matches; absent: every entry it matches.
    #[serde(default)]
    pub ids: Option<Vec<u64>>,
}

impl BulkRequest {
    fn selection(&self) -> Selection {
        Selection::new(self.action, &self.filter, self.ids.clone())
    }
}

/// A bulk action confirmed: the request exactly as previewed, with the confirmation
/// the preview gave.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkConfirm {
    #[serde(flatten)]
    pub request: BulkRequest,
    pub confirmation: String,
}

/// What a bulk action would change, and the confirmation that makes it act.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkPreview {
    pub action: BulkAction,
    /// The filter as it is compared (trimmed, lower-cased).
    pub filter: QueueFilter,
    /// The filter in words.
    pub description: String,
    /// How many entries it would change: those listed, not mail arriving meanwhile.
    pub count: u64,
    pub entries: Vec<QueueItem>,
    /// Single use, for this API token, this action and this selection only.
    pub confirmation: String,
    /// Unix seconds after which the confirmation is refused.
    pub expires_at: i64,
}

/// What a confirmed bulk action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    pub action: BulkAction,
    /// Entries changed.
    pub changed: u64,
    /// Entries listed in the preview and no longer queued.
    pub gone: Vec<u64>,
    /// Entries left as they were, each with why.
    pub unchanged: Vec<String>,
    pub message: String,
}

fn refused(e: anyhow::Error) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
}

#[utoipa::path(post, path = "/api/v1/queue/bulk/preview", tag = "queue", request_body = BulkRequest,
    responses((status = 200, description = "The entries the action would change, and its confirmation", body = BulkPreview),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn bulk_preview(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
    body: Result<Json<BulkRequest>, JsonRejection>,
) -> Result<Json<BulkPreview>, ApiError> {
    let Json(body) = body?;
    if caller.read_only {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this token may only read"));
    }
    let selection = body.selection();
    let filter = selection.filter.clone();
    filter.check().map_err(refused)?;
    let domain = (!filter.domain.is_empty()).then(|| filter.domain.clone());
    if let Some(d) = &domain {
        caller.require(d)?;
    }
    let role = caller.role.clone();
    let (listing, _) = console
        .run(None, move |ctx| queue::list(ctx, domain.as_deref()))
        .await?;
    let now = listing.now;
    let entries: Vec<understudy_storage::QueueEntry> = listing
        .entries
        .into_iter()
        .map(|listed| listed.entry)
        .filter(|e| role.covers(&e.domain) && filter.matches(e, now))
        .filter(|e| selection.ticked.as_ref().is_none_or(|ids| ids.contains(&e.id)))
        .collect();
    if entries.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no entry matches: nothing to confirm",
        ));
    }
    let listed = entries.iter().map(|e| e.id).collect();
    let (c, owner, asked) = (console.clone(), caller.confirmation_owner(), selection.clone());
    let (confirmation, expires_at) =
        tokio::task::spawn_blocking(move || c.confirmations.issue(&owner, asked, listed))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(BulkPreview {
        action: selection.action,
        description: filter.describe(),
        filter,
        count: entries.len() as u64,
        entries: entries.into_iter().map(queue_item).collect(),
        confirmation,
        expires_at,
    }))
}

#[utoipa::path(post, path = "/api/v1/queue/bulk/confirm", tag = "queue", request_body = BulkConfirm,
    responses((status = 200, description = "Done on the entries the preview listed", body = BulkResult),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "The confirmation was used, expired, another's, or for another action or selection: nothing was changed", body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn bulk_confirm(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
    body: Result<Json<BulkConfirm>, JsonRejection>,
) -> Result<Json<BulkResult>, ApiError> {
    let Json(body) = body?;
    if caller.read_only {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this token may only read"));
    }
    let selection = body.request.selection();
    let action = selection.action;
    if !selection.filter.domain.is_empty() {
        caller.require(&selection.filter.domain)?;
    }
    let (c, owner, asked, token) = (
        console.clone(),
        caller.confirmation_owner(),
        selection.clone(),
        body.confirmation.clone(),
    );
    let ids = tokio::task::spawn_blocking(move || c.confirmations.redeem(&token, &owner, &asked))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|why| ApiError(StatusCode::CONFLICT, why))?;
    let target = format!(
        "{} (filter: {})",
        super::pages::queue::ids_target(&ids),
        selection.filter.describe()
    );
    let audit = caller.write(Action::new(format!("queue {}", action.name()), target))?;
    let role = caller.role.clone();
    let (outcome, _) = console
        .run(audit, move |ctx| {
            queue::bulk(ctx, action, &ids, &|d| role.covers(d))
        })
        .await?;
    Ok(Json(BulkResult {
        action,
        changed: outcome.changed as u64,
        message: outcome.text(),
        gone: outcome.gone,
        unchanged: outcome.unchanged,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueActionResult {
    /// Entries changed.
    pub changed: u64,
}

#[utoipa::path(post, path = "/api/v1/queue/{id}/{action}", tag = "queue",
    params(("id" = u64, Path, description = "Queue entry id"), ("action" = String, Path, description = "retry, hold, release, purge or bounce")),
    responses((status = 200, body = QueueActionResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 500, body = ErrorBody)))]
async fn queue_action(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
    path: Result<Path<(u64, String)>, PathRejection>,
) -> Result<Json<QueueActionResult>, ApiError> {
    let Path((id, action)) = path?;
    if !matches!(action.as_str(), "retry" | "hold" | "release" | "purge" | "bounce") {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such action"));
    }
    let role = caller.role.clone();
    let entry_domain = {
        let store = console.shared.store.clone();
        tokio::task::spawn_blocking(move || store.queue_entry(id))
            .await
            .map_err(|e| ApiError::from(AppError::Internal(e.to_string())))?
            .map_err(|e| ApiError::from(AppError::Internal(e.to_string())))?
            .map(|e| e.domain)
    };
    match entry_domain {
        Some(d) if role.covers(&d) => {}
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "no such queue entry")),
    }
    let audit = caller.write(Action::new(format!("queue {action}"), id.to_string()))?;
    let (changed, _) = console
        .run(audit, move |ctx| {
            Ok(match action.as_str() {
                "retry" => queue::retry(ctx, Some(&id.to_string()))?.due.len(),
                "hold" => queue::hold_entries(ctx, &[id], true)?,
                "release" => queue::hold_entries(ctx, &[id], false)?,
                "bounce" => {
                    queue::bounce(ctx, id, true)?;
                    1
                }
                _ => {
                    queue::purge(ctx, id, true)?;
                    1
                }
            })
        })
        .await?;
    Ok(Json(QueueActionResult {
        changed: changed as u64,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserItem {
    pub address: String,
    pub display_name: String,
    /// active or inactive.
    pub status: String,
    pub messages: u64,
    pub bytes: u64,
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(DomainFilter),
    responses((status = 200, body = [UserItem]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn user_list(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
    filter: Result<Query<DomainFilter>, QueryRejection>,
) -> Result<Json<Vec<UserItem>>, ApiError> {
    let Query(filter) = filter?;
    if let Some(d) = &filter.domain {
        caller.require(d)?;
    }
    let role = caller.role.clone();
    let (listing, _) = console
        .run(None, move |ctx| users::list(ctx, filter.domain.as_deref()))
        .await?;
    Ok(Json(
        listing
            .into_iter()
            .filter(|u| domain_of(&u.address).is_some_and(|d| role.covers(&d)))
            .map(|u| UserItem {
                status: format!("{:?}", u.status).to_lowercase(),
                address: u.address,
                display_name: u.display_name,
                messages: u.messages,
                bytes: u.bytes,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUser {
    pub address: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Checked against the password policy; absent: the user has none yet.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserCreated {
    pub address: String,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 500, body = ErrorBody)))]
async fn user_add(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<UserCreated>), ApiError> {
    let Json(body) = body?;
    let address = body.address.trim().to_string();
    let domain = domain_of(&address)
        .ok_or_else(|| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not an email address"))?;
    caller.require(&domain)?;
    let audit = caller.write(Action::new("user add", &address))?;
    let hash = match body.password.filter(|p| !p.is_empty()) {
        Some(p) => Some(super::pages::users::hash_new_password(&console, &p).await?),
        None => None,
    };
    let name = body.name.unwrap_or_default();
    let (report, _) = console
        .run(audit, move |ctx| {
            let password = hash.map(|h| h.checked(ctx)).transpose()?;
            users::add(ctx, &address, &name, password)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserCreated {
            address: report.address,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TrackQuery {
    /// The message's Message-ID.
    pub message_id: Option<String>,
    /// Or messages from or to this address...
    pub address: Option<String>,
    /// ...with events at or after this date (YYYY-MM-DD, RFC 3339 or Unix seconds).
    pub since: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventItem {
    pub at: i64,
    pub kind: String,
    /// Includes the remote server's SMTP reply for attempts.
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackedItem {
    /// As printed everywhere (`000000002A`).
    pub tracking_id: String,
    pub events: Vec<EventItem>,
    /// Queue entries still holding the message.
    pub queued: Vec<u64>,
}

#[utoipa::path(get, path = "/api/v1/tracking", tag = "tracking", params(TrackQuery),
    responses((status = 200, body = [TrackedItem]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn track(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
    q: Result<Query<TrackQuery>, QueryRejection>,
) -> Result<Json<Vec<TrackedItem>>, ApiError> {
    let Query(q) = q?;
    let args = tracking::TrackArgs {
        id: None,
        message_id: q.message_id.filter(|s| !s.trim().is_empty()),
        address: q.address.filter(|s| !s.trim().is_empty()),
        since: q.since.filter(|s| !s.trim().is_empty()),
    };
    if args.message_id.is_none() && args.address.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "give message_id or address",
        ));
    }
    let role = caller.role.clone();
    let (found, _) = console.run(None, move |ctx| tracking::track(ctx, &args)).await?;
    Ok(Json(
        found
            .into_iter()
            .filter(|m| super::pages::tracking::visible(m, &|d| role.covers(d)))
            .map(|m| TrackedItem {
                tracking_id: m.tracking_id,
                events: m
                    .events
                    .into_iter()
                    .map(|e| EventItem {
                        at: e.at,
                        kind: e.kind,
                        detail: e.detail,
                    })
                    .collect(),
                queued: m.queued.iter().map(|e| e.id).collect(),
            })
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/readiness", tag = "readiness",
    responses((status = 200, body = ReadinessReport), (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn readiness_report(
    State(console): State<Arc<Console>>,
    caller: ApiCaller,
) -> Result<Json<ReadinessReport>, ApiError> {
    let role = caller.role.clone();
    let (report, _) = console
        .run(None, move |ctx| {
            readiness::report(ctx, &|d| role.covers(d), role.is_global())
        })
        .await?;
    Ok(Json(report))
}
