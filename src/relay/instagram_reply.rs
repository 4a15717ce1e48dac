//! Where an agent's answer in an Instagram direct conversation becomes Send API calls:
//! `POST /{linked page}/messages` on graph.facebook.com with the linked Page's token and
//! the customer's Instagram-scoped id (Instagram API with Facebook Login). Instagram's
//! own rules: a text is at most 1,000 bytes of UTF-8 (longer answers go as several
//! messages, cut at spaces), the same 24-hour window with `HUMAN_AGENT` up to 7 days.
//! Source: developers.facebook.com → Instagram Messaging → Send a Message.
//!
//! Files are not sent yet: the reply is refused with a message the agent can act on.

use crate::config::{InstagramConfig, InstagramLogin};
use crate::facebook::graph::{Recipient, Send};
use crate::facebook::ids::UserId;
use crate::relay::messenger_reply::{TextLimit, Window, may_send, split_text};
use crate::relay::outcome::{Failure, Refusal};
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
    let messaging_type = may_send(shared, item, Window::Instagram, account.human_agent_tag).await?;
    if reply.text.trim().is_empty() {
        return Err(Failure::refused(
            Refusal::BadRequest,
            "Not sent: the answer is empty.",
        ));
    }
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
