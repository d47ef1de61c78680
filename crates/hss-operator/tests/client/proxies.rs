//! Which calls go through a proxy: HSS, IAM and STS honour the environment's proxies, the
//! metadata service and Pod Identity never do (their plain-http answers are temporary keys).
//! A forwarding proxy on loopback records what passes through it; the simulator serves HSS and
//! the identity endpoints and counts the credentials it issued.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hss_client::{
    Api,
    budget::Budget,
    chain::{self, env},
    client::{ClientConfig, HssClient},
    endpoint::Endpoint,
    sources::SourceKind,
    transport::{Proxies, http_client_via},
};
use hss_simulator::{DEFAULT_IDENTITY_TOKEN, SimConfig, Simulator};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A plain-http forwarding proxy (absolute-form requests, and CONNECT) that keeps a copy of
/// every byte clients sent through it.
struct Proxy {
    url: String,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(forward(conn, log.clone()));
            }
        });
        Self { url, seen }
    }

    /// What clients sent through the proxy, as text.
    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("log")).into_owned()
    }
}

async fn forward(mut client: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    log.lock().expect("log").extend_from_slice(&head);
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let authority = if method == "CONNECT" {
        target.to_string()
    } else {
        let rest = target.strip_prefix("http://").unwrap_or(target);
        rest.split('/').next().unwrap_or("").to_string()
    };
    let Ok(mut upstream) = TcpStream::connect(&authority).await else {
        return;
    };
    if method == "CONNECT" {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    } else if upstream.write_all(&head).await.is_err() {
        return;
    }
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_upstream, mut to_upstream) = upstream.into_split();
    let up = async move {
        let mut buf = [0u8; 4096];
        loop {
            match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.lock().expect("log").extend_from_slice(&buf[..n]);
                    if to_upstream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let down = tokio::io::copy(&mut from_upstream, &mut to_client);
    let _ = tokio::join!(up, down);
}

fn token_file(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("hss-proxy-{}-{name}", std::process::id()));
    std::fs::write(&path, DEFAULT_IDENTITY_TOKEN).expect("token file");
    path.display().to_string()
}

/// A source, its variables, and whether its fetch may pass the proxy.
type Case = (&'static str, SourceKind, Vec<(&'static str, String)>, bool);

/// A client whose proxy is set explicitly (never read from this process's environment).
fn proxied(proxy: &Proxy) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(&proxy.url).expect("proxy"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn direct() -> reqwest::Client {
    http_client_via(
        Duration::from_secs(5),
        Duration::from_secs(2),
        None,
        Proxies::Never,
    )
    .expect("client")
}

#[tokio::test]
async fn the_chain_fetches_metadata_and_pod_identity_directly_and_sts_through_the_proxy() {
    let sim = Simulator::start(SimConfig::default()).await.expect("sim");
    let url = sim.base_url();
    let file = token_file("chain");
    // (source, its variables, whether its fetch may pass the proxy)
    let cases: [Case; 3] = [
        (
            "pod-identity",
            SourceKind::PodIdentity,
            vec![
                (
                    env::POD_IDENTITY_URI,
                    format!("{url}/v1/pod-identity/credentials"),
                ),
                (env::POD_IDENTITY_TOKEN_FILE, file.clone()),
            ],
            false,
        ),
        ("metadata", SourceKind::Metadata, vec![], false),
        (
            "oidc",
            SourceKind::Oidc,
            vec![
                (
                    env::OIDC_PROVIDER_URN,
                    "iam::0123:identity-provider:sim".into(),
                ),
                (env::OIDC_AGENCY_URN, "iam::0123:agency:hss-operator".into()),
                (env::OIDC_TOKEN_FILE, file.clone()),
                (env::STS_ENDPOINT, url.clone()),
            ],
            true,
        ),
    ];
    for (name, kind, vars, via_proxy) in cases {
        let proxy = Proxy::start().await;
        let vars: std::collections::HashMap<String, String> =
            vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let lookup = move |k: &str| vars.get(k).cloned();
        let choice = chain::choose(
            kind,
            &chain::Setup {
                env: &lookup,
                http: proxied(&proxy),
                direct: direct(),
                metadata_endpoint: url.clone(),
                allow_insecure: true,
            },
        )
        .await
        .expect(name);
        let provider = choice.credentials.provider().expect("a source").clone();
        provider.current().await.expect(name);
        assert!(
            sim.issued_credentials().get(name).copied().unwrap_or(0) >= 1,
            "{name}"
        );
        let seen = proxy.seen();
        assert_eq!(seen.contains("POST http://"), via_proxy, "{name}: {seen}");
        assert!(!seen.contains("pod-identity"), "{name}: {seen}");
        assert!(!seen.contains("securitykey"), "{name}: {seen}");
        assert!(!seen.contains("/meta-data/"), "{name}: {seen}");

        // HSS calls with these credentials take the proxied client: through the proxy.
        let mut config = ClientConfig::new(Endpoint::parse(&url).expect("url"), "proj");
        config.timeout = Duration::from_secs(5);
        let hss = HssClient::with_http(
            proxied(&proxy),
            config,
            choice.credentials,
            Budget::per_minute(0),
        );
        hss.list_clusters(0, 10, None).await.expect(name);
        assert!(proxy.seen().contains("/kubernetes/clusters"), "{name}");
    }
    assert_eq!(sim.call_count(Api::ListClusters, Some(200)), 3);
}

/// `hss-operator submit` with its credentials from `source`, the proxy variables set (and
/// `no_proxy` when given), everything else cleared.
async fn submit(sim: &Simulator, source: &str, proxy: &Proxy, no_proxy: Option<&str>) -> String {
    let url = sim.base_url();
    let manifest = std::env::temp_dir().join(format!(
        "hss-proxy-{}-{source}-{}.yaml",
        std::process::id(),
        no_proxy.is_some()
    ));
    std::fs::write(
        &manifest,
        "apiVersion: hss.scanops.dev/v1alpha1\nkind: ClusterScanTask\nmetadata: {name: p}\nspec:\n  taskType: cluster_scan\n  clusterScan: {scanTypes: [cluster_vul], rangeType: all_cluster}\n",
    )
    .expect("manifest");
    let file = token_file(source);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hss-operator"));
    cmd.arg("submit")
        .args(["-f", manifest.to_str().expect("utf-8")])
        .args([
            "--endpoint",
            &url,
            "--allow-insecure-endpoints",
            "--project-id",
            "proj",
        ])
        .args(["--budget-per-minute", "0", "--credentials-source", source])
        .args(["--metadata-endpoint", &url])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            env::POD_IDENTITY_URI,
            format!("{url}/v1/pod-identity/credentials"),
        )
        .env(env::POD_IDENTITY_TOKEN_FILE, &file)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env(var, &proxy.url);
    }
    if let Some(list) = no_proxy {
        cmd.env("NO_PROXY", list);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("submit finished within 30 s")
        .expect("submit ran");
    let _ = std::fs::remove_file(&manifest);
    assert!(
        out.status.success(),
        "{source}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.seen()
}

#[tokio::test]
async fn submit_sends_hss_through_the_environments_proxy_and_temporary_keys_never() {
    for source in ["pod-identity", "metadata"] {
        let sim = Simulator::start(SimConfig::default()).await.expect("sim");
        let proxy = Proxy::start().await;
        let seen = submit(&sim, source, &proxy, None).await;
        assert!(
            sim.issued_credentials().get(source).copied().unwrap_or(0) >= 1,
            "{source}"
        );
        assert!(
            seen.contains("/common/task"),
            "{source}: HSS went through: {seen}"
        );
        assert!(!seen.contains("pod-identity"), "{source}: {seen}");
        assert!(!seen.contains("securitykey"), "{source}: {seen}");
        assert!(!seen.contains("/meta-data/"), "{source}: {seen}");
        assert_eq!(sim.created_tasks().len(), 1, "{source}");

        // NO_PROXY naming HSS's host: nothing through the proxy at all.
        let proxy = Proxy::start().await;
        let seen = submit(&sim, source, &proxy, Some("127.0.0.1")).await;
        assert_eq!(seen, "", "{source}");
        assert_eq!(sim.created_tasks().len(), 2, "{source}");
    }
}
