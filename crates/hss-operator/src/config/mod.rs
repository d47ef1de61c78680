//! HSS connection settings shared by `submit` and `run`: flags with the SDK's environment names
//! as fallbacks. Secrets given by environment are never echoed by `--help`, and never by Debug.
//!
//! Where credentials may go: the configured endpoint, and (for a ClusterScanTask with its own
//! Secret, or a `submit` manifest) endpoints on `--allowed-endpoint` (default: the official
//! HSS endpoint of every known region). Plain http only with `--allow-insecure-endpoints`,
//! which exists for tests and the simulator.
//!
//! - this module: the flags ([`HssArgs`]), their errors, per-object [`Overrides`];
//! - `client`: from the flags to an [`HssClient`](hss_client::client::HssClient): endpoint,
//!   project, the shared HTTP client and budget;
//! - `overrides`: what `submit` takes of a manifest ([`HssArgs::manifest_overrides`]);
//! - `credentials`: the process's own credentials, from flags or `--credentials-source`, in
//!   the environment it is given ([`Env`]).

use std::{path::PathBuf, time::Duration};

use hss_client::{
    budget::DEFAULT_PER_MINUTE,
    chain,
    endpoint::Endpoint,
    sources::{self, SourceKind},
};

#[derive(clap::Args, Clone)]
pub struct HssArgs {
    /// Huawei Cloud region, e.g. cn-north-4 (selects https://hss.<region>.myhuaweicloud.com).
    #[arg(long, env = "HSS_REGION")]
    pub region: Option<String>,

    /// Explicit HSS endpoint (overrides the region), e.g. https://hss.example.internal (a
    /// simulator's http://127.0.0.1:8443 needs --allow-insecure-endpoints).
    #[arg(long, env = "HSS_ENDPOINT")]
    pub endpoint: Option<String>,

    /// An endpoint besides the configured one that credentials may be sent to: a
    /// ClusterScanTask's spec.endpoint or region (with its own Secret), a `submit` manifest's.
    /// Repeatable or comma-separated; default: the official HSS endpoint of every known region.
    #[arg(
        long = "allowed-endpoint",
        env = "HSS_ALLOWED_ENDPOINTS",
        value_delimiter = ',',
        value_parser = EndpointParser
    )]
    pub allowed_endpoints: Vec<Endpoint>,

    /// Allow plain-http endpoints (credentials and tokens would travel in clear). For tests
    /// and the HSS simulator only.
    #[arg(long, env = "HSS_ALLOW_INSECURE_ENDPOINTS")]
    pub allow_insecure_endpoints: bool,

    /// Huawei Cloud project id.
    #[arg(long, env = "HUAWEICLOUD_SDK_PROJECT_ID")]
    pub project_id: Option<String>,

    /// Enterprise project id sent with every call (0 = default, all_granted_eps = all).
    #[arg(long, env = "HSS_ENTERPRISE_PROJECT_ID")]
    pub enterprise_project_id: Option<String>,

    /// Access key id.
    #[arg(long, env = "HUAWEICLOUD_SDK_AK")]
    pub access_key: Option<String>,

    /// Secret access key (prefer the environment variable to a flag).
    #[arg(long, env = "HUAWEICLOUD_SDK_SK", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Security token of temporary credentials.
    #[arg(long, env = "HUAWEICLOUD_SDK_SECURITY_TOKEN", hide_env_values = true)]
    pub security_token: Option<String>,

    /// IAM token (X-Auth-Token) instead of AK/SK.
    #[arg(long, env = "HSS_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Where the operator's own credentials come from. `auto`: the access key or token flags
    /// (and their environment names), then --credentials-secret (run), then the official
    /// SDK's chain (oidc, env, profile, metadata, pod-identity). The others pick one source;
    /// `static` only the flags.
    #[arg(long, env = "HSS_CREDENTIALS_SOURCE", value_enum, default_value_t = SourceKind::Auto)]
    pub credentials_source: SourceKind,

    /// The ECS metadata service the `metadata` source asks (tests point it at a simulator).
    #[arg(long, env = "HSS_METADATA_ENDPOINT", default_value = chain::DEFAULT_METADATA_ENDPOINT, hide = true)]
    pub metadata_endpoint: String,

    /// Calls per minute per API and credential (HSS allows 5); 0 disables client-side limiting.
    #[arg(long, env = "HSS_BUDGET_PER_MINUTE", default_value_t = DEFAULT_PER_MINUTE)]
    pub budget_per_minute: u32,

    /// The budget's window (HSS: one minute). Shorter windows only make sense against a
    /// simulator scaled the same way (`hss-simulator --throttle-window`).
    #[arg(long, env = "HSS_BUDGET_WINDOW", default_value = "60s", value_parser = humantime::parse_duration, hide = true)]
    pub budget_window: Duration,

    /// Per-request timeout.
    #[arg(long = "hss-timeout", env = "HSS_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Extra CA certificates (PEM) trusted for the HSS endpoint.
    #[arg(long, env = "HSS_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
}

/// Secrets never reach Debug output (logs of the parsed flags, panics): they show as
/// `<redacted>` when set.
impl std::fmt::Debug for HssArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("HssArgs")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("allowed_endpoints", &self.allowed_endpoints)
            .field("allow_insecure_endpoints", &self.allow_insecure_endpoints)
            .field("project_id", &self.project_id)
            .field("enterprise_project_id", &self.enterprise_project_id)
            .field("access_key", &self.access_key)
            .field("secret_key", &hidden(&self.secret_key))
            .field("security_token", &hidden(&self.security_token))
            .field("auth_token", &hidden(&self.auth_token))
            .field("credentials_source", &self.credentials_source)
            .field("metadata_endpoint", &self.metadata_endpoint)
            .field("budget_per_minute", &self.budget_per_minute)
            .field("budget_window", &self.budget_window)
            .field("timeout", &self.timeout)
            .field("ca_bundle", &self.ca_bundle)
            .finish()
    }
}

/// Parses `--allowed-endpoint` values. Not a plain function parser: clap would quote the value
/// as given in its error, userinfo (a credential) included.
#[derive(Clone, Copy)]
struct EndpointParser;

impl clap::builder::TypedValueParser for EndpointParser {
    type Value = Endpoint;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Endpoint, clap::Error> {
        let text = value.to_string_lossy();
        Endpoint::parse(&text).map_err(|e| {
            let flag = arg.map_or("an endpoint".to_string(), |a| {
                format!("--{}", a.get_long().unwrap_or_default())
            });
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {flag}: {e}\n"),
            )
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "failed to choose an HSS endpoint: give --region or --endpoint (HSS_REGION / HSS_ENDPOINT)"
    )]
    NoEndpoint,
    #[error("failed to choose an HSS project: give --project-id (HUAWEICLOUD_SDK_PROJECT_ID)")]
    NoProject,
    #[error(
        "failed to find credentials: give --access-key and --secret-key (HUAWEICLOUD_SDK_AK / HUAWEICLOUD_SDK_SK) or --auth-token"
    )]
    NoCredentials,
    #[error("failed to use the HSS endpoint")]
    Endpoint(#[from] hss_client::endpoint::Error),
    #[error(
        "failed to use endpoint {0}: plain http would send credentials in clear (--allow-insecure-endpoints is for tests and simulators)"
    )]
    InsecureEndpoint(String),
    #[error(
        "failed to use the manifest's endpoint {0}: it is not on the allow-list; give --endpoint or --region, or add it with --allowed-endpoint"
    )]
    EndpointNotAllowed(String),
    #[error("failed to use the credentials")]
    Credentials(#[from] hss_client::credentials::Error),
    #[error("failed to find credentials from --credentials-source")]
    Source(#[from] sources::Error),
    #[error("failed to read the CA bundle {path}")]
    CaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read a PEM certificate from the CA bundle {path}")]
    CaBundleEmpty { path: PathBuf },
    #[error("failed to build the HSS client")]
    Client(#[from] hss_client::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::NoEndpoint | Error::NoProject | Error::Endpoint(_) => "invalid_config",
            Error::InsecureEndpoint(_) => "insecure_endpoint",
            Error::EndpointNotAllowed(_) => "endpoint_not_allowed",
            Error::NoCredentials | Error::Credentials(_) => "invalid_credentials",
            Error::Source(e) => e.category(),
            Error::CaBundle { .. } | Error::CaBundleEmpty { .. } => "invalid_config",
            Error::Client(e) => e.category(),
        }
    }
}

/// Per-object overrides (a ClusterScanTask's spec) on top of the flags.
#[derive(Debug, Clone, Default)]
pub struct Overrides<'a> {
    pub region: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub project_id: Option<&'a str>,
    pub enterprise_project_id: Option<&'a str>,
}

/// Where the credential sources read their variables (`HUAWEICLOUD_SDK_*`, ...): given, so
/// tests choose what they see; [`process_env`] in production.
pub type Env = dyn Fn(&str) -> Option<String> + Sync;

/// The process environment, as [`Env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

mod client;
mod credentials;
mod overrides;

#[cfg(test)]
mod tests;
