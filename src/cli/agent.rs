use std::path::PathBuf;
use std::process::ExitCode;

use hubvault::agent::capture::{Capture, CaptureOptions};
use hubvault::agent::compactor;
use hubvault::agent::config::{self, Layer};
use hubvault::agent::metrics::Metrics;
use hubvault::agent::scheduler::{Agent, AgentOptions, Outcome, PassReport};
use hubvault::store::bucket::Bucket;
use hubvault::{Error, Result};
use tokio::sync::watch;

use super::{Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The directory holding one <connectorId>/sqlite.db per connector (production: /var/datahub).
    #[arg(long, env = "HUBVAULT_HUB_ROOT", value_name = "DIR")]
    hub_root: Option<PathBuf>,
    /// How often every connector is checked (default 1h; each wait varies by ±jitter).
    #[arg(long, env = "HUBVAULT_INTERVAL", value_name = "DURATION")]
    interval: Option<String>,
    /// Upload when the backup at the key is older than this (default 24h).
    #[arg(long, env = "HUBVAULT_MAX_AGE", value_name = "AGE")]
    max_age: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (port 0: any free port).
    #[arg(long, env = "HUBVAULT_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Fraction (0 to 0.5) by which each wait varies at random (default 0.1).
    #[arg(long, env = "HUBVAULT_JITTER", value_name = "FRACTION")]
    jitter: Option<f64>,
    /// Where snapshots are written before upload (default: TMPDIR).
    #[arg(long, env = "HUBVAULT_TMP_DIR", value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// How long a backup under way may go on after SIGTERM/SIGINT before it is abandoned (default 20s).
    #[arg(long, env = "HUBVAULT_SHUTDOWN_GRACE", value_name = "DURATION")]
    shutdown_grace: Option<String>,
    /// TOML config file; flags and environment override it. A missing default file is fine.
    #[arg(long, env = "HUBVAULT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Retention applied to a connector's versions after each upload (over [retention]
    /// of the config file).
    #[command(flatten, next_help_heading = "Retention (applied after each upload)")]
    keep: super::prune::PolicyArgs,
    /// Continuous capture: how long commits are batched at most, and the poll where file
    /// notifications are missing (default 1s).
    #[arg(long, env = "HUBVAULT_TICK", value_name = "DURATION")]
    tick: Option<String>,
    /// Turn continuous capture off (only the 24-hour rule and kept versions).
    #[arg(long)]
    no_continuous: bool,
    /// How far back point-in-time restore reaches: the agent compacts the continuous
    /// stream and deletes what lies before this (default 7d; over `keep_within` of
    /// [retention] in the config file).
    #[arg(long, env = "HUBVAULT_KEEP_WITHIN", value_name = "DURATION")]
    keep_within: Option<String>,
    /// One pass over every connector, then exit: 0 if all succeeded, 1 otherwise.
    #[arg(long)]
    once: bool,
}

pub async fn run(a: Args, g: &Global) -> Result<ExitCode> {
    // Everything is checked before a file or the bucket is touched.
    let (file_path, explicit) = match &a.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG_PATH), false),
    };
    let file = config::load_file(&file_path, explicit)?;
    let given = Layer {
        bucket: g.bucket.clone(),
        org: g.org.clone(),
        hub_root: a.hub_root,
        interval: a.interval,
        max_age: a.max_age,
        jitter: a.jitter,
        metrics_addr: a.metrics_addr,
        tmp_dir: a.tmp_dir,
        shutdown_grace: a.shutdown_grace,
        retention: {
            let p = a.keep.policy();
            (!p.is_empty() || a.keep_within.is_some())
                .then(|| config::RetentionTable::with_policy(p, a.keep_within.clone()))
        },
        sse: g.sse.clone(),
        sse_kms_key_id: g.sse_kms_key_id.clone(),
        tick: a.tick,
        continuous: a.no_continuous.then_some(false),
        ..Layer::default()
    };
    let cfg = config::resolve(given, file, &file_path)?;
    let compact_every = compact_every()?;
    let mut s3 = hubvault::store::s3::S3Settings::from_env()?;
    s3.sse = cfg.sse.clone();
    let bucket = Bucket::open_with(&cfg.bucket, &s3)?;
    let mut opts = AgentOptions::new(&cfg.hub_root, cfg.org.clone());
    opts.interval = cfg.interval;
    opts.max_age = cfg.max_age;
    opts.jitter = cfg.jitter;
    opts.tmp_dir = cfg.tmp_dir.clone();
    opts.retention = cfg.retention;
    opts.shutdown_grace = cfg.shutdown_grace;

    // One long-running agent per hub: a second one would capture the hub as a second
    // generation, and a restore of any instant after it started refuses. `--once` does
    // not capture (the per-connector lock orders its backups), so it may run beside one.
    let _hub_lock = if a.once {
        None
    } else {
        Some(lock_hub(&cfg.hub_root)?)
    };

    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(forward_signals(tx));

    let metrics = Metrics::new(cfg.org.as_str());
    if let Some(addr) = cfg.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::usage(
                format!("--metrics-addr {addr}: cannot listen: {e}"),
                "choose another port, or leave --metrics-addr out",
            )
        })?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!("metrics on http://{bound}/metrics");
        tokio::spawn(hubvault::agent::metrics::serve(
            listener,
            metrics.clone(),
            rx.clone(),
        ));
    }
    tracing::info!(
        hub_root = %cfg.hub_root.display(),
        bucket = %hubvault::store::url::redact_url(&cfg.bucket),
        org = %cfg.org,
        interval = ?cfg.interval,
        max_age = ?cfg.max_age,
        once = a.once,
        continuous = cfg.continuous && !a.once,
        tick = ?cfg.tick,
        keep_within = ?cfg.keep_within,
        "agent started"
    );
    let capture = (cfg.continuous && !a.once).then(|| {
        let copts = CaptureOptions {
            hub_root: cfg.hub_root.clone(),
            org: cfg.org.clone(),
            tick: cfg.tick,
            tmp_dir: cfg.tmp_dir.clone(),
            clock: hubvault::clock::system(),
        };
        let capture = Capture::new(bucket.clone(), copts, metrics.clone());
        // Compaction and retention of the stream, on a low-priority thread of its own.
        let (url, s3) = (cfg.bucket.clone(), s3.clone());
        let compactor = compactor::spawn(
            move || Bucket::open_with(&url, &s3),
            compactor::CompactorOptions {
                org: cfg.org.clone(),
                keep_within: cfg.keep_within,
                clock: hubvault::clock::system(),
                pass_every: compact_every,
            },
            cfg.tmp_dir.clone(),
            capture.progress(),
            rx.clone(),
        )
        .map_err(|e| {
            tracing::error!("stream compaction cannot start: {e}");
        })
        .ok();
        (tokio::spawn(capture.run(rx.clone())), compactor)
    });
    let mut agent = Agent::new(bucket, opts, metrics);
    if a.once {
        let report = agent.pass(&mut rx).await?;
        print_pass(&report, g.json);
        return Ok(if report.all_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    agent.run(rx).await?;
    if let Some((c, compactor)) = capture {
        // It saw the same shutdown; it uploads what is pending, within a bound.
        let _ = c.await;
        if let Some(h) = compactor {
            // It stops at once (a pass under way is dropped: the next run finishes it).
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::task::spawn_blocking(move || h.join()),
            )
            .await;
        }
    }
    tracing::info!("agent stopped");
    Ok(ExitCode::SUCCESS)
}

/// Takes the hub's agent lock: `flock` on the hub root directory itself (read access is
/// enough, nothing is written there), held as long as the returned file is open; the
/// kernel drops it when the agent dies.
fn lock_hub(hub_root: &std::path::Path) -> Result<std::fs::File> {
    let dir = std::fs::File::open(hub_root)
        .map_err(|e| Error::io(hub_root, "cannot open the hub root", e))?;
    match dir.try_lock() {
        Ok(()) => Ok(dir),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Io {
            path: hub_root.to_path_buf(),
            message: "another hubvault agent is running on this hub (it holds the hub root's lock); two would capture it as two generations, and a restore of any instant after the second started would refuse".into(),
            hint: "stop the other agent first (systemctl status hubvault-agent; ps -C hubvault -f), or run this one with --once, which may run beside it".into(),
            source: std::io::Error::new(std::io::ErrorKind::WouldBlock, "locked"),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(hub_root, "cannot lock the hub root", e))
        }
    }
}

/// How often the stream compactor passes: `HUBVAULT_COMPACT_EVERY` (not a flag: tests
/// shorten it to kill the agent mid-pass within seconds), else
/// [`compactor::PASS_EVERY`]. A value that does not parse is refused by name.
fn compact_every() -> Result<std::time::Duration> {
    const VAR: &str = "HUBVAULT_COMPACT_EVERY";
    let Some(v) = std::env::var_os(VAR).filter(|v| !v.is_empty()) else {
        return Ok(compactor::PASS_EVERY);
    };
    let v = v.to_string_lossy();
    match super::parse_duration(&v) {
        Ok(d) if d >= std::time::Duration::from_millis(10) => Ok(d),
        _ => Err(Error::usage(
            format!("{VAR}={v:?} is not a duration of at least 10ms"),
            format!("write e.g. {VAR}=10s, or unset it"),
        )),
    }
}

/// SIGTERM (systemd stop) or SIGINT (Ctrl-C) asks the agent to stop.
async fn forward_signals(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        tracing::error!("cannot listen for SIGTERM");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
    let _ = tx.send(true);
}

fn print_pass(r: &PassReport, json: bool) {
    if json {
        output::print_json(&serde_json::json!({
            "ok": r.all_ok(),
            "connectors": r.attempts,
            "interrupted": r.interrupted,
        }));
        return;
    }
    if r.attempts.is_empty() {
        outln!("no connectors found (directories <connectorId>/sqlite.db under the hub root)");
    }
    for a in &r.attempts {
        let word = match a.result {
            Outcome::Uploaded => "uploaded",
            Outcome::Skipped => "skipped (fresh)",
            Outcome::Failed => "FAILED",
            Outcome::Abandoned => "abandoned",
        };
        outln!("{word}: {} ({})", a.connector, a.db.display());
        outln!("  {}", a.reason);
        if let Some(h) = &a.hint {
            outln!("  Try: {h}");
        }
    }
    if r.interrupted {
        outln!("interrupted: stopped before every connector was checked");
    }
}
