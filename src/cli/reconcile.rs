//! `fb-openchannel reconcile`: compares an account's inbox (Meta's Conversations API) with
//! the queue now, and stores what Meta never sent by webhook; the running daemon delivers
//! it within a second (as it does for `queue retry`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::output::{Style, timestamp};
use crate::relay::reconcile::{self, Report};
use crate::relay::{Live, Shared};
use crate::store::Store;

pub struct Options {
    pub page: Option<String>,
    pub instagram: Option<String>,
    pub since: Duration,
    pub dry_run: bool,
}

#[derive(Serialize)]
struct Found {
    account: String,
    conversations: usize,
    messages: usize,
    missing: Vec<Line>,
    stored: usize,
    dry_run: bool,
}

#[derive(Serialize)]
struct Line {
    conversation: String,
    mid: String,
    at: String,
    from_customer: bool,
}

pub fn main(path: &std::path::Path, options: Options, json: bool) -> ExitCode {
    let config = match super::config_for_command(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(account) = options.page.clone().or(options.instagram.clone()) else {
        eprintln!("name the account: --page ID or --instagram ID");
        return ExitCode::FAILURE;
    };
    if let Err(e) = root_may_open(&config) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let since =
        crate::time::now_ms() - crate::time::duration_ms(options.since.min(reconcile::MAX_WINDOW));
    let runtime = super::command_runtime();
    let outcome = runtime.block_on(async {
        crate::http_client::install_crypto_provider();
        let storage = config.storage.clone();
        let store_path = storage.path.clone();
        let capture = crate::capture::Capture::new(&store_path);
        let spool = crate::store::spool_dir(&store_path);
        let bodies = crate::budget::BodyBudget::new(
            config.public.body_memory,
            config.public.body_spool,
            spool,
        );
        let live = Live::new(config, None)?;
        let store = tokio::task::spawn_blocking(move || {
            if storage.is_postgres() {
                Store::open_postgres_for_command(&storage)
            } else {
                Store::open(&store_path)
            }
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let shared: Arc<Shared> = Shared::new(live, store, bodies, capture);
        reconcile::account(&shared, &account, since, options.dry_run)
            .await
            .map_err(|e| format!("{e}; {}", e.hint()))
    });
    match outcome {
        Ok(report) => {
            print(&report, options.dry_run, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("reconcile {account}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(report: &Report, dry_run: bool, json: bool) {
    let found = Found {
        account: report.account.clone(),
        conversations: report.conversations,
        messages: report.messages,
        missing: report
            .missing
            .iter()
            .map(|m| Line {
                conversation: m.customer.clone(),
                mid: m.mid.clone(),
                at: timestamp(m.at_ms),
                from_customer: m.from_customer,
            })
            .collect(),
        stored: report.stored,
        dry_run,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found).expect("plain data")
        );
        return;
    }
    let style = Style::detect();
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let what = plural(
        found.missing.len(),
        "message Meta did not send",
        "messages Meta did not send",
    );
    let done = if found.missing.is_empty() {
        String::new()
    } else if dry_run {
        ", listed only (--dry-run)".to_owned()
    } else {
        format!(
            ", {} stored: the running daemon delivers them in their conversations' order",
            found.stored
        )
    };
    println!(
        "{} {}: {} ({}), {what}{done}",
        if found.missing.is_empty() {
            style.good("✓")
        } else {
            style.bad("!")
        },
        found.account,
        plural(found.conversations, "conversation", "conversations"),
        plural(found.messages, "message", "messages"),
    );
    for m in &found.missing {
        let who = if m.from_customer {
            "customer"
        } else {
            "sent by the account"
        };
        println!("  {}  {}  {}  ({who})", m.at, m.conversation, m.mid);
    }
}

/// Root opening the daemon's SQLite file would leave root-owned journal files the daemon
/// cannot write (DESIGN §4 rule 14): say to run it as the daemon's user instead.
fn root_may_open(config: &crate::config::Config) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if config.storage.is_postgres() || unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    match std::fs::symlink_metadata(&config.storage.path) {
        Ok(meta) if meta.uid() != 0 => Err(format!(
            "{} belongs to the daemon's user: run this as that user, e.g. `sudo -u fb-openchannel fb-openchannel reconcile …`",
            config.storage.path.display()
        )),
        _ => Ok(()),
    }
}
