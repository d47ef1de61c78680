//! The harness the integration tests and the bench (`src/bin/bench.rs`, which includes this
//! file by path) share: a throw-away control plane from `scripts/control-plane.sh`, the CRDs
//! and namespaces in it, free ports, and the operator (or any binary) as a child process that
//! is stopped when dropped. Everything returns errors instead of panicking; the tests' wrappers
//! in `tests/support/mod.rs` turn them into panics with context.

#![allow(dead_code)]

use std::{
    io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
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

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
/// nothing else of the caller's environment but `PATH`. Add flags and variables, then
/// [`OperatorProcess::command`].
#[derive(Debug, Clone)]
pub struct OperatorProcess {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
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
        }
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
