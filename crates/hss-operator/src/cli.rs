//! The command line: one subcommand per job. Each subsystem owns its flags (`clap::Args`) and
//! is flattened in here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{submit, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "hss-operator",
    version,
    about = "Runs Huawei Cloud HSS cluster and IaC scans from Kubernetes ClusterScanTask resources"
)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: telemetry::LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator: reconcile ClusterScanTasks against HSS.
    Run(Box<crate::operator::RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print, as JSON, the permissions `run` with the same flags needs: the table the Helm
    /// chart's RBAC is checked against. Contacts nothing.
    Permissions(Box<crate::operator::RunArgs>),
    /// Submit one ClusterScanTask manifest to HSS without a cluster (for CI pipelines).
    Submit(Box<submit::SubmitArgs>),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd => match crate::crd::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {}", crate::report_error(&err));
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => match crate::operator::run(*args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {}", crate::report_error(&err));
                ExitCode::FAILURE
            }
        },
        Command::Permissions(args) => {
            match serde_json::to_string_pretty(&args.required_permissions()) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Submit(args) => submit::run(*args).await,
    }
}
