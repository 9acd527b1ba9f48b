use std::process::ExitCode;

use hubvault::Result;
use hubvault::model::ids::{ConnectorId, DatahubId};
use hubvault::model::layout::ConnectorKey;
use hubvault::ops::versions;

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_name = "ID")]
    datahub: String,
    #[arg(long, value_name = "ID")]
    connector: String,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let datahub = DatahubId::parse(&a.datahub)?;
    let connector = ConnectorId::parse(&a.connector)?;
    let org = g.org()?;
    let bucket = g.bucket()?;
    let ck = ConnectorKey::new(org, datahub, connector);
    let rows = versions::describe(&bucket, &ck).await?;
    let window = versions::continuous_window(&bucket, &ck).await?;
    if g.json {
        output::print_json(&serde_json::json!({
            "prefix": ck.prefix().to_string(),
            "versions": rows,
            "continuous": window,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    match &window {
        Some(w) => outln!(
            "continuous: restorable to any instant from {} to {}, every commit ({} objects, {}: {} bases, {} segments, {} minutes, {} marks)",
            w.from.format("%Y-%m-%d %H:%M:%S UTC"),
            w.to.format("%Y-%m-%d %H:%M:%S UTC"),
            w.objects,
            output::human_bytes(w.bytes),
            w.bases,
            w.segments,
            w.minutes,
            w.marks
        ),
        None => outln!("continuous: none captured (hubvault agent captures every commit)"),
    }
    if rows.is_empty() {
        outln!(
            "no versions under {}/\nTry: hubvault status --org {}",
            ck.prefix(),
            ck.org
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{}/  ({} versions, newest first)", ck.prefix(), rows.len());
    outln!(
        "  {:<34} {:>10} {:>10} {:>8}  sha256",
        "version",
        "size",
        "stored",
        "events"
    );
    for r in &rows {
        let opt = |n: Option<u64>| n.map(output::human_bytes).unwrap_or_else(|| "-".into());
        outln!(
            "  {:<34} {:>10} {:>10} {:>8}  {}{}{}{}",
            r.version.to_string(),
            opt(r.size),
            opt(r.stored_size),
            r.events
                .map(|e| e.to_string())
                .unwrap_or_else(|| "-".into()),
            r.sha256.as_deref().map(|s| &s[..16]).unwrap_or("-"),
            if r.current { "  = canonical" } else { "" },
            match &r.last_drill {
                Some(d) if d.ok => format!("  drill ok {}", d.time.format("%Y-%m-%d %H:%M")),
                Some(d) => format!("  DRILL FAILED {}", d.time.format("%Y-%m-%d %H:%M")),
                None => String::new(),
            },
            r.problem
                .as_deref()
                .map(|p| format!("  ! {p}"))
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}
