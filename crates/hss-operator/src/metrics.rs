//! The operator's Prometheus metrics: one [`Registry`], every name prefixed `hss_operator_`.
//!
//! Each subsystem defines its families next to the code that records them and registers them
//! itself, on a sub-registry of this one (same prefix, so the names are as below); [`Metrics`]
//! only creates the registry, hands each its part, and encodes.
//!
//! | metric | type | labels | defined in |
//! |---|---|---|---|
//! | `hss_operator_reconciles_total` | counter | | [`controller::metrics`] |
//! | `hss_operator_reconcile_failures_total` | counter | `category` | [`controller::metrics`] |
//! | `hss_operator_reconcile_duration_seconds` | histogram | | [`controller::metrics`] |
//! | `hss_operator_hss_calls_total` | counter | `api`, `outcome` | [`hss_metrics`] |
//! | `hss_operator_hss_call_duration_seconds` | histogram | `api` | [`hss_metrics`] |
//! | `hss_operator_hss_throttled_total` | counter | `api` | [`hss_metrics`] |
//! | `hss_operator_budget_wait_seconds` | histogram | `api` | [`hss_metrics`] |
//! | `hss_operator_budget_rate` | gauge | `api` | [`hss_metrics`] |
//! | `hss_operator_submission_step_duration_seconds` | histogram | `step` | [`controller::metrics`] |
//! | `hss_operator_objects` | gauge | `phase` | [`controller::metrics`] |
//! | `hss_operator_unresolved_submissions` | gauge | | [`controller::metrics`] |
//! | `hss_operator_tracked_tasks` | gauge | | [`controller::metrics`] |
//! | `hss_operator_budget_queue_waiting` | gauge | `api`, `namespace` | [`controller::metrics`] (callers in the fair queue; `namespace` empty: the operator's own calls) |
//! | `hss_operator_last_successful_poll_timestamp_seconds` | gauge | | [`controller::metrics`] (the process start until the first success) |
//! | `hss_operator_leader` | gauge | | [`admin`](crate::controller_runtime::admin::LeaderMetrics), beside readiness |
//!
//! The findings gauges (`hss_operator_findings`, `hss_operator_cluster_check_findings`,
//! `hss_operator_iac_findings`, `hss_operator_cluster_last_scan_timestamp_seconds`) are
//! described and defined in `findings::gauges`; the controller, which records them, registers
//! them.
//!
//! # Labels are bounded by construction
//! Label values are enums, never text from objects, errors or HSS ids:
//! - `api`: [`ApiLabel`](crate::hss_metrics::ApiLabel), an [`Api`] written as [`Api::as_str`];
//! - `outcome`: [`CallOutcome`] (`success` plus [`Outcome::as_str`](hss_client::Outcome));
//! - `phase`: [`Phase`], written as its name ([`Phase::as_str`]);
//! - `step`: [`SubmissionStep`], the steps of one CreateTask submission;
//! - `category`: the `category()` of the module errors, which are `&'static str` literals.
//!
//! `api`, `outcome`, `phase` and `step` series are created at zero up front, for every value,
//! so dashboards and `rate()` see them before the first event.
//!
//! The exposition is the OpenMetrics text format ([`CONTENT_TYPE`]), which Prometheus scrapes
//! natively.
//!
//! [`controller::metrics`]: crate::controller::metrics
//! [`hss_metrics`]: crate::hss_metrics

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::{controller::metrics::ControllerMetrics, controller_runtime::admin::LeaderMetrics};

#[cfg(doc)]
use crate::{controller::metrics::SubmissionStep, crd::Phase, hss_metrics::CallOutcome};
#[cfg(doc)]
use hss_client::Api;

/// Content-Type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry and every subsystem's part of it. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    /// The ClusterScanTask controller's families, with the HSS calls of its clients and the
    /// findings gauges (hand it to [`Runtime`](crate::controller::Runtime)).
    pub controller: Arc<ControllerMetrics>,
    /// `leader`.
    pub leadership: LeaderMetrics,
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

/// A sub-registry with the parent's prefix and no labels of its own, for one subsystem.
fn part(registry: &mut Registry) -> &mut Registry {
    registry.sub_registry_with_labels(std::iter::empty())
}

impl Metrics {
    /// A fresh registry with the `hss_operator` prefix, each subsystem's families registered
    /// on a sub-registry of it.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hss_operator");
        let controller = Arc::new(ControllerMetrics::new());
        controller.register(part(&mut registry));
        let leadership = LeaderMetrics::default();
        leadership.register(part(&mut registry));
        Self {
            registry,
            controller,
            leadership,
        }
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
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, time::Duration};

    use hss_client::Api;

    use super::*;
    use crate::{controller::metrics::SubmissionStep, crd::Phase, hss_metrics::CallOutcome};

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

    /// The family names (`# TYPE` lines) of the exposition.
    fn families(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' ').map(|(name, _)| name.to_string()))
            .collect()
    }

    fn recorded() -> Metrics {
        let m = Metrics::new();
        let c = &m.controller;
        c.reconcile_started().finish();
        drop(c.reconcile_started());
        c.reconcile_ok();
        c.reconcile_failed("write_status");
        c.hss.call(
            Api::CreateTask,
            CallOutcome::Success,
            Duration::from_millis(120),
        );
        c.hss.call(
            Api::ListTasks,
            CallOutcome::Ambiguous,
            Duration::from_secs(3),
        );
        c.hss.budget_wait(Api::CreateTask, Duration::from_secs(12));
        c.hss.throttled(Api::ListTasks);
        c.hss.set_budget_rates(&[(Api::CreateTask, 4.0)]);
        c.set_objects_by_phase(|p| match p {
            Phase::Running => 3,
            Phase::Pending => 1,
            _ => 0,
        });
        c.set_unresolved_submissions(2);
        c.set_tracked_tasks(4);
        c.poll_succeeded(jiff::Timestamp::from_second(1_700_000_000).expect("valid"));
        c.submission_step(SubmissionStep::Post, Duration::from_millis(20));
        m.leadership.set_leader(true);
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
            "hss_operator_budget_rate{api=\"CreateTask\"} 4",
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
    fn the_documented_families_and_only_those_are_exposed() {
        let m = recorded();
        // The findings gauges appear once something was recorded.
        use crate::crd::findings::{ClusterFindings, FileFindings, ScanFindings, SecurityCheck};
        let cluster = ClusterFindings {
            cluster_id: "c-1".into(),
            scans: vec![ScanFindings {
                scan_type: "benchmark".into(),
                ..Default::default()
            }],
            security_check: Some(SecurityCheck::default()),
        };
        m.controller.findings.record("team-a", &[cluster], 0);
        let file = FileFindings {
            file_id: "f-1".into(),
            ..Default::default()
        };
        m.controller.findings.record_files("team-a", &[file], 0);
        assert_eq!(
            families(&m.encode()),
            [
                "hss_operator_reconciles",
                "hss_operator_reconcile_failures",
                "hss_operator_reconcile_duration_seconds",
                "hss_operator_hss_calls",
                "hss_operator_hss_call_duration_seconds",
                "hss_operator_hss_throttled",
                "hss_operator_budget_wait_seconds",
                "hss_operator_budget_rate",
                "hss_operator_submission_step_duration_seconds",
                "hss_operator_objects",
                "hss_operator_unresolved_submissions",
                "hss_operator_tracked_tasks",
                "hss_operator_last_successful_poll_timestamp_seconds",
                "hss_operator_leader",
                "hss_operator_findings",
                "hss_operator_cluster_check_findings",
                "hss_operator_iac_findings",
                "hss_operator_cluster_last_scan_timestamp_seconds",
            ]
            .map(String::from)
            .into()
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
    fn every_enum_value_has_its_series_at_zero_from_the_start() {
        let text = Metrics::new().encode();
        let mut expected = Vec::new();
        for api in Api::ALL.map(Api::as_str) {
            expected.push(format!(
                "hss_operator_hss_throttled_total{{api=\"{api}\"}} 0"
            ));
            for outcome in CallOutcome::ALL.map(CallOutcome::as_str) {
                expected.push(format!(
                    "hss_operator_hss_calls_total{{api=\"{api}\",outcome=\"{outcome}\"}} 0"
                ));
            }
        }
        for phase in Phase::ALL.map(Phase::as_str) {
            expected.push(format!("hss_operator_objects{{phase=\"{phase}\"}} 0"));
        }
        for step in SubmissionStep::ALL.map(SubmissionStep::as_str) {
            expected.push(format!(
                "hss_operator_submission_step_duration_seconds_count{{step=\"{step}\"}} 0"
            ));
        }
        for line in expected {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_the_enum_names() {
        let text = recorded().encode();
        let set = |values: Vec<&str>| -> BTreeSet<String> {
            values.into_iter().map(str::to_string).collect()
        };
        for (metric, key, value) in label_values(&text) {
            let allowed = match key.as_str() {
                "api" => set(Api::ALL.map(Api::as_str).to_vec()),
                "outcome" => set(CallOutcome::ALL.map(CallOutcome::as_str).to_vec()),
                "phase" => set(Phase::ALL.map(Phase::as_str).to_vec()),
                "step" => set(SubmissionStep::ALL.map(SubmissionStep::as_str).to_vec()),
                "category" => set(vec!["write_status"]),
                "le" => continue,
                other => panic!("unexpected label {other} on {metric}"),
            };
            assert!(
                allowed.contains(&value),
                "{metric}: {key}={value:?} is outside its set"
            );
        }
        let steps = SubmissionStep::ALL.map(SubmissionStep::as_str);
        assert_eq!(steps, ["record", "lease", "post", "task_id"]);
        let outcomes = CallOutcome::ALL.map(CallOutcome::as_str);
        assert_eq!(outcomes, ["success", "rejected", "retryable", "ambiguous"]);
    }

    #[test]
    fn a_phase_snapshot_resets_the_others() {
        let m = Metrics::new();
        m.controller.set_objects_by_phase(|p| match p {
            Phase::Running => 3,
            Phase::Pending => 1,
            _ => 0,
        });
        assert!(
            m.encode()
                .contains("hss_operator_objects{phase=\"Running\"} 3")
        );
        m.controller
            .set_objects_by_phase(|p| i64::from(p == Phase::Submitted) * 2);
        let text = m.encode();
        assert!(text.contains("hss_operator_objects{phase=\"Submitted\"} 2"));
        assert!(
            text.contains("hss_operator_objects{phase=\"Running\"} 0"),
            "a new snapshot resets the others"
        );
    }

    #[test]
    fn leader_gauge_is_zero_or_one() {
        let m = Metrics::new();
        assert!(m.encode().contains("hss_operator_leader 0"));
        m.leadership.set_leader(true);
        assert!(m.encode().contains("hss_operator_leader 1"));
        m.leadership.set_leader(false);
        assert!(m.encode().contains("hss_operator_leader 0"));
    }
}
