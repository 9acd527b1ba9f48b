use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::Result;
use hubvault::ops::verify::{self, VerifyOptions};

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    scope: super::ScopeArgs,
    /// Every org in the bucket, whatever --org, HUBVAULT_ORG or the config file say.
    #[arg(long)]
    all_orgs: bool,
    /// Drill N backups picked at random instead of all.
    #[arg(long, value_name = "N")]
    sample: Option<usize>,
    /// Where backups are downloaded for the drill (default: TMPDIR).
    #[arg(long, value_name = "DIR", env = "HUBVAULT_TMP_DIR")]
    tmp_dir: Option<PathBuf>,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let opts = VerifyOptions {
        scope: a
            .scope
            .scope(if a.all_orgs { None } else { g.org_or_none()? })?,
        sample: a.sample,
        tmp_dir: a.tmp_dir,
    };
    if opts.sample == Some(0) {
        return Err(hubvault::Error::usage(
            "--sample 0 drills nothing",
            "pass --sample N with N of at least 1, or leave it out to drill every backup",
        ));
    }
    let bucket = g.bucket()?;
    let report = verify::run(&bucket, &opts).await?;
    if g.json {
        output::print_json(&report);
    } else {
        if report.drills.is_empty() {
            outln!("no connector backups in {}", report.scope);
        }
        for d in &report.drills {
            let r = &d.record;
            outln!(
                "{}: {}{}",
                if r.ok { "ok" } else { "FAILED" },
                r.key,
                r.version
                    .as_ref()
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default()
            );
            for p in &r.problems {
                outln!("  problem: {p}");
            }
            for w in &r.warnings {
                outln!("  warning: {w}");
            }
        }
        for n in &report.not_drilled {
            outln!(
                "NOT DRILLED ({}): {}",
                if n.local { "local failure" } else { "bucket" },
                n.key
            );
            outln!("  {}", n.reason);
            if let Some(h) = &n.hint {
                outln!("  Try: {h}");
            }
        }
        let s = &report.summary;
        outln!(
            "{} drilled of {} in {}: {} ok, {} failed, {} with warnings, {} not drilled (nothing recorded for those)",
            s.drilled,
            s.in_scope,
            report.scope,
            s.ok,
            s.failed,
            s.with_warnings,
            s.not_drilled
        );
    }
    // A broken backup outranks a drill that could not run; either is not a success.
    Ok(if report.any_failed() {
        ExitCode::from(3)
    } else if report.any_not_drilled() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
