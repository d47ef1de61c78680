//! The operator runs with exactly the permissions the chart grants, and says clearly what is
//! missing without them. It binds cluster-wide roles, to an identity no other test uses
//! (`system:serviceaccount:hss-system:hss-operator`).

use hss_operator::{
    crd::{ClusterScanTask, Phase},
    operator::{self, Error},
};
use hss_simulator::{SimConfig, Simulator};
use hss_testkit::cluster::*;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::{Api, api::PostParams};

/// The chart's cluster RBAC, rendered in deploy/manifests, bound to the test's restricted
/// identity (system:serviceaccount:hss-system:hss-operator).
fn chart_rbac() -> (Vec<ClusterRole>, Vec<ClusterRoleBinding>) {
    let text = std::fs::read_to_string(repo().join("deploy/manifests/hss-operator.yaml"))
        .expect("rendered manifests");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&text).expect("YAML");
    let mut roles = Vec::new();
    let mut bindings = Vec::new();
    for doc in docs {
        match doc.get("kind").and_then(|k| k.as_str()) {
            Some("ClusterRole") => roles.push(serde_json::from_value(doc).expect("ClusterRole")),
            Some("ClusterRoleBinding") => {
                let mut b: ClusterRoleBinding =
                    serde_json::from_value(doc).expect("ClusterRoleBinding");
                for s in b.subjects.iter_mut().flatten() {
                    s.namespace = Some("hss-system".into());
                }
                bindings.push(b);
            }
            _ => {}
        }
    }
    assert!(
        !roles.is_empty() && !bindings.is_empty(),
        "the chart renders cluster RBAC"
    );
    (roles, bindings)
}

#[tokio::test]
async fn the_operator_works_with_exactly_the_chart_rbac_and_names_what_is_missing_without_it() {
    let admin = admin().await;
    let ns = namespace(&admin, "rbac").await;
    let restricted = client_from(&control_plane().operator_kubeconfig).await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");

    // Without RBAC: refuses to start, listing the missing permissions.
    let err = operator::run_with(
        run_args(&sim.base_url(), &ns, &[]),
        restricted.clone(),
        Default::default(),
        std::future::pending(),
    )
    .await
    .expect_err("no permissions");
    let Error::Forbidden(missing) = &err else {
        panic!("expected Forbidden, got {err:?}")
    };
    assert!(
        missing
            .iter()
            .any(|m| m.contains("list clusterscantasks.hss.scanops.dev")),
        "{missing:?}"
    );
    assert!(err.to_string().contains("lacks permissions"), "{err}");

    // With the chart's RBAC: a scan runs to the end under the restricted identity.
    let (roles, bindings) = chart_rbac();
    let role_api: Api<ClusterRole> = Api::all(admin.clone());
    for r in &roles {
        role_api
            .create(&PostParams::default(), r)
            .await
            .expect("create ClusterRole");
    }
    let binding_api: Api<ClusterRoleBinding> = Api::all(admin.clone());
    for b in &bindings {
        binding_api
            .create(&PostParams::default(), b)
            .await
            .expect("create ClusterRoleBinding");
    }
    let op = Operator::start(
        restricted.clone(),
        run_args(&sim.base_url(), &ns, &[]),
        None,
    );
    let api: Api<ClusterScanTask> = Api::namespaced(admin.clone(), &ns);
    api.create(&PostParams::default(), &cluster_scan("least-privilege"))
        .await
        .expect("create");
    wait_for(&api, "least-privilege", 60, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    op.stop().await;
}
