//! The public certificate: readable, valid long enough, covering the names Meta calls,
//! and (with ACME) renewed on time.

use super::*;

pub(super) fn certificate(config: &Config) -> Check {
    let check = |ok, detail| Check {
        scope: "daemon".into(),
        name: "certificate",
        ok,
        detail,
    };
    if config.public.acme.is_some() {
        return acme_certificate(config, check);
    }
    let cert = config.public.tls_cert.get_ref();
    let loaded = match crate::server::tls::load(cert, config.public.tls_key.get_ref()) {
        Ok(l) => l.facts,
        Err(e) => {
            return check(
                false,
                format!(
                    "{e}: put a valid PEM chain and its key in public.tls_cert / public.tls_key"
                ),
            );
        }
    };
    let now = crate::time::now_ms() / 1000;
    let days_left = (loaded.not_after - now) / 86_400;
    if loaded.not_after <= now {
        return check(
            false,
            format!(
                "{} has expired: renew it (e.g. certbot renew)",
                cert.display()
            ),
        );
    }
    if days_left < EXPIRY_WARNING_DAYS {
        return check(
            false,
            format!(
                "{} expires in {days_left} day(s) (under {EXPIRY_WARNING_DAYS}): renew it now (e.g. certbot renew); the daemon picks up the new files by itself",
                cert.display()
            ),
        );
    }
    match names_problem(config, &loaded, &cert.display().to_string()) {
        Some(problem) => check(false, problem),
        None => check(
            true,
            format!(
                "valid for {days_left} more days, matches its key, covers {}{}",
                loaded.names.join(", "),
                if config.public.name.is_none() {
                    " (set public.name to have its host checked)"
                } else {
                    ""
                }
            ),
        ),
    }
}

/// The certificate the daemon gets by itself (`public.acme`): served from its state
/// directory, renewed on time, and what its last order said.
pub(super) fn acme_certificate(config: &Config, check: impl Fn(bool, String) -> Check) -> Check {
    use crate::acme;
    let file = acme::certificate_file(&config.storage.path);
    let status = acme::read_status(&config.storage.path).unwrap_or_default();
    let last = match (&status.last_attempt, &status.last_error) {
        (None, _) => "no order tried yet".to_owned(),
        (Some(at), None) => format!("last order {} succeeded", acme::when(*at)),
        (Some(at), Some(e)) => format!(
            "last order {} FAILED ({} in a row): {e}",
            acme::when(*at),
            status.failures
        ),
    };
    let next = status
        .next_attempt
        .map(|t| format!("; next order {}", acme::when(t)))
        .unwrap_or_default()
        + &shared_acme(config);
    let loaded = match acme::read_certificate(&config.storage.path).and_then(|pem| {
        pem.map(|pem| crate::server::tls::parse_pem(&pem))
            .transpose()
    }) {
        Ok(Some(l)) => l.facts,
        Ok(None) => {
            return check(
                false,
                format!(
                    "no certificate from ACME yet ({last}{next}): the daemon orders it when it starts; is it running, and do the names resolve to this host with port 443 reaching public.listen ({})?",
                    config.public.listen
                ),
            );
        }
        Err(e) => {
            return check(
                false,
                format!(
                    "{}: {e}: the daemon orders a new one when it starts ({last}{next})",
                    file.display()
                ),
            );
        }
    };
    let now = crate::time::now_ms() / 1000;
    let renew_at = acme::renew_at(loaded.not_before, loaded.not_after);
    let days_left = (loaded.not_after - now) / 86_400;
    if loaded.not_after <= now {
        return check(
            false,
            format!("the ACME certificate has EXPIRED ({last}{next})"),
        );
    }
    if now >= renew_at && status.last_error.is_some() {
        return check(
            false,
            format!(
                "the ACME certificate is due for renewal since {} and the renewal fails; it expires {} ({last}{next})",
                acme::when(renew_at),
                acme::when(loaded.not_after)
            ),
        );
    }
    if let Some(problem) = names_problem(config, &loaded, "the ACME certificate") {
        return check(
            false,
            format!("{problem} (the daemon orders one for public.acme.domains when it starts)"),
        );
    }
    let port = config.public.listen.port();
    let port_note = if port == 443 {
        String::new()
    } else {
        format!(
            " (public.listen is on port {port}: the CA checks the names on port 443, so 443 must be forwarded to it)"
        )
    };
    check(
        true,
        format!(
            "from ACME ({}), valid for {days_left} more days, covers {}, renewed from {}; {last}{next}{port_note}",
            status.directory,
            loaded.names.join(", "),
            acme::when(renew_at)
        ),
    )
}

/// On a shared queue, what the nodes hold in common: the newest certificate, and which
/// node orders (the status file tells only this node's own orders).
fn shared_acme(config: &Config) -> String {
    use crate::acme::when;
    use crate::store::acme_rows::row;
    if !config.storage.is_postgres() {
        return String::new();
    }
    let Some(acme) = &config.public.acme else {
        return String::new();
    };
    let certificate = crate::acme::certificate_row(&acme.get_ref().directory);
    let rows = queue::with_storage(&config.storage, |conn| {
        Ok::<_, crate::store::DbError>((row(conn, &certificate)?, row(conn, "order")?))
    });
    let (certificate, order) = match rows {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return format!("; the shared queue cannot say what the nodes share ({e})"),
        Err(e) => return format!("; the shared queue cannot say what the nodes share ({e})"),
    };
    let mut note = match certificate {
        Some(c) => format!(
            "; the nodes' shared certificate is valid until {}",
            when(c.until / 1000)
        ),
        None => "; no certificate shared by the nodes yet".to_owned(),
    };
    if let Some(order) = order {
        let node = order.holder.unwrap_or_default();
        let held = order.until > crate::time::now_ms();
        note.push_str(&match (held, order.body.is_empty()) {
            (true, false) => format!(
                ", node {node}'s last order FAILED ({}), no node tries again before {}",
                order.body,
                when(order.until / 1000)
            ),
            (true, true) => format!(", node {node} is ordering one now"),
            (false, _) => format!(", the last ordered by node {node}"),
        });
    }
    note
}

/// Whether the certificate misses `public.name` (or, with ACME, a configured domain).
pub(super) fn names_problem(
    config: &Config,
    loaded: &crate::server::tls::Facts,
    what: &str,
) -> Option<String> {
    let mut wanted: Vec<&str> = config.public.name.iter().map(String::as_str).collect();
    if let Some(acme) = &config.public.acme {
        wanted.extend(acme.get_ref().domains.iter().map(String::as_str));
    }
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|name| !covers(&loaded.names, name))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "{what} does not cover {}; it covers {}: get a certificate for the Callback URL's host",
        missing.join(", "),
        loaded.names.join(", ")
    ))
}

/// Whether a certificate's names cover `host` (one-label wildcards included).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|n| {
        let n = n.to_ascii_lowercase();
        match n.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => n == host,
        }
    })
}
