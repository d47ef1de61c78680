//! `maxUnfinished`: a cap on the unfinished ClusterScanTasks of one namespace (the policy's,
//! else `--max-unfinished-per-namespace`). A Pending object beyond it waits with
//! `Throttled=True`, reason `NamespaceLimit`, and spends nothing: no Secret read past the first,
//! no HSS call. Older objects go first (creation time, then name).
//!
//! # Guarantees
//! - Objects already submitted (Submitting, Submitted, Running) always count; a Pending one
//!   counts only ahead of younger ones, so the oldest waiters are let through first.
//! - When a scan of the namespace finishes or is deleted, the oldest waiter is woken at once;
//!   waiters also look again every [`RECHECK`] in case a wake-up was lost (a restart).
//!
//! # Caveats
//! - The count comes from the cache: two objects reconciled at the same moment both see the
//!   other as Pending, and only the older one goes ahead, so the cap holds.

use std::time::Duration;

use kube::ResourceExt;

use super::status;
use crate::crd::{ClusterScanTask, Phase};

/// How often a waiting object looks again without being woken.
pub const RECHECK: Duration = Duration::from_secs(60);

/// The order in the namespace's queue: older first.
fn age_key(o: &ClusterScanTask) -> (Option<jiff::Timestamp>, String) {
    (o.creation_timestamp().map(|t| t.0), o.name_any())
}

fn unfinished(o: &ClusterScanTask) -> bool {
    o.metadata.deletion_timestamp.is_none() && !status::phase(o).is_final()
}

/// Whether the Pending `obj` may go ahead under a cap of `cap` unfinished scans, given the
/// objects of its namespace (`obj` may be among them). Pure.
pub fn may_proceed<'a>(
    obj: &ClusterScanTask,
    namespace: impl IntoIterator<Item = &'a ClusterScanTask>,
    cap: u32,
) -> bool {
    let me = age_key(obj);
    let uid = obj.uid();
    let ahead = namespace
        .into_iter()
        .filter(|o| o.uid() != uid && unfinished(o))
        .filter(|o| status::phase(o) != Phase::Pending || age_key(o) < me)
        .count();
    ahead < cap as usize
}

/// The oldest Pending object of the namespace waiting for the cap, if any: the one to wake
/// when a scan finishes.
pub fn next_waiter<'a>(
    namespace: impl IntoIterator<Item = &'a ClusterScanTask>,
) -> Option<&'a ClusterScanTask> {
    namespace
        .into_iter()
        .filter(|o| unfinished(o) && status::phase(o) == Phase::Pending)
        .filter(|o| {
            o.status.as_ref().is_some_and(|s| {
                crate::controller_runtime::conditions::get(&s.conditions, status::THROTTLED)
                    .is_some_and(|c| c.status == "True" && c.reason == "NamespaceLimit")
            })
        })
        .min_by_key(|o| age_key(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, created: i64, phase: Option<&str>) -> ClusterScanTask {
        let mut o = serde_json::json!({
            "apiVersion": "hss.scanops.dev/v1alpha1", "kind": "ClusterScanTask",
            "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"),
                "creationTimestamp": jiff::Timestamp::from_second(created).expect("t").to_string()},
            "spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["cluster_vul"], "rangeType": "all_cluster"}},
        });
        if let Some(p) = phase {
            o["status"] = serde_json::json!({"phase": p});
        }
        serde_json::from_value(o).expect("object")
    }

    #[test]
    fn the_oldest_pending_objects_fill_the_cap_and_the_rest_wait() {
        let all = [
            obj("running", 1, Some("Running")),
            obj("done", 2, Some("Succeeded")),
            obj("p1", 3, None),
            obj("p2", 4, Some("Pending")),
            obj("p3", 5, None),
        ];
        let allowed: Vec<&str> = all
            .iter()
            .filter(|o| status::phase(o) == Phase::Pending && may_proceed(o, &all, 3))
            .map(|o| o.metadata.name.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(
            allowed,
            ["p1", "p2"],
            "running counts, done does not, p3 is fourth"
        );
        assert!(
            !may_proceed(&all[2], &all, 1),
            "the running scan fills a cap of one"
        );
    }

    #[test]
    fn the_waiter_to_wake_is_the_oldest_one_throttled_by_the_cap() {
        let mut waiting = obj("b-waits", 5, Some("Pending"));
        let mut older = obj("a-waits", 5, Some("Pending"));
        for o in [&mut waiting, &mut older] {
            o.status.as_mut().expect("status").conditions.push(
                serde_json::from_value(serde_json::json!({"type": "Throttled", "status": "True",
                    "reason": "NamespaceLimit", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}))
                .expect("condition"),
            );
        }
        let all = [obj("new", 1, None), waiting, older];
        assert_eq!(
            next_waiter(&all).and_then(|o| o.metadata.name.as_deref()),
            Some("a-waits"),
            "same creation second: by name; a Pending object not throttled by the cap is not woken"
        );
    }
}
