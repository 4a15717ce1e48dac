//! The one configuration file (`/etc/fb-openchannel/config.toml`).
//!
//! Loading is two steps: serde parses the TOML into plain structs (`file.rs`: unknown
//! keys are errors, defaults are named functions), then validation (`validate.rs`) checks
//! what serde cannot (URLs, readable files, duplicate pages, placeholder secrets). Every
//! error names the file, the line and the key (`errors.rs`), and all of them are reported
//! at once so a sysadmin fixes the file in one pass. Secrets are [`Secret`]s: their
//! `Debug`, `Display` and `Serialize` print a mask, so `check-config` and logs can never
//! leak them (`dump.rs`: the redacted dump and the values a capture masks). `reload.rs`
//! says what a reload changes; `shared.rs` holds the types other layers read from the
//! config (`Domain`, `ClientAuth`, the PostgreSQL target).

mod digest;
mod dump;
mod errors;
mod file;
mod reload;
mod shared;
#[cfg(test)]
mod tests;
mod validate;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize, Serializer};

pub use digest::{Digest, differences, digest, is_account};
pub use dump::redact_url;
pub use errors::{ConfigError, ConfigErrors};
pub use file::*;
pub use reload::ConfigDiff;
pub use shared::{ClientAuth, ClientCertMode, Domain};
pub use validate::{MAX_KEEP, MIN_REPLY_TOKEN_CHARS};

use errors::{key_at, key_in_message, line_of, without_values};

/// Default location of the config file; `$FB_OPENCHANNEL_CONFIG` or `--config` override it.
pub const DEFAULT_PATH: &str = "/etc/fb-openchannel/config.toml";

/// The name on Meta's webhook client certificate (Graph API → Webhooks → Getting
/// started → "mTLS for webhooks").
pub const META_CLIENT_NAME: &str = "client.webhooks.fbclientcerts.com";

/// Values in the shipped example config that must be replaced before the daemon starts.
const PLACEHOLDER_PREFIX: &str = "CHANGE-ME";

/// A secret string (token, app secret, API key). Printing it in any way shows a mask.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the few places that must send it (HTTP headers, HMAC keys).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn is_placeholder(&self) -> bool {
        self.0.starts_with(PLACEHOLDER_PREFIX)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line: 0,
                key: "(file)".into(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Self::from_toml(path, &text)
    }

    /// Parses and validates `text`, naming `path` in errors.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line,
                key: key_in_message(e.message())
                    .or_else(|| e.span().and_then(|span| key_at(text, span.start)))
                    .unwrap_or_else(|| "(syntax)".into()),
                message: without_values(e.message()),
            }])
        })?;
        let errors = config.validate(path, text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The hosts customers' files may be downloaded from (validated at load).
    pub fn media_hosts(&self) -> crate::hosts::MediaHosts {
        crate::hosts::MediaHosts::parse(
            self.facebook
                .media_hosts
                .get_ref()
                .iter()
                .map(String::as_str),
        )
        .unwrap_or_default()
    }

    pub fn page(&self, id: &str) -> Option<&PageConfig> {
        self.pages.iter().find(|p| p.id.get_ref() == id)
    }

    /// Whether `id` is a configured account: a page or an Instagram account.
    pub fn knows_account(&self, id: &str) -> bool {
        self.page(id).is_some() || self.instagram(id).is_some()
    }

    /// The Instagram account with this id, if configured.
    pub fn instagram(&self, id: &str) -> Option<&InstagramConfig> {
        self.instagram.iter().find(|a| a.id.get_ref() == id)
    }

    /// Where the Instagram account's token comes from (checked when the config was
    /// loaded: exactly one of `page` and `access_token`, and the page is configured).
    pub fn instagram_login<'a>(&'a self, account: &'a InstagramConfig) -> InstagramLogin<'a> {
        match (&account.page, &account.access_token) {
            (_, Some(token)) => InstagramLogin::Instagram {
                token: token.get_ref(),
            },
            (Some(page), None) => InstagramLogin::Facebook {
                page: self
                    .page(page.get_ref())
                    .expect("an Instagram account's page is checked when the config is loaded"),
            },
            (None, None) => unreachable!("checked when the config is loaded"),
        }
    }

    /// Who may connect to the public listener (`public.client_ca` / `client_name`).
    pub fn client_auth(&self) -> Option<ClientAuth> {
        let ca = self.public.client_ca.as_ref()?;
        Some(ClientAuth {
            ca: ca.get_ref().clone(),
            name: self
                .public
                .client_name
                .as_ref()
                .map_or(META_CLIENT_NAME, |n| n.get_ref().as_str())
                .to_owned(),
            mode: self
                .public
                .client_cert
                .as_ref()
                .map(|m| *m.get_ref())
                .unwrap_or_default(),
        })
    }

    /// Where Meta reaches the public listener: `public.url`, else `https://{public.name}`.
    pub fn public_base(&self) -> Option<url::Url> {
        match (&self.public.url, &self.public.name) {
            (Some(url), _) => url::Url::parse(url.get_ref()).ok(),
            (None, Some(name)) => {
                let mut url = url::Url::parse("https://localhost/").ok()?;
                url.set_host(Some(name)).ok()?;
                Some(url)
            }
            (None, None) => None,
        }
    }
}
