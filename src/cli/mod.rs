//! Command-line wiring: one file per subcommand. Parses flags (clap), sets up logging,
//! runs the library on a tokio runtime, prints human text or one JSON document, and maps
//! errors to exit codes (0 ok, 1 failed, 2 bad command line or configuration, 3 stale or
//! broken backups found).

mod agent;
mod backup;
mod demo;
pub mod fixture;
mod inspect;
mod output;
mod prune;
mod remap;
mod restore;
mod serve;
mod status;
mod verify;
mod versions;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hubvault::model::ids::OrgSlug;
use hubvault::store::bucket::Bucket;
use hubvault::{Error, Result};

#[derive(Parser, Debug)]
#[command(
    name = "hubvault",
    version,
    about = "Backs up and restores the SQLite state of data-hub connectors"
)]
#[command(propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The backup bucket: s3://bucket[/prefix] or file:///abs/dir.
    #[arg(long, global = true, env = "HUBVAULT_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// The organisation slug, first part of every key.
    #[arg(long, global = true, env = "HUBVAULT_ORG", value_name = "SLUG")]
    pub org: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HUBVAULT_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The seed's rule for one connector: upload when the backup is missing or older
    /// than --max-age, else skip with one HEAD request.
    Backup(backup::Args),
    /// Ids, name, type, row counts and schema of a database (a local file or a backup).
    Inspect(inspect::Args),
    /// The whole story on a local-directory bucket: four connectors, backups, skips.
    Demo(demo::Args),
    /// Automatic restore: fetch a backup, verify it, rewrite its ids, install it
    /// atomically at <hub-root>/<connectorId>/sqlite.db, run the --then hook.
    // `--version ID` picks a backup version here (PRODUCT.md), so clap's own
    // `--version` is off for this subcommand.
    #[command(disable_version_flag = true)]
    Restore(restore::Args),
    /// Rewrite a local database's datahub and connector ids everywhere (the seed's
    /// manual steps 5 to 10), in one checked transaction.
    Remap(remap::Args),
    /// The kept history of one connector's backups, newest first.
    Versions(versions::Args),
    /// Remove old versions by a retention policy (restic's --keep-* rules).
    Prune(prune::Args),
    /// Long-running: backs up every connector under the hub root when due, also those
    /// that never restart; serves Prometheus metrics.
    Agent(agent::Args),
    /// Every backup in the bucket (or an org, or a hub): age, size, fresh/stale/broken,
    /// last drill; from one LIST. Exit 3 when any is stale or broken.
    Status(status::Args),
    /// Restore drill: download each backup, check sha256, integrity, ids and tables,
    /// record the result beside it. Exit 3 when any fails.
    Verify(verify::Args),
    /// The fleet on a web page (and a JSON API under /api/): every connector's backup
    /// age, protection, history, drills and restore command. Read-only; loopback only
    /// unless an access token is configured.
    Serve(serve::Args),
}

impl Global {
    pub fn bucket(&self) -> Result<Bucket> {
        let url = self.bucket.as_deref().ok_or_else(|| {
            Error::usage(
                "no bucket given",
                "pass --bucket s3://bucket-name or --bucket file:///abs/dir (or set HUBVAULT_BUCKET)",
            )
        })?;
        Bucket::open(url)
    }

    pub fn org(&self) -> Result<OrgSlug> {
        let org = self
            .org
            .as_deref()
            .ok_or_else(|| Error::usage("no org given", "pass --org SLUG (or set HUBVAULT_ORG)"))?;
        OrgSlug::parse(org)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut logging = cli.global.clone();
    if matches!(cli.command, Command::Agent(_) | Command::Serve(_)) {
        // A daemon's log is its record: what it backed up and skipped, not only errors.
        logging.verbose = logging.verbose.max(1);
    }
    output::init_logging(&logging);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let g = cli.global.clone();
    let result: Result<ExitCode> = runtime.block_on(async move {
        match cli.command {
            Command::Backup(a) => backup::run(a, &g).await,
            Command::Inspect(a) => inspect::run(a, &g).await,
            Command::Demo(a) => demo::run(a, &g).await,
            Command::Restore(a) => restore::run(a, &g).await,
            Command::Remap(a) => remap::run(a, &g).await,
            Command::Versions(a) => versions::run(a, &g).await,
            Command::Prune(a) => prune::run(a, &g).await,
            Command::Agent(a) => agent::run(a, &g).await,
            Command::Status(a) => status::run(a, &g).await,
            Command::Verify(a) => verify::run(a, &g).await,
            Command::Serve(a) => serve::run(a, &g).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => output::report_error(&e, cli.global.json),
    }
}

/// `--datahub` / `--connector`: narrows a command to one hub or one connector.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ScopeArgs {
    /// Only this data hub's connectors.
    #[arg(long, value_name = "ID")]
    pub datahub: Option<String>,
    /// Only this connector (with --datahub).
    #[arg(long, value_name = "ID")]
    pub connector: Option<String>,
}

impl ScopeArgs {
    /// The scope within `org` (the whole bucket when `None`); ids checked here.
    pub fn scope(&self, org: Option<OrgSlug>) -> Result<hubvault::ops::status::Scope> {
        Ok(hubvault::ops::status::Scope {
            org,
            datahub: self
                .datahub
                .as_deref()
                .map(hubvault::model::ids::DatahubId::parse)
                .transpose()?,
            connector: self
                .connector
                .as_deref()
                .map(hubvault::model::ids::ConnectorId::parse)
                .transpose()?,
        })
    }
}

/// `24h`, `90m`, `1d`: a humantime duration for a flag.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 24h, 90m, 7d)"))
}

/// Names the flag an id came from in its parse error (`--to-connector: connector id …`).
pub fn flag(e: Error, flag: &str) -> Error {
    match e {
        Error::Usage { message, hint } => {
            let hint = hint
                .replace("--datahub ", &format!("{flag} "))
                .replace("--connector ", &format!("{flag} "));
            Error::Usage {
                message: format!("{flag}: {message}"),
                hint,
            }
        }
        other => other,
    }
}
