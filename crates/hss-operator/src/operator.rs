//! The operator process (`hss-operator run`): flags composed from each controller's own, the
//! Kubernetes client, the admin server (probes), the metrics server (HTTPS behind
//! TokenReview + SubjectAccessReview), the start-up permission check, leader election, the
//! controllers (ClusterScanTask, and ClusterScanTrigger unless disabled) and signals.
//!
//! With leader election the controllers run only while this replica leads. When the lease
//! cannot be renewed within its renew deadline (2/3 of its duration) they are dropped at once
//! (in-flight reconciles included: the submission protocol is crash-safe), so writes stop
//! before the lease can expire for another replica; then it campaigns again. On SIGTERM the
//! controllers stop taking work, reconciles in flight get `--shutdown-grace`, the rest is
//! abandoned, and the Lease is released so a successor takes over at once.

use std::{sync::Arc, time::Duration};

use kube::Client;

use crate::{
    controller::{self, Runtime, ScanArgs, fail_points::FailPoints},
    controller_runtime::{
        admin::Readiness,
        events,
        lease::{Leadership, LeaseConfig},
    },
    metrics::Metrics,
    permissions, triggers,
};

/// `hss-operator run` flags: the process's own, and each controller's.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub scans: ScanArgs,

    #[command(flatten)]
    pub triggers: triggers::TriggerArgs,

    #[command(flatten)]
    pub tenancy: crate::tenancy::TenancyArgs,

    /// Watch only these namespaces (repeat the flag or separate with commas; default: all).
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Address of the admin server: /livez and /readyz, plain HTTP (/metrics is on
    /// --metrics-listen).
    #[arg(long, env = "HSS_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: std::net::SocketAddr,

    #[command(flatten)]
    pub metrics: crate::controller_runtime::secure_metrics::MetricsArgs,

    /// Elect a leader through a coordination.k8s.io Lease; only the leader reconciles.
    #[arg(long, env = "HSS_LEADER_ELECTION")]
    pub leader_election: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "HSS_LEASE_NAME", default_value = "hss-operator")]
    pub lease_name: String,

    /// This replica's name (the chart sets it to the pod's name): the leader-election identity
    /// and the reporting instance of its Events. Default: HOSTNAME-PID as the identity,
    /// `hss-operator` as the instance.
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,

    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a lease stays valid without renewal; a leader stops writing after 2/3 of it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// With leader election, make /readyz ready only on the replica holding the lease. Off by
    /// default: a standby is ready (it passed its checks and can take over), so rolling updates
    /// and `helm install --wait` finish; leadership is `hss_operator_leader` and the Lease.
    #[arg(long, env = "HSS_READY_REQUIRES_LEASE", default_value_t = false, action = clap::ArgAction::Set)]
    pub ready_requires_lease: bool,

    /// On SIGTERM, how long reconciles in flight may take to finish before they are abandoned
    /// (safe: the submission protocol resolves an interrupted attempt by lookup). Keep it below
    /// the pod's terminationGracePeriodSeconds, which must also cover releasing the Lease.
    #[arg(long, env = "HSS_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to reach the Kubernetes API")]
    Kube(#[source] kube::Error),
    #[error("failed to start the admin server")]
    Admin(#[source] std::io::Error),
    #[error("failed to start the metrics server")]
    MetricsListen(#[source] std::io::Error),
    #[error("failed to start the metrics server")]
    Metrics(#[source] crate::controller_runtime::secure_metrics::Error),
    #[error("failed to start: the operator's identity lacks permissions (see the chart's RBAC):\n  - {}", .0.join("\n  - "))]
    Forbidden(Vec<String>),
    #[error("the ClusterScanTask controller failed")]
    Controller(#[source] controller::Error),
}

impl Error {
    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Admin(_) => "admin",
            Error::MetricsListen(_) => "metrics_listen",
            Error::Metrics(e) => e.category(),
            Error::Forbidden(_) => "forbidden",
            Error::Controller(e) => e.category(),
        }
    }
}

impl RunArgs {
    /// The Lease's namespace: the flag, else the pod's namespace (POD_NAMESPACE), else default.
    fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }

    /// What `run` with these flags needs from the API server ([`permissions::required`]).
    pub fn required_permissions(&self) -> Vec<permissions::Need> {
        self.permissions(true)
    }

    /// The needs, with the Lease's only when `with_lease` (the controllers alone need none).
    fn permissions(&self, with_lease: bool) -> Vec<permissions::Need> {
        let lease_namespace = self.lease_namespace();
        let credentials = self
            .scans
            .credentials_secret
            .as_deref()
            .and_then(|s| permissions::ObjectName::parse(s).ok());
        let lease = (with_lease && self.leader_election).then(|| permissions::LeaseRef {
            namespace: &lease_namespace,
            name: &self.lease_name,
        });
        permissions::required(&permissions::Settings {
            namespaces: &self.namespaces,
            triggers: !self.triggers.disable_triggers,
            lease,
            claims: self.scans.claims_configmap.as_ref(),
            credentials: credentials.as_ref(),
            policies: self.tenancy.mode == crate::tenancy::Mode::Policy,
            metrics_auth: !self.metrics.metrics_insecure,
            reports: self.scans.reports.mode.kinds(),
            namespaced_reports: self
                .scans
                .reports
                .self_cluster_id
                .as_ref()
                .is_some_and(|id| !id.is_empty()),
        })
    }

    /// One scope per watched namespace, or `None` for all.
    fn scopes(&self) -> Vec<Option<String>> {
        if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        }
    }
}

/// Checks permissions, then runs the controllers as one replica without leader election
/// until `shutdown` resolves (tests drive the operator through this).
pub async fn run_with(
    args: RunArgs,
    kube: Client,
    fail_points: FailPoints,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    run_controllers(args, kube, Runtime::standalone(fail_points), true, shutdown).await
}

/// Runs the ClusterScanTask controllers and, unless disabled, the trigger controllers (one
/// per scope) until `shutdown` resolves, checking permissions first when asked to. One
/// future: dropping it (a lost lease, a crash in tests) stops everything at once.
pub async fn run_controllers(
    args: RunArgs,
    kube: Client,
    runtime: Runtime,
    check_permissions: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    if check_permissions {
        preflight(&kube, &args.permissions(false)).await?;
    }
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let (tenants, keep_tenants) = crate::tenancy::Tenants::start(kube.clone(), args.tenancy.mode);
    let operator_project = args
        .scans
        .hss
        .client_config(&crate::config::Overrides::default())
        .ok()
        .map(|c| c.project_id);
    let trigger_scopes = if args.triggers.disable_triggers {
        vec![]
    } else {
        args.scopes()
    };
    let triggers = futures::future::join_all(trigger_scopes.into_iter().map(|ns| {
        let stop = shutdown.clone();
        let kube = kube.clone();
        let instance = runtime.instance.clone();
        let check = crate::tenancy::TemplateCheck {
            tenants: tenants.clone(),
            operator_project: operator_project.clone(),
        };
        async move {
            if let Err(e) =
                triggers::run(kube, ns, triggers::Clock::system(), instance, check, stop).await
            {
                tracing::error!(category = e.category(), error = %crate::report_error(&e), "trigger controller stopped");
            }
        }
    }));
    let scans = controller::run(
        args.scans.clone(),
        args.scopes(),
        kube,
        runtime,
        tenants,
        shutdown,
    );
    // The tenancy caches run only beside the controllers: they end with them.
    let scans = async move {
        tokio::select! {
            r = scans => r,
            () = keep_tenants => Ok(()),
        }
    };
    let (scans, _) = futures::future::join(scans, triggers).await;
    scans.map_err(Error::Controller)
}

/// `hss-operator run`: in-cluster or kubeconfig client, admin server, optional leader
/// election; stops on SIGTERM / Ctrl-C.
///
/// With leader election, the controllers run only while this replica leads. When the lease
/// cannot be renewed within its renew deadline (2/3 of its duration) the controllers are
/// dropped at once (in-flight reconciles included: the submission protocol is crash-safe), so
/// writes stop before the lease can expire for another replica; then it campaigns again.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    let kube = Client::try_default().await.map_err(Error::Kube)?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    readiness.set_leader_required(args.leader_election && args.ready_requires_lease);
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .map_err(Error::Admin)?;
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    let admin = tokio::spawn(crate::controller_runtime::admin::serve(
        listener,
        readiness.clone(),
        shutdown.clone(),
    ));
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics.metrics_listen)
        .await
        .map_err(Error::MetricsListen)?;
    let metrics_server = crate::controller_runtime::secure_metrics::serve(
        metrics_listener,
        &args.metrics,
        metrics.clone(),
        kube.clone(),
        shutdown.clone(),
    )
    .map_err(Error::Metrics)?;
    let metrics_server = tokio::spawn(async move {
        if let Err(e) = metrics_server.await {
            tracing::error!(category = e.category(), error = %crate::report_error(&e), "metrics server stopped");
        }
    });

    // Every replica checks everything it may need before it campaigns, so a missing
    // permission fails each pod at start, not only the one that happens to lead.
    let lease_namespace = args.lease_namespace();
    preflight(&kube, &args.required_permissions()).await?;
    let leadership = if args.leader_election {
        let identity = args
            .pod_name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        let mut config =
            LeaseConfig::new(lease_namespace.clone(), args.lease_name.clone(), identity);
        config.duration = args.lease_duration;
        config.renew_every = args.lease_duration / 3;
        readiness.set_standby();
        Leadership::start(kube.clone(), config)
    } else {
        Leadership::always()
    };
    let runtime = Runtime {
        fail_points: FailPoints::default(),
        instance: args
            .pod_name
            .clone()
            .unwrap_or_else(|| events::REPORTER.to_string()),
        metrics: metrics.controller.clone(),
        readiness: readiness.clone(),
        leadership: leadership.clone(),
    };
    let mut watch = leadership.watch();
    loop {
        // Wait to lead (or to be told to stop).
        tokio::select! {
            _ = shutdown.clone() => break,
            Ok(_) = watch.wait_for(|leader| *leader) => {}
        }
        tracing::info!("leading: starting the controllers");
        metrics.leadership.set_leader(true);
        readiness.set_leader(true);
        let mut lost = watch.clone();
        let stop = shutdown.clone();
        let grace_over = {
            let stop = shutdown.clone();
            let grace = args.shutdown_grace;
            async move {
                stop.await;
                tokio::time::sleep(grace).await;
            }
        };
        let outcome = tokio::select! {
            r = run_controllers(args.clone(), kube.clone(), runtime.clone(), false, stop) => Some(r),
            // Only a real change counts: without election the channel is closed (always leader).
            Ok(_) = lost.wait_for(|leader| !*leader) => None,
            () = grace_over => {
                tracing::warn!(grace = ?args.shutdown_grace, "shutting down: reconciles still in flight are abandoned (interrupted submissions are resolved by lookup)");
                Some(Ok(()))
            }
        };
        metrics.leadership.set_leader(false);
        readiness.set_leader(false);
        match outcome {
            Some(result) => {
                result?;
                break;
            }
            None => tracing::warn!("lost the lease: controllers stopped; campaigning again"),
        }
    }
    // The controllers are stopped (or dropped): nothing of ours writes any more, so the
    // successor may take over at once instead of after the lease duration.
    leadership.release().await;
    tracing::info!("stopped");
    let _ = admin.await;
    let _ = metrics_server.await;
    Ok(())
}

/// Fails with every missing permission named, if any.
async fn preflight(kube: &Client, needs: &[permissions::Need]) -> Result<(), Error> {
    let missing = permissions::missing(kube, needs)
        .await
        .map_err(Error::Kube)?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            missing.iter().map(ToString::to_string).collect(),
        ))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "hss-operator".into())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
