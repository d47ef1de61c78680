//! Per-object timestamps of scenarios 1 and 2: the create call, then what the bench's own
//! watch (straight to the API server) sees of each object, and the latencies between them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use futures::StreamExt;
use hss_operator::crd::{ClusterScanTask, Phase};
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

use crate::report::percentiles;

/// What the bench saw of one object, each the first time.
#[derive(Default, Clone)]
pub struct Track {
    pub applied: Option<Instant>,
    /// First seen with the operator's finalizer.
    pub finalizer: Option<Instant>,
    /// First seen with an attempt record (`phase: Submitting`).
    pub recorded: Option<Instant>,
    pub task_id: Option<Instant>,
    /// First seen with `Throttled=True` (it waits in the fair queue, or at its namespace's cap).
    pub throttled: Option<Instant>,
    pub succeeded: Option<Instant>,
    last_progress: Option<String>,
    /// The phase of the latest copy seen.
    pub phase: Option<Phase>,
    /// Distinct `status.progress` values seen.
    pub progress_changes: u32,
}

impl Track {
    /// Notes what a copy of the object seen at `now` shows for the first time.
    fn observe(&mut self, o: &ClusterScanTask, now: Instant) {
        let st = o.status.as_ref();
        self.phase = st.and_then(|s| s.phase);
        if self.finalizer.is_none() && !o.finalizers().is_empty() {
            self.finalizer = Some(now);
        }
        if self.recorded.is_none() && st.and_then(|s| s.phase) == Some(Phase::Submitting) {
            self.recorded = Some(now);
        }
        if self.throttled.is_none()
            && st.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Throttled" && c.status == "True")
            })
        {
            self.throttled = Some(now);
        }
        if self.task_id.is_none() && st.and_then(|s| s.task_id.as_ref()).is_some() {
            self.task_id = Some(now);
        }
        if self.succeeded.is_none() && st.and_then(|s| s.phase) == Some(Phase::Succeeded) {
            self.succeeded = Some(now);
        }
        let progress = st
            .and_then(|s| s.progress.as_ref())
            .and_then(|p| serde_json::to_string(p).ok());
        if progress.is_some() && progress != self.last_progress {
            self.progress_changes += 1;
            self.last_progress = progress;
        }
    }
}

/// Tracks by object name, shared by the creates and the watch.
#[derive(Default, Clone)]
pub struct Tracks(Arc<Mutex<HashMap<String, Track>>>);

impl Tracks {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Track>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `api` in a task (abort it when done), observing every copy it sees.
    pub fn watch(&self, api: Api<ClusterScanTask>) -> tokio::task::JoinHandle<()> {
        let tracks = self.clone();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(Ok(o)) = stream.next().await {
                let now = Instant::now();
                tracks
                    .lock()
                    .entry(o.name_any())
                    .or_default()
                    .observe(&o, now);
            }
        })
    }

    /// `name` is being created now.
    pub fn applied(&self, name: String) {
        let now = Instant::now();
        self.lock().entry(name).or_default().applied = Some(now);
    }

    /// How many objects have been seen Succeeded.
    pub fn succeeded(&self) -> usize {
        self.lock()
            .values()
            .filter(|t| t.succeeded.is_some())
            .count()
    }

    /// How many objects have been seen with a task id.
    pub fn task_ids(&self) -> usize {
        self.lock().values().filter(|t| t.task_id.is_some()).count()
    }

    /// The phase `name` was last seen in.
    pub fn phase_of(&self, name: &str) -> Option<Phase> {
        self.lock().get(name).and_then(|t| t.phase)
    }

    /// How many objects were last seen in a phase that `f` accepts.
    pub fn count_phase(&self, f: impl Fn(Option<Phase>) -> bool) -> usize {
        self.lock().values().filter(|t| f(t.phase)).count()
    }

    /// A copy of every track as it is now.
    pub fn snapshot(&self) -> HashMap<String, Track> {
        self.lock().clone()
    }
}

/// A timestamp of a track.
pub type Stamp = fn(&Track) -> Option<Instant>;

/// p50/p99 in ms from apply to `to`, over the objects that have both.
pub fn since_applied(tracks: &HashMap<String, Track>, to: Stamp) -> Option<(f64, f64)> {
    percentiles(
        tracks
            .values()
            .filter_map(|t| Some((to(t)? - t.applied?).as_secs_f64() * 1000.0))
            .collect(),
    )
}

/// p50/p99 in ms from `from` to `to`, over the objects that have both in that order.
pub fn between(tracks: &HashMap<String, Track>, from: Stamp, to: Stamp) -> Option<(f64, f64)> {
    percentiles(
        tracks
            .values()
            .filter_map(|t| Some(to(t)?.checked_duration_since(from(t)?)?.as_secs_f64() * 1000.0))
            .collect(),
    )
}
