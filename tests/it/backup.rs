//! `hubvault backup`: the seed's rule, on both backends.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::both;
use crate::common::{
    AuthMoto, Kind, TestBucket, connector_db, download_with_foreign_client, json_of, rows, run,
    sha256_of, stderr,
};

fn backup(tb: &TestBucket, db: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run(tb
        .cmd()
        .args(["backup", "--json", "--db"])
        .arg(db)
        .args(extra));
    json_of(&out, 0)
}

fn canonical(spec: &crate::fixture::Spec) -> String {
    format!(
        "acme/datahub/{}/connector/{}/sqlite.db",
        spec.datahub, spec.connector
    )
}

fn sqlite3_cli(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 CLI is installed");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn lands_at_exact_key_and_foreign_clients_read_it(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", 500);
    let key = canonical(&spec);
    let first = backup(tb, &db, &[]);
    assert_eq!(first["decision"], "uploaded");
    assert_eq!(first["reason"], "no backup at the key");
    assert_eq!(first["key"], key.as_str());
    assert_eq!(first["new_version"], true);

    let got = tempfile::tempdir().unwrap();
    let dl = got.path().join("sqlite.db");
    download_with_foreign_client(tb, &key, &dl);
    assert_eq!(sha256_of(&dl), first["sha256"].as_str().unwrap());
    // The seed's manual restore opens the object in a SQLite tool: Debian's sqlite3 CLI.
    assert_eq!(sqlite3_cli(&dl, "PRAGMA integrity_check"), "ok");
    assert_eq!(sqlite3_cli(&dl, "SELECT count(*) FROM Events"), "500");
    for table in [
        "Integrations",
        "Events",
        "Uploads",
        "Commands",
        "SequelizeMeta",
    ] {
        assert_eq!(rows(&dl, table), rows(&db, table), "{table}");
    }
    // Everything else hubvault wrote is beside it, under hubvault/.
    let prefix = key.trim_end_matches("sqlite.db");
    for (k, _) in tb.keys("acme") {
        assert!(
            k == key || k.starts_with(&format!("{prefix}hubvault/")),
            "unexpected key {k}"
        );
    }
}
both!(
    backup_lands_at_the_seeds_key_and_a_foreign_client_reads_the_same_rows,
    lands_at_exact_key_and_foreign_clients_read_it
);

fn wal_only_rows_are_backed_up(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "solace", 100);
    // The connector keeps its connection open and nothing checkpoints: the new rows
    // exist only in sqlite.db-wal.
    let writer = rusqlite::Connection::open(&db).unwrap();
    writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    for i in 0..250 {
        writer
            .execute(
                "INSERT INTO Events (integration, source, externalId, eventType, createdAt, updatedAt)
                 SELECT id, json_extract(sources, '$[0]'), ?1, 'MESSAGE_RECEIVED', '2026-11-24', '2026-11-24' FROM Integrations",
                [format!("wal-only-{i}")],
            )
            .unwrap();
    }
    let wal = hubvault::sqlite::fsio::side_path(&db, "-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "the rows must be in the WAL"
    );
    // A raw copy of the main file alone would miss them:
    let raw = tempfile::tempdir().unwrap();
    std::fs::copy(&db, raw.path().join("copy.db")).unwrap();
    assert_eq!(
        sqlite3_cli(&raw.path().join("copy.db"), "SELECT count(*) FROM Events"),
        "100"
    );

    let r = backup(tb, &db, &[]);
    assert_eq!(r["decision"], "uploaded");
    let got = tempfile::tempdir().unwrap();
    let dl = got.path().join("sqlite.db");
    download_with_foreign_client(tb, &canonical(&spec), &dl);
    assert_eq!(sqlite3_cli(&dl, "SELECT count(*) FROM Events"), "350");
    assert_eq!(
        sqlite3_cli(
            &dl,
            "SELECT count(*) FROM Events WHERE externalId LIKE 'wal-only-%'"
        ),
        "250"
    );
    drop(writer);
}
both!(
    rows_committed_only_in_the_wal_are_in_the_backup,
    wal_only_rows_are_backed_up
);

fn max_age_rule_with_real_ages(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 50);
    assert_eq!(
        backup(tb, &db, &["--max-age", "1h"])["decision"],
        "uploaded"
    );
    let fresh = backup(tb, &db, &["--max-age", "1h"]);
    assert_eq!(fresh["decision"], "skipped");
    assert!(
        fresh["reason"]
            .as_str()
            .unwrap()
            .contains("younger than --max-age 1h"),
        "{fresh}"
    );
    // Last-Modified has one-second resolution on S3.
    std::thread::sleep(Duration::from_millis(2100));
    let stale = backup(tb, &db, &["--max-age", "1s"]);
    assert_eq!(stale["decision"], "uploaded");
    assert!(
        stale["reason"]
            .as_str()
            .unwrap()
            .contains("older than --max-age 1s"),
        "{stale}"
    );
    // Unchanged database: no new version, but the canonical object is refreshed.
    assert_eq!(stale["new_version"], false);
    let forced = backup(tb, &db, &["--force"]);
    assert_eq!(forced["decision"], "uploaded");
    assert_eq!(forced["reason"], "--force");
}
both!(
    backup_skips_while_younger_than_max_age_and_uploads_when_older_or_forced,
    max_age_rule_with_real_ages
);

/// The seed's 24 hours exactly, by ageing the object on the local store.
#[test]
fn backup_skips_at_23_hours_and_uploads_at_25_hours_with_the_default_max_age() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "idbs-eworkbook", 50);
    assert_eq!(backup(&tb, &db, &[])["decision"], "uploaded");
    let object = tb.dir.as_ref().unwrap().path().join(canonical(&spec));
    let age = |hours: u64| {
        let f = std::fs::File::options().write(true).open(&object).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(hours * 3600))
            .unwrap();
    };
    age(23);
    let r = backup(&tb, &db, &[]);
    assert_eq!(r["decision"], "skipped", "{r}");
    assert!(
        r["reason"].as_str().unwrap().starts_with("backup is 23h"),
        "{r}"
    );
    age(25);
    let r = backup(&tb, &db, &[]);
    assert_eq!(r["decision"], "uploaded", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("older than --max-age 24h"),
        "{r}"
    );
}

fn skip_takes_no_snapshot(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 20);
    assert_eq!(backup(tb, &db, &[])["decision"], "uploaded");
    // A snapshot needs the temp dir; a skip must not touch it.
    let nowhere = "/nonexistent/hubvault-tmp";
    let r = backup(tb, &db, &["--tmp-dir", nowhere]);
    assert_eq!(r["decision"], "skipped");
    assert!(r["check"].is_null() && r["sha256"].is_null(), "{r}");
    let forced = run(tb
        .cmd()
        .args(["backup", "--force", "--tmp-dir", nowhere, "--db"])
        .arg(&db));
    assert_eq!(
        forced.status.code(),
        Some(1),
        "the same run with --force must need the temp dir"
    );
    assert!(stderr(&forced).contains(nowhere), "{}", stderr(&forced));
}
both!(a_skip_takes_no_snapshot, skip_takes_no_snapshot);

/// Overwrites the middle of the file: the header and the ids stay readable, the B-trees
/// of Events do not.
pub fn corrupt(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    drop(conn);
    let mut bytes = std::fs::read(db).unwrap();
    let page = 4096;
    let pages = bytes.len() / page;
    assert!(pages > 20, "need a database of some size");
    for p in (pages / 2)..(pages / 2 + 4) {
        for b in &mut bytes[p * page + 8..(p + 1) * page] {
            *b = 0x5a;
        }
    }
    std::fs::write(db, bytes).unwrap();
}

fn corrupt_db_never_replaces_a_good_backup(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", 3000);
    let good = backup(tb, &db, &[]);
    let before = tb.keys("acme");
    corrupt(&db);
    let out = run(tb
        .cmd()
        .args(["backup", "--force", "--json", "--db"])
        .arg(&db));
    let doc = json_of(&out, 1);
    assert!(
        doc["error"].as_str().unwrap().contains("integrity_check"),
        "{doc}"
    );
    assert!(stderr(&out).contains("Try:"), "{}", stderr(&out));
    assert_eq!(tb.keys("acme"), before, "nothing may change in the bucket");
    let got = tempfile::tempdir().unwrap();
    let dl = got.path().join("sqlite.db");
    download_with_foreign_client(tb, &canonical(&spec), &dl);
    assert_eq!(sha256_of(&dl), good["sha256"].as_str().unwrap());
}
both!(
    a_database_failing_integrity_check_never_replaces_the_good_backup,
    corrupt_db_never_replaces_a_good_backup
);

/// Each bad input: the documented exit code, a message naming what is wrong, a hint,
/// and no object written.
fn bad_inputs_are_refused(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 2000);
    let odd = tempfile::tempdir().unwrap();
    let not_sqlite = odd.path().join("notes.db");
    std::fs::write(&not_sqlite, "connector notes, not a database\n".repeat(100)).unwrap();
    let no_integrations = odd.path().join("empty.db");
    rusqlite::Connection::open(&no_integrations)
        .unwrap()
        .execute_batch("CREATE TABLE Events(id)")
        .unwrap();
    let no_source = odd.path().join("nosource.db");
    rusqlite::Connection::open(&no_source)
        .unwrap()
        .execute_batch("CREATE TABLE Integrations(id, sources); INSERT INTO Integrations VALUES ('6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01', '[]')")
        .unwrap();
    let (corrupt_db, _) = connector_db(odd.path(), "hrb-cellario", 3000);
    corrupt(&corrupt_db);
    let dbs = db.to_str().unwrap();
    let other = "6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01";
    let own_hub = spec.datahub.to_string();
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (
            vec!["--db", dbs, "--datahub", "not-a-uuid"],
            2,
            vec!["datahub id", "not-a-uuid"],
        ),
        (
            vec!["--db", dbs, "--connector", "../../etc"],
            2,
            vec!["connector id", "../../etc"],
        ),
        (
            vec!["--db", dbs, "--org", "Acme"],
            2,
            vec!["org slug", "Acme"],
        ),
        (vec!["--db", dbs, "--org", "../x"], 2, vec!["org slug"]),
        (
            vec!["--db", dbs, "--datahub", other],
            2,
            vec!["disagrees", other, own_hub.as_str()],
        ),
        (
            vec!["--db", "/nonexistent/sqlite.db"],
            2,
            vec!["/nonexistent/sqlite.db", "no such file"],
        ),
        (
            vec!["--db", not_sqlite.to_str().unwrap()],
            1,
            vec!["notes.db", "not a SQLite database"],
        ),
        (
            vec!["--db", no_integrations.to_str().unwrap()],
            1,
            vec!["empty.db", "no Integrations table"],
        ),
        (
            vec!["--db", no_source.to_str().unwrap()],
            1,
            vec!["nosource.db", "no source"],
        ),
        (
            vec!["--db", corrupt_db.to_str().unwrap()],
            1,
            vec!["integrity_check"],
        ),
        (vec!["--db", dbs, "--max-age", "soon"], 2, vec!["--max-age"]),
    ];
    for (args, code, needles) in cases {
        let out = run(tb.cmd().arg("backup").args(&args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
        }
        // Our errors end with "Try: …"; clap's flag errors with "try '--help'".
        assert!(
            err.contains("\nTry: ") || err.contains("try '--help'"),
            "{args:?}: no hint in {err}"
        );
    }
    assert!(
        tb.keys("").is_empty(),
        "no object may be written: {:?}",
        tb.keys("")
    );
}
both!(
    backup_refuses_bad_input_with_the_documented_exit_code_and_writes_nothing,
    bad_inputs_are_refused
);

#[test]
fn backup_refuses_malformed_bucket_urls_and_missing_local_directories() {
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    for (url, needle) in [
        ("ftp://host/x", "scheme \"ftp\" is not supported"),
        (
            "file:///nonexistent/bucket-dir",
            "mkdir -p /nonexistent/bucket-dir",
        ),
        ("file://relative/dir", "three slashes"),
        ("not a url", "--bucket"),
    ] {
        let out = run(crate::common::hubvault()
            .args(["backup", "--bucket", url, "--db"])
            .arg(&db));
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{url}: {}", stderr(&out));
    }
    assert!(!Path::new("/nonexistent/bucket-dir").exists());
}

#[test]
fn backup_to_an_unreachable_store_fails_with_a_network_hint() {
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    let port = crate::common::free_port(); // nothing listens there
    let out = run(crate::common::hubvault()
        .args(["backup", "--bucket", "s3://hv-unreachable", "--db"])
        .arg(&db)
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("HUBVAULT_S3_RETRY_TIMEOUT", "2")
        .env("HUBVAULT_S3_RETRIES", "2"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("HEAD") && err.contains("hv-unreachable"),
        "{err}"
    );
    assert!(err.contains("Try: cannot reach the store"), "{err}");
}

#[test]
fn backup_with_credentials_the_store_refuses_fails_with_a_credentials_hint() {
    let moto = AuthMoto::start();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    let out = run(crate::common::hubvault()
        .args(["backup", "--bucket", "s3://hv-auth", "--db"])
        .arg(&db)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .env("HUBVAULT_S3_RETRY_TIMEOUT", "5"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("hv-auth"), "{err}");
    assert!(
        err.contains("Try: the store refused our credentials"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-secret"),
        "the secret must never be printed: {err}"
    );
}

#[test]
fn test_buckets_of_both_kinds_are_isolated() {
    // Guards the harness itself: two S3 test buckets never see each other's objects.
    let a = TestBucket::s3();
    let b = TestBucket::s3();
    assert_eq!(a.kind, Kind::S3);
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    backup(&a, &db, &[]);
    assert!(!a.keys("").is_empty());
    assert!(b.keys("").is_empty());
}

/// Issue 16: a relative file URL is refused with the absolute one to use, `/` is not a
/// bucket, and S3 names are checked against S3's rules; all exit 2, nothing written.
#[test]
fn backup_refuses_relative_and_root_file_urls_and_invalid_s3_bucket_names() {
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    let cwd = tempfile::tempdir().unwrap();
    for (url, needle) in [
        ("file:relative/dir", "file://"),
        ("file:./rel", "relative path"),
        ("file:///", "root directory"),
        ("s3://Backups", "uppercase"),
        ("s3://ab", "3 to 63"),
        ("s3://10.0.0.1", "IP address"),
        ("s3://my_bucket", "not allowed"),
    ] {
        let out = run(crate::common::hubvault()
            .current_dir(cwd.path())
            .args(["backup", "--bucket", url, "--db"])
            .arg(&db));
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{url}: {}", stderr(&out));
    }
    // The absolute URL to use is spelled out, from the current directory.
    let out = run(crate::common::hubvault()
        .current_dir(cwd.path())
        .args(["backup", "--bucket", "file:relative/dir", "--db"])
        .arg(&db));
    let want = format!("file://{}/relative/dir", cwd.path().display());
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    assert!(!Path::new("/acme").exists() && !Path::new("/relative").exists());
}

/// A database whose file is longer than the database: SQLite's own preallocation
/// (`SQLITE_FCNTL_CHUNK_SIZE`, which some applications set) grows the file in chunks, so
/// past the pages the header counts lie bytes no reader sees. SQLite takes the size from
/// the header; so does the backup (it used to count the file's pages, and every backup of
/// such a database failed: "the checks saw N pages, the image has M"). In WAL and in
/// rollback-journal mode, the backup succeeds and the canonical object is the database's
/// pages exactly, every row there.
fn longer_file_than_database(tb: &TestBucket) {
    for journal in ["delete", "wal"] {
        let hub = tempfile::tempdir().unwrap();
        let (db, spec) = connector_db(hub.path(), "sdc", 50);
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", journal).unwrap();
        crate::common::set_chunk_size(&conn, 1 << 20);
        conn.execute_batch(
            "CREATE TABLE grown(n INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 300)
             INSERT INTO grown SELECT n, hex(randomblob(40)) FROM c;",
        )
        .unwrap();
        if journal == "wal" {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
        let count = |pragma: &str| -> u64 {
            let n: i64 = conn.query_row(pragma, [], |r| r.get(0)).unwrap();
            n as u64
        };
        let (pages, ps) = (count("PRAGMA page_count"), count("PRAGMA page_size"));
        let len = std::fs::metadata(&db).unwrap().len();
        assert!(
            len > pages * ps,
            "{journal}: the file ({len}) is longer than the database ({pages} pages)"
        );

        let r = backup(tb, &db, &[]);
        assert_eq!(r["decision"], "uploaded", "{journal}: {r}");
        let got = tempfile::tempdir().unwrap();
        let dl = got.path().join("sqlite.db");
        download_with_foreign_client(tb, &canonical(&spec), &dl);
        assert_eq!(
            std::fs::metadata(&dl).unwrap().len(),
            pages * ps,
            "{journal}"
        );
        assert_eq!(
            sqlite3_cli(&dl, "PRAGMA integrity_check"),
            "ok",
            "{journal}"
        );
        for table in ["Integrations", "Events", "grown"] {
            assert_eq!(rows(&dl, table), rows(&db, table), "{journal}: {table}");
        }
        drop(conn);
    }
}
both!(
    a_file_longer_than_its_database_backs_up_as_the_database_in_both_journal_modes,
    longer_file_than_database
);

/// The structural check switches from `integrity_check` to `quick_check` only past
/// `HUBVAULT_FULL_CHECK_MAX_BYTES`: a database of exactly that size gets the full check,
/// one byte over it the quick one, and either uploads; an unparsable value is refused.
#[test]
fn a_database_of_exactly_the_full_check_limit_gets_integrity_check_and_one_byte_over_quick_check() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 400);
    // The image's size: the database's pages (the WAL checkpointed into the file).
    let size = {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let n = |p: &str| -> u64 { c.query_row(p, [], |r| r.get::<_, i64>(0)).unwrap() as u64 };
        n("PRAGMA page_count") * n("PRAGMA page_size")
    };
    for (limit, check) in [(size, "integrity_check"), (size - 1, "quick_check")] {
        let out = run(tb
            .cmd()
            .env("HUBVAULT_FULL_CHECK_MAX_BYTES", limit.to_string())
            .args(["backup", "--force", "--json", "--db"])
            .arg(&db));
        let r = json_of(&out, 0);
        assert_eq!(r["bytes"], size, "{r}");
        assert_eq!(r["check"], check, "limit {limit}: {r}");
    }
    let out = run(tb
        .cmd()
        .env("HUBVAULT_FULL_CHECK_MAX_BYTES", "512MiB")
        .args(["backup", "--force", "--json", "--db"])
        .arg(&db));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A connector keeps the backups of one database file: latest.json names it, and a backup
/// of another file of the same connector is refused (exit 2). With the bucket failing
/// every GET of `latest.json` (500 after the retries), the backup took the manifest for
/// absent: it skipped that check, uploaded the other file into the history and put a
/// `latest.json` naming it over ours. It must fail instead, naming `latest.json`, and
/// leave `latest.json` as it was.
#[test]
fn backup_fails_naming_latest_json_when_the_bucket_does_not_answer_for_it() {
    let tb = TestBucket::s3();
    let proxy = crate::proxy::Proxy::s3();
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 25);
    backup(&tb, &db, &[]);
    let latest_key = format!(
        "acme/datahub/{}/connector/{}/hubvault/latest.json",
        spec.datahub, spec.connector
    );
    let get = |key: &str| {
        let b = tb.bucket();
        crate::common::rt()
            .block_on(b.get_bytes(&object_store::path::Path::from(key)))
            .unwrap()
    };
    let latest_before = get(&latest_key);
    let other = db.with_file_name("other.db");
    std::fs::copy(&db, &other).unwrap();
    // Answered, the rule holds: another file of the connector is refused.
    let out = run(tb.cmd().args(["backup", "--json", "--db"]).arg(&other));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    proxy.inject("GET", "latest.json", crate::proxy::Fault::Status500, 1000);
    let out = run(proxy
        .cmd(&tb)
        .args(["backup", "--json", "--db"])
        .arg(&other));
    let doc = json_of(&out, 1);
    assert!(
        doc["error"].as_str().unwrap().contains("latest.json"),
        "{doc}"
    );
    assert_eq!(
        get(&latest_key),
        latest_before,
        "latest.json still names the connector's own database file"
    );
}
