//! Clear errors: each names the file, key or flag, and says what to try.

use super::*;
use crate::both;
use crate::common::{TestBucket, connector_db, hubvault, json_of, stderr, stdout};
use hubvault::model::ids::{ConnectorId, DatahubId};

// ------------------------------------------------------------- 14. clear errors

/// A table the connector never had, holding the old connector id AND the new one in a
/// UNIQUE column: after the rewrite the two rows would be equal.
fn with_unique_clash(db: &Path, old: &str, new: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch("CREATE TABLE Aliases (cid TEXT UNIQUE, note TEXT)")
        .unwrap();
    c.execute(
        "INSERT INTO Aliases VALUES (?1, 'old'), (?2, 'copied from the new connector')",
        [old, new],
    )
    .unwrap();
}

fn unique_clash(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 10);
    let new_connector = ConnectorId::random().to_string();
    with_unique_clash(&db, &spec.connector.to_string(), &new_connector);
    backup(tb, &db);
    let new_hub = tempfile::tempdir().unwrap();
    let out = restore(
        tb,
        &spec,
        &[
            "--to-datahub",
            &DatahubId::random().to_string(),
            "--to-connector",
            &new_connector,
            "--hub-root",
            p(new_hub.path()),
        ],
    );
    let doc = json_of(&out, 1);
    let (err, hint) = (
        doc["error"].as_str().unwrap(),
        doc["hint"].as_str().unwrap(),
    );
    assert!(err.contains("Aliases") && err.contains("UNIQUE"), "{doc}");
    assert!(
        hint.contains("already holds a row with the new id"),
        "{doc}"
    );
    assert!(names(new_hub.path()).is_empty(), "nothing left in the hub");
    // The same through remap.
    let out = run(hubvault()
        .args(["remap", "--json", "--db", p(&db)])
        .args(["--to-datahub", &DatahubId::random().to_string()])
        .args(["--to-connector", &new_connector]));
    let doc = json_of(&out, 1);
    assert!(
        doc["hint"]
            .as_str()
            .unwrap()
            .contains("already holds a row with the new id"),
        "{doc}"
    );
}
both!(
    a_unique_conflict_after_the_id_rewrite_names_the_table_and_what_to_try,
    unique_clash
);

#[test]
fn a_foreign_key_failure_names_the_row_the_column_and_the_missing_parent() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 10);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA foreign_keys=OFF; UPDATE Events SET integration = '00000000-0000-4000-8000-000000000000' WHERE id = 4;",
    )
    .unwrap();
    drop(c);
    let doc = json_of(
        &run(crate::common::cmd_private_tmp(&tb)
            .args(["backup", "--json", "--db"])
            .arg(&db)),
        1,
    );
    let err = doc["error"].as_str().unwrap();
    assert!(!err.contains("Some("), "{err}");
    assert!(
        err.contains("row 4 (rowid) of table Events")
            && err.contains("Events.integration")
            && err.contains("Integrations"),
        "{err}"
    );
    assert!(
        doc["hint"].as_str().unwrap().contains("foreign_key_check"),
        "{doc}"
    );
    assert!(tb.keys("").is_empty());
}

#[test]
fn a_backup_meeting_a_hot_journal_says_so_and_leaves_the_journal() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 400);
    make_hot_journal(&db);
    let journal = side(&db, "-journal");
    let before = (sha256_of(&db), sha256_of(&journal));
    let doc = json_of(
        &run(crate::common::cmd_private_tmp(&tb)
            .args(["backup", "--json", "--db"])
            .arg(&db)),
        1,
    );
    let err = doc["error"].as_str().unwrap();
    assert!(
        err.contains("hot journal") && err.contains(p(&journal)),
        "{err}"
    );
    assert!(!err.contains("readonly database:") || err.contains("hot journal"));
    assert!(
        doc["hint"].as_str().unwrap().contains("do not delete"),
        "{doc}"
    );
    assert_eq!((sha256_of(&db), sha256_of(&journal)), before);
    assert!(tb.keys("").is_empty());
}

#[test]
fn an_aws_endpoint_url_without_a_scheme_is_a_usage_error_with_exit_2() {
    for endpoint in ["127.0.0.1:9000", "s3.example.com", "ftp://s3.example.com"] {
        let out = run(hubvault().env("AWS_ENDPOINT_URL", endpoint).args([
            "status",
            "--json",
            "--bucket",
            "s3://some-bucket",
        ]));
        assert_no_panic(endpoint, &out);
        let doc = json_of(&out, 2);
        let err = doc["error"].as_str().unwrap();
        assert!(err.contains("AWS_ENDPOINT_URL"), "{doc}");
        assert!(doc["hint"].as_str().unwrap().contains("http"), "{doc}");
    }
}

#[test]
fn malformed_hubvault_variables_are_refused_by_name_with_exit_2() {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 3);
    let tb = TestBucket::local();
    let (d, c) = (spec.datahub.to_string(), spec.connector.to_string());
    let backup_args = vec!["backup", "--db", p(&db)];
    let agent = vec!["agent", "--once", "--hub-root", p(hub.path())];
    let restore_args = vec![
        "restore",
        "--yes",
        "--datahub",
        &d,
        "--connector",
        &c,
        "--hub-root",
        p(hub.path()),
    ];
    let cases: Vec<(&str, &str, Vec<&str>, &str)> = vec![
        (
            "HUBVAULT_FULL_CHECK_MAX_BYTES",
            "lots",
            backup_args.clone(),
            "HUBVAULT_FULL_CHECK_MAX_BYTES",
        ),
        (
            "HUBVAULT_FULL_CHECK_MAX_BYTES",
            "-1",
            vec!["status"],
            "HUBVAULT_FULL_CHECK_MAX_BYTES",
        ),
        (
            "HUBVAULT_THEN_TIMEOUT",
            "soon",
            restore_args.clone(),
            "soon",
        ),
        ("HUBVAULT_MAX_AGE", "old", agent.clone(), "old"),
        ("HUBVAULT_INTERVAL", "often", agent.clone(), "often"),
        (
            "HUBVAULT_SHUTDOWN_GRACE",
            "1 fortnight",
            agent.clone(),
            "fortnight",
        ),
        ("HUBVAULT_JITTER", "much", agent.clone(), "much"),
        (
            "HUBVAULT_COMPACT_EVERY",
            "often",
            agent.clone(),
            "HUBVAULT_COMPACT_EVERY",
        ),
        (
            "HUBVAULT_METRICS_ADDR",
            "everywhere",
            agent.clone(),
            "everywhere",
        ),
        ("HUBVAULT_LOG_FORMAT", "xml", vec!["status"], "xml"),
    ];
    for (var, value, args, named) in cases {
        let out = run(tb.cmd().env(var, value).args(&args).arg("--json"));
        assert_no_panic(var, &out);
        let doc = json_of(&out, 2);
        assert!(
            doc["error"].as_str().unwrap().contains(named),
            "{var}={value}: {doc}"
        );
    }
    // The S3 ones, with an S3 bucket.
    for (var, value) in [
        ("HUBVAULT_S3_TIMEOUT", "soon"),
        ("HUBVAULT_S3_CONNECT_TIMEOUT", "-1"),
        ("HUBVAULT_S3_RETRY_TIMEOUT", "1x"),
        ("HUBVAULT_S3_RETRIES", "many"),
    ] {
        let out = run(hubvault()
            .env(var, value)
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .args(["status", "--json", "--bucket", "s3://b-b-b"]));
        let doc = json_of(&out, 2);
        assert!(doc["error"].as_str().unwrap().contains(var), "{doc}");
    }
}

#[test]
fn a_database_without_an_events_table_is_refused_by_name() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 3);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA foreign_keys=OFF; DROP TABLE Uploads; DROP TABLE Events;")
        .unwrap();
    drop(c);
    let doc = json_of(
        &run(crate::common::cmd_private_tmp(&tb)
            .args(["backup", "--json", "--db"])
            .arg(&db)),
        1,
    );
    let err = doc["error"].as_str().unwrap();
    assert!(
        err.contains(p(&db)) && err.contains("no Events table"),
        "{doc}"
    );
    assert!(tb.keys("").is_empty());
}

// ------------------------------------------------------------- 15. one file name per connector

fn second_file(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "sdc", 20);
    backup(tb, &db);
    let before = tb.keys("");
    let second = db.parent().unwrap().join("foo.db");
    std::fs::copy(&db, &second).unwrap();
    rusqlite::Connection::open(&second)
        .unwrap()
        .execute("DELETE FROM Events WHERE id > 5", [])
        .unwrap();
    let out = run(crate::common::cmd_private_tmp(tb)
        .args(["backup", "--json", "--force", "--db"])
        .arg(&second));
    let doc = json_of(&out, 2);
    let err = doc["error"].as_str().unwrap();
    assert!(err.contains("foo.db") && err.contains("sqlite.db"), "{doc}");
    assert!(err.contains(&spec.connector.to_string()), "{doc}");
    assert!(doc["hint"].as_str().unwrap().contains("sqlite.db"), "{doc}");
    // The connector's history is as it was: no foo.db object, no new version.
    let after = tb.keys("");
    assert_eq!(
        after.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        before.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
}
both!(
    a_second_database_file_of_one_connector_is_refused_and_its_history_kept,
    second_file
);

// ------------------------------------------------------------- 16. JSON usage errors, no colours

#[test]
fn usage_errors_under_json_are_one_json_document_on_stdout() {
    let cases: Vec<Vec<&str>> = vec![
        vec!["status", "--bogus-flag", "--json"],
        vec!["--json", "backup"],
        vec!["backup", "--db", "x.db", "--max-age", "soon", "--json"],
        vec!["restore", "--json", "--datahub", "x"],
        vec!["--json", "no-such-command"],
        vec!["verify", "--sample", "many", "--json"],
        vec!["--json"],
    ];
    for args in cases {
        let out = run(hubvault().args(&args));
        assert_no_panic(&args.join(" "), &out);
        let doc = json_of(&out, 2);
        assert_eq!(doc["ok"], false, "{args:?}: {doc}");
        assert_eq!(doc["exit_code"], 2, "{args:?}: {doc}");
        assert!(doc["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(!stderr(&out).is_empty(), "the message is on stderr too");
    }
    // Help is not an error.
    let out = run(hubvault().arg("--help"));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Usage"));
}

#[test]
fn logs_and_messages_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let tb = TestBucket::local();
    let hub = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(hub.path(), "sdc", 3);
    for args in [
        vec!["backup", "-vv", "--db", p(&db)],
        vec!["agent", "--once", "--hub-root", p(hub.path())],
        vec!["backup", "--bogus"],
        vec!["status", "--org", "Not A Slug"],
    ] {
        let out = run(crate::common::cmd_private_tmp(&tb).args(&args));
        let err = stderr(&out);
        assert!(!err.is_empty(), "{args:?} logged nothing");
        assert!(!err.contains('\u{1b}'), "{args:?}: colour codes in {err:?}");
    }
}
