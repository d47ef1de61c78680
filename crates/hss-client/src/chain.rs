//! Turning the environment into a source, as the SDK's providers do: which variables each one
//! reads, and the basic chain's order and rules (a source whose variables are unset is
//! skipped; metadata and pod identity count only once a fetch succeeded, as the SDK's
//! `process_sts(None)` in their `get_credentials` makes them).
//!
//! Above both [`crate::sources`] (the providers) and [`crate::credentials`] (what a call signs
//! with): the chain picks a source and turns it into [`Credentials`].

use std::path::PathBuf;

use secrecy::SecretString;

use crate::{
    credentials::Credentials,
    endpoint::Endpoint,
    sources::{
        Error, Provider, SourceKind,
        fetch::{Fetcher, IdToken, OidcRequest},
    },
};

/// The SDK's defaults.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iam.myhuaweicloud.com";
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.cn-north-4.myhuaweicloud.com";
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";
const DEFAULT_SESSION_NAME: &str = "oidc-sts-session";
const DEFAULT_OIDC_DURATION: u64 = 3600;

/// Environment names, as the SDK spells them.
pub mod env {
    pub const AK: &str = "HUAWEICLOUD_SDK_AK";
    pub const SK: &str = "HUAWEICLOUD_SDK_SK";
    pub const SECURITY_TOKEN: &str = "HUAWEICLOUD_SDK_SECURITY_TOKEN";
    /// The names the HSS API pages' examples use.
    pub const CLOUD_AK: &str = "CLOUD_SDK_AK";
    pub const CLOUD_SK: &str = "CLOUD_SDK_SK";
    pub const IDP_ID: &str = "HUAWEICLOUD_SDK_IDP_ID";
    pub const ID_TOKEN_FILE: &str = "HUAWEICLOUD_SDK_ID_TOKEN_FILE";
    pub const IAM_ENDPOINT: &str = "HUAWEICLOUD_SDK_IAM_ENDPOINT";
    pub const STS_ENDPOINT: &str = "HUAWEICLOUD_SDK_STS_ENDPOINT";
    pub const CREDENTIALS_FILE: &str = "HUAWEICLOUD_SDK_CREDENTIALS_FILE";
    pub const OIDC_PROVIDER_URN: &str = "HUAWEICLOUD_OIDC_PROVIDER_URN";
    pub const OIDC_AGENCY_URN: &str = "HUAWEICLOUD_OIDC_AGENCY_URN";
    pub const OIDC_ID_TOKEN: &str = "HUAWEICLOUD_OIDC_ID_TOKEN";
    pub const OIDC_TOKEN_FILE: &str = "HUAWEICLOUD_OIDC_TOKEN_FILE";
    pub const OIDC_SESSION_NAME: &str = "HUAWEICLOUD_OIDC_SESSION_NAME";
    pub const OIDC_DURATION_SECONDS: &str = "HUAWEICLOUD_OIDC_DURATION_SECONDS";
    pub const OIDC_POLICY: &str = "HUAWEICLOUD_OIDC_POLICY";
    pub const OIDC_POLICY_IDS: &str = "HUAWEICLOUD_OIDC_POLICY_IDS";
    pub const POD_IDENTITY_URI: &str = "HC_CONTAINER_CREDENTIALS_FULL_URI";
    pub const POD_IDENTITY_TOKEN_FILE: &str = "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE";
}

/// What the sources read: the environment (injectable for tests), the HTTP clients, and
/// where the metadata service is.
pub struct Setup<'a> {
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    /// For IAM and STS (federation, OIDC): honours the environment's proxies.
    pub http: reqwest::Client,
    /// For the metadata service and Pod Identity: must be built without proxies
    /// ([`crate::transport::Proxies::Never`]), since their plain-http answers are temporary keys.
    pub direct: reqwest::Client,
    pub metadata_endpoint: String,
    /// Allow plain-http IAM and STS endpoints (tests and the simulator only).
    pub allow_insecure: bool,
}

impl Setup<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn endpoint(
        &self,
        source_name: &'static str,
        var: &str,
        default: &str,
    ) -> Result<Endpoint, Error> {
        let url = self.var(var).unwrap_or_else(|| default.to_string());
        let ep = Endpoint::parse(&url).map_err(|e| Error::Misconfigured {
            source_name,
            reason: format!("{var}: {e}"),
        })?;
        if !ep.is_https() && !self.allow_insecure {
            return Err(Error::Misconfigured {
                source_name,
                reason: format!(
                    "{var} {ep} is plain http: the ID token would travel in clear (--allow-insecure-endpoints is for tests)"
                ),
            });
        }
        Ok(ep)
    }
}

/// The source picked and the credentials it gives.
#[derive(Debug)]
pub struct Choice {
    pub credentials: Credentials,
    /// As `--credentials-source` spells it.
    pub source: &'static str,
    /// For the start-up log: endpoints, variable names and paths, never a secret.
    pub detail: String,
}

/// The credentials of source `kind`. For the chain, the first source in the SDK's order that
/// is configured (and for metadata and pod identity, answers). `Auto` and `Static` are the
/// caller's (flags and Secrets live there).
pub async fn choose(kind: SourceKind, setup: &Setup<'_>) -> Result<Choice, Error> {
    match kind {
        SourceKind::Chain => {
            let mut tried = Vec::new();
            for kind in [
                SourceKind::Oidc,
                SourceKind::Env,
                SourceKind::Profile,
                SourceKind::Metadata,
                SourceKind::PodIdentity,
            ] {
                match one(kind, setup).await {
                    Ok(choice) => {
                        if let Credentials::Provided(p) = &choice.credentials
                            && matches!(kind, SourceKind::Metadata | SourceKind::PodIdentity)
                            && let Err(e) = p.current().await
                        {
                            tried.push(format!("{}: {e}", kind.as_str()));
                            continue;
                        }
                        return Ok(choice);
                    }
                    Err(e) => tried.push(e.to_string()),
                }
            }
            Err(Error::ChainExhausted(tried))
        }
        other => one(other, setup).await,
    }
}

async fn one(kind: SourceKind, setup: &Setup<'_>) -> Result<Choice, Error> {
    match kind {
        SourceKind::Env => from_env(setup),
        SourceKind::Federation => federation(setup, None, None),
        SourceKind::Oidc => oidc(setup),
        SourceKind::Profile => profile(setup),
        SourceKind::Metadata => Ok(provided(setup, Fetcher::metadata(&setup.metadata_endpoint))),
        SourceKind::PodIdentity => pod_identity(setup),
        SourceKind::Auto | SourceKind::Static | SourceKind::Chain => Err(Error::NotConfigured {
            source_name: kind.as_str(),
            reason: "not a single source".into(),
        }),
    }
}

fn provided(setup: &Setup<'_>, fetcher: Fetcher) -> Choice {
    let http = if fetcher.is_link_local() {
        setup.direct.clone()
    } else {
        setup.http.clone()
    };
    let provider = Provider::new(fetcher, http);
    Choice {
        source: provider.name(),
        detail: provider.describe(),
        credentials: Credentials::Provided(provider),
    }
}

fn fixed(
    source: &'static str,
    detail: String,
    result: Result<Credentials, crate::credentials::Error>,
) -> Result<Choice, Error> {
    let credentials = result.map_err(|e| Error::Misconfigured {
        source_name: source,
        reason: e.to_string(),
    })?;
    Ok(Choice {
        credentials,
        source,
        detail,
    })
}

/// The SDK's EnvCredentialProvider: federation when both IdP variables are set, else AK/SK
/// (with a security token when set); `CLOUD_SDK_AK`/`_SK` when the SDK's names are unset.
fn from_env(setup: &Setup<'_>) -> Result<Choice, Error> {
    if setup.var(env::IDP_ID).is_some() && setup.var(env::ID_TOKEN_FILE).is_some() {
        return federation(setup, None, None).map(|c| Choice { source: "env", ..c });
    }
    let pair = |ak, sk| Some((setup.var(ak)?, setup.var(sk)?, ak));
    let Some((ak, sk, name)) =
        pair(env::AK, env::SK).or_else(|| pair(env::CLOUD_AK, env::CLOUD_SK))
    else {
        return Err(Error::NotConfigured {
            source_name: "env",
            reason: format!(
                "neither {}/{}, {}/{} nor {}/{} is set",
                env::AK,
                env::SK,
                env::CLOUD_AK,
                env::CLOUD_SK,
                env::IDP_ID,
                env::ID_TOKEN_FILE
            ),
        });
    };
    let token = (name == env::AK)
        .then(|| setup.var(env::SECURITY_TOKEN))
        .flatten();
    let detail = format!("access key {ak} from {name}");
    fixed(
        "env",
        detail,
        match token {
            Some(t) => Credentials::temporary(&ak, &sk, &t),
            None => Credentials::permanent(&ak, &sk),
        },
    )
}

/// IAM federation; `idp`/`file`/`iam` from a profile, else from the environment.
fn federation(
    setup: &Setup<'_>,
    from_profile: Option<(String, String)>,
    iam: Option<String>,
) -> Result<Choice, Error> {
    const NAME: &str = "federation";
    let (idp_id, file) = match from_profile {
        Some(p) => p,
        None => match (setup.var(env::IDP_ID), setup.var(env::ID_TOKEN_FILE)) {
            (Some(i), Some(f)) => (i, f),
            _ => {
                return Err(Error::NotConfigured {
                    source_name: NAME,
                    reason: format!(
                        "{} and {} must both be set",
                        env::IDP_ID,
                        env::ID_TOKEN_FILE
                    ),
                });
            }
        },
    };
    let iam = match iam {
        Some(url) => Endpoint::parse(&url).map_err(|e| Error::Misconfigured {
            source_name: NAME,
            reason: format!("iam_endpoint: {e}"),
        })?,
        None => setup.endpoint(NAME, env::IAM_ENDPOINT, DEFAULT_IAM_ENDPOINT)?,
    };
    Ok(provided(
        setup,
        Fetcher::Federation {
            iam,
            idp_id,
            id_token: IdToken::File(PathBuf::from(file)),
        },
    ))
}

/// The SDK's OidcStsCredentialProvider.
fn oidc(setup: &Setup<'_>) -> Result<Choice, Error> {
    const NAME: &str = "oidc";
    let missing = |var: &str| Error::NotConfigured {
        source_name: NAME,
        reason: format!("{var} is not set"),
    };
    let provider_urn = setup
        .var(env::OIDC_PROVIDER_URN)
        .ok_or_else(|| missing(env::OIDC_PROVIDER_URN))?;
    let agency_urn = setup
        .var(env::OIDC_AGENCY_URN)
        .ok_or_else(|| missing(env::OIDC_AGENCY_URN))?;
    let id_token = match (
        setup.var(env::OIDC_ID_TOKEN),
        setup.var(env::OIDC_TOKEN_FILE),
    ) {
        (Some(t), _) => IdToken::Value(SecretString::from(t)),
        (None, Some(f)) => IdToken::File(PathBuf::from(f)),
        (None, None) => {
            return Err(missing(&format!(
                "{} or {}",
                env::OIDC_ID_TOKEN,
                env::OIDC_TOKEN_FILE
            )));
        }
    };
    let duration_seconds = match setup.var(env::OIDC_DURATION_SECONDS) {
        None => DEFAULT_OIDC_DURATION,
        Some(v) => v.parse().map_err(|_| Error::Misconfigured {
            source_name: NAME,
            reason: format!(
                "{} {v:?} is not a number of seconds",
                env::OIDC_DURATION_SECONDS
            ),
        })?,
    };
    let policy_ids = setup.var(env::OIDC_POLICY_IDS).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    let request = OidcRequest {
        sts: setup.endpoint(NAME, env::STS_ENDPOINT, DEFAULT_STS_ENDPOINT)?,
        provider_urn,
        agency_urn,
        id_token,
        session_name: setup
            .var(env::OIDC_SESSION_NAME)
            .unwrap_or_else(|| DEFAULT_SESSION_NAME.into()),
        duration_seconds,
        policy: setup.var(env::OIDC_POLICY),
        policy_ids: policy_ids.filter(|ids| !ids.is_empty()),
    };
    Ok(provided(setup, Fetcher::Oidc(Box::new(request))))
}

/// The SDK's ProfileCredentialProvider, section `[basic]`.
fn profile(setup: &Setup<'_>) -> Result<Choice, Error> {
    const NAME: &str = "profile";
    let path = match setup.var(env::CREDENTIALS_FILE) {
        Some(p) => PathBuf::from(p),
        None => match setup.var("HOME") {
            Some(home) => PathBuf::from(home).join(".huaweicloud").join("credentials"),
            None => {
                return Err(Error::NotConfigured {
                    source_name: NAME,
                    reason: "no HOME and no HUAWEICLOUD_SDK_CREDENTIALS_FILE".into(),
                });
            }
        },
    };
    let ini = match ini::Ini::load_from_file(&path) {
        Ok(ini) => ini,
        Err(ini::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotConfigured {
                source_name: NAME,
                reason: format!("credentials file '{}' does not exist", path.display()),
            });
        }
        Err(e) => {
            return Err(Error::Misconfigured {
                source_name: NAME,
                reason: format!("credentials file '{}': {e}", path.display()),
            });
        }
    };
    let Some(section) = ini.section(Some("basic")) else {
        return Err(Error::NotConfigured {
            source_name: NAME,
            reason: format!("no [basic] section in '{}'", path.display()),
        });
    };
    let get = |k: &str| {
        section
            .get(k)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    if let (Some(idp), Some(file)) = (get("idp_id"), get("id_token_file")) {
        return federation(setup, Some((idp, file)), get("iam_endpoint"))
            .map(|c| Choice { source: NAME, ..c });
    }
    match (get("ak"), get("sk")) {
        (Some(ak), Some(sk)) => fixed(
            NAME,
            format!("access key {ak} from {}", path.display()),
            match get("security_token") {
                Some(t) => Credentials::temporary(&ak, &sk, &t),
                None => Credentials::permanent(&ak, &sk),
            },
        ),
        _ => Err(Error::NotConfigured {
            source_name: NAME,
            reason: format!(
                "ak&sk or idp_id&id_token_file missing in '{}'",
                path.display()
            ),
        }),
    }
}

/// The SDK's PodIdentityCredentialProvider.
fn pod_identity(setup: &Setup<'_>) -> Result<Choice, Error> {
    match (
        setup.var(env::POD_IDENTITY_URI),
        setup.var(env::POD_IDENTITY_TOKEN_FILE),
    ) {
        (Some(uri), Some(file)) => {
            reqwest::Url::parse(&uri).map_err(|_| Error::Misconfigured {
                source_name: "pod-identity",
                reason: format!("{} is not a URL", env::POD_IDENTITY_URI),
            })?;
            Ok(provided(
                setup,
                Fetcher::PodIdentity {
                    uri,
                    token_file: PathBuf::from(file),
                },
            ))
        }
        _ => Err(Error::NotConfigured {
            source_name: "pod-identity",
            reason: format!(
                "{} and {} must both be set",
                env::POD_IDENTITY_URI,
                env::POD_IDENTITY_TOKEN_FILE
            ),
        }),
    }
}
