//! Following a submitted task: progress from the shared poll, results once it finishes,
//! optional RetryTask for failed clusters.

use std::sync::Arc;

use kube::{runtime::controller::Action, runtime::reflector::ObjectRef};

use super::{Context, Error, fair, offload, transitions};
use crate::crd::{
    ClusterScanTask,
    cluster_scan_task::{MAX_RESULTS, Progress, ResourceResult, ScanFailure},
};
use hss_client::{
    client::HssClient,
    limits::MAX_PAGE,
    model::{
        ListTaskResourcesRequest, ListTaskResourcesResponse, RetryClusterScanInfo, RetryRangeType,
        RetryTaskRequest, ScanStatus, TaskInfo, TaskStatus, TaskType,
    },
};

use hss_client::{
    model::wire_name,
    text::{MESSAGE, NAME, bounded, bounded_opt},
};

/// HSS's view as status progress. Pure.
pub fn progress(info: &TaskInfo) -> Progress {
    let (scanning, succeeded, failed) = match (&info.cluster_scan_info, &info.iac_scan_info) {
        (Some(c), _) => (
            c.scanning_cluster_num,
            c.success_cluster_num,
            c.failed_cluster_num,
        ),
        (None, Some(i)) => (
            i.scan_file_num
                .zip(i.success_file_num)
                .zip(i.failed_file_num)
                .map(|((n, s), f)| (n - s - f).max(0)),
            i.success_file_num,
            i.failed_file_num,
        ),
        (None, None) => (None, None, None),
    };
    Progress {
        task_status: Some(wire_name(info.task_status)),
        estimated_minutes: info.estimated_time,
        scanning,
        succeeded,
        failed,
    }
}

/// Per-resource results, failed first, at most [`MAX_RESULTS`], every server string bounded
/// ([`hss_client::text`]). Pure.
pub fn results(resp: &ListTaskResourcesResponse) -> Vec<ResourceResult> {
    let mut rows: Vec<ResourceResult> = resp
        .cluster_scan_data_list
        .iter()
        .map(|c| ResourceResult {
            id: bounded(&c.cluster_id, NAME),
            name: bounded_opt(c.cluster_name.as_deref(), NAME),
            status: wire_name(c.scan_status),
            failures: c
                .scan_detail_list
                .iter()
                .filter(|d| d.status == ScanStatus::Failed)
                .map(|d| ScanFailure {
                    scan_type: Some(wire_name(d.scan_type)),
                    reason: bounded_opt(d.failed_reason.as_deref(), MESSAGE),
                })
                .collect(),
        })
        .chain(resp.iac_scan_data_list.iter().map(|f| {
            ResourceResult {
                id: bounded(&f.file_id, NAME),
                name: bounded_opt(f.file_name.as_deref(), NAME),
                status: wire_name(f.scan_status),
                failures: f
                    .failed_reason
                    .iter()
                    .map(|r| ScanFailure {
                        scan_type: None,
                        reason: Some(bounded(r, MESSAGE)),
                    })
                    .collect(),
            }
        }))
        .collect();
    rows.sort_by_key(|r| (r.status != "failed", r.id.clone()));
    rows.truncate(MAX_RESULTS);
    rows
}

/// What reading a finished task's results ends with.
#[derive(Debug)]
pub(super) enum Outcome {
    /// ListTaskResources (or the RetryTask it asked for) failed.
    Unavailable(hss_client::Error),
    /// Failed clusters were sent back to HSS with RetryTask.
    Retried(Vec<ResourceResult>),
    Finished(Vec<ResourceResult>),
}

/// A finished task's results, and the RetryTask of its failed clusters when the object asks
/// for one (see [`transitions::wants_retry`]). Runs outside reconcile ([`super::offload`]).
async fn read_results(
    obj: &ClusterScanTask,
    hss: &HssClient,
    info: &TaskInfo,
    task_id: &str,
) -> Outcome {
    let req = ListTaskResourcesRequest {
        task_type: obj.spec.task_type,
        cluster_scan_info: None,
        iac_scan_info: None,
    };
    let rows = match hss.list_task_resources(task_id, &req, 0, MAX_PAGE).await {
        Err(e) => return Outcome::Unavailable(e),
        Ok(resp) => results(&resp),
    };
    if !transitions::wants_retry(obj, info, &rows) {
        return Outcome::Finished(rows);
    }
    let retry = RetryTaskRequest {
        task_type: TaskType::ClusterScan,
        cluster_scan_info: RetryClusterScanInfo {
            range_type: RetryRangeType::AllFailedCluster,
            cluster_info_list: None,
        },
    };
    match hss.retry_task(task_id, &retry).await {
        Ok(()) => Outcome::Retried(rows),
        Err(e) => Outcome::Unavailable(e),
    }
}

/// Submitted or Running: apply the shared poll's view; when HSS reports the task finished,
/// fetch the results and either ask for a retry of failed clusters or finish.
pub(super) async fn follow(
    obj: Arc<ClusterScanTask>,
    ctx: &Context,
    hss: &HssClient,
) -> Result<Action, Error> {
    let Some(st) = obj.status.as_ref() else {
        return Ok(Action::await_change());
    };
    let Some(task_id) = st.task_id.clone() else {
        return Ok(Action::await_change());
    };
    let created = st
        .submission
        .as_ref()
        .and_then(|s| s.started_at.as_ref())
        .or(st.submitted_at.as_ref())
        .map_or_else(
            || jiff::Timestamp::now().as_millisecond(),
            |t| t.0.as_millisecond(),
        );
    ctx.poller.track(
        hss,
        &task_id,
        obj.spec.task_type,
        created,
        ObjectRef::from(obj.as_ref()),
    );
    let poll_every = ctx.poller.interval();
    let now = jiff::Timestamp::now();
    if let Some(since) = ctx.poller.lost(&task_id) {
        ctx.poller.untrack(&task_id);
        let t = transitions::task_lost(&obj, &task_id, since, now);
        return Ok(ctx.commit(&obj, t).await?.1);
    }
    let Some(info) = ctx.poller.latest(&task_id) else {
        return Ok(Action::requeue(poll_every * 4));
    };
    let t = if info.task_status != TaskStatus::Finished {
        transitions::progressed(&obj, &info, poll_every)
    } else if transitions::retry_not_yet_shown(&obj, &info, now) {
        transitions::awaiting_retry(&obj, poll_every)
    } else {
        let uid = Context::uid(&obj);
        let caller = ctx.caller(&obj);
        let step = ctx.results.step(&obj, &uid, || {
            let (obj, hss, info, task_id) =
                (obj.clone(), hss.clone(), info.clone(), task_id.clone());
            fair::as_caller(caller, async move {
                read_results(&obj, &hss, &info, &task_id).await
            })
        });
        match step {
            // Woken when it ends; the requeue only covers a lost wake-up.
            offload::Step::Running => return Ok(Action::requeue(offload::RECHECK)),
            offload::Step::Ready(Outcome::Unavailable(e)) => {
                transitions::results_unavailable(&obj, &info, &e, now)
            }
            offload::Step::Ready(Outcome::Retried(rows)) => {
                ctx.poller.reset(&task_id);
                transitions::retried(&obj, &info, rows, poll_every, now)
            }
            offload::Step::Ready(Outcome::Finished(rows)) => {
                ctx.poller.untrack(&task_id);
                transitions::finished(&obj, &info, rows, now)
            }
        }
    };
    Ok(ctx.commit(&obj, t).await?.1)
}
