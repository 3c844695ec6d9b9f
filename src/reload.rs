//! SIGHUP: re-read the configuration file and the TLS certificate and key without
//! dropping a connection. A configuration with problems is refused (every problem is
//! logged) and the running one stays; so does the old certificate if the new one cannot
//! be loaded.
//!
//! What takes effect at once: the certificate (new connections and STARTTLS), the
//! `[delivery]` routes, smarthost and its login, TLS and retry settings (the queue
//! runner reads them at its next look), the `[[ldap]]` sections (sync tasks restarted,
//! bind logins), the `[smtp]` inbound checks (the next message) and the password policy
//! (the next admin command). Every other changed key is named in a warning: it takes
//! effect at the next restart. The tasks that follow the configuration read it from a
//! [`crate::live_config::LiveConfig`] handle that the reload publishes to.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::shared::Shared;

/// Where SIGHUPs arrive, set up before the server says it is ready.
#[cfg(unix)]
pub type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub type Hangups = Option<()>;

/// Starts listening for SIGHUP (from then on it no longer ends the process). Call
/// inside the runtime.
pub fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; reload needs a restart");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

pub async fn on_sighup(
    hangups: Hangups,
    shared: Arc<Shared>,
    path: Option<PathBuf>,
    mut shutdown: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    {
        let Some(mut hup) = hangups else {
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let (shared, path) = (shared.clone(), path.clone());
                    // Building the inbound checks reads resolv.conf; LDAP settings read
                    // password files: off the async workers.
                    let handle = tokio::runtime::Handle::current();
                    let done = tokio::task::spawn_blocking(move || {
                        let _runtime = handle.enter();
                        reload(&shared, path.as_ref())
                    });
                    if let Err(e) = done.await {
                        tracing::error!(error = %e, "reload failed");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (hangups, shared, path);
        let _ = shutdown.changed().await;
    }
}

/// What a reload changed, by how it took effect.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Sections (or keys) in force now.
    pub applied: Vec<&'static str>,
    /// Sections (or keys) that need a restart.
    pub restart: Vec<&'static str>,
}

/// Sorts the differences between `old` and `new` into what a reload puts in force and
/// what waits for a restart. `[tls]` is reported by the reload itself.
pub fn changes(old: &Config, new: &Config) -> Changes {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut c = Changes::default();
    let (od, nd) = (&old.delivery, &new.delivery);
    for (name, restart, changed) in [
        ("hostname", true, old.hostname != new.hostname),
        ("data_dir", true, old.data_dir != new.data_dir),
        ("listen", true, differs(&old.listen, &new.listen)),
        ("limits", true, differs(&old.limits, &new.limits)),
        ("auth", true, differs(&old.auth, &new.auth)),
        ("log", true, differs(&old.log, &new.log)),
        ("metrics", true, differs(&old.metrics, &new.metrics)),
        ("autoconfig", true, differs(&old.autoconfig, &new.autoconfig)),
        ("web", true, differs(&old.web, &new.web)),
        ("store", true, differs(&old.store, &new.store)),
        ("delivery.enabled", true, od.enabled != nd.enabled),
        (
            "delivery.max_in_flight",
            true,
            od.max_in_flight != nd.max_in_flight,
        ),
        (
            "delivery.max_connections_per_host",
            true,
            od.max_connections_per_host != nd.max_connections_per_host,
        ),
        (
            "password_policy",
            false,
            differs(&old.password_policy, &new.password_policy),
        ),
        ("ldap", false, differs(&old.ldap, &new.ldap)),
        ("smtp", false, differs(&old.inbound_auth, &new.inbound_auth)),
    ] {
        if changed {
            if restart {
                c.restart.push(name);
            } else {
                c.applied.push(name);
            }
        }
    }
    // The rest of [delivery] is read by the queue runner at each look.
    let restart_only = |d: &crate::delivery::config::DeliveryConfig| {
        let mut d = d.clone();
        d.enabled = true;
        d.max_in_flight = 0;
        d.max_connections_per_host = 0;
        d
    };
    if restart_only(od) != restart_only(nd) {
        c.applied.push("delivery");
    }
    c
}

fn reload(shared: &Shared, path: Option<&PathBuf>) {
    tracing::info!("SIGHUP: reloading the configuration");
    let loaded = match path {
        Some(p) => Config::load(p),
        None => Config::dev(),
    };
    let new = match loaded {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration refused, the running one stays: {e}");
            return;
        }
    };
    match &new.tls {
        Some(tls) => match crate::tls::acceptor(tls) {
            Ok(acceptor) => {
                *shared.tls.write() = Some(acceptor);
                tracing::info!(certificate = %tls.certificate.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!("new TLS certificate refused, the old one stays: {e:#}");
                return;
            }
        },
        None => tracing::warn!("the new configuration has no [tls]; keeping the current certificate"),
    }
    let old = shared.live.current();
    let mut changes = changes(&old, &new);
    // Sections whose new settings could not be built keep the running ones: say so
    // rather than claim they took effect.
    let mut kept = Vec::new();
    if changes.applied.contains(&"smtp") {
        match crate::inbound_auth::InboundVerifier::from_config(&new.inbound_auth, &old.hostname) {
            Ok(verifier) => shared.smtp.replace_inbound_auth(verifier),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "new [smtp] inbound checks refused, the running ones stay");
                kept.push("smtp");
            }
        }
    }
    if changes.applied.contains(&"ldap") {
        shared
            .auth
            .replace_directory_logins(crate::ldap::login::DirectoryLogins::new(&new.ldap));
    }
    changes.applied.retain(|s| !kept.contains(s));
    // The queue runner, the LDAP sync tasks and admin commands read it from here.
    shared.live.publish(Arc::new(new));
    if changes.restart.is_empty() {
        if changes.applied.is_empty() {
            tracing::info!("configuration reloaded: nothing else changed");
        } else {
            tracing::info!(applied = %changes.applied.join(", "), "configuration reloaded");
        }
    } else {
        tracing::warn!(
            applied = %changes.applied.join(", "),
            restart_needed = %changes.restart.join(", "),
            "configuration reloaded; the restart_needed sections keep their running values until the next restart"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Config {
        Config::parse(
            &format!("hostname = \"mx.example.com\"\ndata_dir = \"/tmp/x\"\n{extra}"),
            "t.toml",
            None,
        )
        .unwrap()
    }

    #[test]
    fn every_changed_section_is_applied_or_named_for_a_restart() {
        let old = parse("");
        let new = parse(
            "[delivery]\nsmarthost = \"relay.example.net:25\"\nmax_in_flight = 3\n\
             [limits]\nmax_recipients = 5\n[smtp]\nverify_inbound = \"off\"\n\
             [password_policy]\nmin_length = 12\n",
        );
        let c = changes(&old, &new);
        assert_eq!(c.applied, ["password_policy", "smtp", "delivery"]);
        assert_eq!(c.restart, ["limits", "delivery.max_in_flight"]);
        assert_eq!(changes(&old, &old), Changes::default());
    }

    /// The console and the store are opened at start: a change is named, not ignored.
    #[test]
    fn a_changed_console_or_store_is_named_for_a_restart() {
        let old = parse("");
        let mut new = old.clone();
        new.web = Some(crate::config::WebConfig::default());
        new.store.pool_size += 1;
        let c = changes(&old, &new);
        assert!(c.applied.is_empty(), "{c:?}");
        assert_eq!(c.restart, ["web", "store"]);
    }
}
