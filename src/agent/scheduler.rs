//! The hub agent: applies the platform's backup rule to every connector under the hub root,
//! at start and then every interval, also to connectors that never restart.
//!
//! - Discovery: a connector is a directory named by its connector id that holds
//!   `sqlite.db`. The hub root is rescanned before every pass, so new connectors are
//!   picked up and removed ones forgotten (their metrics too).
//! - Schedule: each connector has its own due time. After a success it is due again one
//!   interval later, or when its backup turns `max_age` old if that comes sooner (the
//!   24-hour rule's edge: never an interval past it); after a failure sooner
//!   (`retry_base`, doubling per consecutive failure, never past the interval). Every
//!   interval is jittered by ±`jitter` of itself, so a fleet of hubs started together
//!   does not hit the bucket in the same second.
//! - One at a time: connectors are backed up one after another (a hub's connectors need
//!   its cores more than we do), and each backup takes the connector's lock
//!   ([`crate::lock`]), so the agent never races a `hubvault backup` started by the
//!   connector itself: the second one waits, then finds the backup fresh and skips.
//! - Isolation: one connector's error (corrupt, locked, unreadable database) is logged,
//!   counted and retried later; it never stops the pass.
//! - Shutdown is a value passed in (a `watch` channel that turns true). A backup under
//!   way gets `shutdown_grace` to finish; after that its future is dropped, which
//!   abandons the upload: uploads are atomic (see [`crate::bucket`]), so the canonical
//!   key keeps the old object or the new one, whole, and the lock is released.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::config::{DEFAULT_INTERVAL, DEFAULT_JITTER, DEFAULT_SHUTDOWN_GRACE};
use crate::agent::log::{self as decisions, DecisionLog};
use crate::agent::metrics::Metrics;
use crate::agent::shutdown::stopped;
use crate::catalog::retention::Policy;
use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, OrgSlug};
use crate::model::layout::ConnectorKey;
use crate::ops::backup::{self, BackupOptions, Decision};
use crate::ops::prune;
use crate::progress::NoProgress;
use crate::store::Bucket;

/// The file a connector keeps its state in, inside its directory.
pub const DB_FILE: &str = "sqlite.db";

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub hub_root: PathBuf,
    pub org: OrgSlug,
    pub interval: Duration,
    pub max_age: Duration,
    /// Fraction (0 to 0.5) by which each wait varies at random.
    pub jitter: f64,
    pub tmp_dir: Option<PathBuf>,
    /// First retry after a failure; doubles per consecutive failure, capped at `interval`.
    pub retry_base: Duration,
    /// How long a backup waits for another one of the same connector.
    pub lock_wait: Duration,
    /// How long a backup under way may go on after shutdown was asked for.
    pub shutdown_grace: Duration,
    /// Applied to a connector's versions after each of its uploads.
    pub retention: Option<Policy>,
}

impl AgentOptions {
    pub fn new(hub_root: impl Into<PathBuf>, org: OrgSlug) -> Self {
        AgentOptions {
            hub_root: hub_root.into(),
            org,
            interval: DEFAULT_INTERVAL,
            max_age: backup::DEFAULT_MAX_AGE,
            jitter: DEFAULT_JITTER,
            tmp_dir: None,
            retry_base: Duration::from_secs(60),
            // Long enough for a start-up backup of a large database; short enough that
            // one stuck connector delays the others by minutes, not hours.
            lock_wait: Duration::from_secs(2 * 60),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            retention: None,
        }
    }
}

/// A connector found under the hub root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub connector: ConnectorId,
    pub db: PathBuf,
}

/// The connectors under `hub_root`: directories named by a connector id that hold
/// `sqlite.db`. Other entries (`lost+found`, stray files, a directory without a
/// database yet) are not connectors and are passed over.
pub fn discover(hub_root: &Path) -> Result<Vec<Discovered>> {
    let entries = std::fs::read_dir(hub_root)
        .map_err(|e| Error::io(hub_root, "cannot list the hub root", e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(hub_root, "cannot list the hub root", e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(connector) = ConnectorId::parse(&name) else {
            continue;
        };
        let db = entry.path().join(DB_FILE);
        // `exists` follows symlinks, as the connector does when it opens the file.
        if db.exists() {
            found.push(Discovered { connector, db });
        }
    }
    found.sort_by_key(|d| d.connector);
    Ok(found)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Uploaded,
    Skipped,
    Failed,
    /// Shutdown came during the backup and the grace ran out: the upload was dropped.
    Abandoned,
}

/// What one backup attempt of one connector did.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub connector: ConnectorId,
    pub db: PathBuf,
    pub result: Outcome,
    /// Why it uploaded or skipped, or what went wrong.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub consecutive_failures: u32,
    pub seconds: f64,
}

/// What one pass over the hub did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    pub added: Vec<ConnectorId>,
    pub removed: Vec<ConnectorId>,
    pub attempts: Vec<Attempt>,
    /// True if and only if shutdown came during the pass, so some due connectors were
    /// not attempted.
    pub interrupted: bool,
}

impl PassReport {
    /// True if and only if every attempt uploaded or skipped, and none was cut short.
    pub fn all_ok(&self) -> bool {
        !self.interrupted
            && self
                .attempts
                .iter()
                .all(|a| matches!(a.result, Outcome::Uploaded | Outcome::Skipped))
    }
}

#[derive(Debug)]
struct Slot {
    db: PathBuf,
    due: Instant,
    consecutive_failures: u32,
}

/// The agent's state between passes. Drive it with [`Agent::pass`] (one pass; tests,
/// `--once`) or [`Agent::run`] (until shutdown).
pub struct Agent {
    bucket: Bucket,
    opts: AgentOptions,
    slots: BTreeMap<ConnectorId, Slot>,
    metrics: Arc<Metrics>,
    /// One line per decision per connector, not one per tick (agent/log.rs).
    log: Arc<DecisionLog>,
}

impl Agent {
    pub fn new(bucket: Bucket, opts: AgentOptions, metrics: Arc<Metrics>) -> Agent {
        Agent {
            bucket,
            opts,
            slots: BTreeMap::new(),
            metrics,
            log: Arc::new(DecisionLog::default()),
        }
    }

    /// The decision log, for others that decide about the same connectors (continuous
    /// capture logs "captured N commits" through it).
    pub fn decision_log(&self) -> Arc<DecisionLog> {
        self.log.clone()
    }

    /// The connectors the agent currently knows.
    pub fn connectors(&self) -> Vec<ConnectorId> {
        self.slots.keys().copied().collect()
    }

    /// When the next connector is due, if any is known.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots.values().map(|s| s.due).min()
    }

    /// Makes every known connector due now (tests; `--once` does not need it).
    pub fn make_all_due(&mut self) {
        let now = Instant::now();
        for s in self.slots.values_mut() {
            s.due = now;
        }
    }

    /// Rescans the hub root and applies the backup rule to every connector that is due
    /// (on the first pass: all of them). Fails only if the hub root cannot be listed.
    pub async fn pass(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<PassReport> {
        let mut report = PassReport::default();
        let found = {
            let root = self.opts.hub_root.clone();
            crate::blocking::blocking(move || discover(&root)).await?
        };
        let present: BTreeSet<ConnectorId> = found.iter().map(|d| d.connector).collect();
        let now = Instant::now();
        for d in found {
            if let Some(slot) = self.slots.get_mut(&d.connector) {
                slot.db = d.db;
            } else {
                tracing::info!(connector = %d.connector, db = %d.db.display(), "connector found");
                report.added.push(d.connector);
                self.slots.insert(
                    d.connector,
                    Slot {
                        db: d.db,
                        due: now,
                        consecutive_failures: 0,
                    },
                );
            }
        }
        let gone: Vec<ConnectorId> = self
            .slots
            .keys()
            .filter(|c| !present.contains(c))
            .copied()
            .collect();
        for c in gone {
            tracing::info!(connector = %c, "connector removed from the hub; forgetting it");
            self.slots.remove(&c);
            self.log.forget(&c.to_string());
            report.removed.push(c);
        }
        self.metrics
            .retain(&present.iter().map(|c| c.to_string()).collect());

        let due: Vec<ConnectorId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.due <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in due {
            if *shutdown.borrow() {
                report.interrupted = true;
                break;
            }
            let attempt = self.attempt(c, shutdown).await;
            let abandoned = attempt.result == Outcome::Abandoned;
            report.attempts.push(attempt);
            if abandoned || *shutdown.borrow() {
                report.interrupted = true;
                break;
            }
        }
        self.metrics.pass_done();
        Ok(report)
    }

    async fn attempt(&mut self, c: ConnectorId, shutdown: &mut watch::Receiver<bool>) -> Attempt {
        let slot = self.slots.get(&c).expect("due connectors are known");
        let db = slot.db.clone();
        let mut bopts = BackupOptions::new(&db, self.opts.org.clone());
        // The directory's name is the connector id: a database that says otherwise
        // (copied from another connector) must not overwrite that connector's backup.
        bopts.connector = Some(c);
        bopts.max_age = self.opts.max_age;
        bopts.tmp_dir = self.opts.tmp_dir.clone();
        bopts.lock_wait = self.opts.lock_wait;
        let started = std::time::Instant::now();
        let outcome = {
            let (bucket, retention) = (&self.bucket, self.opts.retention);
            let fut = async move {
                let mut r = backup::run(bucket, &bopts, &NoProgress).await?;
                if let (Decision::Uploaded, Some(policy)) = (r.decision, retention) {
                    let ck = ConnectorKey::new(r.org.clone(), r.datahub, r.connector);
                    r.pruned = prune::after_upload(bucket, &ck, &policy).await;
                }
                Ok::<_, Error>(r)
            };
            tokio::pin!(fut);
            tokio::select! {
                r = &mut fut => Some(r),
                _ = stopped(shutdown) => {
                    tracing::info!(connector = %c, grace = ?self.opts.shutdown_grace,
                        "shutdown asked for during a backup; letting it finish within the grace");
                    tokio::time::timeout(self.opts.shutdown_grace, &mut fut).await.ok()
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let id = c.to_string();
        let slot = self.slots.get_mut(&c).expect("due connectors are known");
        let mut attempt = Attempt {
            connector: c,
            db: db.clone(),
            result: Outcome::Failed,
            reason: String::new(),
            hint: None,
            key: None,
            consecutive_failures: 0,
            seconds,
        };
        match outcome {
            None => {
                tracing::warn!(connector = %c, "backup abandoned at shutdown; the key keeps the previous backup");
                attempt.result = Outcome::Abandoned;
                attempt.reason =
                    "shutdown: the upload was abandoned, the key keeps the previous backup".into();
                slot.due = Instant::now();
            }
            Some(Ok(r)) => {
                slot.consecutive_failures = 0;
                // Checked again one interval later, but no later than when the backup at
                // the key turns max_age old: else it can go one interval (plus jitter)
                // past it before it is uploaded. Never sooner than a second from now;
                // max_age 0 (upload at every check) keeps the interval.
                let age = match r.decision {
                    Decision::Uploaded => Duration::ZERO,
                    Decision::Skipped => {
                        Duration::from_secs_f64(r.previous_age_seconds.unwrap_or(0.0).max(0.0))
                    }
                };
                let mut wait = jittered(self.opts.interval, self.opts.jitter);
                if !self.opts.max_age.is_zero() {
                    let stale_in = self.opts.max_age.saturating_sub(age);
                    wait = wait.min(stale_in.max(Duration::from_secs(1)));
                }
                slot.due = Instant::now() + wait;
                let now = chrono::Utc::now();
                let mut need_size = false;
                self.metrics.update(&id, |s| {
                    s.consecutive_failures = 0;
                    match r.decision {
                        Decision::Uploaded => {
                            s.last_success = Some(now);
                            s.size_bytes = r.bytes;
                            s.duration_seconds = Some(r.seconds);
                        }
                        Decision::Skipped => {
                            let age = r.previous_age_seconds.unwrap_or(0.0);
                            s.last_success =
                                Some(now - chrono::Duration::milliseconds((age * 1000.0) as i64));
                            need_size = s.size_bytes.is_none();
                        }
                    }
                });
                if need_size {
                    // A skip says nothing about the size; one HEAD, once per connector.
                    if let Ok(key) = object_store::path::Path::parse(&r.key)
                        && let Ok(Some(info)) = self.bucket.head(&key).await
                    {
                        self.metrics.update(&id, |s| s.size_bytes = Some(info.size));
                    }
                }
                let said = match r.decision {
                    Decision::Uploaded => decisions::Decision::Uploaded,
                    Decision::Skipped => decisions::Decision::SkippedFresh,
                };
                self.log.record(&id, said, &r.reason, Some(&r.key));
                if r.decision == Decision::Uploaded {
                    tracing::debug!(connector = %c, bytes = r.bytes, seconds = r.seconds, "upload size and time");
                }
                attempt.result = match r.decision {
                    Decision::Uploaded => Outcome::Uploaded,
                    Decision::Skipped => Outcome::Skipped,
                };
                attempt.reason = r.reason;
                attempt.key = Some(r.key);
            }
            Some(Err(e)) => {
                slot.consecutive_failures += 1;
                let k = slot.consecutive_failures;
                let backoff = self
                    .opts
                    .retry_base
                    .saturating_mul(1u32 << (k - 1).min(20))
                    .min(self.opts.interval);
                slot.due = Instant::now() + jittered(backoff, self.opts.jitter);
                self.metrics.update(&id, |s| {
                    s.failures_total += 1;
                    s.consecutive_failures = k as u64;
                });
                let reason = format!(
                    "{e}{}",
                    e.hint().map(|h| format!(" (Try: {h})")).unwrap_or_default()
                );
                self.log
                    .record(&id, decisions::Decision::Error, &reason, None);
                tracing::debug!(connector = %c, db = %db.display(), consecutive_failures = k, retry_in = ?backoff, "retry scheduled");
                attempt.reason = e.to_string();
                attempt.hint = e.hint().map(str::to_string);
                attempt.consecutive_failures = k;
            }
        }
        attempt
    }

    /// Passes until `shutdown` turns true. Between passes it sleeps until the next
    /// connector is due, but never longer than a minute, so a new connector gets its
    /// first check soon after it appears.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let rescan = self.opts.interval.min(Duration::from_secs(60));
        // Why the last pass could not list the hub root: said once, not every rescan.
        let mut unlisted: Option<String> = None;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            match self.pass(&mut shutdown).await {
                Ok(r) if r.interrupted => return Ok(()),
                Ok(_) => {
                    if unlisted.take().is_some() {
                        tracing::info!(hub_root = %self.opts.hub_root.display(), "the hub root can be listed again");
                    }
                }
                // The hub root can vanish for a moment (remount); try again later.
                Err(e) => {
                    let why = e.to_string();
                    if unlisted.as_deref() == Some(why.as_str()) {
                        tracing::debug!("{why}");
                    } else {
                        tracing::error!("{why}");
                        unlisted = Some(why);
                    }
                }
            }
            let wake = self
                .next_due()
                .map_or(Instant::now() + rescan, |d| d.min(Instant::now() + rescan));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = stopped(&mut shutdown) => return Ok(()),
            }
        }
    }
}

/// `d` stretched or shortened at random by up to `fraction` of itself.
pub fn jittered(d: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 || d.is_zero() {
        return d;
    }
    d.mul_f64(1.0 + rand::random_range(-fraction..=fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_fraction() {
        let d = Duration::from_secs(3600);
        for _ in 0..200 {
            let j = jittered(d, 0.1);
            assert!(
                j >= Duration::from_secs(3240) && j <= Duration::from_secs(3960),
                "{j:?}"
            );
        }
        assert_eq!(jittered(d, 0.0), d);
    }

    #[test]
    fn discovery_takes_only_id_named_directories_holding_a_database() {
        let hub = tempfile::tempdir().unwrap();
        let id = ConnectorId::random();
        std::fs::create_dir_all(hub.path().join(id.to_string())).unwrap();
        std::fs::write(hub.path().join(id.to_string()).join(DB_FILE), b"x").unwrap();
        std::fs::create_dir_all(hub.path().join(ConnectorId::random().to_string())).unwrap();
        std::fs::create_dir_all(hub.path().join("lost+found")).unwrap();
        std::fs::write(hub.path().join("notes.txt"), b"x").unwrap();
        let found = discover(hub.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].connector, id);
    }
}
