//! A fleet sharing one account: three `hss-operator run` processes (one per namespace, as
//! three clusters would run them) with the same access key against HSS's per-user limit. Each
//! alone paces itself to the full limit, so together they meet 429s; every scan must still
//! complete on a task of its own (a gateway 429 created nothing, so nothing is adopted or
//! posted twice), and the 429s must stay bounded as the adaptive rate cuts in.
//!
//! Time is scaled: 5 calls per 6 s (the budget's `--budget-window` and the simulator's
//! throttle window alike), so a minute of HSS time passes in 6 s.

use std::{collections::BTreeSet, path::Path, time::Duration};

use hss_operator::crd::{ClusterScanTask, Phase};
use hss_simulator::{Api as HssApi, SimConfig, Simulator};
use hss_testkit::cluster::*;
use kube::{Api, api::PostParams};

const OPERATORS: usize = 3;
const OBJECTS_EACH: usize = 3;

#[tokio::test]
async fn three_operators_sharing_one_key_complete_every_scan_once_with_bounded_429s() {
    let client = admin().await;
    let window = Duration::from_secs(6);
    let sim = Simulator::start(SimConfig {
        throttle_per_minute: 5,
        throttle_window: window,
        finish_after: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let mut namespaces = Vec::new();
    let mut fleet = Vec::new();
    for i in 0..OPERATORS {
        let ns = namespace(&client, &format!("fleet-{i}")).await;
        let log = repo().join(format!("target/fleet-{i}.log"));
        let _ = std::fs::remove_file(&log);
        let op = hss_testkit::OperatorProcess::new(
            Path::new(env!("CARGO_BIN_EXE_hss-operator")),
            &control_plane().kubeconfig,
            &ns,
            &sim.base_url(),
            &log,
        )
        .args([
            "--budget-per-minute",
            "5",
            "--budget-window",
            "6s",
            "--poll-interval",
            "1s",
            "--lookup-settle",
            "2s",
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("POD_NAME", &format!("fleet-{i}"))
        .spawn()
        .expect("start hss-operator run");
        fleet.push(op);
        namespaces.push(ns);
    }
    for ns in &namespaces {
        let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), ns);
        for j in 0..OBJECTS_EACH {
            api.create(&PostParams::default(), &cluster_scan(&format!("scan-{j}")))
                .await
                .expect("create");
        }
    }
    let mut task_ids = BTreeSet::new();
    for ns in &namespaces {
        let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), ns);
        for j in 0..OBJECTS_EACH {
            let done = wait_for(&api, &format!("scan-{j}"), 240, |o| {
                phase(o) == Some(Phase::Succeeded)
            })
            .await;
            task_ids.insert(done.status.and_then(|s| s.task_id).expect("task id"));
        }
    }
    drop(fleet);
    let created = sim.created_tasks().len();
    let throttled = |api| sim.call_count(api, Some(429));
    let (create_429, list_429) = (throttled(HssApi::CreateTask), throttled(HssApi::ListTasks));
    let all_429: u64 = sim
        .calls()
        .iter()
        .filter(|((_, status), _)| *status == 429)
        .map(|(_, n)| n)
        .sum();
    let calls: u64 = sim.calls().values().sum();
    eprintln!(
        "fleet: {} objects on {} distinct tasks, {created} created; 429s: CreateTask {create_429}, ListTasks {list_429}, all {all_429} of {calls} calls",
        OPERATORS * OBJECTS_EACH,
        task_ids.len()
    );
    assert_eq!(
        task_ids.len(),
        OPERATORS * OBJECTS_EACH,
        "a task of its own each"
    );
    assert_eq!(created, OPERATORS * OBJECTS_EACH, "nothing posted twice");
    assert!(
        all_429 * 2 <= calls,
        "429s stay a minority of the calls: {all_429} of {calls}"
    );
}
