//! Working directories in the system's temporary directory that say which process owns
//! them: the benchmark's databases (200–300 MB after a full run) and the private
//! PostgreSQL servers of the tests and the benchmark. A process removes its own when it
//! ends normally; one that is interrupted (Ctrl-C, a kill, a CI timeout) cannot, so each
//! new one first removes the directories of owners that are gone, and repeated
//! interrupted runs neither fill the disk nor leave servers running.

use std::path::{Path, PathBuf};

/// The file in a directory that names the process owning it.
pub const OWNER: &str = "owner.pid";

/// Removes what gone owners left under `parent` with this `prefix` (see [`sweep`]), then
/// creates a directory there marked as this process's. Returns it, and the directories
/// removed.
pub fn create(parent: &Path, prefix: &str) -> std::io::Result<(tempfile::TempDir, Vec<PathBuf>)> {
    let removed = sweep(parent, prefix, &[effective_uid()], |_| {});
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
    std::fs::write(dir.path().join(OWNER), std::process::id().to_string())?;
    Ok((dir, removed))
}

/// Removes the directories under `parent` whose owner is gone, calling `before_removal`
/// on each first (to stop what still runs from it); returns them. Only a real directory
/// (not a link), belonging to one of the users `uids` (the temporary directory is
/// everyone's: another user's directory of that name is not ours to act on), whose name
/// starts with `prefix` and whose owner file names a process that no longer runs is
/// touched: nothing else in the temporary directory, and never one whose owner is alive.
pub fn sweep(
    parent: &Path,
    prefix: &str,
    uids: &[u32],
    mut before_removal: impl FnMut(&Path),
) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        // The entry's own metadata: a link is not followed.
        let ours = entry.file_name().to_string_lossy().starts_with(prefix)
            && entry
                .metadata()
                .is_ok_and(|m| m.is_dir() && uids.contains(&m.uid()));
        if !ours {
            continue;
        }
        let path = entry.path();
        let owner = std::fs::read_to_string(path.join(OWNER)).ok();
        let Some(pid) = owner.and_then(|o| o.trim().parse::<u32>().ok()) else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        before_removal(&path);
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Whether process `pid` still runs (Linux: it has an entry in /proc).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The user this process acts as.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
