//! Reading a connector database: its ids, its source, its tables.
//!
//! Only what the platform's documentation states is relied on: `Integrations(id, sources)` with one row whose
//! `sources` is a JSON array of source objects, and `Events`. Every other table is
//! treated as unknown and only counted.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId};

/// Past this size a snapshot is checked with `PRAGMA quick_check` (page structure,
/// records, NOT NULL/CHECK constraints) instead of `integrity_check` (which also
/// cross-checks every index against its table and grows superlinearly): see
/// docs/DESIGN.md. Override with `HUBVAULT_FULL_CHECK_MAX_BYTES`.
pub const FULL_CHECK_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// The identity of a connector as its database states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectorInfo {
    pub datahub: DatahubId,
    pub connector: ConnectorId,
    /// `sources[0].name`
    pub name: String,
    /// `sources[0].type`, else `sources[0].config.sourceType`, else `Integrations.type`.
    pub source_type: String,
    /// `sources[0]` as stored: the source object (name, type, config, metadata, tags).
    #[serde(skip)]
    pub source: serde_json::Value,
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Fails unless `path` is a regular file that starts with SQLite's header.
pub fn check_is_sqlite(path: &Path) -> Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Error::usage(
                format!("{}: no such file", path.display()),
                "check the path given with --db (connector databases live at <hub-root>/<connectorId>/sqlite.db)",
            );
        }
        Error::Database {
            path: path.into(),
            message: format!("cannot read the database: {e}"),
            hint: "check the path given with --db (connector databases live at <hub-root>/<connectorId>/sqlite.db)".into(),
            source: None,
        }
    })?;
    if !meta.is_file() {
        return Err(Error::db(
            path,
            "is not a regular file",
            "pass the path of the connector's sqlite.db",
        ));
    }
    let mut head = [0u8; 16];
    // O_NONBLOCK: a FIFO put at the name since the check above must not hang us.
    let n = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Error::io(path, "cannot read the database", e))?;
    if n < 16 || &head != SQLITE_MAGIC {
        return Err(Error::db(
            path,
            if n == 0 {
                "is empty, not a SQLite database".to_string()
            } else {
                "is not a SQLite database (no SQLite header)".to_string()
            },
            "pass the connector's sqlite.db; if this is it, it is damaged: restore it with `hubvault restore`",
        ));
    }
    Ok(())
}

/// Makes SQLite's unix VFS open every file without blocking and refuse a FIFO or a
/// socket (once per process; every connection hubvault opens goes through here first).
///
/// A connector's user may put a FIFO at any name in its directory, and SQLite opens
/// `-journal` by name (read-only, to see whether it is hot) whenever a connection takes
/// a lock on a rollback-journal database: an `open` of a FIFO with no writer never
/// returns, and root's capture or backup would hang there for good. No check before the
/// open can close that window (the user swaps the name in between); the open itself can:
/// SQLite's system call `open` is replaced (`xSetSystemCall`, its documented hook) by one
/// with `O_NONBLOCK` that refuses what is not a regular file, a directory or a device.
/// It also refuses a `-journal`, `-wal` or `-shm` with more than one name: SQLite run as
/// root gives every one it opens to the database's owner (`fchown`) and resets a `-shm`,
/// and a hard link there (to a root file its user may write) would hand that file over.
/// SQLite sees a file it cannot open (`SQLITE_CANTOPEN`); a `-journal` it cannot open
/// counts as hot, so the lock is refused as for a crashed writer, and nothing waits.
pub fn harden_vfs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        type Open =
            unsafe extern "C" fn(*const libc::c_char, libc::c_int, libc::c_int) -> libc::c_int;
        // SAFETY: `sqlite3_vfs_find` initialises SQLite and returns the default (unix) VFS
        // or null; `xSetSystemCall` stores the pointer SQLite calls as `open(path, flags,
        // mode)`, which `open_no_fifo` is.
        let rc = unsafe {
            let vfs = rusqlite::ffi::sqlite3_vfs_find(std::ptr::null());
            match vfs.as_ref().and_then(|v| v.xSetSystemCall) {
                Some(set) => set(
                    vfs,
                    c"open".as_ptr(),
                    Some(std::mem::transmute::<Open, unsafe extern "C" fn()>(
                        open_no_fifo,
                    )),
                ),
                None => rusqlite::ffi::SQLITE_NOTFOUND,
            }
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::warn!(
                rc,
                "cannot make SQLite refuse FIFOs in connectors' directories"
            );
        }
    });
}

/// SQLite's `open`, never blocking on a FIFO: see [`harden_vfs`].
unsafe extern "C" fn open_no_fifo(
    path: *const libc::c_char,
    flags: libc::c_int,
    mode: libc::c_int,
) -> libc::c_int {
    // SAFETY: `path` is SQLite's NUL-terminated name; the rest are plain syscalls on the
    // descriptor just opened.
    unsafe {
        let fd = libc::open(path, flags | libc::O_NONBLOCK, mode as libc::c_uint);
        if fd < 0 {
            return fd;
        }
        let mut st: libc::stat = std::mem::zeroed();
        let kind = if libc::fstat(fd, &mut st) == 0 {
            st.st_mode & libc::S_IFMT
        } else {
            0
        };
        // A side file with a second name is a hard link someone made (SQLite never
        // does): SQLite run as root would give it to the database's owner and reset it.
        let linked_side = kind == libc::S_IFREG && st.st_nlink > 1 && {
            let name = std::ffi::CStr::from_ptr(path).to_bytes();
            [&b"-journal"[..], b"-wal", b"-shm"]
                .iter()
                .any(|s| name.ends_with(s))
        };
        if kind == libc::S_IFIFO || kind == libc::S_IFSOCK || kind == 0 || linked_side {
            libc::close(fd);
            *libc::__errno_location() = libc::ENXIO;
            return -1;
        }
        if flags & libc::O_NONBLOCK == 0 {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
        fd
    }
}

/// Opens a database read-only. The caller has checked that it is SQLite.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    open(path, OpenFlags::SQLITE_OPEN_READ_ONLY, None)
}

/// Fails if `path` is a symbolic link (anything else, a missing file too, is left to the
/// checks that follow).
pub fn refuse_link(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::db(
            path,
            "is a symbolic link; a connector's database is never opened through one",
            "replace the link by the real file (a connector's user could point it anywhere)",
        )),
        _ => Ok(()),
    }
}

/// Opens a connector's live database read-only, never through a symbolic link: its
/// directory belongs to the connector's user, who may put a link at its name, and SQLite
/// opening the file behind it as root would read it and create its `-wal` and `-shm`
/// there. A link is refused by name; one planted after that check is refused by SQLite
/// (`SQLITE_OPEN_NOFOLLOW`, given the path with its directory resolved, since that flag
/// refuses a link in any part of the path: a hub root reached through a link is fine).
pub fn open_live(path: &Path) -> Result<Connection> {
    refuse_link(path)?;
    let resolved = match (path.file_name(), crate::sqlite::fsio::parent_dir(path)) {
        (Some(name), dir) => std::fs::canonicalize(dir)
            .map_err(|e| Error::io(dir, "cannot resolve the directory", e))?
            .join(name),
        (None, _) => path.to_path_buf(),
    };
    open_at(
        path,
        &resolved,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        None,
    )
}

/// Opens a database for writing (a file we own: a snapshot, a download, a remap copy).
pub fn open_read_write(path: &Path) -> Result<Connection> {
    open(path, OpenFlags::SQLITE_OPEN_READ_WRITE, None)
}

/// Opens a private copy that no other process opens (a download or a remap copy under
/// a temp name) for one batch of writes: no rollback journal, no syncs (a crash leaves
/// only a temp file, which is thrown away). The caller fsyncs the file when done.
pub fn open_scratch(path: &Path) -> Result<Connection> {
    // Set before the connection is locked down: defensive mode refuses journal_mode=OFF.
    open(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE,
        Some("PRAGMA journal_mode=DELETE; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"),
    )
}

/// Never creates the file (no `SQLITE_OPEN_CREATE`): a wrong path is an error, not a
/// new empty database. Waits up to 10 s for another connection's lock.
///
/// A path is a path, never an SQLite URI: no `SQLITE_OPEN_URI`, and since the bundled
/// SQLite is built with `SQLITE_USE_URI` (URIs on by default), a relative path is given
/// as `./path`, which no URI starts with (`--db file:x.db` opens the file `file:x.db`).
///
/// Every database hubvault opens is one it did not write (a download, the connector's
/// live file, a copy of either), so every connection is locked down before any SQL of
/// the file's schema can run: `SQLITE_DBCONFIG_DEFENSIVE` (no `writable_schema`, no
/// direct writes to shadow tables, no `journal_mode=OFF`) and `trusted_schema` off (a
/// view, trigger, `CHECK` or generated column stored in the file may only call functions
/// and virtual tables marked harmless; our own SQL functions are direct-only).
/// `setup` runs before that, on our own settings only.
fn open(path: &Path, mode: OpenFlags, setup: Option<&str>) -> Result<Connection> {
    open_at(path, &not_a_uri(path), mode, setup)
}

/// [`open`] of the file at `at`, named `path` in errors.
fn open_at(path: &Path, at: &Path, mode: OpenFlags, setup: Option<&str>) -> Result<Connection> {
    harden_vfs();
    let flags = mode | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(at, flags)
        .map_err(|e| Error::sqlite(path, "cannot open the database", e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| Error::sqlite(path, "busy_timeout", e))?;
    if let Some(sql) = setup {
        conn.execute_batch(sql)
            .map_err(|e| Error::sqlite(path, "cannot set up the connection", e))?;
    }
    lock_down(&conn).map_err(|e| Error::sqlite(path, "cannot lock the connection down", e))?;
    if mode.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        // A connector's live database: SQLite's last connection to close takes an
        // EXCLUSIVE lock on the file to checkpoint the WAL, which a read-only one cannot
        // do anyway; a connector opening the file meanwhile would meet it. One lock of
        // ours fewer (the others are SQLite's brief ones while a connection opens).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| Error::sqlite(path, "cannot set up the connection", e))?;
    }
    Ok(conn)
}

/// A read-only connection that takes no lock and reads the file as it is on disk
/// (SQLite's `immutable=1`: no hot-journal check, no change detection). Only for a file
/// that cannot change while the connection reads: the one whose `EXCLUSIVE` lock our own
/// write transaction holds after `cache_flush` has put every page it changed into the
/// file (the originals are in its synced journal), so that several connections can check
/// the result on several cores before the commit. Closing it cannot drop the writer's
/// locks: it opens the file through the same unix VFS, which keeps a descriptor open
/// while the process holds a lock on the file.
pub fn open_frozen(path: &Path) -> Result<Connection> {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    let abs =
        std::path::absolute(path).map_err(|e| Error::io(path, "cannot resolve the path", e))?;
    let uri = format!(
        "file:{}?immutable=1",
        percent_encoding::percent_encode(abs.as_os_str().as_encoded_bytes(), KEEP)
    );
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    harden_vfs();
    let conn = Connection::open_with_flags(uri, flags)
        .map_err(|e| Error::sqlite(path, "cannot open the database", e))?;
    lock_down(&conn).map_err(|e| Error::sqlite(path, "cannot lock the connection down", e))?;
    Ok(conn)
}

/// Flushes `conn`'s database file to disk through SQLite's own file handle (`xSync`).
/// For a [`open_frozen`] connection while the writer's commit is still ahead: the
/// commit's own sync then finds little left to write. Never through a descriptor of our
/// own: closing it would drop the process's POSIX locks on the file, the writer's too.
pub fn sync_main_file(conn: &Connection, path: &Path) -> Result<()> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the handle is live and used by this thread alone; SQLite writes the main
    // database's file object (owned by the connection, live while it is open) into `file`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast(),
        )
    };
    let failed = |what: String| Error::db(path, what, "nothing was changed; try again");
    if rc != ffi::SQLITE_OK || file.is_null() {
        return Err(failed(format!(
            "cannot reach the file to sync it (SQLite code {rc})"
        )));
    }
    // SAFETY: `file` is the connection's open main file; its methods are set while open.
    let rc = unsafe {
        match (*file).pMethods.as_ref().and_then(|m| m.xSync) {
            Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
            None => ffi::SQLITE_OK,
        }
    };
    if rc != ffi::SQLITE_OK {
        return Err(failed(format!(
            "cannot sync the file to disk (SQLite code {rc})"
        )));
    }
    Ok(())
}

/// `path`, spelled so that SQLite cannot read it as a URI.
fn not_a_uri(path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        Path::new(".").join(path)
    }
}

/// Fails unless the database has the two tables every connector database holds,
/// `Integrations` and `Events` (PRODUCT.md): anything else is not what the command was
/// meant for, and backing it up at a connector's key would replace that connector's
/// backup with a stranger.
pub fn require_connector_tables(conn: &Connection, path: &Path) -> Result<()> {
    for table in ["Integrations", "Events"] {
        let found = table_exists(conn, table)
            .map_err(|e| Error::sqlite(path, "cannot read the schema", e))?;
        if !found {
            return Err(Error::db(
                path,
                format!(
                    "has no {table} table, so it is not a connector database (a connector's sqlite.db holds Integrations and Events)"
                ),
                "check the path (connector databases live at <hub-root>/<connectorId>/sqlite.db); if this is the connector's database, it was damaged: restore it with `hubvault restore`",
            ));
        }
    }
    Ok(())
}

/// `SQLITE_DBCONFIG_DEFENSIVE` on, `trusted_schema` off: see [`open`].
fn lock_down(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    Ok(())
}

/// True if and only if `conn` is locked down as [`open`] does it.
#[cfg(test)]
fn is_locked_down(conn: &Connection) -> rusqlite::Result<bool> {
    let defensive = conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE)?;
    let trusted = conn.db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA)?;
    Ok(defensive && !trusted)
}

pub fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_schema WHERE type='table' AND name=?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
}

/// Reads the datahub id (`Integrations.id`) and connector id (`sources[0].id`).
pub fn read_info(conn: &Connection, path: &Path) -> Result<ConnectorInfo> {
    let not_connector = |what: String| {
        Error::db(
            path,
            what,
            "this does not look like a connector database; check --db (expected <hub-root>/<connectorId>/sqlite.db)",
        )
    };
    let q = |e| Error::sqlite(path, "cannot read Integrations", e);
    if !table_exists(conn, "Integrations").map_err(q)? {
        return Err(not_connector("has no Integrations table".into()));
    }
    let has_type = conn
        .prepare("SELECT 1 FROM pragma_table_info('Integrations') WHERE name='type'")
        .and_then(|mut s| s.exists([]))
        .map_err(q)?;
    let sql = if has_type {
        "SELECT CAST(id AS TEXT), CAST(sources AS TEXT), CAST(type AS TEXT) FROM Integrations LIMIT 2"
    } else {
        "SELECT CAST(id AS TEXT), CAST(sources AS TEXT), NULL FROM Integrations LIMIT 2"
    };
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = conn
        .prepare(sql)
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(q)?;
    let (id, sources, itype) = match rows.as_slice() {
        [] => {
            return Err(not_connector(
                "has no row in Integrations, so no datahub id".into(),
            ));
        }
        [one] => one.clone(),
        _ => {
            return Err(Error::db(
                path,
                "holds more than one Integrations row; a connector database holds exactly one",
                "pass --datahub and --connector is not enough here: check that --db is one connector's database",
            ));
        }
    };
    let id = id.ok_or_else(|| not_connector("Integrations.id is NULL".into()))?;
    let datahub = DatahubId::parse(&id).map_err(|_| {
        Error::db(
            path,
            format!("Integrations.id {id:?} is not a datahub id (UUID)"),
            "check --db",
        )
    })?;
    let sources = sources.ok_or_else(|| not_connector("Integrations.sources is NULL".into()))?;
    let parsed: serde_json::Value = serde_json::from_str(&sources)
        .map_err(|e| not_connector(format!("Integrations.sources is not JSON: {e}")))?;
    let first = parsed
        .as_array()
        .ok_or_else(|| not_connector("Integrations.sources is not a JSON array".into()))?
        .first()
        .ok_or_else(|| {
            not_connector(
                "Integrations.sources is empty: the database has no source (connector)".into(),
            )
        })?;
    let cid = first
        .get("id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| not_connector("Integrations.sources[0] has no string \"id\"".into()))?;
    let connector = ConnectorId::parse(cid).map_err(|_| {
        Error::db(
            path,
            format!("Integrations.sources[0].id {cid:?} is not a connector id (UUID)"),
            "check --db",
        )
    })?;
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    let name = text(first.get("name")).unwrap_or_default();
    let source_type = text(first.get("type"))
        .or_else(|| text(first.get("config").and_then(|c| c.get("sourceType"))))
        .or(itype)
        .unwrap_or_default();
    Ok(ConnectorInfo {
        datahub,
        connector,
        name,
        source_type,
        source: first.clone(),
    })
}

/// Row count of every table (internal `sqlite_*` tables left out), by name.
pub fn table_counts(conn: &Connection, path: &Path) -> Result<BTreeMap<String, u64>> {
    let q = |e| Error::sqlite(path, "cannot count rows", e);
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(q)?;
    let mut out = BTreeMap::new();
    for name in names {
        let sql = format!("SELECT count(*) FROM {}", quote_ident(&name));
        // Virtual tables whose module is missing cannot be read: count them as unknown.
        match conn.query_row(&sql, [], |r| r.get::<_, i64>(0)) {
            Ok(n) => {
                out.insert(name, n as u64);
            }
            Err(e) if e.to_string().contains("no such module") => {}
            Err(e) => return Err(q(e)),
        }
    }
    Ok(out)
}

/// The child columns of foreign key `fkid` of `table`, joined by ", ".
fn foreign_key_columns(conn: &Connection, table: &str, fkid: i64) -> rusqlite::Result<String> {
    let cols: Vec<String> = conn
        .prepare("SELECT \"from\" FROM pragma_foreign_key_list(?1) WHERE id = ?2 ORDER BY seq")?
        .query_map(rusqlite::params![table, fkid], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(cols.join(", "))
}

/// `"name"` with embedded quotes doubled: safe for any table or column name.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled: a SQL string literal for any text.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The check [`check_integrity`] runs on a database of `size` bytes: `integrity_check`,
/// or `quick_check` past [`full_check_max_bytes`].
pub fn check_for(size: u64) -> &'static str {
    // A malformed value is refused before any command starts (the binary calls
    // `full_check_max_bytes` first); here it can only be the default.
    let limit = full_check_max_bytes().unwrap_or(FULL_CHECK_MAX_BYTES);
    if size <= limit {
        "integrity_check"
    } else {
        "quick_check"
    }
}

/// Runs `integrity_check` (or `quick_check` past [`FULL_CHECK_MAX_BYTES`]) and
/// `foreign_key_check`. Returns which check ran.
pub fn check_integrity(conn: &Connection, path: &Path, size: u64) -> Result<&'static str> {
    let pragma = check_structure(conn, path, size)?;
    check_foreign_keys(conn, path)?;
    Ok(pragma)
}

/// As [`check_integrity`] on two cores: the structure check on a second, read-only
/// connection to `path` (another thread) while `conn` runs `foreign_key_check`. Only for
/// a file nobody writes meanwhile (our own copy), so that both connections read one state.
pub fn check_integrity_on_two(conn: &Connection, path: &Path, size: u64) -> Result<&'static str> {
    let (fk, structure) = with_structure_check(path, size, || check_foreign_keys(conn, path))?;
    fk?;
    structure
}

/// Runs [`check_structure`] on a new read-only connection to `path`, on another thread,
/// while `rest` runs on this one; returns both verdicts (`rest`'s first: when it fails,
/// the structure check is interrupted, not waited for in full). For a file nobody writes
/// meanwhile (a copy of our own).
pub fn with_structure_check<T>(
    path: &Path,
    size: u64,
    rest: impl FnOnce() -> Result<T>,
) -> Result<(Result<T>, Result<&'static str>)> {
    let checker = open_read_only(path)?;
    let interrupt = checker.get_interrupt_handle();
    std::thread::scope(|s| {
        let structure = s.spawn(move || {
            let t0 = std::time::Instant::now();
            let r = check_structure(&checker, path, size);
            tracing::debug!(
                "{} on a second connection took {:?}",
                check_for(size),
                t0.elapsed()
            );
            r
        });
        let t0 = std::time::Instant::now();
        let rest = rest();
        tracing::debug!("the checks beside it took {:?}", t0.elapsed());
        if rest.is_err() {
            interrupt_until(&interrupt, || structure.is_finished());
        }
        let structure = structure
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        Ok((rest, structure))
    })
}

/// Interrupts the statements of the connection behind `handle` until `finished` says
/// the thread running them has returned. `sqlite3_interrupt` alone is lost when it comes
/// before that thread's statement has started; repeated every millisecond, it also stops
/// a statement that starts later. For a check whose verdict no longer matters (the work
/// beside it failed): its caller may hold a write lock that a connector waits for.
pub fn interrupt_until(handle: &rusqlite::InterruptHandle, finished: impl Fn() -> bool) {
    while !finished() {
        handle.interrupt();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The structural half of [`check_integrity`]: `integrity_check`, or `quick_check` over
/// the size limit ([`check_for`]). Returns which ran.
pub fn check_structure(conn: &Connection, path: &Path, size: u64) -> Result<&'static str> {
    check_structure_with(conn, path, check_for(size))
}

/// `PRAGMA pragma` (`integrity_check` or `quick_check`): the verdict of
/// [`check_structure`] with the check chosen by the caller.
pub fn check_structure_with(
    conn: &Connection,
    path: &Path,
    pragma: &'static str,
) -> Result<&'static str> {
    let bad = |detail: String| {
        Error::db(
            path,
            format!("fails PRAGMA {pragma}: {detail}"),
            "the database is damaged; it was not uploaded and the last good backup is kept. Restore it with `hubvault restore`",
        )
    };
    let lines: Vec<String> = conn
        .prepare(&format!("PRAGMA {pragma}(20)"))
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| bad(e.to_string()))?;
    if lines != ["ok"] {
        return Err(bad(lines.join("; ")));
    }
    Ok(pragma)
}

/// `PRAGMA foreign_key_check`: no row may point at a parent row that does not exist.
pub fn check_foreign_keys(conn: &Connection, path: &Path) -> Result<()> {
    let bad = |detail: String| {
        Error::db(
            path,
            format!("fails PRAGMA foreign_key_check: {detail}"),
            "the database is damaged; it was not uploaded and the last good backup is kept. Restore it with `hubvault restore`",
        )
    };
    let fk: Vec<(String, Option<i64>, String, i64)> = conn
        .prepare("PRAGMA foreign_key_check")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(|e| bad(e.to_string()))?;
    if let Some((table, rowid, parent, fkid)) = fk.first() {
        let columns = foreign_key_columns(conn, table, *fkid).unwrap_or_default();
        let row = match rowid {
            Some(r) => format!("row {r} (rowid) of table {table}"),
            None => format!("a row of table {table}"),
        };
        let via = if columns.is_empty() {
            String::new()
        } else {
            format!(" through {table}.{columns}")
        };
        let more = match fk.len() {
            1 => String::new(),
            n => format!(" ({} more such rows)", n - 1),
        };
        return Err(Error::db(
            path,
            format!(
                "fails PRAGMA foreign_key_check: {row} points{via} at a row of {parent} that does not exist{more}"
            ),
            format!(
                "the database was not used; find the rows with `sqlite3 FILE 'PRAGMA foreign_key_check'` and add the missing {parent} row or delete the orphans"
            ),
        ));
    }
    Ok(())
}

/// `HUBVAULT_FULL_CHECK_MAX_BYTES` (a whole number of bytes), else
/// [`FULL_CHECK_MAX_BYTES`]. A value that does not parse is an error naming the variable,
/// never silently the default.
pub fn full_check_max_bytes() -> Result<u64> {
    match std::env::var("HUBVAULT_FULL_CHECK_MAX_BYTES") {
        Err(std::env::VarError::NotPresent) => Ok(FULL_CHECK_MAX_BYTES),
        Ok(v) if v.is_empty() => Ok(FULL_CHECK_MAX_BYTES),
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            Error::usage(
                format!("HUBVAULT_FULL_CHECK_MAX_BYTES={v:?} is not a whole number of bytes"),
                "write e.g. HUBVAULT_FULL_CHECK_MAX_BYTES=536870912 (512 MiB), or unset it",
            )
        }),
        Err(std::env::VarError::NotUnicode(v)) => Err(Error::usage(
            format!("HUBVAULT_FULL_CHECK_MAX_BYTES={v:?} is not a whole number of bytes"),
            "write e.g. HUBVAULT_FULL_CHECK_MAX_BYTES=536870912 (512 MiB), or unset it",
        )),
    }
}

/// Page size, page count and journal mode.
pub fn page_info(conn: &Connection, path: &Path) -> Result<(u64, u64, String)> {
    let q = |e| Error::sqlite(path, "cannot read pragmas", e);
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(q)?;
    let page_count: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(q)?;
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(q)?;
    Ok((
        page_size as u64,
        page_count as u64,
        journal.to_ascii_lowercase(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement that starts only after the interrupts began (the case a single
    /// `sqlite3_interrupt` misses: it comes before the statement and is lost) is stopped
    /// all the same. The statement would count for hours; that it returns at all, with
    /// SQLITE_INTERRUPT, is the claim.
    #[test]
    fn interrupt_until_stops_a_statement_that_starts_after_the_first_interrupt() {
        let conn = Connection::open_in_memory().unwrap();
        let handle = conn.get_interrupt_handle();
        let (started, start) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let worker = s.spawn(move || {
                // Waits until the interrupts have begun.
                start.recv().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
                conn.query_row(
                    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1e15) SELECT count(*) FROM c",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            });
            started.send(()).unwrap();
            interrupt_until(&handle, || worker.is_finished());
            let err = worker.join().unwrap().expect_err("interrupted");
            assert_eq!(
                err.sqlite_error_code(),
                Some(rusqlite::ErrorCode::OperationInterrupted)
            );
        });
    }

    fn journal(conn: &Connection) -> String {
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    }

    /// A connector that opens its WAL database for each statement (as the sqlite3 CLI
    /// does) while our read-only connections open and close back to back (the agent's
    /// scheduler pass, a backup's skip, thousands of times here) never gets "database is
    /// locked" when it has a busy timeout: no lock of ours is held long. 1,500 writes,
    /// bounded; no timing asserted. (Without a busy timeout, about 6% of these writes
    /// fail, with or without `NO_CKPT_ON_CLOSE`: SQLite's own locks while a connection
    /// opens; a connector needs a busy timeout, as the bench's `.timeout 5000` is.)
    #[test]
    fn our_read_only_connections_never_make_a_writer_with_a_busy_timeout_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sqlite.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("PRAGMA journal_mode=wal; CREATE TABLE t(x);")
                .unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (stop, path) = (stop.clone(), path.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let c = open_read_only(&path).unwrap();
                    let _: i64 = c
                        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                        .unwrap();
                    drop(c);
                    n += 1;
                }
                n
            })
        };
        let mut busy = Vec::new();
        for i in 0..1500 {
            let w = Connection::open(&path).unwrap();
            w.busy_timeout(std::time::Duration::from_secs(1)).unwrap();
            if let Err(e) = w.execute("INSERT INTO t VALUES (?1)", [i]) {
                busy.push(format!("write {i}: {e}"));
            }
            if let Err((_, e)) = w.close() {
                busy.push(format!("close {i}: {e}"));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let opened = reader.join().unwrap();
        assert!(
            busy.is_empty(),
            "{} of 1500 failed ({opened} read-only opens): {busy:?}",
            busy.len()
        );
    }

    #[test]
    fn every_open_is_locked_down_and_only_a_scratch_copy_runs_without_a_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t(a)")
            .unwrap();
        let rw = open_read_write(&path).unwrap();
        assert!(is_locked_down(&rw).unwrap());
        // Defensive mode keeps the journal: a plain connection cannot switch it off.
        let mode: String = rw
            .query_row("PRAGMA journal_mode=OFF", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        drop(rw);
        let scratch = open_scratch(&path).unwrap();
        assert!(is_locked_down(&scratch).unwrap());
        assert_eq!(journal(&scratch), "off");
        drop(scratch);
        assert!(is_locked_down(&open_read_only(&path).unwrap()).unwrap());
    }
}
