//! `hubvault restore`: plan, confirm, fetch, verify, rewrite, install, hook.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::model::ids::{ConnectorId, DatahubId, Ids};
use hubvault::model::layout::DbFileName;
use hubvault::model::layout::VersionId;
use hubvault::ops::restore::{
    self, Expected, RestorePlan, RestoreReport, RestoreRequest, Source, Target,
};
use hubvault::{Error, Result};

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The datahub id of the backup (the old hub).
    #[arg(long, value_name = "OLD")]
    datahub: String,
    /// The connector id of the backup (the old connector).
    #[arg(long, value_name = "OLD")]
    connector: String,
    /// The new hub's id; default: the old one (restore onto the same hub).
    #[arg(long, value_name = "NEW")]
    to_datahub: Option<String>,
    /// The new connector's id; default: the old one.
    #[arg(long, value_name = "NEW")]
    to_connector: Option<String>,
    /// Install at <DIR>/<newConnectorId>/sqlite.db (or set HUBVAULT_HUB_ROOT).
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    hub_root: Option<PathBuf>,
    /// Write the restored database to this file instead of a hub.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Restore this kept version (see `hubvault versions`) instead of the latest backup.
    // Not `version`: that id is clap's own --version flag of the program.
    #[arg(
        long = "version",
        id = "version_id",
        value_name = "ID",
        conflicts_with = "at"
    )]
    version_id: Option<String>,
    /// The state as of this instant: RFC 3339 (zone optional, UTC assumed), a date, or a
    /// duration ago (15m, "2h ago"), or now. From continuous capture where it covers the instant,
    /// else the newest version taken at or before it.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Print the plan (what is fetched, rewritten, replaced, kept) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run this command with `sh -c` once the database is installed (the platform's
    /// "Update config" and "Sync"). Environment: HUBVAULT_OLD_DATAHUB,
    /// HUBVAULT_OLD_CONNECTOR, HUBVAULT_NEW_DATAHUB, HUBVAULT_NEW_CONNECTOR, HUBVAULT_DB_PATH.
    #[arg(long, value_name = "CMD")]
    then: Option<String>,
    /// Stop the --then command (SIGTERM to its process group, SIGKILL 5 s later) if it
    /// runs longer than this.
    #[arg(long, value_name = "DURATION", default_value = "10m", env = "HUBVAULT_THEN_TIMEOUT", value_parser = super::parse_duration)]
    then_timeout: std::time::Duration,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Replace the target even while a process holds it open.
    #[arg(long)]
    force: bool,
    /// Install even where old ids cannot be rewritten (mixed case, raw bytes in a BLOB, a
    /// contentless full-text index): they stay, listed in the output. Without it such a
    /// backup is refused before anything is installed.
    #[arg(long)]
    accept_unrewritten: bool,
}

/// `--version ID` or `--at TIME` or neither (the latest backup).
pub fn parse_source(version: Option<&str>, at: Option<&str>) -> Result<Source> {
    Ok(match (version, at) {
        (Some(v), _) => Source::Version(VersionId::parse(v)?),
        (None, Some(t)) => Source::At(
            hubvault::model::time::parse_instant(t, chrono::Utc::now()).map_err(|e| {
                Error::usage(
                    format!("--at {t:?}: {e}"),
                    "write e.g. --at 2026-11-24T07:00:00Z, --at 2026-11-24, or --at '15m ago'",
                )
            })?,
        ),
        (None, None) => Source::Latest,
    })
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let target = match (&a.output, &a.hub_root) {
        (Some(o), _) => Target::Output(o.clone()),
        (None, Some(r)) => Target::HubRoot(r.clone()),
        (None, None) => match std::env::var_os("HUBVAULT_HUB_ROOT").filter(|v| !v.is_empty()) {
            Some(r) => Target::HubRoot(PathBuf::from(r)),
            None => {
                return Err(Error::usage(
                    "no target: pass --hub-root DIR or --output FILE",
                    "e.g. --hub-root /var/datahub (or set HUBVAULT_HUB_ROOT), or --output ./restored.db",
                ));
            }
        },
    };
    // Every flag is checked before anything is touched.
    let from = Ids {
        datahub: DatahubId::parse(&a.datahub)?,
        connector: ConnectorId::parse(&a.connector)?,
    };
    let to = Ids {
        datahub: a
            .to_datahub
            .as_deref()
            .map(|s| DatahubId::parse(s).map_err(|e| super::flag(e, "--to-datahub")))
            .transpose()?
            .unwrap_or(from.datahub),
        connector: a
            .to_connector
            .as_deref()
            .map(|s| ConnectorId::parse(s).map_err(|e| super::flag(e, "--to-connector")))
            .transpose()?
            .unwrap_or(from.connector),
    };
    let req = RestoreRequest {
        org: g.org()?,
        from,
        to,
        source: parse_source(a.version_id.as_deref(), a.at.as_deref())?,
        target,
        force: a.force,
        db_file: DbFileName::default(),
        accept_unrewritten: a.accept_unrewritten,
    };
    let bucket = g.bucket()?;
    let plan = restore::plan(&bucket, &req).await?;

    if a.dry_run {
        if g.json {
            output::print_json(&serde_json::json!({"ok": true, "dry_run": true, "plan": plan}));
        } else {
            print_plan(&plan);
            outln!("dry run: nothing fetched, nothing changed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::usage(
                "restore replaces a database and asks for confirmation, but stdin is not a terminal",
                "pass --yes to confirm (look first with --dry-run)",
            ));
        }
        print_plan(&plan);
        err!("Restore? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            errln!("not restored: nothing changed");
            return Ok(ExitCode::from(1));
        }
    }

    let report = restore::execute(&bucket, &plan, &output::Bar::new(g.json)).await?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    let hook = match &a.then {
        Some(cmd) => {
            if !g.json {
                print_report(&report);
                outln!("running --then: {cmd}");
            }
            // Keep stdout one JSON document: the hook's output goes to stderr.
            let r = match restore::run_hook(cmd, &plan, a.then_timeout, g.json).await {
                Ok(r) => r,
                // Not started at all: the database is installed all the same.
                Err(e) => {
                    let installed = format!(
                        "the restored database IS installed at {}",
                        plan.target.display()
                    );
                    return output::hook_not_started(g.json, &report, e, &installed);
                }
            };
            if !r.ok {
                let e = restore::hook_error(&r, &plan);
                return output::hook_failed(g.json, &report, &r, e);
            }
            Some(r)
        }
        None => None,
    };
    let steps = if a.then.is_none() {
        restore::remaining_steps(&plan)
    } else {
        Vec::new()
    };
    if g.json {
        output::print_json(
            &serde_json::json!({"ok": true, "restore": report, "hook": hook, "remaining_steps": steps}),
        );
    } else {
        if a.then.is_none() {
            print_report(&report);
            outln!("remaining steps (no --then hook given):");
            for (i, s) in steps.iter().enumerate() {
                outln!("  {}. {s}", i + 1);
            }
        } else {
            outln!("--then command succeeded");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_plan(p: &RestorePlan) {
    outln!("restore plan");
    outln!(
        "  fetch      {}/{}",
        p.bucket.trim_end_matches('/'),
        p.source.key
    );
    if let Some(v) = &p.source.version {
        outln!("  version    {v}");
    }
    match &p.source.expected {
        Expected::Version { sha256, manifest } => {
            outln!("  verify     sha256 {sha256} ({manifest})")
        }
        Expected::SameAsCanonical { sha256, manifest } => {
            if let Some(c) = &p.source.instead_of {
                outln!(
                    "  instead of {} (same bytes: its ETag {} and size {} are what latest.json records)",
                    c.key,
                    c.e_tag,
                    c.size
                );
            }
            outln!("  verify     sha256 {sha256} ({manifest})")
        }
        Expected::Canonical {
            latest_sha256,
            versions,
        } => outln!(
            "  verify     sha256 = latest.json ({}) or one of {versions} version manifests",
            latest_sha256.as_deref().unwrap_or("unreadable")
        ),
        Expected::Legacy => {
            outln!("  verify     no manifest (legacy backup): integrity and ids only")
        }
        Expected::Chain { base, segments } => {
            outln!(
                "  continuous base {base} + the connector's sections of {segments} hub segments, chain checked"
            );
            if let Some(c) = &p.source.continuous {
                match c.at {
                    Some(t) => outln!(
                        "  at         {} (commits observed at or before it)",
                        t.to_rfc3339()
                    ),
                    None => outln!(
                        "  at         the newest captured commit (segments up to {})",
                        c.newest_segment
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "none yet".into())
                    ),
                }
            }
        }
    }
    if p.rewrite {
        outln!(
            "  rewrite    datahub   {} -> {}",
            p.from.datahub,
            p.to.datahub
        );
        outln!(
            "             connector {} -> {}",
            p.from.connector,
            p.to.connector
        );
    } else {
        outln!(
            "  rewrite    none (same ids {} / {})",
            p.to.datahub,
            p.to.connector
        );
    }
    outln!(
        "  journal    {}",
        p.source
            .journal_mode
            .as_deref()
            .unwrap_or(if p.source.continuous.is_some() {
                "the connector's when captured (read from the base)"
            } else {
                "as the replaced file (or delete)"
            })
    );
    outln!(
        "  install    {}{}",
        p.target.display(),
        if p.replaces {
            " (replaces the database there)"
        } else {
            " (new)"
        }
    );
    for k in &p.keep {
        outln!("  keep       {} -> {}", k.from.display(), k.to.display());
    }
    for h in &p.held_open_by {
        outln!(
            "  HELD OPEN  by pid {} ({}){}",
            h.pid,
            h.command,
            if p.force {
                ": --force given, replacing anyway"
            } else {
                ": the restore will refuse (stop it or pass --force)"
            }
        );
    }
}

fn print_report(r: &RestoreReport) {
    outln!("restored {}", r.target.display());
    match &r.continuous {
        Some(c) => outln!(
            "  state      continuous capture, as of {} ({} commits after the base)",
            c.state_time.to_rfc3339(),
            c.commits
        ),
        None => outln!(
            "  state      {}",
            match &r.version {
                Some(v) => format!("kept version {v}, taken {}", v.time().to_rfc3339()),
                None => "the backup at the canonical key (newest version)".to_string(),
            }
        ),
    }
    outln!("  from       {}", r.key);
    outln!(
        "  verified   sha256 {} against {}",
        r.sha256_fetched,
        r.verified_by
    );
    for w in &r.warnings {
        outln!("  WARNING    {w}");
    }
    if let Some(p) = &r.rewrite {
        outln!("  rewrote    {} values:", p.total_values());
        super::remap::print_plan(p);
        super::remap::print_unrewritten(p, false);
    }
    let old_ids = match &r.rewrite {
        None => "same ids, nothing rewritten",
        Some(p) if p.no_old_id_left() => "no old id left",
        Some(_) => "OLD IDS LEFT (listed above)",
    };
    outln!(
        "  checked    {}, foreign keys, ids {} / {}, {old_ids}",
        r.check,
        r.to.datahub,
        r.to.connector
    );
    outln!(
        "  installed  {} ({} events, journal {}, sha256 {})",
        output::human_bytes(r.bytes),
        r.events
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into()),
        r.journal_mode,
        r.sha256_installed
    );
    for k in &r.kept {
        outln!("  kept       {}", k.to.display());
    }
}
