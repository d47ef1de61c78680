//! The admin server: `/livez` and `/readyz`, plain HTTP on their own port (`--admin-listen`),
//! for the kubelet. `/metrics` is not here: it is served over HTTPS behind Kubernetes auth by
//! [`super::secure_metrics`] (`404` on this port).
//!
//! - `/livez`: `200 ok` while the process serves HTTP at all. It checks nothing else, so a
//!   slow API server or HSS never gets the pod restarted.
//! - `/readyz`: `200 ok` once the watches have delivered their first state
//!   ([`Readiness::set_synced`]), or, with leader election, once this replica has passed its
//!   start-up checks and joined the election as a standby ([`Readiness::set_standby`]): a
//!   standby is ready, so `helm install --wait` and rolling updates (`maxUnavailable: 0`)
//!   finish; leadership is the `hss_operator_leader` gauge and the Lease's holder. Only with
//!   [`Readiness::set_leader_required`] (`--ready-requires-lease`) is readiness also the lease.
//!   Otherwise `503` with a one-line reason.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to serve the admin endpoints")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Serve(_) => "admin_serve",
        }
    }
}

#[derive(Debug, Default)]
struct Flags {
    synced: AtomicBool,
    standby: AtomicBool,
    leader: AtomicBool,
    leader_required: AtomicBool,
}

/// What `/readyz` reports. Cheap to clone; clones share the flags.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    flags: Arc<Flags>,
}

impl Readiness {
    /// The watches delivered their first state. Never goes back.
    pub fn set_synced(&self) {
        self.flags.synced.store(true, Ordering::Release);
    }

    /// This replica passed its start-up checks and campaigns for the lease: ready to take
    /// over. Never goes back.
    pub fn set_standby(&self) {
        self.flags.standby.store(true, Ordering::Release);
    }

    pub fn set_leader(&self, leader: bool) {
        self.flags.leader.store(leader, Ordering::Release);
    }

    /// Whether readiness also needs the lease (leader election on).
    pub fn set_leader_required(&self, required: bool) {
        self.flags
            .leader_required
            .store(required, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    fn not_ready_reason(&self) -> Option<&'static str> {
        if !self.flags.synced.load(Ordering::Acquire) && !self.flags.standby.load(Ordering::Acquire)
        {
            Some("caches not synced yet")
        } else if self.flags.leader_required.load(Ordering::Acquire)
            && !self.flags.leader.load(Ordering::Acquire)
        {
            Some("not the leader")
        } else {
            None
        }
    }
}

/// The routes, for serving on a listener of the caller's choice.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin server listening");
    }
    axum::serve(listener, router(readiness))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve)
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    match readiness.not_ready_reason() {
        None => (StatusCode::OK, "ok").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// The `hss_operator_leader` gauge: 1 while this replica holds the leader lease (or leader
/// election is off), else 0. `operator::run` sets it as the controllers start and stop.
#[derive(Debug, Default)]
pub struct LeaderMetrics {
    leader: prometheus_client::metrics::gauge::Gauge,
}

impl LeaderMetrics {
    /// Registers the gauge in `registry` (whose prefix is `hss_operator`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (or leader election is off), else 0",
            self.leader.clone(),
        );
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_sync_and_then_the_lease_only_when_required() {
        // (synced, standby, leader_required, leader, ready, reason)
        let cases = [
            (false, false, false, false, false, "nothing synced yet"),
            (
                false,
                false,
                true,
                true,
                false,
                "leading does not replace syncing",
            ),
            (
                true,
                false,
                false,
                false,
                true,
                "election off: synced is enough",
            ),
            (
                false,
                true,
                false,
                false,
                true,
                "HA: a checked standby is ready",
            ),
            (true, true, false, true, true, "HA: the leader stays ready"),
            (
                true,
                true,
                true,
                false,
                false,
                "--ready-requires-lease: a standby is not ready",
            ),
            (
                true,
                false,
                true,
                true,
                true,
                "--ready-requires-lease: synced leader",
            ),
        ];
        for (synced, standby, required, leader, ready, why) in cases {
            let r = Readiness::default();
            if synced {
                r.set_synced();
            }
            if standby {
                r.set_standby();
            }
            r.set_leader_required(required);
            r.set_leader(leader);
            assert_eq!(r.is_ready(), ready, "{why}");
        }
    }

    #[test]
    fn clones_share_state() {
        let r = Readiness::default();
        let c = r.clone();
        c.set_synced();
        assert!(r.is_ready());
    }
}
