//! A tenant (a ServiceAccount that may create ClusterScanTasks and Secrets in its own namespace,
//! nothing else) cannot make the operator send its own credentials, or the tenant's, where the
//! tenant chose: every override is refused before anything is sent, with a clear condition, and
//! another tenant's scans, with the operator's credentials and with its own, still succeed.

use std::sync::atomic::Ordering;

use hss_operator::crd::{ClusterScanTask, Phase};
use hss_simulator::{Credential, SimConfig, Simulator};
use hss_testkit::{cluster::*, identity::tenant, tls};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, api::PostParams};

fn failed_reason(o: &ClusterScanTask) -> Option<String> {
    condition(o, "Failed")
        .filter(|(status, _)| status == "True")
        .map(|(_, reason)| reason)
}

/// The tenant's own credentials, created with the tenant's identity.
async fn own_secret(as_tenant: &Client, ns: &str, name: &str, ak: &str, sk: &str) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "stringData": {"accessKey": ak, "secretKey": sk},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(as_tenant.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("a tenant may create its Secret");
}

#[tokio::test]
async fn a_tenant_cannot_aim_credentials_where_it_chooses_and_other_tenants_still_scan() {
    let admin = admin().await;
    let ns_a = namespace(&admin, "tenant-a").await;
    let ns_b = namespace(&admin, "tenant-b").await;
    // The operator's HSS, which also knows tenant B's key; and a second HSS endpoint that the
    // operator allows for tenants with their own credentials.
    let mut config = SimConfig::default();
    config.credentials.push(Credential::new("AKBOB", "SKBOB"));
    let sim = Simulator::start(config.clone()).await.expect("simulator");
    let partner = Simulator::start(config).await.expect("second simulator");
    let (trap_url, trap_hits) = trap();
    // Tenants' endpoints must be https (admission says so): the partner sits behind TLS.
    let partner_url = tls::https_front(&partner.base_url()).await;
    let ca = tls::ca_bundle().display().to_string();
    let extra = [
        "--namespace",
        &ns_b,
        "--allowed-endpoint",
        &partner_url,
        "--ca-bundle",
        &ca,
    ];
    let op = Operator::start(
        admin.clone(),
        run_args(&sim.base_url(), &ns_a, &extra),
        None,
    );
    let alice = tenant(&admin, &ns_a).await;
    let bob = tenant(&admin, &ns_b).await;
    let as_alice: Api<ClusterScanTask> = Api::namespaced(alice.clone(), &ns_a);
    let as_bob: Api<ClusterScanTask> = Api::namespaced(bob.clone(), &ns_b);

    // The identity is a tenant's: nothing in another namespace.
    match Api::<ClusterScanTask>::namespaced(alice.clone(), &ns_b)
        .create(&PostParams::default(), &cluster_scan("across"))
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("tenant A must not create in B's namespace: {other:?}"),
    }

    // Overrides with the operator's credentials (no Secret of the object's own).
    type Override = fn(&mut ClusterScanTask, &str);
    let attacks: [(&str, Override, &str); 4] = [
        (
            "to-my-host",
            |o, url| o.spec.endpoint = Some(url.into()),
            "EndpointNotAllowed",
        ),
        (
            "to-a-region",
            |o, _| o.spec.region = Some("ap-southeast-1".into()),
            "EndpointNotAllowed",
        ),
        (
            "to-a-project",
            |o, _| o.spec.project_id = Some("victim".into()),
            "ProjectNotAllowed",
        ),
        (
            "to-all-eps",
            |o, _| o.spec.enterprise_project_id = Some("all_granted_eps".into()),
            "ProjectNotAllowed",
        ),
    ];
    for (name, attack, _) in &attacks {
        let mut obj = cluster_scan(name);
        attack(&mut obj, &trap_url);
        as_alice
            .create(&PostParams::default(), &obj)
            .await
            .expect("create");
    }
    // The tenant's own credentials, to a host not on the allow-list.
    own_secret(&alice, &ns_a, "alice-creds", "AKALICE", "SKALICE").await;
    let mut own_to_trap = with_secret(cluster_scan("own-to-my-host"), "alice-creds");
    own_to_trap.spec.endpoint = Some(trap_url.clone());
    as_alice
        .create(&PostParams::default(), &own_to_trap)
        .await
        .expect("create");
    // Another tenant's Secret, by name: looked up in the object's own namespace only.
    let borrowed = with_secret(cluster_scan("borrowed"), "bob-creds");
    as_alice
        .create(&PostParams::default(), &borrowed)
        .await
        .expect("create");
    // Plain http is refused at admission, with the rule in the message.
    let mut clear = with_secret(cluster_scan("in-clear"), "alice-creds");
    clear.spec.endpoint = Some(trap_url.replacen("https://", "http://", 1));
    match as_alice.create(&PostParams::default(), &clear).await {
        Err(kube::Error::Api(e)) if e.code == 422 => {
            assert!(e.message.contains("spec.endpoint"), "{e:?}")
        }
        other => panic!("an http endpoint must be refused at admission: {other:?}"),
    }

    // Tenant B: an ordinary scan with the operator's credentials, and one with B's own
    // credentials at the allowed partner endpoint.
    own_secret(&bob, &ns_b, "bob-creds", "AKBOB", "SKBOB").await;
    as_bob
        .create(&PostParams::default(), &cluster_scan("ordinary"))
        .await
        .expect("create");
    let mut to_partner = with_secret(cluster_scan("own-to-partner"), "bob-creds");
    to_partner.spec.endpoint = Some(partner_url.clone());
    as_bob
        .create(&PostParams::default(), &to_partner)
        .await
        .expect("create");

    let admin_b: Api<ClusterScanTask> = Api::namespaced(admin.clone(), &ns_b);
    let admin_a: Api<ClusterScanTask> = Api::namespaced(admin.clone(), &ns_a);
    for name in ["ordinary", "own-to-partner"] {
        wait_for(&admin_b, name, 60, |o| phase(o) == Some(Phase::Succeeded)).await;
    }
    let refused = attacks
        .iter()
        .map(|(name, _, reason)| (*name, *reason))
        .chain([("own-to-my-host", "EndpointNotAllowed")]);
    for (name, reason) in refused {
        let o = wait_for(&admin_a, name, 30, |o| phase(o) == Some(Phase::Failed)).await;
        assert_eq!(failed_reason(&o).as_deref(), Some(reason), "{name}");
        assert!(
            o.status.as_ref().and_then(|s| s.task_id.as_ref()).is_none(),
            "{name}: no task"
        );
    }
    let o = wait_for(&admin_a, "borrowed", 30, |o| {
        condition(o, "CredentialsReady").is_some_and(|(s, _)| s == "False")
    })
    .await;
    assert_eq!(
        condition(&o, "CredentialsReady").map(|(_, r)| r).as_deref(),
        Some("SecretNotFound"),
        "another tenant's Secret is not found from here"
    );
    op.stop().await;

    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "nothing reached the chosen host"
    );
    let users =
        |s: &Simulator| -> Vec<String> { s.created_tasks().into_iter().map(|t| t.user).collect() };
    assert_eq!(
        users(&sim),
        ["AKSIM"],
        "only B's ordinary scan reached the operator's HSS, with the operator's key"
    );
    assert_eq!(
        users(&partner),
        ["AKBOB"],
        "B's own key went only where B sent it"
    );
}
