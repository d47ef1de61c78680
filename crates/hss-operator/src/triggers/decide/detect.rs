//! Node joins and Kubernetes version changes, detected against what the trigger's status
//! acknowledged: pure functions of the old observation, the Nodes and the clock.

use std::{collections::BTreeSet, sync::Arc};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::{Selector, SelectorExt};

use crate::crd::cluster_scan_trigger::{ObservedNodes, ObservedVersions, VersionSet};
use crate::triggers::nodes::NodeView;

/// Bounds on what status keeps about Nodes and versions.
const MAX_NEWEST_NAMES: usize = 100;
const MAX_LISTED_KUBELETS: usize = 20;

/// Join detection against the creation-time watermark in `old`. Pure.
pub(super) fn observe_joins(
    old: Option<&ObservedNodes>,
    nodes: &[Arc<NodeView>],
    selector: &Selector,
    now: Timestamp,
    suspended: bool,
) -> ObservedNodes {
    let matching: Vec<(&str, Option<Timestamp>)> = nodes
        .iter()
        .filter(|n| selector.matches(n.labels()))
        .map(|n| {
            (
                n.name(),
                n.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .collect();
    let count = u32::try_from(matching.len()).unwrap_or(u32::MAX);
    let names_at = |at: Option<Timestamp>, extra: &[String]| -> Vec<String> {
        let mut names: BTreeSet<String> = extra.iter().cloned().collect();
        if let Some(at) = at {
            names.extend(
                matching
                    .iter()
                    .filter(|(_, c)| *c == Some(at))
                    .map(|(n, _)| n.to_string()),
            );
        }
        names.into_iter().take(MAX_NEWEST_NAMES).collect()
    };
    let Some(old) = old else {
        // First look: everything present is the baseline, nothing has joined.
        let newest = matching.iter().filter_map(|(_, c)| *c).max();
        return ObservedNodes {
            count,
            newest_creation_time: newest.map(Time),
            newest_names: names_at(newest, &[]),
            pending_joins: 0,
            pending_since: None,
        };
    };
    let watermark = old.newest_creation_time.as_ref().map(|t| t.0);
    let joined: Vec<(&str, Timestamp)> = matching
        .iter()
        .filter_map(|(name, created)| {
            let created = (*created)?;
            let new = match watermark {
                None => true,
                Some(w) => {
                    created > w || (created == w && !old.newest_names.iter().any(|n| n == name))
                }
            };
            new.then_some((*name, created))
        })
        .collect();
    let newest = joined.iter().map(|(_, c)| *c).chain(watermark).max();
    let keep_old_names = if newest == watermark {
        old.newest_names.as_slice()
    } else {
        &[]
    };
    let pending_joins = if suspended {
        0
    } else {
        old.pending_joins
            .saturating_add(u32::try_from(joined.len()).unwrap_or(u32::MAX))
    };
    ObservedNodes {
        count,
        newest_creation_time: newest.map(Time),
        newest_names: names_at(newest, keep_old_names),
        pending_joins,
        pending_since: if pending_joins == 0 {
            None
        } else {
            old.pending_since.clone().or(Some(Time(now)))
        },
    }
}

/// The API server version and distinct kubelet versions, with a fingerprint over all of them.
pub fn version_set(api_server: &str, nodes: &[Arc<NodeView>]) -> VersionSet {
    let kubelets: BTreeSet<&str> = nodes.iter().filter_map(|n| n.kubelet_version()).collect();
    let mut text = api_server.to_string();
    for k in &kubelets {
        text.push('\n');
        text.push_str(k);
    }
    VersionSet {
        api_server: Some(api_server.to_string()),
        kubelets: kubelets
            .iter()
            .take(MAX_LISTED_KUBELETS)
            .map(|s| s.to_string())
            .collect(),
        fingerprint: hss_client::signer::hex_sha256(text.as_bytes())[..16].to_string(),
    }
}

/// Upgrade detection: a set of versions different from the acknowledged one becomes pending,
/// and its clock restarts whenever it changes again. Pure.
pub(super) fn observe_versions(
    old: Option<&ObservedVersions>,
    seen: VersionSet,
    now: Timestamp,
    suspended: bool,
) -> ObservedVersions {
    match old {
        None => ObservedVersions {
            current: seen,
            pending: None,
            pending_since: None,
        },
        Some(o) if suspended || o.current.fingerprint == seen.fingerprint => ObservedVersions {
            current: seen,
            pending: None,
            pending_since: None,
        },
        Some(o)
            if o.pending
                .as_ref()
                .is_some_and(|p| p.fingerprint == seen.fingerprint) =>
        {
            o.clone()
        }
        Some(o) => ObservedVersions {
            current: o.current.clone(),
            pending: Some(seen),
            pending_since: Some(Time(now)),
        },
    }
}
