//! The operator's real `run` path against a real kube-apiserver and the HSS simulator.

mod support;

use std::time::Duration;

use hss_operator::{
    crd::{ClusterScanTask, Phase},
    simulator::{Api as HssApi, FaultKind, FaultPlan, SimConfig, Simulator},
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

/// Every object names exactly one task, every created task is named by exactly one object.
async fn assert_one_task_per_object(api: &Api<ClusterScanTask>, sim: &Simulator, expected: usize) {
    let objects = api.list(&ListParams::default()).await.expect("list").items;
    let mut named: Vec<String> = objects
        .iter()
        .map(|o| {
            o.status
                .as_ref()
                .and_then(|s| s.task_id.clone())
                .unwrap_or_else(|| panic!("{} has no task id", o.name_any()))
        })
        .collect();
    named.sort();
    let mut created: Vec<String> = sim.created_tasks().into_iter().map(|t| t.task_id).collect();
    created.sort();
    assert_eq!(objects.len(), expected);
    assert_eq!(
        created, named,
        "HSS tasks and object task ids must match one to one"
    );
}

#[tokio::test]
async fn commit_then_drop_and_5xx_faults_still_give_exactly_one_task_per_object() {
    let client = admin().await;
    let ns = namespace(&client, "faults").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    // Every kind of unclear or failed CreateTask outcome, some committing a task, some not.
    sim.add_fault(
        HssApi::CreateTask,
        FaultPlan {
            kind: FaultKind::CommitThenDrop,
            probability: 1.0,
            remaining: Some(2),
        },
    );
    sim.add_fault(
        HssApi::CreateTask,
        FaultPlan {
            kind: FaultKind::CommitThenServerError,
            probability: 1.0,
            remaining: Some(2),
        },
    );
    sim.add_fault(
        HssApi::CreateTask,
        FaultPlan {
            kind: FaultKind::ServerError,
            probability: 1.0,
            remaining: Some(2),
        },
    );
    sim.add_fault(
        HssApi::CreateTask,
        FaultPlan {
            kind: FaultKind::Malformed,
            probability: 1.0,
            remaining: Some(1),
        },
    );
    let op = Operator::start(
        client.clone(),
        run_args(&sim.base_url(), &ns, &["--lookup-settle", "2s"]),
        None,
    );
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..6).map(|i| format!("scan-{i}")).collect();
    for name in &names {
        api.create(&PostParams::default(), &cluster_scan(name))
            .await
            .expect("create");
    }
    for name in &names {
        wait_for(&api, name, 120, |o| phase(o) == Some(Phase::Succeeded)).await;
    }
    assert_one_task_per_object(&api, &sim, names.len()).await;
    let adopted = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|o| {
            o.status
                .as_ref()
                .and_then(|s| s.submission.as_ref())
                .and_then(|s| s.resolution.as_deref())
                == Some("Lookup")
        })
        .count();
    assert!(
        adopted >= 1,
        "committed-but-unanswered attempts are adopted by lookup"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_crash_at_each_protocol_step_never_creates_a_second_task() {
    use hss_operator::controller::{FailPoint, Step};
    use std::sync::{Arc, Mutex};
    let client = admin().await;
    let ns = namespace(&client, "crash").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let args = || run_args(&sim.base_url(), &ns, &["--lookup-settle", "2s"]);

    for (i, step) in [Step::AfterRecord, Step::AfterPost, Step::BeforeIdWrite]
        .into_iter()
        .enumerate()
    {
        let name = format!("crash-{i}");
        let (hit_tx, mut hit_rx) = tokio::sync::mpsc::unbounded_channel();
        let armed = Arc::new(Mutex::new(true));
        let target = name.clone();
        let fail_point: FailPoint = Arc::new(move |at: Step, obj: String| {
            let fire = at == step
                && obj == target
                && std::mem::replace(&mut *armed.lock().expect("lock"), false);
            let hit_tx = hit_tx.clone();
            Box::pin(async move {
                if fire {
                    let _ = hit_tx.send(());
                    // The "process" dies here: this future never finishes.
                    futures::future::pending::<()>().await;
                }
            })
        });
        let op = Operator::start(client.clone(), args(), Some(fail_point));
        api.create(&PostParams::default(), &cluster_scan(&name))
            .await
            .expect("create");
        tokio::time::timeout(Duration::from_secs(30), hit_rx.recv())
            .await
            .expect("fail point reached")
            .expect("signal");
        op.kill().await;

        let op = Operator::start(client.clone(), args(), None);
        let done = wait_for(&api, &name, 60, |o| phase(o) == Some(Phase::Succeeded)).await;
        op.stop().await;
        let expected_resolution = if step == Step::AfterRecord {
            "Response"
        } else {
            "Lookup"
        };
        assert_eq!(
            done.status
                .as_ref()
                .and_then(|s| s.submission.as_ref())
                .and_then(|s| s.resolution.as_deref()),
            Some(expected_resolution),
            "crash at {step:?}"
        );
        assert_eq!(
            sim.created_tasks().len(),
            i + 1,
            "crash at {step:?} created a second task"
        );
    }
    assert_one_task_per_object(&api, &sim, 3).await;
}
