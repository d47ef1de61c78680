//! Our credential sources against the simulator's identity endpoints, over real loopback
//! HTTP: each source the official SDK has (the Python half of this conformance is
//! crates/hss-simulator/conformance/test_sdk_credentials.py, against the same endpoints) gets temporary
//! credentials and creates a task with them; a revoked identity is refused with its reason;
//! credentials HSS refused from the cache are fetched again once.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use hss_client::{
    Api, Outcome,
    budget::Budget,
    chain::{self, env},
    client::{ClientConfig, HssClient},
    credentials::Credentials,
    endpoint::Endpoint,
    model::*,
    sources::{self, SourceKind},
    transport::http_client,
};
use hss_simulator::{DEFAULT_IDENTITY_TOKEN, SimConfig, Simulator};

const PROJECT: &str = "proj";

fn config(sim: &Simulator) -> ClientConfig {
    let mut c = ClientConfig::new(Endpoint::parse(&sim.base_url()).expect("endpoint"), PROJECT);
    c.timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    c
}

fn token_file(name: &str, content: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("hss-identity-{}-{name}", std::process::id()));
    std::fs::write(&path, content).expect("token file");
    path
}

/// The variables each source reads, pointing at `sim`.
fn vars(sim: &Simulator, kind: &str, file: &str) -> HashMap<String, String> {
    let url = sim.base_url();
    let pairs: Vec<(&str, String)> = match kind {
        "pod-identity" => vec![
            (
                env::POD_IDENTITY_URI,
                format!("{url}/v1/pod-identity/credentials"),
            ),
            (env::POD_IDENTITY_TOKEN_FILE, file.into()),
        ],
        "federation" => vec![
            (env::IDP_ID, "sim-idp".into()),
            (env::ID_TOKEN_FILE, file.into()),
            (env::IAM_ENDPOINT, url.clone()),
        ],
        "oidc" => vec![
            (
                env::OIDC_PROVIDER_URN,
                "iam::0123:identity-provider:sim".into(),
            ),
            (env::OIDC_AGENCY_URN, "iam::0123:agency:hss-operator".into()),
            (env::OIDC_TOKEN_FILE, file.into()),
            (env::STS_ENDPOINT, url.clone()),
        ],
        _ => vec![],
    };
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

async fn choose(
    sim: &Simulator,
    kind: SourceKind,
    vars: HashMap<String, String>,
    metadata: &str,
) -> Result<chain::Choice, sources::Error> {
    let lookup = move |k: &str| vars.get(k).cloned();
    chain::choose(
        kind,
        &chain::Setup {
            env: &lookup,
            http: http_client(&config(sim)).expect("http"),
            direct: http_client(&config(sim)).expect("http"),
            metadata_endpoint: metadata.into(),
            allow_insecure: true,
        },
    )
    .await
}

fn scan() -> CreateTaskRequest {
    CreateTaskRequest {
        task_type: TaskType::ClusterScan,
        cluster_scan_info: Some(ClusterScanInfo {
            scan_type_list: vec![ScanType::ClusterVul],
            range_type: RangeType::AllCluster,
            cluster_id_list: None,
        }),
        iac_scan_info: None,
    }
}

fn client(sim: &Simulator, credentials: Credentials) -> HssClient {
    HssClient::new(config(sim), credentials, Budget::per_minute(0)).expect("client")
}

async fn create(client: &HssClient) -> Result<CreateTaskResponse, hss_client::Error> {
    let permit = client.acquire(Api::CreateTask).await;
    client.create_task(permit, &scan()).await
}

#[tokio::test]
async fn every_source_gets_temporary_credentials_from_the_simulator_and_creates_a_task() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let file = token_file("each", DEFAULT_IDENTITY_TOKEN);
    let file = file.to_str().expect("utf-8");
    let cases = [
        (SourceKind::PodIdentity, "pod-identity", "pod-identity"),
        (SourceKind::Metadata, "metadata", "metadata"),
        (SourceKind::Federation, "federation", "federation"),
        (SourceKind::Env, "federation", "federation"),
        (SourceKind::Oidc, "oidc", "oidc"),
        // The chain passes over a metadata service that is not there to pod identity.
        (SourceKind::Chain, "pod-identity", "pod-identity"),
    ];
    for (kind, vars_of, issued_by) in cases {
        let before = sim
            .issued_credentials()
            .get(issued_by)
            .copied()
            .unwrap_or(0);
        let metadata = if kind == SourceKind::Chain {
            "http://127.0.0.1:9".to_string()
        } else {
            sim.base_url()
        };
        let choice = choose(&sim, kind, vars(&sim, vars_of, file), &metadata)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(choice.credentials.provider().is_some(), "{kind:?}");
        assert!(
            !choice.detail.contains(DEFAULT_IDENTITY_TOKEN),
            "{kind:?}: the token is never described"
        );
        let c = client(&sim, choice.credentials);
        let created = create(&c).await.unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(!created.task_id.is_empty());
        let after = sim
            .issued_credentials()
            .get(issued_by)
            .copied()
            .unwrap_or(0);
        assert_eq!(after, before + 1, "{kind:?} fetched once");
        // A second call uses the cached credentials.
        create(&c)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} again: {e}"));
        assert_eq!(
            sim.issued_credentials()
                .get(issued_by)
                .copied()
                .unwrap_or(0),
            after
        );
    }
    assert_eq!(sim.call_count(Api::CreateTask, Some(401)), 0);
    assert_eq!(sim.call_count(Api::CreateTask, Some(200)), 12);
}

#[tokio::test]
async fn a_revoked_identity_is_refused_with_its_reason_and_sends_nothing_to_hss() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let file = token_file("revoked", DEFAULT_IDENTITY_TOKEN);
    sim.revoke_identity(true);
    for (kind, vars_of, category) in [
        (SourceKind::PodIdentity, "pod-identity", "identity_refused"),
        (SourceKind::Federation, "federation", "identity_refused"),
        (SourceKind::Oidc, "oidc", "identity_refused"),
        (SourceKind::Metadata, "metadata", "identity_refused"),
    ] {
        let choice = choose(
            &sim,
            kind,
            vars(&sim, vars_of, file.to_str().expect("utf-8")),
            &sim.base_url(),
        )
        .await
        .expect("configured");
        let err = create(&client(&sim, choice.credentials))
            .await
            .expect_err("revoked");
        assert_eq!(err.category(), category, "{kind:?}: {err}");
        assert_eq!(err.outcome(), Outcome::Retryable, "{kind:?}: may come back");
    }
    assert_eq!(sim.call_count(Api::CreateTask, None), 0);
    // A token file the source does not accept is refused the same way.
    let wrong = token_file("wrong", "not-the-token");
    sim.revoke_identity(false);
    let choice = choose(
        &sim,
        SourceKind::PodIdentity,
        vars(&sim, "pod-identity", wrong.to_str().expect("utf-8")),
        &sim.base_url(),
    )
    .await
    .expect("configured");
    let err = create(&client(&sim, choice.credentials))
        .await
        .expect_err("wrong token");
    let text = hss_operator::report_error(&err);
    assert!(
        text.contains("pod-identity") && text.contains("403"),
        "{text}"
    );
}

#[tokio::test]
async fn credentials_hss_refused_from_the_cache_are_fetched_again_once() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let file = token_file("refused", DEFAULT_IDENTITY_TOKEN);
    let choice = choose(
        &sim,
        SourceKind::PodIdentity,
        vars(&sim, "pod-identity", file.to_str().expect("utf-8")),
        &sim.base_url(),
    )
    .await
    .expect("configured");
    let c = client(&sim, choice.credentials);
    create(&c).await.expect("first");
    // HSS forgets the issued credentials (revoked and restored): the cached ones now fail.
    sim.revoke_identity(true);
    sim.revoke_identity(false);
    let err = create(&c).await.expect_err("cached credentials refused");
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.outcome(), Outcome::Retryable, "one retry with new ones");
    create(&c).await.expect("fetched anew");
    assert_eq!(sim.issued_credentials().get("pod-identity"), Some(&2));
    // Fixed temporary credentials: a 401 is retryable once, then they count as refused.
    let fixed = Credentials::temporary("TMPAKNONE", "sk", "token").expect("ok");
    let c = client(&sim, fixed.clone());
    let err = create(&c).await.expect_err("unknown key");
    assert_eq!(err.outcome(), Outcome::Retryable);
    assert!(fixed.is_refused(), "the holder waits for new ones");
    let refused = sim.call_count(Api::CreateTask, Some(401));
    let err = create(&c).await.expect_err("again");
    assert_eq!(err.category(), "key_guarded", "never a loop: {err}");
    assert_eq!(
        sim.call_count(Api::CreateTask, Some(401)),
        refused,
        "not sent again"
    );
}

#[tokio::test]
async fn an_expired_security_token_gets_hss_401() {
    let sim = Simulator::start(SimConfig {
        temporary_credential_ttl: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let file = token_file("expired", DEFAULT_IDENTITY_TOKEN);
    let choice = choose(
        &sim,
        SourceKind::PodIdentity,
        vars(&sim, "pod-identity", file.to_str().expect("utf-8")),
        &sim.base_url(),
    )
    .await
    .expect("configured");
    let provider = choice.credentials.provider().expect("provider").clone();
    let c = client(&sim, choice.credentials);
    create(&c).await.expect("valid");
    // Whatever the client would do, the simulator refuses the token once it has expired: the
    // same credentials, fixed, are sent after their end.
    let (t, _) = provider.current().await.expect("cached or new");
    let fixed = Credentials::temporary(
        &t.ak,
        secrecy::ExposeSecret::expose_secret(&t.sk),
        secrecy::ExposeSecret::expose_secret(&t.security_token),
    )
    .expect("ok");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        match create(&client(&sim, fixed.clone())).await {
            Err(e) => break e,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(_) => panic!("the token never expired"),
        }
    };
    assert_eq!(err.status(), Some(401), "{err}");
}

#[tokio::test]
async fn submit_runs_a_scan_with_a_source_and_logs_which_one() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let file = token_file("submit", DEFAULT_IDENTITY_TOKEN);
    let manifest =
        std::env::temp_dir().join(format!("hss-identity-{}-scan.yaml", std::process::id()));
    std::fs::write(
        &manifest,
        "apiVersion: hss.scanops.dev/v1alpha1\nkind: ClusterScanTask\nmetadata: {name: ci}\n\
         spec:\n  taskType: cluster_scan\n  clusterScan: {scanTypes: [cluster_vul], rangeType: all_cluster}\n",
    )
    .expect("manifest");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hss-operator"))
        .args(["submit", "-f"])
        .arg(&manifest)
        .args([
            "--endpoint",
            &sim.base_url(),
            "--allow-insecure-endpoints",
            "--project-id",
            PROJECT,
            "--credentials-source",
            "pod-identity",
        ])
        .env_clear()
        .env(
            env::POD_IDENTITY_URI,
            format!("{}/v1/pod-identity/credentials", sim.base_url()),
        )
        .env(env::POD_IDENTITY_TOKEN_FILE, &file)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("in time")
        .expect("ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let task_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        sim.created_tasks()
            .iter()
            .map(|t| t.task_id.clone())
            .collect::<Vec<_>>(),
        vec![task_id]
    );
    assert!(stderr.contains("pod-identity"), "{stderr}");
    assert!(!stderr.contains(DEFAULT_IDENTITY_TOKEN), "{stderr}");
    assert_eq!(sim.issued_credentials().get("pod-identity"), Some(&1));
    let _ = std::fs::remove_file(&manifest);
}
