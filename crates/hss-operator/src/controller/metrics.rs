//! What the ClusterScanTask controller records, as Prometheus families: reconciles, the steps of
//! a submission, the objects by phase and the shared poll. The HSS calls its clients make
//! ([`crate::hss_metrics`]) and the findings gauges ([`crate::findings::gauges`]) are defined by
//! those modules; [`ControllerMetrics`] holds them because the controller is what records them.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hss_operator_reconciles_total` | counter | |
//! | `hss_operator_reconcile_failures_total` | counter | `category` |
//! | `hss_operator_reconcile_duration_seconds` | histogram | |
//! | `hss_operator_submission_step_duration_seconds` | histogram | `step` |
//! | `hss_operator_objects` | gauge | `phase` |
//! | `hss_operator_unresolved_submissions` | gauge | |
//! | `hss_operator_tracked_tasks` | gauge | |
//! | `hss_operator_budget_queue_waiting` | gauge | `api`, `namespace` | (waiters in the fair queue; `namespace` empty: the operator's own calls)
//! | `hss_operator_last_successful_poll_timestamp_seconds` | gauge | | (the process start until the first success)
//!
//! `step` is a [`SubmissionStep`], `phase` a [`Phase`]; `category` is an error's `category()`,
//! a `&'static str` literal. Every `step` and `phase` series exists at zero from the start.

use std::sync::{Arc, atomic::AtomicU64};
use std::time::{Duration, Instant};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::{crd::Phase, findings::gauges::Gauges, hss_metrics::HssMetrics};

/// The `step` label: the parts of one CreateTask submission, in order.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SubmissionStep {
    /// Writing the attempt record.
    Record,
    /// Confirming the lease (an API read with leader election, nothing without).
    Lease,
    /// The CreateTask call, budget pacing included.
    Post,
    /// Writing the task id.
    TaskId,
}

impl SubmissionStep {
    pub const ALL: [SubmissionStep; 4] = [
        SubmissionStep::Record,
        SubmissionStep::Lease,
        SubmissionStep::Post,
        SubmissionStep::TaskId,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SubmissionStep::Record => "record",
            SubmissionStep::Lease => "lease",
            SubmissionStep::Post => "post",
            SubmissionStep::TaskId => "task_id",
        }
    }
}

impl EncodeLabelValue for SubmissionStep {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: SubmissionStep,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    api: &'static str,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: Phase,
}

/// Reconciles include budget waits and HSS calls, so the buckets reach minutes.
const RECONCILE_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Submission steps are API writes and one HSS call: milliseconds, seconds when something is
/// wrong.
const STEP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

/// The controller's families. Share it as `Arc<ControllerMetrics>`.
pub struct ControllerMetrics {
    reconciles: Counter,
    reconcile_failures: Family<CategoryLabels, Counter>,
    reconcile_duration: Histogram,
    submission_steps: Family<StepLabels, Histogram, fn() -> Histogram>,
    objects: Family<PhaseLabels, Gauge>,
    unresolved_submissions: Gauge,
    tracked_tasks: Gauge,
    queue_waiting: Family<QueueLabels, Gauge>,
    last_successful_poll: Gauge<f64, AtomicU64>,
    /// The HSS calls of the controller's clients: build them `with_observer(hss.clone())`.
    pub hss: Arc<HssMetrics>,
    /// What finished scans found, per cluster.
    pub findings: Gauges,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerMetrics").finish_non_exhaustive()
    }
}

impl ControllerMetrics {
    /// The families, not yet registered ([`register`](Self::register)), with every `step` and
    /// `phase` series at zero and the poll timestamp at now.
    pub fn new() -> Self {
        let m = Self {
            reconciles: Counter::default(),
            reconcile_failures: Family::default(),
            reconcile_duration: Histogram::new(RECONCILE_BUCKETS),
            submission_steps: Family::new_with_constructor(step_histogram),
            objects: Family::default(),
            unresolved_submissions: Gauge::default(),
            tracked_tasks: Gauge::default(),
            queue_waiting: Family::default(),
            last_successful_poll: Gauge::default(),
            hss: Arc::default(),
            findings: Gauges::default(),
        };
        // Staleness counts from the start: a process whose polls never succeed is stale too.
        m.poll_succeeded(jiff::Timestamp::now());
        for phase in Phase::ALL {
            m.objects.get_or_create_owned(&PhaseLabels { phase });
        }
        for step in SubmissionStep::ALL {
            m.submission_steps.get_or_create_owned(&StepLabels { step });
        }
        m
    }

    /// Registers the controller's families in `registry` (whose prefix is `hss_operator`), and
    /// the HSS and findings families in sub-registries of it (same prefix, their own modules'
    /// `register`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "reconciles",
            "Reconciles of ClusterScanTask objects that succeeded",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error category",
            self.reconcile_failures.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took, including budget waits and HSS calls",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        registry.register_with_unit(
            "submission_step_duration",
            "Time each step of a CreateTask submission took: record, lease, post, task_id",
            Unit::Seconds,
            self.submission_steps.clone(),
        );
        registry.register(
            "objects",
            "ClusterScanTask objects by phase",
            self.objects.clone(),
        );
        registry.register(
            "unresolved_submissions",
            "Objects in phase Submitting whose CreateTask outcome is not yet known",
            self.unresolved_submissions.clone(),
        );
        registry.register(
            "tracked_tasks",
            "HSS tasks followed by the shared poll",
            self.tracked_tasks.clone(),
        );
        registry.register(
            "budget_queue_waiting",
            "Callers waiting in the fair queue for a token of an API, by namespace (empty: the operator's own calls)",
            self.queue_waiting.clone(),
        );
        registry.register_with_unit(
            "last_successful_poll_timestamp",
            "Unix time of the last shared poll round that succeeded (the process start until one has)",
            Unit::Seconds,
            self.last_successful_poll.clone(),
        );
        // Sub-registries without labels keep the prefix, so the names stay `hss_operator_*`.
        self.hss
            .register(registry.sub_registry_with_labels(std::iter::empty()));
        self.findings
            .register(registry.sub_registry_with_labels(std::iter::empty()));
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

    /// One step of a submission took `took`.
    pub fn submission_step(&self, step: SubmissionStep, took: Duration) {
        self.submission_steps
            .get_or_create(&StepLabels { step })
            .observe(took.as_secs_f64());
    }

    /// Sets the object count of every phase from `count`, so the gauge always describes one
    /// complete snapshot.
    pub fn set_objects_by_phase(&self, count: impl Fn(Phase) -> i64) {
        for phase in Phase::ALL {
            self.objects
                .get_or_create(&PhaseLabels { phase })
                .set(count(phase));
        }
    }

    pub fn set_unresolved_submissions(&self, n: i64) {
        self.unresolved_submissions.set(n);
    }

    pub fn set_tracked_tasks(&self, n: i64) {
        self.tracked_tasks.set(n);
    }

    /// The fair queue's depth now, replacing the last snapshot (namespaces no longer waiting
    /// go away).
    pub fn set_queue_waiting(&self, waiting: &[(hss_client::Api, String, usize)]) {
        self.queue_waiting.clear();
        for (api, namespace, n) in waiting {
            self.queue_waiting
                .get_or_create(&QueueLabels {
                    api: api.as_str(),
                    namespace: namespace.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// A shared poll round succeeded at `at`.
    pub fn poll_succeeded(&self, at: jiff::Timestamp) {
        self.last_successful_poll
            .set(at.as_millisecond() as f64 / 1000.0);
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

    fn encode(m: &ControllerMetrics) -> String {
        let mut registry = Registry::with_prefix("hss_operator");
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        text
    }

    #[test]
    fn the_queue_depth_is_one_snapshot_by_api_and_namespace() {
        let m = ControllerMetrics::new();
        let api = hss_client::Api::CreateTask;
        m.set_queue_waiting(&[(api, "team-a".into(), 300), (api, "team-b".into(), 3)]);
        let text = encode(&m);
        let line = |ns: &str, n: u32| {
            format!(
                "hss_operator_budget_queue_waiting{{api=\"{}\",namespace=\"{ns}\"}} {n}",
                api.as_str()
            )
        };
        assert!(text.contains(&line("team-a", 300)), "{text}");
        assert!(text.contains(&line("team-b", 3)), "{text}");
        m.set_queue_waiting(&[(api, "team-a".into(), 299)]);
        let text = encode(&m);
        assert!(text.contains(&line("team-a", 299)), "{text}");
        assert!(
            !text.contains("namespace=\"team-b\""),
            "a namespace no longer waiting goes away: {text}"
        );
    }

    #[test]
    fn every_step_and_phase_series_exists_at_zero() {
        let text = encode(&ControllerMetrics::new());
        for step in SubmissionStep::ALL.map(SubmissionStep::as_str) {
            let line =
                format!("hss_operator_submission_step_duration_seconds_count{{step=\"{step}\"}} 0");
            assert!(text.contains(&line), "missing {line:?}");
        }
        for phase in Phase::ALL.map(Phase::as_str) {
            let line = format!("hss_operator_objects{{phase=\"{phase}\"}} 0");
            assert!(text.contains(&line), "missing {line:?}");
        }
    }

    #[test]
    fn a_phase_snapshot_sets_every_phase() {
        let m = ControllerMetrics::new();
        m.set_objects_by_phase(|p| i64::from(p == Phase::Running) * 3);
        assert!(encode(&m).contains("hss_operator_objects{phase=\"Running\"} 3"));
        m.set_objects_by_phase(|p| i64::from(p == Phase::Pending));
        let text = encode(&m);
        assert!(text.contains("hss_operator_objects{phase=\"Pending\"} 1"));
        assert!(
            text.contains("hss_operator_objects{phase=\"Running\"} 0"),
            "a new snapshot resets the others"
        );
    }

    #[test]
    fn the_phase_label_is_the_phase_name() {
        // The derived label writes the variant name; `as_str` (and serde) must agree.
        let text = encode(&ControllerMetrics::new());
        let labels: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("hss_operator_objects{phase=\""))
            .filter_map(|l| l.split_once('"').map(|(phase, _)| phase))
            .collect();
        assert_eq!(labels, Phase::ALL.map(Phase::as_str).into());
        for phase in Phase::ALL {
            assert_eq!(
                serde_json::to_value(phase).expect("serializes"),
                phase.as_str()
            );
        }
    }
}
