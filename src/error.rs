//! The library's error type.
//!
//! Rules (after rustic_core's `error.rs`):
//! - Few variants, each carrying *where* it happened: the file, the object key or the
//!   flag. A message never says only "failed".
//! - Every variant a user can fix carries a `hint`: one sentence that says what to try.
//!   The binary prints the error chain once, then `Try: <hint>`.
//! - The variant decides the exit code, not the call site: `Usage` is 2 (the command line
//!   or configuration is wrong), everything else is 1 (the operation failed).
//! - A hint is chosen from a typed cause (the store's error variant, an `io::ErrorKind`,
//!   SQLite's error code), never by searching an error's text: a key or a UUID in a
//!   message must not be able to change what we advise.
//! - Secrets never enter an error: bucket errors carry the key and the store's message,
//!   never the credentials (URLs are shown without userinfo; a test with a marker
//!   credential holds us to it).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request to the bucket failed, from the store's typed error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Nothing at the key (or no such bucket).
    NotFound,
    /// A conditional write met an object already there, or a precondition failed.
    Conflict,
    /// The store knows who we are and refuses (403, a bucket policy).
    PermissionDenied,
    /// The store does not accept our credentials (401, bad signature, no credentials).
    Unauthenticated,
    /// The store could not be reached or did not answer in time.
    Unreachable,
    /// The local directory of a `file://` bucket has no space left.
    Full,
    /// The store does not support what we asked.
    NotSupported,
    /// Anything else the store answered (5xx after the retries, a malformed answer).
    Other,
}

impl StoreFailure {
    /// From object_store's error: its variant, then the causes it wraps.
    pub fn of(e: &object_store::Error) -> StoreFailure {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => StoreFailure::NotFound,
            E::AlreadyExists { .. } | E::Precondition { .. } => StoreFailure::Conflict,
            E::PermissionDenied { .. } => StoreFailure::PermissionDenied,
            E::Unauthenticated { .. } => StoreFailure::Unauthenticated,
            E::NotSupported { .. } | E::NotImplemented { .. } => StoreFailure::NotSupported,
            other => Self::from_causes(other),
        }
    }

    /// Walks the chain of causes for a typed one: an HTTP transport error, or a local
    /// I/O error (a `file://` bucket).
    fn from_causes(e: &(dyn std::error::Error + 'static)) -> StoreFailure {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cause {
            if let Some(http) = c.downcast_ref::<object_store::client::HttpError>() {
                use object_store::client::HttpErrorKind as K;
                return match http.kind() {
                    K::Connect | K::Timeout | K::Interrupted | K::Request => {
                        StoreFailure::Unreachable
                    }
                    _ => StoreFailure::Other,
                };
            }
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                return Self::from_io_kind(io.kind());
            }
            cause = c.source();
        }
        StoreFailure::Other
    }

    pub fn from_io_kind(kind: std::io::ErrorKind) -> StoreFailure {
        use std::io::ErrorKind as K;
        match kind {
            K::NotFound => StoreFailure::NotFound,
            K::PermissionDenied | K::ReadOnlyFilesystem => StoreFailure::PermissionDenied,
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge => StoreFailure::Full,
            K::AlreadyExists => StoreFailure::Conflict,
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::TimedOut
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::BrokenPipe
            | K::UnexpectedEof => StoreFailure::Unreachable,
            _ => StoreFailure::Other,
        }
    }

    /// What to try after `op` failed this way on the bucket at `url`. A refused write
    /// also names `--sse`: a bucket policy that requires server-side encryption refuses
    /// an unencrypted PUT with the same 403 AccessDenied as missing permissions, and
    /// nothing in the answer tells the two apart.
    pub fn hint_for(self, op: &str, url: &str) -> String {
        if self == StoreFailure::PermissionDenied && op == "PUT" {
            return format!(
                "the store refused this write (403): if the bucket policy requires server-side encryption, pass --sse AES256 or --sse aws:kms [--sse-kms-key-id KEY] (or HUBVAULT_SSE, or sse = \"...\" in /etc/hubvault/hubvault.toml); otherwise check that the credentials (AWS_ACCESS_KEY_ID or the instance role) may write to {url}"
            );
        }
        self.hint(url)
    }

    /// What to try, for the bucket at `url`.
    pub fn hint(self, url: &str) -> String {
        match self {
            StoreFailure::NotFound => format!(
                "nothing is at that key (or the bucket does not exist): check --bucket {url}, --org and the ids; `hubvault status` lists the backups"
            ),
            StoreFailure::Conflict => {
                "another writer changed the object at the same time; run the command again".into()
            }
            StoreFailure::PermissionDenied => format!(
                "the store refused our credentials for this request (403): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the instance role) and that they may read and write {url} (bucket policy, directory permissions)"
            ),
            StoreFailure::Unauthenticated => "the store refused our credentials; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the instance role)".into(),
            StoreFailure::Unreachable => format!(
                "cannot reach the store of {url}; check AWS_ENDPOINT_URL and the network, then try again"
            ),
            StoreFailure::Full => "the bucket's disk is full; free space there and try again".into(),
            StoreFailure::NotSupported => {
                "this store does not support the request; use S3 or a local directory".into()
            }
            StoreFailure::Other => "try again; if it keeps failing, check the store's logs".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or the configuration is wrong: a malformed id, an id that
    /// disagrees with the database, a bucket URL we cannot parse.
    #[error("{message}")]
    Usage { message: String, hint: String },

    /// A local database is missing, not SQLite, corrupt, or lacks what a connector
    /// database must hold.
    #[error("{}: {message}", path.display())]
    Database {
        path: PathBuf,
        message: String,
        hint: String,
        #[source]
        source: Option<rusqlite::Error>,
    },

    /// A request to the bucket failed.
    #[error("{op} {key}: {message}")]
    Bucket {
        op: &'static str,
        key: String,
        failure: StoreFailure,
        message: String,
        hint: String,
        #[source]
        source: Option<object_store::Error>,
    },

    /// A local file operation failed.
    #[error("{}: {message}", path.display())]
    Io {
        path: PathBuf,
        message: String,
        hint: String,
        #[source]
        source: std::io::Error,
    },

    /// Something we fetched or built did not pass its check (checksum, integrity,
    /// ids). Nothing was installed or replaced.
    #[error("{message}")]
    Check { message: String, hint: String },
}

impl Error {
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn check(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Check {
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn db(
        path: impl Into<PathBuf>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::Database {
            path: path.into(),
            message: message.into(),
            hint: hint.into(),
            source: None,
        }
    }

    /// A failed request to the bucket at `url`, about the object `key` (as shown).
    pub fn bucket(op: &'static str, key: String, url: &str, e: object_store::Error) -> Self {
        let failure = StoreFailure::of(&e);
        Error::Bucket {
            op,
            key,
            failure,
            message: redact_userinfo(&e.to_string()),
            hint: failure.hint_for(op, url),
            source: Some(e),
        }
    }

    /// A failed request to the bucket whose cause is known only by its kind.
    pub fn bucket_failure(
        op: &'static str,
        key: String,
        url: &str,
        failure: StoreFailure,
        message: impl Into<String>,
    ) -> Self {
        Error::Bucket {
            op,
            key,
            failure,
            message: redact_userinfo(&message.into()),
            hint: failure.hint_for(op, url),
            source: None,
        }
    }

    pub fn sqlite(path: impl Into<PathBuf>, what: &str, source: rusqlite::Error) -> Self {
        let path = path.into();
        let code = source.sqlite_error_code();
        let cannot_write = matches!(
            code,
            Some(rusqlite::ErrorCode::CannotOpen)
                | Some(rusqlite::ErrorCode::PermissionDenied)
                | Some(rusqlite::ErrorCode::ReadOnly)
        );
        // SQLite says "unable to open" or "readonly database" either way; a read-only
        // mount is worth naming, since no permission change will fix it.
        if cannot_write && on_read_only_fs(&path) {
            return Error::Database {
                message: format!("{what}: {source} (the file system is mounted read-only)"),
                path,
                hint: "remount it read-write (or use another directory) and try again".into(),
                source: Some(source),
            };
        }
        let extended = source.sqlite_error().map(|e| e.extended_code);
        use rusqlite::ffi;
        if matches!(
            extended,
            Some(ffi::SQLITE_READONLY_ROLLBACK | ffi::SQLITE_READONLY_RECOVERY)
        ) {
            let (what_left, side) = if extended == Some(ffi::SQLITE_READONLY_ROLLBACK) {
                ("a hot journal", "-journal")
            } else {
                ("a write-ahead log that needs recovery", "-wal")
            };
            let mut side_file = path.as_os_str().to_owned();
            side_file.push(side);
            // SQLite counts a side file it cannot open as hot: a link, a FIFO or a file
            // with a second name put there (its opens refuse them all, see
            // `sqlite::db::harden_vfs`) is no journal, and "do not delete it" would be false.
            let odd = std::fs::symlink_metadata(&side_file).is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                !m.is_file() || m.nlink() > 1
            });
            if odd {
                return Error::Database {
                    message: format!(
                        "{what}: {} is not a regular file SQLite made (it is a symbolic or hard link, a FIFO or a socket), so SQLite cannot tell whether it holds a transaction to roll back; the database is not read",
                        std::path::Path::new(&side_file).display()
                    ),
                    path,
                    hint: format!(
                        "SQLite never makes such a file: ask who put it there, then remove {}",
                        std::path::Path::new(&side_file).display()
                    ),
                    source: Some(source),
                };
            }
            return Error::Database {
                message: format!(
                    "{what}: {what_left} is beside it ({}), left by a process that crashed or was killed in the middle of a transaction; hubvault opens a live database read-only and may not repair it",
                    std::path::Path::new(&side_file).display()
                ),
                path,
                hint: format!(
                    "do not delete {}: the database needs it. Start the connector (or run `sqlite3 DB 'PRAGMA quick_check'` as the database's owner) so SQLite rolls it back, then back up again",
                    std::path::Path::new(&side_file).display()
                ),
                source: Some(source),
            };
        }
        if code == Some(rusqlite::ErrorCode::ConstraintViolation) {
            let hint = match extended {
                Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                    "a value written would equal one already in a UNIQUE column or primary key (after an id rewrite: the database already holds a row with the new id, e.g. copied from the new connector); nothing was changed: find and remove the duplicate with sqlite3, or restore onto other ids"
                }
                Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
                    "a row would point at a parent row that does not exist; nothing was changed: check the rows with `sqlite3 FILE 'PRAGMA foreign_key_check'`"
                }
                _ => {
                    "a constraint of the database (NOT NULL, CHECK, UNIQUE) refused a change; nothing was changed: check the table named above with sqlite3"
                }
            };
            return Error::Database {
                path,
                message: format!("{what}: {source}"),
                hint: hint.to_string(),
                source: Some(source),
            };
        }
        let hint = match code {
            Some(rusqlite::ErrorCode::NotADatabase)
            | Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
                "the file is damaged or not a SQLite database; restore it with `hubvault restore`"
            }
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                "another process holds a lock on the database for too long; try again in a moment"
            }
            Some(rusqlite::ErrorCode::CannotOpen)
            | Some(rusqlite::ErrorCode::PermissionDenied)
            | Some(rusqlite::ErrorCode::ReadOnly) => {
                "check that the file exists and that this user may read it (and write its directory)"
            }
            Some(rusqlite::ErrorCode::DiskFull) => "free some space on the disk and try again",
            _ => "check the file with `sqlite3 FILE 'PRAGMA integrity_check'`",
        };
        Error::Database {
            path,
            message: format!("{what}: {source}"),
            hint: hint.to_string(),
            source: Some(source),
        }
    }

    pub fn io(path: impl Into<PathBuf>, what: &str, source: std::io::Error) -> Self {
        let path = path.into();
        // The same words as a database on a read-only mount (see `sqlite`).
        if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
            return Error::Io {
                message: format!("{what}: {source} (the file system is mounted read-only)"),
                path,
                hint: "remount it read-write (or use another directory) and try again".into(),
                source,
            };
        }
        let hint = match source.kind() {
            std::io::ErrorKind::NotFound => "check the path",
            std::io::ErrorKind::PermissionDenied => "run as a user that may read and write there",
            std::io::ErrorKind::StorageFull => "free some space on that file system and try again",
            _ => "check the file system and try again",
        };
        Error::Io {
            path,
            message: format!("{what}: {source}"),
            hint: hint.to_string(),
            source,
        }
    }

    /// The same error with another hint: for a caller that knows better what to try.
    pub fn with_hint(mut self, new: impl Into<String>) -> Self {
        match &mut self {
            Error::Usage { hint, .. }
            | Error::Database { hint, .. }
            | Error::Bucket { hint, .. }
            | Error::Io { hint, .. }
            | Error::Check { hint, .. } => *hint = new.into(),
        }
        self
    }

    /// The same error with `note` added to its message (`…; note`): for a caller that
    /// ran it as one of several (which connector of a hub it was about). Kind, exit code
    /// and hint stay.
    pub fn with_note(mut self, note: &str) -> Self {
        match &mut self {
            Error::Usage { message, .. }
            | Error::Database { message, .. }
            | Error::Bucket { message, .. }
            | Error::Io { message, .. }
            | Error::Check { message, .. } => {
                message.push_str("; ");
                message.push_str(note);
            }
        }
        self
    }

    /// The hint for the user, if the error has one.
    pub fn hint(&self) -> Option<&str> {
        let hint = match self {
            Error::Usage { hint, .. }
            | Error::Database { hint, .. }
            | Error::Bucket { hint, .. }
            | Error::Io { hint, .. }
            | Error::Check { hint, .. } => hint,
        };
        (!hint.is_empty()).then_some(hint.as_str())
    }

    /// 2 when the command line or configuration is wrong, 1 when the operation failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } => 2,
            _ => 1,
        }
    }

    /// True if and only if the error says that an object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Bucket {
                failure: StoreFailure::NotFound,
                ..
            }
        )
    }

    /// True if and only if the bucket did not answer the request (it failed, refused or
    /// timed out), as opposed to answering that the object is not there. Code that deletes
    /// or installs by a read's answer must not take such a failure for "absent".
    pub fn is_unanswered(&self) -> bool {
        self.store_failure()
            .is_some_and(|f| f != StoreFailure::NotFound)
    }

    /// Why a bucket request failed; `None` for errors that are not the bucket's.
    pub fn store_failure(&self) -> Option<StoreFailure> {
        match self {
            Error::Bucket { failure, .. } => Some(*failure),
            _ => None,
        }
    }
}

/// `text` with the user name and password of every URL in it removed
/// (`http://user:pw@host/x` becomes `http://host/x`): the store's own errors name the
/// endpoint URL as it was configured, and `AWS_ENDPOINT_URL` may carry credentials.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// True if and only if the file system holding `path` (or, for a file that is not
/// there, its directory) is mounted read-only.
fn on_read_only_fs(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let probe = if path.exists() {
        path
    } else {
        path.parent().unwrap_or(path)
    };
    let Ok(c) = std::ffi::CString::new(probe.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `statvfs` is plain old data for which all-zero bytes are a valid value;
    // the call only writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call, and `st` is a
    // valid, writable `statvfs`, as statvfs(3) asks.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_RDONLY != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_of_every_url_in_a_text_is_removed() {
        assert_eq!(
            redact_userinfo(
                "GET http://user:pw@127.0.0.1:1/b?x=1 and s3://AK:SECRET@bkt/p: refused"
            ),
            "GET http://127.0.0.1:1/b?x=1 and s3://bkt/p: refused"
        );
        assert_eq!(redact_userinfo("no url here: a@b"), "no url here: a@b");
        assert_eq!(redact_userinfo("file:///x@y/z"), "file:///x@y/z");
        assert_eq!(redact_userinfo("\"https://u:p@h\""), "\"https://h\"");
    }

    #[test]
    fn a_key_that_spells_403_does_not_change_the_hint() {
        // A UUID in the key with "403" in it, and a transport error: the hint comes
        // from the typed cause, not the text.
        let key = "acme/datahub/6f1c2a9e-4b7d-403a-9c3f-2d8e5b7a1c01/connector/x/sqlite.db";
        let e = object_store::Error::NotFound {
            path: key.into(),
            source: "Forbidden 403 credential".into(),
        };
        let err = Error::bucket("GET", key.into(), "s3://b", e);
        assert_eq!(err.store_failure(), Some(StoreFailure::NotFound));
        assert!(err.hint().unwrap().contains("nothing is at that key"));
        let e = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "403 NoSuchKey",
            )),
        };
        let err = Error::bucket("GET", key.into(), "s3://b", e);
        assert_eq!(err.store_failure(), Some(StoreFailure::Unreachable));
        assert!(err.hint().unwrap().contains("cannot reach"), "{err:?}");
    }

    #[test]
    fn each_store_variant_has_its_own_hint_and_exit_code_1() {
        let mk = |e: object_store::Error| Error::bucket("PUT", "k".into(), "s3://b", e);
        let src = || -> Box<dyn std::error::Error + Send + Sync> { "x".into() };
        for (e, want) in [
            (
                object_store::Error::PermissionDenied {
                    path: "k".into(),
                    source: src(),
                },
                StoreFailure::PermissionDenied,
            ),
            (
                object_store::Error::Unauthenticated {
                    path: "k".into(),
                    source: src(),
                },
                StoreFailure::Unauthenticated,
            ),
            (
                object_store::Error::AlreadyExists {
                    path: "k".into(),
                    source: src(),
                },
                StoreFailure::Conflict,
            ),
        ] {
            let err = mk(e);
            assert_eq!(err.store_failure(), Some(want));
            assert_eq!(err.exit_code(), 1);
            assert_eq!(err.hint().unwrap(), want.hint_for("PUT", "s3://b"));
        }
    }

    #[test]
    fn a_refused_write_names_the_sse_option_and_a_refused_read_does_not() {
        let denied = || object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "AccessDenied".into(),
        };
        let put = Error::bucket("PUT", "k".into(), "s3://b", denied());
        assert!(put.hint().unwrap().contains("--sse AES256"), "{put:?}");
        let get = Error::bucket("GET", "k".into(), "s3://b", denied());
        assert!(!get.hint().unwrap().contains("--sse"), "{get:?}");
    }
}
