//! Database settings and schema, versioned with `PRAGMA user_version`.

use rusqlite::Connection;

/// Migrations in order; entry N brings the schema from version N to N+1.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,          -- ms since the epoch
    body        BLOB    NOT NULL,          -- exactly the bytes Facebook signed
    parse_error TEXT                       -- why the body could not be read, if so
);
CREATE TABLE items (
    id               INTEGER PRIMARY KEY,
    direction        TEXT    NOT NULL,     -- 'in': Facebook -> Motion, 'out': Motion -> Facebook
    page_id          TEXT    NOT NULL,
    conversation     TEXT    NOT NULL,     -- 'psid:<id>' or 'post:<id>': delivered one at a time
    dedup_key        TEXT    NOT NULL,     -- 'mid:<mid>', ...: a redelivery finds its twin here
    kind             TEXT    NOT NULL,
    event_ts         INTEGER NOT NULL,     -- Facebook time, ms: the delivery order
    payload          TEXT    NOT NULL,
    webhook_id       INTEGER REFERENCES webhooks(id),
    state            TEXT    NOT NULL,     -- pending | done | skipped | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    steps_done       INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    first_failure_at INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (direction, page_id, dedup_key)
);
CREATE INDEX items_pending ON items (direction, page_id, conversation, event_ts, id)
    WHERE state = 'pending';
CREATE INDEX items_state ON items (state, updated_at);
CREATE TABLE profiles (
    page_id    TEXT NOT NULL,
    psid       TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name  TEXT NOT NULL,
    source     TEXT NOT NULL,              -- 'graph' or 'fallback'
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (page_id, psid)
);
"#,
    r#"
-- What a delivered item produced (e.g. the Graph message ids of a reply), as JSON.
ALTER TABLE items ADD COLUMN result TEXT;
-- Graph message ids of our own sends: their echoes are dropped quietly.
CREATE TABLE sent_messages (
    page_id    TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    item_id    INTEGER,
    sent_at    INTEGER NOT NULL,
    PRIMARY KEY (page_id, message_id)
);
CREATE INDEX items_conversation ON items (page_id, conversation, direction, event_ts);
"#,
    r#"
-- Facebook allows one private reply per comment or visitor post.
CREATE TABLE private_replies (
    page_id   TEXT    NOT NULL,
    object_id TEXT    NOT NULL,
    item_id   INTEGER,
    sent_at   INTEGER NOT NULL,
    PRIMARY KEY (page_id, object_id)
);
"#,
    r#"
-- Every delivery attempt of an item and how it ended, for `queue show`.
CREATE TABLE attempts (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    at      INTEGER NOT NULL,
    outcome TEXT    NOT NULL,               -- delivered | retry | failed | retried-by-operator
    error   TEXT
);
CREATE INDEX attempts_item ON attempts (item_id, at);
"#,
    r#"
-- The head of every conversation with pending work: its oldest pending item (by
-- Facebook time, then arrival). Triggers keep it exact in the same transaction as every
-- change to `items`, so the dispatcher finds due work with one small index range
-- instead of scanning every pending item (which took it to O(pending) per step).
CREATE TABLE heads (
    direction       TEXT    NOT NULL,
    page_id         TEXT    NOT NULL,
    conversation    TEXT    NOT NULL,
    item_id         INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    PRIMARY KEY (direction, page_id, conversation)
) WITHOUT ROWID;
CREATE INDEX heads_due ON heads (direction, next_attempt_at);

CREATE TRIGGER heads_after_insert AFTER INSERT ON items WHEN NEW.state = 'pending'
BEGIN
    INSERT OR REPLACE INTO heads (direction, page_id, conversation, item_id, next_attempt_at)
        SELECT direction, page_id, conversation, id, next_attempt_at FROM items
         WHERE state = 'pending' AND direction = NEW.direction AND page_id = NEW.page_id
           AND conversation = NEW.conversation
         ORDER BY event_ts, id LIMIT 1;
END;

CREATE TRIGGER heads_after_update AFTER UPDATE OF state, next_attempt_at, event_ts ON items
BEGIN
    DELETE FROM heads WHERE direction = NEW.direction AND page_id = NEW.page_id
        AND conversation = NEW.conversation;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at)
        SELECT direction, page_id, conversation, id, next_attempt_at FROM items
         WHERE state = 'pending' AND direction = NEW.direction AND page_id = NEW.page_id
           AND conversation = NEW.conversation
         ORDER BY event_ts, id LIMIT 1;
END;

CREATE TRIGGER heads_after_delete AFTER DELETE ON items WHEN OLD.state = 'pending'
BEGIN
    DELETE FROM heads WHERE direction = OLD.direction AND page_id = OLD.page_id
        AND conversation = OLD.conversation;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at)
        SELECT direction, page_id, conversation, id, next_attempt_at FROM items
         WHERE state = 'pending' AND direction = OLD.direction AND page_id = OLD.page_id
           AND conversation = OLD.conversation
         ORDER BY event_ts, id LIMIT 1;
END;

-- Heads of the work already queued when this version is installed.
INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at)
    SELECT i.direction, i.page_id, i.conversation, i.id, i.next_attempt_at FROM items i
     WHERE i.state = 'pending' AND i.id = (
        SELECT j.id FROM items j
         WHERE j.state = 'pending' AND j.direction = i.direction AND j.page_id = i.page_id
           AND j.conversation = i.conversation
         ORDER BY j.event_ts, j.id LIMIT 1);
"#,
    r#"
-- The head queries must walk the pending items only. Left to itself SQLite picked
-- items_conversation, which also holds every delivered item of the conversation: each
-- insert and each delivery cost O(history of the conversation).
DROP TRIGGER heads_after_insert;
DROP TRIGGER heads_after_update;
DROP TRIGGER heads_after_delete;

CREATE TRIGGER heads_after_insert AFTER INSERT ON items WHEN NEW.state = 'pending'
BEGIN
    INSERT OR REPLACE INTO heads (direction, page_id, conversation, item_id, next_attempt_at)
        SELECT direction, page_id, conversation, id, next_attempt_at
          FROM items INDEXED BY items_pending
         WHERE state = 'pending' AND direction = NEW.direction AND page_id = NEW.page_id
           AND conversation = NEW.conversation
         ORDER BY event_ts, id LIMIT 1;
END;

CREATE TRIGGER heads_after_update AFTER UPDATE OF state, next_attempt_at, event_ts ON items
BEGIN
    DELETE FROM heads WHERE direction = NEW.direction AND page_id = NEW.page_id
        AND conversation = NEW.conversation;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at)
        SELECT direction, page_id, conversation, id, next_attempt_at
          FROM items INDEXED BY items_pending
         WHERE state = 'pending' AND direction = NEW.direction AND page_id = NEW.page_id
           AND conversation = NEW.conversation
         ORDER BY event_ts, id LIMIT 1;
END;

CREATE TRIGGER heads_after_delete AFTER DELETE ON items WHEN OLD.state = 'pending'
BEGIN
    DELETE FROM heads WHERE direction = OLD.direction AND page_id = OLD.page_id
        AND conversation = OLD.conversation;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at)
        SELECT direction, page_id, conversation, id, next_attempt_at
          FROM items INDEXED BY items_pending
         WHERE state = 'pending' AND direction = OLD.direction AND page_id = OLD.page_id
           AND conversation = OLD.conversation
         ORDER BY event_ts, id LIMIT 1;
END;
"#,
    r#"
-- Fewer pages per commit. Every index keyed by conversation takes a page of its own per
-- conversation in a batch, and each such page is a 4 KiB WAL frame: items_conversation
-- (every item ever stored) made a third of the WAL. What it served now has its own:
-- the customer's latest action per conversation (the Messenger reply window) in a small
-- table kept by a trigger, and wall threads (where to answer) in a partial index.
-- items_state served no query; failed items get a partial index for `queue list --failed`.
DROP INDEX items_state;
CREATE INDEX items_failed ON items (id) WHERE state = 'failed';
DROP INDEX items_conversation;
CREATE INDEX items_wall ON items (page_id, conversation, event_ts)
    WHERE kind IN ('wall_post', 'wall_comment');
CREATE TABLE customer_activity (
    page_id      TEXT    NOT NULL,
    conversation TEXT    NOT NULL,
    last_ts      INTEGER NOT NULL,          -- Facebook time (ms) of the latest own action
    PRIMARY KEY (page_id, conversation)
) WITHOUT ROWID;
CREATE TRIGGER customer_activity_after_insert AFTER INSERT ON items
    WHEN NEW.direction = 'in' AND NEW.kind IN ('message', 'postback', 'edit', 'deleted',
                                               'reaction', 'referral', 'optin', 'standby')
BEGIN
    INSERT INTO customer_activity (page_id, conversation, last_ts)
        VALUES (NEW.page_id, NEW.conversation, NEW.event_ts)
        ON CONFLICT (page_id, conversation) DO UPDATE SET last_ts = MAX(last_ts, excluded.last_ts);
END;
INSERT INTO customer_activity (page_id, conversation, last_ts)
    SELECT page_id, conversation, MAX(event_ts) FROM items
     WHERE direction = 'in' AND kind IN ('message', 'postback', 'edit', 'deleted',
                                         'reaction', 'referral', 'optin', 'standby')
     GROUP BY page_id, conversation;
"#,
    r#"
-- Deleting an old webhook body makes SQLite check that no item refers to it: without
-- this index that check read every item, once per body.
CREATE INDEX items_webhook ON items (webhook_id);
"#,
    r#"
-- The head must move to an item that arrives with an earlier Facebook time. The old
-- trigger said INSERT OR REPLACE, but a trigger takes the conflict policy of the
-- statement that fires it — INSERT OR IGNORE at intake — so the head stayed on the later
-- item and it was delivered first (Facebook does deliver out of order).
DROP TRIGGER heads_after_insert;
CREATE TRIGGER heads_after_insert AFTER INSERT ON items WHEN NEW.state = 'pending'
BEGIN
    DELETE FROM heads WHERE direction = NEW.direction AND page_id = NEW.page_id
        AND conversation = NEW.conversation;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at)
        SELECT direction, page_id, conversation, id, next_attempt_at
          FROM items INDEXED BY items_pending
         WHERE state = 'pending' AND direction = NEW.direction AND page_id = NEW.page_id
           AND conversation = NEW.conversation
         ORDER BY event_ts, id LIMIT 1;
END;
"#,
    r#"
-- A webhook body is stored once per content: Facebook's redeliveries (and an attacker
-- replaying a captured signed body) point at the same row instead of adding one each
-- (1,000 replays stored 9.5 MB). Old rows keep a NULL digest (NULLs never collide).
ALTER TABLE webhooks ADD COLUMN digest BLOB;
CREATE UNIQUE INDEX webhooks_digest ON webhooks (digest);
"#,
    r#"
-- The index on digests cost a random B-tree leaf per webhook: 178 WAL frames per commit
-- of 64 webhooks instead of 100 (the intake's write volume +78 %). The store now finds
-- recent bodies by digest in memory (see `RecentBodies`) and checks the row by its id.
DROP INDEX IF EXISTS webhooks_digest;
"#,
    r#"
-- Instagram's reply window, like Messenger's, runs from the customer's latest own
-- action: its kinds (ig_…) count too. Rows for Instagram items stored before are added.
DROP TRIGGER customer_activity_after_insert;
CREATE TRIGGER customer_activity_after_insert AFTER INSERT ON items
    WHEN NEW.direction = 'in' AND NEW.kind IN ('message', 'postback', 'edit', 'deleted',
                                               'reaction', 'referral', 'optin', 'standby',
                                               'ig_message', 'ig_postback', 'ig_edit',
                                               'ig_deleted', 'ig_reaction', 'ig_referral',
                                               'ig_optin')
BEGIN
    INSERT INTO customer_activity (page_id, conversation, last_ts)
        VALUES (NEW.page_id, NEW.conversation, NEW.event_ts)
        ON CONFLICT (page_id, conversation) DO UPDATE SET last_ts = MAX(last_ts, excluded.last_ts);
END;
INSERT INTO customer_activity (page_id, conversation, last_ts)
    SELECT page_id, conversation, MAX(event_ts) FROM items
     WHERE direction = 'in' AND kind IN ('ig_message', 'ig_postback', 'ig_edit', 'ig_deleted',
                                         'ig_reaction', 'ig_referral', 'ig_optin')
     GROUP BY page_id, conversation
    ON CONFLICT (page_id, conversation) DO UPDATE SET last_ts = MAX(last_ts, excluded.last_ts);
"#,
    r#"
-- Comment threads are looked up the same way on the wall and on Instagram media (where
-- to answer, whether the thread is one we delivered): one partial index for both.
DROP INDEX items_wall;
CREATE INDEX items_threads ON items (page_id, conversation, event_ts)
    WHERE kind IN ('wall_post', 'wall_comment', 'ig_comment');
"#,
    r#"
-- Instagram Login tokens live 60 days and are refreshed by the daemon: the newest one is
-- kept here (the config keeps the one the operator pasted). `seed` is the SHA-256 of
-- that config token: when the operator pastes another, it replaces what is stored.
CREATE TABLE instagram_tokens (
    account      TEXT PRIMARY KEY,
    token        TEXT NOT NULL,
    seed         TEXT NOT NULL,
    obtained_at  INTEGER NOT NULL,
    expires_at   INTEGER,
    attempted_at INTEGER,
    last_error   TEXT
);
"#,
    r#"
-- Mentions of an Instagram account are threads too (one per media item mentioning it).
DROP INDEX items_threads;
CREATE INDEX items_threads ON items (page_id, conversation, event_ts)
    WHERE kind IN ('wall_post', 'wall_comment', 'ig_comment', 'ig_mention');
"#,
    r#"
-- A head carries its item's Facebook time, so that the dispatcher's
-- `ORDER BY next_attempt_at, event_ts, item_id LIMIT n` is read off one index in order.
-- Before, every claim joined each pending conversation's item and sorted them all
-- (EXPLAIN: USE TEMP B-TREE FOR ORDER BY): a burst of 25,000 new conversations drained
-- at 55 events/s, and intake waited behind those claims on the store thread.
ALTER TABLE heads ADD COLUMN event_ts INTEGER NOT NULL DEFAULT 0;
UPDATE heads SET event_ts = (SELECT event_ts FROM items WHERE items.id = heads.item_id);
DROP INDEX heads_due;
CREATE INDEX heads_due ON heads (direction, next_attempt_at, event_ts, item_id);

-- A reply retried resumes after the parts it already sent: their ids were found by
-- reading every sent id ever recorded.
CREATE INDEX sent_messages_item ON sent_messages (item_id, sent_at);

-- Where a customer came from (a referral since their previous message) was looked up by
-- reading every item of the page. A customer's turns — messages, buttons, referrals —
-- get an index of their own, walked back from the message being delivered.
CREATE INDEX items_turns ON items (page_id, conversation, event_ts)
    WHERE direction = 'in'
      AND kind IN ('message', 'postback', 'ig_message', 'ig_postback', 'referral', 'ig_referral');

DROP TRIGGER heads_after_insert;
DROP TRIGGER heads_after_update;
DROP TRIGGER heads_after_delete;
CREATE TRIGGER heads_after_insert AFTER INSERT ON items WHEN NEW.state = 'pending'
BEGIN
    DELETE FROM heads WHERE direction = NEW.direction AND page_id = NEW.page_id
        AND conversation = NEW.conversation;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at, event_ts)
        SELECT direction, page_id, conversation, id, next_attempt_at, event_ts
          FROM items INDEXED BY items_pending
         WHERE state = 'pending' AND direction = NEW.direction AND page_id = NEW.page_id
           AND conversation = NEW.conversation
         ORDER BY event_ts, id LIMIT 1;
END;
CREATE TRIGGER heads_after_update AFTER UPDATE OF state, next_attempt_at, event_ts ON items
BEGIN
    DELETE FROM heads WHERE direction = NEW.direction AND page_id = NEW.page_id
        AND conversation = NEW.conversation;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at, event_ts)
        SELECT direction, page_id, conversation, id, next_attempt_at, event_ts
          FROM items INDEXED BY items_pending
         WHERE state = 'pending' AND direction = NEW.direction AND page_id = NEW.page_id
           AND conversation = NEW.conversation
         ORDER BY event_ts, id LIMIT 1;
END;
CREATE TRIGGER heads_after_delete AFTER DELETE ON items WHEN OLD.state = 'pending'
BEGIN
    DELETE FROM heads WHERE direction = OLD.direction AND page_id = OLD.page_id
        AND conversation = OLD.conversation;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at, event_ts)
        SELECT direction, page_id, conversation, id, next_attempt_at, event_ts
          FROM items INDEXED BY items_pending
         WHERE state = 'pending' AND direction = OLD.direction AND page_id = OLD.page_id
           AND conversation = OLD.conversation
         ORDER BY event_ts, id LIMIT 1;
END;
"#,
    r#"
-- The customers' turns index held every message and button of every conversation, to find
-- a referral since the customer's previous message: a leaf written per event (a quarter
-- of the WAL frames at intake) for conversations that never had a referral. An item now
-- says whether it is a turn that matters: 2 for a referral, 1 for a message or button in
-- a conversation that has had one (set at intake, and on the pending ones when a
-- referral comes later), NULL otherwise; the index holds only those.
ALTER TABLE items ADD COLUMN turn INTEGER;
UPDATE items SET turn = 2 WHERE direction = 'in' AND kind IN ('referral', 'ig_referral');
DROP INDEX items_turns;
CREATE INDEX items_turns ON items (page_id, conversation, turn, event_ts) WHERE turn IS NOT NULL;
UPDATE items SET turn = 1
 WHERE direction = 'in' AND kind IN ('message', 'postback', 'ig_message', 'ig_postback')
   AND EXISTS (SELECT 1 FROM items r INDEXED BY items_turns
                WHERE r.page_id = items.page_id AND r.conversation = items.conversation
                  AND r.turn = 2);
"#,
    r#"
-- A new pending item becomes its conversation's head only when it comes before the head
-- there is (Facebook delivers out of order): the head is written in place instead of
-- deleted and found again through items_pending at every item stored. When the
-- conversation has no head, the item is it. Same head as before, fewer B-tree steps on
-- the store thread at every webhook.
DROP TRIGGER heads_after_insert;
CREATE TRIGGER heads_after_insert AFTER INSERT ON items WHEN NEW.state = 'pending'
BEGIN
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at, event_ts)
        VALUES (NEW.direction, NEW.page_id, NEW.conversation, NEW.id, NEW.next_attempt_at,
                NEW.event_ts)
        ON CONFLICT (direction, page_id, conversation) DO UPDATE
           SET item_id = excluded.item_id, next_attempt_at = excluded.next_attempt_at,
               event_ts = excluded.event_ts
         WHERE (excluded.event_ts, excluded.item_id) < (heads.event_ts, heads.item_id);
END;
"#,
    r#"
-- SQLite evaluates `kind IN (three or more constants)` by building a temporary B-tree,
-- at every row when it is a trigger's condition or a partial index's: 3 of them at every
-- item stored, a tenth of the daemon's instructions per event (cachegrind). The same
-- tests, written as comparisons.
DROP TRIGGER customer_activity_after_insert;
CREATE TRIGGER customer_activity_after_insert AFTER INSERT ON items
    WHEN NEW.direction = 'in'
     AND (NEW.kind = 'message' OR NEW.kind = 'postback' OR NEW.kind = 'edit'
          OR NEW.kind = 'deleted' OR NEW.kind = 'reaction' OR NEW.kind = 'referral'
          OR NEW.kind = 'optin' OR NEW.kind = 'standby' OR NEW.kind = 'ig_message'
          OR NEW.kind = 'ig_postback' OR NEW.kind = 'ig_edit' OR NEW.kind = 'ig_deleted'
          OR NEW.kind = 'ig_reaction' OR NEW.kind = 'ig_referral' OR NEW.kind = 'ig_optin')
BEGIN
    INSERT INTO customer_activity (page_id, conversation, last_ts)
        VALUES (NEW.page_id, NEW.conversation, NEW.event_ts)
        ON CONFLICT (page_id, conversation) DO UPDATE SET last_ts = MAX(last_ts, excluded.last_ts);
END;
-- Queries reach this index by the same condition, word for word (`store::memory`).
DROP INDEX items_threads;
CREATE INDEX items_threads ON items (page_id, conversation, event_ts)
    WHERE (kind = 'wall_post' OR kind = 'wall_comment' OR kind = 'ig_comment'
           OR kind = 'ig_mention');
"#,
    r#"
-- How many items are in each state, for /metrics: counted by reading every item kept
-- (the whole history, payloads included) on the store thread at every scrape, 0.25 s per
-- 300,000 items while every webhook waited. Kept here instead, in the transaction that
-- changes an item, whichever connection it comes from (the `queue` tools too).
CREATE TABLE item_states (
    state TEXT    PRIMARY KEY,
    items INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO item_states (state, items) SELECT state, COUNT(*) FROM items GROUP BY state;
CREATE TRIGGER item_states_after_insert AFTER INSERT ON items
BEGIN
    INSERT INTO item_states (state, items) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET items = items + 1;
END;
CREATE TRIGGER item_states_after_update AFTER UPDATE OF state ON items
    WHEN OLD.state <> NEW.state
BEGIN
    UPDATE item_states SET items = items - 1 WHERE state = OLD.state;
    INSERT INTO item_states (state, items) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET items = items + 1;
END;
CREATE TRIGGER item_states_after_delete AFTER DELETE ON items
BEGIN
    UPDATE item_states SET items = items - 1 WHERE state = OLD.state;
END;
"#,
    r#"
-- What /readyz and /metrics show of the queue: the pending items of each page and
-- direction, and the first of them stored. Counted by reading and sorting every pending
-- item on the store thread at every probe and scrape, 0.04 s at 30,000 pending while
-- every webhook waited, in the middle of a burst. The counts per state are kept per page
-- and direction now, by the same triggers, and the first pending item of a page is one
-- step down an index that holds the pending items alone.
DROP TRIGGER item_states_after_insert;
DROP TRIGGER item_states_after_update;
DROP TRIGGER item_states_after_delete;
DROP TABLE item_states;
CREATE TABLE item_counts (
    state     TEXT    NOT NULL,
    direction TEXT    NOT NULL,
    page_id   TEXT    NOT NULL,
    items     INTEGER NOT NULL,
    PRIMARY KEY (state, direction, page_id)
) WITHOUT ROWID;
INSERT INTO item_counts (state, direction, page_id, items)
    SELECT state, direction, page_id, COUNT(*) FROM items GROUP BY state, direction, page_id;
CREATE TRIGGER item_counts_after_insert AFTER INSERT ON items
BEGIN
    INSERT INTO item_counts (state, direction, page_id, items)
        VALUES (NEW.state, NEW.direction, NEW.page_id, 1)
        ON CONFLICT (state, direction, page_id) DO UPDATE SET items = items + 1;
END;
CREATE TRIGGER item_counts_after_update AFTER UPDATE OF state, direction, page_id ON items
    WHEN OLD.state <> NEW.state OR OLD.direction <> NEW.direction
      OR OLD.page_id <> NEW.page_id
BEGIN
    UPDATE item_counts SET items = items - 1
     WHERE state = OLD.state AND direction = OLD.direction AND page_id = OLD.page_id;
    INSERT INTO item_counts (state, direction, page_id, items)
        VALUES (NEW.state, NEW.direction, NEW.page_id, 1)
        ON CONFLICT (state, direction, page_id) DO UPDATE SET items = items + 1;
END;
CREATE TRIGGER item_counts_after_delete AFTER DELETE ON items
BEGIN
    UPDATE item_counts SET items = items - 1
     WHERE state = OLD.state AND direction = OLD.direction AND page_id = OLD.page_id;
END;
-- Queries reach this index by the same condition, word for word (`store::items`).
CREATE INDEX items_waiting ON items (direction, page_id, id) WHERE state = 'pending';
"#,
];

/// The page size of a database created by this version.
const PAGE_SIZE: i64 = 2048;

/// Durability settings and schema migrations. Run once when the database is opened.
pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    // 2 KiB pages for a new database (one that has them already keeps its own: WAL
    // mode fixes the size). What a webhook changes is a few rows in each of a dozen
    // B-trees (the dedup index, the reply windows, the heads, the counts), and every page
    // it touches is written whole to the WAL, then again to the database at the
    // checkpoint: at 16 connections 2 KiB pages wrote 9.4 KiB per event taken and
    // delivered against 15.5 KiB with SQLite's 4 KiB default, and the fsync every
    // webhook waits for has 40 % fewer bytes to carry. A payload over ~2 KiB spills into
    // an overflow page, read only when that event is delivered.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    // WAL lets readers (the `queue` tools) work beside the daemon; synchronous = FULL
    // fsyncs the WAL at every commit, which is what makes an acknowledgement safe.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The store's own checkpoint thread does this, outside the writer's commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // After a burst, a WAL that starts over is cut back to 64 MiB.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;

    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{StatementStatus, params};

    /// SQLite virtual-machine steps of one statement.
    fn steps(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> i32 {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.execute(args).unwrap();
        stmt.get_status(StatementStatus::VmStep)
    }

    /// An item that arrives later with an earlier Facebook time becomes the head, also
    /// when it is stored with INSERT OR IGNORE (as intake does) and the current head is
    /// waiting for a retry.
    #[test]
    fn an_earlier_message_arriving_later_becomes_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        prepare(&conn).unwrap();
        let insert = "INSERT OR IGNORE INTO items (direction, page_id, conversation, dedup_key,
                        kind, event_ts, payload, state, created_at, updated_at)
                      VALUES ('in', 'p', 'psid:1', ?1, 'message', ?2, '{}', 'pending', 0, 0)";
        let head = |conn: &Connection| -> (i64, i64) {
            conn.query_row(
                "SELECT item_id, next_attempt_at FROM heads WHERE conversation = 'psid:1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        conn.execute(insert, params!["m2", 2000]).unwrap();
        conn.execute("UPDATE items SET next_attempt_at = 99 WHERE id = 1", [])
            .unwrap();
        assert_eq!(head(&conn), (1, 99));
        conn.execute(insert, params!["m3", 3000]).unwrap();
        assert_eq!(
            head(&conn),
            (1, 99),
            "a later message leaves the head alone"
        );
        conn.execute(insert, params!["m0", 0]).unwrap();
        assert_eq!(
            head(&conn),
            (3, 0),
            "the earlier message is the head, due now"
        );
        // At the same Facebook time the lower id comes first, whatever order the ids
        // are stored in (an import stores items beside the ones there are).
        let with_id = "INSERT INTO items (id, direction, page_id, conversation, dedup_key,
                         kind, event_ts, payload, state, created_at, updated_at)
                       VALUES (?1, 'in', 'p', 'psid:2', ?2, 'message', 5, '{}', 'pending', 0, 0)";
        let head_of_2 = |conn: &Connection| -> i64 {
            conn.query_row(
                "SELECT item_id FROM heads WHERE conversation = 'psid:2'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        conn.execute(with_id, params![100, "t100"]).unwrap();
        conn.execute(with_id, params![50, "t50"]).unwrap();
        assert_eq!(
            head_of_2(&conn),
            50,
            "the lower id at the same time is first"
        );
        conn.execute(with_id, params![101, "t101"]).unwrap();
        assert_eq!(head_of_2(&conn), 50, "a higher id at the same time is not");
        conn.execute("UPDATE items SET state = 'done' WHERE id = 50", [])
            .unwrap();
        assert_eq!(head_of_2(&conn), 100, "then the next by time and id");
        assert_eq!(head(&conn), (3, 0), "the other conversation kept its head");
    }

    /// A database in `dir` at the schema before the migration that contains `marker`,
    /// and that migration's place in [`MIGRATIONS`].
    fn migrated_up_to(dir: &std::path::Path, marker: &str) -> (Connection, usize) {
        let conn = Connection::open(dir.join("state.db")).unwrap();
        let at = MIGRATIONS.iter().position(|m| m.contains(marker)).unwrap();
        for migration in &MIGRATIONS[..at] {
            conn.execute_batch(migration).unwrap();
        }
        (conn, at)
    }

    /// The rows of a query of two columns.
    fn pairs<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
        conn: &Connection,
        sql: &str,
    ) -> Vec<(A, B)> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A queue stored before turns were marked gets them when it is migrated: its
    /// referrals, and the messages of their conversations, so that a message still
    /// waiting gets its referral; other conversations' messages stay out of the index.
    #[test]
    fn a_queue_from_before_gets_its_turns() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, turns_at) = migrated_up_to(dir.path(), "ADD COLUMN turn");
        let last = MIGRATIONS[turns_at];
        let insert = "INSERT INTO items (direction, page_id, conversation, dedup_key, kind,
                        event_ts, payload, state, created_at, updated_at)
                      VALUES ('in', 'p', ?1, ?2, ?3, ?4, '{}', 'pending', 0, 0)";
        for (conversation, key, kind, ts) in [
            ("psid:a", "r", "referral", 1),
            ("psid:a", "m1", "message", 2),
            ("psid:a", "m2", "reaction", 3),
            ("psid:b", "m3", "message", 2),
        ] {
            conn.execute(insert, params![conversation, key, kind, ts])
                .unwrap();
        }
        conn.execute_batch(last).unwrap();
        let turns: Vec<(String, Option<i64>)> =
            pairs(&conn, "SELECT dedup_key, turn FROM items ORDER BY id");
        assert_eq!(
            turns,
            [
                ("r".to_owned(), Some(2)),
                ("m1".to_owned(), Some(1)),
                ("m2".to_owned(), None),
                ("m3".to_owned(), None)
            ]
        );
    }

    /// A database from before the counts were kept gets them counted once, when it is
    /// migrated (through the counts per state alone, then per page and direction); from
    /// then on the triggers keep them.
    #[test]
    fn a_database_from_before_gets_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, kept_at) = migrated_up_to(dir.path(), "CREATE TABLE item_states");
        let insert = "INSERT INTO items (direction, page_id, conversation, dedup_key, kind,
                        event_ts, payload, state, created_at, updated_at)
                      VALUES (?1, ?2, 'psid:a', ?3, 'message', 1, '{}', ?4, 0, 0)";
        for (direction, page, key, state) in [
            ("in", "p", "m1", "done"),
            ("in", "p", "m2", "done"),
            ("in", "p", "m3", "pending"),
            ("in", "p", "m4", "failed"),
            ("out", "p", "r1", "pending"),
            ("in", "q", "m5", "pending"),
        ] {
            conn.execute(insert, params![direction, page, key, state])
                .unwrap();
        }
        for migration in &MIGRATIONS[kept_at..] {
            conn.execute_batch(migration).unwrap();
        }
        conn.execute("UPDATE items SET state = 'done' WHERE dedup_key = 'm3'", [])
            .unwrap();
        let kept: Vec<(String, i64)> = pairs(
            &conn,
            "SELECT state || ' ' || direction || ' ' || page_id, items FROM item_counts
              ORDER BY 1",
        );
        let count = |key: &str, n: i64| (key.to_owned(), n);
        assert_eq!(
            kept,
            [
                count("done in p", 3),
                count("failed in p", 1),
                count("pending in p", 0),
                count("pending in q", 1),
                count("pending out p", 1),
            ]
        );
    }

    /// SQLite evaluates `x IN ('a', 'b', 'c')` by building a temporary B-tree each time
    /// it runs; in a trigger's condition or body, or a partial index's condition, that is
    /// at every row written. None of the schema's tests a list of constants.
    #[test]
    fn no_trigger_or_partial_index_tests_a_list_of_constants() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        prepare(&conn).unwrap();
        let lists: Vec<String> = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE type IN ('trigger', 'index')")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .filter_map(|(name, sql)| {
                let words = sql?.split_whitespace().collect::<Vec<_>>().join(" ");
                words.to_uppercase().contains("IN ('").then_some(name)
            })
            .collect();
        assert!(lists.is_empty(), "{lists:?}");
    }

    /// Every index is a B-tree leaf written per commit; one keyed by random digests a
    /// leaf per webhook. The intake writes the webhooks table by rowid alone.
    #[test]
    fn webhooks_carry_no_index_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        prepare(&conn).unwrap();
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'webhooks'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(indexes.is_empty(), "{indexes:?}");
    }

    /// Keeping the head of a conversation costs the same with 5,000 delivered messages
    /// behind it as with none: the triggers walk pending items only.
    #[test]
    fn head_upkeep_does_not_walk_the_history_of_a_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        prepare(&conn).unwrap();
        let insert = "INSERT INTO items (direction, page_id, conversation, dedup_key, kind,
                        event_ts, payload, state, created_at, updated_at)
                      VALUES ('in', 'p', 'psid:1', ?1, 'message', ?2, '{}', ?3, 0, 0)";
        let cost = |conn: &Connection, key: &str, ts: i64| {
            let added = steps(conn, insert, params![key, ts, "pending"]);
            let id = conn.last_insert_rowid();
            let done = steps(
                conn,
                "UPDATE items SET state = 'done' WHERE id = ?1",
                params![id],
            );
            added + done
        };
        let fresh = cost(&conn, "first", 1);
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..5000 {
            tx.execute(insert, params![format!("old-{i}"), 10 + i, "done"])
                .unwrap();
        }
        tx.commit().unwrap();
        let with_history = cost(&conn, "last", 100_000);
        assert!(
            with_history < fresh * 2,
            "{with_history} steps with history vs {fresh} without"
        );
        let heads: i64 = conn
            .query_row("SELECT COUNT(*) FROM heads", [], |r| r.get(0))
            .unwrap();
        assert_eq!(heads, 0);
    }
}
