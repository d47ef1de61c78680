//! From the rows HSS returned to report objects. Pure.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::Kind;
use super::affected::{self, Affected, SCAN_UID};
use crate::findings::Read;
use hss_client::{
    results::{ClusterRisk, IacRisk, RiskLevel, RiskType},
    text::{NAME, bounded, bounded_opt},
};

/// Most JSON bytes of one report: results past it are left out (the summary still counts
/// them), so a report stays far under etcd's 1.5 MiB and the API server's 3 MiB whatever the
/// strings hold (each is cut in characters, and a character may take 4 bytes).
pub const MAX_BYTES: usize = 256 * 1024;
/// Room kept for everything beside the results (metadata, summary).
const OVERHEAD: usize = 8 * 1024;
/// The reports' `source`, as consumers filter on it.
pub const SOURCE: &str = "Huawei Cloud HSS";
const CATEGORY: usize = 64;
const MESSAGE: usize = 256;
/// Remediation texts run to paragraphs; the console has the rest.
const REMEDIATION: usize = 256;

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Cluster,
    File,
}

/// One finding, its strings already cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `risk_assessment`, `benchmark` or `iac_scan`.
    pub scan_type: &'static str,
    pub id: String,
    pub name: String,
    pub level: RiskLevel,
    pub category: Option<String>,
    pub risk_num: i64,
    /// Epoch milliseconds.
    pub last_scan_ms: Option<i64>,
    pub description: Option<String>,
    pub remediation: Option<String>,
    /// The IaC rule (iac_scan).
    pub rule_id: Option<String>,
    /// The resources it affects, when looked up ([`affected`]).
    pub affected: Option<Affected>,
}

/// The findings of one cluster or file: full counts, the worst rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub subject: Subject,
    /// Cluster or file id.
    pub id: String,
    pub cluster_name: Option<String>,
    /// Findings at high, medium, low, tips: all of them, kept rows or not.
    pub counts: [u64; 4],
    /// Worst first, at most the `max` they were kept with.
    pub rows: Vec<Row>,
}

impl Group {
    fn new(subject: Subject, id: &str) -> Self {
        Self {
            subject,
            id: bounded(id, NAME),
            cluster_name: None,
            counts: [0; 4],
            rows: Vec::new(),
        }
    }

    fn add(&mut self, row: Row) {
        let Some(i) = RiskLevel::ALL.iter().position(|l| *l == row.level) else {
            // Not a documented level: not counted, as in `status.findings`.
            return;
        };
        self.counts[i] += 1;
        self.rows.push(row);
    }

    fn keep_worst(&mut self, max: usize) {
        self.rows.sort_by(|a, b| {
            a.level
                .cmp(&b.level)
                .then(b.risk_num.cmp(&a.risk_num))
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.id.cmp(&b.id))
        });
        self.rows.truncate(max);
    }

    /// Failed (high, medium) and warned (low, tips) findings.
    pub fn fail_warn(&self) -> (u64, u64) {
        (
            self.counts[0] + self.counts[1],
            self.counts[2] + self.counts[3],
        )
    }
}

/// What the reports of one findings read are built from: bounded by construction (the worst
/// `max` rows per cluster or file, and the counts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    pub groups: Vec<Group>,
    /// Affected resources were looked up ([`affected`]): the namespaced reports of the scan
    /// are replaced (and those of namespaces no longer affected deleted).
    pub affected: bool,
}

fn cluster_row(rt: RiskType, r: &ClusterRisk) -> Row {
    Row {
        scan_type: rt.as_str(),
        id: bounded(r.risk_id.as_deref().unwrap_or(""), NAME),
        name: bounded(r.risk_name.as_deref().unwrap_or("(unnamed)"), NAME),
        level: r.risk_level,
        category: bounded_opt(r.risk_category.as_deref(), CATEGORY),
        risk_num: r.risk_num.unwrap_or(1).max(0),
        last_scan_ms: r.last_scan_time,
        description: bounded_opt(r.description.as_deref(), MESSAGE),
        remediation: bounded_opt(r.remediation.as_deref(), REMEDIATION),
        rule_id: None,
        affected: None,
    }
}

fn file_row(r: &IacRisk) -> Row {
    Row {
        scan_type: "iac_scan",
        id: bounded(r.risk_id.as_deref().unwrap_or(""), NAME),
        name: bounded(r.risk_name.as_deref().unwrap_or("(unnamed)"), NAME),
        level: r.risk_level,
        category: bounded_opt(r.risk_category.as_deref(), CATEGORY),
        risk_num: r.risk_num.unwrap_or(1).max(0),
        last_scan_ms: r.last_scan_time,
        description: bounded_opt(r.description.as_deref(), MESSAGE),
        remediation: bounded_opt(r.remediation.as_deref(), REMEDIATION),
        rule_id: bounded_opt(r.rule_id.as_deref(), NAME),
        affected: None,
    }
}

impl Rows {
    /// A cluster_scan's rows: one group per scanned cluster with a risk scan of `risk_types`
    /// that did not fail (`failed`: (cluster, scan type) pairs), the same rows
    /// `status.findings` counts; the worst `max` rows of each kept.
    pub fn clusters(
        read: &Read,
        scanned: &BTreeSet<String>,
        failed: &BTreeSet<(String, String)>,
        risk_types: &[RiskType],
        max: usize,
    ) -> Self {
        let ok = |c: &str, rt: RiskType| {
            scanned.contains(c) && !failed.contains(&(c.to_string(), rt.as_str().to_string()))
        };
        let mut groups: Vec<Group> = scanned
            .iter()
            .filter(|c| risk_types.iter().any(|rt| ok(c, *rt)))
            .map(|c| Group::new(Subject::Cluster, c))
            .collect();
        for (rt, r) in &read.risks {
            if !ok(&r.cluster_id, *rt) {
                continue;
            }
            // `scanned` is sorted, and so are the groups made from it.
            let key = bounded(&r.cluster_id, NAME);
            let Ok(i) = groups.binary_search_by(|g| g.id.as_str().cmp(&key)) else {
                continue;
            };
            let g = &mut groups[i];
            if g.cluster_name.is_none() {
                g.cluster_name = bounded_opt(r.cluster_name.as_deref(), NAME);
            }
            g.add(cluster_row(*rt, r));
            // Bounded while reading, not only at the end.
            if g.rows.len() > 2 * max.max(1) {
                g.keep_worst(max);
            }
        }
        for g in &mut groups {
            g.keep_worst(max);
        }
        Self {
            groups,
            affected: false,
        }
    }

    /// The group of cluster `id`.
    pub fn cluster_mut(&mut self, id: &str) -> Option<&mut Group> {
        let key = bounded(id, NAME);
        self.groups
            .iter_mut()
            .find(|g| g.subject == Subject::Cluster && g.id == key)
    }

    /// An iac_scan's rows: one group per file of `files`, the worst `max` rows of each kept.
    pub fn files(read: &Read, files: &BTreeSet<String>, max: usize) -> Self {
        let mut groups: Vec<Group> = files.iter().map(|f| Group::new(Subject::File, f)).collect();
        for (file, r) in &read.files {
            let key = bounded(file, NAME);
            let Ok(i) = groups.binary_search_by(|g| g.id.as_str().cmp(&key)) else {
                continue;
            };
            let g = &mut groups[i];
            g.add(file_row(r));
            if g.rows.len() > 2 * max.max(1) {
                g.keep_worst(max);
            }
        }
        for g in &mut groups {
            g.keep_worst(max);
        }
        Self {
            groups,
            affected: false,
        }
    }
}

/// The ClusterScanTask the reports belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// OpenReports' severity of an HSS level (`tips` is `info`).
pub fn severity_of(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::High => "high",
        RiskLevel::Medium => "medium",
        RiskLevel::Low => "low",
        RiskLevel::Tips | RiskLevel::Unknown => "info",
    }
}

/// The result of a finding at `level`: `fail` for high and medium, `warn` below, as the
/// Trivy adapter maps vulnerabilities.
pub fn result_of(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::High | RiskLevel::Medium => "fail",
        _ => "warn",
    }
}

/// `hss-<task>-<cluster or file id>` as a valid object name: lowercased, other characters
/// as `-`, with a hash of the original appended when anything was changed or cut (two ids
/// that differ only in case get two reports).
pub fn report_name(task: &str, id: &str) -> String {
    let raw = format!("hss-{task}-{id}");
    let mut name: String = raw
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let changed = name != raw || name.len() > NAME;
    if changed {
        let hash: String = Sha256::digest(raw.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        name.truncate(NAME - hash.len() - 1);
        name = format!("{}-{hash}", name.trim_end_matches(['-', '.']));
    }
    name
}

fn time_of(ms: i64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_millisecond(ms).ok()
}

/// The result of `row`, naming the affected resources of namespace `ns` only.
fn result(group: &Group, row: &Row, ns: &str) -> Value {
    let mut props = Map::new();
    let mut prop = |k: &str, v: String| {
        props.insert(k.to_string(), Value::String(v));
    };
    match group.subject {
        Subject::Cluster => {
            prop("clusterId", group.id.clone());
            if let Some(n) = &group.cluster_name {
                prop("clusterName", n.clone());
            }
        }
        Subject::File => prop("fileId", group.id.clone()),
    }
    prop("scanType", row.scan_type.to_string());
    prop("riskNum", row.risk_num.to_string());
    if let Some(t) = row.last_scan_ms.and_then(time_of) {
        prop("lastScanTime", t.to_string());
    }
    if let Some(r) = &row.remediation {
        prop("remediation", r.clone());
    }
    if let Some(r) = &row.rule_id {
        prop("ruleId", r.clone());
    }
    let mut out = json!({
        "source": SOURCE,
        "policy": row.name,
        "rule": row.id,
        "severity": severity_of(row.level),
        "result": result_of(row.level),
        "properties": props,
    });
    if let Some(c) = &row.category {
        out["category"] = json!(c);
    }
    if let Some(m) = &row.description {
        out["message"] = json!(m);
    }
    if let Some(t) = row.last_scan_ms.and_then(time_of) {
        out["timestamp"] = json!({"seconds": t.as_second(), "nanos": 0});
    }
    if let Some(a) = &row.affected {
        let named = a.named_in(ns);
        out["properties"]["affectedResources"] = json!(a.total.to_string());
        out["properties"]["affectedNamed"] = json!(named.len().to_string());
        if !named.is_empty() {
            out["resources"] = Value::Array(named.into_iter().map(affected::reference).collect());
        }
    }
    out
}

/// The results of `group` naming resources of `ns`, at most `max_results` and within the
/// bytes left.
fn results(group: &Group, ns: &str, max_results: usize) -> Vec<Value> {
    let mut results = Vec::new();
    let mut bytes = 0usize;
    for row in group.rows.iter().take(max_results) {
        let r = result(group, row, ns);
        let size = serde_json::to_vec(&r).map_or(usize::MAX, |v| v.len() + 1);
        if bytes.saturating_add(size) > MAX_BYTES - OVERHEAD {
            break;
        }
        bytes += size;
        results.push(r);
    }
    results
}

/// The report of `group` as `kind`, owned by `owner`: at most `max_results` results, worst
/// first, within [`MAX_BYTES`]; the summary counts every finding of the group.
pub fn build(kind: Kind, owner: &Owner, group: &Group, max_results: usize) -> Value {
    let results = results(group, &owner.namespace, max_results);
    let (fail, warn) = group.fail_warn();
    let [high, medium, low, tips] = group.counts;
    let subject = match group.subject {
        Subject::Cluster => "cluster",
        Subject::File => "file",
    };
    let mut report = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind(),
        "metadata": {
            "name": report_name(&owner.name, &group.id),
            "namespace": owner.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "hss-operator",
                "hss.scanops.dev/subject": subject,
            },
            "annotations": {
                "hss.scanops.dev/findings":
                    format!("high={high},medium={medium},low={low},tips={tips}"),
                "hss.scanops.dev/results": format!("{} of {}", results.len(), fail + warn),
            },
            "ownerReferences": [{
                "apiVersion": "hss.scanops.dev/v1alpha1",
                "kind": "ClusterScanTask",
                "name": owner.name,
                "uid": owner.uid,
                "controller": true,
            }],
        },
        "summary": {"pass": 0, "fail": fail, "warn": warn, "error": 0, "skip": 0},
        "results": results,
    });
    if kind == Kind::OpenReports {
        report["source"] = json!(SOURCE);
        report["configuration"] = json!({"limits": {"maxResults": max_results}});
    }
    report
}

/// The report of `group` in namespace `ns`: its risks that affect resources of `ns`, naming
/// only those; labelled with the scan's uid, no ownerReference (it cannot cross namespaces).
/// None when no risk affects `ns`.
pub fn build_namespaced(
    kind: Kind,
    owner: &Owner,
    group: &Group,
    ns: &str,
    max_results: usize,
) -> Option<Value> {
    let mut here = Group::new(group.subject, &group.id);
    here.cluster_name = group.cluster_name.clone();
    for row in &group.rows {
        if row
            .affected
            .as_ref()
            .is_some_and(|a| !a.named_in(ns).is_empty())
        {
            here.add(row.clone());
        }
    }
    if here.rows.is_empty() {
        return None;
    }
    let results = results(&here, ns, max_results);
    let (fail, warn) = here.fail_warn();
    let mut report = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind(),
        "metadata": {
            "name": report_name(&format!("{}-{}", owner.namespace, owner.name), &group.id),
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/managed-by": "hss-operator",
                "hss.scanops.dev/subject": "namespace",
                SCAN_UID: owner.uid,
            },
            "annotations": {
                "hss.scanops.dev/scan": format!("{}/{}", owner.namespace, owner.name),
                "hss.scanops.dev/results": format!("{} of {}", results.len(), fail + warn),
            },
        },
        "summary": {"pass": 0, "fail": fail, "warn": warn, "error": 0, "skip": 0},
        "results": results,
    });
    if kind == Kind::OpenReports {
        report["source"] = json!(SOURCE);
        report["configuration"] = json!({"limits": {"maxResults": max_results}});
    }
    Some(report)
}

/// The namespaced reports of `rows`: one per namespace its looked-up risks affect, in the
/// namespaces `may_write` allows, but none in the owner's (its own report names them).
pub fn namespaced(
    kind: Kind,
    owner: &Owner,
    rows: &Rows,
    max_results: usize,
    may_write: impl Fn(&str) -> bool,
) -> Vec<Value> {
    let mut out = Vec::new();
    for group in &rows.groups {
        for ns in affected::namespaces(&group.rows) {
            if ns == owner.namespace || !may_write(&ns) {
                continue;
            }
            out.extend(build_namespaced(kind, owner, group, &ns, max_results));
        }
    }
    out
}
