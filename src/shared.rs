//! The state every connection and most server tasks need ([`Shared`]): the
//! configuration, the store, the authenticator, the TLS acceptor, the protocol adapters
//! and the per-user session table. `server::run` builds one and hands an `Arc` of it to
//! what it starts; keeping it out of `server.rs` means those tasks do not import the
//! orchestrator that starts them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_rustls::TlsAcceptor;
use understudy_protocol::ConnectionInfo;
use understudy_storage::{Clock, Store};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::config_types::{Network, Service};

/// Everything a connection needs, shared by all of them.
pub struct Shared {
    /// The configuration the server started with: what needs a restart to change is
    /// read here.
    pub config: Arc<Config>,
    /// The configuration as last reloaded (SIGHUP): what takes effect on reload is read
    /// here (`crate::reload`).
    pub live: crate::live_config::LiveConfig,
    pub store: Store,
    pub auth: Arc<Authenticator>,
    /// Swapped by a SIGHUP reload; each new connection and STARTTLS takes the current one.
    pub tls: parking_lot::RwLock<Option<TlsAcceptor>>,
    pub clock: Arc<dyn Clock>,
    pub imap: Arc<crate::backends::imap::ImapStore>,
    /// Addresses actually bound, per service.
    pub bound: Mutex<Vec<(Service, SocketAddr)>>,
    /// The address the autoconfig listener bound (`[autoconfig] listen` may say port 0).
    pub autoconfig_bound: Mutex<Option<SocketAddr>>,
    pub pop3: Arc<crate::backends::pop3::Pop3Store>,
    pub smtp: Arc<crate::backends::smtp::SmtpStore>,
    /// Users whose sessions must end now (admin commands send, drivers listen).
    pub revocations: crate::revoke::Revocations,
    /// Open IMAP and POP3 sessions per user (`limits.max_connections_per_user`).
    pub user_sessions: Arc<crate::sessions::UserSessions>,
    plaintext_networks: Vec<Network>,
    webmail_hosts: Vec<Network>,
}

impl Shared {
    /// Builds the authenticator and the protocol adapters on `store`. New SMTP deliveries
    /// that queue something wake `queue_wakeup`.
    pub fn new(
        config: Arc<Config>,
        store: Store,
        clock: Arc<dyn Clock>,
        tls: Option<TlsAcceptor>,
        queue_wakeup: crate::delivery::QueueWakeup,
    ) -> anyhow::Result<Shared> {
        let auth = Arc::new(
            Authenticator::new(store.clone(), clock.clone(), &config.auth)
                .with_directory_logins(crate::ldap::login::DirectoryLogins::new(&config.ldap)),
        );
        Ok(Shared {
            plaintext_networks: config.plaintext_networks(),
            webmail_hosts: config.webmail_hosts(),
            bound: Mutex::new(Vec::new()),
            autoconfig_bound: Mutex::new(None),
            imap: Arc::new(crate::backends::imap::ImapStore::new(
                store.clone(),
                config.limits.max_message_size,
            )),
            pop3: Arc::new(crate::backends::pop3::Pop3Store::new(store.clone())),
            smtp: Arc::new(
                crate::backends::smtp::SmtpStore::new(store.clone())
                    .with_queue_wakeup(queue_wakeup)
                    .with_outage_parking(config.delivery.outage_recheck_secs)
                    .with_inbound_auth(crate::inbound_auth::InboundVerifier::from_config(
                        &config.inbound_auth,
                        &config.hostname,
                    )?),
            ),
            revocations: crate::revoke::revocations(),
            user_sessions: crate::sessions::UserSessions::new(config.limits.max_connections_per_user),
            live: crate::live_config::LiveConfig::new(config.clone()),
            config,
            store,
            auth,
            tls: parking_lot::RwLock::new(tls),
            clock,
        })
    }

    /// The port the server bound for `service` (the first listener's).
    pub fn bound_port(&self, service: Service) -> Option<u16> {
        self.bound
            .lock()
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, a)| a.port())
    }

    pub fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.read().clone()
    }

    pub fn connection_info(&self, peer: IpAddr, tls: bool) -> ConnectionInfo {
        ConnectionInfo {
            peer,
            tls,
            tls_available: self.tls.read().is_some(),
            allow_plaintext_auth: self.plaintext_networks.iter().any(|n| n.contains(peer)),
            webmail_host: self.webmail_hosts.iter().any(|n| n.contains(peer)),
            hostname: self.config.hostname.clone(),
        }
    }
}
