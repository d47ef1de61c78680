//! Scenarios 5-7: the fair share of the budget between namespaces, and what waiting costs.
//!
//! - 5 (the operator as it is): 300 / 30 / 3 objects in three namespaces with equal shares,
//!   created at once (the largest first), at the budget scaled x60 (5 calls per second); a
//!   fourth namespace's first scan joins later. From the bench's watch: the tokens (first
//!   `status.taskId` of an object) each namespace got while all three waited and while two
//!   did, how many tokens went to others between the late scan's create and its task id, and
//!   tokens used per budget window.
//! - 6 (per variant, [`waiting`]): operator CPU over 60 s with 1,000 objects waiting at the
//!   same scaled budget.
//! - 7 (per variant, [`waiting`]): while 100 objects wait for their results reads (one call
//!   a minute per API), how long deleting an unrelated object takes.

mod waiting;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use hss_operator::crd::ClusterScanTask;
use kube::{Api, api::PostParams};

use super::pipeline::tracks::{Track, Tracks};
use crate::{
    cli::Cli,
    env::Env,
    procfs::proc_stats,
    report::Row,
    simulator::{SimSettings, calls_delta, sim_calls, start_simulator, total_429},
};

pub use waiting::{deletion_while_reads_wait, waiting_cpu};

/// The budget of scenarios 5 and 6: HSS's 5 calls a minute, scaled x60.
const PER_WINDOW: u32 = 5;
const WINDOW: Duration = Duration::from_secs(1);

/// The waiting namespaces of scenario 5 and their sizes, created in this order.
const SIZES: [(&str, usize); 3] = [("big", 300), ("mid", 30), ("small", 3)];

/// Creates `names` in their namespaces, 8 at a time, noting each apply time.
async fn create(env: &Env, tracks: &Tracks, objects: Vec<(String, String)>) -> anyhow::Result<()> {
    stream::iter(objects)
        .map(|(ns, name)| async move {
            let api: Api<ClusterScanTask> = Api::namespaced(env.client.clone(), &ns);
            tracks.applied(name.clone());
            api.create(
                &PostParams::default(),
                &hss_testkit::cluster::cluster_scan(&name),
            )
            .await?;
            anyhow::Ok(())
        })
        .buffer_unordered(8)
        .try_for_each(|()| futures::future::ok(()))
        .await
}

/// Token times (first task id seen) by namespace prefix of the object name.
fn tokens(tracks: &BTreeMap<String, Track>) -> Vec<(Instant, String)> {
    let mut out: Vec<(Instant, String)> = tracks
        .iter()
        .filter_map(|(name, t)| {
            let ns = name.split('-').next()?.to_string();
            Some((t.task_id?, ns))
        })
        .collect();
    out.sort();
    out
}

/// Tokens per namespace among those handed out in `[from, to]`.
fn shares(tokens: &[(Instant, String)], from: Instant, to: Instant) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (at, ns) in tokens {
        if *at >= from && *at <= to {
            *out.entry(ns.clone()).or_default() += 1;
        }
    }
    out
}

fn describe(shares: &BTreeMap<String, usize>) -> String {
    let total: usize = shares.values().sum();
    shares
        .iter()
        .map(|(ns, n)| {
            format!(
                "{ns} {n} ({:.0} %)",
                100.0 * *n as f64 / total.max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Largest deviation from an equal split, in % of the equal share.
fn deviation(shares: &BTreeMap<String, usize>) -> f64 {
    let total: usize = shares.values().sum();
    let equal = total as f64 / shares.len().max(1) as f64;
    shares
        .values()
        .map(|n| (*n as f64 - equal).abs() / equal.max(f64::MIN_POSITIVE) * 100.0)
        .fold(0.0, f64::max)
}

/// The latest token time of namespace `ns`.
fn last_of(tokens: &[(Instant, String)], ns: &str) -> Option<Instant> {
    tokens.iter().rev().find(|(_, n)| n == ns).map(|(t, _)| *t)
}

/// Scenario 5.
pub async fn shares_scenario(env: &Env, cli: &Cli) -> anyhow::Result<Vec<Row>> {
    let mut namespaces = BTreeMap::new();
    for ns in ["big", "mid", "small", "late"] {
        namespaces.insert(ns, env.namespace(&format!("bench-s5-{ns}")).await?);
    }
    let (mut sim, sim_url) = start_simulator(
        &env.sim_bin,
        &SimSettings {
            throttle_per_minute: PER_WINDOW,
            throttle_window: WINDOW,
            finish_after: cli.finish_after,
        },
        &env.logs.join("sim-s5.log"),
    )?;
    let calls0 = sim_calls(&env.http, &sim_url).await?;
    let all: Vec<&str> = namespaces.values().map(String::as_str).collect();
    let this = super::Variant {
        label: String::new(),
        bin: env.bin.clone(),
        args: Vec::new(),
    };
    let budget = (PER_WINDOW, WINDOW);
    let mut op = waiting::operator(env, cli, &this, &all.join(","), &sim_url, budget, "s5").await?;
    let tracks = Tracks::default();
    let watches: Vec<_> = namespaces
        .values()
        .map(|ns| tracks.watch(Api::namespaced(env.client.clone(), ns)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu0 = proc_stats(op.pid()).cpu_secs;
    let started = Instant::now();
    let mut objects = Vec::new();
    for (ns, n) in SIZES {
        for i in 0..n {
            objects.push((namespaces[ns].clone(), format!("{ns}-{i:05}")));
        }
    }
    let waiting: usize = SIZES.iter().map(|(_, n)| n).sum();
    create(env, &tracks, objects).await?;
    let created_in = started.elapsed();

    // The late namespace's first scan, once about 40 tokens were handed out.
    let bound = Duration::from_secs_f64(120.0 + waiting as f64 / f64::from(PER_WINDOW) * 1.5);
    while tokens(&tracks.snapshot().into_iter().collect()).len() < 40 && started.elapsed() < bound {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create(
        env,
        &tracks,
        vec![(namespaces["late"].clone(), "late-00000".into())],
    )
    .await?;
    while tracks.task_ids() < waiting + 1 && started.elapsed() < bound {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_in = started.elapsed();
    let cpu = proc_stats(op.pid()).cpu_secs - cpu0;
    let calls1 = sim_calls(&env.http, &sim_url).await?;
    for w in watches {
        w.abort();
    }
    op.stop();
    sim.stop();

    let snapshot: BTreeMap<String, Track> = tracks.snapshot().into_iter().collect();
    let toks = tokens(&snapshot);
    let mut notes = Vec::new();
    let (small_done, mid_done) = (last_of(&toks, "small"), last_of(&toks, "mid"));
    // All three wait in the fair queue once the last of them has its first object seen
    // `Throttled` (joined the queue: after its first reconcile, which the controller's own
    // work queue reaches in the order objects were created).
    let first_of = |ns: &str, stamp: fn(&Track) -> Option<Instant>| {
        snapshot
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("{ns}-")))
            .filter_map(|(_, t)| stamp(t))
            .min()
    };
    let all_waiting = SIZES
        .iter()
        .filter_map(|(ns, _)| first_of(ns, |t| t.throttled))
        .max()
        .unwrap_or(started);
    if let (Some(created), Some(joined)) = (
        first_of("small", |t| t.applied),
        first_of("small", |t| t.throttled),
    ) {
        let before: BTreeMap<String, usize> = shares(&toks, created, joined);
        notes.push(format!(
            "the small namespace's first object joined the fair queue {:.2} s after its create (the controller's work queue reached it behind the others' first reconciles); tokens meanwhile: {}",
            (joined - created).as_secs_f64(),
            describe(&before)
        ));
    }
    if let Some(small_done) = small_done {
        let three = shares(&toks, all_waiting, small_done);
        notes.push(format!(
            "while all three waited in the fair queue (from the last of them joining to the small namespace's last task id): {}; largest deviation from equal {:.0} %",
            describe(&three),
            deviation(&three)
        ));
        if let Some(mid_done) = mid_done {
            let two: BTreeMap<String, usize> = shares(&toks, small_done, mid_done)
                .into_iter()
                .filter(|(ns, _)| ns == "big" || ns == "mid")
                .collect();
            notes.push(format!(
                "then while big and mid waited: {}; largest deviation {:.0} %",
                describe(&two),
                deviation(&two)
            ));
        }
    }
    if let Some(late) = snapshot.get("late-00000")
        && let (Some(applied), Some(task_id)) = (late.applied, late.task_id)
    {
        let before = toks
            .iter()
            .filter(|(at, ns)| *at > applied && *at < task_id && ns != "late")
            .count();
        notes.push(format!(
            "late joiner: {before} tokens went to the others between its create and its task id ({:.2} s)",
            (task_id - applied).as_secs_f64()
        ));
    }
    if let (Some((first, _)), Some((last, _))) = (toks.first(), toks.last()) {
        let span = (*last - *first).as_secs_f64();
        let per_window =
            (toks.len() - 1) as f64 / span.max(f64::MIN_POSITIVE) * WINDOW.as_secs_f64();
        // The budget spaces tokens `window / n + margin` apart (the margin is 60 ms at a 1 s
        // window): that is the most it hands out.
        let margin = Duration::from_millis(60);
        let most = WINDOW.as_secs_f64() / (WINDOW / PER_WINDOW + margin).as_secs_f64();
        notes.push(format!(
            "tokens used: {} in {span:.1} s = {per_window:.2} per budget window, of the {most:.2} the budget allows ({PER_WINDOW} per window, spaced {} ms)",
            toks.len(),
            (WINDOW / PER_WINDOW + margin).as_millis()
        ));
    }
    notes.push(format!(
        "{} objects created in {:.1} s; every task id after {:.1} s; operator CPU {cpu:.2} s",
        waiting + 1,
        created_in.as_secs_f64(),
        all_in.as_secs_f64()
    ));
    Ok(vec![Row {
        scenario: "5 fair share 300/30/3 + late (x60)".into(),
        objects: waiting + 1,
        calls: calls_delta(&calls1, &calls0),
        cpu_secs: Some(cpu),
        throttled: total_429(&calls1) - total_429(&calls0),
        notes,
        ..Row::default()
    }])
}
