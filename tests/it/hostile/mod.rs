//! Issue 11: restore and the agent under hostile conditions. Each test is one claim of
//! the issue, named as the claim; docs/RELIABILITY.md ("Hostile inputs") lists every bad
//! input these try, what hubvault does, and the test that shows it.
//!
//! - [`data`]: side files of a crashed connector, kept originals that must not collide,
//!   damaged targets, closed pipes, drills that cannot run;
//! - [`users`]: root in directories owned by connectors' users (a real second user, uid
//!   65534, through `setpriv`), links planted there, `--db`/`--output` that are not plain
//!   files, the `--then` hook, credentials in URLs;
//! - [`errors`]: errors that name the file, key or flag and say what to try.

#![allow(dead_code)]

mod data;
mod errors;
mod users;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{TestBucket, json_of, run, sha256_of};
use crate::fixture::Spec;

/// The second user the root/user tests run as.
pub const USER: u32 = 65534;

/// `hubvault backup --json --force --db DB`, which must succeed.
pub fn backup(tb: &TestBucket, db: &Path) -> serde_json::Value {
    json_of(
        &run(crate::common::cmd_private_tmp(tb)
            .args(["backup", "--json", "--force", "--db"])
            .arg(db)),
        0,
    )
}

/// `hubvault restore --json --yes` of `spec`'s backup with `extra` flags.
pub fn restore(tb: &TestBucket, spec: &Spec, extra: &[&str]) -> Output {
    run(tb
        .cmd()
        .args(["restore", "--json", "--yes"])
        .args(["--datahub", &spec.datahub.to_string()])
        .args(["--connector", &spec.connector.to_string()])
        .args(extra))
}

/// `--hub-root DIR`, onto the same ids.
pub fn same_hub(hub: &Path) -> Vec<String> {
    vec!["--hub-root".into(), p(hub).into()]
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub fn count(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

pub fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .unwrap_or_else(|e| e.to_string())
}

/// Names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `path-suffix`.
pub fn side(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Leaves `db` as a connector that was killed in the middle of a write transaction
/// leaves it: the file with some pages of the transaction already written (a cache
/// spill) and the hot `-journal` that holds their old content, which SQLite rolls back
/// on the next open. Returns the sha256 of the file before (what a rollback gives back).
pub fn make_hot_journal(db: &Path) -> String {
    let before = {
        let c = rusqlite::Connection::open(db).unwrap();
        c.pragma_update(None, "journal_mode", "DELETE").unwrap();
        drop(c);
        sha256_of(db)
    };
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src.db");
    std::fs::copy(db, &src).unwrap();
    let c = rusqlite::Connection::open(&src).unwrap();
    // A tiny cache: the UPDATE spills pages into the file before any commit.
    c.execute_batch(
        "PRAGMA cache_size=2; BEGIN; UPDATE Events SET source = source || hex(randomblob(400));",
    )
    .unwrap();
    std::fs::copy(&src, db).unwrap();
    std::fs::copy(side(&src, "-journal"), side(db, "-journal")).unwrap();
    c.execute_batch("ROLLBACK").unwrap();
    assert_ne!(sha256_of(db), before, "the transaction reached the file");
    before
}

/// Leaves `db` as a WAL connector killed before any checkpoint: `rows` more events live
/// only in `-wal` (and `-shm`).
pub fn make_unchecked_wal(db: &Path, rows: usize) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src.db");
    {
        let c = rusqlite::Connection::open(db).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
    }
    std::fs::copy(db, &src).unwrap();
    let c = rusqlite::Connection::open(&src).unwrap();
    c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    for _ in 0..rows {
        c.execute(
            "INSERT INTO Events (integration, source, externalId, eventType, createdAt, updatedAt) SELECT integration, source, 'wal-' || hex(randomblob(8)), eventType, createdAt, updatedAt FROM Events LIMIT 1",
            [],
        )
        .unwrap();
    }
    for s in ["", "-wal", "-shm"] {
        std::fs::copy(side(&src, s), side(db, s)).unwrap();
    }
    drop(c);
}

/// Runs `cmd` as [`USER`] (a real second user: `setpriv`, not a mock).
pub fn as_user(cmd: &Command) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={USER}"),
        &format!("--regid={USER}"),
        "--clear-groups",
    ])
    .arg(cmd.get_program())
    .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// `chown -R USER:USER path`.
pub fn give_to_user(path: &Path) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{USER}:{USER}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Owner uid of every entry in `dir` (links not followed), by name.
pub fn owners(dir: &Path) -> Vec<(String, u32)> {
    names(dir)
        .into_iter()
        .map(|n| {
            let uid = std::fs::symlink_metadata(dir.join(&n)).unwrap().uid();
            (n, uid)
        })
        .collect()
}

pub fn assert_no_panic(what: &str, out: &Output) {
    let err = crate::common::stderr(out);
    assert!(
        !err.contains("panicked") && out.status.code() != Some(101),
        "{what}: {err}"
    );
}

/// A temp dir that [`USER`] may enter (tempfile makes them 0700).
pub fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    d
}
