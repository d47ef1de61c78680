//! The CI formats from hand-made reports: what each case and result says, hostile text, and
//! the SARIF schema (the JUnit schema is checked end to end, `tests/client/ci_formats.rs`).

use std::collections::{BTreeMap, BTreeSet};

use super::{Outcome, sarif, write};
use crate::{
    crd::{
        ClusterScanTaskSpec,
        findings::{Findings, LevelCounts, SecurityCheck},
    },
    findings::gate::{FailOn, Risk},
    submit::{Error, OutputFormat, Report, ResultRow},
};
use hss_client::{
    model::{ScanStatus, TaskStatus, TaskType},
    results::RiskLevel,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn spec(value: serde_json::Value) -> ClusterScanTaskSpec {
    serde_json::from_value(value).expect("a valid spec")
}

fn cluster_spec() -> ClusterScanTaskSpec {
    spec(
        serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
        "scanTypes": ["risk_assessment", "benchmark", "cluster_vul"],
        "rangeType": "specific_cluster", "clusterIds": ["c1", "c2", "bad"]}}),
    )
}

fn risk(resource: &str, scan_type: &'static str, level: RiskLevel, id: &str) -> Risk {
    Risk {
        resource: resource.into(),
        scan_type,
        level,
        risk_id: Some(id.into()),
        rule_id: None,
        name: format!("risk {id}"),
        category: Some("workload".into()),
        count: 2,
        description: Some("what it is".into()),
        remediation: Some("what to do".into()),
    }
}

fn row(id: &str, name: Option<&str>, status: ScanStatus, failures: &[&str]) -> ResultRow {
    ResultRow {
        id: id.into(),
        name: name.map(str::to_string),
        status,
        failures: failures.iter().map(|f| f.to_string()).collect(),
    }
}

fn findings() -> Findings {
    Findings {
        read_at: Time(jiff::Timestamp::UNIX_EPOCH),
        total: LevelCounts::default(),
        clusters_read: 0,
        clusters_with_findings: 0,
        files_read: None,
        files_with_findings: None,
        security_check: None,
        top_risks: vec![],
        clusters: vec![],
        clusters_omitted: None,
        files: vec![],
        files_omitted: None,
        incomplete: false,
    }
}

const LEVELS: [RiskLevel; 5] = [
    RiskLevel::High,
    RiskLevel::Medium,
    RiskLevel::Low,
    RiskLevel::Tips,
    RiskLevel::Unknown,
];

/// Two clusters with one risk of each level (and one HSS may add later) per risk scan type,
/// and a third whose scans failed.
fn cluster_report() -> Report {
    let mut r = Report::created("task-1".into(), TaskType::ClusterScan, "response", 1);
    r.task_status = Some(TaskStatus::Finished);
    r.results = vec![
        row("c1", Some("prod"), ScanStatus::Success, &[]),
        row("c2", None, ScanStatus::Success, &[]),
        row(
            "bad",
            None,
            ScanStatus::Failed,
            &[
                "risk_assessment: agent offline",
                "benchmark: agent offline",
                "cluster_vul: agent offline",
            ],
        ),
    ];
    r.failed_scans = ["risk_assessment", "benchmark", "cluster_vul"]
        .iter()
        .map(|s| ("bad".to_string(), s.to_string()))
        .collect();
    for cluster in ["c1", "c2"] {
        for scan_type in ["risk_assessment", "benchmark"] {
            for (i, level) in LEVELS.iter().enumerate() {
                r.risks.push(risk(
                    cluster,
                    scan_type,
                    *level,
                    &format!("{scan_type}-{i}"),
                ));
            }
        }
        r.checks.push((
            cluster.into(),
            SecurityCheck {
                image_vulnerabilities: 7,
                risky_configs: 2,
                privileged_containers: 1,
                scanned_at: None,
            },
        ));
    }
    r.findings = Some(findings());
    r
}

fn render(format: OutputFormat, outcome: &Outcome<'_>, fail_on: Option<FailOn>) -> String {
    let mut out = Vec::new();
    write(format, &mut out, outcome, fail_on);
    String::from_utf8(out).expect("utf-8")
}

fn junit(report: &Report, spec: &ClusterScanTaskSpec, fail_on: Option<FailOn>) -> String {
    render(
        OutputFormat::Junit,
        &Outcome::Followed { report, spec },
        fail_on,
    )
}

fn sarif_log(report: &Report, spec: &ClusterScanTaskSpec) -> serde_json::Value {
    let text = render(
        OutputFormat::Sarif,
        &Outcome::Followed { report, spec },
        None,
    );
    serde_json::from_str(&text).expect("SARIF is JSON")
}

fn elements<'a>(doc: &'a roxmltree::Document<'a>, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants().filter(|n| n.has_tag_name(name)).collect()
}

#[test]
fn junit_has_a_case_per_cluster_and_scan_type_and_a_failure_per_risk_at_or_above_fail_on() {
    let report = cluster_report();
    let spec = cluster_spec();
    // (gate, levels that fail, reason)
    let cases = [
        (None, 4, "every documented level fails without --fail-on"),
        (Some(FailOn::High), 1, "high only"),
        (Some(FailOn::Medium), 2, "high and medium"),
        (Some(FailOn::Low), 3, "all but tips"),
        (
            Some(FailOn::Tips),
            4,
            "tips and above: a level HSS adds later never fails",
        ),
    ];
    for (fail_on, levels, reason) in cases {
        let xml = junit(&report, &spec, fail_on);
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{reason}: {e}"));
        let testcases = elements(&doc, "testcase");
        assert_eq!(testcases.len(), 3 * 3, "{reason}: clusters x scan types");
        // 2 clusters x 2 risk scan types, `levels` risks each.
        let failures = elements(&doc, "failure");
        assert_eq!(failures.len(), 2 * 2 * levels, "{reason}");
        let root = doc.root_element();
        assert_eq!(root.attribute("tests"), Some("9"), "{reason}");
        assert_eq!(
            root.attribute("failures"),
            Some("4"),
            "{reason}: failing cases"
        );
        assert_eq!(
            root.attribute("errors"),
            Some("3"),
            "{reason}: the failed cluster"
        );
        for f in &failures {
            let level = f.attribute("type").expect("type");
            let rank = ["high", "medium", "low", "tips"]
                .iter()
                .position(|l| *l == level)
                .unwrap_or_else(|| panic!("{reason}: level {level}"));
            assert!(rank < levels, "{reason}: {level} fails");
            assert!(
                f.text()
                    .is_some_and(|t| t.contains("remediation: what to do")),
                "{reason}"
            );
        }
    }
    let xml = junit(&report, &spec, Some(FailOn::High));
    let doc = roxmltree::Document::parse(&xml).expect("parses");
    let case = |name: &str, suite: &str| {
        elements(&doc, "testcase")
            .into_iter()
            .find(|c| {
                c.attribute("name") == Some(name)
                    && c.attribute("classname") == Some(&format!("hss.cluster_scan.{suite}"))
            })
            .unwrap_or_else(|| panic!("no case {name} {suite}: {xml}"))
    };
    let out = |n: roxmltree::Node<'_, '_>| {
        n.children()
            .find(|c| c.has_tag_name("system-out"))
            .and_then(|c| c.text())
            .unwrap_or_default()
            .to_string()
    };
    let failed = case("bad", "benchmark");
    let error = failed
        .children()
        .find(|c| c.has_tag_name("error"))
        .expect("an error");
    assert_eq!(error.attribute("type"), Some("scan_failed"));
    assert_eq!(error.attribute("message"), Some("agent offline"));
    assert!(
        out(case("prod (c1)", "cluster_vul")).contains("7 image vulnerabilities"),
        "{xml}"
    );
    assert!(
        out(case("c2", "risk_assessment")).contains("medium: risk risk_assessment-1"),
        "risks below the gate are listed, not failures: {xml}"
    );
}

#[test]
fn hostile_text_from_hss_stays_text_in_the_xml() {
    let mut report = cluster_report();
    let nasty = "<script>&amp;\"quoted\" 'it' ]]> <![CDATA[x]]> \u{1}\u{FFFE}";
    report.risks[0].name = nasty.into();
    report.risks[0].description = Some(format!("</failure></testcase>{nasty}"));
    let xml = junit(&report, &cluster_spec(), None);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let failure = elements(&doc, "failure")
        .into_iter()
        .find(|f| {
            f.attribute("message")
                .is_some_and(|m| m.contains("<script>"))
        })
        .expect("the risk's failure");
    let shown = "<script>&amp;\"quoted\" 'it' ]]> <![CDATA[x]]> \u{FFFD}\u{FFFD}";
    assert_eq!(
        failure.attribute("message"),
        Some(format!("high: {shown} (2 affected resource(s))").as_str())
    );
    assert!(
        failure
            .text()
            .is_some_and(|t| t.contains(&format!("</failure></testcase>{shown}"))),
        "{xml}"
    );
    assert_eq!(
        elements(&doc, "testcase").len(),
        9,
        "no element was injected"
    );
}

#[test]
fn a_wait_that_gave_up_unread_findings_and_a_failed_submit_are_errors_not_passes() {
    let spec = cluster_spec();
    let mut running = cluster_report();
    running.task_status = Some(TaskStatus::Running);
    let mut unread = cluster_report();
    unread.findings = None;
    unread.risks.clear();
    unread.findings_error = Some("throttled");
    let invalid = Error::Invalid(vec!["bad manifest".into()]);
    // (document, test cases, errors, an error's type, reason)
    let cases = [
        (
            junit(&running, &spec, None),
            1,
            1,
            "wait_timed_out",
            "the task is still running",
        ),
        (
            junit(&unread, &spec, Some(FailOn::High)),
            9,
            9,
            "findings_unreadable",
            "a scan whose findings are unknown does not pass",
        ),
        (
            render(OutputFormat::Junit, &Outcome::Failed(&invalid), None),
            1,
            1,
            "invalid_input",
            "no task",
        ),
    ];
    for (xml, tests, errors, kind, reason) in cases {
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{reason}: {e}"));
        assert_eq!(elements(&doc, "testcase").len(), tests, "{reason}: {xml}");
        let errs = elements(&doc, "error");
        assert_eq!(errs.len(), errors, "{reason}: {xml}");
        assert!(
            errs.iter().any(|e| e.attribute("type") == Some(kind)),
            "{reason}: {xml}"
        );
        assert!(elements(&doc, "failure").is_empty(), "{reason}");
    }
}

/// The published schema's one pattern that is no ECMA-262 regular expression (a stray `]`),
/// and what it means; only `language` properties, which these logs do not use, have it.
const LANGUAGE_PATTERN: (&str, &str) = (
    "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$",
    "^[a-zA-Z]{2}(-[a-zA-Z]{2})?$",
);

fn replace_pattern(value: &mut serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => {
            let mut n = 0;
            for (key, v) in map.iter_mut() {
                if key == "pattern" && v == LANGUAGE_PATTERN.0 {
                    *v = LANGUAGE_PATTERN.1.into();
                    n += 1;
                } else {
                    n += replace_pattern(v);
                }
            }
            n
        }
        serde_json::Value::Array(items) => items.iter_mut().map(replace_pattern).sum(),
        _ => 0,
    }
}

/// The SARIF 2.1.0 schema (`tests/fixtures/README.md`), formats asserted.
fn schema() -> jsonschema::Validator {
    let mut schema: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/sarif-schema-2.1.0.json"
    ))
    .expect("the schema is JSON");
    assert_eq!(
        replace_pattern(&mut schema),
        2,
        "run.language, toolComponent.language"
    );
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, log: &serde_json::Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}\n{log:#}");
}

fn iac() -> (Report, ClusterScanTaskSpec) {
    let spec = spec(serde_json::json!({"taskType": "iac_scan", "iacScan": {
        "fileType": "k8s_yaml", "fileIds": ["f1", "f2", "bad-f"],
        "filePaths": {"f1": "deploy/my app.yaml", "bad-f": "deploy/bad.yaml"}}}));
    let mut r = Report::created("task-2".into(), TaskType::IacScan, "response", 1);
    r.task_status = Some(TaskStatus::Finished);
    r.results = vec![
        row("f1", Some("app.yaml"), ScanStatus::Success, &[]),
        row("f2", None, ScanStatus::Success, &[]),
        row("bad-f", None, ScanStatus::Failed, &["unparsable"]),
    ];
    for file in ["f1", "f2"] {
        let mut r1 = risk(file, "iac", RiskLevel::Medium, &format!("{file}-0"));
        r1.rule_id = Some("HSS-IAC-001".into());
        r.risks.push(r1);
    }
    r.findings = Some(findings());
    (r, spec)
}

#[test]
fn sarif_has_a_rule_per_risk_a_result_per_row_and_levels_by_severity() {
    let report = cluster_report();
    let log = sarif_log(&report, &cluster_spec());
    assert_valid(&schema(), &log, "cluster scan");
    let run = &log["runs"][0];
    let results = run["results"].as_array().expect("results");
    assert_eq!(
        results.len(),
        report.risks.len(),
        "every level, not only the gate's"
    );
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    // Both clusters have risks risk_assessment-0..4 and benchmark-0..4: ten rules.
    assert_eq!(rules.len(), 10);
    let mut levels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for res in results {
        let i = res["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[i]["id"], res["ruleId"], "{res}");
        levels
            .entry(res["properties"]["hssLevel"].as_str().unwrap_or("").into())
            .or_default()
            .insert(res["level"].as_str().unwrap_or("").into());
        let loc = &res["locations"][0];
        assert!(
            loc.get("physicalLocation").is_none(),
            "a cluster has no file"
        );
        assert_eq!(loc["logicalLocations"][0]["kind"], "resource");
    }
    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("high", "error"),
        ("medium", "warning"),
        ("low", "note"),
        ("tips", "note"),
        ("unknown", "note"),
    ]
    .iter()
    .map(|(h, s)| (h.to_string(), BTreeSet::from([s.to_string()])))
    .collect();
    assert_eq!(levels, expected);
    let notes = run["invocations"][0]["toolExecutionNotifications"]
        .as_array()
        .expect("the failed cluster's scans");
    assert_eq!(notes.len(), 3);
    assert_eq!(run["invocations"][0]["executionSuccessful"], false);
    assert_eq!(
        run["properties"]["securityCheck"]["c1"]["imageVulnerabilities"],
        7
    );
}

#[test]
fn iac_results_have_a_physical_location_only_where_the_manifest_names_the_path() {
    let (report, spec) = iac();
    let log = sarif_log(&report, &spec);
    assert_valid(&schema(), &log, "iac scan");
    let run = &log["runs"][0];
    assert_eq!(
        run["tool"]["driver"]["rules"].as_array().map(Vec::len),
        Some(1),
        "one rule for one IaC rule, whichever files it hit"
    );
    let results = run["results"].as_array().expect("results");
    let at = |file: &str| {
        results
            .iter()
            .find(|r| r["locations"][0]["logicalLocations"][0]["name"] == file)
            .map(|r| r["locations"][0].clone())
            .unwrap_or_else(|| panic!("no result for {file}"))
    };
    assert_eq!(
        at("f1")["physicalLocation"]["artifactLocation"]["uri"],
        "deploy/my%20app.yaml"
    );
    assert_eq!(at("f1")["physicalLocation"]["region"]["startLine"], 1);
    assert!(
        at("f2").get("physicalLocation").is_none(),
        "no path, no file"
    );
    let note = &run["invocations"][0]["toolExecutionNotifications"][0];
    assert_eq!(note["descriptor"]["id"], "scan_failed");
    assert_eq!(
        note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "deploy/bad.yaml"
    );
    let xml = junit(&report, &spec, None);
    let doc = roxmltree::Document::parse(&xml).expect("parses");
    let names: Vec<&str> = elements(&doc, "testcase")
        .iter()
        .filter_map(|c| c.attribute("name"))
        .collect();
    assert_eq!(
        names,
        ["deploy/my app.yaml (f1)", "f2", "deploy/bad.yaml (bad-f)"]
    );
}

#[test]
fn every_kind_of_sarif_log_validates_against_the_2_1_0_schema() {
    let validator = schema();
    let mut running = cluster_report();
    running.task_status = Some(TaskStatus::Running);
    let mut unread = cluster_report();
    unread.findings = None;
    unread.findings_error = Some("throttled");
    let mut empty = Report::created("task-3".into(), TaskType::ClusterScan, "lookup", 2);
    empty.task_status = Some(TaskStatus::Finished);
    empty.findings = Some(findings());
    let invalid = Error::Invalid(vec!["bad manifest".into()]);
    let spec = cluster_spec();
    for (outcome, what) in [
        (
            Outcome::Followed {
                report: &running,
                spec: &spec,
            },
            "timed out",
        ),
        (
            Outcome::Followed {
                report: &unread,
                spec: &spec,
            },
            "unread",
        ),
        (
            Outcome::Followed {
                report: &empty,
                spec: &spec,
            },
            "no clusters",
        ),
        (Outcome::Failed(&invalid), "no task"),
    ] {
        let text = render(OutputFormat::Sarif, &outcome, Some(FailOn::Medium));
        let log: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_valid(&validator, &log, what);
    }
    // The schema is no formality: a level SARIF does not have, or an unknown field, is refused.
    let mut log = sarif_log(&cluster_report(), &spec);
    log["runs"][0]["results"][0]["level"] = "critical".into();
    assert!(!validator.is_valid(&log), "an unknown level");
    let mut log = sarif_log(&cluster_report(), &spec);
    log["runs"][0]["results"][0]["severity"] = "high".into();
    assert!(!validator.is_valid(&log), "an unknown property");
}

#[test]
fn paths_become_relative_uri_references() {
    // (path, uri, reason)
    let cases = [
        ("deploy/app.yaml", "deploy/app.yaml", "plain"),
        (
            "a b/c#d?.yaml",
            "a%20b/c%23d%3F.yaml",
            "space, fragment and query marks",
        ),
        ("c:/x.yaml", "c%3A/x.yaml", "not a scheme"),
        (
            "配置/部署.yaml",
            "%E9%85%8D%E7%BD%AE/%E9%83%A8%E7%BD%B2.yaml",
            "UTF-8, percent-encoded",
        ),
    ];
    for (path, uri, reason) in cases {
        assert_eq!(sarif::uri(path), uri, "{reason}");
    }
}
