//! The rate budget every HSS call draws from.
//!
//! HSS allows 5 calls per minute **per API, per user and per source IP** (and answers more
//! with `429 APIGW.0308`). One process is one source: every call to an endpoint's API draws
//! from one bucket per `(endpoint, API)`, whatever the credential or project, so a process
//! serving several tenants' credentials stays within the per-source limit too, and causes no
//! 429 of its own. A 429 blocks the credential that got it (`(endpoint, credential, API)`),
//! and takes the source's next token, so other credentials go on at the source's pace. The
//! endpoint is part of every key: what one endpoint answers (a 429, a `Retry-After`) never
//! holds back calls to another.
//!
//! # Guarantees
//! - With a budget of `n` per minute, calls of one API to one endpoint are spaced at least `60 s / n` apart
//!   plus a small [`SAFETY_MARGIN`]. That is at most `n` calls in *any* 60-second window, which
//!   satisfies a fixed-window or a sliding-window limiter at the gateway. A plain token bucket
//!   with a burst of `n` would not: it allows `2n - 1` calls in some windows.
//! - A received 429 empties the bucket and blocks the key until `Retry-After` (or one period,
//!   or 1 s with limiting off, when the gateway sends none), even with client limiting off.
//! - After a 429, the source sends fewer calls per window: the adaptive rate of
//!   [`super::adaptive`] (cut to 70 %, grown back along a cubic curve over a few windows), so
//!   operators sharing one account converge instead of hammering the gateway.
//! - Waiting uses Tokio time, so tests drive it with paused time.
//! - No wait is longer than [`MAX_RETRY_AFTER`](crate::limits::MAX_RETRY_AFTER), whatever a
//!   server says, and no wait can overflow the clock.
//! - The buckets are bounded: past [`KEEP_BUCKETS`] of them, buckets that hold no state (not
//!   blocked, no send inside the window, a full token) are dropped. Dropping such a bucket
//!   changes nothing a new one would not do the same way, so the bound costs no safety; what
//!   stays is what was used in the last window (plus blocked keys, for at most the cap).
//!
//! # Caveats
//! - Budgets are per process. Two replicas sharing one credential share HSS's budget without
//!   knowing it; leader election keeps one replica calling.
//! - Another user of the same credential (a console session, a script) can still cause 429s;
//!   those are honoured, not prevented.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};

use super::{Api, adaptive::Cubic};

/// Extra spacing on top of `60 s / n`, so network jitter between our clock and the gateway's
/// cannot squeeze `n + 1` arrivals into one minute.
pub const SAFETY_MARGIN: Duration = Duration::from_millis(250);

/// HSS's published per-user, per-API limit.
pub const DEFAULT_PER_MINUTE: u32 = 5;

/// Past this many buckets, idle ones are dropped (see the module docs).
pub const KEEP_BUCKETS: usize = 256;

/// Who makes a call and where it goes. `identity` is an opaque credential identity (an access
/// key id or a token fingerprint), never a secret; `endpoint` is where the call goes. The rate
/// is kept per [`BudgetKey::source`]; 429 blocks per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetKey {
    pub endpoint: String,
    pub identity: String,
    pub api: Api,
}

impl BudgetKey {
    /// This process's calls of the same API to the same endpoint, whatever the credential.
    pub fn source(&self) -> BudgetKey {
        BudgetKey {
            identity: String::new(),
            ..self.clone()
        }
    }
}

/// Proof that a token was taken for `api`. HTTP calls that need one take it by value, so no
/// call can be made without drawing from the budget first.
#[derive(Debug)]
#[must_use = "a permit is spent by the call it was taken for"]
pub struct Permit {
    key: BudgetKey,
    waited: Duration,
}

impl Permit {
    pub fn key(&self) -> &BudgetKey {
        &self.key
    }
    /// How long the caller waited for this permit.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// Governor clock on Tokio's (pausable) time.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

struct Bucket {
    /// `None` when client-side limiting is off; a received 429 is honoured all the same.
    limiter: Option<Limiter>,
    blocked_until: Mutex<Option<tokio::time::Instant>>,
    /// When the last calls actually went out (see [`Budget::pace`]).
    sends: Mutex<std::collections::VecDeque<tokio::time::Instant>>,
    /// The rate this source allows itself after 429s ([`super::adaptive`]).
    adaptive: Mutex<Cubic>,
}

impl Bucket {
    /// Holds nothing a fresh bucket would not: not blocked, no send within `span`, and (when
    /// limiting) a token free now. Only asked when the bucket is dropped if idle, so taking
    /// that token to see it is there changes nothing.
    fn is_idle(&self, now: tokio::time::Instant, span: Duration, window: Duration, n: u32) -> bool {
        let recovering = !self
            .adaptive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_recovered(now, window, f64::from(n));
        let blocked = self
            .blocked_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| until > now);
        let recent = self
            .sends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .back()
            .is_some_and(|t| now.duration_since(*t) < span);
        !blocked
            && !recent
            && !recovering
            && self.limiter.as_ref().is_none_or(|l| l.check().is_ok())
    }
}

struct Inner {
    period: Option<Duration>,
    /// Calls per window, the window and the margin, for [`Budget::pace`].
    per_window: u32,
    window: Duration,
    margin: Duration,
    clock: TokioClock,
    buckets: Mutex<HashMap<BudgetKey, Arc<Bucket>>>,
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("period", &self.inner.period)
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// A budget of `per_minute` calls per key; 0 turns limiting off (simulators, benchmarks).
    pub fn per_minute(per_minute: u32) -> Self {
        Self::per_window(per_minute, Duration::from_secs(60))
    }

    /// `n` calls per `window` per key. Windows other than a minute exist for time-scaled
    /// tests and benchmarks (the simulator's limit can be scaled the same way); the safety
    /// margin scales with the window.
    pub fn per_window(n: u32, window: Duration) -> Self {
        // The margin absorbs delays between taking a token and the request's arrival, which do
        // not shrink with the window: scaled, but never below 60 ms (25 ms let one call in 200
        // arrive early at a 2 s window on a loaded 2-core CI machine).
        let margin = SAFETY_MARGIN
            .mul_f64(window.as_secs_f64() / 60.0)
            .max(Duration::from_millis(60).min(SAFETY_MARGIN));
        let period = NonZeroU32::new(n).map(|n| window / n.get() + margin);
        Self {
            inner: Arc::new(Inner {
                period,
                per_window: n,
                window,
                margin,
                clock: TokioClock {
                    origin: tokio::time::Instant::now(),
                },
                buckets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Spacing between two calls of one key, `None` when unlimited.
    pub fn period(&self) -> Option<Duration> {
        self.inner.period
    }

    /// The lowest adaptive rate (calls per window) of any endpoint's source bucket per API, for
    /// the `hss_operator_budget_rate` gauge; empty with limiting off.
    pub fn rates(&self) -> Vec<(Api, f64)> {
        let n = f64::from(self.inner.per_window);
        if n == 0.0 {
            return Vec::new();
        }
        let now = tokio::time::Instant::now();
        let buckets = self.inner.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut rates: Vec<(Api, f64)> = Vec::new();
        for (key, bucket) in buckets.iter().filter(|(k, _)| k.identity.is_empty()) {
            let rate = bucket
                .adaptive
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rate(now, self.inner.window, n);
            match rates.iter_mut().find(|(api, _)| *api == key.api) {
                Some((_, r)) => *r = r.min(rate),
                None => rates.push((key.api, rate)),
            }
        }
        rates
    }

    /// How many buckets exist (for tests of the bound).
    pub fn buckets(&self) -> usize {
        self.inner
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn bucket(&self, key: &BudgetKey) -> Arc<Bucket> {
        let mut buckets = self.inner.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= KEEP_BUCKETS && !buckets.contains_key(key) {
            let now = tokio::time::Instant::now();
            let span = self.inner.window + self.inner.margin;
            let (window, n) = (self.inner.window, self.inner.per_window);
            buckets.retain(|_, b| Arc::strong_count(b) > 1 || !b.is_idle(now, span, window, n));
        }
        let bucket = buckets.entry(key.clone()).or_insert_with(|| {
            // Burst 1: see the module docs for why a burst of n is not safe.
            let limiter = self
                .inner
                .period
                .and_then(Quota::with_period)
                .map(|quota| RateLimiter::direct_with_clock(quota, self.inner.clock.clone()));
            Arc::new(Bucket {
                limiter,
                blocked_until: Mutex::new(None),
                sends: Mutex::new(std::collections::VecDeque::new()),
                adaptive: Mutex::new(Cubic::default()),
            })
        });
        bucket.clone()
    }

    /// Takes a token now, or says how long until one may be free: the credential must not be
    /// blocked by a 429, and the source must have a token.
    pub fn try_acquire(&self, key: &BudgetKey) -> Result<Permit, Duration> {
        let now = tokio::time::Instant::now();
        let source = self.bucket(&key.source());
        for bucket in [&self.bucket(key), &source] {
            let mut blocked = bucket
                .blocked_until
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match *blocked {
                Some(until) if until > now => return Err(until - now),
                Some(_) => *blocked = None,
                None => {}
            }
        }
        match source.limiter.as_ref().map_or(Ok(()), |l| l.check()) {
            Ok(()) => Ok(Permit {
                key: key.clone(),
                waited: Duration::ZERO,
            }),
            Err(not_until) => Err(not_until
                .wait_time_from(self.inner.clock.now())
                .max(Duration::from_millis(1))),
        }
    }

    /// Waits (in Tokio time) until a token is free and takes it.
    pub async fn acquire(&self, key: &BudgetKey) -> Permit {
        let start = tokio::time::Instant::now();
        loop {
            match self.try_acquire(key) {
                Ok(mut permit) => {
                    permit.waited = start.elapsed();
                    return permit;
                }
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Waits, right before a call goes out, until fewer than `n` calls of `key` went out in
    /// the last window (plus the margin), then records this one.
    ///
    /// Tokens are taken earlier than calls are sent (CreateTask records its attempt in between,
    /// and that write's latency varies), so spacing tokens alone could let two calls' actual
    /// send times drift closer than the gateway allows. This keeps the send times honest.
    pub async fn pace(&self, key: &BudgetKey) {
        let n = self.inner.per_window as usize;
        if n == 0 {
            return;
        }
        let bucket = self.bucket(&key.source());
        let span = self.inner.window + self.inner.margin;
        loop {
            let wait = {
                let mut sends = bucket.sends.lock().unwrap_or_else(|e| e.into_inner());
                let now = tokio::time::Instant::now();
                while sends
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= span)
                {
                    sends.pop_front();
                }
                // After 429s, fewer than n: the adaptive rate, whole calls, at least one.
                let allowed = bucket
                    .adaptive
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .rate(now, self.inner.window, n as f64)
                    .floor() as usize;
                if sends.len() < allowed.max(1) {
                    sends.push_back(now);
                    return;
                }
                let oldest = sends.len() - allowed.max(1);
                sends
                    .get(oldest)
                    .map_or(self.inner.margin, |t| {
                        (*t + span).saturating_duration_since(now)
                    })
                    // The allowance grows back over time: look again at least every period.
                    .min(self.inner.period.unwrap_or(span))
                    .max(Duration::from_millis(1))
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Records a 429 for `key`: takes the source's free token (the next call of any
    /// credential waits a period) and blocks the credential for `retry_after` (one period when
    /// the gateway named none).
    pub fn throttled(&self, key: &BudgetKey, retry_after: Option<Duration>) {
        let source = self.bucket(&key.source());
        if let Some(limiter) = &source.limiter {
            while limiter.check().is_ok() {}
        }
        if self.inner.per_window > 0 {
            source
                .adaptive
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .cut(
                    tokio::time::Instant::now(),
                    self.inner.window,
                    f64::from(self.inner.per_window),
                );
        }
        let bucket = self.bucket(key);
        let wait = retry_after
            .or(self.inner.period)
            .unwrap_or(Duration::from_secs(1))
            .min(crate::limits::MAX_RETRY_AFTER);
        let until = tokio::time::Instant::now() + wait;
        let mut blocked = bucket
            .blocked_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *blocked = Some(blocked.map_or(until, |b| b.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(api: Api) -> BudgetKey {
        BudgetKey {
            endpoint: "https://hss.cn-north-4.myhuaweicloud.com".into(),
            identity: "AK".into(),
            api,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn eleven_calls_at_five_per_minute_take_two_minutes_and_a_bit() {
        let budget = Budget::per_minute(5);
        let period = budget.period().expect("limited");
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..11 {
            let _permit = budget.acquire(&key(Api::CreateTask)).await;
            times.push(start.elapsed());
        }
        // The first call is free, each further one waits one period.
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(*times.last().expect("11 calls"), period * 10);
        assert!(period * 10 >= Duration::from_secs(120));
        // No 60-second window ever holds more than 5 calls.
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .filter(|u| **u < *t + Duration::from_secs(60))
                .count();
            assert!(in_window <= 5, "window at {t:?} holds {in_window}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_scaled_window_scales_spacing_and_margin_alike() {
        let budget = Budget::per_window(5, Duration::from_secs(6));
        assert_eq!(budget.period(), Some(Duration::from_millis(1200 + 60)));
        let budget = Budget::per_window(5, Duration::from_secs(30));
        assert_eq!(budget.period(), Some(Duration::from_millis(6000 + 125)));
        let budget = Budget::per_window(5, Duration::from_secs(2));
        assert_eq!(
            budget.period(),
            Some(Duration::from_millis(400 + 60)),
            "margin floor"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sends_delayed_after_their_tokens_still_never_crowd_one_window() {
        let budget = Budget::per_window(2, Duration::from_secs(10));
        let k = key(Api::CreateTask);
        let start = tokio::time::Instant::now();
        // Two calls whose tokens were spaced, but whose sends ended up back to back.
        budget.pace(&k).await;
        budget.pace(&k).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The third must wait until the first send leaves the window (plus the margin).
        budget.pace(&k).await;
        // Tokio timers have millisecond resolution.
        // (250 ms scaled to 10 s is 42 ms, below the 60 ms floor.)
        let expected = Duration::from_secs(10) + Duration::from_millis(60);
        let waited = start.elapsed();
        assert!(
            waited >= expected && waited <= expected + Duration::from_millis(1),
            "{waited:?}"
        );
        let unlimited = Budget::per_minute(0);
        for _ in 0..100 {
            unlimited.pace(&k).await;
        }
        assert_eq!(start.elapsed(), waited, "no pacing without a limit");
    }

    #[tokio::test(start_paused = true)]
    async fn no_token_is_handed_out_before_its_time() {
        let budget = Budget::per_minute(5);
        let k = key(Api::ListTasks);
        assert!(budget.try_acquire(&k).is_ok());
        let wait = budget.try_acquire(&k).expect_err("second call must wait");
        assert_eq!(wait, Duration::from_secs(12) + SAFETY_MARGIN);
        tokio::time::advance(wait - Duration::from_millis(10)).await;
        assert!(budget.try_acquire(&k).is_err(), "still too early");
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(budget.try_acquire(&k).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn apis_have_separate_buckets_and_credentials_share_the_sources() {
        let budget = Budget::per_minute(5);
        assert!(budget.try_acquire(&key(Api::CreateTask)).is_ok());
        assert!(budget.try_acquire(&key(Api::ListTasks)).is_ok());
        let other = BudgetKey {
            identity: "AK2".into(),
            ..key(Api::CreateTask)
        };
        // HSS limits each source IP too: another credential from this process waits as well.
        let wait = budget
            .try_acquire(&other)
            .expect_err("the source's token is taken");
        assert_eq!(Some(wait), budget.period());
        assert!(budget.try_acquire(&key(Api::CreateTask)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_blocks_its_credential_and_others_go_on_at_the_sources_pace() {
        let budget = Budget::per_minute(5);
        let period = budget.period().expect("limited");
        let other = BudgetKey {
            identity: "AK2".into(),
            ..key(Api::CreateTask)
        };
        budget.throttled(&key(Api::CreateTask), Some(Duration::from_secs(300)));
        tokio::time::advance(period).await;
        assert!(
            budget.try_acquire(&other).is_ok(),
            "another credential goes on"
        );
        tokio::time::advance(period).await;
        assert!(
            budget.try_acquire(&key(Api::CreateTask)).is_err(),
            "the throttled one waits its Retry-After"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_429_the_source_sends_fewer_calls_per_window_then_recovers() {
        let budget = Budget::per_minute(5);
        let window = Duration::from_secs(60);
        let k = key(Api::ListTasks);
        let sends_in = |span: Duration| {
            let budget = budget.clone();
            let k = k.clone();
            async move {
                let start = tokio::time::Instant::now();
                let mut n = 0;
                while start.elapsed() < span {
                    budget.pace(&k).await;
                    if start.elapsed() < span {
                        n += 1;
                    }
                }
                n
            }
        };
        assert_eq!(sends_in(window).await, 5, "the full rate");
        tokio::time::advance(window * 2).await;
        budget.throttled(&k, Some(Duration::ZERO));
        assert_eq!(budget.rates(), [(Api::ListTasks, 3.5)]);
        // 3.5 right after the cut, back above 4 within 0.2 windows (the cubic rises fastest
        // far below the old rate): 4 calls in the window after the 429, not 5.
        assert_eq!(
            sends_in(window).await,
            4,
            "fewer calls in the window after the 429"
        );
        tokio::time::advance(window * 5).await;
        assert_eq!(budget.rates(), [(Api::ListTasks, 5.0)], "recovered");
        assert_eq!(sends_in(window).await, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_received_429_blocks_until_retry_after() {
        let budget = Budget::per_minute(5);
        let k = key(Api::CreateTask);
        budget.throttled(&k, Some(Duration::from_secs(40)));
        let wait = budget.try_acquire(&k).expect_err("blocked");
        assert_eq!(wait, Duration::from_secs(40));
        let start = tokio::time::Instant::now();
        let permit = budget.acquire(&k).await;
        assert_eq!(start.elapsed(), Duration::from_secs(40));
        assert_eq!(permit.waited(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_budget_does_not_limit_but_still_honours_429() {
        let budget = Budget::per_minute(0);
        for _ in 0..100 {
            assert!(budget.try_acquire(&key(Api::CreateTask)).is_ok());
        }
        budget.throttled(&key(Api::CreateTask), Some(Duration::from_secs(5)));
        assert_eq!(
            budget
                .try_acquire(&key(Api::CreateTask))
                .expect_err("blocked"),
            Duration::from_secs(5)
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(budget.try_acquire(&key(Api::CreateTask)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_from_one_endpoint_never_holds_back_another() {
        let budget = Budget::per_minute(5);
        let elsewhere = BudgetKey {
            endpoint: "https://hss.example.internal".into(),
            ..key(Api::CreateTask)
        };
        // A hostile or broken endpoint asks for a year; it gets the cap, and only for itself.
        budget.throttled(&elsewhere, Some(Duration::from_secs(365 * 24 * 3600)));
        assert_eq!(
            budget.try_acquire(&elsewhere).expect_err("blocked"),
            crate::limits::MAX_RETRY_AFTER
        );
        assert!(
            budget.try_acquire(&key(Api::CreateTask)).is_ok(),
            "the same credential at another endpoint is not blocked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_dropped_past_the_bound_and_busy_ones_kept() {
        let budget = Budget::per_minute(5);
        // Source keys: one bucket each (a credential's key adds its own for 429 blocks).
        let at = |i: usize| BudgetKey {
            endpoint: format!("https://hss-{i}.example"),
            ..key(Api::ListTasks).source()
        };
        // One bucket still blocked by a 429, one with a send in the window.
        budget.throttled(&at(0), Some(Duration::from_secs(300)));
        budget.pace(&at(1)).await;
        for i in 2..KEEP_BUCKETS {
            let _ = budget.try_acquire(&at(i));
        }
        assert_eq!(budget.buckets(), KEEP_BUCKETS);
        // Their tokens come back after one period; nothing else holds them.
        tokio::time::advance(budget.period().expect("limited")).await;
        let _ = budget.try_acquire(&at(KEEP_BUCKETS));
        assert_eq!(
            budget.buckets(),
            3,
            "the blocked, the recent and the new one stay"
        );
        assert!(
            budget.try_acquire(&at(0)).is_err(),
            "the blocked key is still blocked"
        );
        // A key whose token was taken but not yet given back is not idle either.
        let busy = BudgetKey {
            endpoint: "https://busy.example".into(),
            ..key(Api::ListTasks).source()
        };
        assert!(budget.try_acquire(&busy).is_ok());
        for i in 0..KEEP_BUCKETS {
            let _ = budget.try_acquire(&at(1000 + i));
        }
        assert!(
            budget.try_acquire(&busy).is_err(),
            "its token is still taken: dropping the bucket would have handed out another"
        );
    }
}
