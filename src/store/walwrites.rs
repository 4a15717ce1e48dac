//! The store thread's WAL writes, one system call per commit instead of two per page.
//!
//! SQLite writes each frame of a commit to the WAL as two `pwrite`s, its 24-byte header
//! and its page: about 12 a webhook at 16 connections, a quarter of the store thread's
//! time (`perf`: the kernel's per-call work, not the copying). This VFS is SQLite's own
//! `unix` VFS with one difference: a connection's writes that continue the WAL where
//! its last write ended are gathered in memory, and written in one call.
//!
//! When the gathered bytes must be in the file:
//! - before the WAL-index header changes (SQLite's memory barrier between its two
//!   copies, [`main_shm_barrier`]) and before any shared-memory lock changes: readers
//!   (the checkpointer, the `queue` tools) learn of frames only from that header, under
//!   those locks, so no reader can ask for a frame still in memory;
//! - before anything else is done with the WAL: a read, a sync (the sync thread's
//!   fsync follows the commit's return, by when the barrier has run), a size, a
//!   truncation, closing it;
//! - when a write does not continue the gathered ones (SQLite rewriting a frame in
//!   place, or its checksums, or starting the WAL over), and past [`MOST`] bytes.
//!
//! A write that fails when it is finally made is reported by the call that made it, so
//! a full disk fails the commit as it did. A process killed with bytes in memory had not
//! committed them: SQLite had not yet published the frames.

use std::collections::HashMap;
use std::ffi::{CStr, c_int, c_void};
use std::sync::{Mutex, OnceLock};

use rusqlite::ffi;

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub const NAME: &CStr = c"fbo-wal-writes";

/// The most bytes gathered before they are written anyway: under the 128 KiB that the
/// `unix` VFS writes in one call (it cuts a longer write's length to 17 bits, SQLite's
/// own writes being a page or a frame at most).
const MOST: usize = (1 << 17) - 4096;

/// A connection's WAL, as this VFS keeps it: the file and the writes gathered for it.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    gathered: *mut Gathered,
}

/// A connection's database file, with what links it to its WAL.
#[repr(C)]
struct MainFile {
    base: ffi::sqlite3_file,
    link: *mut Link,
}

/// Bytes for one write, from `start`, continuing where the WAL's last write ended.
struct Gathered {
    /// The WAL file (a [`WalFile`]) these bytes are for.
    file: *mut ffi::sqlite3_file,
    bytes: Vec<u8>,
    start: i64,
    /// Where the last write ended: a write starting there continues it.
    next: i64,
    /// The last write was a commit frame's header: its page completes the commit, and is
    /// written out with everything before it, so that a failure fails the commit.
    commit_next: bool,
    /// The database's [`Link`] (null when not found, or closed first).
    link: *mut Link,
    /// Writes taken, and the system calls made for them.
    taken: u64,
    made: u64,
}

impl Gathered {
    /// Writes the gathered bytes in one call.
    unsafe fn write_out(&mut self) -> c_int {
        if self.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Ok(len) = c_int::try_from(self.bytes.len()) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        self.made += 1;
        // SAFETY: `file` is the open WalFile these bytes were gathered for.
        let rc = unsafe {
            (methods(self.file).xWrite.unwrap())(
                inner(self.file),
                self.bytes.as_ptr().cast(),
                len,
                self.start,
            )
        };
        self.bytes.clear();
        rc
    }

    /// Takes a write: gathered when it continues the last one, else (after writing out
    /// what was gathered) made at once. A commit frame is written out with its page.
    unsafe fn take(&mut self, data: &[u8], at: i64) -> c_int {
        self.taken += 1;
        let continues = at == self.next;
        self.next = at + data.len() as i64;
        let completes_commit = std::mem::replace(&mut self.commit_next, is_commit_header(data));
        if !continues || self.bytes.len() + data.len() > MOST {
            // SAFETY: as for write_out.
            let rc = unsafe { self.write_out() };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if !continues {
            self.made += 1;
            // SAFETY: `data` is the caller's buffer, of a length SQLite gave as a c_int.
            return unsafe {
                (methods(self.file).xWrite.unwrap())(
                    inner(self.file),
                    data.as_ptr().cast(),
                    data.len() as c_int,
                    at,
                )
            };
        }
        if self.bytes.is_empty() {
            self.start = at;
        }
        self.bytes.extend_from_slice(data);
        if completes_commit {
            // SAFETY: as for write_out.
            return unsafe { self.write_out() };
        }
        ffi::SQLITE_OK
    }
}

/// A WAL frame's 24-byte header whose second field (the database's size after the
/// commit) is set: the last frame of a commit.
fn is_commit_header(data: &[u8]) -> bool {
    data.len() == 24 && data[4..8] != [0; 4]
}

/// Shared by a database file and its WAL (one connection): the WAL's gathered writes,
/// which the database file's barrier and locks write out.
struct Link {
    wal: *mut Gathered,
    /// The database's path, for the tests' counts.
    #[cfg_attr(not(test), allow(dead_code))]
    path: String,
    /// Counts of the WALs closed, for the tests.
    taken: u64,
    made: u64,
}

/// The database files open through this VFS, by the address of the name SQLite opened
/// them with: a WAL's name is kept in the same block, after it
/// (`sqlite3_filename_database`), so a WAL finds its own connection's database file.
struct Links(HashMap<usize, usize>);

fn lock_links() -> std::sync::MutexGuard<'static, Links> {
    static LINKS: OnceLock<Mutex<Links>> = OnceLock::new();
    LINKS
        .get_or_init(|| Mutex::new(Links(HashMap::new())))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

struct Vfs {
    vfs: ffi::sqlite3_vfs,
    /// SQLite's `unix` VFS, which does all the work.
    real: *mut ffi::sqlite3_vfs,
    real_size: usize,
    /// Offset of the real file inside ours.
    inner_at: usize,
}

// SAFETY: registered once and never changed after; SQLite reads it from any thread.
unsafe impl Send for Vfs {}
unsafe impl Sync for Vfs {}

static VFS: OnceLock<Option<Box<Vfs>>> = OnceLock::new();

/// Registers the VFS (once); false if SQLite's `unix` VFS is not there to wrap, and then
/// connections are opened with SQLite's default instead.
pub fn register() -> bool {
    VFS.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find returns SQLite's static VFS (or null); the copy lives
        // in the Box, never freed, as SQLite keeps the pointer for the process's life.
        unsafe {
            let real = ffi::sqlite3_vfs_find(c"unix".as_ptr());
            if real.is_null() || (*real).iVersion < 3 {
                return None;
            }
            let inner_at = std::mem::size_of::<WalFile>()
                .max(std::mem::size_of::<MainFile>())
                .next_multiple_of(16);
            let real_size = usize::try_from((*real).szOsFile).ok()?;
            let mut vfs = *real;
            vfs.szOsFile = c_int::try_from(inner_at + real_size).ok()?;
            vfs.zName = NAME.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.xOpen = Some(open);
            let mut boxed = Box::new(Vfs {
                vfs,
                real,
                real_size,
                inner_at,
            });
            if ffi::sqlite3_vfs_register(&mut boxed.vfs, 0) != ffi::SQLITE_OK {
                return None;
            }
            Some(boxed)
        }
    })
    .is_some()
}

fn vfs() -> &'static Vfs {
    VFS.get()
        .and_then(|v| v.as_deref())
        .expect("a file is opened through the VFS only once it is registered")
}

/// The real file inside ours.
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: SQLite allocated szOsFile bytes for `file`: inner_at, then the real file.
    unsafe { file.cast::<u8>().add(vfs().inner_at).cast() }
}

/// The real file's methods.
unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: an open real file has its methods, which are static in SQLite.
    unsafe { &*(*inner(file)).pMethods }
}

unsafe extern "C" fn open(
    _: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let v = vfs();
    let wal = flags & ffi::SQLITE_OPEN_WAL != 0;
    let main = flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && !name.is_null();
    if !wal && !main {
        // Journals and temporary files: the real file, in place (ours is larger).
        // SAFETY: forwarded as SQLite called it.
        return unsafe { ((*v.real).xOpen.unwrap())(v.real, name, file, flags, out_flags) };
    }
    // SAFETY: SQLite gave szOsFile bytes at `file`; the real file goes after ours.
    unsafe {
        std::ptr::write_bytes(file.cast::<u8>(), 0, v.inner_at + v.real_size);
        let rc = ((*v.real).xOpen.unwrap())(v.real, name, inner(file), flags, out_flags);
        if (*inner(file)).pMethods.is_null() {
            return rc;
        }
        if main {
            let link = Box::into_raw(Box::new(Link {
                wal: std::ptr::null_mut(),
                path: CStr::from_ptr(name).to_string_lossy().into_owned(),
                taken: 0,
                made: 0,
            }));
            (*file.cast::<MainFile>()).link = link;
            lock_links().0.insert(name as usize, link as usize);
            (*file).pMethods = &MAIN_METHODS;
        } else {
            let database = ffi::sqlite3_filename_database(name);
            let links = lock_links();
            let link = links
                .0
                .get(&(database as usize))
                .map_or(std::ptr::null_mut(), |l| *l as *mut Link);
            let gathered = Box::into_raw(Box::new(Gathered {
                file,
                bytes: Vec::new(),
                commit_next: false,
                start: 0,
                next: -1,
                link,
                taken: 0,
                made: 0,
            }));
            if !link.is_null() {
                (*link).wal = gathered;
            }
            (*file.cast::<WalFile>()).gathered = gathered;
            (*file).pMethods = &WAL_METHODS;
        }
        rc
    }
}

unsafe fn gathered(file: *mut ffi::sqlite3_file) -> &'static mut Gathered {
    // SAFETY: `file` is an open WalFile, whose Gathered lives until its close.
    unsafe { &mut *(*file.cast::<WalFile>()).gathered }
}

/// Writes what the connection of the database file `file` gathered for its WAL.
unsafe fn write_out_wal_of(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is an open MainFile; its link's WAL is open while set.
    unsafe {
        let link = (*file.cast::<MainFile>()).link;
        if link.is_null() || (*link).wal.is_null() {
            return ffi::SQLITE_OK;
        }
        (*(*link).wal).write_out()
    }
}

/// How many writes the WALs of the database at `path` took, and how many system calls
/// were made for them (the WALs closed so far, and the one open).
#[cfg(test)]
pub fn counts(path: &str) -> (u64, u64) {
    let links = lock_links();
    links
        .0
        .values()
        .map(|l| *l as *const Link)
        // SAFETY: registered links are alive until their database file closes, which
        // takes this lock.
        .map(|l| unsafe { &*l })
        .filter(|l| l.path == path)
        .fold((0, 0), |(t, m), l| {
            let (wt, wm) = if l.wal.is_null() {
                (0, 0)
            } else {
                // SAFETY: set while the WAL is open.
                unsafe { ((*l.wal).taken, (*l.wal).made) }
            };
            (t + l.taken + wt, m + l.made + wm)
        })
}

// The WAL's methods: every call but a write first writes out what was gathered.

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes an open WalFile once.
    unsafe {
        let mut g = Box::from_raw((*file.cast::<WalFile>()).gathered);
        let written = g.write_out();
        if !g.link.is_null() {
            let _links = lock_links();
            (*g.link).wal = std::ptr::null_mut();
            (*g.link).taken += g.taken;
            (*g.link).made += g.made;
        }
        let rc = (methods(file).xClose.unwrap())(inner(file));
        (*file).pMethods = std::ptr::null();
        if written != ffi::SQLITE_OK {
            written
        } else {
            rc
        }
    }
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    at: ffi::sqlite3_int64,
) -> c_int {
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    unsafe {
        let data = std::slice::from_raw_parts(data.cast::<u8>(), len);
        gathered(file).take(data, at)
    }
}

/// A WAL method that first writes out what was gathered, then forwards the call.
macro_rules! after_write_out {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: `file` is an open WalFile; forwarded as SQLite called it.
            unsafe {
                let rc = gathered(file).write_out();
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                (methods(file).$method.unwrap())(inner(file) $(, $arg)*)
            }
        }
    };
}

after_write_out!(wal_read, xRead, (buf: *mut c_void, amount: c_int, at: ffi::sqlite3_int64));
after_write_out!(wal_truncate, xTruncate, (size: ffi::sqlite3_int64));
after_write_out!(wal_sync, xSync, (flags: c_int));
after_write_out!(wal_file_size, xFileSize, (size: *mut ffi::sqlite3_int64));
after_write_out!(wal_file_control, xFileControl, (op: c_int, arg: *mut c_void));

// The database file's methods: its shared-memory barrier and locks first write out
// what its connection gathered for the WAL.

unsafe extern "C" fn main_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes an open MainFile once (after its WAL).
    unsafe {
        let link = (*file.cast::<MainFile>()).link;
        {
            let mut links = lock_links();
            links.0.retain(|_, l| *l != link as usize);
            if !(*link).wal.is_null() {
                (*(*link).wal).link = std::ptr::null_mut();
            }
        }
        drop(Box::from_raw(link));
        let rc = (methods(file).xClose.unwrap())(inner(file));
        (*file).pMethods = std::ptr::null();
        rc
    }
}

unsafe extern "C" fn main_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        let rc = write_out_wal_of(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        (methods(file).xShmLock.unwrap())(inner(file), offset, n, flags)
    }
}

/// SQLite's barrier between its two copies of the WAL-index header: the frames the new
/// header names are written before a reader can see it.
unsafe extern "C" fn main_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: forwarded as SQLite called it. Nothing is gathered here as the store
    // runs: the commit frame's page was written out (its failure reported, the commit
    // undone) before SQLite reaches the barrier. Only padding frames written after it,
    // at `synchronous = FULL` on a device without powersafe overwrite, would be; a failed
    // write of those cannot be reported (the barrier returns nothing), and the frames
    // are copies of the commit's last page.
    unsafe {
        let _ = write_out_wal_of(file);
        (methods(file).xShmBarrier.unwrap())(inner(file))
    }
}

// Calls both kinds of file forward as they are.

macro_rules! forward {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: forwarded as SQLite called it, to the real file.
            unsafe { (methods(file).$method.unwrap())(inner(file) $(, $arg)*) }
        }
    };
}

forward!(fwd_read, xRead, (buf: *mut c_void, amount: c_int, at: ffi::sqlite3_int64) -> c_int);
forward!(fwd_write, xWrite, (data: *const c_void, amount: c_int, at: ffi::sqlite3_int64) -> c_int);
forward!(fwd_truncate, xTruncate, (size: ffi::sqlite3_int64) -> c_int);
forward!(fwd_sync, xSync, (flags: c_int) -> c_int);
forward!(fwd_file_size, xFileSize, (size: *mut ffi::sqlite3_int64) -> c_int);
forward!(fwd_lock, xLock, (level: c_int) -> c_int);
forward!(fwd_unlock, xUnlock, (level: c_int) -> c_int);
forward!(fwd_check_reserved, xCheckReservedLock, (out: *mut c_int) -> c_int);
forward!(fwd_file_control, xFileControl, (op: c_int, arg: *mut c_void) -> c_int);
forward!(fwd_sector_size, xSectorSize, () -> c_int);
forward!(fwd_device, xDeviceCharacteristics, () -> c_int);
forward!(fwd_shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int);
forward!(fwd_shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int);
forward!(fwd_shm_barrier, xShmBarrier, () -> ());
forward!(fwd_shm_unmap, xShmUnmap, (delete: c_int) -> c_int);
forward!(fwd_fetch, xFetch, (at: ffi::sqlite3_int64, amount: c_int, out: *mut *mut c_void) -> c_int);
forward!(fwd_unfetch, xUnfetch, (at: ffi::sqlite3_int64, page: *mut c_void) -> c_int);

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(fwd_lock),
    xUnlock: Some(fwd_unlock),
    xCheckReservedLock: Some(fwd_check_reserved),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(fwd_sector_size),
    xDeviceCharacteristics: Some(fwd_device),
    xShmMap: Some(fwd_shm_map),
    xShmLock: Some(fwd_shm_lock),
    xShmBarrier: Some(fwd_shm_barrier),
    xShmUnmap: Some(fwd_shm_unmap),
    xFetch: Some(fwd_fetch),
    xUnfetch: Some(fwd_unfetch),
};

static MAIN_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(main_close),
    xRead: Some(fwd_read),
    xWrite: Some(fwd_write),
    xTruncate: Some(fwd_truncate),
    xSync: Some(fwd_sync),
    xFileSize: Some(fwd_file_size),
    xLock: Some(fwd_lock),
    xUnlock: Some(fwd_unlock),
    xCheckReservedLock: Some(fwd_check_reserved),
    xFileControl: Some(fwd_file_control),
    xSectorSize: Some(fwd_sector_size),
    xDeviceCharacteristics: Some(fwd_device),
    xShmMap: Some(fwd_shm_map),
    xShmLock: Some(main_shm_lock),
    xShmBarrier: Some(main_shm_barrier),
    xShmUnmap: Some(fwd_shm_unmap),
    xFetch: Some(fwd_fetch),
    xUnfetch: Some(fwd_unfetch),
};

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    /// A connection as the store thread has it: through this VFS, WAL, commits that do
    /// not sync (the sync thread does), no automatic checkpoint.
    fn writer(path: &std::path::Path) -> Connection {
        assert!(super::register());
        let conn =
            Connection::open_with_flags_and_vfs(path, OpenFlags::default(), super::NAME).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
             CREATE INDEX t_body ON t (body);",
        )
        .unwrap();
        conn
    }

    fn insert(conn: &Connection, from: i64, rows: i64, size: usize) {
        let tx = conn.unchecked_transaction().unwrap();
        for id in from..from + rows {
            let body: Vec<u8> = (0..size).map(|i| (id as usize * 31 + i) as u8).collect();
            tx.execute("INSERT INTO t VALUES (?1, ?2)", (id, body))
                .unwrap();
        }
        tx.commit().unwrap();
    }

    fn rows(path: &std::path::Path) -> i64 {
        let reader = Connection::open(path).unwrap();
        reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_commit_is_in_the_wal_file_in_one_write_before_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = writer(&path);
        let name = conn.path().unwrap().to_owned();
        for n in 1..=20 {
            let before = super::counts(&name);
            insert(&conn, n * 100, 8, 300);
            let (taken, made) = super::counts(&name);
            let (taken, made) = (taken - before.0, made - before.1);
            assert!(taken >= 8, "each frame is two writes: {taken}");
            assert_eq!(made, 1, "{taken} writes made in {made} calls");
            // Another connection, as the checkpointer or `queue` has it, reads the
            // commit at once: its frames are in the file.
            assert_eq!(rows(&path), n * 8);
        }
    }

    /// What a process killed right after a commit leaves: the files as they are. A copy
    /// of them, opened anew, recovers every commit from the WAL: each frame and its
    /// checksum were written before the commit returned, including those SQLite writes
    /// in place or rewrites (a transaction larger than its page cache spills frames, and
    /// rewrites their checksums at its commit) and a WAL started over after a checkpoint.
    #[test]
    fn every_commit_survives_a_process_killed_right_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = writer(&path);
        conn.execute_batch("PRAGMA cache_size = 10").unwrap();
        let mut expected = 0;
        for (round, (rows_now, size)) in [(5, 100), (400, 1500), (3, 50), (200, 2000), (1, 10)]
            .into_iter()
            .enumerate()
        {
            insert(&conn, expected, rows_now, size);
            expected += rows_now;
            if round == 2 {
                // The WAL starts over at the next commit, from its header.
                conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
                    .unwrap();
            }
            let copy = tempfile::tempdir().unwrap();
            for suffix in ["", "-wal"] {
                std::fs::copy(
                    format!("{}{suffix}", path.display()),
                    copy.path().join(format!("state.db{suffix}")),
                )
                .unwrap();
            }
            let copied = copy.path().join("state.db");
            assert_eq!(rows(&copied), expected, "after round {round}");
            let check: String = Connection::open(&copied)
                .unwrap()
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok", "after round {round}");
        }
    }
}
