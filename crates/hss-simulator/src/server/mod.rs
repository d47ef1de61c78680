//! The HTTP side: routes, the per-call pipeline (auth, project, throttle, faults, execution)
//! and a hyper accept loop that can drop a connection without answering. Who is calling is
//! decided in `auth.rs`, what a call answers is built in `reply.rs`, the control endpoints are
//! in `control.rs` and the [`Simulator`] handle in `handle.rs`.

mod auth;
mod control;
mod handle;
mod identity;
mod reply;
mod routes;

use auth::IssuedTokens;
pub use handle::Simulator;
use reply::{DropConnection, Reply};
use routes::{AppState, router};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

use super::faults::{FaultBook, FaultKind};
use super::state::{AffectedFilter, NewTask, Store};
use super::throttle::{SlidingWindow, retry_after_secs};
use super::{IamUser, Secret, SimConfig};
use hss_client::Api;
use hss_client::model::{
    CreateTaskRequest, CreateTaskResponse, ListTaskResourcesRequest, ListTasksRequest,
    RetryTaskRequest, TaskType,
};
use hss_client::results::{RiskLevel, RiskType};
use hss_client::signer;

const MAX_BODY: usize = 1024 * 1024;
/// How long shutdown waits for calls in flight (a latency fault, say) before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const NO_SUCH_API: &str = "The API does not exist or has not been published in the environment";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The remote address of a connection, for the control plane's loopback check.
#[derive(Debug, Clone, Copy)]
struct PeerAddr(SocketAddr);

/// A call after routing: what the pipeline needs to execute it.
struct Call<'a> {
    api: Api,
    project: &'a str,
    /// The path's second id: a task id, or ListClusterRiskAffectResources' risk id.
    task_id: Option<&'a str>,
    query: &'a [(String, String)],
    body: &'a [u8],
    user: &'a str,
}

impl Call<'_> {
    fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn paging(&self) -> Result<(usize, usize), Reply> {
        let parse = |key: &str, default: usize, min: usize, max: usize| match self.query(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    Reply::hss(
                        "HSS.0001",
                        format!("{key} must be an integer from {min} to {max}, got {v:?}"),
                    )
                }),
        };
        Ok((
            parse("offset", 0, 0, 2_000_000)?,
            parse("limit", 10, 10, 200)?,
        ))
    }

    fn body<T: DeserializeOwned>(&self) -> Result<T, Reply> {
        serde_json::from_slice(self.body).map_err(|e| {
            if e.is_data() {
                Reply::hss("HSS.0001", format!("invalid request body: {e}"))
            } else {
                Reply::hss(
                    "HSS.0002",
                    format!("failed to parse the request body as JSON: {e}"),
                )
            }
        })
    }

    /// A query parameter that must be one of `T`'s wire names (`required`: must be present).
    fn enum_query<T: DeserializeOwned>(
        &self,
        key: &str,
        required: bool,
    ) -> Result<Option<T>, Reply> {
        match self.query(key).filter(|v| !v.is_empty()) {
            None if required => Err(Reply::hss("HSS.0001", format!("{key} is required"))),
            None => Ok(None),
            Some(v) => serde_json::from_value::<T>(serde_json::Value::from(v))
                .map(Some)
                .map_err(|_| Reply::hss("HSS.0001", format!("{key} has an unknown value {v:?}"))),
        }
    }

    fn task_id(&self) -> &str {
        self.task_id.unwrap_or_default()
    }
}

pub(crate) struct Shared {
    seed: u64,
    credentials: HashMap<String, Secret>,
    tokens: Vec<Secret>,
    iam_users: Vec<IamUser>,
    project_ids: Vec<String>,
    throttle_limit: u32,
    store: RwLock<Store>,
    throttle: Mutex<SlidingWindow<(String, Api)>>,
    faults: Mutex<FaultBook>,
    calls: Mutex<BTreeMap<(String, u16), u64>>,
    issued: Mutex<IssuedTokens>,
    identity: identity::Identity,
    request_seq: AtomicU64,
}

impl Shared {
    fn new(config: &SimConfig) -> Self {
        Self {
            seed: config.seed,
            credentials: config
                .credentials
                .iter()
                .map(|c| (c.access_key.clone(), c.secret_key.clone()))
                .collect(),
            tokens: config.tokens.clone(),
            iam_users: config.iam_users.clone(),
            project_ids: config.project_ids.clone(),
            throttle_limit: config.throttle_per_minute,
            store: RwLock::new(Store::new(
                config.seed,
                config.run_after,
                config.finish_after,
                config.clusters.clone(),
                config.fail_clusters.iter().cloned(),
            )),
            throttle: Mutex::new(SlidingWindow::new(
                config.throttle_per_minute,
                config.throttle_window,
            )),
            faults: Mutex::new(FaultBook::new(config.seed, &config.faults)),
            calls: Mutex::new(BTreeMap::new()),
            issued: Mutex::new(IssuedTokens {
                rng: StdRng::seed_from_u64(splitmix64(config.seed ^ 0x1A4)),
                tokens: HashMap::new(),
            }),
            identity: identity::Identity::new(
                config.identity_tokens.clone(),
                config.temporary_credential_ttl,
                StdRng::seed_from_u64(splitmix64(config.seed ^ 0x1D)),
            ),
            request_seq: AtomicU64::new(0),
        }
    }

    fn next_request_id(&self) -> String {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        // splitmix64 is a bijection, so ids never repeat within a run.
        format!(
            "{:016x}{:016x}",
            splitmix64(!self.seed),
            splitmix64(self.seed ^ n)
        )
    }

    fn count(&self, api: Api, status: u16) {
        *lock(&self.calls)
            .entry((api.as_str().to_string(), status))
            .or_default() += 1;
    }

    async fn api_call(
        self: Arc<Self>,
        api: Api,
        project: String,
        task_id: Option<String>,
        req: Request,
    ) -> Response {
        let request_id = self.next_request_id();
        let reply = self
            .process(api, &project, task_id.as_deref(), req, &request_id)
            .await;
        let status = reply.counted_status();
        self.count(api, status);
        tracing::debug!(api = api.as_str(), status, request_id, "HSS call");
        reply.into_response(&request_id)
    }

    async fn process(
        &self,
        api: Api,
        project: &str,
        task_id: Option<&str>,
        req: Request,
        request_id: &str,
    ) -> Reply {
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
            return Reply::gateway(
                StatusCode::PAYLOAD_TOO_LARGE,
                "APIGW.0201",
                "Request entity too large or unreadable",
                request_id,
            );
        };
        let query = signer::decode_query(parts.uri.query().unwrap_or(""));
        let mut user = String::new();
        if api != Api::IamToken {
            user = match self.authenticate(&parts, &query, &body) {
                Ok(user) => user,
                Err(failure) => {
                    tracing::info!(
                        api = api.as_str(),
                        reason = failure.category(),
                        "refused an unauthenticated call"
                    );
                    return Reply::gateway(
                        StatusCode::UNAUTHORIZED,
                        "APIGW.0301",
                        format!(
                            "Incorrect IAM authentication information: {}",
                            failure.message()
                        ),
                        request_id,
                    );
                }
            };
            if !self.project_ids.is_empty() && !self.project_ids.iter().any(|p| p == project) {
                return Reply::gateway(
                    StatusCode::NOT_FOUND,
                    "APIGW.0101",
                    format!("{NO_SUCH_API} (project {project} is not served here)"),
                    request_id,
                );
            }
            let admitted = lock(&self.throttle).check((user.clone(), api), Instant::now());
            if let Err(wait) = admitted {
                return Reply::throttled(request_id, self.throttle_limit, retry_after_secs(wait));
            }
        }
        let fault = lock(&self.faults).draw(api);
        match fault {
            Some(FaultKind::Throttle) => {
                return Reply::throttled(request_id, self.throttle_limit.max(1), 1);
            }
            Some(FaultKind::ServerError) => return Reply::server_error(),
            Some(FaultKind::CommitThenDrop) if api != Api::CreateTask => return Reply::dropped(),
            _ => {}
        }
        let call = Call {
            api,
            project,
            task_id,
            query: &query,
            body: &body,
            user: &user,
        };
        let reply = self.execute(&call).unwrap_or_else(|rejected| rejected);
        if !reply.status.is_success() {
            return reply;
        }
        match fault {
            Some(FaultKind::Latency(delay)) => {
                tokio::time::sleep(delay).await;
                reply
            }
            Some(FaultKind::CommitThenServerError) => Reply::server_error(),
            Some(FaultKind::Malformed) => reply.malformed(),
            Some(FaultKind::CommitThenDrop) => Reply::dropped(),
            _ => reply,
        }
    }

    fn execute(&self, call: &Call<'_>) -> Result<Reply, Reply> {
        let now = Instant::now();
        match call.api {
            Api::CreateTask => {
                let request: CreateTaskRequest = call.body()?;
                request
                    .validate()
                    .map_err(|problems| Reply::hss("HSS.0001", problems.join("; ")))?;
                let task_id = write(&self.store).create(
                    NewTask {
                        request,
                        body: serde_json::from_slice(call.body).unwrap_or_default(),
                        project_id: call.project.to_string(),
                        enterprise_project_id: call.query("enterprise_project_id").map(Into::into),
                        user: call.user.to_string(),
                    },
                    now,
                );
                Ok(Reply::json(StatusCode::OK, &CreateTaskResponse { task_id }))
            }
            Api::ListTasks => {
                let (offset, limit) = call.paging()?;
                let q: ListTasksRequest = call.body()?;
                let page = read(&self.store)
                    .list_tasks(call.project, &q, offset, limit, now)
                    .map_err(Reply::rejection)?;
                Ok(Reply::json(StatusCode::OK, &page))
            }
            Api::ListTaskResources => {
                let (offset, limit) = call.paging()?;
                let q: ListTaskResourcesRequest = call.body()?;
                let page = read(&self.store)
                    .list_resources(call.project, call.task_id(), &q, offset, limit, now)
                    .map_err(Reply::rejection)?;
                Ok(Reply::json(StatusCode::OK, &page))
            }
            Api::RetryTask => {
                let q: RetryTaskRequest = call.body()?;
                q.validate()
                    .map_err(|problems| Reply::hss("HSS.0001", problems.join("; ")))?;
                write(&self.store)
                    .retry(call.project, call.task_id(), &q, now)
                    .map_err(|r| {
                        tracing::debug!(reason = r.category(), "retry refused");
                        Reply::rejection(r)
                    })?;
                Ok(Reply::raw(StatusCode::OK, Vec::new()))
            }
            Api::ShowTaskStatistics => {
                let task_type = call
                    .query("task_type")
                    .and_then(|t| {
                        serde_json::from_value::<TaskType>(serde_json::Value::from(t)).ok()
                    })
                    .ok_or_else(|| {
                        Reply::hss("HSS.0001", "task_type must be cluster_scan or iac_scan")
                    })?;
                let stats = read(&self.store).statistics(call.project, task_type, now);
                Ok(Reply::json(StatusCode::OK, &stats))
            }
            Api::ListClusters => {
                let (offset, limit) = call.paging()?;
                let name = call.query("cluster_name").filter(|n| !n.is_empty());
                let page = read(&self.store).clusters(name, offset, limit);
                Ok(Reply::json(StatusCode::OK, &page))
            }
            Api::ListClusterRisks => {
                let (offset, limit) = call.paging()?;
                let risk_type =
                    call.enum_query::<RiskType>("risk_type", true)?
                        .ok_or_else(|| {
                            Reply::hss("HSS.0001", "risk_type must be risk_assessment or benchmark")
                        })?;
                let level = call.enum_query::<RiskLevel>("risk_level", false)?;
                let cluster = call.query("cluster_id").filter(|c| !c.is_empty());
                let page = read(&self.store).cluster_risks(
                    call.project,
                    risk_type,
                    (cluster, level),
                    (offset, limit),
                    now,
                );
                Ok(Reply::json(StatusCode::OK, &page))
            }
            Api::ListClusterReports => {
                let (offset, limit) = call.paging()?;
                let cluster = call.query("cluster_id").filter(|c| !c.is_empty());
                let page =
                    read(&self.store).cluster_reports(call.project, cluster, offset, limit, now);
                Ok(Reply::json(StatusCode::OK, &page))
            }
            Api::ListIacFileRisks => {
                let (offset, limit) = call.paging()?;
                let file_id = call
                    .query("file_id")
                    .filter(|f| !f.is_empty() && f.len() <= 64)
                    .ok_or_else(|| Reply::hss("HSS.0001", "file_id must be 1 to 64 characters"))?;
                let level = call.enum_query::<RiskLevel>("risk_level", false)?;
                let page = read(&self.store).iac_file_risks(
                    call.project,
                    file_id,
                    level,
                    (offset, limit),
                    now,
                );
                Ok(Reply::json(StatusCode::OK, &page))
            }
            Api::ListClusterRiskAffectResources => {
                let (offset, limit) = call.paging()?;
                let nonempty = |key| call.query(key).filter(|v| !v.is_empty());
                let filter = AffectedFilter {
                    cluster_id: nonempty("cluster_id"),
                    resource_name: nonempty("resource_name"),
                    resource_type: nonempty("resource_type"),
                    namespace: nonempty("namespace"),
                };
                let page = read(&self.store).affected_resources(
                    call.project,
                    call.task_id(),
                    filter,
                    (offset, limit),
                    now,
                );
                Ok(Reply::json(StatusCode::OK, &page))
            }
            Api::IamToken => Ok(self.iam_token(call.body)),
        }
    }
}

// ---------------------------------------------------------------- server

/// Resolves once shutdown is requested; never if every sender is gone without asking.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        let mut router = router.clone();
        req.extensions_mut().insert(PeerAddr(peer));
        async move {
            std::future::poll_fn(|cx| <Router as Service<Request>>::poll_ready(&mut router, cx))
                .await
                .map_err(|never| match never {})?;
            let response = router
                .call(req.map(Body::new))
                .await
                .map_err(|never| match never {})?;
            // An error from the service makes hyper close the connection without writing a
            // response, which is exactly what commit-then-drop needs.
            if response.extensions().get::<DropConnection>().is_some() {
                Err(DropConnection)
            } else {
                Ok(response)
            }
        }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        // No hyper timer is installed: request reading is not timed, which keeps paused-clock
        // tests free of hidden timers.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop_requested(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "connection ended");
    }
}

async fn accept_loop(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, router.clone(), stop.clone()));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stop_requested(&mut stop) => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}
