//! ListClusterRiskAffectResources over real loopback HTTP: our client pages through the
//! resources one cluster risk affects exactly as the simulator holds them, and a risk id that
//! would leave its path segment never reaches the wire.

use std::{collections::BTreeSet, time::Duration};

use hss_client::{
    Api, Error,
    budget::Budget,
    client::{ClientConfig, HssClient},
    credentials::Credentials,
    endpoint::Endpoint,
    limits::MIN_PAGE,
    model::*,
    results::{AffectedResource, ClusterRisk, RiskType},
};
use hss_simulator::{SimConfig, Simulator};
use tokio::time::Instant;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";

fn client(sim: &Simulator) -> HssClient {
    let mut config =
        ClientConfig::new(Endpoint::parse(&sim.base_url()).expect("endpoint"), PROJECT);
    config.timeout = Duration::from_secs(5);
    HssClient::new(
        config,
        Credentials::permanent(
            hss_simulator::DEFAULT_ACCESS_KEY,
            hss_simulator::DEFAULT_SECRET_KEY,
        )
        .expect("credentials"),
        Budget::per_minute(0),
    )
    .expect("client")
}

/// Scans `clusters` for risk_assessment and benchmark and waits until every scan succeeded.
async fn scan(client: &HssClient, clusters: &[String]) {
    let req = CreateTaskRequest {
        task_type: TaskType::ClusterScan,
        cluster_scan_info: Some(ClusterScanInfo {
            scan_type_list: vec![ScanType::RiskAssessment, ScanType::Benchmark],
            range_type: RangeType::SpecificCluster,
            cluster_id_list: Some(clusters.to_vec()),
        }),
        iac_scan_info: None,
    };
    let permit = client.acquire(Api::CreateTask).await;
    let task = client.create_task(permit, &req).await.expect("CreateTask");
    let query = ListTaskResourcesRequest {
        task_type: TaskType::ClusterScan,
        cluster_scan_info: None,
        iac_scan_info: None,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = client
            .list_task_resources(&task.task_id, &query, 0, 200)
            .await
            .expect("ListTaskResources");
        let done = page.cluster_scan_data_list.len() == clusters.len()
            && page
                .cluster_scan_data_list
                .iter()
                .all(|r| r.scan_status == ScanStatus::Success);
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "scans not finished in 5 s: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_client_pages_through_one_risks_affected_resources_as_the_simulator_holds_them() {
    let sim = Simulator::start(SimConfig {
        finish_after: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let client = client(&sim);
    let clusters: Vec<String> = (0..12).map(|i| format!("cluster-{i}")).collect();
    scan(&client, &clusters).await;

    let risks: Vec<ClusterRisk> = RiskType::ALL
        .into_iter()
        .flat_map(|rt| sim.cluster_risks(PROJECT, rt))
        .collect();
    let rows_of = |r: &ClusterRisk| {
        sim.affected_resources(
            PROJECT,
            r.risk_id.as_deref().expect("id"),
            Some(&r.cluster_id),
        )
    };
    let risk = risks
        .iter()
        .max_by_key(|r| rows_of(r).len())
        .expect("the scans found risks");
    let risk_id = risk.risk_id.as_deref().expect("id");
    let expected = rows_of(risk);
    assert!(
        expected.len() > 2 * MIN_PAGE as usize,
        "the seed gives a risk of three pages: {}",
        expected.len()
    );

    let mut got: Vec<AffectedResource> = Vec::new();
    let mut offset = 0;
    let mut pages = 0;
    loop {
        let page = client
            .list_cluster_risk_affect_resources(risk_id, Some(&risk.cluster_id), offset, MIN_PAGE)
            .await
            .expect("ListClusterRiskAffectResources");
        pages += 1;
        assert_eq!(
            page.total_num,
            expected.len() as i64,
            "the total on every page"
        );
        assert!(page.data_list.len() <= MIN_PAGE as usize);
        offset += page.data_list.len() as u32;
        got.extend(page.data_list);
        if got.len() as i64 >= page.total_num || pages > 10 {
            break;
        }
    }
    assert_eq!(got, expected, "every row, in order, none twice");
    assert_eq!(pages, expected.len().div_ceil(MIN_PAGE as usize));
    assert_eq!(
        sim.call_count(Api::ListClusterRiskAffectResources, Some(200)),
        pages as u64
    );
    assert_eq!(
        sim.call_count(Api::ListClusterRisks, None),
        0,
        "its own API, not ListClusterRisks"
    );
    let namespaces: BTreeSet<_> = got.iter().filter_map(|r| r.namespace.clone()).collect();
    assert!(namespaces.len() >= 2, "{namespaces:?}");

    // The risk id alone finds the same rows (it is the cluster's), another cluster none,
    // and an id HSS does not hold an empty page.
    let unfiltered = client
        .list_cluster_risk_affect_resources(risk_id, None, 0, 200)
        .await
        .expect("without cluster_id");
    assert_eq!(unfiltered.data_list, expected);
    let other = clusters
        .iter()
        .find(|c| **c != risk.cluster_id)
        .expect("another");
    let none = client
        .list_cluster_risk_affect_resources(risk_id, Some(other), 0, 200)
        .await
        .expect("another cluster");
    assert_eq!((none.total_num, none.data_list.len()), (0, 0));
    let unknown = client
        .list_cluster_risk_affect_resources("no-such-risk", None, 0, 200)
        .await
        .expect("unknown risk");
    assert_eq!(unknown.total_num, 0);
}

#[tokio::test]
async fn a_risk_id_that_is_not_one_path_segment_is_refused_before_any_call() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts");
    let client = client(&sim);
    for id in ["", "..", "../../common/tasks", "r?cluster_id=x"] {
        match client
            .list_cluster_risk_affect_resources(id, None, 0, 10)
            .await
        {
            Err(Error::InvalidRequest { api, .. }) => {
                assert_eq!(api, Api::ListClusterRiskAffectResources, "{id:?}");
            }
            other => panic!("{id:?} was not refused: {other:?}"),
        }
    }
    assert!(
        sim.calls().is_empty(),
        "nothing was sent: {:?}",
        sim.calls()
    );
}
