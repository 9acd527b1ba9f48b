//! A whole hub restored in one command, every connector at one common instant.
//!
//! [`plan`] reads the bucket and changes nothing: every connector backed up under the old
//! hub (one paged LIST of the hub's prefix, and the stream's bases), the map from old
//! connector ids to new ones checked (unmapped, unknown, mapped twice, a new id already
//! under the hub root: each is a [`Problem`], and [`execute`] refuses while there is one),
//! each connector's restorable window, the common instant (`--at`, or the newest instant
//! every connector can be restored to: the minimum of their newest), and per connector the
//! backup that gives its state then, and where it goes.
//!
//! [`execute`] prepares every connector before it installs any, with the single restore's
//! steps ([`crate::catalog::fetch`], [`crate::sqlite::install`]): downloads (at most
//! [`HubRequest::parallel`] at once, each streamed to disk: memory does not grow with the
//! number or the size of the connectors; a state built from the continuous stream is put
//! together in memory by the stream's reader, so those are built one at a time), checks,
//! rewrites, all into temp files beside the targets. If one fails, none is installed and the error names it. Then it installs them
//! one after another:
//! - a connector whose directory is not under the hub root is built whole in a private
//!   stage directory in the hub root ([`crate::sqlite::hubstage`]) and moved into place in
//!   one rename: the directory is absent or complete at every instant;
//! - a connector restored in place (the same hub, its directory there) is installed as
//!   `restore` installs one: the old database kept beside it as
//!   `sqlite.db.before-restore-<UTC>`, with its side files.
//!
//! So a kill -9 at any point leaves each target as it was or restored (with its original
//! kept), never half-written; a kill during the installs can leave some connectors
//! restored and the others as they were: the error names those installed and how to
//! finish (restore-hub again with the same map, once the directories it made are moved
//! out of the hub root: a map of the rest only is refused).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::blocking::blocking;
use crate::catalog::fetch::{self, Chosen, ContinuousState};
use crate::catalog::inventory::{self, Listed, Scope};
use crate::catalog::window::{self, Window};
use crate::command::HookReport;
use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId, Ids, OrgSlug};
use crate::model::layout::{ConnectorKey, DbFileName, StreamKeys, VersionId};
use crate::model::source::SourceRecord;
use crate::progress::{Progress, ProgressSet};
use crate::sqlite::db;
use crate::sqlite::hubstage::HubStage;
use crate::sqlite::install::{self, Download, Kept, Prepared, Staging, Target};
use crate::sqlite::rewrite::{self, RewritePlan};
use crate::store::Bucket;

type Time = chrono::DateTime<chrono::Utc>;

/// What to do about a connector whose database a process holds open (restore-hub has no
/// `--force`: it replaces no database under a running connector).
const HELD_OPEN_HINT: &str = "stop the connectors (restore-hub replaces no database a process holds open), then run it again";

/// `instant_chosen_by` without `--at`: the newest instant every connector can be restored
/// to (the minimum of their newest restorable instants)…
pub const NEWEST_COMMON: &str = "newest common";
/// …unless a connector's first backup is after that: then the earliest instant at which
/// every connector has a state (each connector's state then is its newest at or before it).
pub const FIRST_COMMON: &str = "first common";

/// Without `--at`, a connector whose newest restorable instant is this far before the
/// newest of the hub's others holds the common instant back that far: the plan is
/// refused ([`ProblemKind::HeldBack`]) rather than every other connector set back days.
/// Twice the platform's 24-hour backup rule: connectors backed up by that rule alone
/// are at most about a day apart.
pub const HELD_BACK_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(48);

/// Connectors prepared at once by default: downloads overlap with the checks and
/// rewrites of others, on a machine of two cores.
pub const DEFAULT_PARALLEL: usize = 4;

/// Connectors whose window and backup are looked up at once while planning (small
/// requests only).
const PLAN_PARALLEL: usize = 8;

#[derive(Clone, Debug)]
pub struct HubRequest {
    pub org: OrgSlug,
    /// The old hub.
    pub from: DatahubId,
    /// The hub restored onto (equal to `from` for the same hub).
    pub to: DatahubId,
    /// Old connector id to new, as given (`--map`, `--map-file`), in order: duplicates
    /// are the plan's to find.
    pub map: Vec<(ConnectorId, ConnectorId)>,
    /// Connectors of the old hub left out (`--exclude`): not restored, no new id needed,
    /// no part in the common instant (a connector removed from the hub long ago).
    pub exclude: Vec<ConnectorId>,
    pub hub_root: PathBuf,
    /// The common instant; `None`: the newest every connector can be restored to.
    pub at: Option<Time>,
    pub db_file: DbFileName,
    /// How many connectors are downloaded and prepared at once (at least 1).
    pub parallel: usize,
    /// True if and only if old ids the rewrite cannot rewrite may stay in a restored
    /// database (listed in its report); otherwise one such connector refuses the whole
    /// hub before any connector is installed.
    pub accept_unrewritten: bool,
}

/// Why the map or the hub root does not allow the restore; nothing was touched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The old connector id it is about, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<ConnectorId>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Onto a new hub, a connector with no new id in the map.
    Unmapped,
    /// The map names a connector that is not backed up under the old hub.
    Unknown,
    /// An old id given twice, or one new id given to two connectors.
    MappedTwice,
    /// A new connector id whose directory is already under the hub root.
    Present,
    /// A new id that cannot be used (equal to a hub id), or a target that is a link.
    BadTarget,
    /// Nothing of the connector can be restored at the common instant.
    NotRestorable,
    /// Nothing of the connector can be restored at any instant: no complete backup (a
    /// first backup cut off before its manifest, objects left of a removed connector).
    NoBackup,
    /// Without `--at`: the connector's newest state is more than [`HELD_BACK_AFTER`]
    /// before the newest of the hub's others (removed from the hub, or no longer backed
    /// up), so the common instant would set every other connector back as far.
    HeldBack,
}

impl ProblemKind {
    /// 2 (the command line is wrong) for everything the map and the hub root decide; 1
    /// for a connector the bucket cannot restore at the instant.
    pub fn exit_code(self) -> i32 {
        match self {
            ProblemKind::NotRestorable | ProblemKind::NoBackup | ProblemKind::HeldBack => 1,
            _ => 2,
        }
    }
}

/// How a connector's database gets to its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Its directory is not under the hub root: built in the stage, moved in whole.
    New,
    /// Its directory is there (the same hub): the database is replaced, the old one kept.
    InPlace,
}

/// What is known of one connector, and what will be done with it.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectorPlan {
    pub old_connector: ConnectorId,
    /// `None` while unmapped (onto a new hub).
    pub new_connector: Option<ConnectorId>,
    /// What to create it with in the platform (name, type, metadata, tags).
    pub create: SourceRecord,
    /// Where `create` was read: `source.json` (beside the backup), `label` (name and type
    /// only: metadata and tags are unknown, null), or `download` (read from the database).
    pub create_from: &'static str,
    pub window: Window,
    /// The time of the state restored at the instant, as far as the listing tells (the
    /// stream's exact time is known once built).
    pub state_at: Option<Time>,
    /// How far that state is behind the connector's newest restorable state.
    pub behind_newest_seconds: Option<f64>,
    /// Set when the connector can be restored (mapped, target usable, restorable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<Step>,
}

/// The restore of one connector.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// The backup fetched and how it is checked.
    #[serde(flatten)]
    pub source: Chosen,
    pub target: PathBuf,
    pub placement: Placement,
    /// True if and only if a database is at the target now (kept, see `keep`).
    pub replaces: bool,
    pub keep: Vec<Kept>,
}

/// What [`execute`] will do; computing it changes nothing (`--dry-run` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct HubPlan {
    pub bucket: String,
    pub org: OrgSlug,
    pub datahub: DatahubId,
    pub to_datahub: DatahubId,
    pub hub_root: PathBuf,
    /// The common instant; `None` when no connector has anything restorable.
    pub instant: Option<Time>,
    /// `--at`, [`NEWEST_COMMON`] or [`FIRST_COMMON`].
    pub instant_chosen_by: &'static str,
    pub connectors: Vec<ConnectorPlan>,
    /// Connectors of the old hub left out with `--exclude`.
    pub excluded: Vec<ConnectorId>,
    pub problems: Vec<Problem>,
    /// How many connectors are prepared at once.
    pub parallel: usize,
    /// See [`HubRequest::accept_unrewritten`].
    pub accept_unrewritten: bool,
    #[serde(skip)]
    pub db_file: DbFileName,
}

impl HubPlan {
    /// True if and only if the datahub id changes (every connector then needs a new id).
    pub fn new_hub(&self) -> bool {
        self.datahub != self.to_datahub
    }

    /// The refusal for the plan's problems (exit 2 when any is the map's or the hub
    /// root's, else 1), or `None` when it can be carried out.
    pub fn refusal(&self) -> Option<Error> {
        if self.problems.is_empty() {
            return None;
        }
        let lines: Vec<String> = self.problems.iter().map(|p| p.message.clone()).collect();
        let message = format!(
            "restore-hub refused, nothing was downloaded or changed:\n  {}",
            lines.join("\n  ")
        );
        let unmapped = self
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Unmapped);
        let no_backup: Vec<String> = self
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::NoBackup)
            .filter_map(|p| p.connector)
            .map(|c| format!("{}/datahub/{}/connector/{c}/", self.org, self.datahub))
            .collect();
        let only_restorability = self.problems.iter().all(|p| p.kind.exit_code() == 1);
        let held_back: Vec<String> = self
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::HeldBack)
            .filter_map(|p| p.connector)
            .map(|c| format!("--exclude {c}"))
            .collect();
        let hint = if !held_back.is_empty() && only_restorability {
            let at = self
                .instant
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            format!(
                "if a connector that holds the hub back was removed from it, leave it out ({}); to restore each connector at its newest state instead (no common instant), pass --at now; to restore every connector at that instant anyway, pass --at {at}",
                held_back.join(" ")
            )
        } else if !no_backup.is_empty() && only_restorability {
            format!(
                "a connector with no complete backup cannot be restored at any instant; if it is not needed, remove what is left of it in the bucket ({}) and run again; otherwise restore the others one at a time with `hubvault restore`",
                no_backup.join(", ")
            )
        } else if unmapped {
            "create a new connector in the platform for each old one (`--dry-run` lists name, type, metadata and tags; `--dry-run --json` is a map-file template), then pass --map OLD=NEW for each, or --map-file FILE".to_string()
        } else if self.problems.iter().any(|p| p.kind == ProblemKind::Present) {
            "a new connector's directory must not exist yet: check the map; if the platform already deployed the new connector, stop it and move its directory away (it holds no data yet), then run again".to_string()
        } else if self
            .problems
            .iter()
            .all(|p| p.kind == ProblemKind::NotRestorable)
        {
            "pick a later --at (each connector's restorable window is in `--dry-run`), or leave --at out for the newest common instant".to_string()
        } else {
            "fix the map (--map OLD=NEW once per connector of the old hub, each new id once)"
                .to_string()
        };
        Some(if self.problems.iter().any(|p| p.kind.exit_code() == 2) {
            Error::usage(message, hint)
        } else {
            Error::check(message, hint)
        })
    }
}

/// One connector's part of the report.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectorReport {
    pub old_connector: ConnectorId,
    pub new_connector: ConnectorId,
    pub name: String,
    #[serde(rename = "type")]
    pub source_type: String,
    pub target: PathBuf,
    pub placement: Placement,
    /// The object whose bytes were fetched.
    pub key: String,
    /// The canonical object `key` stands in for (restore's `instead_of`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instead_of: Option<String>,
    pub version: Option<VersionId>,
    /// The time of the state restored (the stream's commit, the version's snapshot, or a
    /// legacy object's upload).
    pub state_at: Option<Time>,
    pub behind_newest_seconds: Option<f64>,
    pub continuous: Option<ContinuousState>,
    pub verified_by: String,
    pub sha256_installed: String,
    pub check: &'static str,
    pub journal_mode: String,
    /// Values rewritten (0 without a rewrite).
    pub rewritten_values: u64,
    /// What the id rewrite did (as `restore` reports it), `None` for the same ids.
    pub rewrite: Option<RewritePlan>,
    pub events: Option<u64>,
    pub bytes: u64,
    /// Time to download, check and prepare it.
    pub seconds: f64,
    pub kept: Vec<Kept>,
    pub warnings: Vec<String>,
}

/// What [`execute`] did.
#[derive(Clone, Debug, Serialize)]
pub struct HubReport {
    pub datahub: DatahubId,
    pub to_datahub: DatahubId,
    pub hub_root: PathBuf,
    pub instant: Time,
    pub instant_chosen_by: &'static str,
    pub connectors: Vec<ConnectorReport>,
    pub seconds: f64,
}

/// The map as given, checked against the hub's connectors. Returns old id -> new id for
/// every connector that has one (onto the same hub, an unmapped connector keeps its id),
/// and the problems found.
pub fn resolve_map(
    connectors: &[ConnectorId],
    map: &[(ConnectorId, ConnectorId)],
    new_hub: bool,
) -> (BTreeMap<ConnectorId, ConnectorId>, Vec<Problem>) {
    let known: BTreeSet<ConnectorId> = connectors.iter().copied().collect();
    let mut problems = Vec::new();
    let mut given: BTreeMap<ConnectorId, ConnectorId> = BTreeMap::new();
    for (old, new) in map {
        if !known.contains(old) {
            problems.push(Problem {
                kind: ProblemKind::Unknown,
                connector: Some(*old),
                message: format!(
                    "--map {old}={new}: connector {old} has no backup under the old hub"
                ),
            });
            continue;
        }
        match given.get(old) {
            Some(first) => problems.push(Problem {
                kind: ProblemKind::MappedTwice,
                connector: Some(*old),
                message: format!("connector {old} is mapped twice (to {first} and to {new})"),
            }),
            None => {
                given.insert(*old, *new);
            }
        }
    }
    let mut resolved = BTreeMap::new();
    for c in connectors {
        match given.get(c) {
            Some(n) => {
                resolved.insert(*c, *n);
            }
            None if new_hub => problems.push(Problem {
                kind: ProblemKind::Unmapped,
                connector: Some(*c),
                message: format!("connector {c} has no new id (--map {c}=NEW)"),
            }),
            None => {
                resolved.insert(*c, *c);
            }
        }
    }
    let mut by_new: BTreeMap<ConnectorId, Vec<ConnectorId>> = BTreeMap::new();
    for (old, new) in &resolved {
        by_new.entry(*new).or_default().push(*old);
    }
    for (new, olds) in by_new.iter().filter(|(_, o)| o.len() > 1) {
        let names: Vec<String> = olds.iter().map(|o| o.to_string()).collect();
        problems.push(Problem {
            kind: ProblemKind::MappedTwice,
            connector: Some(olds[0]),
            message: format!(
                "new connector id {new} is given to {} connectors ({})",
                olds.len(),
                names.join(", ")
            ),
        });
    }
    for olds in by_new.values().filter(|o| o.len() > 1) {
        for o in olds {
            resolved.remove(o);
        }
    }
    (resolved, problems)
}

/// One `--map OLD=NEW` (or a line of a map file): two connector ids.
pub fn parse_map_entry(s: &str, origin: &str) -> Result<(ConnectorId, ConnectorId)> {
    let hint = "write --map OLD_CONNECTOR_ID=NEW_CONNECTOR_ID (two UUIDs), once per connector";
    let Some((old, new)) = s.split_once('=') else {
        return Err(Error::usage(
            format!(
                "{origin}: {:?} is not OLD=NEW",
                crate::model::ids::printable(s)
            ),
            hint,
        ));
    };
    let parse = |v: &str, which: &str| {
        ConnectorId::parse(v.trim()).map_err(|e| {
            Error::usage(
                format!(
                    "{origin}: the {which} id of {:?}: {e}",
                    crate::model::ids::printable(s)
                ),
                hint,
            )
        })
    };
    Ok((parse(old, "old")?, parse(new, "new")?))
}

/// A map file: lines `OLD=NEW` (blank lines and `#` comments skipped), or JSON: an object
/// `{"OLD": "NEW", …}`, or the document `restore-hub --dry-run --json` prints, with each
/// connector's `new_connector` filled in (a null or empty `new_connector` is skipped: that
/// connector stays unmapped). `path` names the file in errors.
pub fn parse_map_file(
    text: &str,
    path: &std::path::Path,
) -> Result<Vec<(ConnectorId, ConnectorId)>> {
    let origin = format!("--map-file {}", path.display());
    let bad = |why: String| {
        Error::usage(
            format!("{origin}: {why}"),
            "write one OLD=NEW per line, or JSON: {\"OLD\": \"NEW\"} or the `restore-hub --dry-run --json` document with new_connector filled in",
        )
    };
    if !text.trim_start().starts_with('{') {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                out.push(parse_map_entry(line, &format!("{origin} line {}", n + 1))?);
            }
        }
        return Ok(out);
    }
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let listed = doc
        .get("connectors")
        .or_else(|| doc.get("plan").and_then(|p| p.get("connectors")));
    let mut pairs: Vec<(String, String)> = Vec::new();
    let text_of =
        |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or("").trim().to_string();
    match listed {
        Some(serde_json::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let old = text_of(item.get("old_connector"));
                if old.is_empty() {
                    return Err(bad(format!("connectors[{i}] has no old_connector")));
                }
                let new = text_of(item.get("new_connector"));
                if !new.is_empty() {
                    pairs.push((old, new));
                }
            }
        }
        Some(_) => return Err(bad("\"connectors\" is not a list".into())),
        None => {
            let Some(obj) = doc.as_object() else {
                return Err(bad("not a JSON object".into()));
            };
            for (old, new) in obj {
                match new {
                    serde_json::Value::String(n) if !n.trim().is_empty() => {
                        pairs.push((old.clone(), n.trim().to_string()))
                    }
                    serde_json::Value::String(_) | serde_json::Value::Null => {}
                    _ => return Err(bad(format!("the new id of {old:?} is not a string"))),
                }
            }
        }
    }
    pairs
        .iter()
        .map(|(o, n)| parse_map_entry(&format!("{o}={n}"), &origin))
        .collect()
}

/// The connectors backed up under `from`: from one paged LIST of the hub's prefix, plus
/// the connectors that only continuous capture holds (one delimiter LIST of the stream's
/// bases).
async fn connectors_of_hub(bucket: &Bucket, org: &OrgSlug, from: DatahubId) -> Result<Vec<Listed>> {
    let scope = Scope {
        org: Some(org.clone()),
        datahub: Some(from),
        connector: None,
    };
    let mut listed = inventory::scan(bucket, &scope).await?;
    let keys = StreamKeys::new(org.clone(), from);
    let streamed = bucket
        .list_prefixes(&keys.prefix().join("base"))
        .await?
        .into_iter()
        .filter_map(|n| ConnectorId::parse(&n).ok());
    let have: BTreeSet<ConnectorId> = listed.iter().map(|l| l.ck.connector).collect();
    for c in streamed.filter(|c| !have.contains(c)).collect::<Vec<_>>() {
        listed.push(empty_listed(ConnectorKey::new(org.clone(), from, c)));
    }
    listed.sort_by(|a, b| a.ck.cmp(&b.ck));
    Ok(listed)
}

/// A connector the inventory did not see (only the stream holds it).
fn empty_listed(ck: ConnectorKey) -> Listed {
    Listed {
        ck,
        canonical: None,
        latest_manifest: false,
        versions: BTreeMap::new(),
        drills: Vec::new(),
        label: None,
        stream: None,
        source: false,
    }
}

/// The source object (what to create the connector with) from `source.json` when the
/// listing has it, else name and type from the label marker.
async fn read_create(bucket: &Bucket, l: &Listed) -> (SourceRecord, &'static str) {
    if l.source {
        let key = l.ck.source();
        match bucket.get_bytes(&key).await {
            Ok(bytes) => match SourceRecord::from_json(&bytes, key.as_ref()) {
                Ok(r) => return (r, "source.json"),
                Err(e) => tracing::warn!("{e}; using the label marker"),
            },
            Err(e) => tracing::warn!("{e}; using the label marker"),
        }
    }
    let (source_type, name) = l.label.clone().unwrap_or_default();
    (
        SourceRecord {
            name,
            source_type,
            metadata: serde_json::Value::Null,
            tags: serde_json::Value::Null,
        },
        "label",
    )
}

/// Decides what to restore and where; reads the bucket, changes nothing.
pub async fn plan(bucket: &Bucket, req: &HubRequest) -> Result<HubPlan> {
    install::check_hub_root(&req.hub_root)?;
    let listed = connectors_of_hub(bucket, &req.org, req.from).await?;
    if listed.is_empty() {
        return Err(Error::bucket_failure(
            "LIST",
            format!("{}/datahub/{}/", req.org, req.from),
            bucket.url(),
            crate::error::StoreFailure::NotFound,
            "no connector is backed up under this hub",
        )
        .with_hint(format!(
            "check --org and --datahub (the OLD hub's id); `hubvault status --org {}` lists every backup",
            req.org
        )));
    }
    let new_hub = req.from != req.to;
    let (listed, excluded, mut problems) = exclude(listed, req);
    if listed.is_empty() && problems.is_empty() {
        return Err(Error::usage(
            format!(
                "every connector backed up under hub {} is left out with --exclude: nothing to restore",
                req.from
            ),
            "leave out only the connectors that are not to come back (`--dry-run` lists them)",
        ));
    }
    let ids: Vec<ConnectorId> = listed.iter().map(|l| l.ck.connector).collect();
    // A map entry of an excluded connector is the problem `exclude` reported.
    let given: Vec<(ConnectorId, ConnectorId)> = (req.map.iter())
        .filter(|(old, _)| !excluded.contains(old))
        .copied()
        .collect();
    let (map, map_problems) = resolve_map(&ids, &given, new_hub);
    problems.extend(map_problems);

    // Windows and labels, a few connectors at a time.
    let looked_up: Vec<(Window, (SourceRecord, &'static str))> =
        futures::stream::iter(listed.iter().map(|l| async move {
            let w = window::of(bucket, l).await?;
            Ok::<_, Error>((w, read_create(bucket, l).await))
        }))
        .buffered(PLAN_PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let (instant, chosen_by) = match req.at {
        Some(t) => (Some(t), "--at"),
        None => {
            let newest = looked_up.iter().filter_map(|(w, _)| w.newest).min();
            let first = looked_up.iter().filter_map(|(w, _)| w.oldest).max();
            match (newest, first) {
                // A connector whose first backup came after another's newest (kept
                // versions only, taken at different times): the earliest instant at which
                // every connector has a state.
                (Some(n), Some(f)) if f > n => (Some(f), FIRST_COMMON),
                (n, _) => (n, NEWEST_COMMON),
            }
        }
    };

    // Without --at, a connector far behind the others (removed from the hub long ago,
    // or its backups stopped) would take every other connector back with it: at the
    // newest common instant, and at the first common one too (a connector added since
    // the removal makes its first backup the instant, days after the removed one's
    // newest, and before the newest of the others).
    // A state stamped past any clock S3 takes requests from (a host clock set ahead for
    // a while, a stranger's key) is no state of now: measured against it, every other
    // connector would be "held back".
    let future = chrono::Utc::now() + crate::clock::SKEW_PROBLEM;
    let held_back_before = match req.at {
        None => looked_up
            .iter()
            .filter_map(|(w, _)| w.newest)
            .filter(|t| *t <= future)
            .max()
            .map(|top| (top, top - HELD_BACK_AFTER)),
        Some(_) => None,
    };

    let mut connectors = Vec::new();
    let mut steps: Vec<Option<(ConnectorKey, crate::catalog::fetch::Source)>> = Vec::new();
    for (l, (w, (create, create_from))) in listed.iter().zip(looked_up) {
        let old = l.ck.connector;
        let new = map.get(&old).copied();
        let mut usable = new.is_some();
        if let (Some((top, before)), Some(newest)) = (held_back_before, w.newest)
            && newest < before
        {
            problems.push(Problem {
                kind: ProblemKind::HeldBack,
                connector: Some(old),
                message: format!(
                    "connector {old} ({}): its newest state is from {}, {} before the newest of the hub's other connectors ({}); restored together at one instant, every other connector would go back as far",
                    label_of(&create, old),
                    newest.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    crate::model::time::fmt_age((top - newest).to_std().unwrap_or_default()),
                    top.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
            });
            usable = false;
        }
        if w.newest.is_none() {
            problems.push(Problem {
                kind: ProblemKind::NoBackup,
                connector: Some(old),
                message: format!(
                    "connector {old} ({}): no complete backup (no version with its manifest, no continuous capture)",
                    label_of(&create, old)
                ),
            });
            usable = false;
        }
        let source = instant.and_then(|t| w.source_at(t));
        if let (Some(t), None, Some(oldest)) = (instant, &source, w.oldest) {
            problems.push(Problem {
                kind: ProblemKind::NotRestorable,
                connector: Some(old),
                message: format!(
                    "connector {old} ({}): nothing restorable at or before {} (restorable from {} to {})",
                    label_of(&create, old),
                    t.to_rfc3339(),
                    oldest.to_rfc3339(),
                    w.newest.map(|n| n.to_rfc3339()).unwrap_or_default()
                ),
            });
            usable = false;
        }
        if let Some(new) = new {
            let from = Ids {
                datahub: req.from,
                connector: old,
            };
            let to = Ids {
                datahub: req.to,
                connector: new,
            };
            if let Err(e) = rewrite::check_ids(from, to) {
                problems.push(Problem {
                    kind: ProblemKind::BadTarget,
                    connector: Some(old),
                    message: format!("connector {old} -> {new}: {e}"),
                });
                usable = false;
            }
            let dir = req.hub_root.join(new.to_string());
            let present = std::fs::symlink_metadata(&dir).is_ok();
            if present && (new_hub || new != old) {
                problems.push(Problem {
                    kind: ProblemKind::Present,
                    connector: Some(old),
                    message: format!(
                        "new connector id {new} (for {old}) is already under the hub root: {}",
                        dir.display()
                    ),
                });
                usable = false;
            } else if present
                && let Err(e) =
                    install::target_path(&Target::HubRoot(req.hub_root.clone()), new, &req.db_file)
            {
                problems.push(Problem {
                    kind: ProblemKind::BadTarget,
                    connector: Some(old),
                    message: e.to_string(),
                });
                usable = false;
            }
        }
        let state_at = instant.and_then(|t| w.state_at(t));
        connectors.push(ConnectorPlan {
            old_connector: old,
            new_connector: new,
            create,
            create_from,
            behind_newest_seconds: w.behind(state_at),
            state_at,
            window: w,
            restore: None,
        });
        steps.push(match (usable, source) {
            (true, Some(s)) => Some((l.ck.clone(), s)),
            _ => None,
        });
    }

    // The backup each connector is restored from (and the stream's plan), only once
    // nothing is refused: choosing reads manifests and lists segments.
    if problems.is_empty() {
        let chosen: Vec<Option<Chosen>> = futures::stream::iter(steps.iter().map(|s| async move {
            match s {
                Some((ck, source)) => fetch::choose(bucket, ck, source, &req.db_file)
                    .await
                    .map(Some)
                    .map_err(|e| e.with_note(&format!("connector {}", ck.connector))),
                None => Ok(None),
            }
        }))
        .buffered(PLAN_PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
        let stamp = crate::model::layout::stamp(chrono::Utc::now());
        for (c, source) in connectors.iter_mut().zip(chosen) {
            let (Some(source), Some(new)) = (source, c.new_connector) else {
                continue;
            };
            let dir = req.hub_root.join(new.to_string());
            let target = dir.join(req.db_file.as_str());
            let placement = if std::fs::symlink_metadata(&dir).is_ok() {
                Placement::InPlace
            } else {
                Placement::New
            };
            if let Some(v) = &source.version {
                c.state_at = Some(v.time());
                c.behind_newest_seconds = c.window.behind(c.state_at);
            }
            c.restore = Some(Step {
                source,
                replaces: std::fs::symlink_metadata(&target).is_ok(),
                keep: install::keep_names(&target, &stamp),
                target,
                placement,
            });
        }
    }
    Ok(HubPlan {
        bucket: bucket.url().to_string(),
        org: req.org.clone(),
        datahub: req.from,
        to_datahub: req.to,
        hub_root: req.hub_root.clone(),
        instant,
        instant_chosen_by: chosen_by,
        connectors,
        excluded,
        problems,
        parallel: req.parallel.max(1),
        accept_unrewritten: req.accept_unrewritten,
        db_file: req.db_file.clone(),
    })
}

/// The hub's connectors without those `--exclude` leaves out, the ids left out, and a
/// problem for each excluded id the hub does not have or the map also names.
fn exclude(listed: Vec<Listed>, req: &HubRequest) -> (Vec<Listed>, Vec<ConnectorId>, Vec<Problem>) {
    let out: BTreeSet<ConnectorId> = req.exclude.iter().copied().collect();
    let mut problems = Vec::new();
    for c in &out {
        if !listed.iter().any(|l| l.ck.connector == *c) {
            problems.push(Problem {
                kind: ProblemKind::Unknown,
                connector: Some(*c),
                message: format!("--exclude {c}: connector {c} has no backup under the old hub"),
            });
        } else if let Some((_, new)) = req.map.iter().find(|(old, _)| old == c) {
            problems.push(Problem {
                kind: ProblemKind::MappedTwice,
                connector: Some(*c),
                message: format!(
                    "connector {c} is both left out (--exclude {c}) and mapped (--map {c}={new}): keep one"
                ),
            });
        }
    }
    let excluded = out.iter().copied().collect();
    let kept = listed
        .into_iter()
        .filter(|l| !out.contains(&l.ck.connector))
        .collect();
    (kept, excluded, problems)
}

/// `name (type)`, or the id when the backup says neither; control characters escaped.
fn label_of(c: &SourceRecord, id: ConnectorId) -> String {
    match (c.name.is_empty(), c.source_type.is_empty()) {
        (false, false) => format!("{}, {}", shown(&c.name), shown(&c.source_type)),
        (false, true) => shown(&c.name),
        (true, false) => shown(&c.source_type),
        (true, true) => id.to_string(),
    }
}

/// A name or type from a connector's source object, to be printed: its control
/// characters escaped (`\u{1b}`), so that none reaches a terminal as it is. The source
/// object comes from the connector's database or the bucket, neither of them trusted.
pub fn shown(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// For the connectors whose `create` came from a label marker (backups made before
/// `source.json`), reads metadata and tags from the backup itself: downloads the state
/// the plan chose (a few at a time) into a temp directory and reads its source object.
/// For `--dry-run` and the list printed for a missing map; changes nothing.
pub async fn read_sources_from_backups(bucket: &Bucket, plan: &mut HubPlan) -> Result<()> {
    let tmp = {
        blocking(|| {
            tempfile::Builder::new()
                .prefix("hubvault-restore-hub-")
                .tempdir()
                .map_err(|e| Error::io(std::env::temp_dir(), "cannot create a temp directory", e))
        })
        .await?
    };
    let dir = tmp.path().to_path_buf();
    let org = plan.org.clone();
    let hub = plan.datahub;
    let db_file = plan.db_file.clone();
    let at = plan.instant;
    let wanted: Vec<usize> = plan
        .connectors
        .iter()
        .enumerate()
        .filter(|(_, c)| c.create_from == "label")
        .map(|(i, _)| i)
        .collect();
    let found: Vec<(usize, Option<serde_json::Value>)> =
        futures::stream::iter(wanted.into_iter().map(|i| {
            let (dir, org, db_file) = (dir.clone(), org.clone(), db_file.clone());
            let c = &plan.connectors[i];
            let (old, source) = (c.old_connector, at.and_then(|t| c.window.source_at(t)));
            async move {
                let Some(source) = source else {
                    return (i, None);
                };
                let ck = ConnectorKey::new(org, hub, old);
                let read = async {
                    let chosen = fetch::choose(bucket, &ck, &source, &db_file).await?;
                    let got = fetch::fetch(
                        bucket,
                        &chosen,
                        &dir,
                        "source-",
                        &crate::progress::NoProgress,
                    )
                    .await?;
                    blocking(move || {
                        let path = got.file.to_path_buf();
                        let conn = db::open_read_only(&path)?;
                        Ok(db::read_info(&conn, &path)?.source)
                    })
                    .await
                };
                match read.await {
                    Ok(v) => (i, Some(v)),
                    Err(e) => {
                        tracing::warn!("connector {old}: cannot read its source object: {e}");
                        (i, None)
                    }
                }
            }
        }))
        .buffer_unordered(plan.parallel.max(1))
        .collect()
        .await;
    for (i, v) in found {
        if let Some(v) = v {
            plan.connectors[i].create = SourceRecord::from_source(&v);
            plan.connectors[i].create_from = "download";
        }
    }
    blocking(move || {
        drop(tmp);
        Ok(())
    })
    .await
}

/// A connector prepared and waiting for the install.
enum Ready {
    /// Built whole in the stage: moved into the hub root at the install.
    Staged(OsString),
    /// Prepared in its own directory: installed over the old database.
    InPlace(Box<Prepared>),
}

struct Done {
    index: usize,
    ready: Ready,
    report: ConnectorReport,
}

/// Carries out `plan` (see the module's contract); refuses a plan with problems. The
/// hook is the caller's ([`run_hook`]).
pub async fn execute(
    bucket: &Bucket,
    plan: &HubPlan,
    progress: &dyn ProgressSet,
) -> Result<HubReport> {
    if let Some(e) = plan.refusal() {
        return Err(e);
    }
    let instant = plan
        .instant
        .expect("a plan without problems has an instant");
    let started = Instant::now();
    let stage = {
        let root = plan.hub_root.clone();
        Arc::new(blocking(move || HubStage::open(&root)).await?)
    };
    let bars: Vec<Box<dyn Progress>> = plan
        .connectors
        .iter()
        .map(|c| {
            let bar = progress.item(&label_of(&c.create, c.old_connector));
            bar.stage("waiting");
            bar
        })
        .collect();
    let bars = &bars;
    let stage_ref = &stage;
    let stream_builds = &tokio::sync::Semaphore::new(1);
    let mut prepared: Vec<Done> = Vec::new();
    let mut failed: Option<Error> = None;
    // Once one connector failed, the ones not started yet are not started; the ones in
    // flight are waited for, never dropped mid-way: their blocking steps run on threads
    // that a dropped future does not stop, and the process must not exit before what
    // they made (work directories beside live databases) is removed.
    let stop = &std::sync::atomic::AtomicBool::new(false);
    {
        let mut running =
            futures::stream::iter(plan.connectors.iter().enumerate().map(|(i, c)| async move {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    bars[i].stage("not started");
                    return Ok(None);
                }
                prepare_one(bucket, plan, c, stage_ref, &*bars[i], stream_builds)
                    .await
                    .map(|(ready, report)| {
                        Some(Done {
                            index: i,
                            ready,
                            report,
                        })
                    })
                    .map_err(|e| {
                        bars[i].stage("FAILED");
                        e.with_note(&format!(
                            "connector {} ({}) failed, so no connector was installed",
                            c.old_connector,
                            label_of(&c.create, c.old_connector)
                        ))
                    })
            }))
            .buffer_unordered(plan.parallel.max(1));
        while let Some(r) = running.next().await {
            match r {
                Ok(Some(d)) => prepared.push(d),
                Ok(None) => {}
                Err(e) => {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    failed.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = failed {
        // Nothing was installed: the prepared connectors and the stage are removed.
        blocking(move || {
            drop(prepared);
            drop(stage);
            Ok(())
        })
        .await?;
        return Err(e);
    }
    prepared.sort_by_key(|d| d.index);

    // Every connector is ready: install them, one rename each.
    let installed = {
        let stage = stage.clone();
        blocking(move || {
            // The check of who holds a database open ran when each connector was
            // prepared, maybe minutes ago: again now, for all of them, before any install.
            for d in &prepared {
                if let Ready::InPlace(p) = &d.ready {
                    p.check_not_held_open().map_err(|e| {
                        e.with_note(&format!(
                            "connector {} ({:?}), so no connector was installed",
                            d.report.old_connector, d.report.name
                        ))
                        .with_hint(HELD_OPEN_HINT)
                    })?;
                }
            }
            let mut out = Vec::new();
            let mut done: Vec<String> = Vec::new();
            let mut made: Vec<PathBuf> = Vec::new();
            for d in prepared {
                let Done {
                    index,
                    ready,
                    mut report,
                } = d;
                let r = match ready {
                    Ready::Staged(name) => stage.install(&name),
                    Ready::InPlace(p) => p.install().map(|kept| report.kept = kept),
                };
                if let Err(e) = r {
                    // A second run restores every connector of the old hub again (a map
                    // must name them all onto a new hub), and refuses a directory this run
                    // moved in as present.
                    let made: Vec<String> = made.iter().map(|p| p.display().to_string()).collect();
                    let note = if done.is_empty() {
                        "no connector was installed".to_string()
                    } else if made.is_empty() {
                        format!(
                            "installed before it: {}; the others were not. To finish, run restore-hub again with the same map: it restores every connector again (what is there now is kept as before-restore)",
                            done.join(", ")
                        )
                    } else {
                        format!(
                            "installed before it: {}; the others were not. To finish, move the connector directories this run made ({}) out of the hub root (a second run refuses them as present), then run restore-hub again with the same map",
                            done.join(", "),
                            made.join(", ")
                        )
                    };
                    let _ = stage.sync();
                    return Err(e.with_note(&format!(
                        "connector {} was not installed; {note}",
                        report.old_connector
                    )));
                }
                done.push(report.new_connector.to_string());
                if report.placement == Placement::New {
                    made.push(report.target.parent().map(PathBuf::from).unwrap_or_default());
                }
                out.push((index, report));
            }
            stage.sync()?;
            Ok(out)
        })
        .await?
    };
    for (i, _) in &installed {
        bars[*i].stage("installed");
    }
    blocking(move || {
        drop(stage);
        Ok(())
    })
    .await?;
    Ok(HubReport {
        datahub: plan.datahub,
        to_datahub: plan.to_datahub,
        hub_root: plan.hub_root.clone(),
        instant,
        instant_chosen_by: plan.instant_chosen_by,
        connectors: installed.into_iter().map(|(_, r)| r).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Downloads, checks and prepares one connector (step 1 and 2 of the single restore's
/// contract); a new connector is also installed in its staged directory.
async fn prepare_one(
    bucket: &Bucket,
    plan: &HubPlan,
    c: &ConnectorPlan,
    stage: &Arc<HubStage>,
    bar: &dyn Progress,
    stream_builds: &tokio::sync::Semaphore,
) -> Result<(Ready, ConnectorReport)> {
    let started = Instant::now();
    let step = c
        .restore
        .as_ref()
        .expect("a plan without problems has every step");
    let new = c
        .new_connector
        .expect("a plan without problems maps every connector");
    let name = OsString::from(new.to_string());
    bar.stage("starting");
    let staging = match step.placement {
        Placement::New => {
            let (stage2, name2) = (stage.clone(), name.clone());
            let dir = blocking(move || stage2.make_connector_dir(&name2)).await?;
            let target = stage.staged_path(&name).join(plan.db_file.as_str());
            Staging::open_in(dir, target).await?
        }
        Placement::InPlace => Staging::open(&step.target, Some(&plan.hub_root), false)
            .await
            // `restore`'s refusal offers --force, which restore-hub does not have.
            .map_err(|e| {
                if install::is_held_open(&e) {
                    e.with_hint(HELD_OPEN_HINT)
                } else {
                    e
                }
            })?,
    };
    bar.stage("downloading");
    // A state built from the stream is put together in memory (catalog::stream): one at a
    // time, so memory does not grow with the number of such connectors.
    let one_build = match &step.source.continuous {
        Some(_) => Some(
            stream_builds
                .acquire()
                .await
                .map_err(|_| Error::check("the restore was stopped", "run it again"))?,
        ),
        None => None,
    };
    let fetched =
        match fetch::fetch(bucket, &step.source, &staging.work_path(), "download-", bar).await {
            Ok(f) => f,
            Err(e) => {
                blocking(move || {
                    drop(staging);
                    Ok(())
                })
                .await?;
                return Err(e);
            }
        };
    drop(one_build);
    bar.stage("checking");
    let mut warnings = fetched.warnings.clone();
    if fetched.legacy {
        warnings.push(format!(
            "{}: no manifest (a backup uploaded by the old system): its checksum could not be checked; integrity and ids were",
            step.source.key
        ));
    }
    let download = Download {
        file: fetched.file,
        key: fetched.key.clone(),
        bytes: fetched.bytes,
        journal_mode: fetched
            .journal_mode
            .clone()
            .or(step.source.journal_mode.clone()),
        from: Ids {
            datahub: plan.datahub,
            connector: c.old_connector,
        },
        to: Ids {
            datahub: plan.to_datahub,
            connector: new,
        },
        accept_unrewritten: plan.accept_unrewritten,
        checked_at_backup: !fetched.legacy && fetched.continuous.is_none(),
    };
    let placement = step.placement;
    let (ready, p) = blocking(move || {
        let p = staging.prepare(download)?;
        let facts = (
            p.rewrite.clone(),
            p.warnings.clone(),
            p.journal_mode.clone(),
            p.check,
            p.sha256_installed.clone(),
            p.bytes,
            p.events,
        );
        let ready = match placement {
            Placement::New => {
                p.install()?;
                Ready::Staged(name)
            }
            Placement::InPlace => Ready::InPlace(Box::new(p)),
        };
        Ok((ready, facts))
    })
    .await?;
    let (rewrite, accepted, journal_mode, check, sha256_installed, bytes, events) = p;
    warnings.extend(accepted);
    // Past the connector's newest restorable state nothing tells what it held at the
    // instant (an --at in the future, capture stopped before it, "first common").
    if let (Some(t), Some(newest)) = (plan.instant, c.window.newest)
        && t > newest
    {
        warnings.push(format!(
            "the instant {} is after its newest restorable state ({}): its state at the instant is not known; it was restored to its newest",
            t.to_rfc3339(),
            newest.to_rfc3339()
        ));
    }
    bar.stage("ready");
    let state_at = match (&fetched.continuous, &step.source.version) {
        (Some(s), _) => Some(s.state_time),
        (None, Some(v)) => Some(v.time()),
        (None, None) => c.state_at,
    };
    // A state built from the stream holds until the instant (as far as the stream
    // reaches): the stream observed no commit of the connector after its last one, so an
    // idle connector is not behind its newest (as a version read again unchanged is not).
    let holds_until = match (&fetched.continuous, &step.source.continuous, plan.instant) {
        (Some(s), Some(p), Some(t)) => Some(s.state_time.max(t.min(p.newest_data()))),
        _ => state_at,
    };
    Ok((
        ready,
        ConnectorReport {
            old_connector: c.old_connector,
            new_connector: new,
            name: c.create.name.clone(),
            source_type: c.create.source_type.clone(),
            target: step.target.clone(),
            placement,
            key: fetched.key.clone(),
            instead_of: fetched.instead_of.clone(),
            version: step.source.version.clone(),
            behind_newest_seconds: c.window.behind(holds_until),
            state_at,
            continuous: fetched.continuous.clone(),
            verified_by: fetched.verified_by,
            sha256_installed,
            check,
            journal_mode,
            rewritten_values: rewrite.as_ref().map(|r| r.total_values()).unwrap_or(0),
            rewrite,
            events,
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            kept: Vec::new(),
            warnings,
        },
    ))
}

/// Environment of the `--then` hook, run once for the whole hub.
pub fn hook_env(plan: &HubPlan) -> Vec<(&'static str, String)> {
    let pairs: Vec<String> = plan
        .connectors
        .iter()
        .filter_map(|c| c.new_connector.map(|n| format!("{}={n}", c.old_connector)))
        .collect();
    vec![
        ("HUBVAULT_OLD_DATAHUB", plan.datahub.to_string()),
        ("HUBVAULT_NEW_DATAHUB", plan.to_datahub.to_string()),
        ("HUBVAULT_HUB_ROOT", plan.hub_root.display().to_string()),
        ("HUBVAULT_CONNECTORS", pairs.join(" ")),
        (
            "HUBVAULT_AT",
            plan.instant.map(|t| t.to_rfc3339()).unwrap_or_default(),
        ),
    ]
}

/// Runs the `--then` hook once every connector is installed (the hub menu's "Update
/// config" and "Sync"); see [`crate::command::hook`].
pub async fn run_hook(
    cmd: &str,
    plan: &HubPlan,
    timeout: Duration,
    stdout_to_stderr: bool,
) -> Result<HookReport> {
    let (cmd, env) = (cmd.to_string(), hook_env(plan));
    blocking(move || crate::command::hook(&cmd, &env, timeout, stdout_to_stderr)).await
}

/// The error for a hook that did not succeed.
pub fn hook_error(r: &HookReport, plan: &HubPlan) -> Error {
    Error::Check {
        message: format!(
            "the --then command {:?} failed: {}; every connector IS installed under {}{}",
            r.command,
            r.how_it_ended(),
            plan.hub_root.display(),
            r.output_shown()
        ),
        hint: "run the hub menu's \"Update config\" and \"Sync\" by hand, or fix the command and run it alone (the connectors need no second restore); --then-timeout sets its time limit".into(),
    }
}

/// What the operator still has to do when no `--then` hook is given.
pub fn remaining_steps(plan: &HubPlan) -> Vec<String> {
    vec![
        "In the platform, set the correct connection settings of each new connector.".into(),
        format!(
            "From the hub menu of hub {} (upper right), run \"Update config\".",
            plan.to_datahub
        ),
        "From the hub menu, run \"Sync\".".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<ConnectorId> {
        (0..n).map(|_| ConnectorId::random()).collect()
    }

    #[test]
    fn map_files_read_lines_json_objects_and_the_dry_run_document() {
        let (a, b, c) = (
            ConnectorId::random(),
            ConnectorId::random(),
            ConnectorId::random(),
        );
        let p = std::path::Path::new("m");
        let lines = format!("# old=new\n{a}={b}\n\n {c} = {a} # moved\n");
        assert_eq!(parse_map_file(&lines, p).unwrap(), vec![(a, b), (c, a)]);
        let obj = format!("{{\"{a}\": \"{b}\", \"{c}\": \"\"}}");
        assert_eq!(parse_map_file(&obj, p).unwrap(), vec![(a, b)]);
        let doc = format!(
            "{{\"ok\": true, \"plan\": {{\"connectors\": [{{\"old_connector\": \"{a}\", \"new_connector\": \"{b}\"}}, {{\"old_connector\": \"{c}\", \"new_connector\": null}}]}}}}"
        );
        assert_eq!(parse_map_file(&doc, p).unwrap(), vec![(a, b)]);
        let e = parse_map_file("x=y\n", p).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(parse_map_file(&format!("{a}{b}"), p).is_err());
    }

    #[test]
    fn a_full_map_onto_a_new_hub_has_no_problem() {
        let old = ids(3);
        let new = ids(3);
        let map: Vec<_> = old.iter().copied().zip(new.iter().copied()).collect();
        let (resolved, problems) = resolve_map(&old, &map, true);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(resolved.len(), 3);
        assert_eq!(resolved[&old[1]], new[1]);
    }

    #[test]
    fn unmapped_unknown_and_twice_mapped_connectors_are_problems() {
        let old = ids(3);
        let new = ids(4);
        let stranger = ConnectorId::random();
        let map = vec![
            (old[0], new[0]),
            (old[0], new[1]),
            (stranger, new[2]),
            (old[1], new[3]),
        ];
        let (_, problems) = resolve_map(&old, &map, true);
        let kinds: Vec<ProblemKind> = problems.iter().map(|p| p.kind).collect();
        assert!(kinds.contains(&ProblemKind::MappedTwice), "{problems:?}");
        assert!(kinds.contains(&ProblemKind::Unknown), "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.kind == ProblemKind::Unmapped && p.connector == Some(old[2])),
            "{problems:?}"
        );
    }

    #[test]
    fn one_new_id_for_two_connectors_is_refused_and_maps_neither() {
        let old = ids(2);
        let same = ConnectorId::random();
        let (resolved, problems) = resolve_map(&old, &[(old[0], same), (old[1], same)], true);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::MappedTwice);
        assert!(resolved.is_empty());
    }

    #[test]
    fn onto_the_same_hub_an_unmapped_connector_keeps_its_id() {
        let old = ids(2);
        let (resolved, problems) = resolve_map(&old, &[], false);
        assert!(problems.is_empty());
        assert_eq!(resolved[&old[0]], old[0]);
        // Mapping one onto the other's id on the same hub gives one id to two.
        let (_, problems) = resolve_map(&old, &[(old[0], old[1])], false);
        assert_eq!(problems[0].kind, ProblemKind::MappedTwice, "{problems:?}");
    }
}
