//! `submit --wait`: following the task until HSS reports it finished, then reading its
//! per-cluster (or per-file) results, every page of them.

use std::{collections::BTreeSet, time::Duration};

use super::{Error, Report, ResultRow};
use hss_client::{Outcome, client::HssClient, limits::MAX_PAGE, model::*, text};

/// Follows `report.task_id` until HSS says finished, then fills in the per-resource results.
pub async fn follow(
    client: &HssClient,
    report: &mut Report,
    poll_interval: Duration,
    timeout: Duration,
) -> Result<bool, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let follow_err = |source| Error::Follow {
        task_id: report.task_id.clone(),
        source,
    };
    let mut filter = ListTasksRequest::for_type(report.task_type);
    filter.task_id = Some(report.task_id.clone());
    loop {
        match client.list_tasks(&filter, 0, 10).await {
            Ok(page) => {
                let status = page
                    .data_list
                    .iter()
                    .find(|t| t.task_id == report.task_id)
                    .map(|t| t.task_status);
                report.task_status = status;
                if status == Some(TaskStatus::Finished) {
                    break;
                }
            }
            Err(e) if e.outcome() == Outcome::Rejected => return Err(follow_err(e)),
            Err(e) => tracing::warn!(error = %e, "ListTasks failed; will try again"),
        }
        if tokio::time::Instant::now() + poll_interval > deadline {
            return Ok(false);
        }
        tokio::time::sleep(poll_interval).await;
    }
    let req = ListTaskResourcesRequest {
        task_type: report.task_type,
        cluster_scan_info: None,
        iac_scan_info: None,
    };
    let mut offset = 0;
    let mut failed = BTreeSet::new();
    loop {
        let page = client
            .list_task_resources(&report.task_id, &req, offset, MAX_PAGE)
            .await
            .map_err(follow_err)?;
        let got = page.cluster_scan_data_list.len() + page.iac_scan_data_list.len();
        report
            .results
            .extend(page.cluster_scan_data_list.into_iter().map(|r| {
                ResultRow {
                    id: text::bounded(&r.cluster_id, text::NAME),
                    name: text::bounded_opt(r.cluster_name.as_deref(), text::NAME),
                    status: r.scan_status,
                    failures: r
                        .scan_detail_list
                        .into_iter()
                        .inspect(|d| {
                            if d.status == ScanStatus::Failed {
                                failed.insert((r.cluster_id.clone(), wire_name(d.scan_type)));
                            }
                        })
                        .filter(|d| d.status == ScanStatus::Failed)
                        .map(|d| {
                            format!(
                                "{}: {}",
                                wire_name(d.scan_type),
                                text::bounded(
                                    d.failed_reason.as_deref().unwrap_or_default(),
                                    text::MESSAGE
                                )
                            )
                        })
                        .collect(),
                }
            }));
        report
            .results
            .extend(page.iac_scan_data_list.into_iter().map(|r| {
                ResultRow {
                    id: text::bounded(&r.file_id, text::NAME),
                    name: text::bounded_opt(r.file_name.as_deref(), text::NAME),
                    status: r.scan_status,
                    failures: r
                        .failed_reason
                        .iter()
                        .map(|m| text::bounded(m, text::MESSAGE))
                        .collect(),
                }
            }));
        offset += MAX_PAGE;
        if got == 0 || report.results.len() as i64 >= page.total_num || offset > 10_000 {
            break;
        }
    }
    report.failed_scans = failed;
    Ok(true)
}
