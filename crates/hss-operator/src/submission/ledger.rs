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
    /// POSTs hold it shared, a lookup's assignment exclusively: a candidate is never assigned
    /// while a POST whose task is not remembered yet is on its way.
    gate: tokio::sync::RwLock<()>,
    store: Option<ClaimStore>,
    /// The key that seals task ids written into status (from the claims ConfigMap); unset
    /// without one.
    seal_key: std::sync::OnceLock<Vec<u8>>,
}

/// Longest one lookup (its ListTasks pages and confirmations) may take.
pub const LOOKUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// Bytes of the HMAC kept as the seal (192 bits).
const SEAL_BYTES: usize = 24;

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len()
        .is_multiple_of(2)
        .then(|| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

impl Ledger {
    pub fn new(store: Option<ClaimStore>) -> Self {
        Self {
            pending: Mutex::default(),
            deleted: Mutex::default(),
            gate: tokio::sync::RwLock::new(()),
            store,
            seal_key: std::sync::OnceLock::new(),
        }
    }

    /// Loads the claims earlier processes recorded. Run before the first reconcile.
    pub async fn load(&self) -> Result<usize, claims::Error> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let key = store.seal_key().await?;
        let _ = self.seal_key.set(key.into_bytes());
        let loaded = store.load().await?;
        let n = loaded.len();
        lock(&self.deleted).extend(loaded);
        Ok(n)
    }

    /// The seal of `task_id` as the status of object `uid` (None without a claims ConfigMap,
    /// whose key it needs).
    pub fn seal(&self, uid: &str, task_id: &str) -> Option<String> {
        use hmac::Mac;
        let out = self.mac(uid, task_id)?.finalize().into_bytes();
        Some(
            out[..SEAL_BYTES]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    fn mac(&self, uid: &str, task_id: &str) -> Option<hmac::Hmac<sha2::Sha256>> {
        use hmac::Mac;
        let key = self.seal_key.get()?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
        mac.update(format!("{uid}\n{task_id}").as_bytes());
        Some(mac)
    }

    /// Whether the status's `task_id` of object `uid` is the operator's own: remembered by
    /// this process, or sealed with the operator's key. Without a claims ConfigMap (no key
    /// that survives a restart) a status from an earlier process is trusted as written.
    pub fn trusts(&self, uid: &str, task_id: &str, seal: Option<&str>) -> bool {
        if self.remembered(uid).as_deref() == Some(task_id) {
            return true;
        }
        let Some(mac) = self.mac(uid, task_id) else {
            return true;
        };
        let Some(got) = seal.and_then(unhex).filter(|b| b.len() == SEAL_BYTES) else {
            return false;
        };
        // Constant time: a forger learns nothing from how long the comparison took.
        hmac::Mac::verify_truncated_left(mac, &got).is_ok()
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

    /// Runs `lookup` given every task id that is not the object's to take: `owned` (other
    /// objects' status, from the cache), the ids remembered for other objects, and deleted
    /// objects' claims in `scope`. The lookup's HSS calls run without the gate, so POSTs (and
    /// other lookups) go on meanwhile; the gate is taken exclusively only to assign the first
    /// candidate: by then every POST that was in flight during the lookup has returned and
    /// its task id is remembered, so candidates are re-checked against every id claimed by
    /// then. The lookup has [`LOOKUP_DEADLINE`]; past it, it is inconclusive.
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
        let claimed = self.claimed(uid, scope, owned.clone());
        let mut found = tokio::time::timeout(LOOKUP_DEADLINE, lookup(claimed))
            .await
            .unwrap_or(Ok(Lookup::Inconclusive));
        let _exclusive = self.gate.write().await;
        if let Ok(Lookup::Candidates(c)) = &mut found {
            // Claimed while the lookup ran (a POST returned it, another object took it).
            let now_claimed = self.claimed(uid, scope, owned);
            c.retain(|t| !now_claimed.contains(&t.task_id));
            if c.is_empty() {
                found = Ok(Lookup::Inconclusive);
            }
        }
        if let Ok(Lookup::Candidates(c)) = &found {
            lock(&self.pending).insert(uid.to_string(), c[0].task_id.clone());
        }
        found
    }

    /// Every task id that is not `uid`'s to take: `owned`, the ids remembered for other
    /// objects, and deleted objects' claims in `scope`.
    fn claimed(&self, uid: &str, scope: &str, owned: HashSet<String>) -> HashSet<String> {
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
        claimed
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_task_id_the_operator_sealed_for_that_object_is_trusted() {
        let ledger = Ledger::new(None);
        assert!(
            ledger.trusts("uid-a", "t1", None),
            "without a key that outlives the process, status is trusted as written"
        );
        ledger.seal_key.set(b"k".repeat(32)).expect("key");
        let seal = ledger.seal("uid-a", "t1").expect("sealed");
        assert_eq!(seal.len(), 48);
        assert!(ledger.trusts("uid-a", "t1", Some(&seal)));
        for (why, uid, task, seal) in [
            ("no seal", "uid-a", "t1", None),
            ("another task id", "uid-a", "t2", Some(seal.as_str())),
            ("another object", "uid-b", "t1", Some(seal.as_str())),
            ("a cut seal", "uid-a", "t1", Some(&seal[..40])),
            ("not hex", "uid-a", "t1", Some("zz")),
        ] {
            assert!(!ledger.trusts(uid, task, seal), "{why}");
        }
        lock(&ledger.pending).insert("uid-c".into(), "t3".into());
        assert!(
            ledger.trusts("uid-c", "t3", None),
            "what this process got from HSS"
        );
    }

    fn candidate(id: &str) -> Lookup {
        Lookup::Candidates(vec![
            serde_json::from_value(serde_json::json!({
                "task_id": id, "task_type": "cluster_scan", "task_status": "ready",
            }))
            .expect("task"),
        ])
    }

    #[tokio::test]
    async fn a_lookup_lets_posts_go_on_and_loses_a_candidate_claimed_meanwhile() {
        let ledger = std::sync::Arc::new(Ledger::new(None));
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let lookup = {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                ledger
                    .adopt("uid-old", "", HashSet::new(), |_| async move {
                        let _ = hold.await;
                        Ok(candidate("t-fresh"))
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        // Another object's POST goes out while the lookup waits on HSS, and gets t-fresh.
        let posted = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ledger.post("uid-new", async {
                Ok(CreateTaskResponse {
                    task_id: "t-fresh".into(),
                })
            }),
        )
        .await
        .expect("not held behind the lookup");
        assert!(posted.is_ok());
        release.send(()).expect("release");
        let found = lookup.await.expect("joined").expect("lookup");
        assert_eq!(found, Lookup::Inconclusive, "t-fresh is uid-new's now");
        assert_eq!(ledger.remembered("uid-old"), None);
    }

    #[tokio::test]
    async fn a_candidate_is_assigned_only_after_the_posts_in_flight_returned() {
        let ledger = std::sync::Arc::new(Ledger::new(None));
        // A POST is on its way (its task, t-fresh, already listed by HSS) when the lookup
        // finds t-fresh: the assignment waits for the POST, then knows t-fresh is not its own.
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let post = {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                ledger
                    .post("uid-new", async move {
                        let _ = answered.await;
                        Ok(CreateTaskResponse {
                            task_id: "t-fresh".into(),
                        })
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let lookup = {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                ledger
                    .adopt("uid-young", "", HashSet::new(), |_| async {
                        Ok(candidate("t-fresh"))
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(
            !lookup.is_finished(),
            "assigning waits for the POST in flight"
        );
        answer.send(()).expect("answer");
        assert!(post.await.expect("joined").is_ok());
        assert_eq!(
            lookup.await.expect("joined").expect("lookup"),
            Lookup::Inconclusive
        );
        assert_eq!(ledger.remembered("uid-young"), None);
        assert_eq!(ledger.remembered("uid-new").as_deref(), Some("t-fresh"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_past_its_deadline_is_inconclusive() {
        let ledger = Ledger::new(None);
        let found = ledger
            .adopt("uid", "", HashSet::new(), |_| {
                futures::future::pending::<Result<Lookup, hss_client::Error>>()
            })
            .await
            .expect("lookup");
        assert_eq!(found, Lookup::Inconclusive);
    }
}
