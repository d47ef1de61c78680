//! The HSS calls the operator's clients make, as Prometheus families: [`HssMetrics`] is the
//! [`CallObserver`] every [`HssClient`](hss_client::client::HssClient) the controller builds
//! reports to (`client.with_observer(hss_metrics.clone())`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hss_operator_hss_calls_total` | counter | `api`, `outcome` |
//! | `hss_operator_hss_call_duration_seconds` | histogram | `api` |
//! | `hss_operator_hss_throttled_total` | counter | `api` |
//! | `hss_operator_budget_wait_seconds` | histogram | `api` |
//! | `hss_operator_budget_rate` | gauge | `api` |
//!
//! Labels are typed: `api` is an [`ApiLabel`] (an [`Api`], written as [`Api::as_str`]),
//! `outcome` a [`CallOutcome`]. `hss_calls` and `hss_throttled` series exist at zero for every
//! value from the start.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hss_client::{Api, Outcome, client::CallObserver};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// The `api` label: an [`Api`], written as its [`Api::as_str`] name (hss-client knows nothing of
/// Prometheus, so the label is implemented here).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ApiLabel(pub Api);

impl EncodeLabelValue for ApiLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// The `outcome` label: `success`, or how hss-client classifies a failed call
/// ([`Outcome`], written as [`Outcome::as_str`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    Rejected,
    Retryable,
    Ambiguous,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 4] = [
        CallOutcome::Success,
        CallOutcome::Rejected,
        CallOutcome::Retryable,
        CallOutcome::Ambiguous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Success => "success",
            CallOutcome::Rejected => Outcome::Rejected.as_str(),
            CallOutcome::Retryable => Outcome::Retryable.as_str(),
            CallOutcome::Ambiguous => Outcome::Ambiguous.as_str(),
        }
    }

    /// The value [`CallObserver::call`] reports as a name: `success` or an [`Outcome::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl From<Outcome> for CallOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Rejected => CallOutcome::Rejected,
            Outcome::Retryable => CallOutcome::Retryable,
            Outcome::Ambiguous => CallOutcome::Ambiguous,
        }
    }
}

impl EncodeLabelValue for CallOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: ApiLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    api: ApiLabel,
    outcome: CallOutcome,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

const CALL_BUCKETS: [f64; 11] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// With 5 calls per minute a queue of objects waits tens of seconds to minutes per token.
const WAIT_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}

/// The HSS call and rate-budget families. Share it as `Arc<HssMetrics>`.
pub struct HssMetrics {
    calls: Family<CallLabels, Counter>,
    call_duration: HistogramFamily<ApiLabels>,
    throttled: Family<ApiLabels, Counter>,
    budget_wait: HistogramFamily<ApiLabels>,
    budget_rate: Family<ApiLabels, Gauge<f64, AtomicU64>>,
}

impl Default for HssMetrics {
    /// The families, not yet registered, with the `hss_calls` and `hss_throttled` series of
    /// every [`Api`] and [`CallOutcome`] at zero.
    fn default() -> Self {
        let m = Self {
            calls: Family::default(),
            call_duration: Family::new_with_constructor(call_histogram),
            throttled: Family::default(),
            budget_wait: Family::new_with_constructor(wait_histogram),
            budget_rate: Family::default(),
        };
        for api in Api::ALL.map(ApiLabel) {
            m.throttled.get_or_create_owned(&ApiLabels { api });
            for outcome in CallOutcome::ALL {
                m.calls.get_or_create_owned(&CallLabels { api, outcome });
            }
        }
        m
    }
}

impl std::fmt::Debug for HssMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HssMetrics").finish_non_exhaustive()
    }
}

impl HssMetrics {
    /// Registers the families in `registry` (whose prefix is `hss_operator`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hss_calls",
            "HSS API calls by API and outcome (success, rejected, retryable, ambiguous)",
            self.calls.clone(),
        );
        registry.register_with_unit(
            "hss_call_duration",
            "Latency of HSS API calls",
            Unit::Seconds,
            self.call_duration.clone(),
        );
        registry.register(
            "hss_throttled",
            "HTTP 429 answers received from HSS or its gateway",
            self.throttled.clone(),
        );
        registry.register_with_unit(
            "budget_wait",
            "Time spent waiting for a rate-budget token before an HSS call",
            Unit::Seconds,
            self.budget_wait.clone(),
        );
        registry.register(
            "budget_rate",
            "Calls per budget window this process allows itself per API after 429s (the lowest over endpoints; the configured budget when none came)",
            self.budget_rate.clone(),
        );
    }

    /// One HSS call to `api` that ended as `outcome` after `latency`.
    pub fn call(&self, api: Api, outcome: CallOutcome, latency: Duration) {
        let api = ApiLabel(api);
        self.calls.get_or_create(&CallLabels { api, outcome }).inc();
        self.call_duration
            .get_or_create(&ApiLabels { api })
            .observe(latency.as_secs_f64());
    }

    /// A 429 received for `api`.
    pub fn throttled(&self, api: Api) {
        self.throttled
            .get_or_create(&ApiLabels { api: ApiLabel(api) })
            .inc();
    }

    /// How long a caller waited for a budget token for `api`.
    pub fn budget_wait(&self, api: Api, waited: Duration) {
        self.budget_wait
            .get_or_create(&ApiLabels { api: ApiLabel(api) })
            .observe(waited.as_secs_f64());
    }

    /// The adaptive rate per API (from [`hss_client::budget::Budget::rates`]).
    pub fn set_budget_rates(&self, rates: &[(Api, f64)]) {
        for (api, rate) in rates {
            self.budget_rate
                .get_or_create(&ApiLabels {
                    api: ApiLabel(*api),
                })
                .set(*rate);
        }
    }
}

/// Counts every call of a client built `with_observer(hss_metrics.clone())`; a 429 answer also
/// counts as throttled.
impl CallObserver for HssMetrics {
    fn call(&self, api: Api, outcome: &'static str, latency: Duration, status: Option<u16>) {
        // hss-client reports `success` or an `Outcome::as_str`, all of which parse.
        match CallOutcome::from_name(outcome) {
            Some(outcome) => HssMetrics::call(self, api, outcome, latency),
            None => tracing::warn!(outcome, "HSS call with an outcome outside the label set"),
        }
        if status == Some(429) {
            self.throttled(api);
        }
    }

    fn budget_wait(&self, api: Api, waited: Duration) {
        HssMetrics::budget_wait(self, api, waited);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(m: &HssMetrics) -> String {
        let mut registry = Registry::with_prefix("hss_operator");
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        text
    }

    #[test]
    fn outcome_names_are_success_and_the_client_classification() {
        assert_eq!(
            CallOutcome::from_name("success"),
            Some(CallOutcome::Success)
        );
        for o in [Outcome::Rejected, Outcome::Retryable, Outcome::Ambiguous] {
            assert_eq!(
                CallOutcome::from_name(o.as_str()),
                Some(CallOutcome::from(o))
            );
        }
        assert_eq!(CallOutcome::from_name("HSS.1002: quota"), None);
    }

    #[test]
    fn every_api_and_outcome_series_exists_at_zero() {
        let text = encode(&HssMetrics::default());
        for api in Api::ALL {
            let api = api.as_str();
            assert!(
                text.contains(&format!(
                    "hss_operator_hss_throttled_total{{api=\"{api}\"}} 0"
                )),
                "{api}"
            );
            for outcome in CallOutcome::ALL.map(CallOutcome::as_str) {
                let line = format!(
                    "hss_operator_hss_calls_total{{api=\"{api}\",outcome=\"{outcome}\"}} 0"
                );
                assert!(text.contains(&line), "missing {line:?}");
            }
        }
    }

    #[test]
    fn as_call_observer_it_counts_calls_waits_and_429s() {
        let m = HssMetrics::default();
        let observer: &dyn CallObserver = &m;
        observer.call(
            Api::CreateTask,
            "success",
            Duration::from_millis(5),
            Some(200),
        );
        observer.call(
            Api::ListTasks,
            "retryable",
            Duration::from_millis(5),
            Some(429),
        );
        observer.call(Api::ListTasks, "ambiguous", Duration::from_secs(30), None);
        observer.budget_wait(Api::ListTasks, Duration::from_secs(12));
        let text = encode(&m);
        for line in [
            "hss_operator_hss_calls_total{api=\"CreateTask\",outcome=\"success\"} 1",
            "hss_operator_hss_calls_total{api=\"ListTasks\",outcome=\"retryable\"} 1",
            "hss_operator_hss_calls_total{api=\"ListTasks\",outcome=\"ambiguous\"} 1",
            "hss_operator_hss_throttled_total{api=\"ListTasks\"} 1",
            "hss_operator_hss_throttled_total{api=\"CreateTask\"} 0",
            "hss_operator_budget_wait_seconds_count{api=\"ListTasks\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?}");
        }
    }

    #[test]
    fn series_count_does_not_grow_with_events() {
        let m = HssMetrics::default();
        m.call(Api::CreateTask, CallOutcome::Rejected, Duration::ZERO);
        let before = encode(&m).lines().count();
        for i in 0..100 {
            m.call(
                Api::CreateTask,
                CallOutcome::ALL[i % CallOutcome::ALL.len()],
                Duration::from_millis(i as u64),
            );
            m.throttled(Api::CreateTask);
        }
        assert_eq!(encode(&m).lines().count(), before);
    }
}
