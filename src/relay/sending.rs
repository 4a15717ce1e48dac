//! What both kinds of replies need: the agent's file from Motion, the ids of what was
//! sent, and Graph's errors turned into a [`Failure`] with the right scope (a page's
//! problem, a paused feature, a permission).

use tracing::{debug, info, warn};

use crate::config::PageConfig;
use crate::facebook::graph::{
    AttachmentType, Disposition, Download, GraphError, MAX_FILE_BYTES, Send,
};
use crate::motion::{AgentFile, MotionError};
use crate::relay::nodes;
use crate::relay::outcome::{Failure, Refusal};
use crate::relay::pauses::{Feature, Pause};
use crate::relay::reply::OutboundReply;
use crate::relay::{Live, Shared};
use crate::store::{Item, Write, now_ms};

/// The file an agent attached, fetched from the Motion of the account's `receive_url`
/// (refused over 25 MB), holding its room in the file budget while it lives.
pub(super) async fn fetch_agent_file(
    shared: &Shared,
    live: &Live,
    receive_url: &str,
    reply: &OutboundReply,
) -> Result<Option<AgentFile>, Failure> {
    let Some(id) = &reply.attachment_id else {
        return Ok(None);
    };
    Ok(Some(
        live.motion
            .fetch_attachment(receive_url, *id, MAX_FILE_BYTES, &shared.files)
            .await
            .map_err(|e| match e {
                MotionError::Transient(reason) => Failure::transient(reason),
                MotionError::TooLarge { reason, limit } => Failure::TooLarge {
                    reason: format!("Not sent: {reason}; Facebook accepts files up to 25 MB."),
                    limit,
                },
                MotionError::Permanent(reason) => Failure::refused(
                    Refusal::Peer,
                    format!("Not sent: the attached file could not be read from Motion: {reason}"),
                ),
            })?,
    ))
}

/// Sends the agent's file with the Send API, as the attachment type of its MIME type;
/// returns the Graph message id.
pub(super) async fn send_agent_file(
    live: &Live,
    page: &PageConfig,
    send: &Send<'_>,
    file: AgentFile,
) -> Result<String, GraphError> {
    let kind = AttachmentType::of_mime(&file.content_type);
    live.graph
        .send_file(
            page.access_token.get_ref(),
            &page.page_id(),
            send,
            kind,
            Download::from(file),
        )
        .await
}

/// Refuses a second private reply to one comment (Meta allows one per comment); `item`
/// itself may try again. `platform` names it for the agent, `continues` says where the
/// conversation goes on.
pub(super) async fn first_private_reply(
    shared: &Shared,
    account_id: &str,
    object: &str,
    item: &Item,
    platform: &str,
    continues: &str,
) -> Result<(), Failure> {
    let owner = shared
        .store
        .private_reply_owner(account_id.to_owned(), object.to_owned())
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    match owner {
        Some(owner) if owner != item.id => Err(Failure::refused(
            Refusal::Policy,
            format!(
                "Not sent: this comment already got its private reply, and {platform} allows only one. \
                 When the customer answers it, the conversation continues {continues}."
            ),
        )),
        _ => Ok(()),
    }
}

/// Sends a reply's steps with the Send API, one call each (`send_one`), skipping those
/// an earlier attempt sent; after each, its message id is remembered (its echo is ours)
/// and the progress stored, so that a retry never sends a step twice. Returns the
/// message ids of all steps, in order.
pub(super) async fn send_each<S, F, Fut>(
    shared: &Shared,
    item: &Item,
    steps: Vec<S>,
    mut send_one: F,
) -> Result<Vec<String>, Failure>
where
    F: FnMut(S) -> Fut,
    Fut: std::future::Future<Output = Result<String, GraphError>>,
{
    let page_id = item.page_id.as_str();
    let mut ids = previous_ids(shared, item).await?;
    let total = steps.len();
    for (index, step) in steps
        .into_iter()
        .enumerate()
        .skip(usize::try_from(item.steps_done).unwrap_or(0))
    {
        let message_id = send_one(step)
            .await
            .map_err(|e| graph_failure(shared, page_id, Feature::Messages, "send", e))?;
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

/// Remembers a Graph message id of ours, so that its echo is recognised.
pub(super) async fn record_sent(shared: &Shared, page_id: &str, message_id: &str, item: i64) {
    let write = Write::Sent {
        page_id: page_id.to_owned(),
        message_id: message_id.to_owned(),
        item,
        at: now_ms(),
    };
    shared.ledger.record(&shared.store, write).await;
}

/// Message ids of steps done by earlier attempts of this item. Not knowing them is a
/// reason to try later: answered without them, Motion would miss what was sent.
pub(super) async fn previous_ids(shared: &Shared, item: &Item) -> Result<Vec<String>, Failure> {
    if item.steps_done == 0 {
        return Ok(Vec::new());
    }
    shared
        .store
        .sent_ids_of(item.id)
        .await
        .map_err(|e| Failure::transient(e.to_string()))
}

/// Records why a page cannot send (shown by /readyz until a send succeeds) and fails
/// the reply with that reason.
pub(super) fn token_invalid(shared: &Shared, page_id: &str, problem: String) -> Failure {
    shared.health.problem(page_id, problem.clone());
    Failure::TokenInvalid {
        reason: format!("Not sent: {problem}"),
    }
}

/// Which token failed and what the admin does about it: a page's, an Instagram
/// account's linked Page's, or an Instagram Login account's own.
fn token_problem(config: &crate::config::Config, account_id: &str, e: &GraphError) -> String {
    use crate::config::InstagramLogin;
    match config
        .instagram(account_id)
        .map(|a| config.instagram_login(a))
    {
        Some(InstagramLogin::Facebook { page }) => format!(
            "the access token of page {} (linked to this Instagram account) is invalid or expired ({e}): put a new token in that page's access_token and reload",
            page.id.get_ref()
        ),
        Some(InstagramLogin::Instagram { .. }) => format!(
            "the Instagram account's access token is invalid or expired ({e}): generate a new one (App Dashboard → Instagram → API setup with Instagram login), put it in this account's access_token and reload"
        ),
        None => format!(
            "the Page access token is invalid or expired ({e}): put a new token in this page's access_token and reload"
        ),
    }
}

/// What a Graph error means for this reply, for the feature it used and for the page.
pub(super) fn graph_failure(
    shared: &Shared,
    page_id: &str,
    feature: Feature,
    call: &str,
    e: GraphError,
) -> Failure {
    let label = match e.disposition {
        Disposition::Retry | Disposition::RetryBriefly => "retry",
        Disposition::SlowDown => "rate_limited",
        Disposition::TokenInvalid => "token_invalid",
        Disposition::FeatureBlocked => "feature_blocked",
        Disposition::MissingPermission => "missing_permission",
        Disposition::Permanent => "refused",
    };
    shared.metrics.graph_call(page_id, call, label);
    match e.disposition {
        Disposition::Retry | Disposition::RetryBriefly => Failure::Retry {
            reason: e.to_string(),
            after: None,
            brief: e.disposition == Disposition::RetryBriefly,
        },
        Disposition::SlowDown => Failure::SlowDown {
            reason: format!("Facebook rate-limited this page: {e}"),
            after: e.retry_after,
        },
        Disposition::TokenInvalid => {
            let problem = token_problem(&shared.live().config, page_id, &e);
            token_invalid(shared, page_id, problem)
        }
        Disposition::FeatureBlocked => {
            let now = now_ms();
            let first = shared.live().config.facebook.block_pause;
            let (pause, fresh) = shared
                .pauses
                .block(page_id, feature, now, first, e.to_string());
            nodes::tell_pause(shared, page_id, feature, &pause);
            if fresh {
                warn!(
                    page_id,
                    feature = feature.as_str(),
                    "Facebook throttles {} on page {page_id} ({e}); {} are paused for {} and tried again then, other features go on. It usually lasts hours; see the Page's Support Inbox if it does not end",
                    feature.words(),
                    feature.words(),
                    humantime::format_duration(pause.length)
                );
            }
            paused(feature, &pause, now)
        }
        Disposition::MissingPermission => Failure::Refused {
            why: Refusal::Peer,
            reason: format!(
                "Not sent: the Page token lacks a permission — {} is needed for {} ({e}). Grant it to the app and make a new Page token.",
                feature.permission(),
                feature.words()
            ),
        },
        Disposition::Permanent => Failure::refused(
            Refusal::Peer,
            format!("Not sent: Facebook refused the message: {e}"),
        ),
    }
}

/// The failure of a reply whose feature is paused: queued until the pause ends.
pub(super) fn paused(feature: Feature, pause: &Pause, now: i64) -> Failure {
    Failure::Blocked {
        feature,
        reason: format!(
            "Facebook is throttling {} on this Page; queued, next try at {} UTC",
            feature.words(),
            crate::time::timestamp(pause.until)
        ),
        after: crate::time::until(pause.until, now),
    }
}

/// Fails fast without calling Graph while a feature is paused.
pub(super) fn check_pause(shared: &Shared, page_id: &str, feature: Feature) -> Result<(), Failure> {
    let now = now_ms();
    match shared.pauses.active(page_id, feature, now) {
        Some(pause) => Err(paused(feature, &pause, now)),
        None => Ok(()),
    }
}

/// A call of `feature` went through: a pause of it, if any, is over.
pub(super) fn feature_works(shared: &Shared, page_id: &str, feature: Feature) {
    if let Some(pause) = shared.pauses.clear(page_id, feature) {
        nodes::tell_works(shared, page_id, feature);
        info!(
            page_id,
            feature = feature.as_str(),
            "{} work again on page {page_id} after a pause of {} (Facebook's throttle is over)",
            feature.words(),
            humantime::format_duration(std::time::Duration::from_secs(
                u64::try_from(now_ms().saturating_sub(pause.since) / 1000).unwrap_or(0)
            ))
        );
    }
}
