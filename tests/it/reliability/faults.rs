//! S3 misbehaving, through the fault-injecting proxy (tests/it/proxy.rs).
//!
//! Claim: for every fault kind, hubvault either retries (with backoff, within the
//! configured bound) and ends with a whole object whose sha256 is right, or fails with
//! an error that names the key; it never reports success for an object that is not
//! whole, and it always finishes within a bounded time.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use hubvault::model::manifest::Manifest;
use hubvault::progress::NoProgress;
use hubvault::store::{Bucket, Encoding};
use object_store::path::Path as Key;

use super::figures;
use crate::common::{TestBucket, connector_db, json_of, rt, run, stderr};
use crate::proxy::{Fault, Proxy, short_settings};

/// Per request 2 s, 3 retries, 10 s for all retries of one request: see short_settings.
const TIMEOUT_SECS: u64 = 2;
/// Past the request timeout, so the client gives up on the response.
const SLOW: Duration = Duration::from_secs(3);
/// Bound on any one operation here: the retry bound per request, plus slack.
const BOUND: Duration = Duration::from_secs(30);

fn kinds() -> Vec<(&'static str, Fault)> {
    vec![
        ("500", Fault::Status500),
        ("503_slowdown", Fault::SlowDown),
        ("reset_mid_body", Fault::ResetMidBody),
        ("slow_past_timeout", Fault::Delay(SLOW)),
        ("truncated_200", Fault::TruncatedBody),
    ]
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn data(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// Reads through the proxy with `get_to_file`: `times` faults of each kind on the GET.
/// Transient faults (2) end in the whole object; a fault that never stops ends in an
/// error naming the key. Never Ok with a wrong sha256.
#[test]
fn downloads_retry_transient_faults_and_never_return_a_partial_object() {
    let proxy = Proxy::s3();
    let tb = TestBucket::s3();
    let b = proxy.bucket(&tb, short_settings());
    let direct = tb.bucket();
    let body = data(3 * 1024 * 1024 + 17);
    let want = sha(&body);
    let mut src = tempfile::NamedTempFile::new().unwrap();
    src.write_all(&body).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for enc in [Encoding::Plain, Encoding::Zstd(3)] {
        let key = Key::from(match enc {
            Encoding::Plain => "acme/faults/plain.bin",
            Encoding::Zstd(_) => "acme/faults/packed.bin.zst",
        });
        rt().block_on(direct.put_file(&key, src.path(), enc, &NoProgress))
            .unwrap();
        for (name, fault) in kinds() {
            for times in [2usize, 1000] {
                proxy.reset();
                let rule = proxy.inject("GET", key.as_ref(), fault, times);
                let dest = scratch.path().join("dl");
                let t = Instant::now();
                let got = rt().block_on(b.get_to_file(&key, &dest, enc, &NoProgress));
                let took = t.elapsed();
                assert!(took < BOUND, "{name} x{times}: took {took:?}");
                assert!(proxy.hits(rule) >= 1, "{name}: the fault never fired");
                let outcome = match &got {
                    Ok(t) => {
                        assert_eq!(
                            t.sha256, want,
                            "{name} x{times} {enc:?}: Ok with a wrong sha256"
                        );
                        assert_eq!(std::fs::read(&dest).unwrap(), body);
                        "whole"
                    }
                    Err(e) => {
                        assert!(e.to_string().contains(key.as_ref()), "{name}: {e}");
                        assert!(e.hint().is_some(), "{name}: no hint: {e}");
                        "error"
                    }
                };
                if times == 2 {
                    assert_eq!(
                        outcome, "whole",
                        "{name} x2 {enc:?}: a transient fault was not retried: {got:?}"
                    );
                } else {
                    assert_eq!(outcome, "error", "{name} forever {enc:?}: succeeded?");
                }
                rows.push(serde_json::json!({
                    "op": "GET", "encoding": format!("{enc:?}"), "fault": name, "times": times,
                    "outcome": outcome, "requests": proxy.requests().len(),
                    "ms": took.as_millis() as u64,
                }));
            }
        }
    }
    figures("s3_faults_get", serde_json::json!(rows));
}

fn manifests(b: &Bucket, prefix: &str) -> Vec<String> {
    rt().block_on(async {
        let mut out = Vec::new();
        for o in b.list(&Key::from(prefix)).await.unwrap() {
            // Manifests only: `source.json` beside them is the source object.
            if o.key.as_ref().ends_with(".json") && !o.key.as_ref().ends_with("/source.json") {
                let bytes = b.get_bytes(&o.key).await.unwrap();
                out.push(Manifest::from_json(&bytes, o.key.as_ref()).unwrap().sha256);
            }
        }
        out
    })
}

fn canonical_sha(b: &Bucket, key: &str, scratch: &Path) -> Option<String> {
    rt().block_on(async {
        let key = Key::from(key);
        b.head(&key).await.unwrap()?;
        let dest = scratch.join("canonical");
        Some(
            b.get_to_file(&key, &dest, Encoding::Plain, &NoProgress)
                .await
                .unwrap()
                .sha256,
        )
    })
}

/// `hubvault backup` through the proxy, with faults on each kind of request it makes
/// (HEAD, GET of latest.json, PUT of a version, the multipart parts and completion, the
/// canonical PUT). Transient faults: exit 0 and the canonical object is whole with the
/// reported sha256. Persistent faults: exit 1 naming the key, within the bound, and the
/// canonical object is still whole (previous or new, matching a manifest).
#[test]
fn backup_retries_transient_s3_faults_and_fails_cleanly_on_persistent_ones() {
    let proxy = Proxy::s3();
    let tb = TestBucket::s3();
    let hub = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // Over 8 MiB: the canonical PUT and the version are multipart uploads.
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", 12_000);
    let prefix = format!("acme/datahub/{}/connector/{}", spec.datahub, spec.connector);
    let canonical = format!("{prefix}/sqlite.db");
    let direct = tb.bucket();
    let targets: [(&str, &str, &str); 6] = [
        ("HEAD canonical", "HEAD", "/sqlite.db"),
        ("GET latest.json", "GET", "latest.json"),
        ("PUT part", "PUT", "partNumber="),
        ("POST complete multipart", "POST", "uploadId="),
        ("PUT version manifest", "PUT", "versions/"),
        ("PUT latest.json", "PUT", "latest.json"),
    ];
    let mut rows = Vec::new();
    let mut transient_failures = Vec::new();
    let mut n = 0;
    for (target, method, path) in targets {
        for (name, fault) in kinds() {
            for times in [1usize, 1000] {
                // A request that always times out costs the whole retry bound (~9 s):
                // CI runs it on two targets, the long mode on all.
                let slow_forever = times == 1000 && matches!(fault, Fault::Delay(_));
                if slow_forever
                    && !super::long()
                    && !["HEAD canonical", "PUT part"].contains(&target)
                {
                    continue;
                }
                n += 1;
                // A new snapshot each time, so each run uploads.
                let conn = rusqlite::Connection::open(&db).unwrap();
                conn.execute_batch("CREATE TABLE IF NOT EXISTS t(n)")
                    .unwrap();
                conn.execute("INSERT INTO t VALUES (?1)", [n]).unwrap();
                drop(conn);
                let before = canonical_sha(&direct, &canonical, scratch.path());
                proxy.reset();
                let rule = proxy.inject(method, path, fault, times);
                let t = Instant::now();
                let out = run(proxy
                    .cmd(&tb)
                    .env("HUBVAULT_S3_TIMEOUT", TIMEOUT_SECS.to_string())
                    .env("HUBVAULT_S3_RETRIES", "3")
                    .env("HUBVAULT_S3_RETRY_TIMEOUT", "10")
                    .args(["backup", "--force", "--json", "--db"])
                    .arg(&db));
                let took = t.elapsed();
                let what = format!("{target} {name} x{times}");
                assert!(took < BOUND * 2, "{what}: took {took:?}");
                assert!(
                    proxy.hits(rule) >= 1,
                    "{what}: the fault never fired: {:?}",
                    proxy.requests()
                );
                let after = canonical_sha(&direct, &canonical, scratch.path());
                let known = manifests(&direct, &format!("{prefix}/hubvault"));
                if let Some(a) = &after {
                    assert!(
                        known.contains(a),
                        "{what}: the canonical object matches no manifest"
                    );
                }
                let code = out.status.code();
                let outcome = if code == Some(0) {
                    let report = json_of(&out, 0);
                    assert_eq!(
                        report["sha256"].as_str(),
                        after.as_deref(),
                        "{what}: success, but the canonical object is not what was reported"
                    );
                    "uploaded"
                } else {
                    assert_eq!(code, Some(1), "{what}: {}", stderr(&out));
                    let err = json_of(&out, 1);
                    let text = err["error"].as_str().unwrap();
                    assert!(
                        text.contains(&tb.name),
                        "{what}: the error names no key: {text}"
                    );
                    assert!(err["hint"].is_string(), "{what}: no hint");
                    assert!(
                        after.is_none()
                            || after == before
                            || known.contains(after.as_ref().unwrap())
                    );
                    "failed"
                };
                if times == 1 && outcome != "uploaded" {
                    transient_failures.push(format!("{what}: {}", stderr(&out)));
                }
                if times == 1000 && target == "HEAD canonical" {
                    assert_eq!(
                        outcome, "failed",
                        "{what}: a HEAD that always fails cannot succeed"
                    );
                }
                rows.push(serde_json::json!({
                    "op": target, "fault": name, "times": times, "outcome": outcome,
                    "requests": proxy.requests().len(), "ms": took.as_millis() as u64,
                }));
            }
        }
    }
    figures("s3_faults_backup", serde_json::json!(rows));
    assert!(
        transient_failures.is_empty(),
        "one transient fault failed the backup: {transient_failures:#?}"
    );
}

/// A server that lies consistently (a short body with a matching Content-Length)
/// cannot be caught by the transport; the manifest's checks catch it. A lying GET of
/// latest.json makes backup treat it as absent and write a fresh version: it never
/// trusts half a manifest, and the canonical object ends whole.
#[test]
fn a_short_but_self_consistent_body_is_caught_by_the_checks_above_the_transport() {
    let proxy = Proxy::s3();
    let tb = TestBucket::s3();
    let hub = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 300);
    let prefix = format!("acme/datahub/{}/connector/{}", spec.datahub, spec.connector);
    json_of(
        &run(tb.cmd().args(["backup", "--json", "--db"]).arg(&db)),
        0,
    );
    let rule = proxy.inject("GET", "latest.json", Fault::ShortBody, 1);
    let out = json_of(
        &run(proxy
            .cmd(&tb)
            .args(["backup", "--force", "--json", "--db"])
            .arg(&db)),
        0,
    );
    assert_eq!(proxy.hits(rule), 1);
    // Unchanged database, but the manifest could not be trusted: a new version.
    assert_eq!(out["new_version"], true);
    let direct = tb.bucket();
    let after = canonical_sha(&direct, &format!("{prefix}/sqlite.db"), scratch.path()).unwrap();
    assert_eq!(out["sha256"].as_str(), Some(after.as_str()));

    // Downloads from S3 are ranged GETs, whose answer names the object's whole size
    // (Content-Range) apart from the body's length: a short body that agrees with its
    // own Content-Length is caught there, as an error naming the key, and no file is
    // left. (Were it not, the sha256 the library hands back would differ from the
    // manifest's, and restore and verify compare them.)
    let b = proxy.bucket(&tb, short_settings());
    proxy.inject("GET", "/sqlite.db", Fault::ShortBody, 1);
    let dest = scratch.path().join("short");
    let err = rt()
        .block_on(b.get_to_file(
            &Key::from(format!("{prefix}/sqlite.db")),
            &dest,
            Encoding::Plain,
            &NoProgress,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("sqlite.db"), "{err}");
    assert!(err.to_string().contains("download ended after"), "{err}");
    assert!(!dest.exists(), "a short download was left behind");
}

/// A large object on S3 is read as parallel ranged GETs. If it is replaced between the
/// first range and the others, the later ranges fail their If-Match (412) and the
/// download starts again: the file is the new object whole, never a mix of the two. The
/// first response is held by the proxy until the replacement is done, so the order is
/// certain, not hoped for.
#[test]
fn an_object_replaced_during_a_ranged_download_is_read_again_whole_never_mixed() {
    let proxy = Proxy::s3();
    let tb = TestBucket::s3();
    // A request timeout well past the held answer below, so the client waits for it
    // instead of retrying (a retry would fetch the new object whole and succeed).
    let patient = hubvault::store::s3::S3Settings {
        timeout: Duration::from_secs(30),
        ..short_settings()
    };
    let b = proxy.bucket(&tb, patient);
    let direct = tb.bucket();
    let key = Key::from("acme/ranged/sqlite.db");
    let first = data(20 * 1024 * 1024 + 5);
    let mut second = first.clone();
    second.iter_mut().for_each(|x| *x = x.wrapping_add(1));
    let mut src = tempfile::NamedTempFile::new().unwrap();
    src.write_all(&first).unwrap();
    rt().block_on(direct.put_file(&key, src.path(), Encoding::Plain, &NoProgress))
        .unwrap();

    // Unhindered first: three ranged GETs (8 + 8 + 4 MiB), the right bytes.
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dl");
    proxy.reset();
    let got = rt()
        .block_on(b.get_to_file(&key, &dest, Encoding::Plain, &NoProgress))
        .unwrap();
    assert_eq!(got.sha256, sha(&first));
    let gets = proxy.requests().iter().filter(|(m, _)| m == "GET").count();
    assert_eq!(gets, 3, "{:?}", proxy.requests());

    // Now hold the first answer for 5 s and replace the object meanwhile: the proxy
    // records the answer's status when it has it from the server, before holding it, so
    // the replacement certainly comes after the first range was read.
    proxy.reset();
    proxy.inject("GET", key.as_ref(), Fault::Delay(Duration::from_secs(5)), 1);
    let dl = {
        let (b, key, dest) = (b.clone(), key.clone(), dest.clone());
        std::thread::spawn(move || {
            rt().block_on(b.get_to_file(&key, &dest, Encoding::Plain, &NoProgress))
        })
    };
    let t = Instant::now();
    while !proxy
        .log()
        .iter()
        .any(|r| r.method == "GET" && r.status.is_some())
    {
        assert!(t.elapsed() < BOUND, "the download never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    src.as_file().set_len(0).unwrap();
    std::fs::write(src.path(), &second).unwrap();
    rt().block_on(direct.put_file(&key, src.path(), Encoding::Plain, &NoProgress))
        .unwrap();
    let got = dl.join().unwrap().unwrap();
    assert_eq!(got.sha256, sha(&second));
    assert_eq!(std::fs::read(&dest).unwrap(), second);
    assert!(
        proxy.log().iter().any(|r| r.status == Some(412)),
        "the replacement was not noticed: {:?}",
        proxy.log()
    );
}

/// A zstd object (a version) on S3 is read as its first range and then ONE streamed
/// ranged GET of the rest (the decoder, not the network, bounds it), still conditional on
/// the first answer's ETag: replaced between the two, it is read again whole, never mixed.
#[test]
fn a_zstd_object_is_read_in_two_requests_and_read_again_whole_when_replaced_between_them() {
    let proxy = Proxy::s3();
    let tb = TestBucket::s3();
    let patient = hubvault::store::s3::S3Settings {
        timeout: Duration::from_secs(30),
        ..short_settings()
    };
    let b = proxy.bucket(&tb, patient);
    let direct = tb.bucket();
    let key = Key::from("acme/ranged/v.db.zst");
    // Incompressible (xorshift, seed 13): the stored object is past two ranges of 8 MiB.
    let mut x: u64 = 13;
    let first: Vec<u8> = (0..20 * 1024 * 1024 + 5)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mut second = first.clone();
    second.iter_mut().for_each(|x| *x = x.wrapping_add(1));
    let mut src = tempfile::NamedTempFile::new().unwrap();
    src.write_all(&first).unwrap();
    rt().block_on(direct.put_file(&key, src.path(), Encoding::Zstd(1), &NoProgress))
        .unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dl");
    proxy.reset();
    let got = rt()
        .block_on(b.get_to_file(&key, &dest, Encoding::Zstd(0), &NoProgress))
        .unwrap();
    assert_eq!(got.sha256, sha(&first));
    assert!(got.stored_bytes > 16 * 1024 * 1024, "{got:?}");
    let gets = proxy.requests().iter().filter(|(m, _)| m == "GET").count();
    assert_eq!(gets, 2, "{:?}", proxy.requests());

    proxy.reset();
    proxy.inject("GET", key.as_ref(), Fault::Delay(Duration::from_secs(5)), 1);
    let dl = {
        let (b, key, dest) = (b.clone(), key.clone(), dest.clone());
        std::thread::spawn(move || {
            rt().block_on(b.get_to_file(&key, &dest, Encoding::Zstd(0), &NoProgress))
        })
    };
    let t = Instant::now();
    while !proxy
        .log()
        .iter()
        .any(|r| r.method == "GET" && r.status.is_some())
    {
        assert!(t.elapsed() < BOUND, "the download never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    src.as_file().set_len(0).unwrap();
    std::fs::write(src.path(), &second).unwrap();
    rt().block_on(direct.put_file(&key, src.path(), Encoding::Zstd(1), &NoProgress))
        .unwrap();
    let got = dl.join().unwrap().unwrap();
    assert_eq!(got.sha256, sha(&second));
    assert_eq!(std::fs::read(&dest).unwrap(), second);
    assert!(
        proxy.log().iter().any(|r| r.status == Some(412)),
        "the replacement was not noticed: {:?}",
        proxy.log()
    );
}
