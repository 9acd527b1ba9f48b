//! `hubvault doctor`: resolves the configuration as the agent would (flags, environment,
//! config file), then runs the library's checks (`ops::doctor`) and prints each one.

use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::Result;
use hubvault::agent::config::{self, Layer};
use hubvault::model::ids::OrgSlug;
use hubvault::ops::doctor::{self, Check, CheckState, DoctorReport};
use hubvault::store::bucket::Bucket;
use hubvault::store::url::{BucketUrl, parse_bucket_url};

use super::{Global, output};

/// The agent's unit, as dist/ and the package install it.
const UNIT: &str = "hubvault-agent";
/// The agent's environment file, as dist/ and the package install it.
const AGENT_ENV: &str = "/etc/hubvault/agent.env";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The directory holding one <connectorId>/sqlite.db per connector (production:
    /// /var/datahub); default: hub_root of the config file. Without one, the connector
    /// checks are skipped.
    #[arg(long, env = "HUBVAULT_HUB_ROOT", value_name = "DIR")]
    hub_root: Option<PathBuf>,
    /// Where snapshots are written before upload (default: tmp_dir of the config file,
    /// else TMPDIR).
    #[arg(long, env = "HUBVAULT_TMP_DIR", value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// TOML config file (default /etc/hubvault/hubvault.toml, if present).
    #[arg(long, env = "HUBVAULT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Where a setting came from: the flag, its variable, or the config file.
fn source(flag: &str, var: &str, given: Option<&str>, file: &std::path::Path) -> String {
    match given {
        Some(v) if std::env::var(var).ok().as_deref() == Some(v) => var.to_string(),
        Some(_) => flag.to_string(),
        None => file.display().to_string(),
    }
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    let mut checks = Vec::new();

    // Configuration: flags over environment over the file, as the agent resolves it.
    let (path, explicit) = match &a.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG_PATH), false),
    };
    let file = match config::load_file(&path, explicit) {
        Ok(f) => f,
        Err(e) => {
            checks.push(Check::failed("configuration", &e));
            Layer::default()
        }
    };
    let file_note = if path.exists() {
        format!("config file {}", path.display())
    } else {
        format!("no config file at {}", path.display())
    };
    let bucket_url = g.bucket.clone().or(file.bucket.clone());
    let org_text = g.org.clone().or(file.org.clone());
    let mut config_ok = true;
    let mut parts = Vec::new();
    match &bucket_url {
        Some(u) => parts.push(format!(
            "bucket {} (from {})",
            hubvault::store::url::redact_url(u),
            source("--bucket", "HUBVAULT_BUCKET", g.bucket.as_deref(), &path)
        )),
        None => {
            config_ok = false;
            let mut c = Check::problem(
                "configuration",
                format!("no bucket given ({file_note})"),
                format!(
                    "pass --bucket s3://bucket-name or file:///abs/dir, set HUBVAULT_BUCKET, or write bucket = \"...\" in {}",
                    path.display()
                ),
            );
            c.usage = true;
            checks.push(c);
        }
    }
    let org = match org_text.as_deref().map(OrgSlug::parse) {
        Some(Ok(o)) => {
            parts.push(format!(
                "org {o} (from {})",
                source("--org", "HUBVAULT_ORG", g.org.as_deref(), &path)
            ));
            Some(o)
        }
        Some(Err(e)) => {
            config_ok = false;
            checks.push(Check::failed("configuration", &e));
            None
        }
        None => {
            config_ok = false;
            let mut c = Check::problem(
                "configuration",
                format!("no org given ({file_note})"),
                format!(
                    "pass --org SLUG, set HUBVAULT_ORG, or write org = \"...\" in {}",
                    path.display()
                ),
            );
            c.usage = true;
            checks.push(c);
            None
        }
    };
    let hub_root = match (&a.hub_root, &file.hub_root) {
        (Some(h), _) => Some(h.clone()),
        (None, Some(h)) => match config::absolute_in_file("hub_root", h, &path) {
            Ok(()) => Some(h.clone()),
            Err(e) => {
                config_ok = false;
                checks.push(Check::failed("configuration", &e));
                None
            }
        },
        (None, None) => None,
    };
    if config_ok {
        parts.push(file_note.clone());
        checks.push(Check::ok("configuration", parts.join("; ")));
    }

    // The bucket: its URL, SSE, credentials, then a real round trip.
    let s3 = g.s3_settings(Some((
        file.sse.as_deref(),
        file.sse_kms_key_id.as_deref(),
        &path,
    )));
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let parsed = bucket_url.as_deref().map(|u| parse_bucket_url(u, &cwd));
    let is_s3 = matches!(parsed, Some(Ok(BucketUrl::S3 { .. })));
    match &s3 {
        Ok(s) => match (&s.sse, is_s3) {
            (Some(sse), _) => checks.push(Check::ok(
                "server-side encryption",
                format!("{sse} asked for on every object written"),
            )),
            (None, true) => checks.push(Check::ok(
                "server-side encryption",
                "none asked for: the bucket's default encryption applies (--sse AES256 or aws:kms to ask)",
            )),
            (None, false) => checks.push(Check::skipped(
                "server-side encryption",
                "local directory: not applicable",
            )),
        },
        Err(e) => checks.push(Check::failed("server-side encryption", e)),
    }
    if let Some(c) = doctor::check_agent_env(std::path::Path::new(AGENT_ENV)) {
        checks.push(c);
    }
    if is_s3 {
        checks.push(doctor::check_credentials(
            |n| std::env::var(n).ok(),
            std::path::Path::new(AGENT_ENV),
        ));
        if let Ok(s) = &s3
            && let Some(ep) = s.endpoint_shown()
        {
            checks.push(Check::ok("endpoint", format!("{ep} (AWS_ENDPOINT_URL)")));
        }
    }
    let bucket = match (&bucket_url, &s3) {
        (Some(u), Ok(s)) => match Bucket::open_with(u, s) {
            Ok(b) => Some(b),
            Err(e) => {
                checks.push(Check::failed("bucket", &e));
                None
            }
        },
        _ => None,
    };
    match (&bucket, &org) {
        (Some(b), Some(o)) => checks.extend(doctor::check_bucket(b, o, !is_s3).await),
        _ => checks.push(Check::skipped(
            "bucket reachable",
            "needs a valid bucket and org",
        )),
    }

    // The hub: its root, every connector database, room for snapshots.
    // As the agent's service will see it: its unit sets HUBVAULT_TMP_DIR (dist/), which
    // this shell does not have.
    let tmp = a.tmp_dir.clone().or(file.tmp_dir.clone());
    let hub_checks = hubvault::blocking::blocking(move || {
        let mut out = Vec::new();
        let mut largest = 0;
        match &hub_root {
            None => out.push(Check::warning(
                "hub root",
                "no hub root given: connector databases not checked",
                "pass --hub-root /var/datahub (or set HUBVAULT_HUB_ROOT, or hub_root in the config file) to check them as the agent will see them",
            )),
            Some(root) => match hubvault::agent::scheduler::discover(root) {
                Ok(found) => {
                    let dbs: Vec<(String, PathBuf)> = found
                        .into_iter()
                        .map(|d| (d.connector.to_string(), d.db))
                        .collect();
                    let (c, l) = doctor::check_hub(root, &dbs);
                    out.extend(c);
                    largest = l;
                }
                Err(e) => out.push(Check::failed("hub root", &e)),
            },
        }
        let systemctl = std::path::Path::new("systemctl");
        let (tmp, from_unit) = match tmp {
            Some(t) => (t, false),
            None => match doctor::unit_environment(systemctl, UNIT, "HUBVAULT_TMP_DIR") {
                Some(t) => (PathBuf::from(t), true),
                None => (std::env::temp_dir(), false),
            },
        };
        let mut c = doctor::check_tmp(&tmp, largest);
        if from_unit {
            c.detail = format!("{} (HUBVAULT_TMP_DIR of the {UNIT} unit)", c.detail);
        }
        out.push(c);
        out.push(doctor::check_unit(UNIT));
        Ok(out)
    })
    .await?;
    checks.extend(hub_checks);

    let report = DoctorReport::new(checks);
    if g.json {
        output::print_json(&report);
    } else {
        print_text(&report);
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn print_text(r: &DoctorReport) {
    let width = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(10);
    for c in &r.checks {
        let word = match c.state {
            CheckState::Ok => "ok",
            CheckState::Skipped => "skipped",
            CheckState::Warning => "warning",
            CheckState::Problem => "PROBLEM",
        };
        outln!("{word:<8} {:<width$}  {}", c.name, c.detail);
        if let Some(h) = &c.hint
            && c.state != CheckState::Ok
        {
            outln!("{:<8} {:<width$}  Try: {h}", "", "");
        }
    }
    if r.ok {
        outln!(
            "\nbackups will work: every check passed ({} warning(s))",
            r.warnings
        );
    } else {
        outln!(
            "\nbackups will NOT work: {} problem(s), {} warning(s); fix the PROBLEM lines and run hubvault doctor again",
            r.problems,
            r.warnings
        );
    }
}
