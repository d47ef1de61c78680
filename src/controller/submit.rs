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
//!   deleted, because the cache can lag behind a status write). All of that state is one
//!   type, [`Ledger`]; resolve and cleanup use the same exclusive [`Ledger::adopt`].
//! - A deleted object's task is never adopted by another object: at deletion its task ids
//!   (written, remembered, or found by cleanup's own lookup) stay claimed for
//!   [`claims::TTL`], in memory and, with `--claims-configmap`, in a ConfigMap that every new
//!   process loads before its first reconcile, so restarts and leader changes keep the claim.
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
//! - Without `--claims-configmap`, or when storing a claim fails within `--cleanup-timeout`
//!   (Warning Event `ClaimNotRecorded`; deletion is not blocked), a deleted object's claim
//!   lives only as long as the process.
//!
//! # Errors
//! - Writing the attempt record fails: nothing was sent; a conflict (409) starts over from a
//!   fresh copy, anything else goes to the error policy (backoff).
//! - The POST fails: classified by [`Outcome`] as above; the error (code and request id
//!   included) is kept in `status.lastError`.
//! - A lookup fails: the object stays `Submitting` with `lastError`, retried after the
//!   server's Retry-After or backoff; it never posts on a failed or incomplete lookup.
//! - Writing the task id fails: the id stays in the [`Ledger`] and is written on the next
//!   reconcile, without a POST or lookup.
//! - Loading the claims at start fails: the controller does not start (it would risk an
//!   adoption the claims forbid).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{ResourceExt, api::Api, runtime::controller::Action};

use super::{
    Context, Error, Step,
    claims::{self, Claim, ClaimStore},
    status,
};
use crate::kit::{events, retry::backoff};
use crate::{
    crd::{ClusterScanTask, ClusterScanTaskStatus, Phase, cluster_scan_task::Submission},
    hss::{
        self, Api as HssApi, HssClient,
        client::Outcome,
        model::{CreateTaskRequest, CreateTaskResponse},
        resolve::{self, Lookup},
    },
};

/// The exactly-once state of this process, in one place: the task ids it knows but the cache
/// may not show yet, the claims on deleted objects' task ids, and the gate that keeps
/// lookups and POSTs apart. Every POST goes through [`Ledger::post`], every lookup that may
/// adopt a task (resolve and cleanup alike) through [`Ledger::adopt`], every deletion through
/// [`Ledger::release`].
pub(crate) struct Ledger {
    /// Task ids HSS returned (or lookups found), by object uid, until the object is deleted:
    /// the status write may not have landed, or not reached the cache yet.
    pending: Mutex<HashMap<String, String>>,
    /// Task ids of deleted objects, until they expire (also in `store`, across restarts).
    deleted: Mutex<Vec<Claim>>,
    /// POSTs hold it shared, lookups exclusively: a lookup never runs while a POST whose task
    /// is not remembered yet is on its way.
    gate: tokio::sync::RwLock<()>,
    store: Option<ClaimStore>,
}

impl Ledger {
    pub(crate) fn new(store: Option<ClaimStore>) -> Self {
        Self {
            pending: Mutex::default(),
            deleted: Mutex::default(),
            gate: tokio::sync::RwLock::new(()),
            store,
        }
    }

    /// Loads the claims earlier processes recorded. Run before the first reconcile.
    pub(crate) async fn load(&self) -> Result<usize, claims::Error> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let loaded = store.load().await?;
        let n = loaded.len();
        lock(&self.deleted).extend(loaded);
        Ok(n)
    }

    /// The task id this process knows for the object, if any.
    pub(crate) fn remembered(&self, uid: &str) -> Option<String> {
        lock(&self.pending).get(uid).cloned()
    }

    /// Sends a CreateTask POST for the object; a returned task id is remembered before the
    /// gate is released.
    pub(crate) async fn post(
        &self,
        uid: &str,
        send: impl Future<Output = Result<CreateTaskResponse, hss::Error>>,
    ) -> Result<CreateTaskResponse, hss::Error> {
        let _in_flight = self.gate.read().await;
        let result = send.await;
        if let Ok(resp) = &result {
            lock(&self.pending).insert(uid.to_string(), resp.task_id.clone());
        }
        result
    }

    /// Runs `lookup` exclusively (no POST in flight, no other lookup), given every task id
    /// that is not the object's to take: `owned` (other objects' status, from the cache), the
    /// ids remembered for other objects, and deleted objects' claims in `scope`. The first
    /// candidate found is remembered for the object before the gate is released.
    pub(crate) async fn adopt<F>(
        &self,
        uid: &str,
        scope: &str,
        owned: HashSet<String>,
        lookup: impl FnOnce(HashSet<String>) -> F,
    ) -> Result<Lookup, hss::Error>
    where
        F: Future<Output = Result<Lookup, hss::Error>>,
    {
        let _exclusive = self.gate.write().await;
        let mut claimed = owned;
        claimed.extend(
            lock(&self.pending)
                .iter()
                .filter(|(other, _)| other.as_str() != uid)
                .map(|(_, id)| id.clone()),
        );
        let now = jiff::Timestamp::now();
        claimed.extend(
            lock(&self.deleted)
                .iter()
                .filter(|c| c.scope == scope && c.expires > now)
                .map(|c| c.task_id.clone()),
        );
        let found = lookup(claimed).await;
        if let Ok(Lookup::Candidates(c)) = &found {
            lock(&self.pending).insert(uid.to_string(), c[0].task_id.clone());
        }
        found
    }

    /// At deletion: the object's task ids (remembered, written, or found by cleanup) stay
    /// claimed for [`claims::TTL`], in memory and in the store, so no unresolved attempt of
    /// another object adopts them, restarts included.
    pub(crate) async fn release(
        &self,
        uid: &str,
        scope: Option<&str>,
        task_ids: impl IntoIterator<Item = String>,
    ) -> Result<(), claims::Error> {
        let remembered = lock(&self.pending).remove(uid);
        let Some(scope) = scope else {
            return Ok(());
        };
        let now = jiff::Timestamp::now();
        let expires = now + claims::TTL;
        let mut ids: Vec<String> = task_ids.into_iter().chain(remembered).collect();
        ids.sort();
        ids.dedup();
        let new: Vec<Claim> = ids
            .into_iter()
            .map(|task_id| Claim {
                scope: scope.to_string(),
                task_id,
                expires,
            })
            .collect();
        {
            let mut deleted = lock(&self.deleted);
            deleted.retain(|c| c.expires > now);
            deleted.extend(new.iter().cloned());
        }
        match &self.store {
            Some(store) if !new.is_empty() => store.record(&new).await,
            _ => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
    if let Some(task_id) = ctx.ledger.remembered(&Context::uid(&obj)) {
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
    // Lookups wait for POSTs in flight, so a task created by a POST whose answer is on its
    // way is already remembered (and excluded) when a lookup runs.
    let result = ctx
        .ledger
        .post(&Context::uid(&obj), hss.create_task(permit, req))
        .await;
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
    let uid = Context::uid(&obj);
    if let Some(task_id) = ctx.ledger.remembered(&uid) {
        return record_task_id(&api, &obj, ctx, hss, &task_id, "Response").await;
    }
    let st = current_status(&obj);
    let Some(started) = st.submission.as_ref().and_then(|s| s.started_at.clone()) else {
        // A Submitting record without a start time cannot be searched; treat as not sent.
        return back_to_pending(&api, &obj, ctx, "NotFound").await;
    };
    // Adoptions are serialised, and wait for POSTs in flight, so two objects never take the
    // same candidate and no lookup mistakes another object's fresh task for its own.
    let lookup = ctx
        .ledger
        .adopt(
            &uid,
            &scope_of(hss),
            ctx.owned_task_ids(&obj),
            |claimed| async move {
                resolve::lookup(hss, req, millis(&started), &claimed, ctx.args.lookup_settle).await
            },
        )
        .await;
    match lookup {
        Ok(Lookup::Candidates(candidates)) => {
            let task_id = candidates[0].task_id.clone();
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

/// The claims scope of a client's tasks: its endpoint and project.
pub(super) fn scope_of(hss: &HssClient) -> String {
    claims::scope(&hss.config().endpoint.to_string(), &hss.config().project_id)
}

fn new_attempt_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{:016x}", n)
}
