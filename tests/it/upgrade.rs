//! A state database written by the previous release opens unchanged and drains.
//!
//! `tests/fixtures/previous-release/state.db` was written by the release before the
//! typed domain model (commit fd0ca05), with Motion down: see the README beside it.

use std::path::Path;
use std::time::Duration;

use fb_openchannel::model::{
    ConversationKey, Direction, FeedKind, ItemKind, ItemState, MessagingKind,
};

use crate::harness::*;

const DATABASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/previous-release/state.db"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_opens_and_drains() {
    let bench = Bench::start_on_database(Path::new(DATABASE)).await;

    // Every row reads back as a typed value, as the previous release wrote it. (The
    // daemon is already delivering: what was pending may be done by now.)
    let items = bench.items().await;
    let seen: Vec<(Direction, ItemKind)> = items.iter().map(|i| (i.direction, i.kind)).collect();
    let message = ItemKind::Messaging(MessagingKind::Message);
    assert_eq!(
        seen,
        [
            (Direction::Inbound, message),
            (Direction::Inbound, message),
            (Direction::Inbound, message),
            (Direction::Inbound, ItemKind::Feed(FeedKind::Post)),
            (Direction::Inbound, ItemKind::Feed(FeedKind::Comment)),
            (Direction::Inbound, ItemKind::Unparsed),
            (Direction::Outbound, ItemKind::Reply),
        ]
    );
    let states: Vec<ItemState> = items.iter().map(|i| i.state).collect();
    assert!(
        states[..5]
            .iter()
            .all(|s| matches!(s, ItemState::Pending | ItemState::Done)),
        "{states:?}"
    );
    assert_eq!(states[5..], [ItemState::Failed, ItemState::Done]);
    assert_eq!(items[0].conversation, ConversationKey::customer(PSID));
    assert_eq!(
        items[4].conversation,
        ConversationKey::post("1234567890321_777")
    );

    // What was pending is delivered, in order per conversation, once.
    let notifies = bench
        .motion()
        .wait_for_notifies(5, Duration::from_secs(10))
        .await
        .unwrap();
    let bodies: Vec<&str> = notifies.iter().map(|n| n.notify.body.as_str()).collect();
    let messenger: Vec<&str> = bodies
        .iter()
        .copied()
        .filter(|b| b.starts_with("Before the upgrade"))
        .collect();
    assert_eq!(
        messenger,
        [
            "Before the upgrade 0",
            "Before the upgrade 1",
            "Before the upgrade 2"
        ]
    );
    let wall: Vec<&str> = bodies
        .iter()
        .copied()
        .filter(|b| b.contains("before the upgrade"))
        .collect();
    assert_eq!(
        wall,
        ["A post before the upgrade", "A comment before the upgrade"]
    );
    bench
        .wait_items("every pending item delivered", |items| {
            items.iter().all(|i| i.state != ItemState::Pending)
        })
        .await;
    assert_eq!(
        bench.motion().notifies().len(),
        5,
        "nothing delivered twice"
    );

    // The reply sent before the upgrade is remembered: the same Reply URL call is
    // answered from the store and not sent again.
    let url = format!(
        "http://{}/reply/{PAGE_A}?token={REPLY_TOKEN_A}",
        bench.daemon().local_addr
    );
    let (status, _) = bench
        .motion()
        .agent_reply(
            &url,
            &fb_openchannel::sim::motion::reply_body(7001, PSID, "Sent before the upgrade", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        bench.peers.graph.sent().is_empty(),
        "the old reply was sent again"
    );
    let items = bench.items().await;
    assert_eq!(items.len(), 7);
    assert_eq!(items[6].state, ItemState::Done);
    bench.stop().await;
}
