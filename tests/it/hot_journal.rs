//! A rollback-journal writer killed in the middle of a commit (review 7, point 1): a real
//! `sqlite3` shell opens a transaction too big for its two-page cache, so it writes the
//! journal and then spills changed pages into the database file; once it has (a marker
//! file it touches after the statement), it is killed with SIGKILL. The database file
//! alone is then a state never committed, and the journal beside it is hot. Neither a
//! capture look nor a backup may take that file as a state: restores give the last
//! committed state page for page, before and after the next writer rolls the journal
//! back; and hubvault never writes the file or the journal itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::both;
use crate::common::{
    TestBucket, cmd_private_tmp, connector_db, json_of, restore_output, run, stderr,
};
use crate::compaction::{same_pages, sim_day_capture, sim_day_capture_into};
use crate::fixture::Spec;
use hubvault::agent::metrics::Metrics;
use tempfile::TempDir;

fn side(db: &Path, suffix: &str) -> PathBuf {
    hubvault::sqlite::fsio::side_path(db, suffix)
}

/// [`crate::common::sqlite3`]'s output, trimmed.
fn shell(db: &Path, sql: &str) -> String {
    crate::common::sqlite3(db, sql).trim().to_string()
}

/// [`shell`] in journal mode `mode` (a connection's setting, not the file's); `sql`'s
/// output.
fn shell_in(db: &Path, mode: &str, sql: &str) -> String {
    let said = shell(db, &format!("PRAGMA journal_mode={mode};\n{sql}"));
    let (set, rest) = said.split_once('\n').unwrap_or((&said, ""));
    assert_eq!(set, mode);
    rest.to_string()
}

/// The file's bytes, read by `cp` in a process of its own (no descriptor of ours).
fn copy_of(path: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("copy");
    let o = Command::new("cp").arg(path).arg(&to).output().unwrap();
    assert!(o.status.success(), "cp: {o:?}");
    std::fs::read(&to).unwrap()
}

/// A connector database of `events` events in rollback-journal mode (`delete`), in a hub
/// of its own: (hub, database, spec).
fn rollback_connector(source_type: &str, events: usize) -> (TempDir, PathBuf, Spec) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), source_type, events);
    assert_eq!(shell(&db, "PRAGMA journal_mode=delete;"), "delete");
    (hub, db, spec)
}

/// `hubvault backup --json --db DB` (TMPDIR private to this process).
fn backup(tb: &TestBucket, db: &Path) -> Output {
    run(cmd_private_tmp(tb)
        .args(["backup", "--json", "--db"])
        .arg(db))
}

/// A `sqlite3` shell (`-bail`, a process of its own) on `db` that runs `sql` and then
/// touches a marker file; returns once the marker is there, the shell still running and
/// its standard input open (it lives until that is dropped, or it is killed). Bounded:
/// 30 s for statements that take milliseconds on an idle machine. `late` and `exited`
/// are the failures' messages: the marker never came, or the shell exited first.
fn shell_running(db: &Path, sql: &str, late: &str, exited: &str) -> (Child, ChildStdin) {
    let marker = tempfile::tempdir().unwrap();
    let done = marker.path().join("done");
    let mut child = Command::new("sqlite3")
        .args(["-bail"])
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{sql}.shell touch {}", done.display()).unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    while !done.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "{late}");
        assert!(child.try_wait().unwrap().is_none(), "{exited}");
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, stdin)
}

/// A `sqlite3` shell in journal mode `mode` that updates every event and adds 400 rows
/// of 1 KiB in one transaction with a two-page cache (so it spills into the database
/// file before any commit), killed with SIGKILL once the statement is done and before
/// it could commit. Returns the half-written database file's bytes.
fn kill_writer_mid_commit(db: &Path, mode: &str) -> Vec<u8> {
    let (mut child, stdin) = shell_running(
        db,
        &format!(
            "PRAGMA journal_mode={mode};\nPRAGMA cache_size=2;\nBEGIN;\n\
             UPDATE Events SET updatedAt = 'never-committed', eventType = 'X';\n\
             INSERT INTO Events (integration, source, externalId, eventType, createdAt, updatedAt) \
             SELECT integration, source, 'uncommitted-' || value || printf('%.1000c', 'u'), 'X', 'x', 'x' \
             FROM Events, generate_series(1, 400) WHERE Events.id = 1;\n"
        ),
        "the writer never finished its statement",
        "the writer exited before it was killed",
    );
    child.kill().unwrap(); // SIGKILL: no rollback, no journal cleanup
    child.wait().unwrap();
    drop(stdin);
    let journal = std::fs::read(side(db, "-journal")).expect("the killed writer left its journal");
    assert!(
        journal.first().is_some_and(|b| *b != 0),
        "the journal is hot (non-zero header)"
    );
    copy_of(db)
}

fn restore_to(
    tb: &TestBucket,
    spec: &crate::fixture::Spec,
    at: Option<&str>,
    out: &Path,
) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    let mut c = restore_output(cmd_private_tmp(tb), spec, out);
    if let Some(at) = at {
        c.args(["--at", at]);
    }
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(0), "restore {at:?}: {}", stderr(&o));
    std::fs::read(out).unwrap()
}

/// Capture looks and backups while the journal is hot: nothing of the half-written file
/// reaches the bucket; after the next writer's rollback, both resume exactly.
///
/// `commit_started`: the killed writer had also begun its commit's writes into the file,
/// which start with page 1 and its new change counter (SQLite keeps page 1 referenced
/// while a transaction is open, so a spill never writes it): the counter in the file is
/// bumped by hand (`dd`, a process of its own), as that first write would have. A capture
/// looks only when the counter moved, so this is the case where it looks at the torn
/// file; without it, the look is skipped on the counter alone.
fn hot_journal_is_never_taken(tb: &TestBucket, mode: &str, commit_started: bool) {
    let bucket = tb.bucket();
    let (hub, db, spec) = rollback_connector("hotj", 300);
    let (t0, clock, mut capture, rt) = sim_day_capture(&bucket, hub.path());
    rt.block_on(capture.step()); // the base
    let base = copy_of(&db);

    let mut torn = kill_writer_mid_commit(&db, mode);
    if commit_started {
        torn = bump_counter(&db, &torn);
        assert_ne!(torn[24..28], base[24..28], "the counter moved");
    }
    assert!(
        same_pages(&torn, &base).is_err(),
        "the killed writer changed the database file (the test's premise)"
    );
    let journal = copy_of(&side(&db, "-journal"));

    // A capture look with the journal hot.
    clock.set(t0 + chrono::TimeDelta::seconds(10));
    rt.block_on(capture.step());
    let out = tempfile::tempdir().unwrap();
    let at = |s: i64| (t0 + chrono::TimeDelta::seconds(s)).to_rfc3339();
    let got = restore_to(tb, &spec, Some(&at(15)), &out.path().join("at.db"));
    same_pages(&got, &base).expect("restore --at after a look at the hot journal: the base");

    // A backup with the journal hot: refused, nothing uploaded.
    let doc = json_of(&backup(tb, &db), 1);
    assert!(
        doc["error"].as_str().unwrap().contains("hot journal"),
        "a backup of a hot-journal database says why: {doc}"
    );
    assert!(
        tb.keys("acme/datahub").is_empty(),
        "nothing uploaded from a hot-journal database: {:?}",
        tb.keys("acme/datahub")
    );

    // hubvault wrote neither the file nor the journal.
    assert_eq!(copy_of(&db), torn, "the database file is untouched");
    assert_eq!(
        copy_of(&side(&db, "-journal")),
        journal,
        "the journal is untouched"
    );

    // The next writer (a read suffices) rolls the journal back: the base again.
    assert_eq!(
        shell_in(
            &db,
            mode,
            "SELECT count(*) FROM Events WHERE eventType = 'X';"
        ),
        "0"
    );
    same_pages(&copy_of(&db), &base).expect("the rollback gives the base back");
    clock.set(t0 + chrono::TimeDelta::seconds(20));
    rt.block_on(capture.step());
    let got = restore_to(tb, &spec, Some(&at(25)), &out.path().join("at.db"));
    same_pages(&got, &base).expect("restore --at after the rollback: the base");

    // A commit after it is captured and backed up exactly.
    shell_in(
        &db,
        mode,
        "UPDATE Events SET eventType = 'AFTER' WHERE id % 7 = 0;",
    );
    let after = copy_of(&db);
    clock.set(t0 + chrono::TimeDelta::seconds(30));
    rt.block_on(capture.step());
    let got = restore_to(tb, &spec, Some(&at(35)), &out.path().join("at.db"));
    same_pages(&got, &after).expect("restore --at after the next commit");
    // The journal stays in truncate (empty) and persist (zeroed header) mode, and is
    // not taken as hot.
    let left = std::fs::read(side(&db, "-journal")).ok();
    match mode {
        "delete" => assert_eq!(left, None, "delete mode removes the journal"),
        "truncate" => assert_eq!(left.map(|j| j.len()), Some(0), "truncate mode empties it"),
        _ => assert!(
            left.is_some_and(|j| j.len() > 28 && j[..28].iter().all(|b| *b == 0)),
            "persist mode keeps the journal with a zeroed header"
        ),
    }
    let o = backup(tb, &db);
    let r = json_of(&o, 0);
    assert_eq!(r["decision"], "uploaded", "{r}");
    let got = restore_to(tb, &spec, None, &out.path().join("latest.db"));
    same_pages(&got, &after).expect("restore of the backup after the rollback");
}

/// What a commit that had started would have done to page 1 (the change counter one up),
/// written by `dd` in a process of its own; the file's bytes after.
fn bump_counter(db: &Path, torn: &[u8]) -> Vec<u8> {
    let counter = u32::from_be_bytes(torn[24..28].try_into().unwrap()) + 1;
    let bytes = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bytes.path(), counter.to_be_bytes()).unwrap();
    let o = Command::new("dd")
        .arg(format!("if={}", bytes.path().display()))
        .arg(format!("of={}", db.display()))
        .args(["bs=1", "seek=24", "conv=notrunc", "status=none"])
        .output()
        .unwrap();
    assert!(o.status.success(), "dd: {o:?}");
    copy_of(db)
}

/// Review 7's finding: a hot journal that keeps capture out was a debug line each tick.
/// Now the lag counts from the first look that saw the change and could not take it,
/// `hubvault_capture_blocked_seconds` says for how long, and past 30 s (the capture's
/// clock) one warning names the journal; once the journal is rolled back, capture says
/// it is capturing again and the gauges fall to zero.
#[test]
fn a_hot_journal_that_blocks_capture_is_warned_once_by_name_and_counted_in_the_lag() {
    let tb = TestBucket::local();
    let (hub, db, spec) = rollback_connector("hotw", 300);
    let metrics = Metrics::new("acme");
    let (t0, clock, mut capture, rt) =
        sim_day_capture_into(&tb.bucket(), hub.path(), metrics.clone());
    rt.block_on(capture.step()); // the base
    let torn = kill_writer_mid_commit(&db, "delete");
    bump_counter(&db, &torn); // a change capture sees, and cannot take
    let journal = side(&db, "-journal").display().to_string();
    let capture_of = || metrics.get(&spec.connector.to_string()).unwrap().capture;
    let at = |s: i64| t0 + chrono::TimeDelta::seconds(s);

    let log = crate::common::json_log_of(|| {
        for s in [10, 25] {
            clock.set(at(s));
            rt.block_on(capture.step());
        }
        let c = capture_of();
        assert_eq!(
            c.blocked_since,
            Some(at(10)),
            "blocked from the first look: {c:?}"
        );
        assert_eq!(c.pending_since, Some(at(10)), "the lag counts it: {c:?}");
        let why = c.blocked_why.unwrap_or_default();
        assert!(
            why.contains("hot journal") && why.contains(&journal),
            "{why}"
        );
        let text = metrics.render(at(25));
        assert!(
            text.lines()
                .any(|l| l.starts_with("hubvault_capture_blocked_seconds{")
                    && l.contains(&spec.connector.to_string())
                    && l.ends_with(" 15")),
            "{text}"
        );
        for s in [40, 45, 60] {
            clock.set(at(s));
            rt.block_on(capture.step());
        }
    });
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") && l.contains("nothing new captured"))
        .collect();
    assert_eq!(warned.len(), 1, "one warning, not one a tick: {log}");
    assert!(
        warned[0].contains("nothing new captured for 30s") && warned[0].contains(&journal),
        "the warning names the journal: {}",
        warned[0]
    );

    // The next writer rolls the journal back: capture keeps up again.
    shell_in(&db, "delete", "SELECT count(*) FROM Events;");
    let log = crate::common::json_log_of(|| {
        clock.set(at(70));
        rt.block_on(capture.step());
    });
    assert!(log.contains("capturing again after 60s"), "{log}");
    let c = capture_of();
    assert_eq!(
        (c.blocked_since, &c.blocked_why, c.pending_since),
        (None, &None, None),
        "{c:?}"
    );
}

both!(
    a_writer_killed_mid_commit_in_delete_mode_is_never_captured_nor_backed_up_half_written,
    |tb| hot_journal_is_never_taken(tb, "delete", false)
);

both!(
    a_writer_killed_after_its_commit_wrote_page_1_is_never_captured_nor_backed_up_half_written,
    |tb| hot_journal_is_never_taken(tb, "delete", true)
);

both!(
    a_writer_killed_mid_commit_in_truncate_mode_is_never_captured_nor_backed_up_half_written,
    |tb| hot_journal_is_never_taken(tb, "truncate", true)
);

both!(
    a_writer_killed_mid_commit_in_persist_mode_is_never_captured_nor_backed_up_half_written,
    |tb| hot_journal_is_never_taken(tb, "persist", true)
);

/// A `sqlite3` shell in `locking_mode=EXCLUSIVE` (review 7, point 2): after its first
/// commit it keeps the EXCLUSIVE lock for as long as it lives. A capture look and a
/// backup meanwhile end (bounded: the test finishes) without taking anything: restore
/// gives the state before that commit, and the backup fails, saying so. Once the shell
/// quits, both take the committed state exactly.
fn exclusive_writer(tb: &TestBucket) {
    let bucket = tb.bucket();
    let (hub, db, spec) = rollback_connector("exclw", 200);
    let metrics = Metrics::new("acme");
    let (t0, clock, mut capture, rt) = sim_day_capture_into(&bucket, hub.path(), metrics.clone());
    rt.block_on(capture.step()); // the base
    let base = copy_of(&db);

    let (mut child, stdin) = shell_running(
        &db,
        "PRAGMA locking_mode=EXCLUSIVE;\n\
         UPDATE Events SET eventType = 'EXCL' WHERE id % 3 = 0;\n",
        "the writer never committed",
        "the writer exited",
    );
    let committed = copy_of(&db);
    assert_ne!(committed[24..28], base[24..28], "the writer committed");

    clock.set(t0 + chrono::TimeDelta::seconds(10));
    rt.block_on(capture.step());
    let out = tempfile::tempdir().unwrap();
    let at = |s: i64| (t0 + chrono::TimeDelta::seconds(s)).to_rfc3339();
    let got = restore_to(tb, &spec, Some(&at(15)), &out.path().join("at.db"));
    same_pages(&got, &base).expect("restore --at a look refused by the lock: the base");
    let why = metrics
        .get(&spec.connector.to_string())
        .unwrap()
        .capture
        .blocked_why;
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("locking_mode=EXCLUSIVE")),
        "the blocked capture says why: {why:?}"
    );

    let doc = json_of(&backup(tb, &db), 1);
    eprintln!("backup against an EXCLUSIVE writer: {doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("locked"),
        "the backup says the database is locked: {doc}"
    );
    assert!(
        tb.keys("acme/datahub").is_empty(),
        "nothing uploaded while the writer held its lock"
    );

    // The writer quits: its lock goes, and the state it committed is taken exactly.
    drop(stdin);
    child.wait().unwrap();
    clock.set(t0 + chrono::TimeDelta::seconds(20));
    rt.block_on(capture.step());
    let got = restore_to(tb, &spec, Some(&at(25)), &out.path().join("at.db"));
    same_pages(&got, &committed).expect("restore --at after the writer quit");
    let r = json_of(&backup(tb, &db), 0);
    assert_eq!(r["decision"], "uploaded", "{r}");
    let got = restore_to(tb, &spec, None, &out.path().join("latest.db"));
    same_pages(&got, &committed).expect("restore of the backup after the writer quit");
}
both!(
    a_writer_holding_an_exclusive_lock_makes_capture_wait_and_backup_fail_and_neither_hangs,
    exclusive_writer
);

/// The counter the writer of [`shell_writer_commits_while_capture_and_backup_run`] left
/// in a restored database: rows exactly 0..n and the counter n, or a panic.
fn committed_prefix(path: &Path, what: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let (rows, max): (i64, i64) = c
        .query_row("SELECT count(*), coalesce(max(id), -1) FROM w", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let n: i64 = c.query_row("SELECT n FROM c", [], |r| r.get(0)).unwrap();
    assert!(
        rows == n && max == n - 1,
        "{what}: {rows} rows up to {max}, counter {n}: no committed state"
    );
    n
}

/// A `sqlite3` shell, a process of its own, in rollback-journal mode with a 200 ms busy
/// timeout, commits continuously (each commit adds row i to `w` and sets `c.n` to i + 1)
/// while capture looks and backups run (review 7, point 4). Every `restore --at` a look
/// and every restore of a backup is a committed prefix, never going back; the shell never
/// fails (its busy timeout covers our locks: it runs with `-bail` and must exit 0 with
/// nothing on stderr). Bounded: 5 rounds of one look and one backup.
fn shell_writer_commits_while_capture_and_backup_run(tb: &TestBucket) {
    let bucket = tb.bucket();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "shellw", 100);
    shell(
        &db,
        "PRAGMA journal_mode=delete; CREATE TABLE w(id INTEGER PRIMARY KEY, pad TEXT); \
         CREATE TABLE c(n INTEGER); INSERT INTO c VALUES (0);",
    );
    let (t0, clock, mut capture, rt) = sim_day_capture(&bucket, hub.path());
    rt.block_on(capture.step()); // the base

    let mut child = Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 200"])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i: i64 = 0;
            // Bounded: at most 5 000 commits, or until told to stop.
            while i < 5_000 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let line = format!(
                    "BEGIN; INSERT INTO w VALUES ({i}, printf('%.{}c', 'p')); \
                     UPDATE c SET n = {}; COMMIT;\n",
                    100 + (i % 7) * 300,
                    i + 1
                );
                if stdin.write_all(line.as_bytes()).is_err() {
                    break; // the shell is gone: its exit status says why
                }
                i += 1;
                // Bursts of 5 commits, 50 ms apart: moments quiet enough for a backup
                // (it waits for one and never holds a lock for its whole read; with
                // bursts of 10 every 10 ms the first backup waited for the writer's end).
                if i % 5 == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            i
        })
    };
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("r.db");
    let (mut last_look, mut last_backup, mut uploaded) = (0, 0, 0);
    for round in 1..=5i64 {
        std::thread::sleep(Duration::from_millis(150)); // let commits happen
        clock.set(t0 + chrono::TimeDelta::seconds(10 * round));
        rt.block_on(capture.step());
        let at = (t0 + chrono::TimeDelta::seconds(10 * round + 5)).to_rfc3339();
        restore_to(tb, &spec, Some(&at), &file);
        let n = committed_prefix(&file, &format!("restore --at look {round}"));
        assert!(n >= last_look, "look {round}: {n} after {last_look}");
        last_look = n;
        let t = Instant::now();
        let o = run(cmd_private_tmp(tb)
            .args(["backup", "--json", "--force", "--db"])
            .arg(&db));
        eprintln!("backup {round}: {:?}", t.elapsed());
        if o.status.code() == Some(0) {
            assert_eq!(json_of(&o, 0)["decision"], "uploaded");
            uploaded += 1;
            restore_to(tb, &spec, None, &file);
            let n = committed_prefix(&file, &format!("restore of backup {round}"));
            // Taken after the look: at least what it saw.
            assert!(
                n >= last_look,
                "backup {round}: {n} before look {last_look}"
            );
            assert!(n >= last_backup, "backup {round}: {n} after {last_backup}");
            last_backup = n;
        } else {
            eprintln!("backup {round} refused: {}", stderr(&o));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = feeder.join().unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "the writer failed: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "{commits} commits; last look {last_look}, last backup {last_backup}, {uploaded} of 5 backups uploaded"
    );
    assert!(last_look > 0, "a look saw the writer's commits");
    assert!(uploaded > 0, "a backup fit between the commits");
}
both!(
    a_sqlite3_shell_committing_in_rollback_mode_never_fails_and_every_restore_is_a_committed_prefix,
    shell_writer_commits_while_capture_and_backup_run
);

/// A capture blocked by a hot journal in rollback-journal mode, whose next writer rolls
/// the journal back and switches the database to WAL and commits: the mode changes,
/// capture takes the WAL's state and is not blocked any more (the gauge and the lag
/// fall to zero once the commit is in the bucket, and capture says it captures again).
#[test]
fn a_capture_blocked_in_rollback_mode_is_caught_up_when_the_writer_switches_to_wal() {
    let tb = TestBucket::local();
    let (hub, db, spec) = rollback_connector("hotwal", 300);
    let metrics = Metrics::new("acme");
    let (t0, clock, mut capture, rt) =
        sim_day_capture_into(&tb.bucket(), hub.path(), metrics.clone());
    rt.block_on(capture.step()); // the base
    let torn = kill_writer_mid_commit(&db, "delete");
    bump_counter(&db, &torn);
    let capture_of = || metrics.get(&spec.connector.to_string()).unwrap().capture;
    let at = |s: i64| t0 + chrono::TimeDelta::seconds(s);
    let log = crate::common::json_log_of(|| {
        for s in [10, 45] {
            clock.set(at(s));
            rt.block_on(capture.step());
        }
    });
    assert!(log.contains("nothing new captured for 35s"), "{log}");
    assert_eq!(capture_of().blocked_since, Some(at(10)));

    shell_in(&db, "wal", "UPDATE Events SET updatedAt = 'after';");
    let log = crate::common::json_log_of(|| {
        clock.set(at(50));
        rt.block_on(capture.step());
    });
    assert!(log.contains("capturing again after 40s"), "{log}");
    let c = capture_of();
    assert_eq!(
        (c.blocked_since, &c.blocked_why, c.pending_since),
        (None, &None, None),
        "{c:?}"
    );
    assert!(c.commits_total > 0 || c.resyncs_total > 0, "{c:?}");
}
