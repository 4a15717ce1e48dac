//! Operator tooling: doctor, subscribe, queue, simulate — run as the real CLI against
//! the real daemon and the simulated peers.

use fb_openchannel::sim::facebook::messenger_text;
use fb_openchannel::sim::motion::reply_body;
use serde_json::Value;

use crate::harness::*;
use crate::wait_until;
use fb_openchannel::model::ItemState;

fn config_path(peers: &Peers) -> String {
    peers.dir.path().join("config.toml").display().to_string()
}

/// The bench config on fixed free ports (doctor reaches the listeners through the
/// config), with `public.name` set, written to the bench folder.
fn fixed_ports_config(peers: &Peers) -> String {
    let text = peers
        .config_toml("")
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"127.0.0.1:{}\"\nname = \"localhost\"",
                free_port()
            ),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{}\"", free_port()),
            1,
        );
    std::fs::write(config_path(peers), &text).unwrap();
    text
}

fn doctor(peers: &Peers) -> (i32, Vec<Value>, String) {
    let (code, stdout, stderr) = cli(&["doctor", "--json", "--config", &config_path(peers)]);
    let checks: Vec<Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let (_, human, _) = cli(&["doctor", "--config", &config_path(peers)]);
    (code, checks, human)
}

fn failing(checks: &[Value]) -> Vec<(String, String, String)> {
    checks
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            (
                c["scope"].as_str().unwrap().to_owned(),
                c["name"].as_str().unwrap().to_owned(),
                c["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_everything_against_healthy_peers() {
    let peers = Peers::start().await;
    fixed_ports_config(&peers);
    let daemon = Process::start(std::path::Path::new(&config_path(&peers)));
    let (code, checks, human) = doctor(&peers);
    assert_eq!(failing(&checks), vec![], "{human}");
    assert_eq!(code, 0, "{human}");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for name in [
        "config",
        "certificate",
        "listener",
        "local",
        "store",
        "motion api key",
        "token",
        "subscription",
        "receive url",
    ] {
        assert!(names.contains(&name), "no {name} check: {human}");
    }
    assert!(
        human.contains("✓ token") && human.contains("all checks passed"),
        "{human}"
    );
    assert!(human.contains("covers localhost"), "{human}");
    for secret in SECRETS {
        assert!(!human.contains(secret), "{secret} in doctor output");
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_each_problem_and_fails() {
    let peers = Peers::start().await;
    // A certificate that expires in 3 days.
    let soon = tempfile::tempdir().unwrap();
    let expiring = fb_openchannel::sim::tls::generate_valid_for(soon.path(), Some(3)).unwrap();
    std::fs::copy(&expiring.cert_path, &peers.certs.cert_path).unwrap();
    std::fs::copy(&expiring.key_path, &peers.certs.key_path).unwrap();
    let text = fixed_ports_config(&peers);
    let daemon = Process::start(std::path::Path::new(&config_path(&peers)));
    let local = text
        .lines()
        .filter_map(|l| l.strip_prefix("listen = \""))
        .nth(1)
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    fb_openchannel::http_client::install_crypto_provider();
    let readyz = reqwest::get(format!("http://{local}/readyz"))
        .await
        .unwrap();
    assert_eq!(readyz.status().as_u16(), 503);
    let readyz = readyz.text().await.unwrap();
    assert!(
        readyz.contains("certificate:") && readyz.contains("renew it now"),
        "{readyz}"
    );
    // It still serves: the node itself is ready (a floating IP stays).
    let node = reqwest::get(format!("http://{local}/readyz/node"))
        .await
        .unwrap();
    assert_eq!(node.status().as_u16(), 200);
    peers.graph.expire_token(TOKEN_A);
    peers.graph.unsubscribe(PAGE_B);
    peers.motion.down().await;

    let (code, checks, human) = doctor(&peers);
    assert_eq!(code, 1, "{human}");
    let bad = failing(&checks);
    let find = |scope: &str, name: &str| {
        bad.iter()
            .find(|(s, n, _)| s == scope && n == name)
            .map(|(_, _, d)| d.clone())
            .unwrap_or_else(|| panic!("no failing {scope} {name} check:\n{human}"))
    };
    assert!(
        find("daemon", "certificate").contains("expires in"),
        "{human}"
    );
    assert!(
        find(&format!("page {PAGE_A}"), "token").contains("invalid or expired"),
        "{human}"
    );
    assert!(
        find(&format!("page {PAGE_B}"), "subscription").contains("fb-openchannel subscribe"),
        "{human}"
    );
    assert!(
        find(&format!("page {PAGE_A}"), "receive url").contains("is Motion running"),
        "{human}"
    );
    assert!(
        find("daemon", "motion api key").contains("Motion"),
        "{human}"
    );
    assert!(human.contains("✗ token"), "{human}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_subscribes_every_page() {
    let peers = Peers::start().await;
    std::fs::write(config_path(&peers), peers.config_toml("")).unwrap();
    peers.graph.unsubscribe(PAGE_A);
    peers.graph.unsubscribe(PAGE_B);
    let (code, stdout, stderr) = cli(&["subscribe", "--config", &config_path(&peers)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("✓ page {PAGE_A}: subscribed")),
        "{stdout}"
    );
    for page in [PAGE_A, PAGE_B] {
        let fields = peers.graph.subscribed(page);
        // Every field whose events the daemon uses: Meta sends only subscribed ones.
        for f in [
            "messages",
            "messaging_postbacks",
            "message_edits",
            "message_reactions",
            "message_echoes",
            "standby",
            "messaging_referrals",
            "message_reads",
            "messaging_optins",
            "messaging_handovers",
            "messaging_policy_enforcement",
            "feed",
        ] {
            assert!(
                fields.iter().any(|x| x == f),
                "{page} lacks {f}: {fields:?}"
            );
        }
    }
}

/// A Page subscribed by an earlier release lacks fields whose events the daemon now
/// uses (Meta sends only subscribed fields): `doctor` names each with what stops working,
/// and `subscribe` adds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_each_missing_field_with_what_stops_working() {
    let peers = Peers::start().await;
    std::fs::write(config_path(&peers), fixed_ports_config(&peers)).unwrap();
    peers.graph.set_subscribed(
        PAGE_A,
        &[
            "messages",
            "messaging_postbacks",
            "message_edits",
            "message_reactions",
            "message_echoes",
            "feed",
        ],
    );
    let (_, checks, human) = doctor(&peers);
    let detail = failing(&checks)
        .into_iter()
        .find(|(s, n, _)| s == &format!("page {PAGE_A}") && n == "subscription")
        .map(|(_, _, d)| d)
        .unwrap_or_else(|| panic!("{human}"));
    for (field, why) in [
        ("standby", "another app"),
        ("messaging_policy_enforcement", "blocked the Page"),
        ("messaging_referrals", "m.me links"),
        ("message_reads", "read receipts"),
    ] {
        assert!(
            detail.contains(field) && detail.contains(why),
            "{field}: {detail}"
        );
    }
    let (code, out, err) = cli(&["subscribe", "--config", &config_path(&peers)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        peers
            .graph
            .subscribed(PAGE_A)
            .iter()
            .any(|f| f == "standby")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_resubscribes_a_page_facebook_dropped() {
    let bench = Bench::start_edited(|t| {
        t.replace("[motion]", "subscription_check = \"100ms\"\n\n[motion]")
    })
    .await;
    bench.peers.graph.unsubscribe(PAGE_B);
    let graph = &bench.peers.graph;
    wait_until("page B is subscribed again", WAIT, || async {
        graph.subscribed(PAGE_B).iter().any(|f| f == "feed")
    })
    .await;
    assert!(graph.subscribe_calls().contains(&PAGE_B.to_string()));
    assert!(
        !graph.subscribe_calls().contains(&PAGE_A.to_string()),
        "a healthy subscription is left alone"
    );
    bench.stop().await;
}

/// A site that left Motion Cloud: XCALLY's app is still installed on the Page with every
/// field, ours is not subscribed. Merging every app's fields, doctor said "subscribed"
/// and nothing ever subscribed ours; now only our app's entry counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_motion_cloud_app_is_named_and_our_own_app_is_subscribed() {
    let peers = Peers::start().await;
    let all = [
        "messages",
        "messaging_postbacks",
        "message_edits",
        "message_reactions",
        "message_echoes",
        "feed",
    ];
    peers.graph.unsubscribe(PAGE_A);
    peers
        .graph
        .install_other_app(PAGE_A, "300199466707231", "XCALLY Motion", &all);
    let text = fixed_ports_config(&peers);
    let daemon = Process::start(std::path::Path::new(&config_path(&peers)));
    let (code, checks, human) = doctor(&peers);
    assert_eq!(code, 1, "{human}");
    let bad = failing(&checks);
    let scope = format!("page {PAGE_A}");
    let detail = |name: &str| {
        bad.iter()
            .find(|(s, n, _)| *s == scope && n == name)
            .map(|(_, _, d)| d.clone())
            .unwrap_or_else(|| panic!("no failing {name} check:\n{human}"))
    };
    assert!(
        detail("subscription").contains("is not subscribed to this Page"),
        "{human}"
    );
    assert!(
        detail("subscription").contains("XCALLY Motion (300199466707231)"),
        "{human}"
    );
    let other = detail("other apps");
    assert!(
        other.contains("XCALLY Motion (300199466707231)") && other.contains("Remove"),
        "{human}"
    );
    // Without facebook.app_id, doctor says which app it found from the token.
    assert!(human.contains("facebook.app_id is not set"), "{human}");
    drop(daemon);

    // `subscribe` subscribes ours, also when Graph answers {"success": "true"}.
    peers.graph.answer_success_as_text(true);
    let (code, stdout, stderr) = cli(&["subscribe", "--config", &config_path(&peers)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("✓ page {PAGE_A}: subscribed")),
        "{stdout}"
    );
    assert!(stdout.contains("XCALLY Motion"), "{stdout}");
    assert!(
        peers
            .graph
            .subscribed(PAGE_A)
            .iter()
            .any(|f| f == "messages")
    );

    // And the daemon's own check re-subscribes ours when it is dropped again, with the
    // app id configured this time.
    peers.graph.unsubscribe(PAGE_A);
    let text = text.replace(
        "[facebook]\n",
        &format!(
            "[facebook]\napp_id = \"{}\"\nsubscription_check = \"100ms\"\n",
            fb_openchannel::sim::facebook::SIM_APP_ID
        ),
    );
    std::fs::write(config_path(&peers), &text).unwrap();
    let daemon = Process::start(std::path::Path::new(&config_path(&peers)));
    let graph = &peers.graph;
    wait_until("our app is subscribed to page A again", WAIT, || async {
        graph.subscribed(PAGE_A).iter().any(|f| f == "messages")
    })
    .await;
    drop(daemon);
}

/// The old Motion Cloud app is still the one Meta routes the Page's conversations to:
/// every customer message reaches the daemon as a standby event. Before, they were
/// recorded and never forwarded — silently lost. Now they are forwarded, and `/readyz`
/// and `doctor` say that routing belongs to another app, naming it, with the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_only_traffic_is_forwarded_and_routing_is_named() {
    let peers = Peers::start().await;
    peers.graph.install_other_app(
        PAGE_A,
        "300199466707231",
        "XCALLY Motion",
        &["messages", "feed"],
    );
    peers
        .graph
        .route_conversations_to(PAGE_A, "300199466707231");
    let text = fixed_ports_config(&peers);
    let daemon = Process::start(std::path::Path::new(&config_path(&peers)));
    let sender = fb_openchannel::sim::facebook::WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    let standby = serde_json::json!({
        "object": "page",
        "entry": [{"id": PAGE_A, "time": fb_openchannel::store::now_ms(), "standby": [{
            "sender": {"id": PSID}, "recipient": {"id": PAGE_A},
            "timestamp": fb_openchannel::store::now_ms(),
            "message": {"mid": "mid.standby.1", "text": "Is anyone there?"}
        }]}]
    })
    .to_string();
    let (status, _) = sender.send(standby.as_bytes()).await.unwrap();
    assert_eq!(status, 200);
    let notes = peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(
        notes[0].notify.body, "Is anyone there?",
        "forwarded, not lost"
    );

    let local = text
        .split("[local]\nlisten = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let ready = reqwest::get(format!("http://{local}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready = ready.text().await.unwrap();
    assert!(
        ready.contains(&format!(
            "page {PAGE_A}: conversation routing belongs to another app"
        )),
        "{ready}"
    );
    assert!(ready.contains("Advanced messaging"), "{ready}");
    assert!(
        daemon.log_text().contains("only as standby events"),
        "said once in the log"
    );

    let (code, checks, human) = doctor(&peers);
    assert_eq!(code, 1, "{human}");
    let routing = failing(&checks)
        .into_iter()
        .find(|(s, n, _)| *s == format!("page {PAGE_A}") && n == "routing")
        .unwrap_or_else(|| panic!("no failing routing check:\n{human}"));
    assert!(
        routing.2.contains("XCALLY Motion (300199466707231)"),
        "{human}"
    );
    drop(daemon);
}

/// Motion refusing the notify (401: the Receive URL was copied without its token) is
/// explained in the log and by doctor; and a Receive URL under the wrong path is "wrong
/// URL", not "wrong key".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn motion_refusing_the_notify_or_the_url_is_explained() {
    let peers = Peers::start().await;
    peers.motion.require_token(2, "the-account-token");
    let text = fixed_ports_config(&peers);
    let daemon = Process::start(std::path::Path::new(&config_path(&peers)));
    let sender = fb_openchannel::sim::facebook::WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    let (status, _) = sender
        .send(messenger_text(PAGE_B, PSID, "mid.401", 1, "hello").as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    wait_until("the delivery fails", WAIT, || async {
        daemon
            .log_text()
            .contains("delivery to Motion failed for good")
    })
    .await;
    assert!(
        daemon
            .log_text()
            .contains("copy the Openchannel account's Receive URL whole"),
        "{}",
        daemon.log_text()
    );
    let (_, checks, human) = doctor(&peers);
    let store = failing(&checks)
        .into_iter()
        .find(|(_, n, _)| n == "store")
        .unwrap_or_else(|| panic!("{human}"));
    assert!(store.2.contains("Receive URL whole"), "{human}");
    drop(daemon);

    // A Receive URL under a path where Motion has no API: wrong URL, not wrong key.
    let text = text.replace(
        "/api/openchannel/accounts/1/notify",
        "/motion/api/openchannel/accounts/1/notify",
    );
    std::fs::write(config_path(&peers), &text).unwrap();
    let (_, checks, human) = doctor(&peers);
    let key = failing(&checks)
        .into_iter()
        .find(|(_, n, _)| n == "motion api key")
        .unwrap_or_else(|| panic!("{human}"));
    assert!(key.2.contains("wrong URL, not a wrong key"), "{human}");
}

/// The first real install: a capture of every exchange with the peers, secrets masked,
/// then `capture --check` against the shapes the daemon expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_records_the_exchanges_masks_every_secret_and_is_checked() {
    let peers = Peers::start().await;
    let text = fixed_ports_config(&peers);
    let path = config_path(&peers);
    let daemon = Process::start(std::path::Path::new(&path));
    let (code, out, err) = cli(&["capture", "--for", "1h", "--config", &path]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the daemon starts capturing", WAIT, || async {
        daemon.log_text().contains("capture started")
    })
    .await;
    let (_, checks, human) = doctor(&peers);
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "capture" && c["ok"] == true),
        "doctor says a capture runs: {human}"
    );

    let sender = fb_openchannel::sim::facebook::WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    let now = fb_openchannel::store::now_ms();
    let (status, _) = sender
        .send(messenger_text(PAGE_A, PSID, "mid.cap", now, "captured hello").as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    let local = text
        .split("[local]\nlisten = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let reply_url = format!("http://{local}/reply/{PAGE_A}?token={REPLY_TOKEN_A}");
    let reply = reply_body(8801, PSID, "Captured answer", None);
    let (status, _) = peers.motion.agent_reply(&reply_url, &reply).await.unwrap();
    assert_eq!(status, 200);
    // A Motion whose account uses another contact field than the config says.
    let mut other = reply_body(8802, PSID, "Other key", None);
    other["Contact"] = serde_json::json!({"id": 17, "cf_7": PSID});
    let (status, _) = peers.motion.agent_reply(&reply_url, &other).await.unwrap();
    assert_eq!(status, 400);

    let dir = peers.dir.path().join("capture");
    let files = || -> Vec<(String, String)> {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect()
    };
    wait_until("both Reply URL calls are captured", WAIT, || async {
        files()
            .iter()
            .filter(|(n, _)| n.ends_with("-reply.json"))
            .count()
            == 2
    })
    .await;
    let (code, out, err) = cli(&["capture", "--off", "--config", &path]);
    assert_eq!(code, 0, "{out}{err}");

    let all = files();
    for kind in ["webhook", "reply", "motion", "graph"] {
        assert!(
            all.iter()
                .any(|(n, _)| n.ends_with(&format!("-{kind}.json"))),
            "no {kind} exchange in {:?}",
            all.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }
    // The Reply URL call as it arrived.
    let captured: Vec<serde_json::Value> = all
        .iter()
        .filter(|(n, _)| n.ends_with("-reply.json"))
        .map(|(_, t)| serde_json::from_str(t).unwrap())
        .collect();
    assert!(
        captured.iter().any(|c| c["request"]["body"] == reply),
        "{captured:?}"
    );
    assert!(captured.iter().all(|c| {
        c["request"]["url"]
            .as_str()
            .unwrap()
            .contains("token=********")
    }));
    // No secret of the config anywhere.
    for (name, body) in &all {
        for secret in SECRETS {
            assert!(!body.contains(secret), "{secret} in {name}:\n{body}");
        }
    }
    let (code, out, _) = cli(&["capture", "--check", "--config", &path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("✗ Contact.facebook: missing"), "{out}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_retry_while_the_daemon_runs_delivers_once_and_drop_removes() {
    let bench = Bench::start().await;
    let config = config_path(&bench.peers);
    // Motion refuses the first one for good; the customer pasted a token in the second.
    bench.motion().fail_next(1, 400);
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "q.1", 1, "refused at first"))
        .await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "q.2",
            2,
            &format!("my token is {TOKEN_A}"),
        ))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let store = bench.daemon().shared.store.clone();
    wait_until("item 1 has failed", WAIT, || {
        let store = store.clone();
        async move { store.items().await.unwrap()[0].state == ItemState::Failed }
    })
    .await;

    let (code, stdout, _) = cli(&["queue", "list", "--failed", "--json", "--config", &config]);
    assert_eq!(code, 0);
    let failed: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], 1);
    let (_, human, _) = cli(&["queue", "list", "--failed", "--config", &config]);
    assert!(
        human.starts_with("ID") && human.contains("Motion answered 400"),
        "{human}"
    );
    let (_, stats, _) = cli(&["queue", "stats", "--config", &config]);
    assert!(
        stats.contains(PAGE_A) && stats.contains("FAILED"),
        "{stats}"
    );

    let (code, out, err) = cli(&["queue", "retry", "1", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes[1].notify.body, "refused at first");
    // Delivered once: the next message of that customer is the third notify.
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "q.3", 3, "after"))
        .await;
    let notes = bench.motion().wait_for_notifies(3, WAIT).await.unwrap();
    assert_eq!(notes.len(), 3);
    assert_eq!(notes[2].notify.body, "after");

    let (_, shown, _) = cli(&["queue", "show", "2", "--config", &config]);
    assert!(shown.contains("my token is ********"), "{shown}");
    assert!(!shown.contains(TOKEN_A), "{shown}");
    // Read receipts stay out of Motion, but `queue show` tells whether the customer saw
    // the conversation.
    bench.deliver(&fixture("messenger-read-restfb.json")).await;
    let (_, shown, _) = cli(&["queue", "show", "1", "--config", &config]);
    assert!(
        shown.contains("failed")
            && shown.contains("retried-by-operator")
            && shown.contains("delivered"),
        "{shown}"
    );
    assert!(
        shown.contains("customer   read up to 2016-03-22 17:47:36 UTC; delivered none recorded"),
        "{shown}"
    );

    let (code, _, err) = cli(&["queue", "drop", "2", "--config", &config]);
    assert_eq!(code, 1, "no confirmation without a terminal or --yes");
    assert!(err.contains("--yes"), "{err}");
    let (code, out, _) = cli(&["queue", "drop", "2", "--yes", "--config", &config]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = cli(&["queue", "show", "2", "--config", &config]);
    assert_eq!(code, 1);
    assert!(err.contains("no item 2"), "{err}");
    bench.stop().await;
}

/// A signed webhook may carry any time an i64 holds. Past the year 9999 the time
/// formatter fails, and a failing `Display` panics in `format!`: `queue show` did, and
/// so would the daemon's log lines that write a peer's time (an inbox message's, an
/// Instagram token's expiry). Such a time is written as the year 9999's last second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_show_writes_an_event_time_past_the_year_9999() {
    let bench = Bench::start().await;
    let config = config_path(&bench.peers);
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "far.1",
            i64::MAX,
            "from far ahead",
        ))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let (code, shown, err) = cli(&["queue", "show", "1", "--config", &config]);
    assert_eq!(code, 0, "{shown}{err}");
    assert!(
        shown.contains("event time 9999-12-31 23:59:59 UTC"),
        "{shown}"
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_reaches_motion_and_the_reply_is_acknowledged_without_facebook() {
    let bench = Bench::start().await;
    let url = bench.webhook_url();
    let (code, out, err) = cli(&[
        "simulate",
        "--url",
        &url,
        "--text",
        "Is this thing on?",
        "--config",
        &config_path(&bench.peers),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fbo-simulated-customer"), "{out}");
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let n = &notes[0].notify;
    assert_eq!(n.body, "Is this thing on?");
    assert_eq!(n.from, "fbo-simulated-customer");
    assert_eq!(
        (n.first_name.as_deref(), n.last_name.as_deref()),
        (Some("Simulated"), Some("Customer"))
    );

    let reply_url = format!(
        "http://{}/reply/{PAGE_A}?token={REPLY_TOKEN_A}",
        bench.daemon().local_addr
    );
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &reply_url,
            &reply_body(8001, "fbo-simulated-customer", "Loud and clear", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        bench.peers.graph.send_calls(),
        0,
        "no Graph call for a simulated customer"
    );
    assert!(
        bench.peers.graph.requests_but_token_checks().is_empty(),
        "not even a profile lookup"
    );

    let (code, out, err) = cli(&[
        "simulate",
        "--wall",
        "--url",
        &url,
        "--config",
        &config_path(&bench.peers),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let thread = notes[1].notify.thread_id.clone().unwrap();
    assert!(thread.starts_with(&format!("{PAGE_A}_")), "{thread}");
    assert!(notes[1].notify.from.starts_with("fbo-simulated-"));
    bench.stop().await;
}

/// `doctor` checks each Instagram account through its linked Page: the account the Page
/// is really linked to, a Page linked to none, and the account's Receive URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_each_instagram_account_through_its_linked_page() {
    let peers = Peers::start().await;
    peers.graph.link_instagram(PAGE_A, IG_ACCOUNT);
    let text = fixed_ports_config(&peers)
        + &peers.instagram_table(IG_ACCOUNT)
        + &peers.instagram_table("17841499999999999")
        + &peers.instagram_table("17841488888888888").replace(
            &format!("page = \"{PAGE_A}\""),
            &format!("page = \"{PAGE_B}\""),
        );
    std::fs::write(config_path(&peers), &text).unwrap();
    let daemon = Process::start(std::path::Path::new(&config_path(&peers)));
    let (code, checks, human) = doctor(&peers);
    assert_eq!(code, 1, "{human}");
    let linked = checks
        .iter()
        .find(|c| c["scope"] == format!("instagram {IG_ACCOUNT}") && c["name"] == "linked page")
        .unwrap_or_else(|| panic!("no linked page check: {human}"));
    assert_eq!(linked["ok"], true, "{human}");
    let bad = failing(&checks);
    let detail = |scope: &str| {
        bad.iter()
            .find(|(s, n, _)| s == scope && n == "linked page")
            .map(|(_, _, d)| d.clone())
            .unwrap_or_else(|| panic!("no failing {scope} check: {human}"))
    };
    assert!(
        detail("instagram 17841499999999999").contains(&format!(
            "is linked to Instagram account {IG_ACCOUNT}, not 17841499999999999"
        )),
        "{human}"
    );
    assert!(
        detail("instagram 17841488888888888")
            .contains("has no linked Instagram professional account"),
        "{human}"
    );
    assert_eq!(bad.len(), 2, "nothing else fails: {human}");
    assert!(human.contains("3 Instagram account(s)"), "{human}");
    drop(daemon);
}

/// Instagram Login accounts: `doctor` asks graph.instagram.com whose token it is and
/// shows what is known of its expiry; `subscribe` subscribes each account there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_and_subscribe_cover_instagram_login_accounts() {
    let peers = Peers::start().await;
    let instagram = fb_openchannel::sim::facebook::SimGraph::start()
        .await
        .unwrap();
    instagram.add_instagram_login(IG_ACCOUNT, "IGAA-good-8c1d");
    // A second table whose token is really the first account's.
    instagram.add_instagram_login(IG_ACCOUNT, "IGAA-mixed-up-77e2");
    let login = |id: &str, token: &str| {
        peers.instagram_table(id).replace(
            &format!("page = \"{PAGE_A}\""),
            &format!("access_token = \"{token}\""),
        )
    };
    let text = (fixed_ports_config(&peers)
        + &login(IG_ACCOUNT, "IGAA-good-8c1d")
        + &login("17841477777777777", "IGAA-mixed-up-77e2"))
        .replace(
            "[motion]",
            &format!("instagram_graph_url = \"{}\"\n\n[motion]", instagram.url()),
        );
    std::fs::write(config_path(&peers), &text).unwrap();
    let daemon = Process::start(std::path::Path::new(&config_path(&peers)));
    let (code, checks, human) = doctor(&peers);
    assert_eq!(code, 1, "{human}");
    let find = |scope: &str, name: &str| {
        checks
            .iter()
            .find(|c| c["scope"] == scope && c["name"] == name)
            .unwrap_or_else(|| panic!("no {scope} {name} check: {human}"))
            .clone()
    };
    let good = find(&format!("instagram {IG_ACCOUNT}"), "token");
    assert_eq!(good["ok"], true, "{human}");
    assert!(
        good["detail"].as_str().unwrap().contains("@sim.account"),
        "{human}"
    );
    let expiry = find(&format!("instagram {IG_ACCOUNT}"), "token expiry");
    assert_eq!(expiry["ok"], true, "{human}");
    assert!(
        expiry["detail"].as_str().unwrap().contains("not known yet"),
        "{human}"
    );
    let mixed = find("instagram 17841477777777777", "token");
    assert_eq!(mixed["ok"], false, "{human}");
    assert!(
        mixed["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("is for Instagram account {IG_ACCOUNT}")),
        "{human}"
    );
    assert!(!human.contains("IGAA-"), "tokens never printed: {human}");

    let (code, stdout, stderr) = cli(&["subscribe", "--config", &config_path(&peers)]);
    assert_eq!(
        code, 1,
        "the mixed-up account cannot subscribe: {stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "✓ instagram {IG_ACCOUNT}: subscribed (Instagram Login)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("✗ instagram 17841477777777777: not subscribed"),
        "{stdout}"
    );
    assert!(
        instagram
            .subscribed(IG_ACCOUNT)
            .iter()
            .any(|f| f == "comments"),
        "{stdout}"
    );
    drop(daemon);
}

/// `simulate --instagram`: a signed Instagram direct message from the simulated customer
/// reaches the Instagram account's own Openchannel account, and the agent's answer is
/// acknowledged without calling Graph.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_instagram_reaches_the_instagram_account() {
    let bench = Bench::start_with_instagram(IG_ACCOUNT).await;
    let (code, out, err) = cli(&[
        "simulate",
        "--instagram",
        "--url",
        &bench.webhook_url(),
        "--config",
        &config_path(&bench.peers),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Instagram direct message"), "{out}");
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].account, "8", "the Instagram account's Receive URL");
    assert_eq!(notes[0].notify.from, "fbo-simulated-customer");
    let reply_url = format!(
        "http://{}/reply/{IG_ACCOUNT}?token={REPLY_TOKEN_IG}",
        bench.daemon().local_addr
    );
    let (status, answer) = bench
        .motion()
        .agent_reply(
            &reply_url,
            &reply_body(8101, "fbo-simulated-customer", "Hello from Motion", None),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(
        bench.peers.graph.requests_but_token_checks().is_empty(),
        "no Graph call"
    );

    // Without an [[instagram]] table there is nothing to simulate for.
    let plain = Bench::start().await;
    let (code, _, err) = cli(&[
        "simulate",
        "--instagram",
        "--url",
        &plain.webhook_url(),
        "--config",
        &config_path(&plain.peers),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no [[instagram]]"), "{err}");
    plain.stop().await;
    bench.stop().await;
}

/// `doctor` checks the client CA file of mTLS: a good one is described, a broken one is
/// named with what to do (the daemon would not start with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_client_ca_of_mtls() {
    let peers = Peers::start().await;
    let ca = fb_openchannel::sim::tls::ClientCa::new("Meta outbound API test CA").unwrap();
    let good = peers.dir.path().join("meta-ca.pem");
    std::fs::write(&good, &ca.pem).unwrap();
    let bad = peers.dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "this is not PEM").unwrap();
    let check = |path: &std::path::Path| {
        let text = fixed_ports_config(&peers).replacen(
            "[public]\n",
            &format!("[public]\nclient_ca = \"{}\"\n", path.display()),
            1,
        );
        std::fs::write(config_path(&peers), &text).unwrap();
        let (_, checks, human) = doctor(&peers);
        checks
            .into_iter()
            .find(|c| c["name"] == "client certificates")
            .unwrap_or_else(|| panic!("no client certificates check: {human}"))
    };
    let ok = check(&good);
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(
        ok["detail"]
            .as_str()
            .unwrap()
            .contains("named client.webhooks.fbclientcerts.com"),
        "{ok}"
    );
    let broken = check(&bad);
    assert_eq!(broken["ok"], false, "{broken}");
    assert!(
        broken["detail"]
            .as_str()
            .unwrap()
            .contains("holds no PEM certificate"),
        "{broken}"
    );
}

/// Moving hosts: the queue exported from a stopped daemon and imported on a new state
/// database is delivered there — what was pending goes out, what was delivered is still
/// recognised when Facebook sends it again, and importing twice adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_moves_to_another_host_with_nothing_lost_or_doubled() {
    queue_moves(None).await;
}

/// The same move from a host's SQLite file into PostgreSQL, the way to two hosts.
#[tokio::test]
async fn a_sqlite_queue_moves_into_postgres_with_nothing_lost_or_doubled() {
    let Some(pg) = fb_openchannel::sim::postgres::PrivatePostgres::start().unwrap() else {
        eprintln!("{}", fb_openchannel::sim::postgres::SKIPPED);
        return;
    };
    pg.create_database("moved").unwrap();
    queue_moves(Some(pg.url("moved"))).await;
}

/// Moves a queue with a delivered and a pending message to a new host's SQLite file, or
/// into the PostgreSQL database at `postgres`.
async fn queue_moves(postgres: Option<String>) {
    let mut bench = Bench::start().await;
    let t = fb_openchannel::store::now_ms();
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.moved.1",
            t,
            "delivered before the move",
        ))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    bench.motion().down().await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.moved.2",
            t + 1,
            "pending at the move",
        ))
        .await;
    bench
        .wait_items("the second message is retrying", |items| {
            items
                .iter()
                .any(|i| i.state == ItemState::Pending && i.attempts > 0)
        })
        .await;
    bench.daemon.take().unwrap().stop().await;

    let config_a = config_path(&bench.peers);
    let file = bench.peers.dir.path().join("queue.jsonl");
    let (_, err) = queue_transfer("export", &file, std::path::Path::new(&config_a));
    assert!(
        err.contains("exported 2 item(s) (1 pending, 0 failed)"),
        "{err}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "it holds customers' messages");
    }

    // The new host: another state database, the same Motion and Facebook.
    let Bench { peers, .. } = bench;
    let mut text = on_new_host(&peers, &std::fs::read_to_string(&config_a).unwrap());
    if let Some(url) = &postgres {
        text = text.replace(
            "[storage]\n",
            &format!("[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
        );
    }
    let config_b = peers.dir.path().join("config-b.toml");
    std::fs::write(&config_b, &text).unwrap();
    let (out, _) = queue_transfer("import", &file, &config_b);
    assert!(
        out.contains("imported 2 item(s) (1 pending, 0 failed)"),
        "{out}"
    );
    let (out, _) = queue_transfer("import", &file, &config_b);
    assert!(
        out.contains("imported 0 item(s)"),
        "importing twice adds nothing: {out}"
    );
    let (code, out, err) = cli(&["queue", "stats", "--config", config_b.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(PAGE_A),
        "the queue is readable where it went: {out}"
    );

    peers.motion.up().await;
    let bench = Bench::start_on(peers, &text).await;
    bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    // Facebook sends the first message again (it does, for up to 36 h), then a new one.
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.moved.1",
            t,
            "delivered before the move",
        ))
        .await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.moved.3",
            t + 2,
            "after the move",
        ))
        .await;
    bench.motion().wait_for_notifies(3, WAIT).await.unwrap();
    let bodies: Vec<String> = bench
        .motion()
        .notifies()
        .into_iter()
        .map(|n| n.notify.body)
        .collect();
    assert_eq!(
        bodies,
        [
            "delivered before the move",
            "pending at the move",
            "after the move"
        ],
        "each once, in order"
    );
    bench.stop().await;
}

/// A file that is not an export, or a broken line, imports nothing and says where.
#[tokio::test]
async fn a_broken_export_imports_nothing() {
    let peers = Peers::start().await;
    std::fs::write(config_path(&peers), peers.config_toml("")).unwrap();
    let file = peers.dir.path().join("broken.jsonl");
    let header = r#"{"format":"fb-openchannel-queue","version":1,"schema":15,"exported_at":0}"#;
    let good = r#"{"profile":{"page_id":"1","psid":"2","first_name":"A","last_name":"B","source":"graph","fetched_at":0}}"#;
    for (content, says) in [
        ("hello\n".to_owned(), "line 1"),
        (format!("{header}\n{good}\n{{\"item\": 7}}\n"), "line 3"),
        (
            format!(
                "{header}\n{}\n",
                r#"{"item":{"direction":"sideways","page_id":"1","conversation":"psid:2","dedup_key":"mid:x","kind":"message","event_ts":1,"payload":"{}","state":"pending","attempts":0,"steps_done":0,"next_attempt_at":0,"first_failure_at":null,"last_error":null,"created_at":0,"updated_at":0,"result":null}}"#
            ),
            "does not know",
        ),
    ] {
        std::fs::write(&file, content).unwrap();
        let (code, out, err) = cli(&[
            "queue",
            "import",
            file.to_str().unwrap(),
            "--config",
            &config_path(&peers),
        ]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains("nothing imported") && err.contains(says),
            "{err}"
        );
    }
    let conn = rusqlite::Connection::open(peers.store_path()).unwrap();
    let profiles: i64 = conn
        .query_row("SELECT COUNT(*) FROM profiles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        profiles, 0,
        "the good line before the broken one was not kept either"
    );
}

/// The simulated Meta sends only the fields a Page is subscribed to, as Meta does: a test
/// that delivers an event of a field the daemon does not subscribe fails, as that event
/// would be lost on a real Page.
#[tokio::test]
async fn the_simulated_meta_sends_only_subscribed_fields() {
    let peers = Peers::start().await;
    peers
        .graph
        .set_subscribed(PAGE_A, &["messages", "message_echoes"]);
    let standby = serde_json::json!({"object": "page", "entry": [{"id": PAGE_A, "time": 1,
        "standby": [{"sender": {"id": PSID}, "recipient": {"id": PAGE_A}, "timestamp": 1,
                     "message": {"mid": "m_standby", "text": "hi"}}]}]})
    .to_string();
    let refused = peers.graph.would_send(&standby).unwrap_err();
    assert!(refused.contains("not subscribed to standby"), "{refused}");
    let text = fb_openchannel::sim::facebook::messenger_text(PAGE_A, PSID, "m_text", 1, "hi");
    assert!(peers.graph.would_send(&text).is_ok());
    // A Page set up by this release (every field the daemon uses) gets them all.
    peers.graph.add_page(PAGE_A, TOKEN_A);
    assert!(peers.graph.would_send(&standby).is_ok());
}
