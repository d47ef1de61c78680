//! `submit --fail-on LEVEL`: the gate a CI pipeline needs, and the findings as text.
//!
//! The gate counts risk items (risk_assessment, benchmark) at LEVEL or more severe. The
//! security-check counts of cluster_vul have no level and do not trip it; they are printed.

use std::io::Write;

use crate::crd::findings::Findings;

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
    if let Some(n) = f.clusters_omitted {
        let _ = writeln!(out, "  ... and {n} more cluster(s), counted in the totals");
    }
    for r in &f.top_risks {
        let _ = writeln!(
            out,
            "  risk\t{}\t{}\t{}\t{} resource(s)\t{}",
            r.level,
            r.cluster_id.as_deref().unwrap_or("-"),
            r.category.as_deref().unwrap_or("-"),
            r.count,
            r.name
        );
    }
}
