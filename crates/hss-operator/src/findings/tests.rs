use std::cell::RefCell;
use std::collections::BTreeSet;

use super::*;
use crate::crd::findings::{MAX_CLUSTERS, MAX_TOP_RISKS};
use hss_client::results::RiskLevel;

fn risk(cluster: &str, i: usize, level: RiskLevel, num: i64) -> ClusterRisk {
    ClusterRisk {
        risk_id: Some(format!("{cluster}-{i}")),
        risk_name: Some(format!("risk {i}")),
        cluster_id: cluster.to_string(),
        cluster_name: None,
        risk_level: level,
        risk_category: Some("workload".into()),
        risk_num: Some(num),
        last_scan_time: Some(1_700_000_000_000 + i as i64),
        description: None,
        remediation: None,
    }
}

type Page = std::future::Ready<Result<(i64, Vec<ClusterRisk>), hss_client::Error>>;

/// A listing of `rows` served the way HSS pages it.
fn serve(rows: Vec<ClusterRisk>) -> impl Fn(Option<String>, u32) -> Page {
    move |cluster: Option<String>, offset: u32| {
        let matching: Vec<ClusterRisk> = rows
            .iter()
            .filter(|r| cluster.as_deref().is_none_or(|c| r.cluster_id == c))
            .cloned()
            .collect();
        let total = matching.len() as i64;
        let page = matching
            .into_iter()
            .skip(offset as usize)
            .take(MAX_PAGE as usize)
            .collect();
        std::future::ready(Ok((total, page)))
    }
}

fn ids(n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("c{i:04}")).collect()
}

async fn listing(
    scope: &BTreeSet<String>,
    rows: Vec<ClusterRisk>,
) -> (Vec<ClusterRisk>, Vec<Option<String>>, bool) {
    let page = serve(rows);
    let calls = RefCell::new(Vec::new());
    let (got, n, cut) = read_rows(scope, |c, off| {
        calls.borrow_mut().push((c.clone(), off));
        page(c, off)
    })
    .await
    .expect("reads");
    let calls = calls.into_inner();
    assert_eq!(
        calls.len() as u32,
        n,
        "the count of calls is the calls made"
    );
    (got, calls.into_iter().map(|(c, _)| c).collect(), cut)
}

#[tokio::test]
async fn one_cluster_is_read_with_its_filter_only() {
    let rows = vec![
        risk("a", 0, RiskLevel::High, 1),
        risk("b", 1, RiskLevel::Low, 1),
    ];
    let (got, calls, cut) = listing(&["a".to_string()].into(), rows).await;
    assert_eq!(calls, vec![Some("a".to_string())]);
    assert_eq!(got.len(), 1);
    assert!(!cut);
}

#[tokio::test]
async fn one_unfiltered_listing_serves_many_clusters_and_drops_the_others() {
    // 30 clusters of the task, 10 others, 4 risks each: 160 rows, one page.
    let rows: Vec<ClusterRisk> = ids(40)
        .iter()
        .flat_map(|c| (0..4).map(move |i| risk(c, i, RiskLevel::Medium, 2)))
        .collect();
    let scope = ids(30);
    let (got, calls, _) = listing(&scope, rows).await;
    assert_eq!(calls, vec![None], "one call for 30 clusters");
    assert_eq!(got.len(), 120);
    assert!(got.iter().all(|r| scope.contains(&r.cluster_id)));
}

#[tokio::test]
async fn a_project_far_larger_than_the_task_is_read_per_cluster() {
    // 2 clusters of the task among 1,000 with 4 risks each: 20 pages unfiltered vs 2 filtered.
    let rows: Vec<ClusterRisk> = ids(1000)
        .iter()
        .flat_map(|c| (0..4).map(move |i| risk(c, i, RiskLevel::Low, 1)))
        .collect();
    let scope = ids(2);
    let (got, calls, cut) = listing(&scope, rows).await;
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0], None);
    assert_eq!(got.len(), 8);
    assert!(!cut);
}

#[tokio::test]
async fn every_cluster_pages_through_and_stops_at_the_page_cap() {
    let rows: Vec<ClusterRisk> = ids(300)
        .iter()
        .flat_map(|c| (0..2).map(move |i| risk(c, i, RiskLevel::Tips, 1)))
        .collect();
    let (got, calls, cut) = listing(&ids(300), rows.clone()).await;
    assert_eq!((got.len(), calls.len(), cut), (600, 3, false));

    let many: Vec<ClusterRisk> = ids(3000)
        .iter()
        .flat_map(|c| (0..2).map(move |i| risk(c, i, RiskLevel::Tips, 1)))
        .collect();
    let (got, calls, cut) = listing(&ids(3000), many).await;
    assert_eq!(calls.len() as u32, MAX_PAGES);
    assert_eq!(got.len(), (MAX_PAGES * MAX_PAGE) as usize);
    assert!(cut, "a cut listing is reported incomplete");
}

#[tokio::test]
async fn no_cluster_of_the_task_means_no_call() {
    let rows = vec![risk("a", 0, RiskLevel::High, 1)];
    let (got, calls, cut) = listing(&BTreeSet::new(), rows).await;
    assert!(got.is_empty() && calls.is_empty() && !cut);
}

/// An all-cluster task scanned a, b and c; cluster x joined the project later and another
/// task scanned it before this one's findings were read. Its rows are in the unfiltered
/// listing, and never in this task's findings.
#[tokio::test]
async fn an_all_cluster_scan_reads_only_the_clusters_of_its_own_results() {
    let results = ["a", "b", "c"];
    let own = own_clusters(None, results);
    let rows: Vec<ClusterRisk> = ["a", "b", "c", "x"]
        .iter()
        .flat_map(|c| (0..3).map(move |i| risk(c, i, RiskLevel::High, 1)))
        .collect();
    let (got, calls, _) = listing(&own, rows).await;
    assert_eq!(calls, vec![None], "one unfiltered page");
    let clusters: BTreeSet<&str> = got.iter().map(|r| r.cluster_id.as_str()).collect();
    assert_eq!(clusters, BTreeSet::from(["a", "b", "c"]));
    let summary = summarize(
        &Read {
            risks: got
                .into_iter()
                .map(|r| (RiskType::RiskAssessment, r))
                .collect(),
            ..Read::default()
        },
        &own,
        &BTreeSet::new(),
        jiff::Timestamp::now(),
    );
    let named: Vec<&str> = summary
        .clusters
        .iter()
        .map(|c| c.cluster_id.as_str())
        .collect();
    assert_eq!(named, ["a", "b", "c"]);

    // A specific-cluster task: its results, and of them only what it asked for.
    let asked: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    assert_eq!(
        own_clusters(Some(&asked), ["a", "b", "z"]),
        asked,
        "a result row the task never asked for is not its own"
    );
    let files: BTreeSet<String> = ["f1".to_string(), "f2".to_string(), "f3".to_string()].into();
    let failed: BTreeSet<String> = ["f2".to_string()].into();
    assert_eq!(
        own_files(&files, ["f1", "f2", "g9"], &failed),
        BTreeSet::from(["f1".to_string()])
    );
}

#[test]
fn counts_by_level_drop_failed_scans_and_order_the_worst_first() {
    let read = Read {
        risks: vec![
            (RiskType::RiskAssessment, risk("a", 0, RiskLevel::Low, 9)),
            (RiskType::RiskAssessment, risk("a", 1, RiskLevel::High, 1)),
            (RiskType::RiskAssessment, risk("a", 2, RiskLevel::High, 5)),
            (RiskType::RiskAssessment, risk("a", 3, RiskLevel::Medium, 5)),
            (RiskType::Benchmark, risk("b", 0, RiskLevel::Medium, 1)),
            // b's risk_assessment failed in this task: its rows are an older scan's.
            (RiskType::RiskAssessment, risk("b", 1, RiskLevel::High, 1)),
            (RiskType::Benchmark, risk("c", 0, RiskLevel::Unknown, 1)),
        ],
        reports: vec![],
        incomplete: false,
        calls: 3,
        ..Read::default()
    };
    let failed = [("b".to_string(), "risk_assessment".to_string())].into();
    let scanned = ["a", "b", "c", "d"].map(String::from).into();
    let s = summarize(&read, &scanned, &failed, jiff::Timestamp::UNIX_EPOCH);
    let f = &s.findings;
    assert_eq!(
        (f.total.high, f.total.medium, f.total.low, f.total.tips),
        (2, 2, 1, 0)
    );
    assert_eq!(f.clusters_read, 4);
    assert_eq!(
        f.clusters_with_findings, 2,
        "c's only risk has an unknown level"
    );
    assert_eq!(f.clusters[0].cluster_id, "a");
    let a = &f.clusters[0].scans[0];
    assert_eq!(a.top_risks.len(), MAX_TOP_RISKS);
    assert_eq!(
        a.top_risks
            .iter()
            .map(|r| (r.level.as_str(), r.count))
            .collect::<Vec<_>>(),
        vec![("high", 5), ("high", 1), ("medium", 5)]
    );
    assert_eq!(f.top_risks[0].cluster_id.as_deref(), Some("a"));
    assert!(
        f.describe()
            .starts_with("2 high, 2 medium, 1 low risks in 2 of 4 cluster(s)"),
        "{}",
        f.describe()
    );
}

#[test]
fn a_thousand_clusters_stay_well_under_the_object_limit() {
    let read = Read {
        risks: ids(1000)
            .iter()
            .flat_map(|c| {
                RiskType::ALL.into_iter().flat_map(move |t| {
                    (0..6).map(move |i| (t, risk(c, i, RiskLevel::ALL[i % 4], 3)))
                })
            })
            .collect(),
        reports: ids(1000)
            .iter()
            .map(|c| ClusterReport {
                report_id: None,
                cluster_id: c.clone(),
                cluster_name: None,
                cluster_category: None,
                severity: None,
                local_image_vul_num: Some(4),
                risk_config_num: Some(2),
                privileged_container_num: Some(1),
                scan_time: Some(1_700_000_000_000),
            })
            .collect(),
        incomplete: false,
        calls: 30,
        ..Read::default()
    };
    let s = summarize(
        &read,
        &ids(1000),
        &BTreeSet::new(),
        jiff::Timestamp::UNIX_EPOCH,
    );
    let bytes = serde_json::to_vec(&s.findings).expect("serialises").len();
    eprintln!("status.findings at 1,000 clusters: {bytes} bytes");
    assert!(bytes < 64 * 1024, "status.findings is {bytes} bytes");
    assert_eq!(s.findings.clusters.len(), MAX_CLUSTERS);
    assert_eq!(s.findings.clusters_omitted, Some(950));
    assert_eq!(s.clusters.len(), 1000, "metrics see every cluster");
    assert_eq!(s.findings.total.high, 1000 * 2 * 2);
    assert_eq!(
        s.findings
            .security_check
            .as_ref()
            .map(|c| c.image_vulnerabilities),
        Some(4000)
    );
}

/// The gauges as Prometheus would scrape them.
fn registered() -> (gauges::Gauges, prometheus_client::registry::Registry) {
    let g = gauges::Gauges::default();
    let mut registry = prometheus_client::registry::Registry::with_prefix("hss_operator");
    g.register(&mut registry);
    (g, registry)
}

fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    text
}

/// The clusters of a summary of `rows`, each (cluster, scan type, level).
fn found(rows: &[(&str, RiskType, RiskLevel)]) -> Vec<crate::crd::findings::ClusterFindings> {
    let read = Read {
        risks: rows
            .iter()
            .enumerate()
            .map(|(i, (c, t, level))| (*t, risk(c, i, *level, 1)))
            .collect(),
        ..Read::default()
    };
    let scanned = rows.iter().map(|(c, _, _)| c.to_string()).collect();
    summarize(
        &read,
        &scanned,
        &BTreeSet::new(),
        jiff::Timestamp::UNIX_EPOCH,
    )
    .clusters
}

fn series(ns: &str, cluster: &str, scan_type: &str, level: &str) -> String {
    format!(
        r#"hss_operator_findings{{namespace="{ns}",cluster_id="{cluster}",scan_type="{scan_type}",level="{level}"}}"#
    )
}

#[test]
fn gauges_keep_the_latest_read_per_cluster_and_a_bounded_number_of_clusters() {
    let (g, registry) = registered();
    let one = |level| found(&[("a", RiskType::Benchmark, level)]);
    g.record("team-a", &one(RiskLevel::High), 2_000);
    g.record("team-a", &one(RiskLevel::Low), 1_000); // an older read: ignored
    let text = encode(&registry);
    assert!(
        text.contains(&format!("{} 1", series("team-a", "a", "benchmark", "high"))),
        "{text}"
    );
    assert!(text.contains(&format!("{} 0", series("team-a", "a", "benchmark", "low"))));
    assert!(text.contains(
        r#"hss_operator_cluster_last_scan_timestamp_seconds{namespace="team-a",cluster_id="a"}"#
    ));
    g.record("team-a", &one(RiskLevel::Low), 3_000);
    let text = encode(&registry);
    assert!(text.contains(&format!("{} 0", series("team-a", "a", "benchmark", "high"))));

    let many: Vec<_> = (0..gauges::MAX_CLUSTERS + 10)
        .map(|i| crate::crd::findings::ClusterFindings {
            cluster_id: format!("x{i}"),
            ..Default::default()
        })
        .collect();
    g.record("team-a", &many, 4_000);
    assert_eq!(g.clusters_in("team-a"), gauges::MAX_CLUSTERS);
}

/// Namespaces a and b both scan cluster c (a shared cluster, or a tenant reading another's):
/// each keeps its own series, whatever the other reads and when.
#[test]
fn two_namespaces_reading_the_same_cluster_keep_separate_series() {
    let (g, registry) = registered();
    g.record(
        "team-a",
        &found(&[("c", RiskType::RiskAssessment, RiskLevel::High)]),
        1_000,
    );
    // b reads c later, with other scan types and nothing high.
    g.record(
        "team-b",
        &found(&[("c", RiskType::Benchmark, RiskLevel::Low)]),
        2_000,
    );
    let text = encode(&registry);
    assert!(
        text.contains(&format!(
            "{} 1",
            series("team-a", "c", "risk_assessment", "high")
        )),
        "a newer read from b does not drop or overwrite a's scan types: {text}"
    );
    assert!(text.contains(&format!("{} 1", series("team-b", "c", "benchmark", "low"))));
    assert!(
        !text.contains(&series("team-b", "c", "risk_assessment", "high")),
        "b has only what b read"
    );
    assert!(!text.contains(&series("team-a", "c", "benchmark", "low")));

    // A newer read from a replaces a's series of c as a whole: the scan type a no longer read
    // goes, b's stay.
    g.record(
        "team-a",
        &found(&[("c", RiskType::Benchmark, RiskLevel::Medium)]),
        3_000,
    );
    let text = encode(&registry);
    assert!(!text.contains(&series("team-a", "c", "risk_assessment", "high")));
    assert!(text.contains(&format!(
        "{} 1",
        series("team-a", "c", "benchmark", "medium")
    )));
    assert!(text.contains(&format!("{} 1", series("team-b", "c", "benchmark", "low"))));
    // An older read from b (one restored after a restart, say) changes nothing of a's or b's.
    g.record(
        "team-b",
        &found(&[("c", RiskType::Benchmark, RiskLevel::High)]),
        1_500,
    );
    let text = encode(&registry);
    assert!(text.contains(&format!("{} 1", series("team-b", "c", "benchmark", "low"))));
    assert!(text.contains(&format!("{} 0", series("team-b", "c", "benchmark", "high"))));

    // Files the same way.
    let file = |high| crate::crd::findings::FileFindings {
        file_id: "f".into(),
        counts: crate::crd::findings::LevelCounts {
            high,
            ..Default::default()
        },
        ..Default::default()
    };
    g.record_files("team-a", &[file(2)], 1_000);
    g.record_files("team-b", &[file(0)], 2_000);
    let text = encode(&registry);
    assert!(
        text.contains(
            r#"hss_operator_iac_findings{namespace="team-a",file_id="f",level="high"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"hss_operator_iac_findings{namespace="team-b",file_id="f",level="high"} 0"#
        )
    );
}

/// One namespace reading many clusters evicts only its own least recently read ones.
#[test]
fn the_eviction_cap_is_per_namespace() {
    let (g, registry) = registered();
    g.record(
        "quiet",
        &found(&[("q", RiskType::Benchmark, RiskLevel::High)]),
        1,
    );
    g.record_files(
        "quiet",
        &[crate::crd::findings::FileFindings {
            file_id: "qf".into(),
            ..Default::default()
        }],
        1,
    );
    let clusters = |prefix: &str| -> Vec<crate::crd::findings::ClusterFindings> {
        (0..gauges::MAX_CLUSTERS + 5)
            .map(|i| crate::crd::findings::ClusterFindings {
                cluster_id: format!("{prefix}{i}"),
                ..Default::default()
            })
            .collect()
    };
    let files: Vec<_> = (0..gauges::MAX_CLUSTERS + 5)
        .map(|i| crate::crd::findings::FileFindings {
            file_id: format!("f{i}"),
            ..Default::default()
        })
        .collect();
    g.record("busy", &clusters("b"), 2);
    g.record_files("busy", &files, 2);
    assert_eq!(g.clusters_in("busy"), gauges::MAX_CLUSTERS);
    assert_eq!(
        g.clusters_in("quiet"),
        1,
        "another namespace's reads evict none of quiet's"
    );
    assert_eq!(g.clusters(), gauges::MAX_CLUSTERS + 1);
    let text = encode(&registry);
    assert!(text.contains(&format!("{} 1", series("quiet", "q", "benchmark", "high"))));
    assert!(
        text.contains(
            r#"hss_operator_iac_findings{namespace="quiet",file_id="qf",level="high"} 0"#
        )
    );
    // busy's own oldest go: a later read of others pushes out b0.. (ties by id).
    g.record("busy", &clusters("c")[..3], 3);
    assert_eq!(g.clusters_in("busy"), gauges::MAX_CLUSTERS);
    assert!(!encode(&registry).contains(
        r#"hss_operator_cluster_last_scan_timestamp_seconds{namespace="busy",cluster_id="b0"}"#
    ));
    assert_eq!(g.clusters_in("quiet"), 1);
}

/// Whatever rows a read holds (a shared page, an unfiltered listing, a row HSS attributes to
/// a cluster the task did not scan), the summary names only the task's own clusters and files.
#[test]
fn summaries_name_only_the_clusters_and_files_the_task_scanned() {
    let read = Read {
        risks: vec![
            (RiskType::RiskAssessment, risk("mine", 0, RiskLevel::Low, 1)),
            (
                RiskType::RiskAssessment,
                risk("theirs", 1, RiskLevel::High, 9),
            ),
        ],
        reports: vec![ClusterReport {
            report_id: None,
            cluster_id: "theirs".into(),
            cluster_name: None,
            cluster_category: None,
            severity: None,
            local_image_vul_num: Some(40),
            risk_config_num: Some(2),
            privileged_container_num: Some(1),
            scan_time: Some(1_700_000_000_000),
        }],
        ..Read::default()
    };
    let scanned = ["mine".to_string()].into();
    let s = summarize(
        &read,
        &scanned,
        &BTreeSet::new(),
        jiff::Timestamp::UNIX_EPOCH,
    );
    let text = serde_json::to_string(&s.findings).expect("json");
    assert!(!text.contains("theirs"), "{text}");
    assert!(s.clusters.iter().all(|c| c.cluster_id == "mine"));
    assert_eq!((s.findings.total.high, s.findings.total.low), (0, 1));
    assert_eq!(
        s.findings
            .security_check
            .as_ref()
            .map(|c| c.image_vulnerabilities),
        Some(0),
        "another cluster's checks are not summed in"
    );
    assert!(!s.findings.describe().contains("theirs"));

    let row = hss_client::results::IacRisk {
        risk_id: None,
        rule_id: None,
        risk_name: Some("r".into()),
        risk_level: RiskLevel::High,
        risk_category: None,
        risk_num: Some(1),
        last_scan_time: None,
        description: None,
        remediation: None,
    };
    let read = Read {
        files: vec![("my-file".into(), row.clone()), ("their-file".into(), row)],
        ..Read::default()
    };
    let s = summarize_files(
        &read,
        &["my-file".to_string()].into(),
        &BTreeSet::new(),
        jiff::Timestamp::UNIX_EPOCH,
    );
    assert_eq!(s.files.len(), 1);
    assert_eq!(s.findings.total.high, 1);
    assert!(
        !serde_json::to_string(&s.findings)
            .expect("json")
            .contains("their-file")
    );
}

#[test]
fn iac_files_are_counted_per_file_and_failed_files_are_left_out() {
    let row = |i: usize, level: RiskLevel| hss_client::results::IacRisk {
        risk_id: Some(format!("r{i}")),
        rule_id: None,
        risk_name: Some(format!("rule {i}")),
        risk_level: level,
        risk_category: None,
        risk_num: Some(1),
        last_scan_time: Some(1_700_000_000_000),
        description: None,
        remediation: None,
    };
    let read = Read {
        files: vec![
            ("app".into(), row(0, RiskLevel::Low)),
            ("app".into(), row(1, RiskLevel::High)),
            ("web".into(), row(2, RiskLevel::Tips)),
            // bad failed in this task: an older scan's row.
            ("bad".into(), row(3, RiskLevel::High)),
        ],
        ..Read::default()
    };
    let ids = ["app", "web", "bad", "clean"].map(String::from).into();
    let failed = ["bad".to_string()].into();
    let s = summarize_files(&read, &ids, &failed, jiff::Timestamp::UNIX_EPOCH);
    let f = &s.findings;
    assert_eq!((f.total.high, f.total.low, f.total.tips), (1, 1, 1));
    assert_eq!((f.files_read, f.files_with_findings), (Some(3), Some(2)));
    assert_eq!(f.files[0].file_id, "app", "worst first");
    assert_eq!(f.top_risks[0].file_id.as_deref(), Some("app"));
    assert!(f.clusters.is_empty() && f.top_risks[0].cluster_id.is_none());
    assert_eq!(
        f.describe(),
        "1 high, 1 low, 1 tips risks in 2 of 3 file(s)"
    );
}
