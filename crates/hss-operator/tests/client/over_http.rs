//! Our HSS client over real loopback HTTP against the in-process simulator: every API, the
//! outcome class of every kind of failure, the error details, IAM tokens, the rate budget, and
//! the one-shot submission protocol (`submit::create_once`) on top.

use std::{collections::HashSet, time::Duration};

use hss_client::{
    Api, Error, Outcome,
    budget::Budget,
    client::{ClientConfig, HssClient},
    credentials::{self, Credentials, IamTokenProvider},
    endpoint::Endpoint,
    model::*,
    resolve,
    transport::http_client,
};
use hss_operator::submit;
use hss_simulator::{FaultKind, FaultPlan, IamUser, Secret, SimConfig, Simulator};
use tokio::time::Instant;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const AK: &str = "AKSIM";
const SK: &str = "SKSIM";
/// Generous for loopback, short enough that a hung call fails the test quickly.
const TIMEOUT: Duration = Duration::from_secs(5);

async fn start(config: SimConfig) -> Simulator {
    Simulator::start(config).await.expect("simulator starts")
}

fn config_for(base_url: &str, timeout: Duration) -> ClientConfig {
    let mut config = ClientConfig::new(Endpoint::parse(base_url).expect("endpoint"), PROJECT);
    config.timeout = timeout;
    config.connect_timeout = Duration::from_secs(2);
    config
}

fn client_with(
    base_url: &str,
    (ak, sk): (&str, &str),
    budget: Budget,
    timeout: Duration,
) -> HssClient {
    HssClient::new(
        config_for(base_url, timeout),
        Credentials::permanent(ak, sk).expect("credentials"),
        budget,
    )
    .expect("client")
}

/// The default client: the simulator's credential, no client-side limiting.
fn client(sim: &Simulator) -> HssClient {
    client_with(&sim.base_url(), (AK, SK), Budget::per_minute(0), TIMEOUT)
}

fn all_clusters() -> CreateTaskRequest {
    CreateTaskRequest {
        task_type: TaskType::ClusterScan,
        cluster_scan_info: Some(ClusterScanInfo {
            scan_type_list: vec![ScanType::ClusterVul, ScanType::Benchmark],
            range_type: RangeType::AllCluster,
            cluster_id_list: None,
        }),
        iac_scan_info: None,
    }
}

fn specific_clusters(ids: &[&str]) -> CreateTaskRequest {
    CreateTaskRequest {
        task_type: TaskType::ClusterScan,
        cluster_scan_info: Some(ClusterScanInfo {
            scan_type_list: vec![ScanType::RiskAssessment],
            range_type: RangeType::SpecificCluster,
            cluster_id_list: Some(ids.iter().map(|id| id.to_string()).collect()),
        }),
        iac_scan_info: None,
    }
}

fn iac_files() -> CreateTaskRequest {
    CreateTaskRequest {
        task_type: TaskType::IacScan,
        cluster_scan_info: None,
        iac_scan_info: Some(IacScanInfo {
            file_type: FileType::K8sYaml,
            file_id_list: vec!["file-0001".into(), "file-0002".into()],
        }),
    }
}

/// One CreateTask call, drawing its permit first as the submission protocol does.
async fn create(client: &HssClient, req: &CreateTaskRequest) -> Result<CreateTaskResponse, Error> {
    let permit = client.acquire(Api::CreateTask).await;
    client.create_task(permit, req).await
}

fn resources_of(task_type: TaskType) -> ListTaskResourcesRequest {
    ListTaskResourcesRequest {
        task_type,
        cluster_scan_info: None,
        iac_scan_info: None,
    }
}

/// Reads a task's resources until `done` holds (the simulator finishes scans on its own clock).
async fn resources_when(
    client: &HssClient,
    task_id: &str,
    done: impl Fn(&ListTaskResourcesResponse) -> bool,
) -> ListTaskResourcesResponse {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = client
            .list_task_resources(task_id, &resources_of(TaskType::ClusterScan), 0, 200)
            .await
            .expect("ListTaskResources");
        if done(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "condition on the resources of {task_id} not reached in 5 s: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn status_of(page: &ListTaskResourcesResponse, cluster_id: &str) -> ScanStatus {
    page.cluster_scan_data_list
        .iter()
        .find(|r| r.cluster_id == cluster_id)
        .map(|r| r.scan_status)
        .unwrap_or_else(|| panic!("cluster {cluster_id} not in {page:?}"))
}

/// A loopback address nothing listens on: bound, read, closed.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

fn iam_sim_config() -> SimConfig {
    SimConfig {
        iam_users: vec![IamUser {
            name: "alice".into(),
            password: Secret::new("alice-password"),
        }],
        ..SimConfig::default()
    }
}

fn iam_client(sim: &Simulator, password: &str) -> HssClient {
    let config = config_for(&sim.base_url(), TIMEOUT);
    let http = http_client(&config).expect("http client");
    let provider = IamTokenProvider::new(
        http.clone(),
        Endpoint::parse(&sim.base_url()).expect("endpoint"),
        "alice",
        "alice-domain",
        password,
        PROJECT,
    )
    .expect("provider");
    HssClient::with_http(
        http,
        config,
        Credentials::iam(provider),
        Budget::per_minute(0),
    )
}

// ---------------------------------------------------------------- every API succeeds

#[tokio::test]
async fn create_task_creates_cluster_and_iac_scans_with_the_bodies_sent() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);

    let cluster = create(&client, &all_clusters())
        .await
        .expect("cluster scan");
    let iac = create(&client, &iac_files()).await.expect("iac scan");

    let created = sim.created_tasks();
    assert_eq!(created.len(), 2);
    assert_eq!(created[0].task_id, cluster.task_id);
    assert_eq!(created[0].task_type, TaskType::ClusterScan);
    assert_eq!(created[0].project_id, PROJECT);
    assert_eq!(created[0].user, AK);
    assert_eq!(
        created[0].body,
        serde_json::json!({"task_type": "cluster_scan", "cluster_scan_info": {
            "scan_type_list": ["cluster_vul", "benchmark"], "range_type": "all_cluster"}})
    );
    assert_eq!(created[1].task_id, iac.task_id);
    assert_eq!(created[1].task_type, TaskType::IacScan);
    assert_eq!(
        created[1].body,
        serde_json::json!({"task_type": "iac_scan", "iac_scan_info": {
            "file_type": "k8s_yaml", "file_id_list": ["file-0001", "file-0002"]}})
    );
    assert_eq!(sim.call_count(Api::CreateTask, Some(200)), 2);
}

#[tokio::test]
async fn list_tasks_shows_a_created_task_with_its_type_trigger_and_scan_types() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    let before = jiff::Timestamp::now().as_millisecond();
    let created = create(&client, &all_clusters()).await.expect("create");
    create(&client, &iac_files()).await.expect("create iac");

    let page = client
        .list_tasks(&ListTasksRequest::for_type(TaskType::ClusterScan), 0, 10)
        .await
        .expect("ListTasks");

    assert_eq!(page.total_num, 1, "the iac task is another type: {page:?}");
    let task = &page.data_list[0];
    assert_eq!(task.task_id, created.task_id);
    assert_eq!(task.task_type, TaskType::ClusterScan);
    assert_eq!(task.trigger_type, Some(TriggerType::Manual));
    assert_ne!(task.task_status, TaskStatus::Unknown);
    let start_time = task.start_time.expect("start_time");
    assert!(start_time >= before - 1000, "{start_time} vs {before}");
    let info = task.cluster_scan_info.as_ref().expect("cluster_scan_info");
    let mut scans = info.scan_type_list.clone();
    scans.sort();
    assert_eq!(scans, vec![ScanType::ClusterVul, ScanType::Benchmark]);
}

#[tokio::test]
async fn list_all_tasks_pages_through_450_tasks_in_three_calls() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    for _ in 0..450 {
        create(&client, &all_clusters()).await.expect("create");
    }

    let (tasks, complete) = client
        .list_all_tasks(&ListTasksRequest::for_type(TaskType::ClusterScan), 10)
        .await
        .expect("list_all_tasks");

    assert!(complete);
    assert_eq!(tasks.len(), 450);
    let mut listed: Vec<String> = tasks.into_iter().map(|t| t.task_id).collect();
    let mut created: Vec<String> = sim.created_tasks().into_iter().map(|t| t.task_id).collect();
    listed.sort();
    created.sort();
    assert_eq!(listed, created, "every task exactly once");
    assert_eq!(
        sim.call_count(Api::ListTasks, None),
        3,
        "pages of 200, 200 and 50"
    );
}

#[tokio::test]
async fn list_task_resources_shows_every_cluster_of_an_all_cluster_scan() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    let task = create(&client, &all_clusters()).await.expect("create");

    let page = client
        .list_task_resources(&task.task_id, &resources_of(TaskType::ClusterScan), 0, 10)
        .await
        .expect("ListTaskResources");

    assert_eq!(page.total_num, 3);
    let mut ids: Vec<&str> = page
        .cluster_scan_data_list
        .iter()
        .map(|r| r.cluster_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["cce-sim-0001", "cce-sim-0002", "cce-sim-0003"]);
    let prod = page
        .cluster_scan_data_list
        .iter()
        .find(|r| r.cluster_id == "cce-sim-0001")
        .expect("prod row");
    assert_eq!(prod.cluster_name.as_deref(), Some("sim-prod"));
    assert!(page.iac_scan_data_list.is_empty());
}

#[tokio::test]
async fn retry_task_reruns_a_failed_cluster_which_then_succeeds() {
    let sim = start(SimConfig {
        finish_after: Duration::from_millis(200),
        fail_clusters: vec!["cce-flaky".into()],
        ..SimConfig::default()
    })
    .await;
    let client = client(&sim);
    let task = create(&client, &specific_clusters(&["cce-sim-0001", "cce-flaky"]))
        .await
        .expect("create");
    let failed = resources_when(&client, &task.task_id, |p| {
        p.cluster_scan_data_list
            .iter()
            .all(|r| r.scan_status != ScanStatus::Scanning)
    })
    .await;
    assert_eq!(status_of(&failed, "cce-flaky"), ScanStatus::Failed);
    assert_eq!(status_of(&failed, "cce-sim-0001"), ScanStatus::Success);
    sim.unfail_cluster("cce-flaky");

    client
        .retry_task(
            &task.task_id,
            &RetryTaskRequest {
                task_type: TaskType::ClusterScan,
                cluster_scan_info: RetryClusterScanInfo {
                    range_type: RetryRangeType::AllFailedCluster,
                    cluster_info_list: None,
                },
            },
        )
        .await
        .expect("RetryTask");

    assert_eq!(sim.call_count(Api::RetryTask, Some(200)), 1);
    let rerun = resources_when(&client, &task.task_id, |p| {
        status_of(p, "cce-flaky") == ScanStatus::Success
    })
    .await;
    assert_eq!(status_of(&rerun, "cce-sim-0001"), ScanStatus::Success);
}

#[tokio::test]
async fn show_task_statistics_counts_the_tasks_of_one_type() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    create(&client, &all_clusters()).await.expect("create");
    create(&client, &all_clusters()).await.expect("create");
    create(&client, &iac_files()).await.expect("create iac");

    let cluster = client
        .show_task_statistics(TaskType::ClusterScan)
        .await
        .expect("statistics");
    let iac = client
        .show_task_statistics(TaskType::IacScan)
        .await
        .expect("statistics");

    assert_eq!(cluster.total_num, 2);
    assert_eq!(iac.total_num, 1);
    let last = sim.created_tasks()[1].created_at_ms;
    assert_eq!(cluster.last_task_start_time, Some(last));
}

#[tokio::test]
async fn list_clusters_lists_the_known_clusters_and_filters_by_name() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);

    let all = client.list_clusters(0, 200, None).await.expect("clusters");
    let prod = client
        .list_clusters(0, 10, Some("prod"))
        .await
        .expect("clusters by name");

    assert_eq!(all.total_num, Some(3));
    let ids: Vec<&str> = all
        .cluster_info_list
        .iter()
        .map(|c| c.cluster_id.as_str())
        .collect();
    assert_eq!(ids, ["cce-sim-0001", "cce-sim-0002", "cce-sim-0003"]);
    assert_eq!(prod.cluster_info_list.len(), 1);
    assert_eq!(prod.cluster_info_list[0].cluster_id, "cce-sim-0001");
    assert_eq!(
        prod.cluster_info_list[0].status.as_deref(),
        Some("Available")
    );
}

// ---------------------------------------------------------------- rejected

#[tokio::test]
async fn an_invalid_create_request_is_refused_by_validate_before_any_call() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    let mut req = specific_clusters(&["c-1"]);
    if let Some(info) = req.cluster_scan_info.as_mut() {
        info.cluster_id_list = Some(vec![]);
    }

    let err = create(&client, &req).await.expect_err("invalid body");

    assert!(
        matches!(
            err,
            Error::InvalidRequest {
                api: Api::CreateTask,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.outcome(), Outcome::Rejected);
    assert_eq!(err.category(), "invalid_request");
    assert!(err.to_string().contains("cluster_id_list"), "{err}");
    assert_eq!(sim.call_count(Api::CreateTask, None), 0, "nothing was sent");
}

#[tokio::test]
async fn a_body_hss_refuses_is_rejected_with_400_hss_0001_and_every_error_detail() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    // ListTasks has no client-side validation; HSS only sorts by start_time.
    let mut bad = ListTasksRequest::for_type(TaskType::ClusterScan);
    bad.sort_key = Some("task_name".into());

    let err = client
        .list_tasks(&bad, 0, 10)
        .await
        .expect_err("bad sort key");

    assert!(matches!(err, Error::Service { .. }), "{err:?}");
    assert_eq!(err.outcome(), Outcome::Rejected);
    assert_eq!(err.category(), "invalid_request");
    assert_eq!(err.api(), Some(Api::ListTasks));
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.error_code(), Some("HSS.0001"));
    assert!(
        err.error_msg().is_some_and(|m| m.contains("sort_key")),
        "{err:?}"
    );
    let request_id = err.request_id().expect("X-Request-Id is kept");
    assert_eq!(request_id.len(), 32, "{request_id}");
    assert_eq!(err.retry_after(), None);
    assert_eq!(sim.call_count(Api::ListTasks, Some(400)), 1);
}

#[tokio::test]
async fn an_unknown_task_is_rejected_as_not_found() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);

    let err = client
        .list_task_resources("no-such-task", &resources_of(TaskType::ClusterScan), 0, 10)
        .await
        .expect_err("unknown task");

    assert_eq!(err.status(), Some(400));
    assert_eq!(err.error_code(), Some("HSS.0011"));
    assert_eq!(err.category(), "not_found");
    assert_eq!(err.outcome(), Outcome::Rejected);
    assert!(err.request_id().is_some());
}

#[tokio::test]
async fn a_wrong_secret_key_is_a_signature_failure_that_is_never_retried() {
    let sim = start(SimConfig::default()).await;
    let client = client_with(
        &sim.base_url(),
        (AK, "not-the-secret"),
        Budget::per_minute(0),
        TIMEOUT,
    );

    let err = create(&client, &all_clusters())
        .await
        .expect_err("bad signature");

    assert_eq!(err.status(), Some(401));
    assert_eq!(err.error_code(), Some("APIGW.0301"));
    assert!(err.is_signature_failure());
    assert_eq!(err.outcome(), Outcome::Rejected);
    assert_eq!(err.category(), "unauthenticated");
    assert!(
        err.error_msg()
            .is_some_and(|m| m.contains("verify aksk signature fail")),
        "{err:?}"
    );
    assert!(err.request_id().is_some());
    assert!(!format!("{err:?}").contains("not-the-secret"));
    assert_eq!(
        sim.call_count(Api::CreateTask, None),
        1,
        "the client did not retry"
    );

    // The submission protocol does not try again either: HSS locks an AK/SK after repeated
    // signature failures, so the key guard stops a second attempt before it is signed.
    // (Nothing is sent however often it is tried; one attempt keeps the test short.)
    let outcome = submit::create_once(&client, &all_clusters(), 1).await;
    assert!(
        matches!(&outcome, Err(submit::Error::Unavailable(e)) if e.category() == "key_guarded"),
        "{outcome:?}"
    );
    assert_eq!(
        sim.call_count(Api::CreateTask, Some(401)),
        1,
        "the second attempt was never sent"
    );
    assert_eq!(sim.call_count(Api::CreateTask, None), 1);
    assert!(sim.created_tasks().is_empty());
}

// ---------------------------------------------------------------- retryable

#[tokio::test]
async fn a_throttled_create_is_retryable_creates_nothing_and_blocks_the_budget() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    sim.set_faults(Api::CreateTask, FaultPlan::times(FaultKind::Throttle, 1));

    let err = create(&client, &all_clusters())
        .await
        .expect_err("throttled");

    assert_eq!(err.status(), Some(429));
    assert_eq!(err.error_code(), Some("APIGW.0308"));
    assert_eq!(err.outcome(), Outcome::Retryable);
    assert_eq!(err.category(), "throttled");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert!(err.request_id().is_some());
    assert!(sim.created_tasks().is_empty(), "a 429 executes nothing");
    let wait = client
        .try_acquire(Api::CreateTask)
        .expect_err("the budget honours the 429");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert!(
        client.try_acquire(Api::ListTasks).is_ok(),
        "other APIs have their own bucket"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_connect_error() {
    let url = closed_port_url();
    let client = client_with(&url, (AK, SK), Budget::per_minute(0), TIMEOUT);

    let err = create(&client, &all_clusters())
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(
            err,
            Error::Connect {
                api: Api::CreateTask,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.outcome(), Outcome::Retryable);
    assert_eq!(err.category(), "connect");
    assert_eq!(err.status(), None);

    let err = client
        .list_clusters(0, 10, None)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");

    // Proven not created, so the protocol may try again; with one attempt it gives up.
    let outcome = submit::create_once(&client, &all_clusters(), 1).await;
    assert!(
        matches!(outcome, Err(submit::Error::Unavailable(_))),
        "{outcome:?}"
    );
}

// ---------------------------------------------------------------- ambiguous

#[tokio::test]
async fn a_server_error_is_ambiguous_whether_or_not_the_task_was_committed() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);

    // (fault, tasks committed by it, reason)
    let cases = [
        (FaultKind::ServerError, 0, "500 before executing"),
        (FaultKind::CommitThenServerError, 1, "500 after committing"),
    ];
    for (fault, committed, reason) in cases {
        let before = sim.created_tasks().len();
        sim.set_faults(Api::CreateTask, FaultPlan::times(fault, 1));

        let err = create(&client, &all_clusters()).await.expect_err(reason);

        assert!(
            matches!(err, Error::Service { status: 500, .. }),
            "{reason}: {err:?}"
        );
        assert_eq!(err.outcome(), Outcome::Ambiguous, "{reason}");
        assert_eq!(err.category(), "server_error", "{reason}");
        assert_eq!(err.error_code(), Some("HSS.0500"), "{reason}");
        assert!(err.request_id().is_some(), "{reason}");
        assert_eq!(sim.created_tasks().len() - before, committed, "{reason}");
    }
}

#[tokio::test]
async fn a_malformed_200_is_an_ambiguous_decode_error_with_the_task_committed() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    sim.set_faults(Api::CreateTask, FaultPlan::times(FaultKind::Malformed, 1));

    let err = create(&client, &all_clusters())
        .await
        .expect_err("unparsable body");

    assert!(
        matches!(
            err,
            Error::Decode {
                api: Api::CreateTask,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.status(), Some(200));
    assert_eq!(err.outcome(), Outcome::Ambiguous);
    assert_eq!(err.category(), "bad_response");
    assert_eq!(
        sim.created_tasks().len(),
        1,
        "committed before the bad answer"
    );
}

#[tokio::test]
async fn a_decode_error_carries_the_request_id_of_the_answer() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    sim.set_faults(Api::CreateTask, FaultPlan::times(FaultKind::Malformed, 1));

    let err = create(&client, &all_clusters())
        .await
        .expect_err("unparsable body");

    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.request_id().is_some(), "{err:?}");
}

#[tokio::test]
async fn latency_beyond_the_client_timeout_is_an_ambiguous_timeout_with_the_task_committed() {
    let sim = start(SimConfig::default()).await;
    let client = client_with(
        &sim.base_url(),
        (AK, SK),
        Budget::per_minute(0),
        Duration::from_secs(1),
    );
    sim.set_faults(
        Api::CreateTask,
        FaultPlan::times(FaultKind::Latency(Duration::from_secs(4)), 1),
    );
    let started = Instant::now();

    let err = create(&client, &all_clusters())
        .await
        .expect_err("too slow");

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gave up at the client timeout, not the server's delay: {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            Error::Timeout {
                api: Api::CreateTask,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.outcome(), Outcome::Ambiguous);
    assert_eq!(err.category(), "timeout");
    assert_eq!(sim.created_tasks().len(), 1, "committed before the delay");
}

#[tokio::test]
async fn a_dropped_connection_after_commit_is_an_ambiguous_transport_error() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    sim.set_faults(
        Api::CreateTask,
        FaultPlan::times(FaultKind::CommitThenDrop, 1),
    );

    let err = create(&client, &all_clusters())
        .await
        .expect_err("connection closed");

    assert!(
        matches!(
            err,
            Error::Transport {
                api: Api::CreateTask,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.outcome(), Outcome::Ambiguous);
    assert_eq!(err.category(), "transport");
    assert_eq!(sim.created_tasks().len(), 1, "committed before the drop");
    assert_eq!(sim.call_count(Api::CreateTask, Some(0)), 1);
}

// ---------------------------------------------------------------- submission protocol

#[tokio::test]
async fn commit_then_drop_is_resolved_by_lookup_with_exactly_one_task_created() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    sim.set_faults(
        Api::CreateTask,
        FaultPlan::times(FaultKind::CommitThenDrop, 1),
    );

    let report = submit::create_once(&client, &all_clusters(), 5)
        .await
        .expect("resolved");

    let created = sim.created_tasks();
    assert_eq!(created.len(), 1, "no second POST");
    assert_eq!(report.resolution, "lookup");
    assert_eq!(report.task_id, created[0].task_id);
    assert_eq!(report.attempts, 1);
    assert_eq!(sim.call_count(Api::CreateTask, None), 1);
    assert!(sim.call_count(Api::ListTasks, Some(200)) >= 1);
}

/// The lookup window starts where HSS's clock (measured from its answers' `Date`) read the
/// attempt's start: an identical task created seconds before the attempt is not adopted,
/// where the unmeasured window (two minutes of skew) would have taken it.
#[tokio::test]
async fn a_task_created_just_before_an_attempt_is_never_adopted_by_it() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    let before = create(&client, &all_clusters()).await.expect("created");
    let now = jiff::Timestamp::now().as_millisecond();
    let bounds = client
        .clock_offset()
        .bounds(now)
        .expect("measured from the answer's Date");
    assert!(
        bounds.low_ms <= 0 && 0 <= bounds.high_ms,
        "{bounds:?}: same machine, same clock"
    );
    // Our attempt began 5 s after that task was created.
    let started = now + 5_000;
    let found = resolve::lookup(
        &client,
        &all_clusters(),
        started,
        &HashSet::new(),
        Duration::ZERO,
    )
    .await
    .expect("lookup");
    assert_eq!(
        found,
        resolve::Lookup::NotFound,
        "{} is older than the attempt",
        before.task_id
    );
    // Unmeasured (a fresh client), the window reaches two minutes back and takes it.
    let fresh = client_with(&sim.base_url(), (AK, SK), Budget::per_minute(0), TIMEOUT);
    match resolve::lookup(
        &fresh,
        &all_clusters(),
        started,
        &HashSet::new(),
        Duration::ZERO,
    )
    .await
    .expect("lookup")
    {
        resolve::Lookup::Candidates(c) => assert_eq!(c[0].task_id, before.task_id),
        other => panic!("the unmeasured window reaches the older task: {other:?}"),
    }
}

/// An iac_scan lookup adopts only a task over the same files: a task of the same file type
/// over other files, created in the same window, is someone else's.
#[tokio::test]
async fn an_iac_lookup_adopts_only_a_task_over_the_same_files() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    let started = jiff::Timestamp::now().as_millisecond();
    let mut other_files = iac_files();
    other_files
        .iac_scan_info
        .as_mut()
        .expect("iac")
        .file_id_list = vec!["file-0001".into(), "file-0003".into()];
    let theirs = create(&client, &other_files).await.expect("created");
    let found = resolve::lookup(
        &client,
        &iac_files(),
        started,
        &HashSet::new(),
        Duration::ZERO,
    )
    .await
    .expect("lookup");
    assert_eq!(
        found,
        resolve::Lookup::NotFound,
        "{} is not ours",
        theirs.task_id
    );

    let ours = create(&client, &iac_files()).await.expect("created");
    match resolve::lookup(
        &client,
        &iac_files(),
        started,
        &HashSet::new(),
        Duration::ZERO,
    )
    .await
    .expect("lookup")
    {
        resolve::Lookup::Candidates(c) => {
            let ids: Vec<&str> = c.iter().map(|t| t.task_id.as_str()).collect();
            assert_eq!(ids, [ours.task_id.as_str()]);
        }
        other => panic!("expected our task, got {other:?}"),
    }
}

/// An all-cluster lookup adopts only a task over every cluster HSS knows: a specific-cluster
/// task with the same scan types, created in the same window (another operator's, sharing the
/// key), is not ours. The chaos test's second operator adopted one before this check.
#[tokio::test]
async fn an_all_cluster_lookup_does_not_adopt_a_specific_cluster_task_with_the_same_scan_types() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    let started = jiff::Timestamp::now().as_millisecond();
    let mut one_cluster = all_clusters();
    let info = one_cluster
        .cluster_scan_info
        .as_mut()
        .expect("cluster scan");
    info.range_type = RangeType::SpecificCluster;
    info.cluster_id_list = Some(vec!["cce-sim-0001".into()]);
    let theirs = create(&client, &one_cluster).await.expect("created");
    let found = resolve::lookup(
        &client,
        &all_clusters(),
        started,
        &HashSet::new(),
        Duration::ZERO,
    )
    .await
    .expect("lookup");
    assert_eq!(
        found,
        resolve::Lookup::NotFound,
        "{} covers one cluster of three",
        theirs.task_id
    );
    let ours = create(&client, &all_clusters()).await.expect("created");
    match resolve::lookup(
        &client,
        &all_clusters(),
        started,
        &HashSet::new(),
        Duration::ZERO,
    )
    .await
    .expect("lookup")
    {
        resolve::Lookup::Candidates(c) => {
            let ids: Vec<&str> = c.iter().map(|t| t.task_id.as_str()).collect();
            assert_eq!(ids, [ours.task_id.as_str()]);
        }
        other => panic!("expected our task, got {other:?}"),
    }
    assert_eq!(sim.call_count(Api::ListClusters, Some(200)), 2);
}

#[tokio::test]
async fn an_ambiguous_server_error_is_looked_up_and_not_posted_again_before_the_lookup_settles() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    sim.set_faults(Api::CreateTask, FaultPlan::times(FaultKind::ServerError, 1));

    // Nothing was committed, but only a lookup after resolve::SETTLE (30 s) may prove it; until
    // then create_once must keep waiting rather than post again.
    let outcome = tokio::time::timeout(
        Duration::from_secs(3),
        submit::create_once(&client, &all_clusters(), 5),
    )
    .await;

    assert!(outcome.is_err(), "still resolving: {outcome:?}");
    assert_eq!(sim.call_count(Api::CreateTask, None), 1, "no second POST");
    assert_eq!(sim.call_count(Api::CreateTask, Some(500)), 1);
    assert!(sim.call_count(Api::ListTasks, Some(200)) >= 1, "looked up");
    assert!(sim.created_tasks().is_empty());
}

#[tokio::test]
async fn a_throttled_create_is_posted_again_after_retry_after_and_creates_one_task() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    sim.set_faults(Api::CreateTask, FaultPlan::times(FaultKind::Throttle, 1));
    let started = Instant::now();

    let report = submit::create_once(&client, &all_clusters(), 5)
        .await
        .expect("created on the second attempt");

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After: {:?}",
        started.elapsed()
    );
    let created = sim.created_tasks();
    assert_eq!(created.len(), 1);
    assert_eq!(report.task_id, created[0].task_id);
    assert_eq!(report.resolution, "response");
    assert_eq!(report.attempts, 2);
    assert_eq!(sim.call_count(Api::CreateTask, Some(429)), 1);
    assert_eq!(sim.call_count(Api::CreateTask, Some(200)), 1);
    assert_eq!(sim.call_count(Api::CreateTask, None), 2);
    assert_eq!(
        sim.call_count(Api::ListTasks, None),
        0,
        "a 429 needs no lookup"
    );
}

// ---------------------------------------------------------------- IAM tokens

#[tokio::test]
async fn iam_password_tokens_are_fetched_once_and_authenticate_calls() {
    let sim = start(iam_sim_config()).await;
    let client = iam_client(&sim, "alice-password");

    create(&client, &all_clusters())
        .await
        .expect("create with a token");
    client.list_clusters(0, 10, None).await.expect("clusters");

    assert_eq!(sim.created_tasks()[0].user, "alice");
    assert_eq!(
        sim.call_count(Api::IamToken, Some(201)),
        1,
        "the token is cached"
    );
    assert_eq!(sim.call_count(Api::IamToken, None), 1);
}

#[tokio::test]
async fn a_wrong_iam_password_is_a_rejected_credentials_error_and_no_hss_call() {
    let sim = start(iam_sim_config()).await;
    let client = iam_client(&sim, "wrong-password");

    let err = client
        .list_clusters(0, 10, None)
        .await
        .expect_err("wrong password");

    assert!(
        matches!(
            err,
            Error::Credentials {
                api: Api::ListClusters,
                source: credentials::Error::IamRejected { status: 401 },
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.outcome(), Outcome::Rejected);
    assert_eq!(err.category(), "iam_rejected");
    assert_eq!(sim.call_count(Api::IamToken, Some(401)), 1);
    assert_eq!(sim.call_count(Api::ListClusters, None), 0);
}

// ---------------------------------------------------------------- budget

#[tokio::test]
async fn a_zero_budget_never_makes_a_call_wait() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);

    for _ in 0..20 {
        // A token is free at once before every call, and acquiring never sleeps.
        assert!(client.try_acquire(Api::ShowTaskStatistics).is_ok());
        let permit = client.acquire(Api::ShowTaskStatistics).await;
        assert!(permit.waited() < Duration::from_millis(50), "{permit:?}");
        drop(permit);
        client
            .show_task_statistics(TaskType::ClusterScan)
            .await
            .expect("statistics");
    }

    assert_eq!(sim.call_count(Api::ShowTaskStatistics, Some(200)), 20);
}

#[tokio::test]
async fn a_limited_budget_spaces_calls_of_one_api_and_leaves_others_alone() {
    let sim = start(SimConfig::default()).await;
    let client = client_with(&sim.base_url(), (AK, SK), Budget::per_minute(5), TIMEOUT);

    client
        .list_clusters(0, 10, None)
        .await
        .expect("first call is free");

    let wait = client
        .try_acquire(Api::ListClusters)
        .expect_err("the second call must wait");
    assert!(
        wait > Duration::from_secs(11) && wait <= Duration::from_secs(13),
        "about 60 s / 5: {wait:?}"
    );
    assert!(client.try_acquire(Api::ShowTaskStatistics).is_ok());
}

#[tokio::test]
async fn a_real_429_blocks_the_budget_for_about_retry_after() {
    let sim = start(SimConfig {
        throttle_per_minute: 1,
        ..SimConfig::default()
    })
    .await;
    let client = client(&sim);
    client.list_clusters(0, 10, None).await.expect("first call");

    let err = client
        .list_clusters(0, 10, None)
        .await
        .expect_err("over the gateway's limit");

    assert_eq!(err.status(), Some(429));
    assert_eq!(err.outcome(), Outcome::Retryable);
    let retry_after = err.retry_after().expect("Retry-After header");
    assert!(
        retry_after > Duration::from_secs(50) && retry_after <= Duration::from_secs(60),
        "{retry_after:?}"
    );
    let wait = client
        .try_acquire(Api::ListClusters)
        .expect_err("blocked by the 429");
    assert!(
        wait > retry_after.saturating_sub(Duration::from_secs(2)) && wait <= retry_after,
        "blocked {wait:?} for Retry-After {retry_after:?}"
    );
    assert_eq!(sim.call_count(Api::ListClusters, Some(429)), 1);
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn secrets_never_appear_in_the_clients_debug_output() {
    let sim = start(iam_sim_config()).await;
    let aksk = client_with(
        &sim.base_url(),
        ("AK-visible", "sk-very-secret-value"),
        Budget::per_minute(0),
        TIMEOUT,
    );
    let temporary = HssClient::new(
        config_for(&sim.base_url(), TIMEOUT),
        Credentials::temporary("AK-temp", "sk-temp-secret", "sts-token-secret").expect("creds"),
        Budget::per_minute(0),
    )
    .expect("client");
    let iam = iam_client(&sim, "alice-password");
    // The IAM client holds a real token after a call.
    iam.list_clusters(0, 10, None).await.expect("clusters");

    let shown = format!("{aksk:?} {temporary:?} {iam:?} {aksk:#?}");

    for secret in [
        "sk-very-secret-value",
        "sk-temp-secret",
        "sts-token-secret",
        "alice-password",
        "MIIsim",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(shown.contains("AK-visible"), "{shown}");
    assert!(shown.contains(PROJECT), "{shown}");
}

// ---------------------------------------------------------------- findings of one task

/// HSS keeps findings per cluster: a cluster that joins the project after an all-cluster task
/// was created, and is scanned by another task before this one's findings are read, is in the
/// unfiltered listing. The all-cluster task's findings (`submit`'s read, with and without
/// shared pages) are those of its own results' clusters only.
#[tokio::test]
async fn an_all_cluster_scan_reports_only_its_own_clusters_not_one_scanned_later() {
    use hss_operator::crd::ClusterScanTaskSpec;
    use hss_operator::findings::{self, Caches, Shared};
    use std::collections::BTreeSet;

    let sim = start(SimConfig {
        finish_after: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let client = client(&sim);
    let mut all = all_clusters();
    all.cluster_scan_info
        .as_mut()
        .expect("cluster scan")
        .scan_type_list = vec![
        ScanType::RiskAssessment,
        ScanType::Benchmark,
        ScanType::ClusterVul,
    ];
    let first = create(&client, &all).await.expect("create all-cluster");
    let finished = |p: &ListTaskResourcesResponse| {
        !p.cluster_scan_data_list.is_empty()
            && p.cluster_scan_data_list
                .iter()
                .all(|r| r.scan_status == ScanStatus::Success)
    };
    let own = resources_when(&client, &first.task_id, finished).await;
    let scanned: BTreeSet<String> = own
        .cluster_scan_data_list
        .iter()
        .map(|r| r.cluster_id.clone())
        .collect();

    // Later clusters, scanned by another task before the first task's findings are read.
    let later = ["x-1", "x-2", "x-3", "x-4"];
    let mut other = specific_clusters(&later);
    other
        .cluster_scan_info
        .as_mut()
        .expect("cluster scan")
        .scan_type_list = vec![
        ScanType::RiskAssessment,
        ScanType::Benchmark,
        ScanType::ClusterVul,
    ];
    let second = create(&client, &other).await.expect("create specific");
    resources_when(&client, &second.task_id, finished).await;
    let listing = client
        .list_cluster_reports(None, 0, 200)
        .await
        .expect("ListSecurityCheckClusterReports");
    assert!(
        listing
            .data_list
            .iter()
            .any(|r| r.cluster_id.starts_with("x-")),
        "precondition: the later clusters have rows in the unfiltered listing"
    );

    let spec: ClusterScanTaskSpec = serde_json::from_value(serde_json::json!({
        "taskType": "cluster_scan",
        "clusterScan": {"rangeType": "all_cluster",
                        "scanTypes": ["risk_assessment", "benchmark", "cluster_vul"]},
    }))
    .expect("spec");
    let none = BTreeSet::new();
    let found = findings::gate::read(&client, &spec, &scanned, &BTreeSet::new(), &none)
        .await
        .expect("a cluster scan has findings to read")
        .expect("findings");
    let read = &found.findings;
    let named: BTreeSet<String> = read.clusters.iter().map(|c| c.cluster_id.clone()).collect();
    assert_eq!(named, scanned, "submit: only the task's own clusters");
    assert_eq!(read.clusters_read as usize, scanned.len());
    assert!(
        found.risks.iter().all(|r| scanned.contains(&r.resource)),
        "submit's CI formats: only the task's own clusters' rows"
    );

    // The controller's path: shared pages, the scope its status gives.
    let caches = Caches::default();
    let shared = Shared {
        caches: &caches,
        not_before: jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60),
    };
    let own_clusters = findings::own_clusters(None, scanned.iter().map(String::as_str));
    let read = findings::read(
        &client,
        &[
            ScanType::RiskAssessment,
            ScanType::Benchmark,
            ScanType::ClusterVul,
        ],
        &own_clusters,
        Some(shared),
    )
    .await
    .expect("read");
    assert!(
        read.risks
            .iter()
            .all(|(_, r)| scanned.contains(&r.cluster_id))
    );
    assert!(read.reports.iter().all(|r| scanned.contains(&r.cluster_id)));
    assert!(!read.reports.is_empty(), "the task's own rows are read");
}

/// adopt-task names a task by id; it is followed only if the lookup itself could have taken
/// it: created while the attempt was in flight, over exactly the attempt's files.
#[tokio::test]
async fn a_named_task_is_adopted_only_by_the_lookups_own_rules() {
    let sim = start(SimConfig::default()).await;
    let client = client(&sim);
    let console = create(&client, &all_clusters()).await.expect("created");
    let now = jiff::Timestamp::now().as_millisecond();
    // Made in the console (or by another tool) before the attempt began: never this attempt's.
    match resolve::named(
        &client,
        &all_clusters(),
        &console.task_id,
        now + 5_000,
        &HashSet::new(),
    )
    .await
    .expect("named")
    {
        Err(why) => assert!(why.contains("was not created while"), "{why}"),
        Ok(t) => panic!("a task older than the attempt was accepted: {t:?}"),
    }
    // Created while the attempt was in flight: accepted.
    let started = jiff::Timestamp::now().as_millisecond();
    let ours = create(&client, &all_clusters()).await.expect("created");
    let task = resolve::named(
        &client,
        &all_clusters(),
        &ours.task_id,
        started,
        &HashSet::new(),
    )
    .await
    .expect("named")
    .expect("the attempt's own task");
    assert_eq!(task.task_id, ours.task_id);
    // Same file type, other files: refused.
    let started = jiff::Timestamp::now().as_millisecond();
    let mut other_files = iac_files();
    other_files
        .iac_scan_info
        .as_mut()
        .expect("iac")
        .file_id_list = vec!["someone-elses-file".into()];
    let theirs = create(&client, &other_files).await.expect("created");
    match resolve::named(
        &client,
        &iac_files(),
        &theirs.task_id,
        started,
        &HashSet::new(),
    )
    .await
    .expect("named")
    {
        Err(why) => assert!(why.contains("does not scan exactly"), "{why}"),
        Ok(t) => panic!("a task over other files was accepted: {t:?}"),
    }
    // Claimed by another object: refused without a call.
    let claimed = HashSet::from([ours.task_id.clone()]);
    assert!(
        resolve::named(&client, &all_clusters(), &ours.task_id, started, &claimed)
            .await
            .expect("named")
            .is_err()
    );
}
