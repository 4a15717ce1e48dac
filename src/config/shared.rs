//! Types the other layers read from the config, defined here so that the config
//! imports none of them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StorageConfig;

/// A name the certificate covers: a DNS host name, lowercase. No wildcard (TLS-ALPN-01
/// cannot prove one) and no IP address (Meta calls a host name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain(String);

impl Domain {
    pub fn parse(raw: &str) -> Result<Domain, String> {
        let name = raw.trim_end_matches('.').to_ascii_lowercase();
        if name.starts_with("*.") {
            return Err(format!(
                "{raw:?} is a wildcard: the TLS-ALPN-01 check cannot prove one; name each host"
            ));
        }
        if name.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!(
                "{raw:?} is an IP address: Meta calls a host name, name that"
            ));
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.len() > 253 || !name.contains('.') || !name.split('.').all(label_ok) {
            return Err(format!(
                "{raw:?} is not a DNS host name (letters, digits, hyphens and dots; punycode for other scripts)"
            ));
        }
        Ok(Domain(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who may deliver webhooks: anyone (the default: the webhook signature is the check),
/// or a client presenting a certificate from `ca` named `name` — Meta's webhook client
/// certificate ("mTLS for webhooks") — required, or only recorded (`report`).
#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub ca: PathBuf,
    pub name: String,
    pub mode: ClientCertMode,
}

/// What `/webhook` does with the client certificate (`public.client_cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// A webhook without Meta's certificate is refused (403).
    #[default]
    Require,
    /// Every webhook is taken; whether Meta's certificate came is counted and shown
    /// (`doctor`, `/metrics`, `capture --check`): the way to learn whether Meta sends one
    /// for Page and Instagram webhooks before requiring it.
    Report,
}

impl ClientCertMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertMode::Require => "require",
            ClientCertMode::Report => "report",
        }
    }
}

impl StorageConfig {
    /// The PostgreSQL server's connection settings: `storage.url`, with the password from
    /// `storage.password_file` when there is one, a connect timeout and keepalives.
    pub fn postgres(&self) -> Result<postgres::Config, String> {
        self.postgres_async().map(postgres::Config::from)
    }

    /// The same settings for the asynchronous client (the wake-ups between nodes).
    pub fn postgres_async(&self) -> Result<tokio_postgres::Config, String> {
        let Some(url) = &self.url else {
            return Err("storage.backend = \"postgres\" needs storage.url".into());
        };
        let mut config: tokio_postgres::Config = url
            .expose()
            .parse()
            .map_err(|e| format!("storage.url is not a PostgreSQL URL: {e}"))?;
        if let Some(file) = &self.password_file {
            let password = std::fs::read_to_string(file).map_err(|e| {
                format!("cannot read storage.password_file {}: {e}", file.display())
            })?;
            config.password(password.trim_end_matches(['\n', '\r']));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A server that stops answering (SIGSTOP, a partition that drops packets) must not
        // hold a worker for minutes: unacknowledged data or silent keepalives end the
        // connection within seconds, and the worker connects again.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(2);
        config.tcp_user_timeout(Duration::from_secs(15));
        if config.get_application_name().is_none() {
            config.application_name("fb-openchannel");
        }
        Ok(config)
    }
}
