//! The connection driver: moves bytes between a socket (plain, STARTTLS-upgraded or
//! implicit TLS) and a protocol session from `understudy-protocol`.
//!
//! Sessions are synchronous and may block on the store, so every session step runs on
//! tokio's blocking pool; reads are bounded (`READ_CHUNK`) and race a time-out and the
//! shutdown signal. On shutdown or time-out the session says goodbye in its own words.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use understudy_protocol::session::{Session, READ_CHUNK};
use understudy_protocol::{Action, Goodbye, Output};
use understudy_storage::Store;

use crate::config_types::Service;

/// First size of a connection's read buffer. Most reads are a command line or an IDLE
/// `DONE`, and thousands of connections sit idle, so the buffer starts here and grows to
/// `READ_CHUNK` only while reads fill it (literals, pipelined bursts); a small read
/// shrinks it back. 5,000 idle IMAP sessions held 64 KiB each before.
const SMALL_READ: usize = 2 * 1024;

/// Octets of an unfinished command (a big literal, SMTP DATA) that restart the line
/// time-out: a slow but real upload keeps going, a trickle does not.
const LINE_PROGRESS: usize = 16 * 1024;

/// Input the session has taken without answering yet: when it began and how much has
/// come since the line time-out last restarted.
struct Unanswered {
    since: tokio::time::Instant,
    octets: usize,
}

impl Unanswered {
    /// Records a read that got no answer; None starts the clock.
    fn record(this: &mut Option<Unanswered>, octets: usize) {
        match this {
            None => {
                *this = Some(Unanswered {
                    since: tokio::time::Instant::now(),
                    octets,
                })
            }
            Some(u) => {
                u.octets += octets;
                if u.octets >= LINE_PROGRESS {
                    u.since = tokio::time::Instant::now();
                    u.octets = 0;
                }
            }
        }
    }
}

/// Time-outs for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub login: Duration,
    pub idle: Duration,
    pub tls_handshake: Duration,
    /// A command begun must finish (or keep arriving, `LINE_PROGRESS` per period) within
    /// this: a client trickling one byte a second is cut off (slowloris).
    pub line: Duration,
    /// How long a shutdown waits for a busy session (an SMTP DATA in flight).
    pub shutdown_grace: Duration,
    /// Commands per second before the next read waits (0: unpaced). See [`Pacer`].
    pub commands_per_second: u32,
}

/// Per-connection command rate limit as a token bucket: a client may burst up to two
/// seconds' worth (Outlook pipelines a burst of SELECT/FETCH at every sync), then its next
/// read waits until it is back under the rate. Slowing, not refusing, keeps a runaway
/// client from hogging the blocking pool without failing a legitimate one.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    tokens: f64,
    seen: u64,
    last: tokio::time::Instant,
}

impl Pacer {
    pub fn new(per_second: u32, now: tokio::time::Instant) -> Self {
        let rate = f64::from(per_second);
        Pacer {
            rate,
            tokens: 2.0 * rate,
            seen: 0,
            last: now,
        }
    }

    /// Charges the commands handled since the last call (`total` is the session's
    /// running count) and returns how long to wait before reading again, if at all.
    pub fn charge(&mut self, total: u64, now: tokio::time::Instant) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(2.0 * self.rate);
        self.tokens -= total.saturating_sub(self.seen) as f64;
        self.seen = total;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Closed,
}

/// The socket, and the DEFLATE state once COMPRESS is active (`compress.rs`).
struct Conn {
    io: Io,
    deflate: Option<Box<crate::compress::Deflate>>,
}

impl Conn {
    fn new(io: Io) -> Conn {
        Conn { io, deflate: None }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let compressed;
        let bytes = match self.deflate.as_mut() {
            Some(d) => {
                compressed = d.compress(bytes)?;
                &compressed[..]
            }
            None => bytes,
        };
        match &mut self.io {
            Io::Plain(s) => write_flush(s, bytes).await,
            Io::Tls(s) => write_flush(s.as_mut(), bytes).await,
            Io::Closed => Ok(()),
        }
    }

    /// Acknowledges what was read at once instead of after the delayed-ACK timer. A
    /// client that sends a literal and its closing CRLF in two writes (Python's imaplib,
    /// many libraries) holds the CRLF under Nagle's rule until the literal is
    /// acknowledged; with nothing to answer yet, Linux delays that ACK by up to 40 ms,
    /// and every APPEND took 44-50 ms. Quick-ack mode is not sticky, so this is set after
    /// each read that produced no answer. Failure only costs the delay: ignored.
    fn quick_ack(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = match &self.io {
                Io::Plain(s) => s.as_raw_fd(),
                Io::Tls(s) => s.get_ref().0.as_raw_fd(),
                Io::Closed => return,
            };
            let on: libc::c_int = 1;
            // SAFETY: a valid socket descriptor owned by this connection, and a pointer
            // to a c_int that lives across the call with its size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }

    async fn shutdown(&mut self) {
        let _ = match &mut self.io {
            Io::Plain(s) => s.shutdown().await,
            Io::Tls(s) => s.shutdown().await,
            Io::Closed => Ok(()),
        };
    }
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

async fn handshake(acceptor: &TlsAcceptor, stream: TcpStream, limit: Duration) -> anyhow::Result<Conn> {
    let tls = tokio::time::timeout(limit, acceptor.accept(stream))
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))??;
    Ok(Conn::new(Io::Tls(Box::new(tls))))
}

/// Runs one session step on the blocking pool, its time counted for `service` (the
/// metric `understudy_session_busy_seconds_total`: time spent in Understudy, not waiting
/// for the client).
async fn step<S, F>(service: Service, session: S, f: F) -> anyhow::Result<(S, Output)>
where
    S: Session,
    F: FnOnce(&mut S) -> Output + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut session = session;
        let started = std::time::Instant::now();
        let out = f(&mut session);
        crate::metrics::METRICS.session_step(service, started.elapsed());
        (session, out)
    })
    .await
    .map_err(|e| anyhow::anyhow!("session step failed: {e}"))
}

/// Drives one connection to its end. Errors are logged by the caller. `revoked` carries
/// ids of users whose sessions an admin ended (see `revoke`).
// The connection, its session and its two stop signals: a struct would only move the list.
#[allow(clippy::too_many_arguments)]
pub async fn drive<S: Session>(
    service: Service,
    stream: TcpStream,
    implicit_tls: bool,
    tls: Option<TlsAcceptor>,
    mut session: S,
    store: Store,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
    revoked: broadcast::Receiver<u64>,
    logins: crate::auth::LoginPacer,
) -> anyhow::Result<()> {
    let mut conn = match (implicit_tls, &tls) {
        (true, Some(acceptor)) => handshake(acceptor, stream, timeouts.tls_handshake).await?,
        (true, None) => anyhow::bail!("implicit TLS listener without a certificate"),
        (false, _) => Conn::new(Io::Plain(stream)),
    };
    let out = session.greeting();
    conn.write_all(&out.bytes).await?;
    if out.action == Action::Close {
        conn.shutdown().await;
        return Ok(());
    }
    let mut buf = ReadBuffer::new();
    let mut revoked = Some(revoked);
    let mut idle: Option<watch::Receiver<u64>> = None;
    let mut pacer = Pacer::new(timeouts.commands_per_second, tokio::time::Instant::now());
    let mut stopping = false;
    let mut unanswered: Option<Unanswered> = None;
    loop {
        let mut limit = if session.authenticated() {
            timeouts.idle
        } else {
            timeouts.login
        };
        if let Some(u) = &unanswered {
            limit =
                limit.min((u.since + timeouts.line).saturating_duration_since(tokio::time::Instant::now()));
        }
        let event = if stopping {
            Event::Goodbye(Goodbye::Shutdown)
        } else {
            tokio::select! {
            read = tokio::time::timeout(limit, buf.read(&mut conn)) => match read {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => Event::Input(n),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => Event::Goodbye(Goodbye::Timeout),
            },
            _ = shutdown.changed() => Event::Goodbye(Goodbye::Shutdown),
            id = async {
                match revoked.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match (id, session.account_id()) {
                (Ok(id), Some(mine)) if id == mine => Event::Goodbye(Goodbye::Revoked),
                // Missed some revocations: ask the store whether ours was one.
                (Err(broadcast::error::RecvError::Lagged(_)), Some(mine))
                    if !still_allowed(&store, mine).await => Event::Goodbye(Goodbye::Revoked),
                (Err(broadcast::error::RecvError::Closed), _) => {
                    revoked = None;
                    continue;
                }
                _ => continue,
            },
            changed = async {
                match idle.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => match changed {
                Ok(()) => Event::MailboxChanged,
                Err(_) => { idle = None; continue; }
            },
            }
        };
        let out = match event {
            Event::Input(n) => {
                let started = std::time::Instant::now();
                let inline = session.receive_inline(buf.filled());
                let mut out = match inline {
                    Some(out) => {
                        crate::metrics::METRICS.session_step(service, started.elapsed());
                        out
                    }
                    None => {
                        let chunk = buf.filled().to_vec();
                        let (s, out) = step(service, session, move |s| s.receive(&chunk)).await?;
                        session = s;
                        out
                    }
                };
                buf.resize_after(n);
                // A failed login is answered late, waiting here rather than on a thread.
                if let Some(wait) = logins.take_delay() {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => stopping = true,
                    }
                }
                // Output capped per step (a burst of pipelined RETRs): write what is
                // ready and run the rest before reading more.
                while out.action == Action::Continue && session.has_pending() {
                    conn.write_all(&out.bytes).await?;
                    let (s, next) = step(service, session, |s| s.receive(&[])).await?;
                    session = s;
                    out = next;
                }
                if out.bytes.is_empty() {
                    conn.quick_ack();
                    Unanswered::record(&mut unanswered, n);
                } else {
                    unanswered = None;
                }
                if let Some(wait) = pacer.charge(session.commands(), tokio::time::Instant::now()) {
                    tracing::debug!(
                        wait_ms = wait.as_millis() as u64,
                        "client over the command rate; pacing"
                    );
                    conn.write_all(&out.bytes).await?;
                    out.bytes.clear();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => stopping = true,
                    }
                }
                out
            }
            Event::MailboxChanged => {
                let (s, out) = step(service, session, |s| s.mailbox_changed()).await?;
                session = s;
                out
            }
            Event::Goodbye(why) => {
                if why == Goodbye::Shutdown && session.busy() {
                    // Let an SMTP transaction in flight finish (bounded), then say goodbye.
                    let deadline = tokio::time::Instant::now() + timeouts.shutdown_grace;
                    while session.busy() && tokio::time::Instant::now() < deadline {
                        match tokio::time::timeout_at(deadline, buf.read(&mut conn)).await {
                            Ok(Ok(n)) if n > 0 => {
                                let chunk = buf.filled().to_vec();
                                let (s, out) = step(service, session, move |s| s.receive(&chunk)).await?;
                                session = s;
                                conn.write_all(&out.bytes).await?;
                                if out.action == Action::Close {
                                    conn.shutdown().await;
                                    return Ok(());
                                }
                            }
                            _ => break,
                        }
                    }
                }
                let bytes = session.goodbye(why);
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.write_all(&bytes)).await;
                conn.shutdown().await;
                return Ok(());
            }
        };
        conn.write_all(&out.bytes).await?;
        match out.action {
            Action::Continue => idle = None,
            Action::Close => {
                conn.shutdown().await;
                return Ok(());
            }
            Action::StartTls => {
                let Some(acceptor) = &tls else {
                    anyhow::bail!("STARTTLS without a certificate")
                };
                if conn.deflate.is_some() {
                    anyhow::bail!("STARTTLS on a compressed connection");
                }
                let Io::Plain(stream) = std::mem::replace(&mut conn.io, Io::Closed) else {
                    anyhow::bail!("STARTTLS on a connection that is already TLS");
                };
                conn = handshake(acceptor, stream, timeouts.tls_handshake).await?;
                session.tls_started();
            }
            Action::Compress => {
                // The tagged OK went out uncompressed; everything after it is DEFLATE.
                idle = None;
                conn.deflate = Some(Box::default());
            }
            Action::Idle { mailbox_id } => {
                if idle.is_none() {
                    idle = Some(store.subscribe(mailbox_id, 0));
                    // A change may have committed between the session's last look and
                    // the subscription: look once more now.
                    let (s, out) = step(service, session, |s| s.mailbox_changed()).await?;
                    session = s;
                    conn.write_all(&out.bytes).await?;
                }
            }
        }
    }
}

/// True if the user still exists, is active and has some access.
async fn still_allowed(store: &Store, user_id: u64) -> bool {
    let store = store.clone();
    let user = tokio::task::spawn_blocking(move || store.user(user_id)).await;
    match user {
        Ok(Ok(Some(u))) => u.is_active() && u.access != Some(understudy_storage::AccessLevel::None),
        Ok(Ok(None)) => false,
        // Cannot tell: keep the session rather than end it on a store hiccup.
        _ => true,
    }
}

/// A connection's read buffer. It starts at `SMALL_READ`, grows to `READ_CHUNK` after a
/// read that filled it and shrinks back after `SHRINK_AFTER` small reads in a row, so an
/// SMTP body or APPEND streams in big reads while an idle connection holds 2 KiB. Reads
/// go into spare capacity: nothing is zeroed first.
struct ReadBuffer {
    bytes: Vec<u8>,
    small_reads: u32,
}

/// Small reads in a row before a grown buffer is given back. A message body alternates
/// full and partial reads; shrinking at the first partial one reallocated 64 KiB twice
/// per message.
const SHRINK_AFTER: u32 = 4;

impl ReadBuffer {
    fn new() -> Self {
        ReadBuffer {
            bytes: Vec::with_capacity(SMALL_READ),
            small_reads: 0,
        }
    }

    /// Reads once, at most the buffer's capacity; the bytes are in `filled()`.
    async fn read(&mut self, conn: &mut Conn) -> std::io::Result<usize> {
        // One read into the spare capacity (a Vec grows only when it has none).
        self.bytes.clear();
        let Some(deflate) = conn.deflate.as_mut() else {
            return read_io(&mut conn.io, &mut self.bytes).await;
        };
        // Compressed: read until something inflates (a read may hold only part of a
        // block), using up what is pending before reading the socket again.
        loop {
            if deflate.has_pending() {
                deflate.decompress(&[], &mut self.bytes)?;
            } else {
                let mut raw = Vec::with_capacity(self.bytes.capacity());
                if read_io(&mut conn.io, &mut raw).await? == 0 {
                    return Ok(0);
                }
                deflate.decompress(&raw, &mut self.bytes)?;
            }
            if !self.bytes.is_empty() {
                return Ok(self.bytes.len());
            }
        }
    }

    fn filled(&self) -> &[u8] {
        &self.bytes
    }

    /// Adapts the size after a read of `last_read` bytes.
    fn resize_after(&mut self, last_read: usize) {
        let capacity = self.bytes.capacity();
        if last_read >= capacity && capacity < READ_CHUNK {
            self.bytes = Vec::with_capacity(READ_CHUNK);
            self.small_reads = 0;
        } else if last_read < SMALL_READ / 2 && capacity > SMALL_READ {
            self.small_reads += 1;
            if self.small_reads >= SHRINK_AFTER {
                self.bytes = Vec::with_capacity(SMALL_READ);
                self.small_reads = 0;
            }
        } else {
            self.small_reads = 0;
        }
    }
}

async fn read_io(io: &mut Io, into: &mut Vec<u8>) -> std::io::Result<usize> {
    match io {
        Io::Plain(s) => s.read_buf(into).await,
        Io::Tls(s) => s.read_buf(into).await,
        Io::Closed => Ok(0),
    }
}

enum Event {
    Input(usize),
    MailboxChanged,
    Goodbye(Goodbye),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn pacer_allows_a_burst_then_holds_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(100, start);
        // Two seconds' worth at once: no wait.
        assert_eq!(pacer.charge(200, start), None);
        // Fifty more at the same instant: half a second of debt.
        let wait = pacer.charge(250, start).unwrap();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // After waiting it out, the rate (not the burst) applies again.
        let later = start + Duration::from_millis(500);
        assert_eq!(pacer.charge(250, later), None);
        let later = later + Duration::from_millis(100);
        assert_eq!(pacer.charge(260, later), None);
        assert!(pacer.charge(261, later).is_some());
        // An idle minute refills only up to the burst.
        let later = later + Duration::from_secs(60);
        assert_eq!(pacer.charge(461, later), None);
        assert!(pacer.charge(462, later).is_some());
    }

    #[test]
    fn zero_rate_never_waits() {
        let now = Instant::now();
        let mut pacer = Pacer::new(0, now);
        assert_eq!(pacer.charge(1_000_000, now), None);
    }
}
