//! The running server: opens the store, binds every configured listener, starts the
//! background tasks, accepts connections within global and per-IP limits, and shuts
//! everything down gracefully on one signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use understudy_storage::{Clock, Store, SystemClock};

use crate::admission::{Admission, Refusal};
use crate::config::Config;
use crate::config_types::Service;
use crate::driver::{self, Timeouts};
use crate::outage::handles::{DeliveryObservations, MonitorWake};
use crate::outage::monitor::MonitorHandles;
use crate::services;
use crate::shared::Shared;

/// Opens the store and serves until `shutdown` turns true, then stops accepting, says
/// goodbye to every session and waits (bounded) for them and for every task it started
/// to end. `shutdown` is the one stop signal: every task and connection watches it.
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    private_data_dir(&config.data_dir)?;
    let opened = config.clone();
    let store = tokio::task::spawn_blocking(move || crate::admin::open_store(&opened))
        .await
        .context("store open task")??;
    tracing::info!(backend = store.backend_name(), path = %store.path().display(), "store open");
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::acceptor(t)?),
        None => None,
    };
    // The handles the tasks share, made here and passed to each end (never globals).
    let queue_wakeup = crate::delivery::QueueWakeup::default();
    let monitor_wake = MonitorWake::default();
    let observations = DeliveryObservations::default();
    let shared = Arc::new(Shared::new(
        Arc::new(config),
        store,
        clock,
        tls,
        queue_wakeup.clone(),
    )?);

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
            shared.bound.lock().push((service, local));
            listeners.push((service, listener));
        }
    }
    let metrics_listener = match &shared.config.metrics.listen {
        Some(addr) => Some(
            crate::web::bind("metrics", addr)
                .await
                .with_context(|| format!("metrics.listen: {addr}"))?,
        ),
        None => None,
    };
    let admin_socket = crate::admin::socket::AdminSocket::bind(&crate::admin::socket_path(&shared.config))?;
    let web_listener = match &shared.config.web {
        Some(web) => Some(
            crate::web::bind("web", &web.listen)
                .await
                .with_context(|| format!("web.listen: {}", web.listen))?,
        ),
        None => None,
    };
    let autoconfig_listener = match &shared.config.autoconfig.listen {
        Some(addr) => Some(
            crate::web::bind("autoconfig", addr)
                .await
                .with_context(|| format!("autoconfig.listen: {addr}"))?,
        ),
        None => None,
    };
    if let Some(l) = &autoconfig_listener {
        *shared.autoconfig_bound.lock() = Some(l.local_addr()?);
    }

    // Every task this function starts, joined at shutdown.
    let mut tasks = JoinSet::new();
    if shared.config.delivery.enabled {
        tasks.spawn(crate::delivery::run(
            shared.store.clone(),
            shared.clock.clone(),
            shared.config.hostname.clone(),
            shared.live.delivery(),
            queue_wakeup.clone(),
            observations.clone(),
            shutdown.clone(),
        ));
    }
    // Before "ready": a SIGHUP that arrives before its handler exists would end the
    // process (its default action), and `systemctl reload` may follow start at once.
    let hangups = crate::reload::hangups();
    println!("ready");
    notify_systemd_ready();

    let limits = shared.config.limits.clone();
    // Mail first: the HTTP listeners get their few slots, the mail ones what is left.
    let budget = crate::admission::descriptor_budget(&[limits.max_connections, limits.max_http_connections]);
    let connections = Admission::new(budget[0], limits.max_connections_per_ip);
    let http_connections = Admission::new(budget[1], limits.max_connections_per_ip);
    tasks.spawn(crate::outage::monitor::run(
        shared.store.clone(),
        shared.clock.clone(),
        shared.config.hostname.clone(),
        MonitorHandles {
            wake: monitor_wake.clone(),
            observations,
            queue_wakeup: Some(queue_wakeup.clone()),
        },
        shutdown.clone(),
    ));
    tasks.spawn(admin_socket.serve(
        crate::admin::socket::InServer {
            store: shared.store.clone(),
            config: shared.live.clone(),
            revocations: shared.revocations.clone(),
            monitor: monitor_wake.clone(),
            queue_wakeup: queue_wakeup.clone(),
        },
        shutdown.clone(),
    ));
    for (service, listener) in listeners {
        tasks.spawn(accept_loop(
            service,
            listener,
            shared.clone(),
            connections.clone(),
            shutdown.clone(),
        ));
    }

    tasks.spawn(crate::retention::run(shared.store.clone(), shutdown.clone()));
    crate::ldap::spawn(
        &mut tasks,
        shared.store.clone(),
        shared.live.ldap(),
        shared.revocations.clone(),
        shutdown.clone(),
    );
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tracing::info!(?interval, "systemd watchdog enabled");
        tasks.spawn(watchdog(shared.store.clone(), interval, shutdown.clone()));
    }
    tasks.spawn(crate::reload::on_sighup(
        hangups,
        shared.clone(),
        config_path,
        shutdown.clone(),
    ));
    if let Some(listener) = autoconfig_listener {
        let tls_source = shared.clone();
        tasks.spawn(crate::web::serve(
            listener,
            move || tls_source.tls(),
            crate::autoconfig::router(shared.clone()),
            http_connections.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(listener) = web_listener {
        let tls_source = shared.clone();
        let console =
            crate::web::console::Console::new(shared.clone(), monitor_wake.clone(), queue_wakeup.clone());
        tasks.spawn(crate::web::serve(
            listener,
            move || tls_source.tls(),
            crate::web::console::router(console),
            http_connections.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(listener) = metrics_listener {
        tasks.spawn(crate::web::serve(
            listener,
            || None,
            crate::metrics::router(shared.store.clone()),
            http_connections.clone(),
            shutdown.clone(),
        ));
    }

    let _ = shutdown.wait_for(|stop| *stop).await;
    tracing::info!("shutting down: no new connections; telling sessions goodbye");
    // Every live connection holds a permit; when all are back, every session has ended.
    let grace = Duration::from_secs(30);
    if connections.drained(grace).await {
        tracing::info!("all sessions ended");
    } else {
        tracing::warn!("some sessions did not end within {grace:?}; exiting anyway");
    }
    // The tasks saw the same signal; the queue runner bounds its attempts in flight, an
    // LDAP sync or admin command in progress finishes its write.
    let joined = tokio::time::timeout(grace, async {
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "server task failed");
            }
        }
    })
    .await;
    if joined.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "some server tasks did not end within {grace:?}; exiting anyway"
        );
    }
    Ok(())
}

async fn accept_loop(
    service: Service,
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Admission>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Only ever turns true (or its sender is gone): stop either way.
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(service = service.name(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ticket = match connections.admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(Refusal::Full) => {
                tracing::warn!(service = service.name(), %peer, "connection limit reached; refusing");
                drop(stream);
                continue;
            }
            Err(Refusal::PerIp) => {
                tracing::warn!(service = service.name(), %peer, "per-IP connection limit reached; refusing");
                refuse(service, &stream);
                drop(stream);
                continue;
            }
        };
        crate::metrics::METRICS.connection(service);
        let shared = shared.clone();
        let stop = stop.clone();
        let span = tracing::info_span!("conn", proto = service.name(), %peer);
        tokio::spawn(
            async move {
                let _ticket = ticket;
                if let Err(e) = serve_connection(service, stream, peer, shared, stop).await {
                    tracing::debug!(error = %format!("{e:#}"), "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}

/// Tells a refused plaintext client why, in its protocol's words, without waiting: a
/// flood must not cost a task per connection, so a full socket buffer just skips it.
fn refuse(service: Service, stream: &TcpStream) {
    let reply: &[u8] = match service {
        Service::Imap => b"* BYE [UNAVAILABLE] Too many connections from your address\r\n",
        Service::Pop3 => b"-ERR [SYS/TEMP] Too many connections from your address\r\n",
        Service::Submission | Service::Smtp => b"421 4.7.0 Too many connections from your address\r\n",
        // Implicit TLS: plaintext would be noise before a handshake.
        Service::Imaps | Service::Pop3s | Service::Submissions => return,
    };
    let _ = stream.try_write(reply);
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
        line: Duration::from_secs(limits.line_timeout_secs),
        shutdown_grace: Duration::from_secs(20),
        commands_per_second: match service {
            Service::Imap | Service::Imaps => limits.max_commands_per_second,
            _ => 0,
        },
    };
    let info = shared.connection_info(peer.ip(), service.implicit_tls());
    let account = crate::revoke::SessionAccount::default();
    let logins = crate::auth::LoginPacer::default();
    let session = account
        .clone()
        .track(services::new_session(service, info, &shared, &account, &logins));
    driver::drive(
        service,
        stream,
        service.implicit_tls(),
        shared.tls(),
        session,
        shared.store.clone(),
        timeouts,
        stop,
        shared.revocations.subscribe(),
        logins,
    )
    .await
}

/// The data directory holds every mailbox: mode 0700, also when it existed before (a
/// package may have made it 0755; the docs promise 0700, issue 19 item 9).
fn private_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        for d in [dir.to_path_buf(), dir.join("db")] {
            let Ok(meta) = std::fs::metadata(&d) else { continue };
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("cannot make {} private (mode {mode:o})", d.display()))?;
                tracing::warn!(path = %d.display(), "was mode {mode:o}; set to 700");
            }
        }
    }
    Ok(())
}

fn notify_systemd_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}

/// systemd's watchdog (`WatchdogSec=`): pings at half the interval, and only while the
/// store takes a synced write, so a wedged or full store gets the service restarted.
async fn watchdog(store: Store, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let period = interval / 2;
    loop {
        let probe = store.clone();
        match tokio::task::spawn_blocking(move || probe.health_check()).await {
            Ok(Ok(())) => {
                if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                    tracing::warn!(error = %e, "cannot ping the systemd watchdog");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "store not writable: withholding the watchdog ping"),
            Err(e) => tracing::error!(error = %e, "watchdog check failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}
