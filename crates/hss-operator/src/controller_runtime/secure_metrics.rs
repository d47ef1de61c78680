//! The metrics server: `/metrics` over HTTPS on `--metrics-listen` (default `0.0.0.0:8443`),
//! for callers the API server authenticates and authorizes ([`super::metrics_auth`]), as
//! controller-runtime's secure metrics serve them (the Kubebuilder default). The probes stay
//! plain on the admin server ([`super::admin`]).
//!
//! # Guarantees
//! - Every request for `/metrics` is answered by its [`Verdict`]: `200` with the
//!   OpenMetrics text only when allowed; `401` (with `WWW-Authenticate: Bearer`) without a
//!   valid token; `403` without the permission; `503` when the API server did not answer the
//!   review. Any other path is `404`, also without a token.
//! - TLS always, with `--metrics-cert-dir`'s `tls.crt` (the chain, leaf first) and `tls.key`
//!   (PKCS#8, PKCS#1 or SEC1 PEM), as a mounted `kubernetes.io/tls` Secret holds them; re-read
//!   when they change (checked every 10 s, as controller-runtime's certwatcher polls), so a
//!   rotated certificate (cert-manager) is served without a restart. Without a directory, a
//!   self-signed certificate for `localhost` made at start (scrapers then skip verification,
//!   as the chart's ServiceMonitor does).
//! - `--metrics-insecure` (off by default, never set by the chart) serves `/metrics` over plain
//!   HTTP to anyone, without reviews: for local runs and the bench, which must not add
//!   TokenReviews to the API requests it counts.
//!
//! # Assumptions
//! - The operator's identity may create TokenReviews and SubjectAccessReviews (the start-up
//!   check asks for both unless `--metrics-insecure`).
//!
//! # Caveats
//! - At most [`MAX_CONNECTIONS`] connections at once (more are closed at accept), each for
//!   [`CONNECTION_LIFETIME`] at most, with [`HANDSHAKE_TIMEOUT`] for the TLS handshake and the
//!   request head: a scraper reconnects; a slow client cannot hold the server.
//! - HTTP/1.1 only (what Prometheus uses for scrapes).
//! - A certificate that changes into an unreadable one is logged and the previous one kept.
//!
//! # Errors
//! An unreadable or invalid certificate or key at start ([`Error::ReadCert`],
//! [`Error::InvalidCert`], [`Error::Tls`]) or a failed self-signing ([`Error::SelfSign`])
//! fails start-up; so does a listener that cannot accept ([`Error::Serve`]).

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::TcpListener;
use tower_service::Service as _;

use super::metrics_auth::{CacheConfig, Gate, KubeReviews, Reviews, Verdict};
use crate::metrics::{self, Metrics};

/// Connections served at once; more are closed as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest one connection is kept (a scraper's keep-alive reconnects after it).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Longest the TLS handshake, and then each request's head, may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `--metrics-cert-dir` is checked for a changed certificate.
pub const CERT_RECHECK: Duration = Duration::from_secs(10);

/// The metrics server's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Address of the metrics server: /metrics over HTTPS, for bearer tokens the API server
    /// authenticates (TokenReview) and authorizes for `get` on /metrics (SubjectAccessReview).
    #[arg(long, env = "HSS_METRICS_LISTEN", default_value = "0.0.0.0:8443")]
    pub metrics_listen: SocketAddr,

    /// Directory holding the metrics server's tls.crt and tls.key (a mounted kubernetes.io/tls
    /// Secret), re-read when they change. Default: a self-signed certificate made at start.
    #[arg(long, env = "HSS_METRICS_CERT_DIR", value_name = "DIR")]
    pub metrics_cert_dir: Option<PathBuf>,

    /// Serve /metrics over plain HTTP to anyone, without TLS or Kubernetes auth. For local runs
    /// and benchmarks only; never in a shared cluster.
    #[arg(long, env = "HSS_METRICS_INSECURE")]
    pub metrics_insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {}", .0.display())]
    ReadCert(PathBuf, #[source] std::io::Error),
    #[error("failed to load the metrics certificate: {0}")]
    InvalidCert(String),
    #[error("failed to configure TLS for the metrics server")]
    Tls(#[source] rustls::Error),
    #[error("failed to make a self-signed certificate for the metrics server")]
    SelfSign(#[source] rcgen::Error),
    #[error("failed to serve the metrics endpoint")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadCert(..) | Error::InvalidCert(_) | Error::Tls(_) => "metrics_cert",
            Error::SelfSign(_) => "metrics_self_sign",
            Error::Serve(_) => "metrics_serve",
        }
    }
}

struct Secured<R> {
    metrics: Arc<Metrics>,
    gate: Gate<R>,
}

/// `/metrics` behind the reviews of `reviews` (cached as `cache` says).
pub fn router<R: Reviews>(metrics: Arc<Metrics>, reviews: R, cache: CacheConfig) -> Router {
    let state = Arc::new(Secured {
        metrics,
        gate: Gate::new(reviews, cache),
    });
    Router::new()
        .route("/metrics", get(secured::<R>))
        .with_state(state)
}

/// `/metrics` for anyone (`--metrics-insecure`).
pub fn insecure_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(exposition))
        .with_state(metrics)
}

async fn secured<R: Reviews>(State(s): State<Arc<Secured<R>>>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match s.gate.check(authorization).await {
        Verdict::Allowed => exposition(State(s.metrics.clone())).await,
        Verdict::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "Unauthorized",
        )
            .into_response(),
        Verdict::Forbidden => (StatusCode::FORBIDDEN, "Forbidden").into_response(),
        Verdict::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, "authorization unavailable").into_response()
        }
    }
}

async fn exposition(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
        .into_response()
}

/// The serving certificate: `tls.crt`/`tls.key` in `dir`, or self-signed for `localhost`.
/// The resolver is shared with the task that re-reads the directory ([`watch_cert_dir`]).
pub fn certificate(dir: Option<&Path>) -> Result<Arc<CertResolver>, Error> {
    let key = match dir {
        Some(dir) => load_cert_dir(dir)?.0,
        None => self_signed()?,
    };
    Ok(Arc::new(CertResolver {
        current: RwLock::new(Arc::new(key)),
    }))
}

/// The TLS server configuration serving `resolver`'s certificate (ring, TLS 1.2 and 1.3).
pub fn tls_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(Error::Tls)?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The current serving certificate, replaceable while serving.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

impl CertResolver {
    fn replace(&self, key: CertifiedKey) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
    }

    /// The leaf certificate being served (DER).
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .cert[0]
            .clone()
    }
}

fn signing_key(key: &PrivateKeyDer<'_>) -> Result<Arc<dyn rustls::sign::SigningKey>, Error> {
    rustls::crypto::ring::sign::any_supported_type(key).map_err(Error::Tls)
}

fn self_signed() -> Result<CertifiedKey, Error> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(Error::SelfSign)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    Ok(CertifiedKey::new(
        vec![made.cert.der().clone()],
        signing_key(&key)?,
    ))
}

/// The files' modification times: what [`watch_cert_dir`] compares.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

fn stamp(dir: &Path) -> Stamp {
    let modified = |f: &str| {
        std::fs::metadata(dir.join(f))
            .and_then(|m| m.modified())
            .ok()
    };
    (modified("tls.crt"), modified("tls.key"))
}

fn load_cert_dir(dir: &Path) -> Result<(CertifiedKey, Stamp), Error> {
    let stamp = stamp(dir);
    let read = |f: &str| {
        let path = dir.join(f);
        std::fs::read(&path).map_err(|e| Error::ReadCert(path, e))
    };
    let (crt, key) = (read("tls.crt")?, read("tls.key")?);
    let chain = CertificateDer::pem_slice_iter(&crt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidCert(format!("tls.crt: {e}")))?;
    if chain.is_empty() {
        return Err(Error::InvalidCert("tls.crt holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| Error::InvalidCert(format!("tls.key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key(&key)?);
    certified
        .keys_match()
        .map_err(|e| Error::InvalidCert(format!("tls.key does not match tls.crt: {e}")))?;
    Ok((certified, stamp))
}

/// Re-reads `dir` into `resolver` whenever its files change, until dropped. (Kubernetes
/// updates a mounted Secret by swapping a symlink, which a poll of the targets' times sees.)
pub async fn watch_cert_dir(dir: PathBuf, resolver: Arc<CertResolver>) {
    let mut seen = stamp(&dir);
    let mut tick = tokio::time::interval(CERT_RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if stamp(&dir) == seen {
            continue;
        }
        match load_cert_dir(&dir) {
            Ok((key, now)) => {
                resolver.replace(key);
                seen = now;
                tracing::info!(dir = %dir.display(), "metrics certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(category = e.category(), error = %crate::report_error(&e), "metrics certificate not reloaded; serving the previous one");
            }
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves; connections still open
/// then are closed.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics server listening (https)");
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: give the process a moment, as hyper does.
                tracing::warn!(error = %e, "metrics server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        connections.spawn(async move {
            let _slot = slot;
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req| router.clone().call(req));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
    connections.shutdown().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// The metrics server as `args` say, on `listener`, until `shutdown` resolves: over TLS with
/// the API server's reviews by `kube`, or plain for anyone with `--metrics-insecure`. The
/// certificate is loaded (or made) before this returns its future, so a bad one fails start-up.
pub fn serve(
    listener: TcpListener,
    args: &MetricsArgs,
    metrics: Arc<Metrics>,
    kube: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
    let plan = if args.metrics_insecure {
        None
    } else {
        let resolver = certificate(args.metrics_cert_dir.as_deref())?;
        Some((tls_config(resolver.clone())?, resolver))
    };
    let cert_dir = args.metrics_cert_dir.clone();
    Ok(async move {
        match plan {
            None => {
                if let Ok(addr) = listener.local_addr() {
                    tracing::warn!(%addr, "metrics server listening (plain http, no authentication: --metrics-insecure)");
                }
                axum::serve(listener, insecure_router(metrics))
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(Error::Serve)
            }
            Some((tls, resolver)) => {
                let router = router(metrics, KubeReviews::new(kube), CacheConfig::default());
                let served = serve_tls(listener, tls, router, shutdown);
                match cert_dir {
                    Some(dir) => {
                        tokio::select! {
                            r = served => r,
                            () = watch_cert_dir(dir, resolver) => Ok(()),
                        }
                    }
                    None => served.await,
                }
            }
        }
    })
}
