//! `hss-simulator`: the HSS simulator as its own process (see the library's docs for what it
//! serves). Prints `listening on http://IP:PORT` as the first line of standard output; logs go
//! to standard error.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "hss-simulator",
    version,
    about = "A local HTTP server speaking the Huawei Cloud HSS v5 task APIs, for tests and demos"
)]
struct Cli {
    /// Log filter in RUST_LOG syntax, e.g. `info,hss_simulator=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_filter: String,

    #[command(flatten)]
    sim: hss_simulator::SimArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match hss_simulator::run(cli.sim).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}
