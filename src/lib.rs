//! hubvault keeps the SQLite state of lab data-hub connectors safe.
//!
//! Each connector on a data hub keeps its state in `<hub-root>/<connectorId>/sqlite.db`.
//! hubvault backs these databases up to a bucket (S3, any S3-compatible store, or a local
//! directory) at the key the platform's seed fixes,
//! `{org}/datahub/{datahubId}/connector/{connectorId}/sqlite.db`, keeps a verified history
//! beside it, and restores them onto the same or a new hub with every id rewritten.
//!
//! The library does all the work; `src/main.rs` only parses flags, calls it and turns an
//! error into an exit code. Modules, one concept each:
//!
//! - [`ids`]: datahub and connector ids, org slugs, parsed once;
//! - [`layout`]: the bucket's key layout and its inverse;
//! - [`bucket`]: the object store behind one narrow type;
//! - [`db`]: reading a connector database (ids, tables, checks);
//! - [`snapshot`]: a consistent copy of a live database;
//! - [`manifest`]: what is recorded beside every backup;
//! - [`backup`]: the seed's rule for one connector;
//! - [`history`]: a connector's kept versions;
//! - [`rewrite`]: a connector's ids rewritten everywhere in its database, in one transaction;
//! - [`restore`]: plan, then fetch, verify, rewrite, check and install a backup;
//! - [`retention`]: which versions a policy keeps (restic's rules);
//! - [`prune`]: applying it to a connector, a hub or an org;
//! - [`lock`]: one backup of a connector at a time;
//! - [`agent`]: the long-running hub agent (discovery, schedule, shutdown);
//! - [`config`]: the agent's settings from flags, environment and a TOML file;
//! - [`metrics`]: the agent's Prometheus metrics and their HTTP endpoint;
//! - [`status`]: every backup's age, size and health from one LIST;
//! - [`verify`]: restore drills, recorded beside each backup;
//! - [`fixture`]: realistic connector databases for the demo and the tests.

pub mod agent;
pub mod backup;
pub mod bucket;
pub mod config;
pub mod db;
pub mod error;
pub mod fixture;
pub mod history;
pub mod ids;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod rewrite;
pub mod snapshot;
pub mod status;
pub mod verify;

pub use error::{Error, Result};
