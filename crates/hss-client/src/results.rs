//! The HSS v5 result APIs a finished scan is read with: ListClusterRisks (risk assessment and
//! benchmark findings), ListSecurityCheckClusterReports (per-cluster counts: local image
//! vulnerabilities, risky configurations, privileged containers) and ListIacFileRisks (the
//! risks of one IaC file; its rows do not name the file, so it is read per file).
//!
//! Field names and types follow the official SDK's v5 models (`list_cluster_risks_*`,
//! `security_check_cluster_reports.py`). Responses ignore unknown fields; levels HSS may add
//! later decode as [`RiskLevel::Unknown`].
//!
//! Assumptions: both APIs page with `offset`/`limit` (10..=200) and report `total_num`; each is
//! limited to 5 calls per minute per user like the task APIs, so each has its own budget
//! bucket. Caveat: HSS keeps the latest findings per cluster, not per task: a read right after
//! a scan shows that scan unless another scan of the same cluster finished in between.

use serde::{Deserialize, Serialize};

use super::{Api, Error, client::HssClient, wire::page_query};

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
    /// How many resources the risk affects.
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

impl HssClient {
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
}
