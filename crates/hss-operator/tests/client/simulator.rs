//! The HSS simulator over real loopback HTTP, driven by a tiny signing client built on the
//! crate's signer (not on the HSS client, so these tests pin the server on their own).

use std::time::Duration;

use hss_client::signer::{self, SignableRequest};
use hss_simulator::{
    Api, ClusterDef, Credential, FaultKind, FaultPlan, IamUser, Secret, SimConfig, Simulator,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const AK: &str = "AKSIM";
const SK: &str = "SKSIM";

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("http client")
}

/// A request signed like the Python SDK signs it (Host and Content-Type included).
struct Signed {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn sign(
    sim: &Hss,
    (ak, sk): (&str, &str),
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> Signed {
    let body = body
        .map(|b| serde_json::to_vec(b).expect("json"))
        .unwrap_or_default();
    let query: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut headers = vec![
        ("Host".to_string(), sim.addr().to_string()),
        (
            "X-Sdk-Date".to_string(),
            signer::format_sdk_date(jiff::Timestamp::now()),
        ),
        ("X-Project-Id".to_string(), PROJECT.to_string()),
        (
            "Content-Type".to_string(),
            "application/json;charset=UTF-8".to_string(),
        ),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut req = SignableRequest {
        method: method.to_string(),
        path: path.to_string(),
        query,
        headers,
        body,
    };
    signer::sign(&mut req, ak, sk.as_bytes());
    let mut target = signer::encode_path(&req.path);
    if !req.query.is_empty() {
        target.push('?');
        target.push_str(&signer::encode_query(&req.query));
    }
    Signed {
        method: req.method,
        target,
        headers: req.headers,
        body: req.body,
    }
}

async fn send(sim: &Hss, signed: Signed) -> reqwest::Result<reqwest::Response> {
    let method = reqwest::Method::from_bytes(signed.method.as_bytes()).expect("method");
    let mut builder = sim
        .http
        .request(method, format!("{}{}", sim.base_url(), signed.target));
    for (k, v) in &signed.headers {
        builder = builder.header(k, v);
    }
    builder.body(signed.body).send().await
}

/// Status, X-Request-Id and the body as JSON (Null when empty or not JSON).
async fn answer(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.expect("body");
    (
        status,
        request_id,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn call(
    sim: &Hss,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let signed = sign(sim, (AK, SK), method, path, query, body.as_ref(), &[]);
    let (status, request_id, body) = answer(send(sim, signed).await.expect("response")).await;
    assert!(!request_id.is_empty(), "every response has X-Request-Id");
    (status, body)
}

fn cluster_scan(scan_types: &[&str]) -> Value {
    json!({"task_type": "cluster_scan", "cluster_scan_info": {"scan_type_list": scan_types, "range_type": "all_cluster"}})
}

async fn create(sim: &Hss, body: Value) -> String {
    let (status, body) = call(
        sim,
        "POST",
        &format!("/v5/{PROJECT}/common/task"),
        &[],
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["task_id"].as_str().expect("task_id").to_string()
}

async fn list(sim: &Hss, filter: Value) -> Value {
    let (status, body) = call(
        sim,
        "POST",
        &format!("/v5/{PROJECT}/common/tasks/batch-query"),
        &[("offset", "0"), ("limit", "200")],
        Some(filter),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn only_task(sim: &Hss) -> Value {
    let page = list(sim, json!({"task_type": "cluster_scan"})).await;
    assert_eq!(page["total_num"], 1, "{page}");
    page["data_list"][0].clone()
}

async fn resources(sim: &Hss, task_id: &str) -> Value {
    let (status, body) = call(
        sim,
        "POST",
        &format!("/v5/{PROJECT}/common/tasks/{task_id}/resources/batch-query"),
        &[("limit", "200")],
        Some(json!({"task_type": "cluster_scan"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A running simulator and one HTTP client for it (building a client costs ~20 ms).
#[derive(Clone)]
struct Hss {
    sim: Simulator,
    http: reqwest::Client,
}

impl std::ops::Deref for Hss {
    type Target = Simulator;

    fn deref(&self) -> &Simulator {
        &self.sim
    }
}

impl Hss {
    async fn shutdown(self) {
        self.sim.shutdown().await;
    }
}

async fn start(config: SimConfig) -> Hss {
    Hss {
        sim: Simulator::start(config).await.expect("simulator starts"),
        http: http(),
    }
}

#[tokio::test]
async fn a_created_task_is_listed_with_its_fields_and_recorded_with_its_body() {
    let sim = start(SimConfig::default()).await;
    let body = cluster_scan(&["cluster_vul", "benchmark"]);
    let (status, created) = call(
        &sim,
        "POST",
        &format!("/v5/{PROJECT}/common/task"),
        &[("enterprise_project_id", "0")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200);
    let task_id = created["task_id"].as_str().expect("task_id").to_string();
    assert_eq!(
        created.as_object().expect("object").len(),
        1,
        "only task_id"
    );

    let page = list(&sim, json!({"task_type": "cluster_scan"})).await;
    assert_eq!(page["total_num"], 1);
    let task = &page["data_list"][0];
    assert_eq!(task["task_id"], task_id.as_str());
    assert_eq!(task["task_type"], "cluster_scan");
    assert_eq!(task["trigger_type"], "manual");
    assert!(task["start_time"].as_i64().expect("start_time") > 0);
    assert_eq!(
        task["cluster_scan_info"]["scan_type_list"],
        json!(["cluster_vul", "benchmark"])
    );
    assert_eq!(
        list(&sim, json!({"task_type": "iac_scan"})).await["total_num"],
        0
    );
    let filtered = list(
        &sim,
        json!({"task_type": "cluster_scan", "cluster_scan_info": {"scan_type_list": ["risk_assessment"]}}),
    )
    .await;
    assert_eq!(
        filtered["total_num"], 0,
        "scan type filter needs every listed type"
    );

    let created = sim.created_tasks();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].task_id, task_id);
    assert_eq!(created[0].body, body);
    assert_eq!(created[0].user, AK);
    assert_eq!(created[0].enterprise_project_id.as_deref(), Some("0"));
    assert_eq!(
        created[0].created_at_ms,
        task["start_time"].as_i64().expect("ms")
    );
    assert_eq!(sim.call_count(Api::CreateTask, Some(200)), 1);
    assert_eq!(sim.call_count(Api::ListTasks, None), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn list_tasks_pages_newest_first_and_filters_by_creation_time() {
    let sim = start(SimConfig::default()).await;
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(create(&sim, cluster_scan(&["benchmark"])).await);
    }
    let (status, first) = call(
        &sim,
        "POST",
        &format!("/v5/{PROJECT}/common/tasks/batch-query"),
        &[("offset", "10"), ("limit", "10")],
        Some(json!({"task_type": "cluster_scan"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(first["total_num"], 25);
    let page: Vec<&str> = first["data_list"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["task_id"].as_str().expect("id"))
        .collect();
    let newest_first: Vec<&str> = ids
        .iter()
        .rev()
        .skip(10)
        .take(10)
        .map(String::as_str)
        .collect();
    assert_eq!(page, newest_first);

    let created = sim.created_tasks();
    let from = created[20].created_at_ms;
    let asc = list(
        &sim,
        json!({"task_type": "cluster_scan", "start_create_time": from, "sort_key": "start_time", "sort_dir": "asc"}),
    )
    .await;
    let first_listed = asc["data_list"][0]["start_time"].as_i64().expect("ms");
    assert!(first_listed >= from);
    assert!(asc["total_num"].as_i64().expect("n") >= 5);

    for (query, reason) in [
        (vec![("limit", "5")], "limit below 10"),
        (vec![("limit", "201")], "limit above 200"),
        (vec![("offset", "-1")], "negative offset"),
    ] {
        let (status, body) = call(
            &sim,
            "POST",
            &format!("/v5/{PROJECT}/common/tasks/batch-query"),
            &query,
            Some(json!({"task_type": "cluster_scan"})),
        )
        .await;
        assert_eq!(
            (status, &body["error_code"]),
            (400, &json!("HSS.0001")),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn a_bad_signature_is_refused_with_401_apigw_0301_and_creates_nothing() {
    let sim = start(SimConfig::default()).await;
    let body = cluster_scan(&["benchmark"]);
    for (ak, sk) in [(AK, "wrong-secret"), ("AKUNKNOWN", SK)] {
        let signed = sign(
            &sim,
            (ak, sk),
            "POST",
            &format!("/v5/{PROJECT}/common/task"),
            &[],
            Some(&body),
            &[],
        );
        let (status, request_id, err) = answer(send(&sim, signed).await.expect("response")).await;
        assert_eq!(status, 401);
        assert_eq!(err["error_code"], "APIGW.0301");
        assert!(
            err["error_msg"]
                .as_str()
                .expect("msg")
                .starts_with("Incorrect IAM authentication information")
        );
        assert_eq!(err["request_id"], request_id.as_str());
    }
    // Signed correctly, then tampered with on the way.
    let mut signed = sign(
        &sim,
        (AK, SK),
        "POST",
        &format!("/v5/{PROJECT}/common/task"),
        &[],
        Some(&body),
        &[],
    );
    signed.body.push(b' ');
    let (status, _, _) = answer(send(&sim, signed).await.expect("response")).await;
    assert_eq!(status, 401);
    let unsigned = sim
        .http
        .post(format!("{}/v5/{PROJECT}/common/task", sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("response");
    assert_eq!(unsigned.status().as_u16(), 401);
    assert!(sim.created_tasks().is_empty());
    assert_eq!(sim.call_count(Api::CreateTask, Some(401)), 4);
}

#[tokio::test]
async fn a_security_token_header_is_accepted_only_when_signed() {
    let sim = start(SimConfig::default()).await;
    let path = format!("/v5/{PROJECT}/common/task-statistics");
    let query = [("task_type", "cluster_scan")];
    let signed = sign(
        &sim,
        (AK, SK),
        "GET",
        &path,
        &query,
        None,
        &[("X-Security-Token", "temporary")],
    );
    let (status, _, _) = answer(send(&sim, signed).await.expect("response")).await;
    assert_eq!(status, 200);

    let mut signed = sign(&sim, (AK, SK), "GET", &path, &query, None, &[]);
    signed
        .headers
        .push(("X-Security-Token".into(), "added-after-signing".into()));
    let (status, _, err) = answer(send(&sim, signed).await.expect("response")).await;
    assert_eq!((status, &err["error_code"]), (401, &json!("APIGW.0301")));
}

#[tokio::test]
async fn invalid_bodies_are_refused_with_400_and_an_hss_code_and_create_nothing() {
    let sim = start(SimConfig::default()).await;
    let path = format!("/v5/{PROJECT}/common/task");
    let cases = [
        (
            json!({"task_type": "cluster_scan", "cluster_scan_info": {"scan_type_list": [], "range_type": "specific_cluster"}}),
            "HSS.0001",
            "scan_type_list",
        ),
        (
            json!({"task_type": "cluster_scan", "cluster_scan_info": {"scan_type_list": ["no_such_scan"], "range_type": "all_cluster"}}),
            "HSS.0001",
            "no_such_scan",
        ),
        (
            json!({"task_type": "no_such_type"}),
            "HSS.0001",
            "no_such_type",
        ),
        (
            json!({"task_type": "iac_scan"}),
            "HSS.0001",
            "iac_scan_info is required",
        ),
    ];
    for (body, code, mentions) in cases {
        let (status, err) = call(&sim, "POST", &path, &[], Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(err["error_code"], code, "{body}");
        let msg = err["error_msg"].as_str().expect("error_msg");
        assert!(msg.contains(mentions), "{msg:?} should mention {mentions}");
    }
    // Both problems of one body are reported together.
    let (_, err) = call(
        &sim,
        "POST",
        &path,
        &[],
        Some(json!({"task_type": "cluster_scan", "cluster_scan_info": {"scan_type_list": [], "range_type": "specific_cluster"}})),
    )
    .await;
    assert!(err["error_msg"].as_str().expect("msg").contains("; "));

    let mut signed = sign(&sim, (AK, SK), "POST", &path, &[], None, &[]);
    signed.body = b"{not json".to_vec();
    let signed = {
        // Re-sign over the broken bytes so only the body is wrong.
        let mut req = SignableRequest {
            method: "POST".into(),
            path: path.clone(),
            query: vec![],
            headers: signed
                .headers
                .into_iter()
                .filter(|(k, _)| k != "Authorization")
                .collect(),
            body: b"{not json".to_vec(),
        };
        signer::sign(&mut req, AK, SK.as_bytes());
        Signed {
            method: req.method,
            target: path.clone(),
            headers: req.headers,
            body: req.body,
        }
    };
    let (status, _, err) = answer(send(&sim, signed).await.expect("response")).await;
    assert_eq!((status, &err["error_code"]), (400, &json!("HSS.0002")));
    assert!(sim.created_tasks().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_sixth_call_within_a_minute_is_throttled_until_the_window_frees() {
    let sim = start(SimConfig {
        throttle_per_minute: 5,
        ..SimConfig::default()
    })
    .await;
    let stats = format!("/v5/{PROJECT}/common/task-statistics");
    let query = [("task_type", "cluster_scan")];
    for _ in 0..5 {
        assert_eq!(call(&sim, "GET", &stats, &query, None).await.0, 200);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let signed = sign(&sim, (AK, SK), "GET", &stats, &query, None, &[]);
    let resp = send(&sim, signed).await.expect("response");
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    let (status, _, err) = answer(resp).await;
    assert_eq!(status, 429);
    assert_eq!(err["error_code"], "APIGW.0308");
    assert!(
        err["error_msg"]
            .as_str()
            .expect("msg")
            .contains("limit:5,time:1 minute")
    );
    assert_eq!(
        retry_after, 55,
        "the first call leaves the window 55 s from now"
    );

    // Another API has its own window.
    assert_eq!(
        call(
            &sim,
            "GET",
            &format!("/v5/{PROJECT}/kubernetes/clusters"),
            &[],
            None
        )
        .await
        .0,
        200
    );
    tokio::time::advance(Duration::from_secs(retry_after)).await;
    assert_eq!(call(&sim, "GET", &stats, &query, None).await.0, 200);
    assert_eq!(sim.call_count(Api::ShowTaskStatistics, Some(429)), 1);
    assert_eq!(sim.call_count(Api::ShowTaskStatistics, Some(200)), 6);
}

#[tokio::test(start_paused = true)]
async fn a_task_moves_ready_running_finished_as_paused_time_advances() {
    let sim = start(SimConfig {
        run_after: Duration::from_secs(5),
        finish_after: Duration::from_secs(30),
        ..SimConfig::default()
    })
    .await;
    let task_id = create(&sim, cluster_scan(&["cluster_vul"])).await;
    let task = only_task(&sim).await;
    assert_eq!(task["task_status"], "ready");
    assert_eq!(task["cluster_scan_info"]["scanning_cluster_num"], 3);
    let rows = resources(&sim, &task_id).await;
    assert_eq!(rows["cluster_scan_data_list"][0]["scan_status"], "scanning");
    assert_eq!(rows["cluster_scan_data_list"][0]["start_time"], Value::Null);

    tokio::time::advance(Duration::from_secs(5)).await;
    let task = only_task(&sim).await;
    assert_eq!(task["task_status"], "running");
    assert_eq!(task["end_time"], Value::Null);
    assert_eq!(task["estimated_time"], 1);

    tokio::time::advance(Duration::from_secs(25)).await;
    let task = only_task(&sim).await;
    assert_eq!(task["task_status"], "finished");
    assert_eq!(
        task["end_time"].as_i64().expect("end_time") - task["start_time"].as_i64().expect("start"),
        30_000
    );
    let info = &task["cluster_scan_info"];
    assert_eq!(
        (
            &info["scanning_cluster_num"],
            &info["success_cluster_num"],
            &info["failed_cluster_num"]
        ),
        (&json!(0), &json!(3), &json!(0))
    );
    let (_, stats) = call(
        &sim,
        "GET",
        &format!("/v5/{PROJECT}/common/task-statistics"),
        &[("task_type", "cluster_scan")],
        None,
    )
    .await;
    assert_eq!(stats["total_num"], 1);
    assert_eq!(stats["running_num"], 0);
    assert_eq!(stats["last_task_start_time"], task["start_time"]);
}

#[tokio::test(start_paused = true)]
async fn a_cluster_in_the_fail_set_fails_with_a_reason_and_retry_reruns_it() {
    let sim = start(SimConfig {
        clusters: vec![ClusterDef::named("good"), ClusterDef::named("flaky")],
        fail_clusters: vec!["flaky".into()],
        finish_after: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await;
    let task_id = create(&sim, cluster_scan(&["cluster_vul", "risk_assessment"])).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    let info = only_task(&sim).await["cluster_scan_info"].clone();
    assert_eq!(
        (&info["success_cluster_num"], &info["failed_cluster_num"]),
        (&json!(1), &json!(1))
    );
    let rows = resources(&sim, &task_id).await;
    let flaky = rows["cluster_scan_data_list"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["cluster_id"] == "flaky")
        .expect("flaky row")
        .clone();
    assert_eq!(flaky["scan_status"], "failed");
    for detail in flaky["scan_detail_list"].as_array().expect("details") {
        assert_eq!(detail["status"], "failed");
        assert!(!detail["failed_reason"].as_str().expect("reason").is_empty());
    }

    let retry_path = format!("/v5/{PROJECT}/common/tasks/{task_id}/retry");
    let all_failed = json!({"task_type": "cluster_scan", "cluster_scan_info": {"range_type": "all_failed_cluster"}});
    // Still in the fail set: the retry runs and fails again.
    let (status, body) = call(&sim, "PUT", &retry_path, &[], Some(all_failed.clone())).await;
    assert_eq!((status, body), (200, Value::Null), "empty 200 body");
    assert_eq!(only_task(&sim).await["task_status"], "running");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        only_task(&sim).await["cluster_scan_info"]["failed_cluster_num"],
        1
    );

    sim.unfail_cluster("flaky");
    let (status, _) = call(&sim, "PUT", &retry_path, &[], Some(all_failed)).await;
    assert_eq!(status, 200);
    let info = only_task(&sim).await["cluster_scan_info"].clone();
    assert_eq!(
        (&info["scanning_cluster_num"], &info["success_cluster_num"]),
        (&json!(1), &json!(1))
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    let task = only_task(&sim).await;
    assert_eq!(task["task_status"], "finished");
    assert_eq!(task["cluster_scan_info"]["success_cluster_num"], 2);

    let (status, err) = call(
        &sim,
        "PUT",
        &retry_path,
        &[],
        Some(json!({"task_type": "cluster_scan", "cluster_scan_info": {"range_type": "specific_cluster", "cluster_info_list": [{"cluster_id": "nowhere"}]}})),
    )
    .await;
    assert_eq!((status, &err["error_code"]), (400, &json!("HSS.0001")));
    let (status, err) = call(
        &sim,
        "PUT",
        &format!("/v5/{PROJECT}/common/tasks/no-such-task/retry"),
        &[],
        Some(json!({"task_type": "cluster_scan", "cluster_scan_info": {"range_type": "all_failed_cluster"}})),
    )
    .await;
    assert_eq!((status, &err["error_code"]), (400, &json!("HSS.0011")));
}

#[tokio::test]
async fn commit_then_drop_creates_the_task_and_closes_the_connection_without_a_response() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(
        Api::CreateTask,
        FaultPlan::times(FaultKind::CommitThenDrop, 2),
    );
    let path = format!("/v5/{PROJECT}/common/task");
    let body = cluster_scan(&["benchmark"]);

    // A raw client: the request goes out whole, and the only answer is end of stream.
    let signed = sign(&sim, (AK, SK), "POST", &path, &[], Some(&body), &[]);
    let mut raw = format!("{} {} HTTP/1.1\r\n", signed.method, signed.target);
    for (k, v) in &signed.headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", signed.body.len()));
    let mut stream = TcpStream::connect(sim.addr()).await.expect("connect");
    stream.write_all(raw.as_bytes()).await.expect("write head");
    stream.write_all(&signed.body).await.expect("write body");
    let mut received = Vec::new();
    let n = stream
        .read_to_end(&mut received)
        .await
        .expect("clean close");
    assert_eq!(
        n,
        0,
        "no response bytes: {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(sim.created_tasks().len(), 1, "the task was committed");

    // reqwest sees a connection error, not a timeout and not a status.
    let signed = sign(&sim, (AK, SK), "POST", &path, &[], Some(&body), &[]);
    let err = send(&sim, signed).await.expect_err("no response");
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none());
    assert_eq!(sim.created_tasks().len(), 2);
    assert_eq!(sim.call_count(Api::CreateTask, Some(0)), 2);

    // The plan is used up: the next call is answered.
    create(&sim, body).await;
    assert!(sim.faults().is_empty());
}

#[tokio::test]
async fn commit_then_drop_on_a_read_api_drops_without_executing() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(Api::RetryTask, FaultPlan::always(FaultKind::CommitThenDrop));
    let task_id = create(&sim, cluster_scan(&["benchmark"])).await;
    let signed = sign(
        &sim,
        (AK, SK),
        "PUT",
        &format!("/v5/{PROJECT}/common/tasks/{task_id}/retry"),
        &[],
        Some(
            &json!({"task_type": "cluster_scan", "cluster_scan_info": {"range_type": "all_failed_cluster"}}),
        ),
        &[],
    );
    assert!(send(&sim, signed).await.is_err());
    assert_eq!(sim.call_count(Api::RetryTask, Some(0)), 1);
}

#[tokio::test]
async fn server_error_commits_nothing_but_commit_then_server_error_commits() {
    let sim = start(SimConfig::default()).await;
    let path = format!("/v5/{PROJECT}/common/task");
    let body = cluster_scan(&["benchmark"]);
    sim.set_faults(Api::CreateTask, FaultPlan::times(FaultKind::ServerError, 1));
    let (status, err) = call(&sim, "POST", &path, &[], Some(body.clone())).await;
    assert_eq!(status, 500);
    assert!(
        err["error_code"]
            .as_str()
            .expect("code")
            .starts_with("HSS.")
    );
    assert!(sim.created_tasks().is_empty());

    sim.set_faults(
        Api::CreateTask,
        FaultPlan::times(FaultKind::CommitThenServerError, 1),
    );
    let (status, _) = call(&sim, "POST", &path, &[], Some(body.clone())).await;
    assert_eq!(status, 500);
    assert_eq!(sim.created_tasks().len(), 1);

    sim.set_faults(Api::CreateTask, FaultPlan::times(FaultKind::Throttle, 1));
    let (status, err) = call(&sim, "POST", &path, &[], Some(body)).await;
    assert_eq!((status, &err["error_code"]), (429, &json!("APIGW.0308")));
    assert_eq!(
        sim.created_tasks().len(),
        1,
        "a throttled call does nothing"
    );
}

#[tokio::test]
async fn a_malformed_fault_answers_200_with_an_unparsable_body_after_committing() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(Api::CreateTask, FaultPlan::times(FaultKind::Malformed, 1));
    let signed = sign(
        &sim,
        (AK, SK),
        "POST",
        &format!("/v5/{PROJECT}/common/task"),
        &[],
        Some(&cluster_scan(&["benchmark"])),
        &[],
    );
    let resp = send(&sim, signed).await.expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("body");
    assert!(!text.is_empty());
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text:?}");
    assert_eq!(sim.created_tasks().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_latency_fault_commits_the_task_before_the_client_gives_up() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(
        Api::CreateTask,
        FaultPlan::times(FaultKind::Latency(Duration::from_secs(30)), 1),
    );
    let signed = sign(
        &sim,
        (AK, SK),
        "POST",
        &format!("/v5/{PROJECT}/common/task"),
        &[],
        Some(&cluster_scan(&["benchmark"])),
        &[],
    );
    let method = reqwest::Method::from_bytes(signed.method.as_bytes()).expect("method");
    let mut builder = sim
        .http
        .request(method, format!("{}{}", sim.base_url(), signed.target))
        .timeout(Duration::from_secs(5));
    for (k, v) in &signed.headers {
        builder = builder.header(k, v);
    }
    let err = builder
        .body(signed.body)
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(sim.created_tasks().len(), 1, "committed before the delay");
}

#[tokio::test]
async fn iam_password_tokens_are_issued_and_accepted_and_wrong_passwords_refused() {
    let sim = start(SimConfig {
        credentials: vec![],
        iam_users: vec!["alice:wonderland".parse::<IamUser>().expect("user")],
        ..SimConfig::default()
    })
    .await;
    let token_body = |password: &str| json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "alice", "password": password, "domain": {"name": "acme"}}}}, "scope": {"project": {"id": PROJECT}}}});
    let url = format!("{}/v3/auth/tokens", sim.base_url());
    let resp = sim
        .http
        .post(&url)
        .json(&token_body("wonderland"))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status().as_u16(), 201);
    let token = resp
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .expect("X-Subject-Token")
        .to_string();
    let body: Value = resp.json().await.expect("json");
    let expires: jiff::Timestamp = body["token"]["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("RFC 3339");
    let ahead = expires.duration_since(jiff::Timestamp::now());
    assert!(ahead > jiff::SignedDuration::from_hours(23), "{ahead:?}");

    let stats = format!(
        "{}/v5/{PROJECT}/common/task-statistics?task_type=cluster_scan",
        sim.base_url()
    );
    let ok = sim
        .http
        .get(&stats)
        .header("X-Auth-Token", &token)
        .send()
        .await
        .expect("response");
    assert_eq!(ok.status().as_u16(), 200);
    let create = sim
        .http
        .post(format!("{}/v5/{PROJECT}/common/task", sim.base_url()))
        .header("X-Auth-Token", &token)
        .json(&cluster_scan(&["benchmark"]))
        .send()
        .await
        .expect("response");
    assert_eq!(create.status().as_u16(), 200);
    assert_eq!(sim.created_tasks()[0].user, "alice");

    let wrong = sim
        .http
        .post(&url)
        .json(&token_body("looking-glass"))
        .send()
        .await
        .expect("response");
    assert_eq!(wrong.status().as_u16(), 401);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(
        body,
        json!({"error": {"code": 401, "message": "The username or password is wrong.", "title": "Unauthorized"}})
    );
    let forged = sim
        .http
        .get(&stats)
        .header("X-Auth-Token", "MIIforged")
        .send()
        .await
        .expect("response");
    assert_eq!(forged.status().as_u16(), 401);
}

#[tokio::test]
async fn configured_tokens_are_accepted_and_the_iam_endpoint_is_absent_without_users() {
    let sim = start(SimConfig {
        tokens: vec![Secret::new("static-token")],
        ..SimConfig::default()
    })
    .await;
    let resp = sim
        .http
        .get(format!(
            "{}/v5/{PROJECT}/kubernetes/clusters?limit=10",
            sim.base_url()
        ))
        .header("X-Auth-Token", "static-token")
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["total_num"], 3);
    assert_eq!(body["cluster_info_list"][0]["status"], "Available");
    let iam = sim
        .http
        .post(format!("{}/v3/auth/tokens", sim.base_url()))
        .json(&json!({}))
        .send()
        .await
        .expect("response");
    assert_eq!(iam.status().as_u16(), 404);
}

#[tokio::test]
async fn other_projects_and_unknown_paths_get_404_apigw_0101() {
    let sim = start(SimConfig {
        project_ids: vec![PROJECT.into()],
        credentials: vec![Credential::new(AK, SK)],
        ..SimConfig::default()
    })
    .await;
    let (status, err) = call(
        &sim,
        "GET",
        "/v5/someone-elses-project/common/task-statistics",
        &[("task_type", "cluster_scan")],
        None,
    )
    .await;
    assert_eq!((status, &err["error_code"]), (404, &json!("APIGW.0101")));
    let (status, err) = call(&sim, "GET", "/v5/nowhere", &[], None).await;
    assert_eq!((status, &err["error_code"]), (404, &json!("APIGW.0101")));
    let (status, _) = call(
        &sim,
        "GET",
        &format!("/v5/{PROJECT}/common/task"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 404, "wrong method is an unknown API too");
}

#[tokio::test(start_paused = true)]
async fn the_control_plane_reports_tasks_and_calls_and_arms_faults_and_fails_clusters() {
    let sim = start(SimConfig {
        clusters: vec![ClusterDef::named("one")],
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url();
    let client = sim.http.clone();
    let task_id = create(&sim, cluster_scan(&["benchmark"])).await;

    let tasks: Value = client
        .get(format!("{base}/__sim/tasks"))
        .send()
        .await
        .expect("response")
        .json()
        .await
        .expect("json");
    assert_eq!(tasks[0]["task_id"], task_id.as_str());
    assert_eq!(tasks[0]["body"]["task_type"], "cluster_scan");

    let armed = client
        .post(format!("{base}/__sim/faults"))
        .json(&json!([{"spec": "ListTasks=server-error@1x1"}, {"api": "ShowTaskStatistics", "kind": "latency", "latency_ms": 10}]))
        .send()
        .await
        .expect("response");
    assert_eq!(armed.status().as_u16(), 200);
    assert_eq!(sim.faults().len(), 2);
    let (status, _) = call(
        &sim,
        "POST",
        &format!("/v5/{PROJECT}/common/tasks/batch-query"),
        &[],
        Some(json!({"task_type": "cluster_scan"})),
    )
    .await;
    assert_eq!(status, 500);
    let bad = client
        .post(format!("{base}/__sim/faults"))
        .json(&json!({"spec": "CreateTask=explode"}))
        .send()
        .await
        .expect("response");
    assert_eq!(bad.status().as_u16(), 400);
    let cleared = client
        .delete(format!("{base}/__sim/faults"))
        .send()
        .await
        .expect("response");
    assert_eq!(cleared.status().as_u16(), 204);
    assert!(sim.faults().is_empty());

    let failed = client
        .post(format!("{base}/__sim/clusters/one/fail"))
        .send()
        .await
        .expect("response");
    assert_eq!(failed.status().as_u16(), 204);
    let failing_task = create(&sim, cluster_scan(&["benchmark"])).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let rows = resources(&sim, &failing_task).await;
    assert_eq!(rows["cluster_scan_data_list"][0]["scan_status"], "failed");

    let calls: Value = client
        .get(format!("{base}/__sim/calls"))
        .send()
        .await
        .expect("response")
        .json()
        .await
        .expect("json");
    assert_eq!(calls["CreateTask"]["200"], 2);
    assert_eq!(calls["ListTasks"]["500"], 1);
    assert_eq!(calls["ListTaskResources"]["200"], 1);
}

#[tokio::test]
async fn keep_alive_connections_serve_several_requests_in_a_row() {
    let sim = start(SimConfig::default()).await;
    let mut stream = TcpStream::connect(sim.addr()).await.expect("connect");
    let host = sim.addr();
    let requests = format!(
        "GET /__sim/calls HTTP/1.1\r\nHost: {host}\r\n\r\nGET /__sim/tasks HTTP/1.1\r\nHost: {host}\r\n\r\nGET /__sim/faults HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(requests.as_bytes()).await.expect("write");
    let mut received = String::new();
    stream
        .read_to_string(&mut received)
        .await
        .expect("read to close");
    assert_eq!(received.matches("HTTP/1.1 200 OK").count(), 3, "{received}");
}

#[tokio::test]
async fn task_ids_are_the_same_for_the_same_seed_and_differ_across_seeds() {
    async fn first_id(seed: u64) -> String {
        let sim = start(SimConfig {
            seed,
            ..SimConfig::default()
        })
        .await;
        let id = create(&sim, cluster_scan(&["benchmark"])).await;
        sim.shutdown().await;
        id
    }
    assert_eq!(first_id(42).await, first_id(42).await);
    assert_ne!(first_id(42).await, first_id(43).await);
}

#[tokio::test]
async fn shutdown_closes_the_listener() {
    let sim = start(SimConfig::default()).await;
    let addr = sim.addr();
    create(&sim, cluster_scan(&["benchmark"])).await;
    sim.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_creates_are_all_recorded_once() {
    let sim = start(SimConfig::default()).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let sim = sim.clone();
        calls.spawn(async move {
            let body = if i % 2 == 0 {
                cluster_scan(&["benchmark"])
            } else {
                json!({"task_type": "iac_scan", "iac_scan_info": {"file_type": "k8s_yaml", "file_id_list": [format!("f-{i}")]}})
            };
            create(&sim, body).await
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(id) = calls.join_next().await {
        assert!(ids.insert(id.expect("task")), "task ids are unique");
    }
    assert_eq!(sim.created_tasks().len(), 1000);
    let page = list(&sim, json!({"task_type": "iac_scan"})).await;
    assert_eq!(page["total_num"], 500);
    assert_eq!(page["data_list"].as_array().expect("list").len(), 200);
}
