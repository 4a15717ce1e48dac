//! Instagram's calls: comment and mention replies, the account, its token, media.

use super::*;

impl GraphClient {
    /// Answers an Instagram comment in place (`POST /{ig-comment-id}/replies`, with the
    /// linked Page's token; needs instagram_manage_comments); returns the new comment's id.
    pub async fn reply_to_instagram_comment(
        &self,
        token: &Secret,
        comment_id: &ObjectId,
        message: &str,
    ) -> Result<String, GraphError> {
        let request = self
            .http
            .post(self.url(&[comment_id.as_str(), "replies"]))
            .json(&serde_json::json!({ "message": message }))
            .bearer_auth(token.expose());
        Self::comment_id(&self.call(request).await?)
    }

    /// `GET /me?fields=user_id,username` with an Instagram Login token (on
    /// graph.instagram.com): the professional account it belongs to, `(user_id,
    /// username)`. `user_id` is the id its webhooks carry (`id` is app-scoped).
    pub async fn instagram_me(&self, token: &Secret) -> Result<(String, String), GraphError> {
        let v = self.get_fields(token, "me", "user_id,username").await?;
        let id = match &v["user_id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(GraphError::from_response(200, &v.to_string(), None)),
        };
        Ok((id, v["username"].as_str().unwrap_or_default().to_owned()))
    }

    /// `GET /refresh_access_token?grant_type=ig_refresh_token&access_token=…` (on
    /// graph.instagram.com, unversioned): a long-lived Instagram Login token at least 24
    /// hours old becomes a new one valid 60 days; returns it and its lifetime. Never
    /// captured: both the request and the answer carry a token.
    pub async fn refresh_instagram_token(
        &self,
        token: &Secret,
    ) -> Result<(Secret, Duration), GraphError> {
        let mut url = self.root.clone();
        url.path_segments_mut()
            .expect("the base was checked to take path segments")
            .pop_if_empty()
            .push("refresh_access_token");
        let text = self
            .get_secretly(
                url,
                &[
                    ("grant_type", "ig_refresh_token"),
                    ("access_token", token.expose()),
                ],
            )
            .await?;
        #[derive(Deserialize)]
        struct Refreshed {
            access_token: String,
            expires_in: u64,
        }
        match serde_json::from_str::<Refreshed>(&text) {
            Ok(r) if !r.access_token.is_empty() => Ok((
                Secret::new(r.access_token),
                Duration::from_secs(r.expires_in),
            )),
            _ => {
                let mut e = GraphError::from_response(200, "", None);
                e.message =
                    "the token refresh answer has no access_token and expires_in".to_owned();
                e.disposition = Disposition::Retry;
                Err(e)
            }
        }
    }

    /// `GET /{ig-media-id}?fields=permalink`: the media's public page on Instagram, when
    /// Graph gives one that is one (https, on instagram.com).
    pub async fn instagram_permalink(
        &self,
        token: &Secret,
        media: &ObjectId,
    ) -> Result<Option<String>, GraphError> {
        let v = self.get_fields(token, media.as_str(), "permalink").await?;
        Ok(v["permalink"].as_str().and_then(instagram_link))
    }

    /// What an account's @mention says, read from Graph (`GET /{ig-user-id}?fields=
    /// mentioned_comment.comment_id(…){…}` or `mentioned_media.media_id(…){…}`): the
    /// webhook carries ids only.
    pub async fn instagram_mention(
        &self,
        token: &Secret,
        account: &InstagramId,
        media: &ObjectId,
        comment: Option<&ObjectId>,
    ) -> Result<Mentioned, GraphError> {
        // The ids are parsed ids (digits): nothing else can enter the field expression.
        let (edge, fields) = match comment {
            Some(c) => (
                "mentioned_comment",
                format!(
                    "mentioned_comment.comment_id({c}){{text,timestamp,media{{id,permalink}}}}"
                ),
            ),
            None => (
                "mentioned_media",
                // Only the edge's documented fields: one it does not have (permalink)
                // fails the whole call. The media's link is asked of the media itself.
                format!("mentioned_media.media_id({media}){{caption,username,media_type}}"),
            ),
        };
        let v = self.get_fields(token, account.as_str(), &fields).await?;
        let found = &v[edge];
        if !found.is_object() {
            return Err(GraphError::from_response(200, &v.to_string(), None));
        }
        let words = found["text"].as_str().or(found["caption"].as_str());
        let permalink = found["permalink"]
            .as_str()
            .or(found["media"]["permalink"].as_str())
            .and_then(instagram_link);
        Ok(Mentioned {
            text: words.map(str::to_owned),
            username: found["username"].as_str().map(str::to_owned),
            permalink,
        })
    }

    /// Answers an @mention (`POST /{ig-user-id}/mentions`: `media_id`, with `comment_id`
    /// for a mention in a comment, and `message`); returns the new comment's id.
    pub async fn reply_to_instagram_mention(
        &self,
        token: &Secret,
        account: &InstagramId,
        media: &ObjectId,
        comment: Option<&ObjectId>,
        message: &str,
    ) -> Result<String, GraphError> {
        let mut body = serde_json::json!({"media_id": media.as_str(), "message": message});
        if let Some(c) = comment {
            body["comment_id"] = c.as_str().into();
        }
        let request = self
            .http
            .post(self.url(&[account.as_str(), "mentions"]))
            .json(&body)
            .bearer_auth(token.expose());
        Self::comment_id(&self.call(request).await?)
    }

    /// The id of the comment a call created.
    pub(super) fn comment_id(text: &str) -> Result<String, GraphError> {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
            .ok_or_else(|| {
                let mut e = GraphError::from_response(200, text, None);
                e.message = format!("comment answer has no id: {}", http_client::snippet(text));
                e.disposition = Disposition::Retry;
                e
            })
    }
}
