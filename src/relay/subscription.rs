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

/// Every Page webhook field whose events the daemon uses, with what stops working without
/// it: Meta sends only the fields a Page is subscribed to, so a field missing here is a
/// feature that silently never happens (the routing check waited for `standby` events
/// that never came).
pub const MESSENGER_FIELDS: &[(&str, &str)] = &[
    ("messages", "customers' messages"),
    ("messaging_postbacks", "buttons the customer taps"),
    ("message_edits", "edits of a message"),
    ("message_reactions", "reactions to messages"),
    (
        "message_echoes",
        "telling the daemon's own sends from replies sent from other tools",
    ),
    (
        "standby",
        "noticing that another app (an old Motion Cloud app, the Page inbox) takes the Page's conversations",
    ),
    (
        "messaging_referrals",
        "where a customer came from (m.me links, ads, the chat plugin) in an existing conversation",
    ),
    ("message_reads", "read receipts (shown by `queue show`)"),
    (
        "messaging_optins",
        "opt-ins (the customer asked to be notified)",
    ),
    (
        "messaging_handovers",
        "conversations passed between the apps of the Page",
    ),
    (
        "messaging_policy_enforcement",
        "hearing that Meta blocked the Page from messaging (said in /readyz and the journal)",
    ),
];
/// The wall (with `wall_posts`).
pub const FEED_FIELD: (&str, &str) = ("feed", "visitor posts and comments on the Page's wall");

/// The fields a page must be subscribed to, with what each is for.
pub fn required_fields_why(page: &PageConfig) -> Vec<(&'static str, &'static str)> {
    let mut fields = MESSENGER_FIELDS.to_vec();
    if page.wall_posts {
        fields.push(FEED_FIELD);
    }
    fields
}

/// The fields a page must be subscribed to.
pub fn required_fields(page: &PageConfig) -> Vec<&'static str> {
    required_fields_why(page)
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

/// The fields `subscribe` asks for: every one the daemon uses.
pub fn requested_fields(page: &PageConfig) -> Vec<&'static str> {
    required_fields(page)
}

/// What stops working without `field` (a Page or Instagram Login field).
pub fn what_needs(field: &str) -> &'static str {
    MESSENGER_FIELDS
        .iter()
        .chain([&FEED_FIELD])
        .chain(INSTAGRAM_FIELDS)
        .find(|(f, _)| *f == field)
        .map_or("events the daemon uses", |(_, why)| *why)
}

/// The Instagram Login fields the daemon uses (the account's own subscription, on
/// graph.instagram.com), with what stops working without each.
pub const INSTAGRAM_FIELDS: &[(&str, &str)] = &[
    ("messages", "customers' direct messages"),
    ("messaging_postbacks", "buttons the customer taps"),
    ("message_reactions", "reactions to messages"),
    (
        "messaging_referral",
        "where a customer came from (ig.me links, ads)",
    ),
    ("messaging_seen", "read receipts (shown by `queue show`)"),
    ("comments", "comments on the account's media"),
];

/// The fields an Instagram Login account is subscribed to (on graph.instagram.com,
/// `POST /{account}/subscribed_apps`). Facebook Login accounts get theirs through the
/// linked Page and the app's Instagram webhook product.
pub fn instagram_fields(account: &crate::config::InstagramConfig) -> Vec<&'static str> {
    INSTAGRAM_FIELDS
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| *f != "comments" || account.comments)
        .collect()
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
