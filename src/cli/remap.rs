//! `hubvault remap`: steps 5 to 10 of the platform's manual restore, on a local file.

use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::Result;
use hubvault::model::ids::{ConnectorId, DatahubId, Ids};
use hubvault::ops::remap::{self, RemapReport};

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The database to rewrite (in place, unless --output is given).
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// The new datahub id (the new hub's id in the platform).
    #[arg(long, value_name = "ID")]
    to_datahub: String,
    /// The new connector id (the new connector's id in the platform).
    #[arg(long, value_name = "ID")]
    to_connector: String,
    /// Write the rewritten database to this new file; --db is left as it is.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print what would change (per table and column) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rewrite everything else even where old ids cannot be rewritten (mixed case, raw
    /// bytes in a BLOB, a contentless full-text index): they stay, listed in the output.
    /// Without it such a database is refused and nothing is written.
    #[arg(long)]
    accept_unrewritten: bool,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let to = Ids {
        datahub: DatahubId::parse(&a.to_datahub).map_err(|e| super::flag(e, "--to-datahub"))?,
        connector: ConnectorId::parse(&a.to_connector)
            .map_err(|e| super::flag(e, "--to-connector"))?,
    };
    let report = tokio::task::spawn_blocking(move || {
        remap::remap_file(
            &a.db,
            to,
            a.output.as_deref(),
            a.dry_run,
            a.accept_unrewritten,
        )
    })
    .await
    .expect("the remap task does not panic")?;
    if g.json {
        output::print_json(&report);
    } else {
        print_human(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_human(r: &RemapReport) {
    let p = &r.plan;
    let verb = if r.dry_run {
        "would rewrite"
    } else {
        "rewrote"
    };
    outln!("{}", r.db.display());
    outln!("  datahub    {} -> {}", p.from.datahub, p.to.datahub);
    outln!("  connector  {} -> {}", p.from.connector, p.to.connector);
    if p.is_noop() {
        outln!("  nothing to rewrite: the database already has these ids");
    } else {
        outln!("  {verb} {} values:", r.total_values);
        print_plan(p);
    }
    for b in &p.blockers {
        outln!("  cannot rewrite: {b}");
    }
    print_unrewritten(p, r.dry_run);
    match (&r.output, r.dry_run) {
        (Some(o), true) => outln!("  would write {} (--db unchanged)", o.display()),
        (Some(o), false) => outln!("  wrote {} (--db unchanged)", o.display()),
        (None, true) => outln!("  dry run: nothing changed"),
        (None, false) => {}
    }
    if !r.dry_run {
        outln!(
            "  checked: {}, foreign_key_check empty, integrity ok ({:.2}s)",
            if p.no_old_id_left() {
                "no old id left"
            } else {
                "OLD IDS LEFT (listed above)"
            },
            r.seconds
        );
    }
}

/// The old ids a rewrite leaves (or would leave), loudly; shared with `restore`.
pub fn print_unrewritten(p: &hubvault::sqlite::rewrite::RewritePlan, dry_run: bool) {
    if p.unrewritten.is_empty() {
        return;
    }
    let head = match (dry_run, p.accepted_unrewritten) {
        (true, _) => {
            "WARNING: these old ids cannot be rewritten (the rewrite refuses unless --accept-unrewritten):"
        }
        (false, true) => {
            "WARNING: these old ids were NOT rewritten (--accept-unrewritten): the database still holds them:"
        }
        (false, false) => "WARNING: these old ids cannot be rewritten:",
    };
    outln!("  {head}");
    for u in &p.unrewritten {
        outln!("    {u}");
    }
}

/// The per-table, per-column plan, shared with `restore`.
pub fn print_plan(p: &hubvault::sqlite::rewrite::RewritePlan) {
    for c in &p.changes {
        outln!(
            "    {:<40} {:>10} values",
            format!("{}.{}", c.table, c.column),
            c.values
        );
    }
    for o in &p.schema_objects {
        outln!("    {o:<40} SQL rewritten");
    }
    for t in &p.fts_rebuilt {
        outln!("    {t:<40} full-text index rebuilt");
    }
}
