//! Identities other than the admin: a ServiceAccount's TokenRequest token, as a pod or a
//! tenant's CI job would hold it, written into a kubeconfig for the test's control plane.

use std::path::{Path, PathBuf};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    config::Kubeconfig,
};
use serde_json::json;

use crate::cluster::{client_from, control_plane};

/// A one-hour TokenRequest token of ServiceAccount `ns/sa` (which must exist).
pub async fn service_account_token(admin: &Client, ns: &str, sa: &str) -> String {
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(
            sa,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"))
        .status
        .expect("token")
        .token
}

/// A kubeconfig at `path` holding only a one-hour TokenRequest token of ServiceAccount
/// `ns/sa` (which must exist).
pub async fn service_account_kubeconfig(admin: &Client, ns: &str, sa: &str, path: &Path) {
    let token = service_account_token(admin, ns, sa).await;
    let admin_kc = Kubeconfig::read_from(&control_plane().kubeconfig).expect("kubeconfig");
    let cluster = admin_kc.clusters[0].cluster.as_ref().expect("cluster");
    let kc = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": sa}}],
    });
    std::fs::write(path, kc.to_string()).expect("write kubeconfig");
}

/// A tenant: ServiceAccount `tenant` in `ns`, bound to a Role that may create and read
/// ClusterScanTasks and Secrets in `ns` and nothing else. Returns a client acting as it.
pub async fn tenant(admin: &Client, ns: &str) -> Client {
    let apply = PatchParams::apply("hss-tests").force();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "tenant"}})).expect("sa");
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .patch("tenant", &apply, &Patch::Apply(&sa))
        .await
        .expect("tenant ServiceAccount");
    let verbs = ["create", "get", "list", "watch"];
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "tenant"},
        "rules": [
            {"apiGroups": ["hss.scanops.dev"], "resources": ["clusterscantasks"], "verbs": verbs},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": verbs},
        ],
    }))
    .expect("role");
    Api::<Role>::namespaced(admin.clone(), ns)
        .patch("tenant", &apply, &Patch::Apply(&role))
        .await
        .expect("tenant Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "tenant"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .patch("tenant", &apply, &Patch::Apply(&binding))
        .await
        .expect("tenant RoleBinding");
    let path: PathBuf = control_plane().dir.join(format!("tenant-{ns}.kubeconfig"));
    service_account_kubeconfig(admin, ns, "tenant", &path).await;
    client_from(&path).await
}

/// A team member: ServiceAccount `member` in `ns`, bound in `ns` (RoleBinding) to each of the
/// ClusterRoles `roles` (e.g. the chart's aggregated view and edit roles, which Kubernetes'
/// controller-manager would fold into `view`/`edit`; the test control plane runs none).
/// Returns a client acting as it.
pub async fn member(admin: &Client, ns: &str, roles: &[&str]) -> Client {
    let apply = PatchParams::apply("hss-tests").force();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "member"}})).expect("sa");
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .patch("member", &apply, &Patch::Apply(&sa))
        .await
        .expect("member ServiceAccount");
    for role in roles {
        let name = format!("member-{role}");
        let binding: RoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "member", "namespace": ns}],
        }))
        .expect("binding");
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .patch(&name, &apply, &Patch::Apply(&binding))
            .await
            .expect("member RoleBinding");
    }
    let path: PathBuf = control_plane().dir.join(format!("member-{ns}.kubeconfig"));
    service_account_kubeconfig(admin, ns, "member", &path).await;
    client_from(&path).await
}
