//! What the trigger controller knows about Nodes and Kubernetes versions.
//!
//! Nodes are read into [`NodeView`], a type with only the fields join and upgrade detection
//! need (name, labels, creationTimestamp, status.nodeInfo.kubeletVersion): the rest of a Node
//! (images, conditions, addresses, managed fields) is skipped while decoding and never held,
//! so the cache stays small on large clusters. The watch signals the controller only when
//! something it looks at changes, not on every Node status heartbeat.

use std::{
    collections::{BTreeMap, HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    time::Duration,
};

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A Node, trimmed to what triggers look at.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct NodeView {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeViewStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeViewStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeViewInfo>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeViewInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_version: Option<String>,
}

impl k8s_openapi::Resource for NodeView {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Node";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "nodes";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for NodeView {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl NodeView {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// The kubelet version the Node reports; None until the kubelet has reported one.
    pub fn kubelet_version(&self) -> Option<&str> {
        self.status
            .as_ref()?
            .node_info
            .as_ref()?
            .kubelet_version
            .as_deref()
            .filter(|v| !v.is_empty())
    }

    /// Drops what the watch decoded but triggers never read.
    fn trim(&mut self) {
        let meta = &mut self.metadata;
        meta.managed_fields = None;
        meta.annotations = None;
        meta.owner_references = None;
        meta.finalizers = None;
        meta.generate_name = None;
    }

    /// Hash of the fields triggers read, to tell relevant changes from heartbeats.
    fn relevant_hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.metadata.uid.hash(&mut h);
        self.metadata.labels.hash(&mut h);
        self.kubelet_version().hash(&mut h);
        h.finish()
    }
}

/// Watches Nodes into a store. The returned stream must be polled (it drives the watch); it
/// yields `()` when a Node appears, disappears, or changes labels or kubelet version.
pub(crate) fn watch(client: Client) -> (Store<NodeView>, impl Stream<Item = ()> + Send) {
    let api: Api<NodeView> = Api::all(client);
    let (reader, writer) = reflector::store();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(NodeView::trim)
        .reflect(writer)
        .filter_map(move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(n)) | Ok(watcher::Event::InitApply(n)) => {
                    let hash = n.relevant_hash();
                    seen.insert(n.name().to_string(), hash) != Some(hash)
                }
                Ok(watcher::Event::Delete(n)) => seen.remove(n.name()).is_some(),
                Ok(watcher::Event::Init) => {
                    // A relist: forget Nodes that may have gone while the watch was down.
                    seen.clear();
                    false
                }
                Ok(watcher::Event::InitDone) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "Node watch failed; retrying");
                    false
                }
            };
            futures::future::ready(changed.then_some(()))
        });
    (reader, stream)
}

/// Polls the API server's version every `every` into a watch channel; a changed version is
/// announced on the returned stream.
pub(crate) fn poll_api_server_version(
    client: Client,
    every: Duration,
) -> (
    watch::Receiver<Option<String>>,
    impl std::future::Future<Output = ()> + Send,
) {
    let (tx, rx) = watch::channel(None::<String>);
    let task = async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            match client.apiserver_version().await {
                Ok(info) => {
                    tx.send_if_modified(|v| {
                        let changed = v.as_deref() != Some(info.git_version.as_str());
                        if changed {
                            *v = Some(info.git_version.clone());
                        }
                        changed
                    });
                }
                Err(e) => tracing::warn!(error = %e, "failed to read the API server version"),
            }
        }
    };
    (rx, task)
}

/// A stream that yields once per change of a watch channel.
pub(crate) fn changes<T: Send + Sync + 'static>(
    rx: watch::Receiver<T>,
) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_node_decodes_into_the_trimmed_view() {
        let mut n: NodeView = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1", "labels": {"pool": "a"}, "annotations": {"big": "x"},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {"nodeInfo": {"kubeletVersion": "v1.30.1", "osImage": "Linux"},
                       "images": [{"names": ["a"], "sizeBytes": 1}],
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("a Node decodes");
        n.trim();
        assert_eq!(n.name(), "n1");
        assert_eq!(n.kubelet_version(), Some("v1.30.1"));
        assert!(n.metadata.annotations.is_none() && n.metadata.managed_fields.is_none());
        assert_eq!(n.labels().get("pool").map(String::as_str), Some("a"));
    }

    #[test]
    fn heartbeats_do_not_count_as_changes_but_versions_and_labels_do() {
        let node = |version: &str, pool: &str| -> NodeView {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n1", "uid": "u1", "labels": {"pool": pool}},
                "status": {"nodeInfo": {"kubeletVersion": version}}
            }))
            .expect("node")
        };
        let a = node("v1.29.0", "a");
        assert_eq!(a.relevant_hash(), node("v1.29.0", "a").relevant_hash());
        assert_ne!(a.relevant_hash(), node("v1.30.0", "a").relevant_hash());
        assert_ne!(a.relevant_hash(), node("v1.29.0", "b").relevant_hash());
    }
}
