//! The notify's own client: pooled HTTP/1 connections (hyper-util's client, rustls for
//! `https`) that POST a JSON body and read the answer up to a bound. A notify goes out
//! at every customer message; through reqwest, its layers (the redirect policy parsing
//! the URL again, timeouts, boxed services) cost about as much as the exchange itself.
//! Everything else of Motion's API (files, probes) and every notify that needs what
//! only reqwest does here (a proxy from the environment, credentials in the URL, a
//! running capture) stays on reqwest: [`Notifier::direct`] says which.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::http_client;

/// Errors of the connector: TCP, TLS, or a host that is no server name.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) struct Notifier {
    client: Client<Connector, Full<Bytes>>,
    /// The whole exchange: connecting, sending, and reading the answer.
    timeout: Duration,
    /// The proxies reqwest takes from the environment (`HTTPS_PROXY`, `NO_PROXY`…),
    /// read the same way: a notify they would send through a proxy stays on reqwest.
    proxies: Matcher,
}

impl Notifier {
    /// Trusts the system's roots and `extra_ca` (PEM) when given, as reqwest's clients do.
    pub(super) fn new(timeout: Duration, extra_ca: Option<&Path>) -> Result<Notifier, String> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let connector = Connector {
            tcp,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls_config(extra_ca)?)),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Notifier {
            client,
            timeout,
            proxies: Matcher::from_system(),
        })
    }

    /// The address a notify to `url` is sent to by this client, or `None` when it
    /// must go through reqwest: not `http`/`https`, credentials or a fragment in the
    /// URL (reqwest turns the first into a header and drops the second), or a proxy.
    pub(super) fn direct(&self, url: &url::Url) -> Option<http::Uri> {
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
            || url.fragment().is_some()
        {
            return None;
        }
        let uri = http::Uri::try_from(url.as_str()).ok()?;
        self.proxies.intercept(&uri).is_none().then_some(uri)
    }

    /// POSTs `body` (JSON) to `uri`: the answer's status and its body as text (up to
    /// [`http_client::MOTION_ANSWER`] bytes; what could not be read is said in the
    /// text, as reqwest's path does), or why no answer came (never with the URL).
    pub(super) async fn post_json(
        &self,
        uri: http::Uri,
        body: Vec<u8>,
    ) -> Result<(u16, String), String> {
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, http_client::USER_AGENT)
            .header(http::header::ACCEPT, "*/*")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request failed: {e}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(describe)?;
            let status = response.status().as_u16();
            let max = http_client::MOTION_ANSWER;
            let text = match Limited::new(response.into_body(), max).collect().await {
                Ok(body) => http_client::lossy_text(body.to_bytes().into()),
                Err(e) if e.is::<LengthLimitError>() => {
                    format!("({})", http_client::over_bound(max))
                }
                Err(e) => {
                    let mut text = "(bad response body".to_owned();
                    http_client::push_causes(&mut text, Some(&*e));
                    text.push(')');
                    text
                }
            };
            Ok((status, text))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {:?}", self.timeout)))
    }
}

/// The error and its causes on one line, like [`http_client::describe`] (hyper's
/// errors carry no URL).
fn describe(error: hyper_util::client::legacy::Error) -> String {
    let kind = if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    http_client::push_causes(&mut text, Some(&error));
    text
}

/// The roots reqwest's clients trust: the system's, plus `extra_ca` (PEM) when given.
fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = match extra_ca {
        Some(file) => rustls_pki_types::CertificateDer::pem_file_iter(file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
        None => Vec::new(),
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| format!("the system's certificate roots: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// TCP from hyper-util's connector, then TLS for `https`.
#[derive(Clone)]
struct Connector {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = (uri.scheme() == Some(&http::uri::Scheme::HTTPS)).then(|| self.tls.clone());
        // An IPv6 address comes bracketed in a URI, bare in a server name.
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let connecting = self.tcp.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?;
            let Some(tls) = tls else {
                return Ok(Stream::Plain(tcp));
            };
            let name = rustls_pki_types::ServerName::try_from(host)?;
            let stream = tls.connect(name, tcp.into_inner()).await?;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A connection to Motion, plain or TLS.
enum Stream {
    Plain(TokioIo<tokio::net::TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(tcp) => tcp.connected(),
            Stream::Tls(tls) => tls.inner().get_ref().0.connected(),
        }
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::motion::SimMotion;

    const BODY: &[u8] = br#"{"from":"1","mapKey":"facebook","body":"hi"}"#;

    /// Motion behind `https` with a certificate of a private CA: trusted through
    /// `ca_file`, refused without it (the system's roots do not know that CA), and
    /// nothing reaches Motion then.
    #[tokio::test]
    async fn notifies_over_tls_trusting_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let certs = crate::sim::tls::generate(dir.path()).unwrap();
        let acceptor = crate::sim::tls::acceptor(&certs).unwrap();
        let motion = SimMotion::start_tls("key", acceptor).await.unwrap();
        let url = url::Url::parse(&motion.receive_url(1)).unwrap();
        assert_eq!(url.scheme(), "https");

        let trusting = Notifier::new(Duration::from_secs(5), Some(&certs.ca_path)).unwrap();
        let uri = trusting
            .direct(&url)
            .expect("an https Receive URL is sent directly");
        let (status, _) = trusting
            .post_json(uri.clone(), BODY.to_vec())
            .await
            .unwrap();
        assert_eq!(status, 200);
        // The pooled connection is used again.
        let (status, _) = trusting
            .post_json(uri.clone(), BODY.to_vec())
            .await
            .unwrap();
        assert_eq!(status, 200);
        let notifies = motion.notifies();
        assert_eq!(notifies.len(), 2);
        assert_eq!(notifies[0].notify.body, "hi");

        let untrusting = Notifier::new(Duration::from_secs(5), None).unwrap();
        let error = untrusting.post_json(uri, BODY.to_vec()).await.unwrap_err();
        assert!(
            error.starts_with("could not connect") && error.contains("certificate"),
            "{error}"
        );
        assert_eq!(motion.notifies().len(), 2);
    }

    /// A Motion that accepts the connection and never answers: the notify gives up at
    /// the timeout with a line that says so.
    #[tokio::test]
    async fn a_silent_motion_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            // Held open, never answered, until the test ends.
            std::future::pending::<()>().await;
            drop(stream);
        });
        let notifier = Notifier::new(Duration::from_millis(300), None).unwrap();
        let uri: http::Uri = format!("http://{at}/api/openchannel/accounts/1/notify")
            .parse()
            .unwrap();
        let error = notifier.post_json(uri, BODY.to_vec()).await.unwrap_err();
        assert_eq!(error, "timed out after 300ms");
        held.abort();
    }

    /// What only reqwest does stays on reqwest: a proxy from the environment (unless
    /// `NO_PROXY` names the host), credentials in the URL, a fragment, another scheme.
    #[test]
    fn what_only_reqwest_does_stays_on_reqwest() {
        let mut notifier = Notifier::new(Duration::from_secs(5), None).unwrap();
        notifier.proxies = Matcher::builder()
            .http("http://proxy.example:3128")
            .no("motion.lan")
            .build();
        let direct = |u: &str| notifier.direct(&url::Url::parse(u).unwrap());
        assert!(direct("http://motion.example/api/openchannel/accounts/1/notify").is_none());
        assert!(direct("http://motion.lan/api/openchannel/accounts/1/notify").is_some());
        assert!(direct("https://user:pw@motion.example/n").is_none());
        assert!(direct("https://motion.example/n#part").is_none());
        assert!(direct("ftp://motion.example/n").is_none());
        // The query (a token) is kept as it is.
        assert_eq!(
            direct("https://motion.example/api/openchannel/accounts/7/notify?token=a%20b")
                .unwrap()
                .to_string(),
            "https://motion.example/api/openchannel/accounts/7/notify?token=a%20b"
        );
    }
}
