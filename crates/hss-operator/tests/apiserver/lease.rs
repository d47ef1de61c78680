//! Leader election against a real kube-apiserver (scripts/control-plane.sh): two replicas on
//! one Lease, crash failover, graceful handover, and a partitioned leader stepping down before
//! its lease can expire for the other replica.
//!
//! Real time (the API server's clock is real): durations are short (3 s lease, 1 s renewal)
//! and every wait is an awaited condition with a timeout.

use std::{net::SocketAddr, time::Duration};

use hss_operator::controller_runtime::lease::{Leadership, LeaseConfig};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::{sync::watch, time::Instant};

const DURATION: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(1);
/// Scheduling and API latency allowance on top of the lease timing.
const SLACK: Duration = Duration::from_millis(1500);

fn config(ns: &str, lease: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        duration: DURATION,
        renew_every: RENEW,
        ..LeaseConfig::new(ns, lease, identity)
    }
}

/// Polls `cond` every 10 ms until it holds; panics after `within`.
async fn until(within: Duration, what: &str, cond: impl Fn() -> bool) {
    tokio::time::timeout(within, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} not reached within {within:?}"));
}

/// Waits until `l` reports `want` through `changed()`.
async fn reports(l: &mut Leadership, want: bool, within: Duration, what: &str) {
    tokio::time::timeout(within, async { while l.changed().await != want {} })
        .await
        .unwrap_or_else(|_| panic!("{what} not reported within {within:?}"));
}

async fn holder(client: &Client, ns: &str, name: &str) -> (Option<String>, i32) {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("read the Lease");
    let spec = lease.spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

/// Waits until the holder has renewed the Lease once more (both electors are then in their
/// steady rhythm).
async fn renewed(client: &Client, ns: &str, name: &str) {
    let api = Api::<Lease>::namespaced(client.clone(), ns);
    let renew_time = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let first = renew_time(api.get(name).await.expect("read the Lease"));
    tokio::time::timeout(RENEW + SLACK, async {
        while renew_time(api.get(name).await.expect("read the Lease")) == first {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the leader renews within its interval");
}

/// Two replicas on one Lease; returns them as (leader, follower) once one leads.
async fn elect(client: &Client, ns: &str, lease: &str) -> (Leadership, Leadership) {
    let a = Leadership::start(client.clone(), config(ns, lease, "replica-a"));
    let b = Leadership::start(client.clone(), config(ns, lease, "replica-b"));
    until(DURATION, "a leader elected", || {
        a.is_leader() || b.is_leader()
    })
    .await;
    assert!(
        !(a.is_leader() && b.is_leader()),
        "exactly one replica leads"
    );
    if a.is_leader() { (a, b) } else { (b, a) }
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over_after_a_crash() {
    let client = hss_testkit::cluster::admin().await;
    let ns = hss_testkit::cluster::namespace(&client, "lease").await;
    let (leader, mut follower) = elect(&client, &ns, "crash").await;
    let (first, transitions) = holder(&client, &ns, "crash").await;
    assert!(first.is_some());
    assert!(leader.confirm().await.expect("confirm reads the Lease"));
    assert!(
        !follower.confirm().await.expect("confirm"),
        "the follower does not hold the lease"
    );

    // Across more than one renewal the lease stays with the same replica, and only with it.
    let steady = Instant::now() + RENEW + RENEW / 2;
    while Instant::now() < steady {
        assert!(leader.is_leader(), "the leader keeps renewing");
        assert!(!follower.is_leader(), "never two leaders");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(holder(&client, &ns, "crash").await.0, first);

    // Crash: the elector stops without releasing.
    drop(leader);
    let crashed = Instant::now();
    reports(&mut follower, true, DURATION + RENEW + SLACK, "takeover").await;
    let took = crashed.elapsed();
    eprintln!("crash takeover after {took:?}");
    // The crashed leader renewed at most one interval before the crash; its record had to look
    // unchanged for a full duration before the follower could take it.
    assert!(
        took >= DURATION - RENEW - Duration::from_millis(100),
        "took over too early: {took:?}"
    );
    assert!(follower.confirm().await.expect("confirm"));
    let (now, after) = holder(&client, &ns, "crash").await;
    assert_ne!(now, first);
    assert_eq!(after, transitions + 1, "a takeover is a transition");
    follower.release().await;
}

#[tokio::test]
async fn release_hands_the_lease_over_at_once() {
    let client = hss_testkit::cluster::admin().await;
    let ns = hss_testkit::cluster::namespace(&client, "lease").await;
    let (leader, mut follower) = elect(&client, &ns, "handover").await;
    let observer = leader.clone();
    renewed(&client, &ns, "handover").await;

    leader.release().await;
    let released = Instant::now();
    assert!(!observer.is_leader(), "released means not leader, at once");
    assert!(!observer.confirm().await.expect("no request needed"));
    reports(&mut follower, true, RENEW + SLACK, "handover").await;
    eprintln!("handover after {:?}", released.elapsed());
    assert!(
        released.elapsed() < DURATION,
        "the successor did not wait for expiry: {:?}",
        released.elapsed()
    );
    let (now, _) = holder(&client, &ns, "handover").await;
    assert!(now.is_some_and(|h| h.starts_with("replica-")));
    assert!(
        !observer.is_leader(),
        "the released replica's elector is stopped"
    );
    follower.release().await;
}

#[tokio::test]
async fn a_partitioned_leader_steps_down_before_its_lease_expires_for_others() {
    let client = hss_testkit::cluster::admin().await;
    let ns = hss_testkit::cluster::namespace(&client, "lease").await;
    let proxy = Proxy::start().await;
    let mut cut_off = Leadership::start(proxy.client().await, config(&ns, "partition", "cut-off"));
    until(DURATION, "the proxied replica leads", || {
        cut_off.is_leader()
    })
    .await;
    let mut other = Leadership::start(client.clone(), config(&ns, "partition", "other"));

    proxy.cut();
    let cut = Instant::now();
    // A confirm during the partition does not hang: it answers false by the deadline.
    let confirmed = tokio::time::timeout(DURATION, cut_off.confirm()).await;
    assert!(
        matches!(confirmed, Ok(Ok(false))),
        "confirm during a partition: {confirmed:?}"
    );
    reports(&mut cut_off, false, DURATION, "step-down").await;
    let stepped_down = Instant::now();
    assert!(!cut_off.is_leader());
    reports(&mut other, true, DURATION + RENEW + SLACK, "takeover").await;
    let took_over = Instant::now();
    eprintln!(
        "partition: stepped down {:?} after the cut, successor {:?} later",
        stepped_down - cut,
        took_over - stepped_down
    );

    assert!(
        stepped_down - cut <= Duration::from_secs(2) + Duration::from_millis(500),
        "stepped down {:?} after the cut; the renew deadline is 2 s",
        stepped_down - cut
    );
    assert!(
        took_over - stepped_down >= Duration::from_millis(500),
        "the old leader must stop well before the new one starts: {:?} apart",
        took_over - stepped_down
    );
    assert_eq!(
        holder(&client, &ns, "partition").await.0.as_deref(),
        Some("other")
    );
    other.release().await;
}

/// A TCP proxy to the API server that can be cut: after [`Proxy::cut`] it forwards nothing,
/// holding every connection open, so requests hang (the worst kind of partition).
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let kc = Kubeconfig::read_from(&hss_testkit::cluster::control_plane().kubeconfig)
            .expect("kubeconfig");
        let server = kc.clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.clone())
            .expect("server URL");
        let upstream: SocketAddr = server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .expect("server is https://IP:PORT");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (cut, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = rx.clone();
                conns.spawn(async move {
                    if *rx.borrow() {
                        // Cut: accept, then never answer.
                        return std::future::pending::<()>().await;
                    }
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let cut = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => false,
                        r = rx.wait_for(|cut| *cut) => r.is_ok(),
                    };
                    if cut {
                        // Keep both ends open and silent.
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Self { addr, cut, task }
    }

    async fn client(&self) -> Client {
        let kc = Kubeconfig::read_from(&hss_testkit::cluster::control_plane().kubeconfig)
            .expect("kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        // The serving certificate is for IP 127.0.0.1, which the proxy shares.
        config.cluster_url = format!("https://{}", self.addr).parse().expect("URL");
        Client::try_from(config).expect("client")
    }

    fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
