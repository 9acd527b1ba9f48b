//! Blocking work (files, SQLite, zstd, hashing) runs on tokio's blocking pool, never on
//! the runtime's two async workers: one slow disk must not stall every transfer.

use crate::error::{Error, Result};

/// Runs `f` on tokio's blocking pool and waits for it. `f` logs where its caller logs
/// (the caller's tracing dispatcher goes with it: a pool thread has none of its own).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    tokio::task::spawn_blocking(move || tracing::dispatcher::with_default(&dispatch, f))
        .await
        .map_err(join_error)?
}

/// A blocking task that panicked or was cancelled.
pub fn join_error(e: tokio::task::JoinError) -> Error {
    Error::check(format!("a worker task failed: {e}"), "report this as a bug")
}
