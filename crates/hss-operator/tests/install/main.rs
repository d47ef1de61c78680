//! Installed as users install it. For each value set (default, `replicaCount: 2`,
//! `watchNamespaces`, `triggers.enabled: false`) the chart is rendered by the real Helm engine
//! (Helm 4 as a library, the one `scripts/check-deploy.sh` uses), its `crds/` applied first,
//! then every rendered object, on a real API server. Each replica then runs exactly as the
//! Deployment says: its rendered args and env (fieldRef and secretKeyRef resolved as the kubelet
//! resolves them), a TokenRequest token for the chart's ServiceAccount and nothing else.
//!
//! What stands in for the kubelet (there is no kubelet, scheduler or controller-manager here):
//! one `hss-operator` process per pod, on an admin and a metrics port of its own (in a cluster
//! each pod has its own network namespace; here they share loopback, so `--admin-listen`'s and
//! `--metrics-listen`'s ports are the values the test changes); the rendered probes run with their path, initial delay, period,
//! timeout and failure threshold; termination is SIGTERM, then SIGKILL after
//! `terminationGracePeriodSeconds`. A rolling update is played as the Deployment controller
//! plays `maxSurge: 1, maxUnavailable: 0`: a new pod, Ready, then an old one terminated.
//!
//! Tier 3, its own test binary: it installs the chart's CRDs, not `crds/`, on its control
//! plane.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use hss_client::results::{RiskLevel, RiskType};
use hss_operator::crd::{ClusterScanTask, Phase};
use hss_simulator::{SimConfig, Simulator};
use hss_testkit::{cluster::*, identity};
use k8s_openapi::{
    ByteString,
    api::{coordination::v1::Lease, core::v1::Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery::{self, Scope},
};
use serde_json::{Value, json};
use tokio::{process::Child, sync::watch};

const CHART_CRDS: &str = "deploy/helm/hss-operator/crds/crds.yaml";

/// One chart installation: what Helm rendered for a release.
struct Release {
    name: String,
    namespace: String,
    objects: Vec<Value>,
}

impl Release {
    /// Renders the chart with the real Helm engine (scripts/deploy/helm_render.py).
    fn render(name: &str, namespace: &str, values: &Value) -> Self {
        let venv = std::process::Command::new("bash")
            .arg(repo().join("scripts/deploy-venv.sh"))
            .output()
            .expect("run scripts/deploy-venv.sh");
        assert!(
            venv.status.success(),
            "deploy tools: {}",
            String::from_utf8_lossy(&venv.stderr)
        );
        let python = String::from_utf8(venv.stdout).expect("path");
        let out = std::process::Command::new(python.trim())
            .arg(repo().join("scripts/deploy/helm_render.py"))
            .args([name, namespace, &values.to_string()])
            .output()
            .expect("run helm_render.py");
        assert!(
            out.status.success(),
            "helm render: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            name: name.into(),
            namespace: namespace.into(),
            objects: serde_json::from_slice(&out.stdout).expect("rendered objects are JSON"),
        }
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn deployment(&self) -> &Value {
        let mut deployments = self.of_kind("Deployment");
        let d = deployments.next().expect("the chart renders a Deployment");
        assert!(deployments.next().is_none(), "one Deployment");
        d
    }

    fn pod_spec(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        &self.pod_spec()["containers"][0]
    }

    fn args(&self) -> Vec<String> {
        serde_json::from_value(self.container()["args"].clone()).expect("args")
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(
            self.pod_spec()["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        )
    }

    /// Applies the chart's crds/ (as Helm does, before anything else), then every object.
    async fn install(&self, admin: &Client) {
        install_crds_from(admin, &repo().join(CHART_CRDS)).await;
        for obj in &self.objects {
            let (group, version) = match obj["apiVersion"].as_str().expect("apiVersion") {
                v if v.contains('/') => v.split_once('/').expect("group/version"),
                v => ("", v),
            };
            let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().expect("kind"));
            let (ar, caps) = discovery::pinned_kind(admin, &gvk)
                .await
                .expect("the API server knows every rendered kind");
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => Api::namespaced_with(
                    admin.clone(),
                    obj["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or(&self.namespace),
                    &ar,
                ),
                Scope::Cluster => Api::all_with(admin.clone(), &ar),
            };
            let name = obj["metadata"]["name"].as_str().expect("name");
            api.patch(
                name,
                &PatchParams::apply("helm").force(),
                &Patch::Apply(obj),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", gvk.kind));
        }
    }

    /// A kubeconfig holding only a TokenRequest token of the chart's ServiceAccount: what the
    /// pod's projected token gives it.
    async fn service_account_kubeconfig(&self, admin: &Client) -> PathBuf {
        let sa = self.pod_spec()["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName");
        let path = log_dir().join(format!("{}.kubeconfig", self.name));
        identity::service_account_kubeconfig(admin, &self.namespace, sa, &path).await;
        path
    }
}

fn log_dir() -> PathBuf {
    let dir = repo().join("target/install");
    std::fs::create_dir_all(&dir).expect("target/install");
    dir
}

/// A rendered probe: what the kubelet does with it.
#[derive(Debug, Clone)]
struct Probe {
    path: String,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
}

impl Probe {
    fn from(v: &Value, container: &Value) -> Self {
        let port = &v["httpGet"]["port"];
        let named = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == *port && p["containerPort"].is_u64());
        assert!(named, "probe port {port} is a named container port");
        let secs = |k: &str, default: u64| Duration::from_secs(v[k].as_u64().unwrap_or(default));
        Self {
            path: v["httpGet"]["path"].as_str().expect("probe path").into(),
            initial_delay: secs("initialDelaySeconds", 0),
            period: secs("periodSeconds", 10),
            timeout: secs("timeoutSeconds", 1),
            failure_threshold: v["failureThreshold"].as_u64().unwrap_or(3) as u32,
        }
    }

    /// Longest a pod may take to turn Ready before the kubelet has given it every chance.
    fn budget(&self) -> Duration {
        self.initial_delay + self.period * self.failure_threshold + self.timeout
    }

    /// Probes like the kubelet: after the initial delay every period; one success is a pass,
    /// `failure_threshold` failures in a row a fail. Sends each verdict.
    async fn run(self, port: u16, verdict: watch::Sender<Option<bool>>) {
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .expect("http client");
        let url = format!("http://127.0.0.1:{port}{}", self.path);
        tokio::time::sleep(self.initial_delay).await;
        let mut ticker = tokio::time::interval(self.period);
        let mut failures = 0;
        loop {
            ticker.tick().await;
            let ok = matches!(http.get(&url).send().await, Ok(r) if r.status().is_success());
            failures = if ok { 0 } else { failures + 1 };
            if ok {
                verdict.send_replace(Some(true));
            } else if failures >= self.failure_threshold {
                verdict.send_replace(Some(false));
            }
        }
    }
}

/// One pod of the Deployment: the operator process and its probes.
struct Pod {
    name: String,
    /// The loopback port of its metrics server (the container's `metrics` port).
    metrics_port: u16,
    child: Child,
    ready: watch::Receiver<Option<bool>>,
    live: watch::Receiver<Option<bool>>,
    probes: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for p in &self.probes {
            p.abort();
        }
    }
}

impl Pod {
    /// Starts a pod as the kubelet would from the rendered container.
    async fn start(admin: &Client, release: &Release, kubeconfig: &Path, name: &str) -> Pod {
        let container = release.container();
        let port = free_port();
        let mut args = release.args();
        let listen = args
            .iter_mut()
            .find(|a| a.starts_with("--admin-listen="))
            .expect("the Deployment sets --admin-listen");
        let container_port = container["ports"][0]["containerPort"]
            .as_u64()
            .expect("admin port");
        assert!(
            listen.ends_with(&format!(":{container_port}")),
            "{listen} listens on the containerPort the probes use"
        );
        *listen = format!("--admin-listen=127.0.0.1:{port}");
        let metrics_port = free_port();
        let metrics_listen = args
            .iter_mut()
            .find(|a| a.starts_with("--metrics-listen="))
            .expect("the Deployment sets --metrics-listen");
        let named_metrics = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "metrics")
            .and_then(|p| p["containerPort"].as_u64())
            .expect("a container port named metrics");
        assert!(
            metrics_listen.ends_with(&format!(":{named_metrics}")),
            "{metrics_listen} listens on the metrics containerPort"
        );
        *metrics_listen = format!("--metrics-listen=127.0.0.1:{metrics_port}");
        let env = resolve_env(admin, release, name).await;
        let log = std::fs::File::create(log_dir().join(format!("{name}.log"))).expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hss-operator"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the operator");
        let (ready_tx, ready) = watch::channel(None);
        let (live_tx, live) = watch::channel(None);
        let readiness = Probe::from(&container["readinessProbe"], container);
        let liveness = Probe::from(&container["livenessProbe"], container);
        Pod {
            name: name.into(),
            metrics_port,
            child,
            ready,
            live,
            probes: vec![
                tokio::spawn(readiness.run(port, ready_tx)),
                tokio::spawn(liveness.run(port, live_tx)),
            ],
        }
    }

    /// Waits until the readiness probe passes, within the probe budget.
    async fn await_ready(&mut self, release: &Release) -> Duration {
        let started = Instant::now();
        let budget =
            Probe::from(&release.container()["readinessProbe"], release.container()).budget();
        let ready = tokio::time::timeout(budget, self.ready.wait_for(|r| *r == Some(true)))
            .await
            .is_ok();
        assert!(
            ready,
            "{} not Ready within the probe budget of {budget:?}; see target/install/{}.log",
            self.name, self.name
        );
        self.assert_up();
        started.elapsed()
    }

    /// The process runs and the kubelet would not have restarted it.
    fn assert_up(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "{} exited; see target/install/{}.log",
            self.name,
            self.name
        );
        assert_ne!(
            *self.live.borrow(),
            Some(false),
            "{} failed its liveness probe: the kubelet would restart it",
            self.name
        );
        assert_ne!(
            *self.ready.borrow(),
            Some(false),
            "{} turned unready",
            self.name
        );
    }

    /// SIGTERM, then what the kubelet allows: the grace period. Returns how long it took.
    async fn terminate(mut self, grace: Duration) -> Duration {
        self.assert_up();
        let pid = self.child.id().expect("running");
        let started = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let status = tokio::time::timeout(grace, self.child.wait()).await;
        let Ok(Ok(status)) = status else {
            panic!(
                "{} did not stop within the grace period {grace:?}",
                self.name
            )
        };
        assert!(
            status.success(),
            "{} exited with {status} on SIGTERM",
            self.name
        );
        started.elapsed()
    }

    /// As if the node died: SIGKILL.
    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The container's env as the kubelet resolves it: values, fieldRefs, secretKeyRefs.
async fn resolve_env(admin: &Client, release: &Release, pod: &str) -> Vec<(String, String)> {
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &release.namespace);
    let mut env = Vec::new();
    for e in release.container()["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        if let Some(v) = e["value"].as_str() {
            env.push((name, v.to_string()));
        } else if let Some(field) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            let v = match field {
                "metadata.name" => pod.to_string(),
                "metadata.namespace" => release.namespace.clone(),
                other => panic!("fieldRef {other} is not resolved by this test"),
            };
            env.push((name, v));
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let optional = r.get("optional").and_then(Value::as_bool) == Some(true);
            let secret = secrets
                .get_opt(r["name"].as_str().expect("secret name"))
                .await
                .expect("read Secret");
            let key = r["key"].as_str().expect("key");
            match secret.and_then(|s| s.data?.get(key).cloned()) {
                Some(ByteString(v)) => env.push((name, String::from_utf8(v).expect("utf-8"))),
                None if optional => {}
                None => panic!("secretKeyRef {key} missing: the kubelet would not start the pod"),
            }
        } else {
            panic!("env {name}: unsupported source {e}");
        }
    }
    env
}

/// A release with its namespace, credentials Secret, simulator and ServiceAccount kubeconfig.
/// One at a time on the shared API server: an operator watching all namespaces would also
/// take the other scenarios' scans, as two installations in one real cluster would.
struct Install {
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
    admin: Client,
    sim: Simulator,
    release: Release,
    kubeconfig: PathBuf,
}

/// Creates the release namespace (and `watched` ones), the credentials Secret, renders the
/// chart with `values` over the common ones and installs it.
async fn install(scenario: &str, values: Value, watched: &[&str], sim: SimConfig) -> Install {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = ONE_AT_A_TIME.lock().await;
    // No CRDs yet: the release installs them from the chart's crds/.
    let admin = client_from(&control_plane().kubeconfig).await;
    let ns = namespace(&admin, &format!("inst-{scenario}")).await;
    let mut watched_ns = Vec::new();
    for w in watched {
        watched_ns.push(namespace(&admin, &format!("inst-{scenario}-{w}")).await);
    }
    let sim = Simulator::start(sim).await.expect("simulator");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "hss-credentials"},
        "stringData": {"accessKey": "AKSIM", "secretKey": "SKSIM"},
    }))
    .expect("Secret");
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the credentials Secret");
    let mut all = json!({
        "hss": {"endpoint": sim.base_url(), "projectId": "proj"},
        "credentials": {"existingSecret": "hss-credentials"},
        "pollInterval": "1s",
        "budgetPerMinute": 0,
        "logFilter": "info,hss_operator=debug",
        // The simulator speaks plain http.
        "extraArgs": ["--allow-insecure-endpoints"],
    });
    if !watched_ns.is_empty() {
        all["watchNamespaces"] = json!(watched_ns);
        // As an administrator grants teams: a ClusterScanPolicy naming their namespaces.
        all["tenancy"] = json!({"policies": [{
            "name": format!("{scenario}-watched"),
            "spec": {
                "namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "In", "values": watched_ns,
                }]},
                "allClusters": true,
            },
        }]});
    }
    merge(&mut all, values);
    let release = Release::render(&format!("hss-operator-{scenario}"), &ns, &all);
    release.install(&admin).await;
    let kubeconfig = release.service_account_kubeconfig(&admin).await;
    Install {
        _one_at_a_time: guard,
        admin,
        sim,
        release,
        kubeconfig,
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

impl Install {
    async fn pod(&self, name: &str) -> Pod {
        Pod::start(&self.admin, &self.release, &self.kubeconfig, name).await
    }

    fn scans(&self, ns: &str) -> Api<ClusterScanTask> {
        Api::namespaced(self.admin.clone(), ns)
    }

    async fn create_scan(&self, ns: &str, name: &str) {
        self.scans(ns)
            .create(&PostParams::default(), &cluster_scan(name))
            .await
            .expect("create ClusterScanTask");
    }

    /// Waits for Succeeded (and `Finished=True`, what `kubectl wait` is told to wait for).
    async fn await_succeeded(&self, ns: &str, name: &str) -> String {
        let done = wait_for(&self.scans(ns), name, 90, |o| {
            phase(o) == Some(Phase::Succeeded)
        })
        .await;
        let status = done.status.expect("status");
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Finished" && c.status == "True" && c.reason == "Succeeded"),
            "Finished=True on {name}: {:?}",
            status.conditions
        );
        status.task_id.expect("task id")
    }

    async fn lease_holder(&self) -> Option<String> {
        let name = self
            .release
            .args()
            .iter()
            .find_map(|a| a.strip_prefix("--lease-name=").map(str::to_string))?;
        Api::<Lease>::namespaced(self.admin.clone(), &self.release.namespace)
            .get_opt(&name)
            .await
            .ok()??
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    }

    async fn await_holder(&self, want: impl Fn(&str) -> bool, within: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(h) = self.lease_holder().await.filter(|h| want(h)) {
                return h;
            }
            assert!(
                started.elapsed() < within,
                "no wanted lease holder within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn task_ids(&self) -> Vec<String> {
        self.sim
            .created_tasks()
            .into_iter()
            .map(|t| t.task_id)
            .collect()
    }
}

/// One replica: Ready within the probe budget, one scan to Succeeded with one HSS task, a clean
/// stop on SIGTERM within the grace period.
async fn single_replica(scenario: &str, values: Value, watched: &[&str]) -> (Install, Pod) {
    let inst = install(scenario, values, watched, SimConfig::default()).await;
    let d = inst.release.deployment();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["strategy"]["type"], "Recreate",
        "two unelected operators must never overlap"
    );
    let mut pod = inst.pod(&format!("{scenario}-0")).await;
    pod.await_ready(&inst.release).await;
    (inst, pod)
}

#[tokio::test]
async fn default_values_run_one_ready_replica_that_completes_a_scan_and_stops_on_sigterm() {
    let (inst, mut pod) = single_replica("default", json!({}), &[]).await;
    let ns = inst.release.namespace.clone();
    assert!(
        inst.release
            .args()
            .contains(&"--tenancy=policy".to_string())
    );
    // A namespace no ClusterScanPolicy selects may not use the operator's credentials.
    let other = namespace(&inst.admin, "inst-default-nopolicy").await;
    inst.create_scan(&other, "refused").await;
    inst.create_scan(&ns, "scan").await;
    let id = inst.await_succeeded(&ns, "scan").await;
    let refused = wait_for(&inst.scans(&other), "refused", 60, |o| {
        condition(o, "Failed").is_some_and(|(s, r)| s == "True" && r == "NotPermitted")
    })
    .await;
    let failed = condition_message(&refused, "Failed");
    assert!(failed.contains("no ClusterScanPolicy selects"), "{failed}");
    assert_eq!(
        inst.task_ids(),
        [id],
        "exactly one HSS task: none for the refused scan"
    );
    inst.scans(&other)
        .delete("refused", &Default::default())
        .await
        .expect("delete the refused scan");

    // /metrics as Prometheus reads it: over HTTPS with its ServiceAccount's token, once that is
    // bound to the chart's metrics-reader ClusterRole; the operator's own identity (which
    // reviews the tokens with the chart's RBAC) may not read them.
    let reader = format!("{}-metrics-reader", inst.release.name);
    assert!(
        inst.release
            .of_kind("ClusterRole")
            .any(|r| r["metadata"]["name"] == reader.as_str()),
        "the chart renders {reader}"
    );
    hss_testkit::metrics::service_account(&inst.admin, &ns, "prometheus").await;
    hss_testkit::metrics::bind(&inst.admin, &reader, &ns, "prometheus").await;
    let prometheus = identity::service_account_token(&inst.admin, &ns, "prometheus").await;
    let operator_sa = inst.release.deployment()["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_string();
    let unbound = identity::service_account_token(&inst.admin, &ns, &operator_sa).await;
    let scrape = |token: Option<String>| {
        let port = pod.metrics_port;
        async move {
            hss_testkit::metrics::scrape(port, token.as_deref())
                .await
                .expect("the metrics server answers")
        }
    };
    assert_eq!(scrape(None).await.0, 401, "no token");
    assert_eq!(
        scrape(Some(unbound)).await.0,
        403,
        "a token without the role"
    );
    let (status, body) = scrape(Some(prometheus)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hss_operator_reconciles_total"), "{body}");

    pod.assert_up();
    let took = pod.terminate(inst.release.grace()).await;
    println!("default: stopped {took:?} after SIGTERM");
}

#[tokio::test]
async fn without_triggers_the_operator_needs_no_node_access_and_completes_a_scan() {
    let (inst, mut pod) =
        single_replica("notrig", json!({"triggers": {"enabled": false}}), &[]).await;
    assert!(
        inst.release
            .args()
            .contains(&"--disable-triggers".to_string())
    );
    let nodes_rule = inst.release.objects.iter().any(|o| {
        o["rules"].as_array().into_iter().flatten().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.contains(&json!("nodes")))
        })
    });
    assert!(!nodes_rule, "no RBAC on nodes without triggers");
    let ns = inst.release.namespace.clone();
    inst.create_scan(&ns, "scan").await;
    let id = inst.await_succeeded(&ns, "scan").await;
    assert_eq!(inst.task_ids(), [id]);
    pod.assert_up();
    pod.terminate(inst.release.grace()).await;
}

/// The PolicyReport CRD the Policy WG publishes (v1alpha2), installed once per control plane
/// and idempotently (an existing one is replaced). Every install test after it sees
/// PolicyReport served: with `reports.mode: auto` (no OpenReports CRD here) their scans write
/// PolicyReports too, which the chart's default RBAC grants.
async fn install_policyreport_crd(admin: &Client) {
    hss_testkit::install_crds(
        admin,
        &repo().join("crates/hss-testkit/crds/wgpolicyk8s.io_policyreports.yaml"),
    )
    .await
    .expect("install the PolicyReport CRD");
}

/// What the operator writes for an HSS level: severity (`tips` is `info`) and result.
fn policyreport_severity(level: RiskLevel) -> (&'static str, &'static str) {
    match level {
        RiskLevel::High => ("high", "fail"),
        RiskLevel::Medium => ("medium", "fail"),
        RiskLevel::Low => ("low", "warn"),
        RiskLevel::Tips | RiskLevel::Unknown => ("info", "warn"),
    }
}

#[tokio::test]
async fn with_reports_mode_policyreport_a_finished_scan_writes_policyreports_the_charts_rbac_allows()
 {
    let inst = install(
        "polr",
        json!({"reports": {"mode": "policyreport"}}),
        &[],
        SimConfig::default(),
    )
    .await;
    assert!(
        inst.release
            .args()
            .contains(&"--reports=policyreport".to_string()),
        "{:?}",
        inst.release.args()
    );
    let rbac_groups: Vec<&Value> = inst
        .release
        .objects
        .iter()
        .flat_map(|o| o["rules"].as_array().into_iter().flatten())
        .flat_map(|r| r["apiGroups"].as_array().into_iter().flatten())
        .collect();
    assert!(rbac_groups.contains(&&json!("wgpolicyk8s.io")));
    assert!(
        !rbac_groups.contains(&&json!("openreports.io")),
        "no RBAC on a kind the mode never writes"
    );
    install_policyreport_crd(&inst.admin).await;
    let mut pod = inst.pod("polr-0").await;
    pod.await_ready(&inst.release).await;
    let ns = inst.release.namespace.clone();
    inst.create_scan(&ns, "scan").await;
    inst.await_succeeded(&ns, "scan").await;
    let done = wait_for(&inst.scans(&ns), "scan", 30, |o| {
        condition(o, "ReportsWritten").is_some_and(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(
        condition(&done, "ReportsWritten"),
        Some(("True".into(), "Written".into())),
        "{}",
        condition_message(&done, "ReportsWritten")
    );

    // The simulator's benchmark rows, by cluster: (severity, result) pairs, sorted.
    let mut expected: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
    for r in inst.sim.cluster_risks("proj", RiskType::Benchmark) {
        expected
            .entry(r.cluster_id.clone())
            .or_default()
            .push(policyreport_severity(r.risk_level));
    }
    assert!(
        !expected.is_empty(),
        "the default scan finds benchmark risks"
    );

    let gvk = GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport");
    let reports: Api<DynamicObject> = Api::namespaced_with(
        inst.admin.clone(),
        &ns,
        &ApiResource::from_gvk_with_plural(&gvk, "policyreports"),
    );
    let list = reports.list(&Default::default()).await.expect("list");
    let owned: Vec<&DynamicObject> = list
        .items
        .iter()
        .filter(|r| {
            r.owner_references().iter().any(|o| {
                o.kind == "ClusterScanTask"
                    && o.name == "scan"
                    && Some(&o.uid) == done.metadata.uid.as_ref()
            })
        })
        .collect();
    assert!(
        !owned.is_empty(),
        "PolicyReports owned by the scan: {list:?}"
    );
    let mut seen: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
    for report in &owned {
        for r in report.data["results"].as_array().into_iter().flatten() {
            if r["properties"]["scanType"] != "benchmark" {
                continue;
            }
            let cluster = r["properties"]["clusterId"].as_str().expect("clusterId");
            assert_eq!(
                report.name_any(),
                format!("hss-scan-{cluster}"),
                "one PolicyReport per cluster"
            );
            seen.entry(cluster.to_string()).or_default().push((
                r["severity"].as_str().expect("severity"),
                r["result"].as_str().expect("result"),
            ));
        }
    }
    for v in expected.values_mut().chain(seen.values_mut()) {
        v.sort_unstable();
    }
    assert_eq!(seen, expected, "benchmark results by cluster");
    pod.assert_up();
    pod.terminate(inst.release.grace()).await;
}

#[tokio::test]
async fn watched_namespaces_are_served_and_every_other_namespace_is_left_alone() {
    let (inst, mut pod) = single_replica("nsmode", json!({}), &["a", "b"]).await;
    let cluster_wide = [
        json!(["nodes"]),
        json!(["clusterscanpolicies"]),
        json!(["clusterscanpolicies/status"]),
        json!(["namespaces"]),
        // Access reviews: the metrics server's, and the trigger controller's for Node details.
        json!(["tokenreviews"]),
        json!(["subjectaccessreviews"]),
    ];
    assert!(
        inst.release
            .of_kind("ClusterRole")
            .filter(|r| r["metadata"]["labels"]
                .as_object()
                .is_none_or(|l| !l.keys().any(|k| k.contains("aggregate-to-"))))
            .all(|r| r["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|rule| cluster_wide.contains(&rule["resources"])
                    || rule["nonResourceURLs"] == json!(["/metrics"]))),
        "namespaced mode: nothing cluster-wide but nodes, policies, namespaces, reviews and /metrics"
    );
    let watched: Vec<String> = serde_json::from_value(
        inst.release
            .args()
            .iter()
            .find_map(|a| a.strip_prefix("--namespace="))
            .map(|v| json!(v.split(',').collect::<Vec<_>>()))
            .expect("--namespace"),
    )
    .expect("namespaces");
    assert_eq!(watched.len(), 2);
    // The release namespace itself is not watched: a scan there is never touched.
    let outside = inst.release.namespace.clone();
    inst.create_scan(&outside, "outside").await;
    let mut ids = Vec::new();
    for ns in &watched {
        inst.create_scan(ns, "inside").await;
    }
    for ns in &watched {
        ids.push(inst.await_succeeded(ns, "inside").await);
    }
    let untouched = inst
        .scans(&outside)
        .get("outside")
        .await
        .expect("outside object");
    assert!(
        untouched.status.is_none(),
        "no status outside: {untouched:?}"
    );
    assert!(
        untouched.finalizers().is_empty(),
        "no finalizer outside the watched namespaces"
    );
    let mut created = inst.task_ids();
    created.sort();
    ids.sort();
    assert_eq!(
        created, ids,
        "one task per watched scan, none for the outside one"
    );
    pod.assert_up();
    pod.terminate(inst.release.grace()).await;
    // Not for the next scenario's operator to find.
    inst.scans(&outside)
        .delete("outside", &Default::default())
        .await
        .expect("delete the outside scan");
}

#[tokio::test]
async fn two_replicas_are_ready_survive_a_rolling_update_and_a_killed_leader_without_a_lost_or_doubled_scan()
 {
    // Scans stay in flight for a few seconds, so the rollout happens while HSS works on them.
    let sim = SimConfig {
        finish_after: Duration::from_secs(4),
        ..SimConfig::default()
    };
    let inst = install("ha", json!({"replicaCount": 2}), &[], sim).await;
    let d = inst.release.deployment();
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    assert!(
        inst.release
            .args()
            .contains(&"--leader-election".to_string())
    );
    let grace = inst.release.grace();
    let ns = inst.release.namespace.clone();

    // helm install --wait: every replica Ready, standby included.
    let mut pods = vec![inst.pod("ha-old-0").await, inst.pod("ha-old-1").await];
    for p in &mut pods {
        p.await_ready(&inst.release).await;
    }
    let first = inst
        .await_holder(|h| h.starts_with("ha-old-"), Duration::from_secs(30))
        .await;
    let mut scans = Vec::new();
    for i in 0..3 {
        let name = format!("before-{i}");
        inst.create_scan(&ns, &name).await;
        scans.push(name);
    }

    // The rolling update (maxSurge 1, maxUnavailable 0): a new pod turns Ready, then an old
    // one is terminated; the leader goes first, so the Lease must pass on release.
    pods.sort_by_key(|p| p.name != first);
    let mut new_pods = Vec::new();
    for (i, old) in pods.into_iter().enumerate() {
        let mut surge = inst.pod(&format!("ha-new-{i}")).await;
        surge.await_ready(&inst.release).await;
        let was_leader = old.name == first;
        let old_name = old.name.clone();
        let took = old.terminate(grace).await;
        println!("ha: {} stopped {took:?} after SIGTERM", old_name);
        if was_leader {
            let released = Instant::now();
            let next = inst
                .await_holder(|h| h != first, Duration::from_secs(30))
                .await;
            let takeover = released.elapsed();
            println!("ha: {next} took over {takeover:?} after the leader stopped");
            assert!(
                takeover < Duration::from_secs(5),
                "a released Lease is taken over at once, not after its 15 s duration ({takeover:?})"
            );
        }
        let name = format!("during-{i}");
        inst.create_scan(&ns, &name).await;
        scans.push(name);
        new_pods.push(surge);
    }
    let mut pods = new_pods;

    // The leader killed: the other takes over after the lease expires, and work goes on.
    let leader = inst
        .await_holder(|h| h.starts_with("ha-new-"), Duration::from_secs(30))
        .await;
    let idx = pods
        .iter()
        .position(|p| p.name == leader)
        .expect("leader is a pod");
    pods.remove(idx).kill().await;
    let next = inst
        .await_holder(|h| h != leader, Duration::from_secs(40))
        .await;
    println!("ha: {next} took over from the killed {leader}");
    inst.create_scan(&ns, "after-kill").await;
    scans.push("after-kill".into());

    let mut ids = Vec::new();
    for s in &scans {
        ids.push(inst.await_succeeded(&ns, s).await);
    }
    let mut created = inst.task_ids();
    created.sort();
    ids.sort();
    assert_eq!(
        created, ids,
        "every scan has exactly one HSS task, none lost, none twice"
    );
    for mut p in pods {
        p.assert_up();
        p.terminate(grace).await;
    }
}

fn specific_scan(name: &str, clusters: &[&str]) -> ClusterScanTask {
    scan(
        name,
        json!({"taskType": "cluster_scan", "clusterScan": {
            "scanTypes": ["cluster_vul"], "rangeType": "specific_cluster", "clusterIds": clusters}}),
    )
}

/// Two teams as a platform team sets them up with the chart: a ClusterScanPolicy each (by a
/// namespace label), members bound to the chart's aggregated view and edit roles. Each team
/// scans its own cluster; every attempt at the other's, at all clusters, at status, or at a
/// namespace without a policy is refused before anything reaches HSS.
#[tokio::test]
async fn teams_with_the_charts_roles_scan_only_what_their_policies_grant() {
    let policies = json!({"tenancy": {"policies": [
        {"name": "inst-teams-a", "spec": {"namespaceSelector": {"matchLabels": {"hss-test-team": "a"}}, "clusterIds": ["cce-sim-0001"]}},
        {"name": "inst-teams-b", "spec": {"namespaceSelector": {"matchLabels": {"hss-test-team": "b"}}, "clusterIds": ["cce-sim-0002"]}},
    ]}});
    let (inst, mut pod) = single_replica("teams", policies, &[]).await;
    let release = inst.release.name.clone();
    let (view, edit) = (format!("{release}-view"), format!("{release}-edit"));
    let mut teams = Vec::new();
    for team in ["a", "b"] {
        let ns = namespace(&inst.admin, &format!("inst-teams-{team}")).await;
        Api::<k8s_openapi::api::core::v1::Namespace>::all(inst.admin.clone())
            .patch(
                &ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"hss-test-team": team}}})),
            )
            .await
            .expect("label the team's namespace");
        let member = identity::member(&inst.admin, &ns, &[&view, &edit]).await;
        teams.push((ns.clone(), Api::<ClusterScanTask>::namespaced(member, &ns)));
    }
    let (ns_a, alice) = teams[0].clone();
    let (ns_b, bob) = teams[1].clone();
    let create = |api: &Api<ClusterScanTask>, obj: ClusterScanTask| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &obj)
                .await
                .expect("the edit role creates scans")
        }
    };
    create(&alice, specific_scan("own", &["cce-sim-0001"])).await;
    create(&alice, specific_scan("theirs", &["cce-sim-0002"])).await;
    create(&alice, cluster_scan("everything")).await;
    create(&bob, specific_scan("own", &["cce-sim-0002"])).await;
    // Neither the view nor the edit role writes status.
    match alice
        .patch_status(
            "own",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"taskId": "forged"}})),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("a team member must not write status: {other:?}"),
    }
    // Nor reads another team's scans.
    match Api::<ClusterScanTask>::namespaced(alice.clone().into_client(), &ns_b)
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("a team member must not read another team's scans: {other:?}"),
    }
    for (ns, name) in [(&ns_a, "theirs"), (&ns_a, "everything")] {
        let o = wait_for(&inst.scans(ns), name, 60, |o| {
            phase(o) == Some(Phase::Failed)
        })
        .await;
        assert_eq!(
            condition(&o, "Failed").map(|c| c.1).as_deref(),
            Some("NotPermitted"),
            "{name}"
        );
    }
    let mut ids = Vec::new();
    for (ns, cluster) in [(&ns_a, "cce-sim-0001"), (&ns_b, "cce-sim-0002")] {
        ids.push(inst.await_succeeded(ns, "own").await);
        let own = alice_or_bob_view(&teams, ns)
            .get("own")
            .await
            .expect("the view role reads");
        let results: Vec<String> = own
            .status
            .iter()
            .flat_map(|s| s.results.iter().map(|r| r.id.clone()))
            .collect();
        assert_eq!(results, [cluster], "only the team's own cluster in status");
    }
    let mut created = inst.task_ids();
    created.sort();
    ids.sort();
    assert_eq!(created, ids, "HSS saw the two granted scans only");
    pod.assert_up();
    pod.terminate(inst.release.grace()).await;
}

fn alice_or_bob_view<'a>(
    teams: &'a [(String, Api<ClusterScanTask>)],
    ns: &str,
) -> &'a Api<ClusterScanTask> {
    &teams.iter().find(|(n, _)| n == ns).expect("team").1
}
