//! The HSS v5 HTTP client: signs like the Python SDK, draws from the budget, decodes errors and
//! classifies every failure by what it says about the request's effect.
//!
//! # Outcome classes
//! | class | meaning | examples |
//! |---|---|---|
//! | [`Outcome::Rejected`] | not executed; retrying cannot help | 400 `HSS.*`, 401 signature failure, 403, 404 |
//! | [`Outcome::Retryable`] | not executed; try again later | 429, connection refused, DNS or TLS failure, connect timeout, expired IAM token |
//! | [`Outcome::Ambiguous`] | may have executed | timeout or reset after sending, 5xx, an unreadable 2xx |
//!
//! For CreateTask the difference between the last two is everything: an ambiguous attempt may
//! have created a task and must be resolved by looking it up, never by posting again.
//!
//! A signature failure (`401 APIGW.0301` with AK/SK) is `Rejected`: HSS locks an AK/SK after
//! more than five consecutive bad signatures, so it is never retried automatically; and the
//! client's [`KeyGuard`] then stops every client sharing it from signing with that access
//! key, whatever its secret key ([`Error::KeyGuarded`], `Retryable`: nothing was sent).
//!
//! # Wire format
//! Requests look like the official Python SDK's: `Content-Type: application/json` (also on
//! GET), `X-Project-Id`, `X-Sdk-Date`, `Host` and `User-Agent` all signed; JSON bodies in the
//! SDK's layout (`", "` and `": "` separators, non-ASCII escaped as `\uXXXX`, keys in model
//! order, unset fields omitted); the query string in canonical (sorted) order.

use std::time::Duration;

use bytes::Bytes;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use super::error::{Error, parse_retry_after};
use super::wire::sdk_json;
use super::{
    Api,
    budget::{Budget, BudgetKey, Permit},
    clock::Offset,
    credentials::{Auth, Credentials, Used},
    endpoint::Endpoint,
    error::classify_send,
    guard::KeyGuard,
    limits::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, MAX_OFFSET, MAX_PAGE, MAX_RESPONSE_BYTES},
    model::*,
    signer, text,
    wire::page_query,
};
use crate::transport::http_client;

/// How the client reaches HSS.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoint: Endpoint,
    pub project_id: String,
    /// Sent as `enterprise_project_id` query on every call when set.
    pub enterprise_project_id: Option<String>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Extra trusted CA certificates (PEM bundle), on top of the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl ClientConfig {
    pub fn new(endpoint: Endpoint, project_id: impl Into<String>) -> Self {
        Self {
            endpoint,
            project_id: project_id.into(),
            enterprise_project_id: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            extra_ca_pem: None,
        }
    }
}

/// The HSS client. Cheap to clone.
#[derive(Clone)]
pub struct HssClient {
    http: reqwest::Client,
    config: std::sync::Arc<ClientConfig>,
    credentials: Credentials,
    budget: Budget,
    identity: String,
    observer: Option<std::sync::Arc<dyn CallObserver>>,
    /// HSS's clock relative to ours, from the `Date` of every answer.
    offset: Offset,
    /// Who may sign with which fixed access key ([`KeyGuard`]); shared with `with_guard`.
    guard: KeyGuard,
    /// Who waits first for a token ([`Gate`]); `None`: every caller for itself.
    gate: Option<std::sync::Arc<dyn Gate>>,
}

/// Decides which waiting caller gets the next token of an API (the operator's fair queue
/// across tenants). Without one, callers wait on the budget directly, each for itself.
///
/// Guarantees expected of an implementation: the permit it returns was taken from `budget`
/// for `key`'s source (never made up), so a gate can reorder callers but not exceed the budget.
pub trait Gate: Send + Sync {
    fn acquire(
        &self,
        budget: &Budget,
        key: BudgetKey,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Permit> + Send + 'static>>;
}

/// Sees every call and budget wait (metrics live outside this module).
pub trait CallObserver: Send + Sync {
    /// One HTTP call: `outcome` is `success` or an [`Outcome`] name; `status` when HSS answered.
    fn call(&self, api: Api, outcome: &'static str, latency: Duration, status: Option<u16>);
    /// Time a caller waited for a budget token.
    fn budget_wait(&self, api: Api, waited: Duration);
}

impl std::fmt::Debug for HssClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HssClient")
            .field("endpoint", &self.config.endpoint.to_string())
            .field("project_id", &self.config.project_id)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl HssClient {
    pub fn new(
        config: ClientConfig,
        credentials: Credentials,
        budget: Budget,
    ) -> Result<Self, Error> {
        let http = http_client(&config)?;
        Ok(Self::with_http(http, config, credentials, budget))
    }

    /// Shares an existing reqwest client (connection pool) between several credentials.
    /// The credentials calls are made with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn with_http(
        http: reqwest::Client,
        config: ClientConfig,
        credentials: Credentials,
        budget: Budget,
    ) -> Self {
        let identity = credentials.identity();
        Self {
            http,
            config: std::sync::Arc::new(config),
            credentials,
            budget,
            identity,
            observer: None,
            offset: Offset::default(),
            guard: KeyGuard::default(),
            gate: None,
        }
    }

    /// Shares `guard` with the other clients of the process: a signature HSS refused with an
    /// access key then stops every client from signing with it (see [`crate::guard`]).
    pub fn with_guard(mut self, guard: KeyGuard) -> Self {
        self.guard = guard;
        self
    }

    /// Waits for tokens through `gate` (see [`Gate`]).
    pub fn with_gate(mut self, gate: std::sync::Arc<dyn Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Reports every call and budget wait to `observer`.
    pub fn with_observer(mut self, observer: std::sync::Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// HSS's clock relative to ours, as far as its answers tell.
    pub fn clock_offset(&self) -> &Offset {
        &self.offset
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The bucket that calls to `api` with these credentials draw from.
    pub fn budget_key(&self, api: Api) -> BudgetKey {
        BudgetKey {
            endpoint: self.config.endpoint.to_string(),
            identity: self.identity.clone(),
            api,
        }
    }

    /// Waits for a token for `api`.
    pub async fn acquire(&self, api: Api) -> Permit {
        let started = tokio::time::Instant::now();
        let key = self.budget_key(api);
        let permit = match &self.gate {
            Some(gate) => gate.acquire(&self.budget, key).await,
            None => self.budget.acquire(&key).await,
        };
        if let Some(o) = &self.observer {
            o.budget_wait(api, started.elapsed().max(permit.waited()));
        }
        permit
    }

    /// Takes a token for `api` now, or says how long until one is free.
    pub fn try_acquire(&self, api: Api) -> Result<Permit, Duration> {
        self.budget.try_acquire(&self.budget_key(api))
    }

    // ------------------------------------------------------------------ APIs

    /// CreateTask. Takes a permit the caller already drew, because the submission protocol
    /// takes the token *before* recording its attempt.
    pub async fn create_task(
        &self,
        permit: Permit,
        req: &CreateTaskRequest,
    ) -> Result<CreateTaskResponse, Error> {
        let api = Api::CreateTask;
        req.validate().map_err(|problems| Error::InvalidRequest {
            api,
            reason: problems.join("; "),
        })?;
        let path = format!("/v5/{}/common/task", self.config.project_id);
        let answer = self
            .send(permit, api, "POST", &path, vec![], Some(sdk_json(req)))
            .await?;
        decode(api, answer)
    }

    /// One page of ListTasks. `limit` is clamped to HSS's 10..=200.
    pub async fn list_tasks(
        &self,
        req: &ListTasksRequest,
        offset: u32,
        limit: u32,
    ) -> Result<ListTasksResponse, Error> {
        let api = Api::ListTasks;
        let permit = self.acquire(api).await;
        let path = format!("/v5/{}/common/tasks/batch-query", self.config.project_id);
        let answer = self
            .send(
                permit,
                api,
                "POST",
                &path,
                page_query(offset, limit),
                Some(sdk_json(req)),
            )
            .await?;
        decode(api, answer)
    }

    /// Every task matching `req`, paged at 200, at most `max_pages` calls.
    /// Returns the tasks and whether the listing is complete.
    pub async fn list_all_tasks(
        &self,
        req: &ListTasksRequest,
        max_pages: u32,
    ) -> Result<(Vec<TaskInfo>, bool), Error> {
        let mut tasks = Vec::new();
        let mut offset = 0u32;
        for _ in 0..max_pages.max(1) {
            let page = self.list_tasks(req, offset, MAX_PAGE).await?;
            let got = page.data_list.len();
            tasks.extend(page.data_list);
            let total = usize::try_from(page.total_num.max(0)).unwrap_or(usize::MAX);
            if got == 0 || tasks.len() >= total {
                return Ok((tasks, true));
            }
            offset = offset.saturating_add(MAX_PAGE);
            if offset > MAX_OFFSET {
                break;
            }
        }
        Ok((tasks, false))
    }

    /// One page of ListTaskResources.
    pub async fn list_task_resources(
        &self,
        task_id: &str,
        req: &ListTaskResourcesRequest,
        offset: u32,
        limit: u32,
    ) -> Result<ListTaskResourcesResponse, Error> {
        let api = Api::ListTaskResources;
        let permit = self.acquire(api).await;
        let path = format!(
            "/v5/{}/common/tasks/{task_id}/resources/batch-query",
            self.config.project_id
        );
        let answer = self
            .send(
                permit,
                api,
                "POST",
                &path,
                page_query(offset, limit),
                Some(sdk_json(req)),
            )
            .await?;
        decode(api, answer)
    }

    /// RetryTask (cluster_scan only). HSS answers with an empty body.
    pub async fn retry_task(&self, task_id: &str, req: &RetryTaskRequest) -> Result<(), Error> {
        let api = Api::RetryTask;
        req.validate().map_err(|problems| Error::InvalidRequest {
            api,
            reason: problems.join("; "),
        })?;
        let permit = self.acquire(api).await;
        let path = format!(
            "/v5/{}/common/tasks/{task_id}/retry",
            self.config.project_id
        );
        self.send(permit, api, "PUT", &path, vec![], Some(sdk_json(req)))
            .await?;
        Ok(())
    }

    /// ShowTaskStatistics for one task type.
    pub async fn show_task_statistics(&self, task_type: TaskType) -> Result<TaskStatistics, Error> {
        let api = Api::ShowTaskStatistics;
        let permit = self.acquire(api).await;
        let path = format!("/v5/{}/common/task-statistics", self.config.project_id);
        let query = vec![("task_type".to_string(), task_type.as_str().to_string())];
        let answer = self.send(permit, api, "GET", &path, query, None).await?;
        decode(api, answer)
    }

    /// ListKubernetesClusterDetails: the way to check cluster ids.
    pub async fn list_clusters(
        &self,
        offset: u32,
        limit: u32,
        cluster_name: Option<&str>,
    ) -> Result<ListClustersResponse, Error> {
        let api = Api::ListClusters;
        let permit = self.acquire(api).await;
        let path = format!("/v5/{}/kubernetes/clusters", self.config.project_id);
        let mut query = page_query(offset, limit);
        if let Some(name) = cluster_name {
            query.push(("cluster_name".into(), name.into()));
        }
        let answer = self.send(permit, api, "GET", &path, query, None).await?;
        decode(api, answer)
    }

    /// A GET of `api` at `path`: waits for a budget token, sends, decodes the JSON answer.
    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        api: Api,
        path: &str,
        query: Vec<(String, String)>,
    ) -> Result<T, Error> {
        let permit = self.acquire(api).await;
        let answer = self.send(permit, api, "GET", path, query, None).await?;
        decode(api, answer)
    }

    // ------------------------------------------------------------------ transport

    /// Signs and sends one request, spending `permit`, and reports it to the observer.
    async fn send(
        &self,
        permit: Permit,
        api: Api,
        method: &str,
        path: &str,
        query: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, Error> {
        let started = tokio::time::Instant::now();
        let result = self
            .send_inner(permit, api, method, path, query, body)
            .await;
        if let Some(o) = &self.observer {
            let (outcome, status) = match &result {
                Ok(a) => ("success", Some(a.status)),
                Err(e) => (e.outcome().as_str(), e.status()),
            };
            o.call(api, outcome, started.elapsed(), status);
        }
        result
    }

    /// Signs and sends one request. Returns a 2xx answer.
    async fn send_inner(
        &self,
        permit: Permit,
        api: Api,
        method: &str,
        path: &str,
        mut query: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, Error> {
        debug_assert_eq!(permit.key().api, api, "permit drawn for another API");
        drop(permit);
        if let Some(ep) = &self.config.enterprise_project_id {
            query.push(("enterprise_project_id".into(), ep.clone()));
        }
        let (auth, used) = self
            .credentials
            .auth()
            .await
            .map_err(|source| Error::Credentials { api, source })?;
        // Fixed keys only: a source's keys change with every fetch, and its 401s are its own.
        let pass = match (&auth, used) {
            (Auth::Sign { ak, sk, .. }, Used::Fixed) => Some(
                self.guard
                    .admit(ak, sk)
                    .await
                    .map_err(|source| Error::KeyGuarded { api, source })?,
            ),
            _ => None,
        };
        let host = self.config.endpoint.host_header();
        let mut headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (
                "User-Agent".to_string(),
                concat!("hss-operator/", env!("CARGO_PKG_VERSION")).to_string(),
            ),
            ("X-Project-Id".to_string(), self.config.project_id.clone()),
            (
                signer::HEADER_DATE.to_string(),
                signer::format_sdk_date(jiff::Timestamp::now()),
            ),
            ("Host".to_string(), host),
        ];
        let body = body.unwrap_or_default();
        match &auth {
            Auth::Sign {
                ak,
                sk,
                security_token,
            } => {
                if let Some(token) = security_token {
                    headers.push(("X-Security-Token".into(), token.expose_secret().to_string()));
                }
                let mut signable = signer::SignableRequest {
                    method: method.to_string(),
                    path: path.to_string(),
                    query: query.clone(),
                    headers,
                    body: body.clone(),
                };
                signer::sign(&mut signable, ak, sk.expose_secret().as_bytes());
                headers = signable.headers;
            }
            Auth::Token(token) => {
                headers.push(("X-Auth-Token".into(), token.expose_secret().to_string()));
            }
        }
        let url = self
            .config
            .endpoint
            .url(&signer::encode_path(path), &signer::encode_query(&query));
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| Error::InvalidRequest {
                api,
                reason: format!("bad method {method}"),
            })?;
        let mut request = self.http.request(method, url);
        for (name, value) in &headers {
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                Error::InvalidRequest {
                    api,
                    reason: format!("header {name} has a value that cannot be sent"),
                }
            })?;
            if name.eq_ignore_ascii_case("authorization")
                || name.eq_ignore_ascii_case("x-auth-token")
                || name.eq_ignore_ascii_case("x-security-token")
            {
                value.set_sensitive(true);
            }
            request = request.header(name.as_str(), value);
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        self.budget.pace(&self.budget_key(api)).await;
        let sent_ms = jiff::Timestamp::now().as_millisecond();
        let resp = request
            .send()
            .await
            .map_err(|source| classify_send(api, source))?;
        if let Some(date) = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
        {
            self.offset
                .observe(date, sent_ms, jiff::Timestamp::now().as_millisecond());
        }
        let status = resp.status().as_u16();
        if let Some(pass) = pass {
            pass.answered(status);
        }
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| text::bounded(v, text::REQUEST_ID));
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
        let bytes = read_limited(api, resp).await?;
        if (200..300).contains(&status) {
            return Ok(Answer {
                status,
                request_id,
                body: bytes,
            });
        }
        let err_body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        if status == 429 {
            self.budget.throttled(&self.budget_key(api), retry_after);
        }
        let refreshable = status == 401 && self.credentials.refused(used).await;
        // What a server says is bounded here, before it can reach status, Events or logs.
        Err(Error::Service {
            api,
            status,
            code: text::bounded_opt(err_body.error_code.as_deref(), text::CODE),
            message: text::bounded_opt(err_body.error_msg.as_deref(), text::MESSAGE),
            request_id: request_id
                .or_else(|| text::bounded_opt(err_body.request_id.as_deref(), text::REQUEST_ID)),
            retry_after,
            refreshable,
        })
    }
}

async fn read_limited(api: Api, mut resp: reqwest::Response) -> Result<Bytes, Error> {
    if resp
        .content_length()
        .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
    {
        return Err(Error::TooLarge { api });
    }
    let mut buf = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|source| {
            if source.is_timeout() {
                Error::Timeout { api, source }
            } else {
                Error::Transport { api, source }
            }
        })?;
        let Some(chunk) = chunk else { break };
        if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Error::TooLarge { api });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// A 2xx answer.
struct Answer {
    status: u16,
    request_id: Option<String>,
    body: Bytes,
}

fn decode<T: DeserializeOwned>(api: Api, answer: Answer) -> Result<T, Error> {
    serde_json::from_slice(&answer.body).map_err(|source| Error::Decode {
        api,
        status: answer.status,
        request_id: answer.request_id,
        source,
    })
}
