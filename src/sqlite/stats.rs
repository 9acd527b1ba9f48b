//! The planner's samples after an id rewrite.
//!
//! `ANALYZE` in a SQLite built with STAT4 (hubvault's own, and any a connector may use)
//! keeps in `sqlite_stat4` some whole keys of each index, as records: in a connector's
//! database the hub id, first column of `UNIQUE(integration, externalId, eventType)`.
//! (`sqlite_stat3`, from older builds, keeps samples too; `sqlite_stat1` only counts.)
//! The rewrite's tables leave the `sqlite_*` tables alone, so these samples kept the old
//! ids, and the final scan, which reads the tables, did not see them.
//!
//! They are derived data. The samples of an index that names an old id are computed
//! again from the rewritten index by `ANALYZE` of that index, inside the rewrite's
//! transaction; a sample that still names one (an index that is gone, a spelling the
//! rewrite leaves as it is) is deleted, and the planner goes by `sqlite_stat1` for it.
//! The final scan then counts the samples that name an old id: none may be left.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::error::{Error, Result};
use crate::sqlite::db::{self, quote_ident};
use crate::sqlite::spelling::{Kind, Matcher};

/// The tables of samples, newest first.
const SAMPLED: [&str; 2] = ["sqlite_stat4", "sqlite_stat3"];

/// `(rowid, index)` of each sample of `table` in which `m` finds an old id.
fn naming(conn: &Connection, path: &Path, table: &str, m: &Matcher) -> Result<Vec<(i64, String)>> {
    let q = |e| Error::sqlite(path, &format!("cannot read {table}"), e);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT rowid, idx, sample FROM main.{}",
            quote_ident(table)
        ))
        .map_err(q)?;
    let mut rows = stmt.query([]).map_err(q)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(q)? {
        let bytes = match r.get_ref(2).map_err(q)? {
            ValueRef::Blob(b) | ValueRef::Text(b) => b,
            _ => continue,
        };
        if m.is_match(Kind::Blob, bytes) {
            let idx = match r.get_ref(1).map_err(q)? {
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                _ => String::new(),
            };
            out.push((r.get(0).map_err(q)?, idx));
        }
    }
    Ok(out)
}

fn sampled(conn: &Connection, path: &Path) -> Result<Vec<&'static str>> {
    let mut out = Vec::new();
    for t in SAMPLED {
        if db::table_exists(conn, t)
            .map_err(|e| Error::sqlite(path, "cannot read the schema", e))?
        {
            out.push(t);
        }
    }
    Ok(out)
}

/// Inside the rewrite's transaction, after the tables and indexes were rewritten: the
/// samples that name an old id computed again (`ANALYZE` of their index) or deleted.
/// Returns the indexes analyzed again.
pub fn refresh_samples(conn: &Connection, path: &Path, m: &Matcher) -> Result<Vec<String>> {
    let tables = sampled(conn, path)?;
    let mut analyzed = Vec::new();
    for table in &tables {
        let stale: BTreeSet<String> = naming(conn, path, table, m)?
            .into_iter()
            .map(|(_, idx)| idx)
            .collect();
        for idx in stale {
            if *table != "sqlite_stat4" || analyzed.contains(&idx) {
                continue;
            }
            // A WITHOUT ROWID table's primary key is sampled under the table's name.
            let is_index = conn
                .query_row(
                    "SELECT 1 FROM sqlite_schema WHERE type IN ('index', 'table') AND name = ?1",
                    [&idx],
                    |_| Ok(()),
                )
                .map(|_| true)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(false),
                    e => Err(e),
                })
                .map_err(|e| Error::sqlite(path, "cannot read the schema", e))?;
            if is_index {
                // Schema-qualified: a bare name could be read as a table or collation.
                conn.execute_batch(&format!("ANALYZE main.{}", quote_ident(&idx)))
                    .map_err(|e| {
                        Error::sqlite(path, &format!("cannot analyze index {idx} again"), e)
                    })?;
                analyzed.push(idx);
            }
        }
    }
    for table in &tables {
        for (rowid, idx) in naming(conn, path, table, m)? {
            tracing::debug!("rewrite: a sample of {idx} in {table} still names an old id: deleted");
            conn.execute(
                &format!("DELETE FROM main.{} WHERE rowid = ?1", quote_ident(table)),
                [rowid],
            )
            .map_err(|e| Error::sqlite(path, &format!("cannot delete from {table}"), e))?;
        }
    }
    Ok(analyzed)
}

/// The samples that name an old id, for the final scan: `table (count)` each.
pub fn samples_naming(conn: &Connection, path: &Path, m: &Matcher) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for table in sampled(conn, path)? {
        let n = naming(conn, path, table, m)?.len();
        if n > 0 {
            out.push(format!("{table}.sample ({n})"));
        }
    }
    Ok(out)
}
