//! Files in the state directory, from commands that run as root (DESIGN §4 rule 14).
//!
//! The state directory belongs to the daemon's user. `setup`, `capture`, `queue` and
//! `doctor` run as root and meet the daemon there, so everything under it is treated as
//! written by another user, who may have planted a symlink, a FIFO or `/dev/zero` under
//! any name, or swap one in between two steps:
//! - the state directory itself is opened once, by the path the config gives (its
//!   parents are root's), and everything below it is reached **from that descriptor**,
//!   never by a path again (`openat`, `mkdirat`, `renameat`, `unlinkat`), each last
//!   component with `O_NOFOLLOW`;
//! - a directory is used only if it is owned by root or by the state directory's owner;
//! - a file is written as a new file (`O_CREAT | O_EXCL`, mode 0600), synced, given to
//!   the daemon's user by its descriptor (`fchown`), and renamed over the old name
//!   (which replaces a planted symlink instead of writing through it);
//! - a file is read only if it is a regular file of at most a few KiB, opened with
//!   `O_NOFOLLOW | O_NONBLOCK` (a FIFO neither blocks nor feeds us forever).
//!
//! Nothing here ever calls `chown`, `chmod` or `open` by a path below the state
//! directory.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What went wrong, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is owned by uid {uid}, neither root nor the state directory's owner (uid {expected}): not used (someone else may have put it there)"
    )]
    Owner {
        path: PathBuf,
        uid: u32,
        expected: u32,
    },
    #[error("{path} is {kind}, not {wanted}: not used (someone else may have put it there)")]
    Kind {
        path: PathBuf,
        kind: &'static str,
        wanted: &'static str,
    },
    #[error("{path} holds over {max} bytes: not read")]
    TooLarge { path: PathBuf, max: u64 },
}

/// A directory opened once and used by its descriptor.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Owner of the state directory (the daemon's user): who may own what is inside,
    /// besides root, and who is given what root writes.
    owner: (u32, u32),
}

fn name_c(name: &str) -> CString {
    // Names are ours ("setup", "waiting.json"): never from outside, never with a NUL.
    debug_assert!(!name.contains('/') && !name.contains('\0'));
    CString::new(name).expect("a file name without NUL")
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn stat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_error());
    }
    Ok(st)
}

fn kind_of(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        _ => "something unknown",
    }
}

/// The state directory: the folder of the state database (`storage.path`).
pub fn of_store(store_path: &Path) -> &Path {
    store_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The existing subdirectory `name` of the state folder of the database at
/// `store_path`, opened as root may open it (see [`Dir::existing_subdir`]); `None` when
/// there is none.
pub fn existing_subdir(store_path: &Path, name: &str) -> Result<Option<Dir>, DirError> {
    Dir::state(of_store(store_path))?.existing_subdir(name)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Dir {
    /// Opens the state directory by the path the config gives (its parents belong to
    /// root: a path the admin chose). It is the daemon's to create: root making it
    /// would leave the daemon a directory it cannot write.
    pub fn state(path: &Path) -> Result<Dir, DirError> {
        let io = |source| DirError::Io {
            path: path.to_owned(),
            source,
        };
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| io(e.into()))?;
        // SAFETY: a valid C string; the descriptor returned is owned below.
        let raw = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io(last_error()));
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = stat(&fd).map_err(io)?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
            owner: (st.st_uid, st.st_gid),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state directory's owner: the daemon's user and group.
    pub fn owner(&self) -> (u32, u32) {
        self.owner
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn open_at(
        &self,
        name: &str,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> std::io::Result<OwnedFd> {
        let c = name_c(name);
        // SAFETY: a valid directory descriptor and C string; the result is owned below.
        let raw = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        if raw < 0 {
            return Err(last_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// The subdirectory `name`, made 0700 and the daemon's if missing. A symlink, a
    /// file, or a directory owned by anyone but root and the daemon's user is refused.
    pub fn private_subdir(&self, name: &str) -> Result<Dir, DirError> {
        let c = name_c(name);
        // SAFETY: a valid directory descriptor and C string.
        let made = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o700) } == 0;
        if !made {
            let e = last_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(DirError::Io {
                    path: self.join(name),
                    source: e,
                });
            }
        }
        self.subdir_checked(name, made)
    }

    /// The existing subdirectory `name`, checked like [`Dir::private_subdir`]; `None`
    /// when there is none.
    pub fn existing_subdir(&self, name: &str) -> Result<Option<Dir>, DirError> {
        match self.subdir_checked(name, false) {
            Err(DirError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    fn subdir_checked(&self, name: &str, made: bool) -> Result<Dir, DirError> {
        let path = self.join(name);
        let io = |source| DirError::Io {
            path: path.clone(),
            source,
        };
        let fd = match self.open_at(name, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(e)
                if e.raw_os_error() == Some(libc::ELOOP)
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                let kind = self.kind(name).unwrap_or("something else");
                return Err(DirError::Kind {
                    path,
                    kind,
                    wanted: "a directory",
                });
            }
            Err(e) => return Err(io(e)),
        };
        let st = stat(&fd).map_err(io)?;
        if st.st_uid != 0 && st.st_uid != self.owner.0 {
            return Err(DirError::Owner {
                path,
                uid: st.st_uid,
                expected: self.owner.0,
            });
        }
        // By its descriptor: the directory opened above, whatever its name points at now.
        if made || st.st_uid != self.owner.0 || st.st_mode & 0o077 != 0 {
            give(&fd, self.owner).map_err(io)?;
            // SAFETY: a valid descriptor.
            if unsafe { libc::fchmod(fd.as_raw_fd(), 0o700) } != 0 {
                return Err(io(last_error()));
            }
        }
        Ok(Dir {
            fd,
            path,
            owner: self.owner,
        })
    }

    /// What `name` is, without following it.
    fn kind(&self, name: &str) -> Option<&'static str> {
        self.lstat(name).map(|st| kind_of(st.st_mode))
    }

    /// `name`'s own status (a symlink's, not its target's); `None` when there is none.
    fn lstat(&self, name: &str) -> Option<libc::stat> {
        let c = name_c(name);
        // SAFETY: plain data, filled in by fstatat below.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory descriptor, C string and out pointer.
        let ok = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } == 0;
        ok.then_some(st)
    }

    /// The names in this directory (`.` and `..` left out), listed through its
    /// descriptor: the directory opened, whatever its path names now.
    pub fn names(&self) -> Result<Vec<String>, DirError> {
        let io = |source| DirError::Io {
            path: self.path.clone(),
            source,
        };
        let own = Path::new("/proc/self/fd").join(self.fd.as_raw_fd().to_string());
        Ok(std::fs::read_dir(own)
            .map_err(io)?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    /// The size of `name` when it is a regular file (not followed); `None` otherwise.
    pub fn file_size(&self, name: &str) -> Option<u64> {
        let st = self.lstat(name)?;
        (st.st_mode & libc::S_IFMT == libc::S_IFREG).then(|| u64::try_from(st.st_size).unwrap_or(0))
    }

    /// Writes `name` whole (mode 0600, the daemon's): a new file, synced, renamed over
    /// the old name, the directory synced — a crash leaves the old file or the new one,
    /// and a symlink under that name is replaced, never written through.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), DirError> {
        let path = self.join(name);
        let io = |source| DirError::Io {
            path: path.clone(),
            source,
        };
        let temp = format!(".{name}.{:016x}", fastrand::u64(..));
        let fd = self
            .open_at(&temp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
            .map_err(io)?;
        let written = (|| {
            let mut file = std::fs::File::from(fd);
            file.write_all(bytes)?;
            give(&file, self.owner)?;
            file.sync_all()?;
            self.rename(&temp, name)?;
            self.sync()
        })();
        if written.is_err() {
            let _ = self.remove(&temp);
        }
        written.map_err(io)
    }

    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        let (a, b) = (name_c(from), name_c(to));
        // SAFETY: valid descriptors and C strings.
        let done = unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                a.as_ptr(),
                self.fd.as_raw_fd(),
                b.as_ptr(),
            )
        };
        if done != 0 {
            return Err(last_error());
        }
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        // SAFETY: a valid descriptor.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } != 0 {
            return Err(last_error());
        }
        Ok(())
    }

    /// Reads `name` if it is a regular file of at most `max` bytes; `None` when there is
    /// none. Anything else under that name (a symlink, a FIFO, a device, a directory, a
    /// larger file) is an error, and is not read.
    pub fn read(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, DirError> {
        let path = self.join(name);
        let io = |source| DirError::Io {
            path: path.clone(),
            source,
        };
        let fd = match self.open_at(name, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(DirError::Kind {
                    path,
                    kind: "a symbolic link",
                    wanted: "a regular file",
                });
            }
            Err(e) => return Err(io(e)),
        };
        let st = stat(&fd).map_err(io)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(DirError::Kind {
                path,
                kind: kind_of(st.st_mode),
                wanted: "a regular file",
            });
        }
        if u64::try_from(st.st_size).unwrap_or(u64::MAX) > max {
            return Err(DirError::TooLarge { path, max });
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > max {
            return Err(DirError::TooLarge { path, max });
        }
        Ok(Some(bytes))
    }

    /// Removes `name` (a file, or a symlink itself); nothing when it is not there.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        let c = name_c(name);
        // SAFETY: a valid directory descriptor and C string.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            let e = last_error();
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Gives an open file or directory to `owner`, by its descriptor (a no-op unless root).
fn give(fd: &impl AsRawFd, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    if !is_root() {
        return Ok(());
    }
    // SAFETY: a valid descriptor.
    if unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_written_whole_and_read_back_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let state = Dir::state(dir.path()).unwrap();
        let sub = state.private_subdir("setup").unwrap();
        sub.write("waiting.json", b"{}").unwrap();
        assert_eq!(sub.read("waiting.json", 16).unwrap().unwrap(), b"{}");
        assert!(sub.read("missing", 16).unwrap().is_none());
        sub.write("big", &[b'x'; 100]).unwrap();
        assert!(matches!(
            sub.read("big", 16),
            Err(DirError::TooLarge { .. })
        ));
        sub.remove("big").unwrap();
        sub.remove("big").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("setup"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn symlinks_fifos_and_devices_are_neither_followed_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, b"keep").unwrap();
        let state = Dir::state(dir.path()).unwrap();
        // A symlink where a directory is expected.
        std::os::unix::fs::symlink(outside.path(), dir.path().join("capture")).unwrap();
        assert!(matches!(
            state.private_subdir("capture"),
            Err(DirError::Kind { .. })
        ));
        // A symlink where a file is read or written.
        let sub = state.private_subdir("setup").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("setup/until")).unwrap();
        assert!(matches!(sub.read("until", 64), Err(DirError::Kind { .. })));
        sub.write("until", b"123").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(sub.read("until", 64).unwrap().unwrap(), b"123");
        // /dev/zero and a FIFO.
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("setup/zero")).unwrap();
        assert!(sub.read("zero", 4096).is_err());
        let fifo = CString::new(dir.path().join("setup/fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(sub.read("fifo", 4096), Err(DirError::Kind { .. })));
    }
}
