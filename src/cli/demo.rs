//! `hubvault demo`: the whole story on the embedded default (a local-directory bucket).

use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::backup::{self, BackupOptions, Decision};
use hubvault::bucket::Bucket;
use hubvault::fixture::{self, CONNECTOR_TYPES, Spec};
use hubvault::ids::{DatahubId, OrgSlug};
use hubvault::progress::NoProgress;
use hubvault::{Error, Result};
use serde::Serialize;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to build the demo hub and bucket (must be empty or absent; default: a new
    /// directory under TMPDIR, kept so you can look at it).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Events per connector.
    #[arg(long, default_value_t = 3000)]
    events: usize,
}

#[derive(Serialize)]
struct ConnectorRun {
    source_type: String,
    name: String,
    connector: String,
    key: String,
    first_run: Decision,
    second_run: Decision,
    bytes: u64,
}

#[derive(Serialize)]
struct DemoReport {
    dir: String,
    hub_root: String,
    bucket: String,
    org: String,
    datahub: String,
    connectors: Vec<ConnectorRun>,
    ok: bool,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let dir = match a.dir {
        Some(d) => prepare_dir(d)?,
        None => tempfile::Builder::new()
            .prefix("hubvault-demo-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), "cannot create the demo directory", e))?
            .keep(),
    };
    let hub_root = dir.join("hub");
    let bucket_dir = dir.join("bucket");
    for d in [&hub_root, &bucket_dir] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, "cannot create", e))?;
    }
    let bucket_url = format!("file://{}", bucket_dir.display());
    let bucket = Bucket::open(&bucket_url)?;
    let org = OrgSlug::parse("demo-lab")?;
    let datahub = DatahubId::random();
    let say = |s: String| {
        if !g.json {
            println!("{s}");
        }
    };

    say(format!(
        "hub root {}  (datahub {datahub})",
        hub_root.display()
    ));
    say(format!("bucket   {bucket_url}\n"));
    let mut specs = Vec::new();
    for (t, name) in CONNECTOR_TYPES {
        let mut spec = Spec::new(t, name, a.events);
        spec.datahub = datahub;
        let conn_dir = hub_root.join(spec.connector.to_string());
        std::fs::create_dir_all(&conn_dir).map_err(|e| Error::io(&conn_dir, "cannot create", e))?;
        fixture::create(&conn_dir.join("sqlite.db"), &spec)?;
        say(format!(
            "created  {t:<15} {} ({} events)",
            spec.connector, a.events
        ));
        specs.push(spec);
    }

    say("\nfirst run: no backups yet, so every connector uploads".into());
    let mut runs = Vec::new();
    for spec in &specs {
        let opts = BackupOptions::new(
            hub_root.join(spec.connector.to_string()).join("sqlite.db"),
            org.clone(),
        );
        let r = backup::run(&bucket, &opts, &NoProgress).await?;
        say(format!(
            "  {:<9} {}",
            format!("{:?}", r.decision).to_lowercase(),
            r.key
        ));
        runs.push(ConnectorRun {
            source_type: spec.source_type.clone(),
            name: spec.name.clone(),
            connector: spec.connector.to_string(),
            key: r.key.clone(),
            first_run: r.decision,
            second_run: Decision::Uploaded,
            bytes: r.bytes.unwrap_or(0),
        });
    }

    say("\nsecond run: every backup is younger than 24h, so each is one HEAD and a skip".into());
    for (spec, run) in specs.iter().zip(runs.iter_mut()) {
        let opts = BackupOptions::new(
            hub_root.join(spec.connector.to_string()).join("sqlite.db"),
            org.clone(),
        );
        let r = backup::run(&bucket, &opts, &NoProgress).await?;
        say(format!("  {:<9} {} ({})", "skipped", r.key, r.reason));
        run.second_run = r.decision;
    }
    let ok = runs
        .iter()
        .all(|r| r.first_run == Decision::Uploaded && r.second_run == Decision::Skipped);
    say(format!(
        "\n{}",
        if ok {
            "demo ok"
        } else {
            "demo FAILED: see above"
        }
    ));
    if g.json {
        super::output::print_json(&DemoReport {
            dir: dir.display().to_string(),
            hub_root: hub_root.display().to_string(),
            bucket: bucket_url,
            org: org.to_string(),
            datahub: datahub.to_string(),
            connectors: runs,
            ok,
        });
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A demo directory must be new or empty: the demo never deletes anything of yours.
fn prepare_dir(dir: PathBuf) -> Result<PathBuf> {
    match std::fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::usage(
                    format!("--dir {} is not empty", dir.display()),
                    "pass a new or empty directory, or leave out --dir to use a fresh one under TMPDIR",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(&dir, "cannot create the demo directory", e))?;
        }
        Err(e) => return Err(Error::io(&dir, "cannot use the demo directory", e)),
    }
    std::path::absolute(&dir).map_err(|e| Error::io(&dir, "cannot resolve", e))
}
