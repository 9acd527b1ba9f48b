//! Continuous capture of one hub for a simulated span, with the agent's compaction and
//! retention, counting every request the bucket would be sent (issue 14's benchmark;
//! numbers and the extrapolation to a month in docs/BENCHMARKS.md).
//!
//! `stream_month DIR DAYS TICK_SECONDS [CONNECTORS] [KEEP_WITHIN_DAYS [FULL_DAYS QUIET_SECONDS]]`
//!
//! A hub of CONNECTORS (4) connector databases under DIR (the demo's schema, WAL,
//! synchronous=NORMAL) each committing once a second on average (TICK commits a tick: one
//! event row of ~250 bytes, and the status of an older event updated; every hour the
//! events older than two days deleted). The real capture (`Capture::step`) and the agent's
//! compactor (`BackgroundCompactor::pass`, every 10 simulated seconds) run on a clock
//! driven by this program for exactly DAYS days, against an in-memory bucket wrapped in a
//! store that counts what S3 would be sent: PUT, COPY, GET, HEAD, LIST (one per 1,000
//! keys listed), DELETE. Requests per month are the last whole simulated day × 30; with
//! KEEP_WITHIN_DAYS = 1 and DAYS >= 2 retention runs during that day. Prints one JSON
//! document (progress on stderr).
//!
//! **Quiet mode** (FULL_DAYS given, below DAYS): the full rate only for the first
//! FULL_DAYS, then each connector commits once every QUIET_SECONDS (0: never) until DAYS,
//! the clock jumping from one commit to the next (at least every 10 minutes, so the
//! compactor's passes still write every mark and day base). That reaches day 30 in
//! minutes, to restore an instant 29 days back inside a 30-day window (KEEP_WITHIN_DAYS =
//! 30): what such a restore reads is the day's base and the objects of that day, the same
//! whatever the later days held. Requests per month are then taken from the last whole
//! day at the full rate (FULL_DAYS >= 2 has one), not from the quiet days.

#[path = "../src/cli/fixture.rs"]
#[allow(dead_code)]
mod fixture;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::TimeDelta;
use futures::StreamExt;
use futures::stream::BoxStream;
use hubvault::agent::capture::{Capture, CaptureOptions};
use hubvault::agent::compactor::{BackgroundCompactor, CompactorOptions};
use hubvault::agent::metrics::Metrics;
use hubvault::catalog::stream;
use hubvault::clock::{Clock, ManualClock};
use hubvault::model::ids::OrgSlug;
use hubvault::model::windows;
use hubvault::store::Bucket;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

#[derive(Debug, Default)]
struct Counts {
    put: AtomicU64,
    copy: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    get_bytes: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("PUT", self.put.load(Ordering::Relaxed)),
            ("COPY", self.copy.load(Ordering::Relaxed)),
            ("GET", self.get.load(Ordering::Relaxed)),
            ("HEAD", self.head.load(Ordering::Relaxed)),
            ("LIST", self.list.load(Ordering::Relaxed)),
            ("DELETE", self.delete.load(Ordering::Relaxed)),
        ])
    }
}

/// A store that counts the S3 requests each call stands for.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    n: Arc<Counts>,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

/// A listing in key order, counted as S3 pages it: one request when it is first read,
/// one more for every 1,000 keys read past the first 1,000 (a reader that stops early
/// stops paying, as on S3).
fn counted_list(
    s: BoxStream<'static, object_store::Result<ObjectMeta>>,
    n: Arc<Counts>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    let sorted = async move {
        let mut all: Vec<object_store::Result<ObjectMeta>> = s.collect().await;
        all.sort_by(|a, b| match (a, b) {
            (Ok(a), Ok(b)) => a.location.cmp(&b.location),
            _ => std::cmp::Ordering::Equal,
        });
        futures::stream::iter(all)
    };
    let counter = n.clone();
    let mut seen = 0u64;
    futures::stream::once(async move {
        counter.list.fetch_add(1, Ordering::Relaxed);
    })
    .filter_map(|_| async { None })
    .chain(futures::stream::once(sorted).flatten())
    .inspect(move |_| {
        seen += 1;
        if seen > 1000 && seen % 1000 == 1 {
            n.list.fetch_add(1, Ordering::Relaxed);
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.n.put.fetch_add(1, Ordering::Relaxed);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.n.put.fetch_add(1, Ordering::Relaxed);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head {
            self.n.head.fetch_add(1, Ordering::Relaxed);
        } else {
            self.n.get.fetch_add(1, Ordering::Relaxed);
        }
        let r = self.inner.get_opts(location, options).await?;
        self.n.get_bytes.fetch_add(r.meta.size, Ordering::Relaxed);
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.n.get.fetch_add(ranges.len() as u64, Ordering::Relaxed);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let n = self.n.clone();
        self.inner.delete_stream(
            locations
                .inspect(move |_| {
                    n.delete.fetch_add(1, Ordering::Relaxed);
                })
                .boxed(),
        )
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        counted_list(self.inner.list(prefix), self.n.clone())
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        counted_list(self.inner.list_with_offset(prefix, offset), self.n.clone())
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.n.list.fetch_add(1, Ordering::Relaxed);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.n.copy.fetch_add(1, Ordering::Relaxed);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.n.copy.fetch_add(1, Ordering::Relaxed);
        self.inner.rename_opts(from, to, options).await
    }
}

struct Conn {
    db: rusqlite::Connection,
    next: i64,
}

fn usage() -> ! {
    eprintln!(
        "usage: stream_month DIR DAYS TICK_SECONDS [CONNECTORS] [KEEP_WITHIN_DAYS [FULL_DAYS QUIET_SECONDS]]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        usage();
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let days: i64 = args[2].parse().unwrap_or_else(|_| usage());
    let tick: i64 = args[3].parse().unwrap_or_else(|_| usage());
    let n_conn: usize = args
        .get(4)
        .map_or(4, |s| s.parse().unwrap_or_else(|_| usage()));
    let keep_days: i64 = args
        .get(5)
        .map_or(7, |s| s.parse().unwrap_or_else(|_| usage()));
    // Quiet mode: (full-rate days, seconds between a connector's commits after them).
    let quiet: Option<(i64, i64)> = match (args.get(6), args.get(7)) {
        (None, None) => None,
        (Some(f), Some(q)) => Some((
            f.parse().unwrap_or_else(|_| usage()),
            q.parse().unwrap_or_else(|_| usage()),
        )),
        _ => usage(),
    };
    if quiet.is_some_and(|(f, q)| f < 1 || f >= days || q < 0) {
        usage();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (hub_root, tmp) = (dir.join("hub"), dir.join("tmp"));
    for d in [&hub_root, &tmp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let counts = Arc::new(Counts::default());
    // The bucket in memory: what is measured is requests and bytes, not this machine's
    // file system (a local directory made the run I/O-bound on a shared disk).
    let mem = Arc::new(object_store::memory::InMemory::new());
    let store: Arc<dyn ObjectStore> = Arc::new(Counting {
        inner: mem.clone(),
        n: counts.clone(),
    });
    let bucket = Bucket::from_store(store, "memory://bench").with_sorted_listings();
    let org = OrgSlug::parse("acme").unwrap();

    // The hub.
    let datahub = hubvault::model::ids::DatahubId::random();
    let mut conns = Vec::new();
    let mut specs = Vec::new();
    for i in 0..n_conn {
        let (ty, name) = fixture::CONNECTOR_TYPES[i % 4];
        let mut s = fixture::Spec::new(ty, name, 2000);
        s.datahub = datahub;
        let d = hub_root.join(s.connector.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("sqlite.db");
        fixture::create(&path, &s).unwrap();
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "PRAGMA journal_mode=wal; PRAGMA synchronous=NORMAL;
             CREATE TABLE feed(id INTEGER PRIMARY KEY, at INTEGER, status TEXT, payload TEXT);
             CREATE INDEX feed_at ON feed(at);",
        )
        .unwrap();
        conns.push(Conn { db, next: 0 });
        specs.push(s);
    }

    // The month, ending now.
    // Exactly DAYS days, ending at an odd time of day (the restores' instants then fall
    // inside windows, not on their edges).
    let start = windows::day_of(chrono::Utc::now() - TimeDelta::days(days + 1))
        + TimeDelta::minutes(14 * 60 + 47)
        + TimeDelta::seconds(13);
    let end = start + TimeDelta::days(days);
    let clock = ManualClock::new(start);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut capture = Capture::new(
        bucket.clone(),
        CaptureOptions {
            hub_root: hub_root.clone(),
            org: org.clone(),
            tick: std::time::Duration::from_secs(tick as u64),
            tmp_dir: Some(tmp.clone()),
            clock: clock.clone(),
        },
        Metrics::new("acme"),
    );
    let mut compactor = BackgroundCompactor::new(
        bucket.clone(),
        CompactorOptions {
            org: org.clone(),
            keep_within: std::time::Duration::from_secs(keep_days as u64 * 86_400),
            clock: clock.clone(),
            pass_every: hubvault::agent::compactor::PASS_EVERY,
        },
        capture.progress(),
    );
    let wall = Instant::now();
    let mut rng_state: u64 = 0x9e3779b97f4a7c15;
    let mut rand = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut daily: Vec<serde_json::Value> = Vec::new();
    let mut next_pass = start;
    let mut next_hour = start + TimeDelta::hours(1);
    let mut next_day = windows::day_of(start) + TimeDelta::days(1);
    let mut at_day: BTreeMap<i64, BTreeMap<&'static str, u64>> = BTreeMap::new();
    // The midnight of each snapshot in `at_day`.
    let mut day_at: BTreeMap<i64, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    let full_end = quiet.map(|(f, _)| start + TimeDelta::days(f));
    let quiet_seconds = quiet.map_or(0, |(_, q)| q);
    rt.block_on(async {
        let mut now = start;
        let mut first = true;
        loop {
            clock.set(now);
            let quiet_now = full_end.is_some_and(|f| now > f);
            // Commits per connector at this wake-up: a tick's worth at the full rate; one
            // (or none) in the quiet days.
            let commits = match (first, quiet_now) {
                (true, _) => 0,
                (false, false) => tick,
                (false, true) => i64::from(quiet_seconds > 0),
            };
            first = false;
            {
                for c in conns.iter_mut() {
                    for _ in 0..commits {
                        let payload = format!(
                            "{{\"order\":\"{:016x}\",\"sample\":\"S-{}\",\"state\":\"queued\",\"note\":\"{}\"}}",
                            rand(),
                            c.next,
                            "x".repeat((rand() % 120) as usize)
                        );
                        let tx = c.db.unchecked_transaction().unwrap();
                        tx.execute(
                            "INSERT INTO feed VALUES (?1, ?2, 'PENDING', ?3)",
                            rusqlite::params![c.next, now.timestamp(), payload],
                        )
                        .unwrap();
                        tx.execute(
                            "UPDATE feed SET status = 'UPLOADED' WHERE id = ?1",
                            [c.next - 30],
                        )
                        .unwrap();
                        tx.commit().unwrap();
                        c.next += 1;
                    }
                }
            }
            if now >= next_hour {
                next_hour += TimeDelta::hours(1);
                for c in &conns {
                    c.db.execute(
                        "DELETE FROM feed WHERE at < ?1",
                        [(now - TimeDelta::days(2)).timestamp()],
                    )
                    .unwrap();
                }
            }
            capture.step().await;
            if now >= next_pass {
                next_pass = (next_pass + TimeDelta::seconds(10)).max(now);
                let _ = compactor.pass().await;
            }
            if now >= next_day {
                let d = (now - start).num_days();
                at_day.insert(d, counts.snapshot());
                day_at.insert(d, next_day);
                next_day += TimeDelta::days(1);
                let (objects, bytes) = stored(&mem);
                daily.push(serde_json::json!({"day": d, "objects": objects, "bytes": bytes, "wall_s": wall.elapsed().as_secs()}));
                eprintln!("day {d}: {objects} objects, {bytes} bytes, {:?} wall", wall.elapsed());
            }
            if now >= end {
                break;
            }
            // The next wake-up: a tick at the full rate; in the quiet days the next
            // commit, at most 10 minutes on.
            let step = if full_end.is_some_and(|f| now >= f) {
                match quiet_seconds {
                    0 => 600,
                    q => q.min(600),
                }
            } else {
                tick
            };
            now = (now + TimeDelta::seconds(step)).min(end);
        }
    });
    let total = counts.snapshot();
    let (objects, bytes) = stored(&mem);
    let levels = by_level(&mem);

    // Requests per 30 days, from the last whole day simulated (midnight to midnight, UTC):
    // by then retention runs (with KEEP_WITHIN_DAYS = 1 from the second midnight on), and
    // a day holds every kind of work (segments, minutes, marks, the day's bases), so a
    // month is 30 of them. Retention's own requests are DELETEs (free on S3) and one GET a
    // day: the figure does not depend on the window's length.
    // In quiet mode, the last whole day at the full rate: the snapshots up to the last
    // midnight before the full rate ends.
    let snaps: Vec<&BTreeMap<&str, u64>> = at_day
        .iter()
        .filter(|(d, _)| full_end.is_none_or(|f| day_at[d] <= f))
        .map(|(_, v)| v)
        .collect();
    // The last whole quiet day's requests (quiet mode).
    let quiet_day: Option<BTreeMap<&str, u64>> = full_end.and_then(|_| {
        let v: Vec<&BTreeMap<&str, u64>> = at_day.values().collect();
        let n = v.len();
        (n >= 2).then(|| {
            v[n - 1]
                .iter()
                .map(|(k, x)| (*k, x - v[n - 2][k]))
                .collect()
        })
    });
    let (from, to, span) = match snaps.len() {
        0 | 1 if full_end.is_some() => {
            eprintln!("quiet mode: no whole day at the full rate (FULL_DAYS >= 2 has one)");
            (BTreeMap::new(), BTreeMap::new(), 1.0)
        }
        0 => (
            BTreeMap::new(),
            total.clone(),
            (end - start).num_seconds() as f64 / 86_400.0,
        ),
        1 => (
            snaps[0].clone(),
            total.clone(),
            (end - windows::day_of(end)).num_seconds() as f64 / 86_400.0,
        ),
        n => (snaps[n - 2].clone(), snaps[n - 1].clone(), 1.0),
    };
    let per_month: BTreeMap<&str, f64> = to
        .iter()
        .map(|(k, v)| {
            (
                *k,
                (*v - from.get(k).copied().unwrap_or(0)) as f64 * 30.0 / span,
            )
        })
        .collect();
    let pm = |k: &str| per_month.get(k).copied().unwrap_or(0.0);
    let class_a = pm("PUT") + pm("COPY") + pm("LIST");
    let class_b = pm("GET") + pm("HEAD");
    let req_cost = class_a * 0.005 / 1000.0 + class_b * 0.0004 / 1000.0;
    let storage_cost = bytes as f64 / 1e9 * 0.023;
    // The stored window projected to a 7-day one (labelled as such in BENCHMARKS.md): the
    // minutes and marks held, per day held (from the oldest minute kept to the end), times
    // 7.5 (the window plus, on average, half a day back to its day base), plus 8.5 days of
    // day bases (their size as measured).
    let oldest_minute = list_objects(&mem)
        .iter()
        .filter(|(k, _)| k.contains("/L1/"))
        .filter_map(|(k, _)| k.rsplit('/').next()?.get(..13).map(str::to_string))
        .min()
        .and_then(|t| chrono::NaiveDateTime::parse_from_str(&t, "%Y%m%dT%H%M").ok())
        .map(|t| t.and_utc());
    let held_days = oldest_minute.map_or(1.0, |t| (end - t).num_seconds() as f64 / 86_400.0);
    let l = |k: &str| levels.get(k).copied().unwrap_or((0, 0));
    let window_per_day = (l("L1").1 + l("L2").1) as f64 / held_days;
    let base_each = l("base").1 as f64 / l("base").0.max(1) as f64;
    let projected_7d = window_per_day * 7.5 + base_each * n_conn as f64 * 8.5 + l("other").1 as f64;

    // Restores at 1 h, 1 day, 29 days back (29 days is outside a 7-day window).
    let mut restores = Vec::new();
    for (label, back) in [
        ("now", TimeDelta::zero()),
        ("1h", TimeDelta::hours(1)),
        ("1d", TimeDelta::days(1)),
        ("29d", TimeDelta::days(29)),
    ] {
        let t = clock.now() - back;
        let before = counts.snapshot();
        let b0 = counts.get_bytes.load(Ordering::Relaxed);
        let started = Instant::now();
        let got = rt.block_on(async {
            let at = (!back.is_zero()).then_some(t);
            let p = stream::plan(&bucket, &org, datahub, specs[0].connector, at)
                .await
                .unwrap();
            match p {
                Some(p) => {
                    let image = tempfile::NamedTempFile::new().unwrap();
                    let built = stream::build(&bucket, &p, image.path()).await.unwrap();
                    Some((
                        p.segments,
                        built.commits,
                        built.pages as usize * built.page_size as usize,
                        built.state_time,
                        p.base_time,
                    ))
                }
                None => None,
            }
        });
        let took = started.elapsed();
        let after = counts.snapshot();
        let reqs: BTreeMap<&str, u64> = after
            .iter()
            .map(|(k, v)| (*k, v - before[k]))
            .filter(|(_, v)| *v > 0)
            .collect();
        restores.push(serde_json::json!({
            "back": label,
            "from_stream": got.is_some(),
            "objects_after_base": got.map(|g| g.0),
            "image_bytes": got.map(|g| g.2),
            "at": (!back.is_zero()).then(|| t.to_rfc3339()),
            "state_time": got.map(|g| g.3.to_rfc3339()),
            "base_time": got.map(|g| g.4.to_rfc3339()),
            "requests": reqs,
            "bytes_read": counts.get_bytes.load(Ordering::Relaxed) - b0,
            "seconds": took.as_secs_f64(),
        }));
    }
    let doc = serde_json::json!({
        "days": days,
        "tick_seconds": tick,
        "connectors": n_conn,
        "commits_per_second_per_connector": 1,
        "keep_within_days": keep_days,
        "quiet_mode": quiet.map(|(f, q)| serde_json::json!({
            "full_rate_days": f,
            "quiet_commit_every_seconds_per_connector": q,
            "requests_per_month_from": "the last whole day at the full rate",
            "requests_last_quiet_day": quiet_day,
        })),
        "wall_seconds": wall.elapsed().as_secs(),
        "stored": {"objects": objects, "bytes": bytes, "by_level": levels,
            "window_days_held": held_days,
            "projected_bytes_keep_within_7d": projected_7d,
            "projected_storage_usd_keep_within_7d": projected_7d / 1e9 * 0.023},
        "requests_total": total,
        "requests_per_month_steady": per_month,
        "cost_per_month": {
            "requests_usd": req_cost,
            "storage_usd": storage_cost,
            "per_connector_usd": (req_cost + storage_cost) / n_conn as f64,
        },
        "restore": restores,
        "daily": daily,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap());
}

/// Every object in the bucket (uncounted): key and size.
fn list_objects(mem: &object_store::memory::InMemory) -> Vec<(String, u64)> {
    // An in-memory listing is ready at once (no runtime needed, so callable in one).
    let all: Vec<_> = futures::FutureExt::now_or_never(mem.list(None).collect::<Vec<_>>())
        .expect("an in-memory listing is ready at once");
    all.into_iter()
        .map(|m| {
            let m = m.unwrap();
            (m.location.to_string(), m.size)
        })
        .collect()
}

/// Objects and bytes in the bucket.
fn stored(mem: &object_store::memory::InMemory) -> (u64, u64) {
    let all = list_objects(mem);
    (all.len() as u64, all.iter().map(|o| o.1).sum())
}

fn by_level(mem: &object_store::memory::InMemory) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (s, len) in list_objects(mem) {
        let level = if s.contains("/stream/") {
            ["/L0/", "/L1/", "/L2/", "/base/"]
                .iter()
                .find(|l| s.contains(**l))
                .map_or("markers", |l| l.trim_matches('/'))
        } else {
            "other"
        };
        let e = out.entry(level.to_string()).or_default();
        e.0 += 1;
        e.1 += len;
    }
    out
}
