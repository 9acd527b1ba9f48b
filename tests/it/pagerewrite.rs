//! The id rewrite on the pages (`sqlite::pagerewrite`, `rewrite::apply_unchecked_pages`)
//! against the SQL rewrite (`rewrite::apply_unchecked`), the reference: on the same input
//! both give the same rows, the same per-column counts and the same list of what is left;
//! the page path's result passes `integrity_check` and `foreign_key_check`. What the page
//! path does not handle it refuses with nothing written, and a damaged file never makes
//! it panic or write anything but an id over an id.

use std::path::{Path, PathBuf};

use hubvault::model::ids::{ConnectorId, DatahubId, Ids};
use hubvault::sqlite::rewrite::{self, PageOutcome, RewritePlan};
use hubvault::sqlite::spelling::Matcher;
use hubvault::sqlite::{db, pagerewrite};
use rand::{RngExt, SeedableRng};
use rusqlite::Connection;

use crate::both;
use crate::common::{TestBucket, connector_db, hubvault, json_of, run};
use crate::fixture::{self, Spec};

use crate::common::{random_ids as new_ids, spec_ids as ids};

/// A fixture database in `dir`, with `extra` SQL run on it afterwards (`{D}` and `{C}`
/// stand for the datahub and connector ids).
fn base(dir: &Path, spec: &Spec, extra: &str) -> PathBuf {
    let path = dir.join("src.db");
    fixture::create(&path, spec).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=DELETE").unwrap();
    let sql = extra
        .replace("{D}", &spec.datahub.to_string())
        .replace("{C}", &spec.connector.to_string());
    conn.execute_batch(&sql).unwrap();
    drop(conn);
    path
}

/// Every table's name and rows, each value as its type and the hex of its stored bytes.
type Rows = Vec<(String, Vec<String>)>;

/// Every table's rows (see [`Rows`]).
fn content(path: &Path) -> Rows {
    let conn = db::open_read_only(path).unwrap();
    let tables: Vec<(String, bool)> = conn
        .prepare("SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut out = Vec::new();
    for (t, without_rowid) in tables {
        let cols: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_xinfo(?1) ORDER BY cid")
            .unwrap()
            .query_map([&t], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expr: Vec<String> = cols
            .iter()
            .map(|c| {
                let q = format!("\"{}\"", c.replace('"', "\"\""));
                format!("typeof({q}) || ':' || hex({q})")
            })
            .collect();
        let order = if without_rowid { "" } else { " ORDER BY rowid" };
        let sql = format!(
            "SELECT {} FROM \"{}\"{order}",
            expr.join(" || ',' || "),
            t.replace('"', "\"\"")
        );
        let rows: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        out.push((t, rows));
    }
    out
}

fn integrity_and_foreign_keys(path: &Path) {
    let conn = db::open_read_only(path).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", path.display());
    let fk: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
}

/// The SQL path on one copy of `src`, the page path on another; both plans.
fn both_paths(src: &Path, from: Ids, to: Ids, accept: bool) -> (RewritePlan, RewritePlan, PathBuf) {
    let dir = src.parent().unwrap();
    let (a, b) = (dir.join("sql.db"), dir.join("pages.db"));
    std::fs::copy(src, &a).unwrap();
    std::fs::copy(src, &b).unwrap();
    let mut conn = db::open_scratch(&a).unwrap();
    let u = rewrite::apply_unchecked(&mut conn, &a, from, to, accept).unwrap();
    conn.close().unwrap();
    let sql = u.check(&a).unwrap();
    let mut conn = db::open_scratch(&b).unwrap();
    let u = match rewrite::apply_unchecked_pages(&mut conn, &b, from, to, accept).unwrap() {
        PageOutcome::Done(u) => u,
        PageOutcome::Refused(why) => panic!("the page path refused: {why}"),
    };
    conn.close().unwrap();
    let pages = u.check(&b).unwrap();
    assert_eq!(content(&a), content(&b), "the two paths' rows differ");
    integrity_and_foreign_keys(&b);
    assert_eq!(sql.changes, pages.changes);
    assert_eq!(sql.unrewritten, pages.unrewritten);
    assert_eq!(sql.accepted_unrewritten, pages.accepted_unrewritten);
    for mode in ["DELETE", "WAL"] {
        let (c, rows) = in_place(src, mode, from, to, accept)
            .unwrap_or_else(|why| panic!("in place, {mode}: the page path refused: {why}"));
        assert_eq!(
            content(&a),
            rows,
            "in place, {mode}: rows differ from the SQL path's"
        );
        assert_eq!(sql.changes, c.changes, "in place, {mode}");
        assert_eq!(sql.unrewritten, c.unrewritten, "in place, {mode}");
        assert_eq!(sql.accepted_unrewritten, c.accepted_unrewritten);
    }
    (sql, pages, b)
}

/// The in-place page rewrite (`rewrite::apply_pages`, what `remap` without `--output`
/// runs) on a copy of `src` switched to journal mode `mode`: its plan and rows (checked
/// for integrity), or why it refused, after checking that a refusal changed no row.
fn in_place(
    src: &Path,
    mode: &str,
    from: Ids,
    to: Ids,
    accept: bool,
) -> Result<(RewritePlan, Rows), String> {
    let c = src.parent().unwrap().join(format!("in-place-{mode}.db"));
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", c.display()));
    }
    std::fs::copy(src, &c).unwrap();
    let mut conn = db::open_read_write(&c).unwrap();
    let _: String = conn
        .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
        .unwrap();
    let before = content(&c);
    let done = rewrite::apply_pages(&mut conn, &c, from, to, accept).unwrap();
    conn.close().unwrap();
    match done {
        Ok(plan) => {
            integrity_and_foreign_keys(&c);
            Ok((plan, content(&c)))
        }
        Err(why) => {
            assert_eq!(content(&c), before, "in place, {mode}: refused but changed");
            Err(why)
        }
    }
}

#[test]
fn page_rewrite_equals_the_sql_rewrite_on_each_connector_type() {
    for t in ["hrb-cellario", "idbs-eworkbook", "sdc", "solace"] {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec::new(t, "Pages", 400);
        let src = base(dir.path(), &spec, "");
        let (sql, _, out) = both_paths(&src, ids(&spec), new_ids(), false);
        assert!(sql.total_values() >= 800, "{t}: {:?}", sql.changes);
        assert_ne!(std::fs::read(&src).unwrap(), std::fs::read(&out).unwrap());
    }
}

/// Hostile shapes: ids in overflow values at many offsets (straddling the local part and
/// overflow pages, and two overflow pages), every spelling, mixed case, raw bytes, a
/// UNIQUE index and an ordinary index whose order the rewrite changes, an expression
/// index, a partial index, a foreign key over ids, an id in a non-indexed column only.
fn hostile_sql(seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sql = String::from(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, body TEXT, b BLOB);
         CREATE TABLE spell(a TEXT, b TEXT, c TEXT, d BLOB, e BLOB);
         CREATE INDEX spell_upper ON spell(upper(a));
         CREATE INDEX spell_partial ON spell(b) WHERE c LIKE '%x%';
         CREATE TABLE ord(k TEXT UNIQUE, n INTEGER);
         CREATE INDEX ord_n_k ON ord(n, k);
         CREATE TABLE plain(x TEXT, y INTEGER);
         CREATE TABLE par(id TEXT PRIMARY KEY, n INTEGER);
         CREATE TABLE chi(p TEXT REFERENCES par(id), q TEXT);
         CREATE TABLE noid(a TEXT PRIMARY KEY, b BLOB) WITHOUT ROWID; INSERT INTO noid VALUES ('x', x'00');
         INSERT INTO plain VALUES ('{C}', 1), ('path/{D}/{C}.json', 2), (NULL, 3);
         INSERT INTO par VALUES ('{C}', 1), ('{D}', 2), ('other', 3);
         INSERT INTO chi VALUES ('{C}', 'x'), ('{D}', '{C}'), ('other', NULL);
         INSERT INTO spell VALUES (upper('{D}'), replace('{C}', '-', ''), upper(replace('{D}', '-', '')) || 'x', CAST('{C}' AS BLOB), NULL);
         INSERT INTO ord VALUES ('{C}', 1), ('{D}', 1), ('{C}/a', 2), ('{D}/b', 2), ('0', 3), ('8', 3), ('g', 3);",
    );
    // Offsets chosen so that ids straddle every boundary: the end of the local part and
    // the seams between overflow pages (4092 bytes each with 4096-byte pages).
    for i in 0..60 {
        let len: usize = rng.random_range(5 * 1024..20 * 1024);
        let mut body = String::new();
        let mut at = rng.random_range(0..200usize);
        while body.len() < len {
            while body.len() < at {
                body.push(char::from(b'a' + (body.len() % 23) as u8));
            }
            body.push_str(if at % 2 == 0 { "{C}" } else { "{D}" });
            at += rng.random_range(40..900usize);
        }
        // Exactly straddling: the id begins a few bytes before a seam.
        let seam = 4092 * rng.random_range(1..4usize) - rng.random_range(1..35usize);
        let straddle = format!("{}{{C}}", "s".repeat(seam));
        sql.push_str(&format!(
            "INSERT INTO big VALUES ({i}, '{body}', CAST('{straddle}' AS BLOB));"
        ));
    }
    sql
}

#[test]
fn page_rewrite_equals_the_sql_rewrite_on_hostile_shapes_in_each_encoding() {
    for (n, enc) in [None, Some("UTF-16le"), Some("UTF-16be")]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::new("sdc", "Hostile", 50);
        spec.encoding = enc;
        let src = base(dir.path(), &spec, &hostile_sql(13 + n as u64));
        let (sql, _, _) = both_paths(&src, ids(&spec), new_ids(), false);
        let get = |t: &str, c: &str| {
            sql.changes
                .iter()
                .find(|x| x.table == t && x.column == c)
                .map_or(0, |x| x.values)
        };
        assert_eq!(get("big", "body"), 60, "{enc:?}");
        assert_eq!(get("big", "b"), 60, "{enc:?}");
        assert_eq!(get("ord", "k"), 4);
        assert_eq!(get("plain", "x"), 2);
        assert_eq!(get("spell", "d"), 1);
    }
}

#[test]
fn mixed_case_and_raw_bytes_are_reported_the_same_by_both_paths_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("solace", "Mixed", 20);
    // A fixed id: its mixed-case spelling is mixed whatever the draw.
    spec.connector = ConnectorId::parse("6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01").unwrap();
    let mixed = "6F1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01".to_string();
    let raw: String = spec
        .connector
        .as_uuid()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let extra = format!(
        "CREATE TABLE odd(m TEXT, r BLOB); CREATE INDEX odd_m ON odd(m);
         INSERT INTO odd VALUES ('{mixed}', x'00{raw}00'), ('{{D}}', NULL);"
    );
    let src = base(dir.path(), &spec, &extra);
    // Refused by both without --accept-unrewritten.
    let copy = dir.path().join("refused.db");
    std::fs::copy(&src, &copy).unwrap();
    let mut conn = db::open_scratch(&copy).unwrap();
    let PageOutcome::Done(u) =
        rewrite::apply_unchecked_pages(&mut conn, &copy, ids(&spec), new_ids(), false).unwrap()
    else {
        panic!("refused")
    };
    drop(conn);
    assert!(
        u.check(&copy)
            .unwrap_err()
            .to_string()
            .contains("mixed case")
    );
    let (_, pages, out) = both_paths(&src, ids(&spec), new_ids(), true);
    let reasons: Vec<(String, String)> = pages
        .unrewritten
        .iter()
        .map(|u| (u.column.clone(), format!("{:?}", u.reason)))
        .collect();
    assert!(
        reasons.contains(&("m".into(), "MixedCase".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("r".into(), "RawBytes".into())),
        "{reasons:?}"
    );
    let c = db::open_read_only(&out).unwrap();
    let m: String = c
        .query_row("SELECT m FROM odd WHERE rowid = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(m, mixed);
}

fn refused(src: &Path, from: Ids, why: &str) {
    let before = std::fs::read(src).unwrap();
    let mut conn = db::open_scratch(src).unwrap();
    match rewrite::apply_unchecked_pages(&mut conn, src, from, new_ids(), false).unwrap() {
        PageOutcome::Refused(w) => assert!(w.contains(why), "{w}"),
        PageOutcome::Done(_) => panic!("not refused"),
    }
    drop(conn);
    // open_scratch may rewrite the header's journal bytes: compare past the header.
    assert_eq!(std::fs::read(src).unwrap()[100..], before[100..]);
    for mode in ["DELETE", "WAL"] {
        match in_place(src, mode, from, new_ids(), false) {
            Err(w) => assert!(w.contains(why), "in place, {mode}: {w}"),
            Ok(_) => panic!("in place, {mode}: not refused"),
        }
    }
}

#[test]
fn page_rewrite_refuses_without_rowid_ids_virtual_tables_and_ids_in_the_schema() {
    for (extra, why) in [
        (
            "CREATE TABLE w(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID; INSERT INTO w VALUES ('a', '{C}');",
            "WITHOUT ROWID",
        ),
        (
            "CREATE VIRTUAL TABLE f USING fts5(x); INSERT INTO f VALUES ('hello');",
            "virtual",
        ),
        ("CREATE VIEW v AS SELECT '{C}' AS x;", "schema"),
        (
            "CREATE TABLE g(a TEXT, b TEXT GENERATED ALWAYS AS (upper(a)) STORED);",
            "generated",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec::new("sdc", "Refused", 20);
        let src = base(dir.path(), &spec, extra);
        refused(&src, ids(&spec), why);
    }
    // A WITHOUT ROWID table with no id in it is no reason to refuse.
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new("sdc", "Fine", 20);
    let src = base(
        dir.path(),
        &spec,
        "CREATE TABLE w(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID; INSERT INTO w VALUES ('a', 'b');",
    );
    both_paths(&src, ids(&spec), new_ids(), false);
}

/// A small database with an overflow table, its table specs and the specs of the
/// indexes the in-place path may patch (from the undamaged file): the fixture's UNIQUE
/// autoindex, whose hub id column holds one value, and three whose values vary.
fn damaged_base(
    dir: &Path,
) -> (
    PathBuf,
    Spec,
    Vec<pagerewrite::TableSpec>,
    Vec<pagerewrite::IndexSpec>,
) {
    let spec = Spec::new("hrb-cellario", "Damaged", 30);
    let src = base(dir, &spec, &hostile_sql(7));
    let conn = db::open_read_only(&src).unwrap();
    let indexes = index_specs(
        &conn,
        &[
            "sqlite_autoindex_Events_1",
            "sqlite_autoindex_ord_1",
            "ord_n_k",
            "sqlite_autoindex_par_1",
        ],
    );
    (src, spec, table_specs(&conn), indexes)
}

fn matcher(spec: &Spec) -> Matcher {
    let to = new_ids();
    Matcher::new(
        &[spec.datahub.as_uuid(), spec.connector.as_uuid()],
        Some(&[to.datahub.as_uuid(), to.connector.as_uuid()]),
    )
}

fn root_of(specs: &[pagerewrite::TableSpec], name: &str) -> u32 {
    specs.iter().find(|s| s.name == name).unwrap().root
}

/// Runs the page rewrite on `bytes` written to a file; refused (with the file
/// unchanged) or done.
fn on_bytes(
    dir: &Path,
    bytes: &[u8],
    m: &Matcher,
    specs: &[pagerewrite::TableSpec],
) -> (pagerewrite::Outcome, Vec<u8>) {
    let f = dir.join("damaged.db");
    std::fs::write(&f, bytes).unwrap();
    let out = pagerewrite::rewrite_file(&f, m, specs).unwrap();
    let after = std::fs::read(&f).unwrap();
    if let pagerewrite::Outcome::Refused(_) = out {
        assert!(after == bytes, "a refusal wrote to the file");
    }
    (out, after)
}

/// As [`on_bytes`], through `sqlite_dbpage` inside a write transaction (the in-place
/// path): a refusal or an error is rolled back, a rewrite committed. The header's change
/// counter and version-valid-for (bytes 24..28 and 92..96) move with any commit: they are
/// given as they were.
fn on_bytes_in_transaction(
    dir: &Path,
    bytes: &[u8],
    m: &Matcher,
    specs: &[pagerewrite::TableSpec],
    indexes: &[pagerewrite::IndexSpec],
) -> (pagerewrite::Outcome, Vec<u8>, Vec<Result<u64, String>>) {
    let f = dir.join("damaged-in-place.db");
    std::fs::write(&f, bytes).unwrap();
    let conn = Connection::open(&f).unwrap();
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, false)
        .unwrap();
    let mut patched = Vec::new();
    let out = match conn.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => match pagerewrite::rewrite_in_transaction(&conn, m, specs) {
            Ok(pagerewrite::Outcome::Done(d)) => {
                match pagerewrite::patch_indexes_in_transaction(&conn, m, indexes)
                    .map_err(|e| e.to_string())
                    .and_then(|p| {
                        patched = p;
                        conn.execute_batch("COMMIT").map_err(|e| e.to_string())
                    }) {
                    Ok(()) => pagerewrite::Outcome::Done(d),
                    Err(e) => pagerewrite::Outcome::Refused(format!("commit: {e}")),
                }
            }
            Ok(refused) => refused,
            Err(e) => pagerewrite::Outcome::Refused(format!("error: {e}")),
        },
        Err(e) => pagerewrite::Outcome::Refused(format!("begin: {e}")),
    };
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK").unwrap();
    }
    drop(conn);
    let mut after = std::fs::read(&f).unwrap();
    if after.len() >= 100 && bytes.len() >= 100 {
        after[24..28].copy_from_slice(&bytes[24..28]);
        after[92..96].copy_from_slice(&bytes[92..96]);
    }
    if let pagerewrite::Outcome::Refused(_) = out {
        assert!(
            after == bytes,
            "a refusal in a transaction changed the file"
        );
    }
    (out, after, patched)
}

#[test]
fn damaged_files_are_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let (src, spec, specs, indexes) = damaged_base(dir.path());
    let m = matcher(&spec);
    let good = std::fs::read(&src).unwrap();
    let ps = 4096;
    let page = |n: u32| (n as usize - 1) * ps;
    let refusal = |bytes: &[u8], what: &str| {
        let (out, _) = on_bytes(dir.path(), bytes, &m, &specs);
        if let (pagerewrite::Outcome::Done(_), _, _) =
            on_bytes_in_transaction(dir.path(), bytes, &m, &specs, &indexes)
        {
            panic!("{what}: not refused in a transaction");
        }
        match out {
            pagerewrite::Outcome::Refused(w) => w,
            pagerewrite::Outcome::Done(_) => panic!("{what}: not refused"),
        }
    };
    // The undamaged file is rewritten, both ways.
    assert!(matches!(
        on_bytes(dir.path(), &good, &m, &specs).0,
        pagerewrite::Outcome::Done(_)
    ));
    assert!(matches!(
        on_bytes_in_transaction(dir.path(), &good, &m, &specs, &indexes).0,
        pagerewrite::Outcome::Done(_)
    ));

    // Its indexes: the autoindex of one hub id patched, the three whose values vary left
    // to REINDEX.
    let (_, _, patched) = on_bytes_in_transaction(dir.path(), &good, &m, &specs, &indexes);
    assert!(patched[0].is_ok(), "{patched:?}");
    assert!(
        patched[1..]
            .iter()
            .all(|r| r.as_ref().is_err_and(|w| w.contains("more than one value"))),
        "{patched:?}"
    );
    // A damaged index page: the tables are still rewritten, that index is left to
    // REINDEX, and nothing but ids changed.
    let auto = page(indexes[0].root);
    assert_eq!(good[auto], 0x0A, "the autoindex is one leaf page");
    let mut b = good.clone();
    b[auto + 8..auto + 10].copy_from_slice(&0xFFF0u16.to_be_bytes());
    let (out, after, patched) = on_bytes_in_transaction(dir.path(), &b, &m, &specs, &indexes);
    assert!(
        patched[0]
            .as_ref()
            .is_err_and(|w| w.contains("outside the page")),
        "{patched:?}"
    );
    let (mut done, mut refused) = (0, 0);
    ids_only(out, &b, &after, &mut done, &mut refused);
    assert_eq!((done, refused), (1, 0));

    // A cell pointer past the page (`plain`'s root is one leaf page).
    let leaf = page(root_of(&specs, "plain"));
    assert_eq!(good[leaf], 0x0D);
    let mut b = good.clone();
    b[leaf + 8..leaf + 10].copy_from_slice(&0xFFF0u16.to_be_bytes());
    assert!(refusal(&b, "cell pointer").contains("outside the page"));

    // A cell header's bytes flipped: a payload size that runs past the page.
    let mut b = good.clone();
    let cell = leaf + u16::from_be_bytes([good[leaf + 8], good[leaf + 9]]) as usize;
    b[cell] = 0xFF;
    b[cell + 1] = 0xFF;
    refusal(&b, "cell header");

    // A record header with a reserved serial type.
    let mut b = good.clone();
    let (size_len, rowid_len) = (1, 1);
    b[cell + size_len + rowid_len + 1] = 10;
    assert!(refusal(&b, "serial type").contains("reserved"));

    // An overflow chain that loops: `big`'s first overflow page pointing to itself.
    let big = root_of(&specs, "big");
    let mut b = good.clone();
    let mut looped = false;
    for n in 2..(good.len() / ps) as u32 {
        // An overflow page of `big`: not a B-tree page, its "next" a page in the file.
        let p = page(n);
        let next = u32::from_be_bytes(good[p..p + 4].try_into().unwrap());
        if n != big
            && ![0x02, 0x05, 0x0A, 0x0D].contains(&good[p])
            && next > 1
            && (next as usize) <= good.len() / ps
            && next != n
        {
            b[p..p + 4].copy_from_slice(&n.to_be_bytes());
            looped = true;
            break;
        }
    }
    assert!(looped, "no overflow page found");
    assert!(refusal(&b, "loop").contains("used twice"));

    // A truncated file.
    refusal(&good[..good.len() - ps / 2], "truncated");
    let short = &good[..good.len() - 8 * ps];
    refusal(short, "truncated by pages");
}

/// Seeded random damage (seed 13, or `HUBVAULT_SEED` to sweep others; 150 files): no
/// panic; a refusal writes nothing, and a rewrite changes no byte but where an old id is
/// replaced by its new id.
#[test]
fn random_damage_never_panics_and_never_writes_but_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (src, spec, specs, indexes) = damaged_base(dir.path());
    let m = matcher(&spec);
    let good = std::fs::read(&src).unwrap();
    let seed = std::env::var("HUBVAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13u64);
    eprintln!("random_damage: HUBVAULT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut done, mut refused) = (0, 0);
    for _ in 0..150 {
        let mut b = good.clone();
        for _ in 0..rng.random_range(1..8usize) {
            // Mostly the B-tree structure: the first bytes of pages and the cell pointers.
            let page = rng.random_range(1..b.len() / 4096);
            let at = page * 4096
                + if rng.random_bool(0.5) {
                    rng.random_range(0..64usize)
                } else {
                    rng.random_range(0..4096usize)
                };
            b[at] = rng.random();
        }
        for (out, after) in [on_bytes(dir.path(), &b, &m, &specs), {
            let (out, after, _) = on_bytes_in_transaction(dir.path(), &b, &m, &specs, &indexes);
            (out, after)
        }] {
            ids_only(out, &b, &after, &mut done, &mut refused);
        }
    }
    assert!(done > 0 && refused > 0, "done {done}, refused {refused}");
}

/// A refusal counted; a rewrite counted and checked: every byte of `after` that differs
/// from `b` is a hex digit of an id replaced by one of the new id.
fn ids_only(out: pagerewrite::Outcome, b: &[u8], after: &[u8], done: &mut u32, refused: &mut u32) {
    if let pagerewrite::Outcome::Refused(_) = out {
        *refused += 1;
        return;
    }
    *done += 1;
    // Every byte that changed is a hex digit of an id replaced by one of the new id.
    // (Not "what a rewrite of the whole file as one BLOB changes": an id that straddles
    // two overflow pages is not contiguous in the file.)
    assert_eq!(after.len(), b.len());
    for i in 0..b.len() {
        if after[i] != b[i] {
            assert!(
                b[i].is_ascii_hexdigit() && after[i].is_ascii_hexdigit(),
                "byte {i} changed but is not a digit of an id"
            );
        }
    }
}

/// The switch, through the binary: `remap --output` on the page path (the default) gives
/// the rows the SQL path (`HUBVAULT_PAGE_REWRITE=0`) gives.
#[test]
fn remap_output_on_the_page_path_gives_the_rows_of_the_sql_path() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new("idbs-eworkbook", "Switch", 200);
    let src = base(dir.path(), &spec, &hostile_sql(3));
    let to = new_ids();
    let remap = |out: &Path, pages: bool| {
        let mut c = hubvault();
        c.args(["remap", "--json", "--db"])
            .arg(&src)
            .args(["--to-datahub", &to.datahub.to_string()])
            .args(["--to-connector", &to.connector.to_string(), "--output"])
            .arg(out)
            .env("RUST_LOG", "hubvault=debug");
        page_switch(&mut c, pages);
        let o = run(&mut c);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let sql = remap(&a, false);
    let pages = remap(&b, true);
    let json = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(json(&sql)["changes"], json(&pages)["changes"]);
    // The page path ran (no silent fallback), and only with the switch.
    let said =
        |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).contains("pages rewritten");
    assert!(said(&pages) && !said(&sql));
    assert_eq!(content(&a), content(&b));
    integrity_and_foreign_keys(&b);
}

/// The switch in a restore onto new ids (`install::prepare`): by default the page path
/// runs, and the restored rows are those of the SQL path (`HUBVAULT_PAGE_REWRITE=0`).
fn restore_with_the_switch(tb: &TestBucket) {
    let hub = tempfile::tempdir().unwrap();
    let (db, spec) = connector_db(hub.path(), "hrb-cellario", 120);
    let conn = Connection::open(&db).unwrap();
    let sql = hostile_sql(5)
        .replace("{D}", &spec.datahub.to_string())
        .replace("{C}", &spec.connector.to_string());
    conn.execute_batch(&sql).unwrap();
    drop(conn);
    json_of(
        &run(tb
            .cmd()
            .args(["backup", "--json", "--force", "--db"])
            .arg(&db)),
        0,
    );
    let to = new_ids();
    let dir = tempfile::tempdir().unwrap();
    let restore = |file: &Path, pages: bool| {
        let mut c = tb.cmd();
        c.args(["restore", "--json", "--yes"])
            .args(["--datahub", &spec.datahub.to_string()])
            .args(["--connector", &spec.connector.to_string()])
            .args(["--to-datahub", &to.datahub.to_string()])
            .args(["--to-connector", &to.connector.to_string(), "--output"])
            .arg(file)
            .env("RUST_LOG", "hubvault=debug");
        page_switch(&mut c, pages);
        let o = run(&mut c);
        json_of(&o, 0);
        String::from_utf8_lossy(&o.stderr).contains("pages rewritten")
    };
    let (a, b) = (dir.path().join("sql.db"), dir.path().join("pages.db"));
    assert!(!restore(&a, false));
    assert!(restore(&b, true), "the page path did not run");
    assert_eq!(content(&a), content(&b));
    integrity_and_foreign_keys(&b);
}
both!(
    restore_onto_new_ids_on_the_page_path_gives_the_rows_of_the_sql_path,
    restore_with_the_switch
);

/// A new id spelled with decimal digits only (unhyphenated, it reads as a number): where
/// a column of numeric affinity (here `UUID`) holds the old id, the page path refuses in
/// its checking pass with nothing written, in each encoding (the SQL path then refuses
/// value by value: tests/it/remap.rs); where the ids are only in text columns (the
/// connector tables' INTEGER keys hold none), it rewrites, and the rows are the SQL path's.
#[test]
fn page_rewrite_refuses_a_new_id_that_would_read_as_a_number_only_where_a_numeric_column_holds_an_old_id()
 {
    let to = Ids {
        datahub: DatahubId::parse("11111111-2222-4333-8444-555555555555").unwrap(),
        connector: ConnectorId::parse("66666666-7777-4888-8999-aaaaaaaaaaaa").unwrap(),
    };
    for enc in [None, Some("UTF-16le"), Some("UTF-16be")] {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::new("hrb-cellario", "Digits", 30);
        spec.encoding = enc;
        let plain = spec.datahub.as_uuid().simple().to_string();
        let src = base(dir.path(), &spec, "");
        let (sql, _, out) = both_paths(&src, ids(&spec), to, false);
        assert!(sql.total_values() >= 60, "{enc:?}: {:?}", sql.changes);
        assert!(plain_text(&out, "SELECT count(*) FROM Events") > 0);
        let guarded = dir.path().join("guarded.db");
        std::fs::copy(&src, &guarded).unwrap();
        let c = Connection::open(&guarded).unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE Links (hub UUID, note TEXT); INSERT INTO Links VALUES ('{plain}', 'x');"
        ))
        .unwrap();
        drop(c);
        let before = std::fs::read(&guarded).unwrap();
        let mut conn = db::open_scratch(&guarded).unwrap();
        match rewrite::apply_unchecked_pages(&mut conn, &guarded, ids(&spec), to, false).unwrap() {
            PageOutcome::Refused(w) => {
                assert!(
                    w.contains("column hub") && w.contains("number"),
                    "{enc:?}: {w}"
                )
            }
            PageOutcome::Done(_) => panic!("{enc:?}: not refused"),
        }
        drop(conn);
        assert_eq!(std::fs::read(&guarded).unwrap()[100..], before[100..]);
        for mode in ["DELETE", "WAL"] {
            match in_place(&guarded, mode, ids(&spec), to, false) {
                Err(w) => assert!(w.contains("column hub") && w.contains("number"), "{w}"),
                Ok(_) => panic!("{enc:?}, in place, {mode}: not refused"),
            }
        }
    }
}

/// SQLite reads text as a number with any of its spaces around it, the vertical tab
/// (0x0B) included, which Rust's `is_ascii_whitespace` leaves out: a value of the old id
/// between vertical tabs, in a column of numeric affinity, with a new id of decimal
/// digits, would be stored as a number by the SQL path's `UPDATE` (the id lost to a
/// REAL) and kept TEXT by the page path. Both must refuse it, in each encoding, with
/// nothing written; the same value between other spaces is refused already.
#[test]
fn a_new_id_that_reads_as_a_number_between_vertical_tabs_is_refused_by_both_paths() {
    let to = Ids {
        datahub: DatahubId::parse("11111111-2222-4333-8444-555555555555").unwrap(),
        connector: ConnectorId::parse("66666666-7777-4888-8999-aaaaaaaaaaaa").unwrap(),
    };
    for enc in [None, Some("UTF-16le"), Some("UTF-16be")] {
        for space in ["char(11)", "char(9)"] {
            let dir = tempfile::tempdir().unwrap();
            let mut spec = Spec::new("hrb-cellario", "Tabs", 5);
            spec.encoding = enc;
            let plain = spec.datahub.as_uuid().simple().to_string();
            let src = base(
                dir.path(),
                &spec,
                &format!(
                    "CREATE TABLE Links (hub UUID, note TEXT);
                     INSERT INTO Links VALUES ({space} || '{plain}' || {space}, 'x');"
                ),
            );
            let before = std::fs::read(&src).unwrap();
            let copy = dir.path().join("pages.db");
            std::fs::copy(&src, &copy).unwrap();
            let mut conn = db::open_scratch(&copy).unwrap();
            match rewrite::apply_unchecked_pages(&mut conn, &copy, ids(&spec), to, false).unwrap() {
                PageOutcome::Refused(w) => {
                    assert!(
                        w.contains("column hub") && w.contains("number"),
                        "{enc:?} {space}: {w}"
                    )
                }
                PageOutcome::Done(_) => panic!("{enc:?} {space}: the page path did not refuse"),
            }
            drop(conn);
            assert_eq!(std::fs::read(&copy).unwrap()[100..], before[100..]);
            let sql = dir.path().join("sql.db");
            std::fs::copy(&src, &sql).unwrap();
            let mut conn = db::open_scratch(&sql).unwrap();
            let e = match rewrite::apply_unchecked(&mut conn, &sql, ids(&spec), to, false) {
                Ok(_) => panic!("{enc:?} {space}: the SQL path did not refuse"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains("would be stored as a number"),
                "{enc:?} {space}: {e}"
            );
        }
    }
}

/// A column added by `ALTER TABLE ... ADD COLUMN` is not in the rows written before it:
/// SQLite reads those rows with the column's default. A BLOB literal default
/// (`x'3666...'`) spells an old id in hex, which the search of the schema's SQL did not
/// see. The page path rewrote what the records hold, so it left those rows reading the
/// old id, and the final scan (it reads again the columns the rewrite changed) did not see
/// it; the SQL path's `UPDATE` wrote the new id into them but left the default naming the
/// old hub for every row inserted later. An old id in the schema's SQL is refused, as
/// text already was: by both paths, nothing written, the error naming the table.
#[test]
fn a_default_that_holds_an_old_id_in_a_blob_literal_is_refused_by_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new("sdc", "Default", 10);
    let hex = |s: String| -> String { s.bytes().map(|b| format!("{b:02x}")).collect() };
    let src = base(
        dir.path(),
        &spec,
        &format!(
            "CREATE TABLE late(n INTEGER); INSERT INTO late VALUES (1), (2), (3);
             ALTER TABLE late ADD COLUMN hub BLOB DEFAULT x'{}';
             ALTER TABLE late ADD COLUMN src TEXT DEFAULT 'none';",
            hex(format!("/hubs/{}/", spec.datahub))
        ),
    );
    let old = [spec.datahub.to_string(), spec.connector.to_string()];
    let conn = db::open_read_only(&src).unwrap();
    assert!(!rewrite::scan_ids(&conn, &src, &old).unwrap().is_empty());
    drop(conn);
    refused(&src, ids(&spec), "schema");
    let out = dir.path().join("switched.db");
    std::fs::copy(&src, &out).unwrap();
    let before = std::fs::read(&out).unwrap();
    let mut conn = db::open_scratch(&out).unwrap();
    let err = rewrite::apply_unchecked_switched(&mut conn, &out, ids(&spec), new_ids(), false)
        .err()
        .expect("refused");
    drop(conn);
    assert!(
        err.to_string().contains("table late") && err.to_string().contains("BLOB literal"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap()[100..], before[100..]);
}

/// Rows with the old ids in `table.column`, as `conn` sees them.
fn old_rows(conn: &Connection, spec: &Spec) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM Events WHERE integration = ?1",
        [spec.datahub.to_string()],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn remap_in_place_on_the_pages_rewrites_rows_only_in_the_wal_and_shows_nothing_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new("hrb-cellario", "Live", 200);
    let src = base(dir.path(), &spec, "");
    // A connector's connection: WAL, no checkpoint, so its last commits live in the -wal.
    let writer = Connection::open(&src).unwrap();
    writer
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             INSERT INTO Events (integration, source, externalId, eventType, createdAt, updatedAt)
             SELECT integration, source, externalId || '-wal', eventType, createdAt, updatedAt
             FROM Events;",
        )
        .unwrap();
    let wal = std::fs::metadata(format!("{}-wal", src.display())).unwrap();
    assert!(wal.len() > 0, "the new rows are in the -wal");
    // A reader inside a read transaction, begun before the rewrite.
    let reader = Connection::open(&src).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let before = old_rows(&reader, &spec);
    assert_eq!(before, 400, "200 rows and their 200 copies in the -wal");
    let to = new_ids();
    let mut conn = db::open_read_write(&src).unwrap();
    let plan = rewrite::apply_pages(&mut conn, &src, ids(&spec), to, false)
        .unwrap()
        .unwrap_or_else(|why| panic!("refused: {why}"));
    drop(conn);
    assert!(plan.total_values() >= 800, "{:?}", plan.changes);
    assert_eq!(
        old_rows(&reader, &spec),
        before,
        "the reader's snapshot is kept"
    );
    reader.execute_batch("COMMIT").unwrap();
    assert_eq!(old_rows(&reader, &spec), 0);
    let new: i64 = writer
        .query_row(
            "SELECT count(*) FROM Events WHERE integration = ?1",
            [to.datahub.to_string()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(new, 400, "the connector's own connection sees the rewrite");
    drop((reader, writer));
    integrity_and_foreign_keys(&src);
}

fn plain_text(path: &Path, sql: &str) -> i64 {
    db::open_read_only(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// The page rewrite on (the default, `pages`) or off for one command.
fn page_switch(c: &mut std::process::Command, pages: bool) {
    if pages {
        c.env_remove(rewrite::PAGE_REWRITE_ENV);
    } else {
        c.env(rewrite::PAGE_REWRITE_ENV, "0");
    }
}

/// `REINDEX name` reads `name` as a collation first: indexes named `nocase`, `rtrim` and
/// `binary` must still be rebuilt after a page rewrite (on a private copy and in place,
/// in both journal modes: `both_paths` runs `integrity_check` on each result), and a
/// UNIQUE index so named still refuses a rewrite that would make two rows equal, in
/// place, with nothing changed.
#[test]
fn indexes_named_after_a_collation_are_rebuilt_and_keep_their_unique_constraint() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new("sdc", "Collations", 30);
    // Apart: `REINDEX binary` rebuilds every index of BINARY keys, which would hide the
    // other two.
    let other = tempfile::tempdir().unwrap();
    let src = base(
        other.path(),
        &spec,
        r#"CREATE INDEX "binary" ON Events(integration COLLATE NOCASE);"#,
    );
    both_paths(&src, ids(&spec), new_ids(), false);
    let src = base(
        dir.path(),
        &spec,
        r#"CREATE INDEX "nocase" ON Events(integration); CREATE INDEX "rtrim" ON Events(source);"#,
    );
    both_paths(&src, ids(&spec), new_ids(), false);
    let to = new_ids();
    let clash = dir.path().join("clash.db");
    std::fs::copy(&src, &clash).unwrap();
    Connection::open(&clash)
        .unwrap()
        .execute_batch(&format!(
            r#"DROP INDEX "nocase"; CREATE TABLE Q(x TEXT); CREATE UNIQUE INDEX "nocase" ON Q(x);
               INSERT INTO Q VALUES ('{}'), ('{}');"#,
            spec.connector, to.connector
        ))
        .unwrap();
    for mode in ["WAL", "DELETE"] {
        let c = dir.path().join(format!("clash-{mode}.db"));
        std::fs::copy(&clash, &c).unwrap();
        let mut conn = db::open_read_write(&c).unwrap();
        let _: String = conn
            .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
            .unwrap();
        let before = content(&c);
        let err = match rewrite::apply_pages(&mut conn, &c, ids(&spec), to, false) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("{mode}: not refused: {:?}", r.map(|p| p.changes)),
        };
        drop(conn);
        assert!(err.contains("UNIQUE"), "{mode}: {err}");
        assert_eq!(content(&c), before, "{mode}");
    }
}

/// Fixed ids for the index tests: `5` sorts between the old hub id and the new one, so
/// an index holding both `5` and the hub id changes its order with the rewrite.
fn sorting_ids(spec: &mut Spec) -> Ids {
    spec.datahub = DatahubId::parse("11111111-1111-4111-8111-111111111111").unwrap();
    spec.connector = ConnectorId::parse("12121212-1212-4212-8212-121212121212").unwrap();
    Ids {
        datahub: DatahubId::parse("eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee").unwrap(),
        connector: ConnectorId::parse("edededed-eded-4ded-8ded-edededededed").unwrap(),
    }
}

/// Indexes of the fixture's `Events` whose changed column holds one value in every
/// entry (the hub id: ascending, descending, NOCASE, and the UNIQUE autoindex), and one
/// of a table where `5` sits between the old and the new hub id.
const INDEXES: &str = "CREATE INDEX ev_desc ON Events(integration DESC, occurredAt);
    CREATE INDEX ev_nocase ON Events(integration COLLATE NOCASE, eventType);
    CREATE TABLE two(k TEXT, n INTEGER); CREATE INDEX two_k ON two(k);
    INSERT INTO two VALUES ('{D}', 1), ('5', 2);";

/// The index specs of `names` in `conn`.
fn index_specs(conn: &Connection, names: &[&str]) -> Vec<pagerewrite::IndexSpec> {
    names
        .iter()
        .map(|n| pagerewrite::IndexSpec {
            name: n.to_string(),
            root: conn
                .query_row(
                    "SELECT rootpage FROM sqlite_schema WHERE type = 'index' AND name = ?1",
                    [n],
                    |r| r.get(0),
                )
                .unwrap(),
        })
        .collect()
}

/// The table specs of every ordinary ROWID table of `conn`.
fn table_specs(conn: &Connection) -> Vec<pagerewrite::TableSpec> {
    conn.prepare("SELECT name, rootpage FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' AND sql NOT LIKE '%WITHOUT ROWID%'")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
        .unwrap()
        .map(|r| {
            let (name, root) = r.unwrap();
            let columns = conn
                .prepare("SELECT name FROM pragma_table_xinfo(?1)")
                .unwrap()
                .query_map([&name], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<Vec<String>>>()
                .unwrap();
            pagerewrite::TableSpec {
                name,
                root,
                columns,
                guarded: Vec::new(),
            }
        })
        .collect()
}

/// In a write transaction of `conn` left open: every table's ids rewritten on the pages
/// from `spec`'s ids to `to`, then the keys of `indexes` patched; what the patch says of
/// each index.
fn rewrite_and_patch(
    conn: &Connection,
    spec: &Spec,
    to: Ids,
    indexes: &[pagerewrite::IndexSpec],
) -> Vec<Result<u64, String>> {
    let m = Matcher::new(
        &[spec.datahub.as_uuid(), spec.connector.as_uuid()],
        Some(&[to.datahub.as_uuid(), to.connector.as_uuid()]),
    );
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, false)
        .unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let done = pagerewrite::rewrite_in_transaction(conn, &m, &table_specs(conn)).unwrap();
    assert!(matches!(done, pagerewrite::Outcome::Done(_)), "{done:?}");
    pagerewrite::patch_indexes_in_transaction(conn, &m, indexes).unwrap()
}

/// The rule, on the pages: an index whose changed key column holds one value in every
/// entry is patched (the UNIQUE autoindex here spans interior pages), whatever its
/// direction or collation; one where another value sits between the old id and the new
/// one is left to REINDEX. After that REINDEX, the database passes `integrity_check`
/// (which looks every row up in every index), every index finds the rows by the new
/// id, and the UNIQUE index still refuses a duplicate.
#[test]
fn an_index_is_patched_in_place_only_when_its_changed_key_column_holds_one_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("sdc", "Patch", 3000);
    let to = sorting_ids(&mut spec);
    let src = base(dir.path(), &spec, INDEXES);
    let conn = Connection::open(&src).unwrap();
    let auto = "sqlite_autoindex_Events_1";
    let names = [
        auto,
        "ev_desc",
        "ev_nocase",
        "sqlite_autoindex_Integrations_1",
        "two_k",
    ];
    let indexes = index_specs(&conn, &names);
    let root_type: u8 = conn
        .query_row(
            "SELECT substr(data, 1, 1) FROM sqlite_dbpage WHERE pgno = ?1",
            [indexes[0].root],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .unwrap()[0];
    assert_eq!(root_type, 0x02, "the autoindex's root is an interior page");
    let patched = rewrite_and_patch(&conn, &spec, to, &indexes);
    for (name, r) in names.iter().zip(&patched) {
        match (*name, r) {
            ("two_k", Err(why)) => assert!(why.contains("more than one value"), "{why}"),
            ("two_k", Ok(_)) => panic!("two_k was patched although its order changes"),
            (_, Ok(pages)) => assert!(*pages > 0, "{name}: nothing written"),
            (_, Err(why)) => panic!("{name} was not patched: {why}"),
        }
    }
    assert!(patched[0].as_ref().unwrap() > &10, "{patched:?}");
    conn.execute_batch("REINDEX main.two_k; COMMIT").unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let hub = to.datahub.to_string();
    for idx in &names[..3] {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM Events INDEXED BY {idx} WHERE integration = ?1"),
                [&hub],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 3000, "{idx}");
    }
    let dup = conn.execute(
        "INSERT INTO Events (integration, source, externalId, eventType, createdAt, updatedAt)
         SELECT integration, source, externalId, eventType, createdAt, updatedAt FROM Events LIMIT 1",
        [],
    );
    assert!(
        dup.unwrap_err().to_string().contains("UNIQUE"),
        "the patched UNIQUE index lets a duplicate in"
    );
}

/// The same database through every path (`both_paths`: a private copy and in place in
/// both journal modes, each checked with `integrity_check`, the rows compared with the
/// SQL rewrite's).
#[test]
fn patched_and_rebuilt_indexes_give_the_rows_of_the_sql_rewrite_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("sdc", "Patch", 3000);
    let to = sorting_ids(&mut spec);
    let src = base(dir.path(), &spec, INDEXES);
    let (sql, _, _) = both_paths(&src, ids(&spec), to, false);
    assert!(sql.total_values() >= 6000, "{:?}", sql.changes);
}

// --- Review of the index patch (`patch_indexes_in_transaction`): a patched index must be
// the index REINDEX builds, entry for entry and in the same order, on every shape below.

/// Every entry of index `idx` in the order of its B-tree, each key value and the rowid
/// as its type and the hex of its stored bytes: a covering scan forced with INDEXED BY
/// (checked in the plan), so the values are read from the index, not the table.
fn index_entries(conn: &Connection, idx: &str) -> Vec<String> {
    let table: String = conn
        .query_row(
            "SELECT tbl_name FROM sqlite_schema WHERE type = 'index' AND name = ?1",
            [idx],
            |r| r.get(0),
        )
        .unwrap();
    let cols: Vec<Option<String>> = conn
        .prepare("SELECT name FROM pragma_index_xinfo(?1) ORDER BY seqno")
        .unwrap()
        .query_map([idx], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let expr: Vec<String> = cols
        .iter()
        .map(|c| {
            let q = c
                .as_ref()
                .map_or("rowid".to_string(), |c| format!("\"{c}\""));
            format!("typeof({q}) || ':' || hex({q})")
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM \"{table}\" INDEXED BY \"{idx}\"",
        expr.join(" || ',' || ")
    );
    let plan: String = conn
        .query_row(&format!("EXPLAIN QUERY PLAN {sql}"), [], |r| r.get(3))
        .unwrap();
    assert!(plan.contains(&format!("COVERING INDEX {idx}")), "{plan}");
    conn.prepare(&sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// On a copy of `src`: the pages rewritten and the indexes `names` patched in one
/// transaction (as the in-place path does), then each patched index compared, entry for
/// entry in B-tree order, with what `REINDEX` makes of it on the same rows; after
/// `REINDEX` of everything the result passes `integrity_check`. Each index's outcome (pages written, or why it is left to
/// REINDEX).
fn patched_against_reindex(
    src: &Path,
    spec: &Spec,
    to: Ids,
    names: &[&str],
) -> Vec<Result<u64, String>> {
    let c = src.parent().unwrap().join("patched.db");
    std::fs::copy(src, &c).unwrap();
    let conn = Connection::open(&c).unwrap();
    let patched = rewrite_and_patch(&conn, spec, to, &index_specs(&conn, names));
    conn.execute_batch("COMMIT").unwrap();
    let before: Vec<Option<Vec<String>>> = names
        .iter()
        .zip(&patched)
        .map(|(n, r)| r.as_ref().ok().map(|_| index_entries(&conn, n)))
        .collect();
    // Every index, including the stale ones of the fixture's tables not named here.
    conn.execute_batch("REINDEX").unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    for (n, b) in names.iter().zip(before) {
        if let Some(b) = b {
            assert_eq!(
                b,
                index_entries(&conn, n),
                "{n}: patched is not what REINDEX builds"
            );
        }
    }
    patched
}

/// `expect`: per index, `None` if it must be patched, or a word of why it must be left
/// to REINDEX. Checked on the pages ([`patched_against_reindex`]), then through every
/// path ([`both_paths`]), where each index must hold the entries the SQL rewrite's does.
fn indexes_as_expected(src: &Path, spec: &Spec, to: Ids, expect: &[(&str, Option<&str>)]) {
    let names: Vec<&str> = expect.iter().map(|e| e.0).collect();
    let got = patched_against_reindex(src, spec, to, &names);
    for ((name, want), r) in expect.iter().zip(&got) {
        match (want, r) {
            (None, Ok(_)) => {}
            (Some(w), Err(why)) => assert!(why.contains(w), "{name}: {why}"),
            (None, Err(why)) => panic!("{name} not patched: {why}"),
            (Some(_), Ok(p)) => panic!("{name} patched ({p} pages) although it must not be"),
        }
    }
    let (_, _, pages) = both_paths(src, ids(spec), to, false);
    let dir = src.parent().unwrap();
    let sql = Connection::open(dir.join("sql.db")).unwrap();
    for other in [
        pages,
        dir.join("in-place-DELETE.db"),
        dir.join("in-place-WAL.db"),
    ] {
        let conn = Connection::open(&other).unwrap();
        for n in &names {
            assert_eq!(
                index_entries(&sql, n),
                index_entries(&conn, n),
                "{n} in {}",
                other.display()
            );
        }
    }
}

/// Shapes around the rule: collations where byte-different values compare equal
/// (RTRIM, NOCASE), DESC columns, a multi-column key where one changed column is
/// constant and another varies, ids as TEXT in columns of numeric affinity, NULLs,
/// columns added by ALTER TABLE ADD COLUMN (rows shorter than the key), an id inside a
/// constant path and JSON, UNIQUE indexes, and sqlite_stat1 after ANALYZE.
const SHAPES: &str = "
    CREATE TABLE col(k TEXT, r TEXT COLLATE RTRIM, n INTEGER, j TEXT, u TEXT);
    CREATE TABLE mc(a TEXT, b TEXT, n INTEGER);
    CREATE TABLE num(i INTEGER, r REAL, x NUMERIC, n INTEGER);
    CREATE TABLE nul(k TEXT, z TEXT, n INTEGER, w TEXT);
    CREATE TABLE alt(a TEXT, n INTEGER);
    CREATE TABLE uq(k TEXT, m TEXT, UNIQUE(m, k));
    WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400)
    INSERT INTO col SELECT '{D}', '{C}' || CASE WHEN i % 2 THEN '' ELSE '  ' END, i,
        '{\"hub\":\"{D}\",\"path\":\"/hubs/{D}/c/{C}.json\"}',
        CASE WHEN i % 2 THEN 'x/{C}' ELSE 'X/{C}' END FROM s;
    WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400)
    INSERT INTO mc SELECT '{D}', CASE WHEN i % 3 THEN '{C}' ELSE '5' END, i FROM s;
    WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400)
    INSERT INTO num SELECT '{D}', '{C}', CASE WHEN i % 4 THEN '{D}' ELSE 42 END, i FROM s;
    WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400)
    INSERT INTO nul SELECT CASE WHEN i % 7 THEN '{D}' END, NULL, i, '{D}' FROM s;
    WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400)
    INSERT INTO alt SELECT '{D}', i FROM s;
    ALTER TABLE alt ADD COLUMN b TEXT DEFAULT 'none';
    ALTER TABLE alt ADD COLUMN c TEXT;
    UPDATE alt SET c = '{C}' WHERE n % 3 = 0;
    WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400)
    INSERT INTO uq SELECT '{D}', 'm' || i FROM s;
    CREATE INDEX col_nocase ON col(k COLLATE NOCASE, n);
    CREATE UNIQUE INDEX col_u ON col(k, n);
    CREATE INDEX col_desc ON col(k DESC, j DESC);
    CREATE INDEX col_rtrim ON col(r, n);
    CREATE INDEX col_case ON col(u COLLATE NOCASE, n DESC);
    CREATE INDEX mc_ab ON mc(a, b);
    CREATE INDEX mc_ba ON mc(b DESC, a);
    CREATE INDEX mc_an ON mc(a DESC, n);
    CREATE INDEX num_ir ON num(i, r, n);
    CREATE INDEX num_x ON num(x);
    CREATE INDEX nul_kn ON nul(k, n);
    CREATE INDEX nul_zw ON nul(z, w, n);
    CREATE INDEX alt_ba ON alt(b, a, n);
    CREATE INDEX alt_ca ON alt(c, a);
    ANALYZE;";

/// What each index of [`SHAPES`] must get: patched when every changed key column holds
/// one value, left to REINDEX otherwise.
const SHAPES_EXPECT: &[(&str, Option<&str>)] = &[
    ("col_nocase", None),
    ("col_u", None),
    ("col_desc", None),
    ("col_rtrim", Some("more than one value")),
    ("col_case", Some("more than one value")),
    ("mc_ab", Some("more than one value")),
    ("mc_ba", Some("more than one value")),
    ("mc_an", None),
    ("num_ir", None),
    ("num_x", Some("more than one value")),
    ("nul_kn", Some("more than one value")),
    ("nul_zw", None),
    ("alt_ba", None),
    ("alt_ca", Some("more than one value")),
    ("sqlite_autoindex_uq_1", None),
];

/// The shapes, in each text encoding: every index patched is entry for entry the one
/// REINDEX builds, every path gives the SQL rewrite's indexes, and the patched UNIQUE
/// indexes still refuse a duplicate of the new id.
#[test]
fn patched_indexes_equal_reindex_on_collations_nulls_numeric_affinity_and_added_columns_in_each_encoding()
 {
    for enc in [None, Some("UTF-16le"), Some("UTF-16be")] {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::new("sdc", "Shapes", 30);
        spec.encoding = enc;
        let to = sorting_ids(&mut spec);
        let src = base(dir.path(), &spec, SHAPES);
        indexes_as_expected(&src, &spec, to, SHAPES_EXPECT);
        let conn = Connection::open(dir.path().join("in-place-WAL.db")).unwrap();
        let hub = to.datahub.to_string();
        for (sql, what) in [
            ("INSERT INTO col(k, n) VALUES (?1, 7)", "col_u"),
            (
                "INSERT INTO uq(k, m) VALUES (?1, 'm7')",
                "sqlite_autoindex_uq_1",
            ),
        ] {
            let e = conn.execute(sql, [&hub]).unwrap_err().to_string();
            assert!(e.contains("UNIQUE"), "{enc:?} {what}: {e}");
        }
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM col INDEXED BY col_nocase WHERE k COLLATE NOCASE = upper(?1)",
                [&hub],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 400, "{enc:?}");
    }
}

/// Keys at the overflow limit of an index page (X = (U-12)*64/255 - 23 bytes of
/// payload): a key of X bytes is on its page and patched, one of X+1 spills to an
/// overflow page and is left to REINDEX; both give the entries REINDEX builds.
#[test]
fn index_keys_at_the_overflow_limit_are_patched_up_to_it_and_rebuilt_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("sdc", "Overflow", 30);
    let to = sorting_ids(&mut spec);
    let probe = base(dir.path(), &spec, "");
    let page = Connection::open(&probe)
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize;
    let x = (page - 12) * 64 / 255 - 23;
    // Key record of `k` (UTF-8 TEXT of L >= 58 bytes), `n` and the rowid (both below
    // 128): a header of 5 bytes (its size, a 2-byte serial type, 1, 1), L + 1 + 1 bytes.
    let lens: Vec<usize> = (x - 9..=x - 5).collect();
    let mut sql = String::new();
    for l in &lens {
        sql.push_str(&format!(
            "CREATE TABLE ov{l}(k TEXT, n INTEGER); CREATE INDEX ov{l}_k ON ov{l}(k, n);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 5)
             INSERT INTO ov{l} SELECT substr('/{{D}}/' || replace(hex(zeroblob({page})), '0', 'x'), 1, {l}), i
               FROM s;"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let src = base(dir.path(), &spec, &sql);
    let names: Vec<String> = lens.iter().map(|l| format!("ov{l}_k")).collect();
    let expect: Vec<(&str, Option<&str>)> = names
        .iter()
        .zip(&lens)
        .map(|(n, l)| (n.as_str(), (l + 7 > x).then_some("overflows")))
        .collect();
    indexes_as_expected(&src, &spec, to, &expect);
}

/// The table `pos(t, k)` with its index `pos_tk` of 300 entries over several pages: `k`
/// holds the hub id in every row but the one whose `t` is `odd_at` (if any), which holds
/// another value of the same length.
fn positions(dir: &Path, spec: &Spec, odd_at: Option<&str>) -> PathBuf {
    let odd = odd_at.unwrap_or("none");
    base(
        dir,
        spec,
        &format!(
            "CREATE TABLE pos(t TEXT, k TEXT);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300)
             INSERT INTO pos SELECT printf('row%05d', i),
                 CASE WHEN printf('row%05d', i) = '{odd}'
                      THEN '55555555-5555-4555-8555-555555555555' ELSE '{{D}}' END
               FROM s;
             CREATE INDEX pos_tk ON pos(t, k);"
        ),
    )
}

/// The cells of `pos_tk`'s root page in `conn`: its page number and each cell's `t` and
/// `k` (a child page number, the payload size in 1 byte as it is under 128, the record:
/// its header, `t` in 8 bytes, `k` in 36).
fn root_cells(conn: &Connection) -> (u32, Vec<(String, String)>) {
    let root: u32 = index_specs(conn, &["pos_tk"])[0].root;
    let data: Vec<u8> = conn
        .query_row(
            "SELECT data FROM sqlite_dbpage WHERE pgno = ?1",
            [root],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(data[0], 0x02, "pos_tk's root is an interior page");
    let cells = u16::from_be_bytes([data[3], data[4]]) as usize;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let cells = (0..cells)
        .map(|i| {
            let c = u16::from_be_bytes([data[12 + 2 * i], data[13 + 2 * i]]) as usize;
            let body = c + 5 + data[c + 5] as usize;
            (
                text(&data[body..body + 8]),
                text(&data[body + 8..body + 44]),
            )
        })
        .collect();
    (root, cells)
}

/// The constancy check covers every cell of every page: one other value in the changed
/// column, in the first leaf, the last leaf, or a cell of the interior root page, is
/// enough to leave the index to REINDEX (the walk reads the root first: there the
/// other value may even be the first one it meets).
#[test]
fn one_other_value_on_a_leaf_or_the_interior_root_leaves_the_index_to_reindex() {
    let mut spec = Spec::new("sdc", "Positions", 30);
    let to = sorting_ids(&mut spec);
    let probe = tempfile::tempdir().unwrap();
    let src = positions(probe.path(), &spec, None);
    let (_, cells) = root_cells(&Connection::open(&src).unwrap());
    assert!(cells.len() >= 2, "{cells:?}");
    assert!(patched_against_reindex(&src, &spec, to, &["pos_tk"])[0].is_ok());
    // The layout depends only on the sizes of the entries: the same with the other value
    // (same length and type) in the row of a root cell.
    let odd = "55555555-5555-4555-8555-555555555555";
    for (at, in_root) in [
        ("row00001", false),
        (cells[0].0.as_str(), true),
        (cells[cells.len() - 1].0.as_str(), true),
        ("row00300", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let src = positions(dir.path(), &spec, Some(at));
        let (_, got) = root_cells(&Connection::open(&src).unwrap());
        assert_eq!(got.iter().any(|(_, k)| k == odd), in_root, "{at}: {got:?}");
        let got = patched_against_reindex(&src, &spec, to, &["pos_tk"]);
        assert!(
            got[0]
                .as_ref()
                .is_err_and(|w| w.contains("more than one value")),
            "{at}: {got:?}"
        );
        if at == cells[0].0 {
            indexes_as_expected(&src, &spec, to, &[("pos_tk", Some("more than one value"))]);
        }
    }
}

/// Seeded random damage (seed 13, or `HUBVAULT_SEED` to sweep others; 80 files) aimed
/// at the index pages alone (type 0x02 and 0x0A: their headers, cell pointers and
/// cells), and two cell pointers made equal (one key patched twice): the tables are
/// still rewritten or refused, the index walk never panics, and no byte changes but the
/// digits of an old id replaced by the new one's.
#[test]
fn damage_on_index_pages_never_panics_and_never_writes_but_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("sdc", "IndexDamage", 500);
    let to = sorting_ids(&mut spec);
    let src = base(dir.path(), &spec, INDEXES);
    let conn = db::open_read_only(&src).unwrap();
    let names = [
        "sqlite_autoindex_Events_1",
        "ev_desc",
        "ev_nocase",
        "sqlite_autoindex_Integrations_1",
        "two_k",
    ];
    let (specs, indexes) = (table_specs(&conn), index_specs(&conn, &names));
    drop(conn);
    let m = Matcher::new(
        &[spec.datahub.as_uuid(), spec.connector.as_uuid()],
        Some(&[to.datahub.as_uuid(), to.connector.as_uuid()]),
    );
    let good = std::fs::read(&src).unwrap();
    let ps = 4096;
    let index_pages: Vec<usize> = (1..good.len() / ps)
        .filter(|n| [0x02, 0x0A].contains(&good[n * ps]))
        .collect();
    assert!(index_pages.len() > 20, "{}", index_pages.len());
    let (mut done, mut refused, mut patched, mut rebuilt) = (0, 0, 0, 0);
    let mut tally = |p: &[Result<u64, String>]| {
        patched += p.iter().filter(|r| r.is_ok()).count();
        rebuilt += p.iter().filter(|r| r.is_err()).count();
    };
    let (_, _, p_good) = on_bytes_in_transaction(dir.path(), &good, &m, &specs, &indexes);
    let errs = |p: &[Result<u64, String>]| p.iter().filter(|r| r.is_err()).count();
    // Two cell pointers of an index's first leaf made equal: that index is left to
    // REINDEX (the key seen twice, once patched, reads as a second value, or the cells
    // overlap), never patched twice.
    let mut b = good.clone();
    let leaf = *index_pages
        .iter()
        .find(|&&n| {
            good[n * ps] == 0x0A && u16::from_be_bytes([good[n * ps + 3], good[n * ps + 4]]) > 2
        })
        .unwrap()
        * ps;
    let first = [b[leaf + 8], b[leaf + 9]];
    b[leaf + 10..leaf + 12].copy_from_slice(&first);
    let (out, after, p) = on_bytes_in_transaction(dir.path(), &b, &m, &specs, &indexes);
    assert_eq!(errs(&p), errs(&p_good) + 1, "{p:?}");
    ids_only(out, &b, &after, &mut done, &mut refused);
    let seed = std::env::var("HUBVAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13u64);
    eprintln!("damage_on_index_pages: HUBVAULT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..80 {
        let mut b = good.clone();
        for _ in 0..rng.random_range(1..5usize) {
            let page = index_pages[rng.random_range(0..index_pages.len())];
            let at = page * ps
                + match rng.random_range(0..3) {
                    0 => rng.random_range(0..12usize),
                    1 => rng.random_range(8..200usize),
                    _ => rng.random_range(0..ps),
                };
            b[at] = rng.random();
        }
        let (out, after, p) = on_bytes_in_transaction(dir.path(), &b, &m, &specs, &indexes);
        tally(&p);
        ids_only(out, &b, &after, &mut done, &mut refused);
    }
    assert!(
        done > 0 && patched > 0 && rebuilt > 0,
        "done {done}, refused {refused}, patched {patched}, left to REINDEX {rebuilt}"
    );
}

/// In a UTF-16 database, TEXT whose bytes spell an old id only at an odd offset (the
/// id's characters as the high bytes of CJK characters U+3100, U+6100, ..., each
/// followed by a zero byte: `㄀愀...` in UTF-16le) holds no id: every path leaves it, and
/// the index over it, as it was, and the counts say nothing was found there.
#[test]
fn utf16_text_spelling_an_id_at_an_odd_byte_offset_is_left_alone_on_every_path() {
    for enc in ["UTF-16le", "UTF-16be"] {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::new("sdc", "Odd", 30);
        spec.encoding = Some(enc);
        let to = sorting_ids(&mut spec);
        let src = base(
            dir.path(),
            &spec,
            "CREATE TABLE odd(t TEXT, n INTEGER); CREATE INDEX odd_t ON odd(t, n);",
        );
        // The id's UTF-16 spelling in this byte order, one byte off: a byte before it and
        // one after, read as characters (`㄀愀...`: no surrogates, no id).
        let id = spec.connector.to_string();
        let mut spelled = Vec::new();
        for b in id.bytes() {
            spelled.extend(if enc == "UTF-16le" { [b, 0] } else { [0, b] });
        }
        let bytes: Vec<u8> = [&[0x20][..], &spelled, &[0x4E]].concat();
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| {
                if enc == "UTF-16le" {
                    u16::from_le_bytes([p[0], p[1]])
                } else {
                    u16::from_be_bytes([p[0], p[1]])
                }
            })
            .collect();
        let text = String::from_utf16(&units).unwrap();
        let conn = Connection::open(&src).unwrap();
        conn.execute(
            "INSERT INTO odd VALUES (?1, 1), (?2, 2)",
            [&text, &spec.connector.to_string()],
        )
        .unwrap();
        let stored: Vec<u8> = conn
            .query_row("SELECT CAST(t AS BLOB) FROM odd WHERE n = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        drop(conn);
        let at = stored
            .windows(spelled.len())
            .position(|w| w == spelled.as_slice());
        assert!(at.is_some_and(|a| a % 2 == 1), "{enc}: {stored:02x?}");
        let (sql, _, pages) = both_paths(&src, ids(&spec), to, false);
        let odd: Vec<_> = sql.changes.iter().filter(|c| c.table == "odd").collect();
        assert!(
            odd.len() == 1 && odd[0].values == 1,
            "{enc}: only the row holding the id itself: {odd:?}"
        );
        for out in [
            dir.path().join("sql.db"),
            pages,
            dir.path().join("in-place-WAL.db"),
        ] {
            let got: String = Connection::open(&out)
                .unwrap()
                .query_row("SELECT t FROM odd INDEXED BY odd_t WHERE n = 1", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(got, text, "{enc}: {}", out.display());
        }
    }
}

/// In rollback-journal mode the checks of an in-place rewrite run on connections that
/// read the file after the transaction has put every changed page into it (spilled during
/// the pass with a 16-page cache, the rest flushed; the originals in its journal). A
/// check that fails there, on either of the two connections, rolls the file back to
/// every byte it had and leaves no journal behind.
#[test]
fn in_place_with_a_rollback_journal_a_failed_check_of_the_flushed_result_puts_every_byte_back() {
    let cases = [
        (
            "integrity_check",
            "PRAGMA writable_schema=ON;
             UPDATE sqlite_schema SET sql = 'CREATE INDEX `events_status_updated` ON `Events` (`eventType`, `updatedAt`)'
             WHERE name = 'events_status_updated';",
        ),
        (
            "foreign_key_check",
            "PRAGMA foreign_keys=OFF;
             INSERT INTO Uploads (eventId, filePath, createdAt, updatedAt) VALUES (999999, 'x', 'now', 'now');",
        ),
    ];
    for (check, sql) in cases {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec::new("sdc", "Flushed", 600);
        let src = base(dir.path(), &spec, sql);
        let before = std::fs::read(&src).unwrap();
        let mut conn = db::open_read_write(&src).unwrap();
        conn.execute_batch("PRAGMA cache_size=16").unwrap();
        let err = match rewrite::apply_pages(&mut conn, &src, ids(&spec), new_ids(), false) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("{check}: not refused: {r:?}"),
        };
        conn.close().unwrap();
        assert!(
            err.contains("after the rewrite") && err.contains(check),
            "{check}: {err}"
        );
        assert!(
            std::fs::read(&src).unwrap() == before,
            "{check}: the file's bytes changed"
        );
        assert!(!Path::new(&format!("{}-journal", src.display())).exists());
    }
}

/// A reader of a rollback-journal database while `remap` rewrites it in place (pages
/// spilled into the file during the pass, the rest flushed, the result checked from the
/// file before the commit) sees every old id or every new one, never part of the
/// rewrite, and when the checks refuse the result, never a new id: the rewrite holds the
/// file's lock from its first spill to its commit or rollback, the connections that
/// check the flushed file included. It meets no error, only busy waits.
#[test]
fn a_reader_of_a_rollback_journal_database_sees_all_or_nothing_of_an_in_place_rewrite() {
    let refused = "PRAGMA writable_schema=ON;
         UPDATE sqlite_schema SET sql = 'CREATE INDEX `events_status_updated` ON `Events` (`eventType`, `updatedAt`)'
         WHERE name = 'events_status_updated';";
    for (sql, commits) in [("", true), (refused, false)] {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec::new("hrb-cellario", "Reader", 2000);
        let src = base(dir.path(), &spec, sql);
        let total = plain_text(&src, "SELECT count(*) FROM Events");
        let to = new_ids();
        let (seen, done) = read_while(&src, &spec.datahub, &to.datahub, || {
            let mut conn = db::open_read_write(&src).unwrap();
            conn.execute_batch("PRAGMA cache_size=16").unwrap();
            let done = rewrite::apply_pages(&mut conn, &src, ids(&spec), to, false);
            conn.close().unwrap();
            done
        });
        let allowed: &[(i64, i64)] = if commits {
            done.unwrap().unwrap_or_else(|why| panic!("refused: {why}"));
            &[(total, 0), (0, total)]
        } else {
            let err = done.expect_err("the check refuses the result").to_string();
            assert!(err.contains("integrity_check"), "{err}");
            &[(total, 0)]
        };
        assert!(
            seen.iter().all(|c| allowed.contains(c)),
            "commits {commits}: {seen:?}"
        );
        let new = plain_text(
            &src,
            &format!(
                "SELECT count(*) FROM Events WHERE integration = '{}'",
                to.datahub
            ),
        );
        assert_eq!(new, if commits { total } else { 0 });
    }
}

/// Runs `f` while another process (the sqlite3 CLI, as a connector's reader would be)
/// counts, over and over, the Events rows with hub `old` and with hub `new` (each count
/// one read transaction): the pairs it saw, and what `f` returned.
fn read_while<T>(
    src: &Path,
    old: &DatahubId,
    new: &DatahubId,
    f: impl FnOnce() -> T,
) -> (std::collections::BTreeSet<(i64, i64)>, T) {
    use std::io::{BufRead, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let query = format!(
        "SELECT count(*) FILTER (WHERE integration = '{old}'), count(*) FILTER (WHERE integration = '{new}') FROM Events;\n"
    );
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            // Its errors on stdout too: an error line fails the parse below instead of
            // leaving the read waiting for an answer that never comes.
            let mut child = std::process::Command::new("sh")
                .args([
                    "-c",
                    "exec sqlite3 -batch -cmd '.timeout 60000' \"$0\" 2>&1",
                ])
                .arg(src)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("sqlite3 (Debian package sqlite3) runs");
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let t0 = std::time::Instant::now();
            let mut seen = std::collections::BTreeSet::new();
            // Bounded in count and time; ends as soon as `f` returned.
            for _ in 0..100_000 {
                stdin.write_all(query.as_bytes()).unwrap();
                let mut line = String::new();
                stdout.read_line(&mut line).unwrap();
                let (a, b) = line
                    .trim()
                    .split_once('|')
                    .unwrap_or_else(|| panic!("sqlite3 said {line:?}"));
                seen.insert((a.parse().unwrap(), b.parse().unwrap()));
                if done.load(Ordering::Acquire) || t0.elapsed().as_secs() > 120 {
                    break;
                }
            }
            drop(stdin);
            assert!(child.wait().unwrap().success());
            seen
        });
        let out = f();
        done.store(true, Ordering::Release);
        (reader.join().unwrap(), out)
    })
}

/// `cache_flush` puts every page a transaction changed into the file except those still
/// held, and a write transaction always holds page 1. A rewrite that changes page 1
/// (the freelist or the file's size: here the `ANALYZE` that computes the planner's
/// samples of the old id again) must be checked as it will be committed, not as the
/// file's old page 1 over the new pages (which reads as a damaged file, and used to fail
/// a good rewrite).
#[test]
fn in_place_with_a_rollback_journal_a_rewrite_that_changes_page_1_is_checked_as_committed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new("sdc", "Page one", 30);
    let src = base(
        dir.path(),
        &spec,
        "CREATE TABLE k(v TEXT, n INTEGER, w TEXT);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000)
         INSERT INTO k SELECT CASE WHEN i % 2 THEN '{D}' ELSE 'x' END, i,
             printf('%.200c', char(65 + i % 26)) FROM s;
         CREATE INDEX k_v ON k(v, w, n);
         CREATE INDEX k_nv ON k(n, v, w);
         CREATE INDEX k_wv ON k(w, v, n);
         CREATE INDEX k_vn ON k(v DESC, n, w);
         ANALYZE;",
    );
    let header = |p: &Path| std::fs::read(p).unwrap()[28..40].to_vec();
    let (plan, _) = in_place(&src, "DELETE", ids(&spec), new_ids(), false)
        .unwrap_or_else(|why| panic!("the page path refused: {why}"));
    assert!(
        plan.changes.iter().any(|c| c.table == "k"),
        "{:?}",
        plan.changes
    );
    let done = dir.path().join("in-place-DELETE.db");
    assert_ne!(
        header(&done),
        header(&src),
        "the premise: the size or the freelist, on page 1, changed"
    );
}

/// Per index: (samples, samples naming an old id of `spec` in any spelling).
fn stat4_by_index(path: &Path, spec: &Spec) -> std::collections::BTreeMap<String, (u32, u32)> {
    let conn = db::open_read_only(path).unwrap();
    let m = matcher(spec);
    let mut out = std::collections::BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT idx, sample FROM sqlite_stat4")
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    while let Some(r) = rows.next().unwrap() {
        let idx: String = r.get(0).unwrap();
        let b: Vec<u8> = match r.get_ref(1).unwrap() {
            rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => b.to_vec(),
            _ => vec![],
        };
        let e = out.entry(idx).or_insert((0, 0));
        e.0 += 1;
        if m.is_match(hubvault::sqlite::spelling::Kind::Blob, &b) {
            e.1 += 1;
        }
    }
    out
}

/// The planner's samples that name an old id are computed again on every path and in
/// every encoding (a UTF-16 sample spells the id in UTF-16), for indexes named like a
/// keyword or with a quote and a dot in the name: as many as before, none naming an old id.
#[test]
fn samples_are_computed_again_on_every_path_in_each_encoding_and_for_odd_index_names() {
    for enc in [None, Some("UTF-16le"), Some("UTF-16be")] {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::new("sdc", "Samples", 50);
        spec.encoding = enc;
        let src = base(
            dir.path(),
            &spec,
            "CREATE TABLE k(v TEXT, n INTEGER);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 500)
             INSERT INTO k SELECT CASE WHEN i % 3 THEN '{D}' ELSE 'x' || i END, i FROM s;
             CREATE INDEX \"select\" ON k(v, n);
             CREATE INDEX \"we\"\"ird.x\" ON k(n, v);
             ANALYZE;",
        );
        let before = stat4_by_index(&src, &spec);
        assert!(
            before.get("select").is_some_and(|b| b.1 > 0),
            "{enc:?}: the premise: samples name the old id: {before:?}"
        );
        let (_, _, pages) = both_paths(&src, ids(&spec), new_ids(), false);
        let dirp = src.parent().unwrap();
        for out in [
            dirp.join("sql.db"),
            pages,
            dirp.join("in-place-DELETE.db"),
            dirp.join("in-place-WAL.db"),
        ] {
            let after = stat4_by_index(&out, &spec);
            for (idx, (n, _)) in &before {
                assert_eq!(
                    after.get(idx).map(|a| a.0),
                    Some(*n),
                    "{enc:?} {idx} {}",
                    out.display()
                );
                assert_eq!(
                    after.get(idx).map(|a| a.1),
                    Some(0),
                    "{enc:?} {idx} {}",
                    out.display()
                );
            }
        }
    }
}

// --- Review of the id rewrite on the pages (2026-12-01): the page path against the SQL
// path on seeded random databases.

/// A seeded id in lowercase canonical form (v4 bits set); with `digits`, its
/// unhyphenated spelling is decimal digits only (it reads as a number).
fn seeded_id(rng: &mut rand::rngs::StdRng, digits: bool) -> String {
    let hex = b"0123456789abcdef";
    let mut s: Vec<u8> = (0..32)
        .map(|_| {
            if digits {
                b'0' + rng.random_range(0..10u8)
            } else {
                hex[rng.random_range(0..16usize)]
            }
        })
        .collect();
    s[12] = b'4';
    s[16] = if digits {
        b'8'
    } else {
        b"89ab"[rng.random_range(0..4usize)]
    };
    let s = String::from_utf8(s).unwrap();
    format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}

/// One spelling of `id`: hyphenated or not, lowercase or uppercase, or (when `mixed`)
/// mixed case.
fn spelling_of(rng: &mut rand::rngs::StdRng, id: &str, mixed: bool) -> String {
    let form = if rng.random_bool(0.5) {
        id.to_string()
    } else {
        id.replace('-', "")
    };
    match rng.random_range(0..if mixed { 5 } else { 4 }) {
        0 | 1 => form,
        2 | 3 => form.to_ascii_uppercase(),
        _ => {
            // Mixed: the first letter upper, the rest lower (all digits: lowercase).
            let mut done = false;
            form.chars()
                .map(|c| {
                    if !done && c.is_ascii_alphabetic() {
                        done = true;
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        }
    }
}

/// What a random database is made of: its ids and page layout.
struct Shape {
    ids: [String; 2],
    /// Ids already in the new form somewhere (a value naming the new hub, say).
    new: [String; 2],
    page: usize,
    reserved: u8,
    mixed: bool,
}

impl Shape {
    /// Text with ids at random places and near the page and overflow seams (the local
    /// part's end for a table leaf, X = U-35 or M, then every U-4 bytes).
    fn long_text(&self, rng: &mut rand::rngs::StdRng) -> String {
        let u = self.page - self.reserved as usize;
        let m = (u - 12) * 32 / 255 - 23;
        // Mostly under a page (at 64 KiB pages, long values make the test slow), a quarter
        // up to three pages, past every seam.
        let len = if rng.random_bool(0.25) {
            rng.random_range(0..3 * self.page)
        } else {
            rng.random_range(0..self.page.min(4096))
        };
        let mut seams: Vec<usize> = vec![u - 35, m];
        for k in 1..4 {
            seams.push(m + k * (u - 4));
        }
        let mut out = String::new();
        while out.len() < len {
            let target = if rng.random_bool(0.5) {
                seams[rng.random_range(0..seams.len())].saturating_sub(rng.random_range(0..40usize))
            } else {
                out.len() + rng.random_range(0..300usize)
            };
            while out.len() < target {
                out.push(char::from(b'a' + rng.random_range(0..26u8)));
            }
            let id = &self.ids[rng.random_range(0..2usize)];
            out.push_str(&spelling_of(rng, id, self.mixed));
        }
        out
    }

    /// One value for a column whose mode is `mode`: 0 anything, 1 one of few values.
    fn value(&self, rng: &mut rand::rngs::StdRng) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        let id = self.ids[rng.random_range(0..2usize)].clone();
        match rng.random_range(0..17) {
            0 => Value::Null,
            1 => Value::Integer(rng.random_range(-1000..1000)),
            2 => Value::Real(rng.random_range(0..1000) as f64 / 7.0),
            3 => Value::Text(["", "x", "abc", "5", " "][rng.random_range(0..5usize)].into()),
            4 | 5 => Value::Text(spelling_of(rng, &id, self.mixed)),
            6 => Value::Text(format!(
                "{{\"hub\":\"{}\",\"path\":\"/hubs/{}/c.json\"}}",
                spelling_of(rng, &id, self.mixed),
                spelling_of(rng, &id, false)
            )),
            7 | 8 => Value::Text(self.long_text(rng)),
            9 => Value::Blob(self.long_text(rng).into_bytes()),
            10 => Value::Blob(spelling_of(rng, &id, self.mixed).into_bytes()),
            11 => {
                // UTF-16 text of an id in a BLOB, either byte order.
                let s = spelling_of(rng, &id, false);
                let be = rng.random_bool(0.5);
                Value::Blob(
                    s.encode_utf16()
                        .flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() })
                        .collect(),
                )
            }
            12 if self.mixed => {
                Value::Blob(uuid::Uuid::parse_str(&id).unwrap().as_bytes().to_vec())
            }
            13 => {
                let n = rng.random_range(0..2usize);
                Value::Text(spelling_of(rng, &self.new[n], false))
            }
            14 => Value::Blob(Vec::new()),
            15 => {
                // SQLite's spaces around an id (a number, with a new id of digits).
                let sp = [" ", "\t", "\x0b", "\x0c", "\r\n"][rng.random_range(0..5usize)];
                Value::Text(format!("{sp}{}{sp}", spelling_of(rng, &id, false)))
            }
            _ => Value::Text(format!("x/{}", spelling_of(rng, &id, self.mixed))),
        }
    }
}

/// A seeded random database at `path` (see [`page_rewrite_equals_the_sql_rewrite_on_seeded_random_databases`]);
/// its old ids and the new ids.
fn random_database(path: &Path, seed: u64) -> (Ids, Ids) {
    use rusqlite::types::Value;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let digits = rng.random_bool(0.2);
    let ids = [seeded_id(&mut rng, false), seeded_id(&mut rng, false)];
    let new = [seeded_id(&mut rng, digits), seeded_id(&mut rng, false)];
    let page = [512, 1024, 4096, 8192, 65536][rng.random_range(0..5usize)];
    let reserved = [0u8, 0, 8, 32][rng.random_range(0..4usize)];
    let s = Shape {
        ids: ids.clone(),
        new: new.clone(),
        page,
        reserved,
        mixed: rng.random_bool(0.3),
    };
    let conn = Connection::open(path).unwrap();
    let enc = ["UTF-8", "UTF-16le", "UTF-16be"][rng.random_range(0..3usize)];
    conn.execute_batch(&format!(
        "PRAGMA page_size = {page}; PRAGMA encoding = '{enc}';"
    ))
    .unwrap();
    let mut r: std::ffi::c_int = reserved.into();
    // SAFETY: a live connection's handle, the documented file control and its int.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_RESERVE_BYTES,
            (&mut r as *mut std::ffi::c_int).cast(),
        )
    };
    assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
    let types = [
        "TEXT",
        "BLOB",
        "",
        "INTEGER",
        "UUID",
        "TEXT COLLATE NOCASE",
        "TEXT COLLATE RTRIM",
        "NUMERIC",
        "VARCHAR(36)",
    ];
    // A parent of text keys (ids among them), for the foreign keys below.
    let keys: Vec<Value> = (0..8)
        .map(|i| {
            Value::Text(format!(
                "k{i}/{}",
                spelling_of(&mut rng, &ids[i % 2], false)
            ))
        })
        .collect();
    conn.execute_batch("CREATE TABLE par(k TEXT PRIMARY KEY, v)")
        .unwrap();
    // What the checks read the new ids back from.
    conn.execute(
        "CREATE TABLE Integrations(id TEXT PRIMARY KEY, sources TEXT, type TEXT)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO Integrations VALUES (?1, ?2, 'sdc')",
        [&ids[0], &format!("[{{\"id\":\"{}\"}}]", ids[1])],
    )
    .unwrap();
    for k in &keys {
        conn.execute("INSERT INTO par VALUES (?1, 1)", [k]).unwrap();
    }
    let ntables = rng.random_range(2..5);
    for t in 0..ntables {
        let ipk = rng.random_bool(0.5);
        let ncols = rng.random_range(2..6);
        // Per column: its type, and 0 anything, 1 one value in every row (an id
        // spelling: the index patch's case), 2 few values, 3 a foreign key to par.
        let cols: Vec<(String, u8)> = (0..ncols)
            .map(|_| {
                (
                    types[rng.random_range(0..types.len())].to_string(),
                    rng.random_range(0..4u8),
                )
            })
            .collect();
        let mut decl: Vec<String> = Vec::new();
        if ipk {
            decl.push("id INTEGER PRIMARY KEY".into());
        }
        for (i, (ty, mode)) in cols.iter().enumerate() {
            decl.push(if *mode == 3 {
                format!("c{i} TEXT REFERENCES par(k)")
            } else {
                format!("c{i} {ty}")
            });
        }
        conn.execute_batch(&format!("CREATE TABLE t{t}({})", decl.join(", ")))
            .unwrap();
        let constant: Vec<Value> = cols
            .iter()
            .map(|_| Value::Text(spelling_of(&mut rng, &ids[0], false)))
            .collect();
        let few: Vec<Vec<Value>> = cols
            .iter()
            .map(|_| (0..3).map(|_| s.value(&mut rng)).collect())
            .collect();
        let rows = rng.random_range(5..40);
        let marks: Vec<String> = (1..=ncols).map(|i| format!("?{i}")).collect();
        let names: Vec<String> = (0..ncols).map(|i| format!("c{i}")).collect();
        let ins = format!(
            "INSERT INTO t{t}({}) VALUES ({})",
            names.join(", "),
            marks.join(", ")
        );
        for _ in 0..rows {
            let vals: Vec<Value> = cols
                .iter()
                .enumerate()
                .map(|(i, (_, mode))| match mode {
                    1 => constant[i].clone(),
                    2 => few[i][rng.random_range(0..3usize)].clone(),
                    3 => {
                        if rng.random_bool(0.2) {
                            Value::Null
                        } else {
                            keys[rng.random_range(0..keys.len())].clone()
                        }
                    }
                    _ => s.value(&mut rng),
                })
                .collect();
            conn.execute(&ins, rusqlite::params_from_iter(vals))
                .unwrap();
        }
        // Indexes: plain columns (DESC, collations, several columns, UNIQUE), partial and
        // expression ones.
        for x in 0..rng.random_range(0..5) {
            let n = rng.random_range(1..=ncols.min(3));
            let mut key: Vec<String> = (0..n)
                .map(|_| {
                    let c = format!("c{}", rng.random_range(0..ncols));
                    let coll = [
                        "",
                        "",
                        " COLLATE NOCASE",
                        " COLLATE RTRIM",
                        " COLLATE BINARY",
                    ][rng.random_range(0..5usize)];
                    let dir = ["", "", " DESC", " ASC"][rng.random_range(0..4usize)];
                    format!("{c}{coll}{dir}")
                })
                .collect();
            if rng.random_bool(0.15) {
                let c = rng.random_range(0..ncols);
                key.push(
                    [
                        format!("lower(c{c})"),
                        format!("substr(c{c}, 2, 40)"),
                        format!("length(c{c})"),
                    ][rng.random_range(0..3usize)]
                    .clone(),
                );
            }
            let unique = if rng.random_bool(0.3) { "UNIQUE " } else { "" };
            let partial = if rng.random_bool(0.15) {
                format!(" WHERE c{} IS NOT NULL", rng.random_range(0..ncols))
            } else {
                String::new()
            };
            // A UNIQUE index the rows already break is not created.
            let _ = conn.execute_batch(&format!(
                "CREATE {unique}INDEX t{t}_i{x} ON t{t}({}){partial}",
                key.join(", ")
            ));
        }
        if rng.random_bool(0.3) {
            // Rows shorter than the table: a column added later, its default an id in a
            // BLOB literal or none.
            let default = match rng.random_range(0..4) {
                0 => {
                    let id = spelling_of(&mut rng, &ids[0], false);
                    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
                    format!(" DEFAULT x'{hex}'")
                }
                1 => " DEFAULT x'00ff'".to_string(),
                _ => String::new(),
            };
            conn.execute_batch(&format!(
                "ALTER TABLE t{t} ADD COLUMN late TEXT{default}; UPDATE t{t} SET late = c0 WHERE rowid % 3 = 0;"
            ))
            .unwrap();
        }
        if rng.random_bool(0.3) {
            conn.execute_batch(&format!("DELETE FROM t{t} WHERE rowid % 4 = 1"))
                .unwrap();
        }
    }
    if rng.random_bool(0.5) {
        // A freelist: pages of a dropped table, ids in them.
        conn.execute_batch("CREATE TABLE junk(v)").unwrap();
        for _ in 0..20 {
            conn.execute("INSERT INTO junk VALUES (?1)", [s.long_text(&mut rng)])
                .unwrap();
        }
        conn.execute_batch("DROP TABLE junk").unwrap();
    }
    if rng.random_bool(0.3) {
        conn.execute_batch("ANALYZE").unwrap();
    }
    let got: (i64, String) = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .and_then(|p| conn.query_row("PRAGMA encoding", [], |r| Ok((p, r.get(0)?))))
        .unwrap();
    assert_eq!(got, (page as i64, enc.to_string()));
    drop(conn);
    assert_eq!(std::fs::read(path).unwrap()[20], reserved, "reserved bytes");
    let parse = |p: &[String; 2]| Ids {
        datahub: DatahubId::parse(&p[0]).unwrap(),
        connector: ConnectorId::parse(&p[1]).unwrap(),
    };
    (parse(&ids), parse(&new))
}

/// The plain-column indexes of `path` (no expression, no `WHERE`): each one's entries in
/// B-tree order ([`index_entries`]).
fn plain_index_entries(path: &Path) -> Vec<(String, Vec<String>)> {
    let conn = db::open_read_only(path).unwrap();
    let names: Vec<String> = conn
        .prepare(
            "SELECT s.name FROM sqlite_schema AS s WHERE s.type = 'index'
               AND s.tbl_name NOT LIKE 'sqlite%'
               AND NOT EXISTS (SELECT 1 FROM pragma_index_xinfo(s.name) WHERE cid = -2)
               AND NOT (SELECT partial FROM pragma_index_list(s.tbl_name) AS l WHERE l.name = s.name)
             ORDER BY s.name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    names
        .into_iter()
        .map(|n| {
            let e = index_entries(&conn, &n);
            (n, e)
        })
        .collect()
}

/// The outcome of one path: its plan, rows and plain indexes, or its error.
type PathResult = Result<(RewritePlan, Rows, Vec<(String, Vec<String>)>), String>;

fn path_result(path: &Path, plan: hubvault::error::Result<RewritePlan>) -> PathResult {
    let plan = plan.map_err(|e| e.to_string())?;
    integrity_and_foreign_keys(path);
    Ok((plan, content(path), plain_index_entries(path)))
}

/// `a` and `b` agree: both failed, or both gave the same counts, rows and indexes.
fn same_result(case: &str, a: &PathResult, b: &PathResult) {
    match (a, b) {
        (Err(_), Err(_)) => {}
        (Ok((pa, ra, ia)), Ok((pb, rb, ib))) => {
            assert_eq!(pa.changes, pb.changes, "{case}: counts");
            assert_eq!(pa.unrewritten, pb.unrewritten, "{case}: unrewritten");
            assert_eq!(pa.accepted_unrewritten, pb.accepted_unrewritten, "{case}");
            assert!(ra == rb, "{case}: the rows differ");
            for ((na, ea), (nb, eb)) in ia.iter().zip(ib) {
                assert_eq!(na, nb, "{case}");
                assert!(ea == eb, "{case}: index {na} differs");
            }
            assert_eq!(ia.len(), ib.len(), "{case}");
        }
        (a, b) => panic!(
            "{case}: one path failed, the other did not: {:?} / {:?}",
            a.as_ref().err(),
            b.as_ref().err()
        ),
    }
}

/// Differential: seeded random databases (seeds 20261201 on, or from `HUBVAULT_SEED`; 12
/// cases, or `HUBVAULT_CASES`):
/// several ROWID tables with and without an INTEGER PRIMARY KEY, columns of every
/// affinity and of NOCASE and RTRIM collation, indexes of plain columns (several
/// columns, DESC, collations, UNIQUE), partial and expression indexes, a foreign key;
/// values holding the ids in every spelling (hyphenated or not, lower, upper and mixed
/// case, inside JSON and paths, in BLOBs as text, UTF-16 text and raw bytes, near the
/// local part's end and the overflow seams), the new ids, numbers, NULLs, empty
/// values; page sizes 512 to 65536, 0, 8 or 32 reserved bytes, each text encoding,
/// freelists, rows shorter than their table (the column's default an id in a BLOB
/// literal, another BLOB or none), planner samples; new hub ids whose
/// unhyphenated spelling reads as a number. The page path (a private copy, and in place
/// in both journal modes) gives what the SQL path gives: the same refusal or the same
/// counts, rows and index entries, `integrity_check` ok; where it refuses, it wrote
/// nothing, and the SQL rewrite on that same file gives the SQL path's result.
#[test]
fn page_rewrite_equals_the_sql_rewrite_on_seeded_random_databases() {
    let seed: u64 = std::env::var("HUBVAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201);
    let (mut done, mut refused) = (0, 0);
    let cases: u64 = std::env::var("HUBVAULT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for case in 0..cases {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let (from, to) = random_database(&src, seed + case);
        let accept = case % 3 != 0;
        let case = format!("seed {}", seed + case);
        let original = std::fs::read(&src).unwrap();
        // The SQL path, the reference.
        let a = dir.path().join("sql.db");
        std::fs::copy(&src, &a).unwrap();
        let mut conn = db::open_scratch(&a).unwrap();
        let u = rewrite::apply_unchecked(&mut conn, &a, from, to, accept);
        conn.close().unwrap();
        let sql = path_result(&a, u.and_then(|u| u.check(&a)));
        // The page path on a private copy.
        let b = dir.path().join("pages.db");
        std::fs::copy(&src, &b).unwrap();
        let mut conn = db::open_scratch(&b).unwrap();
        let pages = match rewrite::apply_unchecked_pages(&mut conn, &b, from, to, accept) {
            Ok(PageOutcome::Done(u)) => {
                conn.close().unwrap();
                done += 1;
                path_result(&b, u.check(&b))
            }
            Ok(PageOutcome::Refused(why)) => {
                refused += 1;
                if std::env::var("HUBVAULT_TEST_VERBOSE").is_ok() {
                    eprintln!("{case}: refused: {why}");
                }
                assert_eq!(
                    std::fs::read(&b).unwrap()[100..],
                    original[100..],
                    "{case}: refused ({why}) but the file changed"
                );
                let u = rewrite::apply_unchecked(&mut conn, &b, from, to, accept);
                conn.close().unwrap();
                path_result(&b, u.and_then(|u| u.check(&b)))
            }
            Err(e) => Err(e.to_string()),
        };
        if std::env::var("HUBVAULT_TEST_VERBOSE").is_ok() {
            eprintln!(
                "{case}: sql {:?} pages {:?}",
                sql.as_ref().err(),
                pages.as_ref().err()
            );
        }
        same_result(&case, &sql, &pages);
        // In place, in both journal modes.
        for mode in ["DELETE", "WAL"] {
            let c = dir.path().join(format!("in-place-{mode}.db"));
            std::fs::copy(&src, &c).unwrap();
            let mut conn = db::open_read_write(&c).unwrap();
            let _: String = conn
                .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
                .unwrap();
            let before = content(&c);
            let r = rewrite::apply_pages(&mut conn, &c, from, to, accept);
            conn.close().unwrap();
            let got = match r {
                Ok(Ok(plan)) => path_result(&c, Ok(plan)),
                Ok(Err(why)) => {
                    assert_eq!(
                        content(&c),
                        before,
                        "{case}, {mode}: refused ({why}) but changed"
                    );
                    let mut conn = db::open_read_write(&c).unwrap();
                    let r = rewrite::apply(&mut conn, &c, from, to, accept);
                    conn.close().unwrap();
                    path_result(&c, r)
                }
                Err(e) => {
                    assert_eq!(
                        content(&c),
                        before,
                        "{case}, {mode}: failed ({e}) but changed"
                    );
                    Err(e.to_string())
                }
            };
            same_result(&format!("{case}, in place, {mode}"), &sql, &got);
        }
    }
    eprintln!("page path: {done} done, {refused} refused");
    assert!(
        2 * done >= cases,
        "{done} of {cases} cases taken by the page path"
    );
}

/// A varint of the file format at `b[at..]`: its value and length.
fn file_varint(b: &[u8], at: usize) -> (u64, usize) {
    let mut v = 0u64;
    for i in 0..9 {
        let x = b[at + i];
        if i == 8 {
            return ((v << 8) | x as u64, 9);
        }
        v = (v << 7) | (x & 0x7f) as u64;
        if x & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    unreachable!()
}

/// A hostile file the first pass cannot see through: the overflow page of a table the
/// rewrite walks is cross-linked with the last overflow page of a `WITHOUT ROWID` table
/// it does not walk (no id there as SQL reads it: only the tail of one, whose head ends
/// the rewritten value's local part). The first pass claims the pages of the trees it
/// walks only, so the second one writes the new id's tail into the other table's page.
/// What stops it is the structure check of the result, which always runs
/// (`integrity_check`, or `quick_check`, which sees the cross-link too): the restore's
/// check fails (nothing to install), and in place, in both journal modes, the rewrite
/// fails and every row is as it was.
#[test]
fn a_cross_link_with_a_tree_the_rewrite_does_not_walk_is_caught_by_the_check_of_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new("sdc", "Cross", 5);
    let probe = base(dir.path(), &spec, "");
    let u = Connection::open(&probe)
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize;
    std::fs::remove_file(&probe).unwrap();
    // `big`'s one row: a 4-byte record header, then a body whose local part (M + 100
    // bytes of payload) ends with the first 20 characters of the hub id; the rest fills
    // one overflow page exactly.
    let m = (u - 12) * 32 / 255 - 23;
    let local = m + 100;
    let n = local + (u - 4) - 4;
    let hub = spec.datahub.to_string();
    let mut body = "a".repeat(local - 4 - 20);
    body.push_str(&hub[..20]);
    body.push_str(&"b".repeat(n - body.len()));
    let src = base(
        dir.path(),
        &spec,
        &format!(
            "CREATE TABLE big(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO big VALUES (1, '{body}');
             CREATE TABLE w(k TEXT PRIMARY KEY, body TEXT) WITHOUT ROWID;
             INSERT INTO w VALUES ('k', '{}');",
            "c".repeat(3 * u)
        ),
    );
    let conn = Connection::open(&src).unwrap();
    let root = |name: &str| -> usize {
        conn.query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as usize
    };
    let (big_root, w_root) = (root("big"), root("w"));
    drop(conn);
    let mut b = std::fs::read(&src).unwrap();
    let page = |p: usize| (p - 1) * u;
    let u32_at = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    // `big`'s cell: payload size, rowid, the local part, then its overflow pointer.
    let at = page(big_root);
    assert_eq!(b[at], 0x0D);
    let c = at + u16::from_be_bytes([b[at + 8], b[at + 9]]) as usize;
    let (p, l1) = file_varint(&b, c);
    let (_, l2) = file_varint(&b, c + l1);
    assert_eq!(p as usize, 4 + n);
    let big_ptr = c + l1 + l2 + local;
    // `w`'s cell (an index leaf): payload size, the local part, its overflow chain.
    let at = page(w_root);
    assert_eq!(b[at], 0x0A);
    let c = at + u16::from_be_bytes([b[at + 8], b[at + 9]]) as usize;
    let (p, l1) = file_varint(&b, c);
    let (x, mm) = ((u - 12) * 64 / 255 - 23, m);
    let k = mm + (p as usize - mm) % (u - 4);
    let w_local = if k <= x { k } else { mm };
    let mut w_last = u32_at(&b, c + l1 + w_local) as usize;
    while u32_at(&b, page(w_last)) != 0 {
        w_last = u32_at(&b, page(w_last)) as usize;
    }
    // The cross-link, and the id's tail at the start of `w`'s last overflow page.
    b[big_ptr..big_ptr + 4].copy_from_slice(&(w_last as u32).to_be_bytes());
    let tail = page(w_last) + 4;
    b[tail..tail + 16].copy_from_slice(&hub.as_bytes()[20..]);
    std::fs::write(&src, &b).unwrap();
    let conn = db::open_read_only(&src).unwrap();
    let ws: String = conn
        .query_row("SELECT body FROM w", [], |r| r.get(0))
        .unwrap();
    assert!(ws.contains(&hub[20..]) && !ws.contains(&hub));
    let bs: String = conn
        .query_row("SELECT body FROM big", [], |r| r.get(0))
        .unwrap();
    assert!(bs.contains(&hub), "the id straddles the cross-linked page");
    // `quick_check` (the check past 512 MiB) sees the cross-link too.
    let quick: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .unwrap();
    assert!(quick.contains("2nd reference to page"), "{quick}");
    drop(conn);
    // The restore's rewrite of a private copy (the page path first): its check fails.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&src, &copy).unwrap();
    let mut conn = db::open_scratch(&copy).unwrap();
    let to = new_ids();
    let u = rewrite::apply_unchecked_switched(&mut conn, &copy, ids(&spec), to, false).unwrap();
    conn.close().unwrap();
    // The page path took it: the new id's tail is in `w`'s page.
    let after = std::fs::read(&copy).unwrap();
    let t = to.datahub.to_string();
    assert_eq!(&after[tail..tail + 16], &t.as_bytes()[20..]);
    let e = u.check(&copy).unwrap_err().to_string();
    assert!(e.contains("2nd reference to page"), "{e}");
    // In place: the rewrite fails and nothing changed.
    for mode in ["DELETE", "WAL"] {
        let c = dir.path().join(format!("in-place-{mode}.db"));
        std::fs::copy(&src, &c).unwrap();
        let mut conn = db::open_read_write(&c).unwrap();
        let _: String = conn
            .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
            .unwrap();
        let before = content(&c);
        let r = rewrite::apply_switched(&mut conn, &c, ids(&spec), to, false);
        conn.close().unwrap();
        let e = r.unwrap_err().to_string();
        assert!(e.contains("2nd reference to page"), "{mode}: {e}");
        assert_eq!(content(&c), before, "{mode}");
    }
}
