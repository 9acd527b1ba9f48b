//! Integration tests: the built binary and the library against a real local directory
//! and a real S3-compatible server (moto on 127.0.0.1, started by scripts/test).
//! One test binary, so the suite links once.

mod common;
/// The realistic connector databases the binary's demo builds (not library API).
#[path = "../../src/cli/fixture.rs"]
pub mod fixture;

mod agent;
mod backup;
mod capture_writer;
mod compaction;
mod conformance;
mod continuous;
mod demo;
mod doctor;
mod history;
mod hostile;
/// A hostile downloaded database, generated from bytes (shared with fuzz/).
mod hostile_db;
mod hot_journal;
mod layers;
mod model_stream;
mod package;
mod pagerewrite;
mod props;
mod proxy;
mod reliability;
mod remap;
mod restore;
mod restore_hub;
mod rewrite;
mod serve;
mod sse;
mod status;
mod stream_races;
mod untrusted;
mod verify;
mod webdriver;
