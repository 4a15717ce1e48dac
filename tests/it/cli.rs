//! The command line: `check-config` and the shipped example config.

use std::process::Command;

use crate::harness::*;

fn check_config(path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_config_prints_the_effective_config_with_secrets_masked() {
    let peers = Peers::start().await;
    let path = peers.dir.path().join("config.toml");
    std::fs::write(&path, peers.config_toml("")).unwrap();
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(
        stdout.contains("graph_version = \"v24.0\""),
        "defaults are shown: {stdout}"
    );
    assert!(stdout.contains("map_key = \"facebook\""), "{stdout}");
    assert!(
        stdout.contains("token=********"),
        "Receive URL query masked: {stdout}"
    );
    for secret in SECRETS {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked:\n{stdout}{stderr}"
        );
    }
}

#[tokio::test]
async fn check_config_names_file_line_and_key_and_exits_1() {
    let peers = Peers::start().await;
    let path = peers.dir.path().join("broken.toml");
    let text = peers
        .config_toml("")
        .replace("[storage]", "[storage]\npaht = \"/tmp/x\"");
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("paht")).unwrap() + 1;
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("{}:{line}: paht:", path.display())),
        "{stderr}"
    );

    let text = peers
        .config_toml("")
        .replace(&format!("id = \"{PAGE_B}\""), &format!("id = \"{PAGE_A}\""));
    std::fs::write(&path, &text).unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("page.id: page 12345654332 is configured twice"),
        "{stderr}"
    );

    let (code, _, stderr) = check_config(&peers.dir.path().join("missing.toml"));
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
}

/// `keep = "300000000years"` once passed check-config and made the first retention pass
/// delete every item; a secret given as a number or in an invalid URL was printed.
#[tokio::test]
async fn check_config_refuses_absurd_durations_and_never_prints_a_secret() {
    let peers = Peers::start().await;
    let path = peers.dir.path().join("config.toml");
    let text = peers
        .config_toml("")
        .replace("[storage]\n", "[storage]\nkeep = \"300000000years\"\n")
        .replace("retry_max = \"200ms\"", "retry_max = \"30000d\"")
        .replace(
            &format!("receive_url = \"{}\"", peers.motion.receive_url(2)),
            &format!("receive_url = \"motion.local/notify?apikey={API_KEY}\""),
        );
    std::fs::write(&path, &text).unwrap();
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 1, "{stdout}");
    for key in [
        "storage.keep: must be between 7d and 3650d (is 109575000000d)",
        "delivery.retry_max: must be between",
        "page.receive_url: is not a URL",
    ] {
        assert!(stderr.contains(key), "{key} not in:\n{stderr}");
    }
    for secret in SECRETS {
        assert!(!stderr.contains(secret), "{secret} leaked:\n{stderr}");
    }

    // A type error stops parsing at once: a separate file.
    let text = peers.config_toml("").replace(
        &format!("app_secret = \"{APP_SECRET}\""),
        "app_secret = 918273645546",
    );
    std::fs::write(&path, &text).unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "facebook.app_secret: invalid type: integer (value not shown), expected a string"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("918273645546"), "{stderr}");
}

#[test]
fn the_shipped_example_config_fails_only_on_its_placeholders_and_certificate() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.toml");
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 1, "{stdout}");
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(path.to_str().unwrap()) && !l.contains("problem(s)"))
        .collect();
    let mut keys: Vec<&str> = problems
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "facebook.app_secret",
            "facebook.verify_token",
            "motion.api_key",
            "page.access_token",
            "page.reply_token",
            "public.tls_cert",
            "public.tls_key"
        ],
        "{stderr}"
    );
}

#[test]
fn the_example_config_with_real_values_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let certs = fb_openchannel::sim::tls::generate(dir.path()).unwrap();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.toml"),
    )
    .unwrap();
    let text = example
        .replace("CHANGE-ME-", "real-")
        .replace(
            "/etc/fb-openchannel/tls/fullchain.pem",
            certs.cert_path.to_str().unwrap(),
        )
        .replace(
            "/etc/fb-openchannel/tls/privkey.pem",
            certs.key_path.to_str().unwrap(),
        );
    let config =
        fb_openchannel::config::Config::from_toml(std::path::Path::new("example"), &text).unwrap();
    assert_eq!(config.public.listen.to_string(), "0.0.0.0:443");
    assert_eq!(config.pages.len(), 1);
}

#[test]
fn demo_runs_the_whole_loop_and_exits_0() {
    let out = Command::new(binary())
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{transcript}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "1. Ada writes to the Page on Messenger",
        "fb-openchannel → Motion     notify from=7700112233 firstName=Ada lastName=Lovelace",
        "uploaded parcel-label.jpg (48 KB, identical bytes)",
        "Reply URL answered 200",
        "Send API RESPONSE to 7700112233",
        "Send API file tracking.pdf (application/pdf, 12 KB, identical bytes)",
        "recognised both as its own sends",
        "both webhooks answered 200",
        "in order, once each",
        "7. Grace answers the Page's Instagram story",
        "account 2 (Instagram): notify from=1254009876543210 firstName=Grace lastName=Hopper body=\"[replied to your story]",
        "fb-openchannel → Instagram  Send API of page 1234567890 to 1254009876543210",
        "✓ All 8 steps happened",
    ] {
        assert!(
            transcript.contains(line),
            "missing {line:?} in:\n{transcript}"
        );
    }
    assert!(
        !transcript.contains("demo-page-token")
            && !transcript.contains("demo-reply-token")
            && !transcript.contains("demo-instagram-reply-token"),
        "{transcript}"
    );
}
