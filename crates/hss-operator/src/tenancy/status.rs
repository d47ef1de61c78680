//! Each ClusterScanPolicy's status: the namespaces its selector selects now, and `Ready`
//! (False with reason `InvalidSelector` when the selector cannot be read). Recomputed when
//! the policy or any Namespace changes; written only when it differs.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    core::Selector,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use super::{NAME_LABEL, grant::selects, with_name};
use crate::controller_runtime::conditions;
use crate::crd::{
    ClusterScanPolicy,
    cluster_scan_policy::{ClusterScanPolicyStatus, MAX_LISTED_NAMESPACES},
};

struct Ctx {
    kube: Client,
    namespaces: Store<Namespace>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("failed to write the policy's status")]
    WriteStatus(#[source] kube::Error),
}

/// The status `policy` should have, given the Namespaces. Pure.
pub(super) fn desired(
    policy: &ClusterScanPolicy,
    namespaces: &[Arc<Namespace>],
    now: jiff::Timestamp,
) -> ClusterScanPolicyStatus {
    let mut st = policy.status.clone().unwrap_or_default();
    let selector = &policy.spec.namespace_selector;
    let generation = policy.metadata.generation;
    st.observed_generation = generation;
    match Selector::try_from(selector.clone()) {
        Ok(_) => {
            let mut names: Vec<String> = namespaces
                .iter()
                .filter(|n| selects(selector, &with_name(n.labels().clone(), &n.name_any())))
                .map(|n| n.name_any())
                .collect();
            names.sort();
            st.namespace_count = names.len() as u32;
            names.truncate(MAX_LISTED_NAMESPACES);
            st.namespaces = names;
            let message = format!(
                "in force for {} namespace(s) (selected by their labels; {NAME_LABEL} names one)",
                st.namespace_count
            );
            conditions::set(
                &mut st.conditions,
                generation,
                "Ready",
                true,
                "Selected",
                &message,
                now,
            );
        }
        Err(e) => {
            st.namespaces.clear();
            st.namespace_count = 0;
            conditions::set(
                &mut st.conditions,
                generation,
                "Ready",
                false,
                "InvalidSelector",
                &format!("namespaceSelector cannot be read ({e}); it selects no namespace"),
                now,
            );
        }
    }
    st
}

async fn reconcile(policy: Arc<ClusterScanPolicy>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let st = desired(&policy, &ctx.namespaces.state(), jiff::Timestamp::now());
    if policy.status.as_ref() != Some(&st) {
        let api: Api<ClusterScanPolicy> = Api::all(ctx.kube.clone());
        crate::controller_runtime::status::write(&api, policy.as_ref(), &st)
            .await
            .map_err(Error::WriteStatus)?;
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<ClusterScanPolicy>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::debug!(error = %crate::report_error(err), "policy status");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the status controller, which also drives the two caches.
pub(super) async fn run(
    kube: Client,
    policy_stream: impl Stream<Item = Result<ClusterScanPolicy, watcher::Error>> + Send + 'static,
    policies: Store<ClusterScanPolicy>,
    ns_stream: impl Stream<Item = Result<Namespace, watcher::Error>> + Send + 'static,
    namespaces: Store<Namespace>,
) {
    let all = policies.clone();
    let ctx = Arc::new(Ctx { kube, namespaces });
    Controller::for_stream(policy_stream, policies)
        .watches_stream(ns_stream, move |_: Namespace| {
            all.state()
                .iter()
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(selector: serde_json::Value) -> ClusterScanPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hss.scanops.dev/v1alpha1", "kind": "ClusterScanPolicy",
            "metadata": {"name": "team-a", "generation": 2},
            "spec": {"namespaceSelector": selector},
        }))
        .expect("policy")
    }

    fn ns(name: &str, labels: serde_json::Value) -> Arc<Namespace> {
        Arc::new(
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "labels": labels}}),
            )
            .expect("namespace"),
        )
    }

    #[test]
    fn the_status_lists_the_selected_namespaces_sorted_with_their_count() {
        let all = [
            ns("b-two", serde_json::json!({"team": "a"})),
            ns("a-one", serde_json::json!({"team": "a"})),
            ns("other", serde_json::json!({"team": "b"})),
        ];
        let st = desired(
            &policy(serde_json::json!({"matchLabels": {"team": "a"}})),
            &all,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(st.namespaces, ["a-one", "b-two"]);
        assert_eq!(st.namespace_count, 2);
        assert_eq!(st.observed_generation, Some(2));
        assert!(conditions::is_true(&st.conditions, "Ready"));
    }

    #[test]
    fn the_name_label_selects_a_namespace_on_servers_that_do_not_set_it() {
        let all = [
            ns("team-a", serde_json::json!({})),
            ns("team-b", serde_json::json!({})),
        ];
        let st = desired(
            &policy(serde_json::json!({"matchLabels": {NAME_LABEL: "team-a"}})),
            &all,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(st.namespaces, ["team-a"]);
    }

    #[test]
    fn an_unreadable_selector_selects_nothing_and_says_so() {
        let all = [ns("team-a", serde_json::json!({"team": "a"}))];
        let st = desired(
            &policy(
                serde_json::json!({"matchExpressions": [{"key": "team", "operator": "Bogus", "values": ["a"]}]}),
            ),
            &all,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert!(st.namespaces.is_empty());
        let ready = conditions::get(&st.conditions, "Ready").expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSelector")
        );
    }
}
