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
//! Files go in the same Send API call (multipart `filedata`, as Messenger's) when they are
//! what Instagram takes (see [`instagram_accepts`]); Instagram Login takes them by public
//! URL alone: the file is offered on the public listener for the time of the call (see
//! [`crate::relay::public_files`]).

use crate::config::{CommentReply, InstagramConfig};
use crate::facebook::graph::{AttachmentType, Download, MessagingType, Recipient, Send};
use crate::facebook::ig_comment::{InstagramComment, InstagramMention};
use crate::ids::InstagramId;
use crate::ids::ObjectId;
use crate::ids::UserId;
use crate::model::ItemKind;
use crate::motion::AgentFile;
use crate::relay::instagram_login::{self, Calls, From};
use crate::relay::messenger_reply::{TextLimit, Window, may_send, text_pieces};
use crate::relay::outcome::{Failure, Refusal};
use crate::relay::pauses::Feature;
use crate::relay::reply::OutboundReply;
use crate::relay::sending::*;
use crate::relay::{Live, Shared};
use crate::store::{Item, Write, now_ms};

/// Instagram's limit for a private reply: 7 days after the customer's comment.
const PRIVATE_REPLY_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// Instagram's limit for one text message: 1,000 bytes of UTF-8.
pub const MAX_TEXT: TextLimit = TextLimit::Bytes(super::reply::MAX_PRIVATE_REPLY_BYTES);

/// Sends an agent's answer to the Instagram customer `igsid`; returns the message ids.
pub(super) async fn send(
    shared: &Shared,
    live: &Live,
    account: &InstagramConfig,
    item: &Item,
    reply: &OutboundReply,
    igsid: UserId,
) -> Result<Vec<String>, Failure> {
    let calls = instagram_login::calls(shared, live, account)
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    if reply.attachment_id.is_some() {
        if reply.thread_id.is_some() {
            return Err(Failure::refused(
                Refusal::Policy,
                "Not sent: an answer to an Instagram comment can only be text. Send the text alone, or a link to the file.",
            ));
        }
        if let (From::Account(_), None) = (&calls.from, live.config.public_base()) {
            return Err(Failure::refused(
                Refusal::Policy,
                "Not sent: Instagram Login takes files only by a public link, and this fb-openchannel does not know its public address: an administrator must set public.name (or public.url) in its config. Send the text alone, or a link to the file.",
            ));
        }
    } else if reply.text.trim().is_empty() {
        return Err(Failure::refused(
            Refusal::BadRequest,
            "Not sent: the answer is empty.",
        ));
    }
    if let Some(media) = &reply.thread_id {
        return answer_comment(shared, &calls, account, item, reply, media).await;
    }
    let messaging_type = may_send(shared, item, Window::Instagram, account.human_agent_tag).await?;
    let file = fetch_agent_file(shared, live, account.receive_url.get_ref(), reply).await?;
    let file = match file {
        Some(f) => Some(
            instagram_accepts(&f)
                .map(|kind| (kind, f))
                .map_err(|reason| {
                    Failure::refused(Refusal::Policy, format!("Not sent: {reason}"))
                })?,
        ),
        None => None,
    };
    let mut steps: Vec<Step> = text_pieces(reply, file.as_ref().map(|(_, f)| f), MAX_TEXT)
        .into_iter()
        .map(Step::Text)
        .collect();
    if let Some((kind, f)) = file {
        steps.push(Step::File(kind, f));
    }
    let send = Send {
        recipient: Recipient::Psid(igsid),
        messaging_type,
        metadata: None,
    };
    let (send, calls) = (&send, &calls);
    send_each(shared, item, steps, |step| async move {
        match step {
            Step::Text(text) => {
                calls
                    .graph
                    .send_text(&calls.token, &calls.from, send, &text)
                    .await
            }
            Step::File(kind, f) => match &calls.from {
                From::Page(_) => {
                    calls
                        .graph
                        .send_file(&calls.token, &calls.from, send, kind, Download::from(f))
                        .await
                }
                From::Account(_) => send_by_link(shared, live, calls, send, kind, f).await,
            },
        }
    })
    .await
}

/// Answers the latest @mention of the account on `media`: a comment under the
/// mentioning comment, or under the media for a mention in its caption.
async fn answer_mention(
    shared: &Shared,
    calls: &Calls<'_>,
    account: &InstagramConfig,
    thread: &[(ItemKind, String, i64)],
    media: &ObjectId,
    text: &str,
) -> Result<String, Failure> {
    let account_id = account.id.get_ref();
    let latest = thread.iter().find_map(|(kind, payload, _)| {
        let change: serde_json::Value = serde_json::from_str(payload).ok()?;
        (*kind == ItemKind::InstagramMention)
            .then(|| InstagramMention::parse(&change["value"]).ok())
            .flatten()
    });
    let Some(mention) = latest else {
        return Err(Failure::refused(
            Refusal::Policy,
            format!(
                "Not sent: fb-openchannel delivered no mention of this account on media {media}, so there is nothing to answer."
            ),
        ));
    };
    check_pause(shared, account_id, Feature::Comments)?;
    let id = InstagramId::parse(account_id)
        .map_err(|e| Failure::refused(Refusal::Broken, e.to_string()))?;
    let created = calls
        .graph
        .reply_to_instagram_mention(
            &calls.token,
            &id,
            &mention.media_id,
            mention.comment_id.as_ref(),
            text,
        )
        .await
        .map_err(|e| graph_failure(shared, account_id, Feature::Comments, "comment", e))?;
    shared.metrics.graph_call(account_id, "comment", "ok");
    feature_works(shared, account_id, Feature::Comments);
    Ok(created)
}

enum Step {
    Text(String),
    File(AttachmentType, AgentFile),
}

/// Instagram Login: the file is offered on the public listener for the time of the call
/// (Meta fetches it while the Send API call runs), then withdrawn.
async fn send_by_link(
    shared: &Shared,
    live: &Live,
    calls: &Calls<'_>,
    send: &Send<'_>,
    kind: AttachmentType,
    file: AgentFile,
) -> Result<String, crate::facebook::graph::GraphError> {
    use crate::facebook::graph::GraphError;
    let mut url = live
        .config
        .public_base()
        .ok_or_else(|| GraphError::network("public.name is not set".into()))?;
    let token = shared
        .public_files
        .offer(&file.content_type, file.bytes)
        .map_err(GraphError::network)?;
    url.path_segments_mut()
        .map_err(|()| GraphError::network("public.url cannot take a path".into()))?
        .pop_if_empty()
        .extend(["files", token.as_str(), file.name.as_str()]);
    let sent = calls
        .graph
        .send_file_url(&calls.token, &calls.from, send, kind, &url)
        .await;
    shared.public_files.withdraw(&token);
    sent
}

/// Images Instagram takes in a message, and their largest size (Meta: Instagram
/// Messaging → Upload Media / Send a Message: PNG, JPEG, GIF up to 8 MB).
const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif"];
const MAX_IMAGE_BYTES: usize = 8 * 1024 * 1024;
/// Videos, audio and documents: up to 25 MB.
const VIDEO_TYPES: &[&str] = &[
    "video/mp4",
    "video/ogg",
    "video/x-msvideo",
    "video/avi",
    "video/quicktime",
    "video/webm",
];
const AUDIO_TYPES: &[&str] = &[
    "audio/aac",
    "audio/mp4",
    "audio/m4a",
    "audio/x-m4a",
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
    "audio/vnd.wave",
];
const FILE_TYPES: &[&str] = &["application/pdf"];

/// How Instagram takes this file, or why it does not (what the agent reads).
pub fn instagram_accepts(file: &AgentFile) -> Result<AttachmentType, String> {
    let mime = file
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let size = file.bytes.len();
    let mb = |n: usize| format!("{:.1} MB", n as f64 / 1_048_576.0);
    let kind = if IMAGE_TYPES.contains(&mime.as_str()) {
        if size > MAX_IMAGE_BYTES {
            return Err(format!(
                "Instagram takes images up to 8 MB; {} is {}. Send a smaller image, or a link to it.",
                file.name,
                mb(size)
            ));
        }
        AttachmentType::Image
    } else if VIDEO_TYPES.contains(&mime.as_str()) {
        AttachmentType::Video
    } else if AUDIO_TYPES.contains(&mime.as_str()) {
        AttachmentType::Audio
    } else if FILE_TYPES.contains(&mime.as_str()) {
        AttachmentType::File
    } else {
        return Err(format!(
            "Instagram does not take {} files ({}) in messages: only images (PNG, JPEG, GIF), videos (MP4, OGG, AVI, MOV, WebM), audio (AAC, M4A, WAV) and PDF documents. Send a link to the file instead.",
            if mime.is_empty() {
                "untyped"
            } else {
                mime.as_str()
            },
            file.name
        ));
    };
    Ok(kind)
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
    // A mention thread's contact is the media itself: the answer goes to the latest
    // mention there (`POST /{ig-user-id}/mentions`).
    if reply.recipient.as_str() == media.as_str() {
        return answer_mention(shared, calls, account, &thread, media, &reply.text)
            .await
            .map(|id| vec![id]);
    }
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
            first_private_reply(
                shared,
                account_id,
                comment_id.as_str(),
                item,
                "Instagram",
                "in their direct messages",
            )
            .await?;
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
            // Its echo comes back as a direct message of the account: ours, not one sent
            // from the Instagram app (Instagram echoes carry no metadata).
            record_sent(shared, account_id, &id, item.id).await;
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
