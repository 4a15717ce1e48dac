use super::*;

fn page(id: &str) -> ManagedPage {
    ManagedPage {
        id: id.into(),
        name: "Shop".into(),
        token: Secret::new("EAAG-never-1234"),
        can_message: true,
        instagram: None,
    }
}

#[test]
fn a_page_fills_the_examples_table_and_keeps_every_comment() {
    let text = "# top comment\n[facebook]\napp_secret = \"s\" # why\n\n[[page]]\n# The Page id\nid = \"1234567890\"\naccess_token = \"CHANGE-ME-page-access-token\"\nreceive_url = \"https://x/notify\"\nreply_token = \"CHANGE-ME-reply-token\"\n# wall_posts = true\n";
    let mut doc: DocumentMut = text.parse().unwrap();
    let mut tokens = Vec::new();
    write_page(&mut doc, &page("42"), Some("https://m/notify"), &mut tokens).unwrap();
    let out = doc.to_string();
    for kept in [
        "# top comment",
        "# why",
        "# The Page id",
        "# wall_posts = true",
    ] {
        assert!(out.contains(kept), "{kept} lost:\n{out}");
    }
    assert!(out.contains("id = \"42\""), "{out}");
    assert!(!out.contains("CHANGE-ME"), "{out}");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].1.len(), 64);
    assert_eq!(out.matches("[[page]]").count(), 1);

    // Again for the same page: only its token changes.
    let mut again = page("42");
    again.token = Secret::new("EAAG-newer-9876");
    let mut tokens = Vec::new();
    write_page(&mut doc, &again, None, &mut tokens).unwrap();
    let out2 = doc.to_string();
    assert!(tokens.is_empty());
    assert_eq!(out2, out.replace("EAAG-never-1234", "EAAG-newer-9876"));

    // Another page: a new table at the end.
    write_page(
        &mut doc,
        &page("43"),
        Some("https://m/notify2"),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(doc.to_string().matches("[[page]]").count(), 2);
}

#[test]
fn the_shipped_example_config_gets_its_page_table_filled() {
    let example = include_str!("../../../config/config.toml");
    let mut doc: DocumentMut = example.parse().unwrap();
    let mut tokens = Vec::new();
    write_page(&mut doc, &page("42"), Some("https://m/notify"), &mut tokens).unwrap();
    let out = doc.to_string();
    assert_eq!(out.matches("\n[[page]]").count(), 1, "{out}");
    assert!(!out.contains("CHANGE-ME-page-access-token"), "{out}");
    assert!(!out.contains("CHANGE-ME-reply-token"), "{out}");
    // Every comment line of the example is still there.
    for line in example.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(out.contains(line), "lost: {line}");
    }
}

#[test]
fn reply_urls_are_on_loopback_and_escaped() {
    let listen = "0.0.0.0:8089".parse().unwrap();
    assert_eq!(
        reply_url(listen, "42", "ab+c"),
        "http://127.0.0.1:8089/reply/42?token=ab%2Bc"
    );
    assert_eq!(tail(&Secret::new("EAAGabcdef")), "…cdef");
    assert_eq!(tail(&Secret::new("ab")), "…ab");
}
