//! The ClusterScanTask controller. The process around it (flags, admin server, leader
//! election, signals) is [`crate::operator`]; what it shares with the trigger controller is
//! [`crate::controller_runtime`].
//!
//! Reconcile is a pipeline, in the trigger controller's shape: read what the object
//! references (the Secret, [`credentials`]) -> validate the spec (pure) -> act on HSS for the
//! phase -> a pure [`transitions`] function decides the status, Events and requeue ->
//! [`Context::commit`] writes and publishes them, the one place that does. The reconciler
//! never asks why it was called; everything comes through [`Context`].
//!
//! | phase | what reconcile does |
//! |---|---|
//! | Pending | [`submit::submit`]: backoff, budget, record the attempt, POST |
//! | Submitting | [`submit::resolve_attempt`]: find the task the attempt may have created |
//! | Submitted, Running | follow the shared poll ([`poller`]); when finished, fetch results |
//! | Succeeded, PartiallyFailed, Failed | nothing |
//!
//! Reading one object's life means reading [`transitions`] and then [`submit`] (the
//! exactly-once protocol ([`crate::submission`], its state in a [`Ledger`]), and deletion) and `tracking` top to
//! bottom. Deletion resolves an in-flight attempt within a bounded time, claims the object's
//! task ids ([`claims`]) and lets the object go; it never validates the spec and never waits
//! on HSS longer than `--cleanup-timeout`.

mod credentials;
pub mod fail_points;
pub mod fair;
mod findings;
pub mod metrics;
pub mod namespace_cap;
pub mod offload;
pub mod policy;
pub mod poller;
mod run;
pub mod status;
pub mod submit;
mod tracking;
pub mod transitions;

pub use run::run;

use std::{collections::HashSet, sync::Arc, time::Duration};

use kube::{
    Api, Client, ResourceExt,
    runtime::{
        controller::Action,
        finalizer::{self, Event as Finalizer},
        reflector::{ObjectRef, Store},
    },
};
use tracing::Instrument;

use crate::{
    config::{self, HssArgs, Overrides},
    controller_runtime::admin::Readiness,
    controller_runtime::lease::Leadership,
    controller_runtime::{events, retry::FailureStreaks},
    crd::{ClusterScanTask, FINALIZER, Phase},
    submission::{Ledger, claims},
};
use hss_client::{budget::Budget, resolve::Lookup};

use fail_points::{FailPoints, Step};

pub use credentials::{CredentialsProblem, Own, Unusable, credentials_from_secret};
pub use poller::Poller;

/// The ClusterScanTask controller's flags (part of `hss-operator run`).
#[derive(clap::Args, Debug, Clone)]
pub struct ScanArgs {
    #[command(flatten)]
    pub hss: HssArgs,

    /// Default credentials from a Secret, as NAMESPACE/NAME (keys accessKey, secretKey,
    /// optional securityToken, or authToken), used when a ClusterScanTask names none and no
    /// credentials are given by flag or environment.
    #[arg(long, env = "HSS_CREDENTIALS_SECRET")]
    pub credentials_secret: Option<String>,

    /// How often the shared ListTasks poll runs (never faster than the budget allows).
    #[arg(long, env = "HSS_POLL_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// Longest time deletion waits for HSS to resolve an in-flight submission.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub cleanup_timeout: Duration,

    /// How old an attempt must be before a lookup that finds no task is trusted.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lookup_settle: Duration,

    /// How long a CreateTask attempt may stay unresolved (lookups inconclusive or failing)
    /// before its object says so with condition Submitted=False (SubmissionUnresolved) and
    /// the ways out (annotations hss.scanops.dev/adopt-task or hss.scanops.dev/resubmit).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub unresolved_after: Duration,

    /// How long a followed task may be missing from HSS's listing, asked for by id, before
    /// its ClusterScanTask ends Failed (reason TaskNotListed): its results cannot be read.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub task_lost_after: Duration,

    /// How the first list of ClusterScanTasks is read: `stream` (objects one by one, no
    /// full-list response in memory; Kubernetes 1.32 and 1.34+), `list` (one unpaged LIST
    /// from the watch cache), `auto` (stream where the server does by default).
    #[arg(long, env = "HSS_INITIAL_LIST", value_enum, default_value_t = crate::controller_runtime::lists::InitialList::Auto)]
    pub initial_list: crate::controller_runtime::lists::InitialList,

    #[command(flatten)]
    pub policy: policy::PolicyArgs,

    #[command(flatten)]
    pub reports: crate::reports::ReportArgs,

    /// ConfigMap (NAMESPACE/NAME) that keeps deleted objects' HSS task ids claimed across
    /// restarts, so no unresolved attempt adopts them (see `submission::claims`). Without it
    /// the claims live in memory only. The chart sets it to the release namespace.
    #[arg(long, env = "HSS_CLAIMS_CONFIGMAP", value_parser = crate::permissions::ObjectName::parse)]
    pub claims_configmap: Option<crate::permissions::ObjectName>,

    /// Objects reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,

    /// Most unfinished ClusterScanTasks per namespace (beyond it they wait, `Throttled` reason
    /// NamespaceLimit, spending nothing); a ClusterScanPolicy's `maxUnfinished` overrides it
    /// for the namespaces it selects. 0: no cap.
    #[arg(long, env = "HSS_MAX_UNFINISHED_PER_NAMESPACE", default_value_t = 0)]
    pub max_unfinished_per_namespace: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to write status")]
    WriteStatus(#[source] kube::Error),
    #[error("failed to read the credentials Secret")]
    ReadSecret(#[source] kube::Error),
    #[error("failed to call HSS")]
    Hss(#[source] hss_client::Error),
    #[error("failed to configure the HSS client")]
    Config(#[source] config::Error),
    #[error("failed to manage the finalizer")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("failed to reach the Kubernetes API")]
    Kube(#[source] kube::Error),
    #[error("failed to load the claims on deleted objects' tasks")]
    Claims(#[source] claims::Error),
    #[error("failed to decide the tenancy of the object")]
    Tenancy(#[source] crate::tenancy::Error),
}

impl Error {
    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::WriteStatus(_) => "write_status",
            Error::ReadSecret(_) => "read_secret",
            Error::Hss(e) => e.category(),
            Error::Config(e) => e.category(),
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "finalizer",
            },
            Error::Kube(_) => "kube",
            Error::Claims(e) => e.category(),
            Error::Tenancy(e) => e.category(),
        }
    }
}

/// Everything reconcile touches.
pub struct Context {
    pub kube: Client,
    pub events: events::Events,
    pub poller: Poller,
    pub args: ScanArgs,
    pub budget: Budget,
    http: reqwest::Client,
    /// The operator's own credentials, decided at start-up.
    own: Own,
    /// Clients by settings and credentials source, and the key guard they share.
    clients: credentials::Clients,
    /// One cache per watched scope.
    stores: Vec<Store<ClusterScanTask>>,
    /// The exactly-once state: remembered task ids, deleted objects' claims, the POST gate.
    pub(crate) ledger: Arc<Ledger>,
    fail_points: FailPoints,
    /// Consecutive reconcile failures per object, for error_policy backoff.
    failures: FailureStreaks,
    pub metrics: Arc<metrics::ControllerMetrics>,
    /// Checked right before every CreateTask POST.
    pub leadership: Leadership,
    /// Result pages shared by the objects whose findings are read together.
    pub findings: Arc<crate::findings::Caches>,
    /// Findings reads running outside reconcile.
    reads: offload::Offload<findings::Outcome>,
    /// The findings' reports (`--reports`).
    reports: crate::reports::Writer,
    /// Finished tasks' results reads running outside reconcile.
    results: offload::Offload<tracking::Outcome>,
    /// Unresolved attempts' lookups running outside reconcile.
    lookups: offload::Offload<Result<Lookup, hss_client::Error>>,
    /// Named adoptions (`hss.scanops.dev/adopt-task`) running outside reconcile, with why a
    /// task was refused.
    named: offload::Offload<(Result<Lookup, hss_client::Error>, Option<String>)>,
    /// Cached copies this process's own writes replaced: not acted on.
    superseded: crate::controller_runtime::superseded::Superseded,
    /// What each namespace may do with the operator's credentials.
    pub tenants: crate::tenancy::Tenants,
    /// Who gets the next CreateTask token.
    pub fair: fair::FairQueue,
}

/// What the process shares with this controller: metrics, readiness, leadership, test hooks.
#[derive(Clone)]
pub struct Runtime {
    pub fail_points: FailPoints,
    /// The reporting instance of the Events (the pod's name, `--pod-name`).
    pub instance: String,
    pub metrics: Arc<metrics::ControllerMetrics>,
    pub readiness: Readiness,
    pub leadership: Leadership,
}

impl Runtime {
    /// A single replica without leader election.
    pub fn standalone(fail_points: FailPoints) -> Self {
        Self {
            fail_points,
            instance: events::REPORTER.to_string(),
            metrics: Arc::new(metrics::ControllerMetrics::new()),
            readiness: Readiness::default(),
            leadership: Leadership::always(),
        }
    }
}

impl Context {
    /// Who `obj`'s HSS calls are queued as in the fair queue: its namespace, with the share
    /// its policy gives it.
    pub(crate) fn caller(&self, obj: &ClusterScanTask) -> fair::Caller {
        fair::Caller::of(
            obj,
            self.tenants.share(&obj.namespace().unwrap_or_default()),
        )
    }

    pub(crate) fn uid(obj: &ClusterScanTask) -> String {
        obj.uid().unwrap_or_else(|| obj.name_any())
    }

    pub(crate) async fn fail_point(&self, step: Step, obj: &ClusterScanTask) {
        self.fail_points.at(step, obj.name_any()).await;
    }

    /// Task ids other objects own in their status (from the cache).
    pub(crate) fn owned_task_ids(&self, obj: &ClusterScanTask) -> HashSet<String> {
        let me = Self::uid(obj);
        self.stores
            .iter()
            .flat_map(|store| store.state())
            .filter(|o| Self::uid(o) != me)
            .filter_map(|o| {
                let st = o.status.as_ref()?;
                let id = st.task_id.as_deref()?;
                self.ledger
                    .trusts(&Self::uid(&o), id, st.task_id_seal.as_deref())
                    .then(|| id.to_string())
            })
            .collect()
    }

    /// The claims scope of the object's tasks (its endpoint and project), if its settings
    /// resolve; needs no credentials.
    fn scope_of(&self, obj: &ClusterScanTask) -> Option<String> {
        let spec = &obj.spec;
        let config = self
            .args
            .hss
            .client_config(&Overrides {
                region: spec.region.as_deref(),
                endpoint: spec.endpoint.as_deref(),
                project_id: spec.project_id.as_deref(),
                enterprise_project_id: spec.enterprise_project_id.as_deref(),
            })
            .ok()?;
        Some(claims::scope(
            &config.endpoint.to_string(),
            &config.project_id,
        ))
    }

    /// Applies a transition, the one place reconcile writes status: the status when it
    /// changed (conditional on the object's resourceVersion), then its Events about the
    /// object as written. Returns that object and when to look again.
    pub(crate) async fn commit(
        &self,
        obj: &ClusterScanTask,
        t: transitions::Transition,
    ) -> Result<(ClusterScanTask, Action), Error> {
        self.commit_step(obj, t, None).await
    }

    /// [`commit`](Self::commit), timing the status write as submission step `step`.
    pub(crate) async fn commit_step(
        &self,
        obj: &ClusterScanTask,
        t: transitions::Transition,
        step: Option<metrics::SubmissionStep>,
    ) -> Result<(ClusterScanTask, Action), Error> {
        let mut t = t;
        if t.status.phase.is_some_and(|p| p != Phase::Pending) {
            self.fair.leave(&Self::uid(obj));
        }
        // Only a transition that learnt a task id (the POST's answer, a lookup, a checked
        // adoption) changes it: that is the one the operator seals.
        let before = obj.status.as_ref().and_then(|s| s.task_id.as_deref());
        if let Some(id) = t.status.task_id.as_deref()
            && before != Some(id)
        {
            t.status.task_id_seal = self.ledger.seal(&Self::uid(obj), id);
        }
        let written = if obj.status.as_ref() == Some(&t.status) {
            obj.clone()
        } else {
            let api: Api<ClusterScanTask> =
                Api::namespaced(self.kube.clone(), &obj.namespace().unwrap_or_default());
            let started = std::time::Instant::now();
            let written = self.write_status(&api, obj, &t.status).await;
            if let Some(step) = step {
                self.metrics.submission_step(step, started.elapsed());
            }
            written.map_err(Error::WriteStatus)?
        };
        for ev in t.events {
            self.event(&written, ev).await;
        }
        Ok((written, t.action))
    }

    /// Writes `st` as `obj`'s status (conditional on its resourceVersion), remembering that
    /// the copy it was computed from is superseded.
    pub(crate) async fn write_status(
        &self,
        api: &Api<ClusterScanTask>,
        obj: &ClusterScanTask,
        st: &crate::crd::ClusterScanTaskStatus,
    ) -> Result<ClusterScanTask, kube::Error> {
        let written = status::write(api, obj, st).await?;
        self.superseded.wrote(
            &Self::uid(obj),
            obj.resource_version(),
            written.resource_version(),
        );
        Ok(written)
    }

    /// The cap on unfinished scans of `obj`'s namespace: its policies' `maxUnfinished`, else
    /// `--max-unfinished-per-namespace`; None for no cap.
    pub(crate) async fn namespace_cap(&self, obj: &ClusterScanTask) -> Result<Option<u32>, Error> {
        let ns = obj.namespace().unwrap_or_default();
        let from_policy = self
            .tenants
            .grant(&ns)
            .await
            .map_err(Error::Tenancy)?
            .flatten()
            .and_then(|g| g.max_unfinished);
        Ok(from_policy
            .or(Some(self.args.max_unfinished_per_namespace))
            .filter(|cap| *cap > 0))
    }

    /// Runs `f` over the cached objects of `obj`'s namespace.
    fn namespace_objects<T>(
        &self,
        obj: &ClusterScanTask,
        f: impl FnOnce(&[&ClusterScanTask]) -> T,
    ) -> T {
        let ns = obj.namespace();
        let state: Vec<Arc<ClusterScanTask>> = self.stores.iter().flat_map(|s| s.state()).collect();
        let same: Vec<&ClusterScanTask> = state
            .iter()
            .map(|o| o.as_ref())
            .filter(|o| o.namespace() == ns)
            .collect();
        f(&same)
    }

    /// A scan of `obj`'s namespace finished or went away: wake the oldest object waiting for
    /// the namespace's cap, if any.
    pub(crate) fn wake_next_waiter(&self, obj: &ClusterScanTask) {
        let next = self.namespace_objects(obj, |all| {
            namespace_cap::next_waiter(all.iter().copied()).map(ObjectRef::from_obj)
        });
        if let Some(next) = next {
            self.poller.wake(next);
        }
    }

    /// Publishes an Event; failures to publish are logged, never fatal.
    pub(crate) async fn event(&self, obj: &ClusterScanTask, ev: events::Note) {
        self.events.publish(obj, &ev).await;
    }
}

async fn reconcile(obj: Arc<ClusterScanTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<ClusterScanTask> = Api::namespaced(ctx.kube.clone(), &ns);
    let span = tracing::info_span!(
        "reconcile",
        namespace = %ns,
        name = %obj.name_any(),
        task_id = obj.status.as_ref().and_then(|s| s.task_id.as_deref()).unwrap_or("")
    );
    let uid = Context::uid(&obj);
    // A copy our own write replaced: the newer one is on its way through the watch, and acting
    // on this one would only conflict.
    if ctx
        .superseded
        .is_superseded(&uid, obj.metadata.resource_version.as_deref())
    {
        tracing::debug!("cached copy superseded by our own write; waiting for the newer one");
        return Ok(Action::await_change());
    }
    let deleting = obj.metadata.deletion_timestamp.is_some();
    let timer = ctx.metrics.reconcile_started();
    // The finalizer goes on in this reconcile, and the submission goes on with the object as
    // written (kube's helper would stop and wait for the watch to bring it back).
    let before = obj.resource_version();
    let obj = match crate::controller_runtime::finalizers::ensure(&api, obj, FINALIZER).await {
        Ok(obj) => {
            ctx.superseded.wrote(&uid, before, obj.resource_version());
            obj
        }
        Err(e) => {
            timer.finish();
            let err = Error::Kube(e);
            ctx.metrics.reconcile_failed(err.category());
            return Err(err);
        }
    };
    let result = finalizer::finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj, &ctx).await,
            Finalizer::Cleanup(obj) => submit::cleanup(obj, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    timer.finish();
    match &result {
        Ok(_) => ctx.metrics.reconcile_ok(),
        Err(e) => ctx.metrics.reconcile_failed(e.category()),
    }
    if result.is_ok() {
        ctx.failures.succeeded(&uid);
        if deleting {
            ctx.superseded.forget(&uid);
        }
    }
    result
}

async fn apply(obj: Arc<ClusterScanTask>, ctx: &Context) -> Result<Action, Error> {
    let phase = status::phase(&obj);
    // A task id the operator did not record (someone patched status) is never followed, nor
    // its results read with the operator's credentials: a followed one ends Failed; a
    // finished scan keeps its status, and nothing more is read or taken from it.
    if let Some(st) = obj.status.as_ref()
        && let Some(id) = st.task_id.as_deref()
        && phase != Phase::Failed
        && !ctx
            .ledger
            .trusts(&Context::uid(&obj), id, st.task_id_seal.as_deref())
    {
        if phase.is_final() {
            tracing::warn!(
                "status.taskId was not recorded by the operator: its findings are not read"
            );
            return Ok(Action::await_change());
        }
        let t = transitions::untrusted_task(&obj, jiff::Timestamp::now());
        return Ok(ctx.commit(&obj, t).await?.1);
    }
    if phase.is_final() {
        if let Some(id) = obj.status.as_ref().and_then(|s| s.task_id.as_deref()) {
            ctx.poller.untrack(id);
        }
        if ctx.namespace_cap(&obj).await?.is_some() {
            ctx.wake_next_waiter(&obj);
        }
        findings::remember(&obj, ctx);
        if !findings::wanted(&obj, jiff::Timestamp::now()) {
            return Ok(Action::await_change());
        }
    }
    let api: Api<ClusterScanTask> =
        Api::namespaced(ctx.kube.clone(), &obj.namespace().unwrap_or_default());

    // Validate (pure). An invalid spec can only have been admitted by an API server without CEL.
    let now = jiff::Timestamp::now();
    let req = match obj.spec.to_request() {
        Ok(req) => req,
        Err(e) if phase == Phase::Pending => {
            let t = transitions::invalid_spec(&obj, e.category(), &crate::report_error(&e), now);
            return Ok(ctx.commit(&obj, t).await?.1);
        }
        Err(e) => {
            tracing::error!(error = %e, "spec of a submitted scan no longer converts; following by task id only");
            return Ok(Action::await_change());
        }
    };

    let hss = match ctx.hss_for(&obj).await? {
        Ok(client) => client,
        Err(Unusable::Refused(refusal)) => {
            let t = transitions::refused(&obj, refusal.reason, &refusal.message, now);
            return Ok(ctx.commit(&obj, t).await?.1);
        }
        Err(Unusable::Credentials(problem)) => {
            let t = transitions::credentials_unavailable(
                &obj,
                problem.reason(),
                &problem.message(),
                transitions::credentials_retry(&obj, now),
                now,
            );
            return Ok(ctx.commit(&obj, t).await?.1);
        }
    };
    let obj = match transitions::credentials_ready(&obj, now) {
        // A new object's condition rides on its next write (the attempt record, or the start
        // of a budget wait): one write and one API round trip fewer before its POST. The
        // copy keeps the resourceVersion it was read at, so that write stays conditional.
        Some(st) if phase == Phase::Pending => {
            let mut pending = (*obj).clone();
            pending.status = Some(st);
            Arc::new(pending)
        }
        Some(st) => Arc::new(
            ctx.write_status(&api, &obj, &st)
                .await
                .map_err(Error::WriteStatus)?,
        ),
        None => obj,
    };

    if phase == Phase::Pending
        && let Some(cap) = ctx.namespace_cap(&obj).await?
        && !ctx.namespace_objects(&obj, |all| {
            namespace_cap::may_proceed(&obj, all.iter().copied(), cap)
        })
    {
        let t = transitions::namespace_limit(&obj, cap, namespace_cap::RECHECK, now);
        return Ok(ctx.commit(&obj, t).await?.1);
    }
    match phase {
        Phase::Pending => submit::submit(obj, ctx, &hss, &req).await,
        Phase::Submitting => submit::resolve_attempt(obj, ctx, &hss, &req).await,
        Phase::Submitted | Phase::Running => tracking::follow(obj, ctx, &hss).await,
        Phase::Succeeded | Phase::PartiallyFailed => findings::read(obj, ctx, &hss).await,
        Phase::Failed => Ok(Action::await_change()),
    }
}

impl Error {
    /// A write lost a race (409): our cached copy was stale. Not a failure of anything; the
    /// next reconcile works from a fresher copy.
    pub fn is_conflict(&self) -> bool {
        let kube_err = match self {
            Error::WriteStatus(e) | Error::Kube(e) => Some(e),
            Error::Finalizer(f) => match f.as_ref() {
                finalizer::Error::ApplyFailed(Error::WriteStatus(e))
                | finalizer::Error::CleanupFailed(Error::WriteStatus(e)) => Some(e),
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Some(e),
                _ => None,
            },
            _ => None,
        };
        matches!(kube_err, Some(kube::Error::Api(e)) if e.code == 409)
    }
}

fn error_policy(obj: Arc<ClusterScanTask>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.failures.on_error(
        &Context::uid(&obj),
        err.category(),
        &crate::report_error(err),
        err.is_conflict(),
    )
}
