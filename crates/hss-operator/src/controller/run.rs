//! Starting the ClusterScanTask controllers: one per watched scope, the shared poll routed to
//! them, the gauges, the Events writer, and readiness once every cache has its first state.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, ObjectRef},
        watcher::watcher,
    },
};

use super::{
    Context, Error, Poller, Runtime, ScanArgs, credentials, error_policy, reconcile, status,
    transitions,
};
use crate::{
    controller_runtime::{cache, events, retry::FailureStreaks},
    crd::{ClusterScanTask, Phase},
    submission::claims,
};

/// The annotations reconcile reads; no label is read.
const READ_ANNOTATIONS: &[&str] = &[
    transitions::ADOPT_ANNOTATION,
    transitions::RESUBMIT_ANNOTATION,
];

/// What the cache keeps of an object: all but managedFields and the annotations and labels
/// reconcile never reads (kubectl's last-applied copy, tenants' own; see
/// [`crate::controller_runtime::cache`]).
fn for_cache(o: &mut ClusterScanTask) {
    cache::keep_only(&mut o.metadata, READ_ANNOTATIONS, &[]);
}

/// Every few seconds: objects by phase, unresolved submissions, tracked tasks, the fair
/// queue's depth, last poll.
async fn report_gauges(ctx: Arc<Context>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticker.tick().await;
        let mut counts: HashMap<Phase, i64> = HashMap::new();
        for store in &ctx.stores {
            for obj in store.state() {
                *counts.entry(status::phase(&obj)).or_default() += 1;
            }
        }
        let count = |phase| counts.get(&phase).copied().unwrap_or(0);
        ctx.metrics.set_objects_by_phase(count);
        ctx.metrics
            .set_unresolved_submissions(count(Phase::Submitting));
        ctx.metrics.set_tracked_tasks(ctx.poller.tracked() as i64);
        ctx.metrics
            .set_queue_waiting(&ctx.fair.waiting_by_namespace());
        ctx.metrics.hss.set_budget_rates(&ctx.budget.rates());
        if let Some(at) = ctx.poller.last_success() {
            ctx.metrics.poll_succeeded(at);
        }
    }
}

/// Runs the ClusterScanTask controllers (one per scope: a watched namespace, or `None` for
/// all), the shared poller and the metrics gauges until `shutdown` resolves. Readiness turns
/// true once every cache has its first state.
pub async fn run(
    args: ScanArgs,
    scopes: Vec<Option<String>>,
    kube: Client,
    runtime: Runtime,
    tenants: crate::tenancy::Tenants,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let fail_points = runtime.fail_points.clone();
    // Namespaced reports are written in the watched namespaces only (all: None).
    let watched: Option<Vec<String>> = scopes.iter().cloned().collect();
    let (poller, poll_triggers) = Poller::new(args.poll_interval, args.task_lost_after);
    let budget = args.hss.budget();
    let budget_for_queue = budget.clone();
    // The configured endpoint and the transport (timeout, CA bundle) are checked once, here:
    // a bad one stops the start instead of failing every object, or being left out.
    args.hss.validate().map_err(Error::Config)?;
    let http = args.hss.http_client().map_err(Error::Config)?;
    let own = credentials::own_credentials(&args, &http).await;
    // One unpaged list from the API server's watch cache (paging, kube's default of 500,
    // turns off the cache and reads etcd page by page, about 4x slower for 10,000 objects),
    // or a streaming list where the server has it: no full-list body in memory.
    let probe_scope: Api<ClusterScanTask> = match scopes.first() {
        Some(Some(ns)) => Api::namespaced(kube.clone(), ns),
        _ => Api::all(kube.clone()),
    };
    let (wc, streaming) =
        crate::controller_runtime::lists::config(&kube, &probe_scope, args.initial_list).await;
    tracing::info!(streaming, "reading the first list of ClusterScanTasks");
    let controllers: Vec<(Option<String>, Controller<ClusterScanTask>)> = scopes
        .into_iter()
        .map(|ns| {
            let api: Api<ClusterScanTask> = match &ns {
                Some(ns) => Api::namespaced(kube.clone(), ns),
                None => Api::all(kube.clone()),
            };
            // The cache keeps what reconcile reads (see `for_cache`).
            let (reader, writer) = reflector::store();
            let stream = watcher(api, wc.clone())
                .default_backoff()
                .modify(for_cache)
                .reflect(writer)
                .applied_objects();
            (ns, Controller::for_stream(stream, reader))
        })
        .collect();
    // Claims on deleted objects' tasks recorded by earlier processes, before any lookup.
    let ledger = crate::submission::Ledger::new(
        args.claims_configmap
            .as_ref()
            .map(|r| claims::ClaimStore::new(kube.clone(), &r.namespace, &r.name)),
    );
    let loaded = ledger.load().await.map_err(Error::Claims)?;
    tracing::info!(
        claims = loaded,
        persistent = args.claims_configmap.is_some(),
        "loaded the claims on deleted objects' tasks"
    );
    let fair = super::fair::FairQueue::new(budget_for_queue, poller.waker());
    let reports = crate::reports::Writer::new(&args.reports, watched);
    let ctx = Arc::new(Context {
        kube: kube.clone(),
        events: events::Events::new(kube.clone(), runtime.instance.clone()),
        poller: poller.clone(),
        args,
        budget,
        http,
        own,
        clients: Default::default(),
        stores: controllers.iter().map(|(_, c)| c.store()).collect(),
        ledger: Arc::new(ledger),
        fail_points,
        failures: FailureStreaks::default(),
        metrics: runtime.metrics.clone(),
        leadership: runtime.leadership.clone(),
        findings: Default::default(),
        superseded: Default::default(),
        tenants,
        fair,
        reads: super::offload::Offload::new(poller.waker()),
        reports,
        results: super::offload::Offload::new(poller.waker()),
        lookups: super::offload::Offload::new(poller.waker()),
        named: super::offload::Offload::new(poller.waker()),
    });

    // The poller's triggers go to the controller of the object's namespace.
    let mut routes: HashMap<
        Option<String>,
        futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterScanTask>>,
    > = HashMap::new();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let mut runs = Vec::new();
    for (ns, controller) in controllers {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        routes.insert(ns.clone(), tx);
        let stop = shutdown.clone();
        // No watch on Secrets: the operator reads the one an object names, when it reconciles
        // it (get only), and looks again with backoff while it is missing or unusable.
        let run = controller
            .reconcile_on(rx)
            .with_config(
                kube::runtime::controller::Config::default().concurrency(ctx.args.concurrency),
            )
            .graceful_shutdown_on(stop)
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                    Err(e) => tracing::debug!(error = %e, "reconcile error"),
                }
            });
        runs.push(run);
    }
    let router = poll_triggers.for_each(move |obj: ObjectRef<ClusterScanTask>| {
        let route = routes.get(&obj.namespace).or_else(|| routes.get(&None));
        if let Some(tx) = route {
            let _ = tx.unbounded_send(obj);
        }
        futures::future::ready(())
    });
    let stores = ctx.stores.clone();
    let tenants_ready = ctx.tenants.clone();
    let readiness = runtime.readiness.clone();
    let synced = async move {
        for store in &stores {
            if store.wait_until_ready().await.is_err() {
                return;
            }
        }
        tenants_ready.wait_until_ready().await;
        readiness.set_synced();
        futures::future::pending::<()>().await
    };
    let gauges = report_gauges(ctx.clone());
    // One future: everything ends with the controllers, and dropping this future (a crash in
    // tests, a lost lease) stops everything at once.
    // No reconcile before the policies are known: a scan would be refused for want of them.
    let tenants = ctx.tenants.clone();
    let runs = async move {
        tenants.wait_until_ready().await;
        futures::future::join_all(runs).await
    };
    tokio::select! {
        _ = runs => {}
        _ = poller.run(futures::future::pending::<()>()) => {}
        _ = router => {}
        _ = synced => {}
        _ = gauges => {}
        _ = ctx.events.run() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;

    /// Kubernetes' cap on one object's annotations (and, separately, its labels).
    const MAX_ANNOTATIONS: usize = 256 * 1024;

    /// An object as large as a tenant can make it: 256 KiB of annotations, among them the
    /// two the operator reads (every other one with an adopt-task value as long as fits),
    /// and 2,000 labels with values of the longest length allowed (63).
    fn maximal(i: usize) -> ClusterScanTask {
        let mut annotations: serde_json::Map<String, serde_json::Value> = (0..64)
            .map(|k| {
                let value = "x".repeat(MAX_ANNOTATIONS / 64 - 64);
                (format!("tenant.example.com/k{k}"), value.into())
            })
            .collect();
        let adopt = if i.is_multiple_of(2) {
            format!("task-{i}")
        } else {
            "y".repeat(4096)
        };
        annotations.insert(transitions::ADOPT_ANNOTATION.into(), adopt.into());
        annotations.insert(
            transitions::RESUBMIT_ANNOTATION.into(),
            format!("attempt-{i}").into(),
        );
        let labels: serde_json::Map<String, serde_json::Value> = (0..2_000)
            .map(|k| (format!("team.example.com/l{k}"), "z".repeat(63).into()))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hss.scanops.dev/v1alpha1",
            "kind": "ClusterScanTask",
            "metadata": {
                "name": format!("scan-{i}"),
                "namespace": "tenant",
                "uid": format!("uid-{i}"),
                "annotations": annotations,
                "labels": labels,
            },
            "spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["cluster_vul"], "rangeType": "all_cluster"}},
        }))
        .expect("object")
    }

    #[test]
    fn a_thousand_maximal_objects_keep_far_under_the_charts_memory_limit() {
        let shapes = [maximal(0), maximal(1)];
        let whole = serde_json::to_vec(&shapes[1]).expect("json").len();
        assert!(
            whole > MAX_ANNOTATIONS,
            "the input is maximal: {whole} bytes"
        );
        let mut kept = 0usize;
        for i in 0..1_000 {
            let mut obj = shapes[i % 2].clone();
            let attempt = format!("attempt-{i}");
            obj.annotations_mut()
                .insert(transitions::RESUBMIT_ANNOTATION.into(), attempt.clone());
            for_cache(&mut obj);
            kept += serde_json::to_vec(&obj).expect("json").len();
            assert_eq!(
                obj.annotations().get(transitions::RESUBMIT_ANNOTATION),
                Some(&attempt),
                "what reconcile acts on is kept"
            );
            let adopt = obj.annotations().get(transitions::ADOPT_ANNOTATION);
            if i.is_multiple_of(2) {
                assert_eq!(adopt.map(String::as_str), Some("task-0"), "kept");
            } else {
                assert_eq!(adopt, None, "longer than any task id: dropped, not kept");
            }
            assert!(obj.labels().is_empty());
        }
        // Whole, they would be about 1,000 x `whole` (over 300 MiB, past the chart's 256Mi).
        assert!(kept < 1 << 20, "{kept} bytes kept of 1,000 objects");
    }

    #[test]
    fn the_controller_caches_only_through_for_cache() {
        // The watch is wired here; a second, untrimmed stream into a store would undo it.
        let wiring = include_str!("run.rs");
        let wiring = &wiring[..wiring.find("#[cfg(test)]").expect("tests at the end")];
        assert_eq!(wiring.matches(".modify(for_cache)").count(), 1);
        assert_eq!(wiring.matches(".reflect(").count(), 1);
    }
}
