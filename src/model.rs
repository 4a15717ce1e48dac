//! The domain's words, one type each: the channel an item belongs to, what kind of item
//! it is, which way it goes, its state, and the two keys of the queue — the conversation
//! (items of one conversation are delivered one at a time, in order) and the dedup key
//! (the same event or the same agent reply is stored once).
//!
//! Each is parsed once where it comes in (a webhook, a Reply URL call, a row of the
//! database) and travels typed; every decision is a `match` on these types, never on
//! text. They are stored as the strings earlier releases wrote (`as_str`), so an existing
//! database opens unchanged; reading a string no release wrote is an error, not a guess.
//! This file depends on nothing else of the crate.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Where a conversation takes place. Instagram comments will be a variant of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The Page's Messenger inbox: one conversation per customer.
    Messenger,
    /// The Page's wall: one conversation per post.
    PageFeed,
    /// An Instagram professional account's direct messages: one conversation per
    /// customer.
    InstagramDirect,
    /// Comments on an Instagram account's media: one conversation per media item.
    InstagramComments,
}

/// Which way an item goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Facebook → Motion.
    Inbound,
    /// Motion → Facebook.
    Outbound,
}

/// What a messaging item is, decided from which of its fields are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessagingKind {
    Message,
    Echo,
    Deleted,
    Edit,
    Reaction,
    Postback,
    Referral,
    Read,
    Delivery,
    Optin,
    Handover,
    Unknown,
}

impl MessagingKind {
    pub const ALL: [MessagingKind; 12] = {
        use MessagingKind::*;
        [
            Message, Echo, Deleted, Edit, Reaction, Postback, Referral, Read, Delivery, Optin,
            Handover, Unknown,
        ]
    };
}

/// What a change of the Page's feed is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedKind {
    Post,
    Comment,
    Reaction,
    Other,
}

/// What an item of the queue is: decided once, when it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A Messenger event delivered to our app as the conversation's owner.
    Messaging(MessagingKind),
    /// A Messenger event delivered as `standby`: another app owns the conversation.
    Standby { echo: bool },
    /// An Instagram direct messaging event (the Messenger Platform's shape, `object`
    /// "instagram").
    Instagram(MessagingKind),
    /// A change of the Page's feed.
    Feed(FeedKind),
    /// A change of another field of the Page: recorded, never delivered.
    PageChange,
    /// A signed item that could not be read: kept as failed for an operator.
    Unparsed,
    /// An agent's answer on Messenger.
    Reply,
    /// An agent's answer on the wall (a comment).
    WallReply,
    /// An agent's answer in an Instagram direct conversation.
    InstagramReply,
    /// A comment on one of an Instagram account's media.
    InstagramComment,
    /// The account @mentioned in another account's caption or comment.
    InstagramMention,
    /// A note to the agents in the customer's interaction: a reply was not delivered.
    Note,
}

impl ItemKind {
    /// Every kind, for parsing and for tests.
    pub const ALL: [ItemKind; 38] = {
        use FeedKind as F;
        use ItemKind::*;
        const M: usize = MessagingKind::ALL.len();
        let mut all = [Note; 38];
        let mut i = 0;
        while i < M {
            all[i] = Messaging(MessagingKind::ALL[i]);
            all[M + i] = Instagram(MessagingKind::ALL[i]);
            i += 1;
        }
        let i = 2 * M;
        let rest = [
            Standby { echo: false },
            Standby { echo: true },
            Feed(F::Post),
            Feed(F::Comment),
            Feed(F::Reaction),
            Feed(F::Other),
            PageChange,
            Unparsed,
            Reply,
            WallReply,
            InstagramReply,
            InstagramComment,
            InstagramMention,
            Note,
        ];
        let mut j = 0;
        while j < rest.len() {
            all[i + j] = rest[j];
            j += 1;
        }
        all
    };

    /// The label stored in the database and shown in logs, metrics and `queue list`.
    pub fn as_str(self) -> &'static str {
        use MessagingKind as M;
        match self {
            ItemKind::Instagram(m) => match m {
                M::Message => "ig_message",
                M::Echo => "ig_echo",
                M::Deleted => "ig_deleted",
                M::Edit => "ig_edit",
                M::Reaction => "ig_reaction",
                M::Postback => "ig_postback",
                M::Referral => "ig_referral",
                M::Read => "ig_read",
                M::Delivery => "ig_delivery",
                M::Optin => "ig_optin",
                M::Handover => "ig_handover",
                M::Unknown => "ig_unknown",
            },
            ItemKind::Messaging(m) => match m {
                M::Message => "message",
                M::Echo => "echo",
                M::Deleted => "deleted",
                M::Edit => "edit",
                M::Reaction => "reaction",
                M::Postback => "postback",
                M::Referral => "referral",
                M::Read => "read",
                M::Delivery => "delivery",
                M::Optin => "optin",
                M::Handover => "handover",
                M::Unknown => "unknown",
            },
            ItemKind::Standby { echo: false } => "standby",
            ItemKind::Standby { echo: true } => "standby_echo",
            ItemKind::Feed(FeedKind::Post) => "wall_post",
            ItemKind::Feed(FeedKind::Comment) => "wall_comment",
            ItemKind::Feed(FeedKind::Reaction) => "wall_reaction",
            ItemKind::Feed(FeedKind::Other) => "wall_other",
            ItemKind::PageChange => "page_change",
            ItemKind::Unparsed => "unparsed",
            ItemKind::Reply => "reply",
            ItemKind::WallReply => "wall_reply",
            ItemKind::InstagramReply => "ig_reply",
            ItemKind::InstagramComment => "ig_comment",
            ItemKind::InstagramMention => "ig_mention",
            ItemKind::Note => "note",
        }
    }

    pub fn parse(text: &str) -> Option<ItemKind> {
        ItemKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// A referral: where a customer came from (an m.me link, an ad), on Messenger or
    /// Instagram.
    pub fn is_referral(self) -> bool {
        matches!(
            self,
            ItemKind::Messaging(MessagingKind::Referral)
                | ItemKind::Instagram(MessagingKind::Referral)
        )
    }

    /// A customer's turn in a conversation: a message or a button, on Messenger or
    /// Instagram (what a referral is told apart by, see `store::items::turn_sql!`).
    pub fn is_turn(self) -> bool {
        matches!(
            self,
            ItemKind::Messaging(MessagingKind::Message | MessagingKind::Postback)
                | ItemKind::Instagram(MessagingKind::Message | MessagingKind::Postback)
        )
    }

    /// The channel of the conversation the item belongs to; `None` for what belongs to
    /// none (a note follows its customer wherever they are; page changes, unreadable
    /// items).
    pub fn channel(self) -> Option<Channel> {
        match self {
            ItemKind::Messaging(_) | ItemKind::Standby { .. } | ItemKind::Reply => {
                Some(Channel::Messenger)
            }
            ItemKind::Feed(_) | ItemKind::WallReply => Some(Channel::PageFeed),
            ItemKind::Instagram(_) | ItemKind::InstagramReply => Some(Channel::InstagramDirect),
            ItemKind::InstagramComment | ItemKind::InstagramMention => {
                Some(Channel::InstagramComments)
            }
            ItemKind::PageChange | ItemKind::Unparsed | ItemKind::Note => None,
        }
    }

    /// Which way items of this kind go.
    pub fn direction(self) -> Direction {
        match self {
            ItemKind::Reply | ItemKind::WallReply | ItemKind::InstagramReply => Direction::Outbound,
            _ => Direction::Inbound,
        }
    }
}

/// Where a customer's name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameSource {
    /// Facebook told us (the user profile API).
    Graph,
    /// Made up from the id while Facebook does not tell (retried later).
    Fallback,
    /// A customer `fb-openchannel simulate` made up.
    Simulated,
}

impl NameSource {
    pub fn as_str(self) -> &'static str {
        match self {
            NameSource::Graph => "graph",
            NameSource::Fallback => "fallback",
            NameSource::Simulated => "simulated",
        }
    }

    pub fn parse(text: &str) -> Option<NameSource> {
        [
            NameSource::Graph,
            NameSource::Fallback,
            NameSource::Simulated,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Where an item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemState {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// Delivered.
    Done,
    /// Parked for an operator (`queue retry` sends it again).
    Failed,
    /// Recorded, deliberately not delivered.
    Skipped,
}

impl ItemState {
    pub const ALL: [ItemState; 4] = [
        ItemState::Pending,
        ItemState::Done,
        ItemState::Failed,
        ItemState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Done => "done",
            ItemState::Failed => "failed",
            ItemState::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<ItemState> {
        ItemState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "in",
            Direction::Outbound => "out",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        [Direction::Inbound, Direction::Outbound]
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

/// An id as it may appear inside a key: letters, digits, `_` and `-`, at most 64. Any
/// other text (a forged or broken event, kept as failed) becomes `invalid`: it reaches
/// no key, log or URL.
fn key_part(id: &str) -> &str {
    let fits = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if fits { id } else { "invalid" }
}

/// The conversation an item belongs to: one customer of one Page on Messenger
/// (`psid:<id>`), one post on the wall (`post:<id>`). Items of one conversation are
/// delivered one at a time, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey(String);

impl ConversationKey {
    /// A customer's Messenger conversation with the Page.
    pub fn customer(id: &str) -> ConversationKey {
        ConversationKey(format!("psid:{}", key_part(id)))
    }

    /// A customer's Instagram direct conversation with the account (by the customer's
    /// Instagram-scoped id).
    pub fn instagram_customer(id: &str) -> ConversationKey {
        ConversationKey(format!("igsid:{}", key_part(id)))
    }

    /// One media item of an Instagram account and every comment on it.
    pub fn instagram_media(id: &str) -> ConversationKey {
        ConversationKey(format!("igmedia:{}", key_part(id)))
    }

    /// A post of the Page's wall and every comment under it.
    pub fn post(id: &str) -> ConversationKey {
        ConversationKey(format!("post:{}", key_part(id)))
    }

    /// A feed change that names no post.
    pub fn unknown_post() -> ConversationKey {
        ConversationKey("post:unknown".into())
    }

    /// An item that could not be read.
    pub fn unparsed() -> ConversationKey {
        ConversationKey("unparsed".into())
    }

    /// The customer's id, when this is a conversation with one customer (Messenger or
    /// Instagram direct).
    pub fn customer_id(&self) -> Option<&str> {
        self.0
            .strip_prefix("psid:")
            .or_else(|| self.0.strip_prefix("igsid:"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key as stored by this or an earlier release.
    pub fn from_stored(text: String) -> ConversationKey {
        ConversationKey(text)
    }
}

/// What makes a redelivered event, or a repeated Reply URL call, the same item
/// (DESIGN §4 rule 3). Unique per page and direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey(String);

/// What a feed change's dedup key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedObject<'a> {
    Post(&'a str),
    Comment(&'a str),
}

impl DedupKey {
    /// A comment on an Instagram account's media, by its id.
    pub fn instagram_comment(id: &str) -> DedupKey {
        DedupKey(format!("igcomment:{id}"))
    }

    /// A mention of the account: in a comment (by its id) or in a caption (by the
    /// media's).
    pub fn instagram_mention(comment: Option<&str>, media: &str) -> DedupKey {
        match comment {
            Some(id) => DedupKey(format!("igmention:comment:{id}")),
            None => DedupKey(format!("igmention:media:{media}")),
        }
    }

    /// A Messenger message (or its echo) by Facebook's message id.
    pub fn message(mid: &str) -> DedupKey {
        DedupKey(format!("mid:{mid}"))
    }

    /// The deletion of a message.
    pub fn deleted(mid: &str) -> DedupKey {
        DedupKey(format!("deleted:{mid}"))
    }

    /// The `edits`-th edit of a message.
    pub fn edit(mid: &str, edits: i64) -> DedupKey {
        DedupKey(format!("edit:{mid}:{edits}"))
    }

    /// A postback, by the id Facebook gives it.
    pub fn postback(mid: &str) -> DedupKey {
        DedupKey(format!("postback:{mid}"))
    }

    /// A feed change: its object and verb, and for an edit a digest of the new text (a
    /// comment can be edited many times).
    pub fn feed(object: FeedObject<'_>, verb: &str, edit_digest: Option<&str>) -> DedupKey {
        let (what, id) = match object {
            FeedObject::Post(id) => ("post", id),
            FeedObject::Comment(id) => ("comment", id),
        };
        match edit_digest {
            Some(digest) => DedupKey(format!("{what}:{id}:{verb}:{digest}")),
            None => DedupKey(format!("{what}:{id}:{verb}")),
        }
    }

    /// An event without an id of its own: its kind and a digest of its JSON (a
    /// redelivery repeats the same JSON).
    pub fn digest(kind: ItemKind, digest: &str) -> DedupKey {
        DedupKey(format!("{}:{digest}", kind.as_str()))
    }

    /// An agent reply, by Motion's message id.
    pub fn motion_message(id: &str) -> DedupKey {
        DedupKey(format!("motion:{id}"))
    }

    /// An agent reply without Motion's message id: a digest of the call's exact bytes.
    pub fn reply_body(digest: &str) -> DedupKey {
        DedupKey(format!("body:{digest}"))
    }

    /// The note that tells the agents about the reply item `item`.
    pub fn note(item: i64) -> DedupKey {
        DedupKey(format!("note:{item}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key as stored by this or an earlier release.
    pub fn from_stored(text: String) -> DedupKey {
        DedupKey(text)
    }
}

/// Shown (logs, `queue list`), serialised (`--json`) and stored as their labels: the
/// strings earlier releases wrote before these were types.
macro_rules! text_label {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
    )*};
}
text_label!(
    ItemKind,
    ItemState,
    Direction,
    ConversationKey,
    DedupKey,
    NameSource
);

/// Read from their labels; a label no release wrote is an error naming the type.
macro_rules! sql_label {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$t>::parse(text).ok_or_else(|| {
                    FromSqlError::Other(
                        format!(
                            "{:?} is not a {} this release knows (a database of a newer release?)",
                            text,
                            stringify!($t)
                        )
                        .into(),
                    )
                })
            }
        }
    )*};
}
sql_label!(ItemKind, ItemState, Direction, NameSource);

impl FromSql for ConversationKey {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(ConversationKey::from_stored(value.as_str()?.to_owned()))
    }
}

impl FromSql for DedupKey {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(DedupKey::from_stored(value.as_str()?.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_reads_back_as_itself_and_labels_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for kind in ItemKind::ALL {
            assert_eq!(ItemKind::parse(kind.as_str()), Some(kind));
            assert!(seen.insert(kind.as_str()), "{kind} twice");
        }
        for state in ItemState::ALL {
            assert_eq!(ItemState::parse(state.as_str()), Some(state));
        }
        for source in [
            NameSource::Graph,
            NameSource::Fallback,
            NameSource::Simulated,
        ] {
            assert_eq!(NameSource::parse(source.as_str()), Some(source));
        }
        assert_eq!(ItemKind::parse("wall_"), None);
        assert_eq!(ItemState::parse("Pending"), None);
    }

    /// The labels earlier releases stored: a database they wrote opens unchanged.
    #[test]
    fn labels_are_those_earlier_releases_stored() {
        let labels: Vec<&str> = ItemKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            labels,
            [
                "message",
                "echo",
                "deleted",
                "edit",
                "reaction",
                "postback",
                "referral",
                "read",
                "delivery",
                "optin",
                "handover",
                "unknown",
                "ig_message",
                "ig_echo",
                "ig_deleted",
                "ig_edit",
                "ig_reaction",
                "ig_postback",
                "ig_referral",
                "ig_read",
                "ig_delivery",
                "ig_optin",
                "ig_handover",
                "ig_unknown",
                "standby",
                "standby_echo",
                "wall_post",
                "wall_comment",
                "wall_reaction",
                "wall_other",
                "page_change",
                "unparsed",
                "reply",
                "wall_reply",
                "ig_reply",
                "ig_comment",
                "ig_mention",
                "note"
            ]
        );
        assert_eq!(ConversationKey::customer("12").as_str(), "psid:12");
        assert_eq!(ConversationKey::post("1_2").as_str(), "post:1_2");
        assert_eq!(
            ConversationKey::instagram_customer("12").as_str(),
            "igsid:12"
        );
        assert_eq!(
            ConversationKey::instagram_customer("12").customer_id(),
            Some("12")
        );
        assert_eq!(DedupKey::message("m.1").as_str(), "mid:m.1");
        assert_eq!(DedupKey::edit("m", 2).as_str(), "edit:m:2");
        assert_eq!(
            DedupKey::feed(FeedObject::Comment("2_3"), "edited", Some("ab")).as_str(),
            "comment:2_3:edited:ab"
        );
        assert_eq!(DedupKey::note(7).as_str(), "note:7");
    }

    #[test]
    fn ids_that_are_not_ids_reach_no_key() {
        for id in ["", "../../me", "a b", &"9".repeat(65), "1/feed"] {
            assert_eq!(ConversationKey::customer(id).as_str(), "psid:invalid");
            assert_eq!(ConversationKey::post(id).as_str(), "post:invalid");
        }
        assert_eq!(
            ConversationKey::customer("fbo-simulated-1").customer_id(),
            Some("fbo-simulated-1")
        );
        assert_eq!(ConversationKey::post("1_2").customer_id(), None);
    }

    #[test]
    fn channels_and_directions_follow_the_kind() {
        for kind in ItemKind::ALL {
            let wall = kind.as_str().starts_with("wall_");
            let instagram = kind.as_str().starts_with("ig_");
            match kind.channel() {
                Some(Channel::PageFeed) => assert!(wall, "{kind}"),
                Some(Channel::Messenger) => assert!(!wall && !instagram, "{kind}"),
                Some(Channel::InstagramDirect | Channel::InstagramComments) => {
                    assert!(instagram, "{kind}")
                }
                None => {}
            }
        }
        assert_eq!(ItemKind::WallReply.direction(), Direction::Outbound);
        assert_eq!(ItemKind::Note.direction(), Direction::Inbound);
    }
}
