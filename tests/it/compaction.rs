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
use crate::common::{Kind, TestBucket, json_of, private_tmp, rt, run};
use crate::fixture::Spec;
use crate::proxy::Proxy;

type Time = chrono::DateTime<chrono::Utc>;

pub fn seed_of(test: &str) -> u64 {
    let seed = std::env::var("HUBVAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
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
    fn commit(&mut self, rng: &mut StdRng) {
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

    /// The database's state as a page image (WAL: checkpointed into the file first).
    fn image(&self) -> Vec<u8> {
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

/// Simulates `spec.hours` of capture of a hub of two connectors into `bucket`.
pub fn simulate(bucket: &Bucket, spec: &SimSpec, seed: u64) -> Sim {
    let mut rng = StdRng::seed_from_u64(seed);
    let hub = tempfile::tempdir().unwrap();
    let datahub = hubvault::model::ids::DatahubId::random();
    let mut dbs = Vec::new();
    for (i, ty) in ["sdc", "solace"].into_iter().enumerate() {
        let mut s = Spec::new(ty, &format!("{ty} simulated"), 30);
        s.datahub = datahub;
        let dir = hub.path().join(s.connector.to_string());
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
    let mut capture = Capture::new(
        bucket.clone(),
        CaptureOptions {
            hub_root: hub.path().to_path_buf(),
            org: org.clone(),
            tick: std::time::Duration::from_secs(1),
            tmp_dir: Some(private_tmp().to_path_buf()),
            clock: clock.clone(),
        },
        Metrics::new("acme"),
    );
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
                if e <= settled {
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
    assert!(!keys.iter().any(|k| k.contains("/L0/")), "segments left");
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
                    let mut c = match &proxy {
                        Some(p) => {
                            p.reset();
                            p.cmd(tb)
                        }
                        None => tb.cmd(),
                    };
                    c.env("TMPDIR", private_tmp())
                        .args(["restore", "--json", "--yes", "--datahub"])
                        .arg(spec.datahub.to_string())
                        .arg("--connector")
                        .arg(spec.connector.to_string())
                        .arg("--output")
                        .arg(&file)
                        .args([
                            "--at",
                            &t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        ]);
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
        let o = run(tb
            .cmd()
            .env("TMPDIR", private_tmp())
            .args(["restore", "--json", "--yes", "--datahub"])
            .arg(s.datahub.to_string())
            .arg("--connector")
            .arg(s.connector.to_string())
            .arg("--output")
            .arg(&file)
            .args([
                "--at",
                &t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ]));
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
    let mut capture = Capture::new(
        bucket.clone(),
        CaptureOptions {
            hub_root: hub.path().to_path_buf(),
            org: org.clone(),
            tick: std::time::Duration::from_secs(1),
            tmp_dir: Some(private_tmp().to_path_buf()),
            clock: clock.clone(),
        },
        Metrics::new("acme"),
    );
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
        let built = hubvault::catalog::stream::build(&bucket, &p).await.unwrap();
        assert_eq!(built.commits, 2);
    });
}

async fn l0(b: &Bucket, prefix: &str) -> Vec<String> {
    b.list(&object_store::path::Path::from(format!("{prefix}/L0")))
        .await
        .unwrap()
        .into_iter()
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
