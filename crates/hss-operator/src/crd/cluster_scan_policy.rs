//! `ClusterScanPolicy`: what the ClusterScanTasks of the namespaces it selects may do with the
//! operator's own credentials (with `run --tenancy policy`). Cluster-scoped and written by
//! the cluster's administrators only; the decision lives in [`crate::tenancy`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use hss_client::model::ScanType;

/// Most namespaces a policy's status names (the count is always exact).
pub const MAX_LISTED_NAMESPACES: usize = 100;

/// Grants the ClusterScanTasks of the selected namespaces the use of the operator's own HSS
/// credentials for the listed clusters, files, scan types and projects, with a weight in the
/// fair share of the HSS budget. A namespace selected by several policies gets the union of
/// their grants. With `--tenancy policy`, a namespace no policy selects may not use the
/// operator's credentials at all.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hss.scanops.dev",
    version = "v1alpha1",
    kind = "ClusterScanPolicy",
    status = "ClusterScanPolicyStatus",
    shortname = "cspolicy",
    category = "hss",
    printcolumn = r#"{"name":"Clusters","type":"string","jsonPath":".spec.clusterIds"}"#,
    printcolumn = r#"{"name":"All","type":"boolean","jsonPath":".spec.allClusters"}"#,
    printcolumn = r#"{"name":"IaC","type":"boolean","jsonPath":".spec.iacScan"}"#,
    printcolumn = r#"{"name":"Share","type":"integer","jsonPath":".spec.share"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"integer","jsonPath":".status.namespaceCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "Says what the ClusterScanTasks of the selected namespaces may scan with the operator's own HSS credentials."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScanPolicySpec {
    /// The namespaces this policy applies to, by their labels (`kubernetes.io/metadata.name`
    /// selects one namespace by name). An empty selector selects every namespace.
    pub namespace_selector: LabelSelector,

    /// HSS cluster ids these namespaces may scan (rangeType specific_cluster) with the
    /// operator's credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1000),
        inner(length(min = 1, max = 128)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub cluster_ids: Vec<String>,

    /// rangeType all_cluster allowed: every cluster of the project, whatever clusterIds says.
    /// Default false.
    #[serde(default)]
    pub all_clusters: bool,

    /// taskType iac_scan allowed. Default false.
    #[serde(default)]
    pub iac_scan: bool,

    /// The uploaded IaC files iac_scan may read. Empty: any file of the project (list the
    /// team's files to keep it to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1000),
        inner(length(min = 1, max = 128)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub file_ids: Vec<String>,

    /// Allowed scan types of cluster scans (cluster_vul, risk_assessment, benchmark). Empty:
    /// all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3), extend("x-kubernetes-list-type" = "set"))]
    pub scan_types: Vec<ScanType>,

    /// Projects (HSS project ids) these namespaces may name in spec.projectId besides the
    /// operator's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(length(min = 1, max = 64)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub projects: Vec<String>,

    /// Weight of each selected namespace in the fair share of the HSS call budget (a namespace
    /// selected by several policies takes the largest). Default 1.
    #[serde(default = "default_share")]
    #[schemars(range(min = 1, max = 1000))]
    pub share: u32,

    /// Most unfinished ClusterScanTasks per selected namespace (the smallest non-zero value of
    /// the policies selecting it wins). 0: no cap. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100000))]
    pub max_unfinished: u32,
}

fn default_share() -> u32 {
    1
}

/// What the operator observed, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScanPolicyStatus {
    /// The namespaces the selector selects now, sorted (at most 100 are listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 63)))]
    pub namespaces: Vec<String>,

    /// How many namespaces the selector selects.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub namespace_count: u32,

    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: the selector is valid and the policy is in force (False, with the reason,
    /// when its selector cannot be read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
}
