//! A connector's restorable window: the oldest and the newest instant `restore --at` can
//! give, from the continuous stream and the kept versions (a backup of the old system,
//! with no manifest and no version, has one instant: its upload).
//!
//! `restore-hub` takes the newest instant every connector of a hub can be restored to as
//! the minimum of these newest instants, and asks each connector for its state then.
//!
//! Instants are when a state was read from the database, never when it was uploaded (the
//! rule `restore` weighs its newest state by, [`crate::catalog::fetch`]): a version's is
//! its snapshot time, and the newest version's state also holds until the database was
//! last read unchanged (a backup of an unchanged database makes no version, but moves
//! `latest.json`'s `snapshot_at` on). Without that, an idle connector would hold the
//! whole hub back to its last change.

use serde::Serialize;

use crate::catalog::fetch::{self, Source};
use crate::catalog::inventory::Listed;
use crate::catalog::stream;
use crate::error::Result;
use crate::model::layout::VersionId;
use crate::store::Bucket;

type Time = chrono::DateTime<chrono::Utc>;

/// What gives a connector's newest restorable state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Newest {
    /// Continuous capture: the hub's newest segment (commits observed up to then).
    Stream,
    /// The newest complete kept version.
    Version { id: VersionId },
    /// The canonical object of a backup the old system uploaded (no manifest, no
    /// version): restorable only as it is, as of its upload.
    Legacy,
}

/// The instants a connector can be restored to.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// The oldest restorable instant: the oldest stream base or complete version.
    pub oldest: Option<Time>,
    /// The newest restorable instant; `None` when nothing is restorable.
    pub newest: Option<Time>,
    pub newest_by: Option<Newest>,
    /// The oldest stream base, if the connector has any.
    pub stream_from: Option<Time>,
    /// When the newest version's content was last read (a backup of the unchanged
    /// database, after the version): its state holds until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_read_again: Option<Time>,
    /// Times of the complete versions, newest first.
    #[serde(skip)]
    pub versions: Vec<Time>,
    /// Upload time of a legacy canonical object.
    #[serde(skip)]
    pub legacy: Option<Time>,
}

/// The window of the connector `listed` (from the inventory's listing: versions and the
/// canonical object), with the stream's span read ([`stream::span`]: at most four LISTs).
pub async fn of(bucket: &Bucket, listed: &Listed) -> Result<Window> {
    let ck = &listed.ck;
    // The stream's part: catalog::stream's one rule (also what `versions` shows).
    let span = stream::span(bucket, &ck.org, ck.datahub, ck.connector).await?;
    let (stream_from, stream_newest) = (span.map(|s| s.0), span.map(|s| s.1));
    let mut versions: Vec<(Time, VersionId)> = listed
        .versions
        .iter()
        .filter(|(_, (data, manifest))| *data && *manifest)
        .map(|(id, _)| (id.time(), id.clone()))
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    let legacy = match &listed.canonical {
        Some((_, info)) if versions.is_empty() && !listed.latest_manifest => {
            Some(info.last_modified)
        }
        _ => None,
    };
    // latest.json names the newest version and says when its content was last read.
    let version_read_again = match (&listed.canonical, versions.first()) {
        (Some((_, info)), Some((t, id))) if listed.latest_manifest => {
            match fetch::canonical_state(bucket, ck, info).await? {
                (read, Some(m)) if &m.version == id && read > *t => Some(read),
                _ => None,
            }
        }
        _ => None,
    };
    let mut candidates: Vec<(Time, Newest)> = Vec::new();
    if let Some(t) = stream_newest {
        candidates.push((t, Newest::Stream));
    }
    if let Some((t, id)) = versions.first() {
        candidates.push((
            version_read_again.unwrap_or(*t),
            Newest::Version { id: id.clone() },
        ));
    }
    if let Some(t) = legacy {
        candidates.push((t, Newest::Legacy));
    }
    let newest = candidates.into_iter().max_by(|a, b| a.0.cmp(&b.0));
    let oldest = [stream_from, versions.last().map(|v| v.0), legacy]
        .into_iter()
        .flatten()
        .min();
    Ok(Window {
        oldest,
        newest: newest.as_ref().map(|n| n.0),
        newest_by: newest.map(|n| n.1),
        stream_from,
        version_read_again,
        versions: versions.into_iter().map(|v| v.0).collect(),
        legacy,
    })
}

impl Window {
    /// Which backup gives the state at `t`: `At(t)` when a stream base or a complete
    /// version is at or before it (the fetch then picks which); the legacy canonical
    /// object when it was uploaded at or before `t` and there is nothing else; `None` when
    /// `t` is before everything restorable.
    pub fn source_at(&self, t: Time) -> Option<Source> {
        if self.stream_from.is_some_and(|s| s <= t) || self.versions.iter().any(|v| *v <= t) {
            return Some(Source::At(t));
        }
        if self.stream_from.is_none() && self.legacy.is_some_and(|l| l <= t) {
            return Some(Source::Latest);
        }
        None
    }

    /// The time of the state a restore at `t` gives, as far as the listing tells: the
    /// newest version at or before `t`, `t` itself from the stream (commits observed up to
    /// `t`; the build says exactly), the legacy object's upload time.
    pub fn state_at(&self, t: Time) -> Option<Time> {
        if self.stream_from.is_some_and(|s| s <= t) {
            return Some(t.min(self.newest.unwrap_or(t)));
        }
        if let Some(v) = self.versions.iter().find(|v| **v <= t) {
            return Some(*v);
        }
        self.legacy.filter(|l| *l <= t)
    }

    /// How far a state of time `state` is behind the connector's newest state, in
    /// seconds: from the newest version's own time when that version gives the newest
    /// instant (it was read again unchanged since, so a state as new as it is the newest).
    pub fn behind(&self, state: Option<Time>) -> Option<f64> {
        let newest = match (&self.newest_by, self.version_read_again) {
            (Some(Newest::Version { .. }), Some(_)) => self.versions.first().copied(),
            _ => self.newest,
        };
        match (newest, state) {
            (Some(n), Some(s)) => Some(((n - s).num_milliseconds().max(0)) as f64 / 1000.0),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn window(stream_from: Option<&str>, newest: Option<&str>, versions: &[&str]) -> Window {
        Window {
            oldest: None,
            newest: newest.map(t),
            newest_by: None,
            stream_from: stream_from.map(t),
            version_read_again: None,
            versions: versions.iter().map(|v| t(v)).collect(),
            legacy: None,
        }
    }

    #[test]
    fn a_time_before_everything_restorable_has_no_source() {
        let w = window(
            None,
            Some("2026-11-24T10:00:00Z"),
            &["2026-11-24T10:00:00Z"],
        );
        assert_eq!(w.source_at(t("2026-11-24T09:59:59Z")), None);
        assert_eq!(
            w.source_at(t("2026-11-24T10:00:00Z")),
            Some(Source::At(t("2026-11-24T10:00:00Z")))
        );
    }

    #[test]
    fn the_state_at_a_time_is_the_newest_version_not_after_it_or_the_stream_up_to_it() {
        let w = window(
            None,
            Some("2026-11-24T12:00:00Z"),
            &["2026-11-24T12:00:00Z", "2026-11-24T10:00:00Z"],
        );
        assert_eq!(
            w.state_at(t("2026-11-24T11:00:00Z")),
            Some(t("2026-11-24T10:00:00Z"))
        );
        let s = window(
            Some("2026-11-24T09:00:00Z"),
            Some("2026-11-24T12:00:00Z"),
            &[],
        );
        assert_eq!(
            s.state_at(t("2026-11-24T11:00:00Z")),
            Some(t("2026-11-24T11:00:00Z"))
        );
        assert_eq!(
            s.state_at(t("2026-11-24T13:00:00Z")),
            Some(t("2026-11-24T12:00:00Z"))
        );
    }

    #[test]
    fn a_legacy_backup_is_restored_as_it_is_once_uploaded() {
        let mut w = window(None, Some("2026-11-24T10:00:00Z"), &[]);
        w.legacy = Some(t("2026-11-24T10:00:00Z"));
        assert_eq!(w.source_at(t("2026-11-24T11:00:00Z")), Some(Source::Latest));
        assert_eq!(w.source_at(t("2026-11-24T09:00:00Z")), None);
    }
}
