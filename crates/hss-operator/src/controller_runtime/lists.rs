//! How a controller reads its first list: one unpaged LIST from the API server's watch cache,
//! or a streaming list (WatchList, `sendInitialEvents`), where objects arrive one by one as
//! watch events and no full-list response body is ever held in memory.
//!
//! # Guarantees
//! - [`InitialList::Auto`] streams only where a probe showed the server can: a streaming watch
//!   for a label no object has must end its (empty) initial list with the
//!   `k8s.io/initial-events-end` bookmark within [`PROBE_TIMEOUT`]. Elsewhere it lists.
//!
//! # Assumptions
//! - Streaming lists are on by default in Kubernetes 1.32 (beta), off in 1.33 (the gate was
//!   switched off again) and on from 1.34; clusters may switch the `WatchList` gate off (the
//!   CI's 1.36 does: its etcd 3.4 lacks progress notifications). Servers before 1.27 ignore
//!   `sendInitialEvents` and never send the bookmark, so they are not probed at all.
//!
//! # Errors
//! A failed probe is not an error: it is logged and the operator lists.

use std::time::Duration;

use futures::StreamExt;
use kube::{Api, Client, Resource, api::WatchParams, core::WatchEvent, runtime::watcher};
use serde::de::DeserializeOwned;

/// How long the probe waits for the end of its empty initial list.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A label no object carries: the probe's initial list is empty.
const PROBE_SELECTOR: &str = "hss.scanops.dev/streaming-list-probe=none";

/// `--initial-list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    /// Stream where the server has streaming lists on by default, else list.
    Auto,
    /// One unpaged LIST from the watch cache (any server).
    List,
    /// Always stream (the server must support WatchList).
    Stream,
}

/// Whether Kubernetes `major.minor` may stream lists (1.27 brought them, behind a gate). Pure.
pub fn may_stream(major: &str, minor: &str) -> bool {
    let number = |s: &str| {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .ok()
    };
    match (number(major), number(minor)) {
        (Some(1), Some(m)) => m >= 27,
        (Some(major), Some(_)) => major > 1,
        _ => false,
    }
}

/// The watcher configuration for a large collection read through `api`: semantics `any` (the
/// watch cache), no paging (paging bypasses the cache), streamed where `choice` and the
/// server allow.
pub async fn config<K>(kube: &Client, api: &Api<K>, choice: InitialList) -> (watcher::Config, bool)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = match choice {
        InitialList::List => false,
        InitialList::Stream => true,
        InitialList::Auto => match kube.apiserver_version().await {
            Ok(v) if may_stream(&v.major, &v.minor) => probe(api).await,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the server version; listing, not streaming");
                false
            }
        },
    };
    let mut wc = watcher::Config::default().any_semantic();
    wc.page_size = None;
    if stream {
        wc = wc.streaming_lists();
    }
    (wc, stream)
}

/// Whether a streaming watch works here: its empty initial list ends with the bookmark.
async fn probe<K>(api: &Api<K>) -> bool
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let wp = WatchParams::streaming_lists()
        .labels(PROBE_SELECTOR)
        .timeout(PROBE_TIMEOUT.as_secs() as u32);
    let answer = tokio::time::timeout(PROBE_TIMEOUT + Duration::from_secs(1), async {
        let mut events = std::pin::pin!(api.watch(&wp, "").await?);
        match events.next().await {
            Some(Ok(WatchEvent::Bookmark(b))) => Ok(b
                .metadata
                .annotations
                .get("k8s.io/initial-events-end")
                .is_some_and(|v| v == "true")),
            Some(Ok(WatchEvent::Error(e))) => Err(kube::Error::Api(e)),
            Some(Err(e)) => Err(e),
            _ => Ok(false),
        }
    })
    .await;
    match answer {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) | Err(_) => {
            tracing::info!("the API server does not stream lists here; listing");
            false
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "the API server refused a streaming list; listing");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_before_1_27_are_not_probed() {
        for (major, minor, may) in [
            ("1", "20", false),
            ("1", "26", false),
            ("1", "27", true),
            ("1", "33", true),
            ("1", "36+", true),
            ("2", "0", true),
            ("", "", false),
        ] {
            assert_eq!(may_stream(major, minor), may, "{major}.{minor}");
        }
    }
}
