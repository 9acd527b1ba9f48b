//! The agent's Prometheus metrics: per connector, when its backup was last known good,
//! how old that is, its size, how long the last upload took, and how often it failed.
//!
//! The text exposition format is written by hand and served by a tiny HTTP server on a
//! tokio `TcpListener`: a metrics endpoint answers one GET, and a client library plus an
//! HTTP framework would cost more build time than the whole of this file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::shutdown::stopped;

/// What the agent knows about one connector's backup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Last-modified time of the backup at the canonical key, as of the last successful
    /// check or upload.
    pub last_success: Option<chrono::DateTime<chrono::Utc>>,
    pub size_bytes: Option<u64>,
    /// Wall time of the last upload this agent made (a skip does not change it).
    pub duration_seconds: Option<f64>,
    pub failures_total: u64,
    pub consecutive_failures: u64,
    pub capture: CaptureSeries,
}

/// Continuous capture of one connector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaptureSeries {
    /// Observed time of the newest commit uploaded.
    pub last_commit: Option<chrono::DateTime<chrono::Utc>>,
    /// When the oldest commit not yet uploaded was observed (None: nothing pending).
    pub pending_since: Option<chrono::DateTime<chrono::Utc>>,
    pub commits_total: u64,
    pub resyncs_total: u64,
    pub bases_total: u64,
    /// Bytes of this connector's bases (segments are counted per hub).
    pub bytes_total: u64,
    /// Time SHARED locks were held on a rollback-journal database.
    pub lock_seconds_total: f64,
    /// Since when a change seen could not be captured (a hot journal, a writer holding
    /// its lock), and why; None while capture keeps up.
    pub blocked_since: Option<chrono::DateTime<chrono::Utc>>,
    pub blocked_why: Option<String>,
}

/// Shared between the agent loop (writer) and the HTTP server (reader).
#[derive(Debug)]
pub struct Metrics {
    org: String,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    connectors: BTreeMap<String, Series>,
    passes_total: u64,
    segments_total: u64,
    segment_bytes_total: u64,
}

impl Metrics {
    pub fn new(org: &str) -> Arc<Metrics> {
        Arc::new(Metrics {
            org: org.to_string(),
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn update(&self, connector: &str, f: impl FnOnce(&mut Series)) {
        let mut inner = self.inner.lock().expect("metrics lock is never poisoned");
        f(inner.connectors.entry(connector.to_string()).or_default());
    }

    pub fn get(&self, connector: &str) -> Option<Series> {
        let inner = self.inner.lock().expect("metrics lock is never poisoned");
        inner.connectors.get(connector).cloned()
    }

    /// Forgets connectors that are no longer on the hub, so their series disappear
    /// instead of aging forever and firing stale-backup alerts.
    pub fn retain(&self, present: &BTreeSet<String>) {
        let mut inner = self.inner.lock().expect("metrics lock is never poisoned");
        inner.connectors.retain(|c, _| present.contains(c));
    }

    /// A hub segment was uploaded.
    pub fn hub_segment(&self, bytes: u64) {
        let mut inner = self.inner.lock().expect("metrics lock is never poisoned");
        inner.segments_total += 1;
        inner.segment_bytes_total += bytes;
    }

    pub fn pass_done(&self) {
        self.inner
            .lock()
            .expect("metrics lock is never poisoned")
            .passes_total += 1;
    }

    /// The Prometheus text exposition (format 0.0.4) as of `now`.
    pub fn render(&self, now: chrono::DateTime<chrono::Utc>) -> String {
        let inner = self.inner.lock().expect("metrics lock is never poisoned");
        let mut out = String::new();
        let labels = |c: &str| {
            format!(
                "{{org=\"{}\",connector=\"{}\"}}",
                escape(&self.org),
                escape(c)
            )
        };
        type Pick = fn(&Series, chrono::DateTime<chrono::Utc>) -> Option<f64>;
        let families: [(&str, &str, &str, Pick); 14] = [
            (
                "hubvault_backup_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the connector's backup at the canonical key, as last seen good.",
                |s, _| s.last_success.map(|t| t.timestamp_millis() as f64 / 1000.0),
            ),
            (
                "hubvault_backup_age_seconds",
                "gauge",
                "Age of the connector's backup at the canonical key.",
                |s, now| {
                    s.last_success
                        .map(|t| ((now - t).num_milliseconds().max(0)) as f64 / 1000.0)
                },
            ),
            (
                "hubvault_backup_size_bytes",
                "gauge",
                "Size of the connector's backup (plain SQLite file).",
                |s, _| s.size_bytes.map(|b| b as f64),
            ),
            (
                "hubvault_backup_duration_seconds",
                "gauge",
                "Wall time of the last upload of the connector's backup by this agent.",
                |s, _| s.duration_seconds,
            ),
            (
                "hubvault_backup_failures_total",
                "counter",
                "Failed backup attempts of the connector since the agent started.",
                |s, _| Some(s.failures_total as f64),
            ),
            (
                "hubvault_backup_consecutive_failures",
                "gauge",
                "Failed backup attempts of the connector since its last success.",
                |s, _| Some(s.consecutive_failures as f64),
            ),
            (
                "hubvault_capture_last_commit_timestamp_seconds",
                "gauge",
                "Unix time (observed) of the newest commit of the connector in the bucket.",
                |s, _| {
                    s.capture
                        .last_commit
                        .map(|t| t.timestamp_millis() as f64 / 1000.0)
                },
            ),
            (
                "hubvault_capture_lag_seconds",
                "gauge",
                "Age of the oldest captured commit not yet in the bucket (0: none waiting).",
                |s, now| {
                    Some(s.capture.pending_since.map_or(0.0, |t| {
                        ((now - t).num_milliseconds().max(0)) as f64 / 1000.0
                    }))
                },
            ),
            (
                "hubvault_capture_blocked_seconds",
                "gauge",
                "How long changes of the connector have been seen but could not be captured (a hot journal, a writer holding its lock; the agent's log says which); 0: capture keeps up.",
                |s, now| {
                    Some(s.capture.blocked_since.map_or(0.0, |t| {
                        ((now - t).num_milliseconds().max(0)) as f64 / 1000.0
                    }))
                },
            ),
            (
                "hubvault_capture_commits_total",
                "counter",
                "Commits of the connector uploaded by continuous capture.",
                |s, _| Some(s.capture.commits_total as f64),
            ),
            (
                "hubvault_capture_resyncs_total",
                "counter",
                "Times continuity could not be proven and a fresh image was diffed in.",
                |s, _| Some(s.capture.resyncs_total as f64),
            ),
            (
                "hubvault_capture_bases_total",
                "counter",
                "Bases (full images that start a chain) uploaded for the connector.",
                |s, _| Some(s.capture.bases_total as f64),
            ),
            (
                "hubvault_capture_base_bytes_total",
                "counter",
                "Bytes of the connector's bases uploaded.",
                |s, _| Some(s.capture.bytes_total as f64),
            ),
            (
                "hubvault_capture_lock_seconds_total",
                "counter",
                "Time SHARED locks were held on a rollback-journal database by capture.",
                |s, _| Some(s.capture.lock_seconds_total),
            ),
        ];
        for (name, kind, help, pick) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (c, s) in &inner.connectors {
                if let Some(v) = pick(s, now) {
                    let _ = writeln!(out, "{name}{} {}", labels(c), number(v));
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP hubvault_agent_connectors Connectors the agent found under the hub root."
        );
        let _ = writeln!(out, "# TYPE hubvault_agent_connectors gauge");
        let _ = writeln!(out, "hubvault_agent_connectors {}", inner.connectors.len());
        let _ = writeln!(
            out,
            "# HELP hubvault_agent_passes_total Passes over the hub's connectors since the agent started."
        );
        let _ = writeln!(out, "# TYPE hubvault_agent_passes_total counter");
        let _ = writeln!(out, "hubvault_agent_passes_total {}", inner.passes_total);
        let _ = writeln!(
            out,
            "# HELP hubvault_capture_segments_total Hub segments uploaded by continuous capture."
        );
        let _ = writeln!(out, "# TYPE hubvault_capture_segments_total counter");
        let _ = writeln!(
            out,
            "hubvault_capture_segments_total {}",
            inner.segments_total
        );
        let _ = writeln!(
            out,
            "# HELP hubvault_capture_segment_bytes_total Bytes of hub segments uploaded."
        );
        let _ = writeln!(out, "# TYPE hubvault_capture_segment_bytes_total counter");
        let _ = writeln!(
            out,
            "hubvault_capture_segment_bytes_total {}",
            inner.segment_bytes_total
        );
        out
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values escape backslash, double quote and newline (exposition format rules).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true. Any other path is a
/// 404; a client that sends nothing for 5 s is dropped, so a stuck scraper cannot pile
/// up connections.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut shutdown) => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                tracing::debug!("metrics: {peer} sent no request");
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let line = head.lines().next().unwrap_or("");
            let mut parts = line.split(' ');
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, ctype, body) =
                if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics.render(chrono::Utc::now()),
                    )
                } else {
                    (
                        "404 Not Found",
                        "text/plain; charset=utf-8",
                        "hubvault agent: metrics are at GET /metrics\n".to_string(),
                    )
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_has_one_sample_per_known_value_and_escapes_labels() {
        let m = Metrics::new("acme");
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-24T07:00:00Z")
            .unwrap()
            .to_utc();
        m.update("a\"b", |s| {
            s.last_success = Some(t);
            s.size_bytes = Some(4096);
            s.failures_total = 2;
        });
        let text = m.render(t + chrono::Duration::seconds(90));
        assert!(
            text.contains("hubvault_backup_age_seconds{org=\"acme\",connector=\"a\\\"b\"} 90\n"),
            "{text}"
        );
        assert!(
            text.contains("hubvault_backup_size_bytes{org=\"acme\",connector=\"a\\\"b\"} 4096\n")
        );
        assert!(
            text.contains("hubvault_backup_failures_total{org=\"acme\",connector=\"a\\\"b\"} 2\n")
        );
        assert!(
            !text.contains("hubvault_backup_duration_seconds{"),
            "{text}"
        );
        m.retain(&BTreeSet::new());
        assert!(!m.render(t).contains("connector="));
    }
}
