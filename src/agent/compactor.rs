//! The agent's background compaction and retention of the continuous stream of every hub
//! its capture writes to ([`crate::ops::compact`]).
//!
//! - It knows what capture wrote and which segment is still being sent
//!   ([`StreamProgress`]): a minute is compacted a moment after it ends, without a LIST,
//!   and the minute being captured gets a partial minute every pass while busy;
//!   the hub's stream is listed once at start and again every hour (objects other
//!   processes wrote or deleted, such as `hubvault prune`).
//! - Retention runs every hour with the agent's `--keep-within`.
//! - Low priority: [`spawn`] runs it on a thread of its own at the lowest CPU priority
//!   (nice 19), with its own runtime and bucket client; the hub's cores belong to the
//!   connectors. Memory is bounded by what one window holds: the segments of a minute,
//!   the pages of a mark, one connector's image for a base.
//! - Time comes from the [`Clock`] passed in, so a test drives a day in seconds with
//!   [`BackgroundCompactor::pass`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::agent::capture::StreamProgress;
use crate::agent::shutdown::stopped;
use crate::clock::{SharedClock, Time};
use crate::error::Result;
use crate::model::ids::{DatahubId, OrgSlug};
use crate::ops::compact::{self, CompactReport, Compactor, RetainReport};
use crate::store::Bucket;

/// How often a pass runs.
pub const PASS_EVERY: Duration = Duration::from_secs(10);
/// How often the hub's stream is listed again, and retention applied.
pub const RELOAD_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

#[derive(Clone, Debug)]
pub struct CompactorOptions {
    pub org: OrgSlug,
    /// The continuous window kept (`--keep-within`).
    pub keep_within: Duration,
    pub clock: SharedClock,
    /// How often a pass runs: [`PASS_EVERY`], shorter only in tests
    /// (`HUBVAULT_COMPACT_EVERY`, so a test can kill the agent mid-pass within seconds).
    pub pass_every: Duration,
}

struct HubState {
    compactor: Compactor,
    loaded: Time,
    retained: Option<Time>,
}

/// What one pass did for one hub.
#[derive(Debug, Default)]
pub struct PassReport {
    pub compacted: Vec<CompactReport>,
    pub retained: Vec<RetainReport>,
}

pub struct BackgroundCompactor {
    bucket: Bucket,
    opts: CompactorOptions,
    progress: Arc<StreamProgress>,
    hubs: BTreeMap<DatahubId, HubState>,
    /// Problems already logged (each once, not every pass).
    logged: std::collections::BTreeSet<String>,
    /// Where day bases are built (`None`: the system's temp directory).
    tmp_dir: Option<std::path::PathBuf>,
}

impl BackgroundCompactor {
    pub fn new(bucket: Bucket, opts: CompactorOptions, progress: Arc<StreamProgress>) -> Self {
        BackgroundCompactor {
            bucket,
            opts,
            progress,
            hubs: BTreeMap::new(),
            logged: Default::default(),
            tmp_dir: None,
        }
    }

    fn keep_within(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.opts.keep_within).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// One pass over every hub capture writes to: compaction of what is finished, and
    /// retention when an hour has passed since the last.
    pub async fn pass(&mut self) -> PassReport {
        let mut report = PassReport::default();
        for hub in self.progress.hubs() {
            match self.pass_hub(hub).await {
                Ok((c, r)) => {
                    for p in c
                        .problems
                        .iter()
                        .chain(r.iter().flat_map(|r| r.problems.iter()))
                    {
                        if self.logged.insert(p.clone()) {
                            tracing::warn!(datahub = %hub, "compaction: {p}");
                        }
                    }
                    if c.minutes + c.marks + c.bases + c.bases_copied > 0 {
                        tracing::debug!(datahub = %hub, minutes = c.minutes, segments = c.segments_merged,
                            marks = c.marks, bases = c.bases, copied = c.bases_copied, "compaction pass");
                    }
                    if c.bases + c.bases_copied > 0 {
                        tracing::info!(datahub = %hub, bases = c.bases, copied = c.bases_copied,
                            "compaction: day boundary bases written");
                    }
                    report.compacted.push(c);
                    if let Some(r) = r {
                        if !r.delete.is_empty() {
                            tracing::info!(datahub = %hub, deleted = r.delete.len(),
                                cutoff = %r.cutoff.map(|t| t.to_rfc3339()).unwrap_or_default(),
                                "retention: stream objects older than the continuous window deleted");
                        }
                        report.retained.push(r);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.logged.insert(msg.clone()) {
                        tracing::warn!(datahub = %hub, "compaction: {msg} (trying again)");
                    }
                }
            }
        }
        report
    }

    async fn pass_hub(&mut self, hub: DatahubId) -> Result<(CompactReport, Option<RetainReport>)> {
        let now = self.opts.clock.now();
        if !self.hubs.contains_key(&hub) {
            let mut c = Compactor::load(&self.bucket, &self.opts.org, hub).await?;
            if let Some(d) = &self.tmp_dir {
                c.set_tmp_dir(d);
            }
            self.hubs.insert(
                hub,
                HubState {
                    compactor: c,
                    loaded: now,
                    retained: None,
                },
            );
        }
        let keep = self.keep_within();
        let st = self.hubs.get_mut(&hub).expect("inserted above");
        if now - st.loaded >= RELOAD_EVERY {
            st.compactor.reload().await?;
            st.loaded = now;
        }
        // Settled first, then what was written: every segment sent before `settled` has
        // landed, and capture reports a landing and its end of flight at once, so each is
        // among the keys taken next.
        let settled = self.progress.settled(hub, now);
        for (k, n) in self.progress.take_written(hub) {
            st.compactor.learn(&k, n);
        }
        let cutoff = now.checked_sub_signed(keep).unwrap_or(Time::MIN_UTC);
        let mut c = st
            .compactor
            .compact(now, settled, Some(compact::horizon(cutoff)), false)
            .await?;
        // The minute being captured: its partial, so that a restore of an instant in it
        // reads about one pass of segments (docs/CONTINUOUS.md).
        let p = st.compactor.partial(now, settled).await?;
        c.partials += p.partials;
        c.partials_deleted += p.partials_deleted;
        c.problems.extend(p.problems);
        let r = if st.retained.is_none_or(|t| now - t >= RELOAD_EVERY) {
            st.retained = Some(now);
            Some(st.compactor.retain(cutoff, false).await?)
        } else {
            None
        };
        Ok((c, r))
    }

    /// Passes every `pass_every` ([`PASS_EVERY`]) until shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(keep_within = ?self.opts.keep_within, "stream compaction started (low priority)");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.opts.pass_every) => {}
                _ = stopped(&mut shutdown) => break,
            }
            // A pass under way at shutdown is simply dropped: every step is one atomic
            // write or delete, and the next run finishes what this one left.
            tokio::select! {
                _ = self.pass() => {}
                _ = stopped(&mut shutdown) => break,
            }
        }
        tracing::info!("stream compaction stopped");
    }
}

/// Lowers the calling thread's CPU priority to the lowest (Linux: nice is per thread).
fn lowest_priority() {
    // SAFETY: setpriority on this thread's own id; no memory is touched.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

/// Runs the compactor on a thread of its own at the lowest priority, with its own
/// runtime and its own bucket client (`open` makes it there). Returns when it stopped.
/// Day bases are built in `tmp_dir` (the agent's `--tmp-dir`; `None`: the system's).
pub fn spawn(
    open: impl FnOnce() -> Result<Bucket> + Send + 'static,
    opts: CompactorOptions,
    tmp_dir: Option<std::path::PathBuf>,
    progress: Arc<StreamProgress>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hubvault-compact".into())
        .spawn(move || {
            lowest_priority();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(lowest_priority)
                // A streamed GET or PUT holds a blocking thread (its reader or writer)
                // while the store's own file I/O needs others (a local directory).
                .max_blocking_threads(4)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("stream compaction cannot start: {e}");
                    return;
                }
            };
            let bucket = match open() {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("stream compaction cannot open the bucket: {e}");
                    return;
                }
            };
            let mut c = BackgroundCompactor::new(bucket, opts, progress);
            c.tmp_dir = tmp_dir;
            rt.block_on(c.run(shutdown));
        })
}
