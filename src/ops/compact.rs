//! Compaction and retention of one hub's continuous stream (docs/CONTINUOUS.md,
//! "Compaction" and "Retention"). The agent runs it in the background; `hubvault prune`
//! runs it for the hubs in its scope.
//!
//! A pass, in order, each step idempotent:
//! 1. **Leftovers**: a minute whose segments a killed run did not finish deleting: the
//!    minute is read back (checksummed), its partial minutes are deleted, then the
//!    segments it names as its sources. A segment inside a compacted minute that it does
//!    not name (an upload that landed late) is deleted only when every commit in it is
//!    already in the minute. Partial minutes a longer one supersedes are deleted once the
//!    longer one is read back.
//! 2. **Minutes (L1)**: the segments of every finished minute become one object holding
//!    every commit, chained per connector and generation; written, read back and checked,
//!    and only then are its partial minutes and then its segments deleted (in that order,
//!    and in minute order: while a partial minute exists, every segment of its minute does
//!    and no later minute is compacted, which lets a restore skip listing the minutes).
//! 3. **Marks (level 2)**: for every parent window (10 minutes, hour, 6 hours, day) with
//!    data, each of its finished marks: the newest image of every page changed from the
//!    parent's start, merged from the chain of objects that reaches the mark's end.
//!
//! The agent also writes, every pass, the **partial minute** of the minute being captured
//! ([`Compactor::partial`]): every commit of its segments so far, one PUT, deleting no
//! segment.
//! 4. **Bases**: at every finished day boundary, each connector's state there, built from
//!    its newest base and the day's chain (chain checked, as a restore does); a connector
//!    with no commit since is a server-side copy of its base.
//!
//! A window is finished when no segment sent inside it can still arrive: the caller says
//! until when that holds (`settled`: the agent knows the segment it is still sending;
//! `prune` allows a margin, and stops at the hub's newest data). Nothing is deleted that
//! a restore of an instant inside the kept window needs: compaction deletes only
//! segments whose commits are in a minute read back; retention only what lies before each
//! connector's chain start (the newest base at or before the cut-off), and never a
//! connector's newest state.
//!
//! kill -9 anywhere: every write is one atomic PUT at a key named by its window; a
//! minute and its sources side by side is a consistent pair (the planner takes the
//! minute, the next pass deletes the sources); a mark or base not yet written is written
//! by the next pass.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use object_store::path::Path;
use serde::Serialize;

use crate::catalog::stream::{self, Entry, Listed, ListedBase, StreamIndex, StreamPlan, Until};
use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::model::layout::{StreamKeys, WindowName};
use crate::model::stream::{
    self as fmt, BaseHeader, ChainSum, CommitHead, CompactMeta, Gap, LEVEL_MERGED, LEVEL_MINUTE,
    ObjectHeader, RunSpan, SectionEntry,
};
use crate::model::windows::{self, Time};
use crate::sqlite::spill::{SPILL_AT, Spill, Spilled};
use crate::store::{Bucket, WriteMode};

/// How long after a window's end `prune` waits before it calls it finished: longer than
/// an upload can take (S3 request timeout and retries), as `prune` cannot know what an
/// agent is still sending.
pub const PRUNE_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// A partial minute is written once this many segments of the current minute are in
/// none yet. A pass that writes none leaves at most 2, so a restore of a recent instant
/// reads at most 2 + one pass of segments (10 at `--tick 1s`) after the partial; at
/// `--tick 10s` (one segment a pass) about one partial a minute is written.
pub const PARTIAL_AFTER: usize = 3;

/// How long after their 10 minutes end 1-minute marks are kept: recent instants stay
/// cheapest to restore; then they go (storage as without them).
pub const MINUTE_MARKS_KEPT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// True if and only if the 1-minute marks of the 10 minutes starting at `p` are no
/// longer kept at `settled`.
fn minute_mark_done(p: Time, settled: Time) -> bool {
    p + chrono::TimeDelta::minutes(10) + MINUTE_MARKS_KEPT <= settled
}

/// The default span of the continuous window (`--keep-within`).
pub const DEFAULT_KEEP_WITHIN: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// What one compaction pass did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CompactReport {
    pub datahub: Option<DatahubId>,
    /// Minutes written (L1), and the segments merged into them.
    pub minutes: usize,
    pub segments_merged: usize,
    /// Segments deleted after their minute was read back (this pass's and leftovers).
    pub segments_deleted: usize,
    /// Partial minutes written (the agent's, of the minute being captured), and deleted
    /// (superseded by a longer one, or their minute written).
    pub partials: usize,
    pub partials_deleted: usize,
    pub marks: usize,
    /// 1-minute marks deleted once their 10 minutes are long over.
    pub marks_deleted: usize,
    /// Bases written at day boundaries, and bases copied (no commit since).
    pub bases: usize,
    pub bases_copied: usize,
    /// Bytes this pass kept in temp files in `--tmp-dir` instead of memory: the pages
    /// of large objects read and written (a minute holding a VACUUM).
    pub spilled: u64,
    /// What could not be done now (logged; the next pass tries again).
    pub problems: Vec<String>,
}

/// What retention deletes (or, in a dry run, would delete).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RetainReport {
    pub datahub: Option<DatahubId>,
    pub cutoff: Option<Time>,
    /// Per connector: where its kept chain starts (its newest base at or before the
    /// cut-off, or its oldest base).
    pub chain_starts: BTreeMap<ConnectorId, Time>,
    /// Keys deleted (or to delete), oldest first: stream objects, then bases.
    pub delete: Vec<String>,
    pub objects_kept: usize,
    pub bases_kept: usize,
    pub problems: Vec<String>,
}

/// One hub's stream under compaction: the index of what the bucket holds, kept up to
/// date with what this compactor writes and deletes.
pub struct Compactor {
    bucket: Bucket,
    keys: StreamKeys,
    pub index: StreamIndex,
    /// Objects read back and checked by this process.
    verified: BTreeSet<Path>,
    /// (connector, day) whose base could not be built: not retried in this process
    /// until the index is loaded again.
    failed_bases: BTreeSet<(ConnectorId, Time)>,
    /// Every mark ending by then is written (a pass then looks only at the last day).
    marks_done: Option<Time>,
    /// Segments read for a partial minute, kept until their minute is written (each
    /// segment is read once; their pages in spools, see [`Spooled`]).
    read: BTreeMap<Path, std::sync::Arc<Spooled>>,
    /// Bytes spooled to temp files since the process started (see
    /// [`CompactReport::spilled`]).
    spilled: u64,
    /// Where a day base's image is built (a temp file: never in memory).
    tmp_dir: std::path::PathBuf,
}

/// One section of a [`Spooled`] object: its entry, where its plain body starts in the
/// object's spool (when kept), and its commits' heads.
struct Part {
    entry: SectionEntry,
    at: u64,
    heads: Vec<CommitHead>,
}

/// An object read through (one streamed GET, checked whole as it arrives): its header,
/// its sections' heads and, when kept, their plain bodies in a spool (in memory up to
/// [`SPOOL_AT`], then a temp file in `--tmp-dir`). A minute holding a VACUUM of a 1 GiB
/// database never sits in memory.
struct Spooled {
    header: ObjectHeader,
    parts: Vec<Part>,
    plain: Option<Spill>,
    /// Bytes of the object as stored.
    size: u64,
}

impl Spooled {
    /// Bytes this object keeps in a temp file.
    fn spilled(&self) -> u64 {
        self.plain
            .as_ref()
            .filter(|p| p.spilled())
            .map_or(0, |p| p.len())
    }
}

/// Bytes of one object's plain sections held in memory before its spool moves to a temp
/// file: a partial minute keeps up to a minute of segments (60 at `--tick 1s`), so each
/// keeps little.
const SPOOL_AT: usize = SPILL_AT / 16;

fn name_of(key: &Path) -> String {
    key.filename().unwrap_or_default().to_string()
}

/// Reads the object at `key` through, checked whole; keeps its sections' plain bodies
/// (in `dir`) when `keep`, else only their heads.
async fn spool(bucket: &Bucket, key: &Path, keep: bool, dir: &std::path::Path) -> Result<Spooled> {
    let what = bucket.shown(key);
    let dir = dir.to_path_buf();
    let (mut s, size) = {
        let what = what.clone();
        bucket
            .read_with(key, move |r| spool_from(r, &what, keep, &dir))
            .await?
    };
    stream::check_names_key(key, &s.header, &what)?;
    s.size = size;
    Ok(s)
}

/// [`spool`]'s reading, from any reader of the object's bytes.
fn spool_from(
    r: &mut dyn std::io::Read,
    what: &str,
    keep: bool,
    dir: &std::path::Path,
) -> Result<Spooled> {
    let mut plain = keep.then(|| Spill::new(dir, SPOOL_AT));
    let mut parts = Vec::new();
    let header = fmt::read_object_from(r, what, &mut |e, body| {
        let (at, heads) = match &mut plain {
            Some(p) => {
                let at = p.len();
                let mut w = std::io::BufWriter::with_capacity(256 << 10, &mut *p);
                let heads = fmt::scan_section(e, body, &mut w, what)?;
                w.flush().map_err(|e| {
                    Error::check(
                        format!("cannot keep a section of {what}: {e}"),
                        "check free space in --tmp-dir",
                    )
                })?;
                (at, heads)
            }
            None => (0, fmt::scan_section(e, body, &mut std::io::sink(), what)?),
        };
        parts.push(Part {
            entry: e.clone(),
            at,
            heads,
        });
        Ok(())
    })?;
    Ok(Spooled {
        header,
        parts,
        plain,
        size: 0,
    })
}

/// A reader of `len` bytes of a spool from `at`.
struct SpillRange<'s> {
    spill: &'s Spill,
    at: u64,
    end: u64,
}

impl std::io::Read for SpillRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.end - self.at).min(buf.len() as u64) as usize;
        self.spill
            .read_at(self.at, &mut buf[..n])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.at += n as u64;
        Ok(n)
    }
}

/// One section of a compacted object: the connector's sections it chains, each as
/// (object, section, commits skipped).
struct Chained {
    parts: Vec<(usize, usize, usize)>,
}

/// The sections of `sources` (in order) grouped by connector and generation (in the
/// order of first appearance), each group chained ([`fmt::chain_plan`]).
fn chain_all(sources: &[std::sync::Arc<Spooled>]) -> Vec<Chained> {
    let mut order: Vec<(ConnectorId, String)> = Vec::new();
    let mut groups: BTreeMap<(ConnectorId, String), Vec<(usize, usize)>> = BTreeMap::new();
    for (o, s) in sources.iter().enumerate() {
        for (i, p) in s.parts.iter().enumerate() {
            let k = (p.entry.connector, p.entry.generation.clone());
            if !groups.contains_key(&k) {
                order.push(k.clone());
            }
            groups.entry(k).or_default().push((o, i));
        }
    }
    let mut out = Vec::new();
    for k in order {
        let members = groups.remove(&k).expect("grouped");
        let shapes: Vec<(ChainSum, Vec<ChainSum>)> = members
            .iter()
            .map(|(o, i)| {
                let p = &sources[*o].parts[*i];
                (p.entry.prev, p.heads.iter().map(|h| h.after).collect())
            })
            .collect();
        for plan in fmt::chain_plan(&shapes) {
            out.push(Chained {
                parts: plan
                    .into_iter()
                    .map(|(m, skip)| (members[m].0, members[m].1, skip))
                    .collect(),
            });
        }
    }
    out
}

/// The compacted sections of `sources`: chained and, when `merge`, each merged to one
/// commit ([`fmt::merge_commits`]'s rule), compressed one after another into a spool in
/// `dir`. Pages are copied from the sources' spools, never all held: memory is the
/// merge's page index (16 bytes a page) and buffers.
fn compose(
    sources: &[std::sync::Arc<Spooled>],
    merge: bool,
    dir: &std::path::Path,
) -> Result<(Vec<SectionEntry>, Spill)> {
    let mut bodies = Spill::new(dir, SPILL_AT);
    let mut entries = Vec::new();
    let spill_of = |o: usize| -> Result<&Spill> {
        sources[o].plain.as_ref().ok_or_else(|| {
            Error::check(
                "a compaction source read without its pages",
                "report this as a bug",
            )
        })
    };
    for c in chain_all(sources) {
        let (o0, i0, skip0) = c.parts[0];
        let first = &sources[o0].parts[i0];
        let e0 = &first.entry;
        let ps = e0.page_size;
        // (object, section, commit) of every commit kept, in order, and where its
        // plain bytes start in its object's spool.
        let mut commits: Vec<(usize, CommitHead, u64)> = Vec::new();
        for &(o, i, skip) in &c.parts {
            let p = &sources[o].parts[i];
            let mut at = p.at;
            for (k, h) in p.heads.iter().enumerate() {
                if k >= skip {
                    commits.push((o, *h, at));
                }
                at += h.plain_len(ps);
            }
        }
        let (Some(first_c), Some(last_c)) = (commits.first(), commits.last()) else {
            continue;
        };
        let prev = if skip0 == 0 {
            e0.prev
        } else {
            first.heads[skip0 - 1].after
        };
        let meta = fmt::SpooledSection {
            connector: e0.connector,
            generation: e0.generation.clone(),
            page_size: ps,
            prev,
            after: last_c.1.after,
            commits: if merge { 1 } else { commits.len() as u32 },
            first_ms: if merge {
                last_c.1.time_ms
            } else {
                first_c.1.time_ms
            },
            last_ms: last_c.1.time_ms,
        };
        let mut out = std::io::BufWriter::with_capacity(256 << 10, &mut bodies);
        let entry = if !merge {
            fmt::compress_section_from(&meta, &mut out, &mut |z| {
                for (o, h, at) in &commits {
                    let mut r = std::io::BufReader::with_capacity(
                        1 << 20,
                        SpillRange {
                            spill: spill_of(*o)?,
                            at: *at,
                            end: at + h.plain_len(ps),
                        },
                    );
                    std::io::copy(&mut r, z).map_err(|e| {
                        Error::check(
                            format!("cannot compact a section: {e}"),
                            "check free space and permissions in --tmp-dir",
                        )
                    })?;
                }
                Ok(())
            })?
        } else {
            // The newest image of each page, where it lies in its object's spool.
            let written: u64 = commits.iter().map(|(_, h, _)| h.pages as u64).sum();
            let highest = commits
                .iter()
                .map(|(_, h, _)| h.db_pages)
                .max()
                .unwrap_or(0);
            let mut newest = NewestPages::new(highest, written);
            let mut smallest = u32::MAX;
            let mut pgno = [0u8; 4];
            for (o, h, at) in &commits {
                let spill = spill_of(*o)?;
                let mut off = at + fmt::COMMIT_HEAD as u64;
                for _ in 0..h.pages {
                    spill.read_at(off, &mut pgno)?;
                    newest.insert(u32::from_le_bytes(pgno), *o, off + 4)?;
                    off += 4 + ps as u64;
                }
                smallest = smallest.min(h.db_pages);
                newest.truncate(h.db_pages);
            }
            let last = last_c.1;
            let n = (1..=last.db_pages)
                .filter(|p| newest.get(*p).is_some() || *p > smallest)
                .count() as u32;
            fmt::compress_section_from(&meta, &mut out, &mut |z| {
                let werr = |e: std::io::Error| {
                    Error::check(
                        format!("cannot compact a section: {e}"),
                        "check free space and permissions in --tmp-dir",
                    )
                };
                z.write_all(&fmt::commit_head(
                    last.time_ms,
                    last.db_pages,
                    last.after,
                    n,
                ))
                .map_err(werr)?;
                let mut page = vec![0u8; ps as usize];
                for p in 1..=last.db_pages {
                    match newest.get(p) {
                        Some((o, off)) => spill_of(o)?.read_at(off, &mut page)?,
                        None if p > smallest => page.fill(0),
                        None => continue,
                    }
                    z.write_all(&p.to_le_bytes()).map_err(werr)?;
                    z.write_all(&page).map_err(werr)?;
                }
                Ok(())
            })?
        };
        out.flush().map_err(|e| {
            Error::check(
                format!("cannot compact a section: {e}"),
                "check free space and permissions in --tmp-dir",
            )
        })?;
        drop(out);
        entries.push(entry);
    }
    Ok((entries, bodies))
}

/// Where the newest image of each page lies, for a merge: (source object, offset in its
/// spool) packed in 8 bytes (`(object + 1) << 40 | offset`, 0 for none). Dense (a slot
/// per page number up to the highest size a commit names) when that takes no more than
/// 16 bytes a page written would; else a map of the pages written. A VACUUM of a 1 GiB
/// database is 250,000 pages: 2 MiB, where a map of (object, offset) pairs took about
/// 10 MiB; a few pages changed in a large database stay a small map.
enum NewestPages {
    Dense { slots: Vec<u64>, top: u32 },
    Sparse(BTreeMap<u32, u64>),
}

/// Bits of a packed offset, and the objects a packed location can name.
const OFFSET_BITS: u32 = 40;
const MAX_OBJECTS: usize = (1 << (64 - OFFSET_BITS)) - 1;

impl NewestPages {
    /// An index for commits whose sizes reach `highest` pages and that write `written`
    /// pages in all.
    fn new(highest: u32, written: u64) -> NewestPages {
        if highest as u64 * 8 <= written.saturating_mul(16) {
            NewestPages::Dense {
                slots: vec![0; highest as usize + 1],
                top: 0,
            }
        } else {
            NewestPages::Sparse(BTreeMap::new())
        }
    }

    fn insert(&mut self, p: u32, object: usize, offset: u64) -> Result<()> {
        if object >= MAX_OBJECTS || offset >> OFFSET_BITS != 0 {
            return Err(Error::check(
                format!("a merge of {object} objects reaches offset {offset} of a spool"),
                "past what a merge indexes (16 million objects, 1 TiB a spool): report this",
            ));
        }
        let loc = ((object as u64 + 1) << OFFSET_BITS) | offset;
        match self {
            NewestPages::Dense { slots, top } => {
                // Sized by the highest size a commit names: a page past it is past its
                // own commit's size, which the format refuses on reading.
                let slot = slots.get_mut(p as usize).ok_or_else(|| {
                    Error::check(
                        format!("page {p} past every commit's size in a merge"),
                        "report this as a bug",
                    )
                })?;
                *slot = loc;
                *top = (*top).max(p);
            }
            NewestPages::Sparse(m) => {
                m.insert(p, loc);
            }
        }
        Ok(())
    }

    /// Forgets the pages past `pages` (a commit that shrank the database).
    fn truncate(&mut self, pages: u32) {
        match self {
            NewestPages::Dense { slots, top } => {
                if *top > pages {
                    slots[pages as usize + 1..=*top as usize].fill(0);
                    *top = pages;
                }
            }
            NewestPages::Sparse(m) => {
                if m.last_key_value().is_some_and(|(p, _)| *p > pages) {
                    m.retain(|p, _| *p <= pages);
                }
            }
        }
    }

    /// (object, offset) of page `p`'s newest image.
    fn get(&self, p: u32) -> Option<(usize, u64)> {
        let loc = match self {
            NewestPages::Dense { slots, .. } => slots.get(p as usize).copied().unwrap_or(0),
            NewestPages::Sparse(m) => m.get(&p).copied().unwrap_or(0),
        };
        (loc != 0).then(|| {
            (
                (loc >> OFFSET_BITS) as usize - 1,
                loc & ((1 << OFFSET_BITS) - 1),
            )
        })
    }

    /// Bytes of memory the index holds (a map's nodes counted at 40 bytes a page).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        match self {
            NewestPages::Dense { slots, .. } => slots.capacity() * 8,
            NewestPages::Sparse(m) => m.len() * 40,
        }
    }
}

/// Reads a base back streamed and checks it whole (trailer, size, chain checksum)
/// without holding its image.
async fn read_back_base(bucket: &Bucket, key: &Path) -> Result<BaseHeader> {
    let what = bucket.shown(key);
    let ((h, _), _) = bucket
        .read_with(key, move |r| {
            fmt::decode_base_from(r, &what, &mut |_, _| Ok(()))
        })
        .await?;
    Ok(h)
}

/// Runs and gaps of a sequence of objects (in order): each object's runs merged, a jump
/// in a run's numbers between two objects (or inside one) is a gap.
fn runs_and_gaps(parts: &[(Vec<RunSpan>, Vec<Gap>)]) -> (Vec<RunSpan>, Vec<Gap>) {
    let mut runs: BTreeMap<String, RunSpan> = BTreeMap::new();
    let mut gaps: Vec<Gap> = Vec::new();
    for (spans, inner) in parts {
        gaps.extend(inner.iter().cloned());
        for s in spans {
            match runs.get_mut(&s.run) {
                None => {
                    runs.insert(s.run.clone(), s.clone());
                }
                Some(r) => {
                    if s.first > r.last + 1 {
                        gaps.push(Gap {
                            run: s.run.clone(),
                            first: r.last + 1,
                            last: s.first - 1,
                            after_ms: r.last_ms,
                            why: "missing".into(),
                        });
                    }
                    r.first = r.first.min(s.first);
                    if s.last >= r.last {
                        r.last = s.last;
                        r.last_ms = s.last_ms;
                    }
                }
            }
        }
    }
    (runs.into_values().collect(), gaps)
}

impl Compactor {
    /// Lists the hub's whole stream (a few LIST requests per 1,000 objects).
    pub async fn load(bucket: &Bucket, org: &OrgSlug, datahub: DatahubId) -> Result<Compactor> {
        let keys = StreamKeys::new(org.clone(), datahub);
        let index = StreamIndex::load(bucket, &keys).await?;
        Ok(Compactor {
            bucket: bucket.clone(),
            keys,
            index,
            verified: BTreeSet::new(),
            failed_bases: BTreeSet::new(),
            marks_done: None,
            read: BTreeMap::new(),
            spilled: 0,
            tmp_dir: std::env::temp_dir(),
        })
    }

    /// Builds day bases' images in `dir` (the agent's `--tmp-dir`) instead of the
    /// system's temp directory.
    pub fn set_tmp_dir(&mut self, dir: &std::path::Path) {
        self.tmp_dir = dir.to_path_buf();
    }

    /// Lists the hub's stream again (objects other processes wrote or deleted).
    pub async fn reload(&mut self) -> Result<()> {
        self.index = StreamIndex::load(&self.bucket, &self.keys).await?;
        self.failed_bases.clear();
        self.marks_done = None;
        self.read.clear();
        // Forget what is gone (partial minutes come and go every pass).
        let present: BTreeSet<&Path> = self
            .index
            .objects()
            .map(|l| &l.key)
            .chain(self.index.bases.values().flatten().map(|b| &b.key))
            .collect();
        self.verified.retain(|k| present.contains(k));
        Ok(())
    }

    pub fn datahub(&self) -> DatahubId {
        self.keys.datahub
    }

    /// When `prune` calls this hub's windows finished: [`PRUNE_GRACE`] before `now`, and
    /// never past the newest data the hub's stream holds (its newest segment or window;
    /// with neither, its newest base). Capture sends a segment that fails again as it is, at the key stamped when
    /// it was made, until it lands, however long the bucket is out of reach; later ones
    /// wait behind it. So a segment still on its way is stamped after the newest one
    /// listed, and a window ending by then can no longer change; a window after it could
    /// (a minute or a day base written without the segment would hide its commits: the
    /// chain refused after it, the newest state silently older). The agent's compactor
    /// knows what it still sends and does not need this bound.
    pub fn prune_settled(&self, now: Time) -> Time {
        let newest_base = self
            .index
            .bases
            .values()
            .filter_map(|v| v.last())
            .map(|b| b.name.time)
            .max();
        let newest = self.index.newest().or(newest_base);
        let grace = prune_settled(now);
        newest.map_or(grace, |n| grace.min(n))
    }

    /// Adds an object this agent's capture wrote (a segment or a base).
    pub fn learn(&mut self, key: &Path, size: u64) {
        if let Some(n) = StreamKeys::parse_segment(key) {
            self.index.insert(Listed {
                key: key.clone(),
                entry: Entry::Segment(n),
                size,
            });
        } else if let Some(name) = StreamKeys::parse_base(key)
            && let Some(conn) = key
                .parts()
                .nth_back(1)
                .and_then(|p| ConnectorId::parse(p.as_ref()).ok())
        {
            self.index.insert_base(
                conn,
                ListedBase {
                    key: key.clone(),
                    name,
                    size,
                },
            );
        }
    }

    /// Reads an object back and checks it whole (trailer, header, every section), once
    /// per process; keeps its commits' heads, not its pages.
    async fn verify(&mut self, key: &Path) -> Result<Spooled> {
        let w = spool(&self.bucket, key, false, &self.tmp_dir).await?;
        self.verified.insert(key.clone());
        Ok(w)
    }

    /// Reads an object through, its pages kept in a spool (see [`Spooled`]).
    async fn spool(&mut self, key: &Path) -> Result<std::sync::Arc<Spooled>> {
        let s = spool(&self.bucket, key, true, &self.tmp_dir).await?;
        if s.spilled() > 0 {
            tracing::info!(key = %self.bucket.shown(key), bytes = s.spilled(), "compaction: a large object spilled to --tmp-dir");
            self.spilled += s.spilled();
        }
        Ok(std::sync::Arc::new(s))
    }

    /// Writes the window `w` from `sources` (chained; merged when `merge`), streamed
    /// through a spool in `--tmp-dir` past [`SPILL_AT`], then reads it back.
    async fn write_window(
        &mut self,
        w: WindowName,
        meta: CompactMeta,
        sources: Vec<std::sync::Arc<Spooled>>,
        merge: bool,
    ) -> Result<Spooled> {
        let key = self.keys.window(&w);
        let dir = self.tmp_dir.clone();
        let (entries, bodies) =
            crate::blocking::blocking(move || compose(&sources, merge, &dir)).await?;
        let mut header = fmt::compact_header(&meta, entries);
        if bodies.spilled() {
            tracing::info!(key = %self.bucket.shown(&key), bytes = bodies.len(), "compaction: a large object spilled to --tmp-dir");
            self.spilled += bodies.len();
        }
        match bodies.finish() {
            Spilled::Mem(b) => {
                let bytes = crate::blocking::blocking(move || {
                    let mut out = Vec::with_capacity(b.len() + 4096);
                    fmt::assemble_compact_to(&mut header, &mut &b[..], &mut out)?;
                    Ok(out)
                })
                .await?;
                // Create: a window's key is its content's name; if another process wrote
                // it first, its object stands (it is checked like ours).
                self.bucket
                    .put_bytes(&key, bytes::Bytes::from(bytes), WriteMode::Create)
                    .await?;
            }
            Spilled::File(path, n) => {
                // Streamed from the spool (an overwrite): written only when no other
                // process wrote it first, as above.
                if self.bucket.head(&key).await?.is_none() {
                    self.bucket
                        .put_streamed(&key, n, move |out| {
                            let f = std::fs::File::open(&path).map_err(|e| {
                                Error::io(&path, "cannot read a compacted object's sections", e)
                            })?;
                            let mut r = std::io::BufReader::with_capacity(1 << 20, f);
                            fmt::assemble_compact_to(&mut header, &mut r, out)?;
                            drop(path);
                            Ok(())
                        })
                        .await?;
                }
            }
        }
        let back = self.verify(&key).await?;
        if let ObjectHeader::Compact(h) = &back.header
            && (h.start_ms, h.end_ms, h.level)
                != (
                    w.start.timestamp_millis(),
                    w.end.timestamp_millis(),
                    w.level,
                )
        {
            return Err(Error::check(
                format!(
                    "{}: its header names another window than its key",
                    self.bucket.shown(&key)
                ),
                "delete the object; the next compaction writes it again",
            ));
        }
        self.index.insert(Listed {
            key: key.clone(),
            entry: Entry::Window(w),
            size: back.size,
        });
        Ok(back)
    }

    /// One pass: leftovers, minutes, marks, bases (see the module's steps). `settled`:
    /// no segment sent before it can still arrive. `horizon`: minutes and marks ending at
    /// or before it are not written, and no base before it (retention deletes what lies
    /// before the base there). A dry run writes and deletes nothing; the bases it would
    /// write are added to the index, so that [`Compactor::retain`] then plans exactly
    /// what a real run deletes.
    pub async fn compact(
        &mut self,
        now: Time,
        settled: Time,
        horizon: Option<Time>,
        dry_run: bool,
    ) -> Result<CompactReport> {
        let mut r = CompactReport {
            datahub: Some(self.keys.datahub),
            ..Default::default()
        };
        let spilled = self.spilled;
        self.leftovers(&mut r, dry_run).await?;
        self.minutes(&mut r, now, settled, horizon, dry_run).await?;
        self.marks(&mut r, now, settled, horizon, dry_run).await?;
        self.bases(&mut r, settled, horizon, dry_run).await?;
        r.spilled = self.spilled - spilled;
        Ok(r)
    }

    /// Segments and partial minutes inside minutes that exist (the partials first: while
    /// one exists a restore may stand on it and on every segment sent after it), and
    /// partial minutes a longer one of the same minute supersedes.
    async fn leftovers(&mut self, r: &mut CompactReport, dry_run: bool) -> Result<()> {
        let mut inside: BTreeMap<Path, (Vec<Path>, Vec<Path>)> = BTreeMap::new();
        for s in &self.index.segments {
            if let Some(m) = self.index.minute_at(windows::minute_of(s.entry.start())) {
                inside
                    .entry(m.key.clone())
                    .or_default()
                    .1
                    .push(s.key.clone());
            }
        }
        for p in &self.index.partials {
            if let Some(m) = self.index.minute_at(p.entry.start()) {
                inside
                    .entry(m.key.clone())
                    .or_default()
                    .0
                    .push(p.key.clone());
            }
        }
        for (minute, (partials, segs)) in inside {
            if dry_run {
                r.segments_deleted += segs.len();
                r.partials_deleted += partials.len();
                continue;
            }
            let m = match self.verify(&minute).await {
                Ok(m) => m,
                Err(e) => {
                    r.problems.push(format!("{e}"));
                    continue;
                }
            };
            let ObjectHeader::Compact(h) = &m.header else {
                continue;
            };
            for p in partials {
                self.bucket.delete(&p).await?;
                self.index.remove(&p);
                r.partials_deleted += 1;
            }
            let sources: BTreeSet<&str> = h.sources.iter().map(String::as_str).collect();
            for seg in segs {
                let named = sources.contains(name_of(&seg).as_str());
                let drop = named || self.repeats(&seg, &m).await;
                if drop {
                    self.bucket.delete(&seg).await?;
                    self.index.remove(&seg);
                    self.read.remove(&seg);
                    r.segments_deleted += 1;
                } else {
                    r.problems.push(format!(
                        "{} landed inside the compacted minute {} with commits it does not hold; left in place",
                        self.bucket.shown(&seg),
                        self.bucket.shown(&minute)
                    ));
                }
            }
        }
        if dry_run {
            return Ok(());
        }
        // Superseded partials (a pass killed between writing a longer one and deleting
        // the shorter): the longest is read back before the others go.
        let mut by_minute: BTreeMap<Time, Vec<Path>> = BTreeMap::new();
        for p in &self.index.partials {
            by_minute
                .entry(p.entry.start())
                .or_default()
                .push(p.key.clone());
        }
        for (_, v) in by_minute {
            let Some((longest, shorter)) = v.split_last() else {
                continue;
            };
            if shorter.is_empty() {
                continue;
            }
            if !self.verified.contains(longest)
                && let Err(e) = self.verify(longest).await
            {
                r.problems.push(format!("{e}"));
                continue;
            }
            for p in shorter {
                self.bucket.delete(p).await?;
                self.index.remove(p);
                r.partials_deleted += 1;
            }
        }
        Ok(())
    }

    /// True if and only if every commit of the segment at `seg` is already in `minute`
    /// (a retried upload that landed late), or the segment is gone.
    async fn repeats(&self, seg: &Path, minute: &Spooled) -> bool {
        let s = match spool(&self.bucket, seg, false, &self.tmp_dir).await {
            Ok(s) => s,
            Err(e) => return e.is_not_found(),
        };
        s.parts.iter().all(|sec| {
            minute.parts.iter().any(|m| {
                m.entry.connector == sec.entry.connector
                    && m.entry.generation == sec.entry.generation
                    && {
                        let have: BTreeSet<_> = std::iter::once(m.entry.prev)
                            .chain(m.heads.iter().map(|c| c.after))
                            .collect();
                        have.contains(&sec.entry.prev)
                            && sec.heads.iter().all(|c| have.contains(&c.after))
                    }
            })
        })
    }

    /// The segments of every finished minute, merged into one object each.
    async fn minutes(
        &mut self,
        r: &mut CompactReport,
        now: Time,
        settled: Time,
        horizon: Option<Time>,
        dry_run: bool,
    ) -> Result<()> {
        let mut by_minute: BTreeMap<Time, Vec<Listed>> = BTreeMap::new();
        for s in &self.index.segments {
            let m = windows::minute_of(s.entry.start());
            // Before the horizon, retention deletes the segments once the base there is
            // written: compacting them first would only cost requests.
            if horizon.is_some_and(|h| windows::minute_end(m) <= h) {
                continue;
            }
            if self.index.minute_at(m).is_none() {
                by_minute.entry(m).or_default().push(s.clone());
            }
        }
        for (m, segs) in by_minute {
            if windows::minute_end(m) > settled {
                // In order: a minute is compacted only when every earlier one is.
                break;
            }
            if dry_run {
                r.minutes += 1;
                r.segments_merged += segs.len();
                r.segments_deleted += segs.len();
                continue;
            }
            let mut parts = Vec::new();
            let mut objects = Vec::new();
            let mut sources = Vec::new();
            let mut unreadable: Vec<Gap> = Vec::new();
            for l in &segs {
                let Entry::Segment(n) = &l.entry else {
                    continue;
                };
                let got = match self.read.remove(&l.key) {
                    Some(x) => Ok(x),
                    None => self.spool(&l.key).await,
                };
                match got {
                    Ok(o) => {
                        parts.push((o.header.runs(), Vec::new()));
                        objects.push(o);
                        sources.push(name_of(&l.key));
                    }
                    Err(e) if e.is_not_found() => {
                        // Gone since the listing: the runs' numbers show the gap.
                        self.index.remove(&l.key);
                    }
                    Err(e) => {
                        r.problems.push(format!("{e}"));
                        unreadable.push(Gap {
                            run: n.run.clone(),
                            first: n.seq,
                            last: n.seq,
                            after_ms: n.time.timestamp_millis(),
                            why: format!("unreadable: {}", name_of(&l.key)),
                        });
                    }
                }
            }
            let (runs, mut gaps) = runs_and_gaps(&parts);
            gaps.extend(unreadable);
            let w = WindowName {
                start: m,
                end: windows::minute_end(m),
                level: LEVEL_MINUTE,
            };
            let meta = CompactMeta {
                org: self.keys.org.clone(),
                datahub: self.keys.datahub,
                level: LEVEL_MINUTE,
                start_ms: m.timestamp_millis(),
                end_ms: w.end.timestamp_millis(),
                time_ms: now.timestamp_millis(),
                runs,
                gaps,
                sources,
            };
            let back = match self.write_window(w, meta, objects, false).await {
                Ok(b) => b,
                Err(e) => {
                    r.problems.push(format!("{e}"));
                    break;
                }
            };
            r.minutes += 1;
            // Only the segments the minute (as read back) names.
            let ObjectHeader::Compact(h) = &back.header else {
                break;
            };
            let named: BTreeSet<&str> = h.sources.iter().map(String::as_str).collect();
            r.segments_merged += named.len();
            // The minute's partials first: while one exists, a restore may stand on it
            // and on every segment after it (catalog::stream::plan). A failure here ends
            // the pass before any later minute is compacted.
            let partials: Vec<Path> = self
                .index
                .partials_of(m)
                .iter()
                .map(|l| l.key.clone())
                .collect();
            for p in partials {
                self.bucket.delete(&p).await?;
                self.index.remove(&p);
                r.partials_deleted += 1;
            }
            for l in segs {
                if named.contains(name_of(&l.key).as_str()) {
                    self.bucket.delete(&l.key).await?;
                    self.index.remove(&l.key);
                    r.segments_deleted += 1;
                }
            }
        }
        Ok(())
    }

    /// The partial minute of the minute being captured (the agent's; `hubvault prune`
    /// writes none): when at least [`PARTIAL_AFTER`] of its segments sent before
    /// `settled` are in no partial minute yet, one object holding every commit of all its
    /// segments so far, at the key naming `[minute start, just after the newest)`; read
    /// back, then the shorter partials of the minute are deleted. It deletes no segment:
    /// they go with the whole minute. Each segment is read once (kept for the minute).
    pub async fn partial(&mut self, now: Time, settled: Time) -> Result<CompactReport> {
        let mut r = CompactReport {
            datahub: Some(self.keys.datahub),
            ..Default::default()
        };
        let m = windows::minute_of(settled);
        if self.index.minute_at(m).is_some() {
            return Ok(r);
        }
        let segs: Vec<Listed> = self
            .index
            .segments
            .iter()
            .filter(|l| windows::minute_of(l.entry.start()) == m && l.entry.start() < settled)
            .cloned()
            .collect();
        let older: Vec<Listed> = self.index.partials_of(m).to_vec();
        let reach = older.last().map(|l| l.entry.end());
        let fresh = segs
            .iter()
            .filter(|l| reach.is_none_or(|x| l.entry.start() >= x))
            .count();
        let Some(last) = segs.last() else {
            return Ok(r);
        };
        let end = last.entry.start() + chrono::TimeDelta::milliseconds(1);
        if fresh < PARTIAL_AFTER || !windows::is_partial(m, end) {
            return Ok(r);
        }
        let mut parts = Vec::new();
        let mut objects = Vec::new();
        let mut sources = Vec::new();
        let spilled = self.spilled;
        for l in &segs {
            if !self.read.contains_key(&l.key) {
                match self.spool(&l.key).await {
                    Ok(o) => {
                        self.read.insert(l.key.clone(), o);
                    }
                    Err(e) => {
                        // The minute's compaction records it; a partial never hides it.
                        r.problems.push(format!("partial minute not written: {e}"));
                        return Ok(r);
                    }
                }
            }
            let o = &self.read[&l.key];
            parts.push((o.header.runs(), Vec::new()));
            objects.push(o.clone());
            sources.push(name_of(&l.key));
        }
        let (runs, gaps) = runs_and_gaps(&parts);
        let w = WindowName {
            start: m,
            end,
            level: LEVEL_MINUTE,
        };
        let meta = CompactMeta {
            org: self.keys.org.clone(),
            datahub: self.keys.datahub,
            level: LEVEL_MINUTE,
            start_ms: m.timestamp_millis(),
            end_ms: end.timestamp_millis(),
            time_ms: now.timestamp_millis(),
            runs,
            gaps,
            sources,
        };
        let written = self.write_window(w, meta, objects, false).await;
        r.spilled = self.spilled - spilled;
        if let Err(e) = written {
            r.problems.push(format!("{e}"));
            return Ok(r);
        }
        r.partials += 1;
        for l in older {
            if l.entry.end() < end {
                self.bucket.delete(&l.key).await?;
                self.index.remove(&l.key);
                r.partials_deleted += 1;
            }
        }
        // Segments of earlier minutes are not read for a partial again.
        self.read.retain(|k, _| {
            StreamKeys::parse_segment(k).is_some_and(|n| windows::minute_of(n.time) >= m)
        });
        Ok(r)
    }

    /// Every finished mark of every parent window holding a minute.
    async fn marks(
        &mut self,
        r: &mut CompactReport,
        now: Time,
        settled: Time,
        horizon: Option<Time>,
        dry_run: bool,
    ) -> Result<()> {
        // Marks end at most a day after the minutes they hold: only the minutes of the day
        // before the last pass's settled point can still want one.
        let from = self.marks_done.map_or(Time::MIN_UTC, |t| {
            windows::day_of(t) - chrono::TimeDelta::days(1)
        });
        let mut minutes: BTreeSet<Time> = self
            .index
            .minutes_from(from)
            .iter()
            .map(|l| l.entry.start())
            .collect();
        if dry_run {
            // The minutes this pass would write.
            for s in &self.index.segments {
                let m = windows::minute_of(s.entry.start());
                if windows::minute_end(m) <= settled {
                    minutes.insert(m);
                }
            }
        }
        let existing: BTreeSet<(Time, Time)> = self
            .index
            .marks
            .iter()
            .filter(|l| l.entry.end() > from)
            .map(|l| (l.entry.start(), l.entry.end()))
            .collect();
        let mut wanted: BTreeSet<(Time, usize, Time)> = BTreeSet::new();
        for m in &minutes {
            for kind in 0..windows::MARKS.len() {
                for (p, e) in windows::marks_of_parent(kind, windows::parent_of(kind, *m)) {
                    let kept = kind != windows::MINUTE_MARK || !minute_mark_done(p, settled);
                    if kept
                        && e <= settled
                        && horizon.is_none_or(|h| e > h)
                        && !existing.contains(&(p, e))
                    {
                        wanted.insert((e, kind, p));
                    }
                }
            }
        }
        let mut all_written = true;
        for (e, _, p) in wanted {
            if dry_run {
                r.marks += 1;
                continue;
            }
            let c = stream::chain(p, false, Until::Before(e), &self.index);
            let mut parts = Vec::new();
            let mut objects = Vec::new();
            let mut sources = Vec::new();
            let mut failed = None;
            for l in &c.objects {
                match self.spool(&l.key).await {
                    Ok(o) => {
                        parts.push((o.header.runs(), o.header.gaps().to_vec()));
                        objects.push(o);
                        sources.push(name_of(&l.key));
                    }
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
            if let Some(err) = failed {
                r.problems.push(format!(
                    "mark {}..{} not written: {err}",
                    p.to_rfc3339(),
                    e.to_rfc3339()
                ));
                all_written = false;
                continue;
            }
            let (runs, gaps) = runs_and_gaps(&parts);
            let w = WindowName {
                start: p,
                end: e,
                level: LEVEL_MERGED,
            };
            let meta = CompactMeta {
                org: self.keys.org.clone(),
                datahub: self.keys.datahub,
                level: LEVEL_MERGED,
                start_ms: p.timestamp_millis(),
                end_ms: e.timestamp_millis(),
                time_ms: now.timestamp_millis(),
                runs,
                gaps,
                sources,
            };
            match self.write_window(w, meta, objects, true).await {
                Ok(_) => r.marks += 1,
                Err(err) => {
                    all_written = false;
                    r.problems.push(format!("{err}"));
                }
            }
        }
        if all_written && !dry_run {
            self.marks_done = Some(settled);
        }
        // 1-minute marks of 10 minutes long over: the next mark covers those minutes, and
        // an instant inside them reads at most nine minutes more (within the 20 requests).
        let done: Vec<Path> = self
            .index
            .marks
            .iter()
            .filter(|l| {
                let (s, e) = (l.entry.start(), l.entry.end());
                windows::mark_kind(s, e) == Some(windows::MINUTE_MARK)
                    && minute_mark_done(s, settled)
            })
            .map(|l| l.key.clone())
            .collect();
        for k in done {
            if !dry_run {
                self.bucket.delete(&k).await?;
                self.index.remove(&k);
            }
            r.marks_deleted += 1;
        }
        Ok(())
    }

    /// Each connector's base at every finished day boundary after its newest base.
    async fn bases(
        &mut self,
        r: &mut CompactReport,
        settled: Time,
        horizon: Option<Time>,
        dry_run: bool,
    ) -> Result<()> {
        let last_day = windows::day_of(settled);
        let conns: Vec<ConnectorId> = self.index.bases.keys().copied().collect();
        for c in conns {
            while let Some(newest) = self.index.bases.get(&c).and_then(|v| v.last()).cloned() {
                // The next day boundary after the newest base, if finished.
                let d = windows::day_of(newest.name.time) + chrono::TimeDelta::days(1);
                if d > last_day {
                    break;
                }
                // Days retention would delete right away are skipped, up to the one
                // that will be the chain start.
                let d = match horizon {
                    Some(h) if windows::day_of(h) > d => windows::day_of(h),
                    _ => d,
                };
                if self.failed_bases.contains(&(c, d)) {
                    break;
                }
                if dry_run {
                    // What retention then plans stands on this base, as in a real run.
                    r.bases += 1;
                    self.index.insert_base(
                        c,
                        ListedBase {
                            key: self.keys.base(c, d, &newest.name.generation),
                            name: crate::model::layout::BaseName {
                                time: d,
                                generation: newest.name.generation.clone(),
                            },
                            size: 0,
                        },
                    );
                    continue;
                }
                match self.base_at(c, &newest, d).await {
                    Ok(copied) => {
                        if copied {
                            r.bases_copied += 1;
                        } else {
                            r.bases += 1;
                        }
                    }
                    Err(e) => {
                        r.problems
                            .push(format!("base of connector {c} at {}: {e}", d.to_rfc3339()));
                        self.failed_bases.insert((c, d));
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes connector `c`'s base at day boundary `d` from its base `from`; true if and
    /// only if it was a copy (no commit in between). The state is built into a temp file
    /// and the base encoded from it as it is uploaded, then read back streamed: memory
    /// stays flat in the database's size.
    async fn base_at(&mut self, c: ConnectorId, from: &ListedBase, d: Time) -> Result<bool> {
        let plan = StreamPlan::from_index(&self.index, c, from, Until::Before(d));
        let key = self.keys.base(c, d, &from.name.generation);
        let image = {
            let dir = self.tmp_dir.clone();
            crate::blocking::blocking(move || {
                tempfile::Builder::new()
                    .prefix(".hubvault-base-")
                    .tempfile_in(&dir)
                    .map(|f| f.into_temp_path())
                    .map_err(|e| Error::io(&dir, "cannot create a temp file for a day base", e))
            })
            .await?
        };
        let built = stream::build(&self.bucket, &plan, &image).await?;
        let size;
        let copied = built.commits == 0;
        if copied {
            self.bucket.copy(&from.key, &key).await?;
            size = from.size;
        } else if let Some(there) = self.bucket.head(&key).await? {
            // Another process wrote it first: its object stands (it is checked like ours).
            size = there.size;
        } else {
            let header = BaseHeader {
                format: fmt::FORMAT,
                org: self.keys.org.clone(),
                datahub: self.keys.datahub,
                connector: c,
                generation: from.name.generation.clone(),
                page_size: built.page_size,
                page_count: built.pages,
                checksum: built.checksum,
                // The state as of its newest commit: what a restore reports.
                time_ms: built.state_time.timestamp_millis(),
                journal_mode: built.journal_mode.clone(),
            };
            let path = image.to_path_buf();
            let total = built.pages as u64 * built.page_size as u64;
            (_, size) = self
                .bucket
                .put_streamed(&key, total, move |w| {
                    let f = std::fs::File::open(&path)
                        .map_err(|e| Error::io(&path, "cannot read the day base's image", e))?;
                    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
                    fmt::encode_base_to(&header, &mut r, w)
                })
                .await?;
        }
        drop(image);
        // Read back: the image must have its chain checksum, and be the one built.
        let h = read_back_base(&self.bucket, &key).await?;
        if h.checksum != built.checksum || h.connector != c || h.generation != from.name.generation
        {
            return Err(Error::check(
                format!(
                    "{}: read back, it is not the state built",
                    self.bucket.shown(&key)
                ),
                "delete the object; the next compaction writes it again",
            ));
        }
        self.verified.insert(key.clone());
        self.index.insert_base(
            c,
            ListedBase {
                key,
                name: crate::model::layout::BaseName {
                    time: d,
                    generation: from.name.generation.clone(),
                },
                size,
            },
        );
        Ok(copied)
    }

    /// Deletes what no instant at or after `cutoff` needs: per connector, the bases
    /// before its chain start (its newest base at or before the cut-off); of the hub's
    /// objects, those that end before every connector's chain start. A chain start is
    /// read back (once per process) before anything older goes.
    pub async fn retain(&mut self, cutoff: Time, dry_run: bool) -> Result<RetainReport> {
        let mut r = RetainReport {
            datahub: Some(self.keys.datahub),
            cutoff: Some(cutoff),
            ..Default::default()
        };
        let mut delete_bases: Vec<Path> = Vec::new();
        let conns: Vec<ConnectorId> = self.index.bases.keys().copied().collect();
        for c in conns {
            let bases = self.index.bases[&c].clone();
            let i = bases
                .iter()
                .rposition(|b| b.name.time <= cutoff)
                .unwrap_or(0);
            let start = &bases[i];
            // A dry run reads back too (it only reads): what it lists is what a real run
            // deletes. Only the day bases its compaction planned are not there to read.
            if i > 0 && !self.verified.contains(&start.key) {
                let ok = match read_back_base(&self.bucket, &start.key).await {
                    Ok(_) => Ok(true),
                    Err(e) if dry_run && e.is_not_found() => Ok(false),
                    Err(e) => Err(e.to_string()),
                };
                match ok {
                    Ok(read) => {
                        if read {
                            self.verified.insert(start.key.clone());
                        }
                    }
                    Err(e) => {
                        r.problems.push(format!(
                            "connector {c}: its chain start cannot be read back ({e}); nothing older is deleted"
                        ));
                        r.chain_starts.insert(c, bases[0].name.time);
                        r.bases_kept += bases.len();
                        continue;
                    }
                }
            }
            r.chain_starts.insert(c, start.name.time);
            r.bases_kept += bases.len() - i;
            delete_bases.extend(bases[..i].iter().map(|b| b.key.clone()));
        }
        // Of the hub's objects, those every chain has passed. Without any base, nothing
        // can be restored from them: those before the cut-off go.
        let floor = r.chain_starts.values().min().copied().unwrap_or(cutoff);
        let mut delete_objects: Vec<(Time, Path)> = Vec::new();
        for l in self.index.objects() {
            let gone = match l.entry {
                Entry::Segment(_) => l.entry.start() < floor,
                Entry::Window(_) => l.entry.end() <= floor,
            };
            if gone {
                delete_objects.push((l.entry.end(), l.key.clone()));
            } else {
                r.objects_kept += 1;
            }
        }
        delete_objects.sort();
        let keys: Vec<Path> = delete_objects
            .into_iter()
            .map(|(_, k)| k)
            .chain(delete_bases)
            .collect();
        r.delete = keys.iter().map(|k| k.to_string()).collect();
        if !dry_run {
            for k in &keys {
                self.bucket.delete(k).await?;
                self.index.remove(k);
            }
        }
        Ok(r)
    }
}

/// The hubs that have a stream under `org` (one delimiter LIST of `{org}/stream/`).
pub async fn hubs(bucket: &Bucket, org: &OrgSlug) -> Result<Vec<DatahubId>> {
    let dir = Path::from_iter([org.as_str(), "stream"]);
    Ok(bucket
        .list_prefixes(&dir)
        .await?
        .into_iter()
        .filter_map(|n| DatahubId::parse(&n).ok())
        .collect())
}

/// When `prune` calls a window finished: `now` less [`PRUNE_GRACE`]. (A hub's own bound
/// comes on top: [`Compactor::prune_settled`].)
pub fn prune_settled(now: Time) -> Time {
    now - PRUNE_GRACE
}

/// The instant before which marks and bases are not written, for a cut-off: the day of
/// the cut-off (its base is the chain start retention keeps).
pub fn horizon(cutoff: Time) -> Time {
    windows::day_of(cutoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stream::{Commit, Section};
    use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};

    fn org() -> OrgSlug {
        OrgSlug::parse("acme").unwrap()
    }

    /// Commits of random pages (some past a spool's threshold), sizes shrinking and
    /// growing back, `after` numbered from `first`.
    fn commits(rng: &mut StdRng, first: u128, n: usize) -> Vec<Commit> {
        (0..n)
            .map(|k| {
                let db_pages = rng.random_range(40..140u32);
                let mut pgnos: Vec<u32> = (1..=db_pages)
                    .filter(|_| rng.random_range(0..3) == 0)
                    .collect();
                pgnos.dedup();
                Commit {
                    time_ms: 1000 + (first as i64) * 10 + k as i64,
                    db_pages,
                    after: ChainSum(first + k as u128),
                    pages: pgnos
                        .into_iter()
                        .map(|p| {
                            let mut page = vec![0u8; 4096];
                            rng.fill_bytes(&mut page[..64]);
                            (p, page)
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn section(conn: ConnectorId, generation: &str, prev: u128, commits: Vec<Commit>) -> Section {
        Section {
            connector: conn,
            generation: generation.to_string(),
            page_size: 4096,
            prev: ChainSum(prev),
            commits,
        }
    }

    /// The random source of a seeded test: seed 13, or `HUBVAULT_SEED` to sweep others
    /// (printed, so a failure names its seed).
    fn seeded() -> StdRng {
        let seed = std::env::var("HUBVAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(13u64);
        eprintln!("HUBVAULT_SEED={seed}");
        StdRng::seed_from_u64(seed)
    }

    /// The merge index against a map of (object, offset) pairs, the rule it replaces:
    /// random commits growing and shrinking, in both of its forms. Seeded ([`seeded`]).
    #[test]
    fn the_merge_index_keeps_what_a_map_keeps_dense_or_sparse() {
        let mut rng = seeded();
        for (highest, written) in [(500u32, 1_000u64), (500, 10)] {
            let mut idx = NewestPages::new(highest, written);
            assert_eq!(
                matches!(idx, NewestPages::Dense { .. }),
                written == 1_000,
                "dense when no larger than 16 bytes a page written"
            );
            let mut want: BTreeMap<u32, (usize, u64)> = BTreeMap::new();
            for o in 0..40usize {
                let size = rng.random_range(1..=highest);
                for _ in 0..rng.random_range(0..30) {
                    let p = rng.random_range(1..=size);
                    let off = rng.random_range(0..1u64 << 39);
                    idx.insert(p, o, off).unwrap();
                    want.insert(p, (o, off));
                }
                idx.truncate(size);
                want.retain(|p, _| *p <= size);
                for p in 0..=highest + 1 {
                    assert_eq!(idx.get(p), want.get(&p).copied(), "page {p}");
                }
            }
        }
    }

    /// A VACUUM of a 1 GiB database merged: one commit of 250,000 pages indexes in 8
    /// bytes a page (a map of (object, offset) pairs took about 40).
    #[test]
    fn the_merge_index_of_a_vacuum_is_eight_bytes_a_page() {
        let pages = 250_000u32;
        let mut idx = NewestPages::new(pages, pages as u64);
        for p in 1..=pages {
            idx.insert(p, 0, p as u64 * 4100).unwrap();
        }
        assert!(
            idx.heap_bytes() <= (pages as usize + 1) * 8,
            "{}",
            idx.heap_bytes()
        );
        assert_eq!(idx.get(pages), Some((0, pages as u64 * 4100)));
        assert!(
            idx.insert(1, 0, 1 << 40).is_err(),
            "an offset past 40 bits is refused"
        );
    }

    /// Compaction's streamed path (segments read through into spools, sections chained
    /// and merged from them) writes what the in-memory rule writes: chaining trims a
    /// retried upload and keeps a break, merging keeps the newest image of each page and
    /// zeros for a page cut off and grown back. Seeded ([`seeded`]).
    #[test]
    fn sections_composed_from_spools_equal_the_in_memory_chain_and_merge() {
        let mut rng = seeded();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (ConnectorId::random(), ConnectorId::random());
        let (ga, gb) = (fmt::new_generation(), fmt::new_generation());
        let a1 = commits(&mut rng, 10, 3);
        let mut a2 = a1.clone();
        a2.extend(commits(&mut rng, 13, 2));
        let a3 = commits(&mut rng, 15, 2);
        let segments = [
            vec![
                section(a, &ga, 9, a1),
                section(b, &gb, 99, commits(&mut rng, 100, 1)),
            ],
            // A retried upload: the first attempt's commits again, and two more.
            vec![section(a, &ga, 9, a2)],
            // A break for b.
            vec![
                section(b, &gb, 500, commits(&mut rng, 501, 2)),
                section(a, &ga, 14, a3),
            ],
        ];
        let mut sources = Vec::new();
        let mut all: Vec<Section> = Vec::new();
        for (i, secs) in segments.iter().enumerate() {
            let bytes =
                fmt::encode_segment(&org(), DatahubId::random(), "0a0b0c0d", i as u64, 5, secs)
                    .unwrap();
            let s = spool_from(&mut &bytes[..], "seg", true, dir.path()).unwrap();
            assert_eq!(s.parts.len(), secs.len());
            sources.push(std::sync::Arc::new(s));
            all.extend(secs.iter().cloned());
        }
        assert!(
            sources.iter().any(|s| s.spilled() > 0),
            "a source past the threshold is in a temp file"
        );
        // The in-memory rule: grouped by connector and generation, chained, merged.
        let grouped: Vec<Vec<Section>> = [a, b]
            .iter()
            .map(|c| all.iter().filter(|s| s.connector == *c).cloned().collect())
            .collect();
        for merge in [false, true] {
            let want: Vec<Section> = grouped
                .iter()
                .cloned()
                .flat_map(fmt::chain_sections)
                .map(|s| if merge { fmt::merge_section(s) } else { s })
                .collect();
            let (entries, bodies) = compose(&sources, merge, dir.path()).unwrap();
            let meta = CompactMeta {
                org: org(),
                datahub: DatahubId::random(),
                level: if merge { LEVEL_MERGED } else { LEVEL_MINUTE },
                start_ms: 0,
                end_ms: 60_000,
                time_ms: 1,
                runs: vec![],
                gaps: vec![],
                sources: vec![],
            };
            let mut header = fmt::compact_header(&meta, entries);
            let mut out = Vec::new();
            fmt::assemble_compact_to(&mut header, &mut bodies.reader().unwrap(), &mut out).unwrap();
            let h = fmt::decode_compact_header(&out, "minute").unwrap();
            let got: Vec<Section> = h
                .sections
                .iter()
                .map(|e| fmt::decode_section(&out, e, "minute").unwrap())
                .collect();
            assert_eq!(got.len(), want.len(), "merge {merge}");
            assert_eq!(got, want, "merge {merge}");
            // The table says what encode_compact's says (the compressed bytes differ:
            // streamed zstd frames).
            let whole = fmt::encode_compact(&meta, &want).unwrap();
            let h2 = fmt::decode_compact_header(&whole, "m").unwrap();
            let said = |h: &fmt::CompactHeader| -> Vec<_> {
                h.sections
                    .iter()
                    .map(|e| {
                        let e = e.clone();
                        (
                            e.connector,
                            e.generation,
                            e.prev,
                            e.after,
                            e.commits,
                            e.first_ms,
                            e.last_ms,
                            e.plain,
                        )
                    })
                    .collect()
            };
            assert_eq!(said(&h2), said(&h), "merge {merge}");
        }
    }
}
