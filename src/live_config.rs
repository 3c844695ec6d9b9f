//! [`LiveConfig`]: the configuration as last (re)loaded, for the parts of the server
//! whose sections take effect on reload (`crate::reload` publishes to it). Its own module
//! so that what reads it need not import the reload, nor the reload what it feeds.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::delivery::config::DeliveryConfig;
use crate::ldap::config::LdapConfig;

/// The configuration as last (re)loaded. Cheap to clone; every clone sees a reload.
/// The queue runner and the LDAP syncs get only their own section
/// ([`LiveConfig::delivery`], [`LiveConfig::ldap`]), so they need not know the whole
/// configuration.
#[derive(Clone)]
pub struct LiveConfig {
    all: Arc<watch::Sender<Arc<Config>>>,
    delivery: Arc<watch::Sender<Arc<DeliveryConfig>>>,
    ldap: Arc<watch::Sender<Arc<Vec<LdapConfig>>>>,
}

impl LiveConfig {
    pub fn new(config: Arc<Config>) -> LiveConfig {
        LiveConfig {
            delivery: Arc::new(watch::Sender::new(Arc::new(config.delivery.clone()))),
            ldap: Arc::new(watch::Sender::new(Arc::new(config.ldap.clone()))),
            all: Arc::new(watch::Sender::new(config)),
        }
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Config> {
        self.all.borrow().clone()
    }

    /// `[delivery]` as in force now, and at every reload that changes it.
    pub fn delivery(&self) -> watch::Receiver<Arc<DeliveryConfig>> {
        self.delivery.subscribe()
    }

    /// The `[[ldap]]` sections in force now, and at every reload that changes them.
    pub fn ldap(&self) -> watch::Receiver<Arc<Vec<LdapConfig>>> {
        self.ldap.subscribe()
    }

    /// Puts `config` in force for every holder of this handle.
    pub fn publish(&self, config: Arc<Config>) {
        if **self.delivery.borrow() != config.delivery {
            self.delivery.send_replace(Arc::new(config.delivery.clone()));
        }
        if format!("{:?}", **self.ldap.borrow()) != format!("{:?}", config.ldap) {
            self.ldap.send_replace(Arc::new(config.ldap.clone()));
        }
        self.all.send_replace(config);
    }
}
