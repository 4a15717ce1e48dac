//! Where an agent's answer in an Instagram direct conversation becomes Send API calls:
//! `POST /{linked page}/messages` on graph.facebook.com with the linked Page's token
//! (Instagram API with Facebook Login), or `POST /{account}/messages` on
//! graph.instagram.com with the account's own token (Instagram Login; see
//! [`instagram_login`]), to the customer's Instagram-scoped id. Instagram's
//! own rules: a text is at most 1,000 bytes of UTF-8 (longer answers go as several
//! messages, cut at spaces), the same 24-hour window with `HUMAN_AGENT` up to 7 days.
//! Source: developers.facebook.com → Instagram Messaging → Send a Message.
//!
//! An answer in a media item's comment thread goes to the customer's latest comment
//! there: in place, or as a private reply (see [`answer_comment`]).
//!
//! Files are not sent yet: the reply is refused with a message the agent can act on.

use crate::config::{CommentReply, InstagramConfig};
use crate::facebook::graph::{MessagingType, Recipient, Send};
use crate::facebook::ids::ObjectId;
use crate::facebook::ids::UserId;
use crate::facebook::ig_comment::InstagramComment;
use crate::model::ItemKind;
use crate::relay::instagram_login::{self, Calls};
use crate::relay::messenger_reply::{TextLimit, Window, may_send, split_text};
use crate::relay::outcome::{Failure, Refusal};
use crate::relay::pauses::Feature;
use crate::relay::reply::OutboundReply;
use crate::relay::sending::*;
use crate::relay::{Live, Shared};
use crate::store::{Item, Write, now_ms};

/// Instagram's limit for a private reply: 7 days after the customer's comment.
const PRIVATE_REPLY_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// Instagram's limit for one text message: 1,000 bytes of UTF-8.
pub const MAX_TEXT: TextLimit = TextLimit::Bytes(1000);

/// Sends an agent's answer to the Instagram customer `igsid`; returns the message ids.
pub(super) async fn send(
    shared: &Shared,
    live: &Live,
    account: &InstagramConfig,
    item: &Item,
    reply: &OutboundReply,
    igsid: UserId,
) -> Result<Vec<String>, Failure> {
    if reply.attachment_id.is_some() {
        return Err(Failure::refused(
            Refusal::Policy,
            "Not sent: this version of fb-openchannel does not send files to Instagram yet. Send the text alone, or a link to the file.",
        ));
    }
    if reply.text.trim().is_empty() {
        return Err(Failure::refused(
            Refusal::BadRequest,
            "Not sent: the answer is empty.",
        ));
    }
    let calls = instagram_login::calls(shared, live, account)
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    if let Some(media) = &reply.thread_id {
        return answer_comment(shared, &calls, account, item, reply, media).await;
    }
    let messaging_type = may_send(shared, item, Window::Instagram, account.human_agent_tag).await?;
    let pieces = split_text(&reply.text, MAX_TEXT);
    let send = Send {
        recipient: Recipient::Psid(igsid),
        messaging_type,
        metadata: None,
    };
    let (send, calls) = (&send, &calls);
    send_each(shared, item, pieces, |text| async move {
        calls
            .graph
            .send_text(&calls.token, &calls.from, send, &text)
            .await
    })
    .await
}

/// Answers in a media item's comment thread, to the customer's latest comment there:
/// in place (`comment_reply = "public"`: `POST /{ig-comment-id}/replies`), or by a
/// private reply (`"private"`: a direct message to the commenter through the Send API,
/// `recipient.comment_id`; one per comment, within 7 days of it).
async fn answer_comment(
    shared: &Shared,
    calls: &Calls<'_>,
    account: &InstagramConfig,
    item: &Item,
    reply: &OutboundReply,
    media: &ObjectId,
) -> Result<Vec<String>, Failure> {
    let account_id = item.page_id.as_str();
    let transient = |e: crate::store::StoreError| Failure::transient(e.to_string());
    let thread = shared
        .store
        .wall_thread(account_id.to_owned(), item.conversation.clone())
        .await
        .map_err(transient)?;
    // Newest first: the customer's latest comment in this media's thread, and when it came.
    let latest = thread.iter().find_map(|(kind, payload, at)| {
        let change: serde_json::Value = serde_json::from_str(payload).ok()?;
        let comment = InstagramComment::parse(&change["value"]).ok()?;
        (*kind == ItemKind::InstagramComment
            && comment.author_id() == Some(reply.recipient.as_str()))
        .then_some((comment, *at))
    });
    let Some((comment, commented_at)) = latest else {
        return Err(Failure::refused(
            Refusal::Policy,
            format!(
                "Not sent: this customer has no comment fb-openchannel delivered in the thread of media {media}, so there is nothing to answer."
            ),
        ));
    };
    let comment_id = ObjectId::parse(&comment.id.0)
        .map_err(|e| Failure::refused(Refusal::Broken, format!("Not sent: {e}.")))?;
    let token = &calls.token;
    let id = match account.comment_reply {
        CommentReply::Public => {
            check_pause(shared, account_id, Feature::Comments)?;
            let id = calls
                .graph
                .reply_to_instagram_comment(token, &comment_id, &reply.text)
                .await
                .map_err(|e| graph_failure(shared, account_id, Feature::Comments, "comment", e))?;
            shared.metrics.graph_call(account_id, "comment", "ok");
            feature_works(shared, account_id, Feature::Comments);
            id
        }
        CommentReply::Private => {
            if now_ms().saturating_sub(commented_at) > PRIVATE_REPLY_WINDOW_MS {
                return Err(Failure::refused(
                    Refusal::Policy,
                    "Not sent: Instagram allows a private reply only within 7 days of the customer's comment.",
                ));
            }
            if let Some(owner) = shared
                .store
                .private_reply_owner(account_id.to_owned(), comment_id.to_string())
                .await
                .map_err(transient)?
                && owner != item.id
            {
                return Err(Failure::refused(
                    Refusal::Policy,
                    "Not sent: this comment already got its private reply, and Instagram allows only one. \
                     When the customer answers it, the conversation continues in their direct messages.",
                ));
            }
            check_pause(shared, account_id, Feature::PrivateReplies)?;
            let send = Send {
                recipient: Recipient::CommentId(comment_id.clone()),
                messaging_type: MessagingType::Response,
                metadata: None,
            };
            let id = calls
                .graph
                .send_text(token, &calls.from, &send, &reply.text)
                .await
                .map_err(|e| {
                    graph_failure(shared, account_id, Feature::PrivateReplies, "send", e)
                })?;
            shared.metrics.graph_call(account_id, "send", "ok");
            feature_works(shared, account_id, Feature::PrivateReplies);
            let write = Write::PrivateReply {
                page_id: account_id.to_owned(),
                object_id: comment_id.to_string(),
                item: item.id,
                at: now_ms(),
            };
            shared.ledger.record(&shared.store, write).await;
            id
        }
    };
    Ok(vec![id])
}
