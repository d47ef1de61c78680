//! The simulator's control endpoints (`/__sim/...`, loopback callers only): created tasks,
//! call counters, fault plans, failing clusters. Tests and `scripts/` drive the simulator
//! through them when it runs as its own process.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{AppState, PeerAddr, Shared, lock, read, write};
use crate::faults::{FaultSpec, FaultWire, parse_api};
use hss_client::signer;

/// The control routes, refused to callers that are not on loopback.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
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
        .route(
            "/__sim/identity/revoke",
            post(sim_revoke_identity).delete(sim_restore_identity),
        )
        .route("/__sim/identity/issued", get(sim_issued))
        .route_layer(axum::middleware::from_fn(loopback_only))
}

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

async fn sim_revoke_identity(State(s): AppState) -> Response {
    s.identity.revoke(true);
    StatusCode::NO_CONTENT.into_response()
}

async fn sim_restore_identity(State(s): AppState) -> Response {
    s.identity.revoke(false);
    StatusCode::NO_CONTENT.into_response()
}

async fn sim_issued(State(s): AppState) -> Response {
    axum::Json(s.identity.counts()).into_response()
}

async fn sim_unfail_cluster(State(s): AppState, Path(id): Path<String>) -> Response {
    write(&s.store).fail_cluster(&id, false);
    StatusCode::NO_CONTENT.into_response()
}
