//! What App Review asks of the app, and a token's health before it fails: the
//! deauthorize and data-deletion callbacks with Meta's signed request (good, forged,
//! stale, malformed), a deauthorize that kills a Page's token named by `/readyz`, and
//! `debug_token`'s verdicts — data access ending in 3 days, a permission withdrawn.

use fb_openchannel::relay::token_health;
use serde_json::json;

use crate::harness::*;

fn public_client(bench: &Bench) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(bench.peers.certs.ca_pem.as_bytes()).unwrap(),
        )
        .build()
        .unwrap()
}

fn public_url(bench: &Bench, path: &str) -> String {
    format!(
        "https://localhost:{}{path}",
        bench.daemon().public_addr.port()
    )
}

async fn readyz(bench: &Bench) -> (u16, String) {
    let r = reqwest::get(format!("http://{}/readyz", bench.daemon().local_addr))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post_signed(bench: &Bench, path: &str, signed: &str) -> (u16, String) {
    let r = public_client(bench)
        .post(public_url(bench, path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("signed_request", signed)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn both_callbacks_take_only_a_fresh_request_signed_with_the_app_secret() {
    let bench = Bench::start().await;
    let graph = &bench.peers.graph;
    graph.set_app_secret(APP_SECRET);
    let user = "10158000000000001";
    for path in ["/facebook/deauthorize", "/facebook/data-deletion"] {
        let forged = graph.signed_request(user, 0, Some("not-the-app-secret"));
        let (status, body) = post_signed(&bench, path, &forged).await;
        assert_eq!(
            (status, body.trim()),
            (
                400,
                "signed_request's signature does not match the app secret"
            ),
            "{path}"
        );
        let stale = graph.signed_request(user, 2 * 86_400, None);
        let (status, body) = post_signed(&bench, path, &stale).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("more than a day old"), "{body}");
        for malformed in ["", "abc", "!!.??", &"a.".repeat(5000)] {
            let (status, _) = post_signed(&bench, path, malformed).await;
            assert!(
                status == 400 || status == 413,
                "{path} {malformed:.20}: {status}"
            );
        }
        // Not a form at all, and the wrong method.
        let r = public_client(&bench)
            .get(public_url(&bench, path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    // Nothing was deleted or recorded by the refused ones: a good one now.
    let good = graph.signed_request(user, 10, None);
    let (status, body) = post_signed(&bench, "/facebook/data-deletion", &good).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let code = answer["confirmation_code"].as_str().unwrap();
    let url = answer["url"].as_str().unwrap();
    assert_eq!(code.len(), 32);
    assert!(
        url.ends_with(&format!("/facebook/data-deletion/{code}")),
        "{url}"
    );
    let status_page = public_client(&bench)
        .get(public_url(
            &bench,
            &format!("/facebook/data-deletion/{code}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(status_page.status(), 200);
    let page = status_page.text().await.unwrap();
    assert!(page.contains("Data deletion request received"), "{page}");
    assert!(
        !page.contains(user),
        "no personal data on the status page: {page}"
    );
    let unknown = public_client(&bench)
        .get(public_url(
            &bench,
            &format!("/facebook/data-deletion/{}", "0".repeat(32)),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let good = graph.signed_request(user, 10, None);
    let (status, _) = post_signed(&bench, "/facebook/deauthorize", &good).await;
    assert_eq!(status, 200);
    bench.stop().await;
}

#[tokio::test]
async fn a_deauthorize_that_killed_a_page_token_makes_readyz_name_the_page() {
    let bench = Bench::start().await;
    let graph = &bench.peers.graph;
    graph.set_app_secret(APP_SECRET);
    let (status, body) = readyz(&bench).await;
    assert_eq!(status, 200, "{body}");
    // The admin who connected page A removed the app in their Facebook settings.
    graph.revoke_token(TOKEN_A);
    let signed = graph.signed_request("10000000000001", 5, None);
    let (status, _) = post_signed(&bench, "/facebook/deauthorize", &signed).await;
    assert_eq!(status, 200);
    crate::wait_until("readyz names page A", WAIT, || async {
        let (status, body) = readyz(&bench).await;
        status == 503 && body.contains(PAGE_A) && body.contains("no longer valid")
    })
    .await;
    let (_, body) = readyz(&bench).await;
    assert!(body.contains("fb-openchannel setup"), "{body}");
    assert!(
        !body.contains(&format!("{PAGE_B}:")),
        "page B still works: {body}"
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_access_ending_soon_and_a_withdrawn_permission_are_named_before_they_fail() {
    let bench = Bench::start().await;
    let graph = &bench.peers.graph;
    graph.set_app_secret(APP_SECRET);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ends = now + 3 * 86_400;
    graph.set_token_facts(TOKEN_A, json!({"data_access_expires_at": ends}));
    graph.set_token_facts(
        TOKEN_B,
        json!({"scopes": ["pages_messaging", "pages_manage_metadata", "pages_manage_engagement"]}),
    );
    let shared = &bench.daemon().shared;
    token_health::check_all(shared, "test").await;
    let (status, body) = readyz(&bench).await;
    assert_eq!(
        status, 200,
        "warnings do not make the daemon unready: {body}"
    );
    assert!(
        body.contains("data access through its token ends in 3.0 days"),
        "{body}"
    );
    assert!(body.contains("lacks pages_read_engagement"), "{body}");
    // doctor, asked by an admin, says the same from the same Graph answers.
    let config = bench.peers.dir.path().join("doctor.toml");
    std::fs::write(&config, bench.peers.config_toml("")).unwrap();
    let (_, stdout, stderr) = tokio::task::spawn_blocking(move || {
        cli(&["doctor", "--json", "--config", config.to_str().unwrap()])
    })
    .await
    .unwrap();
    let checks: Vec<serde_json::Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let health = |page: &str| {
        checks
            .iter()
            .find(|c| c["name"] == "token health" && c["scope"] == format!("page {page}"))
            .unwrap_or_else(|| panic!("no token health check for {page}: {stdout}"))
    };
    let a = health(PAGE_A);
    assert_eq!(a["ok"], true, "a warning is not a failure: {a}");
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.starts_with("warning: "), "{detail}");
    assert!(detail.contains("ends in 3.0 days"), "{detail}");
    let b = health(PAGE_B)["detail"].as_str().unwrap().to_owned();
    assert!(b.contains("lacks pages_read_engagement"), "{b}");
    let metrics = bench.metrics().await;
    assert!(
        metrics.contains(&format!(
            "fb_openchannel_page_token_data_access_expiry_timestamp_seconds{{page_id=\"{PAGE_A}\"}} {ends}"
        )),
        "{metrics}"
    );
    // pages_messaging withdrawn: nothing can be answered — a problem, named.
    graph.set_token_facts(TOKEN_B, json!({"scopes": ["pages_manage_metadata"]}));
    token_health::check_all(shared, "test").await;
    let (status, body) = readyz(&bench).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("lacks pages_messaging"), "{body}");
    // Granted again: the problem ends.
    graph.set_token_facts(TOKEN_B, json!({}));
    token_health::check_all(shared, "test").await;
    let (status, body) = readyz(&bench).await;
    assert_eq!(status, 200, "{body}");
    bench.stop().await;
}
