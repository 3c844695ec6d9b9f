//! The `[delivery]` section: where outbound mail goes (static routes, a smarthost, or
//! MX lookup), TLS toward remote servers, retry back-off, concurrency and time-outs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config_types::ConfigProblem;

/// STARTTLS policy toward a remote server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TlsPolicy {
    /// STARTTLS when offered, certificate not checked (RFC 7435); plaintext otherwise.
    #[default]
    Opportunistic,
    /// STARTTLS required and the certificate verified against `tls_ca_file`.
    Required,
    /// Never STARTTLS.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Run the queue runner (off only for admin tooling and tests that inspect the queue).
    pub enabled: bool,
    /// Recipient domain -> "host:port", used before the smarthost and MX lookup (tests
    /// point a remote domain at a local sink this way).
    pub routes: BTreeMap<String, String>,
    /// All outbound mail not matched by `routes` goes to this "host[:port]" when set.
    pub smarthost: Option<String>,
    /// Log in to the smarthost as this user (AUTH PLAIN or LOGIN), only ever over TLS
    /// (STARTTLS, e.g. port 587); needs `smarthost_password_file`.
    pub smarthost_user: Option<String>,
    /// The smarthost password: the file's first line; mode 0600 or stricter.
    pub smarthost_password_file: Option<PathBuf>,
    /// STARTTLS policy for outbound mail (relay entries use the domain's `relay_tls`).
    pub outbound_tls: TlsPolicy,
    /// PEM bundle of trusted CAs for `required` TLS.
    pub tls_ca_file: PathBuf,
    /// How often the queue is looked at when nothing wakes the runner.
    pub poll_interval_secs: u64,
    /// First retry delay after a 4xx or time-out; doubles per attempt up to `retry_max_secs`.
    pub retry_initial_secs: u64,
    pub retry_max_secs: u64,
    /// How long relay entries of a domain in an outage are parked before they are looked
    /// at again (a phase change seen by the runner releases them at once).
    pub outage_recheck_secs: u64,
    /// Connections at once to one destination (relay host, route or MX domain).
    pub max_connections_per_host: usize,
    /// Queue entries in flight at once.
    pub max_in_flight: usize,
    pub connect_timeout_secs: u64,
    /// Time-out for each command reply (RFC 5321 §4.5.3.2 suggests 5 minutes).
    pub command_timeout_secs: u64,
    /// Time-out for sending the message and its final reply (RFC 5321: 10 minutes).
    pub data_timeout_secs: u64,
    /// How long an idle connection is kept for reuse.
    pub connection_idle_secs: u64,
    /// Messages sent over one connection before it is closed.
    pub max_messages_per_connection: u32,
    /// How long a runner's claim on a queue entry lasts (renewed while an attempt runs
    /// longer): with several nodes, a dead node's entries are taken over this long after
    /// it claimed or last renewed them (storage `lease.rs`).
    pub lease_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            enabled: true,
            routes: BTreeMap::new(),
            smarthost: None,
            smarthost_user: None,
            smarthost_password_file: None,
            outbound_tls: TlsPolicy::Opportunistic,
            tls_ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            poll_interval_secs: 5,
            retry_initial_secs: 300,
            retry_max_secs: 3600,
            outage_recheck_secs: 60,
            max_connections_per_host: 8,
            max_in_flight: 64,
            connect_timeout_secs: 30,
            command_timeout_secs: 300,
            data_timeout_secs: 600,
            connection_idle_secs: 30,
            max_messages_per_connection: 100,
            lease_secs: 60,
        }
    }
}

/// Splits "host[:port]" (IPv6 in brackets) with a default port.
pub fn split_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    let text = text.trim();
    if text.is_empty() || text.contains(char::is_whitespace) {
        return None;
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && !host.is_empty() => {
            Some((host.to_string(), port.parse().ok()?))
        }
        Some(_) => None,
        None => Some((text.to_string(), default_port)),
    }
}

impl DeliveryConfig {
    /// Relative paths resolve from the configuration file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(p) = self.smarthost_password_file.as_mut() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Every problem in the section, keys prefixed with `delivery.`.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: String| problems.push(ConfigProblem { key, message });
        for (domain, target) in &self.routes {
            if split_host_port(target, 25).is_none() {
                problem(
                    format!("delivery.routes.{domain}"),
                    format!("'{target}' is not host[:port]"),
                );
            }
            if domain.is_empty() || domain.contains(['@', ' ']) {
                problem(
                    format!("delivery.routes.{domain}"),
                    "the key must be a domain name".into(),
                );
            }
        }
        if let Some(host) = &self.smarthost {
            if split_host_port(host, 25).is_none() {
                problem(
                    "delivery.smarthost".into(),
                    format!("'{host}' is not host[:port]"),
                );
            }
        }
        match (&self.smarthost_user, &self.smarthost_password_file) {
            (Some(_), None) => problem(
                "delivery.smarthost_password_file".into(),
                "needed with delivery.smarthost_user".into(),
            ),
            (None, Some(_)) => problem(
                "delivery.smarthost_user".into(),
                "needed with delivery.smarthost_password_file".into(),
            ),
            (Some(_), Some(file)) => {
                if let Err(why) = crate::config_types::check_password_file(file) {
                    problem("delivery.smarthost_password_file".into(), why);
                }
                if self.smarthost.is_none() {
                    problem(
                        "delivery.smarthost_user".into(),
                        "needs delivery.smarthost (whom to log in to)".into(),
                    );
                }
                if self.outbound_tls == TlsPolicy::Disabled {
                    problem(
                        "delivery.outbound_tls".into(),
                        "must not be \"disabled\" with a smarthost login: the password goes only over TLS"
                            .into(),
                    );
                }
            }
            (None, None) => {}
        }
        for (key, value) in [
            ("delivery.poll_interval_secs", self.poll_interval_secs),
            ("delivery.retry_initial_secs", self.retry_initial_secs),
            ("delivery.retry_max_secs", self.retry_max_secs),
            ("delivery.outage_recheck_secs", self.outage_recheck_secs),
            (
                "delivery.max_connections_per_host",
                self.max_connections_per_host as u64,
            ),
            ("delivery.max_in_flight", self.max_in_flight as u64),
            ("delivery.connect_timeout_secs", self.connect_timeout_secs),
            ("delivery.command_timeout_secs", self.command_timeout_secs),
            ("delivery.data_timeout_secs", self.data_timeout_secs),
            ("delivery.lease_secs", self.lease_secs),
            (
                "delivery.max_messages_per_connection",
                self.max_messages_per_connection as u64,
            ),
        ] {
            if value == 0 {
                problem(key.into(), "must be greater than 0".into());
            }
        }
        if self.retry_max_secs < self.retry_initial_secs {
            problem(
                "delivery.retry_max_secs".into(),
                "must not be less than delivery.retry_initial_secs".into(),
            );
        }
        problems
    }

    /// Delay before attempt number `attempts + 1` after `attempts` deferrals: the initial
    /// delay doubling per attempt, capped (Postfix's 5 minutes to about an hour).
    pub fn backoff_secs(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(32);
        self.retry_initial_secs
            .saturating_mul(1u64 << doublings)
            .min(self.retry_max_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("mx.example.com", 25),
            Some(("mx.example.com".into(), 25))
        );
        assert_eq!(
            split_host_port("127.0.0.1:2626", 25),
            Some(("127.0.0.1".into(), 2626))
        );
        assert_eq!(split_host_port("[::1]:26", 25), Some(("::1".into(), 26)));
        assert_eq!(split_host_port("[::1]", 25), Some(("::1".into(), 25)));
        assert_eq!(split_host_port("a b", 25), None);
        assert_eq!(split_host_port("host:x", 25), None);
        assert_eq!(split_host_port("::1", 25), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = DeliveryConfig::default();
        let delays: Vec<u64> = (1..=6).map(|n| c.backoff_secs(n)).collect();
        assert_eq!(delays, [300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(c.backoff_secs(0), 300);
        assert_eq!(c.backoff_secs(u32::MAX), 3600);
    }

    #[test]
    fn problems_have_key_paths() {
        let mut c = DeliveryConfig::default();
        c.routes.insert("example.org".into(), "bad host".into());
        c.retry_max_secs = 10;
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["delivery.routes.example.org", "delivery.retry_max_secs"]);
    }
}
