//! Every Messenger fixture from Facebook's payloads produces the documented notify calls
//! (or the documented silence), field by field. The table below is the README's
//! "What reaches Motion" table.

use fb_openchannel::sim::facebook::{messenger_attachment, messenger_text};
use fb_openchannel::sim::motion::Mode;

use crate::harness::*;
use crate::wait_until;
use fb_openchannel::model::ItemState;

/// `(fixture, page, notify bodies in order)`; no bodies = recorded but not forwarded.
const FIXTURES: &[(&str, &str, &[&str])] = &[
    ("messenger-text-restfb.json", PAGE_A, &["hello, world!"]),
    (
        "messenger-quick-reply-restfb.json",
        PAGE_B,
        &["quick reply text"],
    ),
    (
        "messenger-postback-referral-restfb.json",
        PAGE_A,
        &["[via m.me link ref=ref_data_in_m_dot_me_param]\n[button] USER_DEFINED_PAYLOAD"],
    ),
    (
        "messenger-reply-to-restfb.json",
        PAGE_A,
        &["> (reply to an earlier message)\nhello, world!"],
    ),
    (
        "messenger-message-edit-restfb.json",
        PAGE_A,
        &["[edited] hello, world!"],
    ),
    (
        "messenger-is-deleted-restfb.json",
        PAGE_A,
        &["[the customer deleted a message]"],
    ),
    (
        "messenger-attachment-location-restfb.json",
        PAGE_A,
        &["[location] 12.34, 43.21 https://www.google.com/maps?q=12.34,43.21"],
    ),
    (
        "messenger-attachment-fallback-restfb.json",
        PAGE_A,
        &["[link] Legacy Attachment https://www.messenger.com/"],
    ),
    (
        "messenger-sticker-restfb.json",
        PAGE_A,
        &["[sticker] https://scontent.xx.fbcdn.net/sticker.png"],
    ),
    // "IMAGE_URL" is no URL: the file cannot be fetched, so the agent gets the link as text.
    (
        "messenger-attachment-image-restfb.json",
        PAGE_A,
        &["[image] IMAGE_URL"],
    ),
    ("messenger-echo-restfb.json", PAGE_A, &[]),
    ("messenger-standby-echo-restfb.json", PAGE_A, &[]),
    ("messenger-read-restfb.json", PAGE_A, &[]),
    ("messenger-delivery-restfb.json", PAGE_A, &[]),
    // A reaction is a note now, but this sample's sender is the text "USER_ID": not an
    // id, so kept as failed, never delivered (see `replies` for a real one).
    ("messenger-reaction-restfb.json", PAGE_B, &[]),
    ("messenger-referral-restfb.json", PAGE_A, &[]),
    ("messenger-pass-thread-control-restfb.json", PAGE_B, &[]),
    ("instagram-messaging-seen-restfb.json", PAGE_A, &[]),
    ("instagram-attachment-unsupported-restfb.json", PAGE_A, &[]),
];

#[tokio::test]
async fn every_messenger_fixture_gives_the_documented_notifies() {
    for (name, page, bodies) in FIXTURES {
        let bench = Bench::start().await;
        // Delivery receipts are a field the daemon does not subscribe to, but an admin
        // may have in the App Dashboard: they are recorded like the rest.
        bench.deliver_any_field(&fixture(name)).await;
        let account = if *page == PAGE_A { "1" } else { "2" };

        if bodies.is_empty() {
            let items = bench.items().await;
            assert!(!items.is_empty(), "{name}: the event must be recorded");
            assert!(
                items
                    .iter()
                    .all(|i| matches!(i.state, ItemState::Skipped | ItemState::Failed)),
                "{name}: {items:?}"
            );
            // Proof of silence: a later message of the same customer arrives alone.
            bench
                .deliver(&messenger_text(
                    page,
                    PSID,
                    "mid.marker",
                    9_999_999_999_999,
                    "marker",
                ))
                .await;
            let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
            assert_eq!(notes.len(), 1, "{name}: {notes:?}");
            // A referral is not forwarded itself: it opens the customer's next notify.
            let expected = if *name == "messenger-referral-restfb.json" {
                "[via m.me link ref=ref_data_in_m_dot_me_param]\nmarker"
            } else {
                "marker"
            };
            assert_eq!(notes[0].notify.body, expected, "{name}");
        } else {
            let notes = bench
                .motion()
                .wait_for_notifies(bodies.len(), WAIT)
                .await
                .unwrap();
            let got: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
            assert_eq!(&got, bodies, "{name}");
            for n in &notes {
                assert_eq!(n.account, account, "{name}");
                assert_eq!(n.notify.from, PSID, "{name}");
                assert_eq!(n.notify.map_key, "facebook", "{name}");
                assert_eq!(n.notify.first_name.as_deref(), Some("Ada"), "{name}");
                assert_eq!(n.notify.last_name.as_deref(), Some("Lovelace"), "{name}");
                assert_eq!(
                    n.notify.thread_id, None,
                    "{name}: Messenger has no threadId"
                );
                assert_eq!(n.notify.attachment_id, None, "{name}");
            }
            if *page == PAGE_A {
                assert_eq!(
                    notes[0].query,
                    format!("token={RECEIVE_TOKEN_A}"),
                    "the Receive URL's query is kept"
                );
            }
        }
        bench.stop().await;
    }
}

#[tokio::test]
async fn a_photo_is_uploaded_to_motion_and_notified_with_its_attachment_id() {
    let bench = Bench::start().await;
    let photo: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let url = bench
        .peers
        .graph
        .add_file("39178_n.jpg", "image/jpeg", photo.clone());
    let body = messenger_attachment(PAGE_A, PSID, "mid.photo", 1_700_000_000_000, "image", &url);
    bench.deliver(&body).await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let uploads = bench.motion().uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].bytes.as_ref(),
        photo.as_slice(),
        "Motion got the bytes Facebook served"
    );
    assert_eq!(uploads[0].name, "39178_n.jpg");
    assert_eq!(uploads[0].content_type, "image/jpeg");
    assert_eq!(notes[0].notify.body, "39178_n.jpg");
    assert!(notes[0].notify.attachment_id.is_some());
    bench.stop().await;
}

#[tokio::test]
async fn text_and_two_files_become_three_ordered_notifies() {
    let bench = Bench::start().await;
    let a = bench
        .peers
        .graph
        .add_file("a.pdf", "application/pdf", &b"%PDF-1.4 a"[..]);
    let b = bench
        .peers
        .graph
        .add_file("b.mp4", "video/mp4", &b"\x00\x00\x00\x18ftypmp42"[..]);
    let body = format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE_A}","time":1,"messaging":[{{"sender":{{"id":"{PSID}"}},"recipient":{{"id":"{PAGE_A}"}},"timestamp":5,
        "message":{{"mid":"mid.multi","text":"see attached","attachments":[{{"type":"file","payload":{{"url":"{a}"}}}},{{"type":"video","payload":{{"url":"{b}"}}}}]}}}}]}}]}}"#
    );
    bench.deliver(&body).await;
    let notes = bench.motion().wait_for_notifies(3, WAIT).await.unwrap();
    let bodies: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
    assert_eq!(bodies, ["see attached", "a.pdf", "b.mp4"]);
    assert_eq!(bench.motion().uploads().len(), 2);
    bench.stop().await;
}

#[tokio::test]
async fn a_file_facebook_no_longer_has_is_sent_as_its_link() {
    let bench = Bench::start().await;
    let url = format!("{}/cdn/gone.jpg", bench.peers.graph.url());
    bench
        .deliver(&messenger_attachment(
            PAGE_A, PSID, "mid.gone", 1, "image", &url,
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, format!("[image] {url}"));
    assert_eq!(notes[0].notify.attachment_id, None);
    bench.stop().await;
}

#[tokio::test]
async fn replies_and_edits_quote_the_earlier_message() {
    let bench = Bench::start().await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "mid.first",
            1_000,
            "Is my order shipped?",
        ))
        .await;
    let reply = format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE_A}","time":2,"messaging":[{{"sender":{{"id":"{PSID}"}},"recipient":{{"id":"{PAGE_A}"}},"timestamp":2000,
        "message":{{"mid":"mid.second","text":"order 42","reply_to":{{"mid":"mid.first"}}}}}}]}}]}}"#
    );
    bench.deliver(&reply).await;
    let edit = format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE_A}","time":3,"messaging":[{{"sender":{{"id":"{PSID}"}},"recipient":{{"id":"{PAGE_A}"}},"timestamp":3000,
        "message_edit":{{"mid":"mid.first","text":"Is my order 42 shipped?","num_edit":1}}}}]}}]}}"#
    );
    bench.deliver(&edit).await;
    let notes = bench.motion().wait_for_notifies(3, WAIT).await.unwrap();
    assert_eq!(notes[1].notify.body, "> Is my order shipped?\norder 42");
    assert_eq!(
        notes[2].notify.body,
        "[edited] Is my order 42 shipped?\n(was: Is my order shipped?)"
    );
    bench.stop().await;
}

#[tokio::test]
async fn a_refused_name_lookup_gives_a_stable_readable_name() {
    let bench = Bench::start().await;
    bench.peers.graph.refuse_profiles(true);
    bench
        .deliver(&messenger_text(PAGE_A, "555000111", "m1", 1, "hi"))
        .await;
    bench
        .deliver(&messenger_text(PAGE_A, "555000111", "m2", 2, "again"))
        .await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    for n in &notes {
        assert_eq!(n.notify.first_name.as_deref(), Some("Facebook"));
        assert_eq!(n.notify.last_name.as_deref(), Some("user 0111"));
    }
    let lookups = bench
        .peers
        .graph
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/555000111"))
        .count();
    assert_eq!(
        lookups, 2,
        "first and last names, then `name`; the refusal is cached, not asked for every message"
    );
    let auth = bench.peers.graph.requests_but_token_checks()[0]
        .authorization
        .clone()
        .unwrap();
    assert_eq!(
        auth,
        format!("Bearer {TOKEN_A}"),
        "the Page token goes in the header"
    );
    assert!(
        !bench.peers.graph.requests_but_token_checks()[0]
            .query
            .contains(TOKEN_A),
        "never in the URL"
    );
    bench.stop().await;
}

/// Facebook refuses first and last names but gives `name`: it is split at its first
/// space, before any made-up name.
#[tokio::test]
async fn a_name_given_whole_is_split_into_first_and_last() {
    let bench = Bench::start().await;
    bench.peers.graph.give_names_only(true);
    bench
        .peers
        .graph
        .add_profile("555000222", "Ada", "King Lovelace");
    bench
        .deliver(&messenger_text(PAGE_A, "555000222", "m1", 1, "hi"))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.first_name.as_deref(), Some("Ada"));
    assert_eq!(notes[0].notify.last_name.as_deref(), Some("King Lovelace"));
    bench.stop().await;
}

#[tokio::test]
async fn one_post_with_two_pages_reaches_both_accounts() {
    let bench = Bench::start().await;
    let body = format!(
        r#"{{"object":"page","entry":[
        {{"id":"{PAGE_A}","time":1,"messaging":[{{"sender":{{"id":"{PSID}"}},"recipient":{{"id":"{PAGE_A}"}},"timestamp":1,"message":{{"mid":"a1","text":"to A"}}}}]}},
        {{"id":{PAGE_B},"time":1,"messaging":[{{"sender":{{"id":{PSID}}},"recipient":{{"id":{PAGE_B}}},"timestamp":1,"message":{{"mid":"b1","text":"to B"}}}}]}},
        {{"id":"999","time":1,"messaging":[{{"sender":{{"id":"1"}},"recipient":{{"id":"999"}},"timestamp":1,"message":{{"mid":"c1","text":"unknown page"}}}}]}}]}}"#
    );
    bench.deliver(&body).await;
    let mut notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    notes.sort_by(|a, b| a.account.cmp(&b.account));
    assert_eq!(
        (notes[0].account.as_str(), notes[0].notify.body.as_str()),
        ("1", "to A")
    );
    assert_eq!(
        (notes[1].account.as_str(), notes[1].notify.body.as_str()),
        ("2", "to B")
    );
    let items = bench.items().await;
    let unknown = items.iter().find(|i| i.page_id == "999").unwrap();
    assert_eq!(unknown.state, ItemState::Skipped);
    assert!(
        unknown
            .last_error
            .as_deref()
            .unwrap()
            .contains("not configured")
    );
    bench.stop().await;
}

/// A Messenger webhook whose one message carries these attachments.
fn with_attachments(mid: &str, ts: i64, attachments: serde_json::Value) -> String {
    serde_json::json!({
        "object": "page",
        "entry": [{"id": PAGE_A, "time": ts, "messaging": [{
            "sender": {"id": PSID}, "recipient": {"id": PAGE_A}, "timestamp": ts,
            "message": {"mid": mid, "attachments": attachments}
        }]}]
    })
    .to_string()
}

/// Since 2026 stickers come as `type: "sticker"` attachments, with or without
/// `sticker_id`, and until 2026-08-30 beside the old `image` form of the same sticker.
/// Source: Messenger Platform changelog (2026-06-01, "Webhook change with sticker
/// attachment type") and the messages webhook reference, whose example is
/// `{"type": "sticker", "payload": {"url": "<STICKER_URL>"}}`.
#[tokio::test]
async fn stickers_of_the_2026_form_reach_the_agent_as_an_image_once() {
    let bench = Bench::start().await;
    let png = bench
        .peers
        .graph
        .add_file("sticker.png", "image/png", vec![9u8; 300]);
    // The new form alone, without sticker_id.
    bench
        .deliver(&with_attachments(
            "mid.st1",
            1_800_000_000_000,
            serde_json::json!([{"type": "sticker", "payload": {"url": png}}]),
        ))
        .await;
    // The transition form: the same sticker as an image with sticker_id, and as a sticker.
    bench
        .deliver(&with_attachments(
            "mid.st2",
            1_800_000_000_001,
            serde_json::json!([
                {"type": "image", "payload": {"url": png, "sticker_id": 1234567}},
                {"type": "sticker", "payload": {"url": png, "sticker_id": 1234567}}
            ]),
        ))
        .await;
    // The like sticker, in the new form: still a thumbs-up in words.
    bench
        .deliver(&with_attachments(
            "mid.st3",
            1_800_000_000_002,
            serde_json::json!([{"type": "sticker", "payload": {"url": png, "sticker_id": 369239263222822u64}}]),
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(3, WAIT).await.unwrap();
    let bodies: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
    assert_eq!(bodies, ["[sticker]", "[sticker]", "[sticker: 👍]"]);
    assert!(
        notes[0].notify.attachment_id.is_some(),
        "the sticker's image is attached"
    );
    assert!(notes[1].notify.attachment_id.is_some());
    assert_eq!(
        bench.motion().uploads().len(),
        2,
        "the transition form is one sticker"
    );
    assert_eq!(bench.motion().uploads()[0].bytes.len(), 300);
    // Nothing more comes.
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "mid.st4",
            1_800_000_000_003,
            "marker",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(4, WAIT).await.unwrap();
    assert_eq!(notes.len(), 4);
    bench.stop().await;
}

/// Where the customer came from reaches the agent: a referral (an m.me link with a
/// `ref`, an ad) is the first line of the customer's next notify, once.
#[tokio::test]
async fn a_referral_is_the_first_line_of_the_next_message() {
    let bench = Bench::start().await;
    // m.me link, then a message (the fixture's referral is at 1457764197627).
    bench
        .deliver(&fixture("messenger-referral-restfb.json"))
        .await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.after.link",
            1457764198000,
            "Hi!",
        ))
        .await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.second",
            1457764199000,
            "Anyone?",
        ))
        .await;
    // An ad, then a message.
    let ad = serde_json::json!({
        "object": "page",
        "entry": [{"id": PAGE_A, "time": 1457764200000u64, "messaging": [{
            "sender": {"id": PSID}, "recipient": {"id": PAGE_A}, "timestamp": 1457764200000u64,
            "referral": {"source": "ADS", "type": "OPEN_THREAD", "ad_id": "6045246247433",
                         "ads_context_data": {"ad_title": "Winter sale"}}
        }]}]
    });
    bench.deliver(&ad.to_string()).await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.after.ad",
            1457764201000,
            "Is it on?",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(3, WAIT).await.unwrap();
    let bodies: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "[via m.me link ref=ref_data_in_m_dot_me_param]\nHi!",
            "Anyone?",
            "[from ad 6045246247433: \"Winter sale\"]\nIs it on?"
        ]
    );
    bench.stop().await;
}

/// Facebook's webhooks are not ordered: a referral may arrive after the message it
/// brought. While that message still waits for Motion, the referral opens it all the same.
#[tokio::test]
async fn a_referral_that_arrives_after_its_message_still_opens_it() {
    let bench = Bench::start().await;
    bench.motion().set_mode(Mode::Status(503));
    // The fixture's referral is at 1457764197627, the message just after it.
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.before.link",
            1457764198000,
            "Hi!",
        ))
        .await;
    bench
        .deliver(&fixture("messenger-referral-restfb.json"))
        .await;
    // Attempts are one at a time per conversation: the second one Motion receives from
    // now was claimed after the referral was stored, and so is every later one.
    let n = bench.motion().requests();
    wait_until("two more refused attempts", WAIT, || async {
        bench.motion().requests() >= n + 2
    })
    .await;
    bench.motion().set_mode(Mode::Accept);
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(
        notes[0].notify.body,
        "[via m.me link ref=ref_data_in_m_dot_me_param]\nHi!"
    );
    bench.stop().await;
}

/// A customer cannot forge the notes agents trust (DESIGN §4 rule 16): text that begins
/// like a note of ours — first, or on a line of its own — reaches Motion escaped, never
/// byte for byte the note of a reply a colleague sent outside Motion.
#[tokio::test]
async fn a_customer_cannot_forge_the_note_of_a_reply_sent_outside_motion() {
    let bench = Bench::start().await;
    let now = fb_openchannel::store::now_ms();
    let forged = "[sent by the Page outside Motion] Refund approved, reply with your card";
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "mid.forged.1", now, forged))
        .await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "mid.forged.2",
            now + 1,
            "thanks\n\u{200B}[sent by the Page outside Motion] Refund approved",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, format!("\\{forged}"));
    assert_eq!(
        notes[1].notify.body,
        "thanks\n\u{200B}\\[sent by the Page outside Motion] Refund approved"
    );
    for note in &notes {
        assert!(
            !note
                .notify
                .body
                .lines()
                .any(|l| l.trim_start_matches('\u{200B}').starts_with("[sent by")),
            "{:?}",
            note.notify.body
        );
    }
}

/// Meta blocks the Page from messaging (`messaging_policy_enforcement`): `/readyz` names
/// it until Meta lifts the block, and the journal says so.
#[tokio::test]
async fn a_policy_block_is_named_by_readyz_until_it_is_lifted() {
    let bench = Bench::start().await;
    let event = |action: &str| {
        serde_json::json!({"object": "page", "entry": [{"id": PAGE_A, "time": 1, "messaging": [{
            "recipient": {"id": PAGE_A}, "timestamp": 1458692752478u64,
            "policy_enforcement": {"action": action, "reason": "The bot violated our Platform Policies."}
        }]}]})
        .to_string()
    };
    let readyz = || async {
        let url = format!("http://{}/readyz", bench.daemon().local_addr);
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    bench.deliver(&event("block")).await;
    let (status, text) = readyz().await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("blocked the Page from messaging"), "{text}");
    assert!(text.contains("Platform Policies"), "{text}");
    bench.deliver(&event("unblock")).await;
    let (status, text) = readyz().await;
    assert_eq!(status, 200, "{text}");
    bench.stop().await;
}
