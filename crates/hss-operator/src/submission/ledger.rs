//! The exactly-once state of one process: the [`Ledger`]. See the [protocol](super).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::Mutex,
};

use hss_client::{model::CreateTaskResponse, resolve::Lookup};

use super::claims::{self, Claim, ClaimStore};

/// The exactly-once state of this process, in one place: the task ids it knows but the cache
/// may not show yet, the claims on deleted objects' task ids, and the gate that keeps
/// lookups and POSTs apart. Every POST goes through [`Ledger::post`], every lookup that may
/// adopt a task (resolve and cleanup alike) through [`Ledger::adopt`], every deletion through
/// [`Ledger::release`].
pub struct Ledger {
    /// Task ids HSS returned (or lookups found), by object uid, until the object is deleted:
    /// the status write may not have landed, or not reached the cache yet.
    pending: Mutex<HashMap<String, String>>,
    /// Task ids of deleted objects, until they expire (also in `store`, across restarts).
    deleted: Mutex<Vec<Claim>>,
    /// POSTs hold it shared, lookups exclusively: a lookup never runs while a POST whose task
    /// is not remembered yet is on its way.
    gate: tokio::sync::RwLock<()>,
    store: Option<ClaimStore>,
}

impl Ledger {
    pub fn new(store: Option<ClaimStore>) -> Self {
        Self {
            pending: Mutex::default(),
            deleted: Mutex::default(),
            gate: tokio::sync::RwLock::new(()),
            store,
        }
    }

    /// Loads the claims earlier processes recorded. Run before the first reconcile.
    pub async fn load(&self) -> Result<usize, claims::Error> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let loaded = store.load().await?;
        let n = loaded.len();
        lock(&self.deleted).extend(loaded);
        Ok(n)
    }

    /// The task id this process knows for the object, if any.
    pub fn remembered(&self, uid: &str) -> Option<String> {
        lock(&self.pending).get(uid).cloned()
    }

    /// Sends a CreateTask POST for the object; a returned task id is remembered before the
    /// gate is released.
    pub async fn post(
        &self,
        uid: &str,
        send: impl Future<Output = Result<CreateTaskResponse, hss_client::Error>>,
    ) -> Result<CreateTaskResponse, hss_client::Error> {
        let _in_flight = self.gate.read().await;
        let result = send.await;
        if let Ok(resp) = &result {
            lock(&self.pending).insert(uid.to_string(), resp.task_id.clone());
        }
        result
    }

    /// Runs `lookup` exclusively (no POST in flight, no other lookup), given every task id
    /// that is not the object's to take: `owned` (other objects' status, from the cache), the
    /// ids remembered for other objects, and deleted objects' claims in `scope`. The first
    /// candidate found is remembered for the object before the gate is released.
    pub async fn adopt<F>(
        &self,
        uid: &str,
        scope: &str,
        owned: HashSet<String>,
        lookup: impl FnOnce(HashSet<String>) -> F,
    ) -> Result<Lookup, hss_client::Error>
    where
        F: Future<Output = Result<Lookup, hss_client::Error>>,
    {
        let _exclusive = self.gate.write().await;
        let mut claimed = owned;
        claimed.extend(
            lock(&self.pending)
                .iter()
                .filter(|(other, _)| other.as_str() != uid)
                .map(|(_, id)| id.clone()),
        );
        let now = jiff::Timestamp::now();
        claimed.extend(
            lock(&self.deleted)
                .iter()
                .filter(|c| c.scope == scope && c.expires > now)
                .map(|c| c.task_id.clone()),
        );
        let found = lookup(claimed).await;
        if let Ok(Lookup::Candidates(c)) = &found {
            lock(&self.pending).insert(uid.to_string(), c[0].task_id.clone());
        }
        found
    }

    /// At deletion: the object's task ids (remembered, written, or found by cleanup) stay
    /// claimed for [`claims::TTL`], in memory and in the store, so no unresolved attempt of
    /// another object adopts them, restarts included.
    pub async fn release(
        &self,
        uid: &str,
        scope: Option<&str>,
        task_ids: impl IntoIterator<Item = String>,
    ) -> Result<(), claims::Error> {
        let remembered = lock(&self.pending).remove(uid);
        let Some(scope) = scope else {
            return Ok(());
        };
        let now = jiff::Timestamp::now();
        let expires = now + claims::TTL;
        let mut ids: Vec<String> = task_ids.into_iter().chain(remembered).collect();
        ids.sort();
        ids.dedup();
        let new: Vec<Claim> = ids
            .into_iter()
            .map(|task_id| Claim {
                scope: scope.to_string(),
                task_id,
                expires,
            })
            .collect();
        {
            let mut deleted = lock(&self.deleted);
            deleted.retain(|c| c.expires > now);
            deleted.extend(new.iter().cloned());
        }
        match &self.store {
            Some(store) if !new.is_empty() => store.record(&new).await,
            _ => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
