//! Command-line wiring: one file per subcommand. Parses flags (clap), sets up logging,
//! runs the library on a tokio runtime, prints human text or one JSON document, and maps
//! errors to exit codes (0 ok, 1 failed, 2 bad command line or configuration, 3 stale or
//! broken backups found).

// Printing never panics: `println!` panics when stdout is a closed pipe (`| head -1`,
// `| true`), which would cut a restore short before its --then hook. A failed write to
// stdout or stderr only ends that output; what the command does and its exit code stay
// the same. Every line the binary prints goes through these.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
#[allow(unused_macros)]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod agent;
mod backup;
mod demo;
mod doctor;
pub mod fixture;
mod generate;
mod inspect;
mod output;
mod prune;
mod remap;
mod restore;
mod restore_hub;
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
    /// S3 server-side encryption of every object written: AES256 (SSE-S3) or aws:kms
    /// (SSE-KMS), as the aws CLI's --sse. For S3 buckets only.
    #[arg(
        long,
        global = true,
        env = "HUBVAULT_SSE",
        value_name = "AES256|aws:kms"
    )]
    pub sse: Option<String>,
    /// The KMS key (id, ARN or alias) for --sse aws:kms; default: the account's S3 key.
    #[arg(
        long,
        global = true,
        env = "HUBVAULT_SSE_KMS_KEY_ID",
        value_name = "KEY"
    )]
    pub sse_kms_key_id: Option<String>,
    /// True if and only if `--bucket` was on the command line (not from HUBVAULT_BUCKET):
    /// the demo writes into a bucket only when asked by name.
    #[arg(skip)]
    pub bucket_from_flag: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The platform's backup rule for one connector ("upload if there is no backup at
    /// the target location, or it is older than 24 hours"): upload when the backup is
    /// missing or older than --max-age, else skip with one HEAD request.
    Backup(backup::Args),
    /// Ids, name, type, row counts and schema of a database (a local file or a backup).
    Inspect(inspect::Args),
    /// The whole story: a hub of four connectors, backups, skips, the hub lost, every
    /// connector restored onto a new hub; on a new local-directory bucket, or on the one
    /// named with --bucket (S3 too), under --org (default demo-lab).
    Demo(demo::Args),
    /// Automatic restore: fetch a backup, verify it, rewrite its ids, install it
    /// atomically at <hub-root>/<connectorId>/sqlite.db, run the --then hook.
    // `--version ID` picks a backup version here (PRODUCT.md), so clap's own
    // `--version` is off for this subcommand.
    #[command(disable_version_flag = true)]
    Restore(restore::Args),
    /// Every connector of a hub restored in one command, at one common instant (the
    /// newest every connector can be restored to, or --at): all downloaded, verified and
    /// rewritten before any is installed; onto a new hub with --map OLD=NEW per connector.
    /// --dry-run lists what to create in the platform first.
    RestoreHub(restore_hub::Args),
    /// Rewrite a local database's datahub and connector ids everywhere (steps 5 to 10
    /// of the platform's manual restore), in one checked transaction.
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
    /// Will backups work here? Checks the configuration, credentials, the bucket (a
    /// write-read-delete round trip), the clock, the hub's databases, temp space and the
    /// agent's service. Exit 0 only when nothing stops backups.
    Doctor(doctor::Args),
    /// Writes the man pages and shell completions (for packaging; see scripts/package-deb).
    #[command(hide = true)]
    GenerateAssets(generate::Args),
    /// The fleet on a web page (and a JSON API under /api/): every connector's backup
    /// age, protection, history, drills and restore command. Read-only; loopback only
    /// unless an access token is configured.
    Serve(serve::Args),
}

impl Global {
    /// The host's config file (HUBVAULT_CONFIG or the default, if there) and its path:
    /// under flags and environment it gives bucket, org and server-side encryption to
    /// every command, as it does to the agent.
    fn host_file(&self) -> Result<(hubvault::agent::config::Layer, std::path::PathBuf)> {
        let (path, explicit) = self.host_file_path();
        let file = hubvault::agent::config::load_file(&path, explicit)?;
        Ok((file, path))
    }

    /// The host's config file's path, and whether it was named (HUBVAULT_CONFIG).
    fn host_file_path(&self) -> (std::path::PathBuf, bool) {
        match std::env::var_os("HUBVAULT_CONFIG") {
            Some(p) if !p.is_empty() => (std::path::PathBuf::from(p), true),
            _ => (
                std::path::PathBuf::from(hubvault::agent::config::DEFAULT_CONFIG_PATH),
                false,
            ),
        }
    }

    pub fn bucket(&self) -> Result<Bucket> {
        let (file, path) =
            if self.bucket.is_some() && (self.sse.is_some() || self.sse_kms_key_id.is_some()) {
                // Nothing of the file would be used (flags win over its SSE as a whole).
                (Default::default(), self.host_file_path().0)
            } else {
                self.host_file()?
            };
        self.bucket_with_file(&file, &path)
    }

    /// As [`Global::bucket`], with a config file already read (its bucket under
    /// `--bucket` and HUBVAULT_BUCKET, its SSE settings under theirs).
    pub fn bucket_with_file(
        &self,
        file: &hubvault::agent::config::Layer,
        path: &std::path::Path,
    ) -> Result<Bucket> {
        let url = self.bucket.as_deref().or(file.bucket.as_deref()).ok_or_else(|| {
            Error::usage(
                "no bucket given",
                format!(
                    "pass --bucket s3://bucket-name or --bucket file:///abs/dir (or set HUBVAULT_BUCKET, or bucket = \"...\" in {})",
                    path.display()
                ),
            )
        })?;
        let s3 = self.s3_settings(Some((
            file.sse.as_deref(),
            file.sse_kms_key_id.as_deref(),
            path,
        )))?;
        Bucket::open_with(url, &s3)
    }

    /// The S3 settings of the environment, with --sse / --sse-kms-key-id laid over them,
    /// and under those the config file's `sse` / `sse_kms_key_id` (`file`: its values
    /// and its path).
    pub fn s3_settings(
        &self,
        file: Option<(Option<&str>, Option<&str>, &std::path::Path)>,
    ) -> Result<hubvault::store::s3::S3Settings> {
        use hubvault::store::s3::{S3Settings, Sse};
        let mut s = S3Settings::from_env()?;
        if self.sse.is_some() || self.sse_kms_key_id.is_some() {
            // Flags (or HUBVAULT_SSE*, which clap reads into them) win over the file.
            s.sse = Sse::parse(self.sse.as_deref(), self.sse_kms_key_id.as_deref(), "--sse")?;
        } else if let Some((mode, key, path)) = file {
            s.sse = Sse::parse(mode, key, &format!("sse (from {})", path.display()))?;
        }
        Ok(s)
    }

    pub fn org(&self) -> Result<OrgSlug> {
        if let Some(o) = &self.org {
            return OrgSlug::parse(o);
        }
        let (file, path) = self.host_file()?;
        self.org_with_file(&file, &path)?.ok_or_else(|| {
            Error::usage(
                "no org given",
                format!(
                    "pass --org SLUG (or set HUBVAULT_ORG, or org = \"...\" in {})",
                    path.display()
                ),
            )
        })
    }

    /// `--org` (or HUBVAULT_ORG), else the config file's org, if any (`status` and
    /// `verify` take the whole bucket without one).
    pub fn org_or_none(&self) -> Result<Option<OrgSlug>> {
        if let Some(o) = &self.org {
            return OrgSlug::parse(o).map(Some);
        }
        let (file, path) = self.host_file()?;
        self.org_with_file(&file, &path)
    }

    /// `--org` (or HUBVAULT_ORG), else the org of `file` (read from `path`).
    pub fn org_with_file(
        &self,
        file: &hubvault::agent::config::Layer,
        path: &std::path::Path,
    ) -> Result<Option<OrgSlug>> {
        match (&self.org, &file.org) {
            (Some(o), _) => OrgSlug::parse(o).map(Some),
            (None, Some(o)) => OrgSlug::parse(o).map(Some).map_err(|e| {
                let hint = e.hint().unwrap_or("write a lowercase slug").to_string();
                Error::usage(format!("org (from {}): {e}", path.display()), hint)
            }),
            (None, None) => Ok(None),
        }
    }
}

pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return output::report_usage_error(e),
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return output::report_usage_error(e),
    };
    let sub = matches.subcommand().map(|(_, m)| m);
    cli.global.bucket_from_flag = [Some(&matches), sub]
        .into_iter()
        .flatten()
        .any(|m| m.value_source("bucket") == Some(clap::parser::ValueSource::CommandLine));
    let mut logging = cli.global.clone();
    if matches!(cli.command, Command::Agent(_) | Command::Serve(_)) {
        // A daemon's log is its record: what it backed up and skipped, not only errors.
        logging.verbose = logging.verbose.max(1);
    }
    output::init_logging(&logging);
    if matches!(cli.command, Command::Agent(_)) {
        // Before the runtime's threads exist: arenas already made would stay.
        if let Some(n) = hubvault::agent::malloc::limit_arenas() {
            tracing::debug!("malloc: at most {n} arenas (MALLOC_ARENA_MAX overrides)");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Configuration from the environment is checked before anything is touched: a
    // malformed value is refused by name, never silently replaced by the default.
    if let Err(e) = hubvault::sqlite::db::full_check_max_bytes() {
        return output::report_error(&e, cli.global.json);
    }
    let g = cli.global.clone();
    let result: Result<ExitCode> = runtime.block_on(async move {
        match cli.command {
            Command::Backup(a) => backup::run(a, &g).await,
            Command::Inspect(a) => inspect::run(a, &g).await,
            Command::Demo(a) => demo::run(a, &g).await,
            Command::Restore(a) => restore::run(a, &g).await,
            Command::RestoreHub(a) => restore_hub::run(a, &g).await,
            Command::Remap(a) => remap::run(a, &g).await,
            Command::Versions(a) => versions::run(a, &g).await,
            Command::Prune(a) => prune::run(a, &g).await,
            Command::Agent(a) => agent::run(a, &g).await,
            Command::Status(a) => status::run(a, &g).await,
            Command::Verify(a) => verify::run(a, &g).await,
            Command::Doctor(a) => doctor::run(a, &g).await,
            Command::GenerateAssets(a) => generate::run(a),
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
