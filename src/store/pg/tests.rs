use super::*;
use crate::model::{ConversationKey, DedupKey, ItemKind, MessagingKind};
use crate::sim::postgres::{PrivatePostgres, SKIPPED};
use crate::store::{NewItem, NewState};

/// A private server with one database, or `None` (and the reason printed) when
/// PostgreSQL is not installed.
pub(in crate::store) fn server(db: &str) -> Option<(PrivatePostgres, StorageConfig)> {
    let Some(pg) = PrivatePostgres::start().unwrap() else {
        eprintln!("{SKIPPED}");
        return None;
    };
    pg.create_database(db).unwrap();
    let storage = StorageConfig {
        backend: crate::config::Backend::Postgres,
        url: Some(crate::config::Secret::new(pg.url(db))),
        path: pg.dir().join("state/state.db"),
        ..StorageConfig::default()
    };
    Some((pg, storage))
}

fn message(customer: u64, n: u64, ts: i64) -> NewItem {
    NewItem {
        direction: Direction::Inbound,
        page_id: "1".into(),
        conversation: ConversationKey::customer(&customer.to_string()),
        dedup_key: DedupKey::message(&format!("{customer}.{n}")),
        kind: ItemKind::Messaging(MessagingKind::Message),
        event_ts: ts,
        payload: format!("{{\"n\":{n}}}"),
        state: NewState::Pending,
    }
}

/// Two daemons on one queue: a conversation is leased to one node at a time; the
/// other passes over it until the lease ends; a dead node's leases pass to the living one when
/// they run out; redeliveries are recognised whichever node stored the first copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_queue_and_never_hold_one_conversation() {
    let Some((_pg, storage)) = server("nodes") else {
        return;
    };
    let a = Store::open_postgres(&storage).unwrap();
    let b = Store::open_postgres(&storage).unwrap();
    assert_ne!(a.shared().unwrap().node, b.shared().unwrap().node);

    let first = a
        .intake(
            b"{1}".to_vec(),
            None,
            vec![message(1, 1, 10), message(2, 1, 10)],
        )
        .await
        .unwrap();
    assert_eq!((first.new, first.duplicates), (2, 0));
    // Facebook redelivers the same event to the other node.
    let again = b
        .intake(b"{1}".to_vec(), None, vec![message(1, 1, 10)])
        .await
        .unwrap();
    assert_eq!((again.new, again.duplicates), (0, 1));
    // An earlier message of customer 1, stored by the other node, becomes the head.
    b.intake(b"{0}".to_vec(), None, vec![message(1, 0, 5)])
        .await
        .unwrap();

    let now = now_ms();
    let (got_a, _) = a.claim_heads(Direction::Inbound, now, 10).await.unwrap();
    let keys: Vec<&str> = got_a.iter().map(|i| i.dedup_key.as_str()).collect();
    assert_eq!(keys, ["mid:1.0", "mid:2.1"], "the heads, oldest first");
    let (got_b, next) = b.claim_heads(Direction::Inbound, now, 10).await.unwrap();
    assert!(
        got_b.is_empty(),
        "both conversations are leased to A: {got_b:?}"
    );
    // B looks again at its next look (within a second): asking when A's first lease
    // ends read every lease of the direction at each claim.
    assert_eq!(next, None, "no retry is due");
    let lease_end = now + duration_ms(storage.lease);

    // A delivers customer 2's message and releases; B then gets nothing new there
    // (no more items), and customer 1 is still A's.
    a.complete(got_a[1].id, None).await.unwrap();
    a.release(
        Direction::Inbound,
        &got_a[1].page_id,
        &got_a[1].conversation,
    );
    // A's release is not waited for; A's next claim is (one worker at a time per
    // request, but the release was handed over first).
    let (mine, _) = a.claim_heads(Direction::Inbound, now, 10).await.unwrap();
    assert!(mine.is_empty(), "A holds customer 1 in memory: {mine:?}");

    // A dies holding customer 1: after its lease, B takes the conversation over.
    drop(a);
    let later = lease_end + 1;
    let (taken, _) = b.claim_heads(Direction::Inbound, later, 10).await.unwrap();
    let keys: Vec<&str> = taken.iter().map(|i| i.dedup_key.as_str()).collect();
    assert_eq!(keys, ["mid:1.0"]);
    b.complete(taken[0].id, None).await.unwrap();
    b.release(
        Direction::Inbound,
        &taken[0].page_id,
        &taken[0].conversation,
    );
    let (next_item, _) = b.claim_heads(Direction::Inbound, later, 10).await.unwrap();
    let keys: Vec<&str> = next_item.iter().map(|i| i.dedup_key.as_str()).collect();
    assert_eq!(keys, ["mid:1.1"], "then the conversation's next message");
}

/// Every operation of the store, run as one script on SQLite and on PostgreSQL:
/// both give the same answers (the operator's view, the conversation memory, the
/// tokens, retention, retry and drop, export).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_the_same_on_both_backends() {
    let Some((_pg, storage)) = server("same") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lite_path = dir.path().join("state.db");
    let path = lite_path.clone();
    let on_sqlite = script(Store::open(&lite_path).unwrap(), move || {
        crate::store::queue::Database::Lite(crate::store::queue::open(&path).unwrap())
    })
    .await;
    let shared = storage.clone();
    let on_postgres = script(Store::open_postgres(&storage).unwrap(), move || {
        crate::store::queue::open_storage(&shared).unwrap()
    })
    .await;
    assert_eq!(on_sqlite.len(), on_postgres.len());
    for (lite, pg) in on_sqlite.iter().zip(&on_postgres) {
        assert_eq!(lite, pg);
    }
}

/// The script: each step's answer, as text.
async fn script(
    store: Store,
    database: impl Fn() -> crate::store::queue::Database + Send + Sync + 'static,
) -> Vec<String> {
    use crate::store::queue;
    let mut out = Vec::new();
    let mut note = |what: &str, v: String| out.push(format!("{what}: {v}"));
    let wall = |n: u64, kind: crate::model::FeedKind| NewItem {
        direction: Direction::Inbound,
        page_id: "1".into(),
        conversation: ConversationKey::post("1_9"),
        dedup_key: DedupKey::message(&format!("wall.{n}")),
        kind: ItemKind::Feed(kind),
        event_ts: 50 + n as i64,
        payload: format!("{{\"wall\":{n}}}"),
        state: NewState::Pending,
    };
    let first = store
        .intake(
            b"{a}".to_vec(),
            None,
            vec![
                message(1, 1, 10),
                message(1, 2, 20),
                message(2, 1, 15),
                wall(1, crate::model::FeedKind::Post),
                wall(2, crate::model::FeedKind::Comment),
            ],
        )
        .await
        .unwrap();
    note(
        "intake",
        format!("{} {} {}", first.new, first.duplicates, first.pending),
    );
    let again = store
        .intake(b"{b}".to_vec(), None, vec![message(1, 1, 10)])
        .await
        .unwrap();
    note("again", format!("{} {}", again.new, again.duplicates));
    store
        .intake(b"not json".to_vec(), Some("unreadable".into()), vec![])
        .await
        .unwrap();
    note(
        "failed webhooks",
        format!("{:?}", store.failed_webhooks().await.unwrap().len()),
    );
    note("webhooks", store.webhook_count().await.unwrap().to_string());
    let (heads, _) = store
        .claim_heads(Direction::Inbound, 1_000, 10)
        .await
        .unwrap();
    let keys: Vec<String> = heads
        .iter()
        .map(|i| i.dedup_key.as_str().to_owned())
        .collect();
    note("heads", format!("{keys:?}"));
    let (a, b) = (heads[0].id, heads[1].id);
    store.complete(a, Some("{\"ok\":1}".into())).await.unwrap();
    store
        .retry_later(b, 5_000, "Motion said 503".into())
        .await
        .unwrap();
    store.record_progress(b, 1).await.unwrap();
    store
        .record_sent("1".into(), "m.sent".into(), a)
        .await
        .unwrap();
    store
        .record_private_reply("1".into(), "1_9".into(), a)
        .await
        .unwrap();
    for i in &heads {
        store.release(Direction::Inbound, &i.page_id, &i.conversation);
    }
    note(
        "is our send",
        format!(
            "{:?}",
            store
                .is_our_send("1".into(), "m.sent".into())
                .await
                .unwrap()
        ),
    );
    note(
        "sent ids",
        format!("{:?}", store.sent_ids_of(a).await.unwrap()),
    );
    note(
        "private reply",
        format!(
            "{:?}",
            store
                .private_reply_owner("1".into(), "1_9".into())
                .await
                .unwrap()
                .is_some()
        ),
    );
    note(
        "thread",
        format!(
            "{:?}",
            store
                .wall_thread("1".into(), ConversationKey::post("1_9"))
                .await
                .unwrap()
        ),
    );
    note(
        "has thread",
        format!(
            "{:?}",
            store
                .has_thread("1".into(), ConversationKey::post("1_9"))
                .await
                .unwrap()
        ),
    );
    note(
        "activity",
        format!(
            "{:?}",
            store
                .last_customer_activity("1".into(), ConversationKey::customer("1"))
                .await
                .unwrap()
        ),
    );
    note(
        "payload",
        format!(
            "{:?}",
            store
                .payload_by_key("1".into(), DedupKey::message("2.1"))
                .await
                .unwrap()
        ),
    );
    // Referrals: one stored after the message it brought (an earlier Facebook time), one
    // before a second message, none in another conversation.
    let referral = |n: u64, ts: i64| NewItem {
        dedup_key: DedupKey::message(&format!("ref.{n}")),
        kind: ItemKind::Messaging(MessagingKind::Referral),
        payload: format!("{{\"referral\":{n}}}"),
        ..message(3, 100 + n, ts)
    };
    let customer3 = ConversationKey::customer("3");
    let mut referrals = Vec::new();
    for (items, ts) in [
        (vec![message(3, 1, 100), message(4, 1, 100)], 100),
        (vec![referral(1, 90)], 100),
        (vec![message(3, 2, 120)], 120),
        (vec![referral(2, 130), message(3, 3, 140)], 140),
    ] {
        store.intake(b"{r}".to_vec(), None, items).await.unwrap();
        for conversation in [customer3.clone(), ConversationKey::customer("4")] {
            referrals.push(
                store
                    .referral_before("1".into(), conversation, ts)
                    .await
                    .unwrap(),
            );
        }
    }
    note("referrals", format!("{referrals:?}"));
    let reply = NewItem {
        direction: Direction::Outbound,
        page_id: "1".into(),
        conversation: ConversationKey::customer("1"),
        dedup_key: DedupKey::motion_message("77"),
        kind: ItemKind::Reply,
        event_ts: 30,
        payload: "{}".into(),
        state: NewState::Pending,
    };
    let e1 = store.enqueue(reply.clone()).await.unwrap();
    let e2 = store.enqueue(reply).await.unwrap();
    note("enqueue", format!("{} {} {:?}", e1.new, e2.new, e2.state));
    let profile = crate::store::Profile {
        first_name: "Ada".into(),
        last_name: "L".into(),
        source: crate::model::NameSource::Graph,
        fetched_at: 5,
    };
    store
        .put_profile("1".into(), "1".into(), profile)
        .await
        .unwrap();
    note(
        "profile",
        format!("{:?}", store.profile("1".into(), "1".into()).await.unwrap()),
    );
    let seed = crate::config::Secret::new("IGAA-seed");
    let token = store
        .instagram_token("17".into(), seed.clone())
        .await
        .unwrap();
    store
        .put_refreshed_token(
            "17".into(),
            seed.clone(),
            crate::config::Secret::new("IGAA-new"),
            9,
        )
        .await
        .unwrap();
    store
        .refresh_failed("17".into(), "nope".into())
        .await
        .unwrap();
    let now = store.instagram_token("17".into(), seed).await.unwrap();
    note(
        "tokens",
        format!(
            "{} {} {:?} {:?}",
            token.is_seed,
            now.token.expose(),
            now.expires_at,
            now.last_error
        ),
    );
    store.fail(heads[2].id, "refused".into()).await.unwrap();
    note(
        "by state",
        format!("{:?}", store.count_by_state().await.unwrap()),
    );
    note(
        "queue stats",
        format!(
            "{:?}",
            store
                .queue_stats()
                .await
                .unwrap()
                .iter()
                .map(|q| (q.page_id.clone(), q.direction.clone(), q.pending))
                .collect::<Vec<_>>()
        ),
    );
    // The operator's view, from another connection.
    let operator = tokio::task::spawn_blocking(move || {
        let mut db = database();
        let c = db.sql();
        let stats: Vec<_> = queue::stats(&c)
            .unwrap()
            .into_iter()
            .map(|s| {
                (
                    s.page_id,
                    s.direction,
                    s.pending,
                    s.retrying,
                    s.failed,
                    s.done,
                )
            })
            .collect();
        let failed = queue::failed_ids(&c, None).unwrap();
        let listed: Vec<String> = queue::list(&c, &queue::Filter::default())
            .unwrap()
            .into_iter()
            .map(|r| format!("{} {}", r.kind, r.state))
            .collect();
        let latest = queue::latest_failure(&c).unwrap();
        let retried = queue::retry(&c, &failed).unwrap().len();
        let shown = queue::show(&c, failed[0]).unwrap().unwrap();
        let history: Vec<String> = shown
            .attempt_history
            .iter()
            .map(|a| a.outcome.clone())
            .collect();
        let dropped = queue::drop_items(&c, &failed).unwrap().len();
        let mut export = Vec::new();
        let counts = crate::store::transfer::export(&c, &mut export, 0).unwrap();
        format!("{stats:?} {listed:?} {latest:?} {retried} {history:?} {dropped} {counts:?}")
    })
    .await
    .unwrap();
    note("operator", operator);
    let pruned = store.prune(i64::MAX, 100).await.unwrap();
    note("pruned", format!("{pruned:?}"));
    // The counts kept (folded, on PostgreSQL) after the operator's retry and drop from
    // another connection, and the prune.
    let queue: Vec<_> = store
        .queue_stats()
        .await
        .unwrap()
        .into_iter()
        .map(|q| (q.page_id, q.direction, q.pending))
        .collect();
    note(
        "after",
        format!("{:?} {queue:?}", store.count_by_state().await.unwrap()),
    );
    out
}

/// The counts that server processes now gone kept in rows of their own are folded by
/// the retention pass, at its end: the rows stay as many as the connections open, and
/// the sums are what they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_pass_folds_the_counts_of_gone_connections() {
    let Some((pg, storage)) = server("fold") else {
        return;
    };
    let store = Store::open_postgres(&storage).unwrap();
    store
        .intake(
            b"{1}".to_vec(),
            None,
            vec![message(1, 1, 10), message(2, 1, 10)],
        )
        .await
        .unwrap();
    // An operator's connection changes an item, and goes. (The blocking client runs
    // off the test's runtime.)
    let url = pg.url("fold");
    // Rows kept by server processes that are gone.
    let rows_of_gone = move || {
        let url = url.clone();
        move || -> i64 {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client
                .query_one(
                    "SELECT COUNT(*) FROM item_counts
                      WHERE backend <> 0 AND backend NOT IN (SELECT pid FROM pg_stat_activity)",
                    &[],
                )
                .unwrap()
                .get(0)
        }
    };
    let url = pg.url("fold");
    tokio::task::spawn_blocking(move || {
        let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let gone: i32 = other
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        other
            .execute(
                "UPDATE items SET state = 'failed' WHERE dedup_key = 'mid:2.1'",
                &[],
            )
            .unwrap();
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let ended: bool = client
            .query_one("SELECT pg_terminate_backend($1, 10000)", &[&gone])
            .unwrap()
            .get(0);
        assert!(ended);
    })
    .await
    .unwrap();
    let left = tokio::task::spawn_blocking(rows_of_gone()).await.unwrap();
    assert_eq!(
        left, 2,
        "pending -1 and failed +1, kept by the gone connection"
    );
    let before = store.count_by_state().await.unwrap();

    let mut steps = 0;
    while store.prune(0, 100).await.unwrap().total() > 0 {
        steps += 1;
    }
    assert_eq!(steps, 0, "nothing is old enough to go");
    let left = tokio::task::spawn_blocking(rows_of_gone()).await.unwrap();
    assert_eq!(left, 0, "folded at the pass's end");
    assert_eq!(store.count_by_state().await.unwrap(), before);
    assert_eq!(
        before,
        vec![("failed".to_owned(), 1), ("pending".to_owned(), 1)]
    );
}

/// `sslmode=require`: TLS, the server's certificate verified against
/// `storage.ca_file`; a certificate that does not chain to it is refused, and said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_speaks_tls_and_verifies_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::sim::tls::generate(dir.path()).unwrap();
    let Some(pg) = PrivatePostgres::start_with_tls(&certs.cert_path, &certs.key_path).unwrap()
    else {
        eprintln!("{SKIPPED}");
        return;
    };
    pg.create_database("tls").unwrap();
    let mut storage = StorageConfig {
        backend: crate::config::Backend::Postgres,
        url: Some(crate::config::Secret::new(format!(
            "{}?sslmode=require",
            pg.url("tls")
        ))),
        path: dir.path().join("state/state.db"),
        ca_file: Some(certs.ca_path.clone()),
        ..StorageConfig::default()
    };
    let store = Store::open_postgres(&storage).unwrap();
    store
        .intake(b"{1}".to_vec(), None, vec![message(1, 1, 1)])
        .await
        .unwrap();
    let tls: bool = store
        .call(Access::Read, |c| {
            c.one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert!(tls, "the connection is TLS");
    drop(store);

    // Another CA: the server is not the one it claims to be.
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = crate::sim::tls::generate(&other_dir).unwrap();
    storage.ca_file = Some(other.ca_path.clone());
    let e = Store::open_postgres(&storage).err().unwrap().to_string();
    assert!(e.contains("certificate"), "{e}");
    println!("{e}");
}

/// Two nodes draining one queue at full speed: every item is delivered once, and
/// each conversation's items in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_draining_together_deliver_each_item_once_in_order() {
    let Some((_pg, storage)) = server("drain") else {
        return;
    };
    let nodes = [
        Store::open_postgres(&storage).unwrap(),
        Store::open_postgres(&storage).unwrap(),
    ];
    // 8 conversations of 25 messages, stored half by each node, in a shuffled order.
    let mut items: Vec<NewItem> = (0..8)
        .flat_map(|c| (0..25).map(move |n| message(c, n, 1000 + n as i64)))
        .collect();
    fastrand::shuffle(&mut items);
    for (i, chunk) in items.chunks(10).enumerate() {
        nodes[i % 2]
            .intake(format!("{{{i}}}").into_bytes(), None, chunk.to_vec())
            .await
            .unwrap();
    }
    let delivered = Arc::new(Mutex::new(Vec::<(String, i64, usize)>::new()));
    let mut workers = tokio::task::JoinSet::new();
    for (n, node) in nodes.iter().enumerate() {
        for _ in 0..3 {
            let (node, delivered) = (node.clone(), delivered.clone());
            workers.spawn(async move {
                let mut idle = 0;
                while idle < 50 {
                    let (got, _) = node
                        .claim_heads(Direction::Inbound, now_ms(), 2)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        idle += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    idle = 0;
                    for item in got {
                        delivered.lock().unwrap().push((
                            item.conversation.as_str().to_owned(),
                            item.event_ts,
                            n,
                        ));
                        node.complete(item.id, None).await.unwrap();
                        node.release(Direction::Inbound, &item.page_id, &item.conversation);
                    }
                }
            });
        }
    }
    while workers.join_next().await.is_some() {}
    let delivered = delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 200, "each item once");
    for c in 0..8 {
        let key = format!("psid:{c}");
        let order: Vec<i64> = delivered
            .iter()
            .filter(|(k, _, _)| *k == key)
            .map(|(_, ts, _)| *ts)
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "conversation {key} in order");
        assert_eq!(order.len(), 25);
    }
    let by_a = delivered.iter().filter(|d| d.2 == 0).count();
    assert!(by_a > 0 && by_a < 200, "both nodes delivered ({by_a} by A)");
}

/// A server that restarts: requests meanwhile fail at once with the reason, and the
/// store works again by itself once it is back; what was committed is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_fails_requests_meanwhile_and_the_store_recovers() {
    let Some((pg, storage)) = server("restart") else {
        return;
    };
    let store = Store::open_postgres(&storage).unwrap();
    store
        .intake(b"{1}".to_vec(), None, vec![message(1, 1, 1)])
        .await
        .unwrap();
    pg.crash().unwrap();
    let e = store
        .intake(b"{2}".to_vec(), None, vec![message(1, 2, 2)])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("PostgreSQL at 127.0.0.1:"), "{e}");
    assert!(store.stats().write_failure().is_some(), "/readyz sees it");
    pg.start_server().unwrap();
    // The server's own start and the store's reconnect backoff: seconds, more when the
    // machine is busy with the rest of the suite.
    let mut recovered = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        match store
            .intake(b"{2}".to_vec(), None, vec![message(1, 2, 2)])
            .await
        {
            Ok(o) => {
                recovered = Some(o);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(recovered.expect("recovers by itself").new, 1);
    assert!(store.stats().write_failure().is_none());
    // Every worker's connection from before the restart is broken, and most of them
    // are found so only by using it: none of that reaches a request once the server is
    // back (requests at once, to reach every worker).
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..4 * WORKERS {
        let store = store.clone();
        reads.spawn(async move { store.count_by_state().await });
    }
    while let Some(read) = reads.join_next().await {
        read.unwrap()
            .expect("no request fails once the server is back");
    }
    let states = store.count_by_state().await.unwrap();
    assert_eq!(states, vec![("pending".to_owned(), 2)]);
}

/// Work one node stores, the leases it ends at a stop and an operator's retry wake the
/// other node's dispatchers at once (`LISTEN`/`NOTIFY`), not at their next
/// once-a-second look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_on_one_node_wakes_the_other_at_once() {
    let Some((_pg, storage)) = server("wakes") else {
        return;
    };
    let a = Store::open_postgres(&storage).unwrap();
    let b = Store::open_postgres(&storage).unwrap();
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(a.clone().wake_other_nodes(stopping.clone()));
    tokio::spawn(b.clone().wake_other_nodes(stopping));
    let (b_in, b_out) = (b.wake(Direction::Inbound), b.wake(Direction::Outbound));
    let woken = |wake: Arc<tokio::sync::Notify>, what: &'static str| async move {
        tokio::time::timeout(Duration::from_secs(10), wake.notified())
            .await
            .unwrap_or_else(|_| panic!("node b was not woken: {what}"));
    };
    // Once listening, a node looks at the queue for what was stored meanwhile.
    woken(b_in.clone(), "its first look").await;
    woken(b_out.clone(), "its first look").await;

    // A webhook stored on node A.
    a.intake(b"{1}".to_vec(), None, vec![message(1, 1, 10)])
        .await
        .unwrap();
    a.new_work(Direction::Inbound);
    woken(b_in.clone(), "a webhook stored on node a").await;

    // Node A takes the conversation, then stops cleanly: its leases end, and B looks.
    let (taken, _) = a
        .claim_heads(Direction::Inbound, now_ms(), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(a.end_leases().await.unwrap(), 1);
    woken(b_out.clone(), "node a's leases ended").await;
    woken(b_in.clone(), "node a's leases ended").await;

    // An operator retries a failed item (`queue retry`, a process of its own).
    a.fail(taken[0].id, "Motion refused it".into())
        .await
        .unwrap();
    let (id, shared) = (taken[0].id, storage.clone());
    let retried = tokio::task::spawn_blocking(move || {
        let mut db = crate::store::queue::open_storage(&shared).unwrap();
        crate::store::queue::retry(&db.sql(), &[id]).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(retried, [id]);
    woken(b_in, "an operator's retry").await;
}
