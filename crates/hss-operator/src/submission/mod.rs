//! Exactly-once submission to HSS: the one protocol, and its building blocks.
//!
//! HSS creates a task for every CreateTask POST that reaches it, offers no idempotency key, no
//! get-by-id and no delete. Every POST goes through [`Ledger::post`]; what a failed POST means
//! is decided by [`after_post`], what a lookup found by [`after_lookup`], how long to wait by
//! [`backoff`]. Two callers run the protocol, and what differs between them is a parameter,
//! not a second copy:
//!
//! | step | the controller ([`crate::controller::submit`]) | `submit`, the CLI ([`crate::submit`]) |
//! |---|---|---|
//! | the attempt record ([`Attempt`]) | written to the object's status before the POST (durable: a crash leaves `Submitting`) | kept in the process (the process is the attempt's lifetime) |
//! | the POST | [`Ledger::post`] | [`Ledger::post`] |
//! | a failed POST | [`after_post`]: Rejected ends `Failed`, Retry goes back to `Pending`, Lookup stays `Submitting` | [`after_post`]: Rejected exits 3, Retry sleeps, Lookup looks up |
//! | the lookup | [`Ledger::adopt`] + [`resolve::lookup`], excluding every task id another object owns or owned ([`claims`]) | [`Ledger::adopt`] + [`resolve::lookup`]: nothing else to exclude |
//! | several candidates ([`Candidates`]) | [`Candidates::TakeFirst`]: nobody can be asked (see Caveats) | [`Candidates::Refuse`]: exit 4, naming them |
//! | backoff | [`backoff`], attempts counted in status | [`backoff`], attempts counted in the process |
//!
//! # Protocol (as the controller runs it)
//! 1. The finalizer is in place (the caller adds it with [`crate::controller_runtime::finalizers::ensure`]
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
//! - Two unresolved objects never adopt the same task, and no lookup takes a task a POST in
//!   flight is about to return: a lookup's HSS calls hold nothing (POSTs and other lookups go
//!   on meanwhile: up to 10 ListTasks pages and 40 confirmations never hold every tenant's
//!   POSTs for minutes); its candidate is assigned under the gate, exclusively, once every
//!   POST in flight has returned and its task id is remembered, and is re-checked against
//!   every id claimed by then. Every lookup ends inconclusive after
//!   [`LOOKUP_DEADLINE`](ledger::LOOKUP_DEADLINE). Lookups
//!   exclude task ids owned by any object (in the
//!   cache, or remembered in memory from the moment HSS returned them until the object is
//!   deleted, because the cache can lag behind a status write). All of that state is one
//!   type, [`Ledger`]; resolve and cleanup use the same [`Ledger::adopt`].
//! - A deleted object's task is never adopted by another object: at deletion its task ids
//!   (written, remembered, or found by cleanup's own lookup) stay claimed for
//!   [`claims::TTL`], in memory and, with `--claims-configmap`, in a ConfigMap that every new
//!   process loads before its first reconcile, so restarts and leader changes keep the claim.
//!
//! # Assumptions
//! - One writer: a single replica (or the leader) reconciles.
//! - HSS stamps a task with the clock its `Date` header shows (see [`hss_client::clock`]);
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
//! - The POST fails: classified by [`Outcome`](hss_client::Outcome) as above; the error (code and request id
//!   included) is kept in `status.lastError`.
//! - A lookup fails: the object stays `Submitting` with `lastError`, retried after the
//!   server's Retry-After or backoff; it never posts on a failed or incomplete lookup.
//! - Writing the task id fails: the id stays in the [`Ledger`] and is written on the next
//!   reconcile, without a POST or lookup.
//! - Loading the claims at start fails: the controller does not start (it would risk an
//!   adoption the claims forbid).

pub mod claims;
mod ledger;

use std::time::Duration;

use hss_client::{Outcome, resolve::Lookup};
use jiff::Timestamp;

pub use ledger::Ledger;

#[cfg(doc)]
use hss_client::resolve;

/// Backoff after the n-th failed attempt: 2 s doubling, with jitter, capped at 5 minutes.
pub use crate::controller_runtime::retry::backoff;

/// One CreateTask attempt: what is known before its POST, so a lookup can find the task it
/// may have created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Random, 16 hex digits: names the attempt in status, Events and `resubmit`.
    pub id: String,
    /// When the POST was about to be sent: where a lookup starts searching.
    pub started_at: Timestamp,
    /// 1 for the first attempt of a scan, counting every POST since.
    pub number: u32,
}

impl Attempt {
    /// The attempt after `previous` earlier ones.
    pub fn new(previous: u32, now: Timestamp) -> Self {
        use rand::Rng;
        let n: u64 = rand::rng().random();
        Self {
            id: format!("{n:016x}"),
            started_at: now,
            number: previous.saturating_add(1),
        }
    }
}

/// What a failed POST means for the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPost {
    /// HSS refused the request: nothing was created and posting again cannot help.
    Final,
    /// Nothing was created: post again after this wait (the server's Retry-After, else
    /// [`backoff`]).
    Retry(Duration),
    /// The POST may have created a task: look it up before anything else is sent.
    Lookup,
}

/// Classifies a failed POST of the `attempt`-th attempt by what it may have done.
pub fn after_post(err: &hss_client::Error, attempt: u32) -> AfterPost {
    match err.outcome() {
        Outcome::Rejected => AfterPost::Final,
        Outcome::Retryable => {
            AfterPost::Retry(err.retry_after().unwrap_or_else(|| backoff(attempt)))
        }
        Outcome::Ambiguous => AfterPost::Lookup,
    }
}

/// What a caller does when a lookup finds more than one task the attempt could have created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// Adopt the first (the controller: nobody can be asked, and one task per object is the
    /// invariant that matters; a person can name another with `adopt-task`).
    TakeFirst,
    /// Adopt none and say which (the CLI: a person reads the output).
    Refuse,
}

/// What a lookup established about an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The attempt created this task.
    Task(String),
    /// Several tasks could be the attempt's ([`Candidates::Refuse`]).
    Several(Vec<String>),
    /// The attempt created nothing: it may be posted again.
    NotCreated,
    /// Too early to trust "not found": look again after this wait.
    Wait(Duration),
    /// The search could not be completed: never post again on it.
    Inconclusive,
}

/// Reads a lookup's answer under `policy`.
pub fn after_lookup(lookup: Lookup, policy: Candidates) -> Found {
    match lookup {
        Lookup::Candidates(c) if c.len() == 1 || policy == Candidates::TakeFirst => c
            .into_iter()
            .next()
            .map_or(Found::Inconclusive, |t| Found::Task(t.task_id)),
        Lookup::Candidates(c) => Found::Several(c.into_iter().map(|t| t.task_id).collect()),
        Lookup::NotFound => Found::NotCreated,
        Lookup::TooEarly(wait) => Found::Wait(wait),
        Lookup::Inconclusive => Found::Inconclusive,
    }
}

#[cfg(test)]
mod tests {
    use hss_client::{Api, model::TaskInfo};

    use super::*;

    fn service_error(status: u16, code: &str, retry_after: Option<u64>) -> hss_client::Error {
        hss_client::Error::Service {
            api: Api::CreateTask,
            status,
            code: Some(code.into()),
            message: None,
            request_id: None,
            retry_after: retry_after.map(Duration::from_secs),
            refreshable: false,
        }
    }

    fn task(id: &str) -> TaskInfo {
        serde_json::from_value(serde_json::json!({
            "task_id": id, "task_type": "cluster_scan", "task_status": "running",
        }))
        .expect("task info")
    }

    #[test]
    fn attempts_count_up_and_get_ids_of_their_own() {
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        let first = Attempt::new(0, now);
        let second = Attempt::new(first.number, now);
        assert_eq!((first.number, second.number), (1, 2));
        assert_eq!(first.id.len(), 16);
        assert!(
            first.id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}",
            first.id
        );
        assert_ne!(first.id, second.id);
        assert_eq!(first.started_at, now);
    }

    #[test]
    fn a_failed_post_is_classified_by_what_it_may_have_created() {
        assert_eq!(
            after_post(&service_error(400, "HSS.1001", None), 1),
            AfterPost::Final
        );
        assert_eq!(
            after_post(&service_error(429, "APIGW.0308", Some(7)), 1),
            AfterPost::Retry(Duration::from_secs(7)),
            "the server's Retry-After wins"
        );
        let AfterPost::Retry(wait) = after_post(&service_error(429, "APIGW.0308", None), 3) else {
            panic!("a 429 created nothing")
        };
        assert!(
            wait >= Duration::from_secs(8),
            "the third attempt's backoff: {wait:?}"
        );
        assert_eq!(
            after_post(&service_error(503, "APIGW.0201", None), 1),
            AfterPost::Lookup,
            "a 5xx may have created the task"
        );
    }

    #[test]
    fn several_candidates_are_taken_or_refused_as_the_caller_says() {
        let two = || Lookup::Candidates(vec![task("t-old"), task("t-new")]);
        assert_eq!(
            after_lookup(two(), Candidates::TakeFirst),
            Found::Task("t-old".into())
        );
        assert_eq!(
            after_lookup(two(), Candidates::Refuse),
            Found::Several(vec!["t-old".into(), "t-new".into()])
        );
        let one = Lookup::Candidates(vec![task("t-1")]);
        assert_eq!(
            after_lookup(one, Candidates::Refuse),
            Found::Task("t-1".into())
        );
        assert_eq!(
            after_lookup(Lookup::NotFound, Candidates::Refuse),
            Found::NotCreated
        );
        assert_eq!(
            after_lookup(
                Lookup::TooEarly(Duration::from_secs(3)),
                Candidates::TakeFirst
            ),
            Found::Wait(Duration::from_secs(3))
        );
        assert_eq!(
            after_lookup(Lookup::Inconclusive, Candidates::TakeFirst),
            Found::Inconclusive
        );
    }
}
