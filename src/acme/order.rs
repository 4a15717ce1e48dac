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
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{Settings, write_private};
use crate::server::tls::CertStore;

/// How long the CA may take to check the names, and then to sign.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .timeout(Duration::from_secs(120));

/// Timeout of one call to the CA.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Orders a certificate for `settings.domains`; `certs` answers the CA's checks.
pub async fn obtain(settings: &Settings, dir: &Path, certs: &CertStore) -> Result<Issued, String> {
    let http = Http::new(settings)?;
    let file = dir.join("account.json");
    let account = load_account(&http, settings, &file, false).await?;
    match order(&account, settings, certs).await {
        Err(Failed::NoAccount(why)) => {
            // The CA forgot the account (deactivated, or a test CA restarted): a new one.
            info!(directory = %settings.directory, "ACME: the CA no longer knows our account ({why}); registering a new one");
            let account = load_account(&http, settings, &file, true).await?;
            order(&account, settings, certs)
                .await
                .map_err(Failed::into_text)
        }
        other => other.map_err(Failed::into_text),
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
    file: &Path,
    fresh: bool,
) -> Result<Account, String> {
    let saved = match fresh {
        true => None,
        false => std::fs::read(file)
            .ok()
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
    let bytes = serde_json::to_vec(&saved).map_err(|e| e.to_string())?;
    write_private(file, &bytes)?;
    info!(directory = %settings.directory, account = account.id(), "ACME: registered an account with the CA");
    Ok(account)
}

async fn order(
    account: &Account,
    settings: &Settings,
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
        let cert = challenge_certificate(&name, proof.digest().as_ref()).map_err(Failed::Other)?;
        certs.set_challenge(&name, cert);
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

/// The self-signed certificate that proves `name` (RFC 8737 §3): the name as its only
/// SAN and the SHA-256 of the key authorization in the critical acmeIdentifier extension.
fn challenge_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let fail = |e: rcgen::Error| format!("cannot make the TLS-ALPN-01 certificate for {name}: {e}");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with WebPKI,
    // which refuses the critical acmeIdentifier extension it does not know.
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("cannot serve the TLS-ALPN-01 certificate for {name}: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    )))
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
        instant_acme::Error::Timeout(_) => {
            "the CA did not finish checking the names or signing within 2 minutes".into()
        }
        other => format!(
            "cannot talk to the ACME directory {} ({other})",
            settings.directory
        ),
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
            Ok(BytesResponse::from(http::Response::from(response)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_certificate_carries_the_proof_for_its_name_only() {
        crate::http_client::install_crypto_provider();
        let digest = [7u8; 32];
        let cert = challenge_certificate("fb.example.com", &digest).unwrap();
        use x509_cert::der::Decode;
        let parsed = x509_cert::Certificate::from_der(cert.cert[0].as_ref()).unwrap();
        let acme_identifier =
            x509_cert::der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.31");
        let extension = parsed
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == acme_identifier)
            .expect("acmeIdentifier extension");
        assert!(extension.critical, "RFC 8737: the extension is critical");
        // An OCTET STRING of the 32-byte SHA-256.
        let value = extension.extn_value.as_bytes();
        assert_eq!(&value[..2], &[0x04, 0x20]);
        assert_eq!(&value[2..], &digest);
        let facts = crate::server::tls::leaf_facts(&cert.cert[0]).unwrap();
        assert_eq!(facts.names, ["fb.example.com"]);
    }
}
