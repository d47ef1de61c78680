//! Tenancy: what each namespace may do with the operator's own HSS credentials, from the
//! `ClusterScanPolicy`s that select it (`run --tenancy policy`, env `HSS_TENANCY`).
//!
//! A ClusterScanTask that uses the operator's credentials (no `spec.credentialsSecretRef`)
//! may scan only the clusters, files, scan types and projects that the union of the policies
//! selecting its namespace grants ([`grant`]); anything else ends `Failed` with reason
//! `NotPermitted`, a Warning Event and no HSS call. A namespace no policy selects may not use
//! the operator's credentials at all. `--tenancy open` (the default of `run`) checks none of
//! this: the endpoint and project rule of [`crate::controller::policy`] still holds.
//!
//! # Guarantees
//! - The decision reads only what administrators write: ClusterScanPolicies (cluster-scoped)
//!   and the labels of Namespaces. Nothing a tenant writes in its namespace widens it.
//! - Checked at every reconcile before anything is sent, so a policy change applies to every
//!   object not yet submitted; a submitted scan is not stopped (HSS cannot cancel one).
//!
//! # Assumptions
//! - Namespace labels are set by administrators (a tenant who may label its own namespace can
//!   select itself into any policy with a label selector; select by
//!   `kubernetes.io/metadata.name`, which the API server sets, to rule that out).
//!
//! # Caveats
//! - The caches lag the API server by the watch delay: a Namespace not yet in the cache is
//!   read directly (one `get`), a policy change takes effect when its watch event arrives.
//!
//! # Errors
//! [`Error`]: reading a Namespace the cache does not know yet failed.

pub mod grant;
mod status;

pub use grant::{Grant, NOT_PERMITTED};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, reflector::Store, watcher},
};

use crate::controller::policy::Refusal;
use crate::crd::{ClusterScanPolicy, ClusterScanTaskSpec};

/// The label the API server (1.21+) sets on every Namespace: its name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Who decides what a namespace may do with the operator's credentials.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Any namespace may use them for anything on the operator's endpoint and project.
    #[default]
    Open,
    /// Only what the ClusterScanPolicies selecting the namespace grant.
    Policy,
}

/// `hss-operator run` flags for tenancy.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TenancyArgs {
    /// `policy`: a ClusterScanTask using the operator's own credentials may do only what the
    /// ClusterScanPolicies selecting its namespace grant (the chart's default); `open`: no
    /// policy is read.
    #[arg(long = "tenancy", env = "HSS_TENANCY", value_enum, default_value_t = Mode::Open)]
    pub mode: Mode,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the Namespace")]
    ReadNamespace(#[source] kube::Error),
}

impl Error {
    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadNamespace(_) => "read_namespace",
        }
    }
}

/// The policies and Namespaces as the operator sees them, shared by every controller. Cheap
/// to clone.
#[derive(Clone)]
pub enum Tenants {
    Open,
    Policy {
        kube: Client,
        policies: Store<ClusterScanPolicy>,
        namespaces: Store<Namespace>,
    },
}

impl Tenants {
    /// The tenancy of `mode`, and (for `policy`) the future that keeps its caches and the
    /// policies' status current: run it beside the controllers.
    pub fn start(kube: Client, mode: Mode) -> (Self, futures::future::BoxFuture<'static, ()>) {
        match mode {
            Mode::Open => (Tenants::Open, Box::pin(futures::future::pending())),
            Mode::Policy => {
                let (policies, policy_writer) = kube::runtime::reflector::store();
                let (namespaces, ns_writer) = kube::runtime::reflector::store();
                let policy_stream = watcher(
                    Api::<ClusterScanPolicy>::all(kube.clone()),
                    watcher::Config::default(),
                )
                .default_backoff()
                .modify(|p: &mut ClusterScanPolicy| p.managed_fields_mut().clear())
                .reflect(policy_writer)
                .applied_objects();
                // Only the labels are read.
                let ns_stream = watcher(
                    Api::<Namespace>::all(kube.clone()),
                    watcher::Config::default(),
                )
                .default_backoff()
                .modify(|n: &mut Namespace| {
                    n.managed_fields_mut().clear();
                    n.annotations_mut().clear();
                    n.spec = None;
                    n.status = None;
                })
                .reflect(ns_writer)
                .applied_objects();
                let tenants = Tenants::Policy {
                    kube: kube.clone(),
                    policies: policies.clone(),
                    namespaces: namespaces.clone(),
                };
                let run = status::run(kube, policy_stream, policies, ns_stream, namespaces);
                (tenants, Box::pin(run))
            }
        }
    }

    /// Waits until the caches have their first state (returns at once for `open`).
    pub async fn wait_until_ready(&self) {
        if let Tenants::Policy {
            policies,
            namespaces,
            ..
        } = self
        {
            let _ = policies.wait_until_ready().await;
            let _ = namespaces.wait_until_ready().await;
        }
    }

    pub fn mode(&self) -> Mode {
        match self {
            Tenants::Open => Mode::Open,
            Tenants::Policy { .. } => Mode::Policy,
        }
    }

    /// The grant of namespace `ns`: None in `open` mode, and in `policy` mode when no policy
    /// selects it (`Some(None)`).
    pub async fn grant(&self, ns: &str) -> Result<Option<Option<Grant>>, Error> {
        let Tenants::Policy {
            kube,
            policies,
            namespaces,
        } = self
        else {
            return Ok(None);
        };
        let labels = match cached_labels(namespaces, ns) {
            Some(labels) => labels,
            None => match Api::<Namespace>::all(kube.clone()).get_opt(ns).await {
                Ok(Some(n)) => n.labels().clone(),
                Ok(None) => BTreeMap::new(),
                Err(e) => return Err(Error::ReadNamespace(e)),
            },
        };
        Ok(Some(grant_in(policies, labels, ns)))
    }

    /// Checks a scan in namespace `ns` that would use the operator's own credentials.
    pub async fn check(
        &self,
        ns: &str,
        spec: &ClusterScanTaskSpec,
        project: &str,
        operator_project: &str,
    ) -> Result<Result<(), Refusal>, Error> {
        let Some(grant) = self.grant(ns).await? else {
            return Ok(Ok(()));
        };
        Ok(grant::permits(
            grant.as_ref(),
            grant::Asked {
                namespace: ns,
                spec,
                project,
                operator_project,
            },
        ))
    }

    /// The namespace's weight in the fair share of the HSS budget: 1 unless a policy says more.
    pub fn share(&self, ns: &str) -> u32 {
        let Tenants::Policy {
            policies,
            namespaces,
            ..
        } = self
        else {
            return 1;
        };
        let labels = cached_labels(namespaces, ns).unwrap_or_default();
        grant_in(policies, labels, ns).map_or(1, |g| g.share)
    }
}

/// What the trigger controller checks a template against: the tenancy and the operator's own
/// project (a template naming none uses it).
#[derive(Clone)]
pub struct TemplateCheck {
    pub tenants: Tenants,
    pub operator_project: Option<String>,
}

impl TemplateCheck {
    /// No check (`--tenancy open`, tests of the trigger controller alone).
    pub fn open() -> Self {
        Self {
            tenants: Tenants::Open,
            operator_project: None,
        }
    }

    /// Why the runs of a template in namespace `ns` would be refused, if they would: only
    /// templates using the operator's credentials are checked (their own Secret decides the
    /// rest).
    pub async fn refuses(
        &self,
        ns: &str,
        spec: &ClusterScanTaskSpec,
    ) -> Result<Option<Refusal>, Error> {
        if spec.credentials_secret_ref.is_some() || self.tenants.mode() == Mode::Open {
            return Ok(None);
        }
        let own = self.operator_project.as_deref().unwrap_or_default();
        let project = spec.project_id.as_deref().unwrap_or(own);
        Ok(self.tenants.check(ns, spec, project, own).await?.err())
    }
}

/// The labels of namespace `ns` in the cache, if it is there.
fn cached_labels(namespaces: &Store<Namespace>, ns: &str) -> Option<BTreeMap<String, String>> {
    namespaces
        .get(&kube::runtime::reflector::ObjectRef::new(ns))
        .map(|n| n.labels().clone())
}

/// What the cached policies grant namespace `ns` with `labels`.
fn grant_in(
    policies: &Store<ClusterScanPolicy>,
    labels: BTreeMap<String, String>,
    ns: &str,
) -> Option<Grant> {
    grant::grant_for(
        &with_name(labels, ns),
        policies.state().iter().map(|p| p.as_ref()),
    )
}

/// The labels with the name label the API server sets since 1.21 (older servers lack it).
fn with_name(mut labels: BTreeMap<String, String>, ns: &str) -> BTreeMap<String, String> {
    labels.insert(NAME_LABEL.to_string(), ns.to_string());
    labels
}
