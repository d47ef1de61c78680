//! The command line: which scenarios to run, their sizes and settings, and the binaries.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "hss-operator benchmark: prints a markdown table, one row per scenario")]
pub struct Cli {
    /// Scenarios to run (repeatable or comma separated): 1 raw pipeline, 2 scaled budget,
    /// 3 idle with existing Succeeded objects, 4 Python SDK script vs `submit`, 5 fair share
    /// between namespaces, 6 CPU while 1,000 objects wait, 7 a deletion while 100 wait for
    /// reads.
    #[arg(long = "scenario", value_delimiter = ',', default_values_t = [1u8, 3])]
    pub scenarios: Vec<u8>,
    /// Override the object count of scenarios 1-3 and 6 (defaults 100, 1000, 10000, 1000).
    #[arg(long)]
    pub objects: Option<usize>,
    /// Idle measurement window of scenario 3.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// Simulated scan duration (hss-simulator --finish-after) for scenarios 1 and 2.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub finish_after: Duration,
    /// Operator --poll-interval for scenarios 1 and 2.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Concurrent creates by the bench.
    #[arg(long, default_value_t = 8)]
    pub create_concurrency: usize,
    /// Creates per second in scenarios 1 and 2 (0: all at once, bounded by
    /// --create-concurrency). A paced run shows latency without queueing.
    #[arg(long, default_value_t = 0.0)]
    pub create_rate: f64,
    /// Runs per tool in scenario 4.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The hss-operator binary (build it with `cargo build --release -p hss-operator`).
    #[arg(long)]
    pub operator_bin: Option<PathBuf>,
    /// The hss-simulator binary (build it with `cargo build --release -p hss-simulator`).
    #[arg(long)]
    pub simulator_bin: Option<PathBuf>,
    /// Scenarios 1-3, 6 and 7 measure each variant, one after another (scenario 3 on the same
    /// objects, 1 and 2 on fresh ones): `LABEL=BIN [ARG..]` (repeatable), e.g.
    /// `system-alloc=target/release/hss-operator-system --initial-list list`. Default: the
    /// operator binary as it is.
    #[arg(long = "variant", value_name = "LABEL=BIN [ARG..]")]
    pub variants: Vec<String>,
    /// Python interpreter with huaweicloudsdkhss (scenario 4).
    #[arg(long)]
    pub python: Option<PathBuf>,
}
