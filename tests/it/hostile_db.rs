//! A downloaded database as the restore planner meets it, generated from bytes, and the
//! property the id rewrite keeps on it. Shared word for word by the proptest in
//! `props.rs` (CI) and the cargo-fuzz target `fuzz/fuzz_targets/restore_input.rs`, which
//! include this file by path.
//!
//! The database: a connector database in UTF-8, UTF-16le or UTF-16be, plus one to three
//! tables of arbitrary shape (odd names, declared types, `WITHOUT ROWID`) whose values
//! are NULLs, numbers, TEXT and BLOBs stored byte for byte (through `CAST(? AS TEXT)`:
//! unpaired surrogates, invalid UTF-8, NULs), built from fragments that include the old
//! ids in every spelling (hyphens or not; lower, upper or mixed case; UTF-8 or UTF-16;
//! raw bytes in a BLOB), the new ids, and noise; maybe a view and a trigger naming an old
//! id; maybe a full-text index of each kind.
//!
//! The property: `rewrite::apply` never panics, and never rewrites partially and quietly:
//! - refused: the database is as it was;
//! - done: every stored value is what a naive byte replace of the rewritable spellings
//!   gives (every other byte as it was), old ids that cannot be rewritten are refused
//!   unless accepted and then listed, `scan` finds no old id when none was left, the
//!   integrity checks pass, and running it again changes nothing.

use std::path::{Path, PathBuf};

use hubvault::model::ids::{ConnectorId, DatahubId, Ids};
use hubvault::sqlite::{db, rewrite};

use crate::fixture::{self, Spec};

/// Reads the generating bytes; past their end every read is 0.
struct Gen<'a> {
    b: &'a [u8],
    i: usize,
}

impl Gen<'_> {
    fn byte(&mut self) -> u8 {
        let v = self.b.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        v
    }
    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Enc {
    Utf8,
    Le,
    Be,
}

/// One piece of a generated value.
#[derive(Clone, Debug)]
enum Frag {
    Plain(&'static str),
    Nul,
    /// An unpaired UTF-16 surrogate (UTF-16 text) or an invalid UTF-8 byte (UTF-8 text).
    Broken,
    /// An old id (0 = datahub, 1 = connector): hyphens?, case (0 lower, 1 upper, 2 mixed).
    Old {
        which: usize,
        hyphens: bool,
        case: u8,
    },
    New,
    /// In a BLOB only: the raw 16 bytes of an old id (RFC order or GUID order).
    Raw {
        which: usize,
        le: bool,
    },
    /// In a BLOB only: an old id as UTF-16 text.
    Old16 {
        which: usize,
        be: bool,
    },
}

const PLAIN: [&str; 6] = ["", "x", " /var/datahub/", "é€😀", "{\"id\":\"", "-"];

pub struct Case {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub from: Ids,
    pub to: Ids,
    /// True if and only if the database holds an old id the rewrite cannot rewrite.
    pub unrewritable: bool,
    /// Full-text indexes created (name, true if their integrity check also covers the
    /// content table).
    fts: Vec<(String, bool)>,
}

fn spell(id: uuid::Uuid, hyphens: bool, case: u8) -> String {
    let s = if hyphens {
        id.hyphenated().to_string()
    } else {
        id.simple().to_string()
    };
    match case {
        0 => s,
        1 => s.to_uppercase(),
        _ => match s.find(|c: char| c.is_ascii_lowercase()) {
            // Mixed: one letter upper, the rest lower. (An id without a letter cannot be
            // spelled in mixed case: lowercase it is.)
            Some(at) => format!("{}{}{}", &s[..at], s[at..=at].to_uppercase(), &s[at + 1..]),
            None => s,
        },
    }
}

fn is_mixed(id: uuid::Uuid, case: u8) -> bool {
    case == 2
        && id
            .simple()
            .to_string()
            .contains(|c: char| c.is_ascii_lowercase())
}

/// The stored bytes of a text made of `frags` in encoding `enc`.
fn text_bytes(frags: &[Frag], enc: Enc, old: [uuid::Uuid; 2], new: uuid::Uuid) -> Vec<u8> {
    let mut units: Vec<u16> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    for f in frags {
        let s = match f {
            Frag::Plain(p) => p.to_string(),
            Frag::Nul => "\0".into(),
            Frag::Broken => {
                units.push(0xD800);
                bytes.push(0xFF);
                continue;
            }
            Frag::Old {
                which,
                hyphens,
                case,
            } => spell(old[*which], *hyphens, *case),
            Frag::New => new.to_string(),
            Frag::Raw { .. } | Frag::Old16 { .. } => continue,
        };
        units.extend(s.encode_utf16());
        bytes.extend(s.as_bytes());
    }
    match enc {
        Enc::Utf8 => bytes,
        Enc::Le => units.iter().flat_map(|u| u.to_le_bytes()).collect(),
        Enc::Be => units.iter().flat_map(|u| u.to_be_bytes()).collect(),
    }
}

fn blob_bytes(g: &mut Gen, frags: &[Frag], old: [uuid::Uuid; 2], new: uuid::Uuid) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frags {
        match f {
            Frag::Raw { which, le } => {
                if *le {
                    out.extend(old[*which].to_bytes_le());
                } else {
                    out.extend(old[*which].as_bytes());
                }
            }
            Frag::Old16 { which, be } => {
                let s = old[*which].to_string();
                out.extend(s.encode_utf16().flat_map(|u| {
                    if *be {
                        u.to_be_bytes()
                    } else {
                        u.to_le_bytes()
                    }
                }));
            }
            Frag::Broken => {
                let n = g.below(6);
                for _ in 0..n {
                    out.push(g.byte());
                }
            }
            other => out.extend(text_bytes(std::slice::from_ref(other), Enc::Utf8, old, new)),
        }
    }
    out
}

fn frag(g: &mut Gen, blob: bool) -> Frag {
    match g.below(if blob { 10 } else { 8 }) {
        0 | 1 => Frag::Plain(PLAIN[g.below(PLAIN.len())]),
        2 => Frag::Nul,
        3 => Frag::Broken,
        4..=6 => Frag::Old {
            which: g.below(2),
            hyphens: g.byte() & 1 == 0,
            case: (g.byte() % 3),
        },
        7 => Frag::New,
        8 => Frag::Raw {
            which: g.below(2),
            le: g.byte() & 1 == 1,
        },
        _ => Frag::Old16 {
            which: g.below(2),
            be: g.byte() & 1 == 1,
        },
    }
}

/// True if and only if `frags` hold an old id the rewrite leaves (in a value of this kind).
fn leaves_something(frags: &[Frag], old: [uuid::Uuid; 2], blob: bool) -> bool {
    frags.iter().any(|f| match f {
        Frag::Old { which, case, .. } => is_mixed(old[*which], *case),
        Frag::Raw { .. } => blob,
        _ => false,
    })
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Builds the database the bytes describe.
pub fn build(bytes: &[u8]) -> Case {
    let mut g = Gen { b: bytes, i: 0 };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let (enc, pragma) = [
        (Enc::Utf8, None),
        (Enc::Le, Some("UTF-16le")),
        (Enc::Be, Some("UTF-16be")),
    ][g.below(3)];
    let mut spec = Spec::new("sdc", "generated", 2);
    spec.encoding = pragma;
    spec.wal = g.byte() & 1 == 0;
    fixture::create(&path, &spec).unwrap();
    let from = Ids {
        datahub: spec.datahub,
        connector: spec.connector,
    };
    let to = Ids {
        datahub: DatahubId::random(),
        connector: ConnectorId::random(),
    };
    let old = [spec.datahub.as_uuid(), spec.connector.as_uuid()];
    let new = to.connector.as_uuid();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut unrewritable = false;
    let names = [
        "Extra",
        "odd \"name\"",
        "with space",
        "Ünïcode",
        "x_content",
    ];
    for t in 0..1 + g.below(3) {
        let name = format!("{}{t}", names[g.below(names.len())]);
        let without_rowid = g.below(4) == 0;
        let ncols = 1 + g.below(3);
        let types = ["", "TEXT", "BLOB", "INTEGER", "NUMERIC", "REAL"];
        let cols: Vec<String> = (0..ncols)
            .map(|i| format!("c{i} {}", types[g.below(types.len())]))
            .collect();
        let (key, tail) = if without_rowid {
            ("k INTEGER PRIMARY KEY, ", " WITHOUT ROWID")
        } else {
            ("k INTEGER PRIMARY KEY, ", "")
        };
        conn.execute_batch(&format!(
            "CREATE TABLE {} ({key}{}){tail}",
            quote(&name),
            cols.join(", ")
        ))
        .unwrap();
        for k in 0..g.below(6) {
            let mut placeholders = Vec::new();
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            for i in 0..ncols {
                let p = format!("?{}", i + 1);
                let v = match g.below(8) {
                    0 => rusqlite::types::Value::Null,
                    1 => rusqlite::types::Value::Integer(g.byte() as i64 * 1_000_003),
                    2 => rusqlite::types::Value::Real(g.byte() as f64 / 7.0),
                    3..=5 => {
                        let frags: Vec<Frag> =
                            (0..g.below(5)).map(|_| frag(&mut g, false)).collect();
                        unrewritable |= leaves_something(&frags, old, false);
                        placeholders.push(format!("CAST({p} AS TEXT)"));
                        values.push(rusqlite::types::Value::Blob(text_bytes(
                            &frags, enc, old, new,
                        )));
                        continue;
                    }
                    _ => {
                        let frags: Vec<Frag> =
                            (0..g.below(5)).map(|_| frag(&mut g, true)).collect();
                        unrewritable |= leaves_something(&frags, old, true);
                        rusqlite::types::Value::Blob(blob_bytes(&mut g, &frags, old, new))
                    }
                };
                placeholders.push(p);
                values.push(v);
            }
            conn.execute(
                &format!(
                    "INSERT INTO {} (k, {}) VALUES ({k}, {})",
                    quote(&name),
                    (0..ncols)
                        .map(|i| format!("c{i}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    placeholders.join(", ")
                ),
                rusqlite::params_from_iter(values),
            )
            .unwrap();
        }
    }
    let hub = spell(old[0], true, g.below(2) as u8);
    match g.below(4) {
        1 => conn
            .execute_batch(&format!("CREATE VIEW mine AS SELECT * FROM Events WHERE integration = '{hub}'"))
            .unwrap(),
        2 => conn
            .execute_batch(&format!(
                "CREATE TABLE Audit (n TEXT); CREATE TRIGGER audit AFTER INSERT ON Events BEGIN INSERT INTO Audit VALUES ('{hub}'); END;"
            ))
            .unwrap(),
        _ => {}
    }
    let mut fts = Vec::new();
    // Full-text text: no NULs or broken characters (tokenizers have their own rules).
    let fts_text = |g: &mut Gen| -> (String, Vec<Frag>) {
        let frags: Vec<Frag> = (0..1 + g.below(4))
            .map(|_| match frag(g, false) {
                Frag::Nul | Frag::Broken => Frag::Plain(" "),
                f => f,
            })
            .collect();
        let s = String::from_utf8(text_bytes(&frags, Enc::Utf8, old, new)).unwrap();
        (s, frags)
    };
    match g.below(5) {
        2 => {
            conn.execute_batch("CREATE VIRTUAL TABLE own USING fts5(body)")
                .unwrap();
            for _ in 0..1 + g.below(3) {
                let (s, frags) = fts_text(&mut g);
                unrewritable |= leaves_something(&frags, old, false);
                conn.execute("INSERT INTO own(body) VALUES (?1)", [s])
                    .unwrap();
            }
            fts.push(("own".to_string(), false));
        }
        3 => {
            conn.execute_batch(
                "CREATE VIRTUAL TABLE ev USING fts5(integration, source, content='Events', content_rowid='id');
                 INSERT INTO ev(ev) VALUES('rebuild');",
            )
            .unwrap();
            fts.push(("ev".to_string(), true));
        }
        4 => {
            conn.execute_batch("CREATE VIRTUAL TABLE blind USING fts5(body, content='')")
                .unwrap();
            for _ in 0..1 + g.below(3) {
                let (s, frags) = fts_text(&mut g);
                // Any old id in the index is left (the index cannot be rewritten).
                unrewritable |= frags.iter().any(|f| matches!(f, Frag::Old { .. }));
                conn.execute("INSERT INTO blind(body) VALUES (?1)", [s])
                    .unwrap();
            }
        }
        _ => {}
    }
    drop(conn);
    Case {
        _dir: dir,
        path,
        from,
        to,
        unrewritable,
        fts,
    }
}

/// Every value of every ordinary table, as (type, stored bytes or quoted number), and
/// the schema's SQL.
type Snapshot = Vec<(String, Vec<Vec<(String, Vec<u8>)>>)>;

fn snapshot(path: &Path) -> Snapshot {
    let conn = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .unwrap()
            .query_map([&t], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let sel: Vec<String> = cols
            .iter()
            .map(|c| {
                let c = quote(c);
                format!("typeof({c}), CASE WHEN typeof({c}) IN ('text', 'blob') THEN CAST({c} AS BLOB) ELSE CAST(quote({c}) AS BLOB) END")
            })
            .collect();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM {} ORDER BY 2, 1",
                sel.join(", "),
                quote(&t)
            ))
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                (0..cols.len())
                    .map(|i| {
                        Ok((
                            r.get(2 * i)?,
                            r.get::<_, Option<Vec<u8>>>(2 * i + 1)?.unwrap_or_default(),
                        ))
                    })
                    .collect()
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        out.push((t, rows));
    }
    let schema: Vec<(String, Vec<u8>)> = conn
        .prepare(
            "SELECT name, CAST(sql AS BLOB) FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    out.push(("sqlite_schema".into(), vec![schema]));
    out
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// A naive model of the rewrite of one stored value: each lowercase and uppercase
/// spelling replaced, in the encodings that apply to it.
fn model(enc: Enc, ty: &str, bytes: &[u8], pairs: &[(uuid::Uuid, uuid::Uuid)]) -> Vec<u8> {
    let encs: &[Enc] = match (ty, enc) {
        ("blob", _) => &[Enc::Utf8, Enc::Le, Enc::Be],
        ("text", e) => match e {
            Enc::Utf8 => &[Enc::Utf8],
            Enc::Le => &[Enc::Le],
            Enc::Be => &[Enc::Be],
        },
        _ => return bytes.to_vec(),
    };
    let mut v = bytes.to_vec();
    for (o, n) in pairs {
        for hyphens in [true, false] {
            for case in [0u8, 1] {
                let (a, b) = (spell(*o, hyphens, case), spell(*n, hyphens, case));
                for e in encs {
                    let code = |s: &str| -> Vec<u8> {
                        match e {
                            Enc::Utf8 => s.as_bytes().to_vec(),
                            Enc::Le => s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
                            Enc::Be => s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect(),
                        }
                    };
                    v = replace_all(&v, &code(&a), &code(&b));
                }
            }
        }
    }
    v
}

fn encoding_of(path: &Path) -> Enc {
    let conn = rusqlite::Connection::open(path).unwrap();
    let e: String = conn.query_row("PRAGMA encoding", [], |r| r.get(0)).unwrap();
    match e.as_str() {
        "UTF-16le" => Enc::Le,
        "UTF-16be" => Enc::Be,
        _ => Enc::Utf8,
    }
}

/// Checks the property on `case` (panics with what went wrong).
pub fn check(case: &Case) {
    let enc = encoding_of(&case.path);
    let before = snapshot(&case.path);
    let mut conn = db::open_read_write(&case.path).unwrap();
    match rewrite::apply(&mut conn, &case.path, case.from, case.to, false) {
        Err(e) => {
            assert_eq!(
                snapshot(&case.path),
                before,
                "refused ({e}) but the database changed"
            );
            if !case.unrewritable {
                // A refusal must have a reason the model knows of.
                panic!("refused a database that holds nothing the rewrite cannot do: {e}");
            }
            match rewrite::apply(&mut conn, &case.path, case.from, case.to, true) {
                Ok(plan) => done(case, &mut conn, enc, &before, &plan),
                Err(e) => panic!("refused even with --accept-unrewritten: {e}"),
            }
        }
        Ok(plan) => {
            assert!(
                !case.unrewritable,
                "left old ids in place without refusing: {:?}",
                plan.unrewritten
            );
            done(case, &mut conn, enc, &before, &plan);
        }
    }
}

fn done(
    case: &Case,
    conn: &mut rusqlite::Connection,
    enc: Enc,
    before: &Snapshot,
    plan: &rewrite::RewritePlan,
) {
    let pairs = [
        (case.from.datahub.as_uuid(), case.to.datahub.as_uuid()),
        (case.from.connector.as_uuid(), case.to.connector.as_uuid()),
    ];
    let after = snapshot(&case.path);
    assert_eq!(before.len(), after.len());
    for ((t, rows_b), (t2, rows_a)) in before.iter().zip(&after) {
        assert_eq!(t, t2);
        if t == "sqlite_schema" {
            // Views and triggers name the new ids; checked by `scan` below.
            continue;
        }
        // Rows are ordered by their first column, which the rewrite may change: compare
        // as sorted sets of modelled rows.
        let mut want: Vec<Vec<(String, Vec<u8>)>> = rows_b
            .iter()
            .map(|r| {
                r.iter()
                    .map(|(ty, b)| (ty.clone(), model(enc, ty, b, &pairs)))
                    .collect()
            })
            .collect();
        let mut got = rows_a.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "table {t}: not exactly the old ids replaced");
    }
    assert_eq!(
        plan.unrewritten.is_empty(),
        !case.unrewritable,
        "unrewritten: {:?}",
        plan.unrewritten
    );
    assert_eq!(plan.accepted_unrewritten, case.unrewritable);
    let ids: Vec<String> = pairs.iter().map(|(o, _)| o.to_string()).collect();
    let left = rewrite::scan(conn, &case.path, &ids).unwrap();
    if !case.unrewritable {
        assert!(left.is_empty(), "old ids left: {left:?}");
    }
    db::check_integrity(conn, &case.path, 0).unwrap();
    for (name, against_content) in &case.fts {
        let sql = if *against_content {
            format!("INSERT INTO {name}({name}, rank) VALUES('integrity-check', 1)")
        } else {
            format!("INSERT INTO {name}({name}) VALUES('integrity-check')")
        };
        conn.execute(&sql, [])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let again = rewrite::apply(conn, &case.path, case.from, case.to, true).unwrap();
    assert_eq!(
        again.total_values(),
        0,
        "a second run changed {:?}",
        again.changes
    );
}
