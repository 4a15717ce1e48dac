//! `GET /oauth/callback` on the public listener: where Facebook Login sends the admin's
//! browser back to during `fb-openchannel setup`, and only then.
//!
//! `setup` runs as another process (as root); the two meet in `<state dir>/setup/`
//! (0700, owned like the state directory): `setup` writes `waiting.json` — the SHA-256 of
//! its one-time `state` and when the wait ends — and the daemon, when the browser comes
//! back with a matching `state` before then, writes the code (or Facebook's refusal) to
//! `callback.json` and removes `waiting.json`, so a `state` is taken once. Without a
//! waiting setup the path is 404, like any other; a wrong `state` is 403 and changes
//! nothing. The code alone is worth nothing without the app secret, and lives minutes.

use std::path::Path;

use crate::statedir::{Dir, DirError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What `setup` leaves for the daemon.
#[derive(Debug, Serialize, Deserialize)]
pub struct Waiting {
    /// Hex SHA-256 of the `state` parameter `setup` put in the login link.
    pub state_sha256: String,
    /// Unix seconds after which the callback is refused.
    pub until: i64,
}

/// What the daemon leaves for `setup`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    /// Facebook's `error_reason` / `error_description` (the admin said no).
    pub error: Option<String>,
}

/// Largest value taken from the callback's query (codes are a few hundred characters).
const MAX_VALUE: usize = 2048;

/// The hand-off files, in `<state dir>/setup/`.
pub const WAITING: &str = "waiting.json";
pub const CALLBACK: &str = "callback.json";
/// Largest hand-off file read (both are a few hundred bytes).
pub const MAX_FILE: u64 = 8 * 1024;

/// The hand-off directory `<state dir>/setup/`, 0700 and the daemon's, opened by
/// descriptor: `setup` runs as root in a directory the daemon's user can write (see
/// `statedir`).
pub fn handoff(store_path: &Path) -> Result<Dir, DirError> {
    Dir::state(crate::statedir::of_store(store_path))?.private_subdir("setup")
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The daemon's side: the answer to the browser, and what it writes (blocking file
/// work: call it off the runtime).
pub fn answer(store_path: &Path, query: &str, now_s: i64) -> (u16, &'static str) {
    // Nothing is made for a request: without a waiting setup there is no directory.
    let dir = Dir::state(crate::statedir::of_store(store_path))
        .and_then(|state| state.existing_subdir("setup"));
    let Ok(Some(dir)) = dir else {
        return (404, "not found\n");
    };
    let waiting: Option<Waiting> = dir
        .read(WAITING, MAX_FILE)
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let Some(waiting) = waiting.filter(|w| w.until >= now_s) else {
        return (404, "not found\n");
    };
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty() && v.len() <= MAX_VALUE)
    };
    let state_ok = param("state").is_some_and(|state| {
        bool::from(
            sha256_hex(&state)
                .as_bytes()
                .ct_eq(waiting.state_sha256.as_bytes()),
        )
    });
    if !state_ok {
        return (
            403,
            "This login link is not the one fb-openchannel setup is waiting for. Use the link setup printed last.\n",
        );
    }
    let callback = Callback {
        code: param("code"),
        error: param("error_description").or_else(|| param("error_reason")),
    };
    // Taken once: the wait ends before the code is handed over.
    if dir.remove(WAITING).is_err() {
        return (404, "not found\n");
    }
    let bytes = serde_json::to_vec(&callback).expect("serializes");
    if dir.write(CALLBACK, &bytes).is_err() {
        return (
            503,
            "fb-openchannel could not hand the login to setup (its state directory cannot be written); run setup again.\n",
        );
    }
    if callback.code.is_some() {
        (
            200,
            "fb-openchannel: Facebook login received. Go back to the terminal where setup runs; you can close this window.\n",
        )
    } else {
        (
            200,
            "fb-openchannel: Facebook did not give the permissions. Go back to the terminal where setup runs.\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(store: &Path, state: &str, until: i64) {
        let w = Waiting {
            state_sha256: sha256_hex(state),
            until,
        };
        handoff(store)
            .unwrap()
            .write(WAITING, &serde_json::to_vec(&w).unwrap())
            .unwrap();
    }

    #[test]
    fn only_the_waiting_state_is_taken_and_only_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("state.db");
        assert_eq!(answer(&store, "code=c&state=s", 100).0, 404, "nobody waits");
        waiting(&store, "s3cret-state", 200);
        assert_eq!(answer(&store, "code=c&state=other", 100).0, 403);
        assert_eq!(answer(&store, "code=c", 100).0, 403);
        assert_eq!(
            answer(&store, "code=c&state=s3cret-state", 300).0,
            404,
            "too late"
        );
        assert_eq!(
            answer(&store, "code=the-code&state=s3cret-state", 100).0,
            200
        );
        let cb: Callback = serde_json::from_slice(
            &std::fs::read(store.with_file_name("setup").join(CALLBACK)).unwrap(),
        )
        .unwrap();
        assert_eq!(cb.code.as_deref(), Some("the-code"));
        assert_eq!(
            answer(&store, "code=again&state=s3cret-state", 100).0,
            404,
            "a state is taken once"
        );
    }
}
