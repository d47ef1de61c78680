//! The pure part of a trigger reconcile: validate the spec, then decide from the trigger, its
//! runs, the Nodes and the clock whether to create a run, which finished runs to delete, what
//! to tell the user, and the next status. No I/O; tested with inline objects.

use std::{collections::BTreeSet, sync::Arc};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use super::{nodes::NodeView, schedule::Schedule};
use crate::crd::{
    ClusterScanTask, ClusterScanTrigger, ClusterScanTriggerStatus, ConcurrencyPolicy, Phase,
    RunReason,
    cluster_scan_trigger::{
        MAX_TRIGGER_NAME, ObservedNodes, ObservedVersions, RUN_NOW_ANNOTATION, RUN_TIME_ANNOTATION,
        VersionSet,
    },
};
use crate::kit::conditions::set as set_condition;

/// Condition types.
pub const READY: &str = "Ready";
pub const RUN_PENDING: &str = "RunPending";

/// Bounds on what status keeps about Nodes and versions.
const MAX_NEWEST_NAMES: usize = 100;
const MAX_LISTED_KUBELETS: usize = 20;

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

/// Something that asks for a run and may wait (everything but the schedule, whose missed
/// times are skipped rather than delayed).
#[derive(Debug, Clone)]
enum Due {
    OnDemand {
        value: String,
    },
    Upgraded {
        since: Timestamp,
        fingerprint: String,
    },
    Joined {
        since: Timestamp,
        count: u32,
    },
}

impl Due {
    fn reason(&self) -> RunReason {
        match self {
            Due::OnDemand { .. } => RunReason::OnDemand,
            Due::Upgraded { .. } => RunReason::KubernetesUpgraded,
            Due::Joined { .. } => RunReason::NodeJoined,
        }
    }

    fn describe(&self) -> String {
        match self {
            Due::OnDemand { value } => format!("run-now request {value:?}"),
            Due::Upgraded { .. } => "a Kubernetes version change".to_string(),
            Due::Joined { count, .. } => format!("{count} joined Node(s)"),
        }
    }
}

/// Decides. Pure.
pub fn decide(inp: &Inputs) -> Decision {
    let t = inp.trigger;
    let now = inp.now;
    let generation = t.metadata.generation;
    let old = t.status.clone().unwrap_or_default();
    let mut st = old.clone();
    st.observed_generation = generation;
    let mut d = Decision {
        status: ClusterScanTriggerStatus::default(),
        create: None,
        delete: Vec::new(),
        notes: Vec::new(),
        requeue_at: None,
    };
    let requeue = |at: Timestamp, d: &mut Decision| {
        d.requeue_at = Some(d.requeue_at.map_or(at, |r| r.min(at)));
    };

    // History: what is still running, what succeeded last, what to prune.
    let ns = t.namespace();
    let mut runs: Vec<&RunInfo> = inp.runs.iter().collect();
    runs.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    st.active = runs
        .iter()
        .filter(|r| !r.phase.is_final() && !r.deleting)
        .map(|r| run_ref(&r.name, r.uid.clone(), ns.clone()))
        .collect();
    let success = runs
        .iter()
        .filter(|r| r.phase == Phase::Succeeded)
        .filter_map(|r| r.finished_at.or(r.run_time))
        .max();
    st.last_successful_time = max_time(old.last_successful_time.clone(), success.map(Time));
    let prune = |keep: u32, pred: &dyn Fn(&RunInfo) -> bool| -> Vec<String> {
        let finished: Vec<&&RunInfo> = runs.iter().filter(|r| !r.deleting && pred(r)).collect();
        let excess = finished.len().saturating_sub(keep as usize);
        finished[..excess].iter().map(|r| r.name.clone()).collect()
    };
    d.delete = prune(t.spec.successful_runs_history_limit, &|r| {
        r.phase == Phase::Succeeded
    });
    d.delete
        .extend(prune(t.spec.failed_runs_history_limit, &|r| {
            matches!(r.phase, Phase::Failed | Phase::PartiallyFailed)
        }));
    let last_run = runs
        .iter()
        .filter_map(|r| r.run_time)
        .chain(old.last_run_time.as_ref().map(|t| t.0))
        .max();

    let plan = match validate(t) {
        Ok(plan) => plan,
        Err(invalid) => {
            if set_condition(
                &mut st.conditions,
                generation,
                READY,
                false,
                invalid.reason,
                &invalid.message,
                now,
            ) {
                d.notes.push(Note::warning(invalid.reason, invalid.message));
            }
            st.next_schedule_time = None;
            set_condition(
                &mut st.conditions,
                generation,
                RUN_PENDING,
                false,
                "Invalid",
                "no runs until the spec is fixed",
                now,
            );
            d.status = st;
            return d;
        }
    };
    let needs_nodes = plan.node_joined.is_some() || plan.upgraded.is_some();
    if needs_nodes && inp.nodes.is_none() {
        set_condition(
            &mut st.conditions,
            generation,
            READY,
            false,
            "NodesUnavailable",
            "the operator cannot list and watch Nodes (RBAC?); on.nodeJoined and on.kubernetesUpgraded are paused, schedule and run-now work",
            now,
        );
    } else {
        set_condition(
            &mut st.conditions,
            generation,
            READY,
            true,
            "Valid",
            &describe(t, &plan),
            now,
        );
    }
    let suspended = t.spec.suspend;
    let mut due: Vec<Due> = Vec::new();
    let mut settling: Vec<(Timestamp, String)> = Vec::new();

    // Schedule: the latest schedule time not handled yet; older missed times are dropped.
    let mut schedule_due = None;
    st.next_schedule_time = None;
    if let Some(schedule) = &plan.schedule {
        let baseline = max_time(
            old.last_schedule_time.clone(),
            t.metadata.creation_timestamp.clone(),
        );
        if let Some(latest) = schedule.latest_at_or_before(now)
            && baseline.as_ref().is_none_or(|b| latest > b.0)
        {
            let late = now.duration_since(latest);
            let deadline = t
                .spec
                .starting_deadline_seconds
                .map(SignedDuration::from_secs);
            if suspended {
                st.last_schedule_time = Some(Time(latest));
            } else if deadline.is_some_and(|dl| late > dl) {
                st.last_schedule_time = Some(Time(latest));
                d.notes.push(Note::warning(
                    "MissedSchedule",
                    format!(
                        "skipped the run scheduled for {latest}: {}s late, beyond startingDeadlineSeconds",
                        late.as_secs()
                    ),
                ));
            } else {
                schedule_due = Some(latest);
            }
        }
        if !suspended && let Some(next) = schedule.next_after(now) {
            st.next_schedule_time = Some(Time(next));
            requeue(next, &mut d);
        }
    }

    // On demand: a new annotation value.
    if let Some(value) = t.annotations().get(RUN_NOW_ANNOTATION)
        && !value.is_empty()
        && old.run_now_acknowledged.as_deref() != Some(value.as_str())
    {
        due.push(Due::OnDemand {
            value: value.clone(),
        });
    }

    // Node joins.
    match (&plan.node_joined, inp.nodes) {
        (None, _) => st.nodes = None,
        (Some(_), None) => {}
        (Some((selector, settle)), Some(nodes)) => {
            let observed = observe_joins(old.nodes.as_ref(), nodes, selector, now, suspended);
            if observed.pending_joins > 0
                && let Some(since) = observed.pending_since.as_ref().map(|t| t.0)
            {
                let at = since.saturating_add(*settle).unwrap_or(since);
                if now >= at {
                    due.push(Due::Joined {
                        since,
                        count: observed.pending_joins,
                    });
                } else {
                    settling.push((
                        at,
                        format!(
                            "{} joined Node(s) wait for on.nodeJoined.settleSeconds until {at}",
                            observed.pending_joins
                        ),
                    ));
                }
            }
            st.nodes = Some(observed);
        }
    }

    // Kubernetes versions.
    match (plan.upgraded, inp.nodes, inp.api_server) {
        (None, _, _) => st.versions = None,
        (Some(settle), Some(nodes), Some(api_server)) => {
            let seen = version_set(api_server, nodes);
            let observed = observe_versions(old.versions.as_ref(), seen, now, suspended);
            if let (Some(pending), Some(since)) = (
                &observed.pending,
                observed.pending_since.as_ref().map(|t| t.0),
            ) {
                let at = since.saturating_add(settle).unwrap_or(since);
                if now >= at {
                    due.push(Due::Upgraded {
                        since,
                        fingerprint: pending.fingerprint.clone(),
                    });
                } else {
                    settling.push((
                        at,
                        format!("a Kubernetes version change must stay unchanged until {at}"),
                    ));
                }
            }
            st.versions = Some(observed);
        }
        // Versions unknown yet: keep what status says.
        (Some(_), _, _) => {}
    }

    let settle_message = settling
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(at) = settling.iter().map(|(at, _)| *at).min() {
        requeue(at, &mut d);
    }

    if due.is_empty() && schedule_due.is_none() {
        settling_or_idle(&mut st, generation, &settle_message, now);
        d.status = st;
        return d;
    }

    // Something is due: may it start now?
    let busy = t.spec.concurrency_policy == ConcurrencyPolicy::Forbid && !st.active.is_empty();
    let cooling = last_run
        .and_then(|l| l.saturating_add(plan.cooldown).ok())
        .filter(|until| now < *until);
    if busy || cooling.is_some() {
        let (reason, skipped, why) = if busy {
            let names: Vec<&str> = st.active.iter().filter_map(|r| r.name.as_deref()).collect();
            (
                "ActiveRun",
                "SkippedConcurrent",
                format!(
                    "run {} has not finished (concurrencyPolicy Forbid)",
                    names.join(", ")
                ),
            )
        } else {
            let until = cooling.unwrap_or(now);
            requeue(until, &mut d);
            (
                "Cooldown",
                "SkippedCooldown",
                format!("cooldown {} runs until {until}", t.spec.cooldown),
            )
        };
        if let Some(at) = schedule_due {
            st.last_schedule_time = Some(Time(at));
            d.notes.push(Note::normal(
                skipped,
                format!("skipped the run scheduled for {at}: {why}"),
            ));
        }
        if due.is_empty() {
            settling_or_idle(&mut st, generation, &settle_message, now);
        } else {
            let what: Vec<String> = due.iter().map(Due::describe).collect();
            let message = format!("{} waits: {why}", what.join(" and "));
            if set_condition(
                &mut st.conditions,
                generation,
                RUN_PENDING,
                true,
                reason,
                &message,
                now,
            ) {
                d.notes.push(Note::normal("RunDeferred", message));
            }
        }
        d.status = st;
        return d;
    }

    // One run covers everything due.
    due.sort_by_key(|c| match c {
        Due::OnDemand { .. } => 0,
        Due::Upgraded { .. } => 1,
        Due::Joined { .. } => 2,
    });
    let uid = t.uid().unwrap_or_default();
    let (reason, basis) = match due.first() {
        Some(Due::OnDemand { value }) => (
            RunReason::OnDemand,
            format!(
                "{}/{value}",
                old.run_now_acknowledged.as_deref().unwrap_or("")
            ),
        ),
        Some(Due::Upgraded { since, fingerprint }) => (
            RunReason::KubernetesUpgraded,
            format!("{since}/{fingerprint}"),
        ),
        Some(Due::Joined { since, .. }) => (RunReason::NodeJoined, since.to_string()),
        None => (
            RunReason::Schedule,
            schedule_due.map(|t| t.to_string()).unwrap_or_default(),
        ),
    };
    let name = run_name(&t.name_any(), &format!("{uid}/{}/{basis}", reason.as_str()));
    let mut causes: Vec<String> = due.iter().map(Due::describe).collect();
    if let Some(at) = schedule_due {
        causes.push(format!("the schedule at {at}"));
        st.last_schedule_time = Some(Time(at));
    }
    for cause in &due {
        match cause {
            Due::OnDemand { value } => st.run_now_acknowledged = Some(value.clone()),
            Due::Joined { .. } => {
                if let Some(n) = st.nodes.as_mut() {
                    n.pending_joins = 0;
                    n.pending_since = None;
                }
            }
            Due::Upgraded { .. } => {
                if let Some(v) = st.versions.as_mut()
                    && let Some(pending) = v.pending.take()
                {
                    v.current = pending;
                    v.pending_since = None;
                }
            }
        }
    }
    debug_assert!(due.first().is_none_or(|c| c.reason() == reason));
    st.last_run_time = Some(Time(now));
    st.last_run_reason = Some(reason);
    st.last_run_name = Some(name.clone());
    st.active.push(run_ref(&name, None, ns));
    settling_or_idle(&mut st, generation, &settle_message, now);
    d.create = Some(PlannedRun {
        name,
        reason,
        scheduled: schedule_due,
        causes,
    });
    d.status = st;
    d
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
    let hash = crate::hss::signer::hex_sha256(basis.as_bytes());
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

/// Join detection against the creation-time watermark in `old`. Pure.
fn observe_joins(
    old: Option<&ObservedNodes>,
    nodes: &[Arc<NodeView>],
    selector: &Selector,
    now: Timestamp,
    suspended: bool,
) -> ObservedNodes {
    let matching: Vec<(&str, Option<Timestamp>)> = nodes
        .iter()
        .filter(|n| selector.matches(n.labels()))
        .map(|n| {
            (
                n.name(),
                n.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .collect();
    let count = u32::try_from(matching.len()).unwrap_or(u32::MAX);
    let names_at = |at: Option<Timestamp>, extra: &[String]| -> Vec<String> {
        let mut names: BTreeSet<String> = extra.iter().cloned().collect();
        if let Some(at) = at {
            names.extend(
                matching
                    .iter()
                    .filter(|(_, c)| *c == Some(at))
                    .map(|(n, _)| n.to_string()),
            );
        }
        names.into_iter().take(MAX_NEWEST_NAMES).collect()
    };
    let Some(old) = old else {
        // First look: everything present is the baseline, nothing has joined.
        let newest = matching.iter().filter_map(|(_, c)| *c).max();
        return ObservedNodes {
            count,
            newest_creation_time: newest.map(Time),
            newest_names: names_at(newest, &[]),
            pending_joins: 0,
            pending_since: None,
        };
    };
    let watermark = old.newest_creation_time.as_ref().map(|t| t.0);
    let joined: Vec<(&str, Timestamp)> = matching
        .iter()
        .filter_map(|(name, created)| {
            let created = (*created)?;
            let new = match watermark {
                None => true,
                Some(w) => {
                    created > w || (created == w && !old.newest_names.iter().any(|n| n == name))
                }
            };
            new.then_some((*name, created))
        })
        .collect();
    let newest = joined.iter().map(|(_, c)| *c).chain(watermark).max();
    let keep_old_names = if newest == watermark {
        old.newest_names.as_slice()
    } else {
        &[]
    };
    let pending_joins = if suspended {
        0
    } else {
        old.pending_joins
            .saturating_add(u32::try_from(joined.len()).unwrap_or(u32::MAX))
    };
    ObservedNodes {
        count,
        newest_creation_time: newest.map(Time),
        newest_names: names_at(newest, keep_old_names),
        pending_joins,
        pending_since: if pending_joins == 0 {
            None
        } else {
            old.pending_since.clone().or(Some(Time(now)))
        },
    }
}

/// The API server version and distinct kubelet versions, with a fingerprint over all of them.
pub fn version_set(api_server: &str, nodes: &[Arc<NodeView>]) -> VersionSet {
    let kubelets: BTreeSet<&str> = nodes.iter().filter_map(|n| n.kubelet_version()).collect();
    let mut text = api_server.to_string();
    for k in &kubelets {
        text.push('\n');
        text.push_str(k);
    }
    VersionSet {
        api_server: Some(api_server.to_string()),
        kubelets: kubelets
            .iter()
            .take(MAX_LISTED_KUBELETS)
            .map(|s| s.to_string())
            .collect(),
        fingerprint: crate::hss::signer::hex_sha256(text.as_bytes())[..16].to_string(),
    }
}

/// Upgrade detection: a set of versions different from the acknowledged one becomes pending,
/// and its clock restarts whenever it changes again. Pure.
fn observe_versions(
    old: Option<&ObservedVersions>,
    seen: VersionSet,
    now: Timestamp,
    suspended: bool,
) -> ObservedVersions {
    match old {
        None => ObservedVersions {
            current: seen,
            pending: None,
            pending_since: None,
        },
        Some(o) if suspended || o.current.fingerprint == seen.fingerprint => ObservedVersions {
            current: seen,
            pending: None,
            pending_since: None,
        },
        Some(o)
            if o.pending
                .as_ref()
                .is_some_and(|p| p.fingerprint == seen.fingerprint) =>
        {
            o.clone()
        }
        Some(o) => ObservedVersions {
            current: o.current.clone(),
            pending: Some(seen),
            pending_since: Some(Time(now)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const CREATED: &str = "2030-01-01T00:00:00Z";

    fn trigger(spec: serde_json::Value, status: serde_json::Value) -> ClusterScanTrigger {
        trigger_with(spec, status, json!({}))
    }

    fn trigger_with(
        mut spec: serde_json::Value,
        status: serde_json::Value,
        annotations: serde_json::Value,
    ) -> ClusterScanTrigger {
        spec["template"] = json!({"spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "all_cluster"}}});
        serde_json::from_value(json!({
            "apiVersion": "hss.scanops.dev/v1alpha1",
            "kind": "ClusterScanTrigger",
            "metadata": {"name": "nightly", "namespace": "sec", "uid": "u-1", "generation": 1,
                         "creationTimestamp": CREATED, "annotations": annotations},
            "spec": spec,
            "status": status,
        }))
        .expect("valid trigger")
    }

    fn run(name: &str, phase: Phase, run_time: &str) -> RunInfo {
        RunInfo {
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            phase,
            run_time: Some(ts(run_time)),
            created: Some(ts(run_time)),
            finished_at: phase.is_final().then(|| ts(run_time)),
            deleting: false,
        }
    }

    fn node(name: &str, created: &str, labels: serde_json::Value, kubelet: &str) -> Arc<NodeView> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": created, "labels": labels},
                "status": {"nodeInfo": {"kubeletVersion": kubelet}}
            }))
            .expect("node"),
        )
    }

    fn decide_at(t: &ClusterScanTrigger, now: &str, runs: &[RunInfo]) -> Decision {
        decide(&Inputs {
            trigger: t,
            now: ts(now),
            runs,
            nodes: Some(&[]),
            api_server: Some("v1.30.0"),
        })
    }

    /// Feeds the decision's status back into the trigger, as the next reconcile would see it.
    fn with_status(t: &ClusterScanTrigger, d: &Decision) -> ClusterScanTrigger {
        let mut t = t.clone();
        t.status = Some(d.status.clone());
        t
    }

    fn condition<'a>(
        d: &'a Decision,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        d.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition set")
    }

    #[test]
    fn a_due_schedule_creates_one_deterministically_named_run() {
        let t = trigger(json!({"schedule": "*/5 * * * *"}), json!({}));
        let d = decide_at(&t, "2030-01-01T00:05:10Z", &[]);
        let run = d.create.clone().expect("a run");
        assert_eq!(run.reason, RunReason::Schedule);
        assert_eq!(run.scheduled, Some(ts("2030-01-01T00:05:00Z")));
        assert!(run.name.starts_with("nightly-") && run.name.len() == "nightly-".len() + 10);
        assert_eq!(
            d.status.last_schedule_time,
            Some(Time(ts("2030-01-01T00:05:00Z")))
        );
        assert_eq!(
            d.status.next_schedule_time,
            Some(Time(ts("2030-01-01T00:10:00Z")))
        );
        assert_eq!(d.requeue_at, Some(ts("2030-01-01T00:10:00Z")));
        assert_eq!(d.status.active.len(), 1);
        // The same decision from a stale cache names the same run (so the create is refused).
        let again = decide_at(&t, "2030-01-01T00:05:20Z", &[]);
        assert_eq!(again.create.expect("same run").name, run.name);
        // Once the status is written, nothing more for that schedule time.
        let after = decide_at(&with_status(&t, &d), "2030-01-01T00:06:00Z", &[]);
        assert!(after.create.is_none());
    }

    #[test]
    fn nothing_runs_before_the_first_schedule_time_after_creation() {
        let t = trigger(json!({"schedule": "0 * * * *"}), json!({}));
        let d = decide_at(&t, "2030-01-01T00:30:00Z", &[]);
        assert!(
            d.create.is_none(),
            "00:00 is the creation time, not after it"
        );
        assert_eq!(
            d.status.next_schedule_time,
            Some(Time(ts("2030-01-01T01:00:00Z")))
        );
    }

    #[test]
    fn downtime_makes_up_at_most_one_run_and_only_within_the_deadline() {
        // (startingDeadlineSeconds, now, runs, why)
        let cases = [
            (
                None,
                "2030-01-01T05:00:30Z",
                true,
                "no deadline: the latest missed run",
            ),
            (
                Some(60),
                "2030-01-01T05:00:30Z",
                true,
                "30 s late, within 60 s",
            ),
            (
                Some(60),
                "2030-01-01T05:02:00Z",
                false,
                "120 s late, beyond 60 s",
            ),
        ];
        for (deadline, now, runs, why) in cases {
            let mut spec = json!({"schedule": "0 * * * *"});
            if let Some(s) = deadline {
                spec["startingDeadlineSeconds"] = json!(s);
            }
            let t = trigger(
                spec,
                json!({"lastScheduleTime": "2030-01-01T01:00:00Z", "lastRunTime": "2030-01-01T01:00:00Z"}),
            );
            let d = decide_at(&t, now, &[]);
            assert_eq!(d.create.is_some(), runs, "{why}");
            if let Some(run) = d.create {
                assert_eq!(run.scheduled, Some(ts("2030-01-01T05:00:00Z")), "{why}");
            } else {
                assert!(
                    d.notes.iter().any(|n| n.reason == "MissedSchedule"),
                    "{why}"
                );
            }
            assert_eq!(
                d.status.last_schedule_time,
                Some(Time(ts("2030-01-01T05:00:00Z"))),
                "{why}: the missed times are handled"
            );
        }
    }

    #[test]
    fn forbid_skips_a_scheduled_run_while_one_is_unfinished_and_says_so() {
        let t = trigger(
            json!({"schedule": "* * * * *", "cooldown": "0s"}),
            json!({}),
        );
        let runs = [run(
            "nightly-aaaaaaaaaa",
            Phase::Running,
            "2030-01-01T00:01:00Z",
        )];
        let d = decide_at(&t, "2030-01-01T00:02:00Z", &runs);
        assert!(d.create.is_none());
        assert_eq!(
            d.status.last_schedule_time,
            Some(Time(ts("2030-01-01T00:02:00Z")))
        );
        assert!(
            d.notes.iter().any(
                |n| n.reason == "SkippedConcurrent" && n.message.contains("nightly-aaaaaaaaaa")
            ),
            "{:?}",
            d.notes
        );
        // Allow overlaps.
        let t = trigger(
            json!({"schedule": "* * * * *", "cooldown": "0s", "concurrencyPolicy": "Allow"}),
            json!({}),
        );
        assert!(
            decide_at(&t, "2030-01-01T00:02:00Z", &runs)
                .create
                .is_some()
        );
    }

    #[test]
    fn cooldown_skips_schedules_but_defers_other_causes() {
        let status = json!({"lastRunTime": "2030-01-01T00:00:30Z"});
        let t = trigger_with(
            json!({"schedule": "* * * * *"}),
            status,
            json!({RUN_NOW_ANNOTATION: "1"}),
        );
        let d = decide_at(&t, "2030-01-01T00:01:00Z", &[]);
        assert!(d.create.is_none());
        assert!(d.notes.iter().any(|n| n.reason == "SkippedCooldown"));
        assert!(d.notes.iter().any(|n| n.reason == "RunDeferred"));
        let pending = condition(&d, RUN_PENDING);
        assert_eq!(
            (pending.status.as_str(), pending.reason.as_str()),
            ("True", "Cooldown")
        );
        assert_eq!(d.status.run_now_acknowledged, None, "still owed");
        assert_eq!(
            d.requeue_at,
            Some(ts("2030-01-01T00:02:00Z")),
            "next schedule"
        );
        // The deferral is announced once.
        let again = decide_at(&with_status(&t, &d), "2030-01-01T00:05:00Z", &[]);
        assert!(!again.notes.iter().any(|n| n.reason == "RunDeferred"));
        // After the cooldown the request runs.
        let d = decide_at(&with_status(&t, &d), "2030-01-01T00:10:30Z", &[]);
        let run = d.create.expect("run after cooldown");
        assert_eq!(run.reason, RunReason::OnDemand);
        assert_eq!(d.status.run_now_acknowledged.as_deref(), Some("1"));
    }

    #[test]
    fn run_now_runs_once_per_value_even_when_suspended() {
        let t = trigger_with(
            json!({"suspend": true, "schedule": "* * * * *"}),
            json!({}),
            json!({RUN_NOW_ANNOTATION: "a"}),
        );
        let d = decide_at(&t, "2030-01-01T00:10:00Z", &[]);
        let run = d.create.clone().expect("a run");
        assert_eq!(run.reason, RunReason::OnDemand);
        assert!(
            run.scheduled.is_none(),
            "suspended: the schedule is not due"
        );
        assert_eq!(d.status.next_schedule_time, None);
        assert_eq!(d.status.run_now_acknowledged.as_deref(), Some("a"));
        let same = decide_at(&with_status(&t, &d), "2030-02-01T00:00:00Z", &[]);
        assert!(same.create.is_none(), "same value again: nothing");
        // An empty value is no request.
        let t = trigger_with(json!({}), json!({}), json!({RUN_NOW_ANNOTATION: ""}));
        assert!(decide_at(&t, "2030-01-01T00:10:00Z", &[]).create.is_none());
    }

    #[test]
    fn history_keeps_the_newest_finished_runs_within_the_limits() {
        let t = trigger(
            json!({"successfulRunsHistoryLimit": 2, "failedRunsHistoryLimit": 1}),
            json!({}),
        );
        let runs = [
            run("r1", Phase::Succeeded, "2030-01-01T00:01:00Z"),
            run("r2", Phase::Failed, "2030-01-01T00:02:00Z"),
            run("r3", Phase::Succeeded, "2030-01-01T00:03:00Z"),
            run("r4", Phase::PartiallyFailed, "2030-01-01T00:04:00Z"),
            run("r5", Phase::Succeeded, "2030-01-01T00:05:00Z"),
            run("r6", Phase::Running, "2030-01-01T00:06:00Z"),
        ];
        let d = decide_at(&t, "2030-01-01T00:07:00Z", &runs);
        assert_eq!(d.delete, vec!["r1".to_string(), "r2".to_string()]);
        let active: Vec<_> = d
            .status
            .active
            .iter()
            .filter_map(|r| r.name.clone())
            .collect();
        assert_eq!(active, vec!["r6".to_string()]);
        assert_eq!(
            d.status.last_successful_time,
            Some(Time(ts("2030-01-01T00:05:00Z")))
        );
    }

    #[test]
    fn invalid_schedule_or_zone_sets_ready_false_with_a_warning_and_never_runs() {
        // (spec, reason, why)
        let cases = [
            (json!({"schedule": "every day"}), "InvalidSchedule", "words"),
            (
                json!({"schedule": "0 0 31 2 *"}),
                "InvalidSchedule",
                "never fires",
            ),
            (
                json!({"schedule": "0 2 * * *", "timeZone": "Moon/Base"}),
                "InvalidTimeZone",
                "unknown zone",
            ),
            (
                json!({"cooldown": "-1m"}),
                "InvalidCooldown",
                "negative cooldown",
            ),
            (
                json!({"on": {"nodeJoined": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}}),
                "InvalidSelector",
                "bad operator",
            ),
        ];
        for (spec, reason, why) in cases {
            let t = trigger_with(spec, json!({}), json!({RUN_NOW_ANNOTATION: "x"}));
            let d = decide_at(&t, "2030-01-01T00:10:00Z", &[]);
            assert!(d.create.is_none(), "{why}");
            let ready = condition(&d, READY);
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", reason),
                "{why}"
            );
            assert!(
                d.notes.iter().any(|n| n.warning && n.reason == reason),
                "{why}: {:?}",
                d.notes
            );
            let again = decide_at(&with_status(&t, &d), "2030-01-01T00:11:00Z", &[]);
            assert!(again.notes.is_empty(), "{why}: warned once");
        }
    }

    fn join_trigger(status: serde_json::Value) -> ClusterScanTrigger {
        trigger(
            json!({"on": {"nodeJoined": {"selector": {"matchLabels": {"pool": "a"}}, "settleSeconds": 60}}}),
            status,
        )
    }

    fn decide_nodes(t: &ClusterScanTrigger, now: &str, nodes: &[Arc<NodeView>]) -> Decision {
        decide(&Inputs {
            trigger: t,
            now: ts(now),
            runs: &[],
            nodes: Some(nodes),
            api_server: Some("v1.30.0"),
        })
    }

    #[test]
    fn a_burst_of_joins_gives_one_run_after_settling_and_existing_nodes_are_the_baseline() {
        let pool = json!({"pool": "a"});
        let mut nodes = vec![node("old", "2029-12-01T00:00:00Z", pool.clone(), "v1.30.0")];
        let t = join_trigger(json!({}));
        let d = decide_nodes(&t, "2030-01-01T00:00:00Z", &nodes);
        assert!(d.create.is_none(), "existing Nodes have not joined");
        let t = with_status(&t, &d);
        // 50 Nodes join in the same second, plus one outside the selector.
        for i in 0..50 {
            nodes.push(node(
                &format!("n{i}"),
                "2030-01-01T00:00:05Z",
                pool.clone(),
                "",
            ));
        }
        nodes.push(node(
            "other",
            "2030-01-01T00:00:05Z",
            json!({"pool": "b"}),
            "",
        ));
        let d = decide_nodes(&t, "2030-01-01T00:00:06Z", &nodes[..20]);
        let t = with_status(&t, &d);
        let d = decide_nodes(&t, "2030-01-01T00:00:07Z", &nodes);
        let observed = d.status.nodes.clone().expect("nodes");
        assert_eq!(observed.pending_joins, 50);
        assert_eq!(observed.count, 51);
        assert_eq!(
            observed.pending_since,
            Some(Time(ts("2030-01-01T00:00:06Z")))
        );
        assert!(d.create.is_none(), "settling");
        assert_eq!(condition(&d, RUN_PENDING).reason, "Settling");
        assert_eq!(d.requeue_at, Some(ts("2030-01-01T00:01:06Z")));
        let t = with_status(&t, &d);
        let d = decide_nodes(&t, "2030-01-01T00:01:06Z", &nodes);
        let run = d.create.clone().expect("one run");
        assert_eq!(run.reason, RunReason::NodeJoined);
        assert_eq!(d.status.nodes.as_ref().expect("nodes").pending_joins, 0);
        let t = with_status(&t, &d);
        assert!(
            decide_nodes(&t, "2030-01-01T00:30:00Z", &nodes)
                .create
                .is_none()
        );
    }

    #[test]
    fn a_node_joining_during_the_cooldown_waits_for_it() {
        let pool = json!({"pool": "a"});
        let nodes = vec![
            node("n1", "2030-01-01T00:00:00Z", pool.clone(), ""),
            node("n2", "2030-01-01T00:02:00Z", pool.clone(), ""),
        ];
        let t = join_trigger(json!({
            "lastRunTime": "2030-01-01T00:01:00Z",
            "nodes": {"count": 1, "newestCreationTime": "2030-01-01T00:00:00Z", "newestNames": ["n1"]}
        }));
        let d = decide_nodes(&t, "2030-01-01T00:02:00Z", &nodes);
        let t = with_status(&t, &d);
        let d = decide_nodes(&t, "2030-01-01T00:03:00Z", &nodes);
        assert!(d.create.is_none());
        assert_eq!(condition(&d, RUN_PENDING).reason, "Cooldown");
        assert_eq!(d.requeue_at, Some(ts("2030-01-01T00:11:00Z")));
        let t = with_status(&t, &d);
        let d = decide_nodes(&t, "2030-01-01T00:11:00Z", &nodes);
        assert_eq!(d.create.expect("run").reason, RunReason::NodeJoined);
    }

    #[test]
    fn an_upgrade_runs_once_after_the_version_set_has_settled() {
        let t = trigger(
            json!({"on": {"kubernetesUpgraded": {"settleSeconds": 120}}}),
            json!({}),
        );
        let at = |v: &[&str]| -> Vec<Arc<NodeView>> {
            v.iter()
                .enumerate()
                .map(|(i, k)| node(&format!("n{i}"), CREATED, json!({}), k))
                .collect()
        };
        let d = decide_nodes(&t, "2030-01-01T01:00:00Z", &at(&["v1.29.0", "v1.29.0"]));
        assert!(d.create.is_none(), "baseline");
        let t = with_status(&t, &d);
        // Rolling: one Node upgraded, then the other a minute later.
        let d = decide_nodes(&t, "2030-01-01T01:01:00Z", &at(&["v1.30.0", "v1.29.0"]));
        assert!(d.create.is_none());
        let t = with_status(&t, &d);
        let d = decide_nodes(&t, "2030-01-01T01:02:00Z", &at(&["v1.30.0", "v1.30.0"]));
        let t = with_status(&t, &d);
        let d = decide_nodes(&t, "2030-01-01T01:03:59Z", &at(&["v1.30.0", "v1.30.0"]));
        assert!(d.create.is_none(), "not settled for 120 s yet");
        let t = with_status(&t, &d);
        let d = decide_nodes(&t, "2030-01-01T01:04:00Z", &at(&["v1.30.0", "v1.30.0"]));
        assert_eq!(
            d.create.clone().expect("run").reason,
            RunReason::KubernetesUpgraded
        );
        let v = d.status.versions.clone().expect("versions");
        assert_eq!(v.current.kubelets, vec!["v1.30.0".to_string()]);
        assert!(v.pending.is_none());
        let t = with_status(&t, &d);
        assert!(
            decide_nodes(&t, "2030-01-02T00:00:00Z", &at(&["v1.30.0", "v1.30.0"]))
                .create
                .is_none()
        );
        // An API server upgrade counts too.
        let d = decide(&Inputs {
            trigger: &t,
            now: ts("2030-01-02T00:00:00Z"),
            runs: &[],
            nodes: Some(&at(&["v1.30.0"])),
            api_server: Some("v1.31.0"),
        });
        assert!(d.status.versions.expect("versions").pending.is_some());
    }

    #[test]
    fn one_run_covers_every_cause_due_at_once() {
        let t = trigger_with(
            json!({"schedule": "* * * * *"}),
            json!({}),
            json!({RUN_NOW_ANNOTATION: "go"}),
        );
        let d = decide_at(&t, "2030-01-01T00:01:00Z", &[]);
        let run = d.create.expect("run");
        assert_eq!(run.reason, RunReason::OnDemand);
        assert_eq!(run.causes.len(), 2);
        assert_eq!(d.status.run_now_acknowledged.as_deref(), Some("go"));
        assert_eq!(
            d.status.last_schedule_time,
            Some(Time(ts("2030-01-01T00:01:00Z")))
        );
    }

    #[test]
    fn cooldowns_parse_like_the_crd_admits_them() {
        // (text, seconds)
        let cases = [
            ("0s", Some(0)),
            ("10m", Some(600)),
            ("1h30m", Some(5400)),
            ("1h5s", Some(3605)),
            ("90s", Some(90)),
            ("", None),
            ("10", None),
            ("-1m", None),
            ("1m1h", None),
            ("1.5h", None),
            ("5d", None),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_cooldown(text).map(|d| d.as_secs()), secs, "{text:?}");
        }
    }
}
