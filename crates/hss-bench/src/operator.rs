//! `hss-operator run` as a child process (through `hss_testkit::OperatorProcess`), its
//! readiness, and the submission-step figures from its `/metrics`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use hss_testkit::Child;

/// The operator's flags and log that differ between scenarios.
pub struct OperatorSettings<'a> {
    pub namespace: &'a str,
    pub sim_url: &'a str,
    pub kubeconfig: &'a Path,
    pub admin_port: u16,
    pub budget_per_minute: u32,
    pub budget_window: Duration,
    pub poll_interval: Duration,
    pub log: PathBuf,
    /// A variant's extra flags.
    pub extra_args: &'a [String],
}

/// Starts `bin run` with a fresh log; `RUST_LOG` is `BENCH_OPERATOR_LOG`, else `info`. Returns
/// it with the port of its metrics server, plain http without auth (`--metrics-insecure`):
/// authenticated scrapes would add TokenReviews to the API requests the bench counts.
pub fn start_operator(bin: &Path, s: &OperatorSettings<'_>) -> anyhow::Result<(Child, u16)> {
    let _ = std::fs::remove_file(&s.log);
    let log = std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into());
    let process =
        hss_testkit::OperatorProcess::new(bin, s.kubeconfig, s.namespace, s.sim_url, &s.log)
            .args([
                "--budget-per-minute".to_string(),
                s.budget_per_minute.to_string(),
                "--budget-window".into(),
                humantime::format_duration(s.budget_window).to_string(),
                "--poll-interval".into(),
                humantime::format_duration(s.poll_interval).to_string(),
                "--admin-listen".into(),
                format!("127.0.0.1:{}", s.admin_port),
                "--metrics-insecure".into(),
            ])
            .args(s.extra_args)
            .env("POD_NAME", "bench")
            .env("RUST_LOG", &log);
    let child = process.spawn().context("start hss-operator run")?;
    Ok((child, process.metrics_port()))
}

/// Polls `/readyz` every `poll` until it answers 200; fails once `since` is `timeout` ago.
pub async fn wait_ready(
    http: &reqwest::Client,
    port: u16,
    since: Instant,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<()> {
    while readyz(http, port).await != 200 {
        if since.elapsed() > timeout {
            bail!("operator not ready in {}s; see its log", timeout.as_secs());
        }
        tokio::time::sleep(poll).await;
    }
    Ok(())
}

/// `/readyz`'s status code, 0 if there was no answer.
async fn readyz(http: &reqwest::Client, port: u16) -> u16 {
    match http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

const STEP_METRIC: &str = "hss_operator_submission_step_duration_seconds";

/// The label values of the operator's submission steps, in order. The one place the bench
/// reads the operator's list of steps.
fn step_names() -> impl Iterator<Item = &'static str> {
    hss_operator::controller::metrics::SubmissionStep::ALL
        .into_iter()
        .map(hss_operator::controller::metrics::SubmissionStep::as_str)
}

/// Per submission step: mean, and p50 and p99 as histogram bucket bounds ("<= X ms"), in
/// milliseconds, from the operator's `hss_operator_submission_step_duration_seconds` on its
/// (insecure) metrics port (empty if the metrics are unreadable).
pub async fn submission_steps(http: &reqwest::Client, metrics_port: u16) -> Vec<(String, String)> {
    let port = metrics_port;
    let Ok(resp) = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let text = resp.text().await.unwrap_or_default();
    step_names()
        .filter_map(|step| Some((step.to_string(), step_figures(&text, step)?)))
        .collect()
}

/// "mean M ms, p50 <= X ms, p99 <= Y ms" of one step; `None` without observations.
fn step_figures(text: &str, step: &str) -> Option<String> {
    let (sum, count) = (
        step_value(text, "sum", step)?,
        step_value(text, "count", step)?,
    );
    let b = step_buckets(text, step);
    (count > 0.0).then(|| {
        format!(
            "mean {:.1} ms, p50 {}, p99 {}",
            sum / count * 1000.0,
            bucket_at(&b, count, 0.5),
            bucket_at(&b, count, 0.99)
        )
    })
}

/// `..._sum{step="record"} 0.25` (or `_count`) of one step.
fn step_value(text: &str, name: &str, step: &str) -> Option<f64> {
    let prefix = format!("{STEP_METRIC}_{name}{{step=\"{step}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// `..._bucket{le="0.005",step="record"} 12` of one step: (upper bound, cumulative count).
fn step_buckets(text: &str, step: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{STEP_METRIC}_bucket{{le=\"");
    let suffix = format!("\",step=\"{step}\"}} ");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (le, count) = rest.split_once(suffix.as_str())?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The bound of the first bucket holding quantile `q` of `count` observations.
fn bucket_at(b: &[(f64, f64)], count: f64, q: f64) -> String {
    b.iter()
        .find(|(_, c)| *c >= (count * q).ceil())
        .map(|(le, _)| {
            if le.is_finite() {
                format!("<= {} ms", le * 1000.0)
            } else {
                "> 10 s".into()
            }
        })
        .unwrap_or_else(|| "n/a".into())
}
