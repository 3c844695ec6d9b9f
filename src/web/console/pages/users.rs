//! Users: search and list (`user list`), add (`user add`), CSV upload with a report per
//! row (`user import`, the same import as the CLI), one user's page with password,
//! access, activation and aliases (`user passwd|set|activate|deactivate`, `alias
//! add|remove`), and LDAP sync now with its report (`ldap sync`). New passwords are
//! checked against the policy and hashed here, as the CLI does before the admin socket.

use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use clap::ValueEnum;
use maud::{html, Markup};
use serde::Deserialize;
use understudy_protocol::Secret;
use understudy_storage::UserStatus;

use super::filled;
use crate::admin::audit::{domain_of, Action};
use crate::admin::domains::{AccessArg, WindowArg};
use crate::admin::import::{self, ImportLine, ImportReport};
use crate::admin::users::{self, PasswordState, UserSettings};
use crate::admin::{aliases, ldap};
use crate::web::console::layout::{csrf_field, flash, page};
use crate::web::console::{AdminSession, AppError, Console, Progress};

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    q: String,
}

/// A new password typed into the console: its hash and what the policy checks.
pub struct Hashed(String, crate::password_policy::PasswordTraits);

impl Hashed {
    /// As the admin operations take it, checked against the policy of the server.
    pub fn checked(self, ctx: &crate::admin::AdminContext) -> anyhow::Result<users::NewPassword> {
        users::NewPassword::checked(ctx, self.0, Some(self.1))
    }
}

/// Checks and hashes a new password typed into the console.
pub async fn hash_new_password(console: &Console, password: &str) -> Result<Hashed, AppError> {
    crate::auth::check_policy(&console.shared.config.password_policy, password).map_err(AppError::Failed)?;
    let traits = crate::password_policy::PasswordTraits::of(password);
    let secret = Secret::new(password);
    // argon2 is deliberately slow: on the blocking pool, not a runtime worker.
    let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&secret))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(format!("{e:#}")))?;
    Ok(Hashed(hash, traits))
}

fn require_address(admin: &AdminSession, address: &str) -> Result<(), AppError> {
    match domain_of(address) {
        Some(d) => admin.require(&d),
        None => Err(AppError::NotFound),
    }
}

async fn render_list(
    console: &Arc<Console>,
    admin: &AdminSession,
    q: ListQuery,
    message: Option<Markup>,
) -> Result<Markup, AppError> {
    let domain = filled(&q.domain);
    if let Some(d) = &domain {
        admin.require(d)?;
    }
    let role = admin.role.clone();
    let (listing, _) = console
        .run(None, move |ctx| users::list(ctx, domain.as_deref()))
        .await?;
    let needle = q.q.trim().to_ascii_lowercase();
    let shown: Vec<_> = listing
        .iter()
        .filter(|u| domain_of(&u.address).is_some_and(|d| role.covers(&d)))
        .filter(|u| {
            needle.is_empty()
                || u.address.contains(&needle)
                || u.display_name.to_ascii_lowercase().contains(&needle)
        })
        .take(1000)
        .collect();
    let csrf = &admin.session.csrf;
    let body = html! {
        @if let Some(m) = message { (m) }
        form method="get" action="/users" {
            label { "Search " input name="q" value=(q.q); }
            label { "Domain " input name="domain" value=(q.domain); }
            button { "Search" }
        }
        table id="users" {
            tr { th { "Address" } th { "Name" } th { "Status" } th { "Messages" } }
            @for u in &shown {
                tr { td { a href={"/users/" (u.address)} { (u.address) } } td { (u.display_name) } td { (format!("{:?}", u.status).to_lowercase()) } td { (u.messages) } }
            }
        }
        p { (shown.len()) " users" }
        fieldset {
            legend { "Add a user" }
            form method="post" action="/users/add" {
                (csrf_field(csrf))
                label { "Address " input name="address" type="email" required; }
                label { "Name " input name="name"; }
                label { "Password (empty: set later) " input name="password" type="password" autocomplete="new-password"; }
                button { "Add" }
            }
        }
        fieldset {
            legend { "Upload a CSV" }
            p { "Columns: address, display name, password (empty: keep, or generate for a new user), aliases separated by ;, status (active|inactive)." }
            form method="post" action="/users/import" enctype="multipart/form-data" {
                (csrf_field(csrf))
                input type="file" name="file" accept=".csv,text/csv" required;
                label { input type="checkbox" name="dry_run" value="yes"; " Dry run (change nothing)" }
                button { "Upload" }
            }
        }
        @if admin.role.is_global() && !console.shared.config.ldap.is_empty() {
            form method="post" action="/users/ldap-sync" {
                (csrf_field(csrf))
                button { "LDAP sync now" }
            }
        }
    };
    Ok(page("Users", Some(&admin.who()), csrf, body))
}

pub async fn list(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Query(q): Query<ListQuery>,
) -> Result<Markup, AppError> {
    render_list(&console, &admin, q, None).await
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

pub async fn add(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Form(f): Form<AddForm>,
) -> Result<Response, AppError> {
    admin.csrf(&f.csrf)?;
    let address = f.address.trim().to_string();
    require_address(&admin, &address)?;
    let hash = match filled(&f.password) {
        Some(p) => Some(hash_new_password(&console, &p).await?),
        None => None,
    };
    let name = f.name.trim().to_string();
    let target = address.clone();
    console
        .run(admin.audit(Action::new("user add", &address)), move |ctx| {
            let password = hash.map(|h| h.checked(ctx)).transpose()?;
            users::add(ctx, &target, &name, password)
        })
        .await?;
    Ok(Redirect::to(&format!("/users/{address}")).into_response())
}

pub async fn import(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    mut form: Multipart,
) -> Result<Response, AppError> {
    let (mut csrf, mut text, mut dry_run) = (String::new(), None, false);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| AppError::Failed(format!("the upload was cut short: {e}")))?
    {
        match field.name().unwrap_or("") {
            "csrf" => csrf = field.text().await.unwrap_or_default(),
            "dry_run" => dry_run = field.text().await.unwrap_or_default() == "yes",
            "file" => {
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| AppError::Failed(format!("the upload was cut short: {e}")))?;
                text = Some(
                    String::from_utf8(bytes.to_vec())
                        .map_err(|_| AppError::Failed("the file is not UTF-8 text".into()))?,
                );
            }
            _ => {}
        }
    }
    admin.csrf(&csrf)?;
    let text = text.ok_or_else(|| AppError::Failed("no file was uploaded".into()))?;
    // A domain administrator's file may name only their domains: checked for every row
    // before anything is applied. A cell that is no address at all is the import's to
    // report, as a bad row.
    let (rows, _) = import::parse_rows(&text);
    let outside: Vec<String> = rows
        .iter()
        .filter(|r| {
            let address = r.fields.first().map(String::as_str).unwrap_or("");
            domain_of(address).is_some_and(|d| !admin.role.covers(&d))
        })
        .map(|r| format!("line {}", r.line))
        .collect();
    if !outside.is_empty() {
        return Err(AppError::Failed(format!(
            "rows outside your domains, nothing imported: {}",
            outside.join(", ")
        )));
    }
    // Runs in the background: a big file takes longer than a request may, and the job's
    // page shows its progress until the report is there.
    let job = Arc::new(ImportJob {
        owner: admin.name.clone(),
        rows: rows.len(),
        progress: Arc::new(Progress::default()),
        result: parking_lot::Mutex::new(None),
    });
    let id = crate::web::console::session::random_token();
    {
        let mut imports = console.imports.lock();
        // Finished jobs of long ago are forgotten; a job lives for its report.
        if imports.len() > 64 {
            imports.retain(|_, j| j.result.lock().is_none());
        }
        imports.insert(id.clone(), job.clone());
    }
    let audit = admin.audit(Action {
        action: if dry_run {
            "user import (dry run)"
        } else {
            "user import"
        }
        .into(),
        target: format!("{} rows", rows.len()),
        domain: None,
    });
    let c = console.clone();
    tokio::spawn(async move {
        let result = c
            .run_with_progress(audit, Some(job.progress.clone()), move |ctx| {
                Ok(import::run(ctx, &text, dry_run))
            })
            .await
            .map_err(|e| match e {
                AppError::Failed(m) | AppError::Internal(m) => m,
                _ => "the import failed".to_string(),
            });
        *job.result.lock() = Some(result);
    });
    Ok(Redirect::to(&format!("/users/import/{id}")).into_response())
}

/// A CSV import started from the console.
pub struct ImportJob {
    owner: String,
    rows: usize,
    progress: Arc<Progress>,
    result: parking_lot::Mutex<Option<Result<(ImportReport, String), String>>>,
}

/// The import's page: progress (reloading itself) until the report per row is there.
pub async fn import_status(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let job = console
        .imports
        .lock()
        .get(&id)
        .cloned()
        .ok_or(AppError::NotFound)?;
    if job.owner != admin.name {
        return Err(AppError::NotFound);
    }
    let finished = job.result.lock().clone();
    let Some(result) = finished else {
        let done = job.progress.done.load(std::sync::atomic::Ordering::Relaxed);
        let body = html! {
            (maud::PreEscaped(r#"<meta http-equiv="refresh" content="1">"#))
            p id="import-progress" { "Importing: " (done) " of " (job.rows) " rows done." }
            progress max=(job.rows) value=(done) {}
        };
        return Ok(page("Importing users", Some(&admin.who()), &admin.session.csrf, body).into_response());
    };
    let (report, secrets) = result.map_err(AppError::Failed)?;
    let message = html! {
        p class="flash" role="status" id="import-summary" {
            (if report.dry_run { "Dry run, nothing changed: " } else { "Import: " })
            (report.created) " created, " (report.updated) " updated, " (report.unchanged) " unchanged, " (report.errors) " with errors."
        }
        table id="import-report" {
            tr { th { "Line" } th { "Result" } }
            @for line in &report.lines {
                @match line {
                    ImportLine::NotCsv(m) => tr class="row-error" { td { "-" } td { (m) } },
                    ImportLine::Changed { line, address, change } => tr { td { (line) } td { (address) ": " (if change.created { "created" } else { "updated" }) } },
                    ImportLine::Failed { line, error } => tr class="row-error" { td class="line" { (line) } td { (error) } },
                }
            }
        }
        @if !secrets.is_empty() {
            p { "Generated passwords, shown to you once on this page:" }
            pre id="secrets" { (secrets) }
        }
    };
    Ok(render_list(&console, &admin, ListQuery::default(), Some(message))
        .await?
        .into_response())
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn ldap_sync(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, AppError> {
    admin.csrf(&f.csrf)?;
    if !admin.role.is_global() {
        return Err(AppError::NotFound);
    }
    let (text, _) = console
        .run(admin.audit(Action::new("ldap sync", "")), move |ctx| {
            let mut out = Vec::new();
            let result = ldap::sync(ctx, None, false, &mut out);
            let mut text = String::from_utf8_lossy(&out).into_owned();
            if let Err(e) = result {
                text.push_str(&format!("{e:#}\n"));
            }
            Ok(text)
        })
        .await?;
    let message = html! { p class="flash" { "LDAP sync:" } pre id="ldap-report" { (text) } };
    Ok(render_list(&console, &admin, ListQuery::default(), Some(message))
        .await?
        .into_response())
}

async fn render_user(
    console: &Arc<Console>,
    admin: &AdminSession,
    address: &str,
    message: Option<String>,
) -> Result<Markup, AppError> {
    require_address(admin, address)?;
    let wanted = address.to_string();
    let (u, _) = console
        .run(None, move |ctx| users::show(ctx, &wanted))
        .await
        .map_err(|_| AppError::NotFound)?;
    let csrf = &admin.session.csrf;
    let action = format!("/users/{}", u.address);
    let body = html! {
        (flash(message.as_deref()))
        table {
            tr { th { "Name" } td { (u.display_name) } }
            tr { th { "Status" } td id="status" { (format!("{:?}", u.status).to_lowercase()) } }
            tr { th { "Password" } td { (match u.password { PasswordState::NotSet => "not set", PasswordState::MustChange => "must be changed", PasswordState::Set => "set" }) } }
            tr { th { "Access" } td { (format!("{:?}", u.access)) (if u.access_own { " (own)" } else { " (domain default)" }) ", " (format!("{:?}", u.access_window)) } }
            tr { th { "Aliases" } td { (u.aliases.join(", ")) } }
            tr { th { "Mail" } td { (u.messages) " messages, " (u.bytes) " bytes" } }
        }
        fieldset { legend { "Password" }
            form method="post" action=(action) { (csrf_field(csrf)) input type="hidden" name="op" value="passwd";
                label { "New password " input name="password" type="password" autocomplete="new-password" required; }
                label { input type="checkbox" name="force_reset" value="yes"; " temporary: the user must change it" }
                button { "Set password" } } }
        fieldset { legend { "Access" }
            form method="post" action=(action) { (csrf_field(csrf)) input type="hidden" name="op" value="access";
                label { "Level " select name="access" { option value="" { "domain default" } @for o in ["full", "read-only", "none"] { option value=(o) { (o) } } } }
                label { "Window " select name="access_window" { option value="" { "domain default" } @for o in ["always", "outage-only"] { option value=(o) { (o) } } } }
                button { "Set access" } } }
        fieldset { legend { "Status" }
            form method="post" action=(action) { (csrf_field(csrf))
                button name="op" value="activate" { "Activate" } " " button name="op" value="deactivate" { "Deactivate" } } }
        fieldset { legend { "Aliases" }
            form method="post" action=(action) { (csrf_field(csrf))
                label { "Alias " input name="alias" type="email"; }
                button name="op" value="alias-add" { "Add alias" } " " button name="op" value="alias-remove" { "Remove alias" } } }
    };
    Ok(page(&u.address, Some(&admin.who()), csrf, body))
}

pub async fn show(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path(address): Path<String>,
) -> Result<Markup, AppError> {
    render_user(&console, &admin, &address, None).await
}

#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    op: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    force_reset: String,
    #[serde(default)]
    access: String,
    #[serde(default)]
    access_window: String,
    #[serde(default)]
    alias: String,
}

pub async fn change(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path(address): Path<String>,
    Form(f): Form<ChangeForm>,
) -> Result<Response, AppError> {
    admin.csrf(&f.csrf)?;
    require_address(&admin, &address)?;
    let alias = f.alias.trim().to_string();
    if f.op.starts_with("alias") {
        require_address(&admin, &alias)?;
    }
    let hash = if f.op == "passwd" {
        Some(hash_new_password(&console, &f.password).await?)
    } else {
        None
    };
    let settings = UserSettings {
        access: filled(&f.access)
            .map(|a| AccessArg::from_str(&a, true))
            .transpose()
            .map_err(AppError::Failed)?,
        access_window: filled(&f.access_window)
            .map(|w| WindowArg::from_str(&w, true))
            .transpose()
            .map_err(AppError::Failed)?,
        domain_access: f.access.is_empty() && f.access_window.is_empty(),
        ..UserSettings::default()
    };
    let op = f.op.clone();
    let target = address.clone();
    let force = f.force_reset == "yes";
    let verb = match op.as_str() {
        "passwd" => "user passwd",
        "access" => "user set",
        "activate" => "user activate",
        "deactivate" => "user deactivate",
        "alias-add" => "alias add",
        "alias-remove" => "alias remove",
        _ => return Err(AppError::Failed("unknown action".into())),
    };
    let result = console
        .run(admin.audit(Action::new(verb, &address)), move |ctx| {
            Ok(match op.as_str() {
                "passwd" => {
                    let hash = hash.ok_or_else(|| anyhow::anyhow!("no password"))?;
                    users::passwd(ctx, &target, hash.checked(ctx)?, force)?;
                    "Password set."
                }
                "access" => {
                    users::set(ctx, &target, &settings)?;
                    "Access changed."
                }
                "activate" => {
                    users::set_status(ctx, &target, UserStatus::Active)?;
                    "Activated."
                }
                "deactivate" => {
                    users::set_status(ctx, &target, UserStatus::Inactive)?;
                    "Deactivated: open sessions ended."
                }
                "alias-add" => {
                    aliases::add(ctx, &alias, &target)?;
                    "Alias added."
                }
                _ => {
                    aliases::remove(ctx, &alias)?;
                    "Alias removed."
                }
            })
        })
        .await;
    let message = match result {
        Ok((m, _)) => m.to_string(),
        Err(AppError::Failed(m)) => m,
        Err(e) => return Err(e),
    };
    Ok(render_user(&console, &admin, &address, Some(message))
        .await?
        .into_response())
}
