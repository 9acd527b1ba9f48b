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
                        let built = stream::build(&b, &p)
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
