//! What a scan found, end to end on a real kube-apiserver: the operator process reads the
//! simulator's findings into `status.findings`, an Event and its metrics; `submit --wait
//! --fail-on high` gates on the same data; a trigger shows its run's findings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hss_client::results::{ClusterRisk, RiskLevel, RiskType};
use hss_operator::crd::{ClusterScanTask, Phase, findings::LevelCounts};
use hss_simulator::{SimConfig, Simulator};
use hss_testkit::cluster::*;
use kube::{Api, api::PostParams};

const CLUSTERS: [&str; 4] = ["cce-f-01", "cce-f-02", "cce-f-03", "cce-f-04"];

fn counts(rows: &[&ClusterRisk]) -> LevelCounts {
    let mut c = LevelCounts::default();
    for r in rows {
        match r.risk_level {
            RiskLevel::High => c.high += 1,
            RiskLevel::Medium => c.medium += 1,
            RiskLevel::Low => c.low += 1,
            RiskLevel::Tips => c.tips += 1,
            RiskLevel::Unknown => {}
        }
    }
    c
}

fn manifest(clusters: &[&str]) -> String {
    format!(
        "apiVersion: hss.scanops.dev/v1alpha1\nkind: ClusterScanTask\nmetadata: {{name: gate}}\n\
         spec:\n  taskType: cluster_scan\n  clusterScan:\n    scanTypes: [risk_assessment, benchmark, cluster_vul]\n    \
         rangeType: specific_cluster\n    clusterIds: [{}]\n",
        clusters.join(", ")
    )
}

/// `hss-operator submit --wait` against the simulator with `extra` flags: (exit code, stdout).
async fn submit(sim: &Simulator, manifest_text: &str, extra: &[&str]) -> (Option<i32>, String) {
    // Unique per call: the two tests run side by side in one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = repo().join(format!(
        "target/findings-{}-{call}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, manifest_text).expect("write manifest");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hss-operator"))
        .args(["submit", "-f"])
        .arg(&path)
        .args([
            "--wait",
            "--poll-interval",
            "200ms",
            "--endpoint",
            &sim.base_url(),
            "--allow-insecure-endpoints",
            "--project-id",
            "proj",
            "--budget-per-minute",
            "0",
        ])
        .args(extra)
        .env_clear()
        .env("HUAWEICLOUD_SDK_AK", "AKSIM")
        .env("HUAWEICLOUD_SDK_SK", "SKSIM")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("submit finished within 60 s")
        .expect("submit ran");
    let _ = std::fs::remove_file(&path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn a_finished_scan_records_what_the_simulator_holds_in_status_events_metrics_and_the_gate() {
    let client = admin().await;
    let ns = namespace(&client, "findings").await;
    let sim = Simulator::start(SimConfig {
        seed: 11,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let op = fast_operator(&ns, &sim.base_url(), "findings-operator", free_port());
    let metrics_port = op.metrics_port();
    let _op = op.spawn().expect("start hss-operator run");

    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    let ids: Vec<String> = CLUSTERS.iter().map(|c| c.to_string()).collect();
    api.create(
        &PostParams::default(),
        &scan(
            "found",
            serde_json::json!({"taskType": "cluster_scan", "clusterScan": {
                "scanTypes": ["risk_assessment", "benchmark", "cluster_vul"],
                "rangeType": "specific_cluster", "clusterIds": ids}}),
        ),
    )
    .await
    .expect("create");
    let done = wait_for(&api, "found", 90, |o| {
        condition(o, "FindingsRead").is_some_and(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(phase(&done), Some(Phase::Succeeded));
    let found = done
        .status
        .as_ref()
        .and_then(|s| s.findings.clone())
        .expect("status.findings");

    // What the simulator holds, counted independently of the operator's summary.
    let mut rows: Vec<(RiskType, ClusterRisk)> = Vec::new();
    for rt in RiskType::ALL {
        rows.extend(sim.cluster_risks("proj", rt).into_iter().map(|r| (rt, r)));
    }
    let all: Vec<&ClusterRisk> = rows.iter().map(|(_, r)| r).collect();
    let expected_total = counts(&all);
    assert!(
        expected_total.high > 0,
        "seed 11 gives these clusters a high risk"
    );
    assert_eq!(found.total, expected_total);
    assert_eq!(found.clusters_read, 4);
    let mut by_cluster: BTreeMap<(&str, &str), Vec<&ClusterRisk>> = BTreeMap::new();
    for (rt, r) in &rows {
        by_cluster
            .entry((r.cluster_id.as_str(), rt.as_str()))
            .or_default()
            .push(r);
    }
    for ((cluster, scan_type), risks) in &by_cluster {
        let listed = found
            .clusters
            .iter()
            .find(|c| c.cluster_id == *cluster)
            .and_then(|c| c.scans.iter().find(|s| s.scan_type == *scan_type))
            .unwrap_or_else(|| panic!("{cluster}/{scan_type} missing: {found:?}"));
        assert_eq!(listed.counts, counts(risks), "{cluster}/{scan_type}");
    }
    let reports = sim.cluster_reports("proj");
    assert_eq!(reports.len(), 4);
    let vulns: i64 = reports.iter().filter_map(|r| r.local_image_vul_num).sum();
    assert_eq!(
        found
            .security_check
            .as_ref()
            .map(|c| c.image_vulnerabilities),
        Some(vulns)
    );

    // The Event sums it up.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let note = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let list = events.list(&Default::default()).await.expect("events");
            if let Some(n) = list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("Findings"))
                .and_then(|e| e.note)
            {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("a Findings Event");
    assert!(
        note.starts_with(&format!("{} high", expected_total.high)),
        "{note}"
    );

    // The metrics show every cluster's counts, under the object's namespace.
    let metrics = hss_testkit::metrics::metrics(metrics_port).await;
    for ((cluster, scan_type), risks) in &by_cluster {
        let line = format!(
            "hss_operator_findings{{namespace=\"{ns}\",cluster_id=\"{cluster}\",scan_type=\"{scan_type}\",level=\"high\"}} {}",
            counts(risks).high
        );
        assert!(metrics.contains(&line), "{line} not in the metrics");
    }
    let sample = format!(
        "hss_operator_cluster_last_scan_timestamp_seconds{{namespace=\"{ns}\",cluster_id=\"{}\"}}",
        CLUSTERS[0]
    );
    assert!(metrics.contains(&sample), "{sample}");

    // The same data through submit: --fail-on high exits 8, and its JSON carries the findings.
    let (code, stdout) = submit(
        &sim,
        &manifest(&CLUSTERS),
        &["--fail-on", "high", "-o", "json"],
    )
    .await;
    assert_eq!(code, Some(8), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        report["findings"]["total"],
        serde_json::to_value(expected_total).expect("json")
    );
    // A cluster without high risks passes the same gate; the findings are printed as text.
    let clean: Vec<&str> = CLUSTERS
        .iter()
        .copied()
        .filter(|c| {
            rows.iter()
                .all(|(_, r)| r.cluster_id != *c || r.risk_level != RiskLevel::High)
        })
        .collect();
    assert!(
        !clean.is_empty(),
        "seed 11 leaves one of these clusters without high risks"
    );
    let (code, stdout) = submit(&sim, &manifest(&clean[..1]), &["--fail-on", "high"]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("findings: ")),
        "{stdout}"
    );
    let created: BTreeSet<String> = sim.created_tasks().into_iter().map(|t| t.task_id).collect();
    assert_eq!(
        created.len(),
        3,
        "one task per scan: the object's and two submits'"
    );
}

#[tokio::test]
async fn an_iac_scan_records_each_files_risks_and_leaves_out_the_file_that_failed() {
    let client = admin().await;
    let ns = namespace(&client, "iac-findings").await;
    let sim = Simulator::start(SimConfig {
        seed: 11,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let op = fast_operator(&ns, &sim.base_url(), "findings-iac-operator", free_port());
    let metrics_port = op.metrics_port();
    let _op = op.spawn().expect("start hss-operator run");
    // File ids starting with "bad" fail in the simulator.
    let files = ["app-deploy", "web-chart", "worker-job", "bad-values"];
    let api: Api<ClusterScanTask> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &scan(
            "iac",
            serde_json::json!({"taskType": "iac_scan",
                "iacScan": {"fileType": "k8s_yaml", "fileIds": files}}),
        ),
    )
    .await
    .expect("create");
    let done = wait_for(&api, "iac", 90, |o| {
        condition(o, "FindingsRead").is_some_and(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(phase(&done), Some(Phase::PartiallyFailed));
    let found = done
        .status
        .as_ref()
        .and_then(|s| s.findings.clone())
        .expect("status.findings");

    let mut total = LevelCounts::default();
    let mut with = 0;
    for file in &files[..3] {
        let rows = sim.iac_file_risks("proj", file);
        let mut c = LevelCounts::default();
        for r in &rows {
            match r.risk_level {
                RiskLevel::High => c.high += 1,
                RiskLevel::Medium => c.medium += 1,
                RiskLevel::Low => c.low += 1,
                RiskLevel::Tips => c.tips += 1,
                RiskLevel::Unknown => {}
            }
        }
        total.add(&c);
        if c.total() > 0 {
            with += 1;
            let listed = found
                .files
                .iter()
                .find(|f| f.file_id == *file)
                .unwrap_or_else(|| panic!("{file} missing: {found:?}"));
            assert_eq!(listed.counts, c, "{file}");
        }
        let metrics = hss_testkit::metrics::metrics(metrics_port).await;
        let line = format!(
            "hss_operator_iac_findings{{namespace=\"{ns}\",file_id=\"{file}\",level=\"high\"}} {}",
            c.high
        );
        assert!(c.total() == 0 || metrics.contains(&line), "{line}");
    }
    assert!(total.total() > 0, "seed 11 gives these files risks");
    assert_eq!(found.total, total);
    assert_eq!(
        (found.files_read, found.files_with_findings),
        (Some(3), Some(with))
    );
    assert!(sim.iac_file_risks("proj", "bad-values").is_empty());
    assert!(!found.files.iter().any(|f| f.file_id == "bad-values"));

    // submit gates on the same files.
    let manifest = format!(
        "apiVersion: hss.scanops.dev/v1alpha1\nkind: ClusterScanTask\nmetadata: {{name: gate}}\n\
         spec:\n  taskType: iac_scan\n  iacScan:\n    fileType: k8s_yaml\n    fileIds: [{}]\n",
        files[..3].join(", ")
    );
    let (code, stdout) = submit(&sim, &manifest, &["--fail-on", "tips", "-o", "json"]).await;
    assert_eq!(code, Some(8), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        report["findings"]["total"],
        serde_json::to_value(total).expect("json")
    );
}
