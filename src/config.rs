//! Server configuration: a TOML file read in two stages — serde with unknown keys
//! refused, then validation that reports every problem at once with its key path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config_types::{ConfigProblem, Network, Service};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name used in greetings, `Received` headers and HELO.
    pub hostname: String,
    /// Directory holding the database (`db/`) and the admin socket; created 0700.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub password_policy: PasswordPolicy,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub autoconfig: AutoconfigConfig,
    /// The web console and its JSON API; absent: not served.
    #[serde(default)]
    pub web: Option<WebConfig>,
    #[serde(default)]
    pub delivery: crate::delivery::config::DeliveryConfig,
    /// Directories that provide users of protected domains (one section per domain).
    #[serde(default)]
    pub ldap: Vec<crate::ldap::config::LdapConfig>,
    /// SPF/DKIM/DMARC checks of inbound MX mail. Written `[smtp]` in the file (the
    /// name it has always had there).
    #[serde(default, rename = "smtp")]
    pub inbound_auth: crate::inbound_auth::InboundAuthConfig,
    /// Where the mail store is: RocksDB under `data_dir` (the default), or PostgreSQL
    /// shared by several nodes.
    #[serde(default)]
    pub store: StoreConfig,
}

impl StoreConfig {
    /// What `check-config` reports about `[store]`, each with its key.
    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match self.backend {
            StoreBackend::Rocksdb => {
                for (key, set) in [
                    ("store.url", self.url.is_some()),
                    ("store.password_file", self.password_file.is_some()),
                    ("store.ca_file", self.ca_file.is_some()),
                ] {
                    if set {
                        out.push((key.into(), "only used with backend = \"postgres\"".into()));
                    }
                }
            }
            StoreBackend::Postgres => {
                match &self.url {
                    None => out.push((
                        "store.url".into(),
                        "backend = \"postgres\" needs a url, e.g. url = \"postgresql://understudy@db.example.com/understudy\""
                            .into(),
                    )),
                    Some(url) => {
                        if let Err(e) = understudy_storage::PgOptions::check_url(url) {
                            out.push(("store.url".into(), e));
                        }
                    }
                }
                if let Some(path) = &self.password_file {
                    if let Err(e) = crate::config_types::check_password_file(path) {
                        out.push(("store.password_file".into(), e));
                    }
                }
                if let Some(path) = &self.ca_file {
                    if !path.is_file() {
                        out.push((
                            "store.ca_file".into(),
                            format!("file {} does not exist", path.display()),
                        ));
                    }
                    if self.tls == StoreTls::Off {
                        out.push(("store.ca_file".into(), "set, but tls = \"off\"".into()));
                    }
                }
            }
        }
        if !(1..=1000).contains(&self.pool_size) {
            out.push((
                "store.pool_size".into(),
                format!("{} is not between 1 and 1000", self.pool_size),
            ));
        }
        match (self.bodies, &self.s3) {
            (StoreBodies::S3, None) => out.push((
                "store.s3".into(),
                "bodies = \"s3\" needs a [store.s3] section (endpoint, bucket, access_key_id, secret_key_file)"
                    .into(),
            )),
            (StoreBodies::S3, Some(s3)) => out.extend(s3.problems()),
            (StoreBodies::Store, Some(_)) => {
                out.push(("store.s3".into(), "only used with bodies = \"s3\"".into()))
            }
            (StoreBodies::Store, None) => {}
        }
        out
    }
}

/// `[store]`: which engine holds the mail store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// PostgreSQL only: `postgresql://user@host:5432/understudy` or `host=... dbname=...`.
    pub url: Option<String>,
    /// PostgreSQL only: a file holding the password (kept out of the URL and the
    /// configuration file; mode 0600).
    pub password_file: Option<PathBuf>,
    /// PostgreSQL only: connections this node keeps open at most.
    pub pool_size: usize,
    /// PostgreSQL only: "require" (TLS, the server's certificate verified) or "off"
    /// (a Unix socket, loopback or a private network).
    pub tls: StoreTls,
    /// PostgreSQL only: CA certificates (PEM) to verify the server with instead of the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// Where message bodies are kept: "store" (with the records, the default) or "s3"
    /// (an S3-compatible bucket, `[store.s3]`; the store keeps records and counts).
    pub bodies: StoreBodies,
    pub s3: Option<S3Config>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBodies {
    Store,
    S3,
}

/// `[store.s3]`: the bucket of bodies when `[store] bodies = "s3"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `https://s3.eu-west-1.amazonaws.com`, `https://minio.example.com:9000`.
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_s3_region")]
    pub region: String,
    pub access_key_id: String,
    /// A file (mode 0600) holding the secret access key on its first line; the key
    /// itself is never written in the configuration.
    pub secret_key_file: PathBuf,
    /// Objects are named `<prefix>/<sha-256 in hex>`.
    #[serde(default)]
    pub prefix: String,
    /// Plain HTTP to the endpoint: a loopback stand-in only.
    #[serde(default)]
    pub allow_http: bool,
    /// Each call to the bucket, retries included, gives up after this long.
    #[serde(default = "default_s3_timeout")]
    pub timeout_secs: u64,
    /// Released and orphaned objects are deleted this long after, not before.
    #[serde(default = "default_s3_grace")]
    pub sweep_grace_secs: u64,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

fn default_s3_timeout() -> u64 {
    understudy_storage::S3Options::DEFAULT_TIMEOUT.as_secs()
}

fn default_s3_grace() -> u64 {
    understudy_storage::S3Options::DEFAULT_GRACE.as_secs()
}

impl S3Config {
    /// What `check-config` reports about `[store.s3]`, each with its key.
    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |key: &str, text: String| out.push((format!("store.s3.{key}"), text));
        let (scheme, rest) = match self.endpoint.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => (String::new(), self.endpoint.as_str()),
        };
        let authority = rest.split('/').next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        match scheme.as_str() {
            "https" => {}
            "http" if !self.allow_http => bad(
                "endpoint",
                "http:// needs allow_http = true (a loopback stand-in only); use https://".into(),
            ),
            "http" => {}
            _ => bad("endpoint", format!("{} is not an http(s):// URL", self.endpoint)),
        }
        if host.is_empty() {
            bad("endpoint", "names no host".into());
        }
        if self.allow_http {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bad(
                    "allow_http",
                    format!("plain HTTP only to a loopback endpoint, not {host}"),
                );
            }
        }
        let b = &self.bucket;
        if !(3..=63).contains(&b.len())
            || !b
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            || !b.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            bad(
                "bucket",
                format!("{b:?} is not an S3 bucket name (3 to 63 lower-case letters, digits, '-' and '.')"),
            );
        }
        if self.region.trim().is_empty() {
            bad("region", "is empty".into());
        }
        if self.access_key_id.trim().is_empty() {
            bad("access_key_id", "is empty".into());
        }
        if let Err(e) = crate::config_types::check_password_file(&self.secret_key_file) {
            bad("secret_key_file", e);
        }
        if !(1..=300).contains(&self.timeout_secs) {
            bad(
                "timeout_secs",
                format!("{} is not between 1 and 300", self.timeout_secs),
            );
        }
        out
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Rocksdb,
            url: None,
            password_file: None,
            pool_size: 16,
            tls: StoreTls::Require,
            ca_file: None,
            bodies: StoreBodies::Store,
            s3: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Rocksdb,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreTls {
    Require,
    Off,
}

/// HTTPS listener for Thunderbird autoconfig, Outlook autodiscover and Apple profiles.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoconfigConfig {
    /// e.g. "[::]:443"; unset: not served. Uses the [tls] certificate.
    pub listen: Option<String>,
}

/// The web console (`[web]`): admin pages, user self-service and the JSON API, over
/// HTTPS with the [tls] certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Loopback unless set otherwise: put it on a public address deliberately.
    pub listen: String,
    /// A console session ends after this long without a request...
    pub session_idle_secs: u64,
    /// ...and this long after its login, whatever happens.
    pub session_max_secs: u64,
    /// Failed console logins per name or per client address before a lock-out.
    pub max_failures: u32,
    pub lockout_secs: u64,
    /// Largest request body (a CSV upload), bytes.
    pub max_upload_bytes: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:8443".into(),
            session_idle_secs: 30 * 60,
            session_max_secs: 12 * 3600,
            max_failures: 5,
            lockout_secs: 900,
            max_upload_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The local HTTP port for Prometheus (`/metrics`) and health checks (`/health`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// e.g. "127.0.0.1:9187"; unset: no metrics listener.
    pub listen: Option<String>,
}

pub use crate::tls::TlsConfig;

/// Addresses to listen on, per service. Port 0 picks a free port; the server logs (and
/// prints on stdout) what it actually bound.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    #[serde(default)]
    pub imap: Vec<String>,
    #[serde(default)]
    pub imaps: Vec<String>,
    #[serde(default)]
    pub pop3: Vec<String>,
    #[serde(default)]
    pub pop3s: Vec<String>,
    #[serde(default)]
    pub submission: Vec<String>,
    #[serde(default)]
    pub submissions: Vec<String>,
    #[serde(default)]
    pub smtp: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections the mail listeners hold at once (lowered at start if the descriptor
    /// limit cannot back it; see `admission::descriptor_budget`).
    pub max_connections: usize,
    /// Connections per client address, on every listener (mail and HTTP alike).
    pub max_connections_per_ip: usize,
    /// Connections the HTTP listeners (metrics, autoconfig) hold at once, apart from
    /// the mail listeners' so a flood of them cannot take the mail ports' descriptors.
    pub max_http_connections: usize,
    /// Open IMAP and POP3 sessions per user (0: unlimited).
    pub max_connections_per_user: usize,
    /// IMAP commands per second per connection; a client going faster is slowed down
    /// (its next read waits), not refused (0: unlimited).
    pub max_commands_per_second: u32,
    /// Largest message accepted (SMTP SIZE, IMAP APPENDLIMIT), bytes.
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Idle time before an unauthenticated connection is dropped.
    pub login_timeout_secs: u64,
    /// Idle time allowed between commands once logged in (IMAP: at least 30 minutes,
    /// RFC 3501 §5.4; IDLE clients re-issue within 29 minutes).
    pub idle_timeout_secs: u64,
    /// SMTP and POP3 command time-out.
    pub command_timeout_secs: u64,
    /// A command (line, literal or SMTP DATA) started but not finished must finish, or
    /// keep arriving at 16 KiB per period, within this time: cuts off slowloris clients.
    pub line_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 50,
            max_http_connections: 64,
            max_connections_per_user: 50,
            max_commands_per_second: 500,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            login_timeout_secs: 60,
            idle_timeout_secs: 31 * 60,
            command_timeout_secs: 300,
            line_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Networks (CIDR) from which logins are allowed before TLS. Empty by default:
    /// passwords never cross the network in clear.
    pub plaintext_networks: Vec<String>,
    /// Webmail hosts (addresses or CIDR networks), e.g. the Roundcube server: one
    /// address logs in for every webmail user, so its own address is never locked out
    /// as a whole, and over IMAP it may name each user's address with `ID
    /// ("x-originating-ip" ...)` (Roundcube's `understudy` plugin sends it), which the
    /// throttle counts instead. Only hosts listed here are believed.
    pub webmail_hosts: Vec<String>,
    /// How long a verified password stays in the in-memory credential cache.
    pub cache_ttl_secs: u64,
    /// Failed logins per address or per client IP before a lock-out.
    pub max_failures: u32,
    pub lockout_secs: u64,
    /// A failed login is answered after this delay times the address's recent failures
    /// (capped at 5 s), so guessing slows down before the lock-out. 0 turns it off.
    pub failure_delay_ms: u64,
    /// Threads that run argon2 (0: half the cores, at least one), apart from the
    /// threads that serve sessions, so failed-login floods cannot starve the mail flow.
    pub hash_threads: usize,
    /// Password checks that may wait per hash thread; past that a login gets a
    /// temporary failure at once. Addresses with recent failures get a quarter of it.
    pub hash_queue: usize,
}

impl AuthConfig {
    pub fn hash_threads(&self) -> usize {
        match self.hash_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2)),
            n => n,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            plaintext_networks: Vec::new(),
            webmail_hosts: Vec::new(),
            cache_ttl_secs: 300,
            max_failures: 10,
            lockout_secs: 900,
            failure_delay_ms: 500,
            hash_threads: 0,
            hash_queue: 64,
        }
    }
}

/// SPEC "Accounts": minimum 8 characters, upper and lower case, a digit; configurable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub require_upper: bool,
    pub require_lower: bool,
    pub require_digit: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_length: 8,
            require_upper: true,
            require_lower: true,
            require_digit: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. "info" or "understudy=debug,info"; RUST_LOG overrides it.
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path} has {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: String,
        problems: Vec<ConfigProblem>,
    },
}

impl ListenConfig {
    pub fn addresses(&self, service: Service) -> &[String] {
        match service {
            Service::Imap => &self.imap,
            Service::Imaps => &self.imaps,
            Service::Pop3 => &self.pop3,
            Service::Pop3s => &self.pop3s,
            Service::Submission => &self.submission,
            Service::Submissions => &self.submissions,
            Service::Smtp => &self.smtp,
        }
    }
}

/// The top-level keys of a file not yet read, and what reading them found.
struct SectionReader {
    table: toml::Table,
    problems: Vec<ConfigProblem>,
    /// Keys whose value could not be read at all (their defaults stand in).
    unread: Vec<String>,
}

impl SectionReader {
    /// Takes `key` out of the file and reads it; `required`: what to say if it is absent.
    fn section<T: serde::de::DeserializeOwned>(&mut self, key: &str, required: Option<&str>) -> Option<T> {
        let Some(value) = self.table.remove(key) else {
            if let Some(what) = required {
                self.problems.push(ConfigProblem {
                    key: key.into(),
                    message: format!("missing: {what}"),
                });
                self.unread.push(key.to_string());
            }
            return None;
        };
        let read = read_section::<T>(key, value, &mut self.problems);
        if read.is_none() {
            self.unread.push(key.to_string());
        }
        read
    }
}

/// Reads one section into its type. When that fails, each of its keys is tried on its
/// own (the other keys at their defaults), so every unknown key and every value of the
/// wrong type is reported with its path, not just the first one serde met.
fn read_section<T: serde::de::DeserializeOwned>(
    key: &str,
    value: toml::Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    let whole = match T::deserialize(value.clone()) {
        Ok(v) => return Some(v),
        Err(e) => e,
    };
    let mut bad = Vec::new();
    if let toml::Value::Table(table) = &value {
        for (k, v) in table {
            let mut one = toml::Table::new();
            one.insert(k.clone(), v.clone());
            if let Err(e) = T::deserialize(toml::Value::Table(one)) {
                // A required key missing from this one-key table says nothing about k.
                if e.message().starts_with("missing field") {
                    continue;
                }
                bad.push(k.clone());
                problems.push(ConfigProblem {
                    key: format!("{key}.{k}"),
                    message: serde_message(e.message()),
                });
            }
        }
    }
    if bad.is_empty() {
        problems.push(ConfigProblem {
            key: key.into(),
            message: serde_message(whole.message()),
        });
        return None;
    }
    // The rest of the section, so that validation still looks at its good keys.
    let toml::Value::Table(mut rest) = value else {
        return None;
    };
    for k in &bad {
        rest.remove(k);
    }
    T::deserialize(toml::Value::Table(rest)).ok()
}

/// serde's "unknown field `x`, expected one of ..." as this file's words.
fn serde_message(message: &str) -> String {
    match message.strip_prefix("unknown field ") {
        Some(rest) => format!("unknown key {rest}"),
        None => message.to_string(),
    }
}

/// The built-in development configuration used when no `--config` is given: unprivileged
/// ports on loopback, data in `./data`, the dev certificates in `certs-dev/`.
pub const DEV_CONFIG: &str = include_str!("../config/dev.toml");

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: crate::config_types::io_reason(&e),
        })?;
        Config::parse(&text, &path.display().to_string(), path.parent())
    }

    /// The dev defaults (see [`DEV_CONFIG`]), read as if from `./config/dev.toml`:
    /// its relative paths resolve from the `config/` directory of the checkout the
    /// server runs in, as they do with `--config config/dev.toml`.
    pub fn dev() -> Result<Config, ConfigError> {
        let base = std::env::current_dir()
            .map(|d| d.join("config"))
            .unwrap_or_else(|_| PathBuf::from("config"));
        Config::parse(DEV_CONFIG, "built-in dev config (config/dev.toml)", Some(&base))
    }

    /// Parses and validates `text`; relative paths are resolved against `base` if given
    /// (the directory of the config file), otherwise against the working directory.
    /// Every problem is reported at once: an unknown key or a value of the wrong type
    /// in one section does not hide the problems of the others, nor those validation
    /// finds in the sections that could be read.
    pub fn parse(text: &str, origin: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        let (mut config, mut problems, unread) = Config::from_table(table);
        if let Some(base) = base.filter(|b| !b.as_os_str().is_empty()) {
            config.resolve_paths(base);
        }
        // A section that could not be read stands at its defaults here: what validation
        // says about it would be about those defaults, not the file.
        problems.extend(config.validate().into_iter().filter(|p| {
            !unread.iter().any(|u| {
                p.key == *u || p.key.starts_with(&format!("{u}.")) || p.key.starts_with(&format!("{u}["))
            })
        }));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_string(),
                problems,
            })
        }
    }

    /// Reads each top-level key into its section type on its own, so that one bad
    /// section does not stop the others. Returns the configuration (unreadable sections
    /// at their defaults), the problems found, and the keys that could not be read.
    fn from_table(table: toml::Table) -> (Config, Vec<ConfigProblem>, Vec<String>) {
        let mut r = SectionReader {
            table,
            problems: Vec::new(),
            unread: Vec::new(),
        };
        let hostname: Option<String> = r.section(
            "hostname",
            Some("the name users' mail apps connect to, e.g. hostname = \"continuity.example.com\""),
        );
        let data_dir: Option<PathBuf> = r.section(
            "data_dir",
            Some("where the database lives, e.g. data_dir = \"/var/lib/understudy\""),
        );
        let tls: Option<TlsConfig> = r.section("tls", None);
        let listen: Option<ListenConfig> = r.section("listen", None);
        let limits: Option<Limits> = r.section("limits", None);
        let auth: Option<AuthConfig> = r.section("auth", None);
        let password_policy: Option<PasswordPolicy> = r.section("password_policy", None);
        let log: Option<LogConfig> = r.section("log", None);
        let metrics: Option<MetricsConfig> = r.section("metrics", None);
        let autoconfig: Option<AutoconfigConfig> = r.section("autoconfig", None);
        let delivery: Option<crate::delivery::config::DeliveryConfig> = r.section("delivery", None);
        let inbound_auth: Option<crate::inbound_auth::InboundAuthConfig> = r.section("smtp", None);
        let web: Option<WebConfig> = r.section("web", None);
        let store: Option<StoreConfig> = r.section("store", None);
        let ldap = match r.table.remove("ldap") {
            Some(toml::Value::Array(items)) => {
                let mut sections = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let key = format!("ldap[{i}]");
                    match read_section::<crate::ldap::config::LdapConfig>(&key, item, &mut r.problems) {
                        Some(s) => sections.push(s),
                        None => r.unread.push(key),
                    }
                }
                sections
            }
            Some(_) => {
                r.problems.push(ConfigProblem {
                    key: "ldap".into(),
                    message: "must be [[ldap]] sections (an array of tables)".into(),
                });
                r.unread.push("ldap".into());
                Vec::new()
            }
            None => Vec::new(),
        };
        let SectionReader {
            table,
            mut problems,
            unread,
        } = r;
        for key in table.keys() {
            problems.push(ConfigProblem {
                key: key.clone(),
                message: "unknown key (known: hostname, data_dir, [tls], [listen], [limits], [auth], \
                          [password_policy], [log], [metrics], [autoconfig], [delivery], [[ldap]], [smtp], [web], [store])"
                    .into(),
            });
        }
        let config = Config {
            hostname: hostname.unwrap_or_else(|| "localhost".into()),
            data_dir: data_dir.unwrap_or_else(|| PathBuf::from("data")),
            tls,
            listen: listen.unwrap_or_default(),
            limits: limits.unwrap_or_default(),
            auth: auth.unwrap_or_default(),
            password_policy: password_policy.unwrap_or_default(),
            log: log.unwrap_or_default(),
            metrics: metrics.unwrap_or_default(),
            autoconfig: autoconfig.unwrap_or_default(),
            delivery: delivery.unwrap_or_default(),
            ldap,
            inbound_auth: inbound_auth.unwrap_or_default(),
            web,
            store: store.unwrap_or_default(),
        };
        (config, problems, unread)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        if let Some(p) = &mut self.store.password_file {
            fix(p);
        }
        if let Some(p) = &mut self.store.ca_file {
            fix(p);
        }
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.certificate);
            fix(&mut tls.private_key);
        }
        for section in &mut self.ldap {
            section.resolve_paths(base);
        }
        self.delivery.resolve_paths(base);
    }

    /// Every problem in the configuration, each with its key path.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: String| problems.push(ConfigProblem { key, message });
        if self.hostname.trim().is_empty() || self.hostname.contains(char::is_whitespace) {
            problem(
                "hostname".into(),
                format!("'{}' is not a host name", self.hostname),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            problem("data_dir".into(), "must not be empty".into());
        }
        for (key, message) in self.store.problems() {
            problem(key, message);
        }
        for service in Service::ALL {
            for (i, addr) in self.listen.addresses(service).iter().enumerate() {
                if addr.parse::<SocketAddr>().is_err() {
                    problem(
                        format!("listen.{}[{i}]", service.name()),
                        format!("'{addr}' is not an address:port (e.g. 127.0.0.1:1143 or [::]:993)"),
                    );
                }
            }
        }
        match &self.tls {
            Some(tls) => {
                let mut present = true;
                for (key, path) in [
                    ("tls.certificate", &tls.certificate),
                    ("tls.private_key", &tls.private_key),
                ] {
                    if !path.is_file() {
                        present = false;
                        problem(key.into(), format!("file {} does not exist", path.display()));
                    }
                }
                if present {
                    for p in crate::tls::check(tls) {
                        problem(p.key, p.message);
                    }
                }
                // Anyone who can write the key can impersonate the server (issue 19
                // item 9); readable is a warning (`warnings`).
                if let Some(mode) = file_mode(&tls.private_key).filter(|m| m & 0o022 != 0) {
                    problem(
                        "tls.private_key".into(),
                        format!(
                            "{} is writable by {} (mode {mode:o}); chmod 600 it",
                            tls.private_key.display(),
                            if mode & 0o002 != 0 {
                                "everyone"
                            } else {
                                "its group"
                            }
                        ),
                    );
                }
            }
            None => {
                for service in Service::ALL.into_iter().filter(|s| s.implicit_tls()) {
                    if !self.listen.addresses(service).is_empty() {
                        problem(
                            format!("listen.{}", service.name()),
                            "needs a [tls] section (implicit TLS)".into(),
                        );
                    }
                }
            }
        }
        for p in self.listener_conflicts() {
            problem(p.key, p.message);
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_connections", l.max_connections as u64),
            ("limits.max_connections_per_ip", l.max_connections_per_ip as u64),
            ("limits.max_http_connections", l.max_http_connections as u64),
            ("limits.max_message_size", l.max_message_size),
            ("limits.max_recipients", l.max_recipients as u64),
            ("limits.login_timeout_secs", l.login_timeout_secs),
            ("limits.idle_timeout_secs", l.idle_timeout_secs),
            ("limits.command_timeout_secs", l.command_timeout_secs),
            ("limits.line_timeout_secs", l.line_timeout_secs),
        ] {
            if value == 0 {
                problem(key.into(), "must be greater than 0".into());
            }
        }
        if l.max_message_size > u32::MAX as u64 {
            problem(
                "limits.max_message_size".into(),
                format!("must be at most {} bytes", u32::MAX),
            );
        }
        if l.max_connections > 0 && l.max_connections_per_ip > l.max_connections {
            problem(
                "limits.max_connections_per_ip".into(),
                "must not exceed limits.max_connections".into(),
            );
        }
        for (key, nets) in [
            ("plaintext_networks", &self.auth.plaintext_networks),
            ("webmail_hosts", &self.auth.webmail_hosts),
        ] {
            for (i, net) in nets.iter().enumerate() {
                if Network::parse(net).is_none() {
                    problem(
                        format!("auth.{key}[{i}]"),
                        format!("'{net}' is not a network (e.g. 10.0.0.0/8)"),
                    );
                }
            }
        }
        if let Some(addr) = &self.metrics.listen {
            if addr.parse::<SocketAddr>().is_err() {
                problem(
                    "metrics.listen".into(),
                    format!("'{addr}' is not an address:port (e.g. 127.0.0.1:9187)"),
                );
            }
        }
        if let Some(addr) = &self.autoconfig.listen {
            if addr.parse::<SocketAddr>().is_err() {
                problem(
                    "autoconfig.listen".into(),
                    format!("'{addr}' is not an address:port (e.g. [::]:443)"),
                );
            } else if self.tls.is_none() {
                problem(
                    "autoconfig.listen".into(),
                    "needs a [tls] section (served over HTTPS)".into(),
                );
            }
        }
        if let Some(web) = &self.web {
            if web.listen.parse::<SocketAddr>().is_err() {
                problem(
                    "web.listen".into(),
                    format!("'{}' is not an address:port (e.g. 127.0.0.1:8443)", web.listen),
                );
            } else if self.tls.is_none() {
                problem(
                    "web.listen".into(),
                    "needs a [tls] section (served over HTTPS)".into(),
                );
            }
            for (key, value) in [
                ("web.session_idle_secs", web.session_idle_secs),
                ("web.session_max_secs", web.session_max_secs),
                ("web.max_failures", u64::from(web.max_failures)),
                ("web.max_upload_bytes", web.max_upload_bytes as u64),
            ] {
                if value == 0 {
                    problem(key.into(), "must be greater than 0".into());
                }
            }
        }
        if self.auth.max_failures == 0 {
            problem("auth.max_failures".into(), "must be greater than 0".into());
        }
        if self.password_policy.min_length < 8 {
            problem("password_policy.min_length".into(), "must be at least 8".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            problem(
                "log.format".into(),
                format!("'{}' is not one of: text, json", self.log.format),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problem(
                "log.level".into(),
                format!("'{}' is not a log filter (e.g. info, debug)", self.log.level),
            );
        }
        problems.extend(self.delivery.validate());
        problems.extend(crate::ldap::config::validate(&self.ldap));
        problems.extend(self.inbound_auth.validate());
        problems
    }

    /// What is allowed but unwise; `check-config` prints these and `serve` logs them.
    pub fn warnings(&self) -> Vec<ConfigProblem> {
        let mut warnings = Vec::new();
        if let Some(tls) = &self.tls {
            if let Some(mode) = file_mode(&tls.private_key).filter(|m| m & 0o044 != 0) {
                warnings.push(ConfigProblem {
                    key: "tls.private_key".into(),
                    message: format!(
                        "{} is readable by {} (mode {mode:o}); chmod 600 it",
                        tls.private_key.display(),
                        if mode & 0o004 != 0 {
                            "everyone"
                        } else {
                            "its group"
                        }
                    ),
                });
            }
        }
        warnings
    }

    /// Two listeners on one port (and overlapping addresses): `serve` would fail to bind
    /// the second. Port 0 (any free port) never conflicts.
    fn listener_conflicts(&self) -> Vec<ConfigProblem> {
        let mut bound: Vec<(String, SocketAddr)> = Vec::new();
        for service in Service::ALL {
            for (i, addr) in self.listen.addresses(service).iter().enumerate() {
                if let Ok(a) = addr.parse() {
                    bound.push((format!("listen.{}[{i}]", service.name()), a));
                }
            }
        }
        for (key, addr) in [
            ("metrics.listen", &self.metrics.listen),
            ("autoconfig.listen", &self.autoconfig.listen),
        ] {
            if let Some(a) = addr.as_deref().and_then(|a| a.parse().ok()) {
                bound.push((key.to_string(), a));
            }
        }
        let overlaps = |a: &SocketAddr, b: &SocketAddr| {
            a.port() == b.port()
                && a.port() != 0
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        };
        let mut problems = Vec::new();
        for (i, (key, addr)) in bound.iter().enumerate() {
            if let Some((first, other)) = bound[..i].iter().find(|(_, b)| overlaps(addr, b)) {
                problems.push(ConfigProblem {
                    key: key.clone(),
                    message: format!(
                        "{addr} uses the port of {first} ({other}): only one listener can have it"
                    ),
                });
            }
        }
        problems
    }

    /// The PostgreSQL connection settings (`[store] backend = "postgres"`), the password
    /// read from its file. None for RocksDB.
    pub fn postgres(&self) -> anyhow::Result<Option<understudy_storage::PgOptions>> {
        if self.store.backend != StoreBackend::Postgres {
            return Ok(None);
        }
        let Some(url) = &self.store.url else {
            anyhow::bail!("[store] backend = \"postgres\" needs store.url");
        };
        let password = match &self.store.password_file {
            Some(path) => Some(crate::config_types::read_password_file(path)?),
            None => None,
        };
        Ok(Some(understudy_storage::PgOptions {
            url: url.clone(),
            password: password.map(|p| p.expose().as_bytes().to_vec()),
            pool_size: self.store.pool_size,
            tls: match self.store.tls {
                StoreTls::Off => understudy_storage::PgTls::Off,
                StoreTls::Require => understudy_storage::PgTls::Require {
                    ca_file: self.store.ca_file.clone(),
                },
            },
        }))
    }

    /// Where bodies go, with the S3 secret key read from its file.
    pub fn body_options(&self) -> anyhow::Result<understudy_storage::BodyOptions> {
        let s3 = match (self.store.bodies, &self.store.s3) {
            (StoreBodies::Store, _) => return Ok(understudy_storage::BodyOptions::Store),
            (StoreBodies::S3, None) => anyhow::bail!("[store] bodies = \"s3\" needs a [store.s3] section"),
            (StoreBodies::S3, Some(s3)) => s3,
        };
        let secret = crate::config_types::read_password_file(&s3.secret_key_file)?;
        Ok(understudy_storage::BodyOptions::S3(
            understudy_storage::S3Options {
                endpoint: s3.endpoint.clone(),
                bucket: s3.bucket.clone(),
                region: s3.region.clone(),
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: secret.expose().to_string(),
                prefix: s3.prefix.clone(),
                allow_http: s3.allow_http,
                timeout: std::time::Duration::from_secs(s3.timeout_secs),
                grace: std::time::Duration::from_secs(s3.sweep_grace_secs),
            },
        ))
    }

    pub fn db_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }

    pub fn plaintext_networks(&self) -> Vec<Network> {
        parse_networks(&self.auth.plaintext_networks)
    }

    /// `auth.webmail_hosts`, parsed (validation reported the bad ones).
    pub fn webmail_hosts(&self) -> Vec<Network> {
        parse_networks(&self.auth.webmail_hosts)
    }
}

fn parse_networks(texts: &[String]) -> Vec<Network> {
    texts.iter().filter_map(|n| Network::parse(n)).collect()
}

/// The permission bits of a file, where the platform has them.
fn file_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    /// Issue 19 item 1, the config side: nesting is bounded by toml's parser (a depth
    /// limit), so a hostile or broken file gets an error, never a stack overflow.
    #[test]
    fn deeply_nested_values_are_an_error_not_a_crash() {
        for deep in [
            format!("hostname = {}1{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!(
                "hostname = {}x = 1{}",
                "{ a = ".repeat(50_000),
                " }".repeat(50_000)
            ),
        ] {
            let handle = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || Config::parse(&deep, "deep.toml", None).is_err())
                .unwrap();
            assert!(handle.join().unwrap());
        }
    }

    use super::*;

    #[test]
    fn dev_config_parses() {
        let config = Config::parse(
            DEV_CONFIG,
            "dev",
            Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config")),
        )
        .unwrap();
        assert_eq!(config.listen.imap, vec!["127.0.0.1:1143".to_string()]);
        assert!(
            config.tls.unwrap().certificate.is_file(),
            "paths resolve from config/"
        );
    }

    /// `[store]`: RocksDB by default; PostgreSQL needs a URL that parses and names a
    /// host and database, a pool size in range, and a CA file that exists.
    #[test]
    fn store_section_is_validated() {
        let base = "hostname = \"mx.example.com\"\ndata_dir = \"/tmp/x\"\n";
        let config = Config::parse(base, "t.toml", None).unwrap();
        assert_eq!(config.store.backend, StoreBackend::Rocksdb);
        assert!(config.postgres().unwrap().is_none());

        let good = format!(
            "{base}[store]\nbackend = \"postgres\"\nurl = \"postgresql://understudy@db.example.com/understudy\"\npool_size = 8\ntls = \"off\"\n"
        );
        let config = Config::parse(&good, "t.toml", None).unwrap();
        let pg = config.postgres().unwrap().unwrap();
        assert_eq!((pg.pool_size, pg.tls), (8, understudy_storage::PgTls::Off));

        let bad = format!(
            "{base}[store]\nbackend = \"postgres\"\nurl = \"postgresql://db.example.com\"\npool_size = 0\nca_file = \"/nonexistent/ca.pem\"\n"
        );
        let Err(ConfigError::Invalid { problems, .. }) = Config::parse(&bad, "t.toml", None) else {
            panic!("expected validation errors");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["store.url", "store.ca_file", "store.pool_size"],
            "{problems:?}"
        );

        let missing = format!("{base}[store]\nbackend = \"postgres\"\n");
        let Err(ConfigError::Invalid { problems, .. }) = Config::parse(&missing, "t.toml", None) else {
            panic!("expected validation errors");
        };
        assert_eq!(problems[0].key, "store.url");
        let unknown = format!("{base}[store]\nbackend = \"sqlite\"\n");
        assert!(Config::parse(&unknown, "t.toml", None).is_err());
    }

    #[test]
    fn s3_bodies_section_is_validated_and_its_secret_read_from_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s3-secret");
        std::fs::write(&secret, "Top1secret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let base = "hostname = \"mx.example.com\"\ndata_dir = \"/tmp/x\"\n";
        let section = |extra: &str| {
            format!(
                "{base}[store]\nbodies = \"s3\"\n[store.s3]\nbucket = \"understudy-bodies\"\n\
                 access_key_id = \"AKIDEXAMPLE\"\nsecret_key_file = \"{}\"\n{extra}",
                secret.display()
            )
        };
        let good = section("endpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nprefix = \"mail\"\n");
        let config = Config::parse(&good, "t.toml", None).unwrap();
        let understudy_storage::BodyOptions::S3(s3) = config.body_options().unwrap() else {
            panic!("bodies = \"s3\" gave no S3 options");
        };
        assert_eq!(s3.secret_access_key, "Top1secret");
        assert_eq!(
            (s3.region.as_str(), s3.prefix.as_str(), s3.allow_http),
            ("us-east-1", "mail", true)
        );
        // The secret is never shown, in the options or the configuration.
        assert!(!format!("{s3:?}{config:?}").contains("Top1secret"));

        let problems = |text: &str| -> Vec<String> {
            match Config::parse(text, "t.toml", None) {
                Err(ConfigError::Invalid { problems, .. }) => problems.into_iter().map(|p| p.key).collect(),
                other => panic!("expected validation errors, got {:?}", other.map(|_| ())),
            }
        };
        assert_eq!(
            problems(&section("endpoint = \"http://s3.example.com\"\n")),
            vec!["store.s3.endpoint"]
        );
        assert_eq!(
            problems(&section(
                "endpoint = \"http://s3.example.com\"\nallow_http = true\n"
            )),
            vec!["store.s3.allow_http"]
        );
        let bad_bucket = good.replace("understudy-bodies", "ab");
        assert_eq!(problems(&bad_bucket), vec!["store.s3.bucket"]);
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(problems(&good), vec!["store.s3.secret_key_file"]);
        assert_eq!(
            problems(&format!("{base}[store]\nbodies = \"s3\"\n")),
            vec!["store.s3"]
        );
        let unused = good.replace("bodies = \"s3\"", "bodies = \"store\"");
        assert_eq!(problems(&unused), vec!["store.s3"]);
    }

    /// The `[[ldap]]` sections' problems, through the whole file's parser (here, so the
    /// section module need not import the aggregator).
    #[test]
    fn presets_and_problems_with_key_paths() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            r#"
hostname = "mx.example.com"
data_dir = "/tmp/x"
[[ldap]]
domain = "example.com"
url = "ldap://dc1.example.com"
starttls = false
bind_dn = "cn=svc"
bind_password_file = "{pw}"
base_dn = "dc=example,dc=com"
preset = "active-directory"
[[ldap]]
domain = "example.com"
url = "http://x"
base_dn = ""
preset = "openldap"
disabled_value = "yes"
bind_dn_template = "uid=x"
"#,
            pw = pw.display()
        );
        let Err(ConfigError::Invalid { problems, .. }) = Config::parse(&text, "t.toml", None) else {
            panic!("expected validation errors");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "ldap[0].starttls",
                "ldap[0].bind_password_file",
                "ldap[1].domain",
                "ldap[1].url",
                "ldap[1].base_dn",
                "ldap[1].disabled_attribute",
                "ldap[1].bind_dn_template",
            ],
            "{problems:?}"
        );
        assert!(problems[1].message.contains("mode 0644"), "{}", problems[1]);
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            crate::ldap::config::read_password_file(&pw).unwrap().expose(),
            "secret"
        );
    }

    #[test]
    fn three_mistakes_are_all_reported_with_key_paths() {
        let text = r#"
hostname = "mx.example.com"
data_dir = "/tmp/x"
[listen]
imap = ["127.0.0.1:99999"]
[limits]
max_message_size = 0
[auth]
plaintext_networks = ["10.0.0.0/33"]
"#;
        let Err(ConfigError::Invalid { problems, .. }) = Config::parse(text, "t.toml", None) else {
            panic!("expected validation errors");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen.imap[0]",
                "limits.max_message_size",
                "auth.plaintext_networks[0]"
            ]
        );
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = Config::parse(
            "hostname = \"a\"\ndata_dir = \"d\"\nlisten_imap = 1\n",
            "t.toml",
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("listen_imap"), "{err}");
    }

    #[test]
    fn networks_match() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(Network::parse("::1").unwrap().contains("::1".parse().unwrap()));
    }
}
