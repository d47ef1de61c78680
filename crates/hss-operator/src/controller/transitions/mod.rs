//! A ClusterScanTask's life as pure transitions, in the trigger controller's shape: each takes
//! the object, what reconcile learned (an HSS answer, a lookup's result, the shared poll's
//! view) and `now`, and returns a [`Transition`]: the status to write, the Events to publish
//! once it is written, and when to look again. Nothing here does I/O; the controller applies
//! a transition in one place ([`super::Context::commit`]). The pre-POST attempt record
//! ([`attempt`]) is the one status computed here but written on its own, in the middle of the
//! submission: the protocol needs it durable before the POST.
//!
//! | phase | transitions |
//! |---|---|
//! | Pending | [`invalid_spec`], [`refused`], [`credentials_unavailable`], [`credentials_ready`], [`waiting_for_budget`], [`attempt`] |
//! | Submitting | [`post_failed`], [`task_known`], [`lookup_failed`], [`lookup_inconclusive`], [`not_created`]; past `--unresolved-after` [`with_notice`], and the ways out [`resubmitted`], [`adopt_refused`] (in `unresolved.rs`) |
//! | Submitted, Running | [`progressed`], [`awaiting_retry`], [`retried`], [`finished`], [`task_lost`], [`results_unavailable`] (in `following.rs`) |
//! | Succeeded, PartiallyFailed (cluster_scan) | [`findings_read`], [`findings_unavailable`] (in `findings.rs`) |

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;

use super::status;
use crate::{
    controller_runtime::{conditions, events},
    crd::{
        ClusterScanTask, ClusterScanTaskStatus, Phase,
        cluster_scan_task::{LastError, Submission},
    },
    submission::{self, AfterPost, Attempt, backoff},
};

/// What one step decided: the whole status to write (when it differs from the object's), the
/// Events to publish after the write, and when to reconcile again.
#[derive(Debug, Clone)]
pub struct Transition {
    pub status: ClusterScanTaskStatus,
    pub events: Vec<events::Note>,
    pub action: Action,
}

/// How an attempt's task became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// HSS answered the POST with the task id.
    Response,
    /// A lookup found the task an unanswered POST created.
    Lookup,
    /// A person named the task (annotation `hss.scanops.dev/adopt-task`).
    Manual,
}

/// The object's status as the starting point of a transition.
fn current(obj: &ClusterScanTask) -> ClusterScanTaskStatus {
    obj.status.clone().unwrap_or_default()
}

fn set(
    st: &mut ClusterScanTaskStatus,
    obj: &ClusterScanTask,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let generation = obj.metadata.generation;
    conditions::set(
        &mut st.conditions,
        generation,
        type_,
        value,
        reason,
        message,
        now,
    )
}

/// An HSS failure as `status.lastError`.
pub fn hss_error(err: &hss_client::Error, now: Timestamp) -> LastError {
    let mut e = status::last_error(
        err.category(),
        err.error_code(),
        &crate::report_error(err),
        err.request_id(),
    );
    e.time = Some(Time(now));
    e
}

fn clear_attempt(st: &mut ClusterScanTaskStatus, resolution: &str) {
    if let Some(s) = st.submission.as_mut() {
        s.attempt_id = None;
        s.started_at = None;
        s.resolution = Some(resolution.to_string());
    }
}

fn attempts(st: &ClusterScanTaskStatus) -> u32 {
    st.submission.as_ref().map_or(1, |s| s.attempts.max(1))
}

/// Pending with a spec that cannot become an HSS request (admitted by an API server without
/// CEL): Failed, for good.
pub fn invalid_spec(
    obj: &ClusterScanTask,
    category: &str,
    message: &str,
    now: Timestamp,
) -> Transition {
    let mut st = current(obj);
    st.phase = Some(Phase::Failed);
    st.observed_generation = obj.metadata.generation;
    set(
        &mut st,
        obj,
        status::FAILED,
        true,
        "InvalidSpec",
        message,
        now,
    );
    let mut last = status::last_error(category, None, message, None);
    last.time = Some(Time(now));
    st.last_error = Some(last);
    Transition {
        status: st,
        events: vec![events::warning("InvalidSpec", "Validate", message)],
        action: Action::await_change(),
    }
}

/// The tenant policy refuses the object's endpoint or project ([`super::policy`]): nothing
/// was or will be sent. Before submission that is final (`Failed`); after it (the operator's
/// flags changed), the object keeps its task and says why it cannot follow it.
pub fn refused(obj: &ClusterScanTask, reason: &str, message: &str, now: Timestamp) -> Transition {
    let pending = obj
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_none_or(|p| p == Phase::Pending);
    if !pending {
        return credentials_unavailable(obj, reason, message, Duration::from_secs(300), now);
    }
    let mut st = current(obj);
    st.observed_generation = obj.metadata.generation;
    failed(&mut st, obj, reason, message, "the scan never ran", now);
    Transition {
        status: st,
        events: vec![events::warning(reason, "Validate", message)],
        action: Action::await_change(),
    }
}

/// No usable credentials: `CredentialsReady=False` (an Event when that is news), and a look
/// again after `retry`.
pub fn credentials_unavailable(
    obj: &ClusterScanTask,
    reason: &str,
    message: &str,
    retry: Duration,
    now: Timestamp,
) -> Transition {
    let mut st = current(obj);
    st.phase.get_or_insert(Phase::Pending);
    let news = set(
        &mut st,
        obj,
        status::CREDENTIALS_READY,
        false,
        reason,
        message,
        now,
    );
    Transition {
        status: st,
        events: if news {
            vec![events::warning(reason, "ReadCredentials", message)]
        } else {
            vec![]
        },
        action: Action::requeue(retry),
    }
}

/// When to look for missing credentials again: half the time they have been missing, between
/// 5 s and 2 min (restart-safe: measured from the condition's transition time). Pure.
pub fn credentials_retry(obj: &ClusterScanTask, now: Timestamp) -> Duration {
    let since = obj
        .status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, status::CREDENTIALS_READY))
        .filter(|c| c.status == "False")
        .map(|c| c.last_transition_time.0);
    let missing = since
        .and_then(|t| now.duration_since(t).try_into().ok())
        .unwrap_or(Duration::ZERO);
    (missing / 2).clamp(Duration::from_secs(5), Duration::from_secs(120))
}

/// Credentials found: `CredentialsReady=True`, if it is not already.
pub fn credentials_ready(obj: &ClusterScanTask, now: Timestamp) -> Option<ClusterScanTaskStatus> {
    let mut st = current(obj);
    if conditions::is_true(&st.conditions, status::CREDENTIALS_READY) {
        return None;
    }
    st.phase.get_or_insert(Phase::Pending);
    set(
        &mut st,
        obj,
        status::CREDENTIALS_READY,
        true,
        "Found",
        "credentials are available",
        now,
    );
    Some(st)
}

/// Waiting for the CreateTask budget: `Throttled=True` once when the wait starts (the message
/// does not change while it lasts, so later attempts write nothing), then a look again when a
/// token frees. The Event is Normal: waiting is the designed path, not something a person must
/// act on (a 429 from HSS, caused by another client of the account, stays a Warning).
pub fn waiting_for_budget(obj: &ClusterScanTask, wait: Duration, now: Timestamp) -> Transition {
    waiting_in_queue(obj, None, wait, now)
}

/// [`waiting_for_budget`] in the fair queue, with the object's place when known ("3rd in this
/// namespace's queue; about 40 s"): written when the wait starts, not as the place changes.
pub fn waiting_in_queue(
    obj: &ClusterScanTask,
    place: Option<&str>,
    wait: Duration,
    now: Timestamp,
) -> Transition {
    let mut st = current(obj);
    st.phase.get_or_insert(Phase::Pending);
    let message = match place {
        Some(place) => {
            format!("waiting for the HSS CreateTask budget (calls per minute are limited): {place}")
        }
        None => "waiting for the HSS CreateTask budget (calls per minute are limited)".into(),
    };
    let news = set(
        &mut st,
        obj,
        status::THROTTLED,
        true,
        "BudgetExhausted",
        &message,
        now,
    );
    Transition {
        status: st,
        events: if news {
            vec![events::normal("Throttled", "Submit", &message)]
        } else {
            vec![]
        },
        action: Action::requeue(wait),
    }
}

/// Over its namespace's cap of unfinished scans: `Throttled=True`, reason `NamespaceLimit`, once
/// when the wait starts; nothing is spent, and it looks again after `wait`.
pub fn namespace_limit(
    obj: &ClusterScanTask,
    cap: u32,
    wait: Duration,
    now: Timestamp,
) -> Transition {
    let mut st = current(obj);
    st.phase.get_or_insert(Phase::Pending);
    let message = format!(
        "waiting: this namespace may have at most {cap} unfinished ClusterScanTasks (maxUnfinished of its ClusterScanPolicy, or --max-unfinished-per-namespace); older ones go first"
    );
    let news = set(
        &mut st,
        obj,
        status::THROTTLED,
        true,
        "NamespaceLimit",
        &message,
        now,
    );
    Transition {
        status: st,
        events: if news {
            vec![events::normal("NamespaceLimit", "Submit", &message)]
        } else {
            vec![]
        },
        action: Action::requeue(wait),
    }
}

/// The attempt record written before the POST: `Submitting`, the attempt's id, number and
/// start.
pub fn attempt(obj: &ClusterScanTask, attempt: &Attempt) -> ClusterScanTaskStatus {
    let mut st = current(obj);
    st.phase = Some(Phase::Submitting);
    st.submission = Some(Submission {
        attempt_id: Some(attempt.id.clone()),
        started_at: Some(Time(attempt.started_at)),
        attempts: attempt.number,
        last_attempt_at: Some(Time(attempt.started_at)),
        resolution: None,
    });
    conditions::clear(&mut st.conditions, status::THROTTLED);
    st.observed_generation = obj.metadata.generation;
    st
}

/// The POST failed (`obj` is the recorded attempt): rejected ends Failed, retryable goes back
/// to Pending with backoff, ambiguous stays Submitting for a lookup.
pub fn post_failed(obj: &ClusterScanTask, err: &hss_client::Error, now: Timestamp) -> Transition {
    let mut st = current(obj);
    st.last_error = Some(hss_error(err, now));
    match submission::after_post(err, attempts(&st)) {
        AfterPost::Final => {
            clear_attempt(&mut st, "Rejected");
            let reason = events::reason_for(err.category());
            let message = format!("HSS rejected the scan: {}", crate::report_error(err));
            failed(&mut st, obj, &reason, &message, "the scan never ran", now);
            if err.is_signature_failure() {
                set(
                    &mut st,
                    obj,
                    status::CREDENTIALS_READY,
                    false,
                    "AuthenticationFailed",
                    "HSS refused the signature or token; fix the credentials and create a new ClusterScanTask (signature failures are not retried: HSS locks an AK/SK after repeated failures)",
                    now,
                );
            }
            Transition {
                status: st,
                events: vec![events::warning("Failed", "Submit", &message)],
                action: Action::await_change(),
            }
        }
        AfterPost::Retry(wait) => {
            st.phase = Some(Phase::Pending);
            clear_attempt(&mut st, "NotSent");
            let mut events = vec![];
            if err.status() == Some(429) {
                let message = format!(
                    "HSS throttled CreateTask (APIGW.0308); retrying in {}s",
                    wait.as_secs()
                );
                set(
                    &mut st,
                    obj,
                    status::THROTTLED,
                    true,
                    "Throttled",
                    &message,
                    now,
                );
                events.push(events::warning("Throttled", "Submit", &message));
            }
            Transition {
                status: st,
                events,
                action: Action::requeue(wait),
            }
        }
        AfterPost::Lookup => Transition {
            status: st,
            events: vec![events::warning(
                "SubmissionAmbiguous",
                "Submit",
                &format!(
                    "CreateTask outcome unknown ({}); resolving by lookup, not by posting again",
                    err.category()
                ),
            )],
            action: Action::requeue(Duration::from_secs(1)),
        },
    }
}

/// `status.taskId` was not written by the operator (its seal does not match): the object ends
/// `Failed` (reason `TaskIdNotRecorded`) and the task is neither followed nor read.
pub fn untrusted_task(obj: &ClusterScanTask, now: Timestamp) -> Transition {
    let id = obj
        .status
        .as_ref()
        .and_then(|s| s.task_id.as_deref())
        .unwrap_or_default();
    let message = format!(
        "status.taskId {id:?} was not recorded by the operator (status was changed by someone else); it is not followed. Delete this ClusterScanTask and create it again"
    );
    let mut st = current(obj);
    failed(
        &mut st,
        obj,
        "TaskIdNotRecorded",
        &message,
        "the task is not followed",
        now,
    );
    Transition {
        status: st,
        events: vec![events::warning("TaskIdNotRecorded", "Follow", &message)],
        action: Action::await_change(),
    }
}

/// Ends the scan `Failed`: `Failed=True` with `reason` and `message`, and `Complete=False` with
/// the same reason and `incomplete` (why nothing more will come of it).
pub(super) fn failed(
    st: &mut ClusterScanTaskStatus,
    obj: &ClusterScanTask,
    reason: &str,
    message: &str,
    incomplete: &str,
    now: Timestamp,
) {
    st.phase = Some(Phase::Failed);
    set(st, obj, status::FAILED, true, reason, message, now);
    set(st, obj, status::COMPLETE, false, reason, incomplete, now);
}

/// The attempt's task is known: `Submitted` with the task id, followed by the shared poll.
pub fn task_known(
    obj: &ClusterScanTask,
    task_id: &str,
    resolution: Resolution,
    poll_every: Duration,
    now: Timestamp,
) -> Transition {
    let mut st = current(obj);
    st.phase = Some(Phase::Submitted);
    st.task_id = Some(task_id.to_string());
    st.submitted_at = Some(Time(now));
    st.last_error = None;
    let (resolution, reason, message) = match resolution {
        Resolution::Lookup => (
            "Lookup",
            "Adopted",
            format!("found HSS task {task_id} created by an earlier attempt"),
        ),
        Resolution::Manual => (
            "Manual",
            "Adopted",
            format!("following HSS task {task_id}, as the adopt-task annotation asks"),
        ),
        Resolution::Response => (
            "Response",
            "Submitted",
            format!("HSS created task {task_id}"),
        ),
    };
    if let Some(s) = st.submission.as_mut() {
        s.resolution = Some(resolution.to_string());
    }
    conditions::clear(&mut st.conditions, status::THROTTLED);
    set(&mut st, obj, status::SUBMITTED, true, reason, &message, now);
    st.observed_generation = obj.metadata.generation;
    Transition {
        status: st,
        events: vec![events::normal(reason, "Submit", &message)],
        action: Action::requeue(poll_every * 4),
    }
}

/// A lookup failed: stay `Submitting` (never post on a failed search), retry later.
pub fn lookup_failed(obj: &ClusterScanTask, err: &hss_client::Error, now: Timestamp) -> Transition {
    let mut st = current(obj);
    st.last_error = Some(hss_error(err, now));
    let wait = err.retry_after().unwrap_or_else(|| backoff(attempts(&st)));
    Transition {
        status: st,
        events: vec![],
        action: Action::requeue(wait),
    }
}

/// A lookup could not conclude (listing truncated, too many candidates to confirm): stay
/// `Submitting` (never post on an incomplete search) and look again after `retry`.
pub fn lookup_inconclusive(obj: &ClusterScanTask, retry: Duration) -> Transition {
    Transition {
        status: current(obj),
        events: vec![],
        action: Action::requeue(retry),
    }
}

/// A lookup proved the attempt created no task: back to `Pending`, to be submitted again.
pub fn not_created(obj: &ClusterScanTask) -> Transition {
    let mut st = current(obj);
    st.phase = Some(Phase::Pending);
    clear_attempt(&mut st, "NotFound");
    Transition {
        status: st,
        events: vec![events::normal(
            "NotCreated",
            "Submit",
            "lookup proved the earlier CreateTask attempt created no task; submitting again",
        )],
        action: Action::requeue(Duration::from_millis(100)),
    }
}

mod findings;
mod following;
mod unresolved;
pub use findings::*;
pub use following::*;
pub use unresolved::*;

#[cfg(test)]
mod tests;
