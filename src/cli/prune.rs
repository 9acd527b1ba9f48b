use std::process::ExitCode;

use hubvault::Result;
use hubvault::catalog::retention::Policy;
use hubvault::ops::{compact, prune};

use super::{Global, output};

/// Retention flags, shared by `prune` (and the configuration file's [retention]).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PolicyArgs {
    /// Keep the N newest versions.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_last: Option<u32>,
    /// Keep the newest version of each of the N most recent hours that have one (UTC).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_hourly: Option<u32>,
    /// … of each of the N most recent days (UTC).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_daily: Option<u32>,
    /// … of each of the N most recent ISO weeks.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_weekly: Option<u32>,
    /// … of each of the N most recent months.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_monthly: Option<u32>,
    /// … of each of the N most recent years.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_yearly: Option<u32>,
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
        }
    }
}

/// A count, or `unlimited`.
fn parse_count(s: &str) -> std::result::Result<u32, String> {
    if s == "unlimited" {
        return Ok(u32::MAX);
    }
    s.parse::<u32>()
        .map_err(|_| format!("{s:?} is not a count: write a number like 7, or `unlimited`"))
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    scope: super::ScopeArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// How far back point-in-time restore reaches: each hub's continuous stream is
    /// compacted, and what no instant within this span needs is deleted (default:
    /// keep_within of [retention] in the config file, else 7d; the stream is per hub, so
    /// --connector selects its hub).
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// List exactly what would be deleted, and delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// One hub's stream: what compaction did and what retention deleted.
#[derive(serde::Serialize)]
struct StreamPrune {
    datahub: hubvault::model::ids::DatahubId,
    prefix: String,
    compacted: compact::CompactReport,
    retained: compact::RetainReport,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let scope = a.scope.scope(Some(g.org()?))?;
    let policy = a.policy.policy();
    if policy.is_empty() && a.keep_within.is_none() {
        return Err(hubvault::Error::usage(
            "no retention rule given, so nothing would be removed",
            "pass at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly (kept versions), or --keep-within (the continuous window, 7d by default)",
        ));
    }
    // The host's config file (HUBVAULT_CONFIG or the default, if there): the window its
    // agent keeps is the window, unless --keep-within says otherwise (7d without either).
    let (path, explicit) = match std::env::var_os("HUBVAULT_CONFIG") {
        Some(p) if !p.is_empty() => (std::path::PathBuf::from(p), true),
        _ => (
            std::path::PathBuf::from(hubvault::agent::config::DEFAULT_CONFIG_PATH),
            false,
        ),
    };
    let file = hubvault::agent::config::load_file(&path, explicit)?;
    let keep_within = match (
        &a.keep_within,
        file.retention.as_ref().and_then(|r| r.keep_within.as_ref()),
    ) {
        (None, Some(w)) => hubvault::agent::config::parse_keep_within(
            Some(w),
            &format!(" (from {})", path.display()),
        )?,
        (given, _) => hubvault::agent::config::parse_keep_within(given.as_deref(), "")?,
    };
    let bucket = g.bucket()?;
    let versions = if policy.is_empty() {
        None
    } else {
        Some(prune::prune(&bucket, &scope, &policy, a.dry_run).await?)
    };
    if scope.connector.is_some() && scope.datahub.is_none() {
        return Err(hubvault::Error::usage(
            "--connector needs --datahub",
            "pass both --datahub and --connector for one connector, only --datahub for a hub, neither for the org",
        ));
    }
    // The continuous stream, hub by hub: compaction first (what the agent has not done),
    // then retention.
    let org = scope.org.clone().expect("prune has an org");
    let hubs = match scope.datahub {
        Some(h) => vec![h],
        None => compact::hubs(&bucket, &org).await?,
    };
    let now = chrono::Utc::now();
    let keep = chrono::TimeDelta::from_std(keep_within).unwrap_or(chrono::TimeDelta::MAX);
    let cutoff = now - keep;
    let mut stream = Vec::new();
    for hub in hubs {
        let mut c = compact::Compactor::load(&bucket, &org, hub).await?;
        let settled = c.prune_settled(now);
        let compacted = c
            .compact(now, settled, Some(compact::horizon(cutoff)), a.dry_run)
            .await?;
        let retained = c.retain(cutoff, a.dry_run).await?;
        stream.push(StreamPrune {
            datahub: hub,
            prefix: hubvault::model::layout::StreamKeys::new(org.clone(), hub)
                .prefix()
                .to_string(),
            compacted,
            retained,
        });
    }
    let staging = prune::sweep_staging(&bucket, &scope, a.dry_run).await?;
    let keep_text = humantime::format_duration(keep_within).to_string();
    if g.json {
        let mut doc = match &versions {
            Some(r) => serde_json::to_value(r).expect("a report serialises"),
            None => serde_json::json!({
                "dry_run": a.dry_run,
                "policy": "",
                "connectors": [],
                "versions_removed": 0,
                "versions_kept": 0,
                "objects_deleted": 0,
            }),
        };
        doc["keep_within"] = keep_text.into();
        doc["stream"] = serde_json::to_value(&stream).expect("a report serialises");
        doc["staging"] = serde_json::to_value(&staging).expect("a report serialises");
        output::print_json(&doc);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    if let Some(report) = &versions {
        print_versions(report, verb, a.dry_run);
    }
    for s in &stream {
        let c = &s.compacted;
        let r = &s.retained;
        outln!(
            "{}/  (continuous window: {keep_text}, from {} on)",
            s.prefix,
            cutoff.format("%Y-%m-%d %H:%M UTC")
        );
        outln!(
            "  {} {} minutes (from {} segments), {} marks, {} day bases ({} copied)",
            if a.dry_run {
                "would compact"
            } else {
                "compacted"
            },
            c.minutes,
            c.segments_merged,
            c.marks,
            c.bases + c.bases_copied,
            c.bases_copied
        );
        outln!(
            "  {verb} {} stream objects older than the window; kept {} objects and {} bases",
            r.delete.len(),
            r.objects_kept,
            r.bases_kept
        );
        for p in c.problems.iter().chain(r.problems.iter()) {
            outln!("  ! {p}");
        }
    }
    if !staging.files.is_empty() {
        for f in &staging.files {
            outln!("  {verb:<7} {}  (left by a killed upload)", f.key);
        }
        outln!(
            "{verb} {} staging files killed uploads left ({:.1} MiB)",
            staging.files.len(),
            staging.bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if a.dry_run {
        outln!("dry run: nothing was deleted or written");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_versions(report: &prune::PruneReport, verb: &str, dry_run: bool) {
    for c in &report.connectors {
        outln!("{}/", c.prefix);
        for v in &c.verdicts {
            if v.keep {
                outln!("  keep    {}  ({})", v.version, v.reasons.join(", "));
            } else {
                outln!("  {verb:<7} {}", v.version);
            }
        }
        for v in &c.incomplete {
            outln!("  {verb:<7} {}  (incomplete)", v);
        }
    }
    outln!(
        "{} {} versions, kept {} ({}){}",
        verb,
        report.versions_removed,
        report.versions_kept,
        report.policy,
        if dry_run {
            "; dry run: nothing was deleted"
        } else {
            ""
        }
    );
}
