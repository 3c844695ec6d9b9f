//! The administrator's pages, one file per subject, each calling the operations in
//! `crate::admin` and rendering what they return.
//!
//! - [`dashboard`]: every domain's phase, queue and notices; refreshes itself;
//! - [`domain`]: settings, outage start and stop, DKIM;
//! - [`drill`]: the failover drill, run step by step ([`drill_imap`]: its user login);
//! - [`queue`]: list and filter, one entry, retry / hold / release / purge, bulk;
//! - [`tracking`]: messages by Message-ID, address and time, with their events;
//! - [`users`]: search, add, CSV import, password, access, status, aliases, LDAP sync;
//! - [`readiness`]: who could not log in on the day, as a page and as CSV;
//! - [`audit`]: the audit log.

pub mod audit;
pub mod dashboard;
pub mod domain;
pub mod drill;
pub mod drill_imap;
pub mod queue;
pub mod readiness;
pub mod tracking;
pub mod users;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use super::Console;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/", get(dashboard::show))
        .route("/domains/{name}", get(domain::show))
        .route("/domains/{name}/settings", post(domain::settings))
        .route("/domains/{name}/outage", post(domain::outage))
        .route("/domains/{name}/dkim", post(domain::dkim))
        .route("/domains/{name}/drill", post(drill::start))
        .route("/domains/{name}/drill/{id}", get(drill::status))
        .route("/queue", get(queue::list))
        .route("/queue/bulk", post(queue::bulk))
        .route("/queue/{id}", get(queue::show))
        .route("/tracking", get(tracking::search))
        .route("/users", get(users::list))
        .route("/users/add", post(users::add))
        .route("/users/import", post(users::import))
        .route("/users/import/{id}", get(users::import_status))
        .route("/users/ldap-sync", post(users::ldap_sync))
        .route("/users/{address}", get(users::show).post(users::change))
        .route("/readiness", get(readiness::show))
        .route("/readiness.csv", get(readiness::csv))
        .route("/audit", get(audit::show))
}

/// A form field that may be left empty: `None` when it is.
pub fn filled(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_string())
}
