//! The admin server on a loopback port: probes and the metrics exposition.

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use hss_client::Api;
use hss_operator::{
    controller::metrics::SubmissionStep,
    controller_runtime::admin::{self, Readiness},
    crd::Phase,
    hss_metrics::CallOutcome,
    metrics::{self, Metrics},
};

struct Server {
    addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), admin::Error>>,
}

impl Server {
    async fn start(metrics: Arc<Metrics>, readiness: Readiness) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(admin::serve(listener, metrics, readiness, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            http: reqwest::Client::builder().build().expect("http client"),
            stop: Some(tx),
            task,
        }
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        let resp = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("admin server answers");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, content_type, resp.text().await.expect("body"))
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("admin server stops on shutdown")
            .expect("server task")
            .expect("server ends without error");
    }
}

#[tokio::test]
async fn livez_answers_ok_while_the_process_runs_even_when_not_ready() {
    let server = Server::start(Arc::new(Metrics::new()), Readiness::default()).await;
    assert_eq!(server.get("/livez").await.0, 200);
    assert_eq!(server.get("/livez").await.2, "ok");
    assert_eq!(server.get("/readyz").await.0, 503);
    server.stop().await;
}

#[tokio::test]
async fn readyz_turns_ready_only_after_sync() {
    let readiness = Readiness::default();
    let server = Server::start(Arc::new(Metrics::new()), readiness.clone()).await;
    let (status, _, body) = server.get("/readyz").await;
    assert_eq!((status, body.as_str()), (503, "caches not synced yet"));
    readiness.set_synced();
    let (status, _, body) = server.get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    server.stop().await;
}

#[tokio::test]
async fn readyz_with_leader_election_needs_the_lease_as_well() {
    let readiness = Readiness::default();
    readiness.set_leader_required(true);
    let server = Server::start(Arc::new(Metrics::new()), readiness.clone()).await;
    assert_eq!(server.get("/readyz").await.2, "caches not synced yet");
    readiness.set_synced();
    let (status, _, body) = server.get("/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not the leader"));
    readiness.set_leader(true);
    assert_eq!(server.get("/readyz").await.0, 200);
    readiness.set_leader(false);
    assert_eq!(
        server.get("/readyz").await.0,
        503,
        "losing the lease makes the replica unready again"
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_expose_every_family_with_bounded_labels_only() {
    let m = Arc::new(Metrics::new());
    let c = &m.controller;
    c.reconcile_started().finish();
    c.reconcile_ok();
    c.reconcile_failed("server_error");
    c.hss.call(
        Api::CreateTask,
        CallOutcome::Success,
        Duration::from_millis(80),
    );
    c.hss.call(
        Api::ListTasks,
        CallOutcome::Retryable,
        Duration::from_secs(1),
    );
    c.hss.budget_wait(Api::CreateTask, Duration::from_secs(12));
    c.hss.throttled(Api::ListTasks);
    c.set_objects_by_phase(|phase| match phase {
        Phase::Submitted => 2,
        Phase::Running => 1,
        _ => 0,
    });
    c.set_unresolved_submissions(1);
    c.set_tracked_tasks(3);
    c.poll_succeeded(jiff::Timestamp::now());
    c.submission_step(SubmissionStep::Post, Duration::from_millis(30));
    m.leadership.set_leader(true);
    let server = Server::start(m, Readiness::default()).await;

    let (status, content_type, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, metrics::CONTENT_TYPE);
    for name in [
        "hss_operator_reconcile_duration_seconds_bucket",
        "hss_operator_reconciles_total",
        "hss_operator_reconcile_failures_total",
        "hss_operator_hss_calls_total",
        "hss_operator_hss_call_duration_seconds_bucket",
        "hss_operator_budget_wait_seconds_bucket",
        "hss_operator_hss_throttled_total",
        "hss_operator_objects",
        "hss_operator_unresolved_submissions",
        "hss_operator_tracked_tasks",
        "hss_operator_last_successful_poll_timestamp_seconds",
        "hss_operator_leader",
        "hss_operator_submission_step_duration_seconds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{text}"
        );
    }
    assert!(text.contains("hss_operator_leader 1"));
    assert!(text.contains("hss_operator_objects{phase=\"Submitted\"} 2"));

    let set = |values: Vec<&str>| -> BTreeSet<String> {
        values.into_iter().map(str::to_string).collect()
    };
    let mut seen = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("hss_operator_"), "unprefixed line {line}");
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.split_once('}').expect("closed label set").0;
        for pair in labels.split(',') {
            let (key, value) = pair.split_once('=').expect("key=value");
            let value = value.trim_matches('"');
            let allowed = match key {
                "api" => set(Api::ALL.map(Api::as_str).to_vec()),
                "outcome" => set(CallOutcome::ALL.map(CallOutcome::as_str).to_vec()),
                "phase" => set(Phase::ALL.map(Phase::as_str).to_vec()),
                "step" => set(SubmissionStep::ALL.map(SubmissionStep::as_str).to_vec()),
                "category" => set(vec!["server_error"]),
                "le" => continue,
                other => panic!("unexpected label {other} in {line}"),
            };
            assert!(allowed.contains(value), "{key}={value:?} in {line}");
            seen.insert(value.to_string());
        }
    }
    assert!(
        !seen.iter().any(|v| v.contains('/') || v.contains(' ')),
        "no object names or error text: {seen:?}"
    );
    server.stop().await;
}
