//! Instagram direct messages reach the Instagram account's own Openchannel account in
//! Motion: every fixture gives the documented notifies, field by field; media go as
//! their links (Meta forbids keeping them); names come from Instagram's User Profile API
//! with the linked Page's token; Messenger of the same Page goes on beside it.

use fb_openchannel::model::{ItemKind, ItemState, MessagingKind};
use fb_openchannel::sim::facebook::{SendFailure, instagram_text, messenger_text};
use fb_openchannel::sim::motion::reply_body;

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
    // Sent from the Instagram app, not through fb-openchannel: a note.
    (
        "ig-echo.json",
        &["[sent by the account outside Motion] Yes, we do!"],
    ),
    ("ig-reaction.json", &["[reacted ❤️ to: an earlier message]"]),
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

fn ig_reply_url(bench: &Bench) -> String {
    format!(
        "http://{}/reply/{IG_ACCOUNT}?token={REPLY_TOKEN_IG}",
        bench.daemon().local_addr
    )
}

/// Motion calls the Instagram account's Reply URL with `body`: status and answer.
async fn answer_ig(bench: &Bench, body: &serde_json::Value) -> (u16, serde_json::Value) {
    bench
        .motion()
        .agent_reply(&ig_reply_url(bench), body)
        .await
        .unwrap()
}

/// An agent's answer in the comment thread of the fixtures' media item.
fn answer_in_thread(id: u64, customer: &str, text: &str) -> serde_json::Value {
    let mut answer = reply_body(id, customer, text, None);
    answer["Interaction"]["threadId"] = "17887498072083520".into();
    answer
}

/// The customer writes `ms_ago` before now (stored before the agent answers).
async fn customer_wrote(bench: &Bench, ms_ago: i64) {
    let now = fb_openchannel::store::now_ms();
    bench
        .deliver(&instagram_text(
            IG_ACCOUNT,
            IGSID,
            &format!("mid.ig.{ms_ago}"),
            now - ms_ago,
            "Do you ship to Lisbon?",
        ))
        .await;
}

/// An agent answers an Instagram customer from Motion: the Send API of the linked Page,
/// with its token, to the customer's Instagram-scoped id; a long answer goes as several
/// messages of at most 1,000 bytes (Instagram's limit), cut at spaces, in order.
#[tokio::test]
async fn an_agent_answer_reaches_the_instagram_customer_through_the_linked_page() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    let graph = &bench.peers.graph;
    graph.add_instagram_profile(IGSID, Some("Jane Doe"), "jane.doe");
    customer_wrote(&bench, 60_000).await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();

    let body = reply_body(7001, IGSID, "Yes, we ship to Lisbon.", None);
    let (status, answer) = answer_ig(&bench, &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = graph.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].page_id, PAGE_A, "sent as the linked Page");
    assert_eq!(sent[0].recipient["id"], IGSID);
    assert_eq!(sent[0].text.as_deref(), Some("Yes, we ship to Lisbon."));
    assert_eq!(sent[0].messaging_type, "RESPONSE");
    assert_eq!(sent[0].metadata, None, "Instagram documents no metadata");
    let send_call = graph
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/messages"))
        .unwrap();
    assert_eq!(
        send_call.authorization.as_deref(),
        Some(format!("Bearer {TOKEN_A}").as_str())
    );

    // 2,400 bytes of "é " (1,200 characters: within Messenger's limit, not Instagram's).
    let long = "é ".repeat(800);
    let body = reply_body(7002, IGSID, &long, None);
    let (status, answer) = answer_ig(&bench, &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = graph.sent();
    let pieces: Vec<&str> = sent[1..].iter().filter_map(|m| m.text.as_deref()).collect();
    assert_eq!(
        pieces.len(),
        3,
        "{:?}",
        pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    assert!(pieces.iter().all(|p| p.len() <= 1000));
    assert_eq!(pieces.concat(), long, "nothing lost, in order");
    // A repeated call from Motion is answered from the store: nothing sent again.
    let (status, _) = answer_ig(&bench, &body).await;
    assert_eq!(status, 200);
    assert_eq!(graph.sent().len(), 4);
    bench.stop().await;
}

/// What Instagram does not allow, or this version does not send yet, is refused at once
/// with a message the agent can act on; nothing reaches Graph. A wrong token is 401.
#[tokio::test]
async fn an_answer_instagram_would_refuse_is_refused_with_a_reason() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    customer_wrote(&bench, 8 * 24 * 3_600_000).await;
    let refused = |status: u16, answer: &serde_json::Value, says: &str| {
        assert_eq!(status, 422, "{answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
    };
    let (status, answer) = answer_ig(&bench, &reply_body(7101, IGSID, "Hello again", None)).await;
    refused(status, &answer, "Instagram allows no reply after 7 days");

    customer_wrote(&bench, 1_000).await;
    let zip = bench
        .motion()
        .add_file("orders.zip", "application/zip", vec![7u8; 2048]);
    let (status, answer) =
        answer_ig(&bench, &reply_body(7102, IGSID, "orders.zip", Some(zip))).await;
    refused(
        status,
        &answer,
        "Instagram does not take application/zip files",
    );
    let big = bench
        .motion()
        .add_file("poster.png", "image/png", vec![1u8; 9 * 1024 * 1024]);
    let (status, answer) =
        answer_ig(&bench, &reply_body(7105, IGSID, "poster.png", Some(big))).await;
    refused(
        status,
        &answer,
        "Instagram takes images up to 8 MB; poster.png is 9.0 MB",
    );

    let mut comment = reply_body(7103, IGSID, "Thanks!", None);
    comment["Interaction"]["threadId"] = "17890000000000000".into();
    let (status, answer) = answer_ig(&bench, &comment).await;
    refused(status, &answer, "not one fb-openchannel delivered");

    let wrong = ig_reply_url(&bench).replace(REPLY_TOKEN_IG, "wrong-token-0123456789");
    let (status, _) = bench
        .motion()
        .agent_reply(&wrong, &reply_body(7104, IGSID, "Hi", None))
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(bench.peers.graph.sent().is_empty(), "nothing sent");
    bench.stop().await;
}

/// An agent's file reaches the Instagram customer through the linked Page's Send API, in
/// the same call as Messenger's (multipart `filedata`), after the text, as the attachment
/// type Instagram expects; a file name Motion put in the text is not sent as text.
#[tokio::test]
async fn an_agent_file_reaches_the_instagram_customer() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    customer_wrote(&bench, 60_000).await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let graph = &bench.peers.graph;
    let photo = bench
        .motion()
        .add_file("parcel.jpg", "image/jpeg", vec![9u8; 4096]);
    let (status, answer) = answer_ig(
        &bench,
        &reply_body(7201, IGSID, "Your parcel:", Some(photo)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let pdf = bench
        .motion()
        .add_file("invoice.pdf", "application/pdf", b"%PDF-1.4 sim".to_vec());
    let (status, answer) =
        answer_ig(&bench, &reply_body(7202, IGSID, "invoice.pdf", Some(pdf))).await;
    assert_eq!(status, 200, "{answer}");
    let sent = graph.sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0].text.as_deref(), Some("Your parcel:"));
    let (kind, name, content_type, bytes) = sent[1].attachment.clone().unwrap();
    assert_eq!((kind.as_str(), name.as_str()), ("image", "parcel.jpg"));
    assert_eq!((content_type.as_str(), bytes.len()), ("image/jpeg", 4096));
    assert_eq!(sent[1].recipient["id"], IGSID);
    assert_eq!(sent[1].page_id, PAGE_A, "through the linked Page");
    let (kind, name, _, _) = sent[2].attachment.clone().unwrap();
    assert_eq!((kind.as_str(), name.as_str()), ("file", "invoice.pdf"));
    assert_eq!(sent[2].text, None, "the file name is not sent as text");
    bench.stop().await;
}

/// Comments on the account's media: one Motion thread per media item (`threadId` = the
/// media id), from the commenter by `@username`; a reply quotes the comment it answers;
/// the account's own comments never come back; a redelivery is no new notify. The
/// agent's answer in the thread goes in place, under the customer's latest comment.
#[tokio::test]
async fn comments_on_the_accounts_media_are_one_thread_per_media() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    bench
        .peers
        .graph
        .add_instagram_media("17887498072083520", "https://www.instagram.com/p/DFsim01/");
    for name in [
        "ig-comment.json",
        "ig-comment-reply.json",
        "ig-comment-own.json",
        "ig-comment.json",
    ] {
        bench.deliver(&instagram_fixture(name)).await;
    }
    bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    bench
        .wait_items("all four handled", |items| {
            items.len() == 3 && items.iter().all(|i| i.state != ItemState::Pending)
        })
        .await;
    let notes: Vec<_> = bench.motion().notifies();
    assert_eq!(notes.len(), 2, "{notes:?}");
    let first = &notes[0];
    assert_eq!(first.account, "8");
    assert_eq!(first.notify.body, "Love this colour! Is it in stock?");
    assert_eq!(first.notify.from, "1254001234567890");
    assert_eq!(first.notify.first_name.as_deref(), Some("@jane.doe"));
    assert_eq!(first.notify.thread_id.as_deref(), Some("17887498072083520"));
    // The thread links to the media on Instagram (asked once: the second comment of
    // the same media takes it from memory).
    for n in &notes {
        assert_eq!(
            n.notify.external_url.as_deref(),
            Some("https://www.instagram.com/p/DFsim01/")
        );
    }
    let lookups = bench
        .peers
        .graph
        .requests()
        .iter()
        .filter(|r| r.query == "fields=permalink")
        .count();
    assert_eq!(lookups, 1);
    assert_eq!(
        notes[1].notify.body,
        "> Love this colour! Is it in stock?\nSame question here"
    );
    assert_eq!(
        notes[1].notify.thread_id.as_deref(),
        Some("17887498072083520")
    );
    let items = bench.items().await;
    assert!(
        items.iter().all(|i| i.kind == ItemKind::InstagramComment),
        "{items:?}"
    );
    let states: Vec<ItemState> = items.iter().map(|i| i.state).collect();
    assert_eq!(
        states,
        [ItemState::Done, ItemState::Done, ItemState::Skipped],
        "the account's own comment is recorded, not delivered"
    );

    // The agent answers in the thread: in place, under the customer's latest comment,
    // with the linked Page's token.
    let (status, body) = answer_ig(
        &bench,
        &answer_in_thread(7201, "1254001234567890", "Yes, in stock!"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let comments = bench.peers.graph.comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(comments[0].object_id, "17865799348089039");
    assert_eq!(comments[0].message.as_deref(), Some("Yes, in stock!"));
    let call = bench
        .peers
        .graph
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/replies"))
        .unwrap();
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {TOKEN_A}").as_str())
    );
    assert!(bench.peers.graph.sent().is_empty(), "no direct message");

    // A comment answer is text only.
    let photo = bench
        .motion()
        .add_file("photo.jpg", "image/jpeg", vec![1u8; 1024]);
    let mut with_file = answer_in_thread(7203, "1254001234567890", "photo.jpg");
    with_file["AttachmentId"] = photo.into();
    let (status, body) = answer_ig(&bench, &with_file).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("an answer to an Instagram comment can only be text"),
        "{body}"
    );

    // Someone who never commented there: nothing to answer in place.
    let (status, body) = answer_ig(
        &bench,
        &answer_in_thread(7202, "1254001234567899", "Hello?"),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    // A thread that never came through here is refused before anything is queued.
    let mut elsewhere = reply_body(7203, "1254001234567890", "Hi", None);
    elsewhere["Interaction"]["threadId"] = "17887498072000000".into();
    let (status, body) = answer_ig(&bench, &elsewhere).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(bench.peers.graph.comments().len(), 1);
    bench.stop().await;
}

/// With `comment_reply = "private"`, the agent's answer in a comment thread goes as a
/// private reply to the customer's latest comment (Send API, `recipient.comment_id`):
/// once per comment, as Instagram allows.
#[tokio::test]
async fn a_private_reply_answers_a_comment_once() {
    let bench = Bench::start_with_instagram_keys(IG_ACCOUNT, "comment_reply = \"private\"").await;
    // Jane's comment is from 2023; Sam's reply to it comes now.
    let now_s = (fb_openchannel::store::now_ms() / 1000).to_string();
    bench.deliver(&instagram_fixture("ig-comment.json")).await;
    bench
        .deliver(&instagram_fixture("ig-comment-reply.json").replace("1700000060", &now_s))
        .await;
    bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let refused = |status: u16, body: &serde_json::Value, says: &str| {
        assert_eq!(status, 422, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(says)),
            "{body}"
        );
    };
    let (status, body) = answer_ig(
        &bench,
        &answer_in_thread(7300, "1254001234567890", "Too late?"),
    )
    .await;
    refused(status, &body, "only within 7 days");

    let (status, body) = answer_ig(
        &bench,
        &answer_in_thread(7301, "1254001234567891", "Sent you the sizes privately."),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = bench.peers.graph.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].page_id, PAGE_A);
    assert_eq!(sent[0].recipient["comment_id"], "17865799348089040");
    assert_eq!(
        sent[0].text.as_deref(),
        Some("Sent you the sizes privately.")
    );
    assert!(bench.peers.graph.comments().is_empty(), "not in place");

    let (status, body) = answer_ig(
        &bench,
        &answer_in_thread(7302, "1254001234567891", "And one more thing"),
    )
    .await;
    refused(status, &body, "already got its private reply");
    assert_eq!(bench.peers.graph.sent().len(), 1, "sent once");

    // Its echo is ours: recorded, never shown as a message sent outside Motion; the
    // customer's next direct message is the next notify.
    let before = bench.motion().notifies().len();
    let ts = fb_openchannel::store::now_ms();
    let echo = serde_json::json!({
        "object": "instagram",
        "entry": [{"id": IG_ACCOUNT, "time": ts, "messaging": [{
            "sender": {"id": IG_ACCOUNT}, "recipient": {"id": "1254001234567891"}, "timestamp": ts,
            "message": {"mid": sent[0].message_id, "text": "Sent you the sizes privately.", "is_echo": true}
        }]}]
    });
    bench.deliver(&echo.to_string()).await;
    bench
        .deliver(&instagram_text(
            IG_ACCOUNT,
            "1254001234567891",
            "mid.after.private",
            ts + 1,
            "Thanks!",
        ))
        .await;
    let notes = bench
        .motion()
        .wait_for_notifies(before + 1, WAIT)
        .await
        .unwrap();
    assert_eq!(notes.len(), before + 1, "{notes:?}");
    assert_eq!(notes[before].notify.body, "Thanks!");
    bench.stop().await;
}

/// The long-lived token of the Instagram Login fixtures' account.
const IG_LOGIN_TOKEN: &str = "IGAA-login-token-31f7";

/// The bench with the fixtures' account on Instagram Login (its own token, no Page),
/// and the simulated graph.instagram.com it talks to; `public` goes into `[public]`.
pub(crate) async fn instagram_login_bench(
    public: &str,
) -> (Bench, fb_openchannel::sim::facebook::SimGraph) {
    let peers = Peers::start().await;
    let instagram = fb_openchannel::sim::facebook::SimGraph::start()
        .await
        .unwrap();
    instagram.add_instagram_login(IG_ACCOUNT, IG_LOGIN_TOKEN);
    instagram.add_instagram_profile(IGSID, Some("Grace Hopper"), "grace.h");
    instagram.trust(&peers.certs.ca_pem);
    let table = peers.instagram_table(IG_ACCOUNT).replace(
        &format!("page = \"{PAGE_A}\""),
        &format!("access_token = \"{IG_LOGIN_TOKEN}\""),
    );
    let text = peers.config_toml_with(public, "", &table).replace(
        "[motion]",
        &format!("instagram_graph_url = \"{}\"\n\n[motion]", instagram.url()),
    );
    (Bench::start_on(peers, &text).await, instagram)
}

/// Instagram Login takes files only by a public link: the daemon offers the agent's
/// file on its public listener at an unguessable path for the time of the Send API
/// call, Meta fetches it there, and the path is gone afterwards.
#[tokio::test]
async fn a_file_to_an_instagram_login_account_is_offered_by_an_unguessable_link() {
    let port = free_port();
    let (bench, instagram) =
        instagram_login_bench(&format!("url = \"https://localhost:{port}\"")).await;
    // The bench's public listener is on port 0: put it where public.url says.
    let bench = {
        let text = std::fs::read_to_string(bench.peers.dir.path().join("config.toml"))
            .unwrap()
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
                1,
            );
        std::fs::write(bench.peers.dir.path().join("config.toml"), text).unwrap();
        bench.restart().await
    };
    customer_wrote(&bench, 60_000).await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let photo = bench
        .motion()
        .add_file("parcel.jpg", "image/jpeg", bytes.clone());
    let (status, answer) =
        answer_ig(&bench, &reply_body(7401, IGSID, "parcel.jpg", Some(photo))).await;
    assert_eq!(status, 200, "{answer}");
    let sent = instagram.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (kind, name, content_type, got) = sent[0].attachment.clone().unwrap();
    assert_eq!((kind.as_str(), name.as_str()), ("image", "parcel.jpg"));
    assert_eq!(content_type, "image/jpeg");
    assert_eq!(
        got.as_ref(),
        bytes.as_slice(),
        "Meta fetched the very bytes"
    );
    let call = instagram
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/messages"))
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    let link = body["message"]["attachment"]["payload"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = link
        .strip_prefix(&format!("https://localhost:{port}/files/"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{link}"));
    assert_eq!(token.len(), 64, "32 random bytes: {link}");
    assert!(!link.contains(API_KEY), "{link}");
    // Gone once the call is over; a guess is as unknown as ever.
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(bench.peers.certs.ca_pem.as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    assert_eq!(client.get(&link).send().await.unwrap().status(), 404);
    let guess = format!(
        "https://localhost:{port}/files/{}/parcel.jpg",
        "0".repeat(64)
    );
    assert_eq!(client.get(&guess).send().await.unwrap().status(), 404);
    bench.stop().await;
}

/// An account with Instagram Login (its own token, no Page): graph.instagram.com for
/// names and answers; its token refreshed once Meta allows, kept in the state database
/// and used at once — without a restart, and after one, when the pasted token has long
/// stopped working.
#[tokio::test]
async fn an_instagram_login_account_uses_its_own_host_and_refreshes_its_token() {
    let (bench, instagram) = instagram_login_bench("").await;
    customer_wrote(&bench, 60_000).await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.first_name.as_deref(), Some("Grace"));
    let (status, answer) = answer_ig(&bench, &reply_body(7101, IGSID, "Yes.", None)).await;
    assert_eq!(status, 200, "{answer}");
    let sent = instagram.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].page_id, IG_ACCOUNT, "POST /{{account}}/messages");
    assert!(
        bench.peers.graph.sent().is_empty(),
        "nothing through a Page"
    );
    // A file needs a public link, and this config names no public address.
    let photo = bench
        .motion()
        .add_file("parcel.jpg", "image/jpeg", vec![1u8; 64]);
    let (status, answer) =
        answer_ig(&bench, &reply_body(7104, IGSID, "parcel.jpg", Some(photo))).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("set public.name (or public.url)"),
        "{answer}"
    );

    // Meta allows a refresh once the token is a day old: age it by a day and reload.
    let db = rusqlite::Connection::open(bench.peers.store_path()).unwrap();
    db.execute(
        "UPDATE instagram_tokens SET obtained_at = obtained_at - 25 * 3600 * 1000",
        [],
    )
    .unwrap();
    let config_path = bench.peers.dir.path().join("config.toml");
    bench.daemon().reload(&config_path).await.unwrap();
    // The expiry Meta gave is published once the new token is stored and in use.
    let expiry = "instagram_token_expiry_timestamp_seconds{page_id=\"17841400000000000\"} 1";
    crate::wait_until("the token is refreshed", WAIT, || async {
        let metrics = bench.daemon().shared.metrics_text().await.unwrap();
        metrics.contains(expiry)
    })
    .await;
    let (old, new) = instagram.refreshes()[0].clone();
    assert_eq!(old, IG_LOGIN_TOKEN);
    // The old token stops working: the next answer must use the new one.
    instagram.expire_token(IG_LOGIN_TOKEN);
    let (status, answer) =
        answer_ig(&bench, &reply_body(7102, IGSID, "It ships today.", None)).await;
    assert_eq!(status, 200, "{answer}");
    let last = instagram
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with("/messages"))
        .unwrap();
    assert_eq!(last.authorization, Some(format!("Bearer {new}")));

    // After a restart the config still holds the pasted (now dead) token: the stored
    // one is used.
    let bench = bench.restart().await;
    let (status, answer) =
        answer_ig(&bench, &reply_body(7103, IGSID, "Anything else?", None)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        instagram.refreshes().len(),
        1,
        "a fresh token is not refreshed again"
    );
    let log = bench.daemon().shared.store.items().await.unwrap();
    assert!(
        !format!("{log:?}").contains(&new),
        "tokens never reach the queue's rows"
    );
    bench.stop().await;
}

/// When an answer cannot reach an Instagram customer, the agent hears it like on
/// Messenger: a dead linked-Page token is named (and `/readyz` names the account) until
/// a send works again; an answer given up after Graph's passing errors becomes a note in
/// the customer's Instagram interaction, on the account's own Receive URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instagram_answer_that_fails_is_told_to_the_agent() {
    let peers = Peers::start().await;
    let text = peers
        .config_toml(&peers.instagram_table(IG_ACCOUNT))
        .replace("[facebook]\n", "[facebook]\nunknown_error_retry = \"1s\"\n");
    let bench = Bench::start_on(peers, &text).await;
    let graph = &bench.peers.graph;
    customer_wrote(&bench, 60_000).await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let readyz = format!("http://{}/readyz", bench.daemon().local_addr);

    graph.fail_sends(vec![SendFailure::graph(
        401,
        190,
        Some(463),
        "Error validating access token: Session has expired.",
    )]);
    let (status, answer) = answer_ig(&bench, &reply_body(7301, IGSID, "Hello", None)).await;
    assert_eq!(status, 502, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("page {PAGE_A} (linked to this Instagram account)")),
        "{message}"
    );
    let r = reqwest::get(&readyz).await.unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains(&format!("instagram {IG_ACCOUNT}")), "{text}");
    assert!(!text.contains(TOKEN_A), "{text}");

    // Graph's "service temporarily unavailable" past `unknown_error_retry`: a note.
    graph.fail_sends(
        (0..100)
            .map(|_| SendFailure::graph(503, 2, None, "Service temporarily unavailable"))
            .collect(),
    );
    let (status, answer) = answer_ig(
        &bench,
        &reply_body(7302, IGSID, "Your parcel ships today.", None),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let note = &notes[1];
    assert_eq!(note.account, "8", "the Instagram account's Receive URL");
    assert_eq!(note.notify.from, IGSID, "in the customer's interaction");
    assert!(
        note.notify.body.starts_with(
            "[fb-openchannel] The reply \"Your parcel ships today.\" was NOT delivered"
        ),
        "{}",
        note.notify.body
    );
    bench.stop().await;
}

/// The account @mentioned elsewhere: each mention is a thread of its media in Motion
/// with the words Graph gives (the webhook has ids only) and the media's link; words
/// Graph will not give still make a notify saying so; the agent answers under the
/// mention (`POST /{ig-user-id}/mentions`).
#[tokio::test]
async fn mentions_of_the_account_reach_motion_and_are_answered_in_place() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    let graph = &bench.peers.graph;
    graph.add_mention(
        "17894227972186120",
        serde_json::json!({
            "text": "@shop.example do you ship this to Lisbon?",
            "timestamp": "2026-11-30T10:00:00+0000",
            "media": {"id": "17918195224117851", "permalink": "https://www.instagram.com/p/DMsim1/"},
            "id": "17894227972186120"
        }),
    );
    bench
        .deliver(&instagram_fixture("ig-mention-comment.json"))
        .await;
    // The caption mention's media went private: Graph will not tell.
    bench
        .deliver(&instagram_fixture("ig-mention-caption.json"))
        .await;
    // Facebook redelivers: nothing new.
    bench
        .deliver(&instagram_fixture("ig-mention-comment.json"))
        .await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    let first = &notes[0];
    assert_eq!(first.account, "8");
    assert_eq!(
        first.notify.body,
        "[mentioned you in a comment] @shop.example do you ship this to Lisbon?"
    );
    assert_eq!(
        first.notify.from, "17918195224117851",
        "the media is the thread's contact"
    );
    assert_eq!(first.notify.thread_id.as_deref(), Some("17918195224117851"));
    assert_eq!(
        first.notify.external_url.as_deref(),
        Some("https://www.instagram.com/p/DMsim1/")
    );
    assert!(
        notes[1]
            .notify
            .body
            .starts_with("[mentioned you on Instagram; Instagram does not show the words:"),
        "{}",
        notes[1].notify.body
    );

    let mut answer = reply_body(7501, "17918195224117851", "Yes, we do!", None);
    answer["Interaction"]["threadId"] = "17918195224117851".into();
    let (status, body) = answer_ig(&bench, &answer).await;
    assert_eq!(status, 200, "{body}");
    let comments = graph.comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(
        comments[0].object_id, "17894227972186120",
        "under the mention"
    );
    assert_eq!(comments[0].message.as_deref(), Some("Yes, we do!"));
    let call = graph
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/mentions"))
        .unwrap();
    assert!(
        call.path.ends_with(&format!("/{IG_ACCOUNT}/mentions")),
        "{}",
        call.path
    );
    bench.stop().await;
}

/// Meta drops an Instagram Login account's webhook subscription: the daemon's periodic
/// check subscribes it again on graph.instagram.com, with its own token.
#[tokio::test]
async fn a_dropped_instagram_login_subscription_comes_back() {
    let (bench, instagram) = instagram_login_bench("").await;
    instagram.unsubscribe(IG_ACCOUNT);
    let path = bench.peers.dir.path().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[facebook]\n",
        "[facebook]\nsubscription_check = \"50ms\"\n",
    );
    std::fs::write(&path, text).unwrap();
    bench.daemon().reload(&path).await.unwrap();
    crate::wait_until("the account is subscribed again", WAIT, || async {
        instagram
            .subscribed(IG_ACCOUNT)
            .iter()
            .any(|f| f == "messages")
    })
    .await;
    assert!(
        instagram
            .subscribed(IG_ACCOUNT)
            .iter()
            .any(|f| f == "comments"),
        "{:?}",
        instagram.subscribed(IG_ACCOUNT)
    );
    bench.stop().await;
}

/// The Instagram form of the note cannot be typed either, in a direct message or after a
/// newline in a comment.
#[tokio::test]
async fn an_instagram_customer_cannot_forge_the_note_of_a_reply_sent_outside_motion() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    let now = fb_openchannel::store::now_ms();
    bench
        .deliver(&instagram_text(
            IG_ACCOUNT,
            IGSID,
            "mid.ig.forged",
            now,
            "[sent by the account outside Motion] Refund approved, reply with your card",
        ))
        .await;
    let comment = serde_json::json!({
        "object": "instagram",
        "entry": [{"id": IG_ACCOUNT, "time": now / 1000, "changes": [{
            "field": "comments",
            "value": {"id": "17865799348089039", "from": {"id": IGSID, "username": "ada"},
                      "text": "nice\n[sent by the account outside Motion] Refund approved",
                      "media": {"id": "17887498072083520", "media_product_type": "FEED"}}
        }]}]
    });
    bench.deliver(&comment.to_string()).await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let bodies: Vec<&str> = notes.iter().map(|n| n.notify.body.as_str()).collect();
    assert!(
        bodies.contains(
            &"\\[sent by the account outside Motion] Refund approved, reply with your card"
        ),
        "{bodies:?}"
    );
    assert!(
        bodies.contains(&"nice\n\\[sent by the account outside Motion] Refund approved"),
        "{bodies:?}"
    );
}

/// A name from Instagram has no bound of its own: a 200,000-character name with a line
/// break reached Motion whole. Names reach Motion on one line, at most 100 characters.
#[tokio::test]
async fn a_huge_instagram_name_reaches_motion_on_one_short_line() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    let name = format!(
        "Ada\n[sent by the account outside Motion]{}",
        "x".repeat(200_000)
    );
    bench
        .peers
        .graph
        .add_instagram_profile(IGSID, Some(&name), "ada");
    bench
        .deliver(&instagram_text(
            IG_ACCOUNT,
            IGSID,
            "mid.ig.name",
            fb_openchannel::store::now_ms(),
            "hi",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let first = notes[0].notify.first_name.clone().unwrap_or_default();
    let last = notes[0].notify.last_name.clone().unwrap_or_default();
    for part in [&first, &last] {
        assert!(part.chars().count() <= 100, "{} characters", part.len());
        assert!(!part.contains('\n'), "{part:?}");
    }
    assert!(first.starts_with("Ada"), "{first:?}");
}

/// A mention in another account's caption: Mentioned Media documents no `permalink`
/// (asking for it made Graph refuse the whole call, and the agent got the mention
/// without its words); the words come from the documented fields, the link from the
/// media itself.
#[tokio::test]
async fn a_caption_mention_has_its_words_and_the_medias_own_link() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    let graph = &bench.peers.graph;
    graph.add_mention(
        "17918195224117999",
        serde_json::json!({
            "caption": "Loving my new bag from @shop.example",
            "username": "ada.travels",
            "media_type": "IMAGE",
            "id": "17918195224117999"
        }),
    );
    graph.add_instagram_media("17918195224117999", "https://www.instagram.com/p/DMcap9/");
    bench
        .deliver(&instagram_fixture("ig-mention-caption.json"))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(
        notes[0].notify.body,
        "[mentioned you in a post by @ada.travels] Loving my new bag from @shop.example"
    );
    assert_eq!(
        notes[0].notify.external_url.as_deref(),
        Some("https://www.instagram.com/p/DMcap9/")
    );
    let asked = graph
        .requests()
        .into_iter()
        .find(|r| r.query.contains("mentioned_media"))
        .unwrap();
    assert!(!asked.query.contains("permalink"), "{}", asked.query);
    bench.stop().await;
}

/// Instagram Login webhooks may be signed with the Instagram app's own secret
/// (`facebook.instagram_app_secret`): a webhook signed with either secret is taken,
/// one signed with anything else is not.
#[tokio::test]
async fn a_webhook_signed_with_the_instagram_app_secret_is_taken() {
    const IG_SECRET: &str = "instagram-app-secret-5f1e";
    let peers = Peers::start().await;
    let text = peers
        .config_toml(&peers.instagram_table(IG_ACCOUNT))
        .replace(
            "[facebook]\n",
            &format!("[facebook]\ninstagram_app_secret = \"{IG_SECRET}\"\n"),
        );
    let bench = Bench::start_on(peers, &text).await;
    let url = bench.webhook_url();
    let ca = bench.peers.certs.ca_pem.clone();
    let now = fb_openchannel::store::now_ms();
    for (n, secret, expected) in [
        (0, IG_SECRET, 200),
        (1, APP_SECRET, 200),
        (2, "someone-elses-secret", 403),
    ] {
        let sender = fb_openchannel::sim::facebook::WebhookSender::new(&url, secret, Some(&ca));
        let body = instagram_text(IG_ACCOUNT, IGSID, &format!("mid.ig.sig.{n}"), now + n, "hi");
        let (status, _) = sender.send(body.as_bytes()).await.unwrap();
        assert_eq!(status, expected, "signed with {secret}");
    }
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes.len(), 2);
    bench.stop().await;
}

/// An Instagram private reply is one message per comment and cannot be cut in pieces:
/// one over 1,000 bytes is refused at the Reply URL with the limit, before anything is
/// stored or sent (it used to fail at Graph after the call).
#[tokio::test]
async fn a_private_reply_over_the_limit_is_refused_with_the_limit() {
    let bench = Bench::start_with_instagram_keys(IG_ACCOUNT, "comment_reply = \"private\"").await;
    let now_s = (fb_openchannel::store::now_ms() / 1000).to_string();
    bench
        .deliver(&instagram_fixture("ig-comment-reply.json").replace("1700000060", &now_s))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let long = "é".repeat(501);
    let (status, body) =
        answer_ig(&bench, &answer_in_thread(7400, "1254001234567891", &long)).await;
    assert_eq!(status, 422, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("1000 bytes"), "{message}");
    assert!(bench.peers.graph.sent().is_empty());
    bench.stop().await;
}

/// A customer's photo in an Instagram direct message is moved into Motion like a
/// Messenger one (Instagram's CDN links expire within days), while the story a customer
/// mentions the account in stays a link: Meta forbids keeping story media.
#[tokio::test]
async fn instagram_media_are_kept_and_stories_stay_links() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    let graph = &bench.peers.graph;
    let url = graph.add_file("beach.jpg", "image/jpeg", vec![9u8; 4096]);
    let now = fb_openchannel::store::now_ms();
    let dm = |mid: &str, kind: &str, url: &str, ts: i64| {
        serde_json::json!({"object": "instagram", "entry": [{"id": IG_ACCOUNT, "time": ts, "messaging": [{
            "sender": {"id": IGSID}, "recipient": {"id": IG_ACCOUNT}, "timestamp": ts,
            "message": {"mid": mid, "attachments": [{"type": kind, "payload": {"url": url}}]}
        }]}]})
        .to_string()
    };
    bench.deliver(&dm("mid.ig.photo", "image", &url, now)).await;
    let story = format!("{url}?story=1");
    bench
        .deliver(&dm("mid.ig.story", "story_mention", &story, now + 1))
        .await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, "beach.jpg");
    assert!(notes[0].notify.attachment_id.is_some(), "moved into Motion");
    assert_eq!(bench.motion().uploads()[0].bytes.len(), 4096);
    assert_eq!(
        notes[1].notify.body,
        format!("[mentioned you in their story] {story}")
    );
    assert_eq!(notes[1].notify.attachment_id, None, "a story stays a link");
    assert_eq!(bench.motion().uploads().len(), 1);
    bench.stop().await;
}
