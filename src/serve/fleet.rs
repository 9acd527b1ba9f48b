//! What the fleet page shows, built from the bucket's listing: one row per connector, the
//! counts, a hub's newest common instant, the commands to copy, and the filter, sort and
//! page a request asks for. No I/O here: the views are tested without a bucket.
//!
//! Restorable instants are computed from what the bucket holds now (kept versions and
//! the canonical object). The continuous fields (lag, newest captured commit) are in the
//! API already and stay `null` until continuous capture reports them.

use std::cmp::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::inventory::Listed;
use crate::model::ids::{DatahubId, OrgSlug};
use crate::ops::status::{self, ConnectorStatus, State};

/// The hub root the copy-ready commands name: the platform's, in production.
pub const HUB_ROOT: &str = "/var/datahub";

/// A connector whose continuous capture is at least this far behind is counted as lagging.
pub const LAG_WARN: Duration = Duration::from_secs(60);

/// Rows on one page of the fleet table unless `per` says otherwise.
pub const DEFAULT_PER_PAGE: usize = 200;
pub const MAX_PER_PAGE: usize = 10_000;

/// A span of instants that `restore --at` can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// One connector as the page shows it: its status (the same record `hubvault status
/// --json` prints) and what can be restored.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub status: ConnectorStatus,
    /// The newest instant whose state can be restored: the later of the newest complete
    /// version's snapshot and the canonical object's upload (an unchanged database is
    /// uploaded again without a new version, so its state is known up to then). `None`
    /// when nothing in the bucket can be restored.
    pub newest_restorable: Option<DateTime<Utc>>,
    pub newest_restorable_age_seconds: Option<f64>,
    /// From the oldest complete version to `newest_restorable`.
    pub restorable_window: Option<Window>,
    /// The newest commit continuous capture has in the bucket (`None` until it reports).
    pub newest_captured: Option<DateTime<Utc>>,
    /// How far continuous capture is behind the live database (`None` until it reports).
    pub continuous_lag_seconds: Option<f64>,
    /// True if and only if no restore drill of this connector is recorded.
    pub never_verified: bool,
    /// Lowercase name, type, org and ids, for the text filter.
    #[serde(skip)]
    search: String,
    /// Lowercase name, for sorting by name without allocating in every comparison.
    #[serde(skip)]
    name_key: Option<String>,
}

impl Row {
    /// Judges one listed connector as of `now` (the same rules as `hubvault status`).
    pub fn from_listed(l: Listed, max_age: Duration, now: DateTime<Utc>) -> Row {
        let complete: Vec<DateTime<Utc>> = l
            .versions
            .iter()
            .filter(|(_, (data, manifest))| *data && *manifest)
            .map(|(v, _)| v.time())
            // A key stamped past any clock S3 takes requests from is no state of now.
            .filter(|t| *t <= now + crate::clock::SKEW_PROBLEM)
            .collect();
        let canonical = l
            .canonical
            .as_ref()
            .filter(|(_, o)| o.size > 0)
            .map(|(_, o)| o.last_modified);
        let newest = complete.last().copied().max(canonical);
        let oldest = complete.first().copied().or(canonical);
        let status = status::judge(l, max_age, now);
        let search = format!(
            "{} {} {} {} {} {}",
            status.name.as_deref().unwrap_or(""),
            status.source_type.as_deref().unwrap_or(""),
            status.org,
            status.datahub,
            status.connector,
            state_word(status.state),
        )
        .to_lowercase();
        Row {
            name_key: status.name.as_ref().map(|n| n.to_lowercase()),
            never_verified: status.last_drill.is_none(),
            newest_restorable: newest,
            newest_restorable_age_seconds: newest.map(|t| age_seconds(t, now)),
            restorable_window: oldest.zip(newest).map(|(from, to)| Window { from, to }),
            newest_captured: None,
            continuous_lag_seconds: None,
            status,
            search,
        }
    }

    /// True if and only if continuous capture reports a lag of at least [`LAG_WARN`].
    pub fn lagging(&self) -> bool {
        self.continuous_lag_seconds
            .is_some_and(|l| l >= LAG_WARN.as_secs_f64())
    }

    /// `hubvault restore` of this connector onto itself, newest state.
    pub fn restore_command(&self, bucket: &str) -> String {
        format!(
            "hubvault restore --bucket {} --org {} --datahub {} --connector {} --hub-root {HUB_ROOT}",
            shell_word(bucket),
            self.status.org,
            self.status.datahub,
            self.status.connector
        )
    }
}

fn age_seconds(t: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - t).to_std().unwrap_or_default().as_secs_f64()
}

/// `fresh`, `stale`, `broken`: the word that goes with the colour.
pub fn state_word(s: State) -> &'static str {
    match s {
        State::Broken => "broken",
        State::Stale => "stale",
        State::Fresh => "fresh",
    }
}

/// Counts by state, over the whole fleet (not the filtered rows).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub total: usize,
    pub fresh: usize,
    pub stale: usize,
    pub broken: usize,
    pub never_verified: usize,
    /// Connectors whose continuous capture reports a lag.
    pub continuous_reporting: usize,
    /// Of those, lagging by [`LAG_WARN`] or more.
    pub continuous_lagging: usize,
}

/// Everything one listing of the bucket says, judged.
#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    /// The bucket URL, without credentials.
    pub bucket: String,
    pub scope: String,
    pub checked_at: DateTime<Utc>,
    pub max_age_seconds: u64,
    pub summary: Counts,
    /// Broken first, then stale, then fresh; oldest first within each.
    pub connectors: Vec<Row>,
    /// The filter menus' entries, found once per read rather than once per page.
    #[serde(skip)]
    choices: Choices,
}

impl Fleet {
    pub fn build(
        listed: Vec<Listed>,
        max_age: Duration,
        now: DateTime<Utc>,
        bucket: String,
        scope: String,
    ) -> Fleet {
        let mut rows: Vec<Row> = listed
            .into_iter()
            .map(|l| Row::from_listed(l, max_age, now))
            .collect();
        rows.sort_by(|a, b| compare(a, b, SortKey::State));
        let mut c = Counts {
            total: rows.len(),
            ..Counts::default()
        };
        for r in &rows {
            match r.status.state {
                State::Fresh => c.fresh += 1,
                State::Stale => c.stale += 1,
                State::Broken => c.broken += 1,
            }
            c.never_verified += r.never_verified as usize;
            c.continuous_reporting += r.continuous_lag_seconds.is_some() as usize;
            c.continuous_lagging += r.lagging() as usize;
        }
        let choices = Choices::of(&rows);
        Fleet {
            bucket,
            scope,
            checked_at: now,
            max_age_seconds: max_age.as_secs(),
            summary: c,
            connectors: rows,
            choices,
        }
    }

    /// The row of a connector id (ids are unique across hubs).
    pub fn connector(&self, id: &str) -> Option<&Row> {
        self.connectors
            .iter()
            .find(|r| r.status.connector.to_string() == id)
    }

    /// The distinct orgs, hubs and types, for the filter menus.
    pub fn choices(&self) -> &Choices {
        &self.choices
    }

    /// One hub's connectors and the instant `restore-hub` would bring them all back to.
    pub fn hub(&self, id: &DatahubId, org: Option<&OrgSlug>) -> Option<HubView<'_>> {
        let rows: Vec<&Row> = self
            .connectors
            .iter()
            .filter(|r| r.status.datahub == *id && org.is_none_or(|o| *o == r.status.org))
            .collect();
        if rows.is_empty() {
            return None;
        }
        let mut orgs: Vec<OrgSlug> = rows.iter().map(|r| r.status.org.clone()).collect();
        orgs.sort();
        orgs.dedup();
        let missing: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.newest_restorable.is_none())
            .collect();
        let (common, note) = if orgs.len() > 1 {
            (
                None,
                format!(
                    "this hub id appears under {} orgs ({}): pick one",
                    orgs.len(),
                    orgs.iter()
                        .map(|o| o.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        } else if !missing.is_empty() {
            (
                None,
                format!(
                    "{} of {} connectors have nothing restorable ({}), so the hub cannot be restored whole",
                    missing.len(),
                    rows.len(),
                    missing
                        .iter()
                        .map(|r| r.status.connector.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        } else {
            let t = rows.iter().filter_map(|r| r.newest_restorable).min();
            (
                t,
                "the oldest of its connectors' newest restorable instants: every connector has a state at or before it".to_string(),
            )
        };
        Some(HubView {
            datahub: *id,
            org: (orgs.len() == 1).then(|| orgs[0].clone()),
            common_instant: common,
            common_instant_note: note,
            connectors: rows,
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct Choices {
    pub orgs: Vec<String>,
    pub hubs: Vec<String>,
    pub types: Vec<String>,
}

impl Choices {
    fn of(rows: &[Row]) -> Choices {
        let mut ch = Choices::default();
        for r in rows {
            ch.orgs.push(r.status.org.to_string());
            ch.hubs.push(r.status.datahub.to_string());
            ch.types
                .push(r.status.source_type.clone().unwrap_or_default());
        }
        for v in [&mut ch.orgs, &mut ch.hubs, &mut ch.types] {
            v.sort();
            v.dedup();
            v.retain(|s| !s.is_empty());
        }
        ch
    }
}

/// A hub as its page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct HubView<'a> {
    pub datahub: DatahubId,
    /// `None` when the hub id appears under several orgs.
    pub org: Option<OrgSlug>,
    /// The newest instant every connector of the hub can be restored to: the oldest of
    /// their newest restorable instants. `None` when some connector has none.
    pub common_instant: Option<DateTime<Utc>>,
    /// How the common instant was found, or why there is none.
    pub common_instant_note: String,
    pub connectors: Vec<&'a Row>,
}

impl HubView<'_> {
    /// `hubvault restore-hub` of this hub onto itself at the common instant.
    pub fn restore_hub_command(&self, bucket: &str) -> Option<String> {
        let org = self.org.as_ref()?;
        let at = self.common_instant?;
        Some(format!(
            "hubvault restore-hub --bucket {} --org {org} --datahub {} --hub-root {HUB_ROOT} --at {}",
            shell_word(bucket),
            self.datahub,
            instant(at)
        ))
    }
}

/// An instant as commands take it: RFC 3339, UTC, milliseconds.
pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `s` as one shell word: as is when it is plainly safe, else in single quotes.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The columns a table sorts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    State,
    Org,
    Hub,
    Name,
    Type,
    Age,
    Lag,
    Size,
    Versions,
    Drill,
}

impl SortKey {
    pub const ALL: [SortKey; 10] = [
        SortKey::State,
        SortKey::Org,
        SortKey::Hub,
        SortKey::Name,
        SortKey::Type,
        SortKey::Age,
        SortKey::Lag,
        SortKey::Size,
        SortKey::Versions,
        SortKey::Drill,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::State => "state",
            SortKey::Org => "org",
            SortKey::Hub => "hub",
            SortKey::Name => "name",
            SortKey::Type => "type",
            SortKey::Age => "age",
            SortKey::Lag => "lag",
            SortKey::Size => "size",
            SortKey::Versions => "versions",
            SortKey::Drill => "drill",
        }
    }

    pub fn parse(s: &str) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Orders rows by `key`, ascending; ties broken by state then age then connector id, so
/// the order is total and pages never shuffle between loads. Missing values sort last.
pub fn compare(a: &Row, b: &Row, key: SortKey) -> Ordering {
    fn opt<T: PartialOrd>(a: &Option<T>, b: &Option<T>) -> Ordering {
        match (a, b) {
            (Some(x), Some(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    let (sa, sb) = (&a.status, &b.status);
    // Within a state, the one that most needs attention leads: nothing restorable
    // first, then the oldest.
    let by_state = sa.state.cmp(&sb.state).then_with(|| {
        match (
            a.newest_restorable_age_seconds,
            b.newest_restorable_age_seconds,
        ) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => y.total_cmp(&x),
        }
    });
    let primary = match key {
        SortKey::State => by_state,
        SortKey::Org => sa.org.cmp(&sb.org),
        // Uuid order is the order of their lowercase text.
        SortKey::Hub => sa.datahub.cmp(&sb.datahub),
        SortKey::Name => opt(&a.name_key, &b.name_key),
        SortKey::Type => opt(&sa.source_type, &sb.source_type),
        SortKey::Age => opt(
            &a.newest_restorable_age_seconds,
            &b.newest_restorable_age_seconds,
        ),
        SortKey::Lag => opt(&a.continuous_lag_seconds, &b.continuous_lag_seconds),
        SortKey::Size => opt(&sa.size, &sb.size),
        SortKey::Versions => sa.versions.cmp(&sb.versions),
        // Failed first, then never drilled, then passed; older drills first.
        SortKey::Drill => {
            let rank = |s: &ConnectorStatus| match &s.last_drill {
                Some(d) if !d.ok => 0,
                None => 1,
                Some(_) => 2,
            };
            rank(sa).cmp(&rank(sb)).then_with(|| {
                opt(
                    &sa.last_drill.as_ref().map(|d| &d.stamp),
                    &sb.last_drill.as_ref().map(|d| &d.stamp),
                )
            })
        }
    };
    primary
        .then(by_state)
        .then_with(|| sa.connector.cmp(&sb.connector))
}

/// Which rows a request wants: the page's query parameters, also taken by `/api/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Text anywhere in name, type, org, hub id, connector id or state (any case).
    pub q: String,
    pub org: String,
    pub hub: String,
    pub source_type: String,
    /// `fresh`, `stale`, `broken`, `never-verified`, `lagging`, or empty for all.
    pub state: String,
    pub sort: SortKey,
    pub desc: bool,
    /// 1-based.
    pub page: usize,
    pub per: usize,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            q: String::new(),
            org: String::new(),
            hub: String::new(),
            source_type: String::new(),
            state: String::new(),
            sort: SortKey::State,
            desc: false,
            page: 1,
            per: DEFAULT_PER_PAGE,
        }
    }
}

pub const STATE_FILTERS: [&str; 5] = ["fresh", "stale", "broken", "never-verified", "lagging"];

impl Query {
    /// From a URL's query string. Lenient, as a page should be: an unknown sort or a
    /// page number that is not one falls back to the default.
    pub fn parse(query: &str) -> Query {
        let mut q = Query::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let v = v.trim().to_string();
            match k.as_ref() {
                "q" => q.q = v,
                "org" => q.org = v,
                "hub" => q.hub = v,
                "type" => q.source_type = v,
                "state" if STATE_FILTERS.contains(&v.as_str()) => q.state = v,
                "sort" => q.sort = SortKey::parse(&v).unwrap_or(SortKey::State),
                "dir" => q.desc = v == "desc",
                "page" => q.page = v.parse().unwrap_or(1).max(1),
                "per" => q.per = v.parse().unwrap_or(DEFAULT_PER_PAGE).clamp(1, MAX_PER_PAGE),
                _ => {}
            }
        }
        q
    }

    /// The query string for these parameters (defaults left out), `?…` or empty.
    pub fn to_query_string(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("q", self.q.as_str()),
            ("org", &self.org),
            ("hub", &self.hub),
            ("type", &self.source_type),
            ("state", &self.state),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if self.sort != SortKey::State {
            s.append_pair("sort", self.sort.as_str());
        }
        if self.desc {
            s.append_pair("dir", "desc");
        }
        if self.page != 1 {
            s.append_pair("page", &self.page.to_string());
        }
        if self.per != DEFAULT_PER_PAGE {
            s.append_pair("per", &self.per.to_string());
        }
        let s = s.finish();
        if s.is_empty() { s } else { format!("?{s}") }
    }

    /// True if and only if any filter is set.
    pub fn filters(&self) -> bool {
        !(self.q.is_empty()
            && self.org.is_empty()
            && self.hub.is_empty()
            && self.source_type.is_empty()
            && self.state.is_empty())
    }

    fn keeps(&self, r: &Row, needle: &str) -> bool {
        let s = &r.status;
        (needle.is_empty() || r.search.contains(needle))
            && (self.org.is_empty() || s.org.as_str() == self.org)
            && (self.hub.is_empty() || s.datahub.to_string() == self.hub)
            && (self.source_type.is_empty()
                || s.source_type.as_deref() == Some(self.source_type.as_str()))
            && match self.state.as_str() {
                "" => true,
                "never-verified" => r.never_verified,
                "lagging" => r.lagging(),
                st => state_word(s.state) == st,
            }
    }
}

/// The rows of one page, in order, and how many matched in all.
pub struct Selection<'a> {
    pub rows: Vec<&'a Row>,
    pub matched: usize,
    pub page: usize,
    pub pages: usize,
}

/// Filters, sorts and cuts one page out of `rows`.
pub fn select<'a>(rows: &'a [Row], q: &Query) -> Selection<'a> {
    let needle = q.q.to_lowercase();
    let mut kept: Vec<&Row> = rows.iter().filter(|r| q.keeps(r, &needle)).collect();
    if q.sort != SortKey::State || q.desc {
        kept.sort_by(|a, b| {
            let o = compare(a, b, q.sort);
            if q.desc { o.reverse() } else { o }
        });
    }
    let matched = kept.len();
    let pages = matched.div_ceil(q.per).max(1);
    let page = q.page.min(pages);
    let rows = kept
        .into_iter()
        .skip((page - 1) * q.per)
        .take(q.per)
        .collect();
    Selection {
        rows,
        matched,
        page,
        pages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::inventory::{DrillMark, Scope, group};
    use crate::model::ids::ConnectorId;
    use crate::model::layout::{ConnectorKey, VersionId};
    use crate::store::ObjectInfo;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn obj(key: object_store::path::Path, at: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key,
            size,
            last_modified: t(at),
            e_tag: None,
        }
    }

    /// A connector with versions at the given times and, if `canonical_at`, a canonical
    /// object uploaded then.
    fn listed(
        hub: DatahubId,
        name: &str,
        versions: &[&str],
        canonical_at: Option<&str>,
    ) -> Vec<ObjectInfo> {
        let ck = ConnectorKey::new(OrgSlug::parse("acme").unwrap(), hub, ConnectorId::random());
        let sha = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56abcd";
        let mut out = vec![obj(ck.label("sdc", name), "2026-11-01T00:00:00Z", 0)];
        for v in versions {
            let id = VersionId::new(t(v), sha);
            out.push(obj(ck.version_data(&id), v, 10));
            out.push(obj(ck.version_manifest(&id), v, 10));
        }
        if let Some(at) = canonical_at {
            out.push(obj(ck.canonical(&Default::default()), at, 8192));
        }
        out
    }

    const NOW: &str = "2026-11-24T12:00:00Z";

    fn fleet(objects: Vec<ObjectInfo>) -> Fleet {
        Fleet::build(
            group(objects, &Scope::default()),
            Duration::from_secs(24 * 3600),
            t(NOW),
            "file:///b".into(),
            "the whole bucket".into(),
        )
    }

    #[test]
    fn newest_restorable_is_the_later_of_the_newest_version_and_the_canonical_upload() {
        let hub = DatahubId::random();
        let f = fleet(
            [
                // Unchanged database: re-uploaded today, newest version two days old.
                listed(
                    hub,
                    "idle",
                    &["2026-11-20T10:00:00Z", "2026-11-22T10:00:00Z"],
                    Some("2026-11-24T11:00:00Z"),
                ),
                // Canonical object lost: only its versions can be restored.
                listed(hub, "lost", &["2026-11-23T09:00:00Z"], None),
            ]
            .concat(),
        );
        let idle = f
            .connectors
            .iter()
            .find(|r| r.status.name.as_deref() == Some("idle"))
            .unwrap();
        assert_eq!(idle.newest_restorable, Some(t("2026-11-24T11:00:00Z")));
        assert_eq!(idle.newest_restorable_age_seconds, Some(3600.0));
        assert_eq!(
            idle.restorable_window,
            Some(Window {
                from: t("2026-11-20T10:00:00Z"),
                to: t("2026-11-24T11:00:00Z")
            })
        );
        let lost = f
            .connectors
            .iter()
            .find(|r| r.status.name.as_deref() == Some("lost"))
            .unwrap();
        assert_eq!(lost.status.state, State::Broken);
        assert_eq!(lost.newest_restorable, Some(t("2026-11-23T09:00:00Z")));
        assert_eq!(lost.continuous_lag_seconds, None);
        // The hub can go back to the oldest of the newest instants.
        let h = f.hub(&hub, None).unwrap();
        assert_eq!(h.common_instant, Some(t("2026-11-23T09:00:00Z")));
        let cmd = h.restore_hub_command("s3://bkt").unwrap();
        assert!(
            cmd.ends_with(&format!(
                "--org acme --datahub {hub} --hub-root /var/datahub --at 2026-11-23T09:00:00.000Z"
            )),
            "{cmd}"
        );
    }

    /// One object written with a stamp in the future (a hostile writer, or a clock off by
    /// years) must not stand for every drill after it.
    #[test]
    fn a_drill_stamped_in_the_future_does_not_hide_a_failed_drill_of_now() {
        let hub = DatahubId::random();
        let mut objects = listed(
            hub,
            "drilled",
            &["2026-11-24T10:00:00Z"],
            Some("2026-11-24T10:00:00Z"),
        );
        let ck = parse_key_of(&objects[0]);
        let failed = crate::model::layout::stamp(t("2026-11-24T11:00:00Z"));
        objects.push(obj(ck.drill(&failed, false), "2026-11-24T11:00:00Z", 10));
        let forged = crate::model::layout::stamp(t("2099-01-01T00:00:00Z"));
        objects.push(obj(ck.drill(&forged, true), "2026-11-01T00:00:00Z", 10));
        let f = fleet(objects);
        let r = &f.connectors[0];
        assert_eq!(r.status.state, State::Broken, "{:?}", r.status);
        let last = r.status.last_drill.as_ref().unwrap();
        assert_eq!((last.stamp.as_str(), last.ok), (failed.as_str(), false));
        assert_eq!(f.summary.broken, 1);
    }

    #[test]
    fn a_version_stamped_in_the_future_is_not_the_newest_restorable_instant() {
        let hub = DatahubId::random();
        // A stale connector (its canonical object three days old) and a version whose
        // key says 2099: the row must not say "restorable up to 2099, 0 s ago".
        let f = fleet(listed(
            hub,
            "stale",
            &["2026-11-21T12:00:00Z", "2099-01-01T00:00:00Z"],
            Some("2026-11-21T12:00:00Z"),
        ));
        let r = &f.connectors[0];
        assert_eq!(r.status.state, State::Stale);
        assert_eq!(r.newest_restorable, Some(t("2026-11-21T12:00:00Z")));
        assert_eq!(r.newest_restorable_age_seconds, Some(3.0 * 86400.0));
        assert_eq!(r.restorable_window.unwrap().to, t("2026-11-21T12:00:00Z"));
        assert_eq!(
            f.hub(&hub, None).unwrap().common_instant,
            Some(t("2026-11-21T12:00:00Z"))
        );
    }

    fn parse_key_of(o: &ObjectInfo) -> ConnectorKey {
        crate::model::layout::parse_key(&o.key).unwrap().0
    }

    #[test]
    fn a_hub_with_a_connector_that_has_nothing_restorable_has_no_common_instant() {
        let hub = DatahubId::random();
        let mut objects = listed(
            hub,
            "ok",
            &["2026-11-24T10:00:00Z"],
            Some("2026-11-24T10:00:00Z"),
        );
        // Only a label: a connector whose every backup was removed.
        objects.extend(listed(hub, "empty", &[], None));
        let f = fleet(objects);
        let h = f.hub(&hub, None).unwrap();
        assert_eq!(h.common_instant, None);
        assert!(
            h.common_instant_note
                .contains("1 of 2 connectors have nothing restorable")
        );
        assert_eq!(h.restore_hub_command("s3://b"), None);
        assert!(f.hub(&DatahubId::random(), None).is_none());
    }

    #[test]
    fn counts_cover_the_fleet_and_filters_narrow_the_rows() {
        let hub = DatahubId::random();
        let mut objects = listed(
            hub,
            "Fresh one",
            &["2026-11-24T10:00:00Z"],
            Some("2026-11-24T10:00:00Z"),
        );
        objects.extend(listed(
            hub,
            "Old one",
            &["2026-11-20T10:00:00Z"],
            Some("2026-11-20T10:00:00Z"),
        ));
        objects.extend(listed(
            DatahubId::random(),
            "Lost",
            &["2026-11-19T10:00:00Z"],
            None,
        ));
        let f = fleet(objects);
        let c = &f.summary;
        assert_eq!(
            (c.total, c.fresh, c.stale, c.broken, c.never_verified),
            (3, 1, 1, 1, 3)
        );
        // Default order: broken, stale, fresh.
        let names: Vec<_> = f
            .connectors
            .iter()
            .map(|r| r.status.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["Lost", "Old one", "Fresh one"]);

        let pick = |qs: &str| -> Vec<String> {
            select(&f.connectors, &Query::parse(qs))
                .rows
                .iter()
                .map(|r| r.status.name.clone().unwrap())
                .collect()
        };
        assert_eq!(pick("state=stale"), ["Old one"]);
        assert_eq!(pick("q=ONE"), ["Old one", "Fresh one"]);
        assert_eq!(
            pick(&format!("hub={hub}&sort=name")),
            ["Fresh one", "Old one"]
        );
        assert_eq!(pick("sort=age"), ["Fresh one", "Old one", "Lost"]);
        assert_eq!(pick("sort=age&dir=desc"), ["Lost", "Old one", "Fresh one"]);
        assert_eq!(pick("q=broken"), ["Lost"]);
        assert_eq!(pick("state=never-verified&per=1&page=2"), ["Old one"]);
        assert!(pick("type=nope").is_empty());
        let s = select(&f.connectors, &Query::parse("per=2&page=9"));
        assert_eq!((s.matched, s.page, s.pages, s.rows.len()), (3, 2, 2, 1));
    }

    #[test]
    fn a_failed_drill_sorts_first_by_drill() {
        let mut objects = listed(
            DatahubId::random(),
            "a",
            &["2026-11-24T10:00:00Z"],
            Some("2026-11-24T10:00:00Z"),
        );
        objects.extend(listed(
            DatahubId::random(),
            "b",
            &["2026-11-24T10:00:00Z"],
            Some("2026-11-24T10:00:00Z"),
        ));
        let mut ls = group(objects, &Scope::default());
        let key = |ok| DrillMark {
            stamp: "20261124T110000.000Z".into(),
            ok,
            key: "k".into(),
        };
        let failed_name = ls[1].label.clone().unwrap().1;
        ls[1].drills.push(key(false));
        ls[0].drills.push(key(true));
        let f = Fleet::build(
            ls,
            Duration::from_secs(86400),
            t(NOW),
            String::new(),
            String::new(),
        );
        let s = select(&f.connectors, &Query::parse("sort=drill"));
        assert_eq!(s.rows[0].status.name.as_deref(), Some(failed_name.as_str()));
        assert_eq!(s.rows[0].status.state, State::Broken);
        assert_eq!(f.summary.never_verified, 0);
    }

    #[test]
    fn query_strings_round_trip_and_bad_values_fall_back() {
        let q = Query::parse("q=cell+ario&state=stale&sort=size&dir=desc&page=3&per=50&hub=x");
        assert_eq!(Query::parse(q.to_query_string().trim_start_matches('?')), q);
        assert_eq!(q.q, "cell ario");
        let d = Query::parse("sort=nope&page=zero&per=0&state=weird");
        assert_eq!(
            (d.sort, d.page, d.per, d.state.as_str()),
            (SortKey::State, 1, 1, "")
        );
        assert_eq!(Query::default().to_query_string(), "");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("s3://bkt/pre-fix"), "s3://bkt/pre-fix");
        assert_eq!(shell_word("file:///a b"), "'file:///a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
