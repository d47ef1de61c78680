//! The admin server on a loopback port (probes), and the metrics server beside it: the
//! exposition over TLS, behind reviews of the bearer token (a fake of the API server's).

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use hss_client::Api;
use hss_operator::{
    controller::metrics::SubmissionStep,
    controller_runtime::{
        admin::{self, Readiness},
        metrics_auth::{self, CacheConfig, Reviews, User},
        secure_metrics,
    },
    crd::Phase,
    hss_metrics::CallOutcome,
    metrics::{self, Metrics},
};

struct Server {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), admin::Error>>,
    metrics_task: tokio::task::JoinHandle<Result<(), secure_metrics::Error>>,
}

/// Reviews without an API server: token `reader` may read /metrics, `other` is a user who
/// may not, anything else is no one.
struct FakeReviews;

impl Reviews for FakeReviews {
    async fn authenticate(&self, token: &str) -> Result<Option<User>, metrics_auth::Error> {
        Ok(["reader", "other"].contains(&token).then(|| User {
            name: token.to_string(),
            ..Default::default()
        }))
    }

    async fn authorize(&self, user: &User) -> Result<bool, metrics_auth::Error> {
        Ok(user.name == "reader")
    }
}

impl Server {
    /// The admin server, and the metrics server over TLS (self-signed) behind [`FakeReviews`].
    async fn start(metrics: Arc<Metrics>, readiness: Readiness) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bind = || async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port");
            let addr = listener.local_addr().expect("local address");
            (listener, addr)
        };
        let (listener, addr) = bind().await;
        let (metrics_listener, metrics_addr) = bind().await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = futures::FutureExt::shared(async move {
            let _ = rx.await;
        });
        let task = tokio::spawn(admin::serve(listener, readiness, stop.clone()));
        let tls = secure_metrics::tls_config(secure_metrics::certificate(None).expect("cert"))
            .expect("tls");
        let router = secure_metrics::router(metrics, FakeReviews, CacheConfig::default());
        let metrics_task = tokio::spawn(secure_metrics::serve_tls(
            metrics_listener,
            tls,
            router,
            stop,
        ));
        Self {
            addr,
            metrics_addr,
            http: reqwest::Client::builder()
                .tls_danger_accept_invalid_certs(true)
                .build()
                .expect("http client"),
            stop: Some(tx),
            task,
            metrics_task,
        }
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        let req = self.http.get(format!("http://{}{path}", self.addr));
        Self::answer(req).await
    }

    /// `GET https://.../PATH` on the metrics server, with `token` as bearer token.
    async fn get_metrics(&self, path: &str, token: Option<&str>) -> (u16, String, String) {
        let mut req = self
            .http
            .get(format!("https://{}{path}", self.metrics_addr));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        Self::answer(req).await
    }

    async fn answer(req: reqwest::RequestBuilder) -> (u16, String, String) {
        let resp = req
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("server answers");
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
        tokio::time::timeout(Duration::from_secs(5), self.metrics_task)
            .await
            .expect("metrics server stops on shutdown")
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

    let (status, content_type, text) = server.get_metrics("/metrics", Some("reader")).await;
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

#[tokio::test]
async fn metrics_need_a_token_the_reviews_allow_and_are_not_on_the_admin_port() {
    let server = Server::start(Arc::new(Metrics::new()), Readiness::default()).await;
    let cases = [
        (None, 401, "no token"),
        (Some("forged"), 401, "a token no one holds"),
        (Some("other"), 403, "a user without get /metrics"),
        (Some("reader"), 200, "a reader"),
    ];
    for (token, want, why) in cases {
        let (status, _, body) = server.get_metrics("/metrics", token).await;
        assert_eq!(status, want, "{why}: {body}");
        assert_eq!(body.contains("hss_operator_"), want == 200, "{why}: {body}");
    }
    let resp = server
        .http
        .get(format!("https://{}/metrics", server.metrics_addr))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        resp.headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap_or_default()),
        Some("Bearer"),
        "a 401 names the scheme"
    );
    assert_eq!(server.get_metrics("/other", Some("reader")).await.0, 404);
    assert_eq!(
        server.get("/metrics").await.0,
        404,
        "the admin port serves probes only"
    );
    let plain = server
        .http
        .get(format!("http://{}/metrics", server.metrics_addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "the metrics port speaks TLS only"
    );
    server.stop().await;
}

/// A certificate for `localhost` written as a kubernetes.io/tls Secret mounts it.
fn write_cert(dir: &std::path::Path) -> Vec<u8> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.join("tls.crt"), made.cert.pem()).expect("write tls.crt");
    std::fs::write(dir.join("tls.key"), made.signing_key.serialize_pem()).expect("write tls.key");
    made.cert.der().to_vec()
}

fn cert_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hss-metrics-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cert dir");
    dir
}

#[tokio::test]
async fn a_mounted_certificate_is_the_one_served_and_a_scraper_trusting_it_verifies_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = cert_dir("served");
    let der = write_cert(&dir);
    let resolver = secure_metrics::certificate(Some(&dir)).expect("load the mounted certificate");
    assert_eq!(resolver.leaf().as_ref(), der.as_slice());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = secure_metrics::router(
        Arc::new(Metrics::new()),
        FakeReviews,
        CacheConfig::default(),
    );
    let task = tokio::spawn(secure_metrics::serve_tls(
        listener,
        secure_metrics::tls_config(resolver).expect("tls"),
        router,
        std::future::pending(),
    ));
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&der).expect("der")])
        .resolve("localhost", addr)
        .build()
        .expect("client");
    let resp = trusting
        .get(format!("https://localhost:{}/metrics", addr.port()))
        .bearer_auth("reader")
        .send()
        .await
        .expect("a verified TLS connection");
    assert_eq!(resp.status().as_u16(), 200);
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cert_dir_without_a_matching_key_fails_start_up() {
    let dir = cert_dir("bad");
    assert!(
        secure_metrics::certificate(Some(&dir)).is_err(),
        "empty dir"
    );
    write_cert(&dir);
    let other = cert_dir("other");
    write_cert(&other);
    std::fs::copy(other.join("tls.key"), dir.join("tls.key")).expect("copy");
    let err = secure_metrics::certificate(Some(&dir)).expect_err("a key of another certificate");
    assert_eq!(err.category(), "metrics_cert");
    for d in [dir, other] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test(start_paused = true)]
async fn a_rotated_certificate_is_served_after_the_next_check() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = cert_dir("rotated");
    let first = write_cert(&dir);
    let resolver = secure_metrics::certificate(Some(&dir)).expect("load");
    let watch = tokio::spawn(secure_metrics::watch_cert_dir(
        dir.clone(),
        resolver.clone(),
    ));
    tokio::time::advance(secure_metrics::CERT_RECHECK).await;
    tokio::task::yield_now().await;
    assert_eq!(
        resolver.leaf().as_ref(),
        first.as_slice(),
        "unchanged files: same certificate"
    );
    // Kubernetes swaps the mounted files; an unreadable state keeps the previous certificate.
    std::fs::write(dir.join("tls.key"), "garbage").expect("break the key");
    tokio::time::advance(secure_metrics::CERT_RECHECK).await;
    tokio::task::yield_now().await;
    assert_eq!(
        resolver.leaf().as_ref(),
        first.as_slice(),
        "a broken key is not taken"
    );
    let second = write_cert(&dir);
    tokio::time::advance(secure_metrics::CERT_RECHECK).await;
    tokio::task::yield_now().await;
    assert_eq!(
        resolver.leaf().as_ref(),
        second.as_slice(),
        "the rotated certificate is served"
    );
    watch.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
