//! `--self-cluster-id` on a real kube-apiserver: a scan of the operator's own cluster names the
//! resources its risks affect, and each affected namespace gets a Report of its own, deleted
//! with the ClusterScanTask.

use std::collections::{BTreeMap, BTreeSet};

use hss_client::results::RiskType;
use hss_operator::crd::{ClusterScanTask, Phase};
use hss_simulator::{SimConfig, Simulator};
use hss_testkit::cluster::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::wait::{await_condition, conditions},
};

use super::reports::{install_report_crd, reports};

const SELF: &str = "cce-sim-0001";
const OTHER: &str = "cce-sim-0002";
/// The namespaces the simulator's affected resources live in.
const SIM_NAMESPACES: [&str; 5] = ["default", "shop", "payments", "monitoring", "kube-system"];

/// (namespace, kind, name) of every resource a report's results name.
fn named(report: &serde_json::Value) -> BTreeSet<(String, String, String)> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
        .map(|o| {
            let s = |k: &str| o[k].as_str().unwrap_or_default().to_string();
            (s("namespace"), s("kind"), s("name"))
        })
        .collect()
}

#[tokio::test]
async fn a_scan_of_the_self_cluster_gives_each_affected_namespace_its_report_and_deletes_them_with_the_scan()
 {
    let client = admin().await;
    install_report_crd(&client).await;
    let ns = namespace(&client, "selfc").await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in SIM_NAMESPACES {
        let obj: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("ns");
        match namespaces.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create namespace {name}: {e}"),
        }
    }
    let sim = Simulator::start(SimConfig {
        seed: 23,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    // 2 scan types x 6 risks: every risk of the cluster within --affected-max-risks.
    sim.set_risks_per_scan(Some(6));
    let watched = format!("{ns},{}", SIM_NAMESPACES.join(","));
    let op = Operator::start(
        client.clone(),
        run_args(
            &sim.base_url(),
            &ns,
            &["--namespace", &watched, "--self-cluster-id", SELF],
        ),
        None,
    );

    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &scan(
            "own",
            serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
                "scanTypes": ["risk_assessment", "benchmark"],
                "rangeType": "specific_cluster", "clusterIds": [SELF, OTHER]}}),
        ),
    )
    .await
    .expect("create");
    let done = wait_for(&api, "own", 90, |o| {
        condition(o, "FindingsRead").is_some_and(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(phase(&done), Some(Phase::Succeeded));
    assert_eq!(
        condition(&done, "ReportsWritten").map(|c| c.0),
        Some("True".into()),
        "{}",
        condition_message(&done, "ReportsWritten")
    );
    let uid = done.uid().expect("uid");

    // What the simulator says the self cluster's risks affect, by namespace.
    let mut expected: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    let mut total = 0usize;
    for rt in RiskType::ALL {
        for r in sim.cluster_risks("proj", rt) {
            if r.cluster_id != SELF {
                continue;
            }
            let id = r.risk_id.expect("risk id");
            for a in sim.affected_resources("proj", &id, Some(SELF)) {
                total += 1;
                if let Some(n) = a.namespace.filter(|n| !n.is_empty()) {
                    expected.entry(n.clone()).or_default().insert((
                        n,
                        a.resource_type.unwrap_or_default(),
                        a.resource_name.unwrap_or_default(),
                    ));
                }
            }
        }
    }
    assert!(
        expected.len() >= 2,
        "the seed affects several namespaces: {expected:?}"
    );

    // The tenant's own Reports name nothing outside its namespace; the self cluster's count.
    let own = reports(&client, &ns)
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(own.items.len(), 2, "one per cluster");
    for report in &own.items {
        assert!(named(&report.data).is_empty(), "{:?}", named(&report.data));
        let counted: usize = report.data["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|r| r["properties"]["affectedResources"].as_str())
            .map(|n| n.parse::<usize>().expect("a count"))
            .sum();
        if report.name_any().ends_with(SELF) {
            assert_eq!(counted, total, "every affected resource counted");
        } else {
            assert_eq!(counted, 0, "{OTHER} is not the self cluster");
        }
    }

    // One Report per affected namespace, naming exactly the simulator's rows there.
    let by_label = ListParams::default().labels(&format!("hss.scanops.dev/scan-uid={uid}"));
    for ns_name in SIM_NAMESPACES {
        let list = reports(&client, ns_name)
            .list(&by_label)
            .await
            .expect("list");
        match expected.get(ns_name) {
            Some(want) => {
                assert_eq!(list.items.len(), 1, "{ns_name}");
                let report = &list.items[0];
                assert!(report.owner_references().is_empty());
                assert_eq!(&named(&report.data), want, "{ns_name}");
                let fail = report.data["summary"]["fail"].as_u64().unwrap_or(0);
                let warn = report.data["summary"]["warn"].as_u64().unwrap_or(0);
                assert_eq!(
                    (fail + warn) as usize,
                    report.data["results"].as_array().expect("results").len()
                );
            }
            None => assert!(list.items.is_empty(), "{ns_name} is not affected"),
        }
    }

    // Deleting the scan deletes them: its finalizer ran before it was gone.
    api.delete("own", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        await_condition(api.clone(), "own", conditions::is_deleted(&uid)),
    )
    .await
    .expect("deleted in time")
    .expect("watch");
    for ns_name in SIM_NAMESPACES {
        let left = reports(&client, ns_name)
            .list(&by_label)
            .await
            .expect("list");
        assert!(
            left.items.is_empty(),
            "{ns_name}: {} left",
            left.items.len()
        );
    }
    op.stop().await;
}
