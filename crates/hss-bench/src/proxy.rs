//! The counting proxy: a plain-HTTP listener in this process that forwards every request to the
//! TLS API server with the admin token and CA, streaming response bodies (watches), and counts
//! what it sees. The operator's kubeconfig points at it; the bench's own requests go straight
//! to the API server and are not counted.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{body::Body, extract::State, response::Response};
use futures::stream;
use kube::Config;

/// The counters, shared with the proxy's handlers.
#[derive(Default, Debug)]
pub struct Counts {
    cst_writes: AtomicU64,
    cst_status_writes: AtomicU64,
    event_writes: AtomicU64,
    other_writes: AtomicU64,
    reads: AtomicU64,
    conflicts: AtomicU64,
}

/// The counters at one moment; subtract two for what happened in between.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountSnap {
    /// Non-GET requests whose path contains `/clusterscantasks`.
    pub cst_writes: u64,
    /// Of those, the ones on `/status`.
    pub cst_status_writes: u64,
    /// Non-GET requests on `/events`.
    pub event_writes: u64,
    pub other_writes: u64,
    /// GETs, lists and watches included.
    pub reads: u64,
    /// 409 responses.
    pub conflicts: u64,
}

impl Counts {
    pub fn snap(&self) -> CountSnap {
        CountSnap {
            cst_writes: self.cst_writes.load(Ordering::Relaxed),
            cst_status_writes: self.cst_status_writes.load(Ordering::Relaxed),
            event_writes: self.event_writes.load(Ordering::Relaxed),
            other_writes: self.other_writes.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
        }
    }

    /// Counts one request by its method and path.
    fn request(&self, method: &http::Method, path: &str) {
        let add = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
        if method == http::Method::GET {
            add(&self.reads);
        } else if path.contains("/clusterscantasks") {
            add(&self.cst_writes);
            if path.ends_with("/status") {
                add(&self.cst_status_writes);
            }
        } else if path.contains("/events") {
            add(&self.event_writes);
        } else {
            add(&self.other_writes);
        }
    }
}

impl std::ops::Sub for CountSnap {
    type Output = CountSnap;
    fn sub(self, o: CountSnap) -> CountSnap {
        CountSnap {
            cst_writes: self.cst_writes - o.cst_writes,
            cst_status_writes: self.cst_status_writes - o.cst_status_writes,
            event_writes: self.event_writes - o.event_writes,
            other_writes: self.other_writes - o.other_writes,
            reads: self.reads - o.reads,
            conflicts: self.conflicts - o.conflicts,
        }
    }
}

/// The running proxy.
pub struct Proxy {
    http: reqwest::Client,
    upstream: String,
    token: Option<String>,
    pub counts: Counts,
}

/// Starts the proxy in front of the API server `config` points at; returns it and a
/// kubeconfig for the operator that points at the proxy.
pub async fn start_proxy(config: &Config, dir: &Path) -> anyhow::Result<(Arc<Proxy>, PathBuf)> {
    let proxy = Arc::new(Proxy {
        http: upstream_client(config)?,
        upstream: config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string(),
        token: bearer_token(config),
        counts: Counts::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let kubeconfig = dir.join("kubeconfig-bench-proxy");
    std::fs::write(&kubeconfig, proxy_kubeconfig(addr))?;
    Ok((proxy, kubeconfig))
}

/// An HTTP client that trusts the API server's CA and follows no redirects.
fn upstream_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(roots) = &config.root_cert {
        let certs = roots
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder.build()?)
}

/// The kubeconfig's bearer token, which the proxy adds to every request.
fn bearer_token(config: &Config) -> Option<String> {
    let token = config
        .auth_info
        .token
        .as_ref()
        .map(|t| secrecy::ExposeSecret::expose_secret(t).to_string());
    if token.is_none() {
        eprintln!("bench: the kubeconfig has no bearer token; the proxy forwards without one");
    }
    token
}

/// A kubeconfig for a plain-HTTP server at `addr`, without credentials.
fn proxy_kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: http://{addr}\nusers:\n- name: proxy\n  user: {{}}\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    user: proxy\n    namespace: default\ncurrent-context: proxy\n"
    )
}

/// The handler of every request: forwarded, or a 502 saying why not.
async fn forward(State(p): State<Arc<Proxy>>, req: axum::extract::Request) -> Response {
    let line = format!("{} {}", req.method(), req.uri());
    let res = forward_inner(&p, req).await;
    if std::env::var_os("BENCH_PROXY_LOG").is_some() {
        match &res {
            Ok(r) => eprintln!("proxy: {line} -> {}", r.status()),
            Err(e) => eprintln!("proxy: {line} -> {e:#}"),
        }
    }
    match res {
        Ok(r) => r,
        Err(e) => {
            let mut r = Response::new(Body::from(format!("bench proxy: {e:#}")));
            *r.status_mut() = http::StatusCode::BAD_GATEWAY;
            r
        }
    }
}

async fn forward_inner(p: &Proxy, req: axum::extract::Request) -> anyhow::Result<Response> {
    let (parts, body) = req.into_parts();
    p.counts.request(&parts.method, parts.uri.path());
    let body = axum::body::to_bytes(body, usize::MAX).await?;
    let resp = upstream_request(p, &parts).body(body).send().await?;
    if resp.status().as_u16() == 409 {
        p.counts.conflicts.fetch_add(1, Ordering::Relaxed);
    }
    streamed_response(resp)
}

/// The request to the API server: same method, path, query and headers, but the proxy's
/// credentials.
fn upstream_request(p: &Proxy, parts: &http::request::Parts) -> reqwest::RequestBuilder {
    let pq = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let mut rb = p
        .http
        .request(parts.method.clone(), format!("{}{pq}", p.upstream));
    for (k, v) in &parts.headers {
        if matches!(
            k.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding" | "authorization"
        ) {
            continue;
        }
        rb = rb.header(k, v);
    }
    if let Some(t) = &p.token {
        rb = rb.bearer_auth(t);
    }
    rb
}

/// The API server's response as this proxy's, the body streamed chunk by chunk.
fn streamed_response(resp: reqwest::Response) -> anyhow::Result<Response> {
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if matches!(
            k.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            continue;
        }
        out = out.header(k, v);
    }
    let chunks = stream::unfold(resp, |mut r| async move {
        match r.chunk().await {
            Ok(Some(b)) => Some((Ok::<_, reqwest::Error>(b), r)),
            _ => None,
        }
    });
    Ok(out.body(Body::from_stream(chunks))?)
}
