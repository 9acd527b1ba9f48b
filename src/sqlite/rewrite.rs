//! Rewriting a connector's datahub id and connector id everywhere inside its database:
//! steps 5 to 10 of the platform's manual restore, done so that they cannot leave a broken database.
//!
//! Contract of [`apply`]:
//! - every occurrence of the old ids, in every TEXT value (and every BLOB value holding
//!   them as text) of every table, becomes the new id: `Integrations.id`, the source
//!   objects in `Integrations.sources` and `Events.source`, `Events.integration`, and
//!   whatever else holds them (JSON values and keys, paths, tables we have never seen);
//! - it is a byte-exact string replace, so every other byte stays as it was: other JSON
//!   fields, their order and spacing, row ids, other rows, other tables, value types;
//! - all of it happens in one transaction, with foreign-key enforcement off only around
//!   it (`PRAGMA foreign_keys` cannot change inside a transaction) and triggers disabled
//!   (an `UPDATE` trigger touching `updatedAt` would change what must stay);
//! - before the commit, a case-insensitive scan of every column of every table and of the
//!   schema finds no old id, `PRAGMA foreign_key_check` is empty and `integrity_check`
//!   (`quick_check` past [`db::FULL_CHECK_MAX_BYTES`]) says ok; otherwise the transaction
//!   is rolled back and nothing changed;
//! - it is idempotent: with old ids equal to new ids there is nothing to do.
//!
//! Both lowercase and uppercase spellings of an id are rewritten (to the same spelling of
//! the new id). A mixed-case spelling cannot be rewritten by a byte replace; [`plan`]
//! finds it and [`apply`] refuses before changing anything. Ids written without hyphens
//! are not looked for: the platform writes the canonical form.
//!
//! Views hold no data and are not updated; a view or trigger whose SQL names an old id is
//! dropped and created again with the id rewritten in its text. A table or index whose
//! SQL names an old id (a `DEFAULT`, a `CHECK`, a partial index) is refused: rewriting it
//! would need `writable_schema`. Generated columns follow their base columns. Virtual
//! tables are updated through their module, their shadow tables only scanned.

use std::path::Path;

use rusqlite::Connection;
use rusqlite::config::DbConfig;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::ids::Ids;
use crate::sqlite::db::{self, quote_ident};

/// How many values of one column change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnChange {
    pub table: String,
    pub column: String,
    pub values: u64,
}

/// What a rewrite changes (from [`plan`]) or changed (from [`apply`]).
#[derive(Clone, Debug, Serialize)]
pub struct RewritePlan {
    pub from: Ids,
    pub to: Ids,
    /// Columns with at least one value to rewrite, in schema order.
    pub changes: Vec<ColumnChange>,
    /// Views and triggers whose SQL names an old id: created again with it rewritten.
    pub schema_objects: Vec<String>,
    /// Tables that are not updated directly, and why (shadow tables of virtual tables).
    pub scanned_only: Vec<String>,
    /// Old ids in spellings a byte replace cannot rewrite (mixed case), or in the SQL of
    /// a table or index. Non-empty means [`apply`] refuses.
    pub blockers: Vec<String>,
}

impl RewritePlan {
    /// Total values that change.
    pub fn total_values(&self) -> u64 {
        self.changes.iter().map(|c| c.values).sum()
    }

    /// True if and only if the rewrite changes nothing.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty() && self.schema_objects.is_empty()
    }
}

/// An old id found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Found {
    /// `table.column`, or `schema:<name>` for SQL in `sqlite_schema`.
    pub place: String,
    pub values: u64,
}

/// Refuses id pairs that a chain of string replaces would mangle: a new id equal to
/// another old id (the second replace would rewrite the first's output), or two equal
/// new ids (the two could never be told apart again).
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

/// The (old, new) strings to replace: lowercase and uppercase of each id that changes.
fn pairs(from: Ids, to: Ids) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |a: String, b: String| {
        if a != b {
            out.push((a.to_uppercase(), b.to_uppercase()));
            out.push((a, b));
        }
    };
    add(from.datahub.to_string(), to.datahub.to_string());
    add(from.connector.to_string(), to.connector.to_string());
    out
}

/// The old ids to look for (lowercase), of those that change.
fn old_ids(from: Ids, to: Ids) -> Vec<String> {
    let mut v = Vec::new();
    if from.datahub != to.datahub {
        v.push(from.datahub.to_string());
    }
    if from.connector != to.connector {
        v.push(from.connector.to_string());
    }
    v
}

/// A SQL string literal. Only ever given UUID text, but quoted properly anyway.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// True (1) if the value contains one of the exact spellings.
fn exact_match(col: &str, pairs: &[(String, String)]) -> String {
    let terms: Vec<String> = pairs
        .iter()
        .map(|(a, _)| format!("instr({col}, {})", lit(a)))
        .collect();
    format!("({})", terms.join(" OR "))
}

/// True (1) if the value contains an old id in any case. `LIKE` is ASCII
/// case-insensitive (hex digits are ASCII) and the fastest test SQLite has for this (see
/// docs/BENCHMARKS.md); for a BLOB, whose bytes `LIKE` would stop reading at the first
/// NUL, `lower()` then `instr()`, which keep every byte. (A TEXT value with an embedded
/// NUL before the id would escape `LIKE`; SQLite text is not meant to hold NULs.)
fn any_case_match(col: &str, old: &[String]) -> String {
    let like: Vec<String> = old
        .iter()
        .map(|a| format!("{col} LIKE {}", lit(&format!("%{a}%"))))
        .collect();
    let blob: Vec<String> = old
        .iter()
        .map(|a| format!("instr(lower({col}), {})", lit(a)))
        .collect();
    format!(
        "iif(typeof({col}) = 'blob', {}, {})",
        blob.join(" OR "),
        like.join(" OR ")
    )
}

/// The value with every exact spelling replaced; values that are not TEXT or BLOB are
/// returned as they are, and a BLOB stays a BLOB (`replace()` returns TEXT).
fn replaced(col: &str, pairs: &[(String, String)]) -> String {
    let mut e = col.to_string();
    for (a, b) in pairs {
        e = format!("replace({e}, {}, {})", lit(a), lit(b));
    }
    format!(
        "CASE typeof({col}) WHEN 'text' THEN {e} WHEN 'blob' THEN CAST({e} AS BLOB) ELSE {col} END"
    )
}

#[derive(Debug, Clone)]
struct Table {
    name: String,
    kind: TableKind,
    /// Columns that can be written (not generated, not hidden).
    writable: Vec<String>,
    /// Every column, generated and hidden ones included: what the scan reads.
    all: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableKind {
    Ordinary,
    Virtual,
    Shadow,
}

fn tables(conn: &Connection, path: &Path) -> Result<Vec<Table>> {
    let q = |e| Error::sqlite(path, "cannot read the schema", e);
    let listed: Vec<(String, String)> = conn
        .prepare(
            "SELECT t.name, t.type FROM pragma_table_list AS t
             LEFT JOIN sqlite_schema AS s ON s.name = t.name AND s.type = 'table'
             WHERE t.schema = 'main' AND t.type IN ('table', 'virtual', 'shadow')
               AND t.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
             ORDER BY s.rowid",
        )
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(q)?;
    let mut out = Vec::new();
    for (name, kind) in listed {
        let kind = match kind.as_str() {
            "virtual" => TableKind::Virtual,
            "shadow" => TableKind::Shadow,
            _ => TableKind::Ordinary,
        };
        let cols: Vec<(String, i64)> = conn
            .prepare("SELECT name, hidden FROM pragma_table_xinfo(?1) ORDER BY cid")
            .and_then(|mut s| {
                s.query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(q)?;
        out.push(Table {
            writable: cols
                .iter()
                .filter(|(_, h)| *h == 0)
                .map(|(c, _)| c.clone())
                .collect(),
            all: cols.into_iter().map(|(c, _)| c).collect(),
            name,
            kind,
        });
    }
    Ok(out)
}

/// Schema objects (name, type, sql) whose SQL names an old id in any case.
fn schema_hits(
    conn: &Connection,
    path: &Path,
    old: &[String],
) -> Result<Vec<(String, String, String)>> {
    if old.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT name, type, sql FROM sqlite_schema WHERE sql IS NOT NULL AND {} ORDER BY rowid",
        any_case_match("sql", old)
    );
    conn.prepare(&sql)
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(|e| Error::sqlite(path, "cannot read the schema", e))
}

/// What a rewrite from `from` to `to` would change; changes nothing. Also finds what
/// [`apply`] would refuse (`blockers`): mixed-case spellings, ids in table SQL.
pub fn plan(conn: &Connection, path: &Path, from: Ids, to: Ids) -> Result<RewritePlan> {
    make_plan(conn, path, from, to, true)
}

/// With `find_mixed_case`, every column is also tested for the exact spellings, to tell
/// mixed-case values apart (for `--dry-run`). [`apply`] skips that (it costs a second
/// test per value) and lets its final scan find them instead.
fn make_plan(
    conn: &Connection,
    path: &Path,
    from: Ids,
    to: Ids,
    find_mixed_case: bool,
) -> Result<RewritePlan> {
    check_ids(from, to)?;
    let pairs = pairs(from, to);
    let old = old_ids(from, to);
    let mut plan = RewritePlan {
        from,
        to,
        changes: Vec::new(),
        schema_objects: Vec::new(),
        scanned_only: Vec::new(),
        blockers: Vec::new(),
    };
    if old.is_empty() {
        return Ok(plan);
    }
    for t in tables(conn, path)? {
        if t.kind == TableKind::Shadow {
            plan.scanned_only
                .push(format!("{} (shadow table of a virtual table)", t.name));
            continue;
        }
        if t.writable.is_empty() {
            continue;
        }
        // One pass over the table: per column, values with an old id in any spelling,
        // and (if asked) of those, values with a spelling we rewrite.
        let per_col = if find_mixed_case { 2 } else { 1 };
        let mut exprs = Vec::new();
        for c in &t.writable {
            let qc = quote_ident(c);
            let any = any_case_match(&qc, &old);
            exprs.push(format!("coalesce(sum({any}), 0)"));
            if find_mixed_case {
                exprs.push(format!(
                    "coalesce(sum(CASE WHEN {any} THEN {} ELSE 0 END), 0)",
                    exact_match(&qc, &pairs)
                ));
            }
        }
        let sql = format!("SELECT {} FROM {}", exprs.join(", "), quote_ident(&t.name));
        let counts: Vec<i64> = conn
            .query_row(&sql, [], |r| (0..exprs.len()).map(|i| r.get(i)).collect())
            .map_err(|e| scan_error(path, &t.name, e))?;
        for (i, c) in t.writable.iter().enumerate() {
            let any = counts[per_col * i] as u64;
            let exact = if find_mixed_case {
                counts[per_col * i + 1] as u64
            } else {
                any
            };
            if exact > 0 {
                plan.changes.push(ColumnChange {
                    table: t.name.clone(),
                    column: c.clone(),
                    values: exact,
                });
            }
            if any > exact {
                plan.blockers.push(format!(
                    "{}.{}: {} value(s) spell an old id in mixed case",
                    t.name,
                    c,
                    any - exact
                ));
            }
        }
    }
    for (name, kind, _) in schema_hits(conn, path, &old)? {
        match kind.as_str() {
            "view" | "trigger" => plan.schema_objects.push(format!("{kind} {name}")),
            _ => plan
                .blockers
                .push(format!("the SQL of {kind} {name} names an old id")),
        }
    }
    Ok(plan)
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

/// Where an old id (any case) is still found: every column of every table, generated,
/// hidden and shadow ones included, and the SQL of the schema. Empty means none.
pub fn scan(conn: &Connection, path: &Path, old: &[String]) -> Result<Vec<Found>> {
    scan_where(conn, path, old, None)
}

/// [`scan`], limited (when `only` is given) to these columns, plus every generated or
/// hidden column of their tables and every shadow table.
fn scan_where(
    conn: &Connection,
    path: &Path,
    old: &[String],
    only: Option<&[ColumnChange]>,
) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    if old.is_empty() {
        return Ok(found);
    }
    for t in tables(conn, path)? {
        let cols: Vec<&String> = match only {
            None => t.all.iter().collect(),
            Some(_) if t.kind == TableKind::Shadow => t.all.iter().collect(),
            Some(changed) => t
                .all
                .iter()
                .filter(|c| {
                    let touched = changed.iter().any(|x| x.table == t.name);
                    let derived = !t.writable.contains(c);
                    changed.iter().any(|x| x.table == t.name && &x.column == *c)
                        || (touched && derived)
                })
                .collect(),
        };
        if cols.is_empty() {
            continue;
        }
        let exprs: Vec<String> = cols
            .iter()
            .map(|c| format!("coalesce(sum({}), 0)", any_case_match(&quote_ident(c), old)))
            .collect();
        let sql = format!("SELECT {} FROM {}", exprs.join(", "), quote_ident(&t.name));
        let counts: Vec<i64> = conn
            .query_row(&sql, [], |r| (0..exprs.len()).map(|i| r.get(i)).collect())
            .map_err(|e| scan_error(path, &t.name, e))?;
        for (c, n) in cols.iter().zip(counts) {
            if n > 0 {
                found.push(Found {
                    place: format!("{}.{}", t.name, c),
                    values: n as u64,
                });
            }
        }
    }
    for (name, kind, _) in schema_hits(conn, path, old)? {
        found.push(Found {
            place: format!("schema:{kind} {name}"),
            values: 1,
        });
    }
    Ok(found)
}

/// Scans `conn` for the given ids (lowercase canonical strings), any case.
pub fn scan_ids(conn: &Connection, path: &Path, ids: &[String]) -> Result<Vec<Found>> {
    let lower: Vec<String> = ids.iter().map(|s| s.to_lowercase()).collect();
    scan(conn, path, &lower)
}

/// Rewrites `from` to `to` in the database, as the module's contract says, and returns
/// what changed. On any error nothing changed.
pub fn apply(conn: &mut Connection, path: &Path, from: Ids, to: Ids) -> Result<RewritePlan> {
    let t0 = std::time::Instant::now();
    let plan = make_plan(conn, path, from, to, false)?;
    tracing::debug!("rewrite: plan scan took {:?}", t0.elapsed());
    if !plan.blockers.is_empty() {
        return Err(Error::db(
            path,
            format!(
                "the old ids cannot all be rewritten: {}",
                plan.blockers.join("; ")
            ),
            "nothing was changed; fix these values by hand (e.g. with sqlite3) and run the command again",
        ));
    }
    if plan.is_noop() {
        return Ok(plan);
    }
    let q = |what: &'static str| move |e| Error::sqlite(path, what, e);
    let fk_was_on: bool = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .map_err(q("cannot read PRAGMA foreign_keys"))?;
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(q("cannot switch foreign keys off"))?;
    let triggers_were_on = conn
        .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .map_err(q("cannot disable triggers"))?;
    let result = rewrite_in_transaction(conn, path, &plan);
    // Put the connection back as it was, whatever happened.
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, triggers_were_on);
    let restored = conn.pragma_update(None, "foreign_keys", fk_was_on);
    result?;
    restored.map_err(q("cannot switch foreign keys back on"))?;
    Ok(plan)
}

fn rewrite_in_transaction(conn: &mut Connection, path: &Path, plan: &RewritePlan) -> Result<()> {
    let pairs = pairs(plan.from, plan.to);
    let old = old_ids(plan.from, plan.to);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| Error::sqlite(path, "cannot begin the rewrite transaction", e))?;
    let q = |what: String| move |e| Error::sqlite(path, &what, e);

    // Views and triggers that name an old id: drop, then create again rewritten. Dropping
    // a view drops the INSTEAD OF triggers on it, so when a view is rewritten every
    // trigger is recreated too, in the original order.
    let hits = schema_hits(&tx, path, &old)?;
    if !hits.is_empty() {
        let any_view = hits.iter().any(|(_, k, _)| k == "view");
        let objects: Vec<(String, String, String)> = tx
            .prepare("SELECT name, type, sql FROM sqlite_schema WHERE type IN ('view','trigger') AND sql IS NOT NULL ORDER BY rowid")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .map_err(q("cannot read the schema".into()))?;
        let redo: Vec<&(String, String, String)> = objects
            .iter()
            .filter(|(n, k, _)| {
                (any_view && k == "trigger") || hits.iter().any(|(hn, hk, _)| hn == n && hk == k)
            })
            .collect();
        for (name, kind, _) in redo.iter().filter(|(_, k, _)| k == "trigger") {
            tx.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote_ident(name)))
                .map_err(q(format!("cannot drop {kind} {name}")))?;
        }
        for (name, kind, _) in redo.iter().filter(|(_, k, _)| k == "view") {
            tx.execute_batch(&format!("DROP VIEW IF EXISTS {}", quote_ident(name)))
                .map_err(q(format!("cannot drop {kind} {name}")))?;
        }
        for kind in ["view", "trigger"] {
            for (name, k, sql) in redo.iter().filter(|(_, k, _)| k == kind) {
                let mut new_sql = sql.clone();
                for (a, b) in &pairs {
                    new_sql = new_sql.replace(a.as_str(), b);
                }
                tx.execute_batch(&new_sql)
                    .map_err(q(format!("cannot create {k} {name} again")))?;
            }
        }
    }

    // One UPDATE per table: a row holding ids in several columns is written once.
    let mut by_table: Vec<(&str, Vec<&str>)> = Vec::new();
    for c in &plan.changes {
        match by_table.last_mut() {
            Some((t, cols)) if *t == c.table => cols.push(&c.column),
            _ => by_table.push((&c.table, vec![&c.column])),
        }
    }
    for (table, cols) in by_table {
        // Setting a column to itself on a row where only another column matched
        // writes the same bytes: harmless, and one pass.
        let sets: Vec<String> = cols
            .iter()
            .map(|c| {
                let qc = quote_ident(c);
                format!("{qc} = {}", replaced(&qc, &pairs))
            })
            .collect();
        let wheres: Vec<String> = cols
            .iter()
            .map(|c| any_case_match(&quote_ident(c), &old))
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            quote_ident(table),
            sets.join(", "),
            wheres.join(" OR ")
        );
        let t0 = std::time::Instant::now();
        tx.execute(&sql, [])
            .map_err(q(format!("cannot rewrite table {table}")))?;
        tracing::debug!("rewrite: UPDATE {table} took {:?}", t0.elapsed());
    }

    // The proof, before anything is committed. The plan's scan read every column; one
    // that had no old id then has none now (same transaction, no other writer, triggers
    // and foreign-key actions off), so only what the UPDATEs wrote is read again, with
    // the generated columns of those tables and every shadow table.
    let t0 = std::time::Instant::now();
    let left = scan_where(&tx, path, &old, Some(&plan.changes))?;
    tracing::debug!("rewrite: final scan took {:?}", t0.elapsed());
    if !left.is_empty() {
        let places: Vec<String> = left
            .iter()
            .map(|f| format!("{} ({})", f.place, f.values))
            .collect();
        return Err(Error::db(
            path,
            format!(
                "old ids are still found after the rewrite: {}",
                places.join(", ")
            ),
            "nothing was changed; these values spell an old id in mixed case, or cannot be rewritten by hubvault (e.g. a virtual table without UPDATE): fix them by hand and run it again",
        ));
    }
    let info = db::read_info(&tx, path)?;
    if info.datahub != plan.to.datahub || info.connector != plan.to.connector {
        return Err(Error::db(
            path,
            format!(
                "after the rewrite the database names datahub {} and connector {}, not the new ids",
                info.datahub, info.connector
            ),
            "nothing was changed; report this as a bug",
        ));
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let t0 = std::time::Instant::now();
    let checked = db::check_integrity(&tx, path, size);
    tracing::debug!("rewrite: integrity checks took {:?}", t0.elapsed());
    checked.map_err(|e| match e {
        Error::Database { message, source, .. } => Error::Database {
            path: path.to_path_buf(),
            message: format!("after the rewrite: {message}"),
            hint: "nothing was changed; check the database with `sqlite3 FILE 'PRAGMA integrity_check; PRAGMA foreign_key_check'`".into(),
            source,
        },
        other => other,
    })?;
    let t0 = std::time::Instant::now();
    let committed = tx
        .commit()
        .map_err(|e| Error::sqlite(path, "cannot commit the rewrite", e));
    tracing::debug!("rewrite: commit took {:?}", t0.elapsed());
    committed
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
