//! A tenant (a ServiceAccount that may create ClusterScanTasks and Secrets in its own namespace,
//! nothing else) cannot make the operator send its own credentials, or the tenant's, where the
//! tenant chose: every override is refused before anything is sent, with a clear condition, and
//! another tenant's scans, with the operator's credentials and with its own, still succeed.

use std::sync::atomic::Ordering;

use hss_operator::crd::{ClusterScanPolicy, ClusterScanTask, Phase};
use hss_simulator::{Credential, SimConfig, Simulator};
use hss_testkit::{cluster::*, identity::tenant, tls};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

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

/// A ClusterScanPolicy selecting one namespace by the name label the API server sets.
async fn policy(admin: &Client, name: &str, ns: &str, grant: serde_json::Value) {
    let mut spec = serde_json::json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
    });
    spec.as_object_mut()
        .expect("spec")
        .extend(grant.as_object().expect("grant").clone());
    let obj: ClusterScanPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "hss.scanops.dev/v1alpha1", "kind": "ClusterScanPolicy",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("policy");
    Api::<ClusterScanPolicy>::all(admin.clone())
        .patch(
            name,
            &PatchParams::apply("hss-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply the policy");
}

fn specific(name: &str, clusters: &[&str]) -> ClusterScanTask {
    scan(
        name,
        serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
            "scanTypes": ["cluster_vul"], "rangeType": "specific_cluster", "clusterIds": clusters}}),
    )
}

fn benchmark(name: &str, clusters: &[&str]) -> ClusterScanTask {
    scan(
        name,
        serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
            "scanTypes": ["benchmark"], "rangeType": "specific_cluster", "clusterIds": clusters}}),
    )
}

fn iac(name: &str, files: &[&str]) -> ClusterScanTask {
    scan(
        name,
        serde_json::json!({"taskType": "iac_scan", "iacScan": {"fileType": "k8s_yaml", "fileIds": files}}),
    )
}

#[tokio::test]
async fn policies_keep_each_team_to_its_own_clusters_files_and_scan_types() {
    let admin = admin().await;
    let ns_a = namespace(&admin, "policy-a").await;
    let ns_b = namespace(&admin, "policy-b").await;
    let ns_c = namespace(&admin, "policy-none").await;
    let (pol_a, pol_b) = (format!("{ns_a}-team"), format!("{ns_b}-team"));
    policy(
        &admin,
        &pol_a,
        &ns_a,
        serde_json::json!({"clusterIds": ["cce-sim-0001"]}),
    )
    .await;
    policy(
        &admin,
        &pol_b,
        &ns_b,
        serde_json::json!({"clusterIds": ["cce-sim-0002"], "scanTypes": ["cluster_vul"], "iacScan": true, "fileIds": ["iac-sim-deployment"]}),
    )
    .await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let watched = format!("{ns_b},{ns_c}");
    let op = Operator::start(
        admin.clone(),
        run_args(
            &sim.base_url(),
            &ns_a,
            &["--namespace", &watched, "--tenancy", "policy"],
        ),
        None,
    );
    let alice: Api<ClusterScanTask> = Api::namespaced(tenant(&admin, &ns_a).await, &ns_a);
    let bob: Api<ClusterScanTask> = Api::namespaced(tenant(&admin, &ns_b).await, &ns_b);
    let carol: Api<ClusterScanTask> = Api::namespaced(tenant(&admin, &ns_c).await, &ns_c);
    let create = |api: &Api<ClusterScanTask>, obj: ClusterScanTask| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &obj)
                .await
                .expect("create")
        }
    };
    // Each attack, with what the refusal must name.
    let attacks = [
        (
            &alice,
            cluster_scan("every-cluster"),
            "rangeType all_cluster",
        ),
        (
            &alice,
            specific("bobs-cluster", &["cce-sim-0002"]),
            "cce-sim-0002",
        ),
        (
            &alice,
            iac("any-file", &["iac-sim-deployment"]),
            "taskType iac_scan",
        ),
        (
            &bob,
            iac("alices-file", &["iac-sim-ingress"]),
            "iac-sim-ingress",
        ),
        (&bob, benchmark("benchmark", &["cce-sim-0002"]), "benchmark"),
        (
            &carol,
            specific("no-policy", &["cce-sim-0003"]),
            "no ClusterScanPolicy selects",
        ),
    ];
    for (api, obj, _) in &attacks {
        create(api, obj.clone()).await;
    }
    create(&alice, specific("own", &["cce-sim-0001"])).await;
    create(&bob, specific("own", &["cce-sim-0002"])).await;
    create(&bob, iac("own-file", &["iac-sim-deployment"])).await;

    for (api, obj, names) in &attacks {
        let name = obj.metadata.name.as_deref().expect("name");
        let admin_api: Api<ClusterScanTask> =
            Api::namespaced(admin.clone(), api.namespace().expect("namespaced"));
        let o = wait_for(&admin_api, name, 60, |o| phase(o) == Some(Phase::Failed)).await;
        assert_eq!(failed_reason(&o).as_deref(), Some("NotPermitted"), "{name}");
        let message = condition_message(&o, "Failed");
        assert!(message.contains(names), "{name}: {message}");
        assert!(
            o.status.as_ref().and_then(|s| s.task_id.as_ref()).is_none(),
            "{name}: no task"
        );
    }
    // Each team's own scans succeed, naming only its own clusters.
    let admin_a: Api<ClusterScanTask> = Api::namespaced(admin.clone(), &ns_a);
    let admin_b: Api<ClusterScanTask> = Api::namespaced(admin.clone(), &ns_b);
    let clusters = |o: &ClusterScanTask| -> Vec<String> {
        o.status
            .iter()
            .flat_map(|s| s.results.iter().map(|r| r.id.clone()))
            .collect()
    };
    let own_a = wait_for(&admin_a, "own", 90, |o| phase(o) == Some(Phase::Succeeded)).await;
    assert_eq!(clusters(&own_a), ["cce-sim-0001"]);
    let own_b = wait_for(&admin_b, "own", 90, |o| phase(o) == Some(Phase::Succeeded)).await;
    assert_eq!(clusters(&own_b), ["cce-sim-0002"]);
    wait_for(&admin_b, "own-file", 90, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;

    // The policy's status names what it selects; a change applies to the next scan.
    let policies: Api<ClusterScanPolicy> = Api::all(admin.clone());
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            policies.clone(),
            &pol_a,
            |p: Option<&ClusterScanPolicy>| {
                p.and_then(|p| p.status.as_ref())
                    .is_some_and(|s| s.namespaces == [ns_a.clone()])
            },
        ),
    )
    .await
    .expect("the policy's status lists its namespace")
    .expect("watch");
    policy(
        &admin,
        &pol_a,
        &ns_a,
        serde_json::json!({"clusterIds": ["cce-sim-0001", "cce-sim-0003"]}),
    )
    .await;
    // The status is written from the same cache the decision reads: once it describes the new
    // generation, the operator decides with it.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            policies.clone(),
            &pol_a,
            |p: Option<&ClusterScanPolicy>| {
                p.is_some_and(|p| {
                    p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
                })
            },
        ),
    )
    .await
    .expect("the operator sees the changed policy")
    .expect("watch");
    create(&alice, specific("newly-granted", &["cce-sim-0003"])).await;
    let o = wait_for(&admin_a, "newly-granted", 90, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(clusters(&o), ["cce-sim-0003"]);
    op.stop().await;
    assert_eq!(
        sim.created_tasks().len(),
        4,
        "HSS saw only the granted scans: A's own, B's own two, A's newly granted one"
    );
}

#[tokio::test]
async fn a_task_id_written_into_status_by_anyone_but_the_operator_is_not_followed() {
    let admin = admin().await;
    let ns = namespace(&admin, "forged-status").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let claims = format!("{ns}/hss-claims");
    let op = Operator::start(
        admin.clone(),
        run_args(&sim.base_url(), &ns, &["--claims-configmap", &claims]),
        None,
    );
    let api: Api<ClusterScanTask> = Api::namespaced(admin.clone(), &ns);
    api.create(&PostParams::default(), &cluster_scan("victim"))
        .await
        .expect("create");
    let victim = wait_for(&api, "victim", 60, |o| phase(o) == Some(Phase::Succeeded)).await;
    let stolen = victim
        .status
        .as_ref()
        .and_then(|s| s.task_id.clone())
        .expect("task id");
    assert!(
        victim
            .status
            .as_ref()
            .and_then(|s| s.task_id_seal.as_ref())
            .is_some(),
        "the operator seals the task ids it writes"
    );
    // Someone who may write status points an object at another object's task.
    api.create(&PostParams::default(), &cluster_scan("thief"))
        .await
        .expect("create");
    api.patch_status(
        "thief",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"phase": "Submitted", "taskId": stolen}})),
    )
    .await
    .expect("patch status");
    let thief = wait_for(&api, "thief", 60, |o| phase(o) == Some(Phase::Failed)).await;
    assert_eq!(failed_reason(&thief).as_deref(), Some("TaskIdNotRecorded"));
    let st = thief.status.expect("status");
    assert!(
        st.findings.is_none() && st.results.is_empty(),
        "nothing of the task is read: {st:?}"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_trigger_whose_template_the_policy_refuses_is_not_ready_and_creates_no_run() {
    use hss_operator::crd::ClusterScanTrigger;
    let admin = admin().await;
    let ns = namespace(&admin, "policy-trigger").await;
    policy(
        &admin,
        &format!("{ns}-team"),
        &ns,
        serde_json::json!({"clusterIds": ["cce-sim-0001"]}),
    )
    .await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let op = Operator::start(
        admin.clone(),
        run_args(&sim.base_url(), &ns, &["--tenancy", "policy"]),
        None,
    );
    let trigger: ClusterScanTrigger = serde_json::from_value(serde_json::json!({
        "apiVersion": "hss.scanops.dev/v1alpha1", "kind": "ClusterScanTrigger",
        "metadata": {"name": "everything", "annotations": {"hss.scanops.dev/run-now": "1"}},
        "spec": {"template": {"spec": {"taskType": "cluster_scan", "clusterScan": {
            "scanTypes": ["cluster_vul"], "rangeType": "all_cluster"}}}},
    }))
    .expect("trigger");
    let triggers_admin: Api<ClusterScanTrigger> = Api::namespaced(admin.clone(), &ns);
    triggers_admin
        .create(&PostParams::default(), &trigger)
        .await
        .expect("create the trigger");
    let ready = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        kube::runtime::wait::await_condition(
            triggers_admin.clone(),
            "everything",
            |t: Option<&ClusterScanTrigger>| {
                t.and_then(|t| t.status.as_ref())
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == "False" && c.reason == "NotPermitted")
            },
        ),
    )
    .await
    .expect("Ready=False, NotPermitted")
    .expect("watch")
    .expect("trigger");
    let message = ready
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("rangeType all_cluster"), "{message}");
    let runs = Api::<ClusterScanTask>::namespaced(admin.clone(), &ns)
        .list(&Default::default())
        .await
        .expect("list");
    assert!(
        runs.items.is_empty(),
        "no run was created: {:?}",
        runs.items
    );
    op.stop().await;
    assert!(sim.created_tasks().is_empty());
}

#[tokio::test]
async fn a_namespace_over_its_policys_max_unfinished_waits_spending_nothing_oldest_first() {
    let admin = admin().await;
    let ns = namespace(&admin, "policy-cap").await;
    policy(
        &admin,
        &format!("{ns}-team"),
        &ns,
        serde_json::json!({"allClusters": true, "maxUnfinished": 2}),
    )
    .await;
    let config = SimConfig {
        finish_after: std::time::Duration::from_secs(3),
        ..Default::default()
    };
    let sim = Simulator::start(config.clone()).await.expect("simulator");
    let op = Operator::start(
        admin.clone(),
        run_args(&sim.base_url(), &ns, &["--tenancy", "policy"]),
        None,
    );
    let api: Api<ClusterScanTask> = Api::namespaced(admin.clone(), &ns);
    let names: Vec<String> = (1..=5).map(|i| format!("scan-{i}")).collect();
    for name in &names {
        api.create(&PostParams::default(), &cluster_scan(name))
            .await
            .expect("create");
    }
    let waiting = wait_for(&api, "scan-5", 30, |o| {
        condition(o, "Throttled").is_some_and(|(s, r)| s == "True" && r == "NamespaceLimit")
    })
    .await;
    assert!(
        waiting
            .status
            .as_ref()
            .and_then(|s| s.task_id.as_ref())
            .is_none()
    );
    let mut submitted = Vec::new();
    for name in &names {
        let o = wait_for(&api, name, 120, |o| phase(o) == Some(Phase::Succeeded)).await;
        submitted.push(
            o.status
                .and_then(|s| s.submitted_at)
                .expect("submittedAt")
                .0,
        );
    }
    op.stop().await;
    // The first two are under the cap and race only for the budget; every later one waits for
    // a free place and gets it oldest first, after both of them.
    let first_two = submitted[..2].iter().max().copied().expect("two");
    let waited = &submitted[2..];
    let mut sorted = waited.to_vec();
    sorted.sort();
    assert_eq!(waited, sorted.as_slice(), "oldest first: {submitted:?}");
    assert!(
        waited.iter().all(|t| *t >= first_two),
        "a capped scan went before one under the cap: {submitted:?}"
    );
    // At most two tasks ran at once: each task runs `finish_after`, so no three were created
    // within one such span.
    let created: Vec<i64> = sim
        .created_tasks()
        .iter()
        .map(|t| t.created_at_ms)
        .collect();
    assert_eq!(created.len(), 5, "one task per scan");
    let span = config.finish_after.as_millis() as i64;
    for &at in &created {
        let overlapping = created
            .iter()
            .filter(|&&c| c <= at && c > at - span)
            .count();
        assert!(
            overlapping <= 2,
            "three tasks at once around {at}: {created:?}"
        );
    }
}

#[tokio::test]
async fn a_namespace_with_many_waiting_scans_does_not_starve_the_others() {
    let admin = admin().await;
    let flood = namespace(&admin, "fair-flood").await;
    let quiet_b = namespace(&admin, "fair-b").await;
    let quiet_c = namespace(&admin, "fair-c").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let watched = format!("{quiet_b},{quiet_c}");
    // One CreateTask a second: the 24 scans need 24 tokens.
    let op = Operator::start(
        admin.clone(),
        run_args(
            &sim.base_url(),
            &flood,
            &["--namespace", &watched, "--budget-per-minute", "60"],
        ),
        None,
    );
    let api = |ns: &str| Api::<ClusterScanTask>::namespaced(admin.clone(), ns);
    for i in 0..20 {
        api(&flood)
            .create(
                &PostParams::default(),
                &cluster_scan(&format!("flood-{i:02}")),
            )
            .await
            .expect("create");
    }
    for ns in [&quiet_b, &quiet_c] {
        for i in 0..2 {
            api(ns)
                .create(&PostParams::default(), &cluster_scan(&format!("scan-{i}")))
                .await
                .expect("create");
        }
    }
    let has_task = |o: &ClusterScanTask| o.status.as_ref().is_some_and(|s| s.task_id.is_some());
    for ns in [&quiet_b, &quiet_c] {
        for i in 0..2 {
            wait_for(&api(ns), &format!("scan-{i}"), 60, has_task).await;
        }
    }
    let flood_done = api(&flood)
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|o| has_task(o))
        .count();
    // Equal shares: while all three wait, each gets a third of the tokens. The quiet ones' four
    // tokens come with about as many of the flood's (plus what it took before they queued).
    assert!(
        flood_done <= 8,
        "the flooding namespace took {flood_done} tokens before the others' four"
    );
    let waiting = api(&flood)
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .find(|o| !has_task(o))
        .expect("the flood still waits");
    let message = condition_message(&waiting, "Throttled");
    assert!(
        message.contains("in this namespace's queue; about"),
        "{message}"
    );
    for i in 0..20 {
        wait_for(&api(&flood), &format!("flood-{i:02}"), 90, has_task).await;
    }
    op.stop().await;
    assert_eq!(
        sim.created_tasks().len(),
        24,
        "every token used, one task per scan"
    );
}
