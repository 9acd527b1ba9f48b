//! `hubvault agent`: discovery, the schedule, the lock, isolation of broken connectors,
//! shutdown, metrics, configuration. Library-level tests drive `Agent::pass` directly
//! (no clocks); process-level tests run the binary with `--once`, or with a bounded
//! wait and a kill at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hubvault::agent::metrics::Metrics;
use hubvault::agent::scheduler::{Agent, AgentOptions, Outcome};
use hubvault::model::ids::OrgSlug;

use crate::both;
use crate::common::{
    TestBucket, cmd_private_tmp, connector_db, hubvault, json_log_of, json_of, rt, run, stderr,
};

fn acme() -> OrgSlug {
    OrgSlug::parse("acme").unwrap()
}

fn options(hub: &Path) -> AgentOptions {
    let mut o = AgentOptions::new(hub, acme());
    o.retry_base = Duration::ZERO;
    o.jitter = 0.0;
    o.tmp_dir = Some(crate::common::private_tmp().to_path_buf());
    o
}

fn canonical(spec: &crate::fixture::Spec) -> String {
    format!(
        "acme/datahub/{}/connector/{}/sqlite.db",
        spec.datahub, spec.connector
    )
}

fn picks_up_new_and_forgets_removed(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (_, first) = connector_db(hub.path(), "sdc", 50);
    let metrics = Metrics::new("acme");
    let mut agent = Agent::new(tb.bucket(), options(hub.path()), metrics.clone());
    let (_tx, mut rx) = tokio::sync::watch::channel(false);
    let second = rt().block_on(async {
        let p1 = agent.pass(&mut rx).await.unwrap();
        assert_eq!(p1.added, vec![first.connector]);
        assert_eq!(p1.attempts.len(), 1);
        assert_eq!(p1.attempts[0].result, Outcome::Uploaded);

        // A connector that appears later is found by the next pass and backed up.
        let (_, second) = connector_db(hub.path(), "solace", 50);
        let p2 = agent.pass(&mut rx).await.unwrap();
        assert_eq!(p2.added, vec![second.connector]);
        let uploaded: Vec<_> = p2
            .attempts
            .iter()
            .filter(|a| a.result == Outcome::Uploaded)
            .map(|a| a.connector)
            .collect();
        assert_eq!(uploaded, vec![second.connector], "{p2:?}");

        // A removed connector is forgotten, metrics included.
        std::fs::remove_dir_all(hub.path().join(first.connector.to_string())).unwrap();
        agent.make_all_due();
        let p3 = agent.pass(&mut rx).await.unwrap();
        assert_eq!(p3.removed, vec![first.connector]);
        assert_eq!(agent.connectors(), vec![second.connector]);
        assert_eq!(p3.attempts.len(), 1);
        assert_eq!(p3.attempts[0].result, Outcome::Skipped);
        let text = metrics.render(chrono::Utc::now());
        assert!(!text.contains(&first.connector.to_string()), "{text}");
        assert!(text.contains(&second.connector.to_string()), "{text}");
        second
    });
    let keys: Vec<String> = tb.keys("acme").into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&canonical(&first)) && keys.contains(&canonical(&second)));
}
both!(
    agent_picks_up_new_connectors_and_forgets_removed_ones,
    picks_up_new_and_forgets_removed
);

fn broken_connector_is_isolated_and_retried(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (_, a) = connector_db(hub.path(), "sdc", 30);
    let (bad_db, bad) = connector_db(hub.path(), "hrb-cellario", 30);
    let (_, c) = connector_db(hub.path(), "solace", 30);
    let good_copy = hub.path().join("good-copy.db");
    std::fs::copy(&bad_db, &good_copy).unwrap();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", bad_db.display()));
    }
    std::fs::write(&bad_db, b"this is not a database").unwrap();

    let metrics = Metrics::new("acme");
    let mut agent = Agent::new(tb.bucket(), options(hub.path()), metrics.clone());
    let (_tx, mut rx) = tokio::sync::watch::channel(false);
    rt().block_on(async {
        let p1 = agent.pass(&mut rx).await.unwrap();
        let by = |id| p1.attempts.iter().find(|x| x.connector == id).unwrap();
        assert_eq!(by(a.connector).result, Outcome::Uploaded);
        assert_eq!(by(c.connector).result, Outcome::Uploaded);
        let failed = by(bad.connector);
        assert_eq!(failed.result, Outcome::Failed);
        assert!(
            failed.reason.contains(&bad_db.display().to_string()),
            "{failed:?}"
        );
        assert!(!p1.all_ok());
        assert_eq!(
            metrics
                .get(&bad.connector.to_string())
                .unwrap()
                .failures_total,
            1
        );

        // Retried on a later pass (retry_base 0 here): once repaired, it is backed up.
        std::fs::copy(&good_copy, &bad_db).unwrap();
        let p2 = agent.pass(&mut rx).await.unwrap();
        assert_eq!(p2.attempts.len(), 1, "only the failed one is due: {p2:?}");
        assert_eq!(p2.attempts[0].connector, bad.connector);
        assert_eq!(p2.attempts[0].result, Outcome::Uploaded);
        let s = metrics.get(&bad.connector.to_string()).unwrap();
        assert_eq!((s.failures_total, s.consecutive_failures), (1, 0));
    });
}
both!(
    a_corrupt_connector_is_retried_later_and_does_not_stop_the_others,
    broken_connector_is_isolated_and_retried
);

fn once_reports_failure_but_backs_up_the_rest(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (_, a) = connector_db(hub.path(), "sdc", 30);
    let (bad_db, _) = connector_db(hub.path(), "solace", 30);
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", bad_db.display()));
    }
    std::fs::write(&bad_db, vec![0u8; 4096]).unwrap();
    let out = run(cmd_private_tmp(tb)
        .args(["agent", "--once", "--json", "--hub-root"])
        .arg(hub.path()));
    let doc = json_of(&out, 1);
    assert_eq!(doc["ok"], false);
    let results: Vec<&str> = doc["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["result"].as_str().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|r| **r == "uploaded").count(), 1);
    assert_eq!(results.iter().filter(|r| **r == "failed").count(), 1);
    assert!(tb.keys("acme").iter().any(|(k, _)| *k == canonical(&a)));
    assert!(stderr(&out).contains(&bad_db.display().to_string()));
}
both!(
    agent_once_exits_1_when_one_connector_fails_and_still_backs_up_the_others,
    once_reports_failure_but_backs_up_the_rest
);

/// Waits for a child, bounded; kills it and fails the test past the limit.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn output_of(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let status = wait_bounded(&mut child, limit);
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

fn lock_serializes_agent_and_backup(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "idbs-eworkbook", 300);
    // Hold the connector's lock so both processes are certainly running at once and
    // waiting for it; without the lock both would find no backup and both upload.
    let held = rt().block_on(hubvault::sqlite::lock::ConnectorLock::acquire(
        &db,
        Duration::from_secs(5),
    ));
    let held = held.unwrap();
    let spawn = |c: &mut Command| {
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let agent = spawn(
        cmd_private_tmp(tb)
            .args(["agent", "--once", "--json", "--hub-root"])
            .arg(hub.path()),
    );
    let backup = spawn(
        cmd_private_tmp(tb)
            .args(["backup", "--json", "--db"])
            .arg(&db),
    );
    std::thread::sleep(Duration::from_millis(1500));
    drop(held);
    let (sa, out_a, err_a) = output_of(agent, Duration::from_secs(60));
    let (sb, out_b, err_b) = output_of(backup, Duration::from_secs(60));
    assert!(sa.success(), "{out_a}\n{err_a}");
    assert!(sb.success(), "{out_b}\n{err_b}");
    let a: serde_json::Value = serde_json::from_str(&out_a).unwrap();
    let b: serde_json::Value = serde_json::from_str(&out_b).unwrap();
    let decisions = [
        a["connectors"][0]["result"].as_str().unwrap().to_string(),
        b["decision"].as_str().unwrap().to_string(),
    ];
    assert_eq!(
        decisions.iter().filter(|d| *d == "uploaded").count(),
        1,
        "{decisions:?}"
    );
    assert_eq!(decisions.iter().filter(|d| *d == "skipped").count(), 1);
}
both!(
    agent_and_a_concurrent_backup_never_both_upload,
    lock_serializes_agent_and_backup
);

fn sha_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid is our
    // own child's, not yet waited for, so it cannot name another process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

fn sigterm_mid_upload_leaves_a_whole_object(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    // ~40 MB: several multipart parts on S3, a long enough upload to land in.
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", 50_000);
    let out = run(cmd_private_tmp(tb)
        .args(["backup", "--json", "--db"])
        .arg(&db));
    let old = json_of(&out, 0)["sha256"].as_str().unwrap().to_string();
    // Change the database so the next backup is a new object.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7;")
        .unwrap();
    let versions = format!(
        "acme/datahub/{}/connector/{}/hubvault/versions/",
        spec.datahub, spec.connector
    );
    let manifests = || {
        tb.keys(&versions)
            .into_iter()
            .filter(|(k, _)| k.ends_with(".json"))
            .count()
    };
    assert_eq!(manifests(), 1);
    let mut agent = cmd_private_tmp(tb)
        .args([
            "agent",
            "--max-age",
            "0s",
            "--shutdown-grace",
            "0s",
            "--hub-root",
        ])
        .arg(hub.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The new version's manifest is written just before the canonical upload starts.
    let start = Instant::now();
    while manifests() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no new version appeared"
        );
        assert!(agent.try_wait().unwrap().is_none(), "agent exited early");
        std::thread::sleep(Duration::from_millis(10));
    }
    sigterm(&agent);
    let status = wait_bounded(&mut agent, Duration::from_secs(30));
    let mut err = String::new();
    agent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");

    let new_manifest = tb
        .keys(&versions)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.ends_with(".json"))
        .max()
        .unwrap();
    let b = tb.bucket();
    let (object, new) = rt().block_on(async {
        let obj = b
            .get_bytes(&object_store::path::Path::from(canonical(&spec)))
            .await
            .unwrap();
        let m = b
            .get_bytes(&object_store::path::Path::from(new_manifest.as_str()))
            .await
            .unwrap();
        let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
        (obj, m["sha256"].as_str().unwrap().to_string())
    });
    let got = sha_of(&object);
    assert!(
        got == old || got == new,
        "the key holds neither the old nor the new object whole"
    );
    // Nothing half-written lingers beside it (local staging files are named `name#N`).
    if let Some(dir) = &tb.dir {
        let conn_dir = dir
            .path()
            .join(canonical(&spec))
            .parent()
            .unwrap()
            .to_path_buf();
        let stray: Vec<PathBuf> = std::fs::read_dir(conn_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains('#'))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }
}
both!(
    sigterm_during_an_upload_leaves_the_old_or_the_new_object_whole,
    sigterm_mid_upload_leaves_a_whole_object
);

/// Lines of the child's stderr, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a JSON log line whose message contains `what`.
fn wait_for_log(rx: &mpsc::Receiver<String>, what: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line with {what:?} within {limit:?}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let msg = v["fields"]["message"].as_str().unwrap_or("");
        if msg.contains(what) {
            return msg.to_string();
        }
    }
}

fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// (metric name, labels, value)
type Sample = (String, Vec<(String, String)>, f64);

/// A strict reader of the Prometheus text format (0.0.4): every sample line is
/// `name{labels} value`, its family was declared by `# TYPE` before, names and label
/// names are valid, the value is a float. Returns (name, labels, value).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed = std::collections::BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(valid_name(name), "{line}");
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "TYPE twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), vec![]),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels = body
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        assert!(valid_name(k), "{line}");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
        };
        assert!(typed.contains(&name), "sample before its TYPE: {line}");
        samples.push((name, labels, value));
    }
    samples
}

fn metrics_served(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (_, spec) = connector_db(hub.path(), "sdc", 100);
    let mut agent = cmd_private_tmp(tb)
        .args([
            "agent",
            "--log-format",
            "json",
            "--interval",
            "1h",
            "--metrics-addr",
            "127.0.0.1:0",
            "--hub-root",
        ])
        .arg(hub.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut agent);
    let msg = wait_for_log(&rx, "metrics on http://", Duration::from_secs(30));
    let addr = msg
        .trim_start_matches("metrics on http://")
        .trim_end_matches("/metrics")
        .to_string();
    // The backup's "uploaded: <reason>" (capture's "base uploaded" comes first).
    wait_for_log(&rx, "uploaded:", Duration::from_secs(60));

    let (head, body) = http_get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let samples = parse_exposition(&body);
    let id = spec.connector.to_string();
    let of = |name: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains(&("connector".into(), id.clone())))
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name} for {id}:\n{body}"))
    };
    let now = chrono::Utc::now().timestamp() as f64;
    let last = of("hubvault_backup_last_success_timestamp_seconds");
    assert!((now - 120.0..=now + 1.0).contains(&last), "{last} vs {now}");
    assert!(of("hubvault_backup_age_seconds") >= 0.0);
    assert!(of("hubvault_backup_size_bytes") > 4096.0);
    assert!(of("hubvault_backup_duration_seconds") > 0.0);
    assert_eq!(of("hubvault_backup_failures_total"), 0.0);
    // Continuous capture's series: the connector's base, its lag, the hub's segments.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http_get(&addr, "/metrics");
        let s = parse_exposition(&body);
        let has = |name: &str, v: Option<f64>| {
            s.iter().any(|(n, l, x)| {
                n == name
                    && l.contains(&("connector".into(), id.clone()))
                    && v.is_none_or(|v| *x == v)
            })
        };
        if has("hubvault_capture_bases_total", Some(1.0))
            && has("hubvault_capture_lag_seconds", None)
            && s.iter()
                .any(|(n, _, _)| n == "hubvault_capture_segments_total")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no capture metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (head404, _) = http_get(&addr, "/other");
    assert!(head404.starts_with("HTTP/1.1 404"), "{head404}");

    sigterm(&agent);
    let status = wait_bounded(&mut agent, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
}
both!(
    agent_serves_metrics_that_parse_as_prometheus_text,
    metrics_served
);

#[test]
fn agent_config_file_is_below_flags_and_environment() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    connector_db(hub.path(), "sdc", 20);
    let cfg = hub.path().join("hubvault.toml");
    // The file names another org and a hub root; the flag's org wins, the file's hub
    // root is used since nothing overrides it.
    std::fs::write(
        &cfg,
        format!(
            "org = \"from-file\"\nhub_root = \"{}\"\ninterval = \"2h\"\n",
            hub.path().display()
        ),
    )
    .unwrap();
    let out = run(cmd_private_tmp(&tb)
        .env_remove("HUBVAULT_ORG")
        .args(["agent", "--once", "--json", "--org", "flagged", "--config"])
        .arg(&cfg));
    let doc = json_of(&out, 0);
    let key = doc["connectors"][0]["key"].as_str().unwrap();
    assert!(key.starts_with("flagged/"), "{key}");
    // The environment beats the file too.
    let out = run(cmd_private_tmp(&tb)
        .env("HUBVAULT_ORG", "from-env")
        .args(["agent", "--once", "--json", "--config"])
        .arg(&cfg));
    let doc = json_of(&out, 0);
    assert!(
        doc["connectors"][0]["key"]
            .as_str()
            .unwrap()
            .starts_with("from-env/")
    );
}

#[test]
fn agent_refuses_bad_configuration_with_exit_2_and_touches_nothing() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    connector_db(hub.path(), "sdc", 20);
    let cfg = hub.path().join("hubvault.toml");
    std::fs::write(&cfg, "max-age = \"1h\"\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--config".into(), cfg.display().to_string()],
            "max-age",
        ),
        (
            vec![
                "--config".into(),
                hub.path().join("missing.toml").display().to_string(),
            ],
            "missing.toml",
        ),
        (vec!["--interval".into(), "soon".into()], "--interval"),
        (
            vec!["--metrics-addr".into(), "localhost".into()],
            "--metrics-addr",
        ),
        (
            vec!["--hub-root".into(), "/nonexistent/hub".into()],
            "/nonexistent/hub",
        ),
    ];
    for (args, names) in cases {
        let mut c = cmd_private_tmp(&tb);
        c.args(["agent", "--once"]);
        if !args.contains(&"--hub-root".to_string()) {
            c.arg("--hub-root").arg(hub.path());
        }
        let out = run(c.args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(e.contains(names) && e.contains("Try:"), "{args:?}: {e}");
    }
    assert!(tb.keys("").is_empty(), "nothing may be written");
    // No bucket at all is a usage error too.
    let out = run(hubvault()
        .args(["agent", "--once", "--hub-root"])
        .arg(hub.path()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Issue 16: with `--log-format json`, each decision line carries the connector, the
/// decision and the reason as fields.
fn decision_lines_carry_fields(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (_, good) = connector_db(hub.path(), "sdc", 20);
    let bad_dir = hub.path().join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&bad_dir).unwrap();
    std::fs::write(bad_dir.join("sqlite.db"), b"not a database at all").unwrap();
    let out = run(cmd_private_tmp(tb)
        .args(["agent", "--once", "--log-format", "json", "--hub-root"])
        .arg(hub.path()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| !v["fields"]["decision"].is_null())
        .collect();
    let of = |connector: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|v| v["fields"]["connector"] == connector)
            .collect()
    };
    let good_lines = of(&good.connector.to_string());
    assert_eq!(good_lines.len(), 1, "{lines:#?}");
    assert_eq!(good_lines[0]["fields"]["decision"], "uploaded");
    assert_eq!(good_lines[0]["level"], "INFO");
    assert!(
        !good_lines[0]["fields"]["reason"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let bad_id = bad_dir.file_name().unwrap().to_str().unwrap().to_string();
    let bad_lines = of(&bad_id);
    assert_eq!(bad_lines.len(), 1, "{lines:#?}");
    assert_eq!(bad_lines[0]["fields"]["decision"], "error");
    assert!(
        bad_lines[0]["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("not a SQLite database"),
        "{:#}",
        bad_lines[0]
    );
}
both!(
    agent_json_log_lines_carry_connector_decision_and_reason,
    decision_lines_carry_fields
);

/// Issue 16: three passes over a fresh connector say "skipped (fresh)" once, not three
/// times; the upload before it is said too.
#[test]
fn agent_says_a_repeated_skip_once_not_every_tick() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (_, spec) = connector_db(hub.path(), "solace", 20);
    let text = json_log_of(|| {
        let mut agent = Agent::new(tb.bucket(), options(hub.path()), Metrics::new("acme"));
        let (_tx, mut rx) = tokio::sync::watch::channel(false);
        rt().block_on(async {
            for _ in 0..4 {
                agent.make_all_due();
                agent.pass(&mut rx).await.unwrap();
            }
        });
    });
    let decisions: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["connector"] == spec.connector.to_string())
        .filter_map(|v| v["fields"]["decision"].as_str().map(str::to_string))
        .collect();
    assert_eq!(decisions, ["uploaded", "skipped_fresh"], "{text}");
}

/// Review of the operator's first day: a second agent on a hub (one started by hand
/// beside the service) captured the hub as a second generation, and a restore of any
/// instant after it started refused (two agents at once). The second now refuses to
/// start, naming the hub root (exit 1); `--once`, which does not capture, still runs
/// beside the service (the per-connector lock orders their backups).
#[test]
fn a_second_agent_on_a_hub_refuses_to_start_naming_the_hub_root() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    connector_db(hub.path(), "sdc", 20);
    let mut first = cmd_private_tmp(&tb)
        .args(["agent", "--log-format", "json", "--hub-root"])
        .arg(hub.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut first);
    wait_for_log(&rx, "agent started", Duration::from_secs(30));
    let mut second = cmd_private_tmp(&tb)
        .args(["agent", "--hub-root"])
        .arg(hub.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a second agent that runs on is killed, and the test fails below.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let once = run(cmd_private_tmp(&tb)
        .args(["agent", "--once", "--hub-root"])
        .arg(hub.path()));
    sigterm(&first);
    wait_bounded(&mut first, Duration::from_secs(60));
    let status = status.expect("the second agent was still running after 30 s");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&hub.path().display().to_string())
            && err.contains("another hubvault agent")
            && err.contains("Try:"),
        "{err}"
    );
    assert_eq!(once.status.code(), Some(0), "{}", stderr(&once));
}

/// Review of the operator's first day: after a skip the next check came one interval
/// later whatever the backup's age, so at the 24-hour edge a backup got up to one
/// interval plus its jitter (1h 6m by default) past --max-age before it was uploaded:
/// past the 25 h alert AGENT.md advises. A connector is now checked again no later than
/// when its backup turns --max-age old.
fn checked_again_before_stale(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    connector_db(hub.path(), "sdc", 20);
    let mut o = options(hub.path());
    o.interval = Duration::from_secs(10 * 3600);
    o.max_age = Duration::from_secs(3600);
    o.jitter = 0.5;
    let mut agent = Agent::new(tb.bucket(), o, Metrics::new("acme"));
    let (_tx, mut rx) = tokio::sync::watch::channel(false);
    rt().block_on(async {
        let p = agent.pass(&mut rx).await.unwrap();
        assert_eq!(p.attempts[0].result, Outcome::Uploaded, "{p:?}");
        let latest = tokio::time::Instant::now() + Duration::from_secs(3600);
        let due = agent.next_due().unwrap();
        assert!(
            due <= latest,
            "next check {:?} after the backup turns an hour old",
            due - latest
        );
        agent.make_all_due();
        let p = agent.pass(&mut rx).await.unwrap();
        assert_eq!(p.attempts[0].result, Outcome::Skipped, "{p:?}");
        let latest = tokio::time::Instant::now() + Duration::from_secs(3600);
        let due = agent.next_due().unwrap();
        assert!(
            due <= latest,
            "after a skip, next check {:?} after the backup turns an hour old",
            due - latest
        );
    });
}
both!(
    agent_checks_a_connector_again_before_its_backup_turns_max_age_old,
    checked_again_before_stale
);

/// Review of the operator's first day: with the hub root gone (unmounted, moved), the
/// agent logged "cannot list the hub root" at ERROR on every tick of capture (86,400
/// lines a day at the default tick) and once a minute from the schedule. It is now said
/// once by each, and once more when the hub root can be listed again.
#[test]
fn a_hub_root_gone_while_the_agent_runs_is_said_once_not_every_tick() {
    let tb = TestBucket::local();
    let top = tempfile::tempdir().unwrap();
    let hub = top.path().join("hub");
    std::fs::create_dir(&hub).unwrap();
    connector_db(&hub, "sdc", 5);
    let mut agent = cmd_private_tmp(&tb)
        .args([
            "agent",
            "--log-format",
            "json",
            "--tick",
            "100ms",
            "--hub-root",
        ])
        .arg(&hub)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut agent);
    wait_for_log(&rx, "uploaded:", Duration::from_secs(60));
    let away = top.path().join("away");
    std::fs::rename(&hub, &away).unwrap();
    // Thirty ticks without the hub root.
    std::thread::sleep(Duration::from_secs(3));
    let said: Vec<String> = rx
        .try_iter()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect();
    std::fs::rename(&away, &hub).unwrap();
    let back = said.len() <= 2;
    if back {
        wait_for_log(&rx, "can be listed again", Duration::from_secs(30));
    }
    sigterm(&agent);
    wait_bounded(&mut agent, Duration::from_secs(60));
    // One from capture, one from the schedule (each its own loop).
    assert!(back, "{} warnings and errors: {said:#?}", said.len());
}

/// Review of the operator's first day: INSTALL.md sets bucket and org in
/// /etc/hubvault/hubvault.toml, `doctor` passes and the agent runs from it, and the next
/// step, `hubvault status`, failed with exit 2 "no bucket given" (so did `backup` in a
/// connector's start-up, which the file says reads it, `versions` and `verify`): only
/// the agent, doctor and serve took bucket and org from the file. Every command now
/// does, under flags and environment.
#[test]
fn the_config_files_bucket_and_org_serve_every_command_of_the_first_day() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 20);
    let cfg = hub.path().join("hubvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "bucket = \"{}\"\norg = \"acme\"\nhub_root = \"{}\"\n",
            tb.url,
            hub.path().display()
        ),
    )
    .unwrap();
    let cmd = || {
        let mut c = hubvault();
        c.env("TMPDIR", crate::common::private_tmp())
            .env("HUBVAULT_CONFIG", &cfg);
        c
    };
    let once = run(cmd().args(["agent", "--once"]));
    assert_eq!(once.status.code(), Some(0), "{}", stderr(&once));
    let status = run(cmd().args(["status", "--json"]));
    let doc = json_of(&status, 0);
    assert!(
        doc.to_string().contains(&spec.connector.to_string()),
        "{doc:#}"
    );
    let backup = run(cmd().arg("backup").arg("--db").arg(&db));
    assert_eq!(backup.status.code(), Some(0), "{}", stderr(&backup));
    let versions = run(cmd().args([
        "versions",
        "--datahub",
        &spec.datahub.to_string(),
        "--connector",
        &spec.connector.to_string(),
    ]));
    assert_eq!(versions.status.code(), Some(0), "{}", stderr(&versions));
    let verify = run(cmd().arg("verify"));
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    // The environment still wins over the file.
    let other = run(cmd().env("HUBVAULT_ORG", "beta").args(["status", "--json"]));
    assert_eq!(other.status.code(), Some(3), "{}", stderr(&other));
}

/// Since the config file's org serves every command, `hubvault verify` with no `--org`
/// on a machine whose file sets one (a bastion that runs `serve` from it) drills that
/// org alone, where it drilled the whole bucket; `status` has `--all-orgs` for that, and
/// so has `verify` now: with it, every org's backups are drilled.
#[test]
fn verify_all_orgs_drills_every_org_whatever_the_config_files_org() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 20);
    let other_hub = tempfile::tempdir().unwrap();
    let (other_db, other) = connector_db(other_hub.path(), "solace", 20);
    let cfg = hub.path().join("hubvault.toml");
    std::fs::write(&cfg, format!("bucket = \"{}\"\norg = \"acme\"\n", tb.url)).unwrap();
    let cmd = || {
        let mut c = hubvault();
        c.env("TMPDIR", crate::common::private_tmp())
            .env("HUBVAULT_CONFIG", &cfg);
        c
    };
    let b = run(cmd().arg("backup").arg("--db").arg(&db));
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    let b = run(cmd()
        .env("HUBVAULT_ORG", "beta")
        .arg("backup")
        .arg("--db")
        .arg(&other_db));
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    // The file's org alone without it.
    let doc = json_of(&run(cmd().args(["verify", "--json"])), 0);
    let text = doc.to_string();
    assert!(text.contains(&spec.connector.to_string()), "{doc:#}");
    assert!(!text.contains(&other.connector.to_string()), "{doc:#}");
    let doc = json_of(&run(cmd().args(["verify", "--json", "--all-orgs"])), 0);
    let text = doc.to_string();
    for s in [&spec, &other] {
        assert!(text.contains(&s.connector.to_string()), "{doc:#}");
    }
}
