//! ClusterScanTrigger against a real kube-apiserver: the trigger controller (`triggers::run`,
//! with a manual clock so schedules need no real minutes) next to the ClusterScanTask operator
//! and the HSS simulator, so the runs it creates are really submitted and finish.

use std::{collections::BTreeSet, time::Duration};

use futures::FutureExt;
use hss_operator::{
    crd::{
        ClusterScanTask, ClusterScanTrigger, Phase,
        cluster_scan_trigger::{RUN_NOW_ANNOTATION, SCHEDULED_TIME_ANNOTATION, TRIGGER_LABEL},
    },
    triggers::{self, Clock, ManualClockHandle},
};
use hss_simulator::{SimConfig, Simulator};
use hss_testkit::cluster::*;
use jiff::{SignedDuration, Timestamp, ToSpan};
use k8s_openapi::api::{core::v1::Node, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};

/// `triggers::run` in a task of this runtime, stoppable gracefully or as if it crashed.
struct Triggers {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Triggers {
    fn start(client: &Client, ns: &str, clock: Clock) -> Self {
        Self::start_with(
            client,
            ns,
            clock,
            hss_operator::tenancy::TemplateCheck::open(),
        )
    }

    fn start_with(
        client: &Client,
        ns: &str,
        clock: Clock,
        check: hss_operator::tenancy::TemplateCheck,
    ) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(
            triggers::run(
                client.clone(),
                Some(ns.to_string()),
                clock,
                "hss-operator".into(),
                check,
                shutdown,
            )
            .map(|r| r.expect("the trigger controller runs")),
        );
        Self {
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }

    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The operator (ClusterScanTask controller) and the trigger controller on a manual clock.
struct Env {
    client: Client,
    ns: String,
    sim: Simulator,
    operator: Operator,
    triggers: Option<Triggers>,
    clock: Clock,
    time: ManualClockHandle,
    cst: Api<ClusterScanTrigger>,
    tasks: Api<ClusterScanTask>,
}

impl Env {
    async fn start(name: &str, sim: SimConfig) -> Self {
        // RUST_LOG=hss_operator=debug shows what the controllers do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let client = admin().await;
        let ns = namespace(&client, name).await;
        let sim = Simulator::start(sim).await.expect("simulator");
        // The operator's own trigger controller (system clock) is off: this test runs one on a
        // manual clock.
        let operator = Operator::start(
            client.clone(),
            run_args(&sim.base_url(), &ns, &["--disable-triggers"]),
            None,
        );
        let (clock, time) = Clock::manual(Timestamp::now());
        let triggers = Some(Triggers::start(&client, &ns, clock.clone()));
        Env {
            cst: Api::namespaced(client.clone(), &ns),
            tasks: Api::namespaced(client.clone(), &ns),
            client,
            ns,
            sim,
            operator,
            triggers,
            clock,
            time,
        }
    }

    async fn stop(mut self) {
        if let Some(t) = self.triggers.take() {
            t.stop().await;
        }
        self.operator.stop().await;
    }

    async fn create(&self, name: &str, spec: serde_json::Value) -> ClusterScanTrigger {
        self.cst
            .create(&PostParams::default(), &trigger(name, spec))
            .await
            .expect("create trigger")
    }

    /// The trigger's runs, oldest first.
    async fn runs(&self, trigger: &str) -> Vec<ClusterScanTask> {
        let mut runs = self
            .tasks
            .list(&ListParams::default().labels(&format!("{TRIGGER_LABEL}={trigger}")))
            .await
            .expect("list runs")
            .items;
        runs.sort_by_key(|r| r.creation_timestamp().map(|t| t.0));
        runs
    }

    /// Waits until the trigger's runs satisfy `cond` (polling the list), up to `secs`.
    async fn wait_runs(
        &self,
        trigger: &str,
        secs: u64,
        what: &str,
        cond: impl Fn(&[ClusterScanTask]) -> bool,
    ) -> Vec<ClusterScanTask> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let runs = self.runs(trigger).await;
            if cond(&runs) {
                return runs;
            }
            if tokio::time::Instant::now() > deadline {
                let t = self.cst.get_opt(trigger).await.ok().flatten();
                panic!(
                    "{what}: not reached in {secs}s; runs: {:?}; trigger status: {}",
                    runs.iter()
                        .map(|r| (r.name_any(), phase(r)))
                        .collect::<Vec<_>>(),
                    serde_json::to_string_pretty(&t.and_then(|t| t.status)).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the trigger satisfies `cond`, up to `secs`.
    async fn wait_trigger(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        cond: impl Fn(&ClusterScanTrigger) -> bool,
    ) -> ClusterScanTrigger {
        let done = tokio::time::timeout(
            Duration::from_secs(secs),
            await_condition(
                self.cst.clone(),
                name,
                move |o: Option<&ClusterScanTrigger>| o.is_some_and(&cond),
            ),
        )
        .await;
        match done {
            Ok(Ok(Some(obj))) => obj,
            other => {
                let now = self.cst.get_opt(name).await.ok().flatten();
                panic!(
                    "{what}: not reached in {secs}s ({:?}); trigger now: {}",
                    other.map(|_| ()),
                    serde_json::to_string_pretty(&now).unwrap_or_default()
                )
            }
        }
    }

    /// Moves the clock just past the next minute boundary after both the clock and `after`
    /// (the trigger's creation), and returns that boundary: the schedule time now due.
    fn tick(&self, after: Timestamp) -> Timestamp {
        let from = self.time.now().max(after);
        let minute = from
            .round(
                jiff::TimestampRound::new()
                    .smallest(jiff::Unit::Minute)
                    .mode(jiff::RoundMode::Floor),
            )
            .expect("round");
        let boundary = minute + 1.minute();
        self.time.set(boundary + 1.second());
        boundary
    }

    fn advance(&self, by: SignedDuration) {
        self.time.advance(Duration::try_from(by).expect("positive"));
    }

    async fn events(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        api.list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    async fn await_event(&self, name: &str, reason: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some((_, note)) = self
                    .events(name)
                    .await
                    .into_iter()
                    .find(|(r, _)| r == reason)
                {
                    return note;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        match found {
            Ok(note) => note,
            Err(_) => panic!(
                "no {reason} Event for {name}: {:?}",
                self.events(name).await
            ),
        }
    }
}

fn trigger(name: &str, mut spec: serde_json::Value) -> ClusterScanTrigger {
    spec["template"] = serde_json::json!({
        "metadata": {"labels": {"team": "security"}},
        "spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["cluster_vul", "benchmark"], "rangeType": "all_cluster"}}
    });
    serde_json::from_value(serde_json::json!({
        "apiVersion": "hss.scanops.dev/v1alpha1",
        "kind": "ClusterScanTrigger",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid ClusterScanTrigger")
}

fn created_at(t: &ClusterScanTrigger) -> Timestamp {
    t.creation_timestamp()
        .map(|t| t.0)
        .expect("creationTimestamp")
}

fn scheduled_time(run: &ClusterScanTask) -> Option<Timestamp> {
    run.annotations()
        .get(SCHEDULED_TIME_ANNOTATION)
        .and_then(|t| t.parse().ok())
}

fn active_is_empty(t: &ClusterScanTrigger) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.active.is_empty() && s.last_run_time.is_some())
}

fn reason_label(run: &ClusterScanTask) -> &str {
    run.labels()
        .get("hss.scanops.dev/run-reason")
        .map(String::as_str)
        .unwrap_or("")
}

/// A Node as a kubelet would register it, without a kubelet (nothing runs on it).
fn node(name: &str, group: &str, kubelet: Option<&str>) -> Node {
    let mut obj = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"hss-test": group}},
    });
    if let Some(version) = kubelet {
        obj["status"] = serde_json::json!({"nodeInfo": node_info(version)});
    }
    serde_json::from_value(obj).expect("node")
}

fn node_info(kubelet: &str) -> serde_json::Value {
    serde_json::json!({
        "architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "containerd://1.7.0",
        "kernelVersion": "6.1.0", "kubeProxyVersion": kubelet, "kubeletVersion": kubelet,
        "machineID": "m", "operatingSystem": "linux", "osImage": "Debian", "systemUUID": "s"
    })
}

/// Node names unique to this test process (Nodes are cluster-wide).
fn node_name(group: &str, i: usize) -> String {
    format!("{group}-{}-{i}", std::process::id() % 100_000)
}

async fn delete_nodes(client: &Client, group: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let _ = nodes
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("hss-test={group}")),
        )
        .await;
}

#[tokio::test]
async fn a_schedule_every_minute_for_five_minutes_gives_five_runs_and_keeps_the_history_limit() {
    let env = Env::start("trig-cron", SimConfig::default()).await;
    let t = env
        .create(
            "every-minute",
            serde_json::json!({"schedule": "* * * * *", "cooldown": "0s"}),
        )
        .await;
    env.wait_trigger("every-minute", 30, "first reconcile", |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.next_schedule_time.is_some())
    })
    .await;

    let mut seen = Vec::new();
    for minute in 1..=5 {
        let due = env.tick(created_at(&t));
        let runs = env
            .wait_runs(
                "every-minute",
                30,
                &format!("run for minute {minute}"),
                |runs| runs.iter().any(|r| scheduled_time(r) == Some(due)),
            )
            .await;
        let run = runs
            .iter()
            .find(|r| scheduled_time(r) == Some(due))
            .expect("the run for this minute");
        assert_eq!(reason_label(run), "schedule");
        assert_eq!(
            run.labels().get("team").map(String::as_str),
            Some("security")
        );
        seen.push(run.name_any());
        wait_for(&env.tasks, &run.name_any(), 60, |o| {
            phase(o) == Some(Phase::Succeeded)
        })
        .await;
        // The trigger has seen it finish (so Forbid lets the next minute run).
        env.wait_trigger("every-minute", 30, "run finished", active_is_empty)
            .await;
    }

    let runs = env
        .wait_runs("every-minute", 30, "history pruned to 3", |runs| {
            runs.len() == 3
        })
        .await;
    let kept: Vec<String> = runs.iter().map(|r| r.name_any()).collect();
    assert_eq!(kept, seen[2..].to_vec(), "the newest three are kept");
    assert_eq!(
        env.sim.created_tasks().len(),
        5,
        "five HSS tasks, one per minute"
    );
    let status = env
        .cst
        .get("every-minute")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(status.last_run_reason.map(|r| r.as_str()), Some("schedule"));
    assert!(status.last_successful_time.is_some());
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        5,
        "distinct names"
    );
    env.stop().await;
}

#[tokio::test]
async fn twenty_nodes_joining_in_a_burst_give_one_run_and_a_later_join_after_the_cooldown_another()
{
    let env = Env::start("trig-join", SimConfig::default()).await;
    let group = format!("join-{}", std::process::id() % 100_000);
    env.create(
        "on-join",
        serde_json::json!({"on": {"nodeJoined": {"selector": {"matchLabels": {"hss-test": group}}, "settleSeconds": 60}}}),
    )
    .await;
    env.wait_trigger("on-join", 30, "baseline observed", |t| {
        t.status.as_ref().and_then(|s| s.nodes.as_ref()).is_some()
    })
    .await;

    let nodes: Api<Node> = Api::all(env.client.clone());
    futures::future::try_join_all((0..20).map(|i| {
        let nodes = nodes.clone();
        let n = node(&node_name(&group, i), &group, None);
        async move { nodes.create(&PostParams::default(), &n).await }
    }))
    .await
    .expect("create 20 Nodes");
    env.wait_trigger("on-join", 30, "20 joins pending", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.nodes.as_ref())
            .is_some_and(|n| n.count == 20 && n.pending_joins == 20)
    })
    .await;
    assert!(env.runs("on-join").await.is_empty(), "settling first");

    env.advance(SignedDuration::from_secs(61));
    let runs = env
        .wait_runs("on-join", 30, "one run", |r| !r.is_empty())
        .await;
    assert_eq!(reason_label(&runs[0]), "nodeJoined");
    wait_for(&env.tasks, &runs[0].name_any(), 60, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    env.wait_trigger("on-join", 30, "first run done", active_is_empty)
        .await;
    assert_eq!(env.runs("on-join").await.len(), 1, "20 joins, one run");

    // After the 10m cooldown, one more Node.
    env.advance(SignedDuration::from_mins(10));
    nodes
        .create(
            &PostParams::default(),
            &node(&node_name(&group, 20), &group, None),
        )
        .await
        .expect("create Node 21");
    env.wait_trigger("on-join", 30, "the 21st join pending", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.nodes.as_ref())
            .is_some_and(|n| n.count == 21 && n.pending_joins == 1)
    })
    .await;
    env.advance(SignedDuration::from_secs(61));
    let runs = env
        .wait_runs("on-join", 30, "a second run", |r| r.len() == 2)
        .await;
    assert!(runs.iter().all(|r| reason_label(r) == "nodeJoined"));
    wait_for(&env.tasks, &runs[1].name_any(), 60, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(env.sim.created_tasks().len(), 2);
    delete_nodes(&env.client, &group).await;
    env.stop().await;
}

#[tokio::test]
async fn a_kubelet_upgrade_on_all_nodes_gives_one_run_after_the_versions_settle() {
    let env = Env::start("trig-upgrade", SimConfig::default()).await;
    let group = format!("upgrade-{}", std::process::id() % 100_000);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let names: Vec<String> = (0..3).map(|i| node_name(&group, i)).collect();
    for name in &names {
        nodes
            .create(&PostParams::default(), &node(name, &group, Some("v1.29.4")))
            .await
            .expect("create Node");
        // Status is the kubelet's to write; set it like one would.
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"nodeInfo": node_info("v1.29.4")}})),
            )
            .await
            .expect("set Node status");
    }
    // The trigger's first look is its baseline: it must see the Nodes' status, which reaches
    // the controller's Node cache by watch, a moment after the patches. A probe trigger shows
    // when it has (its status counts one kubelet version, now or pending), and goes.
    env.create(
        "probe",
        serde_json::json!({"on": {"kubernetesUpgraded": {"settleSeconds": 120}}}),
    )
    .await;
    env.wait_trigger("probe", 30, "the Node cache has the versions", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.versions.as_ref())
            .is_some_and(|v| {
                v.current.kubelet_versions == Some(1)
                    || v.pending
                        .as_ref()
                        .is_some_and(|p| p.kubelet_versions == Some(1))
            })
    })
    .await;
    env.cst
        .delete("probe", &Default::default())
        .await
        .expect("delete the probe");
    env.create(
        "on-upgrade",
        serde_json::json!({"on": {"kubernetesUpgraded": {"settleSeconds": 120}}}),
    )
    .await;
    // The test namespace may not list Nodes: status has counts and fingerprints, no version
    // strings (see a_tenant_reading_a_trigger_sees_counts_but_no_node_names_or_versions).
    let t = env
        .wait_trigger("on-upgrade", 30, "versions observed", |t| {
            t.status
                .as_ref()
                .and_then(|s| s.versions.as_ref())
                .is_some_and(|v| v.current.kubelet_versions == Some(1))
        })
        .await;
    let versions = t.status.and_then(|s| s.versions).expect("versions");
    assert!(
        versions.current.api_server.is_none() && versions.current.kubelets.is_empty(),
        "no version strings for a namespace that may not list Nodes"
    );
    let before = versions.current.fingerprint.clone();

    let upgrade = |name: String| {
        let nodes = nodes.clone();
        async move {
            nodes
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        serde_json::json!({"status": {"nodeInfo": {"kubeletVersion": "v1.30.1"}}}),
                    ),
                )
                .await
                .expect("upgrade kubelet")
        }
    };
    // A rolling upgrade: one Node, a minute later the others.
    upgrade(names[0].clone()).await;
    env.wait_trigger("on-upgrade", 30, "mixed versions pending", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.versions.as_ref())
            .and_then(|v| v.pending.as_ref())
            .is_some_and(|p| p.kubelet_versions == Some(2))
    })
    .await;
    env.advance(SignedDuration::from_secs(60));
    upgrade(names[1].clone()).await;
    upgrade(names[2].clone()).await;
    let t = env
        .wait_trigger("on-upgrade", 30, "new versions pending", |t| {
            t.status
                .as_ref()
                .and_then(|s| s.versions.as_ref())
                .and_then(|v| v.pending.as_ref())
                .is_some_and(|p| p.kubelet_versions == Some(1))
        })
        .await;
    let after = t
        .status
        .and_then(|s| s.versions)
        .and_then(|v| v.pending)
        .expect("pending")
        .fingerprint;
    assert_ne!(after, before, "one version on every Node, a different one");
    assert!(env.runs("on-upgrade").await.is_empty(), "not settled yet");

    env.advance(SignedDuration::from_secs(121));
    let t = env
        .wait_trigger("on-upgrade", 30, "upgrade acknowledged", |t| {
            t.status
                .as_ref()
                .and_then(|s| s.versions.as_ref())
                .is_some_and(|v| v.pending.is_none() && v.current.fingerprint == after)
        })
        .await;
    assert_eq!(
        t.status.and_then(|s| s.last_run_reason).map(|r| r.as_str()),
        Some("kubernetesUpgraded")
    );
    let runs = env
        .wait_runs("on-upgrade", 30, "one run", |r| !r.is_empty())
        .await;
    assert_eq!(runs.len(), 1);
    wait_for(&env.tasks, &runs[0].name_any(), 60, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    delete_nodes(&env.client, &group).await;
    env.stop().await;
}

#[tokio::test]
async fn a_run_now_annotation_runs_once_and_the_same_value_again_does_nothing() {
    let env = Env::start("trig-now", SimConfig::default()).await;
    env.create("button", serde_json::json!({"cooldown": "0s"}))
        .await;
    let annotate = |value: &str, bump: &str| {
        let patch = serde_json::json!({"metadata": {
            "annotations": {RUN_NOW_ANNOTATION: value},
            "labels": {"bump": bump},
        }});
        let api = env.cst.clone();
        async move {
            api.patch("button", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .expect("annotate")
        }
    };
    annotate("1", "a").await;
    let t = env
        .wait_trigger("button", 30, "value 1 acknowledged", |t| {
            t.status
                .as_ref()
                .and_then(|s| s.run_now_acknowledged.as_deref())
                == Some("1")
        })
        .await;
    assert_eq!(
        t.status
            .as_ref()
            .and_then(|s| s.last_run_reason)
            .map(|r| r.as_str()),
        Some("onDemand")
    );
    let runs = env
        .wait_runs("button", 30, "one run", |r| !r.is_empty())
        .await;
    assert_eq!(runs.len(), 1);
    assert_eq!(reason_label(&runs[0]), "onDemand");
    wait_for(&env.tasks, &runs[0].name_any(), 60, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;

    // The same value again (with another change, so the trigger is really reconciled).
    annotate("1", "b").await;
    env.wait_trigger("button", 30, "seen the change", |t| {
        t.labels().get("bump").map(String::as_str) == Some("b") && active_is_empty(t)
    })
    .await;
    // A new value afterwards: exactly one more run, so the repeated value made none.
    annotate("2", "c").await;
    env.wait_trigger("button", 30, "value 2 acknowledged", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.run_now_acknowledged.as_deref())
            == Some("2")
    })
    .await;
    let runs = env
        .wait_runs("button", 30, "two runs", |r| r.len() >= 2)
        .await;
    assert_eq!(runs.len(), 2, "one run per new value");
    env.await_event("button", "RunCreated").await;
    env.stop().await;
}

#[tokio::test]
async fn forbid_skips_a_scheduled_run_while_the_previous_one_is_still_running() {
    // Scans that take an hour, so the first run is still running at the next minute.
    let env = Env::start(
        "trig-forbid",
        SimConfig {
            finish_after: Duration::from_secs(3600),
            ..SimConfig::default()
        },
    )
    .await;
    let t = env
        .create(
            "forbid",
            serde_json::json!({"schedule": "* * * * *", "cooldown": "0s"}),
        )
        .await;
    let first = env.tick(created_at(&t));
    let runs = env
        .wait_runs("forbid", 30, "first run", |r| !r.is_empty())
        .await;
    assert_eq!(scheduled_time(&runs[0]), Some(first));
    wait_for(&env.tasks, &runs[0].name_any(), 60, |o| {
        phase(o) == Some(Phase::Running)
    })
    .await;

    let second = env.tick(created_at(&t));
    let t = env
        .wait_trigger("forbid", 30, "second minute handled", |t| {
            t.status
                .as_ref()
                .and_then(|s| s.last_schedule_time.as_ref())
                .is_some_and(|at| at.0 == second)
        })
        .await;
    let note = env.await_event("forbid", "SkippedConcurrent").await;
    assert!(note.contains(&runs[0].name_any()), "{note}");
    assert_eq!(env.runs("forbid").await.len(), 1, "skipped, not queued");
    let active = t.status.expect("status").active;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].name.as_deref(), Some(runs[0].name_any().as_str()));
    env.stop().await;
}

#[tokio::test]
async fn an_operator_restart_mid_schedule_creates_no_duplicate_and_downtime_at_most_one_catch_up() {
    let mut env = Env::start("trig-restart", SimConfig::default()).await;
    let t = env
        .create(
            "restart",
            serde_json::json!({"schedule": "* * * * *", "cooldown": "0s"}),
        )
        .await;
    let due = env.tick(created_at(&t));
    let runs = env
        .wait_runs("restart", 30, "first run", |r| !r.is_empty())
        .await;
    // Crash as soon as the run exists: its status write may not have landed.
    env.triggers.take().expect("running").kill().await;
    env.triggers = Some(Triggers::start(&env.client, &env.ns, env.clock.clone()));
    env.wait_trigger("restart", 30, "the minute is recorded", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .is_some_and(|at| at.0 == due)
    })
    .await;
    wait_for(&env.tasks, &runs[0].name_any(), 60, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    env.wait_trigger("restart", 30, "run finished", active_is_empty)
        .await;
    assert_eq!(
        env.runs("restart").await.len(),
        1,
        "no duplicate after the restart"
    );

    // Down for three scheduled minutes: one catch-up run, for the latest.
    env.triggers.take().expect("running").stop().await;
    env.advance(SignedDuration::from_mins(3));
    let latest = due + 3.minutes();
    env.triggers = Some(Triggers::start(&env.client, &env.ns, env.clock.clone()));
    let runs = env
        .wait_runs("restart", 30, "catch-up run", |r| {
            r.iter().any(|r| scheduled_time(r) == Some(latest))
        })
        .await;
    env.wait_trigger("restart", 30, "catch-up recorded", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .is_some_and(|at| at.0 == latest)
    })
    .await;
    assert_eq!(runs.len(), 2, "one catch-up, not three");
    assert_eq!(env.runs("restart").await.len(), 2);
    env.stop().await;
}

/// Node names (private IP addresses on CCE) and version strings stay out of a trigger's status
/// where its namespace may not list Nodes: a tenant who may read the trigger sees counts, the
/// watermark and the fingerprint. A namespace whose ServiceAccounts may list Nodes sees them.
#[tokio::test]
async fn a_tenant_reading_a_trigger_sees_counts_but_no_node_names_or_versions() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let env = Env::start("trig-private", SimConfig::default()).await;
    let group = format!("private-{}", std::process::id() % 100_000);
    let version = env
        .client
        .apiserver_version()
        .await
        .expect("version")
        .git_version;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let names: Vec<String> = (0..2).map(|i| node_name(&group, i)).collect();
    for n in &names {
        nodes
            .create(&PostParams::default(), &node(n, &group, None))
            .await
            .expect("create Node");
    }
    let spec = serde_json::json!({"on": {
        "nodeJoined": {"selector": {"matchLabels": {"hss-test": group}}},
        "kubernetesUpgraded": {}}});
    env.create("private", spec.clone()).await;
    let observed = |t: &ClusterScanTrigger| {
        t.status
            .as_ref()
            .is_some_and(|s| s.nodes.as_ref().is_some_and(|n| n.count == 2) && s.versions.is_some())
    };
    env.wait_trigger("private", 30, "Nodes and versions observed", observed)
        .await;

    // The tenant may read triggers in its namespace, nothing about Nodes.
    let tenant_client = hss_testkit::identity::tenant(&env.client, &env.ns).await;
    let apply = PatchParams::apply("hss-tests").force();
    let role: Role = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "trigger-reader"},
        "rules": [{"apiGroups": ["hss.scanops.dev"], "resources": ["clusterscantriggers"], "verbs": ["get"]}],
    }))
    .expect("role");
    Api::<Role>::namespaced(env.client.clone(), &env.ns)
        .patch("trigger-reader", &apply, &Patch::Apply(&role))
        .await
        .expect("Role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "trigger-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trigger-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": env.ns}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(env.client.clone(), &env.ns)
        .patch("trigger-reader", &apply, &Patch::Apply(&binding))
        .await
        .expect("RoleBinding");
    let as_tenant: Api<ClusterScanTrigger> = Api::namespaced(tenant_client, &env.ns);
    let seen = as_tenant.get("private").await.expect("the tenant reads it");
    let text = serde_json::to_string(&seen.status).expect("json");
    for secret in names.iter().chain([&version]) {
        assert!(!text.contains(secret.as_str()), "{secret} in {text}");
    }
    let st = seen.status.expect("status");
    let n = st.nodes.expect("nodes");
    assert_eq!(n.count, 2);
    assert!(n.newest_names.is_empty() && !n.newest_ids.is_empty());
    let v = st.versions.expect("versions");
    assert!(v.current.api_server.is_none() && !v.current.fingerprint.is_empty());

    // A namespace whose ServiceAccounts may list Nodes sees names and versions.
    let shown_ns = namespace(&env.client, "trig-shown").await;
    let lister: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "hss-test-node-lister"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}],
    }))
    .expect("cluster role");
    Api::<ClusterRole>::all(env.client.clone())
        .patch("hss-test-node-lister", &apply, &Patch::Apply(&lister))
        .await
        .expect("ClusterRole");
    let crb_name = format!("hss-test-node-lister-{shown_ns}");
    let crb: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": crb_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "hss-test-node-lister"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                      "name": format!("system:serviceaccounts:{shown_ns}")}],
    }))
    .expect("binding");
    let crbs: Api<ClusterRoleBinding> = Api::all(env.client.clone());
    crbs.patch(&crb_name, &apply, &Patch::Apply(&crb))
        .await
        .expect("ClusterRoleBinding");
    let shown = Triggers::start(&env.client, &shown_ns, env.clock.clone());
    let shown_api: Api<ClusterScanTrigger> = Api::namespaced(env.client.clone(), &shown_ns);
    shown_api
        .create(&PostParams::default(), &trigger("shown", spec))
        .await
        .expect("create trigger");
    let named = tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(shown_api, "shown", |o: Option<&ClusterScanTrigger>| {
            o.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.nodes.as_ref().is_some_and(|n| !n.newest_names.is_empty())
                    && s.versions
                        .as_ref()
                        .is_some_and(|v| v.current.api_server.is_some())
            })
        }),
    )
    .await
    .expect("names shown within 30 s")
    .expect("watch")
    .and_then(|t| t.status)
    .expect("status");
    let listed = named.nodes.expect("nodes").newest_names;
    assert!(listed.iter().all(|n| names.contains(n)), "{listed:?}");
    assert_eq!(
        named.versions.expect("versions").current.api_server,
        Some(version)
    );
    shown.stop().await;
    let _ = crbs.delete(&crb_name, &DeleteParams::default()).await;
    delete_nodes(&env.client, &group).await;
    env.stop().await;
}

/// `hss.scanops.dev/*` annotations of a template instruct the operator; a run created from it
/// does not carry them (an adopt-task there would have every run adopt that task).
#[tokio::test]
async fn a_templates_adopt_task_annotation_is_not_copied_to_its_runs() {
    let env = Env::start("trig-template", SimConfig::default()).await;
    let mut t = trigger("adopting", serde_json::json!({"cooldown": "0s"}));
    let meta = t
        .spec
        .template
        .metadata
        .get_or_insert_with(Default::default);
    meta.annotations.insert(
        "hss.scanops.dev/adopt-task".into(),
        "someone-elses-task".into(),
    );
    meta.annotations.insert("note".into(), "kept".into());
    t.metadata.annotations = Some([(RUN_NOW_ANNOTATION.to_string(), "1".to_string())].into());
    env.cst
        .create(&PostParams::default(), &t)
        .await
        .expect("create trigger");
    let runs = env
        .wait_runs("adopting", 30, "one run", |r| !r.is_empty())
        .await;
    let run = &runs[0];
    assert!(
        !run.annotations().contains_key("hss.scanops.dev/adopt-task"),
        "{:?}",
        run.annotations()
    );
    assert_eq!(
        run.annotations().get("note").map(String::as_str),
        Some("kept")
    );
    // It is submitted as a run of its own.
    wait_for(&env.tasks, &run.name_any(), 60, |o| {
        phase(o) == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(env.sim.created_tasks().len(), 1);
    env.stop().await;
}
