//! The controller's side of the exactly-once protocol ([`crate::submission`], where the
//! protocol, its guarantees and caveats are written down): the attempt record lives in the
//! object's status, so a crash at any point leaves either nothing sent or a `Submitting`
//! object that the next reconcile resolves before any new POST.
//!
//! - `submit` (phase `Pending`): backoff, budget, record the attempt, POST, classify.
//! - `resolve_attempt` (phase `Submitting`): find the task the attempt may have created, or
//!   take a way out a person chose.
//! - `cleanup` (deletion): resolve an attempt in flight (bounded) and claim its task ids.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use kube::{ResourceExt, api::Api, runtime::controller::Action};

use super::{
    Context, Error, Step,
    fair::{self, Turn},
    offload, status,
    transitions::{self, Resolution, WayOut},
};
use crate::{
    controller_runtime::events,
    crd::{ClusterScanTask, Phase},
    submission::{self, Attempt, Candidates, Found, backoff, claims},
};
use hss_client::{
    Api as HssApi,
    client::HssClient,
    model::CreateTaskRequest,
    resolve::{self, Lookup},
};

/// 1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st.
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn millis(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_millisecond()
}

/// Pending: wait for backoff and budget, record the attempt, POST, classify.
pub(super) async fn submit(
    obj: Arc<ClusterScanTask>,
    ctx: &Context,
    hss: &HssClient,
    req: &CreateTaskRequest,
) -> Result<Action, Error> {
    let api: Api<ClusterScanTask> =
        Api::namespaced(ctx.kube.clone(), &obj.namespace().unwrap_or_default());
    // A task this process already knows for the object wins over what the (possibly stale)
    // status says: never post while a task id is remembered.
    if let Some(task_id) = ctx.ledger.remembered(&Context::uid(&obj)) {
        return record_task_id(&obj, ctx, hss, &task_id, Resolution::Response).await;
    }
    let sub = obj
        .status
        .as_ref()
        .and_then(|s| s.submission.clone())
        .unwrap_or_default();

    // Backoff after failed attempts, measured from the last attempt (kept in status).
    if sub.attempts > 0
        && let Some(last) = &sub.last_attempt_at
    {
        let due = millis(last) + backoff(sub.attempts).as_millis() as i64;
        let now = jiff::Timestamp::now().as_millisecond();
        if due > now {
            return Ok(Action::requeue(Duration::from_millis((due - now) as u64)));
        }
    }

    // The token comes through the fair queue: waiting holds no reconcile slot, and the
    // dispatcher wakes this object when a token is its own.
    let ns = obj.namespace().unwrap_or_default();
    let uid = Context::uid(&obj);
    let key = hss.budget_key(HssApi::CreateTask);
    let permit = match ctx.fair.turn(&key, &obj, &uid, &ns, ctx.tenants.share(&ns)) {
        Turn::Granted(permit) => permit,
        Turn::Wait { place, joined } => {
            let period = ctx.budget.period().unwrap_or(Duration::ZERO);
            let eta = period * (place.tokens_ahead as u32 + 1);
            // Woken by the dispatcher; the requeue only covers a lost wake-up.
            let backstop = (eta * 2).max(Duration::from_secs(300));
            let waiting = obj.status.as_ref().is_some_and(|s| {
                crate::controller_runtime::conditions::get(&s.conditions, super::status::THROTTLED)
                    .is_some_and(|c| c.status == "True" && c.reason == "BudgetExhausted")
            });
            if !joined && waiting {
                return Ok(Action::requeue(backstop));
            }
            let text = format!(
                "{} in this namespace's queue; about {}",
                ordinal(place.in_namespace),
                humantime::format_duration(Duration::from_secs(eta.as_secs()))
            );
            let t =
                transitions::waiting_in_queue(&obj, Some(&text), backstop, jiff::Timestamp::now());
            return Ok(ctx.commit(&obj, t).await?.1);
        }
    };

    // Record the attempt; only then POST. The one status write outside a transition's commit:
    // it must be durable before the POST.
    let attempt = Attempt::new(sub.attempts, jiff::Timestamp::now());
    let st = transitions::attempt(&obj, &attempt);
    ctx.fail_point(Step::BeforeRecord, &obj).await;
    // Written with `obj`'s resourceVersion as precondition: a deletion that began since
    // (deletionTimestamp set) changed it, so the write conflicts and nothing is posted.
    let step = Instant::now();
    let written = ctx.write_status(&api, &obj, &st).await;
    ctx.metrics
        .submission_step(super::metrics::SubmissionStep::Record, step.elapsed());
    let recorded = match written {
        Ok(o) => o,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!("attempt record conflicted; starting over from a fresh read");
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        Err(e) => return Err(Error::WriteStatus(e)),
    };
    ctx.fail_point(Step::AfterRecord, &obj).await;

    // Re-check the lease right before the POST: a replica that lost it must not post. The
    // attempt stays recorded; whoever leads next resolves it by lookup.
    let step = Instant::now();
    let leading = ctx.leadership.confirm().await;
    ctx.metrics
        .submission_step(super::metrics::SubmissionStep::Lease, step.elapsed());
    match leading {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            tracing::warn!("not holding the lease any more; not sending CreateTask");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    }
    tracing::info!(attempt = %attempt.id, "sending CreateTask");
    // Lookups wait for POSTs in flight, so a task created by a POST whose answer is on its
    // way is already remembered (and excluded) when a lookup runs.
    let step = Instant::now();
    let result = ctx
        .ledger
        .post(&Context::uid(&obj), hss.create_task(permit, req))
        .await;
    ctx.metrics
        .submission_step(super::metrics::SubmissionStep::Post, step.elapsed());
    ctx.fail_point(Step::AfterPost, &obj).await;

    match result {
        Ok(resp) => record_task_id(&recorded, ctx, hss, &resp.task_id, Resolution::Response).await,
        Err(err) => {
            let t = transitions::post_failed(&recorded, &err, jiff::Timestamp::now());
            Ok(ctx.commit(&recorded, t).await?.1)
        }
    }
}

/// Writes a known task id (`phase=Submitted`) and has the shared poll follow it.
pub(super) async fn record_task_id(
    obj: &ClusterScanTask,
    ctx: &Context,
    hss: &HssClient,
    task_id: &str,
    resolution: Resolution,
) -> Result<Action, Error> {
    ctx.fail_point(Step::BeforeIdWrite, obj).await;
    let t = transitions::task_known(
        obj,
        task_id,
        resolution,
        ctx.poller.interval(),
        jiff::Timestamp::now(),
    );
    // The id stays remembered until deletion: the cache may not show this write yet, and a
    // lookup for another object must not take the same task in the meantime.
    let (written, action) = ctx
        .commit_step(obj, t, Some(super::metrics::SubmissionStep::TaskId))
        .await?;
    let created = written
        .status
        .as_ref()
        .and_then(|s| s.submission.as_ref())
        .and_then(|s| s.started_at.as_ref())
        .map_or_else(|| jiff::Timestamp::now().as_millisecond(), millis);
    ctx.poller.track(
        hss,
        task_id,
        obj.spec.task_type,
        created,
        kube::runtime::reflector::ObjectRef::from(&written),
    );
    Ok(action)
}

/// Submitting: establish whether the recorded attempt created a task.
pub(super) async fn resolve_attempt(
    obj: Arc<ClusterScanTask>,
    ctx: &Context,
    hss: &HssClient,
    req: &CreateTaskRequest,
) -> Result<Action, Error> {
    let uid = Context::uid(&obj);
    let started = obj
        .status
        .as_ref()
        .and_then(|s| s.submission.as_ref())
        .and_then(|s| s.started_at.clone());
    // A lookup that ended since the last reconcile: its outcome first (a candidate it found is
    // remembered too, and is recorded as the lookup's). Keyed by the attempt: an outcome never
    // serves a later attempt of the object.
    let job = started
        .as_ref()
        .map(|t| format!("{uid}@{}", millis(t)))
        .unwrap_or_else(|| uid.clone());
    let finished = ctx.lookups.take(&job);
    // A named adoption (hss.scanops.dev/adopt-task) that ended: its outcome first, likewise.
    if let Some(WayOut::Adopt(task_id)) = transitions::way_out(&obj)
        && let Some((found, refusal)) = ctx.named.take(&format!("{job}#{task_id}"))
    {
        return named_adopted(obj, ctx, hss, &task_id, found, refusal).await;
    }
    if finished.is_none()
        && let Some(task_id) = ctx.ledger.remembered(&uid)
    {
        return record_task_id(&obj, ctx, hss, &task_id, Resolution::Response).await;
    }
    let Some(started) = started else {
        // A Submitting record without a start time cannot be searched; treat as not sent.
        return Ok(ctx.commit(&obj, transitions::not_created(&obj)).await?.1);
    };
    let now = jiff::Timestamp::now();
    match transitions::way_out(&obj) {
        Some(WayOut::Resubmit) => {
            ctx.lookups.cancel(&uid);
            ctx.named.cancel(&uid);
            return Ok(ctx
                .commit(&obj, transitions::resubmitted(&obj, now))
                .await?
                .1);
        }
        // Only once the attempt is unresolved: before that, the lookup decides.
        Some(WayOut::Adopt(task_id))
            if transitions::unresolved_for(&obj, now)
                .is_some_and(|age| age >= ctx.args.unresolved_after) =>
        {
            return adopt_named(obj, ctx, hss, req, &task_id, &job, millis(&started)).await;
        }
        Some(WayOut::Adopt(_)) => {}
        None => {}
    }
    // The lookup's calls hold nothing (it runs outside reconcile, its calls queued as this
    // namespace's); its candidate is assigned exclusively once the POSTs in flight returned,
    // so two objects never take the same candidate and no lookup mistakes another object's
    // fresh task for its own (`Ledger::adopt`).
    let lookup = match finished {
        Some(outcome) => outcome,
        None => {
            let caller = ctx.caller(&obj);
            let (ledger, hss, req) = (ctx.ledger.clone(), hss.clone(), req.clone());
            let (scope, owned) = (scope_of(&hss), ctx.owned_task_ids(&obj));
            let (started_ms, settle, job_uid) =
                (millis(&started), ctx.args.lookup_settle, uid.clone());
            let step = ctx.lookups.step(&obj, &job, || {
                fair::as_caller(caller, async move {
                    ledger
                        .adopt(&job_uid, &scope, owned, |claimed| async move {
                            resolve::lookup(&hss, &req, started_ms, &claimed, settle).await
                        })
                        .await
                })
            });
            match step {
                offload::Step::Ready(outcome) => outcome,
                // Woken when it ends; the requeue only covers a lost wake-up.
                offload::Step::Running => return Ok(Action::requeue(offload::RECHECK)),
            }
        }
    };
    match lookup.map(|l| submission::after_lookup(l, Candidates::TakeFirst)) {
        Ok(Found::Task(task_id)) => {
            record_task_id(&obj, ctx, hss, &task_id, Resolution::Lookup).await
        }
        Ok(Found::NotCreated) => Ok(ctx.commit(&obj, transitions::not_created(&obj)).await?.1),
        Ok(Found::Wait(wait)) => Ok(Action::requeue(wait)),
        // Stay Submitting: never post again on an incomplete search.
        Ok(Found::Inconclusive | Found::Several(_)) => {
            let retry = ctx.args.lookup_settle.max(Duration::from_secs(5));
            let t = transitions::with_notice(
                transitions::lookup_inconclusive(&obj, retry),
                &obj,
                "ListTasks could not be searched completely (too many tasks in the window)",
                ctx.args.unresolved_after,
                now,
            );
            Ok(ctx.commit(&obj, t).await?.1)
        }
        Err(err) => {
            let t = transitions::with_notice(
                transitions::lookup_failed(&obj, &err, now),
                &obj,
                &format!("ListTasks fails ({})", err.category()),
                ctx.args.unresolved_after,
                now,
            );
            Ok(ctx.commit(&obj, t).await?.1)
        }
    }
}

/// Submitting, with [`transitions::ADOPT_ANNOTATION`]: follow the named task if HSS lists it
/// as a task this attempt could have created and no other object owns or owned it. Taken
/// through the same exclusive [`Ledger::adopt`] as a lookup's candidate.
async fn adopt_named(
    obj: Arc<ClusterScanTask>,
    ctx: &Context,
    hss: &HssClient,
    req: &CreateTaskRequest,
    task_id: &str,
    job: &str,
    started_at_ms: i64,
) -> Result<Action, Error> {
    // Like a lookup, outside reconcile: its ListTasks and ListTaskResources calls hold nothing.
    let caller = ctx.caller(&obj);
    let (ledger, client, req) = (ctx.ledger.clone(), hss.clone(), req.clone());
    let (scope, owned) = (scope_of(hss), ctx.owned_task_ids(&obj));
    let (uid, named) = (Context::uid(&obj), task_id.to_string());
    let step = ctx.named.step(&obj, &format!("{job}#{task_id}"), || {
        fair::as_caller(caller, async move {
            let mut refusal = None;
            let found = ledger
                .adopt(&uid, &scope, owned, |claimed| {
                    let refusal = &mut refusal;
                    async move {
                        match resolve::named(&client, &req, &named, started_at_ms, &claimed).await?
                        {
                            Ok(task) => Ok(Lookup::Candidates(vec![task])),
                            Err(why) => {
                                *refusal = Some(why);
                                Ok(Lookup::Inconclusive)
                            }
                        }
                    }
                })
                .await;
            (found, refusal)
        })
    });
    match step {
        offload::Step::Ready((found, refusal)) => {
            named_adopted(obj, ctx, hss, task_id, found, refusal).await
        }
        // Woken when it ends; the requeue only covers a lost wake-up.
        offload::Step::Running => Ok(Action::requeue(offload::RECHECK)),
    }
}

/// What a named adoption found: the task (followed), or why not.
async fn named_adopted(
    obj: Arc<ClusterScanTask>,
    ctx: &Context,
    hss: &HssClient,
    task_id: &str,
    found: Result<Lookup, hss_client::Error>,
    refusal: Option<String>,
) -> Result<Action, Error> {
    let now = jiff::Timestamp::now();
    let retry = ctx.args.lookup_settle.max(Duration::from_secs(5));
    match found {
        Ok(Lookup::Candidates(c)) => {
            record_task_id(&obj, ctx, hss, &c[0].task_id, Resolution::Manual).await
        }
        Ok(_) => {
            let why = refusal.unwrap_or_else(|| format!("task {task_id} was not confirmed"));
            let t = transitions::adopt_refused(&obj, &why, retry, now);
            Ok(ctx.commit(&obj, t).await?.1)
        }
        Err(err) => {
            let t = transitions::lookup_failed(&obj, &err, now);
            Ok(ctx.commit(&obj, t).await?.1)
        }
    }
}

/// Deletion: resolve an in-flight attempt (bounded), claim every task id the object had so
/// no other object adopts it, record what is known in an Event, let go. Never waits on HSS or
/// the claims store longer than `--cleanup-timeout`.
pub(super) async fn cleanup(obj: Arc<ClusterScanTask>, ctx: &Context) -> Result<Action, Error> {
    let uid = Context::uid(&obj);
    ctx.fair.leave(&uid);
    ctx.reads.cancel(&uid);
    ctx.results.cancel(&uid);
    ctx.lookups.cancel(&uid);
    ctx.named.cancel(&uid);
    // Namespaced reports carry no ownerReference: deleted here (best effort, with a Warning).
    if ctx.args.reports.self_cluster_id.is_some()
        && let Err(e) = ctx.reports.delete_namespaced(&ctx.kube, &uid).await
    {
        let message = format!(
            "the Reports this scan wrote in other namespaces (label {}={uid}) could not be deleted ({}); delete them by that label",
            crate::reports::affected::SCAN_UID,
            crate::report_error(&e)
        );
        ctx.event(
            &obj,
            events::warning("ReportsNotDeleted", "Delete", &message),
        )
        .await;
    }
    if ctx.namespace_cap(&obj).await?.is_some() {
        ctx.wake_next_waiter(&obj);
    }
    let written = obj.status.as_ref().and_then(|s| s.task_id.clone());
    if let Some(id) = &written {
        ctx.poller.untrack(id);
    }
    let remembered = ctx.ledger.remembered(&uid);
    let unresolved =
        written.is_none() && remembered.is_none() && status::phase(&obj) == Phase::Submitting;
    let started = obj
        .status
        .as_ref()
        .and_then(|s| s.submission.as_ref())
        .and_then(|s| s.started_at.clone());
    let deadline = tokio::time::Instant::now() + ctx.args.cleanup_timeout;
    // An attempt in flight: find its task (bounded), taking it exclusively like resolve does.
    let found = if unresolved {
        let search = async {
            let req = obj.spec.to_request().ok()?;
            let hss = ctx.hss_for(&obj).await.ok()?.ok()?;
            let started = started.as_ref()?.0.as_millisecond();
            loop {
                let found = ctx
                    .ledger
                    .adopt(&uid, &scope_of(&hss), ctx.owned_task_ids(&obj), |claimed| {
                        let (hss, req) = (&hss, &req);
                        async move {
                            resolve::lookup(hss, req, started, &claimed, ctx.args.lookup_settle)
                                .await
                        }
                    })
                    .await;
                match found.map(|l| submission::after_lookup(l, Candidates::TakeFirst)) {
                    Ok(Found::Task(task_id)) => return Some(Some(task_id)),
                    Ok(Found::NotCreated) => return Some(None),
                    Ok(Found::Inconclusive | Found::Several(_)) => return None,
                    Ok(Found::Wait(wait)) => tokio::time::sleep(wait).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "lookup during deletion failed");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        };
        tokio::time::timeout_at(deadline, search)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let found_id = found.clone().flatten();
    let ids: Vec<String> = written.iter().chain(&found_id).cloned().collect();
    let scope = ctx.scope_of(&obj);
    let release = ctx.ledger.release(&uid, scope.as_deref(), ids);
    match tokio::time::timeout_at(deadline + Duration::from_secs(5), release).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let message = format!(
                "the claim on this object's HSS task could not be stored ({}); an unresolved attempt of another object could adopt it after a restart of the operator",
                crate::report_error(&e)
            );
            ctx.event(
                &obj,
                events::warning("ClaimNotRecorded", "Delete", &message),
            )
            .await;
        }
        Err(_) => {
            tracing::warn!("storing the claim on a deleted object's task timed out");
        }
    }
    if written.is_none() && status::phase(&obj) == Phase::Submitting {
        let note = match (remembered, found) {
            (Some(task_id), _) => Some(format!(
                "deleted; HSS task {task_id} was created for it and keeps running (HSS cannot cancel tasks)"
            )),
            (None, Some(Some(task_id))) => Some(format!(
                "deleted; the in-flight attempt created HSS task {task_id}, which keeps running (HSS cannot cancel tasks)"
            )),
            (None, Some(None)) => None,
            (None, None) => {
                let at = started
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| "unknown time".into());
                ctx.event(&obj, events::warning("DeletedUnresolved", "Delete", &format!("deleted while a CreateTask attempt (started {at}) was unresolved and HSS could not be asked within {}s; check the HSS console for a task created then", ctx.args.cleanup_timeout.as_secs()))).await;
                return Ok(Action::await_change());
            }
        };
        let ev = match &note {
            Some(note) => events::normal("DeletedWithTask", "Delete", note),
            None => events::normal(
                "Deleted",
                "Delete",
                "deleted; the in-flight attempt created no HSS task",
            ),
        };
        ctx.event(&obj, ev).await;
    }
    Ok(Action::await_change())
}

/// The claims scope of a client's tasks: its endpoint and project.
pub(super) fn scope_of(hss: &HssClient) -> String {
    claims::scope(&hss.config().endpoint.to_string(), &hss.config().project_id)
}
