//! Status: phases, conditions and the one way status is written (server-side apply, one field
//! manager, the whole status every time).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};

use crate::crd::{ClusterScanTask, ClusterScanTaskStatus, Phase, cluster_scan_task::LastError};

/// Field manager for everything the operator writes.
pub const FIELD_MANAGER: &str = "hss-operator";

/// Condition types.
pub const SUBMITTED: &str = "Submitted";
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const THROTTLED: &str = "Throttled";
pub const CREDENTIALS_READY: &str = "CredentialsReady";
/// True on every final phase (Succeeded, PartiallyFailed, Failed), with the phase as reason:
/// `kubectl wait --for=condition=Finished` ends on success and failure alike.
pub const FINISHED: &str = "Finished";

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Sets condition `type_` on `status`, keeping `lastTransitionTime` when the status value does
/// not change. Returns whether anything changed.
pub fn set_condition(
    status: &mut ClusterScanTaskStatus,
    generation: Option<i64>,
    type_: &str,
    value: bool,
    reason: &str,
    message: impl Into<String>,
) -> bool {
    let value = if value { "True" } else { "False" };
    let message: String = message.into();
    let message: String = message.chars().take(1024).collect();
    if let Some(c) = status.conditions.iter_mut().find(|c| c.type_ == type_) {
        let changed = c.status != value
            || c.reason != reason
            || c.message != message
            || c.observed_generation != generation;
        if c.status != value {
            c.last_transition_time = now();
        }
        c.status = value.to_string();
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = generation;
        return changed;
    }
    status.conditions.push(Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: now(),
    });
    true
}

/// Removes condition `type_`. Returns whether it was there.
pub fn clear_condition(status: &mut ClusterScanTaskStatus, type_: &str) -> bool {
    let before = status.conditions.len();
    status.conditions.retain(|c| c.type_ != type_);
    before != status.conditions.len()
}

pub fn condition<'a>(status: &'a ClusterScanTaskStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// The phase of an object, `Pending` when unset.
pub fn phase(obj: &ClusterScanTask) -> Phase {
    obj.status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default()
}

/// `status` with `Finished=True` (reason: the phase) when its phase is final; unchanged
/// otherwise. Pure.
pub fn with_finished(
    status: &ClusterScanTaskStatus,
    generation: Option<i64>,
) -> std::borrow::Cow<'_, ClusterScanTaskStatus> {
    let Some(phase) = status.phase.filter(|p| p.is_final()) else {
        return std::borrow::Cow::Borrowed(status);
    };
    let done = condition(status, FINISHED)
        .is_some_and(|c| c.status == "True" && c.reason == phase.as_str());
    if done {
        return std::borrow::Cow::Borrowed(status);
    }
    let mut st = status.clone();
    set_condition(
        &mut st,
        generation,
        FINISHED,
        true,
        phase.as_str(),
        format!(
            "the scan ended {}; see the Complete and Failed conditions",
            phase.as_str()
        ),
    );
    std::borrow::Cow::Owned(st)
}

/// Builds a `LastError`, never longer than 1 KiB of message.
pub fn last_error(
    category: &str,
    code: Option<&str>,
    message: &str,
    request_id: Option<&str>,
) -> LastError {
    LastError {
        category: category.to_string(),
        code: code.map(str::to_string),
        message: message.chars().take(1024).collect(),
        request_id: request_id.map(str::to_string),
        time: Some(now()),
    }
}

/// Writes `status` as the whole status of `obj` by server-side apply, only if the object is
/// still at the resourceVersion it was computed from (a 409 otherwise).
///
/// Every status write is conditional: a whole-status apply computed from a stale cached copy
/// would otherwise replace a newer status, erasing a task id the operator had already written
/// (the chaos test caught exactly that, and a second task followed).
///
/// A final phase always carries `Finished=True` (see [`with_finished`]), whichever path
/// ended the scan.
pub async fn write(
    api: &Api<ClusterScanTask>,
    obj: &ClusterScanTask,
    status: &ClusterScanTaskStatus,
) -> Result<ClusterScanTask, kube::Error> {
    let status = with_finished(status, obj.metadata.generation);
    let mut metadata = serde_json::json!({ "name": obj.name_any() });
    if let Some(rv) = obj.resource_version() {
        metadata["resourceVersion"] = serde_json::Value::String(rv);
    }
    let patch = serde_json::json!({
        "apiVersion": "hss.scanops.dev/v1alpha1",
        "kind": "ClusterScanTask",
        "metadata": metadata,
        "status": &*status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_transition_time_when_the_value_stays() {
        let mut status = ClusterScanTaskStatus::default();
        assert!(set_condition(
            &mut status,
            Some(1),
            THROTTLED,
            true,
            "Waiting",
            "a"
        ));
        let first = condition(&status, THROTTLED)
            .expect("set")
            .last_transition_time
            .clone();
        assert!(
            !set_condition(&mut status, Some(1), THROTTLED, true, "Waiting", "a"),
            "no change"
        );
        assert!(
            set_condition(&mut status, Some(1), THROTTLED, true, "Waiting", "b"),
            "message changed"
        );
        assert_eq!(
            condition(&status, THROTTLED)
                .expect("set")
                .last_transition_time,
            first
        );
        assert!(clear_condition(&mut status, THROTTLED));
        assert!(condition(&status, THROTTLED).is_none());
    }

    #[test]
    fn every_final_phase_and_only_a_final_phase_is_finished() {
        // (phase, finished, reason)
        let cases = [
            (Phase::Pending, false, "not started"),
            (Phase::Submitting, false, "attempt unresolved"),
            (Phase::Running, false, "HSS still scanning"),
            (Phase::Succeeded, true, "success ends it"),
            (Phase::PartiallyFailed, true, "partial failure ends it"),
            (
                Phase::Failed,
                true,
                "failure ends it: kubectl wait must not hang",
            ),
        ];
        for (phase, finished, why) in cases {
            let st = ClusterScanTaskStatus {
                phase: Some(phase),
                ..Default::default()
            };
            let out = with_finished(&st, Some(3));
            let cond = condition(&out, FINISHED);
            assert_eq!(cond.is_some(), finished, "{why}");
            if let Some(c) = cond {
                assert_eq!(
                    (c.status.as_str(), c.reason.as_str(), c.observed_generation),
                    ("True", phase.as_str(), Some(3)),
                    "{why}"
                );
            }
        }
        let done = with_finished(
            &ClusterScanTaskStatus {
                phase: Some(Phase::Failed),
                ..Default::default()
            },
            Some(1),
        )
        .into_owned();
        assert!(
            matches!(with_finished(&done, Some(1)), std::borrow::Cow::Borrowed(_)),
            "already finished: no copy, no change"
        );
    }
}
