//! Time as a value passed in: the capture and compaction code ask a [`Clock`] for "now"
//! instead of the system, so a test can drive a day of capture in seconds
//! ([`ManualClock`]) and production uses [`SystemClock`].
//!
//! Only wall-clock instants that end up in the bucket (commit times, segment and window
//! keys, bases) come from the clock. Waits between ticks stay on the runtime's own timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub type Time = chrono::DateTime<chrono::Utc>;

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
}
