//! Who may read `/metrics`: the bearer token of a request authenticated by the API server
//! (TokenReview), and its user authorized for `get` on the non-resource URL `/metrics`
//! (SubjectAccessReview), as controller-runtime's secure metrics (`filters.
//! WithAuthenticationAndAuthorization`) and kube-rbac-proxy decide. [`Gate::check`] gives the
//! [`Verdict`]; [`super::secure_metrics`] turns it into the answer.
//!
//! # Guarantees
//! - No bearer token (no `Authorization` header, another scheme, an empty token): `401`, and
//!   the API server is not asked. A token the TokenReview does not authenticate: `401`. An
//!   authenticated user whom the SubjectAccessReview does not allow `get /metrics`: `403`.
//!   Only an allowed one gets the metrics.
//! - The SubjectAccessReview carries exactly what the TokenReview answered: user name, uid,
//!   groups and extra (a ServiceAccount token's pod and node bindings included), so RBAC
//!   decides as it would for the same request to the API server.
//! - The token itself is never kept, logged or printed: the cache is keyed by its SHA-256
//!   ([`TokenKey`], whose `Debug` shows nothing of it), and nothing here derives `Debug` over
//!   a token.
//! - Answers are cached briefly ([`CacheConfig`]: an allowed token 30 s, a refused one 10 s,
//!   1,024 tokens at most, the entry nearest expiry evicted first), so a scrape every few
//!   seconds costs the API server two reviews per token and TTL, not per scrape.
//!
//! # Assumptions
//! - The operator's identity may create `tokenreviews.authentication.k8s.io` and
//!   `subjectaccessreviews.authorization.k8s.io` (cluster-scoped; the permission table and the
//!   chart's `<fullname>-metrics-auth` ClusterRole grant it).
//! - Tokens are checked against the API server's default audiences (no `audiences` in the
//!   review), as controller-runtime does: Prometheus presents its ServiceAccount token.
//!
//! # Caveats
//! - A revoked token, or a RoleBinding removed, keeps its cached answer until the TTL ends
//!   (30 s at most for an allowed one).
//! - Every distinct unknown token costs one TokenReview (refusals are cached per token only):
//!   whoever can reach the port can make the operator send reviews, at the rate its requests
//!   arrive. A NetworkPolicy (`networkPolicy.metricsFrom`) limits who reaches it.
//! - Concurrent first requests with the same token each send their own reviews.
//!
//! # Errors
//! A review the API server does not answer ([`Error::TokenReview`],
//! [`Error::SubjectAccessReview`]) is [`Verdict::Unavailable`] (a `503`), never cached and
//! never taken as allowed.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Mutex,
    time::Duration,
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// The non-resource URL and verb a reader needs, as in the chart's metrics-reader ClusterRole.
pub const METRICS_PATH: &str = "/metrics";
pub const METRICS_VERB: &str = "get";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to review the bearer token (TokenReview)")]
    TokenReview(#[source] kube::Error),
    #[error("failed to authorize the user (SubjectAccessReview)")]
    SubjectAccessReview(#[source] kube::Error),
}

impl Error {
    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::TokenReview(_) => "token_review",
            Error::SubjectAccessReview(_) => "subject_access_review",
        }
    }
}

/// What the answer to a request for `/metrics` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated and allowed: `200` with the metrics.
    Allowed,
    /// No bearer token, or one the API server does not authenticate: `401`.
    Unauthenticated,
    /// Authenticated, but not allowed `get /metrics`: `403`.
    Forbidden,
    /// The API server did not answer a review: `503`, not cached.
    Unavailable,
}

impl Verdict {
    /// The HTTP status of the answer.
    pub fn status(self) -> u16 {
        match self {
            Verdict::Allowed => 200,
            Verdict::Unauthenticated => 401,
            Verdict::Forbidden => 403,
            Verdict::Unavailable => 503,
        }
    }
}

/// The user a TokenReview authenticated: what the SubjectAccessReview is asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The token of an `Authorization: Bearer TOKEN` header value; `None` for anything else
/// (another scheme, an empty token). The scheme is case-insensitive (RFC 9110). Pure.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// The verdict for one token from the reviews' answers: `None` for a token that did not
/// authenticate, else whether the user is allowed. Pure.
pub fn decide(authorized: Option<bool>) -> Verdict {
    match authorized {
        None => Verdict::Unauthenticated,
        Some(false) => Verdict::Forbidden,
        Some(true) => Verdict::Allowed,
    }
}

/// The cache key of a token: its SHA-256. `Debug` prints nothing of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// How long answers are kept, and for how many tokens.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub allowed_ttl: Duration,
    pub denied_ttl: Duration,
    pub capacity: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            allowed_ttl: Duration::from_secs(30),
            denied_ttl: Duration::from_secs(10),
            capacity: 1024,
        }
    }
}

/// Verdicts by token hash, each until its expiry; bounded. Time is Tokio's (paused in tests).
#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
    entries: HashMap<TokenKey, (Verdict, Instant)>,
}

impl Cache {
    pub fn new(config: CacheConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
        }
    }

    /// The cached verdict, if it has not expired at `now`.
    pub fn get(&self, key: &TokenKey, now: Instant) -> Option<Verdict> {
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| *v)
    }

    /// Keeps `verdict` for its TTL from `now` ([`Verdict::Unavailable`] is not kept). When
    /// full: expired entries go first, then the one nearest expiry.
    pub fn put(&mut self, key: TokenKey, verdict: Verdict, now: Instant) {
        let ttl = match verdict {
            Verdict::Allowed => self.config.allowed_ttl,
            Verdict::Unauthenticated | Verdict::Forbidden => self.config.denied_ttl,
            Verdict::Unavailable => return,
        };
        if self.config.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.config.capacity {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.config.capacity
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (verdict, now + ttl));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The two reviews, asked of the API server ([`KubeReviews`]) or, in tests, of a fake.
pub trait Reviews: Send + Sync + 'static {
    /// The user the token belongs to; `None` when it does not authenticate.
    fn authenticate(&self, token: &str)
    -> impl Future<Output = Result<Option<User>, Error>> + Send;

    /// Whether `user` may `get` the non-resource URL `/metrics`.
    fn authorize(&self, user: &User) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// [`Reviews`] by the API server: TokenReview and SubjectAccessReview.
#[derive(Clone)]
pub struct KubeReviews {
    client: Client,
}

impl KubeReviews {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Reviews for KubeReviews {
    async fn authenticate(&self, token: &str) -> Result<Option<User>, Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(Error::TokenReview)?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let info = status.user.unwrap_or_default();
        Ok(info.username.filter(|n| !n.is_empty()).map(|name| User {
            name,
            uid: info.uid,
            groups: info.groups.unwrap_or_default(),
            extra: info.extra.unwrap_or_default(),
        }))
    }

    async fn authorize(&self, user: &User) -> Result<bool, Error> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(METRICS_PATH.into()),
                    verb: Some(METRICS_VERB.into()),
                }),
                resource_attributes: None,
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(Error::SubjectAccessReview)?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

/// The reviews behind a cache: one call per request for `/metrics`.
pub struct Gate<R> {
    reviews: R,
    cache: Mutex<Cache>,
}

impl<R: Reviews> Gate<R> {
    pub fn new(reviews: R, config: CacheConfig) -> Self {
        Self {
            reviews,
            cache: Mutex::new(Cache::new(config)),
        }
    }

    /// The verdict for a request with this `Authorization` header value.
    pub async fn check(&self, authorization: Option<&str>) -> Verdict {
        let Some(token) = bearer_token(authorization) else {
            return Verdict::Unauthenticated;
        };
        let key = TokenKey::of(token);
        if let Some(v) = self.lock().get(&key, Instant::now()) {
            return v;
        }
        let verdict = match self.review(token).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(category = e.category(), error = %crate::report_error(&e), "metrics request not reviewed");
                Verdict::Unavailable
            }
        };
        self.lock().put(key, verdict, Instant::now());
        verdict
    }

    async fn review(&self, token: &str) -> Result<Verdict, Error> {
        let Some(user) = self.reviews.authenticate(token).await? else {
            return Ok(decide(None));
        };
        let allowed = self.reviews.authorize(&user).await?;
        if !allowed {
            tracing::debug!(user = %user.name, "metrics request forbidden");
        }
        Ok(decide(Some(allowed)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn only_a_non_empty_bearer_token_is_a_token() {
        let cases = [
            (None, None, "no header"),
            (Some("Bearer abc"), Some("abc"), "the usual form"),
            (
                Some("bearer abc"),
                Some("abc"),
                "the scheme is case-insensitive",
            ),
            (
                Some("Bearer   abc "),
                Some("abc"),
                "spaces around the token",
            ),
            (Some("Bearer "), None, "an empty token"),
            (Some("Bearer"), None, "no token at all"),
            (Some("Basic dXNlcjpwdw=="), None, "another scheme"),
            (Some("Bearer a b"), None, "two words are not a token"),
            (Some("abc"), None, "a bare token without a scheme"),
        ];
        for (header, want, why) in cases {
            assert_eq!(bearer_token(header), want, "{why}");
        }
    }

    #[test]
    fn the_verdict_follows_the_reviews() {
        assert_eq!(decide(None), Verdict::Unauthenticated);
        assert_eq!(decide(Some(false)), Verdict::Forbidden);
        assert_eq!(decide(Some(true)), Verdict::Allowed);
        let statuses: Vec<u16> = [
            Verdict::Allowed,
            Verdict::Unauthenticated,
            Verdict::Forbidden,
            Verdict::Unavailable,
        ]
        .map(Verdict::status)
        .into();
        assert_eq!(statuses, [200, 401, 403, 503]);
    }

    #[test]
    fn the_token_key_shows_nothing_of_the_token() {
        let key = TokenKey::of("s3cr3t-token");
        assert_eq!(format!("{key:?}"), "TokenKey(..)");
        assert_eq!(key, TokenKey::of("s3cr3t-token"));
        assert_ne!(key, TokenKey::of("s3cr3t-tokeN"));
    }

    #[tokio::test(start_paused = true)]
    async fn cache_is_bounded_and_evicts_expired_then_nearest_expiry() {
        let config = CacheConfig {
            allowed_ttl: Duration::from_secs(30),
            denied_ttl: Duration::from_secs(10),
            capacity: 2,
        };
        let mut cache = Cache::new(config);
        let t0 = Instant::now();
        let (a, b, c) = (TokenKey::of("a"), TokenKey::of("b"), TokenKey::of("c"));
        cache.put(a, Verdict::Allowed, t0);
        cache.put(b, Verdict::Forbidden, t0);
        cache.put(c, Verdict::Allowed, t0);
        assert_eq!(cache.len(), 2, "never more than the capacity");
        assert_eq!(
            cache.get(&b, t0),
            None,
            "the entry nearest expiry (a refusal) went first"
        );
        assert_eq!(cache.get(&a, t0), Some(Verdict::Allowed));
        assert_eq!(cache.get(&c, t0), Some(Verdict::Allowed));
        cache.put(TokenKey::of("d"), Verdict::Unavailable, t0);
        assert_eq!(cache.len(), 2, "an unanswered review is not kept");
    }

    /// Counts the reviews; tokens "reader" (allowed) and "other" (not allowed) authenticate.
    #[derive(Default)]
    struct Fake {
        authn: AtomicUsize,
        authz: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    impl Reviews for std::sync::Arc<Fake> {
        async fn authenticate(&self, token: &str) -> Result<Option<User>, Error> {
            self.authn.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::TokenReview(
                    kube::Error::LinesCodecMaxLineLengthExceeded,
                ));
            }
            Ok(["reader", "other"].contains(&token).then(|| User {
                name: format!("system:serviceaccount:ns:{token}"),
                ..Default::default()
            }))
        }

        async fn authorize(&self, user: &User) -> Result<bool, Error> {
            self.authz.fetch_add(1, Ordering::SeqCst);
            Ok(user.name.ends_with(":reader"))
        }
    }

    fn calls(f: &Fake) -> (usize, usize) {
        (
            f.authn.load(Ordering::SeqCst),
            f.authz.load(Ordering::SeqCst),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_cached_per_token_until_their_ttl_ends() {
        let fake = std::sync::Arc::new(Fake::default());
        let gate = Gate::new(fake.clone(), CacheConfig::default());

        assert_eq!(gate.check(None).await, Verdict::Unauthenticated);
        assert_eq!(
            gate.check(Some("Basic abc")).await,
            Verdict::Unauthenticated
        );
        assert_eq!(
            calls(&fake),
            (0, 0),
            "no token: the API server is not asked"
        );

        assert_eq!(gate.check(Some("Bearer reader")).await, Verdict::Allowed);
        assert_eq!(gate.check(Some("Bearer other")).await, Verdict::Forbidden);
        assert_eq!(
            gate.check(Some("Bearer forged")).await,
            Verdict::Unauthenticated
        );
        assert_eq!(
            calls(&fake),
            (3, 2),
            "an unauthenticated token is not authorized"
        );

        tokio::time::advance(Duration::from_secs(9)).await;
        for _ in 0..5 {
            assert_eq!(gate.check(Some("Bearer reader")).await, Verdict::Allowed);
            assert_eq!(gate.check(Some("Bearer other")).await, Verdict::Forbidden);
            assert_eq!(
                gate.check(Some("Bearer forged")).await,
                Verdict::Unauthenticated
            );
        }
        assert_eq!(
            calls(&fake),
            (3, 2),
            "within the TTLs every answer is cached"
        );

        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(gate.check(Some("Bearer other")).await, Verdict::Forbidden);
        assert_eq!(gate.check(Some("Bearer reader")).await, Verdict::Allowed);
        assert_eq!(
            calls(&fake),
            (4, 3),
            "after 10 s a refusal is asked again, not an allowance"
        );

        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(gate.check(Some("Bearer reader")).await, Verdict::Allowed);
        assert_eq!(
            calls(&fake),
            (5, 4),
            "after 30 s an allowance is asked again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_review_is_unavailable_and_asked_again_next_time() {
        let fake = std::sync::Arc::new(Fake::default());
        let gate = Gate::new(fake.clone(), CacheConfig::default());
        fake.down.store(true, Ordering::SeqCst);
        assert_eq!(
            gate.check(Some("Bearer reader")).await,
            Verdict::Unavailable
        );
        fake.down.store(false, Ordering::SeqCst);
        assert_eq!(gate.check(Some("Bearer reader")).await, Verdict::Allowed);
        assert_eq!(calls(&fake), (2, 1), "the failure was not cached");
    }
}
