use std::collections::BTreeSet;

use hss_client::results::{ClusterRisk, IacRisk, RiskLevel, RiskType};

use super::writer::{RECHECK, condition, due, pick};
use super::*;
use crate::findings::Read;

fn risk(cluster: &str, i: usize, level: RiskLevel) -> ClusterRisk {
    ClusterRisk {
        risk_id: Some(format!("r-{i}")),
        risk_name: Some(format!("risk {i}")),
        cluster_id: cluster.to_string(),
        cluster_name: Some(format!("{cluster}-name")),
        risk_level: level,
        risk_category: Some("config".into()),
        risk_num: Some(i as i64 % 9 + 1),
        last_scan_time: Some(1_700_000_000_000),
        description: Some("d".into()),
        remediation: Some("fix it".into()),
    }
}

fn owner() -> Owner {
    Owner {
        name: "scan".into(),
        namespace: "team-a".into(),
        uid: "u-1".into(),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn many(cluster: &str, n: usize) -> Read {
    Read {
        risks: (0..n)
            .map(|i| {
                (
                    RiskType::RiskAssessment,
                    risk(cluster, i, RiskLevel::ALL[i % 4]),
                )
            })
            .collect(),
        ..Read::default()
    }
}

#[test]
fn levels_map_to_severity_and_result_as_the_trivy_adapter_does() {
    // (level, severity, result, reason)
    let cases = [
        (RiskLevel::High, "high", "fail", "a high risk fails"),
        (RiskLevel::Medium, "medium", "fail", "medium fails too"),
        (RiskLevel::Low, "low", "warn", "low only warns"),
        (
            RiskLevel::Tips,
            "info",
            "warn",
            "tips are OpenReports' info",
        ),
    ];
    for (level, severity, result, reason) in cases {
        assert_eq!(severity_of(level), severity, "{reason}");
        assert_eq!(result_of(level), result, "{reason}");
    }
}

#[test]
fn the_summary_counts_every_finding_when_results_are_cut_to_the_worst() {
    let rows = Rows::clusters(
        &many("c1", 1000),
        &set(&["c1"]),
        &BTreeSet::new(),
        &[RiskType::RiskAssessment],
        200,
    );
    assert_eq!(rows.groups.len(), 1);
    let g = &rows.groups[0];
    assert_eq!(g.counts, [250, 250, 250, 250]);
    assert_eq!(g.rows.len(), 200, "bounded while reading");
    let r = build(Kind::OpenReports, &owner(), g, 200);
    let results = r["results"].as_array().expect("results");
    assert_eq!(results.len(), 200);
    assert!(
        results.iter().all(|x| x["severity"] == "high"),
        "the worst first: 250 high ones fill 200 places"
    );
    assert_eq!(r["summary"]["fail"], 500);
    assert_eq!(r["summary"]["warn"], 500);
    assert_eq!(r["configuration"]["limits"]["maxResults"], 200);
    assert_eq!(r["source"], "Huawei Cloud HSS");
    assert_eq!(
        r["metadata"]["annotations"]["hss.scanops.dev/findings"],
        "high=250,medium=250,low=250,tips=250"
    );
    let first = &results[0];
    assert_eq!(first["properties"]["clusterId"], "c1");
    assert_eq!(first["properties"]["clusterName"], "c1-name");
    assert_eq!(first["properties"]["scanType"], "risk_assessment");
    assert_eq!(first["properties"]["lastScanTime"], "2023-11-14T22:13:20Z");
    assert_eq!(first["result"], "fail");
    assert_eq!(first["category"], "config");
    assert_eq!(first["timestamp"]["seconds"], 1_700_000_000);
}

#[test]
fn a_report_of_the_longest_strings_stays_within_its_byte_bound() {
    // 4-byte characters at every string's bound, 1,000 results asked for.
    let long = "𝕏".repeat(5000);
    let read = Read {
        risks: (0..1000)
            .map(|i| {
                let mut r = risk(&"c".repeat(300), i, RiskLevel::High);
                r.risk_name = Some(format!("{i}{long}"));
                r.risk_id = Some(format!("{i}{long}"));
                r.cluster_name = Some(long.clone());
                r.risk_category = Some(long.clone());
                r.description = Some(long.clone());
                r.remediation = Some(long.clone());
                (RiskType::Benchmark, r)
            })
            .collect(),
        ..Read::default()
    };
    let cluster = "c".repeat(300);
    let rows = Rows::clusters(
        &read,
        &set(&[&cluster]),
        &BTreeSet::new(),
        &[RiskType::Benchmark],
        1000,
    );
    let r = build(Kind::OpenReports, &owner(), &rows.groups[0], 1000);
    let size = serde_json::to_vec(&r).expect("json").len();
    let kept = r["results"].as_array().expect("results").len();
    assert!(size <= MAX_BYTES, "{size} bytes");
    assert!(kept > 10 && kept < 1000, "cut by bytes, not count: {kept}");
    assert_eq!(r["summary"]["fail"], 1000, "all counted");
    let name = r["metadata"]["name"].as_str().expect("name");
    assert!(name.len() <= 253, "{}", name.len());
}

#[test]
fn rows_of_other_clusters_and_of_failed_scans_are_not_reported() {
    let mut read = many("c1", 4);
    read.risks
        .push((RiskType::RiskAssessment, risk("other", 9, RiskLevel::High)));
    read.risks
        .push((RiskType::Benchmark, risk("c1", 10, RiskLevel::High)));
    read.risks
        .push((RiskType::Benchmark, risk("c2", 11, RiskLevel::High)));
    let failed: BTreeSet<(String, String)> = [("c1".to_string(), "benchmark".to_string())].into();
    let rows = Rows::clusters(
        &read,
        &set(&["c1", "c2", "c3"]),
        &failed,
        &[RiskType::RiskAssessment, RiskType::Benchmark],
        200,
    );
    let ids: Vec<&str> = rows.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(
        ids,
        ["c1", "c2", "c3"],
        "a scanned cluster without findings too"
    );
    assert_eq!(
        rows.groups[0].counts,
        [1, 1, 1, 1],
        "c1's failed benchmark dropped"
    );
    assert_eq!(rows.groups[1].counts, [1, 0, 0, 0]);
    assert_eq!(rows.groups[2].counts, [0, 0, 0, 0]);
}

#[test]
fn a_cluster_whose_every_risk_scan_failed_gets_no_report() {
    let failed: BTreeSet<(String, String)> =
        [("c1".to_string(), "risk_assessment".to_string())].into();
    let rows = Rows::clusters(
        &many("c1", 3),
        &set(&["c1"]),
        &failed,
        &[RiskType::RiskAssessment],
        200,
    );
    assert!(rows.groups.is_empty(), "{rows:?}");
}

#[test]
fn iac_files_get_one_report_each_with_the_rule_in_properties() {
    let iac = |i: usize, level| IacRisk {
        risk_id: Some(format!("iac-{i}")),
        rule_id: Some(format!("rule-{i}")),
        risk_name: Some(format!("iac risk {i}")),
        risk_level: level,
        risk_category: Some("k8s".into()),
        risk_num: Some(1),
        last_scan_time: None,
        description: None,
        remediation: None,
    };
    let read = Read {
        files: vec![
            ("f1".into(), iac(1, RiskLevel::Low)),
            ("f1".into(), iac(2, RiskLevel::High)),
            ("f2".into(), iac(3, RiskLevel::Tips)),
            ("f9".into(), iac(4, RiskLevel::High)),
        ],
        ..Read::default()
    };
    let rows = Rows::files(&read, &set(&["f1", "f2"]), 200);
    assert_eq!(rows.groups.len(), 2, "f9 is not this task's");
    let r = build(Kind::PolicyReport, &owner(), &rows.groups[0], 200);
    assert_eq!(r["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(r["kind"], "PolicyReport");
    assert!(
        r.get("configuration").is_none() && r.get("source").is_none(),
        "v1alpha2 has neither"
    );
    let results = r["results"].as_array().expect("results");
    assert_eq!(results[0]["rule"], "iac-2", "the high one first");
    assert_eq!(results[0]["properties"]["ruleId"], "rule-2");
    assert_eq!(results[0]["properties"]["fileId"], "f1");
    assert_eq!(results[0]["source"], "Huawei Cloud HSS");
    assert_eq!(r["summary"]["fail"], 1);
    assert_eq!(r["summary"]["warn"], 1);
    assert_eq!(r["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert_eq!(r["metadata"]["ownerReferences"][0]["controller"], true);
}

#[test]
fn report_names_are_deterministic_and_valid_object_names() {
    // (task, id, expected, reason)
    let cases = [
        ("scan", "cce-01", "hss-scan-cce-01", "kept as is when valid"),
        (
            "scan",
            "CCE_01",
            "hss-scan-cce-01-",
            "changed: hashed suffix",
        ),
    ];
    for (task, id, expected, reason) in cases {
        let name = report_name(task, id);
        assert!(name.starts_with(expected), "{reason}: {name}");
        assert_eq!(name, report_name(task, id), "{reason}: deterministic");
    }
    assert_ne!(
        report_name("scan", "CCE_01"),
        report_name("scan", "cce_01"),
        "ids differing in case stay apart"
    );
    let long = report_name(&"t".repeat(253), "c");
    assert!(long.len() <= 253, "{}", long.len());
    assert!(
        long.chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    );
}

#[test]
fn the_kind_is_the_first_served_of_the_mode() {
    let both = [Kind::OpenReports, Kind::PolicyReport];
    // (mode, served, expected, reason)
    let cases: [(Mode, &[Kind], Option<Kind>, &str); 6] = [
        (
            Mode::Auto,
            &both,
            Some(Kind::OpenReports),
            "OpenReports preferred",
        ),
        (
            Mode::Auto,
            &[Kind::PolicyReport],
            Some(Kind::PolicyReport),
            "the older API when alone",
        ),
        (Mode::Auto, &[], None, "none served: none written"),
        (
            Mode::Openreports,
            &[Kind::PolicyReport],
            None,
            "asked for one kind only",
        ),
        (
            Mode::Policyreport,
            &both,
            Some(Kind::PolicyReport),
            "as asked",
        ),
        (Mode::Off, &both, None, "off"),
    ];
    for (mode, served, expected, reason) in cases {
        assert_eq!(pick(mode, served), expected, "{reason}");
    }
}

#[tokio::test(start_paused = true)]
async fn discovery_is_asked_again_once_its_answer_is_a_minute_old() {
    let at = tokio::time::Instant::now();
    assert!(due(None, at), "never asked");
    assert!(!due(Some(at), at));
    tokio::time::advance(RECHECK - std::time::Duration::from_millis(1)).await;
    assert!(!due(Some(at), tokio::time::Instant::now()));
    tokio::time::advance(std::time::Duration::from_millis(1)).await;
    assert!(due(Some(at), tokio::time::Instant::now()));
}

#[test]
fn the_condition_says_why_no_report_was_written() {
    assert_eq!(condition(&Ok(Written::Off)), None, "off: no condition");
    let (value, reason, message) =
        condition(&Ok(Written::NotServed(Mode::Auto))).expect("a condition");
    assert!(!value);
    assert_eq!(reason, "ReportsNotServed");
    assert!(
        message.contains("reports.openreports.io")
            && message.contains("policyreports.wgpolicyk8s.io"),
        "{message}"
    );
    let (value, _, message) = condition(&Ok(Written::Wrote {
        kind: Kind::OpenReports,
        applied: 2,
        unchanged: 1,
    }))
    .expect("a condition");
    assert!(value);
    assert!(
        message.starts_with("3 openreports.io/v1alpha1 Report"),
        "{message}"
    );
}

fn affected_rows() -> Rows {
    use super::affected::{Affected, Resource};
    let res = |ns: Option<&str>, name: &str| Resource {
        namespace: ns.map(Into::into),
        kind: "Deployment".into(),
        name: name.into(),
        api_version: Some("apps/v1"),
    };
    let mut rows = Rows::clusters(
        &many("c-self", 4),
        &set(&["c-self"]),
        &BTreeSet::new(),
        &[RiskType::RiskAssessment],
        10,
    );
    let group = rows.cluster_mut("c-self").expect("the group");
    // r-0 (high): team-a and shop; r-1 (medium): 30 in shop and a cluster-scoped one;
    // r-2: payments only; r-3: not looked up.
    for row in &mut group.rows {
        row.affected = match row.id.as_str() {
            "r-0" => Some(Affected {
                total: 2,
                resources: vec![res(Some("team-a"), "own"), res(Some("shop"), "web")],
            }),
            "r-1" => Some(Affected {
                total: 31,
                resources: (0..30)
                    .map(|i| res(Some("shop"), &format!("d{i}")))
                    .chain([res(None, "ns")])
                    .collect(),
            }),
            "r-2" => Some(Affected {
                total: 1,
                resources: vec![res(Some("payments"), "pay")],
            }),
            _ => None,
        };
    }
    rows.affected = true;
    rows
}

fn named(report: &serde_json::Value) -> Vec<(String, String)> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
        .map(|o| {
            (
                o["namespace"].as_str().unwrap_or("").to_string(),
                o["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_scans_own_report_names_only_its_namespaces_resources_and_counts_the_others() {
    let rows = affected_rows();
    let report = build(Kind::OpenReports, &owner(), &rows.groups[0], 200);
    assert_eq!(named(&report), vec![("team-a".into(), "own".into())]);
    let results = report["results"].as_array().expect("results");
    let of = |id: &str| results.iter().find(|r| r["rule"] == id).expect(id);
    assert_eq!(of("r-0")["properties"]["affectedResources"], "2");
    assert_eq!(of("r-0")["properties"]["affectedNamed"], "1");
    assert_eq!(of("r-1")["properties"]["affectedResources"], "31");
    assert_eq!(of("r-1")["properties"]["affectedNamed"], "0");
    assert!(
        of("r-1").get("resources").is_none(),
        "shop's are not team-a's"
    );
    assert!(
        of("r-3")["properties"].get("affectedResources").is_none(),
        "not looked up: no count"
    );
}

#[test]
fn each_affected_namespace_gets_a_report_of_its_own_risks_naming_only_its_resources() {
    let rows = affected_rows();
    let all = namespaced(Kind::OpenReports, &owner(), &rows, 200, |_| true);
    let by_ns: std::collections::BTreeMap<String, &serde_json::Value> = all
        .iter()
        .map(|r| {
            (
                r["metadata"]["namespace"]
                    .as_str()
                    .expect("json")
                    .to_string(),
                r,
            )
        })
        .collect();
    assert_eq!(
        by_ns.keys().collect::<Vec<_>>(),
        ["payments", "shop"],
        "the owner's namespace has its own report; cluster-scoped resources none"
    );
    let shop = by_ns["shop"];
    let rules: Vec<&str> = shop["results"]
        .as_array()
        .expect("json")
        .iter()
        .map(|r| r["rule"].as_str().expect("json"))
        .collect();
    assert_eq!(rules, ["r-0", "r-1"], "high first");
    let names = named(shop);
    assert!(names.iter().all(|(ns, _)| ns == "shop"), "{names:?}");
    assert_eq!(names.len(), 1 + affected::NAMED, "r-1 names 20 of its 30");
    assert_eq!(shop["summary"]["fail"], 2);
    assert_eq!(shop["metadata"]["labels"][affected::SCAN_UID], "u-1");
    assert!(shop["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        named(by_ns["payments"]),
        vec![("payments".into(), "pay".into())]
    );
    assert_ne!(
        shop["metadata"]["name"],
        build(Kind::OpenReports, &owner(), &rows.groups[0], 200)["metadata"]["name"]
    );

    let watched = namespaced(Kind::OpenReports, &owner(), &rows, 200, |ns| ns == "shop");
    assert_eq!(watched.len(), 1, "unwatched namespaces get none");

    let mut not_looked_up = rows.clone();
    for row in &mut not_looked_up.groups[0].rows {
        row.affected = None;
    }
    assert!(namespaced(Kind::OpenReports, &owner(), &not_looked_up, 200, |_| true).is_empty());
}
