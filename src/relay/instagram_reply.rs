//! Where an agent's answer in an Instagram direct conversation becomes Send API calls:
//! `POST /{linked page}/messages` on graph.facebook.com with the linked Page's token and
//! the customer's Instagram-scoped id (Instagram API with Facebook Login). Instagram's
//! own rules: a text is at most 1,000 bytes of UTF-8 (longer answers go as several
//! messages, cut at spaces), the same 24-hour window with `HUMAN_AGENT` up to 7 days.
//! Source: developers.facebook.com → Instagram Messaging → Send a Message.
//!
//! An answer in a media item's comment thread goes in place, as a reply to the
//! customer's latest comment there (`POST /{ig-comment-id}/replies`).
//!
//! Files, and private replies to comments, are not sent yet: the reply is refused with a
//! message the agent can act on.

use crate::config::{CommentReply, InstagramConfig, InstagramLogin, PageConfig};
use crate::facebook::graph::{Recipient, Send};
use crate::facebook::ids::ObjectId;
use crate::facebook::ids::UserId;
use crate::facebook::ig_comment::InstagramComment;
use crate::model::ItemKind;
use crate::relay::messenger_reply::{TextLimit, Window, may_send, split_text};
use crate::relay::outcome::{Failure, Refusal};
use crate::relay::pauses::Feature;
use crate::relay::reply::OutboundReply;
use crate::relay::sending::*;
use crate::relay::{Live, Shared};
use crate::store::Item;

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
    let InstagramLogin::Facebook { page } = live.config.instagram_login(account) else {
        return Err(Failure::refused(
            Refusal::Broken,
            "Not sent: Instagram Login accounts are not supported by this version.",
        ));
    };
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
    if let Some(media) = &reply.thread_id {
        return answer_comment(shared, live, account, page, item, reply, media).await;
    }
    let messaging_type = may_send(shared, item, Window::Instagram, account.human_agent_tag).await?;
    let pieces = split_text(&reply.text, MAX_TEXT);
    let send = Send {
        recipient: Recipient::Psid(igsid),
        messaging_type,
        metadata: None,
    };
    let (token, page_ref) = (page.access_token.get_ref(), page.page_id());
    let (send, page_ref) = (&send, &page_ref);
    send_each(shared, item, pieces, |text| async move {
        live.graph.send_text(token, page_ref, send, &text).await
    })
    .await
}

/// Answers in a media item's comment thread: in place, as a reply to the customer's
/// latest comment there (`comment_reply = "public"`). Private replies to Instagram
/// comments are not sent by this version.
async fn answer_comment(
    shared: &Shared,
    live: &Live,
    account: &InstagramConfig,
    page: &PageConfig,
    item: &Item,
    reply: &OutboundReply,
    media: &ObjectId,
) -> Result<Vec<String>, Failure> {
    if account.comment_reply == CommentReply::Private {
        return Err(Failure::refused(
            Refusal::Policy,
            "Not sent: this version of fb-openchannel does not send private replies to Instagram comments yet; set comment_reply = \"public\" for this account to answer in place.",
        ));
    }
    check_pause(shared, &item.page_id, Feature::Comments)?;
    let thread = shared
        .store
        .wall_thread(item.page_id.clone(), item.conversation.clone())
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    // Newest first: the customer's latest comment in this media's thread.
    let latest = thread.iter().find_map(|(kind, payload)| {
        let change: serde_json::Value = serde_json::from_str(payload).ok()?;
        let comment = InstagramComment::parse(&change["value"]).ok()?;
        (*kind == ItemKind::InstagramComment
            && comment.author_id() == Some(reply.recipient.as_str()))
        .then_some(comment)
    });
    let Some(comment) = latest else {
        return Err(Failure::refused(
            Refusal::Policy,
            format!(
                "Not sent: this customer has no comment fb-openchannel delivered in the thread of media {media}, so there is nothing to answer in place."
            ),
        ));
    };
    let comment_id = ObjectId::parse(&comment.id.0)
        .map_err(|e| Failure::refused(Refusal::Broken, format!("Not sent: {e}.")))?;
    let id = live
        .graph
        .reply_to_instagram_comment(page.access_token.get_ref(), &comment_id, &reply.text)
        .await
        .map_err(|e| graph_failure(shared, &item.page_id, Feature::Comments, "comment", e))?;
    shared.metrics.graph_call(&item.page_id, "comment", "ok");
    feature_works(shared, &item.page_id, Feature::Comments);
    Ok(vec![id])
}
