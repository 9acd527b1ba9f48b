//! A database hubvault did not write is untrusted input (issue 11, points 4, 5 and 10):
//! text encodings, the spellings an id can take, full-text indexes, and the SQL a
//! schema stores. The remap tests run the binary; the restore tests run both backends.

use std::path::{Path, PathBuf};
use std::process::Output;

use hubvault::model::ids::{ConnectorId, DatahubId};
use rusqlite::config::DbConfig;

use crate::both;
use crate::common::{TestBucket, hubvault, json_of, run, sha256_of, stderr, stdout};
use crate::fixture::{self, Spec};

/// A connector database (2 events per row of extra data is plenty here) in `encoding`.
fn connector(dir: &Path, encoding: Option<&'static str>) -> (PathBuf, Spec) {
    let mut spec = Spec::new("sdc", "untrusted input", 12);
    spec.encoding = encoding;
    let d = dir.join(spec.connector.to_string());
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("sqlite.db");
    fixture::create(&path, &spec).unwrap();
    (path, spec)
}

fn exec(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn new_ids() -> (String, String) {
    (
        DatahubId::random().to_string(),
        ConnectorId::random().to_string(),
    )
}

fn remap(db: &Path, to: &(String, String), extra: &[&str]) -> Output {
    run(hubvault()
        .args(["remap", "--db"])
        .arg(db)
        .args(["--to-datahub", &to.0, "--to-connector", &to.1])
        .args(extra))
}

/// Every value of a table as (type, stored bytes), by rowid: `CAST(x AS BLOB)` reads
/// TEXT in the database's own encoding, so nothing is converted on the way.
fn raw_rows(db: &Path, table: &str, cols: &[&str]) -> Vec<Vec<(String, Option<Vec<u8>>)>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let sel: Vec<String> = cols
        .iter()
        .map(|c| format!("typeof({c}), CAST({c} AS BLOB)"))
        .collect();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM {table} ORDER BY rowid",
            sel.join(", ")
        ))
        .unwrap();
    stmt.query_map([], |r| {
        (0..cols.len())
            .map(|i| Ok((r.get(2 * i)?, r.get(2 * i + 1)?)))
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn utf16(s: &str, le: bool) -> Vec<u8> {
    s.encode_utf16()
        .flat_map(|u| if le { u.to_le_bytes() } else { u.to_be_bytes() })
        .collect()
}

fn one(db: &Path, sql: &str) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| {
        Ok(match r.get_ref(0)? {
            rusqlite::types::ValueRef::Null => "NULL".to_string(),
            rusqlite::types::ValueRef::Integer(i) => i.to_string(),
            v => String::from_utf8_lossy(v.as_bytes().unwrap_or(b"?")).into_owned(),
        })
    })
    .unwrap()
}

// ------------------------------------------------------------------ point 4: encodings

#[test]
fn remap_of_a_utf16_database_keeps_blobs_byte_for_byte_and_rewrites_its_text() {
    for (encoding, le) in [("UTF-16le", true), ("UTF-16be", false)] {
        let dir = tempfile::tempdir().unwrap();
        let (db, spec) = connector(dir.path(), Some(encoding));
        let (c, d) = (spec.connector.to_string(), spec.datahub.to_string());
        // BLOBs whose bytes are not text of any kind (odd lengths, unpaired surrogates,
        // NULs); a BLOB with the id as UTF-8 text; TEXT with an unpaired surrogate right
        // before the id (SQLite's UTF-16 -> UTF-8 conversion would swallow the id's first
        // character), written through CAST so that the stored bytes are exactly these.
        let mut lone = if le {
            vec![0x00, 0xD8]
        } else {
            vec![0xD8, 0x00]
        };
        lone.extend(utf16(&format!(" {c} é"), le));
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE Blobs (k INTEGER PRIMARY KEY, b, t)")
            .unwrap();
        let blobs: Vec<Vec<u8>> = vec![
            vec![0xff, 0xfe, 0x00, 0xd8, 0x41],
            vec![0x00, 0xdc, 0x00, 0x00, 0x34, 0x12, 0x00],
            b"\x00\x01plain bytes".to_vec(),
            format!("json {{\"id\":\"{d}\"}}").into_bytes(),
        ];
        for b in &blobs {
            conn.execute(
                "INSERT INTO Blobs (b, t) VALUES (?1, CAST(?2 AS TEXT))",
                rusqlite::params![b, lone],
            )
            .unwrap();
        }
        drop(conn);
        let before = raw_rows(&db, "Blobs", &["b", "t"]);
        let to = new_ids();
        let out = remap(&db, &to, &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{encoding}: {}", stderr(&out));
        let after = raw_rows(&db, "Blobs", &["b", "t"]);
        let mut want_t = if le {
            vec![0x00, 0xD8]
        } else {
            vec![0xD8, 0x00]
        };
        want_t.extend(utf16(&format!(" {} é", to.1), le));
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            assert_eq!(a[0].0, "blob", "{encoding} row {i}: still a BLOB");
            let want_b = if i == 3 {
                format!("json {{\"id\":\"{}\"}}", to.0).into_bytes()
            } else {
                b[0].1.clone().unwrap()
            };
            assert_eq!(
                a[0].1.as_ref().unwrap(),
                &want_b,
                "{encoding} row {i}: BLOB bytes"
            );
            assert_eq!(a[1].0, "text", "{encoding} row {i}");
            assert_eq!(
                a[1].1.as_ref().unwrap(),
                &want_t,
                "{encoding} row {i}: TEXT bytes"
            );
        }
        // The ordinary text of the database was rewritten too.
        assert_eq!(one(&db, "SELECT id FROM Integrations"), to.0);
        assert_eq!(
            one(
                &db,
                "SELECT count(*) FROM Events WHERE integration = (SELECT id FROM Integrations)"
            ),
            "12"
        );
        assert_eq!(one(&db, "PRAGMA encoding"), encoding);
    }
}

// ------------------------------------------------------------- point 4: other spellings

#[test]
fn remap_rewrites_ids_written_without_hyphens_in_the_same_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector(dir.path(), None);
    let simple = |u: uuid::Uuid| u.simple().to_string();
    let (d, c) = (
        simple(spec.datahub.as_uuid()),
        simple(spec.connector.as_uuid()),
    );
    exec(
        &db,
        &format!(
            "CREATE TABLE Paths (p TEXT, b BLOB);
             INSERT INTO Paths VALUES ('s3://bucket/{d}/{c}/x', CAST('{}' AS BLOB)),
                                      ('upper {}', NULL);",
            c.to_uppercase(),
            d.to_uppercase()
        ),
    );
    let to = new_ids();
    let out = json_of(&remap(&db, &to, &["--json"]), 0);
    let (nd, nc) = (
        simple(uuid::Uuid::parse_str(&to.0).unwrap()),
        simple(uuid::Uuid::parse_str(&to.1).unwrap()),
    );
    assert_eq!(
        one(&db, "SELECT p FROM Paths WHERE rowid = 1"),
        format!("s3://bucket/{nd}/{nc}/x")
    );
    assert_eq!(
        one(&db, "SELECT b FROM Paths WHERE rowid = 1"),
        nc.to_uppercase()
    );
    assert_eq!(
        one(&db, "SELECT typeof(b) FROM Paths WHERE rowid = 1"),
        "blob"
    );
    assert_eq!(
        one(&db, "SELECT p FROM Paths WHERE rowid = 2"),
        format!("upper {}", nd.to_uppercase())
    );
    assert!(
        out["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["table"] == "Paths" && c["column"] == "p" && c["values"] == 2),
        "{out}"
    );
}

#[test]
fn a_nul_inside_a_text_value_does_not_hide_an_id_from_the_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector(dir.path(), None);
    let c = spec.connector.to_string();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE Nul (t TEXT)").unwrap();
    conn.execute(
        "INSERT INTO Nul VALUES (CAST(?1 AS TEXT))",
        [format!("before\0after {c}").into_bytes()],
    )
    .unwrap();
    drop(conn);
    let to = new_ids();
    json_of(&remap(&db, &to, &["--json"]), 0);
    let got = raw_rows(&db, "Nul", &["t"]);
    assert_eq!(got[0][0].0, "text");
    assert_eq!(
        got[0][0].1.as_deref().unwrap(),
        format!("before\0after {}", to.1).as_bytes()
    );
}

/// A table whose BLOB holds the raw 16 bytes of the connector id, in row 2.
fn with_raw_id_bytes(db: &Path, spec: &Spec) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("CREATE TABLE Raw (k INTEGER PRIMARY KEY, b BLOB)")
        .unwrap();
    let mut raw = b"hdr".to_vec();
    raw.extend_from_slice(spec.connector.as_uuid().as_bytes());
    conn.execute("INSERT INTO Raw (k, b) VALUES (1, x'00'), (2, ?1)", [raw])
        .unwrap();
}

#[test]
fn remap_reports_raw_id_bytes_in_a_blob_with_table_column_and_rowid_and_refuses_unless_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector(dir.path(), None);
    with_raw_id_bytes(&db, &spec);
    let before = sha256_of(&db);
    let to = new_ids();
    let out = remap(&db, &to, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Raw.b") && err.contains("raw 16 bytes") && err.contains("row 2"),
        "{err}"
    );
    assert!(err.contains("--accept-unrewritten"), "{err}");
    assert_eq!(sha256_of(&db), before, "refused: nothing written");

    // Dry run: the plan shows it.
    let plan = json_of(&remap(&db, &to, &["--json", "--dry-run"]), 0);
    assert_eq!(plan["unrewritten"][0]["table"], "Raw", "{plan}");
    assert_eq!(plan["unrewritten"][0]["rows"], serde_json::json!([2]));

    // Accepted: everything else is rewritten, and the output says loudly what was not.
    let out = remap(&db, &to, &["--accept-unrewritten"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("WARNING") && text.contains("Raw.b"), "{text}");
    assert!(!text.contains("no old id left"), "{text}");
    assert_eq!(one(&db, "SELECT id FROM Integrations"), to.0);
}

// ------------------------------------------------------------------- point 4: restore

fn backup(tb: &TestBucket, db: &Path) {
    json_of(&run(tb.cmd().args(["backup", "--json", "--db"]).arg(db)), 0);
}

fn restore(
    tb: &TestBucket,
    spec: &Spec,
    to: &(String, String),
    out: &Path,
    extra: &[&str],
) -> Output {
    run(tb
        .cmd()
        .args(["restore", "--yes"])
        .args(["--datahub", &spec.datahub.to_string()])
        .args(["--connector", &spec.connector.to_string()])
        .args(["--to-datahub", &to.0, "--to-connector", &to.1])
        .arg("--output")
        .arg(out)
        .args(extra))
}

fn restore_refuses_unrewritable_ids_before_installing(tb: &TestBucket) {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector(dir.path(), None);
    with_raw_id_bytes(&db, &spec);
    exec(
        &db,
        &format!(
            "CREATE TABLE Notes (t TEXT); INSERT INTO Notes VALUES ('x'), ('see {}');",
            {
                // One letter upper case, the rest lower: mixed whatever the id.
                let c = spec.datahub.to_string();
                let at = c.find(|ch: char| ch.is_ascii_lowercase()).unwrap();
                format!("{}{}{}", &c[..at], c[at..=at].to_uppercase(), &c[at + 1..])
            }
        ),
    );
    backup(tb, &db);
    let target = dir.path().join("restored.db");
    let to = new_ids();
    let out = restore(tb, &spec, &to, &target, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("Raw.b") && err.contains("row 2"), "{err}");
    assert!(
        err.contains("Notes.t") && err.contains("mixed case"),
        "{err}"
    );
    assert!(!target.exists(), "nothing installed");

    // Accepted, as JSON: installed, and the report lists what is left.
    let out = json_of(
        &restore(tb, &spec, &to, &target, &["--accept-unrewritten", "--json"]),
        0,
    );
    let rw = &out["restore"]["rewrite"];
    assert_eq!(rw["accepted_unrewritten"], true, "{out}");
    let left: Vec<String> = rw["unrewritten"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            format!(
                "{}.{} {} {}",
                u["table"].as_str().unwrap(),
                u["column"].as_str().unwrap(),
                u["reason"].as_str().unwrap(),
                u["rows"]
            )
        })
        .collect();
    assert_eq!(
        left,
        vec!["Raw.b raw_bytes [2]", "Notes.t mixed_case [2]"],
        "{out}"
    );
    assert_eq!(one(&target, "SELECT id FROM Integrations"), to.0);

    // In text: a warning, and never "no old id left".
    std::fs::remove_file(&target).unwrap();
    let out = restore(tb, &spec, &to, &target, &["--accept-unrewritten"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("WARNING") && text.contains("NOT rewritten"),
        "{text}"
    );
    assert!(!text.contains("no old id left"), "{text}");
    assert!(text.contains("OLD IDS LEFT"), "{text}");
}
both!(
    restore_says_before_installing_that_old_ids_cannot_be_rewritten_and_installs_only_when_accepted,
    restore_refuses_unrewritable_ids_before_installing
);

fn restore_of_a_utf16_backup(tb: &TestBucket) {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector(dir.path(), Some("UTF-16le"));
    let (d, c) = (spec.datahub.to_string(), spec.connector.to_string());
    exec(
        &db,
        "CREATE TABLE Blobs (b); INSERT INTO Blobs VALUES (x'00d8ff41'), (x'0000dc');
         CREATE TABLE Mixed (k INTEGER PRIMARY KEY, b BLOB, t TEXT);",
    );
    let blobs = raw_rows(&db, "Blobs", &["b"]);
    // A BLOB holding the datahub id as UTF-8 JSON, and TEXT with an unpaired surrogate
    // right before the connector id.
    let mut lone = vec![0x00, 0xD8];
    lone.extend(utf16(&format!(" {c}"), true));
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO Mixed VALUES (1, ?1, CAST(?2 AS TEXT))",
            rusqlite::params![format!("{{\"hub\":\"{d}\"}}").into_bytes(), lone],
        )
        .unwrap();
    backup(tb, &db);
    let target = dir.path().join("restored.db");
    let to = new_ids();
    let out = restore(tb, &spec, &to, &target, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("no old id left"), "{}", stdout(&out));
    assert_eq!(raw_rows(&target, "Blobs", &["b"]), blobs);
    let mut want_t = vec![0x00, 0xD8];
    want_t.extend(utf16(&format!(" {}", to.1), true));
    assert_eq!(
        raw_rows(&target, "Mixed", &["b", "t"]),
        vec![vec![
            (
                "blob".to_string(),
                Some(format!("{{\"hub\":\"{}\"}}", to.0).into_bytes())
            ),
            ("text".to_string(), Some(want_t)),
        ]]
    );
    assert_eq!(one(&target, "SELECT id FROM Integrations"), to.0);
    assert_eq!(one(&target, "PRAGMA encoding"), "UTF-16le");
}
both!(
    restore_of_a_utf16_backup_keeps_its_blobs_and_rewrites_its_ids,
    restore_of_a_utf16_backup
);

// ---------------------------------------------------------------- point 5: full text

/// The module's own integrity check; `against_content`: FTS5's check of an external
/// content index against its table too.
fn fts_ok(db: &Path, table: &str, against_content: bool) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let sql = if against_content {
        format!("INSERT INTO {table}({table}, rank) VALUES('integrity-check', 1)")
    } else {
        format!("INSERT INTO {table}({table}) VALUES('integrity-check')")
    };
    conn.execute(&sql, [])
        .unwrap_or_else(|e| panic!("{table}: integrity-check: {e}"));
}

fn matches(db: &Path, table: &str, id: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        &format!("SELECT count(*) FROM {table} WHERE {table} MATCH ?1"),
        [format!("\"{id}\"")],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn remap_rebuilds_external_content_fts_indexes_which_then_pass_their_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector(dir.path(), None);
    let (d, c) = (spec.datahub.to_string(), spec.connector.to_string());
    exec(
        &db,
        "CREATE VIRTUAL TABLE ev5 USING fts5(integration, source, content='Events', content_rowid='id');
         INSERT INTO ev5(ev5) VALUES('rebuild');
         CREATE VIRTUAL TABLE ev4 USING fts4(integration, source, content='Events');
         INSERT INTO ev4(ev4) VALUES('rebuild');
         CREATE VIRTUAL TABLE own USING fts5(body);",
    );
    exec(
        &db,
        &format!("INSERT INTO own(body) VALUES ('connector {c} of hub {d}'), ('nothing');"),
    );
    assert_eq!(matches(&db, "ev5", &d), 12);
    let to = new_ids();
    let out = json_of(&remap(&db, &to, &["--json"]), 0);
    let rebuilt = out["fts_rebuilt"].as_array().unwrap();
    assert_eq!(rebuilt.len(), 3, "{out}");
    fts_ok(&db, "ev5", true);
    fts_ok(&db, "ev4", false);
    fts_ok(&db, "own", false);
    for (t, n) in [("ev5", 12), ("ev4", 12), ("own", 1)] {
        assert_eq!(
            matches(&db, t, &d),
            0,
            "{t}: the old datahub id is gone from the index"
        );
        assert_eq!(matches(&db, t, &to.0), n, "{t}: the new one is indexed");
    }
    assert_eq!(
        one(&db, "SELECT body FROM own WHERE rowid = 1"),
        format!("connector {} of hub {}", to.1, to.0)
    );
}

#[test]
fn remap_reports_a_contentless_fts_index_that_holds_an_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector(dir.path(), None);
    let c = spec.connector.to_string();
    let glued = spec.datahub.as_uuid().simple().to_string();
    exec(
        &db,
        &format!(
            "CREATE VIRTUAL TABLE blind USING fts5(body, content='');
             INSERT INTO blind(rowid, body) VALUES (5, 'nothing'), (6, 'path /var/datahub/{c}/x'), (7, 'x{glued}y');"
        ),
    );
    let before = sha256_of(&db);
    let to = new_ids();
    let out = remap(&db, &to, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("blind.*") && err.contains("contentless") && err.contains("row 6, 7"),
        "{err}"
    );
    assert_eq!(sha256_of(&db), before);
    let out = json_of(&remap(&db, &to, &["--json", "--accept-unrewritten"]), 0);
    assert_eq!(
        out["unrewritten"][0]["reason"], "contentless_index",
        "{out}"
    );
    assert_eq!(out["accepted_unrewritten"], true);
}

// ------------------------------------------------------- point 10: untrusted databases

#[test]
fn every_connection_hubvault_opens_is_defensive_and_does_not_trust_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = connector(dir.path(), None);
    for (what, conn) in [
        (
            "read-only",
            hubvault::sqlite::db::open_read_only(&db).unwrap(),
        ),
        (
            "read-write",
            hubvault::sqlite::db::open_read_write(&db).unwrap(),
        ),
    ] {
        assert!(
            conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE).unwrap(),
            "{what}"
        );
        assert!(
            !conn
                .db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA)
                .unwrap(),
            "{what}"
        );
        let trusted: i64 = conn
            .query_row("PRAGMA trusted_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(trusted, 0, "{what}");
        // Defensive: the schema cannot be made writable.
        conn.execute_batch("PRAGMA writable_schema = ON").unwrap();
        let writable: i64 = conn
            .query_row("PRAGMA writable_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(writable, 0, "{what}");
    }
}

/// Replaces the stored SQL of `name` in `sqlite_schema` (what a hostile file can hold).
fn plant_schema_sql(db: &Path, name: &str, sql: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA writable_schema = ON").unwrap();
    conn.execute(
        "UPDATE sqlite_schema SET sql = ?1 WHERE name = ?2",
        [sql, name],
    )
    .unwrap();
}

#[test]
fn remap_refuses_a_file_whose_stored_view_or_trigger_sql_carries_a_second_statement() {
    // `execute_batch` of such a text would run the second statement. SQLite 3.54 refuses
    // to load a schema row with text after its statement ("malformed database schema"),
    // so the file is refused before hubvault reads a row; hubvault's own check (one
    // statement, prepared, for the object's own name: `rewrite::tests`) stands behind it
    // for whatever SQLite lets through.
    type Planted = fn(&str) -> String;
    let cases: [(&str, Planted); 2] = [
        ("mine", |d| {
            format!(
                "CREATE VIEW mine AS SELECT * FROM Events WHERE integration = '{d}'; CREATE TABLE pwned(x)"
            )
        }),
        ("audit", |d| {
            format!(
                "CREATE TRIGGER audit AFTER INSERT ON Events BEGIN SELECT '{d}'; END; CREATE TABLE pwned(x)"
            )
        }),
    ];
    for (name, sql) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (db, spec) = connector(dir.path(), None);
        let d = spec.datahub.to_string();
        exec(
            &db,
            &format!(
                "CREATE VIEW mine AS SELECT * FROM Events WHERE integration = '{d}';
                 CREATE TRIGGER audit AFTER INSERT ON Events BEGIN SELECT '{d}'; END;"
            ),
        );
        let planted = sql(&d);
        plant_schema_sql(&db, name, &planted);
        let before = sha256_of(&db);
        let out = remap(&db, &new_ids(), &[]);
        assert_eq!(out.status.code(), Some(1), "{planted}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains(name) && err.contains("Try:"),
            "{planted}: {err}"
        );
        assert_eq!(sha256_of(&db), before, "{planted}: nothing changed");
    }
}

#[test]
fn remap_still_refuses_a_table_whose_sql_names_an_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec) = connector(dir.path(), None);
    exec(
        &db,
        &format!(
            "CREATE TABLE Defaults (a TEXT DEFAULT '{}')",
            spec.connector
        ),
    );
    let before = sha256_of(&db);
    let out = remap(&db, &new_ids(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("table Defaults"), "{}", stderr(&out));
    assert_eq!(sha256_of(&db), before);
}
