//! The fair queues for HSS tokens: one budget shared by every tenant, handed out across
//! namespaces by weight, first come first served within a namespace, and waiting that holds
//! nothing.
//!
//! Two kinds of waiter, one queue per budget source (an endpoint's bucket of one API):
//! - A Pending object that wants to POST asks [`FairQueue::turn`]. Unless a token was handed
//!   to it, it joins its namespace's queue and its reconcile returns at once (no reconcile
//!   slot is held while it waits, no timer races other waiters); the token's dispatcher wakes
//!   that one object, and its next reconcile takes the token.
//! - Every other call (findings reads, results, lookups, the shared poll) waits in
//!   [`FairQueue::wait`], the [`Gate`] the operator's HSS clients use: the caller's namespace
//!   comes from [`as_caller`] (the work runs in its own task, see `super::offload`, so it
//!   holds no reconcile slot either); calls outside any caller (the shared poll) queue as the
//!   operator's own namespace, [`OPERATOR`].
//!
//! One dispatcher per budget source waits for each token, picks the next waiter by start-time
//! fair queueing over the namespaces waiting (weight: the `share` of the ClusterScanPolicy
//! selecting the namespace, 1 without one) and hands it the token: one waiter per token.
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

use hss_client::{
    budget::{Budget, BudgetKey, Permit},
    client::Gate,
};
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
    wakes: HashMap<String, Wake>,
    vtime: f64,
}

/// How a served waiter gets its token.
#[derive(Debug)]
pub enum Wake {
    /// An object to reconcile, which then takes the token with [`FairQueue::turn`].
    Object(ObjectRef<ClusterScanTask>),
    /// A caller waiting in [`FairQueue::wait`]: the token itself.
    Send(tokio::sync::oneshot::Sender<Permit>),
}

impl From<ObjectRef<ClusterScanTask>> for Wake {
    fn from(o: ObjectRef<ClusterScanTask>) -> Self {
        Self::Object(o)
    }
}

impl Wake {
    /// The object to wake, for a waiter that is one.
    pub fn into_object(self) -> Option<ObjectRef<ClusterScanTask>> {
        match self {
            Self::Object(o) => Some(o),
            Self::Send(_) => None,
        }
    }
}

/// The namespace calls made outside any tenant's work (the shared poll) queue in.
pub const OPERATOR: &str = "";

/// Who a call is made for: its namespace's queue, weight and place (see [`as_caller`]).
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: String,
    pub namespace: String,
    pub weight: u32,
    /// Creation time and name: the order within the namespace.
    pub created: (Option<jiff::Timestamp>, String),
}

impl Caller {
    pub fn of(obj: &ClusterScanTask, weight: u32) -> Self {
        Self {
            uid: obj.metadata.uid.clone().unwrap_or_default(),
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            weight,
            created: (
                obj.metadata.creation_timestamp.as_ref().map(|t| t.0),
                obj.metadata.name.clone().unwrap_or_default(),
            ),
        }
    }
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs `work` with its HSS calls queued as `caller`'s.
pub async fn as_caller<F: std::future::Future>(caller: Caller, work: F) -> F::Output {
    CALLER.scope(caller, work).await
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
        wake: impl Into<Wake>,
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
            self.wakes.insert(uid.to_string(), wake.into());
        }
        self.place(uid).unwrap_or(Place {
            in_namespace: 1,
            tokens_ahead: 0,
        })
    }

    /// Leaves the queue (deleted, refused, submitted by another path).
    pub fn leave(&mut self, uid: &str) {
        if let Some((ns, w)) = self.index.remove(uid) {
            self.wakes.remove(uid);
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
    pub fn serve(&mut self) -> Option<(String, Wake)> {
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
        let wake = self.wakes.remove(&w.uid)?;
        Some((w.uid, wake))
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
    /// Tickets of callers in [`FairQueue::wait`] (several calls of one object may wait).
    tickets: u64,
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
        self.ensure_dispatcher(&mut state, source);
        Turn::Wait { place, joined }
    }

    fn ensure_dispatcher(&self, state: &mut State, source: BudgetKey) {
        if state.running.insert(source.clone()) {
            tokio::spawn(dispatch(
                self.state.clone(),
                self.budget.clone(),
                self.wake.clone(),
                Arc::downgrade(&self.alive),
                source,
            ));
        }
    }

    /// Waits for a token of `key` in the queue of the current [`Caller`] ([`as_caller`]), or of
    /// [`OPERATOR`] outside one. Uncontended, a free token is taken at once. Dropping the
    /// future leaves the queue (the token, if it was already on its way, goes to the next).
    pub async fn wait(&self, key: BudgetKey) -> Permit {
        let caller = CALLER.try_with(Caller::clone).unwrap_or_else(|_| Caller {
            uid: String::new(),
            namespace: OPERATOR.to_string(),
            weight: 1,
            created: (None, String::new()),
        });
        let source = key.source();
        let (ticket, rx) = {
            let mut state = self.lock();
            if state.lanes.get(&source).is_none_or(Lane::is_empty)
                && let Ok(permit) = self.budget.try_acquire(&key)
            {
                return permit;
            }
            state.tickets += 1;
            let ticket = format!("{}#{}", caller.uid, state.tickets);
            let (tx, rx) = tokio::sync::oneshot::channel();
            state.lanes.entry(source.clone()).or_default().join(
                &ticket,
                &caller.namespace,
                caller.created.clone(),
                caller.weight,
                Wake::Send(tx),
            );
            self.ensure_dispatcher(&mut state, source);
            (ticket, rx)
        };
        let leave = LeaveOnDrop {
            queue: self,
            ticket,
        };
        let permit = rx.await;
        drop(leave);
        match permit {
            Ok(permit) => permit,
            // The dispatcher stopped (the controllers are stopping): wait as if alone.
            Err(_) => self.budget.acquire(&key).await,
        }
    }

    /// The [`Gate`] for the operator's HSS clients: their calls wait in [`FairQueue::wait`].
    pub fn gate(&self) -> Arc<dyn Gate> {
        Arc::new(self.clone())
    }

    /// The object no longer waits (deleted, refused, gone past Pending).
    pub fn leave(&self, uid: &str) {
        let mut state = self.lock();
        state.granted.remove(uid);
        for lane in state.lanes.values_mut() {
            lane.leave(uid);
        }
    }

    /// Waiters by API and namespace ([`OPERATOR`] for the operator's own calls), over every
    /// endpoint: the queue depth the metrics show.
    pub fn waiting_by_namespace(&self) -> Vec<(hss_client::Api, String, usize)> {
        let state = self.lock();
        let mut out: std::collections::BTreeMap<(hss_client::Api, String), usize> =
            std::collections::BTreeMap::new();
        for (key, lane) in &state.lanes {
            for (ns, q) in &lane.namespaces {
                if !q.waiters.is_empty() {
                    *out.entry((key.api, ns.clone())).or_default() += q.waiters.len();
                }
            }
        }
        out.into_iter().map(|((api, ns), n)| (api, ns, n)).collect()
    }

    /// Objects waiting, over every lane.
    pub fn waiting(&self) -> usize {
        self.lock().lanes.values().map(Lane::len).sum()
    }
}

struct LeaveOnDrop<'a> {
    queue: &'a FairQueue,
    ticket: String,
}

impl Drop for LeaveOnDrop<'_> {
    fn drop(&mut self) {
        self.queue.leave(&self.ticket);
    }
}

impl Gate for FairQueue {
    fn acquire(
        &self,
        _budget: &Budget,
        key: BudgetKey,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Permit> + Send + 'static>> {
        let queue = self.clone();
        let caller = CALLER.try_with(Caller::clone).ok();
        Box::pin(async move {
            match caller {
                Some(caller) => as_caller(caller, queue.wait(key)).await,
                None => queue.wait(key).await,
            }
        })
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
        let mut permit = Some(permit);
        while let Some(p) = permit.take() {
            // Everyone left while the token was on its way: it is dropped.
            let Some((uid, waiter)) = state.lanes.get_mut(&source).and_then(Lane::serve) else {
                break;
            };
            match waiter {
                Wake::Object(object) => {
                    state.granted.insert(uid, (p, tokio::time::Instant::now()));
                    let _ = wake.unbounded_send(object);
                }
                // A caller that gave up meanwhile: the token goes to the next one.
                Wake::Send(tx) => permit = tx.send(p).err(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
