//! A small HTTP server for the simulated peers, which can be taken down (connections
//! refused, open ones cut) and brought back up on the same port.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub type SimResponse = Response<Full<Bytes>>;

/// A handler answer carrying this header makes the server cut the connection instead.
pub const RESET_HEADER: &str = "x-sim-reset";

/// An answer that cuts the connection.
pub fn reset() -> SimResponse {
    Response::builder()
        .header(RESET_HEADER, "1")
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}
pub type Handler =
    Arc<dyn Fn(Request<Bytes>) -> Pin<Box<dyn Future<Output = SimResponse> + Send>> + Send + Sync>;

pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> SimResponse {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
}

pub fn json(status: u16, value: serde_json::Value) -> SimResponse {
    respond(status, "application/json", value.to_string())
}

pub struct SimServer {
    pub addr: SocketAddr,
    handler: Handler,
    tls: Option<TlsAcceptor>,
    running: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl SimServer {
    /// Starts serving on `127.0.0.1` on a free port.
    pub async fn start(
        handler: Handler,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Arc<SimServer>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = Arc::new(SimServer {
            addr,
            handler,
            tls,
            running: Mutex::new(None),
        });
        server.run(listener).await;
        Ok(server)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    async fn run(&self, listener: TcpListener) {
        let (stop, stopped) = watch::channel(false);
        let handler = self.handler.clone();
        let tls = self.tls.clone();
        let task = tokio::spawn(accept_loop(listener, handler, tls, stopped));
        *self.running.lock().await = Some((stop, task));
    }

    /// Stops listening and cuts every open connection: calls now fail to connect.
    pub async fn down(&self) {
        if let Some((stop, task)) = self.running.lock().await.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.run(listener).await;
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    handler: Handler,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = stopped.changed() => break,
        };
        // Finished connections leave the set, so a peer that churns them costs nothing.
        while connections.try_join_next().is_some() {}
        let handler = handler.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes = match body.collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(_) => Bytes::new(),
                    };
                    let response = handler(Request::from_parts(parts, bytes)).await;
                    if response.headers().contains_key(RESET_HEADER) {
                        // Drop the connection without an answer, like a crashing peer.
                        return Err(std::io::Error::other("simulated connection reset"));
                    }
                    Ok::<_, std::io::Error>(response)
                }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(s), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
    // Dropping the set aborts every connection task: their sockets close.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
