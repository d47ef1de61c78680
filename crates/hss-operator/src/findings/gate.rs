//! `submit --fail-on LEVEL`: the gate a CI pipeline needs, and the findings as text.
//!
//! The gate counts risk items (risk_assessment, benchmark, IaC files) at LEVEL or more severe. The
//! security-check counts of cluster_vul have no level and do not trip it; they are printed.
//!
//! Besides the bounded summary, [`read`] keeps every risk row it counted ([`Risk`]), for the CI
//! formats (`-o junit`, `-o sarif`), which list each risk: the rows are kept by the same rules
//! as the summary's (the task's own clusters or files, none of a failed scan), so the two
//! always agree on the counts.

use std::collections::BTreeSet;
use std::io::Write;

use crate::crd::{
    ClusterScanTaskSpec,
    findings::{Findings, SecurityCheck},
};
use hss_client::{
    client::HssClient,
    model::RangeType,
    results::{ClusterRisk, IacRisk, RiskLevel},
    text::{MESSAGE, NAME, bounded, bounded_opt},
};

/// One risk row a finished scan's findings counted, its text bounded like the summary's.
#[derive(Debug, Clone, PartialEq)]
pub struct Risk {
    /// The cluster id (cluster_scan) or the file id (iac_scan).
    pub resource: String,
    /// risk_assessment or benchmark; `iac` for a file's risks.
    pub scan_type: &'static str,
    pub level: RiskLevel,
    /// HSS's id of the risk item.
    pub risk_id: Option<String>,
    /// HSS's rule of an IaC risk.
    pub rule_id: Option<String>,
    pub name: String,
    pub category: Option<String>,
    /// Resources affected.
    pub count: i64,
    pub description: Option<String>,
    pub remediation: Option<String>,
}

impl Risk {
    fn cluster(scan_type: &'static str, r: &ClusterRisk) -> Self {
        Self {
            resource: bounded(&r.cluster_id, NAME),
            scan_type,
            level: r.risk_level,
            risk_id: bounded_opt(r.risk_id.as_deref(), NAME),
            rule_id: None,
            name: bounded(r.risk_name.as_deref().unwrap_or("(unnamed)"), NAME),
            category: bounded_opt(r.risk_category.as_deref(), NAME),
            count: r.risk_num.unwrap_or(1).max(0),
            description: bounded_opt(r.description.as_deref(), MESSAGE),
            remediation: bounded_opt(r.remediation.as_deref(), MESSAGE),
        }
    }

    fn file(file: &str, r: &IacRisk) -> Self {
        Self {
            resource: bounded(file, NAME),
            scan_type: "iac",
            level: r.risk_level,
            risk_id: bounded_opt(r.risk_id.as_deref(), NAME),
            rule_id: bounded_opt(r.rule_id.as_deref(), NAME),
            name: bounded(r.risk_name.as_deref().unwrap_or("(unnamed)"), NAME),
            category: bounded_opt(r.risk_category.as_deref(), NAME),
            count: r.risk_num.unwrap_or(1).max(0),
            description: bounded_opt(r.description.as_deref(), MESSAGE),
            remediation: bounded_opt(r.remediation.as_deref(), MESSAGE),
        }
    }

    /// Whether this risk fails a gate at `fail_on` (`None`: every level fails). A level HSS
    /// may add later is counted by neither the summary nor the gate, so it never fails.
    pub fn fails(&self, fail_on: Option<FailOn>) -> bool {
        self.level != RiskLevel::Unknown && fail_on.is_none_or(|l| self.level <= l.level())
    }
}

/// What [`read`] found: the summary, and the rows behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub findings: Findings,
    /// Every risk row the summary counted, in HSS's order.
    pub risks: Vec<Risk>,
    /// Each scanned cluster's security-check counts (cluster_vul), by cluster id.
    pub checks: Vec<(String, SecurityCheck)>,
}

/// The rows of `read` that [`super::summarize`] counts for `clusters`, without the pairs of
/// `failed_scans`. Pure.
pub fn cluster_rows(
    read: &super::Read,
    clusters: &BTreeSet<String>,
    failed_scans: &BTreeSet<(String, String)>,
) -> (Vec<Risk>, Vec<(String, SecurityCheck)>) {
    let kept = |cluster: &str, scan_type: &str| {
        clusters.contains(cluster)
            && !failed_scans.contains(&(cluster.to_string(), scan_type.to_string()))
    };
    let risks = read
        .risks
        .iter()
        .filter(|(rt, r)| kept(&r.cluster_id, rt.as_str()))
        .map(|(rt, r)| Risk::cluster(rt.as_str(), r))
        .collect();
    // One report per cluster, the last listed, as the summary keeps it.
    let checks: std::collections::BTreeMap<String, SecurityCheck> = read
        .reports
        .iter()
        .filter(|r| kept(&r.cluster_id, "cluster_vul"))
        .map(|r| {
            (
                bounded(&r.cluster_id, NAME),
                SecurityCheck {
                    image_vulnerabilities: r.local_image_vul_num.unwrap_or(0).max(0),
                    risky_configs: r.risk_config_num.unwrap_or(0).max(0),
                    privileged_containers: r.privileged_container_num.unwrap_or(0).max(0),
                    scanned_at: None,
                },
            )
        })
        .collect();
    (risks, checks.into_iter().collect())
}

/// The rows of `read` that [`super::summarize_files`] counts for `files`, without those of
/// `failed_files`. Pure.
pub fn file_rows(
    read: &super::Read,
    files: &BTreeSet<String>,
    failed_files: &BTreeSet<String>,
) -> Vec<Risk> {
    read.files
        .iter()
        .filter(|(f, _)| files.contains(f) && !failed_files.contains(f))
        .map(|(f, r)| Risk::file(f, r))
        .collect()
}

/// The findings of a finished scan of `spec`, read without shared pages: `scanned` are the
/// resources the task reported (all of them: `submit` pages through the results), `failed_scans`
/// its failed (cluster, scan type) pairs and `failed_files` its failed files. Only the findings
/// of the task's own resources are read ([`super::own_clusters`], [`super::own_files`]).
/// `None` for a spec with nothing to read.
pub async fn read(
    client: &HssClient,
    spec: &ClusterScanTaskSpec,
    scanned: &BTreeSet<String>,
    failed_scans: &BTreeSet<(String, String)>,
    failed_files: &BTreeSet<String>,
) -> Option<Result<Found, super::Error>> {
    let now = jiff::Timestamp::now();
    if let Some(scan) = spec.cluster_scan.as_ref() {
        let requested: Option<BTreeSet<String>> = match scan.range_type {
            RangeType::SpecificCluster => {
                Some(scan.cluster_ids.iter().flatten().cloned().collect())
            }
            RangeType::AllCluster => None,
        };
        let clusters = super::own_clusters(requested.as_ref(), scanned.iter().map(String::as_str));
        let read = super::read(client, &scan.scan_types, &clusters, None).await;
        return Some(read.map(|r| {
            let (risks, checks) = cluster_rows(&r, &clusters, failed_scans);
            Found {
                findings: super::summarize(&r, &clusters, failed_scans, now).findings,
                risks,
                checks,
            }
        }));
    }
    let iac = spec.iac_scan.as_ref()?;
    let requested: BTreeSet<String> = iac.file_ids.iter().cloned().collect();
    let ids: BTreeSet<String> = requested.intersection(scanned).cloned().collect();
    let wanted = super::own_files(&requested, scanned.iter().map(String::as_str), failed_files);
    let read = super::read_files(client, &wanted, None).await;
    Some(read.map(|r| Found {
        findings: super::summarize_files(&r, &ids, failed_files, now).findings,
        risks: file_rows(&r, &ids, failed_files),
        checks: Vec::new(),
    }))
}

/// The least severe level that fails the pipeline.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    High,
    Medium,
    Low,
    Tips,
}

impl FailOn {
    /// The risk level this gate starts at.
    pub fn level(self) -> RiskLevel {
        match self {
            Self::High => RiskLevel::High,
            Self::Medium => RiskLevel::Medium,
            Self::Low => RiskLevel::Low,
            Self::Tips => RiskLevel::Tips,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
            Self::Tips => "tips",
        }
    }
}

/// Risk items at `level` or above. Pure.
pub fn tripped(findings: &Findings, level: FailOn) -> u32 {
    findings.total.at_or_above(level.as_str())
}

/// The findings as lines a person reads in a CI log.
pub fn print(out: &mut impl Write, f: &Findings) {
    let _ = writeln!(out, "findings: {}", f.describe());
    for c in &f.clusters {
        for s in &c.scans {
            let n = &s.counts;
            let _ = writeln!(
                out,
                "  {}\t{}\thigh={} medium={} low={} tips={}",
                c.cluster_id, s.scan_type, n.high, n.medium, n.low, n.tips
            );
        }
        if let Some(sc) = &c.security_check {
            let _ = writeln!(
                out,
                "  {}\tcluster_vul\timage_vulnerabilities={} risky_configs={} privileged_containers={}",
                c.cluster_id, sc.image_vulnerabilities, sc.risky_configs, sc.privileged_containers
            );
        }
    }
    for file in &f.files {
        let n = &file.counts;
        let _ = writeln!(
            out,
            "  {}\tiac\thigh={} medium={} low={} tips={}",
            file.file_id, n.high, n.medium, n.low, n.tips
        );
    }
    if let Some(n) = f.clusters_omitted.or(f.files_omitted) {
        let _ = writeln!(out, "  ... and {n} more, counted in the totals");
    }
    for r in &f.top_risks {
        let _ = writeln!(
            out,
            "  risk\t{}\t{}\t{}\t{} resource(s)\t{}",
            r.level,
            r.cluster_id
                .as_deref()
                .or(r.file_id.as_deref())
                .unwrap_or("-"),
            r.category.as_deref().unwrap_or("-"),
            r.count,
            r.name
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{crd::findings::LevelCounts, findings::Read};
    use hss_client::results::{ClusterReport, RiskType};

    fn risk(cluster: &str, i: usize) -> ClusterRisk {
        ClusterRisk {
            risk_id: Some(format!("{cluster}-{i}")),
            risk_name: Some(format!("risk {i}")),
            cluster_id: cluster.to_string(),
            cluster_name: None,
            risk_level: [
                RiskLevel::High,
                RiskLevel::Medium,
                RiskLevel::Low,
                RiskLevel::Tips,
                RiskLevel::Unknown,
            ][i % 5],
            risk_category: None,
            risk_num: Some(1),
            last_scan_time: None,
            description: Some("line one\nforged: line two".into()),
            remediation: None,
        }
    }

    fn iac(i: usize) -> IacRisk {
        let r = risk("-", i);
        IacRisk {
            risk_id: r.risk_id,
            rule_id: Some(format!("R{i}")),
            risk_name: r.risk_name,
            risk_level: r.risk_level,
            risk_category: None,
            risk_num: Some(2),
            last_scan_time: None,
            description: None,
            remediation: None,
        }
    }

    fn levels<'a>(rows: impl IntoIterator<Item = &'a Risk>) -> LevelCounts {
        let mut c = LevelCounts::default();
        for r in rows {
            match r.level {
                RiskLevel::High => c.high += 1,
                RiskLevel::Medium => c.medium += 1,
                RiskLevel::Low => c.low += 1,
                RiskLevel::Tips => c.tips += 1,
                RiskLevel::Unknown => {}
            }
        }
        c
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_rows_kept_for_the_ci_formats_are_the_rows_the_summary_counts() {
        let mut read = Read::default();
        for cluster in ["c1", "c2", "foreign"] {
            for rt in RiskType::ALL {
                read.risks.extend((0..7).map(|i| (rt, risk(cluster, i))));
            }
            let report = |vulns| ClusterReport {
                report_id: None,
                cluster_id: cluster.into(),
                cluster_name: None,
                cluster_category: None,
                severity: None,
                local_image_vul_num: Some(vulns),
                risk_config_num: None,
                privileged_container_num: None,
                scan_time: None,
            };
            // Two reports of one cluster: the last one counts.
            read.reports.extend([report(1), report(5)]);
        }
        let clusters = set(&["c1", "c2"]);
        let failed: BTreeSet<(String, String)> = [("c2", "benchmark"), ("c1", "cluster_vul")]
            .iter()
            .map(|(c, s)| (c.to_string(), s.to_string()))
            .collect();
        let now = jiff::Timestamp::UNIX_EPOCH;

        let (risks, checks) = cluster_rows(&read, &clusters, &failed);

        let summary = super::super::summarize(&read, &clusters, &failed, now);
        assert_eq!(levels(&risks), summary.findings.total);
        assert_eq!(
            risks.len(),
            3 * 7,
            "c1's two scan types and c2's risk_assessment"
        );
        assert!(!risks.iter().any(|r| r.resource == "foreign"));
        assert!(
            !risks
                .iter()
                .any(|r| r.resource == "c2" && r.scan_type == "benchmark"),
            "a failed scan's rows are an older scan's"
        );
        assert_eq!(
            checks
                .iter()
                .map(|(c, s)| (c.as_str(), s.image_vulnerabilities))
                .collect::<Vec<_>>(),
            [("c2", 5)]
        );
        assert!(
            risks
                .iter()
                .all(|r| r.description.as_deref() == Some("line one forged: line two")),
            "text is bounded as the summary's"
        );

        let mut files = Read::default();
        for file in ["f1", "f2", "foreign"] {
            files
                .files
                .extend((0..6).map(|i| (file.to_string(), iac(i))));
        }
        let (ids, failed) = (set(&["f1", "f2"]), set(&["f2"]));
        let rows = file_rows(&files, &ids, &failed);
        let summary = super::super::summarize_files(&files, &ids, &failed, now);
        assert_eq!(levels(&rows), summary.findings.total);
        assert_eq!(rows.len(), 6);
        assert!(
            rows.iter()
                .all(|r| r.resource == "f1" && r.scan_type == "iac")
        );
    }

    #[test]
    fn a_risk_fails_the_gate_at_its_level_and_every_level_above() {
        // (level, gate, fails, reason)
        let cases = [
            (RiskLevel::High, Some(FailOn::High), true, "at the gate"),
            (
                RiskLevel::Medium,
                Some(FailOn::High),
                false,
                "below the gate",
            ),
            (RiskLevel::High, Some(FailOn::Tips), true, "above the gate"),
            (RiskLevel::Tips, Some(FailOn::Tips), true, "the lowest gate"),
            (RiskLevel::Tips, None, true, "no gate: every level fails"),
            (
                RiskLevel::Unknown,
                None,
                false,
                "a level HSS may add is never counted",
            ),
            (RiskLevel::Unknown, Some(FailOn::Tips), false, "nor gated"),
        ];
        for (level, gate, fails, reason) in cases {
            let mut r = Risk::file("f", &iac(0));
            r.level = level;
            assert_eq!(r.fails(gate), fails, "{reason}");
        }
    }
}
