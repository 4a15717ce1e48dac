//! The public listener: handshake, signatures, limits, bad input, duplicates.

use std::sync::Arc;
use std::time::Duration;

use fb_openchannel::facebook::signature;
use fb_openchannel::sim::facebook::messenger_text;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use fb_openchannel::model::ItemState;

#[tokio::test]
async fn handshake_answers_the_challenge_only_for_the_right_token() {
    let bench = Bench::start().await;
    let client = bench.sender.client();
    let url = bench.webhook_url();
    let ok = client
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");

    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
        &format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        "",
    ] {
        let r = client.get(format!("{url}?{query}")).send().await.unwrap();
        assert_eq!(r.status(), 403, "{query}");
    }
    bench.stop().await;
}

#[tokio::test]
async fn unsigned_or_badly_signed_webhooks_get_403_and_store_nothing() {
    let bench = Bench::start().await;
    let body = messenger_text(PAGE_A, PSID, "m-1", 1_700_000_000_000, "hello");
    let wrong_secret = signature::sign(b"not-the-app-secret", body.as_bytes());
    let tampered = signature::sign(APP_SECRET.as_bytes(), b"{}");
    for sig in [
        None,
        Some(wrong_secret.as_str()),
        Some(tampered.as_str()),
        Some("sha256=xyz"),
        Some("sha1=abcdef"),
    ] {
        let (status, _) = bench
            .sender
            .send_with_signature(body.as_bytes(), sig)
            .await
            .unwrap();
        assert_eq!(status, 403, "{sig:?}");
    }
    let store = &bench.daemon().shared.store;
    assert_eq!(store.webhook_count().await.unwrap(), 0);
    assert!(bench.items().await.is_empty());
    assert_eq!(bench.motion().requests(), 0);
    bench.stop().await;
}

#[tokio::test]
async fn body_over_max_body_bytes_gets_413_and_stores_nothing() {
    let bench = Bench::start_with_public("max_body_bytes = 1048576").await;
    let body = vec![b'x'; 1024 * 1024 + 1];
    let (status, _) = bench.sender.send(&body).await.unwrap();
    assert_eq!(status, 413);
    // Without a Content-Length (chunked), the limit still holds while reading.
    let sig = signature::sign(APP_SECRET.as_bytes(), &body);
    let stream = futures_util::stream::iter(
        body.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = bench
        .sender
        .client()
        .post(bench.webhook_url())
        .header(signature::HEADER, sig)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        bench.daemon().shared.store.webhook_count().await.unwrap(),
        0
    );
    bench.stop().await;
}

#[tokio::test]
async fn signed_garbage_is_acknowledged_and_kept_as_a_failed_webhook() {
    let bench = Bench::start().await;
    for body in [
        &b"\x00\xffnot json at all"[..],
        b"{\"object\":\"page\"}",
        b"[1,2,3]",
        b"{\"object\":\"page\",\"entry\":[{\"messaging\":[]}]}",
    ] {
        let (status, _) = bench.sender.send(body).await.unwrap();
        assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(body));
    }
    let failed = bench.daemon().shared.store.failed_webhooks().await.unwrap();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed[0].1.contains("not JSON"), "{failed:?}");
    assert!(failed[2].1.contains("not a JSON object"), "{failed:?}");
    // An entry without an id fails alone, as an item of a readable webhook.
    let items = bench.items().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].state, ItemState::Failed);
    assert_eq!(bench.motion().requests(), 0);
    bench.stop().await;
}

#[tokio::test]
async fn a_badly_typed_item_is_kept_as_failed_and_its_neighbours_are_delivered() {
    let bench = Bench::start().await;
    let body = format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE_A}","time":1,"messaging":[
            {{"sender":{{"id":"{PSID}"}},"recipient":{{"id":"{PAGE_A}"}},"timestamp":10,"message":{{"mid":"bad","text":{{"not":"a string"}}}}}},
            {{"sender":{{"id":"{PSID}"}},"recipient":{{"id":"{PAGE_A}"}},"timestamp":11,"message":{{"mid":"good","text":"still here"}}}}]}}]}}"#
    );
    bench.deliver(&body).await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, "still here");
    let items = bench.items().await;
    assert_eq!(items[0].state, ItemState::Failed);
    assert!(
        items[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("does not fit"),
        "{items:?}"
    );
    bench.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let bench = Bench::start().await;
    let client = bench.sender.client();
    let base = bench.webhook_url().replace("/webhook", "");
    assert_eq!(
        client
            .get(format!("{base}/"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .post(format!("{base}/webhooks"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = client.put(bench.webhook_url()).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST");
    assert_eq!(
        client
            .delete(bench.webhook_url())
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    bench.stop().await;
}

#[tokio::test]
async fn the_same_webhook_three_times_gives_one_notify() {
    let bench = Bench::start().await;
    let body = messenger_text(
        PAGE_A,
        PSID,
        "mid.dup",
        1_700_000_000_000,
        "only once please",
    );
    for _ in 0..3 {
        bench.deliver(&body).await;
    }
    // A later message of the same customer: once it is through, anything before it is too.
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "mid.after",
            1_700_000_000_500,
            "marker",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let bodies: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
    assert_eq!(bodies, ["only once please", "marker"]);
    assert_eq!(
        bench.daemon().shared.store.webhook_count().await.unwrap(),
        2,
        "the same bytes are kept once"
    );
    assert_eq!(bench.items().await.len(), 2);
    bench.stop().await;
}

/// A captured signed webhook replayed 1,000 times stored 1,000 copies of its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_replayed_a_thousand_times_is_stored_once() {
    let bench = Bench::start().await;
    let body = messenger_text(PAGE_A, PSID, "mid.replay", 1_700_000_000_000, "replayed");
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let sender = bench.sender.clone();
        let body = body.clone();
        sends.spawn(async move { sender.send(body.as_bytes()).await.unwrap().0 });
        if sends.len() >= 16 {
            assert_eq!(sends.join_next().await.unwrap().unwrap(), 200);
        }
    }
    while let Some(status) = sends.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let store = &bench.daemon().shared.store;
    assert_eq!(store.webhook_count().await.unwrap(), 1);
    assert_eq!(bench.items().await.len(), 1);
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes.len(), 1);
    bench.stop().await;
}

/// Opens a TLS connection to the daemon the way a raw client would.
async fn raw_tls(bench: &Bench) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fb_openchannel::http_client::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls_pki_types::CertificateDer::pem_slice_iter(bench.peers.certs.ca_pem.as_bytes())
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(bench.daemon().public_addr)
        .await
        .unwrap();
    connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_and_the_daemon_keeps_serving() {
    let bench = Bench::start().await;
    let mut tls = raw_tls(&bench).await;
    // A well-formed signature: the body is read (and would be checked at its end).
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 500\r\nx-hub-signature-256: sha256={}\r\n\r\n{{\"object\":",
        "0".repeat(64)
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer))
        .await
        .expect("the daemon must answer a stalled body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "answered before the configured 2 s timeout"
    );
    // Without a well-formed signature the body is not even waited for.
    let mut tls = raw_tls(&bench).await;
    let head = "POST /webhook HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 500\r\nx-hub-signature-256: sha256=00\r\n\r\n{\"object\":";
    tls.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(WAIT, tls.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 403"));
    assert!(started.elapsed() < Duration::from_millis(1000));
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "m-after-slow", 1, "fine"))
        .await;
    bench.stop().await;
}

#[tokio::test]
async fn a_client_that_never_sends_its_head_is_disconnected() {
    let bench = Bench::start().await;
    let mut tls = raw_tls(&bench).await;
    tls.write_all(b"POST /webhook HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection must be closed by the daemon");
    bench.stop().await;
}

#[tokio::test]
async fn keep_alive_serves_many_webhooks_on_one_connection() {
    let bench = Bench::start().await;
    let mut tls = raw_tls(&bench).await;
    for i in 0..3 {
        let body = messenger_text(
            PAGE_A,
            PSID,
            &format!("ka-{i}"),
            1_700_000_000_000 + i,
            "hi",
        );
        let sig = signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
        let request = format!(
            "POST /webhook HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-hub-signature-256: {sig}\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tls.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
        assert!(answer.ends_with("EVENT_RECEIVED"), "request {i}: {answer}");
    }
    bench.motion().wait_for_notifies(3, WAIT).await.unwrap();
    bench.stop().await;
}

/// A lone UTF-16 surrogate in one message made the whole signed batch unreadable, and
/// its neighbours were lost with it. Now only that item fails, and it is counted.
#[tokio::test]
async fn one_unreadable_item_fails_alone_and_is_counted() {
    let bench = Bench::start().await;
    let item = |mid: &str, ts: i64, text: &str| {
        format!(
            r#"{{"sender":{{"id":"{PSID}"}},"recipient":{{"id":"{PAGE_A}"}},"timestamp":{ts},"message":{{"mid":"{mid}","text":"{text}"}}}}"#
        )
    };
    let body = format!(
        r#"{{"object":"page","entry":[{{"id":"{PAGE_A}","time":1,"messaging":[{},{},{}]}}]}}"#,
        item("mid.s1", 1, "before"),
        item("mid.s2", 2, r"broken \ud800 here"),
        item("mid.s3", 3, "after"),
    );
    bench.deliver(&body).await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let bodies: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
    assert_eq!(bodies, ["before", "after"]);
    let failed: Vec<_> = bench
        .items()
        .await
        .into_iter()
        .filter(|i| i.state == ItemState::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("not valid JSON text")
    );
    let shared = &bench.daemon().shared;
    let metrics = shared.metrics_text().await.unwrap();
    assert!(
        metrics.contains("fb_openchannel_webhook_items_unreadable_total 1"),
        "{metrics}"
    );
    let ready = get_text(format!("http://{}/readyz", bench.daemon().local_addr)).await;
    assert!(
        ready.contains("1 signed webhook item(s) could not be read"),
        "{ready}"
    );
    bench.stop().await;
}

/// 7,000 entries for pages that are not configured made 14,000 metric series.
#[tokio::test]
async fn entries_for_unknown_pages_make_no_metric_series_of_their_own() {
    let bench = Bench::start().await;
    let entries: Vec<String> = (0..7000)
        .map(|i| {
            format!(
                r#"{{"id":"{}","time":1,"messaging":[{{"sender":{{"id":"5"}},"recipient":{{"id":"1"}},"timestamp":1,"message":{{"mid":"m{i}","text":"x"}}}}]}}"#,
                900_000_000 + i
            )
        })
        .collect();
    let body = format!(r#"{{"object":"page","entry":[{}]}}"#, entries.join(","));
    let (status, _) = bench.sender.send(body.as_bytes()).await.unwrap();
    assert_eq!(status, 200);
    let shared = &bench.daemon().shared;
    let metrics = shared.metrics_text().await.unwrap();
    let series = metrics.lines().filter(|l| !l.starts_with('#')).count();
    assert!(series < 100, "{series} series");
    assert!(
        metrics.contains(r#"fb_openchannel_events_stored_total{page_id="unconfigured",kind="message",state="skipped"} 7000"#),
        "{metrics}"
    );
    bench.stop().await;
}
