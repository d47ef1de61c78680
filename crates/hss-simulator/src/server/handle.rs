//! The running simulator as a test or the CLI holds it: start, address, what it saw, faults
//! and failing clusters set in-process, shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Shared, accept_loop, lock, read, router, write};
use crate::faults::{FaultPlan, FaultSpec};
use crate::state::CreatedTask;
use crate::{Error, SimConfig};
use hss_client::Api;
use hss_client::results::{AffectedResource, ClusterReport, ClusterRisk, IacRisk, RiskType};

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

    /// Every risky item of `risk_type` HSS holds for `project` now (what ListClusterRisks
    /// pages through).
    pub fn cluster_risks(&self, project: &str, risk_type: RiskType) -> Vec<ClusterRisk> {
        read(&self.shared.store).all_cluster_risks(project, risk_type, tokio::time::Instant::now())
    }

    /// Every resource the cluster risk `risk_id` of `project` affects now, in `cluster_id` or
    /// every cluster (what ListClusterRiskAffectResources pages through, unfiltered).
    pub fn affected_resources(
        &self,
        project: &str,
        risk_id: &str,
        cluster_id: Option<&str>,
    ) -> Vec<AffectedResource> {
        read(&self.shared.store).all_affected_resources(
            project,
            risk_id,
            cluster_id,
            tokio::time::Instant::now(),
        )
    }

    /// Every risk HSS holds for IaC file `file_id` of `project` now.
    pub fn iac_file_risks(&self, project: &str, file_id: &str) -> Vec<IacRisk> {
        read(&self.shared.store).all_iac_file_risks(project, file_id, tokio::time::Instant::now())
    }

    /// Every security-check report HSS holds for `project` now.
    pub fn cluster_reports(&self, project: &str) -> Vec<ClusterReport> {
        read(&self.shared.store).all_cluster_reports(project, tokio::time::Instant::now())
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

    /// Every successful risk scan finds exactly `count` risk items from now on (`None`: 0 to
    /// 6, by the hash), for tests of many findings.
    pub fn set_risks_per_scan(&self, count: Option<usize>) {
        write(&self.shared.store).risks_per_scan = count;
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
    /// Refuses every identity source and forgets the temporary credentials issued (`false`
    /// lets the sources answer again).
    pub fn revoke_identity(&self, revoked: bool) {
        self.shared.identity.revoke(revoked);
    }

    /// Temporary credentials issued so far, per source (`pod-identity`, `metadata`,
    /// `federation`, `oidc`).
    pub fn issued_credentials(&self) -> BTreeMap<&'static str, u64> {
        self.shared.identity.counts()
    }

    pub async fn shutdown(self) {
        self.control.stop.send_replace(true);
        let server = lock(&self.control.server).take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }
}
