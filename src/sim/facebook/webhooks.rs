//! Webhooks as Facebook sends them: signed with the App Secret, in Facebook's shapes.

use super::*;

/// A feed change webhook (wall post or comment) as Facebook sends it.
pub fn feed_change(page_id: &str, time_s: i64, value: Value) -> String {
    json!({
        "object": "page",
        "entry": [{"id": page_id, "time": time_s, "changes": [{"field": "feed", "value": value}]}]
    })
    .to_string()
}

/// Posts webhooks to the daemon as Facebook does: signed with the App Secret.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    app_secret: String,
}

impl WebhookSender {
    /// `url` is the daemon's `…/webhook`; `ca_pem` the CA its certificate chains to.
    pub fn new(url: &str, app_secret: &str, ca_pem: Option<&str>) -> WebhookSender {
        crate::http_client::install_crypto_provider();
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA PEM");
            builder = builder.tls_certs_only([ca]);
        }
        WebhookSender {
            client: builder.build().expect("client"),
            url: url.into(),
            app_secret: app_secret.into(),
        }
    }

    /// POSTs `body` signed with the App Secret; returns the status and body of the answer.
    pub async fn send(&self, body: &[u8]) -> Result<(u16, String), reqwest::Error> {
        let signature = signature::sign(self.app_secret.as_bytes(), body);
        self.send_with_signature(body, Some(&signature)).await
    }

    /// POSTs `body` with the given signature header (or none).
    pub async fn send_with_signature(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<(u16, String), reqwest::Error> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(sig) = signature {
            request = request.header(signature::HEADER, sig);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// A Messenger text message webhook, as Facebook sends it.
pub fn messenger_text(
    page_id: &str,
    psid: &str,
    mid: &str,
    timestamp_ms: i64,
    text: &str,
) -> String {
    messenger_message(
        page_id,
        psid,
        timestamp_ms,
        json!({"mid": mid, "text": text}),
    )
}

/// An Instagram direct message webhook (`object` "instagram") from customer `igsid` to
/// the professional account `account`.
pub fn instagram_text(
    account: &str,
    igsid: &str,
    mid: &str,
    timestamp_ms: i64,
    text: &str,
) -> String {
    customer_message(
        "instagram",
        account,
        igsid,
        timestamp_ms,
        json!({"mid": mid, "text": text}),
    )
}

/// A Messenger message carrying one attachment of `kind` at `url`.
pub fn messenger_attachment(
    page_id: &str,
    psid: &str,
    mid: &str,
    timestamp_ms: i64,
    kind: &str,
    url: &str,
) -> String {
    messenger_message(
        page_id,
        psid,
        timestamp_ms,
        json!({"mid": mid, "attachments": [{"type": kind, "payload": {"url": url}}]}),
    )
}

/// A webhook of one customer's `message` to the Page, as Facebook wraps it.
pub(super) fn messenger_message(
    page_id: &str,
    psid: &str,
    timestamp_ms: i64,
    message: Value,
) -> String {
    customer_message("page", page_id, psid, timestamp_ms, message)
}

/// A webhook of one customer's `message` to an account of `object` ("page",
/// "instagram").
pub(super) fn customer_message(
    object: &str,
    page_id: &str,
    psid: &str,
    timestamp_ms: i64,
    message: Value,
) -> String {
    json!({
        "object": object,
        "entry": [{
            "id": page_id,
            "time": timestamp_ms,
            "messaging": [{
                "sender": {"id": psid},
                "recipient": {"id": page_id},
                "timestamp": timestamp_ms,
                "message": message
            }]
        }]
    })
    .to_string()
}
