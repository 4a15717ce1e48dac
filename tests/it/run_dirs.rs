//! Working directories that name their owner (`sim::rundirs`): the benchmark's, and the
//! private PostgreSQL servers'. A new one removes what interrupted runs left, stopping a
//! server still running from it, and touches nothing else.

use std::path::Path;

use fb_openchannel::sim::postgres::{PrivatePostgres, SKIPPED};
use fb_openchannel::sim::rundirs::{OWNER, create, effective_uid, sweep};

const PREFIX: &str = "fbo-bench";

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
    // Another user's directory of our name, looking interrupted (the temporary directory
    // is everyone's): given away only where this test may (as root, as CI runs it).
    let planted = (effective_uid() == 0).then(|| {
        let dir = run_dir(p, &format!("{PREFIX}Uv12Wx"), Some(gone.clone()));
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        dir
    });
    if planted.is_none() {
        eprintln!("not root: the case of another user's directory is not checked");
    }

    let (mine, removed) = create(p, PREFIX).unwrap();
    assert_eq!(removed, std::slice::from_ref(&interrupted));
    assert!(!interrupted.exists());
    let mut kept_all = vec![&running, &unmarked, &garbled, &someone_elses, &target];
    kept_all.extend(planted.as_ref());
    for kept in kept_all {
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
    let mut stopped = Vec::new();
    assert!(
        sweep(p, PREFIX, &[effective_uid()], |d| stopped
            .push(d.to_owned()))
        .is_empty()
    );
    assert!(stopped.is_empty(), "{stopped:?}");
    assert!(mine.path().exists());
}

/// Whether process `pid` has ended (gone, or a zombie its parent has not reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
fn a_private_postgresql_left_running_by_an_interrupted_test_is_stopped_and_removed() {
    let Some(left) = PrivatePostgres::start().unwrap() else {
        eprintln!("{SKIPPED}");
        return;
    };
    let dir = left.dir().to_owned();
    let postmaster: u32 = std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!ended(postmaster));
    // Its owner was killed: nothing stopped the server or removed the directory.
    std::fs::write(dir.join(OWNER), gone_pid().to_string()).unwrap();
    std::mem::forget(left);

    let next = PrivatePostgres::start().unwrap().unwrap();
    assert!(!dir.exists(), "{} was left", dir.display());
    // `pg_ctl -w stop` returned once the server removed its pid file, on its way out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ended(postmaster) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(ended(postmaster), "the server {postmaster} still runs");
    // The new server is this process's, and runs.
    let owner = std::fs::read_to_string(next.dir().join(OWNER)).unwrap();
    assert_eq!(owner, std::process::id().to_string());
    next.create_database("after").unwrap();
}
