//! The queue as a portable file: `queue export` writes it, `queue import` reads it into
//! another state database — to move the daemon to another host without losing what it
//! holds, and the way a queue will move into another backend.
//!
//! JSON Lines: a header line (`{"format": "fb-openchannel-queue", "version": 1, …}`),
//! then one record per line, each an object with one key naming its kind: `item` (every
//! item, delivered ones too — they are what recognises Facebook's redeliveries and
//! Motion's repeated Reply URL calls), `attempt` (the history `queue show` prints),
//! `sent_message` (our own Graph message ids: their echoes are not news),
//! `private_reply` (one per comment, ever), `profile` (customer names) and
//! `instagram_token` (Instagram Login tokens the daemon refreshed). Rows that point at
//! an item name it by its unique key (direction, page, dedup key), not by its row id.
//! Webhook bodies stay behind: every item carries what it needs in its payload.
//!
//! Import runs in one transaction and skips what the target already has (by the same
//! unique keys), so importing twice adds nothing, and the triggers rebuild the
//! conversation heads and the customers' reply windows from the items.

use std::io::{BufRead, Write};

use rusqlite::params;

use super::sql::{DbError, Row, Sql};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The header's `format`.
const FORMAT: &str = "fb-openchannel-queue";
const VERSION: u64 = 1;

/// How many records of each kind an export wrote or an import added (and skipped).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub items: u64,
    pub pending: u64,
    pub failed: u64,
    pub attempts: u64,
    pub sent_messages: u64,
    pub private_replies: u64,
    pub profiles: u64,
    pub instagram_tokens: u64,
    /// Records the target had already (import only).
    pub already_there: u64,
}

/// An item's unique key: direction, page, dedup key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ItemKey(String, String, String);

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Item(ItemRow),
    Attempt {
        item: ItemKey,
        at: i64,
        outcome: String,
        error: Option<String>,
    },
    SentMessage {
        page_id: String,
        message_id: String,
        item: Option<ItemKey>,
        sent_at: i64,
    },
    PrivateReply {
        page_id: String,
        object_id: String,
        item: Option<ItemKey>,
        sent_at: i64,
    },
    Profile {
        page_id: String,
        psid: String,
        first_name: String,
        last_name: String,
        source: String,
        fetched_at: i64,
    },
    InstagramToken {
        account: String,
        token: String,
        seed: String,
        obtained_at: i64,
        expires_at: Option<i64>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct ItemRow {
    direction: String,
    page_id: String,
    conversation: String,
    dedup_key: String,
    kind: String,
    event_ts: i64,
    payload: String,
    state: String,
    attempts: i64,
    steps_done: i64,
    next_attempt_at: i64,
    first_failure_at: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    result: Option<String>,
}

/// Writes every record of the database at `conn` to `out`, in one read transaction (a
/// consistent picture even while the daemon writes).
pub fn export(conn: &Sql<'_>, out: &mut impl Write, now_ms: i64) -> Result<Counts, String> {
    let begin = if conn.is_postgres() {
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    } else {
        "BEGIN"
    };
    conn.batch(begin).map_err(|e| e.to_string())?;
    let counts = export_records(conn, out, now_ms);
    let _ = conn.batch("ROLLBACK");
    counts
}

fn export_records(conn: &Sql<'_>, out: &mut impl Write, now_ms: i64) -> Result<Counts, String> {
    let mut counts = Counts::default();
    let mut line = |record: &Value| -> Result<(), String> {
        serde_json::to_writer(&mut *out, record).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(|e| e.to_string())
    };
    let version = super::schema_version(conn).map_err(|e| e.to_string())?;
    line(
        &serde_json::json!({"format": FORMAT, "version": VERSION, "schema": version, "exported_at": now_ms}),
    )?;
    // A failure to write the file, carried out of the row callbacks.
    let failed: std::cell::RefCell<Option<String>> = std::cell::RefCell::default();
    let mut emit = |record: Record| -> Result<(), DbError> {
        line(&serde_json::to_value(record).expect("serializes")).map_err(|e| {
            *failed.borrow_mut() = Some(e);
            DbError::NoRow
        })
    };
    let sql = |e: DbError| failed.borrow_mut().take().unwrap_or_else(|| e.to_string());

    conn.each(
        "SELECT direction, page_id, conversation, dedup_key, kind, event_ts, payload, state,
                attempts, steps_done, next_attempt_at, first_failure_at, last_error,
                created_at, updated_at, result
           FROM items ORDER BY id",
        params![],
        |r| {
            let row = ItemRow {
                direction: r.get(0)?,
                page_id: r.get(1)?,
                conversation: r.get(2)?,
                dedup_key: r.get(3)?,
                kind: r.get(4)?,
                event_ts: r.get(5)?,
                payload: r.get(6)?,
                state: r.get(7)?,
                attempts: r.get(8)?,
                steps_done: r.get(9)?,
                next_attempt_at: r.get(10)?,
                first_failure_at: r.get(11)?,
                last_error: r.get(12)?,
                created_at: r.get(13)?,
                updated_at: r.get(14)?,
                result: r.get(15)?,
            };
            counts.items += 1;
            counts.pending += u64::from(row.state == "pending");
            counts.failed += u64::from(row.state == "failed");
            emit(Record::Item(row))
        },
    )
    .map_err(sql)?;

    let key = |r: &Row<'_>, at: usize| -> Result<Option<ItemKey>, DbError> {
        Ok(
            match (
                r.get::<Option<String>>(at)?,
                r.get::<Option<String>>(at + 1)?,
                r.get::<Option<String>>(at + 2)?,
            ) {
                (Some(d), Some(p), Some(k)) => Some(ItemKey(d, p, k)),
                _ => None,
            },
        )
    };
    conn.each(
        "SELECT i.direction, i.page_id, i.dedup_key, a.at, a.outcome, a.error
           FROM attempts a JOIN items i ON i.id = a.item_id ORDER BY a.rowid",
        params![],
        |r| {
            let Some(item) = key(r, 0)? else {
                return Ok(());
            };
            counts.attempts += 1;
            emit(Record::Attempt {
                item,
                at: r.get(3)?,
                outcome: r.get(4)?,
                error: r.get(5)?,
            })
        },
    )
    .map_err(sql)?;

    for (table, id_column) in [
        ("sent_messages", "message_id"),
        ("private_replies", "object_id"),
    ] {
        conn.each(
            &format!(
                "SELECT t.page_id, t.{id_column}, i.direction, i.page_id, i.dedup_key, t.sent_at
                   FROM {table} t LEFT JOIN items i ON i.id = t.item_id ORDER BY t.rowid"
            ),
            params![],
            |r| {
                let (page_id, id, item, sent_at) = (r.get(0)?, r.get(1)?, key(r, 2)?, r.get(5)?);
                if table == "sent_messages" {
                    counts.sent_messages += 1;
                    emit(Record::SentMessage {
                        page_id,
                        message_id: id,
                        item,
                        sent_at,
                    })
                } else {
                    counts.private_replies += 1;
                    emit(Record::PrivateReply {
                        page_id,
                        object_id: id,
                        item,
                        sent_at,
                    })
                }
            },
        )
        .map_err(sql)?;
    }

    conn.each(
        "SELECT page_id, psid, first_name, last_name, source, fetched_at FROM profiles",
        params![],
        |r| {
            counts.profiles += 1;
            emit(Record::Profile {
                page_id: r.get(0)?,
                psid: r.get(1)?,
                first_name: r.get(2)?,
                last_name: r.get(3)?,
                source: r.get(4)?,
                fetched_at: r.get(5)?,
            })
        },
    )
    .map_err(sql)?;

    conn.each(
        "SELECT account, token, seed, obtained_at, expires_at FROM instagram_tokens",
        params![],
        |r| {
            counts.instagram_tokens += 1;
            emit(Record::InstagramToken {
                account: r.get(0)?,
                token: r.get(1)?,
                seed: r.get(2)?,
                obtained_at: r.get(3)?,
                expires_at: r.get(4)?,
            })
        },
    )
    .map_err(sql)?;
    out.flush().map_err(|e| e.to_string())?;
    Ok(counts)
}

/// Adds the records of `input` to the database at `conn`, in one transaction; nothing
/// is added when any line is wrong (its number is named).
pub fn import(conn: &Sql<'_>, input: impl BufRead) -> Result<Counts, String> {
    // The error of a line, carried out of the transaction as it is.
    let mut failed = None;
    let counts = super::queue::transaction(conn, |tx| {
        import_records(tx, input).map_err(|e| {
            failed = Some(e);
            DbError::NoRow
        })
    });
    match (counts, failed) {
        (Ok(counts), _) => Ok(counts),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.to_string()),
    }
}

fn import_records(tx: &Sql<'_>, input: impl BufRead) -> Result<Counts, String> {
    let mut counts = Counts::default();
    let mut lines = input.lines().enumerate();
    let header: Value = match lines.next() {
        Some((_, Ok(line))) => serde_json::from_str(&line)
            .map_err(|_| "line 1 is not a queue export header".to_owned())?,
        _ => return Err("the file is empty: not a queue export".into()),
    };
    if header["format"] != FORMAT {
        return Err("line 1: not an fb-openchannel queue export".into());
    }
    if header["version"].as_u64() != Some(VERSION) {
        return Err(format!(
            "line 1: export format version {} is not one this fb-openchannel reads ({VERSION}): import with the version that exported it, or a newer one",
            header["version"]
        ));
    }
    let item_id = |tx: &Sql<'_>, key: &ItemKey| -> Result<Option<i64>, DbError> {
        tx.opt(
            "SELECT id FROM items WHERE direction = ?1 AND page_id = ?2 AND dedup_key = ?3",
            params![key.0, key.1, key.2],
            |r| r.get(0),
        )
    };
    // Attempts go only to items this import added (an item already there has its own).
    let mut added = std::collections::HashSet::new();
    for (n, line) in lines {
        let at = |e: String| format!("line {}: {e}", n + 1);
        let line = line.map_err(|e| at(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line).map_err(|e| at(e.to_string()))?;
        let record_kind = match &record {
            Record::SentMessage { .. } => "sent_message",
            _ => "other",
        };
        let sql = |e: DbError| at(e.to_string());
        let changed = match record {
            Record::Item(i) => {
                use crate::model::{Direction, ItemKind, ItemState};
                if Direction::parse(&i.direction).is_none()
                    || ItemKind::parse(&i.kind).is_none()
                    || ItemState::parse(&i.state).is_none()
                {
                    return Err(at(
                        "an item whose direction, kind or state this fb-openchannel does not know (exported by a newer version?)".into(),
                    ));
                }
                let changed = tx
                    .exec(
                        "INSERT INTO items (direction, page_id, conversation, dedup_key, kind,
                             event_ts, payload, state, attempts, steps_done, next_attempt_at,
                             first_failure_at, last_error, created_at, updated_at, result)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                         ON CONFLICT DO NOTHING",
                        params![
                            i.direction, i.page_id, i.conversation, i.dedup_key, i.kind, i.event_ts,
                            i.payload, i.state, i.attempts, i.steps_done, i.next_attempt_at,
                            i.first_failure_at, i.last_error, i.created_at, i.updated_at, i.result
                        ],
                    )
                    .map_err(sql)?;
                if changed == 1 {
                    counts.items += 1;
                    counts.pending += u64::from(i.state == "pending");
                    counts.failed += u64::from(i.state == "failed");
                    added.insert((i.direction, i.page_id, i.dedup_key));
                }
                changed
            }
            Record::Attempt {
                item,
                at: when,
                outcome,
                error,
            } => {
                if !added.contains(&(item.0.clone(), item.1.clone(), item.2.clone())) {
                    0
                } else {
                    let id = item_id(tx, &item).map_err(sql)?;
                    let changed = tx
                        .exec(
                            "INSERT INTO attempts (item_id, at, outcome, error) VALUES (?1, ?2, ?3, ?4)",
                            params![id, when, outcome, error],
                        )
                        .map_err(sql)?;
                    counts.attempts += changed as u64;
                    changed
                }
            }
            Record::SentMessage {
                page_id,
                message_id: id,
                item,
                sent_at,
            }
            | Record::PrivateReply {
                page_id,
                object_id: id,
                item,
                sent_at,
            } => {
                let (table, column, count) = match record_kind {
                    "sent_message" => ("sent_messages", "message_id", &mut counts.sent_messages),
                    _ => ("private_replies", "object_id", &mut counts.private_replies),
                };
                let item_id = match &item {
                    Some(k) => item_id(tx, k).map_err(sql)?,
                    None => None,
                };
                let changed = tx
                    .exec(
                        &format!("INSERT INTO {table} (page_id, {column}, item_id, sent_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING"),
                        params![page_id, id, item_id, sent_at],
                    )
                    .map_err(sql)?;
                *count += changed as u64;
                changed
            }
            Record::Profile {
                page_id,
                psid,
                first_name,
                last_name,
                source,
                fetched_at,
            } => {
                let changed = tx
                    .exec(
                        "INSERT INTO profiles (page_id, psid, first_name, last_name, source, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                        params![page_id, psid, first_name, last_name, source, fetched_at],
                    )
                    .map_err(sql)?;
                counts.profiles += changed as u64;
                changed
            }
            Record::InstagramToken {
                account,
                token,
                seed,
                obtained_at,
                expires_at,
            } => {
                let changed = tx
                    .exec(
                        "INSERT INTO instagram_tokens (account, token, seed, obtained_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                        params![account, token, seed, obtained_at, expires_at],
                    )
                    .map_err(sql)?;
                counts.instagram_tokens += changed as u64;
                changed
            }
        };
        if changed == 0 {
            counts.already_there += 1;
        }
    }
    // Which items are turns (see `items::turn_sql!`) is the receiving queue's own
    // bookkeeping, set for what came in: referrals, then the messages of their
    // conversations. Once per import, over the whole table.
    for mark in [
        concat!(
            "UPDATE items SET turn = 2 WHERE direction = 'in' AND turn IS NULL AND kind IN ",
            super::items::referral_kinds!()
        ),
        concat!(
            "UPDATE items SET turn = 1
              WHERE direction = 'in' AND turn IS NULL
                AND EXISTS (SELECT 1 FROM items r
                             WHERE r.page_id = items.page_id AND r.conversation = items.conversation
                               AND r.turn = 2)
                AND kind IN ",
            super::items::message_kinds!()
        ),
    ] {
        tx.exec(mark, params![])
            .map_err(|e| format!("marking the imported conversations' turns: {e}"))?;
    }
    Ok(counts)
}
