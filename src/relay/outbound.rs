//! The outbound worker: takes each queued agent reply, checks what every reply needs
//! (the stored payload, a real customer, the page not paused) and hands it to
//! [`messenger_reply`] (a customer's Messenger conversation) or [`wall_reply`] (a wall
//! thread); [`outcome`] records what came of it, and a Reply URL call still waiting hears
//! it. A reply that fails after Motion's call was answered is told to the agents in the
//! customer's interaction ([`AgentNote`]).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info};

use crate::ids::ObjectId;
use crate::model::{DedupKey, ItemKind};
use crate::relay::outcome::{self, Delivered, Failure, Refusal, Settled};
use crate::relay::reply::{FirstAttempt, OutboundReply};
use crate::relay::{
    Account, Customer, Live, Shared, dispatch, instagram_reply, messenger_reply, wall_reply,
};
use crate::store::{Direction, Item, NewItem, NewState, now_ms};

/// Runs the outbound worker until `shutdown` turns true (see [`dispatch::run`]).
pub async fn run(shared: Arc<Shared>, shutdown: watch::Receiver<bool>, drain: Duration) {
    let wake = shared.clone();
    dispatch::run(
        shared,
        Direction::Outbound,
        move || wake.outbound_wake.clone().notified_owned(),
        shutdown,
        drain,
        |shared, item| async move { send(&shared, item).await },
    )
    .await
}

/// Sends one reply, records the outcome, and tells a waiting Reply URL call.
async fn send(shared: &Shared, item: Item) {
    let live = shared.live();
    if crate::relay::nodes::left_to_another_node(shared, &live, Direction::Outbound, &item) {
        return;
    }
    let result = match live.account(&item.page_id) {
        Some(account) => send_steps(shared, &live, account, &item).await,
        None => Err(Failure::refused(
            Refusal::UnknownPage,
            format!(
                "Not sent: account {} is no longer in fb-openchannel's config.",
                item.page_id
            ),
        )),
    };
    // A reply refused while the Page's conversations are routed to another app: say so.
    let note = if shared.routing.elsewhere(&item.page_id).is_some() {
        " — this Page's conversations are routed to another app (its customers' messages come as standby events), which may be why: see `fb-openchannel doctor`"
    } else {
        ""
    };
    let mut message_ids = Vec::new();
    let result = result.map(|ids| {
        shared.health.sent(&item.page_id);
        let delivered = Delivered {
            result: Some(serde_json::json!({ "message_ids": ids }).to_string()),
            summary: format!(
                "agent reply delivered to the customer ({} message{}: {})",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                ids.join(", ")
            ),
        };
        message_ids = ids;
        delivered
    });
    let first = match outcome::record(shared, &live, Direction::Outbound, &item, result, note).await
    {
        Settled::Delivered => FirstAttempt::Delivered { message_ids },
        Settled::Failed { cause, reason } => FirstAttempt::Failed {
            cause,
            message: reason,
        },
        Settled::Retry { reason, .. } => FirstAttempt::Queued {
            message: format!(
                "Queued: {reason}. It will be sent automatically when Facebook accepts it."
            ),
        },
    };
    let waiter = shared
        .reply_waiters
        .lock()
        .unwrap()
        .remove(&(item.page_id.clone(), item.dedup_key.clone()));
    match (waiter, first) {
        (Some(waiter), first) => {
            let _ = waiter.send(first);
        }
        // Motion's call was answered long ago (202, queued): the agent hears of the
        // failure in the conversation itself.
        (None, FirstAttempt::Failed { message, .. }) => tell_agent(shared, &item, &message).await,
        (None, _) => {}
    }
}

/// Puts a note into the customer's interaction in Motion saying that an agent's reply
/// was not delivered, and why: the only way to reach the agent once the Reply URL call
/// is over. It is an inbound item of its own (kind `note`), delivered in order with the
/// conversation, clearly marked so that nobody takes it for the customer's words.
async fn tell_agent(shared: &Shared, item: &Item, why: &str) {
    let Ok(reply) = serde_json::from_str::<OutboundReply>(&item.payload) else {
        return;
    };
    let mut quoted: String = reply.text.chars().take(80).collect();
    if reply.text.chars().count() > 80 {
        quoted.push('…');
    }
    let note = AgentNote {
        customer: reply.recipient.clone(),
        thread_id: reply.thread_id.clone(),
        text: format!(
            "[fb-openchannel] The reply \"{quoted}\" was NOT delivered to the customer. {why}"
        ),
    };
    let stored = shared
        .store
        .enqueue(NewItem {
            direction: Direction::Inbound,
            page_id: item.page_id.clone(),
            conversation: item.conversation.clone(),
            dedup_key: DedupKey::note(item.id),
            kind: ItemKind::Note,
            event_ts: now_ms(),
            payload: serde_json::to_string(&note).expect("a note serialises"),
            state: NewState::Pending,
        })
        .await;
    match stored {
        Ok(_) => shared.store.new_work(crate::store::Direction::Inbound),
        Err(e) => {
            error!(page_id = %item.page_id, conversation = %item.conversation, item = item.id, "cannot tell the agent in Motion that the reply failed ({e}); it is kept as failed: `fb-openchannel queue list --failed`")
        }
    }
}

/// A message to the agents in a customer's interaction (see [`tell_agent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNote {
    /// Whose interaction: the customer's id (a PSID, or a wall author's id).
    pub customer: String,
    /// The wall thread, for a reply in one.
    #[serde(default)]
    pub thread_id: Option<ObjectId>,
    pub text: String,
}

/// Sends the reply's remaining steps; returns the Graph message ids of all of them.
async fn send_steps(
    shared: &Shared,
    live: &Live,
    account: Account<'_>,
    item: &Item,
) -> Result<Vec<String>, Failure> {
    let reply: OutboundReply = serde_json::from_str(&item.payload).map_err(|e| {
        Failure::refused(Refusal::Broken, format!("stored reply does not parse: {e}"))
    })?;
    let customer = Customer::parse(&reply.recipient)
        .map_err(|e| Failure::refused(Refusal::BadRequest, format!("Not sent: {e}.")))?;
    if let Customer::Simulated(_) = customer {
        // `fb-openchannel simulate` made this customer up: acknowledge, never call Graph.
        info!(
            page_id = %item.page_id,
            conversation = %item.conversation,
            item = item.id,
            outcome = "simulated",
            "simulated delivery: the agent's reply to a simulated customer was accepted and not sent to Facebook"
        );
        return Ok(vec![format!("simulated-{}", item.id)]);
    }
    let page_id = item.page_id.as_str();
    if let Some(until) = shared.health.slowed_until(page_id, now_ms()) {
        return Err(Failure::Retry {
            reason: "Facebook rate-limited this page".into(),
            after: Some(crate::time::until(until, now_ms())),
            brief: false,
        });
    }

    let Customer::Facebook(id) = customer else {
        unreachable!("a simulated customer was answered above");
    };
    match (account, &reply.thread_id) {
        (Account::Instagram(account), _) => {
            instagram_reply::send(shared, live, account, item, &reply, id).await
        }
        (Account::Page(page), Some(post)) => {
            wall_reply::send(shared, live, page, item, &reply, post).await
        }
        (Account::Page(page), None) => {
            messenger_reply::send(shared, live, page, item, &reply, id).await
        }
    }
}
