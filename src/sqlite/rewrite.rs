//! Rewriting a connector's datahub id and connector id everywhere inside its database:
//! steps 5 to 10 of the platform's manual restore, done so that they cannot leave a broken database.
//!
//! Contract of [`apply`]:
//! - every text spelling of the old ids ([`crate::sqlite::spelling`]: with or without
//!   hyphens, lowercase or uppercase, UTF-8 or UTF-16) in every TEXT or BLOB value of
//!   every table becomes the new id in the same spelling: `Integrations.id`, the source
//!   objects in `Integrations.sources` and `Events.source`, `Events.integration`, and
//!   whatever else holds them (JSON values and keys, paths, tables we have never seen);
//! - it is a byte-exact replace, done by a Rust SQL function on the stored bytes (in a
//!   UTF-16 database too): every other byte stays as it was, other JSON fields, their
//!   order and spacing, row ids, other rows, other tables, value types;
//! - one `UPDATE` per table finds, rewrites and counts in a single pass; all of it in
//!   one transaction, with foreign-key enforcement off only around it (`PRAGMA
//!   foreign_keys` cannot change inside a transaction) and triggers disabled (an
//!   `UPDATE` trigger touching `updatedAt` would change what must stay);
//! - what it cannot rewrite is never skipped silently: a mixed-case spelling, the raw 16
//!   bytes of an id in a BLOB, an old id in a contentless full-text index are listed in
//!   [`RewritePlan::unrewritten`] with table, column and rows, and the rewrite is rolled
//!   back unless the caller accepts them (`--accept-unrewritten`);
//! - before the commit, what the `UPDATE`s wrote is read again and holds no rewritable
//!   old id, rebuilt full-text indexes pass their integrity check, `PRAGMA
//!   foreign_key_check` is empty and `integrity_check` (`quick_check` past
//!   [`db::FULL_CHECK_MAX_BYTES`]) says ok; otherwise the transaction is rolled back and
//!   nothing changed;
//! - it is idempotent: with old ids equal to new ids there is nothing to do.
//!
//! Schema: views hold no data and are not updated; a view or trigger whose SQL names an
//! old id is dropped and created again with the id rewritten in its text. That text comes
//! from the database, which may be hostile: it must be exactly one `CREATE VIEW`/`CREATE
//! TRIGGER` statement for the object's own name ([`sqltext::check_create`], and SQLite
//! refuses a second statement when it prepares it), and afterwards `sqlite_schema` must
//! be what it was with only those objects' SQL rewritten. A table or index whose SQL
//! names an old id (a `DEFAULT`, a `CHECK`, a partial index) is refused: rewriting it
//! would need `writable_schema`. Generated columns follow their base columns. Virtual
//! tables: see [`crate::sqlite::vtab`].

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::Connection;
use rusqlite::config::DbConfig;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::ids::Ids;
use crate::sqlite::db::{self, quote_ident};
use crate::sqlite::fsio;
use crate::sqlite::idfn::{ColTally, Encoding, IdFunctions};
use crate::sqlite::pagerewrite;
use crate::sqlite::spelling::{Kind, Matcher};
use crate::sqlite::sqltext::{self, Creates};
use crate::sqlite::stats;
use crate::sqlite::vtab::{self, Treatment};

/// How many values of one column change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnChange {
    pub table: String,
    pub column: String,
    pub values: u64,
}

/// Why an old id is left as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A text spelling in mixed case (`6F1c…`).
    MixedCase,
    /// The raw 16 bytes of an id inside a BLOB.
    RawBytes,
    /// A full-text index without content holds it (it cannot be read back or rewritten).
    ContentlessIndex,
}

impl Reason {
    fn says(self) -> &'static str {
        match self {
            Reason::MixedCase => "an old id in mixed case",
            Reason::RawBytes => "the raw 16 bytes of an old id",
            Reason::ContentlessIndex => "an old id in a contentless full-text index",
        }
    }
}

/// A row, by rowid, or by its primary key (SQL literals) in a `WITHOUT ROWID` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Row {
    Rowid(i64),
    Key(String),
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Row::Rowid(r) => write!(f, "{r}"),
            Row::Key(k) => write!(f, "({k})"),
        }
    }
}

/// Old ids a rewrite leaves as they are, in one column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unrewritten {
    pub table: String,
    /// The column; for a contentless full-text index, `*`.
    pub column: String,
    pub reason: Reason,
    /// Values (rows) concerned.
    pub values: u64,
    /// The first [`ROWS_SHOWN`] of those rows.
    pub rows: Vec<Row>,
}

impl std::fmt::Display for Unrewritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: Vec<String> = self.rows.iter().map(Row::to_string).collect();
        let more = if self.values > self.rows.len() as u64 {
            format!(", … ({} rows)", self.values)
        } else {
            String::new()
        };
        write!(
            f,
            "{}.{}: {} (row {}{more})",
            self.table,
            self.column,
            self.reason.says(),
            rows.join(", ")
        )
    }
}

/// How many rows of one column an [`Unrewritten`] names.
pub const ROWS_SHOWN: usize = 20;

/// What a rewrite changes (from [`plan`]) or changed (from [`apply`]).
#[derive(Clone, Debug, Serialize)]
pub struct RewritePlan {
    pub from: Ids,
    pub to: Ids,
    /// The database's text encoding.
    pub encoding: Encoding,
    /// Columns with at least one value to rewrite, in schema order.
    pub changes: Vec<ColumnChange>,
    /// Views and triggers whose SQL names an old id: created again with it rewritten.
    pub schema_objects: Vec<String>,
    /// Full-text indexes rebuilt from their (rewritten) content.
    pub fts_rebuilt: Vec<String>,
    /// Tables that are not updated directly, and why.
    pub scanned_only: Vec<String>,
    /// Old ids left as they are (see [`Reason`]). [`apply`] refuses unless they are
    /// accepted; then the database holds them.
    pub unrewritten: Vec<Unrewritten>,
    /// True if and only if [`apply`] committed with `unrewritten` non-empty.
    pub accepted_unrewritten: bool,
    /// Old ids in the SQL of a table or index, or a view or trigger that cannot be
    /// created again safely. Non-empty means [`apply`] refuses, always.
    pub blockers: Vec<String>,
}

impl RewritePlan {
    fn new(from: Ids, to: Ids, encoding: Encoding) -> RewritePlan {
        RewritePlan {
            from,
            to,
            encoding,
            changes: Vec::new(),
            schema_objects: Vec::new(),
            fts_rebuilt: Vec::new(),
            scanned_only: Vec::new(),
            unrewritten: Vec::new(),
            accepted_unrewritten: false,
            blockers: Vec::new(),
        }
    }

    /// Total values that change.
    pub fn total_values(&self) -> u64 {
        self.changes.iter().map(|c| c.values).sum()
    }

    /// True if and only if the rewrite changes nothing.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty() && self.schema_objects.is_empty() && self.fts_rebuilt.is_empty()
    }

    /// True if and only if no old id is left behind (for a plan: would be left).
    pub fn no_old_id_left(&self) -> bool {
        self.unrewritten.is_empty() && self.blockers.is_empty()
    }

    fn unrewritten_list(&self) -> String {
        self.unrewritten
            .iter()
            .map(Unrewritten::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// An old id found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Found {
    /// `table.column`, `schema:<type> <name>` for SQL in `sqlite_schema`, or `table.*`
    /// for a full-text index.
    pub place: String,
    pub values: u64,
}

/// Refuses id pairs that would make the rewrite ambiguous: a new id equal to another old
/// id, or two equal new ids (the two could never be told apart again).
pub fn check_ids(from: Ids, to: Ids) -> Result<()> {
    let (fd, fc, td, tc) = (
        from.datahub.as_uuid(),
        from.connector.as_uuid(),
        to.datahub.as_uuid(),
        to.connector.as_uuid(),
    );
    if td == tc {
        return Err(Error::usage(
            format!(
                "--to-datahub and --to-connector are the same id {}",
                to.datahub
            ),
            "a datahub and a connector have different ids: copy both from the platform",
        ));
    }
    if fd == fc {
        return Err(Error::usage(
            format!("the database's datahub id and connector id are the same ({fd})"),
            "this is not a connector database the platform wrote; check --db",
        ));
    }
    if (td == fc && fc != tc) || (tc == fd && fd != td) {
        return Err(Error::usage(
            "a new id equals the other old id (datahub and connector ids swapped?)",
            "pass the new hub's id as --to-datahub and the new connector's id as --to-connector",
        ));
    }
    Ok(())
}

/// The old ids that change, and their new ids.
fn changing(from: Ids, to: Ids) -> (Vec<uuid::Uuid>, Vec<uuid::Uuid>) {
    let mut old = Vec::new();
    let mut new = Vec::new();
    for (a, b) in [
        (from.datahub.as_uuid(), to.datahub.as_uuid()),
        (from.connector.as_uuid(), to.connector.as_uuid()),
    ] {
        if a != b {
            old.push(a);
            new.push(b);
        }
    }
    (old, new)
}

#[derive(Debug, Clone)]
struct Table {
    name: String,
    kind: TableKind,
    without_rowid: bool,
    /// Columns that can be written (not generated, not hidden).
    writable: Vec<String>,
    /// Per writable column: its declared type gives it INTEGER, REAL or NUMERIC affinity
    /// (text that reads as a number is stored as one).
    numeric: Vec<bool>,
    /// Every column, generated and hidden ones included.
    all: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TableKind {
    Ordinary,
    Virtual(Treatment),
    /// A shadow table of the virtual table named here (`None`: owner unknown).
    Shadow(Option<String>),
}

impl Table {
    /// True if and only if the rewrite writes this table's columns.
    fn is_written(&self) -> bool {
        match &self.kind {
            TableKind::Ordinary => true,
            TableKind::Virtual(t) => t.is_written(),
            TableKind::Shadow(_) => false,
        }
    }
}

fn tables(conn: &Connection, path: &Path) -> Result<Vec<Table>> {
    let q = |e| Error::sqlite(path, "cannot read the schema", e);
    let listed: Vec<(String, String, bool, Option<String>)> = conn
        .prepare(
            "SELECT t.name, t.type, t.wr, s.sql FROM pragma_table_list AS t
             LEFT JOIN sqlite_schema AS s ON s.name = t.name AND s.type = 'table'
             WHERE t.schema = 'main' AND t.type IN ('table', 'virtual', 'shadow')
               AND t.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
             ORDER BY s.rowid",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(q)?;
    let virtuals: Vec<String> = listed
        .iter()
        .filter(|(_, k, _, _)| k == "virtual")
        .map(|(n, _, _, _)| n.clone())
        .collect();
    let mut out = Vec::new();
    for (name, kind, without_rowid, sql) in listed {
        let kind = match kind.as_str() {
            "virtual" => TableKind::Virtual(Treatment::of(sql.as_deref().unwrap_or(""))),
            "shadow" => TableKind::Shadow(
                name.rsplit_once('_')
                    .and_then(|(owner, _)| virtuals.iter().find(|v| v.eq_ignore_ascii_case(owner)))
                    .cloned(),
            ),
            _ => TableKind::Ordinary,
        };
        let cols: Vec<(String, i64, String, i64)> = conn
            .prepare("SELECT name, hidden, type, pk FROM pragma_table_xinfo(?1) ORDER BY cid")
            .and_then(|mut s| {
                s.query_map([&name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
            })
            .map_err(|e| scan_error(path, &name, e))?;
        out.push(Table {
            writable: cols
                .iter()
                .filter(|c| c.1 == 0)
                .map(|c| c.0.clone())
                .collect(),
            numeric: cols
                .iter()
                .filter(|c| c.1 == 0)
                .map(|c| numeric_affinity(&c.2))
                .collect(),
            all: cols.into_iter().map(|c| c.0).collect(),
            name,
            kind,
            without_rowid,
        });
    }
    Ok(out)
}

/// True if a column declared `decl` has INTEGER, REAL or NUMERIC affinity (SQLite's
/// rules, <https://www.sqlite.org/datatype3.html> 3.1, in order). A virtual table's
/// columns are given no such type by hubvault's concern here: their module stores values.
fn numeric_affinity(decl: &str) -> bool {
    let d = decl.to_ascii_uppercase();
    if d.contains("INT") {
        return true;
    }
    if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        return false;
    }
    if d.contains("BLOB") || d.trim().is_empty() {
        return false;
    }
    true
}

/// A row of `sqlite_schema` (its SQL as UTF-8 bytes, as SQLite hands it over).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SchemaRow {
    kind: String,
    name: String,
    tbl_name: String,
    sql: Option<Vec<u8>>,
}

fn schema_rows(conn: &Connection, path: &Path) -> Result<Vec<SchemaRow>> {
    conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY rowid")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(SchemaRow {
                    kind: r.get(0)?,
                    name: r.get(1)?,
                    tbl_name: r.get(2)?,
                    sql: match r.get_ref(3)? {
                        rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                            Some(b.to_vec())
                        }
                        _ => None,
                    },
                })
            })?
            .collect()
        })
        .map_err(|e| Error::sqlite(path, "cannot read the schema", e))
}

/// A view or trigger to create again, with its SQL rewritten.
struct Redo {
    kind: Creates,
    name: String,
    sql: String,
}

/// Schema objects whose SQL names an old id: views and triggers to create again
/// (`plan.schema_objects`) and what cannot be rewritten (`plan.blockers`). Also the
/// triggers that must be created again with them (dropping a view drops the `INSTEAD OF`
/// triggers on it).
fn schema_pass(rows: &[SchemaRow], m: &Matcher, plan: &mut RewritePlan) -> Vec<Redo> {
    let mut redo = Vec::new();
    let mut any_view = false;
    for r in rows {
        let Some(sql) = &r.sql else { continue };
        // An id spelled in hex (`x'…'`: a column default, a CHECK, a view's constant) is
        // no text the tally below finds; left in place, the schema would go on naming the
        // old hub (rows inserted later take such a default). Refused as a text spelling
        // in a table's SQL is.
        if blob_literals(&String::from_utf8_lossy(sql))
            .iter()
            .any(|b| m.is_match(Kind::Blob, b))
        {
            plan.blockers.push(format!(
                "the SQL of {} {} names an old id in a BLOB literal (x'...')",
                r.kind, r.name
            ));
            continue;
        }
        let t = m.tally(Kind::Utf8Text, sql);
        if t.is_empty() {
            continue;
        }
        let what = format!("{} {}", r.kind, r.name);
        let kind = match r.kind.as_str() {
            "view" => Creates::View,
            "trigger" => Creates::Trigger,
            _ => {
                plan.blockers
                    .push(format!("the SQL of {what} names an old id"));
                continue;
            }
        };
        if t.mixed_case > 0 {
            plan.blockers
                .push(format!("the SQL of {what} spells an old id in mixed case"));
            continue;
        }
        if !m.tally(Kind::Utf8Text, r.name.as_bytes()).is_empty() {
            plan.blockers
                .push(format!("{what} is named after an old id"));
            continue;
        }
        match recreatable(m, kind, &r.name, sql) {
            Ok(sql) => {
                any_view |= kind == Creates::View;
                plan.schema_objects.push(what);
                redo.push(Redo {
                    kind,
                    name: r.name.clone(),
                    sql,
                });
            }
            Err(why) => plan
                .blockers
                .push(format!("the SQL of {what} cannot be created again: {why}")),
        }
    }
    if any_view {
        for r in rows.iter().filter(|r| r.kind == "trigger") {
            if redo
                .iter()
                .any(|x| x.kind == Creates::Trigger && x.name == r.name)
            {
                continue;
            }
            let Some(sql) = &r.sql else { continue };
            match recreatable(m, Creates::Trigger, &r.name, sql) {
                Ok(sql) => redo.push(Redo {
                    kind: Creates::Trigger,
                    name: r.name.clone(),
                    sql,
                }),
                Err(why) => plan.blockers.push(format!(
                    "trigger {} must be created again (a view it may belong to is) but cannot: {why}",
                    r.name
                )),
            }
        }
    }
    redo
}

/// The SQL of a view or trigger with the old ids rewritten, if it is one statement
/// creating exactly that object (checked on the text here; SQLite checks "one
/// statement" again when it prepares it).
fn recreatable(
    m: &Matcher,
    kind: Creates,
    name: &str,
    sql: &[u8],
) -> std::result::Result<String, String> {
    let new = m
        .rewrite(Kind::Utf8Text, sql)
        .0
        .unwrap_or_else(|| sql.to_vec());
    let new = String::from_utf8(new).map_err(|_| "it is not valid UTF-8".to_string())?;
    if new.contains('\0') {
        return Err("it holds a NUL character".into());
    }
    sqltext::check_create(&new, kind, name)?;
    Ok(new)
}

/// Drops the views and triggers in `redo` and creates them again from their rewritten
/// SQL, each prepared as exactly one statement; then `sqlite_schema` must be `before`
/// with only their SQL rewritten.
fn recreate(conn: &Connection, path: &Path, before: &[SchemaRow], redo: &[Redo]) -> Result<()> {
    if redo.is_empty() {
        return Ok(());
    }
    let q = |what: String| move |e| Error::sqlite(path, &what, e);
    for kind in [Creates::Trigger, Creates::View] {
        for r in redo.iter().filter(|r| r.kind == kind) {
            let word = if kind == Creates::View {
                "VIEW"
            } else {
                "TRIGGER"
            };
            conn.execute(
                &format!("DROP {word} IF EXISTS {}", quote_ident(&r.name)),
                [],
            )
            .map_err(q(format!("cannot drop {} {}", word.to_lowercase(), r.name)))?;
        }
    }
    let refuse = |r: &Redo, why: String| {
        Error::db(
            path,
            format!(
                "the stored SQL of {} {} cannot be created again: {why}",
                kind_word(r.kind),
                r.name
            ),
            "nothing was changed; the database's schema holds SQL that SQLite did not write: inspect it with `sqlite3 FILE .schema` and fix or drop that object",
        )
    };
    for kind in [Creates::View, Creates::Trigger] {
        for r in redo.iter().filter(|r| r.kind == kind) {
            let mut stmt = conn.prepare(&r.sql).map_err(|e| match e {
                rusqlite::Error::MultipleStatement => {
                    refuse(r, "it is more than one statement".into())
                }
                e => refuse(r, e.to_string()),
            })?;
            stmt.raw_execute().map_err(|e| refuse(r, e.to_string()))?;
        }
    }
    let after = schema_rows(conn, path)?;
    let key = |r: &SchemaRow| {
        (
            r.kind.clone(),
            r.name.clone(),
            r.tbl_name.clone(),
            r.sql.clone(),
        )
    };
    let expected: BTreeSet<_> = before
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(x) = redo
                .iter()
                .find(|x| kind_word(x.kind) == r.kind && x.name == r.name)
            {
                r.sql = Some(x.sql.clone().into_bytes());
            }
            key(&r)
        })
        .collect();
    let got: BTreeSet<_> = after.iter().map(key).collect();
    if expected != got {
        let diff: Vec<String> = got
            .symmetric_difference(&expected)
            .map(|(k, n, _, _)| format!("{k} {n}"))
            .collect();
        return Err(Error::db(
            path,
            format!(
                "creating the rewritten views and triggers again changed more than them ({})",
                diff.join(", ")
            ),
            "nothing was changed; the database's schema holds SQL that SQLite did not write: inspect it with `sqlite3 FILE .schema`",
        ));
    }
    Ok(())
}

fn kind_word(k: Creates) -> &'static str {
    match k {
        Creates::View => "view",
        Creates::Trigger => "trigger",
    }
}

fn scan_error(path: &Path, table: &str, e: rusqlite::Error) -> Error {
    if e.to_string().contains("no such module") {
        return Error::db(
            path,
            format!("table {table} is a virtual table whose module this SQLite lacks: {e}"),
            "its content cannot be searched for the old ids; rewrite it with a tool that has the module, then run hubvault again",
        );
    }
    Error::sqlite(path, &format!("cannot read table {table}"), e)
}

/// Rows read to guess which columns hold the ids (see [`pass`]).
const SAMPLE_ROWS: usize = 1000;

/// One pass over a table's `cols`; the counts per column come back (slot i = `cols[i]`).
///
/// Without `write`, a `SELECT` that only counts. With `write`, one `UPDATE` finds,
/// rewrites and counts. It sets only the columns that hold ids: setting a column costs
/// even when its value does not change (a function call per row, and the entries of
/// every index on it are deleted and written again; setting an `INTEGER PRIMARY KEY`
/// moves every row). Which columns those are is guessed from the first
/// [`SAMPLE_ROWS`] rows; the `UPDATE`'s `WHERE` looks at every column and notes each one
/// in which it sees an old id, and the columns the guess missed (ids only in later rows)
/// get one more `UPDATE`, for them alone. So a table is read once when the guess is
/// right (the connector tables: every row names the ids), at most twice otherwise.
/// What `hubvault_text_kept`'s refusal says (crate::sqlite::idfn).
const NUMBER_REFUSED: &str = "would be stored as a number";

/// `numeric[i]`: `cols[i]` has numeric affinity (see [`Table::numeric`]); only read when
/// writing.
fn pass(
    conn: &Connection,
    path: &Path,
    f: &IdFunctions<'_>,
    table: &str,
    cols: &[&str],
    numeric: &[bool],
    write: bool,
) -> Result<Vec<ColTally>> {
    f.reset();
    let t0 = std::time::Instant::now();
    let qt = quote_ident(table);
    let look = |sql: String| {
        conn.query_row(&sql, [], |_| Ok(()))
            .map_err(|e| scan_error(path, table, e))
    };
    if !write {
        let sums: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("total({})", f.tally_expr(Some(i), c)))
            .collect();
        look(format!(
            "SELECT {} FROM {qt} WHERE {}",
            sums.join(", "),
            f.hit_expr(0, cols)
        ))?;
        tracing::debug!("rewrite: scan of {table} took {:?}", t0.elapsed());
        return Ok(f.counts(cols.len()));
    }
    let quoted: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
    look(format!(
        "SELECT count(*) FROM (SELECT {} FROM {qt} LIMIT {SAMPLE_ROWS}) WHERE {}",
        quoted.join(", "),
        f.hit_expr(0, cols)
    ))?;
    let guess: Vec<bool> = f.seen(cols.len()).iter().map(|n| *n > 0).collect();
    f.reset();
    // Columns set by one UPDATE (`which`); the WHERE looks at `looked` (slot = index in
    // `cols`). Returns the columns in which the WHERE saw an old id.
    let update = |which: &[usize], looked: &[usize]| -> Result<Vec<bool>> {
        let hit = if looked.len() == cols.len() {
            f.hit_expr(0, cols)
        } else {
            // One column at a time keeps slot = index in `cols`.
            looked
                .iter()
                .map(|i| format!("({})", f.hit_expr(*i, &[cols[*i]])))
                .collect::<Vec<_>>()
                .join(" | ")
                + " != 0"
        };
        if which.is_empty() {
            look(format!("SELECT count(*) FROM {qt} WHERE {hit}"))?;
        } else {
            let sets: Vec<String> = which
                .iter()
                .map(|i| {
                    let v = if numeric.get(*i) == Some(&true) {
                        f.rewrite_kept_expr(*i, cols[*i])
                    } else {
                        f.rewrite_expr(*i, cols[*i])
                    };
                    format!("{} = {v}", quoted[*i])
                })
                .collect();
            conn.execute(
                &format!("UPDATE {qt} SET {} WHERE {hit}", sets.join(", ")),
                [],
            )
            .map_err(|e| {
                let said = e.to_string();
                if said.contains(NUMBER_REFUSED) {
                    // hubvault_text_kept refused (see IdFunctions::rewrite_kept_expr).
                    return Error::db(
                        path,
                        format!("cannot rewrite table {table}: {said}"),
                        "nothing was changed; the new id is spelled with decimal digits only, and SQL cannot store it as text in that column; report this (with the column's declared type)",
                    );
                }
                Error::sqlite(path, &format!("cannot rewrite table {table}"), e)
            })?;
        }
        Ok(f.seen(cols.len()).iter().map(|n| *n > 0).collect())
    };
    let all: Vec<usize> = (0..cols.len()).collect();
    let first: Vec<usize> = all.iter().copied().filter(|i| guess[*i]).collect();
    let seen = update(&first, &all)?;
    let missed: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| seen[*i] && !guess[*i])
        .collect();
    if !missed.is_empty() {
        tracing::debug!(
            "rewrite: {table}: old ids past the first {SAMPLE_ROWS} rows in {:?}: one more UPDATE",
            missed.iter().map(|i| cols[*i]).collect::<Vec<_>>()
        );
        update(&missed, &missed)?;
    }
    tracing::debug!("rewrite: UPDATE {table} took {:?}", t0.elapsed());
    Ok(f.counts(cols.len()))
}

/// The first [`ROWS_SHOWN`] rows whose `col` holds one of `reason`'s spellings.
fn rows_with(
    conn: &Connection,
    path: &Path,
    f: &IdFunctions<'_>,
    t: &Table,
    col: &str,
    reason: Reason,
) -> Result<Vec<Row>> {
    let bit = match reason {
        Reason::MixedCase => 2,
        Reason::RawBytes => 4,
        Reason::ContentlessIndex => return Ok(Vec::new()),
    };
    let cond = format!("({}) & {bit}", f.tally_expr(None, col));
    let q = |e| scan_error(path, &t.name, e);
    if t.without_rowid {
        let pk: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")
            .and_then(|mut s| s.query_map([&t.name], |r| r.get(0))?.collect())
            .map_err(q)?;
        let key: Vec<String> = pk
            .iter()
            .map(|c| format!("quote({})", quote_ident(c)))
            .collect();
        let sql = format!(
            "SELECT substr({}, 1, 200) FROM {} WHERE {cond} LIMIT {ROWS_SHOWN}",
            key.join(" || ', ' || "),
            quote_ident(&t.name)
        );
        return conn
            .prepare(&sql)
            .and_then(|mut s| s.query_map([], |r| r.get(0).map(Row::Key))?.collect())
            .map_err(q);
    }
    // `rowid` may be a column's name; SQLite offers two more names for the real one.
    let rowid = ["rowid", "_rowid_", "oid"]
        .into_iter()
        .find(|n| !t.all.iter().any(|c| c.eq_ignore_ascii_case(n)))
        .unwrap_or("rowid");
    let sql = format!(
        "SELECT {rowid} FROM {} WHERE {cond} LIMIT {ROWS_SHOWN}",
        quote_ident(&t.name)
    );
    conn.prepare(&sql)
        .and_then(|mut s| s.query_map([], |r| r.get(0).map(Row::Rowid))?.collect())
        .map_err(q)
}

/// Adds what `counts` found in `t`'s `cols` to the plan: changes, and what is left.
fn note(
    conn: &Connection,
    path: &Path,
    f: &IdFunctions<'_>,
    t: &Table,
    cols: &[&str],
    counts: &[ColTally],
    plan: &mut RewritePlan,
) -> Result<()> {
    for (c, n) in cols.iter().zip(counts) {
        if n.rewritable > 0 {
            plan.changes.push(ColumnChange {
                table: t.name.clone(),
                column: c.to_string(),
                values: n.rewritable,
            });
        }
        for (reason, values) in [
            (Reason::MixedCase, n.mixed_case),
            (Reason::RawBytes, n.raw_bytes),
        ] {
            if values > 0 {
                plan.unrewritten.push(Unrewritten {
                    table: t.name.clone(),
                    column: c.to_string(),
                    reason,
                    values,
                    rows: rows_with(conn, path, f, t, c, reason)?,
                });
            }
        }
    }
    Ok(())
}

/// The full-text indexes to rebuild once the tables in `changed` are rewritten: those
/// keeping their own (changed) copy, and those over a changed table.
fn fts_to_rebuild(all: &[Table], changed: &BTreeSet<String>) -> Vec<(String, Treatment)> {
    all.iter()
        .filter_map(|t| match &t.kind {
            TableKind::Virtual(tr @ Treatment::FtsOwnContent { .. })
                if changed.contains(&t.name.to_ascii_lowercase()) =>
            {
                Some((t.name.clone(), tr.clone()))
            }
            TableKind::Virtual(tr @ Treatment::FtsExternal { content, .. })
                if changed.contains(&content.to_ascii_lowercase()) =>
            {
                Some((t.name.clone(), tr.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Rows of contentless full-text indexes that hold an old id.
fn contentless(
    conn: &Connection,
    path: &Path,
    all: &[Table],
    old: &[uuid::Uuid],
    plan: &mut RewritePlan,
) -> Result<()> {
    for t in all {
        if let TableKind::Virtual(tr @ Treatment::FtsContentless { .. }) = &t.kind {
            let rows = vtab::index_hits(conn, &t.name, tr, old)
                .map_err(|e| scan_error(path, &t.name, e))?;
            if !rows.is_empty() {
                plan.unrewritten.push(Unrewritten {
                    table: t.name.clone(),
                    column: "*".into(),
                    reason: Reason::ContentlessIndex,
                    values: rows.len() as u64,
                    rows: rows.into_iter().take(ROWS_SHOWN).map(Row::Rowid).collect(),
                });
            }
        }
    }
    Ok(())
}

fn note_scanned_only(all: &[Table], plan: &mut RewritePlan) {
    for t in all {
        let why = match &t.kind {
            TableKind::Shadow(Some(owner)) => format!("shadow table of virtual table {owner}"),
            TableKind::Shadow(None) => "shadow table of a virtual table".into(),
            TableKind::Virtual(Treatment::FtsExternal { content, .. }) => {
                format!("full-text index over {content}: rebuilt, not written")
            }
            TableKind::Virtual(Treatment::FtsContentless { .. }) => {
                "contentless full-text index: searched, not written".into()
            }
            TableKind::Virtual(Treatment::FtsView) => "view of a full-text index".into(),
            _ => continue,
        };
        plan.scanned_only.push(format!("{} ({why})", t.name));
    }
}

/// What a rewrite from `from` to `to` would change; changes nothing. Also finds what
/// [`apply`] would leave (`unrewritten`) or refuse (`blockers`).
pub fn plan(conn: &Connection, path: &Path, from: Ids, to: Ids) -> Result<RewritePlan> {
    check_ids(from, to)?;
    let encoding =
        Encoding::of(conn).map_err(|e| Error::sqlite(path, "cannot read PRAGMA encoding", e))?;
    let mut plan = RewritePlan::new(from, to, encoding);
    let (old, new) = changing(from, to);
    if old.is_empty() {
        return Ok(plan);
    }
    let m = Matcher::new(&old, Some(&new));
    schema_pass(&schema_rows(conn, path)?, &m, &mut plan);
    let f = IdFunctions::register(conn, m)
        .map_err(|e| Error::sqlite(path, "cannot register the rewrite's SQL functions", e))?;
    let all = tables(conn, path)?;
    for t in all
        .iter()
        .filter(|t| t.is_written() && !t.writable.is_empty())
    {
        let cols: Vec<&str> = t.writable.iter().map(String::as_str).collect();
        let counts = pass(conn, path, &f, &t.name, &cols, &[], false)?;
        note(conn, path, &f, t, &cols, &counts, &mut plan)?;
    }
    let changed: BTreeSet<String> = plan
        .changes
        .iter()
        .map(|c| c.table.to_ascii_lowercase())
        .collect();
    plan.fts_rebuilt = fts_to_rebuild(&all, &changed)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    contentless(conn, path, &all, &old, &mut plan)?;
    note_scanned_only(&all, &mut plan);
    Ok(plan)
}

/// Where an old id (any spelling) is still found: every column of every table,
/// generated, hidden and shadow ones included (the index structures of full-text indexes
/// excepted: those are searched with a phrase query instead), and the SQL of the
/// schema. Empty means none.
pub fn scan(conn: &Connection, path: &Path, old: &[String]) -> Result<Vec<Found>> {
    let ids: Vec<uuid::Uuid> = old
        .iter()
        .filter_map(|s| uuid::Uuid::parse_str(s).ok())
        .collect();
    let mut found = Vec::new();
    if ids.is_empty() {
        return Ok(found);
    }
    let m = Matcher::new(&ids, None);
    for r in schema_rows(conn, path)? {
        if r.sql
            .as_ref()
            .is_some_and(|s| !m.tally(Kind::Utf8Text, s).is_empty())
        {
            found.push(Found {
                place: format!("schema:{} {}", r.kind, r.name),
                values: 1,
            });
        }
    }
    let f = IdFunctions::register(conn, m)
        .map_err(|e| Error::sqlite(path, "cannot register the rewrite's SQL functions", e))?;
    let all = tables(conn, path)?;
    for t in &all {
        let skip = match &t.kind {
            TableKind::Shadow(Some(owner)) => all.iter().any(|o| {
                &o.name == owner
                    && matches!(&o.kind, TableKind::Virtual(tr) if tr.is_fts())
                    && vtab::is_fts_index_shadow(owner, &t.name)
            }),
            TableKind::Virtual(Treatment::FtsView) => true,
            _ => false,
        };
        if skip {
            continue;
        }
        if let TableKind::Virtual(tr) = &t.kind
            && tr.is_fts()
        {
            let rows = vtab::index_hits(conn, &t.name, tr, &ids)
                .map_err(|e| scan_error(path, &t.name, e))?;
            if !rows.is_empty() {
                found.push(Found {
                    place: format!("{}.*", t.name),
                    values: rows.len() as u64,
                });
            }
            if !tr.is_written() {
                continue;
            }
        }
        let cols: Vec<&str> = t.all.iter().map(String::as_str).collect();
        for (c, n) in cols
            .iter()
            .zip(pass(conn, path, &f, &t.name, &cols, &[], false)?)
        {
            if n.hit > 0 {
                found.push(Found {
                    place: format!("{}.{}", t.name, c),
                    values: n.hit,
                });
            }
        }
    }
    Ok(found)
}

/// Scans `conn` for the given ids (canonical strings), any spelling.
pub fn scan_ids(conn: &Connection, path: &Path, ids: &[String]) -> Result<Vec<Found>> {
    scan(conn, path, ids)
}

/// Rewrites `from` to `to` in the database, as the module's contract says, and returns
/// what changed. On any error nothing changed. With old ids left as they are
/// ([`RewritePlan::unrewritten`]), it refuses unless `accept_unrewritten`.
pub fn apply(
    conn: &mut Connection,
    path: &Path,
    from: Ids,
    to: Ids,
    accept_unrewritten: bool,
) -> Result<RewritePlan> {
    apply_with(
        conn,
        path,
        from,
        to,
        |conn, plan| rewrite_in_transaction(conn, path, plan, accept_unrewritten),
        |plan| plan,
    )
}

/// [`apply`], or with [`page_rewrite_on`] first [`apply_pages`]; when the page rewrite
/// refuses the database (its transaction was rolled back, nothing changed), the SQL
/// rewrite of [`apply`] runs instead. For a database others may have open (`remap` in
/// place): nothing is visible to them before the commit, and on any error nothing
/// changed.
pub fn apply_switched(
    conn: &mut Connection,
    path: &Path,
    from: Ids,
    to: Ids,
    accept_unrewritten: bool,
) -> Result<RewritePlan> {
    if page_rewrite_on() {
        match apply_pages(conn, path, from, to, accept_unrewritten)? {
            Ok(plan) => return Ok(plan),
            Err(why) => tracing::debug!(
                "rewrite: the page rewrite refused ({why}): the SQL rewrite instead"
            ),
        }
    }
    apply(conn, path, from, to, accept_unrewritten)
}

/// As [`apply`], with the rewrite done on the pages (`sqlite_dbpage`) inside the same
/// kind of transaction, then the stale indexes rebuilt, the same checks and the commit
/// (see [`pages_in_transaction`] for the order of the checks). `Ok(Err(why))` when the
/// page rewrite does not handle the database ([`apply_unchecked_pages`] lists what):
/// its transaction was rolled back and nothing changed.
pub fn apply_pages(
    conn: &mut Connection,
    path: &Path,
    from: Ids,
    to: Ids,
    accept_unrewritten: bool,
) -> Result<std::result::Result<RewritePlan, String>> {
    apply_with(
        conn,
        path,
        from,
        to,
        |conn, plan| pages_in_transaction(conn, path, plan, accept_unrewritten),
        Ok,
    )
}

/// The frame of both in-place rewrites: the ids checked, foreign keys and triggers off
/// around `rewrite` (given a new plan), and put back as they were whatever happened.
/// When no id changes, `unchanged` of the empty plan, with nothing done.
fn apply_with<T>(
    conn: &mut Connection,
    path: &Path,
    from: Ids,
    to: Ids,
    rewrite: impl FnOnce(&mut Connection, RewritePlan) -> Result<T>,
    unchanged: impl FnOnce(RewritePlan) -> T,
) -> Result<T> {
    check_ids(from, to)?;
    let encoding =
        Encoding::of(conn).map_err(|e| Error::sqlite(path, "cannot read PRAGMA encoding", e))?;
    if changing(from, to).0.is_empty() {
        return Ok(unchanged(RewritePlan::new(from, to, encoding)));
    }
    let q = |what: &'static str| move |e| Error::sqlite(path, what, e);
    let fk_was_on: bool = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .map_err(q("cannot read PRAGMA foreign_keys"))?;
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(q("cannot switch foreign keys off"))?;
    // Read before: `set_db_config` returns the value after the call.
    let triggers_were_on = conn
        .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)
        .map_err(q("cannot read whether triggers are on"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .map_err(q("cannot disable triggers"))?;
    let result = rewrite(conn, RewritePlan::new(from, to, encoding));
    // Put the connection back as it was, whatever happened.
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, triggers_were_on);
    let restored = conn.pragma_update(None, "foreign_keys", fk_was_on);
    let plan = result?;
    restored.map_err(q("cannot switch foreign keys back on"))?;
    Ok(plan)
}

/// The page rewrite of [`apply_switched`], in one `BEGIN IMMEDIATE` transaction: the
/// tables read, the pages rewritten through `sqlite_dbpage`, the stale indexes rebuilt,
/// then [`apply`]'s checks and the commit. `Ok(Err(why))` when the page rewrite refuses
/// the database: the transaction was rolled back, so nothing was changed.
fn pages_in_transaction(
    conn: &mut Connection,
    path: &Path,
    mut plan: RewritePlan,
    accept_unrewritten: bool,
) -> Result<std::result::Result<RewritePlan, String>> {
    let (old, new) = changing(plan.from, plan.to);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| Error::sqlite(path, "cannot begin the rewrite transaction", e))?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mode: String = tx
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| Error::sqlite(path, "cannot read PRAGMA journal_mode", e))?;
    // In WAL mode the full structure check (`integrity_check`, or `quick_check` past
    // FULL_CHECK_MAX_BYTES) runs on the state this transaction starts from, on a second
    // connection and the other core, while this one rewrites: nobody else can commit
    // while the transaction holds the write lock, so that state is the one rewritten.
    // After the rewrite, before the commit, `quick_check` (every page, record, NOT NULL
    // and CHECK constraint) runs on the result beside `foreign_key_check` and the scan
    // for old ids: the rewrite changes no page's structure and only id bytes, the
    // indexes it made stale were rebuilt by REINDEX, and the others hold no changed
    // column. In rollback-journal mode a reader's lock would hold the rewrite's writes
    // back, so the full check runs on the result, after the rewrite, as on the SQL path:
    // on connections that read the file once the transaction has flushed its pages into
    // it, beside the scan and `foreign_key_check` (`check_flushed_and_commit`).
    let before = if mode.eq_ignore_ascii_case("wal") {
        let c = db::open_read_only(path)?;
        c.execute_batch("BEGIN")
            .and_then(|_| c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())))
            .map_err(|e| Error::sqlite(path, "cannot start the check's read transaction", e))?;
        Some(c)
    } else {
        None
    };
    let after = if before.is_some() {
        "quick_check"
    } else {
        db::check_for(size)
    };
    let interrupt = before.as_ref().map(|c| c.get_interrupt_handle());
    std::thread::scope(|s| {
        let checker = before.map(|c| {
            s.spawn(move || {
                let t0 = std::time::Instant::now();
                let r = db::check_structure_with(&c, path, db::check_for(size));
                tracing::debug!(
                    "rewrite: structure check before, beside it, took {:?}",
                    t0.elapsed()
                );
                r
            })
        });
        let rewritten = rewrite_pages(&tx, path, &mut plan, &old, &new);
        if !matches!(rewritten, Ok(Ok(_)))
            && let (Some(i), Some(h)) = (&interrupt, &checker)
        {
            // The write lock is still held: stop the check rather than wait for it.
            db::interrupt_until(i, || h.is_finished());
        }
        // Joined before the commit: its read mark would keep the commit's checkpoint
        // from resetting the WAL.
        let checked = checker.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        let rewritten = match rewritten? {
            Ok(r) => r,
            Err(why) => return Ok(Err(why)),
        };
        if let Some(checked) = checked {
            checked.map_err(|e| check_failed(path, "before the rewrite", e))?;
        }
        if on_disk_journal(&mode) {
            check_flushed_and_commit(tx, path, rewritten, &mut plan, accept_unrewritten, after)?;
        } else if mode.eq_ignore_ascii_case("wal") {
            check_and_commit_wal(tx, path, rewritten, &mut plan, accept_unrewritten, after)?;
        } else {
            check_and_commit(tx, path, rewritten, &mut plan, accept_unrewritten, after)?;
        }
        Ok(Ok(plan))
    })
}

/// Page 1 as `conn` sees it (through its transaction's cache, if any), or `None` when it
/// cannot be read.
fn page_one(conn: &Connection) -> Option<Vec<u8>> {
    conn.query_row("SELECT data FROM sqlite_dbpage WHERE pgno = 1", [], |r| {
        r.get(0)
    })
    .ok()
}

/// A rollback journal on disk, which holds the original of every page the transaction
/// writes into the file before it is written (`delete`, `truncate`, `persist`).
fn on_disk_journal(mode: &str) -> bool {
    ["delete", "truncate", "persist"]
        .iter()
        .any(|m| mode.eq_ignore_ascii_case(m))
}

/// [`check_and_commit`] on several cores, for a rollback-journal database: every page the
/// transaction changed is written into the file first (`cache_flush`: the journal with
/// the originals is synced before, as for any spill, and the transaction keeps the
/// file's `EXCLUSIVE` lock, so no other process reads or writes it meanwhile); the file
/// then holds exactly the result, which connections that take no lock
/// ([`db::open_frozen`]) check at once: the structure check on one, the scan for old ids
/// and `foreign_key_check` on the other. Only then the commit; on any failure the
/// transaction rolls back (the journal puts the originals back). Where the flush cannot
/// be had (another process holds a lock on the file), the checks run inside the
/// transaction as before.
fn check_flushed_and_commit(
    tx: rusqlite::Transaction<'_>,
    path: &Path,
    rewritten: Rewritten,
    plan: &mut RewritePlan,
    accept_unrewritten: bool,
    structure: &'static str,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    if let Err(e) = tx.cache_flush() {
        tracing::debug!(
            "rewrite: pages not flushed before the checks ({e}): checked in the transaction"
        );
        return check_and_commit(tx, path, rewritten, plan, accept_unrewritten, structure);
    }
    tracing::debug!("rewrite: flushed into the file in {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    let first = db::open_frozen(path)?;
    // `cache_flush` writes only the changed pages nothing holds, and a write transaction
    // always holds page 1 (the b-tree layer keeps it for the whole transaction). When the
    // transaction changed page 1 (the freelist or the file's size: a `REINDEX`, an
    // `ANALYZE`), the file is not the result, so the checks run inside the transaction.
    let same_page_1 = matches!(
        (page_one(&tx), page_one(&first)),
        (Some(a), Some(b)) if a == b
    );
    if !same_page_1 {
        tracing::debug!("rewrite: page 1 changed in the transaction: checked in the transaction");
        drop(first);
        return check_and_commit(tx, path, rewritten, plan, accept_unrewritten, structure);
    }
    let second = db::open_frozen(path)?;
    let interrupt = first.get_interrupt_handle();
    let (rest, checked, first) = std::thread::scope(|s| {
        let checker = s.spawn(move || {
            let r = db::check_structure_with(&first, path, structure);
            (r, first)
        });
        let rest = rewritten
            .verify(&second, path, plan, accept_unrewritten)
            .and_then(|_| {
                db::check_foreign_keys(&second, path).map_err(|e| after_rewrite(path, e))
            });
        if rest.is_err() {
            db::interrupt_until(&interrupt, || checker.is_finished());
        } else {
            // While the structure check still runs: the commit's sync of the file then
            // finds the pages on disk already (they are journaled: a crash rolls back).
            let t0 = std::time::Instant::now();
            let synced = db::sync_main_file(&second, path);
            tracing::debug!(
                "rewrite: file synced beside the check in {:?} ({synced:?})",
                t0.elapsed()
            );
        }
        let (checked, first) = checker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (rest, checked, first)
    });
    tracing::debug!(
        "rewrite: {structure}, foreign_key_check and the scan on two connections took {:?}",
        t0.elapsed()
    );
    rest?;
    checked.map_err(|e| after_rewrite(path, e))?;
    commit_rewrite(tx, path)?;
    // Closed after the commit (they could not drop its locks before either: see
    // `open_frozen`).
    drop((first, second));
    Ok(())
}

/// Inside [`pages_in_transaction`]'s transaction: the tables read, the pages rewritten,
/// the stale indexes rebuilt; `Ok(Err(why))` when the page rewrite refuses (the caller
/// rolls back: pages may have been written).
fn rewrite_pages(
    tx: &Connection,
    path: &Path,
    plan: &mut RewritePlan,
    old: &[uuid::Uuid],
    new: &[uuid::Uuid],
) -> Result<std::result::Result<Rewritten, String>> {
    // Read inside the transaction: nobody changes the schema between this and the pages.
    let (all, specs) = match page_specs(tx, path, plan, old, new)? {
        Ok(found) => found,
        Err(why) => return Ok(Err(why)),
    };
    let t0 = std::time::Instant::now();
    let outcome = with_page_writes(tx, path, || {
        pagerewrite::rewrite_in_transaction(tx, &Matcher::new(old, Some(new)), &specs)
    })?;
    let done = match outcome.map_err(|e| Error::io(path, "cannot rewrite the pages", e))? {
        pagerewrite::Outcome::Refused(why) => return Ok(Err(why)),
        pagerewrite::Outcome::Done(done) => done,
    };
    tracing::debug!(
        "rewrite: pages rewritten in {:?} ({} pages written)",
        t0.elapsed(),
        done.pages_written
    );
    let rewritten = after_pages(
        tx,
        path,
        plan,
        &specs,
        &done,
        all,
        old.to_vec(),
        new.to_vec(),
    )?;
    Ok(Ok(rewritten))
}

/// `f` with `sqlite_dbpage` writable on `conn`: defensive mode is off for `f` alone (the
/// table is direct-only, so no SQL stored in the file can reach it meanwhile).
fn with_page_writes<T>(conn: &Connection, path: &Path, f: impl FnOnce() -> T) -> Result<T> {
    let q = |what: &'static str| move |e| Error::sqlite(path, what, e);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, false)
        .map_err(q("cannot let sqlite_dbpage write"))?;
    let out = f();
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(q("cannot lock the connection down again"))?;
    Ok(out)
}

/// A rewrite committed into a private copy whose result is not checked yet: see
/// [`apply_unchecked`].
pub struct Unchecked {
    plan: RewritePlan,
    /// `None` when the old ids are the new ids (nothing was written).
    rewritten: Option<Rewritten>,
    accept_unrewritten: bool,
}

/// The start of both rewrites of a private copy: the ids checked and the plan begun, or,
/// when no id changes, `Err` with the (empty) result to return at once.
fn begin(
    conn: &Connection,
    path: &Path,
    from: Ids,
    to: Ids,
    accept_unrewritten: bool,
) -> Result<std::result::Result<RewritePlan, Unchecked>> {
    check_ids(from, to)?;
    let encoding =
        Encoding::of(conn).map_err(|e| Error::sqlite(path, "cannot read PRAGMA encoding", e))?;
    let plan = RewritePlan::new(from, to, encoding);
    if changing(from, to).0.is_empty() {
        return Ok(Err(Unchecked {
            plan,
            rewritten: None,
            accept_unrewritten,
        }));
    }
    Ok(Ok(plan))
}

/// As [`apply`], for a private copy that no other connection opens and that is
/// thrown away on any error (a restore's download, `remap --output`'s temp file): the
/// rewrite is committed at once and its result is checked afterwards by
/// [`Unchecked::check`], which runs the structure check on a second connection, on the
/// other core, while the first one scans what was written and runs `foreign_key_check`.
/// The checks are the same as [`apply`]'s; only their order with the commit differs, so
/// the copy must not be used (installed, renamed) unless `check` returned `Ok`.
pub fn apply_unchecked(
    conn: &mut Connection,
    path: &Path,
    from: Ids,
    to: Ids,
    accept_unrewritten: bool,
) -> Result<Unchecked> {
    let mut plan = match begin(conn, path, from, to, accept_unrewritten)? {
        Ok(plan) => plan,
        Err(nothing) => return Ok(nothing),
    };
    let q = |what: &'static str| move |e| Error::sqlite(path, what, e);
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(q("cannot switch foreign keys off"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .map_err(q("cannot disable triggers"))?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| Error::sqlite(path, "cannot begin the rewrite transaction", e))?;
    let rewritten = rewrite_rows(&tx, path, &mut plan)?;
    commit_rewrite(tx, path)?;
    Ok(Unchecked {
        plan,
        rewritten: Some(rewritten),
        accept_unrewritten,
    })
}

/// The environment switch of the page rewrite: on unless `HUBVAULT_PAGE_REWRITE=0`,
/// which makes [`apply_unchecked_switched`] and [`apply_switched`] take the SQL rewrite
/// alone (to compare the
/// two paths, in benchmarks and tests, or to step around a page-path defect in the
/// field without a new build).
pub const PAGE_REWRITE_ENV: &str = "HUBVAULT_PAGE_REWRITE";

/// False if and only if `HUBVAULT_PAGE_REWRITE=0`.
pub fn page_rewrite_on() -> bool {
    std::env::var_os(PAGE_REWRITE_ENV).is_none_or(|v| v != "0")
}

/// [`apply_unchecked`], or with [`page_rewrite_on`] the page rewrite
/// ([`apply_unchecked_pages`]), falling back to [`apply_unchecked`] on the same file when
/// the page rewrite refuses it (it then wrote nothing). `conn` must be the only
/// connection to `path`, opened with [`db::open_scratch`]; the page path closes it and
/// leaves a new one in its place.
pub fn apply_unchecked_switched(
    conn: &mut Connection,
    path: &Path,
    from: Ids,
    to: Ids,
    accept_unrewritten: bool,
) -> Result<Unchecked> {
    if page_rewrite_on() {
        match apply_unchecked_pages(conn, path, from, to, accept_unrewritten)? {
            PageOutcome::Done(u) => return Ok(*u),
            PageOutcome::Refused(why) => {
                tracing::debug!(
                    "rewrite: the page rewrite refused ({why}): the SQL rewrite instead"
                );
            }
        }
    }
    apply_unchecked(conn, path, from, to, accept_unrewritten)
}

/// What [`apply_unchecked_pages`] did.
pub enum PageOutcome {
    /// Rewritten on the pages and the touched indexes rebuilt; check it with
    /// [`Unchecked::check`] as the SQL path's result.
    Done(Box<Unchecked>),
    /// Nothing was written: the file holds something the page rewrite does not handle
    /// (the reason). [`apply_unchecked`] is the way.
    Refused(String),
}

/// As [`apply_unchecked`], done on the file's pages ([`pagerewrite`]) instead of with
/// `UPDATE`s, then a `REINDEX` of every index the rewrite made stale (an index of a
/// changed column, an expression index or a partial index of a changed table). Refused,
/// with nothing written, when the database holds what only the SQL path handles: an old
/// id in the schema's SQL (views and triggers are created again there), a virtual
/// table or its shadow tables, a table with generated columns, an old id in a
/// `WITHOUT ROWID` table, or anything [`pagerewrite::rewrite_file`] refuses. `conn`
/// must be the only connection to `path` (a private copy, opened with
/// [`db::open_scratch`]): it is closed while the pages are written and a new one is left
/// in its place.
pub fn apply_unchecked_pages(
    conn: &mut Connection,
    path: &Path,
    from: Ids,
    to: Ids,
    accept_unrewritten: bool,
) -> Result<PageOutcome> {
    let mut plan = match begin(conn, path, from, to, accept_unrewritten)? {
        Ok(plan) => plan,
        Err(nothing) => return Ok(PageOutcome::Done(Box::new(nothing))),
    };
    let (old, new) = changing(from, to);
    let (all, specs) = match page_specs(conn, path, &mut plan, &old, &new)? {
        Ok(found) => found,
        Err(why) => return Ok(PageOutcome::Refused(why)),
    };
    // No connection may be open while the pages are written: its cache would go stale.
    let scratch = std::mem::replace(
        conn,
        Connection::open_in_memory()
            .map_err(|e| Error::sqlite(path, "cannot open a placeholder connection", e))?,
    );
    scratch
        .close()
        .map_err(|(_, e)| Error::sqlite(path, "cannot close the database", e))?;
    let t0 = std::time::Instant::now();
    let outcome = pagerewrite::rewrite_file(path, &Matcher::new(&old, Some(&new)), &specs);
    *conn = db::open_scratch(path)?;
    let done = match outcome.map_err(|e| Error::io(path, "cannot rewrite the pages", e))? {
        pagerewrite::Outcome::Refused(why) => return Ok(PageOutcome::Refused(why)),
        pagerewrite::Outcome::Done(done) => done,
    };
    tracing::debug!(
        "rewrite: pages rewritten in {:?} ({} pages written)",
        t0.elapsed(),
        done.pages_written
    );
    let rewritten = after_pages(conn, path, &mut plan, &specs, &done, all, old, new)?;
    Ok(PageOutcome::Done(Box::new(Unchecked {
        plan,
        rewritten: Some(rewritten),
        accept_unrewritten,
    })))
}

/// What the page rewrite is given: every ordinary ROWID table with its root page, read
/// with SQL before the pages are touched; `Ok(Err(why))` when the database holds what
/// only the SQL path handles: an old id in the schema's SQL (views and triggers are
/// created again there), a virtual table or its shadow tables, a table with generated
/// columns, an old id in a `WITHOUT ROWID` table.
#[allow(clippy::type_complexity)]
fn page_specs(
    conn: &Connection,
    path: &Path,
    plan: &mut RewritePlan,
    old: &[uuid::Uuid],
    new: &[uuid::Uuid],
) -> Result<std::result::Result<(Vec<Table>, Vec<pagerewrite::TableSpec>), String>> {
    let refused = |why: String| Ok(Err(why));
    let look = Matcher::new(old, None);
    schema_pass(&schema_rows(conn, path)?, &look, plan);
    if !plan.schema_objects.is_empty() || !plan.blockers.is_empty() {
        return refused("an old id in the schema's SQL".into());
    }
    let all = tables(conn, path)?;
    // A column of numeric affinity stores text that reads as a number as a number. The
    // SQL path tests each value it writes (hubvault_text_kept); the pages would keep the
    // text, which integrity_check reports ("TEXT value in t.c") and lookups by the id
    // miss. A new id can make a value read as a number only if its unhyphenated
    // spelling is made of decimal digits and `e`s: then the first page pass tests the
    // TEXT values of those columns ([`pagerewrite::TableSpec::guarded`]).
    let numberlike = new.iter().any(|id| {
        id.simple()
            .to_string()
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'e')
    });
    let mut specs = Vec::new();
    let f = IdFunctions::register(conn, Matcher::new(old, None))
        .map_err(|e| Error::sqlite(path, "cannot register the rewrite's SQL functions", e))?;
    for t in &all {
        match &t.kind {
            TableKind::Ordinary => {}
            _ => return refused(format!("virtual or shadow table {}", t.name)),
        }
        if t.all != t.writable {
            return refused(format!("table {} has generated columns", t.name));
        }
        if t.without_rowid {
            let cols: Vec<&str> = t.all.iter().map(String::as_str).collect();
            if pass(conn, path, &f, &t.name, &cols, &[], false)?
                .iter()
                .any(|c| c.hit > 0)
            {
                return refused(format!("an old id in WITHOUT ROWID table {}", t.name));
            }
            continue;
        }
        // Rows written before a column was added (ALTER TABLE ADD COLUMN) do not hold
        // it: SQLite reads them with its default, and the pages hold nothing to rewrite.
        // A default that names an old id, as text or in a BLOB literal, is in the
        // schema's SQL: refused above.
        let root: i64 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [&t.name],
                |r| r.get(0),
            )
            .map_err(|e| scan_error(path, &t.name, e))?;
        let Ok(root) = u32::try_from(root) else {
            return refused(format!("table {}: root page {root}", t.name));
        };
        specs.push(pagerewrite::TableSpec {
            name: t.name.clone(),
            root,
            columns: t.all.clone(),
            guarded: if numberlike {
                t.numeric.clone()
            } else {
                Vec::new()
            },
        });
    }
    drop(f);
    Ok(Ok((all, specs)))
}

/// The bytes of every BLOB literal (`x'…'` or `X'…'`) in SQL text `sql` (one inside a
/// string literal too: only a wider refusal).
fn blob_literals(sql: &str) -> Vec<Vec<u8>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < b.len() {
        if matches!(b[i], b'x' | b'X') && b[i + 1] == b'\'' {
            let start = i + 2;
            let mut j = start;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            if j < b.len() && b[j] == b'\'' && (j - start) % 2 == 0 {
                out.push(
                    (start..j)
                        .step_by(2)
                        .map(|k| u8::from_str_radix(&sql[k..k + 2], 16).unwrap_or(0))
                        .collect(),
                );
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// After the pages of `specs` were rewritten (`done`): the plan noted as the SQL path
/// makes it (its rows for what is left need SQL), and every index the rewrite made stale
/// rebuilt with `REINDEX`.
#[allow(clippy::too_many_arguments)]
fn after_pages(
    conn: &Connection,
    path: &Path,
    plan: &mut RewritePlan,
    specs: &[pagerewrite::TableSpec],
    done: &pagerewrite::Done,
    all: Vec<Table>,
    old: Vec<uuid::Uuid>,
    new: Vec<uuid::Uuid>,
) -> Result<Rewritten> {
    let f = IdFunctions::register(conn, Matcher::new(&old, Some(&new)))
        .map_err(|e| Error::sqlite(path, "cannot register the rewrite's SQL functions", e))?;
    let mut stale = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let t = all
            .iter()
            .find(|t| t.name == spec.name)
            .expect("specs come from `all`");
        let cols: Vec<&str> = spec.columns.iter().map(String::as_str).collect();
        note(conn, path, &f, t, &cols, &done.tallies[i], plan)?;
        let changed: Vec<&str> = cols
            .iter()
            .zip(&done.changed[i])
            .filter(|(_, c)| **c)
            .map(|(n, _)| *n)
            .collect();
        if !changed.is_empty() {
            stale.extend(stale_indexes(conn, path, &t.name, &changed)?);
        }
    }
    drop(f);
    let stale = patch_indexes(conn, path, &Matcher::new(&old, Some(&new)), stale)?;
    // The index sorts of REINDEX may use helper threads (SQLite's sorter): about a fifth
    // less time on the bench database's UNIQUE index, on two cores.
    let helpers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    conn.query_row(&format!("PRAGMA threads = {helpers}"), [], |_| Ok(()))
        .map_err(|e| Error::sqlite(path, "cannot set PRAGMA threads", e))?;
    let t0 = std::time::Instant::now();
    for idx in &stale {
        // Schema-qualified: a bare `REINDEX name` is read as a collation first, so an
        // index named `nocase`, `rtrim` or `binary` would rebuild the indexes using that
        // collation and leave itself stale.
        conn.execute_batch(&format!("REINDEX main.{}", quote_ident(idx)))
            .map_err(|e| {
                Error::sqlite(
                    path,
                    &format!("cannot rebuild index {idx} after the rewrite"),
                    e,
                )
            })?;
    }
    tracing::debug!("rewrite: REINDEX of {stale:?} took {:?}", t0.elapsed());
    stats::refresh_samples(conn, path, &Matcher::new(&old, Some(&new)))?;
    let changed: BTreeSet<String> = plan
        .changes
        .iter()
        .map(|c| c.table.to_ascii_lowercase())
        .collect();
    Ok(Rewritten {
        old,
        new,
        all,
        changed,
    })
}

/// An index a page rewrite left stale.
struct Stale {
    name: String,
    /// Its key is plain columns and it has no `WHERE`: its entries may be patched
    /// ([`pagerewrite::patch_indexes_in_transaction`]). An expression's value or a
    /// partial index's choice of rows may change in ways only SQLite can compute.
    patchable: bool,
}

/// The indexes of `table` that a page rewrite of `changed` columns leaves stale: those
/// with a changed column in their key, an expression in their key, or a `WHERE`.
fn stale_indexes(
    conn: &Connection,
    path: &Path,
    table: &str,
    changed: &[&str],
) -> Result<Vec<Stale>> {
    let q = |e| Error::sqlite(path, &format!("cannot list the indexes of {table}"), e);
    let list: Vec<(String, bool)> = conn
        .prepare("SELECT name, partial FROM pragma_index_list(?1)")
        .and_then(|mut s| {
            s.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(q)?;
    let mut out = Vec::new();
    for (name, partial) in list {
        let cols: Vec<(i64, Option<String>)> = conn
            .prepare("SELECT cid, name FROM pragma_index_info(?1)")
            .and_then(|mut s| {
                s.query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(q)?;
        // cid -2: an expression; -1: the rowid.
        let expression = cols.iter().any(|(cid, _)| *cid < -1);
        let touched = partial
            || expression
            || cols.iter().any(|(_, c)| {
                c.as_deref()
                    .is_some_and(|c| changed.iter().any(|x| x.eq_ignore_ascii_case(c)))
            });
        if touched {
            out.push(Stale {
                name,
                patchable: !partial && !expression,
            });
        }
    }
    Ok(out)
}

/// The `stale` indexes whose keys can be patched, patched in a write transaction of
/// `conn` (the caller's, or one of its own on a private copy); the names of the others,
/// to rebuild with `REINDEX`.
fn patch_indexes(
    conn: &Connection,
    path: &Path,
    m: &Matcher,
    stale: Vec<Stale>,
) -> Result<Vec<String>> {
    let mut specs = Vec::new();
    let mut rebuild = Vec::new();
    for s in stale {
        let root: Option<i64> = if s.patchable {
            conn.query_row(
                "SELECT rootpage FROM sqlite_schema WHERE type = 'index' AND name = ?1",
                [&s.name],
                |r| r.get(0),
            )
            .map_err(|e| Error::sqlite(path, &format!("cannot read index {}", s.name), e))?
        } else {
            None
        };
        match root.and_then(|r| u32::try_from(r).ok()) {
            Some(root) if root > 1 => specs.push(pagerewrite::IndexSpec { name: s.name, root }),
            _ => rebuild.push(s.name),
        }
    }
    if specs.is_empty() {
        return Ok(rebuild);
    }
    let t0 = std::time::Instant::now();
    // A private copy's connection is in autocommit: its own transaction (no journal, as
    // the copy is thrown away on any error).
    let own = conn.is_autocommit();
    if own {
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| Error::sqlite(path, "cannot begin the index patch", e))?;
    }
    let patched = with_page_writes(conn, path, || {
        pagerewrite::patch_indexes_in_transaction(conn, m, &specs)
    })
    .and_then(|r| r.map_err(|e| Error::io(path, "cannot patch the indexes", e)));
    if own {
        let end = if patched.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        conn.execute_batch(end)
            .map_err(|e| Error::sqlite(path, "cannot end the index patch", e))?;
    }
    for (spec, r) in specs.into_iter().zip(patched?) {
        match r {
            Ok(pages) => tracing::debug!(
                "rewrite: index {} patched in place ({pages} pages written)",
                spec.name
            ),
            Err(why) => {
                tracing::debug!("rewrite: index {} to rebuild: {why}", spec.name);
                rebuild.push(spec.name);
            }
        }
    }
    tracing::debug!("rewrite: index patch took {:?}", t0.elapsed());
    Ok(rebuild)
}

impl Unchecked {
    /// Every check [`apply`] runs before its commit, on the committed copy: what was
    /// written holds no rewritable old id, old ids are left only where accepted, the
    /// database names the new ids, `foreign_key_check` is empty (all on one read-only
    /// connection), and the structure check ([`db::check_for`] the file's size) passes
    /// on a second one at the same time. Nobody may write the file meanwhile: close the
    /// connection that rewrote it first.
    pub fn check(self, path: &Path) -> Result<RewritePlan> {
        let Unchecked {
            mut plan,
            rewritten,
            accept_unrewritten,
        } = self;
        let Some(rewritten) = rewritten else {
            return Ok(plan);
        };
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let t0 = std::time::Instant::now();
        let conn = db::open_read_only(path)?;
        let (rest, structure) = db::with_structure_check(path, size, || {
            rewritten.verify(&conn, path, &mut plan, accept_unrewritten)?;
            db::check_foreign_keys(&conn, path).map_err(|e| after_rewrite(path, e))
        })?;
        rest?;
        structure.map_err(|e| after_rewrite(path, e))?;
        tracing::debug!("rewrite: checks of the result took {:?}", t0.elapsed());
        Ok(plan)
    }
}

fn rewrite_in_transaction(
    conn: &mut Connection,
    path: &Path,
    mut plan: RewritePlan,
    accept_unrewritten: bool,
) -> Result<RewritePlan> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| Error::sqlite(path, "cannot begin the rewrite transaction", e))?;
    let rewritten = rewrite_rows(&tx, path, &mut plan)?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    check_and_commit(
        tx,
        path,
        rewritten,
        &mut plan,
        accept_unrewritten,
        db::check_for(size),
    )?;
    Ok(plan)
}

/// The checks of an in-place rewrite inside its transaction, then the commit: what was
/// written holds no rewritable old id, old ids are left only where accepted, the
/// structure check (`PRAGMA structure`) and `foreign_key_check` pass. On any failure the
/// transaction rolls back (dropped uncommitted).
fn check_and_commit(
    tx: rusqlite::Transaction<'_>,
    path: &Path,
    rewritten: Rewritten,
    plan: &mut RewritePlan,
    accept_unrewritten: bool,
    structure: &'static str,
) -> Result<()> {
    let checked = checks_in_transaction(&tx, path, rewritten, plan, accept_unrewritten, structure);
    checked?;
    commit_rewrite(tx, path)
}

/// Commits a checked rewrite.
fn commit_rewrite(tx: rusqlite::Transaction<'_>, path: &Path) -> Result<()> {
    let t0 = std::time::Instant::now();
    tx.commit()
        .map_err(|e| Error::sqlite(path, "cannot commit the rewrite", e))?;
    tracing::debug!("rewrite: commit took {:?}", t0.elapsed());
    Ok(())
}

/// The checks of [`check_and_commit`], on the transaction's connection.
fn checks_in_transaction(
    tx: &Connection,
    path: &Path,
    rewritten: Rewritten,
    plan: &mut RewritePlan,
    accept_unrewritten: bool,
    structure: &'static str,
) -> Result<()> {
    rewritten.verify(tx, path, plan, accept_unrewritten)?;
    let t0 = std::time::Instant::now();
    let checked = db::check_structure_with(tx, path, structure)
        .and_then(|_| db::check_foreign_keys(tx, path));
    tracing::debug!(
        "rewrite: {structure} and foreign_key_check took {:?}",
        t0.elapsed()
    );
    checked.map_err(|e| after_rewrite(path, e))
}

/// [`check_and_commit`] for a WAL database, with the WAL synced on another thread while
/// the checks run (see [`fsio::sync_wal_early`]): the pass spilled most of its pages
/// into it, and the commit's sync then finds them on disk.
fn check_and_commit_wal(
    tx: rusqlite::Transaction<'_>,
    path: &Path,
    rewritten: Rewritten,
    plan: &mut RewritePlan,
    accept_unrewritten: bool,
    structure: &'static str,
) -> Result<()> {
    let checked = std::thread::scope(|s| {
        let early = s.spawn(|| {
            let t0 = std::time::Instant::now();
            let synced = fsio::sync_wal_early(path);
            tracing::debug!(
                "rewrite: WAL synced beside the checks in {:?} ({synced:?})",
                t0.elapsed()
            );
        });
        let checked =
            checks_in_transaction(&tx, path, rewritten, plan, accept_unrewritten, structure);
        let _ = early.join();
        checked
    });
    checked?;
    commit_rewrite(tx, path)
}

/// A check of the result that failed: the message says it was after the rewrite.
fn after_rewrite(path: &Path, e: Error) -> Error {
    check_failed(path, "after the rewrite", e)
}

/// A check that failed `when` (before or after the rewrite): nothing was changed.
fn check_failed(path: &Path, when: &str, e: Error) -> Error {
    match e {
        Error::Database { message, source, .. } => Error::Database {
            path: path.to_path_buf(),
            message: format!("{when}: {message}"),
            hint: "nothing was changed; check the database with `sqlite3 FILE 'PRAGMA integrity_check; PRAGMA foreign_key_check'`".into(),
            source,
        },
        other => other,
    }
}

/// What the `UPDATE`s of one rewrite wrote, for the checks that read it again.
struct Rewritten {
    old: Vec<uuid::Uuid>,
    new: Vec<uuid::Uuid>,
    all: Vec<Table>,
    /// Tables with a changed column (lowercase names).
    changed: BTreeSet<String>,
}

/// Inside the caller's write transaction: the schema objects created again, one `UPDATE`
/// per table, the full-text indexes rebuilt and checked. Nothing of the result is read
/// back here ([`Rewritten::verify`] does).
fn rewrite_rows(conn: &Connection, path: &Path, plan: &mut RewritePlan) -> Result<Rewritten> {
    let (old, new) = changing(plan.from, plan.to);
    let m = Matcher::new(&old, Some(&new));
    let before = schema_rows(conn, path)?;
    let redo = schema_pass(&before, &m, plan);
    if !plan.blockers.is_empty() {
        return Err(Error::db(
            path,
            format!(
                "the old ids cannot all be rewritten: {}",
                plan.blockers.join("; ")
            ),
            "nothing was changed; fix these schema objects by hand (e.g. with sqlite3) and run the command again",
        ));
    }
    let f = IdFunctions::register(conn, m)
        .map_err(|e| Error::sqlite(path, "cannot register the rewrite's SQL functions", e))?;
    recreate(conn, path, &before, &redo)?;

    // One UPDATE per table: a row holding ids in several columns is written once.
    let all = tables(conn, path)?;
    for t in all
        .iter()
        .filter(|t| t.is_written() && !t.writable.is_empty())
    {
        let cols: Vec<&str> = t.writable.iter().map(String::as_str).collect();
        let counts = pass(conn, path, &f, &t.name, &cols, &t.numeric, true)?;
        note(conn, path, &f, t, &cols, &counts, plan)?;
    }
    let changed: BTreeSet<String> = plan
        .changes
        .iter()
        .map(|c| c.table.to_ascii_lowercase())
        .collect();
    for (name, tr) in fts_to_rebuild(&all, &changed) {
        let t0 = std::time::Instant::now();
        vtab::rebuild(conn, &name).map_err(|e| {
            Error::sqlite(path, &format!("cannot rebuild full-text index {name}"), e)
        })?;
        vtab::integrity_check(conn, &name, &tr).map_err(|e| Error::Database {
            path: path.to_path_buf(),
            message: format!("full-text index {name} fails its integrity check after the rewrite"),
            hint: "nothing was changed; check the index with `sqlite3 FILE \"INSERT INTO <index>(<index>) VALUES('integrity-check')\"`".into(),
            source: Some(e),
        })?;
        tracing::debug!("rewrite: rebuilding {name} took {:?}", t0.elapsed());
        plan.fts_rebuilt.push(name);
    }
    contentless(conn, path, &all, &old, plan)?;
    note_scanned_only(&all, plan);
    stats::refresh_samples(conn, path, &Matcher::new(&old, Some(&new)))?;
    Ok(Rewritten {
        old,
        new,
        all,
        changed,
    })
}

impl Rewritten {
    /// Reads back what was written: no rewritable old id left ([`verify_written`]), old
    /// ids left only where accepted, and the database names the new ids. The structure
    /// and foreign-key checks are the caller's.
    fn verify(
        &self,
        conn: &Connection,
        path: &Path,
        plan: &mut RewritePlan,
        accept_unrewritten: bool,
    ) -> Result<()> {
        let f = IdFunctions::register(conn, Matcher::new(&self.old, Some(&self.new)))
            .map_err(|e| Error::sqlite(path, "cannot register the rewrite's SQL functions", e))?;
        let t0 = std::time::Instant::now();
        verify_written(conn, path, &f, &self.all, &self.changed, plan)?;
        let samples = stats::samples_naming(conn, path, &Matcher::new(&self.old, Some(&self.new)))?;
        if !samples.is_empty() {
            return Err(Error::db(
                path,
                format!(
                    "old ids are still found in the planner's samples after the rewrite: {}",
                    samples.join(", ")
                ),
                "nothing was changed; this is a bug in hubvault (please report it). To go on now: `sqlite3 FILE 'DELETE FROM sqlite_stat4'` drops the planner's samples (statistics only, `ANALYZE` builds them again), then run the command again",
            ));
        }
        tracing::debug!("rewrite: final scan took {:?}", t0.elapsed());
        if !plan.unrewritten.is_empty() && !accept_unrewritten {
            return Err(Error::db(
                path,
                format!(
                    "old ids that cannot be rewritten: {}",
                    plan.unrewritten_list()
                ),
                "nothing was changed; pass --accept-unrewritten to rewrite everything else and keep these as they are (then fix them by hand, e.g. with sqlite3)",
            ));
        }
        plan.accepted_unrewritten = !plan.unrewritten.is_empty();
        let info = db::read_info(conn, path)?;
        if info.datahub != plan.to.datahub || info.connector != plan.to.connector {
            return Err(Error::db(
                path,
                format!(
                    "after the rewrite the database names datahub {} and connector {}, not the new ids",
                    info.datahub, info.connector
                ),
                "nothing was changed; the id in Integrations is spelled in a way hubvault does not rewrite (see above), or this is a bug",
            ));
        }
        Ok(())
    }
}

/// The proof, before anything is committed. The `UPDATE`s read every writable column of
/// the tables they write; a column that had no old id then has none now (same
/// transaction, no other writer, triggers and foreign-key actions off). So what is read
/// again is what they wrote (the changed columns, with the generated and hidden columns
/// of those tables), the copies that full-text indexes keep of their text, and every
/// other shadow table. No rewritable spelling may be left; spellings that are never
/// rewritten join `unrewritten` where they are not already listed.
fn verify_written(
    conn: &Connection,
    path: &Path,
    f: &IdFunctions<'_>,
    all: &[Table],
    changed: &BTreeSet<String>,
    plan: &mut RewritePlan,
) -> Result<()> {
    let mut left = Vec::new();
    for t in all {
        let cols: Vec<&str> = match &t.kind {
            TableKind::Shadow(Some(owner))
                if vtab::is_fts_index_shadow(owner, &t.name)
                    && all.iter().any(|o| {
                        &o.name == owner && matches!(&o.kind, TableKind::Virtual(tr) if tr.is_fts())
                    }) =>
            {
                continue;
            }
            TableKind::Shadow(_) => t.all.iter().map(String::as_str).collect(),
            _ if t.is_written() && changed.contains(&t.name.to_ascii_lowercase()) => t
                .all
                .iter()
                .filter(|c| {
                    !t.writable.contains(c)
                        || plan
                            .changes
                            .iter()
                            .any(|x| x.table == t.name && &x.column == *c)
                })
                .map(String::as_str)
                .collect(),
            _ => continue,
        };
        if cols.is_empty() {
            continue;
        }
        let counts = pass(conn, path, f, &t.name, &cols, &[], false)?;
        for (c, n) in cols.iter().zip(&counts) {
            if n.rewritable > 0 {
                left.push(format!("{}.{} ({})", t.name, c, n.rewritable));
            }
            for (reason, values) in [
                (Reason::MixedCase, n.mixed_case),
                (Reason::RawBytes, n.raw_bytes),
            ] {
                let listed = plan
                    .unrewritten
                    .iter()
                    .any(|u| u.table == t.name && u.column == *c && u.reason == reason);
                if values > 0 && !listed {
                    plan.unrewritten.push(Unrewritten {
                        table: t.name.clone(),
                        column: c.to_string(),
                        reason,
                        values,
                        rows: rows_with(conn, path, f, t, c, reason)?,
                    });
                }
            }
        }
    }
    if !left.is_empty() {
        return Err(Error::db(
            path,
            format!(
                "old ids are still found after the rewrite: {}",
                left.join(", ")
            ),
            "nothing was changed; these values cannot be rewritten by hubvault (e.g. a virtual table whose module does not store what it is given): fix them by hand and run it again",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{ConnectorId, DatahubId};

    fn new_ids() -> Ids {
        Ids {
            datahub: DatahubId::random(),
            connector: ConnectorId::random(),
        }
    }

    fn names(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT name FROM sqlite_schema ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn stored_view_sql_with_a_second_statement_is_refused_and_never_run() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(a); CREATE VIEW v AS SELECT a FROM t;")
            .unwrap();
        let path = Path::new("test.db");
        let before = schema_rows(&conn, path).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        let redo = [Redo {
            kind: Creates::View,
            name: "v".into(),
            sql: "CREATE VIEW v AS SELECT a FROM t; CREATE TABLE pwned(x)".into(),
        }];
        let e = recreate(&tx, path, &before, &redo).unwrap_err();
        assert!(e.to_string().contains("more than one statement"), "{e}");
        drop(tx);
        assert_eq!(names(&conn), ["t", "v"]);
    }

    #[test]
    fn stored_sql_is_refused_unless_it_creates_exactly_its_own_object() {
        let m = Matcher::new(&[uuid::Uuid::new_v4()], Some(&[uuid::Uuid::new_v4()]));
        for (kind, sql) in [
            (Creates::View, "CREATE VIEW other AS SELECT 1"),
            (Creates::View, "CREATE TEMP VIEW v AS SELECT 1"),
            (
                Creates::View,
                "CREATE TRIGGER v AFTER INSERT ON t BEGIN SELECT 1; END",
            ),
            (
                Creates::View,
                "CREATE VIEW v AS SELECT 1\0; CREATE TABLE pwned(x)",
            ),
            (Creates::Trigger, "CREATE TABLE v(a)"),
        ] {
            assert!(recreatable(&m, kind, "v", sql.as_bytes()).is_err(), "{sql}");
        }
        assert!(recreatable(&m, Creates::View, "V", b"CREATE VIEW v AS SELECT 1").is_ok());
    }

    #[test]
    fn blob_literals_are_decoded_in_either_case_and_malformed_ones_skipped() {
        assert_eq!(blob_literals("x'41'"), vec![b"A".to_vec()]);
        assert_eq!(
            blob_literals("(CAST(X'4142' AS TEXT)) || x'4' || x'4g'"),
            vec![b"AB".to_vec()]
        );
        assert_eq!(blob_literals("'x'"), Vec::<Vec<u8>>::new());
        assert_eq!(blob_literals("x''"), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn swapped_or_equal_new_ids_are_refused() {
        let from = new_ids();
        let swapped = Ids {
            datahub: DatahubId::parse(&from.connector.to_string()).unwrap(),
            connector: ConnectorId::random(),
        };
        assert_eq!(check_ids(from, swapped).unwrap_err().exit_code(), 2);
        let same = Ids {
            datahub: from.datahub,
            connector: ConnectorId::parse(&from.datahub.to_string()).unwrap(),
        };
        assert_eq!(check_ids(from, same).unwrap_err().exit_code(), 2);
        assert!(check_ids(from, from).is_ok());
    }
}
