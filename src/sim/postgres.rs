//! A private PostgreSQL server for tests: its own data directory (a temporary one), its
//! own port on loopback, trust authentication, started with the machine's `initdb` and
//! `pg_ctl` and stopped when dropped. Not a simulation: the real server, so that the
//! queue is tested against what sites run.
//!
//! When PostgreSQL is not installed, [`PrivatePostgres::start`] says so (`Ok(None)`)
//! and the tests that need it print how to run them (`apt-get install postgresql`).
//! As root (CI), the server runs as the `postgres` user, as PostgreSQL insists.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::rundirs;

/// How the private servers' directories begin, in the system's temporary directory.
pub const PREFIX: &str = "fbo-pg";

/// A running private server.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The user that runs the server, when we are root.
    run_as: Option<String>,
    pub port: u16,
    /// The server's certificate and key, when it speaks TLS.
    tls: Option<(PathBuf, PathBuf)>,
}

/// The tests' words when PostgreSQL is missing.
pub const SKIPPED: &str = "SKIPPED: PostgreSQL is not installed. Run `apt-get install postgresql` (Debian's package; the tests start a private server of their own), then `cargo test`; .ci/run installs it.";

/// The directory of `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/<v>/bin`, or
/// `$PATH`.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("pg_ctl").exists() && p.join("initdb").exists())
    })
}

impl PrivatePostgres {
    /// Makes and starts a server; `Ok(None)` when PostgreSQL is not installed.
    pub fn start() -> Result<Option<PrivatePostgres>, String> {
        Self::start_inner(None)
    }

    /// Like [`PrivatePostgres::start`], speaking TLS (`ssl = on`) with this certificate
    /// chain and key (PEM).
    pub fn start_with_tls(cert: &Path, key: &Path) -> Result<Option<PrivatePostgres>, String> {
        Self::start_inner(Some((cert, key)))
    }

    fn start_inner(tls: Option<(&Path, &Path)>) -> Result<Option<PrivatePostgres>, String> {
        let Some(bin) = binaries() else {
            return Ok(None);
        };
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = root.then(|| "postgres".to_owned());
        // A test or benchmark that was killed left its server running: stop it, and
        // remove its directory, before making another.
        // Ours, or (as root) the server user's, to whom they are given.
        let mut uids = vec![rundirs::effective_uid()];
        uids.extend(
            run_as
                .as_deref()
                .and_then(|user| user_ids(user).ok())
                .map(|(uid, _)| uid),
        );
        let left = rundirs::sweep(&std::env::temp_dir(), PREFIX, &uids, |dir| {
            let data = dir.join("data");
            if data.join("postmaster.pid").exists() {
                let data = data.to_str().unwrap_or_default();
                let stop = ["-D", data, "-m", "immediate", "-w", "stop"];
                let _ = run_program(&bin, run_as.as_deref(), dir, "pg_ctl", &stop);
            }
        });
        for dir in left {
            eprintln!(
                "stopped the PostgreSQL server of {} and removed it: its test or benchmark was interrupted",
                dir.display()
            );
        }
        let (dir, _) = rundirs::create(&std::env::temp_dir(), PREFIX).map_err(|e| e.to_string())?;
        if let Some(user) = &run_as {
            chown_to(dir.path(), user)?;
        }
        let port = free_port()?;
        // The server reads its key only when it is its user's alone.
        let tls = match tls {
            Some((cert, key)) => {
                let (c, k) = (dir.path().join("server.crt"), dir.path().join("server.key"));
                for (from, to) in [(cert, &c), (key, &k)] {
                    std::fs::copy(from, to).map_err(|e| e.to_string())?;
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| e.to_string())?;
                    if let Some(user) = &run_as {
                        chown_to(to, user)?;
                    }
                }
                Some((c, k))
            }
            None => None,
        };
        let server = PrivatePostgres {
            dir,
            bin,
            run_as,
            port,
            tls,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-A",
                "trust",
                "-U",
                "fb",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        server.start_server()?;
        Ok(Some(server))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs (as the server's user when we are root).
    fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        run_program(
            &self.bin,
            self.run_as.as_deref(),
            self.dir.path(),
            program,
            args,
        )
    }

    /// Starts the server (again, after [`PrivatePostgres::crash`]); returns once it
    /// accepts connections.
    pub fn start_server(&self) -> Result<(), String> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        if let Some((cert, key)) = &self.tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-l",
                log.to_str().unwrap_or_default(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
        .map(drop)
    }

    /// Stops the server the hard way (`immediate`: no checkpoint, as if the machine
    /// failed); what it committed is on disk and comes back with [`start_server`].
    ///
    /// [`start_server`]: PrivatePostgres::start_server
    pub fn crash(&self) -> Result<(), String> {
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .map(drop)
    }

    /// Freezes the server and every process of it (SIGSTOP), as a hung host or a
    /// partition that drops packets looks from outside: connections stay open, nothing
    /// answers. [`PrivatePostgres::resume`] lets it go on.
    pub fn pause(&self) -> Result<(), String> {
        self.signal_all(libc::SIGSTOP)
    }

    pub fn resume(&self) -> Result<(), String> {
        self.signal_all(libc::SIGCONT)
    }

    /// Sends `signal` to the postmaster and its children.
    fn signal_all(&self, signal: libc::c_int) -> Result<(), String> {
        let pid_file = self.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).map_err(|e| e.to_string())?;
        let pid: i32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("no pid in postmaster.pid")?;
        let mut pids = vec![pid];
        for entry in std::fs::read_dir("/proc")
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …: the parent is the 2nd field after the comm.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if parent == Some(pid) {
                pids.push(child);
            }
        }
        for p in pids {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(p, signal) };
        }
        Ok(())
    }

    /// A URL for `database` (made by [`PrivatePostgres::create_database`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://fb@127.0.0.1:{}/{database}", self.port)
    }

    /// Makes a new empty database.
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        let url = self.url("postgres");
        // The blocking client runs its own runtime: off the caller's, on a thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut client =
                    postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
                client
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("PostgreSQL's client panicked".to_owned()))
        })
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}

/// Runs `program` of the server's binaries in `dir` (as `run_as` when given).
fn run_program(
    bin: &Path,
    run_as: Option<&str>,
    dir: &Path,
    program: &str,
    args: &[&str],
) -> Result<String, String> {
    let exe = bin.join(program);
    let mut command = match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out = command
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn chown_to(dir: &Path, user: &str) -> Result<(), String> {
    let (uid, gid) = user_ids(user)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| e.to_string())
}

/// A user's uid and gid.
fn user_ids(user: &str) -> Result<(u32, u32), String> {
    let name = std::ffi::CString::new(user).map_err(|e| e.to_string())?;
    // SAFETY: getpwnam with a valid C string; the record is read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(format!("no user {user} to run PostgreSQL as"));
    }
    Ok(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}
