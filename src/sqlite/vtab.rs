//! Virtual tables in an id rewrite: which ones hold data of their own, and how each kind
//! is brought in line after the ordinary tables are rewritten.
//!
//! Full-text indexes (FTS3/4/5) come in three shapes, told apart by their `content`
//! option (read from their `CREATE VIRTUAL TABLE` text, never by running it):
//! - own content (no option): the module keeps a copy of the text; it is rewritten
//!   through the module (`UPDATE`), then the index is rebuilt so that no token of an old
//!   id survives in an old segment;
//! - external content (`content=T`): the index covers table `T`; writing through the
//!   module would delete tokens read from the already rewritten `T` and corrupt it, so
//!   it is never written: once `T` is rewritten the index is rebuilt from it;
//! - contentless (`content=''`): only the index exists, it cannot be read back or
//!   rewritten; the index is searched for the old ids ([`index_hits`]) and the rows
//!   that still hold one are reported.
//!
//! Rebuilt indexes then pass the module's own `integrity-check`. `fts5vocab`/`fts4aux`
//! tables are read-only views of an index and follow it. Other modules (R*Tree, …) are
//! written through the module like a table, and their shadow tables are scanned.

use rusqlite::Connection;

use crate::sqlite::db::quote_ident;
use crate::sqlite::spelling::{Kind, Matcher};
use crate::sqlite::sqltext;

/// How a rewrite treats one virtual table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// FTS keeping its own copy: updated through the module, then rebuilt.
    FtsOwnContent { module: String },
    /// FTS over the table `content`: rebuilt once that table changed; never written.
    FtsExternal { module: String, content: String },
    /// FTS without content: searched for old ids, which are reported.
    FtsContentless { module: String },
    /// A read-only view of an FTS index (`fts5vocab`, `fts4aux`): left alone.
    FtsView,
    /// Any other module: updated through the module; its shadow tables are scanned.
    Other { module: String },
}

impl Treatment {
    /// How to treat the virtual table created by `sql`.
    pub fn of(sql: &str) -> Treatment {
        let Some((module, args)) = sqltext::virtual_table(sql) else {
            return Treatment::Other {
                module: String::new(),
            };
        };
        let m = module.to_ascii_lowercase();
        match m.as_str() {
            "fts3" | "fts4" | "fts5" => match sqltext::option(&args, "content") {
                None => Treatment::FtsOwnContent { module: m },
                Some(c) if c.is_empty() => Treatment::FtsContentless { module: m },
                Some(content) => Treatment::FtsExternal { module: m, content },
            },
            "fts5vocab" | "fts4aux" => Treatment::FtsView,
            _ => Treatment::Other { module: m },
        }
    }

    /// True if and only if this is a full-text index.
    pub fn is_fts(&self) -> bool {
        !matches!(self, Treatment::Other { .. })
    }

    /// True if and only if the rewrite writes its columns through the module.
    pub fn is_written(&self) -> bool {
        matches!(
            self,
            Treatment::FtsOwnContent { .. } | Treatment::Other { .. }
        )
    }

    fn module(&self) -> &str {
        match self {
            Treatment::FtsOwnContent { module }
            | Treatment::FtsExternal { module, .. }
            | Treatment::FtsContentless { module }
            | Treatment::Other { module } => module,
            Treatment::FtsView => "",
        }
    }
}

/// True if and only if the shadow table `shadow` holds the index structure of the FTS
/// table `fts` (segments, terms, sizes, config), not a copy of its text: a token of an
/// id there is the index's business, checked by the module's integrity check.
pub fn is_fts_index_shadow(fts: &str, shadow: &str) -> bool {
    // SQLite's rule: a shadow table is `<virtual table>_<suffix>`, split at the last `_`.
    let Some((owner, suffix)) = shadow.rsplit_once('_') else {
        return false;
    };
    owner.eq_ignore_ascii_case(fts) && !suffix.eq_ignore_ascii_case("content")
}

/// `INSERT INTO t(t) VALUES('rebuild')`: the index built again from its content.
pub fn rebuild(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    let q = quote_ident(table);
    conn.execute(&format!("INSERT INTO {q}({q}) VALUES('rebuild')"), [])
        .map(|_| ())
}

/// The module's own integrity check (for FTS5 with external content, also against the
/// content table).
pub fn integrity_check(conn: &Connection, table: &str, t: &Treatment) -> rusqlite::Result<()> {
    let q = quote_ident(table);
    let sql = if t.module() == "fts5" && matches!(t, Treatment::FtsExternal { .. }) {
        format!("INSERT INTO {q}({q}, rank) VALUES('integrity-check', 1)")
    } else {
        format!("INSERT INTO {q}({q}) VALUES('integrity-check')")
    };
    conn.execute(&sql, []).map(|_| ())
}

/// Rowids of the rows of a full-text index (read from the index, not from its content)
/// that hold one of `ids`. Two searches, as no single one sees through every tokenizer:
/// each text spelling as a phrase query (the tokenizer splits it as it split the text:
/// finds ids between separators, and substrings under the trigram tokenizer), and for
/// FTS5 the index's own token sequence (`fts5vocab`, `instance`) read back per row and
/// column, joined with `-` and searched with [`Matcher`] (finds an id glued to other
/// characters, `x6f1c…01y`, which a phrase query misses).
pub fn index_hits(
    conn: &Connection,
    table: &str,
    t: &Treatment,
    ids: &[uuid::Uuid],
) -> rusqlite::Result<Vec<i64>> {
    let q = quote_ident(table);
    let mut rows = Vec::new();
    {
        let mut stmt = conn.prepare(&format!("SELECT rowid FROM {q} WHERE {q} MATCH ?1"))?;
        for id in ids {
            let (h, s) = (id.hyphenated().to_string(), id.simple().to_string());
            for spelling in [h.to_uppercase(), s.to_uppercase(), h, s] {
                let found: rusqlite::Result<Vec<i64>> = stmt
                    .query_map([format!("\"{spelling}\"")], |r| r.get::<_, i64>(0))
                    .and_then(|it| it.collect());
                match found {
                    Ok(r) => rows.extend(r),
                    // FTS5 with `detail=none|column` has no phrase queries; the token
                    // sequence below still covers it.
                    Err(_) if t.module() == "fts5" => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if t.module() == "fts5" {
        rows.extend(token_sequence_hits(conn, table, ids)?);
    }
    rows.sort_unstable();
    rows.dedup();
    Ok(rows)
}

/// FTS5: rows whose tokens, in order, spell an id when joined with `-`.
fn token_sequence_hits(
    conn: &Connection,
    table: &str,
    ids: &[uuid::Uuid],
) -> rusqlite::Result<Vec<i64>> {
    const VOCAB: &str = "temp.hubvault_vocab";
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {VOCAB}; CREATE VIRTUAL TABLE {VOCAB} USING fts5vocab(main, {}, 'instance');",
        crate::sqlite::db::quote_literal(table)
    ))?;
    let m = Matcher::new(ids, None);
    let result = (|| {
        let mut stmt = conn.prepare(&format!(
            "SELECT doc, col, term FROM {VOCAB} ORDER BY doc, col, offset"
        ))?;
        let mut rows = stmt.query([])?;
        let mut hits = Vec::new();
        let mut cur: Option<(i64, String)> = None;
        let mut text = Vec::new();
        let flush = |cur: &Option<(i64, String)>, text: &mut Vec<u8>, hits: &mut Vec<i64>| {
            if let Some((doc, _)) = cur
                && m.is_match(Kind::Utf8Text, text)
            {
                hits.push(*doc);
            }
            text.clear();
        };
        while let Some(r) = rows.next()? {
            let key: (i64, String) = (
                r.get(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            );
            if cur.as_ref() != Some(&key) {
                flush(&cur, &mut text, &mut hits);
                cur = Some(key);
            } else {
                text.push(b'-');
            }
            text.extend_from_slice(r.get_ref(2)?.as_bytes()?);
        }
        flush(&cur, &mut text, &mut hits);
        Ok(hits)
    })();
    let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {VOCAB}"));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_tables_are_told_apart_by_their_content_option() {
        assert_eq!(
            Treatment::of("CREATE VIRTUAL TABLE f USING fts5(a, b)"),
            Treatment::FtsOwnContent {
                module: "fts5".into()
            }
        );
        assert_eq!(
            Treatment::of(
                "CREATE VIRTUAL TABLE f USING FTS5(a, content=\"Events\", content_rowid=id)"
            ),
            Treatment::FtsExternal {
                module: "fts5".into(),
                content: "Events".into()
            }
        );
        assert_eq!(
            Treatment::of("CREATE VIRTUAL TABLE f USING fts4(a, content='')"),
            Treatment::FtsContentless {
                module: "fts4".into()
            }
        );
        assert_eq!(
            Treatment::of("CREATE VIRTUAL TABLE v USING fts5vocab(f, 'row')"),
            Treatment::FtsView
        );
        assert!(!Treatment::of("CREATE VIRTUAL TABLE r USING rtree(id, a, b)").is_fts());
        assert!(is_fts_index_shadow("f", "f_data"));
        assert!(is_fts_index_shadow("F", "f_idx"));
        assert!(!is_fts_index_shadow("f", "f_content"));
        assert!(!is_fts_index_shadow("f", "g_data"));
        assert!(!is_fts_index_shadow("ff", "f"));
    }
}
