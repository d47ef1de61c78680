//! The workloads a risk of the operator's own cluster affects (`--self-cluster-id`): looked up
//! after a findings read that covered that cluster, named in the results' `resources`
//! (ObjectReferences) and in one Report per affected namespace.
//!
//! # Protocol
//! After the findings of a cluster_scan that covered the self cluster were read, the worst
//! `--affected-max-risks` rows of that cluster (high first, as the report orders them) are
//! looked up with ListClusterRiskAffectResources: one call per risk, one page of [`PAGE`]
//! rows, all within [`DEADLINE`]. The calls run inside the findings read job, queued as the
//! object's namespace and spending the API's own budget like every other call.
//!
//! Guarantees: a result names at most [`NAMED`] resources, only those of the namespace the
//! report is in (a ClusterScanTask's own Report: its namespace; a namespace's Report: that
//! namespace); the others are counted in `properties` (`affectedResources` is HSS's total,
//! `affectedNamed` those named). Cluster-scoped resources are never named (no namespace's
//! owners own them). Under `--tenancy policy` nothing is looked up unless a policy selecting
//! the ClusterScanTask's namespace grants the self cluster (as it must to scan it).
//!
//! Assumptions: HSS's `resource_type` is a Kubernetes kind (`Deployment`, ...); a kind not in
//! [`api_version_of`] is named without `apiVersion`, which ObjectReference allows.
//!
//! Caveats: a risk whose lookup failed or did not fit in the deadline names no resource and
//! affects no namespace's Report this time (logged); a risk with more than [`PAGE`] resources
//! is counted right but named from the first page only. Namespaced Reports carry no
//! ownerReference (it cannot cross namespaces): they are labelled with the scan's uid
//! ([`SCAN_UID`]) and deleted by the ClusterScanTask's finalizer.
//!
//! Errors: none of its own; a failed lookup is logged with the client error's category.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::Row;
use crate::tenancy::grant::Grant;
use hss_client::{
    client::HssClient,
    results::AffectedResource,
    text::{NAME, bounded},
};

/// Resources named in one result.
pub const NAMED: usize = 20;
/// Rows asked for per risk: one page.
pub const PAGE: u32 = 100;
/// The longest the lookups of one read may take (at 5 calls a minute, 20 risks take 4).
pub const DEADLINE: Duration = Duration::from_secs(300);
/// Label of the namespaced Reports: the uid of the ClusterScanTask they come from.
pub const SCAN_UID: &str = "hss.scanops.dev/scan-uid";

/// A Kubernetes object a risk affects, as an ObjectReference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    pub namespace: Option<String>,
    pub kind: String,
    pub name: String,
    pub api_version: Option<&'static str>,
}

/// What a risk affects: HSS's total and the rows read (at most [`PAGE`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Affected {
    pub total: u64,
    pub resources: Vec<Resource>,
}

impl Affected {
    /// The resources of namespace `ns`, at most [`NAMED`].
    pub fn named_in(&self, ns: &str) -> Vec<&Resource> {
        self.resources
            .iter()
            .filter(|r| r.namespace.as_deref() == Some(ns))
            .take(NAMED)
            .collect()
    }
}

/// The group/version of a kind HSS names. Pure.
pub fn api_version_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "ControllerRevision" => {
            "apps/v1"
        }
        "Job" | "CronJob" => "batch/v1",
        "Pod"
        | "Service"
        | "ServiceAccount"
        | "ConfigMap"
        | "Secret"
        | "Namespace"
        | "PersistentVolumeClaim"
        | "PersistentVolume"
        | "Node"
        | "ReplicationController" => "v1",
        "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => {
            "rbac.authorization.k8s.io/v1"
        }
        "Ingress" | "NetworkPolicy" | "IngressClass" => "networking.k8s.io/v1",
        "PodDisruptionBudget" => "policy/v1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        _ => return None,
    })
}

/// The reference of a row HSS returned; None without a name or kind. Pure.
pub fn resource_of(r: &AffectedResource) -> Option<Resource> {
    let name = r.resource_name.as_deref().filter(|n| !n.is_empty())?;
    let kind = r.resource_type.as_deref().filter(|k| !k.is_empty())?;
    Some(Resource {
        namespace: r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(|n| bounded(n, NAME)),
        kind: bounded(kind, 64),
        name: bounded(name, NAME),
        api_version: api_version_of(kind),
    })
}

/// An ObjectReference of `r`.
pub fn reference(r: &Resource) -> Value {
    let mut v = json!({"kind": r.kind, "name": r.name});
    if let Some(a) = r.api_version {
        v["apiVersion"] = json!(a);
    }
    if let Some(ns) = &r.namespace {
        v["namespace"] = json!(ns);
    }
    v
}

/// The namespaces `rows` affect. Pure.
pub fn namespaces(rows: &[Row]) -> BTreeSet<String> {
    rows.iter()
        .filter_map(|r| r.affected.as_ref())
        .flat_map(|a| a.resources.iter().filter_map(|r| r.namespace.clone()))
        .collect()
}

/// Whether a ClusterScanTask's namespace may have the self cluster's affected resources
/// looked up: `grant` is None in `open` tenancy, `Some(None)` when no policy selects the
/// namespace. Pure.
pub fn granted(grant: Option<Option<&Grant>>, self_cluster: &str) -> bool {
    match grant {
        None => true,
        Some(None) => false,
        Some(Some(g)) => g
            .policies
            .iter()
            .any(|(_, p)| p.all_clusters || p.cluster_ids.iter().any(|c| c == self_cluster)),
    }
}

/// Looks up the worst `max_risks` of `rows` (already worst first), within [`DEADLINE`].
/// Returns how many were looked up.
pub async fn look_up(hss: &HssClient, cluster: &str, rows: &mut [Row], max_risks: usize) -> usize {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut looked = 0;
    for row in rows.iter_mut().take(max_risks) {
        if row.id.is_empty() {
            continue;
        }
        let call = hss.list_cluster_risk_affect_resources(&row.id, Some(cluster), 0, PAGE);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(page)) => {
                let resources: Vec<Resource> = page
                    .data_list
                    .iter()
                    .take(PAGE as usize)
                    .filter_map(resource_of)
                    .collect();
                row.affected = Some(Affected {
                    total: u64::try_from(page.total_num.max(0))
                        .unwrap_or(0)
                        .max(resources.len() as u64),
                    resources,
                });
                looked += 1;
            }
            Ok(Err(e)) => {
                tracing::warn!(category = e.category(), error = %crate::report_error(&e),
                    "looking up a risk's affected resources failed");
            }
            Err(_) => {
                tracing::warn!(
                    looked,
                    "looking up affected resources ran out of time; the rest are not named"
                );
                break;
            }
        }
    }
    looked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ClusterScanPolicySpec;

    fn res(ns: Option<&str>, kind: &str, name: &str) -> AffectedResource {
        AffectedResource {
            resource_name: Some(name.into()),
            resource_id: None,
            resource_type: Some(kind.into()),
            namespace: ns.map(Into::into),
            hit_rule: None,
            hit_path_list: vec![],
            first_scan_time: None,
            last_scan_time: None,
        }
    }

    #[test]
    fn kinds_map_to_the_object_reference_hss_leaves_out() {
        // (kind, apiVersion, reason)
        let cases = [
            ("Deployment", Some("apps/v1"), "workloads are apps/v1"),
            ("CronJob", Some("batch/v1"), "jobs are batch/v1"),
            (
                "ServiceAccount",
                Some("v1"),
                "the core group has no group name",
            ),
            (
                "ClusterRoleBinding",
                Some("rbac.authorization.k8s.io/v1"),
                "RBAC kinds",
            ),
            (
                "Widget",
                None,
                "an unknown kind is named without apiVersion",
            ),
        ];
        for (kind, want, why) in cases {
            assert_eq!(api_version_of(kind), want, "{why}");
        }
        let r = resource_of(&res(Some("shop"), "Deployment", "web")).expect("named");
        assert_eq!(
            reference(&r),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop"})
        );
        let cluster_scoped =
            resource_of(&res(Some(""), "ClusterRoleBinding", "admins")).expect("named");
        assert_eq!(cluster_scoped.namespace, None, "empty is cluster-scoped");
        assert_eq!(
            resource_of(&res(None, "", "x")),
            None,
            "no kind: no reference"
        );
    }

    #[test]
    fn a_namespace_sees_at_most_twenty_of_its_own_resources_and_none_of_anothers() {
        let mut resources: Vec<Resource> = (0..30)
            .map(|i| {
                resource_of(&res(Some("shop"), "Deployment", &format!("d{i}"))).expect("named")
            })
            .collect();
        resources.push(resource_of(&res(Some("payments"), "Deployment", "pay")).expect("named"));
        resources.push(resource_of(&res(None, "Namespace", "shop")).expect("named"));
        let a = Affected {
            total: 40,
            resources,
        };
        let shop = a.named_in("shop");
        assert_eq!(shop.len(), NAMED);
        assert!(shop.iter().all(|r| r.namespace.as_deref() == Some("shop")));
        let pay = a.named_in("payments");
        assert_eq!(pay.len(), 1);
        assert_eq!(pay[0].name, "pay");
        assert!(
            a.named_in("team-a").is_empty(),
            "a tenant sees nothing of others"
        );
    }

    #[test]
    fn under_policy_tenancy_only_a_grant_of_the_self_cluster_allows_lookups() {
        let grant = |ids: &[&str], all: bool| {
            let spec: ClusterScanPolicySpec = serde_json::from_value(json!({
                "namespaceSelector": {}, "clusterIds": ids, "allClusters": all}))
            .expect("a policy");
            Grant {
                policies: vec![("p".into(), spec)],
                ..Default::default()
            }
        };
        // (grant, allowed, reason)
        let other = grant(&["c-other"], false);
        let own = grant(&["c-self"], false);
        let all = grant(&[], true);
        let cases = [
            (None, true, "open tenancy: no policy to ask"),
            (Some(None), false, "no policy selects the namespace"),
            (Some(Some(&other)), false, "granted another cluster only"),
            (Some(Some(&own)), true, "granted the self cluster"),
            (Some(Some(&all)), true, "granted every cluster"),
        ];
        for (g, want, why) in cases {
            assert_eq!(granted(g, "c-self"), want, "{why}");
        }
    }
}
