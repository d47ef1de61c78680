//! The scenarios, one module each, and what they share: which one a number means, and the
//! operator variants that scenarios 1-3, 6 and 7 measure one after another.
//!
//! - [`pipeline`]: 1 raw pipeline and 2 scaled budget, on fresh objects per variant;
//! - [`idle`]: 3 idle with existing Succeeded objects, created once for every variant;
//! - [`sdk`]: 4 the Python SDK script vs `hss-operator submit`;
//! - [`fair`]: 5 the fair share between namespaces, 6 CPU while 1,000 wait and 7 a deletion
//!   while 100 wait for reads (6 and 7 per variant).

mod fair;
mod idle;
mod pipeline;
mod sdk;

use std::path::PathBuf;

use anyhow::{anyhow, bail};

use crate::{cli::Cli, env::Env, report::Row};

/// Runs scenario `n` (its rows: one per variant in 1-3).
pub async fn run(env: &Env, cli: &Cli, n: u8) -> anyhow::Result<Vec<Row>> {
    match n {
        1 => pipeline::pipelines(env, cli, &pipeline::Spec::raw(cli.objects)).await,
        2 => pipeline::pipelines(env, cli, &pipeline::Spec::budget(cli.objects)).await,
        3 => idle::idle(env, cli, cli.objects.unwrap_or(10_000)).await,
        4 => sdk::sdk_vs_submit(env, cli).await.map(|r| vec![r]),
        5 => fair::shares_scenario(env, cli).await,
        6 => fair::waiting_cpu(env, cli).await,
        7 => fair::deletion_while_reads_wait(env, cli).await,
        other => Err(anyhow!("no scenario {other}")),
    }
}

/// One operator build or setting measured by scenarios 1-3.
struct Variant {
    /// Empty for the default (the operator binary as it is).
    label: String,
    bin: PathBuf,
    args: Vec<String>,
}

impl Variant {
    /// "variant LABEL: BIN ARGS", for the notes.
    fn describe(&self) -> String {
        format!(
            "variant {}: {} {}",
            self.label,
            self.bin.display(),
            self.args.join(" ")
        )
    }
}

/// `--variant`s, or the operator binary as it is.
fn variants(env: &Env, cli: &Cli) -> anyhow::Result<Vec<Variant>> {
    if cli.variants.is_empty() {
        return Ok(vec![Variant {
            label: String::new(),
            bin: env.bin.clone(),
            args: Vec::new(),
        }]);
    }
    cli.variants.iter().map(|v| parse_variant(v)).collect()
}

/// `LABEL=BIN [ARG..]`; BIN must exist.
fn parse_variant(v: &str) -> anyhow::Result<Variant> {
    let (label, rest) = v
        .split_once('=')
        .ok_or_else(|| anyhow!("--variant {v:?} is not LABEL=BIN [ARG..]"))?;
    let mut words = rest.split_whitespace();
    let bin = PathBuf::from(
        words
            .next()
            .ok_or_else(|| anyhow!("--variant {v:?} has no binary"))?,
    );
    if !bin.exists() {
        bail!("--variant {label}: {} does not exist", bin.display());
    }
    Ok(Variant {
        label: label.to_string(),
        bin,
        args: words.map(str::to_string).collect(),
    })
}
