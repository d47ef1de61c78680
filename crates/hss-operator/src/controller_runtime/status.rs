//! The one status writer: the whole status by server-side apply, with the operator's field
//! manager, conditional on the resourceVersion the status was computed from.
//!
//! # Guarantees
//! - A status computed from a stale copy never replaces a newer one: the write fails with 409
//!   instead (the chaos test caught a whole-status write from a cached copy erasing a task id
//!   the operator had already written, and a second task followed). Callers requeue and
//!   compute again from a fresh copy.
//!
//! # Errors
//! The API server's error, as is: 409 for a lost race (see [`is_conflict`]), 404 when the
//! object is gone, anything else for the caller's error policy.

use std::fmt::Debug;

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use super::FIELD_MANAGER;

/// Writes `status` as the whole status of `obj`, only if `obj` is still at its
/// resourceVersion.
pub async fn write<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let name = obj.name_any();
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(rv) = obj.resource_version() {
        metadata["resourceVersion"] = serde_json::Value::String(rv);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}

/// A write lost a race with a newer version (409).
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(e) if e.code == 409)
}
