//! Reading a webhook body whose signature is not known yet, with memory bounded across
//! all connections (DESIGN §4 rule 11).
//!
//! Anyone on the internet can open thousands of connections and send each a large body
//! with a made-up signature; before the fix, 400 connections holding a 1 MiB body each
//! took 400 MiB. Here:
//! - a request without a well-formed `X-Hub-Signature-256` is refused before a byte of
//!   its body is read;
//! - the body is hashed as it arrives (the signature is checked at its end), and kept in
//!   memory only within one **memory budget** shared by every connection
//!   (`public.body_memory`, 32 MiB by default);
//! - once the budget is taken, bodies go to a **spool file** in the state directory
//!   instead (an unnamed temporary file, gone when closed, even after a crash), within a
//!   disk budget of its own (`public.body_spool`, 1 GiB); a real webhook sent during a
//!   flood is therefore still read, checked and answered;
//! - only when both are taken is a request answered 503 (Facebook sends it again).
//!
//! A verified body came from Facebook (or from someone with the app secret) and is read
//! into memory whole and parsed — which holds some six times its size for a moment
//! (50 signed 7.3 MiB feed batches at once peaked at 1.5 GiB). So a verified body first
//! holds room for that in a budget shared by all requests ([`VERIFIED_MEMORY`](crate::budget::VERIFIED_MEMORY)), waits
//! for room until the request's deadline, and is answered 503 past it (Meta sends it
//! again); the room is given back once the body is stored (DESIGN §4 rule 15).

use std::io::SeekFrom;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::budget::{BodyBudget as Budget, PARSE_COST, units};
use crate::facebook::signature::{SignatureError, Verifier};

/// A verified body, with its room in the budget of bodies being parsed: keep it until
/// the body is stored.
#[derive(Debug)]
pub struct Verified {
    pub bytes: Vec<u8>,
    pub room: OwnedSemaphorePermit,
    /// Which secret signed it.
    pub signed_by: crate::facebook::signature::SignedBy,
}

/// Why a body was not taken.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("the body is over the {0}-byte limit (public.max_body_bytes)")]
    TooLarge(usize),
    #[error("the body did not arrive within public.request_timeout")]
    Timeout,
    #[error("the body could not be read ({0})")]
    Broken(String),
    #[error(
        "no room to read the body: the memory and spool budgets for unverified bodies are taken (public.body_memory, public.body_spool) — many large requests at once"
    )]
    Busy,
    #[error("cannot spool the body ({0})")]
    Spool(String),
    #[error(
        "no room to parse the verified body before the request's deadline: other large webhooks are being parsed (Meta sends it again)"
    )]
    NoRoom,
}

/// Where the body read so far is.
enum Held {
    Memory {
        chunks: Vec<Bytes>,
        permits: Vec<OwnedSemaphorePermit>,
    },
    Spooled {
        file: tokio::fs::File,
        _permits: Vec<OwnedSemaphorePermit>,
    },
}

/// Reads `body` (at most `max` bytes, until `deadline`), checking its signature as it
/// comes; returns the verified bytes.
pub async fn read_signed(
    budget: &Budget,
    mut body: Incoming,
    max: usize,
    deadline: tokio::time::Instant,
    secrets: (&[u8], Option<&[u8]>),
    signature: Option<&[u8]>,
) -> Result<Verified, BodyError> {
    // A request that cannot be Facebook's is refused before its body is read at all.
    let mut verifier = Verifier::start_with(secrets.0, secrets.1, signature)?;
    let mut held = Held::Memory {
        chunks: Vec::new(),
        permits: Vec::new(),
    };
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(chunk.len());
        if total > max {
            return Err(BodyError::TooLarge(max));
        }
        verifier.update(&chunk);
        held = keep(budget, held, &chunk).await?;
    }
    let signed_by = verifier.finish_which()?;
    // Verified: it is Facebook's, and may be whole in memory now — once there is room
    // for it and its parse (a body larger than the whole budget waits for all of it).
    let room = room_to_parse(budget, total, deadline).await?;
    let bytes = match held {
        Held::Memory { chunks, .. } => {
            let mut bytes = Vec::with_capacity(total);
            for c in chunks {
                bytes.extend_from_slice(&c);
            }
            bytes
        }
        Held::Spooled { mut file, .. } => {
            let mut bytes = Vec::with_capacity(total);
            file.flush()
                .await
                .map_err(|e| BodyError::Spool(e.to_string()))?;
            file.seek(SeekFrom::Start(0))
                .await
                .map_err(|e| BodyError::Spool(e.to_string()))?;
            file.read_to_end(&mut bytes)
                .await
                .map_err(|e| BodyError::Spool(e.to_string()))?;
            bytes
        }
    };
    Ok(Verified {
        bytes,
        room,
        signed_by,
    })
}

/// Room for a verified body of `total` bytes and its parse, waited for until `deadline`.
async fn room_to_parse(
    budget: &Budget,
    total: usize,
    deadline: tokio::time::Instant,
) -> Result<OwnedSemaphorePermit, BodyError> {
    let want = units(total.saturating_mul(PARSE_COST)).clamp(1, budget.verified_units);
    tokio::time::timeout_at(deadline, budget.verified.clone().acquire_many_owned(want))
        .await
        .map_err(|_| BodyError::NoRoom)?
        .map_err(|_| BodyError::NoRoom)
}

/// Adds `chunk` to what is held: in memory while the memory budget allows, else in a
/// spool file.
async fn keep(budget: &Budget, held: Held, chunk: &Bytes) -> Result<Held, BodyError> {
    let need = units(chunk.len());
    match held {
        Held::Memory {
            mut chunks,
            mut permits,
        } => {
            if let Ok(permit) = budget.memory.clone().try_acquire_many_owned(need) {
                // A copy of exactly this size: the connection's read buffer is not held.
                chunks.push(Bytes::copy_from_slice(chunk));
                permits.push(permit);
                return Ok(Held::Memory { chunks, permits });
            }
            // Memory is taken: this body goes to disk, and gives its memory back.
            let so_far: usize = chunks.iter().map(Bytes::len).sum();
            let spool_permit = budget
                .spool
                .clone()
                .try_acquire_many_owned(units(so_far + chunk.len()))
                .map_err(|_| BodyError::Busy)?;
            let dir = budget.spool_dir.clone();
            let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                .await
                .map_err(|e| BodyError::Spool(e.to_string()))?
                .map_err(|e| BodyError::Spool(e.to_string()))?;
            let mut file = tokio::fs::File::from_std(file);
            for c in chunks {
                file.write_all(&c)
                    .await
                    .map_err(|e| BodyError::Spool(e.to_string()))?;
            }
            drop(permits);
            file.write_all(chunk)
                .await
                .map_err(|e| BodyError::Spool(e.to_string()))?;
            Ok(Held::Spooled {
                file,
                _permits: vec![spool_permit],
            })
        }
        Held::Spooled {
            mut file,
            _permits: mut permits,
        } => {
            let permit = budget
                .spool
                .clone()
                .try_acquire_many_owned(need)
                .map_err(|_| BodyError::Busy)?;
            permits.push(permit);
            file.write_all(chunk)
                .await
                .map_err(|e| BodyError::Spool(e.to_string()))?;
            Ok(Held::Spooled {
                file,
                _permits: permits,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{UNIT, VERIFIED_MEMORY};

    /// Verified bodies share the room for their parse: one waits while others hold it,
    /// gets it when they are stored, and is refused at its deadline; one body larger than
    /// the whole budget waits for all of it instead of never getting in.
    #[tokio::test]
    async fn verified_bodies_wait_for_room_to_parse_and_are_refused_at_their_deadline() {
        let b = Budget::new(4 * UNIT, 8 * UNIT, std::env::temp_dir());
        let soon = || tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        let body = VERIFIED_MEMORY / PARSE_COST / 2;
        let first = room_to_parse(&b, body, soon()).await.unwrap();
        let second = room_to_parse(&b, body, soon()).await.unwrap();
        assert_eq!(b.verified_in_use(), 2 * body * PARSE_COST);
        assert!(matches!(
            room_to_parse(&b, body, soon()).await,
            Err(BodyError::NoRoom)
        ));
        drop(first);
        let third = room_to_parse(&b, body, soon()).await.unwrap();
        drop((second, third));
        let huge = room_to_parse(&b, 10 * VERIFIED_MEMORY, soon())
            .await
            .unwrap();
        assert_eq!(b.verified_in_use(), VERIFIED_MEMORY);
        drop(huge);
        assert_eq!(b.verified_in_use(), 0);
    }

    #[test]
    fn budgets_count_what_is_held() {
        let b = Budget::new(4 * UNIT, 8 * UNIT, std::env::temp_dir());
        assert_eq!(b.in_use(), (0, 0));
        let m = b
            .memory
            .clone()
            .try_acquire_many_owned(units(1500))
            .unwrap();
        assert_eq!(b.in_use(), (2 * UNIT, 0));
        drop(m);
        assert_eq!(b.in_use(), (0, 0));
        assert!(
            b.memory
                .clone()
                .try_acquire_many_owned(units(5 * UNIT))
                .is_err()
        );
    }
}
