//! The results: one [`Row`] per scenario (or variant), printed as a markdown table with the
//! rows' notes below it, and the formatting helpers the notes share.

use std::collections::BTreeMap;

use crate::proxy::CountSnap;

/// One line of the table, and the notes printed under it.
#[derive(Default)]
pub struct Row {
    pub scenario: String,
    pub objects: usize,
    /// HSS calls by API.
    pub calls: BTreeMap<String, u64>,
    /// The operator's requests to the API server.
    pub writes: Option<CountSnap>,
    /// apply→taskId p50/p99, ms.
    pub task_id_ms: Option<(f64, f64)>,
    /// apply→Succeeded p50/p99, ms.
    pub succeeded_ms: Option<(f64, f64)>,
    pub peak_rss_kib: Option<u64>,
    pub cpu_secs: Option<f64>,
    /// 429s from the simulator.
    pub throttled: u64,
    pub notes: Vec<String>,
}

/// The line above the table: when, how many CPUs, the load.
pub fn print_header() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nhss-operator bench, {} , {} CPUs, load average {}\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// The table, then each row's notes under its scenario in bold.
pub fn print_table(rows: &[Row]) {
    println!(
        "| scenario | objects | HSS calls by API | K8s writes/object (CST total, of which status; Events) | apply→taskId p50/p99 | apply→Succeeded p50/p99 | operator peak RSS | operator CPU s | 429s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{}", table_line(r));
    }
    println!();
    for r in rows {
        if !r.notes.is_empty() {
            println!("**{}**", r.scenario);
            for n in &r.notes {
                println!("- {n}");
            }
            println!();
        }
    }
}

fn table_line(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.scenario,
        r.objects,
        fmt_calls(&r.calls),
        writes_cell(r),
        ms_pair(r.task_id_ms),
        ms_pair(r.succeeded_ms),
        r.peak_rss_kib.map(mib).unwrap_or_else(|| "n/a".into()),
        r.cpu_secs
            .map(|c| format!("{c:.2}"))
            .unwrap_or_else(|| "n/a".into()),
        r.throttled
    )
}

/// "CST (status); Events [totals CST/status/Events]" per object.
fn writes_cell(r: &Row) -> String {
    match (r.writes, r.objects) {
        (Some(w), n) if n > 0 => format!(
            "{:.2} ({:.2}); {:.2} [totals {}/{}/{}]",
            w.cst_writes as f64 / n as f64,
            w.cst_status_writes as f64 / n as f64,
            w.event_writes as f64 / n as f64,
            w.cst_writes,
            w.cst_status_writes,
            w.event_writes
        ),
        _ => "n/a".into(),
    }
}

/// p50 and p99 of `v` (nearest rank), `None` if empty.
pub fn percentiles(mut v: Vec<f64>) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some((at(0.5), at(0.99)))
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// "p50 / p99 ms", in seconds from 10 s on.
pub fn ms_pair(p: Option<(f64, f64)>) -> String {
    match p {
        Some((a, b)) if b >= 10_000.0 => format!("{:.1} s / {:.1} s", a / 1000.0, b / 1000.0),
        Some((a, b)) => format!("{a:.0} / {b:.0} ms"),
        None => "n/a".into(),
    }
}

/// "API count, ..." or "none".
pub fn fmt_calls(c: &BTreeMap<String, u64>) -> String {
    if c.is_empty() {
        return "none".into();
    }
    c.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
