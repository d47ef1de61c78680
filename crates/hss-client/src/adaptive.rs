//! The rate a source allows itself after 429s: cut on every 429, recovered along a cubic curve,
//! the shape the AWS SDKs' "adaptive" retry mode uses (CUBIC congestion control applied to a
//! token bucket).
//!
//! Several operators sharing one account (a fleet of clusters, each with its own operator)
//! share HSS's per-user limit without knowing of each other; each one alone paces itself to the
//! full limit, so together they only meet 429s. Cutting the rate by [`BETA`] on a 429 and
//! growing it back slowly, fastest far from the rate where the 429 came, lets such a fleet
//! settle near its fair share instead of hammering the gateway.
//!
//! # Guarantees
//! - The rate is never above the configured `n` per window and never below [`MIN_RATE`].
//! - Right after a cut the rate is `BETA` times what it was; it is back there after `K`
//!   windows (`K = cbrt(max * (1 - BETA) / C)`), and grows past it towards `n` afterwards.
//! - Time is Tokio time, in windows (so time-scaled budgets recover in scale).
//!
//! # Caveats
//! - The rate is the allowance of calls per window for [`super::budget::Budget::pace`]; the
//!   token spacing of the budget itself stays at `n` per window.

use std::time::Duration;

use tokio::time::Instant;

/// The cut on a 429.
pub const BETA: f64 = 0.7;
/// The curve's scale (AWS uses 0.4 with rates per second and time in seconds; here, calls per
/// window and time in windows).
pub const C: f64 = 0.4;
/// The rate is never cut below one call per window.
pub const MIN_RATE: f64 = 1.0;

/// One source's adaptive rate.
#[derive(Debug, Clone, Default)]
pub struct Cubic {
    /// The rate when the last 429 came, and when it came; `None`: never cut.
    last_cut: Option<(f64, Instant)>,
}

impl Cubic {
    /// Calls per window allowed at `now`, at most `n`.
    pub fn rate(&self, now: Instant, window: Duration, n: f64) -> f64 {
        let Some((max, at)) = self.last_cut else {
            return n;
        };
        let t = now.duration_since(at).as_secs_f64() / window.as_secs_f64().max(1e-3);
        let k = (max * (1.0 - BETA) / C).cbrt();
        (C * (t - k).powi(3) + max).clamp(MIN_RATE, n)
    }

    /// A 429 at `now`: the rate from here is `BETA` times the current one.
    pub fn cut(&mut self, now: Instant, window: Duration, n: f64) {
        let current = self.rate(now, window, n);
        self.last_cut = Some((current, now));
    }

    /// Back at the full rate: nothing a fresh one would not do.
    pub fn is_recovered(&self, now: Instant, window: Duration, n: f64) -> bool {
        self.rate(now, window, n) >= n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_429_cuts_the_rate_and_it_grows_back_along_the_cubic() {
        let mut c = Cubic::default();
        let start = Instant::now();
        assert_eq!(c.rate(start, W, 5.0), 5.0, "never cut: the full rate");
        c.cut(start, W, 5.0);
        assert!((c.rate(start, W, 5.0) - 3.5).abs() < 1e-9, "cut to 70 %");
        // Back at 5 after K = cbrt(5 * 0.3 / 0.4) ≈ 1.55 windows; slow near it, faster away.
        let at = |windows: f64| start + W.mul_f64(windows);
        let k = (5.0_f64 * 0.3 / 0.4).cbrt();
        assert!(c.rate(at(0.5), W, 5.0) < c.rate(at(1.0), W, 5.0));
        assert!(c.rate(at(k - 0.01), W, 5.0) < 5.0);
        assert_eq!(c.rate(at(k + 0.01), W, 5.0), 5.0);
        assert!(c.is_recovered(at(k + 0.01), W, 5.0));
        // 429s in a row compound, down to the floor.
        for i in 0..20 {
            c.cut(at(3.0 + i as f64 * 0.01), W, 5.0);
        }
        assert_eq!(c.rate(at(3.2), W, 5.0), MIN_RATE);
    }

    #[tokio::test(start_paused = true)]
    async fn time_is_counted_in_windows() {
        let short = Duration::from_secs(6);
        let mut a = Cubic::default();
        let mut b = Cubic::default();
        let start = Instant::now();
        a.cut(start, W, 5.0);
        b.cut(start, short, 5.0);
        assert_eq!(
            a.rate(start + W, W, 5.0),
            b.rate(start + short, short, 5.0),
            "one window later, whatever its length"
        );
    }
}
