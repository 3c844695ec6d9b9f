//! The queue runner: moves queued mail out. Relay entries go to each protected domain's
//! primary (`relay_host`) once the domain is out of its outage; outbound entries and
//! notifications go to the recipient domain's route, the smarthost or its MX hosts,
//! DKIM-signed when the sender's domain has a key.
//!
//! ```text
//!   due index ──pass──> task per connection slot ──> SmtpClient (pooled per host)
//!      │                  ^        │                      │ replies per recipient
//!      └─> backlog per ───┘        └── outcome (+ next entry's "attempt started"),
//!          destination                 one synced write, before the next message
//! ```
//!
//! Exactly-once in practice: an entry is in flight in at most one task; every accepted
//! recipient is recorded in a synced write before the entry is attempted again, and an
//! "attempt started" tracking event precedes each transaction so that, after a crash
//! between the remote 250 and our write, the possible duplicate is visible in tracking.
//! A task carries one message at a time per connection; when it goes on to the next
//! entry for the same host, that entry's mark rides in the previous outcome's write.

pub mod client;
pub mod config;
pub mod dsn;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use understudy_storage::accounts::Recipient;
use understudy_storage::address::domain_of;
use understudy_storage::drain::AttemptMark;
use understudy_storage::mailbox::DeliveryRequest;
use understudy_storage::outage::OutagePhase;
use understudy_storage::queue::AttemptOutcome;
use understudy_storage::{
    Clock, DeliveryMode, Domain, Lease, NewQueueEntry, QueueEntry, QueueKind, RecipientStatus, RelayTls,
    Store, StoreError, TrackingEvent,
};

use self::client::{ClientError, SmtpClient, Timeouts, TlsContext};
use self::config::{split_host_port, DeliveryConfig, TlsPolicy};
use self::dsn::FailedRecipient;
use crate::outage::handles::DeliveryObservations;

/// Wakes the queue runner early (a new delivery, `queue retry`, an outage ending).
pub type QueueWakeup = Arc<Notify>;

/// The queue runner's loop; it ends when `shutdown` turns true, after the attempts in
/// flight have finished (bounded by the data time-out).
/// The `[delivery]` settings follow `live`: each look at the queue uses the routes,
/// smarthost, TLS and retry settings of the last reload.
pub async fn run(
    store: Store,
    clock: Arc<dyn Clock>,
    hostname: String,
    live: watch::Receiver<Arc<DeliveryConfig>>,
    wakeup: QueueWakeup,
    observations: DeliveryObservations,
    shutdown: watch::Receiver<bool>,
) {
    let current = (**live.borrow()).clone();
    let mut runner = QueueRunner::new(store, clock, hostname, current, wakeup, observations);
    runner.live = Some(live);
    Arc::new(runner).run(shutdown).await
}

/// What the runner's attempts read from `[delivery]`, rebuilt when a reload changes it.
struct Settings {
    config: DeliveryConfig,
    tls: TlsContext,
    timeouts: Timeouts,
    /// The smarthost and the login for it (`smarthost_user`, `smarthost_password_file`).
    smarthost_login: Option<SmarthostLogin>,
}

struct SmarthostLogin {
    host: String,
    port: u16,
    user: String,
    password: understudy_protocol::Secret,
}

impl Settings {
    fn new(config: DeliveryConfig) -> Settings {
        let smarthost_login = match (
            &config.smarthost,
            &config.smarthost_user,
            &config.smarthost_password_file,
        ) {
            (Some(target), Some(user), Some(file)) => {
                match (
                    split_host_port(target, 25),
                    crate::config_types::read_password_file(file),
                ) {
                    (Some((host, port)), Ok(password)) => Some(SmarthostLogin {
                        host,
                        port,
                        user: user.clone(),
                        password,
                    }),
                    (_, Err(e)) => {
                        // Validation checked the file; it changed since. Mail to the
                        // smarthost then fails to log in and is retried.
                        tracing::error!(error = %format!("{e:#}"), "cannot read the smarthost password");
                        None
                    }
                    (None, _) => None,
                }
            }
            _ => None,
        };
        Settings {
            smarthost_login,
            tls: TlsContext::new(&config.tls_ca_file),
            timeouts: Timeouts {
                connect: Duration::from_secs(config.connect_timeout_secs),
                command: Duration::from_secs(config.command_timeout_secs),
                data: Duration::from_secs(config.data_timeout_secs),
            },
            config,
        }
    }
}

/// Where a group of recipients goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// Fixed host (relay host, static route or smarthost).
    Host { host: String, port: u16, tls: TlsPolicy },
    /// MX lookup for this domain.
    Mx { domain: String, tls: TlsPolicy },
    /// Cannot be delivered now: the reason (e.g. no relay host configured).
    Unroutable(String),
}

impl Route {
    /// Key for the per-destination connection limit and the connection pool.
    fn key(&self) -> String {
        match self {
            Route::Host { host, port, tls } => format!("{host}:{port}/{tls:?}"),
            Route::Mx { domain, tls } => format!("mx:{domain}/{tls:?}"),
            Route::Unroutable(_) => "unroutable".into(),
        }
    }
}

fn relay_tls(tls: RelayTls) -> TlsPolicy {
    match tls {
        RelayTls::Opportunistic => TlsPolicy::Opportunistic,
        RelayTls::Required => TlsPolicy::Required,
        RelayTls::Disabled => TlsPolicy::Disabled,
    }
}

/// Result of an attempt for one recipient, before it is recorded.
struct RecipientResult {
    address: String,
    outcome: AttemptOutcome,
    host: Option<String>,
}

pub struct QueueRunner {
    store: Store,
    clock: Arc<dyn Clock>,
    hostname: String,
    /// `[delivery]` as of the last reload (`follow_reload`).
    settings: parking_lot::RwLock<Arc<Settings>>,
    /// Where reloads come from; `None` in unit tests.
    live: Option<watch::Receiver<Arc<DeliveryConfig>>>,
    /// Connections per destination: fixed at start (a reload says it needs a restart).
    max_connections_per_host: usize,
    wakeup: QueueWakeup,
    /// Relay results, for the outage monitor's pass-through detection.
    observations: DeliveryObservations,
    in_flight: Mutex<HashSet<u64>>,
    per_host: Mutex<HashMap<String, Arc<Semaphore>>>,
    global: Arc<Semaphore>,
    pool: Mutex<HashMap<String, Vec<SmtpClient>>>,
    resolver: tokio::sync::OnceCell<Option<TokioResolver>>,
    /// Outage phase of each domain as last seen, to release parked entries when it ends.
    phases: Mutex<HashMap<String, OutagePhase>>,
    /// Per user: the tracking ids in their mailboxes and when the snapshot was taken, so
    /// that draining many entries of one user scans the mailboxes once, not per entry.
    held_copies: Mutex<HashMap<u64, HeldCopies>>,
    /// Per destination (route key): due entries read by a pass that found every
    /// connection to that destination busy. The task that holds a connection takes the
    /// next one from here when it finishes an entry, so a drain keeps its connections
    /// busy without a pass (a look at the due index) per message. Entries here are in
    /// `in_flight`: owned by the runner.
    backlog: Mutex<HashMap<String, VecDeque<Waiting>>>,
    /// Set on shutdown: tasks finish their entry and take no further ones.
    stopping: AtomicBool,
    /// Where the next look at the due index starts (a due time below which it held
    /// nothing last time) and when the last look from the beginning was. New and
    /// rescheduled entries are due at the current time or later, so nothing appears
    /// below the floor unless the clock steps back: a full look once a minute covers that.
    /// Only with one node: on a shared store another node writes due times from its own
    /// clock (a second behind, or a `now` read before this floor was set), and an entry
    /// below the floor would wait for the next full look (see [`Self::due_from`]).
    due_floor: Mutex<(i64, std::time::Instant)>,
}

/// How often the due index is read from its very beginning.
const FULL_DUE_SCAN: Duration = Duration::from_secs(60);

/// A due entry waiting for a connection, with its domain's settings as the pass saw them
/// and the lease the runner claimed it under.
struct Waiting {
    entry: QueueEntry,
    domain: Option<Domain>,
    lease: Lease,
}

/// Entries that may wait per destination. A pass reads this many ahead of the
/// connections, so one look at the due index serves hundreds of messages.
const BACKLOG_PER_ROUTE: usize = 512;

struct HeldCopies {
    taken: std::time::Instant,
    ids: Arc<HashSet<u64>>,
    /// The last tracking id handed out before the scan began (see `cancel_deleted`).
    before: u64,
    /// A task is taking a new snapshot.
    refreshing: bool,
}

/// How long a snapshot of a user's messages answers "was it deleted?".
const HELD_COPIES_TTL: Duration = Duration::from_secs(5);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> understudy_storage::StoreResult<T> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl QueueRunner {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        hostname: String,
        config: DeliveryConfig,
        wakeup: QueueWakeup,
        observations: DeliveryObservations,
    ) -> QueueRunner {
        QueueRunner {
            global: Arc::new(Semaphore::new(config.max_in_flight)),
            max_connections_per_host: config.max_connections_per_host,
            settings: parking_lot::RwLock::new(Arc::new(Settings::new(config))),
            live: None,
            store,
            clock,
            hostname,
            wakeup,
            observations,
            in_flight: Mutex::new(HashSet::new()),
            per_host: Mutex::new(HashMap::new()),
            pool: Mutex::new(HashMap::new()),
            resolver: tokio::sync::OnceCell::new(),
            phases: Mutex::new(HashMap::new()),
            held_copies: Mutex::new(HashMap::new()),
            backlog: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            due_floor: Mutex::new((i64::MIN, std::time::Instant::now())),
        }
    }

    /// The settings attempts use now.
    fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    /// Entries that may wait per destination. On a store shared by several nodes a few
    /// per connection only: what one node has claimed for its backlog no other node
    /// sends, so a deep backlog would have one node drain alone.
    fn backlog_cap(&self) -> usize {
        if self.store.is_shared() {
            (4 * self.max_connections_per_host).clamp(1, BACKLOG_PER_ROUTE)
        } else {
            BACKLOG_PER_ROUTE
        }
    }

    /// How long a claim on an entry lasts (`delivery.lease_secs`).
    fn lease_secs(&self) -> i64 {
        i64::try_from(self.settings().config.lease_secs.max(1)).unwrap_or(i64::MAX / 4)
    }

    /// Takes up `[delivery]` as a reload left it (from the next attempt on).
    fn follow_reload(&self) {
        let Some(live) = &self.live else {
            return;
        };
        let current = live.borrow().clone();
        if self.settings.read().config == *current {
            return;
        }
        tracing::info!(
            smarthost = current.smarthost.as_deref().unwrap_or("-"),
            routes = current.routes.len(),
            "[delivery] reloaded: new attempts use the new routes and settings"
        );
        *self.settings.write() = Arc::new(Settings::new((*current).clone()));
        // Pooled connections may go to a route that is no longer wanted.
        let idle: Vec<SmtpClient> = self.pool.lock().drain().flat_map(|(_, v)| v).collect();
        for client in idle {
            tokio::spawn(client.quit());
        }
    }

    async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(node = %format!("{:016x}", self.store.node_id()), "queue runner started");
        let mut tasks: JoinSet<()> = JoinSet::new();
        {
            // One node (RocksDB): entries a killed earlier run was attempting are due now,
            // not at the end of their leases.
            let store = self.store.clone();
            let (now, horizon) = (self.clock.now(), 2 * self.lease_secs() + 60);
            match blocking(move || store.release_stale_leases(now, horizon)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    entries = n,
                    "queue entries left leased by an earlier run are due again"
                ),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot release the leases of an earlier run")
                }
            }
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.follow_reload();
            let poll = Duration::from_secs(self.settings().config.poll_interval_secs);
            // With several nodes on one store every node drains: each sends only the
            // entries it claimed (storage `lease.rs`).
            if let Err(e) = self.pass(&mut tasks).await {
                tracing::error!(error = %format!("{e:#}"), "queue pass failed");
            }
            self.close_idle_connections();
            tokio::select! {
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                changed = shutdown.changed() => if changed.is_err() { break },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
            while tasks.try_join_next().is_some() {}
        }
        self.stopping.store(true, Ordering::SeqCst);
        tracing::info!(
            in_flight = tasks.len(),
            "queue runner stopping; letting attempts in flight finish"
        );
        // Bounded so that a hung remote server cannot hold up a restart; an entry cut off
        // here is retried, its "attempt started" mark showing a possible duplicate.
        let grace = Duration::from_secs(25);
        let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        // What is still waiting for a connection goes back to the queue at once (another
        // node may send it) rather than when its lease ends.
        let waiting: Vec<Waiting> = self.backlog.lock().drain().flat_map(|(_, list)| list).collect();
        self.release(waiting.iter().map(|w| (w.entry.id, w.lease)).collect())
            .await;
        let idle: Vec<SmtpClient> = self.pool.lock().drain().flat_map(|(_, v)| v).collect();
        for client in idle {
            client.quit().await;
        }
        tracing::info!("queue runner stopped");
    }

    /// Where this pass's look at the due index starts: the floor with one node, the
    /// beginning on a shared store (its due index is a database index, so there are no
    /// tombstones of sent entries to skip, and other nodes' clocks set the due times).
    fn due_from(&self) -> i64 {
        if self.store.is_shared() {
            return i64::MIN;
        }
        let mut floor = self.due_floor.lock();
        if floor.1.elapsed() >= FULL_DUE_SCAN {
            *floor = (i64::MIN, std::time::Instant::now());
        }
        floor.0
    }

    /// Looks at the due entries once and starts a task for each one that may go now;
    /// entries whose destination has no free connection wait in its backlog.
    async fn pass(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> anyhow::Result<()> {
        let now = self.clock.now();
        self.release_ended_outages(now).await?;
        self.start_backlogged(tasks);
        let waiting: usize = self.backlog.lock().values().map(VecDeque::len).sum();
        let free = self.global.available_permits();
        let cap = self.backlog_cap();
        let room = (self.per_host.lock().len().max(1) * cap).saturating_sub(waiting);
        let limit = free + room.min(cap);
        if limit == 0 {
            return Ok(());
        }
        let skip = self.in_flight.lock().clone();
        let store = self.store.clone();
        let from = self.due_from();
        let (due, first) = blocking(move || store.due_entries_except(now, limit, &skip, from)).await?;
        {
            let mut floor = self.due_floor.lock();
            floor.0 = floor.0.max(first);
        }
        let mut parked = Vec::new();
        let mut to_hold = Vec::new();
        let mut domains: HashMap<String, (Option<Domain>, OutagePhase, bool)> = HashMap::new();
        type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);
        let mut chosen: Vec<(QueueEntry, Option<Domain>, String, Option<Permits>)> = Vec::new();
        let mut backlog_room: HashMap<String, usize> = HashMap::new();
        for entry in due {
            if self.in_flight.lock().contains(&entry.id) {
                continue;
            }
            if !domains.contains_key(&entry.domain) {
                let store = self.store.clone();
                let name = entry.domain.clone();
                let info = blocking(move || {
                    Ok((
                        store.domain(&name)?,
                        store.outage_state(&name)?.phase,
                        store.domain_held(&name)?,
                    ))
                })
                .await?;
                domains.insert(entry.domain.clone(), info);
            }
            let (domain, phase, held) =
                domains
                    .get(&entry.domain)
                    .cloned()
                    .unwrap_or((None, OutagePhase::Normal, false));
            if held && entry.kind != QueueKind::Notification {
                // Arrived after `queue hold DOMAIN`: held like the rest of the domain
                // (alert notices excepted: they say what is going on).
                to_hold.push(entry.id);
                continue;
            }
            if entry.kind == QueueKind::Relay && phase == OutagePhase::Outage {
                parked.push(entry.id);
                continue;
            }
            let key = self.route_for(&entry, domain.as_ref()).key();
            let host_limit = self.host_semaphore(&key);
            let permits = host_limit
                .try_acquire_owned()
                .ok()
                .and_then(|host| self.global.clone().try_acquire_owned().ok().map(|g| (host, g)));
            if permits.is_none() {
                let queued = self.backlog.lock().get(&key).map_or(0, VecDeque::len);
                let room = backlog_room
                    .entry(key.clone())
                    .or_insert(cap.saturating_sub(queued));
                if *room == 0 {
                    continue;
                }
                *room -= 1;
            }
            chosen.push((entry, domain, key, permits));
        }
        // Claimed in one synced write before anything is sent: an entry another node's
        // runner claimed first is left out (storage `lease.rs`).
        if !chosen.is_empty() {
            let ids: Vec<u64> = chosen.iter().map(|(e, ..)| e.id).collect();
            let store = self.store.clone();
            let secs = self.lease_secs();
            let mut claimed: HashMap<u64, QueueEntry> =
                blocking(move || store.claim_entries(&ids, now, secs))
                    .await?
                    .into_iter()
                    .map(|e| (e.id, e))
                    .collect();
            for (entry, domain, key, permits) in chosen {
                let Some(entry) = claimed.remove(&entry.id) else {
                    continue;
                };
                let Some(lease) = entry.lease else {
                    continue;
                };
                let waiting = Waiting { entry, domain, lease };
                match permits {
                    Some((host_permit, global_permit)) => {
                        self.spawn_chain(tasks, waiting, key, host_permit, global_permit)
                    }
                    None => {
                        self.in_flight.lock().insert(waiting.entry.id);
                        self.backlog.lock().entry(key).or_default().push_back(waiting);
                    }
                }
            }
        }
        if !to_hold.is_empty() {
            let store = self.store.clone();
            blocking(move || store.set_entries_held(&to_hold, true, now)).await?;
        }
        if !parked.is_empty() {
            let at = now + self.settings().config.outage_recheck_secs as i64;
            tracing::debug!(
                count = parked.len(),
                "relay entries parked while their domain is in an outage"
            );
            let store = self.store.clone();
            blocking(move || store.postpone_entries(&parked, at)).await?;
        }
        Ok(())
    }

    /// Starts a task for backlogged entries whose destination has a free connection slot
    /// (a task ended, or the global limit let one go).
    fn start_backlogged(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        let keys: Vec<String> = self
            .backlog
            .lock()
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            loop {
                let Ok(host_permit) = self.host_semaphore(&key).try_acquire_owned() else {
                    break;
                };
                let Ok(global_permit) = self.global.clone().try_acquire_owned() else {
                    return;
                };
                let Some(first) = self.pop_backlog(&key) else {
                    break;
                };
                self.spawn_chain(tasks, first, key.clone(), host_permit, global_permit);
            }
        }
    }

    fn pop_backlog(&self, key: &str) -> Option<Waiting> {
        let mut backlog = self.backlog.lock();
        let list = backlog.get_mut(key)?;
        let next = list.pop_front();
        if list.len() == self.backlog_cap() / 2 {
            // Half empty: have the next pass top it up while these are sent.
            self.wakeup.notify_one();
        }
        next
    }

    /// One task holding one connection slot to a destination: attempts `first`, then
    /// the destination's backlogged entries one after another over the same (pooled)
    /// connection, until the backlog is empty or the server stops.
    fn spawn_chain(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        first: Waiting,
        key: String,
        host_permit: OwnedSemaphorePermit,
        global_permit: OwnedSemaphorePermit,
    ) {
        self.in_flight.lock().insert(first.entry.id);
        let runner = self.clone();
        tasks.spawn(async move {
            let mut current = Some(first);
            let mut premarked = false;
            while let Some(Waiting { entry, domain, lease }) = current.take() {
                let id = entry.id;
                let next = if runner.stopping.load(Ordering::SeqCst) {
                    None
                } else {
                    runner.pop_backlog(&key)
                };
                let next = match next {
                    Some(w) => Some(runner.prepare_next(w).await),
                    None => None,
                };
                let mark = next
                    .as_ref()
                    .and_then(|w| runner.premark(&w.entry, w.domain.as_ref(), &key));
                premarked = runner
                    .attempt_entry(entry, domain, lease, &host_permit, premarked, mark)
                    .await;
                runner.in_flight.lock().remove(&id);
                current = next;
            }
            // Entries a stopping task did not take go back to the queue (due now).
            if runner.stopping.load(Ordering::SeqCst) {
                let list = runner.backlog.lock().remove(&key);
                if let Some(list) = list {
                    {
                        let mut owned = runner.in_flight.lock();
                        for w in &list {
                            owned.remove(&w.entry.id);
                        }
                    }
                    runner
                        .release(list.iter().map(|w| (w.entry.id, w.lease)).collect())
                        .await;
                }
            }
            // Both slots free before the wake-up, so the pass it triggers can use them.
            drop(host_permit);
            drop(global_permit);
            // The entry may be due again at once (other recipients pending).
            runner.wakeup.notify_one();
        });
    }

    /// Brings a backlogged entry up to date before its "attempt started" mark is written
    /// ahead of it: re-read, and its recipients whose copy the user deleted cancelled now
    /// rather than after the mark.
    async fn prepare_next(&self, waiting: Waiting) -> Waiting {
        let Waiting { entry, domain, lease } = waiting;
        let store = self.store.clone();
        let id = entry.id;
        let fresh = match blocking(move || store.queue_entry(id)).await {
            Ok(Some(e)) => e,
            _ => return Waiting { entry, domain, lease },
        };
        let settings = domain.clone().unwrap_or_default();
        let entry = if fresh.kind == QueueKind::Relay
            && !settings.redeliver_deleted
            && settings.delivery_mode == DeliveryMode::Both
            && !fresh.held
            && fresh.lease == Some(lease)
        {
            match self.cancel_deleted(fresh.clone()).await {
                Ok(e) => e,
                Err(_) => fresh,
            }
        } else {
            fresh
        };
        Waiting { entry, domain, lease }
    }

    /// The "attempt started" mark of `next`, to be written with the previous entry's
    /// outcome, when where it goes is known now: one fixed host (the chain's), every
    /// pending recipient going there, due, not held, not expired.
    fn premark(&self, next: &QueueEntry, domain: Option<&Domain>, key: &str) -> Option<AttemptMark> {
        let now = self.clock.now();
        let lifetime = domain.map(|d| d.queue_lifetime_days).unwrap_or(15) as i64 * 86_400;
        // Still under the claim it was backlogged with, with time left to send.
        let claimed = next
            .live_lease(now)
            .is_some_and(|l| l.node == self.store.node_id() && l.until - now >= self.lease_secs() / 2);
        if next.held || next.is_done() || !claimed || now >= next.created_at + lifetime {
            return None;
        }
        let route = self.route_for(next, domain);
        let Route::Host { host, port, .. } = &route else {
            return None;
        };
        if route.key() != key {
            return None;
        }
        let rcpts: Vec<String> = next.pending().map(|r| r.address.clone()).collect();
        if rcpts
            .iter()
            .any(|r| self.route_for_recipient(next.kind, r, domain) != route)
        {
            return None;
        }
        Some(AttemptMark {
            tracking_id: next.tracking_id,
            event: attempt_event(
                self.store.now(),
                next.message_id.as_deref(),
                &rcpts,
                &format!("{host}:{port}"),
            ),
        })
    }

    /// When a domain the runner saw in an outage is out of it, its parked relay entries
    /// become due now rather than at the next recheck.
    async fn release_ended_outages(&self, now: i64) -> anyhow::Result<()> {
        let store = self.store.clone();
        let states = blocking(move || {
            let mut out = Vec::new();
            for d in store.domains()? {
                let phase = store.outage_state(&d.name)?.phase;
                out.push((d.name, phase));
            }
            Ok(out)
        })
        .await?;
        let mut ended = Vec::new();
        {
            let mut phases = self.phases.lock();
            for (name, phase) in states {
                let before = phases.insert(name.clone(), phase);
                if before == Some(OutagePhase::Outage) && phase != OutagePhase::Outage {
                    ended.push(name);
                }
            }
        }
        for name in ended {
            tracing::info!(domain = %name, "outage over: releasing its relay queue");
            let store = self.store.clone();
            blocking(move || {
                let ids: Vec<u64> = store
                    .queue_entries(Some(&name))?
                    .into_iter()
                    .filter(|e| e.kind == QueueKind::Relay && e.next_attempt > now)
                    .map(|e| e.id)
                    .collect();
                store.postpone_entries(&ids, now)
            })
            .await?;
        }
        Ok(())
    }

    fn host_semaphore(&self, key: &str) -> Arc<Semaphore> {
        self.per_host
            .lock()
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_connections_per_host)))
            .clone()
    }

    /// The route of an entry's first pending recipient (relay entries have one route).
    fn route_for(&self, entry: &QueueEntry, domain: Option<&Domain>) -> Route {
        let first = entry
            .pending()
            .next()
            .map(|r| r.address.clone())
            .unwrap_or_default();
        self.route_for_recipient(entry.kind, &first, domain)
    }

    fn route_for_recipient(&self, kind: QueueKind, rcpt: &str, domain: Option<&Domain>) -> Route {
        if kind == QueueKind::Relay {
            let Some(domain) = domain else {
                return Route::Unroutable("the domain is no longer protected".into());
            };
            return match domain.relay_host.as_deref().map(|h| split_host_port(h, 25)) {
                Some(Some((host, port))) => Route::Host {
                    host,
                    port,
                    tls: relay_tls(domain.relay_tls),
                },
                Some(None) => {
                    Route::Unroutable(format!("relay host {:?} is not host[:port]", domain.relay_host))
                }
                None => Route::Unroutable("no relay host configured for the domain".into()),
            };
        }
        let rcpt_domain = domain_of(rcpt);
        let settings = self.settings();
        let tls = settings.config.outbound_tls;
        let fixed = settings
            .config
            .routes
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(&rcpt_domain))
            .map(|(_, target)| target.clone())
            .or_else(|| settings.config.smarthost.clone());
        match fixed.as_deref().map(|t| split_host_port(t, 25)) {
            Some(Some((host, port))) => Route::Host { host, port, tls },
            Some(None) => Route::Unroutable("bad route in configuration".into()),
            None => Route::Mx {
                domain: rcpt_domain,
                tls,
            },
        }
    }

    /// One attempt of one entry: expiry, deleted-message cancellation, then each
    /// destination group in turn, each recorded (synced) before the next starts.
    /// `premarked`: the "attempt started" mark of this entry was written with the
    /// previous entry's outcome. `next_mark`, when given, goes into this entry's last
    /// outcome write; the return value says whether it did.
    #[allow(clippy::too_many_arguments)]
    async fn attempt_entry(
        self: &Arc<Self>,
        entry: QueueEntry,
        domain: Option<Domain>,
        lease: Lease,
        first_permit: &OwnedSemaphorePermit,
        premarked: bool,
        next_mark: Option<AttemptMark>,
    ) -> bool {
        let id = entry.id;
        let mut lease = lease;
        match self
            .try_attempt_entry(entry, domain, &mut lease, first_permit, premarked, next_mark)
            .await
        {
            Ok(marked) => marked,
            Err(e) => {
                tracing::error!(queue = id, error = %format!("{e:#}"), "queue entry attempt failed");
                // Keep the entry from spinning on a store error: look again after a back-off.
                let at = self.clock.now() + self.settings().config.retry_initial_secs as i64;
                let store = self.store.clone();
                let _ = blocking(move || store.release_leases(&[(id, lease)], at)).await;
                false
            }
        }
    }

    /// Gives claimed entries back to the queue, due now (best effort: a lease not
    /// released ends by itself).
    async fn release(&self, leases: Vec<(u64, Lease)>) {
        if leases.is_empty() {
            return;
        }
        let store = self.store.clone();
        let now = self.clock.now();
        if let Err(e) = blocking(move || store.release_leases(&leases, now)).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot release queue leases; they end by themselves");
        }
    }

    /// Runs `attempt` (one destination's SMTP transaction), renewing `lease` every third
    /// of its length meanwhile, so that an attempt slower than a lease is not taken over.
    async fn renewing<T>(
        &self,
        id: u64,
        lease: &mut Lease,
        attempt: impl std::future::Future<Output = T>,
    ) -> T {
        let secs = self.lease_secs();
        let every = Duration::from_secs(u64::try_from(secs / 3).unwrap_or(1).max(1));
        tokio::pin!(attempt);
        let mut renewing = true;
        loop {
            tokio::select! {
                done = &mut attempt => return done,
                _ = tokio::time::sleep(every), if renewing => {
                    let store = self.store.clone();
                    let (current, now) = (*lease, self.clock.now());
                    match blocking(move || store.renew_lease(id, &current, now, secs)).await {
                        Ok(Some(entry)) => {
                            if let Some(renewed) = entry.lease {
                                *lease = renewed;
                            }
                        }
                        Ok(None) => {
                            tracing::warn!(queue = id, "lease on the queue entry lost during the attempt; its outcome will not be recorded");
                            renewing = false;
                        }
                        Err(e) => tracing::warn!(queue = id, error = %format!("{e:#}"), "cannot renew the lease on the queue entry"),
                    }
                }
            }
        }
    }

    async fn try_attempt_entry(
        self: &Arc<Self>,
        entry: QueueEntry,
        domain: Option<Domain>,
        lease: &mut Lease,
        first_permit: &OwnedSemaphorePermit,
        mut premarked: bool,
        mut next_mark: Option<AttemptMark>,
    ) -> anyhow::Result<bool> {
        let now = self.clock.now();
        let secs = self.lease_secs();
        // The pass may have read the entry just before an earlier attempt finished with
        // it: only the state read now, while this task owns the entry, counts. Without
        // this a finished entry could be sent twice. The body comes in the same trip to
        // the blocking pool.
        let store = self.store.clone();
        let id = entry.id;
        let claimed = *lease;
        let (entry, body) = blocking(move || {
            let Some(entry) = store.queue_entry(id)? else {
                return Ok((None, Vec::new()));
            };
            let body = if entry.lease != Some(claimed) || entry.held || entry.is_done() {
                Vec::new()
            } else {
                store.body(&entry.blob)?
            };
            Ok((Some(entry), body))
        })
        .await?;
        let Some(mut entry) = entry else {
            return Ok(false);
        };
        // Another node took it over (our lease ran out while it waited), or it was
        // finished or held meanwhile: nothing to send.
        if entry.lease != Some(*lease) || entry.held || entry.is_done() {
            return Ok(false);
        }
        if lease.until - now < secs / 2 {
            // It waited for a connection for a while: a full lease for the attempt.
            let store = self.store.clone();
            let current = *lease;
            match blocking(move || store.renew_lease(id, &current, now, secs)).await? {
                Some(renewed) => {
                    if let Some(l) = renewed.lease {
                        *lease = l;
                    }
                    entry = renewed;
                }
                None => return Ok(false),
            }
        }
        let settings = domain.clone().unwrap_or_default();
        let lifetime = settings.queue_lifetime_days as i64 * 86_400;
        if now >= entry.created_at + lifetime {
            let pending: Vec<String> = entry.pending().map(|r| r.address.clone()).collect();
            let reason = format!("queue lifetime of {} days exceeded", settings.queue_lifetime_days);
            tracing::warn!(queue = entry.id, rcpts = %pending.join(", "), "{reason}; giving up");
            let store = self.store.clone();
            let (pending2, reason2) = (pending.clone(), reason.clone());
            let id = entry.id;
            blocking(move || store.finish_recipients(id, &pending2, RecipientStatus::Expired, &reason2))
                .await?;
            crate::metrics::METRICS
                .bounced
                .fetch_add(pending.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let failed: Vec<FailedRecipient> = pending
                .into_iter()
                .map(|address| FailedRecipient {
                    address,
                    diagnostic: reason.clone(),
                    remote_mta: None,
                    expired: true,
                })
                .collect();
            self.queue_dsn(&entry, &failed).await?;
            return Ok(false);
        }
        if entry.kind == QueueKind::Relay
            && !settings.redeliver_deleted
            && settings.delivery_mode == DeliveryMode::Both
        {
            entry = self.cancel_deleted(entry).await?;
            if entry.is_done() {
                return Ok(false);
            }
        }

        // Group pending recipients by destination, keeping queue order.
        let mut groups: Vec<(Route, Vec<String>)> = Vec::new();
        for r in entry.pending() {
            let route = self.route_for_recipient(entry.kind, &r.address, domain.as_ref());
            match groups.iter_mut().find(|(g, _)| *g == route) {
                Some((_, list)) => list.push(r.address.clone()),
                None => groups.push((route, vec![r.address.clone()])),
            }
        }
        let mut body = body;
        if entry.kind == QueueKind::Relay && entry.sent_copy {
            // The record of a message the user sent here: the primary's rules file it in
            // Sent instead of the INBOX (docs/operations.md "Sent mail at the primary").
            body.splice(0..0, SENT_COPY_HEADER.iter().copied());
        }
        if entry.kind != QueueKind::Relay {
            if let (Some(selector), Some(key)) = (&settings.dkim_selector, &settings.dkim_key_path) {
                body = dsn::dkim_sign(&body, &settings.name, selector, key);
            }
        }
        let body = Arc::new(body);
        let mut any_deferred = false;
        let mut failures = Vec::new();
        let mut marked_next = false;
        let last_group = groups.len().saturating_sub(1);
        let mut holds_first = true;
        for (index, (route, rcpts)) in groups.into_iter().enumerate() {
            // The chain's own slot serves its destination; another one needs its own.
            let _permit =
                if holds_first && Arc::ptr_eq(first_permit.semaphore(), &self.host_semaphore(&route.key())) {
                    holds_first = false;
                    None
                } else {
                    Some(self.host_semaphore(&route.key()).acquire_owned().await?)
                };
            let delivery = self.deliver_group(
                &entry,
                &route,
                &rcpts,
                body.clone(),
                std::mem::take(&mut premarked),
            );
            let results = self.renewing(entry.id, lease, delivery).await;
            for r in &results {
                match &r.outcome {
                    AttemptOutcome::Deferred(_) => any_deferred = true,
                    AttemptOutcome::Failed(reply) => failures.push(FailedRecipient {
                        address: r.address.clone(),
                        diagnostic: reply.clone(),
                        remote_mta: r.host.clone(),
                        expired: false,
                    }),
                    AttemptOutcome::Delivered(_) => {}
                }
                crate::metrics::METRICS.delivery_outcome(entry.kind, &r.outcome);
            }
            let outcomes: Vec<(String, AttemptOutcome)> =
                results.into_iter().map(|r| (r.address, r.outcome)).collect();
            let now = self.clock.now();
            // This task owns the entry, so its attempt counts as read above are current.
            let attempts = entry
                .recipients
                .iter()
                .filter(|r| outcomes.iter().any(|(a, _)| a.eq_ignore_ascii_case(&r.address)))
                .map(|r| r.attempts + 1)
                .max()
                .unwrap_or(1);
            let next = if any_deferred {
                now + self.settings().config.backoff_secs(attempts) as i64
            } else {
                now
            };
            let mark = if index == last_group {
                next_mark.take()
            } else {
                None
            };
            marked_next = mark.is_some();
            let store = self.store.clone();
            let id = entry.id;
            // Synced before anything else happens to this entry, and only under the lease
            // the attempt ran under; the lease ends with the last destination's outcome.
            let (fence, keep) = (*lease, index != last_group);
            let recorded = tokio::task::spawn_blocking(move || {
                store.record_attempt_and_mark(id, &outcomes, next, mark.as_ref(), Some((&fence, keep)))
            })
            .await?;
            entry = match recorded {
                Ok(updated) => updated,
                Err(StoreError::Conflict(why)) => {
                    // The new owner's attempt counts; this one may have been a duplicate.
                    tracing::warn!(queue = id, reason = %why, "outcome discarded: another node took the queue entry over");
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            };
        }
        if !failures.is_empty() {
            self.queue_dsn(&entry, &failures).await?;
        }
        Ok(marked_next)
    }

    /// Cancels relay recipients whose local copy the user deleted (SPEC: deleted mail is
    /// not redelivered unless the domain says so).
    async fn cancel_deleted(&self, entry: QueueEntry) -> anyhow::Result<QueueEntry> {
        let store = self.store.clone();
        let tracking = entry.tracking_id;
        let candidates: Vec<(String, u64)> = entry
            .pending()
            .filter_map(|r| r.local_user.map(|u| (r.address.clone(), u)))
            .collect();
        if candidates.is_empty() || tracking == 0 {
            return Ok(entry);
        }
        let mut gone = Vec::new();
        for (address, user) in candidates {
            // A recent snapshot may say "still there"; "gone" is always checked afresh.
            let (ids, before) = self.user_copies(user, false).await?;
            if ids.contains(&tracking) {
                continue;
            }
            // The message arrived after the snapshot's scan began: the snapshot cannot
            // say it is gone. Rescanning for every such message made redelivery of a
            // stream of new mail cost a scan of the user's mailboxes per message (one
            // 100,000-message INBOX: 289 deliveries/s and 700 MB, against 2,125/s and
            // 70 MB with the runner off). It is taken as still there; one the user
            // deleted within seconds of its arrival may be redelivered.
            if tracking > before {
                continue;
            }
            if !self.user_copies(user, true).await?.0.contains(&tracking) {
                gone.push(address);
            }
        }
        let id = entry.id;
        let updated = if gone.is_empty() {
            None
        } else {
            Some(blocking(move || store.cancel_as_deleted(id, &gone)).await?)
        };
        Ok(match updated {
            Some(updated) => {
                tracing::info!(
                    queue = id,
                    "recipients cancelled: the user deleted the message (recoverable with `queue redeliver`)"
                );
                updated
            }
            None => entry,
        })
    }

    /// The tracking ids the user holds: a snapshot younger than the TTL unless `fresh`.
    async fn user_copies(&self, user: u64, fresh: bool) -> anyhow::Result<(Arc<HashSet<u64>>, u64)> {
        if !fresh {
            if let Some(h) = self.held_copies.lock().get_mut(&user) {
                if h.taken.elapsed() < HELD_COPIES_TTL || h.refreshing {
                    return Ok((h.ids.clone(), h.before));
                }
                // One task refreshes a stale snapshot; the others (twenty connections
                // draining one user's mail) keep using it meanwhile, rather than each
                // scanning the user's 100,000 messages at once. Only "still there"
                // answers come from a snapshot; "gone" is always checked afresh.
                h.refreshing = true;
            }
        }
        let taken = std::time::Instant::now();
        let store = self.store.clone();
        let scanned = blocking(move || store.user_tracking_snapshot(user)).await;
        let (ids, before) = match scanned {
            Ok((ids, before)) => (Arc::new(ids), before),
            Err(e) => {
                if let Some(h) = self.held_copies.lock().get_mut(&user) {
                    h.refreshing = false;
                }
                return Err(e);
            }
        };
        self.held_copies.lock().insert(
            user,
            HeldCopies {
                taken,
                ids: ids.clone(),
                before,
                refreshing: false,
            },
        );
        Ok((ids, before))
    }

    /// Sends to one destination and says what happened to each recipient.
    async fn deliver_group(
        &self,
        entry: &QueueEntry,
        route: &Route,
        rcpts: &[String],
        body: Arc<Vec<u8>>,
        premarked: bool,
    ) -> Vec<RecipientResult> {
        let all = |outcome: AttemptOutcome, host: Option<String>| -> Vec<RecipientResult> {
            rcpts
                .iter()
                .map(|a| RecipientResult {
                    address: a.clone(),
                    outcome: outcome.clone(),
                    host: host.clone(),
                })
                .collect()
        };
        let candidates = match self.resolve(route).await {
            Ok(c) => c,
            Err(Resolution::Temporary(why)) => {
                tracing::info!(queue = entry.id, rcpts = %rcpts.join(", "), reply = %why, "delivery deferred");
                return all(AttemptOutcome::Deferred(why), None);
            }
            Err(Resolution::Permanent(why)) => {
                tracing::info!(queue = entry.id, rcpts = %rcpts.join(", "), reply = %why, "delivery failed");
                return all(AttemptOutcome::Failed(why), None);
            }
        };
        let key = route.key();
        let tls = match route {
            Route::Host { tls, .. } | Route::Mx { tls, .. } => *tls,
            Route::Unroutable(_) => TlsPolicy::Disabled,
        };
        // What this attempt says about a protected domain's primary (relay entries only).
        let observe = |result: Result<(), String>| {
            if entry.kind == QueueKind::Relay {
                self.observations.record(&entry.domain, result);
            }
        };
        let mut last_error = String::from("no destination host");
        for (host, port) in candidates {
            let mut client = match self.client_for(&key, &host, port, tls).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(queue = entry.id, host = %format!("{host}:{port}"), error = %e, "cannot connect");
                    last_error = format!("{host}:{port}: {e}");
                    observe(Err(last_error.clone()));
                    continue;
                }
            };
            // A mark written ahead (with the previous entry's outcome) names this host:
            // the chain's destination is one fixed host.
            if !(premarked && matches!(route, Route::Host { .. })) {
                let event = attempt_event(self.store.now(), entry.message_id.as_deref(), rcpts, &client.host);
                let store = self.store.clone();
                let tracking = entry.tracking_id;
                if let Err(e) = blocking(move || store.add_tracking_events(tracking, &[event])).await {
                    // Without the mark a duplicate would be invisible: do not send now.
                    tracing::error!(queue = entry.id, error = %format!("{e:#}"), "cannot record the attempt; deferring");
                    self.return_to_pool(&key, client);
                    return all(AttemptOutcome::Deferred("local store error".into()), None);
                }
            }
            let mut sent = client.transaction(&entry.mail_from, rcpts, &body).await;
            if let Err(ClientError::Stale(why)) = &sent {
                // The pooled connection had gone away while idle; nothing was sent.
                tracing::debug!(host = %client.host, %why, "pooled connection gone; reconnecting");
                client = match self.connect(&host, port, tls).await {
                    Ok(c) => c,
                    Err(e) => {
                        last_error = format!("{host}:{port}: {e}");
                        observe(Err(last_error.clone()));
                        continue;
                    }
                };
                sent = client.transaction(&entry.mail_from, rcpts, &body).await;
            }
            match sent {
                Ok(replies) => {
                    // A 4xx to MAIL or to the message refuses the whole transaction: the
                    // primary's trouble. A 4xx to one RCPT (a full mailbox) says nothing
                    // about the server, and neither does a 5xx.
                    let temporary = |r: &client::Reply| (400..500).contains(&r.code);
                    if temporary(&replies.mail) {
                        observe(Err(format!("{}: {}", client.host, replies.mail)));
                    } else if let Some(data) = &replies.data {
                        if data.is_positive() {
                            observe(Ok(()));
                        } else if temporary(data) {
                            observe(Err(format!("{}: {data}", client.host)));
                        }
                    }
                    let host_name = client.host.clone();
                    let results: Vec<RecipientResult> = rcpts
                        .iter()
                        .zip(replies.per_recipient())
                        .map(|(address, reply)| {
                            tracing::info!(queue = entry.id, host = %host_name, rcpt = %address, reply = %reply, "delivery attempt");
                            let text = reply.to_string();
                            let outcome = if reply.is_positive() {
                                AttemptOutcome::Delivered(text)
                            } else if reply.is_permanent() {
                                AttemptOutcome::Failed(text)
                            } else {
                                AttemptOutcome::Deferred(text)
                            };
                            RecipientResult {
                                address: address.clone(),
                                outcome,
                                host: Some(host_name.clone()),
                            }
                        })
                        .collect();
                    self.return_to_pool(&key, client);
                    return results;
                }
                Err(e) => {
                    // Mid-transaction failure: nothing is known to be accepted.
                    tracing::info!(queue = entry.id, host = %client.host, rcpts = %rcpts.join(", "), error = %e, "delivery attempt failed");
                    last_error = format!("{}: {e}", client.host);
                    observe(Err(last_error.clone()));
                    if matches!(e, ClientError::Timeout(_))
                        || matches!(e, ClientError::Io(_))
                        || matches!(e, ClientError::Protocol(_))
                    {
                        // The connection is unusable; the next candidate may do better
                        // only if we never reached DATA, which we cannot know: stop here.
                        break;
                    }
                }
            }
        }
        all(AttemptOutcome::Deferred(last_error), None)
    }

    /// A ready connection: a pooled one that still answers RSET (a server may have closed
    /// it while idle, and failing a transaction for that would defer mail for nothing), or
    /// a new one. Opportunistic TLS that fails the handshake falls back to plaintext, as
    /// Postfix does: the alternative is not sending at all.
    async fn client_for(
        &self,
        key: &str,
        host: &str,
        port: u16,
        tls: TlsPolicy,
    ) -> Result<SmtpClient, ClientError> {
        while let Some(mut pooled) = self.take_pooled(key, host, port) {
            if pooled.caps.pipelining {
                // Checked by the RSET that goes ahead of its next transaction.
                pooled.reused = true;
                return Ok(pooled);
            }
            if pooled.rset().await.is_ok() {
                return Ok(pooled);
            }
        }
        self.connect(host, port, tls).await
    }

    /// A new connection; opportunistic TLS that fails the handshake falls back to
    /// plaintext.
    async fn connect(&self, host: &str, port: u16, tls: TlsPolicy) -> Result<SmtpClient, ClientError> {
        let settings = self.settings();
        let mut client = self.open(host, port, tls, &settings).await?;
        if let Some(login) = settings
            .smarthost_login
            .as_ref()
            .filter(|l| l.host.eq_ignore_ascii_case(host) && l.port == port)
        {
            // Only over TLS: `authenticate` refuses a plaintext connection.
            client.authenticate(&login.user, &login.password).await?;
        }
        Ok(client)
    }

    async fn open(
        &self,
        host: &str,
        port: u16,
        tls: TlsPolicy,
        settings: &Settings,
    ) -> Result<SmtpClient, ClientError> {
        match SmtpClient::connect(host, port, &self.hostname, tls, &settings.tls, settings.timeouts).await {
            Err(ClientError::Tls(why)) if tls == TlsPolicy::Opportunistic => {
                tracing::info!(host = %format!("{host}:{port}"), error = %why, "STARTTLS failed; retrying without TLS");
                SmtpClient::connect(
                    host,
                    port,
                    &self.hostname,
                    TlsPolicy::Disabled,
                    &settings.tls,
                    settings.timeouts,
                )
                .await
            }
            other => other,
        }
    }

    fn take_pooled(&self, key: &str, host: &str, port: u16) -> Option<SmtpClient> {
        let mut pool = self.pool.lock();
        let list = pool.get_mut(key)?;
        let wanted = format!("{host}:{port}");
        let idle = Duration::from_secs(self.settings().config.connection_idle_secs);
        while let Some(pos) = list.iter().position(|c| c.host == wanted) {
            let client = list.swap_remove(pos);
            if client.last_used.elapsed() < idle {
                return Some(client);
            }
        }
        None
    }

    fn return_to_pool(&self, key: &str, client: SmtpClient) {
        if client.messages >= self.settings().config.max_messages_per_connection {
            tokio::spawn(client.quit());
            return;
        }
        self.pool.lock().entry(key.to_string()).or_default().push(client);
    }

    fn close_idle_connections(&self) {
        let idle = Duration::from_secs(self.settings().config.connection_idle_secs);
        let mut expired = Vec::new();
        {
            let mut pool = self.pool.lock();
            for list in pool.values_mut() {
                let mut i = 0;
                while i < list.len() {
                    if list[i].last_used.elapsed() >= idle {
                        expired.push(list.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
        }
        for client in expired {
            tokio::spawn(client.quit());
        }
    }

    /// Candidate hosts for a route, best first.
    async fn resolve(&self, route: &Route) -> Result<Vec<(String, u16)>, Resolution> {
        match route {
            Route::Host { host, port, .. } => Ok(vec![(host.clone(), *port)]),
            Route::Unroutable(why) => Err(Resolution::Temporary(why.clone())),
            Route::Mx { domain, .. } => {
                let resolver = self
                    .resolver
                    .get_or_init(|| async {
                        match TokioResolver::builder_tokio().and_then(|b| b.build()) {
                            Ok(r) => Some(r),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot start the DNS resolver");
                                None
                            }
                        }
                    })
                    .await
                    .as_ref()
                    .ok_or_else(|| Resolution::Temporary("DNS resolver unavailable".into()))?;
                let name = format!("{domain}.");
                match resolver.mx_lookup(name.as_str()).await {
                    Ok(lookup) => {
                        let mut mx: Vec<(u16, String)> = lookup
                            .answers()
                            .iter()
                            .filter_map(|r| match &r.data {
                                RData::MX(mx) => Some((mx.preference, mx.exchange.to_utf8())),
                                _ => None,
                            })
                            .collect();
                        mx.sort();
                        // RFC 7505: a single "." exchange means the domain takes no mail.
                        if mx.len() == 1 && (mx[0].1 == "." || mx[0].1.is_empty()) {
                            return Err(Resolution::Permanent(format!(
                                "556 5.1.10 {domain} accepts no mail (null MX)"
                            )));
                        }
                        if mx.is_empty() {
                            return Ok(vec![(domain.clone(), 25)]);
                        }
                        Ok(mx
                            .into_iter()
                            .map(|(_, host)| (host.trim_end_matches('.').to_string(), 25))
                            .collect())
                    }
                    // RFC 5321 §5.1: no MX records: the domain itself (A/AAAA) is the host.
                    Err(e) if e.is_no_records_found() => Ok(vec![(domain.clone(), 25)]),
                    Err(e) => Err(Resolution::Temporary(format!(
                        "MX lookup for {domain} failed: {e}"
                    ))),
                }
            }
        }
    }

    /// Queues a DSN for failed recipients to the entry's sender ([`enqueue_dsn`]).
    async fn queue_dsn(&self, entry: &QueueEntry, failed: &[FailedRecipient]) -> anyhow::Result<()> {
        let store = self.store.clone();
        let hostname = self.hostname.clone();
        let (e, f) = (entry.clone(), failed.to_vec());
        let outcome = blocking(move || enqueue_dsn(&store, &hostname, &e, &f)).await?;
        if let Some(tracking) = outcome {
            tracing::info!(queue = entry.id, sender = %entry.mail_from, dsn_tracking = tracking, "DSN queued to the sender");
            self.wakeup.notify_one();
        }
        Ok(())
    }
}

/// Queues a DSN for failed recipients to the entry's sender: into the sender's INBOX
/// (and the relay queue for their primary) when the sender is local, otherwise as a
/// notification to the outside. Never for a null sender (`None`). Returns the DSN's
/// tracking id. The queue runner calls it for refusals and expiry, `queue bounce` for
/// an administrator's bounce.
pub fn enqueue_dsn(
    store: &Store,
    hostname: &str,
    entry: &QueueEntry,
    failed: &[FailedRecipient],
) -> understudy_storage::StoreResult<Option<u64>> {
    if entry.mail_from.is_empty() || failed.is_empty() {
        return Ok(None);
    }
    let original = store.body(&entry.blob).unwrap_or_default();
    let dsn = dsn::build_dsn(
        hostname,
        &entry.mail_from,
        &original,
        entry.message_id.as_deref(),
        failed,
        entry.created_at,
    );
    let sender = entry.mail_from.clone();
    let entry_domain = entry.domain.clone();
    let now = store.now();
    let rcpts: Vec<String> = failed.iter().map(|f| f.address.clone()).collect();
    let summary = format!(
        "delivery status notification for queue {} ({})",
        entry.id,
        rcpts.join(", ")
    );
    let sender_domain = domain_of(&sender);
    let mut users = Vec::new();
    let mut queue = Vec::new();
    match store.resolve_recipient(&sender)? {
        Recipient::Local(user) => {
            let settings = store.domain(&sender_domain)?.unwrap_or_default();
            if settings.delivery_mode == DeliveryMode::Both {
                users.push(user.id);
            }
            queue.push(NewQueueEntry {
                kind: QueueKind::Relay,
                domain: sender_domain,
                mail_from: String::new(),
                recipients: vec![(sender.to_ascii_lowercase(), Some(user.id))],
                next_attempt: now,
                sent_copy: false,
            });
        }
        Recipient::Unknown => queue.push(NewQueueEntry {
            kind: QueueKind::Relay,
            domain: sender_domain,
            mail_from: String::new(),
            recipients: vec![(sender.clone(), None)],
            next_attempt: now,
            sent_copy: false,
        }),
        Recipient::NotLocal => queue.push(NewQueueEntry {
            kind: QueueKind::Notification,
            domain: entry_domain,
            mail_from: String::new(),
            recipients: vec![(sender.clone(), None)],
            next_attempt: now,
            sent_copy: false,
        }),
    }
    let request = DeliveryRequest {
        body: &dsn,
        users,
        queue,
        message_id: dsn_message_id(&dsn),
        summary,
    };
    Ok(Some(store.deliver(&request)?.tracking_id))
}

/// On top of the record of a sent message, for the primary's filing rules.
pub const SENT_COPY_HEADER: &[u8] = b"X-Understudy-Sent: yes\r\n";

/// The tracking event written (synced) before a message is sent to `host`.
fn attempt_event(at: i64, message_id: Option<&str>, rcpts: &[String], host: &str) -> TrackingEvent {
    TrackingEvent {
        at,
        kind: "attempt started".into(),
        detail: format!(
            "{} to {} via {}",
            message_id.unwrap_or("(no Message-ID)"),
            rcpts.join(", "),
            host
        ),
    }
}

enum Resolution {
    Temporary(String),
    Permanent(String),
}

fn dsn_message_id(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&message[..message.len().min(4096)]);
    text.lines()
        .find(|l| l.len() > 11 && l[..11].eq_ignore_ascii_case("message-id:"))
        .map(|l| l[11..].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_storage::{ManualClock, StoreOptions};

    const T0: i64 = 1_800_000_000;

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn setup(routes: &[(&str, u16)]) -> (tempfile::TempDir, Store, Arc<ManualClock>, Arc<QueueRunner>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let store = Store::open_with(&dir.path().join("db"), StoreOptions::default(), clock.clone()).unwrap();
        let mut domain = Domain::new("example.com");
        domain.relay_host = Some(format!("127.0.0.1:{}", closed_port()));
        store.add_domain(&domain).unwrap();
        let mut config = DeliveryConfig::default();
        for (d, port) in routes {
            config.routes.insert(d.to_string(), format!("127.0.0.1:{port}"));
        }
        config.connect_timeout_secs = 5;
        let runner = Arc::new(QueueRunner::new(
            store.clone(),
            clock.clone(),
            "test.local".into(),
            config,
            QueueWakeup::default(),
            DeliveryObservations::default(),
        ));
        (dir, store, clock, runner)
    }

    fn queue(store: &Store, kind: QueueKind, from: &str, rcpt: &str) -> u64 {
        let request = DeliveryRequest {
            body: b"From: x@outside.net\r\nMessage-ID: <t@x>\r\nSubject: t\r\n\r\nbody\r\n",
            users: vec![],
            queue: vec![NewQueueEntry {
                kind,
                domain: "example.com".into(),
                mail_from: from.into(),
                recipients: vec![(rcpt.into(), None)],
                next_attempt: store.now(),
                sent_copy: false,
            }],
            message_id: Some("<t@x>".into()),
            summary: "test".into(),
        };
        store.deliver(&request).unwrap().queue_ids[0]
    }

    /// One pass of the runner and every attempt it started, to completion.
    async fn run_once(runner: &Arc<QueueRunner>) {
        let mut tasks = JoinSet::new();
        runner.pass(&mut tasks).await.unwrap();
        while tasks.join_next().await.is_some() {}
    }

    #[tokio::test]
    async fn deferrals_back_off_exponentially_on_the_injected_clock() {
        let (_dir, store, clock, runner) = setup(&[("remote.org", closed_port())]);
        let id = queue(&store, QueueKind::Outbound, "anna@example.com", "bob@remote.org");
        run_once(&runner).await;
        let entry = store.queue_entry(id).unwrap().unwrap();
        assert_eq!(entry.next_attempt, T0 + 300, "first retry after 5 minutes");
        assert_eq!(entry.recipients[0].attempts, 1);
        // Not due yet: nothing happens.
        clock.advance(299);
        run_once(&runner).await;
        assert_eq!(store.queue_entry(id).unwrap().unwrap().recipients[0].attempts, 1);
        clock.advance(1);
        run_once(&runner).await;
        let entry = store.queue_entry(id).unwrap().unwrap();
        assert_eq!(entry.recipients[0].attempts, 2);
        assert_eq!(entry.next_attempt, T0 + 300 + 600, "then doubled");
        assert_eq!(entry.recipients[0].status, RecipientStatus::Pending);
    }

    #[tokio::test]
    async fn relay_entries_wait_while_the_domain_is_in_an_outage() {
        let (_dir, store, _clock, runner) = setup(&[]);
        let id = queue(&store, QueueKind::Relay, "x@outside.net", "anna@example.com");
        store
            .set_outage_state(
                "example.com",
                &understudy_storage::outage::OutageState {
                    phase: OutagePhase::Outage,
                    since: T0,
                    reason: "test".into(),
                    manual: true,
                },
            )
            .unwrap();
        run_once(&runner).await;
        let entry = store.queue_entry(id).unwrap().unwrap();
        assert_eq!(entry.recipients[0].attempts, 0, "not attempted");
        assert_eq!(entry.next_attempt, T0 + 60, "parked until the recheck");
        // The outage ends: the runner sees the phase change and releases the entry.
        store
            .set_outage_state("example.com", &understudy_storage::outage::OutageState::default())
            .unwrap();
        runner.release_ended_outages(T0).await.unwrap();
        assert_eq!(store.queue_entry(id).unwrap().unwrap().next_attempt, T0);
    }

    /// `queue hold DOMAIN`: entries there and arriving later are not attempted and are
    /// out of the due range; release makes them due and the next pass attempts them.
    #[tokio::test]
    async fn a_held_domain_is_not_attempted_until_released() {
        let (_dir, store, _clock, runner) = setup(&[]);
        let before = queue(&store, QueueKind::Relay, "x@outside.net", "anna@example.com");
        assert_eq!(store.set_domain_held("example.com", true, T0).unwrap(), 1);
        let after = queue(&store, QueueKind::Relay, "x@outside.net", "bob@example.com");
        run_once(&runner).await;
        for id in [before, after] {
            let entry = store.queue_entry(id).unwrap().unwrap();
            assert!(entry.held, "{entry:?}");
            assert_eq!(entry.recipients[0].attempts, 0);
            assert_eq!(entry.next_attempt, understudy_storage::hold::HELD_DUE);
        }
        assert_eq!(store.queue_held_count("example.com").unwrap(), 2);
        assert!(store.due_entries(T0 + 86_400, 10).unwrap().is_empty());

        assert_eq!(store.set_domain_held("example.com", false, T0).unwrap(), 2);
        assert_eq!(store.queue_held_count("example.com").unwrap(), 0);
        run_once(&runner).await;
        for id in [before, after] {
            let entry = store.queue_entry(id).unwrap().unwrap();
            assert!(!entry.held);
            assert_eq!(entry.recipients[0].attempts, 1, "attempted after release");
        }
    }

    /// A primary that answers every MAIL with 451 (a real TCP peer, scripted): the
    /// entry is deferred and the monitor is told the primary refused a transaction.
    #[tokio::test]
    async fn a_4xx_from_the_primary_is_reported_to_the_outage_monitor() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 busy-primary ESMTP\r\n").await.unwrap();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-busy-primary\r\n250 PIPELINING\r\n",
                            "MAIL" => b"451 4.3.2 system busy, try later\r\n",
                            "RCPT" => b"503 5.5.1 need MAIL first\r\n",
                            "DATA" => b"503 5.5.1 no valid recipients\r\n",
                            "QUIT" => b"221 bye\r\n",
                            _ => b"250 ok\r\n",
                        };
                        if write.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let store = Store::open_with(&dir.path().join("db"), StoreOptions::default(), clock.clone()).unwrap();
        let mut domain = Domain::new("busy-primary.test");
        domain.relay_host = Some(format!("127.0.0.1:{port}"));
        domain.relay_tls = RelayTls::Disabled;
        domain.delivery_mode = DeliveryMode::Relay;
        store.add_domain(&domain).unwrap();
        let observations = DeliveryObservations::default();
        let runner = Arc::new(QueueRunner::new(
            store.clone(),
            clock.clone(),
            "test.local".into(),
            DeliveryConfig::default(),
            QueueWakeup::default(),
            observations.clone(),
        ));
        let id = store
            .deliver(&DeliveryRequest {
                body: b"Subject: t\r\n\r\nbody\r\n",
                users: vec![],
                queue: vec![NewQueueEntry {
                    kind: QueueKind::Relay,
                    domain: "busy-primary.test".into(),
                    mail_from: "x@outside.net".into(),
                    recipients: vec![("anna@busy-primary.test".into(), None)],
                    next_attempt: T0,
                    sent_copy: false,
                }],
                message_id: None,
                summary: "t".into(),
            })
            .unwrap()
            .queue_ids[0];
        run_once(&runner).await;
        let entry = store.queue_entry(id).unwrap().unwrap();
        assert_eq!(entry.recipients[0].status, RecipientStatus::Pending);
        assert!(
            entry.recipients[0]
                .last_reply
                .as_deref()
                .unwrap_or("")
                .starts_with("451"),
            "{entry:?}"
        );
        assert_eq!(observations.streak("busy-primary.test"), Some((false, 1)));
    }

    #[tokio::test]
    async fn expired_entries_are_dropped_with_a_dsn_to_the_sender() {
        let (_dir, store, clock, runner) = setup(&[("outside.net", closed_port())]);
        let id = queue(&store, QueueKind::Relay, "x@outside.net", "anna@example.com");
        clock.advance(15 * 86_400);
        run_once(&runner).await;
        assert!(store.queue_entry(id).unwrap().is_none(), "expired entry removed");
        let tracking = store.tracking_ids_for_message_id("<t@x>").unwrap();
        let events = store.tracking_events(tracking[0]).unwrap();
        assert!(events.iter().any(|e| e.kind == "expired"), "{events:?}");
        let dsn: Vec<QueueEntry> = store
            .queue_entries(None)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == QueueKind::Notification)
            .collect();
        assert_eq!(dsn.len(), 1);
        assert_eq!(dsn[0].mail_from, "", "DSNs have a null sender");
        assert_eq!(dsn[0].recipients[0].address, "x@outside.net");
        let body = String::from_utf8(store.body(&dsn[0].blob).unwrap()).unwrap();
        assert!(body.contains("Status: 4.4.7"), "{body}");
    }

    #[tokio::test]
    async fn no_dsn_for_a_null_sender() {
        let (_dir, store, clock, runner) = setup(&[]);
        let id = queue(&store, QueueKind::Relay, "", "anna@example.com");
        clock.advance(16 * 86_400);
        run_once(&runner).await;
        assert!(store.queue_entry(id).unwrap().is_none());
        assert!(
            store.queue_entries(None).unwrap().is_empty(),
            "no bounce of a bounce"
        );
    }
}
