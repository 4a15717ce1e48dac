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

use rusqlite::{Connection, OptionalExtension, params};
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
pub fn export(conn: &mut Connection, out: &mut impl Write, now_ms: i64) -> Result<Counts, String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    let mut counts = Counts::default();
    let mut line = |record: &Value| -> Result<(), String> {
        serde_json::to_writer(&mut *out, record).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(|e| e.to_string())
    };
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| e.to_string())?;
    line(
        &serde_json::json!({"format": FORMAT, "version": VERSION, "schema": version, "exported_at": now_ms}),
    )?;
    let sql = |e: rusqlite::Error| e.to_string();
    let mut emit = |record: Record| line(&serde_json::to_value(record).expect("serializes"));

    let mut items = tx
        .prepare(
            "SELECT direction, page_id, conversation, dedup_key, kind, event_ts, payload, state,
                    attempts, steps_done, next_attempt_at, first_failure_at, last_error,
                    created_at, updated_at, result
               FROM items ORDER BY id",
        )
        .map_err(sql)?;
    let mut rows = items.query([]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let row = ItemRow {
            direction: r.get(0).map_err(sql)?,
            page_id: r.get(1).map_err(sql)?,
            conversation: r.get(2).map_err(sql)?,
            dedup_key: r.get(3).map_err(sql)?,
            kind: r.get(4).map_err(sql)?,
            event_ts: r.get(5).map_err(sql)?,
            payload: r.get(6).map_err(sql)?,
            state: r.get(7).map_err(sql)?,
            attempts: r.get(8).map_err(sql)?,
            steps_done: r.get(9).map_err(sql)?,
            next_attempt_at: r.get(10).map_err(sql)?,
            first_failure_at: r.get(11).map_err(sql)?,
            last_error: r.get(12).map_err(sql)?,
            created_at: r.get(13).map_err(sql)?,
            updated_at: r.get(14).map_err(sql)?,
            result: r.get(15).map_err(sql)?,
        };
        counts.items += 1;
        counts.pending += u64::from(row.state == "pending");
        counts.failed += u64::from(row.state == "failed");
        emit(Record::Item(row))?;
    }
    drop(rows);
    drop(items);

    let key = |r: &rusqlite::Row<'_>, at: usize| -> rusqlite::Result<Option<ItemKey>> {
        Ok(
            match (
                r.get::<_, Option<String>>(at)?,
                r.get::<_, Option<String>>(at + 1)?,
                r.get::<_, Option<String>>(at + 2)?,
            ) {
                (Some(d), Some(p), Some(k)) => Some(ItemKey(d, p, k)),
                _ => None,
            },
        )
    };
    let mut attempts = tx
        .prepare(
            "SELECT i.direction, i.page_id, i.dedup_key, a.at, a.outcome, a.error
               FROM attempts a JOIN items i ON i.id = a.item_id ORDER BY a.rowid",
        )
        .map_err(sql)?;
    let mut rows = attempts.query([]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let Some(item) = key(r, 0).map_err(sql)? else {
            continue;
        };
        counts.attempts += 1;
        emit(Record::Attempt {
            item,
            at: r.get(3).map_err(sql)?,
            outcome: r.get(4).map_err(sql)?,
            error: r.get(5).map_err(sql)?,
        })?;
    }
    drop(rows);
    drop(attempts);

    for (table, id_column) in [
        ("sent_messages", "message_id"),
        ("private_replies", "object_id"),
    ] {
        let mut statement = tx
            .prepare(&format!(
                "SELECT t.page_id, t.{id_column}, i.direction, i.page_id, i.dedup_key, t.sent_at
                   FROM {table} t LEFT JOIN items i ON i.id = t.item_id ORDER BY t.rowid"
            ))
            .map_err(sql)?;
        let mut rows = statement.query([]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            let (page_id, id, item, sent_at) = (
                r.get(0).map_err(sql)?,
                r.get(1).map_err(sql)?,
                key(r, 2).map_err(sql)?,
                r.get(5).map_err(sql)?,
            );
            if table == "sent_messages" {
                counts.sent_messages += 1;
                emit(Record::SentMessage {
                    page_id,
                    message_id: id,
                    item,
                    sent_at,
                })?;
            } else {
                counts.private_replies += 1;
                emit(Record::PrivateReply {
                    page_id,
                    object_id: id,
                    item,
                    sent_at,
                })?;
            }
        }
    }

    let mut profiles = tx
        .prepare("SELECT page_id, psid, first_name, last_name, source, fetched_at FROM profiles")
        .map_err(sql)?;
    let mut rows = profiles.query([]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        counts.profiles += 1;
        emit(Record::Profile {
            page_id: r.get(0).map_err(sql)?,
            psid: r.get(1).map_err(sql)?,
            first_name: r.get(2).map_err(sql)?,
            last_name: r.get(3).map_err(sql)?,
            source: r.get(4).map_err(sql)?,
            fetched_at: r.get(5).map_err(sql)?,
        })?;
    }
    drop(rows);
    drop(profiles);

    let mut tokens = tx
        .prepare("SELECT account, token, seed, obtained_at, expires_at FROM instagram_tokens")
        .map_err(sql)?;
    let mut rows = tokens.query([]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        counts.instagram_tokens += 1;
        emit(Record::InstagramToken {
            account: r.get(0).map_err(sql)?,
            token: r.get(1).map_err(sql)?,
            seed: r.get(2).map_err(sql)?,
            obtained_at: r.get(3).map_err(sql)?,
            expires_at: r.get(4).map_err(sql)?,
        })?;
    }
    drop(rows);
    drop(tokens);
    out.flush().map_err(|e| e.to_string())?;
    Ok(counts)
}

/// Adds the records of `input` to the database at `conn`, in one transaction; nothing
/// is added when any line is wrong (its number is named).
pub fn import(conn: &mut Connection, input: impl BufRead) -> Result<Counts, String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
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
    let item_id =
        |tx: &rusqlite::Transaction<'_>, key: &ItemKey| -> rusqlite::Result<Option<i64>> {
            tx.query_row(
                "SELECT id FROM items WHERE direction = ?1 AND page_id = ?2 AND dedup_key = ?3",
                params![key.0, key.1, key.2],
                |r| r.get(0),
            )
            .optional()
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
        let sql = |e: rusqlite::Error| at(e.to_string());
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
                    .execute(
                        "INSERT OR IGNORE INTO items (direction, page_id, conversation, dedup_key, kind,
                             event_ts, payload, state, attempts, steps_done, next_attempt_at,
                             first_failure_at, last_error, created_at, updated_at, result)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
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
                    let id = item_id(&tx, &item).map_err(sql)?;
                    let changed = tx
                        .execute(
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
                    Some(k) => item_id(&tx, k).map_err(sql)?,
                    None => None,
                };
                let changed = tx
                    .execute(
                        &format!("INSERT OR IGNORE INTO {table} (page_id, {column}, item_id, sent_at) VALUES (?1, ?2, ?3, ?4)"),
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
                    .execute(
                        "INSERT OR IGNORE INTO profiles (page_id, psid, first_name, last_name, source, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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
                    .execute(
                        "INSERT OR IGNORE INTO instagram_tokens (account, token, seed, obtained_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
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
    tx.commit().map_err(|e| e.to_string())?;
    Ok(counts)
}
