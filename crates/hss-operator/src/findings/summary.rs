//! From the rows HSS returned to the bounded `status.findings`. Pure.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Read;
use crate::crd::findings::{
    ClusterFindings, FileFindings, Findings, LevelCounts, MAX_CLUSTERS, MAX_TOP_RISKS,
    MAX_TOP_RISKS_OVERALL, RiskSummary, ScanFindings, SecurityCheck,
};
use hss_client::{
    results::{ClusterRisk, IacRisk, RiskLevel, RiskType},
    text::{NAME, bounded, bounded_opt},
};

/// Category strings are HSS's short enum names.
const CATEGORY: usize = 64;

/// The bounded summary, and every cluster's findings (for metrics, which are not capped at
/// [`MAX_CLUSTERS`]), worst first.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub findings: Findings,
    pub clusters: Vec<ClusterFindings>,
    /// Every IaC file's findings, worst first (iac_scan).
    pub files: Vec<FileFindings>,
}

fn time_ms(ms: i64) -> Option<Time> {
    Timestamp::from_millisecond(ms).ok().map(Time)
}

/// How many of `levels` are at each level (unknown ones are not counted). Pure.
fn count_levels(levels: impl IntoIterator<Item = RiskLevel>) -> LevelCounts {
    let mut c = LevelCounts::default();
    for level in levels {
        match level {
            RiskLevel::High => c.high = c.high.saturating_add(1),
            RiskLevel::Medium => c.medium = c.medium.saturating_add(1),
            RiskLevel::Low => c.low = c.low.saturating_add(1),
            RiskLevel::Tips => c.tips = c.tips.saturating_add(1),
            RiskLevel::Unknown => {}
        }
    }
    c
}

fn risk_summary(r: &ClusterRisk, with_cluster: bool) -> RiskSummary {
    RiskSummary {
        name: bounded(r.risk_name.as_deref().unwrap_or("(unnamed)"), NAME),
        level: r.risk_level.as_str().to_string(),
        category: bounded_opt(r.risk_category.as_deref(), CATEGORY),
        count: r.risk_num.unwrap_or(1).max(0),
        cluster_id: with_cluster.then(|| bounded(&r.cluster_id, NAME)),
        file_id: None,
    }
}

/// Worst first: more severe level, then more affected resources, then name.
fn worst_first(a: &ClusterRisk, b: &ClusterRisk) -> std::cmp::Ordering {
    a.risk_level
        .cmp(&b.risk_level)
        .then(b.risk_num.unwrap_or(0).cmp(&a.risk_num.unwrap_or(0)))
        .then(a.risk_name.cmp(&b.risk_name))
}

fn severity_key(c: &ClusterFindings) -> (std::cmp::Reverse<[u32; 4]>, std::cmp::Reverse<i64>) {
    let n = c.counts();
    (
        std::cmp::Reverse([n.high, n.medium, n.low, n.tips]),
        std::cmp::Reverse(c.security_check.as_ref().map_or(0, SecurityCheck::total)),
    )
}

/// Summarises `read`. `scanned` are the clusters the task scanned as far as known (they count
/// in `clustersRead` even without findings); rows of any other cluster are dropped, so the
/// summary (status, Event, metrics) names only the task's own clusters whatever the rows came
/// from (a shared page, an unfiltered listing). `failed` are (cluster, scan type) pairs whose
/// scan failed in this task: HSS's rows for them are older scans' and are dropped.
pub fn summarize(
    read: &Read,
    scanned: &BTreeSet<String>,
    failed: &BTreeSet<(String, String)>,
    now: Timestamp,
) -> Summary {
    let is_failed = |cluster: &str, scan_type: &str| {
        !scanned.contains(cluster) || failed.contains(&(cluster.to_string(), scan_type.to_string()))
    };
    // cluster -> risk type -> rows
    let mut by_cluster: BTreeMap<&str, BTreeMap<RiskType, Vec<&ClusterRisk>>> = BTreeMap::new();
    for (rt, r) in &read.risks {
        if is_failed(&r.cluster_id, rt.as_str()) {
            continue;
        }
        by_cluster
            .entry(r.cluster_id.as_str())
            .or_default()
            .entry(*rt)
            .or_default()
            .push(r);
    }
    let mut checks: BTreeMap<&str, SecurityCheck> = BTreeMap::new();
    for r in &read.reports {
        if is_failed(&r.cluster_id, "cluster_vul") {
            continue;
        }
        checks.insert(
            r.cluster_id.as_str(),
            SecurityCheck {
                image_vulnerabilities: r.local_image_vul_num.unwrap_or(0).max(0),
                risky_configs: r.risk_config_num.unwrap_or(0).max(0),
                privileged_containers: r.privileged_container_num.unwrap_or(0).max(0),
                scanned_at: r.scan_time.and_then(time_ms),
            },
        );
    }
    let ids: BTreeSet<&str> = by_cluster.keys().chain(checks.keys()).copied().collect();
    let mut clusters: Vec<ClusterFindings> = ids
        .iter()
        .map(|id| {
            let scans = by_cluster
                .get(id)
                .map(|types| {
                    types
                        .iter()
                        .map(|(rt, rows)| {
                            let counts = count_levels(rows.iter().map(|r| r.risk_level));
                            let mut sorted = rows.clone();
                            sorted.sort_by(|a, b| worst_first(a, b));
                            ScanFindings {
                                scan_type: rt.as_str().to_string(),
                                counts,
                                scanned_at: rows
                                    .iter()
                                    .filter_map(|r| r.last_scan_time)
                                    .max()
                                    .and_then(time_ms),
                                top_risks: sorted
                                    .iter()
                                    .take(MAX_TOP_RISKS)
                                    .map(|r| risk_summary(r, false))
                                    .collect(),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            ClusterFindings {
                cluster_id: bounded(id, NAME),
                scans,
                security_check: checks.get(id).cloned(),
            }
        })
        .collect();
    clusters.sort_by(|a, b| {
        severity_key(a)
            .cmp(&severity_key(b))
            .then(a.cluster_id.cmp(&b.cluster_id))
    });

    let mut total = LevelCounts::default();
    for c in &clusters {
        total.add(&c.counts());
    }
    let security_check = (!read.reports.is_empty() || !checks.is_empty()).then(|| {
        checks
            .values()
            .fold(SecurityCheck::default(), |mut acc, c| {
                acc.image_vulnerabilities = acc
                    .image_vulnerabilities
                    .saturating_add(c.image_vulnerabilities);
                acc.risky_configs = acc.risky_configs.saturating_add(c.risky_configs);
                acc.privileged_containers = acc
                    .privileged_containers
                    .saturating_add(c.privileged_containers);
                acc
            })
    });
    let mut all: Vec<&ClusterRisk> = by_cluster
        .values()
        .flat_map(|types| types.values().flatten().copied())
        .collect();
    all.sort_by(|a, b| worst_first(a, b).then(a.cluster_id.cmp(&b.cluster_id)));
    let with_findings = clusters
        .iter()
        .filter(|c| {
            c.counts().total() > 0 || c.security_check.as_ref().is_some_and(|s| s.total() > 0)
        })
        .count();
    let read_count = scanned.len().max(clusters.len());
    let listed: Vec<ClusterFindings> = clusters.iter().take(MAX_CLUSTERS).cloned().collect();
    let omitted = clusters.len().saturating_sub(MAX_CLUSTERS);
    Summary {
        findings: Findings {
            read_at: Time(now),
            total,
            clusters_read: u32::try_from(read_count).unwrap_or(u32::MAX),
            clusters_with_findings: u32::try_from(with_findings).unwrap_or(u32::MAX),
            security_check,
            top_risks: all
                .iter()
                .take(MAX_TOP_RISKS_OVERALL)
                .map(|r| risk_summary(r, true))
                .collect(),
            clusters: listed,
            clusters_omitted: (omitted > 0).then(|| u32::try_from(omitted).unwrap_or(u32::MAX)),
            files_read: None,
            files_with_findings: None,
            files: Vec::new(),
            files_omitted: None,
            incomplete: read.incomplete,
        },
        clusters,
        files: Vec::new(),
    }
}

fn iac_summary(r: &IacRisk, file: Option<&str>) -> RiskSummary {
    RiskSummary {
        name: bounded(r.risk_name.as_deref().unwrap_or("(unnamed)"), NAME),
        level: r.risk_level.as_str().to_string(),
        category: bounded_opt(r.risk_category.as_deref(), CATEGORY),
        count: r.risk_num.unwrap_or(1).max(0),
        cluster_id: None,
        file_id: file.map(|f| bounded(f, NAME)),
    }
}

fn iac_worst_first(a: &IacRisk, b: &IacRisk) -> std::cmp::Ordering {
    a.risk_level
        .cmp(&b.risk_level)
        .then(b.risk_num.unwrap_or(0).cmp(&a.risk_num.unwrap_or(0)))
        .then(a.risk_name.cmp(&b.risk_name))
}

/// Summarises an iac_scan's `read`. `scanned` are the task's files (rows of any other file are
/// dropped); `failed` those whose scan failed in this task (HSS's rows for them are an older
/// scan's and are dropped).
pub fn summarize_files(
    read: &Read,
    scanned: &BTreeSet<String>,
    failed: &BTreeSet<String>,
    now: Timestamp,
) -> Summary {
    let mut by_file: BTreeMap<&str, Vec<&IacRisk>> = BTreeMap::new();
    for (file, r) in &read.files {
        if scanned.contains(file) && !failed.contains(file) {
            by_file.entry(file.as_str()).or_default().push(r);
        }
    }
    let mut files: Vec<FileFindings> = by_file
        .iter()
        .map(|(file, rows)| {
            let counts = count_levels(rows.iter().map(|r| r.risk_level));
            let mut sorted = rows.clone();
            sorted.sort_by(|a, b| iac_worst_first(a, b));
            FileFindings {
                file_id: bounded(file, NAME),
                counts,
                scanned_at: rows
                    .iter()
                    .filter_map(|r| r.last_scan_time)
                    .max()
                    .and_then(time_ms),
                top_risks: sorted
                    .iter()
                    .take(MAX_TOP_RISKS)
                    .map(|r| iac_summary(r, None))
                    .collect(),
            }
        })
        .collect();
    files.sort_by(|a, b| {
        let key = |f: &FileFindings| {
            std::cmp::Reverse([f.counts.high, f.counts.medium, f.counts.low, f.counts.tips])
        };
        key(a).cmp(&key(b)).then(a.file_id.cmp(&b.file_id))
    });
    let mut total = LevelCounts::default();
    for f in &files {
        total.add(&f.counts);
    }
    let mut all: Vec<(&str, &IacRisk)> = by_file
        .iter()
        .flat_map(|(f, rows)| rows.iter().map(move |r| (*f, *r)))
        .collect();
    all.sort_by(|a, b| iac_worst_first(a.1, b.1).then(a.0.cmp(b.0)));
    let with_findings = files.iter().filter(|f| f.counts.total() > 0).count();
    let read_count = scanned.len().saturating_sub(failed.len()).max(files.len());
    let omitted = files.len().saturating_sub(MAX_CLUSTERS);
    Summary {
        findings: Findings {
            read_at: Time(now),
            total,
            clusters_read: 0,
            clusters_with_findings: 0,
            files_read: Some(u32::try_from(read_count).unwrap_or(u32::MAX)),
            files_with_findings: Some(u32::try_from(with_findings).unwrap_or(u32::MAX)),
            security_check: None,
            top_risks: all
                .iter()
                .take(MAX_TOP_RISKS_OVERALL)
                .map(|(f, r)| iac_summary(r, Some(f)))
                .collect(),
            clusters: Vec::new(),
            clusters_omitted: None,
            files: files.iter().take(MAX_CLUSTERS).cloned().collect(),
            files_omitted: (omitted > 0).then(|| u32::try_from(omitted).unwrap_or(u32::MAX)),
            incomplete: read.incomplete,
        },
        clusters: Vec::new(),
        files,
    }
}
