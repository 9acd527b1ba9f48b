//! The id rewrite's SQL functions: a [`Matcher`] inside SQLite statements, so that one
//! `UPDATE` per table finds, rewrites and counts in a single pass over the rows, and one
//! `SELECT` per table counts without writing.
//!
//! - `hubvault_hit(slot, v, …)`: 1 if any value holds a spelling of an old id (the
//!   `WHERE`); notes which ones did, from `slot` on;
//! - `hubvault_rw(slot, v)`: the value rewritten, or the argument itself, unchanged to
//!   the byte, when there is nothing to rewrite; counts what it saw in `slot`;
//! - `hubvault_tally(slot, v)`: counts only; returns a bit set (1 rewritable, 2 mixed
//!   case, 4 raw bytes).
//!
//! Encodings: a function receives TEXT as UTF-8, converted by SQLite. In a UTF-16
//! database that conversion is lossy (an unpaired surrogate swallows the next code unit),
//! so there the statements hand the stored bytes over instead, `CAST(col AS BLOB)`, to the
//! `…16` variants, and turn the result back with `CAST(… AS TEXT)`: a cast between TEXT
//! and BLOB reinterprets the bytes in the database's encoding without converting them, so
//! every byte the rewrite does not replace comes back as it was. The `…_expr` methods
//! build the right expression for the database's encoding.
//!
//! The functions are registered `SQLITE_DIRECTONLY`: SQL stored in the database (a view,
//! a trigger, a generated column, a `CHECK`) cannot call them, even with
//! `trusted_schema` on.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};

use crate::sqlite::db::quote_ident;
use crate::sqlite::spelling::{Kind, Matcher, Tally};

/// The text encoding of a database (`PRAGMA encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Encoding {
    #[serde(rename = "UTF-8")]
    Utf8,
    #[serde(rename = "UTF-16le")]
    Utf16Le,
    #[serde(rename = "UTF-16be")]
    Utf16Be,
}

impl Encoding {
    pub fn of(conn: &Connection) -> rusqlite::Result<Encoding> {
        let e: String = conn.query_row("PRAGMA encoding", [], |r| r.get(0))?;
        Ok(match e.as_str() {
            "UTF-16le" => Encoding::Utf16Le,
            "UTF-16be" => Encoding::Utf16Be,
            _ => Encoding::Utf8,
        })
    }

    fn text_kind(self) -> Kind {
        match self {
            Encoding::Utf8 => Kind::Utf8Text,
            Encoding::Utf16Le => Kind::Utf16LeText,
            Encoding::Utf16Be => Kind::Utf16BeText,
        }
    }
}

/// Values of one column, counted by what they held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColTally {
    /// Values holding any spelling of an old id.
    pub hit: u64,
    /// Values holding a lowercase or uppercase text spelling (rewritten by `hubvault_rw`).
    pub rewritable: u64,
    /// Values holding a mixed-case spelling.
    pub mixed_case: u64,
    /// Values (BLOBs) holding the raw 16 bytes of an old id.
    pub raw_bytes: u64,
}

/// Slots: one per column of a table (SQLite allows 2000 columns by default; a slot past
/// the last counts in the last).
const SLOTS: usize = 2048;

/// Counts per slot, shared by the functions of one registration. Atomics: the functions
/// run once per row and value, a lock there would cost more than the search.
struct Counters {
    /// Values in which `hubvault_hit` saw any spelling.
    seen: Vec<AtomicU64>,
    /// `ColTally`'s four counts.
    tally: Vec<[AtomicU64; 4]>,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            seen: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            tally: (0..SLOTS).map(|_| Default::default()).collect(),
        }
    }

    fn clear(&self) {
        for s in &self.seen {
            s.store(0, Relaxed);
        }
        for t in &self.tally {
            for c in t {
                c.store(0, Relaxed);
            }
        }
    }
}

type Tallies = Arc<Counters>;

/// Most arguments given to one `hubvault_hit` call (SQLite allows 127 by default).
const HIT_ARGS: usize = 100;

const NAMES: [(&str, i32); 7] = [
    ("hubvault_hit", -1),
    ("hubvault_text_kept", 3),
    ("hubvault_text_kept16", 2),
    ("hubvault_rw", 2),
    ("hubvault_rw16", 2),
    ("hubvault_tally", 2),
    ("hubvault_tally16", 2),
];

/// The functions, registered on one connection until this is dropped.
pub struct IdFunctions<'c> {
    conn: &'c Connection,
    enc: Encoding,
    tallies: Tallies,
}

enum Out {
    Arg(usize),
    Text(Vec<u8>),
    Blob(Vec<u8>),
    Int(i64),
}

impl ToSql for Out {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            // sqlite3_result_value: the argument itself, type and bytes.
            Out::Arg(i) => ToSqlOutput::Arg(*i),
            Out::Text(b) => ToSqlOutput::Borrowed(ValueRef::Text(b)),
            Out::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Out::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
        })
    }
}

/// True if SQLite would store `text` as a number in a column of numeric affinity: it
/// reads as a decimal integer or real, spaces around it allowed (conservative: Rust's
/// float syntax also takes `inf` and `nan`, which only makes the refusal wider). SQLite's
/// spaces are `sqlite3Isspace`'s: 0x09 to 0x0D and 0x20, the vertical tab (0x0B)
/// included, which `char::is_ascii_whitespace` leaves out.
pub(crate) fn reads_as_number(text: &[u8]) -> bool {
    std::str::from_utf8(text).is_ok_and(|t| {
        let t = t.trim_matches(|c: char| matches!(c, '\t'..='\r' | ' '));
        !t.is_empty() && t.parse::<f64>().is_ok()
    })
}

/// The slot argument: a column index, or NULL/negative for "do not count".
fn slot(ctx: &Context<'_>) -> Option<usize> {
    match ctx.get_raw(0) {
        ValueRef::Integer(i) if i >= 0 => Some(i as usize),
        _ => None,
    }
}

fn record(tallies: &Tallies, slot: Option<usize>, t: Tally) {
    if let Some(i) = slot
        && !t.is_empty()
    {
        let c = &tallies.tally[i.min(SLOTS - 1)];
        c[0].fetch_add(1, Relaxed);
        c[1].fetch_add(u64::from(t.rewritable > 0), Relaxed);
        c[2].fetch_add(u64::from(t.mixed_case > 0), Relaxed);
        c[3].fetch_add(u64::from(t.raw_bytes > 0), Relaxed);
    }
}

fn bits(t: Tally) -> i64 {
    i64::from(t.rewritable > 0)
        | (i64::from(t.mixed_case > 0) << 1)
        | (i64::from(t.raw_bytes > 0) << 2)
}

impl<'c> IdFunctions<'c> {
    /// Registers the functions for `matcher` on `conn`, whose encoding is read here.
    pub fn register(conn: &'c Connection, matcher: Matcher) -> rusqlite::Result<IdFunctions<'c>> {
        let enc = Encoding::of(conn)?;
        let text16 = enc.text_kind();
        let m = Arc::new(matcher);
        let tallies: Tallies = Arc::new(Counters::new());
        let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
        let me = IdFunctions {
            conn,
            enc,
            tallies: tallies.clone(),
        };
        {
            let (m, seen) = (m.clone(), tallies.clone());
            // hubvault_hit(first slot, v…): every value is looked at (not only up to the
            // first hit), so that `seen` knows each column that holds an old id.
            conn.create_scalar_function("hubvault_hit", -1, flags, move |ctx| {
                let first = match ctx.get_raw(0) {
                    ValueRef::Integer(i) if i >= 0 => i as usize,
                    _ => 0,
                };
                let mut any = false;
                for i in 1..ctx.len() {
                    let hit = if enc == Encoding::Utf8 {
                        match ctx.get_raw(i) {
                            ValueRef::Text(b) => m.is_match(Kind::Utf8Text, b),
                            ValueRef::Blob(b) => m.is_match(Kind::Blob, b),
                            _ => false,
                        }
                    } else {
                        // Pairs: (stored bytes of a TEXT value or NULL, a BLOB or NULL).
                        match ctx.get_raw(i) {
                            ValueRef::Blob(b) if (i - 1) % 2 == 0 => m.is_match(text16, b),
                            ValueRef::Blob(b) => m.is_match(Kind::Blob, b),
                            _ => false,
                        }
                    };
                    if hit {
                        any = true;
                        let col = first
                            + if enc == Encoding::Utf8 {
                                i - 1
                            } else {
                                (i - 1) / 2
                            };
                        seen.seen[col.min(SLOTS - 1)].fetch_add(1, Relaxed);
                    }
                }
                Ok(Out::Int(i64::from(any)))
            })?;
        }
        for (name, sixteen) in [("hubvault_rw", false), ("hubvault_rw16", true)] {
            let (m, tallies) = (m.clone(), tallies.clone());
            conn.create_scalar_function(name, 2, flags, move |ctx| {
                let (kind, bytes, text) = match ctx.get_raw(1) {
                    ValueRef::Blob(b) if sixteen => (text16, b, false),
                    ValueRef::Text(b) => (Kind::Utf8Text, b, true),
                    ValueRef::Blob(b) => (Kind::Blob, b, false),
                    _ => return Ok(Out::Arg(1)),
                };
                let (new, t) = m.rewrite(kind, bytes);
                record(&tallies, slot(ctx), t);
                Ok(match new {
                    None => Out::Arg(1),
                    Some(b) if text => Out::Text(b),
                    Some(b) => Out::Blob(b),
                })
            })?;
        }
        for (name, sixteen) in [("hubvault_tally", false), ("hubvault_tally16", true)] {
            let (m, tallies) = (m.clone(), tallies.clone());
            conn.create_scalar_function(name, 2, flags, move |ctx| {
                let t = match ctx.get_raw(1) {
                    ValueRef::Blob(b) if sixteen => m.tally(text16, b),
                    ValueRef::Text(b) => m.tally(Kind::Utf8Text, b),
                    ValueRef::Blob(b) => m.tally(Kind::Blob, b),
                    _ => Tally::default(),
                };
                record(&tallies, slot(ctx), t);
                Ok(Out::Int(bits(t)))
            })?;
        }
        // hubvault_text_kept(value, typeof(old value), 'column'): the value, unless a TEXT
        // value would be turned into a number when stored (a column of INTEGER, REAL or
        // NUMERIC affinity converts text that reads as a number, losing digits past 15:
        // an unhyphenated id of decimal digits only), which fails the UPDATE instead.
        conn.create_scalar_function("hubvault_text_kept", 3, flags, move |ctx| {
            let was_text = matches!(ctx.get_raw(1), ValueRef::Text(b) if b == b"text");
            if let (true, ValueRef::Text(b)) = (was_text, ctx.get_raw(0))
                && reads_as_number(b)
            {
                let col = match ctx.get_raw(2) {
                    ValueRef::Text(c) => String::from_utf8_lossy(c).into_owned(),
                    _ => String::new(),
                };
                return Err(rusqlite::Error::UserFunctionError(
                    format!(
                        "column {col}: the text {:?} would be stored as a number (the column's declared type gives it numeric affinity), which changes its type and can lose digits",
                        String::from_utf8_lossy(b)
                    )
                    .into(),
                ));
            }
            Ok(Out::Arg(0))
        })?;
        // hubvault_text_kept16(stored bytes of a UTF-16 TEXT value, 'column'): the same
        // test on the bytes as they are stored (a text argument would be converted to
        // UTF-8 and back, which turns an unpaired surrogate into U+FFFD); returns them
        // untouched.
        conn.create_scalar_function("hubvault_text_kept16", 2, flags, move |ctx| {
            if let ValueRef::Blob(b) = ctx.get_raw(0) {
                let units = b.chunks_exact(2).map(|p| match text16 {
                    Kind::Utf16BeText => u16::from_be_bytes([p[0], p[1]]),
                    _ => u16::from_le_bytes([p[0], p[1]]),
                });
                let text = String::from_utf16_lossy(&units.collect::<Vec<u16>>());
                if reads_as_number(text.as_bytes()) {
                    let col = match ctx.get_raw(1) {
                        ValueRef::Text(c) => String::from_utf8_lossy(c).into_owned(),
                        _ => String::new(),
                    };
                    return Err(rusqlite::Error::UserFunctionError(
                        format!(
                            "column {col}: the text {text:?} would be stored as a number (the column's declared type gives it numeric affinity), which changes its type and can lose digits"
                        )
                        .into(),
                    ));
                }
            }
            Ok(Out::Arg(0))
        })?;
        Ok(me)
    }

    pub fn encoding(&self) -> Encoding {
        self.enc
    }

    /// Empties the counts; slots are column indexes of the next statement.
    pub fn reset(&self) {
        self.tallies.clear();
    }

    /// Per slot, the values in which `hubvault_hit` saw any spelling of an old id since
    /// the last [`IdFunctions::reset`], for `n` slots.
    pub fn seen(&self, n: usize) -> Vec<u64> {
        self.tallies.seen[..n.min(SLOTS)]
            .iter()
            .map(|c| c.load(Relaxed))
            .collect()
    }

    /// The counts since the last [`IdFunctions::reset`], for `n` slots.
    pub fn counts(&self, n: usize) -> Vec<ColTally> {
        self.tallies.tally[..n.min(SLOTS)]
            .iter()
            .map(|c| ColTally {
                hit: c[0].load(Relaxed),
                rewritable: c[1].load(Relaxed),
                mixed_case: c[2].load(Relaxed),
                raw_bytes: c[3].load(Relaxed),
            })
            .collect()
    }

    /// True (1) if any of the columns holds any spelling of an old id; column `i` is
    /// slot `first + i` of [`IdFunctions::seen`].
    pub fn hit_expr(&self, first: usize, cols: &[&str]) -> String {
        let per_col = if self.enc == Encoding::Utf8 { 1 } else { 2 };
        let calls: Vec<String> = cols
            .chunks(HIT_ARGS / per_col)
            .enumerate()
            .map(|(k, chunk)| {
                let args: Vec<String> = chunk
                    .iter()
                    .flat_map(|c| {
                        let q = quote_ident(c);
                        if self.enc == Encoding::Utf8 {
                            vec![q]
                        } else {
                            vec![
                                format!("iif(typeof({q}) = 'text', CAST({q} AS BLOB), NULL)"),
                                format!("iif(typeof({q}) = 'blob', {q}, NULL)"),
                            ]
                        }
                    })
                    .collect();
                format!(
                    "hubvault_hit({}, {})",
                    first + k * (HIT_ARGS / per_col),
                    args.join(", ")
                )
            })
            .collect();
        if calls.is_empty() {
            "0".into()
        } else {
            // `|`, not OR: every call runs, so every column is seen.
            format!("({}) != 0", calls.join(" | "))
        }
    }

    /// The column's value rewritten (its type kept), counted in `slot`.
    pub fn rewrite_expr(&self, slot: usize, col: &str) -> String {
        let q = quote_ident(col);
        if self.enc == Encoding::Utf8 {
            format!("hubvault_rw({slot}, {q})")
        } else {
            format!(
                "CASE typeof({q}) WHEN 'text' THEN CAST(hubvault_rw16({slot}, CAST({q} AS BLOB)) AS TEXT) ELSE hubvault_rw({slot}, {q}) END"
            )
        }
    }

    /// As [`IdFunctions::rewrite_expr`], for a column whose affinity converts text that
    /// reads as a number (INTEGER, REAL, NUMERIC): the `UPDATE` fails rather than store a
    /// text value as a number.
    pub fn rewrite_kept_expr(&self, slot: usize, col: &str) -> String {
        let q = quote_ident(col);
        let name = col.replace('\'', "''");
        if self.enc == Encoding::Utf8 {
            format!(
                "hubvault_text_kept({}, typeof({q}), '{name}')",
                self.rewrite_expr(slot, col)
            )
        } else {
            // Text is tested as its stored bytes (see hubvault_text_kept16); other types
            // are stored as they are.
            format!(
                "CASE typeof({q}) WHEN 'text' THEN CAST(hubvault_text_kept16(hubvault_rw16({slot}, CAST({q} AS BLOB)), '{name}') AS TEXT) ELSE hubvault_rw({slot}, {q}) END"
            )
        }
    }

    /// The bit set of what the column's value holds, counted in `slot` if given.
    pub fn tally_expr(&self, slot: Option<usize>, col: &str) -> String {
        let q = quote_ident(col);
        let s = slot.map_or("NULL".to_string(), |s| s.to_string());
        if self.enc == Encoding::Utf8 {
            format!("hubvault_tally({s}, {q})")
        } else {
            format!(
                "CASE typeof({q}) WHEN 'text' THEN hubvault_tally16({s}, CAST({q} AS BLOB)) ELSE hubvault_tally({s}, {q}) END"
            )
        }
    }
}

impl Drop for IdFunctions<'_> {
    fn drop(&mut self) {
        for (name, n) in NAMES {
            let _ = self.conn.remove_function(name, n);
        }
    }
}
