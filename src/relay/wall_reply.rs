//! Where an agent's answer in a wall thread becomes a comment (or a private reply): the
//! target comment in the thread, a photo at most, the one private reply per comment.

use crate::config::{CommentReply, PageConfig};
use crate::facebook::feed::FeedChange;
use crate::facebook::graph::{AttachmentType, Download, MessagingType, Recipient, Send};
use crate::ids::ObjectId;
use crate::model::{ConversationKey, FeedKind, ItemKind};
use crate::relay::feed::{self, PrivateTo};
use crate::relay::messenger::OUR_METADATA;
use crate::relay::outcome::{Failure, Refusal};
use crate::relay::pauses::Feature;
use crate::relay::reply::OutboundReply;
use crate::relay::sending::*;
use crate::relay::{Live, Shared};
use crate::store::{Item, Write, now_ms};
use crate::time::duration_ms;

/// Facebook's limit for private replies: 7 days after the customer's post or comment.
const PRIVATE_REPLY_WINDOW_S: i64 = 7 * 24 * 3600;

/// Answers in a wall thread: a comment under the customer's latest comment (or on the
/// post), or, with `comment_reply = "private"`, a private Messenger reply to it.
pub(super) async fn send(
    shared: &Shared,
    live: &Live,
    page: &PageConfig,
    item: &Item,
    reply: &OutboundReply,
    post: &ObjectId,
) -> Result<Vec<String>, Failure> {
    let page_id = item.page_id.as_str();
    let page_ref = page.page_id();
    let transient = |e: crate::store::StoreError| Failure::transient(e.to_string());

    let file = fetch_agent_file(shared, live, page.receive_url.get_ref(), reply).await?;
    let text_is_file_name = file.as_ref().is_some_and(|f| f.is_named(&reply.text));
    let message = if text_is_file_name {
        ""
    } else {
        reply.text.trim()
    };

    // The customer's own objects in this thread, newest first.
    let events = shared
        .store
        .wall_thread(page_id.to_owned(), ConversationKey::post(post.as_str()))
        .await
        .map_err(transient)?;
    let mut comments = Vec::new();
    let mut post_created = None;
    for (kind, payload, _) in events {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&payload) else {
            continue;
        };
        let Ok(change) = FeedChange::parse(&value["value"]) else {
            continue;
        };
        if change.author_id() != Some(reply.recipient.as_str()) || change.verb != "add" {
            continue;
        }
        match kind {
            ItemKind::Feed(FeedKind::Comment) => comments.push(change),
            ItemKind::Feed(FeedKind::Post) => post_created = post_created.or(change.created_time()),
            _ => {}
        }
    }
    let target = feed::reply_target(post, &comments, post_created);
    let token = page.access_token.get_ref();

    let id = match page.comment_reply {
        CommentReply::Public => {
            let photo = match file {
                Some(f) if AttachmentType::of_mime(&f.content_type) == AttachmentType::Image => {
                    Some(Download::from(f))
                }
                Some(f) => {
                    return Err(Failure::refused(
                        Refusal::Policy,
                        format!(
                            "Not sent: a Facebook comment can carry a photo, not a {} file ({}). Send the file by Messenger instead.",
                            AttachmentType::of_mime(&f.content_type).as_str(),
                            f.name
                        ),
                    ));
                }
                None => None,
            };
            if message.is_empty() && photo.is_none() {
                return Err(Failure::refused(
                    Refusal::BadRequest,
                    "Not sent: the reply is empty.",
                ));
            }
            check_pause(shared, page_id, Feature::Comments)?;
            // Comments of a page go out at a pace: bursts are what Facebook throttles. On
            // a shared queue, one pace for every node that sends them.
            let slot = match shared.store.shared() {
                Some(_) => shared
                    .store
                    .comment_slot(page_id, duration_ms(page.comment_interval), now_ms())
                    .await
                    .map_err(|e| Failure::transient(e.to_string()))?,
                None => shared
                    .pauses
                    .comment_slot(page_id, page.comment_interval, now_ms()),
            };
            tokio::time::sleep(crate::time::until(slot, now_ms())).await;
            let id = live
                .graph
                .comment(token, &target.comment_on, message, photo)
                .await
                .map_err(|e| graph_failure(shared, page_id, Feature::Comments, "comment", e))?;
            shared.metrics.graph_call(page_id, "comment", "ok");
            feature_works(shared, page_id, Feature::Comments);
            id
        }
        CommentReply::Private => {
            let object = match &target.private_to {
                PrivateTo::Comment(id) | PrivateTo::Post(id) => id.clone(),
            };
            if file.is_some() && !message.is_empty() {
                return Err(Failure::refused(
                    Refusal::Policy,
                    "Not sent: a private reply is one single message; send either the text or the file.",
                ));
            }
            if let Some(created) = target.created_time
                && (now_ms() / 1000).saturating_sub(created) > PRIVATE_REPLY_WINDOW_S
            {
                return Err(Failure::refused(
                    Refusal::Policy,
                    "Not sent: Facebook allows a private reply only within 7 days of the customer's comment.",
                ));
            }
            first_private_reply(
                shared,
                page_id,
                object.as_str(),
                item,
                "Facebook",
                "on Messenger",
            )
            .await?;
            check_pause(shared, page_id, Feature::PrivateReplies)?;
            let recipient = match target.private_to {
                PrivateTo::Comment(id) => Recipient::CommentId(id),
                PrivateTo::Post(id) => Recipient::PostId(id),
            };
            let metadata = format!("{OUR_METADATA}{}", item.id);
            let send = Send {
                recipient,
                messaging_type: MessagingType::Response,
                metadata: Some(&metadata),
            };
            let sent = match file {
                Some(f) => send_agent_file(live, page, &send, f).await,
                None => live.graph.send_text(token, &page_ref, &send, message).await,
            };
            let id = sent
                .map_err(|e| graph_failure(shared, page_id, Feature::PrivateReplies, "send", e))?;
            shared.metrics.graph_call(page_id, "send", "ok");
            feature_works(shared, page_id, Feature::PrivateReplies);
            let write = Write::PrivateReply {
                page_id: page_id.to_owned(),
                object_id: object.to_string(),
                item: item.id,
                at: now_ms(),
            };
            shared.ledger.record(&shared.store, write).await;
            id
        }
    };
    record_sent(shared, page_id, &id, item.id).await;
    Ok(vec![id])
}
