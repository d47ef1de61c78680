//! Adding a finalizer in the reconcile that needs it.
//!
//! kube's `finalizer` helper adds a missing finalizer and ends the reconcile: the object comes
//! back through the watch before any work, one API round trip and a queue wait more (the bench
//! measured that hop between apply and the CreateTask POST). [`ensure`] adds it with a merge
//! patch conditional on the object's resourceVersion and returns the object as written, so
//! the helper then sees the finalizer and the same reconcile goes on.
//!
//! # Guarantees
//! - The finalizer is on the returned object, durably (the write landed), or an error is
//!   returned and nothing else happened.
//! - Other finalizers are kept: the write fails with 409 if the object changed since it was
//!   read, instead of replacing a list someone else just changed.
//! - An object being deleted is returned as it is: a finalizer is never added during deletion.
//!
//! # Errors
//! The API server's, as is: 409 for a lost race (requeue and read again), 404 when the object
//! is gone.

use std::{fmt::Debug, sync::Arc};

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::de::DeserializeOwned;

/// `obj` with `finalizer` in its finalizers, writing it if it is missing.
pub async fn ensure<K>(api: &Api<K>, obj: Arc<K>, finalizer: &str) -> Result<Arc<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if obj.meta().deletion_timestamp.is_some() || obj.finalizers().iter().any(|f| f == finalizer) {
        return Ok(obj);
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(finalizer.to_string());
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": obj.resource_version(),
        }
    });
    let written = api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(Arc::new(written))
}
