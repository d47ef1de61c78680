//! The ClusterScanTrigger controller: creates ClusterScanTasks ("runs") on a schedule, when
//! Nodes join, when Kubernetes is upgraded and on demand.
//!
//! Reconcile is a pipeline: read the trigger's runs, the Nodes and the API server version from
//! caches -> [`decide::validate`] and [`decide::decide`] (pure) -> act (create at most one run,
//! delete finished runs beyond the history limits) -> write status (server-side apply, field
//! manager `hss-operator`) -> publish Events. Time comes from a [`Clock`], so tests move time
//! instead of waiting for it.
//!
//! # Guarantees
//! - **No duplicate runs.** A run's name is `<trigger>-<hash>`, the hash taken over the
//!   trigger's uid, the cause and what identifies that occurrence of it (the schedule time, the
//!   run-now value, when a join or version change was first noticed). Deciding the same run
//!   again, after a crash between create and status write or from a stale cache, repeats the
//!   same name, and the API server refuses the second create (AlreadyExists means done).
//! - **At most one run per cooldown**, whatever the cause: the last run time is the later of
//!   `status.lastRunTime` and the runs' `hss.scanops.dev/run-time` annotations, so a lost status
//!   write does not reset it. Causes due together (a schedule tick and a run-now request, say)
//!   are covered by one run.
//! - **At most one catch-up run** after downtime: only the latest missed schedule time runs,
//!   and only within `startingDeadlineSeconds` when set.
//! - Invalid cron, time zone, cooldown or selector: `Ready=False` with the reason and one
//!   Warning Event; nothing runs; never a panic.
//!
//! # Behaviour where CronJob has no answer
//! | cause | inside the cooldown | Forbid with an unfinished run | suspended |
//! |---|---|---|---|
//! | schedule | skipped (Event `SkippedCooldown`) | skipped (Event `SkippedConcurrent`) | skipped silently |
//! | nodeJoined, kubernetesUpgraded | waits (`RunPending=True`, Event `RunDeferred`) | waits | dropped (the baseline moves on) |
//! | run-now annotation | waits | waits | runs (like `kubectl create job --from`) |
//!
//! - `concurrencyPolicy` defaults to `Forbid` (CronJob's default is `Allow`): scans take
//!   minutes to hours, and HSS allows 5 creates a minute and cannot cancel a task.
//! - Node joins: a Node counts as joined when it matches the selector and was created after
//!   the newest matching Node the trigger had seen (a creation-time watermark in status, so the
//!   status does not grow with the cluster and joins during operator downtime are noticed). The
//!   run waits `settleSeconds` (default 60) after the first join is noticed, so a node pool
//!   scaling up is scanned once. Nodes present when the trigger is created are the baseline.
//! - What status shows of Nodes: counts, creation times, hashes and the version fingerprint;
//!   node names and version strings only where the trigger's namespace may list Nodes
//!   ([`access`]: a cached SubjectAccessReview, asked only for triggers with on.nodeJoined or
//!   on.kubernetesUpgraded).
//! - Template labels and annotations are copied to runs except the operator's own
//!   (`hss.scanops.dev/...`): a run does not start with an adopt-task or resubmit instruction,
//!   or a forged run-time, that its creator wrote into the template.
//! - Upgrades: the API server's git version and the distinct kubelet versions, fingerprinted;
//!   a different set becomes pending, and runs once it has stayed the same for `settleSeconds`
//!   (a rolling upgrade restarts the wait at every step). Nodes without a reported kubelet
//!   version are ignored.
//! - History: finished runs beyond the limits are deleted, oldest first. Deleting a finished
//!   ClusterScanTask does not touch HSS. Deleting a trigger deletes its runs (owner references);
//!   unfinished runs are then cleaned up by the ClusterScanTask controller.
//!
//! # Caveats
//! - The API server version is polled (every minute); kubelet versions come from the Node watch.
//! - A run whose name is taken by an object the trigger does not own is treated as done, with
//!   a Warning Event (`RunNameTaken`).
//! - Caches lag writes. Status is written only by this controller, so until the trigger cache
//!   shows the status this process last wrote, reconciles use the written one; runs created
//!   and not yet in the run cache count as active (see `Context::catch_up`).
//! - A template the API server refuses (admission) sets `Ready=False, InvalidTemplate`; the
//!   causes stay owed until the template changes.
//! - Each call of [`run`] watches Nodes and polls the API server version itself.

pub mod access;
pub mod clock;
pub mod decide;
pub mod nodes;
mod run;
pub mod schedule;

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, Store},
        watcher,
    },
};
use tracing::Instrument;

pub use clock::{Clock, ManualClockHandle};
pub use run::build_run;

use crate::{
    controller_runtime::{self, events, retry::FailureStreaks},
    crd::{
        ClusterScanTask, ClusterScanTrigger, ClusterScanTriggerStatus,
        cluster_scan_trigger::TRIGGER_LABEL,
    },
};
use decide::{Decision, Inputs, PlannedRun, RunInfo};
use nodes::NodeView;

/// How often the API server version is read.
const VERSION_POLL: Duration = Duration::from_secs(60);
/// Longest wait for a cache to fill before a reconcile goes on without it.
const CACHE_WAIT: Duration = Duration::from_secs(10);
/// Longest requeue: time is re-read at least this often (clock jumps, missed events).
const MAX_REQUEUE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to create a run")]
    CreateRun(#[source] kube::Error),
    #[error("failed to delete a finished run")]
    DeleteRun(#[source] kube::Error),
    #[error("failed to write status")]
    WriteStatus(#[source] kube::Error),
    #[error("the ClusterScanTask cache did not sync")]
    RunsNotSynced,
    #[error("failed to check the template against the policies")]
    Tenancy(#[source] crate::tenancy::Error),
}

impl Error {
    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::CreateRun(_) => "create_run",
            Error::DeleteRun(_) => "delete_run",
            Error::WriteStatus(_) => "write_status",
            Error::RunsNotSynced => "cache_not_synced",
            Error::Tenancy(e) => e.category(),
        }
    }

    /// A status write lost a race with a newer version (409): not a failure.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::WriteStatus(e) if controller_runtime::status::is_conflict(e))
    }
}

/// The ClusterScanTrigger controller's flags (part of `hss-operator run`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TriggerArgs {
    /// Do not run the ClusterScanTrigger controller (no Node watch needed).
    #[arg(long, env = "HSS_DISABLE_TRIGGERS")]
    pub disable_triggers: bool,
}

/// Everything reconcile touches.
struct Context {
    kube: Client,
    events: events::Events,
    clock: Clock,
    runs: Store<ClusterScanTask>,
    nodes: Store<NodeView>,
    api_server: tokio::sync::watch::Receiver<Option<String>>,
    /// Whether a namespace's triggers may name Nodes and versions.
    node_access: access::NodeAccess,
    /// Whether the policies let a template's runs use the operator's credentials.
    tenancy: crate::tenancy::TemplateCheck,
    /// Consecutive reconcile failures per trigger, for error_policy backoff.
    failures: FailureStreaks,
    /// Our own writes the caches may not show yet (see [`Context::catch_up`]).
    written: Mutex<HashMap<String, Written>>,
}

/// What this process last wrote for a trigger, until the caches show it.
#[derive(Default)]
struct Written {
    status: Option<ClusterScanTriggerStatus>,
    /// Runs created and not yet seen in the run cache, with when they were created.
    runs: Vec<(RunInfo, tokio::time::Instant)>,
}

/// How long a created run is assumed to exist before the run cache shows it.
const UNSEEN_RUN_GRACE: Duration = Duration::from_secs(60);

impl Context {
    /// The trigger and its runs as of our own last writes. The trigger's status is written
    /// only by this controller, so a cached status older than the one we wrote is stale (the
    /// watch event has not arrived yet); deciding from it would repeat a decision (harmless
    /// thanks to deterministic names, but noisy) or drop fields. Likewise a run we created is
    /// counted until the run cache shows it.
    fn catch_up(
        &self,
        trigger: Arc<ClusterScanTrigger>,
        runs: &mut Vec<RunInfo>,
    ) -> Arc<ClusterScanTrigger> {
        let uid = trigger.uid().unwrap_or_default();
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = written.get_mut(&uid) else {
            return trigger;
        };
        w.runs.retain(|(run, at)| {
            !runs.iter().any(|r| r.name == run.name) && at.elapsed() < UNSEEN_RUN_GRACE
        });
        runs.extend(w.runs.iter().map(|(run, _)| run.clone()));
        let trigger = match &w.status {
            Some(st) if trigger.status.as_ref() != Some(st) => {
                let mut t = (*trigger).clone();
                t.status = Some(st.clone());
                Arc::new(t)
            }
            _ => {
                w.status = None;
                trigger
            }
        };
        if w.status.is_none() && w.runs.is_empty() {
            written.remove(&uid);
        }
        trigger
    }

    fn remember_status(&self, trigger: &ClusterScanTrigger, status: &ClusterScanTriggerStatus) {
        let uid = trigger.uid().unwrap_or_default();
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.entry(uid).or_default().status = Some(status.clone());
    }

    fn remember_run(&self, trigger: &ClusterScanTrigger, run: &ClusterScanTask) {
        let uid = trigger.uid().unwrap_or_default();
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written
            .entry(uid)
            .or_default()
            .runs
            .push((RunInfo::from_task(run), tokio::time::Instant::now()));
    }

    async fn event(&self, trigger: &ClusterScanTrigger, ev: events::Note) {
        self.events.publish(trigger, &ev).await;
    }
}

/// Runs the trigger controller until `shutdown` resolves: watches ClusterScanTriggers (in
/// `namespace`, or all), the ClusterScanTasks they own, and Nodes; polls the API server version.
pub async fn run(
    kube: Client,
    namespace: Option<String>,
    clock: Clock,
    instance: String,
    tenancy: crate::tenancy::TemplateCheck,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let (triggers, tasks): (Api<ClusterScanTrigger>, Api<ClusterScanTask>) = match &namespace {
        Some(ns) => (
            Api::namespaced(kube.clone(), ns),
            Api::namespaced(kube.clone(), ns),
        ),
        None => (Api::all(kube.clone()), Api::all(kube.clone())),
    };
    let (runs, runs_writer) = reflector::store();
    let run_events = watcher(
        tasks,
        watcher::Config::default()
            .labels(TRIGGER_LABEL)
            .any_semantic(),
    )
    .default_backoff()
    .modify(run::trim_run)
    .reflect(runs_writer)
    .touched_objects();
    let (nodes, node_changes) = nodes::watch(kube.clone());
    let (api_server, version_poll) = nodes::poll_api_server_version(kube.clone(), VERSION_POLL);

    let ctx = Arc::new(Context {
        kube: kube.clone(),
        events: events::Events::new(kube.clone(), instance),
        clock: clock.clone(),
        runs,
        nodes,
        api_server: api_server.clone(),
        node_access: access::NodeAccess::new(kube.clone()),
        tenancy,
        failures: FailureStreaks::default(),
        written: Mutex::default(),
    });
    // Triggers, like their runs, are cached with only what is read of their metadata.
    let (cached, cache_writer) = reflector::store();
    let trigger_events = watcher(triggers, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(run::trim_trigger)
        .reflect(cache_writer)
        .applied_objects();
    let controller = Controller::for_stream(trigger_events, cached)
        .owns_stream(run_events)
        .reconcile_all_on(node_changes)
        .reconcile_all_on(nodes::changes(api_server))
        .reconcile_all_on(clock.changes())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(object = %obj, "trigger reconciled"),
                Err(e) => tracing::debug!(error = %e, "trigger reconcile error"),
            }
        });
    // The version poll never ends; it stops with the controller.
    tokio::select! {
        _ = controller => {}
        _ = version_poll => {}
        _ = ctx.events.run() => {}
    }
    Ok(())
}

async fn reconcile(trigger: Arc<ClusterScanTrigger>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile_trigger",
        namespace = %trigger.namespace().unwrap_or_default(),
        name = %trigger.name_any()
    );
    let result = reconcile_inner(trigger.clone(), &ctx)
        .instrument(span)
        .await;
    if result.is_ok() {
        ctx.failures.succeeded(&trigger.uid().unwrap_or_default());
    }
    result
}

async fn reconcile_inner(trigger: Arc<ClusterScanTrigger>, ctx: &Context) -> Result<Action, Error> {
    if trigger.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Fetch (from caches).
    tokio::time::timeout(CACHE_WAIT, ctx.runs.wait_until_ready())
        .await
        .map_err(|_| Error::RunsNotSynced)?
        .map_err(|_| Error::RunsNotSynced)?;
    let uid = trigger.uid().unwrap_or_default();
    let mut runs: Vec<RunInfo> = ctx
        .runs
        .state()
        .iter()
        .filter(|r| r.namespace() == trigger.namespace())
        .filter(|r| {
            r.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .map(|r| RunInfo::from_task(r))
        .collect();
    let trigger = ctx.catch_up(trigger, &mut runs);
    let on = trigger.spec.on.clone().unwrap_or_default();
    let nodes = if on.node_joined.is_some() || on.kubernetes_upgraded.is_some() {
        match tokio::time::timeout(CACHE_WAIT, ctx.nodes.wait_until_ready()).await {
            Ok(Ok(())) => Some(ctx.nodes.state()),
            _ => {
                tracing::warn!("the Node cache is not ready; node events are paused");
                None
            }
        }
    } else {
        None
    };
    let api_server = ctx.api_server.borrow().clone();
    // Only a trigger that looks at Nodes has anything of them in status.
    let node_details = if on.node_joined.is_some() || on.kubernetes_upgraded.is_some() {
        ctx.node_access
            .details(&trigger.namespace().unwrap_or_default())
            .await
    } else {
        decide::NodeDetails::Hidden
    };

    // Decide (pure). Times have the API's precision (whole seconds), so a status read back
    // compares equal to the one written.
    let now = ctx.clock.now();
    let now = now
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Second)
                .mode(jiff::RoundMode::Trunc),
        )
        .unwrap_or(now);
    let mut decision = decide::decide(&Inputs {
        trigger: &trigger,
        now,
        runs: &runs,
        nodes: nodes.as_deref(),
        api_server: api_server.as_deref(),
        node_details,
    });

    // A template whose runs the policies would refuse creates none: the trigger says so.
    let ns = trigger.namespace().unwrap_or_default();
    let mut notes = Vec::new();
    if let Some(refusal) = ctx
        .tenancy
        .refuses(&ns, &trigger.spec.template.spec)
        .await
        .map_err(Error::Tenancy)?
    {
        let news = trigger
            .status
            .as_ref()
            .and_then(|s| controller_runtime::conditions::get(&s.conditions, decide::READY))
            .is_none_or(|c| c.reason != refusal.reason || c.message != refusal.message);
        decision = Decision {
            status: decide::refused(&trigger, refusal.reason, &refusal.message, now),
            create: None,
            delete: Vec::new(),
            notes: Vec::new(),
            requeue_at: None,
        };
        if news {
            notes.push(events::warning(
                refusal.reason,
                "CreateRun",
                &refusal.message,
            ));
        }
    }

    // Act.
    let tasks: Api<ClusterScanTask> = Api::namespaced(ctx.kube.clone(), &ns);
    for name in &decision.delete {
        match tasks.delete(name, &DeleteParams::background()).await {
            Ok(_) => notes.push(events::normal(
                "RunDeleted",
                "Prune",
                &format!("deleted finished run {name} (beyond the history limit)"),
            )),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::DeleteRun(e)),
        }
    }
    if let Some(planned) = decision.create.clone() {
        create_run(&trigger, &tasks, &planned, &mut decision, &mut notes, ctx).await?;
    }

    // Write status.
    if trigger.status.as_ref() != Some(&decision.status) {
        write_status(&trigger, &decision.status, ctx).await?;
        ctx.remember_status(&trigger, &decision.status);
    }
    for note in &decision.notes {
        let ev = if note.warning {
            events::warning(note.reason, "Decide", &note.message)
        } else {
            events::normal(note.reason, "Decide", &note.message)
        };
        notes.push(ev);
    }
    for ev in notes {
        ctx.event(&trigger, ev).await;
    }
    Ok(Action::requeue(requeue_after(
        decision.requeue_at,
        ctx.clock.now(),
    )))
}

/// How long until `at`, at least a second and at most [`MAX_REQUEUE`].
fn requeue_after(at: Option<jiff::Timestamp>, now: jiff::Timestamp) -> Duration {
    let Some(at) = at else {
        return MAX_REQUEUE;
    };
    let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
    // A little late rather than early: an early wake-up only requeues again.
    (wait + Duration::from_millis(200)).clamp(Duration::from_secs(1), MAX_REQUEUE)
}

async fn create_run(
    trigger: &ClusterScanTrigger,
    tasks: &Api<ClusterScanTask>,
    planned: &PlannedRun,
    decision: &mut Decision,
    notes: &mut Vec<events::Note>,
    ctx: &Context,
) -> Result<(), Error> {
    let run_time = decision
        .status
        .last_run_time
        .as_ref()
        .map_or_else(|| ctx.clock.now(), |t| t.0);
    let run = build_run(trigger, planned, run_time);
    let set_uid = |decision: &mut Decision, uid: Option<String>| {
        if let Some(r) = decision
            .status
            .active
            .iter_mut()
            .find(|r| r.name.as_deref() == Some(planned.name.as_str()))
        {
            r.uid = uid;
        }
    };
    match tasks.create(&PostParams::default(), &run).await {
        Ok(created) => {
            set_uid(decision, created.uid());
            ctx.remember_run(trigger, &created);
            tracing::info!(run = %planned.name, reason = planned.reason.as_str(), "created a run");
            notes.push(events::normal(
                "RunCreated",
                "CreateRun",
                &format!(
                    "created run {} for {}",
                    planned.name,
                    planned.causes.join(" and ")
                ),
            ));
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Created before (a crash or a stale cache): done. Unless someone else's object
            // has the name.
            let existing = tasks.get_opt(&planned.name).await.ok().flatten();
            let ours = existing.as_ref().is_some_and(|o| {
                o.owner_references()
                    .iter()
                    .any(|r| Some(&r.uid) == trigger.uid().as_ref())
            });
            if let (true, Some(existing)) = (ours, existing) {
                // Keep the time it was really created at (this decision may come from a stale
                // cache, later).
                if let Some(at) = RunInfo::from_task(&existing).run_time {
                    decision.status.last_run_time = Some(Time(at));
                }
                set_uid(decision, existing.uid());
                ctx.remember_run(trigger, &existing);
            } else {
                decision
                    .status
                    .active
                    .retain(|r| r.name.as_deref() != Some(planned.name.as_str()));
                notes.push(events::warning(
                    "RunNameTaken",
                    "CreateRun",
                    &format!(
                        "a ClusterScanTask named {} exists and is not this trigger's; the run for {} is skipped",
                        planned.name,
                        planned.causes.join(" and ")
                    ),
                ));
            }
        }
        Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 => {
            // The API server refuses the template (admission); not retried until it changes.
            let message = format!("the API server refused the run: {}", e.message);
            *decision = Decision {
                status: decide::refused(trigger, "InvalidTemplate", &message, ctx.clock.now()),
                create: None,
                delete: Vec::new(),
                notes: Vec::new(),
                requeue_at: None,
            };
            notes.push(events::warning("InvalidTemplate", "CreateRun", &message));
        }
        Err(e) => return Err(Error::CreateRun(e)),
    }
    Ok(())
}

/// Writes the whole status, conditional on the trigger's resourceVersion (see [`controller_runtime::status`]).
async fn write_status(
    trigger: &ClusterScanTrigger,
    status: &ClusterScanTriggerStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let api: Api<ClusterScanTrigger> =
        Api::namespaced(ctx.kube.clone(), &trigger.namespace().unwrap_or_default());
    tracing::debug!(status = %serde_json::to_string(status).unwrap_or_default(), "writing status");
    controller_runtime::status::write(&api, trigger, status)
        .await
        .map_err(Error::WriteStatus)?;
    Ok(())
}

fn error_policy(trigger: Arc<ClusterScanTrigger>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.failures.on_error(
        &trigger.uid().unwrap_or_default(),
        err.category(),
        &crate::report_error(err),
        err.is_conflict(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeues_wake_a_little_after_the_time_and_never_sleep_too_long() {
        let now: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().expect("ts");
        let at = |s: &str| Some(s.parse::<jiff::Timestamp>().expect("ts"));
        assert_eq!(
            requeue_after(at("2030-01-01T00:00:30Z"), now),
            Duration::from_millis(30_200)
        );
        assert_eq!(
            requeue_after(at("2029-12-31T00:00:00Z"), now),
            Duration::from_secs(1)
        );
        assert_eq!(requeue_after(at("2031-01-01T00:00:00Z"), now), MAX_REQUEUE);
        assert_eq!(requeue_after(None, now), MAX_REQUEUE);
    }
}
