//! The TLS acceptor shared by every listener: rustls with the ring provider, TLS 1.2 and
//! 1.3 only, built once from the configured PEM files and swappable on reload.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Builds the acceptor from a certificate chain and key in PEM form.
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs = load_certs(&config.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&config.private_key)
        .with_context(|| format!("cannot read a private key from {}", config.private_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and private key do not form a usable pair")?;
    // Outlook and iOS reuse sessions on reconnect; tickets make that cheap.
    server.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(TlsAcceptor::from(Arc::new(server)))
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
