//! Shutdown is a value passed in: a `watch` channel that turns true (SIGTERM in the
//! binary, a flag in tests). Everything long-running selects on [`stopped`].

use tokio::sync::watch;

/// Resolves when `shutdown` is (or turns) true; never, if the sender is gone without
/// having said so.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}
