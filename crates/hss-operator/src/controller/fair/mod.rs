//! The fair queue for CreateTask tokens: one budget shared by every tenant, handed out across
//! namespaces by weight, first come first served within a namespace, and waiting that holds
//! nothing.
//!
//! A Pending object that wants to POST asks [`FairQueue::turn`]. Unless a token was handed to
//! it, it joins its namespace's queue and its reconcile returns at once (no reconcile slot is
//! held while it waits, no timer races other waiters). One dispatcher per budget source (an
//! endpoint's CreateTask bucket) waits for each token, picks the next object by start-time
//! fair queueing over the namespaces waiting (weight: the `share` of the ClusterScanPolicy
//! selecting the namespace, 1 without one), hands it the token and wakes that one object.
//!
//! # Guarantees
//! - The budget stays fully used: while anyone waits, the dispatcher takes every token as it
//!   frees and hands it to a waiter.
//! - Across namespaces, tokens go in proportion to their weights while they all wait; a
//!   namespace that starts waiting is served within about one round of the others (its
//!   virtual start is the current virtual time, so it neither catches up on past rounds nor
//!   waits behind the others' backlog).
//! - Within a namespace: oldest first (creation time, then name).
//! - One woken object per token: no herd.
//! - Uncontended, nothing changes: with nobody waiting, a free token goes to the asker at once.
//!
//! # Assumptions
//! - The object woken claims its token within [`GRANT_TTL`]; a token not claimed by then
//!   (the object was deleted, the operator lost the lease) is dropped, not re-used: HSS
//!   budget is lost, never exceeded.
//!
//! # Caveats
//! - In memory: after a restart the queue is rebuilt as the objects reconcile, in the order
//!   they are seen, and re-sorted by creation time within each namespace as they join.
//! - A 429 blocking one credential holds the dispatcher for that waiter (head of line) until
//!   the block ends, like the budget it waits on.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use hss_client::budget::{Budget, BudgetKey, Permit};
use kube::runtime::reflector::ObjectRef;

use crate::crd::ClusterScanTask;

/// How long a handed-out token waits for its object to claim it.
pub const GRANT_TTL: Duration = Duration::from_secs(30);

/// One waiting object, ordered as its namespace serves them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Waiter {
    created: (Option<jiff::Timestamp>, String),
    uid: String,
}

#[derive(Debug, Default)]
struct Namespace {
    waiters: BTreeSet<Waiter>,
    weight: u32,
    /// Virtual time at which its next token is finished being served (start-time fair
    /// queueing); lags behind the global virtual time while the namespace is idle.
    finish: f64,
}

/// The scheduling state of one budget source. Pure (no I/O, no clock).
#[derive(Debug, Default)]
pub struct Lane {
    namespaces: HashMap<String, Namespace>,
    /// Object uid -> (namespace, its waiter), for leaving and places.
    index: HashMap<String, (String, Waiter)>,
    objects: HashMap<String, ObjectRef<ClusterScanTask>>,
    vtime: f64,
}

/// Where a waiting object stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// 1-based place in its namespace's queue.
    pub in_namespace: usize,
    /// About how many tokens are handed out before its own (its namespace's and others').
    pub tokens_ahead: u64,
}

impl Lane {
    /// Joins (or stays in) the queue; returns the object's place.
    pub fn join(
        &mut self,
        uid: &str,
        ns: &str,
        created: (Option<jiff::Timestamp>, String),
        weight: u32,
        object: ObjectRef<ClusterScanTask>,
    ) -> Place {
        if !self.index.contains_key(uid) {
            let vtime = self.vtime;
            let queue = self.namespaces.entry(ns.to_string()).or_default();
            if queue.waiters.is_empty() {
                // Idle until now: start at the current virtual time, no credit for the past.
                queue.finish = queue.finish.max(vtime);
            }
            queue.weight = weight.max(1);
            let w = Waiter {
                created,
                uid: uid.to_string(),
            };
            queue.waiters.insert(w.clone());
            self.index.insert(uid.to_string(), (ns.to_string(), w));
            self.objects.insert(uid.to_string(), object);
        }
        self.place(uid).unwrap_or(Place {
            in_namespace: 1,
            tokens_ahead: 0,
        })
    }

    /// Leaves the queue (deleted, refused, submitted by another path).
    pub fn leave(&mut self, uid: &str) {
        if let Some((ns, w)) = self.index.remove(uid) {
            self.objects.remove(uid);
            if let Some(q) = self.namespaces.get_mut(&ns) {
                q.waiters.remove(&w);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The next object to serve, taken out of the queue, with the reference to wake it.
    pub fn serve(&mut self) -> Option<(String, ObjectRef<ClusterScanTask>)> {
        let (ns, _) = self
            .namespaces
            .iter()
            .filter(|(_, q)| !q.waiters.is_empty())
            .map(|(ns, q)| (ns, q.finish + 1.0 / f64::from(q.weight)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)))?;
        let ns = ns.clone();
        let queue = self.namespaces.get_mut(&ns)?;
        let start = queue.finish;
        queue.finish += 1.0 / f64::from(queue.weight);
        self.vtime = self.vtime.max(start);
        let w = queue.waiters.pop_first()?;
        if queue.waiters.is_empty() && self.namespaces.len() > 1024 {
            self.namespaces.remove(&ns);
        }
        self.index.remove(&w.uid);
        let object = self.objects.remove(&w.uid)?;
        Some((w.uid, object))
    }

    /// Where `uid` stands, if it waits.
    pub fn place(&self, uid: &str) -> Option<Place> {
        let (ns, w) = self.index.get(uid)?;
        let queue = self.namespaces.get(ns)?;
        let in_namespace = queue.waiters.range(..=w.clone()).count();
        // Tokens the others get before this one: each waiting namespace is served in
        // proportion to its weight, up to its own backlog.
        let rounds = in_namespace as f64 / f64::from(queue.weight);
        let others: f64 = self
            .namespaces
            .iter()
            .filter(|(n, q)| *n != ns && !q.waiters.is_empty())
            .map(|(_, q)| (rounds * f64::from(q.weight)).min(q.waiters.len() as f64))
            .sum();
        Some(Place {
            in_namespace,
            tokens_ahead: (in_namespace as f64 - 1.0 + others).round() as u64,
        })
    }
}

#[derive(Default)]
struct State {
    lanes: HashMap<BudgetKey, Lane>,
    /// Tokens handed out and not yet claimed: object uid -> token, when.
    granted: HashMap<String, (Permit, tokio::time::Instant)>,
    /// Budget sources with a dispatcher running.
    running: BTreeSet<BudgetKey>,
}

/// What [`FairQueue::turn`] answers.
#[derive(Debug)]
pub enum Turn {
    /// The token is this object's: POST now.
    Granted(Permit),
    /// Waiting; `joined` is true on the first ask (the one that writes the condition).
    Wait { place: Place, joined: bool },
}

/// The fair queues of this process, one lane per budget source. Cheap to clone.
#[derive(Clone)]
pub struct FairQueue {
    state: Arc<Mutex<State>>,
    budget: Budget,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterScanTask>>,
    /// Dispatchers end when the last queue handle is dropped.
    alive: Arc<()>,
}

impl FairQueue {
    pub fn new(
        budget: Budget,
        wake: futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterScanTask>>,
    ) -> Self {
        Self {
            state: Arc::default(),
            budget,
            wake,
            alive: Arc::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The object's turn for a CreateTask token of `key`: the token if it was handed to it,
    /// else its place in the queue (joining it on the first ask).
    pub fn turn(
        &self,
        key: &BudgetKey,
        obj: &ClusterScanTask,
        uid: &str,
        ns: &str,
        weight: u32,
    ) -> Turn {
        let mut state = self.lock();
        if let Some((permit, _)) = state.granted.remove(uid) {
            return Turn::Granted(permit);
        }
        let source = key.source();
        // Nobody waits: a free token is this object's at once (no queue, no extra write).
        if state.lanes.get(&source).is_none_or(Lane::is_empty)
            && let Ok(permit) = self.budget.try_acquire(key)
        {
            return Turn::Granted(permit);
        }
        let lane = state.lanes.entry(source.clone()).or_default();
        let joined = lane.place(uid).is_none();
        let created = (
            obj.metadata.creation_timestamp.as_ref().map(|t| t.0),
            obj.metadata.name.clone().unwrap_or_default(),
        );
        let place = lane.join(uid, ns, created, weight, ObjectRef::from_obj(obj));
        if state.running.insert(source.clone()) {
            tokio::spawn(dispatch(
                self.state.clone(),
                self.budget.clone(),
                self.wake.clone(),
                Arc::downgrade(&self.alive),
                source,
            ));
        }
        Turn::Wait { place, joined }
    }

    /// The object no longer waits (deleted, refused, gone past Pending).
    pub fn leave(&self, uid: &str) {
        let mut state = self.lock();
        state.granted.remove(uid);
        for lane in state.lanes.values_mut() {
            lane.leave(uid);
        }
    }

    /// Objects waiting, over every lane.
    pub fn waiting(&self) -> usize {
        self.lock().lanes.values().map(Lane::len).sum()
    }
}

/// One lane's dispatcher: each token to the next waiter, until the lane is empty or every
/// handle of the queue is gone (the controllers stopped).
async fn dispatch(
    state: Arc<Mutex<State>>,
    budget: Budget,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterScanTask>>,
    alive: std::sync::Weak<()>,
    source: BudgetKey,
) {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        {
            let mut state = lock();
            let now = tokio::time::Instant::now();
            state
                .granted
                .retain(|_, (_, at)| now.duration_since(*at) < GRANT_TTL);
            if alive.strong_count() == 0 || state.lanes.get(&source).is_none_or(Lane::is_empty) {
                state.running.remove(&source);
                state.lanes.remove(&source);
                return;
            }
        }
        let permit = budget.acquire(&source).await;
        if alive.strong_count() == 0 {
            return;
        }
        let mut state = lock();
        let Some((uid, object)) = state.lanes.get_mut(&source).and_then(Lane::serve) else {
            continue; // everyone left while the token was on its way: it is dropped
        };
        state
            .granted
            .insert(uid, (permit, tokio::time::Instant::now()));
        let _ = wake.unbounded_send(object);
    }
}

#[cfg(test)]
mod tests;
