//! What every scenario runs against: the control plane (a throw-away one from
//! scripts/control-plane.sh, or `KUBECONFIG`'s cluster), the bench's client, the counting proxy
//! with the operator's kubeconfig, the binaries, and the log directory.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::{anyhow, bail};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{
    cli::Cli,
    proxy::{Proxy, start_proxy},
};

/// Shared by the scenarios of one run.
pub struct Env {
    /// Stopped when dropped, if the bench started it.
    pub cp: ControlPlane,
    /// The bench's own client, straight to the API server (not counted).
    pub client: Client,
    pub proxy: Arc<Proxy>,
    /// The operator's kubeconfig: through the proxy.
    pub proxy_kubeconfig: PathBuf,
    /// `hss-operator`.
    pub bin: PathBuf,
    /// `hss-simulator`.
    pub sim_bin: PathBuf,
    /// For the simulator's `/__sim/calls` and the operator's admin endpoints.
    pub http: reqwest::Client,
    /// `target/bench/<pid>/`: every child's log.
    pub logs: PathBuf,
}

impl Env {
    /// Finds the binaries, creates the log directory, starts (or connects to) the control
    /// plane, installs the CRDs if a scenario needs them, and starts the proxy.
    pub async fn start(cli: &Cli) -> anyhow::Result<Env> {
        let bin = release_bin(cli.operator_bin.as_ref(), "hss-operator")?;
        let sim_bin = release_bin(cli.simulator_bin.as_ref(), "hss-simulator")?;
        let needs_cluster = cli.scenarios.iter().any(|s| matches!(s, 1..=3 | 5..=7));
        let logs = hss_testkit::repo()
            .join("target/bench")
            .join(std::process::id().to_string());
        std::fs::create_dir_all(&logs)?;
        eprintln!("bench: logs in {}", logs.display());
        let cp = control_plane()?;
        let config = kube_config(&cp.kubeconfig).await?;
        let client = Client::try_from(config.clone())?;
        if needs_cluster {
            hss_testkit::install_crds(&client, &hss_testkit::repo().join("crds/crds.yaml"))
                .await
                .map_err(|e| anyhow!(e))?;
        }
        let (proxy, proxy_kubeconfig) = start_proxy(&config, &cp.dir).await?;
        Ok(Env {
            cp,
            client,
            proxy,
            proxy_kubeconfig,
            bin,
            sim_bin,
            http: reqwest::Client::new(),
            logs,
        })
    }

    /// A namespace named `<name>-<pid>`, created unless it exists.
    pub async fn namespace(&self, name: &str) -> anyhow::Result<String> {
        hss_testkit::namespace(&self.client, name)
            .await
            .map_err(|e| anyhow!(e))
    }
}

/// `--NAME-bin`, or `target/release/NAME` of package NAME.
fn release_bin(given: Option<&PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    let bin = given
        .cloned()
        .unwrap_or_else(|| hss_testkit::repo().join("target/release").join(name));
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p {name}` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// The cluster: the admin kubeconfig and a directory for the bench's files in it.
pub struct ControlPlane {
    kubeconfig: PathBuf,
    dir: PathBuf,
    started: bool,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.started {
            hss_testkit::stop_control_plane(&self.dir);
        }
    }
}

/// `KUBECONFIG`'s cluster if set, else a control plane started in
/// `target/control-planes/bench-<pid>`.
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
    let dir = hss_testkit::repo()
        .join("target/control-planes")
        .join(format!("bench-{}", std::process::id()));
    let t = Instant::now();
    hss_testkit::start_control_plane(&dir).map_err(|e| anyhow!(e))?;
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
