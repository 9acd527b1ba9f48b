//! `hubvault verify`: restore drills catch damaged objects and objects at the wrong
//! key, record their result beside the backup, and keep only the newest records.

use object_store::path::Path;

use crate::both;
use crate::common::{TestBucket, cmd_private_tmp, connector_db, json_of, rt, run, stderr};

fn backed_up(tb: &TestBucket) -> (tempfile::TempDir, crate::fixture::Spec, String) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "idbs-eworkbook", 60);
    let out = json_of(
        &run(cmd_private_tmp(tb)
            .args(["backup", "--json", "--db"])
            .arg(&db)),
        0,
    );
    (hub, spec, out["key"].as_str().unwrap().to_string())
}

fn drill_keys(tb: &TestBucket, spec: &crate::fixture::Spec) -> Vec<String> {
    tb.keys(&format!(
        "acme/datahub/{}/connector/{}/hubvault/drills/",
        spec.datahub, spec.connector
    ))
    .into_iter()
    .map(|(k, _)| k)
    .collect()
}

fn good_backup_passes(tb: &TestBucket) {
    let (_hub, spec, _) = backed_up(tb);
    let doc = json_of(&run(cmd_private_tmp(tb).args(["verify", "--json"])), 0);
    assert_eq!(doc["summary"]["ok"], 1);
    let d = &doc["drills"][0];
    assert_eq!(d["ok"], true);
    assert_eq!(d["matched"], "latest.json");
    assert_eq!(d["check"], "integrity_check");
    let keys = drill_keys(tb, &spec);
    assert_eq!(keys.len(), 1);
    assert!(keys[0].ends_with("-ok.json"), "{keys:?}");
    // The record is what the report says.
    let body = rt()
        .block_on(tb.bucket().get_bytes(&Path::from(keys[0].as_str())))
        .unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rec["sha256"], d["sha256"]);
    assert_eq!(rec["ok"], true);
}
both!(
    verify_passes_a_good_backup_and_records_the_drill,
    good_backup_passes
);

fn corrupted_object_fails(tb: &TestBucket) {
    let (_hub, spec, key) = backed_up(tb);
    let b = tb.bucket();
    damage_middle(&b, &key);
    let out = run(cmd_private_tmp(tb).args(["verify", "--json"]));
    let doc = json_of(&out, 3);
    assert_eq!(doc["summary"]["failed"], 1);
    let problems = doc["drills"][0]["problems"].to_string();
    assert!(problems.contains("matches no manifest"), "{problems}");
    assert!(drill_keys(tb, &spec)[0].ends_with("-failed.json"));
    // status now calls it broken.
    let st = json_of(&run(cmd_private_tmp(tb).args(["status", "--json"])), 3);
    assert_eq!(st["connectors"][0]["state"], "broken");
    // Human text names the key and says FAILED.
    let out = run(cmd_private_tmp(tb).args(["verify"]));
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED") && text.contains(&key), "{text}");
}
both!(verify_catches_a_corrupted_object, corrupted_object_fails);

fn ids_must_match_key(tb: &TestBucket) {
    let (_hub, spec, key) = backed_up(tb);
    // The same database put at another connector's key, as a bad manual copy would.
    let other = hubvault::model::ids::ConnectorId::random();
    let wrong = format!("acme/datahub/{}/connector/{other}/sqlite.db", spec.datahub);
    let b = tb.bucket();
    rt().block_on(async {
        let bytes = b.get_bytes(&Path::from(key.as_str())).await.unwrap();
        b.put_bytes(
            &Path::from(wrong.as_str()),
            bytes,
            hubvault::store::bucket::WriteMode::Overwrite,
        )
        .await
        .unwrap();
    });
    let out =
        run(cmd_private_tmp(tb).args(["verify", "--json", "--connector", &other.to_string()]));
    let doc = json_of(&out, 3);
    assert_eq!(doc["summary"]["drilled"], 1);
    let d = &doc["drills"][0];
    assert_eq!(d["ok"], false);
    let problems = d["problems"].to_string();
    assert!(
        problems.contains(&format!("the key says connector {other}")),
        "{problems}"
    );
    // No manifest beside it: said, as a warning.
    assert!(d["warnings"].to_string().contains("no manifest"), "{d}");
    // The original is untouched and still passes.
    let doc = json_of(
        &run(cmd_private_tmp(tb).args([
            "verify",
            "--json",
            "--connector",
            &spec.connector.to_string(),
        ])),
        0,
    );
    assert_eq!(doc["summary"]["ok"], 1);
}
both!(
    verify_catches_a_backup_whose_ids_do_not_match_its_key,
    ids_must_match_key
);

fn keeps_newest_drills(tb: &TestBucket) {
    let (_hub, spec, _) = backed_up(tb);
    for _ in 0..hubvault::ops::verify::KEEP_DRILLS + 2 {
        json_of(&run(cmd_private_tmp(tb).args(["verify", "--json"])), 0);
    }
    assert_eq!(
        drill_keys(tb, &spec).len(),
        hubvault::ops::verify::KEEP_DRILLS
    );
}
both!(
    verify_keeps_only_the_newest_drill_records,
    keeps_newest_drills
);

fn sample_and_bad_flags(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    for t in ["sdc", "solace", "hrb-cellario"] {
        let (db, _) = connector_db(hub.path(), t, 10);
        json_of(
            &run(cmd_private_tmp(tb)
                .args(["backup", "--json", "--db"])
                .arg(&db)),
            0,
        );
    }
    let doc = json_of(
        &run(cmd_private_tmp(tb).args(["verify", "--json", "--sample", "2"])),
        0,
    );
    assert_eq!(doc["summary"]["drilled"], 2);
    assert_eq!(doc["summary"]["in_scope"], 3);
    for args in [
        vec!["verify", "--sample", "0"],
        vec!["verify", "--connector", "nope"],
        vec![
            "verify",
            "--connector",
            "0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10",
        ],
    ] {
        let out = run(cmd_private_tmp(tb).args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("Try:"), "{}", stderr(&out));
    }
}
both!(
    verify_samples_n_at_random_and_refuses_bad_flags,
    sample_and_bad_flags
);

/// A backup cut off between the canonical object and `latest.json` (the object is
/// ahead, `latest.json` names the backup before), and the data object of the version
/// whose manifest vouches for the canonical object gone. `restore` checks the object
/// against complete versions only (data and manifest) and refuses it as a checksum
/// mismatch; the drill counted the manifest alone and said "ok", naming that version.
fn manifest_without_data(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "idbs-eworkbook", 30);
    let backup = || {
        json_of(
            &run(cmd_private_tmp(tb)
                .args(["backup", "--json", "--force", "--db"])
                .arg(&db)),
            0,
        )
    };
    backup();
    let prefix = format!(
        "acme/datahub/{}/connector/{}/hubvault",
        spec.datahub, spec.connector
    );
    let latest = Path::from(format!("{prefix}/latest.json"));
    let b = tb.bucket();
    let old_latest = rt().block_on(b.get_bytes(&latest)).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM Events WHERE id > 5", []).unwrap();
    drop(conn);
    let second = backup()["version"].as_str().unwrap().to_string();
    rt().block_on(async {
        b.put_bytes(
            &latest,
            old_latest.to_vec(),
            hubvault::store::bucket::WriteMode::Overwrite,
        )
        .await
        .unwrap();
        b.delete(&Path::from(format!("{prefix}/versions/{second}.db.zst")))
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut crate::common::restore_output(
        cmd_private_tmp(tb),
        &spec,
        &dir.path().join("r.db"),
    ));
    assert_ne!(out.status.code(), Some(0), "restore refuses it");
    let said = format!("{}{}", crate::common::stdout(&out), stderr(&out));
    assert!(said.contains("mismatch"), "{said}");
    let doc = json_of(&run(cmd_private_tmp(tb).args(["verify", "--json"])), 3);
    let d = &doc["drills"][0];
    assert_eq!(d["ok"], false, "{d}");
    assert_ne!(d["version"], second.as_str(), "{d}");
}
both!(
    verify_fails_a_canonical_object_vouched_for_only_by_a_version_whose_data_is_gone,
    manifest_without_data
);

/// `versions` showed the newest drill by the greatest stamp in its key: one record
/// stamped years ahead, saying ok on the version, made it show that version drilled ok
/// after its real newest drill FAILED (`status` and `serve` already leave such a record
/// out).
fn versions_beside_a_drill_stamped_ahead(tb: &TestBucket) {
    let (_hub, spec, key) = backed_up(tb);
    let doc = json_of(&run(cmd_private_tmp(tb).args(["verify", "--json"])), 0);
    let version = doc["drills"][0]["version"].as_str().unwrap().to_string();
    let passed = drill_keys(tb, &spec)[0].clone();
    let b = tb.bucket();
    rt().block_on(async {
        let record = b.get_bytes(&Path::from(passed.as_str())).await.unwrap();
        let ahead = passed.replace(
            passed.rsplit('/').next().unwrap(),
            "20990101T000000.000Z-ok.json",
        );
        b.put_bytes(
            &Path::from(ahead.as_str()),
            record.to_vec(),
            hubvault::store::bucket::WriteMode::Overwrite,
        )
        .await
        .unwrap();
    });
    // Damage the object: the next drill fails.
    damage_middle(&b, &key);
    json_of(&run(cmd_private_tmp(tb).args(["verify", "--json"])), 3);
    let out = run(cmd_private_tmp(tb).args([
        "versions",
        "--json",
        "--datahub",
        &spec.datahub.to_string(),
        "--connector",
        &spec.connector.to_string(),
    ]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = doc.to_string();
    assert!(text.contains(&version), "{text}");
    assert!(
        !text.contains(r#""ok":true"#),
        "no version shows a passed drill: {text}"
    );
}
both!(
    versions_shows_no_passed_drill_from_a_record_stamped_years_ahead,
    versions_beside_a_drill_stamped_ahead
);

/// The bucket failing every GET of `latest.json` (500 after the retries): the drill
/// matched the object against the version manifests instead and said "ok", with the
/// unanswered read a warning, so a `latest.json` that names another connector (a failed
/// drill when the bucket answers) went unchecked, and `restore` of the same state fails
/// on that read. It must be "not drilled" (exit 1), nothing recorded.
#[test]
fn verify_does_not_drill_when_the_bucket_does_not_answer_for_latest_json() {
    let tb = TestBucket::s3();
    let proxy = crate::proxy::Proxy::s3();
    let (_hub, spec, _) = backed_up(&tb);
    proxy.inject("GET", "latest.json", crate::proxy::Fault::Status500, 1000);
    let out = run(proxy
        .cmd(&tb)
        .env("TMPDIR", crate::common::private_tmp())
        .args(["verify", "--json"]));
    let doc = json_of(&out, 1);
    assert_eq!(doc["summary"]["ok"], 0, "{doc}");
    assert_eq!(doc["summary"]["not_drilled"], 1, "{doc}");
    assert!(
        doc["not_drilled"][0]["reason"]
            .to_string()
            .contains("latest.json"),
        "{doc}"
    );
    assert!(drill_keys(&tb, &spec).is_empty(), "nothing recorded");
}

/// Anyone who can write under a connector decides the size of its `latest.json`; the
/// drill read it whole (a sparse 512 MiB one grew `verify` past 512 MiB, on a bastion
/// that drills every connector), where `restore` and `serve` refuse a manifest over
/// 16 MiB before reading its body. The drill must stay small and still pass: the object
/// is vouched for by its version manifest.
#[test]
fn verify_does_not_read_a_huge_latest_json_whole() {
    let tb = TestBucket::local();
    let (_hub, spec, _) = backed_up(&tb);
    let latest = tb.dir.as_ref().unwrap().path().join(format!(
        "acme/datahub/{}/connector/{}/hubvault/latest.json",
        spec.datahub, spec.connector
    ));
    std::fs::File::options()
        .write(true)
        .open(&latest)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let doc = json_of(&run(cmd_private_tmp(&tb).args(["verify", "--json"])), 0);
    assert_eq!(doc["summary"]["ok"], 1, "{doc}");
    // The peak resident memory of the largest child this test waited for (`backup` of
    // a 60-event database and `verify`).
    let peak_kib = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut u), 0);
        u.ru_maxrss as u64
    };
    assert!(
        peak_kib < 192 << 10,
        "verify grew to {} MiB",
        peak_kib >> 10
    );
}

/// `prune` read the newest ok drill record whole to learn the version it protects: a
/// sparse 512 MiB record grew it past 512 MiB (`backup` runs prune after each upload).
/// Such a record names no version; prune must stay small and finish.
#[test]
fn prune_does_not_read_a_huge_drill_record_whole() {
    let tb = TestBucket::local();
    let (_hub, spec, _) = backed_up(&tb);
    json_of(&run(cmd_private_tmp(&tb).args(["verify", "--json"])), 0);
    let record = tb
        .dir
        .as_ref()
        .unwrap()
        .path()
        .join(&drill_keys(&tb, &spec)[0]);
    std::fs::File::options()
        .write(true)
        .open(&record)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    json_of(
        &run(cmd_private_tmp(&tb).args(["prune", "--json", "--keep-last", "1"])),
        0,
    );
    let peak_kib = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut u), 0);
        u.ru_maxrss as u64
    };
    assert!(peak_kib < 192 << 10, "prune grew to {} MiB", peak_kib >> 10);
}

/// The bucket refusing the PUT of one connector's drill record (500 after the retries)
/// ended the whole run with that error (exit 1): a broken backup another drill of the
/// run had found was neither shown nor made the exit 3. The run must go on: the broken
/// one FAILED (exit 3), the connector whose record could not be written reported as not
/// drilled (nothing recorded for it).
#[test]
fn verify_reports_a_failed_drill_when_another_connectors_record_cannot_be_written() {
    let tb = TestBucket::s3();
    let proxy = crate::proxy::Proxy::s3();
    let (_hub, broken, key) = backed_up(&tb);
    let (_hub2, fine, _) = backed_up(&tb);
    let b = tb.bucket();
    damage_middle(&b, &key);
    proxy.inject(
        "PUT",
        &format!("{}/hubvault/drills/", fine.connector),
        crate::proxy::Fault::Status500,
        1000,
    );
    let out = run(proxy
        .cmd(&tb)
        .env("TMPDIR", crate::common::private_tmp())
        .args(["verify", "--json"]));
    let doc = json_of(&out, 3);
    assert_eq!(doc["summary"]["failed"], 1, "{doc}");
    assert_eq!(doc["drills"][0]["connector"], broken.connector.to_string());
    assert_eq!(doc["summary"]["not_drilled"], 1, "{doc}");
    assert_eq!(
        doc["not_drilled"][0]["connector"],
        fine.connector.to_string()
    );
    assert!(drill_keys(&tb, &fine).is_empty());
}

/// Damages 64 bytes in the middle of the object at `key`: same size, different content.
fn damage_middle(b: &hubvault::store::Bucket, key: &str) {
    rt().block_on(async {
        let mut bytes = b.get_bytes(&Path::from(key)).await.unwrap().to_vec();
        let mid = bytes.len() / 2;
        for x in &mut bytes[mid..mid + 64] {
            *x ^= 0x5a;
        }
        b.put_bytes(
            &Path::from(key),
            bytes,
            hubvault::store::bucket::WriteMode::Overwrite,
        )
        .await
        .unwrap();
    });
}
