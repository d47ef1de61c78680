//! Two `hss-operator run` processes with leader election against one API server: only the
//! leader writes; when it is killed the other takes over within the lease duration; every
//! object still ends with exactly one HSS task.

use std::time::Duration;

use hss_operator::crd::{ClusterScanTask, Phase};
use hss_simulator::{SimConfig, Simulator};
use hss_testkit::cluster::*;
use k8s_openapi::api::{coordination::v1::Lease, events::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};

/// SIGKILLed when dropped: a crash, not a graceful stop. With its metrics port.
struct Proc(hss_testkit::Child, u16);

impl Drop for Proc {
    fn drop(&mut self) {
        self.0.kill();
    }
}

fn operator(name: &str, ns: &str, sim: &str, admin_port: u16) -> Proc {
    let election = [
        "--leader-election",
        "--lease-namespace",
        ns,
        "--lease-duration",
        "3s",
    ];
    operator_with(name, ns, sim, admin_port, &election)
}

fn operator_with(name: &str, ns: &str, sim: &str, admin_port: u16, extra: &[&str]) -> Proc {
    let log = repo().join(format!("target/leader-{name}.log"));
    let _ = std::fs::remove_file(&log);
    let process = hss_testkit::OperatorProcess::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_hss-operator")),
        &control_plane().kubeconfig,
        ns,
        sim,
        &log,
    )
    .args([
        "--poll-interval",
        "1s",
        "--budget-per-minute",
        "0",
        "--lookup-settle",
        "2s",
    ])
    .args(extra)
    .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
    .env("POD_NAME", name)
    .env("RUST_LOG", "info,hss_operator=debug");
    let child = process.spawn().expect("start hss-operator run");
    Proc(child, process.metrics_port())
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("hss-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

async fn await_holder(leases: &Api<Lease>, want: impl Fn(&str) -> bool, secs: u64) -> String {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            if let Some(h) = holder(leases).await.filter(|h| want(h)) {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("lease holder in time")
}

async fn readyz(port: u16) -> u16 {
    match reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// `hss_operator_leader` from the replica's /metrics (on its metrics port).
async fn leader_gauge(proc: &Proc) -> Option<u8> {
    let text = hss_testkit::metrics::try_metrics(proc.1).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("hss_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
}

async fn await_ready(port: u16, want: u16) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while readyz(port).await != want {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("readyz on {port} never answered {want}"));
}

#[tokio::test]
async fn only_the_leader_writes_and_a_killed_leader_is_replaced_within_the_lease_duration() {
    let client = admin().await;
    let ns = namespace(&client, "leader").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let ports = [free_port(), free_port()];
    let mut procs = vec![
        Some(operator("op-a", &ns, &sim.base_url(), ports[0])),
        Some(operator("op-b", &ns, &sim.base_url(), ports[1])),
    ];
    let first = await_holder(&leases, |_| true, 30).await;
    let (leader, standby) = if first == "op-a" { (0, 1) } else { (1, 0) };
    await_ready(ports[leader], 200).await;
    // A standby is ready too (rollouts must finish); leadership is the gauge.
    await_ready(ports[standby], 200).await;
    let gauge = |i: usize| leader_gauge(procs[i].as_ref().expect("running"));
    assert_eq!(gauge(leader).await, Some(1));
    assert_eq!(gauge(standby).await, Some(0));

    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &cluster_scan(&format!("before-{i}")),
        )
        .await
        .expect("create");
    }
    // Kill the leader as soon as the first task id is written, mid-way through the batch.
    wait_for(&api, "before-0", 30, |o| {
        o.status.as_ref().is_some_and(|s| s.task_id.is_some())
    })
    .await;
    let killed = tokio::time::Instant::now();
    drop(procs[leader].take());
    let next = await_holder(&leases, |h| h != first, 15).await;
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(3 + 3),
        "takeover took {takeover:?} with a 3 s lease"
    );
    await_ready(ports[standby], 200).await;

    for i in 0..5 {
        api.create(&PostParams::default(), &cluster_scan(&format!("after-{i}")))
            .await
            .expect("create");
    }
    for name in (0..5).flat_map(|i| [format!("before-{i}"), format!("after-{i}")]) {
        wait_for(&api, &name, 90, |o| phase(o) == Some(Phase::Succeeded)).await;
    }

    // Exactly one task per object, across the crash.
    let objects = api.list(&ListParams::default()).await.expect("list").items;
    let mut named: Vec<String> = objects
        .iter()
        .filter_map(|o| o.status.as_ref()?.task_id.clone())
        .collect();
    named.sort();
    let mut created: Vec<String> = sim.created_tasks().into_iter().map(|t| t.task_id).collect();
    created.sort();
    assert_eq!(named.len(), 10);
    assert_eq!(created, named, "one HSS task per object");

    // Only a leader wrote: Events for the later objects come from the new leader alone.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    for e in events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
    {
        let regarding = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        if regarding.starts_with("after-") {
            assert_eq!(
                e.reporting_instance.as_deref(),
                Some(next.as_str()),
                "{}",
                e.name_any()
            );
        }
    }
    drop(procs);
}

#[tokio::test]
async fn a_single_process_without_election_serves_admin_endpoints_and_reconciles() {
    let client = admin().await;
    let ns = namespace(&client, "single").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let port = free_port();
    let op = operator_with("solo", &ns, &sim.base_url(), port, &[]);
    await_ready(port, 200).await;
    let livez = reqwest::get(format!("http://127.0.0.1:{port}/livez"))
        .await
        .expect("livez");
    assert_eq!(livez.status().as_u16(), 200);
    api.create(&PostParams::default(), &cluster_scan("solo-scan"))
        .await
        .expect("create");
    wait_for(&api, "solo-scan", 60, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    let metrics = hss_testkit::metrics::metrics(op.1).await;
    for family in [
        "hss_operator_reconciles_total",
        "hss_operator_hss_calls_total",
        "hss_operator_leader",
    ] {
        assert!(metrics.contains(family), "{family} missing from /metrics");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hss_operator_hss_calls_total{")
                && l.contains("CreateTask")
                && l.contains("success")
                && !l.ends_with(" 0")),
        "the CreateTask call was counted:\n{metrics}"
    );
    assert!(!metrics.contains("solo-scan"), "no object names in metrics");
    // The namespace appears only as the findings series' owner label.
    for line in metrics.lines().filter(|l| l.contains(&ns)) {
        assert!(
            line.contains(&format!("namespace=\"{ns}\""))
                && (line.contains("findings") || line.contains("cluster_last_scan")),
            "the namespace only labels findings: {line}"
        );
    }
}
