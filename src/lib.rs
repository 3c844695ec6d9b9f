//! Understudy, an email continuity server: the binary's wiring — configuration, TLS,
//! listeners and the connection driver, authentication, and the admin CLI. Protocol
//! logic lives in `understudy-protocol`, storage in `understudy-storage`.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod autoconfig;
pub mod backends;
pub mod cli;
pub mod compress;
pub mod config;
pub mod config_types;
pub mod delivery;
pub mod dkim;
pub mod driver;
pub mod inbound_auth;
pub mod ldap;
pub mod live_config;
pub mod memory;
pub mod metrics;
pub mod outage;
pub mod password_policy;
pub mod reload;
pub mod retention;
pub mod revoke;
pub mod server;
pub mod services;
pub mod sessions;
pub mod shared;
pub mod tls;
pub mod web;
pub mod webmail;

use tokio::sync::watch;

/// Starts tracing on stderr with the configured level (RUST_LOG wins) and format.
/// Colour only on a terminal: journald and log files get plain text.
pub fn init_tracing(config: &config::LogConfig) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if config.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the server until SIGTERM or SIGINT; SIGHUP reloads `config_path`.
pub async fn run(config: config::Config, config_path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        let _ = tx.send(true);
    });
    server::run(config, config_path, rx).await
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
