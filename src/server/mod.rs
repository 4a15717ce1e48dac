//! The sockets: accepting connections (with TLS where configured), limits and timeouts
//! that protect the daemon from slow or hostile clients, and graceful shutdown.
//!
//! Routes live in [`public`] (Facebook's webhooks) and [`local`] (Motion's Reply URL,
//! health). Every connection is HTTP/1.1 with
//! keep-alive; a client that does not send its request head within the request timeout
//! is disconnected, one that does not finish its body gets 408 (see [`public`]).

pub mod app_callbacks;
pub mod body;
pub mod challenges;
mod head;
pub mod local;
pub mod login_callback;
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, info, warn};

pub type HttpResponse = Response<Full<Bytes>>;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a TLS handshake, and for a request head to arrive.
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections whose client has spoken (TLS and HTTP state, ~100 KiB each in the
    /// middle of a request) at once. An idle connection costs ~1.2 KiB and waits here.
    pub max_active: usize,
}

/// How long a connection must have been active before a newcomer may push it out
/// when every active slot is taken: Facebook sends a webhook in milliseconds, so what
/// holds a slot this long is slow or hostile.
const EVICT_AFTER: Duration = Duration::from_secs(1);

/// An active connection as [`Active`] keeps it: when it became active, how to close it,
/// and whether a request of it is being answered.
type OpenConnection = (
    tokio::time::Instant,
    tokio::sync::oneshot::Sender<()>,
    Arc<std::sync::atomic::AtomicBool>,
);

/// The active connections: a slot each, and a way to close the oldest.
struct Active {
    /// The listener's name, for the log line of a closed connection.
    listener: &'static str,
    slots: Arc<Semaphore>,
    /// The open connections by activation order.
    open: std::sync::Mutex<std::collections::BTreeMap<u64, OpenConnection>>,
    next: std::sync::atomic::AtomicU64,
}

impl Active {
    fn new(listener: &'static str, max: usize) -> Active {
        Active {
            listener,
            slots: Arc::new(Semaphore::new(max)),
            open: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A slot for a connection whose client has spoken, by `deadline`. When none is
    /// free, the connection active for longest (over [`EVICT_AFTER`]) whose request is
    /// not being answered is closed to make room: a flood of slow clients cannot keep
    /// Facebook or Motion out, nor take more memory than the slots allow — and a request
    /// being answered (Motion's Reply URL call waiting for Graph, a webhook being stored)
    /// is never cut for a newcomer.
    async fn enter(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
    ) -> Option<(OwnedSemaphorePermit, Registration)> {
        let permit = loop {
            if let Ok(p) = self.slots.clone().try_acquire_owned() {
                break p;
            }
            // Every slot is taken: close the connection active the longest, once it has
            // been active long enough; else wait until it has.
            let (evicted, wait) = {
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                let first = open
                    .iter()
                    .find(|(_, (_, _, answering))| {
                        !answering.load(std::sync::atomic::Ordering::Relaxed)
                    })
                    .map(|(k, (at, _, _))| (*k, at.elapsed()));
                match first {
                    Some((key, age)) if age >= EVICT_AFTER => {
                        (open.remove(&key), Duration::from_millis(50))
                    }
                    Some((_, age)) => (None, EVICT_AFTER - age),
                    None => (None, EVICT_AFTER),
                }
            };
            if let Some((_, close, _)) = evicted {
                let _ = close.send(());
                if crate::logging::EVICTED.admit() {
                    warn!(
                        listener = self.listener,
                        "a connection was closed to make room for a new one: every active slot of the {} listener is taken, the oldest for over {}s without a request to answer (slow or hostile clients?)",
                        self.listener,
                        EVICT_AFTER.as_secs()
                    );
                }
            }
            let until = deadline.min(tokio::time::Instant::now() + wait);
            match tokio::time::timeout_at(until, self.slots.clone().acquire_owned()).await {
                Ok(Ok(p)) => break p,
                Ok(Err(_)) => return None,
                Err(_) if tokio::time::Instant::now() >= deadline => return None,
                Err(_) => continue,
            }
        };
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (close, closed) = tokio::sync::oneshot::channel();
        let answering = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (tokio::time::Instant::now(), close, answering.clone()));
        Some((
            permit,
            Registration {
                active: self.clone(),
                key,
                closed,
                answering,
            },
        ))
    }
}

/// A request's mark on its connection, in its extensions: a handler calls
/// [`Answering::start`] once the whole request is in (its body read and checked), and
/// from then until the answer the connection is not closed for a newcomer. Until then
/// it may be: a client that trickles its body is slow or hostile, whatever its head said.
#[derive(Clone)]
pub struct Answering(Arc<std::sync::atomic::AtomicBool>);

impl Answering {
    /// The mark of `req`'s connection, if it came through [`serve`].
    pub fn of<B>(req: &Request<B>) -> Option<Answering> {
        req.extensions().get::<Answering>().cloned()
    }

    /// Marks the connection as answering a complete request, until the guard is dropped.
    pub fn start(&self) -> AnsweringGuard {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        AnsweringGuard(self.0.clone())
    }
}

/// Ends the mark of [`Answering::start`] when dropped.
pub struct AnsweringGuard(Arc<std::sync::atomic::AtomicBool>);

impl Drop for AnsweringGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An active connection's place; leaving it (drop) frees the entry.
struct Registration {
    active: Arc<Active>,
    key: u64,
    /// Fires when a newcomer needs the slot.
    closed: tokio::sync::oneshot::Receiver<()>,
    /// Set while a request of the connection is being answered: it is not closed then.
    answering: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.active
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
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
    tls: Option<tls::Acceptor>,
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
    let active = Arc::new(Active::new(name, limits.max_active));
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
        let active = active.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // An idle connection costs only its socket and this small task until the
            // client speaks: the TLS and HTTP state (several KiB) is made, boxed, once
            // bytes arrive, and only within an active slot. 10,000 idle connections stay
            // cheap, and active ones are bounded.
            let deadline = tokio::time::Instant::now() + limits.request_timeout;
            let mut stream = stream;
            // Without TLS, the whole request head before a slot (see `head`); with TLS,
            // a first byte (its handshake needs the slot's state).
            let head = if tls.is_none() {
                match head::read_head(&mut stream, deadline).await {
                    Some(head) => Some(head),
                    None => {
                        debug!(listener = name, %remote, "connection closed: no whole request head within the request timeout");
                        return;
                    }
                }
            } else {
                if !tokio::time::timeout_at(deadline, client_spoke(&stream))
                    .await
                    .unwrap_or(false)
                {
                    debug!(listener = name, %remote, "connection closed: nothing sent within the request timeout");
                    return;
                }
                None
            };
            let Some((_active, registration)) = active.enter(deadline).await else {
                debug!(listener = name, %remote, "connection closed: no active slot within the request timeout");
                return;
            };
            let mut registration = registration;
            let answering = registration.answering.clone();
            tokio::select! {
                _ = Box::pin(serve_connection(
                    name, stream, head, remote, tls, limits, deadline, handler, watcher, answering,
                )) => {}
                _ = &mut registration.closed => {
                    debug!(listener = name, %remote, "connection closed to make room: active the longest while every slot was taken");
                }
            }
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

/// Waits until the client has sent at least one byte (false: it closed first). The
/// byte is peeked, not taken. (`readable()` alone wakes without data: tokio documents
/// false positives, and idle connections went on to take active slots.)
async fn client_spoke(stream: &tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.peek(&mut byte).await, Ok(n) if n > 0)
}

/// One connection, once its client has sent something: TLS (if any), then HTTP/1.1.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<H, Fut>(
    name: &'static str,
    stream: tokio::net::TcpStream,
    head: Option<Bytes>,
    remote: SocketAddr,
    tls: Option<tls::Acceptor>,
    limits: Limits,
    handshake_deadline: tokio::time::Instant,
    handler: H,
    watcher: hyper_util::server::graceful::Watcher,
    answering: Arc<std::sync::atomic::AtomicBool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    // Each request carries its connection's mark and client certificate (extensions).
    let service = move |cert: tls::ClientCert| {
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let handler = handler.clone();
            req.extensions_mut().insert(Answering(answering.clone()));
            req.extensions_mut().insert(cert.clone());
            async move { Ok::<_, Infallible>(handler(req, remote).await) }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .keep_alive(true)
        // A request head fits (Facebook's are ~1 KiB); the body is read in chunks of at
        // most this. Per-connection memory is part of the bound a flood can take.
        .max_buf_size(16 * 1024);
    let result = match tls {
        Some(acceptor) => {
            match tokio::time::timeout_at(handshake_deadline, acceptor.accept(stream)).await {
                Ok(Ok(Some(tls_stream))) => {
                    let cert = acceptor.client_cert(tls_stream.get_ref().1.peer_certificates());
                    watcher
                        .watch(http.serve_connection(TokioIo::new(tls_stream), service(cert)))
                        .await
                }
                Ok(Ok(None)) => {
                    debug!(listener = name, %remote, "answered the ACME CA's TLS-ALPN-01 check");
                    return;
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
            let stream = head::Rewind::new(head.unwrap_or_default(), stream);
            watcher
                .watch(
                    http.serve_connection(TokioIo::new(stream), service(tls::ClientCert::NotAsked)),
                )
                .await
        }
    };
    if let Err(e) = result {
        debug!(listener = name, %remote, "connection ended: {e}");
    }
}
