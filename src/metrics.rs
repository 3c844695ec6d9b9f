//! Prometheus metrics and the health check, served on an optional local HTTP port
//! (`[metrics] listen`). Counters are process-wide atomics so every part of the server can
//! count without plumbing; gauges that live in the store (queue depth, outage state) are
//! read at scrape time.
//!
//! Served on the one HTTP stack (`crate::web`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::Router;
use understudy_storage::outage::OutagePhase;
use understudy_storage::queue::AttemptOutcome;
use understudy_storage::{QueueKind, Store};

use crate::config_types::Service;

/// Counters, all monotonic.
pub struct Metrics {
    connections: [AtomicU64; 7],
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    /// argon2 runs (a check or a new hash) on the password-hashing threads
    /// (`crate::auth::HashPool`): what logins cost, whatever they answered.
    pub password_hashes: AtomicU64,
    /// Messages accepted by SMTP (MX and submission).
    pub messages_received: AtomicU64,
    /// Copies stored in mailboxes.
    pub messages_stored: AtomicU64,
    /// Queue entries created.
    pub messages_queued: AtomicU64,
    /// Synced delivery writes and their total duration, for the average write latency.
    pub store_writes: AtomicU64,
    pub store_write_micros: AtomicU64,
    /// Recipients handed to the primary (relay queue) / to remote servers (outbound).
    pub redelivered: AtomicU64,
    pub sent_outbound: AtomicU64,
    /// Recipients given up on (5xx or queue lifetime): a DSN went to the sender.
    pub bounced: AtomicU64,
    /// Attempts deferred (4xx, time-out, connection failure).
    pub deferred: AtomicU64,
    /// Session steps (a command or a batch of pipelined ones) and the time spent in
    /// them, per service: what a client's request cost the server, without the network.
    session_steps: [AtomicU64; 7],
    session_busy_micros: [AtomicU64; 7],
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

pub static METRICS: Metrics = Metrics {
    connections: [ZERO; 7],
    logins_ok: ZERO,
    logins_failed: ZERO,
    password_hashes: ZERO,
    messages_received: ZERO,
    messages_stored: ZERO,
    messages_queued: ZERO,
    store_writes: ZERO,
    store_write_micros: ZERO,
    redelivered: ZERO,
    sent_outbound: ZERO,
    bounced: ZERO,
    deferred: ZERO,
    session_steps: [ZERO; 7],
    session_busy_micros: [ZERO; 7],
};

impl Metrics {
    pub fn connection(&self, service: Service) {
        if let Some(i) = Service::ALL.iter().position(|s| *s == service) {
            self.connections[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one session step of `service` that took `took`.
    pub fn session_step(&self, service: Service, took: Duration) {
        if let Some(i) = Service::ALL.iter().position(|s| *s == service) {
            self.session_steps[i].fetch_add(1, Ordering::Relaxed);
            self.session_busy_micros[i].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// Counts one recipient's delivery attempt result.
    pub fn delivery_outcome(&self, kind: QueueKind, outcome: &AttemptOutcome) {
        let counter = match (outcome, kind) {
            (AttemptOutcome::Delivered(_), QueueKind::Relay) => &self.redelivered,
            (AttemptOutcome::Delivered(_), _) => &self.sent_outbound,
            (AttemptOutcome::Failed(_), _) => &self.bounced,
            (AttemptOutcome::Deferred(_), _) => &self.deferred,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn store_write(&self, took: Duration) {
        self.store_writes.fetch_add(1, Ordering::Relaxed);
        self.store_write_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The Prometheus text exposition of every metric.
pub fn render(store: &Store) -> String {
    let m = &METRICS;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP understudy_connections_total Connections accepted, by service."
    );
    let _ = writeln!(out, "# TYPE understudy_connections_total counter");
    for (i, service) in Service::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "understudy_connections_total{{service=\"{}\"}} {}",
            service.name(),
            get(&m.connections[i])
        );
    }
    let _ = writeln!(
        out,
        "# HELP understudy_session_steps_total Session steps (a command, or pipelined commands read together), by service.\n\
         # TYPE understudy_session_steps_total counter"
    );
    for (i, service) in Service::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "understudy_session_steps_total{{service=\"{}\"}} {}",
            service.name(),
            get(&m.session_steps[i])
        );
    }
    let _ = writeln!(
        out,
        "# HELP understudy_session_busy_seconds_total Time spent in session steps (in the server, not waiting for the client), by service.\n\
         # TYPE understudy_session_busy_seconds_total counter"
    );
    for (i, service) in Service::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "understudy_session_busy_seconds_total{{service=\"{}\"}} {:.6}",
            service.name(),
            get(&m.session_busy_micros[i]) as f64 / 1e6
        );
    }
    for (name, help, value) in [
        ("understudy_logins_total{result=\"ok\"}", "", get(&m.logins_ok)),
        (
            "understudy_logins_total{result=\"failed\"}",
            "",
            get(&m.logins_failed),
        ),
        (
            "understudy_password_hashes_total",
            "argon2 runs on the password-hashing threads (checks, decoy checks and new hashes).",
            get(&m.password_hashes),
        ),
        (
            "understudy_messages_received_total",
            "Messages accepted over SMTP.",
            get(&m.messages_received),
        ),
        (
            "understudy_messages_stored_total",
            "Copies stored in mailboxes.",
            get(&m.messages_stored),
        ),
        (
            "understudy_messages_queued_total",
            "Queue entries created.",
            get(&m.messages_queued),
        ),
        (
            "understudy_store_writes_total",
            "Synced delivery writes.",
            get(&m.store_writes),
        ),
        (
            "understudy_redelivered_total",
            "Recipients handed to the primary server.",
            get(&m.redelivered),
        ),
        (
            "understudy_sent_total",
            "Outbound recipients accepted by remote servers.",
            get(&m.sent_outbound),
        ),
        (
            "understudy_bounced_total",
            "Recipients given up on (5xx or expired); a DSN was sent.",
            get(&m.bounced),
        ),
        (
            "understudy_deferred_total",
            "Delivery attempts deferred (4xx, time-out, no connection).",
            get(&m.deferred),
        ),
    ] {
        if !help.is_empty() {
            let base = name.split('{').next().unwrap_or(name);
            let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} counter");
        } else if name.contains("result=\"ok\"") {
            let _ = writeln!(
                out,
                "# HELP understudy_logins_total Logins by result.\n# TYPE understudy_logins_total counter"
            );
        }
        let _ = writeln!(out, "{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP understudy_store_write_seconds_total Time spent in synced delivery writes."
    );
    let _ = writeln!(out, "# TYPE understudy_store_write_seconds_total counter");
    let _ = writeln!(
        out,
        "understudy_store_write_seconds_total {:.6}",
        get(&m.store_write_micros) as f64 / 1e6
    );

    let now = store.now();
    match (store.domains(), store.queue_entries(None)) {
        (Ok(domains), Ok(entries)) => {
            let _ = writeln!(
                out,
                "# HELP understudy_queue_depth Queued messages for the primary, by domain."
            );
            let _ = writeln!(out, "# TYPE understudy_queue_depth gauge");
            let mut ages = Vec::new();
            for d in &domains {
                let relay: Vec<_> = entries
                    .iter()
                    .filter(|e| e.kind == QueueKind::Relay && e.domain == d.name)
                    .collect();
                let oldest = relay
                    .iter()
                    .map(|e| e.created_at)
                    .min()
                    .map(|t| (now - t).max(0))
                    .unwrap_or(0);
                let _ = writeln!(
                    out,
                    "understudy_queue_depth{{domain=\"{}\"}} {}",
                    d.name,
                    relay.len()
                );
                ages.push((d.name.clone(), oldest));
            }
            let _ = writeln!(
                out,
                "# HELP understudy_queue_oldest_seconds Age of the oldest queued message, by domain."
            );
            let _ = writeln!(out, "# TYPE understudy_queue_oldest_seconds gauge");
            for (domain, age) in ages {
                let _ = writeln!(
                    out,
                    "understudy_queue_oldest_seconds{{domain=\"{domain}\"}} {age}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP understudy_outage State per domain: 0 normal, 1 outage, 2 draining."
            );
            let _ = writeln!(out, "# TYPE understudy_outage gauge");
            for d in &domains {
                let phase = store.outage_state(&d.name).map(|s| s.phase).unwrap_or_default();
                let value = match phase {
                    OutagePhase::Normal => 0,
                    OutagePhase::Outage => 1,
                    OutagePhase::Draining => 2,
                };
                let _ = writeln!(out, "understudy_outage{{domain=\"{}\"}} {value}", d.name);
            }
        }
        (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the store"),
    }
    out
}

/// `/metrics` and `/health`, for `crate::web::serve`.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/metrics", routing::get(scrape))
        .route("/health", routing::get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(store)
}

pub async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

async fn scrape(State(store): State<Store>) -> Response {
    let text = tokio::task::spawn_blocking(move || render(&store))
        .await
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn health(State(store): State<Store>) -> (StatusCode, &'static str) {
    match tokio::task::spawn_blocking(move || store.health_check()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "health check: store not writable");
            (StatusCode::SERVICE_UNAVAILABLE, "store not writable\n")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "health check failed\n"),
    }
}
