//! The bucket's key layout and its inverse.
//!
//! The platform's backup rule fixes the canonical key of a connector's backup:
//!
//! ```text
//! {orgSlug}/datahub/{datahubId}/connector/{connectorId}/{sqlFileName}
//! ```
//!
//! a plain SQLite file that the platform's manual restore downloads and opens. Everything
//! hubvault adds lives beside it, under `…/connector/{connectorId}/hubvault/`, which that
//! manual procedure never looks at:
//!
//! ```text
//! hubvault/latest.json                        manifest of the object now at the canonical key
//! hubvault/versions/{versionId}.db.zst        immutable, zstd-compressed history
//! hubvault/versions/{versionId}.json          its manifest
//! hubvault/drills/{stamp}-{ok|failed}.json    restore drill results (`hubvault verify`)
//! hubvault/label/{type}/{name}                empty marker: lets `status` show the source's
//!                                             name and type from one LIST, without a GET
//! hubvault/source.json                        the source object (name, type, metadata, tags)
//!                                             of the latest backup: what `restore-hub` lists
//!                                             to re-create a hub's connectors in the platform
//! ```
//!
//! A version id is `{UTC stamp}-{first 12 hex digits of sha256}`, e.g.
//! `20261124T070102.123Z-ab12cd34ef56`: it sorts by time as a string.

use object_store::path::{Path, PathPart};

use std::fmt;

use crate::error::Error;
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};

/// The folder beside the canonical object that holds everything hubvault adds.
pub const HUBVAULT_DIR: &str = "hubvault";

/// The database's file name inside the connector directory and at the end of the
/// canonical key (`sqlite.db`). A plain file name: no separators, no `..`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DbFileName(String);

impl DbFileName {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s != "."
            && s != ".."
            && s != HUBVAULT_DIR
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(DbFileName(s.to_string()))
        } else {
            Err(Error::usage(
                format!(
                    "database file name {:?} is not a plain file name (letters, digits, '.', '_', '-')",
                    crate::model::ids::printable(s)
                ),
                "connector databases are called sqlite.db; pass a path whose file name is like that",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for DbFileName {
    fn default() -> Self {
        DbFileName("sqlite.db".to_string())
    }
}

impl fmt::Display for DbFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one connector's backups in the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectorKey {
    pub org: OrgSlug,
    pub datahub: DatahubId,
    pub connector: ConnectorId,
}

impl ConnectorKey {
    pub fn new(org: OrgSlug, datahub: DatahubId, connector: ConnectorId) -> Self {
        ConnectorKey {
            org,
            datahub,
            connector,
        }
    }

    /// `{org}/datahub/{hub}/connector/{connector}`
    pub fn prefix(&self) -> Path {
        Path::from_iter([
            self.org.as_str(),
            "datahub",
            &self.datahub.to_string(),
            "connector",
            &self.connector.to_string(),
        ])
    }

    /// The platform's key: a plain SQLite file.
    pub fn canonical(&self, file: &DbFileName) -> Path {
        self.prefix().join(file.as_str())
    }

    pub fn hubvault_dir(&self) -> Path {
        self.prefix().join(HUBVAULT_DIR)
    }

    pub fn latest_manifest(&self) -> Path {
        self.hubvault_dir().join("latest.json")
    }

    pub fn versions_dir(&self) -> Path {
        self.hubvault_dir().join("versions")
    }

    pub fn version_data(&self, id: &VersionId) -> Path {
        self.versions_dir().join(format!("{}.db.zst", id.as_str()))
    }

    pub fn version_manifest(&self, id: &VersionId) -> Path {
        self.versions_dir().join(format!("{}.json", id.as_str()))
    }

    pub fn drills_dir(&self) -> Path {
        self.hubvault_dir().join("drills")
    }

    pub fn drill(&self, stamp: &str, ok: bool) -> Path {
        self.drills_dir()
            .join(format!("{stamp}-{}.json", if ok { "ok" } else { "failed" }))
    }

    /// Empty marker rewritten (at most once a minute) while continuous capture uploads
    /// this connector's commits: its Last-Modified tells `status` how fresh the stream
    /// is, from the same LIST that finds the canonical object.
    pub fn stream_marker(&self) -> Path {
        self.hubvault_dir().join("stream").join("head")
    }

    /// The source object of the latest backup ([`crate::model::source`]), rewritten by
    /// every upload.
    pub fn source(&self) -> Path {
        self.hubvault_dir().join("source.json")
    }

    pub fn labels_dir(&self) -> Path {
        self.hubvault_dir().join("label")
    }

    /// The label marker; name and type are percent-encoded by `PathPart`, so any text
    /// is safe in a key (and cut to keep keys well under S3's 1024 bytes).
    pub fn label(&self, source_type: &str, name: &str) -> Path {
        self.labels_dir()
            .join(PathPart::from(truncate(source_type, 100)))
            .join(PathPart::from(truncate(name, 200)))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.is_empty() {
        return "-";
    }
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `{UTC stamp}-{sha256 prefix}`: names one kept version of a connector's database.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId(String);

impl VersionId {
    pub const STAMP_FORMAT: &'static str = "%Y%m%dT%H%M%S%.3fZ";

    pub fn new(at: chrono::DateTime<chrono::Utc>, sha256_hex: &str) -> Self {
        VersionId(format!(
            "{}-{}",
            stamp(at),
            &sha256_hex[..12.min(sha256_hex.len())]
        ))
    }

    /// Parses a version id as printed by `hubvault versions`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = s.len() == 20 + 1 + 12
            && Self::time_of(s).is_some()
            && s.as_bytes()[20] == b'-'
            && s[21..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if ok {
            Ok(VersionId(s.to_string()))
        } else {
            Err(Error::usage(
                format!("version id {s:?} is not of the form 20261124T070102.123Z-ab12cd34ef56"),
                "copy a version id from `hubvault versions --datahub ID --connector ID`",
            ))
        }
    }

    fn time_of(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let stamp = s.get(..20)?;
        chrono::NaiveDateTime::parse_from_str(stamp, Self::STAMP_FORMAT)
            .ok()
            .map(|t| t.and_utc())
    }

    /// When the snapshot of this version was taken.
    pub fn time(&self) -> chrono::DateTime<chrono::Utc> {
        Self::time_of(&self.0).expect("a VersionId is valid by construction")
    }

    pub fn sha_prefix(&self) -> &str {
        &self.0[21..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for VersionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for VersionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        VersionId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A UTC time as used in keys: sortable as a string, millisecond precision.
pub fn stamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format(VersionId::STAMP_FORMAT).to_string()
}

/// True if and only if `s` is exactly what [`stamp`] writes for some time.
pub fn is_stamp(s: &str) -> bool {
    VersionId::time_of(s).is_some_and(|t| s.len() == 20 && stamp(t) == s)
}

/// What a key in the bucket is, read back from the key alone (the inverse of the
/// constructors above). Keys that are not ours come back as `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// The platform's canonical object, with its file name.
    Canonical(DbFileName),
    LatestManifest,
    VersionData(VersionId),
    VersionManifest(VersionId),
    Drill {
        stamp: String,
        ok: bool,
    },
    Label {
        source_type: String,
        name: String,
    },
    /// The continuous-capture marker ([`ConnectorKey::stream_marker`]).
    StreamMarker,
    /// The source object of the latest backup ([`ConnectorKey::source`]).
    Source,
}

/// Splits a key into the connector it belongs to and what it is.
pub fn parse_key(key: &Path) -> Option<(ConnectorKey, KeyKind)> {
    let parts: Vec<String> = key.parts().map(|p| decode(p.as_ref())).collect();
    let [org, d, hub, c, conn, rest @ ..] = parts.as_slice() else {
        return None;
    };
    if d != "datahub" || c != "connector" {
        return None;
    }
    let ck = ConnectorKey::new(
        OrgSlug::parse(org).ok()?,
        DatahubId::parse(hub).ok()?,
        ConnectorId::parse(conn).ok()?,
    );
    let kind = match rest {
        [file] => KeyKind::Canonical(DbFileName::parse(file).ok()?),
        [h, latest] if h == HUBVAULT_DIR && latest == "latest.json" => KeyKind::LatestManifest,
        [h, source] if h == HUBVAULT_DIR && source == "source.json" => KeyKind::Source,
        [h, v, name] if h == HUBVAULT_DIR && v == "versions" => {
            if let Some(id) = name.strip_suffix(".db.zst") {
                KeyKind::VersionData(VersionId::parse(id).ok()?)
            } else {
                KeyKind::VersionManifest(VersionId::parse(name.strip_suffix(".json")?).ok()?)
            }
        }
        [h, d, name] if h == HUBVAULT_DIR && d == "drills" => {
            let stem = name.strip_suffix(".json")?;
            let (stamp, result) = stem.rsplit_once('-')?;
            // Only a stamp this module writes: anything else would not round-trip
            // (found by the `keys` fuzz target, fuzz/regressions/keys/).
            if !is_stamp(stamp) {
                return None;
            }
            let ok = match result {
                "ok" => true,
                "failed" => false,
                _ => return None,
            };
            KeyKind::Drill {
                stamp: stamp.to_string(),
                ok,
            }
        }
        [h, s, head] if h == HUBVAULT_DIR && s == "stream" && head == "head" => {
            KeyKind::StreamMarker
        }
        [h, l, t, n] if h == HUBVAULT_DIR && l == "label" => KeyKind::Label {
            source_type: t.clone(),
            name: n.clone(),
        },
        _ => return None,
    };
    // Only a key this module writes: one whose parts decode to ours but are written
    // otherwise (`{id}%2Ejson`, a hub id with `%2D`) is a stranger's, and the key rebuilt
    // from it would name another object. (Labels carry encoded names: not rebuilt.)
    let rebuilt = match &kind {
        KeyKind::Canonical(f) => ck.canonical(f),
        KeyKind::LatestManifest => ck.latest_manifest(),
        KeyKind::Source => ck.source(),
        KeyKind::VersionData(v) => ck.version_data(v),
        KeyKind::VersionManifest(v) => ck.version_manifest(v),
        KeyKind::Drill { stamp, ok } => ck.drill(stamp, *ok),
        KeyKind::StreamMarker => ck.stream_marker(),
        KeyKind::Label { .. } => return Some((ck, kind)),
    };
    (rebuilt.as_ref() == key.as_ref()).then_some((ck, kind))
}

/// Where a hub's continuous stream lives: `{org}/stream/{datahubId}/`, OUTSIDE
/// `{org}/datahub/`, so that `status` (one LIST of `{org}/datahub/`) never pages through
/// segments (docs/CONTINUOUS.md):
///
/// ```text
/// {org}/stream/{datahubId}/L0/{YYYYMMDDTHH}/{stamp}-{run}-{seq:08}.hvs    one tick of the hub
/// {org}/stream/{datahubId}/L0/{YYYYMMDDTHH}/{start}-{stamp}.hvs          a partial minute (to `stamp`)
/// {org}/stream/{datahubId}/L0/{YYYYMMDDTHH}/{start}-{end}.hvs            a 1-minute mark
/// {org}/stream/{datahubId}/L1/{YYYYMMDDTHH}/{start}-{end}.hvs            one minute, compacted
/// {org}/stream/{datahubId}/L2/{YYYYMMDD}/{start}-{end}.hvs               a mark (model::windows)
/// {org}/stream/{datahubId}/base/{connectorId}/{stamp}-{generation}.hvb   a chain's start
/// ```
///
/// Time-derived names: capture writes without listing, and a restore lists only the
/// hours it needs (a listing that starts after a key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamKeys {
    pub org: OrgSlug,
    pub datahub: DatahubId,
}

/// A segment's name, read back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    pub time: chrono::DateTime<chrono::Utc>,
    pub run: String,
    pub seq: u64,
}

/// A compacted window's name, read back: level 1 (a minute, every commit) or 2 (a mark,
/// merged and cumulative; [`crate::model::windows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WindowName {
    pub start: chrono::DateTime<chrono::Utc>,
    pub end: chrono::DateTime<chrono::Utc>,
    pub level: u8,
}

/// A compacted window's stamps: minutes, UTC (`20261124T0701`).
const WINDOW_STAMP: &str = "%Y%m%dT%H%M";

fn window_stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format(WINDOW_STAMP).to_string()
}

fn parse_window_stamp(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if s.len() != 13 {
        return None;
    }
    let t = chrono::NaiveDateTime::parse_from_str(&format!("{s}00"), "%Y%m%dT%H%M%S")
        .ok()?
        .and_utc();
    (window_stamp(t) == s).then_some(t)
}

/// A base's name, read back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BaseName {
    pub time: chrono::DateTime<chrono::Utc>,
    pub generation: String,
}

impl StreamKeys {
    pub fn new(org: OrgSlug, datahub: DatahubId) -> Self {
        StreamKeys { org, datahub }
    }

    /// `{org}/stream/{datahubId}`
    pub fn prefix(&self) -> Path {
        Path::from_iter([self.org.as_str(), "stream", &self.datahub.to_string()])
    }

    pub fn segments_dir(&self) -> Path {
        self.prefix().join("L0")
    }

    /// The folder of one hour of segments: the point a restore's listing starts after.
    pub fn segment_hour(&self, at: chrono::DateTime<chrono::Utc>) -> Path {
        self.segments_dir()
            .join(at.format("%Y%m%dT%H").to_string().as_str())
    }

    pub fn segment(&self, at: chrono::DateTime<chrono::Utc>, run: &str, seq: u64) -> Path {
        self.segment_hour(at)
            .join(format!("{}-{run}-{seq:08}.hvs", stamp(at)).as_str())
    }

    /// Level 1: one object per minute, in a folder per hour.
    pub fn minutes_dir(&self) -> Path {
        self.prefix().join("L1")
    }

    pub fn minutes_hour(&self, at: chrono::DateTime<chrono::Utc>) -> Path {
        self.minutes_dir()
            .join(at.format("%Y%m%dT%H").to_string().as_str())
    }

    /// The minute starting at `start` (a whole minute).
    pub fn minute(&self, start: chrono::DateTime<chrono::Utc>) -> Path {
        let end = crate::model::windows::minute_end(start);
        self.minutes_hour(start)
            .join(format!("{}-{}.hvs", window_stamp(start), window_stamp(end)).as_str())
    }

    /// A partial minute `[start, end)` (`end` inside the minute, to the millisecond),
    /// beside the segments it holds: a restore of a recent instant lists both at once.
    pub fn partial(
        &self,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Path {
        self.segment_hour(start)
            .join(format!("{}-{}.hvs", window_stamp(start), stamp(end)).as_str())
    }

    /// Level 2: the marks, in a folder per day (1-minute marks: beside the segments, in
    /// the folder of their hour).
    pub fn marks_dir(&self) -> Path {
        self.prefix().join("L2")
    }

    pub fn marks_day(&self, at: chrono::DateTime<chrono::Utc>) -> Path {
        self.marks_dir()
            .join(at.format("%Y%m%d").to_string().as_str())
    }

    pub fn mark(
        &self,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Path {
        let name = format!("{}-{}.hvs", window_stamp(start), window_stamp(end));
        if crate::model::windows::mark_kind(start, end) == Some(crate::model::windows::MINUTE_MARK)
        {
            self.segment_hour(start).join(name.as_str())
        } else {
            self.marks_day(start).join(name.as_str())
        }
    }

    /// The key of a compacted window.
    pub fn window(&self, w: &WindowName) -> Path {
        if w.level == 1 {
            if crate::model::windows::is_partial(w.start, w.end) {
                self.partial(w.start, w.end)
            } else {
                self.minute(w.start)
            }
        } else {
            self.mark(w.start, w.end)
        }
    }

    /// A level-1 or level-2 key, read back; only what [`StreamKeys::minute`] and
    /// [`StreamKeys::mark`] write (a window that is not a whole minute or a mark, or sits
    /// in another folder, is not ours).
    pub fn parse_window(key: &Path) -> Option<WindowName> {
        let all: Vec<String> = key.parts().map(|p| p.as_ref().to_string()).collect();
        let [.., level, folder, name] = all.as_slice() else {
            return None;
        };
        use crate::model::windows::{MINUTE_MARK, is_partial, mark_kind, minute_end, minute_of};
        let (a, b) = name.strip_suffix(".hvs")?.split_once('-')?;
        let start = parse_window_stamp(a)?;
        let hour = *folder == start.format("%Y%m%dT%H").to_string();
        let w = match level.as_str() {
            "L0" => {
                // A partial minute (its end to the millisecond) or a 1-minute mark.
                if let Some(end) = is_stamp(b).then(|| VersionId::time_of(b)).flatten() {
                    (hour && is_partial(start, end) && stamp(end) == b).then_some(WindowName {
                        start,
                        end,
                        level: 1,
                    })?
                } else {
                    let end = parse_window_stamp(b)?;
                    (hour && mark_kind(start, end) == Some(MINUTE_MARK)).then_some(WindowName {
                        start,
                        end,
                        level: 2,
                    })?
                }
            }
            "L1" => {
                let end = parse_window_stamp(b)?;
                (hour && minute_of(start) == start && end == minute_end(start)).then_some(
                    WindowName {
                        start,
                        end,
                        level: 1,
                    },
                )?
            }
            "L2" => {
                let end = parse_window_stamp(b)?;
                let kind = mark_kind(start, end)?;
                (kind != MINUTE_MARK && *folder == start.format("%Y%m%d").to_string()).then_some(
                    WindowName {
                        start,
                        end,
                        level: 2,
                    },
                )?
            }
            _ => return None,
        };
        Some(w)
    }

    pub fn bases_dir(&self, connector: ConnectorId) -> Path {
        self.prefix()
            .join("base")
            .join(connector.to_string().as_str())
    }

    pub fn base(
        &self,
        connector: ConnectorId,
        at: chrono::DateTime<chrono::Utc>,
        generation: &str,
    ) -> Path {
        self.bases_dir(connector)
            .join(format!("{}-{generation}.hvb", stamp(at)).as_str())
    }

    pub fn parse_segment(key: &Path) -> Option<SegmentName> {
        let name = key.filename()?.strip_suffix(".hvs")?;
        let (st, rest) = name.split_once('-')?;
        let (run, seq) = rest.split_once('-')?;
        if !is_stamp(st)
            || run.len() != 8
            || !run.bytes().all(|b| b.is_ascii_hexdigit())
            || seq.len() != 8
        {
            return None;
        }
        Some(SegmentName {
            time: VersionId::time_of(st)?,
            run: run.to_string(),
            seq: seq.parse().ok()?,
        })
    }

    pub fn parse_base(key: &Path) -> Option<BaseName> {
        let name = key.filename()?.strip_suffix(".hvb")?;
        let (st, generation) = name.split_once('-')?;
        if !is_stamp(st) || generation.len() != 16 {
            return None;
        }
        Some(BaseName {
            time: VersionId::time_of(st)?,
            generation: generation.to_string(),
        })
    }
}

fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ck() -> ConnectorKey {
        ConnectorKey::new(
            OrgSlug::parse("acme").unwrap(),
            DatahubId::parse("6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01").unwrap(),
            ConnectorId::parse("0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10").unwrap(),
        )
    }

    #[test]
    fn a_key_whose_parts_only_decode_to_ours_is_not_ours() {
        let id = VersionId::parse("20261124T070102.123Z-ab12cd34ef56").unwrap();
        let ours = ck().version_manifest(&id);
        assert!(parse_key(&ours).is_some());
        for other in [
            ours.as_ref().replace(".json", "%2Ejson"),
            ours.as_ref().replace("6f1c2a9e-", "6f1c2a9e%2D"),
            ours.as_ref().replace("/versions/", "/version%73/"),
        ] {
            let key = Path::parse(&other).unwrap();
            assert_eq!(parse_key(&key), None, "{other}");
        }
    }

    #[test]
    fn canonical_key_is_exactly_the_platforms_layout() {
        assert_eq!(
            ck().canonical(&DbFileName::default()).as_ref(),
            "acme/datahub/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/connector/0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10/sqlite.db"
        );
    }

    #[test]
    fn every_key_round_trips_through_parse_key() {
        let k = ck();
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T07:01:02.123Z")
            .unwrap()
            .to_utc();
        let v = VersionId::new(
            at,
            "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56abcd",
        );
        assert_eq!(v.as_str(), "20261124T070102.123Z-ab12cd34ef56");
        assert_eq!(v.time(), at);
        let cases = [
            (
                k.canonical(&DbFileName::default()),
                KeyKind::Canonical(DbFileName::default()),
            ),
            (k.latest_manifest(), KeyKind::LatestManifest),
            (k.stream_marker(), KeyKind::StreamMarker),
            (k.source(), KeyKind::Source),
            (k.version_data(&v), KeyKind::VersionData(v.clone())),
            (k.version_manifest(&v), KeyKind::VersionManifest(v.clone())),
            (
                k.drill("20261124T070102.123Z", false),
                KeyKind::Drill {
                    stamp: "20261124T070102.123Z".into(),
                    ok: false,
                },
            ),
            (
                k.label("hrb-cellario", "Cellario / Cell #2 100%"),
                KeyKind::Label {
                    source_type: "hrb-cellario".into(),
                    name: "Cellario / Cell #2 100%".into(),
                },
            ),
        ];
        for (key, kind) in cases {
            // Through a string, as a LIST returns it.
            let listed = Path::parse(key.as_ref()).unwrap();
            assert_eq!(parse_key(&listed), Some((k.clone(), kind)), "{key}");
        }
    }

    #[test]
    fn stream_keys_sort_by_time_and_round_trip() {
        let k = ck();
        let sk = StreamKeys::new(k.org.clone(), k.datahub);
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T07:01:02.123Z")
            .unwrap()
            .to_utc();
        let seg = sk.segment(at, "0a0b0c0d", 12);
        assert_eq!(
            seg.as_ref(),
            "acme/stream/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/L0/20261124T07/20261124T070102.123Z-0a0b0c0d-00000012.hvs"
        );
        let n = StreamKeys::parse_segment(&Path::parse(seg.as_ref()).unwrap()).unwrap();
        assert_eq!((n.time, n.run.as_str(), n.seq), (at, "0a0b0c0d", 12));
        let base = sk.base(k.connector, at, "0123456789abcdef");
        let b = StreamKeys::parse_base(&base).unwrap();
        assert_eq!((b.time, b.generation.as_str()), (at, "0123456789abcdef"));
        assert!(sk.segment_hour(at).as_ref() < seg.as_ref());
        // Compacted windows: a minute and a mark.
        let m = chrono::DateTime::parse_from_rfc3339("2026-11-24T07:01:00Z")
            .unwrap()
            .to_utc();
        let minute = sk.minute(m);
        assert_eq!(
            minute.as_ref(),
            "acme/stream/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/L1/20261124T07/20261124T0701-20261124T0702.hvs"
        );
        let w = StreamKeys::parse_window(&Path::parse(minute.as_ref()).unwrap()).unwrap();
        assert_eq!((w.level, w.start, sk.window(&w)), (1, m, minute.clone()));
        let p = chrono::DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z")
            .unwrap()
            .to_utc();
        let mark = sk.mark(p, p + chrono::TimeDelta::hours(2));
        assert_eq!(
            mark.as_ref(),
            "acme/stream/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/L2/20261124/20261124T0600-20261124T0800.hvs"
        );
        let w = StreamKeys::parse_window(&mark).unwrap();
        assert_eq!((w.level, sk.window(&w)), (2, mark));
        // Beside the segments: a 1-minute mark and a partial minute.
        let m1 = sk.mark(
            m - chrono::TimeDelta::minutes(1),
            m + chrono::TimeDelta::minutes(2),
        );
        assert_eq!(
            m1.as_ref(),
            "acme/stream/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/L0/20261124T07/20261124T0700-20261124T0703.hvs"
        );
        let w = StreamKeys::parse_window(&m1).unwrap();
        assert_eq!((w.level, sk.window(&w)), (2, m1));
        let x = m + chrono::TimeDelta::milliseconds(17_250);
        let partial = sk.partial(m, x);
        assert_eq!(
            partial.as_ref(),
            "acme/stream/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/L0/20261124T07/20261124T0701-20261124T070117.250Z.hvs"
        );
        let w = StreamKeys::parse_window(&partial).unwrap();
        assert_eq!(
            (w.level, w.start, w.end, sk.window(&w)),
            (1, m, x, partial.clone())
        );
        assert!(StreamKeys::parse_segment(&partial).is_none());
        // In key order, a minute's windows come before its segments, after the minute
        // before: a listing that stops at the first key past T stops in time order.
        assert!(partial.as_ref() < sk.segment(m, "0a0b0c0d", 1).as_ref());
        assert!(
            sk.segment(m - chrono::TimeDelta::seconds(1), "0a0b0c0d", 1)
                .as_ref()
                < partial.as_ref()
        );
        // Not ours: a window that is no mark, a minute in the wrong folder, a stamp we
        // never write.
        for bad in [
            "acme/stream/h/L2/20261124/20261124T0610-20261124T0800.hvs",
            "acme/stream/h/L1/20261124T08/20261124T0701-20261124T0702.hvs",
            "acme/stream/h/L1/20261124T07/20261124T0701-20261124T0703.hvs",
            "acme/stream/h/L1/20261124T07/20261124T07a1-20261124T0702.hvs",
            "acme/stream/h/L3/20261124/20261124T0600-20261124T0800.hvs",
            "acme/stream/h/L2/20261124/20261124T0700-20261124T0703.hvs",
            "acme/stream/h/L0/20261124T07/20261124T0700-20261124T0710.hvs",
            "acme/stream/h/L0/20261124T07/20261124T0701-20261124T070200.000Z.hvs",
        ] {
            assert_eq!(
                StreamKeys::parse_window(&Path::parse(bad).unwrap()),
                None,
                "{bad}"
            );
        }
        // Outside {org}/datahub/: the inventory's keys never include the stream.
        assert!(parse_key(&seg).is_none() && parse_key(&base).is_none());
    }

    #[test]
    fn foreign_and_hostile_keys_are_not_ours() {
        for key in [
            "acme/datahub/not-a-uuid/connector/0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10/sqlite.db",
            "acme/hub/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/connector/0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10/sqlite.db",
            "Acme/datahub/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/connector/0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10/sqlite.db",
            "acme/datahub/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/connector/0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10/hubvault/versions/x.json",
            "acme/datahub/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/connector/0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10",
            "other/file.txt",
        ] {
            assert_eq!(parse_key(&Path::parse(key).unwrap()), None, "{key}");
        }
    }

    #[test]
    fn drill_keys_with_a_stamp_we_never_write_are_not_ours() {
        // The `keys` fuzz target's regression input, and near misses.
        let base = "acme/datahub/6f1c2a9e-4b7d-4e1a-9c3f-2d8e5b7a1c01/connector/0b5e7d1a-93c2-4f6b-8a1e-7c4d2f9e3a10/hubvault/drills/";
        for stamp in [
            "20261124T07`102.123Z",
            "20261124T070102Z",
            "20261124T070102.123",
            "2026-11-24T070102.123Z",
            "",
        ] {
            let key = Path::parse(format!("{base}{stamp}-ok.json")).unwrap();
            assert_eq!(parse_key(&key), None, "{stamp:?}");
        }
        let good = Path::parse(format!("{base}20261124T070102.123Z-ok.json")).unwrap();
        assert!(matches!(
            parse_key(&good),
            Some((_, KeyKind::Drill { ok: true, .. }))
        ));
    }

    #[test]
    fn version_ids_refuse_anything_else() {
        for bad in [
            "",
            "latest",
            "20261124T070102.123Z-AB12CD34EF56",
            "20261124T070102.123Z-ab12cd34ef5",
            "../x",
        ] {
            assert!(VersionId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn db_file_names_cannot_climb_or_collide_with_our_folder() {
        assert!(DbFileName::parse("sqlite.db").is_ok());
        for bad in ["", ".", "..", "a/b", "hubvault", "x\0y", "a b"] {
            assert!(DbFileName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
