//! Delivery to Motion: outages, retries, permanent errors, order, concurrency.

use std::sync::atomic::Ordering;
use std::time::Duration;

use fb_openchannel::sim::facebook::messenger_text;
use fb_openchannel::sim::motion::Mode;

use crate::harness::*;
use crate::wait_until;
use fb_openchannel::model::ItemState;

#[tokio::test]
async fn motion_down_for_a_while_then_up_gets_every_message_once_in_order() {
    let bench = Bench::start().await;
    bench.motion().down().await;
    // Two customers, five messages each, posted out of Facebook-time order.
    let customers = ["1001", "1002"];
    let mut sends = Vec::new();
    for (c, psid) in customers.iter().enumerate() {
        bench.peers.graph.add_profile(psid, "C", psid);
        for i in 0..5i64 {
            sends.push((
                psid.to_string(),
                1_700_000_000_000 + i * 1000 + c as i64,
                format!("{psid} message {i}"),
            ));
        }
    }
    sends.reverse();
    sends.swap(1, 7);
    for (k, (psid, ts, text)) in sends.iter().enumerate() {
        bench
            .deliver(&messenger_text(
                PAGE_A,
                psid,
                &format!("mid.{k}"),
                *ts,
                text,
            ))
            .await;
    }
    // The daemon is really retrying against a dead Motion before it comes back.
    let store = bench.daemon().shared.store.clone();
    wait_until("some item has failed twice", WAIT, || {
        let store = store.clone();
        async move { store.items().await.unwrap().iter().any(|i| i.attempts >= 2) }
    })
    .await;
    bench.motion().up().await;

    let notes = bench.motion().wait_for_notifies(10, WAIT).await.unwrap();
    assert_eq!(notes.len(), 10);
    for psid in customers {
        let got: Vec<_> = notes
            .iter()
            .filter(|n| n.notify.from == psid)
            .map(|n| n.notify.body.clone())
            .collect();
        let want: Vec<_> = (0..5).map(|i| format!("{psid} message {i}")).collect();
        assert_eq!(
            got, want,
            "customer {psid}: each once, in Facebook time order"
        );
    }
    bench
        .wait_items("every item is done", |items| {
            items.iter().all(|i| i.state == ItemState::Done)
        })
        .await;
    bench.stop().await;
}

#[tokio::test]
async fn motion_errors_5xx_are_retried_and_delivered_once() {
    let bench = Bench::start().await;
    bench.motion().fail_next(3, 503);
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.retry",
            1,
            "after three 503s",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].notify.body, "after three 503s");
    let store = bench.daemon().shared.store.clone();
    wait_until("the item is done", WAIT, || {
        let store = store.clone();
        async move { store.items().await.unwrap()[0].state == ItemState::Done }
    })
    .await;
    assert_eq!(
        bench.items().await[0].attempts,
        4,
        "three failures, then the success"
    );
    // Nothing more arrives: a later message of the same customer is the second notify.
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "m.next", 2, "next"))
        .await;
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes.len(), 2);
    bench.stop().await;
}

#[tokio::test]
async fn a_permanent_motion_error_parks_the_item_and_the_conversation_goes_on() {
    let bench = Bench::start().await;
    bench.motion().fail_next(1, 400);
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "m.bad",
            1,
            "rejected by Motion",
        ))
        .await;
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "m.good", 2, "accepted"))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, "accepted");
    let items = bench.items().await;
    assert_eq!(items[0].state, ItemState::Failed);
    let reason = items[0].last_error.clone().unwrap();
    assert!(reason.contains("Motion answered 400"), "{reason}");
    assert!(
        !reason.contains(RECEIVE_TOKEN_A),
        "the Receive URL's token is masked: {reason}"
    );
    bench.stop().await;
}

#[tokio::test]
async fn garbage_from_motion_with_200_counts_as_delivered() {
    // DESIGN §3: any 2xx is accepted; Motion's notify answer carries nothing we need.
    let bench = Bench::start().await;
    bench.motion().set_mode(Mode::Garbage);
    bench
        .deliver(&messenger_text(PAGE_A, PSID, "m.g", 1, "hi"))
        .await;
    let store = bench.daemon().shared.store.clone();
    wait_until("the item is done", WAIT, || {
        let store = store.clone();
        async move {
            store
                .items()
                .await
                .unwrap()
                .iter()
                .all(|i| i.state == ItemState::Done)
        }
    })
    .await;
    bench.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_webhooks_are_all_acknowledged_delivered_and_share_fsyncs() {
    let bench = Bench::start().await;
    // Motion holds the first call, so the worker writes nothing while webhooks arrive.
    bench.motion().set_mode(Mode::Hang);
    let store = bench.daemon().shared.store.clone();
    let commits_before = store.stats().write_commits.load(Ordering::Relaxed);

    // Another process holds the database's write lock (as a backup tool or the `queue`
    // command may), so every webhook arrives while the first one's commit waits: whatever
    // the speed of this machine's disk and network, they are all in line at once.
    let side = rusqlite::Connection::open(store.path()).unwrap();
    side.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50i64 {
        let sender = fb_openchannel::sim::facebook::WebhookSender::new(
            &bench.webhook_url(),
            APP_SECRET,
            Some(&bench.peers.certs.ca_pem),
        );
        tasks.spawn(async move {
            let body = messenger_text(
                PAGE_A,
                PSID,
                &format!("mid.c{i}"),
                1_700_000_000_000 + i,
                &format!("message {i:02}"),
            );
            sender.send(body.as_bytes()).await.unwrap().0
        });
    }
    // The store waits up to 5 s for the lock; the webhooks are in line well before that.
    wait_until(
        "49 webhooks wait behind the first one",
        Duration::from_secs(4),
        || {
            let store = store.clone();
            async move { store.stats().waiting.load(Ordering::Relaxed) >= 49 }
        },
    )
    .await;
    side.execute_batch("COMMIT").unwrap();

    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let commits = store.stats().write_commits.load(Ordering::Relaxed) - commits_before;
    // The first webhook's commit, then one for all who waited behind it (a read of the
    // dispatcher may have been in line too, leaving one webhook for a third).
    assert!(
        commits <= 3,
        "50 webhooks took {commits} fsyncs: no group commit"
    );
    println!("50 concurrent webhooks: {commits} write commits");

    bench.motion().set_mode(Mode::Accept);
    let notes = bench.motion().wait_for_notifies(50, WAIT).await.unwrap();
    let bodies: Vec<_> = notes.iter().map(|n| n.notify.body.clone()).collect();
    let want: Vec<_> = (0..50).map(|i| format!("message {i:02}")).collect();
    assert_eq!(bodies, want, "all delivered once, in order");
    bench.stop().await;
}

#[tokio::test]
async fn different_conversations_are_delivered_in_parallel() {
    let bench = Bench::start().await;
    // One customer's delivery hangs in Motion; another customer's message still gets through.
    bench.motion().hang_for(Some("2001"));
    bench
        .deliver(&messenger_text(PAGE_A, "2001", "h1", 1, "stuck"))
        .await;
    bench
        .deliver(&messenger_text(PAGE_A, "2002", "h2", 2, "free"))
        .await;
    let notes = bench.motion().wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, "free");
    bench.motion().hang_for(None);
    let notes = bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes[1].notify.body, "stuck");
    bench.stop().await;
}

/// `storage.keep`: delivered history older than it goes, with its webhook body; recent
/// history stays and still recognises Facebook's redeliveries.
#[tokio::test]
async fn history_older_than_storage_keep_is_deleted_and_recent_history_still_dedups() {
    let bench = Bench::start().await;
    let (old, new) = (
        messenger_text(PAGE_A, PSID, "mid.old", 1_700_000_000_000, "old"),
        messenger_text(PAGE_A, PSID, "mid.new", 1_700_000_001_000, "new"),
    );
    bench.deliver(&old).await;
    bench.deliver(&new).await;
    bench.motion().wait_for_notifies(2, WAIT).await.unwrap();
    let store = bench.daemon().shared.store.clone();
    wait_until("both delivered", WAIT, || {
        let store = store.clone();
        async move {
            store
                .items()
                .await
                .unwrap()
                .iter()
                .all(|i| i.state == ItemState::Done)
        }
    })
    .await;

    // The first message (and the body it came in) is made a year old.
    let side = rusqlite::Connection::open(store.path()).unwrap();
    let year_ago = fb_openchannel::store::now_ms() - 365 * 86_400_000;
    side.execute(
        "UPDATE webhooks SET received_at = ?1
          WHERE id = (SELECT webhook_id FROM items WHERE dedup_key = 'mid:mid.old')",
        [year_ago],
    )
    .unwrap();
    side.execute(
        "UPDATE items SET created_at = ?1, updated_at = ?1 WHERE dedup_key = 'mid:mid.old'",
        [year_ago],
    )
    .unwrap();

    let pruned = fb_openchannel::relay::retention::prune_now(&bench.daemon().shared).await;
    assert_eq!((pruned.items, pruned.webhooks), (1, 1), "{pruned:?}");
    let left: Vec<_> = store.items().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(store.webhook_count().await.unwrap(), 1);

    // Facebook sends the recent one again: still recognised, not delivered twice.
    bench.deliver(&new).await;
    bench
        .deliver(&messenger_text(
            PAGE_A,
            PSID,
            "mid.after",
            1_700_000_002_000,
            "after",
        ))
        .await;
    let notes = bench.motion().wait_for_notifies(3, WAIT).await.unwrap();
    let bodies: Vec<_> = notes.iter().map(|n| n.notify.body.as_str()).collect();
    assert_eq!(bodies, ["old", "new", "after"]);
    bench.stop().await;
}
