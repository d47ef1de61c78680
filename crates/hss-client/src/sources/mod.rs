//! Where the operator's own identity comes from without long-lived keys: the credential
//! sources of the official Huawei Cloud SDK (`huaweicloudsdkcore/auth/provider.py` and
//! `internal.py`, 3.1.219), named and wired as the SDK does.
//!
//! - [`SourceKind::Env`]: `HUAWEICLOUD_SDK_AK`/`_SK`/`_SECURITY_TOKEN` (or `CLOUD_SDK_AK`/`_SK`,
//!   the names the HSS API pages use), or `HUAWEICLOUD_SDK_IDP_ID` + `_ID_TOKEN_FILE`
//!   (federation).
//! - [`SourceKind::Federation`]: IAM `POST /v3.0/OS-AUTH/id-token/tokens` (`X-Idp-Id`, the token
//!   in `X-Subject-Token`), then `POST /v3.0/OS-CREDENTIAL/securitytokens`.
//! - [`SourceKind::Oidc`]: STS `POST /v5/agencies/assume-with-oidc`.
//! - [`SourceKind::Profile`]: the SDK's credentials file, section `[basic]`.
//! - [`SourceKind::Metadata`]: ECS agency, `PUT /meta-data/latest/api/token` then
//!   `GET /openstack/latest/securitykey` on 169.254.169.254.
//! - [`SourceKind::PodIdentity`]: CCE Pod Identity, `POST $HC_CONTAINER_CREDENTIALS_FULL_URI`
//!   with the token file's content as `Authorization`.
//! - [`SourceKind::Chain`]: the SDK's basic chain, in its order (OIDC STS, env, profile,
//!   metadata, pod identity); [`crate::chain::choose`] picks.
//!
//! # Guarantees
//! - Temporary credentials are cached in a [`Provider`] and replaced [`REFRESH_BEFORE`] their
//!   expiry (the SDK's 40 minutes), or at half their lifetime when they live no longer than
//!   that (the SDK would fetch before every call then). One fetch is in flight at a time; callers wait for
//!   it and share its result.
//! - Token files (projected ServiceAccount tokens the kubelet rotates) are read again on every
//!   fetch, never cached.
//! - A 401 from HSS with cached temporary credentials drops them once ([`Provider::refused`]):
//!   the next call fetches new ones. A 401 with credentials fetched for that very call is
//!   final: no loop of fetch, 401, fetch.
//! - Secrets (keys, tokens, ID tokens) live in [`SecretString`]; `Debug` shows the source and
//!   the access key id only.
//!
//! # Assumptions
//! - The wall clock is roughly right: `expires_at` is absolute. It is turned into a Tokio
//!   deadline once, when fetched, so refresh timing follows Tokio time (testable paused).
//! - Credential documents look like the SDK's `_process_credential` accepts: an optional
//!   `credential`/`credentials` wrapper, `access`/`accessKeyId`/`access_key_id`, ..., and
//!   `expires_at`/`expiration` in RFC 3339.
//!
//! # Caveats
//! - Hand-written: the SDK's providers exist only in the official SDKs (no Rust crate
//!   implements these endpoints), and each is one or two plain HTTP calls.
//! - Metadata and pod-identity endpoints are plain http by design (link-local); IAM and STS
//!   endpoints must be https unless insecure endpoints are allowed (tests, the simulator).
//!
//! # Errors
//! [`Error`], with a bounded [`Error::category`]; server text is bounded before it is kept.

pub mod fetch;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use secrecy::SecretString;

use fetch::Fetcher;

/// Temporary credentials are replaced this long before they expire (the SDK's threshold).
pub const REFRESH_BEFORE: Duration = Duration::from_secs(40 * 60);

/// Which source `--credentials-source` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SourceKind {
    /// Flags or their environment names, then `--credentials-secret`, then the SDK's chain.
    Auto,
    /// Only `--access-key`/`--secret-key`(/`--security-token`) or `--auth-token`.
    Static,
    /// The SDK's EnvCredentialProvider: AK/SK or IdP federation from the environment.
    Env,
    /// IAM identity-provider federation with an ID token file.
    Federation,
    /// STS assume-agency-with-OIDC.
    Oidc,
    /// The SDK's credentials file.
    Profile,
    /// ECS agency through the metadata service.
    Metadata,
    /// CCE Pod Identity.
    PodIdentity,
    /// The SDK's basic chain: OIDC STS, env, profile, metadata, pod identity.
    Chain,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Auto => "auto",
            SourceKind::Static => "static",
            SourceKind::Env => "env",
            SourceKind::Federation => "federation",
            SourceKind::Oidc => "oidc",
            SourceKind::Profile => "profile",
            SourceKind::Metadata => "metadata",
            SourceKind::PodIdentity => "pod-identity",
            SourceKind::Chain => "chain",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source is not set up here (variables unset, file missing).
    #[error("{source_name} is not configured: {reason}")]
    NotConfigured {
        source_name: &'static str,
        reason: String,
    },
    /// The source is set up but unusable (unreadable token file, bad endpoint).
    #[error("{source_name} is misconfigured: {reason}")]
    Misconfigured {
        source_name: &'static str,
        reason: String,
    },
    #[error("failed to reach {source_name} at {url}")]
    Transport {
        source_name: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The identity was refused (revoked, not associated, token rejected).
    #[error("{source_name} refused the identity: HTTP {status}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        source_name: &'static str,
        status: u16,
        detail: Option<String>,
    },
    #[error("{source_name} answered HTTP {status}")]
    Unavailable {
        source_name: &'static str,
        status: u16,
    },
    #[error("{source_name} answered with no usable credentials: {reason}")]
    BadReply {
        source_name: &'static str,
        reason: String,
    },
    #[error("no credential source worked: {}", .0.join("; "))]
    ChainExhausted(Vec<String>),
}

impl Error {
    /// The source that failed (`chain` when none worked).
    pub fn source_name(&self) -> &'static str {
        match self {
            Error::NotConfigured { source_name, .. }
            | Error::Misconfigured { source_name, .. }
            | Error::Transport { source_name, .. }
            | Error::Refused { source_name, .. }
            | Error::Unavailable { source_name, .. }
            | Error::BadReply { source_name, .. } => source_name,
            Error::ChainExhausted(_) => "chain",
        }
    }

    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::NotConfigured { .. } => "source_not_configured",
            Error::Misconfigured { .. } => "source_misconfigured",
            Error::Transport { .. } => "source_unreachable",
            Error::Refused { .. } => "identity_refused",
            Error::Unavailable { .. } => "source_unavailable",
            Error::BadReply { .. } => "source_bad_reply",
            Error::ChainExhausted(_) => "no_source",
        }
    }
}

/// One set of temporary credentials and how long it lives.
#[derive(Clone)]
pub struct Temporary {
    pub ak: String,
    pub sk: SecretString,
    pub security_token: SecretString,
    /// From the fetch to `expires_at`, by the wall clock at fetch time.
    pub lifetime: Duration,
}

impl std::fmt::Debug for Temporary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Temporary")
            .field("ak", &self.ak)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// When cached credentials of `lifetime` are replaced: [`REFRESH_BEFORE`] their end, or at
/// half their lifetime when they live no longer than that (the SDK would fetch before every
/// call). Pure.
pub fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime > REFRESH_BEFORE {
        lifetime - REFRESH_BEFORE
    } else {
        lifetime / 2
    }
}

/// Which fetch produced the credentials a call used; see [`Provider::refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    pub number: u64,
    /// Fetched for this very call (a 401 then is final).
    pub fresh: bool,
}

struct Held {
    credentials: Temporary,
    refresh_at: tokio::time::Instant,
    generation: u64,
}

/// Cached temporary credentials from one [`Fetcher`]; see the module docs.
pub struct Provider {
    fetcher: Fetcher,
    http: reqwest::Client,
    held: tokio::sync::Mutex<Option<Held>>,
    generations: AtomicU64,
    fetches: AtomicU64,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("source", &self.fetcher.name())
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub fn new(fetcher: Fetcher, http: reqwest::Client) -> Arc<Self> {
        Arc::new(Self {
            fetcher,
            http,
            held: tokio::sync::Mutex::new(None),
            generations: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        })
    }

    /// The source's name, as `--credentials-source` spells it.
    pub fn name(&self) -> &'static str {
        self.fetcher.name()
    }

    /// What the source is, for the start-up log: endpoints and file paths, never a secret.
    pub fn describe(&self) -> String {
        self.fetcher.describe()
    }

    /// How many fetches were made (for tests and the start-up log).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Valid credentials: the cached ones until their refresh time, else fetched now (one
    /// fetch at a time; waiting callers get its result).
    pub async fn current(&self) -> Result<(Temporary, Generation), Error> {
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_ref()
            && tokio::time::Instant::now() < h.refresh_at
        {
            return Ok((
                h.credentials.clone(),
                Generation {
                    number: h.generation,
                    fresh: false,
                },
            ));
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let credentials = self.fetcher.fetch(&self.http).await?;
        let number = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let refresh_at = tokio::time::Instant::now() + refresh_after(credentials.lifetime);
        tracing::debug!(
            source = self.name(),
            generation = number,
            lifetime_s = credentials.lifetime.as_secs(),
            "fetched temporary credentials"
        );
        *held = Some(Held {
            credentials: credentials.clone(),
            refresh_at,
            generation: number,
        });
        Ok((
            credentials,
            Generation {
                number,
                fresh: true,
            },
        ))
    }

    /// HSS refused credentials of `used`: drops them if still cached and says whether a retry
    /// can help (not when they were fetched for the refused call itself).
    pub async fn refused(&self, used: Generation) -> bool {
        if used.fresh {
            return false;
        }
        let mut held = self.held.lock().await;
        if held.as_ref().is_some_and(|h| h.generation == used.number) {
            *held = None;
        }
        true
    }
}

#[cfg(test)]
mod tests;
