//! ClusterScanTask status: phases, its condition types, `lastError`, and its writer (the
//! kit's conditional whole-status apply, plus `Finished` on every final phase).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;

use crate::{
    controller_runtime::{self, conditions},
    crd::{ClusterScanTask, ClusterScanTaskStatus, Phase, cluster_scan_task::LastError},
};
use hss_client::text;

/// Condition types.
pub const SUBMITTED: &str = "Submitted";
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const THROTTLED: &str = "Throttled";
pub const CREDENTIALS_READY: &str = "CredentialsReady";
/// Whether a finished cluster scan's findings are in `status.findings`.
pub const FINDINGS_READ: &str = "FindingsRead";
/// Whether the reports of the findings (`--reports`) were written; absent with `--reports off`.
pub const REPORTS_WRITTEN: &str = "ReportsWritten";
/// True on every final phase (Succeeded, PartiallyFailed, Failed), with the phase as reason:
/// `kubectl wait --for=condition=Finished` ends on success and failure alike.
pub const FINISHED: &str = "Finished";

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
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
    let done = conditions::get(&status.conditions, FINISHED)
        .is_some_and(|c| c.status == "True" && c.reason == phase.as_str());
    if done {
        return std::borrow::Cow::Borrowed(status);
    }
    let mut st = status.clone();
    conditions::set(
        &mut st.conditions,
        generation,
        FINISHED,
        true,
        phase.as_str(),
        &format!(
            "the scan ended {}; see the Complete and Failed conditions",
            phase.as_str()
        ),
        jiff::Timestamp::now(),
    );
    std::borrow::Cow::Owned(st)
}

/// Builds a `LastError`, every part bounded ([`text`]): a message of at most 1 KiB, a code
/// and a request id of what HSS's look like.
pub fn last_error(
    category: &str,
    code: Option<&str>,
    message: &str,
    request_id: Option<&str>,
) -> LastError {
    LastError {
        category: text::bounded(category, text::CODE),
        code: text::bounded_opt(code, text::CODE),
        message: text::bounded(message, 1024),
        request_id: text::bounded_opt(request_id, text::REQUEST_ID),
        time: Some(now()),
    }
}

/// Writes `status` as the whole status of `obj`, only if the object is still at the
/// resourceVersion it was computed from (a 409 otherwise; see [`controller_runtime::status`]).
///
/// A final phase always carries `Finished=True` (see [`with_finished`]), whichever path
/// ended the scan.
pub async fn write(
    api: &Api<ClusterScanTask>,
    obj: &ClusterScanTask,
    status: &ClusterScanTaskStatus,
) -> Result<ClusterScanTask, kube::Error> {
    let status = with_finished(status, obj.metadata.generation);
    controller_runtime::status::write(api, obj, &*status).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let cond = conditions::get(&out.conditions, FINISHED);
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
