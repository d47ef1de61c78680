//! Finding out whether an ambiguous CreateTask created a task.
//!
//! HSS has no idempotency key and no get-by-id, so the only evidence is ListTasks: tasks of
//! the same type, created manually inside the attempt's time window, with the same scan types
//! (or file type). When the request named specific clusters, or files (always, for iac_scan),
//! every candidate is confirmed with ListTaskResources: its cluster or file set must be the
//! request's exactly.
//!
//! # Assumptions
//! - The search starts where HSS's clock read the attempt's start, as measured from the `Date`
//!   of its answers ([`super::clock`]); before any measurement, [`CLOCK_SKEW`] earlier.
//! - HSS stamps `start_time` at creation, and the `start_create_time`/`end_create_time`
//!   filters apply to it (inferred; the simulator behaves so).
//! - Our clock and HSS's differ by less than [`CLOCK_SKEW`] (the gateway refuses signatures
//!   beyond 15 minutes anyway).
//! - A task HSS created is visible to ListTasks within [`SETTLE`]. Before that, "not found"
//!   is not trusted.
//!
//! # Caveats
//! - An all-cluster candidate must cover as many clusters as HSS knows now (the listing's
//!   counts against ListKubernetesClusterDetails): a cluster added or removed between the
//!   attempt and the lookup makes our own task look foreign, and the lookup then misses it.
//! - Someone else creating an identical task in the same window (same credential, same scan
//!   types) is indistinguishable from ours. Callers get every candidate and decide: the
//!   operator assigns one per unresolved object (the count is what matters), the one-shot CLI
//!   refuses to guess.

use std::{collections::HashSet, time::Duration};

use super::{Error, client::HssClient, model::*};

/// Window before the attempt's start that is still searched.
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);
/// How long after an attempt started a ListTasks "not found" is trusted (default).
pub const SETTLE: Duration = Duration::from_secs(30);
/// At most this many pages are read for one lookup.
pub const MAX_PAGES: u32 = 10;
/// At most this many candidates are checked with ListTaskResources (closest first; the search
/// stops at the first match). More than this leaves the lookup inconclusive.
pub const MAX_CONFIRMATIONS: usize = 40;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Matching tasks not claimed by anyone else, oldest first.
    Candidates(Vec<TaskInfo>),
    /// No matching task, and the listing is recent enough to trust it.
    NotFound,
    /// No matching task yet, but the attempt is too recent to conclude; ask again after this.
    TooEarly(Duration),
    /// The search could not be completed (listing truncated, or more candidates than can be
    /// confirmed): neither adopt nor conclude "not created".
    Inconclusive,
}

/// The ListTasks filter for an attempt of `req` whose task HSS stamped inside `window`
/// (HSS's clock, epoch ms; see [`Offset::window`](super::clock::Offset::window)).
pub fn lookup_filter(req: &CreateTaskRequest, (from, to): (i64, i64)) -> ListTasksRequest {
    ListTasksRequest {
        start_create_time: Some(from),
        end_create_time: Some(to),
        trigger_type: Some(TriggerType::Manual),
        cluster_scan_info: req.cluster_scan_info.as_ref().map(|c| ScanTypeFilter {
            scan_type_list: Some(c.scan_type_list.clone()),
        }),
        iac_scan_info: req.iac_scan_info.as_ref().map(|i| FileTypeFilter {
            file_type: Some(i.file_type),
        }),
        ..ListTasksRequest::for_type(req.task_type)
    }
}

/// Whether `task` could be the result of `req` (from what ListTasks shows).
pub fn could_be(task: &TaskInfo, req: &CreateTaskRequest) -> bool {
    if task.task_type != req.task_type
        || task.trigger_type.is_some_and(|t| t != TriggerType::Manual)
    {
        return false;
    }
    match (&req.cluster_scan_info, &req.iac_scan_info) {
        (Some(want), _) => task.cluster_scan_info.as_ref().is_none_or(|got| {
            let mut a = got.scan_type_list.clone();
            let mut b = want.scan_type_list.clone();
            a.sort();
            b.sort();
            a.is_empty() || a == b
        }),
        (None, Some(want)) => task
            .iac_scan_info
            .as_ref()
            .and_then(|got| got.file_type)
            .is_none_or(|ft| ft == want.file_type),
        (None, None) => true,
    }
}

fn all_clusters(req: &CreateTaskRequest) -> bool {
    req.cluster_scan_info
        .as_ref()
        .is_some_and(|i| i.range_type == RangeType::AllCluster)
}

/// How many clusters a listed cluster-scan task covers, when the listing says. Pure.
pub fn cluster_count(task: &TaskInfo) -> Option<i64> {
    let info = task.cluster_scan_info.as_ref()?;
    let parts = [
        info.scanning_cluster_num,
        info.success_cluster_num,
        info.failed_cluster_num,
    ];
    parts
        .iter()
        .any(Option::is_some)
        .then(|| parts.iter().flatten().sum())
}

/// Task `task_id` of `task_type`, if HSS lists it (ListTasks filtered by id: one call).
pub async fn find_by_id(
    client: &HssClient,
    task_type: TaskType,
    task_id: &str,
) -> Result<Option<TaskInfo>, Error> {
    let mut filter = ListTasksRequest::for_type(task_type);
    filter.task_id = Some(task_id.to_string());
    let page = client
        .list_tasks(&filter, 0, crate::limits::MAX_PAGE)
        .await?;
    Ok(page.data_list.into_iter().find(|t| t.task_id == task_id))
}

/// Whether task `task_id`, named by a person, can be the task of an attempt of `req` started
/// at `started_at_ms`, by the lookup's own rules: listed by HSS, not in `claimed`, of the
/// request's type and scan types (or file type), created while the attempt's POST was in
/// flight (the lookup's window), and covering exactly its clusters or files (an all-cluster
/// task: as many clusters as HSS knows). A task created in the console or by another tool
/// fails at least the window. `Ok(Err)` says why not, in words for a condition.
pub async fn named(
    client: &HssClient,
    req: &CreateTaskRequest,
    task_id: &str,
    started_at_ms: i64,
    claimed: &HashSet<String>,
) -> Result<Result<TaskInfo, String>, Error> {
    if claimed.contains(task_id) {
        return Ok(Err(format!(
            "task {task_id} belongs to another ClusterScanTask"
        )));
    }
    let task = match find_by_id(client, req.task_type, task_id).await? {
        Some(task) if could_be(&task, req) => task,
        Some(_) => {
            return Ok(Err(format!(
                "task {task_id} is not a {} task with this object's scan types",
                wire_name(req.task_type)
            )));
        }
        None => return Ok(Err(format!("HSS does not list task {task_id}"))),
    };
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let in_flight_until = started_at_ms + client.config().timeout.as_millis() as i64;
    let (from, to) =
        client
            .clock_offset()
            .window(started_at_ms, now_ms.min(in_flight_until), CLOCK_SKEW);
    if !task.start_time.is_some_and(|t| (from..=to).contains(&t)) {
        return Ok(Err(format!(
            "task {task_id} was not created while this object's attempt was being sent"
        )));
    }
    if let Some((task_type, want)) = named_resources(req) {
        if !has_exactly(client, task_id, task_type, &want).await? {
            return Ok(Err(format!(
                "task {task_id} does not scan exactly this object's {}",
                if task_type == TaskType::IacScan {
                    "files"
                } else {
                    "clusters"
                }
            )));
        }
    } else if all_clusters(req)
        && let Some(known) = client.list_clusters(0, 10, None).await?.total_num
        && cluster_count(&task).is_some_and(|n| n != known)
    {
        return Ok(Err(format!(
            "task {task_id} does not scan every cluster, as this object's all_cluster scan would"
        )));
    }
    Ok(Ok(task))
}

/// The resources a request names, which a task it created must have exactly: the cluster ids
/// of a `cluster_scan` over specific clusters, the file ids of an `iac_scan`.
fn named_resources(req: &CreateTaskRequest) -> Option<(TaskType, HashSet<&str>)> {
    let (task_type, ids) = match (&req.cluster_scan_info, &req.iac_scan_info) {
        (Some(c), _) => (TaskType::ClusterScan, c.cluster_id_list.as_deref()?),
        (None, Some(i)) => (TaskType::IacScan, i.file_id_list.as_slice()),
        (None, None) => return None,
    };
    let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
    (!want.is_empty()).then_some((task_type, want))
}

/// Whether task `task_id` covers exactly the resources in `want`, read with ListTaskResources
/// (every page, at most as many as `want` can fill; a count that differs settles it at once).
async fn has_exactly(
    client: &HssClient,
    task_id: &str,
    task_type: TaskType,
    want: &HashSet<&str>,
) -> Result<bool, Error> {
    let req = ListTaskResourcesRequest {
        task_type,
        cluster_scan_info: None,
        iac_scan_info: None,
    };
    let page = crate::limits::MAX_PAGE;
    let mut got: HashSet<String> = HashSet::new();
    let mut offset = 0;
    loop {
        let resp = client
            .list_task_resources(task_id, &req, offset, page)
            .await?;
        if usize::try_from(resp.total_num).ok() != Some(want.len()) {
            return Ok(false);
        }
        let before = got.len();
        got.extend(
            resp.cluster_scan_data_list
                .into_iter()
                .map(|r| r.cluster_id),
        );
        got.extend(resp.iac_scan_data_list.into_iter().map(|r| r.file_id));
        // Done when every row is read, or when a page brought nothing new (a server that
        // ignores the offset must not loop us).
        if got.len() >= want.len() || got.len() == before {
            break;
        }
        offset += page;
    }
    Ok(got.len() == want.len() && got.iter().all(|id| want.contains(id.as_str())))
}

/// Looks for the task an attempt of `req` (started at `started_at_ms`, epoch ms) may have
/// created. `claimed` holds task ids already owned by other attempts; "not found" is only
/// trusted once the attempt is `settle` old.
pub async fn lookup(
    client: &HssClient,
    req: &CreateTaskRequest,
    started_at_ms: i64,
    claimed: &HashSet<String>,
    settle: Duration,
) -> Result<Lookup, Error> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    // HSS can only have created the task while the POST was in flight: from the attempt's
    // start to the client's timeout (plus skew on both sides, added by the filter).
    let in_flight_until = started_at_ms + client.config().timeout.as_millis() as i64;
    // Measured from HSS's answers, the window starts where HSS's clock read our attempt's
    // start: a task created before it is not ours. Without measurements, CLOCK_SKEW each side.
    let window =
        client
            .clock_offset()
            .window(started_at_ms, now_ms.min(in_flight_until), CLOCK_SKEW);
    let filter = lookup_filter(req, window);
    let (tasks, complete) = client.list_all_tasks(&filter, MAX_PAGES).await?;
    let mut candidates: Vec<TaskInfo> = tasks
        .into_iter()
        .filter(|t| !claimed.contains(&t.task_id) && could_be(t, req))
        .collect();
    // Closest to the attempt first: an identical task created earlier or later is more likely
    // someone else's.
    candidates.sort_by_key(|t| {
        (
            t.start_time.map_or(i64::MAX, |s| (s - started_at_ms).abs()),
            t.task_id.clone(),
        )
    });
    let mut inconclusive = !complete;

    if let Some((task_type, want)) = named_resources(req) {
        // Always confirm, even a single candidate: a task for other clusters (or files) with
        // the same scan types (or file type) is not ours (the chaos test caught a lone wrong
        // candidate adopted).
        let mut confirmed = Vec::new();
        inconclusive |= candidates.len() > MAX_CONFIRMATIONS;
        for task in candidates.iter().take(MAX_CONFIRMATIONS) {
            if has_exactly(client, &task.task_id, task_type, &want).await? {
                confirmed.push(task.clone());
                break;
            }
        }
        candidates = confirmed;
    } else if all_clusters(req) && !candidates.is_empty() {
        // An all-cluster task covers every cluster HSS knows; one with the same scan types for
        // fewer (or more) clusters is someone's specific-cluster task, not ours (the chaos
        // test's second operator adopted one). One ListKubernetesClusterDetails call.
        if let Some(known) = client.list_clusters(0, 10, None).await?.total_num {
            candidates.retain(|t| cluster_count(t).is_none_or(|n| n == known));
        }
    }

    if !candidates.is_empty() {
        return Ok(Lookup::Candidates(candidates));
    }
    if inconclusive {
        return Ok(Lookup::Inconclusive);
    }
    let age = Duration::from_millis(u64::try_from(now_ms - started_at_ms).unwrap_or(0));
    if age < settle {
        Ok(Lookup::TooEarly(settle - age))
    } else {
        Ok(Lookup::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, scan: Vec<ScanType>) -> TaskInfo {
        TaskInfo {
            task_id: id.into(),
            task_type: TaskType::ClusterScan,
            task_name: None,
            trigger_type: Some(TriggerType::Manual),
            task_status: TaskStatus::Ready,
            start_time: Some(0),
            end_time: None,
            estimated_time: None,
            cluster_scan_info: Some(TaskClusterScanInfo {
                scan_type_list: scan,
                scanning_cluster_num: None,
                success_cluster_num: None,
                failed_cluster_num: None,
            }),
            iac_scan_info: None,
        }
    }

    fn req(scan: Vec<ScanType>) -> CreateTaskRequest {
        CreateTaskRequest {
            task_type: TaskType::ClusterScan,
            cluster_scan_info: Some(ClusterScanInfo {
                scan_type_list: scan,
                range_type: RangeType::AllCluster,
                cluster_id_list: None,
            }),
            iac_scan_info: None,
        }
    }

    #[test]
    fn candidates_must_match_type_trigger_and_scan_set() {
        let r = req(vec![ScanType::Benchmark, ScanType::ClusterVul]);
        // (task, matches, reason)
        let mut scheduled = task("s", vec![ScanType::ClusterVul, ScanType::Benchmark]);
        scheduled.trigger_type = Some(TriggerType::Schedule);
        let mut iac = task("i", vec![]);
        iac.task_type = TaskType::IacScan;
        let cases = [
            (
                task("a", vec![ScanType::ClusterVul, ScanType::Benchmark]),
                true,
                "same set, other order",
            ),
            (
                task("b", vec![ScanType::ClusterVul]),
                false,
                "subset is another task",
            ),
            (scheduled, false, "console schedules are not ours"),
            (iac, false, "other task type"),
        ];
        for (t, ok, reason) in cases {
            assert_eq!(could_be(&t, &r), ok, "{reason}");
        }
    }

    #[test]
    fn lookup_window_covers_clock_skew_on_both_sides_without_measurements() {
        let window = crate::clock::Offset::default().window(1_000_000, 2_000_000, CLOCK_SKEW);
        let f = lookup_filter(&req(vec![ScanType::ClusterVul]), window);
        assert_eq!(f.start_create_time, Some(1_000_000 - 120_000));
        assert_eq!(f.end_create_time, Some(2_000_000 + 120_000));
        assert_eq!(f.trigger_type, Some(TriggerType::Manual));
        assert_eq!(f.task_type, TaskType::ClusterScan);
    }
}
