//! Root never follows the daemon's files (DESIGN §4 rule 14). `setup`, `capture`,
//! `queue` and `doctor` run as root in a state directory that belongs to the daemon's
//! user; whatever that user planted there — a symlink to root's files, `/dev/zero`, a
//! FIFO — is refused or replaced, never followed, and its target stays as it was.
//!
//! The state directory and what is planted in it belong to `nobody` here, as they would
//! to `fb-openchannel` on a real host; the commands run as root. That needs root (CI runs
//! as root); elsewhere each test says SKIPPED and how to run it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Peers, cli, cli_within};

/// `nobody`'s uid and gid when this runs as root; `None` (and SKIPPED said) otherwise.
pub fn nobody(test: &str) -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED {test}: needs root (to give the state directory to another user); run `sudo cargo test {test}`; CI runs it"
        );
        return None;
    }
    let name = std::ffi::CString::new("nobody").unwrap();
    // SAFETY: a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no user nobody on this host");
    // SAFETY: non-null, as checked.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Gives `path` (itself, not what a symlink points at) to `owner`.
pub fn give(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// What must not change: owner, group, mode and, for a file, the bytes.
pub fn fingerprint(path: &Path) -> (u32, u32, u32, Vec<u8>) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let bytes = if meta.is_file() {
        std::fs::read(path).unwrap()
    } else {
        Vec::new()
    };
    (meta.uid(), meta.gid(), meta.permissions().mode(), bytes)
}

/// A file and a directory of root's, outside the state directory: what an attacker
/// would point a symlink at.
pub struct RootsFiles {
    _dir: tempfile::TempDir,
    pub file: PathBuf,
    pub dir: PathBuf,
}

impl RootsFiles {
    pub fn new() -> RootsFiles {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("shadow");
        std::fs::write(&file, b"root:secret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let sub = dir.path().join("etc");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        RootsFiles {
            file,
            dir: sub,
            _dir: dir,
        }
    }
}

/// The state directory (the peers' folder) given to `nobody` with what is in it.
pub fn give_state_dir(peers: &Peers, owner: (u32, u32)) {
    for entry in std::fs::read_dir(peers.dir.path()).unwrap().flatten() {
        give(&entry.path(), owner);
    }
    give(peers.dir.path(), owner);
}

#[tokio::test]
async fn capture_as_root_never_writes_or_chowns_through_a_planted_symlink() {
    let Some(nobody) = nobody("capture_as_root_never_writes_or_chowns_through_a_planted_symlink")
    else {
        return;
    };
    let peers = Peers::start().await;
    let config = peers.dir.path().join("config.toml");
    std::fs::write(&config, peers.config_toml("")).unwrap();
    let config = config.to_str().unwrap().to_owned();
    give_state_dir(&peers, nobody);
    let roots = RootsFiles::new();
    let (file_before, dir_before) = (fingerprint(&roots.file), fingerprint(&roots.dir));

    // `capture/until` planted as a symlink to a root file: replaced, not written through.
    let capture = peers.dir.path().join("capture");
    std::fs::create_dir(&capture).unwrap();
    give(&capture, nobody);
    std::os::unix::fs::symlink(&roots.file, capture.join("until")).unwrap();
    give(&capture.join("until"), nobody);
    let (code, out, err) = cli(&["capture", "--for", "1m", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        fingerprint(&roots.file),
        file_before,
        "root's file was touched"
    );
    let until = std::fs::symlink_metadata(capture.join("until")).unwrap();
    assert!(until.is_file(), "the control file is a file of its own now");
    assert_eq!((until.uid(), until.mode() & 0o777), (nobody.0, 0o600));
    let (code, out, err) = cli(&["capture", "--off", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");

    // `capture/` itself a symlink to a root directory: refused, the directory untouched.
    std::fs::remove_dir_all(&capture).unwrap();
    std::os::unix::fs::symlink(&roots.dir, &capture).unwrap();
    give(&capture, nobody);
    let (code, out, err) = cli(&["capture", "--for", "1m", "--config", &config]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        fingerprint(&roots.dir),
        dir_before,
        "root's directory was touched"
    );
    assert!(std::fs::read_dir(&roots.dir).unwrap().next().is_none());

    // A directory of a third user is not used either.
    std::fs::remove_file(&capture).unwrap();
    std::fs::create_dir(&capture).unwrap();
    give(&capture, (nobody.0 + 1, nobody.1));
    let (code, out, err) = cli(&["capture", "--for", "1m", "--config", &config]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("owned by uid"), "{err}");
}

#[tokio::test]
async fn capture_check_and_doctor_read_no_device_or_fifo_planted_for_root() {
    let Some(nobody) = nobody("capture_check_and_doctor_read_no_device_or_fifo_planted_for_root")
    else {
        return;
    };
    let peers = Peers::start().await;
    let config = peers.dir.path().join("config.toml");
    std::fs::write(&config, peers.config_toml("")).unwrap();
    let config = config.to_str().unwrap().to_owned();
    give_state_dir(&peers, nobody);
    let capture = peers.dir.path().join("capture");
    std::fs::create_dir(&capture).unwrap();
    give(&capture, nobody);
    // An endless "capture file", a FIFO and a symlink to root's file.
    std::os::unix::fs::symlink("/dev/zero", capture.join("0001-webhook.json")).unwrap();
    let fifo = std::ffi::CString::new(
        capture
            .join("0002-webhook.json")
            .to_str()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let roots = RootsFiles::new();
    std::os::unix::fs::symlink(&roots.file, capture.join("0003-webhook.json")).unwrap();
    let (code, out, err) = cli_within(
        &["capture", "--check", "--config", &config],
        Duration::from_secs(10),
        "a FIFO or /dev/zero",
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.contains("root:secret"), "{out}");
}

/// `queue import` as root into PostgreSQL on a new host (README: "Moving to another
/// host", "Two hosts"): it makes the queue's schema and nothing in the state folder,
/// which is the daemon's to make (a folder root made, with its spool, would be one the
/// daemon cannot write).
#[tokio::test]
async fn queue_import_as_root_into_postgres_makes_nothing_in_the_state_folder() {
    let Some(NewNode {
        peers,
        config,
        new_host,
        _pg,
    }) = NewNode::start("queue_import_as_root_into_postgres_makes_nothing_in_the_state_folder")
        .await
    else {
        return;
    };
    let file = peers.dir.path().join("queue.jsonl");
    std::fs::write(
        &file,
        "{\"format\":\"fb-openchannel-queue\",\"version\":1,\"schema\":15,\"exported_at\":0}\n",
    )
    .unwrap();
    let (code, out, err) = cli(&[
        "queue",
        "import",
        file.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("imported 0 item(s)"), "{out}");
    assert!(!new_host.exists(), "root made the daemon's state folder");
}

/// `reconcile` as root on a node of a shared queue: what it finds is stored in
/// PostgreSQL, and the node's state folder is neither made nor written (no spool, no
/// `node-id` of root's), so the daemon started after it owns all of its folder. The
/// command runs as a process while this runtime serves the simulated peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_as_root_on_postgres_makes_nothing_in_the_state_folder() {
    use crate::harness::{PAGE_A, PSID};
    use fb_openchannel::sim::facebook::InboxMessage;
    let test = "reconcile_as_root_on_postgres_makes_nothing_in_the_state_folder";
    let Some(NewNode {
        peers,
        config,
        new_host,
        _pg,
    }) = NewNode::start(test).await
    else {
        return;
    };
    let at_ms = (fb_openchannel::time::now_ms() - 120_000) / 1000 * 1000;
    let found = InboxMessage {
        mid: "m_root".into(),
        from_customer: true,
        text: Some("found by root".into()),
        at_ms,
        image_url: None,
    };
    peers
        .graph
        .add_inbox_message(PAGE_A, "messenger", PSID, found);
    let reconcile = || {
        let args = ["reconcile", "--page", PAGE_A, "--since", "1h", "--config"];
        let (code, out, err) = cli(&[&args[..], &[config.to_str().unwrap()]].concat());
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let out = reconcile();
    assert!(out.contains("1 stored"), "{out}");
    assert!(!new_host.exists(), "root made the daemon's state folder");

    // The folder the daemon made: root adds nothing to it either.
    std::fs::create_dir(&new_host).unwrap();
    give(&new_host, nobody(test).unwrap());
    let out = reconcile();
    assert!(out.contains("0 messages Meta did not send"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&new_host).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "root wrote in the daemon's folder: {left:?}"
    );
}

/// A node of a shared queue on a new host, for a command run as root: a private
/// PostgreSQL, the simulated peers, a config whose queue is in PostgreSQL and whose state
/// folder (`new-host` in the peers' folder) does not exist yet. `None` (and SKIPPED said)
/// without root or PostgreSQL.
struct NewNode {
    peers: Peers,
    config: PathBuf,
    new_host: PathBuf,
    _pg: fb_openchannel::sim::postgres::PrivatePostgres,
}

impl NewNode {
    async fn start(test: &str) -> Option<NewNode> {
        use fb_openchannel::sim::postgres::{PrivatePostgres, SKIPPED};
        nobody(test)?;
        let Some(pg) = PrivatePostgres::start().unwrap() else {
            eprintln!("{SKIPPED}");
            return None;
        };
        pg.create_database("newnode").unwrap();
        let peers = Peers::start().await;
        let new_host = peers.dir.path().join("new-host");
        let text = peers
            .config_toml("")
            .replace(
                peers.store_path().to_str().unwrap(),
                new_host.join("state.db").to_str().unwrap(),
            )
            .replace(
                "[storage]\n",
                &format!(
                    "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\n",
                    pg.url("newnode")
                ),
            );
        assert!(text.contains("new-host") && text.contains("postgres"));
        let config = peers.dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        Some(NewNode {
            peers,
            config,
            new_host,
            _pg: pg,
        })
    }
}

/// `queue` and `doctor` as root open the daemon's SQLite file, never what its user put in
/// its place: a symlink to a database of root's (which the schema's upkeep would write
/// into), a FIFO (a read that never ends), or a symlink planted as its WAL (which SQLite
/// would write through). The commands run as processes while this runtime serves the
/// simulated peers (`doctor` asks them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_doctor_as_root_open_no_database_planted_for_them() {
    let Some(nobody) = nobody("queue_and_doctor_as_root_open_no_database_planted_for_them") else {
        return;
    };
    // A state database the daemon made, the daemon stopped.
    let mut bench = crate::harness::Bench::start().await;
    bench.daemon.take().unwrap().stop().await;
    let peers = &bench.peers;
    let dir = peers.dir.path().to_owned();
    let config = dir.join("config.toml").to_str().unwrap().to_owned();
    let db = dir.join("state.db");
    let (code, out, err) = cli(&["queue", "stats", "--config", &config]);
    assert_eq!(code, 0, "the genuine database: {out}{err}");

    let roots = RootsFiles::new();
    let theirs = roots.dir.join("other.db");
    rusqlite::Connection::open(&theirs)
        .unwrap()
        .execute_batch("CREATE TABLE precious(x); INSERT INTO precious VALUES ('keep');")
        .unwrap();
    let before = fingerprint(&theirs);
    std::fs::rename(&db, dir.join("moved.db")).unwrap();
    for (what, plant) in [
        ("a symlink", Plant::Symlink(theirs.clone())),
        ("a FIFO", Plant::Fifo),
    ] {
        plant.at(&db);
        give_state_dir(peers, nobody);
        for args in [&["queue", "stats"][..], &["queue", "list"], &["doctor"]] {
            let args = [args, &["--config", &config]].concat();
            let (code, out, err) = cli_within(&args, Duration::from_secs(20), what);
            assert_ne!(code, 0, "{args:?} used {what}: {out}{err}");
            assert!(
                format!("{out}{err}").contains("not a regular file"),
                "{args:?} on {what}: {out}{err}"
            );
        }
        assert_eq!(fingerprint(&theirs), before, "root's database was touched");
        assert_eq!(std::fs::read_dir(&roots.dir).unwrap().count(), 1);
        std::fs::remove_file(&db).unwrap();
    }

    // The genuine database back, its WAL a symlink to root's file: refused, not written.
    std::fs::rename(dir.join("moved.db"), &db).unwrap();
    let _ = std::fs::remove_file(dir.join("state.db-wal"));
    std::os::unix::fs::symlink(&roots.file, dir.join("state.db-wal")).unwrap();
    give_state_dir(peers, nobody);
    let file_before = fingerprint(&roots.file);
    let (code, out, err) = cli(&["queue", "stats", "--config", &config]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("state.db-wal is not a regular file"), "{err}");
    assert_eq!(
        fingerprint(&roots.file),
        file_before,
        "root's file was touched"
    );
}

/// What the daemon's user puts where its database was.
enum Plant {
    Symlink(PathBuf),
    Fifo,
}

impl Plant {
    fn at(&self, path: &Path) {
        match self {
            Plant::Symlink(to) => std::os::unix::fs::symlink(to, path).unwrap(),
            Plant::Fifo => {
                let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
                // SAFETY: a valid C string.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }
        }
    }
}

/// `doctor` and `capture --check` as root read nothing through a `capture/` or `acme/`
/// folder the daemon's user turned into a symlink to a directory of root's, and `doctor`
/// reads no FIFO or `/dev/zero` planted as ACME's certificate (it would wait, or read,
/// forever). The commands run as processes while this runtime serves the peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_and_capture_check_read_nothing_through_a_planted_folder() {
    let Some(nobody) = nobody("doctor_and_capture_check_read_nothing_through_a_planted_folder")
    else {
        return;
    };
    let peers = Peers::start().await;
    let acme = "acme = { domains = [\"fb.example.com\"], directory = \"https://127.0.0.1:9/d\" }";
    let text =
        crate::certificates::without_certificate_files(&peers.config_toml_with(acme, "", ""));
    let config = peers.dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let roots = RootsFiles::new();
    let secret = "{\"request\":{\"body\":\"root:secret\"}}";
    std::fs::write(roots.dir.join("0001-webhook.json"), secret).unwrap();
    std::fs::write(roots.dir.join("status.json"), "{\"failures\": 77}").unwrap();
    std::fs::copy(&peers.certs.cert_path, roots.dir.join("certificate.pem")).unwrap();
    for name in ["capture", "acme"] {
        std::os::unix::fs::symlink(&roots.dir, peers.dir.path().join(name)).unwrap();
    }
    give_state_dir(&peers, nobody);

    let (code, out, err) = cli(&["capture", "--check", "--config", &config]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!out.contains("file(s) checked"), "{out}");
    let (_, out, err) = cli(&["doctor", "--config", &config]);
    let certificate = out
        .lines()
        .find(|l| l.contains("certificate"))
        .unwrap_or("");
    assert!(certificate.contains("symbolic link"), "{out}{err}");
    assert!(
        !out.contains("77 in a row"),
        "root's status.json was read: {out}"
    );

    // A real folder, with a FIFO and then /dev/zero as its certificate.
    let acme_dir = peers.dir.path().join("acme");
    std::fs::remove_file(&acme_dir).unwrap();
    std::fs::create_dir(&acme_dir).unwrap();
    give(&acme_dir, nobody);
    let pem = acme_dir.join("certificate.pem");
    let fifo = std::ffi::CString::new(pem.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    for planted in ["a FIFO", "/dev/zero"] {
        if planted == "/dev/zero" {
            std::fs::remove_file(&pem).unwrap();
            std::os::unix::fs::symlink("/dev/zero", &pem).unwrap();
        }
        let doctor = ["doctor", "--config", &config];
        let (_, out, err) = cli_within(&doctor, Duration::from_secs(30), planted);
        let certificate = out
            .lines()
            .find(|l| l.contains("certificate"))
            .unwrap_or("");
        assert!(
            certificate.contains("not a regular file"),
            "{planted}: {out}{err}"
        );
    }
}
