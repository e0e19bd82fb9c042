//! `dws`: convert, inspect and run DWSNets.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dws_host::blob_io::{encode, AlignedBlob};
use dws_host::config::Config;
use dws_host::{convert, inspect, runner, tensors, weight_space};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "dws",
    version,
    about = "Run trained DWSNets (AvivNavon/DWSNets) anywhere"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an upstream checkpoint (.pt/.pth state_dict or .safetensors) into a .dws blob.
    Convert {
        /// The state_dict file.
        checkpoint: PathBuf,
        /// JSON with the upstream constructor's keyword arguments and "model".
        #[arg(long)]
        config: PathBuf,
        /// Upstream statistics.pth: inputs are normalized inside the model.
        #[arg(long)]
        statistics: Option<PathBuf>,
        /// Output blob.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Run a model on a safetensors batch (weights.{i}, biases.{i}).
    Run {
        /// The .dws blob.
        model: PathBuf,
        /// Inputs: weights.{i} [B, d_i, d_{i+1}, F] and biases.{i} [B, d_{i+1}, F].
        inputs: PathBuf,
        /// Output safetensors: logits [B, classes] or weights.{i}/biases.{i}.
        #[arg(short, long)]
        output: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Print the architecture, parameter count, blob and scratch bytes and FLOPs per input.
    Inspect {
        /// The .dws blob.
        model: PathBuf,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert {
            checkpoint,
            config,
            statistics,
            output,
        } => {
            let cfg = Config::load(&config)?;
            let sd = tensors::read_checkpoint(&checkpoint)?;
            let stats = statistics
                .as_deref()
                .map(tensors::read_checkpoint)
                .transpose()?;
            let plan = convert::convert(&cfg, &sd, stats.as_ref())
                .with_context(|| format!("converting {}", checkpoint.display()))?;
            let bytes = encode(&plan)?;
            let blob = AlignedBlob::from_bytes(&bytes);
            let model = blob
                .model()
                .context("the converted model failed validation")?;
            std::fs::write(&output, &bytes)
                .with_context(|| format!("writing {}", output.display()))?;
            println!(
                "wrote {} ({} bytes, {} parameters, {} ops)",
                output.display(),
                bytes.len(),
                model.params().len(),
                plan.ops.len()
            );
        }
        Command::Run {
            model,
            inputs,
            output,
            threads,
        } => {
            let blob = AlignedBlob::read(&model)?;
            let m = blob.model()?;
            let tensors = tensors::read_safetensors(&inputs)?;
            let (batch, data) = weight_space::flatten_inputs(&m, &tensors)
                .with_context(|| format!("in inputs {}", inputs.display()))?;
            let start = Instant::now();
            let out = runner::run_batch(
                &m,
                &data,
                batch,
                threads.unwrap_or_else(runner::default_threads),
            )?;
            let secs = start.elapsed().as_secs_f64();
            let named = weight_space::unflatten_outputs(&m, batch, &out)?;
            tensors::write_safetensors(&output, &named)?;
            eprintln!(
                "ran {batch} inputs in {:.3} s ({:.0} inputs/s) -> {}",
                secs,
                batch as f64 / secs.max(1e-9),
                output.display()
            );
        }
        Command::Inspect { model } => {
            let blob = AlignedBlob::read(&model)?;
            let m = blob.model()?;
            print!("{}", inspect::summary(&m, blob.bytes().len())?);
        }
    }
    Ok(())
}
