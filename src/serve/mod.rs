//! `hubvault serve`: the fleet on a web page, and the same data as JSON under `/api/`.
//!
//! A layer above `ops` (it reads what `status` reads, and a connector's history), beside
//! `agent`: it never writes to the bucket, and needs no database on this machine.
//!
//! - [`fleet`]: the views (rows, counts, hubs' common instants, filter/sort/page), pure;
//! - [`detail`]: one connector's versions and drills, read from the bucket;
//! - [`cache`]: one refresh per interval, shared by every page that loads meanwhile;
//! - [`access`]: loopback by default, a token for anything else;
//! - [`html`], [`chart`]: the pages and the SVG chart, written on the server;
//! - [`routes`]: the HTTP routes and the access check on every request.
//!
//! docs/SERVE.md describes the page, the API, access and cost.

pub mod access;
pub mod cache;
pub mod chart;
pub mod detail;
pub mod fleet;
pub mod html;
pub mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::{Error, Result};

pub use routes::App;

/// Binds the listen address (checked against the access rule first).
pub async fn bind(addr: SocketAddr, access: &access::Access) -> Result<tokio::net::TcpListener> {
    access::check_listen(addr, access.token.as_ref())?;
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::usage(
            format!("--listen {addr}: cannot listen there: {e}"),
            "pick another port (--listen 127.0.0.1:PORT), or stop what already listens on it",
        )
    })
}

/// Serves `app` on `listener` until `shutdown` completes; then lets requests in flight
/// finish. The first read of the bucket starts at once, so the first page is quick.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let warm = app.clone();
    tokio::spawn(async move {
        warm.fleet().await;
    });
    let addr = listener.local_addr().ok();
    axum::serve(listener, routes::router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| {
            let addr = addr.map(|a| a.to_string()).unwrap_or_default();
            Error::io(addr, "serving the web page", e)
        })
}
