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
    "business_management",
    "ads_read",
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

    // App Review's two callbacks, to paste into the App Dashboard.
    assert!(out.contains("Deauthorize callback URL = https://"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("Data Deletion Request URL = https://")
                && l.ends_with("/facebook/data-deletion")),
        "{out}"
    );
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

/// The config for the login link: Facebook sends the browser back to the daemon's
/// public listener (`public.url`), and the dialog is the simulated one.
fn write_login_config(peers: &Peers) -> (String, u16) {
    let public = free_port();
    let text = peers
        .config_toml("")
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{public}\"\nurl = \"https://localhost:{public}\""),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{}\"", free_port()),
            1,
        )
        .replace(
            "[facebook]",
            &format!(
                "[facebook]\napp_id = \"{SIM_APP_ID}\"\ndialog_url = \"{}\"",
                peers.graph.url()
            ),
        );
    std::fs::write(peers.dir.path().join("config.toml"), &text).unwrap();
    (text, public)
}

/// `setup` without a token, its stdout read line by line as it comes.
struct LoginSetup {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LoginSetup {
    fn start(peers: &Peers, args: &[&str]) -> LoginSetup {
        use std::io::BufRead;
        let mut child = std::process::Command::new(crate::harness::binary())
            .arg("setup")
            .arg("--config")
            .arg(peers.dir.path().join("config.toml"))
            .args(args)
            .env_remove("FB_OPENCHANNEL_USER_TOKEN")
            .env_remove("RUST_LOG")
            // The public listener's certificate is the test CA's: trusted as the
            // system's roots would trust a real one.
            .env("SSL_CERT_FILE", peers.dir.path().join("ca.pem"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LoginSetup {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The login link it printed.
    fn link(&mut self) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no login link; printed so far: {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(link) = line
                .trim()
                .strip_prefix("http")
                .filter(|l| l.contains("/dialog/oauth"))
            {
                return format!("http{link}");
            }
        }
    }

    /// Exit code, stdout, stderr.
    fn finish(mut self) -> (i32, String, String) {
        use std::io::Read;
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(1)) {
            self.seen.push(line);
        }
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code().unwrap_or(-1), self.seen.join("\n"), err)
    }
}

/// The admin's browser: follows nothing by itself, trusts the test CA.
fn browser(peers: &Peers) -> reqwest::Client {
    fb_openchannel::http_client::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(
            reqwest::Certificate::from_pem(peers.certs.ca_pem.as_bytes()).unwrap(),
        )
        .build()
        .unwrap()
}

/// A Facebook user who manages [`NEW_PAGE`] and whom the dialog logs in, the daemon
/// running on the login config: the peers, that config's text, the public port, the
/// daemon and the browser.
async fn login_bench() -> (Peers, String, u16, Process, reqwest::Client) {
    let peers = Peers::start().await;
    peers.graph.set_app_secret(APP_SECRET);
    peers.graph.add_user(USER_TOKEN, &[NEW_PAGE], ALL_SCOPES);
    peers.graph.log_in_as(USER_TOKEN);
    let (before, public) = write_login_config(&peers);
    let daemon = Process::start(&peers.dir.path().join("config.toml"));
    let browser = browser(&peers);
    (peers, before, public, daemon, browser)
}

/// Logs in at the dialog: where Facebook sends the browser back.
async fn dialog(browser: &reqwest::Client, link: &str) -> String {
    let answer = browser.get(link).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 302);
    answer.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_by_the_login_link_takes_the_browser_back_once_and_only_with_its_state() {
    let (peers, before, public, mut daemon, browser) = login_bench().await;
    let path = peers.dir.path().join("config.toml");
    let callback = format!("https://localhost:{public}/oauth/callback");

    // Nobody waits: the path is like any other.
    let idle = browser
        .get(format!("{callback}?code=x&state=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(idle.status().as_u16(), 404);

    let receive = peers.motion.receive_url(3);
    let mut setup = LoginSetup::start(
        &peers,
        &["--page", NEW_PAGE, "--receive-url", &receive, "--yes"],
    );
    let link = setup.link();
    assert!(link.contains(&format!("client_id={SIM_APP_ID}")), "{link}");
    assert!(link.contains("pages_messaging"), "{link}");
    let back = dialog(&browser, &link).await;
    assert!(back.starts_with(&callback), "{back}");

    // A forged return (another state) is refused and changes nothing.
    let (_, query) = back.split_once('?').unwrap();
    let forged = format!("{callback}?code=AQD-forged&state=0000");
    let refused = browser.get(&forged).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    assert!(query.contains("state="));

    let came_back = browser.get(&back).send().await.unwrap();
    assert_eq!(came_back.status().as_u16(), 200);
    assert!(
        came_back
            .text()
            .await
            .unwrap()
            .contains("Go back to the terminal")
    );
    // Taken once.
    let again = browser.get(&back).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 404);

    let (code, out, err) = setup.finish();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("✓ page {NEW_PAGE}")), "{out}");
    let page_token = SimGraph::page_token_for_user(true, NEW_PAGE);
    assert!(!out.contains(&page_token) && !out.contains(USER_TOKEN));
    let after = std::fs::read_to_string(&path).unwrap();
    assert_ne!(after, before);
    assert!(
        after.contains(&format!("access_token = \"{page_token}\"")),
        "{after}"
    );
    assert!(!peers.dir.path().join("setup/waiting.json").exists());
    assert!(!peers.dir.path().join("setup/callback.json").exists());
    daemon.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_by_the_login_link_says_so_when_the_code_expired_and_writes_nothing() {
    let (peers, before, _, mut daemon, browser) = login_bench().await;
    let path = peers.dir.path().join("config.toml");
    let receive = peers.motion.receive_url(3);
    let mut setup = LoginSetup::start(
        &peers,
        &["--page", NEW_PAGE, "--receive-url", &receive, "--yes"],
    );
    let back = dialog(&browser, &setup.link()).await;
    peers.graph.expire_login_codes();
    assert_eq!(
        browser.get(&back).send().await.unwrap().status().as_u16(),
        200
    );
    let (code, out, err) = setup.finish();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("Nothing was written"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    daemon.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_connects_the_pages_instagram_account_with_its_own_reply_url() {
    let peers = Peers::start().await;
    peers.graph.set_app_secret(APP_SECRET);
    let instagram = "17841455500011122";
    peers.graph.link_instagram(NEW_PAGE, instagram);
    let mut scopes = ALL_SCOPES.to_vec();
    scopes.extend([
        "instagram_basic",
        "instagram_manage_messages",
        "instagram_manage_comments",
    ]);
    peers.graph.add_user(USER_TOKEN, &[NEW_PAGE], &scopes);
    write_config(&peers);
    let path = peers.dir.path().join("config.toml");
    let receive = peers.motion.receive_url(3);
    let receive_ig = peers.motion.receive_url(9);

    // Without the flag the account is named, not connected.
    let (code, out, err) = setup(
        &path,
        USER_TOKEN,
        &["--page", NEW_PAGE, "--receive-url", &receive, "--yes"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("@sim.{instagram} ({instagram})")),
        "{out}"
    );
    assert!(
        !out.contains("note: the token lacks"),
        "every permission granted: {out}"
    );

    let (code, out, err) = setup(
        &path,
        USER_TOKEN,
        &[
            "--page",
            NEW_PAGE,
            "--instagram-receive-url",
            &receive_ig,
            "--yes",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let urls: Vec<&str> = out.lines().filter(|l| l.contains("Reply URL = ")).collect();
    assert_eq!(urls.len(), 1, "only the new account's: {out}");
    assert!(
        urls[0].contains(&format!("/reply/{instagram}?token=")),
        "{out}"
    );
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains("[[instagram]]"), "{config}");
    assert!(
        config.contains(&format!("id = \"{instagram}\"\npage = \"{NEW_PAGE}\"")),
        "{config}"
    );
    assert!(
        config.contains(&format!("receive_url = \"{receive_ig}\"")),
        "{config}"
    );
    let (code, _, err) = crate::harness::cli(&[
        "check-config",
        "--quiet",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
}

/// Root's `setup` meets the daemon in a directory the daemon's user owns: a hand-off
/// directory planted as a symlink to a root directory is refused, and that directory
/// keeps its owner and mode (before, root's recursive create and path-based chown and
/// chmod gave it to the daemon's user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_as_root_never_follows_a_planted_hand_off_directory() {
    use crate::privileged::{RootsFiles, fingerprint, give, give_state_dir, nobody};
    let Some(nobody) = nobody("setup_as_root_never_follows_a_planted_hand_off_directory") else {
        return;
    };
    let (peers, before, _, mut daemon, _) = login_bench().await;
    give_state_dir(&peers, nobody);
    let roots = RootsFiles::new();
    let dir_before = fingerprint(&roots.dir);
    let planted = peers.dir.path().join("setup");
    std::os::unix::fs::symlink(&roots.dir, &planted).unwrap();
    give(&planted, nobody);

    let receive = peers.motion.receive_url(3);
    let setup = LoginSetup::start(
        &peers,
        &["--page", NEW_PAGE, "--receive-url", &receive, "--yes"],
    );
    let (code, out, err) = setup.finish();
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        fingerprint(&roots.dir),
        dir_before,
        "root's directory was changed"
    );
    assert!(std::fs::read_dir(&roots.dir).unwrap().next().is_none());
    let path = peers.dir.path().join("config.toml");
    assert_eq!(std::fs::read_to_string(path).unwrap(), before);
    daemon.kill();
}

/// Root's `setup` writes its hand-off as a new file given to the daemon's user by
/// descriptor, so a symlink planted under its name is replaced, not written through or
/// chowned; and what it reads back must be a small regular file: a symlink to
/// `/dev/zero` or a FIFO planted as the daemon's answer ends the wait at once with the
/// reason (before, root read `/dev/zero` past 1 GiB, and a FIFO blocked it for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_as_root_replaces_planted_files_and_reads_no_device_or_fifo() {
    use crate::privileged::{RootsFiles, fingerprint, give, give_state_dir, nobody};
    use std::os::unix::fs::MetadataExt;
    let Some(nobody) = nobody("setup_as_root_replaces_planted_files_and_reads_no_device_or_fifo")
    else {
        return;
    };
    let (peers, before, _, mut daemon, _) = login_bench().await;
    give_state_dir(&peers, nobody);
    let roots = RootsFiles::new();
    let file_before = fingerprint(&roots.file);
    let handoff = peers.dir.path().join("setup");
    let receive = peers.motion.receive_url(3);

    for planted in ["/dev/zero", "fifo"] {
        std::fs::create_dir_all(&handoff).unwrap();
        give(&handoff, nobody);
        let waiting = handoff.join("waiting.json");
        let _ = std::fs::remove_file(&waiting);
        std::os::unix::fs::symlink(&roots.file, &waiting).unwrap();
        give(&waiting, nobody);

        let mut setup = LoginSetup::start(
            &peers,
            &["--page", NEW_PAGE, "--receive-url", &receive, "--yes"],
        );
        setup.link();
        assert_eq!(
            fingerprint(&roots.file),
            file_before,
            "root's file was changed"
        );
        let meta = std::fs::symlink_metadata(&waiting).unwrap();
        assert!(meta.is_file(), "waiting.json is a file of its own");
        assert_eq!((meta.uid(), meta.mode() & 0o777), (nobody.0, 0o600));

        // The daemon's user hands back something that is not a small file.
        let callback = handoff.join("callback.json");
        if planted == "fifo" {
            let c = std::ffi::CString::new(callback.to_str().unwrap()).unwrap();
            // SAFETY: a valid C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        } else {
            std::os::unix::fs::symlink(planted, &callback).unwrap();
        }
        give(&callback, nobody);
        let started = std::time::Instant::now();
        let (code, out, err) = setup.finish();
        assert!(started.elapsed() < WAIT, "setup kept waiting: {out}\n{err}");
        assert_ne!(code, 0, "{out}\n{err}");
        assert!(err.contains("not what the daemon writes"), "{err}");
        assert_eq!(fingerprint(&roots.file), file_before);
        std::fs::remove_dir_all(&handoff).unwrap();
    }
    let path = peers.dir.path().join("config.toml");
    assert_eq!(std::fs::read_to_string(path).unwrap(), before);
    daemon.kill();
}

/// Two admins run `setup` at the same moment for different Pages: each read the config,
/// asked Facebook, and wrote its own version — both printed ✓ and a Reply URL, and one
/// Page was missing from the file. Now the write happens under a lock, from the file as
/// it is then: every Page is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setups_at_the_same_moment_each_keep_their_page() {
    const PAGES: [&str; 4] = [
        "555000111301",
        "555000111302",
        "555000111303",
        "555000111304",
    ];
    let peers = Peers::start().await;
    peers.graph.set_app_secret(APP_SECRET);
    peers.graph.add_user(USER_TOKEN, &PAGES, ALL_SCOPES);
    write_config(&peers);
    let path = peers.dir.path().join("config.toml");
    let receive = peers.motion.receive_url(3);
    let runs: Vec<_> = PAGES
        .iter()
        .map(|page| {
            let (path, receive) = (path.clone(), receive.clone());
            std::thread::spawn(move || {
                setup(
                    &path,
                    USER_TOKEN,
                    &["--page", page, "--receive-url", &receive, "--yes"],
                )
            })
        })
        .collect();
    for run in runs {
        let (code, out, err) = run.join().unwrap();
        assert_eq!(code, 0, "{out}{err}");
    }
    let after = std::fs::read_to_string(&path).unwrap();
    for page in PAGES {
        assert!(
            after.contains(&format!("id = \"{page}\"")),
            "{page} lost:\n{after}"
        );
    }
    assert_eq!(
        after.matches("[[page]]").count(),
        2 + PAGES.len(),
        "{after}"
    );
    let config = peers.config(&after);
    assert_eq!(config.pages.len(), 2 + PAGES.len());
}

/// Since Graph v17, `/me/accounts` leaves out the Pages of a business portfolio unless
/// the user granted `business_management`: setup says exactly that instead of "manages
/// no Page", and works once it is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_names_business_management_when_business_pages_are_hidden() {
    let peers = Peers::start().await;
    peers.graph.set_app_secret(APP_SECRET);
    peers.graph.put_in_business_portfolio(NEW_PAGE);
    let without: Vec<&str> = ALL_SCOPES
        .iter()
        .copied()
        .filter(|s| *s != "business_management")
        .collect();
    peers.graph.add_user(USER_TOKEN, &[NEW_PAGE], &without);
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
    let (code, out, err) = setup(&path, USER_TOKEN, &args);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("business_management"), "{err}");
    assert!(err.contains("business portfolio"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

    let granted = "EAAB-user-with-business-management";
    peers.graph.add_user(granted, &[NEW_PAGE], ALL_SCOPES);
    let (code, out, err) = setup(&path, granted, &args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("✓ page {NEW_PAGE}")), "{out}");
}

/// Business apps log in by a Facebook Login for Business configuration: with
/// `facebook.login_config_id` the link carries `config_id` and no `scope`; without it,
/// the permissions it asks include business_management and ads_read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_link_carries_the_business_login_configuration() {
    let (peers, _, _, mut daemon, _) = login_bench().await;
    let receive = peers.motion.receive_url(3);
    let args = [
        "--page",
        NEW_PAGE,
        "--receive-url",
        receive.as_str(),
        "--yes",
    ];
    let mut plain = LoginSetup::start(&peers, &args);
    let link = plain.link();
    for permission in ["pages_messaging", "business_management", "ads_read"] {
        assert!(link.contains(permission), "{permission} not asked: {link}");
    }
    assert!(!link.contains("config_id"), "{link}");
    let _ = plain.child.kill();

    let path = peers.dir.path().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[facebook]\n",
        "[facebook]\nlogin_config_id = \"1234567890123456\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let mut business = LoginSetup::start(&peers, &args);
    let link = business.link();
    assert!(link.contains("config_id=1234567890123456"), "{link}");
    assert!(!link.contains("scope="), "{link}");
    let _ = business.child.kill();
    daemon.kill();
}

/// The last step once copied by hand: setup registers the app's webhook with Meta
/// (`POST /{app-id}/subscriptions`), which first checks the callback with the
/// verification handshake the running daemon answers; `--no-webhook` leaves it to the
/// App Dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_registers_the_webhook_meta_verified() {
    let (peers, _, public, mut daemon, _) = login_bench().await;
    peers.graph.trust(&peers.certs.ca_pem);
    let path = peers.dir.path().join("config.toml");
    let receive = peers.motion.receive_url(3);
    let args = [
        "--page",
        NEW_PAGE,
        "--receive-url",
        receive.as_str(),
        "--yes",
    ];
    let mut skipped = args.to_vec();
    skipped.push("--no-webhook");
    let (code, out, err) = setup(&path, USER_TOKEN, &skipped);
    assert_eq!(code, 0, "{out}{err}");
    assert!(peers.graph.app_webhook("page").is_none(), "{out}");

    let (code, out, err) = setup(&path, USER_TOKEN, &args);
    assert_eq!(code, 0, "{out}{err}");
    let callback = format!("https://localhost:{public}/webhook");
    assert!(
        out.contains(&format!("✓ webhook: Meta verified {callback}")),
        "{out}"
    );
    let (registered, fields) = peers.graph.app_webhook("page").unwrap();
    assert_eq!(registered, callback);
    assert!(fields.contains("messaging_policy_enforcement"), "{fields}");
    assert!(
        !out.contains(crate::harness::VERIFY_TOKEN),
        "the verify token is never printed"
    );
    daemon.kill();
}

/// On a shared queue, `setup` wrote this node's file only: it says to copy it to the
/// other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_on_a_shared_queue_says_to_copy_the_config_to_every_node() {
    let peers = Peers::start().await;
    peers.graph.set_app_secret(APP_SECRET);
    peers
        .graph
        .add_user(USER_TOKEN, &["555000111401"], ALL_SCOPES);
    let (text, _) = write_config(&peers);
    let path = peers.dir.path().join("config.toml");
    let shared = text.replace(
        "[storage]\n",
        "[storage]\nbackend = \"postgres\"\nurl = \"postgres://fb_openchannel@127.0.0.1:9/fb_openchannel\"\n",
    );
    assert_ne!(shared, text);
    std::fs::write(&path, shared).unwrap();
    let receive = peers.motion.receive_url(4);
    let (code, out, err) = setup(
        &path,
        USER_TOKEN,
        &["--page", "555000111401", "--receive-url", &receive, "--yes"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "a shared queue: copy {} to every other node and reload it there",
            path.display()
        )),
        "{out}"
    );
}
