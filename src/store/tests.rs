//! The store's own tests: intake, outcomes, retention, the counts it keeps and the WAL.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, params};

use super::items::RECENT_BODIES;
use super::*;

/// Every row of a query made from another connection, as `row` maps it.
fn all_rows<T>(
    side: &Connection,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let mut statement = side.prepare(sql).unwrap();
    statement
        .query_map([], row)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The bundled SQLite is built as `.cargo/config.toml` says: without full-text search,
/// R-trees or extension loading, which the daemon never uses.
#[test]
fn sqlite_has_only_what_it_needs() {
    let conn = Connection::open_in_memory().unwrap();
    let options = all_rows(&conn, "PRAGMA compile_options", |r| r.get::<_, String>(0));
    for absent in [
        "ENABLE_FTS3",
        "ENABLE_FTS5",
        "ENABLE_RTREE",
        "ENABLE_DBSTAT_VTAB",
    ] {
        assert!(
            !options.iter().any(|o| o == absent),
            "{absent} in {options:?}"
        );
    }
    for present in ["OMIT_LOAD_EXTENSION", "OMIT_SHARED_CACHE", "THREADSAFE=1"] {
        assert!(
            options.iter().any(|o| o == present),
            "{present} not in {options:?}"
        );
    }
}

fn event(n: u64) -> NewItem {
    NewItem {
        direction: Direction::Inbound,
        page_id: "1".into(),
        conversation: crate::model::ConversationKey::customer(&(n % 16).to_string()),
        dedup_key: crate::model::DedupKey::message(&n.to_string()),
        kind: crate::model::ItemKind::Messaging(crate::model::MessagingKind::Message),
        event_ts: n as i64,
        payload: "{}".into(),
        state: NewState::Pending,
    }
}

/// A database this version creates has small pages, and a payload larger than one of
/// them is stored and handed out whole; one an earlier version made with SQLite's 4 KiB
/// pages keeps them (WAL mode fixes the size) and works on.
#[tokio::test]
async fn a_new_database_has_small_pages_and_an_old_one_keeps_its_own() {
    let page_size = |path: &Path| -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    let earlier = Connection::open(&old).unwrap();
    earlier.pragma_update(None, "journal_mode", "WAL").unwrap();
    earlier.execute_batch("CREATE TABLE earlier (x)").unwrap();
    drop(earlier);
    assert_eq!(page_size(&old), 4096);
    for (path, pages) in [(dir.path().join("new.db"), 2048), (old, 4096)] {
        let store = Store::open(&path).unwrap();
        let mut long = event(1);
        long.payload = format!(r#"{{"text":"{}"}}"#, "é".repeat(3000));
        store
            .intake(b"{}".to_vec(), None, vec![long.clone()])
            .await
            .unwrap();
        let (claimed, _) = store
            .claim_heads(Direction::Inbound, now_ms(), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].payload, long.payload);
        drop(store);
        assert_eq!(page_size(&path), pages, "{}", path.display());
    }
}

/// Where a customer came from: the latest referral since their previous message, also
/// when the referral is stored after the message it brought. Messages of a
/// conversation that never had a referral stay out of the turns index (a leaf written
/// per message otherwise).
#[tokio::test]
async fn a_referral_belongs_to_the_next_message_and_costs_nothing_elsewhere() {
    use crate::model::{ConversationKey, DedupKey, ItemKind, MessagingKind};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let message = |customer: &str, n: u64, ts: i64| NewItem {
        conversation: ConversationKey::customer(customer),
        dedup_key: DedupKey::message(&format!("{customer}.{n}")),
        event_ts: ts,
        ..event(n)
    };
    let referral = |n: u64, ts: i64| NewItem {
        dedup_key: DedupKey::message(&format!("ref.{n}")),
        kind: ItemKind::Messaging(MessagingKind::Referral),
        payload: format!("{{\"referral\":{n}}}"),
        ..message("a", 100 + n, ts)
    };
    let before = |customer: &str, ts: i64| {
        let store = store.clone();
        let conversation = ConversationKey::customer(customer);
        async move {
            store
                .referral_before("1".into(), conversation, ts)
                .await
                .unwrap()
        }
    };
    let one = Some("{\"referral\":1}".to_owned());
    let two = Some("{\"referral\":2}".to_owned());
    let intake = |items: Vec<NewItem>| {
        let store = store.clone();
        async move { store.intake(b"{}".to_vec(), None, items).await.unwrap() }
    };

    intake(vec![message("a", 1, 100), message("b", 1, 100)]).await;
    assert_eq!(before("a", 100).await, None);
    // Facebook delivered the referral after the message it brought.
    intake(vec![referral(1, 90)]).await;
    assert_eq!(before("a", 100).await, one, "the pending message gets it");
    intake(vec![message("a", 2, 120)]).await;
    assert_eq!(before("a", 120).await, None, "the customer wrote since");
    intake(vec![referral(2, 130), message("a", 3, 140)]).await;
    assert_eq!(before("a", 140).await, two, "the latest one since then");
    assert_eq!(before("a", 100).await, one, "asked again, the same answer");
    assert_eq!(before("b", 100).await, None);

    let turns: Vec<(String, Option<i64>)> = store
        .call(Access::Read, |c| {
            c.all(
                "SELECT dedup_key, turn FROM items ORDER BY id",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
        .unwrap();
    let turn = |key: &str| turns.iter().find(|(k, _)| k == key).unwrap().1;
    assert_eq!(turn("mid:b.1"), None, "no referral, no turn: {turns:?}");
    assert_eq!(turn("mid:a.1"), Some(1), "{turns:?}");
    assert_eq!(turn("mid:ref.1"), Some(2), "{turns:?}");
}

/// A body received again points at its stored copy, unless that copy is gone (pruned,
/// or never committed): then it is stored again, never pointed at a missing row.
#[tokio::test]
async fn a_recent_body_is_stored_once_and_a_missing_copy_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let first = store
        .intake(b"{1}".to_vec(), None, vec![event(1)])
        .await
        .unwrap();
    let again = store
        .intake(b"{1}".to_vec(), None, vec![event(1)])
        .await
        .unwrap();
    assert_eq!(again.webhook_id, first.webhook_id);
    assert_eq!(store.webhook_count().await.unwrap(), 1);
    let id = first.webhook_id;
    store
        .call(Access::Durable, move |c| {
            c.exec("UPDATE items SET webhook_id = NULL", &[])?;
            c.exec("DELETE FROM webhooks WHERE id = ?1", params![id])
        })
        .await
        .unwrap();
    // (SQLite may give the new row the deleted one's id: the body is what counts.)
    let third = store.intake(b"{1}".to_vec(), None, vec![]).await.unwrap();
    assert_eq!(store.webhook_count().await.unwrap(), 1);
    let body: Vec<u8> = store
        .call(Access::Read, move |c| {
            c.one(
                "SELECT body FROM webhooks WHERE id = ?1",
                params![third.webhook_id],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(body, b"{1}");
    // The memory is bounded: past the latest RECENT_BODIES, a body is stored anew.
    for n in 0..RECENT_BODIES {
        store
            .intake(format!("{{{n}x}}").into_bytes(), None, vec![])
            .await
            .unwrap();
    }
    let before = store.webhook_count().await.unwrap();
    store.intake(b"{1}".to_vec(), None, vec![]).await.unwrap();
    assert_eq!(store.webhook_count().await.unwrap(), before + 1);
}

/// A conversation is held by one claim at a time: claimed again only once released,
/// or once its lease has run out (a holder that died).
#[tokio::test]
async fn a_claimed_conversation_is_handed_out_once_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    // Two conversations (16 apart share one), two items in the first.
    store
        .intake(b"{}".to_vec(), None, vec![event(1), event(17), event(2)])
        .await
        .unwrap();
    let now = now_ms();
    let (first, _) = store
        .claim_heads(Direction::Inbound, now, 10)
        .await
        .unwrap();
    let conversations: Vec<&str> = first.iter().map(|i| i.conversation.as_str()).collect();
    assert_eq!(conversations, ["psid:1", "psid:2"]);
    let (again, _) = store
        .claim_heads(Direction::Inbound, now, 10)
        .await
        .unwrap();
    assert!(again.is_empty(), "claimed twice: {again:?}");
    // The other direction is another queue.
    let (outbound, _) = store
        .claim_heads(Direction::Outbound, now, 10)
        .await
        .unwrap();
    assert!(outbound.is_empty());

    store.complete(first[0].id, None).await.unwrap();
    store.release(
        Direction::Inbound,
        &first[0].page_id,
        &first[0].conversation,
    );
    let (next, _) = store
        .claim_heads(Direction::Inbound, now, 10)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].dedup_key.as_str(),
        "mid:17",
        "the conversation's next item"
    );

    let later = now + duration_ms(CLAIM_LEASE) + 1;
    let (expired, _) = store
        .claim_heads(Direction::Inbound, later, 10)
        .await
        .unwrap();
    let mut ids: Vec<i64> = expired.iter().map(|i| i.id).collect();
    ids.sort();
    let mut want = vec![next[0].id, first[1].id];
    want.sort();
    assert_eq!(ids, want, "leases ran out");
}

/// A head whose item is not there (a database edited by hand, an older version's
/// leftover) is passed over; the claim still hands out the others, at every call.
#[tokio::test]
async fn a_head_without_its_item_does_not_stop_the_claims() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    store
        .intake(b"{}".to_vec(), None, vec![event(1), event(2)])
        .await
        .unwrap();
    let side = rusqlite::Connection::open(&path).unwrap();
    side.execute(
        "INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at, event_ts)
         VALUES ('in', '1', 'psid:gone', 999999, 0, 0)",
        [],
    )
    .unwrap();
    for _ in 0..2 {
        let (items, _) = store
            .claim_heads(Direction::Inbound, now_ms(), 10)
            .await
            .unwrap();
        let conversations: Vec<&str> = items.iter().map(|i| i.conversation.as_str()).collect();
        assert!(!conversations.contains(&"psid:gone"), "{conversations:?}");
        for item in &items {
            store.release(Direction::Inbound, &item.page_id, &item.conversation);
        }
        let mut conversations = conversations;
        conversations.sort();
        assert_eq!(conversations, ["psid:1", "psid:2"]);
    }
}

/// A conversation in flight is passed over whichever of its items heads it: the one
/// handed out, or an earlier one (by Facebook time) that arrived meanwhile and took
/// the head; once released, the earlier one goes next.
#[tokio::test]
async fn a_conversation_in_flight_is_passed_over_whatever_heads_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let claim = || async {
        let (items, _) = store
            .claim_heads(Direction::Inbound, now_ms(), 10)
            .await
            .unwrap();
        items.iter().map(|i| i.event_ts).collect::<Vec<_>>()
    };
    // Events 17 and 1 are both of conversation "1"; event 2 is of "2".
    store
        .intake(b"a".to_vec(), None, vec![event(17), event(2)])
        .await
        .unwrap();
    let mut first = claim().await;
    first.sort();
    assert_eq!(first, [2, 17]);
    assert_eq!(claim().await, Vec::<i64>::new(), "both in flight");
    store
        .intake(b"b".to_vec(), None, vec![event(1)])
        .await
        .unwrap();
    assert_eq!(
        claim().await,
        Vec::<i64>::new(),
        "the earlier message heads a conversation in flight"
    );
    let one = crate::model::ConversationKey::customer("1");
    store.release(Direction::Inbound, "1", &one);
    assert_eq!(
        claim().await,
        [1],
        "released: the earlier message goes next"
    );
}

/// Outside systemd the umask used to leave the database readable by everyone.
#[tokio::test]
async fn the_database_and_its_spool_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let store = Store::open(&path).unwrap();
    store
        .intake(b"{}".to_vec(), None, vec![event(1)])
        .await
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("state.db-wal")), 0o600);
    assert_eq!(mode(&spool_dir(&path)), 0o700);
    drop(store);
    // A database an earlier version left world-readable is tightened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

/// A webhook is fsynced before it is acknowledged; a delivery outcome is committed
/// (another connection sees it, so a killed process keeps it) without an fsync.
#[tokio::test]
async fn webhooks_are_fsynced_and_delivery_outcomes_only_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    let stats = store.stats();
    let syncs = || stats.wal_syncs.load(Ordering::Relaxed);
    store
        .intake(b"{}".to_vec(), None, vec![event(1)])
        .await
        .unwrap();
    assert_eq!(stats.write_commits.load(Ordering::Relaxed), 1);
    assert_eq!(stats.relaxed_commits.load(Ordering::Relaxed), 0);
    // Answered only after the sync thread's fsync of the WAL.
    assert_eq!(syncs(), 1);

    let (items, _) = store
        .claim_heads(Direction::Inbound, now_ms(), 10)
        .await
        .unwrap();
    store.complete(items[0].id, None).await.unwrap();
    assert_eq!(stats.write_commits.load(Ordering::Relaxed), 1);
    assert_eq!(stats.relaxed_commits.load(Ordering::Relaxed), 1);
    assert_eq!(syncs(), 1, "a delivery outcome waits for no fsync");
    let other = Connection::open(&path).unwrap();
    let state: String = other
        .query_row(
            "SELECT state FROM items WHERE id = ?1",
            [items[0].id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state, "done");

    store
        .intake(b"{}".to_vec(), None, vec![event(2)])
        .await
        .unwrap();
    assert_eq!(stats.write_commits.load(Ordering::Relaxed), 2);
    assert_eq!(syncs(), 2);
    // The commits themselves do not wait for the disk: the sync thread does.
    let sync: i64 = store
        .call(Access::Read, |c| {
            c.one("PRAGMA synchronous", &[], |r| r.get(0))
        })
        .await
        .unwrap();
    assert_eq!(sync, 1, "NORMAL");
}

/// The time an acknowledged request spends in the store is kept by stage, for it
/// alone: the stages add up to no more than the wait its caller saw, the commit is
/// counted, and delivery outcomes and reads are not requests of this kind.
#[tokio::test]
async fn an_acknowledged_request_is_timed_by_stage_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let times = &store.stats().durable;
    let us = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    store
        .intake(b"{}".to_vec(), None, vec![event(1)])
        .await
        .unwrap();
    let waited = started.elapsed().as_micros() as u64;
    assert_eq!(us(&times.requests), 1);
    let stages = [
        &times.queue_us,
        &times.commit_us,
        &times.sync_wait_us,
        &times.sync_us,
    ];
    let total: u64 = stages.iter().map(|a| us(a)).sum();
    assert!(us(&times.commit_us) > 0, "a transaction takes time");
    assert!(
        total <= waited,
        "{total} µs in the stages, {waited} µs seen by the caller"
    );

    let (items, _) = store
        .claim_heads(Direction::Inbound, now_ms(), 10)
        .await
        .unwrap();
    store.complete(items[0].id, None).await.unwrap();
    assert_eq!(
        us(&times.requests),
        1,
        "a delivery outcome and a read are not counted"
    );
    let after: u64 = stages.iter().map(|a| us(a)).sum();
    assert_eq!(after, total);
}

/// Old delivered and skipped items go with their history and webhook bodies; pending
/// and failed items, unreadable bodies and anything recent stay.
#[tokio::test]
async fn prune_deletes_old_history_and_keeps_work_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    let mut ids = Vec::new();
    for n in 0..6 {
        store
            .intake(format!("body {n}").into_bytes(), None, vec![event(n)])
            .await
            .unwrap();
        ids.push(n as i64 + 1);
    }
    store
        .intake(b"not json".to_vec(), Some("unreadable".into()), Vec::new())
        .await
        .unwrap();
    let (done_old, skipped_old, pending_old, failed_old, done_new, pending_new) =
        (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
    for id in [done_old, done_new] {
        store.complete(id, None).await.unwrap();
    }
    store
        .fail(failed_old, "Motion said 400".into())
        .await
        .unwrap();
    let side = Connection::open(&path).unwrap();
    side.execute(
        "UPDATE items SET state = 'skipped' WHERE id = ?1",
        [skipped_old],
    )
    .unwrap();
    // Make the first four (and every webhook body but the last two) a year old.
    let old = now_ms() - 365 * 86_400_000;
    for id in [done_old, skipped_old, pending_old, failed_old] {
        side.execute(
            "UPDATE items SET created_at = ?2, updated_at = ?2 WHERE id = ?1",
            params![id, old],
        )
        .unwrap();
    }
    side.execute(
        "UPDATE webhooks SET received_at = ?1 WHERE id <= 4 OR parse_error IS NOT NULL",
        [old],
    )
    .unwrap();
    // Old sent-message ids: one of a delivered item, one of an item still pending
    // (a reply part already sent, needed if it is retried).
    for (id, mid) in [(done_old, "m.done"), (pending_old, "m.pending")] {
        store.record_sent("1".into(), mid.into(), id).await.unwrap();
    }
    side.execute("UPDATE sent_messages SET sent_at = ?1", [old])
        .unwrap();

    let cutoff = now_ms() - 30 * 86_400_000;
    let mut total = Pruned::default();
    loop {
        // One row per step: the steps must add up.
        let step = store.prune(cutoff, 1).await.unwrap();
        if step.total() == 0 {
            break;
        }
        total += step;
    }
    assert_eq!(
        (total.items, total.webhooks, total.other),
        (2, 2, 1),
        "{total:?}"
    );
    let sent: Vec<String> = all_rows(&side, "SELECT message_id FROM sent_messages", |r| r.get(0));
    assert_eq!(sent, ["m.pending"]);
    let left: Vec<(i64, String)> =
        all_rows(&side, "SELECT id, state FROM items ORDER BY id", |r| {
            Ok((r.get(0)?, r.get(1)?))
        });
    assert_eq!(
        left,
        vec![
            (pending_old, "pending".into()),
            (failed_old, "failed".into()),
            (done_new, "done".into()),
            (pending_new, "pending".into()),
        ]
    );
    let bodies: Vec<i64> = all_rows(&side, "SELECT id FROM webhooks ORDER BY id", |r| r.get(0));
    assert_eq!(
        bodies,
        vec![3, 4, 5, 6, 7],
        "kept: referenced, recent, unreadable"
    );
    let orphan_attempts: Vec<i64> = all_rows(
        &side,
        "SELECT item_id FROM attempts WHERE item_id NOT IN (SELECT id FROM items)",
        |r| r.get(0),
    );
    assert!(
        orphan_attempts.is_empty(),
        "attempts of pruned items are pruned"
    );
}

/// The items per state that /metrics shows, and the pending items per page and
/// direction that /readyz and /metrics show, are kept by the schema in the
/// transaction that changes an item, whichever connection makes it (the daemon's or
/// the `queue` tools'): after intake, outcomes, a redelivery, a retry, a drop and a
/// prune they are what counting every item says; and reading them reads no item but
/// the first pending one of each page and direction (they read them all, at every
/// probe and scrape, on the store thread).
#[tokio::test]
async fn the_counts_are_kept_exact_and_read_without_the_items() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    let side = Connection::open(&path).unwrap();
    let counted = || -> Vec<(String, i64)> {
        all_rows(
            &side,
            "SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    };
    let queued = || -> Vec<(String, String, i64, i64)> {
        all_rows(
            &side,
            "SELECT page_id, direction, COUNT(*), MIN(created_at) FROM items
              WHERE state = 'pending' GROUP BY page_id, direction ORDER BY 1, 2",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    };
    // What `queue stats` and `doctor` showed by reading every item, an hour from now.
    let now = now_ms() + 3_600_000;
    let per_page = || queue::stats_by(&sql::Sql::Lite(&side), queue::COUNTED_PAGES, now).unwrap();
    let check = |kept: Vec<(String, i64)>, queue: Vec<QueueStat>| {
        assert_eq!(kept, counted());
        let queue: Vec<_> = queue
            .into_iter()
            .map(|q| (q.page_id, q.direction, q.pending, q.oldest_created_at))
            .collect();
        assert_eq!(queue, queued());
        let operator = queue::stats_at(&sql::Sql::Lite(&side), now).unwrap();
        assert_eq!(operator, per_page());
    };
    let states = |pairs: &[(&str, i64)]| -> Vec<(String, i64)> {
        pairs.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
    };

    let mut skipped = event(3);
    skipped.state = NewState::Skipped("an echo of our own".into());
    let mut failed = event(4);
    failed.state = NewState::Failed("not deliverable".into());
    let mut other_page = event(6);
    other_page.page_id = "2".into();
    let items = vec![event(1), event(2), skipped, failed, event(5), other_page];
    store.intake(b"{}".to_vec(), None, items).await.unwrap();
    let mut reply = event(7);
    reply.direction = Direction::Outbound;
    reply.dedup_key = crate::model::DedupKey::motion_message("7");
    let reply = store.enqueue(reply).await.unwrap().id;
    let kept = store.count_by_state().await.unwrap();
    assert_eq!(
        kept,
        states(&[("failed", 1), ("pending", 5), ("skipped", 1)])
    );
    check(kept, store.queue_stats().await.unwrap());
    // Each item stored a millisecond after the one before; the first stored of a
    // page's pending items leaves, and the next one is shown.
    side.execute("UPDATE items SET created_at = created_at - 1000 + id", [])
        .unwrap();
    store.complete(1, None).await.unwrap();
    check(
        store.count_by_state().await.unwrap(),
        store.queue_stats().await.unwrap(),
    );

    store
        .retry_later(5, now_ms() + 60_000, "Motion is down".into())
        .await
        .unwrap();
    store.fail(2, "Motion said 400".into()).await.unwrap();
    store.complete(reply, None).await.unwrap();
    store
        .intake(b"{}".to_vec(), None, vec![event(1), event(5)])
        .await
        .unwrap();
    let kept = store.count_by_state().await.unwrap();
    assert_eq!(
        kept,
        states(&[("done", 2), ("failed", 2), ("pending", 2), ("skipped", 1)])
    );
    check(kept, store.queue_stats().await.unwrap());
    let operator = queue::stats(&sql::Sql::Lite(&side)).unwrap();
    assert_eq!(
        operator.iter().map(|s| s.retrying).sum::<i64>(),
        1,
        "the item waiting for another attempt: {operator:?}"
    );

    let operator = sql::Sql::Lite(&side);
    assert_eq!(queue::retry(&operator, &[2]).unwrap(), [2]);
    assert_eq!(queue::drop_items(&operator, &[4]).unwrap(), [4]);
    let kept = store.count_by_state().await.unwrap();
    assert_eq!(
        kept,
        states(&[("done", 2), ("pending", 3), ("skipped", 1)]),
        "no state is shown with none left"
    );
    check(kept, store.queue_stats().await.unwrap());

    let old = now_ms() - 365 * 86_400_000;
    side.execute(
        "UPDATE items SET created_at = ?1, updated_at = ?1 WHERE id <= 3",
        [old],
    )
    .unwrap();
    let pruned = store.prune(now_ms() - 86_400_000, 100).await.unwrap();
    assert_eq!(pruned.items, 2, "{pruned:?}");
    let kept = store.count_by_state().await.unwrap();
    assert_eq!(kept, states(&[("done", 1), ("pending", 3)]));
    check(kept, store.queue_stats().await.unwrap());
    side.execute("DELETE FROM items WHERE page_id = '2'", [])
        .unwrap();
    let queue = store.queue_stats().await.unwrap();
    assert_eq!(
        queue.len(),
        1,
        "a page with none pending is left out: {queue:?}"
    );
    check(store.count_by_state().await.unwrap(), queue);

    for read in [items::KEPT_COUNTS, items::KEPT_QUEUE] {
        let plan: Vec<String> =
            all_rows(&side, &format!("EXPLAIN QUERY PLAN {read}"), |r| r.get(3));
        assert!(
            plan.iter().all(|step| {
                step.split_whitespace().all(|word| word != "items")
                    && (!step.contains("SCAN") || step == "SCAN item_counts")
            }),
            "the counts are read without the items, the first pending one by its index: {plan:?}"
        );
    }
    // The operator's figures read the counts whole (a row per state, direction and
    // page) and, of the items, the pending ones alone.
    let plan: Vec<String> = all_rows(
        &side,
        &format!("EXPLAIN QUERY PLAN {}", queue::KEPT_PAGES),
        |r| r.get(3),
    );
    assert!(
        plan.iter().all(|step| {
            (!step.contains("SCAN") || step == "SCAN c")
                && (!step.contains(" i ") || step.contains("USING INDEX items_waiting"))
        }),
        "`queue stats` reads the counts and the pending items, not the history: {plan:?}"
    );
}

/// Under writes that never pause, the WAL still starts over: it holds about a second of
/// frames, not every frame since the store was opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let seq = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, seq) = (store.clone(), seq.clone());
        writers.spawn(async move {
            while store.stats().checkpoints.load(Ordering::Relaxed) < 15 {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                store
                    .intake(b"{}".to_vec(), None, vec![event(n)])
                    .await
                    .unwrap();
            }
        });
    }
    while writers.join_next().await.is_some() {}
    // The WAL header's checkpoint sequence number counts the times it started over.
    let wal = std::fs::read(dir.path().join("state.db-wal")).unwrap();
    let restarts = u32::from_be_bytes(wal[12..16].try_into().unwrap());
    // The writer copies the tail once a second: at every fifth pass.
    assert!(
        restarts >= 2,
        "the WAL started over {restarts} times in 15 checkpoint passes"
    );
}
