//! Waiting for HSS budget holds no reconcile slot: while many objects wait for their results
//! and findings reads, other objects are still submitted, written and deleted at once.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::runtime::WatchStreamExt;

use hss_operator::crd::{ClusterScanTask, Phase};
use hss_simulator::{SimConfig, Simulator};
use hss_testkit::cluster::*;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
    runtime::wait::{await_condition, conditions},
};

/// More objects than reconcile slots (`--concurrency 4`), each waiting for a read token.
const WAITING: usize = 12;

#[tokio::test]
async fn deletions_and_status_writes_go_on_while_many_objects_wait_for_read_budget() {
    let client = admin().await;
    let ns = namespace(&client, "slots").await;
    let finish_after = Duration::from_secs(6);
    let sim = Simulator::start(SimConfig {
        finish_after,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let claims = format!("{ns}/hss-operator-claims");
    let args = |extra: &[&str]| {
        let mut all = vec!["--claims-configmap", claims.as_str(), "--concurrency", "4"];
        all.extend_from_slice(extra);
        run_args(&sim.base_url(), &ns, &all)
    };

    // An operator without a budget submits them all, and stops before their tasks finish.
    let first = Operator::start(client.clone(), args(&[]), None);
    let names: Vec<String> = (0..WAITING).map(|i| format!("wait-{i:02}")).collect();
    for name in &names {
        api.create(&PostParams::default(), &cluster_scan(name))
            .await
            .expect("create");
    }
    for name in &names {
        wait_for(&api, name, 60, |o| {
            o.status.as_ref().is_some_and(|s| s.task_id.is_some())
        })
        .await;
    }
    first.stop().await;
    // The simulator finishes each task `finish_after` after creating it: once the last one
    // is finished, the next operator's first poll sees every one finished.
    let last = sim
        .created_tasks()
        .iter()
        .map(|t| t.created_at_ms)
        .max()
        .expect("tasks");
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let until_finished =
        u64::try_from(last - now_ms).unwrap_or(0) + finish_after.as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(until_finished + 500)).await;

    // One call a minute per API: the first results read goes out, every other waits minutes.
    let op = Operator::start(client.clone(), args(&["--budget-per-minute", "1"]), None);
    // Once one object has its results (the one token), the others are waiting for theirs.
    let mut first_done = std::pin::pin!(
        kube::runtime::watcher(api.clone(), Default::default())
            .applied_objects()
            .try_filter(|o| std::future::ready(phase(o) == Some(Phase::Succeeded)))
    );
    tokio::time::timeout(Duration::from_secs(60), first_done.next())
        .await
        .expect("one object's results were read")
        .expect("watch")
        .expect("an object");
    let mut waiting = 0;
    for name in &names {
        let o = api.get(name).await.expect("get");
        if matches!(phase(&o), Some(Phase::Submitted | Phase::Running)) {
            waiting += 1;
        }
    }

    // A new object is submitted (its status written twice) and an unrelated one deleted,
    // each well within one budget period: neither waits behind the reads.
    let started = tokio::time::Instant::now();
    api.create(&PostParams::default(), &cluster_scan("other"))
        .await
        .expect("create other");
    wait_for(&api, "other", 20, |o| {
        o.status.as_ref().is_some_and(|s| s.task_id.is_some())
    })
    .await;
    let submitted_in = started.elapsed();
    let gone = api.get(&names[WAITING - 1]).await.expect("get");
    let uid = gone.metadata.uid.clone().expect("uid");
    let started = tokio::time::Instant::now();
    api.delete(&names[WAITING - 1], &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::timeout(
        Duration::from_secs(20),
        await_condition(
            api.clone(),
            &names[WAITING - 1],
            conditions::is_deleted(&uid),
        ),
    )
    .await
    .expect("a waiting object's deletion completes while the others wait")
    .expect("watch");
    let deleted_in = started.elapsed();

    // Still waiting now: the reads were really queued while the above went through.
    let mut still = 0;
    for name in &names[..WAITING - 1] {
        let o = api.get(name).await.expect("get");
        if matches!(phase(&o), Some(Phase::Submitted | Phase::Running)) {
            still += 1;
        }
    }
    op.stop().await;
    assert!(
        waiting >= WAITING - 2 && still >= WAITING - 4,
        "most objects were waiting for their reads ({waiting} at the start, {still} at the end)"
    );
    assert!(
        submitted_in < Duration::from_secs(20) && deleted_in < Duration::from_secs(20),
        "submitted in {submitted_in:?}, deleted in {deleted_in:?}"
    );
}
