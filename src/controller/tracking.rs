//! Following a submitted task: progress from the shared poll, results once it finishes,
//! optional RetryTask for failed clusters.

use std::sync::Arc;

use kube::{Api, ResourceExt, runtime::controller::Action, runtime::reflector::ObjectRef};

use super::{Context, Error, status};
use crate::kit::{events, retry::backoff};
use crate::{
    crd::{
        ClusterScanTask, Phase,
        cluster_scan_task::{MAX_RESULTS, Progress, ResourceResult, ScanFailure},
    },
    hss::{
        HssClient,
        client::MAX_PAGE,
        model::{
            ListTaskResourcesRequest, ListTaskResourcesResponse, RetryClusterScanInfo,
            RetryRangeType, RetryTaskRequest, ScanStatus, TaskInfo, TaskStatus, TaskType,
        },
    },
};

use crate::hss::model::wire_name;

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

/// Per-resource results, failed first, at most [`MAX_RESULTS`]. Pure.
pub fn results(resp: &ListTaskResourcesResponse) -> Vec<ResourceResult> {
    let mut rows: Vec<ResourceResult> = resp
        .cluster_scan_data_list
        .iter()
        .map(|c| ResourceResult {
            id: c.cluster_id.clone(),
            name: c.cluster_name.clone(),
            status: wire_name(c.scan_status),
            failures: c
                .scan_detail_list
                .iter()
                .filter(|d| d.status == ScanStatus::Failed)
                .map(|d| ScanFailure {
                    scan_type: Some(wire_name(d.scan_type)),
                    reason: d.failed_reason.clone(),
                })
                .collect(),
        })
        .chain(resp.iac_scan_data_list.iter().map(|f| {
            ResourceResult {
                id: f.file_id.clone(),
                name: f.file_name.clone(),
                status: wire_name(f.scan_status),
                failures: f
                    .failed_reason
                    .iter()
                    .map(|r| ScanFailure {
                        scan_type: None,
                        reason: Some(r.clone()),
                    })
                    .collect(),
            }
        }))
        .collect();
    rows.sort_by_key(|r| (r.status != "failed", r.id.clone()));
    rows.truncate(MAX_RESULTS);
    rows
}

pub(super) async fn follow(
    obj: Arc<ClusterScanTask>,
    ctx: &Context,
    hss: &HssClient,
) -> Result<Action, Error> {
    let api: Api<ClusterScanTask> =
        Api::namespaced(ctx.kube.clone(), &obj.namespace().unwrap_or_default());
    let current = obj.status.clone().unwrap_or_default();
    let Some(task_id) = current.task_id.clone() else {
        return Ok(Action::await_change());
    };
    let created = current
        .submission
        .as_ref()
        .and_then(|s| s.started_at.as_ref())
        .or(current.submitted_at.as_ref())
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
    let Some(info) = ctx.poller.latest(&task_id) else {
        return Ok(Action::requeue(ctx.poller.interval() * 4));
    };

    let generation = obj.metadata.generation;
    let mut st = current.clone();
    st.progress = Some(progress(&info));
    st.observed_generation = generation;
    let mut events_to_send = Vec::new();
    let mut action = Action::requeue(ctx.poller.interval() * 4);
    match info.task_status {
        TaskStatus::Ready => st.phase = Some(Phase::Submitted),
        TaskStatus::Running | TaskStatus::Unknown => {
            if st.phase != Some(Phase::Running) {
                events_to_send.push(events::normal(
                    "Running",
                    "Track",
                    &format!("HSS task {task_id} is running"),
                ));
            }
            st.phase = Some(Phase::Running);
        }
        TaskStatus::Finished => {
            let req = ListTaskResourcesRequest {
                task_type: obj.spec.task_type,
                cluster_scan_info: None,
                iac_scan_info: None,
            };
            let resp = match hss.list_task_resources(&task_id, &req, 0, MAX_PAGE).await {
                Ok(r) => r,
                Err(e) => {
                    st.last_error = Some(status::last_error(
                        e.category(),
                        e.error_code(),
                        &crate::report_error(&e),
                        e.request_id(),
                    ));
                    if st != current {
                        status::write(&api, &obj, &st)
                            .await
                            .map_err(Error::WriteStatus)?;
                    }
                    return Ok(Action::requeue(
                        e.retry_after().unwrap_or_else(|| backoff(2)),
                    ));
                }
            };
            let rows = results(&resp);
            let failed = st
                .progress
                .as_ref()
                .and_then(|p| p.failed)
                .unwrap_or(0)
                .max(rows.iter().filter(|r| r.status == "failed").count() as i64);
            let retries = st.retries.unwrap_or(0);
            let allowed = obj.spec.retry_failed_clusters.unwrap_or(0);
            if failed > 0 && obj.spec.task_type == TaskType::ClusterScan && retries < allowed {
                let retry = RetryTaskRequest {
                    task_type: TaskType::ClusterScan,
                    cluster_scan_info: RetryClusterScanInfo {
                        range_type: RetryRangeType::AllFailedCluster,
                        cluster_info_list: None,
                    },
                };
                match hss.retry_task(&task_id, &retry).await {
                    Ok(()) => {
                        st.retries = Some(retries + 1);
                        st.phase = Some(Phase::Running);
                        st.results = rows;
                        ctx.poller.reset(&task_id);
                        events_to_send.push(events::normal(
                            "Retried",
                            "Retry",
                            &format!("{failed} cluster(s) failed; HSS re-runs them (retry {} of {allowed})", retries + 1),
                        ));
                    }
                    Err(e) => {
                        st.last_error = Some(status::last_error(
                            e.category(),
                            e.error_code(),
                            &crate::report_error(&e),
                            e.request_id(),
                        ));
                        status::write(&api, &obj, &st)
                            .await
                            .map_err(Error::WriteStatus)?;
                        return Ok(Action::requeue(
                            e.retry_after().unwrap_or_else(|| backoff(2)),
                        ));
                    }
                }
            } else {
                let phase = if failed > 0 {
                    Phase::PartiallyFailed
                } else {
                    Phase::Succeeded
                };
                st.phase = Some(phase);
                st.finished_at = Some(status::now());
                st.results = rows;
                st.last_error = None;
                let message = match phase {
                    Phase::Succeeded => format!(
                        "HSS task {task_id} finished; every {} succeeded",
                        if obj.spec.task_type == TaskType::ClusterScan {
                            "cluster"
                        } else {
                            "file"
                        }
                    ),
                    _ => {
                        format!("HSS task {task_id} finished; {failed} failed (see status.results)")
                    }
                };
                status::set_condition(
                    &mut st,
                    generation,
                    status::COMPLETE,
                    true,
                    phase.as_str(),
                    message.clone(),
                );
                events_to_send.push(if phase == Phase::Succeeded {
                    events::normal("Completed", "Track", &message)
                } else {
                    events::warning("Completed", "Track", &message)
                });
                ctx.poller.untrack(&task_id);
                action = Action::await_change();
            }
        }
    }
    if st != current {
        let written = status::write(&api, &obj, &st)
            .await
            .map_err(Error::WriteStatus)?;
        for ev in events_to_send {
            ctx.event(&written, ev).await;
        }
    }
    Ok(action)
}
