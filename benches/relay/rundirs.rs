//! The benchmark's working directories, in the system's temporary directory. A run keeps
//! its databases there (200–300 MB after a full run) and removes them when it ends. A run
//! that is interrupted (Ctrl-C, killed) cannot, so each run first removes the directories
//! of runs that are gone: repeated interrupted runs no longer fill the disk.

use std::path::{Path, PathBuf};

/// How this benchmark's directories begin.
pub const PREFIX: &str = "fbo-bench";

/// The file in a run's directory that names its process.
pub const OWNER: &str = "owner.pid";

/// Removes what interrupted runs left under `parent`, then creates this run's directory
/// there, marked as this process's. Returns it, and the directories removed.
pub fn create(parent: &Path) -> std::io::Result<(tempfile::TempDir, Vec<PathBuf>)> {
    let removed = sweep(parent);
    let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)?;
    std::fs::write(dir.path().join(OWNER), std::process::id().to_string())?;
    Ok((dir, removed))
}

/// Removes the directories under `parent` whose run's process is gone; returns them.
/// Only a real directory (not a link) with this benchmark's prefix and an owner file
/// naming a process that no longer runs is touched: nothing else in the temporary
/// directory, and never a run still going (its process is alive).
pub fn sweep(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let ours = entry.file_name().to_string_lossy().starts_with(PREFIX)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !ours {
            continue;
        }
        let path = entry.path();
        let owner = std::fs::read_to_string(path.join(OWNER)).ok();
        let Some(pid) = owner.and_then(|o| o.trim().parse::<u32>().ok()) else {
            continue;
        };
        if !alive(pid) && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Whether process `pid` still runs (Linux: it has an entry in /proc).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}
