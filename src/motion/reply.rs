//! The body Motion POSTs to the Reply URL when an agent sends a message.
//!
//! Read leniently (DESIGN §3): everything is optional except `body`; ids may be numbers
//! or strings; unknown fields are ignored. The recipient is `Contact.<map key>` (the
//! account's map key: `facebook` unless configured), else `contact.<map key>`, else
//! `Contact.facebook` / `contact.facebook`, else `to`.

use serde_json::Value;

use super::AttachmentId;
use crate::ids::ObjectId;

/// What we take from Motion's reply body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The agent's text; for a file, often just the file name.
    pub body: String,
    /// The customer's PSID (or wall author id) the reply goes to.
    pub recipient: Option<String>,
    /// Set for a wall-post interaction: the post the conversation is about.
    pub thread_id: Option<ObjectId>,
    /// Set when the agent sent a file, stored in Motion's attachments.
    pub attachment_id: Option<AttachmentId>,
    /// Motion's message id: what makes a repeated call the same reply.
    pub message_id: Option<String>,
    /// For logs: Motion's interaction ids.
    pub interaction_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the JSON has no \"body\" text")]
    NoBody,
    #[error("\"AttachmentId\" is not a Motion attachment id (an integer)")]
    BadAttachmentId,
    #[error("\"Interaction.threadId\" is not a Facebook post id")]
    BadThreadId,
}

/// An id or text that may come as a JSON string or number; empty and null are absent.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn parse(bytes: &[u8], map_key: &str) -> Result<Reply, ReplyError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ReplyError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(ReplyError::NotJson("expected a JSON object".into()));
    }
    let body = match v.get("body") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ReplyError::NoBody),
    };
    // Ids that go into URLs are parsed here, once; anything else is refused.
    let attachment_id = match v.get("AttachmentId") {
        None | Some(Value::Null) => None,
        Some(id) => Some(AttachmentId::from_json(id).ok_or(ReplyError::BadAttachmentId)?),
    };
    let thread_id = match text(v.pointer("/Interaction/threadId")) {
        None => None,
        Some(id) => Some(ObjectId::parse(&id).map_err(|_| ReplyError::BadThreadId)?),
    };
    if body.trim().is_empty() && attachment_id.is_none() {
        return Err(ReplyError::NoBody);
    }
    let contact_field = |contact: &str, key: &str| text(v.get(contact).and_then(|c| c.get(key)));
    let recipient = contact_field("Contact", map_key)
        .or_else(|| contact_field("contact", map_key))
        .or_else(|| contact_field("Contact", "facebook"))
        .or_else(|| contact_field("contact", "facebook"))
        .or_else(|| text(v.get("to")));
    Ok(Reply {
        body,
        recipient,
        thread_id,
        attachment_id,
        message_id: text(v.get("id")),
        interaction_id: text(v.get("OpenchannelInteractionId"))
            .or_else(|| text(v.pointer("/Interaction/id"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typical_motion_reply() {
        let r = parse(
            br#"{"id":5521,"body":"Hello Ada","direction":"out","read":true,"AttachmentId":null,
                 "OpenchannelAccountId":7,"OpenchannelInteractionId":311,"UserId":2,
                 "Contact":{"id":17,"firstName":"Ada","facebook":"987654321432"},
                 "Interaction":{"id":311,"threadId":null},"createdAt":"2026-11-25T10:00:00.000Z"}"#,
            "facebook",
        )
        .unwrap();
        assert_eq!(r.body, "Hello Ada");
        assert_eq!(r.recipient.as_deref(), Some("987654321432"));
        assert_eq!(r.message_id.as_deref(), Some("5521"));
        assert_eq!(r.interaction_id.as_deref(), Some("311"));
        assert_eq!(r.thread_id, None);
        assert_eq!(r.attachment_id, None);
    }

    #[test]
    fn recipient_fallbacks_and_numeric_ids() {
        let r = parse(br#"{"body":"x","contact":{"facebook":123}}"#, "facebook").unwrap();
        assert_eq!(r.recipient.as_deref(), Some("123"));
        let r = parse(br#"{"body":"x","to":"456"}"#, "facebook").unwrap();
        assert_eq!(r.recipient.as_deref(), Some("456"));
        let r = parse(
            br#"{"body":"x","Contact":{"facebook":""},"to":"789"}"#,
            "facebook",
        )
        .unwrap();
        assert_eq!(r.recipient.as_deref(), Some("789"));
        let r = parse(
            br#"{"body":"photo.jpg","AttachmentId":42,"Interaction":{"threadId":"1_2"}}"#,
            "facebook",
        )
        .unwrap();
        assert_eq!(r.attachment_id, Some(AttachmentId(42)));
        assert_eq!(r.thread_id.as_ref().map(ObjectId::as_str), Some("1_2"));
    }

    /// An account whose map key is not `facebook` names its customer in that field.
    #[test]
    fn the_accounts_map_key_names_the_customer() {
        let body = br#"{"body":"x","Contact":{"facebook":null,"cf_7":"555111222"}}"#;
        assert_eq!(
            parse(body, "cf_7").unwrap().recipient.as_deref(),
            Some("555111222")
        );
        assert_eq!(parse(body, "facebook").unwrap().recipient, None);
        let body = br#"{"body":"x","contact":{"cf_7":4242}}"#;
        assert_eq!(
            parse(body, "cf_7").unwrap().recipient.as_deref(),
            Some("4242")
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            parse(b"not json", "facebook"),
            Err(ReplyError::NotJson(_))
        ));
        assert!(matches!(
            parse(b"[1]", "facebook"),
            Err(ReplyError::NotJson(_))
        ));
        assert_eq!(
            parse(br#"{"text":"x"}"#, "facebook"),
            Err(ReplyError::NoBody)
        );
        assert_eq!(
            parse(br#"{"body":42}"#, "facebook"),
            Err(ReplyError::NoBody)
        );
        assert_eq!(
            parse(br#"{"body":"  "}"#, "facebook"),
            Err(ReplyError::NoBody)
        );
    }

    /// Ids from Motion go into URLs: anything that is not one is refused here.
    #[test]
    fn injected_ids_are_refused() {
        assert_eq!(
            parse(
                br#"{"body":"x","AttachmentId":"../../api/users?x="}"#,
                "facebook"
            ),
            Err(ReplyError::BadAttachmentId)
        );
        assert_eq!(
            parse(br#"{"body":"x","AttachmentId":{"id":1}}"#, "facebook"),
            Err(ReplyError::BadAttachmentId)
        );
        assert_eq!(
            parse(
                br#"{"body":"x","Interaction":{"threadId":"1234567890/feed#"}}"#,
                "facebook"
            ),
            Err(ReplyError::BadThreadId)
        );
        let r = parse(
            br#"{"body":"x","AttachmentId":null,"Interaction":{"threadId":null}}"#,
            "facebook",
        )
        .unwrap();
        assert_eq!((r.attachment_id, r.thread_id), (None, None));
    }
}
