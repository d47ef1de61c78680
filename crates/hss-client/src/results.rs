//! The HSS v5 result APIs a finished scan is read with: ListClusterRisks (risk assessment and
//! benchmark findings), ListSecurityCheckClusterReports (per-cluster counts: local image
//! vulnerabilities, risky configurations, privileged containers) and ListIacFileRisks (the
//! risks of one IaC file; its rows do not name the file, so it is read per file), and
//! ListClusterRiskAffectResources (the Kubernetes resources one cluster risk affects).
//!
//! Field names and types follow the official SDK's v5 models (`list_cluster_risks_*`,
//! `security_check_cluster_reports.py`, `list_cluster_risk_affect_resources_*`). Responses
//! ignore unknown fields; levels HSS may add later decode as [`RiskLevel::Unknown`].
//!
//! Guarantees: an [`AffectedResource`] is bounded where it is decoded: names, ids, namespace
//! and type cut by [`text`], at most [`MAX_HIT_PATHS`] hit paths of at most [`text::MESSAGE`]
//! characters each, control characters replaced, so a hostile server cannot grow a Report or
//! a log line through it. A `risk_id` that is not one path segment (empty, `/`, `?`, `#`, `.`,
//! `..`, control characters, over [`MAX_ID_LEN`]) is refused before any budget is spent
//! ([`Error::InvalidRequest`]).
//!
//! Assumptions: every API here pages with `offset`/`limit` (10..=200) and report `total_num`; each is
//! limited to 5 calls per minute per user like the task APIs, so each has its own budget
//! bucket. Caveat: HSS keeps the latest findings per cluster, not per task: a read right after
//! a scan shows that scan unless another scan of the same cluster finished in between.

use serde::{Deserialize, Deserializer, Serialize};

use super::{
    Api, Error,
    client::HssClient,
    limits::MAX_HIT_PATHS,
    model::MAX_ID_LEN,
    text::{self, bounded},
    wire::page_query,
};

/// `risk_type` of ListClusterRisks: the two cluster scan types that produce risk items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskType {
    RiskAssessment,
    Benchmark,
}

impl RiskType {
    pub const ALL: [RiskType; 2] = [RiskType::RiskAssessment, RiskType::Benchmark];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RiskAssessment => "risk_assessment",
            Self::Benchmark => "benchmark",
        }
    }
}

/// `risk_level` as HSS reports it, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    High,
    Medium,
    Low,
    Tips,
    #[serde(other)]
    Unknown,
}

impl RiskLevel {
    /// The four levels HSS documents, most severe first.
    pub const ALL: [RiskLevel; 4] = [
        RiskLevel::High,
        RiskLevel::Medium,
        RiskLevel::Low,
        RiskLevel::Tips,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
            Self::Tips => "tips",
            Self::Unknown => "unknown",
        }
    }
}

/// One row of ListClusterRisks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRisk {
    #[serde(default)]
    pub risk_id: Option<String>,
    #[serde(default)]
    pub risk_name: Option<String>,
    pub cluster_id: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
    pub risk_level: RiskLevel,
    #[serde(default)]
    pub risk_category: Option<String>,
    /// The count HSS reports for the item (the SDK: "risk count"); ListClusterRiskAffectResources
    /// names the affected resources themselves.
    #[serde(default)]
    pub risk_num: Option<i64>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub last_scan_time: Option<i64>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub remediation: Option<String>,
}

/// ListClusterRisks' response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListClusterRisksResponse {
    #[serde(default)]
    pub total_num: i64,
    #[serde(default)]
    pub data_list: Vec<ClusterRisk>,
}

/// One row of ListSecurityCheckClusterReports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    #[serde(default)]
    pub report_id: Option<String>,
    pub cluster_id: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// `CCE` or `Turbo`.
    #[serde(default)]
    pub cluster_category: Option<String>,
    /// `Security` (no risk) or `Insecurity`.
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub local_image_vul_num: Option<i64>,
    #[serde(default)]
    pub risk_config_num: Option<i64>,
    #[serde(default)]
    pub privileged_container_num: Option<i64>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub scan_time: Option<i64>,
}

/// ListSecurityCheckClusterReports' response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListClusterReportsResponse {
    #[serde(default)]
    pub total_num: i64,
    #[serde(default)]
    pub data_list: Vec<ClusterReport>,
}

/// One row of ListIacFileRisks (the file is the query's `file_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IacRisk {
    #[serde(default)]
    pub risk_id: Option<String>,
    #[serde(default)]
    pub rule_id: Option<String>,
    #[serde(default)]
    pub risk_name: Option<String>,
    pub risk_level: RiskLevel,
    #[serde(default)]
    pub risk_category: Option<String>,
    #[serde(default)]
    pub risk_num: Option<i64>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub last_scan_time: Option<i64>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub remediation: Option<String>,
}

/// ListIacFileRisks' response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListIacFileRisksResponse {
    #[serde(default)]
    pub total_num: i64,
    #[serde(default)]
    pub data_list: Vec<IacRisk>,
}

/// Longest `resource_type` kept (a Kubernetes kind is at most 63 characters).
pub const KIND: usize = 63;

/// One row of ListClusterRiskAffectResources: a Kubernetes resource one cluster risk affects.
/// Every string is bounded where it is decoded (see the module's Guarantees).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffectedResource {
    #[serde(default, deserialize_with = "name")]
    pub resource_name: Option<String>,
    #[serde(default, deserialize_with = "name")]
    pub resource_id: Option<String>,
    /// The resource's kind as HSS names it (`Deployment`, `ClusterRoleBinding`, ...).
    #[serde(default, deserialize_with = "kind")]
    pub resource_type: Option<String>,
    /// Absent or empty for cluster-scoped resources.
    #[serde(default, deserialize_with = "name")]
    pub namespace: Option<String>,
    /// The rule the resource was found to break.
    #[serde(default, deserialize_with = "message")]
    pub hit_rule: Option<String>,
    /// Where in the resource the rule hit (field paths), at most [`MAX_HIT_PATHS`].
    #[serde(default, deserialize_with = "hit_paths")]
    pub hit_path_list: Vec<String>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub first_scan_time: Option<i64>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub last_scan_time: Option<i64>,
}

/// ListClusterRiskAffectResources' response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListClusterRiskAffectResourcesResponse {
    #[serde(default)]
    pub total_num: i64,
    #[serde(default)]
    pub data_list: Vec<AffectedResource>,
}

fn bounded_de<'de, D: Deserializer<'de>>(d: D, max: usize) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|s| bounded(&s, max)))
}

fn name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    bounded_de(d, text::NAME)
}

fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    bounded_de(d, KIND)
}

fn message<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    bounded_de(d, text::MESSAGE)
}

/// `null` reads as no paths; past [`MAX_HIT_PATHS`] entries are decoded (to stay valid JSON)
/// but not kept.
fn hit_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let paths = Option::<Vec<String>>::deserialize(d)?.unwrap_or_default();
    Ok(paths
        .iter()
        .take(MAX_HIT_PATHS)
        .map(|p| bounded(p, text::MESSAGE))
        .collect())
}

/// Why `risk_id` cannot be one segment of a request path, if it cannot.
fn risk_id_problem(risk_id: &str) -> Option<String> {
    if risk_id.is_empty() || risk_id.len() > MAX_ID_LEN {
        Some(format!("risk_id must be 1 to {MAX_ID_LEN} bytes"))
    } else if risk_id == "." || risk_id == ".." {
        Some("risk_id must not be . or ..".into())
    } else if risk_id
        .chars()
        .any(|c| matches!(c, '/' | '?' | '#' | '\\') || c.is_control())
    {
        Some("risk_id must not contain /, ?, #, \\ or control characters".into())
    } else {
        None
    }
}

impl HssClient {
    /// One page of ListClusterRiskAffectResources: the Kubernetes resources the cluster risk
    /// `risk_id` (a [`ClusterRisk::risk_id`]) affects, in `cluster_id` or in every cluster.
    /// Spends one call of its own budget bucket, never ListClusterRisks'.
    pub async fn list_cluster_risk_affect_resources(
        &self,
        risk_id: &str,
        cluster_id: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<ListClusterRiskAffectResourcesResponse, Error> {
        let api = Api::ListClusterRiskAffectResources;
        if let Some(reason) = risk_id_problem(risk_id) {
            return Err(Error::InvalidRequest { api, reason });
        }
        let path = format!(
            "/v5/{}/container/cluster/risk/{risk_id}/affected-resources",
            self.config().project_id
        );
        let mut query = page_query(offset, limit);
        if let Some(id) = cluster_id {
            query.push(("cluster_id".into(), id.into()));
        }
        self.get_json(api, &path, query).await
    }

    /// One page of ListIacFileRisks: the risks of one IaC file.
    pub async fn list_iac_file_risks(
        &self,
        file_id: &str,
        offset: u32,
        limit: u32,
    ) -> Result<ListIacFileRisksResponse, Error> {
        let api = Api::ListIacFileRisks;
        let path = format!("/v5/{}/container/iac/file/risks", self.config().project_id);
        let mut query = page_query(offset, limit);
        query.push(("file_id".into(), file_id.into()));
        self.get_json(api, &path, query).await
    }

    /// One page of ListClusterRisks: the risky items of `risk_type`, of one cluster or of all.
    pub async fn list_cluster_risks(
        &self,
        risk_type: RiskType,
        cluster_id: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<ListClusterRisksResponse, Error> {
        let api = Api::ListClusterRisks;
        let path = format!("/v5/{}/container/cluster/risks", self.config().project_id);
        let mut query = page_query(offset, limit);
        query.push(("risk_type".into(), risk_type.as_str().into()));
        query.push(("risk_status".into(), "risky".into()));
        if let Some(id) = cluster_id {
            query.push(("cluster_id".into(), id.into()));
        }
        self.get_json(api, &path, query).await
    }

    /// One page of ListSecurityCheckClusterReports, of one cluster or of all.
    pub async fn list_cluster_reports(
        &self,
        cluster_id: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<ListClusterReportsResponse, Error> {
        let api = Api::ListClusterReports;
        let path = format!(
            "/v5/{}/security-check/containers/cluster-reports",
            self.config().project_id
        );
        let mut query = page_query(offset, limit);
        if let Some(id) = cluster_id {
            query.push(("cluster_id".into(), id.into()));
        }
        self.get_json(api, &path, query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_as_the_sdk_documents_them_and_new_levels_do_not_break() {
        let body = r#"{"total_num": 2, "data_list": [
            {"risk_id": "r1", "risk_name": "anonymous access", "cluster_id": "c1",
             "cluster_name": "prod", "risk_level": "high", "risk_category": "access_control",
             "risk_num": 3, "last_scan_time": 1700000000000, "description": "d",
             "remediation": "r", "extra": 1},
            {"cluster_id": "c2", "risk_level": "critical"}]}"#;
        let resp: ListClusterRisksResponse = serde_json::from_str(body).expect("decodes");
        assert_eq!(resp.total_num, 2);
        assert_eq!(resp.data_list[0].risk_level, RiskLevel::High);
        assert_eq!(resp.data_list[0].risk_num, Some(3));
        assert_eq!(resp.data_list[1].risk_level, RiskLevel::Unknown);
        let reports: ListClusterReportsResponse = serde_json::from_str(
            r#"{"total_num": 1, "data_list": [{"cluster_id": "c1", "severity": "Insecurity",
                "local_image_vul_num": 7, "risk_config_num": 2, "privileged_container_num": 1,
                "scan_time": 1700000000000}]}"#,
        )
        .expect("decodes");
        assert_eq!(reports.data_list[0].local_image_vul_num, Some(7));
    }

    #[test]
    fn levels_order_most_severe_first() {
        assert!(RiskLevel::High < RiskLevel::Medium);
        assert!(RiskLevel::Tips < RiskLevel::Unknown);
    }

    #[test]
    fn affected_resources_decode_with_the_sdk_wire_names() {
        // The shape of `ListClusterRiskAffectResourcesResponse` and its `...InfoDataList`.
        let body = r#"{"total_num": 3, "data_list": [
            {"resource_name": "web", "resource_id": "3f1c9a", "resource_type": "Deployment",
             "namespace": "shop", "hit_rule": "containers must not be privileged",
             "hit_path_list": ["spec.template.spec.containers[0].securityContext.privileged"],
             "first_scan_time": 1700000000000, "last_scan_time": 1700000100000, "new": true},
            {"resource_name": "admin-binding", "resource_type": "ClusterRoleBinding",
             "namespace": null, "hit_path_list": null},
            {}]}"#;
        let resp: ListClusterRiskAffectResourcesResponse =
            serde_json::from_str(body).expect("decodes");
        assert_eq!(resp.total_num, 3);
        let web = &resp.data_list[0];
        assert_eq!(web.resource_name.as_deref(), Some("web"));
        assert_eq!(web.resource_type.as_deref(), Some("Deployment"));
        assert_eq!(web.namespace.as_deref(), Some("shop"));
        assert_eq!(
            web.hit_path_list,
            ["spec.template.spec.containers[0].securityContext.privileged"]
        );
        assert_eq!(web.first_scan_time, Some(1_700_000_000_000));
        assert_eq!(web.last_scan_time, Some(1_700_000_100_000));
        assert_eq!(resp.data_list[1].namespace, None, "cluster-scoped");
        assert!(
            resp.data_list[1].hit_path_list.is_empty(),
            "null is no paths"
        );
        assert_eq!(
            resp.data_list[2].resource_name, None,
            "every field is optional"
        );
        let again: ListClusterRiskAffectResourcesResponse =
            serde_json::from_str(&serde_json::to_string(&resp).expect("encodes")).expect("decodes");
        assert_eq!(
            again, resp,
            "what the simulator serves decodes to the same rows"
        );
    }

    #[test]
    fn hostile_affected_resources_are_cut_where_they_are_decoded() {
        let huge = "x".repeat(1_000_000);
        let row = serde_json::json!({
            "resource_name": format!("{huge}\nlevel=ERROR forged"),
            "resource_id": huge,
            "resource_type": huge,
            "namespace": "ns\u{1b}[31m",
            "hit_rule": huge,
            "hit_path_list": vec!["p".repeat(10_000); 1_000],
        });
        let body = serde_json::json!({"total_num": i64::MAX, "data_list": [row]}).to_string();
        let resp: ListClusterRiskAffectResourcesResponse =
            serde_json::from_str(&body).expect("decodes");
        assert_eq!(resp.total_num, i64::MAX);
        let r = &resp.data_list[0];
        let len = |s: &Option<String>| s.as_deref().map_or(0, |s| s.chars().count());
        assert_eq!(len(&r.resource_name), text::NAME);
        assert!(
            !r.resource_name
                .as_deref()
                .unwrap_or_default()
                .contains('\n')
        );
        assert_eq!(len(&r.resource_id), text::NAME);
        assert_eq!(len(&r.resource_type), KIND);
        assert_eq!(
            r.namespace.as_deref(),
            Some("ns [31m"),
            "no escape sequence"
        );
        assert_eq!(len(&r.hit_rule), text::MESSAGE);
        assert_eq!(r.hit_path_list.len(), MAX_HIT_PATHS);
        assert!(
            r.hit_path_list
                .iter()
                .all(|p| p.chars().count() == text::MESSAGE)
        );
        let kept = serde_json::to_string(&resp).expect("encodes").len();
        assert!(kept < 20_000, "a hostile row keeps {kept} bytes");
        // Wrong types are a decode error, not a silent default.
        for bad in [
            r#"{"data_list": [{"hit_path_list": "spec"}]}"#,
            r#"{"data_list": [{"resource_name": 7}]}"#,
            r#"{"data_list": [{"first_scan_time": "yesterday"}]}"#,
        ] {
            assert!(
                serde_json::from_str::<ListClusterRiskAffectResourcesResponse>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_risk_id_must_be_one_path_segment() {
        // (risk_id, accepted, reason)
        let long = "a".repeat(MAX_ID_LEN + 1);
        let cases = [
            ("risk_assessment-0a1b2c3d-0", true, "the simulator's shape"),
            ("CCE-1.2_3:x", true, "dots, colons and underscores are fine"),
            ("", false, "empty"),
            (".", false, "the current directory"),
            ("..", false, "the parent directory"),
            ("../../tasks", false, "a path"),
            ("r?offset=0", false, "a query"),
            ("r#x", false, "a fragment"),
            ("r\\x", false, "a backslash some servers read as /"),
            ("r\nx", false, "a control character"),
            (long.as_str(), false, "too long"),
        ];
        for (id, accepted, why) in cases {
            assert_eq!(risk_id_problem(id).is_none(), accepted, "{why}: {id:?}");
        }
    }
}
