//! `dws serial`: runs inputs on a board that serves a model over a UART (the
//! firmware template `dws-embedded/board`, the protocol of
//! `dws_embedded::protocol`, `docs/serial.md`) and writes its outputs as
//! `dws run` does; with `--verify`, checks each against the host's own run.

mod board;
mod link;
mod verify;

pub use board::{Board, BoardError};
pub use link::{Link, Port, DEFAULT_BAUD};
pub use verify::{Verdict, Verifier};

use crate::blob_io::AlignedBlob;
use crate::eval::{self, DatasetRun, Options, Progress};
use crate::output::check_not_an_input;
use crate::runner::EngineKind;
use crate::{tensors, weight_space};
use anyhow::{anyhow, bail, Context, Result};
use dws_embedded::protocol::Identity;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `dws serial`.
#[derive(Debug, Clone)]
pub struct SerialArgs {
    /// `tcp:HOST:PORT` or a serial device, `PATH[@BAUD]`.
    pub port: String,
    /// What `dws run` takes: a safetensors batch (or a torch.save'd one), a splits
    /// JSON, a folder of INR files, one INR file.
    pub inputs: PathBuf,
    /// What `dws run` writes for those inputs.
    pub output: PathBuf,
    /// The blob the board must serve; every output is checked against the host's run.
    pub verify: Option<PathBuf>,
    /// The split of a splits JSON (default `test`).
    pub split: Option<String>,
    /// Where moved dataset files are looked for.
    pub data_root: Option<PathBuf>,
    /// The longest wait for the hello's answer and for each output.
    pub timeout: Duration,
    /// Threads for loading files and for the host's run.
    pub threads: usize,
    /// The host's engine for `--verify`.
    pub engine: EngineKind,
}

/// Sends inputs to the board one at a time, counting, and checks the outputs.
struct Sender<'v, 'm, 'a> {
    board: Board,
    verifier: Option<&'v mut Verifier<'m, 'a>>,
    done: usize,
    total: usize,
    /// Said when the run stops early.
    nothing_written: &'static str,
}

impl Sender<'_, '_, '_> {
    /// Runs `n` inputs (`[n, input_len]`) on the board: `[n, output_len]`.
    fn run(&mut self, inputs: &[f32], n: usize, progress: Option<&Progress>) -> Result<Vec<f32>> {
        let (ilen, olen) = (
            self.board.identity().input_len as usize,
            self.board.identity().output_len as usize,
        );
        let mut out = vec![0f32; n * olen];
        for (x, y) in inputs.chunks_exact(ilen).zip(out.chunks_exact_mut(olen)) {
            match self.board.infer(x, y) {
                Ok(()) => self.done += 1,
                Err(e @ BoardError::Refused { .. }) => bail!(
                    "input {} of {}: {e}{}",
                    self.done + 1,
                    self.total,
                    self.nothing_written
                ),
                Err(e) => bail!(
                    "the board stopped answering after {} of {} inputs: {e}{}",
                    self.done,
                    self.total,
                    self.nothing_written
                ),
            }
            if let Some(p) = progress {
                p.advance(1);
            }
        }
        if let Some(v) = self.verifier.as_deref_mut() {
            v.check(inputs, n, &out)?;
        }
        Ok(out)
    }
}

/// `dws serial`: see [`SerialArgs`]. Prints the board's identity and progress on
/// stderr, and with `--verify` `N passed, M failed` (an error when M > 0, after the
/// outputs are written).
pub fn serial_command(args: &SerialArgs) -> Result<()> {
    let (inputs, output) = (args.inputs.as_path(), args.output.as_path());
    if !inputs.exists() {
        bail!("{}: no such file or folder", inputs.display());
    }
    let port = Port::parse(&args.port)?;
    let torch_batch = eval::torch_batch(inputs);
    let dataset = torch_batch.is_none() && eval::is_dataset_input(inputs);
    if !dataset {
        eval::check_batch_output(output, args.split.as_deref(), args.data_root.as_deref())?;
    }
    let verify = args.verify.as_deref();
    let mut protected = vec![inputs];
    protected.extend(verify);
    check_not_an_input(output, &protected)?;
    let blob = verify.map(AlignedBlob::read).transpose()?;
    let model = blob.as_ref().map(AlignedBlob::model).transpose()?;

    let board = Board::connect(&port, args.timeout)
        .with_context(|| format!("connecting to the board on {port}"))?;
    let id = board.identity().clone();
    crate::stderr_line!("{}", describe(&id, &port));
    if let (Some(m), Some(path)) = (&model, verify) {
        same_blob(&Identity::of(m), &id, path)?;
    }
    let mut verifier = model
        .as_ref()
        .map(|m| Verifier::new(m, args.engine, args.threads))
        .transpose()?;
    let nothing_written = if output == Path::new("-") {
        ""
    } else {
        "; no output file was written"
    };
    let mut sender = Sender {
        board,
        verifier: verifier.as_mut(),
        done: 0,
        total: 0,
        nothing_written,
    };

    if dataset {
        let run = DatasetRun {
            input: inputs,
            split: args.split.as_deref(),
            data_root: args.data_root.as_deref(),
            output,
            protected: &protected,
        };
        let entries = run.entries(&id, &format!("the board's model ({port})"))?;
        sender.total = entries.len();
        // One file at a time: the progress moves with each answer.
        let options = Options {
            threads: args.threads,
            batch_size: 1,
            progress: true,
            engine: args.engine,
        };
        run.write_predictions(&id, &entries, &options, |x, n| sender.run(x, n, None))?;
    } else {
        let tensors = match torch_batch {
            Some(t) => t,
            None => tensors::read_safetensors(inputs)?,
        };
        let (batch, data) = weight_space::flatten_inputs(&id, &tensors)
            .with_context(|| format!("in inputs {}", inputs.display()))?;
        sender.total = batch;
        let start = Instant::now();
        let progress = Progress::new(batch, 1, true);
        let out = sender.run(&data, batch, Some(&progress));
        progress.finish();
        let out = out?;
        let named = weight_space::unflatten_outputs(&id, batch, &out)?;
        tensors::write_safetensors(output, &named)?;
        let secs = start.elapsed().as_secs_f64();
        crate::stderr_line!(
            "ran {batch} inputs on the board in {secs:.3} s ({:.2} inputs/s) -> {}",
            batch as f64 / secs.max(1e-9),
            output.display()
        );
    }
    match sender.board.resent() {
        0 => {}
        1 => crate::stderr_line!("note: 1 request was sent again after a damaged frame"),
        n => crate::stderr_line!("note: {n} requests were sent again after damaged frames"),
    }
    match sender.board.restarts() {
        0 => {}
        n => crate::stderr_line!(
            "note: the board restarted during the run ({n} time{}); it was greeted again \
             (same blob) and the input it lost was sent again",
            if n == 1 { "" } else { "s" }
        ),
    }
    drop(sender);
    let Some((v, path)) = verifier.zip(verify) else {
        return Ok(());
    };
    let verdict = v.verdict();
    let report = format!(
        "verified against {} ({} engine): {}\n{} passed, {} failed\n",
        path.display(),
        v.engine_name(),
        verdict.rule(),
        verdict.passed,
        verdict.failed.len()
    );
    if output == Path::new("-") {
        crate::stderr_line!("{}", report.trim_end());
    } else {
        crate::output::print(format_args!("{report}"))?;
    }
    if !verdict.failed.is_empty() {
        let first: Vec<String> = verdict
            .failed
            .iter()
            .take(10)
            .map(|i| i.to_string())
            .collect();
        return Err(anyhow!(
            "{} of {} outputs differ from the host's (inputs {}{}, counted from 0 in the order run)",
            verdict.failed.len(),
            verdict.passed + verdict.failed.len(),
            first.join(", "),
            if verdict.failed.len() > 10 { ", ..." } else { "" }
        ));
    }
    Ok(())
}

/// A line on what the board serves.
fn describe(id: &Identity, port: &Port) -> String {
    let out = match id.spec.output {
        dws_core::plan::Output::Logits { classes } => format!("{classes} class logits"),
        dws_core::plan::Output::WeightSpace { features } => {
            format!("a weight space with {features} features")
        }
    };
    format!(
        "board on {port}: blob of {} bytes, CRC {:#010x} (format {}, flags {}), input network {:?}, \
         {} values in, {out} out, {} bytes of RAM per inference",
        id.blob_len,
        id.crc,
        id.format,
        id.flags,
        id.spec.dims.as_slice(),
        id.input_len,
        4 * u64::from(id.scratch_len),
    )
}

/// An error naming every field in which the board's blob differs from `path`'s.
fn same_blob(here: &Identity, board: &Identity, path: &Path) -> Result<()> {
    if here == board {
        return Ok(());
    }
    let mut diffs = Vec::new();
    let mut field = |name: &str, h: String, b: String| {
        if h != b {
            diffs.push(format!(
                "{name} {b} on the board, {h} in {}",
                path.display()
            ));
        }
    };
    field(
        "CRC",
        format!("{:#010x}", here.crc),
        format!("{:#010x}", board.crc),
    );
    field(
        "length",
        here.blob_len.to_string(),
        board.blob_len.to_string(),
    );
    field("format", here.format.to_string(), board.format.to_string());
    field("flags", here.flags.to_string(), board.flags.to_string());
    field(
        "input values",
        here.input_len.to_string(),
        board.input_len.to_string(),
    );
    field(
        "output values",
        here.output_len.to_string(),
        board.output_len.to_string(),
    );
    field(
        "scratch",
        here.scratch_len.to_string(),
        board.scratch_len.to_string(),
    );
    field(
        "spec",
        format!("{:?}", here.spec),
        format!("{:?}", board.spec),
    );
    bail!(
        "the board serves another blob than --verify {}: {} (build the firmware with MODEL={})",
        path.display(),
        diffs.join("; "),
        path.display()
    )
}
