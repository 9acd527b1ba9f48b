use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::model::ids::{ConnectorId, DatahubId, Ids};
use hubvault::ops::inspect::{self, Inspection};
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
        (Some(db), _, _) => {
            let db = db.clone();
            let report = tokio::task::spawn_blocking(move || inspect::inspect(&db))
                .await
                .map_err(hubvault::blocking::join_error)??;
            (report, None)
        }
        (None, Some(d), Some(c)) => {
            let ids = Ids {
                datahub: DatahubId::parse(d)?,
                connector: ConnectorId::parse(c)?,
            };
            let (report, by) =
                inspect::inspect_backup(&g.bucket()?, g.org()?, ids, &output::Bar::new(g.json))
                    .await?;
            (report, Some(by))
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
            outln!("  verified   sha256 against {by}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_human(r: &Inspection) {
    outln!("{}", r.path);
    outln!("  datahub    {}", r.datahub);
    outln!("  connector  {}", r.connector);
    outln!("  source     {} ({})", r.name, r.source_type);
    outln!(
        "  file       {} ({} pages of {} bytes, journal {})",
        output::human_bytes(r.size),
        r.page_count,
        r.page_size,
        r.journal_mode
    );
    outln!("  tables");
    for (t, n) in &r.tables {
        outln!("    {t:<24} {n:>10} rows");
    }
    outln!(
        "  schema: {} statements (--json shows them)",
        r.schema.len()
    );
}
