//! One ACME order, start to finish, with the `instant-acme` crate: the account (made
//! once and kept in `account.json`), a new order for the configured names, one
//! TLS-ALPN-01 certificate per name handed to the listener while the CA checks it,
//! the CSR and the chain.
//!
//! `instant-acme` speaks the protocol (JWS signing, nonces and their `badNonce` retry,
//! polling); its HTTP goes through our reqwest client ([`Http`]), so the CA is called
//! with the same rustls, system roots and `User-Agent` as Graph and Motion, and trusts
//! `directory_ca` besides for a private ACME server.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{Settings, write_private};
use crate::server::tls::CertStore;
use crate::store::Store;

/// How long the CA may take to check the names, and then to sign.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .timeout(Duration::from_secs(120));

/// Timeout of one call to the CA.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the other nodes show a proof: past the longest an order can take.
const PROOF_SHOWN: Duration = Duration::from_secs(600);

/// The outcome of an order: the new private key and the chain, both PEM.
pub struct Issued {
    pub key_pem: String,
    pub chain_pem: String,
}

/// `account.json`: the account for one directory.
#[derive(Serialize, Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Orders a certificate for `settings.domains`; `certs` answers the CA's checks (and
/// on a shared queue, every node: `keeper`).
pub async fn obtain(
    settings: &Settings,
    keeper: &Keeper,
    certs: &CertStore,
) -> Result<Issued, String> {
    let http = Http::new(settings)?;
    let account = load_account(&http, settings, keeper, false).await?;
    let issued = match order(&account, settings, keeper, certs).await {
        Err(Failed::NoAccount(why)) => {
            // The CA forgot the account (deactivated, or a test CA restarted): a new one.
            info!(directory = %settings.directory, "ACME: the CA no longer knows our account ({why}); registering a new one");
            let account = load_account(&http, settings, keeper, true).await?;
            order(&account, settings, keeper, certs)
                .await
                .map_err(Failed::into_text)
        }
        other => other.map_err(Failed::into_text),
    };
    keeper.end_proofs().await;
    issued
}

/// Where the ACME account and the proofs of an order are kept: in the state directory
/// (one host), or in the shared queue (several nodes, any of which the CA may reach).
pub enum Keeper {
    Files(PathBuf),
    Shared(Store),
}

impl Keeper {
    /// The saved account, if any. An error only when the shared queue cannot say: a new
    /// account then would replace the other nodes' one.
    async fn saved_account(&self) -> Result<Option<Vec<u8>>, String> {
        match self {
            Keeper::Files(dir) => Ok(std::fs::read(dir.join("account.json")).ok()),
            Keeper::Shared(store) => store
                .acme_row("account")
                .await
                .map(|row| row.map(|row| row.body.into_bytes()))
                .map_err(|e| format!("cannot read the ACME account from the shared queue: {e}")),
        }
    }

    async fn save_account(&self, json: String) -> Result<(), String> {
        match self {
            Keeper::Files(dir) => write_private(&dir.join("account.json"), json.as_bytes()),
            Keeper::Shared(store) => store
                .put_acme_row("account", json, 0)
                .await
                .map_err(|e| format!("cannot keep the ACME account in the shared queue: {e}")),
        }
    }

    async fn show_proof(&self, name: &str, digest: &[u8]) -> Result<(), String> {
        match self {
            Keeper::Files(_) => Ok(()),
            Keeper::Shared(store) => store
                .put_acme_challenge(name, hex::encode(digest), PROOF_SHOWN.as_millis() as i64)
                .await
                .map_err(|e| format!("cannot show the proof for {name} to the other nodes: {e}")),
        }
    }

    async fn end_proofs(&self) {
        if let Keeper::Shared(store) = self
            && let Err(e) = store.end_acme_challenges().await
        {
            // They go stale by themselves.
            tracing::warn!(
                "ACME: cannot remove this order's proofs from the shared queue ({e}); they go stale in {} minutes",
                PROOF_SHOWN.as_secs() / 60
            );
        }
    }
}

enum Failed {
    /// The CA does not know the account (`accountDoesNotExist`, `unauthorized` for a
    /// key it never saw).
    NoAccount(String),
    Other(String),
}

impl Failed {
    fn into_text(self) -> String {
        match self {
            Failed::NoAccount(why) | Failed::Other(why) => why,
        }
    }
}

/// The saved account for this directory, else a new one (saved before it is used).
async fn load_account(
    http: &Http,
    settings: &Settings,
    keeper: &Keeper,
    fresh: bool,
) -> Result<Account, String> {
    let saved = match fresh {
        true => None,
        false => keeper
            .saved_account()
            .await?
            .and_then(|bytes| serde_json::from_slice::<SavedAccount>(&bytes).ok())
            .filter(|s| s.directory == settings.directory),
    };
    if let Some(saved) = saved {
        return Account::builder_with_http(Box::new(http.clone()))
            .from_credentials(saved.credentials)
            .await
            .map_err(|e| describe(&e, settings));
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(http.clone()))
        .create(
            &NewAccount {
                contact: &contact,
                // Setting `public.acme` is agreeing to the CA's terms (README).
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(|e| describe(&e, settings))?;
    let saved = SavedAccount {
        directory: settings.directory.clone(),
        credentials,
    };
    let json = serde_json::to_string(&saved).map_err(|e| e.to_string())?;
    keeper.save_account(json).await?;
    info!(directory = %settings.directory, account = account.id(), "ACME: registered an account with the CA");
    Ok(account)
}

async fn order(
    account: &Account,
    settings: &Settings,
    keeper: &Keeper,
    certs: &CertStore,
) -> Result<Issued, Failed> {
    let fail = |e: instant_acme::Error| match &e {
        instant_acme::Error::Api(p)
            if matches!(
                problem_kind(p),
                Some("accountDoesNotExist" | "unauthorized")
            ) =>
        {
            Failed::NoAccount(describe(&e, settings))
        }
        _ => Failed::Other(describe(&e, settings)),
    };
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.as_str().to_owned()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(fail)?;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(fail)?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            // Proven recently (the CA keeps a check for a while): nothing to show.
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(Failed::Other(format!(
                    "the CA says the authorization for {} is {other:?}",
                    authorization.identifier()
                )));
            }
        }
        let name = authorization.identifier().to_string();
        let mut challenge = authorization
            .challenge(ChallengeType::TlsAlpn01)
            .ok_or_else(|| {
                Failed::Other(format!(
                    "the CA offers no tls-alpn-01 challenge for {name}; use public.tls_cert / tls_key with a certificate from elsewhere"
                ))
            })?;
        let proof = challenge.key_authorization();
        let digest = proof.digest();
        let cert = crate::server::challenges::certificate(&name, digest.as_ref())
            .map_err(Failed::Other)?;
        certs.set_challenge(&name, cert);
        // On a shared queue the CA may reach another node: it must find the proof there
        // before the CA is told to look.
        keeper
            .show_proof(&name, digest.as_ref())
            .await
            .map_err(Failed::Other)?;
        challenge.set_ready().await.map_err(fail)?;
    }
    let status = order.poll_ready(&POLL).await.map_err(fail)?;
    if status != OrderStatus::Ready {
        return Err(Failed::Other(why_invalid(&mut order, settings).await));
    }
    let key_pem = order.finalize().await.map_err(fail)?;
    let chain_pem = order.poll_certificate(&POLL).await.map_err(fail)?;
    Ok(Issued { key_pem, chain_pem })
}

/// Why the CA turned the order down: each name's failed check, in the CA's words.
async fn why_invalid(order: &mut instant_acme::Order, settings: &Settings) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!(
                    "{}: {}",
                    authorization.identifier(),
                    bounded(problem.detail.as_deref().unwrap_or("failed"))
                ));
            }
        }
    }
    let names = settings
        .domains
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "the CA could not check {} ({}): each name must resolve to this host and its port 443 reach this daemon's public listener directly (not through a TLS proxy)",
        names,
        if reasons.is_empty() {
            "no reason given".into()
        } else {
            reasons.join("; ")
        }
    )
}

/// A CA's words for a log line: one line, at most 300 characters.
fn bounded(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}

/// The short name of an ACME problem type (`rateLimited`, `connection`, …).
fn problem_kind(problem: &instant_acme::Problem) -> Option<&str> {
    problem
        .r#type
        .as_deref()
        .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
}

/// An error of the order as a sentence for the log and `doctor`.
fn describe(error: &instant_acme::Error, settings: &Settings) -> String {
    match error {
        instant_acme::Error::Api(problem) => {
            let detail = bounded(problem.detail.as_deref().unwrap_or("no detail"));
            match problem_kind(problem) {
                Some("rateLimited") => format!(
                    "the CA's rate limit: {detail} — the daemon tries again later by itself"
                ),
                Some(kind) => format!("the CA refused ({}): {detail}", bounded(kind)),
                None => format!("the CA refused: {detail}"),
            }
        }
        instant_acme::Error::Timeout(None) => {
            "the CA did not finish checking the names or signing within 2 minutes".into()
        }
        // The CA's Retry-After named a time past the poll's end.
        instant_acme::Error::Timeout(Some(_)) => {
            "the CA asked (Retry-After) to be asked again later than the 2 minutes an order waits; the daemon tries again later by itself".into()
        }
        instant_acme::Error::Other(e) if e.is::<http_body_util::LengthLimitError>() => format!(
            "the ACME directory {} sent {}: is directory the CA's URL?",
            settings.directory,
            crate::http_client::over_bound(ACME_ANSWER)
        ),
        other => format!(
            "cannot talk to the ACME directory {} ({other})",
            settings.directory
        ),
    }
}

/// Most of an answer from the ACME directory that is read: a certificate chain of a few
/// KiB is the largest it sends.
const ACME_ANSWER: usize = 1024 * 1024;

/// The longest `Retry-After` (seconds) passed on to instant-acme, which adds it to the
/// clock unchecked: 2^64 − 1 panicked there. A day is far past the two minutes an order
/// is polled for, so a CA asking for more still fails the order, which is tried again
/// later.
const LONGEST_RETRY_AFTER_S: u64 = 24 * 3600;

/// Cuts a CA's `Retry-After` in seconds to [`LONGEST_RETRY_AFTER_S`]. (An HTTP date is
/// at most in the year 9999, which the clock holds.)
fn bound_retry_after(headers: &mut http::HeaderMap) {
    let seconds = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if seconds.is_some_and(|s| s > LONGEST_RETRY_AFTER_S) {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(LONGEST_RETRY_AFTER_S),
        );
    }
}

/// `instant-acme`'s HTTP, through reqwest.
#[derive(Clone)]
struct Http(reqwest::Client);

impl Http {
    fn new(settings: &Settings) -> Result<Http, String> {
        crate::http_client::build(CALL_TIMEOUT, settings.directory_ca.as_deref())
            .map(Http)
            .map_err(|e| format!("cannot make the ACME client: {e}"))
    }
}

impl instant_acme::HttpClient for Http {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?
                .to_bytes();
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(crate::http_client::describe(e).into()))?;
            // Bounded like every peer's answer (DESIGN §4 rule 15): past it the order
            // fails with an error that names the bound, and the rest is not read.
            let mut response = http::Response::from(response)
                .map(|body| http_body_util::Limited::new(body, ACME_ANSWER));
            bound_retry_after(response.headers_mut());
            Ok(BytesResponse::from(response))
        })
    }
}
