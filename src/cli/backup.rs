use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hubvault::Result;
use hubvault::model::ids::{ConnectorId, DatahubId};
use hubvault::model::layout::ConnectorKey;
use hubvault::ops::backup::{self, BackupOptions, Decision};
use hubvault::ops::prune;

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The connector's database, e.g. /var/datahub/<connectorId>/sqlite.db.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Datahub id; defaults to Integrations.id in the database (a different one is an error).
    #[arg(long, value_name = "ID")]
    datahub: Option<String>,
    /// Connector id; defaults to Integrations.sources[0].id in the database.
    #[arg(long, value_name = "ID")]
    connector: Option<String>,
    /// Upload when the backup at the key is older than this.
    #[arg(long, default_value = "24h", value_parser = super::parse_duration, value_name = "AGE")]
    max_age: Duration,
    /// Upload whatever the age of the backup.
    #[arg(long)]
    force: bool,
    /// Temp files of a backup (default: TMPDIR): the compressed version before its upload,
    /// and the copy of a rollback-journal database (a WAL database is read in place).
    #[arg(long, value_name = "DIR", env = "HUBVAULT_TMP_DIR")]
    tmp_dir: Option<PathBuf>,
    /// TOML config file whose [retention] applies when no --keep-* flag is given, and
    /// whose sse / sse_kms_key_id apply when no --sse is given (the agent's file; a
    /// missing default file is fine).
    #[arg(long, env = "HUBVAULT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Retention applied to this connector's versions after an upload.
    #[command(flatten, next_help_heading = "Retention (applied after an upload)")]
    keep: super::prune::PolicyArgs,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    // Every flag is checked before anything is touched.
    let datahub = a.datahub.as_deref().map(DatahubId::parse).transpose()?;
    let connector = a.connector.as_deref().map(ConnectorId::parse).transpose()?;
    let (path, explicit) = match &a.config {
        Some(p) => (p.clone(), true),
        None => (
            PathBuf::from(hubvault::agent::config::DEFAULT_CONFIG_PATH),
            false,
        ),
    };
    let file = hubvault::agent::config::load_file(&path, explicit)?;
    let org = g.org_with_file(&file, &path)?.ok_or_else(|| {
        hubvault::Error::usage(
            "no org given",
            format!(
                "pass --org SLUG (or set HUBVAULT_ORG, or org = \"...\" in {})",
                path.display()
            ),
        )
    })?;
    let bucket = g.bucket_with_file(&file, &path)?;
    let mut opts = BackupOptions::new(a.db, org);
    opts.datahub = datahub;
    opts.connector = connector;
    opts.max_age = a.max_age;
    opts.force = a.force;
    opts.tmp_dir = a.tmp_dir;
    let flags = a.keep.policy();
    let retention = if flags.is_empty() {
        file.retention.map(|r| r.policy()).filter(|p| !p.is_empty())
    } else {
        Some(flags)
    };
    let mut report = backup::run(&bucket, &opts, &output::Bar::new(g.json)).await?;
    if let (Decision::Uploaded, Some(policy)) = (report.decision, retention) {
        let ck = ConnectorKey::new(report.org.clone(), report.datahub, report.connector);
        report.pruned = prune::after_upload(&bucket, &ck, &policy).await;
    }
    if g.json {
        output::print_json(&report);
    } else {
        match report.decision {
            Decision::Skipped => outln!("skipped (fresh): {}\n  {}", report.reason, report.key),
            Decision::Uploaded => {
                outln!(
                    "uploaded: {}\n  {} ({}, sha256 {})",
                    report.reason,
                    report.key,
                    output::human_bytes(report.bytes.unwrap_or(0)),
                    report.sha256.as_deref().unwrap_or("")
                );
                let v = report
                    .version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                if report.new_version {
                    outln!(
                        "  new version {v} ({} compressed)",
                        output::human_bytes(report.stored_bytes.unwrap_or(0))
                    );
                } else {
                    outln!("  unchanged since version {v}: no new version, backup refreshed");
                }
                if let Some(n) = report.pruned {
                    outln!("  retention removed {n} old versions");
                }
                outln!("  took {:.2}s", report.seconds);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
