//! How far HSS's clock is from ours, measured from the `Date` header of its answers.
//!
//! A lookup for the task an unanswered CreateTask may have created searches tasks by creation
//! time, which HSS stamps with its own clock. Without knowing the offset between the clocks the
//! window must reach [`CLOCK_SKEW`](super::resolve::CLOCK_SKEW) before the attempt began, and a
//! task someone created in those two minutes (a scan started before the event that caused ours)
//! could be adopted. Every answer bounds the offset: HSS wrote `Date: D` (whole seconds) at some
//! moment between our send `t0` and our receipt `t1`, so `offset = hss - ours` lies in
//! `[D - t1, D + 1 s - t0]`. The tightest bounds of recent answers give the window: HSS stamped
//! our task at or after `startedAt + low`, and before `sentBy + high`.
//!
//! # Assumptions
//! - The gateway's `Date` and HSS's task timestamps come from the same (NTP-disciplined) clock,
//!   up to [`STAMP_MARGIN`].
//! - Clocks drift slowly: bounds older than [`SAMPLE_TTL`] are forgotten, so a stepped clock
//!   heals within that time.
//!
//! # Caveats
//! - Until an answer carrying `Date` has been seen, [`Offset::window`] falls back to the wide
//!   skew; so does a set of samples whose bounds do not intersect (a clock step), which then
//!   starts over.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

/// Slack for the gap between the gateway's `Date` and the task's own timestamp.
pub const STAMP_MARGIN: Duration = Duration::from_secs(2);
/// Bounds older than this are dropped.
pub const SAMPLE_TTL: Duration = Duration::from_secs(3600);

/// Offset bounds in milliseconds (`hss - ours`), measured at `at` (our clock, epoch ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub low_ms: i64,
    pub high_ms: i64,
    at_ms: i64,
}

/// Shared by every clone of a client: the current bounds of the offset to one HSS endpoint.
#[derive(Debug, Clone, Default)]
pub struct Offset {
    bounds: Arc<Mutex<Option<Bounds>>>,
}

impl Offset {
    /// One answer: sent at `sent_ms`, received at `received_ms` (our clock, epoch ms), with
    /// the `Date` header value `date` (an HTTP-date). An unreadable date is ignored.
    pub fn observe(&self, date: &str, sent_ms: i64, received_ms: i64) {
        let Some(sample) = sample(date, sent_ms, received_ms) else {
            return;
        };
        let mut bounds = self.bounds.lock().unwrap_or_else(|e| e.into_inner());
        *bounds = Some(merge(*bounds, sample));
    }

    /// The current bounds, if fresh ones exist at `now_ms`.
    pub fn bounds(&self, now_ms: i64) -> Option<Bounds> {
        let bounds = *self.bounds.lock().unwrap_or_else(|e| e.into_inner());
        bounds.filter(|b| now_ms - b.at_ms < SAMPLE_TTL.as_millis() as i64)
    }

    /// The creation-time window (HSS's clock, epoch ms) in which a task created by a POST sent
    /// between `started_ms` and `sent_by_ms` (our clock) was stamped; `fallback` each side
    /// without bounds.
    pub fn window(&self, started_ms: i64, sent_by_ms: i64, fallback: Duration) -> (i64, i64) {
        let margin = STAMP_MARGIN.as_millis() as i64;
        match self.bounds(sent_by_ms) {
            Some(b) => (
                started_ms + b.low_ms - margin,
                sent_by_ms + b.high_ms + margin,
            ),
            None => {
                let skew = fallback.as_millis() as i64;
                (started_ms - skew, sent_by_ms + skew)
            }
        }
    }
}

/// The bounds one answer gives.
fn sample(date: &str, sent_ms: i64, received_ms: i64) -> Option<Bounds> {
    let stamped = jiff::Timestamp::try_from(httpdate::parse_http_date(date.trim()).ok()?).ok()?;
    let d = stamped.as_millisecond();
    (received_ms >= sent_ms).then_some(Bounds {
        low_ms: d - received_ms,
        high_ms: d + 1000 - sent_ms,
        at_ms: received_ms,
    })
}

/// The intersection of `old` and `new`; `new` alone when they do not intersect (the clock
/// stepped) or `old` is stale.
fn merge(old: Option<Bounds>, new: Bounds) -> Bounds {
    match old {
        Some(old) if new.at_ms - old.at_ms < SAMPLE_TTL.as_millis() as i64 => {
            let low = old.low_ms.max(new.low_ms);
            let high = old.high_ms.min(new.high_ms);
            if low <= high {
                Bounds {
                    low_ms: low,
                    high_ms: high,
                    at_ms: new.at_ms,
                }
            } else {
                new
            }
        }
        _ => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const D_MS: i64 = 784_111_777_000;

    #[test]
    fn an_answer_bounds_the_offset_by_its_round_trip_and_the_dates_resolution() {
        let o = Offset::default();
        // Our clock is 10 s behind HSS's; the round trip took 200 ms.
        o.observe(D, D_MS - 10_000 - 100, D_MS - 10_000 + 100);
        let b = o.bounds(D_MS - 10_000 + 100).expect("bounds");
        assert_eq!((b.low_ms, b.high_ms), (9_900, 11_100));
        assert!(
            b.low_ms <= 10_000 && 10_000 <= b.high_ms,
            "the true offset is inside"
        );
    }

    #[test]
    fn answers_narrow_the_bounds_and_a_clock_step_starts_over() {
        let o = Offset::default();
        o.observe(D, D_MS - 300, D_MS + 100); // [-100, 1300]
        o.observe(D, D_MS + 200, D_MS + 400); // [-400, 800]
        let b = o.bounds(D_MS + 400).expect("bounds");
        assert_eq!((b.low_ms, b.high_ms), (-100, 800));
        // Our clock stepped by a minute: disjoint bounds, the new one alone.
        o.observe(D, D_MS + 60_000, D_MS + 60_100);
        let b = o.bounds(D_MS + 60_100).expect("bounds");
        assert_eq!((b.low_ms, b.high_ms), (-60_100, -59_000));
    }

    #[test]
    fn the_window_is_tight_with_bounds_and_wide_without_or_when_stale() {
        let o = Offset::default();
        let skew = Duration::from_secs(120);
        assert_eq!(o.window(1_000_000, 1_005_000, skew), (880_000, 1_125_000));
        o.observe(D, D_MS - 100, D_MS + 100); // [-100, 1100]
        assert_eq!(
            o.window(D_MS, D_MS + 5_000, skew),
            (D_MS - 100 - 2_000, D_MS + 5_000 + 1_100 + 2_000)
        );
        let stale = D_MS + 100 + SAMPLE_TTL.as_millis() as i64;
        assert_eq!(
            o.window(stale, stale, skew),
            (stale - 120_000, stale + 120_000)
        );
        // An unreadable date or an impossible round trip teaches nothing.
        let fresh = Offset::default();
        fresh.observe("yesterday", 0, 1);
        fresh.observe(D, 10, 5);
        assert_eq!(fresh.bounds(D_MS), None);
    }
}
