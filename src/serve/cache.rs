//! A value read from the bucket, kept for the refresh interval, and refreshed by at most
//! one reader at a time however many pages load at once (single flight).
//!
//! The rule: a reader that finds the value younger than the interval takes it. Otherwise
//! it queues on the slot's lock; the first in line refreshes, and everyone who was
//! already waiting when that refresh finished takes its result instead of refreshing
//! again (the generation tells them), even with an interval of zero. A failed refresh is
//! kept for the interval too, beside the last good value, so a bucket that is down is not
//! asked again by every page load.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Error;

/// An error as a page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub error: String,
    pub hint: Option<String>,
    pub at: DateTime<Utc>,
    /// True if and only if the bucket said there is nothing there (a 404, not an outage).
    #[serde(skip)]
    pub not_found: bool,
}

impl Failure {
    pub fn of(e: &Error) -> Failure {
        let mut error = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            let text = s.to_string();
            if !error.contains(&text) {
                error.push_str(": ");
                error.push_str(&text);
            }
            src = s.source();
        }
        Failure {
            error,
            hint: e.hint().map(str::to_string),
            at: Utc::now(),
            not_found: e.is_not_found(),
        }
    }
}

/// What a reader gets: the newest good value (if any) and, if the last refresh failed,
/// why.
pub struct Got<T> {
    pub value: Option<Arc<T>>,
    pub failure: Option<Arc<Failure>>,
}

struct Slot<T> {
    value: Option<Arc<T>>,
    failure: Option<Arc<Failure>>,
    at: Option<Instant>,
    generation: u64,
}

pub struct Cache<T> {
    refresh: Duration,
    slot: tokio::sync::Mutex<Slot<T>>,
    /// Refreshes finished; read before queueing, so a reader can tell that one finished
    /// while it waited.
    generation: AtomicU64,
    /// Refreshes started, for tests and the benchmark.
    loads: AtomicU64,
}

impl<T> Cache<T> {
    pub fn new(refresh: Duration) -> Cache<T> {
        Cache {
            refresh,
            slot: tokio::sync::Mutex::new(Slot {
                value: None,
                failure: None,
                at: None,
                generation: 0,
            }),
            generation: AtomicU64::new(0),
            loads: AtomicU64::new(0),
        }
    }

    /// How many refreshes this cache has started.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The value, refreshed with `load` when it is older than the interval and no
    /// refresh finished while this reader waited.
    ///
    /// Cancelling the returned future while it loads abandons that refresh: callers that
    /// may be cancelled (a request whose client went away) run it in a task of its own.
    pub async fn get<F, Fut>(&self, load: F) -> Got<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = crate::error::Result<T>>,
    {
        self.get_after(self.generation.load(Ordering::Acquire), load)
            .await
    }

    /// [`Cache::get`] for a reader that read the generation `seen` when it arrived.
    async fn get_after<F, Fut>(&self, seen: u64, load: F) -> Got<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = crate::error::Result<T>>,
    {
        let mut slot = self.slot.lock().await;
        let young = slot.at.is_some_and(|at| at.elapsed() < self.refresh);
        if !(young || slot.generation != seen) {
            self.loads.fetch_add(1, Ordering::Relaxed);
            match load().await {
                Ok(v) => {
                    slot.value = Some(Arc::new(v));
                    slot.failure = None;
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    slot.failure = Some(Arc::new(Failure::of(&e)));
                }
            }
            slot.at = Some(Instant::now());
            slot.generation += 1;
            self.generation.store(slot.generation, Ordering::Release);
        }
        Got {
            value: slot.value.clone(),
            failure: slot.failure.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_share_one_refresh() {
        let cache = Arc::new(Cache::<u64>::new(Duration::from_secs(3600)));
        let calls = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..50)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .get(|| async move {
                            // Long enough that the others queue behind it.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok(calls.fetch_add(1, Ordering::SeqCst) + 1)
                        })
                        .await
                        .value
                        .map(|v| *v)
                })
            })
            .collect();
        for r in readers {
            assert_eq!(r.await.unwrap(), Some(1));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.loads(), 1);
    }

    #[tokio::test]
    async fn a_reader_that_waited_through_a_refresh_takes_it_even_with_a_zero_interval() {
        let cache = Cache::<u64>::new(Duration::ZERO);
        // Arrives (reads the generation) while the first refresh is under way...
        let waiting = cache.generation.load(Ordering::Acquire);
        assert_eq!(*cache.get(|| async { Ok(1) }).await.value.unwrap(), 1);
        // ...and gets the lock after it: it takes that refresh's value.
        let v = cache.get_after(waiting, || async { Ok(2) }).await;
        assert_eq!(*v.value.unwrap(), 1);
        assert_eq!(cache.loads(), 1);
        // A reader that arrives after it, with a zero interval, refreshes again.
        assert_eq!(*cache.get(|| async { Ok(3) }).await.value.unwrap(), 3);
        assert_eq!(cache.loads(), 2);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_good_value_and_is_not_retried_within_the_interval() {
        let cache = Cache::<u32>::new(Duration::from_secs(3600));
        let v = cache.get(|| async { Ok(7) }).await;
        assert_eq!(v.value.as_deref(), Some(&7));
        // Within the interval: no load at all.
        let v = cache
            .get(|| async { Err::<u32, _>(Error::check("boom", "x")) })
            .await;
        assert_eq!(v.value.as_deref(), Some(&7));
        assert!(v.failure.is_none());
        assert_eq!(cache.loads(), 1);

        let cache = Cache::<u32>::new(Duration::ZERO);
        cache.get(|| async { Ok(7) }).await;
        let v = cache
            .get(|| async { Err::<u32, _>(Error::check("bucket down", "wait")) })
            .await;
        assert_eq!(v.value.as_deref(), Some(&7));
        assert_eq!(v.failure.unwrap().error, "bucket down");
    }
}
