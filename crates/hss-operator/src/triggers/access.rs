//! Whether a trigger's status may name Nodes and Kubernetes versions: only where the trigger's
//! namespace could list Nodes itself.
//!
//! Anyone who may read a ClusterScanTrigger reads its status, and the operator writes it with
//! its own cluster-wide Node watch. Node names (on CCE often private IP addresses) and kubelet
//! versions would reach readers who may not list Nodes. So the status names them only where
//! the namespace's ServiceAccounts may list Nodes: a SubjectAccessReview for user
//! `system:serviceaccount:<ns>:default` with the groups every ServiceAccount of the namespace
//! has (`system:serviceaccounts`, `system:serviceaccounts:<ns>`, `system:authenticated`),
//! verb `list`, resource `nodes`. Elsewhere status has counts, creation times, hashes and a
//! fingerprint ([`NodeDetails::Hidden`]).
//!
//! # Why this rule
//! Who reads a trigger is not known when status is written (a status is one document for
//! all its readers), so the rule is about the namespace, not the reader: what the workloads
//! of the namespace may see anyway is no news to it. A namespace whose ServiceAccounts are
//! granted Node access (a monitoring namespace, say) keeps the names it can list; a tenant's
//! namespace gets counts. The default ServiceAccount stands for the namespace because every
//! namespace has one and bindings to the namespace's ServiceAccount groups apply to it;
//! a binding to another single ServiceAccount does not open the namespace (fail closed).
//!
//! # Guarantees
//! - Fail closed: a review that fails, or is not answered, means [`NodeDetails::Hidden`].
//! - Bounded: answers are cached per namespace for [`TTL`] (failures for [`ERROR_TTL`]), at
//!   most [`MAX_NAMESPACES`] of them; one review per namespace and TTL, not per reconcile.
//!
//! # Caveats
//! - A granted or revoked binding shows in status within [`TTL`] and the next reconcile (the
//!   controller looks at every trigger at least every five minutes).
//! - Counts for a label selector still say how many Nodes carry a label, and a trigger's runs
//!   say when a matching Node joined: the behaviour of a Node trigger cannot be hidden from
//!   whoever may create one.
//!
//! # Errors
//! None surface: a failed review is logged (its category) and counts as not allowed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::{Api, Client, api::PostParams};
use tokio::time::Instant;

pub use super::decide::NodeDetails;

/// How long an answer is used.
pub const TTL: Duration = Duration::from_secs(120);
/// How long a failed review counts as not allowed before it is asked again.
pub const ERROR_TTL: Duration = Duration::from_secs(30);
/// Namespaces whose answers are kept.
pub const MAX_NAMESPACES: usize = 1_024;

/// The review that decides for `namespace`. Pure.
pub fn review(namespace: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{namespace}:default")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("list".into()),
                group: Some(String::new()),
                resource: Some("nodes".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Answers per namespace, each with when it stops being used.
#[derive(Debug, Default)]
pub struct Answers {
    cache: Mutex<HashMap<String, (NodeDetails, Instant)>>,
}

impl Answers {
    /// The cached answer for `namespace`, else `ask()`'s (an error: Hidden, kept briefly).
    pub async fn get<E, F, Fut>(&self, namespace: &str, ask: F) -> NodeDetails
    where
        E: std::fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, E>>,
    {
        let now = Instant::now();
        if let Some((details, until)) = self.lock().get(namespace)
            && *until > now
        {
            return *details;
        }
        let (details, ttl) = match ask().await {
            Ok(true) => (NodeDetails::Shown, TTL),
            Ok(false) => (NodeDetails::Hidden, TTL),
            Err(e) => {
                tracing::warn!(%namespace, error = %e, "failed to review Node access; node names stay hidden");
                (NodeDetails::Hidden, ERROR_TTL)
            }
        };
        let mut cache = self.lock();
        if cache.len() >= MAX_NAMESPACES && !cache.contains_key(namespace) {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_NAMESPACES {
                cache.clear();
            }
        }
        cache.insert(namespace.to_string(), (details, Instant::now() + ttl));
        details
    }

    /// Namespaces with an answer kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (NodeDetails, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Asks the API server, through [`Answers`].
pub struct NodeAccess {
    api: Api<SubjectAccessReview>,
    answers: Answers,
}

impl NodeAccess {
    pub fn new(kube: Client) -> Self {
        Self {
            api: Api::all(kube),
            answers: Answers::default(),
        }
    }

    /// What `namespace`'s triggers may show.
    pub async fn details(&self, namespace: &str) -> NodeDetails {
        self.answers
            .get(namespace, || async {
                let answer = self
                    .api
                    .create(&PostParams::default(), &review(namespace))
                    .await?;
                Ok::<bool, kube::Error>(
                    answer
                        .status
                        .is_some_and(|s| s.allowed && !s.denied.unwrap_or(false)),
                )
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn the_review_asks_for_the_namespaces_service_accounts_to_list_nodes() {
        let r = review("team-a");
        let spec = &r.spec;
        assert_eq!(
            spec.user.as_deref(),
            Some("system:serviceaccount:team-a:default")
        );
        assert_eq!(
            spec.groups.clone().unwrap_or_default(),
            [
                "system:serviceaccounts",
                "system:serviceaccounts:team-a",
                "system:authenticated"
            ]
        );
        let attrs = spec.resource_attributes.as_ref().expect("resource");
        assert_eq!(
            (
                attrs.verb.as_deref(),
                attrs.group.as_deref(),
                attrs.resource.as_deref(),
                attrs.namespace.as_deref()
            ),
            (Some("list"), Some(""), Some("nodes"), None),
            "cluster-wide, as Nodes are"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_kept_for_a_while_per_namespace_and_failures_fail_closed() {
        let answers = Answers::default();
        let asked = AtomicU32::new(0);
        let ask = |allowed: bool| {
            let asked = &asked;
            move || async move {
                asked.fetch_add(1, Ordering::SeqCst);
                Ok::<bool, String>(allowed)
            }
        };
        assert_eq!(answers.get("mon", ask(true)).await, NodeDetails::Shown);
        assert_eq!(answers.get("team", ask(false)).await, NodeDetails::Hidden);
        // Within the TTL the answers are reused, whatever a new review would say.
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert_eq!(answers.get("mon", ask(false)).await, NodeDetails::Shown);
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        // After it, asked again: the binding was removed.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(answers.get("mon", ask(false)).await, NodeDetails::Hidden);
        assert_eq!(asked.load(Ordering::SeqCst), 3);

        // A failed review hides, and is asked again sooner.
        let failing = || async { Err::<bool, String>("connection refused".into()) };
        assert_eq!(answers.get("down", failing).await, NodeDetails::Hidden);
        tokio::time::advance(ERROR_TTL + Duration::from_secs(1)).await;
        assert_eq!(answers.get("down", ask(true)).await, NodeDetails::Shown);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded() {
        let answers = Answers::default();
        for i in 0..(MAX_NAMESPACES + 10) {
            answers
                .get(&format!("ns{i}"), || async { Ok::<bool, String>(false) })
                .await;
        }
        assert!(answers.len() <= MAX_NAMESPACES, "{}", answers.len());
    }
}
