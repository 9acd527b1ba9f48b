//! kill -9 at random points of `backup` (and, once it exists, `restore`).
//!
//! Claim: whenever hubvault dies, the canonical object is absent (no backup had ever
//! completed), the previous one, or a new one whole (its sha256 is that of a manifest:
//! latest.json or a version's); the live database passes `integrity_check`; and killed
//! runs do not pile up temp files: the next run sweeps what a dead one left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hubvault::model::manifest::Manifest;
use hubvault::progress::NoProgress;
use hubvault::store::Encoding;
use object_store::path::Path as Key;
use rand::RngExt;

use super::{Deadline, count, figures, files_in, integrity, rng};
use crate::both;
use crate::common::{TestBucket, connector_db, json_of, rt, run};

/// Events in the crash-test database: about 12 MiB, so the S3 upload is multipart and
/// the kill window covers snapshot, check, compression and both uploads.
const EVENTS: usize = 12_000;

/// What the bucket holds for one connector, read back through the library.
struct BucketState {
    /// sha256 of the canonical object, if there is one.
    canonical: Option<String>,
    /// `integrity_check` of the canonical object, if there is one.
    canonical_check: Option<String>,
    latest: Option<String>,
    /// sha256 of every version manifest.
    versions: BTreeSet<String>,
}

fn bucket_state(tb: &TestBucket, prefix: &str, scratch: &Path) -> BucketState {
    let b = tb.bucket();
    rt().block_on(async {
        let canonical_key = Key::from(format!("{prefix}/sqlite.db"));
        let dest = scratch.join("canonical.db");
        let (canonical, canonical_check) = match b.head(&canonical_key).await.unwrap() {
            None => (None, None),
            Some(_) => {
                let t = b
                    .get_to_file(&canonical_key, &dest, Encoding::Plain, &NoProgress)
                    .await
                    .unwrap();
                (Some(t.sha256), Some(integrity(&dest)))
            }
        };
        let manifest = |bytes: &[u8], key: &str| Manifest::from_json(bytes, key).unwrap().sha256;
        let latest_key = Key::from(format!("{prefix}/hubvault/latest.json"));
        let latest = match b.get_bytes(&latest_key).await {
            Ok(bytes) => Some(manifest(&bytes, latest_key.as_ref())),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("{e}"),
        };
        let mut versions = BTreeSet::new();
        for o in b
            .list(&Key::from(format!("{prefix}/hubvault/versions")))
            .await
            .unwrap()
        {
            if o.key.as_ref().ends_with(".json") {
                let bytes = b.get_bytes(&o.key).await.unwrap();
                versions.insert(manifest(&bytes, o.key.as_ref()));
            }
        }
        BucketState {
            canonical,
            canonical_check,
            latest,
            versions,
        }
    })
}

/// A committed change to the live database, so each run's snapshot differs.
fn touch(db: &Path, n: usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS reliability_ticks(n INTEGER NOT NULL)")
        .unwrap();
    conn.execute("INSERT INTO reliability_ticks(n) VALUES (?1)", [n as i64])
        .unwrap();
}

fn backup_cmd(tb: &TestBucket, db: &Path, tmp: &Path, org: &str) -> std::process::Command {
    let mut c = tb.cmd();
    c.args(["backup", "--force", "--json", "--org", org, "--db"])
        .arg(db)
        .arg("--tmp-dir")
        .arg(tmp);
    c
}

fn backup_killed_at_random_points(tb: &TestBucket) {
    let name = format!("backup_crash_{:?}", tb.kind).to_lowercase();
    let runs = count(50, 500);
    let mut rng = rng(&name);
    let hub = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", EVENTS);
    let db_size = std::fs::metadata(&db).unwrap().len();
    let prefix = format!("acme/datahub/{}/connector/{}", spec.datahub, spec.connector);

    // The window: one whole backup under another org, timed, plus a margin, so kill
    // points fall before, during and just after every phase.
    let t = Instant::now();
    json_of(&run(&mut backup_cmd(tb, &db, tmp.path(), "calibration")), 0);
    let full = t.elapsed();
    let mut window = full.mul_f64(2.0);

    let deadline = Deadline::after(Duration::from_secs(if super::long() { 3600 } else { 120 }));
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut latest_behind = 0;
    let mut left_temp = 0;
    let mut most_empty = 0;
    let mut done = 0;
    for i in 0..runs {
        if deadline.passed() {
            break;
        }
        touch(&db, i);
        let before = bucket_state(tb, &prefix, scratch.path()).canonical;
        let delay = window.mul_f64(rng.random_range(0.0..1.0));
        let mut child = backup_cmd(tb, &db, tmp.path(), "acme")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        if finished {
            // The run fit in `delay`: narrow the window towards a real run's length (the
            // calibration run can be slow on a busy machine), so most runs are killed.
            window = window
                .min(delay.mul_f64(1.2))
                .max(Duration::from_millis(20));
        }
        if !finished {
            child.kill().unwrap(); // SIGKILL
        }
        let status = child.wait().unwrap();
        if finished {
            assert!(
                status.success(),
                "run {i}: an unkilled backup failed: {status}"
            );
        }

        let after = bucket_state(tb, &prefix, scratch.path());
        let outcome = match (&before, &after.canonical) {
            (None, None) => "absent",
            (Some(_), None) => panic!("run {i}: the canonical object disappeared"),
            (Some(b), Some(a)) if a == b => "previous",
            (_, Some(a)) => {
                assert!(
                    after.versions.contains(a) || after.latest.as_ref() == Some(a),
                    "run {i} (killed after {delay:?}): the canonical object {a} matches no manifest"
                );
                "new"
            }
        };
        if let Some(check) = &after.canonical_check {
            assert_eq!(
                check, "ok",
                "run {i}: the canonical object fails integrity_check"
            );
        }
        if after.canonical.is_some() && after.latest != after.canonical {
            // The documented window between the canonical object and latest.json.
            latest_behind += 1;
        }
        assert_eq!(
            integrity(&db),
            "ok",
            "run {i}: the live database is damaged"
        );
        let (dead, empty) = leftovers(tmp.path());
        if !dead.is_empty() || empty > 0 {
            left_temp += 1;
        }
        most_empty = most_empty.max(empty);
        // A dead run leaves one snapshot (with its -wal/-shm); the next run that gets
        // as far as a snapshot sweeps it, so they never pile up. Empty files (a kill
        // between creating the file and locking it) are swept after a minute.
        assert!(
            dead.len() <= 1,
            "run {i}: snapshots pile up: {:?}",
            files_in(tmp.path())
        );
        let key = match (finished, outcome) {
            (true, _) => "finished",
            (false, "absent") => "killed_absent",
            (false, "previous") => "killed_previous",
            (false, _) => "killed_new",
        };
        *outcomes.entry(key).or_default() += 1;
        done += 1;
    }
    assert!(done >= runs.min(50), "only {done} runs before the deadline");
    // A test of kills must kill: most runs die mid-way, most of those before the new
    // canonical object is committed (after it, only a few requests remain, too short a
    // window to require).
    let killed = done - outcomes.get("finished").copied().unwrap_or(0);
    assert!(
        killed * 5 >= done * 2,
        "only {killed} of {done} runs were killed mid-way: {outcomes:?}"
    );
    assert!(
        outcomes.get("killed_previous").copied().unwrap_or(0) * 10 >= done * 3,
        "too few kills before the commit: {outcomes:?}"
    );

    // One uninterrupted run: succeeds, leaves no temp file, and latest.json catches up.
    json_of(&run(&mut backup_cmd(tb, &db, tmp.path(), "acme")), 0);
    let (dead, _) = leftovers(tmp.path());
    assert_eq!(dead, BTreeSet::new(), "{:?}", files_in(tmp.path()));
    let end = bucket_state(tb, &prefix, scratch.path());
    assert_eq!(end.latest, end.canonical);
    let staging = staged_files(tb);

    figures(
        &name,
        serde_json::json!({
            "runs": done,
            "db_bytes": db_size,
            "full_backup_ms": full.as_millis() as u64,
            "kill_window_ms": window.as_millis() as u64,
            "outcomes": outcomes,
            "latest_json_one_behind": latest_behind,
            "runs_leaving_temp_files": left_temp,
            "most_empty_temp_files_at_once": most_empty,
            "versions_kept": end.versions.len(),
            "local_staging_files_left_in_bucket": staging,
        }),
    );
}
both!(
    backup_killed_at_random_points_leaves_old_or_new_whole_object,
    backup_killed_at_random_points
);

/// Snapshots left in `tmp` (by base name, non-empty), and empty files.
fn leftovers(tmp: &Path) -> (BTreeSet<String>, usize) {
    let mut dead = BTreeSet::new();
    let mut empty = 0;
    for name in files_in(tmp) {
        let len = std::fs::metadata(tmp.join(&name))
            .map(|m| m.len())
            .unwrap_or(0);
        if len == 0 {
            empty += 1;
        } else {
            let base = name.split(".db").next().unwrap_or(&name).to_string();
            dead.insert(base);
        }
    }
    (dead, empty)
}

/// object_store's local store writes `key#N` and renames it; a killed upload leaves the
/// staging file. Readers never see it (LIST and GET skip names with `#`); counted only.
fn staged_files(tb: &TestBucket) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p: PathBuf = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p
                .file_name()
                .is_some_and(|f| f.to_string_lossy().contains('#'))
            {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    if let Some(d) = &tb.dir {
        walk(d.path(), &mut n);
    }
    n
}

fn events(db: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT count(*) FROM Events", [], |r| r.get(0))
        .unwrap()
}

/// Puts the old database back at the target, and nothing else beside it.
fn reset_target(dir: &Path, pristine: &Path) {
    for name in files_in(dir) {
        let p = dir.join(name);
        if p.is_dir() {
            // A killed restore's work directory.
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::copy(pristine, dir.join("sqlite.db")).unwrap();
}

/// kill -9 during `restore` onto a new hub and connector (so the id rewrite is in the
/// window too): afterwards the target is the old database, or the new one verified
/// (integrity_check, the NEW ids and no old one left, the backup's rows) with the old one
/// kept beside it byte for byte; and the next restore clears what the killed ones left.
fn restore_killed_at_random_points(tb: &TestBucket) {
    let name = format!("restore_crash_{:?}", tb.kind).to_lowercase();
    let runs = count(50, 500);
    let mut rng = rng(&name);
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", EVENTS);
    json_of(
        &run(tb.cmd().args(["backup", "--json", "--db"]).arg(&db)),
        0,
    );
    let new_events = events(&db);
    // The "old" database the restore replaces: the connector went on and lost events.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute("DELETE FROM Events WHERE rowid % 3 = 0", [])
            .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let keep = tempfile::tempdir().unwrap();
    let pristine = keep.path().join("old.db");
    std::fs::copy(&db, &pristine).unwrap();
    let old_sha = hubvault::sqlite::fsio::sha256_file(&pristine).unwrap().0;
    let old_events = events(&pristine);
    assert_ne!(old_events, new_events);
    let (new_hub, new_conn) = (
        hubvault::model::ids::DatahubId::random(),
        hubvault::model::ids::ConnectorId::random(),
    );
    let dir = hub.path().join(new_conn.to_string());
    std::fs::create_dir(&dir).unwrap();
    let restore_cmd = || {
        let mut c = tb.cmd();
        c.args(["restore", "--json", "--yes"])
            .args(["--datahub", &spec.datahub.to_string()])
            .args(["--connector", &spec.connector.to_string()])
            .args(["--to-datahub", &new_hub.to_string()])
            .args(["--to-connector", &new_conn.to_string()])
            .arg("--hub-root")
            .arg(hub.path());
        c
    };
    let old_ids = [spec.datahub.to_string(), spec.connector.to_string()];

    reset_target(&dir, &pristine);
    let t = Instant::now();
    json_of(&run(&mut restore_cmd()), 0);
    let full = t.elapsed();
    let mut window = full.mul_f64(2.0);

    let deadline = Deadline::after(Duration::from_secs(if super::long() { 3600 } else { 120 }));
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut temp_left = 0;
    let mut done = 0;
    for i in 0..runs {
        if deadline.passed() {
            break;
        }
        reset_target(&dir, &pristine);
        let delay = window.mul_f64(rng.random_range(0.0..1.0));
        let mut child = restore_cmd()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        if finished {
            window = window
                .min(delay.mul_f64(1.2))
                .max(Duration::from_millis(20));
        } else {
            child.kill().unwrap(); // SIGKILL
        }
        let status = child.wait().unwrap();
        if finished {
            assert!(
                status.success(),
                "run {i}: an unkilled restore failed: {status}"
            );
        }
        let target = dir.join("sqlite.db");
        assert!(
            target.exists(),
            "run {i} (killed after {delay:?}): no database at the target"
        );
        assert_eq!(
            integrity(&target),
            "ok",
            "run {i}: the target fails integrity_check"
        );
        let is_old = hubvault::sqlite::fsio::sha256_file(&target).unwrap().0 == old_sha;
        let outcome = if is_old {
            "old"
        } else {
            assert_eq!(events(&target), new_events, "run {i}: neither old nor new");
            let conn = hubvault::sqlite::db::open_read_only(&target).unwrap();
            let info = hubvault::sqlite::db::read_info(&conn, &target).unwrap();
            assert_eq!(
                (info.datahub, info.connector),
                (new_hub, new_conn),
                "run {i}"
            );
            let left = hubvault::sqlite::rewrite::scan_ids(&conn, &target, &old_ids).unwrap();
            assert!(left.is_empty(), "run {i}: old ids left: {left:?}");
            // What was there before is kept beside it, whole.
            let kept: Vec<String> = files_in(&dir)
                .into_iter()
                .filter(|f| {
                    f.starts_with("sqlite.db.before-restore-")
                        && f.ends_with(|c: char| c.is_ascii_digit() || c == 'Z')
                })
                .collect();
            assert!(
                kept.iter().any(
                    |k| hubvault::sqlite::fsio::sha256_file(&dir.join(k)).unwrap().0 == old_sha
                ),
                "run {i}: the previous database was not kept: {:?}",
                files_in(&dir)
            );
            "new"
        };
        if files_in(&dir)
            .iter()
            .any(|f| f.contains(".hubvault-restore-"))
        {
            temp_left += 1;
        }
        let key = match (finished, outcome) {
            (true, _) => "finished",
            (false, "old") => "killed_old",
            (false, _) => "killed_new",
        };
        *outcomes.entry(key).or_default() += 1;
        done += 1;
    }
    assert!(done >= runs.min(50), "only {done} runs before the deadline");
    // A test of kills must kill: most runs die mid-way, most of those before the rename
    // (the window after it is a few milliseconds long, so it is not required).
    let killed = done - outcomes.get("finished").copied().unwrap_or(0);
    assert!(
        killed * 5 >= done * 2,
        "only {killed} of {done} runs were killed mid-way: {outcomes:?}"
    );
    assert!(
        outcomes.get("killed_old").copied().unwrap_or(0) * 10 >= done * 3,
        "too few kills before the install: {outcomes:?}"
    );
    // One restore after all those kills: succeeds and clears the temp files they left.
    reset_target(&dir, &pristine);
    json_of(&run(&mut restore_cmd()), 0);
    let temps: Vec<String> = files_in(&dir)
        .into_iter()
        .filter(|f| f.contains(".hubvault-restore-"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    figures(
        &name,
        serde_json::json!({
            "runs": done,
            "full_restore_ms": full.as_millis() as u64,
            "outcomes": outcomes,
            "runs_leaving_restore_temp_files": temp_left,
        }),
    );
}
both!(
    restore_killed_at_random_points_leaves_the_old_or_the_verified_new_database,
    restore_killed_at_random_points
);
