//! HSS connection settings shared by `submit` and `run`: flags with the SDK's environment names
//! as fallbacks. Secrets given by environment are never echoed by `--help`, and never by Debug.
//!
//! Where credentials may go: the configured endpoint, and (for a ClusterScanTask with its own
//! Secret, or a `submit` manifest) endpoints on `--allowed-endpoint` (default: the official
//! HSS endpoint of every known region). Plain http only with `--allow-insecure-endpoints`,
//! which exists for tests and the simulator.

use std::{path::PathBuf, time::Duration};

use crate::hss::{
    self, Budget, Credentials, Endpoint, HssClient,
    allow::AllowList,
    budget::DEFAULT_PER_MINUTE,
    client::ClientConfig,
    sources::{self, Choice, SourceKind},
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
    #[arg(long, env = "HSS_METADATA_ENDPOINT", default_value = sources::chain::DEFAULT_METADATA_ENDPOINT, hide = true)]
    pub metadata_endpoint: String,

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
    Endpoint(#[from] hss::endpoint::Error),
    #[error(
        "failed to use endpoint {0}: plain http would send credentials in clear (--allow-insecure-endpoints is for tests and simulators)"
    )]
    InsecureEndpoint(String),
    #[error(
        "failed to use the manifest's endpoint {0}: it is not on the allow-list; give --endpoint or --region, or add it with --allowed-endpoint"
    )]
    EndpointNotAllowed(String),
    #[error("failed to use the credentials")]
    Credentials(#[from] hss::credentials::Error),
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
    Client(#[from] hss::client::Error),
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

    /// Where calls go and for which project. Plain http only with `--allow-insecure-endpoints`.
    /// The transport (timeout, CA bundle) is [`HssArgs::http_client`]'s, shared by all.
    pub fn client_config(&self, o: &Overrides<'_>) -> Result<ClientConfig, Error> {
        let project = o
            .project_id
            .map(str::to_string)
            .or_else(|| self.project_id.clone())
            .filter(|p| !p.trim().is_empty())
            .ok_or(Error::NoProject)?;
        let endpoint = self.endpoint(o)?;
        if !endpoint.is_https() && !self.allow_insecure_endpoints {
            return Err(Error::InsecureEndpoint(endpoint.to_string()));
        }
        let mut config = ClientConfig::new(endpoint, project);
        config.enterprise_project_id = o
            .enterprise_project_id
            .map(str::to_string)
            .or_else(|| self.enterprise_project_id.clone());
        config.timeout = self.timeout;
        Ok(config)
    }

    /// The configured endpoint, if any, checked as every call would check it: start-up fails
    /// on a bad or plain-http one instead of every object failing later.
    pub fn validate(&self) -> Result<(), Error> {
        if self.endpoint.is_some() || self.region.is_some() {
            let endpoint = self.endpoint(&Overrides::default())?;
            if !endpoint.is_https() && !self.allow_insecure_endpoints {
                return Err(Error::InsecureEndpoint(endpoint.to_string()));
            }
        }
        Ok(())
    }

    /// Endpoints a manifest or an object's own Secret may name besides the configured one.
    pub fn allow_list(&self) -> AllowList<'_> {
        AllowList::new(&self.allowed_endpoints)
    }

    /// The HTTP client every HSS call shares: `--hss-timeout` and the `--ca-bundle`
    /// certificates, whatever the endpoint or project. An unreadable or invalid bundle is an
    /// error, never silently left out.
    pub fn http_client(&self) -> Result<reqwest::Client, Error> {
        let extra_ca = match &self.ca_bundle {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| Error::CaBundle {
                    path: path.clone(),
                    source,
                })?;
                // A file without one certificate would leave the client on the system roots
                // alone, silently.
                if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |c| c.is_empty()) {
                    return Err(Error::CaBundleEmpty { path: path.clone() });
                }
                Some(pem)
            }
            None => None,
        };
        Ok(hss::client::http_client_with(
            self.timeout,
            hss::client::DEFAULT_CONNECT_TIMEOUT,
            extra_ca.as_deref(),
        )?)
    }

    /// What `submit` takes of a manifest's `endpoint`, `region`, `projectId` and
    /// `enterpriseProjectId`, and a note for each one it drops. Flags (and their environment
    /// names) win, except that a manifest's endpoint (or region) on the allow-list is used: a
    /// manifest from a pull request cannot send the pipeline's credentials elsewhere. Pure.
    pub fn manifest_overrides<'a>(
        &self,
        manifest: &Overrides<'a>,
    ) -> Result<(Overrides<'a>, Vec<String>), Error> {
        let mut kept = Overrides::default();
        let mut notes = Vec::new();
        let asked = match (manifest.endpoint, manifest.region) {
            (Some(ep), _) => Some(Endpoint::parse(ep)?),
            (None, Some(region)) => Some(Endpoint::for_region(region)?),
            (None, None) => None,
        };
        let configured = self.endpoint.is_some() || self.region.is_some();
        if let Some(asked) = asked {
            let own = configured && self.endpoint(&Overrides::default())? == asked;
            if own || self.allow_list().allows(&asked) {
                kept.endpoint = manifest.endpoint;
                kept.region = manifest.region;
            } else if configured {
                notes.push(format!(
                    "the manifest's endpoint {asked} is not on the allow-list (--allowed-endpoint): using --endpoint/--region"
                ));
            } else {
                return Err(Error::EndpointNotAllowed(asked.to_string()));
            }
        }
        for (field, flag, asked) in [
            ("projectId", &self.project_id, manifest.project_id),
            (
                "enterpriseProjectId",
                &self.enterprise_project_id,
                manifest.enterprise_project_id,
            ),
        ] {
            if let (Some(flag), Some(asked)) = (flag, asked)
                && flag != asked
            {
                notes.push(format!(
                    "the manifest's {field} {:?} is ignored: the flag (or its environment variable) wins",
                    hss::text::bounded(asked, 64)
                ));
            }
        }
        if self.project_id.is_none() {
            kept.project_id = manifest.project_id;
        }
        if self.enterprise_project_id.is_none() {
            kept.enterprise_project_id = manifest.enterprise_project_id;
        }
        Ok((kept, notes))
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

    /// The operator's own credentials and where they come from (`--credentials-source`);
    /// `None` when `auto` leaves them to a Secret (`secret_configured`, `run` only). A
    /// provider's first fetch happens on first use, not here (except in the chain, which
    /// needs an answer from metadata and pod identity to pick them, as the SDK does).
    pub async fn own_credentials(
        &self,
        http: &reqwest::Client,
        secret_configured: bool,
    ) -> Result<Option<Choice>, Error> {
        let flags = self.access_key.is_some() || self.auth_token.is_some();
        let kind = match self.credentials_source {
            SourceKind::Static => return self.static_choice().map(Some),
            SourceKind::Auto if flags => return self.static_choice().map(Some),
            SourceKind::Auto if secret_configured => return Ok(None),
            SourceKind::Auto => SourceKind::Chain,
            other => other,
        };
        let env = |name: &str| std::env::var(name).ok();
        let setup = sources::Setup {
            env: &env,
            http: http.clone(),
            metadata_endpoint: self.metadata_endpoint.clone(),
            allow_insecure: self.allow_insecure_endpoints,
        };
        Ok(Some(sources::choose(kind, &setup).await?))
    }

    fn static_choice(&self) -> Result<Choice, Error> {
        let credentials = self.credentials()?;
        Ok(Choice {
            detail: credentials.identity(),
            credentials,
            source: "static",
        })
    }

    pub fn budget(&self) -> Budget {
        Budget::per_window(self.budget_per_minute, self.budget_window)
    }

    /// A client for these settings, with the credentials `--credentials-source` gives.
    pub async fn client(&self, o: &Overrides<'_>, budget: Budget) -> Result<HssClient, Error> {
        let http = self.http_client()?;
        let config = self.client_config(o)?;
        let Some(choice) = self.own_credentials(&http, false).await? else {
            return Err(Error::NoCredentials);
        };
        tracing::info!(source = choice.source, detail = %choice.detail, "using credentials");
        Ok(HssClient::with_http(
            http,
            config,
            choice.credentials,
            budget,
        ))
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

    fn args(argv: &[&str]) -> HssArgs {
        let mut all = vec!["x"];
        all.extend_from_slice(argv);
        Cli::parse_from(all).hss
    }

    #[test]
    fn plain_http_needs_the_explicit_flag_wherever_it_comes_from() {
        let sim = ["--endpoint", "http://127.0.0.1:8443", "--project-id", "p"];
        let err = args(&sim)
            .client_config(&Overrides::default())
            .expect_err("http without the flag");
        assert_eq!(err.category(), "insecure_endpoint");
        assert!(args(&sim).validate().is_err(), "refused at start-up too");
        let mut with_flag = sim.to_vec();
        with_flag.push("--allow-insecure-endpoints");
        assert!(args(&with_flag).validate().is_ok());
        assert!(
            args(&with_flag)
                .client_config(&Overrides::default())
                .is_ok()
        );
        let https = args(&["--region", "cn-north-4", "--project-id", "p"]);
        assert!(https.validate().is_ok());
        let err = https
            .client_config(&Overrides {
                endpoint: Some("http://10.0.0.1"),
                ..Default::default()
            })
            .expect_err("an http override");
        assert_eq!(err.category(), "insecure_endpoint");
        assert!(
            args(&[]).validate().is_ok(),
            "nothing configured: nothing to check"
        );
    }

    #[test]
    fn a_ca_bundle_that_cannot_be_used_is_an_error_not_left_out() {
        let dir = std::env::temp_dir().join(format!("hss-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let missing = dir.join("missing.pem");
        for (path, why) in [(&garbage, "no certificate in it"), (&missing, "no file")] {
            let a = args(&["--ca-bundle", path.to_str().expect("utf-8 path")]);
            let err = a.http_client().expect_err(why);
            assert_eq!(err.category(), "invalid_config", "{why}");
            assert!(
                futures::executor::block_on(a.client(&Overrides::default(), a.budget())).is_err(),
                "{why}: no client without it"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(args(&[]).http_client().is_ok(), "no bundle: system roots");
    }

    #[test]
    fn submit_takes_the_flags_unless_the_manifest_names_an_allowed_endpoint() {
        let flags = [
            "--endpoint",
            "https://hss.internal.example",
            "--project-id",
            "p-flag",
        ];
        let manifest = |endpoint, region, project| Overrides {
            endpoint,
            region,
            project_id: project,
            enterprise_project_id: None,
        };
        // (flags, manifest, kept endpoint, kept region, kept project, notes, reason)
        type Case<'a> = (
            &'a [&'a str],
            Overrides<'a>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            usize,
            &'a str,
        );
        let cases: [Case; 6] = [
            (
                &flags,
                manifest(Some("https://attacker.example"), None, None),
                None,
                None,
                None,
                1,
                "a chosen host: the flag's endpoint, with a note",
            ),
            (
                &flags,
                manifest(None, Some("ap-southeast-1"), None),
                None,
                Some("ap-southeast-1"),
                None,
                0,
                "an official region's endpoint is allowed",
            ),
            (
                &flags,
                manifest(Some("https://hss.internal.example"), None, None),
                Some("https://hss.internal.example"),
                None,
                None,
                0,
                "the flag's own endpoint",
            ),
            (
                &flags,
                manifest(None, None, Some("p-victim")),
                None,
                None,
                None,
                1,
                "the flag's project wins",
            ),
            (
                &["--region", "cn-north-4"],
                manifest(None, None, Some("p-manifest")),
                None,
                None,
                Some("p-manifest"),
                0,
                "no project flag: the manifest's",
            ),
            (
                &[
                    "--region",
                    "cn-north-4",
                    "--allowed-endpoint",
                    "https://hss.partner.example:8443",
                ],
                manifest(Some("https://hss.partner.example:8443"), None, None),
                Some("https://hss.partner.example:8443"),
                None,
                None,
                0,
                "allowed by flag",
            ),
        ];
        for (flags, m, endpoint, region, project, notes, why) in cases {
            let (kept, said) = args(flags).manifest_overrides(&m).expect(why);
            assert_eq!(
                (kept.endpoint, kept.region, kept.project_id, said.len()),
                (endpoint, region, project, notes),
                "{why}: {said:?}"
            );
        }
        let err = args(&[])
            .manifest_overrides(&manifest(Some("https://attacker.example"), None, None))
            .expect_err("nothing to fall back on");
        assert_eq!(err.category(), "endpoint_not_allowed");
        assert!(
            err.to_string().contains("https://attacker.example"),
            "{err}"
        );
    }

    #[test]
    fn allowed_endpoints_are_parsed_at_start_and_never_echo_userinfo() {
        let err =
            Cli::try_parse_from(["x", "--allowed-endpoint", "https://AK:SK-SECRET@h.example"])
                .err()
                .expect("userinfo is refused");
        assert!(!err.to_string().contains("SK-SECRET"), "{err}");
        let a = args(&[
            "--allowed-endpoint",
            "https://a.example,https://b.example:8443",
        ]);
        assert_eq!(a.allowed_endpoints.len(), 2);
        assert!(
            a.allow_list()
                .allows(&Endpoint::parse("https://b.example:8443").expect("valid"))
        );
    }
}
