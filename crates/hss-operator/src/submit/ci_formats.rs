//! `submit --wait -o junit` and `-o sarif`: the report of a scan in the formats CI systems
//! read. GitLab, Jenkins and Azure DevOps show JUnit XML as test results ([`junit`]); code
//! scanning reads SARIF 2.1.0 ([`sarif`]).
//!
//! Guarantees:
//! - JUnit: one test case per cluster and scan type of the manifest (one per file for an
//!   iac_scan), a `<failure>` per risk at or above `--fail-on` (every level without it), an
//!   `<error>` for a scan that failed, for findings that could not be read, for a wait that gave
//!   up and for a task that was not created. The document validates against the JUnit schema
//!   Jenkins publishes (`junit-10.xsd`), which GitLab reads as well.
//! - SARIF: one rule per risk, one result per risk row at every level (`error` for high,
//!   `warning` for medium, `note` for low and tips), the cluster or file as the result's logical
//!   location, and for an IaC file whose manifest names its path (`iacScan.filePaths`) a
//!   physical location at that path. The document validates against the SARIF 2.1.0 schema.
//! - The rows are those the summary counts ([`crate::findings::gate::Found`]): a JUnit
//!   document has as many failures as the gate counts at `--fail-on`.
//! - The exit code does not depend on the format: both formats only describe what the text and
//!   json outputs describe.
//!
//! Assumptions: text from HSS arrives bounded and without control characters
//! ([`crate::findings::gate::Risk`]); the few characters XML 1.0 forbids beyond those are
//! replaced here.
//!
//! Caveats: HSS names no line for an IaC risk, so a physical location points at the file's
//! first line. Code scanning (GitHub) keeps only results with a physical location, so a cluster
//! scan's results show in SARIF viewers, not there. The security-check counts of cluster_vul
//! have no level and no rule: JUnit prints them in the test case's output, SARIF in the run's
//! properties.
//!
//! Errors: none of their own. Writing to standard output is not checked, as for the text and
//! json outputs: the exit code still tells the outcome.

mod junit;
mod sarif;

use std::{collections::BTreeMap, io::Write};

use super::{Error, OutputFormat, Report, ResultRow};
use crate::{
    crd::{ClusterScanTaskSpec, findings::SecurityCheck},
    findings::gate::{FailOn, Risk},
};
use hss_client::model::{ScanStatus, TaskStatus, TaskType, wire_name};

/// What a CI document describes.
pub(super) enum Outcome<'a> {
    /// A task created and followed (to the end, or until the wait gave up).
    Followed {
        report: &'a Report,
        spec: &'a ClusterScanTaskSpec,
    },
    /// No report: the task was not created, could not be identified or could not be followed.
    Failed(&'a Error),
}

/// Whether `format` is one of the CI formats.
pub(super) fn is_ci(format: OutputFormat) -> bool {
    matches!(format, OutputFormat::Junit | OutputFormat::Sarif)
}

/// Writes `outcome` as `format` (a CI format; nothing for text and json).
pub(super) fn write(
    format: OutputFormat,
    out: &mut impl Write,
    outcome: &Outcome<'_>,
    fail_on: Option<FailOn>,
) {
    let written = match format {
        OutputFormat::Junit => junit::write(out, outcome, fail_on),
        OutputFormat::Sarif => sarif::write(out, outcome, fail_on),
        OutputFormat::Text | OutputFormat::Json => Ok(()),
    };
    if let Err(e) = written {
        tracing::warn!(error = %e, "failed to write the report");
    }
    let _ = out.flush();
}

/// How one test case ended.
#[derive(Debug)]
pub(super) enum State<'a> {
    /// The scan failed in this task: HSS's reason.
    ScanFailed(String),
    /// The scan succeeded but its findings were not read: why (an error category).
    Unread(&'static str),
    /// The scan's risks, worst first, and (cluster_vul) its security-check counts.
    Read {
        risks: Vec<&'a Risk>,
        check: Option<&'a SecurityCheck>,
    },
}

/// One cluster and scan type, or one IaC file.
#[derive(Debug)]
pub(super) struct Case<'a> {
    /// The cluster id or file id.
    pub id: &'a str,
    /// How a person knows it: `name (id)`, or `path (id)` for a file with a path.
    pub label: String,
    /// The scan type's wire name; `iac_scan` for a file.
    pub scan_type: String,
    pub state: State<'a>,
}

/// Whether the report is of a task that finished (and so has results and findings).
pub(super) fn finished(report: &Report) -> bool {
    report.task_status == Some(TaskStatus::Finished)
}

/// The manifest's path for each IaC file.
pub(super) fn paths(spec: &ClusterScanTaskSpec) -> BTreeMap<&str, &str> {
    spec.iac_scan
        .iter()
        .flat_map(|i| i.file_paths.iter())
        .map(|(id, path)| (id.as_str(), path.as_str()))
        .collect()
}

fn label(row: &ResultRow, path: Option<&str>) -> String {
    match (path, row.name.as_deref()) {
        (Some(p), _) => format!("{p} ({})", row.id),
        (None, Some(n)) if n != row.id => format!("{n} ({})", row.id),
        _ => row.id.clone(),
    }
}

/// Worst first: more severe, more affected resources, then by name.
fn worst_first(a: &Risk, b: &Risk) -> std::cmp::Ordering {
    a.level
        .cmp(&b.level)
        .then(b.count.cmp(&a.count))
        .then(a.name.cmp(&b.name))
}

/// The test cases of a finished report, in the order of its results and the manifest's scan
/// types. Pure.
pub(super) fn cases<'a>(report: &'a Report, spec: &ClusterScanTaskSpec) -> Vec<Case<'a>> {
    let mut by_case: BTreeMap<(&str, &str), Vec<&Risk>> = BTreeMap::new();
    for r in &report.risks {
        by_case
            .entry((r.resource.as_str(), r.scan_type))
            .or_default()
            .push(r);
    }
    for risks in by_case.values_mut() {
        risks.sort_by(|a, b| worst_first(a, b));
    }
    let checks: BTreeMap<&str, &SecurityCheck> = report
        .checks
        .iter()
        .map(|(id, c)| (id.as_str(), c))
        .collect();
    let unread = || {
        report
            .findings_error
            .or(report.findings.is_none().then_some("not_read"))
    };
    let paths = paths(spec);
    let mut out = Vec::new();
    if report.task_type == TaskType::IacScan {
        for row in &report.results {
            let state = if row.status != ScanStatus::Success {
                State::ScanFailed(reason(&row.failures, &row.status))
            } else if let Some(why) = unread() {
                State::Unread(why)
            } else {
                State::Read {
                    risks: by_case
                        .remove(&(row.id.as_str(), "iac"))
                        .unwrap_or_default(),
                    check: None,
                }
            };
            out.push(Case {
                id: &row.id,
                label: label(row, paths.get(row.id.as_str()).copied()),
                scan_type: TaskType::IacScan.as_str().to_string(),
                state,
            });
        }
        return out;
    }
    let scan_types: Vec<String> = spec
        .cluster_scan
        .iter()
        .flat_map(|c| c.scan_types.iter().map(|s| s.as_str().to_string()))
        .collect();
    for row in &report.results {
        for scan_type in &scan_types {
            let failed = report
                .failed_scans
                .contains(&(row.id.clone(), scan_type.clone()));
            let state = if failed {
                let prefix = format!("{scan_type}: ");
                let why = row
                    .failures
                    .iter()
                    .find_map(|f| f.strip_prefix(&prefix))
                    .unwrap_or_default();
                State::ScanFailed(if why.is_empty() {
                    "the scan failed".to_string()
                } else {
                    why.to_string()
                })
            } else if let Some(why) = unread() {
                State::Unread(why)
            } else {
                State::Read {
                    risks: by_case
                        .remove(&(row.id.as_str(), scan_type.as_str()))
                        .unwrap_or_default(),
                    check: (scan_type == "cluster_vul")
                        .then(|| checks.get(row.id.as_str()).copied())
                        .flatten(),
                }
            };
            out.push(Case {
                id: &row.id,
                label: label(row, None),
                scan_type: scan_type.clone(),
                state,
            });
        }
    }
    out
}

fn reason(failures: &[String], status: &ScanStatus) -> String {
    if failures.is_empty() {
        format!("the scan ended {}", wire_name(status))
    } else {
        failures.join("; ")
    }
}

/// `text` without the characters XML 1.0 cannot carry, even escaped (control characters
/// other than tab, newline and carriage return; U+FFFE and U+FFFF), each replaced by U+FFFD.
pub(super) fn xml_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    if text.chars().any(bad) {
        text.chars()
            .map(|c| if bad(c) { '\u{FFFD}' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests;
