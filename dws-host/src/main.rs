//! `dws`: convert, inspect, run and evaluate DWSNets.

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use dws_host::blob_io::{encode, AlignedBlob};
use dws_host::config::Config;
use dws_host::{bench, convert, eval, inspect, output, quantize, runner, tensors, weight_space};
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
    /// Run a model on a safetensors batch (weights.{i}, biases.{i}), a directory of INR
    /// files, one INR file (.pth/.pt) or a splits JSON (see docs/datasets.md).
    Run {
        /// The .dws blob.
        model: PathBuf,
        /// Inputs: a safetensors file (or a torch.save'd dict) with weights.{i}
        /// [B, d_i, d_{i+1}, F] and biases.{i} [B, d_{i+1}, F]; or a directory of INR
        /// files (.pth/.pt/.safetensors, searched recursively; labels unknown); or one INR
        /// file (.pth/.pt); or an upstream splits JSON (with --split).
        inputs: PathBuf,
        /// Output: safetensors (logits [B, classes] or weights.{i}/biases.{i}) for a
        /// batch of tensors; a predictions CSV for a dataset input (`-` for stdout).
        #[arg(short, long)]
        output: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long, value_parser = at_least_one)]
        threads: Option<usize>,
        /// Engine: the batched f32 engine (int8 blobs: the core's executor with SIMD
        /// kernels, the same bits), the core, or an NVIDIA GPU (a dws built with
        /// `--features cuda`).
        #[arg(long, visible_alias = "device", value_enum, default_value_t = runner::EngineKind::Fast)]
        engine: runner::EngineKind,
        /// The split of a splits JSON input [default: test].
        #[arg(long)]
        split: Option<String>,
        /// Where the files a splits JSON lists are looked for when they are not where
        /// their paths say (a dataset that moved): by their trailing path parts, here and
        /// then in the splits file's folder (see docs/datasets.md).
        #[arg(long)]
        data_root: Option<PathBuf>,
        /// INR files loaded and run at a time (dataset inputs).
        #[arg(long, alias = "batch", default_value_t = dws_host::eval::DEFAULT_BATCH, value_parser = at_least_one)]
        batch_size: usize,
    },
    /// Evaluate a classifier on a split of an INR dataset: accuracy, per-class accuracy,
    /// confusion matrix, throughput (see docs/datasets.md).
    Eval {
        /// The .dws blob (a DWSModelForClassification).
        model: PathBuf,
        /// Upstream splits JSON: {split: {"path": [...], "label": [...]}}.
        #[arg(value_name = "SPLITS", required_unless_present = "splits")]
        splits_file: Option<PathBuf>,
        /// The splits JSON, as an option (the same as the positional SPLITS).
        #[arg(long, value_name = "SPLITS", conflicts_with = "splits_file")]
        splits: Option<PathBuf>,
        /// The split to evaluate.
        #[arg(long, default_value = "test")]
        split: String,
        /// Where the files a splits JSON lists are looked for when they are not where
        /// their paths say (a dataset that moved): by their trailing path parts, here and
        /// then in the splits file's folder (see docs/datasets.md).
        #[arg(long)]
        data_root: Option<PathBuf>,
        /// Worker threads (default: all cores).
        #[arg(long, value_parser = at_least_one)]
        threads: Option<usize>,
        /// Write per-input predictions as CSV (path,label,predicted,logit_0..; `-` for stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// INR files loaded and run at a time.
        #[arg(long, alias = "batch", default_value_t = dws_host::eval::DEFAULT_BATCH, value_parser = at_least_one)]
        batch_size: usize,
        /// Engine (as for `dws run`).
        #[arg(long, visible_alias = "device", value_enum, default_value_t = runner::EngineKind::Fast)]
        engine: runner::EngineKind,
        /// Print the report as one JSON document on stdout (and nothing else there).
        #[arg(long)]
        json: bool,
    },
    /// Quantize an f32 blob to int8 (or 16x8: int16 activations) with calibration inputs;
    /// prints per-layer SQNR and, for a classifier, top-1 agreement with f32.
    Quantize {
        /// The f32 .dws blob.
        model: PathBuf,
        /// Calibration inputs: the `dws run` safetensors format, or an upstream splits JSON.
        #[arg(long)]
        calibration: PathBuf,
        /// With a splits JSON: the split to calibrate on [default: train].
        #[arg(long)]
        split: Option<String>,
        /// With a splits JSON: use at most this many inputs [default: 512].
        #[arg(long)]
        limit: Option<usize>,
        /// With a splits JSON: where the files it lists are looked for when they are not where
        /// their paths say (a dataset that moved): by their trailing path parts, here and
        /// then in the splits file's folder (see docs/datasets.md).
        #[arg(long)]
        data_root: Option<PathBuf>,
        /// Output blob.
        #[arg(short, long)]
        output: PathBuf,
        /// Activations: int8, or int16 ("16x8": int8 weights, twice the activation RAM, close
        /// to f32's predictions; see docs/quantization.md).
        #[arg(long, value_enum, default_value_t = quantize::Activations::Int8)]
        activations: quantize::Activations,
        /// Weight scales: one per output channel, or one per tensor.
        #[arg(long, value_enum, default_value_t = quantize::WeightScales::PerChannel)]
        weights: quantize::WeightScales,
        /// Weight rounding: learned on the calibration inputs (AdaRound), or to nearest.
        #[arg(long, value_enum, default_value_t = quantize::Rounding::Adaround)]
        rounding: quantize::Rounding,
        /// Worker threads for reading calibration files, calibrating, rounding and measuring
        /// the error (default: all cores; the blob does not depend on it).
        #[arg(long, value_parser = at_least_one)]
        threads: Option<usize>,
    },
    /// Measure throughput (inputs/s, GFLOP/s or for int8 GOP/s, fraction of a GEMM peak in the
    /// blob's precision measured in the same run) and single-input latency on seeded synthetic
    /// inputs (see docs/benchmarks.md).
    Bench {
        /// The .dws blob.
        model: PathBuf,
        /// Inputs per call.
        #[arg(long, alias = "batch", default_value_t = 64, value_parser = at_least_one)]
        batch_size: usize,
        /// Worker threads (default: all cores).
        #[arg(long, value_parser = at_least_one)]
        threads: Option<usize>,
        /// Seconds of timed batch calls: at least five calls run after a warm-up call, however
        /// long they take (the GEMM peak and each latency take up to 2 s more).
        #[arg(long, default_value_t = 5.0, value_parser = seconds)]
        seconds: f64,
        /// Engine (as for `dws run`; the GPU skips the CPU GEMM peak).
        #[arg(long, visible_alias = "device", value_enum, default_value_t = runner::EngineKind::Fast)]
        engine: runner::EngineKind,
        /// Inputs per chunk of the fast engine (f32 blobs).
        #[arg(long, value_parser = at_least_one)]
        chunk: Option<usize>,
        /// Seed of the synthetic inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Skip the GEMM peak measurement (f32 blobs: the fast engine's f32 GEMM; int8 blobs:
        /// the int8 kernels' linear).
        #[arg(long)]
        no_peak: bool,
        /// Skip the single-input latency measurement.
        #[arg(long)]
        no_latency: bool,
    },
    /// Run inputs on a board that serves a model over a UART (the firmware template in
    /// dws-embedded/board; docs/serial.md) and write its outputs as `dws run` does.
    Serial {
        /// `tcp:HOST:PORT` (QEMU's -serial tcp:), or a serial device `PATH[@BAUD]`
        /// (default 115200 baud, 8N1).
        #[arg(long)]
        port: String,
        /// Inputs, as for `dws run`: a safetensors batch, a splits JSON, a folder of INR
        /// files, one INR file.
        inputs: PathBuf,
        /// Output, as `dws run` writes it for those inputs.
        #[arg(short, long)]
        output: PathBuf,
        /// The blob the board must serve: its identity is checked and every output is
        /// compared with this host's run (bit-identical for quantized blobs, the reference
        /// suite's tolerance for f32); prints `N passed, M failed`.
        #[arg(long)]
        verify: Option<PathBuf>,
        /// The split of a splits JSON input [default: test].
        #[arg(long)]
        split: Option<String>,
        /// Where moved dataset files are looked for (as for `dws run`).
        #[arg(long)]
        data_root: Option<PathBuf>,
        /// Seconds to wait for the board's hello and for each output.
        #[arg(long, default_value_t = 60.0, value_parser = seconds)]
        timeout: f64,
        /// Threads for reading files and for the host's run (default: all cores).
        #[arg(long, value_parser = at_least_one)]
        threads: Option<usize>,
        /// The host's engine for --verify (as for `dws run`).
        #[arg(long, visible_alias = "device", value_enum, default_value_t = runner::EngineKind::Fast)]
        engine: runner::EngineKind,
    },
    /// Print the architecture, parameter count, blob and scratch bytes and FLOPs per input.
    Inspect {
        /// The .dws blob.
        model: PathBuf,
        /// Print one JSON document on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script for dws on stdout, e.g.
    /// `dws completions bash > ~/.local/share/bash-completion/completions/dws`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A count of at least one.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration in seconds: finite, not negative, at most a day.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=86_400.0).contains(&x) => Ok(x),
        Ok(_) => Err("must be between 0 and 86400 seconds".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        dws_host::stderr_line!("error: {e:#}");
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
            let mut inputs = vec![checkpoint.as_path(), config.as_path()];
            inputs.extend(statistics.as_deref());
            output::check_not_an_input(&output, &inputs)?;
            let cfg = Config::load(&config)?;
            let sd = tensors::read_checkpoint(&checkpoint)?;
            let stats = statistics
                .as_deref()
                .map(tensors::read_checkpoint)
                .transpose()?;
            let what = match &statistics {
                Some(s) => format!("{} with {}", checkpoint.display(), s.display()),
                None => checkpoint.display().to_string(),
            };
            let plan = convert::convert(&cfg, &sd, stats.as_ref())
                .with_context(|| format!("converting {what}"))?;
            let bytes = encode(&plan)?;
            let blob = AlignedBlob::from_bytes(&bytes);
            let model = blob
                .model()
                .context("the converted model failed validation")?;
            output::write(&output, &bytes)?;
            output::print(format_args!(
                "wrote {} ({} bytes, {} ops), parameters: {}\n",
                output.display(),
                bytes.len(),
                plan.ops.len(),
                inspect::parameters(&model)?,
            ))?;
            if statistics.is_none() {
                dws_host::stderr_line!(
                    "note: no --statistics: no input normalization is folded in, so the model \
                     runs on its inputs as given (right for a model trained on raw weights; one \
                     trained on normalized inputs needs --statistics statistics.pth)"
                );
            }
        }
        Command::Run {
            model,
            inputs,
            output,
            threads,
            engine,
            split,
            data_root,
            batch_size,
        } => {
            if !inputs.exists() {
                anyhow::bail!("{}: no such file or folder", inputs.display());
            }
            let torch_batch = eval::torch_batch(&inputs);
            if torch_batch.is_none() && eval::is_dataset_input(&inputs) {
                let options = eval::Options {
                    threads: threads.unwrap_or_else(runner::default_threads),
                    batch_size,
                    progress: true,
                    engine,
                };
                eval::run_dataset_command(
                    &model,
                    &inputs,
                    split.as_deref(),
                    data_root.as_deref(),
                    &output,
                    &options,
                )?;
                return Ok(());
            }
            eval::check_batch_output(&output, split.as_deref(), data_root.as_deref())?;
            output::check_not_an_input(&output, &[&model, &inputs])?;
            output::check_writable(&output)?;
            let blob = AlignedBlob::read(&model)?;
            let m = blob.model()?;
            let tensors = match torch_batch {
                Some(t) => t,
                None => tensors::read_safetensors(&inputs)?,
            };
            let (batch, data) = weight_space::flatten_inputs(&m, &tensors)
                .with_context(|| format!("in inputs {}", inputs.display()))?;
            let engine = runner::BatchRunner::new(&m, engine)?;
            let start = Instant::now();
            let out = engine.run(
                &data,
                batch,
                threads.unwrap_or_else(runner::default_threads),
            )?;
            let secs = start.elapsed().as_secs_f64();
            let named = weight_space::unflatten_outputs(&m, batch, &out)?;
            tensors::write_safetensors(&output, &named)?;
            dws_host::stderr_line!(
                "ran {} in {:.3} s ({:.0} inputs/s, {} engine) -> {}",
                output::count(batch, "input"),
                secs,
                batch as f64 / secs.max(1e-9),
                engine.name(),
                output.display()
            );
        }
        Command::Eval {
            model,
            splits_file,
            splits,
            split,
            data_root,
            threads,
            output,
            batch_size,
            engine,
            json,
        } => {
            let Some(splits) = splits_file.or(splits) else {
                anyhow::bail!("give the splits JSON: `dws eval MODEL SPLITS`");
            };
            eval::eval_command(&eval::EvalArgs {
                model,
                splits,
                split,
                data_root,
                output,
                json,
                options: eval::Options {
                    threads: threads.unwrap_or_else(runner::default_threads),
                    batch_size,
                    progress: true,
                    engine,
                },
            })?;
        }
        Command::Quantize {
            model,
            calibration,
            output,
            split,
            limit,
            data_root,
            activations,
            weights,
            rounding,
            threads,
        } => {
            output::check_not_an_input(&output, &[&model, &calibration])?;
            output::check_writable(&output)?;
            let threads = threads.unwrap_or_else(runner::default_threads);
            let blob = AlignedBlob::read(&model)?;
            let m = blob.model()?;
            let (n, data) = if calibration.extension().is_some_and(|e| e == "json") {
                if m.spec().input_features != 1 {
                    anyhow::bail!(
                        "this model takes {} features per weight-space entry, but an INR file \
                         gives one: calibrate it with a safetensors batch instead",
                        m.spec().input_features
                    );
                }
                let split = split.as_deref().unwrap_or("train");
                let mut entries =
                    dws_host::dataset::read_splits(&calibration, split, data_root.as_deref())?;
                entries.truncate(limit.unwrap_or(512));
                eval::note_relocations(&entries);
                let loaded =
                    dws_host::dataset::load_batch(&entries, m.dims(), m.input_len(), threads);
                for (i, e) in loaded.failed.iter().take(eval::LISTED_SKIPS) {
                    dws_host::stderr_line!("{}", eval::skip_warning(&entries[*i], e));
                }
                let more = loaded.failed.len().saturating_sub(eval::LISTED_SKIPS);
                if more > 0 {
                    dws_host::stderr_line!(
                        "warning: {more} more calibration file{} cannot be read",
                        if more == 1 { "" } else { "s" }
                    );
                }
                if loaded.ok.is_empty() {
                    anyhow::bail!(
                        "none of the {} calibration files of split `{split}` of {} could be read \
                         (see the warnings above)",
                        entries.len(),
                        calibration.display()
                    );
                }
                (loaded.ok.len(), loaded.data)
            } else {
                if split.is_some() || limit.is_some() || data_root.is_some() {
                    anyhow::bail!(
                        "--split, --limit and --data-root apply to a splits JSON calibration input"
                    );
                }
                let tensors = tensors::read_safetensors(&calibration)?;
                weight_space::flatten_inputs(&m, &tensors)
                    .with_context(|| format!("in calibration inputs {}", calibration.display()))?
            };
            let opts = quantize::Options {
                weights,
                rounding,
                threads,
                ..quantize::Options::new(activations)
            };
            quantize::run_cli(&m, n, &data, &output, &opts, true)?;
        }
        Command::Bench {
            model,
            batch_size,
            threads,
            seconds,
            engine,
            chunk,
            seed,
            json,
            no_peak,
            no_latency,
        } => bench::bench_command(&bench::BenchArgs {
            model,
            batch: batch_size,
            threads: threads.unwrap_or_else(runner::default_threads),
            seconds,
            engine,
            chunk,
            seed,
            json,
            peak: !no_peak,
            latency: !no_latency,
        })?,
        Command::Serial {
            port,
            inputs,
            output,
            verify,
            split,
            data_root,
            timeout,
            threads,
            engine,
        } => dws_host::serial::serial_command(&dws_host::serial::SerialArgs {
            port,
            inputs,
            output,
            verify,
            split,
            data_root,
            timeout: std::time::Duration::from_secs_f64(timeout.max(0.001)),
            threads: threads.unwrap_or_else(runner::default_threads),
            engine,
        })?,
        Command::Inspect { model, json } => {
            let blob = AlignedBlob::read(&model)?;
            let m = blob.model()?;
            let bytes = blob.bytes().len();
            if json {
                output::print(format_args!("{}\n", inspect::json(&m, bytes)?))?;
            } else {
                output::print(format_args!("{}", inspect::summary(&m, bytes)?))?;
            }
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "dws", &mut script);
            output::print(format_args!("{}", String::from_utf8_lossy(&script)))?;
        }
    }
    Ok(())
}
