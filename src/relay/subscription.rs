//! The Page's webhook subscription to this app: what it must include, and the daemon's
//! periodic check that re-subscribes a Page Facebook dropped (it unsubscribes apps whose
//! webhook failed for about an hour).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Config, PageConfig};
use crate::facebook::graph::{GraphClient, GraphError, InstalledApp};
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

/// The fields an Instagram Login account is subscribed to (on graph.instagram.com,
/// `POST /{account}/subscribed_apps`). Facebook Login accounts get theirs through the
/// linked Page and the app's Instagram webhook product.
pub fn instagram_fields(account: &crate::config::InstagramConfig) -> Vec<&'static str> {
    let mut fields = vec![
        "messages",
        "messaging_postbacks",
        "message_reactions",
        "messaging_referral",
    ];
    if account.comments {
        fields.push("comments");
    }
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

/// Whose subscription counts: our app's id, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurApp {
    pub id: String,
    /// The app's name when Graph told it (the id was found from the token).
    pub found_from_token: Option<String>,
}

/// Our app: `facebook.app_id`, else the app the page's token was issued for.
pub async fn our_app(
    graph: &GraphClient,
    config: &Config,
    page: &PageConfig,
) -> Result<OurApp, GraphError> {
    match &config.facebook.app_id {
        Some(id) => Ok(OurApp {
            id: id.get_ref().clone(),
            found_from_token: None,
        }),
        None => {
            let (id, name) = graph.token_app(page.access_token.get_ref()).await?;
            Ok(OurApp {
                id,
                found_from_token: Some(name),
            })
        }
    }
}

/// The apps installed on a page, split into ours and the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Our app's entry: `None` when our app is not subscribed at all.
    pub ours: Option<InstalledApp>,
    pub others: Vec<InstalledApp>,
}

impl Installed {
    pub fn split(apps: Vec<InstalledApp>, our_id: &str) -> Installed {
        let (ours, others): (Vec<_>, Vec<_>) = apps.into_iter().partition(|a| a.id == our_id);
        Installed {
            ours: ours.into_iter().next(),
            others,
        }
    }

    /// The fields our app receives (none when it is not subscribed).
    pub fn our_fields(&self) -> &[String] {
        self.ours.as_ref().map_or(&[], |a| a.fields.as_slice())
    }

    /// Other apps that receive the Page's Messenger messages too: they compete for the
    /// same conversations (a leftover Motion Cloud app).
    pub fn competitors(&self) -> Vec<&InstalledApp> {
        self.others
            .iter()
            .filter(|a| a.fields.iter().any(|f| f == "messages"))
            .collect()
    }
}

/// What [`ensure`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    AlreadySubscribed,
    /// These required fields were missing; the page was subscribed again.
    Resubscribed(Vec<String>),
}

/// Checks our app's subscription to a page — its entry only, whatever other apps are
/// installed — and subscribes it again when fields are missing.
pub async fn ensure(
    graph: &GraphClient,
    config: &Config,
    page: &PageConfig,
) -> Result<(Ensured, Installed), GraphError> {
    let token = page.access_token.get_ref();
    let id = page.page_id();
    let app = our_app(graph, config, page).await?;
    let installed = Installed::split(graph.installed_apps(token, &id).await?, &app.id);
    let gone = missing(&required_fields(page), installed.our_fields());
    if gone.is_empty() {
        return Ok((Ensured::AlreadySubscribed, installed));
    }
    graph.subscribe(token, &id, &requested_fields(page)).await?;
    Ok((
        Ensured::Resubscribed(gone.iter().map(|s| s.to_string()).collect()),
        installed,
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
                _ = shared.subscription_wake.notified() => continue,
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // A reload: start over with its interval (the check itself waits for it).
            _ = shared.subscription_wake.notified() => continue,
            _ = shutdown.changed() => return,
        }
        let live = shared.live();
        for page in &live.config.pages {
            let id = page.id.get_ref();
            match ensure(&live.graph, &live.config, page).await {
                Ok((Ensured::AlreadySubscribed, _)) => {}
                Ok((Ensured::Resubscribed(fields), _)) => warn!(
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
        // Instagram Login accounts subscribe themselves on graph.instagram.com: the
        // subscription is renewed each time (an idempotent call), so one Meta dropped
        // comes back within the hour.
        for account in &live.config.instagram {
            if let crate::config::InstagramLogin::Instagram { .. } =
                live.config.instagram_login(account)
            {
                let id = account.id.get_ref();
                let renewed = async {
                    let calls = crate::relay::instagram_login::calls(&shared, &live, account)
                        .await
                        .map_err(|e| e.to_string())?;
                    calls
                        .graph
                        .subscribe(&calls.token, &calls.from, &instagram_fields(account))
                        .await
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = renewed.await {
                    error!(instagram_id = %id, "cannot renew the webhook subscription of Instagram account {id}: {e}; run `fb-openchannel subscribe` and `fb-openchannel doctor`");
                }
            }
        }
        info!(
            pages = live.config.pages.len(),
            instagram = live.config.instagram.len(),
            "webhook subscriptions checked"
        );
    }
}
