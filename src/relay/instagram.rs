//! Where an Instagram direct message becomes notify calls to Motion.
//!
//! Instagram's messaging webhooks have the Messenger Platform's shape (`object`
//! "instagram", `entry.id` the professional account), so the event is read by the same
//! parser; what differs is decided here, in two pure functions tested against the
//! fixtures:
//! - [`intake_state`]: what is delivered (the customer writing, unsending, tapping a
//!   button) and what is only recorded (echoes, reactions, receipts, referrals);
//! - [`plan`]: the steps an event becomes.
//!
//! Media are passed on as their links, never downloaded: Meta's policy for the
//! Instagram Messaging API forbids keeping the media customers send ("you must not
//! download, retain, or otherwise store on your system the media content … you must
//! only store the privacy-aware CDN URL", Messenger Platform → Instagram → Story
//! Mention, "Guidance on handling … Instagram CDN URLs"). The link stops working when the
//! customer deletes the media or it expires, as Instagram intends.

use crate::config::InstagramConfig;
use crate::facebook::graph::{Disposition, Mentioned};
use crate::facebook::ig_comment::{InstagramComment, InstagramMention};
use crate::facebook::webhook::{Item, Messaging, MessagingKind, Parsed};
use crate::ids::InstagramId;
use crate::relay::feed::Envelope;
use crate::relay::messenger::{self, Context, Step, labelled, quote};
use crate::relay::outcome::Failure;
use crate::relay::{Live, Shared};
use crate::store::NewState;

/// Note put before a message the account sent from the Instagram app or another tool.
pub const OUTSIDE_REPLY: &str = "[sent by the account outside Motion]";

/// Whether an Instagram item is queued for Motion, and if not, why: Messenger's rules
/// (standby customer messages forwarded, as a page does by default: losing them would be
/// worse), with Instagram's own cases.
pub fn intake_state(item: &Item, forward: messenger::Forward) -> NewState {
    let m = match &item.parsed {
        Ok(Parsed::Messaging(m)) => m,
        _ => unreachable!("only messaging items reach the Instagram decision"),
    };
    let skip = |why: &str| NewState::Skipped(why.to_owned());
    match m.kind() {
        // Something Instagram does not pass on: the agent is told it came.
        MessagingKind::Message if m.message.as_ref().is_some_and(|msg| msg.is_unsupported) => {
            NewState::Pending
        }
        // A tap-to-react on the account's story comes as a message with a
        // `reply_to.story` and nothing else.
        MessagingKind::Message => match messenger::intake_state(item, forward) {
            NewState::Skipped(_) => {
                skip("message without text or attachment (a reaction to a story?)")
            }
            state => state,
        },
        // Instagram echoes carry no metadata: our sent ids tell ours (see `intake`).
        MessagingKind::Echo => match messenger::intake_state(item, forward) {
            NewState::Skipped(_) => {
                skip("echo of a message the account sent (ours, or from another tool)")
            }
            state => state,
        },
        MessagingKind::Referral => {
            skip("referral: the customer opened the conversation from an ig.me link or an ad")
        }
        _ => messenger::intake_state(item, forward),
    }
}

/// The steps an Instagram event becomes, in order: the text (under the story or the
/// message it answers), then one line per attachment.
pub fn plan(m: &Messaging, context: &Context) -> Vec<Step> {
    let mut steps = Vec::new();
    match m.kind() {
        MessagingKind::Echo => {
            let mut as_message = m.clone();
            if let Some(msg) = as_message.message.as_mut() {
                msg.is_echo = false;
            }
            steps = plan(&as_message, context);
            messenger::outside_reply(&mut steps, OUTSIDE_REPLY);
        }
        MessagingKind::Reaction => steps.push(Step::Text(messenger::reaction_note(m, context))),
        MessagingKind::Message => {
            let msg = m.message.as_ref().expect("kind Message has a message");
            let text = msg
                .text
                .as_deref()
                .filter(|t| !t.trim().is_empty())
                .map(messenger::customer_text);
            let above = match &msg.reply_to {
                Some(r) if r.story.is_some() => Some(labelled(
                    "replied to your story",
                    r.story_url().unwrap_or_default(),
                )),
                Some(_) => Some(quote(context.referenced_text.as_deref())),
                None => None,
            };
            match (above, text) {
                (Some(above), Some(text)) => steps.push(Step::Text(format!("{above}\n{text}"))),
                (Some(above), None) if msg.attachments.is_empty() => steps.push(Step::Text(above)),
                (_, Some(text)) => steps.push(Step::Text(text.into_owned())),
                _ => {}
            }
            for a in &msg.attachments {
                let url = a.payload_url().or(a.url.as_deref()).unwrap_or_default();
                let title = a.title.as_deref().or(a.payload_title());
                let with_title = |label: &str| match title {
                    Some(t) if !t.trim().is_empty() => labelled(label, &format!("\"{t}\" {url}")),
                    _ => labelled(label, url),
                };
                // A customer's photo, video, voice message or file is moved into Motion
                // like Messenger's (Instagram's CDN links expire within days; an agent
                // reading the interaction next week still sees it). What is on a story
                // stays a link: Meta forbids keeping story media (Story Mention page).
                let kept = match a.kind.as_str() {
                    "image" => Some("photo"),
                    "video" => Some("video"),
                    "audio" => Some("voice message"),
                    "file" => Some("file"),
                    _ => None,
                };
                if let Some(label) = kept
                    && !url.is_empty()
                {
                    steps.push(Step::File {
                        url: url.to_owned(),
                        fallback: labelled(label, url),
                        label: None,
                    });
                    continue;
                }
                steps.push(Step::Text(match a.kind.as_str() {
                    "image" => labelled("photo", url),
                    "video" => labelled("video", url),
                    "audio" => labelled("voice message", url),
                    "file" => labelled("file", url),
                    "story_mention" => labelled("mentioned you in their story", url),
                    "share" | "ig_post" => with_title("shared a post"),
                    "ig_reel" | "reel" => with_title("shared a reel"),
                    "like_heart" => "[❤️]".to_owned(),
                    "unsupported_type" => {
                        "[sent something Instagram does not pass on to other apps: see it in the Instagram app]".to_owned()
                    }
                    "" => labelled("attachment", url),
                    other => labelled(other, url),
                }));
            }
            if steps.is_empty() && msg.is_unsupported {
                steps.push(Step::Text(
                    "[sent something Instagram does not pass on to other apps: see it in the Instagram app]".into(),
                ));
            }
        }
        MessagingKind::Deleted => steps.push(Step::Text(match &context.referenced_text {
            Some(text) => format!(
                "[the customer unsent a message]\n{}",
                quote(Some(text.as_str()))
            ),
            None => "[the customer unsent a message]".into(),
        })),
        // Edits and buttons read as on Messenger.
        MessagingKind::Edit | MessagingKind::Postback => steps = messenger::plan(m, context),
        _ => {}
    }
    steps
}

/// Whether a comment on the account's media is queued for Motion, and if not, why.
pub fn comment_state(comment: &InstagramComment, account: &InstagramConfig) -> NewState {
    let skip = |why: &str| NewState::Skipped(why.to_owned());
    if !account.comments {
        skip("comments = false for this Instagram account")
    } else if comment.author_id() == Some(account.id.get_ref().as_str()) {
        // The account's own comments (an agent's answer, or the account answering in the
        // Instagram app) never come back as the customer's words.
        skip("the account's own comment")
    } else if comment.text().is_none() {
        skip("comment without text")
    } else {
        NewState::Pending
    }
}

/// What a comment becomes: a notify in the media's thread (`threadId` = the media id),
/// from the commenter; a reply to another comment quotes it when it came through here.
pub fn comment_plan(comment: &InstagramComment, context: &Context) -> (Envelope, Vec<Step>) {
    let text = messenger::customer_text(comment.text().unwrap_or_default());
    let body = match &comment.parent_id {
        Some(_) => format!("{}\n{text}", quote(context.referenced_text.as_deref())),
        None => text.into_owned(),
    };
    let envelope = Envelope {
        from: comment.author_id().unwrap_or_default().to_owned(),
        first_name: comment.author_name(),
        last_name: Some(String::new()),
        thread_id: Some(comment.media.id.0.clone()),
        external_url: None,
    };
    (envelope, vec![Step::Text(body)])
}

/// How many media links are kept in memory before the cache starts over.
const MAX_PERMALINKS: usize = 10_000;

/// The public link of a media item (its thread's `externalUrl`), asked once per media
/// and kept in memory. `None` when Graph does not give it: the comment goes on without.
pub async fn permalink(
    shared: &Shared,
    live: &Live,
    account: &InstagramConfig,
    media: &str,
) -> Option<String> {
    if let Some(link) = shared.permalinks.lock().ok()?.get(media) {
        return Some(link.clone());
    }
    let media_id = crate::ids::ObjectId::parse(media).ok()?;
    let calls = super::instagram_login::calls(shared, live, account)
        .await
        .ok()?;
    match calls
        .graph
        .instagram_permalink(&calls.token, &media_id)
        .await
    {
        Ok(Some(link)) => {
            let mut links = shared.permalinks.lock().ok()?;
            if links.len() >= MAX_PERMALINKS {
                links.clear();
            }
            links.insert(media.to_owned(), link.clone());
            Some(link)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(instagram_id = %account.id.get_ref(), media, "no permalink for media {media}: {e}");
            None
        }
    }
}

/// What an @mention of the account becomes: a notify in a thread of its own per media
/// item (`threadId` = the media id, `externalUrl` = its page on Instagram), from that
/// media (the webhook names no person, and Graph names no commenter), with the words
/// Graph gives: `[mentioned you in a comment] …` or `[mentioned you in a post by @…] …`.
/// Words Graph will not give (the media went private, comments were turned off) still
/// make a notify, saying so: a mention is never dropped.
pub async fn mention_plan(
    shared: &Shared,
    live: &Live,
    account: &InstagramConfig,
    mention: &InstagramMention,
) -> Result<(Envelope, Vec<Step>), Failure> {
    let calls = super::instagram_login::calls(shared, live, account)
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    let id =
        InstagramId::parse(account.id.get_ref()).map_err(|e| Failure::permanent(e.to_string()))?;
    let found = calls
        .graph
        .instagram_mention(
            &calls.token,
            &id,
            &mention.media_id,
            mention.comment_id.as_ref(),
        )
        .await;
    let account_id = account.id.get_ref();
    let (label, mentioned) = match found {
        Ok(m) => {
            shared.metrics.graph_call(account_id, "mention", "ok");
            let label = match (&mention.comment_id, &m.username) {
                (Some(_), _) => "[mentioned you in a comment]".to_owned(),
                (None, Some(user)) => format!("[mentioned you in a post by @{user}]"),
                (None, None) => "[mentioned you in a post]".to_owned(),
            };
            (label, m)
        }
        Err(e) => {
            shared.metrics.graph_call(account_id, "mention", "error");
            match e.disposition {
                Disposition::Retry | Disposition::RetryBriefly | Disposition::SlowDown => {
                    return Err(Failure::transient(format!(
                        "cannot read the mention of Instagram account {account_id} on media {}: {e}",
                        mention.media_id
                    )));
                }
                _ => (
                    format!(
                        "[mentioned you on Instagram; Instagram does not show the words: {}]",
                        e.message
                    ),
                    Mentioned::default(),
                ),
            }
        }
    };
    // Mentioned Media gives no link (it is not one of its fields): the media's own, asked
    // once and kept, when Graph gives it.
    let mut mentioned = mentioned;
    if mentioned.permalink.is_none() && mention.comment_id.is_none() {
        mentioned.permalink = permalink(shared, live, account, &mention.media_id.to_string()).await;
    }
    let body = match mentioned.text.as_deref().filter(|t| !t.trim().is_empty()) {
        Some(words) => format!("{label} {}", messenger::customer_text(words)),
        None => label,
    };
    let envelope = Envelope {
        from: mention.media_id.to_string(),
        first_name: Some(match &mentioned.username {
            Some(user) => format!("@{user}"),
            None => "Instagram mention".to_owned(),
        }),
        last_name: Some(String::new()),
        thread_id: Some(mention.media_id.to_string()),
        external_url: mentioned.permalink,
    };
    Ok((envelope, vec![Step::Text(body)]))
}
