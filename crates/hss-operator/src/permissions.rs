//! Start-up permission check: asks the API server (SelfSubjectAccessReview) whether this
//! identity may do what the operator needs, and names everything missing in one error, instead
//! of failing later with a watch that retries 403s forever.
//!
//! [`required`] is the one permission table: the start-up check asks for it, and the deploy
//! checks compare the Helm chart's rendered RBAC against it (`hss-operator permissions` with
//! the rendered Deployment's flags prints it as JSON), both ways: nothing missing, nothing more.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::{Api, Client, api::PostParams};

/// One permission: verb on group/resource (subresource) in a namespace (`None`: all), on one
/// object by name where the operator only ever touches that one (`None`: any name).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Need {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        let sub = self
            .subresource
            .map(|s| format!("/{s}"))
            .unwrap_or_default();
        let scope = self
            .namespace
            .as_deref()
            .map_or("in all namespaces".to_string(), |ns| {
                format!("in namespace {ns}")
            });
        let name = self
            .name
            .as_deref()
            .map(|n| format!(" named {n}"))
            .unwrap_or_default();
        write!(
            f,
            "{} {}{group}{sub}{name} {scope}",
            self.verb, self.resource
        )
    }
}

fn need(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    namespace: Option<String>,
) -> Need {
    Need {
        verb,
        group,
        resource,
        subresource,
        namespace,
        name: None,
    }
}

/// The Lease used for leader election: namespace and name.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

/// A namespaced object the operator uses by name, given as `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    pub namespace: String,
    pub name: String,
}

impl ObjectName {
    /// Parses `NAMESPACE/NAME` (both non-empty).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
        }
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What decides the permissions `run` needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings<'a> {
    /// Watched namespaces; empty: all.
    pub namespaces: &'a [String],
    /// The trigger controller runs.
    pub triggers: bool,
    /// Leader election on this Lease.
    pub lease: Option<LeaseRef<'a>>,
    /// The claims ConfigMap (`--claims-configmap`).
    pub claims: Option<&'a ObjectName>,
    /// The default credentials Secret (`--credentials-secret`).
    pub credentials: Option<&'a ObjectName>,
    /// `--tenancy policy`: ClusterScanPolicies and Namespaces are read.
    pub policies: bool,
    /// `/metrics` behind TokenReview + SubjectAccessReview (unless `--metrics-insecure`).
    pub metrics_auth: bool,
    /// The report kinds `--reports` may write.
    pub reports: &'a [crate::reports::Kind],
    /// `--self-cluster-id`: reports are also written in affected namespaces, and listed and
    /// deleted there (they carry no ownerReference).
    pub namespaced_reports: bool,
}

/// What `run` needs with these settings. Pure.
///
/// The Lease is asked for by name where the elector only touches that one Lease (get, update),
/// as the chart grants it; `create` cannot be limited by name in RBAC, so it is asked for any.
pub fn required(settings: &Settings<'_>) -> Vec<Need> {
    let Settings {
        namespaces,
        triggers,
        lease,
        claims,
        credentials,
        policies,
        metrics_auth,
        reports,
        namespaced_reports,
    } = *settings;
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let mut needs = Vec::new();
    for ns in scopes {
        for verb in ["list", "watch", "patch"] {
            needs.push(need(
                verb,
                "hss.scanops.dev",
                "clusterscantasks",
                None,
                ns.clone(),
            ));
        }
        needs.push(need(
            "patch",
            "hss.scanops.dev",
            "clusterscantasks",
            Some("status"),
            ns.clone(),
        ));
        // The Secret an object names, read when it is reconciled: get only, no list or watch.
        needs.push(need("get", "", "secrets", None, ns.clone()));
        // An Event is created, and its series patched when it repeats (`controller_runtime::events`).
        for verb in ["create", "patch"] {
            needs.push(need(verb, "events.k8s.io", "events", None, ns.clone()));
        }
        // Reports are written by server-side apply only (a patch, creating or replacing; the
        // API server authorizes an apply that creates the object as a create too, so patch
        // alone is refused with 403 on a report's first write); the garbage collector deletes
        // them with their ClusterScanTask.
        for kind in reports {
            for verb in ["create", "patch"] {
                needs.push(need(verb, kind.group(), kind.plural(), None, ns.clone()));
            }
            if namespaced_reports {
                for verb in ["list", "delete"] {
                    needs.push(need(verb, kind.group(), kind.plural(), None, ns.clone()));
                }
            }
        }
        if triggers {
            // Triggers are only read; their status is written through the subresource.
            for verb in ["list", "watch"] {
                needs.push(need(
                    verb,
                    "hss.scanops.dev",
                    "clusterscantriggers",
                    None,
                    ns.clone(),
                ));
            }
            needs.push(need(
                "patch",
                "hss.scanops.dev",
                "clusterscantriggers",
                Some("status"),
                ns.clone(),
            ));
            // Runs: created, read back by name after a create conflict, pruned.
            for verb in ["create", "get", "delete"] {
                needs.push(need(
                    verb,
                    "hss.scanops.dev",
                    "clusterscantasks",
                    None,
                    ns.clone(),
                ));
            }
            // A run's owner reference blocks its trigger's deletion (blockOwnerDeletion), which
            // OwnerReferencesPermissionEnforcement allows only with update on the finalizers.
            needs.push(need(
                "update",
                "hss.scanops.dev",
                "clusterscantriggers",
                Some("finalizers"),
                ns.clone(),
            ));
        }
    }
    if triggers {
        for verb in ["list", "watch"] {
            needs.push(need(verb, "", "nodes", None, None));
        }
        // Whether a trigger's namespace may list Nodes, so its status may name them
        // (`triggers::access`).
        needs.push(need(
            "create",
            "authorization.k8s.io",
            "subjectaccessreviews",
            None,
            None,
        ));
    }
    if policies {
        // Policies are cluster-scoped and only read; their status says what they select.
        for verb in ["list", "watch"] {
            needs.push(need(
                verb,
                "hss.scanops.dev",
                "clusterscanpolicies",
                None,
                None,
            ));
        }
        needs.push(need(
            "patch",
            "hss.scanops.dev",
            "clusterscanpolicies",
            Some("status"),
            None,
        ));
        // Their labels decide which policies select a namespace; `get` for one the cache
        // has not seen yet.
        for verb in ["list", "watch", "get"] {
            needs.push(need(verb, "", "namespaces", None, None));
        }
    }
    if metrics_auth {
        // The metrics server asks who a scraper's token belongs to, and whether it may read
        // /metrics (`controller_runtime::metrics_auth`). Both reviews are cluster-scoped.
        needs.push(need(
            "create",
            "authentication.k8s.io",
            "tokenreviews",
            None,
            None,
        ));
        needs.push(need(
            "create",
            "authorization.k8s.io",
            "subjectaccessreviews",
            None,
            None,
        ));
    }
    if let Some(secret) = credentials {
        // Read when an object names no Secret of its own; by name, wherever it lives.
        needs.push(Need {
            name: Some(secret.name.clone()),
            ..need("get", "", "secrets", None, Some(secret.namespace.clone()))
        });
    }
    if let Some(cm) = claims {
        let ns = Some(cm.namespace.clone());
        needs.push(need("create", "", "configmaps", None, ns.clone()));
        for verb in ["get", "update"] {
            needs.push(Need {
                name: Some(cm.name.clone()),
                ..need(verb, "", "configmaps", None, ns.clone())
            });
        }
    }
    if let Some(lease) = lease {
        let ns = Some(lease.namespace.to_string());
        needs.push(need(
            "create",
            "coordination.k8s.io",
            "leases",
            None,
            ns.clone(),
        ));
        for verb in ["get", "update"] {
            needs.push(Need {
                name: Some(lease.name.to_string()),
                ..need(verb, "coordination.k8s.io", "leases", None, ns.clone())
            });
        }
    }
    // The trigger controller and the metrics server both review access: ask once.
    let mut seen = Vec::with_capacity(needs.len());
    needs.retain(|n| {
        let new = !seen.contains(n);
        if new {
            seen.push(n.clone());
        }
        new
    });
    needs
}

/// The needs the API server denies. Errors talking to it are returned as such.
pub async fn missing(client: &Client, needs: &[Need]) -> Result<Vec<Need>, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for n in needs {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(n.verb.to_string()),
                    group: Some(n.group.to_string()),
                    resource: Some(n.resource.to_string()),
                    subresource: n.subresource.map(str::to_string),
                    namespace: n.namespace.clone(),
                    name: n.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            missing.push(n.clone());
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_follow_the_settings() {
        let all = required(&Settings {
            triggers: true,
            lease: Some(LeaseRef {
                namespace: "ops",
                name: "hss-operator",
            }),
            ..Default::default()
        });
        assert!(
            all.iter()
                .any(|n| n.resource == "nodes" && n.namespace.is_none())
        );
        assert!(
            all.iter()
                .any(|n| n.resource == "subjectaccessreviews" && n.verb == "create"),
            "triggers review their namespace's Node access"
        );
        assert!(
            all.iter()
                .any(|n| n.resource == "leases" && n.namespace.as_deref() == Some("ops"))
        );
        let scoped = required(&Settings {
            namespaces: &["a".into(), "b".into()],
            ..Default::default()
        });
        assert!(
            scoped.iter().all(|n| n.namespace.is_some()),
            "namespaced mode asks per namespace"
        );
        assert!(
            !scoped
                .iter()
                .any(|n| n.resource == "nodes" || n.resource == "leases")
        );
        assert_eq!(
            need(
                "patch",
                "hss.scanops.dev",
                "clusterscantasks",
                Some("status"),
                None
            )
            .to_string(),
            "patch clusterscantasks.hss.scanops.dev/status in all namespaces"
        );
    }

    #[test]
    fn secure_metrics_need_both_reviews_cluster_wide_and_insecure_metrics_none() {
        let reviews = |metrics_auth| -> Vec<String> {
            required(&Settings {
                namespaces: &["a".into()],
                metrics_auth,
                ..Default::default()
            })
            .into_iter()
            .filter(|n| n.resource.ends_with("reviews"))
            .map(|n| n.to_string())
            .collect()
        };
        assert_eq!(
            reviews(true),
            [
                "create tokenreviews.authentication.k8s.io in all namespaces",
                "create subjectaccessreviews.authorization.k8s.io in all namespaces",
            ],
            "cluster-scoped even when the operator watches one namespace"
        );
        assert!(
            reviews(false).is_empty(),
            "--metrics-insecure reviews nothing"
        );
    }

    #[test]
    fn the_lease_is_asked_for_by_name_except_for_create_which_rbac_cannot_limit() {
        let lease = LeaseRef {
            namespace: "hss-system",
            name: "hss-operator",
        };
        let leases: Vec<_> = required(&Settings {
            lease: Some(lease),
            ..Default::default()
        })
        .into_iter()
        .filter(|n| n.resource == "leases")
        .collect();
        let named: Vec<_> = leases.iter().map(|n| (n.verb, n.name.as_deref())).collect();
        assert_eq!(
            named,
            [
                ("create", None),
                ("get", Some("hss-operator")),
                ("update", Some("hss-operator"))
            ]
        );
        assert_eq!(
            leases[1].to_string(),
            "get leases.coordination.k8s.io named hss-operator in namespace hss-system"
        );
    }

    #[test]
    fn reports_in_affected_namespaces_add_list_and_delete_only_with_a_self_cluster() {
        let kinds = [crate::reports::Kind::OpenReports];
        let verbs = |namespaced_reports: bool, namespaces: &[String]| {
            let mut v: Vec<(&str, Option<String>)> = required(&Settings {
                namespaces,
                reports: &kinds,
                namespaced_reports,
                ..Default::default()
            })
            .into_iter()
            .filter(|n| n.resource == "reports")
            .map(|n| (n.verb, n.namespace.clone()))
            .collect();
            v.sort();
            v
        };
        assert_eq!(
            verbs(false, &[]),
            [("create", None), ("patch", None)],
            "own reports: apply only (which creates them)"
        );
        assert_eq!(
            verbs(true, &[]),
            [
                ("create", None),
                ("delete", None),
                ("list", None),
                ("patch", None)
            ],
            "all namespaces: cluster-wide"
        );
        let shop = Some("shop".to_string());
        assert_eq!(
            verbs(true, &["shop".into()]),
            [
                ("create", shop.clone()),
                ("delete", shop.clone()),
                ("list", shop.clone()),
                ("patch", shop)
            ],
            "watched namespaces: each of them"
        );
    }
}
