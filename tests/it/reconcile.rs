//! Reconciliation with the Conversations API: a message in the account's inbox that no
//! webhook brought reaches Motion once, in its conversation's order; what came by webhook
//! is not delivered again; a second run adds nothing; the list is paged; Meta's "too many
//! calls" pauses a run and it resumes; the same for an Instagram account and from the
//! command line.

use std::process::Command;
use std::time::Duration;

use fb_openchannel::relay::reconcile;
use fb_openchannel::sim::facebook::{InboxMessage, SendFailure, instagram_text, messenger_text};

use crate::harness::*;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A customer's text message at `at_ms`, on whole seconds as Graph shows them.
fn customer(mid: &str, text: &str, at_ms: i64) -> InboxMessage {
    InboxMessage {
        mid: mid.into(),
        from_customer: true,
        text: Some(text.into()),
        at_ms: at_ms / 1000 * 1000,
        image_url: None,
    }
}

fn bodies(bench: &Bench) -> Vec<String> {
    bench
        .motion()
        .notifies()
        .into_iter()
        .map(|n| n.notify.body)
        .collect()
}

#[tokio::test]
async fn a_message_meta_never_sent_reaches_motion_once_between_its_neighbours() {
    let bench = Bench::start().await;
    let t = now_ms() - 600_000;
    let graph = &bench.peers.graph;
    for (mid, text, at) in [
        ("m_first", "first", t),
        ("m_lost", "lost on the way", t + 60_000),
        ("m_third", "third", t + 120_000),
    ] {
        graph.add_inbox_message(PAGE_A, "messenger", PSID, customer(mid, text, at));
    }
    // Motion is down while the webhooks of the first and third come: they wait.
    bench.motion().down().await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m_first",
            t / 1000 * 1000,
            "first",
        ))
        .await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m_third",
            t / 1000 * 1000 + 120_000,
            "third",
        ))
        .await;
    let shared = &bench.daemon().shared;
    let since = now_ms() - 3_600_000;

    let listed = reconcile::account(shared, PAGE_A, since, true)
        .await
        .unwrap();
    assert_eq!(listed.conversations, 1);
    assert_eq!(listed.messages, 3);
    let mids: Vec<&str> = listed.missing.iter().map(|m| m.mid.as_str()).collect();
    assert_eq!(mids, ["m_lost"]);
    assert_eq!(listed.stored, 0, "a dry run stores nothing");
    assert_eq!(bench.items().await.len(), 2);

    let found = reconcile::account(shared, PAGE_A, since, false)
        .await
        .unwrap();
    assert_eq!(found.customer_missing(), 1);
    assert_eq!(found.stored, 1);
    assert_eq!(found.missing[0].customer, PSID);

    bench.motion().up().await;
    bench.motion().wait_for_notifies(3, WAIT).await.unwrap();
    assert_eq!(bodies(&bench), ["first", "lost on the way", "third"]);

    let again = reconcile::account(shared, PAGE_A, since, false)
        .await
        .unwrap();
    assert!(again.missing.is_empty(), "{:?}", again.missing);
    assert_eq!(again.stored, 0);
    assert_eq!(bench.items().await.len(), 3);
    assert_eq!(bench.motion().notifies().len(), 3);
    bench.stop().await;
}

#[tokio::test]
async fn every_page_of_conversations_is_read_and_nothing_past_the_window() {
    let bench = Bench::start().await;
    let graph = &bench.peers.graph;
    let t = now_ms() - 1_200_000;
    // 60 conversations in the window: three pages of 25.
    for i in 0..60 {
        let psid = format!("7000000000{i:02}");
        graph.add_inbox_message(
            PAGE_A,
            "messenger",
            &psid,
            customer(&format!("m_many{i}"), &format!("hello {i}"), t + i * 1000),
        );
    }
    // One from before the window.
    graph.add_inbox_message(
        PAGE_A,
        "messenger",
        "700000000099",
        customer("m_old", "old", now_ms() - 5 * 3_600_000),
    );
    let since = now_ms() - 3_600_000;
    let found = reconcile::account(&bench.daemon().shared, PAGE_A, since, false)
        .await
        .unwrap();
    assert_eq!(found.conversations, 60);
    assert_eq!(found.missing.len(), 60);
    assert!(found.missing.iter().all(|m| m.mid != "m_old"));
    assert_eq!(
        graph.inbox_calls(),
        3,
        "three pages of conversations, one call each"
    );
    bench.motion().wait_for_notifies(60, WAIT).await.unwrap();
    let mut got = bodies(&bench);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 60);
    bench.stop().await;
}

#[tokio::test]
async fn too_many_calls_pauses_the_run_and_it_resumes() {
    let bench = Bench::start().await;
    let graph = &bench.peers.graph;
    graph.add_inbox_message(
        PAGE_A,
        "messenger",
        PSID,
        customer("m_after_pause", "still here", now_ms() - 60_000),
    );
    graph.fail_inbox_calls(vec![
        SendFailure::graph(400, 4, None, "(#4) Application request limit reached"),
        SendFailure::graph(
            400,
            613,
            None,
            "Calls to this api have exceeded the rate limit.",
        ),
    ]);
    let since = now_ms() - 3_600_000;
    let found = reconcile::account(&bench.daemon().shared, PAGE_A, since, false)
        .await
        .unwrap();
    assert_eq!(found.stored, 1);
    assert_eq!(graph.inbox_calls(), 3, "two refused, then the one answered");
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(bodies(&bench), ["still here"]);

    // A refusal that is not about pace ends the run with what an admin can do.
    graph.fail_inbox_calls(vec![SendFailure::graph(
        400,
        190,
        Some(460),
        "Error validating access token: The session has been invalidated.",
    )]);
    let e = reconcile::account(&bench.daemon().shared, PAGE_A, since, false)
        .await
        .unwrap_err();
    assert!(e.hint().contains("setup"), "{e}: {}", e.hint());
    bench.stop().await;
}

#[tokio::test]
async fn an_instagram_accounts_inbox_is_reconciled_the_same_way() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    let graph = &bench.peers.graph;
    graph.add_instagram_profile(IGSID, Some("Jane Doe"), "jane.doe");
    graph.link_instagram(PAGE_A, IG_ACCOUNT);
    let t = now_ms() - 300_000;
    graph.add_inbox_message(
        IG_ACCOUNT,
        "instagram",
        IGSID,
        customer("m_ig1", "came by webhook", t),
    );
    graph.add_inbox_message(
        IG_ACCOUNT,
        "instagram",
        IGSID,
        customer("m_ig2", "never came", t + 30_000),
    );
    bench
        .deliver(&instagram_text(
            IG_ACCOUNT,
            IGSID,
            "m_ig1",
            t / 1000 * 1000,
            "came by webhook",
        ))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let since = now_ms() - 3_600_000;
    let shared = &bench.daemon().shared;
    let found = reconcile::account(shared, IG_ACCOUNT, since, false)
        .await
        .unwrap();
    let mids: Vec<&str> = found.missing.iter().map(|m| m.mid.as_str()).collect();
    assert_eq!(mids, ["m_ig2"]);
    bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(bodies(&bench), ["came by webhook", "never came"]);
    let notifies = bench.motion().notifies();
    assert_eq!(
        notifies[0].account, notifies[1].account,
        "the Instagram account's own"
    );
    // The Page's Messenger inbox is another one: nothing of Instagram's there.
    let page = reconcile::account(shared, PAGE_A, since, false)
        .await
        .unwrap();
    assert_eq!(page.conversations, 0);
    let again = reconcile::account(shared, IG_ACCOUNT, since, false)
        .await
        .unwrap();
    assert!(again.missing.is_empty());
    bench.stop().await;
}

// The command runs as a process while this runtime serves the simulated peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_command_lists_with_dry_run_and_stores_without_it() {
    let peers = Peers::start().await;
    peers.graph.add_inbox_message(
        PAGE_A,
        "messenger",
        PSID,
        customer("m_cli", "found from the command line", now_ms() - 120_000),
    );
    let text = peers.config_toml("");
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(binary())
            .args(["reconcile", "--config"])
            .arg(&path)
            .args(["--page", PAGE_A, "--since", "1h"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 conversation (1 message), 1 message Meta did not send, listed only"),
        "{out}"
    );
    assert!(out.contains("m_cli"), "{out}");
    let (code, out, err) = run(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 stored"), "{out}");
    let (code, out, _) = run(&["--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["missing"].as_array().unwrap().len(), 0, "{out}");

    // The daemon started on that state delivers what the command stored.
    let bench = Bench::start_on(peers, &text).await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(bodies(&bench), ["found from the command line"]);

    // An account the config does not have is named.
    let (code, _, err) = {
        let out = Command::new(binary())
            .args(["reconcile", "--config"])
            .arg(&path)
            .args(["--page", "999999999"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, 1);
    assert!(
        err.contains("no [[page]] or [[instagram]] account 999999999"),
        "{err}"
    );
    bench.stop().await;
}

/// The daemon compares by itself: at start (looking back over its downtime), then every
/// `reconcile.every`; what it recovered is counted per account.
#[tokio::test]
async fn the_daemon_reconciles_by_itself_at_start_and_counts_what_it_recovered() {
    let peers = Peers::start().await;
    peers.graph.add_inbox_message(
        PAGE_A,
        "messenger",
        PSID,
        customer(
            "m_while_down",
            "written while we were down",
            now_ms() - 90_000,
        ),
    );
    let text = peers.config_toml(
        "\n[reconcile]\nevery = \"1h\"\nlookback = \"2h\"\npace = \"1ms\"\npause = \"50ms\"\n",
    );
    let bench = Bench::start_on(peers, &text).await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(bodies(&bench), ["written while we were down"]);
    let recovered =
        format!("fb_openchannel_reconcile_recovered_messages_total{{page_id=\"{PAGE_A}\"}} 1");
    crate::wait_until("the run's metrics are set", WAIT, || async {
        bench.metrics().await.contains(&recovered)
    })
    .await;
    let metrics = bench.metrics().await;
    assert!(
        metrics.contains(&format!(
            "fb_openchannel_reconcile_missing_messages{{page_id=\"{PAGE_A}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("fb_openchannel_reconcile_last_run_timestamp_seconds{"));
    bench.stop().await;
}

#[test]
fn a_run_looks_back_over_the_downtime_but_never_past_seven_days_or_the_history_kept() {
    let hour = 3_600_000;
    let now = 1_000 * hour;
    let lookback = Duration::from_secs(2 * 3600);
    let keep = Duration::from_secs(30 * 24 * 3600);
    // No earlier run: the lookback.
    assert_eq!(
        reconcile::window_start(now, None, lookback, keep),
        now - 2 * hour
    );
    // 15 minutes after the previous run: from 2 h before it.
    let previous = now - hour / 4;
    assert_eq!(
        reconcile::window_start(now, Some(previous), lookback, keep),
        previous - 2 * hour
    );
    // Down for three days: back over them.
    let previous = now - 72 * hour;
    assert_eq!(
        reconcile::window_start(now, Some(previous), lookback, keep),
        previous - 2 * hour
    );
    // Down for a month: 7 days at most, and within what is kept.
    let previous = now - 30 * 24 * hour;
    assert_eq!(
        reconcile::window_start(now, Some(previous), lookback, keep),
        now - 7 * 24 * hour
    );
    let short_keep = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(
        reconcile::window_start(now, Some(previous), lookback, short_keep),
        now - 7 * 24 * hour + hour
    );
}

/// A recovered photo is moved into Motion like one that came by webhook.
#[tokio::test]
async fn a_recovered_photo_is_moved_into_motion() {
    let bench = Bench::start().await;
    let graph = &bench.peers.graph;
    let photo: Vec<u8> = (0..20_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let url = graph.add_file("lost_n.jpg", "image/jpeg", photo.clone());
    graph.add_inbox_message(
        PAGE_A,
        "messenger",
        PSID,
        InboxMessage {
            mid: "m_lost_photo".into(),
            from_customer: true,
            text: None,
            at_ms: (now_ms() - 60_000) / 1000 * 1000,
            image_url: Some(url),
        },
    );
    let found = reconcile::account(&bench.daemon().shared, PAGE_A, now_ms() - 3_600_000, false)
        .await
        .unwrap();
    assert_eq!(found.stored, 1);
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let uploads = bench.motion().uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes.as_ref(), photo.as_slice());
    assert!(notes[0].notify.attachment_id.is_some());
    bench.stop().await;
}

/// A subscription that lapsed for a day leaves hundreds of messages to recover: the
/// journal names the first 20 of an account's run, then says how many more in one line,
/// while every one of them still reaches Motion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_recovery_writes_a_bounded_number_of_journal_lines() {
    let peers = Peers::start().await;
    let start = now_ms() - 3_000_000;
    for n in 0..35 {
        let psid = format!("{}", 7_100_000_000_000_000u64 + n);
        peers.graph.add_inbox_message(
            PAGE_A,
            "messenger",
            &psid,
            customer(
                &format!("m_lapsed_{n}"),
                "written while lapsed",
                start + n as i64 * 60_000,
            ),
        );
    }
    let text = peers.config_toml(
        "\n[reconcile]\nevery = \"1h\"\nlookback = \"2h\"\npace = \"1ms\"\npause = \"50ms\"\n",
    );
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let daemon = Process::start(&path);
    peers.motion.wait_for_notifies(35, WAIT).await.unwrap();
    daemon.wait_for_log("15 more messages of").await;
    let log = daemon.log_text();
    let named = log
        .lines()
        .filter(|l| l.contains("no webhook brought it"))
        .count();
    assert_eq!(named, 20, "{log}");
    let reconcile_lines = log.lines().filter(|l| l.contains("reconcile:")).count();
    assert_eq!(reconcile_lines, 21, "{log}");
    assert_eq!(peers.motion.notifies().len(), 35, "each once");
    drop(daemon);
}

/// An Instagram Login account has no Page: its inbox is read on its own host
/// (graph.instagram.com) as `/me/conversations` with its own token, and what no webhook
/// brought reaches Motion in order, once.
#[tokio::test]
async fn an_instagram_login_accounts_inbox_is_read_on_its_own_host() {
    let (bench, instagram) = crate::instagram::instagram_login_bench("").await;
    let t = now_ms() - 300_000;
    for (mid, text, at) in [
        ("m_igl1", "came by webhook", t),
        ("m_igl2", "never came", t + 30_000),
    ] {
        instagram.add_inbox_message(IG_ACCOUNT, "instagram", IGSID, customer(mid, text, at));
    }
    bench
        .deliver(&instagram_text(
            IG_ACCOUNT,
            IGSID,
            "m_igl1",
            t / 1000 * 1000,
            "came by webhook",
        ))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let shared = &bench.daemon().shared;
    let since = now_ms() - 3_600_000;
    let found = reconcile::account(shared, IG_ACCOUNT, since, false)
        .await
        .unwrap();
    let mids: Vec<&str> = found.missing.iter().map(|m| m.mid.as_str()).collect();
    assert_eq!(mids, ["m_igl2"]);
    bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(bodies(&bench), ["came by webhook", "never came"]);
    assert!(instagram.inbox_calls() > 0, "read on the Instagram host");
    assert_eq!(
        bench.peers.graph.inbox_calls(),
        0,
        "nothing asked through a Page"
    );
    let again = reconcile::account(shared, IG_ACCOUNT, since, false)
        .await
        .unwrap();
    assert!(again.missing.is_empty(), "{:?}", again.missing);
    assert_eq!(bench.motion().notifies().len(), 2);
    bench.stop().await;
}

/// A backup taken while the daemon runs, restored on a new host hours later (or a move
/// that took hours): the new host has no webhook bodies (they stay behind), so its first
/// run looks back to the newest item it imported, not only `reconcile.lookback`: a
/// message Meta stopped redelivering meanwhile still reaches Motion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restore_or_a_long_move_the_first_run_looks_back_to_the_imported_queue() {
    let peers = Peers::start().await;
    let text = peers.config_toml(
        "\n[reconcile]\nevery = \"1h\"\nlookback = \"2h\"\npace = \"1ms\"\npause = \"50ms\"\n",
    );
    let mut bench = Bench::start_on(peers, &text).await;
    let t = now_ms();
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.before.move",
            t,
            "before the move",
        ))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    // A backup, taken while the daemon runs; then the host is lost.
    let config = bench.peers.dir.path().join("config.toml");
    let file = bench.peers.dir.path().join("queue.jsonl");
    let (_, err) = queue_transfer("export", &file, &config);
    assert!(err.contains("exported 1 item(s)"), "{err}");
    bench.daemon.take().unwrap().stop().await;
    // Restored five hours later: what the old host stored, it stored then.
    let hours = |n: i64| n * 3_600_000;
    let exported = std::fs::read_to_string(&file).unwrap();
    let mut moved = String::new();
    let mut rest = exported.as_str();
    while let Some(at) = rest.find("\"created_at\":") {
        let (before, after) = rest.split_at(at + "\"created_at\":".len());
        moved.push_str(before);
        moved.push_str(&(t - hours(5)).to_string());
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    moved.push_str(rest);
    assert_ne!(moved, exported, "the export has its items' times");
    std::fs::write(&file, moved).unwrap();
    // Meanwhile a customer wrote, three hours ago, and Meta gave up redelivering it.
    bench.peers.graph.add_inbox_message(
        PAGE_A,
        "messenger",
        "5550077",
        customer("m_during_move", "written during the move", t - hours(3)),
    );

    let Bench { peers, .. } = bench;
    let text = on_new_host(&peers, &text);
    let new_config = peers.dir.path().join("new-host.toml");
    std::fs::write(&new_config, &text).unwrap();
    queue_transfer("import", &file, &new_config);
    let bench = Bench::start_on(peers, &text).await;
    bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(
        bodies(&bench),
        ["before the move", "written during the move"]
    );
    bench.stop().await;
}
