//! The row of a scenario 1 or 2 run and its notes: the targets (one CreateTask per object,
//! K8s writes per object, apply→taskId p99) and where the time goes.

use std::{collections::BTreeMap, time::Duration};

use super::{
    Outcome, Spec,
    tracks::{between, since_applied},
};
use crate::{
    cli::Cli,
    report::{Row, mib, ms_pair, verdict},
    simulator::{Calls, calls_delta, total_429},
};

/// The run's row and its notes.
pub(super) fn row(cli: &Cli, spec: &Spec, o: &Outcome) -> Row {
    let task_id_ms = since_applied(&o.tracks, |t| t.task_id);
    let succeeded_ms = since_applied(&o.tracks, |t| t.succeeded);
    let calls = calls_delta(&o.end.calls1, &o.end.calls0);
    let (stats, writes) = (o.end.stats, o.end.writes);
    let mut notes = vec![
        created_note(cli, spec, o),
        creates_note(spec, &calls, &o.end.calls1),
        writes_note(spec, o),
        format!(
            "operator VmRSS at the end {}, VmHWM {}",
            mib(stats.rss_kib),
            mib(stats.hwm_kib)
        ),
        breakdown_note(o),
    ];
    notes.push(if spec.per_minute == 0 {
        latency_target_note(cli, task_id_ms)
    } else {
        scaled_note(spec, task_id_ms, succeeded_ms, o.all_done_in)
    });
    Row {
        scenario: spec.label.to_string(),
        objects: spec.objects,
        calls,
        writes: Some(writes),
        task_id_ms,
        succeeded_ms,
        peak_rss_kib: Some(stats.hwm_kib),
        cpu_secs: Some(stats.cpu_secs),
        throttled: total_429(&o.end.calls1) - total_429(&o.end.calls0),
        notes,
    }
}

fn created_note(cli: &Cli, spec: &Spec, o: &Outcome) -> String {
    let pace = cli.create_rate;
    format!(
        "created {} objects in {:.1}s ({} concurrent creates, rate {}); all Succeeded: {} after {:.1}s; simulator --finish-after {}, operator --poll-interval {}",
        spec.objects,
        o.created_in.as_secs_f64(),
        cli.create_concurrency,
        if pace > 0.0 {
            format!("{pace}/s")
        } else {
            "unpaced".into()
        },
        o.done,
        o.all_done_in.as_secs_f64(),
        humantime::format_duration(cli.finish_after),
        humantime::format_duration(cli.poll_interval),
    )
}

/// Accepted CreateTask calls (not 429) against one per object.
fn creates_note(spec: &Spec, calls: &BTreeMap<String, u64>, calls1: &Calls) -> String {
    let creates = calls.get("CreateTask").copied().unwrap_or(0)
        - calls1
            .get("CreateTask")
            .and_then(|b| b.get("429"))
            .copied()
            .unwrap_or(0);
    let objects = spec.objects;
    format!(
        "target 1 CreateTask per object: {} ({creates} accepted CreateTask for {objects} objects)",
        verdict(creates as usize == objects)
    )
}

/// ClusterScanTask writes against 4 per object plus the progress changes, and the rest of
/// the proxy's counts.
fn writes_note(spec: &Spec, o: &Outcome) -> String {
    let progress_changes: u64 = o.tracks.values().map(|t| t.progress_changes as u64).sum();
    let (objects, writes) = (spec.objects, o.end.writes);
    let n = objects as f64;
    let bound_writes = 4.0 * n + progress_changes as f64;
    format!(
        "target K8s writes <= 4/object + 1 per observed progress change: {} ({} ClusterScanTask writes vs bound {bound_writes:.0} = 4x{objects} + {progress_changes} progress changes seen by the bench's watch); Events {} ({:.2}/object), other writes {}, reads (GET incl. watches) {}, 409 conflicts {}",
        verdict(writes.cst_writes as f64 <= bound_writes),
        writes.cst_writes,
        writes.event_writes,
        writes.event_writes as f64 / n,
        writes.other_writes,
        writes.reads,
        writes.conflicts
    )
}

/// Where apply→taskId goes: the watch's stages and the operator's submission steps.
fn breakdown_note(o: &Outcome) -> String {
    let t = &o.tracks;
    format!(
        "where apply→taskId goes, p50/p99 as the bench's watch saw it: apply→finalizer {}, finalizer→attempt record {}, attempt record→taskId {}; inside the operator, per submission: {}",
        ms_pair(between(t, |t| t.applied, |t| t.finalizer)),
        ms_pair(between(t, |t| t.finalizer, |t| t.recorded)),
        ms_pair(between(t, |t| t.recorded, |t| t.task_id)),
        o.end
            .steps
            .iter()
            .map(|(step, figures)| format!("{step} {figures}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Scenario 1's apply→taskId target.
fn latency_target_note(cli: &Cli, task_id_ms: Option<(f64, f64)>) -> String {
    // Issue #15: under 100 ms when objects arrive paced; a burst is reported against the
    // older 250 ms target and explained by the breakdown above.
    let (target, bound) = if cli.create_rate > 0.0 {
        ("100 ms with a free budget, paced", 100.0)
    } else {
        ("250 ms with a free budget", 250.0)
    };
    format!(
        "target apply→taskId p99 < {target}: {}",
        verdict(task_id_ms.is_some_and(|(_, p99)| p99 < bound))
    )
}

/// Scenario 2's figures in implied real time (the budget window scaled to a minute).
fn scaled_note(
    spec: &Spec,
    task_id_ms: Option<(f64, f64)>,
    succeeded_ms: Option<(f64, f64)>,
    all_done_in: Duration,
) -> String {
    let scale = 60.0 / spec.window.as_secs_f64();
    let real = |p: Option<(f64, f64)>| {
        p.map(|(a, b)| {
            format!(
                "{:.1} / {:.1} min",
                a * scale / 60_000.0,
                b * scale / 60_000.0
            )
        })
        .unwrap_or_else(|| "n/a".into())
    };
    format!(
        "scaled x{scale:.0} ({} calls per {} window per API on both sides); implied real time: apply→taskId p50/p99 {}, apply→Succeeded p50/p99 {} (scan duration scaled too), whole batch {:.0} min",
        spec.per_minute,
        humantime::format_duration(spec.window),
        real(task_id_ms),
        real(succeeded_ms),
        all_done_in.as_secs_f64() * scale / 60.0
    )
}
