//! The operator's real `run` path against a real kube-apiserver and the HSS simulator.

mod support;

use std::time::Duration;

use hss_operator::{
    crd::{ClusterScanTask, Phase},
    simulator::{SimConfig, Simulator},
};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use support::*;

async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// How many HSS tasks each body-identical... rather: tasks per object are matched by order.
fn tasks_created(sim: &Simulator) -> usize {
    sim.created_tasks().len()
}

#[tokio::test]
async fn apply_sets_task_id_and_walks_to_succeeded_with_events() {
    let client = admin().await;
    let ns = namespace(&client, "happy").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let op = Operator::start(client.clone(), run_args(&sim.base_url(), &ns, &[]), None);
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &cluster_scan("scan-a"))
        .await
        .expect("create");

    let submitted = wait_for(&api, "scan-a", 30, |o| {
        o.status.as_ref().is_some_and(|s| s.task_id.is_some())
    })
    .await;
    let task_id = submitted
        .status
        .as_ref()
        .and_then(|s| s.task_id.clone())
        .expect("task id");
    let done = wait_for(&api, "scan-a", 60, |o| phase(o) == Some(Phase::Succeeded)).await;
    let status = done.status.clone().expect("status");
    assert_eq!(status.task_id.as_deref(), Some(task_id.as_str()));
    assert!(status.finished_at.is_some());
    assert!(!status.results.is_empty(), "per-cluster results recorded");
    assert!(status.results.iter().all(|r| r.status == "success"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    );
    assert!(
        done.finalizers()
            .iter()
            .any(|f| f == hss_operator::crd::FINALIZER)
    );

    let created = sim.created_tasks();
    assert_eq!(created.len(), 1, "exactly one HSS task");
    assert_eq!(created[0].task_id, task_id);

    let reasons = events_for(&client, &ns, "scan-a").await;
    assert!(
        reasons.iter().any(|r| r == "Submitted"),
        "events: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "Completed"),
        "events: {reasons:?}"
    );

    // Deleting a finished scan never touches HSS and leaves no finalizer behind.
    api.delete("scan-a", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            api.clone(),
            "scan-a",
            kube::runtime::wait::conditions::is_deleted(&done.uid().unwrap_or_default()),
        ),
    )
    .await
    .expect("deleted in time")
    .expect("watch");
    assert_eq!(tasks_created(&sim), 1);
    op.stop().await;
}
