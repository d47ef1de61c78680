//! `status.findings`: what a finished scan found, summarised so that the object stays small
//! however many clusters or files were scanned.
//!
//! Guarantees: at most [`MAX_CLUSTERS`] clusters (or IaC files) are listed (worst first), each with at most
//! [`MAX_TOP_RISKS`] risks per scan type, and [`MAX_TOP_RISKS_OVERALL`] risks overall; every
//! string is bounded by `hss_client::text`. The totals always count every cluster read. At 1,000
//! clusters with findings the summary stays under 64 KiB (a unit test measures it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Clusters listed in `status.findings.clusters`; the rest are only counted.
pub const MAX_CLUSTERS: usize = 50;
/// Risks listed per cluster and scan type.
pub const MAX_TOP_RISKS: usize = 3;
/// Risks listed in `status.findings.topRisks`.
pub const MAX_TOP_RISKS_OVERALL: usize = 10;

/// Risk items by level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LevelCounts {
    pub high: u32,
    pub medium: u32,
    pub low: u32,
    pub tips: u32,
}

impl LevelCounts {
    pub fn add(&mut self, other: &LevelCounts) {
        self.high = self.high.saturating_add(other.high);
        self.medium = self.medium.saturating_add(other.medium);
        self.low = self.low.saturating_add(other.low);
        self.tips = self.tips.saturating_add(other.tips);
    }

    pub fn total(&self) -> u32 {
        self.high
            .saturating_add(self.medium)
            .saturating_add(self.low)
            .saturating_add(self.tips)
    }

    /// Counts at `level` or more severe (`level`: high, medium, low or tips).
    pub fn at_or_above(&self, level: &str) -> u32 {
        let order = [self.high, self.medium, self.low, self.tips];
        let upto = match level {
            "high" => 1,
            "medium" => 2,
            "low" => 3,
            _ => 4,
        };
        order[..upto].iter().fold(0u32, |a, b| a.saturating_add(*b))
    }

    /// The count of one level by name; 0 for an unknown name.
    pub fn get(&self, level: &str) -> u32 {
        match level {
            "high" => self.high,
            "medium" => self.medium,
            "low" => self.low,
            "tips" => self.tips,
            _ => 0,
        }
    }

    /// "2 high, 11 medium" (zero levels left out); "no risks" when all are zero.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("high", self.high),
            ("medium", self.medium),
            ("low", self.low),
            ("tips", self.tips),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(l, n)| format!("{n} {l}"))
        .collect();
        if parts.is_empty() {
            "no risks".into()
        } else {
            parts.join(", ")
        }
    }
}

/// One risk as HSS names it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskSummary {
    pub name: String,
    /// high, medium, low or tips.
    pub level: String,
    /// HSS's category, e.g. access_control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Resources affected.
    pub count: i64,
    /// The cluster (in `topRisks` of a cluster_scan only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The IaC file (in `topRisks` of an iac_scan only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
}

/// One cluster's findings of one scan type (risk_assessment or benchmark).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanFindings {
    pub scan_type: String,
    pub counts: LevelCounts,
    /// HSS's last scan of this cluster and type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<Time>,
    /// The worst risks, at most 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_risks: Vec<RiskSummary>,
}

/// A cluster's security-check counts (scan type cluster_vul).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityCheck {
    pub image_vulnerabilities: i64,
    pub risky_configs: i64,
    pub privileged_containers: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<Time>,
}

impl SecurityCheck {
    pub fn total(&self) -> i64 {
        self.image_vulnerabilities
            .saturating_add(self.risky_configs)
            .saturating_add(self.privileged_containers)
    }
}

/// One cluster's findings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFindings {
    pub cluster_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scans: Vec<ScanFindings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_check: Option<SecurityCheck>,
}

impl ClusterFindings {
    /// Risk items of every scan type.
    pub fn counts(&self) -> LevelCounts {
        let mut c = LevelCounts::default();
        for s in &self.scans {
            c.add(&s.counts);
        }
        c
    }
}

/// One IaC file's findings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileFindings {
    pub file_id: String,
    pub counts: LevelCounts,
    /// HSS's last scan of this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<Time>,
    /// The worst risks, at most 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_risks: Vec<RiskSummary>,
}

/// `status.findings`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Findings {
    /// When the operator read them from HSS.
    pub read_at: Time,
    /// Risk items of every cluster (or file) and scan type read, not only those listed.
    pub total: LevelCounts,
    /// Clusters read (cluster_scan).
    #[serde(default)]
    pub clusters_read: u32,
    /// Clusters with at least one risk item or security-check finding.
    #[serde(default)]
    pub clusters_with_findings: u32,
    /// IaC files read (iac_scan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_read: Option<u32>,
    /// IaC files with at least one risk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_with_findings: Option<u32>,
    /// Security-check totals over every cluster read (scan type cluster_vul).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_check: Option<SecurityCheck>,
    /// The worst risks over every cluster (or file), at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_risks: Vec<RiskSummary>,
    /// Per cluster, worst first, at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterFindings>,
    /// Clusters counted in the totals but not listed (beyond 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters_omitted: Option<u32>,
    /// Per IaC file, worst first, at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileFindings>,
    /// Files counted in the totals but not listed (beyond 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_omitted: Option<u32>,
    /// True when HSS held more rows than the operator reads in one go (see the README).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

impl Findings {
    /// "2 high, 11 medium risks in 2 of 3 cluster(s)" (or file(s)), and the security-check
    /// counts when read.
    pub fn describe(&self) -> String {
        let (with, read, what) = match (self.files_with_findings, self.files_read) {
            (Some(with), Some(read)) => (with, read, "file(s)"),
            _ => (
                self.clusters_with_findings,
                self.clusters_read,
                "cluster(s)",
            ),
        };
        let mut s = format!(
            "{} in {with} of {read} {what}",
            match self.total.describe().as_str() {
                "no risks" => "no risks".to_string(),
                d => format!("{d} risks"),
            },
        );
        if let Some(c) = &self.security_check {
            s.push_str(&format!(
                "; {} image vulnerabilities, {} risky configurations, {} privileged containers",
                c.image_vulnerabilities, c.risky_configs, c.privileged_containers
            ));
        }
        if self.incomplete {
            s.push_str(" (incomplete: HSS held more than the operator reads)");
        }
        s
    }
}
