//! The reliability suite (issue 6): crashes, S3 faults, a busy writer, a full or
//! read-only disk, hostile input and secrets. What each part proves and the figures of
//! the last long run are in docs/RELIABILITY.md.
//!
//! Counts are small enough for CI by default; `HUBVAULT_LONG=1` raises them. Every
//! random choice comes from a seeded generator whose seed is printed, and
//! `HUBVAULT_SEED=N` replays a run. Each test prints one `FIGURES {json}` line (seen with
//! `--no-capture`) and writes it to `target/reliability/<name>.json`.

#![allow(dead_code)]

mod crash;
pub(crate) mod disk;
mod faults;
mod secrets;
mod stream;
mod writer;

use std::path::Path;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

/// True if and only if `HUBVAULT_LONG` asks for the long mode.
pub fn long() -> bool {
    std::env::var("HUBVAULT_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `ci` in CI, `long` in the long mode.
pub fn count(ci: usize, long_count: usize) -> usize {
    if long() { long_count } else { ci }
}

/// A generator seeded from `HUBVAULT_SEED`, or 13 (never at random by default, so that a
/// CI run is the run it was); the seed is printed so a failing run can be replayed.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("HUBVAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13u64);
    eprintln!("{test}: HUBVAULT_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// A deadline that makes every loop bounded in time as well as in count.
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(d: Duration) -> Self {
        Deadline(Instant::now() + d)
    }
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// `PRAGMA integrity_check` of a database file: "ok" or what it found.
pub fn integrity(db: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let found: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| vec![e.to_string()]);
    found.join("; ")
}

/// Files in `dir` (names), sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Prints the figures of a test and keeps them under target/reliability/.
pub fn figures(test: &str, value: serde_json::Value) {
    let line = serde_json::to_string(&value).unwrap();
    println!("FIGURES {test} {line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{test}.json")), line + "\n");
}
