//! The SARIF 2.1.0 log of a scan: one run, one rule per risk (HSS's risk id; an IaC risk's
//! rule), one result per risk row. Failed scans, unread findings and a wait that gave up are
//! the invocation's notifications (`executionSuccessful` false). See [`super`].

use std::collections::BTreeMap;
use std::io::{self, Write};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Value, json};

use super::{Outcome, State, cases, finished, paths};
use crate::{
    findings::gate::{FailOn, Risk},
    submit::Report,
};
use hss_client::{model::TaskType, results::RiskLevel};

/// The schema the log names, as the SARIF 2.1.0 standard (errata 01) publishes it.
const SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// What a URI path segment cannot carry as is (RFC 3986 `pchar`, less `:`, which would read as
/// a scheme in a relative reference's first segment).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b':');

/// `deploy/my app.yaml` -> `deploy/my%20app.yaml`: a relative URI reference. Pure.
pub(super) fn uri(path: &str) -> String {
    path.split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// SARIF's level for an HSS level: high is an error, medium a warning, the rest notes.
pub(super) fn level(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::High => "error",
        RiskLevel::Medium => "warning",
        RiskLevel::Low | RiskLevel::Tips | RiskLevel::Unknown => "note",
    }
}

/// Code scanning's `security-severity` for an HSS level (its bands: high 7.0-8.9, medium
/// 4.0-6.9, low 0.1-3.9).
fn security_severity(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::High => "8.0",
        RiskLevel::Medium => "5.0",
        RiskLevel::Low => "2.0",
        RiskLevel::Tips | RiskLevel::Unknown => "0.0",
    }
}

/// The rule a risk row belongs to: HSS's rule of an IaC risk, else its risk id, else its scan
/// type and name.
pub(super) fn rule_id(r: &Risk) -> String {
    r.rule_id
        .clone()
        .or_else(|| r.risk_id.clone())
        .unwrap_or_else(|| format!("{}/{}", r.scan_type, r.name))
}

fn rule(id: &str, r: &Risk) -> Value {
    let mut rule = json!({
        "id": id,
        "shortDescription": {"text": r.name},
        "defaultConfiguration": {"level": level(r.level)},
        "properties": {
            "hssLevel": r.level.as_str(),
            "scanType": r.scan_type,
            "security-severity": security_severity(r.level),
            "tags": std::iter::once("security").chain(r.category.as_deref()).collect::<Vec<_>>(),
        },
    });
    if let Some(d) = &r.description {
        rule["fullDescription"] = json!({"text": d});
    }
    if let Some(m) = &r.remediation {
        rule["help"] = json!({"text": m});
    }
    if let Some(c) = &r.category {
        rule["properties"]["category"] = json!(c);
    }
    rule
}

/// Where a cluster or file is, logically (and for a file with a path, physically).
fn location(task_type: TaskType, id: &str, path: Option<&str>) -> Value {
    let kind = match task_type {
        TaskType::ClusterScan => "cluster",
        TaskType::IacScan => "iac-file",
    };
    let mut loc = json!({
        "logicalLocations": [{"name": id, "fullyQualifiedName": format!("{kind}/{id}"), "kind": "resource"}],
    });
    if let Some(p) = path {
        loc["physicalLocation"] = json!({
            "artifactLocation": {"uri": uri(p), "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": 1},
        });
    }
    loc
}

fn notification(kind: &str, text: &str, at: Option<Value>) -> Value {
    let mut n = json!({"descriptor": {"id": kind}, "level": "error", "message": {"text": text}});
    if let Some(at) = at {
        n["locations"] = json!([at]);
    }
    n
}

fn log(run: Value) -> Value {
    json!({"$schema": SCHEMA, "version": "2.1.0", "runs": [run]})
}

fn driver(rules: Vec<Value>) -> Value {
    json!({"driver": {
        "name": "hss-operator",
        "version": env!("CARGO_PKG_VERSION"),
        "rules": rules,
    }})
}

/// The log of a followed task. Pure.
pub(super) fn report_log(
    report: &Report,
    spec: &crate::crd::ClusterScanTaskSpec,
    fail_on: Option<FailOn>,
) -> Value {
    let paths = paths(spec);
    let names: BTreeMap<&str, Option<&str>> = report
        .results
        .iter()
        .map(|r| (r.id.as_str(), r.name.as_deref()))
        .collect();
    let mut notifications = Vec::new();
    if !finished(report) {
        notifications.push(notification(
            "wait_timed_out",
            &format!(
                "gave up waiting for task {}; it is still running in HSS",
                report.task_id
            ),
            None,
        ));
    } else {
        for case in cases(report, spec) {
            let at = Some(location(
                report.task_type,
                case.id,
                paths.get(case.id).copied(),
            ));
            match case.state {
                State::ScanFailed(why) => notifications.push(notification(
                    "scan_failed",
                    &format!("{} of {} failed: {why}", case.scan_type, case.label),
                    at,
                )),
                State::Unread(category) => notifications.push(notification(
                    "findings_unreadable",
                    &format!(
                        "the findings of {} of {} could not be read ({category})",
                        case.scan_type, case.label
                    ),
                    at,
                )),
                State::Read { .. } => {}
            }
        }
    }
    let mut rules: Vec<Value> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut results = Vec::new();
    for r in &report.risks {
        let id = rule_id(r);
        let i = *index.entry(id.clone()).or_insert_with(|| {
            rules.push(rule(&id, r));
            rules.len() - 1
        });
        let (what, name) = match report.task_type {
            TaskType::ClusterScan => ("cluster", names.get(r.resource.as_str()).copied().flatten()),
            TaskType::IacScan => ("file", paths.get(r.resource.as_str()).copied()),
        };
        let place = match name {
            Some(n) if n != r.resource => format!("{what} {n} ({})", r.resource),
            _ => format!("{what} {}", r.resource),
        };
        let mut properties = json!({
            "hssLevel": r.level.as_str(),
            "scanType": r.scan_type,
            "affectedResources": r.count,
        });
        for (key, value) in [
            ("riskId", &r.risk_id),
            ("ruleId", &r.rule_id),
            ("category", &r.category),
            ("remediation", &r.remediation),
        ] {
            if let Some(v) = value {
                properties[key] = json!(v);
            }
        }
        results.push(json!({
            "ruleId": id,
            "ruleIndex": i,
            "level": level(r.level),
            "message": {"text": match report.task_type {
                TaskType::ClusterScan => format!(
                    "{}: {} affected resource(s) in {place} ({})",
                    r.name, r.count, r.scan_type
                ),
                TaskType::IacScan => format!("{}: {} affected resource(s) in {place}", r.name, r.count),
            }},
            "locations": [location(report.task_type, &r.resource, paths.get(r.resource.as_str()).copied())],
            "partialFingerprints": {"hssRisk/v1": format!("{}/{}/{id}", r.resource, r.scan_type)},
            "properties": properties,
        }));
    }
    let checks: serde_json::Map<String, Value> = report
        .checks
        .iter()
        .map(|(id, c)| {
            (
                id.clone(),
                json!({
                    "imageVulnerabilities": c.image_vulnerabilities,
                    "riskyConfigurations": c.risky_configs,
                    "privilegedContainers": c.privileged_containers,
                }),
            )
        })
        .collect();
    let mut invocation = json!({"executionSuccessful": notifications.is_empty()});
    if !notifications.is_empty() {
        invocation["toolExecutionNotifications"] = json!(notifications);
    }
    let mut properties = json!({
        "taskId": report.task_id,
        "taskType": report.task_type.as_str(),
        "findingsIncomplete": report.findings.as_ref().is_some_and(|f| f.incomplete),
    });
    if let Some(level) = fail_on {
        properties["failOn"] = json!(level.as_str());
    }
    if !checks.is_empty() {
        properties["securityCheck"] = Value::Object(checks);
    }
    log(json!({
        "tool": driver(rules),
        "automationDetails": {"id": format!("hss-operator/{}/{}", report.task_type.as_str(), report.task_id)},
        "invocations": [invocation],
        "results": results,
        "properties": properties,
    }))
}

pub(super) fn write(
    out: &mut impl Write,
    outcome: &Outcome<'_>,
    fail_on: Option<FailOn>,
) -> io::Result<()> {
    let log = match outcome {
        Outcome::Followed { report, spec } => report_log(report, spec, fail_on),
        Outcome::Failed(err) => log(json!({
            "tool": driver(vec![]),
            "invocations": [{
                "executionSuccessful": false,
                "toolExecutionNotifications": [notification(err.category(), &crate::report_error(*err), None)],
            }],
            "results": [],
        })),
    };
    serde_json::to_writer_pretty(&mut *out, &log)?;
    out.write_all(b"\n")
}
