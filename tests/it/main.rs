//! Integration tests: the built binary and the library against a real local directory
//! and a real S3-compatible server (moto on 127.0.0.1, started by scripts/test).
//! One test binary, so the suite links once.

mod common;

mod agent;
mod backup;
mod conformance;
mod history;
mod props;
mod proxy;
mod reliability;
mod remap;
mod restore;
mod status;
mod verify;
