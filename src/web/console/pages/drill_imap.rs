//! The failover drill's user login: an IMAP client that logs in to this server's own
//! IMAP listener as a user of the domain, with the password the administrator typed on
//! the drill form, and looks for the drill's test message in the INBOX by its
//! Message-ID, as the user's mail program would on the day of an outage. The password
//! is held in a [`Secret`] for the login only: never stored, never logged, never shown.
//!
//! Implicit TLS on the imaps listener if it is bound, else STARTTLS (or, without a
//! certificate, plaintext) on imap. The certificate must be the server's own `[tls]
//! certificate`: the drill talks to itself, so there is no CA to ask, and nothing else
//! is to be trusted. Login is `AUTHENTICATE PLAIN` with an initial response (RFC 4959);
//! the search is `UID SEARCH HEADER Message-ID` (RFC 9051 §6.4.4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use understudy_protocol::Secret;

use crate::config_types::Service;
use crate::delivery::client::NoCaVerifier;
use crate::shared::Shared;

/// Each read or write waits at most this long.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest response line read (a FETCH of one header field is far shorter).
const MAX_LINE: u64 = 64 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A logged-in IMAP connection to this server.
pub struct UserImap {
    io: BufReader<Box<dyn Io>>,
    tag: u32,
}

/// A TLS client that trusts only this server's certificate, read now (a SIGHUP may have
/// replaced it since the start); `None` when the server has no certificate.
fn own_tls(shared: &Shared) -> Result<Option<TlsConnector>, String> {
    let Some(tls) = &shared.config.tls else {
        return Ok(None);
    };
    let leaf = CertificateDer::pem_file_iter(&tls.certificate)
        .map_err(|e| format!("cannot read the server's certificate: {e}"))?
        .next()
        .ok_or("the server's certificate file holds no certificate")?
        .map_err(|e| format!("cannot read the server's certificate: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(NoCaVerifier {
        provider: provider.clone(),
        pinned: Some(leaf),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot build the TLS client: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

fn bound(shared: &Shared, service: Service) -> Option<SocketAddr> {
    let addr = shared
        .bound
        .lock()
        .iter()
        .find(|(s, _)| *s == service)
        .map(|(_, a)| *a)?;
    let ip = match addr.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, addr.port()))
}

async fn with_timeout<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", IO_TIMEOUT.as_secs())),
    }
}

async fn handshake<S: Io + 'static>(
    tls: &TlsConnector,
    plain: S,
    addr: SocketAddr,
) -> Result<Box<dyn Io>, String> {
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = with_timeout("TLS handshake", tls.connect(name, plain)).await?;
    Ok(Box::new(stream))
}

impl UserImap {
    /// Connects and logs in as `address`; the connection and what the login said.
    pub async fn login(
        shared: &Shared,
        address: &str,
        password: &Secret,
    ) -> Result<(UserImap, String), String> {
        let tls = own_tls(shared)?;
        let (addr, implicit) = match (bound(shared, Service::Imaps), &tls) {
            (Some(a), Some(_)) => (a, true),
            _ => (
                bound(shared, Service::Imap)
                    .ok_or("no IMAP listener ([listen] imap or imaps) to log in to")?,
                false,
            ),
        };
        let tcp = with_timeout(&format!("connecting to {addr}"), TcpStream::connect(addr)).await?;
        let how;
        let mut imap = match (&tls, implicit) {
            (Some(tls), true) => {
                how = format!("imaps {addr}, TLS with the server's own certificate");
                UserImap::on(handshake(tls, tcp, addr).await?)
            }
            (Some(tls), false) => {
                let mut plain = UserImap::on(Box::new(tcp));
                plain.greeting().await?;
                let (_, done) = plain.command("STARTTLS").await?;
                if !plain.ok(&done) {
                    return Err(format!("STARTTLS refused: {done}"));
                }
                how = format!("imap {addr}, STARTTLS with the server's own certificate");
                // Anything the server sent before the handshake is discarded with the
                // plaintext buffer (RFC 9051 §6.2.1).
                UserImap::on(handshake(tls, plain.io.into_inner(), addr).await?)
            }
            (None, _) => {
                how = format!("imap {addr}, plaintext (the server has no certificate)");
                UserImap::on(Box::new(tcp))
            }
        };
        if implicit || tls.is_none() {
            imap.greeting().await?;
        }
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{address}\0{}", password.expose()));
        let (_, done) = imap.command(&format!("AUTHENTICATE PLAIN {plain}")).await?;
        if !imap.ok(&done) {
            imap.logout().await;
            return Err(format!("login refused ({how}): {}", imap.reply_text(&done)));
        }
        let said = format!("logged in as {address} ({how}): {}", imap.reply_text(&done));
        Ok((imap, said))
    }

    fn on(io: Box<dyn Io>) -> UserImap {
        UserImap {
            io: BufReader::new(io),
            tag: 0,
        }
    }

    async fn greeting(&mut self) -> Result<(), String> {
        let line = self.line().await?;
        if line.starts_with("* OK") {
            Ok(())
        } else {
            Err(format!("the IMAP listener greeted with {line:?}"))
        }
    }

    async fn line(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        let read = with_timeout(
            "reading from the IMAP listener",
            (&mut self.io).take(MAX_LINE).read_until(b'\n', &mut buf),
        )
        .await?;
        if read == 0 {
            return Err("the IMAP listener closed the connection".into());
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    /// Sends one command; the untagged lines before its tagged reply, and that reply.
    async fn command(&mut self, text: &str) -> Result<(Vec<String>, String), String> {
        self.tag += 1;
        let tag = format!("d{}", self.tag);
        let line = format!("{tag} {text}\r\n");
        with_timeout(
            "writing to the IMAP listener",
            self.io.get_mut().write_all(line.as_bytes()),
        )
        .await?;
        with_timeout("writing to the IMAP listener", self.io.get_mut().flush()).await?;
        let mut untagged = Vec::new();
        loop {
            let line = self.line().await?;
            if line.starts_with(&format!("{tag} ")) {
                return Ok((untagged, line));
            }
            if untagged.len() < 1000 {
                untagged.push(line);
            }
        }
    }

    fn ok(&self, reply: &str) -> bool {
        reply.split_whitespace().nth(1) == Some("OK")
    }

    /// A tagged reply without its tag and response code (`OK Logged in`).
    fn reply_text(&self, reply: &str) -> String {
        let text = reply.split_once(' ').map_or(reply, |(_, rest)| rest);
        match text.split_once(" [") {
            Some((status, rest)) => match rest.split_once("] ") {
                Some((_, said)) => format!("{status} {said}"),
                None => text.to_string(),
            },
            None => text.to_string(),
        }
    }

    /// Looks for the message with this Message-ID (without angle brackets) in the INBOX.
    /// `Ok(Some(what was found))`, `Ok(None)` when it is not there (yet).
    pub async fn find(&mut self, message_id: &str) -> Result<Option<String>, String> {
        if message_id.contains(['"', '\\', '\r', '\n']) {
            return Err(format!("cannot search for {message_id:?}"));
        }
        let (_, done) = self.command("SELECT INBOX").await?;
        if !self.ok(&done) {
            return Err(format!("SELECT INBOX refused: {}", self.reply_text(&done)));
        }
        let (lines, done) = self
            .command(&format!("UID SEARCH HEADER Message-ID \"{message_id}\""))
            .await?;
        if !self.ok(&done) {
            return Err(format!("SEARCH refused: {}", self.reply_text(&done)));
        }
        let uids: Vec<u32> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .flat_map(|rest| rest.split_whitespace().filter_map(|w| w.parse().ok()))
            .collect();
        let Some(uid) = uids.last() else {
            return Ok(None);
        };
        let (lines, done) = self
            .command(&format!("UID FETCH {uid} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
            .await?;
        let subject = lines
            .iter()
            .find_map(|l| l.strip_prefix("Subject: "))
            .map(str::to_string)
            .filter(|_| self.ok(&done))
            .ok_or_else(|| {
                format!(
                    "UID {uid} found, but its subject could not be read: {}",
                    self.reply_text(&done)
                )
            })?;
        Ok(Some(format!("INBOX UID {uid}, \"{subject}\"")))
    }

    /// Ends the session politely; a failure here changes nothing for the drill.
    pub async fn logout(&mut self) {
        let _ = self.command("LOGOUT").await;
    }
}
