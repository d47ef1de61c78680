//! decide() on inline triggers, runs and Nodes: no API server, no clock.
use super::*;
use serde_json::json;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

const CREATED: &str = "2030-01-01T00:00:00Z";

fn trigger(spec: serde_json::Value, status: serde_json::Value) -> ClusterScanTrigger {
    trigger_with(spec, status, json!({}))
}

fn trigger_with(
    mut spec: serde_json::Value,
    status: serde_json::Value,
    annotations: serde_json::Value,
) -> ClusterScanTrigger {
    spec["template"] = json!({"spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "all_cluster"}}});
    serde_json::from_value(json!({
        "apiVersion": "hss.scanops.dev/v1alpha1",
        "kind": "ClusterScanTrigger",
        "metadata": {"name": "nightly", "namespace": "sec", "uid": "u-1", "generation": 1,
                     "creationTimestamp": CREATED, "annotations": annotations},
        "spec": spec,
        "status": status,
    }))
    .expect("valid trigger")
}

fn run(name: &str, phase: Phase, run_time: &str) -> RunInfo {
    RunInfo {
        name: name.into(),
        uid: Some(format!("uid-{name}")),
        phase,
        run_time: Some(ts(run_time)),
        created: Some(ts(run_time)),
        finished_at: phase.is_final().then(|| ts(run_time)),
        deleting: false,
        findings: None,
        reason: Some(RunReason::Schedule),
    }
}

fn node(name: &str, created: &str, labels: serde_json::Value, kubelet: &str) -> Arc<NodeView> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": created, "labels": labels},
            "status": {"nodeInfo": {"kubeletVersion": kubelet}}
        }))
        .expect("node"),
    )
}

fn decide_at(t: &ClusterScanTrigger, now: &str, runs: &[RunInfo]) -> Decision {
    decide(&Inputs {
        trigger: t,
        now: ts(now),
        runs,
        nodes: Some(&[]),
        api_server: Some("v1.30.0"),
        node_details: NodeDetails::Hidden,
    })
}

/// Feeds the decision's status back into the trigger, as the next reconcile would see it.
fn with_status(t: &ClusterScanTrigger, d: &Decision) -> ClusterScanTrigger {
    let mut t = t.clone();
    t.status = Some(d.status.clone());
    t
}

fn condition<'a>(
    d: &'a Decision,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    d.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition set")
}

#[test]
fn a_due_schedule_creates_one_deterministically_named_run() {
    let t = trigger(json!({"schedule": "*/5 * * * *"}), json!({}));
    let d = decide_at(&t, "2030-01-01T00:05:10Z", &[]);
    let run = d.create.clone().expect("a run");
    assert_eq!(run.reason, RunReason::Schedule);
    assert_eq!(run.scheduled, Some(ts("2030-01-01T00:05:00Z")));
    assert!(run.name.starts_with("nightly-") && run.name.len() == "nightly-".len() + 10);
    assert_eq!(
        d.status.last_schedule_time,
        Some(Time(ts("2030-01-01T00:05:00Z")))
    );
    assert_eq!(
        d.status.next_schedule_time,
        Some(Time(ts("2030-01-01T00:10:00Z")))
    );
    assert_eq!(d.requeue_at, Some(ts("2030-01-01T00:10:00Z")));
    assert_eq!(d.status.active.len(), 1);
    // The same decision from a stale cache names the same run (so the create is refused).
    let again = decide_at(&t, "2030-01-01T00:05:20Z", &[]);
    assert_eq!(again.create.expect("same run").name, run.name);
    // Once the status is written, nothing more for that schedule time.
    let after = decide_at(&with_status(&t, &d), "2030-01-01T00:06:00Z", &[]);
    assert!(after.create.is_none());
}

#[test]
fn nothing_runs_before_the_first_schedule_time_after_creation() {
    let t = trigger(json!({"schedule": "0 * * * *"}), json!({}));
    let d = decide_at(&t, "2030-01-01T00:30:00Z", &[]);
    assert!(
        d.create.is_none(),
        "00:00 is the creation time, not after it"
    );
    assert_eq!(
        d.status.next_schedule_time,
        Some(Time(ts("2030-01-01T01:00:00Z")))
    );
}

#[test]
fn downtime_makes_up_at_most_one_run_and_only_within_the_deadline() {
    // (startingDeadlineSeconds, now, runs, why)
    let cases = [
        (
            None,
            "2030-01-01T05:00:30Z",
            true,
            "no deadline: the latest missed run",
        ),
        (
            Some(60),
            "2030-01-01T05:00:30Z",
            true,
            "30 s late, within 60 s",
        ),
        (
            Some(60),
            "2030-01-01T05:02:00Z",
            false,
            "120 s late, beyond 60 s",
        ),
    ];
    for (deadline, now, runs, why) in cases {
        let mut spec = json!({"schedule": "0 * * * *"});
        if let Some(s) = deadline {
            spec["startingDeadlineSeconds"] = json!(s);
        }
        let t = trigger(
            spec,
            json!({"lastScheduleTime": "2030-01-01T01:00:00Z", "lastRunTime": "2030-01-01T01:00:00Z"}),
        );
        let d = decide_at(&t, now, &[]);
        assert_eq!(d.create.is_some(), runs, "{why}");
        if let Some(run) = d.create {
            assert_eq!(run.scheduled, Some(ts("2030-01-01T05:00:00Z")), "{why}");
        } else {
            assert!(
                d.notes.iter().any(|n| n.reason == "MissedSchedule"),
                "{why}"
            );
        }
        assert_eq!(
            d.status.last_schedule_time,
            Some(Time(ts("2030-01-01T05:00:00Z"))),
            "{why}: the missed times are handled"
        );
    }
}

#[test]
fn forbid_skips_a_scheduled_run_while_one_is_unfinished_and_says_so() {
    let t = trigger(
        json!({"schedule": "* * * * *", "cooldown": "0s"}),
        json!({}),
    );
    let runs = [run(
        "nightly-aaaaaaaaaa",
        Phase::Running,
        "2030-01-01T00:01:00Z",
    )];
    let d = decide_at(&t, "2030-01-01T00:02:00Z", &runs);
    assert!(d.create.is_none());
    assert_eq!(
        d.status.last_schedule_time,
        Some(Time(ts("2030-01-01T00:02:00Z")))
    );
    assert!(
        d.notes
            .iter()
            .any(|n| n.reason == "SkippedConcurrent" && n.message.contains("nightly-aaaaaaaaaa")),
        "{:?}",
        d.notes
    );
    // Allow overlaps.
    let t = trigger(
        json!({"schedule": "* * * * *", "cooldown": "0s", "concurrencyPolicy": "Allow"}),
        json!({}),
    );
    assert!(
        decide_at(&t, "2030-01-01T00:02:00Z", &runs)
            .create
            .is_some()
    );
}

#[test]
fn cooldown_skips_schedules_but_defers_other_causes() {
    let status = json!({"lastRunTime": "2030-01-01T00:00:30Z"});
    let t = trigger_with(
        json!({"schedule": "* * * * *"}),
        status,
        json!({RUN_NOW_ANNOTATION: "1"}),
    );
    let d = decide_at(&t, "2030-01-01T00:01:00Z", &[]);
    assert!(d.create.is_none());
    assert!(d.notes.iter().any(|n| n.reason == "SkippedCooldown"));
    assert!(d.notes.iter().any(|n| n.reason == "RunDeferred"));
    let pending = condition(&d, RUN_PENDING);
    assert_eq!(
        (pending.status.as_str(), pending.reason.as_str()),
        ("True", "Cooldown")
    );
    assert_eq!(d.status.run_now_acknowledged, None, "still owed");
    assert_eq!(
        d.requeue_at,
        Some(ts("2030-01-01T00:02:00Z")),
        "next schedule"
    );
    // The deferral is announced once.
    let again = decide_at(&with_status(&t, &d), "2030-01-01T00:05:00Z", &[]);
    assert!(!again.notes.iter().any(|n| n.reason == "RunDeferred"));
    // After the cooldown the request runs.
    let d = decide_at(&with_status(&t, &d), "2030-01-01T00:10:30Z", &[]);
    let run = d.create.expect("run after cooldown");
    assert_eq!(run.reason, RunReason::OnDemand);
    assert_eq!(d.status.run_now_acknowledged.as_deref(), Some("1"));
}

#[test]
fn run_now_runs_once_per_value_even_when_suspended() {
    let t = trigger_with(
        json!({"suspend": true, "schedule": "* * * * *"}),
        json!({}),
        json!({RUN_NOW_ANNOTATION: "a"}),
    );
    let d = decide_at(&t, "2030-01-01T00:10:00Z", &[]);
    let run = d.create.clone().expect("a run");
    assert_eq!(run.reason, RunReason::OnDemand);
    assert!(
        run.scheduled.is_none(),
        "suspended: the schedule is not due"
    );
    assert_eq!(d.status.next_schedule_time, None);
    assert_eq!(d.status.run_now_acknowledged.as_deref(), Some("a"));
    let same = decide_at(&with_status(&t, &d), "2030-02-01T00:00:00Z", &[]);
    assert!(same.create.is_none(), "same value again: nothing");
    // An empty value is no request.
    let t = trigger_with(json!({}), json!({}), json!({RUN_NOW_ANNOTATION: ""}));
    assert!(decide_at(&t, "2030-01-01T00:10:00Z", &[]).create.is_none());
}

#[test]
fn history_keeps_the_newest_finished_runs_within_the_limits() {
    let t = trigger(
        json!({"successfulRunsHistoryLimit": 2, "failedRunsHistoryLimit": 1}),
        json!({}),
    );
    let runs = [
        run("r1", Phase::Succeeded, "2030-01-01T00:01:00Z"),
        run("r2", Phase::Failed, "2030-01-01T00:02:00Z"),
        run("r3", Phase::Succeeded, "2030-01-01T00:03:00Z"),
        run("r4", Phase::PartiallyFailed, "2030-01-01T00:04:00Z"),
        run("r5", Phase::Succeeded, "2030-01-01T00:05:00Z"),
        run("r6", Phase::Running, "2030-01-01T00:06:00Z"),
    ];
    let d = decide_at(&t, "2030-01-01T00:07:00Z", &runs);
    assert_eq!(d.delete, vec!["r1".to_string(), "r2".to_string()]);
    let active: Vec<_> = d
        .status
        .active
        .iter()
        .filter_map(|r| r.name.clone())
        .collect();
    assert_eq!(active, vec!["r6".to_string()]);
    assert_eq!(
        d.status.last_successful_time,
        Some(Time(ts("2030-01-01T00:05:00Z")))
    );
}

#[test]
fn invalid_schedule_or_zone_sets_ready_false_with_a_warning_and_never_runs() {
    // (spec, reason, why)
    let cases = [
        (json!({"schedule": "every day"}), "InvalidSchedule", "words"),
        (
            json!({"schedule": "0 0 31 2 *"}),
            "InvalidSchedule",
            "never fires",
        ),
        (
            json!({"schedule": "0 2 * * *", "timeZone": "Moon/Base"}),
            "InvalidTimeZone",
            "unknown zone",
        ),
        (
            json!({"cooldown": "-1m"}),
            "InvalidCooldown",
            "negative cooldown",
        ),
        (
            json!({"on": {"nodeJoined": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}}),
            "InvalidSelector",
            "bad operator",
        ),
    ];
    for (spec, reason, why) in cases {
        let t = trigger_with(spec, json!({}), json!({RUN_NOW_ANNOTATION: "x"}));
        let d = decide_at(&t, "2030-01-01T00:10:00Z", &[]);
        assert!(d.create.is_none(), "{why}");
        let ready = condition(&d, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason),
            "{why}"
        );
        assert!(
            d.notes.iter().any(|n| n.warning && n.reason == reason),
            "{why}: {:?}",
            d.notes
        );
        let again = decide_at(&with_status(&t, &d), "2030-01-01T00:11:00Z", &[]);
        assert!(again.notes.is_empty(), "{why}: warned once");
    }
}

fn join_trigger(status: serde_json::Value) -> ClusterScanTrigger {
    trigger(
        json!({"on": {"nodeJoined": {"selector": {"matchLabels": {"pool": "a"}}, "settleSeconds": 60}}}),
        status,
    )
}

fn decide_nodes(t: &ClusterScanTrigger, now: &str, nodes: &[Arc<NodeView>]) -> Decision {
    decide(&Inputs {
        trigger: t,
        now: ts(now),
        runs: &[],
        nodes: Some(nodes),
        api_server: Some("v1.30.0"),
        node_details: NodeDetails::Shown,
    })
}

#[test]
fn a_burst_of_joins_gives_one_run_after_settling_and_existing_nodes_are_the_baseline() {
    let pool = json!({"pool": "a"});
    let mut nodes = vec![node("old", "2029-12-01T00:00:00Z", pool.clone(), "v1.30.0")];
    let t = join_trigger(json!({}));
    let d = decide_nodes(&t, "2030-01-01T00:00:00Z", &nodes);
    assert!(d.create.is_none(), "existing Nodes have not joined");
    let t = with_status(&t, &d);
    // 50 Nodes join in the same second, plus one outside the selector.
    for i in 0..50 {
        nodes.push(node(
            &format!("n{i}"),
            "2030-01-01T00:00:05Z",
            pool.clone(),
            "",
        ));
    }
    nodes.push(node(
        "other",
        "2030-01-01T00:00:05Z",
        json!({"pool": "b"}),
        "",
    ));
    let d = decide_nodes(&t, "2030-01-01T00:00:06Z", &nodes[..20]);
    let t = with_status(&t, &d);
    let d = decide_nodes(&t, "2030-01-01T00:00:07Z", &nodes);
    let observed = d.status.nodes.clone().expect("nodes");
    assert_eq!(observed.pending_joins, 50);
    assert_eq!(observed.count, 51);
    assert_eq!(
        observed.pending_since,
        Some(Time(ts("2030-01-01T00:00:06Z")))
    );
    assert!(d.create.is_none(), "settling");
    assert_eq!(condition(&d, RUN_PENDING).reason, "Settling");
    assert_eq!(d.requeue_at, Some(ts("2030-01-01T00:01:06Z")));
    let t = with_status(&t, &d);
    let d = decide_nodes(&t, "2030-01-01T00:01:06Z", &nodes);
    let run = d.create.clone().expect("one run");
    assert_eq!(run.reason, RunReason::NodeJoined);
    assert_eq!(d.status.nodes.as_ref().expect("nodes").pending_joins, 0);
    let t = with_status(&t, &d);
    assert!(
        decide_nodes(&t, "2030-01-01T00:30:00Z", &nodes)
            .create
            .is_none()
    );
}

#[test]
fn a_node_joining_during_the_cooldown_waits_for_it() {
    let pool = json!({"pool": "a"});
    let nodes = vec![
        node("n1", "2030-01-01T00:00:00Z", pool.clone(), ""),
        node("n2", "2030-01-01T00:02:00Z", pool.clone(), ""),
    ];
    let t = join_trigger(json!({
        "lastRunTime": "2030-01-01T00:01:00Z",
        "nodes": {"count": 1, "newestCreationTime": "2030-01-01T00:00:00Z", "newestNames": ["n1"]}
    }));
    let d = decide_nodes(&t, "2030-01-01T00:02:00Z", &nodes);
    let t = with_status(&t, &d);
    let d = decide_nodes(&t, "2030-01-01T00:03:00Z", &nodes);
    assert!(d.create.is_none());
    assert_eq!(condition(&d, RUN_PENDING).reason, "Cooldown");
    assert_eq!(d.requeue_at, Some(ts("2030-01-01T00:11:00Z")));
    let t = with_status(&t, &d);
    let d = decide_nodes(&t, "2030-01-01T00:11:00Z", &nodes);
    assert_eq!(d.create.expect("run").reason, RunReason::NodeJoined);
}

#[test]
fn an_upgrade_runs_once_after_the_version_set_has_settled() {
    let t = trigger(
        json!({"on": {"kubernetesUpgraded": {"settleSeconds": 120}}}),
        json!({}),
    );
    let at = |v: &[&str]| -> Vec<Arc<NodeView>> {
        v.iter()
            .enumerate()
            .map(|(i, k)| node(&format!("n{i}"), CREATED, json!({}), k))
            .collect()
    };
    let d = decide_nodes(&t, "2030-01-01T01:00:00Z", &at(&["v1.29.0", "v1.29.0"]));
    assert!(d.create.is_none(), "baseline");
    let t = with_status(&t, &d);
    // Rolling: one Node upgraded, then the other a minute later.
    let d = decide_nodes(&t, "2030-01-01T01:01:00Z", &at(&["v1.30.0", "v1.29.0"]));
    assert!(d.create.is_none());
    let t = with_status(&t, &d);
    let d = decide_nodes(&t, "2030-01-01T01:02:00Z", &at(&["v1.30.0", "v1.30.0"]));
    let t = with_status(&t, &d);
    let d = decide_nodes(&t, "2030-01-01T01:03:59Z", &at(&["v1.30.0", "v1.30.0"]));
    assert!(d.create.is_none(), "not settled for 120 s yet");
    let t = with_status(&t, &d);
    let d = decide_nodes(&t, "2030-01-01T01:04:00Z", &at(&["v1.30.0", "v1.30.0"]));
    assert_eq!(
        d.create.clone().expect("run").reason,
        RunReason::KubernetesUpgraded
    );
    let v = d.status.versions.clone().expect("versions");
    assert_eq!(v.current.kubelets, vec!["v1.30.0".to_string()]);
    assert!(v.pending.is_none());
    let t = with_status(&t, &d);
    assert!(
        decide_nodes(&t, "2030-01-02T00:00:00Z", &at(&["v1.30.0", "v1.30.0"]))
            .create
            .is_none()
    );
    // An API server upgrade counts too.
    let d = decide(&Inputs {
        trigger: &t,
        now: ts("2030-01-02T00:00:00Z"),
        runs: &[],
        nodes: Some(&at(&["v1.30.0"])),
        api_server: Some("v1.31.0"),
        node_details: NodeDetails::Shown,
    });
    assert!(d.status.versions.expect("versions").pending.is_some());
}

#[test]
fn one_run_covers_every_cause_due_at_once() {
    let t = trigger_with(
        json!({"schedule": "* * * * *"}),
        json!({}),
        json!({RUN_NOW_ANNOTATION: "go"}),
    );
    let d = decide_at(&t, "2030-01-01T00:01:00Z", &[]);
    let run = d.create.expect("run");
    assert_eq!(run.reason, RunReason::OnDemand);
    assert_eq!(run.causes.len(), 2);
    assert_eq!(d.status.run_now_acknowledged.as_deref(), Some("go"));
    assert_eq!(
        d.status.last_schedule_time,
        Some(Time(ts("2030-01-01T00:01:00Z")))
    );
}

#[test]
fn cooldowns_parse_like_the_crd_admits_them() {
    // (text, seconds)
    let cases = [
        ("0s", Some(0)),
        ("10m", Some(600)),
        ("1h30m", Some(5400)),
        ("1h5s", Some(3605)),
        ("90s", Some(90)),
        ("", None),
        ("10", None),
        ("-1m", None),
        ("1m1h", None),
        ("1.5h", None),
        ("5d", None),
    ];
    for (text, secs) in cases {
        assert_eq!(parse_cooldown(text).map(|d| d.as_secs()), secs, "{text:?}");
    }
}

#[test]
fn the_latest_findings_read_are_shown_and_outlive_the_pruned_run() {
    use crate::crd::{cluster_scan_trigger::RunFindings, findings::LevelCounts};
    let t = trigger(json!({"successfulRunsHistoryLimit": 1}), json!({}));
    let found = |run: &str, at: &str, high: u32| RunFindings {
        run: run.into(),
        read_at: Time(ts(at)),
        total: LevelCounts {
            high,
            ..LevelCounts::default()
        },
        clusters_read: 3,
        clusters_with_findings: 1,
        security_check: None,
    };
    let mut r1 = run("r1", Phase::Succeeded, "2030-01-01T00:01:00Z");
    r1.findings = Some(found("r1", "2030-01-01T00:02:00Z", 2));
    let mut r2 = run("r2", Phase::Succeeded, "2030-01-01T00:03:00Z");
    r2.findings = Some(found("r2", "2030-01-01T00:04:00Z", 0));
    let r3 = run("r3", Phase::Succeeded, "2030-01-01T00:05:00Z"); // findings not read yet
    let d = decide_at(&t, "2030-01-01T00:06:00Z", &[r1, r2.clone(), r3.clone()]);
    let last = d.status.last_findings.clone().expect("lastFindings");
    assert_eq!((last.run.as_str(), last.total.high), ("r2", 0));
    // r2 pruned: the trigger still shows what it found.
    let d = decide_at(&with_status(&t, &d), "2030-01-01T00:07:00Z", &[r3]);
    assert_eq!(
        d.status.last_findings.map(|f| f.run),
        Some("r2".to_string())
    );
}

#[test]
fn a_run_whose_status_write_was_lost_is_still_the_last_run() {
    let t = trigger(json!({}), json!({}));
    let runs = [
        run("r1", Phase::Succeeded, "2030-01-01T00:01:00Z"),
        run("r2", Phase::Running, "2030-01-01T00:02:00Z"),
    ];
    // The trigger's status never heard of either run.
    let d = decide_at(&t, "2030-01-01T00:02:30Z", &runs);
    assert_eq!(
        d.status.last_run_time,
        Some(Time(ts("2030-01-01T00:02:00Z")))
    );
    assert_eq!(d.status.last_run_name.as_deref(), Some("r2"));
    assert_eq!(d.status.last_run_reason, Some(RunReason::Schedule));
}

fn decide_hidden(t: &ClusterScanTrigger, now: &str, nodes: &[Arc<NodeView>]) -> Decision {
    decide(&Inputs {
        trigger: t,
        now: ts(now),
        runs: &[],
        nodes: Some(nodes),
        api_server: Some("v1.30.0-r4"),
        node_details: NodeDetails::Hidden,
    })
}

fn both_trigger(status: serde_json::Value) -> ClusterScanTrigger {
    trigger(
        json!({"on": {"nodeJoined": {"selector": {"matchLabels": {"pool": "a"}}, "settleSeconds": 0},
                      "kubernetesUpgraded": {"settleSeconds": 0}}}),
        status,
    )
}

/// Where the trigger's namespace may not list Nodes, its status has counts, times, hashes and
/// the fingerprint: no node name (a private IP on CCE) and no version string. Detection works
/// the same: a second Node created in the same second as the newest one still joins.
#[test]
fn without_node_access_status_names_no_node_and_no_version_and_joins_are_still_seen() {
    let pool = json!({"pool": "a"});
    let mut nodes = vec![node("192.168.0.11", CREATED, pool.clone(), "v1.29.8-r0")];
    let t = both_trigger(json!({}));
    let d = decide_hidden(&t, "2030-01-01T00:00:10Z", &nodes);
    let text = serde_json::to_string(&d.status).expect("json");
    for secret in ["192.168.0.11", "v1.29.8", "v1.30.0"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let n = d.status.nodes.clone().expect("nodes");
    assert_eq!((n.count, n.newest_ids.len()), (1, 1));
    assert!(n.newest_names.is_empty());
    let v = d.status.versions.clone().expect("versions");
    assert_eq!(v.current.kubelet_versions, Some(1));
    assert!(v.current.api_server.is_none() && v.current.kubelets.is_empty());
    assert!(!v.current.fingerprint.is_empty());

    // Same second, another Node: joined. The one seen before: not.
    let t = with_status(&t, &d);
    nodes.push(node("192.168.0.12", CREATED, pool.clone(), "v1.29.8-r0"));
    let d = decide_hidden(&t, "2030-01-01T00:00:20Z", &nodes);
    assert_eq!(
        d.create.clone().expect("a run").reason,
        RunReason::NodeJoined
    );
    assert!(
        !serde_json::to_string(&d.status)
            .expect("json")
            .contains("192.168.0.12")
    );
    let t = with_status(&t, &d);
    let d = decide_hidden(&t, "2030-01-01T00:30:00Z", &nodes);
    assert!(d.create.is_none(), "both Nodes are known by their ids now");
}

/// Names and versions are what a namespace that may list Nodes sees; the fingerprint is the
/// same either way, so access changing is not an upgrade.
#[test]
fn with_node_access_names_and_versions_are_shown_and_the_fingerprint_is_the_same() {
    let nodes = vec![node("n1", CREATED, json!({"pool": "a"}), "v1.29.8-r0")];
    let t = both_trigger(json!({}));
    let shown = decide(&Inputs {
        trigger: &t,
        now: ts("2030-01-01T00:00:10Z"),
        runs: &[],
        nodes: Some(&nodes),
        api_server: Some("v1.30.0-r4"),
        node_details: NodeDetails::Shown,
    });
    let hidden = decide_hidden(&t, "2030-01-01T00:00:10Z", &nodes);
    let n = shown.status.nodes.clone().expect("nodes");
    assert_eq!(n.newest_names, ["n1"]);
    let (vs, vh) = (
        shown.status.versions.clone().expect("versions"),
        hidden.status.versions.clone().expect("versions"),
    );
    assert_eq!(vs.current.api_server.as_deref(), Some("v1.30.0-r4"));
    assert_eq!(vs.current.kubelets, ["v1.29.8-r0"]);
    assert_eq!(vs.current.fingerprint, vh.current.fingerprint);
    let t = with_status(&t, &shown);
    let d = decide_hidden(&t, "2030-01-01T00:10:00Z", &nodes);
    assert!(
        d.create.is_none(),
        "hiding the details is not a version change"
    );
}

/// A status written by an earlier version (or while the namespace could list Nodes) loses
/// its names and versions at the next decision; the Nodes it named are still not new.
#[test]
fn names_and_versions_already_in_status_are_taken_out_when_access_is_hidden() {
    let pool = json!({"pool": "a"});
    let nodes = vec![node("n1", CREATED, pool.clone(), "v1.29.8-r0")];
    let seen = decide(&Inputs {
        trigger: &both_trigger(json!({})),
        now: ts("2030-01-01T00:00:10Z"),
        runs: &[],
        nodes: Some(&nodes),
        api_server: Some("v1.30.0-r4"),
        node_details: NodeDetails::Shown,
    });
    let versions =
        serde_json::to_value(seen.status.versions.clone().expect("versions")).expect("json");
    let t = both_trigger(json!({
        "nodes": {"count": 1, "newestCreationTime": CREATED, "newestNames": ["n1"]},
        "versions": versions,
    }));
    let d = decide_hidden(&t, "2030-01-01T00:01:00Z", &nodes);
    assert!(
        d.create.is_none(),
        "n1 was seen (by name) and the versions are unchanged"
    );
    let text = serde_json::to_string(&d.status).expect("json");
    assert!(!text.contains("n1") && !text.contains("v1.29.8"), "{text}");
    assert_eq!(d.status.nodes.expect("nodes").newest_ids.len(), 1);
}
