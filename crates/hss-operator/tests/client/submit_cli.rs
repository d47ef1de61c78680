//! `hss-operator submit` end to end: the real binary against the simulator's binary
//! (`hss-simulator`) in a child process, talking HTTP over loopback. Both children get a cleared
//! environment, so nothing from the developer's shell leaks in.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::Duration,
};

use hss_testkit::cluster::trap;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hss-operator");
const PROJECT: &str = "p1";
const AK: &str = "AK1";
const SK: &str = "SK1";

const ALL_CLUSTERS: &str = r#"
apiVersion: hss.scanops.dev/v1alpha1
kind: ClusterScanTask
metadata:
  name: ci-scan
spec:
  taskType: cluster_scan
  clusterScan:
    scanTypes: [cluster_vul, benchmark]
    rangeType: all_cluster
"#;

/// PATH and HOME only: everything else (HSS_*, HUAWEICLOUD_SDK_*, RUST_LOG) is cleared.
fn base_env() -> Vec<(&'static str, String)> {
    ["PATH", "HOME"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
        .collect()
}

/// `hss-simulator` in a child process; killed when dropped.
struct SimProcess {
    child: Child,
    url: String,
}

impl SimProcess {
    fn start(extra: &[&str]) -> Self {
        let bin = hss_testkit::simulator_bin().unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--credential",
                &format!("{AK}:{SK}"),
                "--project-id",
                PROJECT,
                "--throttle-per-minute",
                "0",
                "--run-after",
                "0s",
                "--finish-after",
                "1s",
            ])
            .args(extra)
            .env_clear()
            .envs(base_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hss-simulator");
        let stdout = child.stdout.take().expect("piped stdout");
        // The guard exists before anything can panic, so the child never outlives the test.
        let mut sim = SimProcess {
            child,
            url: String::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining until the child exits.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("hss-simulator announced its address within 10 s")
            .expect("hss-simulator printed a line")
            .expect("stdout is readable");
        sim.url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_string();
        assert!(sim.url.starts_with("http://127.0.0.1:"), "{}", sim.url);
        sim
    }

    async fn control(&self, path: &str) -> Value {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().build().expect("http client");
        let resp = http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("control plane answers");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("control plane JSON")
    }

    /// Task ids the simulator created, in order.
    async fn created_ids(&self) -> Vec<String> {
        self.control("/__sim/tasks")
            .await
            .as_array()
            .expect("task list")
            .iter()
            .map(|t| t["task_id"].as_str().expect("task_id").to_string())
            .collect()
    }

    /// `{"CreateTask": {"200": 1}, ...}`.
    async fn calls(&self) -> Value {
        self.control("/__sim/calls").await
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A manifest in the temp directory, removed when dropped.
struct Manifest(PathBuf);

impl Manifest {
    fn new(text: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "hss-submit-cli-{}-{}.yaml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).expect("write manifest");
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for Manifest {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Runs `hss-operator submit ARGS` with `HUAWEICLOUD_SDK_AK/SK` = AK1 and `secret_key`.
async fn submit(args: &[&str], secret_key: &str) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("submit")
        .args(args)
        .env_clear()
        .envs(base_env())
        .env("HUAWEICLOUD_SDK_AK", AK)
        .env("HUAWEICLOUD_SDK_SK", secret_key)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("submit finished within 30 s")
        .expect("submit ran");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `-f FILE --wait --poll-interval 200ms --endpoint URL --project-id p1`, with client-side
/// limiting off (at HSS's 5 calls a minute the second poll would come 12 s after the first)
/// and plain http allowed (the simulator's).
fn wait_args<'a>(manifest: &'a Manifest, url: &'a str) -> Vec<&'a str> {
    vec![
        "-f",
        manifest.path(),
        "--wait",
        "--poll-interval",
        "200ms",
        "--endpoint",
        url,
        "--allow-insecure-endpoints",
        "--project-id",
        PROJECT,
        "--budget-per-minute",
        "0",
    ]
}

fn specific_cluster(ids: &str) -> String {
    ALL_CLUSTERS
        .replace("[cluster_vul, benchmark]", "[risk_assessment]")
        .replace(
            "rangeType: all_cluster",
            &format!("rangeType: specific_cluster\n    clusterIds: {ids}"),
        )
}

#[tokio::test]
async fn submit_wait_prints_the_task_id_then_one_row_per_cluster_and_exits_0() {
    let sim = SimProcess::start(&[]);
    let manifest = Manifest::new(ALL_CLUSTERS);

    let run = submit(&wait_args(&manifest, &sim.url), SK).await;

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(sim.created_ids().await, [run.lines()[0]], "{run:?}");
    // The task id, one row per cluster, then the findings (lines from "findings:" on).
    let mut rows: Vec<Vec<&str>> = run.lines()[1..]
        .iter()
        .take_while(|l| !l.starts_with("findings:"))
        .map(|l| l.split('\t').collect())
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ["cce-sim-0001", "sim-prod", "success", ""],
            ["cce-sim-0002", "sim-staging", "success", ""],
            ["cce-sim-0003", "sim-dev", "success", ""],
        ],
        "{run:?}"
    );
    assert_eq!(
        sim.calls().await["CreateTask"],
        serde_json::json!({"200": 1})
    );
}

#[tokio::test]
async fn submit_json_output_is_one_object_with_the_finished_task_and_its_results() {
    let sim = SimProcess::start(&[]);
    let manifest = Manifest::new(ALL_CLUSTERS);
    let mut args = wait_args(&manifest, &sim.url);
    args.extend(["--output", "json"]);

    let run = submit(&args, SK).await;

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.lines().len(),
        1,
        "one JSON object and nothing else: {run:?}"
    );
    let report: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(report["taskId"], sim.created_ids().await[0].as_str());
    assert_eq!(report["taskType"], "cluster_scan");
    assert_eq!(report["taskStatus"], "finished");
    assert_eq!(report["resolution"], "response");
    assert_eq!(report["attempts"], 1);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{report}");
    for row in results {
        assert_eq!(row["status"], "success", "{report}");
        assert!(
            row["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("cce-sim-"))
        );
    }
}

#[tokio::test]
async fn an_invalid_manifest_exits_2_naming_the_field_and_calls_nothing() {
    let sim = SimProcess::start(&[]);
    // (manifest, field the message must name, reason)
    let cases = [
        (
            specific_cluster("[]"),
            "clusterIds",
            "specific_cluster needs cluster ids",
        ),
        (
            ALL_CLUSTERS.replace("[cluster_vul, benchmark]", "[]"),
            "scanTypes",
            "at least one scan type",
        ),
        (
            ALL_CLUSTERS.replace("taskType: cluster_scan", "taskType: iac_scan"),
            "iacScan",
            "an iac scan needs its settings",
        ),
        (
            ALL_CLUSTERS.replace("taskType: cluster_scan", "taskType: web_scan"),
            "web_scan",
            "unknown task type: the message names the value",
        ),
    ];
    for (text, field, reason) in cases {
        let manifest = Manifest::new(&text);

        let run = submit(&wait_args(&manifest, &sim.url), SK).await;

        assert_eq!(run.code, Some(2), "{reason}: {run:?}");
        assert!(run.stdout.is_empty(), "{reason}: {run:?}");
        assert!(run.stderr.contains("error:"), "{reason}: {run:?}");
        assert!(run.stderr.contains(field), "{reason}: {run:?}");
    }
    assert_eq!(sim.calls().await, serde_json::json!({}), "nothing was sent");
}

#[tokio::test]
async fn an_unknown_enum_value_in_a_manifest_is_reported_with_its_field_path() {
    // (manifest, field path the message must name, reason)
    let cases = [
        (
            ALL_CLUSTERS.replace("taskType: cluster_scan", "taskType: web_scan"),
            "spec.taskType",
            "unknown task type",
        ),
        (
            ALL_CLUSTERS.replace("[cluster_vul, benchmark]", "[cluster_vul, malware]"),
            "spec.clusterScan.scanTypes",
            "unknown scan type",
        ),
    ];
    for (text, field, reason) in cases {
        let manifest = Manifest::new(&text);

        let run = submit(
            &["-f", manifest.path(), "--endpoint", "http://127.0.0.1:1"],
            SK,
        )
        .await;

        assert_eq!(run.code, Some(2), "{reason}: {run:?}");
        assert!(run.stderr.contains(field), "{reason}: {run:?}");
    }
}

#[tokio::test]
async fn a_wrong_secret_exits_3_after_one_call_and_never_prints_the_secret() {
    let sim = SimProcess::start(&[]);
    let manifest = Manifest::new(ALL_CLUSTERS);
    let wrong = "wrong-secret-value";

    let run = submit(&wait_args(&manifest, &sim.url), wrong).await;

    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.contains("401") && run.stderr.contains("APIGW.0301"),
        "{run:?}"
    );
    assert!(!run.stderr.contains(wrong) && !run.stdout.contains(wrong));
    assert_eq!(
        sim.calls().await,
        serde_json::json!({"CreateTask": {"401": 1}}),
        "a signature failure is not retried"
    );
    assert!(sim.created_ids().await.is_empty());
}

#[tokio::test]
async fn an_unreachable_endpoint_exits_5() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let manifest = Manifest::new(ALL_CLUSTERS);
    let mut args = wait_args(&manifest, &url);
    args.extend(["--max-attempts", "1"]);

    let run = submit(&args, SK).await;

    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("no task was created"), "{run:?}");
}

#[tokio::test]
async fn a_failed_cluster_exits_6_with_its_failures_in_its_row() {
    let sim = SimProcess::start(&["--fail-cluster", "cce-bad"]);
    let manifest = Manifest::new(&specific_cluster("[cce-sim-0001, cce-bad]"));

    let run = submit(&wait_args(&manifest, &sim.url), SK).await;

    assert_eq!(run.code, Some(6), "{run:?}");
    let all = run.lines();
    let (lines, findings) = all.split_at(
        all.iter()
            .position(|l| l.starts_with("findings:"))
            .unwrap_or(all.len()),
    );
    assert_eq!(sim.created_ids().await, [lines[0]], "{run:?}");
    assert_eq!(lines.len(), 3, "{run:?}");
    // The failed cluster's scan found nothing this time: HSS's rows for it are older scans'.
    assert!(findings[0].ends_with("in 1 of 2 cluster(s)"), "{run:?}");
    assert!(!findings.iter().any(|l| l.contains("cce-bad")), "{run:?}");
    let row = |id: &str| -> Vec<&str> {
        lines[1..]
            .iter()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|cols| cols[0] == id)
            .unwrap_or_else(|| panic!("no row for {id}: {run:?}"))
    };
    let bad = row("cce-bad");
    assert_eq!(bad[2], "failed", "{run:?}");
    assert!(
        bad[3].starts_with("risk_assessment: ") && bad[3].len() > "risk_assessment: ".len(),
        "the failure names the scan and its reason: {run:?}"
    );
    assert_eq!(row("cce-sim-0001")[2], "success", "{run:?}");
}

/// The host a manifest's author chose is a trap (`hss_testkit::cluster::trap`).
#[tokio::test]
async fn a_manifest_cannot_send_the_pipelines_credentials_to_a_host_it_names() {
    let sim = SimProcess::start(&[]);
    let (trap_url, hits) = trap();
    let manifest = Manifest::new(&ALL_CLUSTERS.replace(
        "  taskType: cluster_scan",
        &format!("  taskType: cluster_scan\n  endpoint: {trap_url}\n  projectId: victim"),
    ));

    // With the pipeline's own settings, those win: the scan runs where the flags say.
    let run = submit(&wait_args(&manifest, &sim.url), SK).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(sim.created_ids().await, [run.lines()[0]], "{run:?}");
    assert!(
        run.stderr.contains("not on the allow-list") && run.stderr.contains("projectId"),
        "both ignored overrides are named: {run:?}"
    );

    // Without them, nothing is sent anywhere.
    let run = submit(&["-f", manifest.path()], SK).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("not on the allow-list") && run.stderr.contains(&trap_url),
        "{run:?}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the manifest's host"
    );
}

#[tokio::test]
async fn plain_http_is_refused_without_the_explicit_flag_and_nothing_is_sent() {
    let sim = SimProcess::start(&[]);
    let manifest = Manifest::new(ALL_CLUSTERS);
    let args: Vec<&str> = wait_args(&manifest, &sim.url)
        .into_iter()
        .filter(|a| *a != "--allow-insecure-endpoints")
        .collect();

    let run = submit(&args, SK).await;

    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("--allow-insecure-endpoints"),
        "the way out is named: {run:?}"
    );
    assert_eq!(
        sim.calls().await,
        serde_json::json!({}),
        "no call reached HSS"
    );
}

/// The samples run as they are against the demo's simulator: nothing to replace, only ids the
/// simulator knows, and the placeholders of a real account in comments only.
#[tokio::test]
async fn every_scan_sample_runs_as_it_is_against_the_simulator() {
    let samples = hss_testkit::repo().join("deploy/samples");
    let sim = SimProcess::start(&[]);
    let mut ran = 0;
    for entry in std::fs::read_dir(&samples).expect("deploy/samples") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read sample");
        if !text.contains("kind: ClusterScanTask\n") {
            continue;
        }
        let name = path.display().to_string();
        let data: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| l.split(" #").next().unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        for placeholder in ["REPLACE", "PLACEHOLDER"] {
            assert!(
                !data.contains(placeholder),
                "{name}: {placeholder} outside comments"
            );
        }
        let manifest = Manifest::new(&text);
        let run = submit(&wait_args(&manifest, &sim.url), SK).await;
        assert_eq!(run.code, Some(0), "{name}: {run:?}");
        let rows: Vec<&str> = run.lines()[1..]
            .iter()
            .take_while(|l| !l.starts_with("findings:"))
            .copied()
            .collect();
        assert!(!rows.is_empty(), "{name}: results: {run:?}");
        for row in rows {
            let id = row.split('\t').next().unwrap_or_default();
            assert!(
                id.starts_with("cce-sim-") || id.starts_with("iac-sim-"),
                "{name}: {id} is not an id of the simulator's"
            );
            assert!(row.contains("\tsuccess"), "{name}: {row}");
        }
        ran += 1;
    }
    assert_eq!(ran, 3, "the three ClusterScanTask samples ran");
}

/// A missing kubeconfig outside a cluster: kube's error names its cause inside its own
/// message, and the line says each cause once.
#[tokio::test]
async fn run_without_a_kubeconfig_says_each_cause_once() {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args([
        "run",
        "--project-id",
        PROJECT,
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .env_clear()
    .envs(base_env())
    .env("KUBECONFIG", "/nonexistent/hss-operator/kubeconfig")
    .env("HUAWEICLOUD_SDK_AK", AK)
    .env("HUAWEICLOUD_SDK_SK", SK)
    .stdin(Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("run gave up within 30 s")
        .expect("run ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("kubeconfig"))
        .unwrap_or_else(|| panic!("no line about the kubeconfig: {stderr}"));
    assert_eq!(
        line.matches("failed to read kubeconfig").count(),
        1,
        "{line}"
    );
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
}
