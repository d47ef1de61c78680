//! A deleted object's HSS task is never adopted by another object's unresolved attempt, across
//! a restart of the operator: the claim outlives the process in the claims ConfigMap.

use std::time::Duration;

use hss_operator::{
    controller::fail_points::Step,
    crd::{ClusterScanTask, Phase},
};
use hss_simulator::{SimConfig, Simulator};
use hss_testkit::cluster::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
    runtime::wait::{await_condition, conditions},
};

#[tokio::test]
async fn a_deleted_objects_task_is_never_adopted_by_another_object_after_a_restart() {
    let client = admin().await;
    let ns = namespace(&client, "claims").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let claims = format!("{ns}/hss-operator-claims");
    let args = || {
        run_args(
            &sim.base_url(),
            &ns,
            &["--lookup-settle", "2s", "--claims-configmap", &claims],
        )
    };

    // B records its attempt, and the process "dies" before the POST: B stays Submitting.
    let (fail_point, mut hit) = hang_once("b", Step::AfterRecord);
    let op = Operator::start(client.clone(), args(), Some(fail_point));
    api.create(&PostParams::default(), &cluster_scan("b"))
        .await
        .expect("create b");
    tokio::time::timeout(Duration::from_secs(30), hit.recv())
        .await
        .expect("b's attempt recorded")
        .expect("signal");

    // A, identical and inside B's lookup window, gets its task, then is deleted.
    api.create(&PostParams::default(), &cluster_scan("a"))
        .await
        .expect("create a");
    let a = wait_for(&api, "a", 30, |o| {
        o.status.as_ref().is_some_and(|s| s.task_id.is_some())
    })
    .await;
    let task_a = a.status.and_then(|s| s.task_id).expect("a's task id");
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            api.clone(),
            "a",
            conditions::is_deleted(&a.metadata.uid.clone().unwrap_or_default()),
        ),
    )
    .await
    .expect("a's cleanup finished")
    .expect("watch");
    op.kill().await;

    let stored = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("hss-operator-claims")
        .await
        .expect("the claims ConfigMap exists");
    assert!(
        stored
            .data
            .unwrap_or_default()
            .keys()
            .any(|k| k.ends_with(&format!(".{task_a}"))),
        "a's task is claimed in the ConfigMap"
    );

    // A fresh process resolves B: the only matching task is A's, which it must not take.
    let op = Operator::start(client.clone(), args(), None);
    let b = wait_for(&api, "b", 60, |o| phase(o) == Some(Phase::Succeeded)).await;
    op.stop().await;
    let st = b.status.expect("status");
    assert_ne!(
        st.task_id.as_deref(),
        Some(task_a.as_str()),
        "b adopted the deleted object's task"
    );
    assert_eq!(
        st.submission.and_then(|s| s.resolution).as_deref(),
        Some("Response"),
        "b's lookup found nothing of its own and b was submitted again"
    );
    assert_eq!(sim.created_tasks().len(), 2, "a's task and b's own");
}
