//! The schema on PostgreSQL: the same tables as on SQLite (see `schema.rs` for why each
//! is as it is), in PostgreSQL's types, versioned in `fb_openchannel_schema`.
//!
//! Differences: ids are `BIGSERIAL`; tables SQLite orders by its hidden `rowid` have a
//! column of that name; the triggers are functions, and the head of a conversation is
//! recomputed under a transaction-level advisory lock on that conversation, so two nodes
//! storing items of one conversation at the same moment still agree on its head.

use super::sql::DbError;

/// Migrations in order; entry N brings the schema from version N to N+1.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE webhooks (
    id          BIGSERIAL PRIMARY KEY,
    received_at BIGINT NOT NULL,
    body        BYTEA  NOT NULL,
    parse_error TEXT,
    digest      BYTEA
);
CREATE TABLE items (
    id               BIGSERIAL PRIMARY KEY,
    direction        TEXT   NOT NULL,
    page_id          TEXT   NOT NULL,
    conversation     TEXT   NOT NULL,
    dedup_key        TEXT   NOT NULL,
    kind             TEXT   NOT NULL,
    event_ts         BIGINT NOT NULL,
    payload          TEXT   NOT NULL,
    webhook_id       BIGINT REFERENCES webhooks(id),
    state            TEXT   NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    steps_done       BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL DEFAULT 0,
    first_failure_at BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    result           TEXT,
    UNIQUE (direction, page_id, dedup_key)
);
CREATE INDEX items_pending ON items (direction, page_id, conversation, event_ts, id)
    WHERE state = 'pending';
CREATE INDEX items_failed ON items (id) WHERE state = 'failed';
CREATE INDEX items_webhook ON items (webhook_id);
CREATE INDEX items_threads ON items (page_id, conversation, event_ts)
    WHERE kind IN ('wall_post', 'wall_comment', 'ig_comment', 'ig_mention');
CREATE TABLE profiles (
    page_id    TEXT   NOT NULL,
    psid       TEXT   NOT NULL,
    first_name TEXT   NOT NULL,
    last_name  TEXT   NOT NULL,
    source     TEXT   NOT NULL,
    fetched_at BIGINT NOT NULL,
    rowid      BIGSERIAL,
    PRIMARY KEY (page_id, psid)
);
CREATE TABLE sent_messages (
    page_id    TEXT   NOT NULL,
    message_id TEXT   NOT NULL,
    item_id    BIGINT,
    sent_at    BIGINT NOT NULL,
    rowid      BIGSERIAL,
    PRIMARY KEY (page_id, message_id)
);
CREATE INDEX sent_messages_item ON sent_messages (item_id);
CREATE TABLE private_replies (
    page_id   TEXT   NOT NULL,
    object_id TEXT   NOT NULL,
    item_id   BIGINT,
    sent_at   BIGINT NOT NULL,
    rowid     BIGSERIAL,
    PRIMARY KEY (page_id, object_id)
);
CREATE TABLE attempts (
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    at      BIGINT NOT NULL,
    outcome TEXT   NOT NULL,
    error   TEXT,
    rowid   BIGSERIAL
);
CREATE INDEX attempts_item ON attempts (item_id, at);
CREATE TABLE heads (
    direction       TEXT   NOT NULL,
    page_id         TEXT   NOT NULL,
    conversation    TEXT   NOT NULL,
    item_id         BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    PRIMARY KEY (direction, page_id, conversation)
);
CREATE INDEX heads_due ON heads (direction, next_attempt_at);
CREATE TABLE customer_activity (
    page_id      TEXT   NOT NULL,
    conversation TEXT   NOT NULL,
    last_ts      BIGINT NOT NULL,
    PRIMARY KEY (page_id, conversation)
);
CREATE TABLE instagram_tokens (
    account      TEXT PRIMARY KEY,
    token        TEXT   NOT NULL,
    seed         TEXT   NOT NULL,
    obtained_at  BIGINT NOT NULL,
    expires_at   BIGINT,
    attempted_at BIGINT,
    last_error   TEXT
);
-- Conversations a node is delivering: a lease that the node renews while it lives and
-- that runs out when it dies, so that the other node takes the conversation over.
CREATE TABLE claims (
    direction    TEXT   NOT NULL,
    page_id      TEXT   NOT NULL,
    conversation TEXT   NOT NULL,
    holder       TEXT   NOT NULL,
    until        BIGINT NOT NULL,
    token        BIGINT NOT NULL,              -- which lease of the holder: a late release
                                               -- never ends a newer one
    PRIMARY KEY (direction, page_id, conversation)
);
CREATE INDEX claims_holder ON claims (holder);

CREATE FUNCTION fb_head_upkeep(d TEXT, p TEXT, c TEXT) RETURNS void AS $$
BEGIN
    -- One transaction at a time per conversation: the next one sees this one's items.
    PERFORM pg_advisory_xact_lock(hashtextextended(d || ' ' || p || ' ' || c, 0));
    DELETE FROM heads WHERE direction = d AND page_id = p AND conversation = c;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at)
        SELECT direction, page_id, conversation, id, next_attempt_at FROM items
         WHERE state = 'pending' AND direction = d AND page_id = p AND conversation = c
         ORDER BY event_ts, id LIMIT 1;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION fb_items_inserted() RETURNS trigger AS $$
BEGIN
    IF NEW.state = 'pending' THEN
        PERFORM fb_head_upkeep(NEW.direction, NEW.page_id, NEW.conversation);
    END IF;
    IF NEW.direction = 'in' AND NEW.kind IN ('message', 'postback', 'edit', 'deleted',
            'reaction', 'referral', 'optin', 'standby', 'ig_message', 'ig_postback',
            'ig_edit', 'ig_deleted', 'ig_reaction', 'ig_referral', 'ig_optin') THEN
        INSERT INTO customer_activity (page_id, conversation, last_ts)
            VALUES (NEW.page_id, NEW.conversation, NEW.event_ts)
            ON CONFLICT (page_id, conversation)
            DO UPDATE SET last_ts = GREATEST(customer_activity.last_ts, excluded.last_ts);
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER items_inserted AFTER INSERT ON items
    FOR EACH ROW EXECUTE FUNCTION fb_items_inserted();

CREATE FUNCTION fb_items_updated() RETURNS trigger AS $$
BEGIN
    PERFORM fb_head_upkeep(NEW.direction, NEW.page_id, NEW.conversation);
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER items_updated AFTER UPDATE OF state, next_attempt_at, event_ts ON items
    FOR EACH ROW EXECUTE FUNCTION fb_items_updated();

CREATE FUNCTION fb_items_deleted() RETURNS trigger AS $$
BEGIN
    IF OLD.state = 'pending' THEN
        PERFORM fb_head_upkeep(OLD.direction, OLD.page_id, OLD.conversation);
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER items_deleted AFTER DELETE ON items
    FOR EACH ROW EXECUTE FUNCTION fb_items_deleted();
"#,
    r#"
-- A head carries its item's Facebook time: the claim's ORDER BY … LIMIT is read off
-- heads_due in order instead of joining and sorting every pending conversation.
ALTER TABLE heads ADD COLUMN event_ts BIGINT NOT NULL DEFAULT 0;
UPDATE heads SET event_ts = items.event_ts FROM items WHERE items.id = heads.item_id;
DROP INDEX heads_due;
CREATE INDEX heads_due ON heads (direction, next_attempt_at, event_ts, item_id);
-- SQLite's indexes end with the row's id; these give PostgreSQL the same order.
DROP INDEX sent_messages_item;
CREATE INDEX sent_messages_item ON sent_messages (item_id, sent_at, rowid);
DROP INDEX items_threads;
CREATE INDEX items_threads ON items (page_id, conversation, event_ts, id)
    WHERE kind IN ('wall_post', 'wall_comment', 'ig_comment', 'ig_mention');
CREATE INDEX items_turns ON items (page_id, conversation, event_ts, id)
    WHERE direction = 'in'
      AND kind IN ('message', 'postback', 'ig_message', 'ig_postback', 'referral', 'ig_referral');
CREATE OR REPLACE FUNCTION fb_head_upkeep(d TEXT, p TEXT, c TEXT) RETURNS void AS $$
BEGIN
    -- One transaction at a time per conversation: the next one sees this one's items.
    PERFORM pg_advisory_xact_lock(hashtextextended(d || ' ' || p || ' ' || c, 0));
    DELETE FROM heads WHERE direction = d AND page_id = p AND conversation = c;
    INSERT INTO heads (direction, page_id, conversation, item_id, next_attempt_at, event_ts)
        SELECT direction, page_id, conversation, id, next_attempt_at, event_ts FROM items
         WHERE state = 'pending' AND direction = d AND page_id = p AND conversation = c
         ORDER BY event_ts, id LIMIT 1;
END $$ LANGUAGE plpgsql;
"#,
    r#"
-- Turns: only referrals and the messages of conversations that had one (see schema.rs).
ALTER TABLE items ADD COLUMN turn INTEGER;
UPDATE items SET turn = 2 WHERE direction = 'in' AND kind IN ('referral', 'ig_referral');
DROP INDEX items_turns;
CREATE INDEX items_turns ON items (page_id, conversation, turn, event_ts, id)
    WHERE turn IS NOT NULL;
UPDATE items SET turn = 1
 WHERE direction = 'in' AND kind IN ('message', 'postback', 'ig_message', 'ig_postback')
   AND EXISTS (SELECT 1 FROM items r
                WHERE r.page_id = items.page_id AND r.conversation = items.conversation
                  AND r.turn = 2);
"#,
    r#"
-- What /readyz and /metrics show: the items per state, direction and page, and the first
-- pending item of a page. Counted at every probe and scrape (0.34 s with 130,000 items in
-- the benchmark's drain, and growing with the history kept). One count that every
-- writer of both hosts updated would make them wait for each other, and could deadlock
-- two that change items of two states in opposite orders: each server process (a
-- connection of a host's pool) keeps its own row of each count instead, so no two
-- transactions ever write one row; a read sums them, and the prune moves the rows of
-- processes gone into the row of none (0).
CREATE TABLE item_counts (
    state     TEXT    NOT NULL,
    direction TEXT    NOT NULL,
    page_id   TEXT    NOT NULL,
    backend   INTEGER NOT NULL,
    items     BIGINT  NOT NULL,
    PRIMARY KEY (state, direction, page_id, backend)
);
-- Writers (another host still on the release before) wait until this commits, so the
-- count below misses no change.
LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE;
-- Kept by the triggers that already run for each item written: a trigger more would cost
-- its call at every row. (An item's direction and page never change.)
CREATE OR REPLACE FUNCTION fb_items_inserted() RETURNS trigger AS $$
BEGIN
    IF NEW.state = 'pending' THEN
        PERFORM fb_head_upkeep(NEW.direction, NEW.page_id, NEW.conversation);
    END IF;
    IF NEW.direction = 'in' AND NEW.kind IN ('message', 'postback', 'edit', 'deleted',
            'reaction', 'referral', 'optin', 'standby', 'ig_message', 'ig_postback',
            'ig_edit', 'ig_deleted', 'ig_reaction', 'ig_referral', 'ig_optin') THEN
        INSERT INTO customer_activity (page_id, conversation, last_ts)
            VALUES (NEW.page_id, NEW.conversation, NEW.event_ts)
            ON CONFLICT (page_id, conversation)
            DO UPDATE SET last_ts = GREATEST(customer_activity.last_ts, excluded.last_ts);
    END IF;
    INSERT INTO item_counts (state, direction, page_id, backend, items)
        VALUES (NEW.state, NEW.direction, NEW.page_id, pg_backend_pid(), 1)
        ON CONFLICT (state, direction, page_id, backend)
        DO UPDATE SET items = item_counts.items + 1;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION fb_items_updated() RETURNS trigger AS $$
BEGIN
    PERFORM fb_head_upkeep(NEW.direction, NEW.page_id, NEW.conversation);
    IF OLD.state <> NEW.state THEN
        INSERT INTO item_counts (state, direction, page_id, backend, items)
            VALUES (OLD.state, OLD.direction, OLD.page_id, pg_backend_pid(), -1)
            ON CONFLICT (state, direction, page_id, backend)
            DO UPDATE SET items = item_counts.items - 1;
        INSERT INTO item_counts (state, direction, page_id, backend, items)
            VALUES (NEW.state, NEW.direction, NEW.page_id, pg_backend_pid(), 1)
            ON CONFLICT (state, direction, page_id, backend)
            DO UPDATE SET items = item_counts.items + 1;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION fb_items_deleted() RETURNS trigger AS $$
BEGIN
    IF OLD.state = 'pending' THEN
        PERFORM fb_head_upkeep(OLD.direction, OLD.page_id, OLD.conversation);
    END IF;
    INSERT INTO item_counts (state, direction, page_id, backend, items)
        VALUES (OLD.state, OLD.direction, OLD.page_id, pg_backend_pid(), -1)
        ON CONFLICT (state, direction, page_id, backend)
        DO UPDATE SET items = item_counts.items - 1;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
INSERT INTO item_counts (state, direction, page_id, backend, items)
    SELECT state, direction, page_id, 0, COUNT(*) FROM items
     GROUP BY state, direction, page_id;
CREATE INDEX items_waiting ON items (direction, page_id, id) WHERE state = 'pending';
"#,
    r#"
-- A conversation's first pending item is read from items_pending in its order. Before
-- the planner has statistics of items (a new database until autovacuum's first ANALYZE;
-- perhaps also a backlog grown since the last one, not measured), both partial indexes
-- look one page long and it took items_waiting, the smaller: every pending item of the
-- page read and sorted to find one conversation's first, at every item written (4,400
-- index entries a call in the benchmark's drain of 5,000). Without a sort, items_pending
-- in order is the only plan.
-- (A later CREATE OR REPLACE of the function must say it again: it replaces the SET.)
ALTER FUNCTION fb_head_upkeep(TEXT, TEXT, TEXT) SET enable_sort = off;
"#,
    r#"
-- Whether another node holds a conversation: one step down the leases' key. A claim asks
-- it of each head it reads in heads_due's order. Written in the claim as NOT EXISTS, the
-- planner made it an anti-join that read every lease index entry of the direction, those
-- of every lease ended since the last VACUUM included (a lease is a row written and
-- deleted per item); written as a subquery per head, it read and sorted every head
-- instead. A function the planner cannot see into leaves it one plan: the heads in
-- order, each asked once, until the claim has enough.
CREATE FUNCTION fb_leased_elsewhere(d TEXT, p TEXT, c TEXT, after BIGINT, node TEXT)
RETURNS boolean STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM claims
                    WHERE direction = d AND page_id = p AND conversation = c
                      AND until > after AND holder <> node);
END $$ LANGUAGE plpgsql;
"#,
    r#"
-- When a referral is stored, its conversation's pending messages and buttons become
-- turns. Written as one UPDATE, before the planner has statistics of items it read
-- items_waiting, every pending item of the page (20,057 rows read to mark none with
-- 20,000 pending, at every referral: an ad's burst of new conversations is one each).
-- Read in the conversation's order without a sort, items_pending is the only plan.
CREATE FUNCTION fb_mark_turns(p TEXT, c TEXT) RETURNS void AS $$
BEGIN
    UPDATE items SET turn = 1
     WHERE id IN (SELECT id FROM items
                   WHERE state = 'pending' AND direction = 'in' AND page_id = p
                     AND conversation = c
                   ORDER BY event_ts, id)
       AND turn IS NULL
       AND (kind = 'message' OR kind = 'postback' OR kind = 'ig_message'
            OR kind = 'ig_postback');
END $$ LANGUAGE plpgsql SET enable_sort = off;
"#,
    r#"
-- Leases are found by their key alone. With the index by holder, a lease ended (a row
-- deleted at every item delivered) was looked up by holder whenever the statistics of
-- this small table made the two indexes look alike, reading the entries of every lease
-- the node had ended since the last VACUUM (5,017 to end one with 5,000 ended). The
-- renewals (every third of a lease), a clean stop and `doctor` ask by holder without it:
-- they read the table, a row per conversation in flight and the rows ended since the
-- last VACUUM, a few times a minute at most.
DROP INDEX claims_holder;
"#,
    r#"
-- The ACME side the nodes hold in common (src/store/acme_rows.rs): the CA account, the
-- newest certificate, the proofs of an order in progress (the CA may reach any node) and
-- which node orders. A few rows, read by key.
CREATE TABLE acme (
    name   TEXT PRIMARY KEY,
    body   TEXT NOT NULL,
    holder TEXT,
    until  BIGINT NOT NULL DEFAULT 0
);
"#,
    r#"
-- Facebook's throttling of a Page's feature, and the pace of its comments, shared by the
-- nodes (src/store/shared_pauses.rs): a row per Page and feature, a row per Page.
CREATE TABLE pauses (
    page_id   TEXT NOT NULL,
    feature   TEXT NOT NULL,
    since     BIGINT NOT NULL,
    until     BIGINT NOT NULL,
    length_ms BIGINT NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (page_id, feature)
);
CREATE TABLE comment_pace (
    page_id TEXT PRIMARY KEY,
    next    BIGINT NOT NULL
);
"#,
    r#"
-- What each node runs (src/store/node_configs.rs): the digests of the config parts
-- every node must hold alike, a row per living node.
CREATE TABLE node_configs (
    node    TEXT PRIMARY KEY,
    digest  TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);
"#,
];

/// The advisory lock that makes one node at a time migrate the schema.
const MIGRATION_LOCK: i64 = 0x6662_6f63_0001;

/// Brings the schema up to date, one node at a time: a node that starts while another
/// migrates waits for it, then finds nothing left to do. A database of a newer release
/// (more migrations than this one knows) is refused.
pub fn prepare(client: &mut postgres::Client) -> Result<(), DbError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = migrate(client);
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result
}

fn migrate(client: &mut postgres::Client) -> Result<(), DbError> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS fb_openchannel_schema (version BIGINT NOT NULL)",
    )?;
    let version = version(client)?;
    if version > MIGRATIONS.len() as i64 {
        return Err(DbError::Column {
            index: 0,
            reason: format!(
                "the database's schema is version {version}, newer than this release knows ({}): a newer fb-openchannel uses it",
                MIGRATIONS.len()
            ),
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let mut tx = client.transaction()?;
        tx.batch_execute(migration)?;
        tx.execute("DELETE FROM fb_openchannel_schema", &[])?;
        tx.execute(
            "INSERT INTO fb_openchannel_schema (version) VALUES ($1)",
            &[&((i + 1) as i64)],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// The schema's version (0 before the first migration).
pub fn version(client: &mut postgres::Client) -> Result<i64, DbError> {
    let row = client.query_opt("SELECT version FROM fb_openchannel_schema", &[])?;
    Ok(row.map_or(0, |r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue stored before the counts were kept gets them counted once, when it is
    /// migrated; from then on each server process keeps its own rows of them, which the
    /// prune moves into the row of none once the process is gone.
    #[test]
    fn a_database_from_before_gets_its_counts() {
        use crate::sim::postgres::{PrivatePostgres, SKIPPED};
        let Some(pg) = PrivatePostgres::start().unwrap() else {
            eprintln!("{SKIPPED}");
            return;
        };
        pg.create_database("counts").unwrap();
        let connect = || postgres::Client::connect(&pg.url("counts"), postgres::NoTls).unwrap();
        let mut client = connect();
        let kept_at = MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE item_counts"))
            .unwrap();
        client
            .batch_execute("CREATE TABLE fb_openchannel_schema (version BIGINT NOT NULL)")
            .unwrap();
        for migration in &MIGRATIONS[..kept_at] {
            client.batch_execute(migration).unwrap();
        }
        client
            .execute(
                "INSERT INTO fb_openchannel_schema (version) VALUES ($1)",
                &[&(kept_at as i64)],
            )
            .unwrap();
        for (direction, page, key, state) in [
            ("in", "p", "m1", "done"),
            ("in", "p", "m2", "pending"),
            ("out", "p", "r1", "pending"),
            ("in", "q", "m3", "failed"),
        ] {
            client
                .execute(
                    "INSERT INTO items (direction, page_id, conversation, dedup_key, kind,
                        event_ts, payload, state, created_at, updated_at)
                     VALUES ($1, $2, 'psid:a', $3, 'message', 1, '{}', $4, 0, 0)",
                    &[&direction, &page, &key, &state],
                )
                .unwrap();
        }
        // The operator's tools on a queue no daemon of this release has upgraded yet
        // (`doctor` between installing and restarting) count from the items, and read
        // the same from the counts once it is upgraded.
        let storage = crate::config::StorageConfig {
            backend: crate::config::Backend::Postgres,
            url: Some(crate::config::Secret::new(pg.url("counts"))),
            path: pg.dir().join("state/state.db"),
            ..crate::config::StorageConfig::default()
        };
        let operator = || {
            let mut db = crate::store::queue::open_storage(&storage).unwrap();
            crate::store::queue::stats_at(&db.sql(), 1_000).unwrap()
        };
        let before_upgrade = operator();
        assert_eq!(before_upgrade.len(), 3, "{before_upgrade:?}");
        prepare(&mut client).unwrap();
        assert_eq!(operator(), before_upgrade);
        // Another connection (another server process) changes an item, and goes.
        let mut other = connect();
        let other_pid: i32 = other
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        other
            .execute(
                "UPDATE items SET state = 'done' WHERE dedup_key = 'm2'",
                &[],
            )
            .unwrap();
        let ended: bool = client
            .query_one("SELECT pg_terminate_backend($1, 10000)", &[&other_pid])
            .unwrap()
            .get(0);
        assert!(ended);
        drop(other);
        client
            .execute("DELETE FROM items WHERE dedup_key = 'r1'", &[])
            .unwrap();
        let counts = |client: &mut postgres::Client| -> Vec<(String, i64)> {
            client
                .query(
                    "SELECT state || ' ' || direction || ' ' || page_id,
                            CAST(SUM(items) AS BIGINT)
                       FROM item_counts GROUP BY 1 ORDER BY 1",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        };
        let count = |key: &str, n: i64| (key.to_owned(), n);
        let expected = [
            count("done in p", 2),
            count("failed in q", 1),
            count("pending in p", 0),
            count("pending out p", 0),
        ];
        assert_eq!(counts(&mut client), expected);

        // The gone process's rows move into the row of none; this one's stay its own.
        let live: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        let backends = |client: &mut postgres::Client| -> Vec<i32> {
            client
                .query("SELECT DISTINCT backend FROM item_counts ORDER BY 1", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        assert_eq!(
            backends(&mut client).len(),
            3,
            "none, the gone one, this one"
        );
        client
            .execute(crate::store::items::FOLD_GONE_BACKENDS, &[])
            .unwrap();
        assert_eq!(backends(&mut client), [0, live]);
        assert_eq!(counts(&mut client), expected);
    }
}
