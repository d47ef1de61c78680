//! Chaos: 300 ClusterScanTasks applied while the operator process is SIGKILLed and restarted
//! at random moments, the HSS simulator fails a fifth of the CreateTask calls (5xx before and
//! after the commit, answers later than the client timeout, committed-then-dropped connections,
//! 429s) and a tenth of the ListTasks calls, the API server answers some writes with 409
//! conflicts (a conflict-injecting proxy between the operator and the API server), and a random
//! third of the objects is deleted mid-run. Mid-run, 800 newer tasks are created behind the
//! operator's back, so the listings its shared poll reads are incomplete from then on (a task
//! it follows that falls off them is asked for by id; crates/hss-operator/tests/apiserver/controller.rs shows that case
//! deterministically).
//!
//! Half of the objects are identical all-cluster scans (HSS cannot tell their tasks apart: the
//! hard case for lookups); a quarter scan a cluster of their own and a quarter (iac_scan) a file
//! of their own (the CreateTask body says whose task it is: an exact oracle).
//!
//! At the end, from the simulator's records and the objects: every surviving object succeeded
//! and names a task HSS created; no object ever changed its task; no task was ever named by two
//! objects at once; every own-cluster survivor has exactly one task, its own, and every deleted
//! one at most one; all-cluster tasks named by no survivor are at most the deleted all-cluster
//! objects; and the deleted objects are gone (no finalizer left behind). Numbers are printed:
//! kills, injected conflicts, HSS calls by status, tasks, wall time.
//!
//! Two more sources of trouble: every other run of the operator takes temporary credentials
//! from the simulator's CCE Pod Identity instead of the shared AK, and the simulator forgets
//! the temporary credentials it issued every few seconds (an expiry before the advertised
//! time: the cached ones get 401 and are fetched again once); and a second operator, never
//! killed, in a namespace of its own, sharing the AK, runs [`PEER_OBJECTS`] objects of the
//! same kinds at the same time (its identical scans ask for other scan types: see
//! [`peer_object`]). No task may be named by objects of both.
//!
//! Everything random derives from one seed: `CHAOS_SEED` (default [`DEFAULT_SEED`]); timing
//! still varies between runs. Every assertion names the seed. Evidence on failure: the
//! operator's logs (`target/chaos-operator-SEED.log`, all runs) and the proxy's journal
//! (`target/chaos-proxy-SEED.log`: every API request with what it wrote and got, and the
//! test's kills, applies and deletions).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body as AxumBody,
    extract::{Request, State},
    response::Response,
};
use futures::{StreamExt, future::join_all};
use hss_client::{
    budget::Budget,
    client::{ClientConfig, HssClient},
    credentials::Credentials,
    endpoint::Endpoint,
    model::{ClusterScanInfo, CreateTaskRequest, RangeType, ScanType, TaskType},
};
use hss_operator::crd::{ClusterScanTask, Phase};
use hss_simulator::{Api as HssApi, CreatedTask, FaultKind, FaultPlan, SimConfig, Simulator};
use hss_testkit::cluster::*;
use http::{HeaderName, Method, StatusCode, header};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::watcher,
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::index::sample};
use tokio::{process::Child, time::Instant};

const DEFAULT_SEED: u64 = 0x00C0_FFEE;
const OBJECTS: usize = 300;
const DELETED: usize = OBJECTS / 3;
const BATCH: usize = 15;
/// Between the starts of two creation batches: the applies span most of the kills.
const BATCH_EVERY: Duration = Duration::from_millis(2500);
/// A doomed object is deleted this long after its batch was created (half of them soon, half
/// later): in every phase, from not yet seen by the operator to finished.
const DELETE_SOON_MS: std::ops::Range<u64> = 0..2_500;
const DELETE_AFTER_MS: std::ops::Range<u64> = 2_500..20_000;
/// At least this many SIGKILLs; the killer also keeps going while objects are being applied
/// and deleted.
const MIN_KILLS: u32 = 12;
/// Uptime of one operator process before it is killed.
const UPTIME_MS: std::ops::Range<u64> = 1_500..7_000;
/// Pause between a kill and the restart.
const DOWNTIME_MS: std::ops::Range<u64> = 0..800;
/// Share of CreateTask calls that get a fault, spread evenly over the kinds.
const CREATE_FAULT_SHARE: f64 = 0.20;
const LIST_FAULT_SHARE: f64 = 0.10;
/// Share of PATCH/PUT requests on clusterscantasks the proxy answers with 409.
const CONFLICT_SHARE: f64 = 0.10;
/// Tasks created behind the operator's back mid-run, newer than its tasks, so that the ones it
/// follows fall off the pages its shared poll reads (it must ask for them by id).
const BURYING_TASKS: usize = 800;
/// A second after a batch is applied: its tasks are running when they are buried.
const BURY_AT: Duration = Duration::from_secs(16);
/// The second operator's objects (indices after the first operator's: their own clusters and
/// files differ).
const PEER_OBJECTS: usize = 24;
/// Between two forced expiries of the temporary credentials the simulator issued.
const EXPIRE_EVERY_MS: std::ops::Range<u64> = 1_500..4_000;
/// After the chaos: how long every survivor may take to succeed and every deleted object to go.
const SETTLE_BOUND: Duration = Duration::from_secs(150);

fn seed() -> u64 {
    match std::env::var("CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CHAOS_SEED={s:?} is not a u64")),
        Err(_) => DEFAULT_SEED,
    }
}

/// An independent RNG for one purpose, so adding draws for one does not shift another.
fn rng_for(seed: u64, purpose: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

// ---------------------------------------------------------------------------------------------
// The conflict-injecting proxy: plain HTTP on loopback in front of the API server. Most
// requests are forwarded (streaming the answer, so watches work) with the admin identity; a
// seeded share of the writes to ClusterScanTasks is answered `409 Conflict` without forwarding.
// ---------------------------------------------------------------------------------------------

struct ConflictProxy {
    upstream: Client,
    rng: Mutex<StdRng>,
    share: f64,
    writes: AtomicU64,
    injected: AtomicU64,
    forwarded: AtomicU64,
    upstream_errors: AtomicU64,
    /// Every request with its answer, and the test's own notes (kills, applies, deletions):
    /// the evidence when an assertion fails.
    journal: Mutex<std::io::BufWriter<std::fs::File>>,
    began: Instant,
}

/// Never forwarded as they are: the connection's own business, or set again by the client.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::UPGRADE,
    header::AUTHORIZATION,
];

impl ConflictProxy {
    /// Serves on a free loopback port; returns the proxy and its `http://` URL.
    async fn start(
        upstream: Client,
        seed: u64,
        share: f64,
        journal: &std::path::Path,
    ) -> (Arc<Self>, String) {
        let journal = std::fs::File::create(journal).expect("proxy journal");
        let proxy = Arc::new(Self {
            journal: Mutex::new(std::io::BufWriter::new(journal)),
            began: Instant::now(),
            upstream,
            rng: Mutex::new(rng_for(seed, 3)),
            share,
            writes: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let app = Router::new().fallback(forward).with_state(proxy.clone());
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await;
        });
        (proxy, url)
    }

    fn note(&self, line: &str) {
        use std::io::Write;
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(j, "{:>8.3} {line}", self.began.elapsed().as_secs_f64());
    }

    fn flush(&self) {
        use std::io::Write;
        let _ = self
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();
    }

    fn conflict_now(&self, method: &Method, path: &str) -> bool {
        if !(method == Method::PATCH || method == Method::PUT)
            || !path.contains("/clusterscantasks/")
        {
            return false;
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        let hit = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random::<f64>()
            < self.share;
        if hit {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "reason": reason,
        "code": code.as_u16(),
        "message": message,
    });
    let mut resp = Response::new(AxumBody::from(body.to_string()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// What a ClusterScanTask body says: name, resourceVersion, phase, task id, attempt id.
fn summary(bytes: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return String::new();
    };
    let one = |o: &serde_json::Value| {
        let s = |p: &str| {
            o.pointer(p)
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_string()
        };
        let conditions: Vec<&str> = o
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
            .filter(|c| c.get("status").and_then(|v| v.as_str()) == Some("True"))
            .filter_map(|c| c.get("type").and_then(|v| v.as_str()))
            .collect();
        format!(
            "{} rv={} phase={} task={} attempt={} true={}",
            s("/metadata/name"),
            s("/metadata/resourceVersion"),
            s("/status/phase"),
            s("/status/taskId"),
            s("/status/submission/attemptId"),
            conditions.join(","),
        )
    };
    match v.get("items").and_then(|i| i.as_array()) {
        Some(items) => format!(
            "list rv={} items={}",
            v.pointer("/metadata/resourceVersion")
                .and_then(|v| v.as_str())
                .unwrap_or("-"),
            items.len()
        ),
        None if v.get("kind").and_then(|k| k.as_str()) == Some("ClusterScanTask") => one(&v),
        None => String::new(),
    }
}

async fn forward(
    State(proxy): State<Arc<ConflictProxy>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let cst = target.contains("/clusterscantasks");
    let what = format!("{} {} {}", peer.port(), parts.method, target);
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return status_response(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body");
    };
    if proxy.conflict_now(&parts.method, parts.uri.path()) {
        proxy.note(&format!("{what} [{}] -> 409 INJECTED", summary(&bytes)));
        return status_response(
            StatusCode::CONFLICT,
            "Conflict",
            "injected conflict: the object has been modified; please apply your changes to the latest version and try again",
        );
    }
    let sent = if cst { summary(&bytes) } else { String::new() };
    let mut builder = http::Request::builder()
        .method(parts.method)
        .uri(target.as_str());
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(name) {
            builder = builder.header(name, value);
        }
    }
    let Ok(upstream_req) = builder.body(kube::client::Body::from(bytes.to_vec())) else {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "unforwardable request",
        );
    };
    match proxy.upstream.send(upstream_req).await {
        Ok(resp) => {
            proxy.forwarded.fetch_add(1, Ordering::Relaxed);
            let (mut parts, body) = resp.into_parts();
            parts.headers.remove(header::CONNECTION);
            parts.headers.remove(header::TRANSFER_ENCODING);
            if target.contains("watch=") || !cst {
                // Streamed through (watches); only ClusterScanTask answers are read and noted.
                proxy.note(&format!("{what} [{sent}] -> {}", parts.status.as_u16()));
                return Response::from_parts(parts, AxumBody::new(body));
            }
            let answer = axum::body::to_bytes(AxumBody::new(body), 64 << 20)
                .await
                .unwrap_or_default();
            proxy.note(&format!(
                "{what} [{sent}] -> {} [{}]",
                parts.status.as_u16(),
                summary(&answer)
            ));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, AxumBody::from(answer))
        }
        Err(e) => {
            proxy.upstream_errors.fetch_add(1, Ordering::Relaxed);
            proxy.note(&format!("{what} [{sent}] -> upstream error {e}"));
            status_response(
                StatusCode::BAD_GATEWAY,
                "InternalError",
                &format!("proxy: upstream failed: {e}"),
            )
        }
    }
}

/// A kubeconfig for the operator: the proxy, no credentials (the proxy adds the admin's).
fn proxy_kubeconfig(url: &str, seed: u64) -> std::path::PathBuf {
    let path = proxy_kubeconfig_path(seed);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: {url}\n\
         users:\n- name: anonymous\n  user: {{}}\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    user: anonymous\n\
         current-context: proxy\n"
    );
    std::fs::write(&path, text).expect("write the operator's kubeconfig");
    path
}

fn proxy_kubeconfig_path(seed: u64) -> std::path::PathBuf {
    repo().join(format!(
        "target/chaos-kubeconfig-{seed}-{}",
        std::process::id()
    ))
}

// ---------------------------------------------------------------------------------------------
// The operator process.
// ---------------------------------------------------------------------------------------------

/// The operator as the chaos run starts it, run after run, into one log.
struct OperatorCmd {
    process: hss_testkit::OperatorProcess,
    log: std::path::PathBuf,
    endpoint: String,
    token_file: std::path::PathBuf,
}

impl OperatorCmd {
    fn new(
        kubeconfig: &std::path::Path,
        namespace: &str,
        endpoint: &str,
        log: &std::path::Path,
    ) -> Self {
        let process = hss_testkit::OperatorProcess::new(
            std::path::Path::new(env!("CARGO_BIN_EXE_hss-operator")),
            kubeconfig,
            namespace,
            endpoint,
            log,
        )
        .args([
            "--poll-interval",
            "1s",
            "--budget-per-minute",
            "0",
            "--lookup-settle",
            "2s",
            "--cleanup-timeout",
            "10s",
            "--hss-timeout",
            "2s",
            "--claims-configmap",
            &format!("{namespace}/hss-operator-claims"),
            "--log-format",
            "plain",
        ])
        .env("RUST_LOG", "info,hss_operator=debug");
        let token_file = log.with_extension("token");
        std::fs::write(&token_file, hss_simulator::DEFAULT_IDENTITY_TOKEN)
            .expect("pod identity token file");
        Self {
            process,
            log: log.to_path_buf(),
            endpoint: endpoint.to_string(),
            token_file,
        }
    }

    /// Odd runs: temporary credentials from the simulator's pod identity, not the AK.
    fn with_credentials_of(&self, run: u32) -> hss_testkit::OperatorProcess {
        if run.is_multiple_of(2) {
            return self.process.clone();
        }
        use hss_client::chain::env;
        self.process
            .clone()
            .without_env("HUAWEICLOUD_SDK_AK")
            .without_env("HUAWEICLOUD_SDK_SK")
            .args(["--credentials-source", "pod-identity"])
            .env(
                env::POD_IDENTITY_URI,
                &format!("{}/v1/pod-identity/credentials", self.endpoint),
            )
            .env(
                env::POD_IDENTITY_TOKEN_FILE,
                &self.token_file.display().to_string(),
            )
    }

    fn spawn(&self, run: u32) -> Child {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log");
        let _ = writeln!(
            log,
            "===== chaos: operator run {run} ({}) =====",
            if run.is_multiple_of(2) {
                "AK/SK"
            } else {
                "pod identity"
            }
        );
        let port = free_port().to_string();
        let cmd = self
            .with_credentials_of(run)
            .args(["--admin-listen", &format!("127.0.0.1:{port}")])
            .env("POD_NAME", &format!("chaos-{run}"))
            .command()
            .expect("operator command");
        tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .expect("start hss-operator run")
    }
}

// ---------------------------------------------------------------------------------------------
// What the test sees of the objects over time: a watch of its own, straight to the API server.
// Watch events arrive in etcd order, so their sequence numbers order who named a task when.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Seen {
    seq: u64,
    /// By uid.
    objects: HashMap<String, SeenObject>,
}

#[derive(Default, Clone)]
struct SeenObject {
    name: String,
    /// Task ids in status, with the sequence number of the event that first showed each.
    ids: Vec<(String, u64)>,
    /// First event with a deletionTimestamp.
    deleting: Option<u64>,
    /// The deletion event (the object left the API server).
    gone: Option<u64>,
    /// Every change of phase or task id: `#SEQ rv=RV PHASE TASK`.
    history: Vec<String>,
    last: Option<(Option<Phase>, Option<String>)>,
}

impl Seen {
    fn record(&mut self, obj: &ClusterScanTask, deleted: bool) {
        self.seq += 1;
        let seq = self.seq;
        let Some(uid) = obj.uid() else { return };
        let seen = self.objects.entry(uid).or_default();
        seen.name = obj.name_any();
        if let Some(id) = task_id(obj)
            && !seen.ids.iter().any(|(known, _)| *known == id)
        {
            seen.ids.push((id, seq));
        }
        let now = (phase(obj), task_id(obj));
        if seen.last.as_ref() != Some(&now) {
            seen.history.push(format!(
                "#{seq} rv={} {:?} {}",
                obj.resource_version().unwrap_or_default(),
                now.0,
                now.1.as_deref().unwrap_or("-")
            ));
            seen.last = Some(now);
        }
        if obj.metadata.deletion_timestamp.is_some() && seen.deleting.is_none() {
            seen.deleting = Some(seq);
        }
        if deleted {
            seen.gone = Some(seq);
        }
    }
}

/// Odd objects scan a cluster of their own, so the CreateTask body tells whose task it is.
/// Odd objects own a resource, which makes their task recognisable in HSS: a cluster of their
/// own (i % 4 == 1) or an IaC file of their own (i % 4 == 3).
fn own_resource(i: usize) -> Option<String> {
    match i % 4 {
        1 => Some(format!("cce-chaos-{i:03}")),
        3 => Some(format!("file-chaos-{i:03}")),
        _ => None,
    }
}

/// Even objects: identical all-cluster scans, indistinguishable in HSS (the hard case for
/// lookups). Odd objects: a specific cluster each, with other scan types (so the two kinds
/// never match each other's lookups), or an iac_scan of a file of their own (confirmed by its
/// file ids, as specific clusters are by theirs).
fn object(i: usize, name: &str) -> ClusterScanTask {
    match own_resource(i) {
        None => cluster_scan(name),
        Some(file) if i % 4 == 3 => scan(
            name,
            serde_json::json!({"taskType": "iac_scan", "iacScan": {
                "fileType": "k8s_yaml",
                "fileIds": [file],
            }}),
        ),
        Some(cluster) => scan(
            name,
            serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
                "scanTypes": ["cluster_vul", "risk_assessment"],
                "rangeType": "specific_cluster",
                "clusterIds": [cluster],
            }}),
        ),
    }
}

/// The second operator's objects: as [`object`], but its identical all-cluster scans ask for
/// other scan types than the first operator's. Byte-identical scans of two operators sharing an
/// AK, created within the lookup window's margin (about 2 s: the clock offset is known from
/// whole-second `Date` headers) when one POST's outcome is unknown, cannot be told apart in
/// HSS: no field tags a task. This test found exactly that; the README says so.
fn peer_object(i: usize, name: &str) -> ClusterScanTask {
    match own_resource(i) {
        None => scan(
            name,
            serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
                "scanTypes": ["cluster_vul", "risk_assessment"],
                "rangeType": "all_cluster",
            }}),
        ),
        Some(_) => object(i, name),
    }
}

/// The single cluster or file a created task was asked to scan, if it named one.
fn task_resource(t: &CreatedTask) -> Option<&str> {
    let ids = t
        .body
        .pointer("/cluster_scan_info/cluster_id_list")
        .or_else(|| t.body.pointer("/iac_scan_info/file_id_list"))?;
    match ids.as_array()?.as_slice() {
        [one] => one.as_str(),
        _ => None,
    }
}

/// A burying task's body: scan types no object uses, so no lookup takes one for its own.
fn burying_request() -> CreateTaskRequest {
    CreateTaskRequest {
        task_type: TaskType::ClusterScan,
        cluster_scan_info: Some(ClusterScanInfo {
            scan_type_list: vec![ScanType::Benchmark],
            range_type: RangeType::AllCluster,
            cluster_id_list: None,
        }),
        iac_scan_info: None,
    }
}

fn is_burying(t: &CreatedTask) -> bool {
    t.body.pointer("/cluster_scan_info/scan_type_list") == Some(&serde_json::json!(["benchmark"]))
}

fn task_id(o: &ClusterScanTask) -> Option<String> {
    o.status.as_ref().and_then(|s| s.task_id.clone())
}

fn describe(o: &ClusterScanTask) -> String {
    let st = o.status.clone().unwrap_or_default();
    format!(
        "{} phase={:?} taskId={:?} submission={} deleting={}",
        o.name_any(),
        st.phase,
        st.task_id,
        serde_json::to_string(&st.submission).unwrap_or_default(),
        o.metadata.deletion_timestamp.is_some(),
    )
}

/// The operator's Events about `name`: time, reporting instance (= operator run), reason, note.
fn events_about(events: &[Event], name: &str) -> Vec<String> {
    let mut out: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            let at = e
                .event_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            let line = format!(
                "    {at} {} {}: {}",
                e.reporting_instance.as_deref().unwrap_or("?"),
                e.reason.as_deref().unwrap_or("?"),
                e.note.as_deref().unwrap_or("")
            );
            (at, line)
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, l)| l).collect()
}

enum Step {
    Create(Vec<usize>),
    Delete(usize),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_objects_survive_kills_faults_and_conflicts_with_one_task_each() {
    let seed = seed();
    let tag = format!("CHAOS_SEED={seed}");
    eprintln!("chaos: {tag} (rerun with this environment variable to repeat)");
    let began = Instant::now();

    let client = admin().await;
    let ns = namespace(&client, "chaos").await;
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);

    // HSS: tasks finish after 1 s; faults on a fifth of CreateTask calls, a tenth of ListTasks.
    let sim = Simulator::start(SimConfig {
        finish_after: Duration::from_millis(1500),
        seed,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let create_faults = [
        FaultKind::ServerError,
        FaultKind::CommitThenServerError,
        // Beyond the operator's --hss-timeout 2s; the task is committed before the delay.
        FaultKind::Latency(Duration::from_secs(3)),
        FaultKind::CommitThenDrop,
        FaultKind::Throttle,
    ];
    // Plans are tried in order and at most one applies, so the i-th plan's probability is its
    // share of what the earlier plans left over: each kind hits share/n of all calls.
    let each = CREATE_FAULT_SHARE / create_faults.len() as f64;
    for (i, kind) in create_faults.iter().enumerate() {
        sim.add_fault(
            HssApi::CreateTask,
            FaultPlan {
                kind: kind.clone(),
                probability: each / (1.0 - each * i as f64),
                remaining: None,
            },
        );
    }
    sim.add_fault(
        HssApi::ListTasks,
        FaultPlan {
            kind: FaultKind::ServerError,
            probability: LIST_FAULT_SHARE,
            remaining: None,
        },
    );

    let journal = repo().join(format!("target/chaos-proxy-{seed}.log"));
    let (proxy, proxy_url) =
        ConflictProxy::start(client.clone(), seed, CONFLICT_SHARE, &journal).await;
    let log = repo().join(format!("target/chaos-operator-{seed}.log"));
    let _ = std::fs::remove_file(&log);
    let cmd = OperatorCmd::new(
        &proxy_kubeconfig(&proxy_url, seed),
        &ns,
        &sim.base_url(),
        &log,
    );

    // The second operator: a namespace and objects of its own, the same AK, never killed.
    let peer_ns = namespace(&client, "chaos-peer").await;
    let peer_api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &peer_ns);
    let peer_names: Vec<(usize, String)> = (OBJECTS..OBJECTS + PEER_OBJECTS)
        .map(|i| (i, format!("peer-{i:03}")))
        .collect();
    let peer_log = repo().join(format!("target/chaos-peer-{seed}.log"));
    let _ = std::fs::remove_file(&peer_log);
    let peer_cmd = OperatorCmd::new(
        &control_plane().kubeconfig,
        &peer_ns,
        &sim.base_url(),
        &peer_log,
    );

    // The test's own record of every task id every object ever showed.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = {
        let seen = seen.clone();
        let stream = watcher(api.clone(), watcher::Config::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&o, false),
                    Ok(watcher::Event::Delete(o)) => seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&o, true),
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("chaos: test watch error (retried): {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        })
    };

    // The schedule of applies and deletions, from the seed.
    let names: Vec<String> = (0..OBJECTS).map(|i| format!("cst-{i:03}")).collect();
    let mut rng = rng_for(seed, 1);
    let doomed: BTreeSet<usize> = sample(&mut rng, OBJECTS, DELETED).into_iter().collect();
    let mut schedule: Vec<(Duration, Step)> = Vec::new();
    for (b, chunk) in (0..OBJECTS).collect::<Vec<_>>().chunks(BATCH).enumerate() {
        let at = BATCH_EVERY * b as u32;
        schedule.push((at, Step::Create(chunk.to_vec())));
        for &i in chunk.iter().filter(|i| doomed.contains(i)) {
            // Half soon after the apply (mostly before or during submission), half later.
            let after = if rng.random_bool(0.5) {
                Duration::from_millis(rng.random_range(DELETE_SOON_MS))
            } else {
                Duration::from_millis(rng.random_range(DELETE_AFTER_MS))
            };
            schedule.push((at + after, Step::Delete(i)));
        }
    }
    // Creations first at equal times (a deletion never precedes its object's creation).
    schedule.sort_by_key(|(at, step)| (*at, matches!(step, Step::Delete(_))));

    // Chaos starts: the operator runs, the driver applies and deletes on schedule, the killer
    // kills and restarts the operator.
    let chaos_began = Instant::now();
    let driver = {
        let api = api.clone();
        let names = names.clone();
        let tag = tag.clone();
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut at_deletion: HashMap<String, Option<String>> = HashMap::new();
            for (at, step) in schedule {
                tokio::time::sleep_until(chaos_began + at).await;
                match step {
                    Step::Create(batch) => {
                        let creates = batch.iter().map(|&i| {
                            let api = api.clone();
                            let name = names[i].clone();
                            async move {
                                api.create(&PostParams::default(), &object(i, &name))
                                    .await
                                    .map_err(|e| format!("create {name}: {e}"))
                            }
                        });
                        for r in join_all(creates).await {
                            r.unwrap_or_else(|e| panic!("{tag}: {e}"));
                        }
                        proxy.note(&format!(
                            "TEST created {}..={}",
                            names[batch[0]],
                            names[batch[batch.len() - 1]]
                        ));
                    }
                    Step::Delete(i) => {
                        let got = api
                            .delete(&names[i], &DeleteParams::default())
                            .await
                            .unwrap_or_else(|e| panic!("{tag}: delete {}: {e}", names[i]));
                        let id = got.left().and_then(|o| task_id(&o));
                        proxy.note(&format!("TEST deleted {} (task {id:?})", names[i]));
                        at_deletion.insert(names[i].clone(), id);
                    }
                }
            }
            at_deletion
        })
    };

    let burier = {
        let hss = HssClient::new(
            ClientConfig::new(Endpoint::parse(&sim.base_url()).expect("endpoint"), "proj"),
            Credentials::permanent("AKSIM", "SKSIM").expect("credentials"),
            Budget::per_minute(0),
        )
        .expect("client");
        let proxy = proxy.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(chaos_began + BURY_AT).await;
            proxy.note(&format!(
                "TEST burying the operator's tasks under {BURYING_TASKS} newer ones"
            ));
            // All at once, so that tasks the operator follows now are buried while running.
            // Injected faults hit these too; an ambiguous one may or may not have created one.
            futures::stream::iter(0..BURYING_TASKS)
                .for_each_concurrent(64, |_| {
                    let hss = hss.clone();
                    async move {
                        let permit = hss.acquire(hss_client::Api::CreateTask).await;
                        let _ = hss.create_task(permit, &burying_request()).await;
                    }
                })
                .await;
        })
    };

    // The peer's objects: half at once, half just before the burial.
    let mut peer = peer_cmd.spawn(0);
    let peer_driver = {
        let api = peer_api.clone();
        let peer_names = peer_names.clone();
        let tag = tag.clone();
        tokio::spawn(async move {
            let (first, second) = peer_names.split_at(PEER_OBJECTS / 2);
            for (at, batch) in [
                (Duration::ZERO, first),
                (BURY_AT - Duration::from_secs(1), second),
            ] {
                tokio::time::sleep_until(chaos_began + at).await;
                for (i, name) in batch {
                    api.create(&PostParams::default(), &peer_object(*i, name))
                        .await
                        .unwrap_or_else(|e| panic!("{tag}: create {name}: {e}"));
                }
            }
        })
    };
    // The simulator forgets the temporary credentials it issued, every few seconds.
    let chaos_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let expirer = {
        let sim = sim.clone();
        let proxy = proxy.clone();
        let over = chaos_over.clone();
        let mut erng = rng_for(seed, 3);
        tokio::spawn(async move {
            let mut expiries = 0u32;
            while !over.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(erng.random_range(EXPIRE_EVERY_MS))).await;
                sim.revoke_identity(true);
                sim.revoke_identity(false);
                expiries += 1;
                proxy.note("TEST expired the issued temporary credentials");
            }
            expiries
        })
    };

    let mut krng = rng_for(seed, 2);
    let mut run = 0u32;
    proxy.note("TEST starting operator run 0");
    let mut child = cmd.spawn(run);
    let mut kills = 0u32;
    let mut unexpected_exits = Vec::new();
    while kills < MIN_KILLS || !driver.is_finished() {
        tokio::time::sleep(Duration::from_millis(krng.random_range(UPTIME_MS))).await;
        if let Ok(Some(status)) = child.try_wait() {
            unexpected_exits.push(format!("run {run}: {status}"));
        }
        child.kill().await.expect("SIGKILL the operator");
        kills += 1;
        proxy.note(&format!("TEST killed operator run {run}"));
        tokio::time::sleep(Duration::from_millis(krng.random_range(DOWNTIME_MS))).await;
        run += 1;
        proxy.note(&format!("TEST starting operator run {run}"));
        child = cmd.spawn(run);
    }
    let at_deletion = driver.await.expect("driver");
    burier.await.expect("burier");
    peer_driver.await.expect("peer driver");
    chaos_over.store(true, Ordering::Relaxed);
    let expiries = expirer.await.expect("expirer");
    let chaos = chaos_began.elapsed();
    eprintln!(
        "chaos: {tag}: chaos over after {:.1}s and {kills} kills; waiting for the operator to settle",
        chaos.as_secs_f64()
    );

    // Settle: every survivor succeeds, every deleted object goes, within the bound.
    let survivors: BTreeSet<String> = (0..OBJECTS)
        .filter(|i| !doomed.contains(i))
        .map(|i| names[i].clone())
        .collect();
    let settle_began = Instant::now();
    let (objects, peer_objects) = loop {
        let objects = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("{tag}: list: {e}"))
            .items;
        let peer_objects = peer_api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("{tag}: list the peer's: {e}"))
            .items;
        let present: BTreeSet<String> = objects.iter().map(ResourceExt::name_any).collect();
        let done = present == survivors
            && peer_objects.len() == PEER_OBJECTS
            && objects
                .iter()
                .chain(&peer_objects)
                .all(|o| phase(o) == Some(Phase::Succeeded));
        if done {
            break (objects, peer_objects);
        }
        if settle_began.elapsed() > SETTLE_BOUND {
            let stuck: Vec<String> = objects
                .iter()
                .filter(|o| {
                    phase(o) != Some(Phase::Succeeded) || !survivors.contains(&o.name_any())
                })
                .chain(
                    peer_objects
                        .iter()
                        .filter(|o| phase(o) != Some(Phase::Succeeded)),
                )
                .map(describe)
                .collect();
            let missing: Vec<&String> = survivors.difference(&present).collect();
            if let Ok(Some(status)) = child.try_wait() {
                unexpected_exits.push(format!("run {run}: {status}"));
            }
            proxy.flush();
            panic!(
                "{tag}: not settled {}s after the chaos: {} objects not Succeeded or not gone, \
                 survivors missing: {missing:?}, operator exits: {unexpected_exits:?}; \
                 logs: {}, {} and {}\n{}",
                SETTLE_BOUND.as_secs(),
                stuck.len(),
                log.display(),
                peer_log.display(),
                journal.display(),
                stuck.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let settle = settle_began.elapsed();
    if let Ok(Some(status)) = child.try_wait() {
        unexpected_exits.push(format!("run {run}: {status}"));
    }
    if let Ok(Some(status)) = peer.try_wait() {
        unexpected_exits.push(format!("peer: {status}"));
    }
    child.kill().await.expect("stop the operator");
    peer.kill().await.expect("stop the peer");
    watch.abort();
    proxy.flush();
    let log = format!(
        "{}, {} and {}",
        log.display(),
        peer_log.display(),
        journal.display()
    );

    // Evidence: the simulator's records, the objects now, what the test's watch saw, Events.
    let all_created = sim.created_tasks();
    let buried = all_created.iter().filter(|t| is_burying(t)).count();
    let created: Vec<CreatedTask> = all_created.into_iter().filter(|t| !is_burying(t)).collect();
    let created_ids: HashSet<&str> = created.iter().map(|t| t.task_id.as_str()).collect();
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_else(|e| {
            eprintln!("chaos: {tag}: could not list Events: {e}");
            Vec::new()
        });
    let doomed_names: HashSet<&str> = doomed.iter().map(|&i| names[i].as_str()).collect();

    // Every survivor (the peer's too) names a task HSS created, and no other survivor names it:
    // neither operator adopted the other's identical task.
    let mut named_by_survivor: HashMap<String, String> = HashMap::new();
    for o in objects.iter().chain(&peer_objects) {
        let id = task_id(o).unwrap_or_else(|| panic!("{tag}: {} has no task id", describe(o)));
        assert!(
            created_ids.contains(id.as_str()),
            "{tag}: {} names task {id}, which HSS never created",
            describe(o)
        );
        if let Some(other) = named_by_survivor.insert(id.clone(), o.name_any()) {
            panic!(
                "{tag}: {} and {other} both name task {id} (one task for two objects)",
                o.name_any()
            );
        }
    }

    // Over the whole run: an object never changed its task, and no task was named by two
    // objects that existed at the same time. A task named by an object that was then deleted,
    // and later by another object, is a re-adoption: asserted below never to happen.
    //
    // "Named several tasks" catches a status write computed from a stale cached object and
    // applied without a resourceVersion precondition: it erases status.taskId, the phase goes
    // back to Pending, and the object is submitted again (a second HSS task for one object).
    let mut owners: BTreeMap<&str, Vec<(u64, &SeenObject)>> = BTreeMap::new();
    for (uid, obj) in &seen.objects {
        assert!(
            obj.ids.len() <= 1,
            "{tag}: object {} (uid {uid}) named several tasks over time: {:?}; its phase and \
             task id as the test's watch saw them: {}; Events:\n{}\nlogs: {}",
            obj.name,
            obj.ids,
            obj.history.join(", "),
            events_about(&events, &obj.name).join("\n"),
            log
        );
        for (id, first) in &obj.ids {
            owners.entry(id.as_str()).or_default().push((*first, obj));
        }
    }
    let evidence = |id: &str, owners: &[(u64, &SeenObject)]| {
        let mut out = format!("  task {id}:\n");
        for (first, o) in owners {
            out += &format!(
                "   {} ({}) named it at watch event {first}, deleting at {:?}, gone at {:?}; \
                 history: {}; Events:\n{}\n",
                o.name,
                if doomed_names.contains(o.name.as_str()) {
                    "deleted by the test"
                } else {
                    "survivor"
                },
                o.deleting,
                o.gone,
                o.history.join(", "),
                events_about(&events, &o.name).join("\n")
            );
        }
        out
    };
    let mut simultaneous = Vec::new();
    let mut readopted = Vec::new();
    for (id, list) in &mut owners {
        if list.len() < 2 {
            continue;
        }
        list.sort_by_key(|(first, _)| *first);
        let overlap = list
            .windows(2)
            .any(|w| w[0].1.gone.is_none_or(|gone| gone > w[1].0));
        if overlap {
            simultaneous.push(evidence(id, list));
        } else {
            readopted.push(evidence(id, list));
        }
    }
    assert!(
        simultaneous.is_empty(),
        "{tag}: {} tasks were named by two objects at the same time (one task for two \
         objects); logs: {}\n{}",
        simultaneous.len(),
        log,
        simultaneous.join("")
    );

    // Objects with a cluster of their own: exactly one task was created for each survivor (at
    // most one for a deleted object), and the survivor names that one, not another's. This
    // catches a lookup that adopts a task created for other clusters (a lone candidate must be
    // confirmed by its cluster set too), and one that concludes "not created" without having
    // checked every candidate, which then posts a second task.
    let mut by_cluster: HashMap<&str, Vec<&CreatedTask>> = HashMap::new();
    for t in &created {
        if let Some(c) = task_resource(t) {
            by_cluster.entry(c).or_default().push(t);
        }
    }
    let created_by_id: HashMap<&str, &CreatedTask> =
        created.iter().map(|t| (t.task_id.as_str(), t)).collect();
    let history_of = |name: &str| {
        seen.objects
            .values()
            .filter(|o| o.name == name)
            .map(|o| o.history.join(", "))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut wrong = Vec::new();
    let everyone = names
        .iter()
        .enumerate()
        .chain(peer_names.iter().map(|(i, n)| (*i, n)));
    for (i, name) in everyone {
        let Some(cluster) = own_resource(i) else {
            continue;
        };
        let mine: Vec<&str> = by_cluster
            .get(cluster.as_str())
            .map(|v| v.iter().map(|t| t.task_id.as_str()).collect())
            .unwrap_or_default();
        let named = objects
            .iter()
            .chain(&peer_objects)
            .find(|o| o.name_any() == *name)
            .and_then(task_id);
        let named_cluster = named
            .as_deref()
            .and_then(|id| created_by_id.get(id))
            .and_then(|t| task_resource(t));
        let survivor = !doomed_names.contains(name.as_str());
        let problem = if survivor && named_cluster != Some(cluster.as_str()) {
            Some(format!(
                "names task {named:?}, created for cluster {named_cluster:?}, not its own"
            ))
        } else if (survivor && mine.len() != 1) || mine.len() > 1 {
            Some(format!("{} tasks were created for it", mine.len()))
        } else {
            None
        };
        if let Some(problem) = problem {
            wrong.push(format!(
                "  {name} ({}, cluster {cluster}): {problem}; its tasks {mine:?}; history: {}; \
                 Events:\n{}",
                if survivor {
                    "survivor"
                } else {
                    "deleted by the test"
                },
                history_of(name),
                events_about(&events, name).join("\n")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{tag}: {} objects with a cluster of their own do not have exactly one task, their \
         own; logs: {}\n{}",
        wrong.len(),
        log,
        wrong.join("\n")
    );

    // Identical objects: tasks no survivor names are at most the deleted ones.
    let identical = |t: &&CreatedTask| task_resource(t).is_none();
    let unnamed_by_survivors: Vec<&str> = created
        .iter()
        .filter(identical)
        .map(|t| t.task_id.as_str())
        .filter(|id| !named_by_survivor.contains_key(*id))
        .collect();
    let deleted_identical = doomed
        .iter()
        .filter(|&&i| own_resource(i).is_none())
        .count();
    assert!(
        created.len() <= OBJECTS + PEER_OBJECTS,
        "{tag}: {} tasks created for {} objects",
        created.len(),
        OBJECTS + PEER_OBJECTS
    );
    assert!(
        unnamed_by_survivors.len() <= deleted_identical,
        "{tag}: {} all-cluster tasks are named by no surviving object, more than the \
         {deleted_identical} deleted all-cluster objects could account for: \
         {unnamed_by_survivors:?}; logs: {}",
        unnamed_by_survivors.len(),
        log
    );
    assert_eq!(
        named_by_survivor.len(),
        survivors.len() + PEER_OBJECTS,
        "{tag}: every survivor names its own task"
    );
    assert!(
        unexpected_exits.is_empty(),
        "{tag}: the operator exited by itself: {unexpected_exits:?}; logs: {}",
        log
    );
    assert!(kills >= 10, "{tag}: only {kills} kills");

    // Where the tasks no survivor names came from (not asserted: Events of a killed process may
    // be lost): a deleted object's status, or a DeletedWithTask Event.
    let deleted_with_task_notes: Vec<&str> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("DeletedWithTask"))
        .filter_map(|e| e.note.as_deref())
        .collect();
    let (mut by_status, mut by_event, mut unexplained) = (0, 0, Vec::new());
    for id in &unnamed_by_survivors {
        if owners.contains_key(id) {
            by_status += 1;
        } else if deleted_with_task_notes.iter().any(|n| n.contains(id)) {
            by_event += 1;
        } else {
            unexplained.push(*id);
        }
    }
    let deleted_with_id = at_deletion.values().filter(|v| v.is_some()).count();
    let mut resolutions: BTreeMap<String, usize> = BTreeMap::new();
    for o in &objects {
        let sub = o.status.as_ref().and_then(|s| s.submission.as_ref());
        let key = sub
            .and_then(|s| s.resolution.clone())
            .unwrap_or_else(|| "-".into());
        *resolutions.entry(key).or_default() += 1;
    }
    let max_attempts = objects
        .iter()
        .filter_map(|o| o.status.as_ref()?.submission.as_ref().map(|s| s.attempts))
        .max()
        .unwrap_or(0);
    let calls: Vec<String> = sim
        .calls()
        .into_iter()
        .map(|((api, status), n)| format!("{api} {status}: {n}"))
        .collect();
    // Deleted objects' task ids stay claimed, across restarts (the claims ConfigMap).
    assert!(
        readopted.is_empty(),
        "{tag}: {} tasks of deleted objects were adopted by another object later (first 3); \
         logs: {}\n{}",
        readopted.len(),
        log,
        readopted.iter().take(3).cloned().collect::<String>()
    );
    eprintln!(
        "chaos: {tag}\n  objects {OBJECTS}: {} survivors, all Succeeded (resolution: {resolutions:?}, \
         most attempts {max_attempts}); {DELETED} deleted ({deleted_with_id} had a task id when \
         deleted), all gone\n  kills {kills} (operator runs {})\n  injected conflicts {} of {} \
         PATCH/PUT on clusterscantasks (requests forwarded {}, upstream errors {})\n  HSS calls by \
         (API, status; 0 = dropped): {}\n  tasks created {}: named by survivors {}; own-cluster \
         tasks {} (for {} objects, each exactly one); all-cluster tasks not named by survivors {} \
         (at most {deleted_identical}; named by a deleted object {by_status}, in a \
         DeletedWithTask Event {by_event}, unexplained {}: {unexplained:?}); tasks of deleted \
         objects adopted later by another object {}\n  \
         burying tasks created behind the operator's back {buried}\n  \
         peer operator (same AK): {PEER_OBJECTS} objects, all Succeeded on tasks of their own\n  \
         temporary credentials: every other run on pod identity, {expiries} forced expiries, \
         issued {:?}\n  \
         wall time {:.1}s (chaos {:.1}s, settle {:.1}s)",
        survivors.len(),
        run + 1,
        proxy.injected.load(Ordering::Relaxed),
        proxy.writes.load(Ordering::Relaxed),
        proxy.forwarded.load(Ordering::Relaxed),
        proxy.upstream_errors.load(Ordering::Relaxed),
        calls.join(", "),
        created.len(),
        named_by_survivor.len(),
        by_cluster.values().map(Vec::len).sum::<usize>(),
        by_cluster.len(),
        unnamed_by_survivors.len(),
        unexplained.len(),
        readopted.len(),
        sim.issued_credentials(),
        began.elapsed().as_secs_f64(),
        chaos.as_secs_f64(),
        settle.as_secs_f64(),
    );
    let _ = std::fs::remove_file(proxy_kubeconfig_path(seed));
}
