//! hss-operator: runs Huawei Cloud Host Security Service scans from Kubernetes resources.
//!
//! The HSS v5 client is its own crate ([`hss_client`]: no Kubernetes in there); the simulator
//! the tests and the demo use is another (`hss-simulator`), never linked into this one.
//!
//! - [`crd`]: the custom resources (`ClusterScanTask`, `ClusterScanTrigger`) and their CRDs.
//! - [`submission`]: the exactly-once submission protocol (attempt, classification, lookup,
//!   backoff, the ledger of task ids and claims), run by the controller and by `submit`.
//! - [`controller`]: the ClusterScanTask controller: submissions, the shared poll, findings,
//!   finalizers.
//! - [`triggers`]: the ClusterScanTrigger controller: schedules and cluster events.
//! - [`findings`]: reading a finished task's findings through the result APIs; [`reports`]:
//!   writing them as OpenReports (or wgpolicyk8s.io PolicyReport) objects.
//! - [`controller_runtime`]: the Kubernetes controller runtime pieces every controller uses (status writes,
//!   Events, conditions, finalizers, lists, retry); [`lease`]: leader election; [`admin`]: the
//!   health and metrics server; [`metrics`]: the Prometheus registry, each subsystem's
//!   families registered by the subsystem ([`hss_metrics`]: the HSS calls).
//! - [`operator`]: `run`, wiring the above; [`permissions`]: the RBAC `run` needs.
//! - [`submit`]: the one-shot `submit` command (no cluster); [`config`]: the HSS flags shared
//!   by `run` and `submit`; [`cli`]: the command line; [`telemetry`]: logging.

pub mod cli;
pub mod config;
pub mod controller;
pub mod controller_runtime;
pub mod crd;
pub mod findings;
pub mod hss_metrics;
pub mod metrics;
pub mod operator;
pub mod permissions;
pub mod reports;
pub mod submission;
pub mod submit;
pub mod telemetry;
pub mod tenancy;
pub mod triggers;

/// Renders an error with its chain of causes: `a: b: c`. A cause whose text is already part of
/// what is written is left out (kube's `InferConfigError`, for one, prints its source inside
/// its own message), so each cause reads once.
pub fn report_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::report_error;

    /// Shaped like kube's config inference: the outer error prints its source in its message.
    #[derive(Debug, thiserror::Error)]
    #[error("failed to infer config: in-cluster: (not in a pod), kubeconfig: ({kubeconfig})")]
    struct Infer {
        #[source]
        kubeconfig: Read,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("failed to read kubeconfig from '/nowhere': {0}")]
    struct Read(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("failed to connect to the API server")]
    struct Connect(#[source] Infer);

    #[test]
    fn each_cause_is_said_once_even_when_a_message_repeats_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Connect(Infer {
            kubeconfig: Read(io),
        });
        let text = report_error(&err);
        assert_eq!(
            text,
            "failed to connect to the API server: failed to infer config: in-cluster: (not in a \
             pod), kubeconfig: (failed to read kubeconfig from '/nowhere': no such file)"
        );
        assert_eq!(text.matches("no such file").count(), 1);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_that_add_something_are_all_kept() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(report_error(&err), "outer: inner");
    }
}
