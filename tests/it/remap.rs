//! `hubvault remap`: the seed's steps 5 to 10 on a local file, against the seed's own SQL.

use std::path::{Path, PathBuf};
use std::process::Command;

use hubvault::model::ids::{ConnectorId, DatahubId};

use crate::common::{connector_db, hubvault, json_of, rows, run, sha256_of, stderr};

/// The seed's two UPDATE statements (connector-backups.txt, step 8), with the source
/// JSON taken from the database itself and only its two ids replaced (json_set), as the
/// seed tells the operator to do by hand; run with the sqlite3 CLI, foreign keys off.
fn seeds_sql(db: &Path, old_hub: &str, new_hub: &str, new_conn: &str) {
    let sql = format!(
        "PRAGMA foreign_keys=off;
update Integrations
set id='{new_hub}',
sources=json_set(sources, '$[0].id', '{new_conn}', '$[0].integrationId', '{new_hub}')
where id = '{old_hub}';
update Events
set integration='{new_hub}',
source=json_set(source, '$.id', '{new_conn}', '$.integrationId', '{new_hub}')
where integration='{old_hub}';
PRAGMA foreign_keys=on;"
    );
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rows with every TEXT value that parses as a JSON object or array replaced by the
/// parsed value: JSON compared as values, everything else exactly.
fn rows_json_as_values(db: &Path, table: &str) -> Vec<serde_json::Value> {
    rows(db, table)
        .into_iter()
        .map(|mut r| {
            for v in r.as_object_mut().unwrap().values_mut() {
                if let Some(s) = v.as_str()
                    && (s.starts_with('{') || s.starts_with('['))
                    && let Ok(parsed) = serde_json::from_str::<serde_json::Value>(s)
                {
                    *v = parsed;
                }
            }
            r
        })
        .collect()
}

/// Every row of a table, typed (a BLOB as `blob:<hex>`), ordered by the first column
/// that is not an id (rowid, or `n` for the WITHOUT ROWID table of the tests).
fn table_rows(db: &Path, table: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let order = if table == "Mystery" { "n" } else { "rowid" };
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY {order}"))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                let v: rusqlite::types::Value = r.get(i)?;
                Ok(match v {
                    rusqlite::types::Value::Blob(b) => format!("blob:{}", hex::encode(b)),
                    other => format!("{other:?}"),
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn copy(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

fn remap(db: &Path, hub: &str, conn: &str, extra: &[&str]) -> std::process::Output {
    run(hubvault()
        .args(["remap", "--json", "--db"])
        .arg(db)
        .args(["--to-datahub", hub, "--to-connector", conn])
        .args(extra))
}

fn old_ids_left(db: &Path, ids: &[String]) -> Vec<String> {
    let conn = hubvault::sqlite::db::open_read_only(db).unwrap();
    hubvault::sqlite::rewrite::scan_ids(&conn, db, ids)
        .unwrap()
        .into_iter()
        .map(|f| f.place)
        .collect()
}

fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn remap_gives_the_same_integrations_and_events_as_the_seeds_sql() {
    let dir = tempfile::tempdir().unwrap();
    let (live, spec) = connector_db(dir.path(), "hrb-cellario", 300);
    // The seed's world: the ids only where the seed says they are.
    sqlite3(
        &live,
        "UPDATE Integrations SET state='{}'; DELETE FROM Uploads;",
    );
    let seed = copy(&live, dir.path(), "seed.db");
    let ours = copy(&live, dir.path(), "ours.db");
    let (hub, conn) = (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    );
    seeds_sql(&seed, &spec.datahub.to_string(), &hub, &conn);
    json_of(&remap(&ours, &hub, &conn, &[]), 0);
    for table in ["Integrations", "Events"] {
        let (a, b) = (
            rows_json_as_values(&seed, table),
            rows_json_as_values(&ours, table),
        );
        assert_eq!(a.len(), b.len());
        assert_eq!(a, b, "{table} differs from the seed's SQL");
    }
    assert_eq!(
        sqlite3(&ours, "PRAGMA foreign_key_check; PRAGMA integrity_check"),
        "ok"
    );
}

#[test]
fn remap_leaves_no_old_id_in_other_tables_where_the_seeds_sql_does() {
    let dir = tempfile::tempdir().unwrap();
    let (live, spec) = connector_db(dir.path(), "sdc", 200);
    let seed = copy(&live, dir.path(), "seed.db");
    let ours = copy(&live, dir.path(), "ours.db");
    let (hub, conn) = (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    );
    seeds_sql(&seed, &spec.datahub.to_string(), &hub, &conn);
    json_of(&remap(&ours, &hub, &conn, &[]), 0);
    let old = [spec.datahub.to_string(), spec.connector.to_string()];
    let seed_left = old_ids_left(&seed, &old);
    assert!(
        seed_left.contains(&"Integrations.state".to_string()),
        "{seed_left:?}"
    );
    assert!(
        seed_left.contains(&"Uploads.filePath".to_string()),
        "{seed_left:?}"
    );
    assert_eq!(old_ids_left(&ours, &old), Vec::<String>::new());
    // And the state keyed by connector id now has the new id as its key.
    let state: serde_json::Value =
        serde_json::from_str(&sqlite3(&ours, "SELECT state FROM Integrations")).unwrap();
    assert!(state.get(&conn).is_some(), "{state}");
}

#[test]
fn remap_dry_run_prints_the_plan_per_column_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(dir.path(), "solace", 120);
    let before = sha256_of(&db);
    let (hub, conn) = (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    );
    let plan = json_of(&remap(&db, &hub, &conn, &["--dry-run"]), 0);
    assert_eq!(sha256_of(&db), before);
    let count = |t: &str, c: &str| {
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["table"] == t && x["column"] == c)
            .map(|x| x["values"].as_u64().unwrap())
    };
    assert_eq!(count("Events", "integration"), Some(120));
    assert_eq!(count("Events", "source"), Some(120));
    assert_eq!(count("Integrations", "id"), Some(1));
    assert_eq!(count("Events", "payload"), None);
    assert_eq!(plan["dry_run"], true);
    let text = run(hubvault()
        .args(["remap", "--dry-run", "--db"])
        .arg(&db)
        .args(["--to-datahub", &hub, "--to-connector", &conn]));
    assert!(crate::common::stdout(&text).contains("Events.integration"));
}

#[test]
fn remap_run_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(dir.path(), "hrb-cellario", 50);
    let (hub, conn) = (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    );
    let first = json_of(&remap(&db, &hub, &conn, &[]), 0);
    assert!(first["total_values"].as_u64().unwrap() > 100);
    let after_first = rows(&db, "Events");
    let second = json_of(&remap(&db, &hub, &conn, &[]), 0);
    assert_eq!(second["total_values"], 0);
    assert_eq!(rows(&db, "Events"), after_first);
}

#[test]
fn remap_rewrites_unknown_tables_json_keys_paths_blobs_and_uppercase_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(dir.path(), "idbs-eworkbook", 40);
    let (d, c) = (spec.datahub.to_string(), spec.connector.to_string());
    let (du, cu) = (d.to_uppercase(), c.to_uppercase());
    sqlite3(
        &db,
        &format!(
            "CREATE TABLE Mystery (k TEXT PRIMARY KEY, v BLOB, n INTEGER, g TEXT GENERATED ALWAYS AS ('len:' || length(k)) STORED) WITHOUT ROWID;
             INSERT INTO Mystery (k, v, n) VALUES ('/var/datahub/{c}/cursor', CAST('{{\"{c}\": 1}}' AS BLOB), 7),
                                                  ('HUB-{du}', x'00ff', 8), ('nothing here', NULL, 9);
             CREATE TABLE Audit (id INTEGER PRIMARY KEY, note TEXT);
             CREATE TRIGGER touch AFTER UPDATE ON Events BEGIN UPDATE Events SET updatedAt = 'TOUCHED' WHERE id = new.id; END;
             CREATE TRIGGER audit AFTER INSERT ON Events BEGIN INSERT INTO Audit (note) VALUES ('{cu} got an event'); END;
             CREATE VIEW mine AS SELECT * FROM Events WHERE integration = '{d}';"
        ),
    );
    let tables = [
        "Integrations",
        "Events",
        "Uploads",
        "Commands",
        "SequelizeMeta",
        "Mystery",
        "Audit",
    ];
    let before: Vec<_> = tables.iter().map(|t| table_rows(&db, t)).collect();
    let (hub, conn) = (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    );
    let out = json_of(&remap(&db, &hub, &conn, &[]), 0);
    assert!(
        out["schema_objects"].as_array().unwrap().len() == 2,
        "view and trigger rewritten: {out}"
    );
    // Everything is as before with only the ids (any spelling, also as hex of a BLOB)
    // replaced: updatedAt was not touched by the trigger, row ids kept, types kept.
    let swap = |s: String| {
        let mut s = s;
        for (a, b) in [(&d, &hub), (&c, &conn)] {
            s = s
                .replace(a.as_str(), b)
                .replace(&a.to_uppercase(), &b.to_uppercase())
                .replace(&hex::encode(a.as_bytes()), &hex::encode(b.as_bytes()));
        }
        s
    };
    for (t, rows_before) in tables.iter().zip(before) {
        let expected = swap(serde_json::to_string(&rows_before).unwrap());
        assert_eq!(
            serde_json::to_string(&table_rows(&db, t)).unwrap(),
            expected,
            "{t}"
        );
    }
    assert_eq!(
        sqlite3(&db, "SELECT typeof(v) FROM Mystery WHERE n = 7"),
        "blob"
    );
    assert_eq!(
        old_ids_left(&db, &[d.clone(), c.clone()]),
        Vec::<String>::new()
    );
    // The triggers are back and work; the view names the new id.
    assert_eq!(
        sqlite3(
            &db,
            "SELECT count(*) FROM sqlite_schema WHERE type='trigger'"
        ),
        "2"
    );
    assert_eq!(sqlite3(&db, "SELECT count(*) FROM mine"), "40");
    sqlite3(&db, "UPDATE Events SET status = 'X' WHERE id = 1");
    assert_eq!(
        sqlite3(&db, "SELECT updatedAt FROM Events WHERE id = 1"),
        "TOUCHED"
    );
}

/// `id` with one letter upper case and the rest lower: mixed whatever the id (its first
/// characters can all be digits, so upper-casing them would not be enough).
fn mixed_case(id: &str) -> String {
    let at = id.find(|ch: char| ch.is_ascii_lowercase()).unwrap();
    let mixed = format!(
        "{}{}{}",
        &id[..at],
        id[at..=at].to_uppercase(),
        &id[at + 1..]
    );
    assert!(mixed != id && mixed != id.to_uppercase(), "{mixed}");
    mixed
}

#[test]
fn remap_refuses_a_mixed_case_id_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(dir.path(), "sdc", 20);
    let c = spec.connector.to_string();
    let mixed = mixed_case(&c);
    sqlite3(
        &db,
        &format!("CREATE TABLE Notes (t TEXT); INSERT INTO Notes VALUES ('see {mixed}');"),
    );
    let before = sha256_of(&db);
    let out = remap(
        &db,
        &DatahubId::random().to_string(),
        &ConnectorId::random().to_string(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Notes.t"), "{}", stderr(&out));
    assert!(stderr(&out).contains("Try:"));
    assert_eq!(sha256_of(&db), before);
}

#[test]
fn remap_refuses_malformed_new_ids_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(dir.path(), "sdc", 5);
    let before = sha256_of(&db);
    let hub = DatahubId::random().to_string();
    for (flag_value, flag) in [
        (("not-a-uuid", spec.connector.to_string()), "--to-datahub"),
        (
            (
                hub.as_str(),
                "6F1C2A9E-4B7D-4E1A-9C3F-2D8E5B7A1C01".to_string(),
            ),
            "--to-connector",
        ),
    ] {
        let ((h, c), flag) = (flag_value, flag);
        let out = remap(&db, h, &c, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(flag), "{}", stderr(&out));
    }
    // A new id equal to the other old id (swapped) is refused too.
    let out = remap(
        &db,
        &spec.connector.to_string(),
        &ConnectorId::random().to_string(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(sha256_of(&db), before);
}

/// No temp file of `remap --output` (nor its `-wal`/`-shm`) is left in `dir`.
fn assert_no_remap_temp_files(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("hubvault-remap"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn remap_output_writes_a_new_checked_file_and_leaves_the_source_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(dir.path(), "solace", 60);
    let before = sha256_of(&db);
    let out_db = dir.path().join("out.db");
    let (hub, conn) = (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    );
    let out_arg = out_db.to_str().unwrap().to_string();
    json_of(&remap(&db, &hub, &conn, &["--output", &out_arg]), 0);
    assert_eq!(sha256_of(&db), before);
    assert_eq!(sqlite3(&out_db, "SELECT id FROM Integrations"), hub);
    assert_eq!(sqlite3(&out_db, "PRAGMA journal_mode"), "wal");
    assert_eq!(sqlite3(&out_db, "SELECT count(*) FROM Events"), "60");
    assert_eq!(
        old_ids_left(
            &out_db,
            &[spec.datahub.to_string(), spec.connector.to_string()]
        ),
        Vec::<String>::new()
    );
    // An existing --output is never overwritten.
    let again = remap(&db, &hub, &conn, &["--output", &out_arg]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already exists"));
    assert_no_remap_temp_files(dir.path());
}

/// `--output` commits its rewrite into a temp file before checking it (the checks then
/// run on two cores): a refusal found by those checks must still leave no file at
/// `--output`, no temp file, and the source as it was.
#[test]
fn remap_output_refused_by_the_checks_of_its_result_leaves_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(dir.path(), "sdc", 30);
    let mixed = mixed_case(&spec.connector.to_string());
    // An orphan the rewrite keeps (foreign keys are off while it runs): its result fails
    // foreign_key_check. And, in another copy, an old id it cannot rewrite.
    let orphan = copy(&db, dir.path(), "orphan.db");
    sqlite3(
        &orphan,
        "PRAGMA foreign_keys=OFF; INSERT INTO Uploads (eventId, filePath, createdAt, updatedAt) VALUES (999999, 'x', 'now', 'now');",
    );
    let mixed_db = copy(&db, dir.path(), "mixed.db");
    sqlite3(
        &mixed_db,
        &format!("CREATE TABLE Notes (t TEXT); INSERT INTO Notes VALUES ('see {mixed}');"),
    );
    let (hub, conn) = (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    );
    for (src, says) in [(&orphan, "foreign_key_check"), (&mixed_db, "Notes.t")] {
        let before = sha256_of(src);
        let out_db = dir.path().join("out.db");
        let out = remap(src, &hub, &conn, &["--output", out_db.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!out_db.exists(), "{}", stderr(&out));
        assert_no_remap_temp_files(dir.path());
        assert_eq!(sha256_of(src), before);
    }
}

/// A column declared with numeric affinity (`UUID` is one: NUMERIC) stores text that reads
/// as a number as a number. An unhyphenated id is such text when the new id has decimal
/// digits only: written by SQL it would become a REAL with 15 digits. The rewrite refuses
/// (exit 1, naming the column), in place and with `--output`, and changes nothing.
#[test]
fn remap_refuses_to_let_a_numeric_column_store_a_new_id_as_a_number_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(dir.path(), "sdc", 10);
    let plain = spec.datahub.as_uuid().simple().to_string();
    sqlite3(
        &db,
        &format!(
            "CREATE TABLE Links (hub UUID, note TEXT); INSERT INTO Links VALUES ('{plain}', 'x');"
        ),
    );
    let before = sha256_of(&db);
    let digits_only = "11111111-2222-4333-8444-555555555555";
    let conn = "66666666-7777-4888-8999-aaaaaaaaaaaa".to_string();
    let out_db = dir.path().join("out.db");
    for extra in [vec![], vec!["--output", out_db.to_str().unwrap()]] {
        let out = remap(&db, digits_only, &conn, &extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("Links") && err.contains("column hub") && err.contains("as a number"),
            "{err}"
        );
        assert_eq!(sha256_of(&db), before, "{extra:?}");
        assert!(!out_db.exists());
        assert_no_remap_temp_files(dir.path());
    }
    assert_eq!(
        sqlite3(&db, "SELECT typeof(hub), hub FROM Links"),
        format!("text|{plain}")
    );
    // A new id with a letter is text whatever the column: rewritten, still text.
    let hub = "6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01".to_string();
    json_of(&remap(&db, &hub, &conn, &[]), 0);
    let new_plain = hub.replace('-', "");
    assert_eq!(
        sqlite3(&db, "SELECT typeof(hub), hub FROM Links"),
        format!("text|{new_plain}")
    );
}

/// `--output` reads its source as a backup does (the shared page reader): rows committed
/// only in the `-wal` of a database in use (a connection holds it open, nothing
/// checkpointed) are in the output, and a rollback-journal source gives the same rows in
/// its own journal mode.
#[test]
fn remap_output_copies_the_rows_committed_only_in_the_wal_of_a_database_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = connector_db(dir.path(), "solace", 40);
    let live = rusqlite::Connection::open(&db).unwrap();
    live.execute_batch(
        "PRAGMA wal_autocheckpoint=0;
         CREATE TABLE extra(n INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 500)
         INSERT INTO extra SELECT n, printf('row %d', n) FROM c;",
    )
    .unwrap();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "rows in the -wal"
    );
    let rollback = dir.path().join("rollback.db");
    live.execute("VACUUM INTO ?1", [rollback.to_str().unwrap()])
        .unwrap();
    assert_eq!(sqlite3(&rollback, "PRAGMA journal_mode"), "delete");
    for (src, mode) in [(&db, "wal"), (&rollback, "delete")] {
        let out_db = dir.path().join(format!("out-{mode}.db"));
        let (hub, conn) = (
            DatahubId::random().to_string(),
            ConnectorId::random().to_string(),
        );
        json_of(
            &remap(src, &hub, &conn, &["--output", out_db.to_str().unwrap()]),
            0,
        );
        assert_eq!(
            sqlite3(&out_db, "SELECT count(*), sum(n) FROM extra"),
            "500|125250",
            "{mode}"
        );
        assert_eq!(sqlite3(&out_db, "SELECT id FROM Integrations"), hub);
        assert_eq!(sqlite3(&out_db, "PRAGMA journal_mode"), mode);
    }
    drop(live);
    assert_no_remap_temp_files(dir.path());
}

/// A database whose index no longer matches its table (its definition edited in
/// `sqlite_schema`: `integrity_check` fails, the page walk and `quick_check` do not).
/// Remap in place refuses it (exit 1, naming the check) and changes no row, in WAL mode,
/// where the full check runs on the state before the rewrite beside it, and in
/// rollback-journal mode, where it runs on the result before the commit.
#[test]
fn remap_in_place_refuses_a_database_that_fails_integrity_check_and_changes_nothing() {
    for (mode, when) in [
        ("wal", "before the rewrite"),
        ("delete", "after the rewrite"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = connector_db(dir.path(), "sdc", 40);
        sqlite3(
            &db,
            &format!(
                "PRAGMA journal_mode={mode}; PRAGMA writable_schema=ON;
                 UPDATE sqlite_schema SET sql = 'CREATE INDEX `events_status_updated` ON `Events` (`eventType`, `updatedAt`)'
                 WHERE name = 'events_status_updated';"
            ),
        );
        assert_ne!(sqlite3(&db, "PRAGMA integrity_check"), "ok");
        assert_eq!(sqlite3(&db, "PRAGMA quick_check"), "ok");
        let before = table_rows(&db, "Events");
        let out = remap(
            &db,
            &DatahubId::random().to_string(),
            &ConnectorId::random().to_string(),
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(when) && err.contains("integrity_check"),
            "{mode}: {err}"
        );
        assert_eq!(table_rows(&db, "Events"), before, "{mode}");
    }
}

/// Remaps `db` in place onto new random ids (exit 0); the new hub id.
fn remap_to_new_ids(db: &Path) -> String {
    let (hub, conn) = (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    );
    json_of(&remap(db, &hub, &conn, &[]), 0);
    hub
}

/// Rows of `sqlite_stat4` whose sample holds `id` (its text, as stored).
fn stat4_samples_naming(db: &Path, id: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row(
        "SELECT count(*) FROM sqlite_stat4 WHERE instr(sample, CAST(?1 AS BLOB)) > 0",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

/// `ANALYZE` in a SQLite built with STAT4 (as hubvault's own) keeps samples of index keys
/// in `sqlite_stat4`: the hub id, first column of `UNIQUE(integration, ...)`. A remap
/// used to leave them there, unseen by its final scan. Now no sample names an old id
/// after a remap, on both rewrite paths, in place and with `--output`, and the samples
/// are still there (recomputed from the rewritten index, not dropped).
#[test]
fn remap_leaves_no_old_id_in_the_planners_samples_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let (live, spec) = connector_db(dir.path(), "sdc", 300);
    rusqlite::Connection::open(&live)
        .unwrap()
        .execute_batch("ANALYZE")
        .unwrap();
    let old_hub = spec.datahub.to_string();
    assert!(
        stat4_samples_naming(&live, &old_hub) > 0,
        "the premise: ANALYZE sampled the hub id"
    );
    let samples: i64 = sqlite3(&live, "SELECT count(*) FROM sqlite_stat4")
        .parse()
        .unwrap();
    for (page_rewrite, output) in [("1", false), ("1", true), ("0", false), ("0", true)] {
        let src = copy(
            &live,
            dir.path(),
            &format!("src-{page_rewrite}-{output}.db"),
        );
        let out = dir.path().join(format!("out-{page_rewrite}-{output}.db"));
        let (hub, conn) = (
            DatahubId::random().to_string(),
            ConnectorId::random().to_string(),
        );
        let mut cmd = hubvault();
        cmd.env("HUBVAULT_PAGE_REWRITE", page_rewrite)
            .args(["remap", "--json", "--db"])
            .arg(&src)
            .args(["--to-datahub", &hub, "--to-connector", &conn]);
        if output {
            cmd.arg("--output").arg(&out);
        }
        json_of(&run(&mut cmd), 0);
        let result = if output { &out } else { &src };
        let what = format!("page rewrite {page_rewrite}, --output {output}");
        assert_eq!(stat4_samples_naming(result, &old_hub), 0, "{what}");
        assert!(
            stat4_samples_naming(result, &hub) > 0,
            "{what}: new samples"
        );
        assert_eq!(
            sqlite3(result, "SELECT count(*) FROM sqlite_stat4"),
            samples.to_string(),
            "{what}: as many samples as before"
        );
        assert_eq!(sqlite3(result, "PRAGMA integrity_check"), "ok", "{what}");
    }
}

/// A sample no `ANALYZE` can compute again (its index is gone) that names the old hub id
/// is deleted by a remap; the samples of live indexes stay.
#[test]
fn remap_deletes_a_planner_sample_of_a_dropped_index_that_names_an_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(dir.path(), "solace", 100);
    let old_hub = spec.datahub.to_string();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("ANALYZE").unwrap();
        c.execute(
            "INSERT INTO sqlite_stat4 VALUES ('Events', 'gone_index', '1', '0', '0', CAST(?1 AS BLOB))",
            [format!("key {old_hub}")],
        )
        .unwrap();
    }
    let live: i64 = sqlite3(
        &db,
        "SELECT count(*) FROM sqlite_stat4 WHERE idx <> 'gone_index'",
    )
    .parse()
    .unwrap();
    remap_to_new_ids(&db);
    assert_eq!(stat4_samples_naming(&db, &old_hub), 0);
    assert_eq!(
        sqlite3(
            &db,
            "SELECT count(*) FROM sqlite_stat4 WHERE idx = 'gone_index'"
        ),
        "0"
    );
    assert_eq!(
        sqlite3(&db, "SELECT count(*) FROM sqlite_stat4"),
        live.to_string(),
        "the live indexes' samples stay"
    );
}

/// `ANALYZE` files the samples of a WITHOUT ROWID table's primary key under the table's
/// name, not an index's: with the hub id in that key, a remap must compute them again
/// like any index's (they were deleted as if their index were gone).
#[test]
fn remap_computes_again_the_samples_of_a_without_rowid_primary_key_that_names_an_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(dir.path(), "sdc", 50);
    let old_hub = spec.datahub.to_string();
    sqlite3(
        &db,
        &format!(
            "CREATE TABLE w(k TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300)
             INSERT INTO w SELECT '{old_hub}/' || i, i FROM s;"
        ),
    );
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("ANALYZE")
        .unwrap();
    let before: i64 = sqlite3(&db, "SELECT count(*) FROM sqlite_stat4 WHERE idx = 'w'")
        .parse()
        .unwrap();
    assert!(before > 0, "the premise: the primary key of w was sampled");
    let hub = remap_to_new_ids(&db);
    assert_eq!(stat4_samples_naming(&db, &old_hub), 0);
    assert_eq!(
        sqlite3(
            &db,
            &format!(
                "SELECT count(*) FROM sqlite_stat4 WHERE idx = 'w' AND instr(sample, CAST('{hub}' AS BLOB)) > 0"
            )
        ),
        before.to_string(),
        "the samples of w, computed again with the new id"
    );
}

/// `sqlite_stat4` without `sqlite_stat1` (dropped by hand): the `ANALYZE` that computes
/// the samples again creates `sqlite_stat1`, inside the rewrite; the remap still succeeds
/// and leaves no old id in the samples.
#[test]
fn remap_of_samples_without_sqlite_stat1_leaves_no_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(dir.path(), "sdc", 300);
    let old_hub = spec.datahub.to_string();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("ANALYZE; DROP TABLE sqlite_stat1;")
        .unwrap();
    assert!(stat4_samples_naming(&db, &old_hub) > 0, "the premise");
    remap_to_new_ids(&db);
    assert_eq!(stat4_samples_naming(&db, &old_hub), 0);
    assert_eq!(sqlite3(&db, "PRAGMA integrity_check"), "ok");
}
