use super::*;

fn one(body: &str) -> Item {
    let mut items = parse(body.as_bytes()).unwrap();
    assert_eq!(items.len(), 1);
    items.remove(0)
}

/// Instagram Login's comment webhooks as Meta's examples show them: the change on
/// the entry itself (`field`, `value`), not in `changes[]` — one change all the same.
#[test]
fn a_change_on_the_entry_itself_is_one_change() {
    let item = one(
        r#"{"object":"instagram","entry":[{"id":"17841400000000000","time":1700000000,"field":"comments","value":{"id":"17865799348089039","from":{"id":"1254","username":"ada"},"text":"nice","media":{"id":"17887498072083520","media_product_type":"FEED"}}}]}"#,
    );
    assert!(
        matches!(item.parsed, Ok(Parsed::InstagramComment(_))),
        "{:?}",
        item.parsed
    );
    assert_eq!(item.page_id, "17841400000000000");
}

/// A verified entry the daemon reads nothing from is kept as a failed item (counted,
/// logged, replayable after an upgrade), never dropped in silence.
#[test]
fn an_entry_with_nothing_readable_is_kept_as_failed() {
    let item = one(r#"{"object":"page","entry":[{"id":"1","time":5,"surprise":[1]}]}"#);
    let why = item.parsed.unwrap_err();
    assert!(why.contains("surprise"), "{why}");
    assert_eq!(item.page_id, "1");
}

#[test]
fn numeric_and_string_ids_are_the_same_text() {
    let a = one(
        r#"{"object":"page","entry":[{"id":1,"messaging":[{"sender":{"id":2},"recipient":{"id":"1"},"timestamp":5,"message":{"mid":"m","text":"hi"}}]}]}"#,
    );
    let b = one(
        r#"{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"2"},"recipient":{"id":1},"timestamp":5,"message":{"mid":"m","text":"hi"}}]}]}"#,
    );
    assert_eq!(a.page_id, b.page_id);
    assert_eq!(a.conversation().as_str(), "psid:2");
    assert_eq!(a.conversation(), b.conversation());
    assert_eq!(a.dedup_key().as_str(), "mid:m");
}

#[test]
fn unknown_fields_and_kinds_do_not_fail() {
    let i = one(
        r#"{"object":"page","entry":[{"id":1,"future":true,"messaging":[{"sender":{"id":2},"timestamp":5,"brand_new_event":{"x":1}}]}]}"#,
    );
    assert_eq!(i.kind().as_str(), "unknown");
    assert!(i.parsed.is_ok());
}

#[test]
fn a_badly_typed_item_fails_alone() {
    let items = parse(
        br#"{"object":"page","entry":[{"id":1,"messaging":[
        {"sender":{"id":2},"timestamp":5,"message":{"mid":"a","text":42}},
        {"sender":{"id":2},"timestamp":6,"message":{"mid":"b","text":"ok"}}]}]}"#,
    )
    .unwrap();
    assert!(items[0].parsed.is_err());
    assert!(items[1].parsed.is_ok());
}

/// A lone UTF-16 surrogate makes the whole body invalid JSON for a strict reader;
/// only the item that holds it fails, with its text kept.
#[test]
fn a_lone_surrogate_fails_its_item_alone() {
    let body = br#"{"object":"page","entry":[{"id":"1","time":5,"messaging":[
        {"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"message":{"mid":"a","text":"bad \ud800 text"}},
        {"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":6,"message":{"mid":"b","text":"fine"}}]},
        {"id":"3","time":7,"messaging":[{"sender":{"id":"4"},"timestamp":7,"message":{"mid":"c","text":"also fine"}}]},
        {"no_id":true},
        "not an entry"]}"#;
    assert!(
        serde_json::from_slice::<Value>(body).is_err(),
        "strictly, the body is invalid"
    );
    let items = parse(body).unwrap();
    assert_eq!(items.len(), 5);
    assert!(items[0].parsed.is_err());
    assert!(
        serde_json::from_str::<String>(&items[0].raw)
            .unwrap()
            .contains(r"\ud800"),
        "its text is kept"
    );
    assert_eq!(items[0].page_id, "1");
    assert_eq!(items[1].dedup_key().as_str(), "mid:b");
    assert_eq!(
        (items[2].page_id.as_str(), items[2].dedup_key().as_str()),
        ("3", "mid:c")
    );
    assert!(items[3].parsed.is_err() && items[4].parsed.is_err());
    assert_eq!(items[3].kind().as_str(), "unparsed");
    // An entry that is not an object is kept as its text, quoted.
    assert_eq!(items[4].raw, r#""\"not an entry\"""#);
}

#[test]
fn not_a_webhook() {
    assert!(matches!(parse(b"garbage"), Err(WebhookError::NotJson(_))));
    assert!(matches!(
        parse(b"{\"entry\":[]}"),
        Err(WebhookError::NotWebhook(_))
    ));
    assert!(matches!(parse(b"[1,2]"), Err(WebhookError::NotWebhook(_))));
}

#[test]
fn echo_conversation_is_the_recipient() {
    let i = one(
        r#"{"object":"page","entry":[{"id":1,"messaging":[{"sender":{"id":1},"recipient":{"id":9},"timestamp":5,"message":{"mid":"m","text":"hi","is_echo":true}}]}]}"#,
    );
    assert_eq!(i.kind().as_str(), "echo");
    assert_eq!(i.conversation().as_str(), "psid:9");
}

#[test]
fn keyless_events_dedup_on_their_content() {
    let body = r#"{"object":"page","entry":[{"id":1,"messaging":[{"sender":{"id":2},"timestamp":5,"read":{"watermark":4}}]}]}"#;
    assert_eq!(one(body).dedup_key(), one(body).dedup_key());
    let other = body.replace("\"watermark\":4", "\"watermark\":5");
    assert_ne!(one(body).dedup_key(), one(&other).dedup_key());
}

/// A keyless event's digest is of its content, not of how Facebook spelt it: the same
/// read receipt with its keys in another order and spaced out is the same event. (Digests
/// stored before an event's text was kept as it came stay the same.)
#[test]
fn keyless_events_dedup_on_their_content_not_their_spelling() {
    let body = r#"{"object":"page","entry":[{"id":1,"messaging":[{"sender":{"id":2},"timestamp":5,"read":{"watermark":4}}]}]}"#;
    let respelt = r#"{"object":"page","entry":[{"id":1,"messaging":[ { "read" : {"watermark":4}, "timestamp":5, "sender":{"id":2} } ]}]}"#;
    assert_eq!(one(body).dedup_key(), one(respelt).dedup_key());
    assert_eq!(
        one(body).dedup_key().as_str(),
        "read:478146a110bd853729caa64720a84f74",
        "the digest stored by earlier versions"
    );
}

/// A Messenger event is stored as Facebook sent it (its escapes and key order kept); one
/// that names a key twice, which only a tree reads (the last one counts), is read the
/// tree's way and stored as the tree prints it, as before.
#[test]
fn a_messenger_event_keeps_its_text_and_a_repeated_key_still_reads() {
    let event = r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"message":{"mid":"m.1","text":"caf\u00e9"}}"#;
    let item = one(&format!(
        r#"{{"object":"page","entry":[{{"id":"1","time":5,"messaging":[{event}]}}]}}"#
    ));
    assert_eq!(item.raw, event);
    let Ok(Parsed::Messaging(m)) = &item.parsed else {
        panic!("{:?}", item.parsed)
    };
    assert_eq!(m.message.as_ref().unwrap().text.as_deref(), Some("café"));

    let twice = r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"message":{"mid":"m.2","text":"first","text":"second"}}"#;
    let item = one(&format!(
        r#"{{"object":"page","entry":[{{"id":"1","time":5,"messaging":[{twice}]}}]}}"#
    ));
    let Ok(Parsed::Messaging(m)) = &item.parsed else {
        panic!("{:?}", item.parsed)
    };
    assert_eq!(m.message.as_ref().unwrap().text.as_deref(), Some("second"));
    assert_eq!(
        item.raw,
        r#"{"message":{"mid":"m.2","text":"second"},"recipient":{"id":"1"},"sender":{"id":"2"},"timestamp":5}"#
    );
    assert_eq!(
        crate::relay::messenger::text_of(&item.raw).as_deref(),
        Some("second"),
        "what delivery reads back"
    );
}
