//! The connectivity probe toward a domain's primary server: TCP connect, read the
//! greeting, EHLO, QUIT (RFC 5321 §3.1, §4.1.1.1, §4.1.1.10). A refused or timed-out
//! connection, a greeting that is not 220, or a 4xx reply counts as a failure. Every
//! read is bounded in size and time.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// SPEC "Domains": a connect time-out of about 10 s.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for each reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply we read (a long EHLO list is a few hundred bytes).
const MAX_REPLY: usize = 16 * 1024;

/// Splits `host[:port]` (IPv6 in brackets) into host and port; 25 by default.
pub fn split_host_port(relay_host: &str) -> Option<(String, u16)> {
    let text = relay_host.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 25,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Some((text.to_string(), 25)),
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None if !text.is_empty() => Some((text.to_string(), 25)),
        None => None,
    }
}

/// Probes `relay_host`, saying EHLO as `helo`. `Err` says why it counts as a failure.
pub async fn probe(relay_host: &str, helo: &str) -> Result<(), String> {
    let (host, port) = split_host_port(relay_host).ok_or_else(|| format!("bad relay host '{relay_host}'"))?;
    let mut stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("connect to {relay_host}: {e}")),
            Err(_) => {
                return Err(format!(
                    "connect to {relay_host} timed out after {CONNECT_TIMEOUT:?}"
                ))
            }
        };
    let greeting = read_reply(&mut stream)
        .await
        .map_err(|e| format!("greeting: {e}"))?;
    if greeting.code != 220 {
        return Err(format!("greeting: {}", greeting.text));
    }
    stream
        .write_all(format!("EHLO {helo}\r\n").as_bytes())
        .await
        .map_err(|e| format!("EHLO: {e}"))?;
    let ehlo = read_reply(&mut stream).await.map_err(|e| format!("EHLO: {e}"))?;
    if (400..500).contains(&ehlo.code) {
        return Err(format!("EHLO: {}", ehlo.text));
    }
    // A 5xx to EHLO still shows a live server (it may only speak HELO): reachable.
    let _ = stream.write_all(b"QUIT\r\n").await;
    if let Ok(quit) = read_reply(&mut stream).await {
        if (400..500).contains(&quit.code) {
            return Err(format!("QUIT: {}", quit.text));
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Reply {
    code: u16,
    /// The reply's lines joined by spaces, for the log and the outage reason.
    text: String,
}

/// Reads one (possibly multi-line) reply: lines `ddd-...` until `ddd ...`.
async fn read_reply(stream: &mut TcpStream) -> Result<Reply, String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        if let Some(reply) = parse_reply(&buf)? {
            return Ok(reply);
        }
        if buf.len() >= MAX_REPLY {
            return Err(format!("reply longer than {MAX_REPLY} bytes"));
        }
        let room = (MAX_REPLY - buf.len()).min(chunk.len());
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Ok(Ok(0)) => return Err("connection closed".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no reply within {REPLY_TIMEOUT:?}")),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `Ok(None)` until the last line of the reply is complete.
fn parse_reply(buf: &[u8]) -> Result<Option<Reply>, String> {
    let mut lines = Vec::new();
    let mut rest = buf;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&rest[..end])
            .trim_end_matches('\r')
            .to_string();
        rest = &rest[end + 1..];
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| format!("not an SMTP reply: {line:.80}"))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Ok(Some(Reply {
                code,
                text: lines.join(" "),
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("mail.example.com"),
            Some(("mail.example.com".into(), 25))
        );
        assert_eq!(
            split_host_port("127.0.0.1:2525"),
            Some(("127.0.0.1".into(), 2525))
        );
        assert_eq!(split_host_port("[::1]:26"), Some(("::1".into(), 26)));
        assert_eq!(split_host_port("[::1]"), Some(("::1".into(), 25)));
        assert_eq!(split_host_port("h:x"), None);
        assert_eq!(split_host_port(""), None);
    }

    #[test]
    fn multi_line_replies() {
        assert!(parse_reply(b"250-a\r\n").unwrap().is_none());
        let r = parse_reply(b"250-a\r\n250 b\r\n").unwrap().unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.text, "250-a 250 b");
        assert!(parse_reply(b"hello\r\n").is_err());
    }

    /// A scripted server (the real-peer tests use Postfix's smtp-sink; this covers the
    /// 4xx greeting, which smtp-sink cannot send on demand).
    async fn scripted(greeting: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            w.write_all(greeting.as_bytes()).await.unwrap();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply: &[u8] = if line.starts_with("EHLO") {
                    b"250-x\r\n250 SIZE 1\r\n"
                } else {
                    b"221 bye\r\n"
                };
                if w.write_all(reply).await.is_err() {
                    break;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn probe_outcomes() {
        let ok = scripted("220 ready\r\n").await;
        probe(&ok, "probe.test").await.unwrap();
        let busy = scripted("421 4.3.2 try later\r\n").await;
        let err = probe(&busy, "probe.test").await.unwrap_err();
        assert!(err.contains("421"), "{err}");
        // A port nobody listens on: refused.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(probe(&addr, "probe.test").await.unwrap_err().contains("connect"));
    }
}
