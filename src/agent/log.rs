//! The agent's decision log: one line per decision it makes about a connector, that an
//! operator can read and a log shipper can index, without the same line every tick.
//!
//! Each line carries the fields `connector`, `decision` (`uploaded`, `skipped_fresh`,
//! `captured`, `error`) and `reason`; with `--log-format json` they are JSON fields.
//! Errors are logged at warn, the rest at info. A decision that repeats the last one
//! logged for the same connector (for an error: with the same reason) within
//! `repeat_after` goes to debug instead: an hourly "skipped (fresh)" is said once, then
//! again when something changes or once a `repeat_after` as a sign of life. An upload is
//! always said: each one is an event.
//!
//! Continuous capture says "captured N commits" through [`DecisionLog::record`] with
//! [`Decision::Captured`]: a connector capturing every tick then logs one line a
//! `repeat_after`, not one a tick.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the agent decided about one connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    Uploaded,
    SkippedFresh,
    Captured,
    Error,
}

impl Decision {
    /// The value of the `decision` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Uploaded => "uploaded",
            Decision::SkippedFresh => "skipped_fresh",
            Decision::Captured => "captured",
            Decision::Error => "error",
        }
    }

    /// The start of the line's message.
    fn words(self) -> &'static str {
        match self {
            Decision::Uploaded => "uploaded",
            Decision::SkippedFresh => "skipped (fresh)",
            Decision::Captured => "captured",
            Decision::Error => "backup failed",
        }
    }
}

/// Default for [`DecisionLog::new`]: a repeated decision is said again once a day.
pub const DEFAULT_REPEAT_AFTER: Duration = Duration::from_secs(24 * 3600);

struct Said {
    decision: Decision,
    reason: String,
    at: Instant,
}

/// Remembers the last line said per connector. Shared by reference (`&self`): the
/// scheduler and continuous capture may both record.
pub struct DecisionLog {
    repeat_after: Duration,
    last: Mutex<HashMap<String, Said>>,
}

impl DecisionLog {
    pub fn new(repeat_after: Duration) -> DecisionLog {
        DecisionLog {
            repeat_after,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Logs the decision (see the module's rules). `key` is the object concerned, if
    /// any. Returns true if and only if the line went out at info or warn.
    pub fn record(
        &self,
        connector: &str,
        decision: Decision,
        reason: &str,
        key: Option<&str>,
    ) -> bool {
        let loud = self.should_say(connector, decision, reason, Instant::now());
        let d = decision.as_str();
        let key = key.unwrap_or("");
        match (loud, decision) {
            (true, Decision::Error) => tracing::warn!(
                connector,
                decision = d,
                reason,
                key,
                "{}: {reason}",
                decision.words()
            ),
            (true, _) => tracing::info!(
                connector,
                decision = d,
                reason,
                key,
                "{}: {reason}",
                decision.words()
            ),
            (false, _) => tracing::debug!(
                connector,
                decision = d,
                reason,
                key,
                "{} (again): {reason}",
                decision.words()
            ),
        }
        loud
    }

    /// Forgets a connector (removed from the hub): its next decision is said.
    pub fn forget(&self, connector: &str) {
        self.last.lock().unwrap().remove(connector);
    }

    /// True if and only if this decision is to be said out loud at `now`; remembers it
    /// if so.
    fn should_say(&self, connector: &str, decision: Decision, reason: &str, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap();
        let repeat = last.get(connector).is_some_and(|s| {
            s.decision == decision
                && decision != Decision::Uploaded
                && (decision != Decision::Error || s.reason == reason)
                && now.saturating_duration_since(s.at) < self.repeat_after
        });
        if !repeat {
            last.insert(
                connector.to_string(),
                Said {
                    decision,
                    reason: reason.to_string(),
                    at: now,
                },
            );
        }
        !repeat
    }
}

impl Default for DecisionLog {
    fn default() -> Self {
        DecisionLog::new(DEFAULT_REPEAT_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_decision_is_said_once_then_again_on_change_or_after_the_repeat_time() {
        let log = DecisionLog::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let skip = Decision::SkippedFresh;
        assert!(log.should_say("c1", skip, "backup is 1h old", at(0)));
        // Every tick after: the same decision, another age: quiet.
        assert!(!log.should_say("c1", skip, "backup is 2h old", at(60)));
        assert!(!log.should_say("c1", skip, "backup is 3h old", at(120)));
        // Another connector has its own line.
        assert!(log.should_say("c2", skip, "backup is 1h old", at(120)));
        // A change is said, and so is the first skip after it.
        assert!(log.should_say("c1", Decision::Uploaded, "older than 24h", at(180)));
        assert!(log.should_say("c1", skip, "fresh", at(240)));
        // Uploads are always said.
        assert!(log.should_say("c1", Decision::Uploaded, "x", at(300)));
        assert!(log.should_say("c1", Decision::Uploaded, "x", at(301)));
        // After the repeat time, a sign of life.
        assert!(log.should_say("c1", skip, "fresh", at(400)));
        assert!(!log.should_say("c1", skip, "fresh", at(401)));
        assert!(log.should_say("c1", skip, "fresh", at(400 + 3600)));
    }

    #[test]
    fn errors_are_said_again_when_their_reason_changes() {
        let log = DecisionLog::new(Duration::from_secs(3600));
        let t = Instant::now();
        let e = Decision::Error;
        assert!(log.should_say("c", e, "database is locked", t));
        assert!(!log.should_say("c", e, "database is locked", t));
        assert!(log.should_say("c", e, "disk full", t));
        log.forget("c");
        assert!(log.should_say("c", e, "disk full", t));
        let cap = Decision::Captured;
        assert!(log.should_say("c", cap, "captured 3 commits", t));
        assert!(!log.should_say("c", cap, "captured 5 commits", t));
    }
}
