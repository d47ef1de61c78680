//! HSS connection settings shared by `submit` and `run`: flags with the SDK's environment names
//! as fallbacks. Secrets given by environment are never echoed by `--help`.

use std::{path::PathBuf, time::Duration};

use crate::hss::{
    self, Budget, Credentials, Endpoint, HssClient, budget::DEFAULT_PER_MINUTE,
    client::ClientConfig,
};

#[derive(clap::Args, Clone)]
pub struct HssArgs {
    /// Huawei Cloud region, e.g. cn-north-4 (selects https://hss.<region>.myhuaweicloud.com).
    #[arg(long, env = "HSS_REGION")]
    pub region: Option<String>,

    /// Explicit HSS endpoint (overrides the region), e.g. http://127.0.0.1:8443 for a simulator.
    #[arg(long, env = "HSS_ENDPOINT")]
    pub endpoint: Option<String>,

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

    /// Calls per minute per API and credential (HSS allows 5); 0 disables client-side limiting.
    #[arg(long, env = "HSS_BUDGET_PER_MINUTE", default_value_t = DEFAULT_PER_MINUTE)]
    pub budget_per_minute: u32,

    /// The budget's window (HSS: one minute). Shorter windows only make sense against a
    /// simulator scaled the same way (`simulate-hss --throttle-window`).
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
            .field("project_id", &self.project_id)
            .field("enterprise_project_id", &self.enterprise_project_id)
            .field("access_key", &self.access_key)
            .field("secret_key", &hidden(&self.secret_key))
            .field("security_token", &hidden(&self.security_token))
            .field("auth_token", &hidden(&self.auth_token))
            .field("budget_per_minute", &self.budget_per_minute)
            .field("budget_window", &self.budget_window)
            .field("timeout", &self.timeout)
            .field("ca_bundle", &self.ca_bundle)
            .finish()
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
    Endpoint(#[from] hss::endpoint::Error),
    #[error("failed to use the credentials")]
    Credentials(#[from] hss::credentials::Error),
    #[error("failed to read the CA bundle {path}")]
    CaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to build the HSS client")]
    Client(#[from] hss::client::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::NoEndpoint | Error::NoProject | Error::Endpoint(_) => "invalid_config",
            Error::NoCredentials | Error::Credentials(_) => "invalid_credentials",
            Error::CaBundle { .. } => "invalid_config",
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

impl HssArgs {
    /// The endpoint: explicit endpoint first, then region; overrides before flags.
    pub fn endpoint(&self, o: &Overrides<'_>) -> Result<Endpoint, Error> {
        if let Some(ep) = o.endpoint {
            return Ok(Endpoint::parse(ep)?);
        }
        if let Some(region) = o.region {
            return Ok(Endpoint::for_region(region)?);
        }
        match (&self.endpoint, &self.region) {
            (Some(ep), _) => Ok(Endpoint::parse(ep)?),
            (None, Some(region)) => Ok(Endpoint::for_region(region)?),
            (None, None) => Err(Error::NoEndpoint),
        }
    }

    pub fn client_config(&self, o: &Overrides<'_>) -> Result<ClientConfig, Error> {
        let project = o
            .project_id
            .map(str::to_string)
            .or_else(|| self.project_id.clone())
            .filter(|p| !p.trim().is_empty())
            .ok_or(Error::NoProject)?;
        let mut config = ClientConfig::new(self.endpoint(o)?, project);
        config.enterprise_project_id = o
            .enterprise_project_id
            .map(str::to_string)
            .or_else(|| self.enterprise_project_id.clone());
        config.timeout = self.timeout;
        if let Some(path) = &self.ca_bundle {
            config.extra_ca_pem = Some(std::fs::read(path).map_err(|source| Error::CaBundle {
                path: path.clone(),
                source,
            })?);
        }
        Ok(config)
    }

    /// The default credentials from flags or the SDK environment names.
    pub fn credentials(&self) -> Result<Credentials, Error> {
        if let Some(token) = &self.auth_token {
            return Ok(Credentials::token(token)?);
        }
        match (&self.access_key, &self.secret_key, &self.security_token) {
            (Some(ak), Some(sk), Some(token)) if !token.is_empty() => {
                Ok(Credentials::temporary(ak, sk, token)?)
            }
            (Some(ak), Some(sk), _) => Ok(Credentials::permanent(ak, sk)?),
            _ => Err(Error::NoCredentials),
        }
    }

    pub fn budget(&self) -> Budget {
        Budget::per_window(self.budget_per_minute, self.budget_window)
    }

    /// A client for these settings.
    pub fn client(&self, o: &Overrides<'_>, budget: Budget) -> Result<HssClient, Error> {
        Ok(HssClient::new(
            self.client_config(o)?,
            self.credentials()?,
            budget,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        hss: HssArgs,
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let args = Cli::parse_from([
            "x",
            "--access-key",
            "AKVISIBLE",
            "--secret-key",
            "SK-SECRET-VALUE",
            "--security-token",
            "TOKEN-SECRET-VALUE",
            "--auth-token",
            "IAM-SECRET-VALUE",
        ])
        .hss;
        let text = format!("{args:?} {:#?}", args.clone());
        for secret in ["SK-SECRET-VALUE", "TOKEN-SECRET-VALUE", "IAM-SECRET-VALUE"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(
            text.contains("AKVISIBLE"),
            "the access key id is not secret"
        );
        assert!(text.contains("<redacted>"));
    }
}
