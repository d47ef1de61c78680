//! Node joins and Kubernetes version changes, detected against what the trigger's status
//! acknowledged: pure functions of the old observation, the Nodes and the clock.
//!
//! Detection needs no node name or version string in status: joins are told apart by
//! creation time and a hash of the Node's uid (`newestIds`), version changes by the
//! fingerprint. Names and versions are added only for [`NodeDetails::Shown`], and
//! [`redact`] takes them out of any status (also one written before) otherwise.

use std::{collections::BTreeSet, sync::Arc};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::{Selector, SelectorExt};

use crate::crd::ClusterScanTriggerStatus;
use crate::crd::cluster_scan_trigger::{ObservedNodes, ObservedVersions, VersionSet};
use crate::triggers::nodes::NodeView;

/// Whether the trigger's status may name Nodes and versions (see [`crate::triggers::access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeDetails {
    /// Counts, creation times, hashes and fingerprints only.
    #[default]
    Hidden,
    /// Also node names and version strings: the trigger's namespace may list Nodes.
    Shown,
}

/// Takes node names and version strings out of `st` unless `details` shows them. Pure.
pub fn redact(st: &mut ClusterScanTriggerStatus, details: NodeDetails) {
    if details == NodeDetails::Shown {
        return;
    }
    if let Some(n) = st.nodes.as_mut() {
        n.newest_names.clear();
    }
    if let Some(v) = st.versions.as_mut() {
        for set in std::iter::once(&mut v.current).chain(v.pending.as_mut()) {
            set.api_server = None;
            set.kubelets.clear();
        }
    }
}

/// A Node's uid (its name when it has none), hashed: stable, and naming nothing.
fn node_id(n: &NodeView) -> String {
    let id = n.metadata.uid.as_deref().unwrap_or(n.name());
    hss_client::signer::hex_sha256(format!("node-uid:{id}").as_bytes())[..16].to_string()
}

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
    details: NodeDetails,
) -> ObservedNodes {
    // (name, uid hash, creation time)
    let matching: Vec<(&str, String, Option<Timestamp>)> = nodes
        .iter()
        .filter(|n| selector.matches(n.labels()))
        .map(|n| {
            (
                n.name(),
                node_id(n),
                n.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .collect();
    let count = u32::try_from(matching.len()).unwrap_or(u32::MAX);
    // The names (for Shown) and ids of the Nodes created at `at`, with those of `keep`.
    let newest_at = |at: Option<Timestamp>, keep: Option<&ObservedNodes>| {
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut ids: BTreeSet<String> = BTreeSet::new();
        if let Some(k) = keep {
            names.extend(k.newest_names.iter().cloned());
            ids.extend(k.newest_ids.iter().cloned());
        }
        if let Some(at) = at {
            for (name, id, _) in matching.iter().filter(|(_, _, c)| *c == Some(at)) {
                names.insert(name.to_string());
                ids.insert(id.clone());
            }
        }
        if details == NodeDetails::Hidden {
            names.clear();
        }
        (
            names.into_iter().take(MAX_NEWEST_NAMES).collect(),
            ids.into_iter().take(MAX_NEWEST_NAMES).collect(),
        )
    };
    let Some(old) = old else {
        // First look: everything present is the baseline, nothing has joined.
        let newest = matching.iter().filter_map(|(_, _, c)| *c).max();
        let (newest_names, newest_ids) = newest_at(newest, None);
        return ObservedNodes {
            count,
            newest_creation_time: newest.map(Time),
            newest_names,
            newest_ids,
            pending_joins: 0,
            pending_since: None,
        };
    };
    let watermark = old.newest_creation_time.as_ref().map(|t| t.0);
    // A Node at the watermark was seen if status has its id (or, written before ids, its name).
    let seen = |name: &str, id: &str| {
        old.newest_ids.iter().any(|i| i == id) || old.newest_names.iter().any(|n| n == name)
    };
    let joined: Vec<Timestamp> = matching
        .iter()
        .filter_map(|(name, id, created)| {
            let created = (*created)?;
            let new = match watermark {
                None => true,
                Some(w) => created > w || (created == w && !seen(name, id)),
            };
            new.then_some(created)
        })
        .collect();
    let newest = joined.iter().copied().chain(watermark).max();
    let keep = (newest == watermark).then_some(old);
    let (newest_names, newest_ids) = newest_at(newest, keep);
    let pending_joins = if suspended {
        0
    } else {
        old.pending_joins
            .saturating_add(u32::try_from(joined.len()).unwrap_or(u32::MAX))
    };
    ObservedNodes {
        count,
        newest_creation_time: newest.map(Time),
        newest_names,
        newest_ids,
        pending_joins,
        pending_since: if pending_joins == 0 {
            None
        } else {
            old.pending_since.clone().or(Some(Time(now)))
        },
    }
}

/// The API server version and distinct kubelet versions, with a fingerprint over all of them;
/// the version strings themselves only for [`NodeDetails::Shown`].
pub fn version_set(api_server: &str, nodes: &[Arc<NodeView>], details: NodeDetails) -> VersionSet {
    let kubelets: BTreeSet<&str> = nodes.iter().filter_map(|n| n.kubelet_version()).collect();
    let mut text = api_server.to_string();
    for k in &kubelets {
        text.push('\n');
        text.push_str(k);
    }
    let shown = details == NodeDetails::Shown;
    VersionSet {
        api_server: shown.then(|| api_server.to_string()),
        kubelets: kubelets
            .iter()
            .take(if shown { MAX_LISTED_KUBELETS } else { 0 })
            .map(|s| s.to_string())
            .collect(),
        kubelet_versions: Some(u32::try_from(kubelets.len()).unwrap_or(u32::MAX)),
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
