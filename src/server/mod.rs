//! The sockets: accepting connections (with TLS where configured), limits and timeouts
//! that protect the daemon from slow or hostile clients, and graceful shutdown.
//!
//! Routes live in [`public`] (Facebook's webhooks) and [`local`] (Motion's Reply URL,
//! health). Every connection is HTTP/1.1 with
//! keep-alive; a client that does not send its request head within the request timeout
//! is disconnected, one that does not finish its body gets 408 (see [`public`]).

pub mod local;
pub mod public;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub type HttpResponse = Response<Full<Bytes>>;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a TLS handshake, and for a request head to arrive.
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

/// A plain-text response.
pub fn text(status: u16, body: impl Into<Bytes>) -> HttpResponse {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

/// Serves `listener` until `shutdown` turns true, then lets open requests finish for
/// up to `grace` and returns.
pub async fn serve<H, Fut>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    // A permit per open connection: the semaphore is the connection limit.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(listener = name, "cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            // An idle connection costs only its socket and this small task until the
            // client speaks: the TLS and HTTP state (several KiB) is made, boxed, once
            // bytes arrive. 10,000 idle connections stay cheap.
            let deadline = tokio::time::Instant::now() + limits.request_timeout;
            if tokio::time::timeout_at(deadline, stream.readable())
                .await
                .is_err()
            {
                debug!(listener = name, %remote, "connection closed: nothing sent within the request timeout");
                return;
            }
            Box::pin(serve_connection(
                name, stream, remote, tls, limits, deadline, handler, watcher,
            ))
            .await;
        });
    }
    drop(listener);
    info!(listener = name, "stopped accepting connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            listener = name,
            "connections still open after {grace:?} were closed"
        );
    }
}

/// One connection, once its client has sent something: TLS (if any), then HTTP/1.1.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<H, Fut>(
    name: &'static str,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    handshake_deadline: tokio::time::Instant,
    handler: H,
    watcher: hyper_util::server::graceful::Watcher,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req, remote).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    let result = match tls {
        Some(acceptor) => {
            match tokio::time::timeout_at(handshake_deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(tls_stream), service))
                        .await
                }
                Ok(Err(e)) => {
                    debug!(listener = name, %remote, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(listener = name, %remote, "TLS handshake timed out");
                    return;
                }
            }
        }
        None => {
            watcher
                .watch(http.serve_connection(TokioIo::new(stream), service))
                .await
        }
    };
    if let Err(e) = result {
        debug!(listener = name, %remote, "connection ended: {e}");
    }
}
