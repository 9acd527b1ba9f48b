//! hubvault keeps the SQLite state of lab data-hub connectors safe.
//!
//! Each connector on a data hub keeps its state in `<hub-root>/<connectorId>/sqlite.db`.
//! hubvault backs these databases up to a bucket (S3, any S3-compatible store, or a local
//! directory) at the key the platform's backup rule fixes,
//! `{org}/datahub/{datahubId}/connector/{connectorId}/sqlite.db`, keeps a verified history
//! beside it, and restores them onto the same or a new hub with every id rewritten.
//!
//! The library does all the work; `src/main.rs` only parses flags, calls it and turns an
//! error into an exit code. The folders are layers, and a layer imports only the layers
//! below it (docs/DESIGN.md has the picture; `tests/it/layers.rs` holds the code to it):
//!
//! - [`error`], [`progress`], [`blocking`], [`command`]: the error type, the progress
//!   trait, how blocking work leaves the async runtime, and how an operator's command
//!   (restore's hook) is run; used everywhere;
//! - [`model`]: ids, the bucket's key layout, and every record format we store;
//! - [`store`]: the bucket behind one narrow type, codecs, staged uploads;
//! - [`sqlite`]: databases and the files around them on this machine: opening, checks,
//!   snapshots, the id rewrite, locks, durable file operations;
//! - [`catalog`]: what the bucket holds, read back: the inventory of connectors, a
//!   connector's versions and latest pointer, the retention rules;
//! - [`ops`]: one module per operation (backup, restore, restore-hub, remap, prune, verify,
//!   status, doctor, inspect, versions); an operation never imports another;
//! - [`agent`]: the long-running hub agent, its configuration and metrics;
//! - [`serve`]: the fleet on a web page and its JSON API (read-only), beside `agent`.

pub mod agent;
pub mod blocking;
pub mod catalog;
pub mod command;
pub mod error;
pub mod model;
pub mod ops;
pub mod progress;
pub mod serve;
pub mod sqlite;
pub mod store;

pub use error::{Error, Result};
