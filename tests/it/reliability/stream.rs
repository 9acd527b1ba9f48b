//! kill -9 at random points of compaction and retention of the continuous stream
//! (`hubvault prune --keep-within`, issue 14).
//!
//! Claim: whenever `prune` dies, every instant inside the kept window still restores to
//! exactly its reference state (chain checked, page for page through the chain
//! checksum), and what a killed run left never breaks a later one: the next run finishes
//! without a problem, a second has nothing left to do.
//!
//! Each run starts from the same bucket state: an hour of capture across a midnight two
//! days ago, nothing compacted; the cut-off fifteen minutes after that midnight, so a run
//! compacts minutes, writes marks, writes the day's bases and deletes the day before.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use futures::StreamExt;
use hubvault::catalog::stream;
use hubvault::model::stream::PageTable;
use hubvault::model::windows;
use hubvault::store::WriteMode;
use object_store::path::Path as Key;
use rand::RngExt;

use super::{Deadline, count, figures, rng};
use crate::both;
use crate::common::{TestBucket, json_of, private_tmp, rt, run};
use crate::compaction::{SimSpec, simulate};

type Time = chrono::DateTime<chrono::Utc>;

/// Every object under `prefix`, with its bytes.
fn snapshot(tb: &TestBucket, prefix: &str) -> Vec<(String, bytes::Bytes)> {
    let b = tb.bucket();
    let keys: Vec<String> = tb.keys(prefix).into_iter().map(|(k, _)| k).collect();
    rt().block_on(async {
        futures::stream::iter(keys)
            .map(|k| {
                let b = b.clone();
                async move {
                    let v = b.get_bytes(&Key::from(k.as_str())).await.unwrap();
                    (k, v)
                }
            })
            .buffered(16)
            .collect()
            .await
    })
}

/// Puts the bucket's `prefix` back to `snap` exactly: deletes what is not in it and puts
/// back what is missing or differs in size (every stream object is written once at its
/// key by one atomic PUT, so a key of the right size holds the right bytes); a local
/// store's staging files a killed upload left are removed. Only the difference travels:
/// each run stays cheap on S3.
fn reset(tb: &TestBucket, prefix: &str, snap: &[(String, bytes::Bytes)]) {
    if let Some(d) = &tb.dir {
        remove_staging(&d.path().join(prefix));
    }
    let b = tb.bucket();
    let want: BTreeMap<&str, &bytes::Bytes> = snap.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let now: BTreeMap<String, u64> = tb.keys(prefix).into_iter().collect();
    let extra: Vec<String> = now
        .keys()
        .filter(|k| !want.contains_key(k.as_str()))
        .cloned()
        .collect();
    let missing: Vec<(String, bytes::Bytes)> = snap
        .iter()
        .filter(|(k, v)| now.get(k) != Some(&(v.len() as u64)))
        .cloned()
        .collect();
    rt().block_on(async {
        futures::stream::iter(extra)
            .map(|k| {
                let b = b.clone();
                async move { b.delete(&Key::from(k.as_str())).await.unwrap() }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        futures::stream::iter(missing)
            .map(|(k, v)| {
                let b = b.clone();
                async move {
                    b.put_bytes(&Key::from(k.as_str()), v, WriteMode::Overwrite)
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    });
}

/// Removes the staging files (`name#n`) a killed local upload left under `dir`.
fn remove_staging(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            remove_staging(&p);
        } else if p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains('#'))
        {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn stream_prune_killed_at_random_points(tb: &TestBucket) {
    let name = format!("stream_prune_crash_{:?}", tb.kind).to_lowercase();
    let runs = count(50, 500);
    let mut rng = rng(&name);
    let seed: u64 = rng.random();
    let bucket = tb.bucket();
    let d = windows::day_of(chrono::Utc::now()) - TimeDelta::days(2);
    let sim = simulate(
        &bucket,
        &SimSpec {
            start: d - TimeDelta::minutes(30),
            hours: 1,
            bursts_per_hour: 10,
            // Every instant inside the kept window (from the day's base on).
            instants: 6,
            instants_after: Some(d),
            compact: false,
        },
        seed,
    );
    let hub = sim.dbs[0].spec.datahub;
    let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
    let prefix = format!("acme/stream/{hub}");
    let template = snapshot(tb, &prefix);
    let cutoff = d + TimeDelta::minutes(15);
    // Instants inside the window (from the day's base on) must restore at every point.
    let inside: Vec<(Time, usize, String)> = sim
        .refs
        .iter()
        .filter(|(t, _, _)| *t >= d)
        .map(|(t, i, img)| (*t, *i, PageTable::of_image(4096, img).checksum().hex()))
        .collect();
    assert!(inside.len() >= 3, "too few instants inside the window");
    let check = |run: usize, when: &str| {
        let b = tb.bucket();
        // Every instant, planned and built side by side (each is independent).
        rt().block_on(async {
            futures::stream::iter(&inside)
                .map(|(t, i, want)| {
                    let (b, org) = (b.clone(), org.clone());
                    let c = sim.dbs[*i].spec.connector;
                    async move {
                        let p = stream::plan(&b, &org, hub, c, Some(*t))
                            .await
                            .unwrap()
                            .unwrap_or_else(|| panic!("run {run} ({when}): no base for {t}"));
                        let image = tempfile::NamedTempFile::new().unwrap();
                        let built = stream::build(&b, &p, image.path())
                            .await
                            .unwrap_or_else(|e| panic!("run {run} ({when}): {t}: {e}"));
                        assert_eq!(
                            &built.checksum.hex(),
                            want,
                            "run {run} ({when}): {t} restores to another state"
                        );
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<()>>()
                .await;
        })
    };
    let prune_cmd = |tb: &TestBucket| {
        let keep = format!("{}s", (chrono::Utc::now() - cutoff).num_seconds());
        let mut c = tb.cmd();
        c.env("TMPDIR", private_tmp())
            .args(["prune", "--json", "--keep-within", &keep, "--datahub"])
            .arg(hub.to_string());
        c
    };
    // Calibration: one whole run, timed.
    let t = Instant::now();
    let full_doc = json_of(&run(&mut prune_cmd(tb)), 0);
    let full = t.elapsed();
    assert_eq!(
        full_doc["stream"][0]["compacted"]["problems"],
        serde_json::json!([])
    );
    let done_keys: Vec<String> = tb.keys(&prefix).into_iter().map(|(k, _)| k).collect();
    check(0, "after a whole run");
    let mut window = full.mul_f64(1.3);

    let deadline = Deadline::after(Duration::from_secs(if super::long() { 3600 } else { 240 }));
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut done = 0;
    // Time spent resetting, in prune (to its end or kill), checking: where a run's cost is.
    let mut spent = [Duration::ZERO; 3];
    for i in 1..=runs {
        if deadline.passed() {
            break;
        }
        let t0 = Instant::now();
        reset(tb, &prefix, &template);
        spent[0] += t0.elapsed();
        let t0 = Instant::now();
        let delay = window.mul_f64(rng.random_range(0.0..1.0));
        let mut child = prune_cmd(tb)
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
                "run {i}: an unkilled prune failed: {status}"
            );
        }
        spent[1] += t0.elapsed();
        let t0 = Instant::now();
        check(i, if finished { "finished" } else { "killed" });
        let keys: Vec<String> = tb.keys(&prefix).into_iter().map(|(k, _)| k).collect();
        spent[2] += t0.elapsed();
        let untouched =
            keys.len() == template.len() && keys.iter().zip(&template).all(|(a, (b, _))| a == b);
        let key = match (finished, untouched, keys == done_keys) {
            (true, _, _) => "finished",
            (false, true, _) => "killed_before_any_change",
            (false, false, true) => "killed_after_the_last_change",
            (false, false, false) => "killed_mid_way",
        };
        *outcomes.entry(key).or_default() += 1;
        done += 1;
    }
    assert!(done >= runs.min(50), "only {done} runs before the deadline");
    // A test of kills must kill, and mid-way: most runs die with part of the work done.
    let mid = outcomes.get("killed_mid_way").copied().unwrap_or(0);
    assert!(mid * 10 >= done * 3, "too few kills mid-way: {outcomes:?}");

    // After the last kill: one whole run finishes without a problem, a second has
    // nothing left to do, and every instant inside the window still restores exactly.
    let last = json_of(&run(&mut prune_cmd(tb)), 0);
    assert_eq!(
        last["stream"][0]["compacted"]["problems"],
        serde_json::json!([]),
        "{last}"
    );
    assert_eq!(
        last["stream"][0]["retained"]["problems"],
        serde_json::json!([]),
        "{last}"
    );
    let again = json_of(&run(&mut prune_cmd(tb)), 0);
    let s = &again["stream"][0];
    assert_eq!(s["retained"]["delete"], serde_json::json!([]), "{again}");
    assert_eq!(
        (
            s["compacted"]["minutes"].as_u64(),
            s["compacted"]["marks"].as_u64(),
            s["compacted"]["segments_deleted"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{again}"
    );
    check(runs + 1, "after the final run");
    let end_keys: Vec<String> = tb.keys(&prefix).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        end_keys, done_keys,
        "the killed runs converge on what one whole run leaves"
    );
    figures(
        &name,
        serde_json::json!({
            "runs": done,
            "objects_at_start": template.len(),
            "objects_after": done_keys.len(),
            "full_prune_ms": full.as_millis() as u64,
            "kill_window_ms": window.as_millis() as u64,
            "outcomes": outcomes,
            "instants_checked_per_run": inside.len(),
            "reset_ms": spent[0].as_millis() as u64,
            "prune_ms": spent[1].as_millis() as u64,
            "check_ms": spent[2].as_millis() as u64,
        }),
    );
}
both!(
    stream_prune_killed_at_random_points_keeps_every_instant_of_the_window,
    stream_prune_killed_at_random_points
);

/// Staging files (`name#n`) a killed local upload left under `dir`.
fn count_staging(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_staging(&p);
        } else if p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains('#'))
        {
            n += 1;
        }
    }
    n
}

/// Lines of a child's stderr as they come, on a thread of their own (the pipe is always
/// drained, so the agent never blocks on a log line).
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The message of a JSON log line.
fn message(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    v["fields"]["message"].as_str().unwrap_or("").to_string()
}

/// Waits (bounded) until a log line's message contains each of `what` (in any order);
/// every line read is added to `seen`. The instant the last was read, or None if the
/// stream ended or the limit passed.
fn wait_for(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &[&str],
    limit: Duration,
    seen: &mut Vec<String>,
) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    let mut left: Vec<&str> = what.to_vec();
    while !left.is_empty() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(wait).ok()?;
        let m = message(&line);
        seen.push(line);
        left.retain(|w| !m.contains(w));
    }
    Some(Instant::now())
}

/// Problems the agent's compactor logged (its warnings and errors).
fn compaction_warnings(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "WARN" || v["level"] == "ERROR")
        .map(|v| v["fields"]["message"].as_str().unwrap_or("").to_string())
        .filter(|m| m.starts_with("compaction") || m.starts_with("stream compaction"))
        .collect()
}

/// The agent's log line at the end of its first pass over the simulated stream (the
/// retention step, the last of a pass, deleting what lies before the window).
const PASS_END: &str = "retention: stream objects older than the continuous window deleted";
/// Logged at start by the compactor (its first pass follows `HUBVAULT_COMPACT_EVERY`
/// later) and by capture when it queues the sentinel's base (the upload that hands the
/// hub to the compactor): a kill's delay counts from the later of the two.
const STARTED: [&str; 2] = ["stream compaction started", "capture: new generation"];

/// kill -9 of the real `hubvault agent` while its own background compactor is mid-pass.
///
/// The bucket holds an hour of a hub's capture (6 bursts of commits) across a midnight
/// two days ago (two connectors, nothing compacted). The agent's hub root holds a third
/// connector of the same hub (the sentinel): capture writes its base at start, which
/// hands the hub to the agent's compactor; the two simulated connectors are not captured
/// (connectors gone from the hub), so their stream is compacted (minutes, marks), given
/// day bases and retained (`--keep-within` ends fifteen minutes after that midnight)
/// exactly as `prune` would.
/// `HUBVAULT_COMPACT_EVERY=20ms` makes the first pass begin moments after the compactor
/// starts, and the kill lands at a random delay after the log lines that precede the
/// pass (the window calibrated on one whole pass, shrunk when kills land past its end).
///
/// After each kill: every instant inside the window restores to exactly its reference
/// state; in one run of five (and after the last) a restarted agent finishes the pass
/// with no problem logged and leaves exactly what one whole pass leaves (no orphan).
fn agent_killed_mid_compaction(tb: &TestBucket) {
    let name = format!("agent_compactor_crash_{:?}", tb.kind).to_lowercase();
    let runs = count(50, 500);
    let mut rng = rng(&name);
    let seed: u64 = rng.random();
    let bucket = tb.bucket();
    let d = windows::day_of(chrono::Utc::now()) - TimeDelta::days(2);
    let sim = simulate(
        &bucket,
        &SimSpec {
            start: d - TimeDelta::minutes(30),
            hours: 1,
            bursts_per_hour: 6,
            instants: 6,
            instants_after: Some(d),
            compact: false,
        },
        seed,
    );
    let hub = sim.dbs[0].spec.datahub;
    let org = hubvault::model::ids::OrgSlug::parse("acme").unwrap();
    let prefix = format!("acme/stream/{hub}");
    let template = snapshot(tb, &prefix);
    let cutoff = d + TimeDelta::minutes(15);
    let inside: Vec<(Time, usize, String)> = sim
        .refs
        .iter()
        .filter(|(t, _, _)| *t >= d)
        .map(|(t, i, img)| (*t, *i, PageTable::of_image(4096, img).checksum().hex()))
        .collect();
    assert!(inside.len() >= 3, "too few instants inside the window");
    // The sentinel: a small connector of the same hub, the only one the agent captures.
    let hub_root = tempfile::tempdir().unwrap();
    let mut sentinel = crate::fixture::Spec::new("sdc", "sentinel", 3);
    sentinel.datahub = hub;
    let dir = hub_root.path().join(sentinel.connector.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    crate::fixture::create(&dir.join("sqlite.db"), &sentinel).unwrap();
    let sentinel_bases = format!("/base/{}/", sentinel.connector);
    // The simulated connectors' stream (the sentinel's bases are new at every start).
    // Their day bases after the window's first day are copies (no commit since); those
    // are left out so that a run crossing a UTC midnight (one more copy) compares alike.
    let copies_from = d + TimeDelta::days(2);
    let stream_keys = || -> Vec<String> {
        tb.keys(&prefix)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !k.contains(&sentinel_bases))
            .filter(|k| {
                hubvault::model::layout::StreamKeys::parse_base(&Key::from(k.as_str()))
                    .is_none_or(|b| b.time < copies_from)
            })
            .collect()
    };
    let check = |run: usize, when: &str| {
        let b = tb.bucket();
        rt().block_on(async {
            futures::stream::iter(&inside)
                .map(|(t, i, want)| {
                    let (b, org) = (b.clone(), org.clone());
                    let c = sim.dbs[*i].spec.connector;
                    async move {
                        let p = stream::plan(&b, &org, hub, c, Some(*t))
                            .await
                            .unwrap()
                            .unwrap_or_else(|| panic!("run {run} ({when}): no base for {t}"));
                        let image = tempfile::NamedTempFile::new().unwrap();
                        let built = stream::build(&b, &p, image.path())
                            .await
                            .unwrap_or_else(|e| panic!("run {run} ({when}): {t}: {e}"));
                        assert_eq!(
                            &built.checksum.hex(),
                            want,
                            "run {run} ({when}): {t} restores to another state"
                        );
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<()>>()
                .await;
        })
    };
    let agent = || {
        let keep = format!("{}s", (chrono::Utc::now() - cutoff).num_seconds());
        let mut c = tb.cmd();
        c.env("TMPDIR", private_tmp())
            .env("HUBVAULT_COMPACT_EVERY", "20ms")
            .args(["agent", "--log-format", "json", "--keep-within", &keep])
            .args(["--interval", "1h", "--shutdown-grace", "0s", "--hub-root"])
            .arg(hub_root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let rx = lines_of(&mut child);
        (child, rx)
    };
    // Runs an agent until its stream equals `want` (bounded), then kills it; returns the
    // lines it logged.
    let finish = |run: usize, want: &[String]| -> Vec<String> {
        let (mut child, rx) = agent();
        let limit = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        loop {
            if stream_keys() == want {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "run {run}: the restarted agent exited: {lines:?}"
            );
            if Instant::now() >= limit {
                child.kill().unwrap();
                child.wait().unwrap();
                lines.extend(rx.try_iter());
                panic!(
                    "run {run}: the restarted agent did not finish within 60 s: {:?}\n{lines:?}",
                    stream_keys()
                );
            }
            lines.extend(rx.try_iter());
            std::thread::sleep(Duration::from_millis(25));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        lines.extend(rx.iter());
        lines
    };

    // Calibration: one whole pass, from the compactor's start to its end, timed.
    let (mut child, rx) = agent();
    let mut lines = Vec::new();
    let started = wait_for(&rx, &STARTED, Duration::from_secs(60), &mut lines)
        .unwrap_or_else(|| panic!("the compactor did not start: {lines:?}"));
    let ended = wait_for(&rx, &[PASS_END], Duration::from_secs(60), &mut lines)
        .unwrap_or_else(|| panic!("the first pass did not end: {lines:?}"));
    let full = ended - started;
    child.kill().unwrap();
    child.wait().unwrap();
    lines.extend(rx.iter());
    assert_eq!(compaction_warnings(&lines), Vec::<String>::new());
    let done_keys = stream_keys();
    let template_keys: Vec<String> = template.iter().map(|(k, _)| k.clone()).collect();
    assert_ne!(
        done_keys, template_keys,
        "the pass changed nothing: {lines:?}"
    );
    check(0, "after a whole pass");
    let mut window = full.mul_f64(1.2);
    // Kills land in [floor, window): both ends move toward the part of the pass that
    // changes the bucket (a kill before its first write or after its last one tests
    // less), so the share of kills mid-way does not depend on how fast the machine is.
    let mut floor = Duration::ZERO;
    reset(tb, &prefix, &template);
    check(0, "the template");

    let deadline = Deadline::after(Duration::from_secs(if super::long() { 3600 } else { 150 }));
    // Local store: staging files (`name#n`) the kills left beside the objects.
    let mut staging_left = 0;
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut done = 0;
    let mut restarts = 0;
    // Time spent resetting, in the agent (start to kill), checking, finishing.
    let mut spent = [Duration::ZERO; 4];
    for i in 1..=runs {
        if deadline.passed() {
            break;
        }
        let t0 = Instant::now();
        reset(tb, &prefix, &template);
        spent[0] += t0.elapsed();
        let t0 = Instant::now();
        let (mut child, rx) = agent();
        let mut lines = Vec::new();
        wait_for(&rx, &STARTED, Duration::from_secs(60), &mut lines)
            .unwrap_or_else(|| panic!("run {i}: the compactor did not start: {lines:?}"));
        let delay = floor + (window - floor).mul_f64(rng.random_range(0.0..1.0));
        std::thread::sleep(delay);
        assert!(
            child.try_wait().unwrap().is_none(),
            "run {i}: the agent exited"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        lines.extend(rx.iter());
        spent[1] += t0.elapsed();
        let t0 = Instant::now();
        let keys = stream_keys();
        let untouched = keys == template_keys;
        let key = match (untouched, keys == done_keys) {
            (true, _) => "killed_before_any_change",
            (false, true) => "killed_after_the_last_change",
            (false, false) => "killed_mid_way",
        };
        if keys == done_keys {
            // Past the end: the window shrinks toward where the pass ends.
            window = window
                .min(delay.mul_f64(1.2))
                .max(floor + Duration::from_millis(20));
        } else if untouched {
            // Before the first write: the floor rises toward where the writes begin,
            // never closer than 20 ms to the window's end.
            floor = floor
                .max(delay.mul_f64(0.8))
                .min(window.saturating_sub(Duration::from_millis(20)));
        }
        *outcomes.entry(key).or_default() += 1;
        // The template's state was checked before the runs (the same objects).
        if !untouched {
            check(i, key);
        }
        spent[2] += t0.elapsed();
        if let Some(dir) = &tb.dir {
            staging_left += count_staging(&dir.path().join(&prefix));
        }
        assert_eq!(compaction_warnings(&lines), Vec::<String>::new(), "run {i}");
        if i % 5 == 0 {
            let t0 = Instant::now();
            let lines = finish(i, &done_keys);
            assert_eq!(
                compaction_warnings(&lines),
                Vec::<String>::new(),
                "run {i}: the restarted agent"
            );
            check(i, "restarted");
            restarts += 1;
            spent[3] += t0.elapsed();
        }
        done += 1;
    }
    assert!(done >= runs.min(50), "only {done} runs before the deadline");
    // A test of kills must kill mid-pass: most runs die with part of the pass done.
    let mid = outcomes.get("killed_mid_way").copied().unwrap_or(0);
    assert!(mid * 10 >= done * 3, "too few kills mid-way: {outcomes:?}");

    // After the last kill: a restarted agent finishes with no problem and no orphan,
    // and every instant inside the window still restores exactly.
    let lines = finish(runs + 1, &done_keys);
    assert_eq!(compaction_warnings(&lines), Vec::<String>::new());
    check(runs + 1, "after the final restart");
    figures(
        &name,
        serde_json::json!({
            "runs": done,
            "restarts": restarts + 1,
            "objects_at_start": template.len(),
            "objects_after": done_keys.len(),
            "full_pass_ms": full.as_millis() as u64,
            "kill_window_ms": window.as_millis() as u64,
            "kill_floor_ms": floor.as_millis() as u64,
            "outcomes": outcomes,
            "instants_checked_per_run": inside.len(),
            "reset_ms": spent[0].as_millis() as u64,
            "agent_ms": spent[1].as_millis() as u64,
            "check_ms": spent[2].as_millis() as u64,
            "restart_ms": spent[3].as_millis() as u64,
            "local_staging_files_left_by_kills": staging_left,
        }),
    );
}
both!(
    agent_killed_mid_compaction_keeps_every_instant_of_the_window_and_a_restart_finishes,
    agent_killed_mid_compaction
);
