//! Facebook Login's side of Graph, for `fb-openchannel setup`: what a user's token is
//! (`debug_token`, asked with the app's own token), its exchange for a long-lived one,
//! and the Pages the user manages with their Page tokens.
//!
//! A Page token obtained with a long-lived user token does not expire (Meta: "Long-Lived
//! Access Tokens" → "Get a Long-Lived Page Access Token"): that is the one `setup`
//! writes, so a site never meets the one-hour token of the Graph API Explorer again.

use serde::Deserialize;
use serde_json::Value;

use super::graph::{GraphClient, GraphError};
use crate::config::Secret;

/// What Graph says of a user access token.
#[derive(Debug, Clone)]
pub struct TokenFacts {
    /// The app the token was issued for.
    pub app_id: String,
    pub valid: bool,
    /// `USER`, `PAGE`, `APP`…
    pub kind: String,
    /// Permissions granted.
    pub scopes: Vec<String>,
    /// Why it is not valid, when Graph says.
    pub error: Option<String>,
    /// Unix seconds; `None` when it does not expire (Meta writes 0).
    pub expires_at: Option<i64>,
    /// Unix seconds when the app's access to the data ends (renewed when a person uses
    /// the app again: for a Page token, when an admin runs `setup` again).
    pub data_access_expires_at: Option<i64>,
}

/// A Page the user manages, with its token.
#[derive(Debug, Clone)]
pub struct ManagedPage {
    pub id: String,
    pub name: String,
    pub token: Secret,
    /// Whether the user may answer messages as the Page (the `MESSAGING` task).
    pub can_message: bool,
    /// The Instagram professional account linked to the Page: id and username.
    pub instagram: Option<(String, String)>,
}

/// The `access_token` of an OAuth answer.
fn access_token_of(text: &str) -> Result<Secret, GraphError> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: String,
    }
    match serde_json::from_str::<Answer>(text) {
        Ok(a) if !a.access_token.is_empty() => Ok(Secret::new(a.access_token)),
        _ => {
            let mut e = GraphError::from_response(200, "", None);
            e.message = "the OAuth answer has no access_token".into();
            Err(e)
        }
    }
}

impl GraphClient {
    /// `GET /debug_token?input_token=…`, authenticated as the app (`{app-id}|{secret}`):
    /// a wrong app id or secret fails here, before anything else is asked.
    pub async fn debug_token(
        &self,
        app_id: &str,
        app_secret: &Secret,
        token: &Secret,
    ) -> Result<TokenFacts, GraphError> {
        let app_token = format!("{app_id}|{}", app_secret.expose());
        let request = self
            .http
            .get(self.url(&["debug_token"]))
            .query(&[("input_token", token.expose())])
            .bearer_auth(app_token);
        let text = self.call(request).await?;
        let v: Value =
            serde_json::from_str(&text).map_err(|_| GraphError::from_response(200, &text, None))?;
        let data = &v["data"];
        Ok(TokenFacts {
            app_id: match &data["app_id"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            },
            valid: data["is_valid"].as_bool().unwrap_or(false),
            kind: data["type"].as_str().unwrap_or_default().to_owned(),
            scopes: data["scopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            error: data["error"]["message"]
                .as_str()
                .map(|m| m.chars().take(300).collect()),
            expires_at: data["expires_at"].as_i64().filter(|s| *s > 0),
            data_access_expires_at: data["data_access_expires_at"].as_i64().filter(|s| *s > 0),
        })
    }

    /// `GET /oauth/access_token?grant_type=fb_exchange_token…`: the user token made
    /// long-lived (60 days). Never captured: the request carries the app secret.
    pub async fn long_lived_user_token(
        &self,
        app_id: &str,
        app_secret: &Secret,
        token: &Secret,
    ) -> Result<Secret, GraphError> {
        let text = self
            .get_secretly(
                self.url(&["oauth", "access_token"]),
                &[
                    ("grant_type", "fb_exchange_token"),
                    ("client_id", app_id),
                    ("client_secret", app_secret.expose()),
                    ("fb_exchange_token", token.expose()),
                ],
            )
            .await?;
        access_token_of(&text)
    }

    /// `GET /oauth/access_token?client_id&redirect_uri&client_secret&code`: the code the
    /// login dialog sent back, made a user token. Never captured (the app secret).
    pub async fn user_token_from_code(
        &self,
        app_id: &str,
        app_secret: &Secret,
        redirect_uri: &str,
        code: &Secret,
    ) -> Result<Secret, GraphError> {
        let text = self
            .get_secretly(
                self.url(&["oauth", "access_token"]),
                &[
                    ("client_id", app_id),
                    ("redirect_uri", redirect_uri),
                    ("client_secret", app_secret.expose()),
                    ("code", code.expose()),
                ],
            )
            .await?;
        access_token_of(&text)
    }

    /// `GET /{app-id}?fields=id,name` as the app itself: whether Facebook takes this app
    /// id and secret.
    pub async fn check_app(&self, app_id: &str, app_secret: &Secret) -> Result<String, GraphError> {
        let request = self
            .http
            .get(self.url(&[app_id]))
            .query(&[("fields", "id,name")])
            .bearer_auth(format!("{app_id}|{}", app_secret.expose()));
        let text = self.call(request).await?;
        let v: Value =
            serde_json::from_str(&text).map_err(|_| GraphError::from_response(200, &text, None))?;
        Ok(v["name"].as_str().unwrap_or_default().to_owned())
    }

    /// `POST /{app-id}/subscriptions` as the app: the app's webhook for `object` (`page`)
    /// at `callback_url` with these fields. Meta first checks the callback with the
    /// verification handshake (the daemon must answer it with this verify token).
    pub async fn register_webhook(
        &self,
        app_id: &str,
        app_secret: &Secret,
        object: &str,
        callback_url: &str,
        verify_token: &Secret,
        fields: &[&str],
    ) -> Result<(), GraphError> {
        // In the body, not the URL: the verify token is a secret.
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("object", object)
            .append_pair("callback_url", callback_url)
            .append_pair("fields", &fields.join(","))
            .append_pair("verify_token", verify_token.expose())
            .append_pair("include_values", "true")
            .finish();
        let request = self
            .http
            .post(self.url(&[app_id, "subscriptions"]))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .bearer_auth(format!("{app_id}|{}", app_secret.expose()));
        let text = self.call(request).await?;
        let v: Value =
            serde_json::from_str(&text).map_err(|_| GraphError::from_response(200, &text, None))?;
        match &v["success"] {
            Value::Bool(true) => Ok(()),
            Value::String(s) if s == "true" => Ok(()),
            _ => Err(GraphError::from_response(200, &text, None)),
        }
    }

    /// `GET /me/accounts`: every Page the user manages (following Graph's pages of
    /// results, at most 1,000 Pages), each with its Page token and linked Instagram
    /// account.
    pub async fn managed_pages(&self, user_token: &Secret) -> Result<Vec<ManagedPage>, GraphError> {
        let mut url = self.url(&["me", "accounts"]);
        url.query_pairs_mut()
            .append_pair(
                "fields",
                "id,name,access_token,tasks,instagram_business_account{id,username}",
            )
            .append_pair("limit", "100");
        let mut pages = Vec::new();
        for _ in 0..10 {
            let request = self.http.get(url.clone()).bearer_auth(user_token.expose());
            let text = self.call(request).await?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|_| GraphError::from_response(200, &text, None))?;
            for page in v["data"].as_array().into_iter().flatten() {
                let (Some(id), Some(token)) = (page["id"].as_str(), page["access_token"].as_str())
                else {
                    continue;
                };
                let instagram = &page["instagram_business_account"];
                pages.push(ManagedPage {
                    id: id.to_owned(),
                    name: page["name"].as_str().unwrap_or_default().to_owned(),
                    token: Secret::new(token),
                    can_message: page["tasks"]
                        .as_array()
                        .is_none_or(|tasks| tasks.iter().any(|t| t == "MESSAGING")),
                    instagram: instagram["id"].as_str().map(|ig| {
                        (
                            ig.to_owned(),
                            instagram["username"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        )
                    }),
                });
            }
            // Only Graph's own next page, on Graph's own host.
            match v["paging"]["next"]
                .as_str()
                .and_then(|n| url::Url::parse(n).ok())
            {
                Some(next) if next.host() == url.host() => url = next,
                _ => break,
            }
        }
        Ok(pages)
    }
}
