//! `hubvault demo`: the whole story on the embedded default (a local-directory bucket), or
//! on the bucket named with `--bucket` (S3 included), under `--org` (default `demo-lab`).

use std::path::PathBuf;
use std::process::ExitCode;

use super::fixture::{self, CONNECTOR_TYPES, Spec};
use hubvault::model::ids::{ConnectorId, DatahubId, OrgSlug};
use hubvault::model::layout::DbFileName;
use hubvault::ops::backup::{self, BackupOptions, Decision};
use hubvault::ops::restore_hub::{self, HubReport, HubRequest};
use hubvault::progress::NoProgress;
use hubvault::sqlite::rewrite;
use hubvault::store::bucket::Bucket;
use hubvault::{Error, Result};
use serde::Serialize;

use super::Global;

/// The org the demo writes under when no --org (or HUBVAULT_ORG) is given.
const DEMO_ORG: &str = "demo-lab";

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
struct RestoredRun {
    source_type: String,
    old_connector: String,
    new_connector: String,
    path: String,
    events_before: u64,
    events_after: u64,
    /// True if and only if every event is there, byte for byte, with only the ids changed.
    events_survived: bool,
    /// Places where an old id is still found (must be empty).
    old_ids_left: Vec<String>,
}

#[derive(Serialize)]
struct DemoReport {
    dir: String,
    hub_root: String,
    bucket: String,
    org: String,
    datahub: String,
    connectors: Vec<ConnectorRun>,
    new_hub_root: String,
    new_datahub: String,
    restored: Vec<RestoredRun>,
    restore_hub: HubReport,
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
    std::fs::create_dir_all(&hub_root).map_err(|e| Error::io(&hub_root, "cannot create", e))?;
    let say = |s: String| {
        if !g.json {
            outln!("{s}");
        }
    };
    // The demo writes into a bucket only when one is named with --bucket: an operator's
    // HUBVAULT_BUCKET (production) never receives demo data by accident.
    let (bucket, bucket_url) = if g.bucket_from_flag {
        let b = g.bucket()?;
        let url = b.url().to_string();
        (b, url)
    } else {
        if g.bucket.is_some() {
            say("(HUBVAULT_BUCKET is not used by the demo: name a bucket with --bucket to run it there)".into());
        }
        let bucket_dir = dir.join("bucket");
        std::fs::create_dir_all(&bucket_dir)
            .map_err(|e| Error::io(&bucket_dir, "cannot create", e))?;
        let url = format!("file://{}", bucket_dir.display());
        (Bucket::open(&url)?, url)
    };
    let org = OrgSlug::parse(g.org.as_deref().unwrap_or(DEMO_ORG))?;
    let datahub = DatahubId::random();

    say(format!(
        "hub root {}  (datahub {datahub})",
        hub_root.display()
    ));
    say(format!("bucket   {bucket_url}  (org {org})\n"));
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
    let backups_ok = runs
        .iter()
        .all(|r| r.first_run == Decision::Uploaded && r.second_run == Decision::Skipped);

    // The hub is lost. A new hub with a new id gets a new connector for each old one.
    let new_hub_root = dir.join("new-hub");
    std::fs::create_dir_all(&new_hub_root)
        .map_err(|e| Error::io(&new_hub_root, "cannot create", e))?;
    let new_datahub = DatahubId::random();
    let mut expected = Vec::new();
    for spec in &specs {
        let new_connector = ConnectorId::random();
        let map = [
            (spec.datahub.to_string(), new_datahub.to_string()),
            (spec.connector.to_string(), new_connector.to_string()),
        ];
        let db = hub_root.join(spec.connector.to_string()).join("sqlite.db");
        expected.push((new_connector, events_digest(&db, &map)?));
    }
    std::fs::remove_dir_all(&hub_root)
        .map_err(|e| Error::io(&hub_root, "cannot remove (the demo's lost hub)", e))?;
    say(format!(
        "\nthe hub is lost ({} removed); new hub {} (datahub {new_datahub})",
        hub_root.display(),
        new_hub_root.display()
    ));
    // The whole hub comes back in one command: every connector at one common instant,
    // all verified before any is installed.
    let map: Vec<(ConnectorId, ConnectorId)> = specs
        .iter()
        .zip(&expected)
        .map(|(s, (n, _))| (s.connector, *n))
        .collect();
    say(format!(
        "  hubvault restore-hub --datahub {datahub} --to-datahub {new_datahub} --hub-root {} {}",
        new_hub_root.display(),
        map.iter()
            .map(|(o, n)| format!("--map {o}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let req = HubRequest {
        org: org.clone(),
        from: datahub,
        to: new_datahub,
        map,
        exclude: Vec::new(),
        hub_root: new_hub_root.clone(),
        at: None,
        db_file: DbFileName::default(),
        parallel: restore_hub::DEFAULT_PARALLEL,
        accept_unrewritten: false,
    };
    let plan = restore_hub::plan(&bucket, &req).await?;
    if let Some(e) = plan.refusal() {
        return Err(e);
    }
    let hub_report = restore_hub::execute(&bucket, &plan, &NoProgress).await?;
    say(format!(
        "  every connector at {} ({})",
        hub_report.instant.to_rfc3339(),
        hub_report.instant_chosen_by
    ));
    let mut restored = Vec::new();
    for (spec, (new_connector, (events_before, digest))) in specs.iter().zip(expected) {
        let Some(report) = hub_report
            .connectors
            .iter()
            .find(|c| c.old_connector == spec.connector)
        else {
            return Err(Error::check(
                format!("restore-hub did not restore connector {}", spec.connector),
                "report this as a bug",
            ));
        };
        let (events_after, got) = events_digest(&report.target, &[])?;
        let left = {
            let conn = hubvault::sqlite::db::open_read_only(&report.target)?;
            rewrite::scan_ids(
                &conn,
                &report.target,
                &[spec.datahub.to_string(), spec.connector.to_string()],
            )?
        };
        let run = RestoredRun {
            source_type: spec.source_type.clone(),
            old_connector: spec.connector.to_string(),
            new_connector: new_connector.to_string(),
            path: report.target.display().to_string(),
            events_before,
            events_after,
            events_survived: got == digest && events_after == events_before,
            old_ids_left: left.iter().map(|f| f.place.clone()).collect(),
        };
        say(format!(
            "  restored {:<15} {} -> {}: {}/{} events under the new ids{}, {}",
            run.source_type,
            run.old_connector,
            run.new_connector,
            run.events_after,
            run.events_before,
            if run.events_survived {
                " (all identical but for the ids)"
            } else {
                " (DIFFERENT)"
            },
            if run.old_ids_left.is_empty() {
                "no old id left".to_string()
            } else {
                format!("OLD IDS LEFT in {}", run.old_ids_left.join(", "))
            }
        ));
        restored.push(run);
    }
    let ok = backups_ok
        && restored.len() == specs.len()
        && restored
            .iter()
            .all(|r| r.events_survived && r.old_ids_left.is_empty());
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
            new_hub_root: new_hub_root.display().to_string(),
            new_datahub: new_datahub.to_string(),
            restored,
            restore_hub: hub_report,
            ok,
        });
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Number of events and a sha256 over every value of every event (ordered by id), with
/// the given (old, new) strings replaced first: equal digests mean every event survived
/// with only its ids changed.
fn events_digest(db: &std::path::Path, map: &[(String, String)]) -> Result<(u64, String)> {
    use sha2::Digest;
    let conn = hubvault::sqlite::db::open_read_only(db)?;
    let q = |e| Error::sqlite(db, "cannot read Events", e);
    let mut stmt = conn
        .prepare("SELECT * FROM Events ORDER BY id")
        .map_err(q)?;
    let n = stmt.column_count();
    let mut rows = stmt.query([]).map_err(q)?;
    let mut hasher = sha2::Sha256::new();
    let mut count = 0u64;
    while let Some(r) = rows.next().map_err(q)? {
        count += 1;
        for i in 0..n {
            let v: rusqlite::types::Value = r.get(i).map_err(q)?;
            let mut text = format!("{v:?}");
            for (a, b) in map {
                text = text.replace(a.as_str(), b);
            }
            hasher.update(text.as_bytes());
            hasher.update([0u8]);
        }
    }
    Ok((count, hex::encode(hasher.finalize())))
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
