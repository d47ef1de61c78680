//! The test kit (dev-only, never shipped): one harness for every integration test and the
//! bench.
//!
//! - This root: a throw-away control plane from `scripts/control-plane.sh`, the CRDs and
//!   namespaces in it, free ports, the workspace's binaries, and any binary as a child process
//!   that is stopped when dropped. Everything here returns errors (the bench adds context).
//! - [`cluster`]: the same for a test, panicking with context, plus the operator's `run` in
//!   process, manifests and waits; [`identity`]: ServiceAccount kubeconfigs; [`tls`]: an
//!   https front for a plain-http test server; [`metrics`]: scraping the operator's
//!   authenticated `/metrics`.

pub mod cluster;
pub mod identity;
pub mod metrics;
pub mod tls;

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::wait::{await_condition, conditions},
};

/// Any error of the harness, with what it was doing.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The repository (workspace) root: where `scripts/`, `crds/`, `deploy/` and `target/` are.
pub fn repo() -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    kit.ancestors()
        .nth(2)
        .map_or_else(|| kit.to_path_buf(), Path::to_path_buf)
}

/// A free loopback port (bound, then released: good enough on a test machine).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts etcd and kube-apiserver in `dir` (`scripts/control-plane.sh start`); the admin's
/// kubeconfig is `dir/kubeconfig`.
pub fn start_control_plane(dir: &Path) -> Result<(), Error> {
    let status = Command::new("bash")
        .arg(repo().join("scripts/control-plane.sh"))
        .arg("start")
        .arg(dir)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("control plane failed to start; see {}", dir.display()).into());
    }
    Ok(())
}

/// Stops the control plane in `dir`.
pub fn stop_control_plane(dir: &Path) {
    let _ = Command::new("bash")
        .arg(repo().join("scripts/control-plane.sh"))
        .arg("stop")
        .arg(dir)
        .stdout(Stdio::null())
        .status();
}

/// Creates or replaces the CRDs in `path` and waits until they are established. Not server-side
/// apply: a 1.20 server does not know x-kubernetes-validations and refuses it in a typed (SSA)
/// patch, but drops it on create.
pub async fn install_crds(client: &Client, path: &Path) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let docs: Vec<CustomResourceDefinition> = serde_saphyr::from_str_multiple(&text)?;
    for crd in docs {
        let name = crd.metadata.name.clone().ok_or("a CRD without a name")?;
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let mut crd = crd.clone();
                crd.metadata.resource_version = crds.get(&name).await?.metadata.resource_version;
                crds.replace(&name, &PostParams::default(), &crd).await?;
            }
            Err(e) => return Err(format!("create CRD {name}: {e}").into()),
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| format!("CRD {name} not established within 30 s"))??;
    }
    Ok(())
}

/// A namespace named `<name>-<pid>`, created unless it exists.
pub async fn namespace(client: &Client, name: &str) -> Result<String, Error> {
    let ns = format!("{name}-{}", std::process::id() % 100_000);
    let api: Api<Namespace> = Api::all(client.clone());
    let obj: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(ns),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(ns),
        Err(e) => Err(format!("create namespace {ns}: {e}").into()),
    }
}

/// `hss-operator run` as a child process against a simulator at `endpoint` (plain http, hence
/// `--allow-insecure-endpoints`) with the simulator's default key in its environment, and
/// nothing else of the caller's environment but `PATH`; its metrics server on a free loopback
/// port ([`OperatorProcess::metrics_port`]), so that processes side by side do not share the
/// default 8443. Add flags and variables, then [`OperatorProcess::command`].
#[derive(Debug, Clone)]
pub struct OperatorProcess {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    metrics_port: u16,
}

impl OperatorProcess {
    /// Watching `namespace` with the admin kubeconfig `kubeconfig`, project `proj`, triggers
    /// off, `RUST_LOG=info`; stderr appended to `log`.
    pub fn new(bin: &Path, kubeconfig: &Path, namespace: &str, endpoint: &str, log: &Path) -> Self {
        let args = [
            "run",
            "--namespace",
            namespace,
            "--endpoint",
            endpoint,
            "--allow-insecure-endpoints",
            "--project-id",
            "proj",
            "--disable-triggers",
        ];
        Self {
            bin: bin.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![
                ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
                ("KUBECONFIG".into(), kubeconfig.display().to_string()),
                ("HUAWEICLOUD_SDK_AK".into(), "AKSIM".into()),
                ("HUAWEICLOUD_SDK_SK".into(), "SKSIM".into()),
                ("POD_NAME".into(), "hss-operator".into()),
                ("RUST_LOG".into(), "info".into()),
                ("NO_COLOR".into(), "1".into()),
            ],
            log: log.to_path_buf(),
            metrics_port: free_port().unwrap_or(0),
        }
    }

    /// The loopback port of its metrics server (`--metrics-listen 127.0.0.1:PORT`).
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// More flags.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Sets an environment variable (replacing a default).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes an environment variable (the simulator's default key, say).
    pub fn without_env(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// The command, ready to spawn: stdin and stdout closed, stderr appended to the log.
    pub fn command(&self) -> io::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .args([
                "--metrics-listen".to_string(),
                format!("127.0.0.1:{}", self.metrics_port),
            ])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Ok(cmd)
    }

    /// Spawned, stopped when dropped.
    pub fn spawn(&self) -> io::Result<Child> {
        Ok(Child {
            child: self.command()?.spawn()?,
            name: "hss-operator run".into(),
        })
    }
}

/// A child process stopped when dropped: SIGTERM, then SIGKILL after 10 s.
pub struct Child {
    pub child: std::process::Child,
    pub name: String,
}

impl Child {
    pub fn new(child: std::process::Child, name: &str) -> Self {
        Self {
            child,
            name: name.into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, a graceful exit within 10 s, else SIGKILL.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} ignored SIGTERM; killing", self.name);
        self.kill();
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `hss-simulator` binary of this build profile (see [`workspace_bin`]).
pub fn simulator_bin() -> Result<PathBuf, Error> {
    workspace_bin("hss-simulator")
}

/// The `hss-operator` binary of this build profile (see [`workspace_bin`]).
pub fn operator_bin() -> Result<PathBuf, Error> {
    workspace_bin("hss-operator")
}

/// Binary `name` of this workspace in this build profile, built first if needed (`cargo test
/// -p hss-operator` does not build the simulator, its own package). The build runs the same
/// `cargo` with the same environment and the whole workspace's features, so it reuses what
/// `cargo test --workspace` built and is a no-op when the binary is current.
pub fn workspace_bin(name: &'static str) -> Result<PathBuf, Error> {
    static BUILT: Mutex<BTreeMap<&'static str, Result<PathBuf, String>>> =
        Mutex::new(BTreeMap::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    built
        .entry(name)
        .or_insert_with(|| build_bin(name))
        .clone()
        .map_err(Error::from)
}

fn build_bin(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in target/<profile>/deps", exe.display()))?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(repo())
        .args(["build", "--locked", "--quiet", "--workspace", "--bin", name])
        .stdin(Stdio::null());
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .map_err(|e| format!("cargo build --bin {name}: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --bin {name} failed: {status}"));
    }
    let bin = profile_dir.join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} was not built (CARGO_TARGET_DIR changed?)",
            bin.display()
        ))
    }
}
