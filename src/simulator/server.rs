//! The HTTP side: routes, the per-call pipeline (auth, project, throttle, faults, execution),
//! the IAM token endpoint, the control plane, and a hyper accept loop that can drop a
//! connection without answering.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower_service::Service;

use super::faults::{FaultBook, FaultKind, FaultPlan, FaultSpec, FaultWire, parse_api};
use super::state::{CreatedTask, NewTask, Rejection, Store};
use super::throttle::{SlidingWindow, retry_after_secs};
use super::{Error, IamUser, Secret, SimConfig};
use crate::hss::Api;
use crate::hss::model::{
    CreateTaskRequest, CreateTaskResponse, ListTaskResourcesRequest, ListTasksRequest,
    RetryTaskRequest, TaskType,
};
use crate::hss::signer::{self, VerifyError};

const MAX_BODY: usize = 1024 * 1024;
const IAM_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
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

/// Why a call was not authenticated. Only the category is logged; the message goes back to the
/// caller and never contains a secret.
#[derive(Debug)]
enum AuthFailure {
    Missing,
    Token,
    UnsignedSecurityToken,
    Signature(VerifyError),
}

impl AuthFailure {
    fn category(&self) -> &'static str {
        match self {
            Self::Missing => "missing_credentials",
            Self::Token => "invalid_token",
            Self::UnsignedSecurityToken => "unsigned_security_token",
            Self::Signature(e) => e.category(),
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Self::Missing => "Authorization or X-Auth-Token not found",
            Self::Token => "the token is invalid or has expired",
            Self::UnsignedSecurityToken => "X-Security-Token must be a signed header",
            Self::Signature(VerifyError::MalformedAuthorization) => {
                "the Authorization header is not SDK-HMAC-SHA256"
            }
            Self::Signature(VerifyError::UnknownAccessKey) => "the access key does not exist",
            Self::Signature(VerifyError::MissingDate) => "X-Sdk-Date is missing or not signed",
            Self::Signature(VerifyError::ClockSkew) => {
                "X-Sdk-Date is more than 15 minutes away from the server time"
            }
            Self::Signature(VerifyError::Mismatch) => "verify aksk signature fail",
        }
    }
}

/// The response a call produces, before it becomes HTTP.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    retry_after: Option<u64>,
    subject_token: Option<String>,
    drop_connection: bool,
}

impl Reply {
    fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::raw(status, body),
            Err(_) => Self::server_error(),
        }
    }

    fn raw(status: StatusCode, body: Vec<u8>) -> Self {
        Self {
            status,
            body,
            retry_after: None,
            subject_token: None,
            drop_connection: false,
        }
    }

    /// HSS errors: always 400, no request id in the body.
    fn hss(code: &str, msg: impl Into<String>) -> Self {
        Self::json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error_code": code, "error_msg": msg.into()}),
        )
    }

    fn rejection(r: Rejection) -> Self {
        match r {
            Rejection::Invalid(msg) => Self::hss("HSS.0001", msg),
            Rejection::NotFound(msg) => Self::hss("HSS.0011", msg),
        }
    }

    fn gateway(status: StatusCode, code: &str, msg: impl Into<String>, request_id: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({"error_code": code, "error_msg": msg.into(), "request_id": request_id}),
        )
    }

    fn throttled(request_id: &str, limit: u32, retry_after: u64) -> Self {
        let mut r = Self::gateway(
            StatusCode::TOO_MANY_REQUESTS,
            "APIGW.0308",
            format!(
                "The throttling threshold has been reached: policy user over ratelimit,limit:{limit},time:1 minute"
            ),
            request_id,
        );
        r.retry_after = Some(retry_after);
        r
    }

    fn server_error() -> Self {
        Self::raw(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error_code":"HSS.0500","error_msg":"Internal server error (simulated)"}"#
                .to_vec(),
        )
    }

    fn dropped() -> Self {
        let mut r = Self::raw(StatusCode::OK, Vec::new());
        r.drop_connection = true;
        r
    }

    /// Same status, but the body cut in half: never valid JSON.
    fn malformed(mut self) -> Self {
        if self.body.len() >= 2 {
            self.body.truncate(self.body.len() / 2);
        } else {
            self.body = b"{\"".to_vec();
        }
        self
    }

    /// The status the call counters see: 0 for a dropped connection.
    fn counted_status(&self) -> u16 {
        if self.drop_connection {
            0
        } else {
            self.status.as_u16()
        }
    }

    fn into_response(self, request_id: &str) -> Response {
        let has_body = !self.body.is_empty();
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", v);
        }
        if has_body {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(token) = self.subject_token.as_deref()
            && let Ok(v) = HeaderValue::from_str(token)
        {
            headers.insert("x-subject-token", v);
        }
        if self.drop_connection {
            response.extensions_mut().insert(DropConnection);
        }
        response
    }
}

/// Marks a response that must not be written: the accept loop closes the connection instead.
#[derive(Debug, Clone, Copy)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a commit-then-drop fault")
    }
}

impl std::error::Error for DropConnection {}

/// The remote address of a connection, for the control plane's loopback check.
#[derive(Debug, Clone, Copy)]
struct PeerAddr(SocketAddr);

struct IssuedTokens {
    rng: StdRng,
    tokens: HashMap<String, (String, Instant)>,
}

/// A call after routing: what the pipeline needs to execute it.
struct Call<'a> {
    api: Api,
    project: &'a str,
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

    fn authenticate(
        &self,
        parts: &axum::http::request::Parts,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<String, AuthFailure> {
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if let Some(token) = parts.headers.get("x-auth-token") {
            let token = String::from_utf8_lossy(token.as_bytes());
            if let Some(i) = self.tokens.iter().position(|t| t.expose() == token) {
                return Ok(format!("token#{}", i + 1));
            }
            return match lock(&self.issued).tokens.get(token.as_ref()) {
                Some((user, expires)) if Instant::now() < *expires => Ok(user.clone()),
                _ => Err(AuthFailure::Token),
            };
        }
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthFailure::Missing)?;
        if parts.headers.contains_key("x-security-token") {
            let auth =
                signer::parse_authorization(&String::from_utf8_lossy(authorization.as_bytes()))
                    .map_err(AuthFailure::Signature)?;
            if !auth.signed_headers.iter().any(|h| h == "x-security-token") {
                return Err(AuthFailure::UnsignedSecurityToken);
            }
        }
        // The client signs with the real clock, so skew is judged against it even when a test
        // has paused Tokio time.
        let now = jiff::Timestamp::now().as_second();
        signer::verify(
            parts.method.as_str(),
            &signer::decode(parts.uri.path()),
            query,
            &headers,
            body,
            now,
            |ak| {
                self.credentials
                    .get(ak)
                    .map(|sk| sk.expose().as_bytes().to_vec())
            },
        )
        .map_err(AuthFailure::Signature)
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
            Api::IamToken => Ok(self.iam_token(call.body)),
        }
    }

    /// `POST /v3/auth/tokens` with a password identity.
    fn iam_token(&self, body: &[u8]) -> Reply {
        let iam_error = |status: StatusCode, message: &str| {
            Reply::json(
                status,
                &serde_json::json!({"error": {
                    "code": status.as_u16(),
                    "message": message,
                    "title": status.canonical_reason().unwrap_or_default(),
                }}),
            )
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid.");
        };
        let identity = &doc["auth"]["identity"];
        let password_method = identity["methods"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "password"));
        let user = &identity["password"]["user"];
        let (Some(name), Some(password), true) = (
            user["name"].as_str(),
            user["password"].as_str(),
            password_method,
        ) else {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "The request body is invalid: a password identity is required.",
            );
        };
        if !self
            .iam_users
            .iter()
            .any(|u| u.name == name && u.password.expose() == password)
        {
            return iam_error(
                StatusCode::UNAUTHORIZED,
                "The username or password is wrong.",
            );
        }
        let now = Instant::now();
        let token = {
            let mut issued = lock(&self.issued);
            let mut bytes = [0u8; 48];
            issued.rng.fill(&mut bytes[..]);
            let token = format!("MIIsim{}", hex::encode(bytes));
            issued
                .tokens
                .insert(token.clone(), (name.to_string(), now + IAM_TOKEN_TTL));
            token
        };
        let issued_ms = read(&self.store).clock.epoch_ms(now);
        let ttl_ms = i64::try_from(IAM_TOKEN_TTL.as_millis()).unwrap_or(i64::MAX);
        let domain = user["domain"]["name"].as_str().unwrap_or(name);
        let mut reply = Reply::json(
            StatusCode::CREATED,
            &serde_json::json!({"token": {
                "methods": ["password"],
                "issued_at": rfc3339_micros(issued_ms),
                "expires_at": rfc3339_micros(issued_ms.saturating_add(ttl_ms)),
                "user": {"name": name, "id": format!("sim-user-{name}"), "domain": {"name": domain, "id": format!("sim-domain-{domain}")}},
                "project": doc["auth"]["scope"]["project"].clone(),
                "catalog": [],
            }}),
        );
        reply.subject_token = Some(token);
        reply
    }
}

/// IAM's timestamp form: `2024-01-02T03:04:05.123000Z`.
fn rfc3339_micros(epoch_ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(epoch_ms) {
        Ok(ts) => format!(
            "{}.{:06}Z",
            ts.strftime("%Y-%m-%dT%H:%M:%S"),
            ts.subsec_microsecond()
        ),
        Err(_) => String::new(),
    }
}

// ---------------------------------------------------------------- routes

type AppState = State<Arc<Shared>>;

fn route_not_found(request_id: &str) -> Response {
    Reply::gateway(StatusCode::NOT_FOUND, "APIGW.0101", NO_SUCH_API, request_id)
        .into_response(request_id)
}

async fn fallback(State(s): AppState) -> Response {
    route_not_found(&s.next_request_id())
}

async fn project_call(
    s: Arc<Shared>,
    api: Api,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    match path {
        Ok(Path(project)) => s.api_call(api, project, None, req).await,
        Err(_) => route_not_found(&s.next_request_id()),
    }
}

async fn task_call(
    s: Arc<Shared>,
    api: Api,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    match path {
        Ok(Path((project, task_id))) => s.api_call(api, project, Some(task_id), req).await,
        Err(_) => route_not_found(&s.next_request_id()),
    }
}

async fn create_task(
    State(s): AppState,
    p: Result<Path<String>, PathRejection>,
    r: Request,
) -> Response {
    project_call(s, Api::CreateTask, p, r).await
}

async fn list_tasks(
    State(s): AppState,
    p: Result<Path<String>, PathRejection>,
    r: Request,
) -> Response {
    project_call(s, Api::ListTasks, p, r).await
}

async fn statistics(
    State(s): AppState,
    p: Result<Path<String>, PathRejection>,
    r: Request,
) -> Response {
    project_call(s, Api::ShowTaskStatistics, p, r).await
}

async fn clusters(
    State(s): AppState,
    p: Result<Path<String>, PathRejection>,
    r: Request,
) -> Response {
    project_call(s, Api::ListClusters, p, r).await
}

async fn list_resources(
    State(s): AppState,
    p: Result<Path<(String, String)>, PathRejection>,
    r: Request,
) -> Response {
    task_call(s, Api::ListTaskResources, p, r).await
}

async fn retry_task(
    State(s): AppState,
    p: Result<Path<(String, String)>, PathRejection>,
    r: Request,
) -> Response {
    task_call(s, Api::RetryTask, p, r).await
}

async fn iam_tokens(State(s): AppState, r: Request) -> Response {
    if s.iam_users.is_empty() {
        return route_not_found(&s.next_request_id());
    }
    s.api_call(Api::IamToken, String::new(), None, r).await
}

// ---------------------------------------------------------------- control plane

async fn loopback_only(req: Request, next: Next) -> Response {
    let allowed = req
        .extensions()
        .get::<PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback());
    if allowed {
        next.run(req).await
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

fn control_error(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({"error": msg.into()})),
    )
        .into_response()
}

async fn sim_tasks(State(s): AppState) -> Response {
    axum::Json(read(&s.store).created()).into_response()
}

async fn sim_calls(State(s): AppState) -> Response {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((api, status), n) in lock(&s.calls).iter() {
        out.entry(api.clone())
            .or_default()
            .insert(status.to_string(), *n);
    }
    axum::Json(out).into_response()
}

fn fault_list(s: &Shared) -> Vec<FaultWire> {
    lock(&s.faults)
        .list()
        .iter()
        .map(FaultWire::from_spec)
        .collect()
}

async fn sim_faults(State(s): AppState) -> Response {
    axum::Json(fault_list(&s)).into_response()
}

async fn sim_add_faults(State(s): AppState, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<FaultWire>),
        One(FaultWire),
    }
    let wires = match serde_json::from_slice::<OneOrMany>(&body) {
        Ok(OneOrMany::Many(w)) => w,
        Ok(OneOrMany::One(w)) => vec![w],
        Err(e) => return control_error(format!("expected a fault plan or a list of them: {e}")),
    };
    let specs: Result<Vec<FaultSpec>, String> =
        wires.into_iter().map(FaultWire::into_spec).collect();
    match specs {
        Ok(specs) => {
            let mut book = lock(&s.faults);
            for spec in specs {
                book.add(spec.api, spec.plan);
            }
            drop(book);
            axum::Json(fault_list(&s)).into_response()
        }
        Err(e) => control_error(e),
    }
}

async fn sim_clear_faults(State(s): AppState, req: Request) -> Response {
    let query = signer::decode_query(req.uri().query().unwrap_or(""));
    let api = match query.iter().find(|(k, _)| k == "api") {
        Some((_, name)) => match parse_api(name) {
            Ok(api) => Some(api),
            Err(e) => return control_error(e),
        },
        None => None,
    };
    lock(&s.faults).clear(api);
    StatusCode::NO_CONTENT.into_response()
}

async fn sim_fail_cluster(State(s): AppState, Path(id): Path<String>) -> Response {
    write(&s.store).fail_cluster(&id, true);
    StatusCode::NO_CONTENT.into_response()
}

async fn sim_unfail_cluster(State(s): AppState, Path(id): Path<String>) -> Response {
    write(&s.store).fail_cluster(&id, false);
    StatusCode::NO_CONTENT.into_response()
}

fn router(shared: Arc<Shared>) -> Router {
    let control = Router::new()
        .route("/__sim/tasks", get(sim_tasks))
        .route("/__sim/calls", get(sim_calls))
        .route(
            "/__sim/faults",
            get(sim_faults)
                .post(sim_add_faults)
                .delete(sim_clear_faults),
        )
        .route(
            "/__sim/clusters/{id}/fail",
            post(sim_fail_cluster).delete(sim_unfail_cluster),
        )
        .route_layer(axum::middleware::from_fn(loopback_only));
    Router::new()
        .route("/v5/{project_id}/common/task", post(create_task))
        .route(
            "/v5/{project_id}/common/tasks/batch-query",
            post(list_tasks),
        )
        .route(
            "/v5/{project_id}/common/tasks/{task_id}/resources/batch-query",
            post(list_resources),
        )
        .route(
            "/v5/{project_id}/common/tasks/{task_id}/retry",
            put(retry_task),
        )
        .route("/v5/{project_id}/common/task-statistics", get(statistics))
        .route("/v5/{project_id}/kubernetes/clusters", get(clusters))
        .route("/v3/auth/tokens", post(iam_tokens))
        .merge(control)
        .fallback(fallback)
        .method_not_allowed_fallback(fallback)
        .with_state(shared)
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

struct Control {
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
}

/// A running simulator. Clones share the server; [`Simulator::shutdown`] on any clone stops it.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    control: Arc<Control>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Simulator {
    /// Binds `config.listen` and serves on a spawned task.
    pub async fn start(config: SimConfig) -> Result<Simulator, Error> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let shared = Arc::new(Shared::new(&config));
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(accept_loop(listener, router(shared.clone()), stopped));
        Ok(Simulator {
            shared,
            addr,
            control: Arc::new(Control {
                stop,
                server: Mutex::new(Some(server)),
            }),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`; an unspecified listen address (0.0.0.0, ::) is given as loopback so the
    /// URL can be dialled.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    }

    /// Every task created so far, in creation order.
    pub fn created_tasks(&self) -> Vec<CreatedTask> {
        read(&self.shared.store).created()
    }

    /// Call counters by (API name as [`Api::as_str`], HTTP status; 0 = connection dropped).
    pub fn calls(&self) -> BTreeMap<(String, u16), u64> {
        lock(&self.shared.calls).clone()
    }

    /// Calls of one API, with one status or (`None`) any.
    pub fn call_count(&self, api: Api, status: Option<u16>) -> u64 {
        lock(&self.shared.calls)
            .iter()
            .filter(|((name, s), _)| name == api.as_str() && status.is_none_or(|want| want == *s))
            .map(|(_, n)| n)
            .sum()
    }

    /// Replaces the plans of `api` with this one.
    pub fn set_faults(&self, api: Api, faults: FaultPlan) {
        lock(&self.shared.faults).set(api, faults);
    }

    /// Arms one more plan for `api`, tried after those already armed.
    pub fn add_fault(&self, api: Api, fault: FaultPlan) {
        lock(&self.shared.faults).add(api, fault);
    }

    /// The plans still armed.
    pub fn faults(&self) -> Vec<FaultSpec> {
        lock(&self.shared.faults).list()
    }

    /// Disarms every plan.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear(None);
    }

    /// Scans of this cluster started from now on fail.
    pub fn fail_cluster(&self, id: &str) {
        write(&self.shared.store).fail_cluster(id, true);
    }

    /// Scans of this cluster started from now on succeed again.
    pub fn unfail_cluster(&self, id: &str) {
        write(&self.shared.store).fail_cluster(id, false);
    }

    /// Stops accepting, closes idle connections, lets calls in flight finish (bounded), and
    /// returns when the server task has ended.
    pub async fn shutdown(self) {
        self.control.stop.send_replace(true);
        let server = lock(&self.control.server).take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }
}
