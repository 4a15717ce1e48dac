//! The benchmark's working directories (benches/relay/rundirs.rs): a run removes what
//! interrupted runs left, and nothing else.

use std::path::Path;

use crate::rundirs::{OWNER, PREFIX, create, sweep};

/// A process id that no longer runs: a child that has exited and been waited for.
fn gone_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn run_dir(parent: &Path, name: &str, owner: Option<String>) -> std::path::PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("state.db"), b"a database").unwrap();
    if let Some(owner) = owner {
        std::fs::write(dir.join(OWNER), owner).unwrap();
    }
    dir
}

#[test]
fn a_run_removes_the_directories_of_interrupted_runs_and_nothing_else() {
    let parent = tempfile::tempdir().unwrap();
    let p = parent.path();
    let gone = gone_pid().to_string();
    let interrupted = run_dir(p, &format!("{PREFIX}Ab12Cd"), Some(gone.clone()));
    let running = run_dir(
        p,
        &format!("{PREFIX}Ef34Gh"),
        Some(std::process::id().to_string()),
    );
    let unmarked = run_dir(p, &format!("{PREFIX}Ij56Kl"), None);
    let garbled = run_dir(p, &format!("{PREFIX}Mn78Op"), Some("not a pid".into()));
    let someone_elses = run_dir(p, "other-tool-dir", Some(gone.clone()));
    // A link with our name to a directory that looks interrupted: neither is touched.
    let target = run_dir(p, "linked-target", Some(gone.clone()));
    let link = p.join(format!("{PREFIX}Qr90St"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // A plain file with our name.
    let file = p.join(format!("{PREFIX}file"));
    std::fs::write(&file, gone.as_bytes()).unwrap();

    let (mine, removed) = create(p).unwrap();
    assert_eq!(removed, std::slice::from_ref(&interrupted));
    assert!(!interrupted.exists());
    for kept in [&running, &unmarked, &garbled, &someone_elses, &target] {
        assert!(
            kept.join("state.db").exists(),
            "{} was removed",
            kept.display()
        );
    }
    assert!(link.symlink_metadata().is_ok() && file.exists());

    // This run's own directory names it, so a run alongside leaves it alone.
    let owner = std::fs::read_to_string(mine.path().join(OWNER)).unwrap();
    assert_eq!(owner, std::process::id().to_string());
    assert!(
        mine.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(PREFIX)
    );
    assert!(sweep(p).is_empty());
    assert!(mine.path().exists());
}
