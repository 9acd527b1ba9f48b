//! The library's error type.
//!
//! Rules (after rustic_core's `error.rs`):
//! - Few variants, each carrying *where* it happened: the file, the object key or the
//!   flag. A message never says only "failed".
//! - Every variant a user can fix carries a `hint`: one sentence that says what to try.
//!   The binary prints the error chain once, then `Try: <hint>`.
//! - The variant decides the exit code, not the call site: `Usage` is 2 (the command line
//!   or configuration is wrong), everything else is 1 (the operation failed).
//! - Secrets never enter an error: bucket errors carry the key and the store's message,
//!   never the credentials (object_store does not put them in its messages either; a test
//!   with a marker credential holds us to it).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
        let hint = match source.kind() {
            std::io::ErrorKind::NotFound => "check the path",
            std::io::ErrorKind::PermissionDenied => "run as a user that may read and write there",
            std::io::ErrorKind::StorageFull => "free some space on that file system and try again",
            std::io::ErrorKind::ReadOnlyFilesystem => {
                "the file system is read-only; remount it or choose another place"
            }
            _ => "check the file system and try again",
        };
        Error::Io {
            path: path.into(),
            message: format!("{what}: {source}"),
            hint: hint.to_string(),
            source,
        }
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
                source: Some(object_store::Error::NotFound { .. }),
                ..
            }
        )
    }
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
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed out-struct, as statvfs(3) asks.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_RDONLY != 0
}
