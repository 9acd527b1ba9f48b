//! The agent's configuration: flags, environment, and a TOML file, in that order of
//! precedence.
//!
//! The binary's flag parser already merges flags over environment variables; this module
//! reads the file and lays what the flags and environment gave over it. Rules:
//! - the default file (`/etc/hubvault/hubvault.toml`) may be missing; a file named with
//!   `--config` (or `HUBVAULT_CONFIG`) must exist;
//! - an unknown key is an error that names the key and the file: a typo such as
//!   `max-age` for `max_age` would otherwise silently leave the default in force;
//! - every value is checked here, before the agent touches a file or the bucket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::catalog::retention::Policy;
use crate::error::{Error, Result};
use crate::model::ids::OrgSlug;
use crate::ops::backup::DEFAULT_MAX_AGE;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/hubvault/hubvault.toml";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Continuous capture's default batching bound and fallback poll.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
/// Each wait is stretched or shortened by up to this fraction, at random.
pub const DEFAULT_JITTER: f64 = 0.1;

/// The `[retention]` table: restic's rules for the kept versions, and `keep_within`, the
/// continuous window (the stream's retention). Flags replace the version rules as a
/// whole, and `keep_within` on its own.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionTable {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// How far back point-in-time restore reaches (default 7d).
    pub keep_within: Option<String>,
}

impl RetentionTable {
    /// The version rules (restic's).
    pub fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
        }
    }

    pub fn with_policy(p: Policy, keep_within: Option<String>) -> RetentionTable {
        RetentionTable {
            keep_last: p.keep_last,
            keep_hourly: p.keep_hourly,
            keep_daily: p.keep_daily,
            keep_weekly: p.keep_weekly,
            keep_monthly: p.keep_monthly,
            keep_yearly: p.keep_yearly,
            keep_within,
        }
    }

    /// `self` over `under`: the version rules as a whole, `keep_within` on its own.
    fn over(self, under: RetentionTable) -> RetentionTable {
        let policy = if self.policy().is_empty() {
            under.policy()
        } else {
            self.policy()
        };
        RetentionTable::with_policy(policy, self.keep_within.or(under.keep_within))
    }
}

/// One layer of settings, every value optional: the file, or flags over environment.
/// Durations stay text until [`resolve`], so an error can say where the text came from.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub bucket: Option<String>,
    pub org: Option<String>,
    pub hub_root: Option<PathBuf>,
    pub interval: Option<String>,
    pub max_age: Option<String>,
    pub jitter: Option<f64>,
    pub metrics_addr: Option<String>,
    pub tmp_dir: Option<PathBuf>,
    pub shutdown_grace: Option<String>,
    /// `[retention]`: keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
    /// keep_yearly (applied by `agent` and `backup` after each upload), and keep_within
    /// (the continuous window the agent keeps).
    pub retention: Option<RetentionTable>,
    /// Server-side encryption of S3 objects: `AES256` or `aws:kms` (see `--sse`).
    pub sse: Option<String>,
    /// The KMS key for `sse = "aws:kms"`.
    pub sse_kms_key_id: Option<String>,
    /// `hubvault serve`: the listen address, and the file holding its access token.
    pub serve_listen: Option<String>,
    pub serve_token_file: Option<PathBuf>,
    /// Continuous capture's batching bound and fallback poll (default 1s).
    pub tick: Option<String>,
    /// `false` turns continuous capture off (`--no-continuous`).
    pub continuous: Option<bool>,
}

impl Layer {
    /// `self` where it has a value, else `under`.
    pub fn over(self, under: Layer) -> Layer {
        // The two SSE settings go together: a flag's mode never meets the file's key.
        let (sse, sse_kms_key_id) = if self.sse.is_some() || self.sse_kms_key_id.is_some() {
            (self.sse, self.sse_kms_key_id)
        } else {
            (under.sse, under.sse_kms_key_id)
        };
        Layer {
            sse,
            sse_kms_key_id,
            bucket: self.bucket.or(under.bucket),
            org: self.org.or(under.org),
            hub_root: self.hub_root.or(under.hub_root),
            interval: self.interval.or(under.interval),
            max_age: self.max_age.or(under.max_age),
            jitter: self.jitter.or(under.jitter),
            metrics_addr: self.metrics_addr.or(under.metrics_addr),
            tmp_dir: self.tmp_dir.or(under.tmp_dir),
            shutdown_grace: self.shutdown_grace.or(under.shutdown_grace),
            retention: match (self.retention, under.retention) {
                (Some(a), Some(b)) => Some(a.over(b)),
                (a, b) => a.or(b),
            },
            serve_listen: self.serve_listen.or(under.serve_listen),
            serve_token_file: self.serve_token_file.or(under.serve_token_file),
            tick: self.tick.or(under.tick),
            continuous: self.continuous.or(under.continuous),
        }
    }
}

/// Reads the config file. `explicit` is true if and only if the user named the file
/// (flag or environment); only then is a missing file an error.
pub fn load_file(path: &Path, explicit: bool) -> Result<Layer> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Layer::default());
        }
        Err(e) => {
            return Err(Error::usage(
                format!("--config {}: cannot read: {e}", path.display()),
                "check the path given with --config (or HUBVAULT_CONFIG), or leave it out to use flags and environment only",
            ));
        }
    };
    parse(&text, path)
}

/// Parses the text of a config file read from `path`.
pub fn parse(text: &str, path: &Path) -> Result<Layer> {
    toml::from_str(text).map_err(|e| {
        // The message alone may name neither the key nor its place ("duplicate key",
        // "invalid type: integer `3600`, expected a string"): say the line, as written.
        let at = e
            .span()
            .filter(|s| text.is_char_boundary(s.start.min(text.len())))
            .map(|s| {
                let start = s.start.min(text.len());
                let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next().unwrap_or("").trim();
                let n = text[..start].matches('\n').count() + 1;
                format!(" line {n} ({line:?})")
            })
            .unwrap_or_default();
        Error::usage(
            format!(
                "config file {}{at}: {}",
                path.display(),
                e.message().trim_end()
            ),
            format!(
                "fix {} (known keys: bucket, org, hub_root, interval, max_age, jitter, metrics_addr, tmp_dir, shutdown_grace, sse, sse_kms_key_id, serve_listen, serve_token_file, tick, continuous, and a [retention] table with keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within)",
                path.display()
            ),
        )
    })
}

/// Everything the agent needs, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub bucket: String,
    pub org: OrgSlug,
    pub hub_root: PathBuf,
    pub interval: Duration,
    pub max_age: Duration,
    pub jitter: f64,
    pub metrics_addr: Option<SocketAddr>,
    pub tmp_dir: Option<PathBuf>,
    pub shutdown_grace: Duration,
    pub retention: Option<Policy>,
    pub sse: Option<crate::store::s3::Sse>,
    pub tick: Duration,
    pub continuous: bool,
    /// The continuous window kept: point-in-time restore reaches this far back.
    pub keep_within: Duration,
}

/// Lays `given` (flags over environment) over `file` and checks every value. `file_name`
/// is named in errors about values that came from the file.
pub fn resolve(given: Layer, file: Layer, file_name: &Path) -> Result<AgentConfig> {
    let from_file = |pick: fn(&Layer) -> bool| -> String {
        if !pick(&given) && pick(&file) {
            format!(" (from {})", file_name.display())
        } else {
            String::new()
        }
    };
    let where_org = from_file(|l| l.org.is_some());
    let where_interval = from_file(|l| l.interval.is_some());
    let where_max_age = from_file(|l| l.max_age.is_some());
    let where_metrics = from_file(|l| l.metrics_addr.is_some());
    let where_grace = from_file(|l| l.shutdown_grace.is_some());
    let where_jitter = from_file(|l| l.jitter.is_some());
    let where_sse = if given.sse.is_some() || given.sse_kms_key_id.is_some() {
        "--sse".to_string()
    } else {
        format!("sse (from {})", file_name.display())
    };
    let where_tick = from_file(|l| l.tick.is_some());
    let where_keep_within = from_file(|l| {
        l.retention
            .as_ref()
            .is_some_and(|r| r.keep_within.is_some())
    });
    // A path from the file is read by commands run from anywhere (the agent's service
    // from /): relative, it would name another directory for each.
    for (key, p) in [
        (
            "hub_root",
            given.hub_root.is_none().then_some(&file.hub_root),
        ),
        ("tmp_dir", given.tmp_dir.is_none().then_some(&file.tmp_dir)),
    ] {
        if let Some(Some(p)) = p {
            absolute_in_file(key, p, file_name)?;
        }
    }
    let l = given.over(file);
    let sse =
        crate::store::s3::Sse::parse(l.sse.as_deref(), l.sse_kms_key_id.as_deref(), &where_sse)?;

    let bucket = l.bucket.ok_or_else(|| {
        Error::usage(
            "no bucket given",
            "pass --bucket s3://bucket-name or file:///abs/dir (or set HUBVAULT_BUCKET, or bucket = \"...\" in the config file)",
        )
    })?;
    let org = l.org.ok_or_else(|| {
        Error::usage(
            "no org given",
            "pass --org SLUG (or set HUBVAULT_ORG, or org = \"...\" in the config file)",
        )
    })?;
    let org = OrgSlug::parse(&org).map_err(|e| {
        Error::usage(
            format!("org{where_org}: {e}"),
            e.hint().unwrap_or("pass a lowercase slug").to_string(),
        )
    })?;
    let hub_root = l.hub_root.ok_or_else(|| {
        Error::usage(
            "no hub root given",
            "pass --hub-root DIR (or set HUBVAULT_HUB_ROOT, or hub_root = \"/var/datahub\" in the config file)",
        )
    })?;
    if !hub_root.is_dir() {
        return Err(Error::usage(
            format!("--hub-root {}: not a directory", hub_root.display()),
            "pass the directory that holds one <connectorId>/sqlite.db per connector (production: /var/datahub)",
        ));
    }
    let interval =
        duration("interval", &where_interval, l.interval.as_deref())?.unwrap_or(DEFAULT_INTERVAL);
    if interval.is_zero() {
        return Err(Error::usage(
            format!("--interval{where_interval}: must be more than 0"),
            "write e.g. --interval 1h",
        ));
    }
    let max_age =
        duration("max_age", &where_max_age, l.max_age.as_deref())?.unwrap_or(DEFAULT_MAX_AGE);
    let shutdown_grace = duration("shutdown_grace", &where_grace, l.shutdown_grace.as_deref())?
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    let jitter = l.jitter.unwrap_or(DEFAULT_JITTER);
    if !(0.0..=0.5).contains(&jitter) {
        return Err(Error::usage(
            format!("jitter{where_jitter} = {jitter}: must be between 0 and 0.5"),
            "jitter is the fraction of the interval by which waits vary, e.g. 0.1",
        ));
    }
    let metrics_addr = match l.metrics_addr.as_deref() {
        None | Some("") => None,
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|e| {
            Error::usage(
                format!("--metrics-addr{where_metrics} {a:?}: {e}"),
                "write an address and port, e.g. 127.0.0.1:9464",
            )
        })?),
    };
    let tick = duration("tick", &where_tick, l.tick.as_deref())?.unwrap_or(DEFAULT_TICK);
    if tick < Duration::from_millis(100) || tick > Duration::from_secs(3600) {
        return Err(Error::usage(
            format!("--tick{where_tick} {tick:?}: must be between 100ms and 1h"),
            "write e.g. --tick 1s (the default) or --tick 10s",
        ));
    }
    let keep_within = parse_keep_within(
        l.retention.as_ref().and_then(|r| r.keep_within.as_deref()),
        &where_keep_within,
    )?;
    Ok(AgentConfig {
        keep_within,
        tick,
        continuous: l.continuous.unwrap_or(true),
        bucket,
        org,
        hub_root,
        interval,
        max_age,
        jitter,
        metrics_addr,
        tmp_dir: l.tmp_dir,
        shutdown_grace,
        retention: l.retention.map(|r| r.policy()).filter(|p| !p.is_empty()),
        sse,
    })
}

/// A path the config file (`file_name`) gives for `key` must be absolute: a relative
/// one would mean another directory to every command's working directory.
pub fn absolute_in_file(key: &str, p: &Path, file_name: &Path) -> Result<()> {
    if p.is_absolute() {
        return Ok(());
    }
    Err(Error::usage(
        format!(
            "{key} = {:?} (from {}): a relative path",
            p.display().to_string(),
            file_name.display()
        ),
        format!(
            "write an absolute path in {}, e.g. {key} = \"/var/datahub\": a relative one means another directory to each command (the agent's service runs from /)",
            file_name.display()
        ),
    ))
}

/// The default continuous window.
pub const DEFAULT_KEEP_WITHIN: Duration = Duration::from_secs(7 * 86_400);

/// `--keep-within` (or `keep_within` of `[retention]`, named by `from`): at least an
/// hour (a day's bases and marks need it), at most ten years.
pub fn parse_keep_within(text: Option<&str>, from: &str) -> Result<Duration> {
    let d = duration("keep_within", from, text)?.unwrap_or(DEFAULT_KEEP_WITHIN);
    if d < Duration::from_secs(3600) || d > Duration::from_secs(3650 * 86_400) {
        return Err(Error::usage(
            format!("--keep-within{from} {d:?}: must be between 1h and 3650d"),
            "write e.g. --keep-within 7d (the default) or --keep-within 30d",
        ));
    }
    Ok(d)
}

fn duration(key: &str, from: &str, text: Option<&str>) -> Result<Option<Duration>> {
    text.map(|t| {
        humantime::parse_duration(t).map_err(|e| {
            Error::usage(
                format!("--{}{from} {t:?}: {e}", key.replace('_', "-")),
                "write a duration such as 90s, 30m, 1h or 7d",
            )
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn file_layer(text: &str) -> Layer {
        parse(text, Path::new("/etc/hubvault/hubvault.toml")).unwrap()
    }

    #[test]
    fn flags_and_env_win_over_the_file_and_the_file_over_defaults() {
        let hub = dir();
        let file = file_layer(&format!(
            "bucket = \"file:///b\"\norg = \"filed\"\nhub_root = \"{}\"\ninterval = \"2h\"\nmax_age = \"12h\"\n",
            hub.path().display()
        ));
        let given = Layer {
            org: Some("given".into()),
            interval: Some("5m".into()),
            ..Default::default()
        };
        let c = resolve(given, file, Path::new("f.toml")).unwrap();
        assert_eq!(c.org.as_str(), "given");
        assert_eq!(c.interval, Duration::from_secs(300));
        assert_eq!(c.max_age, Duration::from_secs(12 * 3600));
        assert_eq!(c.bucket, "file:///b");
        assert_eq!(c.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(c.metrics_addr, None);
    }

    #[test]
    fn retention_comes_from_a_table_and_flags_replace_it_whole() {
        let hub = dir();
        let file = file_layer(&format!(
            "bucket = \"file:///b\"\norg = \"o\"\nhub_root = \"{}\"\n[retention]\nkeep_daily = 14\nkeep_monthly = 6\n",
            hub.path().display()
        ));
        let c = resolve(Layer::default(), file.clone(), Path::new("f.toml")).unwrap();
        let p = c.retention.unwrap();
        assert_eq!(
            (p.keep_daily, p.keep_monthly, p.keep_last),
            (Some(14), Some(6), None)
        );
        let flags = Policy {
            keep_last: Some(3),
            ..Default::default()
        };
        let given = Layer {
            retention: Some(RetentionTable::with_policy(flags, None)),
            ..Default::default()
        };
        assert_eq!(
            resolve(given, file, Path::new("f.toml")).unwrap().retention,
            Some(flags)
        );
        let err = parse("[retention]\nkeep_dayly = 3\n", Path::new("f.toml")).unwrap_err();
        assert!(err.to_string().contains("keep_dayly"), "{err}");
    }

    #[test]
    fn keep_within_comes_from_the_retention_table_or_the_flag_and_is_checked() {
        let hub = dir();
        let base = format!(
            "bucket = \"file:///b\"\norg = \"o\"\nhub_root = \"{}\"\n",
            hub.path().display()
        );
        let c = resolve(Layer::default(), file_layer(&base), Path::new("f.toml")).unwrap();
        assert_eq!(c.keep_within, DEFAULT_KEEP_WITHIN);
        let file = file_layer(&format!(
            "{base}[retention]\nkeep_daily = 3\nkeep_within = \"30d\"\n"
        ));
        let c = resolve(Layer::default(), file.clone(), Path::new("f.toml")).unwrap();
        assert_eq!(c.keep_within, Duration::from_secs(30 * 86_400));
        // A flag's version rules replace the file's, and leave its keep_within alone.
        let given = Layer {
            retention: Some(RetentionTable::with_policy(
                Policy {
                    keep_last: Some(2),
                    ..Default::default()
                },
                None,
            )),
            ..Default::default()
        };
        let c = resolve(given, file.clone(), Path::new("f.toml")).unwrap();
        assert_eq!(c.keep_within, Duration::from_secs(30 * 86_400));
        assert_eq!(c.retention.unwrap().keep_daily, None);
        let bad = file_layer(&format!("{base}[retention]\nkeep_within = \"10m\"\n"));
        let err = resolve(Layer::default(), bad, Path::new("/etc/h.toml")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("--keep-within (from /etc/h.toml)"),
            "{err}"
        );
    }

    #[test]
    fn serve_keys_are_read_and_the_example_file_parses() {
        let l = parse(
            "serve_listen = \"0.0.0.0:8080\"\nserve_token_file = \"/etc/hubvault/serve.token\"\n",
            Path::new("f.toml"),
        )
        .unwrap();
        assert_eq!(l.serve_listen.as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(
            l.serve_token_file.as_deref(),
            Some(Path::new("/etc/hubvault/serve.token"))
        );
        let example = include_str!("../../dist/hubvault.toml");
        parse(example, Path::new("dist/hubvault.toml")).unwrap();
        let uncommented = example.replace("# serve_", "serve_");
        let l = parse(&uncommented, Path::new("dist/hubvault.toml")).unwrap();
        // The [retention] example, on its own (keys after it would belong to the table).
        let table: String = example
            .lines()
            .filter(|l| l.starts_with("# [retention]") || l.starts_with("# keep_"))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let r = parse(&table, Path::new("dist/hubvault.toml")).unwrap();
        assert_eq!(
            r.retention.as_ref().and_then(|r| r.keep_within.as_deref()),
            Some("7d")
        );
        assert!(l.serve_token_file.is_some());
    }

    #[test]
    fn tick_and_continuous_come_from_flags_or_the_file_and_are_checked() {
        let hub = dir();
        let base = format!(
            "bucket = \"file:///b\"\norg = \"o\"\nhub_root = \"{}\"\n",
            hub.path().display()
        );
        let c = resolve(Layer::default(), file_layer(&base), Path::new("f.toml")).unwrap();
        assert_eq!((c.tick, c.continuous), (DEFAULT_TICK, true));
        let file = file_layer(&format!("{base}tick = \"10s\"\ncontinuous = false\n"));
        let c = resolve(Layer::default(), file.clone(), Path::new("f.toml")).unwrap();
        assert_eq!((c.tick, c.continuous), (Duration::from_secs(10), false));
        let given = Layer {
            tick: Some("2s".into()),
            ..Default::default()
        };
        let c = resolve(given, file, Path::new("f.toml")).unwrap();
        assert_eq!(c.tick, Duration::from_secs(2));
        for bad in ["10ms", "2h", "soon"] {
            let given = Layer {
                tick: Some(bad.into()),
                ..Default::default()
            };
            let err = resolve(given, file_layer(&base), Path::new("f.toml")).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("--tick"), "{err}");
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = parse("max-age = \"1h\"\n", Path::new("/etc/h.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("max-age") && text.contains("/etc/h.toml"),
            "{text}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    /// Review of the operator's first day: a value of the wrong type or a key given
    /// twice said only "invalid type: integer `3600`, expected a string" or "duplicate
    /// key", naming neither the key nor where it is.
    #[test]
    fn a_wrong_type_or_a_repeated_key_is_refused_naming_the_key_and_its_line() {
        for (text, key, line) in [
            ("bucket = \"file:///b\"\ninterval = 3600\n", "interval", 2),
            ("jitter = \"0.1\"\n", "jitter", 1),
            ("tick = \"1s\"\norg = \"a\"\ntick = \"2s\"\n", "tick", 3),
            ("[retention]\nkeep_daily = -1\n", "keep_daily", 2),
        ] {
            let err = parse(text, Path::new("/etc/h.toml")).unwrap_err();
            let t = err.to_string();
            assert!(
                t.contains(&format!("/etc/h.toml line {line}")) && t.contains(key),
                "{text:?}: {t}"
            );
            assert_eq!(err.exit_code(), 2);
        }
    }

    /// Review of the operator's first day: `hub_root = "datahub"` in the file meant
    /// /datahub to the agent's service (run from /) and ~/datahub to `sudo hubvault
    /// doctor` in root's home: the doctor checked one directory, the agent backed up
    /// another. A relative path in the file is now refused by name; on the command line
    /// it stays relative to where the command runs.
    #[test]
    fn a_relative_path_in_the_file_is_refused_by_name() {
        let hub = dir();
        for (key, line) in [
            ("hub_root", "hub_root = \"datahub\"\n".to_string()),
            (
                "tmp_dir",
                format!(
                    "hub_root = \"{}\"\ntmp_dir = \"var/tmp\"\n",
                    hub.path().display()
                ),
            ),
        ] {
            let file = file_layer(&format!("bucket = \"file:///b\"\norg = \"o\"\n{line}"));
            let err = resolve(Layer::default(), file, Path::new("/etc/h.toml")).unwrap_err();
            let t = err.to_string();
            assert!(
                t.contains(key) && t.contains("/etc/h.toml") && t.contains("relative"),
                "{t}"
            );
            assert_eq!(err.exit_code(), 2);
        }
        // Given on the command line, a relative hub root is the caller's to mean.
        let cwd = std::env::current_dir().unwrap();
        let rel = pathdiff(hub.path(), &cwd);
        let given = Layer {
            hub_root: Some(rel),
            ..Default::default()
        };
        let file = file_layer("bucket = \"file:///b\"\norg = \"o\"\nhub_root = \"datahub\"\n");
        resolve(given, file, Path::new("/etc/h.toml")).unwrap();
    }

    /// `path` relative to `base` (both absolute), through `..` as needed.
    fn pathdiff(path: &Path, base: &Path) -> PathBuf {
        let mut up = PathBuf::new();
        let mut b = base.to_path_buf();
        while !path.starts_with(&b) {
            up.push("..");
            b.pop();
        }
        up.join(path.strip_prefix(&b).unwrap())
    }

    #[test]
    fn a_missing_default_file_is_empty_but_a_missing_named_file_is_an_error() {
        let d = dir();
        let missing = d.path().join("nope.toml");
        assert_eq!(load_file(&missing, false).unwrap(), Layer::default());
        let err = load_file(&missing, true).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_bad_value_from_the_file_names_the_file_and_the_key() {
        let hub = dir();
        let file = file_layer(&format!(
            "bucket = \"file:///b\"\norg = \"acme\"\nhub_root = \"{}\"\ninterval = \"soon\"\n",
            hub.path().display()
        ));
        let err = resolve(Layer::default(), file, Path::new("/etc/h.toml")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--interval (from /etc/h.toml)"), "{text}");
        assert_eq!(err.exit_code(), 2);
    }
}
