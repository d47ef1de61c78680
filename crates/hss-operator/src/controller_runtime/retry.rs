//! Backoff and the failure-streak error policy shared by the controllers: a failing object is
//! retried with per-object exponential backoff with jitter (2 s doubling to 5 min), a success
//! ends its streak, a lost write race (409) is retried at once from a fresh copy.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use kube::runtime::controller::Action;

/// How soon a lost write race (409) is retried: the next reconcile reads a fresher copy.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(500);

/// Exponential backoff with jitter for attempt `n` (1-based): 2 s doubling to 5 min.
pub fn backoff(attempts: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.saturating_sub(1).min(30) as usize)
        .unwrap_or(Duration::from_secs(300))
}

/// Consecutive reconcile failures per object (by uid).
#[derive(Debug, Default)]
pub struct FailureStreaks(Mutex<HashMap<String, u32>>);

impl FailureStreaks {
    /// A success ends the object's streak.
    pub fn succeeded(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }

    /// Counts a failure; returns the streak's length.
    pub fn failed(&self, uid: &str) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// The error policy: a lost write race is retried soon and does not count; anything else
    /// is logged with its bounded category and retried after the streak's backoff.
    pub fn on_error(&self, uid: &str, category: &str, error: &str, conflict: bool) -> Action {
        if conflict {
            tracing::debug!("write conflicted with a newer version; retrying from a fresh copy");
            return Action::requeue(CONFLICT_RETRY);
        }
        let n = self.failed(uid);
        tracing::warn!(category, error, failures = n, "reconcile failed");
        Action::requeue(backoff(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= Duration::from_secs(2) && backoff(1) < Duration::from_secs(5));
        assert!(backoff(5) >= Duration::from_secs(32));
        assert!(backoff(1000) <= Duration::from_secs(600));
    }

    #[test]
    fn a_streak_grows_with_failures_and_ends_with_a_success() {
        let s = FailureStreaks::default();
        assert_eq!(s.failed("a"), 1);
        assert_eq!(s.failed("a"), 2);
        assert_eq!(s.failed("b"), 1);
        s.succeeded("a");
        assert_eq!(s.failed("a"), 1);
        assert_eq!(
            s.on_error("c", "kube", "boom", true),
            Action::requeue(CONFLICT_RETRY),
            "a conflict is not a failure"
        );
        assert_eq!(s.failed("c"), 1);
    }
}
