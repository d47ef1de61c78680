//! `cargo run --release -p hss-bench -- [--scenario N ...] [--objects N]`: drives the real path
//! (kube-apiserver + etcd from scripts/control-plane.sh, `hss-simulator` and
//! `hss-operator run` as child processes) and prints a markdown table, one row per scenario.
//! See docs/benchmarks.md for the scenarios, the targets and how to read the numbers.
//!
//! The operator talks to the API server through a counting proxy run by this process
//! ([`proxy`]); the bench's own requests (creating objects, its watch) go straight to the API
//! server and are not counted.
//!
//! Modules: [`cli`] the flags; [`env`] the control plane, clients and binaries every scenario
//! shares; [`simulator`] and [`operator`] the child processes; [`procfs`] their memory and
//! CPU; [`proxy`] the counting proxy; [`scenarios`] one module per scenario; [`report`] the
//! rows and the table.

mod cli;
mod env;
mod operator;
mod procfs;
mod proxy;
mod report;
mod scenarios;
mod simulator;

use clap::Parser;

use crate::{cli::Cli, env::Env, report::Row};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = Env::start(&cli).await?;
    let mut rows = Vec::new();
    for s in cli.scenarios.clone() {
        eprintln!("bench: scenario {s}");
        match scenarios::run(&env, &cli, s).await {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("bench: scenario {s} failed: {e:#}");
                rows.push(Row {
                    scenario: format!("{s} FAILED"),
                    notes: vec![format!("{e:#}")],
                    ..Row::default()
                });
            }
        }
    }
    report::print_header();
    report::print_table(&rows);
    drop(env.cp);
    Ok(())
}
