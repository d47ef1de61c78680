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
use crate::hss::Api;

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
        .route("/v3/auth/tokens", post(iam_tokens))
        .merge(control::routes())
        .fallback(fallback)
        .method_not_allowed_fallback(fallback)
        .with_state(shared)
}
