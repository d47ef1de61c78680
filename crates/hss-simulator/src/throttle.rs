//! The gateway's flow control: a sliding window of arrival times per (user, API).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// At most `limit` accepted calls whose arrival is later than `now - window`. Rejected calls are
/// not recorded, so a client that waits as told by Retry-After gets through.
pub(crate) struct SlidingWindow<K> {
    limit: usize,
    window: Duration,
    arrivals: HashMap<K, VecDeque<Instant>>,
}

impl<K: Hash + Eq> SlidingWindow<K> {
    /// `limit == 0` turns throttling off.
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            window,
            arrivals: HashMap::new(),
        }
    }

    /// Records the call and returns `Ok`, or returns how long until a slot frees.
    pub(crate) fn check(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let queue = self.arrivals.entry(key).or_default();
        while queue
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            queue.pop_front();
        }
        if queue.len() < self.limit {
            queue.push_back(now);
            return Ok(());
        }
        let oldest = queue.front().copied().unwrap_or(now);
        Err((oldest + self.window).saturating_duration_since(now))
    }
}

/// Retry-After in whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_sixth_call_within_a_minute_is_rejected_until_the_oldest_leaves_the_window() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(5, MINUTE);
        for i in 0..5 {
            assert_eq!(w.check("ak", t0 + Duration::from_secs(i * 10)), Ok(()));
        }
        let at = t0 + Duration::from_secs(45);
        assert_eq!(w.check("ak", at), Err(Duration::from_secs(15)));
        // Exactly 60 s after the first arrival it no longer counts ("arrival > now - 60 s").
        assert!(
            w.check("ak", t0 + MINUTE - Duration::from_millis(1))
                .is_err()
        );
        assert_eq!(w.check("ak", t0 + MINUTE), Ok(()));
        assert!(
            w.check("ak", t0 + MINUTE).is_err(),
            "the second slot frees at 70 s"
        );
        assert_eq!(w.check("ak", t0 + Duration::from_secs(70)), Ok(()));
    }

    #[test]
    fn keys_are_independent_and_rejections_are_not_recorded() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(1, MINUTE);
        assert_eq!(w.check(("ak", 1), t0), Ok(()));
        assert_eq!(
            w.check(("ak", 2), t0),
            Ok(()),
            "another API has its own window"
        );
        assert_eq!(w.check(("other", 1), t0), Ok(()), "another user too");
        for s in 1..30 {
            assert!(w.check(("ak", 1), t0 + Duration::from_secs(s)).is_err());
        }
        assert_eq!(w.check(("ak", 1), t0 + MINUTE), Ok(()));
    }

    #[test]
    fn a_zero_limit_turns_throttling_off() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(0, MINUTE);
        assert!((0..1000).all(|_| w.check("ak", t0).is_ok()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(14_001)), 15);
        assert_eq!(retry_after_secs(Duration::from_secs(15)), 15);
    }
}
