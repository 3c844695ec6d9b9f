//! An SMTP client (RFC 5321) for redelivery and outbound mail: greeting, EHLO (HELO
//! fallback), STARTTLS per policy, PIPELINING (RFC 2920) when offered, MAIL and one RCPT
//! per recipient with each reply kept, DATA with dot-stuffing, RSET and QUIT.
//!
//! Written on tokio rather than with `mail-send` because the queue needs what that crate
//! hides: the reply to each RCPT (a recipient's 5xx is its own bounce, not the
//! message's), and a connection kept open across several queue entries for one host.
//!
//! Every read is bounded in size (a reply line and a whole reply) and in time (the
//! command or data time-out); a reply that breaks either ends the connection.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use understudy_protocol::Secret;

use super::config::TlsPolicy;

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512; servers exceed it).
const MAX_LINE: usize = 4096;
/// Most lines in one (multi-line) reply.
const MAX_REPLY_LINES: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// The server answered the greeting, EHLO or STARTTLS with an error.
    #[error("{context}: {reply}")]
    Refused { context: &'static str, reply: Reply },
    /// A reused connection did not answer the RSET sent ahead of a transaction: it was
    /// closed while idle. Nothing of the message was sent, so a new connection may try.
    #[error("reused connection is gone: {0}")]
    Stale(String),
}

impl ClientError {
    /// A 5xx greeting or EHLO refusal is still a temporary condition for the message:
    /// another host or a later attempt may take it.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            ClientError::Refused { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

/// One SMTP reply: the code and its text lines joined with a space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Time-outs of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub data: Duration,
}

/// TLS client configurations, built once: one that checks certificates (required TLS)
/// and one that does not (opportunistic TLS, where plaintext is the alternative).
#[derive(Clone)]
pub struct TlsContext {
    verified: Option<TlsConnector>,
    unverified: TlsConnector,
}

impl TlsContext {
    /// `ca_file` holds the trusted roots for required TLS; when it cannot be read,
    /// required-TLS deliveries fail (and are retried) with that reason.
    pub fn new(ca_file: &std::path::Path) -> TlsContext {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verified = match CertificateDer::pem_file_iter(ca_file) {
            Ok(iter) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in iter.flatten() {
                    let _ = roots.add(cert);
                }
                ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                    .map_err(|e| tracing::warn!(error = %e, "cannot build the verifying TLS client"))
                    .ok()
                    .map(|c| TlsConnector::from(Arc::new(c)))
            }
            Err(e) => {
                tracing::warn!(path = %ca_file.display(), error = %e, "cannot read the CA bundle; required TLS will fail");
                None
            }
        };
        let verifier = Arc::new(NoCaVerifier {
            provider: provider.clone(),
            pinned: None,
        });
        let unverified = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            })
            .map(|c| TlsConnector::from(Arc::new(c)));
        let unverified = match unverified {
            Ok(c) => c,
            // The ring provider supports the default versions; this cannot fail, but a
            // plain default config is a safe fallback if it ever did.
            Err(_) => TlsConnector::from(Arc::new(
                ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )),
        };
        TlsContext { verified, unverified }
    }
}

/// Checks a server's certificate without a CA. `pinned: None` accepts any certificate:
/// opportunistic TLS protects against passive eavesdropping only, and refusing a
/// self-signed certificate would send the mail in plaintext instead. `Some(leaf)`
/// accepts exactly that one (the failover drill talking to this server itself).
#[derive(Debug)]
pub(crate) struct NoCaVerifier {
    pub(crate) provider: Arc<rustls::crypto::CryptoProvider>,
    pub(crate) pinned: Option<CertificateDer<'static>>,
}

impl ServerCertVerifier for NoCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(leaf) if leaf.as_ref() != end_entity.as_ref() => Err(rustls::Error::General(
                "the server presented another certificate than the one expected".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between taking the plain stream and finishing the TLS handshake.
    Closed,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Closed => Ok(0),
        }
    }
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(data).await,
            Stream::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Stream::Closed => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// Extensions the server announced in its EHLO reply.
#[derive(Debug, Default, Clone)]
pub struct Capabilities {
    pub pipelining: bool,
    pub starttls: bool,
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    /// SASL mechanisms of `AUTH`, upper case.
    pub auth: Vec<String>,
}

impl Capabilities {
    fn parse(reply_lines: &[String]) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply_lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "STARTTLS" => caps.starttls = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "SIZE" => caps.size = Some(words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
                "AUTH" => caps.auth = words.map(|w| w.to_ascii_uppercase()).collect(),
                _ => {}
            }
        }
        caps
    }
}

/// What the server said to one transaction: the MAIL reply, one reply per recipient (in
/// order), and the final DATA reply when any recipient was accepted.
#[derive(Debug, Clone)]
pub struct TransactionReplies {
    pub mail: Reply,
    pub rcpts: Vec<Reply>,
    pub data: Option<Reply>,
}

impl TransactionReplies {
    /// The reply that decides each recipient's fate.
    pub fn per_recipient(&self) -> Vec<Reply> {
        self.rcpts
            .iter()
            .map(|r| {
                if !self.mail.is_positive() {
                    self.mail.clone()
                } else if !r.is_positive() {
                    r.clone()
                } else {
                    self.data.clone().unwrap_or_else(|| Reply {
                        code: 451,
                        text: "no reply to DATA".into(),
                    })
                }
            })
            .collect()
    }
}

/// An open SMTP connection, ready for a transaction.
pub struct SmtpClient {
    stream: Stream,
    buf: Vec<u8>,
    pub caps: Capabilities,
    pub host: String,
    pub tls: bool,
    timeouts: Timeouts,
    pub messages: u32,
    pub last_used: Instant,
    /// Taken from the pool: the next transaction starts with a pipelined RSET, which
    /// checks that the server is still there without a round trip of its own.
    pub reused: bool,
}

impl SmtpClient {
    /// Connects, reads the greeting, says EHLO and applies the TLS policy.
    pub async fn connect(
        host: &str,
        port: u16,
        helo: &str,
        policy: TlsPolicy,
        tls: &TlsContext,
        timeouts: Timeouts,
    ) -> Result<SmtpClient, ClientError> {
        let tcp = match timeout(timeouts.connect, TcpStream::connect((host, port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(ClientError::Connect(format!("{host}:{port}: {e}"))),
            Err(_) => return Err(ClientError::Timeout("the connection")),
        };
        let _ = tcp.set_nodelay(true);
        let mut client = SmtpClient {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            caps: Capabilities::default(),
            host: format!("{host}:{port}"),
            tls: false,
            timeouts,
            messages: 0,
            last_used: Instant::now(),
            reused: false,
        };
        let greeting = client.read_reply("the greeting").await?;
        if !greeting.0.is_positive() {
            return Err(ClientError::Refused {
                context: "greeting",
                reply: greeting.0,
            });
        }
        client.ehlo(helo).await?;
        let start_tls = match policy {
            TlsPolicy::Disabled => false,
            TlsPolicy::Opportunistic => client.caps.starttls,
            TlsPolicy::Required if client.caps.starttls => true,
            TlsPolicy::Required => {
                return Err(ClientError::Tls(format!(
                    "{} does not offer STARTTLS",
                    client.host
                )))
            }
        };
        if start_tls {
            let connector = match policy {
                TlsPolicy::Required => tls
                    .verified
                    .clone()
                    .ok_or_else(|| ClientError::Tls("no trusted CA bundle loaded".into()))?,
                _ => tls.unverified.clone(),
            };
            client.starttls(host, connector).await?;
            client.ehlo(helo).await?;
        }
        Ok(client)
    }

    /// Logs in (RFC 4954): AUTH PLAIN, else LOGIN. Only over TLS: on a plaintext
    /// connection the password is not sent and the attempt fails instead.
    pub async fn authenticate(&mut self, user: &str, password: &Secret) -> Result<(), ClientError> {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        if !self.tls {
            return Err(ClientError::Tls(format!(
                "{} did not give a TLS connection: the smarthost password is sent only over TLS",
                self.host
            )));
        }
        let reply = if self.caps.auth.iter().any(|m| m == "PLAIN") {
            let token = b64(format!("\0{user}\0{}", password.expose()).as_bytes());
            self.send_line(&format!("AUTH PLAIN {token}")).await?;
            self.read_reply("the AUTH reply").await?.0
        } else if self.caps.auth.iter().any(|m| m == "LOGIN") {
            self.send_line("AUTH LOGIN").await?;
            let mut reply = self.read_reply("the AUTH reply").await?.0;
            for answer in [user, password.expose()] {
                if reply.code != 334 {
                    break;
                }
                self.send_line(&b64(answer.as_bytes())).await?;
                reply = self.read_reply("the AUTH reply").await?.0;
            }
            reply
        } else {
            return Err(ClientError::Protocol(format!(
                "{} offers no AUTH PLAIN or LOGIN",
                self.host
            )));
        };
        if reply.code == 235 {
            Ok(())
        } else {
            Err(ClientError::Refused {
                context: "AUTH",
                reply,
            })
        }
    }

    async fn ehlo(&mut self, helo: &str) -> Result<(), ClientError> {
        self.send_line(&format!("EHLO {helo}")).await?;
        let (reply, lines) = self.read_reply("the EHLO reply").await?;
        if reply.is_positive() {
            self.caps = Capabilities::parse(&lines);
            return Ok(());
        }
        // RFC 5321 §3.2: a server that does not know EHLO gets HELO.
        self.send_line(&format!("HELO {helo}")).await?;
        let (reply, _) = self.read_reply("the HELO reply").await?;
        if !reply.is_positive() {
            return Err(ClientError::Refused {
                context: "HELO",
                reply,
            });
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    async fn starttls(&mut self, host: &str, connector: TlsConnector) -> Result<(), ClientError> {
        self.send_line("STARTTLS").await?;
        let (reply, _) = self.read_reply("the STARTTLS reply").await?;
        if !reply.is_positive() {
            return Err(ClientError::Refused {
                context: "STARTTLS",
                reply,
            });
        }
        let name = ServerName::try_from(host.to_string()).map_err(|e| ClientError::Tls(e.to_string()))?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(ClientError::Protocol("STARTTLS on a TLS connection".into()));
        };
        // Anything the server sent before the handshake is discarded (RFC 3207 §4.2).
        self.buf.clear();
        let tls = timeout(self.timeouts.command, connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Timeout("the TLS handshake"))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        self.stream = Stream::Tls(Box::new(tls));
        self.tls = true;
        Ok(())
    }

    async fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        let mut data = Vec::with_capacity(line.len() + 2);
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.write(&data, self.timeouts.command).await
    }

    async fn write(&mut self, data: &[u8], limit: Duration) -> Result<(), ClientError> {
        timeout(limit, self.stream.write_all(data))
            .await
            .map_err(|_| ClientError::Timeout("the server to take data"))??;
        Ok(())
    }

    /// Reads one complete reply (all its lines), bounded in size and time.
    async fn read_reply(&mut self, what: &'static str) -> Result<(Reply, Vec<String>), ClientError> {
        self.read_reply_within(what, self.timeouts.command).await
    }

    async fn read_reply_within(
        &mut self,
        what: &'static str,
        limit: Duration,
    ) -> Result<(Reply, Vec<String>), ClientError> {
        let deadline = Instant::now() + limit;
        let mut lines: Vec<String> = Vec::new();
        let mut code = 0u16;
        loop {
            // Lines end with CRLF; a bare LF is accepted too.
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&raw)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                let (this_code, last, text) = parse_reply_line(&line)
                    .ok_or_else(|| ClientError::Protocol(format!("malformed reply line: {line:.80}")))?;
                if !lines.is_empty() && this_code != code {
                    return Err(ClientError::Protocol("reply code changed within a reply".into()));
                }
                code = this_code;
                lines.push(text.to_string());
                if last {
                    let reply = Reply {
                        code,
                        text: lines.join(" "),
                    };
                    return Ok((reply, lines));
                }
                if lines.len() >= MAX_REPLY_LINES {
                    return Err(ClientError::Protocol("reply has too many lines".into()));
                }
            }
            if self.buf.len() > MAX_LINE {
                return Err(ClientError::Protocol("reply line too long".into()));
            }
            let mut chunk = [0u8; 4096];
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(result) => result?,
                Err(_) => return Err(ClientError::Timeout(what)),
            };
            if n == 0 {
                return Err(ClientError::Protocol(format!(
                    "connection closed while waiting for {what}"
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// One mail transaction. `recipients` get one reply each. With PIPELINING, MAIL,
    /// every RCPT and DATA go out in one write (RFC 2920 §3.1).
    pub async fn transaction(
        &mut self,
        mail_from: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<TransactionReplies, ClientError> {
        let utf8 = !mail_from.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
        let mut mail = format!("MAIL FROM:<{}>", smtp_path(mail_from));
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={}", message.len()));
        }
        if self.caps.eight_bit_mime && !message.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        if utf8 && self.caps.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        let rcpt_lines: Vec<String> = recipients
            .iter()
            .map(|r| format!("RCPT TO:<{}>", smtp_path(r)))
            .collect();
        let replies = if self.caps.pipelining {
            let mut batch = String::new();
            let check_alive = std::mem::take(&mut self.reused);
            if check_alive {
                batch.push_str("RSET\r\n");
            }
            batch.push_str(&mail);
            batch.push_str("\r\n");
            for line in &rcpt_lines {
                batch.push_str(line);
                batch.push_str("\r\n");
            }
            batch.push_str("DATA\r\n");
            if check_alive {
                // Until the RSET reply is in, nothing of the message has gone out (the
                // body follows 354 only): any failure here is a dead idle connection.
                let stale = |e: ClientError| ClientError::Stale(e.to_string());
                self.write(batch.as_bytes(), self.timeouts.command)
                    .await
                    .map_err(stale)?;
                let (rset, _) = self.read_reply("the RSET reply").await.map_err(stale)?;
                if !rset.is_positive() {
                    return Err(ClientError::Stale(format!("RSET answered {rset}")));
                }
            } else {
                self.write(batch.as_bytes(), self.timeouts.command).await?;
            }
            let (mail_reply, _) = self.read_reply("the MAIL reply").await?;
            let mut rcpts = Vec::with_capacity(recipients.len());
            for _ in recipients {
                rcpts.push(self.read_reply("a RCPT reply").await?.0);
            }
            let (data_reply, _) = self.read_reply("the DATA reply").await?;
            (mail_reply, rcpts, data_reply)
        } else {
            self.send_line(&mail).await?;
            let (mail_reply, _) = self.read_reply("the MAIL reply").await?;
            if !mail_reply.is_positive() {
                let rcpts = recipients.iter().map(|_| mail_reply.clone()).collect();
                self.rset().await?;
                return Ok(TransactionReplies {
                    mail: mail_reply,
                    rcpts,
                    data: None,
                });
            }
            let mut rcpts = Vec::with_capacity(recipients.len());
            for line in &rcpt_lines {
                self.send_line(line).await?;
                rcpts.push(self.read_reply("a RCPT reply").await?.0);
            }
            if !rcpts.iter().any(Reply::is_positive) {
                self.rset().await?;
                return Ok(TransactionReplies {
                    mail: mail_reply,
                    rcpts,
                    data: None,
                });
            }
            self.send_line("DATA").await?;
            let (data_reply, _) = self.read_reply("the DATA reply").await?;
            (mail_reply, rcpts, data_reply)
        };
        let (mail_reply, rcpts, data_reply) = replies;
        let accepted = mail_reply.is_positive() && rcpts.iter().any(Reply::is_positive);
        if data_reply.code != 354 {
            if accepted {
                // The server refused DATA itself: that answer applies to every recipient.
                self.rset().await?;
                return Ok(TransactionReplies {
                    mail: mail_reply,
                    rcpts,
                    data: Some(data_reply),
                });
            }
            self.rset().await?;
            return Ok(TransactionReplies {
                mail: mail_reply,
                rcpts,
                data: None,
            });
        }
        if !accepted {
            // A server that says 354 with no valid recipient gets an empty message,
            // which it must drop (RFC 2920 §3.1).
            self.write(b".\r\n", self.timeouts.data).await?;
            let _ = self
                .read_reply_within("the end of data reply", self.timeouts.data)
                .await?;
            self.rset().await?;
            return Ok(TransactionReplies {
                mail: mail_reply,
                rcpts,
                data: None,
            });
        }
        let stuffed = dot_stuff(message);
        self.write(&stuffed, self.timeouts.data).await?;
        let (final_reply, _) = self
            .read_reply_within("the end of data reply", self.timeouts.data)
            .await?;
        self.messages += 1;
        self.last_used = Instant::now();
        Ok(TransactionReplies {
            mail: mail_reply,
            rcpts,
            data: Some(final_reply),
        })
    }

    pub async fn rset(&mut self) -> Result<(), ClientError> {
        self.send_line("RSET").await?;
        let (reply, _) = self.read_reply("the RSET reply").await?;
        self.last_used = Instant::now();
        if reply.is_positive() {
            Ok(())
        } else {
            Err(ClientError::Refused {
                context: "RSET",
                reply,
            })
        }
    }

    /// Says goodbye; errors do not matter any more.
    pub async fn quit(mut self) {
        if self.send_line("QUIT").await.is_ok() {
            let _ = self
                .read_reply_within(
                    "the QUIT reply",
                    Duration::from_secs(5).min(self.timeouts.command),
                )
                .await;
        }
    }
}

/// Splits "250-text" / "250 text" / "250" into (code, is last line, text).
fn parse_reply_line(line: &str) -> Option<(u16, bool, &str)> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = line[..3].parse().ok()?;
    if !(200..600).contains(&code) {
        return None;
    }
    match bytes.get(3) {
        None => Some((code, true, "")),
        Some(b' ') => Some((code, true, &line[4..])),
        Some(b'-') => Some((code, false, &line[4..])),
        Some(_) => None,
    }
}

/// The message as it goes after DATA: lines starting with "." get another "."
/// (RFC 5321 §4.5.2), a final CRLF if missing, then the end marker.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 50 + 5);
    // Whole lines at a time: a byte-by-byte copy was a visible part of a drain's CPU.
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// An address as it goes into `MAIL FROM:<...>` or `RCPT TO:<...>`: the local part as a
/// Dot-string when it is one, else as a Quoted-string (RFC 5321 §4.1.2). Addresses are
/// stored unquoted, so `"x> AUTH=<ceo@example.test> X=<y"@foreign.example` written raw
/// once reached the primary as `MAIL FROM:<x> AUTH=<ceo@example.test> X=<y@foreign.example>`,
/// parameters forged by the sender (issue 19 item 5).
pub fn smtp_path(address: &str) -> String {
    if address.is_empty() {
        return String::new(); // the null reverse-path `<>`
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        // `<postmaster>` and other paths without a domain.
        return if is_dot_string(address) {
            address.to_string()
        } else {
            quoted(address)
        };
    };
    if is_dot_string(local) {
        address.to_string()
    } else {
        format!("{}@{domain}", quoted(local))
    }
}

/// RFC 5321 Dot-string of atext (RFC 6531: any non-ASCII character counts as atext).
fn is_dot_string(s: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c) || !c.is_ascii())
        })
}

/// A Quoted-string: `"` and `\` escaped; anything else printable stays.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_parts_that_are_not_dot_strings_are_quoted() {
        use super::smtp_path;
        assert_eq!(smtp_path("anna@example.com"), "anna@example.com");
        assert_eq!(smtp_path("a.b+tag@example.com"), "a.b+tag@example.com");
        assert_eq!(smtp_path(""), "");
        assert_eq!(
            smtp_path("x> AUTH=<ceo@example.test> SIZE=1 X=<y@foreign.example"),
            "\"x> AUTH=<ceo@example.test> SIZE=1 X=<y\"@foreign.example"
        );
        assert_eq!(smtp_path("a..b@x"), "\"a..b\"@x");
        assert_eq!(smtp_path("say \"hi\"\\@x"), "\"say \\\"hi\\\"\\\\\"@x");
        assert_eq!(smtp_path("jörg@example.de"), "jörg@example.de");
    }

    use super::*;

    #[test]
    fn dot_stuffing_is_byte_exact() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b"x.y\r\n"), b"x.y\r\n.\r\n");
    }

    #[test]
    fn reply_lines_parse() {
        assert_eq!(
            parse_reply_line("250-PIPELINING"),
            Some((250, false, "PIPELINING"))
        );
        assert_eq!(parse_reply_line("550 5.1.1 no"), Some((550, true, "5.1.1 no")));
        assert_eq!(parse_reply_line("354"), Some((354, true, "")));
        assert_eq!(parse_reply_line("25x ok"), None);
        assert_eq!(parse_reply_line("250+x"), None);
        assert_eq!(parse_reply_line("999 x"), None);
    }

    #[test]
    fn capabilities_from_ehlo() {
        let lines: Vec<String> = ["mx hello", "PIPELINING", "SIZE 1000", "starttls", "8BITMIME"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let caps = Capabilities::parse(&lines);
        assert!(caps.pipelining && caps.starttls && caps.eight_bit_mime && !caps.smtputf8);
        assert_eq!(caps.size, Some(1000));
    }

    /// A scripted peer on a socket: the client against canned multi-line and pipelined
    /// replies (smtp-sink covers the real-peer case in tests/suite/delivery.rs).
    #[tokio::test]
    async fn pipelined_transaction_keeps_each_recipient_reply() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"220 hi\r\n").await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let mut step = 0;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if step == 0 && text.contains("EHLO") {
                    s.write_all(b"250-mx\r\n250-PIPELINING\r\n250 SIZE 100000\r\n")
                        .await
                        .unwrap();
                    step = 1;
                } else if step == 1 && text.contains("DATA\r\n") {
                    s.write_all(b"250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n354 go\r\n")
                        .await
                        .unwrap();
                    step = 2;
                } else if step == 2 && text.ends_with("\r\n.\r\n") {
                    s.write_all(b"250 queued\r\n").await.unwrap();
                    step = 3;
                } else if step == 3 && text.contains("QUIT") {
                    s.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                }
            }
            String::from_utf8(seen).unwrap()
        });
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            command: Duration::from_secs(5),
            data: Duration::from_secs(5),
        };
        let tls = TlsContext::new(std::path::Path::new("/nonexistent"));
        let mut client =
            SmtpClient::connect("127.0.0.1", port, "me", TlsPolicy::Opportunistic, &tls, timeouts)
                .await
                .unwrap();
        assert!(client.caps.pipelining);
        let replies = client
            .transaction(
                "a@b",
                &["x@y".into(), "z@y".into()],
                b"Subject: t\r\n\r\n.dot\r\n",
            )
            .await
            .unwrap();
        let codes: Vec<u16> = replies.per_recipient().iter().map(|r| r.code).collect();
        assert_eq!(codes, [250, 550]);
        client.quit().await;
        let seen = server.await.unwrap();
        assert!(
            seen.contains("MAIL FROM:<a@b> SIZE=20\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n"),
            "{seen}"
        );
        assert!(seen.contains("\r\n..dot\r\n.\r\n"), "{seen}");
    }
}
