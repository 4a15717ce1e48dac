//! The worker threads: one connection each, one transaction per request, and what
//! they do when the server goes away.

use super::*;

/// What the workers of one store share about losing the server.
pub(super) struct Outage {
    /// Connections found broken by any worker: a server that restarted broke them all,
    /// so each worker connects again before its next request instead of failing it.
    pub(super) lost: Arc<AtomicU64>,
    /// The loss is in the log: one line when it goes, one when it is back.
    pub(super) announced: Arc<AtomicBool>,
    /// See [`Shared::reconnected_at`].
    pub(super) reconnected_at: Arc<AtomicI64>,
}

/// One worker: takes requests one at a time and runs each in a transaction on its own
/// connection.
pub(super) fn run_worker(
    mut conn: Option<PgConn>,
    config: &Target,
    rx: &Mutex<mpsc::UnboundedReceiver<Request>>,
    stats: &StoreStats,
    outage: &Outage,
) {
    let Outage {
        lost,
        announced,
        reconnected_at,
    } = outage;
    let server = describe(&config.config);
    let mut connected_at = lost.load(Ordering::Relaxed);
    // When this worker last failed to connect (for the pace), and on the clock the
    // workers share (to tell whether another one got through since).
    let mut last_failure: Option<(Instant, i64)> = None;
    // Why the connection is gone, while it is.
    let mut down: Option<String> = None;
    loop {
        let mut request = {
            let mut rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            match rx.blocking_recv() {
                Some(r) => r,
                None => return,
            }
        };
        stats.waiting.fetch_sub(1, Ordering::Relaxed);
        let access = request.access;
        if access == Access::Durable {
            stats.durable.taken(std::iter::once(request.sent));
        }
        let write = access != Access::Read;
        // A connection that a restart of the server broke is mostly found so only by
        // using it: a request it fails before any of it ran goes once more on a new
        // connection, at once, instead of failing for a server that is back.
        let mut again = false;
        let (finish, outcome) = loop {
            if conn.as_ref().is_none_or(|c| c.client.is_closed())
                || lost.load(Ordering::Relaxed) != connected_at
            {
                if conn.take().is_some() && down.is_none() {
                    down = Some("connection lost".into());
                }
                connected_at = lost.load(Ordering::Relaxed);
                // Paced while the server is away; at once when another worker has reached
                // it since this one last failed to (the server is back, and failing this
                // request for the pace alone would answer a webhook 503 for nothing).
                let due = last_failure.is_none_or(|(at, at_ms)| {
                    at.elapsed() >= RECONNECT_EVERY
                        || reconnected_at.load(Ordering::Relaxed) >= at_ms
                });
                if due {
                    match connect(config) {
                        Ok(c) => {
                            last_failure = None;
                            let announced = announced.swap(false, Ordering::Relaxed);
                            if down.take().is_some() || announced {
                                reconnected_at.store(now_ms(), Ordering::Relaxed);
                            }
                            if announced {
                                tracing::info!(
                                    server = %server,
                                    "connected to PostgreSQL again at {server}: the queue works again"
                                );
                            }
                            conn = Some(c);
                        }
                        Err(e) => {
                            last_failure = Some((Instant::now(), now_ms()));
                            down = Some(e);
                        }
                    }
                }
            }
            let Some(c) = conn.as_mut() else {
                let reason = format!(
                    "PostgreSQL at {server} cannot be reached: {}",
                    down.as_deref().unwrap_or("connection lost")
                );
                break ((request.job)(None), Err(reason));
            };
            match run_one(c, request) {
                Ran::Done(finish, outcome) => {
                    break (
                        finish,
                        outcome.map_err(|e| format!("PostgreSQL at {server}: {e}")),
                    );
                }
                Ran::Unbegun(back, e) => {
                    conn = None;
                    if again {
                        break (
                            (back.job)(None),
                            Err(format!("PostgreSQL at {server}: {e}")),
                        );
                    }
                    down = Some(e);
                    again = true;
                    request = back;
                }
            }
        };
        if write {
            stats.note_write(&outcome);
            if outcome.is_ok() {
                let counter = if access == Access::Durable {
                    &stats.write_commits
                } else {
                    &stats.relaxed_commits
                };
                counter.fetch_add(1, Ordering::Relaxed);
                stats.write_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err(e) = &outcome
            && conn.as_ref().is_none_or(|c| c.client.is_closed())
        {
            if !announced.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    server = %server,
                    error = %e,
                    "lost the connection to PostgreSQL ({e}): webhooks are answered 503 (Facebook sends them again) and deliveries wait until it is back; the daemon connects again by itself"
                );
            }
            down = Some(e.clone());
            // A connection made before the last loss tells nothing new; one made since
            // says the server went away again, and the others' connections with it.
            let _ = lost.compare_exchange(
                connected_at,
                connected_at + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        finish(outcome);
    }
}

/// What became of a request on a connection.
pub(super) enum Ran {
    /// It ran: what answers its caller, and how its transaction ended.
    Done(Finish, Result<(), String>),
    /// The connection was found broken before any of it ran: the request, untouched,
    /// and why.
    Unbegun(Request, String),
}

/// Runs one request in a transaction of its own.
pub(super) fn run_one(c: &mut PgConn, request: Request) -> Ran {
    let text = |e: postgres::Error| DbError::Postgres(e).to_string();
    let begin = match request.access {
        Access::Read => "BEGIN READ ONLY",
        Access::Durable => "BEGIN",
        Access::Relaxed => "BEGIN; SET LOCAL synchronous_commit = off",
    };
    c.failed = false;
    if let Err(e) = c.client.batch_execute(begin) {
        // The server's own refusal is the request's answer; anything else (a closed
        // socket, a reset) is the connection's.
        if e.as_db_error().is_none() || c.client.is_closed() {
            return Ran::Unbegun(request, text(e));
        }
        return Ran::Done((request.job)(None), Err(text(e)));
    }
    let finish = (request.job)(Some(&Sql::Pg(RefCell::new(&mut *c))));
    let end = if c.failed { "ROLLBACK" } else { "COMMIT" };
    let outcome = c.client.batch_execute(end).map_err(text);
    Ran::Done(finish, outcome)
}
