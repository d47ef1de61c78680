//! Reading a finished scan's findings (cluster_scan or iac_scan) into `status.findings`, once,
//! after the task finished (see [`crate::findings`] for the protocol and its budget).
//!
//! Guarantees: the phase and `Complete` do not wait for the findings (a scan that finished is
//! finished even when its findings cannot be read); `FindingsRead` says whether they were read,
//! are still to be read (transient failure, retried with backoff) or cannot be (HSS refused the
//! result APIs: recorded once, not retried).

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::{ResourceExt, runtime::controller::Action};

use super::{Context, Error, fair, offload, status, transitions};
use crate::{
    controller_runtime::conditions,
    crd::{ClusterScanTask, Phase, cluster_scan_task::ResourceResult},
    findings, reports,
};
use hss_client::{
    client::HssClient,
    model::{RangeType, TaskType},
};

/// Reason of `FindingsRead=False` when HSS refused the result APIs (not retried).
pub const REFUSED: &str = "FindingsRefused";

/// A scan that finished longer ago than this, and whose findings were never tried, gets none:
/// HSS keeps only the latest findings per cluster, so a late read would show a later scan's
/// (and 10,000 objects that finished before an upgrade would cost 10,000 writes and Events).
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether `obj` has findings still to read at `now`. Pure.
pub fn wanted(obj: &ClusterScanTask, now: jiff::Timestamp) -> bool {
    let Some(st) = obj.status.as_ref() else {
        return false;
    };
    let has_scope = match obj.spec.task_type {
        TaskType::ClusterScan => obj
            .spec
            .cluster_scan
            .as_ref()
            .is_some_and(|c| !c.scan_types.is_empty()),
        TaskType::IacScan => obj
            .spec
            .iac_scan
            .as_ref()
            .is_some_and(|i| !i.file_ids.is_empty()),
    };
    let tried = conditions::get(&st.conditions, status::FINDINGS_READ);
    let too_old = st.finished_at.as_ref().is_some_and(|t| {
        now.duration_since(t.0)
            .try_into()
            .is_ok_and(|age: std::time::Duration| age > MAX_AGE)
    });
    has_scope
        && matches!(st.phase, Some(Phase::Succeeded | Phase::PartiallyFailed))
        && st.findings.is_none()
        && !tried.is_some_and(|c| c.status == "False" && c.reason == REFUSED)
        && (tried.is_some() || !too_old)
}

/// The task's own clusters ([`findings::own_clusters`]), the (cluster, scan type) pairs that
/// failed in it, and whether its recorded results were cut (more resources than status keeps).
/// Pure.
pub fn scope(obj: &ClusterScanTask) -> (BTreeSet<String>, BTreeSet<(String, String)>, bool) {
    let rows = results(obj);
    let failed = rows
        .iter()
        .flat_map(|r| {
            r.failures
                .iter()
                .filter_map(|f| f.scan_type.clone().map(|t| (r.id.clone(), t)))
        })
        .collect();
    let requested: Option<BTreeSet<String>> = match obj.spec.cluster_scan.as_ref() {
        Some(c) if c.range_type == RangeType::SpecificCluster => {
            Some(c.cluster_ids.iter().flatten().cloned().collect())
        }
        _ => None,
    };
    let clusters = findings::own_clusters(requested.as_ref(), rows.iter().map(|r| r.id.as_str()));
    (clusters, failed, results_cut(obj))
}

/// An iac_scan's own files ([`findings::own_files`] and those that failed), the files whose
/// findings to read, and whether its recorded results were cut. Pure.
pub fn files(
    obj: &ClusterScanTask,
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>, bool) {
    let requested: BTreeSet<String> = obj
        .spec
        .iac_scan
        .as_ref()
        .map(|i| i.file_ids.iter().cloned().collect())
        .unwrap_or_default();
    let rows = results(obj);
    let failed: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.status == "failed")
        .map(|r| r.id.clone())
        .collect();
    let ids: BTreeSet<String> = rows
        .iter()
        .map(|r| r.id.clone())
        .filter(|id| requested.contains(id))
        .collect();
    let wanted = findings::own_files(&requested, rows.iter().map(|r| r.id.as_str()), &failed);
    (ids, failed, wanted, results_cut(obj))
}

fn results(obj: &ClusterScanTask) -> &[ResourceResult] {
    obj.status
        .as_ref()
        .map(|s| s.results.as_slice())
        .unwrap_or_default()
}

/// HSS counted more finished resources than status recorded.
fn results_cut(obj: &ClusterScanTask) -> bool {
    let Some(st) = obj.status.as_ref() else {
        return false;
    };
    let counted = st.progress.as_ref().map_or(0, |p| {
        p.succeeded.unwrap_or(0).max(0) + p.failed.unwrap_or(0).max(0)
    });
    counted > i64::try_from(st.results.len()).unwrap_or(i64::MAX)
}

/// What a findings read ends with: the summary, and what the reports are built from.
pub(super) type Outcome = Result<(findings::Summary, reports::Rows), findings::Error>;

/// Reads the findings and records them (status, Event, gauges). The read runs outside
/// reconcile ([`super::offload`]), its calls queued as the object's namespace: this reconcile
/// starts it and returns; the one after it ended records its outcome.
pub(super) async fn read(
    obj: Arc<ClusterScanTask>,
    ctx: &Context,
    hss: &HssClient,
) -> Result<Action, Error> {
    let uid = Context::uid(&obj);
    let caller = ctx.caller(&obj);
    let max = match ctx.args.reports.mode {
        reports::Mode::Off => 0,
        _ => usize::from(ctx.args.reports.report_max_results),
    };
    let affect = affect(&obj, ctx, max).await;
    let step = ctx.reads.step(&obj, &uid, || {
        let (obj, hss, caches) = (obj.clone(), hss.clone(), ctx.findings.clone());
        fair::as_caller(caller, async move {
            read_now(&obj, &hss, &caches, max, affect.as_ref()).await
        })
    });
    let summary = match step {
        offload::Step::Ready(summary) => summary,
        // Woken when it ends; the requeue only covers a lost wake-up.
        offload::Step::Running => return Ok(Action::requeue(offload::RECHECK)),
    };
    let t = match summary {
        Ok((summary, rows)) => {
            let now = jiff::Timestamp::now();
            let ns = obj.namespace().unwrap_or_default();
            ctx.metrics
                .findings
                .record(&ns, &summary.clusters, now.as_millisecond());
            ctx.metrics
                .findings
                .record_files(&ns, &summary.files, now.as_millisecond());
            let mut t = transitions::findings_read(&obj, summary.findings, now);
            // After the read, before its status: the condition says whether they were written.
            let owner = reports::Owner {
                name: obj.name_any(),
                namespace: ns,
                uid,
            };
            let written = ctx.reports.write(&ctx.kube, &owner, &rows).await;
            if let Some((value, reason, message)) = reports::writer::condition(&written) {
                conditions::set(
                    &mut t.status.conditions,
                    obj.metadata.generation,
                    status::REPORTS_WRITTEN,
                    value,
                    reason,
                    &message,
                    now,
                );
            }
            t
        }
        Err(e) => transitions::findings_unavailable(&obj, &e, jiff::Timestamp::now()),
    };
    Ok(ctx.commit(&obj, t).await?.1)
}

/// The self cluster and how many of its risks to look up ([`reports::affected`]), when a
/// cluster_scan's reports are written, `--self-cluster-id` is set and, under `--tenancy
/// policy`, a policy selecting the object's namespace grants that cluster.
async fn affect(obj: &ClusterScanTask, ctx: &Context, max: usize) -> Option<(String, usize)> {
    let args = &ctx.args.reports;
    let id = args.self_cluster_id.as_ref().filter(|id| !id.is_empty())?;
    if max == 0 || args.affected_max_risks == 0 || obj.spec.task_type != TaskType::ClusterScan {
        return None;
    }
    match ctx
        .tenants
        .grant(&obj.namespace().unwrap_or_default())
        .await
    {
        Ok(grant) => reports::affected::granted(grant.as_ref().map(Option::as_ref), id)
            .then(|| (id.clone(), usize::from(args.affected_max_risks))),
        Err(e) => {
            tracing::warn!(category = e.category(), error = %crate::report_error(&e),
                "affected resources not looked up: the namespace's grant could not be read");
            None
        }
    }
}

/// The read itself: the task's own clusters or files, through the shared pages; the worst
/// `max` rows of each kept for the reports, and the self cluster's affected resources
/// looked up (`affect`).
async fn read_now(
    obj: &ClusterScanTask,
    hss: &HssClient,
    caches: &findings::Caches,
    max: usize,
    affect: Option<&(String, usize)>,
) -> Outcome {
    // Pages fetched after this task was seen finished may serve it (and the objects that
    // finished with it).
    let not_before = obj
        .status
        .as_ref()
        .and_then(|s| s.finished_at.as_ref())
        .map_or_else(jiff::Timestamp::now, |t| t.0);
    let shared = findings::Shared { caches, not_before };
    match obj.spec.task_type {
        TaskType::ClusterScan => {
            let scan_types = obj
                .spec
                .cluster_scan
                .as_ref()
                .map(|c| c.scan_types.clone())
                .unwrap_or_default();
            let (clusters, failed, cut) = scope(obj);
            let mut read = findings::read(hss, &scan_types, &clusters, Some(shared)).await?;
            read.incomplete |= cut;
            let risk_types: Vec<_> = scan_types
                .iter()
                .filter_map(|s| findings::risk_type(*s))
                .collect();
            let mut rows = reports::Rows::clusters(&read, &clusters, &failed, &risk_types, max);
            let summary = findings::summarize(&read, &clusters, &failed, jiff::Timestamp::now());
            // Only when this scan covered the self cluster (its group exists).
            if let Some((id, max_risks)) = affect
                && let Some(group) = rows.cluster_mut(id)
            {
                reports::affected::look_up(hss, id, &mut group.rows, *max_risks).await;
                rows.affected = true;
            }
            Ok((summary, rows))
        }
        TaskType::IacScan => {
            let (ids, failed, wanted, cut) = files(obj);
            findings::read_files(hss, &wanted, Some(shared))
                .await
                .map(|mut read| {
                    read.incomplete |= cut;
                    let rows = reports::Rows::files(&read, &wanted, max);
                    let summary =
                        findings::summarize_files(&read, &ids, &failed, jiff::Timestamp::now());
                    (summary, rows)
                })
        }
    }
}

/// A final object's recorded findings back into the gauges (after a restart, say).
/// A `readAt` from status as the gauges' ordering key, unless it is later than `now`: the
/// operator wrote it from this clock, so a future one was written by someone else and would
/// win over every real read.
pub(crate) fn trusted_read_at(read_at: jiff::Timestamp, now: jiff::Timestamp) -> Option<i64> {
    (read_at <= now).then(|| read_at.as_millisecond())
}

pub(super) fn remember(obj: &ClusterScanTask, ctx: &Context) {
    if let Some(f) = obj.status.as_ref().and_then(|s| s.findings.as_ref()) {
        let Some(at) = trusted_read_at(f.read_at.0, jiff::Timestamp::now()) else {
            tracing::warn!(
                "status.findings.readAt is in the future: not taken (status was written by someone else?)"
            );
            return;
        };
        let ns = obj.namespace().unwrap_or_default();
        ctx.metrics.findings.record(&ns, &f.clusters, at);
        ctx.metrics.findings.record_files(&ns, &f.files, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_time_later_than_now_is_not_taken_from_status() {
        let now = jiff::Timestamp::from_second(1_000_000).expect("time");
        let past = jiff::Timestamp::from_second(999_000).expect("time");
        let future = jiff::Timestamp::from_second(4_000_000_000).expect("time");
        assert_eq!(trusted_read_at(past, now), Some(999_000_000));
        assert_eq!(trusted_read_at(now, now), Some(1_000_000_000));
        assert_eq!(
            trusted_read_at(future, now),
            None,
            "it would win over every real read"
        );
    }
}
