//! Page feed changes (`entry[].changes[]` with `field: "feed"`): posts, comments and
//! reactions on the Page's wall.
//!
//! Two shapes of the author exist: `from {id, name}` and the older `sender_id` /
//! `sender_name`; both are read. Ids come as strings or numbers, times in seconds.
//! Source: <https://developers.facebook.com/docs/graph-api/webhooks/reference/page/#feed>
//! and the restfb fixtures in `tests/fixtures/facebook/`.

use serde::Deserialize;
use serde_json::Value;

use super::ids::FbId;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Author {
    #[serde(default)]
    pub id: Option<FbId>,
    #[serde(default)]
    pub name: Option<String>,
}

/// The `value` of a feed change.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct FeedChange {
    /// post, status, photo, video, share, comment, reaction, like, …
    #[serde(default)]
    pub item: String,
    /// add, edited, remove, hide, unhide, …
    #[serde(default)]
    pub verb: String,
    #[serde(default)]
    pub post_id: Option<FbId>,
    #[serde(default)]
    pub comment_id: Option<FbId>,
    /// The post for a top-level comment, the parent comment for a reply.
    #[serde(default)]
    pub parent_id: Option<FbId>,
    #[serde(default)]
    pub from: Option<Author>,
    #[serde(default)]
    pub sender_id: Option<FbId>,
    #[serde(default)]
    pub sender_name: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created_time: Option<Value>,
    /// A photo attached to a comment.
    #[serde(default)]
    pub photo: Option<String>,
    /// Photos of a status post.
    #[serde(default)]
    pub photos: Vec<String>,
    /// The photo or video of a photo/video post, or the shared link of a share.
    #[serde(default)]
    pub link: Option<String>,
    /// A video attached to a comment.
    #[serde(default)]
    pub video: Option<String>,
    /// A reaction's kind: like, love, haha, wow, sad, angry, care…
    #[serde(default)]
    pub reaction_type: Option<String>,
}

pub use crate::model::FeedKind;

impl FeedChange {
    pub fn parse(value: &Value) -> Result<FeedChange, String> {
        FeedChange::deserialize(value)
            .map_err(|e| format!("feed change does not fit the model: {e}"))
    }

    pub fn kind(&self) -> FeedKind {
        match self.item.as_str() {
            "post" | "status" | "photo" | "video" | "share" => FeedKind::Post,
            "comment" => FeedKind::Comment,
            "reaction" | "like" => FeedKind::Reaction,
            _ => FeedKind::Other,
        }
    }

    /// The author's id, from `from.id` or the legacy `sender_id`.
    pub fn author_id(&self) -> Option<&str> {
        self.from
            .as_ref()
            .and_then(|f| f.id.as_ref())
            .or(self.sender_id.as_ref())
            .map(|i| i.0.as_str())
    }

    /// The author's display name, from `from.name` or the legacy `sender_name`.
    pub fn author_name(&self) -> Option<&str> {
        self.from
            .as_ref()
            .and_then(|f| f.name.as_deref())
            .or(self.sender_name.as_deref())
    }

    pub fn post_id(&self) -> Option<&str> {
        self.post_id.as_ref().map(|i| i.0.as_str())
    }

    pub fn comment_id(&self) -> Option<&str> {
        self.comment_id.as_ref().map(|i| i.0.as_str())
    }

    pub fn parent_id(&self) -> Option<&str> {
        self.parent_id.as_ref().map(|i| i.0.as_str())
    }

    /// Seconds since the epoch, if given.
    pub fn created_time(&self) -> Option<i64> {
        match self.created_time.as_ref()? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Whether this comment answers another comment (Facebook nests one level).
    pub fn is_reply(&self) -> bool {
        self.kind() == FeedKind::Comment
            && self.parent_id().is_some()
            && self.parent_id() != self.post_id()
    }
}
