//! Start-up permission check: asks the API server (SelfSubjectAccessReview) whether this
//! identity may do what the operator needs, and names everything missing in one error, instead
//! of failing later with a watch that retries 403s forever.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::{Api, Client, api::PostParams};

/// One permission: verb on group/resource (subresource) in a namespace (`None`: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub namespace: Option<String>,
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
        write!(f, "{} {}{group}{sub} {scope}", self.verb, self.resource)
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
    }
}

/// What `run` needs with these settings. Pure.
pub fn required(namespaces: &[String], triggers: bool, lease_namespace: Option<&str>) -> Vec<Need> {
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
        for verb in ["list", "watch", "get"] {
            needs.push(need(verb, "", "secrets", None, ns.clone()));
        }
        needs.push(need("create", "events.k8s.io", "events", None, ns.clone()));
        if triggers {
            for verb in ["list", "watch", "patch"] {
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
            for verb in ["create", "delete"] {
                needs.push(need(
                    verb,
                    "hss.scanops.dev",
                    "clusterscantasks",
                    None,
                    ns.clone(),
                ));
            }
        }
    }
    if triggers {
        for verb in ["list", "watch"] {
            needs.push(need(verb, "", "nodes", None, None));
        }
    }
    if let Some(ns) = lease_namespace {
        for verb in ["get", "create", "update"] {
            needs.push(need(
                verb,
                "coordination.k8s.io",
                "leases",
                None,
                Some(ns.to_string()),
            ));
        }
    }
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
        let all = required(&[], true, Some("ops"));
        assert!(
            all.iter()
                .any(|n| n.resource == "nodes" && n.namespace.is_none())
        );
        assert!(
            all.iter()
                .any(|n| n.resource == "leases" && n.namespace.as_deref() == Some("ops"))
        );
        let scoped = required(&["a".into(), "b".into()], false, None);
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
}
