//! Compaction and retention of the continuous stream (issue 14), on both backends.
//!
//! A day of capture is simulated with a clock the test drives ([`ManualClock`]): real
//! connector databases (one WAL, one rollback journal) written by the test, the real
//! capture (`Capture::step`) and the real compactor (`ops::compact::Compactor`), the
//! simulated day running in seconds. Reference copies of each database are taken at
//! instants chosen in advance (seeded, the seed printed); `hubvault restore --at` at each
//! must equal its copy page for page, and its requests are counted through the proxy.

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::TimeDelta;
use hubvault::agent::capture::{Capture, CaptureOptions};
use hubvault::agent::metrics::Metrics;
use hubvault::clock::{Clock, ManualClock};
use hubvault::model::layout::StreamKeys;
use hubvault::model::stream::PageTable;
use hubvault::model::windows;
use hubvault::ops::compact::Compactor;
use hubvault::store::Bucket;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::both;
use crate::common::{Kind, TestBucket, json_of, private_tmp, restore_output, rt, run};
use crate::fixture::Spec;
use crate::proxy::Proxy;

/// Capture of the hub at `hub` into `bucket` for org `org`, at `--tick 1s`, on `clock`.
pub fn manual_capture(
    bucket: &Bucket,
    hub: &std::path::Path,
    org: &hubvault::model::ids::OrgSlug,
    clock: hubvault::clock::SharedClock,
) -> Capture {
    manual_capture_into(bucket, hub, org, clock, Metrics::new("acme"))
}

/// [`manual_capture`] reporting into `metrics`.
pub fn manual_capture_into(
    bucket: &Bucket,
    hub: &std::path::Path,
    org: &hubvault::model::ids::OrgSlug,
    clock: hubvault::clock::SharedClock,
    metrics: std::sync::Arc<Metrics>,
) -> Capture {
    Capture::new(
        bucket.clone(),
        CaptureOptions {
            hub_root: hub.to_path_buf(),
            org: org.clone(),
            tick: std::time::Duration::from_secs(1),
            tmp_dir: Some(private_tmp().to_path_buf()),
            clock,
        },
        metrics,
    )
}

/// The set-up of a capture driven by hand: a [`ManualClock`] at [`start_of_sim_day`], a
/// [`manual_capture`] of the hub at `hub` (org `acme`) on it, and a runtime to step it:
/// (t0, clock, capture, runtime). The first step (the base) is the caller's.
pub fn sim_day_capture(
    bucket: &Bucket,
    hub: &std::path::Path,
) -> (
    Time,
    std::sync::Arc<ManualClock>,
    Capture,
    tokio::runtime::Runtime,
) {
    sim_day_capture_into(bucket, hub, Metrics::new("acme"))
}

/// [`sim_day_capture`] reporting into `metrics`.
pub fn sim_day_capture_into(
    bucket: &Bucket,
    hub: &std::path::Path,
    metrics: std::sync::Arc<Metrics>,
) -> (
    Time,
    std::sync::Arc<ManualClock>,
    Capture,
    tokio::runtime::Runtime,
) {
    let t0 = start_of_sim_day();
    let clock = ManualClock::new(t0);
    let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
    let capture = manual_capture_into(bucket, hub, &org, clock.clone(), metrics);
    (t0, clock, capture, rt())
}

type Time = chrono::DateTime<chrono::Utc>;

/// The seed of a simulated test: 13, or `HUBVAULT_SEED` to sweep others (printed, so a
/// failure names its seed). Never random by default: a CI run must be the run it was
/// before (a random default once drew a database smaller than the buffers the test is
/// about, and failed a fresh clone).
pub fn seed_of(test: &str) -> u64 {
    let seed = std::env::var("HUBVAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13u64);
    eprintln!("{test}: HUBVAULT_SEED={seed}");
    seed
}

/// One connector of the simulated hub.
pub struct SimDb {
    pub spec: Spec,
    pub path: PathBuf,
    conn: rusqlite::Connection,
    wal: bool,
    next: i64,
}

impl SimDb {
    pub fn commit(&mut self, rng: &mut StdRng) {
        let c = &self.conn;
        match rng.random_range(0..20) {
            // Mostly inserts (an event log), sometimes updates, deletes and a VACUUM
            // (the database shrinks: pages cut off and grown back).
            0 => {
                c.execute("DELETE FROM cdc_rows WHERE id % 5 = 0", [])
                    .unwrap();
            }
            1 => {
                c.execute(
                    "UPDATE cdc_rows SET payload = ?1 WHERE id % 3 = 1",
                    [format!("u{}", self.next).repeat(40)],
                )
                .unwrap();
            }
            2 if rng.random_range(0..10) == 0 => {
                c.execute_batch("VACUUM").unwrap();
            }
            _ => {
                let n = rng.random_range(1..4);
                for _ in 0..n {
                    c.execute(
                        "INSERT INTO cdc_rows VALUES (?1, ?2)",
                        rusqlite::params![self.next, "p".repeat(rng.random_range(50..900))],
                    )
                    .unwrap();
                    self.next += 1;
                }
            }
        }
    }

    /// A copy of this connector's database under the hub root `hub` (a copied disk
    /// image), written to from here on by its own connection; its rows get ids of their
    /// own, so the two databases differ from their next commits on.
    pub fn copy_into(&self, hub: &std::path::Path) -> SimDb {
        let image = self.image();
        let dir = hub.join(self.spec.connector.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sqlite.db");
        std::fs::write(&path, image).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        SimDb {
            spec: self.spec.clone(),
            path,
            conn,
            wal: self.wal,
            next: self.next + 1_000_000,
        }
    }

    /// The connector's own connection (the writer), for tests that write it themselves.
    pub fn conn(&self) -> &rusqlite::Connection {
        &self.conn
    }

    /// The database's state as a page image (WAL: checkpointed into the file first).
    pub fn image(&self) -> Vec<u8> {
        if self.wal {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
        std::fs::read(&self.path).unwrap()
    }
}

/// What a simulation left.
pub struct Sim {
    pub dbs: Vec<SimDb>,
    /// (instant, connector index, reference image at that instant).
    pub refs: Vec<(Time, usize, Vec<u8>)>,
    /// Every segment's time (key).
    pub segments: Vec<Time>,
    pub end: Time,
    _hub: tempfile::TempDir,
}

pub struct SimSpec {
    pub start: Time,
    pub hours: i64,
    /// Mean seconds between wake-ups inside a burst, and bursts per hour.
    pub bursts_per_hour: u32,
    pub instants: usize,
    /// Draw the instants at or after this time only (default: from a minute in).
    pub instants_after: Option<Time>,
    /// Compact as the agent would (every 5 simulated minutes), or leave every segment.
    pub compact: bool,
}

/// A hub of two connectors under `hub` (one WAL, one rollback journal), with a table
/// the simulation writes.
pub fn sim_dbs(hub: &std::path::Path) -> Vec<SimDb> {
    let datahub = hubvault::model::ids::DatahubId::random();
    let mut dbs = Vec::new();
    for (i, ty) in ["sdc", "solace"].into_iter().enumerate() {
        let mut s = Spec::new(ty, &format!("{ty} simulated"), 30);
        s.datahub = datahub;
        let dir = hub.join(s.connector.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sqlite.db");
        crate::fixture::create(&path, &s).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let wal = i == 0;
        conn.execute_batch(if wal {
            "PRAGMA journal_mode=wal"
        } else {
            "PRAGMA journal_mode=delete"
        })
        .unwrap();
        conn.execute_batch("CREATE TABLE cdc_rows(id INTEGER PRIMARY KEY, payload TEXT)")
            .unwrap();
        dbs.push(SimDb {
            spec: s,
            path,
            conn,
            wal,
            next: 0,
        });
    }
    dbs
}

/// Simulates `spec.hours` of capture of a hub of two connectors into `bucket`.
pub fn simulate(bucket: &Bucket, spec: &SimSpec, seed: u64) -> Sim {
    let mut rng = StdRng::seed_from_u64(seed);
    let hub = tempfile::tempdir().unwrap();
    let mut dbs = sim_dbs(hub.path());
    let datahub = dbs[0].spec.datahub;
    let clock = ManualClock::new(spec.start);
    let end = spec.start + TimeDelta::hours(spec.hours);
    let mut instants: Vec<(Time, usize)> = (0..spec.instants)
        .map(|_| {
            let from = spec
                .instants_after
                .map_or(60_000, |t| (t - spec.start).num_milliseconds().max(60_000));
            let ms = rng.random_range(from..(end - spec.start).num_milliseconds());
            (
                spec.start + TimeDelta::milliseconds(ms),
                rng.random_range(0..2usize),
            )
        })
        .collect();
    instants.sort();
    let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
    let rt = rt();
    let mut capture = manual_capture(bucket, hub.path(), &org, clock.clone());
    let progress = capture.progress();
    let mut compactor: Option<Compactor> = None;
    let mut segments = Vec::new();
    let mut refs = Vec::new();
    let mut next_compaction = spec.start + TimeDelta::minutes(5);
    // The wake-up times: bursts of commits a few seconds apart, quiet in between.
    let mut wakes: BTreeSet<Time> = BTreeSet::new();
    for h in 0..spec.hours {
        for _ in 0..spec.bursts_per_hour {
            let mut t = spec.start
                + TimeDelta::hours(h)
                + TimeDelta::milliseconds(rng.random_range(0..3_600_000));
            for _ in 0..rng.random_range(1..8) {
                wakes.insert(t);
                t += TimeDelta::milliseconds(rng.random_range(300..20_000));
            }
        }
    }
    wakes.insert(spec.start + TimeDelta::milliseconds(1));
    wakes.retain(|t| *t < end);
    let wakes: Vec<Time> = wakes.into_iter().collect();
    rt.block_on(async {
        for (k, t) in wakes.iter().enumerate() {
            clock.set(*t);
            if k > 0 {
                for db in dbs.iter_mut() {
                    if rng.random_range(0..3) > 0 {
                        db.commit(&mut rng);
                    }
                }
            }
            capture.step().await;
            // The state now holds until the next wake-up: references for instants in it.
            let until = wakes.get(k + 1).copied().unwrap_or(end);
            while instants.first().is_some_and(|(i, _)| *i < until) {
                let (i, d) = instants.remove(0);
                if i >= *t {
                    refs.push((i, d, dbs[d].image()));
                }
            }
            for (key, _) in progress.take_written(datahub) {
                if let Some(n) = StreamKeys::parse_segment(&key) {
                    segments.push(n.time);
                }
                if let Some(c) = compactor.as_mut() {
                    c.learn(&key, 0);
                }
            }
            if spec.compact && *t >= next_compaction {
                next_compaction += TimeDelta::minutes(5);
                let c = match compactor.as_mut() {
                    Some(c) => c,
                    None => {
                        compactor = Some(Compactor::load(bucket, &org, datahub).await.unwrap());
                        compactor.as_mut().unwrap()
                    }
                };
                let now = clock.now();
                let r = c.compact(now, now, None, false).await.unwrap();
                assert!(r.problems.is_empty(), "{:?}", r.problems);
            }
        }
        if spec.compact {
            // The next day has begun and its first minutes passed: everything finishes.
            clock.set(end + TimeDelta::minutes(3));
            let mut c = Compactor::load(bucket, &org, datahub).await.unwrap();
            let now = clock.now();
            let r = c.compact(now, now, None, false).await.unwrap();
            assert!(r.problems.is_empty(), "{:?}", r.problems);
        }
    });
    Sim {
        dbs,
        refs,
        segments,
        end,
        _hub: hub,
    }
}

/// Pages of a restored file against a reference image: equal except the header fields
/// a restore sets (journal mode bytes 18-19, change counter 24-27, version-valid-for and
/// SQLite version 92-99).
pub fn same_pages(restored: &[u8], reference: &[u8]) -> Result<(), String> {
    if restored.len() != reference.len() {
        return Err(format!(
            "{} bytes, reference {}",
            restored.len(),
            reference.len()
        ));
    }
    for (i, (a, b)) in restored.iter().zip(reference).enumerate() {
        let header = matches!(i, 18..=19 | 24..=27 | 92..=99);
        if a != b && !header {
            return Err(format!("byte {i} (page {}) differs", i / 4096 + 1));
        }
    }
    Ok(())
}

pub fn start_of_sim_day() -> Time {
    // Three days ago, 00:00 UTC: far enough back that nothing is still "recent".
    windows::day_of(chrono::Utc::now()) - TimeDelta::days(3)
}

/// Issue 14's Show: a day of simulated capture compacts into the expected levels, and
/// `restore --at` at 20 seeded instants equals the reference copies page for page, with
/// its requests counted (S3: through the proxy).
fn a_day_compacts_and_restores_exactly(tb: &TestBucket) {
    let seed = seed_of("a_day_of_capture");
    let bucket = tb.bucket();
    let spec = SimSpec {
        start: start_of_sim_day(),
        hours: 24,
        bursts_per_hour: 2,
        instants: 20,
        instants_after: None,
        compact: true,
    };
    let sim = simulate(&bucket, &spec, seed);
    assert_eq!(
        sim.refs.len(),
        20,
        "a reference copy at each of the 20 instants"
    );
    let hub = sim.dbs[0].spec.datahub;
    let prefix = format!("acme/stream/{hub}");
    let keys: Vec<String> = tb.keys(&prefix).into_iter().map(|(k, _)| k).collect();
    // The expected levels.
    let sk = StreamKeys::new(hubvault::model::ids::OrgSlug::parse("acme").unwrap(), hub);
    let minutes: BTreeSet<Time> = sim
        .segments
        .iter()
        .map(|t| windows::minute_of(*t))
        .collect();
    let mut want: BTreeSet<String> = minutes.iter().map(|m| sk.minute(*m).to_string()).collect();
    let settled = sim.end + TimeDelta::minutes(3);
    for m in &minutes {
        for kind in 0..windows::MARKS.len() {
            for (p, e) in windows::marks_of_parent(kind, windows::parent_of(kind, *m)) {
                // 1-minute marks go once their 10 minutes are long over.
                let kept = kind != windows::MINUTE_MARK
                    || p + TimeDelta::minutes(10) + hubvault::ops::compact::MINUTE_MARKS_KEPT
                        > settled;
                if e <= settled && kept {
                    want.insert(sk.mark(p, e).to_string());
                }
            }
        }
    }
    let got: BTreeSet<String> = keys
        .iter()
        .filter(|k| !k.contains("/base/"))
        .cloned()
        .collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
    assert!(
        !keys.iter().any(
            |k| StreamKeys::parse_segment(&object_store::path::Path::from(k.as_str())).is_some()
        ),
        "segments left"
    );
    // Bases: the one capture wrote, and one at the next day boundary per connector.
    for db in &sim.dbs {
        let b: Vec<&String> = keys
            .iter()
            .filter(|k| k.contains(&format!("/base/{}/", db.spec.connector)))
            .collect();
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(
            b.iter()
                .any(|k| k.contains(&hubvault::model::layout::stamp(sim.end))),
            "{b:?}"
        );
    }
    eprintln!(
        "a day: {} segments -> {} minutes, {} marks, {} refs",
        sim.segments.len(),
        minutes.len(),
        want.len() - minutes.len(),
        sim.refs.len()
    );

    // restore --at each instant: four at a time, each lane with its own counting proxy
    // (S3), so every restore's requests are counted alone.
    const LANES: usize = 4;
    let out = tempfile::tempdir().unwrap();
    let worst = std::sync::Mutex::new((0usize, 0usize));
    // What each restore needs (the databases' connections stay on this thread).
    let jobs: Vec<(Time, usize, Spec, &Vec<u8>)> = sim
        .refs
        .iter()
        .map(|(t, d, r)| (*t, *d, sim.dbs[*d].spec.clone(), r))
        .collect();
    std::thread::scope(|scope| {
        for lane in 0..LANES {
            let (jobs, out, worst) = (&jobs, &out, &worst);
            scope.spawn(move || {
                let proxy = (tb.kind == Kind::S3).then(Proxy::s3);
                for (n, (t, d, spec, reference)) in jobs.iter().enumerate() {
                    if n % LANES != lane {
                        continue;
                    }
                    let file = out.path().join(format!("r{n}.db"));
                    let mut c = restore_at_cmd(tb, proxy.as_ref(), spec, &file, *t);
                    let doc = json_of(&run(&mut c), 0);
                    let cont = &doc["restore"]["continuous"];
                    let want_sum = PageTable::of_image(4096, reference).checksum().hex();
                    assert_eq!(
                        cont["checksum"], want_sum,
                        "instant {t} connector {d}: {doc}"
                    );
                    let restored = std::fs::read(&file).unwrap();
                    if let Err(e) = same_pages(&restored, reference) {
                        panic!("instant {t} connector {d}: {e}");
                    }
                    let read = cont["segments_read"].as_u64().unwrap() as usize;
                    assert!(read <= 14, "instant {t}: {read} stream objects read: {doc}");
                    if let Some(p) = &proxy {
                        let reqs = p.requests();
                        let lists = reqs
                            .iter()
                            .filter(|(m, q)| m == "GET" && q.contains("list-type=2"))
                            .count();
                        let total = reqs.len();
                        assert!(
                            total <= 20 && lists <= 4,
                            "instant {t}: {total} requests ({lists} LIST): {reqs:?}"
                        );
                        let mut w = worst.lock().unwrap();
                        *w = (w.0.max(total), w.1.max(lists));
                    }
                }
            });
        }
    });
    if tb.kind == Kind::S3 {
        let w = worst.into_inner().unwrap();
        eprintln!(
            "restore --at: at most {} requests, {} of them LIST",
            w.0, w.1
        );
    }
}
both!(
    a_day_of_simulated_capture_compacts_into_the_expected_levels_and_restores_every_instant_exactly,
    a_day_compacts_and_restores_exactly
);

/// `hubvault prune --keep-within` on a stream no agent compacted: a dry run lists
/// exactly what the real run deletes and changes nothing; the real run compacts, writes
/// the day's base and deletes what lies before it; every instant inside the window still
/// restores exactly, one before it falls back to the kept versions; `versions` shows the
/// window.
fn prune_keeps_the_window(tb: &TestBucket) {
    let seed = seed_of("prune_keeps_the_window");
    let bucket = tb.bucket();
    let d = windows::day_of(chrono::Utc::now()) - TimeDelta::days(2);
    let spec = SimSpec {
        start: d - TimeDelta::minutes(50),
        hours: 2,
        bursts_per_hour: 8,
        instants: 16,
        instants_after: None,
        compact: false,
    };
    let sim = simulate(&bucket, &spec, seed);
    let hub = sim.dbs[0].spec.datahub;
    let cutoff = d + TimeDelta::minutes(20);
    let keep = format!("{}s", (chrono::Utc::now() - cutoff).num_seconds());
    let prefix = format!("acme/stream/{hub}");
    let prune = |dry: bool| {
        let mut c = tb.cmd();
        c.env("TMPDIR", private_tmp())
            .args(["prune", "--json", "--keep-within", &keep, "--datahub"])
            .arg(hub.to_string());
        if dry {
            c.arg("--dry-run");
        }
        json_of(&run(&mut c), 0)
    };
    let before = tb.keys(&prefix);
    let dry = prune(true);
    assert_eq!(tb.keys(&prefix), before, "a dry run changes nothing");
    let real = prune(false);
    let planned = &dry["stream"][0]["retained"]["delete"];
    let deleted = &real["stream"][0]["retained"]["delete"];
    assert_eq!(planned, deleted, "the dry run is the plan");
    assert!(deleted.as_array().unwrap().len() > 5, "{real}");
    assert_eq!(
        real["stream"][0]["compacted"]["problems"],
        serde_json::json!([])
    );
    assert_eq!(
        real["stream"][0]["retained"]["problems"],
        serde_json::json!([])
    );
    let after: Vec<String> = tb.keys(&prefix).into_iter().map(|(k, _)| k).collect();
    // Nothing before the day's base is left; its bases are the chain start.
    let sk = StreamKeys::new(hubvault::model::ids::OrgSlug::parse("acme").unwrap(), hub);
    for k in &after {
        let key = object_store::path::Path::from(k.as_str());
        if let Some(n) = StreamKeys::parse_segment(&key) {
            assert!(n.time >= d, "{k} left");
        }
        if let Some(w) = StreamKeys::parse_window(&key) {
            assert!(w.end > d, "{k} left");
        }
        if let Some(b) = StreamKeys::parse_base(&key) {
            assert!(b.time >= d, "{k} left");
        }
    }
    for db in &sim.dbs {
        assert!(
            after.contains(
                &sk.base(db.spec.connector, d, &base_generation(&after, db))
                    .to_string()
            ),
            "{after:?}"
        );
    }
    // Inside the window: exact. Before the day's base: the kept versions (none here).
    let out = tempfile::tempdir().unwrap();
    let mut inside = 0;
    for (n, (t, i, reference)) in sim.refs.iter().enumerate() {
        let s = &sim.dbs[*i].spec;
        let file = out.path().join(format!("p{n}.db"));
        let o = run(&mut restore_at_cmd(tb, None, s, &file, *t));
        if *t >= d {
            let doc = json_of(&o, 0);
            let want = PageTable::of_image(4096, reference).checksum().hex();
            assert_eq!(doc["restore"]["continuous"]["checksum"], want, "{t}");
            inside += 1;
        } else {
            let doc = json_of(&o, 1);
            assert!(
                doc["error"]
                    .as_str()
                    .unwrap()
                    .contains("no complete version"),
                "{t}: {doc}"
            );
        }
    }
    assert!(inside > 0);
    // versions: the window from the day's base on.
    let s = &sim.dbs[0].spec;
    let doc = json_of(
        &run(tb
            .cmd()
            .args(["versions", "--json", "--datahub"])
            .arg(s.datahub.to_string())
            .arg("--connector")
            .arg(s.connector.to_string())),
        0,
    );
    let w = &doc["continuous"];
    assert_eq!(
        w["from"].as_str().unwrap(),
        d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .replace("+00:00", "Z"),
        "{doc}"
    );
    assert!(w["objects"].as_u64().unwrap() >= 3, "{doc}");
    // The same window in text.
    let text = run(tb
        .cmd()
        .args(["versions", "--datahub"])
        .arg(s.datahub.to_string())
        .arg("--connector")
        .arg(s.connector.to_string()));
    let line = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        line.contains(&format!(
            "continuous: restorable to any instant from {} to ",
            d.format("%Y-%m-%d %H:%M:%S UTC")
        )) && line.contains(&format!("({} objects,", w["objects"])),
        "{line}"
    );
    // A second run finds nothing more to do.
    let again = prune(false);
    assert_eq!(
        again["stream"][0]["retained"]["delete"],
        serde_json::json!([])
    );
    assert_eq!(again["stream"][0]["compacted"]["minutes"], 0);
}
both!(
    prune_compacts_and_keeps_exactly_the_continuous_window,
    prune_keeps_the_window
);

/// The generation of a connector's base in a listing.
fn base_generation(keys: &[String], db: &SimDb) -> String {
    keys.iter()
        .filter(|k| k.contains(&format!("/base/{}/", db.spec.connector)))
        .find_map(|k| StreamKeys::parse_base(&object_store::path::Path::from(k.as_str())))
        .map(|b| b.generation)
        .unwrap()
}

/// The agent's compactor leaves a minute alone while a segment sent in it is still on its
/// way (an upload that keeps failing: the proxy refuses it), and compacts it once it
/// landed; the segment is retried as it was (same key), so the minute holds it once.
/// (S3 only: the failure is the proxy's.)
#[test]
fn the_agent_compactor_waits_for_a_segment_still_being_sent() {
    use hubvault::agent::compactor::{BackgroundCompactor, CompactorOptions};
    let proxy = Proxy::s3();
    let tb = TestBucket::s3();
    let settings = hubvault::store::s3::S3Settings {
        retries: 0,
        ..crate::proxy::short_settings()
    };
    let bucket = proxy.bucket(&tb, settings);
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = crate::common::connector_db(hub.path(), "sdc", 10);
    let w = rusqlite::Connection::open(&db).unwrap();
    w.execute_batch("CREATE TABLE cdc_rows(id INTEGER PRIMARY KEY, payload TEXT)")
        .unwrap();
    let t0 = windows::day_of(chrono::Utc::now()) - TimeDelta::days(1) + TimeDelta::hours(10);
    let clock = ManualClock::new(t0 + TimeDelta::seconds(10));
    let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
    let mut capture = manual_capture(&bucket, hub.path(), &org, clock.clone());
    let mut compactor = BackgroundCompactor::new(
        bucket.clone(),
        CompactorOptions {
            org,
            keep_within: std::time::Duration::from_secs(7 * 86_400),
            clock: clock.clone(),
            pass_every: hubvault::agent::compactor::PASS_EVERY,
        },
        capture.progress(),
    );
    let rt = rt();
    let sk = StreamKeys::new(
        hubvault::model::ids::OrgSlug::parse("acme").unwrap(),
        spec.datahub,
    );
    let prefix = sk.prefix().to_string();
    rt.block_on(async {
        capture.step().await; // the base
        w.execute("INSERT INTO cdc_rows VALUES (1, 'a')", [])
            .unwrap();
        clock.set(t0 + TimeDelta::seconds(20));
        proxy.inject("PUT", "/L0/", crate::proxy::Fault::Status500, 1000);
        capture.step().await; // the segment fails: in flight
        assert!(l0(&bucket, &prefix).await.is_empty());
        w.execute("INSERT INTO cdc_rows VALUES (2, 'b')", [])
            .unwrap();
        clock.set(t0 + TimeDelta::minutes(10));
        capture.step().await; // still failing; the new commit waits behind it
        let r = compactor.pass().await;
        assert_eq!(
            r.compacted[0].minutes, 0,
            "compacted around a segment in flight"
        );
        proxy.reset();
        clock.set(t0 + TimeDelta::minutes(10) + TimeDelta::seconds(1));
        capture.step().await; // lands (same key), then the next segment
        let segs = l0(&bucket, &prefix).await;
        assert_eq!(segs.len(), 2, "{segs:?}");
        assert!(segs[0].contains(&hubvault::model::layout::stamp(t0 + TimeDelta::seconds(20))));
        clock.set(t0 + TimeDelta::minutes(12));
        let r = compactor.pass().await;
        assert_eq!(r.compacted[0].minutes, 2, "{:?}", r.compacted);
        assert!(l0(&bucket, &prefix).await.is_empty());
        let p =
            hubvault::catalog::stream::plan(&bucket, &sk.org, spec.datahub, spec.connector, None)
                .await
                .unwrap()
                .unwrap();
        let image = tempfile::NamedTempFile::new_in(private_tmp()).unwrap();
        let built = hubvault::catalog::stream::build(&bucket, &p, image.path())
            .await
            .unwrap();
        assert_eq!(built.commits, 2);
    });
}

/// The segments (L0 also holds 1-minute marks and partial minutes).
async fn l0(b: &Bucket, prefix: &str) -> Vec<String> {
    b.list(&object_store::path::Path::from(format!("{prefix}/L0")))
        .await
        .unwrap()
        .into_iter()
        .filter(|o| StreamKeys::parse_segment(&o.key).is_some())
        .map(|o| o.key.to_string())
        .collect()
}

/// `--keep-within` outside 1h..3650d, or not a duration, is refused on `agent` and `prune`
/// before anything runs, naming the flag (exit 2).
#[test]
fn keep_within_out_of_range_is_refused_naming_the_flag() {
    let hub_root = tempfile::tempdir().unwrap();
    let root = hub_root.path().to_str().unwrap();
    for (cmd, v) in [
        ("agent", "30m"),
        ("agent", "soon"),
        ("prune", "20000d"),
        ("prune", "soon"),
    ] {
        let o = run(crate::common::hubvault()
            .env("HUBVAULT_BUCKET", "file:///nonexistent-hubvault-test")
            .env("HUBVAULT_ORG", "acme")
            .args([cmd, "--keep-within", v])
            // --once: were the value taken, the agent would end after one pass.
            .args(if cmd == "agent" {
                vec!["--once", "--hub-root", root]
            } else {
                vec![]
            }));
        assert_eq!(o.status.code(), Some(2), "{cmd} --keep-within {v}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--keep-within"), "{cmd} {v}: {err}");
    }
}

/// `hubvault restore --json --yes --at T --output FILE` of one connector, through `proxy`
/// when given (its count of requests reset first: each restore's requests alone).
fn restore_at_cmd(
    tb: &TestBucket,
    proxy: Option<&Proxy>,
    spec: &Spec,
    file: &std::path::Path,
    t: Time,
) -> std::process::Command {
    let mut c = match proxy {
        Some(p) => {
            p.reset();
            p.cmd(tb)
        }
        None => tb.cmd(),
    };
    c.env("TMPDIR", private_tmp());
    let mut c = restore_output(c, spec, file);
    c.args([
        "--at",
        &t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    ]);
    c
}

/// Requests a restore `--at` makes, counted: through the proxy (S3), and the plan's own
/// count (LIST requests, the base, the objects after it, the object after T) on both.
fn planned_requests(bucket: &Bucket, spec: &Spec, t: Time) -> (usize, u32) {
    rt().block_on(async {
        let p = hubvault::catalog::stream::plan(
            bucket,
            &hubvault::model::ids::OrgSlug::parse("acme").unwrap(),
            spec.datahub,
            spec.connector,
            Some(t),
        )
        .await
        .unwrap()
        .unwrap();
        (
            p.lists as usize + 1 + p.objects.len() + usize::from(p.straddler.is_some()),
            p.lists,
        )
    })
}

/// Issue 14's "any instant in <= 20 requests", for the newest instants at `--tick 1s`:
/// capture of a hub of two connectors from 17:50 to past 19:10 (a base, then every kind
/// of mark: 6-hour, hour, 10-minute, 1-minute), then minutes of a commit every second,
/// with the agent's compactor (`BackgroundCompactor::pass` every `PASS_EVERY`, partial
/// minutes included) on the driven clock. While a minute is being captured, instants in
/// it (the newest captured one, and earlier ones of the same minute) are restored with
/// `restore --at`: each equals its reference copy page for page, in at most 20 requests.
fn newest_instants_restore_in_twenty_requests(tb: &TestBucket) {
    use hubvault::agent::compactor::{BackgroundCompactor, CompactorOptions, PASS_EVERY};
    let seed = seed_of("newest_instants");
    let mut rng = StdRng::seed_from_u64(seed);
    let bucket = tb.bucket();
    let hub = tempfile::tempdir().unwrap();
    let mut dbs = sim_dbs(hub.path());
    let datahub = dbs[0].spec.datahub;
    let start = start_of_sim_day() + TimeDelta::minutes(17 * 60 + 50);
    let busy_from = start + TimeDelta::minutes(82); // 19:12
    let end = busy_from + TimeDelta::minutes(3);
    let clock = ManualClock::new(start);
    let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
    let rt = rt();
    let mut capture = manual_capture(&bucket, hub.path(), &org, clock.clone());
    let mut compactor = BackgroundCompactor::new(
        bucket.clone(),
        CompactorOptions {
            org,
            keep_within: std::time::Duration::from_secs(30 * 86_400),
            clock: clock.clone(),
            pass_every: PASS_EVERY,
        },
        capture.progress(),
    );
    let pass_every = TimeDelta::from_std(PASS_EVERY).unwrap();
    // Quiet at first (a burst of commits every few minutes), then a commit a second.
    let mut wakes: BTreeSet<Time> = BTreeSet::new();
    let mut t = start + TimeDelta::milliseconds(1);
    while t < busy_from {
        wakes.insert(t);
        t += TimeDelta::milliseconds(rng.random_range(1_000..240_000));
    }
    let mut t = busy_from + TimeDelta::milliseconds(rng.random_range(0..1_000));
    while t < end {
        wakes.insert(t);
        t += TimeDelta::seconds(1);
    }
    let mut next_pass = start + pass_every;
    let stride_from = rng.random_range(0..9usize);
    let out = tempfile::tempdir().unwrap();
    let proxy = (tb.kind == Kind::S3).then(Proxy::s3);
    // (instant, connector, reference image) of the minute being captured.
    let mut refs: Vec<(Time, usize, Vec<u8>)> = Vec::new();
    let (mut restored, mut worst, mut partials) = (0usize, (0usize, 0usize), 0usize);
    let wakes: Vec<Time> = wakes.into_iter().collect();
    for (k, w) in wakes.iter().enumerate() {
        // The agent's compactor passes on its own clock, between wake-ups too.
        while next_pass <= *w {
            clock.set(next_pass);
            let r = rt.block_on(compactor.pass());
            for c in &r.compacted {
                assert!(c.problems.is_empty(), "{:?}", c.problems);
                partials += c.partials;
            }
            next_pass += pass_every;
        }
        clock.set(*w);
        if k > 0 {
            for db in dbs.iter_mut() {
                db.commit(&mut rng);
            }
        }
        rt.block_on(capture.step());
        if *w < busy_from {
            continue;
        }
        // The state now holds until the next wake-up.
        let now = *w + TimeDelta::milliseconds(400);
        refs.retain(|(r, _, _)| windows::minute_of(*r) == windows::minute_of(now));
        if rng.random_range(0..4) == 0 {
            let d = rng.random_range(0..2usize);
            refs.push((now, d, dbs[d].image()));
        }
        // Every 9 s: over the passes' 10 s, every phase of a pass (right after one, right
        // before the next, a minute's first seconds) comes round.
        if (k + stride_from) % 9 != 0 {
            continue;
        }
        // Restore the newest instant, and one earlier in this minute when there is one.
        let newest = rng.random_range(0..2usize);
        let mut todo = vec![(now, newest, dbs[newest].image())];
        if refs.len() > 1 {
            let i = rng.random_range(0..refs.len() - 1);
            todo.push(refs[i].clone());
        }
        for (t, d, reference) in todo {
            let spec = &dbs[d].spec;
            let file = out.path().join(format!("n{restored}.db"));
            let mut c = restore_at_cmd(tb, proxy.as_ref(), spec, &file, t);
            let doc = json_of(&run(&mut c), 0);
            let cont = &doc["restore"]["continuous"];
            let want_sum = PageTable::of_image(4096, &reference).checksum().hex();
            assert_eq!(
                cont["checksum"], want_sum,
                "instant {t} connector {d}: {doc}"
            );
            if let Err(e) = same_pages(&std::fs::read(&file).unwrap(), &reference) {
                panic!("instant {t} connector {d}: {e}");
            }
            let (planned, lists) = planned_requests(&bucket, spec, t);
            assert!(
                planned <= 20,
                "instant {t}: {planned} requests planned ({lists} LIST): {doc}"
            );
            if let Some(p) = &proxy {
                let reqs = p.requests();
                assert!(
                    reqs.len() <= 20,
                    "instant {t}: {} requests: {reqs:?}",
                    reqs.len()
                );
                worst.1 = worst.1.max(reqs.len());
            }
            worst.0 = worst.0.max(planned);
            restored += 1;
        }
    }
    assert!(restored >= 20, "only {restored} restores");
    assert!(partials >= 10, "only {partials} partial minutes written");
    // The key set: every mark kind, partial minutes only of the minute being captured.
    let prefix = format!("acme/stream/{datahub}");
    let keys: Vec<String> = tb.keys(&prefix).into_iter().map(|(k, _)| k).collect();
    let windows_now: Vec<hubvault::model::layout::WindowName> = keys
        .iter()
        .filter_map(|k| StreamKeys::parse_window(&object_store::path::Path::from(k.as_str())))
        .collect();
    for kind in 0..windows::MARKS.len() {
        assert!(
            windows_now
                .iter()
                .any(|w| w.level == 2 && windows::mark_kind(w.start, w.end) == Some(kind)),
            "no mark of kind {kind}: {keys:?}"
        );
    }
    let partial_minutes: BTreeSet<Time> = windows_now
        .iter()
        .filter(|w| w.level == 1 && windows::is_partial(w.start, w.end))
        .map(|w| w.start)
        .collect();
    assert!(partial_minutes.len() <= 1, "{partial_minutes:?}");
    eprintln!(
        "newest instants: {restored} restores, at most {} requests planned, {} counted (S3), {partials} partial minutes written",
        worst.0, worst.1
    );
}
both!(
    the_newest_instants_at_tick_1s_restore_exactly_in_at_most_20_requests,
    newest_instants_restore_in_twenty_requests
);

/// A hub of two connectors captured at `--tick 1s` on a driven clock from 10:00:00.5 of
/// the simulated day, with the agent's compactor passing every 10 s (as the agent's).
struct BusyHub {
    bucket: Bucket,
    _hub: tempfile::TempDir,
    dbs: Vec<SimDb>,
    clock: std::sync::Arc<ManualClock>,
    org: hubvault::model::ids::OrgSlug,
    rt: tokio::runtime::Runtime,
    capture: Capture,
    compactor: hubvault::agent::compactor::BackgroundCompactor,
    t0: Time,
}

impl BusyHub {
    fn new(tb: &TestBucket) -> BusyHub {
        use hubvault::agent::compactor::{BackgroundCompactor, CompactorOptions, PASS_EVERY};
        let bucket = tb.bucket();
        let hub = tempfile::tempdir().unwrap();
        let dbs = sim_dbs(hub.path());
        let t0 = start_of_sim_day() + TimeDelta::hours(10) + TimeDelta::milliseconds(500);
        let clock = ManualClock::new(t0);
        let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
        let capture = manual_capture(&bucket, hub.path(), &org, clock.clone());
        let compactor = BackgroundCompactor::new(
            bucket.clone(),
            CompactorOptions {
                org: org.clone(),
                keep_within: std::time::Duration::from_secs(30 * 86_400),
                clock: clock.clone(),
                pass_every: PASS_EVERY,
            },
            capture.progress(),
        );
        BusyHub {
            bucket,
            _hub: hub,
            dbs,
            clock,
            org,
            rt: rt(),
            capture,
            compactor,
            t0,
        }
    }

    /// A commit a second on every connector for `seconds`, a pass every 10 s; returns
    /// connector `d`'s reference copy taken right after second `s_ref`'s commit.
    fn run(&mut self, rng: &mut StdRng, seconds: i64, d: usize, s_ref: i64) -> Vec<u8> {
        let mut reference = Vec::new();
        for s in 0..seconds {
            self.clock.set(self.t0 + TimeDelta::seconds(s));
            if s > 0 {
                for db in self.dbs.iter_mut() {
                    db.commit(rng);
                }
            }
            self.rt.block_on(self.capture.step());
            if s == s_ref {
                reference = self.dbs[d].image();
            }
            if s % 10 == 9 {
                let r = self.rt.block_on(self.compactor.pass());
                assert!(r.compacted[0].problems.is_empty(), "{:?}", r.compacted);
            }
        }
        reference
    }

    /// A new [`BusyHub`] [`run`](BusyHub::run) for `seconds` with the random source of
    /// `test`'s seed, and the reference copy of a connector `d` it chose at a second
    /// `s_ref` it drew from `s_refs`: (hub, seed, d, s_ref, reference copy).
    fn seeded_run(
        tb: &TestBucket,
        test: &str,
        seconds: i64,
        s_refs: std::ops::Range<i64>,
    ) -> (BusyHub, u64, usize, i64, Vec<u8>) {
        let seed = seed_of(test);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut h = BusyHub::new(tb);
        let d = rng.random_range(0..2usize);
        let s_ref = rng.random_range(s_refs);
        let reference = h.run(&mut rng, seconds, d, s_ref);
        (h, seed, d, s_ref, reference)
    }
}

/// The states a kill -9 can leave around a partial minute restore exactly, and the next
/// pass finishes them: (a) the minute written while its partial and every segment are
/// still there (the plan stands on the partial, without listing the minutes); (b) the
/// partial deleted and half the segments gone (the plan must list the minutes and take
/// the minute). Both restore an instant of that minute equal to its reference copy.
fn partial_minute_kill_states(tb: &TestBucket) {
    use hubvault::store::WriteMode;
    // A commit a second for 100 s, a pass every 10 s (the agent's); a reference copy of
    // one connector at an instant of the last minute (10:01:00.5 to 10:01:39.5).
    let (mut h, _, d, s_ref, reference) =
        BusyHub::seeded_run(tb, "partial_minute_kill_states", 100, 60..100);
    let BusyHub {
        bucket,
        dbs,
        clock,
        org,
        rt,
        compactor,
        t0,
        ..
    } = &mut h;
    let (bucket, dbs, clock, org, rt, t0) = (&*bucket, &*dbs, &*clock, &*org, &*rt, *t0);
    let datahub = dbs[0].spec.datahub;
    let m = windows::minute_of(clock.now());
    let t = t0 + TimeDelta::seconds(s_ref) + TimeDelta::milliseconds(400);
    assert_eq!(windows::minute_of(t), m);
    let spec = dbs[d].spec.clone();
    let build = |at: Time| {
        rt.block_on(async {
            let p = hubvault::catalog::stream::plan(bucket, org, datahub, spec.connector, Some(at))
                .await
                .unwrap()
                .unwrap();
            let lists = p.lists;
            let planned =
                p.lists as usize + 1 + p.objects.len() + usize::from(p.straddler.is_some());
            let image = tempfile::NamedTempFile::new_in(private_tmp()).unwrap();
            hubvault::catalog::stream::build(bucket, &p, image.path())
                .await
                .unwrap();
            (std::fs::read(image.path()).unwrap(), lists, planned)
        })
    };
    let newest_ref = dbs[d].image();
    let (before, lists, planned) = build(t);
    same_pages(&before, &reference).unwrap();
    assert!(planned <= 20, "{planned} requests planned");
    assert_eq!(
        lists, 2,
        "a partial proves the chain: no listing of the minutes"
    );
    let (now_img, _, _) = build(clock.now() + TimeDelta::milliseconds(400));
    same_pages(&now_img, &newest_ref).unwrap();
    // What a kill can leave: the minute's partial and segments, as they are now.
    let sk = StreamKeys::new(org.clone(), datahub);
    let of_minute: Vec<(object_store::path::Path, bytes::Bytes)> = rt.block_on(async {
        let mut out = Vec::new();
        for o in bucket.list(&sk.segments_dir()).await.unwrap() {
            let start = StreamKeys::parse_segment(&o.key)
                .map(|n| n.time)
                .or_else(|| {
                    StreamKeys::parse_window(&o.key)
                        .filter(|w| w.level == 1)
                        .map(|w| w.start)
                });
            if start.is_some_and(|s| windows::minute_of(s) == m) {
                out.push((o.key.clone(), bucket.get_bytes(&o.key).await.unwrap()));
            }
        }
        out
    });
    let partials = of_minute
        .iter()
        .filter(|(k, _)| StreamKeys::parse_window(k).is_some())
        .count();
    assert_eq!(partials, 1, "{of_minute:?}");
    // The minute is over and compacted: minute written, partial and segments deleted.
    clock.set(windows::minute_end(m) + TimeDelta::seconds(5));
    let r = rt.block_on(compactor.pass());
    assert_eq!(r.compacted[0].minutes, 1, "{:?}", r.compacted);
    // (a) Killed right after writing the minute: partial and segments all back.
    rt.block_on(async {
        for (k, b) in &of_minute {
            bucket
                .put_bytes(k, b.clone(), WriteMode::Overwrite)
                .await
                .unwrap();
        }
    });
    let (a, lists_a, planned_a) = build(t);
    assert_eq!(a, before, "state (a)");
    assert!(
        planned_a <= 20 && lists_a == 2,
        "{lists_a} LIST, {planned_a} requests"
    );
    // (b) Killed half-way through deleting: the partial gone, half the segments gone.
    rt.block_on(async {
        let mut segs = 0;
        for (k, _) in &of_minute {
            let is_partial = StreamKeys::parse_window(k).is_some();
            if is_partial || segs % 2 == 0 {
                bucket.delete(k).await.unwrap();
            }
            if !is_partial {
                segs += 1;
            }
        }
    });
    let (b, lists_b, planned_b) = build(t);
    assert_eq!(b, before, "state (b)");
    assert!(
        planned_b <= 20 && lists_b == 3,
        "{lists_b} LIST, {planned_b} requests"
    );
    // The next passes finish: nothing of that minute is left in L0.
    clock.set(windows::minute_end(m) + TimeDelta::hours(1) + TimeDelta::seconds(10));
    let r = rt.block_on(compactor.pass());
    assert!(r.compacted[0].problems.is_empty(), "{:?}", r.compacted);
    let left: Vec<String> = rt.block_on(async {
        bucket
            .list(&sk.segments_dir())
            .await
            .unwrap()
            .into_iter()
            .filter(|o| {
                StreamKeys::parse_segment(&o.key).is_some()
                    || StreamKeys::parse_window(&o.key).is_some_and(|w| w.level == 1)
            })
            .map(|o| o.key.to_string())
            .collect()
    });
    assert!(left.is_empty(), "{left:?}");
}
both!(
    a_partial_minute_left_by_a_kill_beside_its_minute_or_half_its_segments_restores_exactly,
    partial_minute_kill_states
);

/// Issue 14's "at most a handful of LIST requests for any instant": the planner's first
/// listing walks from the marks of the day before T through to the connector's bases,
/// which sort after every mark. 2,160 marks of later days (18 days of 10-minute marks;
/// a LIST page holds 1,000 keys) must not make a restore of T list them: the listing
/// stops at the end of its first page past T's marks and lists the bases apart, one LIST
/// more whatever the number of marks (S3: counted through the proxy), and the state is
/// the same.
fn old_instants_list_a_page_whatever_follows(tb: &TestBucket) {
    use hubvault::store::WriteMode;
    // A commit a second for 80 s and the agent's passes; a reference copy of one
    // connector at a seeded second.
    let (h, seed, d, s_ref, reference) = BusyHub::seeded_run(tb, "old_instants_list", 80, 5..75);
    let (bucket, dbs, org, rt, t0) = (&h.bucket, &h.dbs, &h.org, &h.rt, h.t0);
    let datahub = dbs[0].spec.datahub;
    let t = t0 + TimeDelta::seconds(s_ref) + TimeDelta::milliseconds(400);
    let spec = dbs[d].spec.clone();
    let proxy = (tb.kind == Kind::S3).then(Proxy::s3);
    let out = tempfile::tempdir().unwrap();
    // restore --at T: (plan's listings, LIST requests counted on S3).
    let restore = |n: usize| -> (u32, Option<usize>) {
        let lists = rt.block_on(async {
            hubvault::catalog::stream::plan(bucket, org, datahub, spec.connector, Some(t))
                .await
                .unwrap()
                .unwrap()
                .lists
        });
        let file = out.path().join(format!("r{n}.db"));
        let mut c = restore_at_cmd(tb, proxy.as_ref(), &spec, &file, t);
        let doc = json_of(&run(&mut c), 0);
        let restored = std::fs::read(&file).unwrap();
        if let Err(e) = same_pages(&restored, &reference) {
            panic!("seed {seed}, instant {t}: {e}: {doc}");
        }
        let counted = proxy.as_ref().map(|p| {
            p.requests()
                .iter()
                .filter(|(m, q)| m == "GET" && q.contains("list-type=2"))
                .count()
        });
        (lists, counted)
    };
    let (lists_before, counted_before) = restore(0);
    // 18 days of 10-minute marks (cumulative from each hour) from two days after T's
    // (never read: they start after T).
    let sk = StreamKeys::new(org.clone(), datahub);
    let day = windows::day_of(t);
    let keys: Vec<object_store::path::Path> = (2..20)
        .flat_map(|d| {
            (0..24 * 5).map(move |i| {
                let start = day + TimeDelta::days(d) + TimeDelta::hours(i / 5);
                (start, start + TimeDelta::minutes(10 * (i % 5 + 1)))
            })
        })
        .map(|(s, e)| sk.mark(s, e))
        .collect();
    assert_eq!(keys.len(), 2160);
    assert!(
        keys.iter()
            .all(|k| StreamKeys::parse_window(k).is_some_and(|w| w.level == 2))
    );
    rt.block_on(async {
        for chunk in keys.chunks(48) {
            let puts = chunk
                .iter()
                .map(|k| bucket.put_bytes(k, bytes::Bytes::new(), WriteMode::Overwrite));
            for r in futures::future::join_all(puts).await {
                r.unwrap();
            }
        }
    });
    let (lists_after, counted_after) = restore(1);
    assert_eq!(
        lists_after,
        lists_before + 1,
        "seed {seed}: the bases listed apart, the marks after T not walked"
    );
    if let (Some(b), Some(a)) = (counted_before, counted_after) {
        assert_eq!(a, b + 1, "seed {seed}: LIST requests before {b}, after {a}");
        assert!(a <= 4, "seed {seed}: {a} LIST");
    }
}
both!(
    a_restore_of_an_old_instant_lists_one_page_however_many_marks_follow_it,
    old_instants_list_a_page_whatever_follows
);

/// Issue 13 point 4: the state of a database larger than every buffer on the way (a
/// read chunk, a multipart part, the base reader's buffers) is built page by page in a
/// file, never in memory; this holds it to the same result. Two ~12 MB connectors (WAL
/// and rollback journal) of incompressible rows: capture's base (streamed from its
/// temp file), commits rewriting big rows, the compactor's day base (built into a file,
/// encoded as uploaded, read back streamed), and `restore --at` instants before and
/// after the day boundary (the first base, then the day base) equal their reference
/// copies page for page.
fn large_databases_restore_exactly(tb: &TestBucket) {
    let seed = seed_of("large_databases");
    let mut rng = StdRng::seed_from_u64(seed);
    let bucket = tb.bucket();
    let hub = tempfile::tempdir().unwrap();
    let mut dbs = sim_dbs(hub.path());
    grow_past_every_buffer(&mut dbs, &mut rng);
    let day = start_of_sim_day() + TimeDelta::days(1);
    let t0 = day - TimeDelta::minutes(2);
    let clock = ManualClock::new(t0);
    let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
    let datahub = dbs[0].spec.datahub;
    let mut capture = manual_capture(&bucket, hub.path(), &org, clock.clone());
    // (instant, connector, reference image)
    let mut refs: Vec<(Time, usize, Vec<u8>)> = Vec::new();
    let rt = rt();
    rt.block_on(async {
        capture.step().await;
        for at in [
            t0 + TimeDelta::seconds(30),
            t0 + TimeDelta::seconds(90),
            day + TimeDelta::seconds(30),
        ] {
            clock.set(at);
            for db in dbs.iter_mut() {
                // Big rows rewritten (pages all over the file), a few added.
                for _ in 0..40 {
                    let id = 1_000_000 + rng.random_range(0..1500i64);
                    db.conn
                        .execute(
                            "UPDATE cdc_rows SET payload = ?1 WHERE id = ?2",
                            rusqlite::params![random_blob(&mut rng), id],
                        )
                        .unwrap();
                }
                db.commit(&mut rng);
            }
            capture.step().await;
            for (i, db) in dbs.iter().enumerate() {
                refs.push((at + TimeDelta::seconds(5), i, db.image()));
            }
        }
        clock.set(day + TimeDelta::minutes(3));
        let mut c = Compactor::load(&bucket, &org, datahub).await.unwrap();
        let now = clock.now();
        let r = c.compact(now, now, None, false).await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.bases, 2, "a day base per connector: {r:?}");
    });
    for (i, db) in dbs.iter().enumerate() {
        let bases: Vec<(String, u64)> = tb
            .keys(&format!("acme/stream/{datahub}/base/{}", db.spec.connector))
            .into_iter()
            .collect();
        assert_eq!(bases.len(), 2, "connector {i}: {bases:?}");
        assert!(
            bases.iter().all(|(_, n)| *n > 8 << 20),
            "bases larger than a multipart part: {bases:?}"
        );
    }
    let out = tempfile::tempdir().unwrap();
    for (n, (t, i, reference)) in refs.iter().enumerate() {
        assert!(reference.len() > 10 << 20, "{} bytes", reference.len());
        let spec = &dbs[*i].spec;
        let file = out.path().join(format!("r{n}.db"));
        let mut c = restore_at_cmd(tb, None, spec, &file, *t);
        let doc = json_of(&run(&mut c), 0);
        let cont = &doc["restore"]["continuous"];
        assert_eq!(
            cont["checksum"],
            PageTable::of_image(4096, reference).checksum().hex(),
            "instant {t} connector {i}: {doc}"
        );
        let want_base = if *t > day {
            stamp_of(day)
        } else {
            stamp_of(t0)
        };
        assert!(
            cont["base"].as_str().unwrap().contains(&want_base),
            "instant {t}: restored from {}",
            cont["base"]
        );
        let restored = std::fs::read(&file).unwrap();
        if let Err(e) = same_pages(&restored, reference) {
            panic!("instant {t} connector {i}: {e}");
        }
    }
}
both!(
    restore_at_of_databases_larger_than_every_buffer_equals_the_reference_page_for_page,
    large_databases_restore_exactly
);

/// The brief's point 3: compaction of a minute holding a commit far larger than the
/// spill threshold (two ~12 MB connectors whose every big row is rewritten in one
/// transaction) reads the segments into temp files and writes the minute and the
/// 1-minute mark from them (the report's `spilled` counts the bytes that went through
/// `--tmp-dir`, none left there after), and `restore --at` an instant after the big
/// commit and one after a small commit that follows gives the same state, page for page,
/// before compaction (from the segments) and after (from the minute and the mark).
fn large_minute_compaction_spills(tb: &TestBucket) {
    let seed = seed_of("large_minute_compaction_spills");
    let mut rng = StdRng::seed_from_u64(seed);
    let bucket = tb.bucket();
    let hub = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let mut dbs = sim_dbs(hub.path());
    grow_past_every_buffer(&mut dbs, &mut rng);
    let m0 = start_of_sim_day() + TimeDelta::hours(5);
    let clock = ManualClock::new(m0 + TimeDelta::seconds(5));
    let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
    let datahub = dbs[0].spec.datahub;
    let mut capture = manual_capture(&bucket, hub.path(), &org, clock.clone());
    let mut refs: Vec<(Time, usize, Vec<u8>)> = Vec::new();
    let rt = rt();
    rt.block_on(async {
        capture.step().await;
        // Every big row rewritten in one transaction: one commit of ~12 MB a connector.
        clock.set(m0 + TimeDelta::seconds(20));
        for db in dbs.iter_mut() {
            let tx = db.conn.unchecked_transaction().unwrap();
            for i in 0..1500i64 {
                tx.execute(
                    "UPDATE cdc_rows SET payload = ?1 WHERE id = ?2",
                    rusqlite::params![random_blob(&mut rng), 1_000_000 + i],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        capture.step().await;
        for (i, db) in dbs.iter().enumerate() {
            refs.push((m0 + TimeDelta::seconds(25), i, db.image()));
        }
        // Then a small commit in the same minute.
        clock.set(m0 + TimeDelta::seconds(40));
        for db in dbs.iter_mut() {
            db.commit(&mut rng);
        }
        capture.step().await;
        for (i, db) in dbs.iter().enumerate() {
            refs.push((m0 + TimeDelta::seconds(45), i, db.image()));
        }
    });
    let out = tempfile::tempdir().unwrap();
    let check = |when: &str| {
        for (n, (t, i, reference)) in refs.iter().enumerate() {
            let file = out.path().join(format!("{when}{n}.db"));
            let mut c = restore_at_cmd(tb, None, &dbs[*i].spec, &file, *t);
            let doc = json_of(&run(&mut c), 0);
            assert_eq!(
                doc["restore"]["continuous"]["checksum"],
                PageTable::of_image(4096, reference).checksum().hex(),
                "{when}: instant {t} connector {i}: {doc}"
            );
            if let Err(e) = same_pages(&std::fs::read(&file).unwrap(), reference) {
                panic!("{when}: instant {t} connector {i}: {e}");
            }
        }
    };
    check("before compaction");
    rt.block_on(async {
        clock.set(m0 + TimeDelta::minutes(2));
        let mut c = Compactor::load(&bucket, &org, datahub).await.unwrap();
        c.set_tmp_dir(spool.path());
        let now = clock.now();
        let r = c.compact(now, now, None, false).await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(r.minutes >= 1 && r.marks >= 1, "{r:?}");
        assert!(
            r.segments_deleted >= 2,
            "the minute's segments are gone: {r:?}"
        );
        // The big commits' pages went through temp files: read (each segment's
        // sections), written (the minute's and the mark's sections).
        assert!(
            r.spilled > 24 << 20,
            "{} bytes through --tmp-dir: {r:?}",
            r.spilled
        );
    });
    let left: Vec<_> = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
    let objects = tb.keys(&format!("acme/stream/{datahub}/"));
    assert!(
        !objects.iter().any(|(k, _)| {
            StreamKeys::parse_segment(&object_store::path::Path::from(k.as_str())).is_some()
        }),
        "no segment left: {objects:?}"
    );
    check("after compaction");
}
both!(
    compaction_of_a_minute_larger_than_the_spill_threshold_spills_and_restores_exactly,
    large_minute_compaction_spills
);

fn stamp_of(t: Time) -> String {
    hubvault::model::layout::stamp(t)
}

/// 1,500 rows of 8,000 random bytes into each simulated database, one transaction each:
/// ~12 MB a database, larger than every buffer and than the spill threshold.
fn grow_past_every_buffer(dbs: &mut [SimDb], rng: &mut StdRng) {
    for db in dbs.iter_mut() {
        let tx = db.conn.unchecked_transaction().unwrap();
        for i in 0..1500i64 {
            tx.execute(
                "INSERT INTO cdc_rows VALUES (?1, ?2)",
                rusqlite::params![1_000_000 + i, random_blob(rng)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
}

/// 8,000 random bytes: a page and more, which no compression shrinks.
fn random_blob(rng: &mut StdRng) -> Vec<u8> {
    let mut b = vec![0u8; 8000];
    rand::Rng::fill_bytes(rng, &mut b);
    b
}

/// The chain start retention keeps is damaged: the real run deletes nothing it stands on
/// (it says so), and `--dry-run` must list exactly that, not what an intact base would
/// let go.
fn dry_run_of_retention_over_a_damaged_chain_start(tb: &TestBucket) {
    let seed = seed_of("dry_run_of_retention_over_a_damaged_chain_start");
    let bucket = tb.bucket();
    let d = windows::day_of(chrono::Utc::now()) - TimeDelta::days(2);
    let spec = SimSpec {
        start: d - TimeDelta::minutes(50),
        hours: 2,
        bursts_per_hour: 4,
        instants: 1,
        instants_after: None,
        compact: true,
    };
    let sim = simulate(&bucket, &spec, seed);
    let hub = sim.dbs[0].spec.datahub;
    let prefix = format!("acme/stream/{hub}");
    // The day's base of the first connector: the chain start of a cut-off after it.
    let day_base = tb
        .keys(&prefix)
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| {
            StreamKeys::parse_base(&object_store::path::Path::from(k.as_str()))
                .is_some_and(|b| b.time == d)
                && k.contains(&sim.dbs[0].spec.connector.to_string())
        })
        .expect("the day's base");
    rt().block_on(bucket.put_bytes(
        &object_store::path::Path::from(day_base.as_str()),
        b"not a base".to_vec(),
        hubvault::store::bucket::WriteMode::Overwrite,
    ))
    .unwrap();
    let cutoff = d + TimeDelta::minutes(20);
    let keep = format!("{}s", (chrono::Utc::now() - cutoff).num_seconds());
    let prune = |dry: bool| {
        let mut c = tb.cmd();
        c.env("TMPDIR", private_tmp())
            .args(["prune", "--json", "--keep-within", &keep, "--datahub"])
            .arg(hub.to_string());
        if dry {
            c.arg("--dry-run");
        }
        json_of(&run(&mut c), 0)
    };
    let dry = prune(true);
    let real = prune(false);
    let planned = &dry["stream"][0]["retained"]["delete"];
    let deleted = &real["stream"][0]["retained"]["delete"];
    assert!(
        real["stream"][0]["retained"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("cannot be read back")),
        "{real}"
    );
    assert_eq!(
        planned, deleted,
        "the dry run is the plan\ndry: {dry}\nreal: {real}"
    );
}
both!(
    prune_dry_run_over_a_damaged_chain_start_lists_what_the_real_run_deletes,
    dry_run_of_retention_over_a_damaged_chain_start
);

/// The hub's config file keeps a 30-day window (`keep_within = "30d"`, what its agent
/// keeps); an operator trims the kept versions there with `prune --keep-daily 1` and no
/// `--keep-within`. The stream's instants of ten days ago are inside that window and
/// must still restore: prune takes the file's window, as `agent` does, not 7d.
fn prune_on_the_hub_keeps_the_window_its_config_file_keeps(tb: &TestBucket) {
    let seed = seed_of("prune_on_the_hub_keeps_the_window_its_config_file_keeps");
    let bucket = tb.bucket();
    let spec = SimSpec {
        start: windows::day_of(chrono::Utc::now()) - TimeDelta::days(10) + TimeDelta::hours(1),
        hours: 1,
        bursts_per_hour: 4,
        instants: 4,
        instants_after: None,
        compact: true,
    };
    let sim = simulate(&bucket, &spec, seed);
    let hub = sim.dbs[0].spec.datahub;
    // The hub's agent has kept compacting since: a day base every day up to today.
    rt().block_on(async {
        let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
        let mut c = Compactor::load(&bucket, &org, hub).await.unwrap();
        let now = chrono::Utc::now();
        let r = c.compact(now, now, None, false).await.unwrap();
        assert!(r.bases + r.bases_copied >= 18, "{r:?}");
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hubvault.toml");
    std::fs::write(&config, "[retention]\nkeep_within = \"30d\"\n").unwrap();
    let doc = json_of(
        &run(tb
            .cmd()
            .env("TMPDIR", private_tmp())
            .env("HUBVAULT_CONFIG", &config)
            .args(["prune", "--json", "--keep-daily", "1", "--datahub"])
            .arg(hub.to_string())),
        0,
    );
    let out = tempfile::tempdir().unwrap();
    assert!(!sim.refs.is_empty());
    for (n, (t, i, reference)) in sim.refs.iter().enumerate() {
        let s = &sim.dbs[*i].spec;
        let file = out.path().join(format!("p{n}.db"));
        let restored = json_of(&run(&mut restore_at_cmd(tb, None, s, &file, *t)), 0);
        let want = PageTable::of_image(4096, reference).checksum().hex();
        assert_eq!(restored["restore"]["continuous"]["checksum"], want, "{t}");
    }
    assert_eq!(doc["keep_within"], "30days", "{doc}");
}
both!(
    prune_without_keep_within_takes_the_window_of_the_hubs_config_file,
    prune_on_the_hub_keeps_the_window_its_config_file_keeps
);
