//! `fb-openchannel queue …`: see what is pending or failed, look at one item, retry or
//! drop items. Safe while the daemon runs (see [`crate::store::queue`]).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Subcommand;

use super::output::{Style, age, table, timestamp};
use crate::config::Config;
use crate::model::{Direction, ItemState};
use crate::store::{now_ms, queue};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Per page and direction: pending, retrying, failed, done, oldest pending age.
    Stats,
    /// Pending and failed items, newest first.
    List {
        /// Only failed items.
        #[arg(long)]
        failed: bool,
        /// Only this page.
        #[arg(long)]
        page: Option<String>,
        /// Only items stored in this recent period, e.g. "2h", "3d".
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One item: its stored payload (secrets masked), attempts and errors.
    Show { id: i64 },
    /// Put failed items back in the queue; the running daemon sends them within a second.
    Retry {
        ids: Vec<i64>,
        /// Every failed item (optionally only those stored within --since).
        #[arg(long, conflicts_with = "ids")]
        all_failed: bool,
        #[arg(long, value_parser = humantime::parse_duration, requires = "all_failed")]
        since: Option<std::time::Duration>,
    },
    /// Remove items for good (asks first unless --yes).
    Drop {
        #[arg(required = true)]
        ids: Vec<i64>,
        #[arg(long, short)]
        yes: bool,
    },
    /// Write the whole queue (items, their history, sent message ids, names, Instagram
    /// tokens) as JSON Lines, to move it to another host: stop the daemon first.
    Export {
        /// Write here (created 0600: it holds customers' messages and tokens) instead
        /// of stdout.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Add an export to this host's queue (created if there is none); what is there
    /// already is kept, so importing twice adds nothing.
    Import { file: std::path::PathBuf },
}

pub fn main(path: &std::path::Path, command: QueueCommand, json: bool) -> ExitCode {
    // The config names the database and the secrets to mask; an incomplete config (a
    // placeholder left) must not stop an operator from reading the queue.
    let (db, secrets) = match Config::load(path) {
        Ok(c) => {
            let secrets = c.secret_values();
            (c.storage, secrets)
        }
        Err(errors) => match std::fs::read_to_string(path)
            .ok()
            .and_then(|t| storage_of(&t))
        {
            Some(db) => {
                eprintln!(
                    "note: {} has problems ({} found); reading the queue anyway",
                    path.display(),
                    errors.0.len()
                );
                (db, Vec::new())
            }
            None => {
                eprintln!("{errors}");
                return ExitCode::FAILURE;
            }
        },
    };
    match command {
        QueueCommand::Export { out } => return export(&db, out.as_deref(), json),
        QueueCommand::Import { file } => return import(&db, &file, json),
        _ => {}
    }
    let mut database = match queue::open_storage(&db) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let conn = database.sql();
    let result = match command {
        QueueCommand::Stats => stats(&conn, json),
        QueueCommand::List {
            failed,
            page,
            since,
            limit,
        } => list(
            &conn,
            &queue::Filter {
                failed_only: failed,
                page_id: page,
                since_ms: since.map(|d| {
                    now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                }),
                limit: Some(limit),
            },
            json,
        ),
        QueueCommand::Show { id } => show(&conn, id, &secrets, json),
        QueueCommand::Retry {
            ids,
            all_failed,
            since,
        } => retry(&conn, ids, all_failed, since, json),
        QueueCommand::Drop { ids, yes } => drop_items(&conn, &ids, yes, json),
        QueueCommand::Export { .. } | QueueCommand::Import { .. } => {
            unreachable!("answered above")
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {e}", crate::store::place(&db));
            ExitCode::FAILURE
        }
    }
}

/// `queue export`: the queue as JSON Lines on stdout or in `out` (0600).
fn export(
    db: &crate::config::StorageConfig,
    out: Option<&std::path::Path>,
    json: bool,
) -> ExitCode {
    use std::io::Write;
    let mut database = match queue::open_storage(db) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let conn = database.sql();
    let result = match out {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))
                .and_then(|file| {
                    let mut writer = std::io::BufWriter::new(file);
                    let counts = crate::store::transfer::export(&conn, &mut writer, now_ms())?;
                    writer
                        .into_inner()
                        .map_err(|e| e.to_string())?
                        .sync_all()
                        .map_err(|e| e.to_string())?;
                    Ok(counts)
                })
        }
        None => {
            let stdout = std::io::stdout();
            let mut writer = std::io::BufWriter::new(stdout.lock());
            let counts = crate::store::transfer::export(&conn, &mut writer, now_ms());
            let _ = writer.flush();
            counts
        }
    };
    match result {
        Ok(counts) if json => {
            eprintln!("{}", serde_json::to_string(&counts).expect("serialises"));
            ExitCode::SUCCESS
        }
        Ok(c) => {
            eprintln!(
                "exported {}. Items that arrive after this stay here: stop the daemon before exporting to move hosts.",
                moved(&c)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: export failed: {e}", crate::store::place(db));
            ExitCode::FAILURE
        }
    }
}

/// What an export or import moved, in words.
fn moved(c: &crate::store::transfer::Counts) -> String {
    format!(
        "{} item(s) ({} pending, {} failed), {} attempt(s), {} sent message id(s), {} private reply record(s), {} name(s), {} Instagram token(s)",
        c.items,
        c.pending,
        c.failed,
        c.attempts,
        c.sent_messages,
        c.private_replies,
        c.profiles,
        c.instagram_tokens
    )
}

/// `queue import FILE`: an export added to this host's queue, in one transaction.
fn import(db: &crate::config::StorageConfig, file: &std::path::Path, json: bool) -> ExitCode {
    // A new host or database: the queue is made as the daemon makes it (mode, schema).
    let made = if db.is_postgres() {
        crate::store::prepare_postgres(db)
    } else if !db.path.exists() {
        crate::store::Store::open(&db.path).map(drop)
    } else {
        Ok(())
    };
    if let Err(e) = made {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let input = match std::fs::File::open(file) {
        Ok(f) => std::io::BufReader::new(f),
        Err(e) => {
            eprintln!("cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let result = queue::open_storage(db)
        .and_then(|mut database| crate::store::transfer::import(&database.sql(), input));
    match result {
        Ok(counts) if json => print_json(&counts),
        Ok(c) => {
            println!(
                "imported {}; {} record(s) were there already. A running daemon takes the pending items within seconds; else they go when it starts.",
                moved(&c),
                c.already_there
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: nothing imported: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// `[storage]` of a config that does not validate (or the default).
fn storage_of(text: &str) -> Option<crate::config::StorageConfig> {
    let value: toml::Table = toml::from_str(text).ok()?;
    match value.get("storage") {
        Some(storage) => storage.clone().try_into().ok(),
        None => Some(crate::config::StorageConfig::default()),
    }
}

fn mask(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_owned(), |t, s| t.replace(s.as_str(), "********"))
}

/// `--json`: the rows as the store gives them, for scripts.
fn print_json(rows: &impl serde::Serialize) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(rows).expect("serialises")
    );
    ExitCode::SUCCESS
}

fn stats(conn: &crate::store::sql::Sql<'_>, json: bool) -> Result<ExitCode, crate::store::DbError> {
    let rows = queue::stats(conn)?;
    if json {
        return Ok(print_json(&rows));
    }
    if rows.is_empty() {
        println!("the queue is empty");
        return Ok(ExitCode::SUCCESS);
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.page_id.clone(),
                if r.direction == "in" {
                    "to Motion".into()
                } else {
                    "to Facebook".into()
                },
                r.pending.to_string(),
                r.retrying.to_string(),
                r.failed.to_string(),
                r.done.to_string(),
                r.oldest_pending_ms.map(age).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "PAGE",
                "DIRECTION",
                "PENDING",
                "RETRYING",
                "FAILED",
                "DONE",
                "OLDEST PENDING"
            ],
            &body
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn list(
    conn: &crate::store::sql::Sql<'_>,
    filter: &queue::Filter,
    json: bool,
) -> Result<ExitCode, crate::store::DbError> {
    let rows = queue::list(conn, filter)?;
    if json {
        return Ok(print_json(&rows));
    }
    if rows.is_empty() {
        println!(
            "nothing {}",
            if filter.failed_only {
                "failed"
            } else {
                "pending or failed"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let style = Style::detect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let state = match r.state {
                ItemState::Failed => style.bad(r.state.as_str()),
                _ => r.state.to_string(),
            };
            let mut error = r.last_error.clone().unwrap_or_default();
            if error.chars().count() > 80 {
                error = format!("{}…", error.chars().take(80).collect::<String>());
            }
            vec![
                r.id.to_string(),
                r.page_id.clone(),
                r.direction.to_string(),
                r.conversation.to_string(),
                r.kind.to_string(),
                state,
                r.attempts.to_string(),
                timestamp(r.created_at),
                error,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID",
                "PAGE",
                "DIR",
                "CONVERSATION",
                "KIND",
                "STATE",
                "TRIES",
                "STORED (UTC)",
                "LAST ERROR"
            ],
            &body
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn show(
    conn: &crate::store::sql::Sql<'_>,
    id: i64,
    secrets: &[String],
    json: bool,
) -> Result<ExitCode, crate::store::DbError> {
    let Some(mut d) = queue::show(conn, id)? else {
        eprintln!("no item {id}");
        return Ok(ExitCode::FAILURE);
    };
    d.payload = mask(&d.payload, secrets);
    d.result = d.result.map(|r| mask(&r, secrets));
    d.row.last_error = d.row.last_error.map(|e| mask(&e, secrets));
    for a in &mut d.attempt_history {
        a.error = a.error.as_deref().map(|e| mask(e, secrets));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&d).expect("serialises"));
        return Ok(ExitCode::SUCCESS);
    }
    let r = &d.row;
    println!(
        "item {}  {} page {}  {}",
        r.id,
        match r.direction {
            Direction::Inbound => "Facebook → Motion,",
            Direction::Outbound => "Motion → Facebook,",
        },
        r.page_id,
        r.conversation
    );
    println!("  kind       {}", r.kind);
    println!(
        "  state      {}{}",
        r.state,
        if r.state == ItemState::Pending && d.next_attempt_at > now_ms() {
            format!(" (next attempt at {} UTC)", timestamp(d.next_attempt_at))
        } else {
            String::new()
        }
    );
    println!("  stored     {} UTC", timestamp(r.created_at));
    println!("  event time {} UTC", timestamp(d.event_ts));
    println!("  dedup key  {}", d.dedup_key);
    if let Some(e) = &r.last_error {
        println!("  last error {e}");
    }
    if let Some(result) = &d.result {
        println!("  result     {result}");
    }
    let seen = |up_to: Option<i64>| match up_to {
        None => "none recorded".to_owned(),
        Some(at) if r.direction == Direction::Outbound && at >= d.event_ts => {
            format!("up to {} UTC (after this reply)", timestamp(at))
        }
        Some(at) if r.direction == Direction::Outbound => {
            format!("up to {} UTC (not this reply yet)", timestamp(at))
        }
        Some(at) => format!("up to {} UTC", timestamp(at)),
    };
    println!(
        "  customer   read {}; delivered {}",
        seen(d.receipts.read_up_to),
        seen(d.receipts.delivered_up_to)
    );
    println!("  attempts   {}", r.attempts);
    for a in &d.attempt_history {
        println!(
            "    {} UTC  {:<20} {}",
            timestamp(a.at),
            a.outcome,
            a.error.as_deref().unwrap_or("")
        );
    }
    let pretty = serde_json::from_str::<serde_json::Value>(&d.payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| d.payload.clone());
    println!(
        "  payload:\n{}",
        pretty
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(ExitCode::SUCCESS)
}

/// How many items one retry transaction changes (keeps the daemon's writes flowing).
const RETRY_BATCH: usize = 500;

fn retry(
    conn: &crate::store::sql::Sql<'_>,
    ids: Vec<i64>,
    all_failed: bool,
    since: Option<std::time::Duration>,
    json: bool,
) -> Result<ExitCode, crate::store::DbError> {
    let ids = if all_failed {
        queue::failed_ids(
            conn,
            since
                .map(|d| now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        )?
    } else {
        ids
    };
    if ids.is_empty() {
        println!("nothing to retry");
        return Ok(ExitCode::SUCCESS);
    }
    let show_progress = !json && ids.len() > RETRY_BATCH && std::io::stderr().is_terminal();
    let mut done = Vec::new();
    for chunk in ids.chunks(RETRY_BATCH) {
        done.extend(queue::retry(conn, chunk)?);
        if show_progress {
            eprint!("\rretried {}/{}", done.len(), ids.len());
        } else if !json && ids.len() > RETRY_BATCH {
            eprintln!("retried {}/{}", done.len(), ids.len());
        }
    }
    if show_progress {
        eprintln!();
    }
    let skipped: Vec<i64> = ids.iter().copied().filter(|i| !done.contains(i)).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"retried": done, "not_retried": skipped})
        );
    } else {
        println!(
            "{} item(s) queued again; the running daemon sends them within a second",
            done.len()
        );
        if !skipped.is_empty() {
            println!("not retried (no such item, or already done or skipped): {skipped:?}");
        }
    }
    Ok(if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn drop_items(
    conn: &crate::store::sql::Sql<'_>,
    ids: &[i64],
    yes: bool,
    json: bool,
) -> Result<ExitCode, crate::store::DbError> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("refusing to drop without confirmation: add --yes");
            return Ok(ExitCode::FAILURE);
        }
        print!("drop {} item(s) for good: {ids:?}? [y/N] ", ids.len());
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing dropped");
            return Ok(ExitCode::FAILURE);
        }
    }
    let removed = queue::drop_items(conn, ids)?;
    if json {
        println!("{}", serde_json::json!({ "dropped": removed }));
    } else {
        println!("{} item(s) dropped", removed.len());
    }
    Ok(if removed.len() == ids.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
