//! The operator's real `run` path against a real kube-apiserver and the HSS simulator.

use std::{sync::Arc, time::Duration};

use hss_client::{
    budget::Budget,
    client::{ClientConfig, HssClient},
    credentials::Credentials,
    endpoint::Endpoint,
    model::{ClusterScanInfo, CreateTaskRequest, RangeType, ScanType, TaskType},
};
use hss_operator::{
    controller::fail_points::{FailPoint, Step},
    crd::{ClusterScanTask, Phase},
};
use hss_simulator::{Api as HssApi, FaultKind, FaultPlan, SimConfig, Simulator};
use hss_testkit::cluster::*;
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::wait::{await_condition, conditions},
};

async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// Waits until an Event with `reason` regarding `name` exists (Events are published after the
/// status write they describe).
async fn await_event(client: &kube::Client, ns: &str, name: &str, reason: &str) {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if events_for(client, ns, name)
                .await
                .iter()
                .any(|r| r == reason)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no {reason} Event for {name}: {:?}",
        events_for(client, ns, name).await
    );
}

fn tasks_created(sim: &Simulator) -> usize {
    sim.created_tasks().len()
}

/// The first list streams where the server can (WatchList: 1.32+ over an etcd with watch
/// progress requests; CI's current-Kubernetes run sets HSS_EXPECT_STREAMING=1 when it has one)
/// and is one plain list elsewhere; either way the cache starts with every object.
#[tokio::test]
async fn the_first_list_streams_where_the_server_can_and_lists_elsewhere() {
    use futures::StreamExt;
    use hss_operator::controller_runtime::lists::{self, InitialList};
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let client = admin().await;
    let ns = namespace(&client, "lists").await;
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    for i in 0..3 {
        api.create(&PostParams::default(), &cluster_scan(&format!("scan-{i}")))
            .await
            .expect("create");
    }
    let (wc, streaming) = lists::config(&client, &api, InitialList::Auto).await;
    let expected = std::env::var("HSS_EXPECT_STREAMING").is_ok_and(|v| v == "1");
    assert_eq!(
        streaming, expected,
        "streaming lists: chosen {streaming}, expected {expected} (HSS_EXPECT_STREAMING)"
    );
    let (reader, writer) = reflector::store();
    let stream = watcher(api, wc).default_backoff().reflect(writer);
    let drive = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    tokio::time::timeout(Duration::from_secs(20), reader.wait_until_ready())
        .await
        .expect("first state within 20 s")
        .expect("store ready");
    assert_eq!(
        reader.state().len(),
        3,
        "every object is in the first state"
    );
    drive.abort();
}

/// Events are counted, not written per repeat: 50 occurrences of one reason make one Event,
/// whose series count is written by the next flush; an Event the server lost is created anew.
#[tokio::test]
async fn repeated_events_are_one_event_with_a_count() {
    use hss_operator::controller_runtime::events::{self, Events, REFRESH};
    let client = admin().await;
    let ns = namespace(&client, "events").await;
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let obj = api
        .create(&PostParams::default(), &cluster_scan("scan-e"))
        .await
        .expect("create");
    let recorder = Arc::new(Events::new(client.clone(), "hss-operator".into()));
    let writer = tokio::spawn({
        let recorder = recorder.clone();
        async move { recorder.run().await }
    });
    let waiting = events::normal("Throttled", "Submit", "waiting for the budget");
    for _ in 0..50 {
        recorder.publish(&obj, &waiting).await;
    }
    recorder
        .publish(&obj, &events::normal("Submitted", "Submit", "task t-1"))
        .await;
    let events_api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let throttled = || async {
        events_api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Throttled"))
            .collect::<Vec<_>>()
    };
    await_event(&client, &ns, "scan-e", "Submitted").await;
    await_event(&client, &ns, "scan-e", "Throttled").await;
    assert_eq!(events_for(&client, &ns, "scan-e").await.len(), 2);
    let before = throttled().await;
    assert_eq!(before.len(), 1, "one Event for 50 occurrences");
    assert!(
        before[0].series.is_none(),
        "repeats are not written one by one"
    );
    assert_eq!(
        before[0].reporting_controller.as_deref(),
        Some("hss-operator")
    );

    recorder
        .flush_at(tokio::time::Instant::now() + REFRESH)
        .await;
    let after = throttled().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].series.as_ref().map(|s| s.count), Some(50));
    assert_eq!(after[0].note.as_deref(), Some("waiting for the budget"));

    // The server loses the Event (its TTL): the next series write forgets it, and the next
    // occurrence creates a new one.
    events_api
        .delete(&after[0].name_any(), &DeleteParams::default())
        .await
        .expect("delete event");
    recorder.publish(&obj, &waiting).await;
    recorder
        .flush_at(tokio::time::Instant::now() + REFRESH * 2)
        .await;
    assert!(throttled().await.is_empty());
    recorder.publish(&obj, &waiting).await;
    await_event(&client, &ns, "scan-e", "Throttled").await;
    let again = throttled().await;
    assert_eq!(again.len(), 1, "created anew");
    assert!(again[0].series.is_none());
    writer.abort();
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

    await_event(&client, &ns, "scan-a", "Submitted").await;
    await_event(&client, &ns, "scan-a", "Completed").await;

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
    use hss_operator::controller::fail_points::Step;
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
        let (fail_point, mut hit_rx) = hang_once(&name, step);
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

fn secret(name: &str, data: &[(&str, &str)]) -> k8s_openapi::api::core::v1::Secret {
    let string_data: std::collections::BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    serde_json::from_value(
        serde_json::json!({"metadata": {"name": name}, "stringData": string_data}),
    )
    .expect("secret")
}

#[tokio::test]
async fn bad_secret_bad_spec_and_hss_rejection_get_clear_conditions_and_no_retry_storm() {
    use k8s_openapi::api::core::v1::Secret;
    let client = admin().await;
    let ns = namespace(&client, "bad-input").await;
    let sim = Simulator::start(SimConfig {
        project_ids: vec!["proj".into()],
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let op = Operator::start(
        client.clone(),
        run_args(
            &sim.base_url(),
            &ns,
            &["--allowed-project", "unknown-project"],
        ),
        None,
    );
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);

    // A missing Secret: condition and Event; creating it lets the scan proceed.
    api.create(
        &PostParams::default(),
        &with_secret(cluster_scan("needs-secret"), "hss-creds"),
    )
    .await
    .expect("create");
    wait_for(&api, "needs-secret", 30, |o| {
        condition(o, "CredentialsReady") == Some(("False".into(), "SecretNotFound".into()))
    })
    .await;
    await_event(&client, &ns, "needs-secret", "SecretNotFound").await;
    secrets
        .create(
            &PostParams::default(),
            &secret(
                "hss-creds",
                &[("accessKey", "AKSIM"), ("secretKey", "SKSIM")],
            ),
        )
        .await
        .expect("secret");
    wait_for(&api, "needs-secret", 60, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;

    // A key HSS refuses: one 401, then Failed; never retried (HSS locks AK/SKs). (A wrong
    // secret key for an access key HSS accepted with another is not even sent: key_guard.)
    secrets
        .create(
            &PostParams::default(),
            &secret(
                "wrong-creds",
                &[("accessKey", "AKNOBODY"), ("secretKey", "not-the-key")],
            ),
        )
        .await
        .expect("secret");
    api.create(
        &PostParams::default(),
        &with_secret(cluster_scan("wrong-key"), "wrong-creds"),
    )
    .await
    .expect("create");
    let failed = wait_for(&api, "wrong-key", 30, |o| phase(o) == Some(Phase::Failed)).await;
    assert_eq!(
        condition(&failed, "CredentialsReady").map(|c| c.1),
        Some("AuthenticationFailed".into())
    );
    let last = failed
        .status
        .as_ref()
        .and_then(|s| s.last_error.clone())
        .expect("lastError");
    assert_eq!(last.code.as_deref(), Some("APIGW.0301"));
    assert!(
        last.request_id.is_some(),
        "request id recorded for support cases"
    );
    // A malformed Secret (keys missing) is a condition too, with no HSS call.
    secrets
        .create(
            &PostParams::default(),
            &secret("empty-creds", &[("accessKey", "AKSIM")]),
        )
        .await
        .expect("secret");
    api.create(
        &PostParams::default(),
        &with_secret(cluster_scan("malformed-secret"), "empty-creds"),
    )
    .await
    .expect("create");
    wait_for(&api, "malformed-secret", 30, |o| {
        condition(o, "CredentialsReady") == Some(("False".into(), "SecretInvalid".into()))
    })
    .await;

    // An invalid spec: a server with CEL refuses it at admission (see the admission test); one
    // without (1.20) admits it, and the operator ends it Failed without calling HSS.
    let invalid = scan(
        "bad-spec",
        serde_json::json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "specific_cluster", "clusterIds": []}}),
    );
    match api.create(&PostParams::default(), &invalid).await {
        Err(kube::Error::Api(e)) if e.code == 422 => {
            assert!(
                e.message
                    .contains("clusterIds must list at least one cluster"),
                "{e:?}"
            );
        }
        Err(e) => panic!("create bad-spec: {e}"),
        Ok(_) => {
            let bad = wait_for(&api, "bad-spec", 30, |o| phase(o) == Some(Phase::Failed)).await;
            assert_eq!(
                condition(&bad, "Failed").map(|c| c.1),
                Some("InvalidSpec".into())
            );
            await_event(&client, &ns, "bad-spec", "InvalidSpec").await;
        }
    }

    // HSS rejects the request (a project HSS does not know, allowed by --allowed-project):
    // Failed with the HSS error.
    let mut other = cluster_scan("other-project");
    other.spec.project_id = Some("unknown-project".into());
    api.create(&PostParams::default(), &other)
        .await
        .expect("create");
    let rejected = wait_for(&api, "other-project", 30, |o| {
        phase(o) == Some(Phase::Failed)
    })
    .await;
    assert!(
        rejected
            .status
            .as_ref()
            .and_then(|s| s.last_error.as_ref())
            .and_then(|e| e.code.clone())
            .is_some()
    );

    // No retry storm: the rejected and failed objects stay at one call each while others run.
    let before = sim.calls();
    api.create(&PostParams::default(), &cluster_scan("after"))
        .await
        .expect("create");
    wait_for(&api, "after", 60, |o| phase(o) == Some(Phase::Succeeded)).await;
    let after = sim.calls();
    let unauthorized = |calls: &std::collections::BTreeMap<(String, u16), u64>| {
        calls
            .get(&("CreateTask".to_string(), 401))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        unauthorized(&before),
        1,
        "exactly one signature failure: {before:?}"
    );
    assert_eq!(unauthorized(&after), 1, "and never a second one: {after:?}");
    assert_eq!(
        sim.created_tasks().len(),
        2,
        "only the two valid scans created tasks"
    );
    op.stop().await;
}

/// A followed task the ordinary poll cannot see is asked for by id: pushed past the pages
/// the poll reads, it is still followed to the end; one HSS does not list at all ends the
/// object Failed (TaskNotListed) after --task-lost-after, with an Event, instead of Running
/// for good.
#[tokio::test]
async fn a_task_the_poll_does_not_show_is_looked_up_by_id_and_a_vanished_one_ends_failed() {
    let client = admin().await;
    let ns = namespace(&client, "unseen-tasks").await;
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let sim = Simulator::start(SimConfig {
        finish_after: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    // "ghost" claims a task HSS never had; written before the operator starts.
    api.create(&PostParams::default(), &cluster_scan("ghost"))
        .await
        .expect("create");
    api.patch_status(
        "ghost",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {
            "phase": "Submitted", "taskId": "0000aaaa-0000-0000-0000-00000000dead",
            "submittedAt": jiff::Timestamp::now().to_string(),
        }})),
    )
    .await
    .expect("status");
    let op = Operator::start(
        client.clone(),
        run_args(&sim.base_url(), &ns, &["--task-lost-after", "3s"]),
        None,
    );
    api.create(&PostParams::default(), &cluster_scan("buried"))
        .await
        .expect("create");
    wait_for(&api, "buried", 30, |o| {
        matches!(phase(o), Some(Phase::Submitted | Phase::Running))
    })
    .await;
    // 700 newer tasks of the same type: the poll reads 3 pages (600), newest first.
    let hss = HssClient::new(
        ClientConfig::new(Endpoint::parse(&sim.base_url()).expect("endpoint"), "proj"),
        Credentials::permanent("AKSIM", "SKSIM").expect("credentials"),
        Budget::per_minute(0),
    )
    .expect("client");
    let burying = CreateTaskRequest {
        task_type: TaskType::ClusterScan,
        cluster_scan_info: Some(ClusterScanInfo {
            scan_type_list: vec![ScanType::ClusterVul],
            range_type: RangeType::AllCluster,
            cluster_id_list: None,
        }),
        iac_scan_info: None,
    };
    for _ in 0..700 {
        let permit = hss.acquire(HssApi::CreateTask).await;
        hss.create_task(permit, &burying).await.expect("created");
    }
    wait_for(&api, "buried", 60, |o| phase(o) == Some(Phase::Succeeded)).await;
    let ghost = wait_for(&api, "ghost", 60, |o| phase(o) == Some(Phase::Failed)).await;
    let failed = ghost
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Failed"))
        .expect("Failed condition");
    assert_eq!(failed.reason, "TaskNotListed");
    assert!(
        failed.message.contains("Create a new ClusterScanTask"),
        "{}",
        failed.message
    );
    await_event(&client, &ns, "ghost", "TaskNotListed").await;
    op.stop().await;
    assert_eq!(
        tasks_created(&sim),
        701,
        "no task was created for the ghost"
    );
}

/// An attempt lookups cannot resolve says so after --unresolved-after, and each way out is
/// honoured: resubmit (naming the attempt) submits once more; adopt-task follows the named
/// task, and refuses one another object owns.
#[tokio::test]
async fn an_unresolved_attempt_says_so_and_its_ways_out_are_honoured() {
    let client = admin().await;
    let ns = namespace(&client, "unresolved").await;
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let op = Operator::start(
        client.clone(),
        run_args(
            &sim.base_url(),
            &ns,
            &["--unresolved-after", "2s", "--lookup-settle", "300s"],
        ),
        None,
    );
    let unanswerable = || {
        sim.add_fault(
            HssApi::CreateTask,
            FaultPlan {
                kind: FaultKind::ServerError,
                probability: 1.0,
                remaining: Some(1),
            },
        );
        sim.set_faults(
            HssApi::ListTasks,
            FaultPlan {
                kind: FaultKind::ServerError,
                probability: 1.0,
                remaining: None,
            },
        );
    };
    let annotate = |name: &'static str, key: &'static str, value: String| {
        let api = api.clone();
        async move {
            api.patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    serde_json::json!({"metadata": {"annotations": {key: value}}}),
                ),
            )
            .await
            .expect("annotate");
        }
    };
    let unresolved = |o: &ClusterScanTask| {
        o.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Submitted" && c.reason == "SubmissionUnresolved")
        })
    };

    // Resubmit.
    unanswerable();
    api.create(&PostParams::default(), &cluster_scan("resubmit-me"))
        .await
        .expect("create");
    let stuck = wait_for(&api, "resubmit-me", 30, unresolved).await;
    await_event(&client, &ns, "resubmit-me", "SubmissionUnresolved").await;
    let attempt = stuck
        .status
        .and_then(|s| s.submission)
        .and_then(|s| s.attempt_id)
        .expect("attempt id");
    sim.clear_faults();
    annotate("resubmit-me", "hss.scanops.dev/resubmit", attempt).await;
    let done = wait_for(&api, "resubmit-me", 30, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    await_event(&client, &ns, "resubmit-me", "Resubmitted").await;
    let theirs = done.status.and_then(|s| s.task_id).expect("task id");

    // Adopt: a task made outside the operator, named by annotation.
    let hss = HssClient::new(
        ClientConfig::new(Endpoint::parse(&sim.base_url()).expect("endpoint"), "proj"),
        Credentials::permanent("AKSIM", "SKSIM").expect("credentials"),
        Budget::per_minute(0),
    )
    .expect("client");
    let req = cluster_scan("adopt-me").spec.to_request().expect("request");
    let permit = hss.acquire(HssApi::CreateTask).await;
    let named = hss
        .create_task(permit, &req)
        .await
        .expect("created")
        .task_id;
    unanswerable();
    api.create(&PostParams::default(), &cluster_scan("adopt-me"))
        .await
        .expect("create");
    wait_for(&api, "adopt-me", 30, unresolved).await;
    // Another object's task is refused (by the claims alone: no HSS call needed). ListTasks
    // still fails meanwhile, so no lookup can take `named`, which matches this object's
    // request and was created just before its attempt.
    annotate("adopt-me", "hss.scanops.dev/adopt-task", theirs).await;
    wait_for(&api, "adopt-me", 30, |o| {
        o.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Submitted" && c.reason == "AdoptRefused")
        })
    })
    .await;
    await_event(&client, &ns, "adopt-me", "AdoptRefused").await;
    // Name the right task, and let HSS answer only once the operator has seen the name: a
    // status write after the annotation comes from a reconcile that read it (writes are
    // conditional on the resourceVersion), and every later one takes the named way out.
    let patched = api
        .patch(
            "adopt-me",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                "hss.scanops.dev/adopt-task": named.clone()}}})),
        )
        .await
        .expect("annotate")
        .resource_version();
    wait_for(&api, "adopt-me", 30, |o| o.resource_version() != patched).await;
    sim.clear_faults();
    let adopted = wait_for(&api, "adopt-me", 30, |o| phase(o) == Some(Phase::Succeeded)).await;
    let st = adopted.status.expect("status");
    assert_eq!(st.task_id.as_deref(), Some(named.as_str()));
    assert_eq!(
        st.submission.and_then(|s| s.resolution).as_deref(),
        Some("Manual")
    );
    op.stop().await;
    assert_eq!(
        tasks_created(&sim),
        2,
        "resubmit-me's second attempt and the named task; no other"
    );
}

/// A deletion that begins after the budget was taken but before the attempt record is written
/// sends nothing: the record's resourceVersion precondition fails, and the finalizer lets go.
#[tokio::test]
async fn a_deletion_begun_before_the_attempt_record_sends_nothing() {
    let client = admin().await;
    let ns = namespace(&client, "delete-before-record").await;
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    // At BeforeRecord for "doomed": delete it and wait until the deletion is visible, then go on.
    let deleter = api.clone();
    let fail_point: FailPoint = Arc::new(move |at, name: String| {
        let api = deleter.clone();
        Box::pin(async move {
            if at != Step::BeforeRecord || name != "doomed" {
                return;
            }
            let _ = api.delete(&name, &DeleteParams::default()).await;
            for _ in 0..100 {
                match api.get_opt(&name).await {
                    Ok(Some(o)) if o.metadata.deletion_timestamp.is_none() => {}
                    _ => return,
                }
                tokio::task::yield_now().await;
            }
        })
    });
    let op = Operator::start(
        client.clone(),
        run_args(&sim.base_url(), &ns, &[]),
        Some(fail_point),
    );
    api.create(&PostParams::default(), &cluster_scan("doomed"))
        .await
        .expect("create");
    let gone = await_condition(api.clone(), "doomed", conditions::is_deleted(""));
    tokio::time::timeout(Duration::from_secs(30), gone)
        .await
        .expect("the object is gone within 30 s")
        .expect("watch");
    // Another object still goes through: the operator was not merely stuck.
    api.create(&PostParams::default(), &cluster_scan("alive"))
        .await
        .expect("create");
    wait_for(&api, "alive", 30, |o| phase(o) == Some(Phase::Succeeded)).await;
    op.stop().await;
    assert_eq!(
        sim.call_count(HssApi::CreateTask, None),
        1,
        "only the live object was posted"
    );
}

async fn delete_and_await_gone(api: &Api<ClusterScanTask>, name: &str, secs: u64) {
    let uid = api
        .get(name)
        .await
        .expect("exists")
        .uid()
        .unwrap_or_default();
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::timeout(
        Duration::from_secs(secs),
        kube::runtime::wait::await_condition(
            api.clone(),
            name,
            kube::runtime::wait::conditions::is_deleted(&uid),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} still present {secs}s after deletion (stuck finalizer?)"))
    .expect("watch");
}

#[tokio::test]
async fn deletion_in_every_phase_lets_go_and_submits_nothing_afterwards() {
    let client = admin().await;
    let ns = namespace(&client, "deletion").await;
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    // Tasks stay running, so objects can be deleted mid-flight.
    let sim = Simulator::start(SimConfig {
        finish_after: Duration::from_secs(600),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let op = Operator::start(
        client.clone(),
        run_args(
            &sim.base_url(),
            &ns,
            &["--cleanup-timeout", "5s", "--lookup-settle", "60s"],
        ),
        None,
    );

    // Running: the finalizer goes at once; HSS cannot cancel the task, nothing else happens.
    api.create(&PostParams::default(), &cluster_scan("running"))
        .await
        .expect("create");
    wait_for(&api, "running", 30, |o| {
        matches!(phase(o), Some(Phase::Submitted | Phase::Running))
    })
    .await;
    delete_and_await_gone(&api, "running", 15).await;

    // Submitting with HSS unable to answer lookups: bounded wait, a Warning Event, then gone.
    sim.add_fault(
        HssApi::CreateTask,
        FaultPlan {
            kind: FaultKind::CommitThenDrop,
            probability: 1.0,
            remaining: Some(1),
        },
    );
    sim.add_fault(
        HssApi::ListTasks,
        FaultPlan {
            kind: FaultKind::ServerError,
            probability: 1.0,
            remaining: None,
        },
    );
    api.create(&PostParams::default(), &cluster_scan("submitting"))
        .await
        .expect("create");
    wait_for(&api, "submitting", 30, |o| {
        phase(o) == Some(Phase::Submitting)
            && o.status.as_ref().is_some_and(|s| s.last_error.is_some())
    })
    .await;
    let started = tokio::time::Instant::now();
    delete_and_await_gone(&api, "submitting", 30).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cleanup is bounded by --cleanup-timeout"
    );
    await_event(&client, &ns, "submitting", "DeletedUnresolved").await;
    assert_eq!(
        tasks_created(&sim),
        2,
        "the dropped attempt did create a task; no other was made"
    );
    let posts = sim.call_count(HssApi::CreateTask, None);
    op.stop().await;

    // HSS unreachable altogether: Pending objects are deleted without delay and never posted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dead = format!("http://{closed}");
    let op = Operator::start(client.clone(), run_args(&dead, &ns, &[]), None);
    api.create(&PostParams::default(), &cluster_scan("unreachable"))
        .await
        .expect("create");
    let pending = wait_for(&api, "unreachable", 30, |o| {
        o.status.as_ref().is_some_and(|s| s.last_error.is_some())
    })
    .await;
    assert_eq!(
        phase(&pending),
        Some(Phase::Pending),
        "connection refused means not sent: back to Pending"
    );
    assert_eq!(
        pending
            .status
            .as_ref()
            .and_then(|s| s.last_error.as_ref())
            .map(|e| e.category.clone()),
        Some("connect".into())
    );
    delete_and_await_gone(&api, "unreachable", 15).await;
    op.stop().await;
    assert_eq!(
        sim.call_count(HssApi::CreateTask, None),
        posts,
        "nothing submitted after deletion began"
    );
}

#[tokio::test]
async fn failed_clusters_are_retried_as_allowed_then_reported_partially_failed() {
    let client = admin().await;
    let ns = namespace(&client, "retry").await;
    let sim = Simulator::start(SimConfig {
        fail_clusters: vec!["cce-sim-0002".into()],
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let op = Operator::start(client.clone(), run_args(&sim.base_url(), &ns, &[]), None);
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let mut obj = cluster_scan("flaky");
    obj.spec.retry_failed_clusters = Some(1);
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");

    let done = wait_for(&api, "flaky", 60, |o| {
        phase(o) == Some(Phase::PartiallyFailed)
    })
    .await;
    let status = done.status.clone().expect("status");
    assert_eq!(status.retries, Some(1), "one RetryTask, as allowed");
    assert_eq!(sim.call_count(HssApi::RetryTask, None), 1);
    assert_eq!(
        status.results.first().map(|r| r.id.as_str()),
        Some("cce-sim-0002"),
        "failed clusters first"
    );
    assert!(
        status.results[0]
            .failures
            .iter()
            .all(|f| f.reason.is_some()),
        "HSS's reasons are kept"
    );
    assert!(status.results[1..].iter().all(|r| r.status == "success"));
    assert_eq!(
        condition(&done, "Complete"),
        Some(("True".into(), "PartiallyFailed".into()))
    );
    await_event(&client, &ns, "flaky", "Retried").await;
    assert_eq!(sim.created_tasks().len(), 1, "a retry is not a new task");
    op.stop().await;
}

/// CEL admission needs Kubernetes >= 1.25; the 1.20 server a lone clone builds ignores the
/// rules (they are unit-tested with kube's `cel` feature there). CI runs this against 1.36
/// too (`.ci/run`), where it must not skip: `HSS_REQUIRE_CEL=1` turns a skip into a failure.
#[tokio::test]
async fn admission_rejects_invalid_and_changed_specs_where_the_server_has_cel() {
    let client = admin().await;
    let version = client.apiserver_version().await.expect("version");
    let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
    if version.major != "1" || minor < 25 {
        assert!(
            std::env::var_os("HSS_REQUIRE_CEL").is_none(),
            "HSS_REQUIRE_CEL is set but the API server is {}.{}",
            version.major,
            version.minor
        );
        eprintln!(
            "skipped: API server {}.{} has no CEL validation",
            version.major, version.minor
        );
        return;
    }
    let ns = namespace(&client, "cel").await;
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let invalid = scan(
        "no-ids",
        serde_json::json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "specific_cluster"}}),
    );
    let err = api
        .create(&PostParams::default(), &invalid)
        .await
        .expect_err("CEL refuses it");
    assert!(
        err.to_string()
            .contains("clusterIds must list at least one cluster"),
        "{err}"
    );
    api.create(&PostParams::default(), &cluster_scan("fixed"))
        .await
        .expect("valid");
    let patch = serde_json::json!({"spec": {"clusterScan": {"scanTypes": ["cluster_vul"]}}});
    let err = api
        .patch(
            "fixed",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect_err("spec is immutable");
    assert!(err.to_string().contains("immutable"), "{err}");
}

/// 200 objects through HSS's 5-per-minute limit, time-scaled (both the simulator's window and
/// the operator's budget window are 2 s instead of 60 s; the logic is the same).
#[tokio::test]
async fn two_hundred_objects_under_the_rate_limit_cause_no_429_and_polling_does_not_grow_with_objects()
 {
    let client = admin().await;
    let ns = namespace(&client, "budget").await;
    let window = Duration::from_secs(2);
    let sim = Simulator::start(SimConfig {
        throttle_per_minute: 5,
        throttle_window: window,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let op = Operator::start(
        client.clone(),
        run_args(
            &sim.base_url(),
            &ns,
            &[
                "--budget-per-minute",
                "5",
                "--budget-window",
                "2s",
                "--concurrency",
                "32",
            ],
        ),
        None,
    );
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let started = tokio::time::Instant::now();
    let n = 200;
    for i in 0..n {
        api.create(
            &PostParams::default(),
            &cluster_scan(&format!("bulk-{i:03}")),
        )
        .await
        .expect("create");
    }
    wait_for(&api, "bulk-000", 60, |o| {
        condition(o, "Throttled").is_some() || phase(o) == Some(Phase::Succeeded)
    })
    .await;
    let throttled_seen = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .any(|o| condition(o, "Throttled").map(|c| c.0) == Some("True".into()));
    assert!(
        throttled_seen,
        "objects waiting for budget show Throttled=True"
    );
    for i in 0..n {
        wait_for(&api, &format!("bulk-{i:03}"), 300, |o| {
            phase(o) == Some(Phase::Succeeded)
        })
        .await;
    }
    let elapsed = started.elapsed();
    assert_one_task_per_object(&api, &sim, n).await;
    let throttled: u64 = sim
        .calls()
        .iter()
        .filter(|((_, status), _)| *status == 429)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        throttled,
        0,
        "the operator caused no 429: {:?}",
        sim.calls()
    );
    // Polling is one ListTasks per interval (1 s) whatever the number of objects: bounded by
    // elapsed time, not by 200 objects times ticks.
    let list_calls = sim.call_count(HssApi::ListTasks, None);
    let ticks = elapsed.as_secs() + 2;
    assert!(
        list_calls <= ticks * 2,
        "{list_calls} ListTasks calls in {ticks} s for {n} objects"
    );
    // 200 creates at 5 per 2 s cannot be faster than 80 s: the budget was honoured.
    assert!(
        elapsed >= Duration::from_secs(78),
        "finished in {elapsed:?}"
    );
    eprintln!(
        "200 objects: {elapsed:?}, {list_calls} ListTasks calls, calls {:?}",
        sim.calls()
    );
    op.stop().await;
}
