//! The one HTTP stack: every HTTP endpoint (metrics and health, client autoconfiguration,
//! the web console and its JSON API) is an axum `Router` served by [`serve`], which
//! accepts through the listener's [`Admission`] (connection caps per group and per
//! client address, issue 19), optionally wraps the socket in TLS with the server's
//! current certificate (swapped on SIGHUP), and runs hyper's HTTP/1.1 connection with a
//! bounded request head, a time-out for the head, a time-out for each whole request and
//! a body limit set by each router.
//!
//! - [`console`]: the web console (pages, login, sessions, audit) and its JSON API.

pub mod console;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::admission::Admission;

/// Largest request head (request line and headers). hyper's read buffer cannot be set
/// below 8 KiB; a head that does not fit gets 431 (issue 19 item 10: heads of 12 KB once
/// passed an 8 KiB limit).
pub const MAX_HEAD: usize = 8 * 1024;
/// The request head must have arrived within this time of the connection opening or of
/// the previous response (slowloris, idle keep-alive connections holding a slot).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshake time-out.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request, body included, must be answered within this time (408 after).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The client's address, put in every request's extensions by [`serve`] (axum's
/// `ConnectInfo<SocketAddr>` extractor reads it).
pub type Peer = ConnectInfo<SocketAddr>;

/// Binds `addr` and prints `listening NAME ADDR` like the mail listeners.
pub async fn bind(name: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = addr.parse()?;
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(service = name, addr = %local, "listening");
    println!("listening {name} {local}");
    Ok(listener)
}

/// The layers every router gets: the request time-out. Body limits are per router
/// (`axum::extract::DefaultBodyLimit`), as an upload page needs more than a probe.
pub fn with_limits(router: Router) -> Router {
    router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        REQUEST_TIMEOUT,
    ))
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets the open
/// connections finish their request (bounded). `tls` gives the acceptor for each new
/// connection (None: plain HTTP), so a reloaded certificate applies at once.
pub async fn serve<T>(
    listener: TcpListener,
    tls: T,
    router: Router,
    admission: Arc<Admission>,
    mut shutdown: watch::Receiver<bool>,
) where
    T: Fn() -> Option<TlsAcceptor> + Send + Sync + 'static,
{
    let router = with_limits(router);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut shutdown) => break,
            // Reap finished connections so the set does not grow with every request.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(ticket) = admission.admit(peer.ip()) else {
            tracing::debug!(%peer, "http connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = tls();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _ticket = ticket;
            let result = match acceptor {
                Some(acceptor) => match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(tls, peer, router, HEAD_TIMEOUT, stop).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "https handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                None => serve_connection(stream, peer, router, HEAD_TIMEOUT, stop).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    // Every connection saw the signal and finishes its request in progress.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// One HTTP/1.1 connection: keep-alive allowed, each head within `head_timeout` and
/// [`MAX_HEAD`]; at shutdown the request in progress finishes and the connection closes.
async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    router: Router,
    head_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(64)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// Returns once the stop signal is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn exchange(request: Vec<u8>) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (_stop_tx, stop) = watch::channel(false);
        let router = with_limits(Router::new().route("/", get(|| async { "hi" })));
        let peer: SocketAddr = "192.0.2.1:1234".parse().unwrap();
        let task = tokio::spawn(serve_connection(server, peer, router, HEAD_TIMEOUT, stop));
        client.write_all(&request).await.unwrap();
        let mut reply = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut reply))
            .await
            .unwrap()
            .unwrap();
        drop(client);
        let _ = task.await;
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    /// Issue 19 item 10 on the new stack: a head over the bound is refused even when it
    /// arrives complete in one read; a normal one is served.
    #[tokio::test]
    async fn heads_over_the_bound_are_refused_even_when_complete() {
        for (size, refused) in [(12 * 1024, true), (MAX_HEAD + 1, true), (4 * 1024, false)] {
            let filler = "x".repeat(size - "GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n".len());
            let request = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {filler}\r\n\r\n").into_bytes();
            let reply = exchange(request).await;
            assert_eq!(reply.starts_with("HTTP/1.1 431"), refused, "{size}: {reply}");
            if !refused {
                assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
            }
        }
    }

    /// A client that opens a connection and sends nothing, or stops after a response, is
    /// dropped after the head time-out instead of holding its slot for ever.
    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_head_timeout() {
        let timeout = Duration::from_millis(300);
        let (mut client, server) = tokio::io::duplex(1024);
        let (_stop_tx, stop) = watch::channel(false);
        let router = Router::new().route("/", get(|| async { "hi" }));
        let peer: SocketAddr = "192.0.2.1:1234".parse().unwrap();
        let task = tokio::spawn(serve_connection(server, peer, router, timeout, stop));
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(_))),
            "closed (or answered) within the time-out: {n:?}"
        );
        assert!(tokio::time::timeout(Duration::from_secs(5), task).await.is_ok());
        // After a response on a kept-alive connection, silence ends it too.
        let (mut client, server) = tokio::io::duplex(1024);
        let (_stop_tx, stop) = watch::channel(false);
        let router = Router::new().route("/", get(|| async { "hi" }));
        let task = tokio::spawn(serve_connection(server, peer, router, timeout, stop));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        assert!(
            tokio::time::timeout(Duration::from_secs(5), task).await.is_ok(),
            "kept-alive connection closed"
        );
    }
}
