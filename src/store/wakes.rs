//! The dispatchers' wake-ups. Storing new work wakes this node's dispatcher of its
//! direction at once. On a shared queue (PostgreSQL) the other nodes are told too, on a
//! channel of the server (`LISTEN`/`NOTIFY`), so that their dispatchers look at the
//! queue within milliseconds instead of at their next once-a-second look: work stored
//! here while another node held the conversation, the conversations a stopping node let
//! go, items an operator retried.
//!
//! A node tells the others from a task with a connection of its own, at most once per
//! [`TELL_EVERY`] and direction: a burst of webhooks is one wake-up of the other nodes,
//! not one each. Never in a webhook's transaction: a transaction that notifies takes a
//! lock at its commit that every other notifying commit waits for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Socket};
use tracing::{info, warn};

use rusqlite::params;

use super::sql::{DbError, Sql};
use super::{Direction, Store};

/// The server's channel the nodes tell each other on. Each message is `<direction>
/// <node>`: a node does not wake itself for what it told.
pub const CHANNEL: &str = "fb_openchannel_work";

/// How a node starts hearing the channel ([`CHANNEL`]: an identifier, not a parameter).
const LISTEN: &str = "LISTEN fb_openchannel_work";

/// The most often a node tells the others, per direction.
const TELL_EVERY: Duration = Duration::from_millis(50);

/// How soon a lost connection for the wake-ups is made again (each node still looks at
/// the queue every second meanwhile).
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// The SQL that tells the other nodes (`$1`: the channel, `$2`: the message).
const TELL: &str = "SELECT pg_notify($1, $2)";

/// On a shared queue, tells every node (`from` excepted) to look at the queue once the
/// transaction of `conn` commits: for rare transactions (a stopping node's leases ended,
/// an operator's retry). Nothing on SQLite.
pub fn tell_in_transaction(conn: &Sql<'_>, from: &str) -> Result<(), DbError> {
    if conn.is_postgres() {
        for direction in [Direction::Inbound, Direction::Outbound] {
            conn.exec(
                "SELECT pg_notify(?1, ?2)",
                params![CHANNEL, message(direction, from)],
            )?;
        }
    }
    Ok(())
}

/// The message that tells of work of `direction` from `node`.
pub fn message(direction: Direction, node: &str) -> String {
    [direction.as_str(), node].join(" ")
}

/// This node's wake-ups, and what it has yet to tell the others.
#[derive(Default)]
pub(super) struct Wakes {
    here: [Arc<Notify>; 2],
    untold: [AtomicBool; 2],
    tell: Notify,
}

fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

impl Wakes {
    /// A message on the channel: wakes the dispatcher of its direction, unless this node
    /// sent it.
    fn heard(&self, message: &str, node: &str) {
        let Some((direction, from)) = message.split_once(' ') else {
            return;
        };
        if from == node {
            return;
        }
        if let Some(d) = Direction::parse(direction) {
            self.here[slot(d)].notify_one();
        }
    }
}

impl Store {
    /// What wakes this node's dispatcher of `direction`.
    pub fn wake(&self, direction: Direction) -> Arc<Notify> {
        self.wakes.here[slot(direction)].clone()
    }

    /// New work of `direction` is stored: this node's dispatcher looks at once, and on a
    /// shared queue the other nodes' soon after ([`Store::wake_other_nodes`]).
    pub fn new_work(&self, direction: Direction) {
        self.wakes.here[slot(direction)].notify_one();
        if self.shared.is_some() {
            self.wakes.untold[slot(direction)].store(true, Ordering::Relaxed);
            self.wakes.tell.notify_one();
        }
    }

    /// On a shared queue, until `shutdown`: tells the other nodes of the work stored here
    /// and wakes this node's dispatchers for theirs. Ends at once on SQLite.
    pub async fn wake_other_nodes(self, mut shutdown: watch::Receiver<bool>) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let target = shared.target.clone();
        let mut broken: Option<String> = None;
        while !*shutdown.borrow() {
            let ended = match &target.tls {
                Some(tls) => {
                    self.listen(&target.listen, tls.clone(), &mut broken, &mut shutdown)
                        .await
                }
                None => {
                    let tls = tokio_postgres::NoTls;
                    self.listen(&target.listen, tls, &mut broken, &mut shutdown)
                        .await
                }
            };
            let Err(e) = ended else { return };
            // Once per outage: a server that stays away fails each try alike.
            if broken.is_none() {
                warn!(
                    server = %shared.server,
                    "wake-ups between the nodes of the shared queue stopped: {e}; this node still looks at the queue every second, and tries again each second"
                );
                broken = Some(e);
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONNECT_EVERY) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One connection's life: `LISTEN`, then tell and hear until it breaks (an error) or
    /// `shutdown` (Ok). `broken` is the last failure told in the journal, if any.
    async fn listen<T>(
        &self,
        config: &tokio_postgres::Config,
        tls: T,
        broken: &mut Option<String>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), String>
    where
        T: MakeTlsConnect<Socket>,
        T::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let Some(shared) = self.shared.clone() else {
            return Ok(());
        };
        let (client, mut connection) = tokio::select! {
            connected = config.connect(tls) => connected.map_err(|e| e.to_string())?,
            _ = shutdown.changed() => return Ok(()),
        };
        let (wakes, node) = (self.wakes.clone(), shared.node.clone());
        // The connection's own task: it carries the client's queries and hears the
        // channel. Its end (the server gone) ends this life.
        let mut driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => wakes.heard(n.payload(), &node),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e.to_string(),
                    None => return "the server closed the connection".to_owned(),
                }
            }
        });
        let listening = async {
            if let Err(e) = client.batch_execute(LISTEN).await {
                return e.to_string();
            }
            if broken.take().is_some() {
                info!(server = %shared.server, "wake-ups between the nodes of the shared queue work again");
            }
            // What was stored while this node did not listen.
            for wake in &self.wakes.here {
                wake.notify_one();
            }
            self.tell(&client, &shared.node).await
        };
        let ended = tokio::select! {
            e = listening => Err(e),
            e = &mut driver => Err(e.unwrap_or_else(|e| e.to_string())),
            _ = shutdown.changed() => Ok(()),
        };
        driver.abort();
        ended
    }

    /// Tells the other nodes of the work stored here, as it is, at most once per
    /// [`TELL_EVERY`] and direction. Ends only with an error.
    async fn tell(&self, client: &tokio_postgres::Client, node: &str) -> String {
        loop {
            self.wakes.tell.notified().await;
            for direction in [Direction::Inbound, Direction::Outbound] {
                if self.wakes.untold[slot(direction)].swap(false, Ordering::Relaxed) {
                    let told = client
                        .execute(TELL, &[&CHANNEL, &message(direction, node)])
                        .await;
                    if let Err(e) = told {
                        return e.to_string();
                    }
                }
            }
            tokio::time::sleep(TELL_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_hears_the_others_and_not_itself() {
        assert!(LISTEN.ends_with(&format!(" {CHANNEL}")));
        let wakes = Wakes::default();
        wakes.heard(&message(Direction::Outbound, "b/12/0a"), "a/7/ff");
        wakes.heard(&message(Direction::Inbound, "a/7/ff"), "a/7/ff");
        for garbled in ["", "in", "sideways b/12/0a", "in"] {
            wakes.heard(garbled, "a/7/ff");
        }
        let waker = futures_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut out = std::pin::pin!(wakes.here[slot(Direction::Outbound)].notified());
        assert!(out.as_mut().poll(&mut cx).is_ready(), "woken by node b");
        let mut inbound = std::pin::pin!(wakes.here[slot(Direction::Inbound)].notified());
        assert!(inbound.as_mut().poll(&mut cx).is_pending(), "not by itself");
    }

    fn futures_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
