//! Where the daemon may download customers' files from: Facebook's media hosts only
//! (DESIGN §4 rule 10).
//!
//! A webhook names the files a customer sent by URL. The daemon fetches them to hand
//! them to Motion, so a URL must never make it fetch something else: an address on the
//! Motion host's own network, `localhost`, a cloud metadata service. Three checks:
//! - the URL's host must be one of `facebook.media_hosts` (a domain and its
//!   subdomains, `https` only; or an address written out, for a test or a proxy);
//! - a name must resolve to public addresses only: loopback, private, link-local and
//!   other special addresses are refused by the resolver, so a name that points
//!   somewhere private — or starts to (DNS rebinding) — is not fetched;
//! - a redirect is followed only to a URL that passes the same checks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use crate::hosts::{DEFAULT_MEDIA_HOSTS, MediaHosts};

/// An address on the public internet: not loopback, private, link-local, shared (CGNAT),
/// multicast, documentation, benchmarking or otherwise special.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // 100.64/10, shared
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || (first == 0x0064 && v6.segments()[1] == 0xff9b)) // NAT64
        }
    }
}

/// A name resolved to no public address: never connected to.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} resolves to no public address (loopback, private and link-local addresses are never fetched)"
)]
pub struct PrivateAddress(String);

/// The resolver of the download client: the system's (on a blocking thread, never the
/// runtime's), keeping public addresses only.
#[derive(Debug, Default)]
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(
                    Box::new(PrivateAddress(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether an error of the download client is one of these refusals (not worth a retry).
pub fn is_refusal(error: &reqwest::Error) -> bool {
    if error.is_redirect() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<PrivateAddress>() || e.is::<OffHostRedirect>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[derive(Debug, thiserror::Error)]
#[error("redirected to a URL that is not on Facebook's media hosts: {0}")]
struct OffHostRedirect(String);

/// The download client: public addresses of the allowed hosts only, following at most
/// five redirects and only to allowed hosts.
pub fn client(
    hosts: Arc<MediaHosts>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, String> {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error(OffHostRedirect("more than 5 redirects".into()));
        }
        match hosts.check(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(OffHostRedirect(why)),
        }
    });
    crate::http_client::builder(timeout, None)?
        .redirect(policy)
        .dns_resolver(Arc::new(PublicOnly))
        .build()
        .map_err(crate::http_client::describe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn hosts(entries: &[&str]) -> MediaHosts {
        MediaHosts::parse(entries.iter().copied()).unwrap()
    }

    fn check(h: &MediaHosts, url: &str) -> bool {
        h.check(&Url::parse(url).unwrap()).is_ok()
    }

    #[test]
    fn only_facebooks_cdns_by_default() {
        let h = MediaHosts::default();
        for ok in [
            "https://scontent-fra3-1.xx.fbcdn.net/v/t31.0-8/1_o.jpg?oh=7e&oe=59",
            "https://scontent.xx.fbcdn.net/sticker.png",
            "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1&signature=Ab",
            "https://cdn.fbsbx.com/v/t59/file.pdf",
            "https://scontent.cdninstagram.com/v/x.jpg",
            "https://FBCDN.net./x",
        ] {
            assert!(check(&h, ok), "{ok}");
        }
        for bad in [
            "http://scontent.xx.fbcdn.net/x.jpg",
            "https://evilfbcdn.net/x.jpg",
            "https://fbcdn.net.evil.com/x.jpg",
            "https://127.0.0.1/x.jpg",
            "https://localhost/x.jpg",
            "https://169.254.169.254/latest/meta-data/",
            "https://[::1]/x",
            "ftp://cdn.fbsbx.com/x",
            "file:///etc/passwd",
            "https://www.example.org/test.jpg",
        ] {
            assert!(!check(&h, bad), "{bad}");
        }
    }

    #[test]
    fn an_address_written_out_is_allowed_exactly() {
        let h = hosts(&["127.0.0.1:8080", "[::1]:9000", "10.1.2.3"]);
        assert!(check(&h, "http://127.0.0.1:8080/cdn/x.jpg"));
        assert!(!check(&h, "http://127.0.0.1:8081/cdn/x.jpg"));
        assert!(!check(&h, "http://127.0.0.2:8080/cdn/x.jpg"));
        assert!(check(&h, "http://[::1]:9000/x"));
        assert!(check(&h, "https://10.1.2.3/x"));
        assert!(check(&h, "http://10.1.2.3:80/x"));
        assert!(MediaHosts::parse(["not a host"]).is_err());
        // A name may be listed; it still never reaches a private address (resolver).
        assert!(check(&hosts(&["localhost"]), "https://localhost:8443/x"));
        assert!(MediaHosts::parse(["*.fbcdn.net"]).is_err());
    }

    #[test]
    fn special_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["157.240.1.1", "31.13.64.1", "2a03:2880:f10c::1", "8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
