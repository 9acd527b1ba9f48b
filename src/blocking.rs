//! Blocking work (files, SQLite, zstd, hashing) runs on tokio's blocking pool, never on
//! the runtime's two async workers: one slow disk must not stall every transfer.

use crate::error::{Error, Result};

/// Runs `f` on tokio's blocking pool and waits for it.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(join_error)?
}

/// A blocking task that panicked or was cancelled.
pub fn join_error(e: tokio::task::JoinError) -> Error {
    Error::check(format!("a worker task failed: {e}"), "report this as a bug")
}
