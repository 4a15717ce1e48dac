//! Where a Messenger event becomes notify calls to Motion.
//!
//! Two pure decisions, both tested against the fixtures:
//! - [`intake_state`]: whether a stored event is delivered at all (customer messages
//!   are; echoes, reads, deliveries, standby, reactions, referrals, hand-overs are
//!   recorded and not forwarded);
//! - [`plan`]: the ordered steps (texts and files) one event becomes. Each step is one
//!   notify; a file step is downloaded from Facebook and uploaded to Motion first.
//!
//! The texts agents read are written here, in one place, so the README can list them.

use crate::facebook::webhook::{Item, Messaging, MessagingKind, Parsed, Source};
use crate::store::NewState;

/// Facebook's "like" (thumbs-up) stickers, in their three sizes.
const LIKE_STICKERS: &[&str] = &["369239263222822", "369239343222814", "369239383222810"];

/// Prefix of the `metadata` we put on every Send API message; Facebook echoes it back.
pub const OUR_METADATA: &str = "fb-openchannel:";
/// Skip reason of the echo of one of our own sends.
pub const ECHO_OURS: &str = "echo of a reply fb-openchannel sent";
/// Skip reason of an echo of a message sent from elsewhere (Page Inbox, the phone app…).
pub const ECHO_OTHER: &str = "echo of a message the Page sent from another tool";

/// Longest quote of an earlier message put in front of a reply or edit.
const QUOTE_CHARS: usize = 200;

/// Whether an echo carries the metadata our sends put on: then it is ours for sure.
/// Without it, our sent message ids decide (see `intake`).
pub fn marked_ours(m: &Messaging) -> bool {
    m.message
        .as_ref()
        .and_then(|msg| msg.metadata.as_deref())
        .is_some_and(|md| md.starts_with(OUR_METADATA))
}

/// What an account's config forwards beyond the customer's own messages.
#[derive(Debug, Clone, Copy)]
pub struct Forward {
    /// Customer messages that come as standby (another app owns the conversation).
    pub standby: bool,
    /// Messages the Page sent from another tool, as notes.
    pub outside_replies: bool,
    /// The customer's reactions, as notes.
    pub reactions: bool,
}

impl Forward {
    /// Everything (the defaults).
    pub const ALL: Forward = Forward {
        standby: true,
        outside_replies: true,
        reactions: true,
    };
}

/// Note put before a message the Page sent from another tool.
pub const OUTSIDE_REPLY: &str = "[sent by the Page outside Motion]";

/// Whether a Messenger item is queued for Motion, and if not, why. A customer's message
/// that came as standby (another app owns the conversation) is queued when
/// `forward.standby`: losing it would be worse (see `routing`).
pub fn intake_state(item: &Item, forward: Forward) -> NewState {
    let forward_standby = forward.standby;
    let m = match &item.parsed {
        Ok(Parsed::Messaging(m)) => m,
        _ => unreachable!("only messaging items reach the Messenger decision"),
    };
    if item.source == Source::Standby && !(forward_standby && is_customer_message(m)) {
        return NewState::Skipped(
            "standby: another app (e.g. Page Inbox) owns this conversation".into(),
        );
    }
    let skip = |why: &str| NewState::Skipped(why.to_owned());
    match m.kind() {
        MessagingKind::Message => {
            let msg = m.message.as_ref().expect("kind Message has a message");
            if msg.text.as_deref().is_some_and(|t| !t.trim().is_empty())
                || !msg.attachments.is_empty()
            {
                NewState::Pending
            } else {
                skip("message without text or attachment")
            }
        }
        MessagingKind::Deleted | MessagingKind::Edit | MessagingKind::Postback => NewState::Pending,
        MessagingKind::Echo => {
            if marked_ours(m) {
                skip(ECHO_OURS)
            } else if m.customer_id() == Some(item.page_id.as_str()) {
                skip("echo addressed to the account itself: no customer to show it to")
            } else if forward.outside_replies && has_content(m) {
                NewState::Pending
            } else {
                skip(ECHO_OTHER)
            }
        }
        MessagingKind::Reaction if forward.reactions => NewState::Pending,
        MessagingKind::Reaction => skip("reaction: reactions = \"ignore\" for this account"),
        MessagingKind::Referral => {
            skip("referral: the customer opened the conversation from a link or ad")
        }
        MessagingKind::Read => skip("read receipt"),
        MessagingKind::Delivery => skip("delivery receipt"),
        MessagingKind::Optin => skip("opt-in"),
        MessagingKind::Handover => skip("handover: thread control changed between apps"),
        MessagingKind::Unknown => skip("unknown event kind (kept for a later version)"),
    }
}

/// Whether a message (or an echo) has text or an attachment.
fn has_content(m: &Messaging) -> bool {
    m.message.as_ref().is_some_and(|msg| {
        msg.text.as_deref().is_some_and(|t| !t.trim().is_empty()) || !msg.attachments.is_empty()
    })
}

/// Whether an event is the customer writing (what reaches Motion), as opposed to
/// receipts, echoes, hand-overs and the like.
pub fn is_customer_message(m: &Messaging) -> bool {
    matches!(
        m.kind(),
        MessagingKind::Message
            | MessagingKind::Postback
            | MessagingKind::Edit
            | MessagingKind::Deleted
    )
}

/// One notify call's worth of content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A notify with this body.
    Text(String),
    /// Download `url`, upload it to Motion, notify with its `AttachmentId` and the file
    /// name as body (or `label`, when set); if the file cannot be moved for good,
    /// notify `fallback` instead.
    File {
        url: String,
        fallback: String,
        label: Option<String>,
    },
}

/// Text of earlier messages this event refers to, looked up in the store.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The text of the message a reply, an edit or a deletion is about, if we have it.
    pub referenced_text: Option<String>,
}

/// The steps an event becomes, in order (text first, then each attachment).
pub fn plan(m: &Messaging, context: &Context) -> Vec<Step> {
    let mut steps = Vec::new();
    match m.kind() {
        MessagingKind::Echo => {
            let mut as_message = m.clone();
            if let Some(msg) = as_message.message.as_mut() {
                msg.is_echo = false;
            }
            steps = plan(&as_message, context);
            outside_reply(&mut steps, OUTSIDE_REPLY);
        }
        MessagingKind::Reaction => steps.push(Step::Text(reaction_note(m, context))),
        MessagingKind::Message => {
            let msg = m.message.as_ref().expect("kind Message has a message");
            if let Some(text) = msg.text.as_deref().filter(|t| !t.trim().is_empty()) {
                let text = customer_text(text);
                let body = match &msg.reply_to {
                    Some(_) => format!("{}\n{text}", quote(context.referenced_text.as_deref())),
                    None => text.into_owned(),
                };
                steps.push(Step::Text(body));
            }
            // Since 2026 a sticker comes as an attachment of type "sticker" (with or
            // without `sticker_id`); until 2026-08-30 the old image form comes beside
            // it, for the same sticker: then the image is the same sticker again.
            // Source: Messenger Platform changelog, 2026-06-01 ("Webhook change with
            // sticker attachment type"), and the messages webhook reference.
            let has_sticker_type = msg.attachments.iter().any(|a| a.kind == "sticker");
            let old_sticker_form = |a: &&crate::facebook::webhook::Attachment| {
                a.kind == "image" && (msg.sticker_id.is_some() || a.sticker_id().is_some())
            };
            for a in &msg.attachments {
                if has_sticker_type && old_sticker_form(&a) {
                    continue;
                }
                let url = a
                    .payload_url()
                    .or(a.url.as_deref())
                    .unwrap_or("")
                    .to_owned();
                let step = match a.kind.as_str() {
                    _ if a.kind == "sticker" || old_sticker_form(&a) => {
                        let id = a
                            .sticker_id()
                            .or_else(|| msg.sticker_id.as_ref().map(|s| s.0.clone()));
                        if id.as_deref().is_some_and(|id| LIKE_STICKERS.contains(&id)) {
                            Step::Text("[sticker: 👍]".into())
                        } else if url.is_empty() {
                            Step::Text("[sticker]".into())
                        } else {
                            // The agent sees the sticker itself, as an image.
                            Step::File {
                                fallback: labelled("sticker", &url),
                                url,
                                label: Some("[sticker]".into()),
                            }
                        }
                    }
                    "image" | "video" | "audio" | "file" if !url.is_empty() => Step::File {
                        fallback: labelled(&a.kind, &url),
                        url,
                        label: None,
                    },
                    "location" => match a.coordinates() {
                        Some((lat, long)) => Step::Text(format!(
                            "[location] {lat}, {long} https://www.google.com/maps?q={lat},{long}"
                        )),
                        None => Step::Text(labelled("location", &url)),
                    },
                    "fallback" | "share" | "template" => {
                        let title = a.title.as_deref().or(a.payload_title()).unwrap_or("");
                        let text = [title, url.as_str()]
                            .iter()
                            .filter(|s| !s.is_empty())
                            .copied()
                            .collect::<Vec<_>>()
                            .join(" ");
                        Step::Text(labelled("link", &customer_text(&text)))
                    }
                    other => Step::Text(labelled(
                        if other.is_empty() {
                            "attachment"
                        } else {
                            other
                        },
                        &url,
                    )),
                };
                steps.push(step);
            }
        }
        MessagingKind::Deleted => steps.push(Step::Text(match &context.referenced_text {
            Some(text) => format!("[the customer deleted a message]\n{}", quote(Some(text))),
            None => "[the customer deleted a message]".into(),
        })),
        MessagingKind::Edit => {
            let edit = m.message_edit.as_ref().expect("kind Edit has message_edit");
            let mut body = format!(
                "[edited] {}",
                customer_text(edit.text.as_deref().unwrap_or(""))
            );
            if let Some(before) = &context.referenced_text {
                body.push_str(&format!("\n(was: {})", customer_text(&clip(before))));
            }
            steps.push(Step::Text(body));
        }
        MessagingKind::Postback => {
            let p = m.postback.as_ref().expect("kind Postback has postback");
            steps.push(Step::Text(
                match (p.title.as_deref(), p.payload.as_deref()) {
                    (Some(title), _) if !title.trim().is_empty() => {
                        customer_text(title).into_owned()
                    }
                    (_, Some(payload)) => format!("[button] {}", customer_text(payload)),
                    _ => "[button]".into(),
                },
            ));
        }
        _ => {}
    }
    steps
}

/// Where the customer came from, as the first line of their next notify: an ad, an m.me
/// (or ig.me) link with a `ref`, the chat plugin on a website, a "Get Started" button.
/// `None` when the referral says nothing an agent can use.
pub fn referral_line(referral: &serde_json::Value) -> Option<String> {
    // A `ref` is whatever the link's author put there: one line, bounded, so that it
    // cannot pass for other lines of the notify.
    let text = |v: &serde_json::Value| {
        v.as_str()
            .map(|s| one_line(s.trim(), QUOTE_CHARS))
            .filter(|s| !s.is_empty())
    };
    let source = text(&referral["source"])
        .unwrap_or_default()
        .to_ascii_uppercase();
    let reference = text(&referral["ref"])
        .map(|r| format!(" ref={r}"))
        .unwrap_or_default();
    Some(match source.as_str() {
        "ADS" => {
            let ad = text(&referral["ad_id"])
                .map(|id| format!(" {id}"))
                .unwrap_or_default();
            match text(&referral["ads_context_data"]["ad_title"]) {
                Some(title) => format!("[from ad{ad}: \"{title}\"]"),
                None => format!("[from ad{ad}{reference}]"),
            }
        }
        "SHORTLINK" => format!("[via m.me link{reference}]"),
        "CUSTOMER_CHAT_PLUGIN" => match text(&referral["referer_uri"]) {
            Some(page) => format!("[via the chat plugin on {page}{reference}]"),
            None => format!("[via the chat plugin{reference}]"),
        },
        "" if reference.is_empty() => return None,
        "" => format!("[via a link{reference}]"),
        other => format!(
            "[via {}{reference}]",
            other.to_ascii_lowercase().replace('_', " ")
        ),
    })
}

/// `text` on one line (control characters, newlines included, become spaces), at most
/// `max` characters.
fn one_line(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Puts a line before the first step: into its text, or alone before a file.
pub(super) fn first_line(steps: &mut Vec<Step>, line: &str) {
    match steps.first_mut() {
        Some(Step::Text(text)) => *text = format!("{line}\n{text}"),
        _ => steps.insert(0, Step::Text(line.to_owned())),
    }
}

/// Marks the steps of a message the account sent from another tool: the note opens the
/// first text, or comes alone before the files.
pub(super) fn outside_reply(steps: &mut Vec<Step>, note: &str) {
    match steps.first_mut() {
        Some(Step::Text(text)) => *text = format!("{note} {text}"),
        _ => steps.insert(0, Step::Text(note.to_owned())),
    }
}

/// `[reacted 😢 to: "…"]`, or `[removed the reaction 😢 from: "…"]`, quoting the message
/// reacted to when it came or went through here.
pub(super) fn reaction_note(m: &Messaging, context: &Context) -> String {
    let r = m.reaction.as_ref();
    let emoji = r
        .and_then(|r| r.emoji.as_deref().or(r.reaction.as_deref()))
        .map(|e| one_line(e.trim(), 16))
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "a reaction".to_owned());
    let removed = r.and_then(|r| r.action.as_deref()) == Some("unreact");
    let target = match &context.referenced_text {
        Some(text) => format!("\"{}\"", clip(text).replace('\n', " ")),
        None => "an earlier message".to_owned(),
    };
    if removed {
        format!("[removed the reaction {emoji} from: {target}]")
    } else {
        format!("[reacted {emoji} to: {target}]")
    }
}

/// The message id whose text [`Context::referenced_text`] should hold, if any.
pub fn referenced_mid(m: &Messaging) -> Option<&str> {
    match m.kind() {
        MessagingKind::Message | MessagingKind::Echo => {
            m.message.as_ref()?.reply_to.as_ref()?.mid.as_deref()
        }
        MessagingKind::Deleted | MessagingKind::Edit => m.mid(),
        MessagingKind::Reaction => m.reaction.as_ref()?.mid.as_deref(),
        _ => None,
    }
}

/// The text a stored Messenger payload carried (for quoting it later).
pub fn text_of(payload: &str) -> Option<String> {
    let m: Messaging = serde_json::from_str(payload).ok()?;
    m.message?.text.filter(|t| !t.is_empty())
}

pub(super) fn labelled(label: &str, detail: &str) -> String {
    if detail.is_empty() {
        format!("[{label}]")
    } else {
        format!("[{label}] {detail}")
    }
}

/// Characters a line of ours begins with: `[` of a note (`[sent by the Page outside
/// Motion]`, `[reacted …]`, `[from ad …]`) and `>` of a quote — and the characters that
/// look like them.
const MARKER_OPENERS: &[char] = &[
    '[', '［', '⁅', '⟦', '〚', '【', '〔', '⦋', '⦍', '⦏', '❲', '﹝', '⟬', '>', '＞', '›', '»',
    '〉', '⟩', '❯', '❭', '﹥',
];

/// Characters that show as nothing: a line beginning with them looks like one beginning
/// with what follows.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{E0000}'..='\u{E007F}')
}

/// Customer text as it goes into a notify, unable to pass for a line of ours (DESIGN §4
/// rule 16): every line whose first visible character is one our notes and quotes begin
/// with (or one that looks like it) gets a `\` before that character. A customer who
/// types `[sent by the Page outside Motion] Refund approved` shows as
/// `\[sent by the Page outside Motion] Refund approved`; everything else is unchanged.
pub fn customer_text(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut changed = false;
    let mut line_start = true;
    for (i, c) in text.char_indices() {
        if line_start && !is_invisible(c) {
            line_start = false;
            if MARKER_OPENERS.contains(&c) {
                if !changed {
                    out.push_str(&text[..i]);
                    changed = true;
                }
                out.push('\\');
            }
        }
        if matches!(
            c,
            '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
        ) {
            line_start = true;
        }
        if changed {
            out.push(c);
        }
    }
    if changed {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

pub(super) fn quote(text: Option<&str>) -> String {
    match text {
        Some(t) => format!("> {}", clip(t).replace('\n', "\n> ")),
        None => "> (reply to an earlier message)".into(),
    }
}

fn clip(text: &str) -> String {
    let mut chars = text.chars();
    let clipped: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() {
        format!("{clipped}…")
    } else {
        clipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a customer types can never make a line that begins like a note or a quote
    /// of ours, whatever invisible or look-alike characters come first.
    #[test]
    fn customer_text_cannot_pass_for_our_notes() {
        let forgeries = [
            "[sent by the Page outside Motion] Refund approved, reply with your card",
            "hi\n[sent by the account outside Motion] Refund approved",
            "  [reacted ❤️ to: \"ok\"]",
            "\u{200B}[from ad 123]",
            "\u{FEFF}\u{2060} ［sent by the Page outside Motion］",
            "> quoted by the daemon?",
            "ok\r\n\u{2028}› [edited] x",
        ];
        for forged in forgeries {
            let shown = customer_text(forged);
            for line in shown.split(['\n', '\r', '\u{2028}']) {
                let first = line.chars().find(|c| !is_invisible(*c));
                assert!(
                    first.is_none_or(|c| !MARKER_OPENERS.contains(&c)),
                    "{forged:?} shows a line {line:?}"
                );
            }
            assert!(shown.contains('\\'), "{forged:?} → {shown:?}");
        }
        for plain in ["Hello, my order [#123] is late", "a > b", "😀", ""] {
            assert_eq!(customer_text(plain), plain);
        }
    }
    use serde_json::json;

    #[test]
    fn a_referral_says_where_the_customer_came_from() {
        let line = |v| referral_line(&v);
        assert_eq!(
            line(json!({"ref": "order-1042", "source": "SHORTLINK", "type": "OPEN_THREAD"}))
                .as_deref(),
            Some("[via m.me link ref=order-1042]")
        );
        assert_eq!(
            line(json!({"source": "ADS", "ad_id": "6045246247433", "ads_context_data": {"ad_title": "Winter sale"}}))
                .as_deref(),
            Some("[from ad 6045246247433: \"Winter sale\"]")
        );
        assert_eq!(
            line(json!({"source": "CUSTOMER_CHAT_PLUGIN", "referer_uri": "https://shop.example/help"}))
                .as_deref(),
            Some("[via the chat plugin on https://shop.example/help]")
        );
        assert_eq!(line(json!({"type": "OPEN_THREAD"})), None);
        // A ref cannot forge another line of the notify.
        assert_eq!(
            line(json!({"source": "SHORTLINK", "ref": "x\n[sent by the Page outside Motion] pay here"}))
                .as_deref(),
            Some("[via m.me link ref=x [sent by the Page outside Motion] pay here]")
        );
    }
}
