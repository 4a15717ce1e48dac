//! Instagram direct messages reach the Instagram account's own Openchannel account in
//! Motion: every fixture gives the documented notifies, field by field; media go as
//! their links (Meta forbids keeping them); names come from Instagram's User Profile API
//! with the linked Page's token; Messenger of the same Page goes on beside it.

use fb_openchannel::model::{ItemKind, ItemState, MessagingKind};
use fb_openchannel::sim::facebook::messenger_text;

use crate::harness::*;

/// `(fixture, notify bodies in order)`; no bodies = recorded but not forwarded.
const FIXTURES: &[(&str, &[&str])] = &[
    ("ig-text.json", &["Hi! Do you ship to Lisbon?"]),
    (
        "ig-image.json",
        &[
            "[photo] https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=17997515821557846&signature=AbyoRMtw-sim",
        ],
    ),
    (
        "ig-story-reply.json",
        &[
            "[replied to your story] https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=18000011122233345&signature=story-sim\nIs this one still available?",
        ],
    ),
    (
        "ig-story-mention.json",
        &[
            "[mentioned you in their story] https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=18000099988877766&signature=mention-sim",
        ],
    ),
    (
        "ig-reel.json",
        &[
            "[shared a reel] \"Winter collection\" https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=17871182922633701&signature=reel-sim",
        ],
    ),
    ("ig-postback.json", &["Track my order"]),
    ("ig-unsent.json", &["[the customer unsent a message]"]),
    ("ig-echo.json", &[]),
    ("ig-reaction.json", &[]),
];

#[tokio::test]
async fn every_instagram_fixture_gives_the_documented_notifies() {
    for (name, bodies) in FIXTURES {
        let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
        bench
            .peers
            .graph
            .add_instagram_profile(IGSID, Some("Jane Doe"), "jane.doe");
        bench.deliver(&instagram_fixture(name)).await;

        if bodies.is_empty() {
            let items = bench.items().await;
            assert_eq!(items.len(), 1, "{name}: the event must be recorded");
            assert_eq!(items[0].state, ItemState::Skipped, "{name}: {items:?}");
            assert!(
                matches!(items[0].kind, ItemKind::Instagram(_)),
                "{name}: {items:?}"
            );
            // Proof of silence: the customer's next message arrives alone.
            bench.deliver(&instagram_fixture("ig-text.json")).await;
            let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
            assert_eq!(notes.len(), 1, "{name}: {notes:?}");
            assert_eq!(notes[0].notify.body, "Hi! Do you ship to Lisbon?", "{name}");
        } else {
            let notes = bench
                .motion()
                .wait_for_notifies(bodies.len(), WAIT)
                .await
                .unwrap();
            let got: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
            assert_eq!(&got, bodies, "{name}");
            for n in &notes {
                assert_eq!(
                    n.account, "8",
                    "{name}: the Instagram account's own Receive URL"
                );
                assert_eq!(n.notify.from, IGSID, "{name}");
                assert_eq!(n.notify.map_key, "facebook", "{name}");
                assert_eq!(n.notify.first_name.as_deref(), Some("Jane"), "{name}");
                assert_eq!(n.notify.last_name.as_deref(), Some("Doe"), "{name}");
                assert_eq!(n.notify.thread_id, None, "{name}");
                assert_eq!(n.notify.attachment_id, None, "{name}: media go as links");
            }
            assert!(
                bench.motion().uploads().is_empty(),
                "{name}: nothing uploaded"
            );
        }
        // The name was asked of Instagram's User Profile API, with the linked Page's token.
        let profile_calls: Vec<_> = bench
            .peers
            .graph
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with(IGSID))
            .collect();
        if !bodies.is_empty() {
            assert_eq!(profile_calls.len(), 1, "{name}: {profile_calls:?}");
            assert_eq!(profile_calls[0].query, "fields=name%2Cusername", "{name}");
            assert_eq!(
                profile_calls[0].authorization.as_deref(),
                Some(format!("Bearer {TOKEN_A}").as_str()),
                "{name}"
            );
        }
        bench.stop().await;
    }
}

/// The two payloads restfb keeps from the real Instagram, on a configured account, with
/// a Messenger customer of the linked Page writing at the same time: each reaches its
/// own Openchannel account, with no cross-talk.
#[tokio::test]
async fn instagram_and_messenger_of_one_page_reach_their_own_accounts() {
    const RESTFB_ACCOUNT: &str = "17841452691600098";
    const RESTFB_CUSTOMER: &str = "5614879045272581";
    let bench = Bench::start_with_instagram(RESTFB_ACCOUNT).await;
    bench
        .deliver(&fixture("instagram-attachment-unsupported-restfb.json"))
        .await;
    bench
        .deliver(&fixture("instagram-messaging-seen-restfb.json"))
        .await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "mid.m1",
            1_700_000_000_000,
            "hello from Messenger",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    let instagram: Vec<_> = notes.iter().filter(|n| n.account == "8").collect();
    let messenger: Vec<_> = notes.iter().filter(|n| n.account == "1").collect();
    assert_eq!(instagram.len(), 1, "{notes:?}");
    assert_eq!(messenger.len(), 1, "{notes:?}");
    assert_eq!(
        instagram[0].notify.body,
        "[sent something Instagram does not pass on to other apps: see it in the Instagram app]"
    );
    assert_eq!(instagram[0].notify.from, RESTFB_CUSTOMER);
    // Instagram does not know this customer: a readable stand-in, never a real name.
    assert_eq!(instagram[0].notify.first_name.as_deref(), Some("Instagram"));
    assert_eq!(instagram[0].notify.last_name.as_deref(), Some("user 2581"));
    assert_eq!(messenger[0].notify.body, "hello from Messenger");
    assert_eq!(messenger[0].notify.from, PSID);
    assert_eq!(messenger[0].notify.first_name.as_deref(), Some("Ada"));

    let items = bench.items().await;
    let seen = items
        .iter()
        .find(|i| i.kind == ItemKind::Instagram(MessagingKind::Read))
        .expect("the read receipt is recorded");
    assert_eq!(seen.state, ItemState::Skipped);
    assert_eq!(seen.page_id, RESTFB_ACCOUNT);
    bench.stop().await;
}

/// Facebook delivers at least once: the same message twice reaches Motion once, and the
/// customer unsending it later quotes what it said.
#[tokio::test]
async fn a_redelivered_message_is_notified_once_and_unsending_it_quotes_it() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    bench.deliver(&instagram_fixture("ig-text.json")).await;
    bench.deliver(&instagram_fixture("ig-text.json")).await;
    bench.deliver(&instagram_fixture("ig-unsent.json")).await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let bodies: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "Hi! Do you ship to Lisbon?",
            "[the customer unsent a message]\n> Hi! Do you ship to Lisbon?"
        ]
    );
    bench
        .wait_items("both delivered", |items| {
            items.iter().filter(|i| i.state == ItemState::Done).count() == 2
        })
        .await;
    assert_eq!(
        bench.items().await.len(),
        2,
        "the redelivery is no new item"
    );
    bench.stop().await;
}

/// An Instagram account that has no `[[instagram]]` table is recorded and never
/// delivered (as for an unconfigured page).
#[tokio::test]
async fn an_unconfigured_instagram_account_is_recorded_not_delivered() {
    let bench = Bench::start().await;
    bench.deliver(&instagram_fixture("ig-text.json")).await;
    let items = bench.items().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].state, ItemState::Skipped);
    assert_eq!(items[0].kind, ItemKind::Instagram(MessagingKind::Message));
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "mid.after",
            1_700_000_000_000,
            "after",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].notify.body, "after");
    bench.stop().await;
}

/// Until replies to Instagram land, an agent's answer in an Instagram interaction is
/// refused at once with a message the agent can act on, never queued or sent elsewhere;
/// a wrong token is refused like a page's.
#[tokio::test]
async fn an_agent_answer_to_instagram_is_refused_clearly_for_now() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    let url = |token: &str| {
        format!(
            "http://{}/reply/{IG_ACCOUNT}?token={token}",
            bench.daemon().local_addr
        )
    };
    let body = fb_openchannel::sim::motion::reply_body(7001, IGSID, "We do ship to Lisbon.", None);
    let (status, _) = bench
        .motion()
        .agent_reply(&url("wrong-token-0123456789"), &body)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, answer) = bench
        .motion()
        .agent_reply(&url(REPLY_TOKEN_IG), &body)
        .await
        .unwrap();
    assert_eq!(status, 501, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not send replies to Instagram yet")),
        "{answer}"
    );
    assert!(bench.items().await.is_empty(), "nothing queued");
    assert!(bench.peers.graph.sent().is_empty(), "nothing sent");
    bench.stop().await;
}
