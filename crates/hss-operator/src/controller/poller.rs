//! The shared HSS poll: one ListTasks call per (credentials, project) and task type per
//! interval serves every tracked object, however many there are.
//!
//! HSS allows 5 calls per minute per user and API, so polling per object is impossible. The
//! reconciler registers each submitted task here ([`Poller::track`]); every interval the poller
//! lists the tasks of each group created since the oldest unfinished one (paged at 200), keeps
//! the latest view of each tracked task, and triggers a reconcile for every object whose task
//! changed. The reconciler reads that view ([`Poller::latest`]) and writes status; the poller
//! never writes to Kubernetes itself.
//!
//! With nothing unfinished to follow the poller makes no calls at all.
//!
//! # Tasks the ordinary poll does not show
//! A tracked, unfinished task can be missing from the listing: pushed past the pages read by
//! other tasks created in the window, or no longer listed by HSS at all. After
//! [`MISSED_ROUNDS`] rounds without it on the pages read, the poller asks for it by id (ListTasks with
//! `task_id`, one call, at most [`LOOKUPS_PER_ROUND`] per round, so the budget bounds the
//! cost). Found, it is followed as usual. Not found, it is marked absent; once it has been
//! absent for `lost_after` (the `--task-lost-after` flag) the poller reports it lost
//! ([`Poller::lost`]) and the reconciler ends the object `Failed` (`TaskNotListed`) with an
//! Event, because its results can no longer be read. Lookups by id go on every
//! [`MISSED_ROUNDS`] rounds until then, so a task HSS lists again is picked up.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;

use crate::crd::ClusterScanTask;
use hss_client::{
    Outcome,
    client::HssClient,
    limits::MAX_PAGE,
    model::{ListTasksRequest, TaskInfo, TaskStatus, TaskType},
    resolve::{self, CLOCK_SKEW},
};

/// Poll rounds without a task on the pages read before it is looked up by id.
pub const MISSED_ROUNDS: u32 = 3;
/// Lookups by id in one round (each is one ListTasks call from the budget).
pub const LOOKUPS_PER_ROUND: usize = 2;

/// One followed task.
#[derive(Debug, Clone)]
struct Tracked {
    object: ObjectRef<ClusterScanTask>,
    task_type: TaskType,
    created_ms: i64,
    latest: Option<TaskInfo>,
    /// Complete rounds since the task was last listed (reset by a lookup by id).
    missed: u32,
    /// Since when lookups by id have not found it.
    absent_since: Option<jiff::Timestamp>,
}

struct Group {
    client: HssClient,
    tasks: HashMap<String, Tracked>,
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    /// Which group a task id lives in.
    index: HashMap<String, String>,
    last_success: Option<jiff::Timestamp>,
}

/// Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Poller {
    state: Arc<Mutex<State>>,
    trigger: mpsc::UnboundedSender<ObjectRef<ClusterScanTask>>,
    interval: Duration,
    lost_after: Duration,
}

/// What one poll round did (for tests and metrics).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub calls: u32,
    pub changed: u32,
    pub errors: u32,
    /// Lookups by id of tasks the listing did not show.
    pub lookups: u32,
}

fn group_key(client: &HssClient) -> String {
    let config = client.config();
    format!(
        "{}|{}|{}|{}",
        client.budget_key(hss_client::Api::ListTasks).identity,
        config.endpoint,
        config.project_id,
        config.enterprise_project_id.as_deref().unwrap_or("")
    )
}

fn finished(t: &Tracked) -> bool {
    t.latest
        .as_ref()
        .is_some_and(|l| l.task_status == TaskStatus::Finished)
}

fn changed(old: Option<&TaskInfo>, new: &TaskInfo) -> bool {
    let Some(old) = old else { return true };
    old.task_status != new.task_status
        || old.cluster_scan_info != new.cluster_scan_info
        || old.iac_scan_info != new.iac_scan_info
        || old.end_time != new.end_time
}

impl Poller {
    /// A poller and the stream of objects whose task changed (for `Controller::reconcile_on`).
    /// A task that lookups by id have not found for `lost_after` is reported lost.
    pub fn new(
        interval: Duration,
        lost_after: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<ObjectRef<ClusterScanTask>>) {
        let (trigger, rx) = mpsc::unbounded();
        (
            Self {
                state: Arc::default(),
                trigger,
                interval,
                lost_after,
            },
            rx,
        )
    }

    /// A sender that has objects reconciled soon (the fair queue's wake-ups).
    pub fn waker(&self) -> mpsc::UnboundedSender<ObjectRef<ClusterScanTask>> {
        self.trigger.clone()
    }

    /// Has `object` reconciled soon (through the same route as a changed task).
    pub fn wake(&self, object: ObjectRef<ClusterScanTask>) {
        let _ = self.trigger.unbounded_send(object);
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `task_id` (idempotent).
    pub fn track(
        &self,
        client: &HssClient,
        task_id: &str,
        task_type: TaskType,
        created_ms: i64,
        object: ObjectRef<ClusterScanTask>,
    ) {
        let key = group_key(client);
        let mut state = self.lock();
        state.index.insert(task_id.to_string(), key.clone());
        let group = state.groups.entry(key).or_insert_with(|| Group {
            client: client.clone(),
            tasks: HashMap::new(),
        });
        group
            .tasks
            .entry(task_id.to_string())
            .and_modify(|t| t.object = object.clone())
            .or_insert(Tracked {
                object,
                task_type,
                created_ms,
                latest: None,
                missed: 0,
                absent_since: None,
            });
    }

    /// Stops following `task_id`.
    pub fn untrack(&self, task_id: &str) {
        let mut state = self.lock();
        if let Some(key) = state.index.remove(task_id)
            && let Some(group) = state.groups.get_mut(&key)
        {
            group.tasks.remove(task_id);
            if group.tasks.is_empty() {
                state.groups.remove(&key);
            }
        }
    }

    /// Forgets what was seen of `task_id`, so it is polled again (after RetryTask).
    pub fn reset(&self, task_id: &str) {
        let mut state = self.lock();
        if let Some(key) = state.index.get(task_id).cloned()
            && let Some(t) = state
                .groups
                .get_mut(&key)
                .and_then(|g| g.tasks.get_mut(task_id))
        {
            t.latest = None;
        }
    }

    /// The latest view of `task_id`, if a poll has seen it.
    pub fn latest(&self, task_id: &str) -> Option<TaskInfo> {
        let state = self.lock();
        let key = state.index.get(task_id)?;
        state.groups.get(key)?.tasks.get(task_id)?.latest.clone()
    }

    /// Since when `task_id` has been absent, once it has been so for `lost_after`: HSS does not
    /// list it any more, even asked by id.
    pub fn lost(&self, task_id: &str) -> Option<jiff::Timestamp> {
        let state = self.lock();
        let key = state.index.get(task_id)?;
        let since = state.groups.get(key)?.tasks.get(task_id)?.absent_since?;
        let absent = jiff::Timestamp::now().duration_since(since);
        (absent
            >= jiff::SignedDuration::try_from(self.lost_after).unwrap_or(jiff::SignedDuration::MAX))
        .then_some(since)
    }

    /// How many tasks are followed.
    pub fn tracked(&self) -> usize {
        self.lock().index.len()
    }

    /// When a poll last succeeded.
    pub fn last_success(&self) -> Option<jiff::Timestamp> {
        self.lock().last_success
    }

    /// One round: per group and task type with unfinished tasks, one paged ListTasks.
    pub async fn poll_once(&self) -> Round {
        // Work out what to ask without holding the lock across calls.
        let work: Vec<(String, HssClient, TaskType, i64, usize)> = {
            let state = self.lock();
            let mut work = Vec::new();
            for (key, group) in &state.groups {
                let mut per_type: HashMap<TaskType, (i64, usize)> = HashMap::new();
                for t in group.tasks.values() {
                    if !finished(t) {
                        let e = per_type.entry(t.task_type).or_insert((i64::MAX, 0));
                        e.0 = e.0.min(t.created_ms);
                        e.1 += 1;
                    }
                }
                for (task_type, (oldest, count)) in per_type {
                    work.push((key.clone(), group.client.clone(), task_type, oldest, count));
                }
            }
            work
        };
        let rounds = futures::future::join_all(work.into_iter().map(
            |(key, client, task_type, oldest, count)| async move {
                let mut filter = ListTasksRequest::for_type(task_type);
                filter.start_create_time = Some(oldest - CLOCK_SKEW.as_millis() as i64);
                // Finished tasks created in the window are listed too; allow for them.
                let pages = (count as u32).div_ceil(MAX_PAGE) + 2;
                let result = client.list_all_tasks(&filter, pages).await;
                (key, task_type, result, pages)
            },
        ))
        .await;

        let mut round = Round::default();
        let mut triggers = Vec::new();
        {
            let mut state = self.lock();
            for (key, task_type, result, _pages) in rounds {
                round.calls += 1;
                match result {
                    Ok((tasks, _complete)) => {
                        state.last_success = Some(jiff::Timestamp::now());
                        let Some(group) = state.groups.get_mut(&key) else {
                            continue;
                        };
                        let listed: HashSet<String> =
                            tasks.iter().map(|t| t.task_id.clone()).collect();
                        for task in tasks {
                            if let Some(t) = group.tasks.get_mut(&task.task_id) {
                                t.missed = 0;
                                t.absent_since = None;
                                if changed(t.latest.as_ref(), &task) {
                                    t.latest = Some(task);
                                    triggers.push(t.object.clone());
                                    round.changed += 1;
                                }
                            }
                        }
                        // Missing from the pages read: pushed past them (the listing was not
                        // complete) or not listed at all. Either way, ask for it by id soon.
                        for (id, t) in group.tasks.iter_mut() {
                            if t.task_type == task_type && !finished(t) && !listed.contains(id) {
                                t.missed += 1;
                            }
                        }
                    }
                    Err(err) => {
                        round.errors += 1;
                        let level_warn = err.outcome() != Outcome::Retryable;
                        if level_warn {
                            tracing::warn!(category = err.category(), error = %err, "shared ListTasks poll failed");
                        } else {
                            tracing::debug!(category = err.category(), error = %err, "shared ListTasks poll deferred");
                        }
                    }
                }
            }
        }
        self.look_up_missed(&mut round, &mut triggers).await;
        for object in triggers {
            let _ = self.trigger.unbounded_send(object);
        }
        round
    }

    /// Asks by id for the tasks the listing has not shown for [`MISSED_ROUNDS`] rounds (most
    /// missed first, at most [`LOOKUPS_PER_ROUND`]).
    async fn look_up_missed(
        &self,
        round: &mut Round,
        triggers: &mut Vec<ObjectRef<ClusterScanTask>>,
    ) {
        let mut due: Vec<(u32, String, String, HssClient, TaskType)> = {
            let state = self.lock();
            state
                .groups
                .iter()
                .flat_map(|(key, group)| {
                    group
                        .tasks
                        .iter()
                        .filter(|(_, t)| t.missed >= MISSED_ROUNDS && !finished(t))
                        .map(|(id, t)| {
                            (
                                t.missed,
                                id.clone(),
                                key.clone(),
                                group.client.clone(),
                                t.task_type,
                            )
                        })
                })
                .collect()
        };
        due.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        due.truncate(LOOKUPS_PER_ROUND);
        for (_, id, key, client, task_type) in due {
            let result = resolve::find_by_id(&client, task_type, &id).await;
            round.calls += 1;
            round.lookups += 1;
            let mut state = self.lock();
            let Some(t) = state
                .groups
                .get_mut(&key)
                .and_then(|g| g.tasks.get_mut(&id))
            else {
                continue;
            };
            match result {
                Ok(found) => {
                    t.missed = 0;
                    match found {
                        Some(info) => {
                            tracing::debug!(task_id = %id, "a followed task the poll's pages did not show was found by id");
                            t.absent_since = None;
                            if changed(t.latest.as_ref(), &info) {
                                t.latest = Some(info);
                                triggers.push(t.object.clone());
                                round.changed += 1;
                            }
                        }
                        None => {
                            let since = *t.absent_since.get_or_insert_with(jiff::Timestamp::now);
                            tracing::warn!(task_id = %id, absent_since = %since, "HSS does not list a followed task, even asked by id");
                            // The reconciler decides once `lost_after` has passed.
                            triggers.push(t.object.clone());
                        }
                    }
                }
                Err(err) => {
                    round.errors += 1;
                    tracing::debug!(category = err.category(), error = %err, "lookup by id of a task the poll did not show failed");
                }
            }
        }
    }

    /// Polls every interval until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => {
                    if self.tracked() > 0 {
                        self.poll_once().await;
                    }
                }
            }
        }
    }
}
