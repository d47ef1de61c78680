//! Scraping the operator's `/metrics` as Prometheus does: over HTTPS (the operator's
//! self-signed certificate is not verified, as the chart's ServiceMonitor does not), with the
//! bearer token of a ServiceAccount bound to a metrics-reader ClusterRole. Panics with context,
//! as a test wants.

use std::time::Duration;

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::{
    cluster::{admin, namespace},
    identity::service_account_token,
};

/// The ClusterRole of this kit's reader: `get` on the non-resource URL `/metrics`, as the
/// chart's `<fullname>-metrics-reader`. (Its own name, so tests that create the chart's
/// roles never collide with it.)
pub const READER_ROLE: &str = "hss-tests-metrics-reader";

/// Creates (or updates) ClusterRole `name` granting `get` on `/metrics`.
pub async fn reader_role(admin: &Client, name: &str) {
    let role: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
    }))
    .expect("ClusterRole");
    Api::<ClusterRole>::all(admin.clone())
        .patch(name, &apply(), &Patch::Apply(&role))
        .await
        .unwrap_or_else(|e| panic!("ClusterRole {name}: {e}"));
}

/// ServiceAccount `ns/sa`, created unless it exists.
pub async fn service_account(admin: &Client, ns: &str, sa: &str) {
    let obj: ServiceAccount = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}),
    )
    .expect("ServiceAccount");
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .patch(sa, &apply(), &Patch::Apply(&obj))
        .await
        .unwrap_or_else(|e| panic!("ServiceAccount {ns}/{sa}: {e}"));
}

/// Binds ClusterRole `role` to ServiceAccount `ns/sa` (ClusterRoleBinding `role-ns-sa`).
pub async fn bind(admin: &Client, role: &str, ns: &str, sa: &str) {
    let name = format!("{role}-{ns}-{sa}");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
    }))
    .expect("ClusterRoleBinding");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(&name, &apply(), &Patch::Apply(&binding))
        .await
        .unwrap_or_else(|e| panic!("ClusterRoleBinding {name}: {e}"));
}

fn apply() -> PatchParams {
    PatchParams::apply("hss-tests").force()
}

/// A token that may read `/metrics` on this binary's control plane (a ServiceAccount bound
/// to [`READER_ROLE`]; made once per test binary).
pub async fn reader_token() -> String {
    static TOKEN: OnceCell<String> = OnceCell::const_new();
    TOKEN
        .get_or_init(|| async {
            let admin = admin().await;
            let ns = namespace(&admin, "metrics-reader").await;
            reader_role(&admin, READER_ROLE).await;
            service_account(&admin, &ns, "scraper").await;
            bind(&admin, READER_ROLE, &ns, "scraper").await;
            service_account_token(&admin, &ns, "scraper").await
        })
        .await
        .clone()
}

/// `GET https://127.0.0.1:PORT/metrics` with `token` as the bearer token (none: no header):
/// the status and the body; `None` when nothing answered.
pub async fn scrape(port: u16, token: Option<&str>) -> Option<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let mut req = http.get(format!("https://127.0.0.1:{port}/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// The operator's metrics text on `port`, read with [`reader_token`]; `None` when the
/// server did not answer 200.
pub async fn try_metrics(port: u16) -> Option<String> {
    let token = reader_token().await;
    match scrape(port, Some(&token)).await? {
        (200, text) => Some(text),
        _ => None,
    }
}

/// The operator's metrics text on `port`, read with [`reader_token`]. Panics unless 200.
pub async fn metrics(port: u16) -> String {
    let token = reader_token().await;
    match scrape(port, Some(&token)).await {
        Some((200, text)) => text,
        other => panic!("GET /metrics on {port} with a reader's token: {other:?}"),
    }
}
