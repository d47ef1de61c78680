use std::process::ExitCode;

use clap::Parser;
use hss_operator::{cli, telemetry};

/// Only with the `mimalloc` feature (for the bench's comparison; see Cargo.toml).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(&cli.telemetry);
    cli::run(cli).await
}
