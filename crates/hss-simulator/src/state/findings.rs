//! What the simulated scans find: deterministic findings per (seed, cluster, scan type) and per
//! (seed, IaC file), visible from the moment a successful scan of it finishes, served by
//! ListClusterRisks, ListSecurityCheckClusterReports and ListIacFileRisks as HSS serves them
//! (latest findings per cluster or file, not per task; paged; filtered).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{Store, len_i64};
use hss_client::{
    model::{ScanStatus, ScanType},
    results::{
        ClusterReport, ClusterRisk, IacRisk, ListClusterReportsResponse, ListClusterRisksResponse,
        ListIacFileRisksResponse, RiskLevel, RiskType,
    },
};

/// Risk names and categories the simulated findings draw from (HSS's categories).
const CATALOGUE: [(&str, &str); 8] = [
    (
        "Anonymous access to the API server is enabled",
        "control_plane",
    ),
    ("Workloads run as privileged containers", "workload"),
    (
        "Service account tokens are mounted automatically",
        "access_control",
    ),
    ("Secrets are exposed in environment variables", "secrets"),
    ("No network policy isolates the namespace", "network"),
    ("Host path mounts allow a node escape", "node_escape"),
    (
        "RBAC grants cluster-admin to a default account",
        "access_control",
    ),
    ("Containers run without resource limits", "workload"),
];

fn digest(seed: u64, cluster_id: &str, what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hss-sim-findings");
    h.update(seed.to_be_bytes());
    h.update(cluster_id.as_bytes());
    h.update([0]);
    h.update(what.as_bytes());
    h.finalize().into()
}

/// The risk items a successful `risk_type` scan of `cluster_id` finds under `seed`: 0 to 6
/// items, each with a level, category and affected-resource count fixed by the hash.
#[cfg(test)]
pub fn risks(seed: u64, cluster_id: &str, risk_type: RiskType, scan_ms: i64) -> Vec<ClusterRisk> {
    risks_n(seed, cluster_id, risk_type, scan_ms, None)
}

/// [`risks`], with exactly `count` items when given (every item past the sixth hashed on its
/// own), for tests of many findings.
pub fn risks_n(
    seed: u64,
    cluster_id: &str,
    risk_type: RiskType,
    scan_ms: i64,
    count: Option<usize>,
) -> Vec<ClusterRisk> {
    let d = digest(seed, cluster_id, risk_type.as_str());
    let n = count.unwrap_or(usize::from(d[0] % 7));
    (0..n)
        .map(|i| {
            let b = if i < 9 {
                d[1 + i * 3..4 + i * 3].to_vec()
            } else {
                digest(seed, cluster_id, &format!("{}#{i}", risk_type.as_str()))[..3].to_vec()
            };
            let (name, category) = CATALOGUE[usize::from(b[0]) % CATALOGUE.len()];
            ClusterRisk {
                risk_id: Some(format!(
                    "{}-{}-{i}",
                    risk_type.as_str(),
                    hex::encode(&d[28..32])
                )),
                risk_name: Some(format!("{name} ({})", i + 1)),
                cluster_id: cluster_id.to_string(),
                cluster_name: Some(cluster_id.to_string()),
                risk_level: RiskLevel::ALL[usize::from(b[1]) % RiskLevel::ALL.len()],
                risk_category: Some(category.to_string()),
                risk_num: Some(i64::from(b[2] % 9) + 1),
                last_scan_time: Some(scan_ms),
                description: Some(format!("simulated finding of {}", risk_type.as_str())),
                remediation: Some("see the HSS console".to_string()),
            }
        })
        .collect()
}

/// The risks a successful IaC scan of `file_id` finds under `seed`: 0 to 6.
pub fn iac_risks(seed: u64, file_id: &str, scan_ms: i64) -> Vec<IacRisk> {
    let d = digest(seed, file_id, "iac");
    let n = usize::from(d[0] % 7);
    (0..n)
        .map(|i| {
            let b = &d[1 + i * 3..4 + i * 3];
            let (name, category) = CATALOGUE[usize::from(b[0]) % CATALOGUE.len()];
            IacRisk {
                risk_id: Some(format!("iac-{}-{i}", hex::encode(&d[28..32]))),
                rule_id: Some(format!("HSS-IAC-{:03}", b[0])),
                risk_name: Some(format!("{name} ({})", i + 1)),
                risk_level: RiskLevel::ALL[usize::from(b[1]) % RiskLevel::ALL.len()],
                risk_category: Some(category.to_string()),
                risk_num: Some(i64::from(b[2] % 9) + 1),
                last_scan_time: Some(scan_ms),
                description: Some("simulated finding of an IaC file".to_string()),
                remediation: Some("see the HSS console".to_string()),
            }
        })
        .collect()
}

/// The security-check report a successful `cluster_vul` scan of `cluster_id` leaves.
pub fn report(seed: u64, cluster_id: &str, scan_ms: i64) -> ClusterReport {
    let d = digest(seed, cluster_id, "cluster_vul");
    let vulns = i64::from(d[0] % 40);
    let configs = i64::from(d[1] % 12);
    let privileged = i64::from(d[2] % 4);
    ClusterReport {
        report_id: Some(format!("report-{}", hex::encode(&d[28..32]))),
        cluster_id: cluster_id.to_string(),
        cluster_name: Some(cluster_id.to_string()),
        cluster_category: Some("CCE".to_string()),
        severity: Some(
            if vulns + configs + privileged > 0 {
                "Insecurity"
            } else {
                "Security"
            }
            .to_string(),
        ),
        local_image_vul_num: Some(vulns),
        risk_config_num: Some(configs),
        privileged_container_num: Some(privileged),
        scan_time: Some(scan_ms),
    }
}

fn risk_scan_type(risk_type: RiskType) -> ScanType {
    match risk_type {
        RiskType::RiskAssessment => ScanType::RiskAssessment,
        RiskType::Benchmark => ScanType::Benchmark,
    }
}

impl Store {
    /// When each cluster of `project` last finished a successful scan of `scan_type` (epoch
    /// milliseconds), by cluster id.
    fn last_scans(
        &self,
        project: &str,
        scan_type: ScanType,
        now: Instant,
    ) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for task in self.tasks.iter().filter(|t| t.project_id == project) {
            for cluster in &task.clusters {
                for (st, run) in &cluster.details {
                    if *st == scan_type && run.status(now) == ScanStatus::Success {
                        let ms = self.clock.epoch_ms(run.end);
                        let e = out.entry(cluster.def.id.clone()).or_insert(ms);
                        *e = (*e).max(ms);
                    }
                }
            }
        }
        out
    }

    /// Every risky item of `risk_type` in `project` as HSS holds it now, by cluster then id.
    pub(crate) fn all_cluster_risks(
        &self,
        project: &str,
        risk_type: RiskType,
        now: Instant,
    ) -> Vec<ClusterRisk> {
        self.last_scans(project, risk_scan_type(risk_type), now)
            .into_iter()
            .flat_map(|(cluster, ms)| {
                risks_n(self.seed, &cluster, risk_type, ms, self.risks_per_scan)
            })
            .collect()
    }

    /// ListClusterRisks: one page (`offset`, `limit`), filtered by cluster and level.
    pub(crate) fn cluster_risks(
        &self,
        project: &str,
        risk_type: RiskType,
        (cluster_id, level): (Option<&str>, Option<RiskLevel>),
        (offset, limit): (usize, usize),
        now: Instant,
    ) -> ListClusterRisksResponse {
        let matching: Vec<ClusterRisk> = self
            .all_cluster_risks(project, risk_type, now)
            .into_iter()
            .filter(|r| cluster_id.is_none_or(|c| r.cluster_id == c))
            .filter(|r| level.is_none_or(|l| r.risk_level == l))
            .collect();
        ListClusterRisksResponse {
            total_num: len_i64(matching.len()),
            data_list: matching.into_iter().skip(offset).take(limit).collect(),
        }
    }

    /// When `file_id` of `project` last finished a successful IaC scan (epoch ms).
    fn last_file_scan(&self, project: &str, file_id: &str, now: Instant) -> Option<i64> {
        self.tasks
            .iter()
            .filter(|t| t.project_id == project)
            .flat_map(|t| t.files.iter())
            .filter(|f| f.id == file_id && f.run.status(now) == ScanStatus::Success)
            .map(|f| self.clock.epoch_ms(f.run.end))
            .max()
    }

    /// Every risk HSS holds for IaC file `file_id` of `project` now.
    pub(crate) fn all_iac_file_risks(
        &self,
        project: &str,
        file_id: &str,
        now: Instant,
    ) -> Vec<IacRisk> {
        self.last_file_scan(project, file_id, now)
            .map(|ms| iac_risks(self.seed, file_id, ms))
            .unwrap_or_default()
    }

    /// ListIacFileRisks: one page of one file's risks, filtered by level.
    pub(crate) fn iac_file_risks(
        &self,
        project: &str,
        file_id: &str,
        level: Option<RiskLevel>,
        (offset, limit): (usize, usize),
        now: Instant,
    ) -> ListIacFileRisksResponse {
        let matching: Vec<IacRisk> = self
            .all_iac_file_risks(project, file_id, now)
            .into_iter()
            .filter(|r| level.is_none_or(|l| r.risk_level == l))
            .collect();
        ListIacFileRisksResponse {
            total_num: len_i64(matching.len()),
            data_list: matching.into_iter().skip(offset).take(limit).collect(),
        }
    }

    /// Every security-check report of `project` as HSS holds it now, by cluster id.
    pub(crate) fn all_cluster_reports(&self, project: &str, now: Instant) -> Vec<ClusterReport> {
        self.last_scans(project, ScanType::ClusterVul, now)
            .into_iter()
            .map(|(cluster, ms)| report(self.seed, &cluster, ms))
            .collect()
    }

    /// ListSecurityCheckClusterReports: one page, filtered by cluster.
    pub(crate) fn cluster_reports(
        &self,
        project: &str,
        cluster_id: Option<&str>,
        offset: usize,
        limit: usize,
        now: Instant,
    ) -> ListClusterReportsResponse {
        let matching: Vec<ClusterReport> = self
            .all_cluster_reports(project, now)
            .into_iter()
            .filter(|r| cluster_id.is_none_or(|c| r.cluster_id == c))
            .collect();
        ListClusterReportsResponse {
            total_num: len_i64(matching.len()),
            data_list: matching.into_iter().skip(offset).take(limit).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_deterministic_per_seed_and_differ_between_clusters() {
        let a = risks(7, "c1", RiskType::RiskAssessment, 1);
        assert_eq!(a, risks(7, "c1", RiskType::RiskAssessment, 1));
        let spread: Vec<usize> = (0..20)
            .map(|i| risks(7, &format!("c{i}"), RiskType::Benchmark, 1).len())
            .collect();
        assert!(spread.contains(&0), "{spread:?}");
        assert!(spread.iter().any(|n| *n >= 3), "{spread:?}");
        assert_ne!(report(7, "c1", 1), report(8, "c1", 1));
    }
}
