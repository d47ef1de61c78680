//! The HTTP transport every HSS, IAM, STS and credential-source call goes over: one reqwest
//! client per setting (timeouts, extra CA certificates, whether the environment's proxies
//! apply), no redirects, rustls with the ring provider.

use std::{sync::OnceLock, time::Duration};

use crate::client::ClientConfig;
use crate::error::Error;

/// Builds the shared reqwest client (also used for IAM token requests).
pub fn http_client(config: &ClientConfig) -> Result<reqwest::Client, Error> {
    http_client_with(
        config.timeout,
        config.connect_timeout,
        config.extra_ca_pem.as_deref(),
    )
}

/// Whether a client goes through the proxies the environment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxies {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (either case), read when the
    /// client is built: HSS, IAM and STS calls.
    FromEnvironment,
    /// Never a proxy: the link-local metadata and Pod Identity endpoints, plain http by
    /// design, whose answers are temporary keys that must not pass through anyone.
    Never,
}

/// Builds a reqwest client from the transport settings alone (no endpoint or project needed):
/// per-request and connect timeouts, and extra trusted CA certificates (PEM bundle). It
/// honours the environment's proxies ([`Proxies::FromEnvironment`]).
pub fn http_client_with(
    timeout: Duration,
    connect_timeout: Duration,
    extra_ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, Error> {
    http_client_via(
        timeout,
        connect_timeout,
        extra_ca_pem,
        Proxies::FromEnvironment,
    )
}

/// [`http_client_with`], choosing whether proxies apply.
pub fn http_client_via(
    timeout: Duration,
    connect_timeout: Duration,
    extra_ca_pem: Option<&[u8]>,
    proxies: Proxies,
) -> Result<reqwest::Client, Error> {
    static PROVIDER: OnceLock<()> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        // Another part of the process may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hss-operator/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60));
    if proxies == Proxies::Never {
        builder = builder.no_proxy();
    }
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Client)?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(Error::Client)
}
