//! Exactly-once submission of a ClusterScanTask to HSS.
//!
//! HSS creates a task for every CreateTask POST that reaches it, offers no idempotency key, no
//! get-by-id and no delete. This module is the only place that POSTs.
//!
//! # Protocol
//! 1. The finalizer is in place (the caller uses `kube::runtime::finalizer`), and the object
//!    is not being deleted: nothing is ever POSTed for an object with a deletionTimestamp.
//! 2. A CreateTask token is taken from the budget first; without one the object waits with
//!    condition `Throttled`.
//! 3. The attempt is recorded: `phase=Submitting`, a fresh `submission.attemptId` and
//!    `submission.startedAt`, written with the object's resourceVersion as precondition. A
//!    conflict means someone else moved first (a newer version, a deletion): start over.
//!    Only after this write lands is the POST sent.
//! 4. The outcome decides:
//!    - a task id: kept in memory, then written to `status.taskId` (`phase=Submitted`);
//!    - definitely not created (400 `HSS.*`, 401/403, 429, connection refused, ...): the
//!      attempt is cleared; terminal errors end in `Failed`, retryable ones go back to
//!      `Pending` with backoff;
//!    - ambiguous (timeout after sending, reset, 5xx, unreadable 200): `Submitting` stays.
//! 5. An object found in `Submitting` (after an ambiguous outcome, or after a crash at any
//!    point above) is resolved by ListTasks: tasks of the same type and scan types, created
//!    manually within `[startedAt - skew, now + skew]`, minus the task ids other objects
//!    already own, confirmed by cluster set where needed. A candidate is adopted; "none" is
//!    trusted only once the attempt is older than `--lookup-settle`, and then the object goes
//!    back to `Pending` to be submitted again.
//! 6. Backoff state (attempt count, last attempt time) lives in status, so restarts keep it.
//!
//! # Guarantees
//! - At most one POST is in flight per object, and a POST is only sent after its attempt is
//!   durably recorded. A crash at any point leaves either no record (nothing was sent) or a
//!   `Submitting` record that the next reconcile resolves before any new POST.
//! - A task id HSS returned is written to status before the object leaves `Submitting`; if
//!   that write fails, the id is kept in memory and written on the next reconcile without
//!   another POST or lookup.
//! - Two unresolved objects never adopt the same task: lookups are serialised in the process,
//!   run only while no POST is in flight, and exclude task ids owned by any object (in the
//!   cache, or remembered in memory from the moment HSS returned them until the object is
//!   deleted, because the cache can lag behind a status write).
//!
//! # Assumptions
//! - One writer: a single replica (or the leader) reconciles.
//! - HSS's clock and ours differ by less than [`resolve::CLOCK_SKEW`]; HSS lists a new task
//!   within `--lookup-settle` (default [`resolve::SETTLE`]).
//!
//! # Caveats
//! - A task someone else created with the same credentials, type and scan types within the
//!   window is indistinguishable from ours and may be adopted; the count of tasks per object
//!   stays one.
//! - If the process dies between the POST and the status write *and* the lookup later finds
//!   nothing within its window (HSS lost or hid the task), the object is submitted again.

use std::{collections::HashSet, sync::Arc, time::Duration};

use kube::{ResourceExt, api::Api, runtime::controller::Action};

use super::{Context, Error, Step, status};
use crate::kit::{events, retry::backoff};
use crate::{
    crd::{ClusterScanTask, ClusterScanTaskStatus, Phase, cluster_scan_task::Submission},
    hss::{
        Api as HssApi, HssClient,
        client::Outcome,
        model::CreateTaskRequest,
        resolve::{self, Lookup},
    },
};

fn millis(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_millisecond()
}

fn current_status(obj: &ClusterScanTask) -> ClusterScanTaskStatus {
    obj.status.clone().unwrap_or_default()
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
    if let Some(task_id) = ctx.remembered_task_id(&obj) {
        return record_task_id(&api, &obj, ctx, hss, &task_id, "Response").await;
    }
    let generation = obj.metadata.generation;
    let mut st = current_status(&obj);
    let sub = st.submission.clone().unwrap_or_default();

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

    let permit = match hss.try_acquire(HssApi::CreateTask) {
        Ok(permit) => permit,
        Err(wait) => {
            let message = format!(
                "waiting {}s for the HSS CreateTask budget",
                wait.as_secs().max(1)
            );
            let was = status::condition(&st, status::THROTTLED).is_some_and(|c| c.status == "True");
            if status::set_condition(
                &mut st,
                generation,
                status::THROTTLED,
                true,
                "BudgetExhausted",
                message.clone(),
            ) {
                st.phase.get_or_insert(Phase::Pending);
                status::write(&api, &obj, &st)
                    .await
                    .map_err(Error::WriteStatus)?;
                if !was {
                    ctx.event(&obj, events::warning("Throttled", "Submit", &message))
                        .await;
                }
            }
            return Ok(Action::requeue(wait));
        }
    };

    // Record the attempt; only then POST.
    let attempt_id = new_attempt_id();
    let started = status::now();
    st.phase = Some(Phase::Submitting);
    st.submission = Some(Submission {
        attempt_id: Some(attempt_id.clone()),
        started_at: Some(started.clone()),
        attempts: sub.attempts + 1,
        last_attempt_at: Some(started.clone()),
        resolution: None,
    });
    status::clear_condition(&mut st, status::THROTTLED);
    st.observed_generation = generation;
    let recorded = match status::write(&api, &obj, &st).await {
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
    match ctx.leadership.confirm().await {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            tracing::warn!("not holding the lease any more; not sending CreateTask");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    }
    tracing::info!(attempt = %attempt_id, "sending CreateTask");
    let result = {
        // Lookups wait for POSTs in flight, so a task created by a POST whose answer is on its
        // way is already remembered (and excluded) when a lookup runs.
        let _in_flight = ctx.post_gate.read().await;
        let result = hss.create_task(permit, req).await;
        if let Ok(resp) = &result {
            ctx.remember_task_id(&obj, &resp.task_id);
        }
        result
    };
    ctx.fail_point(Step::AfterPost, &obj).await;

    match result {
        Ok(resp) => record_task_id(&api, &recorded, ctx, hss, &resp.task_id, "Response").await,
        Err(err) => {
            let mut st = current_status(&recorded);
            st.last_error = Some(status::last_error(
                err.category(),
                err.error_code(),
                &crate::report_error(&err),
                err.request_id(),
            ));
            match err.outcome() {
                Outcome::Rejected => {
                    st.phase = Some(Phase::Failed);
                    if let Some(s) = st.submission.as_mut() {
                        s.attempt_id = None;
                        s.started_at = None;
                        s.resolution = Some("Rejected".into());
                    }
                    let reason = events::reason_for(err.category());
                    let message = format!("HSS rejected the scan: {}", crate::report_error(&err));
                    status::set_condition(
                        &mut st,
                        generation,
                        status::FAILED,
                        true,
                        &reason,
                        message.clone(),
                    );
                    status::set_condition(
                        &mut st,
                        generation,
                        status::COMPLETE,
                        false,
                        &reason,
                        "the scan never ran",
                    );
                    if err.is_signature_failure() {
                        status::set_condition(
                            &mut st,
                            generation,
                            status::CREDENTIALS_READY,
                            false,
                            "AuthenticationFailed",
                            "HSS refused the signature or token; fix the credentials and create a new ClusterScanTask (signature failures are not retried: HSS locks an AK/SK after repeated failures)",
                        );
                    }
                    status::write(&api, &recorded, &st)
                        .await
                        .map_err(Error::WriteStatus)?;
                    ctx.event(&recorded, events::warning("Failed", "Submit", &message))
                        .await;
                    Ok(Action::await_change())
                }
                Outcome::Retryable => {
                    st.phase = Some(Phase::Pending);
                    if let Some(s) = st.submission.as_mut() {
                        s.attempt_id = None;
                        s.started_at = None;
                        s.resolution = Some("NotSent".into());
                    }
                    let attempts = st.submission.as_ref().map_or(1, |s| s.attempts);
                    let wait = err.retry_after().unwrap_or_else(|| backoff(attempts));
                    if err.status() == Some(429) {
                        let message = format!(
                            "HSS throttled CreateTask (APIGW.0308); retrying in {}s",
                            wait.as_secs()
                        );
                        status::set_condition(
                            &mut st,
                            generation,
                            status::THROTTLED,
                            true,
                            "Throttled",
                            message.clone(),
                        );
                        ctx.event(&recorded, events::warning("Throttled", "Submit", &message))
                            .await;
                    }
                    status::write(&api, &recorded, &st)
                        .await
                        .map_err(Error::WriteStatus)?;
                    Ok(Action::requeue(wait))
                }
                Outcome::Ambiguous => {
                    // Keep Submitting: the next reconcile resolves by lookup.
                    status::write(&api, &recorded, &st)
                        .await
                        .map_err(Error::WriteStatus)?;
                    ctx.event(
                        &recorded,
                        events::warning(
                            "SubmissionAmbiguous",
                            "Submit",
                            &format!("CreateTask outcome unknown ({}); resolving by lookup, not by posting again", err.category()),
                        ),
                    )
                    .await;
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
    }
}

/// Writes a known task id: `phase=Submitted`.
pub(super) async fn record_task_id(
    api: &Api<ClusterScanTask>,
    obj: &ClusterScanTask,
    ctx: &Context,
    hss: &HssClient,
    task_id: &str,
    resolution: &str,
) -> Result<Action, Error> {
    ctx.fail_point(Step::BeforeIdWrite, obj).await;
    let generation = obj.metadata.generation;
    let mut st = current_status(obj);
    st.phase = Some(Phase::Submitted);
    st.task_id = Some(task_id.to_string());
    st.submitted_at = Some(status::now());
    st.last_error = None;
    if let Some(s) = st.submission.as_mut() {
        s.resolution = Some(resolution.to_string());
    }
    status::clear_condition(&mut st, status::THROTTLED);
    let (reason, message) = if resolution == "Lookup" {
        (
            "Adopted",
            format!("found HSS task {task_id} created by an earlier attempt"),
        )
    } else {
        ("Submitted", format!("HSS created task {task_id}"))
    };
    status::set_condition(
        &mut st,
        obj.metadata.generation,
        status::SUBMITTED,
        true,
        reason,
        message.clone(),
    );
    st.observed_generation = generation;
    // The id stays remembered until deletion: the cache may not show this write yet, and a
    // lookup for another object must not take the same task in the meantime.
    let written = status::write(api, obj, &st)
        .await
        .map_err(Error::WriteStatus)?;
    ctx.event(&written, events::normal(reason, "Submit", &message))
        .await;
    let created = st
        .submission
        .as_ref()
        .and_then(|s| s.started_at.as_ref())
        .map_or_else(|| jiff::Timestamp::now().as_millisecond(), millis);
    ctx.poller.track(
        hss,
        task_id,
        obj.spec.task_type,
        created,
        kube::runtime::reflector::ObjectRef::from(&written),
    );
    Ok(Action::requeue(ctx.poller.interval() * 4))
}

/// Submitting: establish whether the recorded attempt created a task.
pub(super) async fn resolve_attempt(
    obj: Arc<ClusterScanTask>,
    ctx: &Context,
    hss: &HssClient,
    req: &CreateTaskRequest,
) -> Result<Action, Error> {
    let api: Api<ClusterScanTask> =
        Api::namespaced(ctx.kube.clone(), &obj.namespace().unwrap_or_default());
    if let Some(task_id) = ctx.remembered_task_id(&obj) {
        return record_task_id(&api, &obj, ctx, hss, &task_id, "Response").await;
    }
    let st = current_status(&obj);
    let Some(started) = st.submission.as_ref().and_then(|s| s.started_at.clone()) else {
        // A Submitting record without a start time cannot be searched; treat as not sent.
        return back_to_pending(&api, &obj, ctx, "NotFound").await;
    };
    // Adoptions are serialised, and wait for POSTs in flight, so two objects never take the
    // same candidate and no lookup mistakes another object's fresh task for its own.
    let _guard = ctx.post_gate.write().await;
    let claimed: HashSet<String> = ctx.claimed_task_ids(&obj);
    let lookup =
        resolve::lookup(hss, req, millis(&started), &claimed, ctx.args.lookup_settle).await;
    match lookup {
        Ok(Lookup::Candidates(candidates)) => {
            let task_id = candidates[0].task_id.clone();
            ctx.remember_task_id(&obj, &task_id);
            record_task_id(&api, &obj, ctx, hss, &task_id, "Lookup").await
        }
        Ok(Lookup::NotFound) => back_to_pending(&api, &obj, ctx, "NotFound").await,
        Ok(Lookup::TooEarly(wait)) => Ok(Action::requeue(wait)),
        // Stay Submitting: never post again on an incomplete search.
        Ok(Lookup::Inconclusive) => Ok(Action::requeue(
            ctx.args.lookup_settle.max(Duration::from_secs(5)),
        )),
        Err(err) => {
            let mut st = st;
            st.last_error = Some(status::last_error(
                err.category(),
                err.error_code(),
                &crate::report_error(&err),
                err.request_id(),
            ));
            status::write(&api, &obj, &st)
                .await
                .map_err(Error::WriteStatus)?;
            let attempts = st.submission.as_ref().map_or(1, |s| s.attempts);
            Ok(Action::requeue(
                err.retry_after().unwrap_or_else(|| backoff(attempts)),
            ))
        }
    }
}

async fn back_to_pending(
    api: &Api<ClusterScanTask>,
    obj: &ClusterScanTask,
    ctx: &Context,
    resolution: &str,
) -> Result<Action, Error> {
    let mut st = current_status(obj);
    st.phase = Some(Phase::Pending);
    if let Some(s) = st.submission.as_mut() {
        s.attempt_id = None;
        s.started_at = None;
        s.resolution = Some(resolution.to_string());
    }
    status::write(api, obj, &st)
        .await
        .map_err(Error::WriteStatus)?;
    ctx.event(
        obj,
        events::normal(
            "NotCreated",
            "Submit",
            "lookup proved the earlier CreateTask attempt created no task; submitting again",
        ),
    )
    .await;
    Ok(Action::requeue(Duration::from_millis(100)))
}

fn new_attempt_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{:016x}", n)
}
