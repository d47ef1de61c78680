//! The trigger controller's notion of "now".
//!
//! Every time-based decision (schedule, cooldown, settle periods) reads [`Clock::now`], never
//! the system clock directly, so tests can move time with a [`ManualClockHandle`] instead of
//! waiting real minutes. Moving a manual clock reconciles every trigger.

use std::sync::Arc;

use futures::Stream;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// Wall-clock time for the trigger controller: the system clock, or a manual one for tests.
#[derive(Clone, Debug)]
pub struct Clock(Inner);

#[derive(Clone, Debug)]
enum Inner {
    System,
    Manual(Arc<watch::Sender<Timestamp>>),
}

impl Clock {
    /// The system's real time.
    pub fn system() -> Self {
        Clock(Inner::System)
    }

    /// A clock that stands still at `start` until the returned handle moves it.
    pub fn manual(start: Timestamp) -> (Clock, ManualClockHandle) {
        let (tx, _rx) = watch::channel(start);
        let tx = Arc::new(tx);
        (Clock(Inner::Manual(tx.clone())), ManualClockHandle(tx))
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            Inner::System => Timestamp::now(),
            Inner::Manual(tx) => *tx.borrow(),
        }
    }

    /// Yields once after each change of a manual clock (changes in a burst may yield once);
    /// never yields for the system clock.
    pub(crate) fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        let rx = match &self.0 {
            Inner::System => None,
            Inner::Manual(tx) => Some(tx.subscribe()),
        };
        futures::stream::unfold(rx, |rx| async move {
            match rx {
                Some(mut rx) => {
                    rx.changed().await.ok()?;
                    Some(((), Some(rx)))
                }
                None => futures::future::pending().await,
            }
        })
    }
}

/// Moves a manual [`Clock`] (tests).
#[derive(Clone, Debug)]
pub struct ManualClockHandle(Arc<watch::Sender<Timestamp>>);

impl ManualClockHandle {
    pub fn now(&self) -> Timestamp {
        *self.0.borrow()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        self.0
            .send_modify(|t| *t = t.saturating_add(by).unwrap_or(Timestamp::MAX));
    }

    /// Sets the clock to `to` (it may go backwards, as real clocks sometimes do).
    pub fn set(&self, to: Timestamp) {
        self.0.send_replace(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_told_and_announces_it() {
        let start: Timestamp = "2030-01-01T00:00:00Z".parse().expect("timestamp");
        let (clock, handle) = Clock::manual(start);
        let mut changes = Box::pin(clock.changes());
        assert_eq!(clock.now(), start);
        handle.advance(std::time::Duration::from_secs(90));
        assert_eq!(
            clock.now(),
            "2030-01-01T00:01:30Z".parse::<Timestamp>().expect("ts")
        );
        tokio::time::timeout(std::time::Duration::from_secs(1), changes.next())
            .await
            .expect("a change is announced")
            .expect("stream continues");
        handle.set(start);
        assert_eq!(clock.now(), start);
    }
}
