//! The operator without long-lived keys, end to end on a real kube-apiserver: `hss-operator
//! run` takes its identity from each source the official SDK has (the simulator serves them),
//! runs scans with it, keeps short-lived credentials fresh through a long run without one
//! failed HSS call, and says so on the object (condition and Event) when the identity is
//! revoked, going on by itself once it is back.

use std::time::Duration;

use hss_client::{Api, chain::env};
use hss_operator::crd::{ClusterScanTask, Phase};
use hss_simulator::{DEFAULT_IDENTITY_TOKEN, SimConfig, Simulator};
use hss_testkit::cluster::*;
use kube::{Api as KubeApi, api::PostParams};

/// The operator for `ns` with its identity from `source` (the simulator's long-lived key
/// removed from its environment), polling every second.
fn operator(ns: &str, sim: &Simulator, source: &str, log: &str) -> hss_testkit::OperatorProcess {
    let url = sim.base_url();
    let token = repo().join(format!("target/{log}.token"));
    std::fs::write(&token, DEFAULT_IDENTITY_TOKEN).expect("token file");
    let token = token.display().to_string();
    let op = fast_operator(ns, &url, log, free_port())
        .without_env("HUAWEICLOUD_SDK_AK")
        .without_env("HUAWEICLOUD_SDK_SK")
        .args(["--credentials-source", source, "--metadata-endpoint", &url]);
    match source {
        "pod-identity" => op
            .env(
                env::POD_IDENTITY_URI,
                &format!("{url}/v1/pod-identity/credentials"),
            )
            .env(env::POD_IDENTITY_TOKEN_FILE, &token),
        "federation" => op
            .env(env::IDP_ID, "sim-idp")
            .env(env::ID_TOKEN_FILE, &token)
            .env(env::IAM_ENDPOINT, &url),
        "oidc" => op
            .env(env::OIDC_PROVIDER_URN, "iam::0123:identity-provider:sim")
            .env(env::OIDC_AGENCY_URN, "iam::0123:agency:hss-operator")
            .env(env::OIDC_TOKEN_FILE, &token)
            .env(env::STS_ENDPOINT, &url),
        _ => op,
    }
}

fn failed_calls(sim: &Simulator) -> Vec<((String, u16), u64)> {
    sim.calls()
        .into_iter()
        .filter(|((_, status), _)| *status >= 400)
        .collect()
}

#[tokio::test]
async fn each_source_runs_scans_through_the_operator() {
    let client = admin().await;
    for source in ["pod-identity", "metadata", "federation", "oidc"] {
        let ns = namespace(&client, &format!("creds-{source}")).await;
        let sim = Simulator::start(SimConfig::default()).await.expect("sim");
        let _op = operator(&ns, &sim, source, &format!("credentials-{source}"))
            .spawn()
            .expect("start");
        let api: KubeApi<ClusterScanTask> = KubeApi::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &cluster_scan("keyless"))
            .await
            .expect("create");
        let done = wait_for(&api, "keyless", 60, |o| {
            matches!(phase(o), Some(Phase::Succeeded | Phase::Failed))
        })
        .await;
        assert_eq!(phase(&done), Some(Phase::Succeeded), "{source}");
        assert_eq!(
            condition(&done, "CredentialsReady").map(|c| c.0),
            Some("True".into()),
            "{source}"
        );
        let issued = sim.issued_credentials();
        assert!(
            issued.get(source).copied().unwrap_or(0) >= 1,
            "{source}: {issued:?}"
        );
        assert_eq!(issued.len(), 1, "{source} alone: {issued:?}");
        assert_eq!(failed_calls(&sim), vec![], "{source}");
        assert_eq!(sim.created_tasks().len(), 1, "{source}");
    }
}

#[tokio::test]
async fn short_lived_credentials_expire_during_a_long_run_with_zero_failed_calls() {
    let client = admin().await;
    let ns = namespace(&client, "creds-short").await;
    // Credentials live 4 s, scans 12 s: the operator polls ListTasks every second through
    // about six generations of credentials.
    let sim = Simulator::start(SimConfig {
        temporary_credential_ttl: Duration::from_secs(4),
        finish_after: Duration::from_secs(12),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let _op = operator(&ns, &sim, "pod-identity", "credentials-short")
        .spawn()
        .expect("start");
    let api: KubeApi<ClusterScanTask> = KubeApi::namespaced(client.clone(), &ns);
    for name in ["long-a", "long-b"] {
        api.create(&PostParams::default(), &cluster_scan(name))
            .await
            .expect("create");
    }
    for name in ["long-a", "long-b"] {
        let done = wait_for(&api, name, 90, |o| {
            matches!(phase(o), Some(Phase::Succeeded | Phase::Failed))
        })
        .await;
        assert_eq!(phase(&done), Some(Phase::Succeeded), "{name}");
    }
    let issued = sim.issued_credentials()["pod-identity"];
    assert!(
        issued >= 4,
        "the credentials were refreshed: {issued} fetched"
    );
    assert_eq!(failed_calls(&sim), vec![], "not one HSS call failed");
    assert!(sim.call_count(Api::ListTasks, Some(200)) >= 8);
}

#[tokio::test]
async fn a_revoked_identity_gives_a_condition_and_an_event_and_recovers_when_restored() {
    let client = admin().await;
    let ns = namespace(&client, "creds-revoked").await;
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    sim.revoke_identity(true);
    let _op = operator(&ns, &sim, "pod-identity", "credentials-revoked")
        .spawn()
        .expect("start");
    let api: KubeApi<ClusterScanTask> = KubeApi::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &cluster_scan("revoked"))
        .await
        .expect("create");
    let waiting = wait_for(&api, "revoked", 60, |o| {
        condition(o, "CredentialsReady").is_some_and(|(s, _)| s == "False")
    })
    .await;
    assert_eq!(
        condition(&waiting, "CredentialsReady"),
        Some(("False".into(), "CredentialsUnavailable".into()))
    );
    let message = waiting
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "CredentialsReady"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("pod-identity") && message.contains("403"),
        "{message}"
    );
    assert!(!message.contains(DEFAULT_IDENTITY_TOKEN), "{message}");
    assert_eq!(phase(&waiting), Some(Phase::Pending));
    let events: KubeApi<k8s_openapi::api::events::v1::Event> =
        KubeApi::namespaced(client.clone(), &ns);
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let list = events.list(&Default::default()).await.expect("events");
            if let Some(e) = list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("CredentialsUnavailable"))
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("a CredentialsUnavailable Event");
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(sim.call_count(Api::CreateTask, None), 0, "nothing sent");

    sim.revoke_identity(false);
    let done = wait_for(&api, "revoked", 90, |o| phase(o) == Some(Phase::Succeeded)).await;
    assert_eq!(
        condition(&done, "CredentialsReady").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(sim.created_tasks().len(), 1);
}

/// Temporary credentials as the simulator's pod identity issues them.
async fn issued_by(sim: &Simulator) -> hss_client::sources::Temporary {
    let token = repo().join("target/credentials-secret.token");
    std::fs::write(&token, DEFAULT_IDENTITY_TOKEN).expect("token file");
    let provider = hss_client::sources::Provider::new(
        hss_client::sources::fetch::Fetcher::PodIdentity {
            uri: format!("{}/v1/pod-identity/credentials", sim.base_url()),
            token_file: token,
        },
        hss_client::transport::http_client_with(
            Duration::from_secs(5),
            Duration::from_secs(2),
            None,
        )
        .expect("http"),
    );
    provider.current().await.expect("issued").0
}

async fn put_secret(client: &kube::Client, ns: &str, t: &hss_client::sources::Temporary) {
    use secrecy::ExposeSecret;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "temporary"},
        "stringData": {
            "accessKey": t.ak,
            "secretKey": t.sk.expose_secret(),
            "securityToken": t.security_token.expose_secret(),
        },
    }))
    .expect("secret");
    let api: KubeApi<k8s_openapi::api::core::v1::Secret> = KubeApi::namespaced(client.clone(), ns);
    let params = kube::api::PatchParams::apply("credentials-test").force();
    api.patch("temporary", &params, &kube::api::Patch::Apply(&secret))
        .await
        .expect("apply Secret");
}

#[tokio::test]
async fn a_secrets_refused_security_token_waits_for_the_secret_to_change() {
    let client = admin().await;
    let ns = namespace(&client, "creds-secret").await;
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    // Credentials the simulator then forgets, as if they had expired.
    let stale = issued_by(&sim).await;
    sim.revoke_identity(true);
    sim.revoke_identity(false);
    put_secret(&client, &ns, &stale).await;
    let _op = fast_operator(&ns, &sim.base_url(), "credentials-secret", free_port())
        .spawn()
        .expect("start");
    let api: KubeApi<ClusterScanTask> = KubeApi::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &with_secret(cluster_scan("from-secret"), "temporary"),
    )
    .await
    .expect("create");
    let waiting = wait_for(&api, "from-secret", 60, |o| {
        condition(o, "CredentialsReady")
            .is_some_and(|(s, r)| s == "False" && r == "CredentialsExpired")
    })
    .await;
    assert_eq!(
        phase(&waiting),
        Some(Phase::Pending),
        "not Failed: new credentials may come"
    );
    assert_eq!(
        sim.call_count(Api::CreateTask, Some(401)),
        1,
        "sent once, never again while the Secret is unchanged"
    );
    // New credentials in the Secret: the scan goes on.
    put_secret(&client, &ns, &issued_by(&sim).await).await;
    let done = wait_for(&api, "from-secret", 90, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(
        condition(&done, "CredentialsReady").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(sim.call_count(Api::CreateTask, Some(401)), 1);
    assert_eq!(sim.created_tasks().len(), 1);
}

/// A Secret `name` with access key `ak` and secret key `sk`.
async fn put_keys(client: &kube::Client, ns: &str, name: &str, ak: &str, sk: &str) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "stringData": {"accessKey": ak, "secretKey": sk},
    }))
    .expect("secret");
    let api: KubeApi<k8s_openapi::api::core::v1::Secret> = KubeApi::namespaced(client.clone(), ns);
    let params = kube::api::PatchParams::apply("credentials-test").force();
    api.patch(name, &params, &kube::api::Patch::Apply(&secret))
        .await
        .expect("apply Secret");
}

fn unauthenticated(sim: &Simulator) -> u64 {
    sim.calls()
        .into_iter()
        .filter(|((_, status), _)| *status == 401)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn one_refused_signature_guards_the_access_key_until_a_secret_holding_it_changes() {
    const AK: &str = "AKTEAMGUARDED001";
    const SK: &str = "the-right-one";
    let client = admin().await;
    let ns = namespace(&client, "creds-guard").await;
    let sim = Simulator::start(SimConfig {
        credentials: vec![
            hss_simulator::Credential::new("AKSIM", "SKSIM"),
            hss_simulator::Credential::new(AK, SK),
        ],
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let names = ["guard-a", "guard-b", "guard-c", "guard-d"];
    for (i, name) in names.iter().enumerate() {
        put_keys(&client, &ns, name, AK, &format!("wrong-{i}")).await;
    }
    let _op = fast_operator(&ns, &sim.base_url(), "credentials-guard", free_port())
        .spawn()
        .expect("start");
    let api: KubeApi<ClusterScanTask> = KubeApi::namespaced(client.clone(), &ns);
    for name in names {
        api.create(
            &PostParams::default(),
            &with_secret(cluster_scan(name), name),
        )
        .await
        .expect("create");
    }
    // One object's signature is refused (it fails, as before); every other waits, unsent.
    let mut refused = Vec::new();
    for name in names {
        let o = wait_for(&api, name, 60, |o| {
            phase(o) == Some(Phase::Failed)
                || condition(o, "CredentialsReady")
                    .is_some_and(|(s, r)| s == "False" && r == "KeyGuarded")
        })
        .await;
        if phase(&o) == Some(Phase::Failed) {
            refused.push(name);
        } else {
            let message = o
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "CredentialsReady"))
                .map(|c| c.message.clone())
                .unwrap_or_default();
            assert!(message.contains("AKTE..."), "{message}");
            assert!(!message.contains(AK), "only a prefix: {message}");
        }
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(unauthenticated(&sim), 1, "{:?}", sim.calls());

    // One guarded object's Secret is fixed: it goes on; the others stay unsent.
    let fixed = names
        .iter()
        .find(|n| !refused.contains(n))
        .expect("a guarded one");
    put_keys(&client, &ns, fixed, AK, SK).await;
    let done = wait_for(&api, fixed, 90, |o| phase(o) == Some(Phase::Succeeded)).await;
    assert_eq!(
        condition(&done, "CredentialsReady").map(|c| c.0),
        Some("True".into())
    );
    for name in names.iter().filter(|n| *n != fixed && !refused.contains(n)) {
        let o = api.get(name).await.expect("get");
        assert_eq!(phase(&o), Some(Phase::Pending), "{name}");
    }
    assert_eq!(unauthenticated(&sim), 1, "{:?}", sim.calls());
    assert_eq!(sim.created_tasks().len(), 1);
}
