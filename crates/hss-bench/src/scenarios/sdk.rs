//! Scenario 4: one scan submitted per process, the Python SDK script (`create_task.py`) vs
//! `hss-operator submit`, alternating, against the simulator without throttling: wall time and
//! peak RSS (from `/usr/bin/time` where there is one), medians. Files in `<logs>/s4/`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::{
    cli::Cli,
    env::Env,
    report::{Row, mib, percentiles, verdict},
    simulator::{SimSettings, calls_delta, sim_calls, start_simulator, total_429},
};

/// The Python SDK's side: one CreateTask, the task id printed.
const SDK_SCRIPT: &str = include_str!("create_task.py");

/// `submit`'s side: the same scan as a manifest.
const MANIFEST: &str = "apiVersion: hss.scanops.dev/v1alpha1
kind: ClusterScanTask
metadata:
  name: bench-submit
spec:
  taskType: cluster_scan
  clusterScan:
    scanTypes: [cluster_vul, benchmark]
    rangeType: all_cluster
";

/// Wall seconds and max RSS KiB (if measured) of one run.
type Timing = (f64, Option<u64>);

pub async fn sdk_vs_submit(env: &Env, cli: &Cli) -> anyhow::Result<Row> {
    let python = cli
        .python
        .clone()
        .unwrap_or_else(|| hss_testkit::repo().join(".venv/bin/python"));
    let dir = env.logs.join("s4");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("create_task.py");
    std::fs::write(&script, SDK_SCRIPT)?;
    let manifest = dir.join("scan.yaml");
    std::fs::write(&manifest, MANIFEST)?;
    let (mut sim, sim_url) = start_simulator(
        &env.sim_bin,
        &SimSettings {
            throttle_per_minute: 0,
            throttle_window: Duration::from_secs(60),
            finish_after: Duration::from_secs(30),
        },
        &env.logs.join("sim-s4.log"),
    )?;
    let calls0 = sim_calls(&env.http, &sim_url).await?;
    let mut sdk = Vec::new();
    let mut sub = Vec::new();
    for _ in 0..cli.runs {
        sdk.push(timed(sdk_command(&python, &script, &sim_url), &dir)?);
        sub.push(timed(submit_command(&env.bin, &manifest, &sim_url), &dir)?);
    }
    let calls1 = sim_calls(&env.http, &sim_url).await?;
    sim.stop();
    Ok(Row {
        scenario: "4 SDK script vs submit".into(),
        objects: 0,
        calls: calls_delta(&calls1, &calls0),
        writes: None,
        task_id_ms: None,
        succeeded_ms: None,
        peak_rss_kib: None,
        cpu_secs: None,
        throttled: total_429(&calls1) - total_429(&calls0),
        notes: notes(cli, &python, &sdk, &sub),
    })
}

fn sdk_command(python: &Path, script: &Path, sim_url: &str) -> Command {
    let mut c = Command::new(python);
    c.arg(script)
        .arg(sim_url)
        .arg("proj")
        .env("HUAWEICLOUD_SDK_AK", "AKSIM")
        .env("HUAWEICLOUD_SDK_SK", "SKSIM");
    c
}

fn submit_command(bin: &Path, manifest: &Path, sim_url: &str) -> Command {
    let mut c = Command::new(bin);
    c.arg("submit")
        .arg("-f")
        .arg(manifest)
        .args(["--endpoint", sim_url, "--project-id", "proj"])
        .args(["--allow-insecure-endpoints", "--budget-per-minute", "0"])
        .env("HUAWEICLOUD_SDK_AK", "AKSIM")
        .env("HUAWEICLOUD_SDK_SK", "SKSIM")
        .env("RUST_LOG", "warn");
    c
}

/// Medians of both tools and the targets (submit >= 10x faster, >= 5x smaller).
fn notes(cli: &Cli, python: &Path, sdk: &[Timing], sub: &[Timing]) -> Vec<String> {
    let median = |v: Vec<f64>| percentiles(v).map(|(p50, _)| p50).unwrap_or(f64::NAN);
    let wall = |t: &[Timing]| median(t.iter().map(|s| s.0).collect());
    let rss = |t: &[Timing]| median(t.iter().filter_map(|s| s.1).map(|k| k as f64).collect());
    let (sdk_wall, sub_wall) = (wall(sdk), wall(sub));
    let (sdk_rss, sub_rss) = (rss(sdk), rss(sub));
    vec![
        format!(
            "{} runs each, alternating, one process per scan against the simulator (no throttling); medians",
            cli.runs
        ),
        format!(
            "Python SDK script ({}): wall {:.0} ms, peak RSS {}",
            python.display(),
            sdk_wall * 1000.0,
            mib(sdk_rss as u64)
        ),
        format!(
            "hss-operator submit: wall {:.0} ms, peak RSS {}",
            sub_wall * 1000.0,
            mib(sub_rss as u64)
        ),
        format!(
            "target submit >= 10x faster: {} ({:.1}x); >= 5x smaller: {} ({:.1}x)",
            verdict(sdk_wall / sub_wall >= 10.0),
            sdk_wall / sub_wall,
            verdict(sdk_rss / sub_rss >= 5.0),
            sdk_rss / sub_rss
        ),
    ]
}

/// Runs `cmd` under /usr/bin/time (if there is one, its output in `dir/time.out`); fails
/// unless it succeeds.
fn timed(cmd: Command, dir: &Path) -> anyhow::Result<Timing> {
    let out_file = dir.join("time.out");
    let have_time = Path::new("/usr/bin/time").exists();
    let mut run = if have_time {
        under_time(&cmd, &out_file)
    } else {
        cmd
    };
    let t = Instant::now();
    let out = run.stdin(Stdio::null()).output()?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{:?} failed: {}{}",
            run.get_program(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rss = if have_time {
        max_rss_kib(&out_file)?
    } else {
        None
    };
    Ok((wall, rss))
}

/// `/usr/bin/time -f %M -o OUT` running `cmd` with its environment.
fn under_time(cmd: &Command, out_file: &Path) -> Command {
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M", "-o"]).arg(out_file);
    c.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

/// The max RSS (KiB) `/usr/bin/time -f %M` wrote: its last line.
fn max_rss_kib(out_file: &Path) -> anyhow::Result<Option<u64>> {
    Ok(std::fs::read_to_string(out_file)?
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok()))
}
