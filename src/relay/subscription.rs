//! The Page's webhook subscription to this app: what it must include, and the daemon's
//! periodic check that re-subscribes a Page Facebook dropped (it unsubscribes apps whose
//! webhook failed for about an hour).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::PageConfig;
use crate::facebook::graph::{GraphClient, GraphError};
use crate::relay::Shared;

/// Fields every page needs for Messenger.
pub const MESSENGER_FIELDS: &[&str] = &[
    "messages",
    "messaging_postbacks",
    "message_edits",
    "message_reactions",
];
/// Asked for too: lets the daemon tell its own sends from the Page's other tools.
pub const EXTRA_FIELDS: &[&str] = &["message_echoes"];

/// The fields a page must be subscribed to.
pub fn required_fields(page: &PageConfig) -> Vec<&'static str> {
    let mut fields = MESSENGER_FIELDS.to_vec();
    if page.wall_posts {
        fields.push("feed");
    }
    fields
}

/// The fields `subscribe` asks for.
pub fn requested_fields(page: &PageConfig) -> Vec<&'static str> {
    let mut fields = required_fields(page);
    fields.extend_from_slice(EXTRA_FIELDS);
    fields
}

/// Required fields missing from `have`.
pub fn missing<'a>(required: &[&'a str], have: &[String]) -> Vec<&'a str> {
    required
        .iter()
        .copied()
        .filter(|f| !have.iter().any(|h| h == f))
        .collect()
}

/// What [`ensure`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    AlreadySubscribed,
    /// These required fields were missing; the page was subscribed again.
    Resubscribed(Vec<String>),
}

/// Checks a page's subscription and subscribes it again when fields are missing.
pub async fn ensure(graph: &GraphClient, page: &PageConfig) -> Result<Ensured, GraphError> {
    let token = page.access_token.get_ref();
    let id = page.page_id();
    let have = graph.subscribed_fields(token, &id).await?;
    let gone = missing(&required_fields(page), &have);
    if gone.is_empty() {
        return Ok(Ensured::AlreadySubscribed);
    }
    graph.subscribe(token, &id, &requested_fields(page)).await?;
    Ok(Ensured::Resubscribed(
        gone.iter().map(|s| s.to_string()).collect(),
    ))
}

/// Checks every page's subscription every `facebook.subscription_check` (0 turns it off)
/// until `shutdown` turns true.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let every = shared.live().config.facebook.subscription_check;
        if every.is_zero() {
            // Off: look again after a while, in case a reload turns it on.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => continue,
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let live = shared.live();
        for page in &live.config.pages {
            let id = page.id.get_ref();
            match ensure(&live.graph, page).await {
                Ok(Ensured::AlreadySubscribed) => {}
                Ok(Ensured::Resubscribed(fields)) => warn!(
                    page_id = %id,
                    "Facebook had dropped the webhook subscription of page {id} (missing: {}); subscribed it again. \
                     Facebook does this after about an hour of failed webhooks: check that the public listener was reachable",
                    fields.join(", ")
                ),
                Err(e) => {
                    error!(page_id = %id, "cannot check the webhook subscription of page {id}: {e}")
                }
            }
        }
        info!(
            pages = live.config.pages.len(),
            "webhook subscriptions checked"
        );
    }
}
