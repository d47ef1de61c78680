//! Which credentials and HSS client a ClusterScanTask uses: its own Secret, or the operator's
//! defaults ([`Own`]: flags and environment, a source without long-lived keys, or
//! `--credentials-secret`), and one shared client per endpoint, project and credentials
//! source.
//!
//! A provider's credentials are fetched (or taken from its cache) before an object's client
//! is handed out: a source that fails (identity revoked, agent down) becomes
//! `CredentialsReady=False` (`CredentialsUnavailable`) and an Event, and spends no HSS budget.
//! Fixed temporary credentials HSS refused wait for their Secret to change
//! (`CredentialsExpired`) instead of being sent again. After HSS refused a signature with an
//! access key, no object signs with that access key, whatever its secret key, until a Secret
//! holding it changes (`KeyGuarded`, [`Clients`]); the operator's own keys are guarded too.
//!
//! Secrets are read with `get`, by name, when an object is reconciled; never listed or
//! watched. The client cache is keyed by where the credentials come from and remembers which
//! version of them it holds, so a changed Secret replaces its client; it is bounded by
//! [`KEEP_CLIENTS`].

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::{
    Context, Error,
    policy::{self, Refusal},
};
use crate::{config::Overrides, crd::ClusterScanTask};
use hss_client::{chain::Choice, client::HssClient, credentials::Credentials, guard::KeyGuard};

/// The operator's own (default) credentials, decided once at start-up.
pub enum Own {
    /// From flags, the environment or a source; a provider is shared by every client.
    Ready(Choice),
    /// Read from `--credentials-secret` when an object needs them.
    FromSecret,
    /// None: why not (what each source of the chain lacked).
    Missing(String),
}

/// Past this many cached clients the cache starts over (clients are cheap to rebuild: they
/// share one connection pool and the budget lives elsewhere).
pub const KEEP_CLIENTS: usize = 256;

/// Decides the operator's own credentials once and says at start-up which source they come
/// from (never a secret). A provider's first fetch is tried here so a broken source shows in
/// the log at once; it is not fatal: objects with their own Secret still run, and the others
/// say `CredentialsUnavailable` until the source answers.
pub(super) async fn own_credentials(args: &super::ScanArgs, http: &reqwest::Client) -> Own {
    match args
        .hss
        .own_credentials(
            http,
            args.credentials_secret.is_some(),
            &crate::config::process_env,
        )
        .await
    {
        Ok(Some(choice)) => {
            tracing::info!(source = choice.source, detail = %choice.detail, "operator credentials");
            if let Some(provider) = choice.credentials.provider()
                && let Err(e) = provider.current().await
            {
                tracing::warn!(
                    source = provider.name(),
                    category = e.category(),
                    error = %crate::report_error(&e),
                    "the credential source gave no credentials yet"
                );
            }
            Own::Ready(choice)
        }
        Ok(None) => {
            tracing::info!(
                source = "secret",
                "operator credentials from --credentials-secret, read when needed"
            );
            Own::FromSecret
        }
        Err(e) => {
            let why = crate::report_error(&e);
            tracing::warn!(category = e.category(), error = %why, "the operator has no default credentials; ClusterScanTasks need their own Secret");
            Own::Missing(why)
        }
    }
}

impl Context {
    /// The HSS client for `obj` (its spec's overrides and credentials), shared by all objects
    /// with the same settings. The tenant policy ([`super::policy`]) is checked first: a
    /// refused object reads no Secret and gets no client.
    pub(crate) async fn hss_for(
        &self,
        obj: &ClusterScanTask,
    ) -> Result<Result<HssClient, Unusable>, Error> {
        let spec = &obj.spec;
        let overrides = Overrides {
            region: spec.region.as_deref(),
            endpoint: spec.endpoint.as_deref(),
            project_id: spec.project_id.as_deref(),
            enterprise_project_id: spec.enterprise_project_id.as_deref(),
        };
        let config = self
            .args
            .hss
            .client_config(&overrides)
            .map_err(Error::Config)?;
        let operator = self.args.hss.client_config(&Overrides::default()).ok();
        let own_secret = spec.credentials_secret_ref.is_some();
        let mut rule = self.args.policy.with(&self.args.hss);
        let granted: Vec<String>;
        if !own_secret && self.tenants.mode() == crate::tenancy::Mode::Policy {
            let ns = obj.namespace().unwrap_or_default();
            let operator_project = operator.as_ref().map_or("", |o| o.project_id.as_str());
            let grant = self
                .tenants
                .grant(&ns)
                .await
                .map_err(Error::Tenancy)?
                .flatten();
            if let Err(refusal) = crate::tenancy::grant::permits(
                grant.as_ref(),
                crate::tenancy::grant::Asked {
                    namespace: &ns,
                    spec,
                    project: &config.project_id,
                    operator_project,
                },
            ) {
                return Ok(Err(Unusable::Refused(refusal)));
            }
            // The policies' projects replace --allowed-project for this namespace.
            granted = grant
                .into_iter()
                .flat_map(|g| g.policies)
                .flat_map(|(_, p)| p.projects)
                .collect();
            rule.projects = &granted;
        }
        if let Err(refusal) = rule.check(policy::Request {
            own_secret,
            config: &config,
            operator: operator.as_ref(),
        }) {
            return Ok(Err(Unusable::Refused(refusal)));
        }
        let Found {
            credentials,
            source,
            version,
        } = match self.credentials_for(obj).await? {
            Ok(c) => c,
            Err(problem) => return Ok(Err(Unusable::Credentials(problem))),
        };
        let key = format!(
            "{}|{}|{}|{source}",
            config.endpoint,
            config.project_id,
            config.enterprise_project_id.as_deref().unwrap_or(""),
        );
        let client = self.clients.get_or_insert(key, &version, || {
            HssClient::with_http(self.http.clone(), config, credentials, self.budget.clone())
                .with_observer(self.metrics.hss.clone())
                .with_gate(self.fair.gate())
        });
        if client.credentials().is_refused() {
            return Ok(Err(Unusable::Credentials(CredentialsProblem::Expired(
                format!(
                    "HSS refused the temporary credentials from {source} (expired?); the scan goes on once they are replaced"
                ),
            ))));
        }
        if let Err(guarded) =
            self.clients
                .guard
                .check_holder(client.credentials(), &source, &version)
        {
            return Ok(Err(Unusable::Credentials(CredentialsProblem::Guarded(
                guarded.to_string(),
            ))));
        }
        Ok(Ok(client))
    }

    /// Credentials for `obj`, where they come from and which version of them (so rotation
    /// takes effect).
    async fn credentials_for(
        &self,
        obj: &ClusterScanTask,
    ) -> Result<Result<Found, CredentialsProblem>, Error> {
        let (ns, name) = match (
            &obj.spec.credentials_secret_ref,
            &self.args.credentials_secret,
        ) {
            (Some(r), _) => (obj.namespace().unwrap_or_default(), r.name.clone()),
            (None, _) if let Own::Ready(choice) = &self.own => {
                if let Some(provider) = choice.credentials.provider()
                    && let Err(e) = provider.current().await
                {
                    return Ok(Err(CredentialsProblem::Unavailable(format!(
                        "the operator's credentials from {}: {}",
                        provider.name(),
                        crate::report_error(&e)
                    ))));
                }
                return Ok(Ok(Found {
                    version: choice.credentials.identity(),
                    credentials: choice.credentials.clone(),
                    source: choice.source.into(),
                }));
            }
            (None, _) if let Own::Missing(why) = &self.own => {
                return Ok(Err(CredentialsProblem::NoDefault(why.clone())));
            }
            (None, Some(default)) => match default.split_once('/') {
                Some((ns, name)) => (ns.to_string(), name.to_string()),
                None => {
                    return Ok(Err(CredentialsProblem::Invalid(format!(
                        "--credentials-secret {default:?} is not NAMESPACE/NAME"
                    ))));
                }
            },
            (None, None) => return Ok(Err(CredentialsProblem::NoDefault(String::new()))),
        };
        let secrets: Api<Secret> = Api::namespaced(self.kube.clone(), &ns);
        let secret = match secrets.get_opt(&name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Ok(Err(CredentialsProblem::Missing(format!(
                    "Secret {ns}/{name} does not exist"
                ))));
            }
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Ok(Err(CredentialsProblem::Missing(format!(
                    "the operator may not read Secret {ns}/{name} (RBAC)"
                ))));
            }
            Err(e) => return Err(Error::ReadSecret(e)),
        };
        Ok(credentials_from_secret(&secret)
            .map_err(CredentialsProblem::Invalid)
            .map(|c| Found {
                version: format!(
                    "{}#{}",
                    c.identity(),
                    &hss_client::signer::hex_sha256(
                        format!(
                            "{}:{}",
                            secret.uid().unwrap_or_default(),
                            secret.resource_version().unwrap_or_default()
                        )
                        .as_bytes()
                    )[..12]
                ),
                credentials: c,
                source: format!("secret:{ns}/{name}"),
            }))
    }
}

/// The HSS clients of the controller, by settings and credentials source with the
/// credentials' version, and the [`KeyGuard`] they all share: one signature HSS refused
/// with an access key stops every object from signing with it until a Secret holding it
/// changes (a new version of a holder, see [`hss_client::guard`]).
#[derive(Default)]
pub struct Clients {
    cache: Mutex<HashMap<String, (String, HssClient)>>,
    guard: KeyGuard,
}

impl Clients {
    /// The cached client for `key` if it holds `version` of the credentials, else a new one
    /// from `build`, sharing the guard.
    fn get_or_insert(
        &self,
        key: String,
        version: &str,
        build: impl FnOnce() -> HssClient,
    ) -> HssClient {
        let mut clients = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((held, client)) = clients.get(&key)
            && held == version
        {
            return client.clone();
        }
        if clients.len() >= KEEP_CLIENTS {
            clients.clear();
        }
        let client = build().with_guard(self.guard.clone());
        clients.insert(key, (version.to_string(), client.clone()));
        client
    }
}

/// Credentials and what identifies them in the client cache.
struct Found {
    credentials: Credentials,
    /// Where they come from: the flags, or a Secret by namespace and name.
    source: String,
    /// Which version: changes when the material or the Secret changes.
    version: String,
}

/// Why an object gets no HSS client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// No usable credentials (yet): `CredentialsReady=False`, looked at again later.
    Credentials(CredentialsProblem),
    /// The tenant policy refuses the object's settings: nothing is ever sent.
    Refused(Refusal),
}

/// Why there are no usable credentials; becomes `CredentialsReady=False`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsProblem {
    Missing(String),
    Invalid(String),
    /// The operator has no default credentials; why (may be empty).
    NoDefault(String),
    /// The operator's source failed to give credentials (revoked, unreachable).
    Unavailable(String),
    /// HSS refused fixed temporary credentials; waiting for new ones.
    Expired(String),
    /// HSS refused a signature with this access key (from any holder): nothing signs with it
    /// until a Secret holding it changes.
    Guarded(String),
}

impl CredentialsProblem {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            CredentialsProblem::Missing(_) => "SecretNotFound",
            CredentialsProblem::Invalid(_) => "SecretInvalid",
            CredentialsProblem::NoDefault(_) => "NoCredentials",
            CredentialsProblem::Unavailable(_) => "CredentialsUnavailable",
            CredentialsProblem::Expired(_) => "CredentialsExpired",
            CredentialsProblem::Guarded(_) => "KeyGuarded",
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            CredentialsProblem::Missing(m)
            | CredentialsProblem::Invalid(m)
            | CredentialsProblem::Unavailable(m)
            | CredentialsProblem::Expired(m)
            | CredentialsProblem::Guarded(m) => m.clone(),
            CredentialsProblem::NoDefault(why) if why.is_empty() => {
                "spec.credentialsSecretRef is not set and the operator has no default credentials"
                    .into()
            }
            CredentialsProblem::NoDefault(why) => format!(
                "spec.credentialsSecretRef is not set and the operator has no default credentials ({why})"
            ),
        }
    }
}

/// Reads `accessKey`/`secretKey` (+ `securityToken`) or `authToken` from a Secret. Pure.
pub fn credentials_from_secret(secret: &Secret) -> Result<Credentials, String> {
    let name = secret.name_any();
    let get = |key: &str| -> Result<Option<String>, String> {
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(v.0.clone())
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| format!("Secret {name} key {key} is not UTF-8 text"));
        }
        Ok(secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|s| s.trim().to_string()))
    };
    let described = |e: hss_client::credentials::Error| format!("Secret {name}: {e}");
    if let Some(token) = get("authToken")? {
        return Credentials::token(&token).map_err(described);
    }
    match (get("accessKey")?, get("secretKey")?, get("securityToken")?) {
        (Some(ak), Some(sk), Some(token)) if !token.is_empty() => {
            Credentials::temporary(&ak, &sk, &token).map_err(described)
        }
        (Some(ak), Some(sk), _) => Credentials::permanent(&ak, &sk).map_err(described),
        _ => Err(format!(
            "Secret {name} needs keys accessKey and secretKey (optionally securityToken), or authToken"
        )),
    }
}
