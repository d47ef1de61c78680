//! Which Kubernetes resources each simulated cluster risk affects, served by
//! ListClusterRiskAffectResources: deterministic per (seed, cluster, risk id), so tests know the
//! rows before they ask.
//!
//! A risk affects 1 to [`MAX_AFFECTED`] resources (drawn apart from `risk_num`, which the SDK
//! documents as the number of risks, 风险数量), of kinds that fit its category
//! (a `workload` risk names Deployments and DaemonSets, an `access_control` one RoleBindings
//! and ServiceAccounts, ...), in namespaces drawn from [`NAMESPACES`], so a risk with several
//! resources usually spans several namespaces. Two exceptions:
//! - `control_plane` risks affect no Kubernetes resource (the API server is not one): the
//!   listing is empty;
//! - `network` risks name the Namespace left without a policy, a cluster-scoped object with no
//!   `namespace`, as are ClusterRoleBindings.
//!
//! Assumptions (the documentation does not say): a risk id HSS does not hold answers an empty
//! page, not an error; `first_scan_time` is the scan that found the risk, like `last_scan_time`
//! (the simulator keeps only the latest scan per cluster, as HSS does); `resource_name` filters
//! by substring, `resource_type` and `namespace` exactly.

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{Store, len_i64};
use hss_client::results::{
    AffectedResource, ClusterRisk, ListClusterRiskAffectResourcesResponse, RiskType,
};

/// Most resources one simulated risk affects: enough for three pages of the smallest size.
pub const MAX_AFFECTED: usize = 25;

/// The namespaces affected resources live in.
pub const NAMESPACES: [&str; 5] = ["default", "shop", "payments", "monitoring", "kube-system"];

/// `(kind, namespaced, hit rule, hit path)` a resource of a risk category is found with.
fn kinds(category: &str) -> &'static [(&'static str, bool, &'static str, &'static str)] {
    const WORKLOAD: &str = "spec.template.spec.containers[0].securityContext";
    match category {
        "workload" => &[
            (
                "Deployment",
                true,
                "containers must not run privileged",
                WORKLOAD,
            ),
            (
                "DaemonSet",
                true,
                "containers must set resource limits",
                "spec.template.spec.containers[0].resources.limits",
            ),
            (
                "StatefulSet",
                true,
                "containers must not run privileged",
                WORKLOAD,
            ),
        ],
        "access_control" => &[
            (
                "ServiceAccount",
                true,
                "service account tokens must not be mounted automatically",
                "automountServiceAccountToken",
            ),
            (
                "RoleBinding",
                true,
                "default accounts must not be bound to admin roles",
                "roleRef.name",
            ),
            (
                "ClusterRoleBinding",
                false,
                "cluster-admin must not be bound to a default account",
                "subjects[0].name",
            ),
        ],
        "secrets" => &[(
            "Deployment",
            true,
            "secrets must not be passed in environment variables",
            "spec.template.spec.containers[0].env[0].value",
        )],
        "node_escape" => &[
            (
                "Pod",
                true,
                "host paths must not be mounted",
                "spec.volumes[0].hostPath.path",
            ),
            (
                "DaemonSet",
                true,
                "host paths must not be mounted",
                "spec.template.spec.volumes[0].hostPath.path",
            ),
        ],
        "network" => &[(
            "Namespace",
            false,
            "every namespace needs a network policy",
            "metadata.name",
        )],
        _ => &[],
    }
}

/// The resources `risk` affects under `seed` (see the module documentation).
pub fn affected(seed: u64, risk: &ClusterRisk) -> Vec<AffectedResource> {
    let risk_id = risk.risk_id.as_deref().unwrap_or_default();
    let kinds = kinds(risk.risk_category.as_deref().unwrap_or_default());
    if kinds.is_empty() {
        return Vec::new();
    }
    let digest = |i: u64| -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"hss-sim-affected");
        h.update(seed.to_be_bytes());
        h.update(risk.cluster_id.as_bytes());
        h.update([0]);
        h.update(risk_id.as_bytes());
        h.update(i.to_be_bytes());
        h.finalize().into()
    };
    let n = 1 + usize::from(digest(u64::MAX)[0]) % MAX_AFFECTED;
    (0..n)
        .map(|i| {
            let d = digest(u64::try_from(i).unwrap_or_default());
            let (kind, namespaced, rule, path) = kinds[usize::from(d[0]) % kinds.len()];
            let namespace = NAMESPACES[usize::from(d[1]) % NAMESPACES.len()];
            let name = match kind {
                "Namespace" => namespace.to_string(),
                _ => format!("{}-{}", kind.to_ascii_lowercase(), hex::encode(&d[2..5])),
            };
            let mut hit_path_list = vec![path.to_string()];
            if d[5] % 3 == 0 && namespaced {
                hit_path_list.push(path.replacen("[0]", "[1]", 1));
            }
            AffectedResource {
                resource_name: Some(name),
                resource_id: Some(hex::encode(&d[16..32])),
                resource_type: Some(kind.to_string()),
                namespace: namespaced.then(|| namespace.to_string()),
                hit_rule: Some(rule.to_string()),
                hit_path_list,
                first_scan_time: risk.last_scan_time,
                last_scan_time: risk.last_scan_time,
            }
        })
        .collect()
}

/// The filters ListClusterRiskAffectResources takes besides paging.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AffectedFilter<'a> {
    pub cluster_id: Option<&'a str>,
    pub resource_name: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub namespace: Option<&'a str>,
}

impl Store {
    /// Every resource the risk `risk_id` of `project` affects now, in `cluster_id` or in every
    /// cluster holding a risk of that id, by cluster.
    pub(crate) fn all_affected_resources(
        &self,
        project: &str,
        risk_id: &str,
        cluster_id: Option<&str>,
        now: Instant,
    ) -> Vec<AffectedResource> {
        RiskType::ALL
            .into_iter()
            .flat_map(|rt| self.all_cluster_risks(project, rt, now))
            .filter(|r| r.risk_id.as_deref() == Some(risk_id))
            .filter(|r| cluster_id.is_none_or(|c| r.cluster_id == c))
            .flat_map(|r| affected(self.seed, &r))
            .collect()
    }

    /// ListClusterRiskAffectResources: one page, filtered.
    pub(crate) fn affected_resources(
        &self,
        project: &str,
        risk_id: &str,
        filter: AffectedFilter<'_>,
        (offset, limit): (usize, usize),
        now: Instant,
    ) -> ListClusterRiskAffectResourcesResponse {
        let matching: Vec<AffectedResource> = self
            .all_affected_resources(project, risk_id, filter.cluster_id, now)
            .into_iter()
            .filter(|r| {
                filter.resource_name.is_none_or(|n| {
                    r.resource_name
                        .as_deref()
                        .is_some_and(|name| name.contains(n))
                })
            })
            .filter(|r| {
                filter
                    .resource_type
                    .is_none_or(|t| r.resource_type.as_deref() == Some(t))
            })
            .filter(|r| {
                filter
                    .namespace
                    .is_none_or(|ns| r.namespace.as_deref() == Some(ns))
            })
            .collect();
        ListClusterRiskAffectResourcesResponse {
            total_num: len_i64(matching.len()),
            data_list: matching.into_iter().skip(offset).take(limit).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::state::findings::risks;

    #[test]
    fn affected_resources_are_deterministic_span_namespaces_and_some_risks_have_none() {
        let all: Vec<ClusterRisk> = (0..30)
            .flat_map(|c| {
                RiskType::ALL
                    .into_iter()
                    .flat_map(move |rt| risks(7, &format!("c{c}"), rt, 1_000))
            })
            .collect();
        let mut several_namespaces = 0;
        let mut none = 0;
        let mut more_than_two_pages = 0;
        for risk in &all {
            let rows = affected(7, risk);
            assert_eq!(rows, affected(7, risk), "deterministic");
            let namespaces: BTreeSet<_> = rows.iter().filter_map(|r| r.namespace.clone()).collect();
            several_namespaces += usize::from(namespaces.len() >= 2);
            none += usize::from(rows.is_empty());
            if risk.risk_category.as_deref() == Some("control_plane") {
                assert!(rows.is_empty(), "the API server is no Kubernetes resource");
            } else {
                assert!((1..=MAX_AFFECTED).contains(&rows.len()), "{}", rows.len());
            }
            more_than_two_pages += usize::from(rows.len() > 20);
            for row in &rows {
                assert_eq!(row.last_scan_time, Some(1_000));
                assert!(!row.hit_path_list.is_empty());
                let cluster_scoped = matches!(
                    row.resource_type.as_deref(),
                    Some("Namespace" | "ClusterRoleBinding")
                );
                assert_eq!(row.namespace.is_none(), cluster_scoped, "{row:?}");
            }
        }
        assert!(
            several_namespaces >= 5,
            "{several_namespaces} of {}",
            all.len()
        );
        assert!(none >= 2, "{none} of {}", all.len());
        assert!(
            more_than_two_pages >= 2,
            "{more_than_two_pages} of {}",
            all.len()
        );
        let some = all
            .iter()
            .find(|r| !affected(7, r).is_empty())
            .expect("one");
        assert_ne!(affected(7, some), affected(8, some), "the seed matters");
    }
}
