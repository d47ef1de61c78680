//! Scenarios 6 and 7, per variant: what waiting for budget costs the operator (CPU with 1,000
//! objects waiting) and the other objects (deleting one while 100 wait for reads).

use std::time::{Duration, Instant};

use hss_operator::crd::{ClusterScanTask, Phase};
use hss_testkit::Child;
use kube::{
    Api,
    api::DeleteParams,
    runtime::wait::{await_condition, conditions},
};

use super::{PER_WINDOW, WINDOW, create};
use crate::{
    cli::Cli,
    env::Env,
    operator::{OperatorSettings, start_operator, wait_ready},
    procfs::proc_stats,
    report::Row,
    scenarios::{Variant, pipeline::tracks::Tracks, variants},
    simulator::{SimSettings, calls_delta, sim_calls, start_simulator},
};

/// A ready operator of `variant` watching `ns` (comma-separated namespaces), with its log
/// `operator-<id>.log`.
pub(super) async fn operator(
    env: &Env,
    cli: &Cli,
    variant: &Variant,
    ns: &str,
    sim_url: &str,
    budget: (u32, Duration),
    id: &str,
) -> anyhow::Result<Child> {
    let admin_port = hss_testkit::free_port()?;
    let (op, _) = start_operator(
        &variant.bin,
        &OperatorSettings {
            namespace: ns,
            sim_url,
            kubeconfig: &env.proxy_kubeconfig,
            admin_port,
            budget_per_minute: budget.0,
            budget_window: budget.1,
            poll_interval: cli.poll_interval,
            log: env.logs.join(format!("operator-{id}.log")),
            extra_args: &variant.args,
        },
    )?;
    wait_ready(
        &env.http,
        admin_port,
        Instant::now(),
        Duration::from_secs(60),
        Duration::from_millis(25),
    )
    .await?;
    Ok(op)
}

fn label(base: &str, v: &Variant) -> String {
    if v.label.is_empty() {
        base.to_string()
    } else {
        format!("{base}: {}", v.label)
    }
}

/// Scenario 6: 1,000 objects created at once at 5 calls a second; the operator's CPU over the
/// 60 s after the last create, and the tokens it used meanwhile.
pub async fn waiting_cpu(env: &Env, cli: &Cli) -> anyhow::Result<Vec<Row>> {
    let objects = cli.objects.unwrap_or(1000);
    let mut rows = Vec::new();
    for (i, v) in variants(env, cli)?.iter().enumerate() {
        let id = format!("s6-{i}");
        let ns = env.namespace(&format!("bench-{id}")).await?;
        let (mut sim, sim_url) = start_simulator(
            &env.sim_bin,
            &SimSettings {
                throttle_per_minute: PER_WINDOW,
                throttle_window: WINDOW,
                finish_after: cli.finish_after,
            },
            &env.logs.join(format!("sim-{id}.log")),
        )?;
        let mut op = operator(env, cli, v, &ns, &sim_url, (PER_WINDOW, WINDOW), &id).await?;
        let tracks = Tracks::default();
        let watch = tracks.watch(Api::namespaced(env.client.clone(), &ns));
        let names = (0..objects)
            .map(|n| (ns.clone(), format!("w-{n:05}")))
            .collect();
        create(env, &tracks, names).await?;
        let calls0 = sim_calls(&env.http, &sim_url).await?;
        let cpu0 = proc_stats(op.pid()).cpu_secs;
        let window = Duration::from_secs(60);
        tokio::time::sleep(window).await;
        let cpu = proc_stats(op.pid()).cpu_secs - cpu0;
        let calls1 = sim_calls(&env.http, &sim_url).await?;
        let task_ids = tracks.task_ids();
        watch.abort();
        op.stop();
        sim.stop();
        let calls = calls_delta(&calls1, &calls0);
        let created = calls.get("CreateTask").copied().unwrap_or(0);
        rows.push(Row {
            scenario: label("6 CPU with 1000 waiting (x60)", v),
            objects,
            calls: calls.clone(),
            cpu_secs: Some(cpu),
            notes: vec![format!(
                "over the 60 s after the last create: operator CPU {cpu:.2} s; {created} CreateTask calls ({:.2} per budget window; the budget allows 3.85: {PER_WINDOW} per window spaced 260 ms); {task_ids} task ids at the end, {} objects still waiting",
                created as f64 / window.as_secs_f64() * WINDOW.as_secs_f64(),
                objects.saturating_sub(task_ids)
            )],
            ..Row::default()
        });
    }
    Ok(rows)
}

/// Scenario 7: `unrelated` runs to the end, then 100 objects get their task ids from an
/// operator without a budget; a second one, at one call a minute per API, finds them all
/// finished and waiting for their results reads. Deleting `unrelated` is timed.
pub async fn deletion_while_reads_wait(env: &Env, cli: &Cli) -> anyhow::Result<Vec<Row>> {
    const WAITING: usize = 100;
    let finish_after = Duration::from_secs(5);
    let mut rows = Vec::new();
    for (i, v) in variants(env, cli)?.iter().enumerate() {
        let id = format!("s7-{i}");
        let ns = env.namespace(&format!("bench-{id}")).await?;
        let api: Api<ClusterScanTask> = Api::namespaced(env.client.clone(), &ns);
        let (mut sim, sim_url) = start_simulator(
            &env.sim_bin,
            &SimSettings {
                throttle_per_minute: 0,
                throttle_window: Duration::from_secs(60),
                finish_after,
            },
            &env.logs.join(format!("sim-{id}.log")),
        )?;
        let tracks = Tracks::default();
        let watch = tracks.watch(api.clone());
        let mut first = operator(
            env,
            cli,
            v,
            &ns,
            &sim_url,
            (0, Duration::from_secs(60)),
            &format!("{id}-a"),
        )
        .await?;
        create(env, &tracks, vec![(ns.clone(), "unrelated".into())]).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while tracks.phase_of("unrelated") != Some(Phase::Succeeded) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let names = (0..WAITING)
            .map(|n| (ns.clone(), format!("r-{n:05}")))
            .collect();
        create(env, &tracks, names).await?;
        while tracks.task_ids() < WAITING + 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        first.stop();
        // Every task finished (the simulator's own schedule) before the second operator's
        // first poll, so each object's next call is its results read.
        tokio::time::sleep(finish_after + Duration::from_secs(1)).await;
        let calls0 = sim_calls(&env.http, &sim_url).await?;
        let mut op = operator(
            env,
            cli,
            v,
            &ns,
            &sim_url,
            (1, Duration::from_secs(60)),
            &format!("{id}-b"),
        )
        .await?;
        // Let the reconciles of the 100 start and park (or block).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let obj = api.get("unrelated").await?;
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        let t = Instant::now();
        api.delete("unrelated", &DeleteParams::default()).await?;
        let gone = tokio::time::timeout(
            Duration::from_secs(150),
            await_condition(api.clone(), "unrelated", conditions::is_deleted(&uid)),
        )
        .await;
        let took = t.elapsed();
        let calls1 = sim_calls(&env.http, &sim_url).await?;
        let still = tracks.count_phase(|p| matches!(p, Some(Phase::Submitted | Phase::Running)));
        watch.abort();
        op.stop();
        sim.stop();
        let took_text = match gone {
            Ok(Ok(_)) => format!("{:.2} s", took.as_secs_f64()),
            _ => format!("not within {:.0} s", took.as_secs_f64()),
        };
        rows.push(Row {
            scenario: label("7 delete while 100 wait for reads", v),
            objects: WAITING + 1,
            calls: calls_delta(&calls1, &calls0),
            notes: vec![format!(
                "deleting the unrelated Succeeded object took {took_text}; {still} of the {WAITING} were still waiting for their results read at the end (budget 1 call a minute per API)"
            )],
            ..Row::default()
        });
    }
    Ok(rows)
}
