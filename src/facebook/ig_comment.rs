//! A comment on one of an Instagram account's media, as its `comments` webhook gives it
//! (`object` "instagram", `changes[].field` "comments"): the comment's id and text, who
//! wrote it (Instagram-scoped id and username), the media it is on, and for a reply the
//! comment it answers. Source: developers.facebook.com → Instagram Platform → Webhooks →
//! Examples ("Comments payload") and the Graph webhooks reference for `instagram`
//! (`comments`: `from.id`, `from.username`, `media.id`, `media.media_product_type`,
//! `parent_id`, `text`).

use serde::Deserialize;
use serde_json::Value;

use super::ids::{FbId, ObjectId};

#[derive(Debug, Clone, Deserialize)]
pub struct InstagramComment {
    pub id: FbId,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub from: Option<Commenter>,
    pub media: CommentMedia,
    /// The comment this one answers, for a reply in a comment thread.
    #[serde(default)]
    pub parent_id: Option<FbId>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Commenter {
    pub id: FbId,
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommentMedia {
    pub id: FbId,
    /// FEED, REELS, STORY, AD…
    #[serde(default)]
    pub media_product_type: Option<String>,
}

impl InstagramComment {
    /// Reads a `comments` change's `value`; what does not fit says why.
    pub fn parse(value: &Value) -> Result<InstagramComment, String> {
        InstagramComment::deserialize(value)
            .map_err(|e| format!("an Instagram comment does not fit the model: {e}"))
    }

    pub fn author_id(&self) -> Option<&str> {
        self.from.as_ref().map(|f| f.id.0.as_str())
    }

    /// How Motion shows the commenter: their `@username` (comments carry no name, and
    /// Instagram gives a commenter's profile only after they wrote a direct message).
    pub fn author_name(&self) -> Option<String> {
        let username = self.from.as_ref()?.username.as_deref()?;
        (!username.is_empty()).then(|| format!("@{username}"))
    }

    pub fn text(&self) -> Option<&str> {
        self.text.as_deref().filter(|t| !t.trim().is_empty())
    }
}

/// The account @mentioned by another Instagram account (`changes[].field` "mentions"):
/// in the caption of their media (`media_id` alone) or in a comment (`comment_id` too).
/// The webhook carries ids only; the words are read from Graph when delivered. Source:
/// developers.facebook.com → Instagram Platform → Webhooks ("mentions", Facebook Login
/// examples) and Mentions.
#[derive(Debug, Clone)]
pub struct InstagramMention {
    pub media_id: ObjectId,
    pub comment_id: Option<ObjectId>,
}

impl InstagramMention {
    /// Reads a `mentions` change's `value`; ids that are not ids are refused here.
    pub fn parse(value: &Value) -> Result<InstagramMention, String> {
        #[derive(Deserialize)]
        struct Raw {
            media_id: ObjectId,
            #[serde(default)]
            comment_id: Option<ObjectId>,
        }
        let raw = Raw::deserialize(value)
            .map_err(|e| format!("an Instagram mention does not fit the model: {e}"))?;
        Ok(InstagramMention {
            media_id: raw.media_id,
            comment_id: raw.comment_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documented_mention_reads_and_a_forged_id_does_not() {
        let in_comment =
            serde_json::json!({"comment_id": "17894227972186120", "media_id": "17918195224117851"});
        let m = InstagramMention::parse(&in_comment).unwrap();
        assert_eq!(m.media_id.as_str(), "17918195224117851");
        assert_eq!(m.comment_id.unwrap().as_str(), "17894227972186120");
        let in_caption = serde_json::json!({"media_id": 17918195224117851u64});
        assert!(
            InstagramMention::parse(&in_caption)
                .unwrap()
                .comment_id
                .is_none()
        );
        let forged = serde_json::json!({"media_id": "../me/feed"});
        assert!(InstagramMention::parse(&forged).is_err());
    }

    #[test]
    fn a_documented_comment_reads_with_ids_as_strings_or_numbers() {
        let value = serde_json::json!({
            "id": "17865799348089039",
            "from": {"id": 1254001234567890u64, "username": "jane.doe"},
            "text": "Love this colour!",
            "media": {"id": "17887498072083520", "media_product_type": "FEED"},
            "parent_id": "17865799348000000"
        });
        let c = InstagramComment::parse(&value).unwrap();
        assert_eq!(c.id.0, "17865799348089039");
        assert_eq!(c.author_id(), Some("1254001234567890"));
        assert_eq!(c.author_name().as_deref(), Some("@jane.doe"));
        assert_eq!(c.media.id.0, "17887498072083520");
        assert_eq!(
            c.parent_id.map(|p| p.0).as_deref(),
            Some("17865799348000000")
        );
        let broken = InstagramComment::parse(&serde_json::json!({"id": "1", "text": "no media"}));
        assert!(broken.unwrap_err().contains("media"));
    }
}
