//! What we send to Graph and what it answers, as types.

use super::*;

/// Who a Send API message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A customer's page-scoped id.
    Psid(UserId),
    /// A private reply to a comment (once per comment, within 7 days).
    CommentId(ObjectId),
    /// A private reply to a visitor post (once per post, within 7 days).
    PostId(ObjectId),
}

impl Recipient {
    pub(super) fn to_json(&self) -> Value {
        match self {
            Recipient::Psid(id) => serde_json::json!({ "id": id }),
            Recipient::CommentId(id) => serde_json::json!({ "comment_id": id }),
            Recipient::PostId(id) => serde_json::json!({ "post_id": id }),
        }
    }
}

/// `messaging_type` of a send: inside the 24-hour window, or tagged as a human agent's
/// answer (up to 7 days, only where the Page has that permission).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagingType {
    Response,
    HumanAgent,
}

impl MessagingType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessagingType::Response => "RESPONSE",
            MessagingType::HumanAgent => "MESSAGE_TAG",
        }
    }
}

/// The envelope of one Send API call.
#[derive(Debug, Clone)]
pub struct Send<'a> {
    pub recipient: Recipient,
    pub messaging_type: MessagingType,
    /// Echoed back by Facebook in the echo of this message: how we recognise our own.
    /// Instagram documents no `metadata`: its sends carry none.
    pub metadata: Option<&'a str>,
}

/// An app installed on a Page, as `GET /{page}/subscribed_apps` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledApp {
    pub id: String,
    pub name: String,
    /// The webhook fields it receives for the Page.
    pub fields: Vec<String>,
}

/// A customer's name as Graph gives it: `first_name` and `last_name` for a Messenger
/// customer, a display `name` (may be unset) and `username` for an Instagram one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GraphProfile {
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

/// A link Graph gave for an Instagram media item, when it is one: https, on
/// instagram.com (anything else is not passed on to agents).
pub fn instagram_link(link: &str) -> Option<String> {
    let url = Url::parse(link).ok()?;
    (url.scheme() == "https"
        && url
            .host_str()
            .is_some_and(|h| h == "instagram.com" || h.ends_with(".instagram.com")))
    .then(|| url.into())
}

/// What Graph tells of an @mention of an Instagram account.
#[derive(Debug, Clone, Default)]
pub struct Mentioned {
    /// The comment's text, or the caption.
    pub text: Option<String>,
    /// Who posted the media (caption mentions; Graph names no commenter).
    pub username: Option<String>,
    pub permalink: Option<String>,
}

/// The Send API's attachment types, read from a file's MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentType {
    Image,
    Video,
    Audio,
    File,
}

impl AttachmentType {
    pub fn of_mime(content_type: &str) -> AttachmentType {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.split_once('/').map(|(top, _)| top) {
            Some("image") => AttachmentType::Image,
            Some("video") => AttachmentType::Video,
            Some("audio") => AttachmentType::Audio,
            _ => AttachmentType::File,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentType::Image => "image",
            AttachmentType::Video => "video",
            AttachmentType::Audio => "audio",
            AttachmentType::File => "file",
        }
    }
}
