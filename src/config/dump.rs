//! The config printed for people (`check-config`) and the values no output may show.

use serde::Serializer;
use toml::Spanned;

use super::Config;

impl Config {
    /// Every secret value of the config (tokens, keys, and the query values of Receive
    /// URLs, which may carry one), longest first so that masking one that contains
    /// another hides it whole; values under 4 characters are left (they would mask
    /// ordinary text).
    pub fn secret_values(&self) -> Vec<String> {
        let mut secrets: Vec<String> = vec![
            self.facebook.app_secret.get_ref().expose().to_owned(),
            self.facebook.verify_token.get_ref().expose().to_owned(),
            self.motion.api_key.get_ref().expose().to_owned(),
        ];
        if let Some(secret) = &self.facebook.instagram_app_secret {
            secrets.push(secret.get_ref().expose().to_owned());
        }
        if let Some(url) = &self.storage.url {
            secrets.push(url.expose().to_owned());
            if let Ok(url) = url::Url::parse(url.expose())
                && let Some(password) = url.password()
            {
                secrets.push(password.to_owned());
            }
        }
        for page in &self.pages {
            secrets.push(page.access_token.get_ref().expose().to_owned());
            secrets.push(page.reply_token.get_ref().expose().to_owned());
            if let Ok(url) = url::Url::parse(page.receive_url.get_ref()) {
                secrets.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
            }
        }
        for account in &self.instagram {
            secrets.push(account.reply_token.get_ref().expose().to_owned());
            if let Some(token) = &account.access_token {
                secrets.push(token.get_ref().expose().to_owned());
            }
            if let Ok(url) = url::Url::parse(account.receive_url.get_ref()) {
                secrets.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
            }
        }
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
    }

    /// The effective config as TOML, secrets masked (for `check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

pub(super) fn serialize_url_redacted<S: Serializer>(
    url: &Spanned<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url.get_ref()))
}

/// `url` with every query value replaced by a mask: Receive URLs carry `?token=…` or
/// `?apikey=…`, and such a URL must be printable in logs and config dumps.
pub fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        None => url.to_owned(),
        Some((base, query)) => {
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) => format!("{k}=********"),
                    None => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", masked.join("&"))
        }
    }
}
