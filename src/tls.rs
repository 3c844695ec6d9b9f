//! The TLS acceptor shared by every listener: rustls with the ring provider, TLS 1.2 and
//! 1.3 only, built once from the configured PEM files and swappable on reload.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config_types::ConfigProblem;

/// `[tls]`: the certificate every listener presents. Defined here, beside what reads
/// it, so that the configuration can ask [`check`] without an import circle.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub certificate: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: std::path::PathBuf,
}

/// Builds the acceptor from a certificate chain and key in PEM form.
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs = load_certs(&config.certificate)?;
    let key = load_key(&config.private_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the private key {} does not belong to the certificate {}",
                config.private_key.display(),
                config.certificate.display()
            )
        })?;
    // Outlook and iOS reuse sessions on reconnect; tickets make that cheap.
    server.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// What `serve` would fail on, as configuration problems: a certificate file that holds
/// no certificate, a key file that holds no key, a key that does not match.
pub fn check(config: &TlsConfig) -> Vec<ConfigProblem> {
    let problem = |key: &str, e: anyhow::Error| ConfigProblem {
        key: key.into(),
        message: format!("{e:#}"),
    };
    let certs = load_certs(&config.certificate).map_err(|e| problem("tls.certificate", e));
    let key = load_key(&config.private_key).map_err(|e| problem("tls.private_key", e));
    match (certs, key) {
        (Ok(_), Ok(_)) => match acceptor(config) {
            Ok(_) => Vec::new(),
            Err(e) => vec![problem("tls.private_key", e)],
        },
        (certs, key) => [certs.err(), key.err()].into_iter().flatten().collect(),
    }
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        anyhow::anyhow!(
            "{} holds no private key in PEM form (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        )
    })
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds a damaged PEM certificate", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}
