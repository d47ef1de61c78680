//! Claims on deleted objects' HSS task ids that outlive the process: one ConfigMap.
//!
//! An unresolved attempt (`Submitting`) is resolved by looking for a task that matches it and
//! that no other object owns. When an object is deleted its task id leaves the cache with it,
//! so a lookup after the deletion could take that task for another object's attempt. The
//! [`Ledger`](super::Ledger) keeps such ids claimed for [`TTL`]; this store makes the
//! claim survive a restart or a change of leader.
//!
//! # Guarantees
//! - [`ClaimStore::record`] returns only once the claims are stored. The finalizer is removed
//!   after it, so a crash in between records them again on the next cleanup.
//! - [`ClaimStore::load`] returns every unexpired claim any earlier process recorded.
//!
//! # Assumptions
//! - One writing process at a time (the single replica, or the leader), whose writes are
//!   serialised; each is a read-modify-write with the ConfigMap's resourceVersion as
//!   precondition, retried on conflict anyway (a former leader's last write).
//! - [`TTL`] is longer than any lookup window ([`hss_client::resolve::CLOCK_SKEW`] plus the
//!   attempt's timeout plus the settle time).
//!
//! # Caveats
//! - At most [`MAX_CLAIMS`] entries: past that, the ones expiring first are dropped (they are
//!   long out of every lookup window by then).
//! - A task id that is not a plain identifier (`[A-Za-z0-9._-]`, as HSS's UUIDs are) cannot
//!   be a ConfigMap key and is claimed in memory only.
//!
//! # Errors
//! [`Error`]: the API server's answer to reading or writing the ConfigMap. Cleanup returns it,
//! so the finalizer stays and the claim is retried with backoff.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

/// How long a deleted object's task id stays claimed: longer than any lookup window.
pub const TTL: Duration = Duration::from_secs(30 * 60);
/// Most claims kept (about 60 bytes each).
pub const MAX_CLAIMS: usize = 2000;
/// Writes retried on a conflict.
const ATTEMPTS: usize = 5;
/// The entry holding the key that seals the task ids the operator writes into status (a
/// name no claim can have: claims' keys contain a dot).
pub const SEAL_KEY: &str = "seal-key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the claims ConfigMap")]
    Read(#[source] kube::Error),
    #[error("failed to write the claims ConfigMap")]
    Write(#[source] kube::Error),
    #[error("failed to create the seal key: the claims ConfigMap kept changing")]
    SealRace,
}

impl Error {
    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Read(_) => "claims_read",
            Error::Write(_) | Error::SealRace => "claims_write",
        }
    }
}

/// One claim: the task id within an HSS scope (endpoint and project), until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub scope: String,
    pub task_id: String,
    pub expires: Timestamp,
}

impl Claim {
    /// The ConfigMap key, if the task id can be one.
    fn key(&self) -> Option<String> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.len() <= 200
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        (plain(&self.scope) && plain(&self.task_id) && !self.scope.contains('.'))
            .then(|| format!("{}.{}", self.scope, self.task_id))
    }

    fn parse(key: &str, value: &str) -> Option<Self> {
        let (scope, task_id) = key.split_once('.')?;
        Some(Self {
            scope: scope.to_string(),
            task_id: task_id.to_string(),
            expires: value.parse().ok()?,
        })
    }
}

/// The scope of a task id: a short hash of the endpoint and project it belongs to (task ids
/// are unique within HSS; simulators in tests reuse theirs).
pub fn scope(endpoint: &str, project_id: &str) -> String {
    hss_client::signer::hex_sha256(format!("{endpoint}|{project_id}").as_bytes())[..12].to_string()
}

/// `claims` merged into `data`: expired entries dropped, at most [`MAX_CLAIMS`] kept (those
/// expiring last). Pure.
fn merged(
    data: &BTreeMap<String, String>,
    claims: &[Claim],
    now: Timestamp,
) -> BTreeMap<String, String> {
    let mut all: Vec<Claim> = data
        .iter()
        .filter_map(|(k, v)| Claim::parse(k, v))
        .chain(claims.iter().cloned())
        .filter(|c| c.expires > now)
        .collect();
    all.sort_by_key(|c| std::cmp::Reverse(c.expires));
    let mut out = BTreeMap::new();
    if let Some(key) = data.get(SEAL_KEY) {
        out.insert(SEAL_KEY.to_string(), key.clone());
    }
    for c in all {
        if out.len() >= MAX_CLAIMS + usize::from(out.contains_key(SEAL_KEY)) {
            break;
        }
        if let Some(k) = c.key() {
            out.entry(k).or_insert_with(|| c.expires.to_string());
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ConfigMap that holds the claims.
#[derive(Clone)]
pub struct ClaimStore {
    api: Api<ConfigMap>,
    name: String,
    /// Writes of this process, one at a time: concurrent deletions would otherwise conflict
    /// with each other on the one ConfigMap (the chaos test saw five conflicts in a row).
    writing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl ClaimStore {
    pub fn new(kube: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(kube, namespace),
            name: name.to_string(),
            writing: std::sync::Arc::default(),
        }
    }

    /// Every unexpired claim.
    pub async fn load(&self) -> Result<Vec<Claim>, Error> {
        let now = Timestamp::now();
        let cm = self.api.get_opt(&self.name).await.map_err(Error::Read)?;
        Ok(cm
            .and_then(|cm| cm.data)
            .unwrap_or_default()
            .iter()
            .filter_map(|(k, v)| Claim::parse(k, v))
            .filter(|c| c.expires > now)
            .collect())
    }

    /// The key that seals task ids in status, created (random, 256 bits) on first use. Every
    /// process of the operator reads the same one; the first to create it wins a race.
    pub async fn seal_key(&self) -> Result<String, Error> {
        for _ in 0..ATTEMPTS {
            let current = self.api.get_opt(&self.name).await.map_err(Error::Read)?;
            if let Some(key) = current
                .as_ref()
                .and_then(|cm| cm.data.as_ref()?.get(SEAL_KEY))
            {
                return Ok(key.clone());
            }
            let fresh: [u8; 32] = rand::random();
            let key = hex(&fresh);
            let result = match current {
                Some(mut cm) => {
                    cm.data
                        .get_or_insert_with(BTreeMap::new)
                        .insert(SEAL_KEY.to_string(), key.clone());
                    self.api
                        .replace(&self.name, &PostParams::default(), &cm)
                        .await
                }
                None => {
                    let cm = self.empty(BTreeMap::from([(SEAL_KEY.to_string(), key.clone())]));
                    self.api.create(&PostParams::default(), &cm).await
                }
            };
            match result {
                Ok(_) => return Ok(key),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(Error::Write(e)),
            }
        }
        Err(Error::SealRace)
    }

    fn empty(&self, data: BTreeMap<String, String>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "hss-operator".to_string(),
                )])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }

    /// Adds `claims` (and prunes expired ones), creating the ConfigMap on first use.
    pub async fn record(&self, claims: &[Claim]) -> Result<(), Error> {
        if claims.iter().all(|c| c.key().is_none()) {
            return Ok(());
        }
        let _one_at_a_time = self.writing.lock().await;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let current = self.api.get_opt(&self.name).await.map_err(Error::Read)?;
            let result = match current {
                Some(mut cm) => {
                    cm.data = Some(merged(
                        &cm.data.clone().unwrap_or_default(),
                        claims,
                        Timestamp::now(),
                    ));
                    self.api
                        .replace(&self.name, &PostParams::default(), &cm)
                        .await
                }
                None => {
                    let cm = self.empty(merged(&BTreeMap::new(), claims, Timestamp::now()));
                    self.api.create(&PostParams::default(), &cm).await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => last = Some(kube::Error::Api(e)),
                Err(e) => return Err(Error::Write(e)),
            }
        }
        Err(Error::Write(last.expect("a conflict was seen")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(task: &str, expires: i64) -> Claim {
        Claim {
            scope: "abc123".into(),
            task_id: task.into(),
            expires: Timestamp::from_second(expires).expect("valid"),
        }
    }

    #[test]
    fn claims_round_trip_through_configmap_keys() {
        let c = claim("0a1b2c3d-4e5f-6789-abcd-ef0123456789", 100);
        let data = merged(
            &BTreeMap::new(),
            std::slice::from_ref(&c),
            Timestamp::UNIX_EPOCH,
        );
        let (k, v) = data.iter().next().expect("one entry");
        assert_eq!(Claim::parse(k, v), Some(c));
    }

    #[test]
    fn merging_drops_expired_claims_and_keeps_the_newest_within_the_cap() {
        let now = Timestamp::from_second(1000).expect("valid");
        let mut data = merged(
            &BTreeMap::new(),
            &[claim("old", 999), claim("live", 2000)],
            now,
        );
        assert_eq!(data.len(), 1, "the expired claim is gone");
        let many: Vec<Claim> = (0..MAX_CLAIMS as i64 + 10)
            .map(|i| claim(&format!("t{i}"), 3000 + i))
            .collect();
        data = merged(&data, &many, now);
        assert_eq!(data.len(), MAX_CLAIMS);
        assert!(data.contains_key(&format!("abc123.t{}", MAX_CLAIMS + 9)));
        assert!(
            !data.contains_key("abc123.live"),
            "the first to expire is dropped"
        );
    }

    #[test]
    fn ids_that_cannot_be_keys_are_not_stored() {
        let now = Timestamp::UNIX_EPOCH;
        for bad in ["", "a/b", "new\nline", &"x".repeat(300)] {
            assert!(
                merged(&BTreeMap::new(), &[claim(bad, 100)], now).is_empty(),
                "{bad:?}"
            );
        }
        assert_eq!(scope("https://hss.example", "p").len(), 12);
    }
}
