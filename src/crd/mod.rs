//! Custom resources: their Rust types are the source of truth; `crds/` is generated from them
//! (`hss-operator crd`) and CI fails when the two differ.

pub mod cluster_scan_task;

pub use cluster_scan_task::{
    ClusterScanTask, ClusterScanTaskSpec, ClusterScanTaskStatus, FINALIZER, Phase,
};

use kube::CustomResourceExt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to render the CRD as YAML")]
    Render(#[source] serde_saphyr::SerializeError),
}

impl Error {
    pub fn category(&self) -> &'static str {
        "render"
    }
}

/// Every CRD this operator owns, as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, Error> {
    let mut out = String::new();
    for crd in [ClusterScanTask::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).map_err(Error::Render)?);
    }
    Ok(out)
}
