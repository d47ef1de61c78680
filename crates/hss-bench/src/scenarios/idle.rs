//! Scenario 3, idle with existing Succeeded objects: the objects are created once (finished,
//! as after an upgrade or a restart), then each variant is started on them and measured: cold
//! start, memory, CPU, HSS calls and API-server writes while there is nothing to do.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use hss_operator::crd::{ClusterScanTask, FINALIZER};
use hss_testkit::Child;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};

use super::{Variant, variants};
use crate::{
    cli::Cli,
    env::Env,
    operator::{OperatorSettings, start_operator, wait_ready},
    procfs::{ProcStats, proc_stats},
    proxy::CountSnap,
    report::{Row, fmt_calls, mib, verdict},
    simulator::{Calls, SimSettings, calls_delta, sim_calls, start_simulator, total_429},
};

/// Scenario 3: the objects are created once, then each variant is measured on them.
pub async fn idle(env: &Env, cli: &Cli, objects: usize) -> anyhow::Result<Vec<Row>> {
    let ns = env.namespace("bench-s3").await?;
    let api: Api<ClusterScanTask> = Api::namespaced(env.client.clone(), &ns);
    let created_in = create_succeeded(&api, objects).await?;
    eprintln!(
        "bench: created {objects} Succeeded objects in {:.1}s",
        created_in.as_secs_f64()
    );
    let created = Created {
        lists: list_costs(&api).await?,
        ns,
        objects,
        created_in,
    };
    let mut rows = Vec::new();
    for v in variants(env, cli)? {
        eprintln!("bench: scenario 3 variant {:?}", v.label);
        rows.push(idle_variant(env, cli, &created, &v).await?);
    }
    Ok(rows)
}

/// What scenario 3 created, and what the API server alone takes to list it.
struct Created {
    ns: String,
    objects: usize,
    created_in: Duration,
    lists: ListCosts,
}

/// Creates `done-00000`.. (32 at a time) with the finalizer, then writes `phase: Succeeded`
/// through the status subresource; returns how long that took.
async fn create_succeeded(api: &Api<ClusterScanTask>, objects: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    // Finished two hours ago: existing objects, as after an upgrade or a restart.
    let now = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2)).to_string();
    stream::iter(0..objects)
        .map(|i| create_one_succeeded(api, i, &now))
        .buffer_unordered(32)
        .try_for_each(|()| futures::future::ok(()))
        .await?;
    Ok(t.elapsed())
}

/// Object `done-<i>`, finished at `finished_at` (an existing one is kept).
async fn create_one_succeeded(
    api: &Api<ClusterScanTask>,
    i: usize,
    finished_at: &str,
) -> anyhow::Result<()> {
    let name = format!("done-{i:05}");
    let mut obj = hss_testkit::cluster::cluster_scan(&name);
    obj.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let status = serde_json::json!({"status": {
        "phase": "Succeeded",
        "taskId": format!("bench-{i:05}"),
        "submittedAt": finished_at,
        "finishedAt": finished_at,
        "observedGeneration": 1,
        "progress": {"taskStatus": "finished", "scanning": 0, "succeeded": 3, "failed": 0},
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// What the API server alone takes to LIST the objects, as the operator's first list does
/// (resourceVersion=0 from the watch cache, unpaginated) and paginated (500 per page).
struct ListCosts {
    rv0: Duration,
    /// The unpaginated list re-encoded as JSON.
    bytes: usize,
    /// The managedFields of one object, as JSON.
    sample_managed: usize,
    paged: Duration,
}

async fn list_costs(api: &Api<ClusterScanTask>) -> anyhow::Result<ListCosts> {
    let t = Instant::now();
    let all = api.list(&ListParams::default().match_any()).await?;
    let rv0 = t.elapsed();
    let bytes = serde_json::to_vec(&all)?.len();
    let sample_managed = all
        .items
        .first()
        .map(|o| serde_json::to_vec(&o.metadata.managed_fields).map_or(0, |v| v.len()))
        .unwrap_or(0);
    drop(all);
    let t = Instant::now();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await?;
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    Ok(ListCosts {
        rv0,
        bytes,
        sample_managed,
        paged: t.elapsed(),
    })
}

/// The operator's memory and CPU, the simulator's calls and the proxy's counts at one moment.
struct Sample {
    stats: ProcStats,
    calls: Calls,
    writes: CountSnap,
}

async fn sample(env: &Env, op: &Child, sim_url: &str) -> anyhow::Result<Sample> {
    Ok(Sample {
        stats: proc_stats(op.pid()),
        calls: sim_calls(&env.http, sim_url).await?,
        writes: env.proxy.counts.snap(),
    })
}

/// What one variant did, from before its start to the end of the idle window.
struct Measured {
    calls0: Calls,
    w0: CountSnap,
    /// Spawn → `/readyz` 200.
    cold: Duration,
    at_ready: ProcStats,
    /// At the end of the settle (ready + 10 s), the start of the idle window.
    a: Sample,
    /// At the end of the idle window.
    b: Sample,
    max_rss: u64,
    idle_s: f64,
}

/// One variant: simulator and operator started (logs `sim-s3.log`, `operator-s3<LABEL>.log`),
/// ready, 10 s to settle, then `--idle` sampled every second.
async fn idle_variant(env: &Env, cli: &Cli, c: &Created, v: &Variant) -> anyhow::Result<Row> {
    let (mut sim, sim_url) = start_simulator(
        &env.sim_bin,
        &SimSettings {
            throttle_per_minute: 5,
            throttle_window: Duration::from_secs(60),
            finish_after: Duration::from_secs(30),
        },
        &env.logs.join("sim-s3.log"),
    )?;
    let admin_port = hss_testkit::free_port()?;
    let calls0 = sim_calls(&env.http, &sim_url).await?;
    let w0 = env.proxy.counts.snap();
    let spawned = Instant::now();
    let (mut op, _) = start_operator(
        &v.bin,
        &OperatorSettings {
            namespace: &c.ns,
            sim_url: &sim_url,
            kubeconfig: &env.proxy_kubeconfig,
            admin_port,
            budget_per_minute: 5,
            budget_window: Duration::from_secs(60),
            poll_interval: Duration::from_secs(15),
            log: env.logs.join(format!("operator-s3{}.log", v.label)),
            extra_args: &v.args,
        },
    )?;
    let (ready_timeout, poll) = (Duration::from_secs(120), Duration::from_millis(20));
    wait_ready(&env.http, admin_port, spawned, ready_timeout, poll).await?;
    let cold = spawned.elapsed();
    let at_ready = proc_stats(op.pid());
    // Let the initial reconcile of every object finish before measuring idle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let a = sample(env, &op, &sim_url).await?;
    let (max_rss, idle_s) = sample_idle(&op, cli.idle, a.stats.rss_kib).await;
    let b = sample(env, &op, &sim_url).await?;
    op.stop();
    sim.stop();
    Ok(row(
        c,
        v,
        &Measured {
            calls0,
            w0,
            cold,
            at_ready,
            a,
            b,
            max_rss,
            idle_s,
        },
    ))
}

/// Reads VmRSS every second for `window`; returns the max (at least `rss0`) and the seconds
/// it took.
async fn sample_idle(op: &Child, window: Duration, rss0: u64) -> (u64, f64) {
    let t_idle = Instant::now();
    let mut max_rss = rss0;
    while t_idle.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_rss = max_rss.max(proc_stats(op.pid()).rss_kib);
    }
    (max_rss, t_idle.elapsed().as_secs_f64())
}

/// The variant's row and its notes.
fn row(c: &Created, v: &Variant, m: &Measured) -> Row {
    let mut notes = vec![
        format!(
            "{} objects created with finalizer and status Succeeded (status subresource) in {:.1}s before the operator starts",
            c.objects,
            c.created_in.as_secs_f64()
        ),
        list_note(c),
        format!(
            "cold start (spawn → /readyz 200): {:.2}s — target < 3 s: {}",
            m.cold.as_secs_f64(),
            verdict(m.cold < Duration::from_secs(3))
        ),
        memory_note(m),
        format!(
            "CPU: {:.2}s to ready, {:.2}s by end of settle (ready + 10 s), idle {:.3} s CPU per minute",
            m.at_ready.cpu_secs,
            m.a.stats.cpu_secs,
            (m.b.stats.cpu_secs - m.a.stats.cpu_secs) / m.idle_s * 60.0
        ),
        calls_note(m),
        writes_note(m),
    ];
    if !v.label.is_empty() {
        notes.insert(0, v.describe());
    }
    Row {
        scenario: if v.label.is_empty() {
            "3 idle, existing Succeeded".into()
        } else {
            format!("3 idle, existing Succeeded: {}", v.label)
        },
        objects: c.objects,
        calls: calls_delta(&m.b.calls, &m.calls0),
        writes: Some(m.b.writes - m.w0),
        task_id_ms: None,
        succeeded_ms: None,
        peak_rss_kib: Some(m.b.stats.hwm_kib),
        cpu_secs: Some(m.b.stats.cpu_secs),
        throttled: total_429(&m.b.calls) - total_429(&m.calls0),
        notes,
    }
}

fn list_note(c: &Created) -> String {
    let l = &c.lists;
    format!(
        "API server alone (bench client, not via the proxy): LIST rv=0 unpaginated {:.2}s ({:.1} MiB of JSON re-encoded, {:.0} B/object of which managedFields {} B), paginated 500/page {:.2}s",
        l.rv0.as_secs_f64(),
        l.bytes as f64 / 1048576.0,
        l.bytes as f64 / c.objects.max(1) as f64,
        l.sample_managed,
        l.paged.as_secs_f64()
    )
}

fn memory_note(m: &Measured) -> String {
    format!(
        "RSS at ready {}, steady VmRSS over {:.0}s idle: end {}, max {} — target < 64 MiB: {}; VmHWM {}",
        mib(m.at_ready.rss_kib),
        m.idle_s,
        mib(m.b.stats.rss_kib),
        mib(m.max_rss),
        verdict(m.max_rss < 64 * 1024),
        mib(m.b.stats.hwm_kib)
    )
}

fn calls_note(m: &Measured) -> String {
    let idle_calls: u64 = calls_delta(&m.b.calls, &m.a.calls).values().sum();
    format!(
        "HSS calls while idle: {idle_calls} ({:.1}/min) — target 0: {}; during start-up: {}",
        idle_calls as f64 / m.idle_s * 60.0,
        verdict(idle_calls == 0),
        fmt_calls(&calls_delta(&m.a.calls, &m.calls0))
    )
}

fn writes_note(m: &Measured) -> String {
    let startup = m.a.writes - m.w0;
    let idle = m.b.writes - m.a.writes;
    format!(
        "K8s writes during start-up+settle: ClusterScanTask {}, Events {}, other {}; while idle: ClusterScanTask {}, Events {}; reads during start-up {} (GET incl. list/watch)",
        startup.cst_writes,
        startup.event_writes,
        startup.other_writes,
        idle.cst_writes,
        idle.event_writes,
        startup.reads
    )
}
