//! A ClusterScanTask cannot send the operator's credentials where its author chose: an
//! endpoint, region or project override without a Secret of its own is refused before anything
//! is sent, with a clear condition and Event, and other scans go on.

mod support;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use hss_operator::{
    crd::{ClusterScanTask, Phase},
    simulator::{SimConfig, Simulator},
};
use kube::{Api, api::PostParams};
use support::*;

/// A loopback listener that counts connections: the "host of the tenant's choosing".
async fn trap() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, hits)
}

fn failed_reason(o: &ClusterScanTask) -> Option<String> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| c.reason.clone())
}

#[tokio::test]
async fn overrides_with_the_operators_credentials_are_refused_and_send_nothing() {
    let client = admin().await;
    let ns = namespace(&client, "tenant").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let (trap_url, trap_hits) = trap().await;
    let op = Operator::start(client.clone(), run_args(&sim.base_url(), &ns, &[]), None);
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);

    // (name, override, reason)
    type Override = fn(&mut ClusterScanTask, &str);
    let attacks: [(&str, Override, &str); 4] = [
        (
            "to-my-host",
            |o, url| o.spec.endpoint = Some(url.into()),
            "EndpointNotAllowed",
        ),
        (
            "to-a-region",
            |o, _| o.spec.region = Some("ap-southeast-1".into()),
            "EndpointNotAllowed",
        ),
        (
            "to-a-project",
            |o, _| o.spec.project_id = Some("victim".into()),
            "ProjectNotAllowed",
        ),
        (
            "to-all-eps",
            |o, _| o.spec.enterprise_project_id = Some("all_granted_eps".into()),
            "ProjectNotAllowed",
        ),
    ];
    for (name, attack, _) in &attacks {
        let mut obj = cluster_scan(name);
        attack(&mut obj, &trap_url);
        api.create(&PostParams::default(), &obj)
            .await
            .expect("create");
    }
    // Plain http is refused at admission, with the rule in the message.
    let mut clear = cluster_scan("in-clear");
    clear.spec.endpoint = Some(trap_url.replacen("https://", "http://", 1));
    match api.create(&PostParams::default(), &clear).await {
        Err(kube::Error::Api(e)) if e.code == 422 => {
            assert!(e.message.contains("spec.endpoint"), "{e:?}")
        }
        other => panic!("an http endpoint must be refused at admission: {other:?}"),
    }
    // Another tenant's ordinary scan still runs.
    api.create(&PostParams::default(), &cluster_scan("ordinary"))
        .await
        .expect("create");
    wait_for(&api, "ordinary", 60, |o| phase(o) == Some(Phase::Succeeded)).await;
    for (name, _, reason) in &attacks {
        let refused = wait_for(&api, name, 30, |o| phase(o) == Some(Phase::Failed)).await;
        assert_eq!(failed_reason(&refused).as_deref(), Some(*reason), "{name}");
        assert!(
            refused
                .status
                .as_ref()
                .and_then(|s| s.task_id.as_ref())
                .is_none(),
            "{name}: no task"
        );
    }
    op.stop().await;
    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "nothing reached the chosen host"
    );
    assert_eq!(
        sim.created_tasks().len(),
        1,
        "only the ordinary scan reached HSS"
    );
}
