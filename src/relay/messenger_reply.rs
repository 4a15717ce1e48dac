//! Messenger's sending rules, and where an agent reply becomes Send API calls: which
//! `messaging_type` the reply window allows ([`messaging_type`]), how a long text is
//! split ([`split_text`]), and the reply's steps (text chunks, then the file), with
//! progress stored after each so a retry never sends a chunk twice.

use tracing::debug;

use crate::config::PageConfig;
use crate::facebook::graph::{MessagingType, Recipient, Send};
use crate::facebook::ids::UserId;
use crate::motion::AgentFile;
use crate::relay::messenger::OUR_METADATA;
use crate::relay::outcome::{Failure, Refusal};
use crate::relay::pauses::Feature;
use crate::relay::reply::OutboundReply;
use crate::relay::sending::*;
use crate::relay::{Live, Shared};
use crate::store::{Item, Write, now_ms};

/// The Send API's limit for one text message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
const HOUR_MS: i64 = 3600 * 1000;
/// Standard messaging: replies within 24 hours of the customer's last message.
const WINDOW_MS: i64 = 24 * HOUR_MS;
/// The HUMAN_AGENT tag: a human's answer up to 7 days after it.
const HUMAN_AGENT_WINDOW_MS: i64 = 7 * 24 * HOUR_MS;

/// Which `messaging_type` a reply may use, from the time of the customer's last own
/// action (`None`: never seen, Facebook decides) — or why it may not be sent at all.
pub fn messaging_type(
    last_customer_ms: Option<i64>,
    now_ms: i64,
    human_agent_tag: bool,
) -> Result<MessagingType, String> {
    let Some(last) = last_customer_ms else {
        return Ok(MessagingType::Response);
    };
    let age = now_ms.saturating_sub(last);
    let ago = describe_age(age);
    if age < WINDOW_MS {
        Ok(MessagingType::Response)
    } else if age < HUMAN_AGENT_WINDOW_MS {
        if human_agent_tag {
            Ok(MessagingType::HumanAgent)
        } else {
            Err(format!(
                "Not sent: the customer last wrote {ago} ago, and Facebook only allows replies within 24 hours. \
                 To answer up to 7 days, the Page needs Facebook's Human Agent permission and human_agent_tag = true \
                 in this page's config; otherwise wait for the customer to write again."
            ))
        }
    } else {
        Err(format!(
            "Not sent: the customer last wrote {ago} ago; Facebook allows no reply after 7 days. \
             The customer has to write to the Page again first."
        ))
    }
}

fn describe_age(ms: i64) -> String {
    let hours = ms / HOUR_MS;
    if hours >= 48 {
        format!("{} days", hours / 24)
    } else {
        format!("{hours} h")
    }
}

/// Splits `text` into pieces of at most `max` characters, at whitespace where possible,
/// keeping every character (the pieces concatenate back to the text).
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max {
        // Byte offset just past the first `max` characters.
        let limit = rest
            .char_indices()
            .nth(max)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let head = &rest[..limit];
        // Cut after the last whitespace in the head, if that keeps a useful piece.
        let cut = head
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map(|(i, c)| i + c.len_utf8())
            .filter(|&i| i > limit / 2)
            .unwrap_or(limit);
        pieces.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

enum Step {
    Text(String),
    File(AgentFile),
}

/// Sends a Messenger reply to `psid`; returns the Graph message ids of all its steps.
pub(super) async fn send(
    shared: &Shared,
    live: &Live,
    page: &PageConfig,
    item: &Item,
    reply: &OutboundReply,
    psid: UserId,
) -> Result<Vec<String>, Failure> {
    let page_id = item.page_id.as_str();
    let page_ref = page.page_id();
    // Throttled by Facebook: queued without calling Graph.
    check_pause(shared, page_id, Feature::Messages)?;

    let last = shared
        .store
        .last_customer_activity(page_id.to_owned(), item.conversation.clone())
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    let messaging_type = messaging_type(last, now_ms(), page.human_agent_tag)
        .map_err(|reason| Failure::refused(Refusal::Policy, reason))?;

    let file = fetch_agent_file(live, page, reply).await?;
    // For a file, Motion puts its name in the body: that is not text to send.
    let text_is_file_name = file.as_ref().is_some_and(|f| f.is_named(&reply.text));
    let mut steps: Vec<Step> = Vec::new();
    if !text_is_file_name && !reply.text.trim().is_empty() {
        steps.extend(
            split_text(&reply.text, MAX_TEXT_CHARS)
                .into_iter()
                .map(Step::Text),
        );
    }
    if let Some(f) = file {
        steps.push(Step::File(f));
    }

    let metadata = format!("{OUR_METADATA}{}", item.id);
    let send = Send {
        recipient: Recipient::Psid(psid),
        messaging_type,
        metadata: &metadata,
    };
    let token = page.access_token.get_ref();
    let mut ids = previous_ids(shared, item).await?;
    let total = steps.len();
    for (index, step) in steps
        .into_iter()
        .enumerate()
        .skip(usize::try_from(item.steps_done).unwrap_or(0))
    {
        let sent = match step {
            Step::Text(text) => live.graph.send_text(token, &page_ref, &send, &text).await,
            Step::File(f) => send_agent_file(live, page, &send, f).await,
        };
        let message_id =
            sent.map_err(|e| graph_failure(shared, page_id, Feature::Messages, "send", e))?;
        shared.metrics.graph_call(page_id, "send", "ok");
        feature_works(shared, page_id, Feature::Messages);
        debug!(page_id, conversation = %item.conversation, item = item.id, message_id = %message_id, "Send API accepted step {}/{total}", index + 1);
        record_sent(shared, page_id, &message_id, item.id).await;
        ids.push(message_id);
        if index + 1 < total {
            let write = Write::Progress {
                item: item.id,
                steps_done: i64::try_from(index + 1).unwrap_or(i64::MAX),
                at: now_ms(),
            };
            shared.ledger.record(&shared.store, write).await;
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn reply_window() {
        let h = |hours: i64| Some(NOW - hours * HOUR_MS);
        // (last customer message, human_agent_tag, the messaging type chosen)
        let allowed = [
            (None, false, MessagingType::Response),
            (h(1), false, MessagingType::Response),
            (h(23), true, MessagingType::Response),
            (h(28), true, MessagingType::HumanAgent),
            (h(167), true, MessagingType::HumanAgent),
        ];
        for (last, tag, want) in allowed {
            assert_eq!(messaging_type(last, NOW, tag), Ok(want), "{last:?} {tag}");
        }
        // (last customer message, human_agent_tag, what the refusal must say)
        let refused = [
            (h(28), false, ["28 h ago", "human_agent_tag"]),
            (h(8 * 24), true, ["8 days ago", "after 7 days"]),
        ];
        for (last, tag, says) in refused {
            let why = messaging_type(last, NOW, tag).unwrap_err();
            assert!(says.iter().all(|s| why.contains(s)), "{why}");
        }
    }

    #[test]
    fn long_text_is_split_on_word_boundaries() {
        let words: Vec<String> = (0..900).map(|i| format!("w{i:03}")).collect();
        let text = words.join(" "); // 4499 characters
        let pieces = split_text(&text, MAX_TEXT_CHARS);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_TEXT_CHARS));
        assert_eq!(pieces.concat(), text, "nothing lost or added");
        for p in &pieces[..2] {
            assert!(
                p.ends_with(' '),
                "cut after a space: {:?}",
                &p[p.len() - 5..]
            );
        }
    }

    #[test]
    fn split_counts_characters_not_bytes_and_cuts_unbroken_text() {
        let text = "é".repeat(2500);
        let pieces = split_text(&text, MAX_TEXT_CHARS);
        assert_eq!(
            pieces.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [2000, 500]
        );
        assert_eq!(split_text("short", 2000), ["short"]);
        assert!(split_text("", 2000).is_empty());
    }
}
