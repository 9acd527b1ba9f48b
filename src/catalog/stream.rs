//! Which objects make the state of connector C at instant T, from the continuous stream
//! ([`plan`]), and building that state, chain checked ([`build`]).
//!
//! Plan (LIST requests only): the connector's bases (one LIST of its `base/` folder), the
//! newest at or before T (or the newest); then the hub's segments from the base's hour on
//! (one listing that starts after that hour's key: never the whole history).
//!
//! Build: the base's image (its chain checksum proven), then every segment in key order,
//! its section for this connector and generation, commits observed at or before T
//! applied in order. The chain must hold: each section's `prev` is the state built so far
//! (a section that repeats commits already applied, as a retried upload can, is trimmed);
//! each commit's `after` is the checksum of the state after applying it. A section that
//! does not continue the chain, or a gap in a run's segment numbers / an unreadable
//! segment before T that the chain did not prove harmless, is an error naming the range
//! and the nearest restorable instants, never a silently older state.

use std::collections::BTreeSet;

use object_store::path::Path;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::model::layout::{BaseName, SegmentName, StreamKeys};
use crate::model::stream::{self, ChainSum, PageTable, page_hash};
use crate::store::Bucket;

type Time = chrono::DateTime<chrono::Utc>;

/// What a restore from the stream will read.
#[derive(Clone, Debug, Serialize)]
pub struct StreamPlan {
    pub base: String,
    pub base_time: Time,
    pub generation: String,
    /// Segments listed from the base's hour on (their sections for this connector are
    /// read in order until T).
    pub segments: usize,
    /// The newest segment's time: about the newest captured commit of the hub.
    pub newest_segment: Option<Time>,
    pub at: Option<Time>,
    #[serde(skip)]
    pub base_key: Path,
    #[serde(skip)]
    pub segment_keys: Vec<(Path, SegmentName)>,
    #[serde(skip)]
    pub connector: ConnectorId,
    /// Bases after the chosen one (for "not covered up to the next base").
    #[serde(skip)]
    pub next_base: Option<Time>,
}

/// The plan for `connector` of `datahub` at `at` (None: newest), or `None` when the
/// stream holds no base at or before it.
pub async fn plan(
    bucket: &Bucket,
    org: &OrgSlug,
    datahub: DatahubId,
    connector: ConnectorId,
    at: Option<Time>,
) -> Result<Option<StreamPlan>> {
    let keys = StreamKeys::new(org.clone(), datahub);
    let mut bases: Vec<(BaseName, Path)> = bucket
        .list(&keys.bases_dir(connector))
        .await?
        .into_iter()
        .filter_map(|o| StreamKeys::parse_base(&o.key).map(|n| (n, o.key)))
        .collect();
    bases.sort_by(|a, b| a.0.cmp(&b.0));
    let pick = bases
        .iter()
        .rposition(|(n, _)| at.is_none_or(|t| n.time <= t));
    let Some(i) = pick else { return Ok(None) };
    let (base, base_key) = bases[i].clone();
    let next_base = bases.get(i + 1).map(|(n, _)| n.time);
    // Keys after `{…}/L0/{hour}` are that hour's segments and every later one: the
    // listing starts at the base's hour, whatever history lies before it.
    let start = keys.segment_hour(base.time);
    let listed = bucket.list_after(&keys.segments_dir(), &start).await?;
    let segment_keys: Vec<(Path, SegmentName)> = listed
        .into_iter()
        .filter_map(|o| StreamKeys::parse_segment(&o.key).map(|n| (o.key, n)))
        .filter(|(_, n)| n.time >= base.time)
        .collect();
    Ok(Some(StreamPlan {
        base: base_key.to_string(),
        base_time: base.time,
        generation: base.generation.clone(),
        segments: segment_keys.len(),
        newest_segment: segment_keys.last().map(|(_, n)| n.time),
        at,
        base_key,
        segment_keys,
        connector,
        next_base,
    }))
}

/// The state built from the stream.
pub struct Built {
    pub image: Vec<u8>,
    pub page_size: u32,
    pub journal_mode: String,
    pub checksum: ChainSum,
    /// Observed time of the newest commit applied (the base's time if none).
    pub state_time: Time,
    pub commits: u64,
    pub sections: u64,
    pub segments_read: u64,
    pub warnings: Vec<String>,
}

fn ms(t: i64) -> Time {
    chrono::DateTime::from_timestamp_millis(t).unwrap_or_default()
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

/// Reads the plan's objects and builds the state at `plan.at` (or the newest).
pub async fn build(bucket: &Bucket, plan: &StreamPlan) -> Result<Built> {
    let what = bucket.shown(&plan.base_key);
    let bytes = bucket.get_bytes(&plan.base_key).await?;
    let (header, mut image) = {
        let what = what.clone();
        crate::blocking::blocking(move || stream::decode_base(&bytes, &what)).await?
    };
    if header.connector != plan.connector || header.generation != plan.generation {
        return Err(Error::check(
            format!("{what}: the base names another connector or generation than its key"),
            "the object was copied to the wrong key; restore a kept version (`hubvault versions`)",
        ));
    }
    let ps = header.page_size;
    let mut table = PageTable::of_image(ps, &image);
    let mut history: BTreeSet<ChainSum> = BTreeSet::from([table.checksum()]);
    let mut state_time = ms(header.time_ms);
    let (mut commits, mut sections, mut segments_read) = (0u64, 0u64, 0u64);
    let mut warnings = Vec::new();
    let at_ms = plan.at.map(|t| t.timestamp_millis());
    // The first thing after the last applied section that could hide commits: a gap in
    // a run's numbers or an unreadable segment. Cleared when the chain goes on past it.
    let mut suspect: Option<(String, Time)> = None;
    // Per run: the last segment number seen and its time. Commits of a missing segment
    // were observed after the previous segment of its run was sent: that time is the
    // earliest instant the gap can hide.
    let mut last_seq: std::collections::BTreeMap<String, (u64, Time)> = Default::default();
    let mut our_runs: BTreeSet<String> = BTreeSet::new();
    let mut done = false;
    for (key, name) in &plan.segment_keys {
        if done {
            break;
        }
        let since = match last_seq.get(&name.run) {
            Some((prev, t)) => {
                if name.seq > prev + 1 && suspect.is_none() {
                    suspect = Some((
                        format!(
                            "segments {}..{} of agent run {} are missing (before {})",
                            prev + 1,
                            name.seq - 1,
                            name.run,
                            bucket.shown(key)
                        ),
                        *t,
                    ));
                }
                *t
            }
            None => plan.base_time,
        };
        if last_seq.get(&name.run).is_none_or(|(s, _)| name.seq > *s) {
            last_seq.insert(name.run.clone(), (name.seq, name.time));
        }
        let shown = bucket.shown(key);
        let bytes = match bucket.get_bytes(key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                // Deleted since the listing: same as a gap.
                suspect.get_or_insert((format!("{shown} vanished"), since));
                continue;
            }
            Err(e) => return Err(e),
        };
        segments_read += 1;
        let decoded = {
            let (shown, conn, generation) =
                (shown.clone(), plan.connector, plan.generation.clone());
            crate::blocking::blocking(move || {
                let h = stream::decode_segment_header(&bytes, &shown)?;
                let mut out = Vec::new();
                for e in h
                    .sections
                    .iter()
                    .filter(|e| e.connector == conn && e.generation == generation)
                {
                    out.push(stream::decode_section(&bytes, e, &shown)?);
                }
                Ok(out)
            })
            .await
        };
        let ours = match decoded {
            Ok(s) => s,
            Err(e) => {
                suspect.get_or_insert((format!("{shown} is unreadable ({e})"), since));
                continue;
            }
        };
        if ours.is_empty() {
            continue;
        }
        our_runs.insert(name.run.clone());
        for s in ours {
            // Past T: nothing here is needed, whatever comes after.
            if at_ms.is_some_and(|t| s.commits.first().is_some_and(|c| c.time_ms > t)) {
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
                                ms(s.commits.first().map_or(0, |c| c.time_ms)).to_rfc3339(),
                            ),
                            restorable,
                        ));
                    }
                }
            }
            suspect = None;
            sections += 1;
            for c in s.commits.into_iter().skip(skip) {
                if at_ms.is_some_and(|t| c.time_ms > t) {
                    done = true;
                    break;
                }
                image.resize(c.db_pages as usize * ps as usize, 0);
                for (p, img) in &c.pages {
                    let at = (*p as usize - 1) * ps as usize;
                    image[at..at + ps as usize].copy_from_slice(img);
                    table.set(*p, page_hash(*p, img));
                }
                table.resize(c.db_pages);
                if table.checksum() != c.after {
                    return Err(broken(
                        format!(
                            "{shown}: applying the commit observed at {} does not give its recorded checksum",
                            ms(c.time_ms).to_rfc3339()
                        ),
                        vec![state_time.to_rfc3339()],
                    ));
                }
                history.insert(c.after);
                state_time = ms(c.time_ms);
                commits += 1;
            }
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
        let run_went_on = plan
            .segment_keys
            .iter()
            .any(|(_, n)| our_runs.contains(&n.run) && n.time > t);
        if !run_went_on && next > t {
            warnings.push(format!(
                "capture was not running from {} to {}: this is the newest state captured before {}; instants in between are not covered",
                state_time.to_rfc3339(),
                next.to_rfc3339(),
                t.to_rfc3339()
            ));
        }
    }
    // The final proof: the image built has the checksum the chain ends with.
    if PageTable::of_image(ps, &image).checksum() != table.checksum() {
        return Err(Error::check(
            "the state built from the stream does not have its chain checksum",
            "report this as a bug; restore a kept version (`hubvault versions`)",
        ));
    }
    Ok(Built {
        checksum: table.checksum(),
        image,
        page_size: ps,
        journal_mode: header.journal_mode,
        state_time,
        commits,
        sections,
        segments_read,
        warnings,
    })
}
