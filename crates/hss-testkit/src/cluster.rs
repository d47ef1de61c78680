//! What a test reaches for: the control plane of its test binary (etcd + kube-apiserver, from
//! scripts/control-plane.sh, started on first use), an admin client with the CRDs installed,
//! fresh namespaces, and the operator's real `run` code path, in process or as a process.
//! Built on the crate root's functions, which return errors; these panic with context, as a
//! test wants.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use clap::Parser;
use hss_operator::{
    controller::fail_points::{FailPoint, FailPoints, Step},
    crd::ClusterScanTask,
    operator::{self, RunArgs},
};
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::await_condition,
};

/// `hss-operator run` (the operator's binary) for `namespace` against the simulator at
/// `endpoint`, as most end-to-end tests run it: no client-side budget, a poll every second,
/// the admin server on `admin_port`; stderr to `target/LOG.log`, emptied first. Add flags and
/// variables, then spawn.
pub fn fast_operator(
    namespace: &str,
    endpoint: &str,
    log: &str,
    admin_port: u16,
) -> crate::OperatorProcess {
    let log = repo().join(format!("target/{log}.log"));
    let _ = std::fs::remove_file(&log);
    crate::OperatorProcess::new(
        &crate::operator_bin().unwrap_or_else(|e| panic!("{e}")),
        &control_plane().kubeconfig,
        namespace,
        endpoint,
        &log,
    )
    .args([
        "--budget-per-minute",
        "0",
        "--poll-interval",
        "1s",
        "--admin-listen",
        &format!("127.0.0.1:{admin_port}"),
    ])
}

/// A trap for requests that must never be sent: an `https://127.0.0.1:PORT` URL whose listener
/// counts the connections it gets (and drops them), for the rest of the test binary.
pub fn trap() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a trap");
    let url = format!("https://{}", listener.local_addr().expect("trap address"));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    (url, hits)
}

pub fn free_port() -> u16 {
    crate::free_port().expect("a free port")
}

/// A fail point that stops `target`'s reconcile for good at `step`, once, as if the process
/// died there, and reports on the receiver when it fired (the test then kills the operator).
pub fn hang_once(
    target: &str,
    step: Step,
) -> (FailPoint, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (hit_tx, hit_rx) = tokio::sync::mpsc::unbounded_channel();
    let armed = std::sync::Arc::new(std::sync::Mutex::new(true));
    let target = target.to_string();
    let fail_point: FailPoint = std::sync::Arc::new(move |at, obj: String| {
        let fire = at == step
            && obj == target
            && std::mem::replace(&mut *armed.lock().expect("lock"), false);
        let hit_tx = hit_tx.clone();
        Box::pin(async move {
            if fire {
                let _ = hit_tx.send(());
                futures::future::pending::<()>().await;
            }
        })
    });
    (fail_point, hit_rx)
}

pub fn repo() -> PathBuf {
    crate::repo()
}

pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub operator_kubeconfig: PathBuf,
}

/// The control plane of this test binary: started on first use, stopped by a watchdog when
/// the test process exits. Set `KUBECONFIG_TESTS` to use an existing cluster instead.
pub fn control_plane() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| {
        if let Ok(kc) = std::env::var("KUBECONFIG_TESTS") {
            let kc = PathBuf::from(kc);
            return ControlPlane {
                dir: PathBuf::new(),
                kubeconfig: kc.clone(),
                operator_kubeconfig: kc,
            };
        }
        let exe = std::env::current_exe().expect("test binary path");
        let name = exe
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("tests")
            .to_string();
        let dir = repo()
            .join("target")
            .join("control-planes")
            .join(format!("{name}-{}", std::process::id()));
        let script = repo().join("scripts/control-plane.sh");
        crate::start_control_plane(&dir).unwrap_or_else(|e| panic!("{e}"));
        // Stop it when this process goes away, however it ends: a detached watchdog shell.
        let status = Command::new("bash")
            .args([
                "-c",
                r#"setsid bash -c 'while kill -0 "$WATCH_PID" 2>/dev/null; do sleep 1; done; exec bash "$CP_SCRIPT" stop "$CP_DIR"' </dev/null >/dev/null 2>&1 &"#,
            ])
            .env("WATCH_PID", std::process::id().to_string())
            .env("CP_SCRIPT", &script)
            .env("CP_DIR", &dir)
            .status()
            .expect("start the control-plane watchdog");
        assert!(status.success(), "control-plane watchdog did not start");
        ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            operator_kubeconfig: dir.join("kubeconfig-operator"),
            dir,
        }
    })
}

pub async fn client_from(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client")
}

/// An admin client on this binary's control plane, with the CRDs installed.
pub async fn admin() -> Client {
    let cp = control_plane();
    let client = client_from(&cp.kubeconfig).await;
    install_crds(&client).await;
    client
}

/// Applies crds/*.yaml (once per test binary) and waits until they are established.
pub async fn install_crds(client: &Client) {
    install_crds_from(client, &repo().join("crds/crds.yaml")).await;
}

/// Applies the CRDs in `path` (once per test binary: the first caller's file wins) and waits
/// until they are established.
pub async fn install_crds_from(client: &Client, path: &Path) {
    static INSTALLED: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);
    let mut installed = INSTALLED.lock().await;
    if *installed {
        return;
    }
    crate::install_crds(client, path)
        .await
        .unwrap_or_else(|e| panic!("install the CRDs from {}: {e}", path.display()));
    *installed = true;
}

/// A fresh namespace for one test.
pub async fn namespace(client: &Client, name: &str) -> String {
    crate::namespace(client, name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Parser)]
#[command(args_override_self = true)]
struct RunCli {
    #[command(flatten)]
    run: RunArgs,
}

/// Operator flags for a simulator at `base_url` (plain http, hence
/// `--allow-insecure-endpoints`), watching `ns`. `extra` are appended.
pub fn run_args(base_url: &str, ns: &str, extra: &[&str]) -> RunArgs {
    let mut argv = vec![
        "run",
        "--endpoint",
        base_url,
        "--allow-insecure-endpoints",
        "--project-id",
        "proj",
        "--access-key",
        "AKSIM",
        "--secret-key",
        "SKSIM",
        "--namespace",
        ns,
        "--poll-interval",
        "1s",
        "--budget-per-minute",
        "0",
        "--cleanup-timeout",
        "10s",
    ];
    argv.extend_from_slice(extra);
    RunCli::parse_from(argv).run
}

/// The operator's `run` in a task of this runtime.
pub struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    pub fn start(client: Client, args: RunArgs, fail_point: Option<FailPoint>) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            operator::run_with(
                args,
                client,
                fail_point.map(FailPoints::new).unwrap_or_default(),
                async move {
                    let _ = rx.await;
                },
            )
            .await
            .expect("operator runs");
        });
        Self {
            stop: Some(tx),
            task,
        }
    }

    /// Graceful stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }

    /// As if the process died: no cleanup, in-memory state lost.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub fn scan(name: &str, spec: serde_json::Value) -> ClusterScanTask {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "hss.scanops.dev/v1alpha1",
        "kind": "ClusterScanTask",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid ClusterScanTask")
}

pub fn cluster_scan(name: &str) -> ClusterScanTask {
    scan(
        name,
        serde_json::json!({"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["cluster_vul", "benchmark"], "rangeType": "all_cluster"}}),
    )
}

/// Waits until `cond` holds for the object, up to `secs` seconds.
pub async fn wait_for(
    api: &Api<ClusterScanTask>,
    name: &str,
    secs: u64,
    cond: impl Fn(&ClusterScanTask) -> bool,
) -> ClusterScanTask {
    let done = tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, move |o: Option<&ClusterScanTask>| {
            o.is_some_and(&cond)
        }),
    )
    .await;
    match done {
        Ok(Ok(Some(obj))) => obj,
        other => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!(
                "condition on {name} not reached in {secs}s ({:?}); object now: {}",
                other.map(|_| ()),
                serde_json::to_string_pretty(&now).unwrap_or_default()
            )
        }
    }
}

pub fn phase(o: &ClusterScanTask) -> Option<hss_operator::crd::Phase> {
    o.status.as_ref().and_then(|s| s.phase)
}

/// A condition of the object as (status, reason).
pub fn condition(o: &ClusterScanTask, type_: &str) -> Option<(String, String)> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The message of condition `type_` of the object; empty when it has none.
pub fn condition_message(o: &ClusterScanTask, type_: &str) -> String {
    o.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// The object, using the credentials in Secret `name` of its namespace.
pub fn with_secret(mut obj: ClusterScanTask, name: &str) -> ClusterScanTask {
    obj.spec.credentials_secret_ref =
        Some(hss_operator::crd::cluster_scan_task::SecretRef { name: name.into() });
    obj
}
