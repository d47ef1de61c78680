use std::process::ExitCode;

use clap::Parser;
use hss_operator::{cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(&cli.telemetry);
    cli::run(cli).await
}
