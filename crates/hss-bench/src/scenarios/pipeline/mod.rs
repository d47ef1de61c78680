//! Scenarios 1 (raw pipeline) and 2 (realistic budget, scaled x60): fresh objects created
//! against a fresh simulator and operator, timed by the bench's watch from create to
//! Succeeded, with the operator's HSS calls, API-server writes, memory and CPU. The steps of
//! a run are here; [`tracks`] has the per-object timestamps, [`notes`] the row.

mod notes;
pub(super) mod tracks;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use hss_operator::crd::ClusterScanTask;
use hss_testkit::Child;
use kube::{Api, api::PostParams};

use self::tracks::{Track, Tracks};
use super::{Variant, variants};
use crate::{
    cli::Cli,
    env::Env,
    operator::{OperatorSettings, start_operator, submission_steps, wait_ready},
    procfs::{ProcStats, proc_stats},
    proxy::CountSnap,
    report::Row,
    simulator::{Calls, SimSettings, sim_calls, start_simulator},
};

/// Scenario 1 or 2: its label, size and budget (on both the simulator and the operator).
pub struct Spec {
    label: &'static str,
    objects: usize,
    /// 0: no budget, no throttling.
    per_minute: u32,
    window: Duration,
}

impl Spec {
    /// Scenario 1: 100 objects by default, no budget.
    pub fn raw(objects: Option<usize>) -> Spec {
        Spec {
            label: "1 raw pipeline",
            objects: objects.unwrap_or(100),
            per_minute: 0,
            window: Duration::from_secs(60),
        }
    }

    /// Scenario 2: 1,000 objects by default, 5 calls per second, i.e. per minute scaled x60.
    pub fn budget(objects: Option<usize>) -> Spec {
        Spec {
            label: "2 budget 5/1s (x60)",
            objects: objects.unwrap_or(1000),
            per_minute: 5,
            window: Duration::from_secs(1),
        }
    }

    /// `<N>-<run>`: the scenario's number and the variant's index, for names and logs.
    fn id(&self, run: usize) -> String {
        let digits: String = self
            .label
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        format!("{digits}-{run}")
    }

    /// How long to wait for every object to succeed: 2 min plus 1.5x what the budget needs.
    fn bound(&self) -> Duration {
        let rate = if self.per_minute == 0 {
            f64::INFINITY
        } else {
            self.per_minute as f64 / self.window.as_secs_f64()
        };
        Duration::from_secs_f64(120.0 + (self.objects as f64 / rate) * 1.5)
    }
}

/// Scenario 1 or 2, once per variant.
pub async fn pipelines(env: &Env, cli: &Cli, spec: &Spec) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, v) in variants(env, cli)?.iter().enumerate() {
        eprintln!("bench: {} variant {:?}", spec.label, v.label);
        let mut row = pipeline(env, cli, spec, i, v).await?;
        if !v.label.is_empty() {
            row.scenario = format!("{}: {}", spec.label, v.label);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// One variant: start, watch, create, wait for Succeeded, read the figures, report.
async fn pipeline(
    env: &Env,
    cli: &Cli,
    spec: &Spec,
    run: usize,
    variant: &Variant,
) -> anyhow::Result<Row> {
    let running = start(env, cli, spec, run, variant).await?;
    let api: Api<ClusterScanTask> = Api::namespaced(env.client.clone(), &running.ns);
    let tracks = Tracks::default();
    let watch = tracks.watch(api.clone());
    // Let the watch establish before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    create_objects(&api, &tracks, cli, spec.objects, started).await?;
    let created_in = started.elapsed();
    let done = wait_succeeded(&tracks, spec, started).await;
    let all_done_in = started.elapsed();
    // Trailing writes (Events, last status) and the last poll.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = finish(env, running, watch).await?;
    Ok(notes::row(
        cli,
        spec,
        &Outcome {
            created_in,
            done,
            all_done_in,
            end,
            tracks: tracks.snapshot(),
        },
    ))
}

/// A run's namespace, simulator and ready operator, and the counts before it.
struct Running {
    ns: String,
    sim: Child,
    sim_url: String,
    op: Child,
    metrics_port: u16,
    calls0: Calls,
    w0: CountSnap,
}

/// Namespace `bench-s<N>-<run>`, the simulator and the operator, logs `sim-s<N>-<run>.log` and
/// `operator-s<N>-<run>.log`; waits (up to 60 s) until the operator is ready.
async fn start(
    env: &Env,
    cli: &Cli,
    spec: &Spec,
    run: usize,
    variant: &Variant,
) -> anyhow::Result<Running> {
    let id = spec.id(run);
    let ns = env.namespace(&format!("bench-s{id}")).await?;
    let (sim, sim_url) = start_simulator(
        &env.sim_bin,
        &SimSettings {
            throttle_per_minute: spec.per_minute,
            throttle_window: spec.window,
            finish_after: cli.finish_after,
        },
        &env.logs.join(format!("sim-s{id}.log")),
    )?;
    let admin_port = hss_testkit::free_port()?;
    let calls0 = sim_calls(&env.http, &sim_url).await?;
    let w0 = env.proxy.counts.snap();
    let (op, metrics_port) = start_operator(
        &variant.bin,
        &OperatorSettings {
            namespace: &ns,
            sim_url: &sim_url,
            kubeconfig: &env.proxy_kubeconfig,
            admin_port,
            budget_per_minute: spec.per_minute,
            budget_window: spec.window,
            poll_interval: cli.poll_interval,
            log: env.logs.join(format!("operator-s{id}.log")),
            extra_args: &variant.args,
        },
    )?;
    let t = Instant::now();
    wait_ready(
        &env.http,
        admin_port,
        t,
        Duration::from_secs(60),
        Duration::from_millis(25),
    )
    .await?;
    Ok(Running {
        ns,
        sim,
        sim_url,
        op,
        metrics_port,
        calls0,
        w0,
    })
}

/// Creates `scan-00000`.. with `--create-concurrency` in flight, paced by `--create-rate` from
/// `started` if set, noting each apply time.
async fn create_objects(
    api: &Api<ClusterScanTask>,
    tracks: &Tracks,
    cli: &Cli,
    objects: usize,
    started: Instant,
) -> anyhow::Result<()> {
    let pace = cli.create_rate;
    stream::iter(0..objects)
        .map(|i| async move {
            if pace > 0.0 {
                let at = started + Duration::from_secs_f64(i as f64 / pace);
                tokio::time::sleep_until(at.into()).await;
            }
            let name = format!("scan-{i:05}");
            let obj = hss_testkit::cluster::cluster_scan(&name);
            tracks.applied(name);
            api.create(&PostParams::default(), &obj).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(cli.create_concurrency)
        .try_for_each(|()| futures::future::ok(()))
        .await
}

/// Waits until the watch has seen every object Succeeded (true) or [`Spec::bound`] has
/// passed since `started` (false).
async fn wait_succeeded(tracks: &Tracks, spec: &Spec, started: Instant) -> bool {
    let bound = spec.bound();
    loop {
        if tracks.succeeded() >= spec.objects {
            return true;
        }
        if started.elapsed() > bound {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the run ends with, read before the operator and the simulator are stopped.
struct End {
    stats: ProcStats,
    steps: Vec<(String, String)>,
    calls0: Calls,
    calls1: Calls,
    writes: CountSnap,
}

/// Reads the operator's memory, CPU and submission steps, the simulator's calls and the
/// proxy's counts, then stops the watch and both children.
async fn finish(
    env: &Env,
    mut r: Running,
    watch: tokio::task::JoinHandle<()>,
) -> anyhow::Result<End> {
    let stats = proc_stats(r.op.pid());
    let steps = submission_steps(&env.http, r.metrics_port).await;
    let calls1 = sim_calls(&env.http, &r.sim_url).await?;
    let writes = env.proxy.counts.snap() - r.w0;
    watch.abort();
    r.op.stop();
    r.sim.stop();
    Ok(End {
        stats,
        steps,
        calls0: r.calls0,
        calls1,
        writes,
    })
}

/// Everything a run measured.
struct Outcome {
    created_in: Duration,
    done: bool,
    all_done_in: Duration,
    end: End,
    tracks: HashMap<String, Track>,
}
