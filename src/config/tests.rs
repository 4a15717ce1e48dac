use std::path::Path;
use std::time::Duration;

use super::errors::ConfigError;
use super::*;

fn minimal(extra: &str) -> String {
    format!(
        r#"
[public]
tls = false
[facebook]
app_secret = "s3cret"
verify_token = "vt"
[motion]
api_key = "key"
{extra}
[[page]]
id = "123"
access_token = "tok"
receive_url = "http://127.0.0.1:9/api/openchannel/accounts/1/notify?token=abc"
reply_token = "rt-0123456789abcdef"
"#
    )
}

/// The minimal config with `key = "value"` in `[table]`.
fn with_key(table: &str, key: &str, value: &str) -> String {
    let text = minimal("");
    let line = format!("{key} = \"{value}\"\n");
    match text.find(&format!("[{table}]\n")) {
        Some(at) => {
            let at = at + table.len() + 3;
            format!("{}{line}{}", &text[..at], &text[at..])
        }
        None => text.replacen("[[page]]", &format!("[{table}]\n{line}[[page]]"), 1),
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    Config::from_toml(Path::new("c.toml"), text).unwrap_err().0
}

/// A reload learns what changed key by key, and which keys wait for a restart.
#[test]
fn a_reload_sees_each_changed_key_and_what_needs_a_restart() {
    let load = |text: &str| Config::from_toml(Path::new("c.toml"), text).unwrap();
    let before = load(&minimal(""));
    assert_eq!(before.diff(&load(&minimal(""))), ConfigDiff::default());
    let after = load(
        &(minimal("[delivery]\nconcurrency = 4\nretry_max = \"2m\"")
            .replace("[public]\n", "[public]\nlisten = \"0.0.0.0:8443\"\n")
            .replace(
                "reply_token = \"rt-0123456789abcdef\"",
                "reply_token = \"rt-0123456789abcdef\"\nhuman_agent_tag = true",
            )
            + "[[page]]\nid = \"456\"\naccess_token = \"t2\"\nreceive_url = \"http://127.0.0.1:9/n\"\nreply_token = \"rt-fedcba9876543210\"\n"),
    );
    let diff = before.diff(&after);
    let restart: Vec<&str> = diff.at_restart.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(restart, ["delivery.concurrency", "public.listen"]);
    assert_eq!(diff.now, ["delivery.retry_max", "page.123.human_agent_tag"]);
    assert_eq!(diff.accounts_added, ["456"]);
    assert!(diff.accounts_removed.is_empty());
    let (_, was, now) = &diff.at_restart[1];
    assert!(
        was.contains("8443") || now.contains("0.0.0.0:8443"),
        "{was} → {now}"
    );
    // A token rotation is not printed: secrets serialise masked.
    let rotated = load(&minimal("").replace("access_token = \"tok\"", "access_token = \"tok2\""));
    assert!(before.diff(&rotated).now.is_empty());
}

/// An Instagram account, after the minimal config's page.
fn with_instagram(table: &str) -> String {
    format!("{}[[instagram]]\n{table}", minimal(""))
}

const IG: &str = "id = \"17841400000000000\"\nreceive_url = \"http://127.0.0.1:9/api/openchannel/accounts/8/notify?token=igsecret\"\nreply_token = \"rt-ig-0123456789abcdef\"\n";

#[test]
fn an_instagram_account_takes_its_token_from_the_linked_page() {
    let load = |text: &str| Config::from_toml(Path::new("c.toml"), text).unwrap();
    let c = load(&with_instagram(&format!("{IG}page = \"123\"\n")));
    let account = c.instagram("17841400000000000").unwrap();
    assert!(account.comments, "comments are on by default");
    assert_eq!(account.comment_reply, CommentReply::Public);
    assert_eq!(account.map_key(&c.motion), "facebook");
    match c.instagram_login(account) {
        InstagramLogin::Facebook { page } => assert_eq!(page.id.get_ref(), "123"),
        other => panic!("{other:?}"),
    }
    // Its secrets are masked like a page's, the Receive URL's token included.
    let secrets = c.secret_values();
    for s in ["rt-ig-0123456789abcdef", "igsecret"] {
        assert!(secrets.iter().any(|v| v == s), "{s} not among the secrets");
    }
    let printed = c.to_redacted_toml();
    assert!(printed.contains("[[instagram]]"), "{printed}");
    assert!(!printed.contains("igsecret"), "{printed}");
}

#[test]
fn an_instagram_login_account_has_its_own_token_and_host() {
    let c = Config::from_toml(
        Path::new("c.toml"),
        &with_instagram(&format!("{IG}access_token = \"IGAAtoken-4242\"\n")),
    )
    .unwrap();
    let account = c.instagram("17841400000000000").unwrap();
    match c.instagram_login(account) {
        InstagramLogin::Instagram { token } => assert_eq!(token.expose(), "IGAAtoken-4242"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.facebook.instagram_graph_url.get_ref(),
        "https://graph.instagram.com"
    );
    assert!(c.secret_values().iter().any(|v| v == "IGAAtoken-4242"));
    assert!(!c.to_redacted_toml().contains("IGAAtoken-4242"));
}

#[test]
fn a_client_ca_is_checked_with_its_name_and_tls() {
    // `public` replaces the minimal config's `tls = false`, with real PEM files.
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::sim::tls::generate(dir.path()).unwrap();
    let files = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        certs.cert_path.display(),
        certs.key_path.display()
    );
    let text = |public: &str| minimal("").replace("tls = false\n", &format!("{files}\n{public}\n"));
    let keys = |public: &str| -> Vec<String> {
        match Config::from_toml(Path::new("c.toml"), &text(public)) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.key.clone()).collect(),
        }
    };
    let c = Config::from_toml(
        Path::new("c.toml"),
        &text("client_ca = \"/etc/fb-openchannel/meta-ca.pem\""),
    )
    .unwrap();
    assert_eq!(c.client_auth().unwrap().name, META_CLIENT_NAME);
    assert_eq!(keys("client_name = \"x.example\""), ["public.client_name"]);
    assert_eq!(
        keys("client_ca = \"/etc/ca.pem\"\ntls = false"),
        ["public.client_ca"]
    );
}

#[test]
fn acme_is_checked_and_excludes_certificate_files() {
    // `public` replaces the minimal config's `tls = false`.
    let text = |public: &str| minimal("").replace("tls = false\n", &format!("{public}\n"));
    let messages = |public: &str| -> Vec<String> {
        match Config::from_toml(Path::new("c.toml"), &text(public)) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}: {}", e.key, e.message))
                    .collect()
            }
        }
    };
    let acme = "acme = { domains = [\"fb.example.com\"], email = \"ops@example.com\" }";
    // Without tls_cert / tls_key files: no "cannot read" error for them.
    let c = Config::from_toml(Path::new("c.toml"), &text(acme)).unwrap();
    let a = c.public.acme.as_ref().unwrap().get_ref();
    assert_eq!(a.directory, LETS_ENCRYPT);
    assert_eq!(
        messages(&format!("{acme}\nname = \"fb.example.com\"")),
        Vec::<String>::new()
    );

    let one = |public: &str| {
        let m = messages(public);
        assert_eq!(m.len(), 1, "{public}: {m:?}");
        m[0].clone()
    };
    assert!(
        one(&format!("{acme}\ntls_cert = \"/etc/x.pem\""))
            .contains("either from ACME or from your files"),
    );
    assert!(one(&format!("{acme}\ntls = false")).contains("needs public.tls = true"));
    assert!(one("acme = { domains = [] }").contains("domains is empty"));
    assert!(one("acme = { domains = [\"*.example.com\"] }").contains("wildcard"));
    assert!(one("acme = { domains = [\"192.0.2.7\"] }").contains("IP address"));
    assert!(
        one(&format!("{acme}\nname = \"other.example.com\""))
            .contains("does not name other.example.com")
    );
    assert!(
        one("acme = { domains = [\"fb.example.com\"], email = \"ops\" }").contains("not an e-mail")
    );
    assert!(
        one("acme = { domains = [\"fb.example.com\"], directory = \"http://ca.example/dir\" }")
            .contains("https:// URL")
    );
    assert!(
        one("acme = { domains = [\"fb.example.com\"], directory_ca = \"/nonexistent/ca.pem\" }")
            .contains("cannot read /nonexistent/ca.pem")
    );
    assert!(one("acme = { domains = [\"fb.example.com\"], dommains = [] }").contains("dommains"));
    // ACME is read at start: a reload names it as needing a restart.
    let before = Config::from_toml(Path::new("c.toml"), &text(acme)).unwrap();
    let after = Config::from_toml(
        Path::new("c.toml"),
        &text("acme = { domains = [\"fb2.example.com\"] }"),
    )
    .unwrap();
    let diff = before.diff(&after);
    assert_eq!(diff.at_restart.len(), 1, "{:?}", diff.at_restart);
    assert_eq!(diff.at_restart[0].0, "public.acme");
}

#[test]
fn a_broken_instagram_table_is_named_key_by_key() {
    let keys = |text: &str| -> Vec<(String, String)> {
        errors(text)
            .into_iter()
            .map(|e| (e.key, e.message))
            .collect()
    };
    let e = keys(&with_instagram(IG));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "instagram");
    assert!(e[0].1.contains("needs `page`"), "{e:?}");
    let e = keys(&with_instagram(&format!("{IG}page = \"999\"\n")));
    assert_eq!(e[0].0, "instagram.page");
    assert!(e[0].1.contains("no [[page]] table"), "{e:?}");
    let e = keys(&with_instagram(&format!(
        "{IG}page = \"123\"\naccess_token = \"IGAAtoken\"\n"
    )));
    assert!(e[0].1.contains("both `page` and `access_token`"), "{e:?}");
    // Instagram Login: an empty token is named, never printed.
    let e = keys(&with_instagram(&format!("{IG}access_token = \"\"\n")));
    assert_eq!(e[0].0, "instagram.access_token");
    assert!(e[0].1.contains("must not be empty"), "{e:?}");
    let e = keys(&with_instagram(
        &format!("{IG}page = \"123\"\n").replace("17841400000000000", "123"),
    ));
    assert_eq!(e[0].0, "instagram.id");
    assert!(e[0].1.contains("configured twice"), "{e:?}");
    let e = keys(&with_instagram(
        &format!("{IG}page = \"123\"\n").replace("rt-ig-0123456789abcdef", "short"),
    ));
    assert_eq!(e[0].0, "instagram.reply_token");
    let e = keys(&with_instagram(&format!(
        "{IG}page = \"123\"\nwall_posts = true\n"
    )));
    assert!(
        e[0].0.contains("wall_posts"),
        "unknown keys are refused: {e:?}"
    );
}

#[test]
fn a_reload_names_instagram_accounts_added_and_changed() {
    let load = |text: &str| Config::from_toml(Path::new("c.toml"), text).unwrap();
    let before = load(&minimal(""));
    let with = load(&with_instagram(&format!("{IG}page = \"123\"\n")));
    let diff = before.diff(&with);
    assert_eq!(diff.accounts_added, ["instagram 17841400000000000"]);
    let changed = load(&with_instagram(&format!(
        "{IG}page = \"123\"\nhuman_agent_tag = true\n"
    )));
    assert_eq!(
        with.diff(&changed).now,
        ["instagram.17841400000000000.human_agent_tag"]
    );
    assert_eq!(
        with.diff(&before).accounts_removed,
        ["instagram 17841400000000000"]
    );
}

/// The shared queue's settings: each mistake named by its key, the URL (which may
/// hold a password) never shown.
#[test]
fn postgres_storage_is_checked_and_its_url_never_shown() {
    let keys = |text: &str| -> Vec<(String, String)> {
        errors(text)
            .into_iter()
            .map(|e| (e.key, e.message))
            .collect()
    };
    let e = keys(&minimal("[storage]\nbackend = \"postgres\"\n"));
    assert_eq!(e[0].0, "storage.backend", "{e:?}");
    assert!(e[0].1.contains("needs storage.url"), "{e:?}");
    let e = keys(&minimal("[storage]\nurl = \"postgres://db/fb\"\n"));
    assert_eq!(e[0].0, "storage.url", "{e:?}");
    assert!(e[0].1.contains("backend = \"postgres\""), "{e:?}");
    let e = keys(&minimal(
        "[storage]\nbackend = \"postgres\"\nurl = \"mysql://u:hunter2pw@db/fb\"\n",
    ));
    assert_eq!(e[0].0, "storage.url", "{e:?}");
    assert!(!format!("{e:?}").contains("hunter2pw"), "{e:?}");
    let e = keys(&minimal(
        "[storage]\nbackend = \"postgres\"\nurl = \"postgres://db/fb\"\nlease = \"1s\"\n",
    ));
    assert_eq!(e[0].0, "storage.lease", "{e:?}");

    let c = Config::from_toml(
        Path::new("c.toml"),
        &minimal("[storage]\nbackend = \"postgres\"\nurl = \"postgres://fb:hunter2pw@db/fb\"\n"),
    )
    .unwrap();
    assert!(c.storage.is_postgres());
    assert!(
        !c.to_redacted_toml().contains("hunter2pw"),
        "{}",
        c.to_redacted_toml()
    );
    assert!(c.secret_values().iter().any(|s| s == "hunter2pw"));
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::from_toml(Path::new("c.toml"), &minimal("")).unwrap();
    assert_eq!(c.local.listen.to_string(), "127.0.0.1:8089");
    assert_eq!(c.facebook.graph_version, "v24.0");
    assert_eq!(c.motion.map_key, "facebook");
    assert!(c.pages[0].wall_posts);
    assert_eq!(c.pages[0].comment_reply, CommentReply::Public);
    assert!(!c.pages[0].human_agent_tag);
    assert_eq!(c.public.max_body_bytes, 64 << 20);
    assert_eq!(c.storage.keep, Duration::from_secs(30 * 86400));
}

#[test]
fn keeping_delivered_items_under_a_week_is_refused() {
    let e = errors(&minimal("[storage]\nkeep = \"2d\""));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].key, "storage.keep");
    assert!(e[0].message.contains("at least 7d (is 2d)"), "{}", e[0]);
    assert_eq!(e[0].line, 10, "the line of `keep` in [storage]");
    let ok = minimal("[storage]\nkeep = \"90d\"");
    let c = Config::from_toml(Path::new("c.toml"), &ok).unwrap();
    assert_eq!(c.storage.keep, Duration::from_secs(90 * 86400));
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let e = errors(&minimal("colour = \"blue\""));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].key, "colour");
    assert_eq!(e[0].line, 9);
    assert!(
        e[0].to_string().starts_with("c.toml:9: colour:"),
        "{}",
        e[0]
    );
}

#[test]
fn an_empty_key_is_named_as_written() {
    let e = errors("\"\"=0");
    assert_eq!(e[0].key, "\"\"");
    assert!(
        e[0].to_string()
            .starts_with("c.toml:1: \"\": unknown field"),
        "{}",
        e[0]
    );
}

#[test]
fn missing_required_key_is_named() {
    let text = minimal("").replace("app_secret = \"s3cret\"\n", "");
    let e = errors(&text);
    assert_eq!(e[0].key, "app_secret", "{}", e[0]);
}

#[test]
fn bad_url_duplicate_page_and_placeholder_are_all_reported() {
    let mut text = minimal("").replace("http://127.0.0.1:9/api", "ftp://x/api");
    text.push_str(
        "[[page]]\nid = \"123\"\naccess_token = \"CHANGE-ME\"\nreceive_url = \"http://m/notify\"\nreply_token = \"r-0123456789abcdef\"\n",
    );
    let e = errors(&text);
    let keys: Vec<_> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert!(keys.contains(&("page.receive_url", 13)), "{keys:?}");
    assert!(keys.contains(&("page.id", 16)), "{keys:?}");
    assert!(keys.contains(&("page.access_token", 17)), "{keys:?}");
}

#[test]
fn unreadable_cert_file_is_an_error() {
    let text = minimal("").replace(
        "tls = false",
        "tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].key, "public.tls_cert");
    assert_eq!(e[0].line, 3);
}

#[test]
fn redacted_dump_hides_every_secret() {
    let c = Config::from_toml(Path::new("c.toml"), &minimal("")).unwrap();
    let dump = c.to_redacted_toml();
    for secret in ["s3cret", "\"vt\"", "\"key\"", "\"tok\"", "rt-0123", "abc"] {
        assert!(!dump.contains(secret), "{secret} leaked in:\n{dump}");
    }
    assert!(!format!("{c:?}").contains("s3cret"));
    assert!(dump.contains("********"));
}

/// Every duration is range-checked, with the line of its key; none can wrap into a
/// negative number of milliseconds (300000000years once made retention delete all).
#[test]
fn every_duration_out_of_range_is_refused_with_its_line() {
    let cases = [
        ("public", "request_timeout", "0s"),
        ("public", "request_timeout", "2h"),
        ("public", "tls_watch_interval", "5ms"),
        ("public", "tls_watch_interval", "40d"),
        ("local", "reply_wait", "1h"),
        ("local", "ready_max_pending_age", "0s"),
        ("local", "ready_max_pending_age", "400d"),
        ("storage", "keep", "300000000years"),
        ("storage", "keep", "3651d"),
        ("storage", "keep", "1h"),
        ("facebook", "subscription_check", "31d"),
        ("motion", "timeout", "0s"),
        ("motion", "timeout", "2h"),
        ("delivery", "retry_initial", "0s"),
        ("delivery", "retry_initial", "2h"),
        ("delivery", "retry_max", "8d"),
        ("delivery", "give_up_after", "0s"),
        ("delivery", "give_up_after", "1000years"),
    ];
    for (table, key, value) in cases {
        let text = with_key(table, key, value);
        let e = errors(&text);
        let dotted = format!("{table}.{key}");
        let hit = e.iter().find(|e| e.key == dotted);
        let Some(hit) = hit else {
            panic!("{dotted} = {value:?} was not refused: {e:?}\n{text}");
        };
        let line = text
            .lines()
            .position(|l| l.starts_with(&format!("{key} = ")))
            .unwrap()
            + 1;
        assert_eq!(hit.line, line, "{hit}");
        assert!(hit.message.starts_with("must be"), "{hit}");
    }
    // Zero turns the subscription check off; the bounds themselves are accepted.
    for (table, key, value) in [
        ("facebook", "subscription_check", "0s"),
        ("storage", "keep", "3650d"),
        ("storage", "keep", "7d"),
        ("local", "reply_wait", "0s"),
    ] {
        Config::from_toml(Path::new("c.toml"), &with_key(table, key, value)).unwrap();
    }
}

#[test]
fn retry_max_below_retry_initial_is_refused() {
    let e = errors(&minimal(
        "[delivery]\nretry_initial = \"10s\"\nretry_max = \"5s\"",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "delivery.retry_max");
    assert!(
        e[0].message
            .contains("at least delivery.retry_initial (10s)"),
        "{}",
        e[0]
    );
}

/// A secret in the wrong place or of the wrong type is never repeated in an error.
#[test]
fn no_value_appears_in_any_error() {
    let leaks = [
        // A number where a string belongs.
        minimal("").replace("app_secret = \"s3cret\"", "app_secret = 918273645546"),
        // A token pasted where the page id goes.
        minimal("").replace("id = \"123\"", "id = \"EAAGsecrettoken918273645546\""),
        // An invalid Receive URL with its token.
        minimal("").replace(
            "http://127.0.0.1:9/api/openchannel/accounts/1/notify?token=abc",
            "127.0.0.1/notify?token=918273645546",
        ),
        // An invalid Graph URL with a token in it.
        minimal("").replace(
            "[facebook]\n",
            "[facebook]\ngraph_url = \"ftp://x/?access_token=918273645546\"\n",
        ),
        // A token where a boolean belongs, and where an enum goes.
        minimal("").replace(
            "reply_token = \"rt-0123456789abcdef\"",
            "reply_token = \"rt-0123456789abcdef\"\nwall_posts = \"918273645546\"",
        ),
        minimal("").replace(
            "reply_token = \"rt-0123456789abcdef\"",
            "reply_token = \"rt-0123456789abcdef\"\ncomment_reply = \"918273645546\"",
        ),
        minimal("").replace("api_key = \"key\"", "api_key = [\"918273645546\"]"),
    ];
    for text in leaks {
        let e = errors(&text);
        let shown: String = e.iter().map(|e| format!("{e} {} ", e.key)).collect();
        assert!(!shown.contains("918273645546"), "a value leaked: {shown}");
        assert!(!shown.contains("secrettoken"), "a value leaked: {shown}");
        assert!(e.iter().all(|e| e.line > 0), "{shown}");
    }
    let e = errors(&minimal("").replace("app_secret = \"s3cret\"", "app_secret = 918273645546"));
    assert_eq!(e[0].key, "facebook.app_secret", "{}", e[0]);
    assert!(e[0].message.contains("expected a string"), "{}", e[0]);
}

#[test]
fn a_short_or_url_unsafe_reply_token_is_refused_with_how_to_make_one() {
    for (token, why) in [
        ("x", "too short (1 characters, at least 16)"),
        ("0123456789abcde", "too short (15 characters"),
        ("0123456789 abcdef&x", "may hold only letters"),
    ] {
        let text = minimal("").replace("rt-0123456789abcdef", token);
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "page.reply_token");
        assert!(e[0].message.contains(why), "{}", e[0]);
        assert!(e[0].message.contains("openssl rand -hex 24"), "{}", e[0]);
        if token.len() > 3 {
            assert!(!e[0].to_string().contains(token), "{}", e[0]);
        }
    }
}

/// A node of a shared queue that lacks an account another node has decides its events
/// with the default settings: the stand-in tables parse, whatever the id's characters.
#[test]
fn an_accounts_stand_in_has_the_default_settings() {
    let page = PageConfig::stand_in("123");
    assert_eq!(page.id.get_ref(), "123");
    assert!(page.wall_posts);
    assert_eq!(page.standby, Standby::Forward);
    assert_eq!(page.comment_reply, CommentReply::Public);
    let account = InstagramConfig::stand_in("17841400000000001");
    assert!(account.comments);
    assert!(account.page.is_none() && account.access_token.is_none());
    let odd = PageConfig::stand_in("1\"2\n[x]");
    assert_eq!(odd.id.get_ref(), "1\"2\n[x]");
}

/// The keys the loader takes, table by table: what its "unknown field" error expects.
fn loader_keys() -> std::collections::BTreeSet<(String, String)> {
    let unknown = "zz_not_a_key";
    let mut known = std::collections::BTreeSet::new();
    for table in [
        "public",
        "local",
        "storage",
        "facebook",
        "motion",
        "delivery",
        "reconcile",
        "page",
        "instagram",
    ] {
        let text = match table {
            "page" => minimal("").replacen("[[page]]\n", &format!("[[page]]\n{unknown} = 1\n"), 1),
            "instagram" => with_instagram(&format!("{IG}page = \"123\"\n{unknown} = 1\n")),
            _ => with_key(table, unknown, "x"),
        };
        let errors = errors(&text);
        let message = &errors[0].message;
        let expected = message
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("[{table}]: {message}"));
        for key in expected.split('`').skip(1).step_by(2) {
            known.insert((table.to_owned(), key.to_owned()));
        }
    }
    known
}

/// The README's configuration reference and the loader name the same keys: a key
/// renamed, added or dropped on one side only fails here.
#[test]
fn the_readme_documents_every_key_the_loader_knows_and_no_other() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let reference = readme
        .split("\n## Configuration reference\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the configuration reference");
    // (table, key) for every key a row names: `public.tls_cert`, `[[page]] id`, and the
    // keys after `[[instagram]] receive_url` in the same cell.
    let mut documented = std::collections::BTreeSet::new();
    for row in reference.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap_or_default();
        let array = ["page", "instagram"]
            .into_iter()
            .find(|t| cell.contains(&format!("[[{t}]]")));
        for name in cell.split('`').skip(1).step_by(2) {
            let name = name.rsplit("]] ").next().unwrap_or(name);
            let (table, key) = match (array, name.split_once('.')) {
                (None, Some(pair)) => pair,
                (Some(table), None) => (table, name),
                _ => panic!("a row of the reference names no key: {row}"),
            };
            documented.insert((table.to_owned(), key.to_owned()));
        }
    }
    assert!(
        documented.len() > 60,
        "only {} documented keys found",
        documented.len()
    );
    let known = loader_keys();
    let undocumented: Vec<_> = known.difference(&documented).collect();
    let unknown_documented: Vec<_> = documented.difference(&known).collect();
    assert!(
        undocumented.is_empty(),
        "keys the loader takes that the README's reference does not document: {undocumented:?}"
    );
    assert!(
        unknown_documented.is_empty(),
        "keys the README documents that the loader does not take: {unknown_documented:?}"
    );
}

/// The example config a package installs shows every key in its table, set or as a
/// commented default, and no key the loader does not take.
#[test]
fn the_example_config_shows_every_key() {
    let example = include_str!("../../config/config.toml");
    let mut shown = std::collections::BTreeSet::new();
    let mut table = "";
    for line in example.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim_start_matches('[');
            continue;
        }
        if let Some((key, _)) = line.split_once('=')
            && let key = key.trim_end()
            && !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            shown.insert((table.to_owned(), key.to_owned()));
        }
    }
    let known = loader_keys();
    let missing: Vec<_> = known.difference(&shown).collect();
    let unknown: Vec<_> = shown.difference(&known).collect();
    assert!(
        missing.is_empty(),
        "keys config/config.toml does not show: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "keys config/config.toml shows that the loader does not take: {unknown:?}"
    );
}
