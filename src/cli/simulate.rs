//! `fb-openchannel simulate`: a correctly signed synthetic Messenger message (or, with
//! `--wall`, a wall post; with `--instagram`, an Instagram direct message) sent to this
//! host's running daemon, to test the Motion side end to end without a Facebook user. The customer is `fbo-simulated-customer`; replies to
//! it are acknowledged to Motion without calling Facebook, and logged as simulated.

use std::process::ExitCode;
use std::time::Duration;

use crate::facebook::signature;
use crate::relay::SIMULATED_ID_PREFIX;
use crate::time::now_ms;

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Messenger,
    Wall,
    Instagram,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Messenger => "Messenger message",
            Kind::Wall => "wall post",
            Kind::Instagram => "Instagram direct message",
        }
    }
}

pub struct Options {
    /// The page (or, with `Kind::Instagram`, the Instagram account) to simulate for.
    pub page: Option<String>,
    pub kind: Kind,
    pub text: Option<String>,
    /// Where to send it instead of `public.listen`.
    pub url: Option<String>,
}

/// The simulated customer's id: recognisable, and the same at every run so that Motion
/// keeps one test contact.
pub fn customer_id() -> String {
    format!("{SIMULATED_ID_PREFIX}customer")
}

pub fn body(page_id: &str, kind: Kind, text: &str, now: i64) -> String {
    let customer = customer_id();
    if kind == Kind::Wall {
        serde_json::json!({
            "object": "page",
            "entry": [{"id": page_id, "time": now / 1000, "changes": [{"field": "feed", "value": {
                "item": "status", "verb": "add", "published": 1,
                // A post id of Facebook's form (the thread is answered without Graph:
                // its author is the simulated customer).
                "post_id": format!("{page_id}_{now}"),
                "from": {"id": customer, "name": "Simulated Customer"},
                "created_time": now / 1000, "message": text
            }}]}]
        })
        .to_string()
    } else {
        serde_json::json!({
            "object": if kind == Kind::Instagram { "instagram" } else { "page" },
            "entry": [{"id": page_id, "time": now, "messaging": [{
                "sender": {"id": customer}, "recipient": {"id": page_id}, "timestamp": now,
                "message": {"mid": format!("{SIMULATED_ID_PREFIX}mid-{now}"), "text": text}
            }]}]
        })
        .to_string()
    }
}

pub fn main(path: &std::path::Path, options: Options) -> ExitCode {
    let config = match super::config_for_command(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The account: a [[page]], or with --instagram an [[instagram]] (default: the first).
    let accounts: Vec<&str> = match options.kind {
        Kind::Instagram => config
            .instagram
            .iter()
            .map(|a| a.id.get_ref().as_str())
            .collect(),
        _ => config
            .pages
            .iter()
            .map(|p| p.id.get_ref().as_str())
            .collect(),
    };
    let table = match options.kind {
        Kind::Instagram => "[[instagram]]",
        _ => "[[page]]",
    };
    let page_id = match &options.page {
        Some(id) if accounts.contains(&id.as_str()) => id.clone(),
        Some(id) => {
            eprintln!("{id} is not a {table} of {}", path.display());
            return ExitCode::FAILURE;
        }
        None => match accounts.first() {
            Some(id) => (*id).to_owned(),
            None => {
                eprintln!("no {table} in {}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let url = options.url.clone().unwrap_or_else(|| {
        super::doctor::listener_url(config.public.listen, config.public.tls, "/webhook").to_string()
    });
    let what = options.kind.what();
    let text = options
        .text
        .clone()
        .unwrap_or_else(|| format!("Test {what} from fb-openchannel simulate"));
    let payload = body(&page_id, options.kind, &text, now_ms());
    let sig = signature::sign(
        config.facebook.app_secret.get_ref().expose().as_bytes(),
        payload.as_bytes(),
    );

    crate::http_client::install_crypto_provider();
    // This host's own listener: its certificate names the public host, not this address.
    let client = match reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot build an HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = super::command_runtime();
    let answer = runtime.block_on(async {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .header(signature::HEADER, sig)
            .body(payload)
            .send()
            .await
            .map_err(crate::http_client::describe)?;
        let status = response.status().as_u16();
        Ok::<_, String>((status, response.text().await.unwrap_or_default()))
    });
    match answer {
        Ok((200, _)) => {
            println!("sent a signed {what} for {page_id} to {url}: 200, stored by the daemon");
            println!("  from: Simulated Customer ({})", customer_id());
            println!("  text: {text}");
            println!(
                "It should appear in Motion's Openchannel account as a new interaction within seconds."
            );
            println!(
                "Answer it there: the daemon acknowledges the reply without calling Facebook and logs"
            );
            println!("\"simulated delivery\" (journalctl -u fb-openchannel OUTCOME=simulated).");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("{url} answered {status}: {}", body.trim());
            if status == 403 {
                eprintln!(
                    "the running daemon has another app_secret: reload it (systemctl reload fb-openchannel)"
                );
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "cannot reach the daemon at {url}: {e}. Is it running (systemctl status fb-openchannel)?"
            );
            ExitCode::FAILURE
        }
    }
}
