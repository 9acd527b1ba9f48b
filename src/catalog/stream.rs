//! What a hub's continuous stream holds ([`StreamIndex`]), which of its objects make the
//! state of connector C at instant T ([`plan`], [`chain`]), building that state chain
//! checked ([`build`]), and the span a connector can be restored to ([`window`]).
//!
//! Objects (docs/CONTINUOUS.md): bases (a connector's full image), segments (L0: one
//! tick of the hub), minutes (L1: every commit of a minute's segments), partial minutes
//! (every commit of the current minute's segments up to a recent instant) and marks
//! (merged, cumulative from their parent's start; `model::windows`). A chain from a
//! base's time to T takes, greedily, the mark that starts where the chain stands and
//! reaches furthest without passing T (at most one of each kind), then minute by minute
//! the minute, or its partial and the segments after it, or its segments, and, for a
//! restore `--at T`, the first object after T when the segment sent right after T may
//! still hold commits observed at or before T.
//!
//! Plan (LIST requests only, [`plan`]): the marks and the connector's bases in one
//! listing, the segments' folder (1-minute marks, partial minute, segments) from the hour
//! the marks reach, and the minutes only when no partial minute proves the chain: each
//! listing starts after a key and stops paging once past what it needs, so a restore
//! lists two or three pages for any instant, never the whole history.
//!
//! Build, into a file (memory flat in the database's size): the base's image decoded
//! page by page from a streamed GET (its chain checksum proven), then every object in
//! order, its sections for this connector and generation, commits observed at or before
//! T applied in order at their pages' offsets. The chain must hold: each section's `prev` is the state built so far (a
//! section that repeats commits already applied, as a retried upload can, is trimmed);
//! each commit's `after` is the checksum of the state after applying it. A section that
//! does not continue the chain, or a gap in a run's segment numbers / an unreadable
//! object before T that the chain did not prove harmless, is an error naming the range
//! and the nearest restorable instants, never a silently older state.

use std::collections::{BTreeMap, BTreeSet};

use std::io::Write;

use futures::StreamExt;
use object_store::path::Path;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::model::layout::{BaseName, SegmentName, StreamKeys, WindowName};
use crate::model::stream::{self, ChainSum, ObjectHeader, PageTable, Section, page_hash};
use crate::model::windows::at_ms;
use crate::store::Bucket;

type Time = chrono::DateTime<chrono::Utc>;

/// Objects fetched at once while a chain is read (they are applied in order).
const READ_AHEAD: usize = 4;

/// One object of a hub's stream, as its key tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Segment(SegmentName),
    Window(WindowName),
}

impl Entry {
    /// Segments sent at or after this instant are in it.
    pub fn start(&self) -> Time {
        match self {
            Entry::Segment(n) => n.time,
            Entry::Window(w) => w.start,
        }
    }

    /// Segments sent before this instant are in it (a segment: its own time, included).
    pub fn end(&self) -> Time {
        match self {
            Entry::Segment(n) => n.time,
            Entry::Window(w) => w.end,
        }
    }

    pub fn level(&self) -> u8 {
        match self {
            Entry::Segment(_) => 0,
            Entry::Window(w) => w.level,
        }
    }
}

/// An object of the stream found by a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: Path,
    pub entry: Entry,
    pub size: u64,
}

/// A connector's base found by a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedBase {
    pub key: Path,
    pub name: BaseName,
    pub size: u64,
}

/// What the bucket holds of one hub's stream, each level in key order (segments,
/// minutes and partial minutes: time order).
#[derive(Clone, Debug, Default)]
pub struct StreamIndex {
    pub segments: Vec<Listed>,
    pub minutes: Vec<Listed>,
    /// Partial minutes (level 1, `[minute start, x)`): the agent's, of the current minute.
    pub partials: Vec<Listed>,
    /// Level 2, every kind (1-minute marks are listed with the segments).
    pub marks: Vec<Listed>,
    pub bases: BTreeMap<ConnectorId, Vec<ListedBase>>,
}

/// Which vector of a [`StreamIndex`] an entry belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Segments,
    Minutes,
    Partials,
    Marks,
}

fn slot(e: &Entry) -> Slot {
    match e {
        Entry::Segment(_) => Slot::Segments,
        Entry::Window(w) if w.level == 1 => {
            if crate::model::windows::is_partial(w.start, w.end) {
                Slot::Partials
            } else {
                Slot::Minutes
            }
        }
        Entry::Window(_) => Slot::Marks,
    }
}

fn listed_objects(found: Vec<crate::store::bucket::ObjectInfo>) -> Vec<Listed> {
    let mut out: Vec<Listed> = found
        .into_iter()
        .filter_map(|o| {
            let entry = match StreamKeys::parse_segment(&o.key) {
                Some(n) => Entry::Segment(n),
                None => Entry::Window(StreamKeys::parse_window(&o.key)?),
            };
            Some(Listed {
                key: o.key,
                entry,
                size: o.size,
            })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

impl StreamIndex {
    /// Lists the whole stream of a hub: segments, minutes, marks and every base (four
    /// listings, each paged by 1,000 keys).
    pub async fn load(bucket: &Bucket, keys: &StreamKeys) -> Result<StreamIndex> {
        let mut idx = StreamIndex::default();
        for l in listed_objects(bucket.list(&keys.segments_dir()).await?)
            .into_iter()
            .chain(listed_objects(bucket.list(&keys.minutes_dir()).await?))
            .chain(listed_objects(bucket.list(&keys.marks_dir()).await?))
        {
            idx.insert(l);
        }
        for o in bucket.list(&keys.prefix().join("base")).await? {
            let Some(name) = StreamKeys::parse_base(&o.key) else {
                continue;
            };
            let Some(conn) = o
                .key
                .parts()
                .nth_back(1)
                .and_then(|p| ConnectorId::parse(p.as_ref()).ok())
            else {
                continue;
            };
            if keys.bases_dir(conn).parts().count() + 1 != o.key.parts().count() {
                continue;
            }
            idx.bases.entry(conn).or_default().push(ListedBase {
                key: o.key,
                name,
                size: o.size,
            });
        }
        for v in idx.bases.values_mut() {
            v.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(idx)
    }

    /// Every object of the hub (not the bases), in no particular order.
    pub fn objects(&self) -> impl Iterator<Item = &Listed> {
        self.segments
            .iter()
            .chain(self.minutes.iter())
            .chain(self.partials.iter())
            .chain(self.marks.iter())
    }

    fn slot_mut(&mut self, s: Slot) -> &mut Vec<Listed> {
        match s {
            Slot::Segments => &mut self.segments,
            Slot::Minutes => &mut self.minutes,
            Slot::Partials => &mut self.partials,
            Slot::Marks => &mut self.marks,
        }
    }

    /// Adds an object written since the listing (keeps each level in order).
    pub fn insert(&mut self, l: Listed) {
        let level = self.slot_mut(slot(&l.entry));
        match level.binary_search_by(|x| x.key.cmp(&l.key)) {
            Ok(i) => level[i] = l,
            Err(i) => level.insert(i, l),
        }
    }

    pub fn insert_base(&mut self, conn: ConnectorId, b: ListedBase) {
        let v = self.bases.entry(conn).or_default();
        match v.binary_search_by(|x| x.name.cmp(&b.name)) {
            Ok(i) => v[i] = b,
            Err(i) => v.insert(i, b),
        }
    }

    /// Forgets a deleted object or base (found by its key's kind, then by binary search).
    pub fn remove(&mut self, key: &Path) {
        let entry = match StreamKeys::parse_segment(key) {
            Some(n) => Some(Entry::Segment(n)),
            None => StreamKeys::parse_window(key).map(Entry::Window),
        };
        match entry.map(|e| self.slot_mut(slot(&e))) {
            Some(v) => {
                if let Ok(i) = v.binary_search_by(|l| l.key.cmp(key)) {
                    v.remove(i);
                }
            }
            None => {
                for v in self.bases.values_mut() {
                    v.retain(|b| &b.key != key);
                }
                self.bases.retain(|_, v| !v.is_empty());
            }
        }
    }

    /// The minutes starting at or after `t`, in order.
    pub fn minutes_from(&self, t: Time) -> &[Listed] {
        let i = self.minutes.partition_point(|l| l.entry.start() < t);
        &self.minutes[i..]
    }

    /// The level-1 minute starting at `m`, if there is one.
    pub fn minute_at(&self, m: Time) -> Option<&Listed> {
        self.minutes
            .binary_search_by(|l| l.entry.start().cmp(&m))
            .ok()
            .map(|i| &self.minutes[i])
    }

    /// The partial minutes of minute `m`, in key (= end) order.
    pub fn partials_of(&self, m: Time) -> &[Listed] {
        let i = self.partials.partition_point(|l| l.entry.start() < m);
        let j = self.partials.partition_point(|l| l.entry.start() <= m);
        &self.partials[i..j]
    }

    /// The newest instant the hub's stream has data for: the newest segment's time, or
    /// the end of the newest compacted window (less a millisecond) when all of it is
    /// compacted.
    pub fn newest(&self) -> Option<Time> {
        let seg = self.segments.last().map(|l| l.entry.end());
        let win = self
            .minutes
            .last()
            .into_iter()
            .chain(self.partials.last())
            .chain(self.marks.iter().max_by_key(|l| l.entry.end()))
            .map(|l| l.entry.end() - chrono::TimeDelta::milliseconds(1))
            .max();
        seg.max(win)
    }
}

/// How far a chain goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Everything there is.
    Newest,
    /// Commits observed at or before this instant (a restore `--at`).
    At(Time),
    /// Segments sent before this instant (compaction: a mark's end, a day's base).
    Before(Time),
}

/// The objects that take a chain from where it starts to where it stops.
#[derive(Clone, Debug, Default)]
pub struct ChainObjects {
    /// In the order they are applied.
    pub objects: Vec<Listed>,
    /// For [`Until::At`]: the first object after T. The segment sent right after T may
    /// hold commits observed at or before T (they wait up to a tick for their upload): it
    /// is read when nothing read before showed a segment sent after T.
    pub straddler: Option<Listed>,
}

/// The objects of `idx` that take a chain from `from` to `until`. `at_start`: `from` is
/// a base's time, and any object holding it may be used (the generation's sections in it
/// start at the base); otherwise `from` is a window boundary and only objects starting
/// there continue the chain.
///
/// After the marks, minute by minute: the minute if it is compacted; else its partial
/// minute reaching furthest (within `until`) and the segments sent from the partial's
/// end; else its segments. A segment inside a minute or a partial that does not name it
/// (an upload that landed late) is not read: it repeats commits the window holds.
pub fn chain(from: Time, at_start: bool, until: Until, idx: &StreamIndex) -> ChainObjects {
    let fits = |e: Time| match until {
        Until::Newest => true,
        Until::At(t) => e <= t,
        Until::Before(b) => e <= b,
    };
    let mut p = from;
    let mut first = at_start;
    let mut objects: Vec<Listed> = Vec::new();
    // Marks: the one starting where the chain stands that reaches furthest.
    loop {
        let best = idx
            .marks
            .iter()
            .filter(|m| {
                let (s, e) = (m.entry.start(), m.entry.end());
                e > p && fits(e) && (s == p || (first && s <= p))
            })
            .max_by_key(|m| m.entry.end());
        match best {
            Some(m) => {
                p = m.entry.end();
                first = false;
                objects.push(m.clone());
            }
            None => break,
        }
    }
    // Then minutes, partial minutes and the segments neither holds, in time order.
    let usable = |l: &&Listed| l.entry.end() > p && (l.entry.start() >= p || first);
    let covered: BTreeSet<Time> = idx.minutes.iter().map(|m| m.entry.start()).collect();
    // Per minute not compacted: the partial reaching furthest (within `until` when that
    // is a window's end; for a restore, past T is fine: commits after T are not applied).
    let mut partial: BTreeMap<Time, &Listed> = BTreeMap::new();
    for l in idx.partials.iter().filter(usable) {
        let m = l.entry.start();
        let within = !matches!(until, Until::Before(b) if l.entry.end() > b);
        if within && !covered.contains(&m) {
            partial.insert(m, l); // in key order: the last one reaches furthest
        }
    }
    let mut finer: Vec<&Listed> = idx
        .minutes
        .iter()
        .filter(usable)
        .chain(partial.values().copied())
        .chain(idx.segments.iter().filter(|s| {
            let t = s.entry.start();
            let m = crate::model::windows::minute_of(t);
            t >= p && !covered.contains(&m) && partial.get(&m).is_none_or(|w| t >= w.entry.end())
        }))
        .collect();
    finer.sort_by(|a, b| {
        (a.entry.start(), a.entry.level(), &a.key).cmp(&(b.entry.start(), b.entry.level(), &b.key))
    });
    let mut straddler = None;
    for l in finer {
        let take = match until {
            Until::Newest => true,
            Until::At(t) => l.entry.start() <= t,
            Until::Before(b) => match l.entry {
                Entry::Segment(_) => l.entry.start() < b,
                Entry::Window(_) => l.entry.end() <= b,
            },
        };
        if take {
            objects.push(l.clone());
        } else {
            if matches!(until, Until::At(_)) {
                straddler = Some(l.clone());
            }
            break;
        }
    }
    ChainObjects { objects, straddler }
}

/// What a restore from the stream will read.
#[derive(Clone, Debug, Serialize)]
pub struct StreamPlan {
    pub base: String,
    pub base_time: Time,
    pub generation: String,
    /// Stream objects after the base (marks, minutes, segments) read in order until T.
    pub segments: usize,
    /// The newest object's time among those listed: about the newest captured commit of
    /// the hub (for the newest state).
    pub newest_segment: Option<Time>,
    pub at: Option<Time>,
    /// LIST requests the plan made.
    pub lists: u32,
    #[serde(skip)]
    pub base_key: Path,
    #[serde(skip)]
    pub objects: Vec<Listed>,
    #[serde(skip)]
    pub straddler: Option<Listed>,
    #[serde(skip)]
    pub connector: ConnectorId,
    /// Bases after the chosen one (for "not covered up to the next base").
    #[serde(skip)]
    pub next_base: Option<Time>,
    /// The connector's oldest base: where its restorable window starts.
    #[serde(skip)]
    pub oldest_base: Time,
}

impl StreamPlan {
    /// The plan from an index already in memory (the compactor's), from `base` to
    /// `until`.
    pub fn from_index(
        idx: &StreamIndex,
        connector: ConnectorId,
        base: &ListedBase,
        until: Until,
    ) -> StreamPlan {
        let c = chain(base.name.time, true, until, idx);
        let listed = idx.bases.get(&connector);
        let next_base =
            listed.and_then(|v| v.iter().map(|b| b.name.time).find(|t| *t > base.name.time));
        let oldest_base = listed
            .and_then(|v| v.first())
            .map_or(base.name.time, |b| b.name.time.min(base.name.time));
        StreamPlan {
            base: base.key.to_string(),
            base_time: base.name.time,
            generation: base.name.generation.clone(),
            segments: c.objects.len(),
            newest_segment: c.objects.last().map(|l| l.entry.end()),
            at: match until {
                Until::At(t) => Some(t),
                _ => None,
            },
            lists: 0,
            base_key: base.key.clone(),
            objects: c.objects,
            straddler: c.straddler,
            connector,
            next_base,
            oldest_base,
        }
    }

    /// The newest instant the plan's objects hold data for (the base's time when none
    /// follows it): a newest-state plan's end of the restorable window.
    pub fn newest_data(&self) -> Time {
        self.newest_segment
            .unwrap_or(self.base_time)
            .max(self.base_time)
    }
}

fn before_t(at: Option<Time>) -> impl Fn(&Path) -> bool {
    move |k: &Path| {
        let start = StreamKeys::parse_segment(k)
            .map(|n| n.time)
            .or_else(|| StreamKeys::parse_window(k).map(|w| w.start));
        match (at, start) {
            (Some(t), Some(s)) => s <= t,
            _ => true,
        }
    }
}

/// Keys in one page of an S3 LIST answer.
const LIST_PAGE: usize = 1000;

/// The plan for `connector` of `datahub` at `at` (None: newest), or `None` when the
/// stream holds no base at or before it. LISTs only, each stopping once it has what it
/// needs (docs/CONTINUOUS.md, "What a restore reads"):
/// 1. the hub's stream from the marks of the day before T's day (newest: before today,
///    by this machine's clock) through this connector's bases, which sort after the
///    marks: the marks and the bases in one listing (when a page ends past T's marks
///    before the bases, two: that page, then the connector's bases);
/// 2. the segments' folder from the hour where those marks end, up to the first key past
///    T: the 1-minute marks, the partial minute and the segments;
/// 3. only when those do not prove the chain (no partial minute where the marks end): the
///    compacted minutes from there, up to the first past T.
///
/// And, when the base chosen is older than the day before T's (days no compactor ran),
/// the marks from the base's day.
pub async fn plan(
    bucket: &Bucket,
    org: &OrgSlug,
    datahub: DatahubId,
    connector: ConnectorId,
    at: Option<Time>,
) -> Result<Option<StreamPlan>> {
    use crate::model::windows::{day_of, minute_of};
    let keys = StreamKeys::new(org.clone(), datahub);
    // Where the marks' listing starts is only a guess at the base's day: a wrong guess
    // costs one more LIST (below), never a wrong plan.
    let from_day = day_of(at.unwrap_or_else(chrono::Utc::now)) - chrono::TimeDelta::days(1);
    let bases_dir = keys.bases_dir(connector);
    // Every key of the connector's base folder sorts before this one ('/' < '0').
    let past_bases = format!("{bases_dir}0");
    let mut idx = StreamIndex::default();
    let mut bases: Vec<ListedBase> = Vec::new();
    // One listing walks from the marks through to the bases, but an instant weeks back
    // would walk every mark since (a day's worth a day; S3 answers 1,000 keys a page).
    // Past T's marks, the listing stops at the end of a page (never asking for the
    // next), and the connector's bases are listed apart: 2 LIST whatever the instant's
    // age.
    let marks_past = at.map(|t| {
        keys.marks_day(day_of(t) + chrono::TimeDelta::days(1))
            .to_string()
    });
    let mut walked = 0usize;
    let mut cut = false;
    let mut listed = bucket
        .list_after_until(&keys.prefix(), &keys.marks_day(from_day), |k| {
            walked += 1;
            if k.as_ref() >= past_bases.as_str() {
                return false;
            }
            if walked.is_multiple_of(LIST_PAGE)
                && marks_past.as_deref().is_some_and(|p| k.as_ref() >= p)
            {
                cut = true;
                return false;
            }
            true
        })
        .await?;
    let mut lists = 1;
    if cut {
        listed.retain(|o| o.key.prefix_match(&bases_dir).is_none());
        listed.extend(bucket.list(&bases_dir).await?);
        lists += 1;
    }
    for o in listed {
        if o.key
            .prefix_match(&bases_dir)
            .is_some_and(|mut r| r.nth(1).is_none())
        {
            if let Some(name) = StreamKeys::parse_base(&o.key) {
                bases.push(ListedBase {
                    key: o.key,
                    name,
                    size: o.size,
                });
            }
        } else if let Some(w) = StreamKeys::parse_window(&o.key)
            && w.level == 2
            && at.is_none_or(|t| w.start <= t)
        {
            idx.insert(Listed {
                key: o.key,
                entry: Entry::Window(w),
                size: o.size,
            });
        }
    }
    bases.sort_by(|a, b| a.name.cmp(&b.name));
    let pick = bases
        .iter()
        .rposition(|b| at.is_none_or(|t| b.name.time <= t));
    let Some(i) = pick else { return Ok(None) };
    let base = bases[i].clone();
    let next_base = bases.get(i + 1).map(|b| b.name.time);
    let tb = base.name.time;
    if day_of(tb) < from_day {
        // (A folder's own name sorts before every key in it and after every earlier
        // folder: the listing starts there.)
        for l in listed_objects(
            bucket
                .list_after_until(&keys.marks_dir(), &keys.marks_day(tb), before_t(at))
                .await?,
        ) {
            if l.entry.level() == 2 {
                idx.insert(l);
            }
        }
        lists += 1;
    }
    let until = at.map_or(Until::Newest, Until::At);
    // Where the marks end: the segments' folder from that hour (the minute holding a
    // base's time starts before it: from that minute's hour).
    let p = chain(tb, true, until, &idx)
        .objects
        .last()
        .map_or(tb, |m| m.entry.end());
    for l in listed_objects(
        bucket
            .list_after_until(
                &keys.segments_dir(),
                &keys.segment_hour(minute_of(p)),
                before_t(at),
            )
            .await?,
    ) {
        idx.insert(l);
    }
    lists += 1;
    let mut c = chain(tb, true, until, &idx);
    // Proven without the minutes: the chain goes on from the marks' end with that
    // minute's partial. A partial exists only while its minute's segments all do and no
    // later minute is compacted (ops::compact deletes it first, and compacts in order).
    let marks_end = c
        .objects
        .iter()
        .take_while(|l| l.entry.level() == 2)
        .last()
        .map_or(tb, |m| m.entry.end());
    let proven = c
        .objects
        .iter()
        .chain(c.straddler.iter())
        .find(|l| l.entry.level() != 2)
        .is_some_and(|l| {
            slot(&l.entry) == Slot::Partials && l.entry.start() == minute_of(marks_end)
        });
    if !proven {
        for l in listed_objects(
            bucket
                .list_after_until(
                    &keys.minutes_dir(),
                    &keys.minutes_hour(minute_of(marks_end)),
                    before_t(at),
                )
                .await?,
        ) {
            if slot(&l.entry) == Slot::Minutes {
                idx.insert(l);
            }
        }
        lists += 1;
        c = chain(tb, true, until, &idx);
    }
    let newest = c
        .objects
        .iter()
        .chain(c.straddler.iter())
        .map(|l| l.entry.end())
        .max();
    Ok(Some(StreamPlan {
        base: base.key.to_string(),
        base_time: tb,
        generation: base.name.generation.clone(),
        segments: c.objects.len(),
        newest_segment: newest,
        at,
        lists,
        base_key: base.key,
        objects: c.objects,
        straddler: c.straddler,
        connector,
        next_base,
        oldest_base: bases[0].name.time,
    }))
}

/// The state built from the stream (its image is in the file [`build`] was given).
pub struct Built {
    /// The image's size in pages.
    pub pages: u32,
    /// The sha256 of the image as a plain file (journal-mode bytes 18 and 19 set to 1).
    pub plain_sha256: String,
    pub page_size: u32,
    pub journal_mode: String,
    pub checksum: ChainSum,
    /// Observed time of the newest commit applied (the base's time if none).
    pub state_time: Time,
    pub commits: u64,
    pub sections: u64,
    /// Stream objects read (not the base).
    pub segments_read: u64,
    pub warnings: Vec<String>,
}

fn broken(msg: String, restorable: Vec<String>) -> Error {
    Error::check(
        msg,
        if restorable.is_empty() {
            "restore a kept version instead (`hubvault versions`, then --version ID)".to_string()
        } else {
            format!(
                "the nearest restorable instants: {}; pass one with --at, or restore a kept version (`hubvault versions`)",
                restorable.join(", ")
            )
        },
    )
}

/// An object's header must be the one its key names: a segment its run, number and
/// stamp; a window its level, start and end. A whole, checksummed object at another's
/// key (a copy, a replacement) would otherwise pass for it: a copy of the segment before
/// reads as a retried upload and hides the commits the key's own segment held.
pub fn check_names_key(key: &Path, h: &ObjectHeader, what: &str) -> Result<()> {
    let ok = match (
        h,
        StreamKeys::parse_segment(key),
        StreamKeys::parse_window(key),
    ) {
        (ObjectHeader::Segment(h), Some(n), _) => {
            h.run == n.run && h.seq == n.seq && h.time_ms == n.time.timestamp_millis()
        }
        (ObjectHeader::Compact(h), None, Some(w)) => {
            h.level == w.level
                && h.start_ms == w.start.timestamp_millis()
                && h.end_ms == w.end.timestamp_millis()
        }
        (_, None, None) => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let says = match h {
        ObjectHeader::Segment(h) => format!(
            "segment {:08} of agent run {} sent at {}",
            h.seq,
            h.run,
            at_ms(h.time_ms).to_rfc3339()
        ),
        ObjectHeader::Compact(h) => format!(
            "level {} window {} to {}",
            h.level,
            at_ms(h.start_ms).to_rfc3339(),
            at_ms(h.end_ms).to_rfc3339()
        ),
    };
    Err(Error::check(
        format!("{what} is damaged: its header says it is {says}, not what its key names"),
        "the object was replaced or copied to the wrong key; restore an instant before it, or a kept version (`hubvault versions`)",
    ))
}

/// One object read and decoded: its header and this connector's sections.
struct Read {
    listed: Listed,
    shown: String,
    /// `None` when it vanished since the listing; `Err` when it is unreadable.
    got: Option<std::result::Result<(ObjectHeader, Vec<Section>), String>>,
}

async fn read_object(
    bucket: &Bucket,
    l: Listed,
    conn: ConnectorId,
    generation: String,
) -> Result<Read> {
    let shown = bucket.shown(&l.key);
    let bytes = match bucket.get_bytes(&l.key).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            return Ok(Read {
                listed: l,
                shown,
                got: None,
            });
        }
        Err(e) => return Err(e),
    };
    let (what, key) = (shown.clone(), l.key.clone());
    let decoded = crate::blocking::blocking(move || {
        let h = match stream::decode_object_header(&bytes, &what)
            .and_then(|h| check_names_key(&key, &h, &what).map(|()| h))
        {
            Ok(h) => h,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mut out = Vec::new();
        for e in h
            .sections()
            .iter()
            .filter(|e| e.connector == conn && e.generation == generation)
        {
            match stream::decode_section(&bytes, e, &what) {
                Ok(s) => out.push(s),
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        Ok(Ok((h, out)))
    })
    .await?;
    Ok(Read {
        listed: l,
        shown,
        got: Some(decoded),
    })
}

/// The times of the segments an object holds that were sent after `t` (a segment's own
/// time; a minute's sources), by run.
fn runs_sent_after(r: &Read, t: Time) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match &r.listed.entry {
        Entry::Segment(n) => {
            if n.time > t {
                out.insert(n.run.clone());
            }
        }
        Entry::Window(_) => {
            if let Some(Ok((ObjectHeader::Compact(h), _))) = &r.got {
                for s in &h.sources {
                    if let Some(n) = StreamKeys::parse_segment(&Path::from(s.as_str()))
                        && n.time > t
                    {
                        out.insert(n.run);
                    }
                }
            }
        }
    }
    out
}

/// Reads the plan's objects and builds the state at `plan.at` (or the newest) into the
/// file `dest` (created or truncated; the caller's temp file, discarded on an error):
/// the base's pages are written as they are decoded from its streamed GET, then each
/// commit's pages at their offsets, in order (later objects win). Memory holds one
/// stream object at a time (a few, read ahead), never the image: flat in the
/// database's size.
pub async fn build(bucket: &Bucket, plan: &StreamPlan, dest: &std::path::Path) -> Result<Built> {
    let what = bucket.shown(&plan.base_key);
    let ((header, table), _) = {
        let (what, dest) = (what.clone(), dest.to_path_buf());
        bucket
            .read_with(&plan.base_key, move |r| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&dest)
                    .map_err(|e| Error::io(&dest, "cannot create the image file", e))?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                let got = stream::decode_base_from(r, &what, &mut |_, page| {
                    w.write_all(page)
                        .map_err(|e| Error::io(&dest, "cannot write the image file", e))
                })?;
                w.flush()
                    .map_err(|e| Error::io(&dest, "cannot write the image file", e))?;
                Ok(got)
            })
            .await?
    };
    if header.connector != plan.connector || header.generation != plan.generation {
        return Err(Error::check(
            format!("{what}: the base names another connector or generation than its key"),
            "the object was copied to the wrong key; restore a kept version (`hubvault versions`)",
        ));
    }
    let file = std::sync::Arc::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dest)
            .map_err(|e| Error::io(dest, "cannot open the image file", e))?,
    );
    let ps = header.page_size;
    let mut table = table;
    let mut history: BTreeSet<ChainSum> = BTreeSet::from([table.checksum()]);
    let mut state_time = at_ms(header.time_ms);
    let (mut commits, mut sections, mut segments_read) = (0u64, 0u64, 0u64);
    let mut warnings = Vec::new();
    let at_ms_limit = plan.at.map(|t| t.timestamp_millis());
    // The first thing after the last applied section that could hide commits: a gap in
    // a run's numbers or an unreadable object. Cleared when the chain goes on past it.
    let mut suspect: Option<(String, Time)> = None;
    // Per run: the last segment number seen and when it was sent. Commits of a missing
    // segment were observed after the previous segment of its run was sent: that time is
    // the earliest instant the gap can hide.
    let mut last_seq: BTreeMap<String, (u64, Time)> = Default::default();
    let mut our_runs: BTreeSet<String> = BTreeSet::new();
    let mut after_t_runs: BTreeSet<String> = BTreeSet::new();
    let mut done = false;

    // Objects are fetched a few at a time, applied in order; the straddler only when
    // nothing read showed a segment sent after T.
    let conn = plan.connector;
    let generation = plan.generation.clone();
    let mut reads = futures::stream::iter(plan.objects.clone())
        .map(|l| read_object(bucket, l, conn, generation.clone()))
        .buffered(READ_AHEAD);
    let mut straddler_pending = plan.straddler.clone();
    loop {
        let next = match reads.next().await {
            Some(r) => Some(r?),
            None => match (straddler_pending.take(), plan.at) {
                (Some(s), Some(t)) if after_t_runs.is_empty() && !done => {
                    let _ = t;
                    Some(read_object(bucket, s, conn, generation.clone()).await?)
                }
                _ => None,
            },
        };
        let Some(r) = next else { break };
        if done {
            break;
        }
        if let Some(t) = plan.at {
            after_t_runs.extend(runs_sent_after(&r, t));
        }
        let shown = r.shown.clone();
        let start = r.listed.entry.start();
        // Run continuity: read from the key for a segment, from the header otherwise.
        let runs = match (&r.listed.entry, &r.got) {
            (_, Some(Ok((h, _)))) => h.runs(),
            (Entry::Segment(n), _) => vec![stream::RunSpan {
                run: n.run.clone(),
                first: n.seq,
                last: n.seq,
                last_ms: n.time.timestamp_millis(),
            }],
            _ => Vec::new(),
        };
        let mut since_of_this = plan.base_time;
        for span in &runs {
            let since = match last_seq.get(&span.run) {
                Some((prev, t)) => {
                    if span.first > prev + 1 && suspect.is_none() {
                        suspect = Some((
                            format!(
                                "segments {}..{} of agent run {} are missing (before {shown})",
                                prev + 1,
                                span.first - 1,
                                span.run
                            ),
                            *t,
                        ));
                    }
                    *t
                }
                None => plan.base_time,
            };
            since_of_this = since_of_this.max(since);
            if last_seq.get(&span.run).is_none_or(|(s, _)| span.last > *s) {
                last_seq.insert(span.run.clone(), (span.last, at_ms(span.last_ms)));
            }
        }
        let (h, ours) = match r.got {
            Some(Ok(x)) => x,
            None => {
                // Deleted since the listing: same as a gap.
                suspect.get_or_insert((format!("{shown} vanished"), since_of_this.min(start)));
                continue;
            }
            Some(Err(e)) => {
                suspect.get_or_insert((
                    format!("{shown} is unreadable ({e})"),
                    since_of_this.min(start),
                ));
                continue;
            }
        };
        segments_read += 1;
        // Commits of this connector in another generation after this chain's base, at
        // or before T: a second agent captured it meanwhile (a copied disk image, an old
        // hub back with the same datahub id). Which database is the connector's is not
        // ours to guess.
        let base_ms = plan.base_time.timestamp_millis();
        if let Some(e) = h.sections().iter().find(|e| {
            e.connector == plan.connector
                && e.generation != plan.generation
                && e.last_ms > base_ms
                && at_ms_limit.is_none_or(|t| e.first_ms <= t)
        }) {
            return Err(Error::check(
                format!(
                    "two agents captured connector {} at once: {shown} holds commits of generation {} from {}, after the base of generation {} ({}) this restore starts from",
                    plan.connector,
                    e.generation,
                    at_ms(e.first_ms).to_rfc3339(),
                    plan.generation,
                    plan.base_time.to_rfc3339(),
                ),
                format!(
                    "a copied disk image, or an old hub back after its connectors were restored onto a new one with the same datahub id: stop the agent that should not run; an instant before {} restores from before the overlap (--at), or restore a kept version (`hubvault versions`)",
                    plan.base_time.to_rfc3339()
                ),
            ));
        }
        if !ours.is_empty() {
            our_runs.extend(runs.iter().map(|s| s.run.clone()));
        }
        for s in ours {
            // Past T: nothing here is needed, whatever comes after.
            if at_ms_limit.is_some_and(|t| s.commits.first().is_some_and(|c| c.time_ms > t)) {
                done = true;
                break;
            }
            let current = table.checksum();
            let mut skip = 0usize;
            if s.prev != current {
                // A retried upload repeats commits already applied: trim them.
                match s.commits.iter().position(|c| c.after == current) {
                    Some(i) if history.contains(&s.prev) => skip = i + 1,
                    _ => {
                        let mut restorable = vec![format!(
                            "{} (the newest state before the break)",
                            state_time.to_rfc3339()
                        )];
                        if let Some(n) = plan.next_base {
                            restorable.push(format!("{} or later (the next base)", n.to_rfc3339()));
                        }
                        let cause = suspect
                            .as_ref()
                            .map(|(w, _)| format!("; {w}"))
                            .unwrap_or_default();
                        return Err(broken(
                            format!(
                                "the continuous chain of connector {} is broken between {} and {} (section in {shown} does not continue the state built so far{cause})",
                                plan.connector,
                                state_time.to_rfc3339(),
                                at_ms(s.commits.first().map_or(0, |c| c.time_ms)).to_rfc3339(),
                            ),
                            restorable,
                        ));
                    }
                }
            }
            suspect = None;
            sections += 1;
            let todo: Vec<stream::Commit> = s.commits.into_iter().skip(skip).collect();
            let (f, t, dest_path) = (
                file.clone(),
                std::mem::replace(&mut table, PageTable::new(ps)),
                dest.to_path_buf(),
            );
            let a =
                crate::blocking::blocking(move || Ok(apply(&f, &dest_path, t, todo, at_ms_limit)))
                    .await?;
            table = a.table;
            for (after, time_ms) in a.applied {
                history.insert(after);
                state_time = at_ms(time_ms);
                commits += 1;
            }
            match a.stop {
                Stop::Io(e) => return Err(e),
                Stop::Mismatch(time_ms) => {
                    return Err(broken(
                        format!(
                            "{shown}: applying the commit observed at {} does not give its recorded checksum",
                            at_ms(time_ms).to_rfc3339()
                        ),
                        vec![state_time.to_rfc3339()],
                    ));
                }
                Stop::PastT => {
                    done = true;
                    break;
                }
                Stop::End => {}
            }
        }
        // Segments missing inside a compacted window: as if at its end (conservative).
        for g in h.gaps() {
            suspect.get_or_insert((
                format!(
                    "segments {}..{} of agent run {} were missing when {shown} was compacted ({})",
                    g.first, g.last, g.run, g.why
                ),
                at_ms(g.after_ms),
            ));
        }
    }
    // A gap can hide commits observed after the segment before it was sent.
    if let Some((what, since)) = suspect
        && plan.at.is_none_or(|t| since < t)
    {
        return Err(broken(
            format!(
                "cannot prove the continuous chain of connector {} is complete after {}: {what}",
                plan.connector,
                state_time.to_rfc3339()
            ),
            vec![state_time.to_rfc3339()],
        ));
    }
    if let (Some(t), Some(next)) = (plan.at, plan.next_base) {
        let run_went_on = after_t_runs.iter().any(|r| our_runs.contains(r));
        if !run_went_on && next > t {
            warnings.push(format!(
                "capture was not running from {} to {}: this is the newest state captured before {}; instants in between are not covered",
                state_time.to_rfc3339(),
                next.to_rfc3339(),
                t.to_rfc3339()
            ));
        }
    }
    // The final proof: the image built, read back and hashed from scratch, has the
    // checksum the chain ends with.
    let (f, dest_path, pages) = (file.clone(), dest.to_path_buf(), table.pages());
    let (fresh, plain_sha256) =
        crate::blocking::blocking(move || rehash(&f, &dest_path, ps, pages)).await?;
    if fresh != table.checksum() {
        return Err(Error::check(
            "the state built from the stream does not have its chain checksum",
            "report this as a bug; restore a kept version (`hubvault versions`)",
        ));
    }
    Ok(Built {
        checksum: table.checksum(),
        pages,
        plain_sha256,
        page_size: ps,
        journal_mode: header.journal_mode,
        state_time,
        commits,
        sections,
        segments_read,
        warnings,
    })
}

/// Why [`apply`] stopped.
enum Stop {
    /// Every commit given was applied.
    End,
    /// A commit observed after T: it and what follows are not applied.
    PastT,
    /// The commit observed at this time did not give its recorded checksum.
    Mismatch(i64),
    Io(Error),
}

/// What [`apply`] did: the table after it, each applied commit's checksum and time.
struct Applied {
    table: PageTable,
    applied: Vec<(ChainSum, i64)>,
    stop: Stop,
}

/// Applies `commits` in order to the image in `file` (blocking): its size, then its
/// pages at their offsets; each commit's result must have its recorded checksum.
fn apply(
    file: &std::fs::File,
    path: &std::path::Path,
    mut table: PageTable,
    commits: Vec<stream::Commit>,
    limit_ms: Option<i64>,
) -> Applied {
    use std::os::unix::fs::FileExt;
    let ps = table.page_size() as u64;
    let mut applied = Vec::new();
    let mut stop = Stop::End;
    for c in commits {
        if limit_ms.is_some_and(|t| c.time_ms > t) {
            stop = Stop::PastT;
            break;
        }
        // Shrinking then growing reads as zeros, as SQLite reads a page it never wrote.
        let written = file.set_len(c.db_pages as u64 * ps).and_then(|()| {
            c.pages
                .iter()
                .try_for_each(|(p, img)| file.write_all_at(img, (*p as u64 - 1) * ps))
        });
        if let Err(e) = written {
            stop = Stop::Io(Error::io(path, "cannot write the image file", e));
            break;
        }
        for (p, img) in &c.pages {
            table.set(*p, page_hash(*p, img));
        }
        table.resize(c.db_pages);
        if table.checksum() != c.after {
            stop = Stop::Mismatch(c.time_ms);
            break;
        }
        applied.push((c.after, c.time_ms));
    }
    Applied {
        table,
        applied,
        stop,
    }
}

/// The chain checksum of the `pages` pages in `file`, hashed from scratch, and the
/// sha256 of the image as a plain file (page 1's journal-mode bytes 18 and 19 set to 1,
/// as a restore installs it), in one read through a fixed buffer.
fn rehash(
    file: &std::fs::File,
    path: &std::path::Path,
    page_size: u32,
    pages: u32,
) -> Result<(ChainSum, String)> {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let ps = page_size as usize;
    let mut t = PageTable::new(page_size);
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; ps * 256];
    let mut p = 1u32;
    while p <= pages {
        let n = (pages - p + 1).min(256) as usize;
        let b = &mut buf[..n * ps];
        file.read_exact_at(b, (p as u64 - 1) * ps as u64)
            .map_err(|e| Error::io(path, "cannot read the image file back", e))?;
        for (i, page) in b.chunks_exact(ps).enumerate() {
            t.set(p + i as u32, page_hash(p + i as u32, page));
        }
        if p == 1 && b.len() >= 20 {
            b[18] = 1;
            b[19] = 1;
        }
        sha.update(&*b);
        p += n as u32;
    }
    Ok((t.checksum(), hex::encode(sha.finalize())))
}

/// The span of instants a connector can be restored to from the stream, and what it
/// stands on.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Window {
    /// The oldest instant: the oldest base's time.
    pub from: Time,
    /// The newest instant the hub's stream holds data for.
    pub to: Time,
    /// Objects behind it: this connector's bases and the hub's stream objects (shared by
    /// the hub's connectors) from `from` on.
    pub objects: usize,
    pub bases: usize,
    pub segments: usize,
    pub minutes: usize,
    /// Partial minutes (of the minute being captured).
    pub partials: usize,
    pub marks: usize,
    /// Bytes of those objects.
    pub bytes: u64,
}

/// The span of instants `connector` can be restored to from the stream: from its oldest
/// base to the newest data after its newest base (`None` without a base). LISTs only,
/// those of the newest state's plan (at most four). The one rule for the stream's window:
/// `versions` ([`window`]) and a connector's whole restorable window
/// ([`crate::catalog::window`], restore-hub) both take it from here.
pub async fn span(
    bucket: &Bucket,
    org: &OrgSlug,
    datahub: DatahubId,
    connector: ConnectorId,
) -> Result<Option<(Time, Time)>> {
    Ok(plan(bucket, org, datahub, connector, None)
        .await?
        .map(|p| (p.oldest_base, p.newest_data())))
}

/// The restorable window `[from, to]` of `connector` with the objects behind it, counted
/// in a full index of its hub (`None` without a base).
pub fn window_of(
    idx: &StreamIndex,
    connector: ConnectorId,
    (from, to): (Time, Time),
) -> Option<Window> {
    let bases = idx.bases.get(&connector)?;
    let inside = |l: &&Listed| l.entry.end() >= from;
    let segments = idx.segments.iter().filter(inside).count();
    let minutes = idx.minutes.iter().filter(inside).count();
    let partials = idx.partials.iter().filter(inside).count();
    let marks = idx.marks.iter().filter(inside).count();
    let bytes = bases.iter().map(|b| b.size).sum::<u64>()
        + idx.objects().filter(inside).map(|l| l.size).sum::<u64>();
    Some(Window {
        from,
        to,
        objects: bases.len() + segments + minutes + partials + marks,
        bases: bases.len(),
        segments,
        minutes,
        partials,
        marks,
        bytes,
    })
}

/// The restorable window of a connector ([`span`]) and the objects behind it (lists the
/// hub's whole stream: a few LIST requests per 1,000 objects). For `hubvault versions`.
pub async fn window(
    bucket: &Bucket,
    org: &OrgSlug,
    datahub: DatahubId,
    connector: ConnectorId,
) -> Result<Option<Window>> {
    let Some(span) = span(bucket, org, datahub, connector).await? else {
        return Ok(None);
    };
    let idx = StreamIndex::load(bucket, &StreamKeys::new(org.clone(), datahub)).await?;
    Ok(window_of(&idx, connector, span))
}
