//! The Kubernetes controller runtime below both controllers (ClusterScanTask and
//! ClusterScanTrigger) and the process, what Go's controller-runtime would hold, so that each
//! rule the API server, the kubelet or the operator's users rely on is written once:
//!
//! - [`cache`]: what a reflector cache keeps of an object's annotations and labels;
//! - [`conditions`]: setting a condition, given `now`, with one rule for messages;
//! - [`status`]: the status writer, always server-side apply with the one field manager and a
//!   resourceVersion precondition;
//! - [`events`]: Events counted per object and reason at bounded writes, builders, reasons;
//! - [`finalizers`]: a missing finalizer added in the reconcile that needs it;
//! - [`superseded`]: cached copies this process's own writes replaced, not acted on;
//! - [`retry`]: backoff and the failure-streak error policy;
//! - [`lists`]: how the first list is read (streamed where the server can);
//! - [`lease`]: leader election on a `coordination.k8s.io` Lease;
//! - [`admin`]: the health probes, plain;
//! - [`secure_metrics`]: `/metrics` over HTTPS, for callers [`metrics_auth`] lets in
//!   (TokenReview + SubjectAccessReview, cached briefly).

pub mod admin;
pub mod cache;
pub mod conditions;
pub mod events;
pub mod finalizers;
pub mod lease;
pub mod lists;
pub mod metrics_auth;
pub mod retry;
pub mod secure_metrics;
pub mod status;
pub mod superseded;

/// The field manager of everything the operator writes (status, Leases, runs).
pub const FIELD_MANAGER: &str = "hss-operator";
