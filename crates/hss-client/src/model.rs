//! Request and response types of the HSS v5 task APIs.
//!
//! Field names are HSS's snake_case. Responses ignore unknown fields; a missing required field
//! fails decoding with a serde error (never a panic). Enumerations in responses carry an
//! `Unknown` variant so a value HSS adds later does not break decoding.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `task_type` of the common task APIs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    ClusterScan,
    IacScan,
}

impl TaskType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterScan => "cluster_scan",
            Self::IacScan => "iac_scan",
        }
    }
}

impl std::fmt::Display for TaskType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a cluster scan looks at.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ScanType {
    ClusterVul,
    RiskAssessment,
    Benchmark,
}

impl ScanType {
    /// The wire name: `cluster_vul`, `risk_assessment` or `benchmark`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterVul => "cluster_vul",
            Self::RiskAssessment => "risk_assessment",
            Self::Benchmark => "benchmark",
        }
    }
}

/// Which clusters a cluster scan covers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RangeType {
    AllCluster,
    SpecificCluster,
}

/// Kind of file an IaC scan reads.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    Dockerfile,
    K8sYaml,
}

/// Task life cycle as HSS reports it. Failure is per resource, never per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Ready,
    Running,
    Finished,
    #[serde(other)]
    Unknown,
}

/// `manual` for API-created tasks, `schedule` for console schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerType {
    Manual,
    Schedule,
    #[serde(other)]
    Unknown,
}

/// Per-resource scan state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    Scanning,
    Success,
    Failed,
    #[serde(other)]
    Unknown,
}

/// The wire spelling of a model enum value (`cluster_vul`, `success`, ...); empty for
/// anything that does not serialise to a string.
pub fn wire_name(value: impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- CreateTask

/// Body of `POST /v5/{project_id}/common/task`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTaskRequest {
    pub task_type: TaskType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scan_info: Option<ClusterScanInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iac_scan_info: Option<IacScanInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterScanInfo {
    pub scan_type_list: Vec<ScanType>,
    pub range_type: RangeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id_list: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IacScanInfo {
    pub file_type: FileType,
    pub file_id_list: Vec<String>,
}

/// Longest id HSS is known to hand out is 64 characters; anything past this is certainly bad
/// input and is refused before it costs an API call.
pub const MAX_ID_LEN: usize = 128;
/// No list limit is published; this bound keeps a hostile manifest from building a huge body.
pub const MAX_LIST_LEN: usize = 1000;

impl CreateTaskRequest {
    /// Checks the body the way HSS does (HSS.0001 on failure). Returns every problem found,
    /// each phrased for a person.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        match self.task_type {
            TaskType::ClusterScan => {
                if self.iac_scan_info.is_some() {
                    problems
                        .push("iac_scan_info must not be set for task_type cluster_scan".into());
                }
                match &self.cluster_scan_info {
                    None => problems
                        .push("cluster_scan_info is required for task_type cluster_scan".into()),
                    Some(info) => {
                        if info.scan_type_list.is_empty() {
                            problems.push(
                                "cluster_scan_info.scan_type_list must name at least one scan type"
                                    .into(),
                            );
                        }
                        let mut seen = info.scan_type_list.clone();
                        seen.sort();
                        seen.dedup();
                        if seen.len() != info.scan_type_list.len() {
                            problems.push(
                                "cluster_scan_info.scan_type_list must not repeat a scan type"
                                    .into(),
                            );
                        }
                        match (info.range_type, &info.cluster_id_list) {
                            (RangeType::SpecificCluster, None) => problems.push(
                                "cluster_scan_info.cluster_id_list is required when range_type is specific_cluster".into(),
                            ),
                            (RangeType::SpecificCluster, Some(ids)) if ids.is_empty() => problems.push(
                                "cluster_scan_info.cluster_id_list must not be empty when range_type is specific_cluster".into(),
                            ),
                            (RangeType::AllCluster, Some(ids)) if !ids.is_empty() => problems.push(
                                "cluster_scan_info.cluster_id_list must be empty when range_type is all_cluster".into(),
                            ),
                            _ => {}
                        }
                        if let Some(ids) = &info.cluster_id_list {
                            check_ids("cluster_scan_info.cluster_id_list", ids, &mut problems);
                        }
                    }
                }
            }
            TaskType::IacScan => {
                if self.cluster_scan_info.is_some() {
                    problems
                        .push("cluster_scan_info must not be set for task_type iac_scan".into());
                }
                match &self.iac_scan_info {
                    None => {
                        problems.push("iac_scan_info is required for task_type iac_scan".into())
                    }
                    Some(info) => {
                        if info.file_id_list.is_empty() {
                            problems.push(
                                "iac_scan_info.file_id_list must name at least one file".into(),
                            );
                        }
                        check_ids(
                            "iac_scan_info.file_id_list",
                            &info.file_id_list,
                            &mut problems,
                        );
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn check_ids(field: &str, ids: &[String], problems: &mut Vec<String>) {
    if ids.len() > MAX_LIST_LEN {
        problems.push(format!(
            "{field} has {} entries; at most {MAX_LIST_LEN} are accepted",
            ids.len()
        ));
    }
    if let Some(bad) = ids
        .iter()
        .find(|id| id.trim().is_empty() || id.len() > MAX_ID_LEN)
    {
        let shown: String = bad.chars().take(40).collect();
        problems.push(format!(
            "{field} entry {shown:?} is not an id (empty, blank or longer than {MAX_ID_LEN} characters)"
        ));
    }
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        problems.push(format!("{field} must not repeat an id"));
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTaskResponse {
    pub task_id: String,
}

// ---------------------------------------------------------------- ListTasks

/// Body of `POST /v5/{project_id}/common/tasks/batch-query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTasksRequest {
    pub task_type: TaskType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    /// Epoch milliseconds, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_create_time: Option<i64>,
    /// Epoch milliseconds, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_create_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_type: Option<TriggerType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scan_info: Option<ScanTypeFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iac_scan_info: Option<FileTypeFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanTypeFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_type_list: Option<Vec<ScanType>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTypeFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_type: Option<FileType>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListTasksResponse {
    pub total_num: i64,
    #[serde(default)]
    pub data_list: Vec<TaskInfo>,
}

/// One task as ListTasks reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub task_id: String,
    pub task_type: TaskType,
    #[serde(default)]
    pub task_name: Option<String>,
    #[serde(default)]
    pub trigger_type: Option<TriggerType>,
    pub task_status: TaskStatus,
    /// Epoch milliseconds.
    #[serde(default)]
    pub start_time: Option<i64>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub end_time: Option<i64>,
    /// Minutes.
    #[serde(default)]
    pub estimated_time: Option<i64>,
    #[serde(default)]
    pub cluster_scan_info: Option<TaskClusterScanInfo>,
    #[serde(default)]
    pub iac_scan_info: Option<TaskIacScanInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskClusterScanInfo {
    #[serde(default)]
    pub scan_type_list: Vec<ScanType>,
    #[serde(default)]
    pub scanning_cluster_num: Option<i64>,
    #[serde(default)]
    pub success_cluster_num: Option<i64>,
    #[serde(default)]
    pub failed_cluster_num: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskIacScanInfo {
    #[serde(default)]
    pub file_type: Option<FileType>,
    #[serde(default)]
    pub scan_file_num: Option<i64>,
    #[serde(default)]
    pub success_file_num: Option<i64>,
    #[serde(default)]
    pub failed_file_num: Option<i64>,
}

impl ListTasksRequest {
    /// A filter on task type alone.
    pub fn for_type(task_type: TaskType) -> Self {
        Self {
            task_type,
            task_id: None,
            task_name: None,
            start_create_time: None,
            end_create_time: None,
            trigger_type: None,
            task_status: None,
            sort_key: None,
            sort_dir: None,
            cluster_scan_info: None,
            iac_scan_info: None,
        }
    }
}

// ---------------------------------------------------------------- ListTaskResources

/// Body of `POST /v5/{project_id}/common/tasks/{task_id}/resources/batch-query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTaskResourcesRequest {
    pub task_type: TaskType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scan_info: Option<ClusterResourceFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iac_scan_info: Option<IacResourceFilter>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterResourceFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_status: Option<ScanStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IacResourceFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_status: Option<ScanStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListTaskResourcesResponse {
    pub total_num: i64,
    #[serde(default)]
    pub cluster_scan_data_list: Vec<ClusterScanResource>,
    #[serde(default)]
    pub iac_scan_data_list: Vec<IacScanResource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterScanResource {
    pub cluster_id: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub cluster_type: Option<String>,
    #[serde(default)]
    pub cluster_version: Option<String>,
    pub scan_status: ScanStatus,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub scan_detail_list: Vec<ScanDetail>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanDetail {
    pub scan_type: ScanType,
    pub status: ScanStatus,
    #[serde(default)]
    pub failed_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IacScanResource {
    pub file_id: String,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub file_type: Option<FileType>,
    #[serde(default)]
    pub chart_name: Option<String>,
    #[serde(default)]
    pub file_size: Option<i64>,
    pub scan_status: ScanStatus,
    #[serde(default)]
    pub failed_reason: Option<String>,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
}

// ---------------------------------------------------------------- RetryTask

/// Body of `PUT /v5/{project_id}/common/tasks/{task_id}/retry` (cluster_scan only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryTaskRequest {
    pub task_type: TaskType,
    pub cluster_scan_info: RetryClusterScanInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryRangeType {
    AllFailedCluster,
    SpecificCluster,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryClusterScanInfo {
    pub range_type: RetryRangeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_info_list: Option<Vec<RetryClusterInfo>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryClusterInfo {
    pub cluster_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_type_list: Option<Vec<ScanType>>,
}

impl RetryTaskRequest {
    /// Checks the body the way HSS does.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.task_type != TaskType::ClusterScan {
            problems.push("retry is only supported for task_type cluster_scan".to_string());
        }
        if self.cluster_scan_info.range_type == RetryRangeType::SpecificCluster {
            match &self.cluster_scan_info.cluster_info_list {
                Some(list) if (1..=200).contains(&list.len()) => {}
                _ => problems.push(
                    "cluster_info_list must hold 1 to 200 clusters when range_type is specific_cluster".to_string(),
                ),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

// ---------------------------------------------------------------- ShowTaskStatistics

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatistics {
    pub total_num: i64,
    #[serde(default)]
    pub running_num: Option<i64>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub last_task_start_time: Option<i64>,
}

// ---------------------------------------------------------------- ListKubernetesClusterDetails

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListClustersResponse {
    #[serde(default)]
    pub total_num: Option<i64>,
    #[serde(default)]
    pub cluster_info_list: Vec<ClusterInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub cluster_type: Option<String>,
    /// Available, Unavailable, Creating, Deleting, Upgrading, ...
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

// ---------------------------------------------------------------- errors

/// Error body of HSS and of the API gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_msg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(range: RangeType, ids: Option<Vec<&str>>) -> CreateTaskRequest {
        CreateTaskRequest {
            task_type: TaskType::ClusterScan,
            cluster_scan_info: Some(ClusterScanInfo {
                scan_type_list: vec![ScanType::ClusterVul],
                range_type: range,
                cluster_id_list: ids.map(|v| v.into_iter().map(String::from).collect()),
            }),
            iac_scan_info: None,
        }
    }

    #[test]
    fn create_task_validation_table() {
        // (request, expected to pass, reason)
        let cases = [
            (
                cluster(RangeType::AllCluster, None),
                true,
                "all clusters needs no ids",
            ),
            (
                cluster(RangeType::SpecificCluster, Some(vec!["c1"])),
                true,
                "specific with ids",
            ),
            (
                cluster(RangeType::SpecificCluster, None),
                false,
                "specific needs ids",
            ),
            (
                cluster(RangeType::SpecificCluster, Some(vec![])),
                false,
                "specific needs non-empty ids",
            ),
            (
                cluster(RangeType::SpecificCluster, Some(vec!["a", "a"])),
                false,
                "duplicate ids",
            ),
            (
                cluster(RangeType::SpecificCluster, Some(vec![" "])),
                false,
                "blank id",
            ),
            (
                CreateTaskRequest {
                    task_type: TaskType::IacScan,
                    cluster_scan_info: None,
                    iac_scan_info: None,
                },
                false,
                "iac needs iac_scan_info",
            ),
            (
                CreateTaskRequest {
                    task_type: TaskType::IacScan,
                    cluster_scan_info: None,
                    iac_scan_info: Some(IacScanInfo {
                        file_type: FileType::K8sYaml,
                        file_id_list: vec!["f".into()],
                    }),
                },
                true,
                "iac with a file",
            ),
        ];
        for (req, ok, reason) in cases {
            assert_eq!(req.validate().is_ok(), ok, "{reason}: {:?}", req.validate());
        }
    }

    #[test]
    fn create_task_body_is_hss_shaped() {
        let body = serde_json::to_value(cluster(RangeType::SpecificCluster, Some(vec!["c1"])))
            .expect("json");
        assert_eq!(
            body,
            serde_json::json!({"task_type":"cluster_scan","cluster_scan_info":{"scan_type_list":["cluster_vul"],"range_type":"specific_cluster","cluster_id_list":["c1"]}})
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_statuses_tolerated() {
        let text = r#"{"total_num":1,"extra":true,"data_list":[{"task_id":"t","task_type":"cluster_scan","task_status":"paused","new_field":1}]}"#;
        let resp: ListTasksResponse = serde_json::from_str(text).expect("decodes");
        assert_eq!(resp.data_list[0].task_status, TaskStatus::Unknown);
    }

    #[test]
    fn missing_required_fields_are_errors() {
        assert!(serde_json::from_str::<CreateTaskResponse>("{}").is_err());
        assert!(serde_json::from_str::<ListTasksResponse>(r#"{"data_list":[]}"#).is_err());
        assert!(
            serde_json::from_str::<ListTasksResponse>(
                r#"{"total_num":1,"data_list":[{"task_type":"iac_scan"}]}"#
            )
            .is_err()
        );
    }
}
