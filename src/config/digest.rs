//! What of the config every node of a shared queue must hold alike, as digests. A
//! webhook or a Reply URL call is handled by whichever node gets it, so a node whose
//! config lacks a Page, or holds an old token or another Receive URL, answers otherwise
//! than the other: the nodes compare their digests through the shared queue and say
//! which parts differ, never a value. The local parts (listeners, certificates, the
//! state folder, the queue's own settings) may differ and are left out.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{Config, Secret};

/// Each compared part of a config by name (`facebook.app_secret`, `page 123`,
/// `page 123's access_token`…), with a digest of its value.
pub type Digest = BTreeMap<String, String>;

/// A short digest of `value` (SHA-256, 16 hex digits): enough to tell two values apart,
/// and a secret's cannot be read back from it.
fn hash(name: &str, value: &str) -> String {
    let mut h = Sha256::new();
    for part in ["fb-openchannel config", name, value] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A part's settings as written (secrets and URL queries masked: they are digested
/// apart).
fn settings(part: &impl Serialize) -> String {
    serde_json::to_string(part).unwrap_or_default()
}

/// The digests of what every node must hold alike, and the release (so that a rolling
/// upgrade, whose new settings differ by their defaults, says so).
pub fn digest(config: &Config) -> Digest {
    let mut d = Digest::new();
    d.insert("release".into(), env!("CARGO_PKG_VERSION").into());
    let mut put = |name: String, value: &str| {
        let h = hash(&name, value);
        d.insert(name, h);
    };
    let secret = |s: &Secret| s.expose().to_owned();
    let fb = &config.facebook;
    put("facebook".into(), &settings(fb));
    put(
        "facebook.app_secret".into(),
        &secret(fb.app_secret.get_ref()),
    );
    put(
        "facebook.instagram_app_secret".into(),
        &fb.instagram_app_secret
            .as_ref()
            .map(|s| secret(s.get_ref()))
            .unwrap_or_default(),
    );
    put(
        "facebook.verify_token".into(),
        &secret(fb.verify_token.get_ref()),
    );
    put("motion".into(), &settings(&config.motion));
    put(
        "motion.api_key".into(),
        &secret(config.motion.api_key.get_ref()),
    );
    put("delivery".into(), &settings(&config.delivery));
    put("reconcile".into(), &settings(&config.reconcile));
    for page in &config.pages {
        let name = format!("page {}", page.id.get_ref());
        put(
            format!("{name}'s access_token"),
            &secret(page.access_token.get_ref()),
        );
        put(format!("{name}'s receive_url"), page.receive_url.get_ref());
        put(
            format!("{name}'s reply_token"),
            &secret(page.reply_token.get_ref()),
        );
        put(name, &settings(page));
    }
    // An Instagram Login account's token is refreshed by the daemon and kept in the
    // shared queue: the file's may be older on one node. Whether there is one is in
    // the settings.
    for account in &config.instagram {
        let name = format!("instagram {}", account.id.get_ref());
        put(
            format!("{name}'s receive_url"),
            account.receive_url.get_ref(),
        );
        put(
            format!("{name}'s reply_token"),
            &secret(account.reply_token.get_ref()),
        );
        put(name, &settings(account));
    }
    d
}

/// The account a part belongs to (`page 123` for `page 123's reply_token`), if any.
fn account(name: &str) -> Option<&str> {
    let account = name.split("'s ").next()?;
    (account.starts_with("page ") || account.starts_with("instagram ")).then_some(account)
}

/// Whether a part's name is a whole account (`page 123`, `instagram 1784…`).
pub fn is_account(name: &str) -> bool {
    account(name) == Some(name)
}

/// What differs between this node's digests and another node's, in words: an account
/// configured on one node only, a part whose value differs.
pub fn differences(mine: &Digest, theirs: &Digest) -> Vec<String> {
    let mut said = Vec::new();
    for (name, value) in mine {
        let whole = account(name).is_some_and(|a| a == name);
        match theirs.get(name) {
            None if whole => said.push(format!("{name} is configured only on this node")),
            None if account(name).is_some_and(|a| !theirs.contains_key(a)) => {}
            None => said.push(format!("{name} is set only on this node")),
            Some(v) if v != value && whole => said.push(format!("{name}'s settings differ")),
            Some(v) if v != value => said.push(format!("{name} differs")),
            Some(_) => {}
        }
    }
    for name in theirs.keys() {
        if mine.contains_key(name) {
            continue;
        }
        match account(name) {
            Some(a) if a == name => said.push(format!("{name} is configured only there")),
            Some(a) if !mine.contains_key(a) => {}
            _ => said.push(format!("{name} is set only there")),
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml(std::path::Path::new("c.toml"), text).unwrap()
    }

    const BASE: &str = r#"
[public]
tls = false
listen = "127.0.0.1:8443"
[facebook]
app_secret = "hunter2-app-secret"
verify_token = "vt"
[motion]
api_key = "key"
[[page]]
id = "123"
access_token = "tok"
receive_url = "http://127.0.0.1:9/api/openchannel/accounts/1/notify?token=abc"
reply_token = "rt-0123456789abcdef"
"#;

    #[test]
    fn nodes_are_told_which_parts_differ_never_the_values() {
        let same = digest(&parse(BASE));
        assert_eq!(
            differences(&same, &digest(&parse(BASE))),
            Vec::<String>::new()
        );
        assert!(!format!("{same:?}").contains("hunter2"), "{same:?}");

        // Another node: a Page token of its own, one more Page, and another listener
        // address (local: not compared).
        let other = BASE
            .replace("access_token = \"tok\"", "access_token = \"tok2\"")
            .replace("127.0.0.1:8443", "127.0.0.1:9443")
            + "[[page]]\nid = \"5550001\"\naccess_token = \"EAAsecond\"\nreceive_url = \"https://motion.example/api/openchannel/accounts/9/notify\"\nreply_token = \"second-reply-token-0123456789\"\n";
        let other = digest(&parse(&other));
        assert_eq!(
            differences(&same, &other),
            [
                "page 123's access_token differs",
                "page 5550001 is configured only there"
            ]
        );
        assert_eq!(
            differences(&other, &same),
            [
                "page 123's access_token differs",
                "page 5550001 is configured only on this node"
            ]
        );
        // A reply token and a wall setting.
        let third = BASE
            .replace("rt-0123456789abcdef", "rt-fedcba9876543210")
            .replace("reply_token", "wall_posts = false\nreply_token");
        assert_eq!(
            differences(&same, &digest(&parse(&third))),
            [
                "page 123's settings differ",
                "page 123's reply_token differs"
            ]
        );
    }

    #[test]
    fn a_part_names_its_account() {
        assert_eq!(account("page 12's reply_token"), Some("page 12"));
        assert_eq!(account("instagram 1784"), Some("instagram 1784"));
        assert_eq!(account("facebook.app_secret"), None);
    }
}
