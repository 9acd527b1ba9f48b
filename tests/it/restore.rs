//! `hubvault restore` and `inspect` of a backup: round trips through both backends, bad
//! input, kill -9 during a restore, and the demo's restore story.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::fixture::Spec;
use hubvault::model::ids::{ConnectorId, DatahubId};
use hubvault::progress::NoProgress;
use hubvault::store::{Encoding, WriteMode};

use crate::both;
use crate::common::{TestBucket, connector_db, hubvault, json_of, rt, run, sha256_of, stderr};

fn backup(tb: &TestBucket, db: &Path, force: bool) -> serde_json::Value {
    let mut c = tb.cmd();
    c.args(["backup", "--json", "--db"]).arg(db);
    if force {
        c.arg("--force");
    }
    json_of(&run(&mut c), 0)
}

/// A connector database of `events` events in a hub of its own, backed up: (hub,
/// database, spec, the backup's JSON).
fn backed_up(
    tb: &TestBucket,
    source_type: &str,
    events: usize,
) -> (tempfile::TempDir, PathBuf, Spec, serde_json::Value) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), source_type, events);
    let b = backup(tb, &db, false);
    (hub, db, spec, b)
}

fn canonical_key(spec: &Spec) -> String {
    format!(
        "acme/datahub/{}/connector/{}/sqlite.db",
        spec.datahub, spec.connector
    )
}

/// `hubvault restore --json --yes` of `spec`'s backup with extra flags.
fn restore(tb: &TestBucket, spec: &Spec, extra: &[&str]) -> Output {
    run(tb
        .cmd()
        .args(["restore", "--json", "--yes"])
        .args(["--datahub", &spec.datahub.to_string()])
        .args(["--connector", &spec.connector.to_string()])
        .args(extra))
}

/// `--to-datahub NEW --to-connector NEW --hub-root DIR`
fn onto<'a>(datahub: &'a str, connector: &'a str, hub_root: &'a Path) -> [&'a str; 6] {
    [
        "--to-datahub",
        datahub,
        "--to-connector",
        connector,
        "--hub-root",
        p(hub_root),
    ]
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ids_of(db: &Path) -> (String, String) {
    let conn = hubvault::sqlite::db::open_read_only(db).unwrap();
    let info = hubvault::sqlite::db::read_info(&conn, db).unwrap();
    (info.datahub.to_string(), info.connector.to_string())
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn old_ids_left(db: &Path, spec: &Spec) -> Vec<String> {
    let conn = hubvault::sqlite::db::open_read_only(db).unwrap();
    hubvault::sqlite::rewrite::scan_ids(
        &conn,
        db,
        &[spec.datahub.to_string(), spec.connector.to_string()],
    )
    .unwrap()
    .into_iter()
    .map(|f| f.place)
    .collect()
}

fn integrity_ok(db: &Path) -> bool {
    let conn = rusqlite::Connection::open(db).unwrap();
    let r: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    r == "ok"
}

/// Names and sha256 of the files in a directory, lock files left out (an empty lock file
/// beside the database is how one restore or backup at a time is enforced).
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".hubvault-lock"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256_of(&e.path()),
            )
        })
        .collect()
}

/// Writes `bytes` at `key` of the test bucket through the library (either backend).
fn put(tb: &TestBucket, key: &str, bytes: Vec<u8>) {
    let b = tb.bucket();
    rt().block_on(b.put_bytes(
        &object_store::path::Path::from(key),
        bytes,
        WriteMode::Overwrite,
    ))
    .unwrap();
}

fn put_file(tb: &TestBucket, key: &str, file: &Path) {
    let b = tb.bucket();
    rt().block_on(b.put_file(
        &object_store::path::Path::from(key),
        file,
        Encoding::Plain,
        &NoProgress,
    ))
    .unwrap();
}

fn new_ids() -> (String, String) {
    (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    )
}

// ---------------------------------------------------------------- round trips

fn onto_new_ids(tb: &TestBucket) {
    let (_hub, db, spec, _) = backed_up(tb, "hrb-cellario", 300);
    let events_before = crate::common::rows(&db, "Events");
    let new_hub = tempfile::tempdir().unwrap();
    let (nd, nc) = new_ids();
    let out = json_of(&restore(tb, &spec, &onto(&nd, &nc, new_hub.path())), 0);
    let target = new_hub.path().join(&nc).join("sqlite.db");
    assert_eq!(out["restore"]["target"], p(&target));
    assert_eq!(out["restore"]["legacy"], false);
    assert!(
        out["restore"]["verified_by"]
            .as_str()
            .unwrap()
            .ends_with("latest.json")
    );
    assert_eq!(ids_of(&target), (nd.clone(), nc.clone()));
    assert_eq!(old_ids_left(&target, &spec), Vec::<String>::new());
    assert!(integrity_ok(&target));
    // Every event survived, identical but for the ids.
    let swap = |s: String| {
        s.replace(&spec.datahub.to_string(), &nd)
            .replace(&spec.connector.to_string(), &nc)
    };
    assert_eq!(
        serde_json::to_string(&crate::common::rows(&target, "Events")).unwrap(),
        swap(serde_json::to_string(&events_before).unwrap())
    );
    // A new file: 0600; the journal mode the live database had (WAL) is back.
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
    assert_eq!(out["restore"]["journal_mode"], "wal");
    // No temp file is left beside it.
    let names: Vec<String> = listing(target.parent().unwrap()).into_keys().collect();
    assert_eq!(names, vec!["sqlite.db".to_string()]);
    // Without a hook, the remaining steps are printed.
    assert!(out["remaining_steps"].as_array().unwrap().len() == 3);
}
both!(
    restore_onto_a_new_hub_rewrites_every_id_and_keeps_every_event,
    onto_new_ids
);

fn onto_same_ids(tb: &TestBucket) {
    let (hub, db, spec, _) = backed_up(tb, "sdc", 100);
    // After the backup the connector went on (and broke): one more event.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM Events WHERE id > 90", [])
        .unwrap();
    drop(conn);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
    let previous = sha256_of(&db);
    let out = json_of(&restore(tb, &spec, &["--hub-root", p(hub.path())]), 0);
    assert!(out["restore"]["rewrite"].is_null());
    assert_eq!(count(&db, "SELECT count(*) FROM Events"), 100);
    assert_eq!(
        ids_of(&db),
        (spec.datahub.to_string(), spec.connector.to_string())
    );
    let meta = std::fs::metadata(&db).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o640, 65534, 65534)
    );
    // The previous database is kept beside it, byte for byte.
    let kept = out["restore"]["kept"].as_array().unwrap();
    let kept_db = PathBuf::from(kept[0]["to"].as_str().unwrap());
    assert!(
        kept_db
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sqlite.db.before-restore-")
    );
    assert_eq!(sha256_of(&kept_db), previous);
    assert_eq!(count(&kept_db, "SELECT count(*) FROM Events"), 90);
}
both!(
    restore_onto_the_same_ids_replaces_the_database_and_keeps_the_previous_one,
    onto_same_ids
);

fn to_output(tb: &TestBucket) {
    let (_hub, _, spec, _) = backed_up(tb, "solace", 40);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("restored.db");
    let (nd, nc) = new_ids();
    json_of(
        &restore(
            tb,
            &spec,
            &[
                "--to-datahub",
                &nd,
                "--to-connector",
                &nc,
                "--output",
                p(&file),
            ],
        ),
        0,
    );
    assert_eq!(ids_of(&file), (nd, nc));
    assert_eq!(count(&file, "SELECT count(*) FROM Events"), 40);
    assert_eq!(old_ids_left(&file, &spec), Vec::<String>::new());
}
both!(restore_to_output_writes_a_verified_file, to_output);

fn by_version_and_at(tb: &TestBucket) {
    let (_hub, db, spec, first) = backed_up(tb, "idbs-eworkbook", 30);
    let v1 = first["version"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(20));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(20));
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM Uploads", []).unwrap();
    conn.execute("DELETE FROM Events WHERE id > 10", [])
        .unwrap();
    drop(conn);
    let second = backup(tb, &db, true);
    assert_ne!(second["version"], first["version"]);
    let dir = tempfile::tempdir().unwrap();
    let (nd, nc) = new_ids();
    let events = |file: &Path| count(file, "SELECT count(*) FROM Events");

    let f = dir.path().join("v1.db");
    let out = json_of(
        &restore(
            tb,
            &spec,
            &[
                "--version",
                &v1,
                "--to-datahub",
                &nd,
                "--to-connector",
                &nc,
                "--output",
                p(&f),
            ],
        ),
        0,
    );
    assert_eq!(out["restore"]["version"], v1.as_str());
    assert!(
        out["restore"]["verified_by"]
            .as_str()
            .unwrap()
            .contains(&v1)
    );
    assert_eq!(events(&f), 30);
    assert_eq!(ids_of(&f), (nd.clone(), nc.clone()));

    let f = dir.path().join("at-between.db");
    json_of(
        &restore(tb, &spec, &["--at", &between, "--output", p(&f)]),
        0,
    );
    assert_eq!(events(&f), 30);
    let f = dir.path().join("at-now.db");
    let now = chrono::Utc::now().to_rfc3339();
    json_of(&restore(tb, &spec, &["--at", &now, "--output", p(&f)]), 0);
    assert_eq!(events(&f), 10);

    // Before the first version: nothing to restore, a clear error.
    let f = dir.path().join("too-early.db");
    let out = restore(
        tb,
        &spec,
        &["--at", "2001-01-01T00:00:00Z", "--output", p(&f)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no complete version"),
        "{}",
        stderr(&out)
    );
    assert!(!f.exists());
}
both!(
    restore_an_older_version_by_version_id_and_by_time,
    by_version_and_at
);

fn canonical_ahead_of_latest_json(tb: &TestBucket) {
    // A backup cut off between the canonical object and latest.json: latest.json names
    // the version before. The canonical object matches a version manifest: verified.
    let (_hub, db, spec, _) = backed_up(tb, "sdc", 20);
    let ck = format!(
        "acme/datahub/{}/connector/{}/hubvault/latest.json",
        spec.datahub, spec.connector
    );
    let b = tb.bucket();
    let old_latest = rt()
        .block_on(b.get_bytes(&object_store::path::Path::from(ck.as_str())))
        .unwrap();
    // The second backup also in the other journal mode: the restore must put back the
    // mode of the manifest that vouched for the bytes, not latest.json's.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let other = if mode == "wal" { "delete" } else { "wal" };
    conn.query_row(&format!("PRAGMA journal_mode={other}"), [], |_| Ok(()))
        .unwrap();
    conn.execute("DELETE FROM Events WHERE id > 5", []).unwrap();
    drop(conn);
    let second = backup(tb, &db, true);
    put(tb, &ck, old_latest.to_vec());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.db");
    let out = json_of(&restore(tb, &spec, &["--output", p(&f)]), 0);
    let by = out["restore"]["verified_by"].as_str().unwrap();
    assert!(by.contains(second["version"].as_str().unwrap()), "{by}");
    assert_eq!(count(&f, "SELECT count(*) FROM Events"), 5);
    assert_eq!(out["restore"]["journal_mode"], other, "{out}");
    let restored: String = rusqlite::Connection::open(&f)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(restored, other);
}
both!(
    restore_accepts_a_canonical_object_that_matches_a_version_manifest_not_latest_json_and_puts_back_its_journal_mode,
    canonical_ahead_of_latest_json
);

/// A backup cut off between the canonical object and latest.json (the object is ahead),
/// and the bucket failing every GET of the version manifest that vouches for the object
/// (500 after the retries). The restore reported a checksum mismatch, "damaged or
/// replaced after the backup; restore an older version": the newest backup, intact,
/// called damaged and an older state offered. It must fail naming the manifest the
/// bucket did not answer for, with no word of a mismatch, and install nothing.
#[test]
fn restore_fails_naming_the_version_manifest_the_bucket_does_not_answer_for_not_a_mismatch() {
    let tb = TestBucket::s3();
    let proxy = crate::proxy::Proxy::s3();
    let (_hub, db, spec, _) = backed_up(&tb, "sdc", 20);
    let latest = format!(
        "acme/datahub/{}/connector/{}/hubvault/latest.json",
        spec.datahub, spec.connector
    );
    let old_latest = rt()
        .block_on(
            tb.bucket()
                .get_bytes(&object_store::path::Path::from(latest.as_str())),
        )
        .unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM Events WHERE id > 5", []).unwrap();
    drop(conn);
    let second = backup(&tb, &db, true);
    let second = second["version"].as_str().unwrap().to_string();
    put(&tb, &latest, old_latest.to_vec());
    proxy.inject(
        "GET",
        &format!("versions/{second}.json"),
        crate::proxy::Fault::Status500,
        1000,
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.db");
    let out = run(proxy
        .cmd(&tb)
        .args(["restore", "--json", "--yes"])
        .args(["--datahub", &spec.datahub.to_string()])
        .args(["--connector", &spec.connector.to_string()])
        .args(["--output", p(&f)]));
    let doc = json_of(&out, 1);
    let err = doc["error"].as_str().unwrap();
    assert!(err.contains(&format!("versions/{second}.json")), "{doc}");
    assert!(!err.contains("mismatch"), "{doc}");
    assert!(!f.exists(), "nothing is installed: {doc}");
}

fn legacy_backup(tb: &TestBucket) {
    // Uploaded by the old system: the plain file at the seed's key, no hubvault/ folder.
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", 25);
    put_file(tb, &canonical_key(&spec), &db);
    let new_hub = tempfile::tempdir().unwrap();
    let (nd, nc) = new_ids();
    let out = json_of(&restore(tb, &spec, &onto(&nd, &nc, new_hub.path())), 0);
    assert_eq!(out["restore"]["legacy"], true);
    assert!(
        out["restore"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("no manifest")
    );
    assert_eq!(
        ids_of(&new_hub.path().join(&nc).join("sqlite.db")),
        (nd, nc)
    );
}
both!(
    restore_accepts_a_legacy_backup_without_manifest_with_a_warning,
    legacy_backup
);

/// Our own backup whose kept versions are gone (pruned by another tool), and the bucket
/// failing every GET of `latest.json` (500 after the retries). Taken for absent, that
/// manifest made the backup read as another uploader's: restored as "legacy", its sha256
/// never compared. The restore must fail instead, naming `latest.json`, and install
/// nothing.
#[test]
fn restore_fails_naming_latest_json_when_the_bucket_does_not_answer_for_it() {
    let tb = TestBucket::s3();
    let proxy = crate::proxy::Proxy::s3();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 25);
    json_of(
        &run(tb.cmd().args(["backup", "--json", "--db"]).arg(&db)),
        0,
    );
    let versions: Vec<String> = tb
        .keys(&format!(
            "acme/datahub/{}/connector/{}/hubvault/versions/",
            spec.datahub, spec.connector
        ))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!versions.is_empty());
    rt().block_on(async {
        let b = tb.bucket();
        for k in &versions {
            b.delete(&object_store::path::Path::from(k.as_str()))
                .await
                .unwrap();
        }
    });
    proxy.inject("GET", "latest.json", crate::proxy::Fault::Status500, 1000);
    let new_hub = tempfile::tempdir().unwrap();
    let (nd, nc) = new_ids();
    let out = run(proxy
        .cmd(&tb)
        .args(["restore", "--json", "--yes"])
        .args(["--datahub", &spec.datahub.to_string()])
        .args(["--connector", &spec.connector.to_string()])
        .args(onto(&nd, &nc, new_hub.path())));
    let doc = json_of(&out, 1);
    assert!(
        doc["error"].as_str().unwrap().contains("latest.json"),
        "{doc}"
    );
    assert!(
        std::fs::read_dir(new_hub.path()).unwrap().next().is_none(),
        "nothing is installed: {doc}"
    );
}

// ------------------------------------------- the latest backup, fetched as its version

/// `acme/.../hubvault/latest.json` of `spec`.
fn latest_key(spec: &Spec) -> String {
    format!(
        "acme/datahub/{}/connector/{}/hubvault/latest.json",
        spec.datahub, spec.connector
    )
}

fn get(tb: &TestBucket, key: &str) -> Vec<u8> {
    rt().block_on(tb.bucket().get_bytes(&object_store::path::Path::from(key)))
        .unwrap()
        .to_vec()
}

fn latest_backup_fetches_its_version(tb: &TestBucket) {
    let (_hub, _, spec, b) = backed_up(tb, "hrb-cellario", 300);
    let version = b["version"].as_str().unwrap();
    // latest.json names the canonical object by the ETag the store gave our upload.
    let latest: serde_json::Value = serde_json::from_slice(&get(tb, &latest_key(&spec))).unwrap();
    assert_eq!(latest["canonical"]["size"], b["bytes"]);
    assert!(
        latest["canonical"]["e_tag"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    let dir = tempfile::tempdir().unwrap();
    let out = json_of(
        &restore(
            tb,
            &spec,
            &["--dry-run", "--output", p(&dir.path().join("x.db"))],
        ),
        0,
    );
    let plan = &out["plan"];
    assert_eq!(plan["instead_of"]["key"], canonical_key(&spec).as_str());
    assert_eq!(plan["expected"]["kind"], "same_as_canonical");

    let f = dir.path().join("r.db");
    let (nd, nc) = new_ids();
    let out = json_of(
        &restore(
            tb,
            &spec,
            &[
                "--to-datahub",
                &nd,
                "--to-connector",
                &nc,
                "--output",
                p(&f),
            ],
        ),
        0,
    );
    let r = &out["restore"];
    let want_key = format!(
        "acme/datahub/{}/connector/{}/hubvault/versions/{version}.db.zst",
        spec.datahub, spec.connector
    );
    assert_eq!(r["key"], want_key.as_str(), "{r}");
    assert_eq!(r["instead_of"], canonical_key(&spec).as_str());
    assert_eq!(r["verified_by"], latest_key(&spec).as_str());
    assert_eq!(r["sha256_fetched"], b["sha256"]);
    assert_eq!(r["warnings"], serde_json::json!([]));
    assert_eq!(count(&f, "SELECT count(*) FROM Events"), 300);
    assert_eq!(ids_of(&f), (nd, nc));
    assert!(integrity_ok(&f));
}
both!(
    restore_of_the_latest_backup_fetches_its_version_while_our_upload_is_at_the_key,
    latest_backup_fetches_its_version
);

/// On S3, seen from the wire: the canonical object is only HEADed, the version is read
/// (fewer bytes than the database).
#[test]
fn restore_from_s3_reads_the_version_and_only_heads_the_canonical_object() {
    let proxy = crate::proxy::Proxy::s3();
    let tb = TestBucket::s3();
    let (_hub, _, spec, b) = backed_up(&tb, "sdc", 2000);
    let size = b["bytes"].as_u64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    proxy.reset();
    json_of(
        &run(proxy
            .cmd(&tb)
            .args(["restore", "--json", "--yes"])
            .args(["--datahub", &spec.datahub.to_string()])
            .args(["--connector", &spec.connector.to_string()])
            .args(["--output", p(&dir.path().join("r.db"))])),
        0,
    );
    let log = proxy.log();
    let canonical = |s: &&crate::proxy::Seen| {
        s.path_and_query
            .split('?')
            .next()
            .unwrap()
            .ends_with("/sqlite.db")
    };
    let of_canonical: Vec<&str> = log
        .iter()
        .filter(canonical)
        .map(|s| s.method.as_str())
        .collect();
    assert_eq!(of_canonical, vec!["HEAD"], "{log:#?}");
    let version_bytes: usize = log
        .iter()
        .filter(|s| s.method == "GET" && s.path_and_query.contains(".db.zst"))
        .map(|s| s.body_bytes)
        .sum();
    assert_eq!(version_bytes as u64, b["stored_bytes"].as_u64().unwrap());
    assert!(version_bytes as u64 * 4 < size, "{version_bytes} of {size}");
}

fn replaced_by_another_uploader(tb: &TestBucket) {
    let (_hub, _, spec, b) = backed_up(tb, "sdc", 50);
    let dir = tempfile::tempdir().unwrap();
    // Another uploader puts an object of the same size at the key: one byte differs
    // (the version would pass its checksum; the object itself must be fetched and fail).
    let mut other = get(tb, &canonical_key(&spec));
    assert_eq!(other.len() as u64, b["bytes"].as_u64().unwrap());
    let at = other.len() - 100;
    other[at] ^= 0xff;
    put(tb, &canonical_key(&spec), other);
    let f = dir.path().join("r.db");
    let out = restore(tb, &spec, &["--output", p(&f)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&canonical_key(&spec)), "{err}");
    assert!(!f.exists());

    // The platform's own upload of the same database (a new upload, its own tag): the
    // object itself is fetched, and latest.json vouches for its bytes.
    put_file(
        tb,
        &canonical_key(&spec),
        &db_snapshot(tb, &spec, dir.path()),
    );
    let out = json_of(&restore(tb, &spec, &["--output", p(&f)]), 0);
    let r = &out["restore"];
    if tb.kind == crate::common::Kind::Local {
        // A new file: a new tag. (S3's tag of a single PUT is the MD5 of the bytes: the
        // same bytes give the same tag there, and the version may stand in.)
        assert_eq!(r["key"], canonical_key(&spec).as_str(), "{r}");
        assert!(r["instead_of"].is_null(), "{r}");
    }
    assert_eq!(r["verified_by"], latest_key(&spec).as_str());
    assert_eq!(count(&f, "SELECT count(*) FROM Events"), 50);
}
both!(
    restore_fetches_a_canonical_object_another_uploader_replaced_itself_and_checks_it,
    replaced_by_another_uploader
);

/// The plain bytes our backup uploaded (its version, decompressed), in a file.
fn db_snapshot(tb: &TestBucket, spec: &Spec, dir: &Path) -> PathBuf {
    let latest: serde_json::Value = serde_json::from_slice(&get(tb, &latest_key(spec))).unwrap();
    let key = format!(
        "acme/datahub/{}/connector/{}/hubvault/versions/{}.db.zst",
        spec.datahub,
        spec.connector,
        latest["version"].as_str().unwrap()
    );
    let dest = dir.join("snapshot.db");
    rt().block_on(tb.bucket().get_to_file(
        &object_store::path::Path::from(key.as_str()),
        &dest,
        Encoding::Zstd(0),
        &NoProgress,
    ))
    .unwrap();
    dest
}

fn latest_json_without_record(tb: &TestBucket) {
    let (_hub, _, spec, _) = backed_up(tb, "solace", 40);
    // latest.json as an older hubvault wrote it: no ETag record.
    let mut latest: serde_json::Value =
        serde_json::from_slice(&get(tb, &latest_key(&spec))).unwrap();
    assert!(
        latest
            .as_object_mut()
            .unwrap()
            .remove("canonical")
            .is_some()
    );
    put(
        tb,
        &latest_key(&spec),
        serde_json::to_vec_pretty(&latest).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.db");
    let out = json_of(&restore(tb, &spec, &["--output", p(&f)]), 0);
    let r = &out["restore"];
    assert_eq!(r["key"], canonical_key(&spec).as_str(), "{r}");
    assert!(r["instead_of"].is_null(), "{r}");
    assert_eq!(r["verified_by"], latest_key(&spec).as_str());
    assert_eq!(count(&f, "SELECT count(*) FROM Events"), 40);
}
both!(
    restore_fetches_the_canonical_object_when_latest_json_has_no_etag_record,
    latest_json_without_record
);

fn damaged_stand_in(tb: &TestBucket) {
    let (_hub, _, spec, b) = backed_up(tb, "idbs-eworkbook", 30);
    let vkey = format!(
        "acme/datahub/{}/connector/{}/hubvault/versions/{}.db.zst",
        spec.datahub,
        spec.connector,
        b["version"].as_str().unwrap()
    );
    // The version is damaged after the backup; the canonical object is still ours.
    put(tb, &vkey, b"not zstd at all".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.db");
    let out = json_of(&restore(tb, &spec, &["--output", p(&f)]), 0);
    let r = &out["restore"];
    assert_eq!(r["key"], canonical_key(&spec).as_str(), "{r}");
    assert!(r["instead_of"].is_null(), "{r}");
    assert_eq!(r["verified_by"], latest_key(&spec).as_str());
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(warning.contains(&vkey), "{warning}");
    assert!(
        warning.contains("canonical object was fetched instead"),
        "{warning}"
    );
    assert_eq!(count(&f, "SELECT count(*) FROM Events"), 30);
}
both!(
    restore_fetches_the_canonical_object_when_the_version_standing_in_for_it_is_damaged,
    damaged_stand_in
);

fn inspect_backup(tb: &TestBucket) {
    let (_hub, db, spec, _) = backed_up(tb, "solace", 33);
    let local = json_of(
        &run(hubvault().args(["inspect", "--json", "--db"]).arg(&db)),
        0,
    );
    let remote = json_of(
        &run(tb.cmd().args([
            "inspect",
            "--json",
            "--datahub",
            &spec.datahub.to_string(),
            "--connector",
            &spec.connector.to_string(),
        ])),
        0,
    );
    assert!(
        remote["path"]
            .as_str()
            .unwrap()
            .ends_with(&canonical_key(&spec))
    );
    assert!(
        remote["verified_by"]
            .as_str()
            .unwrap()
            .ends_with("latest.json")
    );
    for k in [
        "datahub",
        "connector",
        "name",
        "source_type",
        "tables",
        "schema",
    ] {
        assert_eq!(local[k], remote[k], "{k}");
    }
}
both!(
    inspect_of_a_backup_gives_the_same_report_as_for_the_local_file,
    inspect_backup
);

// ---------------------------------------------------------------- bad input

/// A hub root with an old database at the target of a restore onto new ids.
struct OldTarget {
    _dir: tempfile::TempDir,
    root: PathBuf,
    target: PathBuf,
    new_datahub: String,
    new_connector: String,
}

fn old_target() -> OldTarget {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (target, spec) = connector_db(&root, "sdc", 10);
    OldTarget {
        root,
        target,
        new_datahub: spec.datahub.to_string(),
        new_connector: spec.connector.to_string(),
        _dir: dir,
    }
}

fn restore_onto(tb: &TestBucket, spec: &Spec, t: &OldTarget, extra: &[&str]) -> Output {
    let mut args = vec![
        "--to-datahub",
        &t.new_datahub,
        "--to-connector",
        &t.new_connector,
        "--hub-root",
        p(&t.root),
    ];
    args.extend_from_slice(extra);
    restore(tb, spec, &args)
}

/// The restore failed with `code`, said `what` and a hint, and the target directory is
/// exactly as it was.
fn assert_refused(
    out: &Output,
    code: i32,
    what: &str,
    t: &OldTarget,
    before: &BTreeMap<String, String>,
) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(what), "expected {what:?} in: {err}");
    assert!(err.contains("Try:"), "{err}");
    assert_eq!(
        &listing(t.target.parent().unwrap()),
        before,
        "the target directory changed"
    );
}

fn no_backup(tb: &TestBucket) {
    let t = old_target();
    let before = listing(t.target.parent().unwrap());
    let spec = Spec::new("sdc", "x", 1);
    let out = restore_onto(tb, &spec, &t, &[]);
    assert_refused(&out, 1, &canonical_key(&spec), &t, &before);
    assert!(stderr(&out).contains("no backup"), "{}", stderr(&out));
}
both!(
    restore_refuses_when_there_is_no_backup_at_the_key,
    no_backup
);

fn checksum_mismatch(tb: &TestBucket) {
    let (hub, db, spec, _) = backed_up(tb, "sdc", 20);
    // Replaced behind hubvault's back by another (valid!) database of the same connector.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM Events WHERE id = 3", [])
        .unwrap();
    let copy = hub.path().join("other.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("VACUUM INTO ?1", [p(&copy)])
        .unwrap();
    put_file(tb, &canonical_key(&spec), &copy);
    let t = old_target();
    let before = listing(t.target.parent().unwrap());
    assert_refused(
        &restore_onto(tb, &spec, &t, &[]),
        1,
        "checksum mismatch",
        &t,
        &before,
    );
}
both!(
    restore_refuses_a_backup_whose_checksum_does_not_match,
    checksum_mismatch
);

fn damaged_legacy(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 400);
    let bytes = std::fs::read(&db).unwrap();
    let t = old_target();
    let before = listing(t.target.parent().unwrap());
    // Not SQLite at all.
    put(
        tb,
        &canonical_key(&spec),
        b"<html>503 Service Unavailable</html>".to_vec(),
    );
    assert_refused(
        &restore_onto(tb, &spec, &t, &[]),
        1,
        "not a SQLite database",
        &t,
        &before,
    );
    // The first half of a SQLite file.
    put(tb, &canonical_key(&spec), bytes[..bytes.len() / 2].to_vec());
    assert_refused(
        &restore_onto(tb, &spec, &t, &[]),
        1,
        "fails its check",
        &t,
        &before,
    );
}
both!(
    restore_refuses_a_truncated_or_non_sqlite_download,
    damaged_legacy
);

/// A copy of `db` (in `dir`) whose index `events_status_updated` names its columns the
/// other way round in the schema: every page and record reads, the rewrite of `Events`
/// does not touch that index, and `integrity_check` fails.
fn with_damaged_index(db: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join("damaged.db");
    rusqlite::Connection::open(db)
        .unwrap()
        .execute("VACUUM INTO ?1", [p(&copy)])
        .unwrap();
    let c = rusqlite::Connection::open(&copy).unwrap();
    c.execute_batch(
        "PRAGMA writable_schema=ON;
         UPDATE sqlite_schema SET sql = replace(sql, '(`status`, `updatedAt`)', '(`updatedAt`, `status`)')
          WHERE name = 'events_status_updated';
         PRAGMA writable_schema=OFF;",
    )
    .unwrap();
    drop(c);
    assert!(!integrity_ok(&copy), "the copy must fail integrity_check");
    copy
}

fn damaged_onto_new_ids(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let t = old_target();
    let before = listing(t.target.parent().unwrap());

    // Another uploader's canonical object (no manifest): checked BEFORE the rewrite.
    let (db, spec) = connector_db(hub.path(), "sdc", 40);
    let damaged = with_damaged_index(&db, hub.path());
    put_file(tb, &canonical_key(&spec), &damaged);
    let out = restore_onto(tb, &spec, &t, &[]);
    assert_refused(&out, 1, "fails its check", &t, &before);
    assert!(stderr(&out).contains("integrity_check"), "{}", stderr(&out));

    // A manifest vouches for the damaged bytes (a forged latest.json: hubvault never
    // writes one for a snapshot that failed its check). The check of the download is
    // skipped, the check of the rewritten result still refuses, and nothing is installed.
    let hub2 = tempfile::tempdir().unwrap();
    let (db2, spec2) = connector_db(hub2.path(), "sdc", 40);
    backup(tb, &db2, false);
    let damaged2 = with_damaged_index(&db2, hub2.path());
    put_file(tb, &canonical_key(&spec2), &damaged2);
    let b = tb.bucket();
    let key = object_store::path::Path::from(latest_key(&spec2).as_str());
    let mut latest: serde_json::Value =
        serde_json::from_slice(&rt().block_on(b.get_bytes(&key)).unwrap()).unwrap();
    let sha = sha256_of(&damaged2);
    // A version id ends with the first 12 hex digits of its sha256.
    let version = latest["version"].as_str().unwrap().to_string();
    let stamp = version.rsplit_once('-').unwrap().0;
    latest["version"] = format!("{stamp}-{}", &sha[..12]).into();
    latest["sha256"] = sha.into();
    let size = std::fs::metadata(&damaged2).unwrap().len();
    latest["size"] = size.into();
    latest["page_count"] = (size / latest["page_size"].as_u64().unwrap()).into();
    latest.as_object_mut().unwrap().remove("canonical");
    put(
        tb,
        &latest_key(&spec2),
        serde_json::to_vec(&latest).unwrap(),
    );
    let out = restore_onto(tb, &spec2, &t, &[]);
    assert_refused(&out, 1, "after the rewrite", &t, &before);
    assert!(stderr(&out).contains("integrity_check"), "{}", stderr(&out));
    // The same bytes restored onto the same ids (no rewrite) are checked as downloaded.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.db");
    let out = restore(tb, &spec2, &["--output", p(&f)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("fails its check"), "{}", stderr(&out));
    assert!(!f.exists());
}
both!(
    restore_onto_new_ids_refuses_a_damaged_backup_whether_or_not_a_manifest_vouches_for_it,
    damaged_onto_new_ids
);

fn wrong_ids(tb: &TestBucket) {
    // Another connector's database at this connector's key.
    let hub = tempfile::tempdir().unwrap();
    let (other_db, _) = connector_db(hub.path(), "sdc", 5);
    let spec = Spec::new("sdc", "x", 1);
    put_file(tb, &canonical_key(&spec), &other_db);
    let t = old_target();
    let before = listing(t.target.parent().unwrap());
    assert_refused(
        &restore_onto(tb, &spec, &t, &[]),
        1,
        "not --datahub",
        &t,
        &before,
    );
}
both!(
    restore_refuses_a_backup_whose_ids_differ_from_the_ones_asked_for,
    wrong_ids
);

#[test]
fn restore_refuses_malformed_new_ids_before_touching_anything() {
    let tb = TestBucket::local();
    let spec = Spec::new("sdc", "x", 1);
    let t = old_target();
    let before = listing(t.target.parent().unwrap());
    for (flag, bad) in [
        ("--to-datahub", "../../etc"),
        ("--to-connector", "0B5E7D1A-93C2-4F6B-8A1E-7C4D2F9E3A10"),
    ] {
        let out = restore(&tb, &spec, &[flag, bad, "--hub-root", p(&t.root)]);
        assert_refused(&out, 2, flag, &t, &before);
    }
    let out = restore(
        &tb,
        &spec,
        &["--version", "latest", "--hub-root", p(&t.root)],
    );
    assert_refused(&out, 2, "version id", &t, &before);
}

fn held_open(tb: &TestBucket) {
    let (_hub, _, spec, _) = backed_up(tb, "sdc", 20);
    let t = old_target();
    let before = listing(t.target.parent().unwrap());
    // Another process (the connector) has the database open.
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg("exec 3<\"$0\"; exec sleep 30")
        .arg(&t.target)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while hubvault::ops::restore::holders(&t.target).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = restore_onto(tb, &spec, &t, &[]);
    assert_refused(&out, 1, "held open by pid", &t, &before);
    assert!(stderr(&out).contains(&holder.id().to_string()));
    let forced = restore_onto(tb, &spec, &t, &["--force"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    json_of(&forced, 0);
    assert_eq!(
        ids_of(&t.target),
        (t.new_datahub.clone(), t.new_connector.clone())
    );
}
both!(
    restore_refuses_a_target_held_open_by_a_process_unless_forced,
    held_open
);

/// A tmpfs mounted on a temp directory (we run as root in the test container); unmounted
/// on drop, also when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs (this test needs root)");
        Tmpfs { dir }
    }
    fn remount_read_only(&self) {
        let st = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// An old target on its own tmpfs of `size` bytes.
fn old_target_on_tmpfs(size: u64) -> (Tmpfs, OldTarget) {
    let fs = Tmpfs::mount(size);
    let (target, spec) = connector_db(fs.dir.path(), "sdc", 10);
    let root = fs.dir.path().to_path_buf();
    let t = OldTarget {
        _dir: tempfile::tempdir().unwrap(),
        root,
        target,
        new_datahub: spec.datahub.to_string(),
        new_connector: spec.connector.to_string(),
    };
    (fs, t)
}

#[test]
fn restore_refuses_a_read_only_target_directory_and_changes_nothing() {
    let tb = TestBucket::local();
    let (_hub, _, spec, _) = backed_up(&tb, "sdc", 50);
    let (fs, t) = old_target_on_tmpfs(4 << 20);
    // The lock file is created up front so only the read-only mount is under test.
    std::fs::File::create(hubvault::sqlite::lock::ConnectorLock::path_for(&t.target)).unwrap();
    let before = listing(t.target.parent().unwrap());
    fs.remount_read_only();
    assert_refused(
        &restore_onto(&tb, &spec, &t, &[]),
        1,
        "read-only",
        &t,
        &before,
    );
}

#[test]
fn restore_refuses_a_full_target_directory_and_changes_nothing() {
    let tb = TestBucket::local();
    let (_hub, db, spec, _) = backed_up(&tb, "sdc", 3000);
    // Room for the old database but not for the download beside it.
    let (_fs, t) = old_target_on_tmpfs(1 << 20);
    let before = listing(t.target.parent().unwrap());
    assert!(std::fs::metadata(&db).unwrap().len() > 1 << 20);
    let out = restore_onto(&tb, &spec, &t, &[]);
    assert_refused(&out, 1, "No space left on device", &t, &before);
    assert!(
        stderr(&out).contains(p(&t.root)),
        "names the path: {}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------- confirmation, hook, dry run

#[test]
fn restore_without_yes_and_without_a_terminal_refuses_with_exit_2() {
    let tb = TestBucket::local();
    let (hub, db, spec, _) = backed_up(&tb, "sdc", 5);
    let before = sha256_of(&db);
    let out = run(tb
        .cmd()
        .args([
            "restore",
            "--datahub",
            &spec.datahub.to_string(),
            "--connector",
            &spec.connector.to_string(),
        ])
        .env("HUBVAULT_HUB_ROOT", hub.path())
        .stdin(std::process::Stdio::null()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"));
    assert_eq!(sha256_of(&db), before);
}

#[test]
fn restore_dry_run_prints_the_plan_and_changes_nothing() {
    let tb = TestBucket::local();
    let (_hub, _, spec, _) = backed_up(&tb, "sdc", 5);
    let t = old_target();
    let before = listing(t.target.parent().unwrap());
    let out = json_of(&restore_onto(&tb, &spec, &t, &["--dry-run"]), 0);
    let plan = &out["plan"];
    // The latest backup, fetched as its version (our upload is at the canonical key).
    assert_eq!(plan["instead_of"]["key"], canonical_key(&spec).as_str());
    assert!(plan["key"].as_str().unwrap().ends_with(".db.zst"), "{plan}");
    assert_eq!(plan["rewrite"], true);
    assert_eq!(plan["replaces"], true);
    assert_eq!(plan["target"], p(&t.target));
    assert!(
        plan["keep"][0]["to"]
            .as_str()
            .unwrap()
            .contains("before-restore-")
    );
    assert_eq!(listing(t.target.parent().unwrap()), before);
}

#[test]
fn restore_runs_the_then_hook_with_old_and_new_ids_and_the_path() {
    let tb = TestBucket::local();
    let (_hub, _, spec, _) = backed_up(&tb, "sdc", 5);
    let t = old_target();
    let env_file = t.root.join("hook.env");
    let hook = format!("env | grep ^HUBVAULT_ | sort > {}", p(&env_file));
    json_of(&restore_onto(&tb, &spec, &t, &["--then", &hook]), 0);
    let env = std::fs::read_to_string(&env_file).unwrap();
    for line in [
        format!("HUBVAULT_OLD_DATAHUB={}", spec.datahub),
        format!("HUBVAULT_OLD_CONNECTOR={}", spec.connector),
        format!("HUBVAULT_NEW_DATAHUB={}", t.new_datahub),
        format!("HUBVAULT_NEW_CONNECTOR={}", t.new_connector),
        format!("HUBVAULT_DB_PATH={}", p(&t.target)),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not in {env}");
    }
    // A failing hook: exit 1, and the message says the database is installed.
    let out = restore_onto(&tb, &spec, &t, &["--then", "exit 3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("IS installed"), "{}", stderr(&out));
    let doc = json_of(&out, 1);
    assert_eq!(
        (&doc["ok"], &doc["hook"]["ok"], &doc["exit_code"]),
        (
            &serde_json::json!(false),
            &serde_json::json!(false),
            &serde_json::json!(1)
        ),
        "one JSON document with the restore, the hook and the error: {doc}"
    );
    assert!(
        doc["restore"].is_object() && doc["error"].is_string(),
        "{doc}"
    );
    assert_eq!(
        ids_of(&t.target),
        (t.new_datahub.clone(), t.new_connector.clone())
    );
}

// ---------------------------------------------------------------- demo

#[test]
fn demo_restores_every_connector_onto_a_new_hub_with_every_event_and_no_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("demo");
    let out = json_of(
        &run(hubvault()
            .args(["demo", "--json", "--events", "200", "--dir"])
            .arg(&d)),
        0,
    );
    assert_eq!(out["ok"], true);
    let restored = out["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 4);
    for r in restored {
        assert_eq!(r["events_survived"], true, "{r}");
        assert_eq!(r["events_after"], 200);
        assert_eq!(r["old_ids_left"].as_array().unwrap().len(), 0);
        let path = Path::new(r["path"].as_str().unwrap());
        assert!(path.starts_with(d.join("new-hub")));
        assert_eq!(ids_of(path).0, out["new_datahub"].as_str().unwrap());
    }
    assert!(!d.join("hub").exists(), "the old hub is gone");
    // The hub came back in one command (issue 15): restore-hub, one instant for all.
    let hub = &out["restore_hub"];
    assert_eq!(hub["connectors"].as_array().unwrap().len(), 4, "{hub}");
    assert_eq!(hub["to_datahub"], out["new_datahub"]);
    assert!(hub["instant"].is_string());
}

/// A download's progress that, on the first bytes received (the first ranged GET has
/// answered, no later range is asked for yet), puts `with` at `key`: another backup's
/// canonical object landing while a restore reads the old one.
struct ReplaceOnce<'a> {
    tb: &'a TestBucket,
    key: &'a str,
    with: std::sync::Mutex<Option<Vec<u8>>>,
}

impl hubvault::progress::Progress for ReplaceOnce<'_> {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {
        let with = self.with.lock().unwrap().take();
        if let Some(bytes) = with {
            // A thread of its own: this runs on the download's runtime.
            std::thread::scope(|s| {
                s.spawn(|| put(self.tb, self.key, bytes)).join().unwrap();
            });
        }
    }
    fn end(&self) {}
}

/// Bytes that neither repeat nor are zeros, from a seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// An object replaced between the first ranged GET of a download and the next (a backup
/// committing a new canonical object while a restore reads it), by one of the same size
/// and by a shorter one: the file written is one object whole, the old or the new, never
/// the start of one and the rest of the other, and the sha256 returned is its own.
fn replaced_between_ranges(tb: &TestBucket) {
    let key = "acme/replaced/sqlite.db";
    let old = noise(20 << 20, 1);
    for new in [noise(20 << 20, 2), noise(12 << 20, 3)] {
        put(tb, key, old.clone());
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("download");
        let progress = ReplaceOnce {
            tb,
            key,
            with: std::sync::Mutex::new(Some(new.clone())),
        };
        let got = rt()
            .block_on(tb.bucket().get_to_file(
                &object_store::path::Path::from(key),
                &dest,
                Encoding::Plain,
                &progress,
            ))
            .unwrap();
        assert!(
            progress.with.lock().unwrap().is_none(),
            "replaced mid-download"
        );
        let file = std::fs::read(&dest).unwrap();
        assert_eq!(got.sha256, sha_hex(&file));
        assert_eq!(got.plain_bytes, file.len() as u64);
        assert!(
            file == old || file == new,
            "the download mixes two objects ({} bytes; old {}, new {})",
            file.len(),
            old.len(),
            new.len()
        );
        // S3: the later ranges' If-Match fails, the download starts over on the new
        // object. A local directory: one descriptor of the old file, read to its end.
        let want = match tb.kind {
            crate::common::Kind::S3 => &new,
            crate::common::Kind::Local => &old,
        };
        assert!(file == *want, "{} bytes", file.len());
    }
}
both!(
    an_object_replaced_between_two_ranged_gets_downloads_as_one_object_whole,
    replaced_between_ranges
);
