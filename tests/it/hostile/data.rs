//! Data: side files, kept originals, damaged targets, closed pipes, drills that cannot run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::*;
use crate::both;
use crate::common::{TestBucket, connector_db, json_of, stderr, stdout};

fn kept_of(out: &serde_json::Value) -> Vec<(PathBuf, PathBuf)> {
    out["restore"]["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                PathBuf::from(k["from"].as_str().unwrap()),
                PathBuf::from(k["to"].as_str().unwrap()),
            )
        })
        .collect()
}

// ------------------------------------------------------------- 1. side files travel

fn hot_journal_travels(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 400);
    backup(tb, &db);
    // The connector crashed in the middle of a transaction afterwards.
    let rolled_back = make_hot_journal(&db);
    let (torn, journal) = (sha256_of(&db), sha256_of(&side(&db, "-journal")));
    let out = json_of(&restore(tb, &spec, &strs(&same_hub(hub.path()))), 0);
    // The new database is the backup, whole: nothing was replayed into it.
    assert!(
        !side(&db, "-journal").exists(),
        "{:?}",
        names(db.parent().unwrap())
    );
    assert_eq!(integrity(&db), "ok");
    assert_eq!(count(&db, "SELECT count(*) FROM Events"), 400);
    // The old file and its journal are kept together, byte for byte...
    let kept = kept_of(&out);
    let kept_db = kept.iter().find(|(f, _)| *f == db).unwrap().1.clone();
    let kept_journal = kept
        .iter()
        .find(|(f, _)| *f == side(&db, "-journal"))
        .unwrap()
        .1
        .clone();
    assert_eq!(kept_journal, side(&kept_db, "-journal"));
    assert_eq!(sha256_of(&kept_db), torn);
    assert_eq!(sha256_of(&kept_journal), journal);
    // ... and open as the old database: SQLite rolls the kept journal back into it.
    assert_eq!(integrity(&kept_db), "ok");
    assert!(!kept_journal.exists(), "rolled back on open");
    let c = rusqlite::Connection::open(&kept_db).unwrap();
    c.pragma_update(None, "journal_mode", "DELETE").unwrap();
    drop(c);
    assert_eq!(sha256_of(&kept_db), rolled_back);
}
both!(
    restore_moves_a_hot_journal_aside_with_the_kept_original_and_never_replays_it,
    hot_journal_travels
);

fn wal_travels(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "solace", 50);
    backup(tb, &db);
    make_unchecked_wal(&db, 7);
    let out = json_of(&restore(tb, &spec, &strs(&same_hub(hub.path()))), 0);
    for s in ["-wal", "-shm", "-journal"] {
        assert!(!side(&db, s).exists(), "{s} left beside the new database");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM Events"), 50);
    let kept = kept_of(&out);
    let kept_db = kept.iter().find(|(f, _)| *f == db).unwrap().1.clone();
    assert!(side(&kept_db, "-wal").exists());
    // The kept set holds the rows that lived only in the WAL.
    assert_eq!(count(&kept_db, "SELECT count(*) FROM Events"), 57);
}
both!(
    restore_moves_a_wal_with_uncheckpointed_commits_aside_with_the_kept_original,
    wal_travels
);

// ------------------------------------------------------------- 2. kept originals never collide

/// Every name the old code could pick for the kept original in the next `secs` seconds
/// (`sqlite.db.before-restore-<UTC ms>`), planted as a link to `sentinel`: the names.
fn plant_kept_names(dir: &Path, sentinel: &Path, secs: i64) -> std::collections::BTreeSet<String> {
    let start = chrono::Utc::now();
    let mut names = std::collections::BTreeSet::new();
    for ms in 0..secs * 1000 {
        let t = start + chrono::Duration::milliseconds(ms);
        let name = format!(
            "sqlite.db.before-restore-{}",
            t.format("%Y%m%dT%H%M%S%.3fZ")
        );
        std::os::unix::fs::symlink(sentinel, dir.join(&name)).unwrap();
        names.insert(name);
    }
    names
}

fn kept_names_never_collide(tb: &TestBucket) {
    // The planted names cover the next 20 s; a restore that starts later on a starved
    // machine picks a name nobody planted, which proves nothing: then the run is made
    // again with fresh names (at most 3 times), and the claim is asserted on the one
    // whose name was planted. The sentinel is checked after every run.
    for attempt in 1..=3 {
        let hub = tempfile::tempdir().unwrap();
        let (db, spec) = connector_db(hub.path(), "sdc", 30);
        backup(tb, &db);
        let old = sha256_of(&db);
        let outside = tempfile::tempdir().unwrap();
        let sentinel = outside.path().join("precious");
        std::fs::write(&sentinel, b"not to be overwritten").unwrap();
        let dir = db.parent().unwrap();
        let planted = plant_kept_names(dir, &sentinel, 20);
        let out = json_of(&restore(tb, &spec, &strs(&same_hub(hub.path()))), 0);
        assert_eq!(std::fs::read(&sentinel).unwrap(), b"not to be overwritten");
        let kept = kept_of(&out);
        let kept_db = &kept.iter().find(|(f, _)| *f == db).unwrap().1;
        assert!(!kept_db.is_symlink());
        assert_eq!(sha256_of(kept_db), old);
        let name = kept_db.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(base) = name.strip_suffix("-2") {
            // The planted name was taken, so the next one was used.
            assert!(
                planted.contains(base),
                "{name}: -2 without a planted {base}"
            );
            return;
        }
        // Not "-2": the name must be one nobody planted (the restore began late).
        assert!(
            !planted.iter().any(|p| name.starts_with(p.as_str())),
            "run {attempt}: {name} takes a planted name"
        );
        eprintln!("run {attempt}: the restore began after the planted names ({name}); again");
    }
    panic!("the restore never began within 20 s of planting the names, 3 times");
}
both!(
    restore_never_writes_over_a_file_already_at_the_kept_name,
    kept_names_never_collide
);

fn concurrent_restores(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 300);
    backup(tb, &db);
    // The live database moved on: the first original differs from the backup.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM Events WHERE id > 100", [])
        .unwrap();
    let old = sha256_of(&db);
    let args = same_hub(hub.path());
    let children: Vec<_> = (0..4)
        .map(|_| {
            tb.cmd()
                .args(["restore", "--json", "--yes"])
                .args(["--datahub", &spec.datahub.to_string()])
                .args(["--connector", &spec.connector.to_string()])
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut ok = 0;
    for o in &outs {
        assert_no_panic("concurrent restore", o);
        match o.status.code() {
            Some(0) => ok += 1,
            // Waited its 10 s for the lock and gave up, cleanly.
            Some(1) => assert!(stderr(o).contains("lock"), "{}", stderr(o)),
            other => panic!("exit {other:?}: {}", stderr(o)),
        }
    }
    assert!(ok >= 1);
    let dir = db.parent().unwrap();
    let kept: Vec<PathBuf> = names(dir)
        .into_iter()
        .filter(|n| n.contains(".before-restore-") && !n.ends_with("-journal"))
        .map(|n| dir.join(n))
        .collect();
    // One original kept per restore that ran, each whole; the first is the old one.
    assert_eq!(kept.len(), ok, "{:?}", names(dir));
    let shas: Vec<String> = kept.iter().map(|k| sha256_of(k)).collect();
    assert!(shas.contains(&old), "the first original is kept");
    for k in &kept {
        assert_eq!(integrity(k), "ok", "{}", k.display());
    }
    assert_eq!(count(&db, "SELECT count(*) FROM Events"), 300);
}
both!(
    concurrent_restores_of_one_target_queue_on_its_lock_and_keep_every_original,
    concurrent_restores
);

// ------------------------------------------------------------- 3. damaged targets

fn damaged_targets(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", 60);
    backup(tb, &db);
    let good = std::fs::read(&db).unwrap();
    let mut noise = vec![0u8; 8192];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    let mut header_only = good[..100].to_vec();
    header_only.extend_from_slice(&noise[..4000]);
    for (what, bytes) in [
        ("random bytes", noise.clone()),
        ("an empty file", Vec::new()),
        (
            "the first half of the database",
            good[..good.len() / 2].to_vec(),
        ),
        ("a SQLite header and noise", header_only),
        ("text", b"<html>502 Bad Gateway</html>".to_vec()),
    ] {
        for s in ["-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(side(&db, s));
        }
        std::fs::write(&db, &bytes).unwrap();
        let out = restore(tb, &spec, &strs(&same_hub(hub.path())));
        let doc = json_of(&out, 0);
        assert_eq!(integrity(&db), "ok", "{what}");
        assert_eq!(count(&db, "SELECT count(*) FROM Events"), 60, "{what}");
        let kept = kept_of(&doc);
        let kept_db = &kept.iter().find(|(f, _)| *f == db).unwrap().1;
        assert_eq!(
            std::fs::read(kept_db).unwrap(),
            bytes,
            "{what} kept as it was"
        );
    }
}
both!(
    restore_replaces_a_damaged_or_non_sqlite_target_and_keeps_it_aside,
    damaged_targets
);

// ------------------------------------------------------------- 6. closed stdout

fn closed_reader(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 20);
    backup(tb, &db);
    let marker_dir = tempfile::tempdir().unwrap();
    for (how, read_first_line) in [("| true", false), ("| head -1", true)] {
        for json in [false, true] {
            let marker = marker_dir
                .path()
                .join(format!("ran-{read_first_line}-{json}"));
            // The hook writes plenty to the closed pipe itself, then leaves its mark.
            let hook = format!("seq 1 20000; touch {}", p(&marker));
            let mut c = tb.cmd();
            c.args(["restore", "--yes"])
                .args(["--datahub", &spec.datahub.to_string()])
                .args(["--connector", &spec.connector.to_string()])
                .args(["--hub-root", p(hub.path()), "--then", &hook])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if json {
                c.arg("--json");
            }
            let mut child = c.spawn().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            if read_first_line {
                let mut b = [0u8; 1];
                while stdout.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {}
            }
            drop(stdout);
            let out = child.wait_with_output().unwrap();
            assert_no_panic(how, &out);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{how} json={json}: {}",
                stderr(&out)
            );
            assert!(marker.exists(), "{how} json={json}: the hook did not run");
        }
    }
}
both!(
    restore_piped_into_a_closed_reader_still_runs_its_then_hook,
    closed_reader
);

fn no_panic_on_closed_stdout(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 20);
    backup(tb, &db);
    let (d, c) = (spec.datahub.to_string(), spec.connector.to_string());
    let cases: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["status", "--json"],
        vec!["versions", "--datahub", &d, "--connector", &c],
        vec!["inspect", "--db", p(&db)],
        vec!["inspect", "--datahub", &d, "--connector", &c, "--json"],
        vec!["verify"],
        vec!["backup", "--db", p(&db)],
        vec!["backup", "--db", p(&db), "--force"],
        vec!["status", "--bogus-flag", "--json"],
        vec!["backup", "--db", "/nonexistent/sqlite.db", "--json"],
    ];
    for args in cases {
        let open = run(crate::common::cmd_private_tmp(tb).args(&args));
        let mut child = crate::common::cmd_private_tmp(tb)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let closed = child.wait_with_output().unwrap();
        assert_no_panic(&args.join(" "), &closed);
        assert_eq!(
            closed.status.code(),
            open.status.code(),
            "{args:?}: {}",
            stderr(&closed)
        );
    }
}
both!(
    no_command_panics_on_a_closed_stdout_and_the_exit_code_stays,
    no_panic_on_closed_stdout
);

// ------------------------------------------------------------- 7. drills that cannot run

fn drill_records(tb: &TestBucket) -> Vec<String> {
    tb.keys("")
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains("/hubvault/drills/"))
        .collect()
}

fn local_failure_is_not_a_drill(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    backup(tb, &db);
    let gone = hub.path().join("no-such-tmp");
    for via_env in [false, true] {
        let mut c = tb.cmd();
        c.args(["verify", "--json"]);
        if via_env {
            c.env("TMPDIR", &gone);
        } else {
            c.arg("--tmp-dir").arg(&gone);
        }
        let out = run(&mut c);
        let doc = json_of(&out, 1);
        assert_eq!(doc["summary"]["failed"], 0, "{doc}");
        assert_eq!(doc["summary"]["not_drilled"], 1, "{doc}");
        assert_eq!(doc["not_drilled"][0]["local"], true, "{doc}");
        assert!(
            doc["not_drilled"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("local failure"),
            "{doc}"
        );
        assert_eq!(drill_records(tb), Vec::<String>::new(), "nothing recorded");
    }
    // And the next drill that can run records an ok one.
    json_of(&run(tb.cmd().args(["verify", "--json"])), 0);
    assert_eq!(drill_records(tb).len(), 1);
}
both!(
    verify_records_no_failed_drill_for_a_local_failure,
    local_failure_is_not_a_drill
);

/// A tmpfs of `size` bytes on a temp directory (the tests run as root); unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs (this test needs root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn verify_records_no_failed_drill_when_the_local_disk_is_full() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 2000);
    backup(&tb, &db);
    let small = Tmpfs::mount(256 * 1024);
    assert!(std::fs::metadata(&db).unwrap().len() > 256 * 1024);
    let out = run(tb
        .cmd()
        .args(["verify", "--json", "--tmp-dir"])
        .arg(small.0.path()));
    let doc = json_of(&out, 1);
    assert_eq!(doc["summary"]["failed"], 0, "{doc}");
    assert_eq!(doc["not_drilled"][0]["local"], true, "{doc}");
    assert!(
        doc["not_drilled"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{doc}"
    );
    assert_eq!(drill_records(&tb), Vec::<String>::new());
}

#[test]
fn verify_records_no_failed_drill_when_the_download_keeps_failing() {
    use crate::proxy::{Fault, Proxy};
    let tb = TestBucket::s3();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 10);
    backup(&tb, &db);
    let proxy = Proxy::s3();
    let key = format!(
        "/acme/datahub/{}/connector/{}/sqlite.db",
        spec.datahub, spec.connector
    );
    proxy.inject("GET", &key, Fault::Status500, 1000);
    let started = std::time::Instant::now();
    let out = run(proxy
        .cmd(&tb)
        .args(["verify", "--json"])
        .env("HUBVAULT_S3_RETRIES", "1")
        .env("HUBVAULT_S3_TIMEOUT", "2")
        .env("HUBVAULT_S3_RETRY_TIMEOUT", "5"));
    assert!(started.elapsed() < Duration::from_secs(60));
    let doc = json_of(&out, 1);
    assert_eq!(doc["summary"]["failed"], 0, "{doc}");
    assert_eq!(doc["not_drilled"][0]["local"], false, "{doc}");
    assert_eq!(drill_records(&tb), Vec::<String>::new());
    // Once the store answers again, the drill runs and is recorded.
    proxy.reset();
    let ok = json_of(&run(proxy.cmd(&tb).args(["verify", "--json"])), 0);
    assert_eq!(ok["summary"]["ok"], 1, "{ok}");
    let _ = stdout(&out);
}
