use std::process::ExitCode;
use std::time::Duration;

use hubvault::Result;
use hubvault::model::ids::{ConnectorId, DatahubId};
use hubvault::model::time::fmt_age;
use hubvault::ops::status::{self, Scope, State};

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this data hub's connectors.
    #[arg(long, value_name = "ID")]
    datahub: Option<String>,
    /// Only this connector.
    #[arg(long, value_name = "ID")]
    connector: Option<String>,
    /// Every org in the bucket, whatever --org or HUBVAULT_ORG say.
    #[arg(long)]
    all_orgs: bool,
    /// A backup at least this old is stale.
    #[arg(long, default_value = "24h", value_parser = super::parse_duration, value_name = "AGE")]
    max_age: Duration,
    /// Only the backups that need attention (stale or broken); the summary still
    /// counts every backup.
    #[arg(long)]
    stale_only: bool,
    /// Row order: `state` (broken, stale, then fresh; oldest first within each) or `age`
    /// (oldest first, whatever the state).
    #[arg(long, value_enum, default_value_t = SortBy::State)]
    sort: SortBy,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SortBy {
    State,
    Age,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let org = if a.all_orgs { None } else { g.org_or_none()? };
    let scope = Scope {
        org,
        datahub: a.datahub.as_deref().map(DatahubId::parse).transpose()?,
        connector: a.connector.as_deref().map(ConnectorId::parse).transpose()?,
    };
    let bucket = g.bucket()?;
    let mut report = status::run(&bucket, &scope, a.max_age, chrono::Utc::now()).await?;
    if a.sort == SortBy::Age {
        // Oldest first; a backup without a canonical object has no age and comes first.
        report.connectors.sort_by(|x, y| {
            y.age_seconds
                .unwrap_or(f64::INFINITY)
                .total_cmp(&x.age_seconds.unwrap_or(f64::INFINITY))
        });
    }
    if a.stale_only {
        report.connectors.retain(|c| c.state != State::Fresh);
    }
    // A listing that may span several orgs names the org on every row.
    let show_org = scope.org.is_none();
    if g.json {
        output::print_json(&report);
    } else if let Some(empty) = &report.empty {
        outln!("no connector backups in {}", report.scope);
        errln!("Try: {}", empty.hint);
    } else {
        let org_w = report
            .connectors
            .iter()
            .map(|c| c.org.as_str().len())
            .max()
            .unwrap_or(3)
            .max(3);
        let org_col = |o: &str| {
            if show_org {
                format!("{o:<org_w$}  ")
            } else {
                String::new()
            }
        };
        outln!(
            "{:<6}  {}{:>8}  {:>9}  {:>4}  {:<6}  {:>8}  {:<36}  {:<36}  {:<16}  NAME",
            "STATE",
            org_col("ORG"),
            "AGE",
            "SIZE",
            "VERS",
            "DRILL",
            "CAPTURED",
            "DATAHUB",
            "CONNECTOR",
            "TYPE"
        );
        for c in &report.connectors {
            let state = match c.state {
                State::Broken => "BROKEN",
                State::Stale => "STALE",
                State::Fresh => "fresh",
            };
            let drill = match &c.last_drill {
                Some(d) if d.ok => "ok",
                Some(_) => "FAILED",
                None => "-",
            };
            outln!(
                "{:<6}  {}{:>8}  {:>9}  {:>4}  {:<6}  {:>8}  {:<36}  {:<36}  {:<16}  {}",
                state,
                org_col(c.org.as_str()),
                c.age_seconds
                    .map(|s| fmt_age(Duration::from_secs_f64(s)))
                    .unwrap_or_else(|| "-".into()),
                c.size
                    .map(output::human_bytes)
                    .unwrap_or_else(|| "-".into()),
                c.versions,
                drill,
                c.capture_lag_seconds
                    .map(|s| format!("{} ago", fmt_age(Duration::from_secs_f64(s))))
                    .unwrap_or_else(|| "-".into()),
                c.datahub.to_string(),
                c.connector.to_string(),
                c.source_type.as_deref().unwrap_or("-"),
                c.name.as_deref().unwrap_or("-"),
            );
            for p in &c.problems {
                outln!("        {p}");
            }
        }
        let s = &report.summary;
        outln!(
            "{} backups in {}: {} fresh, {} stale, {} broken, {} never verified (stale: {} or older; CAPTURED: newest commit from continuous capture, within a minute)",
            s.total,
            report.scope,
            s.fresh,
            s.stale,
            s.broken,
            s.never_verified,
            fmt_age(a.max_age)
        );
    }
    Ok(if report.needs_attention() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
