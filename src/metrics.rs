//! The operator's Prometheus metrics: one [`Registry`], every name prefixed `hss_operator_`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hss_operator_reconciles_total` | counter | |
//! | `hss_operator_reconcile_failures_total` | counter | `category` |
//! | `hss_operator_reconcile_duration_seconds` | histogram | |
//! | `hss_operator_hss_calls_total` | counter | `api`, `outcome` |
//! | `hss_operator_hss_call_duration_seconds` | histogram | `api` |
//! | `hss_operator_hss_throttled_total` | counter | `api` |
//! | `hss_operator_budget_wait_seconds` | histogram | `api` |
//! | `hss_operator_budget_rate` | gauge | `api` |
//! | `hss_operator_submission_step_duration_seconds` | histogram | `step` |
//! | `hss_operator_objects` | gauge | `phase` |
//! | `hss_operator_unresolved_submissions` | gauge | |
//! | `hss_operator_tracked_tasks` | gauge | |
//! | `hss_operator_last_successful_poll_timestamp_seconds` | gauge | | (the process start until the first success)
//! | `hss_operator_leader` | gauge | |
//!
//! # Labels are bounded
//! Label values never come from objects, error text or HSS ids:
//! - `api`: [`hss::Api::as_str`](crate::hss::Api::as_str) values ([`API_LABELS`]);
//! - `outcome`: [`OUTCOMES`] (`success` plus [`Outcome::as_str`](crate::hss::client::Outcome));
//! - `phase`: [`Phase::as_str`](crate::crd::Phase::as_str) values ([`PHASE_LABELS`]);
//! - `step`: the steps of one CreateTask submission ([`SUBMISSION_STEPS`]);
//! - `category`: the `category()` of the module errors, which are `&'static str` literals.
//!
//! A value outside its set (a caller bug) is recorded as `unknown` rather than as itself, so even
//! a mistake cannot grow the series count. `api`, `outcome` and `phase` series are created at
//! zero up front, so dashboards and `rate()` see them before the first event.
//!
//! The exposition is the OpenMetrics text format ([`CONTENT_TYPE`]), which Prometheus scrapes
//! natively.

use std::time::{Duration, Instant};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

#[cfg(doc)]
use crate::{crd::Phase, hss::Api};

/// Content-Type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every `api` label value: the [`Api::as_str`] names, in [`Api::ALL`] order.
pub const API_LABELS: [&str; 10] = [
    "CreateTask",
    "ListTasks",
    "ListTaskResources",
    "RetryTask",
    "ShowTaskStatistics",
    "ListKubernetesClusterDetails",
    "ListClusterRisks",
    "ListSecurityCheckClusterReports",
    "ListIacFileRisks",
    "KeystoneCreateUserTokenByPassword",
];

/// Every `outcome` label value: `success`, or how a failed call is classified.
pub const OUTCOMES: [&str; 4] = ["success", "rejected", "retryable", "ambiguous"];

/// Every `phase` label value: the [`Phase::as_str`] names.
pub const PHASE_LABELS: [&str; 7] = [
    "Pending",
    "Submitting",
    "Submitted",
    "Running",
    "Succeeded",
    "PartiallyFailed",
    "Failed",
];

/// Every `step` label value: the parts of one submission, in order. `record`: writing the
/// attempt record; `lease`: confirming the lease (an API read with leader election, nothing
/// without); `post`: the CreateTask call, budget pacing included; `task_id`: writing the id.
pub const SUBMISSION_STEPS: [&str; 4] = ["record", "lease", "post", "task_id"];

/// Recorded instead of a label value outside its documented set.
pub const UNKNOWN: &str = "unknown";

fn bounded(value: &'static str, allowed: &[&'static str]) -> &'static str {
    if allowed.contains(&value) {
        value
    } else {
        UNKNOWN
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    api: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Reconciles include budget waits and HSS calls, so the buckets reach minutes.
const RECONCILE_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Submission steps are API writes and one HSS call: milliseconds, seconds when something is
/// wrong.
const STEP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
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

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

/// The operator's metric families and their registry. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_failures: Family<CategoryLabels, Counter>,
    reconcile_duration: Histogram,
    hss_calls: Family<CallLabels, Counter>,
    hss_call_duration: HistogramFamily<ApiLabels>,
    hss_throttled: Family<ApiLabels, Counter>,
    budget_wait: HistogramFamily<ApiLabels>,
    budget_rate: Family<ApiLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    submission_steps: HistogramFamily<StepLabels>,
    objects: Family<PhaseLabels, Gauge>,
    unresolved_submissions: Gauge,
    tracked_tasks: Gauge,
    last_successful_poll: Gauge<f64, std::sync::atomic::AtomicU64>,
    leader: Gauge,
    /// What finished scans found, per cluster.
    pub findings: crate::findings::gauges::Gauges,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates every family and registers it in a fresh registry with the `hss_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hss_operator");
        let m = Self {
            reconciles: Counter::default(),
            reconcile_failures: Family::default(),
            reconcile_duration: Histogram::new(RECONCILE_BUCKETS),
            hss_calls: Family::default(),
            hss_call_duration: Family::new_with_constructor(call_histogram),
            hss_throttled: Family::default(),
            budget_wait: Family::new_with_constructor(wait_histogram),
            budget_rate: Family::default(),
            submission_steps: Family::new_with_constructor(step_histogram),
            objects: Family::default(),
            unresolved_submissions: Gauge::default(),
            tracked_tasks: Gauge::default(),
            last_successful_poll: Gauge::default(),
            leader: Gauge::default(),
            findings: Default::default(),
            registry: Registry::default(),
        };
        // Staleness counts from the start: a process whose polls never succeed is stale too.
        m.poll_succeeded(jiff::Timestamp::now());
        registry.register(
            "reconciles",
            "Reconciles of ClusterScanTask objects that succeeded",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error category",
            m.reconcile_failures.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took, including budget waits and HSS calls",
            Unit::Seconds,
            m.reconcile_duration.clone(),
        );
        registry.register(
            "hss_calls",
            "HSS API calls by API and outcome (success, rejected, retryable, ambiguous)",
            m.hss_calls.clone(),
        );
        registry.register_with_unit(
            "hss_call_duration",
            "Latency of HSS API calls",
            Unit::Seconds,
            m.hss_call_duration.clone(),
        );
        registry.register(
            "hss_throttled",
            "HTTP 429 answers received from HSS or its gateway",
            m.hss_throttled.clone(),
        );
        registry.register_with_unit(
            "budget_wait",
            "Time spent waiting for a rate-budget token before an HSS call",
            Unit::Seconds,
            m.budget_wait.clone(),
        );
        registry.register(
            "budget_rate",
            "Calls per budget window this process allows itself per API after 429s (the lowest over endpoints; the configured budget when none came)",
            m.budget_rate.clone(),
        );
        registry.register_with_unit(
            "submission_step_duration",
            "Time each step of a CreateTask submission took: record, lease, post, task_id",
            Unit::Seconds,
            m.submission_steps.clone(),
        );
        registry.register(
            "objects",
            "ClusterScanTask objects by phase",
            m.objects.clone(),
        );
        registry.register(
            "unresolved_submissions",
            "Objects in phase Submitting whose CreateTask outcome is not yet known",
            m.unresolved_submissions.clone(),
        );
        registry.register(
            "tracked_tasks",
            "HSS tasks followed by the shared poll",
            m.tracked_tasks.clone(),
        );
        registry.register_with_unit(
            "last_successful_poll_timestamp",
            "Unix time of the last shared poll round that succeeded (the process start until one has)",
            Unit::Seconds,
            m.last_successful_poll.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (or leader election is off), else 0",
            m.leader.clone(),
        );
        for api in API_LABELS {
            m.hss_throttled.get_or_create_owned(&ApiLabels { api });
            for outcome in OUTCOMES {
                m.hss_calls
                    .get_or_create_owned(&CallLabels { api, outcome });
            }
        }
        for phase in PHASE_LABELS {
            m.objects.get_or_create_owned(&PhaseLabels { phase });
        }
        for step in SUBMISSION_STEPS {
            m.submission_steps.get_or_create_owned(&StepLabels { step });
        }
        m.findings.register(&mut registry);
        Self { registry, ..m }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry in the OpenMetrics text format (serve it with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would only truncate the output.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "failed to encode metrics");
        }
        text
    }

    /// Starts timing a reconcile; the time is recorded when the timer is finished or dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        ReconcileTimer {
            histogram: Some(self.reconcile_duration.clone()),
            started: Instant::now(),
        }
    }

    pub fn reconcile_ok(&self) {
        self.reconciles.inc();
    }

    /// `category` is an error's `category()`.
    pub fn reconcile_failed(&self, category: &'static str) {
        self.reconcile_failures
            .get_or_create(&CategoryLabels { category })
            .inc();
    }

    /// One HSS call: `api` is an [`Api::as_str`] value, `outcome` one of [`OUTCOMES`].
    pub fn hss_call(&self, api: &'static str, outcome: &'static str, latency: Duration) {
        let api = bounded(api, &API_LABELS);
        let outcome = bounded(outcome, &OUTCOMES);
        self.hss_calls
            .get_or_create(&CallLabels { api, outcome })
            .inc();
        self.hss_call_duration
            .get_or_create(&ApiLabels { api })
            .observe(latency.as_secs_f64());
    }

    /// The adaptive rate per API (from [`crate::hss::Budget::rates`]).
    pub fn set_budget_rates(&self, rates: &[(crate::hss::Api, f64)]) {
        for (api, rate) in rates {
            let api = bounded(api.as_str(), &API_LABELS);
            self.budget_rate
                .get_or_create(&ApiLabels { api })
                .set(*rate);
        }
    }

    /// How long a caller waited for a budget token for `api`.
    pub fn budget_wait(&self, api: &'static str, waited: Duration) {
        let api = bounded(api, &API_LABELS);
        self.budget_wait
            .get_or_create(&ApiLabels { api })
            .observe(waited.as_secs_f64());
    }

    /// One step of a submission took `took`; `step` is one of [`SUBMISSION_STEPS`].
    pub fn submission_step(&self, step: &'static str, took: Duration) {
        let step = bounded(step, &SUBMISSION_STEPS);
        self.submission_steps
            .get_or_create(&StepLabels { step })
            .observe(took.as_secs_f64());
    }

    /// A 429 received for `api`.
    pub fn throttled(&self, api: &'static str) {
        let api = bounded(api, &API_LABELS);
        self.hss_throttled.get_or_create(&ApiLabels { api }).inc();
    }

    /// Sets the per-phase object counts. Phases not listed are set to 0, so the gauge always
    /// describes one complete snapshot.
    pub fn set_objects_by_phase(&self, counts: &[(&'static str, i64)]) {
        for phase in PHASE_LABELS {
            let n = counts
                .iter()
                .filter(|(p, _)| *p == phase)
                .map(|(_, n)| n)
                .sum();
            self.objects.get_or_create(&PhaseLabels { phase }).set(n);
        }
        let unknown: i64 = counts
            .iter()
            .filter(|(p, _)| !PHASE_LABELS.contains(p))
            .map(|(_, n)| n)
            .sum();
        if unknown != 0 || self.objects.get(&PhaseLabels { phase: UNKNOWN }).is_some() {
            self.objects
                .get_or_create(&PhaseLabels { phase: UNKNOWN })
                .set(unknown);
        }
    }

    pub fn set_unresolved_submissions(&self, n: i64) {
        self.unresolved_submissions.set(n);
    }

    pub fn set_tracked_tasks(&self, n: i64) {
        self.tracked_tasks.set(n);
    }

    /// A shared poll round succeeded at `at`.
    pub fn poll_succeeded(&self, at: jiff::Timestamp) {
        self.last_successful_poll
            .set(at.as_millisecond() as f64 / 1000.0);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

/// Lets every [`HssClient`](crate::hss::HssClient) report to the metrics:
/// `client.with_observer(metrics.clone())`. A 429 answer also counts as throttled.
impl crate::hss::client::CallObserver for Metrics {
    fn call(
        &self,
        api: crate::hss::Api,
        outcome: &'static str,
        latency: Duration,
        status: Option<u16>,
    ) {
        self.hss_call(api.as_str(), outcome, latency);
        if status == Some(429) {
            self.throttled(api.as_str());
        }
    }

    fn budget_wait(&self, api: crate::hss::Api, waited: Duration) {
        Metrics::budget_wait(self, api.as_str(), waited);
    }
}

/// Times one reconcile into `hss_operator_reconcile_duration_seconds`; records on
/// [`finish`](Self::finish) or, if never finished (an early return, a panic), on drop.
#[must_use = "the duration is recorded when the timer is finished or dropped"]
pub struct ReconcileTimer {
    histogram: Option<Histogram>,
    started: Instant,
}

impl ReconcileTimer {
    /// Records the elapsed time and returns it.
    pub fn finish(mut self) -> Duration {
        self.record()
    }

    fn record(&mut self) -> Duration {
        let elapsed = self.started.elapsed();
        if let Some(h) = self.histogram.take() {
            h.observe(elapsed.as_secs_f64());
        }
        elapsed
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.record();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(metric, label, value)` for every labelled sample line.
    fn label_values(text: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, rest)) = line.split_once('{') else {
                continue;
            };
            let Some((labels, _)) = rest.split_once('}') else {
                continue;
            };
            for pair in labels.split(',') {
                let (k, v) = pair.split_once('=').expect("label is key=value");
                out.push((
                    name.to_string(),
                    k.to_string(),
                    v.trim_matches('"').to_string(),
                ));
            }
        }
        out
    }

    fn recorded() -> Metrics {
        let m = Metrics::new();
        m.reconcile_started().finish();
        drop(m.reconcile_started());
        m.reconcile_ok();
        m.reconcile_failed("write_status");
        m.hss_call("CreateTask", "success", Duration::from_millis(120));
        m.hss_call("ListTasks", "ambiguous", Duration::from_secs(3));
        m.budget_wait("CreateTask", Duration::from_secs(12));
        m.throttled("ListTasks");
        m.set_objects_by_phase(&[("Running", 3), ("Pending", 1)]);
        m.set_unresolved_submissions(2);
        m.set_tracked_tasks(4);
        m.poll_succeeded(jiff::Timestamp::from_second(1_700_000_000).expect("valid"));
        m.set_leader(true);
        m.submission_step("post", Duration::from_millis(20));
        m
    }

    #[test]
    fn every_family_is_exposed_under_the_prefix() {
        let text = recorded().encode();
        for name in [
            "hss_operator_reconciles_total 1",
            "hss_operator_reconcile_failures_total{category=\"write_status\"} 1",
            "hss_operator_reconcile_duration_seconds_count 2",
            "hss_operator_hss_calls_total{api=\"CreateTask\",outcome=\"success\"} 1",
            "hss_operator_hss_call_duration_seconds_count{api=\"ListTasks\"} 1",
            "hss_operator_hss_throttled_total{api=\"ListTasks\"} 1",
            "hss_operator_budget_wait_seconds_sum{api=\"CreateTask\"} 12",
            "hss_operator_objects{phase=\"Running\"} 3",
            "hss_operator_objects{phase=\"Failed\"} 0",
            "hss_operator_unresolved_submissions 2",
            "hss_operator_tracked_tasks 4",
            "hss_operator_last_successful_poll_timestamp_seconds 1700000000",
            "hss_operator_leader 1",
            "hss_operator_submission_step_duration_seconds_count{step=\"post\"} 1",
            "hss_operator_submission_step_duration_seconds_count{step=\"record\"} 0",
        ] {
            assert!(text.contains(name), "missing {name:?} in:\n{text}");
        }
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }

    #[test]
    fn poll_staleness_counts_from_the_start_before_any_poll_succeeds() {
        let before = jiff::Timestamp::now().as_second();
        let text = Metrics::new().encode();
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("hss_operator_last_successful_poll_timestamp_seconds "))
            .expect("the gauge is exposed before any poll")
            .parse()
            .expect("a number");
        assert!(
            value >= before as f64,
            "{value} is the process start, not 0"
        );
    }

    #[test]
    fn label_values_stay_inside_their_documented_sets() {
        let m = recorded();
        // Caller bugs: values outside the sets are folded into `unknown`.
        m.hss_call("my-object-name", "HSS.1002: quota", Duration::ZERO);
        m.throttled("task-1234");
        m.budget_wait("ns/obj", Duration::ZERO);
        m.set_objects_by_phase(&[("Exploded", 1)]);
        m.submission_step("scan-42", Duration::ZERO);
        let text = m.encode();
        let with_unknown = |set: &[&'static str]| -> BTreeSet<String> {
            set.iter()
                .chain([&UNKNOWN])
                .map(|s| s.to_string())
                .collect()
        };
        for (metric, key, value) in label_values(&text) {
            let allowed = match key.as_str() {
                "api" => with_unknown(&API_LABELS),
                "outcome" => with_unknown(&OUTCOMES),
                "phase" => with_unknown(&PHASE_LABELS),
                "step" => with_unknown(&SUBMISSION_STEPS),
                "category" => ["write_status".to_string()].into(),
                "le" => continue,
                other => panic!("unexpected label {other} on {metric}"),
            };
            assert!(
                allowed.contains(&value),
                "{metric}: {key}={value:?} is outside its set"
            );
        }
        assert!(text.contains("hss_operator_objects{phase=\"unknown\"} 1"));
        assert!(
            text.contains("hss_operator_objects{phase=\"Running\"} 0"),
            "a new snapshot resets the others"
        );
    }

    #[test]
    fn series_count_does_not_grow_with_events() {
        let m = Metrics::new();
        let lines = |m: &Metrics| m.encode().lines().count();
        m.hss_call("CreateTask", "rejected", Duration::ZERO);
        let before = lines(&m);
        for i in 0..100 {
            m.hss_call(
                "CreateTask",
                OUTCOMES[i % OUTCOMES.len()],
                Duration::from_millis(i as u64),
            );
            m.throttled("CreateTask");
        }
        assert_eq!(lines(&m), before);
    }

    #[test]
    fn api_labels_match_the_hss_api_names() {
        use crate::hss::Api;
        let names: Vec<&str> = Api::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names, API_LABELS);
    }

    #[test]
    fn phase_labels_match_the_phase_names() {
        use crate::crd::Phase;
        let names: Vec<&str> = [
            Phase::Pending,
            Phase::Submitting,
            Phase::Submitted,
            Phase::Running,
            Phase::Succeeded,
            Phase::PartiallyFailed,
            Phase::Failed,
        ]
        .iter()
        .map(|p| p.as_str())
        .collect();
        assert_eq!(names, PHASE_LABELS);
    }

    #[test]
    fn outcome_labels_cover_the_client_classification() {
        use crate::hss::client::Outcome;
        for o in [Outcome::Rejected, Outcome::Retryable, Outcome::Ambiguous] {
            assert!(OUTCOMES.contains(&o.as_str()), "{}", o.as_str());
        }
    }

    #[test]
    fn as_call_observer_it_counts_calls_waits_and_429s() {
        use crate::hss::{Api, client::CallObserver};
        let m = Metrics::new();
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
        let text = m.encode();
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
    fn leader_gauge_is_zero_or_one() {
        let m = Metrics::new();
        assert!(m.encode().contains("hss_operator_leader 0"));
        m.set_leader(true);
        assert!(m.encode().contains("hss_operator_leader 1"));
        m.set_leader(false);
        assert!(m.encode().contains("hss_operator_leader 0"));
    }
}
