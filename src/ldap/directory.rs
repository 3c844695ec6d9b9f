//! Talking to the directory with `ldap3`: connect (`ldaps://`, or `ldap://` with
//! StartTLS) with the configured CA bundle and time-outs, the paged search for mail
//! users, and the bind that checks a user's password.
//!
//! Callers are synchronous (admin commands, and logins that already run on tokio's
//! blocking pool): each call builds a small current-thread runtime for the `ldap3`
//! futures and blocks on it, with every step under a time-out, so a dead or slow
//! directory costs a login at most `connect_timeout_secs + 3 × timeout_secs`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use understudy_protocol::Secret;

use super::config::LdapConfig;

/// One directory entry: its DN and its attributes, names lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub dn: String,
    pub attrs: HashMap<String, Vec<String>>,
}

impl DirectoryEntry {
    pub fn values(&self, attribute: &str) -> &[String] {
        self.attrs
            .get(&attribute.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The directory answered and said no: wrong password, disabled or unknown account.
    #[error("refused by the directory: {0}")]
    Refused(String),
    /// No answer: connection refused, time-out, TLS failure, server busy or down.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}

/// LDAP result codes that are the directory's answer about the credentials (RFC 4511
/// appendix A): invalidDNSyntax, invalidCredentials, insufficientAccessRights,
/// unwillingToPerform. Anything else means we could not get an answer.
const REFUSAL_CODES: [u32; 4] = [34, 49, 50, 53];

fn classify(e: LdapError) -> DirectoryError {
    match &e {
        LdapError::LdapResult { result } if REFUSAL_CODES.contains(&result.rc) => {
            DirectoryError::Refused(format!("result code {}: {}", result.rc, result.text))
        }
        _ => DirectoryError::Unavailable(e.to_string()),
    }
}

/// Runs `f` on a fresh current-thread runtime with an overall deadline.
fn block_on<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, DirectoryError>>,
) -> Result<T, DirectoryError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DirectoryError::Unavailable(format!("cannot start an I/O runtime: {e}")))?;
    rt.block_on(async {
        match tokio::time::timeout(limit, f).await {
            Ok(r) => r,
            Err(_) => Err(DirectoryError::Unavailable(format!(
                "no answer within {} s",
                limit.as_secs()
            ))),
        }
    })
}

fn tls_config(config: &LdapConfig) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let certs = CertificateDer::pem_file_iter(&config.ca_file)
        .map_err(|e| DirectoryError::Unavailable(format!("cannot read {}: {e}", config.ca_file.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs.flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(DirectoryError::Unavailable(format!(
            "{} holds no usable CA certificate",
            config.ca_file.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Unavailable(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(client))
}

/// Opens a connection (TLS as configured); every later operation on the handle has the
/// operation time-out.
async fn connect(config: &LdapConfig) -> Result<Ldap, DirectoryError> {
    let mut settings =
        LdapConnSettings::new().set_conn_timeout(Duration::from_secs(config.connect_timeout_secs));
    if config.uses_tls() {
        settings = settings.set_config(tls_config(config)?);
    }
    if config.url.starts_with("ldap://") {
        settings = settings.set_starttls(config.starttls);
    }
    let (conn, ldap) = LdapConnAsync::with_settings(settings, &config.url)
        .await
        .map_err(classify)?;
    ldap3::drive!(conn);
    Ok(ldap)
}

fn op_timeout(config: &LdapConfig) -> Duration {
    Duration::from_secs(config.timeout_secs)
}

/// The longest a whole login check may take.
fn login_limit(config: &LdapConfig) -> Duration {
    Duration::from_secs(config.connect_timeout_secs + 3 * config.timeout_secs)
}

/// Binds as the service account (or stays anonymous without one).
async fn service_bind(ldap: &mut Ldap, config: &LdapConfig) -> Result<(), DirectoryError> {
    let (Some(dn), Some(file)) = (&config.bind_dn, &config.bind_password_file) else {
        return Ok(());
    };
    let password =
        super::config::read_password_file(file).map_err(|e| DirectoryError::Unavailable(format!("{e:#}")))?;
    ldap.with_timeout(op_timeout(config))
        .simple_bind(dn, password.expose())
        .await
        .and_then(|r| r.success())
        .map_err(|e| match classify(e) {
            // The service account is refused: a configuration problem, not the user's.
            DirectoryError::Refused(why) => {
                DirectoryError::Unavailable(format!("the service account {dn} was refused: {why}"))
            }
            other => other,
        })?;
    Ok(())
}

fn to_entry(raw: ldap3::ResultEntry) -> Option<DirectoryEntry> {
    // `SearchEntry::construct` panics on a malformed entry; one bad entry must not take
    // the server down.
    let entry =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(raw))).ok()?;
    Some(DirectoryEntry {
        dn: entry.dn,
        attrs: entry
            .attrs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
    })
}

/// Every entry under `base_dn` matching the filter, fetched in pages.
pub fn search_users(config: &LdapConfig) -> Result<Vec<DirectoryEntry>, DirectoryError> {
    let attrs = config.attributes().requested();
    let filter = config.filter();
    // A large directory takes many pages: the deadline grows with what arrives, so only
    // the whole search is bounded by the per-page time-out times the page count.
    block_on(Duration::from_secs(24 * 3600), async {
        let mut ldap = tokio::time::timeout(
            Duration::from_secs(config.connect_timeout_secs + config.timeout_secs),
            connect(config),
        )
        .await
        .map_err(|_| DirectoryError::Unavailable("connect timed out".into()))??;
        service_bind(&mut ldap, config).await?;
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(config.page_size)),
        ];
        let mut stream = ldap
            .with_timeout(op_timeout(config))
            .streaming_search_with(adapters, &config.base_dn, Scope::Subtree, &filter, attrs)
            .await
            .map_err(classify)?;
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(op_timeout(config), stream.next())
                .await
                .map_err(|_| DirectoryError::Unavailable("search timed out".into()))?;
            match next.map_err(classify)? {
                Some(raw) => {
                    if let Some(entry) = to_entry(raw) {
                        out.push(entry);
                    }
                }
                None => break,
            }
        }
        stream
            .finish()
            .await
            .success()
            .map_err(|e| DirectoryError::Unavailable(format!("search: {e}")))?;
        let _ = ldap.unbind().await;
        Ok(out)
    })
}

/// Checks `password` by binding as the user whose address is `address`: with the DN
/// template if configured, else the DN found by searching with the service account.
pub fn check_password(config: &LdapConfig, address: &str, password: &Secret) -> Result<(), DirectoryError> {
    // An empty password is an anonymous bind, which succeeds (RFC 4513 §5.1.2).
    if password.expose().is_empty() {
        return Err(DirectoryError::Refused("empty password".into()));
    }
    block_on(login_limit(config), async {
        let mut ldap = connect(config).await?;
        // `found` is the refusal when the search found no entry (or several): the bind
        // still happens, as a decoy DN, so an address the directory does not know costs
        // the directory the same work as a wrong password (no user enumeration by time).
        let (dn, found) = match &config.bind_dn_template {
            Some(template) => {
                let parsed = understudy_storage::EmailAddress::parse(address);
                let user = parsed.as_ref().map_or(address, |a| a.local());
                let dn = template
                    .replace("{user}", &ldap3::dn_escape(user))
                    .replace("{address}", &ldap3::dn_escape(address));
                (dn, Ok(()))
            }
            None => match find_dn(&mut ldap, config, address).await {
                Ok(dn) => (dn, Ok(())),
                Err(DirectoryError::Refused(why)) => (decoy_dn(config), Err(DirectoryError::Refused(why))),
                Err(e) => return Err(e),
            },
        };
        let result = ldap
            .with_timeout(op_timeout(config))
            .simple_bind(&dn, password.expose())
            .await
            .and_then(|r| r.success())
            .map_err(classify);
        let _ = ldap.unbind().await;
        found?;
        result.map(|_| ())
    })
}

/// The DN bound as when the search found no entry for the address: under the search
/// base, with a name no directory gives an entry; its answer is never used.
fn decoy_dn(config: &LdapConfig) -> String {
    format!("cn=understudy-no-such-entry,{}", config.base_dn)
}

/// The DN of the entry (within the sync filter) whose address attributes hold `address`.
async fn find_dn(ldap: &mut Ldap, config: &LdapConfig, address: &str) -> Result<String, DirectoryError> {
    service_bind(ldap, config).await?;
    let map = config.attributes();
    let escaped = ldap3::ldap_escape(address);
    let mut any = String::new();
    for attribute in &map.address {
        any.push_str(&format!("({attribute}={escaped})"));
    }
    let filter = format!("(&{}(|{any}))", config.filter());
    let (entries, _) = ldap
        .with_timeout(op_timeout(config))
        .search(&config.base_dn, Scope::Subtree, &filter, vec!["1.1"])
        .await
        .and_then(|r| r.success())
        .map_err(classify)?;
    let mut dns: Vec<String> = entries.into_iter().filter_map(to_entry).map(|e| e.dn).collect();
    match dns.len() {
        1 => Ok(dns.remove(0)),
        0 => Err(DirectoryError::Refused(format!("no entry for {address}"))),
        n => Err(DirectoryError::Refused(format!("{n} entries for {address}"))),
    }
}
