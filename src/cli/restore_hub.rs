//! `hubvault restore-hub`: every connector of a hub at one common instant; plan, confirm,
//! prepare all, install all, hook once, summary.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::model::ids::{ConnectorId, DatahubId, OrgSlug};
use hubvault::model::layout::DbFileName;
use hubvault::ops::restore_hub::{self, HubPlan, HubReport, HubRequest, Placement, ProblemKind};
use hubvault::{Error, Result};

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The id of the lost hub (the old one): every connector backed up under it is
    /// restored.
    #[arg(long, value_name = "OLD")]
    datahub: String,
    /// The new hub's id; default: the old one (restore onto the same hub).
    #[arg(long, value_name = "NEW")]
    to_datahub: Option<String>,
    /// An old connector id and the new connector created for it in the platform
    /// (repeat once per connector). Needed for every connector onto a new hub.
    #[arg(long = "map", value_name = "OLD=NEW")]
    map: Vec<String>,
    /// The map from a file: OLD=NEW lines, a JSON object {"OLD": "NEW"}, or the
    /// `--dry-run --json` document with each new_connector filled in.
    #[arg(long, value_name = "FILE")]
    map_file: Option<PathBuf>,
    /// Leave this connector of the old hub out (repeat once per connector): not restored,
    /// no new id needed, no part in the common instant. For a connector removed from the
    /// hub, whose old backups would otherwise hold the instant back.
    #[arg(long, value_name = "OLD")]
    exclude: Vec<String>,
    /// The hub's root directory: connectors go to <DIR>/<newConnectorId>/sqlite.db (or
    /// set HUBVAULT_HUB_ROOT).
    #[arg(long, value_name = "DIR")]
    hub_root: Option<PathBuf>,
    /// The common instant: RFC 3339 (zone optional, UTC assumed), a date, or a duration
    /// ago (15m, "2h ago"), or now. Default: the newest instant every connector can be restored to.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// List the connectors (name, type, metadata, tags, ids: what to create in the
    /// platform first), the instant and what would be restored where; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run this command with `sh -c` once, after every connector is installed (the hub
    /// menu's "Update config" and "Sync"). Environment: HUBVAULT_OLD_DATAHUB,
    /// HUBVAULT_NEW_DATAHUB, HUBVAULT_HUB_ROOT, HUBVAULT_CONNECTORS ("OLD=NEW …"),
    /// HUBVAULT_AT.
    #[arg(long, value_name = "CMD")]
    then: Option<String>,
    /// Stop the --then command (SIGTERM to its process group, SIGKILL 5 s later) if it
    /// runs longer than this.
    #[arg(long, value_name = "DURATION", default_value = "10m", env = "HUBVAULT_THEN_TIMEOUT", value_parser = super::parse_duration)]
    then_timeout: std::time::Duration,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Install even where old ids cannot be rewritten (mixed case, raw bytes in a BLOB, a
    /// contentless full-text index): they stay, listed in the output. Without it one such
    /// connector refuses the whole hub before any connector is installed.
    #[arg(long)]
    accept_unrewritten: bool,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    // Every flag is checked before anything is touched.
    let hub_root = match &a.hub_root {
        Some(r) => r.clone(),
        None => match std::env::var_os("HUBVAULT_HUB_ROOT").filter(|v| !v.is_empty()) {
            Some(r) => PathBuf::from(r),
            None => {
                return Err(Error::usage(
                    "no hub root: pass --hub-root DIR",
                    "e.g. --hub-root /var/datahub (or set HUBVAULT_HUB_ROOT)",
                ));
            }
        },
    };
    let from = DatahubId::parse(&a.datahub)?;
    let to = a
        .to_datahub
        .as_deref()
        .map(|s| DatahubId::parse(s).map_err(|e| super::flag(e, "--to-datahub")))
        .transpose()?
        .unwrap_or(from);
    let mut map = Vec::new();
    if let Some(f) = &a.map_file {
        let text = std::fs::read_to_string(f).map_err(|e| {
            Error::usage(
                format!("--map-file {}: cannot read it: {e}", f.display()),
                "pass the path of a readable map file",
            )
        })?;
        map.extend(restore_hub::parse_map_file(&text, f)?);
    }
    for m in &a.map {
        map.push(restore_hub::parse_map_entry(m, &format!("--map {m}"))?);
    }
    let exclude = a
        .exclude
        .iter()
        .map(|c| ConnectorId::parse(c).map_err(|e| super::flag(e, "--exclude")))
        .collect::<Result<Vec<_>>>()?;
    let at = match &a.at {
        None => None,
        Some(t) => Some(
            hubvault::model::time::parse_instant(t, chrono::Utc::now()).map_err(|e| {
                Error::usage(
                    format!("--at {t:?}: {e}"),
                    "write e.g. --at 2026-11-24T07:00:00Z, --at 2026-11-24, or --at '15m ago'",
                )
            })?,
        ),
    };
    let org: OrgSlug = g.org()?;
    let req = HubRequest {
        org,
        from,
        to,
        map,
        exclude,
        hub_root,
        at,
        db_file: DbFileName::default(),
        parallel: restore_hub::DEFAULT_PARALLEL,
        accept_unrewritten: a.accept_unrewritten,
    };
    let bucket = g.bucket()?;
    let mut plan = restore_hub::plan(&bucket, &req).await?;

    if a.dry_run {
        // Backups older than source.json: metadata and tags are read from the backup.
        if plan.connectors.iter().any(|c| c.create_from == "label") {
            restore_hub::read_sources_from_backups(&bucket, &mut plan).await?;
        }
        // An incomplete map is what a dry run is for (the list to create, a map-file
        // template); a map that is wrong is still refused.
        let code = plan
            .problems
            .iter()
            .filter(|p| p.kind != ProblemKind::Unmapped)
            .map(|p| p.kind.exit_code())
            .max()
            .unwrap_or(0);
        if g.json {
            output::print_json(
                &serde_json::json!({"ok": code == 0, "dry_run": true, "plan": plan}),
            );
        } else {
            print_plan(&plan);
            outln!("dry run: nothing downloaded, nothing changed");
        }
        return Ok(ExitCode::from(code as u8));
    }
    if let Some(e) = plan.refusal() {
        if g.json {
            let code = e.exit_code();
            output::print_json(&serde_json::json!({
                "ok": false,
                "error": hubvault::error::redact_userinfo(&e.to_string()),
                "hint": e.hint(),
                "exit_code": code,
                "plan": plan,
            }));
            errln!("error: {e}");
            if let Some(h) = e.hint() {
                errln!("Try: {h}");
            }
            return Ok(ExitCode::from(code as u8));
        }
        if plan
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Unmapped)
        {
            print_create_list(&plan);
        }
        return Err(e);
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::usage(
                "restore-hub replaces a hub's databases and asks for confirmation, but stdin is not a terminal",
                "pass --yes to confirm (look first with --dry-run)",
            ));
        }
        print_plan(&plan);
        err!("Restore these {} connectors? [y/N] ", plan.connectors.len());
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            errln!("not restored: nothing changed");
            return Ok(ExitCode::from(1));
        }
    }

    let bars = output::Bars::new(g.json);
    let result = restore_hub::execute(&bucket, &plan, &bars).await;
    bars.clear();
    let report = result?;
    for c in &report.connectors {
        for w in &c.warnings {
            tracing::warn!("connector {}: {w}", c.old_connector);
        }
    }
    if !g.json {
        print_report(&report);
    }
    let hook = match &a.then {
        Some(cmd) => {
            if !g.json {
                outln!("running --then: {cmd}");
            }
            // Keep stdout one JSON document: the hook's output goes to stderr.
            let r = match restore_hub::run_hook(cmd, &plan, a.then_timeout, g.json).await {
                Ok(r) => r,
                // Not started at all: the connectors are installed all the same.
                Err(e) => {
                    let installed = format!(
                        "every connector IS installed under {}",
                        plan.hub_root.display()
                    );
                    return output::hook_not_started(g.json, &report, e, &installed);
                }
            };
            if !r.ok {
                let e = restore_hub::hook_error(&r, &plan);
                return output::hook_failed(g.json, &report, &r, e);
            }
            Some(r)
        }
        None => None,
    };
    let steps = if a.then.is_none() {
        restore_hub::remaining_steps(&plan)
    } else {
        Vec::new()
    };
    if g.json {
        output::print_json(
            &serde_json::json!({"ok": true, "restore": report, "hook": hook, "remaining_steps": steps}),
        );
    } else if a.then.is_none() {
        outln!("remaining steps (no --then hook given):");
        for (i, s) in steps.iter().enumerate() {
            outln!("  {}. {s}", i + 1);
        }
    } else {
        outln!("--then command succeeded");
    }
    Ok(ExitCode::SUCCESS)
}

fn ago(seconds: Option<f64>) -> String {
    match seconds {
        None => "?".into(),
        Some(s) if s < 0.001 => "its newest".into(),
        Some(s) => format!(
            "{} behind its newest",
            hubvault::model::time::fmt_age(std::time::Duration::from_secs_f64(s))
        ),
    }
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

fn print_plan(p: &HubPlan) {
    outln!(
        "restore-hub plan: hub {} -> {}{}",
        p.datahub,
        p.to_datahub,
        if p.new_hub() { "" } else { " (the same hub)" }
    );
    outln!("  bucket     {} (org {})", p.bucket, p.org);
    outln!("  hub root   {}", p.hub_root.display());
    outln!(
        "  instant    {} ({})",
        time(p.instant),
        match p.instant_chosen_by {
            restore_hub::NEWEST_COMMON => "the newest instant every connector can be restored to",
            restore_hub::FIRST_COMMON =>
                "the first instant at which every connector has a backup: one's first backup is newer than another's newest",
            _ => "--at",
        }
    );
    outln!("  connectors {}", p.connectors.len());
    if !p.excluded.is_empty() {
        let ids: Vec<String> = p.excluded.iter().map(|c| c.to_string()).collect();
        outln!("  left out   {} (--exclude)", ids.join(", "));
    }
    for c in &p.connectors {
        outln!("");
        outln!(
            "  {} -> {}",
            c.old_connector,
            c.new_connector
                .map(|n| n.to_string())
                .unwrap_or_else(|| "(no new id)".into())
        );
        outln!(
            "    name       {:?} ({})",
            c.create.name,
            if c.create.source_type.is_empty() {
                "type unknown".to_string()
            } else {
                restore_hub::shown(&c.create.source_type)
            }
        );
        outln!(
            "    create     metadata {} tags {}{}",
            c.create.metadata,
            c.create.tags,
            if c.create_from == "label" {
                " (unknown: the backup predates source.json)"
            } else {
                ""
            }
        );
        outln!(
            "    window     {} .. {} (newest: {})",
            time(c.window.oldest),
            time(c.window.newest),
            match &c.window.newest_by {
                Some(hubvault::catalog::window::Newest::Stream) => "continuous capture".into(),
                Some(hubvault::catalog::window::Newest::Version { id }) => format!("version {id}"),
                Some(hubvault::catalog::window::Newest::Legacy) => "a legacy backup".into(),
                None => "nothing restorable".into(),
            }
        );
        outln!(
            "    state      {} ({})",
            time(c.state_at),
            ago(c.behind_newest_seconds)
        );
        if let Some(s) = &c.restore {
            outln!("    fetch      {}", s.source.key);
            outln!(
                "    install    {} ({})",
                s.target.display(),
                match (s.placement, s.replaces) {
                    (Placement::New, _) => "new connector directory, moved in whole",
                    (Placement::InPlace, true) => "replaces the database there, which is kept",
                    (Placement::InPlace, false) => "into its directory",
                }
            );
            for k in &s.keep {
                outln!("    keep       {} -> {}", k.from.display(), k.to.display());
            }
        }
    }
    if !p.problems.is_empty() {
        outln!("");
        outln!("problems (the restore refuses until they are fixed):");
        for pr in &p.problems {
            outln!("  {}", pr.message);
        }
    }
}

/// What to create in the platform before the restore (the platform's procedure: "create
/// new connector with same data (name, metadata and tags)").
fn print_create_list(p: &HubPlan) {
    errln!(
        "create these {} connectors in the platform (on hub {}), then map each old id to the new one:",
        p.connectors.len(),
        p.to_datahub
    );
    for c in &p.connectors {
        errln!(
            "  old {}  name {:?}  type {}  metadata {}  tags {}",
            c.old_connector,
            c.create.name,
            restore_hub::shown(&c.create.source_type),
            c.create.metadata,
            c.create.tags
        );
    }
    if p.connectors.iter().any(|c| c.create_from == "label") {
        errln!(
            "  (null metadata/tags: backups older than source.json; --dry-run reads them from the backups)"
        );
    }
}

fn print_report(r: &HubReport) {
    outln!(
        "restored {} connectors of hub {} onto hub {} under {}, at {} ({})",
        r.connectors.len(),
        r.datahub,
        r.to_datahub,
        r.hub_root.display(),
        time(Some(r.instant)),
        r.instant_chosen_by
    );
    outln!(
        "  {:<30} {:<16} {:<24} {:>8} {:>10} {:>7}",
        "connector",
        "type",
        "instant",
        "events",
        "bytes",
        "time"
    );
    for c in &r.connectors {
        let name: String = if c.name.is_empty() {
            c.new_connector.to_string()
        } else {
            restore_hub::shown(&c.name).chars().take(30).collect()
        };
        outln!(
            "  {:<30} {:<16} {:<24} {:>8} {:>10} {:>6.1}s",
            name,
            restore_hub::shown(&c.source_type)
                .chars()
                .take(16)
                .collect::<String>(),
            time(c.state_at),
            c.events
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            output::human_bytes(c.bytes),
            c.seconds
        );
    }
    for c in &r.connectors {
        outln!(
            "  {} -> {} at {} ({}; {})",
            c.old_connector,
            c.new_connector,
            c.target.display(),
            ago(c.behind_newest_seconds),
            c.verified_by
        );
        match &c.rewrite {
            None => outln!("    same ids, nothing rewritten"),
            Some(p) => {
                outln!(
                    "    rewrote {} values, {}",
                    p.total_values(),
                    if p.no_old_id_left() {
                        "no old id left"
                    } else {
                        "OLD IDS LEFT (listed below)"
                    }
                );
                super::remap::print_unrewritten(p, false);
            }
        }
        for k in &c.kept {
            outln!("    kept {}", k.to.display());
        }
    }
    outln!("  total {:.1}s", r.seconds);
}
