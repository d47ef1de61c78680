//! Transitions while HSS runs the task: progress from the shared poll, RetryTask for failed
//! clusters, the end with its results, and a task HSS stopped listing.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;

use super::{Transition, current, hss_error, set};
use crate::{
    controller::{status, tracking},
    controller_runtime::{events, retry::backoff},
    crd::{
        ClusterScanTask, ClusterScanTaskStatus, Phase,
        cluster_scan_task::{ResourceResult, RetryMark},
    },
};
use hss_client::model::{TaskInfo, TaskStatus, TaskType};

/// The status with HSS's progress from the shared poll.
fn with_progress(obj: &ClusterScanTask, info: &TaskInfo) -> ClusterScanTaskStatus {
    let mut st = current(obj);
    st.progress = Some(tracking::progress(info));
    st.observed_generation = obj.metadata.generation;
    st
}

/// The task is queued or running: progress, phase, an Event when it starts running.
pub fn progressed(obj: &ClusterScanTask, info: &TaskInfo, poll_every: Duration) -> Transition {
    let mut st = with_progress(obj, info);
    let mut events = vec![];
    if info.task_status == TaskStatus::Ready {
        st.phase = Some(Phase::Submitted);
    } else {
        if st.phase != Some(Phase::Running) {
            events.push(events::normal(
                "Running",
                "Track",
                &format!("HSS task {} is running", info.task_id),
            ));
        }
        st.phase = Some(Phase::Running);
    }
    Transition {
        status: st,
        events,
        action: Action::requeue(poll_every * 4),
    }
}

/// How many resources failed, by HSS's count or the rows, whichever is larger.
fn failed_count(info: &TaskInfo, rows: &[ResourceResult]) -> i64 {
    tracking::progress(info)
        .failed
        .unwrap_or(0)
        .max(rows.iter().filter(|r| r.status == "failed").count() as i64)
}

/// Whether a finished task should get a RetryTask for its failed clusters.
pub fn wants_retry(obj: &ClusterScanTask, info: &TaskInfo, rows: &[ResourceResult]) -> bool {
    let retries = obj.status.as_ref().and_then(|s| s.retries).unwrap_or(0);
    failed_count(info, rows) > 0
        && obj.spec.task_type == TaskType::ClusterScan
        && retries < obj.spec.retry_failed_clusters.unwrap_or(0)
}

/// How long a `finished` report of the run before a RetryTask is taken for stale: HSS may
/// report the old run for a while after accepting the retry. Past this, a `finished` report is
/// believed even if it carries the old end time (HSS never showed the re-run).
pub const RETRY_SETTLE: Duration = Duration::from_secs(300);

/// Whether `info` (a `finished` report) is still the run before the last RetryTask: its end
/// time is the one recorded at the retry (or HSS gives none), and the settle time has not
/// passed. Such a report is not the end of the scan. Pure.
pub fn retry_not_yet_shown(obj: &ClusterScanTask, info: &TaskInfo, now: Timestamp) -> bool {
    let Some(mark) = obj.status.as_ref().and_then(|s| s.last_retry.as_ref()) else {
        return false;
    };
    let settled = now
        .duration_since(mark.at.0)
        .try_into()
        .is_ok_and(|elapsed: Duration| elapsed >= RETRY_SETTLE);
    let same_run = match (info.end_time, mark.previous_end_time) {
        (Some(end), Some(before)) => end <= before,
        // Without end times, only the settle time tells the runs apart.
        _ => true,
    };
    info.task_status == TaskStatus::Finished && same_run && !settled
}

/// A `finished` report that is still the run before the RetryTask: nothing changes, look again
/// at the next poll.
pub fn awaiting_retry(obj: &ClusterScanTask, poll_every: Duration) -> Transition {
    Transition {
        status: current(obj),
        events: vec![],
        action: Action::requeue(poll_every),
    }
}

/// RetryTask accepted: running again, one more retry counted, the old run's end time kept so
/// that a late `finished` report of it is not taken for the retry's.
pub fn retried(
    obj: &ClusterScanTask,
    info: &TaskInfo,
    rows: Vec<ResourceResult>,
    poll_every: Duration,
    now: Timestamp,
) -> Transition {
    let mut st = with_progress(obj, info);
    let failed = failed_count(info, &rows);
    let retries = st.retries.unwrap_or(0) + 1;
    let allowed = obj.spec.retry_failed_clusters.unwrap_or(0);
    st.retries = Some(retries);
    st.last_retry = Some(RetryMark {
        at: Time(now),
        previous_end_time: info.end_time,
    });
    st.phase = Some(Phase::Running);
    st.results = rows;
    Transition {
        status: st,
        events: vec![events::normal(
            "Retried",
            "Retry",
            &format!("{failed} cluster(s) failed; HSS re-runs them (retry {retries} of {allowed})"),
        )],
        action: Action::requeue(poll_every * 4),
    }
}

/// The task finished: Succeeded or PartiallyFailed with the results, `Complete=True`.
pub fn finished(
    obj: &ClusterScanTask,
    info: &TaskInfo,
    rows: Vec<ResourceResult>,
    now: Timestamp,
) -> Transition {
    let mut st = with_progress(obj, info);
    let failed = failed_count(info, &rows);
    let phase = if failed > 0 {
        Phase::PartiallyFailed
    } else {
        Phase::Succeeded
    };
    st.phase = Some(phase);
    st.finished_at = Some(Time(now));
    st.results = rows;
    st.last_error = None;
    let task_id = &info.task_id;
    let message = match phase {
        Phase::Succeeded => format!(
            "HSS task {task_id} finished; every {} succeeded",
            if obj.spec.task_type == TaskType::ClusterScan {
                "cluster"
            } else {
                "file"
            }
        ),
        _ => format!("HSS task {task_id} finished; {failed} failed (see status.results)"),
    };
    set(
        &mut st,
        obj,
        status::COMPLETE,
        true,
        phase.as_str(),
        &message,
        now,
    );
    let event = if phase == Phase::Succeeded {
        events::normal("Completed", "Track", &message)
    } else {
        events::warning("Completed", "Track", &message)
    };
    Transition {
        status: st,
        events: vec![event],
        action: Action::await_change(),
    }
}

/// HSS no longer lists the task, not even asked by id, and has not for `--task-lost-after`:
/// its progress and results cannot be read. `Failed` (`TaskNotListed`), once, with the way out.
pub fn task_lost(
    obj: &ClusterScanTask,
    task_id: &str,
    absent_since: Timestamp,
    now: Timestamp,
) -> Transition {
    let mut st = current(obj);
    st.finished_at = Some(Time(now));
    let message = format!(
        "HSS no longer lists task {task_id} (not found by id since {absent_since}); its results \
         cannot be read. Create a new ClusterScanTask to scan again."
    );
    super::failed(
        &mut st,
        obj,
        "TaskNotListed",
        &message,
        "the results cannot be read",
        now,
    );
    Transition {
        status: st,
        events: vec![events::warning("TaskNotListed", "Track", &message)],
        action: Action::await_change(),
    }
}

/// Reading the results, or RetryTask, failed: progress and `lastError`, retry later.
pub fn results_unavailable(
    obj: &ClusterScanTask,
    info: &TaskInfo,
    err: &hss_client::Error,
    now: Timestamp,
) -> Transition {
    let mut st = with_progress(obj, info);
    st.last_error = Some(hss_error(err, now));
    Transition {
        status: st,
        events: vec![],
        action: Action::requeue(err.retry_after().unwrap_or_else(|| backoff(2))),
    }
}
