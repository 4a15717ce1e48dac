//! The hosts customers' files may be downloaded from (`facebook.media_hosts`): a domain
//! and its subdomains (`https` only), or an address written out. Below Facebook's world:
//! the config checks its list with it. The download itself, with its resolver that
//! refuses private addresses, is `facebook::media`'s.

use std::net::{IpAddr, SocketAddr};

use url::{Host, Url};

/// Facebook's and Instagram's CDNs, where webhook attachment URLs point
/// (`scontent.xx.fbcdn.net`, `cdn.fbsbx.com`, `lookaside.fbsbx.com`,
/// `scontent.cdninstagram.com`, …).
pub const DEFAULT_MEDIA_HOSTS: &[&str] = &["fbcdn.net", "fbsbx.com", "cdninstagram.com"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// This domain and every name under it (https only).
    Domain(String),
    /// Exactly this address (and port, if given): written out by the operator.
    Addr { ip: IpAddr, port: Option<u16> },
}

/// The hosts downloads may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaHosts {
    rules: Vec<Rule>,
}

impl Default for MediaHosts {
    fn default() -> Self {
        MediaHosts::parse(DEFAULT_MEDIA_HOSTS.iter().copied()).expect("the default hosts parse")
    }
}

impl MediaHosts {
    /// From config entries: `fbcdn.net`, `127.0.0.1:8080`, `[::1]:8080`, `10.0.0.5`.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<MediaHosts, String> {
        let mut rules = Vec::new();
        for entry in entries {
            let entry = entry.trim().trim_end_matches('.').to_ascii_lowercase();
            let rule = if let Ok(addr) = entry.parse::<SocketAddr>() {
                Rule::Addr {
                    ip: addr.ip(),
                    port: Some(addr.port()),
                }
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                Rule::Addr { ip, port: None }
            } else if !entry.is_empty()
                && entry.len() <= 253
                && entry.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
            {
                Rule::Domain(entry)
            } else {
                return Err(format!(
                    "entry {} is neither a domain name (e.g. \"fbcdn.net\") nor an address (e.g. \"127.0.0.1:8080\")",
                    rules.len() + 1
                ));
            };
            rules.push(rule);
        }
        Ok(MediaHosts { rules })
    }

    /// Whether the daemon may fetch `url`; if not, why (without the URL: it may carry a
    /// signature).
    pub fn check(&self, url: &Url) -> Result<(), String> {
        let scheme = url.scheme();
        if !matches!(scheme, "http" | "https") {
            return Err("not an http(s) URL".into());
        }
        let allowed = match url.host() {
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.');
                scheme == "https"
                    && self.rules.iter().any(|r| match r {
                        Rule::Domain(d) => {
                            name == d
                                || name
                                    .strip_suffix(d.as_str())
                                    .is_some_and(|head| head.ends_with('.'))
                        }
                        Rule::Addr { .. } => false,
                    })
            }
            Some(Host::Ipv4(ip)) => self.address_listed(IpAddr::V4(ip), url),
            Some(Host::Ipv6(ip)) => self.address_listed(IpAddr::V6(ip), url),
            None => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "its host ({}) is not one of Facebook's media hosts (facebook.media_hosts)",
                url.host_str().unwrap_or("none")
            ))
        }
    }

    fn address_listed(&self, ip: IpAddr, url: &Url) -> bool {
        let port = url.port_or_known_default();
        self.rules.iter().any(|r| match r {
            Rule::Addr {
                ip: listed,
                port: p,
            } => *listed == ip && (p.is_none() || *p == port),
            Rule::Domain(_) => false,
        })
    }
}
