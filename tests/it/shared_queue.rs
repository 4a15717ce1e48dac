//! Two daemons, one queue on PostgreSQL (`[storage] backend = "postgres"`): real
//! processes against a private PostgreSQL server that the test starts itself. Without
//! PostgreSQL installed the tests say so and pass (`apt-get install postgresql`;
//! `.ci/run` installs it).

use std::collections::HashMap;
use std::path::PathBuf;

use fb_openchannel::sim::facebook::{WebhookSender, messenger_text};
use fb_openchannel::sim::postgres::{PrivatePostgres, SKIPPED};

use crate::harness::*;

/// A private server with an empty database, or `None` (said) without PostgreSQL.
fn postgres(db: &str) -> Option<PrivatePostgres> {
    let Some(pg) = PrivatePostgres::start().unwrap() else {
        eprintln!("{SKIPPED}");
        return None;
    };
    pg.create_database(db).unwrap();
    Some(pg)
}

/// The bench's config for node `name`: its own state directory, the shared queue, and
/// a short lease so that a dead node's conversations pass on within seconds.
fn node_config(peers: &Peers, url: &str, name: &str) -> PathBuf {
    on_postgres(peers, &peers.config_toml(""), url, name)
}

/// `text` (a config of the bench) for node `name`, as [`node_config`] makes it.
pub fn on_postgres(peers: &Peers, text: &str, url: &str, name: &str) -> PathBuf {
    let text = text.replace(
        &format!("[storage]\npath = \"{}\"", peers.store_path().display()),
        &format!(
            "[storage]\npath = \"{}\"\nbackend = \"postgres\"\nurl = \"{url}\"\nlease = \"3s\"",
            peers.dir.path().join(name).join("state.db").display()
        ),
    );
    assert!(text.contains("backend = \"postgres\""));
    let path = peers.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn sender(peers: &Peers, node: &Process) -> WebhookSender {
    WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", node.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    )
}

/// Message `n` of customer `c`: its text says both, its Facebook time orders it.
fn message(c: usize, n: usize) -> (String, String) {
    let text = format!("c{c} n{n}");
    let body = messenger_text(
        PAGE_A,
        &format!("70000{c}"),
        &format!("mid.c{c}.n{n}"),
        1_700_000_000_000 + n as i64,
        &text,
    );
    (text, body)
}

/// What Motion received, per customer, in order: `(customer, n)`.
fn received(peers: &Peers) -> Vec<(String, usize)> {
    peers
        .motion
        .notifies()
        .iter()
        .filter_map(|n| {
            let (c, rest) = n.notify.body.strip_prefix('c')?.split_once(" n")?;
            Some((c.to_owned(), rest.parse().ok()?))
        })
        .collect()
}

/// Waits until Motion has every acknowledged message (at least once); says which are
/// missing if they do not come.
async fn all_received(peers: &Peers, acknowledged: &[(usize, usize)]) {
    let want: std::collections::HashSet<(String, usize)> = acknowledged
        .iter()
        .map(|(c, n)| (c.to_string(), *n))
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got: std::collections::HashSet<(String, usize)> = received(peers).into_iter().collect();
        let mut missing: Vec<_> = want.difference(&got).collect();
        if missing.is_empty() {
            return;
        }
        missing.sort();
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered within {WAIT:?}: {missing:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every acknowledged message reached Motion; each customer's messages came in order
/// (a repeat only of the message in flight when a node died); returns how many came
/// twice.
fn check_delivery(peers: &Peers, acknowledged: &[(usize, usize)]) -> usize {
    let got = received(peers);
    let mut per_customer: HashMap<String, Vec<usize>> = HashMap::new();
    for (c, n) in &got {
        per_customer.entry(c.clone()).or_default().push(*n);
    }
    for (c, n) in acknowledged {
        let seen = per_customer
            .get(&c.to_string())
            .cloned()
            .unwrap_or_default();
        assert!(
            seen.contains(n),
            "message {n} of customer {c} was acknowledged but never delivered: {seen:?}"
        );
    }
    let mut repeats = 0;
    for (c, seen) in &per_customer {
        let mut firsts = Vec::new();
        for (i, n) in seen.iter().enumerate() {
            if i > 0 && seen[i - 1] == *n {
                repeats += 1;
                continue;
            }
            assert!(
                !firsts.contains(n),
                "customer {c}: message {n} came again later, out of order: {seen:?}"
            );
            firsts.push(*n);
        }
        let mut sorted = firsts.clone();
        sorted.sort();
        assert_eq!(firsts, sorted, "customer {c}: out of order");
    }
    repeats
}

/// Both nodes take webhooks; one is SIGKILLed in the middle; Facebook's Callback URL
/// moves to the other (a floating IP). Every acknowledged message is delivered, each
/// customer's in order, a repeat only of what the dead node had in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_postgres_lose_nothing_when_one_is_killed() {
    let Some(pg) = postgres("killed") else {
        return;
    };
    let peers = Peers::start().await;
    let url = pg.url("killed");
    let mut a = Process::start(&node_config(&peers, &url, "a"));
    let b_config = node_config(&peers, &url, "b");
    let b = Process::start(&b_config);
    let (to_a, to_b) = (sender(&peers, &a), sender(&peers, &b));

    const CUSTOMERS: usize = 6;
    const EACH: usize = 20;
    let mut acknowledged = Vec::new();
    for n in 0..EACH {
        if n == EACH / 2 {
            // Motion is slow for one customer: A has that delivery in flight as it dies.
            peers.motion.hold("700000");
            a.kill();
            peers.motion.release();
        }
        for c in 0..CUSTOMERS {
            let (_, body) = message(c, n);
            let alive = n >= EACH / 2 || c % 2 == 1;
            let to = if alive { &to_b } else { &to_a };
            let (status, _) = to.send(body.as_bytes()).await.unwrap();
            assert_eq!(status, 200, "node {}", if alive { "b" } else { "a" });
            acknowledged.push((c, n));
        }
    }
    let total = CUSTOMERS * EACH;
    all_received(&peers, &acknowledged).await;
    let repeats = check_delivery(&peers, &acknowledged);
    assert!(
        repeats <= 16,
        "{repeats} repeats: more than A had in flight"
    );
    println!(
        "{total} messages, {repeats} delivered twice (in flight at the kill); B's log:\n{}",
        b.log_text()
    );
}

/// PostgreSQL stops hard under load: webhooks are answered 503 meanwhile (Facebook
/// sends them again), nothing acknowledged is lost, and both nodes work again by
/// themselves once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_answers_503_and_loses_nothing() {
    let Some(pg) = postgres("restart") else {
        return;
    };
    let peers = Peers::start().await;
    let url = pg.url("restart");
    let a = Process::start(&node_config(&peers, &url, "a"));
    let b = Process::start(&node_config(&peers, &url, "b"));
    let senders = [sender(&peers, &a), sender(&peers, &b)];

    let mut acknowledged = Vec::new();
    let send = |n: usize, c: usize| {
        let body = message(c, n).1;
        let to = &senders[(n + c) % 2];
        async move { to.send(body.as_bytes()).await.unwrap().0 }
    };
    for n in 0..10 {
        for c in 0..4 {
            assert_eq!(send(n, c).await, 200);
            acknowledged.push((c, n));
        }
    }
    pg.crash().unwrap();
    for n in 10..20 {
        for c in 0..4 {
            assert_eq!(send(n, c).await, 503, "while PostgreSQL is down");
        }
    }
    pg.start_server().unwrap();
    // Facebook sends again what was refused, until it is acknowledged; the nodes connect
    // again by themselves.
    for n in 10..30 {
        for c in 0..4 {
            let mut tries = 0;
            while send(n, c).await != 200 {
                tries += 1;
                assert!(
                    tries < 100,
                    "message {n} of {c} never acknowledged after the restart"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            acknowledged.push((c, n));
        }
    }
    all_received(&peers, &acknowledged).await;
    check_delivery(&peers, &acknowledged);
    for node in [&a, &b] {
        let log = node.log_text();
        assert!(
            log.contains("connected to PostgreSQL again") || !log.contains("lost the connection"),
            "{log}"
        );
    }
}

/// A PostgreSQL that hangs (every process of it stopped, as a frozen host or a partition
/// that drops packets looks): webhooks used to wait as long as it did (25 s and 60 s
/// were seen) and /readyz then said "ready". Now a webhook is answered 503 within
/// seconds, /readyz names the server, and once it goes on nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_postgres_gets_webhooks_a_503_within_seconds_and_readyz_names_it() {
    let Some(pg) = postgres("hung") else {
        return;
    };
    let peers = Peers::start().await;
    let url = pg.url("hung");
    let path = node_config(&peers, &url, "a");
    let local_port = free_port();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[local]\nlisten = \"127.0.0.1:0\"",
        &format!("[local]\nlisten = \"127.0.0.1:{local_port}\""),
    );
    std::fs::write(&path, text).unwrap();
    let node = Process::start(&path);
    let to = sender(&peers, &node);
    let mut acknowledged = Vec::new();
    for n in 0..3 {
        assert_eq!(to.send(message(0, n).1.as_bytes()).await.unwrap().0, 200);
        acknowledged.push((0, n));
    }
    all_received(&peers, &acknowledged).await;

    pg.pause().unwrap();
    let started = std::time::Instant::now();
    let (status, _) = to.send(message(0, 3).1.as_bytes()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, 503, "while PostgreSQL hangs");
    assert!(
        took < std::time::Duration::from_secs(15),
        "answered after {took:?}"
    );
    let started = std::time::Instant::now();
    let ready = reqwest::get(format!("http://127.0.0.1:{local_port}/readyz"))
        .await
        .unwrap();
    let took = started.elapsed();
    let status = ready.status().as_u16();
    let text = ready.text().await.unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("PostgreSQL at 127.0.0.1:"), "{text}");
    assert!(
        took < std::time::Duration::from_secs(15),
        "/readyz after {took:?}"
    );
    let node = reqwest::get(format!("http://127.0.0.1:{local_port}/readyz/node"))
        .await
        .unwrap();
    assert_eq!(node.status().as_u16(), 503);
    let text = node.text().await.unwrap();
    assert!(text.contains("PostgreSQL at 127.0.0.1:"), "{text}");
    pg.resume().unwrap();

    // Facebook sends it again until it is taken; nothing is lost or doubled.
    let mut tries = 0;
    while to.send(message(0, 3).1.as_bytes()).await.unwrap().0 != 200 {
        tries += 1;
        assert!(tries < 100, "never acknowledged after the server went on");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    acknowledged.push((0, 3));
    all_received(&peers, &acknowledged).await;
    check_delivery(&peers, &acknowledged);
}

/// A node stopped while a delivery was in flight (a rolling restart, an upgrade): its
/// lease on that conversation used to stay until `storage.lease` ran out, and the
/// conversation waited that long on the other node (21 conversations for 30 s in the
/// benchmark's PostgreSQL column). A clean stop now ends its leases, and the other node
/// delivers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_cleanly_hands_its_conversations_on_at_once() {
    use fb_openchannel::sim::motion::Mode;
    let Some(pg) = postgres("handover") else {
        return;
    };
    let peers = Peers::start().await;
    let url = pg.url("handover");
    // A lease far longer than the test waits: what is handed on is not waited out.
    let long_lease = |name: &str| {
        let path = node_config(&peers, &url, name);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("lease = \"3s\"", "lease = \"10m\"")).unwrap();
        path
    };
    let (a_config, b_config) = (long_lease("a"), long_lease("b"));
    let mut a = Process::start(&a_config);
    // Motion takes the notify and never answers: A's delivery is in flight as it stops.
    peers.motion.set_mode(Mode::Hang);
    let (text, body) = message(0, 0);
    assert_eq!(
        sender(&peers, &a).send(body.as_bytes()).await.unwrap().0,
        200
    );
    crate::wait_until("A's notify reaches Motion", WAIT, || async {
        peers.motion.requests() >= 1
    })
    .await;
    // Its delivery is cut at the end of the stop's drain, with the conversation leased.
    assert!(a.terminate().success(), "{}", a.log_text());
    assert!(
        a.log_text()
            .contains("ended this node's 1 lease(s) on the shared queue"),
        "{}",
        a.log_text()
    );
    let leases = tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .query_one("SELECT COUNT(*) FROM claims", &[])
            .unwrap()
            .get::<_, i64>(0)
    })
    .await
    .unwrap();
    assert_eq!(leases, 0, "leases left by a node that stopped cleanly");

    peers.motion.set_mode(Mode::Accept);
    let b = Process::start(&b_config);
    peers
        .motion
        .wait_for_count(1, std::time::Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("not handed on: {e}; B's log:\n{}", b.log_text()));
    assert_eq!(peers.motion.notifies()[0].notify.body, text);
}

/// Facebook throttles a Page's comments (code 368) for the node that sent one: the
/// other node, where another agent answers, holds its comments too instead of meeting
/// the throttle itself; and the Page's comments keep one pace between the two nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_or_rate_limit_one_node_met_holds_on_the_other_and_comments_keep_one_pace() {
    use crate::wall::{
        VISITOR, a_thread, told_comments_are_throttled, two_answers_at_once_go_out_a_second_apart,
        visitor_post, wall_reply,
    };
    use fb_openchannel::sim::facebook::SendFailure;
    use fb_openchannel::sim::motion::reply_body;
    use fb_openchannel::store::now_ms;
    let Some(pg) = postgres("pauses") else {
        return;
    };
    let peers = Peers::start().await;
    let url = pg.url("pauses");
    let text = peers
        .config_toml("")
        .replace("[facebook]\n", "[facebook]\nblock_pause = \"10m\"\n")
        .replacen(
            &format!("reply_token = \"{REPLY_TOKEN_B}\""),
            &format!("reply_token = \"{REPLY_TOKEN_B}\"\ncomment_interval = \"1s\""),
            1,
        );
    let text_b = std::fs::read_to_string(on_postgres(&peers, &text, &url, "b")).unwrap();
    let text_a = std::fs::read_to_string(on_postgres(&peers, &text, &url, "a")).unwrap();
    let a = Bench::start_on(peers, &text_a).await;
    let b = fb_openchannel::daemon::Daemon::start(a.peers.config(&text_b))
        .await
        .unwrap();
    let reply_url = |local: std::net::SocketAddr| {
        format!("http://{local}/reply/{PAGE_B}?token={REPLY_TOKEN_B}")
    };
    let (on_a, on_b) = (reply_url(a.daemon().local_addr), reply_url(b.local_addr));
    let (post, t) = a_thread(&a).await;
    // Another visitor's post: a conversation of its own, not held behind the first.
    let other = format!("{PAGE_B}_778");
    a.deliver(&visitor_post(&other, "5550009", t, "Parking?"))
        .await;
    a.motion().wait_for_notifies(5, WAIT).await.unwrap();
    let graph = &a.peers.graph;
    let comment_calls = || {
        graph
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/comments"))
            .count()
    };

    // One agent on each node answers at once: one pace for the Page.
    two_answers_at_once_go_out_a_second_apart(&a, [&on_a, &on_b], &post).await;

    // Node A meets the throttle.
    graph.fail_sends(vec![SendFailure::graph(
        400,
        368,
        Some(1390008),
        "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
    )]);
    let (status, answer) = a
        .motion()
        .agent_reply(&on_a, &wall_reply(7503, VISITOR, &post, "Third.", None))
        .await
        .unwrap();
    assert_eq!(status, 202, "{answer}");
    let calls = comment_calls();

    // Node B hears of it and holds its own agent's comment, without calling Graph.
    let readyz = format!("http://{}/readyz", b.local_addr);
    crate::wait_until("node b holds the Page's comments", WAIT, || async {
        let text = get_text(&readyz).await;
        text.contains(&format!("page {PAGE_B}: Facebook throttles comments"))
    })
    .await;
    let (status, answer) = a
        .motion()
        .agent_reply(&on_b, &wall_reply(7504, "5550009", &other, "Fourth.", None))
        .await
        .unwrap();
    told_comments_are_throttled(status, &answer);
    assert_eq!(comment_calls(), calls, "node b made no call meanwhile");
    // Both nodes are throttled alike: each node's own check stays ready, so a floating
    // IP that follows it does not leave both nodes.
    for local in [a.daemon().local_addr, b.local_addr] {
        let url = format!("http://{local}/readyz");
        assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 503);
        let body = reqwest::get(format!("{url}/node")).await.unwrap();
        assert_eq!(body.status().as_u16(), 200, "{url}/node");
    }

    // Facebook rate-limits the Page (code 32, 5 minutes) for node A's Messenger reply:
    // node B's replies to the Page wait too, without a call of their own.
    for (customer, mid) in [(VISITOR, "mid.rl1"), ("5550009", "mid.rl2")] {
        a.deliver(&messenger_text(
            PAGE_B,
            customer,
            mid,
            now_ms() - 1000,
            "hi",
        ))
        .await;
    }
    a.motion().wait_for_notifies(7, WAIT).await.unwrap();
    graph.fail_sends(vec![SendFailure {
        headers: vec![(
            "x-business-use-case-usage".into(),
            format!(
                r#"{{"{PAGE_B}":[{{"type":"pages","call_count":100,"estimated_time_to_regain_access":5}}]}}"#
            ),
        )],
        ..SendFailure::graph(400, 32, None, "(#32) Page request limit reached")
    }]);
    let sends = graph.send_calls();
    let (status, answer) = a
        .motion()
        .agent_reply(&on_a, &reply_body(7601, VISITOR, "Hello.", None))
        .await
        .unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(graph.send_calls(), sends + 1);
    crate::wait_until("node b's calls for the Page wait", WAIT, || async {
        let text = get_text(&readyz).await;
        text.contains(&format!(
            "page {PAGE_B}: Facebook rate-limits the page's calls"
        ))
    })
    .await;
    let (status, answer) = a
        .motion()
        .agent_reply(&on_b, &reply_body(7602, "5550009", "Hello too.", None))
        .await
        .unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(graph.send_calls(), sends + 1, "node b made no call");
    b.stop().await;
    a.stop().await;
}

/// The nodes hold one config: `setup` on one node gave it a new Page token that the
/// other node's file lacks. Each node's `/readyz` warns of the other (still ready: it
/// takes webhooks) and `doctor` on the stale node names the part, never its value; once
/// the file is copied and the node reloaded, the warnings end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_run_different_configs_say_so_until_the_file_is_copied() {
    let Some(pg) = postgres("configs") else {
        return;
    };
    let peers = Peers::start().await;
    let url = pg.url("configs");
    let text = peers.config_toml("");
    let text_a = std::fs::read_to_string(on_postgres(&peers, &text, &url, "a")).unwrap();
    let old_token = text.replace(TOKEN_B, "EAAG-page-token-b-before-setup");
    let path_b = on_postgres(&peers, &old_token, &url, "b");
    let text_b = std::fs::read_to_string(&path_b).unwrap();
    let a = Bench::start_on(peers, &text_a).await;
    let b = fb_openchannel::daemon::Daemon::start(a.peers.config(&text_b))
        .await
        .unwrap();
    let differs = format!("page {PAGE_B}'s access_token differs");
    for local in [a.daemon().local_addr, b.local_addr] {
        let url = format!("http://{local}/readyz");
        crate::wait_until("each node names the other's config", WAIT, || async {
            let r = reqwest::get(&url).await.unwrap();
            let ok = r.status().as_u16() == 200;
            let text = r.text().await.unwrap();
            ok && text.contains("warning: node ") && text.contains(&differs)
        })
        .await;
    }
    let doctor = |path: &std::path::Path| {
        let (_, out, _) = crate::harness::cli(&["doctor", "--config", path.to_str().unwrap()]);
        out.lines()
            .find(|l| l.contains("nodes"))
            .unwrap_or_else(|| panic!("{out}"))
            .to_owned()
    };
    let metrics = get_text(format!("http://{}/metrics", b.local_addr)).await;
    assert!(
        metrics.contains("fb_openchannel_shared_queue_config_differences 1\n"),
        "{metrics}"
    );
    let line = doctor(&path_b);
    assert!(
        line.contains("✗") && line.contains(&differs) && line.contains("copy the same config"),
        "{line}"
    );
    assert!(
        !line.contains(TOKEN_B) && !line.contains("before-setup"),
        "{line}"
    );

    // The file is copied to node B (its own state folder kept) and B reloaded.
    let path_b = on_postgres(&a.peers, &text, &url, "b");
    b.reload(&path_b).await.unwrap();
    for local in [a.daemon().local_addr, b.local_addr] {
        let url = format!("http://{local}/readyz");
        crate::wait_until("the nodes run one config", WAIT, || async {
            let text = get_text(&url).await;
            !text.contains("runs another config")
        })
        .await;
    }
    let line = doctor(&path_b);
    assert!(
        line.contains("✓") && line.contains("every node runs this config file"),
        "{line}"
    );
}

/// `setup` added page B to node A's config only, and the floating IP is on node B: a
/// customer's message to page B reaches node B. Node B keeps it (it used to skip it as
/// "not configured", lost) and leaves its delivery to node A, which has the page, without
/// a failed attempt of its own; an agent's answer on node A is not refused by node B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_only_one_node_has_is_delivered_by_that_node_whichever_node_took_it() {
    use fb_openchannel::sim::motion::reply_body;
    let Some(pg) = postgres("handover") else {
        return;
    };
    let peers = Peers::start().await;
    let url = pg.url("handover");
    let text = peers.config_toml("");
    let text_a = std::fs::read_to_string(on_postgres(&peers, &text, &url, "a")).unwrap();
    let start = text.find(&format!("[[page]]\nid = \"{PAGE_B}\"")).unwrap();
    let end = start + text[start..].find("reply_token").unwrap();
    let end = end + text[end..].find('\n').unwrap() + 1;
    let without_b = format!("{}{}", &text[..start], &text[end..]);
    let text_b = std::fs::read_to_string(on_postgres(&peers, &without_b, &url, "b")).unwrap();
    let mut a = Bench::start_on(peers, &text_a).await;
    let b = fb_openchannel::daemon::Daemon::start(a.peers.config(&text_b))
        .await
        .unwrap();
    let readyz = format!("http://{}/readyz", b.local_addr);
    crate::wait_until("node b knows node a has page b", WAIT, || async {
        let text = get_text(&readyz).await;
        text.contains(&format!("page {PAGE_B} is configured only there"))
    })
    .await;

    // Node A restarts (its row stays in the shared queue meanwhile): the message reaches
    // node B, which leaves it to the node that has the page instead of trying it.
    a.daemon.take().unwrap().stop().await;
    let to_b = WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", b.public_addr.port()),
        APP_SECRET,
        Some(&a.peers.certs.ca_pem),
    );
    let body = messenger_text(
        PAGE_B,
        "5550042",
        "mid.handover.1",
        fb_openchannel::store::now_ms() - 1000,
        "Hello B",
    );
    let (status, answer) = to_b.send(body.as_bytes()).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let metrics = format!("http://{}/metrics", b.local_addr);
    crate::wait_until("node b leaves the message to node a", WAIT, || async {
        let text = get_text(&metrics).await;
        text.contains("fb_openchannel_items_left_to_other_nodes_total 1")
            || text.contains("fb_openchannel_items_left_to_other_nodes_total 2")
    })
    .await;
    let a = a.restart().await;
    let notes = a.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, "Hello B");
    let page_b = |i: &fb_openchannel::store::ItemSummary| {
        i.page_id == PAGE_B && i.direction == fb_openchannel::store::Direction::Inbound
    };
    a.wait_items("the message is delivered", |items| {
        items
            .iter()
            .any(|i| page_b(i) && i.state == fb_openchannel::model::ItemState::Done)
    })
    .await;
    let item = a.items().await.into_iter().find(page_b).unwrap();
    assert_eq!(item.attempts, 1, "no failed attempt on node b: {item:?}");

    // An agent answers on node A: node B leaves the reply to node A as well.
    let reply_url = format!(
        "http://{}/reply/{PAGE_B}?token={REPLY_TOKEN_B}",
        a.daemon().local_addr
    );
    let (status, answer) = a
        .motion()
        .agent_reply(&reply_url, &reply_body(7801, "5550042", "Hi!", None))
        .await
        .unwrap();
    assert!(status == 200 || status == 202, "{status} {answer}");
    crate::wait_until("the reply is sent once", WAIT, || async {
        a.peers.graph.sent().len() == 1
    })
    .await;
    assert_eq!(a.motion().notifies().len(), 1, "nothing doubled");

    // An agent on node B's Motion answers page B: node B cannot check the reply token
    // it lacks, and says why.
    let on_b = format!(
        "http://{}/reply/{PAGE_B}?token={REPLY_TOKEN_B}",
        b.local_addr
    );
    let (status, answer) = a
        .motion()
        .agent_reply(&on_b, &reply_body(7802, "5550042", "Hi again!", None))
        .await
        .unwrap();
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("configured on another node of fb-openchannel but not on this one"),
        "{answer}"
    );
}
