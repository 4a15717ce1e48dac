//! Messages and comments: the Send API and the comment edges.

use super::*;

impl GraphClient {
    /// Sends a text with the Send API (`POST /{page_id}/messages`); returns the
    /// `message_id` Facebook gave it.
    pub async fn send_text(
        &self,
        token: &Secret,
        sender: &impl Sender,
        send: &Send<'_>,
        text: &str,
    ) -> Result<String, GraphError> {
        self.send_message(token, sender, send, serde_json::json!({"text": text}))
            .await
    }

    /// `POST /{sender}/messages` with this `message` as JSON (and the send's metadata).
    pub(super) async fn send_message(
        &self,
        token: &Secret,
        sender: &impl Sender,
        send: &Send<'_>,
        mut message: Value,
    ) -> Result<String, GraphError> {
        if let Some(metadata) = send.metadata {
            message["metadata"] = metadata.into();
        }
        let mut body = serde_json::json!({
            "recipient": send.recipient.to_json(),
            "messaging_type": send.messaging_type.as_str(),
            "message": message,
        });
        if let MessagingType::HumanAgent = send.messaging_type {
            body["tag"] = "HUMAN_AGENT".into();
        }
        let request = self
            .http
            .post(self.url(&[sender.as_segment(), "messages"]))
            .bearer_auth(token.expose())
            .json(&body);
        Self::message_id(&self.call(request).await?)
    }

    /// Sends a file with the Send API as multipart `filedata`; returns the `message_id`.
    pub async fn send_file(
        &self,
        token: &Secret,
        sender: &impl Sender,
        send: &Send<'_>,
        kind: AttachmentType,
        file: Download,
    ) -> Result<String, GraphError> {
        let message = serde_json::json!({
            "attachment": {"type": kind.as_str(), "payload": {"is_reusable": false}},
            "metadata": send.metadata,
        });
        let part = file_part(file)?;
        let mut form = reqwest::multipart::Form::new()
            .text("recipient", send.recipient.to_json().to_string())
            .text("messaging_type", send.messaging_type.as_str())
            .text("message", message.to_string())
            .part("filedata", part);
        if let MessagingType::HumanAgent = send.messaging_type {
            form = form.text("tag", "HUMAN_AGENT");
        }
        let request = self
            .http
            .post(self.url(&[sender.as_segment(), "messages"]))
            .bearer_auth(token.expose())
            .multipart(form);
        Self::message_id(&self.call(request).await?)
    }

    /// Sends a file Meta fetches from `url` (`message.attachment.payload.url`): how
    /// Instagram Login's Send API takes attachments. Returns the `message_id`.
    pub async fn send_file_url(
        &self,
        token: &Secret,
        sender: &impl Sender,
        send: &Send<'_>,
        kind: AttachmentType,
        url: &Url,
    ) -> Result<String, GraphError> {
        let message = serde_json::json!({
            "attachment": {"type": kind.as_str(), "payload": {"url": url.as_str()}},
        });
        self.send_message(token, sender, send, message).await
    }

    /// Comments on a post or comment (`POST /{object_id}/comments`), with an optional
    /// photo as multipart `source`; returns the new comment's id.
    pub async fn comment(
        &self,
        token: &Secret,
        object_id: &ObjectId,
        message: &str,
        photo: Option<Download>,
    ) -> Result<String, GraphError> {
        let url = self.url(&[object_id.as_str(), "comments"]);
        let request = match photo {
            None => self
                .http
                .post(url)
                .json(&serde_json::json!({ "message": message })),
            Some(file) => {
                let part = file_part(file)?;
                let mut form = reqwest::multipart::Form::new().part("source", part);
                if !message.is_empty() {
                    form = form.text("message", message.to_owned());
                }
                self.http.post(url).multipart(form)
            }
        };
        let text = self.call(request.bearer_auth(token.expose())).await?;
        Self::comment_id(&text)
    }
}
