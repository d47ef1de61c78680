//! HSS work that may wait for budget, done outside reconcile: a reconcile starts it and
//! returns at once, the work runs in its own task (its calls queued fairly as the object's
//! namespace, [`super::fair`]), and when it ends it wakes the object, whose next reconcile
//! takes the outcome and writes it.
//!
//! Reads go this way (findings, a finished task's results, an unresolved attempt's lookup or
//! named adoption):
//! work whose outcome can be dropped and redone without harm (a lookup's candidate is
//! remembered by the ledger when it is assigned, so even a dropped outcome is not lost).
//! CreateTask stays in reconcile, where its order with the status writes is what makes it
//! exactly-once; it waits for its token in [`super::fair`]'s queue, holding no slot either.
//!
//! # Guarantees
//! - At most one job per object in each [`Offload`] (one per purpose: findings, results);
//!   asking again while it runs starts nothing.
//! - Reconcile slots are never held while a job waits for budget: 100 objects waiting for
//!   findings reads leave every slot free for deletions and status updates.
//! - An outcome is handed out once, to the reconcile after the job ended.
//! - [`Offload::cancel`] (on deletion) aborts the job and drops its outcome.
//!
//! # Assumptions
//! - The object's reconcile runs again when woken (the controller's reconcile-on channel);
//!   should the wake-up be lost, the outcome waits in memory for the next reconcile (resync,
//!   any change).
//!
//! # Caveats
//! - In memory: a restart loses running jobs and unclaimed outcomes; the next reconcile starts
//!   the read again (a read costs budget, never correctness).
//! - Deletion's own lookup (an object deleted while its attempt is unresolved) still runs in
//!   reconcile, bounded by `--cleanup-timeout`: the finalizer must not go before it ends.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use kube::runtime::reflector::ObjectRef;

use crate::crd::ClusterScanTask;

/// When a reconcile that left a job running looks again by itself: only a lost wake-up needs
/// it.
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(300);

enum Job<T> {
    Running(tokio::task::AbortHandle),
    Done(T),
}

/// Where an object's job stands.
#[derive(Debug)]
pub enum Step<T> {
    /// The job ended: its outcome, handed out once.
    Ready(T),
    /// Running (just started, or already before).
    Running,
}

/// The jobs of one outcome type. Cheap to clone.
pub struct Offload<T> {
    jobs: Arc<Mutex<HashMap<String, Job<T>>>>,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterScanTask>>,
}

impl<T> Clone for Offload<T> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<T: Send + 'static> Offload<T> {
    pub fn new(wake: futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterScanTask>>) -> Self {
        Self {
            jobs: Arc::default(),
            wake,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job<T>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outcome of `obj`'s job keyed `uid` (the object's uid, or `uid@attempt` for work
    /// that belongs to one attempt) if it ended, else [`Step::Running`], starting the job
    /// with `start` when none runs.
    pub fn step<F>(&self, obj: &ClusterScanTask, uid: &str, start: impl FnOnce() -> F) -> Step<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let key = uid.to_string();
        let mut jobs = self.lock();
        match jobs.remove(&key) {
            Some(Job::Done(out)) => return Step::Ready(out),
            Some(Job::Running(handle)) if !handle.is_finished() => {
                jobs.insert(key, Job::Running(handle));
                return Step::Running;
            }
            // Not started, or ended without an outcome (panicked): start it (again).
            Some(Job::Running(_)) | None => {}
        }
        let work = start();
        let this = self.clone();
        let object = ObjectRef::from_obj(obj);
        let job_key = key.clone();
        // The job's end takes the lock held here, so its outcome never lands before the
        // `Running` entry it replaces.
        let handle = tokio::spawn(async move {
            let out = work.await;
            this.lock().insert(job_key, Job::Done(out));
            let _ = this.wake.unbounded_send(object);
        })
        .abort_handle();
        jobs.insert(key, Job::Running(handle));
        Step::Running
    }

    /// The outcome of `uid`'s job if it ended (handed out once); starts nothing.
    pub fn take(&self, uid: &str) -> Option<T> {
        let mut jobs = self.lock();
        match jobs.remove(uid)? {
            Job::Done(out) => Some(out),
            running => {
                jobs.insert(uid.to_string(), running);
                None
            }
        }
    }

    /// Aborts `uid`'s jobs and drops their outcomes: the one keyed `uid`, and those keyed
    /// `uid@...` (a job per attempt, say).
    pub fn cancel(&self, uid: &str) {
        let per_attempt = format!("{uid}@");
        self.lock().retain(|key, job| {
            let mine = key == uid || key.starts_with(&per_attempt);
            if let (true, Job::Running(handle)) = (mine, &job) {
                handle.abort();
            }
            !mine
        });
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|j| matches!(j, Job::Running(h) if !h.is_finished()))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn task(name: &str) -> ClusterScanTask {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hss.scanops.dev/v1alpha1", "kind": "ClusterScanTask",
            "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}")},
            "spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["cluster_vul"], "rangeType": "all_cluster"}},
        }))
        .expect("task")
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_runs_once_wakes_its_object_and_hands_its_outcome_out_once() {
        let (wake, mut woken) = futures::channel::mpsc::unbounded();
        let offload: Offload<u32> = Offload::new(wake);
        let obj = task("a");
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let mut starts = 0;
        let step = offload.step(&obj, "uid-a", || {
            starts += 1;
            async move {
                let _ = wait.await;
                7
            }
        });
        assert!(matches!(step, Step::Running));
        // Asked again while it runs: nothing new starts.
        let again = offload.step(&obj, "uid-a", || {
            starts += 1;
            async { 0 }
        });
        assert!(matches!(again, Step::Running));
        assert_eq!(starts, 1);
        assert_eq!(offload.running(), 1);
        release.send(()).expect("job waits");
        let o = woken.next().await.expect("woken");
        assert_eq!(o.name, "a");
        assert!(matches!(
            offload.step(&obj, "uid-a", || async { 0 }),
            Step::Ready(7)
        ));
        // Handed out once: the next ask starts a new job.
        assert!(matches!(
            offload.step(&obj, "uid-a", || async { 1 }),
            Step::Running
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_aborts_the_job_and_nothing_is_woken() {
        let (wake, mut woken) = futures::channel::mpsc::unbounded();
        let offload: Offload<u32> = Offload::new(wake);
        let obj = task("b");
        let step = offload.step(&obj, "uid-b@1700000000000", || async {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            1
        });
        assert!(matches!(step, Step::Running));
        let other = offload.step(&obj, "uid-c@1", || async { 2 });
        assert!(matches!(other, Step::Running));
        offload.cancel("uid-b");
        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
        // Only another object's job ended and woke its object.
        assert_eq!(woken.next().await.expect("woken").name, "b");
        assert!(woken.try_recv().is_err(), "an aborted job wakes nobody");
        assert_eq!(offload.running(), 0);
        assert!(offload.take("uid-b@1700000000000").is_none());
        assert!(matches!(offload.take("uid-c@1"), Some(2)));
        drop(offload);
        assert!(woken.next().await.is_none());
    }
}
