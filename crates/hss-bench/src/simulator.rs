//! `hss-simulator` as a child process, and the HSS calls it counted (`/__sim/calls`).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use hss_testkit::Child;

/// The simulator's flags that differ between scenarios.
pub struct SimSettings {
    pub throttle_per_minute: u32,
    pub throttle_window: Duration,
    pub finish_after: Duration,
}

/// Starts `hss-simulator` (stderr to `log`) and returns it with its base URL.
pub fn start_simulator(bin: &Path, s: &SimSettings, log: &Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--run-after", "0s"])
        .arg("--throttle-per-minute")
        .arg(s.throttle_per_minute.to_string())
        .arg("--throttle-window")
        .arg(humantime::format_duration(s.throttle_window).to_string())
        .arg("--finish-after")
        .arg(humantime::format_duration(s.finish_after).to_string())
        .args(["--seed", "1"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("start hss-simulator")?;
    let stdout = child.stdout.take().context("simulator stdout")?;
    let proc = Child::new(child, "hss-simulator");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow!("unexpected simulator output {line:?}"))?
        .to_string();
    Ok((proc, url))
}

/// `/__sim/calls` as API -> (status -> count).
pub type Calls = BTreeMap<String, BTreeMap<String, u64>>;

/// The simulator's counts so far.
pub async fn sim_calls(http: &reqwest::Client, sim: &str) -> anyhow::Result<Calls> {
    Ok(http
        .get(format!("{sim}/__sim/calls"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

fn calls_by_api(c: &Calls) -> BTreeMap<String, u64> {
    c.iter()
        .map(|(api, by)| (api.clone(), by.values().sum()))
        .collect()
}

/// Throttled calls (429) of every API.
pub fn total_429(c: &Calls) -> u64 {
    c.values().filter_map(|by| by.get("429")).sum()
}

/// Calls per API between two readings, APIs without calls left out.
pub fn calls_delta(after: &Calls, before: &Calls) -> BTreeMap<String, u64> {
    let b = calls_by_api(before);
    calls_by_api(after)
        .into_iter()
        .map(|(k, v)| {
            let d = v - b.get(&k).copied().unwrap_or(0);
            (k, d)
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}
