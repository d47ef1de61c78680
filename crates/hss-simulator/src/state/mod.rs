//! The simulated HSS back end: tasks, their per-resource runs, clusters, and the clock.
//!
//! Nothing runs in the background. Every task stores when each of its runs starts and ends
//! (tokio [`Instant`]s fixed at creation or retry) and whether it will fail; status is computed
//! from those on every read. Paused Tokio time therefore drives the whole life cycle, and
//! 10,000 tasks cost 10,000 small records, not 10,000 timers.
//!
//! This file holds the records and their creation; what the read APIs and RetryTask do with
//! them is in `queries.rs`.

mod affected;
mod findings;
mod queries;

pub(crate) use affected::AffectedFilter;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use hss_client::model::{
    ClusterInfo, ClusterScanResource, CreateTaskRequest, FileType, IacScanResource,
    ListClustersResponse, ListTaskResourcesRequest, ListTaskResourcesResponse, ListTasksRequest,
    ListTasksResponse, RangeType, RetryRangeType, RetryTaskRequest, ScanDetail, ScanStatus,
    ScanType, TaskClusterScanInfo, TaskIacScanInfo, TaskInfo, TaskStatistics, TaskStatus, TaskType,
    TriggerType,
};

/// Wall-clock epoch milliseconds derived from Tokio time: the wall time at start plus the Tokio
/// time elapsed since, so timestamps and durations agree even when a test pauses the clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    wall_start_ms: i64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            wall_start_ms: jiff::Timestamp::now().as_millisecond(),
        }
    }

    pub(crate) fn epoch_ms(&self, at: Instant) -> i64 {
        let elapsed = at.saturating_duration_since(self.start).as_millis();
        self.wall_start_ms
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }
}

/// A task as it was created: what tests and chaos runs compare against the objects they own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreatedTask {
    /// 1-based creation order.
    pub seq: u64,
    pub task_id: String,
    pub task_type: TaskType,
    pub project_id: String,
    /// The `enterprise_project_id` query parameter, if sent.
    pub enterprise_project_id: Option<String>,
    /// Access key, IAM user name, or `token#N` for the N-th configured token.
    pub user: String,
    /// The request body exactly as received (parsed as JSON).
    pub body: serde_json::Value,
    /// Creation time, epoch milliseconds (the task's `start_time`).
    pub created_at_ms: i64,
}

/// A cluster the simulator knows (ListKubernetesClusterDetails, all_cluster scans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDef {
    pub id: String,
    pub name: String,
    pub cluster_type: String,
    pub version: String,
    pub status: String,
}

impl ClusterDef {
    /// An available CCE cluster whose name is its id.
    pub fn named(id: &str) -> Self {
        Self::new(id, id)
    }

    pub fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.to_string(),
            name: name.to_string(),
            cluster_type: "cce".to_string(),
            version: "v1.31".to_string(),
            status: "Available".to_string(),
        }
    }

    /// The clusters used when none are configured.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::new("cce-sim-0001", "sim-prod"),
            Self::new("cce-sim-0002", "sim-staging"),
            Self::new("cce-sim-0003", "sim-dev"),
        ]
    }
}

/// Why a request is refused by the back end (as opposed to the gateway).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    /// HSS.0001.
    #[error("{0}")]
    Invalid(String),
    /// HSS.0011.
    #[error("{0}")]
    NotFound(String),
}

impl Rejection {
    pub(crate) fn category(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_parameter",
            Self::NotFound(_) => "not_found",
        }
    }
}

/// One scan of one resource (a cluster's scan type, or a file).
#[derive(Debug, Clone, Copy)]
struct Run {
    start: Instant,
    end: Instant,
    fails: bool,
}

impl Run {
    fn status(&self, now: Instant) -> ScanStatus {
        if now < self.end {
            ScanStatus::Scanning
        } else if self.fails {
            ScanStatus::Failed
        } else {
            ScanStatus::Success
        }
    }
}

const CLUSTER_FAILED_REASON: &str =
    "cluster agent is offline (simulated: the cluster is in the simulator's fail set)";
const FILE_FAILED_REASON: &str =
    "failed to parse the file (simulated: file ids starting with \"bad\" fail)";

#[derive(Debug)]
struct ClusterRun {
    def: ClusterDef,
    details: Vec<(ScanType, Run)>,
}

impl ClusterRun {
    fn status(&self, now: Instant) -> ScanStatus {
        let mut failed = false;
        for (_, run) in &self.details {
            match run.status(now) {
                ScanStatus::Scanning => return ScanStatus::Scanning,
                ScanStatus::Failed => failed = true,
                _ => {}
            }
        }
        if failed {
            ScanStatus::Failed
        } else {
            ScanStatus::Success
        }
    }
}

#[derive(Debug)]
struct FileRun {
    id: String,
    name: String,
    size: i64,
    run: Run,
}

#[derive(Debug)]
struct Task {
    id: String,
    project_id: String,
    task_type: TaskType,
    name: String,
    created_ms: i64,
    /// When the task leaves `ready` and when it is due to finish, absent retries.
    start: Instant,
    end: Instant,
    scan_types: Vec<ScanType>,
    file_type: Option<FileType>,
    clusters: Vec<ClusterRun>,
    files: Vec<FileRun>,
}

impl Task {
    fn runs(&self) -> impl Iterator<Item = &Run> {
        self.clusters
            .iter()
            .flat_map(|c| c.details.iter().map(|(_, r)| r))
            .chain(self.files.iter().map(|f| &f.run))
    }

    fn first_start(&self) -> Instant {
        self.runs().map(|r| r.start).fold(self.start, Instant::min)
    }

    fn last_end(&self) -> Instant {
        self.runs().map(|r| r.end).fold(self.end, Instant::max)
    }

    fn status(&self, now: Instant) -> TaskStatus {
        if now < self.first_start() {
            TaskStatus::Ready
        } else if now < self.last_end() {
            TaskStatus::Running
        } else {
            TaskStatus::Finished
        }
    }

    fn info(&self, now: Instant, clock: &Clock) -> TaskInfo {
        let status = self.status(now);
        let last_end = self.last_end();
        let count = |statuses: &mut dyn Iterator<Item = ScanStatus>| {
            let (mut scanning, mut success, mut failed) = (0, 0, 0);
            for s in statuses {
                match s {
                    ScanStatus::Success => success += 1,
                    ScanStatus::Failed => failed += 1,
                    _ => scanning += 1,
                }
            }
            (scanning, success, failed)
        };
        let (cluster_scan_info, iac_scan_info) = match self.task_type {
            TaskType::ClusterScan => {
                let (scanning, success, failed) =
                    count(&mut self.clusters.iter().map(|c| c.status(now)));
                let info = TaskClusterScanInfo {
                    scan_type_list: self.scan_types.clone(),
                    scanning_cluster_num: Some(scanning),
                    success_cluster_num: Some(success),
                    failed_cluster_num: Some(failed),
                };
                (Some(info), None)
            }
            TaskType::IacScan => {
                let (_, success, failed) = count(&mut self.files.iter().map(|f| f.run.status(now)));
                let info = TaskIacScanInfo {
                    file_type: self.file_type,
                    scan_file_num: Some(len_i64(self.files.len())),
                    success_file_num: Some(success),
                    failed_file_num: Some(failed),
                };
                (None, Some(info))
            }
        };
        let remaining = last_end.saturating_duration_since(now);
        TaskInfo {
            task_id: self.id.clone(),
            task_type: self.task_type,
            task_name: Some(self.name.clone()),
            trigger_type: Some(TriggerType::Manual),
            task_status: status,
            start_time: Some(self.created_ms),
            end_time: (status == TaskStatus::Finished).then(|| clock.epoch_ms(last_end)),
            estimated_time: Some(i64::try_from(remaining.as_secs().div_ceil(60)).unwrap_or(0)),
            cluster_scan_info,
            iac_scan_info,
        }
    }
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Everything a new task needs besides the clock.
pub(crate) struct NewTask {
    pub request: CreateTaskRequest,
    pub body: serde_json::Value,
    pub project_id: String,
    pub enterprise_project_id: Option<String>,
    pub user: String,
}

/// A task id like HSS's: 32 hex digits in UUID grouping, derived from the seed and the creation
/// counter so that a seeded run hands out the same ids every time.
pub(crate) fn task_id(seed: u64, seq: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"hss-sim-task");
    h.update(seed.to_be_bytes());
    h.update(seq.to_be_bytes());
    let hex = hex::encode(&h.finalize()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub(crate) struct Store {
    seed: u64,
    /// Risk items every successful risk scan finds (`None`: 0 to 6, by the hash).
    pub(crate) risks_per_scan: Option<usize>,
    run_after: Duration,
    finish_after: Duration,
    pub(crate) clock: Clock,
    clusters: Vec<ClusterDef>,
    failing: HashSet<String>,
    tasks: Vec<Task>,
    index: HashMap<String, usize>,
    created: Vec<CreatedTask>,
}

impl Store {
    pub(crate) fn new(
        seed: u64,
        run_after: Duration,
        finish_after: Duration,
        clusters: Vec<ClusterDef>,
        failing: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            seed,
            risks_per_scan: None,
            run_after,
            // A task cannot finish before it starts.
            finish_after: finish_after.max(run_after),
            clock: Clock::new(),
            clusters,
            failing: failing.into_iter().collect(),
            tasks: Vec::new(),
            index: HashMap::new(),
            created: Vec::new(),
        }
    }

    pub(crate) fn fail_cluster(&mut self, id: &str, fail: bool) {
        if fail {
            self.failing.insert(id.to_string());
        } else {
            self.failing.remove(id);
        }
    }

    pub(crate) fn created(&self) -> Vec<CreatedTask> {
        self.created.clone()
    }

    fn cluster_def(&self, id: &str) -> ClusterDef {
        self.clusters
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .unwrap_or_else(|| ClusterDef::named(id))
    }

    /// Commits a task (the body must already be validated) and returns its id.
    pub(crate) fn create(&mut self, new: NewTask, now: Instant) -> String {
        let seq = u64::try_from(self.tasks.len()).unwrap_or(u64::MAX) + 1;
        let id = task_id(self.seed, seq);
        let start = now + self.run_after;
        let end = now + self.finish_after;
        let created_ms = self.clock.epoch_ms(now);
        let mut task = Task {
            id: id.clone(),
            project_id: new.project_id.clone(),
            task_type: new.request.task_type,
            name: format!("{}_{seq:06}", new.request.task_type),
            created_ms,
            start,
            end,
            scan_types: Vec::new(),
            file_type: None,
            clusters: Vec::new(),
            files: Vec::new(),
        };
        if let Some(info) = &new.request.cluster_scan_info {
            task.scan_types = info.scan_type_list.clone();
            let ids: Vec<String> = match info.range_type {
                RangeType::AllCluster => self.clusters.iter().map(|c| c.id.clone()).collect(),
                RangeType::SpecificCluster => info.cluster_id_list.clone().unwrap_or_default(),
            };
            task.clusters = ids
                .iter()
                .map(|cid| {
                    let fails = self.failing.contains(cid);
                    ClusterRun {
                        def: self.cluster_def(cid),
                        details: info
                            .scan_type_list
                            .iter()
                            .map(|st| (*st, Run { start, end, fails }))
                            .collect(),
                    }
                })
                .collect();
        }
        if let Some(info) = &new.request.iac_scan_info {
            task.file_type = Some(info.file_type);
            task.files = info
                .file_id_list
                .iter()
                .map(|fid| FileRun {
                    id: fid.clone(),
                    name: match info.file_type {
                        FileType::Dockerfile => format!("{fid}.Dockerfile"),
                        FileType::K8sYaml => format!("{fid}.yaml"),
                    },
                    size: 256 + len_i64(fid.len()) * 97,
                    run: Run {
                        start,
                        end,
                        fails: fid.starts_with("bad"),
                    },
                })
                .collect();
        }
        self.index.insert(id.clone(), self.tasks.len());
        self.tasks.push(task);
        self.created.push(CreatedTask {
            seq,
            task_id: id.clone(),
            task_type: new.request.task_type,
            project_id: new.project_id,
            enterprise_project_id: new.enterprise_project_id,
            user: new.user,
            body: new.body,
            created_at_ms: created_ms,
        });
        id
    }

    fn task(&self, project: &str, task_id: &str) -> Result<&Task, Rejection> {
        self.index
            .get(task_id)
            .and_then(|i| self.tasks.get(*i))
            .filter(|t| t.project_id == project)
            .ok_or_else(|| Rejection::NotFound(format!("task {task_id} does not exist")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hss_client::model::{ClusterScanInfo, IacScanInfo, RetryClusterScanInfo};

    const SEC: Duration = Duration::from_secs(1);

    fn store(failing: &[&str]) -> Store {
        Store::new(
            0,
            5 * SEC,
            30 * SEC,
            vec![ClusterDef::named("good"), ClusterDef::named("flaky")],
            failing.iter().map(|s| s.to_string()),
        )
    }

    fn cluster_task(range: RangeType, ids: Option<Vec<&str>>) -> NewTask {
        let request = CreateTaskRequest {
            task_type: TaskType::ClusterScan,
            cluster_scan_info: Some(ClusterScanInfo {
                scan_type_list: vec![ScanType::ClusterVul, ScanType::Benchmark],
                range_type: range,
                cluster_id_list: ids.map(|v| v.into_iter().map(String::from).collect()),
            }),
            iac_scan_info: None,
        };
        NewTask {
            body: serde_json::to_value(&request).expect("json"),
            request,
            project_id: "p".into(),
            enterprise_project_id: None,
            user: "ak".into(),
        }
    }

    fn only(store: &Store, now: Instant) -> TaskInfo {
        let page = store
            .list_tasks(
                "p",
                &ListTasksRequest::for_type(TaskType::ClusterScan),
                0,
                10,
                now,
            )
            .expect("list");
        assert_eq!(page.total_num, 1);
        page.data_list[0].clone()
    }

    #[test]
    fn status_moves_ready_running_finished_with_the_clock_alone() {
        let mut s = store(&[]);
        let t0 = Instant::now();
        s.create(cluster_task(RangeType::AllCluster, None), t0);
        let at = |secs| only(&s, t0 + secs * SEC);
        assert_eq!(at(0).task_status, TaskStatus::Ready);
        assert_eq!(at(4).task_status, TaskStatus::Ready);
        assert_eq!(at(5).task_status, TaskStatus::Running);
        let running = at(29);
        assert_eq!(running.end_time, None);
        assert_eq!(running.estimated_time, Some(1));
        let info = running.cluster_scan_info.expect("cluster info");
        assert_eq!(info.scanning_cluster_num, Some(2));
        let done = at(30);
        assert_eq!(done.task_status, TaskStatus::Finished);
        assert_eq!(
            done.end_time,
            Some(done.start_time.expect("start") + 30_000)
        );
        assert_eq!(done.estimated_time, Some(0));
        let info = done.cluster_scan_info.expect("cluster info");
        assert_eq!(
            (info.scanning_cluster_num, info.success_cluster_num),
            (Some(0), Some(2))
        );
    }

    #[test]
    fn a_failing_cluster_fails_every_scan_type_and_retry_reruns_it() {
        let mut s = store(&["flaky"]);
        let t0 = Instant::now();
        let id = s.create(cluster_task(RangeType::AllCluster, None), t0);
        let done = t0 + 30 * SEC;
        let info = only(&s, done).cluster_scan_info.expect("info");
        assert_eq!(
            (info.success_cluster_num, info.failed_cluster_num),
            (Some(1), Some(1))
        );
        let req = ListTaskResourcesRequest {
            task_type: TaskType::ClusterScan,
            cluster_scan_info: None,
            iac_scan_info: None,
        };
        let rows = s
            .list_resources("p", &id, &req, 0, 10, done)
            .expect("rows")
            .cluster_scan_data_list;
        let flaky = rows
            .iter()
            .find(|r| r.cluster_id == "flaky")
            .expect("flaky");
        assert_eq!(flaky.scan_status, ScanStatus::Failed);
        assert!(
            flaky
                .scan_detail_list
                .iter()
                .all(|d| d.status == ScanStatus::Failed && d.failed_reason.is_some())
        );

        s.fail_cluster("flaky", false);
        let retry = RetryTaskRequest {
            task_type: TaskType::ClusterScan,
            cluster_scan_info: RetryClusterScanInfo {
                range_type: RetryRangeType::AllFailedCluster,
                cluster_info_list: None,
            },
        };
        let r0 = t0 + 40 * SEC;
        s.retry("p", &id, &retry, r0).expect("retry");
        let again = only(&s, r0);
        assert_eq!(again.task_status, TaskStatus::Running);
        assert_eq!(
            again.cluster_scan_info.expect("info").scanning_cluster_num,
            Some(1)
        );
        let info = only(&s, r0 + 30 * SEC).cluster_scan_info.expect("info");
        assert_eq!(
            (info.success_cluster_num, info.failed_cluster_num),
            (Some(2), Some(0))
        );
    }

    #[test]
    fn specific_clusters_may_be_unknown_and_iac_files_named_bad_fail() {
        let mut s = store(&[]);
        let t0 = Instant::now();
        let id = s.create(
            cluster_task(RangeType::SpecificCluster, Some(vec!["elsewhere"])),
            t0,
        );
        let req = ListTaskResourcesRequest {
            task_type: TaskType::ClusterScan,
            cluster_scan_info: None,
            iac_scan_info: None,
        };
        let rows = s.list_resources("p", &id, &req, 0, 10, t0).expect("rows");
        assert_eq!(rows.cluster_scan_data_list[0].cluster_id, "elsewhere");
        assert_eq!(
            rows.cluster_scan_data_list[0].scan_status,
            ScanStatus::Scanning
        );

        let request = CreateTaskRequest {
            task_type: TaskType::IacScan,
            cluster_scan_info: None,
            iac_scan_info: Some(IacScanInfo {
                file_type: FileType::K8sYaml,
                file_id_list: vec!["ok-1".into(), "bad-2".into()],
            }),
        };
        let iac = s.create(
            NewTask {
                body: serde_json::Value::Null,
                request,
                project_id: "p".into(),
                enterprise_project_id: None,
                user: "ak".into(),
            },
            t0,
        );
        let req = ListTaskResourcesRequest {
            task_type: TaskType::IacScan,
            cluster_scan_info: None,
            iac_scan_info: None,
        };
        let rows = s
            .list_resources("p", &iac, &req, 0, 10, t0 + 30 * SEC)
            .expect("rows")
            .iac_scan_data_list;
        let status: Vec<_> = rows.iter().map(|r| r.scan_status).collect();
        assert_eq!(status, vec![ScanStatus::Success, ScanStatus::Failed]);
        assert!(
            s.list_resources("other-project", &iac, &req, 0, 10, t0)
                .is_err()
        );
    }

    #[test]
    fn ten_thousand_tasks_list_newest_first_in_one_pass() {
        let mut s = store(&[]);
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            s.create(
                cluster_task(RangeType::AllCluster, None),
                t0 + Duration::from_millis(i),
            );
        }
        let started = std::time::Instant::now();
        let mut q = ListTasksRequest::for_type(TaskType::ClusterScan);
        q.start_create_time = Some(s.clock.epoch_ms(t0 + Duration::from_millis(9_000)));
        let page = s.list_tasks("p", &q, 0, 200, t0 + 60 * SEC).expect("list");
        assert_eq!(page.total_num, 1_000);
        assert_eq!(page.data_list.len(), 200);
        let times: Vec<i64> = page.data_list.iter().filter_map(|t| t.start_time).collect();
        assert!(times.windows(2).all(|w| w[0] > w[1]), "newest first");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn task_ids_are_deterministic_per_seed_and_unique() {
        assert_eq!(task_id(1, 1), task_id(1, 1));
        assert_ne!(task_id(1, 1), task_id(1, 2));
        assert_ne!(task_id(1, 1), task_id(2, 1));
        assert_eq!(task_id(0, 1).len(), 36);
    }
}
