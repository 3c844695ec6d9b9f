//! The running server: opens the store, binds every configured listener, accepts
//! connections within global and per-IP limits, and shuts down gracefully.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;
use understudy_protocol::ConnectionInfo;
use understudy_storage::{Clock, Store, SystemClock};

use crate::auth::Authenticator;
use crate::config::{Config, Network, Service};
use crate::driver::{self, Timeouts};
use crate::services;

/// Everything a connection needs, shared by all of them.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub auth: Arc<Authenticator>,
    pub tls: Option<TlsAcceptor>,
    pub clock: Arc<dyn Clock>,
    pub pop3: Arc<crate::pop3::Pop3Store>,
    pub smtp: Arc<crate::smtp::SmtpStore>,
    plaintext_networks: Vec<Network>,
}

impl Shared {
    pub fn connection_info(&self, peer: IpAddr, tls: bool) -> ConnectionInfo {
        ConnectionInfo {
            peer,
            tls,
            tls_available: self.tls.is_some(),
            allow_plaintext_auth: self.plaintext_networks.iter().any(|n| n.contains(peer)),
            hostname: self.config.hostname.clone(),
        }
    }
}

/// Counts connections per client address; the guard gives the slot back.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut map = self.0.lock();
        let count = map.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PerIpGuard {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut map = self.table.0.lock();
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Opens the store and serves until `shutdown` turns true, then stops accepting, says
/// goodbye to every session and waits (bounded) for them to end.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let db_dir = config.db_dir();
    let store = tokio::task::spawn_blocking(move || Store::open(&db_dir))
        .await
        .context("store open task")??;
    tracing::info!(path = %store.path().display(), "store open");
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::acceptor(t)?),
        None => None,
    };
    let auth = Arc::new(Authenticator::new(store.clone(), clock.clone(), &config.auth));
    let queue_wakeup = crate::delivery::QueueWakeup::default();
    let shared = Arc::new(Shared {
        plaintext_networks: config.plaintext_networks(),
        pop3: Arc::new(crate::pop3::Pop3Store::new(store.clone())),
        smtp: Arc::new(crate::smtp::SmtpStore::new(store.clone()).with_queue_wakeup(queue_wakeup.clone())),
        config,
        store,
        auth,
        tls,
        clock,
    });

    let mut listeners = Vec::new();
    for service in Service::ALL {
        for addr in shared.config.listen.addresses(service) {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("listen.{}: {addr}", service.name()))?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for {}", service.name()))?;
            let local = listener.local_addr()?;
            tracing::info!(service = service.name(), addr = %local, "listening");
            // Machine-readable line for the test harness and scripts.
            println!("listening {} {}", service.name(), local);
            listeners.push((service, listener));
        }
    }
    let queue_runner = shared.config.delivery.enabled.then(|| {
        let s = &shared;
        crate::delivery::spawn(
            s.store.clone(),
            s.clock.clone(),
            s.config.hostname.clone(),
            s.config.delivery.clone(),
            queue_wakeup,
            shutdown.clone(),
        )
    });
    println!("ready");
    notify_systemd_ready();

    let limits = shared.config.limits.clone();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_tasks = Vec::new();
    for (service, listener) in listeners {
        let shared = shared.clone();
        let connections = connections.clone();
        let per_ip = per_ip.clone();
        let stop = stop_rx.clone();
        accept_tasks.push(tokio::spawn(accept_loop(
            service,
            listener,
            shared,
            connections,
            per_ip,
            stop,
        )));
    }

    let _ = shutdown.wait_for(|stop| *stop).await;
    tracing::info!("shutting down: no new connections; telling sessions goodbye");
    let _ = stop_tx.send(true);
    for task in accept_tasks {
        task.abort();
    }
    // Every live connection holds a permit; when all are back, every session has ended.
    let grace = Duration::from_secs(30);
    match tokio::time::timeout(grace, connections.acquire_many(limits.max_connections as u32)).await {
        Ok(_) => tracing::info!("all sessions ended"),
        Err(_) => tracing::warn!("some sessions did not end within {grace:?}; exiting anyway"),
    }
    if let Some(runner) = queue_runner {
        let _ = runner.await;
    }
    Ok(())
}

async fn accept_loop(
    service: Service,
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(service = service.name(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(service = service.name(), %peer, "connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let Some(ip_guard) = per_ip.try_take(peer.ip(), shared.config.limits.max_connections_per_ip) else {
            tracing::warn!(service = service.name(), %peer, "per-IP connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        let span = tracing::info_span!("conn", proto = service.name(), %peer);
        tokio::spawn(
            async move {
                let _permit = permit;
                let _ip_guard = ip_guard;
                if let Err(e) = serve_connection(service, stream, peer, shared, stop).await {
                    tracing::debug!(error = %format!("{e:#}"), "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}

async fn serve_connection(
    service: Service,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let limits = &shared.config.limits;
    let timeouts = Timeouts {
        login: Duration::from_secs(limits.login_timeout_secs),
        idle: Duration::from_secs(match service {
            Service::Imap | Service::Imaps => limits.idle_timeout_secs,
            _ => limits.command_timeout_secs,
        }),
        tls_handshake: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(20),
    };
    let info = shared.connection_info(peer.ip(), service.implicit_tls());
    let session = services::new_session(service, info, &shared);
    driver::drive(
        stream,
        service.implicit_tls(),
        shared.tls.clone(),
        session,
        shared.store.clone(),
        timeouts,
        stop,
    )
    .await
}

fn notify_systemd_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}
