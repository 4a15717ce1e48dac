//! What serde cannot check: URLs, readable files, duplicate accounts, placeholder
//! secrets, durations in range. Every problem is found, not only the first.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::errors::{ConfigError, key_span, line_of};
use super::*;

impl Config {
    /// What serde cannot check. Returns every problem found.
    pub(super) fn validate(&self, path: &Path, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, key: &str, message: String| {
            let line = if span == (0..0) {
                0
            } else {
                line_of(text, span.start)
            };
            errors.push(ConfigError {
                file: path.to_owned(),
                line,
                key: key.to_owned(),
                message,
            });
        };

        if let Some(acme) = &self.public.acme {
            for m in acme_problems(&self.public, acme.get_ref()) {
                err(acme.span(), "public.acme", m);
            }
        } else if self.public.tls {
            for (key, file) in [
                ("public.tls_cert", &self.public.tls_cert),
                ("public.tls_key", &self.public.tls_key),
            ] {
                if let Err(e) = std::fs::File::open(file.get_ref()) {
                    err(
                        file.span(),
                        key,
                        format!(
                            "cannot read {}: {e} (put the PEM file there, or set `tls = false` behind a TLS proxy)",
                            file.get_ref().display()
                        ),
                    );
                }
            }
        }
        if self.public.max_body_bytes == 0 {
            err(
                key_span(text, "public.max_body_bytes"),
                "public.max_body_bytes",
                "must be greater than 0".into(),
            );
        }
        if self.public.body_memory < 1024 * 1024 {
            err(
                key_span(text, "public.body_memory"),
                "public.body_memory",
                "must be at least 1048576 (1 MiB): webhooks are read in this memory while their signature is checked".into(),
            );
        }
        if self.public.max_active_connections == 0 {
            err(
                key_span(text, "public.max_active_connections"),
                "public.max_active_connections",
                "must be greater than 0".into(),
            );
        }
        if self.public.max_connections == 0 {
            err(
                0..0,
                "public.max_connections",
                "must be greater than 0".into(),
            );
        }
        for (key, value, range) in self.durations() {
            if let Err(m) = range.check(value) {
                err(key_span(text, key), key, m);
            }
        }
        match (self.storage.backend, &self.storage.url) {
            (Backend::Postgres, None) => err(
                key_span(text, "storage.backend"),
                "storage.backend",
                "\"postgres\" needs storage.url = \"postgres://user@host/database\"".into(),
            ),
            (Backend::Postgres, Some(_)) => {
                let checked = self.storage.postgres().and_then(|c| {
                    // With sslmode=require the server is checked against storage.ca_file:
                    // it must be there to be read.
                    match (&c.get_ssl_mode(), &self.storage.ca_file) {
                        (postgres::config::SslMode::Require, Some(file)) => {
                            std::fs::read(file).map(drop).map_err(|e| {
                                format!("cannot read storage.ca_file {}: {e}", file.display())
                            })
                        }
                        _ => Ok(()),
                    }
                });
                if let Err(m) = checked {
                    err(key_span(text, "storage.url"), "storage.url", m);
                }
            }
            (Backend::Sqlite, Some(_)) => err(
                key_span(text, "storage.url"),
                "storage.url",
                "is for backend = \"postgres\"; the queue is the SQLite file at storage.path"
                    .into(),
            ),
            (Backend::Sqlite, None) => {}
        }
        if self.delivery.concurrency == 0 {
            err(
                0..0,
                "delivery.concurrency",
                "must be greater than 0".into(),
            );
        }
        if self.delivery.retry_max < self.delivery.retry_initial {
            err(
                key_span(text, "delivery.retry_max"),
                "delivery.retry_max",
                format!(
                    "must be at least delivery.retry_initial ({})",
                    humantime::format_duration(self.delivery.retry_initial)
                ),
            );
        }

        for (key, secret) in [
            ("facebook.app_secret", &self.facebook.app_secret),
            ("facebook.verify_token", &self.facebook.verify_token),
            ("motion.api_key", &self.motion.api_key),
        ] {
            check_secret(&mut err, key, secret);
        }
        if let Some(secret) = &self.facebook.instagram_app_secret {
            check_secret(&mut err, "facebook.instagram_app_secret", secret);
        }
        if let Some(id) = &self.facebook.login_config_id
            && (id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()))
        {
            err(
                key_span(text, "facebook.login_config_id"),
                "facebook.login_config_id",
                "must be the configuration's id: digits (App Dashboard → Facebook Login for Business → Configurations)".into(),
            );
        }
        if let Some(url) = &self.public.url
            && let Err(m) = check_http_url(url.get_ref())
        {
            err(url.span(), "public.url", m);
        }
        if let (None, Some(mode)) = (&self.public.client_ca, &self.public.client_cert) {
            err(
                mode.span(),
                "public.client_cert",
                "is set without public.client_ca: name the CA of Meta's webhook client certificate first".into(),
            );
        }
        match (&self.public.client_ca, &self.public.client_name) {
            (None, Some(name)) => err(
                name.span(),
                "public.client_name",
                "is set without public.client_ca: name the CA whose certificates may connect (Meta's, for Meta's webhook client certificate)".into(),
            ),
            (Some(ca), _) if !self.public.tls => err(
                ca.span(),
                "public.client_ca",
                "needs public.tls = true: behind a TLS proxy (nginx), check the client certificate there (ssl_verify_client)".into(),
            ),
            (Some(_), Some(name)) if name.get_ref().trim().is_empty() => {
                err(name.span(), "public.client_name", "must not be empty".into())
            }
            _ => {}
        }
        for (key, url) in [
            ("facebook.graph_url", &self.facebook.graph_url),
            ("facebook.dialog_url", &self.facebook.dialog_url),
            (
                "facebook.instagram_graph_url",
                &self.facebook.instagram_graph_url,
            ),
        ] {
            if let Err(m) = check_http_url(url.get_ref()) {
                err(url.span(), key, m);
            }
        }
        if let Some(app) = &self.facebook.app_id
            && crate::ids::PageId::parse(app.get_ref()).is_err()
        {
            err(
                app.span(),
                "facebook.app_id",
                "is not an app id: digits only (App Dashboard → App ID)".into(),
            );
        }
        if let Err(m) = crate::hosts::MediaHosts::parse(
            self.facebook
                .media_hosts
                .get_ref()
                .iter()
                .map(String::as_str),
        ) {
            err(self.facebook.media_hosts.span(), "facebook.media_hosts", m);
        }
        if let Some(ca) = &self.motion.ca_file
            && let Err(e) = std::fs::read(ca.get_ref())
        {
            err(
                ca.span(),
                "motion.ca_file",
                format!("cannot read {}: {e}", ca.get_ref().display()),
            );
        }

        check_map_key(&mut err, "motion.map_key", &self.motion.map_key);
        if self.pages.is_empty() {
            err(
                0..0,
                "page",
                "no [[page]] table: add one per Facebook Page (id, access_token, receive_url, reply_token)"
                    .into(),
            );
        }
        let mut seen: Vec<&str> = Vec::new();
        for page in &self.pages {
            check_account(
                &mut err,
                &mut seen,
                Account {
                    table: "page",
                    id: &page.id,
                    id_help: "is not a Facebook Page id: digits only, e.g. \"1234567890\" (Page → About → Page transparency)",
                    receive_url: &page.receive_url,
                    reply_token: &page.reply_token,
                    map_key: page.map_key.as_deref(),
                },
            );
            check_secret(&mut err, "page.access_token", &page.access_token);
        }
        for account in &self.instagram {
            check_account(
                &mut err,
                &mut seen,
                Account {
                    table: "instagram",
                    id: &account.id,
                    id_help: "is not an Instagram professional account id: digits only, e.g. \"17841400000000000\" (Graph API: GET /{page-id}?fields=instagram_business_account)",
                    receive_url: &account.receive_url,
                    reply_token: &account.reply_token,
                    map_key: account.map_key.as_deref(),
                },
            );
            match (&account.page, &account.access_token) {
                (Some(page), None) if self.page(page.get_ref()).is_none() => err(
                    page.span(),
                    "instagram.page",
                    format!(
                        "names page {}, which has no [[page]] table here: the linked Page's token is the one used (Instagram API with Facebook Login)",
                        if is_graph_id(page.get_ref()) { page.get_ref().as_str() } else { "(not an id)" }
                    ),
                ),
                (Some(_), None) => {}
                (None, Some(token)) => check_secret(&mut err, "instagram.access_token", token),
                (Some(page), Some(_)) => err(
                    page.span(),
                    "instagram",
                    "has both `page` and `access_token`: keep `page` for Instagram API with Facebook Login, or `access_token` for Instagram Login".into(),
                ),
                (None, None) => err(
                    account.id.span(),
                    "instagram",
                    "needs `page` (the linked Facebook Page, Instagram API with Facebook Login) or `access_token` (Instagram Login)".into(),
                ),
            }
        }
        errors
    }

    /// Every duration in the config, with the range it must be in.
    fn durations(&self) -> Vec<(&'static str, Duration, Range)> {
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(86_400);
        let ms = Duration::from_millis;
        let mut all = vec![
            (
                "public.request_timeout",
                self.public.request_timeout,
                Range::new(ms(100), HOUR),
            ),
            (
                "public.tls_watch_interval",
                self.public.tls_watch_interval,
                Range::new(ms(10), DAY),
            ),
            (
                "local.reply_wait",
                self.local.reply_wait,
                Range::new(Duration::ZERO, 10 * MINUTE),
            ),
            (
                "local.ready_max_pending_age",
                self.local.ready_max_pending_age,
                Range::new(ms(100), 365 * DAY),
            ),
            (
                "storage.lease",
                self.storage.lease,
                Range::new(Duration::from_secs(3), 10 * MINUTE).why_min(
                    "a node renews its holds every third of this; shorter, a slow database would make two nodes send one message",
                ),
            ),
            (
                "storage.keep",
                self.storage.keep,
                Range::new(MIN_KEEP, MAX_KEEP).why_min(
                    "Facebook redelivers webhooks for up to 36 hours and agents may answer for 7 days; delivered items are how the daemon recognises both",
                ),
            ),
            (
                "facebook.subscription_check",
                self.facebook.subscription_check,
                Range::new(Duration::ZERO, 30 * DAY).or_zero("\"0s\" turns the check off"),
            ),
            (
                "reconcile.every",
                self.reconcile.every,
                Range::new(MINUTE, DAY).or_zero("\"0s\" turns reconciliation off"),
            ),
            (
                "reconcile.lookback",
                self.reconcile.lookback,
                Range::new(MINUTE, 7 * DAY),
            ),
            (
                "reconcile.pace",
                self.reconcile.pace,
                Range::new(Duration::ZERO, MINUTE),
            ),
            (
                "reconcile.pause",
                self.reconcile.pause,
                Range::new(ms(10), HOUR),
            ),
            (
                "motion.timeout",
                self.motion.timeout,
                Range::new(ms(100), HOUR),
            ),
            (
                "delivery.retry_initial",
                self.delivery.retry_initial,
                Range::new(ms(1), HOUR),
            ),
            (
                "delivery.retry_max",
                self.delivery.retry_max,
                Range::new(ms(1), 7 * DAY),
            ),
            (
                "delivery.give_up_after",
                self.delivery.give_up_after,
                Range::new(ms(1), 365 * DAY),
            ),
            (
                "facebook.unknown_error_retry",
                self.facebook.unknown_error_retry,
                Range::new(ms(1), DAY),
            ),
            (
                "facebook.block_pause",
                self.facebook.block_pause,
                Range::new(ms(1), DAY),
            ),
        ];
        for page in &self.pages {
            all.push((
                "page.comment_interval",
                page.comment_interval,
                Range::new(Duration::ZERO, MINUTE),
            ));
        }
        all
    }
}

/// The keys every Openchannel account has, a page's or an Instagram account's.
pub(super) struct Account<'a> {
    table: &'static str,
    id: &'a Spanned<String>,
    /// What to say of an id that is not one.
    id_help: &'static str,
    receive_url: &'a Spanned<String>,
    reply_token: &'a Spanned<Secret>,
    map_key: Option<&'a str>,
}

/// Checks an account's keys; `seen` holds the ids of the accounts before it (an id is
/// one account: a page and an Instagram account never share one).
pub(super) fn check_account<'a>(
    err: &mut impl FnMut(std::ops::Range<usize>, &str, String),
    seen: &mut Vec<&'a str>,
    account: Account<'a>,
) {
    let key = |name: &str| format!("{}.{name}", account.table);
    let id = account.id.get_ref().as_str();
    if !is_graph_id(id) {
        err(account.id.span(), &key("id"), account.id_help.into());
    } else if seen.contains(&id) {
        err(
            account.id.span(),
            &key("id"),
            format!(
                "{} {id} is configured twice (an id is one [[page]] or one [[instagram]])",
                account.table
            ),
        );
    }
    seen.push(id);
    check_secret(err, &key("reply_token"), account.reply_token);
    check_reply_token(err, &key("reply_token"), account.reply_token);
    if let Some(map_key) = account.map_key {
        check_map_key(err, &key("map_key"), map_key);
    }
    if let Err(m) = check_http_url(account.receive_url.get_ref()) {
        err(account.receive_url.span(), &key("receive_url"), m);
    }
}

/// Whether `id` has the shape of a Graph object id (digits). The value is never
/// repeated in a message: a token pasted into the wrong key must not end up in a log.
pub(super) fn is_graph_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn check_secret(
    err: &mut impl FnMut(std::ops::Range<usize>, &str, String),
    key: &str,
    secret: &Spanned<Secret>,
) {
    if secret.get_ref().expose().is_empty() {
        err(secret.span(), key, "must not be empty".into());
    } else if secret.get_ref().is_placeholder() {
        err(
            secret.span(),
            key,
            "still the placeholder from the example config: put the real value here".into(),
        );
    }
}

/// A Contact field name, as Motion names them (`facebook`, `cf_7`, `email`…).
pub(super) fn check_map_key(
    err: &mut impl FnMut(std::ops::Range<usize>, &str, String),
    key: &str,
    value: &str,
) {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        err(
            0..0,
            key,
            "must be the name of a Motion Contact field: letters, digits, '_' or '-' (e.g. \"facebook\", \"cf_7\")".into(),
        );
    }
}

/// Shortest length of a `reply_token`: it is all that stands between the local
/// listener and sending messages as the Page.
pub const MIN_REPLY_TOKEN_CHARS: usize = 16;

pub(super) fn check_reply_token(
    err: &mut impl FnMut(std::ops::Range<usize>, &str, String),
    key: &str,
    secret: &Spanned<Secret>,
) {
    let token = secret.get_ref().expose();
    if token.is_empty() || secret.get_ref().is_placeholder() {
        return; // already reported by check_secret
    }
    let how =
        "generate one with `openssl rand -hex 24` and put the same value in Motion's Reply URL";
    if token.chars().count() < MIN_REPLY_TOKEN_CHARS {
        err(
            secret.span(),
            key,
            format!(
                "is too short ({} characters, at least {MIN_REPLY_TOKEN_CHARS}): {how}",
                token.chars().count()
            ),
        );
    } else if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        err(
            secret.span(),
            key,
            format!(
                "may hold only letters, digits, '-', '_', '.' and '~' (it travels in a URL): {how}"
            ),
        );
    }
}

/// Longest `storage.keep`: ten years. Anything longer is a typo, and once turned into
/// milliseconds it could reach past what a timestamp holds.
pub const MAX_KEEP: Duration = Duration::from_secs(3650 * 86_400);

/// The range a duration of the config must be in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Range {
    min: Duration,
    max: Duration,
    /// Why the minimum is what it is, for the error message.
    why_min: Option<&'static str>,
    /// Zero is allowed outside `min..=max`, with this meaning.
    zero: Option<&'static str>,
}

impl Range {
    const fn new(min: Duration, max: Duration) -> Range {
        Range {
            min,
            max,
            why_min: None,
            zero: None,
        }
    }

    const fn why_min(self, why: &'static str) -> Range {
        Range {
            why_min: Some(why),
            ..self
        }
    }

    const fn or_zero(self, meaning: &'static str) -> Range {
        Range {
            zero: Some(meaning),
            ..self
        }
    }

    fn check(&self, value: Duration) -> Result<(), String> {
        if value.is_zero() && self.zero.is_some() {
            return Ok(());
        }
        if value >= self.min && value <= self.max {
            return Ok(());
        }
        let show = |d: Duration| {
            let days = d.as_secs() / 86_400;
            if days > 0 && d == Duration::from_secs(days * 86_400) {
                format!("{days}d")
            } else {
                humantime::format_duration(d).to_string()
            }
        };
        let mut message = format!(
            "must be between {} and {} (is {})",
            show(self.min),
            show(self.max),
            show(value)
        );
        if value < self.min
            && let Some(why) = self.why_min
        {
            message = format!(
                "must be at least {} (is {}): {why}",
                show(self.min),
                show(value)
            );
        }
        if let Some(zero) = self.zero {
            message.push_str(&format!("; {zero}"));
        }
        Err(message)
    }
}

/// What is wrong with `[public] acme`, each as a sentence after "public.acme".
pub(super) fn acme_problems(public: &PublicConfig, acme: &AcmeConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if !public.tls {
        problems.push("needs public.tls = true: behind a TLS proxy (nginx), let the proxy get the certificate".into());
    }
    for (key, file) in [("tls_cert", &public.tls_cert), ("tls_key", &public.tls_key)] {
        if file.span() != (0..0) {
            problems.push(format!(
                "and public.{key} are both set: the certificate comes either from ACME or from your files — remove one"
            ));
        }
    }
    if acme.domains.is_empty() {
        problems.push(
            "domains is empty: name the Callback URL's host, e.g. domains = [\"fb.example.com\"]"
                .into(),
        );
    }
    for domain in &acme.domains {
        if let Err(why) = Domain::parse(domain) {
            problems.push(format!("domains: {why}"));
        }
    }
    if let Some(name) = &public.name
        && !acme.domains.iter().any(|d| d.eq_ignore_ascii_case(name))
    {
        problems.push(format!(
            "domains does not name {name} (public.name): the certificate would not cover the Callback URL's host"
        ));
    }
    if let Some(email) = &acme.email
        && (email.chars().any(|c| c.is_whitespace() || c.is_control())
            || email
                .split_once('@')
                .is_none_or(|(user, host)| user.is_empty() || !host.contains('.')))
    {
        problems.push("email is not an e-mail address".into());
    }
    match Url::parse(&acme.directory) {
        Ok(url) if url.scheme() == "https" && url.host_str().is_some() => {}
        _ => problems.push(format!(
            "directory must be an https:// URL (RFC 8555), e.g. {LETS_ENCRYPT}"
        )),
    }
    if let Some(ca) = &acme.directory_ca
        && let Err(e) = std::fs::File::open(ca)
    {
        problems.push(format!("directory_ca: cannot read {}: {e}", ca.display()));
    }
    problems
}

/// An absolute `http://` or `https://` URL with a host. The message never repeats the
/// value: URLs carry tokens.
pub(super) fn check_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    Ok(url)
}
