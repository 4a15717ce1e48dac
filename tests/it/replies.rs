//! Agents' replies: Motion calls the Reply URL, the customer gets the message on
//! Messenger, or the agent is told clearly why not.

use fb_openchannel::sim::facebook::{SendFailure, messenger_text};
use fb_openchannel::sim::motion::reply_body;
use fb_openchannel::store::now_ms;
use serde_json::json;

use crate::harness::*;
use fb_openchannel::model::{Direction, ItemKind, ItemState, MessagingKind};

const HOUR: i64 = 3600 * 1000;

fn reply_url(bench: &Bench, page: &str, token: &str) -> String {
    format!(
        "http://{}/reply/{page}?token={token}",
        bench.daemon().local_addr
    )
}

/// The customer writes at `ms_ago` before now, and the message is stored.
async fn customer_wrote(bench: &Bench, psid: &str, ms_ago: i64) {
    let ts = now_ms() - ms_ago;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            psid,
            &format!("mid.in.{ts}"),
            ts,
            "hello?",
        ))
        .await;
}

async fn agent(bench: &Bench, body: serde_json::Value) -> (u16, serde_json::Value) {
    bench
        .motion()
        .agent_reply(&reply_url(bench, PAGE_A, REPLY_TOKEN_A), &body)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_reply_within_24_hours_is_sent_as_response_and_motion_gets_200() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let (status, answer) = agent(
        &bench,
        reply_body(9001, PSID, "Your parcel left today.", None),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["message_id"], "m_sim_1");
    let sent = bench.peers.graph.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].page_id, PAGE_A);
    assert_eq!(sent[0].recipient, json!({"id": PSID}));
    assert_eq!(sent[0].messaging_type, "RESPONSE");
    assert_eq!(sent[0].tag, None);
    assert_eq!(sent[0].text.as_deref(), Some("Your parcel left today."));
    let call = bench
        .peers
        .graph
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/messages"))
        .unwrap();
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {TOKEN_A}").as_str())
    );
    assert!(
        !call.query.contains(TOKEN_A),
        "the token never goes in the URL"
    );
    bench.stop().await;
}

#[tokio::test]
async fn after_24_hours_only_the_human_agent_tag_may_answer_and_never_after_7_days() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, 28 * HOUR).await;
    let (status, answer) = agent(&bench, reply_body(9002, PSID, "Sorry for the wait", None)).await;
    assert_eq!(status, 422, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("28 h ago") && message.contains("human_agent_tag"),
        "{message}"
    );
    assert_eq!(
        bench.peers.graph.send_calls(),
        0,
        "refused without calling Graph"
    );
    bench.stop().await;

    // Page B has the tag enabled (the bench's extra lines land in its table).
    let bench = Bench::start_with("human_agent_tag = true").await;
    let ts = now_ms() - 28 * HOUR;
    bench
        .deliver(&messenger_text(PAGE_B, PSID, "mid.b", ts, "hello?"))
        .await;
    let url = reply_url(&bench, PAGE_B, REPLY_TOKEN_B);
    let (status, answer) = bench
        .motion()
        .agent_reply(&url, &reply_body(9003, PSID, "Sorry for the wait", None))
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let sent = bench.peers.graph.sent();
    assert_eq!(sent[0].messaging_type, "MESSAGE_TAG");
    assert_eq!(sent[0].tag.as_deref(), Some("HUMAN_AGENT"));

    let old = now_ms() - 8 * 24 * HOUR;
    bench
        .deliver(&messenger_text(PAGE_B, "4242", "mid.old", old, "long ago"))
        .await;
    let (status, answer) = bench
        .motion()
        .agent_reply(&url, &reply_body(9004, "4242", "Hello?", None))
        .await
        .unwrap();
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("after 7 days"),
        "{answer}"
    );
    assert_eq!(bench.peers.graph.send_calls(), 1);
    bench.stop().await;
}

#[tokio::test]
async fn the_same_reply_posted_twice_is_sent_once() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let body = reply_body(9005, PSID, "Only once", None);
    let (first, a) = agent(&bench, body.clone()).await;
    let (second, b) = agent(&bench, body).await;
    assert_eq!((first, second), (200, 200), "{a} {b}");
    assert_eq!(a["message_id"], b["message_id"]);
    assert_eq!(bench.peers.graph.send_calls(), 1);
    bench.stop().await;
}

#[tokio::test]
async fn a_rate_limit_answers_202_then_the_reply_goes_out_after_backoff() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    bench.peers.graph.fail_sends(vec![SendFailure::graph(
        400,
        613,
        None,
        "(#613) Calls to this api have exceeded the rate limit.",
    )]);
    let (status, answer) = agent(&bench, reply_body(9006, PSID, "After the limit", None)).await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("rate-limited"),
        "{answer}"
    );
    let sent = bench.peers.graph.wait_for_sent(1, WAIT).await.unwrap();
    assert_eq!(sent[0].text.as_deref(), Some("After the limit"));
    assert_eq!(bench.peers.graph.send_calls(), 2);
    bench
        .wait_items("the reply item is done", |items| {
            items
                .iter()
                .any(|i| i.direction == Direction::Outbound && i.state == ItemState::Done)
        })
        .await;
    bench.stop().await;
}

/// A rate limit whose `x-business-use-case-usage` says to come back in
/// `estimated_time_to_regain_access` minutes.
fn rate_limited_for(minutes: &str) -> SendFailure {
    SendFailure {
        headers: vec![(
            "x-business-use-case-usage".into(),
            format!(
                r#"{{"{PAGE_A}":[{{"type":"pages","call_count":100,"estimated_time_to_regain_access":{minutes}}}]}}"#
            ),
        )],
        ..SendFailure::graph(400, 32, None, "(#32) Page request limit reached")
    }
}

/// A bench whose items are parked after `window`, where the customer wrote an hour ago.
async fn giving_up_after(window: &str) -> Bench {
    let bench = Bench::start_edited(|text| {
        text.replace(
            r#"give_up_after = "1h""#,
            &format!(r#"give_up_after = "{window}""#),
        )
    })
    .await;
    customer_wrote(&bench, PSID, HOUR).await;
    bench
}

/// Graph's "come back in" is believed up to a day, Meta's longest rate-limit window (a
/// Page's 24-hour sliding one): a header naming years, or more minutes than a u64 of
/// seconds holds, pauses the page's replies for a day, not for ever.
#[tokio::test]
async fn a_rate_limit_hint_of_years_pauses_the_page_for_a_day_at_most() {
    let bench = giving_up_after("72h").await;
    let readyz = format!("http://{}/readyz", bench.daemon().local_addr);
    for (n, minutes) in [(1u64, "10000000"), (2, "18446744073709551615")] {
        bench
            .peers
            .graph
            .fail_sends(vec![rate_limited_for(minutes)]);
        let (status, answer) =
            agent(&bench, reply_body(9100 + n, PSID, "After the limit", None)).await;
        assert_eq!(status, 202, "{answer}");
        let text = get_text(&readyz).await;
        let next = text
            .lines()
            .find_map(|l| l.split_once("next try in ").map(|(_, d)| d.to_owned()))
            .unwrap_or_else(|| panic!("no slow-down in /readyz: {text}"));
        let next = humantime::parse_duration(&next).unwrap();
        assert!(
            next > std::time::Duration::from_secs(23 * 3600)
                && next <= std::time::Duration::from_secs(24 * 3600),
            "{minutes} minutes: next try in {next:?}"
        );
    }
    bench.stop().await;
}

/// Nor does a hint keep a reply past `give_up_after`: the last try is made when the
/// operator's window ends, and a reply still refused then is parked with the reason,
/// not left waiting in silence for the day Graph named.
#[tokio::test]
async fn a_rate_limit_hint_past_giving_up_is_cut_to_the_give_up_time() {
    let bench = giving_up_after("2s").await;
    bench
        .peers
        .graph
        .fail_sends(vec![rate_limited_for("60"), rate_limited_for("60")]);
    let (status, answer) = agent(&bench, reply_body(9110, PSID, "Still limited", None)).await;
    assert_eq!(status, 202, "{answer}");
    bench
        .wait_items("the reply is parked when its window ends", |items| {
            items.iter().any(|i| {
                i.direction == Direction::Outbound
                    && i.state == ItemState::Failed
                    && i.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("gave up after 2s"))
            })
        })
        .await;
    assert_eq!(
        bench.peers.graph.send_calls(),
        2,
        "the first try and the last"
    );
    bench.stop().await;
}

#[tokio::test]
async fn an_invalid_token_marks_the_page_not_ready_until_a_send_succeeds() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let readyz = format!("http://{}/readyz", bench.daemon().local_addr);
    let client = reqwest::Client::new();
    assert_eq!(client.get(&readyz).send().await.unwrap().status(), 200);

    bench.peers.graph.fail_sends(vec![SendFailure::graph(
        401,
        190,
        Some(463),
        "Error validating access token: Session has expired.",
    )]);
    let (status, answer) = agent(&bench, reply_body(9007, PSID, "Hello", None)).await;
    assert_eq!(status, 502, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("access token") && message.contains("access_token"),
        "{message}"
    );
    let r = client.get(&readyz).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("page {PAGE_A}")) && text.contains("access token"),
        "{text}"
    );
    assert!(!text.contains(TOKEN_A));

    let (status, _) = agent(&bench, reply_body(9008, PSID, "Hello again", None)).await;
    assert_eq!(status, 200);
    assert_eq!(client.get(&readyz).send().await.unwrap().status(), 200);
    bench.stop().await;
}

#[tokio::test]
async fn permanent_graph_errors_reach_the_agent_at_once() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    bench.peers.graph.fail_sends(vec![SendFailure::graph(
        400,
        551,
        Some(1545041),
        "(#551) This person isn't available right now.",
    )]);
    let (status, answer) = agent(&bench, reply_body(9009, PSID, "Hello", None)).await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("isn't available"),
        "{answer}"
    );
    assert_eq!(bench.peers.graph.send_calls(), 1, "not retried");
    let items = bench.items().await;
    let out = items
        .iter()
        .find(|i| i.direction == Direction::Outbound)
        .unwrap();
    assert_eq!(out.state, ItemState::Failed);
    bench.stop().await;
}

#[tokio::test]
async fn agent_files_of_each_kind_are_uploaded_with_the_bytes_motion_served() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let files: [(&str, &str, &str); 4] = [
        ("map.png", "image/png", "image"),
        ("clip.mp4", "video/mp4", "video"),
        ("note.mp3", "audio/mpeg", "audio"),
        ("invoice.pdf", "application/pdf", "file"),
    ];
    for (i, (name, mime, _)) in files.iter().enumerate() {
        let bytes: Vec<u8> = (0..(10_000 + i * 1000))
            .map(|b| (b * 31 % 256) as u8)
            .collect();
        let id = bench.motion().add_file(name, mime, bytes);
        let (status, answer) =
            agent(&bench, reply_body(9100 + i as u64, PSID, name, Some(id))).await;
        assert_eq!(status, 200, "{name}: {answer}");
    }
    let sent = bench.peers.graph.sent();
    assert_eq!(
        sent.len(),
        4,
        "one message per file, no text: the body was only the file name"
    );
    for (i, (name, mime, kind)) in files.iter().enumerate() {
        let (got_kind, got_name, got_mime, got_bytes) = sent[i].attachment.clone().unwrap();
        let want: Vec<u8> = (0..(10_000 + i * 1000))
            .map(|b| (b * 31 % 256) as u8)
            .collect();
        assert_eq!(
            (got_kind.as_str(), got_name.as_str(), got_mime.as_str()),
            (*kind, *name, *mime)
        );
        assert_eq!(got_bytes.as_ref(), want.as_slice(), "{name}");
        assert_eq!(sent[i].text, None);
    }
    bench.stop().await;
}

#[tokio::test]
async fn text_and_file_in_one_reply_go_text_first() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let id = bench
        .motion()
        .add_file("invoice.pdf", "application/pdf", &b"%PDF-1.7"[..]);
    let (status, answer) = agent(
        &bench,
        reply_body(9200, PSID, "Here is your invoice", Some(id)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["message_ids"], json!(["m_sim_1", "m_sim_2"]));
    let sent = bench.peers.graph.sent();
    assert_eq!(sent[0].text.as_deref(), Some("Here is your invoice"));
    assert_eq!(sent[1].attachment.as_ref().unwrap().0, "file");
    bench.stop().await;
}

#[tokio::test]
async fn a_file_over_25_mb_is_refused_with_a_clear_message() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let id = bench
        .motion()
        .add_file("huge.mov", "video/quicktime", vec![0u8; 26 * 1024 * 1024]);
    let (status, answer) = agent(&bench, reply_body(9300, PSID, "huge.mov", Some(id))).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("25 MB"),
        "{answer}"
    );
    assert_eq!(bench.peers.graph.send_calls(), 0);
    bench.stop().await;
}

#[tokio::test]
async fn a_4500_character_reply_becomes_three_ordered_messages() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let text: String = (0..900)
        .map(|i| format!("w{i:03}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(text.chars().count(), 4499);
    let (status, answer) = agent(&bench, reply_body(9400, PSID, &text, None)).await;
    assert_eq!(status, 200, "{answer}");
    let sent = bench.peers.graph.sent();
    assert_eq!(sent.len(), 3);
    let joined: String = sent.iter().map(|s| s.text.clone().unwrap()).collect();
    assert_eq!(joined, text, "in order, nothing lost");
    bench.stop().await;
}

/// Our own sends' echoes never come back; a message the Page sent from another tool
/// (Meta Business Suite, the Pages app) reaches the customer's interaction as a note,
/// marked as such — never as if the customer wrote it; the customer's reaction to the
/// agent's message is a note quoting it, added and removed.
#[tokio::test]
async fn echoes_from_other_tools_and_reactions_are_notes_and_our_echoes_are_dropped() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let (status, _) = agent(
        &bench,
        reply_body(9500, PSID, "Your parcel ships today", None),
    )
    .await;
    assert_eq!(status, 200);
    let sent = bench.peers.graph.sent()[0].clone();
    assert!(
        sent.metadata
            .as_deref()
            .unwrap()
            .starts_with("fb-openchannel:")
    );
    bench
        .deliver(&bench.peers.graph.echo_of(&sent, now_ms()))
        .await;
    // The Page answered from the Pages app: an echo with another app's metadata.
    let mut other = sent.clone();
    other.metadata = Some("DEVELOPER_DEFINED_METADATA_STRING".into());
    other.message_id = "m_from_phone".into();
    other.text = Some("Sent from my phone".into());
    bench
        .deliver(&bench.peers.graph.echo_of(&other, now_ms()))
        .await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(
        notes[1].notify.body,
        "[sent by the Page outside Motion] Sent from my phone"
    );
    assert_eq!(notes[1].notify.from, PSID, "in the customer's interaction");
    // A photo sent from Meta Business Suite: the note, then the photo moved into Motion.
    let url = bench
        .peers
        .graph
        .add_file("label.jpg", "image/jpeg", vec![3u8; 2048]);
    let ts = now_ms();
    let photo_echo = serde_json::json!({
        "object": "page",
        "entry": [{"id": PAGE_A, "time": ts, "messaging": [{
            "sender": {"id": PAGE_A}, "recipient": {"id": PSID}, "timestamp": ts,
            "message": {"mid": "m_suite_photo", "is_echo": true, "app_id": 263902037430900u64,
                        "attachments": [{"type": "image", "payload": {"url": url}}]}
        }]}]
    });
    bench.deliver(&photo_echo.to_string()).await;
    let notes = bench.motion().wait_for_notifies(4, WAIT).await.unwrap();
    assert_eq!(notes[2].notify.body, "[sent by the Page outside Motion]");
    assert_eq!(notes[3].notify.body, "label.jpg");
    assert!(notes[3].notify.attachment_id.is_some());
    assert_eq!(bench.motion().uploads()[0].bytes.len(), 2048);

    // The customer reacts to the agent's message, then takes it back.
    for (action, ts) in [("react", now_ms()), ("unreact", now_ms() + 1)] {
        let reaction = serde_json::json!({
            "object": "page",
            "entry": [{"id": PAGE_A, "time": ts, "messaging": [{
                "sender": {"id": PSID}, "recipient": {"id": PAGE_A}, "timestamp": ts,
                "reaction": {"mid": sent.message_id, "action": action, "emoji": "❤", "reaction": "love"}
            }]}]
        });
        bench.deliver(&reaction.to_string()).await;
    }
    let notes = bench.motion().wait_for_notifies(6, WAIT).await.unwrap();
    assert_eq!(
        notes[4].notify.body,
        "[reacted ❤ to: \"Your parcel ships today\"]"
    );
    assert_eq!(
        notes[5].notify.body,
        "[removed the reaction ❤ from: \"Your parcel ships today\"]"
    );

    let items = bench.items().await;
    let echoes: Vec<_> = items
        .iter()
        .filter(|i| i.kind == ItemKind::Messaging(MessagingKind::Echo))
        .collect();
    assert_eq!(echoes.len(), 3, "{items:?}");
    assert_eq!(
        echoes[0].last_error.as_deref(),
        Some("echo of a reply fb-openchannel sent")
    );
    assert_eq!(echoes[0].state, ItemState::Skipped);
    assert_eq!(echoes[1].state, ItemState::Done);
    // Proof that our own echo was not forwarded: the next customer message is the seventh.
    customer_wrote(&bench, PSID, 0).await;
    let notes = bench.motion().wait_for_notifies(7, WAIT).await.unwrap();
    assert_eq!(notes.len(), 7);
    assert_eq!(notes[6].notify.body, "hello?");
    bench.stop().await;
}

/// With `outside_replies` and `reactions` set to "ignore", neither reaches Motion.
#[tokio::test]
async fn outside_replies_and_reactions_set_to_ignore_are_recorded_only() {
    let bench = Bench::start_edited(|t| {
        t.replacen(
            &format!("reply_token = \"{REPLY_TOKEN_A}\"\n"),
            &format!(
                "reply_token = \"{REPLY_TOKEN_A}\"\noutside_replies = \"ignore\"\nreactions = \"ignore\"\n"
            ),
            1,
        )
    })
    .await;
    let ts = now_ms();
    let echo = serde_json::json!({
        "object": "page",
        "entry": [{"id": PAGE_A, "time": ts, "messaging": [{
            "sender": {"id": PAGE_A}, "recipient": {"id": PSID}, "timestamp": ts,
            "message": {"mid": "m_phone_2", "text": "From the phone", "is_echo": true, "app_id": 263902037430900u64}
        }]}]
    });
    let reaction = serde_json::json!({
        "object": "page",
        "entry": [{"id": PAGE_A, "time": ts, "messaging": [{
            "sender": {"id": PSID}, "recipient": {"id": PAGE_A}, "timestamp": ts,
            "reaction": {"mid": "m_phone_2", "action": "react", "emoji": "👍", "reaction": "like"}
        }]}]
    });
    bench.deliver(&echo.to_string()).await;
    bench.deliver(&reaction.to_string()).await;
    customer_wrote(&bench, PSID, 0).await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].notify.body, "hello?");
    let items = bench.items().await;
    assert!(
        items
            .iter()
            .filter(|i| i.kind != ItemKind::Messaging(MessagingKind::Message))
            .all(|i| i.state == ItemState::Skipped),
        "{items:?}"
    );
    bench.stop().await;
}

#[tokio::test]
async fn an_echo_of_our_send_without_metadata_is_still_ours() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let (status, _) = agent(&bench, reply_body(9600, PSID, "From the agent", None)).await;
    assert_eq!(status, 200);
    let mut sent = bench.peers.graph.sent()[0].clone();
    sent.metadata = None;
    bench
        .deliver(&bench.peers.graph.echo_of(&sent, now_ms()))
        .await;
    let items = bench.items().await;
    let echo = items
        .iter()
        .find(|i| i.kind == ItemKind::Messaging(MessagingKind::Echo))
        .unwrap();
    assert_eq!(
        echo.last_error.as_deref(),
        Some("echo of a reply fb-openchannel sent")
    );
    bench.stop().await;
}

#[tokio::test]
async fn bad_reply_calls_get_clear_answers_and_send_nothing() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let client = reqwest::Client::new();
    let good = reply_body(9700, PSID, "hi", None).to_string();
    let cases: Vec<(String, String, u16)> = vec![
        (reply_url(&bench, PAGE_A, "wrong-token"), good.clone(), 401),
        (
            format!("http://{}/reply/{PAGE_A}", bench.daemon().local_addr),
            good.clone(),
            401,
        ),
        (reply_url(&bench, "55555", REPLY_TOKEN_A), good.clone(), 404),
        (reply_url(&bench, PAGE_B, REPLY_TOKEN_A), good.clone(), 401),
        (
            reply_url(&bench, PAGE_A, REPLY_TOKEN_A),
            "this is not json".into(),
            400,
        ),
        (
            reply_url(&bench, PAGE_A, REPLY_TOKEN_A),
            json!({"text": "no body field"}).to_string(),
            400,
        ),
        (
            reply_url(&bench, PAGE_A, REPLY_TOKEN_A),
            json!({"body": "no recipient"}).to_string(),
            400,
        ),
        (
            reply_url(&bench, PAGE_A, REPLY_TOKEN_A),
            "x".repeat(2 * 1024 * 1024),
            413,
        ),
    ];
    for (url, body, want) in cases {
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, want, "{url}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    let r = client
        .get(reply_url(&bench, PAGE_A, REPLY_TOKEN_A))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        client
            .get(format!("http://{}/nope", bench.daemon().local_addr))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .get(format!("http://{}/healthz", bench.daemon().local_addr))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(bench.peers.graph.send_calls(), 0);
    assert!(
        bench
            .items()
            .await
            .iter()
            .all(|i| i.direction == Direction::Inbound),
        "nothing stored"
    );
    bench.stop().await;
}

#[tokio::test]
async fn facebook_unreachable_answers_202_and_the_reply_goes_out_when_it_is_back() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    bench.peers.graph.server.down().await;
    let (status, answer) = agent(&bench, reply_body(9800, PSID, "Sent later", None)).await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().starts_with("Queued"),
        "{answer}"
    );
    bench.peers.graph.server.up().await.unwrap();
    let sent = bench.peers.graph.wait_for_sent(1, WAIT).await.unwrap();
    assert_eq!(sent[0].text.as_deref(), Some("Sent later"));
    bench.stop().await;
}

/// Facebook sometimes stamps a messaging event in seconds (RapidPro Courier keeps a
/// referral fixture like that, handlers/meta/testdata/fba/referral_seconds.json). Read
/// as milliseconds it was January 1970: the agent's answer was refused as "outside the
/// 7-day window".
#[tokio::test]
async fn a_postback_stamped_in_seconds_then_an_agent_reply_goes_out_as_response() {
    let bench = Bench::start().await;
    let seconds = now_ms() / 1000 - 60;
    let postback = json!({
        "object": "page",
        "entry": [{"id": PAGE_A, "time": now_ms(), "messaging": [{
            "sender": {"id": PSID}, "recipient": {"id": PAGE_A}, "timestamp": seconds,
            "postback": {"title": "Track my order", "payload": "TRACK", "mid": "m.pb.seconds"}
        }]}]
    })
    .to_string();
    bench.deliver(&postback).await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let (status, answer) = agent(&bench, reply_body(9100, PSID, "It ships today.", None)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(bench.peers.graph.sent()[0].messaging_type, "RESPONSE");
    bench.stop().await;
}

/// An Openchannel account whose map key is `cf_7`: the notify carries it, and Motion's
/// reply names the customer in `Contact.cf_7` (before, every such reply failed with 400).
#[tokio::test]
async fn a_page_with_its_own_map_key_notifies_and_answers_through_it() {
    let bench = Bench::start_edited(|t| {
        t.replacen(
            &format!("reply_token = \"{REPLY_TOKEN_A}\""),
            &format!("reply_token = \"{REPLY_TOKEN_A}\"\nmap_key = \"cf_7\""),
            1,
        )
    })
    .await;
    customer_wrote(&bench, PSID, HOUR).await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.map_key, "cf_7");
    let mut body = reply_body(9200, PSID, "Hello from Motion", None);
    body["Contact"] = json!({"id": 17, "firstName": "Ada", "cf_7": PSID});
    let (status, answer) = agent(&bench, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(bench.peers.graph.sent()[0].recipient, json!({"id": PSID}));
    bench.stop().await;
}

/// Graph's code 2 ("Service temporarily unavailable") was retried for 72 hours while the
/// agent believed the reply queued. Now it is tried for `facebook.unknown_error_retry`,
/// then the agent reads in the customer's interaction that it was not delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_2_on_a_reply_reaches_the_agent_within_minutes() {
    let bench = Bench::start_edited(|t| {
        t.replace("[facebook]\n", "[facebook]\nunknown_error_retry = \"1s\"\n")
    })
    .await;
    customer_wrote(&bench, PSID, HOUR).await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    bench.peers.graph.fail_sends(
        (0..100)
            .map(|_| SendFailure::graph(503, 2, None, "Service temporarily unavailable"))
            .collect(),
    );
    let (status, answer) = agent(
        &bench,
        reply_body(9300, PSID, "Your refund is on its way.", None),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let note = &notes[1].notify;
    assert_eq!(note.from, PSID, "in the customer's interaction");
    assert!(
        note.body.starts_with(
            "[fb-openchannel] The reply \"Your refund is on its way.\" was NOT delivered"
        ),
        "{}",
        note.body
    );
    assert!(note.body.contains("code 2"), "{}", note.body);
    let failed: Vec<_> = bench
        .items()
        .await
        .into_iter()
        .filter(|i| i.direction == Direction::Outbound && i.state == ItemState::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    bench.stop().await;
}

/// Missing permissions (code 1 subcode 99, 200–299) are final, and the permission is named.
#[tokio::test]
async fn a_missing_permission_is_final_and_named() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    bench.peers.graph.fail_sends(vec![SendFailure::graph(
        400,
        1,
        Some(99),
        "An unknown error occurred",
    )]);
    let (status, answer) = agent(&bench, reply_body(9400, PSID, "Hello", None)).await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("pages_messaging"),
        "{answer}"
    );
    bench.stop().await;
}

/// Motion puts the attached file's name in the body; its metadata may give it as
/// `basename` rather than `name`. Either way the name is not sent as a text of its own.
#[tokio::test]
async fn a_body_that_is_the_files_basename_is_not_sent_as_text() {
    let bench = Bench::start().await;
    customer_wrote(&bench, PSID, HOUR).await;
    let id = bench.motion().add_file_with_basename(
        "2f9a1c0e-stored.pdf",
        "invoice-1042.pdf",
        "application/pdf",
        vec![5u8; 2048],
    );
    let (status, answer) =
        agent(&bench, reply_body(9500, PSID, "invoice-1042.pdf", Some(id))).await;
    assert_eq!(status, 200, "{answer}");
    let sent = bench.peers.graph.sent();
    assert_eq!(sent.len(), 1, "the file only: {sent:?}");
    assert!(sent[0].attachment.is_some());
    assert_eq!(sent[0].text, None);
    bench.stop().await;
}
