//! The transitions on inline objects: no API server, no HSS, no clock.

use super::*;
use crate::crd::cluster_scan_task::ResourceResult;
use hss_client::{Api as HssApi, model::TaskInfo};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("valid")
}

fn obj(yaml: &str) -> ClusterScanTask {
    serde_saphyr::from_str(yaml).expect("inline ClusterScanTask")
}

const PENDING: &str = r#"
apiVersion: hss.scanops.dev/v1alpha1
kind: ClusterScanTask
metadata: {name: scan, namespace: ns, generation: 2, uid: u1}
spec:
  taskType: cluster_scan
  clusterScan: {rangeType: all_cluster, scanTypes: [cluster_vul]}
  retryFailedClusters: 1
"#;

fn with_status(base: &str, status: serde_json::Value) -> ClusterScanTask {
    let mut o = obj(base);
    o.status = Some(serde_json::from_value(status).expect("status"));
    o
}

fn service_error(status: u16, code: &str, retry_after: Option<u64>) -> hss_client::Error {
    hss_client::Error::Service {
        api: HssApi::CreateTask,
        status,
        code: Some(code.into()),
        message: Some("said the server".into()),
        request_id: Some("req-1".into()),
        retry_after: retry_after.map(Duration::from_secs),
        refreshable: false,
    }
}

fn cond<'a>(t: &'a Transition, type_: &str) -> Option<(&'a str, &'a str)> {
    conditions::get(&t.status.conditions, type_).map(|c| (c.status.as_str(), c.reason.as_str()))
}

fn reasons(t: &Transition) -> Vec<&str> {
    t.events.iter().map(|e| e.reason.as_str()).collect()
}

fn info(status: &str, failed: i64) -> TaskInfo {
    serde_json::from_value(serde_json::json!({
        "task_id": "t-1", "task_type": "cluster_scan", "task_status": status,
        "cluster_scan_info": {"scan_type_list": ["cluster_vul"], "failed_cluster_num": failed},
    }))
    .expect("task info")
}

fn row(status: &str) -> ResourceResult {
    ResourceResult {
        id: "c1".into(),
        name: None,
        status: status.into(),
        failures: vec![],
    }
}

/// The first attempt of a scan, named `a1`.
fn first_attempt(now: Timestamp) -> crate::submission::Attempt {
    crate::submission::Attempt {
        id: "a1".into(),
        ..crate::submission::Attempt::new(0, now)
    }
}

#[test]
fn an_invalid_spec_fails_for_good_with_a_reason_and_one_event() {
    let t = invalid_spec(&obj(PENDING), "invalid_spec", "clusterIds is empty", at(0));
    assert_eq!(t.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&t, status::FAILED), Some(("True", "InvalidSpec")));
    assert_eq!(t.status.observed_generation, Some(2));
    assert_eq!(reasons(&t), ["InvalidSpec"]);
    assert_eq!(t.action, Action::await_change());
}

#[test]
fn waiting_for_credentials_or_budget_writes_once_when_the_wait_starts() {
    // (transition, condition, reason) per kind of wait
    type Step = fn(&ClusterScanTask, Timestamp) -> Transition;
    let cases: [(Step, &str, &str); 2] = [
        (
            |o, now| {
                credentials_unavailable(
                    o,
                    "SecretNotFound",
                    "Secret ns/x does not exist",
                    Duration::from_secs(30),
                    now,
                )
            },
            status::CREDENTIALS_READY,
            "SecretNotFound",
        ),
        (
            |o, now| waiting_for_budget(o, Duration::from_secs(7), now),
            status::THROTTLED,
            "BudgetExhausted",
        ),
    ];
    for (step, type_, reason) in cases {
        let first = step(&obj(PENDING), at(0));
        assert_eq!(first.status.phase, Some(Phase::Pending), "{reason}");
        assert_eq!(
            first.events.len(),
            1,
            "{reason}: an Event when the wait starts"
        );
        let value = if type_ == status::THROTTLED {
            "True"
        } else {
            "False"
        };
        assert_eq!(cond(&first, type_), Some((value, reason)));
        let mut waiting = obj(PENDING);
        waiting.status = Some(first.status.clone());
        let again = step(&waiting, at(30));
        assert_eq!(
            Some(&again.status),
            waiting.status.as_ref(),
            "{reason}: a later attempt changes nothing, so nothing is written"
        );
        assert!(again.events.is_empty(), "{reason}: no second Event");
    }
}

#[test]
fn waiting_for_the_budget_is_a_normal_event_and_a_429_a_warning() {
    let waiting = waiting_for_budget(&obj(PENDING), Duration::from_secs(1), at(0));
    assert_eq!(reasons(&waiting), ["Throttled"]);
    assert!(
        !waiting.events[0].warning,
        "the designed wait needs no person"
    );
    let recorded = {
        let mut o = obj(PENDING);
        o.status = Some(attempt(&o, &first_attempt(at(0))));
        o
    };
    let refused = post_failed(&recorded, &service_error(429, "APIGW.0308", Some(5)), at(1));
    assert_eq!(reasons(&refused), ["Throttled"]);
    assert!(
        refused.events[0].warning,
        "HSS refusing a call stays a Warning"
    );
}

#[test]
fn the_attempt_record_counts_the_attempt_and_ends_the_wait() {
    let throttled = waiting_for_budget(&obj(PENDING), Duration::from_secs(1), at(0));
    let mut o = obj(PENDING);
    o.status = Some(throttled.status);
    let st = attempt(&o, &first_attempt(at(5)));
    assert_eq!(st.phase, Some(Phase::Submitting));
    let sub = st.submission.expect("submission");
    assert_eq!((sub.attempt_id.as_deref(), sub.attempts), (Some("a1"), 1));
    assert_eq!(sub.started_at, Some(Time(at(5))));
    assert!(conditions::get(&st.conditions, status::THROTTLED).is_none());
}

#[test]
fn a_failed_post_is_classified_by_what_it_may_have_done() {
    let recorded = {
        let mut o = obj(PENDING);
        o.status = Some(attempt(&o, &first_attempt(at(0))));
        o
    };
    // (error, phase after, Failed condition, CredentialsReady, Event, why)
    let cases = [
        (
            service_error(400, "HSS.1001", None),
            Phase::Failed,
            Some(("True", "InvalidRequest")),
            None,
            "Failed",
            "rejected: final, never retried",
        ),
        (
            service_error(401, "APIGW.0301", None),
            Phase::Failed,
            Some(("True", "Unauthenticated")),
            Some(("False", "AuthenticationFailed")),
            "Failed",
            "a bad signature is never retried (HSS locks the key)",
        ),
        (
            service_error(429, "APIGW.0308", Some(20)),
            Phase::Pending,
            None,
            None,
            "Throttled",
            "throttled: nothing was created, retry after the server's wait",
        ),
        (
            service_error(502, "APIGW.0201", None),
            Phase::Submitting,
            None,
            None,
            "SubmissionAmbiguous",
            "a 5xx may have created it: resolve by lookup",
        ),
    ];
    for (err, phase, failed, creds, event, why) in cases {
        let t = post_failed(&recorded, &err, at(1));
        assert_eq!(t.status.phase, Some(phase), "{why}");
        assert_eq!(cond(&t, status::FAILED), failed, "{why}");
        assert_eq!(cond(&t, status::CREDENTIALS_READY), creds, "{why}");
        assert_eq!(reasons(&t), [event], "{why}");
        let last = t.status.last_error.as_ref().expect("lastError");
        assert_eq!(last.request_id.as_deref(), Some("req-1"), "{why}");
        if phase == Phase::Pending {
            assert_eq!(t.action, Action::requeue(Duration::from_secs(20)), "{why}");
            assert_eq!(
                t.status
                    .submission
                    .as_ref()
                    .and_then(|s| s.attempt_id.clone()),
                None,
                "{why}: the attempt is closed"
            );
        }
    }
}

#[test]
fn a_known_task_is_submitted_and_says_how_it_became_known() {
    let o = with_status(
        PENDING,
        serde_json::json!({"phase": "Submitting", "submission": {"attemptId": "a1", "attempts": 1}}),
    );
    // (resolution, condition reason, recorded resolution)
    for (resolution, reason, recorded) in [
        (Resolution::Response, "Submitted", "Response"),
        (Resolution::Lookup, "Adopted", "Lookup"),
    ] {
        let t = task_known(&o, "t-1", resolution, Duration::from_secs(1), at(2));
        assert_eq!(t.status.phase, Some(Phase::Submitted));
        assert_eq!(t.status.task_id.as_deref(), Some("t-1"));
        assert_eq!(cond(&t, status::SUBMITTED), Some(("True", reason)));
        assert_eq!(
            t.status.submission.and_then(|s| s.resolution).as_deref(),
            Some(recorded)
        );
        assert_eq!(t.action, Action::requeue(Duration::from_secs(4)));
    }
    let back = not_created(&o);
    assert_eq!(back.status.phase, Some(Phase::Pending));
    assert_eq!(reasons(&back), ["NotCreated"]);
}

#[test]
fn following_a_task_reports_running_once_and_finishes_by_the_failure_count() {
    let submitted = with_status(
        PENDING,
        serde_json::json!({"phase": "Submitted", "taskId": "t-1"}),
    );
    let ready = progressed(&submitted, &info("ready", 0), Duration::from_secs(1));
    assert_eq!(ready.status.phase, Some(Phase::Submitted));
    assert!(ready.events.is_empty());
    let running = progressed(&submitted, &info("running", 0), Duration::from_secs(1));
    assert_eq!(running.status.phase, Some(Phase::Running));
    assert_eq!(reasons(&running), ["Running"]);
    let mut o = submitted.clone();
    o.status = Some(running.status);
    assert!(
        progressed(&o, &info("running", 0), Duration::from_secs(1))
            .events
            .is_empty(),
        "Running is news once"
    );

    // (HSS's failed count, result rows, phase, Event is a warning)
    let cases = [
        (0, vec![row("success")], Phase::Succeeded, false),
        (1, vec![row("failed")], Phase::PartiallyFailed, true),
        (0, vec![row("failed")], Phase::PartiallyFailed, true),
    ];
    for (failed, rows, phase, warning) in cases {
        let t = finished(&o, &info("finished", failed), rows, at(9));
        assert_eq!(t.status.phase, Some(phase));
        assert_eq!(cond(&t, status::COMPLETE), Some(("True", phase.as_str())));
        assert_eq!(t.events[0].warning, warning);
        assert_eq!(t.status.finished_at, Some(Time(at(9))));
    }
}

#[test]
fn failed_clusters_are_retried_only_as_often_as_the_spec_allows() {
    let running = with_status(
        PENDING,
        serde_json::json!({"phase": "Running", "taskId": "t-1"}),
    );
    let rows = vec![row("failed")];
    assert!(wants_retry(&running, &info("finished", 1), &rows));
    assert!(!wants_retry(
        &running,
        &info("finished", 0),
        &[row("success")]
    ));
    let t = retried(
        &running,
        &info("finished", 1),
        rows.clone(),
        Duration::from_secs(1),
        at(0),
    );
    assert_eq!(t.status.retries, Some(1));
    assert_eq!(t.status.phase, Some(Phase::Running));
    assert_eq!(reasons(&t), ["Retried"]);
    let mut again = running.clone();
    again.status = Some(t.status);
    assert!(
        !wants_retry(&again, &info("finished", 1), &rows),
        "retryFailedClusters: 1 allows one retry"
    );
}

#[test]
fn a_finished_report_of_the_run_before_a_retry_is_not_the_end() {
    let running = with_status(
        PENDING,
        serde_json::json!({"phase": "Running", "taskId": "t-1"}),
    );
    let ended = |end_ms: Option<i64>| {
        let mut i = info("finished", 1);
        i.end_time = end_ms;
        i
    };
    let t = retried(
        &running,
        &ended(Some(5_000)),
        vec![row("failed")],
        Duration::from_secs(1),
        at(10),
    );
    let mut after = running.clone();
    after.status = Some(t.status);
    // HSS still shows the old run: not the end, nothing written.
    assert!(retry_not_yet_shown(&after, &ended(Some(5_000)), at(11)));
    let wait = awaiting_retry(&after, Duration::from_secs(2));
    assert_eq!(Some(&wait.status), after.status.as_ref());
    assert!(wait.events.is_empty());
    // Without end times, only the settle time tells.
    assert!(retry_not_yet_shown(&after, &ended(None), at(11)));
    // The re-run ended (a later end time): the end.
    assert!(!retry_not_yet_shown(&after, &ended(Some(9_000)), at(12)));
    // HSS reports running: not a finished report at all.
    assert!(!retry_not_yet_shown(&after, &info("running", 0), at(12)));
    // Past the settle time, the old report is believed.
    let settle = RETRY_SETTLE.as_secs() as i64;
    assert!(retry_not_yet_shown(
        &after,
        &ended(Some(5_000)),
        at(10 + settle - 1)
    ));
    assert!(!retry_not_yet_shown(
        &after,
        &ended(Some(5_000)),
        at(10 + settle)
    ));
    // Never retried: every finished report is the end.
    assert!(!retry_not_yet_shown(&running, &ended(Some(5_000)), at(11)));
}

#[test]
fn missing_credentials_are_looked_for_again_sooner_first_then_less_often() {
    let o = obj(PENDING);
    assert_eq!(
        credentials_retry(&o, at(0)),
        Duration::from_secs(5),
        "just missing"
    );
    let mut waiting = obj(PENDING);
    waiting.status =
        Some(credentials_unavailable(&o, "SecretNotFound", "gone", Duration::ZERO, at(0)).status);
    // (seconds since the condition turned False, next look in)
    for (since, next) in [(4, 5), (60, 30), (180, 90), (3600, 120)] {
        assert_eq!(
            credentials_retry(&waiting, at(since)),
            Duration::from_secs(next),
            "{since}s missing"
        );
    }
}

#[test]
fn an_unresolved_attempt_says_so_after_the_deadline_and_offers_ways_out_honoured_once() {
    let submitting = |annotations: serde_json::Value| {
        let mut o = with_status(
            PENDING,
            serde_json::json!({"phase": "Submitting", "submission": {
                "attemptId": "a-1", "startedAt": "2023-11-14T22:13:20Z", "attempts": 1,
            }}),
        );
        o.metadata.annotations = serde_json::from_value(annotations).expect("annotations");
        o
    };
    let obj = submitting(serde_json::json!({}));
    let after = Duration::from_secs(600);
    let quiet = with_notice(
        lookup_inconclusive(&obj, Duration::from_secs(5)),
        &obj,
        "why",
        after,
        at(599),
    );
    assert!(quiet.events.is_empty() && cond(&quiet, "Submitted").is_none());
    let noticed = with_notice(
        lookup_inconclusive(&obj, Duration::from_secs(5)),
        &obj,
        "why",
        after,
        at(600),
    );
    assert_eq!(
        cond(&noticed, "Submitted"),
        Some(("False", "SubmissionUnresolved"))
    );
    assert_eq!(reasons(&noticed), ["SubmissionUnresolved"]);
    let message = &conditions::get(&noticed.status.conditions, "Submitted")
        .expect("condition")
        .message;
    assert!(
        message.contains("hss.scanops.dev/resubmit=a-1"),
        "{message}"
    );
    // Once: the same notice again is no news.
    let mut again = obj.clone();
    again.status = Some(noticed.status);
    let later = with_notice(
        lookup_inconclusive(&again, Duration::from_secs(5)),
        &again,
        "why",
        after,
        at(700),
    );
    assert!(later.events.is_empty());

    assert_eq!(way_out(&obj), None);
    assert_eq!(
        way_out(&submitting(serde_json::json!({RESUBMIT_ANNOTATION: "a-1"}))),
        Some(WayOut::Resubmit)
    );
    assert_eq!(
        way_out(&submitting(serde_json::json!({RESUBMIT_ANNOTATION: "a-0"}))),
        None,
        "a resubmit naming an earlier attempt does nothing"
    );
    assert_eq!(
        way_out(&submitting(serde_json::json!({ADOPT_ANNOTATION: " t-9 "}))),
        Some(WayOut::Adopt("t-9".into()))
    );
    let t = resubmitted(
        &submitting(serde_json::json!({RESUBMIT_ANNOTATION: "a-1"})),
        at(700),
    );
    assert_eq!(t.status.phase, Some(Phase::Pending));
    let sub = t.status.submission.as_ref().expect("submission");
    assert_eq!(
        (sub.attempt_id.as_deref(), sub.resolution.as_deref()),
        (None, Some("Resubmitted"))
    );
    let mut after_resubmit = obj.clone();
    after_resubmit.status = Some(t.status);
    after_resubmit.metadata.annotations =
        serde_json::from_value(serde_json::json!({RESUBMIT_ANNOTATION: "a-1"})).expect("ann");
    assert_eq!(way_out(&after_resubmit), None, "honoured once");
}

#[test]
fn findings_refused_by_hss_are_recorded_once_and_not_retried_transient_ones_are() {
    let done = with_status(
        PENDING,
        serde_json::json!({"phase": "Succeeded", "taskId": "t-1", "results": [
            {"id": "c1", "status": "success"},
            {"id": "c2", "status": "failed", "failures": [{"scanType": "cluster_vul", "reason": "x"}]}
        ]}),
    );
    assert!(crate::controller::findings::wanted(&done, at(0)));
    let (clusters, failed, cut) = crate::controller::findings::scope(&done);
    assert_eq!(
        clusters,
        ["c1".to_string(), "c2".to_string()].into(),
        "the results' clusters"
    );
    assert!(!cut);
    assert_eq!(
        failed.into_iter().collect::<Vec<_>>(),
        vec![("c2".to_string(), "cluster_vul".to_string())]
    );

    // Finished over an hour before the operator first looks: never read (a later scan's
    // findings would show); once tried, retried whatever the age.
    let mut old = done.clone();
    old.status.as_mut().expect("status").finished_at =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)));
    assert!(crate::controller::findings::wanted(&old, at(3600)));
    assert!(!crate::controller::findings::wanted(&old, at(3601)));

    // 403 HSS.0013: refused, a Warning, no retry, and never wanted again.
    let refused = crate::findings::Error::Hss(service_error(403, "HSS.0013", None));
    let t = findings_unavailable(&done, &refused, at(0));
    assert_eq!(cond(&t, "FindingsRead"), Some(("False", "FindingsRefused")));
    assert_eq!(reasons(&t), vec!["FindingsRefused"]);
    assert_eq!(t.action, Action::await_change());
    let mut after = done.clone();
    after.status = Some(t.status.clone());
    assert!(!crate::controller::findings::wanted(&after, at(0)));

    // 503: pending, no Event, a retry 10 s on, then as long again as it has been failing.
    let flaky = crate::findings::Error::Hss(service_error(503, "SVC.0001", None));
    let t = findings_unavailable(&done, &flaky, at(0));
    assert_eq!(cond(&t, "FindingsRead"), Some(("False", "FindingsPending")));
    assert!(t.events.is_empty());
    assert_eq!(t.action, Action::requeue(Duration::from_secs(10)));
    let mut failing = done.clone();
    failing.status = Some(t.status.clone());
    assert!(crate::controller::findings::wanted(&failing, at(0)));
    failing.status.as_mut().expect("status").finished_at =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)));
    assert!(
        crate::controller::findings::wanted(&failing, at(7200)),
        "pending reads go on"
    );
    let t = findings_unavailable(&failing, &flaky, at(60));
    assert_eq!(t.action, Action::requeue(Duration::from_secs(60)));
    let t = findings_unavailable(&failing, &flaky, at(3600));
    assert_eq!(t.action, Action::requeue(Duration::from_secs(300)));

    // Read: the summary, True, one Event (a Warning: there is a high risk).
    let found: crate::crd::findings::Findings = serde_json::from_value(serde_json::json!({
        "readAt": "2026-12-05T00:00:00Z", "total": {"high": 1, "medium": 0, "low": 2, "tips": 0},
        "clustersRead": 2, "clustersWithFindings": 1
    }))
    .expect("findings");
    let t = findings_read(&failing, found, at(3700));
    assert_eq!(cond(&t, "FindingsRead"), Some(("True", "Read")));
    assert!(t.events[0].warning);
    assert!(
        t.events[0]
            .note
            .contains("1 high, 2 low risks in 1 of 2 cluster(s)"),
        "{:?}",
        t.events[0]
    );
    assert!(t.status.last_error.is_none());
}
