//! The HTTP listener: hyper's HTTP/1.1 server (through hyper-util) with a
//! header read timeout, the peer address for handlers, and graceful
//! shutdown.
//!
//! `axum::serve` has no timer, so a client that opens connections and
//! sends their headers slowly (or not at all) would hold them for ever.
//! Here every connection must deliver each request's whole header block
//! within `http.header_read_timeout`, counted from when the server starts
//! waiting for it (so an idle keep-alive connection is closed after it too).
//! Bodies are paced by the handlers that read them (ingest's
//! `limits::paced`).
//!
//! With the origin role, each request first meets the origin's front cache
//! ([`cascade_origin::Front`]), which answers repeated plain fetches of
//! public objects without routing.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use cascade_origin::zero_copy::ZeroCopyStream;
use cascade_origin::{Front, Fronted};
use cascade_platform::config::HttpConfig;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// How long the accept loop pauses after an error that is not one
/// connection's (out of file descriptors, say), as `axum::serve` does.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting
/// and waits for the connections in progress to finish their requests.
/// Handlers can read the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    front: Option<Front>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    tracing::error!(error = %error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(error = %error, "cannot set TCP_NODELAY");
        }
        // The router with this connection's `ConnectInfo<SocketAddr>`
        // (always ready: it only clones the router).
        let ready =
            std::future::poll_fn(|cx| Service::<SocketAddr>::poll_ready(&mut make_service, cx));
        if let Err(never) = ready.await {
            match never {}
        }
        let service = match Service::<SocketAddr>::call(&mut make_service, peer).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        let service = Fronted::new(service, front.clone());
        let connection = builder
            .serve_connection(
                TokioIo::new(ZeroCopyStream::new(stream)),
                TowerToHyperService::new(service),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Clients that go away, or are cut off for slow headers, end here.
            if let Err(error) = connection.await {
                tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection, not of the listener (as `axum::serve` has it).
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::time::Instant;

    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use tokio::sync::Notify;

    use super::*;

    struct Server {
        addr: SocketAddr,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
        /// Notified when a request reaches `/slow`.
        slow_entered: Arc<Notify>,
    }

    /// Serves, on a free loopback port, `/peer` (the peer address the
    /// handler sees) and `/slow` (answers 300 ms after it is reached).
    async fn start(header_read_timeout: Duration) -> Server {
        let slow_entered = Arc::new(Notify::new());
        let entered = slow_entered.clone();
        let app = Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/shared",
                get(|| async { axum::body::Body::from(shared_object()) }),
            )
            .route(
                "/slow",
                get(move || async move {
                    entered.notify_one();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = HttpConfig {
            listen: addr,
            header_read_timeout,
            ..HttpConfig::default()
        };
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { serve(listener, app, &config, None, token).await });
        Server {
            addr,
            shutdown,
            task,
            slow_entered,
        }
    }

    /// A 300 KB object in shared memory, as the origin's memory tier keeps it.
    fn shared_object() -> bytes::Bytes {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        cascade_origin::zero_copy::into_shared_memory(bytes.into())
    }

    /// Sends `request` and reads until the server closes the connection.
    fn exchange(addr: SocketAddr, request: &str) -> (TcpStream, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        (stream, answer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_see_the_peer_address() {
        let addr = start(Duration::from_secs(5)).await.addr;
        let (stream, answer) = tokio::task::spawn_blocking(move || {
            exchange(
                addr,
                "GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        })
        .await
        .unwrap();
        let local = stream.local_addr().unwrap().to_string();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&local), "{answer} from {local}");
    }

    /// A body the origin keeps in shared memory leaves by `sendfile`, and
    /// arrives whole, after its headers, on a keep-alive connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_bodies_are_sent_without_a_copy_and_arrive_whole() {
        let addr = start(Duration::from_secs(5)).await.addr;
        let before = cascade_origin::zero_copy::bytes_sent_zero_copy();
        let answer = tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut answers = Vec::new();
            for close in ["", "Connection: close\r\n"] {
                let request = format!("GET /shared HTTP/1.1\r\nHost: x\r\n{close}\r\n");
                stream.write_all(request.as_bytes()).unwrap();
                // Headers, then exactly the body.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    stream.read_exact(&mut byte).unwrap();
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                assert!(head.contains("content-length: 300000"), "{head}");
                let mut body = vec![0u8; 300_000];
                stream.read_exact(&mut body).unwrap();
                answers.push(body);
            }
            answers
        })
        .await
        .unwrap();
        let expected = shared_object();
        assert!(answer.iter().all(|body| body[..] == expected[..]));
        // The server thread counts a sendfile once the call returns, which
        // can be just after the client has read its bytes.
        let deadline = Instant::now() + Duration::from_secs(5);
        let sent = loop {
            let sent = cascade_origin::zero_copy::bytes_sent_zero_copy() - before;
            if sent >= 600_000 || Instant::now() > deadline {
                break sent;
            }
            tokio::task::yield_now().await;
        };
        assert!(sent >= 600_000, "{sent} bytes sent by sendfile");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_or_silent_headers_are_cut_off() {
        let addr = start(Duration::from_millis(300)).await.addr;
        let closed_after = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            // Half a request line, then nothing.
            let (_, answer) = exchange(addr, "GET /peer HTTP/1.1\r\nHo");
            (started.elapsed(), answer)
        })
        .await
        .unwrap();
        assert!(
            closed_after.0 < Duration::from_secs(3),
            "{:?}: {}",
            closed_after.0,
            closed_after.1
        );
        assert!(
            closed_after.1.is_empty() || closed_after.1.starts_with("HTTP/1.1 408"),
            "{}",
            closed_after.1
        );
        let silent = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            exchange(addr, "");
            started.elapsed()
        })
        .await
        .unwrap();
        assert!(silent < Duration::from_secs(3), "{silent:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_lets_requests_in_progress_finish() {
        let server = start(Duration::from_secs(5)).await;
        let addr = server.addr;
        let request = tokio::task::spawn_blocking(move || {
            exchange(
                addr,
                "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .1
        });
        // Once the request is in, stop the server.
        server.slow_entered.notified().await;
        server.shutdown.cancel();
        let answer = request.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), server.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
        // And takes no new connection.
        assert!(TcpStream::connect(addr).is_err());
    }
}
