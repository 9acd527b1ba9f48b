//! A VFS for the connections that check a backup's snapshot: SQLite's own `unix` VFS, with
//! a read-ahead for forward reads of the main database file.
//!
//! Why: a check connection reads the database one page per `pread` (4 KiB on connector
//! databases). On the 979 MiB benchmark database the checks issued about 1.2 million of
//! them, and the system call around each copy cost as much CPU as the copy
//! (`_copy_to_iter`, `filemap_get_read_batch`, `vfs_read`, `touch_atime`… in `perf`):
//! `foreign_key_check` scans `Events` in rowid order (94% of its reads fall just after the
//! one before), `quick_check`'s record pass scans each table the same way. Here a read
//! that starts where the previous one ended fetches [`BLOCK`] bytes with one `pread`, and
//! the reads that follow are copied out of that block. Any other read goes to SQLite's
//! VFS as it came. The bytes are the file's bytes either way: nothing is skipped, every
//! check sees every page it asks for.
//!
//! When a cached block may no longer be the file: SQLite guarantees that the database
//! pages a read transaction reads from the file do not change while it lasts (a
//! checkpoint only writes pages the reader takes from the WAL; in rollback mode a writer
//! needs the reader's SHARED lock gone). The blocks are therefore dropped at every lock
//! change (`xLock`, `xUnlock`, `xShmLock`: where transactions begin and end), at any write
//! or truncation, and the cache is only set up for read-only opens of a main database.
//! Only read-only connections that check a pinned state use this VFS (`db::open_check`).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's name, for `sqlite3_open_v2`.
pub const NAME: &CStr = c"hubvault-readahead";
/// Bytes one forward read fetches: 64 pages of 4 KiB. Measured on the traces of the
/// checks (bench/, docs/BENCHMARKS.md): 256 KiB took `foreign_key_check`'s reads from
/// 94,726 to 4,067 at 242 MiB; more saves little.
pub const BLOCK: usize = 256 * 1024;
/// Blocks kept per file: a B-tree walk goes back to a parent page now and then.
const SLOTS: usize = 4;

/// Registers the VFS (once per process) and returns its name.
pub fn name() -> Result<&'static CStr, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS (initializing SQLite
            // if needed), which lives as long as the process. The new VFS is leaked: it
            // must live as long as SQLite may use it, i.e. for good.
            unsafe {
                let real = ffi::sqlite3_vfs_find(std::ptr::null());
                if real.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
                    iVersion: (*real).iVersion.min(2),
                    szOsFile: (std::mem::size_of::<File>() as c_int) + (*real).szOsFile,
                    mxPathname: (*real).mxPathname,
                    pNext: std::ptr::null_mut(),
                    zName: NAME.as_ptr(),
                    pAppData: real.cast(),
                    xOpen: Some(x_open),
                    xDelete: Some(x_delete),
                    xAccess: Some(x_access),
                    xFullPathname: Some(x_full_pathname),
                    xDlOpen: Some(x_dl_open),
                    xDlError: Some(x_dl_error),
                    xDlSym: Some(x_dl_sym),
                    xDlClose: Some(x_dl_close),
                    xRandomness: Some(x_randomness),
                    xSleep: Some(x_sleep),
                    xCurrentTime: Some(x_current_time),
                    xGetLastError: Some(x_get_last_error),
                    xCurrentTimeInt64: Some(x_current_time_int64),
                    xSetSystemCall: None,
                    xGetSystemCall: None,
                    xNextSystemCall: None,
                }));
                let rc = ffi::sqlite3_vfs_register(vfs, 0);
                if rc != ffi::SQLITE_OK {
                    return Err(format!("sqlite3_vfs_register failed ({rc})"));
                }
            }
            Ok(())
        })
        .clone()
        .map(|()| NAME)
}

/// What SQLite holds for an open file: our methods, the real VFS's file after this
/// struct (`szOsFile` leaves room for both), and the read-ahead of a main database.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    ahead: *mut Ahead,
}

/// Cached blocks of one file.
struct Ahead {
    slots: Vec<Slot>,
    /// The slot the next fetch replaces (round robin).
    next: usize,
    /// Where the last read ended: a read starting here is a forward read.
    last_end: i64,
}

struct Slot {
    start: i64,
    len: usize,
    buf: Vec<u8>,
}

impl Ahead {
    fn new() -> Ahead {
        Ahead {
            slots: Vec::new(),
            next: 0,
            last_end: -1,
        }
    }

    fn forget(&mut self) {
        for s in &mut self.slots {
            s.len = 0;
        }
        self.last_end = -1;
    }

    /// Copies `out.len()` bytes at `off` from a cached block, if one holds them all.
    fn copy_out(&self, out: &mut [u8], off: i64) -> bool {
        for s in &self.slots {
            if off >= s.start && off + out.len() as i64 <= s.start + s.len as i64 {
                let from = (off - s.start) as usize;
                out.copy_from_slice(&s.buf[from..from + out.len()]);
                return true;
            }
        }
        false
    }
}

unsafe fn real_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY (callers): `vfs` is ours, whose pAppData is the real VFS (see `name`).
    unsafe { (*vfs).pAppData.cast() }
}

unsafe fn real(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY (callers): `f` was opened by `x_open`, so it is a `File`.
    unsafe { (*f.cast::<File>()).real }
}

unsafe fn methods(f: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY (callers): an open real file has its methods set (checked in `x_open`).
    unsafe { &*(*real(f)).pMethods }
}

/// Drops the cached blocks of `f` (a lock changed, or the file was written).
unsafe fn forget(f: *mut ffi::sqlite3_file) {
    // SAFETY (callers): `f` is a `File`; its `ahead` is null or ours, used by the one
    // thread that uses the connection.
    unsafe {
        let a = (*f.cast::<File>()).ahead;
        if !a.is_null() {
            (*a).forget();
        }
    }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives `szOsFile` bytes at `file` (a `File`, then the real file:
    // `File`'s size is a multiple of 8, the alignment SQLite gives); the real VFS opens
    // its file there.
    unsafe {
        let rv = real_vfs(vfs);
        let f = file.cast::<File>();
        let real = file.cast::<u8>().add(std::mem::size_of::<File>()).cast();
        (*f).base.pMethods = std::ptr::null();
        (*f).real = real;
        (*f).ahead = std::ptr::null_mut();
        let Some(open) = (*rv).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open(rv, name, real, flags, out_flags);
        if (*real).pMethods.is_null() {
            // Nothing to close: SQLite calls no method of a file whose pMethods is null.
            return rc;
        }
        (*f).base.pMethods = &METHODS;
        let read_only_main =
            flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && flags & ffi::SQLITE_OPEN_READONLY != 0;
        if rc == ffi::SQLITE_OK && read_only_main {
            (*f).ahead = Box::into_raw(Box::new(Ahead::new()));
        }
        rc
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file once; `ahead` came from Box::into_raw in `x_open`.
    unsafe {
        let file = f.cast::<File>();
        if !(*file).ahead.is_null() {
            drop(Box::from_raw((*file).ahead));
            (*file).ahead = std::ptr::null_mut();
        }
        match methods(f).xClose {
            Some(x) => x(real(f)),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite passes `amt` writable bytes at `buf`; `ahead` is this file's, used by
    // this connection's thread alone.
    unsafe {
        let read = methods(f).xRead.expect("every VFS reads");
        let a = (*f.cast::<File>()).ahead;
        if a.is_null() || amt <= 0 || off < 0 {
            return read(real(f), buf, amt, off);
        }
        let a = &mut *a;
        let out = std::slice::from_raw_parts_mut(buf.cast::<u8>(), amt as usize);
        let forward = off == a.last_end;
        a.last_end = off + amt as i64;
        if a.copy_out(out, off) {
            return ffi::SQLITE_OK;
        }
        if forward && fetch(f, a, off) && a.copy_out(out, off) {
            return ffi::SQLITE_OK;
        }
        read(real(f), buf, amt, off)
    }
}

/// Reads up to [`BLOCK`] bytes at `off` (no further than the file's end) into a slot;
/// false when that cannot be done (the caller reads as SQLite asked).
unsafe fn fetch(f: *mut ffi::sqlite3_file, a: &mut Ahead, off: i64) -> bool {
    // SAFETY: `f` is an open `File` (see `x_read`).
    unsafe {
        let m = methods(f);
        let (Some(size_of), Some(read)) = (m.xFileSize, m.xRead) else {
            return false;
        };
        let mut size: ffi::sqlite3_int64 = 0;
        if size_of(real(f), &mut size) != ffi::SQLITE_OK || size <= off {
            return false;
        }
        let n = (size - off).min(BLOCK as i64) as usize;
        if a.slots.len() < SLOTS {
            a.slots.push(Slot {
                start: 0,
                len: 0,
                buf: vec![0; BLOCK],
            });
            a.next = a.slots.len() - 1;
        }
        let i = a.next;
        a.next = (a.next + 1) % SLOTS;
        let s = &mut a.slots[i];
        s.len = 0;
        // A short read (the file shrank since its size was read) is an error code: the
        // slot stays empty and the caller's read goes to SQLite's VFS.
        if read(real(f), s.buf.as_mut_ptr().cast(), n as c_int, off) != ffi::SQLITE_OK {
            return false;
        }
        s.start = off;
        s.len = n;
        true
    }
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        forget(f);
        match methods(f).xWrite {
            Some(x) => x(real(f), buf, amt, off),
            None => ffi::SQLITE_READONLY,
        }
    }
}

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        forget(f);
        match methods(f).xTruncate {
            Some(x) => x(real(f), size),
            None => ffi::SQLITE_READONLY,
        }
    }
}

unsafe extern "C" fn x_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        match methods(f).xSync {
            Some(x) => x(real(f), flags),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_file_size(
    f: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        match methods(f).xFileSize {
            Some(x) => x(real(f), size),
            None => ffi::SQLITE_IOERR_FSTAT,
        }
    }
}

unsafe extern "C" fn x_lock(f: *mut ffi::sqlite3_file, lock: c_int) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        forget(f);
        match methods(f).xLock {
            Some(x) => x(real(f), lock),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_unlock(f: *mut ffi::sqlite3_file, lock: c_int) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        forget(f);
        match methods(f).xUnlock {
            Some(x) => x(real(f), lock),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        match methods(f).xCheckReservedLock {
            Some(x) => x(real(f), out),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        match methods(f).xFileControl {
            Some(x) => x(real(f), op, arg),
            None => ffi::SQLITE_NOTFOUND,
        }
    }
}

unsafe extern "C" fn x_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        match methods(f).xSectorSize {
            Some(x) => x(real(f)),
            None => 4096,
        }
    }
}

unsafe extern "C" fn x_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        match methods(f).xDeviceCharacteristics {
            Some(x) => x(real(f)),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        match methods(f).xShmMap {
            Some(x) if methods(f).iVersion >= 2 => x(real(f), region, size, extend, out),
            _ => ffi::SQLITE_IOERR_SHMMAP,
        }
    }
}

unsafe extern "C" fn x_shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        // A WAL read transaction begins and ends with a lock of its read mark.
        forget(f);
        match methods(f).xShmLock {
            Some(x) if methods(f).iVersion >= 2 => x(real(f), offset, n, flags),
            _ => ffi::SQLITE_IOERR_SHMLOCK,
        }
    }
}

unsafe extern "C" fn x_shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        if let Some(x) = methods(f).xShmBarrier
            && methods(f).iVersion >= 2
        {
            x(real(f))
        }
    }
}

unsafe extern "C" fn x_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        forget(f);
        match methods(f).xShmUnmap {
            Some(x) if methods(f).iVersion >= 2 => x(real(f), delete),
            _ => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_fetch(
    f: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: forwarded as SQLite called it; "no mapping" is a valid answer.
    unsafe {
        match methods(f).xFetch {
            Some(x) if methods(f).iVersion >= 3 => x(real(f), off, amt, out),
            _ => {
                *out = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

unsafe extern "C" fn x_unfetch(
    f: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    p: *mut c_void,
) -> c_int {
    // SAFETY: forwarded as SQLite called it.
    unsafe {
        match methods(f).xUnfetch {
            Some(x) if methods(f).iVersion >= 3 => x(real(f), off, p),
            _ => ffi::SQLITE_OK,
        }
    }
}

// The VFS's other methods: the real VFS's, called with the real VFS.

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync: c_int,
) -> c_int {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        match (*rv).xDelete {
            Some(x) => x(rv, name, sync),
            None => ffi::SQLITE_IOERR_DELETE,
        }
    }
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        match (*rv).xAccess {
            Some(x) => x(rv, name, flags, out),
            None => ffi::SQLITE_IOERR_ACCESS,
        }
    }
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        match (*rv).xFullPathname {
            Some(x) => x(rv, name, n, out),
            None => ffi::SQLITE_CANTOPEN,
        }
    }
}

unsafe extern "C" fn x_dl_open(vfs: *mut ffi::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        match (*rv).xDlOpen {
            Some(x) => x(rv, name),
            None => std::ptr::null_mut(),
        }
    }
}

unsafe extern "C" fn x_dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        if let Some(x) = (*rv).xDlError {
            x(rv, n, out)
        }
    }
}

/// What bindgen says `xDlSym` returns.
type DlSymbol = Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)>;

unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    sym: *const c_char,
) -> DlSymbol {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        (*rv).xDlSym.and_then(|x| x(rv, handle, sym))
    }
}

unsafe extern "C" fn x_dl_close(vfs: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        if let Some(x) = (*rv).xDlClose {
            x(rv, handle)
        }
    }
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        match (*rv).xRandomness {
            Some(x) => x(rv, n, out),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        match (*rv).xSleep {
            Some(x) => x(rv, micros),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        match (*rv).xCurrentTime {
            Some(x) => x(rv, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}

unsafe extern "C" fn x_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        match (*rv).xGetLastError {
            Some(x) => x(rv, n, out),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forwarded to the real VFS as SQLite called ours.
    unsafe {
        let rv = real_vfs(vfs);
        match (*rv).xCurrentTimeInt64 {
            Some(x) if (*rv).iVersion >= 2 => x(rv, out),
            _ => ffi::SQLITE_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::Connection;

    use crate::sqlite::db;

    /// Every row's text, in rowid order, joined: what a reader sees of `t`.
    fn contents(c: &Connection) -> String {
        c.query_row(
            "SELECT group_concat(id || ':' || v, ',') FROM (SELECT id, v FROM t ORDER BY id)",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// A table of `rows` rows of 500 bytes (many pages, laid out in rowid order, so a
    /// scan reads forward and fills the read-ahead's blocks), with an index when asked.
    fn create(path: &Path, wal: bool, rows: i64, index: bool) -> Connection {
        let w = Connection::open(path).unwrap();
        let mode = if wal { "wal" } else { "delete" };
        w.query_row(&format!("PRAGMA journal_mode={mode}"), [], |_| Ok(()))
            .unwrap();
        w.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        w.execute_batch(&format!(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO t SELECT i, printf('%.500c', char(65 + i % 26)) FROM n;"
        ))
        .unwrap();
        if index {
            w.execute_batch("CREATE INDEX t_v ON t(v)").unwrap();
        }
        w
    }

    #[test]
    fn the_checks_read_through_it_see_what_the_default_vfs_sees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        drop(create(&path, true, 3000, true));
        let plain = db::open_read_only(&path).unwrap();
        let ahead = db::open_check(&path).unwrap();
        assert_eq!(contents(&ahead), contents(&plain));
        for pragma in ["integrity_check", "quick_check", "foreign_key_check"] {
            let run = |c: &Connection| -> Vec<String> {
                c.prepare(&format!("PRAGMA {pragma}"))
                    .unwrap()
                    .query_map([], |r| r.get::<_, String>(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap()
            };
            assert_eq!(run(&ahead), run(&plain), "{pragma}");
        }
    }

    /// The blocks read ahead in one read transaction are never served in the next: a
    /// commit in between (rollback journal: written in place; WAL: checkpointed into the
    /// file) is seen.
    #[test]
    fn a_new_read_transaction_sees_commits_made_since_the_last_one_in_both_journal_modes() {
        for wal in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.db");
            // 1000 rows: the whole table fits in the blocks one scan reads ahead.
            let w = create(&path, wal, 1000, false);
            let ahead = db::open_check(&path).unwrap();
            let before = contents(&ahead);
            // Same-length values: the pages change in place, the file keeps its size.
            w.execute_batch("UPDATE t SET v = printf('%.500c', 'z') WHERE id % 7 = 0")
                .unwrap();
            if wal {
                w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .unwrap();
            }
            let after = contents(&ahead);
            assert_ne!(after, before, "wal={wal}");
            assert_eq!(
                after,
                contents(&db::open_read_only(&path).unwrap()),
                "wal={wal}"
            );
        }
    }

    /// Within one read transaction the state stays the one it began on, with a writer
    /// committing and checkpointing meanwhile (the snapshot a backup checks).
    #[test]
    fn an_open_read_transaction_keeps_its_state_while_a_writer_commits_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let w = create(&path, true, 1000, false);
        let ahead = db::open_check(&path).unwrap();
        ahead.execute_batch("BEGIN").unwrap();
        let before = contents(&ahead);
        w.execute_batch("UPDATE t SET v = printf('%.500c', 'z') WHERE id % 5 = 0")
            .unwrap();
        // Checkpoints what it can: not past the open reader.
        w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        assert_eq!(contents(&ahead), before);
        ahead.execute_batch("COMMIT").unwrap();
        assert_ne!(contents(&ahead), before);
    }
}
