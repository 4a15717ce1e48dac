//! Ids and URLs from outside that try to steer the daemon's own requests: each is
//! refused where it comes in, and the simulated peers see no request to any other path
//! or host (DESIGN §4 rule 10).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fb_openchannel::sim::facebook::{SimGraph, messenger_attachment, messenger_text};
use fb_openchannel::sim::motion::reply_body;
use serde_json::json;

use crate::harness::*;
use fb_openchannel::model::{Direction, ItemState};

fn reply_url(bench: &Bench) -> String {
    format!(
        "http://{}/reply/{PAGE_A}?token={REPLY_TOKEN_A}",
        bench.daemon().local_addr
    )
}

#[tokio::test]
async fn ids_from_motion_that_are_not_ids_are_refused_and_reach_no_url() {
    let bench = Bench::start().await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "mid.h1",
            fb_openchannel::store::now_ms(),
            "hello",
        ))
        .await;
    bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    let motion_calls = bench.motion().requests();
    let graph_calls = bench.peers.graph.requests_but_token_checks().len();

    let mut file = reply_body(8001, PSID, "report.pdf", None);
    file["AttachmentId"] = json!("../../api/users?x=");
    let mut feed = reply_body(8002, PSID, "hello wall", None);
    feed["Interaction"]["threadId"] = json!(format!("{PAGE_A}/feed#"));
    let mut unseen = reply_body(8003, PSID, "hello wall", None);
    unseen["Interaction"]["threadId"] = json!(format!("{PAGE_A}_9999999"));
    let mut someone = reply_body(8004, PSID, "hello", None);
    someone["Contact"]["facebook"] = json!("../../me/feed?x=");
    for (body, status, says) in [
        (file, 400, "AttachmentId"),
        (feed, 400, "threadId"),
        (unseen, 422, "wall thread"),
        (someone, 400, "not a Facebook id"),
    ] {
        let (got, answer) = bench
            .motion()
            .agent_reply(&reply_url(&bench), &body)
            .await
            .unwrap();
        assert_eq!(got, status, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    assert_eq!(bench.motion().requests(), motion_calls, "no call to Motion");
    assert_eq!(
        bench.peers.graph.requests_but_token_checks().len(),
        graph_calls,
        "no call to Graph: {:?}",
        bench.peers.graph.requests_but_token_checks()
    );
    let outbound = bench
        .items()
        .await
        .into_iter()
        .filter(|i| i.direction == Direction::Outbound)
        .count();
    assert_eq!(outbound, 0, "nothing was stored");
    bench.stop().await;
}

#[tokio::test]
async fn a_signed_webhook_with_forged_ids_is_kept_as_failed_and_calls_nothing() {
    let bench = Bench::start().await;
    // A sender id that would have become GET /me/feed with the Page token.
    bench
        .deliver(&messenger_text(
            PAGE_A,
            "../../me/feed?x=",
            "mid.f1",
            1,
            "hi",
        ))
        .await;
    // A wall comment whose ids would have become POST /{page}/feed.
    bench
        .deliver(&fb_openchannel::sim::facebook::feed_change(
            PAGE_A,
            2,
            json!({"item": "comment", "verb": "add", "post_id": format!("{PAGE_A}/feed#"),
                   "comment_id": "1_2", "parent_id": format!("{PAGE_A}/feed#"),
                   "from": {"id": "7", "name": "Eve"}, "created_time": 2, "message": "x"}),
        ))
        .await;
    // A neighbour that is fine still goes through.
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "mid.f2", 3, "fine"))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].notify.body, "fine");
    let items = bench.items().await;
    let failed: Vec<_> = items
        .iter()
        .filter(|i| i.state == ItemState::Failed)
        .collect();
    assert_eq!(failed.len(), 2, "{items:?}");
    for f in failed {
        let why = f.last_error.as_deref().unwrap_or("");
        assert!(why.contains("is not a Facebook id"), "{why}");
        assert!(!f.conversation.as_str().contains('/'), "{}", f.conversation);
    }
    let graph: Vec<String> = bench
        .peers
        .graph
        .requests_but_token_checks()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(
        graph.iter().all(|p| p.ends_with(&format!("/{PSID}"))),
        "only the real customer's name was looked up: {graph:?}"
    );
    bench.stop().await;
}

/// Counts TCP connections to a port that nothing else serves.
async fn connection_counter() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}

#[tokio::test]
async fn customer_files_come_only_from_facebooks_media_hosts() {
    // `localhost` is listed too: a listed name must still never reach a private address.
    let bench =
        Bench::start_edited(|t| t.replace("media_hosts = [\"", "media_hosts = [\"localhost\", \""))
            .await;
    let graph = &bench.peers.graph;
    let elsewhere = SimGraph::start().await.unwrap();
    let secret = elsewhere.add_file("secret.jpg", "image/jpeg", vec![1u8; 10]);
    let (port, connections) = connection_counter().await;
    let cases = [
        // The CDN redirects somewhere that is not a media host.
        graph.add_redirect("moved.jpg", &secret),
        // Motion's own API, on loopback.
        format!("{}/api/attachments?apikey=x", bench.motion().server.url()),
        // A name that resolves to loopback.
        format!("https://localhost:{port}/x.jpg"),
        // Straight to a host that is not listed.
        secret.clone(),
    ];
    let motion_calls = bench.motion().requests();
    for (i, url) in cases.iter().enumerate() {
        bench
            .deliver(&messenger_attachment(
                PAGE_A,
                PSID,
                &format!("mid.m{i}"),
                10 + i as i64,
                "image",
                url,
            ))
            .await;
    }
    // Then a real photo from the CDN, which does go through.
    let ok = graph.add_file("ok.jpg", "image/jpeg", vec![7u8; 64]);
    bench
        .deliver(&messenger_attachment(
            PAGE_A, PSID, "mid.ok", 20, "image", &ok,
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(5, WAIT).await.unwrap();
    for (note, url) in notes.iter().zip(&cases) {
        assert_eq!(
            note.notify.body,
            format!("[image] {url}"),
            "sent as a link only"
        );
        assert_eq!(note.notify.attachment_id, None);
    }
    assert!(
        notes[4].notify.attachment_id.is_some(),
        "the real photo is moved"
    );
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing connected to localhost"
    );
    // Motion saw the five notifies and the one upload, nothing else.
    assert_eq!(bench.motion().requests(), motion_calls + 6);
    let cdn: Vec<String> = graph
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/cdn/"))
        .map(|r| r.path)
        .collect();
    assert_eq!(cdn, ["/cdn/moved.jpg", "/cdn/ok.jpg"]);
    bench.stop().await;
}

/// With `public.client_ca`, a webhook needs Meta's client certificate: the right CA and
/// name are served (webhook and handshake); no certificate, another CA's with the right
/// name, the right CA's for another name (or with Meta's name only as the CN beside
/// another host's SAN) get 403 on /webhook, and nothing of theirs is stored — while the
/// handshake itself asks for a certificate without requiring one, so /oauth/callback (an
/// admin's browser) and /files/ (Meta's fetcher) stay reachable without one.
#[tokio::test]
async fn mutual_tls_requires_metas_client_certificate_on_webhook_only() {
    use fb_openchannel::sim::tls::ClientCa;
    let peers = Peers::start().await;
    let meta = ClientCa::new("Meta outbound API test CA").unwrap();
    let ca_path = peers.dir.path().join("meta-ca.pem");
    std::fs::write(&ca_path, &meta.pem).unwrap();
    let text = peers.config_toml_with(&format!("client_ca = \"{}\"", ca_path.display()), "", "");
    let bench = Bench::start_on(peers, &text).await;
    let url = bench.webhook_url();
    let ca = bench.peers.certs.ca_pem.clone();
    let client = |identity: Option<fb_openchannel::sim::tls::ClientCert>| {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
        if let Some(id) = identity {
            let pem = format!("{}{}", id.chain_pem, id.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };
    let post = |c: reqwest::Client, mid: &'static str| {
        let url = url.clone();
        let body = messenger_text(PAGE_A, PSID, mid, 1_700_000_000_000, "over mTLS");
        let signature =
            fb_openchannel::facebook::signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
        async move {
            c.post(&url)
                .header("x-hub-signature-256", signature)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap()
        }
    };

    let name = "client.webhooks.fbclientcerts.com";
    let good = client(Some(meta.issue(name).unwrap()));
    assert_eq!(post(good.clone(), "m.mtls").await, 200);
    let challenge =
        format!("{url}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=4242");
    let answer = good.get(&challenge).send().await.unwrap();
    assert_eq!(answer.text().await.unwrap(), "4242");
    // A certificate without SANs is named by its common name.
    let by_cn = client(Some(meta.issue_named(name, &[]).unwrap()));
    assert_eq!(by_cn.get(&challenge).send().await.unwrap().status(), 200);

    let stranger = ClientCa::new("Someone else's CA").unwrap();
    for (who, c) in [
        ("no certificate", client(None)),
        ("another CA", client(Some(stranger.issue(name).unwrap()))),
        (
            "another name",
            client(Some(meta.issue("attacker.example").unwrap())),
        ),
        // Meta's name as the common name, another host in the SANs: only SANs count.
        (
            "Meta's CN, another SAN",
            client(Some(meta.issue_named(name, &["attacker.example"]).unwrap())),
        ),
    ] {
        assert_eq!(post(c.clone(), "m.refused").await, 403, "{who}: refused");
        // The verification GET stores nothing: answered with or without one.
        assert_eq!(
            c.get(&challenge).send().await.unwrap().status(),
            200,
            "{who}"
        );
        // Not Meta's business: the admin's browser and Meta's file fetcher.
        let base = url.trim_end_matches("/webhook");
        let oauth = c
            .get(format!("{base}/oauth/callback?code=x&state=y"))
            .send()
            .await
            .unwrap();
        assert_eq!(oauth.status(), 404, "{who}: /oauth/callback reachable");
        let file = c.get(format!("{base}/files/none/x")).send().await.unwrap();
        assert_eq!(file.status(), 404, "{who}: /files/ reachable");
    }
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(
        bench.items().await.len(),
        1,
        "only the admitted webhook was read"
    );

    // Meta rotates its CA: the file is replaced and the daemon reloaded, no restart.
    let rotated = ClientCa::new("Meta outbound API test CA, next").unwrap();
    std::fs::write(&ca_path, &rotated.pem).unwrap();
    let config_path = bench.peers.dir.path().join("config.toml");
    let summary = bench.daemon().reload(&config_path).await.unwrap();
    assert!(!summary.contains("restart"), "{summary}");
    let next = client(Some(rotated.issue(name).unwrap()));
    assert_eq!(post(next, "m.next").await, 200);
    let old = client(Some(meta.issue(name).unwrap()));
    assert_eq!(post(old, "m.old").await, 403, "the old CA is out");
    // A broken file at the next reload keeps the CA in force, and says so.
    std::fs::write(&ca_path, "not a certificate").unwrap();
    let summary = bench.daemon().reload(&config_path).await.unwrap();
    assert!(
        summary.contains("client certificates checked as before"),
        "{summary}"
    );
    let fresh = client(Some(rotated.issue(name).unwrap()));
    assert_eq!(post(fresh, "m.fresh").await, 200);
    bench.stop().await;
}

/// `public.client_cert = "report"`: Meta may not send a client certificate with Page and
/// Instagram webhooks at all, so the daemon can take every webhook and count what came;
/// `doctor` says what it saw and when `require` is safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_in_report_mode_takes_every_webhook_and_counts_the_certificates() {
    use fb_openchannel::sim::tls::ClientCa;
    let peers = Peers::start().await;
    let meta = ClientCa::new("Meta outbound API test CA").unwrap();
    let ca_path = peers.dir.path().join("meta-ca.pem");
    std::fs::write(&ca_path, &meta.pem).unwrap();
    let local_port = free_port();
    let text = peers
        .config_toml_with(
            &format!(
                "client_ca = \"{}\"\nclient_cert = \"report\"",
                ca_path.display()
            ),
            "",
            "",
        )
        .replace(
            "[local]\nlisten = \"127.0.0.1:0\"",
            &format!("[local]\nlisten = \"127.0.0.1:{local_port}\""),
        );
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let daemon = Process::start(&path);
    let url = format!("https://127.0.0.1:{}/webhook", daemon.public_port);
    let ca = peers.certs.ca_pem.clone();
    let client = |identity: Option<fb_openchannel::sim::tls::ClientCert>| {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
        if let Some(id) = identity {
            let pem = format!("{}{}", id.chain_pem, id.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };
    let name = "client.webhooks.fbclientcerts.com";
    for (n, c) in [
        client(None),
        client(Some(meta.issue(name).unwrap())),
        client(Some(ClientCa::new("Other").unwrap().issue(name).unwrap())),
    ]
    .into_iter()
    .enumerate()
    {
        let body = messenger_text(
            PAGE_A,
            PSID,
            &format!("m.rep.{n}"),
            1_700_000_000_000 + n as i64,
            "hi",
        );
        let signature =
            fb_openchannel::facebook::signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
        let status = c
            .post(&url)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "report mode takes every webhook");
    }
    peers.motion.wait_for_notifies(3, WAIT).await.unwrap();
    let (code, out, err) = cli(&["doctor", "--config", path.to_str().unwrap()]);
    assert!(
        out.contains("1 with Meta's certificate, 1 without one, 1 with another"),
        "{code}\n{out}{err}"
    );
    assert!(
        out.contains("keep public.client_cert = \"report\""),
        "{out}"
    );
    drop(daemon);
}

/// A TLS client that names the host by an IP address in its SNI (rustls: "Illegal SNI
/// extension", at WARN) wrote a log line per connection, for anyone on the internet.
/// Now such handshakes leave at most a line or two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_as_sni_does_not_write_a_line_per_connection() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED an_ip_address_as_sni_does_not_write_a_line_per_connection: needs the openssl command (apt-get install openssl); CI has it"
        );
        return;
    }
    let peers = Peers::start().await;
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, peers.config_toml("")).unwrap();
    let daemon = Process::start(&path);
    let port = daemon.public_port;
    for _ in 0..30 {
        let out = tokio::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "127.0.0.1", "-brief"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("CONNECTION ESTABLISHED") || said.contains("Protocol version"),
            "{said}"
        );
    }
    // The last handshake is logged (if at all) before its connection ends.
    let sni_lines = daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("SNI"))
        .count();
    assert!(sni_lines <= 1, "{}", daemon.log_text());
}
