//! Credentials for HSS: permanent AK/SK, temporary AK/SK with a security token, or IAM tokens.
//!
//! Secrets live in [`secrecy::SecretString`]; `Debug` never prints them and there is no
//! `Display`. The [`Credentials::identity`] used for rate budgets is the access key id or a
//! short fingerprint of a token, never the secret itself.
//!
//! IAM tokens come either as a fixed string (from a Secret) or from [`IamTokenProvider`], which
//! exchanges a password for a token at `POST /v3/auth/tokens`, reads it from the
//! `X-Subject-Token` header, caches it and fetches a new one [`REFRESH_BEFORE`] its expiry.
//! Concurrent callers share one fetch.
//!
//! Temporary credentials from a source without long-lived keys (pod identity, ECS agency,
//! federation, OIDC) are [`Credentials::Provided`]: see [`super::sources`].
//!
//! After a 401 ([`Credentials::refused`]): provided credentials and IAM tokens are fetched
//! anew once, if the refused ones came from the cache; fixed temporary credentials (a
//! Secret's security token) are marked refused, so their holder waits for new ones instead of
//! sending them again; permanent AK/SK are never retried (HSS locks them after repeated
//! signature failures).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    endpoint::Endpoint,
    sources::{self, Generation, Provider},
};

/// A cached IAM token is replaced this long before it expires.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(10 * 60);
/// Assumed lifetime when IAM does not say (documented: 24 h).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read credentials: {0}")]
    Invalid(String),
    #[error("failed to reach IAM for a token")]
    IamTransport(#[source] reqwest::Error),
    #[error("failed to get an IAM token: IAM answered HTTP {status}")]
    IamRejected { status: u16 },
    #[error("failed to get an IAM token: the reply had no X-Subject-Token header")]
    IamNoToken,
    #[error("failed to get temporary credentials from {}", .0.source_name())]
    Source(#[source] sources::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid_credentials",
            Error::IamTransport(_) => "iam_unreachable",
            Error::IamRejected { .. } => "iam_rejected",
            Error::IamNoToken => "iam_bad_reply",
            Error::Source(e) => e.category(),
        }
    }
}

/// What signs or authenticates a request.
#[derive(Clone)]
pub enum Credentials {
    /// AK/SK signing; `security_token` makes them temporary credentials.
    AkSk {
        ak: String,
        sk: SecretString,
        security_token: Option<SecretString>,
        /// HSS refused these temporary credentials once (shared by clones).
        refused: Arc<AtomicBool>,
    },
    /// `X-Auth-Token` from a fixed token or an IAM provider.
    Token(Arc<TokenSource>),
    /// Temporary AK/SK + security token from a source, refreshed before expiry.
    Provided(Arc<Provider>),
}

/// Where an IAM token comes from.
pub enum TokenSource {
    Static(SecretString),
    Iam(Box<IamTokenProvider>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::AkSk {
                ak, security_token, ..
            } => f
                .debug_struct("AkSk")
                .field("ak", ak)
                .field("sk", &"[REDACTED]")
                .field("temporary", &security_token.is_some())
                .finish(),
            Credentials::Token(source) => match source.as_ref() {
                TokenSource::Static(_) => f.write_str("Token([REDACTED])"),
                TokenSource::Iam(p) => f
                    .debug_struct("IamToken")
                    .field("user", &p.user)
                    .field("domain", &p.domain)
                    .finish_non_exhaustive(),
            },
            Credentials::Provided(p) => write!(f, "Provided({})", p.name()),
        }
    }
}

fn non_empty(name: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::Invalid(format!("{name} is empty")));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(format!(
            "{name} contains control characters"
        )));
    }
    Ok(())
}

impl Credentials {
    /// Permanent AK/SK.
    pub fn permanent(ak: &str, sk: &str) -> Result<Self, Error> {
        non_empty("access key", ak)?;
        non_empty("secret key", sk)?;
        Ok(Credentials::AkSk {
            ak: ak.trim().to_string(),
            sk: SecretString::from(sk.trim().to_string()),
            security_token: None,
            refused: Arc::default(),
        })
    }

    /// Temporary AK/SK plus security token (`X-Security-Token`, signed).
    pub fn temporary(ak: &str, sk: &str, security_token: &str) -> Result<Self, Error> {
        non_empty("security token", security_token)?;
        let Credentials::AkSk { ak, sk, .. } = Self::permanent(ak, sk)? else {
            unreachable!("permanent() builds AkSk")
        };
        Ok(Credentials::AkSk {
            ak,
            sk,
            security_token: Some(SecretString::from(security_token.trim().to_string())),
            refused: Arc::default(),
        })
    }

    /// A fixed IAM token (`X-Auth-Token`).
    pub fn token(token: &str) -> Result<Self, Error> {
        non_empty("auth token", token)?;
        Ok(Credentials::Token(Arc::new(TokenSource::Static(
            SecretString::from(token.trim().to_string()),
        ))))
    }

    /// Tokens fetched from IAM with a password, cached until shortly before expiry.
    pub fn iam(provider: IamTokenProvider) -> Self {
        Credentials::Token(Arc::new(TokenSource::Iam(Box::new(provider))))
    }

    /// Opaque, non-secret identity for budgets and logs: `ak:<access key id>` or
    /// `token:<8 hex of the token's SHA-256>` or `iam:<user>@<domain>` or `source:<name>` (one
    /// identity across refreshes: the budget is the user's, not one key's).
    pub fn identity(&self) -> String {
        match self {
            Credentials::AkSk { ak, .. } => format!("ak:{ak}"),
            Credentials::Token(source) => match source.as_ref() {
                TokenSource::Static(t) => {
                    let digest = super::signer::hex_sha256(t.expose_secret().as_bytes());
                    format!("token:{}", &digest[..8])
                }
                TokenSource::Iam(p) => format!("iam:{}@{}", p.user, p.domain),
            },
            Credentials::Provided(p) => format!("source:{}", p.name()),
        }
    }

    /// Whether HSS refused these fixed temporary credentials: their holder must wait for new
    /// ones (a changed Secret) instead of sending them again.
    pub fn is_refused(&self) -> bool {
        matches!(self, Credentials::AkSk { refused, .. } if refused.load(Ordering::Relaxed))
    }

    /// The fixed access key id and secret key these credentials sign with, if they do (not
    /// for tokens, nor for a source's keys, which change with every fetch).
    pub fn signing_key(&self) -> Option<(&str, &SecretString)> {
        match self {
            Credentials::AkSk { ak, sk, .. } => Some((ak, sk)),
            _ => None,
        }
    }

    /// The provider behind [`Credentials::Provided`].
    pub fn provider(&self) -> Option<&Arc<Provider>> {
        match self {
            Credentials::Provided(p) => Some(p),
            _ => None,
        }
    }
}

/// Exchanges an IAM user's password for project-scoped tokens.
pub struct IamTokenProvider {
    http: reqwest::Client,
    endpoint: Endpoint,
    user: String,
    domain: String,
    password: SecretString,
    project_id: String,
    cache: tokio::sync::Mutex<Option<(SecretString, tokio::time::Instant)>>,
}

#[derive(Deserialize)]
struct TokenReply {
    token: Option<TokenBody>,
}

#[derive(Deserialize)]
struct TokenBody {
    expires_at: Option<String>,
}

impl IamTokenProvider {
    pub fn new(
        http: reqwest::Client,
        endpoint: Endpoint,
        user: &str,
        domain: &str,
        password: &str,
        project_id: &str,
    ) -> Result<Self, Error> {
        non_empty("IAM user", user)?;
        non_empty("IAM domain", domain)?;
        non_empty("IAM password", password)?;
        Ok(Self {
            http,
            endpoint,
            user: user.to_string(),
            domain: domain.to_string(),
            password: SecretString::from(password.to_string()),
            project_id: project_id.to_string(),
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// A valid token, from the cache or fetched now.
    pub async fn token(&self) -> Result<SecretString, Error> {
        Ok(self.token_with_freshness().await?.0)
    }

    /// A valid token, and whether it was fetched for this call.
    async fn token_with_freshness(&self) -> Result<(SecretString, bool), Error> {
        let mut cache = self.cache.lock().await;
        if let Some((token, refresh_at)) = cache.as_ref()
            && tokio::time::Instant::now() < *refresh_at
        {
            return Ok((token.clone(), false));
        }
        let (token, lifetime) = self.fetch().await?;
        let refresh_in = lifetime.saturating_sub(REFRESH_BEFORE);
        *cache = Some((token.clone(), tokio::time::Instant::now() + refresh_in));
        Ok((token, true))
    }

    /// Forgets the cached token (after a 401).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self) -> Result<(SecretString, Duration), Error> {
        let body = serde_json::json!({
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {
                        "name": self.user,
                        "password": self.password.expose_secret(),
                        "domain": {"name": self.domain},
                    }},
                },
                "scope": {"project": {"id": self.project_id}},
            }
        });
        let resp = self
            .http
            .post(self.endpoint.url("/v3/auth/tokens", ""))
            .json(&body)
            .send()
            .await
            .map_err(Error::IamTransport)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::IamRejected {
                status: status.as_u16(),
            });
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| SecretString::from(v.to_string()))
            .ok_or(Error::IamNoToken)?;
        let lifetime = resp
            .json::<TokenReply>()
            .await
            .ok()
            .and_then(|r| r.token?.expires_at)
            .and_then(|at| at.parse::<jiff::Timestamp>().ok())
            .and_then(|at| {
                let secs = at.as_second() - jiff::Timestamp::now().as_second();
                u64::try_from(secs).ok().map(Duration::from_secs)
            })
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok((token, lifetime))
    }
}

/// Which credentials a call used, so a 401 can be judged ([`Credentials::refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Used {
    Fixed,
    Iam { fresh: bool },
    Provided(Generation),
}

/// What goes on a request for these credentials: either a signing key or an auth token.
pub(crate) enum Auth {
    Sign {
        ak: String,
        sk: SecretString,
        security_token: Option<SecretString>,
    },
    Token(SecretString),
}

impl Credentials {
    pub(crate) async fn auth(&self) -> Result<(Auth, Used), Error> {
        Ok(match self {
            Credentials::AkSk {
                ak,
                sk,
                security_token,
                ..
            } => (
                Auth::Sign {
                    ak: ak.clone(),
                    sk: sk.clone(),
                    security_token: security_token.clone(),
                },
                Used::Fixed,
            ),
            Credentials::Token(source) => match source.as_ref() {
                TokenSource::Static(t) => (Auth::Token(t.clone()), Used::Fixed),
                TokenSource::Iam(p) => {
                    let (token, fresh) = p.token_with_freshness().await?;
                    (Auth::Token(token), Used::Iam { fresh })
                }
            },
            Credentials::Provided(p) => {
                let (t, generation) = p.current().await.map_err(Error::Source)?;
                (
                    Auth::Sign {
                        ak: t.ak,
                        sk: t.sk,
                        security_token: Some(t.security_token),
                    },
                    Used::Provided(generation),
                )
            }
        })
    }

    /// HSS answered 401 to a call that used `used`: whether a retry can help (see the module
    /// docs). Cached provider credentials are dropped; fixed temporary ones marked refused.
    pub(crate) async fn refused(&self, used: Used) -> bool {
        match (self, used) {
            (Credentials::Provided(p), Used::Provided(generation)) => p.refused(generation).await,
            (Credentials::Token(source), Used::Iam { fresh }) => {
                if let TokenSource::Iam(p) = source.as_ref() {
                    p.invalidate().await;
                }
                !fresh
            }
            (
                Credentials::AkSk {
                    security_token: Some(_),
                    refused,
                    ..
                },
                _,
            ) => {
                // Retryable once: the holder then sees `is_refused` and waits for new ones.
                !refused.swap(true, Ordering::Relaxed)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let creds =
            Credentials::temporary("AKID", "very-secret-sk", "sts-token-value").expect("ok");
        let shown = format!("{creds:?}");
        assert!(shown.contains("AKID"));
        assert!(!shown.contains("very-secret-sk"), "{shown}");
        assert!(!shown.contains("sts-token-value"), "{shown}");
        let token = Credentials::token("iam-token-value").expect("ok");
        assert!(!format!("{token:?}").contains("iam-token-value"));
        assert!(!token.identity().contains("iam-token-value"));
        assert!(token.identity().starts_with("token:"));
    }

    #[test]
    fn empty_or_control_character_secrets_are_refused() {
        assert!(Credentials::permanent("", "sk").is_err());
        assert!(Credentials::permanent("ak", " ").is_err());
        assert!(Credentials::permanent("ak", "s\nk").is_err());
        assert!(Credentials::temporary("ak", "sk", "").is_err());
        assert!(Credentials::token("").is_err());
    }

    #[tokio::test]
    async fn a_401_is_retried_once_for_temporary_credentials_and_never_for_permanent_keys() {
        let permanent = Credentials::permanent("ak", "sk").expect("ok");
        assert!(!permanent.refused(Used::Fixed).await, "HSS locks AK/SK");
        assert!(!permanent.is_refused());
        let fixed_token = Credentials::token("t").expect("ok");
        assert!(!fixed_token.refused(Used::Fixed).await);

        let temporary = Credentials::temporary("ak", "sk", "st").expect("ok");
        let held_by_a_client = temporary.clone();
        assert!(temporary.refused(Used::Fixed).await, "one retry");
        assert!(held_by_a_client.is_refused(), "shared by clones");
        assert!(!temporary.refused(Used::Fixed).await, "never a second");
    }
}
