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
use std::time::Duration;

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

/// A connection must send a whole request head within this (idle ones included, between
/// requests): one that does not is closed, so clients that stall or vanish cannot pile
/// up and use every file descriptor.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);

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
    let router = routes::router(app);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            got = listener.accept() => match got {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken:
                    // wait a little rather than spin, as axum::serve does.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        conns.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}
