//! `hubvault doctor`: will backups work on this machine, with this configuration? Each
//! check says ok, warning, problem or skipped, what it saw, and what to try.
//!
//! A *problem* is something that stops backups (no bucket, the bucket refuses a write, a
//! connector database that cannot be read, no room for a snapshot); a *warning* is
//! worth knowing but does not stop them (no hub root given, the agent's unit not
//! running, a clock a minute off). Only problems make the doctor fail.
//!
//! What the checks touch: one delimiter LIST of `{org}/`, then a write-read-delete round
//! trip of one small object at `{org}/hubvault-doctor/{random}` (a key that `status`,
//! `prune` and `verify` never read: it is not under `{org}/datahub/`), removed at once;
//! each connector database is opened read-only (as `inspect` does).
//!
//! Clock skew: the store's clock is read from the round trip's object. The HEAD of the
//! object just written gives its `Last-Modified`, which the store sets from its own clock
//! when the PUT arrives, to the second (S3 truncates to whole seconds). The PUT arrived
//! between `sent` and `answered` by our clock, so an honest store's time lies in
//! `[sent - 1 s, answered]`; the skew is the distance from that window (0 inside it).
//! Up to [`SKEW_WARN`] is fine; past it ages and `--max-age` are off by that much
//! (warning); past [`SKEW_PROBLEM`] S3 refuses signed requests (`RequestTimeTooSkewed`
//! at 15 minutes), a problem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::model::ids::OrgSlug;
use crate::store::{Bucket, WriteMode};

/// Past this the clock skew is shown as a warning.
pub const SKEW_WARN: Duration = Duration::from_secs(60);
/// Past this the clock skew is a problem: S3 refuses requests signed 15 minutes off.
pub use crate::clock::SKEW_PROBLEM;
/// The folder of the round trip's object, under the org.
pub const PROBE_DIR: &str = "hubvault-doctor";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Ok,
    Skipped,
    Warning,
    Problem,
}

/// One check's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// A short name (`bucket reachable`, `connector 6f1c…`).
    pub name: String,
    pub state: CheckState,
    /// What was seen.
    pub detail: String,
    /// What to try (for a warning or a problem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// True if and only if the problem is in the command line or the configuration
    /// (the doctor then exits 2, as every command does for those).
    #[serde(skip)]
    pub usage: bool,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(name, CheckState::Ok, detail, None)
    }
    pub fn skipped(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(name, CheckState::Skipped, detail, None)
    }
    pub fn warning(
        name: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check::new(name, CheckState::Warning, detail, Some(hint.into()))
    }
    pub fn problem(
        name: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check::new(name, CheckState::Problem, detail, Some(hint.into()))
    }
    /// A failed step, from its error: its text, its hint, and exit 2 if it is a usage
    /// error.
    pub fn failed(name: impl Into<String>, e: &Error) -> Check {
        let mut c = Check::problem(name, e.to_string(), e.hint().unwrap_or("see the error"));
        c.usage = e.exit_code() == 2;
        c
    }
    fn new(
        name: impl Into<String>,
        state: CheckState,
        detail: impl Into<String>,
        hint: Option<String>,
    ) -> Check {
        Check {
            name: name.into(),
            state,
            detail: detail.into(),
            hint,
            usage: false,
        }
    }
}

/// Every check, in the order run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DoctorReport {
    /// True if and only if no check found a problem.
    pub ok: bool,
    pub problems: usize,
    pub warnings: usize,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    pub fn new(checks: Vec<Check>) -> DoctorReport {
        let problems = checks
            .iter()
            .filter(|c| c.state == CheckState::Problem)
            .count();
        let warnings = checks
            .iter()
            .filter(|c| c.state == CheckState::Warning)
            .count();
        DoctorReport {
            ok: problems == 0,
            problems,
            warnings,
            checks,
        }
    }

    /// 0 when nothing stops backups; 2 when a problem is in the command line or the
    /// configuration; 1 for any other problem.
    pub fn exit_code(&self) -> u8 {
        if self.ok {
            0
        } else if self
            .checks
            .iter()
            .any(|c| c.state == CheckState::Problem && c.usage)
        {
            2
        } else {
            1
        }
    }
}

/// Where S3 credentials will come from, from the environment's names alone (never a
/// value but the access key id's last four characters). `var` reads a variable.
pub fn check_credentials(var: impl Fn(&str) -> Option<String>, agent_env: &Path) -> Check {
    let name = "credentials";
    let set = |n: &str| var(n).filter(|v| !v.is_empty());
    match (set("AWS_ACCESS_KEY_ID"), set("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(_)) => {
            let tail: String = id
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let detail = format!("AWS_ACCESS_KEY_ID (…{tail}) and AWS_SECRET_ACCESS_KEY");
            if set("AWS_SESSION_TOKEN").is_some() {
                // Temporary keys: the round trip below works today, the agent's service
                // fails every backup once they expire (an hour to a day or so).
                return Check::warning(
                    name,
                    format!("{detail} and AWS_SESSION_TOKEN: temporary credentials"),
                    "keys with a session token expire (in hours), and the agent does not renew them: give its service long-lived keys (without AWS_SESSION_TOKEN), an instance role or web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)",
                );
            }
            return Check::ok(name, detail);
        }
        (Some(_), None) | (None, Some(_)) => {
            return Check::problem(
                name,
                "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set",
                "set both, or neither (to use the instance role)",
            );
        }
        (None, None) => {}
    }
    if set("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() && set("AWS_ROLE_ARN").is_some() {
        return Check::ok(
            name,
            "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)",
        );
    }
    if set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    {
        return Check::ok(name, "container credentials (AWS_CONTAINER_CREDENTIALS_*)");
    }
    let mut hint = String::from(
        "on EC2 with an instance role this is right (the round trip below tells); elsewhere export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
    if let Some(p) = set("AWS_PROFILE") {
        hint = format!(
            "AWS_PROFILE={p} is set, but hubvault does not read ~/.aws profiles: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or use the instance role)"
        );
    } else if agent_env.exists() {
        hint = format!(
            "the agent's service reads its credentials from {0}; to check with them: set -a; . {0}; set +a; hubvault doctor",
            agent_env.display()
        );
    }
    Check::warning(
        name,
        "none in the environment: the instance role (EC2 metadata) will be asked",
        hint,
    )
}

/// The agent's environment file (`agent_env`), when it holds a secret that users other
/// than its owner may read: a warning (it does not stop backups). None otherwise.
pub fn check_agent_env(agent_env: &Path) -> Option<Check> {
    use std::os::unix::fs::PermissionsExt;
    const SECRETS: [&str; 3] = [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
    ];
    let mode = std::fs::metadata(agent_env).ok()?.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return None;
    }
    let text = std::fs::read_to_string(agent_env).ok()?;
    let key = text.lines().find_map(|l| {
        let l = l.trim();
        let l = l.strip_prefix("export ").unwrap_or(l);
        let (k, v) = l.split_once('=')?;
        (!l.starts_with('#') && !v.trim().is_empty())
            .then(|| SECRETS.iter().copied().find(|s| *s == k.trim()))
            .flatten()
    })?;
    Some(Check::warning(
        "agent environment",
        format!(
            "{} holds {key} and is mode {mode:o}: users other than its owner may read it",
            agent_env.display()
        ),
        format!("chmod 600 {}", agent_env.display()),
    ))
}

/// What the round trip found, for the caller to show./// What the round trip found, for the caller to show.
struct Probe {
    sent: chrono::DateTime<chrono::Utc>,
    answered: chrono::DateTime<chrono::Utc>,
    last_modified: chrono::DateTime<chrono::Utc>,
}

/// The bucket's checks: reachable (one delimiter LIST of `{org}/`), a write-read-delete
/// round trip under `{org}/hubvault-doctor/`, and the clock skew against the store.
/// `local` is true if and only if the bucket is a local directory (its clock is ours).
pub async fn check_bucket(bucket: &Bucket, org: &OrgSlug, local: bool) -> Vec<Check> {
    let mut out = Vec::new();
    let org_prefix = object_store::path::Path::from(org.as_str());
    match bucket.list_prefixes(&org_prefix).await {
        Ok(names) => {
            let hubs = if names.iter().any(|n| n == "datahub") {
                match bucket
                    .list_prefixes(&object_store::path::Path::from_iter([
                        org.as_str(),
                        "datahub",
                    ]))
                    .await
                {
                    Ok(h) => format!("{} data hub(s) with backups under {org}/datahub/", h.len()),
                    Err(_) => format!("{org}/datahub/ is there"),
                }
            } else {
                format!("no backups under {org}/ yet")
            };
            out.push(Check::ok(
                "bucket reachable",
                format!("{}: listed {org}/: {hubs}", bucket.url()),
            ));
        }
        Err(e) => {
            out.push(Check::failed("bucket reachable", &e));
            out.push(Check::skipped(
                "write-read-delete",
                "the bucket could not be listed",
            ));
            out.push(Check::skipped(
                "clock skew",
                "the bucket could not be listed",
            ));
            return out;
        }
    }
    let key = object_store::path::Path::from_iter([
        org.as_str(),
        PROBE_DIR,
        &format!("{}.txt", uuid::Uuid::new_v4()),
    ]);
    let shown = bucket.shown(&key);
    match round_trip(bucket, &key).await {
        Ok(p) => {
            out.push(Check::ok(
                "write-read-delete",
                format!("wrote, read back and deleted {shown}"),
            ));
            out.push(skew_check(&p, local));
        }
        Err((step, e)) => {
            // Whatever failed, the probe must not stay behind (a failed delete says so).
            if step != "delete" {
                let _ = bucket.delete(&key).await;
            }
            let mut c = Check::failed("write-read-delete", &e);
            c.detail = format!("{step} of {shown} failed: {}", c.detail);
            out.push(c);
            out.push(Check::skipped("clock skew", "needs the round trip"));
        }
    }
    if local {
        out.push(staging_check(bucket, org, &org_prefix).await);
    }
    out
}

/// A local-directory bucket: the staging files killed uploads left under `{org}/`, which
/// no listing shows and which `prune` (or the agent, connector by connector, after its
/// next backup) removes once a day old.
async fn staging_check(bucket: &Bucket, org: &OrgSlug, prefix: &object_store::path::Path) -> Check {
    const NAME: &str = "staging files";
    match bucket.staging_left(prefix, Bucket::STAGING_GRACE).await {
        Ok(files) if files.is_empty() => Check::ok(
            NAME,
            format!("none left by killed uploads under {org}/ (a day old or more)"),
        ),
        Ok(files) => Check::warning(
            NAME,
            format!(
                "{} left by killed uploads under {org}/ ({}), e.g. {}",
                files.len(),
                bytes_text(files.iter().map(|f| f.bytes).sum()),
                files[0].key
            ),
            "they are not backups (no listing shows them) but take disk space: `hubvault prune --keep-within <your window> --dry-run` lists them and the same without --dry-run removes them; the agent removes a connector's own after its next backup",
        ),
        Err(e) => Check::failed(NAME, &e),
    }
}

async fn round_trip(
    bucket: &Bucket,
    key: &object_store::path::Path,
) -> Result<Probe, (&'static str, Error)> {
    let body = format!("hubvault doctor probe {}\n", uuid::Uuid::new_v4());
    let sent = chrono::Utc::now();
    bucket
        .put_bytes(key, body.clone(), WriteMode::Overwrite)
        .await
        .map_err(|e| ("write", e))?;
    let answered = chrono::Utc::now();
    let got = bucket.get_bytes(key).await.map_err(|e| ("read", e))?;
    if got.as_ref() != body.as_bytes() {
        return Err((
            "read",
            Error::check(
                format!(
                    "{}: read back {} bytes that differ from the {} written",
                    bucket.shown(key),
                    got.len(),
                    body.len()
                ),
                "the store does not give back what was written: check the endpoint (AWS_ENDPOINT_URL) and any proxy in between",
            ),
        ));
    }
    let head = bucket.head(key).await.map_err(|e| ("read", e))?;
    let Some(head) = head else {
        return Err((
            "read",
            Error::check(
                format!(
                    "{}: HEAD says nothing is there right after the write",
                    bucket.shown(key)
                ),
                "the store is not read-after-write consistent; check the endpoint",
            ),
        ));
    };
    bucket.delete(key).await.map_err(|e| ("delete", e))?;
    if bucket.head(key).await.map_err(|e| ("delete", e))?.is_some() {
        return Err((
            "delete",
            Error::check(
                format!("{}: still there after DELETE", bucket.shown(key)),
                "the credentials may lack s3:DeleteObject (prune needs it); remove the object by hand",
            ),
        ));
    }
    Ok(Probe {
        sent,
        answered,
        last_modified: head.last_modified,
    })
}

/// How far the store's clock is from ours; zero when within the window the write
/// could have happened in (see the module's docs).
pub fn skew(
    sent: chrono::DateTime<chrono::Utc>,
    answered: chrono::DateTime<chrono::Utc>,
    last_modified: chrono::DateTime<chrono::Utc>,
) -> chrono::Duration {
    let earliest = sent - chrono::Duration::seconds(1);
    if last_modified < earliest {
        last_modified - earliest
    } else if last_modified > answered {
        last_modified - answered
    } else {
        chrono::Duration::zero()
    }
}

fn skew_check(p: &Probe, local: bool) -> Check {
    let name = "clock skew";
    if local {
        return Check::ok(name, "local directory: the store's clock is this machine's");
    }
    let d = skew(p.sent, p.answered, p.last_modified);
    let abs = d.abs().to_std().unwrap_or_default();
    let words = if d > chrono::Duration::zero() {
        "ahead of"
    } else {
        "behind"
    };
    let detail = if abs.is_zero() {
        format!(
            "the store's Last-Modified ({}) is within this machine's time of the write (to the second)",
            p.last_modified.format("%H:%M:%S")
        )
    } else {
        format!(
            "the store's clock is {}s {words} this machine's",
            abs.as_secs()
        )
    };
    if abs > SKEW_PROBLEM {
        Check::problem(
            name,
            detail,
            "S3 refuses requests signed more than 15 minutes off: set the time (systemctl enable --now systemd-timesyncd, or chrony)",
        )
    } else if abs > SKEW_WARN {
        Check::warning(
            name,
            detail,
            "backup ages and --max-age are off by that much: keep the clock synchronised (systemd-timesyncd or chrony)",
        )
    } else {
        Check::ok(name, detail)
    }
}

/// What the doctor found in one connector database.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectorSeen {
    pub db: PathBuf,
    pub bytes: u64,
}

/// The hub root's checks: readable, and for each connector database (`dbs`, found by
/// the agent's discovery) its ids, journal mode and owner. Blocking: run it off the
/// runtime. Returns the checks and the largest database's size (for the temp space).
pub fn check_hub(hub_root: &Path, dbs: &[(String, PathBuf)]) -> (Vec<Check>, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut largest = 0u64;
    match std::fs::read_dir(hub_root) {
        Ok(_) => out.push(Check::ok(
            "hub root",
            format!(
                "{} is readable: {} connector database(s)",
                hub_root.display(),
                dbs.len()
            ),
        )),
        Err(e) => {
            out.push(Check::problem(
                "hub root",
                format!("{}: cannot list: {e}", hub_root.display()),
                "pass the directory that holds one <connectorId>/sqlite.db per connector (production: /var/datahub), and run as root or a user that may read it",
            ));
            return (out, 0);
        }
    }
    if dbs.is_empty() {
        out.push(Check::warning(
            "connectors",
            format!("no <connectorId>/sqlite.db under {}", hub_root.display()),
            "check --hub-root (production: /var/datahub); connectors appear there once they ran",
        ));
    }
    for (dir_id, db) in dbs {
        let name = format!("connector {}", &dir_id[..dir_id.len().min(8)]);
        let meta = match std::fs::metadata(db) {
            Ok(m) => m,
            Err(e) => {
                out.push(Check::failed(name, &Error::io(db, "cannot read", e)));
                continue;
            }
        };
        largest = largest.max(meta.len());
        let owner = format!("owner {} ({})", user_name(meta.uid()), meta.uid());
        let seen = crate::sqlite::db::refuse_link(db).and_then(|()| {
            crate::sqlite::db::check_is_sqlite(db)?;
            let conn = crate::sqlite::db::open_live(db)?;
            let info = crate::sqlite::db::read_info(&conn, db)?;
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .map_err(|e| Error::sqlite(db, "cannot read the journal mode", e))?;
            Ok((info, mode))
        });
        // Opening a WAL database can create its -wal/-shm: SQLite itself gives files it
        // creates as root to the database's owner (fchown in os_unix.c), so a root-run
        // doctor never locks a connector out.
        match seen {
            Err(e) => out.push(Check::failed(name, &e)),
            Ok((info, mode)) => {
                let detail = format!(
                    "{}: datahub {}, connector {}, {} \"{}\", journal {mode}, {}, {owner}",
                    db.display(),
                    info.datahub,
                    info.connector,
                    info.source_type,
                    info.name,
                    bytes_text(meta.len()),
                );
                if info.connector.to_string() != *dir_id {
                    out.push(Check::problem(
                        name,
                        detail,
                        format!(
                            "the database says connector {} but its directory is {dir_id}: the agent refuses it (a copy of another connector?); restore the right database there",
                            info.connector
                        ),
                    ));
                } else if let Err(e) = dir_writable(crate::sqlite::fsio::parent_dir(db)) {
                    // Root cannot write a read-only mount either: say which it is.
                    let hint = if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
                        "the connector's directory is on a file system mounted read-only (the backup's lock file goes there): remount it read-write"
                    } else {
                        "this user cannot write the connector's directory (the backup's lock file goes there): run as root, as the agent does"
                    };
                    out.push(Check::problem(name, detail, hint));
                } else {
                    out.push(Check::ok(name, detail));
                }
            }
        }
    }
    (out, largest)
}

/// Room for a snapshot of the largest database in `tmp` (where snapshots are written
/// before upload). Blocking.
pub fn check_tmp(tmp: &Path, largest: u64) -> Check {
    let name = "space for temp files";
    if let Err(e) = tempfile::tempfile_in(tmp) {
        return Check::failed(name, &Error::io(tmp, "cannot create a temp file", e));
    }
    match free_bytes(tmp) {
        None => Check::warning(
            name,
            format!("{}: free space unknown", tmp.display()),
            "check that it has room for the largest database",
        ),
        Some(free) if free < largest => Check::problem(
            name,
            format!(
                "{}: {} free, the largest database is {}",
                tmp.display(),
                bytes_text(free),
                bytes_text(largest)
            ),
            "free space there, or point --tmp-dir (HUBVAULT_TMP_DIR, tmp_dir in the config file) at a larger file system",
        ),
        Some(free) => Check::ok(
            name,
            format!(
                "{}: writable, {} free (largest database {})",
                tmp.display(),
                bytes_text(free),
                bytes_text(largest)
            ),
        ),
    }
}

/// The agent's systemd unit, when systemd runs here. Blocking (runs `systemctl`).
pub fn check_unit(unit: &str) -> Check {
    check_unit_with(Path::new("systemctl"), unit)
}

/// [`check_unit`] with the `systemctl` program at `systemctl` (tests).
pub fn check_unit_with(systemctl: &Path, unit: &str) -> Check {
    let name = "agent service";
    let out = match std::process::Command::new(systemctl)
        .args(["is-active", unit])
        .output()
    {
        Ok(o) => o,
        Err(_) => return Check::skipped(name, "no systemctl on this machine"),
    };
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Between the restarts of an agent that keeps exiting (Restart=on-failure), the unit
    // is "activating" too, in the sub-state auto-restart: not running at all.
    let sub_state = || {
        std::process::Command::new(systemctl)
            .args(["show", "-p", "SubState", "--value", unit])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    match state.as_str() {
        "activating" if sub_state() == "auto-restart" => Check::problem(
            name,
            format!(
                "{unit} keeps failing: systemd is waiting to restart it (activating, auto-restart)"
            ),
            format!(
                "see why it exits: journalctl -u {unit} -n 50; fix it, then systemctl restart {unit}"
            ),
        ),
        "active" | "activating" | "reloading" => Check::ok(name, format!("{unit} is {state}")),
        "failed" => Check::problem(
            name,
            format!("{unit} failed"),
            format!("see journalctl -u {unit}, fix, then systemctl restart {unit}"),
        ),
        "inactive" | "deactivating" => Check::warning(
            name,
            format!("{unit} is {state} (or not installed)"),
            format!(
                "connectors are backed up only when they restart: systemctl enable --now {unit}"
            ),
        ),
        _ => Check::skipped(
            name,
            format!(
                "systemd does not answer here ({})",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("no state")
                    .trim()
            ),
        ),
    }
}

/// The value of `var` in the `Environment=` of `unit`, as `systemctl show` gives it
/// (the agent's service sets `HUBVAULT_TMP_DIR` there, which a shell never sees).
/// None when systemd does not answer or the unit does not set it. Blocking.
pub fn unit_environment(systemctl: &Path, unit: &str, var: &str) -> Option<String> {
    let out = std::process::Command::new(systemctl)
        .args(["show", "-p", "Environment", "--value", unit])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{var}=");
    text.split_whitespace()
        .find_map(|w| {
            w.trim_matches('"')
                .strip_prefix(&prefix)
                .map(str::to_string)
        })
        .filter(|v| !v.is_empty())
}

/// `12.3 MiB`, `4.0 GiB`: for the report.
fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Ok if this user may write in `dir`; else why not (EACCES, EROFS, ...).
fn dir_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: all-zero bytes are a valid `statvfs`; the call only writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The user's name from /etc/passwd, else the number.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn skew_is_zero_inside_the_write_window_to_the_second() {
        let (sent, answered) = (
            at("2026-11-24T07:00:10.400Z"),
            at("2026-11-24T07:00:10.900Z"),
        );
        // S3 truncates Last-Modified to the second: 07:00:10 is inside.
        assert_eq!(
            skew(sent, answered, at("2026-11-24T07:00:10Z")),
            chrono::Duration::zero()
        );
        assert_eq!(
            skew(sent, answered, at("2026-11-24T07:00:09.5Z")),
            chrono::Duration::zero()
        );
        assert_eq!(
            skew(sent, answered, at("2026-11-24T07:02:10.900Z")),
            chrono::Duration::seconds(120)
        );
        assert_eq!(
            skew(sent, answered, at("2026-11-24T06:58:09.400Z")),
            chrono::Duration::seconds(-120)
        );
    }

    #[test]
    fn credentials_are_found_by_name_and_the_secret_is_never_shown() {
        let none = Path::new("/nonexistent/agent.env");
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = check_credentials(
            env(&[
                ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE1234"),
                ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),
            ]),
            none,
        );
        assert_eq!(c.state, CheckState::Ok);
        assert!(
            c.detail.contains("1234")
                && !c.detail.contains("AKIAEXAMPLE")
                && !c.detail.contains("s3cr3t")
        );
        let c = check_credentials(env(&[("AWS_ACCESS_KEY_ID", "AKIA")]), none);
        assert_eq!(c.state, CheckState::Problem);
        let c = check_credentials(env(&[("AWS_PROFILE", "prod")]), none);
        assert_eq!(c.state, CheckState::Warning);
        assert!(c.hint.unwrap().contains("does not read ~/.aws"));
    }

    /// Review of the operator's first day: a session token makes the keys temporary
    /// (an hour to a day); the doctor said ok, and the agent's service failed every
    /// backup once they expired.
    #[test]
    fn credentials_with_a_session_token_are_a_warning_that_they_expire() {
        let c = check_credentials(
            |n: &str| match n {
                "AWS_ACCESS_KEY_ID" => Some("ASIAEXAMPLE1234".into()),
                "AWS_SECRET_ACCESS_KEY" => Some("s3cr3t".into()),
                "AWS_SESSION_TOKEN" => Some("tok".into()),
                _ => None,
            },
            Path::new("/nonexistent/agent.env"),
        );
        assert_eq!(c.state, CheckState::Warning, "{c:?}");
        assert!(c.detail.contains("AWS_SESSION_TOKEN"), "{c:?}");
        assert!(c.hint.as_deref().unwrap().contains("expire"), "{c:?}");
    }

    /// Review of the operator's first day: /etc/hubvault/agent.env copied without
    /// `install -m 600` (mode 644) holds the secret key for every user of the hub to
    /// read; the doctor said nothing. Now a warning naming the file, the key and chmod.
    #[test]
    fn an_agent_env_with_a_secret_that_others_may_read_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.env");
        std::fs::write(
            &p,
            "# AWS_SECRET_ACCESS_KEY=...\nAWS_REGION=us-east-1\nAWS_SECRET_ACCESS_KEY=s3cr3t\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = check_agent_env(&p).expect("a check");
        assert_eq!(c.state, CheckState::Warning, "{c:?}");
        assert!(
            c.detail.contains("AWS_SECRET_ACCESS_KEY")
                && c.detail.contains("644")
                && !c.detail.contains("s3cr3t"),
            "{c:?}"
        );
        assert!(c.hint.as_deref().unwrap().contains("chmod 600"), "{c:?}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_agent_env(&p).is_none());
        // The example as installed: every secret commented out.
        std::fs::write(&p, include_str!("../../dist/agent.env")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_agent_env(&p).is_none());
    }

    /// A fake `systemctl` answering `is-active` with `active_state` and `show -p
    /// SubState --value` with `sub_state`.
    fn fake_systemctl(dir: &Path, active_state: &str, sub_state: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("systemctl");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\ncase \"$1\" in is-active) echo {active_state}; [ {active_state} = active ];; show) echo {sub_state};; esac\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Review of the operator's first day: an agent that exits at once (a bad setting:
    /// exit 2) is restarted by systemd every 30 s, and between restarts the unit is
    /// "activating" (sub-state auto-restart): the doctor said ok. A unit that is really
    /// starting stays ok.
    #[test]
    fn an_agent_unit_restarting_after_failures_is_a_problem() {
        let d = tempfile::tempdir().unwrap();
        let c = check_unit_with(&fake_systemctl(d.path(), "activating", "auto-restart"), "u");
        assert_eq!(c.state, CheckState::Problem, "{c:?}");
        assert!(
            c.hint.as_deref().unwrap().contains("journalctl -u u"),
            "{c:?}"
        );
        let c = check_unit_with(&fake_systemctl(d.path(), "activating", "start"), "u");
        assert_eq!(c.state, CheckState::Ok, "{c:?}");
        let c = check_unit_with(&fake_systemctl(d.path(), "active", "running"), "u");
        assert_eq!(c.state, CheckState::Ok, "{c:?}");
    }

    #[test]
    fn only_problems_fail_and_configuration_problems_exit_2() {
        let r = DoctorReport::new(vec![Check::ok("a", "x"), Check::warning("b", "y", "z")]);
        assert_eq!((r.ok, r.exit_code()), (true, 0));
        let r = DoctorReport::new(vec![Check::problem("a", "x", "y")]);
        assert_eq!(r.exit_code(), 1);
        let r = DoctorReport::new(vec![Check::failed("a", &Error::usage("bad", "fix"))]);
        assert_eq!(r.exit_code(), 2);
    }
}
