//! Memory and CPU of a child process, read from `/proc/PID/status` (`VmRSS`, `VmHWM`) and
//! `/proc/PID/stat` (`utime + stime`).

use std::process::Command;

/// One reading of a process; zeros for what could not be read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub cpu_secs: f64,
}

/// Reads process `pid` now.
pub fn proc_stats(pid: u32) -> ProcStats {
    let (rss_kib, hwm_kib) = memory_kib(pid);
    ProcStats {
        rss_kib,
        hwm_kib,
        cpu_secs: cpu_secs(pid),
    }
}

/// (`VmRSS`, `VmHWM`) in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let (mut rss, mut hwm) = (0, 0);
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let kib = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                rss = kib(line);
            } else if line.starts_with("VmHWM:") {
                hwm = kib(line);
            }
        }
    }
    (rss, hwm)
}

/// User plus system CPU seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    // Fields after the command: state(3) ... utime(14) stime(15).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clk_tck()
}

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
