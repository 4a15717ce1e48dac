//! ACME on a shared queue (several nodes on one PostgreSQL): one node orders at a time,
//! every node serves the newest certificate any of them obtained, and the CA's check
//! finds the proof on whichever node it reaches. Without this, each node ordered its own
//! certificate and proved it on the port the floating IP pointed at: the standby's
//! orders failed, and its certificate ran out unseen until a failover.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Acme, write_private};
use crate::server::challenges::Lookup;
use crate::server::tls::{self, Facts};
use crate::store::{OrderHeld, Store};

/// How often a node looks at the shared certificate, and at whether the node ordering
/// has finished: a renewal reaches every node within this.
pub(super) const RECHECK: Duration = Duration::from_secs(10);

/// How long a node holds the order at most (the order's calls and the CA's checks take
/// far less; a node that dies while ordering frees it after this).
pub(super) const ORDER_HOLD: Duration = Duration::from_secs(600);

/// What a node answers the CA's check with when the check reaches it: the proof the
/// ordering node put in the shared queue (asked for the configured names only).
pub(super) fn proof_lookup(store: Store) -> Lookup {
    Arc::new(move |name: String| {
        let store = store.clone();
        Box::pin(async move {
            let digest = store.acme_challenge(&name).await.ok()??;
            <[u8; 32]>::try_from(hex::decode(digest).ok()?).ok()
        })
    })
}

/// The row of the newest certificate from `directory` (the nodes share only one from
/// the directory they are configured with).
pub fn certificate_row(directory: &str) -> String {
    format!("certificate {directory}")
}

/// Log lines said once until what they say changes.
#[derive(Default)]
pub(super) struct Told {
    /// The node holding the order, and its last failure.
    holder: Option<(String, Option<String>)>,
    unreachable: bool,
}

impl Acme {
    /// The shared queue, when the nodes share the ACME side.
    pub(super) fn shared_store(&self) -> Option<&Store> {
        match &self.keeper {
            super::order::Keeper::Shared(store) => Some(store),
            super::order::Keeper::Files(_) => None,
        }
    }

    /// The newest certificate wins: the shared queue's is served here when it is newer
    /// and for every configured name (the facts returned), this node's is put there when
    /// it is newer (one ordered before the nodes shared, or put there while the server
    /// was away).
    pub(super) async fn sync_shared(&self, store: &Store) -> Result<Option<Facts>, String> {
        let name = certificate_row(&self.settings.directory);
        let row = store.acme_row(&name).await.map_err(|e| e.to_string())?;
        let served = self.certs.facts();
        // One from another directory (staging's) counts as none: any shared one is better.
        let served_until = match self.served_from_elsewhere() {
            true => 0,
            false => served.not_after * 1000,
        };
        let shared_until = row.as_ref().map_or(0, |r| r.until);
        if let Some(row) = row.filter(|r| r.until > served_until) {
            let loaded = tls::parse_pem(row.body.as_bytes()).map_err(|e| {
                format!("the certificate in the shared queue cannot be served: {e}")
            })?;
            if loaded.facts.not_after * 1000 <= served_until || !self.covers(&loaded.facts) {
                return Ok(None);
            }
            write_private(&self.dir.join("certificate.pem"), row.body.as_bytes())?;
            self.certs
                .reload()
                .map_err(|e| format!("the shared queue's certificate cannot be served: {e}"))?;
            self.served_from_here();
            return Ok(Some(self.certs.facts().as_ref().clone()));
        }
        if served_until > shared_until && self.covers(&served) {
            let text = std::fs::read_to_string(self.certs.path())
                .map_err(|e| format!("cannot read {}: {e}", self.certs.path().display()))?;
            store
                .put_acme_row(&name, text, served.not_after * 1000)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(None)
    }

    /// Takes the order for this node (`None`), or says which node holds it (once per
    /// holder and failure) and until when (Unix seconds): not this node's turn before.
    pub(super) async fn take_order(
        &self,
        store: &Store,
        names: &str,
        told: &mut Told,
    ) -> Option<i64> {
        let now = crate::time::now_ms();
        match store
            .take_acme_order(now + ORDER_HOLD.as_millis() as i64)
            .await
        {
            Ok(None) => {
                told.holder = None;
                told.unreachable = false;
                None
            }
            Ok(Some(OrderHeld {
                holder,
                until,
                last_error,
            })) => {
                let said = Some((holder.clone(), last_error.clone()));
                if told.holder != said {
                    let last = match &last_error {
                        Some(e) => format!(
                            "; its last order failed ({e}), it tries again {}",
                            super::when(until / 1000)
                        ),
                        None => String::new(),
                    };
                    info!(domains = %names, node = %holder, "ACME: node {holder} orders the certificate for {names} for the nodes of the shared queue{last}; this node serves it once it is there");
                    told.holder = said;
                }
                Some(until.max(now) / 1000)
            }
            Err(e) => {
                if !told.unreachable {
                    warn!(domains = %names, "ACME: the certificate for {names} is due, but the shared queue cannot say which node orders it ({e}); this node asks again every {} s", RECHECK.as_secs());
                    told.unreachable = true;
                }
                Some(now / 1000)
            }
        }
    }

    /// Tells the other nodes how this node's order went: the new certificate, or the
    /// failure and `next`, the time (Unix seconds) before which no node tries again.
    pub(super) async fn hand_on(&self, result: &Result<Facts, String>, next: i64, names: &str) {
        let Some(store) = self.shared_store() else {
            return;
        };
        let published = match result {
            Ok(_) => self.sync_shared(store).await.map(drop),
            Err(_) => Ok(()),
        };
        let ended = store
            .end_acme_order(next * 1000, result.as_ref().err().cloned())
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = published.and(ended) {
            warn!(domains = %names, "ACME: cannot hand the outcome of this node's order for {names} to the other nodes ({e}); they look again every {} s", RECHECK.as_secs());
        }
    }

    /// Looks at the shared certificate; says once if that cannot be done.
    pub(super) async fn look_shared(
        &self,
        store: &Store,
        names: &str,
        told: &mut Told,
    ) -> Option<Facts> {
        match self.sync_shared(store).await {
            Ok(adopted) => {
                told.unreachable = false;
                adopted
            }
            Err(e) => {
                if !told.unreachable {
                    warn!(domains = %names, "ACME: cannot compare this node's certificate for {names} with the shared queue's ({e}); asking again every {} s", RECHECK.as_secs());
                    told.unreachable = true;
                }
                None
            }
        }
    }
}
