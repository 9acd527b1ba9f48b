use std::process::ExitCode;
use std::time::Duration;

use hubvault::Result;
use hubvault::model::ids::{DatahubId, OrgSlug};
use hubvault::model::time::fmt_age;
use hubvault::ops::status::{self, Scope, State};

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this data hub's connectors.
    #[arg(long, value_name = "ID")]
    datahub: Option<String>,
    /// A backup at least this old is stale.
    #[arg(long, default_value = "24h", value_parser = super::parse_duration, value_name = "AGE")]
    max_age: Duration,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let scope = Scope {
        org: g.org.as_deref().map(OrgSlug::parse).transpose()?,
        datahub: a.datahub.as_deref().map(DatahubId::parse).transpose()?,
        connector: None,
    };
    let bucket = g.bucket()?;
    let report = status::run(&bucket, &scope, a.max_age, chrono::Utc::now()).await?;
    if g.json {
        output::print_json(&report);
    } else if report.connectors.is_empty() {
        println!("no connector backups in {}", report.scope);
    } else {
        println!(
            "{:<6}  {:>8}  {:>9}  {:>4}  {:<6}  {:>8}  {:<36}  {:<36}  {:<16}  NAME",
            "STATE", "AGE", "SIZE", "VERS", "DRILL", "CAPTURED", "DATAHUB", "CONNECTOR", "TYPE"
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
            println!(
                "{:<6}  {:>8}  {:>9}  {:>4}  {:<6}  {:>8}  {:<36}  {:<36}  {:<16}  {}",
                state,
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
                println!("        {p}");
            }
        }
        let s = &report.summary;
        println!(
            "{} backups in {}: {} fresh, {} stale, {} broken (stale: {} or older; CAPTURED: newest commit from continuous capture, within a minute)",
            s.total,
            report.scope,
            s.fresh,
            s.stale,
            s.broken,
            fmt_age(a.max_age)
        );
    }
    Ok(if report.needs_attention() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
