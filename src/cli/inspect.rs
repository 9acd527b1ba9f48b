use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::Result;
use hubvault::db::{self, Inspection};

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A local database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let report = db::inspect(&a.db)?;
    if g.json {
        output::print_json(&report);
    } else {
        print_human(&report);
    }
    Ok(ExitCode::SUCCESS)
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
