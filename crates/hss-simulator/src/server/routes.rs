//! The HSS routes: one axum handler per API, each handing the call to [`Shared::api_call`],
//! and the router with the control plane merged in.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};

use super::{NO_SUCH_API, Reply, Shared, control};
use hss_client::Api;

// ---------------------------------------------------------------- routes

pub(super) type AppState = State<Arc<Shared>>;

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

async fn cluster_risks(
    State(s): AppState,
    p: Result<Path<String>, PathRejection>,
    r: Request,
) -> Response {
    project_call(s, Api::ListClusterRisks, p, r).await
}

async fn cluster_reports(
    State(s): AppState,
    p: Result<Path<String>, PathRejection>,
    r: Request,
) -> Response {
    project_call(s, Api::ListClusterReports, p, r).await
}

async fn iac_file_risks(
    State(s): AppState,
    p: Result<Path<String>, PathRejection>,
    r: Request,
) -> Response {
    project_call(s, Api::ListIacFileRisks, p, r).await
}

async fn affected_resources(
    State(s): AppState,
    p: Result<Path<(String, String)>, PathRejection>,
    r: Request,
) -> Response {
    task_call(s, Api::ListClusterRiskAffectResources, p, r).await
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

// ---------------------------------------------------------------- identity

/// The identity endpoints answer directly: no HSS authentication, throttling or faults.
async fn identity_call(
    s: Arc<Shared>,
    req: Request,
    answer: impl FnOnce(&Shared, &axum::http::HeaderMap, &[u8]) -> Reply,
) -> Response {
    let request_id = s.next_request_id();
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Reply::raw(StatusCode::PAYLOAD_TOO_LARGE, Vec::new()).into_response(&request_id);
    };
    answer(&s, &parts.headers, &body).into_response(&request_id)
}

async fn pod_identity(State(s): AppState, r: Request) -> Response {
    identity_call(s, r, |s, h, _| s.pod_identity(h)).await
}

async fn metadata_token(State(s): AppState, r: Request) -> Response {
    identity_call(s, r, |s, h, _| s.metadata_token(h)).await
}

async fn metadata_securitykey(State(s): AppState, r: Request) -> Response {
    identity_call(s, r, |s, h, _| s.metadata_securitykey(h)).await
}

async fn federation_token(State(s): AppState, r: Request) -> Response {
    identity_call(s, r, |s, h, b| s.federation_token(h, b)).await
}

async fn federation_securitytokens(State(s): AppState, r: Request) -> Response {
    identity_call(s, r, |s, _, b| s.federation_securitytokens(b)).await
}

async fn assume_with_oidc(State(s): AppState, r: Request) -> Response {
    identity_call(s, r, |s, _, b| s.assume_with_oidc(b)).await
}

// ---------------------------------------------------------------- control plane

pub(super) fn router(shared: Arc<Shared>) -> Router {
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
        .route(
            "/v5/{project_id}/container/cluster/risks",
            get(cluster_risks),
        )
        .route(
            "/v5/{project_id}/security-check/containers/cluster-reports",
            get(cluster_reports),
        )
        .route(
            "/v5/{project_id}/container/iac/file/risks",
            get(iac_file_risks),
        )
        .route(
            "/v5/{project_id}/container/cluster/risk/{risk_id}/affected-resources",
            get(affected_resources),
        )
        .route("/v3/auth/tokens", post(iam_tokens))
        .route(super::identity::POD_IDENTITY_PATH, post(pod_identity))
        .route("/meta-data/latest/api/token", put(metadata_token))
        .route("/openstack/latest/securitykey", get(metadata_securitykey))
        .route("/v3.0/OS-AUTH/id-token/tokens", post(federation_token))
        .route(
            "/v3.0/OS-CREDENTIAL/securitytokens",
            post(federation_securitytokens),
        )
        .route("/v5/agencies/assume-with-oidc", post(assume_with_oidc))
        .merge(control::routes())
        .fallback(fallback)
        .method_not_allowed_fallback(fallback)
        .with_state(shared)
}
