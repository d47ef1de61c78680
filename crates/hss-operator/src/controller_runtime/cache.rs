//! What a reflector cache keeps of an object's metadata: only the annotations and labels its
//! controller reads, so that memory follows the number of objects, not what tenants write
//! into them (Kubernetes allows 256 KiB of annotations, and as much again of labels, per
//! object: 1,000 such objects kept whole would pass the chart's 256Mi limit).
//!
//! Applied with `WatchStreamExt::modify` before the store, so the cache and every reconcile
//! see the trimmed copy. The operator never writes metadata from a cached copy (status is
//! server-side applied, finalizers merge-patched), so nothing trimmed is ever written back.
//!
//! # Caveats
//! - A kept key whose value is longer than [`MAX_KEPT_VALUE`] is dropped, as if unset: no
//!   value the operator reads (task and attempt ids, timestamps, reasons) is that long.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Longest annotation or label value kept.
pub const MAX_KEPT_VALUE: usize = 1024;

/// Keeps only the `annotations` and `labels` named (values up to [`MAX_KEPT_VALUE`]) and
/// drops managedFields. Pure.
pub fn keep_only(meta: &mut ObjectMeta, annotations: &[&str], labels: &[&str]) {
    meta.managed_fields = None;
    keep(&mut meta.annotations, annotations);
    keep(&mut meta.labels, labels);
}

fn keep(map: &mut Option<BTreeMap<String, String>>, names: &[&str]) {
    if let Some(m) = map.as_mut() {
        m.retain(|k, v| names.contains(&k.as_str()) && v.len() <= MAX_KEPT_VALUE);
        if m.is_empty() {
            *map = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_keys_with_bounded_values_are_kept() {
        let mut meta: ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "x",
            "annotations": {
                "read": "yes",
                "too-long": "v".repeat(MAX_KEPT_VALUE + 1),
                "other": "dropped",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
            "labels": {"kept": "1", "team": "a"},
            "managedFields": [{"manager": "kubectl"}],
        }))
        .expect("meta");
        keep_only(&mut meta, &["read", "too-long"], &["kept"]);
        assert_eq!(
            serde_json::to_value(&meta).expect("json"),
            serde_json::json!({"name": "x", "annotations": {"read": "yes"}, "labels": {"kept": "1"}})
        );
        keep_only(&mut meta, &[], &[]);
        assert!(
            meta.annotations.is_none() && meta.labels.is_none(),
            "empty maps go"
        );
    }
}
