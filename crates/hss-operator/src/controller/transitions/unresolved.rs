//! An attempt lookups cannot resolve, and the way out a person can take.
//!
//! An object stays `Submitting` while ListTasks cannot tell whether its attempt created a task
//! (the listing is truncated, more candidates than can be confirmed, HSS failing): posting
//! again could create a second task. Past `--unresolved-after` the object says so
//! (`Submitted=False`, reason `SubmissionUnresolved`, a Warning Event once) and names the two
//! ways out, each honoured once:
//! - [`ADOPT_ANNOTATION`] `=<task id>`: follow that task. It must be listed by HSS with the
//!   attempt's task type and scan types, and not be another object's (or a deleted one's).
//! - [`RESUBMIT_ANNOTATION`] `=<attempt id>`: declare that the attempt created nothing and
//!   submit again. Only the current attempt's id counts, so a stale annotation does nothing.

use std::time::Duration;

use jiff::Timestamp;
use kube::{ResourceExt, runtime::controller::Action};

use super::{Transition, clear_attempt, current, set};
use crate::{
    controller::status,
    controller_runtime::{conditions, events},
    crd::{ClusterScanTask, Phase},
};

/// Follow this HSS task id for the unresolved attempt.
pub const ADOPT_ANNOTATION: &str = "hss.scanops.dev/adopt-task";
/// Submit again, declaring that the attempt with this id created no task.
pub const RESUBMIT_ANNOTATION: &str = "hss.scanops.dev/resubmit";

const UNRESOLVED: &str = "SubmissionUnresolved";

/// What a person asked of the unresolved attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WayOut {
    Adopt(String),
    Resubmit,
}

/// The way out the annotations ask for, if any. Pure.
pub fn way_out(obj: &ClusterScanTask) -> Option<WayOut> {
    let attempt = obj
        .status
        .as_ref()?
        .submission
        .as_ref()?
        .attempt_id
        .as_deref()?;
    let annotations = obj.annotations();
    if annotations.get(RESUBMIT_ANNOTATION).map(String::as_str) == Some(attempt) {
        return Some(WayOut::Resubmit);
    }
    annotations
        .get(ADOPT_ANNOTATION)
        .map(|id| id.trim())
        .filter(|id| !id.is_empty())
        .map(|id| WayOut::Adopt(id.to_string()))
}

/// How long the attempt has been unresolved (from its start).
pub fn unresolved_for(obj: &ClusterScanTask, now: Timestamp) -> Option<Duration> {
    let started = obj
        .status
        .as_ref()?
        .submission
        .as_ref()?
        .started_at
        .as_ref()?;
    now.duration_since(started.0).try_into().ok()
}

/// Adds the `SubmissionUnresolved` notice to `t` once the attempt is older than `after`: the
/// condition (with `why` and the ways out) and, when it is news, a Warning Event. Pure.
pub fn with_notice(
    mut t: Transition,
    obj: &ClusterScanTask,
    why: &str,
    after: Duration,
    now: Timestamp,
) -> Transition {
    if unresolved_for(obj, now).is_none_or(|age| age < after) {
        return t;
    }
    let attempt = t
        .status
        .submission
        .as_ref()
        .and_then(|s| s.attempt_id.clone())
        .unwrap_or_default();
    let message = format!(
        "CreateTask attempt {attempt} is unresolved after {}: {why}. If you know its HSS task, \
         annotate {ADOPT_ANNOTATION}=<task id>; if you are sure it created none, annotate \
         {RESUBMIT_ANNOTATION}={attempt} to submit again",
        humantime::format_duration(after)
    );
    let news = conditions::get(&t.status.conditions, status::SUBMITTED)
        .is_none_or(|c| c.reason != UNRESOLVED);
    set(
        &mut t.status,
        obj,
        status::SUBMITTED,
        false,
        UNRESOLVED,
        &message,
        now,
    );
    if news {
        t.events
            .push(events::warning(UNRESOLVED, "Resolve", &message));
    }
    t
}

/// The annotation declared the attempt created nothing: back to `Pending`, submitted again.
pub fn resubmitted(obj: &ClusterScanTask, now: Timestamp) -> Transition {
    let mut st = current(obj);
    let attempt = st
        .submission
        .as_ref()
        .and_then(|s| s.attempt_id.clone())
        .unwrap_or_default();
    st.phase = Some(Phase::Pending);
    clear_attempt(&mut st, "Resubmitted");
    let message = format!(
        "submitting again as {RESUBMIT_ANNOTATION}={attempt} asks; a task attempt {attempt} may \
         have created is not followed"
    );
    set(
        &mut st,
        obj,
        status::SUBMITTED,
        false,
        "Resubmitted",
        &message,
        now,
    );
    Transition {
        status: st,
        events: vec![events::warning("Resubmitted", "Resolve", &message)],
        action: Action::requeue(Duration::from_millis(100)),
    }
}

/// The task named by [`ADOPT_ANNOTATION`] cannot be this object's: say why (an Event when it
/// is news) and look again later; the attempt stays unresolved.
pub fn adopt_refused(
    obj: &ClusterScanTask,
    why: &str,
    retry: Duration,
    now: Timestamp,
) -> Transition {
    let mut st = current(obj);
    let message = format!("{ADOPT_ANNOTATION} cannot be honoured: {why}");
    let news = set(
        &mut st,
        obj,
        status::SUBMITTED,
        false,
        "AdoptRefused",
        &message,
        now,
    );
    Transition {
        status: st,
        events: if news {
            vec![events::warning("AdoptRefused", "Resolve", &message)]
        } else {
            vec![]
        },
        action: Action::requeue(retry),
    }
}
