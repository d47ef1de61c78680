//! The decision, pure: what the policies selecting a namespace grant together ([`Grant`]), and
//! whether a ClusterScanTask's spec stays inside it ([`Grant::permits`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use crate::controller::policy::Refusal;
use crate::crd::{ClusterScanPolicy, ClusterScanPolicySpec, ClusterScanTaskSpec};
use hss_client::model::{RangeType, ScanType, TaskType};

/// The condition reason of every refusal.
pub const NOT_PERMITTED: &str = "NotPermitted";

/// What the policies selecting one namespace grant together. Each policy grants its own
/// combinations: a cluster of one policy is not scanned with a scan type or project only
/// another policy grants.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Grant {
    /// The selecting policies by name, sorted by name: who grants it.
    pub policies: Vec<(String, ClusterScanPolicySpec)>,
    /// The largest share of the selecting policies.
    pub share: u32,
    /// The smallest non-zero cap; None: no cap.
    pub max_unfinished: Option<u32>,
}

/// Whether `selector` selects a namespace with `labels`. An invalid selector selects nothing
/// (the policy's status says why).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    match Selector::try_from(selector.clone()) {
        Ok(s) => s.matches(labels),
        Err(_) => false,
    }
}

/// What the policies selecting a namespace with these labels grant together; None when no
/// policy selects it.
pub fn grant_for<'a>(
    labels: &BTreeMap<String, String>,
    policies: impl IntoIterator<Item = &'a ClusterScanPolicy>,
) -> Option<Grant> {
    let mut selecting: Vec<(String, ClusterScanPolicySpec)> = policies
        .into_iter()
        .filter(|p| selects(&p.spec.namespace_selector, labels))
        .map(|p| (p.name_any(), p.spec.clone()))
        .collect();
    if selecting.is_empty() {
        return None;
    }
    selecting.sort_by(|a, b| a.0.cmp(&b.0));
    let share = selecting
        .iter()
        .map(|(_, p)| p.share.max(1))
        .max()
        .unwrap_or(1);
    let max_unfinished = selecting
        .iter()
        .map(|(_, p)| p.max_unfinished)
        .filter(|m| *m > 0)
        .min();
    Some(Grant {
        policies: selecting,
        share,
        max_unfinished,
    })
}

/// What a scan asks for, as the grant sees it.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub namespace: &'a str,
    pub spec: &'a ClusterScanTaskSpec,
    /// The project the object's settings resolve to.
    pub project: &'a str,
    /// The operator's own project.
    pub operator_project: &'a str,
}

fn types_ok(p: &ClusterScanPolicySpec, t: ScanType) -> bool {
    p.scan_types.is_empty() || p.scan_types.contains(&t)
}

/// Checks a scan that would use the operator's own credentials. `grant` is None when no
/// policy selects the namespace. The refusal names what is not granted and who could grant it.
pub fn permits(grant: Option<&Grant>, asked: Asked<'_>) -> Result<(), Refusal> {
    let ns = asked.namespace;
    let Some(grant) = grant else {
        return Err(Refusal {
            reason: NOT_PERMITTED,
            message: format!(
                "no ClusterScanPolicy selects namespace {ns}, so its scans may not use the operator's HSS credentials; ask a cluster administrator for a ClusterScanPolicy selecting it, or name a credentialsSecretRef of your own"
            ),
        });
    };
    let usable: Vec<&ClusterScanPolicySpec> = grant
        .policies
        .iter()
        .map(|(_, p)| p)
        .filter(|p| {
            asked.project == asked.operator_project || p.projects.iter().any(|x| x == asked.project)
        })
        .collect();
    let mut missing: Vec<String> = Vec::new();
    let spec = asked.spec;
    if usable.is_empty() {
        missing.push(format!("project {}", asked.project));
    } else {
        match spec.task_type {
            TaskType::ClusterScan => {
                if let Some(scan) = &spec.cluster_scan {
                    for &t in &scan.scan_types {
                        let typed: Vec<&&ClusterScanPolicySpec> =
                            usable.iter().filter(|p| types_ok(p, t)).collect();
                        if typed.is_empty() {
                            missing.push(format!("scan type {}", t.as_str()));
                            continue;
                        }
                        if typed.iter().any(|p| p.all_clusters) {
                            continue;
                        }
                        match scan.range_type {
                            RangeType::AllCluster => missing.push(format!(
                                "rangeType all_cluster (allClusters) for scan type {}",
                                t.as_str()
                            )),
                            RangeType::SpecificCluster => {
                                let granted: BTreeSet<&String> =
                                    typed.iter().flat_map(|p| p.cluster_ids.iter()).collect();
                                let bad = not_listed(
                                    scan.cluster_ids.as_deref().unwrap_or_default(),
                                    |id| granted.contains(id),
                                );
                                if !bad.is_empty() {
                                    missing.push(format!(
                                        "cluster(s) {bad} for scan type {}",
                                        t.as_str()
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            TaskType::IacScan => {
                let iac: Vec<&&ClusterScanPolicySpec> =
                    usable.iter().filter(|p| p.iac_scan).collect();
                if iac.is_empty() {
                    missing.push("taskType iac_scan (iacScan)".into());
                } else if !iac.iter().any(|p| p.file_ids.is_empty())
                    && let Some(files) = &spec.iac_scan
                {
                    let granted: BTreeSet<&String> =
                        iac.iter().flat_map(|p| p.file_ids.iter()).collect();
                    let bad = not_listed(&files.file_ids, |id| granted.contains(id));
                    if !bad.is_empty() {
                        missing.push(format!("file(s) {bad}"));
                    }
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let who: Vec<&str> = grant.policies.iter().map(|(n, _)| n.as_str()).collect();
    Err(Refusal {
        reason: NOT_PERMITTED,
        message: format!(
            "not granted to namespace {ns} for the operator's HSS credentials: {}; the ClusterScanPolicy(s) selecting it ({}) do not grant it: ask a cluster administrator, or name a credentialsSecretRef of your own",
            missing.join("; "),
            who.join(", ")
        ),
    })
}

/// The asked ids the grant does not list, at most five named.
fn not_listed(asked: &[String], granted: impl Fn(&String) -> bool) -> String {
    let out: Vec<&str> = asked
        .iter()
        .filter(|id| !granted(id))
        .map(String::as_str)
        .collect();
    match out.len() {
        0..=5 => out.join(", "),
        n => format!("{} and {} more", out[..5].join(", "), n - 5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, spec: serde_json::Value) -> ClusterScanPolicy {
        serde_json::from_value(json!({
            "apiVersion": "hss.scanops.dev/v1alpha1", "kind": "ClusterScanPolicy",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("policy")
    }

    fn spec(v: serde_json::Value) -> ClusterScanTaskSpec {
        serde_json::from_value(v).expect("spec")
    }

    fn labels(team: &str, name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("team".to_string(), team.to_string()),
            (super::super::NAME_LABEL.to_string(), name.to_string()),
        ])
    }

    fn policies() -> Vec<ClusterScanPolicy> {
        vec![
            policy(
                "team-a",
                json!({"namespaceSelector": {"matchLabels": {"team": "a"}}, "clusterIds": ["c-a1", "c-a2"], "scanTypes": ["cluster_vul"], "share": 2, "maxUnfinished": 10}),
            ),
            policy(
                "team-a-iac",
                json!({"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, "iacScan": true, "fileIds": ["f-a"], "projects": ["p-a"], "maxUnfinished": 5}),
            ),
            policy(
                "team-b",
                json!({"namespaceSelector": {"matchLabels": {"team": "b"}}, "clusterIds": ["c-b1"]}),
            ),
        ]
    }

    fn check(
        ns_labels: &BTreeMap<String, String>,
        s: serde_json::Value,
        project: &str,
    ) -> Result<(), Refusal> {
        let all = policies();
        let grant = grant_for(ns_labels, &all);
        permits(
            grant.as_ref(),
            Asked {
                namespace: ns_labels[super::super::NAME_LABEL].as_str(),
                spec: &spec(s),
                project,
                operator_project: "p-own",
            },
        )
    }

    fn cluster(range: &str, ids: &[&str], types: &[&str]) -> serde_json::Value {
        let mut scan = json!({"scanTypes": types, "rangeType": range});
        if !ids.is_empty() {
            scan["clusterIds"] = json!(ids);
        }
        json!({"taskType": "cluster_scan", "clusterScan": scan})
    }

    fn iac(files: &[&str]) -> serde_json::Value {
        json!({"taskType": "iac_scan", "iacScan": {"fileType": "k8s_yaml", "fileIds": files}})
    }

    #[test]
    fn the_selecting_policies_make_the_grant_with_the_largest_share_and_smallest_cap() {
        let all = policies();
        let g = grant_for(&labels("a", "ns-a"), &all).expect("selected");
        let names: Vec<&str> = g.policies.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["team-a", "team-a-iac"]);
        assert_eq!(g.share, 2, "the largest share");
        assert_eq!(g.max_unfinished, Some(5), "the smallest non-zero cap");
        assert!(
            grant_for(&labels("c", "ns-c"), &all).is_none(),
            "no policy selects team c"
        );
    }

    /// Why, the namespace's labels, the spec, its project, what a refusal must name (None: permitted).
    type Case<'a> = (
        &'a str,
        &'a BTreeMap<String, String>,
        serde_json::Value,
        &'a str,
        Option<&'a str>,
    );

    #[test]
    fn each_request_is_permitted_only_inside_the_grant() {
        let a = labels("a", "ns-a");
        let b = labels("b", "ns-b");
        let cases: [Case; 11] = [
            (
                "own cluster, granted type",
                &a,
                cluster("specific_cluster", &["c-a1"], &["cluster_vul"]),
                "p-own",
                None,
            ),
            (
                "another team's cluster",
                &a,
                cluster("specific_cluster", &["c-a1", "c-b1"], &["cluster_vul"]),
                "p-own",
                Some("cluster(s) c-b1"),
            ),
            (
                "every cluster without allClusters",
                &a,
                cluster("all_cluster", &[], &["cluster_vul"]),
                "p-own",
                Some("rangeType all_cluster"),
            ),
            (
                "a scan type not granted with that cluster",
                &a,
                cluster("specific_cluster", &["c-a1"], &["benchmark"]),
                "p-own",
                Some("cluster(s) c-a1 for scan type benchmark"),
            ),
            (
                "empty scanTypes in every policy: all types",
                &b,
                cluster("specific_cluster", &["c-b1"], &["benchmark"]),
                "p-own",
                None,
            ),
            ("own file", &a, iac(&["f-a"]), "p-own", None),
            (
                "another team's file",
                &a,
                iac(&["f-b"]),
                "p-own",
                Some("file(s) f-b"),
            ),
            (
                "iac_scan not granted",
                &b,
                iac(&["f-b"]),
                "p-own",
                Some("taskType iac_scan"),
            ),
            (
                "a project granted only by a policy without clusters",
                &a,
                cluster("specific_cluster", &["c-a2"], &["cluster_vul"]),
                "p-a",
                Some("cluster(s) c-a2"),
            ),
            (
                "a file in a granted project",
                &a,
                iac(&["f-a"]),
                "p-a",
                None,
            ),
            (
                "a project not granted",
                &b,
                cluster("specific_cluster", &["c-b1"], &["cluster_vul"]),
                "p-a",
                Some("project p-a"),
            ),
        ];
        for (why, ns, s, project, refused) in cases {
            match (check(ns, s, project), refused) {
                (Ok(()), None) => {}
                (Err(r), Some(what)) => {
                    assert_eq!(r.reason, NOT_PERMITTED, "{why}");
                    assert!(r.message.contains(what), "{why}: {}", r.message);
                    assert!(
                        r.message.contains("ClusterScanPolicy"),
                        "{why}: names who grants: {}",
                        r.message
                    );
                }
                (got, want) => panic!("{why}: got {got:?}, expected refusal {want:?}"),
            }
        }
    }

    #[test]
    fn a_namespace_no_policy_selects_may_not_use_the_operators_credentials() {
        let r = check(
            &labels("c", "ns-c"),
            cluster("specific_cluster", &["c-a1"], &["cluster_vul"]),
            "p-own",
        )
        .expect_err("refused");
        assert_eq!(r.reason, NOT_PERMITTED);
        assert!(
            r.message
                .contains("no ClusterScanPolicy selects namespace ns-c"),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_long_list_of_refused_ids_is_cut_in_the_message() {
        let ids: Vec<String> = (0..40).map(|i| format!("x-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let r = check(
            &labels("a", "ns-a"),
            cluster("specific_cluster", &ids, &["cluster_vul"]),
            "p-own",
        )
        .expect_err("refused");
        assert!(r.message.contains("and 35 more"), "{}", r.message);
    }
}
