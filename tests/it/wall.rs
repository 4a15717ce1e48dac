//! Wall posts and comments: what reaches Motion, and agents answering in place.

use fb_openchannel::sim::facebook::{SendFailure, feed_change, messenger_text};
use fb_openchannel::sim::motion::reply_body;
use fb_openchannel::store::now_ms;
use serde_json::{Value, json};

use crate::harness::*;
use crate::wait_until;
use fb_openchannel::model::{FeedKind, ItemKind, ItemState};

/// The Page of the feed fixtures is PAGE_B.
pub const VISITOR: &str = "5550001";

/// `(fixture, notify bodies as sent, notify bodies when a visitor is the author)`.
/// `FILE:name` stands for an uploaded attachment with that file name.
const FEED_FIXTURES: &[(&str, &[&str], &[&str])] = &[
    (
        "feed-post-add-visitor-restfb.json",
        &["Let's check this"],
        &["Let's check this"],
    ),
    (
        "feed-comment-add-by-page-restfb.json",
        &[],
        &["and the next one"],
    ),
    (
        "feed-comment-add-photo-legacy-sender-restfb.json",
        &[],
        &[
            "and the next one",
            "FILE:16715996_472849323104563_2289972788116415727_o.jpg",
        ],
    ),
    (
        "feed-comment-edited-restfb.json",
        &[],
        &["[edited] Let's see the Webhooks in action :D"],
    ),
    (
        "feed-comment-hide-restfb.json",
        &[],
        &["[this comment was hidden on the Page]"],
    ),
    (
        "feed-comment-remove-restfb.json",
        &[],
        &["[the customer deleted this comment]"],
    ),
    (
        "feed-photo-add-restfb.json",
        &[],
        &["A new really great Photo", "FILE:test.jpg"],
    ),
    (
        "feed-video-add-restfb.json",
        &[],
        &["Test video", "FILE:test.mp4"],
    ),
    (
        "feed-share-add-restfb.json",
        &[],
        &[
            "Ein Link zu was ganz anderem: www.daserste.de",
            "[link] http://www.google.com/",
        ],
    ),
    (
        "feed-status-add-restfb.json",
        &[],
        &["This is just a short test message"],
    ),
    (
        "feed-status-add-photos-restfb.json",
        &[],
        &[
            "This is just a short test message",
            "FILE:exampleimage1.png",
            "FILE:exampleimage2.png",
            "FILE:exampleimage3.png",
        ],
    ),
    ("feed-reaction-add-post-restfb.json", &[], &[]),
    ("feed-reaction-add-comment-restfb.json", &[], &[]),
    ("feed-reaction-add-reply-restfb.json", &[], &[]),
];

/// The fixture with its media URLs served by the simulated Facebook CDN (the real ones
/// are on the internet), and, for `visitor`, its author made a visitor instead of the Page.
fn prepare(bench: &Bench, name: &str, visitor: bool) -> String {
    let mut body: Value = serde_json::from_str(&fixture(name)).unwrap();
    for change in body["entry"][0]["changes"].as_array_mut().unwrap() {
        let value = change["value"].as_object_mut().unwrap();
        for key in ["photo", "link", "video"] {
            if let Some(url) = value.get(key).and_then(Value::as_str).map(str::to_owned) {
                let file = url
                    .split('?')
                    .next()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned();
                if file.contains('.')
                    && (file.ends_with(".jpg") || file.ends_with(".png") || file.ends_with(".mp4"))
                {
                    let mime = if file.ends_with(".mp4") {
                        "video/mp4"
                    } else {
                        "image/jpeg"
                    };
                    value.insert(
                        key.into(),
                        json!(
                            bench
                                .peers
                                .graph
                                .add_file(&file, mime, file.clone().into_bytes())
                        ),
                    );
                }
            }
        }
        if let Some(photos) = value.get_mut("photos").and_then(Value::as_array_mut) {
            for p in photos.iter_mut() {
                let file = p.as_str().unwrap().rsplit('/').next().unwrap().to_owned();
                *p = json!(bench.peers.graph.add_file(
                    &file,
                    "image/png",
                    file.clone().into_bytes()
                ));
            }
        }
        if visitor {
            if value.get("from").and_then(|f| f["id"].as_str()) == Some(PAGE_B) {
                value.get_mut("from").unwrap()["id"] = json!(VISITOR);
            }
            if value
                .get("sender_id")
                .is_some_and(|s| s.to_string().trim_matches('"') == PAGE_B)
            {
                value.insert("sender_id".into(), json!(VISITOR.parse::<u64>().unwrap()));
            }
        }
    }
    body.to_string()
}

#[tokio::test]
async fn every_feed_fixture_gives_the_documented_notifies() {
    for (name, as_sent, as_visitor) in FEED_FIXTURES {
        for (visitor, bodies) in [(false, *as_sent), (true, *as_visitor)] {
            let bench = Bench::start().await;
            let body = prepare(&bench, name, visitor);
            bench.deliver(&body).await;
            let value: Value = serde_json::from_str(&body).unwrap();
            let change = &value["entry"][0]["changes"][0]["value"];
            let case = format!("{name} (visitor: {visitor})");
            if bodies.is_empty() {
                let items = bench.items().await;
                assert!(
                    items.iter().all(|i| i.state == ItemState::Skipped),
                    "{case}: {items:?}"
                );
                bench
                    .deliver(&messenger_text(PAGE_B, PSID, "mid.marker", 1, "marker"))
                    .await;
                let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
                assert_eq!(notes[0].notify.body, "marker", "{case}");
                bench.stop().await;
                continue;
            }
            let notes = bench
                .motion()
                .wait_for_notifies(bodies.len(), WAIT)
                .await
                .unwrap();
            assert_eq!(notes.len(), bodies.len(), "{case}");
            let post = change["post_id"].as_str().unwrap();
            for (note, want) in notes.iter().zip(bodies.iter()) {
                let n = &note.notify;
                assert_eq!(note.account, "2", "{case}");
                match want.strip_prefix("FILE:") {
                    Some(file) => {
                        assert_eq!(n.body, file, "{case}");
                        assert!(n.attachment_id.is_some(), "{case}");
                    }
                    None => assert_eq!(n.body, *want, "{case}"),
                }
                let author = if visitor && *name != "feed-post-add-visitor-restfb.json" {
                    VISITOR
                } else {
                    "8423678347823"
                };
                assert_eq!(n.from, author, "{case}");
                assert_eq!(
                    n.thread_id.as_deref(),
                    Some(post),
                    "{case}: one interaction per post"
                );
                // The form Facebook links to: {page}/posts/{post}, ?comment_id={comment}.
                let url = n.external_url.clone().unwrap();
                let (page, post_own) = post.split_once('_').unwrap();
                let post_link = format!("https://www.facebook.com/{page}/posts/{post_own}");
                match change["comment_id"].as_str() {
                    Some(c) if change["item"] == "comment" => {
                        let own = c.rsplit('_').next().unwrap();
                        assert_eq!(url, format!("{post_link}?comment_id={own}"), "{case}")
                    }
                    _ => assert_eq!(url, post_link, "{case}"),
                }
                let name_field = change["from"]["name"]
                    .as_str()
                    .or(change["sender_name"].as_str())
                    .unwrap();
                let first = name_field.split(' ').next().unwrap();
                assert_eq!(
                    n.first_name.as_deref(),
                    Some(first),
                    "{case}: name from from.name or the legacy sender_name"
                );
            }
            bench.stop().await;
        }
    }
}

fn comment(
    post: &str,
    id: &str,
    parent: &str,
    author: &str,
    name: &str,
    time: i64,
    text: &str,
) -> String {
    feed_change(
        PAGE_B,
        time,
        json!({"item": "comment", "verb": "add", "post_id": post, "comment_id": id, "parent_id": parent,
               "from": {"id": author, "name": name}, "created_time": time, "message": text}),
    )
}

pub fn visitor_post(post: &str, author: &str, time: i64, text: &str) -> String {
    feed_change(
        PAGE_B,
        time,
        json!({"item": "status", "verb": "add", "post_id": post, "from": {"id": author, "name": "Grace Hopper"},
               "created_time": time, "message": text, "published": 1}),
    )
}

fn wall_reply_url(bench: &Bench) -> String {
    format!(
        "http://{}/reply/{PAGE_B}?token={REPLY_TOKEN_B}",
        bench.daemon().local_addr
    )
}

pub fn wall_reply(id: u64, author: &str, post: &str, text: &str, attachment: Option<u64>) -> Value {
    let mut body = reply_body(id, author, text, attachment);
    body["Interaction"]["threadId"] = json!(post);
    body
}

/// A visitor post, two comments on it and a reply to the first comment.
pub async fn a_thread(bench: &Bench) -> (String, i64) {
    let post = format!("{PAGE_B}_777");
    let t = now_ms() / 1000 - 600;
    bench
        .deliver(&visitor_post(
            &post,
            VISITOR,
            t,
            "Is the shop open on Sunday?",
        ))
        .await;
    bench
        .deliver(&comment(
            &post,
            "777_1",
            &post,
            VISITOR,
            "Grace Hopper",
            t + 10,
            "And on holidays?",
        ))
        .await;
    bench
        .deliver(&comment(
            &post,
            "777_2",
            &post,
            "6660002",
            "Alan Turing",
            t + 20,
            "Same question",
        ))
        .await;
    bench
        .deliver(&comment(
            &post,
            "777_3",
            "777_1",
            VISITOR,
            "Grace Hopper",
            t + 30,
            "Especially Easter",
        ))
        .await;
    (post, t)
}

#[tokio::test]
async fn a_post_with_comments_is_one_thread_in_motion_and_the_agent_answers_in_place() {
    let bench = Bench::start().await;
    let (post, t) = a_thread(&bench).await;
    let notes = bench.motion().wait_for_notifies(4, WAIT).await.unwrap();
    let bodies: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "Is the shop open on Sunday?",
            "And on holidays?",
            "Same question",
            "Especially Easter"
        ]
    );
    assert!(
        notes
            .iter()
            .all(|n| n.notify.thread_id.as_deref() == Some(post.as_str())),
        "{notes:?}"
    );

    // Grace's latest comment is a reply to her first: the answer goes under the first.
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7001, VISITOR, &post, "Yes, 10 to 16 h, Easter too.", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let comments = bench.peers.graph.comments();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].object_id, "777_1");
    assert_eq!(
        comments[0].message.as_deref(),
        Some("Yes, 10 to 16 h, Easter too.")
    );
    assert_eq!(bench.peers.graph.send_calls(), 0, "not a Messenger message");
    let call = bench
        .peers
        .graph
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/comments"))
        .unwrap();
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {TOKEN_B}").as_str())
    );

    // Alan only commented on the post: his answer is a reply to his comment.
    let (status, _) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7002, "6660002", &post, "Same hours, Alan.", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(bench.peers.graph.comments()[1].object_id, "777_2");

    // Our own comment comes back as a feed event by the Page: not a customer message.
    let ours = bench.peers.graph.comments()[0].id.clone();
    bench
        .deliver(&comment(
            &post,
            &ours,
            "777_1",
            PAGE_B,
            "The Shop",
            t + 40,
            "Yes, 10 to 16 h, Easter too.",
        ))
        .await;
    bench
        .deliver(&comment(
            &post,
            "777_9",
            &post,
            VISITOR,
            "Grace Hopper",
            t + 50,
            "Thanks!",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(5, WAIT).await.unwrap();
    assert_eq!(notes.len(), 5);
    assert_eq!(notes[4].notify.body, "Thanks!");
    bench.stop().await;
}

#[tokio::test]
async fn an_agent_on_a_post_without_comments_comments_on_the_post() {
    let bench = Bench::start().await;
    let post = format!("{PAGE_B}_888");
    bench
        .deliver(&visitor_post(&post, VISITOR, now_ms() / 1000, "Hello shop"))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let (status, _) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7101, VISITOR, &post, "Hello Grace", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(bench.peers.graph.comments()[0].object_id, post);
    bench.stop().await;
}

#[tokio::test]
async fn a_batch_of_1000_feed_changes_delivered_twice_gives_1000_notifies() {
    // 3 MiB over TLS within the bench's 2 s request timeout failed once on a machine
    // busy with a build: this test is about dedup, not about slow clients.
    let bench = Bench::start_edited(|text| {
        text.replace("request_timeout = \"2s\"", "request_timeout = \"60s\"")
    })
    .await;
    let t = now_ms() / 1000;
    // Long comments, with emoji escaped the way Facebook escapes them: the batch is over
    // 3 MiB, and a 413 would have made Facebook retry it until it gave up.
    let long = "Where is my order? \u{1F620} ".repeat(120);
    let changes: Vec<Value> = (0..1000)
        .map(|i| {
            let post = format!("{PAGE_B}_{}", 5000 + i % 40);
            json!({"field": "feed", "value": {"item": "comment", "verb": "add", "post_id": post,
                   "comment_id": format!("{}_{i}", 5000 + i % 40), "parent_id": post,
                   "from": {"id": format!("{}", 9_000_000 + i % 97), "name": "Visitor"},
                   "created_time": t + i, "message": format!("comment {i}: {long}")}})
        })
        .collect();
    let body = json!({"object": "page", "entry": [{"id": PAGE_B, "time": t, "changes": changes}]})
        .to_string()
        // serde_json writes emoji as UTF-8; Facebook sends them as surrogate pairs.
        .replace('\u{1F620}', "\\ud83d\\ude20");
    assert!(body.len() > 3 * 1024 * 1024, "{} bytes", body.len());
    bench.deliver(&body).await;
    bench.deliver(&body).await;
    let notes = bench.motion().wait_for_notifies(1000, WAIT).await.unwrap();
    bench
        .wait_items("all 1000 are done", |items| {
            items.iter().filter(|i| i.state == ItemState::Done).count() == 1000
        })
        .await;
    assert_eq!(
        bench.items().await.len(),
        1000,
        "the second delivery added nothing"
    );
    assert_eq!(bench.motion().notifies().len(), 1000);
    let mut bodies: Vec<_> = notes.iter().map(|n| n.notify.body.clone()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 1000, "each once");
    bench.stop().await;
}

#[tokio::test]
async fn wall_posts_false_ignores_the_feed_and_keeps_messenger() {
    let bench = Bench::start_with("wall_posts = false").await;
    bench
        .deliver(&visitor_post(
            &format!("{PAGE_B}_1"),
            VISITOR,
            now_ms() / 1000,
            "on the wall",
        ))
        .await;
    bench
        .deliver(&messenger_text(
            PAGE_B,
            PSID,
            "mid.w",
            now_ms(),
            "on Messenger",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, "on Messenger");
    let items = bench.items().await;
    let wall = items
        .iter()
        .find(|i| i.kind == ItemKind::Feed(FeedKind::Post))
        .unwrap();
    assert_eq!(wall.state, ItemState::Skipped);
    assert_eq!(
        wall.last_error.as_deref(),
        Some("wall_posts = false for this page")
    );
    bench.stop().await;
}

#[tokio::test]
async fn an_agent_photo_on_a_wall_thread_is_a_multipart_comment_with_motions_bytes() {
    let bench = Bench::start().await;
    let (post, _) = a_thread(&bench).await;
    let photo: Vec<u8> = (0..30_000u32).map(|i| (i % 241) as u8).collect();
    let id = bench
        .motion()
        .add_file("opening-hours.png", "image/png", photo.clone());
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7201, VISITOR, &post, "Our hours:", Some(id)),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let c = &bench.peers.graph.comments()[0];
    assert_eq!(c.message.as_deref(), Some("Our hours:"));
    let (name, mime, bytes) = c.photo.clone().unwrap();
    assert_eq!(
        (name.as_str(), mime.as_str()),
        ("opening-hours.png", "image/png")
    );
    assert_eq!(bytes.as_ref(), photo.as_slice());

    // A PDF cannot be a comment: the agent is told so, and nothing is posted.
    let pdf = bench
        .motion()
        .add_file("menu.pdf", "application/pdf", &b"%PDF"[..]);
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7202, VISITOR, &post, "menu.pdf", Some(pdf)),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("can carry a photo"),
        "{answer}"
    );
    assert_eq!(bench.peers.graph.comments().len(), 1);
    bench.stop().await;
}

#[tokio::test]
async fn answering_a_deleted_post_tells_the_agent_why() {
    let bench = Bench::start().await;
    let post = format!("{PAGE_B}_999");
    bench
        .deliver(&visitor_post(&post, VISITOR, now_ms() / 1000, "hello"))
        .await;
    bench.peers.graph.delete_object(&post);
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7301, VISITOR, &post, "Hi!", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{answer}"
    );
    bench.stop().await;
}

#[tokio::test]
async fn private_comment_replies_go_by_messenger_once_per_comment() {
    let bench = Bench::start_with("comment_reply = \"private\"").await;
    let (post, _) = a_thread(&bench).await;
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7401, VISITOR, &post, "Let's talk in private", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let sent = bench.peers.graph.sent();
    assert_eq!(
        sent[0].recipient,
        json!({"comment_id": "777_3"}),
        "her latest comment"
    );
    assert_eq!(sent[0].text.as_deref(), Some("Let's talk in private"));
    assert!(bench.peers.graph.comments().is_empty());

    let (status, answer) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7402, VISITOR, &post, "Another one", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("only one"),
        "{answer}"
    );
    assert_eq!(bench.peers.graph.sent().len(), 1);
    bench.stop().await;
}

#[tokio::test]
async fn private_replies_are_refused_after_7_days() {
    let bench = Bench::start_with("comment_reply = \"private\"").await;
    let post = format!("{PAGE_B}_444");
    let old = now_ms() / 1000 - 8 * 24 * 3600;
    bench
        .deliver(&visitor_post(&post, VISITOR, old, "old post"))
        .await;
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7501, VISITOR, &post, "Late answer", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("7 days"),
        "{answer}"
    );
    assert_eq!(bench.peers.graph.send_calls(), 0);
    bench.stop().await;
}

/// Code 368 on a comment throttles comments, often for hours. It used to stop every
/// send of the Page, Messenger included, until a restart. Now comments pause alone, the
/// agent is told once, and the comment goes out after the pause by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_comment_pauses_comments_only_and_resumes_by_itself() {
    let bench = Bench::start_edited(|t| {
        t.replace("[facebook]\n", "[facebook]\nblock_pause = \"2s\"\n")
            .replacen(
                &format!("reply_token = \"{REPLY_TOKEN_B}\""),
                &format!("reply_token = \"{REPLY_TOKEN_B}\"\ncomment_interval = \"0s\""),
                1,
            )
    })
    .await;
    let (post, _) = a_thread(&bench).await;
    bench.motion().wait_for_notifies(4, WAIT).await.unwrap();
    // The customer also writes on Messenger.
    bench
        .deliver(&messenger_text(
            PAGE_B,
            VISITOR,
            "mid.w368",
            now_ms() - 1000,
            "hi",
        ))
        .await;
    bench.motion().wait_for_notifies(5, WAIT).await.unwrap();
    bench.peers.graph.fail_sends(vec![SendFailure::graph(
        400,
        368,
        Some(1390008),
        "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
    )]);
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &wall_reply(7401, VISITOR, &post, "Yes, open on Sunday.", None),
        )
        .await
        .unwrap();
    told_comments_are_throttled(status, &answer);
    let told = answer["message"].as_str().unwrap();
    assert!(told.contains("next try at"), "{told}");
    let ready = get_text(format!("http://{}/readyz", bench.daemon().local_addr)).await;
    assert!(
        ready.contains(&format!("page {PAGE_B}: Facebook throttles comments")),
        "{ready}"
    );

    // Messenger replies of the same Page go out at once.
    let started = std::time::Instant::now();
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &wall_reply_url(&bench),
            &reply_body(7402, VISITOR, "Also on Messenger: yes.", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    // The comment goes out once the pause is over, without a restart.
    let graph = &bench.peers.graph;
    wait_until("the throttled comment goes out", WAIT, || async {
        graph.comments().len() == 1
    })
    .await;
    assert_eq!(
        graph.comments()[0].message.as_deref(),
        Some("Yes, open on Sunday.")
    );
    bench.stop().await;
}

/// Comments a Page posts are paced (`comment_interval`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_of_a_page_are_paced() {
    let bench = Bench::start_edited(|t| {
        t.replacen(
            &format!("reply_token = \"{REPLY_TOKEN_B}\""),
            &format!("reply_token = \"{REPLY_TOKEN_B}\"\ncomment_interval = \"1s\""),
            1,
        )
    })
    .await;
    let (post, _) = a_thread(&bench).await;
    bench.motion().wait_for_notifies(4, WAIT).await.unwrap();
    let url = wall_reply_url(&bench);
    two_answers_at_once_go_out_a_second_apart(&bench, [&url, &url], &post).await;
    bench.stop().await;
}

/// Two agents answer the thread of `post` at once, through the Reply URLs `urls`: the
/// two comments go out at least `comment_interval` (1 s) apart.
pub async fn two_answers_at_once_go_out_a_second_apart(bench: &Bench, urls: [&str; 2], post: &str) {
    let (first, second) = (
        wall_reply(7501, VISITOR, post, "First.", None),
        wall_reply(7502, "6660002", post, "Second.", None),
    );
    let (a, b) = tokio::join!(
        bench.motion().agent_reply(urls[0], &first),
        bench.motion().agent_reply(urls[1], &second),
    );
    assert_eq!(a.unwrap().0, 200);
    assert_eq!(b.unwrap().0, 200);
    let comments = bench.peers.graph.comments();
    assert_eq!(comments.len(), 2);
    let gap = comments[1].received_at - comments[0].received_at;
    assert!(
        gap >= std::time::Duration::from_millis(950),
        "{gap:?} between two comments"
    );
}

/// Reactions on the wall stay out of Motion unless the page sets `wall_reactions`:
/// then each is a note in the post's thread, from the visitor.
#[tokio::test]
async fn wall_reactions_are_notes_only_when_the_page_asks() {
    let reaction = |verb: &str, time: i64| {
        feed_change(
            PAGE_A,
            time,
            json!({
                "item": "reaction", "verb": verb, "reaction_type": "love",
                "post_id": format!("{PAGE_A}_777"), "parent_id": format!("{PAGE_A}_777"),
                "from": {"id": VISITOR, "name": "Vera Visitor"}, "created_time": time
            }),
        )
    };
    let quiet = Bench::start().await;
    quiet.deliver(&reaction("add", 1_700_000_000)).await;
    quiet
        .wait_items("the reaction is recorded", |items| {
            items.len() == 1 && items[0].state == ItemState::Skipped
        })
        .await;
    quiet.stop().await;

    let bench = Bench::start_edited(|t| {
        t.replacen(
            &format!("reply_token = \"{REPLY_TOKEN_A}\"\n"),
            &format!("reply_token = \"{REPLY_TOKEN_A}\"\nwall_reactions = true\n"),
            1,
        )
    })
    .await;
    bench.deliver(&reaction("add", 1_700_000_000)).await;
    bench.deliver(&reaction("remove", 1_700_000_060)).await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, "[reacted love to this post]");
    assert_eq!(
        notes[1].notify.body,
        "[removed the reaction love from this post]"
    );
    assert_eq!(notes[0].notify.from, VISITOR);
    assert_eq!(
        notes[0].notify.thread_id.as_deref(),
        Some(format!("{PAGE_A}_777").as_str())
    );
    bench.stop().await;
}

/// A Reply URL's answer for a comment held while Facebook throttles the Page's comments.
pub fn told_comments_are_throttled(status: u16, answer: &Value) {
    assert_eq!(status, 202, "{answer}");
    let told = answer["message"].as_str().unwrap();
    assert!(
        told.contains("Facebook is throttling comments on this Page"),
        "{told}"
    );
}
