//! The pure part of a trigger reconcile: validate the spec, then decide from the trigger, its
//! runs, the Nodes and the clock whether to create a run, which finished runs to delete, what
//! to tell the user, and the next status. No I/O; tested with inline objects.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time};
use kube::{ResourceExt, core::Selector};

use super::{nodes::NodeView, schedule::Schedule};
use crate::controller_runtime::conditions::set as set_condition;
use crate::crd::{
    ClusterScanTask, ClusterScanTrigger, ClusterScanTriggerStatus, Phase, RunReason,
    cluster_scan_trigger::{
        MAX_TRIGGER_NAME, RUN_NOW_ANNOTATION, RUN_REASON_LABEL, RUN_TIME_ANNOTATION, RunFindings,
    },
};

mod detect;
mod steps;
/// The trigger's status with `Ready=False` and `reason` (`InvalidTemplate`, `NotPermitted`),
/// everything else unchanged (so the causes stay owed until the template is fixed).
pub fn refused(
    trigger: &ClusterScanTrigger,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> ClusterScanTriggerStatus {
    let mut st = trigger.status.clone().unwrap_or_default();
    st.observed_generation = trigger.metadata.generation;
    set_condition(
        &mut st.conditions,
        trigger.metadata.generation,
        READY,
        false,
        reason,
        message,
        now,
    );
    st
}

#[cfg(test)]
mod tests;

pub use detect::{NodeDetails, redact, version_set};

/// Condition types.
pub const READY: &str = "Ready";
pub const RUN_PENDING: &str = "RunPending";

/// A run as the decision needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub name: String,
    pub uid: Option<String>,
    pub phase: Phase,
    /// When the trigger decided on it (trigger clock; annotation hss.scanops.dev/run-time).
    pub run_time: Option<Timestamp>,
    pub created: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub deleting: bool,
    /// Its findings' totals, once read.
    pub findings: Option<RunFindings>,
    /// Why it was created (label hss.scanops.dev/run-reason).
    pub reason: Option<RunReason>,
}

impl RunInfo {
    pub fn from_task(task: &ClusterScanTask) -> Self {
        let status = task.status.as_ref();
        RunInfo {
            name: task.name_any(),
            uid: task.uid(),
            phase: status.and_then(|s| s.phase).unwrap_or_default(),
            run_time: task
                .annotations()
                .get(RUN_TIME_ANNOTATION)
                .and_then(|t| t.parse().ok()),
            created: task.metadata.creation_timestamp.as_ref().map(|t| t.0),
            finished_at: status.and_then(|s| s.finished_at.as_ref()).map(|t| t.0),
            deleting: task.metadata.deletion_timestamp.is_some(),
            reason: task
                .labels()
                .get(RUN_REASON_LABEL)
                .and_then(|r| serde_json::from_value(serde_json::Value::from(r.as_str())).ok()),
            findings: status
                .and_then(|s| s.findings.as_ref())
                .map(|f| RunFindings {
                    run: task.name_any(),
                    read_at: f.read_at.clone(),
                    total: f.total,
                    clusters_read: f.clusters_read,
                    clusters_with_findings: f.clusters_with_findings,
                    security_check: f.security_check.clone(),
                }),
        }
    }

    fn order_key(&self) -> (Option<Timestamp>, &str) {
        (self.run_time.or(self.created), &self.name)
    }
}

/// Everything a decision reads.
pub struct Inputs<'a> {
    pub trigger: &'a ClusterScanTrigger,
    pub now: Timestamp,
    /// Runs owned by the trigger.
    pub runs: &'a [RunInfo],
    /// All Nodes; None when the Node cache is not available.
    pub nodes: Option<&'a [Arc<NodeView>]>,
    /// The API server's git version; None until known.
    pub api_server: Option<&'a str>,
    /// Whether status may name Nodes and versions.
    pub node_details: NodeDetails,
}

/// A run to create.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    pub name: String,
    pub reason: RunReason,
    /// The schedule time it is for, when the schedule was due.
    pub scheduled: Option<Timestamp>,
    /// Human-readable causes it covers.
    pub causes: Vec<String>,
}

/// Something to tell the user with an Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, message: String) -> Self {
        Note {
            warning: false,
            reason,
            message,
        }
    }

    fn warning(reason: &'static str, message: String) -> Self {
        Note {
            warning: true,
            reason,
            message,
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: ClusterScanTriggerStatus,
    pub create: Option<PlannedRun>,
    /// Finished runs beyond the history limits, oldest first.
    pub delete: Vec<String>,
    pub notes: Vec<Note>,
    /// When something will be due (the next schedule, a settle period or cooldown ending).
    pub requeue_at: Option<Timestamp>,
}

/// The spec, checked and parsed.
#[derive(Debug)]
pub struct Plan {
    pub schedule: Option<Schedule>,
    pub cooldown: SignedDuration,
    pub node_joined: Option<(Selector, SignedDuration)>,
    pub upgraded: Option<SignedDuration>,
}

/// Why a spec cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

/// Checks and parses the spec. Pure.
pub fn validate(trigger: &ClusterScanTrigger) -> Result<Plan, Invalid> {
    let spec = &trigger.spec;
    let name = trigger.name_any();
    if name.len() > MAX_TRIGGER_NAME {
        return Err(Invalid {
            reason: "NameTooLong",
            message: format!(
                "the name is {} characters; at most {MAX_TRIGGER_NAME} leave room for run names",
                name.len()
            ),
        });
    }
    if let Err(e) = spec.template.spec.to_request() {
        return Err(Invalid {
            reason: "InvalidTemplate",
            message: crate::report_error(&e),
        });
    }
    let schedule = match &spec.schedule {
        Some(expr) => Some(
            Schedule::parse(expr, spec.time_zone.as_deref()).map_err(|e| Invalid {
                reason: e.reason(),
                message: e.to_string(),
            })?,
        ),
        None if spec.time_zone.is_some() => {
            return Err(Invalid {
                reason: "InvalidTimeZone",
                message: "timeZone applies to schedule; set schedule too".into(),
            });
        }
        None => None,
    };
    let cooldown = parse_cooldown(&spec.cooldown).ok_or_else(|| Invalid {
        reason: "InvalidCooldown",
        message: format!(
            "cooldown {:?} is not a non-negative duration such as 10m, 1h30m or 0s",
            spec.cooldown
        ),
    })?;
    let on = spec.on.clone().unwrap_or_default();
    let node_joined = match on.node_joined {
        Some(nj) => {
            let selector =
                Selector::try_from(nj.selector.unwrap_or_default()).map_err(|e| Invalid {
                    reason: "InvalidSelector",
                    message: format!("on.nodeJoined.selector: {e}"),
                })?;
            Some((
                selector,
                SignedDuration::from_secs(i64::from(nj.settle_seconds)),
            ))
        }
        None => None,
    };
    let upgraded = on
        .kubernetes_upgraded
        .map(|u| SignedDuration::from_secs(i64::from(u.settle_seconds)));
    Ok(Plan {
        schedule,
        cooldown,
        node_joined,
        upgraded,
    })
}

/// `10m`, `1h30m`, `90s`, `0s`: the shape the CRD admits (hours, minutes, seconds, in order).
pub fn parse_cooldown(s: &str) -> Option<SignedDuration> {
    if s.is_empty() {
        return None;
    }
    let mut units: &[(char, i64)] = &[('h', 3600), ('m', 60), ('s', 1)];
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let pos = units.iter().position(|(u, _)| *u == unit)?;
        total = total.checked_add(n.checked_mul(units[pos].1)?)?;
        units = &units[pos + 1..];
        rest = &rest[digits + unit.len_utf8()..];
    }
    Some(SignedDuration::from_secs(total))
}

/// Decides. Pure. The steps, in order (each in `steps.rs`): the run history (active runs,
/// the last success, what to prune); the spec (invalid: say so and stop); readiness; the
/// schedule; a run-now request; Node joins and Kubernetes version changes (`detect.rs`);
/// then, when something is due, either the reason it waits (concurrency, cooldown) or the one
/// run that covers everything due.
pub fn decide(inp: &Inputs) -> Decision {
    let mut draft = steps::Draft::new(inp);
    let last_run = draft.history(inp.runs);
    let plan = match validate(inp.trigger) {
        Ok(plan) => plan,
        Err(invalid) => return draft.invalid(invalid),
    };
    draft.readiness(&plan, inp.nodes.is_some());
    let scheduled = draft.schedule(&plan);
    let mut due = draft.run_now();
    let mut settling = Vec::new();
    draft.node_joins(&plan, inp.nodes, &mut due, &mut settling);
    draft.versions(&plan, inp.nodes, inp.api_server, &mut due, &mut settling);
    let settle_message = draft.settling(&settling);
    if due.is_empty() && scheduled.is_none() {
        draft.idle(&settle_message);
    } else if let Some(wait) = draft.must_wait(&plan, last_run) {
        draft.defer(wait, scheduled, &due, &settle_message);
    } else {
        draft.start(due, scheduled, &settle_message);
    }
    draft.finish()
}

/// `RunPending` when nothing is due: True while a join or version change settles, else False.
fn settling_or_idle(
    st: &mut ClusterScanTriggerStatus,
    generation: Option<i64>,
    settle_message: &str,
    now: Timestamp,
) {
    if settle_message.is_empty() {
        set_condition(
            &mut st.conditions,
            generation,
            RUN_PENDING,
            false,
            "Idle",
            "no run is waiting",
            now,
        );
    } else {
        set_condition(
            &mut st.conditions,
            generation,
            RUN_PENDING,
            true,
            "Settling",
            settle_message,
            now,
        );
    }
}

/// `<trigger>-<10 hex digits of sha256(basis)>`: the same decision always names the same run,
/// so a repeated create (after a crash, or from a stale cache) is refused as AlreadyExists.
pub fn run_name(trigger: &str, basis: &str) -> String {
    let hash = hss_client::signer::hex_sha256(basis.as_bytes());
    format!("{trigger}-{}", &hash[..10])
}

fn run_ref(name: &str, uid: Option<String>, namespace: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("hss.scanops.dev/v1alpha1".into()),
        kind: Some("ClusterScanTask".into()),
        name: Some(name.to_string()),
        namespace,
        uid,
        ..Default::default()
    }
}

fn max_time(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn describe(t: &ClusterScanTrigger, plan: &Plan) -> String {
    let mut parts = Vec::new();
    if let (Some(expr), Some(s)) = (&t.spec.schedule, &plan.schedule) {
        parts.push(format!("schedule {expr:?} ({})", s.time_zone()));
    }
    if plan.node_joined.is_some() {
        parts.push("on nodeJoined".into());
    }
    if plan.upgraded.is_some() {
        parts.push("on kubernetesUpgraded".into());
    }
    parts.push(format!("run-now annotation {RUN_NOW_ANNOTATION}"));
    if t.spec.suspend {
        parts.push("suspended: only run-now starts runs".into());
    }
    parts.join("; ")
}
