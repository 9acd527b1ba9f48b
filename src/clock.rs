//! Time as a value passed in: the capture and compaction code ask a [`Clock`] for "now"
//! instead of the system, so a test can drive a day of capture in seconds
//! ([`ManualClock`]) and production uses [`SystemClock`].
//!
//! Only wall-clock instants that end up in the bucket (commit times, segment and window
//! keys, bases) come from the clock. Waits between ticks stay on the runtime's own timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub type Time = chrono::DateTime<chrono::Utc>;

/// The clock skew S3 tolerates, less a minute: a request signed 15 minutes off is refused,
/// so an instant later than this past now was stamped by no clock S3 took a write from
/// (doctor's problem threshold; status, serve and restore-hub leave such stamps out of
/// "now").
pub const SKEW_PROBLEM: std::time::Duration = std::time::Duration::from_secs(14 * 60);

/// Where "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Time;

    fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }
}

/// A clock shared by the tasks of one agent.
pub type SharedClock = Arc<dyn Clock>;

/// The system's UTC clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        chrono::Utc::now()
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to (tests, simulations). Millisecond precision, as
/// everything the stream stores.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    pub fn new(at: Time) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            ms: AtomicI64::new(at.timestamp_millis()),
        })
    }

    pub fn set(&self, at: Time) {
        self.ms.store(at.timestamp_millis(), Ordering::SeqCst);
    }

    pub fn advance(&self, by: chrono::TimeDelta) {
        self.ms.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        chrono::DateTime::from_timestamp_millis(self.ms.load(Ordering::SeqCst)).unwrap_or_default()
    }
}

/// A clock that never goes back: when `inner` does (an NTP step, a VM resumed, an
/// operator's `date -s`), it keeps giving the highest instant it gave until `inner`
/// catches up, and logs one warning per step back of a second or more. Capture stamps
/// commits, segments and bases with it: a segment stamped before the one sent ahead of
/// it would sort into a window already compacted, or before the generation's base,
/// where no restore reads it.
#[derive(Debug)]
pub struct Monotonic {
    inner: SharedClock,
    high: AtomicI64,
    warned: std::sync::atomic::AtomicBool,
}

/// `inner`, never going back ([`Monotonic`]).
pub fn monotonic(inner: SharedClock) -> Arc<Monotonic> {
    Arc::new(Monotonic {
        inner,
        high: AtomicI64::new(i64::MIN),
        warned: std::sync::atomic::AtomicBool::new(false),
    })
}

impl Monotonic {
    /// Never gives an instant before `ms` from now on: what this clock stamps must sort
    /// after what is already in the bucket, even when the system clock is behind it
    /// (a restart after the clock was set back). Silent: the caller says why.
    pub fn raise_to(&self, ms: i64) {
        if self.high.fetch_max(ms, Ordering::SeqCst) < ms {
            // The step back is the bucket's, told by the caller: no second warning.
            self.warned.store(true, Ordering::SeqCst);
        }
    }

    fn keep(&self, ms: i64) -> i64 {
        let high = self.high.fetch_max(ms, Ordering::SeqCst);
        if ms >= high {
            self.warned.store(false, Ordering::SeqCst);
            return ms;
        }
        if high - ms >= 1000 && !self.warned.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                behind_ms = high - ms,
                "the system clock went back: capture keeps stamping commits and segments at the newest instant it stamped until the clock catches up"
            );
        }
        high
    }
}

impl Clock for Monotonic {
    // `now` and `now_ms` each ask `inner` the same question (a test's clock may tell
    // them apart).
    fn now(&self) -> Time {
        let t = self.inner.now();
        let ms = self.keep(t.timestamp_millis());
        if ms == t.timestamp_millis() {
            t
        } else {
            chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
        }
    }

    fn now_ms(&self) -> i64 {
        self.keep(self.inner.now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let t0 = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let c = ManualClock::new(t0);
        assert_eq!(c.now(), t0);
        c.advance(chrono::TimeDelta::seconds(90));
        assert_eq!(c.now_ms(), t0.timestamp_millis() + 90_000);
        c.set(t0);
        assert_eq!(c.now(), t0);
    }

    #[test]
    fn a_monotonic_clock_never_goes_back_and_follows_again_once_caught_up() {
        let t0 = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let manual = ManualClock::new(t0);
        let c = monotonic(manual.clone());
        assert_eq!(c.now(), t0);
        manual.advance(chrono::TimeDelta::hours(-1));
        assert_eq!(c.now(), t0);
        assert_eq!(c.now_ms(), t0.timestamp_millis());
        manual.set(t0 + chrono::TimeDelta::milliseconds(5));
        assert_eq!(c.now_ms(), t0.timestamp_millis() + 5);
    }
}
