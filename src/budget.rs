//! Memory held for files, after authentication too (DESIGN §4 rule 15).
//!
//! A file moves through the daemon whole: a customer's photo from Facebook's CDN on its
//! way into Motion, an agent's file from Motion on its way to Graph — up to 25 MB each.
//! Every transfer first holds room for its size (as the peer declares it, else the
//! largest a file may be) in one budget shared by all of them, and waits for room when the
//! budget is taken; its bytes are read only once the room is held, and the room is given
//! back when the file is dropped — so a file is never fetched, dropped for lack of room
//! and fetched again. Before this, 40 replies
//! with 25 MiB files took the daemon past a 512 MiB memory limit: killed, restarted,
//! killed again, and every restart sent again what was in flight.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Room for files in transit: a few at once of the largest kind (25 MB), many small ones.
pub const FILE_MEMORY: usize = 64 * 1024 * 1024;

/// Room for verified bodies being read back, parsed and stored.
pub const VERIFIED_MEMORY: usize = 96 * 1024 * 1024;

/// What a verified body holds while it is parsed, as a multiple of its size: the bytes,
/// the JSON tree read from them, and the events taken from it (measured: ~5×).
pub const PARSE_COST: usize = 6;

/// The shared budgets of bodies not verified yet, and of verified ones being parsed.
#[derive(Debug)]
pub struct BodyBudget {
    pub(crate) memory: Arc<Semaphore>,
    pub(crate) memory_bytes: usize,
    pub(crate) spool: Arc<Semaphore>,
    pub(crate) spool_bytes: usize,
    pub(crate) spool_dir: PathBuf,
    pub(crate) verified: Arc<Semaphore>,
    pub(crate) verified_units: u32,
}

/// Permits are counted in KiB: a semaphore takes at most `u32` permits at once.
pub const UNIT: usize = 1024;

/// `bytes` as permits, rounded up.
pub fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    pub fn new(memory_bytes: usize, spool_bytes: usize, spool_dir: PathBuf) -> BodyBudget {
        let verified_units = units(VERIFIED_MEMORY);
        BodyBudget {
            memory: Arc::new(Semaphore::new(memory_bytes / UNIT)),
            memory_bytes,
            spool: Arc::new(Semaphore::new(spool_bytes / UNIT)),
            spool_bytes,
            spool_dir,
            verified: Arc::new(Semaphore::new(verified_units as usize)),
            verified_units,
        }
    }

    /// Bytes of verified bodies being parsed now (their room, at [`PARSE_COST`]).
    pub fn verified_in_use(&self) -> usize {
        (self.verified_units as usize - self.verified.available_permits()) * UNIT
    }

    /// Bytes of unverified bodies held now: `(in memory, in spool files)`.
    pub fn in_use(&self) -> (usize, usize) {
        (
            self.memory_bytes
                .saturating_sub(self.memory.available_permits() * UNIT),
            self.spool_bytes
                .saturating_sub(self.spool.available_permits() * UNIT),
        )
    }
}

/// The memory budget of files in transit.
#[derive(Debug, Clone)]
pub struct FileBudget {
    room: Arc<Semaphore>,
    units: u32,
}

/// Room held for one file, given back when the last copy of the file is dropped.
#[derive(Debug, Clone)]
pub struct Held(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl FileBudget {
    pub fn new(bytes: usize) -> FileBudget {
        let units = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).max(1);
        FileBudget {
            room: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// Holds room for a file of at most `bytes`, waiting until there is some (a file
    /// larger than the whole budget waits for all of it).
    pub async fn hold(&self, bytes: usize) -> Held {
        let want = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        Held(Arc::new(
            self.room
                .clone()
                .acquire_many_owned(want)
                .await
                .expect("the budget's semaphore is never closed"),
        ))
    }

    /// Bytes held now (metrics, tests).
    pub fn in_use(&self) -> usize {
        (self.units as usize - self.room.available_permits()) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_waits_for_room_and_gets_it_when_another_is_done() {
        let budget = FileBudget::new(50 * UNIT);
        let first = budget.hold(30 * UNIT).await;
        assert_eq!(budget.in_use(), 30 * UNIT);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.hold(30 * UNIT).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room yet");
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!(budget.in_use(), 30 * UNIT);
        drop(second);
        // Larger than the budget: waits for all of it, never forever.
        let all = budget.hold(10 * 50 * UNIT).await;
        assert_eq!(budget.in_use(), 50 * UNIT);
        drop(all);
    }
}
