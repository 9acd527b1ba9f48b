use std::process::ExitCode;

use hubvault::Result;
use hubvault::catalog::retention::Policy;
use hubvault::ops::prune;

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
    /// List exactly what would be deleted, and delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let scope = a.scope.scope(Some(g.org()?))?;
    let policy = a.policy.policy();
    let bucket = g.bucket()?;
    let report = prune::prune(&bucket, &scope, &policy, a.dry_run).await?;
    if g.json {
        output::print_json(&report);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
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
        if a.dry_run {
            "; dry run: nothing was deleted"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}
