//! `ClusterScanTask`: one HSS scan, run once, like a Job.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use hss_client::model::{
    ClusterScanInfo, CreateTaskRequest, FileType, IacScanInfo, RangeType, ScanType, TaskType,
};

/// Finalizer that keeps a ClusterScanTask until any in-flight submission is resolved.
pub const FINALIZER: &str = "clusterscantasks.hss.scanops.dev/finalizer";

/// Bound on `status.clusters` (and IaC files): beyond it only counts are kept.
pub const MAX_RESULTS: usize = 100;

/// A one-shot Huawei Cloud HSS scan: the operator creates exactly one HSS task for it, follows
/// it to the end and records the per-cluster results. The spec cannot change after creation;
/// create a new object to scan again.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hss.scanops.dev",
    version = "v1alpha1",
    kind = "ClusterScanTask",
    namespaced,
    status = "ClusterScanTaskStatus",
    shortname = "cst",
    shortname = "scantask",
    category = "hss",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.taskType"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Task ID","type":"string","jsonPath":".status.taskId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    cel,
    doc = "A one-shot Huawei Cloud HSS scan (cluster_scan or iac_scan), submitted exactly once and followed to the end."
)]
#[x_kube(
    validation = Rule::new("self.taskType == 'cluster_scan' ? (has(self.clusterScan) && !has(self.iacScan)) : (has(self.iacScan) && !has(self.clusterScan))")
        .message("set clusterScan for taskType cluster_scan or iacScan for taskType iac_scan, not both"),
    validation = Rule::new("!has(self.retryFailedClusters) || self.taskType == 'cluster_scan'")
        .message("retryFailedClusters applies to taskType cluster_scan only"),
    validation = Rule::new("self == oldSelf")
        .message("spec is immutable: a scan runs once; create a new ClusterScanTask to scan again"),
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScanTaskSpec {
    /// What HSS scans: `cluster_scan` (Kubernetes clusters) or `iac_scan` (Dockerfiles and
    /// Kubernetes YAML uploaded to HSS). Spelled exactly as HSS spells it.
    pub task_type: TaskType,

    /// Cluster scan settings; required when taskType is cluster_scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scan: Option<ClusterScanSpec>,

    /// IaC scan settings; required when taskType is iac_scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iac_scan: Option<IacScanSpec>,

    /// Huawei Cloud project id. Default: the operator's configured project. With the
    /// operator's own credentials only the operator's project (or one it allows) is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub project_id: Option<String>,

    /// Enterprise project id (`0` is the default project, `all_granted_eps` all of them).
    /// Default: the operator's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub enterprise_project_id: Option<String>,

    /// Huawei Cloud region, e.g. `cn-north-4`. Default: the operator's configured region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: Option<String>,

    /// Explicit HSS endpoint URL overriding the region's, https only (`https://host[:port]`).
    /// Default: the operator's configuration. Accepted only with the object's own
    /// credentialsSecretRef, and only if the operator allows the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 512),
        regex(pattern = r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")
    )]
    pub endpoint: Option<String>,

    /// Secret in this object's namespace holding credentials: keys `accessKey` and
    /// `secretKey` (optionally `securityToken` for temporary credentials), or `authToken` (an
    /// IAM token). Default: the operator's own credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// How many times HSS may re-run failed clusters (RetryTask) before the scan is
    /// reported PartiallyFailed. cluster_scan only. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retry_failed_clusters: Option<u32>,
}

/// Which clusters to scan and for what.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.rangeType == 'specific_cluster' ? (has(self.clusterIds) && size(self.clusterIds) > 0) : (!has(self.clusterIds) || size(self.clusterIds) == 0)")
        .message("clusterIds must list at least one cluster when rangeType is specific_cluster, and must be empty for all_cluster"),
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScanSpec {
    /// Scans to run: any of `cluster_vul` (vulnerabilities), `risk_assessment` (configuration
    /// risks) and `benchmark` (CIS benchmark). At least one, no repeats.
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y == x))").message("scanTypes must not repeat a scan type"))]
    pub scan_types: Vec<ScanType>,

    /// `all_cluster` scans every cluster HSS protects; `specific_cluster` only clusterIds.
    pub range_type: RangeType,

    /// HSS cluster ids (as ListKubernetesClusterDetails shows them); required for
    /// specific_cluster. At most 1000, no repeats, each 1-128 of letters, digits, `.`, `_`
    /// and `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 1000),
        inner(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub cluster_ids: Option<Vec<String>>,
}

/// Which uploaded files an IaC scan reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IacScanSpec {
    /// `dockerfile` or `k8s_yaml`.
    pub file_type: FileType,

    /// Ids of files uploaded to HSS. At least one, at most 1000, no repeats, each 1-128 of
    /// letters, digits, `.`, `_` and `-`.
    #[schemars(
        length(min = 1, max = 1000),
        inner(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub file_ids: Vec<String>,

    /// Where each file of fileIds lives in the repository it came from: file id -> path
    /// relative to the repository root, e.g. `deploy/app.yaml` (`/`-separated, no `.` or `..`
    /// segments). Optional, for `hss-operator submit`: `-o sarif` gives the file's results
    /// this physical location and `-o junit` names the file's test case after it. The
    /// operator does not use it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "file_paths_schema")]
    pub file_paths: BTreeMap<String, String>,
}

/// Longest path in `iacScan.filePaths`.
pub const MAX_FILE_PATH: usize = 1024;

/// `iacScan.filePaths`: at most one path per file id, each relative (no leading `/`), with
/// `/` separators and no control characters. The `.`/`..` segment rule and the keys (ids of
/// fileIds) are checked by [`IacScanSpec::path_problems`]: a CEL rule over a map's keys has no
/// bounded cost, as key lengths cannot be bounded in a structural schema.
fn file_paths_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 1000,
        "additionalProperties": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_FILE_PATH,
            "pattern": r"^[^/\\\x00-\x1f\x7f]([^\\\x00-\x1f\x7f]*[^/\\\x00-\x1f\x7f])?$"
        }
    })
}

impl IacScanSpec {
    /// What is wrong with `filePaths`: keys that are not in fileIds, and paths that are not
    /// plain relative paths (see [`file_paths_schema`]). Pure; `submit` checks it, the
    /// operator ignores the field.
    pub fn path_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.file_paths.len() > 1000 {
            problems.push(format!(
                "iacScan.filePaths lists {} paths; at most 1000",
                self.file_paths.len()
            ));
        }
        let ids: std::collections::BTreeSet<&str> =
            self.file_ids.iter().map(String::as_str).collect();
        for (id, path) in &self.file_paths {
            let shown: String = id.chars().take(40).collect();
            if !ids.contains(id.as_str()) {
                problems.push(format!(
                    "iacScan.filePaths names {shown:?}, which is not in iacScan.fileIds"
                ));
            }
            let plain = !path.is_empty()
                && path.chars().count() <= MAX_FILE_PATH
                && !path.starts_with('/')
                && !path.contains('\\')
                && !path.chars().any(char::is_control)
                && path.split('/').all(|s| !matches!(s, "" | "." | ".."));
            if !plain {
                problems.push(format!(
                    "iacScan.filePaths[{shown:?}] is not a relative path: at most {MAX_FILE_PATH} characters, '/' between non-empty segments, none of them '.' or '..'"
                ));
            }
        }
        problems
    }
}

/// A Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where a scan is in its life.
// Also the `phase` metrics label: the derived `EncodeLabelValue` writes the variant name, which
// is `as_str` (a plain comment: doc comments end up in the CRD schema).
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    schemars::JsonSchema,
    Default,
    prometheus_client::encoding::EncodeLabelValue,
)]
pub enum Phase {
    // Accepted, not yet sent to HSS.
    #[default]
    Pending,
    // A CreateTask attempt is recorded; its outcome is being established.
    Submitting,
    // HSS created the task (status.taskId); it has not started.
    Submitted,
    // HSS is scanning.
    Running,
    // Finished; every cluster or file succeeded.
    Succeeded,
    // Finished; some clusters or files failed (see status.clusters).
    PartiallyFailed,
    // Never ran: the spec or the request was rejected (see conditions and lastError).
    Failed,
}

impl Phase {
    /// Every phase, in the order of a scan's life.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Submitting,
        Phase::Submitted,
        Phase::Running,
        Phase::Succeeded,
        Phase::PartiallyFailed,
        Phase::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Submitting => "Submitting",
            Phase::Submitted => "Submitted",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::PartiallyFailed => "PartiallyFailed",
            Phase::Failed => "Failed",
        }
    }

    /// Nothing more will happen to a scan in a final phase.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::PartiallyFailed | Phase::Failed
        )
    }
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScanTaskStatus {
    /// Pending, Submitting, Submitted, Running, Succeeded, PartiallyFailed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The HSS task id, written as soon as it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub task_id: Option<String>,

    /// The operator's seal over the object and taskId (an HMAC with a key kept in the claims
    /// ConfigMap): a taskId written by anyone else does not match it and is not followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub task_id_seal: Option<String>,

    /// When HSS accepted the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<Time>,

    /// When HSS reported the task finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// The current or last CreateTask attempt (the exactly-once protocol's record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission: Option<Submission>,

    /// Progress as HSS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,

    /// Per-cluster (or per-file) results, at most 100 entries; failed ones first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub results: Vec<ResourceResult>,

    /// What the scan found (cluster_scan): counts by level, the worst risks, bounded. Read
    /// once the task finished; the FindingsRead condition says why it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<crate::crd::findings::Findings>,

    /// How many RetryTask calls were made for failed clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,

    /// The last RetryTask: until HSS shows the re-run (or a settle time passes), a `finished`
    /// report of the run before it is not taken as the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry: Option<RetryMark>,

    /// Submitted, Complete, Failed, Finished, Throttled and CredentialsReady. Finished is True
    /// on every final phase (reason: the phase), so `kubectl wait --for=condition=Finished`
    /// ends on success and failure alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub conditions: Vec<Condition>,

    /// The generation the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The last error HSS (or the operator) reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// When a RetryTask was accepted, and how the run before it had ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryMark {
    /// When HSS accepted the RetryTask.
    pub at: Time,
    /// The `end_time` HSS reported for the run before the retry (epoch milliseconds, HSS's
    /// clock): a `finished` report with this end time is that run, not the retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_end_time: Option<i64>,
}

/// A CreateTask attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    /// Unique id of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
    /// When the current attempt was recorded, before the POST was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// How many attempts were made (for backoff).
    #[serde(default)]
    pub attempts: u32,
    /// When the last attempt failed (for backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,
    /// How the outcome was established: `Response` (HSS answered), `Lookup` (adopted from
    /// ListTasks after an ambiguous attempt), or `NotFound` (the lookup proved no task exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

/// HSS's view of the task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// ready, running or finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<String>,
    /// HSS's estimate in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_minutes: Option<i64>,
    /// Clusters or files still being scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanning: Option<i64>,
    /// Clusters or files scanned successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i64>,
    /// Clusters or files whose scan failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
}

/// One cluster's or file's result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceResult {
    /// Cluster id or file id.
    #[schemars(length(max = 256))]
    pub id: String,
    /// Cluster or file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// scanning, success or failed.
    #[schemars(length(max = 64))]
    pub status: String,
    /// Scan types that failed, with HSS's reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<ScanFailure>,
}

/// A failed scan type of one cluster (or a failed file).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanFailure {
    /// The scan type, e.g. benchmark (empty for files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_type: Option<String>,
    /// HSS's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The last error, as HSS reported it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// Bounded category, e.g. invalid_request, throttled, server_error.
    pub category: String,
    /// HSS error code, e.g. HSS.0001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Human-readable message.
    pub message: String,
    /// HSS request id, for support cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// Why a spec cannot become a CreateTask request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to turn the spec into an HSS request: {}", .0.join("; "))]
pub struct SpecError(pub Vec<String>);

impl SpecError {
    pub fn category(&self) -> &'static str {
        "invalid_spec"
    }
}

impl ClusterScanTaskSpec {
    /// The CreateTask body for this spec, checked as HSS would check it. Pure.
    /// Validates (the schema's rules too, for servers without CEL and for `submit`) and builds
    /// the CreateTask request.
    pub fn to_request(&self) -> Result<CreateTaskRequest, SpecError> {
        let mut problems = Vec::new();
        let req = CreateTaskRequest {
            task_type: self.task_type,
            cluster_scan_info: self.cluster_scan.as_ref().map(|c| ClusterScanInfo {
                scan_type_list: c.scan_types.clone(),
                range_type: c.range_type,
                cluster_id_list: match c.range_type {
                    RangeType::SpecificCluster => Some(c.cluster_ids.clone().unwrap_or_default()),
                    RangeType::AllCluster => c.cluster_ids.clone().filter(|ids| !ids.is_empty()),
                },
            }),
            iac_scan_info: self.iac_scan.as_ref().map(|i| IacScanInfo {
                file_type: i.file_type,
                file_id_list: i.file_ids.clone(),
            }),
        };
        if let Some(ids) = self
            .cluster_scan
            .as_ref()
            .and_then(|c| c.cluster_ids.as_ref())
        {
            problems.extend(id_problems("clusterScan.clusterIds", ids));
        }
        if let Some(i) = &self.iac_scan {
            problems.extend(id_problems("iacScan.fileIds", &i.file_ids));
        }
        if self.retry_failed_clusters.is_some_and(|n| n > 0)
            && self.task_type != TaskType::ClusterScan
        {
            problems.push("retryFailedClusters applies to taskType cluster_scan only".to_string());
        }
        if let Err(mut more) = req.validate() {
            problems.append(&mut more);
        }
        if problems.is_empty() {
            Ok(req)
        } else {
            Err(SpecError(
                problems.into_iter().map(|p| spec_words(&p)).collect(),
            ))
        }
    }
}

/// Rephrases HSS field names as the spec's, so messages point at what the user wrote.
fn spec_words(problem: &str) -> String {
    [
        (
            "cluster_scan_info.scan_type_list",
            "spec.clusterScan.scanTypes",
        ),
        (
            "cluster_scan_info.cluster_id_list",
            "spec.clusterScan.clusterIds",
        ),
        ("cluster_scan_info", "spec.clusterScan"),
        ("iac_scan_info.file_id_list", "spec.iacScan.fileIds"),
        ("iac_scan_info", "spec.iacScan"),
        ("range_type", "rangeType"),
        ("task_type", "spec.taskType"),
    ]
    .iter()
    .fold(problem.to_string(), |acc, (from, to)| acc.replace(from, to))
}

/// What is wrong with a list of HSS ids, as the schema says it (at most 1000, no repeats,
/// each 1-128 of letters, digits, `.`, `_`, `-`, starting with a letter or digit). Pure.
fn id_problems(field: &str, ids: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if ids.len() > 1000 {
        problems.push(format!("{field} lists {} ids; at most 1000", ids.len()));
    }
    let bad = ids.iter().find(|id| {
        id.is_empty()
            || id.len() > 128
            || !id.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    });
    if let Some(id) = bad {
        let shown: String = id.chars().take(40).collect();
        problems.push(format!(
            "{field} has an invalid id {shown:?}: 1-128 letters, digits, '.', '_' or '-'"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        let shown: String = dup.chars().take(40).collect();
        problems.push(format!("{field} repeats {shown:?}"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(spec: serde_json::Value) -> ClusterScanTask {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hss.scanops.dev/v1alpha1",
            "kind": "ClusterScanTask",
            "metadata": {"name": "t", "namespace": "default"},
            "spec": spec,
        }))
        .expect("spec shape is valid")
    }

    #[test]
    fn cel_rules_table() {
        use serde_json::json;
        // (spec, admitted, reason)
        let cases = [
            (
                json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "all_cluster"}}),
                true,
                "all clusters",
            ),
            (
                json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "specific_cluster", "clusterIds": ["c"]}}),
                true,
                "specific with ids",
            ),
            (
                json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "specific_cluster"}}),
                false,
                "specific without ids",
            ),
            (
                json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "specific_cluster", "clusterIds": []}}),
                false,
                "specific with empty ids",
            ),
            (
                json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "all_cluster", "clusterIds": ["c"]}}),
                false,
                "ids with all clusters",
            ),
            (
                json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark", "benchmark"], "rangeType": "all_cluster"}}),
                false,
                "repeated scan type",
            ),
            (
                json!({"taskType": "cluster_scan", "iacScan": {"fileType": "dockerfile", "fileIds": ["f"]}}),
                false,
                "info block must match type",
            ),
            (
                json!({"taskType": "cluster_scan"}),
                false,
                "info block required",
            ),
            (
                json!({"taskType": "iac_scan", "iacScan": {"fileType": "k8s_yaml", "fileIds": ["f"]}}),
                true,
                "iac scan",
            ),
            (
                json!({"taskType": "iac_scan", "iacScan": {"fileType": "k8s_yaml", "fileIds": ["f"]}, "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "all_cluster"}}),
                false,
                "both blocks",
            ),
            (
                json!({"taskType": "iac_scan", "iacScan": {"fileType": "k8s_yaml", "fileIds": ["f"]}, "retryFailedClusters": 2}),
                false,
                "retries are cluster_scan only",
            ),
        ];
        for (spec, admitted, reason) in cases {
            let result = task(spec).validate_cel();
            assert_eq!(result.is_ok(), admitted, "{reason}: {result:?}");
        }
    }

    #[test]
    fn spec_is_immutable_after_creation() {
        use serde_json::json;
        let old = task(
            json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "all_cluster"}}),
        );
        let same = old.clone();
        assert!(same.validate_cel_update(&old).is_ok());
        let changed = task(
            json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["cluster_vul"], "rangeType": "all_cluster"}}),
        );
        let err = changed
            .validate_cel_update(&old)
            .expect_err("spec changes are refused");
        assert!(err.to_string().contains("immutable"), "{err}");
    }

    #[test]
    fn spec_errors_name_the_spec_fields() {
        let t = task(
            serde_json::json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "specific_cluster", "clusterIds": []}}),
        );
        let err = t.spec.to_request().expect_err("empty ids");
        assert!(
            err.to_string().contains("spec.clusterScan.clusterIds"),
            "{err}"
        );
    }

    #[test]
    fn hostile_id_lists_are_refused_with_the_field_named() {
        let long = "a".repeat(5001);
        let many: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
        // (ids, expected words, reason)
        let cases: [(Vec<&str>, &str, &str); 5] = [
            (vec![""], "invalid id", "an empty id"),
            (vec![long.as_str()], "invalid id", "5,001 characters"),
            (vec!["a\nb"], "invalid id", "a newline"),
            (vec!["c1", "c1"], "repeats", "a duplicate"),
            (vec!["-x"], "invalid id", "starts with punctuation"),
        ];
        for (ids, words, why) in cases {
            let t = task(
                serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
                "scanTypes": ["benchmark"], "rangeType": "specific_cluster", "clusterIds": ids}}),
            );
            let err = t.spec.to_request().expect_err(why).to_string();
            assert!(
                err.contains("clusterIds") && err.contains(words),
                "{why}: {err}"
            );
        }
        let t = task(
            serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
            "scanTypes": ["benchmark"], "rangeType": "specific_cluster", "clusterIds": many}}),
        );
        assert!(
            t.spec
                .to_request()
                .expect_err("1001 ids")
                .to_string()
                .contains("at most 1000")
        );
        let ok = task(serde_json::json!({"taskType": "iac_scan", "iacScan": {
            "fileType": "dockerfile", "fileIds": ["0a1b2c3d-4e5f-6789-abcd-ef0123456789", "f.2_x"]}}));
        assert!(
            ok.spec.to_request().is_ok(),
            "UUIDs and dotted ids are fine"
        );
    }

    #[test]
    fn file_paths_must_name_listed_files_with_plain_relative_paths() {
        let long = format!("{}.yaml", "d/".repeat(600));
        // (id, path, problem expected, reason)
        let cases = [
            ("f1", "deploy/app.yaml", None, "a plain relative path"),
            ("f1", "Dockerfile", None, "one segment"),
            ("f1", "deploy/my app (1).yaml", None, "spaces and brackets"),
            (
                "other",
                "deploy/app.yaml",
                Some("not in iacScan.fileIds"),
                "an unknown file id",
            ),
            ("f1", "/etc/passwd", Some("not a relative path"), "absolute"),
            (
                "f1",
                "../secrets.yaml",
                Some("not a relative path"),
                "leaves the repository",
            ),
            (
                "f1",
                "deploy/./app.yaml",
                Some("not a relative path"),
                "a dot segment",
            ),
            (
                "f1",
                "deploy//app.yaml",
                Some("not a relative path"),
                "an empty segment",
            ),
            ("f1", "deploy/", Some("not a relative path"), "a directory"),
            (
                "f1",
                "deploy\\app.yaml",
                Some("not a relative path"),
                "a backslash",
            ),
            ("f1", "a\nb", Some("not a relative path"), "a newline"),
            ("f1", "", Some("not a relative path"), "empty"),
            (
                "f1",
                long.as_str(),
                Some("not a relative path"),
                "over 1024 characters",
            ),
        ];
        let schema = serde_json::to_value(schemars::schema_for!(IacScanSpec)).expect("schema");
        let item = &schema["properties"]["filePaths"]["additionalProperties"];
        let pattern = regex::Regex::new(item["pattern"].as_str().expect("a pattern"))
            .expect("the pattern compiles");
        assert_eq!(item["maxLength"], MAX_FILE_PATH);
        for (id, path, problem, reason) in cases {
            // The API server's pattern admits every path submit accepts.
            assert!(
                problem.is_some() || pattern.is_match(path),
                "{reason}: the schema refuses {path:?}"
            );
            let t = task(serde_json::json!({"taskType": "iac_scan", "iacScan": {
                "fileType": "k8s_yaml", "fileIds": ["f1"], "filePaths": {id: path}}}));
            let problems = t.spec.iac_scan.as_ref().expect("iac").path_problems();
            match problem {
                None => assert!(problems.is_empty(), "{reason}: {problems:?}"),
                Some(words) => assert!(
                    problems.len() == 1 && problems[0].contains(words),
                    "{reason}: {problems:?}"
                ),
            }
            assert!(
                t.validate_cel().is_ok(),
                "{reason}: no CEL rule reads filePaths"
            );
            assert!(
                t.spec.to_request().is_ok(),
                "{reason}: the request ignores it"
            );
        }
        for refused in [
            "/etc/passwd",
            "deploy/",
            "deploy\\app.yaml",
            "a\nb",
            "a\u{7f}",
        ] {
            assert!(
                !pattern.is_match(refused),
                "the API server refuses {refused:?}"
            );
        }
    }

    #[test]
    fn committed_crd_yaml_matches_the_types() {
        let committed = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../crds/crds.yaml"
        ))
        .expect(
            "crds/crds.yaml is committed (regenerate with `hss-operator crd > crds/crds.yaml`)",
        );
        assert_eq!(
            committed,
            crate::crd::crds_yaml().expect("renders"),
            "crds/crds.yaml is stale: run `cargo run -- crd > crds/crds.yaml`"
        );
    }
}
