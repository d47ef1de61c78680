//! `hss-operator submit -f scan.yaml`: one scan without a cluster, for CI pipelines.
//!
//! The operator's submission protocol ([`crate::submission`]), minus Kubernetes: the attempt
//! lives in this process instead of an object's status. One budget token per POST, sent
//! through a [`Ledger`]; an outcome that proves nothing was created (connection refused, 429,
//! ...) may be posted again after [`backoff`]; an ambiguous one (timeout, reset, 5xx,
//! unreadable 200) is resolved with a ListTasks lookup and only posted again once the lookup
//! proves no task exists. When several identical tasks could be ours the command stops and
//! names them rather than guess ([`Candidates::Refuse`]).
//!
//! The manifest may come from someone else (a pull request): its endpoint, region, project and
//! enterprise project never move the pipeline's credentials. Flags (and their environment
//! names) win, except a manifest endpoint on the allow-list ([`HssArgs::manifest_overrides`]).
//!
//! Output: text (the task id, then with `--wait` a row per cluster or file and the findings),
//! json (one object), or with `--wait` one of the CI formats ([`ci_formats`]: JUnit XML,
//! SARIF). The exit code is the same whatever the format.

mod ci_formats;
mod follow;

pub use follow::follow;

use std::{
    collections::{BTreeSet, HashSet},
    io::Write,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use serde::Serialize;

use crate::{
    config::{self, HssArgs, Overrides},
    crd::{
        ClusterScanTask,
        findings::{Findings, SecurityCheck},
    },
    findings::{
        self,
        gate::{FailOn, Risk},
    },
    submission::{self, AfterPost, Attempt, Candidates, Found, Ledger, backoff},
};
use hss_client::{Api, Outcome, client::HssClient, model::*, resolve};

/// Exit codes of `submit`, also listed in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Internal = 1,
    InvalidInput = 2,
    Rejected = 3,
    Unresolved = 4,
    Unavailable = 5,
    ScanFailures = 6,
    WaitTimedOut = 7,
    FindingsAtOrAbove = 8,
    FindingsUnreadable = 9,
}

pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  task created (with --wait: finished, every cluster or file succeeded)
  1  internal error
  2  invalid input: unreadable or invalid manifest, missing settings
  3  rejected by HSS (bad request, authentication, permissions, quota): no task was created
  4  unresolved: a task may have been created but could not be identified (ids printed)
  5  HSS unavailable: no task was created, retries exhausted
  6  with --wait: the task finished, some clusters or files failed
  7  with --wait: gave up waiting; the task exists and is still running
  8  with --wait --fail-on LEVEL: the scan found risks at LEVEL or above (wins over 6)
  9  with --wait --fail-on LEVEL: the findings could not be read, so the gate cannot pass";

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// The task id, then (with --wait) a row per cluster or file and the findings.
    #[default]
    Text,
    /// One JSON object.
    Json,
    /// With --wait: JUnit XML, a test case per cluster (or file) and scan type, a failure per
    /// risk at or above --fail-on (at every level without it).
    Junit,
    /// With --wait: SARIF 2.1.0, a rule per risk, a result per risk row.
    Sarif,
}

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct SubmitArgs {
    /// ClusterScanTask manifest (YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,

    /// Follow the task until HSS reports it finished and print the per-cluster result.
    #[arg(long)]
    pub wait: bool,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// How often to ask HSS for progress with --wait (never faster than the budget allows).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// Give up waiting after this long (the task keeps running in HSS).
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,

    /// With --wait: exit 8 when the cluster scan found risks at this level or above (high,
    /// medium, low, tips). The findings are printed either way.
    #[arg(long, value_enum, requires = "wait")]
    pub fail_on: Option<FailOn>,

    /// CreateTask attempts whose failure proved that nothing was created.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,

    #[command(flatten)]
    pub hss: HssArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse the manifest: {0}")]
    Parse(String),
    #[error("failed to accept the manifest:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    #[error("failed to configure the HSS client")]
    Config(#[from] config::Error),
    #[error("failed to create the task: HSS rejected it")]
    Rejected(#[source] hss_client::Error),
    #[error("failed to create the task: HSS stayed unavailable; no task was created")]
    Unavailable(#[source] hss_client::Error),
    #[error(
        "failed to establish whether a task was created; candidates: [{}]; check them in the HSS console before submitting again",
        .candidates.join(", ")
    )]
    Unresolved {
        candidates: Vec<String>,
        #[source]
        source: Option<hss_client::Error>,
    },
    #[error("failed to follow task {task_id}")]
    Follow {
        task_id: String,
        #[source]
        source: hss_client::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Read { .. } | Error::Parse(_) | Error::Invalid(_) => "invalid_input",
            Error::Config(e) => e.category(),
            Error::Rejected(_) => "rejected",
            Error::Unavailable(_) => "unavailable",
            Error::Unresolved { .. } => "unresolved",
            Error::Follow { .. } => "follow",
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            Error::Read { .. } | Error::Parse(_) | Error::Invalid(_) | Error::Config(_) => {
                Exit::InvalidInput
            }
            Error::Rejected(_) => Exit::Rejected,
            Error::Unavailable(_) => Exit::Unavailable,
            Error::Unresolved { .. } => Exit::Unresolved,
            Error::Follow { .. } => Exit::WaitTimedOut,
        }
    }
}

/// Parses and validates a manifest the way admission would: structure, the CRD's CEL rules
/// and HSS's own body rules. Pure except for the CEL evaluation.
pub fn parse_manifest(text: &str) -> Result<ClusterScanTask, Error> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| Error::Parse(e.to_string()))?;
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let kind = value.get("kind").and_then(|v| v.as_str());
    if api_version != Some("hss.scanops.dev/v1alpha1") || kind != Some("ClusterScanTask") {
        return Err(Error::Invalid(vec![format!(
            "expected apiVersion hss.scanops.dev/v1alpha1 and kind ClusterScanTask, found {} {}",
            api_version.unwrap_or("(none)"),
            kind.unwrap_or("(none)")
        )]));
    }
    let task: ClusterScanTask = serde_path_to_error::deserialize(value)
        .map_err(|e| Error::Invalid(vec![format!("{}: {}", e.path(), e.inner())]))?;
    if let Err(errors) = task.validate_cel() {
        return Err(Error::Invalid(
            errors.iter().map(|e| e.to_string()).collect(),
        ));
    }
    task.spec.to_request().map_err(|e| Error::Invalid(e.0))?;
    let paths = task
        .spec
        .iac_scan
        .as_ref()
        .map(|i| i.path_problems())
        .unwrap_or_default();
    if !paths.is_empty() {
        return Err(Error::Invalid(paths));
    }
    Ok(task)
}

/// What `submit` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub task_id: String,
    pub task_type: TaskType,
    /// `response` (HSS answered) or `lookup` (found after an ambiguous attempt).
    pub resolution: &'static str,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_status: Option<TaskStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ResultRow>,
    /// What a finished cluster scan found (with --wait).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<Findings>,
    /// Why the findings could not be read (an error category).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings_error: Option<&'static str>,
    /// (cluster, scan type) pairs that failed in this task.
    #[serde(skip)]
    pub failed_scans: BTreeSet<(String, String)>,
    /// Every risk row the findings count (for the CI formats).
    #[serde(skip)]
    pub risks: Vec<Risk>,
    /// Each cluster's security-check counts (for the CI formats).
    #[serde(skip)]
    pub checks: Vec<(String, SecurityCheck)>,
}

impl Report {
    /// A task just created (or found by lookup), not yet followed.
    fn created(
        task_id: String,
        task_type: TaskType,
        resolution: &'static str,
        attempts: u32,
    ) -> Self {
        Self {
            task_id,
            task_type,
            resolution,
            attempts,
            task_status: None,
            results: vec![],
            findings: None,
            findings_error: None,
            failed_scans: BTreeSet::new(),
            risks: Vec::new(),
            checks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResultRow {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub status: ScanStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// The ledger's name for the one scan this process submits.
const SCAN: &str = "submit";

/// Creates the task once. See the module docs for the rules.
pub async fn create_once(
    client: &HssClient,
    req: &CreateTaskRequest,
    max_attempts: u32,
) -> Result<Report, Error> {
    // No other object can own a task here, and no claim outlives the process.
    let ledger = Ledger::new(None);
    let mut previous = 0u32;
    loop {
        let permit = client.acquire(Api::CreateTask).await;
        let attempt = Attempt::new(previous, jiff::Timestamp::now());
        let attempts = attempt.number;
        previous = attempts;
        let err = match ledger.post(SCAN, client.create_task(permit, req)).await {
            Ok(resp) => {
                return Ok(Report::created(
                    resp.task_id,
                    req.task_type,
                    "response",
                    attempts,
                ));
            }
            Err(err) => err,
        };
        tracing::warn!(attempt = attempts, id = %attempt.id, category = err.category(), outcome = err.outcome().as_str(), error = %err, "CreateTask failed");
        match submission::after_post(&err, attempts) {
            AfterPost::Final => return Err(Error::Rejected(err)),
            AfterPost::Retry(delay) => {
                if attempts >= max_attempts {
                    return Err(Error::Unavailable(err));
                }
                tokio::time::sleep(delay).await;
            }
            AfterPost::Lookup => match resolve_ambiguous(client, &ledger, req, &attempt).await? {
                Some(task_id) => {
                    return Ok(Report::created(task_id, req.task_type, "lookup", attempts));
                }
                None if attempts >= max_attempts => return Err(Error::Unavailable(err)),
                None => {}
            },
        }
    }
}

/// `Some(task id)` when the ambiguous attempt created a task, `None` when it proved it did not.
async fn resolve_ambiguous(
    client: &HssClient,
    ledger: &Ledger,
    req: &CreateTaskRequest,
    attempt: &Attempt,
) -> Result<Option<String>, Error> {
    const MAX_LOOKUP_FAILURES: u32 = 5;
    let started_at = attempt.started_at.as_millisecond();
    let mut failures = 0;
    loop {
        let lookup = ledger
            .adopt(SCAN, "", HashSet::new(), |claimed| async move {
                resolve::lookup(client, req, started_at, &claimed, resolve::SETTLE).await
            })
            .await;
        match lookup.map(|l| submission::after_lookup(l, Candidates::Refuse)) {
            Ok(Found::Task(task_id)) => return Ok(Some(task_id)),
            Ok(Found::Several(candidates)) => {
                return Err(Error::Unresolved {
                    candidates,
                    source: None,
                });
            }
            Ok(Found::NotCreated) => return Ok(None),
            Ok(Found::Inconclusive) => {
                return Err(Error::Unresolved {
                    candidates: vec![],
                    source: None,
                });
            }
            Ok(Found::Wait(wait)) => tokio::time::sleep(wait).await,
            Err(err) => {
                failures += 1;
                if failures >= MAX_LOOKUP_FAILURES || err.outcome() == Outcome::Rejected {
                    return Err(Error::Unresolved {
                        candidates: vec![],
                        source: Some(err),
                    });
                }
                tokio::time::sleep(err.retry_after().unwrap_or_else(|| backoff(failures))).await;
            }
        }
    }
}

/// Reads a finished scan's findings into `report` and applies `--fail-on`.
async fn gate(
    client: &HssClient,
    spec: &crate::crd::ClusterScanTaskSpec,
    report: &mut Report,
    fail_on: Option<FailOn>,
    exit: Exit,
) -> Exit {
    let scanned: BTreeSet<String> = report.results.iter().map(|r| r.id.clone()).collect();
    let failed_files: BTreeSet<String> = report
        .results
        .iter()
        .filter(|r| r.status == ScanStatus::Failed)
        .map(|r| r.id.clone())
        .collect();
    let read =
        findings::gate::read(client, spec, &scanned, &report.failed_scans, &failed_files).await;
    match read {
        None => exit,
        Some(Ok(found)) => {
            let tripped =
                fail_on.map_or(0, |level| findings::gate::tripped(&found.findings, level));
            report.findings = Some(found.findings);
            report.risks = found.risks;
            report.checks = found.checks;
            if tripped > 0 {
                return Exit::FindingsAtOrAbove;
            }
            exit
        }
        Some(Err(e)) => {
            tracing::warn!(error = %crate::report_error(&e), "failed to read the findings");
            report.findings_error = Some(e.category());
            if fail_on.is_some() && exit == Exit::Ok {
                Exit::FindingsUnreadable
            } else {
                exit
            }
        }
    }
}

/// The `submit` subcommand.
pub async fn run(args: SubmitArgs) -> ExitCode {
    let mut out = std::io::stdout();
    match execute(&args, &mut out).await {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(err) => {
            eprintln!("error: {}", crate::report_error(&err));
            if ci_formats::is_ci(args.output) {
                let failed = ci_formats::Outcome::Failed(&err);
                ci_formats::write(args.output, &mut out, &failed, args.fail_on);
            } else if let (Error::Unresolved { candidates, .. }, OutputFormat::Json) =
                (&err, args.output)
            {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"error": err.category(), "candidates": candidates})
                );
            }
            ExitCode::from(err.exit() as u8)
        }
    }
}

async fn execute(args: &SubmitArgs, out: &mut impl Write) -> Result<Exit, Error> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&args.file)
    }
    .map_err(|source| Error::Read {
        path: args.file.clone(),
        source,
    })?;
    let task = parse_manifest(&text)?;
    if ci_formats::is_ci(args.output) && !args.wait {
        return Err(Error::Invalid(vec![
            "-o junit and -o sarif describe a finished scan: add --wait".to_string(),
        ]));
    }
    if task.spec.credentials_secret_ref.is_some() {
        tracing::warn!(
            "spec.credentialsSecretRef is ignored by submit; using the flags and environment"
        );
    }
    let spec = &task.spec;
    let (overrides, ignored) = args.hss.manifest_overrides(&Overrides {
        region: spec.region.as_deref(),
        endpoint: spec.endpoint.as_deref(),
        project_id: spec.project_id.as_deref(),
        enterprise_project_id: spec.enterprise_project_id.as_deref(),
    })?;
    for note in ignored {
        tracing::warn!("{note}");
    }
    let client = args
        .hss
        .client(&overrides, args.hss.budget(), &config::process_env)
        .await?;
    let req = spec.to_request().map_err(|e| Error::Invalid(e.0))?;
    let mut report = create_once(&client, &req, args.max_attempts.max(1)).await?;
    if args.output == OutputFormat::Text {
        let _ = writeln!(out, "{}", report.task_id);
        let _ = out.flush();
    }
    let mut exit = Exit::Ok;
    if args.wait {
        let finished = follow(&client, &mut report, args.poll_interval, args.wait_timeout).await?;
        exit = if !finished {
            Exit::WaitTimedOut
        } else if report
            .results
            .iter()
            .any(|r| r.status != ScanStatus::Success)
        {
            Exit::ScanFailures
        } else {
            Exit::Ok
        };
        if finished {
            exit = gate(&client, spec, &mut report, args.fail_on, exit).await;
        }
        if args.output == OutputFormat::Text {
            for row in &report.results {
                let status = wire_name(row.status);
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    row.id,
                    row.name.as_deref().unwrap_or("-"),
                    status,
                    row.failures.join("; ")
                );
            }
            if let Some(f) = &report.findings {
                findings::gate::print(out, f);
            }
        }
    }
    if ci_formats::is_ci(args.output) {
        let followed = ci_formats::Outcome::Followed {
            report: &report,
            spec,
        };
        ci_formats::write(args.output, out, &followed, args.fail_on);
    }
    if args.output == OutputFormat::Json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
        );
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: hss.scanops.dev/v1alpha1
kind: ClusterScanTask
metadata:
  name: scan
spec:
  taskType: cluster_scan
  clusterScan:
    scanTypes: [cluster_vul, benchmark]
    rangeType: specific_cluster
    clusterIds: [c-1]
"#;

    #[test]
    fn a_valid_manifest_becomes_a_request() {
        let task = parse_manifest(GOOD).expect("valid");
        let req = task.spec.to_request().expect("request");
        assert_eq!(req.task_type, TaskType::ClusterScan);
        assert_eq!(
            req.cluster_scan_info.expect("cluster info").cluster_id_list,
            Some(vec!["c-1".to_string()])
        );
    }

    #[test]
    fn invalid_manifests_get_messages_a_person_understands() {
        // (manifest, expected fragment, reason)
        let cases = [
            (
                GOOD.replace("clusterIds: [c-1]", "clusterIds: []"),
                "clusterIds",
                "specific needs ids",
            ),
            (
                GOOD.replace("taskType: cluster_scan", "taskType: iac_scan"),
                "iacScan",
                "info must match type",
            ),
            (
                GOOD.replace("taskType: cluster_scan", "taskType: web_scan"),
                "web_scan",
                "unknown task type",
            ),
            (
                GOOD.replace("kind: ClusterScanTask", "kind: Pod"),
                "kind ClusterScanTask",
                "wrong kind",
            ),
            (
                GOOD.replace("scanTypes: [cluster_vul, benchmark]", "scanTypes: []"),
                "scanTypes",
                "empty scan types",
            ),
            ("{ not: yaml: [".to_string(), "", "unparsable"),
        ];
        for (manifest, fragment, reason) in cases {
            let err = parse_manifest(&manifest).expect_err(reason);
            let text = format!("{err}");
            assert!(text.contains(fragment), "{reason}: {text}");
            assert_eq!(err.exit(), Exit::InvalidInput, "{reason}");
        }
    }
}
