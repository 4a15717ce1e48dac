//! `fb-openchannel setup` against the simulated Facebook (Facebook Login's token
//! exchange, `debug_token`, `/me/accounts`): a Page connected from a user token, the
//! config written around the admin's comments and pages, the app subscribed, and the
//! printed Reply URL answering a customer through the running daemon; a second run
//! replacing only the token; and each refusal leaving the config untouched.

use std::path::Path;

use fb_openchannel::sim::facebook::{SIM_APP_ID, SimGraph, WebhookSender, messenger_text};
use fb_openchannel::sim::motion::reply_body;

use crate::harness::{APP_SECRET, PSID, Peers, Process, WAIT, free_port};

/// The Page the user connects (not in the bench config).
const NEW_PAGE: &str = "555000111222";
/// A short-lived user token, as the Graph API Explorer gives.
const USER_TOKEN: &str = "EAAB-user-explorer-token-7731";

const ALL_SCOPES: &[&str] = &[
    "pages_show_list",
    "pages_manage_metadata",
    "pages_messaging",
    "pages_read_engagement",
    "pages_manage_engagement",
    "pages_read_user_content",
];

/// The bench config on fixed ports with our app's id and an admin's comment, mode 0640.
fn write_config(peers: &Peers) -> (String, u16) {
    use std::os::unix::fs::PermissionsExt;
    let local = free_port();
    let text = peers
        .config_toml("")
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{}\"", free_port()),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{local}\""),
            1,
        )
        .replace(
            "[facebook]",
            &format!(
                "# Our app, set up by Ada on 2026-11-30.\n[facebook]\napp_id = \"{SIM_APP_ID}\""
            ),
        );
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    (text, local)
}

/// Runs `setup` with the user token in the environment (as the README says).
fn setup(config: &Path, token: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["setup", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let env: &[(&str, &str)] = if token.is_empty() {
        &[]
    } else {
        &[("FB_OPENCHANNEL_USER_TOKEN", token)]
    };
    crate::harness::cli_with_env(&all, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_connects_a_page_from_a_user_token_and_its_reply_url_works() {
    let peers = Peers::start().await;
    peers.graph.set_app_secret(APP_SECRET);
    peers.graph.add_user(USER_TOKEN, &[NEW_PAGE], ALL_SCOPES);
    peers.graph.unsubscribe(NEW_PAGE);
    let (before, _) = write_config(&peers);
    let path = peers.dir.path().join("config.toml");
    let mut daemon = Process::start(&path);
    let receive = peers.motion.receive_url(3);

    let (code, out, err) = setup(
        &path,
        USER_TOKEN,
        &["--page", NEW_PAGE, "--receive-url", &receive, "--yes"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let page_token = SimGraph::page_token_for_user(true, NEW_PAGE);
    for secret in [USER_TOKEN, page_token.as_str(), APP_SECRET] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed:\n{out}{err}"
        );
    }
    assert!(out.contains(&format!("✓ page {NEW_PAGE}")), "{out}");
    assert!(out.contains("does not expire"), "{out}");

    // The config: the admin's comment and pages kept, the new page with the Page token
    // from the long-lived user token, a backup of the old file, the mode kept.
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(
        after.contains("# Our app, set up by Ada on 2026-11-30."),
        "{after}"
    );
    assert_eq!(after.matches("[[page]]").count(), 3, "{after}");
    assert!(
        after.contains(&format!("access_token = \"{page_token}\"")),
        "{after}"
    );
    assert!(
        after.contains(&format!("receive_url = \"{receive}\"")),
        "{after}"
    );
    let backup = peers.dir.path().join("config.toml.bak");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), before);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
    let (code, _, err) = crate::harness::cli(&[
        "check-config",
        "--quiet",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let fields = peers.graph.subscribed(NEW_PAGE);
    assert!(fields.iter().any(|f| f == "messages"), "{fields:?}");

    // The printed Reply URL works once the daemon has the page (a reload).
    let reply_url = out
        .lines()
        .find_map(|l| l.split("Reply URL = ").nth(1))
        .unwrap_or_else(|| panic!("no Reply URL in:\n{out}"))
        .trim()
        .to_owned();
    assert!(
        reply_url.contains(&format!("/reply/{NEW_PAGE}?token=")),
        "{reply_url}"
    );
    daemon.signal("HUP");
    daemon.wait_for_log("config reloaded").await;
    let sender = WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", daemon.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (status, _) = sender
        .send(messenger_text(NEW_PAGE, PSID, "m.setup.1", now, "hello").as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    let (status, answer) = peers
        .motion
        .agent_reply(&reply_url, &reply_body(9001, PSID, "Welcome!", None))
        .await
        .unwrap();
    assert!(status == 200, "{status} {answer}");
    let sent = peers.graph.sent();
    assert!(
        sent.iter()
            .any(|m| m.page_id == NEW_PAGE && m.text.as_deref() == Some("Welcome!")),
        "{sent:?}"
    );
    assert!(
        peers
            .graph
            .requests()
            .iter()
            .any(|r| r.authorization.as_deref() == Some(&format!("Bearer {page_token}"))),
        "the Page token from setup was used"
    );

    // Again for the same Page (a new token from the Explorer): only its token changes.
    let second = "EAAB-user-explorer-token-8842";
    peers.graph.add_user(second, &[NEW_PAGE], ALL_SCOPES);
    let (code, out, err) = setup(&path, second, &["--page", NEW_PAGE, "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("token replaced"), "{out}");
    assert!(!out.contains("Reply URL"), "no new reply token: {out}");
    let again = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        again, after,
        "the same Page token again: nothing else changed"
    );
    daemon.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_clearly_and_writes_nothing() {
    let peers = Peers::start().await;
    peers.graph.set_app_secret(APP_SECRET);
    let (before, _) = write_config(&peers);
    let path = peers.dir.path().join("config.toml");
    let receive = peers.motion.receive_url(3);
    let args = [
        "--page",
        NEW_PAGE,
        "--receive-url",
        receive.as_str(),
        "--yes",
    ];
    let refused = |token: &str, args: &[&str], why: &str| {
        let (code, out, err) = setup(&path, token, args);
        assert_eq!(code, 1, "{why}: {out}{err}");
        assert!(err.contains("Nothing was written"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before, "{why}");
        assert!(!peers.dir.path().join("config.toml.bak").exists(), "{why}");
        assert!(
            !err.contains(token) || token.len() < 8,
            "{why}: token printed: {err}"
        );
        err
    };

    // A token that is not (or no longer) valid.
    let err = refused("EAAB-unknown-token-0000", &args, "invalid token");
    assert!(err.contains("not valid"), "{err}");

    // A missing permission: named, with where to get it.
    peers.graph.add_user(
        "EAAB-no-messaging-1111",
        &[NEW_PAGE],
        &["pages_show_list", "pages_manage_metadata"],
    );
    let err = refused("EAAB-no-messaging-1111", &args, "missing permission");
    assert!(err.contains("pages_messaging"), "{err}");
    assert!(err.contains("Advanced Access"), "{err}");

    // A user who manages no Page.
    peers.graph.add_user("EAAB-no-pages-2222", &[], ALL_SCOPES);
    let err = refused("EAAB-no-pages-2222", &args, "no page");
    assert!(err.contains("manages no Page"), "{err}");

    // A Page this user does not manage: the ones they do are listed.
    peers
        .graph
        .add_user("EAAB-other-page-3333", &["777000888999"], ALL_SCOPES);
    let err = refused("EAAB-other-page-3333", &args, "another page");
    assert!(err.contains("777000888999"), "{err}");

    // A wrong app secret in the config: said before anything else is asked.
    peers.graph.add_user(USER_TOKEN, &[NEW_PAGE], ALL_SCOPES);
    peers.graph.set_app_secret("the-real-secret-is-another");
    let err = refused(USER_TOKEN, &args, "wrong app secret");
    assert!(err.contains("facebook.app_secret"), "{err}");
    peers.graph.set_app_secret(APP_SECRET);

    // No token at all: how to get one.
    let err = refused("", &args, "no token");
    assert!(err.contains("Graph API Explorer"), "{err}");

    // Several answers missing with --yes: the Receive URL.
    let err = refused(USER_TOKEN, &["--page", NEW_PAGE, "--yes"], "no receive url");
    assert!(err.contains("--receive-url"), "{err}");
}
