//! Custom resources: their Rust types are the source of truth; `crds/` is generated from them
//! (`hss-operator crd`) and CI fails when the two differ.

pub mod cluster_scan_task;
pub mod cluster_scan_trigger;
pub mod findings;

pub use cluster_scan_task::{
    ClusterScanTask, ClusterScanTaskSpec, ClusterScanTaskStatus, FINALIZER, Phase,
};
pub use cluster_scan_trigger::{
    ClusterScanTrigger, ClusterScanTriggerSpec, ClusterScanTriggerStatus, ConcurrencyPolicy,
    RunReason,
};

use kube::CustomResourceExt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to render the CRD as YAML")]
    Render(#[source] serde_saphyr::SerializeError),
    #[error("failed to render the CRD as JSON")]
    Json(#[source] serde_json::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        "render"
    }
}

/// Every CRD this operator owns, as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, Error> {
    let crds = vec![ClusterScanTask::crd(), ClusterScanTrigger::crd()];
    let mut out = String::new();
    for crd in &crds {
        let mut value = serde_json::to_value(crd).map_err(Error::Json)?;
        drop_null_from_enums(&mut value);
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&value).map_err(Error::Render)?);
    }
    Ok(out)
}

/// `Option<enum>` fields come out as `nullable: true` plus a `null` entry in `enum`. API servers
/// before 1.2x reject the `null` entry (with a misleading "per-version schemas" error), and
/// `nullable` already allows it, so the entry is dropped.
fn drop_null_from_enums(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(items)) = map.get_mut("enum") {
                items.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(drop_null_from_enums);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_from_enums),
        _ => {}
    }
}
