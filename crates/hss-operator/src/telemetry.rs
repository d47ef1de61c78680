//! Logging: `tracing` with a `RUST_LOG`-style filter, plain or JSON lines on standard error.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format on standard error.
    #[arg(long, global = true, env = "HSS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Log filter in RUST_LOG syntax, e.g. `info,hss_operator=debug`.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Installs the global subscriber. Logs go to standard error so standard output stays
/// machine-readable for `submit`, `crd` and `permissions`.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match args.log_format {
        LogFormat::Plain => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
}
