use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::db::{self, Inspection};
use hubvault::ids::{ConnectorId, DatahubId, DbFileName};
use hubvault::restore::{self, RestoreRequest, Target};
use hubvault::rewrite::Ids;
use hubvault::{Error, Result};

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A local database file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["datahub", "connector"])]
    db: Option<PathBuf>,
    /// With --connector (and --bucket, --org): inspect this connector's backup instead.
    #[arg(long, value_name = "ID", requires = "connector")]
    datahub: Option<String>,
    #[arg(long, value_name = "ID", requires = "datahub")]
    connector: Option<String>,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let (report, verified_by) = match (&a.db, &a.datahub, &a.connector) {
        (Some(db), _, _) => (db::inspect(db)?, None),
        (None, Some(d), Some(c)) => {
            let ids = Ids {
                datahub: DatahubId::parse(d)?,
                connector: ConnectorId::parse(c)?,
            };
            inspect_backup(ids, g).await?
        }
        _ => {
            return Err(Error::usage(
                "nothing to inspect",
                "pass --db FILE for a local database, or --datahub ID --connector ID (with --bucket and --org) for a backup",
            ));
        }
    };
    if g.json {
        let mut v = serde_json::to_value(&report).expect("reports serialize");
        v["verified_by"] = verified_by.clone().into();
        output::print_json(&v);
    } else {
        print_human(&report);
        if let Some(by) = verified_by {
            println!("  verified   sha256 against {by}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Downloads the latest backup into a temp directory, checks it as `restore` does
/// (sha256 against the manifests), and inspects the copy.
async fn inspect_backup(ids: Ids, g: &Global) -> Result<(Inspection, Option<String>)> {
    let bucket = g.bucket()?;
    let tmp = tempfile::Builder::new()
        .prefix("hubvault-inspect-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), "cannot create a temp directory", e))?;
    let req = RestoreRequest {
        org: g.org()?,
        from: ids,
        to: ids,
        source: restore::Source::Latest,
        target: Target::Output(tmp.path().join("sqlite.db")),
        force: false,
        db_file: DbFileName::default(),
    };
    let plan = restore::plan(&bucket, &req).await?;
    let fetched = restore::fetch(
        &bucket,
        &plan,
        tmp.path(),
        "backup-",
        &output::Bar::new(g.json),
    )
    .await?;
    let mut report = db::inspect(&fetched.file)?;
    report.path = format!("{}/{}", plan.bucket.trim_end_matches('/'), plan.key);
    Ok((report, Some(fetched.verified_by)))
}

pub fn print_human(r: &Inspection) {
    println!("{}", r.path);
    println!("  datahub    {}", r.datahub);
    println!("  connector  {}", r.connector);
    println!("  source     {} ({})", r.name, r.source_type);
    println!(
        "  file       {} ({} pages of {} bytes, journal {})",
        output::human_bytes(r.size),
        r.page_count,
        r.page_size,
        r.journal_mode
    );
    println!("  tables");
    for (t, n) in &r.tables {
        println!("    {t:<24} {n:>10} rows");
    }
    println!(
        "  schema: {} statements (--json shows them)",
        r.schema.len()
    );
}
