//! HSS simulator: a real HTTP/1.1 server on loopback that speaks the HSS v5 task APIs the way
//! the service does, so the official Python SDK and our own client drive it unchanged.
//!
//! Used by tests (in process, [`Simulator::start`]), and by benchmarks, chaos tests and demos
//! (out of process, the `hss-simulator` binary, see [`run`]).
//!
//! # APIs
//! | API | route |
//! |---|---|
//! | CreateTask | `POST /v5/{project_id}/common/task` |
//! | ListTasks | `POST /v5/{project_id}/common/tasks/batch-query?offset&limit` |
//! | ListTaskResources | `POST /v5/{project_id}/common/tasks/{task_id}/resources/batch-query?offset&limit` |
//! | RetryTask | `PUT /v5/{project_id}/common/tasks/{task_id}/retry` |
//! | ShowTaskStatistics | `GET /v5/{project_id}/common/task-statistics?task_type=` |
//! | ListKubernetesClusterDetails | `GET /v5/{project_id}/kubernetes/clusters?offset&limit&cluster_name` |
//! | ListClusterRisks | `GET /v5/{project_id}/container/cluster/risks?risk_type&offset&limit&cluster_id&risk_level` |
//! | ListSecurityCheckClusterReports | `GET /v5/{project_id}/security-check/containers/cluster-reports?offset&limit&cluster_id` |
//! | ListIacFileRisks | `GET /v5/{project_id}/container/iac/file/risks?file_id&offset&limit&risk_level` |
//! | ListClusterRiskAffectResources | `GET /v5/{project_id}/container/cluster/risk/{risk_id}/affected-resources?offset&limit&cluster_id&resource_name&resource_type&namespace` |
//! | IAM token (only with `--iam-user`) | `POST /v3/auth/tokens` |
//! | pod identity, ECS metadata, IAM federation, STS OIDC | see `server/identity.rs` |
//!
//! Findings are deterministic per (seed, cluster, scan type) and per (seed, IaC file), and
//! appear when a successful scan of it finishes (`state/findings.rs`); so do the Kubernetes
//! resources each cluster risk affects, per (seed, cluster, risk id) (`state/affected.rs`).
//!
//! Shapes are those of [`hss_client::model`] and [`hss_client::results`]. `enterprise_project_id` is accepted everywhere and
//! recorded on created tasks, but does not partition anything.
//!
//! # What every `/v5` call goes through, in order
//! 1. **Authentication.** Either a valid `SDK-HMAC-SHA256` signature by a configured access key
//!    (checked with [`hss_client::signer::verify`] over the decoded path and query, all received
//!    headers, the exact body and the real wall clock, so 15 minutes of skew is refused), or an
//!    `X-Auth-Token` that is configured or was issued by `/v3/auth/tokens` in the last 24 hours.
//!    An `X-Security-Token` header must be signed; with configured keys any value is accepted,
//!    with temporary keys the identity endpoints issued it must be theirs and unexpired.
//!    Failure: `401 APIGW.0301`.
//! 2. **Project.** With `--project-id`, other projects get `404 APIGW.0101`. Tasks are visible
//!    only in the project that created them.
//! 3. **Throttling.** Per (user, API), at most N calls whose arrival is within the last 60 s;
//!    the next gets `429 APIGW.0308` with `Retry-After` (whole seconds until a slot frees).
//!    Throttled calls execute nothing and do not use up a slot.
//! 4. **Faults** (see below), drawn from a seeded RNG.
//! 5. **Execution.** Bodies are decoded into the model types (unparsable JSON: `400 HSS.0002`;
//!    wrong types or values: `400 HSS.0001`) and validated the way HSS does (`validate()`,
//!    problems joined with `; ` into `error_msg`). Unknown task: `400 HSS.0011`.
//!
//! Every response carries a unique `X-Request-Id`; gateway errors (`APIGW.*`) repeat it in the
//! body. Unknown paths and methods: `404 APIGW.0101`.
//!
//! # Task life cycle
//! A task is `ready` until `run_after` has passed since its creation, `running` until
//! `finish_after`, then `finished`. Status is computed on read from Tokio time, so tests with a
//! paused clock drive it with `tokio::time::advance`, and no timer exists per task. Timestamps
//! (`start_time` = creation, `end_time`, the creation-time filters) are the wall clock at server
//! start plus Tokio time elapsed since.
//!
//! Cluster scans cover the requested clusters (or every configured cluster for `all_cluster`);
//! ids the simulator does not know are scanned too, named after their id. A cluster in the fail
//! set when its scan starts fails every scan type with a `failed_reason`; the fail set is read
//! when the task is created or retried, never afterwards. IaC files whose id starts with `bad`
//! fail. RetryTask restarts the chosen scans at once (`all_failed_cluster`: the failed scan
//! types of failed clusters; `specific_cluster`: the listed scan types, default all of the
//! task's) and they finish `finish_after` later.
//!
//! # Faults
//! `API=KIND[:ARG][@PROB][xCOUNT]`, for example `CreateTask=commit-then-drop@0.2` or
//! `ListTasks=latency:3s@1x2`. `PROB` defaults to 1; `xCOUNT` limits the plan to the next COUNT
//! calls it hits. At most one fault applies per call: plans are tried in the order they were
//! armed. Faults that follow execution (`latency`, `commit-then-server-error`, `malformed`,
//! `commit-then-drop` on CreateTask) only touch calls that succeeded; a rejected call keeps its
//! error. See [`FaultKind`] for what each kind does. `commit-then-drop` closes the TCP connection
//! without writing a byte of response: the server runs its own hyper accept loop for this.
//!
//! # Control plane (tests and tools; no authentication; loopback peers only)
//! | request | effect |
//! |---|---|
//! | `GET /__sim/tasks` | every created task in order: [`CreatedTask`] as JSON |
//! | `GET /__sim/calls` | call counters: `{"CreateTask": {"200": 3, "0": 1}, ...}`; status `0` = dropped |
//! | `GET /__sim/faults` | armed plans, as a JSON list of [`FaultWire`] |
//! | `POST /__sim/faults` | arm plans: a [`FaultWire`] or a list of them, e.g. `{"spec": "CreateTask=throttle@1x2"}` or `{"api": "ListTasks", "kind": "latency", "latency_ms": 3000, "probability": 1, "remaining": 2}` |
//! | `DELETE /__sim/faults[?api=ListTasks]` | disarm all plans (or one API's) |
//! | `POST /__sim/clusters/{id}/fail` | add a cluster to the fail set |
//! | `DELETE /__sim/clusters/{id}/fail` | remove it |
//!
//! API names in the control plane and counters are [`Api::as_str`] (`ListKubernetesClusterDetails`,
//! `KeystoneCreateUserTokenByPassword` for the two that differ from the variant name); fault
//! specs accept either spelling.

mod faults;
mod server;
mod state;
mod throttle;

use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

pub use faults::{FaultKind, FaultPlan, FaultSpec, FaultWire, parse_api};
pub use hss_client::Api;
pub use server::Simulator;
pub use state::{ClusterDef, CreatedTask};

/// Access key accepted by [`SimConfig::default`] and by `hss-simulator` without credentials.
pub const DEFAULT_ACCESS_KEY: &str = "AKSIM";
/// Secret key paired with [`DEFAULT_ACCESS_KEY`].
pub const DEFAULT_SECRET_KEY: &str = "SKSIM";

const FAULT_HELP: &str = "Inject a fault: API=KIND[:ARG][@PROB][xCOUNT] (repeatable).\n\
API: CreateTask, ListTasks, ListTaskResources, RetryTask, ShowTaskStatistics, ListClusters \
(or ListKubernetesClusterDetails), ListClusterRisks, ListClusterReports, ListIacFileRisks, \
ListClusterRiskAffectResources, IamToken.\n\
KIND: latency:DURATION (answer late; the effect is committed first), server-error (500, nothing \
done), commit-then-server-error (done, then 500), throttle (429 APIGW.0308, nothing done), \
malformed (done, then 200 with an unparsable body), commit-then-drop (CreateTask: task created, \
then the connection is closed without a response; other APIs: closed without doing anything).\n\
PROB: chance from 0 to 1 (default 1). xCOUNT: only the next COUNT hits.\n\
Examples: CreateTask=commit-then-drop@0.2  ListTasks=latency:3s@1x2";

/// A string that never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self::new(s))
    }
}

/// An AK/SK pair the simulator accepts signatures from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key: String,
    pub secret_key: Secret,
}

impl Credential {
    pub fn new(access_key: &str, secret_key: &str) -> Self {
        Self {
            access_key: access_key.to_string(),
            secret_key: Secret::new(secret_key),
        }
    }
}

/// `AK:SK`.
impl FromStr for Credential {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((ak, sk)) if !ak.is_empty() && !sk.is_empty() => Ok(Self::new(ak, sk)),
            _ => Err("expected AK:SK".into()),
        }
    }
}

/// A user that may get IAM tokens from `POST /v3/auth/tokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamUser {
    pub name: String,
    pub password: Secret,
}

/// `NAME:PASSWORD`.
impl FromStr for IamUser {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((name, pw)) if !name.is_empty() && !pw.is_empty() => Ok(Self {
                name: name.to_string(),
                password: Secret::new(pw),
            }),
            _ => Err("expected NAME:PASSWORD".into()),
        }
    }
}

fn parse_cluster(s: &str) -> Result<ClusterDef, String> {
    match s.split_once('=') {
        Some((id, name)) if !id.is_empty() && !name.is_empty() => Ok(ClusterDef::new(id, name)),
        None if !s.is_empty() => Ok(ClusterDef::named(s)),
        _ => Err("expected ID or ID=NAME".into()),
    }
}

/// `hss-simulator` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Accepted AK/SK pair (repeatable). Default AKSIM:SKSIM when no credential, token or IAM
    /// user is given.
    #[arg(long = "credential", value_name = "AK:SK")]
    pub credentials: Vec<Credential>,
    /// Accepted IAM token for X-Auth-Token (repeatable).
    #[arg(long = "token", value_name = "TOKEN")]
    pub tokens: Vec<Secret>,
    /// IAM user that may get tokens from POST /v3/auth/tokens on this server (repeatable).
    #[arg(long = "iam-user", value_name = "NAME:PASSWORD")]
    pub iam_users: Vec<IamUser>,
    /// Project id served (repeatable); others get 404 APIGW.0101. Default: any.
    #[arg(long = "project-id", value_name = "ID")]
    pub project_ids: Vec<String>,
    /// Calls per minute per user and API before 429 APIGW.0308; 0 turns throttling off.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub throttle_per_minute: u32,
    /// The throttle's window (HSS: one minute). Shorter windows scale time for tests and
    /// benchmarks; pair with the operator's hidden `--budget-window`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration, hide = true)]
    pub throttle_window: Duration,
    /// Time from creation until a task is running.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub run_after: Duration,
    /// Time from creation (or retry) until a scan is finished.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub finish_after: Duration,
    /// Cluster whose scans fail (repeatable).
    #[arg(long = "fail-cluster", value_name = "ID")]
    pub fail_clusters: Vec<String>,
    /// Clusters known to ListKubernetesClusterDetails and scanned by all_cluster tasks
    /// (ID or ID=NAME, comma separated). Default: cce-sim-0001..0003.
    #[arg(long, value_name = "ID,ID..", value_delimiter = ',', value_parser = parse_cluster)]
    pub clusters: Vec<ClusterDef>,
    #[arg(long = "fault", value_name = "SPEC", help = "Inject a fault: API=KIND[:ARG][@PROB][xCOUNT] (repeatable)", long_help = FAULT_HELP)]
    pub faults: Vec<FaultSpec>,
    /// Seed for task ids, request ids, tokens and fault draws.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Token the identity endpoints accept (pod identity Authorization, federation and OIDC ID
    /// tokens; repeatable). Default: sim-id-token.
    #[arg(long = "identity-token", value_name = "TOKEN")]
    pub identity_tokens: Vec<Secret>,
    /// Lifetime of the temporary credentials the identity endpoints issue.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub temporary_credential_ttl: Duration,
}

/// The token the identity endpoints accept by default.
pub const DEFAULT_IDENTITY_TOKEN: &str = "sim-id-token";

/// Everything the simulator is configured with.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    pub credentials: Vec<Credential>,
    pub tokens: Vec<Secret>,
    pub iam_users: Vec<IamUser>,
    /// Empty: any project id.
    pub project_ids: Vec<String>,
    /// 0: off.
    pub throttle_per_minute: u32,
    pub throttle_window: Duration,
    pub run_after: Duration,
    pub finish_after: Duration,
    pub fail_clusters: Vec<String>,
    pub clusters: Vec<ClusterDef>,
    pub faults: Vec<FaultSpec>,
    pub seed: u64,
    /// Tokens the identity endpoints accept (`server/identity.rs`).
    pub identity_tokens: Vec<Secret>,
    /// Lifetime of the temporary credentials they issue.
    pub temporary_credential_ttl: Duration,
}

/// For tests: a free loopback port, credential AKSIM:SKSIM, no throttling, tasks running at
/// once and finished after 1 s, the default clusters, seed 0.
impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            credentials: vec![Credential::new(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)],
            tokens: Vec::new(),
            iam_users: Vec::new(),
            project_ids: Vec::new(),
            throttle_per_minute: 0,
            throttle_window: Duration::from_secs(60),
            run_after: Duration::ZERO,
            finish_after: Duration::from_secs(1),
            fail_clusters: Vec::new(),
            clusters: ClusterDef::defaults(),
            faults: Vec::new(),
            seed: 0,
            identity_tokens: vec![Secret::new(DEFAULT_IDENTITY_TOKEN)],
            temporary_credential_ttl: Duration::from_secs(3600),
        }
    }
}

impl From<SimArgs> for SimConfig {
    fn from(args: SimArgs) -> Self {
        let mut credentials = args.credentials;
        if credentials.is_empty() && args.tokens.is_empty() && args.iam_users.is_empty() {
            credentials.push(Credential::new(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY));
        }
        Self {
            listen: args.listen,
            credentials,
            tokens: args.tokens,
            iam_users: args.iam_users,
            project_ids: args.project_ids,
            throttle_per_minute: args.throttle_per_minute,
            throttle_window: args.throttle_window,
            run_after: args.run_after,
            finish_after: args.finish_after,
            fail_clusters: args.fail_clusters,
            clusters: if args.clusters.is_empty() {
                ClusterDef::defaults()
            } else {
                args.clusters
            },
            faults: args.faults,
            seed: args.seed,
            identity_tokens: if args.identity_tokens.is_empty() {
                vec![Secret::new(DEFAULT_IDENTITY_TOKEN)]
            } else {
                args.identity_tokens
            },
            temporary_credential_ttl: args.temporary_credential_ttl,
        }
    }
}

/// Why the simulator could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to bind the simulator to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the simulator's bound address")]
    LocalAddr(#[source] std::io::Error),
    #[error("failed to listen for shutdown signals")]
    Signal(#[source] std::io::Error),
    #[error("failed to announce the listening address on stdout")]
    Announce(#[source] std::io::Error),
}

impl Error {
    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "bind",
            Self::LocalAddr(_) => "local_addr",
            Self::Signal(_) => "signal",
            Self::Announce(_) => "announce",
        }
    }
}

/// The `hss-simulator` binary: starts the server, prints `listening on http://IP:PORT` as the first stdout
/// line, and serves until Ctrl-C or SIGTERM.
pub async fn run(args: SimArgs) -> Result<(), Error> {
    let sim = Simulator::start(args.into()).await?;
    // Installed before the announcement, so a supervisor that signals as soon as it reads the
    // line gets a graceful stop rather than the default action.
    let signals = ShutdownSignals::install()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", sim.base_url()).map_err(Error::Announce)?;
        out.flush().map_err(Error::Announce)?;
    }
    tracing::info!(addr = %sim.addr(), "HSS simulator listening");
    signals.recv().await;
    sim.shutdown().await;
    tracing::info!("HSS simulator stopped");
    Ok(())
}

#[cfg(unix)]
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl ShutdownSignals {
    fn install() -> Result<Self, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(Error::Signal)?,
            terminate: signal(SignalKind::terminate()).map_err(Error::Signal)?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct ShutdownSignals;

#[cfg(not(unix))]
impl ShutdownSignals {
    fn install() -> Result<Self, Error> {
        Ok(Self)
    }

    async fn recv(self) {
        // Without a handler there is nothing to wait for; a failure to listen means no stop.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn cli_flags_build_the_config_and_secrets_stay_out_of_debug_output() {
        let cli = Cli::try_parse_from([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--credential",
            "AK1:very-secret",
            "--token",
            "tok-secret",
            "--iam-user",
            "alice:pw-secret",
            "--project-id",
            "p1",
            "--throttle-per-minute",
            "0",
            "--run-after",
            "0s",
            "--finish-after",
            "1500ms",
            "--clusters",
            "a,b=Bee",
            "--fail-cluster",
            "b",
            "--fault",
            "CreateTask=commit-then-drop@0.2",
            "--fault",
            "ListTasks=latency:3s@1x2",
            "--seed",
            "9",
        ])
        .expect("flags parse");
        let debug = format!("{:?}", cli.sim);
        for secret in ["very-secret", "tok-secret", "pw-secret"] {
            assert!(!debug.contains(secret), "{secret} leaked into {debug}");
        }
        let config = SimConfig::from(cli.sim);
        assert_eq!(config.finish_after, Duration::from_millis(1500));
        assert_eq!(
            config.clusters,
            vec![ClusterDef::named("a"), ClusterDef::new("b", "Bee")]
        );
        assert_eq!(config.faults.len(), 2);
        assert_eq!(
            config.credentials,
            vec![Credential::new("AK1", "very-secret")]
        );
    }

    #[test]
    fn without_any_credential_the_default_pair_is_accepted() {
        let cli = Cli::try_parse_from(["sim"]).expect("defaults parse");
        assert_eq!(cli.sim.throttle_per_minute, 5);
        assert_eq!(cli.sim.run_after, Duration::from_secs(5));
        let config = SimConfig::from(cli.sim);
        assert_eq!(
            config.credentials,
            vec![Credential::new(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)]
        );
        assert_eq!(config.clusters, ClusterDef::defaults());
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            ["sim", "--credential", "no-colon"],
            ["sim", "--fault", "CreateTask=explode"],
            ["sim", "--run-after", "soon"],
            ["sim", "--iam-user", ":pw"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
