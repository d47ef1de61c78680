//! From [`HssArgs`] to an [`HssClient`]: where calls go (endpoint, project, plain http only
//! with `--allow-insecure-endpoints`) and the one HTTP client every call shares.

use hss_client::{
    allow::AllowList,
    budget::Budget,
    client::{ClientConfig, HssClient},
    endpoint::Endpoint,
    transport::Proxies,
};

use super::{Env, Error, HssArgs, Overrides};

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
    /// certificates, whatever the endpoint or project, and the environment's proxies
    /// (`HTTPS_PROXY`, `NO_PROXY`, ...). An unreadable or invalid bundle is an error, never
    /// silently left out.
    pub fn http_client(&self) -> Result<reqwest::Client, Error> {
        self.transport(Proxies::FromEnvironment)
    }

    /// The same transport without any proxy: for the metadata service and Pod Identity.
    pub fn direct_http_client(&self) -> Result<reqwest::Client, Error> {
        self.transport(Proxies::Never)
    }

    fn transport(&self, proxies: Proxies) -> Result<reqwest::Client, Error> {
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
        Ok(hss_client::transport::http_client_via(
            self.timeout,
            hss_client::limits::DEFAULT_CONNECT_TIMEOUT,
            extra_ca.as_deref(),
            proxies,
        )?)
    }

    pub fn budget(&self) -> Budget {
        Budget::per_window(self.budget_per_minute, self.budget_window)
    }

    /// A client for these settings, with the credentials `--credentials-source` gives.
    pub async fn client(
        &self,
        o: &Overrides<'_>,
        budget: Budget,
        env: &Env,
    ) -> Result<HssClient, Error> {
        let http = self.http_client()?;
        let config = self.client_config(o)?;
        let Some(choice) = self.own_credentials(&http, false, env).await? else {
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
