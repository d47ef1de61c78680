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

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;

use crate::{
    crd::ClusterScanTask,
    hss::{
        HssClient,
        client::{MAX_PAGE, Outcome},
        model::{ListTasksRequest, TaskInfo, TaskStatus, TaskType},
        resolve::CLOCK_SKEW,
    },
};

/// One followed task.
#[derive(Debug, Clone)]
struct Tracked {
    object: ObjectRef<ClusterScanTask>,
    task_type: TaskType,
    created_ms: i64,
    latest: Option<TaskInfo>,
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
}

/// What one poll round did (for tests and metrics).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub calls: u32,
    pub changed: u32,
    pub errors: u32,
}

fn group_key(client: &HssClient) -> String {
    let config = client.config();
    format!(
        "{}|{}|{}|{}",
        client.budget_key(crate::hss::Api::ListTasks).identity,
        config.endpoint,
        config.project_id,
        config.enterprise_project_id.as_deref().unwrap_or("")
    )
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
    pub fn new(interval: Duration) -> (Self, mpsc::UnboundedReceiver<ObjectRef<ClusterScanTask>>) {
        let (trigger, rx) = mpsc::unbounded();
        (
            Self {
                state: Arc::default(),
                trigger,
                interval,
            },
            rx,
        )
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
                    let finished = t
                        .latest
                        .as_ref()
                        .is_some_and(|l| l.task_status == TaskStatus::Finished);
                    if !finished {
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
                (key, result, pages)
            },
        ))
        .await;

        let mut round = Round::default();
        let mut triggers = Vec::new();
        {
            let mut state = self.lock();
            for (key, result, _pages) in rounds {
                round.calls += 1;
                match result {
                    Ok((tasks, _complete)) => {
                        state.last_success = Some(jiff::Timestamp::now());
                        let Some(group) = state.groups.get_mut(&key) else {
                            continue;
                        };
                        for task in tasks {
                            if let Some(t) = group.tasks.get_mut(&task.task_id)
                                && changed(t.latest.as_ref(), &task)
                            {
                                t.latest = Some(task);
                                triggers.push(t.object.clone());
                                round.changed += 1;
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
        for object in triggers {
            let _ = self.trigger.unbounded_send(object);
        }
        round
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
