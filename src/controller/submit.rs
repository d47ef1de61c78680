//! Exactly-once submission of a ClusterScanTask to HSS.
//!
//! HSS creates a task for every CreateTask POST that reaches it, offers no idempotency key, no
//! get-by-id and no delete. This module is the only place that POSTs.
//!
//! # Protocol
//! 1. The finalizer is in place (the caller adds it with [`crate::kit::finalizers::ensure`]
//!    and goes through `kube::runtime::finalizer`), and the object
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
//!    manually between `startedAt` and the POST's timeout as HSS's clock read them (the offset
//!    measured from its answers' `Date`; two minutes each side before any answer), minus the
//!    task ids other objects already own, confirmed by cluster or file set where the request
//!    names them. A candidate is adopted; "none" is trusted only once the attempt is older
//!    than `--lookup-settle`, and then the object goes back to `Pending` to be submitted again.
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
//! - HSS stamps a task with the clock its `Date` header shows (see [`crate::hss::clock`]);
//!   before any answer, the clocks differ by less than [`resolve::CLOCK_SKEW`]; HSS lists a new task
//!   within `--lookup-settle` (default [`resolve::SETTLE`]).
//!
//! # Caveats
//! - A deletion begun before the attempt record lands sends nothing (the record's
//!   resourceVersion precondition fails). One begun after it, during the pacing wait, can
//!   still see that one POST go out; cleanup then resolves and claims its task.
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
//! - The POST fails: classified by [`Outcome`](crate::hss::client::Outcome) as above; the error (code and request id
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
    time::{Duration, Instant},
};

use kube::{ResourceExt, api::Api, runtime::controller::Action};

use super::{
    Context, Error, Step,
    claims::{self, Claim, ClaimStore},
    status,
    transitions::{self, Resolution, WayOut},
};
use crate::kit::{events, retry::backoff};
use crate::{
    crd::{ClusterScanTask, Phase},
    hss::{
        self, Api as HssApi, HssClient,
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

    let permit = match hss.try_acquire(HssApi::CreateTask) {
        Ok(permit) => permit,
        Err(wait) => {
            let t = transitions::waiting_for_budget(&obj, wait, jiff::Timestamp::now());
            return Ok(ctx.commit(&obj, t).await?.1);
        }
    };

    // Record the attempt; only then POST. The one status write outside a transition's commit:
    // it must be durable before the POST.
    let attempt_id = new_attempt_id();
    let st = transitions::attempt(&obj, &attempt_id, jiff::Timestamp::now());
    ctx.fail_point(Step::BeforeRecord, &obj).await;
    // Written with `obj`'s resourceVersion as precondition: a deletion that began since
    // (deletionTimestamp set) changed it, so the write conflicts and nothing is posted.
    let step = Instant::now();
    let written = ctx.write_status(&api, &obj, &st).await;
    ctx.metrics.submission_step("record", step.elapsed());
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
    ctx.metrics.submission_step("lease", step.elapsed());
    match leading {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            tracing::warn!("not holding the lease any more; not sending CreateTask");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    }
    tracing::info!(attempt = %attempt_id, "sending CreateTask");
    // Lookups wait for POSTs in flight, so a task created by a POST whose answer is on its
    // way is already remembered (and excluded) when a lookup runs.
    let step = Instant::now();
    let result = ctx
        .ledger
        .post(&Context::uid(&obj), hss.create_task(permit, req))
        .await;
    ctx.metrics.submission_step("post", step.elapsed());
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
    let (written, action) = ctx.commit_step(obj, t, Some("task_id")).await?;
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
    if let Some(task_id) = ctx.ledger.remembered(&uid) {
        return record_task_id(&obj, ctx, hss, &task_id, Resolution::Response).await;
    }
    let started = obj
        .status
        .as_ref()
        .and_then(|s| s.submission.as_ref())
        .and_then(|s| s.started_at.clone());
    let Some(started) = started else {
        // A Submitting record without a start time cannot be searched; treat as not sent.
        return Ok(ctx.commit(&obj, transitions::not_created(&obj)).await?.1);
    };
    let now = jiff::Timestamp::now();
    match transitions::way_out(&obj) {
        Some(WayOut::Resubmit) => {
            return Ok(ctx
                .commit(&obj, transitions::resubmitted(&obj, now))
                .await?
                .1);
        }
        Some(WayOut::Adopt(task_id)) => return adopt_named(obj, ctx, hss, req, &task_id).await,
        None => {}
    }
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
            record_task_id(&obj, ctx, hss, &candidates[0].task_id, Resolution::Lookup).await
        }
        Ok(Lookup::NotFound) => Ok(ctx.commit(&obj, transitions::not_created(&obj)).await?.1),
        Ok(Lookup::TooEarly(wait)) => Ok(Action::requeue(wait)),
        // Stay Submitting: never post again on an incomplete search.
        Ok(Lookup::Inconclusive) => {
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
) -> Result<Action, Error> {
    let uid = Context::uid(&obj);
    let mut refusal = None;
    let found = ctx
        .ledger
        .adopt(&uid, &scope_of(hss), ctx.owned_task_ids(&obj), |claimed| {
            let refusal = &mut refusal;
            async move {
                match resolve::named(hss, req, task_id, &claimed).await? {
                    Ok(task) => Ok(Lookup::Candidates(vec![task])),
                    Err(why) => {
                        *refusal = Some(why);
                        Ok(Lookup::Inconclusive)
                    }
                }
            }
        })
        .await;
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
                match found {
                    Ok(resolve::Lookup::Candidates(c)) => return Some(Some(c[0].task_id.clone())),
                    Ok(resolve::Lookup::NotFound) => return Some(None),
                    Ok(resolve::Lookup::Inconclusive) => return None,
                    Ok(resolve::Lookup::TooEarly(wait)) => tokio::time::sleep(wait).await,
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

fn new_attempt_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{:016x}", n)
}
