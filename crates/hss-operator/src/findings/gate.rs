//! `submit --fail-on LEVEL`: the gate a CI pipeline needs, and the findings as text.
//!
//! The gate counts risk items (risk_assessment, benchmark, IaC files) at LEVEL or more severe. The
//! security-check counts of cluster_vul have no level and do not trip it; they are printed.

use std::collections::BTreeSet;
use std::io::Write;

use crate::crd::{ClusterScanTaskSpec, findings::Findings};
use hss_client::{client::HssClient, model::RangeType};

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
) -> Option<Result<Findings, super::Error>> {
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
        return Some(read.map(|r| super::summarize(&r, &clusters, failed_scans, now).findings));
    }
    let iac = spec.iac_scan.as_ref()?;
    let requested: BTreeSet<String> = iac.file_ids.iter().cloned().collect();
    let ids: BTreeSet<String> = requested.intersection(scanned).cloned().collect();
    let wanted = super::own_files(&requested, scanned.iter().map(String::as_str), failed_files);
    let read = super::read_files(client, &wanted, None).await;
    Some(read.map(|r| super::summarize_files(&r, &ids, failed_files, now).findings))
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
