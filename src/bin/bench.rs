//! `cargo run --release --bin bench -- [--scenario N ...] [--objects N]`: drives the real path
//! (kube-apiserver + etcd from scripts/control-plane.sh, `hss-operator simulate-hss` and
//! `hss-operator run` as child processes) and prints a markdown table, one row per scenario.
//! See docs/benchmarks.md for the scenarios, the targets and how to read the numbers.
//!
//! The operator talks to the API server through a counting proxy run by this process: a
//! plain-HTTP listener that forwards every request to the TLS API server with the admin token
//! and CA, streaming response bodies (watches), and counts the writes it sees. The bench's own
//! requests (creating objects, its watch) go straight to the API server and are not counted.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use axum::{body::Body, extract::State, response::Response};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use hss_operator::crd::{ClusterScanTask, FINALIZER, Phase};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};

#[path = "../../tests/support/harness.rs"]
mod harness;

#[derive(Parser, Debug)]
#[command(about = "hss-operator benchmark: prints a markdown table, one row per scenario")]
struct Cli {
    /// Scenarios to run (repeatable or comma separated): 1 raw pipeline, 2 scaled budget,
    /// 3 idle with existing Succeeded objects, 4 Python SDK script vs `submit`.
    #[arg(long = "scenario", value_delimiter = ',', default_values_t = [1u8, 3])]
    scenarios: Vec<u8>,
    /// Override the object count of scenarios 1-3 (defaults 100, 1000, 10000).
    #[arg(long)]
    objects: Option<usize>,
    /// Idle measurement window of scenario 3.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Simulated scan duration (simulate-hss --finish-after) for scenarios 1 and 2.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    finish_after: Duration,
    /// Operator --poll-interval for scenarios 1 and 2.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Concurrent creates by the bench.
    #[arg(long, default_value_t = 8)]
    create_concurrency: usize,
    /// Creates per second in scenarios 1 and 2 (0: all at once, bounded by
    /// --create-concurrency). A paced run shows latency without queueing.
    #[arg(long, default_value_t = 0.0)]
    create_rate: f64,
    /// Runs per tool in scenario 4.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The hss-operator binary (build it with `cargo build --release`).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Scenarios 1-3 measure each variant, one after another (scenario 3 on the same
    /// objects, 1 and 2 on fresh ones): `LABEL=BIN [ARG..]` (repeatable), e.g.
    /// `system-alloc=target/release/hss-operator-system --initial-list list`. Default: the
    /// operator binary as it is.
    #[arg(long = "variant", value_name = "LABEL=BIN [ARG..]")]
    variants: Vec<String>,
    /// Python interpreter with huaweicloudsdkhss (scenario 4).
    #[arg(long)]
    python: Option<PathBuf>,
}

fn repo() -> PathBuf {
    harness::repo()
}

// ------------------------------------------------------------------ child processes

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
type Proc = harness::Child;

#[derive(Debug, Clone, Copy, Default)]
struct ProcStats {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_secs: f64,
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn proc_stats(pid: u32) -> ProcStats {
    let mut st = ProcStats::default();
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let kib = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                st.rss_kib = kib(line);
            } else if line.starts_with("VmHWM:") {
                st.hwm_kib = kib(line);
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some((_, rest)) = stat.rsplit_once(')')
    {
        // Fields after the command: state(3) ... utime(14) stime(15).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        st.cpu_secs = (ticks(11) + ticks(12)) as f64 / clk_tck();
    }
    st
}

fn operator_bin(cli: &Cli) -> anyhow::Result<PathBuf> {
    let bin = cli
        .operator_bin
        .clone()
        .unwrap_or_else(|| repo().join("target/release/hss-operator"));
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release --bin hss-operator` first",
            bin.display()
        );
    }
    Ok(bin)
}

struct SimSettings {
    throttle_per_minute: u32,
    throttle_window: Duration,
    finish_after: Duration,
}

/// Starts `simulate-hss` and returns it with its base URL.
fn start_simulator(bin: &Path, s: &SimSettings, log: &Path) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(bin)
        .args([
            "simulate-hss",
            "--listen",
            "127.0.0.1:0",
            "--run-after",
            "0s",
        ])
        .arg("--throttle-per-minute")
        .arg(s.throttle_per_minute.to_string())
        .arg("--throttle-window")
        .arg(humantime::format_duration(s.throttle_window).to_string())
        .arg("--finish-after")
        .arg(humantime::format_duration(s.finish_after).to_string())
        .args(["--seed", "1"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("start simulate-hss")?;
    let stdout = child.stdout.take().context("simulator stdout")?;
    let proc = Proc::new(child, "simulate-hss");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow!("unexpected simulator output {line:?}"))?
        .to_string();
    Ok((proc, url))
}

struct OperatorSettings<'a> {
    namespace: &'a str,
    sim_url: &'a str,
    kubeconfig: &'a Path,
    admin_port: u16,
    budget_per_minute: u32,
    budget_window: Duration,
    poll_interval: Duration,
    log: PathBuf,
    extra_args: &'a [String],
}

fn start_operator(bin: &Path, s: &OperatorSettings<'_>) -> anyhow::Result<Proc> {
    let _ = std::fs::remove_file(&s.log);
    let log = std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into());
    let process = harness::OperatorProcess::new(bin, s.kubeconfig, s.namespace, s.sim_url, &s.log)
        .args([
            "--budget-per-minute".to_string(),
            s.budget_per_minute.to_string(),
            "--budget-window".into(),
            humantime::format_duration(s.budget_window).to_string(),
            "--poll-interval".into(),
            humantime::format_duration(s.poll_interval).to_string(),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", s.admin_port),
        ])
        .args(s.extra_args)
        .env("POD_NAME", "bench")
        .env("RUST_LOG", &log);
    process.spawn().context("start hss-operator run")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(harness::free_port()?)
}

/// Per submission step: mean, and p50 and p99 as histogram bucket bounds ("<= X ms"), in
/// milliseconds, from the operator's `hss_operator_submission_step_duration_seconds` (empty if
/// the metrics are unreadable).
async fn submission_steps(http: &reqwest::Client, port: u16) -> Vec<(String, String)> {
    let Ok(resp) = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let text = resp.text().await.unwrap_or_default();
    const NAME: &str = "hss_operator_submission_step_duration_seconds";
    let value = |name: &str, step: &str| -> Option<f64> {
        let prefix = format!("{NAME}_{name}{{step=\"{step}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
    };
    // `..._bucket{le="0.005",step="record"} 12`: (upper bound, cumulative count).
    let buckets = |step: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{NAME}_bucket{{le=\"");
        let suffix = format!("\",step=\"{step}\"}} ");
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .filter_map(|rest| {
                let (le, count) = rest.split_once(suffix.as_str())?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect()
    };
    let at = |b: &[(f64, f64)], count: f64, q: f64| -> String {
        b.iter()
            .find(|(_, c)| *c >= (count * q).ceil())
            .map(|(le, _)| {
                if le.is_finite() {
                    format!("<= {} ms", le * 1000.0)
                } else {
                    "> 10 s".into()
                }
            })
            .unwrap_or_else(|| "n/a".into())
    };
    hss_operator::metrics::SUBMISSION_STEPS
        .into_iter()
        .filter_map(|step| {
            let (sum, count) = (value("sum", step)?, value("count", step)?);
            let b = buckets(step);
            (count > 0.0).then(|| {
                (
                    step.to_string(),
                    format!(
                        "mean {:.1} ms, p50 {}, p99 {}",
                        sum / count * 1000.0,
                        at(&b, count, 0.5),
                        at(&b, count, 0.99)
                    ),
                )
            })
        })
        .collect()
}

async fn readyz(http: &reqwest::Client, port: u16) -> u16 {
    match http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// `/__sim/calls` as API -> (status -> count).
type Calls = BTreeMap<String, BTreeMap<String, u64>>;

async fn sim_calls(http: &reqwest::Client, sim: &str) -> anyhow::Result<Calls> {
    Ok(http
        .get(format!("{sim}/__sim/calls"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

fn calls_by_api(c: &Calls) -> BTreeMap<String, u64> {
    c.iter()
        .map(|(api, by)| (api.clone(), by.values().sum()))
        .collect()
}

fn total_429(c: &Calls) -> u64 {
    c.values().filter_map(|by| by.get("429")).sum()
}

fn calls_delta(after: &Calls, before: &Calls) -> BTreeMap<String, u64> {
    let b = calls_by_api(before);
    calls_by_api(after)
        .into_iter()
        .map(|(k, v)| {
            let d = v - b.get(&k).copied().unwrap_or(0);
            (k, d)
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn fmt_calls(c: &BTreeMap<String, u64>) -> String {
    if c.is_empty() {
        return "none".into();
    }
    c.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ------------------------------------------------------------------ counting proxy

#[derive(Default, Debug)]
struct Counts {
    cst_writes: AtomicU64,
    cst_status_writes: AtomicU64,
    event_writes: AtomicU64,
    other_writes: AtomicU64,
    reads: AtomicU64,
    conflicts: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct CountSnap {
    cst_writes: u64,
    cst_status_writes: u64,
    event_writes: u64,
    other_writes: u64,
    reads: u64,
    conflicts: u64,
}

impl Counts {
    fn snap(&self) -> CountSnap {
        CountSnap {
            cst_writes: self.cst_writes.load(Ordering::Relaxed),
            cst_status_writes: self.cst_status_writes.load(Ordering::Relaxed),
            event_writes: self.event_writes.load(Ordering::Relaxed),
            other_writes: self.other_writes.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
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

struct Proxy {
    http: reqwest::Client,
    upstream: String,
    token: Option<String>,
    counts: Counts,
}

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
    let path = parts.uri.path().to_string();
    let write = parts.method != http::Method::GET;
    if !write {
        p.counts.reads.fetch_add(1, Ordering::Relaxed);
    } else if path.contains("/clusterscantasks") {
        p.counts.cst_writes.fetch_add(1, Ordering::Relaxed);
        if path.ends_with("/status") {
            p.counts.cst_status_writes.fetch_add(1, Ordering::Relaxed);
        }
    } else if path.contains("/events") {
        p.counts.event_writes.fetch_add(1, Ordering::Relaxed);
    } else {
        p.counts.other_writes.fetch_add(1, Ordering::Relaxed);
    }
    let body = axum::body::to_bytes(body, usize::MAX).await?;
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
    let resp = rb.body(body).send().await?;
    if resp.status().as_u16() == 409 {
        p.counts.conflicts.fetch_add(1, Ordering::Relaxed);
    }
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

/// Starts the proxy in front of the API server `config` points at; returns it and a
/// kubeconfig for the operator that points at the proxy.
async fn start_proxy(config: &Config, dir: &Path) -> anyhow::Result<(Arc<Proxy>, PathBuf)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(roots) = &config.root_cert {
        let certs = roots
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.tls_certs_merge(certs);
    }
    let token = config
        .auth_info
        .token
        .as_ref()
        .map(|t| secrecy::ExposeSecret::expose_secret(t).to_string());
    if token.is_none() {
        eprintln!("bench: the kubeconfig has no bearer token; the proxy forwards without one");
    }
    let upstream = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let proxy = Arc::new(Proxy {
        http: builder.build()?,
        upstream,
        token,
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
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: http://{addr}\nusers:\n- name: proxy\n  user: {{}}\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    user: proxy\n    namespace: default\ncurrent-context: proxy\n"
        ),
    )?;
    Ok((proxy, kubeconfig))
}

// ------------------------------------------------------------------ control plane

struct ControlPlane {
    kubeconfig: PathBuf,
    dir: PathBuf,
    started: bool,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.started {
            harness::stop_control_plane(&self.dir);
        }
    }
}

fn control_plane() -> anyhow::Result<ControlPlane> {
    if let Ok(kc) = std::env::var("KUBECONFIG") {
        let kc = PathBuf::from(kc);
        let dir = std::env::temp_dir().join(format!("hss-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        return Ok(ControlPlane {
            kubeconfig: kc,
            dir,
            started: false,
        });
    }
    let dir = repo()
        .join("target/control-planes")
        .join(format!("bench-{}", std::process::id()));
    let t = Instant::now();
    harness::start_control_plane(&dir).map_err(|e| anyhow!(e))?;
    eprintln!(
        "bench: control plane up in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(ControlPlane {
        kubeconfig: dir.join("kubeconfig"),
        dir,
        started: true,
    })
}

async fn kube_config(kubeconfig: &Path) -> anyhow::Result<Config> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    Ok(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
}

async fn install_crds(client: &Client) -> anyhow::Result<()> {
    harness::install_crds(client, &repo().join("crds/crds.yaml"))
        .await
        .map_err(|e| anyhow!(e))
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<String> {
    harness::namespace(client, name)
        .await
        .map_err(|e| anyhow!(e))
}

fn cluster_scan(name: &str) -> anyhow::Result<ClusterScanTask> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "hss.scanops.dev/v1alpha1",
        "kind": "ClusterScanTask",
        "metadata": {"name": name},
        "spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["cluster_vul", "benchmark"], "rangeType": "all_cluster"}},
    }))?)
}

// ------------------------------------------------------------------ results

#[derive(Default)]
struct Row {
    scenario: String,
    objects: usize,
    calls: BTreeMap<String, u64>,
    writes: Option<CountSnap>,
    task_id_ms: Option<(f64, f64)>,
    succeeded_ms: Option<(f64, f64)>,
    peak_rss_kib: Option<u64>,
    cpu_secs: Option<f64>,
    throttled: u64,
    notes: Vec<String>,
}

fn percentiles(mut v: Vec<f64>) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some((at(0.5), at(0.99)))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ms_pair(p: Option<(f64, f64)>) -> String {
    match p {
        Some((a, b)) if b >= 10_000.0 => format!("{:.1} s / {:.1} s", a / 1000.0, b / 1000.0),
        Some((a, b)) => format!("{a:.0} / {b:.0} ms"),
        None => "n/a".into(),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "| scenario | objects | HSS calls by API | K8s writes/object (CST total, of which status; Events) | apply→taskId p50/p99 | apply→Succeeded p50/p99 | operator peak RSS | operator CPU s | 429s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let writes = match (r.writes, r.objects) {
            (Some(w), n) if n > 0 => format!(
                "{:.2} ({:.2}); {:.2} [totals {}/{}/{}]",
                w.cst_writes as f64 / n as f64,
                w.cst_status_writes as f64 / n as f64,
                w.event_writes as f64 / n as f64,
                w.cst_writes,
                w.cst_status_writes,
                w.event_writes
            ),
            _ => "n/a".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.objects,
            fmt_calls(&r.calls),
            writes,
            ms_pair(r.task_id_ms),
            ms_pair(r.succeeded_ms),
            r.peak_rss_kib.map(mib).unwrap_or_else(|| "n/a".into()),
            r.cpu_secs
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "n/a".into()),
            r.throttled
        );
    }
    println!();
    for r in rows {
        if !r.notes.is_empty() {
            println!("**{}**", r.scenario);
            for n in &r.notes {
                println!("- {n}");
            }
            println!();
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

// ------------------------------------------------------------------ scenarios 1 and 2

struct Env {
    cp: ControlPlane,
    client: Client,
    proxy: Arc<Proxy>,
    proxy_kubeconfig: PathBuf,
    bin: PathBuf,
    http: reqwest::Client,
    logs: PathBuf,
}

#[derive(Default, Clone)]
struct Track {
    applied: Option<Instant>,
    /// First seen with the operator's finalizer.
    finalizer: Option<Instant>,
    /// First seen with an attempt record (`phase: Submitting`).
    recorded: Option<Instant>,
    task_id: Option<Instant>,
    succeeded: Option<Instant>,
    last_progress: Option<String>,
    progress_changes: u32,
}

/// Scenarios 1 and 2, once per variant.
async fn pipelines(
    env: &Env,
    cli: &Cli,
    label: &str,
    objects: usize,
    per_minute: u32,
    window: Duration,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, v) in variants(env, cli)?.iter().enumerate() {
        eprintln!("bench: {label} variant {:?}", v.label);
        let mut row = pipeline(env, cli, label, i, v, objects, per_minute, window).await?;
        if !v.label.is_empty() {
            row.scenario = format!("{label}: {}", v.label);
        }
        rows.push(row);
    }
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
async fn pipeline(
    env: &Env,
    cli: &Cli,
    label: &str,
    run: usize,
    variant: &Variant,
    objects: usize,
    per_minute: u32,
    window: Duration,
) -> anyhow::Result<Row> {
    let digits: String = label.chars().take_while(char::is_ascii_digit).collect();
    let id = format!("{digits}-{run}");
    let ns = namespace(&env.client, &format!("bench-s{id}")).await?;
    let (mut sim, sim_url) = start_simulator(
        &env.bin,
        &SimSettings {
            throttle_per_minute: per_minute,
            throttle_window: window,
            finish_after: cli.finish_after,
        },
        &env.logs.join(format!("sim-s{id}.log")),
    )?;
    let admin_port = free_port()?;
    let calls0 = sim_calls(&env.http, &sim_url).await?;
    let w0 = env.proxy.counts.snap();
    let mut op = start_operator(
        &variant.bin,
        &OperatorSettings {
            namespace: &ns,
            sim_url: &sim_url,
            kubeconfig: &env.proxy_kubeconfig,
            admin_port,
            budget_per_minute: per_minute,
            budget_window: window,
            poll_interval: cli.poll_interval,
            log: env.logs.join(format!("operator-s{id}.log")),
            extra_args: &variant.args,
        },
    )?;
    let t = Instant::now();
    while readyz(&env.http, admin_port).await != 200 {
        if t.elapsed() > Duration::from_secs(60) {
            bail!("operator not ready in 60s; see its log");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let api: Api<ClusterScanTask> = Api::namespaced(env.client.clone(), &ns);
    let tracks: Arc<Mutex<HashMap<String, Track>>> = Arc::default();
    let watch = {
        let tracks = tracks.clone();
        let stream = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(Ok(o)) = stream.next().await {
                let now = Instant::now();
                let mut tracks = tracks.lock().unwrap_or_else(|e| e.into_inner());
                let tr = tracks.entry(o.name_any()).or_default();
                let st = o.status.as_ref();
                if tr.finalizer.is_none() && !o.finalizers().is_empty() {
                    tr.finalizer = Some(now);
                }
                if tr.recorded.is_none() && st.and_then(|s| s.phase) == Some(Phase::Submitting) {
                    tr.recorded = Some(now);
                }
                if tr.task_id.is_none() && st.and_then(|s| s.task_id.as_ref()).is_some() {
                    tr.task_id = Some(now);
                }
                if tr.succeeded.is_none() && st.and_then(|s| s.phase) == Some(Phase::Succeeded) {
                    tr.succeeded = Some(now);
                }
                let progress = st
                    .and_then(|s| s.progress.as_ref())
                    .and_then(|p| serde_json::to_string(p).ok());
                if progress.is_some() && progress != tr.last_progress {
                    tr.progress_changes += 1;
                    tr.last_progress = progress;
                }
            }
        })
    };
    // Let the watch establish before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let pace = cli.create_rate;
    stream::iter(0..objects)
        .map(|i| {
            let api = api.clone();
            let tracks = tracks.clone();
            async move {
                if pace > 0.0 {
                    let at = started + Duration::from_secs_f64(i as f64 / pace);
                    tokio::time::sleep_until(at.into()).await;
                }
                let name = format!("scan-{i:05}");
                let obj = cluster_scan(&name)?;
                let now = Instant::now();
                tracks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(name)
                    .or_default()
                    .applied = Some(now);
                api.create(&PostParams::default(), &obj).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(cli.create_concurrency)
        .try_for_each(|()| futures::future::ok(()))
        .await?;
    let created_in = started.elapsed();

    // Wait for every object to succeed.
    let rate = if per_minute == 0 {
        f64::INFINITY
    } else {
        per_minute as f64 / window.as_secs_f64()
    };
    let bound = Duration::from_secs_f64(120.0 + (objects as f64 / rate) * 1.5);
    let done = loop {
        let n = tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|t| t.succeeded.is_some())
            .count();
        if n >= objects {
            break true;
        }
        if started.elapsed() > bound {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let all_done_in = started.elapsed();
    // Trailing writes (Events, last status) and the last poll.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = proc_stats(op.pid());
    let steps = submission_steps(&env.http, admin_port).await;
    let calls1 = sim_calls(&env.http, &sim_url).await?;
    let writes = env.proxy.counts.snap() - w0;
    watch.abort();
    op.stop();
    sim.stop();

    let tracks = tracks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let lat = |f: fn(&Track) -> Option<Instant>| {
        percentiles(
            tracks
                .values()
                .filter_map(|t| Some((f(t)? - t.applied?).as_secs_f64() * 1000.0))
                .collect(),
        )
    };
    let task_id_ms = lat(|t| t.task_id);
    let succeeded_ms = lat(|t| t.succeeded);
    let between = |from: fn(&Track) -> Option<Instant>, to: fn(&Track) -> Option<Instant>| {
        percentiles(
            tracks
                .values()
                .filter_map(|t| {
                    Some(to(t)?.checked_duration_since(from(t)?)?.as_secs_f64() * 1000.0)
                })
                .collect(),
        )
    };
    let breakdown = format!(
        "where apply→taskId goes, p50/p99 as the bench's watch saw it: apply→finalizer {}, finalizer→attempt record {}, attempt record→taskId {}; inside the operator, per submission: {}",
        ms_pair(between(|t| t.applied, |t| t.finalizer)),
        ms_pair(between(|t| t.finalizer, |t| t.recorded)),
        ms_pair(between(|t| t.recorded, |t| t.task_id)),
        steps
            .iter()
            .map(|(step, figures)| format!("{step} {figures}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let progress_changes: u64 = tracks.values().map(|t| t.progress_changes as u64).sum();
    let calls = calls_delta(&calls1, &calls0);
    let creates = calls.get("CreateTask").copied().unwrap_or(0)
        - calls1
            .get("CreateTask")
            .and_then(|b| b.get("429"))
            .copied()
            .unwrap_or(0);
    let n = objects as f64;
    let bound_writes = 4.0 * n + progress_changes as f64;
    let mut notes = vec![
        format!(
            "created {objects} objects in {:.1}s ({} concurrent creates, rate {}); all Succeeded: {done} after {:.1}s; simulator --finish-after {}, operator --poll-interval {}",
            created_in.as_secs_f64(),
            cli.create_concurrency,
            if pace > 0.0 {
                format!("{pace}/s")
            } else {
                "unpaced".into()
            },
            all_done_in.as_secs_f64(),
            humantime::format_duration(cli.finish_after),
            humantime::format_duration(cli.poll_interval),
        ),
        format!(
            "target 1 CreateTask per object: {} ({creates} accepted CreateTask for {objects} objects)",
            verdict(creates as usize == objects)
        ),
        format!(
            "target K8s writes <= 4/object + 1 per observed progress change: {} ({} ClusterScanTask writes vs bound {bound_writes:.0} = 4x{objects} + {progress_changes} progress changes seen by the bench's watch); Events {} ({:.2}/object), other writes {}, reads (GET incl. watches) {}, 409 conflicts {}",
            verdict(writes.cst_writes as f64 <= bound_writes),
            writes.cst_writes,
            writes.event_writes,
            writes.event_writes as f64 / n,
            writes.other_writes,
            writes.reads,
            writes.conflicts
        ),
        format!(
            "operator VmRSS at the end {}, VmHWM {}",
            mib(stats.rss_kib),
            mib(stats.hwm_kib)
        ),
        breakdown,
    ];
    if per_minute == 0 {
        // Issue #15: under 100 ms when objects arrive paced; a burst is reported against the
        // older 250 ms target and explained by the breakdown above.
        let (target, bound) = if pace > 0.0 {
            ("100 ms with a free budget, paced", 100.0)
        } else {
            ("250 ms with a free budget", 250.0)
        };
        notes.push(format!(
            "target apply→taskId p99 < {target}: {}",
            verdict(task_id_ms.is_some_and(|(_, p99)| p99 < bound))
        ));
    } else {
        let scale = 60.0 / window.as_secs_f64();
        let real = |p: Option<(f64, f64)>| {
            p.map(|(a, b)| {
                format!(
                    "{:.1} / {:.1} min",
                    a * scale / 60_000.0,
                    b * scale / 60_000.0
                )
            })
            .unwrap_or_else(|| "n/a".into())
        };
        notes.push(format!(
            "scaled x{scale:.0} ({per_minute} calls per {} window per API on both sides); implied real time: apply→taskId p50/p99 {}, apply→Succeeded p50/p99 {} (scan duration scaled too), whole batch {:.0} min",
            humantime::format_duration(window),
            real(task_id_ms),
            real(succeeded_ms),
            all_done_in.as_secs_f64() * scale / 60.0
        ));
    }
    Ok(Row {
        scenario: label.to_string(),
        objects,
        calls,
        writes: Some(writes),
        task_id_ms,
        succeeded_ms,
        peak_rss_kib: Some(stats.hwm_kib),
        cpu_secs: Some(stats.cpu_secs),
        throttled: total_429(&calls1) - total_429(&calls0),
        notes,
    })
}

// ------------------------------------------------------------------ scenario 3

/// One operator build or setting measured by scenario 3.
struct Variant {
    label: String,
    bin: PathBuf,
    args: Vec<String>,
}

fn variants(env: &Env, cli: &Cli) -> anyhow::Result<Vec<Variant>> {
    if cli.variants.is_empty() {
        return Ok(vec![Variant {
            label: String::new(),
            bin: env.bin.clone(),
            args: Vec::new(),
        }]);
    }
    cli.variants
        .iter()
        .map(|v| {
            let (label, rest) = v
                .split_once('=')
                .ok_or_else(|| anyhow!("--variant {v:?} is not LABEL=BIN [ARG..]"))?;
            let mut words = rest.split_whitespace();
            let bin = PathBuf::from(
                words
                    .next()
                    .ok_or_else(|| anyhow!("--variant {v:?} has no binary"))?,
            );
            if !bin.exists() {
                bail!("--variant {label}: {} does not exist", bin.display());
            }
            Ok(Variant {
                label: label.to_string(),
                bin,
                args: words.map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Scenario 3: the objects are created once, then each variant is measured on them.
async fn idle(env: &Env, cli: &Cli, objects: usize) -> anyhow::Result<Vec<Row>> {
    let ns = namespace(&env.client, "bench-s3").await?;
    let api: Api<ClusterScanTask> = Api::namespaced(env.client.clone(), &ns);
    let t = Instant::now();
    // Finished two hours ago: existing objects, as after an upgrade or a restart.
    let now = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2)).to_string();
    stream::iter(0..objects)
        .map(|i| {
            let api = api.clone();
            let now = now.clone();
            async move {
                let name = format!("done-{i:05}");
                let mut obj = cluster_scan(&name)?;
                obj.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                let status = serde_json::json!({"status": {
                    "phase": "Succeeded",
                    "taskId": format!("bench-{i:05}"),
                    "submittedAt": now,
                    "finishedAt": now,
                    "observedGeneration": 1,
                    "progress": {"taskStatus": "finished", "scanning": 0, "succeeded": 3, "failed": 0},
                }});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_for_each(|()| futures::future::ok(()))
        .await?;
    let created_in = t.elapsed();
    eprintln!(
        "bench: created {objects} Succeeded objects in {:.1}s",
        created_in.as_secs_f64()
    );

    // What the API server alone takes to LIST them, as the operator's first list does
    // (resourceVersion=0 from the watch cache, unpaginated) and paginated (500 per page).
    let t = Instant::now();
    let all = api.list(&ListParams::default().match_any()).await?;
    let list_rv0 = t.elapsed();
    let list_bytes = serde_json::to_vec(&all)?.len();
    let sample_managed = all
        .items
        .first()
        .map(|o| serde_json::to_vec(&o.metadata.managed_fields).map_or(0, |v| v.len()))
        .unwrap_or(0);
    drop(all);
    let t = Instant::now();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await?;
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    let list_paged = t.elapsed();
    let created = Created {
        ns,
        objects,
        created_in,
        list_rv0,
        list_bytes,
        sample_managed,
        list_paged,
    };
    let mut rows = Vec::new();
    for v in variants(env, cli)? {
        eprintln!("bench: scenario 3 variant {:?}", v.label);
        rows.push(idle_variant(env, cli, &created, &v).await?);
    }
    Ok(rows)
}

/// What scenario 3 created, and what the API server alone takes to list it.
struct Created {
    ns: String,
    objects: usize,
    created_in: Duration,
    list_rv0: Duration,
    list_bytes: usize,
    sample_managed: usize,
    list_paged: Duration,
}

async fn idle_variant(env: &Env, cli: &Cli, c: &Created, v: &Variant) -> anyhow::Result<Row> {
    let Created {
        ns,
        objects,
        created_in,
        list_rv0,
        list_bytes,
        sample_managed,
        list_paged,
    } = c;
    let (objects, list_bytes, sample_managed) = (*objects, *list_bytes, *sample_managed);
    let (mut sim, sim_url) = start_simulator(
        &env.bin,
        &SimSettings {
            throttle_per_minute: 5,
            throttle_window: Duration::from_secs(60),
            finish_after: Duration::from_secs(30),
        },
        &env.logs.join("sim-s3.log"),
    )?;
    let admin_port = free_port()?;
    let calls0 = sim_calls(&env.http, &sim_url).await?;
    let w0 = env.proxy.counts.snap();
    let spawned = Instant::now();
    let mut op = start_operator(
        &v.bin,
        &OperatorSettings {
            namespace: ns,
            sim_url: &sim_url,
            kubeconfig: &env.proxy_kubeconfig,
            admin_port,
            budget_per_minute: 5,
            budget_window: Duration::from_secs(60),
            poll_interval: Duration::from_secs(15),
            log: env.logs.join(format!("operator-s3{}.log", v.label)),
            extra_args: &v.args,
        },
    )?;
    while readyz(&env.http, admin_port).await != 200 {
        if spawned.elapsed() > Duration::from_secs(120) {
            bail!("operator not ready in 120s; see its log");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cold = spawned.elapsed();
    let at_ready = proc_stats(op.pid());
    // Let the initial reconcile of every object finish before measuring idle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let a = proc_stats(op.pid());
    let calls_a = sim_calls(&env.http, &sim_url).await?;
    let wa = env.proxy.counts.snap();
    let t_idle = Instant::now();
    let mut max_rss = a.rss_kib;
    while t_idle.elapsed() < cli.idle {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_rss = max_rss.max(proc_stats(op.pid()).rss_kib);
    }
    let idle_s = t_idle.elapsed().as_secs_f64();
    let b = proc_stats(op.pid());
    let calls_b = sim_calls(&env.http, &sim_url).await?;
    let wb = env.proxy.counts.snap();
    op.stop();
    sim.stop();

    let idle_calls: u64 = calls_delta(&calls_b, &calls_a).values().sum();
    let cpu_per_min = (b.cpu_secs - a.cpu_secs) / idle_s * 60.0;
    let startup_writes = wa - w0;
    let idle_writes = wb - wa;
    let mut notes = vec![
        format!(
            "{objects} objects created with finalizer and status Succeeded (status subresource) in {:.1}s before the operator starts",
            created_in.as_secs_f64()
        ),
        format!(
            "API server alone (bench client, not via the proxy): LIST rv=0 unpaginated {:.2}s ({:.1} MiB of JSON re-encoded, {:.0} B/object of which managedFields {sample_managed} B), paginated 500/page {:.2}s",
            list_rv0.as_secs_f64(),
            list_bytes as f64 / 1048576.0,
            list_bytes as f64 / objects.max(1) as f64,
            list_paged.as_secs_f64()
        ),
        format!(
            "cold start (spawn → /readyz 200): {:.2}s — target < 3 s: {}",
            cold.as_secs_f64(),
            verdict(cold < Duration::from_secs(3))
        ),
        format!(
            "RSS at ready {}, steady VmRSS over {idle_s:.0}s idle: end {}, max {} — target < 64 MiB: {}; VmHWM {}",
            mib(at_ready.rss_kib),
            mib(b.rss_kib),
            mib(max_rss),
            verdict(max_rss < 64 * 1024),
            mib(b.hwm_kib)
        ),
        format!(
            "CPU: {:.2}s to ready, {:.2}s by end of settle (ready + 10 s), idle {:.3} s CPU per minute",
            at_ready.cpu_secs, a.cpu_secs, cpu_per_min
        ),
        format!(
            "HSS calls while idle: {idle_calls} ({:.1}/min) — target 0: {}; during start-up: {}",
            idle_calls as f64 / idle_s * 60.0,
            verdict(idle_calls == 0),
            fmt_calls(&calls_delta(&calls_a, &calls0))
        ),
        format!(
            "K8s writes during start-up+settle: ClusterScanTask {}, Events {}, other {}; while idle: ClusterScanTask {}, Events {}; reads during start-up {} (GET incl. list/watch)",
            startup_writes.cst_writes,
            startup_writes.event_writes,
            startup_writes.other_writes,
            idle_writes.cst_writes,
            idle_writes.event_writes,
            startup_writes.reads
        ),
    ];
    if !v.label.is_empty() {
        notes.insert(
            0,
            format!(
                "variant {}: {} {}",
                v.label,
                v.bin.display(),
                v.args.join(" ")
            ),
        );
    }
    Ok(Row {
        scenario: if v.label.is_empty() {
            "3 idle, existing Succeeded".into()
        } else {
            format!("3 idle, existing Succeeded: {}", v.label)
        },
        objects,
        calls: calls_delta(&calls_b, &calls0),
        writes: Some(wb - w0),
        task_id_ms: None,
        succeeded_ms: None,
        peak_rss_kib: Some(b.hwm_kib),
        cpu_secs: Some(b.cpu_secs),
        throttled: total_429(&calls_b) - total_429(&calls0),
        notes,
    })
}

// ------------------------------------------------------------------ scenario 4

const SDK_SCRIPT: &str = r#"
import os, sys
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkhss.v5 import (CreateTaskRequest, CreateTaskRequestBody,
                                  CreateTaskRequestBodyClusterScanInfo, HssClient)

client = (HssClient.new_builder()
          .with_http_config(HttpConfig.get_default_config())
          .with_credentials(BasicCredentials(os.environ["HUAWEICLOUD_SDK_AK"],
                                             os.environ["HUAWEICLOUD_SDK_SK"], sys.argv[2]))
          .with_endpoints([sys.argv[1]])
          .build())
info = CreateTaskRequestBodyClusterScanInfo(scan_type_list=["cluster_vul", "benchmark"],
                                            range_type="all_cluster")
resp = client.create_task(CreateTaskRequest(body=CreateTaskRequestBody(
    task_type="cluster_scan", cluster_scan_info=info)))
print(resp.task_id)
"#;

const MANIFEST: &str = "apiVersion: hss.scanops.dev/v1alpha1
kind: ClusterScanTask
metadata:
  name: bench-submit
spec:
  taskType: cluster_scan
  clusterScan:
    scanTypes: [cluster_vul, benchmark]
    rangeType: all_cluster
";

/// Runs `cmd` under /usr/bin/time; returns (wall seconds, max RSS KiB).
fn timed(cmd: Command, dir: &Path) -> anyhow::Result<(f64, Option<u64>)> {
    let out_file = dir.join("time.out");
    let have_time = Path::new("/usr/bin/time").exists();
    let mut run = if have_time {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"]).arg(&out_file);
        c.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c
    } else {
        cmd
    };
    let t = Instant::now();
    let out = run.stdin(Stdio::null()).output()?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{:?} failed: {}{}",
            run.get_program(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rss = if have_time {
        std::fs::read_to_string(&out_file)?
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
    } else {
        None
    };
    Ok((wall, rss))
}

async fn sdk_vs_submit(env: &Env, cli: &Cli) -> anyhow::Result<Row> {
    let python = cli
        .python
        .clone()
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    let dir = env.logs.join("s4");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("create_task.py");
    std::fs::write(&script, SDK_SCRIPT)?;
    let manifest = dir.join("scan.yaml");
    std::fs::write(&manifest, MANIFEST)?;
    let (mut sim, sim_url) = start_simulator(
        &env.bin,
        &SimSettings {
            throttle_per_minute: 0,
            throttle_window: Duration::from_secs(60),
            finish_after: Duration::from_secs(30),
        },
        &env.logs.join("sim-s4.log"),
    )?;
    let calls0 = sim_calls(&env.http, &sim_url).await?;
    let mut sdk = Vec::new();
    let mut sub = Vec::new();
    for _ in 0..cli.runs {
        let mut c = Command::new(&python);
        c.arg(&script)
            .arg(&sim_url)
            .arg("proj")
            .env("HUAWEICLOUD_SDK_AK", "AKSIM")
            .env("HUAWEICLOUD_SDK_SK", "SKSIM");
        sdk.push(timed(c, &dir)?);
        let mut c = Command::new(&env.bin);
        c.arg("submit")
            .arg("-f")
            .arg(&manifest)
            .args(["--endpoint", &sim_url, "--project-id", "proj"])
            .args(["--allow-insecure-endpoints", "--budget-per-minute", "0"])
            .env("HUAWEICLOUD_SDK_AK", "AKSIM")
            .env("HUAWEICLOUD_SDK_SK", "SKSIM")
            .env("RUST_LOG", "warn");
        sub.push(timed(c, &dir)?);
    }
    let calls1 = sim_calls(&env.http, &sim_url).await?;
    sim.stop();
    let median = |v: Vec<f64>| percentiles(v).map(|(p50, _)| p50).unwrap_or(f64::NAN);
    let sdk_wall = median(sdk.iter().map(|s| s.0).collect());
    let sub_wall = median(sub.iter().map(|s| s.0).collect());
    let sdk_rss = median(sdk.iter().filter_map(|s| s.1).map(|k| k as f64).collect());
    let sub_rss = median(sub.iter().filter_map(|s| s.1).map(|k| k as f64).collect());
    let notes = vec![
        format!(
            "{} runs each, alternating, one process per scan against the simulator (no throttling); medians",
            cli.runs
        ),
        format!(
            "Python SDK script ({}): wall {:.0} ms, peak RSS {}",
            python.display(),
            sdk_wall * 1000.0,
            mib(sdk_rss as u64)
        ),
        format!(
            "hss-operator submit: wall {:.0} ms, peak RSS {}",
            sub_wall * 1000.0,
            mib(sub_rss as u64)
        ),
        format!(
            "target submit >= 10x faster: {} ({:.1}x); >= 5x smaller: {} ({:.1}x)",
            verdict(sdk_wall / sub_wall >= 10.0),
            sdk_wall / sub_wall,
            verdict(sdk_rss / sub_rss >= 5.0),
            sdk_rss / sub_rss
        ),
    ];
    Ok(Row {
        scenario: "4 SDK script vs submit".into(),
        objects: 0,
        calls: calls_delta(&calls1, &calls0),
        writes: None,
        task_id_ms: None,
        succeeded_ms: None,
        peak_rss_kib: None,
        cpu_secs: None,
        throttled: total_429(&calls1) - total_429(&calls0),
        notes,
    })
}

// ------------------------------------------------------------------ main

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin = operator_bin(&cli)?;
    let needs_cluster = cli.scenarios.iter().any(|s| matches!(s, 1..=3));
    let logs = repo()
        .join("target/bench")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&logs)?;
    eprintln!("bench: logs in {}", logs.display());
    let cp = control_plane()?;
    let config = kube_config(&cp.kubeconfig).await?;
    let client = Client::try_from(config.clone())?;
    if needs_cluster {
        install_crds(&client).await?;
    }
    let (proxy, proxy_kubeconfig) = start_proxy(&config, &cp.dir).await?;
    let env = Env {
        cp,
        client,
        proxy,
        proxy_kubeconfig,
        bin,
        http: reqwest::Client::new(),
        logs,
    };
    let mut rows = Vec::new();
    for s in cli.scenarios.clone() {
        eprintln!("bench: scenario {s}");
        let result = match s {
            1 => {
                pipelines(
                    &env,
                    &cli,
                    "1 raw pipeline",
                    cli.objects.unwrap_or(100),
                    0,
                    Duration::from_secs(60),
                )
                .await
            }
            2 => {
                pipelines(
                    &env,
                    &cli,
                    "2 budget 5/1s (x60)",
                    cli.objects.unwrap_or(1000),
                    5,
                    Duration::from_secs(1),
                )
                .await
            }
            3 => idle(&env, &cli, cli.objects.unwrap_or(10_000)).await,
            4 => sdk_vs_submit(&env, &cli).await.map(|r| vec![r]),
            other => Err(anyhow!("no scenario {other}")),
        };
        match result {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("bench: scenario {s} failed: {e:#}");
                rows.push(Row {
                    scenario: format!("{s} FAILED"),
                    notes: vec![format!("{e:#}")],
                    ..Row::default()
                });
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nhss-operator bench, {} , {} CPUs, load average {}\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    print_table(&rows);
    drop(env.cp);
    Ok(())
}
