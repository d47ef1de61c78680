//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! With several replicas, one leads: only the leader calls HSS and writes status. HSS has no
//! idempotency key and a per-user rate limit that replicas would share unknowingly, so two
//! leaders at once mean duplicate tasks and 429s. [`Leadership`] is the seam: the controller asks
//! [`Leadership::is_leader`] (cached) or [`Leadership::confirm`] (a fresh read, right before a
//! CreateTask POST) and follows [`Leadership::changed`].
//!
//! The elector follows client-go's `leaderelection` package: the record is one Lease
//! (`holderIdentity`, `renewTime`, `leaseDurationSeconds`, `acquireTime`, `leaseTransitions`),
//! every write is a full replace with the `resourceVersion` that was read as precondition, and
//! expiry is judged on the *local* monotonic clock from the moment a record was observed to
//! change, never by comparing another node's `renewTime` with our wall clock.
//!
//! # Guarantees
//! - **Writes stop before a successor can start.** A leader counts its lease from the moment it
//!   *sent* its last successful renewal and considers itself leader only until that moment plus
//!   the renew deadline, `2/3 * duration` ([`LeaseConfig::renew_deadline`]). A non-holder takes
//!   over only after it has seen the same record, unchanged, for a full `duration` on its own
//!   clock, counted from when it *received* it; the renewal it saw was sent earlier still. So a
//!   leader that cannot renew (API server down, network cut, a request hanging) flips
//!   [`is_leader`](Leadership::is_leader) to false and reports `false` through
//!   [`changed`](Leadership::changed) at least `duration / 3` (the safety margin; 5 s with the
//!   defaults) before any other replica can become leader. Every API call the elector makes is
//!   bounded by that deadline, so a hanging request cannot delay the step-down.
//! - **At most one holder.** Acquiring, renewing and releasing replace the Lease with a
//!   `resourceVersion` precondition; of two replicas racing for an expired lease, one write
//!   succeeds and the other gets a conflict, re-reads and sees the new holder.
//! - [`is_leader`](Leadership::is_leader) checks the deadline itself, so it turns false on time
//!   even if the elector task is starved of CPU.
//! - [`release`](Leadership::release) first stops considering itself leader, then clears the
//!   holder, so a successor takes over at its next attempt (within `min(renew_every, 2 s)`)
//!   instead of after `duration`.
//!
//! # Assumptions
//! - Identities are unique per process (the pod name is; add a random suffix when running
//!   outside a pod). Two processes with one identity both believe they lead.
//! - Clocks *run* at the same rate, within the margin (NTP slews by at most 500 ppm; the margin
//!   is 33%). Wall-clock *offsets* between nodes do not matter: `renewTime` is written for
//!   humans and other tools, and expiry is measured locally.
//! - The caller stops its side effects when leadership is lost, and those in flight finish
//!   within the margin. A side effect started before the deadline that lands after it (an HSS
//!   POST with a 30 s timeout) is outside what a lease can guarantee; the submission protocol's
//!   resourceVersion-guarded status writes cover that case.
//!
//! # Caveats
//! - `leaseDurationSeconds` is whole seconds: a configured duration is rounded up for the
//!   record (which only makes others wait longer).
//! - A replica that sees a record held by someone else waits a full `duration` from its first
//!   observation before taking over, even when the holder crashed long ago: it cannot tell a
//!   dead holder from a live one except by watching the record not change. After a crash,
//!   failover therefore takes between `duration` and `duration + renew_every`; after
//!   [`release`](Leadership::release), within `min(renew_every, 2 s)`.
//! - Dropping every [`Leadership`] handle stops the elector *without* releasing: the lease then
//!   expires as after a crash. Use [`release`](Leadership::release) on graceful shutdown.
//! - Interoperates with client-go electors on the same Lease (same record, same expiry rule),
//!   but there is no reason to share a Lease with other programs.
//!
//! # Errors
//! The elector never ends on an error: it logs, retries, and (as leader) steps down at the
//! deadline. Only [`confirm`](Leadership::confirm) returns [`Error`].
//!
//! # Why not a crate
//! `kube-lease-manager` 0.13 (the current release, built on kube 5) was evaluated: when a
//! renewal fails it retries with backoff but keeps reporting `true`, so a partitioned leader
//! keeps leading after its lease has expired for others; it judges expiry by comparing the
//! holder's `renewTime` with the local wall clock, and renews without a `resourceVersion`
//! precondition. `kubert`'s lease module requires kube 1.x. This module is the small part of
//! client-go's elector the operator needs.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use rand::Rng;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep_until, timeout_at},
};

/// Default lease duration (client-go's default).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(15);
/// Default renewal interval.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(5);
/// Upper bound on the pause between attempts after a failure, and between acquire attempts.
const MAX_RETRY_PERIOD: Duration = Duration::from_secs(2);
const MIN_DURATION: Duration = Duration::from_secs(1);

/// Which Lease, who we are, and the timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per process, e.g. the pod name.
    pub identity: String,
    /// How long a lease is valid for others after its last renewal. Default 15 s.
    pub duration: Duration,
    /// How often the leader renews. Must be below [`renew_deadline`](Self::renew_deadline)
    /// (it is lowered to half of it otherwise). Default 5 s.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// A config with the default timing.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration: DEFAULT_DURATION,
            renew_every: DEFAULT_RENEW_EVERY,
        }
    }

    /// How long after sending its last successful renewal the leader still considers itself
    /// leader: two thirds of [`duration`](Self::duration), like client-go's 10 s of 15 s.
    pub fn renew_deadline(&self) -> Duration {
        self.duration.max(MIN_DURATION) * 2 / 3
    }

    /// The timing actually used: duration at least 1 s, renew interval below the deadline.
    fn normalized(mut self) -> Self {
        if self.duration < MIN_DURATION {
            tracing::warn!(duration = ?self.duration, "lease duration below 1s; using 1s");
            self.duration = MIN_DURATION;
        }
        let deadline = self.renew_deadline();
        if self.renew_every.is_zero() || self.renew_every >= deadline {
            tracing::warn!(renew_every = ?self.renew_every, ?deadline, "lease renew interval must be below the renew deadline; using half of it");
            self.renew_every = deadline / 2;
        }
        self
    }

    fn retry_period(&self) -> Duration {
        self.renew_every.min(MAX_RETRY_PERIOD)
    }

    /// The record's `leaseDurationSeconds`: whole seconds, rounded up.
    fn duration_seconds(&self) -> i32 {
        let secs = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the Lease")]
    Read(#[source] kube::Error),
    #[error("failed to create the Lease")]
    Create(#[source] kube::Error),
    #[error("failed to update the Lease")]
    Update(#[source] kube::Error),
    #[error("failed to reach the API server before the lease deadline")]
    Timeout,
}

impl Error {
    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Read(_) => "lease_read",
            Error::Create(_) => "lease_create",
            Error::Update(_) => "lease_update",
            Error::Timeout => "lease_timeout",
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, Error::Create(kube::Error::Api(e)) | Error::Update(kube::Error::Api(e)) if e.code == 409)
    }
}

/// State shared by the elector task and every [`Leadership`] handle.
struct Shared {
    api: Api<Lease>,
    config: LeaseConfig,
    /// Leader until this instant; `None` when not leader.
    valid_until: Mutex<Option<Instant>>,
    tx: watch::Sender<bool>,
}

impl Shared {
    fn valid_until(&self) -> Option<Instant> {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_leader(&self) -> bool {
        self.valid_until().is_some_and(|t| Instant::now() < t)
    }

    fn set_leading(&self, until: Instant) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
        let became = self.tx.send_if_modified(|v| !std::mem::replace(v, true));
        if became {
            tracing::info!(lease = %self.config.name, identity = %self.config.identity, "acquired the leader lease");
        }
    }

    fn set_not_leading(&self, why: &str) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let lost = self.tx.send_if_modified(|v| std::mem::replace(v, false));
        if lost {
            tracing::warn!(lease = %self.config.name, identity = %self.config.identity, why, "no longer the leader");
        }
    }

    async fn get(&self) -> Result<Option<Lease>, Error> {
        self.api
            .get_opt(&self.config.name)
            .await
            .map_err(Error::Read)
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, Error> {
        let pp = PostParams {
            field_manager: Some(crate::controller_runtime::FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.api
            .replace(&self.config.name, &pp, lease)
            .await
            .map_err(Error::Update)
    }

    /// A record naming us as holder from `now`, built on `spec` (the current one, if any).
    fn claim(&self, mut spec: LeaseSpec, now: jiff::Timestamp) -> LeaseSpec {
        let me = &self.config.identity;
        if spec.holder_identity.as_deref() != Some(me.as_str()) {
            spec.lease_transitions = Some(
                spec.lease_transitions
                    .unwrap_or(0)
                    .saturating_add(i32::from(spec.holder_identity.is_some())),
            );
            spec.holder_identity = Some(me.clone());
            spec.acquire_time = Some(MicroTime(now));
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.config.duration_seconds());
        spec
    }
}

/// What a non-holder last saw of someone else's record, and when (local clock).
#[derive(Debug, PartialEq)]
struct Observed {
    holder: String,
    renew_time: Option<jiff::Timestamp>,
    duration_seconds: Option<i32>,
    transitions: Option<i32>,
}

/// The outcome of one acquire-or-renew attempt.
enum Step {
    /// We hold the lease; `written` is what the server stored (for the next renewal).
    Holding { written: Box<Lease> },
    /// Someone else holds it, valid until `expires` on our clock.
    HeldByOther { expires: Instant },
}

struct Elector {
    shared: Arc<Shared>,
    /// The record we last wrote, so a renewal needs no read first.
    written: Option<Lease>,
    observed: Option<(Observed, Instant)>,
}

impl Elector {
    async fn run(mut self) {
        let config = self.shared.config.clone();
        let retry = config.retry_period();
        let deadline_after = config.renew_deadline();
        loop {
            let started = Instant::now();
            let leading_until = self.shared.valid_until();
            if leading_until.is_some_and(|t| started >= t) {
                self.shared
                    .set_not_leading("could not renew the lease before the renew deadline");
                self.written = None;
                continue;
            }
            // A leader's attempt must end by its deadline; a non-leader's by the next attempt.
            let attempt_limit = leading_until.map_or(started + deadline_after, |t| {
                t.min(started + retry.max(MIN_DURATION))
            });
            let next = match timeout_at(attempt_limit, self.step()).await {
                Ok(Ok(Step::Holding { written })) => {
                    self.written = Some(*written);
                    self.shared.set_leading(started + deadline_after);
                    started + config.renew_every
                }
                Ok(Ok(Step::HeldByOther { expires })) => {
                    self.written = None;
                    self.shared
                        .set_not_leading("the lease is held by another replica");
                    let jitter = retry.mul_f64(rand::rng().random_range(0.0..0.1));
                    (Instant::now() + retry + jitter).min(expires)
                }
                Ok(Err(e)) if e.is_conflict() => {
                    // Someone else wrote the Lease since we read it: read again at once.
                    tracing::debug!(lease = %config.name, "Lease write conflicted; re-reading");
                    self.written = None;
                    Instant::now() + Duration::from_millis(50)
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %config.name, category = e.category(), error = %crate::report_error(&e), "failed to acquire or renew the lease");
                    self.written = None;
                    Instant::now() + retry
                }
                Err(_elapsed) => {
                    tracing::warn!(lease = %config.name, "acquiring or renewing the lease timed out");
                    self.written = None;
                    Instant::now() + retry
                }
            };
            // Never sleep past our own deadline: the loop must be awake to step down.
            let wake = match self.shared.valid_until() {
                Some(t) => next.min(t),
                None => next,
            };
            sleep_until(wake).await;
        }
    }

    /// client-go's `tryAcquireOrRenew`.
    async fn step(&mut self) -> Result<Step, Error> {
        let shared = self.shared.clone();
        let me = shared.config.identity.as_str();
        let current = match self.written.take() {
            Some(lease) => Some(lease),
            None => shared.get().await?,
        };
        let now = jiff::Timestamp::now();
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(shared.config.name.clone()),
                    namespace: Some(shared.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(shared.claim(LeaseSpec::default(), now)),
            };
            let pp = PostParams {
                field_manager: Some(crate::controller_runtime::FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            let written = shared
                .api
                .create(&pp, &lease)
                .await
                .map_err(Error::Create)?;
            return Ok(Step::Holding {
                written: Box::new(written),
            });
        };
        let spec = lease.spec.take().unwrap_or_default();
        match spec.holder_identity.as_deref().filter(|h| !h.is_empty()) {
            Some(holder) if holder != me => {
                let seen = Observed {
                    holder: holder.to_string(),
                    renew_time: spec.renew_time.as_ref().map(|t| t.0),
                    duration_seconds: spec.lease_duration_seconds,
                    transitions: spec.lease_transitions,
                };
                let seen_at = match self.observed.take() {
                    Some((prev, at)) if prev == seen => at,
                    _ => Instant::now(),
                };
                let valid_for = spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map_or(shared.config.duration, Duration::from_secs);
                self.observed = Some((seen, seen_at));
                let expires = seen_at + valid_for;
                if Instant::now() < expires {
                    return Ok(Step::HeldByOther { expires });
                }
                tracing::info!(lease = %shared.config.name, %holder, "the lease expired; taking over");
            }
            // Ours (renew), or free (released or never held).
            _ => {}
        }
        self.observed = None;
        lease.spec = Some(shared.claim(spec, now));
        let written = shared.replace(&lease).await?;
        Ok(Step::Holding {
            written: Box::new(written),
        })
    }
}

/// Stops the elector when the last [`Leadership`] handle goes away.
struct Task(Mutex<Option<JoinHandle<()>>>);

impl Task {
    fn take(&self) -> Option<JoinHandle<()>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(handle) = self.take() {
            handle.abort();
        }
    }
}

#[derive(Clone)]
enum Mode {
    Always,
    Elected {
        shared: Arc<Shared>,
        task: Arc<Task>,
    },
}

/// This replica's view of leadership. Cheap to clone; clones share one elector, which stops
/// (without releasing the lease) when the last clone is dropped.
#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    mode: Mode,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Leadership");
        match &self.mode {
            Mode::Always => d.field("mode", &"always"),
            Mode::Elected { shared, .. } => d.field("config", &shared.config),
        };
        d.field("leader", &self.is_leader()).finish()
    }
}

impl Leadership {
    /// Spawns the elector; it keeps trying to acquire and then renew the Lease (creating it if
    /// missing) until every handle is dropped or [`release`](Self::release) is called. Call it
    /// inside a Tokio runtime.
    pub fn start(client: Client, config: LeaseConfig) -> Leadership {
        let config = config.normalized();
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            api: Api::namespaced(client, &config.namespace),
            config,
            valid_until: Mutex::new(None),
            tx,
        });
        let elector = Elector {
            shared: shared.clone(),
            written: None,
            observed: None,
        };
        let task = Arc::new(Task(Mutex::new(Some(tokio::spawn(elector.run())))));
        Leadership {
            rx,
            mode: Mode::Elected { shared, task },
        }
    }

    /// Leader election off: always leader.
    pub fn always() -> Leadership {
        let (_, rx) = watch::channel(true);
        Leadership {
            rx,
            mode: Mode::Always,
        }
    }

    /// The cached view: true while the last renewal is younger than the renew deadline.
    pub fn is_leader(&self) -> bool {
        match &self.mode {
            Mode::Always => true,
            Mode::Elected { shared, .. } => shared.is_leader(),
        }
    }

    /// Waits for the next change and returns the new value. With [`always`](Self::always) it
    /// never returns.
    pub async fn changed(&mut self) -> bool {
        if self.rx.changed().await.is_err() {
            // Only `always()` has no sender: nothing ever changes.
            std::future::pending::<()>().await;
        }
        *self.rx.borrow_and_update()
    }

    /// A receiver of the leader flag, for `select!` loops and for handing to other tasks.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Re-checks right now against the API server that we still hold an unexpired lease:
    /// the Lease names us as holder and our renew deadline has not passed (checked again after
    /// the read). Use it right before every CreateTask POST. Always true for
    /// [`always`](Self::always); false without a request when the cached view is already false.
    pub async fn confirm(&self) -> Result<bool, Error> {
        let Mode::Elected { shared, .. } = &self.mode else {
            return Ok(true);
        };
        let Some(deadline) = shared.valid_until().filter(|t| Instant::now() < *t) else {
            return Ok(false);
        };
        let lease = match timeout_at(deadline, shared.get()).await {
            Ok(lease) => lease?,
            // The deadline passed while asking: not leader any more, whatever the answer.
            Err(_) => return Ok(false),
        };
        let holder = lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .is_some_and(|h| h == shared.config.identity);
        Ok(holder && shared.is_leader())
    }

    /// Gives up the lease on graceful shutdown, so a successor takes over at once. Stops the
    /// elector (for every clone) and stops considering itself leader *before* writing, so call
    /// it after the work that needs leadership has stopped. A failure is logged; the lease then
    /// expires after `duration`.
    pub async fn release(self) {
        let Mode::Elected { shared, task } = &self.mode else {
            return;
        };
        if let Some(handle) = task.take() {
            handle.abort();
            let _ = handle.await;
        }
        let was_leader = shared.valid_until().is_some();
        shared.set_not_leading("released on shutdown");
        if !was_leader {
            return;
        }
        let limit = Instant::now() + shared.config.renew_deadline();
        let result = timeout_at(limit, async {
            // A renewal aborted mid-flight may still land and move the resourceVersion on:
            // re-read and try again on a conflict.
            loop {
                let Some(mut lease) = shared.get().await? else {
                    return Ok(());
                };
                let mut spec = lease.spec.take().unwrap_or_default();
                if spec.holder_identity.as_deref() != Some(shared.config.identity.as_str()) {
                    return Ok(());
                }
                // client-go's release record: no holder, a 1 s duration, the transitions kept.
                let now = MicroTime(jiff::Timestamp::now());
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                lease.spec = Some(spec);
                match shared.replace(&lease).await {
                    Err(e) if e.is_conflict() => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {
                tracing::info!(lease = %shared.config.name, identity = %shared.config.identity, "released the leader lease");
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %shared.config.name, category = e.category(), error = %crate::report_error(&e), "failed to release the leader lease; it expires on its own");
            }
            Err(_) => {
                tracing::warn!(lease = %shared.config.name, "releasing the leader lease timed out; it expires on its own");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(duration_ms: u64, renew_ms: u64) -> LeaseConfig {
        LeaseConfig {
            duration: Duration::from_millis(duration_ms),
            renew_every: Duration::from_millis(renew_ms),
            ..LeaseConfig::new("ns", "lease", "me")
        }
    }

    #[test]
    fn renew_deadline_leaves_a_third_of_the_duration_as_margin() {
        let c = LeaseConfig::new("ns", "lease", "me");
        assert_eq!(c.renew_deadline(), Duration::from_secs(10));
        assert_eq!(
            c.clone().normalized(),
            c,
            "the defaults are valid as they are"
        );
        assert_eq!(c.retry_period(), Duration::from_secs(2));
    }

    #[test]
    fn timing_is_normalized() {
        // (duration ms, renew ms, expected duration ms, expected renew ms, reason)
        let cases = [
            (3000, 1000, 3000, 1000, "valid: kept"),
            (
                3000,
                2000,
                3000,
                1000,
                "renew at the deadline: halved deadline",
            ),
            (3000, 0, 3000, 1000, "zero renew: halved deadline"),
            (200, 100, 1000, 100, "duration below 1 s: raised to 1 s"),
        ];
        for (d, r, want_d, want_r, why) in cases {
            let c = config(d, r).normalized();
            assert_eq!(c.duration, Duration::from_millis(want_d), "{why}");
            assert_eq!(c.renew_every, Duration::from_millis(want_r), "{why}");
            assert!(c.renew_every < c.renew_deadline(), "{why}");
            assert!(c.renew_deadline() < c.duration, "{why}");
        }
    }

    #[test]
    fn record_duration_rounds_up_to_whole_seconds() {
        assert_eq!(config(3000, 1000).duration_seconds(), 3);
        assert_eq!(config(2500, 1000).duration_seconds(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn always_leads_confirms_and_never_changes() {
        let mut l = Leadership::always();
        assert!(l.is_leader());
        assert!(l.confirm().await.expect("no API call"));
        let changed = tokio::time::timeout(Duration::from_millis(20), l.changed()).await;
        assert!(changed.is_err(), "always() never changes");
        l.release().await;
    }
}
