//! The pages, as plain HTML written on the server: every table, filter, sort and page
//! is a link or a form, so the page works without JavaScript. `assets/app.js` only
//! makes the same requests without reloading (filter as you type, sort, auto refresh)
//! and adds the copy buttons.
//!
//! Everything that comes from the bucket (names, types, problems) goes through [`esc`].
//! State is shown by colour AND by a word (BROKEN, STALE, fresh; FAILED, ok, never).

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::time::fmt_age;
use crate::ops::status::State;
use crate::serve::cache::Failure;
use crate::serve::chart::{self, human_bytes};
use crate::serve::detail::Detail;
use crate::serve::fleet::{
    Choices, Fleet, HubView, Query, Row, STATE_FILTERS, Selection, SortKey, instant, state_word,
};

/// Versions the connector page shows (table and chart), newest first.
pub const VERSIONS_SHOWN: usize = 200;

/// Text safe inside HTML elements and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What every page's frame shows.
pub struct Frame<'a> {
    pub bucket: &'a str,
    pub scope: &'a str,
    pub checked_at: Option<DateTime<Utc>>,
    pub refresh: Duration,
    pub failure: Option<&'a Failure>,
}

/// A whole page around `body`.
pub fn page(title: &str, f: &Frame<'_>, body: &str) -> String {
    let v = env!("CARGO_PKG_VERSION");
    let checked = match f.checked_at {
        Some(t) => format!(
            r#"read from the bucket <time datetime="{}">{}</time>"#,
            instant(t),
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "not read yet".to_string(),
    };
    let failure = f.failure.map(failure_banner).unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · hubvault</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/style.css?v={v}">
<script src="/assets/app.js?v={v}" defer></script>
</head>
<body data-refresh="{refresh}">
<header class="top"><a class="brand" href="/">hubvault</a><span class="where">bucket <code>{bucket}</code> · {scope}</span><span id="checked" class="checked">{checked}</span></header>
<main>
{failure}{body}
</main>
<footer>Read-only: nothing here writes to the bucket. The bucket is read at most every {every}. <a href="/api/status">JSON API</a></footer>
</body></html>
"#,
        title = esc(title),
        refresh = f.refresh.as_secs(),
        bucket = esc(f.bucket),
        scope = esc(f.scope),
        every = fmt_age(f.refresh),
    )
}

fn failure_banner(e: &Failure) -> String {
    format!(
        r#"<section class="failure" role="alert"><strong>The bucket could not be read</strong> ({}): {}{}</section>
"#,
        e.at.format("%H:%M:%S UTC"),
        esc(&e.error),
        e.hint
            .as_deref()
            .map(|h| format!("<br>Try: {}", esc(h)))
            .unwrap_or_default()
    )
}

fn mark(state: State) -> String {
    let (class, word) = match state {
        State::Broken => ("broken", "BROKEN"),
        State::Stale => ("stale", "STALE"),
        State::Fresh => ("fresh", "fresh"),
    };
    format!(r#"<span class="mark mark-{class}">{word}</span>"#)
}

fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => format!(
            r#"<time datetime="{}">{}</time> <span class="age">{} ago</span>"#,
            instant(t),
            t.format("%Y-%m-%d %H:%M UTC"),
            fmt_age((now - t).to_std().unwrap_or_default())
        ),
        None => r#"<span class="none">none</span>"#.to_string(),
    }
}

fn drill_cell(r: &Row) -> String {
    match &r.status.last_drill {
        Some(d) if d.ok => format!(
            r#"<span class="mark mark-ok">ok</span> <span class="stamp">{}</span>"#,
            esc(&pretty_stamp(&d.stamp))
        ),
        Some(d) => format!(
            r#"<span class="mark mark-failed">FAILED</span> <span class="stamp">{}</span>"#,
            esc(&pretty_stamp(&d.stamp))
        ),
        None => r#"<span class="mark mark-never">never</span>"#.to_string(),
    }
}

/// `20261124T070102.123Z` as `2026-11-24 07:01 UTC`.
fn pretty_stamp(s: &str) -> String {
    chrono::NaiveDateTime::parse_from_str(s, crate::model::layout::VersionId::STAMP_FORMAT)
        .map(|t| t.and_utc().format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| s.to_string())
}

fn lag_cell(r: &Row) -> String {
    match r.continuous_lag_seconds {
        Some(l) => fmt_age(Duration::from_secs_f64(l)),
        None => r#"<span class="none" title="continuous capture has not reported for this connector">—</span>"#.into(),
    }
}

/// Which columns a table of rows shows.
#[derive(Clone, Copy)]
struct Columns {
    org_and_hub: bool,
}

const HEADERS: [(SortKey, &str); 10] = [
    (SortKey::State, "State"),
    (SortKey::Org, "Org"),
    (SortKey::Hub, "Hub"),
    (SortKey::Name, "Connector"),
    (SortKey::Type, "Type"),
    (SortKey::Age, "Newest restorable"),
    (SortKey::Lag, "Continuous lag"),
    (SortKey::Size, "Size"),
    (SortKey::Versions, "Versions"),
    (SortKey::Drill, "Last drill"),
];

fn row_html(out: &mut String, r: &Row, cols: Columns, now: DateTime<Utc>) {
    let s = &r.status;
    let state = state_word(s.state);
    let _ = write!(
        out,
        r#"<tr class="row-{state}" data-state="{state}"><td class="state">{}</td>"#,
        mark(s.state)
    );
    if cols.org_and_hub {
        let hub = s.datahub.to_string();
        let _ = write!(
            out,
            r#"<td>{}</td><td><a href="/hubs/{hub}" title="{hub}"><code>{}</code></a></td>"#,
            esc(s.org.as_str()),
            &hub[..8]
        );
    }
    let name = s
        .name
        .as_deref()
        .unwrap_or("(no name: not written by hubvault)");
    let _ = write!(
        out,
        r#"<td class="name"><a href="/connectors/{}">{}</a>"#,
        s.connector,
        esc(name)
    );
    for p in &s.problems {
        let _ = write!(out, r#"<div class="problem">{}</div>"#, esc(p));
    }
    let _ = write!(
        out,
        r#"</td><td>{}</td><td class="when">{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="drill">{}</td></tr>"#,
        esc(s.source_type.as_deref().unwrap_or("—")),
        when(r.newest_restorable, now),
        lag_cell(r),
        s.size.map(human_bytes).unwrap_or_else(|| "—".into()),
        s.versions,
        drill_cell(r),
    );
    out.push('\n');
}

fn table(
    out: &mut String,
    rows: &[&Row],
    cols: Columns,
    q: Option<&Query>,
    base: &str,
    now: DateTime<Utc>,
) {
    out.push_str(r#"<table id="fleet-table" class="fleet"><thead><tr>"#);
    for (key, label) in HEADERS {
        if !cols.org_and_hub && matches!(key, SortKey::Org | SortKey::Hub) {
            continue;
        }
        match q {
            Some(q) => {
                let current = q.sort == key;
                let next = Query {
                    sort: key,
                    desc: current && !q.desc,
                    page: 1,
                    ..q.clone()
                };
                let (aria, arrow) = match (current, q.desc) {
                    (true, false) => (r#" aria-sort="ascending""#, " ▲"),
                    (true, true) => (r#" aria-sort="descending""#, " ▼"),
                    _ => ("", ""),
                };
                let _ = write!(
                    out,
                    r#"<th{aria} data-key="{}"><a class="sort" href="{base}{}">{label}{arrow}</a></th>"#,
                    key.as_str(),
                    esc(&next.to_query_string())
                );
            }
            None => {
                let _ = write!(out, r#"<th data-key="{}">{label}</th>"#, key.as_str());
            }
        }
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in rows {
        row_html(out, r, cols, now);
    }
    out.push_str("</tbody></table>\n");
}

fn select(out: &mut String, name: &str, label: &str, options: &[(String, String)], chosen: &str) {
    let _ = write!(
        out,
        r#"<label>{label} <select name="{name}"><option value="">all</option>"#
    );
    for (value, text) in options {
        let sel = if value == chosen { " selected" } else { "" };
        let _ = write!(
            out,
            r#"<option value="{}"{sel}>{}</option>"#,
            esc(value),
            esc(text)
        );
    }
    out.push_str("</select></label>");
}

/// The fleet page's body: filters, counts, the table and the pager.
pub fn fleet_body(fleet: &Fleet, choices: &Choices, q: &Query, sel: &Selection<'_>) -> String {
    let mut out = String::with_capacity(1024 + sel.rows.len() * 700);
    out.push_str(r#"<h1>Fleet</h1><form id="filters" class="filters" method="get" action="/" role="search">"#);
    let _ = write!(
        out,
        r#"<label>Search <input id="q" name="q" type="search" value="{}" placeholder="name, type, id, state…" autocomplete="off"></label>"#,
        esc(&q.q)
    );
    let same = |v: &[String]| v.iter().map(|s| (s.clone(), s.clone())).collect::<Vec<_>>();
    select(&mut out, "org", "Org", &same(&choices.orgs), &q.org);
    let hubs: Vec<(String, String)> = choices
        .hubs
        .iter()
        .map(|h| (h.clone(), h[..8.min(h.len())].to_string() + "…"))
        .collect();
    select(&mut out, "hub", "Hub", &hubs, &q.hub);
    select(
        &mut out,
        "type",
        "Type",
        &same(&choices.types),
        &q.source_type,
    );
    let states: Vec<(String, String)> = STATE_FILTERS
        .iter()
        .map(|s| (s.to_string(), s.replace('-', " ")))
        .collect();
    select(&mut out, "state", "State", &states, &q.state);
    if q.sort != SortKey::State {
        let _ = write!(
            out,
            r#"<input type="hidden" name="sort" value="{}">"#,
            q.sort.as_str()
        );
    }
    if q.desc {
        out.push_str(r#"<input type="hidden" name="dir" value="desc">"#);
    }
    out.push_str(
        r#"<button type="submit">Filter</button> <a class="clear" href="/">Clear</a></form>"#,
    );
    out.push_str("\n<div id=\"results\">\n");
    results(&mut out, fleet, q, sel);
    out.push_str("</div>\n");
    out
}

fn results(out: &mut String, fleet: &Fleet, q: &Query, sel: &Selection<'_>) {
    let c = &fleet.summary;
    let count = |out: &mut String, class: &str, n: String, label: &str, state: &str, sub: &str| {
        let link = Query {
            state: state.to_string(),
            page: 1,
            ..q.clone()
        };
        let _ = write!(
            out,
            r#"<a class="count count-{class}" href="/{}"><span class="n">{n}</span><span class="label">{label}</span>{sub}</a>"#,
            esc(&link.to_query_string())
        );
    };
    out.push_str(r#"<section class="counts" aria-label="counts by state">"#);
    count(out, "all", c.total.to_string(), "connectors", "", "");
    count(out, "fresh", c.fresh.to_string(), "fresh", "fresh", "");
    count(out, "stale", c.stale.to_string(), "STALE", "stale", "");
    count(out, "broken", c.broken.to_string(), "BROKEN", "broken", "");
    count(
        out,
        "never",
        c.never_verified.to_string(),
        "never verified",
        "never-verified",
        "",
    );
    let (n, sub) = if c.continuous_reporting == 0 {
        (
            "—".to_string(),
            r#"<span class="sub">not reported yet</span>"#.to_string(),
        )
    } else {
        (
            c.continuous_lagging.to_string(),
            format!(
                r#"<span class="sub">of {} reporting</span>"#,
                c.continuous_reporting
            ),
        )
    };
    count(out, "lag", n, "continuous lag", "lagging", &sub);
    out.push_str("</section>\n");

    let first = if sel.matched == 0 {
        0
    } else {
        (sel.page - 1) * q.per + 1
    };
    let last = (first + sel.rows.len()).saturating_sub(1).max(first);
    let filtered = if q.filters() {
        format!(" (filtered from {})", c.total)
    } else {
        String::new()
    };
    let _ = write!(
        out,
        r#"<p class="matched" id="matched">Showing {first}–{last} of {} connector{}{filtered}</p>"#,
        sel.matched,
        if sel.matched == 1 { "" } else { "s" }
    );
    table(
        out,
        &sel.rows,
        Columns { org_and_hub: true },
        Some(q),
        "/",
        fleet.checked_at,
    );
    if sel.matched == 0 {
        out.push_str(
            r#"<p class="empty">No connector matches. <a href="/">Clear the filters</a>.</p>"#,
        );
    }
    if sel.pages > 1 {
        out.push_str(r#"<nav class="pager" aria-label="pages">"#);
        if sel.page > 1 {
            let prev = Query {
                page: sel.page - 1,
                ..q.clone()
            };
            let _ = write!(
                out,
                r#"<a class="page" rel="prev" href="/{}">« previous</a> "#,
                esc(&prev.to_query_string())
            );
        }
        let _ = write!(out, "page {} of {}", sel.page, sel.pages);
        if sel.page < sel.pages {
            let next = Query {
                page: sel.page + 1,
                ..q.clone()
            };
            let _ = write!(
                out,
                r#" <a class="page" rel="next" href="/{}">next »</a>"#,
                esc(&next.to_query_string())
            );
        }
        out.push_str("</nav>\n");
    }
}

fn command(out: &mut String, id: &str, cmd: &str) {
    let _ = write!(
        out,
        r#"<div class="cmd"><pre id="{id}"><code>{}</code></pre><button class="copy" type="button" data-copy="{id}" hidden>Copy</button></div>"#,
        esc(cmd)
    );
}

/// The hub page's body.
pub fn hub_body(h: &HubView<'_>, bucket: &str, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<p class="crumbs"><a href="/">Fleet</a> › hub</p><h1>Hub <code>{}</code></h1><p>{} · {} connector{}</p>"#,
        h.datahub,
        h.org
            .as_ref()
            .map(|o| format!("org {}", esc(o.as_str())))
            .unwrap_or_else(|| "several orgs".into()),
        h.connectors.len(),
        if h.connectors.len() == 1 { "" } else { "s" }
    );
    out.push_str(r#"<section class="restore"><h2>Restore the whole hub</h2>"#);
    let _ = write!(
        out,
        r#"<p>Newest common instant: <strong id="common-instant">{}</strong></p><p class="note">{}</p>"#,
        h.common_instant
            .map(|t| when(Some(t), now))
            .unwrap_or_else(|| "none".into()),
        esc(&h.common_instant_note)
    );
    if let Some(cmd) = h.restore_hub_command(bucket) {
        command(&mut out, "cmd-hub", &cmd);
        out.push_str(r#"<p class="hint">Add <code>--dry-run</code> to see the plan first. Onto a new hub: add <code>--to-datahub NEW</code> and one <code>--map OLD=NEW</code> per connector.</p>"#);
    }
    out.push_str("</section><h2>Connectors</h2>");
    table(
        &mut out,
        &h.connectors,
        Columns { org_and_hub: false },
        None,
        "",
        now,
    );
    out
}

/// The connector page's body.
pub fn connector_body(
    d: &Detail,
    hub: Option<&HubView<'_>>,
    bucket: &str,
    max_age: Duration,
) -> String {
    let r = &d.row;
    let s = &r.status;
    let now = d.checked_at;
    let mut out = String::new();
    let hub_id = s.datahub.to_string();
    let _ = write!(
        out,
        r#"<p class="crumbs"><a href="/">Fleet</a> › <a href="/hubs/{hub_id}">hub {}</a> › connector</p><h1>{} <span class="type">{}</span> {}</h1>"#,
        &hub_id[..8],
        esc(s.name.as_deref().unwrap_or("(no name)")),
        esc(s.source_type.as_deref().unwrap_or("")),
        mark(s.state)
    );
    if !s.problems.is_empty() {
        out.push_str(r#"<ul class="problems">"#);
        for p in &s.problems {
            let _ = write!(out, "<li>{}</li>", esc(p));
        }
        out.push_str("</ul>");
    }
    out.push_str(r#"<dl class="facts">"#);
    let mut fact = |k: &str, v: String| {
        let _ = write!(out, "<dt>{k}</dt><dd>{v}</dd>");
    };
    fact("Org", esc(s.org.as_str()));
    fact(
        "Data hub",
        format!(r#"<a href="/hubs/{hub_id}"><code>{hub_id}</code></a>"#),
    );
    fact("Connector", format!("<code>{}</code>", s.connector));
    fact(
        "Canonical key",
        s.key
            .as_deref()
            .map(|k| format!("<code>{}</code>", esc(k)))
            .unwrap_or_else(|| "none".into()),
    );
    fact("Newest restorable", when(r.newest_restorable, now));
    fact(
        "Restorable window",
        r.restorable_window
            .map(|w| {
                format!(
                    "{} → {} (kept versions; <code>--at</code> picks the newest at or before)",
                    w.from.format("%Y-%m-%d %H:%M UTC"),
                    w.to.format("%Y-%m-%d %H:%M UTC")
                )
            })
            .unwrap_or_else(|| "none".into()),
    );
    fact(
        "Continuous capture",
        match (d.continuous_window, r.continuous_lag_seconds) {
            (Some(w), lag) => format!(
                "{} → {}{}",
                w.from.format("%Y-%m-%d %H:%M:%S UTC"),
                w.to.format("%Y-%m-%d %H:%M:%S UTC"),
                lag.map(|l| format!(", {} behind", fmt_age(Duration::from_secs_f64(l))))
                    .unwrap_or_default()
            ),
            _ => r#"<span class="none">not reported</span>"#.into(),
        },
    );
    fact(
        "Size",
        s.size.map(human_bytes).unwrap_or_else(|| "—".into()),
    );
    fact("Versions kept", s.versions.to_string());
    fact("Last drill", drill_cell(r));
    out.push_str("</dl>");

    out.push_str(r#"<section class="restore"><h2>Restore</h2><p>This connector, newest state, onto itself:</p>"#);
    command(&mut out, "cmd-restore", &r.restore_command(bucket));
    if let Some(cmd) = hub.and_then(|h| h.restore_hub_command(bucket)) {
        out.push_str("<p>Its whole hub, every connector at the newest common instant:</p>");
        command(&mut out, "cmd-hub", &cmd);
    }
    out.push_str(r#"<p class="hint">Onto a new connector: add <code>--to-datahub NEW --to-connector NEW</code>. An older state: <code>--version ID</code> (below) or <code>--at TIME</code>. <code>--dry-run</code> shows the plan without touching anything.</p></section>"#);

    // The newest versions only: a connector may keep 100,000 (`hubvault versions` lists
    // them all), and every one would be a row and a point on every load.
    let shown = &d.versions[..d.versions.len().min(VERSIONS_SHOWN)];
    let sizes: Vec<(DateTime<Utc>, u64)> = shown
        .iter()
        .filter_map(|v| Some((v.snapshot_at, v.size?)))
        .collect();
    let mut points: Vec<DateTime<Utc>> = shown
        .iter()
        .filter(|v| v.complete)
        .map(|v| v.snapshot_at)
        .collect();
    points.extend(r.newest_restorable);
    let _ = write!(
        out,
        r#"<section><h2>History</h2>{}</section>"#,
        chart::render(&sizes, &points, max_age, now)
    );

    let _ = write!(
        out,
        r#"<section><h2>Versions ({})</h2><table class="versions"><thead><tr><th>Version</th><th>Snapshot</th><th>Size</th><th>Stored</th><th>Events</th><th>Note</th></tr></thead><tbody>"#,
        d.versions.len()
    );
    for v in shown {
        let note = match (v.complete, v.current) {
            (_, true) => "current (the canonical object)",
            (true, false) => "",
            (false, _) => "incomplete: not restorable",
        };
        let _ = write!(
            out,
            r#"<tr><td><code>{}</code></td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{note}</td></tr>"#,
            v.version,
            v.snapshot_at.format("%Y-%m-%d %H:%M:%S UTC"),
            v.size.map(human_bytes).unwrap_or_else(|| "—".into()),
            v.stored_size.map(human_bytes).unwrap_or_else(|| "—".into()),
            v.events
                .map(|e| e.to_string())
                .unwrap_or_else(|| "—".into()),
        );
    }
    out.push_str("</tbody></table>");
    if d.versions.len() > shown.len() {
        let _ = write!(
            out,
            r#"<p class="note">{} older versions are not shown: <code>hubvault versions --bucket {} --org {} --datahub {} --connector {}</code> lists them all.</p>"#,
            d.versions.len() - shown.len(),
            esc(&crate::serve::fleet::shell_word(bucket)),
            s.org,
            s.datahub,
            s.connector
        );
    }
    out.push_str("</section>");

    let _ = write!(
        out,
        r#"<section><h2>Restore drills ({})</h2>"#,
        d.drills.len()
    );
    if let Some(rec) = &d.last_drill_record {
        for p in &rec.problems {
            let _ = write!(out, r#"<p class="problem">Last drill: {}</p>"#, esc(p));
        }
        for w in &rec.warnings {
            let _ = write!(out, r#"<p class="note">Last drill warned: {}</p>"#, esc(w));
        }
    }
    if d.drills.is_empty() {
        out.push_str(r#"<p><span class="mark mark-never">never</span> verified: run <code>hubvault verify</code> on a machine with the bucket's credentials.</p>"#);
    } else {
        out.push_str(
            r#"<table class="drills"><thead><tr><th>When</th><th>Result</th></tr></thead><tbody>"#,
        );
        for dr in d.drills.iter().take(VERSIONS_SHOWN) {
            let result = if dr.ok {
                r#"<span class="mark mark-ok">ok</span>"#
            } else {
                r#"<span class="mark mark-failed">FAILED</span>"#
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{result}</td></tr>",
                esc(&pretty_stamp(&dr.stamp))
            );
        }
        out.push_str("</tbody></table>");
        if d.drills.len() > VERSIONS_SHOWN {
            let _ = write!(
                out,
                r#"<p class="note">{} older drills are not shown.</p>"#,
                d.drills.len() - VERSIONS_SHOWN
            );
        }
    }
    out.push_str("</section>");
    out
}

/// A page for a request that cannot be answered (unknown id, bucket down).
pub fn message_body(title: &str, text: &str, hint: Option<&str>) -> String {
    format!(
        r#"<p class="crumbs"><a href="/">Fleet</a></p><h1>{}</h1><p>{}</p>{}"#,
        esc(title),
        esc(text),
        hint.map(|h| format!(r#"<p class="hint">Try: {}</p>"#, esc(h)))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_bucket_cannot_become_markup() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    /// Review of serve: a connector with 100,000 kept versions (no prune for years, or
    /// keys written by someone else) made a 20 MB connector page, rebuilt on every load.
    #[test]
    fn a_connector_with_100000_versions_has_a_page_of_bounded_size() {
        use crate::catalog::inventory::{Scope, group};
        use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
        use crate::model::layout::{ConnectorKey, VersionId};
        use crate::serve::detail::VersionPoint;
        use crate::serve::fleet::Row;
        use crate::store::ObjectInfo;
        let ck = ConnectorKey::new(
            OrgSlug::parse("acme").unwrap(),
            DatahubId::random(),
            ConnectorId::random(),
        );
        let first = DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let ids: Vec<VersionId> = (0..100_000i64)
            .map(|i| VersionId::new(first + chrono::Duration::minutes(i), &format!("{i:012x}")))
            .collect();
        let now = ids.last().unwrap().time() + chrono::Duration::minutes(1);
        let obj = |key| ObjectInfo {
            key,
            size: 10,
            last_modified: now,
            e_tag: None,
        };
        let mut objects = vec![obj(ck.canonical(&Default::default()))];
        for v in &ids {
            objects.push(obj(ck.version_data(v)));
            objects.push(obj(ck.version_manifest(v)));
        }
        let listed = group(objects, &Scope::default()).remove(0);
        let max_age = Duration::from_secs(86400);
        let d = Detail {
            row: Row::from_listed(listed, max_age, now),
            checked_at: now,
            versions: ids
                .iter()
                .rev()
                .map(|v| VersionPoint {
                    version: v.clone(),
                    snapshot_at: v.time(),
                    size: Some(4096),
                    stored_size: Some(10),
                    events: Some(1),
                    complete: true,
                    current: false,
                })
                .collect(),
            drills: ids
                .iter()
                .rev()
                .map(|v| crate::serve::detail::DrillPoint {
                    stamp: v.to_string()[..20].to_string(),
                    at: Some(v.time()),
                    ok: true,
                })
                .collect(),
            last_drill_record: None,
            continuous_window: None,
        };
        let body = connector_body(&d, None, "s3://b", max_age);
        assert!(body.len() < 256 << 10, "{} bytes", body.len());
        assert!(
            body.contains(&ids[99_999].to_string()),
            "the newest is shown"
        );
        assert!(!body.contains(&ids[0].to_string()));
        assert!(body.contains("Versions (100000)"));
        assert!(
            body.contains("99800 older versions are not shown"),
            "says how many are left out"
        );
        assert!(body.contains("99800 older drills are not shown"));
    }

    #[test]
    fn marks_carry_a_word_as_well_as_a_colour() {
        assert!(mark(State::Broken).contains(">BROKEN<"));
        assert!(mark(State::Stale).contains(">STALE<"));
        assert!(mark(State::Fresh).contains(">fresh<"));
        assert_eq!(pretty_stamp("20261124T070102.123Z"), "2026-11-24 07:01 UTC");
    }
}
