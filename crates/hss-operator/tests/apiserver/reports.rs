//! A finished scan's findings as OpenReports `Report`s on a real kube-apiserver, with the
//! Report CRD written from the published schema (crates/hss-testkit/crds). No PolicyReport
//! CRD is installed in this binary: `--reports policyreport` sees a server that serves none.

use std::collections::BTreeMap;

use hss_client::results::{RiskLevel, RiskType};
use hss_operator::crd::{ClusterScanTask, Phase};
use hss_simulator::{SimConfig, Simulator};
use hss_testkit::cluster::*;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
};

const CLUSTERS: [&str; 2] = ["cce-sim-0001", "cce-sim-0002"];

pub(crate) async fn install_report_crd(client: &Client) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        hss_testkit::install_crds(
            client,
            &repo().join("crates/hss-testkit/crds/openreports.io_reports.yaml"),
        )
        .await
        .expect("install the Report CRD");
    })
    .await;
}

pub(crate) fn reports(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "reports"),
    )
}

/// A specific_cluster scan of [`CLUSTERS`] for the risk scan types; waits until its findings
/// were read.
async fn scan_and_wait(client: &Client, ns: &str, name: &str) -> ClusterScanTask {
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &scan(
            name,
            serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
                "scanTypes": ["risk_assessment", "benchmark"],
                "rangeType": "specific_cluster", "clusterIds": CLUSTERS}}),
        ),
    )
    .await
    .expect("create");
    let done = wait_for(&api, name, 90, |o| {
        condition(o, "FindingsRead").is_some_and(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(phase(&done), Some(Phase::Succeeded));
    done
}

fn level_index(l: RiskLevel) -> usize {
    RiskLevel::ALL
        .iter()
        .position(|x| *x == l)
        .expect("a known level")
}

#[tokio::test]
async fn a_finished_scans_reports_agree_with_the_simulator_are_owned_by_it_and_bounded_at_1000_risks()
 {
    let client = admin().await;
    install_report_crd(&client).await;
    let ns = namespace(&client, "reports").await;
    let sim = Simulator::start(SimConfig {
        seed: 5,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    // 500 risks of each of the two scan types: 1,000 per cluster.
    sim.set_risks_per_scan(Some(500));
    let op = Operator::start(client.clone(), run_args(&sim.base_url(), &ns, &[]), None);

    let done = scan_and_wait(&client, &ns, "many").await;
    assert_eq!(
        condition(&done, "ReportsWritten"),
        Some(("True".into(), "Written".into())),
        "{}",
        condition_message(&done, "ReportsWritten")
    );

    // What the simulator holds, by cluster: counts at high, medium, low, tips.
    let mut expected: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for rt in RiskType::ALL {
        for r in sim.cluster_risks("proj", rt) {
            expected.entry(r.cluster_id.clone()).or_default()[level_index(r.risk_level)] += 1;
        }
    }
    assert_eq!(
        expected
            .values()
            .map(|c| c.iter().sum::<u64>())
            .sum::<u64>(),
        2000
    );

    let list = reports(&client, &ns)
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(list.items.len(), CLUSTERS.len(), "one Report per cluster");
    let mut largest = 0usize;
    for report in &list.items {
        let size = serde_json::to_vec(report).expect("json").len();
        largest = largest.max(size);
        let owner = &report.owner_references()[0];
        assert_eq!(owner.kind, "ClusterScanTask");
        assert_eq!(owner.name, "many");
        assert_eq!(Some(&owner.uid), done.metadata.uid.as_ref());
        assert_eq!(owner.controller, Some(true));

        let results = report.data["results"].as_array().expect("results");
        let cluster = results[0]["properties"]["clusterId"]
            .as_str()
            .expect("clusterId")
            .to_string();
        let [high, medium, low, tips] = expected[&cluster];
        assert_eq!(report.name_any(), format!("hss-many-{cluster}"));
        assert_eq!(results.len(), 200, "--report-max-results' default");
        assert_eq!(report.data["configuration"]["limits"]["maxResults"], 200);
        assert_eq!(report.data["source"], "Huawei Cloud HSS");
        // The summary counts all 1,000, not the 200 results.
        assert_eq!(report.data["summary"]["fail"], high + medium, "{cluster}");
        assert_eq!(report.data["summary"]["warn"], low + tips, "{cluster}");
        assert_eq!(
            report.annotations()["hss.scanops.dev/findings"],
            format!("high={high},medium={medium},low={low},tips={tips}")
        );
        // The worst first: as many high results as fit.
        let highs = results.iter().filter(|r| r["severity"] == "high").count();
        assert_eq!(highs as u64, high.min(200), "{cluster}");
        assert!(
            results
                .iter()
                .all(|r| r["properties"]["clusterId"] == cluster.as_str())
        );
        let sim_ids: std::collections::BTreeSet<String> = RiskType::ALL
            .iter()
            .flat_map(|rt| sim.cluster_risks("proj", *rt))
            .filter(|r| r.cluster_id == cluster)
            .filter_map(|r| r.risk_id)
            .collect();
        for r in results {
            assert!(
                sim_ids.contains(r["rule"].as_str().expect("rule")),
                "{r} is no risk of {cluster}"
            );
        }
    }
    eprintln!("largest Report: {largest} bytes");
    assert!(largest < 256 * 1024, "{largest} bytes: far under 1 MiB");
    op.stop().await;
}

#[tokio::test]
async fn with_reports_off_a_finished_scan_writes_none() {
    let client = admin().await;
    install_report_crd(&client).await;
    let ns = namespace(&client, "reports-off").await;
    let sim = Simulator::start(SimConfig {
        seed: 11,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let op = Operator::start(
        client.clone(),
        run_args(&sim.base_url(), &ns, &["--reports", "off"]),
        None,
    );
    let done = scan_and_wait(&client, &ns, "quiet").await;
    assert_eq!(condition(&done, "ReportsWritten"), None);
    let list = reports(&client, &ns)
        .list(&Default::default())
        .await
        .expect("list");
    assert!(list.items.is_empty(), "{} Reports", list.items.len());
    op.stop().await;
}

#[tokio::test]
async fn without_a_served_report_kind_the_scan_finishes_and_says_no_report_was_written() {
    let client = admin().await;
    let ns = namespace(&client, "reports-none").await;
    let sim = Simulator::start(SimConfig {
        seed: 11,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let op = Operator::start(
        client.clone(),
        run_args(&sim.base_url(), &ns, &["--reports", "policyreport"]),
        None,
    );
    let done = scan_and_wait(&client, &ns, "unserved").await;
    assert_eq!(
        condition(&done, "ReportsWritten"),
        Some(("False".into(), "ReportsNotServed".into()))
    );
    assert!(
        condition_message(&done, "ReportsWritten").contains("policyreports.wgpolicyk8s.io"),
        "{}",
        condition_message(&done, "ReportsWritten")
    );
    op.stop().await;
}

#[tokio::test]
async fn an_iac_scan_gets_one_report_per_file_that_was_scanned() {
    let client = admin().await;
    install_report_crd(&client).await;
    let ns = namespace(&client, "reports-iac").await;
    let sim = Simulator::start(SimConfig {
        seed: 11,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let op = Operator::start(client.clone(), run_args(&sim.base_url(), &ns, &[]), None);
    // File ids starting with "bad" fail in the simulator: no report for that one.
    let files = ["app-deploy", "web-chart", "bad-values"];
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &scan(
            "iac",
            serde_json::json!({"taskType": "iac_scan",
                "iacScan": {"fileType": "k8s_yaml", "fileIds": files}}),
        ),
    )
    .await
    .expect("create");
    let done = wait_for(&api, "iac", 90, |o| {
        condition(o, "ReportsWritten").is_some_and(|(s, _)| s == "True")
    })
    .await;
    let list = reports(&client, &ns)
        .list(&Default::default())
        .await
        .expect("list");
    let mut names: Vec<String> = list.items.iter().map(|r| r.name_any()).collect();
    names.sort();
    assert_eq!(names, ["hss-iac-app-deploy", "hss-iac-web-chart"]);
    let risks: usize = ["app-deploy", "web-chart"]
        .iter()
        .map(|f| sim.iac_file_risks("proj", f).len())
        .sum();
    assert!(risks > 0, "seed 11 gives these files risks");
    for report in &list.items {
        let file = report.name_any().trim_start_matches("hss-iac-").to_string();
        let mut counts = [0u64; 4];
        for r in sim.iac_file_risks("proj", &file) {
            counts[level_index(r.risk_level)] += 1;
        }
        let [high, medium, low, tips] = counts;
        assert_eq!(report.data["summary"]["fail"], high + medium, "{file}");
        assert_eq!(report.data["summary"]["warn"], low + tips, "{file}");
        let results = report.data["results"].as_array().expect("results");
        assert_eq!(results.len() as u64, high + medium + low + tips, "none cut");
        for (level, n) in [
            ("high", high),
            ("medium", medium),
            ("low", low),
            ("info", tips),
        ] {
            let got = results.iter().filter(|r| r["severity"] == level).count() as u64;
            assert_eq!(got, n, "{file}: {level}");
        }
        assert!(
            results
                .iter()
                .all(|r| r["properties"]["fileId"] == file.as_str())
        );
        assert_eq!(
            Some(&report.owner_references()[0].uid),
            done.metadata.uid.as_ref()
        );
    }
    op.stop().await;
}
