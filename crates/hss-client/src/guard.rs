//! One refused signature guards the key: HSS locks an AK/SK after more than five consecutive
//! bad signatures, for every holder of it, so a key whose secret key is wrong in several
//! places (objects whose Secrets carry the same access key id with different secret keys)
//! must not get a try from each of them.
//!
//! A [`KeyGuard`] is shared by every client of a process (`HssClient::with_guard`); calls
//! signed with fixed AK/SK (permanent, or a Secret's temporary keys) go through
//! [`KeyGuard::admit`]. Keys from a credential source (pod identity, metadata, ...) are not
//! guarded: a new fetch brings a new access key, and a 401 there is handled by the provider.
//!
//! # Guarantees
//! - Per access key id, at most one call signed with a secret key HSS has not yet accepted is
//!   in flight (a probe). Other calls with that access key wait for its answer.
//! - After HSS refuses a signature (HTTP 401) with an access key, nothing signs with it,
//!   whatever the secret key, until a holder of it changes ([`KeyGuard::check_holder`] with a
//!   new version for a holder seen before): then the changed holder's secret key, and only it,
//!   may try once.
//! - Once HSS accepted a secret key for an access key, calls with another secret key for it
//!   are refused here, unsent: an access key has one secret key.
//! - What is said about a key ([`Guarded`]) names only a prefix of its access key id.
//!
//! # Assumptions
//! - An access key id has exactly one secret key (a new key pair is a new access key id).
//! - A 401 to a call signed with AK/SK is a refused signature (`APIGW.0301`: wrong secret key,
//!   clock skew, an unknown or disabled key); HSS counts each toward the lock.
//! - Holders name where credentials come from (a Secret's namespace and name) and versions
//!   change when the material may have (a Secret's uid and resourceVersion).
//!
//! # Caveats
//! - In memory, per process: a restart forgets, so each start may spend one more signature
//!   on a key that stays wrong.
//! - A holder first seen while its key is guarded is only recorded: its next change lifts
//!   the guard, not its first appearance (else every not-yet-seen Secret would get a try).
//! - Bounded: past [`MAX_KEYS`] access keys, entries that record no refusal are forgotten
//!   (refusals stay: each one cost a real 401, paced by the rate budget); past
//!   [`MAX_HOLDERS`] holders of one key, its holders are forgotten (a change then lifts only
//!   once the holder has been seen again).
//!
//! # Errors
//! [`Guarded`], with a bounded [`Guarded::category`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use secrecy::{ExposeSecret, SecretString};

use super::credentials::Credentials;

/// Access keys remembered before those without a refusal are forgotten.
pub const MAX_KEYS: usize = 16_384;
/// Holders remembered per access key.
pub const MAX_HOLDERS: usize = 1_024;

/// Why a call with an access key is not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Guarded {
    #[error(
        "HSS refused a signature with access key {key}: nothing signs with it until a Secret holding it changes (HSS locks a key after more than five bad signatures)"
    )]
    Refused { key: String },
    #[error(
        "HSS accepts another secret key for access key {key}: this secret key is wrong and was not sent"
    )]
    OtherSecretKey { key: String },
}

impl Guarded {
    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Guarded::Refused { .. } => "key_guarded",
            Guarded::OtherSecretKey { .. } => "wrong_secret_key",
        }
    }
}

/// What may be shown of an access key id: its first four characters.
pub fn key_prefix(ak: &str) -> String {
    let shown: String = ak.chars().take(4).collect();
    format!("{shown}...")
}

/// The guard of every access key a process signs with; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct KeyGuard {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGuard")
            .field("keys", &self.inner.lock().len())
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    keys: Mutex<HashMap<String, Entry>>,
    /// Woken whenever a probe ends.
    changed: tokio::sync::Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Entry {
    /// The secret key HSS accepted.
    accepted: Option<SecretString>,
    /// HSS refused a signature and no holder has changed since.
    refused: bool,
    /// While refused: the secret key of a holder that changed, allowed one try.
    candidate: Option<SecretString>,
    /// A call with a secret key not yet accepted is in flight.
    probing: bool,
    /// The version last seen of each holder.
    holders: HashMap<String, String>,
}

fn same(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

enum Decision {
    Pass { probe: bool },
    Wait,
    No(Guarded),
}

impl Entry {
    fn decide(&self, ak: &str, sk: &SecretString) -> Decision {
        match &self.accepted {
            Some(good) if same(good, sk) => return Decision::Pass { probe: false },
            Some(_) => {
                return Decision::No(Guarded::OtherSecretKey {
                    key: key_prefix(ak),
                });
            }
            None => {}
        }
        if self.refused && !self.candidate.as_ref().is_some_and(|c| same(c, sk)) {
            return Decision::No(Guarded::Refused {
                key: key_prefix(ak),
            });
        }
        if self.probing {
            Decision::Wait
        } else {
            Decision::Pass { probe: true }
        }
    }
}

impl KeyGuard {
    /// Whether `credentials`, held by `holder` at `version`, may sign now (ignoring a probe
    /// in flight, which a call waits for). Records the version; a changed version of a holder
    /// seen before lifts a refusal for its secret key (see the module docs). Credentials that
    /// do not sign with a fixed key always may.
    pub fn check_holder(
        &self,
        credentials: &Credentials,
        holder: &str,
        version: &str,
    ) -> Result<(), Guarded> {
        let Some((ak, sk)) = credentials.signing_key() else {
            return Ok(());
        };
        let mut keys = self.inner.lock();
        let entry = entry(&mut keys, ak);
        if entry.holders.len() >= MAX_HOLDERS && !entry.holders.contains_key(holder) {
            entry.holders.clear();
        }
        let before = entry
            .holders
            .insert(holder.to_string(), version.to_string());
        if entry.refused && before.is_some_and(|v| v != version) {
            entry.candidate = Some(sk.clone());
        }
        match entry.decide(ak, sk) {
            Decision::No(why) => Err(why),
            Decision::Pass { .. } | Decision::Wait => Ok(()),
        }
    }

    /// Waits until a call signed with `ak`/`sk` may be sent. The returned pass must be told
    /// HSS's answer ([`Pass::answered`]); dropped unanswered (nothing came back), it says
    /// nothing about the key.
    pub async fn admit(&self, ak: &str, sk: &SecretString) -> Result<Pass, Guarded> {
        loop {
            let changed = self.inner.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the state is read, so no wake-up is lost in between.
            changed.as_mut().enable();
            {
                let mut keys = self.inner.lock();
                let entry = entry(&mut keys, ak);
                match entry.decide(ak, sk) {
                    Decision::No(why) => return Err(why),
                    Decision::Pass { probe } => {
                        entry.probing |= probe;
                        return Ok(Pass {
                            inner: self.inner.clone(),
                            ak: ak.to_string(),
                            sk: sk.clone(),
                            probe,
                        });
                    }
                    Decision::Wait => {}
                }
            }
            changed.await;
        }
    }

    /// How many access keys are remembered (for tests and bounds).
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn entry<'a>(keys: &'a mut HashMap<String, Entry>, ak: &str) -> &'a mut Entry {
    if keys.len() >= MAX_KEYS && !keys.contains_key(ak) {
        keys.retain(|_, e| e.refused || e.probing);
    }
    keys.entry(ak.to_string()).or_default()
}

/// Leave to sign one call; see [`KeyGuard::admit`].
pub struct Pass {
    inner: Arc<Inner>,
    ak: String,
    sk: SecretString,
    probe: bool,
}

impl Pass {
    /// HSS answered the call with `status`: 2xx accepts the secret key, 401 refuses the
    /// access key; anything else says nothing about it.
    pub fn answered(self, status: u16) {
        {
            let mut keys = self.inner.lock();
            let entry = entry(&mut keys, &self.ak);
            match status {
                200..=299 => {
                    entry.accepted = Some(self.sk.clone());
                    entry.refused = false;
                    entry.candidate = None;
                }
                401 => {
                    tracing::warn!(
                        access_key = %key_prefix(&self.ak),
                        "HSS refused a signature: the access key is guarded until a Secret holding it changes"
                    );
                    entry.accepted = None;
                    entry.refused = true;
                    entry.candidate = None;
                }
                _ => {}
            }
        }
        // Drop releases the probe and wakes the waiters.
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.probe {
            if let Some(entry) = self.inner.lock().get_mut(&self.ak) {
                entry.probing = false;
            }
            self.inner.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "AKTEAMKEY0000000001";

    fn creds(sk: &str) -> Credentials {
        Credentials::permanent(AK, sk).expect("valid")
    }

    fn sk(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[tokio::test]
    async fn one_refused_signature_guards_the_key_for_every_secret_key() {
        let guard = KeyGuard::default();
        guard
            .admit(AK, &sk("wrong-1"))
            .await
            .expect("first try")
            .answered(401);
        // (secret key, reason)
        for (key, why) in [
            ("wrong-1", "the refused one"),
            ("wrong-2", "another wrong one"),
            ("right", "even the right one: nobody knows which it is"),
        ] {
            assert!(
                matches!(
                    guard.admit(AK, &sk(key)).await,
                    Err(Guarded::Refused { .. })
                ),
                "{why}"
            );
            assert!(
                guard
                    .check_holder(&creds(key), &format!("secret:ns/{key}"), "v1")
                    .is_err(),
                "{why}"
            );
        }
    }

    #[tokio::test]
    async fn calls_with_an_unproven_key_wait_for_the_probe_in_flight() {
        let guard = KeyGuard::default();
        let probe = guard.admit(AK, &sk("wrong-1")).await.expect("probe");
        let (two, one) = (sk("wrong-2"), sk("wrong-1"));
        let mut second = Box::pin(guard.admit(AK, &two));
        let mut same_key = Box::pin(guard.admit(AK, &one));
        assert!(futures_poll(&mut second).is_none(), "waits, not sent");
        assert!(
            futures_poll(&mut same_key).is_none(),
            "the same key waits too"
        );
        probe.answered(401);
        assert!(matches!(second.await, Err(Guarded::Refused { .. })));
        assert!(matches!(same_key.await, Err(Guarded::Refused { .. })));
    }

    #[tokio::test]
    async fn an_accepted_key_passes_concurrently_and_another_secret_key_is_never_sent() {
        let guard = KeyGuard::default();
        guard
            .admit(AK, &sk("right"))
            .await
            .expect("probe")
            .answered(200);
        let a = guard
            .admit(AK, &sk("right"))
            .await
            .expect("no probe needed");
        let b = guard.admit(AK, &sk("right")).await.expect("concurrently");
        assert!(matches!(
            guard.admit(AK, &sk("wrong")).await,
            Err(Guarded::OtherSecretKey { .. })
        ));
        a.answered(200);
        drop(b);
    }

    #[tokio::test]
    async fn a_probe_that_got_no_answer_says_nothing_and_releases_the_key() {
        let guard = KeyGuard::default();
        let probe = guard.admit(AK, &sk("one")).await.expect("probe");
        let two = sk("two");
        let mut next = Box::pin(guard.admit(AK, &two));
        assert!(futures_poll(&mut next).is_none());
        drop(probe); // a connection error: HSS never saw the signature
        next.await.expect("the next one may try").answered(503);
        guard
            .admit(AK, &sk("one"))
            .await
            .expect("a 5xx says nothing");
    }

    #[tokio::test]
    async fn a_changed_holder_lifts_the_guard_for_its_own_secret_key_only() {
        let guard = KeyGuard::default();
        for holder in ["a", "b", "c"] {
            guard
                .check_holder(&creds(&format!("wrong-{holder}")), holder, "v1")
                .expect("nothing known yet");
        }
        guard
            .admit(AK, &sk("wrong-a"))
            .await
            .expect("a tries")
            .answered(401);
        assert!(
            guard.check_holder(&creds("wrong-b"), "b", "v1").is_err(),
            "unchanged"
        );
        assert!(
            guard.check_holder(&creds("new-d"), "d", "v1").is_err(),
            "a holder first seen while guarded is only recorded"
        );
        // b's Secret changes (now the right key): b, and only b, may try.
        guard
            .check_holder(&creds("right"), "b", "v2")
            .expect("changed");
        assert!(guard.check_holder(&creds("wrong-c"), "c", "v1").is_err());
        assert!(matches!(
            guard.admit(AK, &sk("wrong-c")).await,
            Err(Guarded::Refused { .. })
        ));
        guard
            .admit(AK, &sk("right"))
            .await
            .expect("b tries")
            .answered(200);
        assert_eq!(
            guard.check_holder(&creds("wrong-c"), "c", "v1"),
            Err(Guarded::OtherSecretKey {
                key: "AKTE...".into()
            }),
            "c's key is known wrong now, without a signature"
        );
        guard
            .check_holder(&creds("right"), "c", "v2")
            .expect("c fixed");
        guard
            .check_holder(&creds("right"), "d", "v1")
            .expect("same key as accepted");
    }

    #[tokio::test]
    async fn a_candidate_refused_again_closes_the_key_again() {
        let guard = KeyGuard::default();
        guard
            .check_holder(&creds("wrong-a"), "a", "v1")
            .expect("first");
        guard
            .admit(AK, &sk("wrong-a"))
            .await
            .expect("try")
            .answered(401);
        guard
            .check_holder(&creds("still-wrong"), "a", "v2")
            .expect("changed");
        guard
            .admit(AK, &sk("still-wrong"))
            .await
            .expect("one try")
            .answered(401);
        assert!(
            guard
                .check_holder(&creds("still-wrong"), "a", "v2")
                .is_err()
        );
        assert!(
            guard.admit(AK, &sk("still-wrong")).await.is_err(),
            "no second try"
        );
    }

    #[tokio::test]
    async fn what_is_said_names_only_a_prefix_of_the_access_key() {
        let guard = KeyGuard::default();
        guard
            .admit(AK, &sk("s3cret"))
            .await
            .expect("try")
            .answered(401);
        let why = guard.admit(AK, &sk("s3cret")).await.err().expect("guarded");
        let shown = why.to_string();
        assert!(shown.contains("AKTE..."), "{shown}");
        assert!(!shown.contains(AK), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!format!("{guard:?}").contains(AK));
    }

    #[test]
    fn tokens_and_sources_are_not_guarded() {
        let guard = KeyGuard::default();
        let token = Credentials::token("t").expect("ok");
        guard.check_holder(&token, "x", "1").expect("no key");
        assert!(guard.is_empty());
    }

    #[tokio::test]
    async fn many_keys_stay_bounded_and_refusals_are_kept() {
        let guard = KeyGuard::default();
        guard
            .admit("AKREFUSED", &sk("x"))
            .await
            .expect("try")
            .answered(401);
        for i in 0..MAX_KEYS + 10 {
            let ak = format!("AK{i:08}");
            guard
                .check_holder(&Credentials::permanent(&ak, "s").expect("ok"), "h", "1")
                .expect("unknown keys may try");
        }
        assert!(guard.len() <= MAX_KEYS + 1, "{}", guard.len());
        assert!(guard.admit("AKREFUSED", &sk("x")).await.is_err(), "kept");
    }

    /// Polls once: `Some` when the future finished.
    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
