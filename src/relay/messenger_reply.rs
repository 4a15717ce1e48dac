//! Messenger's sending rules, and where an agent reply becomes Send API calls: which
//! `messaging_type` the reply window allows ([`messaging_type`]), how a long text is
//! split ([`split_text`]), and the reply's steps (text chunks, then the file), with
//! progress stored after each so a retry never sends a chunk twice.

use crate::config::PageConfig;
use crate::facebook::graph::{MessagingType, Recipient, Send};
use crate::ids::UserId;
use crate::motion::AgentFile;
use crate::relay::messenger::OUR_METADATA;
use crate::relay::outcome::{Failure, Refusal};
use crate::relay::pauses::Feature;
use crate::relay::reply::OutboundReply;
use crate::relay::sending::*;
use crate::relay::{Live, Shared};
use crate::store::{Item, now_ms};

/// The Send API's limit for one Messenger text message.
pub const MAX_TEXT: TextLimit = TextLimit::Chars(2000);
const HOUR_MS: i64 = 3600 * 1000;
/// Standard messaging: replies within 24 hours of the customer's last message.
const WINDOW_MS: i64 = 24 * HOUR_MS;
/// The HUMAN_AGENT tag: a human's answer up to 7 days after it.
const HUMAN_AGENT_WINDOW_MS: i64 = 7 * 24 * HOUR_MS;

/// Whose reply window: the words a refusal uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// A Page's Messenger conversation.
    Messenger,
    /// An Instagram account's direct conversation (the same 24 hours and 7 days).
    Instagram,
}

/// Which `messaging_type` a reply may use, from the time of the customer's last own
/// action (`None`: never seen, Facebook decides) — or why it may not be sent at all.
pub fn messaging_type(
    window: Window,
    last_customer_ms: Option<i64>,
    now_ms: i64,
    human_agent_tag: bool,
) -> Result<MessagingType, String> {
    let (network, to, table) = match window {
        Window::Messenger => ("Facebook", "the Page", "this page's config"),
        Window::Instagram => (
            "Instagram",
            "the Instagram account",
            "this account's [[instagram]] table",
        ),
    };
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
                "Not sent: the customer last wrote {ago} ago, and {network} only allows replies within 24 hours. \
                 To answer up to 7 days, the Page needs Facebook's Human Agent permission and human_agent_tag = true \
                 in {table}; otherwise wait for the customer to write again."
            ))
        }
    } else {
        Err(format!(
            "Not sent: the customer last wrote {ago} ago; {network} allows no reply after 7 days. \
             The customer has to write to {to} again first."
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

/// How long one text message may be: Messenger counts characters, Instagram bytes of
/// UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLimit {
    Chars(usize),
    Bytes(usize),
}

impl TextLimit {
    /// Whether `text` fits in one message.
    pub fn fits(self, text: &str) -> bool {
        self.end(text) == text.len()
    }

    /// Byte offset just past the longest start of `text` within the limit.
    fn end(self, text: &str) -> usize {
        match self {
            TextLimit::Chars(max) => text.char_indices().nth(max).map_or(text.len(), |(i, _)| i),
            TextLimit::Bytes(max) if text.len() <= max => text.len(),
            TextLimit::Bytes(max) => (0..=max)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0),
        }
    }
}

/// Splits `text` into pieces within `limit`, at whitespace where possible, keeping every
/// character (the pieces concatenate back to the text).
pub fn split_text(text: &str, limit: TextLimit) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while limit.end(rest) < rest.len() {
        let limit = limit
            .end(rest)
            .max(rest.chars().next().map_or(1, char::len_utf8));
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

/// The texts a reply sends before its file, cut to `limit`: none when the text is only
/// the file's name (Motion puts it in the body of a message that carries a file).
pub(super) fn text_pieces(
    reply: &OutboundReply,
    file: Option<&AgentFile>,
    limit: TextLimit,
) -> Vec<String> {
    let text_is_file_name = file.is_some_and(|f| f.is_named(&reply.text));
    if text_is_file_name || reply.text.trim().is_empty() {
        return Vec::new();
    }
    split_text(&reply.text, limit)
}

/// Whether a reply in this conversation may go out now, and as which `messaging_type`:
/// not while Facebook throttles the account's messages (it waits, queued), and only in
/// the reply window from the customer's last own action.
pub(super) async fn may_send(
    shared: &Shared,
    item: &Item,
    window: Window,
    human_agent_tag: bool,
) -> Result<MessagingType, Failure> {
    check_pause(shared, &item.page_id, Feature::Messages)?;
    let last = shared
        .store
        .last_customer_activity(item.page_id.clone(), item.conversation.clone())
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    messaging_type(window, last, now_ms(), human_agent_tag)
        .map_err(|reason| Failure::refused(Refusal::Policy, reason))
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
    let page_ref = page.page_id();
    let messaging_type = may_send(shared, item, Window::Messenger, page.human_agent_tag).await?;

    let file = fetch_agent_file(shared, live, page.receive_url.get_ref(), reply).await?;
    let mut steps: Vec<Step> = text_pieces(reply, file.as_ref(), MAX_TEXT)
        .into_iter()
        .map(Step::Text)
        .collect();
    if let Some(f) = file {
        steps.push(Step::File(f));
    }

    let metadata = format!("{OUR_METADATA}{}", item.id);
    let send = Send {
        recipient: Recipient::Psid(psid),
        messaging_type,
        metadata: Some(&metadata),
    };
    let token = page.access_token.get_ref();
    let (send, page_ref) = (&send, &page_ref);
    send_each(shared, item, steps, |step| async move {
        match step {
            Step::Text(text) => live.graph.send_text(token, page_ref, send, &text).await,
            Step::File(f) => send_agent_file(live, page, send, f).await,
        }
    })
    .await
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
            assert_eq!(
                messaging_type(Window::Messenger, last, NOW, tag),
                Ok(want),
                "{last:?} {tag}"
            );
        }
        // (last customer message, human_agent_tag, what the refusal must say)
        let refused = [
            (h(28), false, ["28 h ago", "human_agent_tag"]),
            (h(8 * 24), true, ["8 days ago", "after 7 days"]),
        ];
        for (last, tag, says) in refused {
            let why = messaging_type(Window::Messenger, last, NOW, tag).unwrap_err();
            assert!(says.iter().all(|s| why.contains(s)), "{why}");
        }
    }

    #[test]
    fn long_text_is_split_on_word_boundaries() {
        let words: Vec<String> = (0..900).map(|i| format!("w{i:03}")).collect();
        let text = words.join(" "); // 4499 characters
        let pieces = split_text(&text, MAX_TEXT);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| MAX_TEXT.fits(p)));
        assert_eq!(pieces.concat(), text, "nothing lost or added");
        for p in &pieces[..2] {
            assert!(
                p.ends_with(' '),
                "cut after a space: {:?}",
                &p[p.len() - 5..]
            );
        }
    }

    /// Instagram counts bytes: 1,000 of UTF-8, never cutting a character.
    #[test]
    fn split_by_bytes_keeps_characters_whole() {
        let text = "né ".repeat(501); // 2,004 bytes, 1,503 characters
        let pieces = split_text(&text, TextLimit::Bytes(1000));
        assert_eq!(pieces.concat(), text);
        assert!(
            pieces.iter().all(|p| p.len() <= 1000),
            "{:?}",
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        assert_eq!(pieces.len(), 3);
        assert!(
            pieces[..2].iter().all(|p| p.ends_with(' ')),
            "cut at spaces, not mid-word"
        );
        let emoji = "😀".repeat(300); // 1,200 bytes, no space
        let pieces = split_text(&emoji, TextLimit::Bytes(1000));
        assert_eq!(
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [1000, 200]
        );
    }

    #[test]
    fn split_counts_characters_not_bytes_and_cuts_unbroken_text() {
        let text = "é".repeat(2500);
        let pieces = split_text(&text, MAX_TEXT);
        assert_eq!(
            pieces.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [2000, 500]
        );
        assert_eq!(split_text("short", MAX_TEXT), ["short"]);
        assert!(split_text("", MAX_TEXT).is_empty());
    }
}
