//! Adversarial capture: a seeded writer does what connectors do between two looks of
//! the capture (commits of every size, pages rewritten within a commit, checkpoints of
//! the four modes, the WAL truncated and restarted with a new salt, the last close
//! deleting the WAL, VACUUM shrinking the file, journal-mode switches both ways, a page
//! size change, the file replaced by a rename), the capture driven step by step on a
//! manual clock; after each step a reference copy of the committed state is taken with
//! SQLite's backup API. `restore --at` an instant after each step must equal, page for
//! page, a state committed at or before it: the latest one while in WAL mode (nothing
//! defers a WAL look), an earlier one allowed only while in rollback-journal mode (an
//! observation waits for the kernel's coarse clock to pass the last write). Seeded: the
//! seed is fixed (1) and printed; `HUBVAULT_SEED` sweeps others.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::path::{Path, PathBuf};

use crate::both;
use crate::common::{TestBucket, cmd_private_tmp, restore_output, run, stderr};
use crate::compaction::{same_pages, sim_day_capture, start_of_sim_day};

/// The connector's writer: one rusqlite connection, reopened when the test closes it.
struct Writer {
    path: PathBuf,
    conn: Option<rusqlite::Connection>,
    next: i64,
    wal: bool,
    page_size: u32,
}

impl Writer {
    /// The writer of `db` in WAL mode, its table `cdc_rows(id, payload)` created.
    fn of_cdc_rows(db: &Path) -> Writer {
        let mut w = Writer {
            path: db.to_path_buf(),
            conn: None,
            next: 0,
            wal: true,
            page_size: 4096,
        };
        w.set_mode(true);
        w.c()
            .execute_batch("CREATE TABLE cdc_rows(id INTEGER PRIMARY KEY, payload TEXT)")
            .unwrap();
        w
    }

    fn c(&mut self) -> &rusqlite::Connection {
        if self.conn.is_none() {
            let c = rusqlite::Connection::open(&self.path).unwrap();
            c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
            self.conn = Some(c);
        }
        self.conn.as_ref().unwrap()
    }

    fn insert(&mut self, n: i64, size: usize) {
        let first = self.next;
        self.next += n;
        let c = self.c();
        let tx = c.unchecked_transaction().unwrap();
        for i in first..first + n {
            tx.execute(
                "INSERT INTO cdc_rows VALUES (?1, ?2)",
                rusqlite::params![i, format!("{i:08}").repeat(size / 8 + 1)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    fn checkpoint(&mut self, mode: &str) {
        if self.wal {
            self.c()
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
                .unwrap();
        }
    }

    fn set_mode(&mut self, wal: bool) {
        let want = if wal { "wal" } else { "delete" };
        let got: String = self
            .c()
            .query_row(&format!("PRAGMA journal_mode={want}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(got, want);
        self.wal = wal;
    }

    /// The committed state now, page for page: the database and its `-wal` copied as
    /// they are (the writer is between transactions), the copy opened (SQLite recovers
    /// the WAL) and checkpointed into its file. Nothing touches the writer's files.
    fn reference(&mut self) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ref.db");
        // Copied by `cp`, a process of its own: closing a descriptor of the database in
        // this process would drop every POSIX lock this process holds on it, the
        // writer's SHARED lock included (then another process's close would checkpoint
        // and delete the WAL under it).
        let cp = |from: &Path, to: &Path| {
            let o = std::process::Command::new("cp")
                .arg(from)
                .arg(to)
                .output()
                .unwrap();
            assert!(o.status.success(), "cp: {o:?}");
        };
        cp(&self.path, &p);
        let wal = side(&self.path, "-wal");
        if wal.exists() {
            cp(&wal, &side(&p, "-wal"));
        }
        let c = rusqlite::Connection::open(&p).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        if mode == "wal" {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
        drop(c);
        std::fs::read(&p).unwrap()
    }

    /// One thing a connector does (or a few, between the same two looks).
    fn act(&mut self, rng: &mut StdRng, log: &mut Vec<String>) {
        let op = rng.random_range(0..100);
        log.push(format!("op {op} (wal={})", self.wal));
        match op {
            // Small commits.
            0..=24 => {
                for _ in 0..rng.random_range(1..4) {
                    self.insert(rng.random_range(1..6), rng.random_range(50..900));
                }
            }
            // One commit that rewrites the same pages several times (several frames of
            // a page in one commit: the newest must win).
            25..=34 => {
                let c = self.c();
                let tx = c.unchecked_transaction().unwrap();
                for k in 0..4 {
                    tx.execute(
                        "UPDATE cdc_rows SET payload = ?1 WHERE id % 4 = ?2",
                        rusqlite::params![format!("r{k}-").repeat(30), k % 2],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
            }
            // The database shrinks: rows deleted, then VACUUM cuts pages off the end.
            35..=41 => {
                let c = self.c();
                c.execute("DELETE FROM cdc_rows WHERE id % 3 <> 0", [])
                    .unwrap();
                if rng.random_range(0..2) == 0 {
                    c.execute_batch("VACUUM").unwrap();
                }
            }
            // The connector's own checkpoints, in each mode.
            42..=53 => {
                let mode = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"][rng.random_range(0..4)];
                self.checkpoint(mode);
            }
            // Commits after the capture's position, the WAL truncated, and a small
            // commit in a new WAL (salt-1 + 1) shorter than the position.
            54..=63 => {
                self.insert(rng.random_range(5..40), 600);
                self.checkpoint(if rng.random_range(0..2) == 0 {
                    "TRUNCATE"
                } else {
                    "RESTART"
                });
                self.insert(1, 10);
            }
            // The writer closes: its close checkpoints and deletes the -wal (and -shm);
            // it reopens and goes on.
            64..=71 => {
                self.conn = None;
                if rng.random_range(0..2) == 0 {
                    self.insert(rng.random_range(1..5), 300);
                }
            }
            // A commit past the capture's 4 MiB spill threshold.
            72..=75 => self.insert(1100, 4000),
            // A journal-mode switch, with commits on the other side.
            76..=83 => {
                let wal = !self.wal;
                self.set_mode(wal);
                self.insert(rng.random_range(1..10), 500);
            }
            // A page-size change (VACUUM in rollback-journal mode), then back to WAL
            // or not.
            84..=87 => {
                let was_wal = self.wal;
                if was_wal {
                    self.set_mode(false);
                }
                self.page_size = if self.page_size == 4096 { 8192 } else { 4096 };
                let ps = self.page_size;
                self.c()
                    .execute_batch(&format!("PRAGMA page_size={ps}; VACUUM;"))
                    .unwrap();
                if was_wal {
                    self.set_mode(true);
                }
                self.insert(2, 100);
            }
            // The database replaced by a rename: a copy with more rows, renamed over it.
            88..=91 => {
                let copy = self.path.with_file_name("replacement.db");
                let _ = std::fs::remove_file(&copy);
                let mut dst = rusqlite::Connection::open(&copy).unwrap();
                {
                    let b = rusqlite::backup::Backup::new(self.c(), &mut dst).unwrap();
                    b.run_to_completion(1 << 20, std::time::Duration::ZERO, None)
                        .unwrap();
                }
                let next = self.next;
                dst.execute(
                    "INSERT INTO cdc_rows VALUES (?1, 'in the replacement')",
                    [next],
                )
                .unwrap();
                let mode: String = dst
                    .query_row(
                        &format!(
                            "PRAGMA journal_mode={}",
                            if self.wal { "wal" } else { "delete" }
                        ),
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert!(mode == "wal" || mode == "delete");
                drop(dst);
                self.next += 1;
                self.conn = None;
                std::fs::rename(&copy, &self.path).unwrap();
            }
            // Several small commits and a delete in one look.
            _ => {
                self.insert(3, 100);
                self.c()
                    .execute("DELETE FROM cdc_rows WHERE id % 7 = 0", [])
                    .unwrap();
                self.insert(2, 2000);
            }
        }
    }
}

fn side(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `restore --output` of the connector at `at`; the file's bytes.
fn restore_at(tb: &TestBucket, spec: &crate::fixture::Spec, at: &str, out: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    let mut c = restore_output(cmd_private_tmp(tb), spec, out);
    c.args(["--at", at]);
    let o = run(&mut c);
    assert_eq!(
        o.status.code(),
        Some(0),
        "restore --at {at}: {}",
        stderr(&o)
    );
    std::fs::read(out).unwrap()
}

fn seeded_writer(tb: &TestBucket) {
    // Seed 1 by default (it truncates the WAL after commits past the capture's position
    // within a look: the defect this test was written for); HUBVAULT_SEED sweeps.
    let seed = std::env::var("HUBVAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1u64);
    eprintln!("seeded_writer: HUBVAULT_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let bucket = tb.bucket();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = crate::common::connector_db(hub.path(), "sdc", 20);
    let mut w = Writer::of_cdc_rows(&db);
    w.insert(200, 300);
    let (t0, clock, mut capture, rt) = sim_day_capture(&bucket, hub.path());
    rt.block_on(capture.step()); // the base
    // (reference, in WAL mode at the step)
    let mut refs: Vec<(Vec<u8>, bool)> = vec![(w.reference(), w.wal)];
    let mut log = Vec::new();
    const STEPS: i64 = 24;
    for k in 1..=STEPS {
        for _ in 0..rng.random_range(1..4) {
            w.act(&mut rng, &mut log);
        }
        log.push(format!("step {k}"));
        clock.set(t0 + chrono::TimeDelta::seconds(10 * k));
        rt.block_on(capture.step());
        refs.push((w.reference(), w.wal));
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("at.db");
    let latest = check_instants(tb, &spec, t0, &refs, &file, seed, &log);
    eprintln!(
        "seeded_writer: seed {seed}: {latest} of {} instants gave the latest state",
        refs.len()
    );
    // Compacted (minutes, 1-minute and 10-minute marks, as the agent would once the
    // minutes are over): every instant still restores a committed state.
    rt.block_on(async {
        clock.set(t0 + chrono::TimeDelta::seconds(10 * STEPS) + chrono::TimeDelta::minutes(3));
        let mut c = hubvault::ops::compact::Compactor::load(
            &bucket,
            &hubvault::model::ids::OrgSlug::parse("acme").unwrap(),
            spec.datahub,
        )
        .await
        .unwrap();
        let now = hubvault::clock::Clock::now(&*clock);
        let r = c.compact(now, now, None, false).await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(
            r.minutes >= 4 && r.segments_deleted > 0 && r.marks > 0,
            "the looks' segments went into minutes and marks: {r:?}"
        );
    });
    let compacted = check_instants(tb, &spec, t0, &refs, &file, seed, &log);
    assert_eq!(
        compacted, latest,
        "compaction changed what an instant restores"
    );
}

/// Restores each instant (5 s after each look) and checks it against the references;
/// returns how many gave the latest state.
fn check_instants(
    tb: &TestBucket,
    spec: &crate::fixture::Spec,
    t0: chrono::DateTime<chrono::Utc>,
    refs: &[(Vec<u8>, bool)],
    file: &Path,
    seed: u64,
    log: &[String],
) -> usize {
    let mut latest = 0;
    for (k, (reference, wal)) in refs.iter().enumerate() {
        let at = t0 + chrono::TimeDelta::seconds(10 * k as i64 + 5);
        let got = restore_at(tb, spec, &at.to_rfc3339(), file);
        match same_pages(&got, reference) {
            Ok(()) => latest += 1,
            Err(why) => {
                // Only a rollback-journal observation may wait for a later look; the
                // state handed back must still be one committed before.
                let earlier = (0..k).rev().find(|j| same_pages(&got, &refs[*j].0).is_ok());
                assert!(
                    !*wal && earlier.is_some(),
                    "seed {seed}: restore --at step {k} ({}) is not the state committed \
                     then ({why}), nor an earlier one (found {earlier:?}); ops: {log:?}",
                    if *wal { "WAL" } else { "rollback journal" }
                );
            }
        }
    }
    latest
}
both!(
    restore_at_each_look_of_a_seeded_writer_is_a_state_it_committed_page_for_page,
    seeded_writer
);

/// A resync whose commit cannot be written to a full `--tmp-dir` (its image spilled, the
/// pending commit does not fit) is not recorded; the WAL position its image reached must
/// not be kept either: tailing from it would put the later commits on a state without
/// the resync's pages, and `restore --at` would hand back a state never committed.
fn resync_fails_on_a_full_tmp_dir(tb: &TestBucket) {
    let bucket = tb.bucket();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = crate::common::connector_db(hub.path(), "sdc", 20);
    let mut w = Writer::of_cdc_rows(&db);
    w.insert(20, 300);
    // Room for the resync's image (about 5.5 MiB) but not for its pending commit too.
    let tmp = crate::reliability::disk::SmallFs::mount(8 << 20).expect(
        "this test mounts an 8 MiB tmpfs and needs root (CAP_SYS_ADMIN); the suite runs as root",
    );
    let t0 = start_of_sim_day();
    let clock = hubvault::clock::ManualClock::new(t0);
    let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
    let mut capture = hubvault::agent::capture::Capture::new(
        bucket.clone(),
        hubvault::agent::capture::CaptureOptions {
            hub_root: hub.path().to_path_buf(),
            org: org.clone(),
            tick: std::time::Duration::from_secs(1),
            tmp_dir: Some(tmp.path().to_path_buf()),
            clock: clock.clone(),
        },
        hubvault::agent::metrics::Metrics::new("acme"),
    );
    let rt = crate::common::rt();
    rt.block_on(capture.step()); // the base
    // A big commit, the WAL truncated, one more commit: a resync (see the test above),
    // whose commit does not fit in the tmp dir.
    w.insert(1300, 4000);
    w.checkpoint("TRUNCATE");
    w.insert(1, 10);
    clock.set(t0 + chrono::TimeDelta::seconds(10));
    rt.block_on(capture.step());
    // The next commits, tailed; then the state at that instant must be the writer's.
    w.insert(3, 10);
    clock.set(t0 + chrono::TimeDelta::seconds(20));
    rt.block_on(capture.step());
    let want = w.reference();
    let out = tempfile::tempdir().unwrap();
    let at = (t0 + chrono::TimeDelta::seconds(25)).to_rfc3339();
    let got = restore_at(tb, &spec, &at, &out.path().join("at.db"));
    if let Err(why) = same_pages(&got, &want) {
        // Not yet captured is allowed (an older committed state); a state that was never
        // committed is not.
        let rows: i64 = rusqlite::Connection::open(out.path().join("at.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM cdc_rows", [], |r| r.get(0))
            .unwrap();
        assert!(
            rows == 20 || rows == 1321,
            "restore --at after the failed resync is no committed state ({why}): \
             {rows} rows (committed: 20, 1320, 1321, 1324)"
        );
    }
    // Room again: the next look catches up, exactly.
    let o = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "remount: {o:?}");
    clock.set(t0 + chrono::TimeDelta::seconds(30));
    rt.block_on(capture.step());
    let at = (t0 + chrono::TimeDelta::seconds(35)).to_rfc3339();
    let got = restore_at(tb, &spec, &at, &out.path().join("at.db"));
    same_pages(&got, &want).expect("the look after the tmp dir has room again");
}
both!(
    a_resync_not_recorded_for_a_full_tmp_dir_leaves_no_position_to_tail_from,
    resync_fails_on_a_full_tmp_dir
);

/// A third-party writer: the `sqlite3` shell, a process of its own, run between two
/// looks, while an idle connection of the test keeps the database open (so the shell's
/// close is not the last and the WAL stays). Each round commits past the capture's
/// position, checkpoints in one of the four modes, and commits once more; two rounds
/// switch to rollback-journal mode and back. `restore --at` after each look equals the
/// committed state page for page.
fn sqlite3_shell_writer(tb: &TestBucket) {
    let bucket = tb.bucket();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = crate::common::connector_db(hub.path(), "sdc", 20);
    let mut idle = Writer::of_cdc_rows(&db);
    let shell = |sql: &str| -> String { crate::common::sqlite3(&db, sql) };
    let count = || -> i64 {
        shell("SELECT count(*) FROM cdc_rows;")
            .trim()
            .parse()
            .unwrap()
    };
    let (t0, clock, mut capture, rt) = sim_day_capture(&bucket, hub.path());
    shell("INSERT INTO cdc_rows SELECT value, printf('%.500c', 'b') FROM generate_series(0, 99);");
    rt.block_on(capture.step()); // the base
    let mut refs = vec![(idle.reference(), true)];
    let modes = [
        "TRUNCATE", "PASSIVE", "RESTART", "FULL", "TRUNCATE", "TRUNCATE",
    ];
    for (k, mode) in modes.iter().enumerate() {
        let from = 1000 * (k + 1);
        let mut sql = format!(
            "BEGIN; INSERT INTO cdc_rows SELECT value, printf('%.900c', 'n') \
             FROM generate_series({from}, {}); COMMIT;\n\
             UPDATE cdc_rows SET payload = 'u{k}' WHERE id % 5 = {};\n\
             PRAGMA wal_checkpoint({mode});\n\
             INSERT INTO cdc_rows VALUES ({}, 'after');\n",
            from + 60,
            k % 5,
            from + 999
        );
        let before = count();
        let switch = k % 3 == 1;
        if switch {
            // To rollback-journal mode, commits there, and back: the idle connection
            // lets go first (no switch out of WAL while another connection is open);
            // the shell's close is then the last and removes the WAL.
            idle.conn = None;
            sql.push_str(
                "PRAGMA journal_mode=delete; DELETE FROM cdc_rows WHERE id % 4 = 0; \
                 VACUUM; PRAGMA journal_mode=wal;\n",
            );
        }
        let said = shell(&sql);
        if switch {
            assert!(
                said.contains("delete"),
                "the shell switched modes: {said:?}"
            );
            // Reopened; its first read takes the SHARED lock it then keeps.
            idle.c()
                .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                .unwrap();
        } else {
            assert!(
                side(&db, "-wal").exists(),
                "the idle connection kept the WAL"
            );
        }
        assert_ne!(count(), before, "the shell committed");
        clock.set(t0 + chrono::TimeDelta::seconds(10 * (k as i64 + 1)));
        rt.block_on(capture.step());
        refs.push((idle.reference(), true));
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("at.db");
    let latest = check_instants(tb, &spec, t0, &refs, &file, 0, &[]);
    assert_eq!(latest, refs.len(), "every look gave the latest state");
}
both!(
    a_sqlite3_shell_writer_checkpointing_between_looks_is_restored_exactly,
    sqlite3_shell_writer
);

/// A writer committing as fast as it can on a thread while the capture looks: each
/// commit inserts row i and sets a counter row to i + 1 (the counter's page rewritten by
/// every commit), and it checkpoints in the four modes in turn and reopens now and then.
/// Whatever the looks raced, `restore --at` each look is a state the writer committed:
/// rows exactly 0..n, the counter n, n never going back from one look to the next, and
/// the last look (the writer stopped) every row.
fn racing_writer(tb: &TestBucket) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let bucket = tb.bucket();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = crate::common::connector_db(hub.path(), "sdc", 20);
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=wal; CREATE TABLE cdc_rows(id INTEGER PRIMARY KEY, payload TEXT);
             CREATE TABLE meta(k INTEGER PRIMARY KEY, n INTEGER); INSERT INTO meta VALUES (1, 0);",
        )
        .unwrap();
    }
    let (t0, clock, mut capture, rt) = sim_day_capture(&bucket, hub.path());
    rt.block_on(capture.step()); // the base
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, done, db) = (stop.clone(), done.clone(), db.clone());
        std::thread::spawn(move || {
            let open = || {
                let c = rusqlite::Connection::open(&db).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
                c
            };
            let mut c = open();
            let modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"];
            // Bounded: 20,000 commits at most, whatever the looks do.
            for i in 0..20_000i64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let tx = c.unchecked_transaction().unwrap();
                tx.execute(
                    "INSERT INTO cdc_rows VALUES (?1, ?2)",
                    rusqlite::params![i, "w".repeat(100 + (i as usize * 37) % 3000)],
                )
                .unwrap();
                tx.execute("UPDATE meta SET n = ?1 WHERE k = 1", [i + 1])
                    .unwrap();
                tx.commit().unwrap();
                done.store(i + 1, Ordering::SeqCst);
                if i % 37 == 36 {
                    let m = modes[(i as usize / 37) % 4];
                    c.query_row(&format!("PRAGMA wal_checkpoint({m})"), [], |_| Ok(()))
                        .unwrap();
                }
                if i % 401 == 400 {
                    drop(c);
                    c = open();
                }
            }
        })
    };
    const LOOKS: i64 = 20;
    for k in 1..=LOOKS {
        // Let the writer get ahead by some commits (bounded: 10 s a look at most): the
        // looks then race commits, checkpoints and reopenings.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < k * 40 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        clock.set(t0 + chrono::TimeDelta::seconds(10 * k));
        rt.block_on(capture.step());
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let total = done.load(Ordering::SeqCst);
    clock.set(t0 + chrono::TimeDelta::seconds(10 * (LOOKS + 1)));
    rt.block_on(capture.step());
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("at.db");
    let mut last = 0i64;
    let mut seen: Vec<i64> = Vec::new();
    for k in 1..=LOOKS + 1 {
        let at = (t0 + chrono::TimeDelta::seconds(10 * k + 5)).to_rfc3339();
        restore_at(tb, &spec, &at, &file);
        let c = rusqlite::Connection::open(&file).unwrap();
        let n: i64 = c
            .query_row("SELECT n FROM meta WHERE k = 1", [], |r| r.get(0))
            .unwrap();
        let (count, min, max): (i64, Option<i64>, Option<i64>) = c
            .query_row("SELECT count(*), min(id), max(id) FROM cdc_rows", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert!(
            count == n && (n == 0 || (min == Some(0) && max == Some(n - 1))),
            "look {k}: the counter says {n}, the rows {count} ({min:?}..{max:?}): not a \
             committed state"
        );
        assert!(
            n >= last,
            "look {k}: {n} rows after {last} at the look before"
        );
        last = n;
        seen.push(n);
    }
    assert_eq!(
        last, total,
        "the look after the writer stopped has every row"
    );
    eprintln!("racing_writer: {total} commits; rows at each look: {seen:?}");
}
both!(
    restore_at_each_look_raced_by_a_checkpointing_writer_is_a_committed_state,
    racing_writer
);
