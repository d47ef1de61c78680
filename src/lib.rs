//! hss-operator: runs Huawei Cloud Host Security Service scans from Kubernetes resources.
//!
//! - [`hss`]: the HSS v5 client (no Kubernetes in there).
//! - [`crd`]: the custom resources.
//! - [`submit`]: the one-shot `submit` command.
//! - [`simulator`]: a real HTTP server speaking HSS's task APIs, for tests and demos.

pub mod admin;
pub mod cli;
pub mod config;
pub mod controller;
pub mod crd;
pub mod findings;
pub mod hss;
pub mod kit;
pub mod lease;
pub mod metrics;
pub mod operator;
pub mod permissions;
pub mod simulator;
pub mod submit;
pub mod telemetry;
pub mod triggers;

/// Renders an error with its chain of causes: `a: b: c`.
pub fn report_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
