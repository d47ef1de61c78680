//! The steps of [`decide`](super::decide), in the order it takes them. Each reads the trigger,
//! the status it started from and the clock, and updates the draft: the next status, the
//! notes, the runs to delete, the run to create, when to look again. Pure.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{
    Decision, Inputs, Invalid, Note, Plan, PlannedRun, READY, RUN_PENDING, RunInfo, describe,
    detect::{NodeDetails, observe_joins, observe_versions, redact, version_set},
    max_time, run_name, run_ref, settling_or_idle,
};
use crate::controller_runtime::conditions::set as set_condition;
use crate::crd::{
    ClusterScanTrigger, ClusterScanTriggerStatus, ConcurrencyPolicy, Phase, RunReason,
    cluster_scan_trigger::RUN_NOW_ANNOTATION,
};
use crate::triggers::nodes::NodeView;

/// Something that asks for a run and may wait (everything but the schedule, whose missed
/// times are skipped rather than delayed).
#[derive(Debug, Clone)]
pub(super) enum Due {
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

/// Why something due cannot start now.
pub(super) struct Wait {
    /// `RunPending` reason.
    reason: &'static str,
    /// Event reason for a skipped scheduled run.
    skipped: &'static str,
    why: String,
}

/// A decision being made: the trigger, the status it started from (`old`) and the one being
/// built (`st`).
pub(super) struct Draft<'a> {
    t: &'a ClusterScanTrigger,
    now: Timestamp,
    generation: Option<i64>,
    old: ClusterScanTriggerStatus,
    st: ClusterScanTriggerStatus,
    details: NodeDetails,
    d: Decision,
}

impl<'a> Draft<'a> {
    pub(super) fn new(inp: &Inputs<'a>) -> Self {
        let t = inp.trigger;
        let old = t.status.clone().unwrap_or_default();
        let mut st = old.clone();
        st.observed_generation = t.metadata.generation;
        Draft {
            t,
            now: inp.now,
            generation: t.metadata.generation,
            old,
            st,
            details: inp.node_details,
            d: Decision {
                status: ClusterScanTriggerStatus::default(),
                create: None,
                delete: Vec::new(),
                notes: Vec::new(),
                requeue_at: None,
            },
        }
    }

    /// The decision, with the status built.
    /// The decision, with the status built: node names and versions only where shown,
    /// whatever the status started from.
    pub(super) fn finish(mut self) -> Decision {
        redact(&mut self.st, self.details);
        self.d.status = self.st;
        self.d
    }

    /// Look again at `at` at the latest.
    fn requeue(&mut self, at: Timestamp) {
        self.d.requeue_at = Some(self.d.requeue_at.map_or(at, |r| r.min(at)));
    }

    fn condition(&mut self, type_: &str, value: bool, reason: &str, message: &str) -> bool {
        set_condition(
            &mut self.st.conditions,
            self.generation,
            type_,
            value,
            reason,
            message,
            self.now,
        )
    }

    /// The run history: what is still running, what succeeded last, what to prune. Returns
    /// when the last run started.
    pub(super) fn history(&mut self, runs: &[RunInfo]) -> Option<Timestamp> {
        let t = self.t;
        let ns = t.namespace();
        let mut runs: Vec<&RunInfo> = runs.iter().collect();
        runs.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        self.st.active = runs
            .iter()
            .filter(|r| !r.phase.is_final() && !r.deleting)
            .map(|r| run_ref(&r.name, r.uid.clone(), ns.clone()))
            .collect();
        let success = runs
            .iter()
            .filter(|r| r.phase == Phase::Succeeded)
            .filter_map(|r| r.finished_at.or(r.run_time))
            .max();
        self.st.last_successful_time =
            max_time(self.old.last_successful_time.clone(), success.map(Time));
        // The latest findings read, kept when that run is pruned.
        self.st.last_findings = runs
            .iter()
            .filter_map(|r| r.findings.clone())
            .chain(self.old.last_findings.clone())
            .max_by(|a, b| a.read_at.0.cmp(&b.read_at.0).then(a.run.cmp(&b.run)));
        let prune = |keep: u32, pred: &dyn Fn(&RunInfo) -> bool| -> Vec<String> {
            let finished: Vec<&&RunInfo> = runs.iter().filter(|r| !r.deleting && pred(r)).collect();
            let excess = finished.len().saturating_sub(keep as usize);
            finished[..excess].iter().map(|r| r.name.clone()).collect()
        };
        self.d.delete = prune(t.spec.successful_runs_history_limit, &|r| {
            r.phase == Phase::Succeeded
        });
        self.d
            .delete
            .extend(prune(t.spec.failed_runs_history_limit, &|r| {
                matches!(r.phase, Phase::Failed | Phase::PartiallyFailed)
            }));
        // The newest run is the last run, even when the status write that said so was lost
        // (a crash right after creating it, then a restart whose cache already has the run).
        if let Some((r, at)) = runs
            .iter()
            .filter_map(|r| r.run_time.map(|at| (r, at)))
            .max_by_key(|(r, at)| (*at, r.name.clone()))
            && self.st.last_run_time.as_ref().is_none_or(|t| t.0 < at)
        {
            self.st.last_run_time = Some(Time(at));
            self.st.last_run_name = Some(r.name.clone());
            if r.reason.is_some() {
                self.st.last_run_reason = r.reason;
            }
        }
        runs.iter()
            .filter_map(|r| r.run_time)
            .chain(self.old.last_run_time.as_ref().map(|t| t.0))
            .max()
    }

    /// An invalid spec: `Ready=False` with the reason (a Warning when it is news), no runs.
    pub(super) fn invalid(mut self, invalid: Invalid) -> Decision {
        if self.condition(READY, false, invalid.reason, &invalid.message) {
            self.d
                .notes
                .push(Note::warning(invalid.reason, invalid.message));
        }
        self.st.next_schedule_time = None;
        self.condition(
            RUN_PENDING,
            false,
            "Invalid",
            "no runs until the spec is fixed",
        );
        self.finish()
    }

    /// `Ready`: valid, or valid with the Node-driven triggers paused for lack of Nodes.
    pub(super) fn readiness(&mut self, plan: &Plan, have_nodes: bool) {
        let needs_nodes = plan.node_joined.is_some() || plan.upgraded.is_some();
        if needs_nodes && !have_nodes {
            self.condition(
                READY,
                false,
                "NodesUnavailable",
                "the operator cannot list and watch Nodes (RBAC?); on.nodeJoined and on.kubernetesUpgraded are paused, schedule and run-now work",
            );
        } else {
            let description = describe(self.t, plan);
            self.condition(READY, true, "Valid", &description);
        }
    }

    /// The schedule: the latest schedule time not handled yet, if it is due (older missed
    /// times are dropped; one beyond `startingDeadlineSeconds` is skipped with a Warning).
    pub(super) fn schedule(&mut self, plan: &Plan) -> Option<Timestamp> {
        let (t, now) = (self.t, self.now);
        let suspended = t.spec.suspend;
        let mut due = None;
        self.st.next_schedule_time = None;
        let schedule = plan.schedule.as_ref()?;
        let baseline = max_time(
            self.old.last_schedule_time.clone(),
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
                self.st.last_schedule_time = Some(Time(latest));
            } else if deadline.is_some_and(|dl| late > dl) {
                self.st.last_schedule_time = Some(Time(latest));
                self.d.notes.push(Note::warning(
                    "MissedSchedule",
                    format!(
                        "skipped the run scheduled for {latest}: {}s late, beyond startingDeadlineSeconds",
                        late.as_secs()
                    ),
                ));
            } else {
                due = Some(latest);
            }
        }
        if !suspended && let Some(next) = schedule.next_after(now) {
            self.st.next_schedule_time = Some(Time(next));
            self.requeue(next);
        }
        due
    }

    /// A run-now request: a new value of the annotation.
    pub(super) fn run_now(&self) -> Vec<Due> {
        self.t
            .annotations()
            .get(RUN_NOW_ANNOTATION)
            .filter(|v| {
                !v.is_empty() && self.old.run_now_acknowledged.as_deref() != Some(v.as_str())
            })
            .map(|value| Due::OnDemand {
                value: value.clone(),
            })
            .into_iter()
            .collect()
    }

    /// Node joins: due once the newest join has settled, else settling until then.
    pub(super) fn node_joins(
        &mut self,
        plan: &Plan,
        nodes: Option<&[Arc<NodeView>]>,
        due: &mut Vec<Due>,
        settling: &mut Vec<(Timestamp, String)>,
    ) {
        let now = self.now;
        match (&plan.node_joined, nodes) {
            (None, _) => self.st.nodes = None,
            (Some(_), None) => {}
            (Some((selector, settle)), Some(nodes)) => {
                let observed = observe_joins(
                    self.old.nodes.as_ref(),
                    nodes,
                    selector,
                    now,
                    self.t.spec.suspend,
                    self.details,
                );
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
                self.st.nodes = Some(observed);
            }
        }
    }

    /// Kubernetes versions: a changed version set is due once it has stayed unchanged for the
    /// settle time. Unknown versions keep what status says.
    pub(super) fn versions(
        &mut self,
        plan: &Plan,
        nodes: Option<&[Arc<NodeView>]>,
        api_server: Option<&str>,
        due: &mut Vec<Due>,
        settling: &mut Vec<(Timestamp, String)>,
    ) {
        let now = self.now;
        match (plan.upgraded, nodes, api_server) {
            (None, _, _) => self.st.versions = None,
            (Some(settle), Some(nodes), Some(api_server)) => {
                let seen = version_set(api_server, nodes, self.details);
                let observed =
                    observe_versions(self.old.versions.as_ref(), seen, now, self.t.spec.suspend);
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
                self.st.versions = Some(observed);
            }
            (Some(_), _, _) => {}
        }
    }

    /// What settles, as one message; look again when the first settles.
    pub(super) fn settling(&mut self, settling: &[(Timestamp, String)]) -> String {
        if let Some(at) = settling.iter().map(|(at, _)| *at).min() {
            self.requeue(at);
        }
        settling
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Nothing due: `RunPending` says whether something settles.
    pub(super) fn idle(&mut self, settle_message: &str) {
        settling_or_idle(&mut self.st, self.generation, settle_message, self.now);
    }

    /// Whether what is due must wait: a run still active under `Forbid`, or the cooldown since
    /// the last run.
    pub(super) fn must_wait(&mut self, plan: &Plan, last_run: Option<Timestamp>) -> Option<Wait> {
        let (t, now) = (self.t, self.now);
        let busy =
            t.spec.concurrency_policy == ConcurrencyPolicy::Forbid && !self.st.active.is_empty();
        if busy {
            let names: Vec<&str> = self
                .st
                .active
                .iter()
                .filter_map(|r| r.name.as_deref())
                .collect();
            return Some(Wait {
                reason: "ActiveRun",
                skipped: "SkippedConcurrent",
                why: format!(
                    "run {} has not finished (concurrencyPolicy Forbid)",
                    names.join(", ")
                ),
            });
        }
        let until = last_run
            .and_then(|l| l.saturating_add(plan.cooldown).ok())
            .filter(|until| now < *until)?;
        self.requeue(until);
        Some(Wait {
            reason: "Cooldown",
            skipped: "SkippedCooldown",
            why: format!("cooldown {} runs until {until}", t.spec.cooldown),
        })
    }

    /// Something due waits: a scheduled time is skipped (with a Normal Event); other causes
    /// stay due, with `RunPending=True` saying why (a Normal Event when it is news).
    pub(super) fn defer(
        &mut self,
        wait: Wait,
        scheduled: Option<Timestamp>,
        due: &[Due],
        settle_message: &str,
    ) {
        if let Some(at) = scheduled {
            self.st.last_schedule_time = Some(Time(at));
            self.d.notes.push(Note::normal(
                wait.skipped,
                format!("skipped the run scheduled for {at}: {}", wait.why),
            ));
        }
        if due.is_empty() {
            self.idle(settle_message);
        } else {
            let what: Vec<String> = due.iter().map(Due::describe).collect();
            let message = format!("{} waits: {}", what.join(" and "), wait.why);
            if self.condition(RUN_PENDING, true, wait.reason, &message) {
                self.d.notes.push(Note::normal("RunDeferred", message));
            }
        }
    }

    /// One run covers everything due: named after the first cause (run-now, then upgrade,
    /// then joins, then the schedule), every cause acknowledged in status.
    pub(super) fn start(
        &mut self,
        mut due: Vec<Due>,
        scheduled: Option<Timestamp>,
        settle_message: &str,
    ) {
        let t = self.t;
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
                    self.old.run_now_acknowledged.as_deref().unwrap_or("")
                ),
            ),
            Some(Due::Upgraded { since, fingerprint }) => (
                RunReason::KubernetesUpgraded,
                format!("{since}/{fingerprint}"),
            ),
            Some(Due::Joined { since, .. }) => (RunReason::NodeJoined, since.to_string()),
            None => (
                RunReason::Schedule,
                scheduled.map(|t| t.to_string()).unwrap_or_default(),
            ),
        };
        let name = run_name(&t.name_any(), &format!("{uid}/{}/{basis}", reason.as_str()));
        let mut causes: Vec<String> = due.iter().map(Due::describe).collect();
        if let Some(at) = scheduled {
            causes.push(format!("the schedule at {at}"));
            self.st.last_schedule_time = Some(Time(at));
        }
        for cause in &due {
            match cause {
                Due::OnDemand { value } => self.st.run_now_acknowledged = Some(value.clone()),
                Due::Joined { .. } => {
                    if let Some(n) = self.st.nodes.as_mut() {
                        n.pending_joins = 0;
                        n.pending_since = None;
                    }
                }
                Due::Upgraded { .. } => {
                    if let Some(v) = self.st.versions.as_mut()
                        && let Some(pending) = v.pending.take()
                    {
                        v.current = pending;
                        v.pending_since = None;
                    }
                }
            }
        }
        debug_assert!(due.first().is_none_or(|c| c.reason() == reason));
        self.st.last_run_time = Some(Time(self.now));
        self.st.last_run_reason = Some(reason);
        self.st.last_run_name = Some(name.clone());
        self.st.active.push(run_ref(&name, None, t.namespace()));
        self.idle(settle_message);
        self.d.create = Some(PlannedRun {
            name,
            reason,
            scheduled,
            causes,
        });
    }
}
