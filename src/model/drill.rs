//! The record of one restore drill (`hubvault verify`), written beside the backup it
//! drilled at `hubvault/drills/{stamp}-{ok|failed}.json`: `status` reads the outcome from
//! the key alone, `versions` and `prune` read the record.

use serde::{Deserialize, Serialize};

use crate::model::layout::VersionId;

pub const FORMAT: u32 = 1;

/// What a drill found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub format: u32,
    pub time: chrono::DateTime<chrono::Utc>,
    pub ok: bool,
    /// The canonical key that was drilled.
    pub key: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// The kept version the object equals, when a manifest vouches for it.
    pub version: Option<VersionId>,
    /// Which manifest vouched: `latest.json` or `versions/{id}.json`.
    pub matched: Option<String>,
    /// `integrity_check` or `quick_check`, when it passed.
    pub check: Option<String>,
    /// Why the drill failed (empty if and only if `ok`).
    pub problems: Vec<String>,
    /// Worth knowing, not a failure (e.g. no manifest to check the checksum against).
    pub warnings: Vec<String>,
    pub tool: String,
    pub host: String,
    /// The continuous stream's newest state, drilled too when the connector has one.
    /// (Absent in records written before streams were drilled.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamDrill>,
}

/// The drill of a connector's continuous stream: its newest state built from the bucket
/// as `restore` builds it (chain checked), then checked as a download is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamDrill {
    /// The instant of the newest state (its newest commit).
    pub state_time: chrono::DateTime<chrono::Utc>,
    /// The chain's start the state was built from.
    pub base: String,
    pub commits: u64,
    /// `integrity_check` or `quick_check`, when it passed; `None` when the state could
    /// not be built or failed its check (the drill's problems say why).
    pub check: Option<String>,
}

impl DrillRecord {
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("a drill record serializes");
        json.push(b'\n');
        json
    }

    /// `None` for bytes that are not a drill record (a damaged or foreign object): a
    /// drill record is advice, never a reason to fail.
    pub fn from_json(bytes: &[u8]) -> Option<DrillRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// True if and only if a drill's `stamp` is later than `now` by more than the clock skew
/// S3 tolerates ([`crate::clock::SKEW_PROBLEM`]): not a drill that happened (`status`
/// and `prune` leave it out; one such record would stand for every drill after it).
pub fn stamped_in_the_future(stamp: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    chrono::NaiveDateTime::parse_from_str(stamp, VersionId::STAMP_FORMAT)
        .is_ok_and(|t| t.and_utc() > now + crate::clock::SKEW_PROBLEM)
}
