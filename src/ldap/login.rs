//! Directory-down logins: for a domain with `login = "bind"` a password is checked by
//! binding to the directory as the user. What the directory answers decides; only when
//! it cannot be reached (the disaster that took the mail server may have taken it too)
//! is the password checked against the argon2id hash cached from the user's last
//! successful bind, so users who logged in before can still log in.

use std::collections::HashMap;

use understudy_protocol::Secret;

use super::config::{LdapConfig, LoginMode};
use super::directory::{self, DirectoryError};

/// What the directory said about a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindOutcome {
    /// The bind succeeded: the password is right; cache it.
    Accepted,
    /// The directory said no: refuse, whatever the cache holds.
    Refused,
    /// No answer: check the cached hash instead.
    Unavailable,
}

/// The `login = "bind"` domains and their directories.
#[derive(Debug, Default)]
pub struct DirectoryLogins {
    by_domain: HashMap<String, LdapConfig>,
}

impl DirectoryLogins {
    pub fn new(sections: &[LdapConfig]) -> DirectoryLogins {
        DirectoryLogins {
            by_domain: sections
                .iter()
                .filter(|l| l.login == LoginMode::Bind)
                .map(|l| {
                    (
                        l.domain.trim().trim_end_matches('.').to_ascii_lowercase(),
                        l.clone(),
                    )
                })
                .collect(),
        }
    }

    /// True if passwords of `domain` are checked by the directory.
    pub fn handles(&self, domain: &str) -> bool {
        self.by_domain.contains_key(domain)
    }

    /// Binds as `address` (whose domain `handles` accepted). Blocks for at most the
    /// section's time-outs; never logs the password.
    pub fn bind(&self, address: &str, password: &Secret) -> BindOutcome {
        let domain = understudy_storage::address::domain_of(address);
        let Some(config) = self.by_domain.get(&domain) else {
            return BindOutcome::Unavailable;
        };
        match directory::check_password(config, address, password) {
            Ok(()) => BindOutcome::Accepted,
            Err(DirectoryError::Refused(why)) => {
                tracing::info!(user = %address, reason = %why, "directory refused the login");
                BindOutcome::Refused
            }
            Err(DirectoryError::Unavailable(why)) => {
                tracing::warn!(user = %address, directory = %config.url, reason = %why, "directory unreachable: checking the cached password");
                BindOutcome::Unavailable
            }
        }
    }
}
