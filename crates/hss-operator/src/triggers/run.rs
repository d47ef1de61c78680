//! A run, built from its trigger's template: the template's spec, labels and annotations
//! except the operator's own (`hss.scanops.dev/...`), the trigger's links (label, owner
//! reference) and the times of the decision. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::decide::PlannedRun;
use crate::crd::{
    ClusterScanTask, ClusterScanTrigger,
    cluster_scan_trigger::{
        RUN_NOW_ANNOTATION, RUN_REASON_LABEL, RUN_TIME_ANNOTATION, SCHEDULED_TIME_ANNOTATION,
        TRIGGER_LABEL,
    },
};

/// Prefix of the labels and annotations the operator reads or writes.
const OPERATOR_PREFIX: &str = "hss.scanops.dev/";

/// `map` without the operator's own keys (prefix `hss.scanops.dev/`).
fn without_operator_keys(map: BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter()
        .filter(|(k, _)| !k.starts_with(OPERATOR_PREFIX))
        .collect()
}

/// The ClusterScanTask for `planned`: template metadata (without the operator's own labels
/// and annotations) and spec, owned by the trigger.
pub fn build_run(
    trigger: &ClusterScanTrigger,
    planned: &PlannedRun,
    run_time: jiff::Timestamp,
) -> ClusterScanTask {
    let template_meta = trigger.spec.template.metadata.clone().unwrap_or_default();
    let mut labels = without_operator_keys(template_meta.labels);
    labels.insert(TRIGGER_LABEL.into(), trigger.name_any());
    labels.insert(RUN_REASON_LABEL.into(), planned.reason.as_str().into());
    let mut annotations = without_operator_keys(template_meta.annotations);
    annotations.insert(RUN_TIME_ANNOTATION.into(), run_time.to_string());
    if let Some(at) = planned.scheduled {
        annotations.insert(SCHEDULED_TIME_ANNOTATION.into(), at.to_string());
    }
    ClusterScanTask {
        metadata: ObjectMeta {
            name: Some(planned.name.clone()),
            namespace: trigger.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: trigger.controller_owner_ref(&()).map(|mut o| {
                // Foreground deletion of a trigger waits for its runs.
                o.block_owner_deletion = Some(true);
                vec![o]
            }),
            ..Default::default()
        },
        spec: trigger.spec.template.spec.clone(),
        status: None,
    }
}

/// Keeps only what the controller reads of a trigger's metadata: the run-now annotation.
pub(super) fn trim_trigger(trigger: &mut ClusterScanTrigger) {
    crate::controller_runtime::cache::keep_only(&mut trigger.metadata, &[RUN_NOW_ANNOTATION], &[]);
}

/// Keeps only what triggers read of a run.
pub(super) fn trim_run(task: &mut ClusterScanTask) {
    crate::controller_runtime::cache::keep_only(
        &mut task.metadata,
        &[RUN_TIME_ANNOTATION, SCHEDULED_TIME_ANNOTATION],
        &[RUN_REASON_LABEL, TRIGGER_LABEL],
    );
    if let Some(status) = task.status.as_mut() {
        *status = crate::crd::ClusterScanTaskStatus {
            phase: status.phase,
            finished_at: status.finished_at.take(),
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::decide::RunInfo;

    #[test]
    fn runs_carry_the_template_links_to_the_trigger_and_their_times() {
        let trigger: ClusterScanTrigger = serde_json::from_value(serde_json::json!({
            "apiVersion": "hss.scanops.dev/v1alpha1",
            "kind": "ClusterScanTrigger",
            "metadata": {"name": "nightly", "namespace": "sec", "uid": "u-1"},
            "spec": {"template": {
                "metadata": {"labels": {"team": "sec", "hss.scanops.dev/trigger": "other"},
                             "annotations": {"note": "x", "hss.scanops.dev/adopt-task": "t-1",
                                             "hss.scanops.dev/resubmit": "1",
                                             "hss.scanops.dev/scheduled-time": "2000-01-01T00:00:00Z"}},
                "spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "all_cluster"}}
            }}
        }))
        .expect("trigger");
        let at: jiff::Timestamp = "2030-01-01T02:00:00Z".parse().expect("ts");
        let planned = PlannedRun {
            name: "nightly-0123456789".into(),
            reason: crate::crd::RunReason::Schedule,
            scheduled: Some(at),
            causes: vec![],
        };
        let run = build_run(&trigger, &planned, at);
        assert_eq!(
            run.labels().get(TRIGGER_LABEL).map(String::as_str),
            Some("nightly")
        );
        assert_eq!(
            run.labels().get(RUN_REASON_LABEL).map(String::as_str),
            Some("schedule")
        );
        assert_eq!(run.labels().get("team").map(String::as_str), Some("sec"));
        assert_eq!(run.annotations().get("note").map(String::as_str), Some("x"));
        // The operator's own annotations of the template are not the run's.
        for key in ["hss.scanops.dev/adopt-task", "hss.scanops.dev/resubmit"] {
            assert!(!run.annotations().contains_key(key), "{key}");
        }
        assert_eq!(
            run.annotations()
                .get(SCHEDULED_TIME_ANNOTATION)
                .map(String::as_str),
            Some("2030-01-01T02:00:00Z")
        );
        let owner = &run.owner_references()[0];
        assert_eq!(
            (
                owner.uid.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("u-1", Some(true), Some(true))
        );
        assert_eq!(run.spec, trigger.spec.template.spec);
        assert_eq!(RunInfo::from_task(&run).run_time, Some(at));
        // Nor is a template's scheduled-time on a run that has none of its own.
        let on_demand = build_run(
            &trigger,
            &PlannedRun {
                scheduled: None,
                reason: crate::crd::RunReason::OnDemand,
                ..planned
            },
            at,
        );
        assert!(
            !on_demand
                .annotations()
                .contains_key(SCHEDULED_TIME_ANNOTATION)
        );
        assert_eq!(
            on_demand.labels().get(TRIGGER_LABEL).map(String::as_str),
            Some("nightly")
        );
    }
}
