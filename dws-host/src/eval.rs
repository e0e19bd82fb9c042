//! Classifying INR datasets: `dws eval` (accuracy, per-class accuracy, confusion matrix,
//! throughput) and the dataset modes of `dws run` (a predictions CSV).
//!
//! Files are loaded and run in batches (default [`DEFAULT_BATCH`]), both in parallel, so a
//! dataset of any size runs in bounded memory; predictions are streamed to the CSV.
//!
//! The CSV has a header row and one row per input that could be read, in dataset
//! order: `path,label,predicted,logit_0,...,logit_{C-1}`. `path` is exactly as written in
//! the splits file (or the found path, for a directory); `label` is empty when unknown;
//! `predicted` is the index of the largest logit (the first on ties); logits are printed
//! so that they read back as the same f32. Fields are quoted as RFC 4180 says when needed.

use crate::blob_io::AlignedBlob;
use crate::dataset::{self, Entry};
use crate::output::{check_not_an_input, AtomicFile};
use crate::runner;
use crate::weight_space::Contract;
use anyhow::{bail, Context, Result};
use dws_core::plan::Output;
use dws_core::Model;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Files loaded and run at a time by default.
pub const DEFAULT_BATCH: usize = 256;

/// At most this many unreadable files are listed on stderr by a run; the rest are counted.
pub const LISTED_SKIPS: usize = 10;

/// Without a terminal, a progress line is printed this often (so only long runs print any).
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How to run a dataset.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads for loading and for the model.
    pub threads: usize,
    /// Files per batch.
    pub batch_size: usize,
    /// Whether progress may be shown on stderr (a bar on a terminal, otherwise a
    /// plain line every 10 s).
    pub progress: bool,
    /// The engine that runs the model.
    pub engine: runner::EngineKind,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: runner::default_threads(),
            batch_size: DEFAULT_BATCH,
            progress: true,
            engine: runner::EngineKind::default(),
        }
    }
}

/// What a dataset run counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Number of classes `C`.
    pub classes: usize,
    /// Entries in the dataset.
    pub total: usize,
    /// Inputs that were read and run.
    pub ran: usize,
    /// Files that could not be read or had the wrong shapes.
    pub skipped: usize,
    /// `confusion[label * C + predicted]`, over the inputs with a label in `0..C`.
    pub confusion: Vec<u64>,
    /// Seconds spent reading files.
    pub load_secs: f64,
    /// Seconds spent in the model.
    pub model_secs: f64,
    /// Seconds from start to end.
    pub wall_secs: f64,
    /// Worker threads used.
    pub threads: usize,
    /// For a model without folded input statistics: how much its inputs vary
    /// ([`Spread::mean_std`]); `None` when the model normalizes its inputs itself
    /// or fewer than [`Spread::MIN_INPUTS`] were read.
    pub input_spread: Option<f64>,
}

impl Summary {
    /// Inputs counted in the confusion matrix.
    pub fn labeled(&self) -> u64 {
        self.confusion.iter().sum()
    }

    /// Correct predictions.
    pub fn correct(&self) -> u64 {
        (0..self.classes)
            .map(|c| self.confusion[c * self.classes + c])
            .sum()
    }

    /// `(correct, inputs)` of class `c`.
    pub fn class_counts(&self, c: usize) -> (u64, u64) {
        let row = &self.confusion[c * self.classes..(c + 1) * self.classes];
        (row[c], row.iter().sum())
    }

    /// Accuracy over the labeled inputs.
    pub fn accuracy(&self) -> Option<f64> {
        let n = self.labeled();
        (n > 0).then(|| self.correct() as f64 / n as f64)
    }

    /// Mean of the per-class accuracies over the classes that occur.
    pub fn balanced_accuracy(&self) -> Option<f64> {
        let accs: Vec<f64> = (0..self.classes)
            .map(|c| self.class_counts(c))
            .filter(|&(_, n)| n > 0)
            .map(|(k, n)| k as f64 / n as f64)
            .collect();
        (!accs.is_empty()).then(|| accs.iter().sum::<f64>() / accs.len() as f64)
    }

    /// Inputs per second, loading included.
    pub fn throughput(&self) -> f64 {
        self.ran as f64 / self.wall_secs.max(1e-9)
    }

    /// The throughput line.
    pub fn timing(&self) -> String {
        format!(
            "{} in {:.3} s: {:.0} inputs/s (reading files {:.3} s, model {:.3} s = {:.0} inputs/s; {} threads)",
            crate::output::count(self.ran, "input"),
            self.wall_secs,
            self.throughput(),
            self.load_secs,
            self.model_secs,
            self.ran as f64 / self.model_secs.max(1e-9),
            self.threads
        )
    }

    /// The `dws eval` report: accuracy, per-class accuracy, confusion matrix, throughput.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let pct = |k: u64, n: u64| {
            if n == 0 {
                "n/a".to_string()
            } else {
                format!("{:.2}%", 100.0 * k as f64 / n as f64)
            }
        };
        let _ = writeln!(
            s,
            "inputs:   {} of {} ({} skipped)",
            self.ran, self.total, self.skipped
        );
        let n = self.labeled();
        let _ = writeln!(
            s,
            "accuracy: {} ({}/{n})",
            pct(self.correct(), n),
            self.correct()
        );
        if let Some(b) = self.balanced_accuracy() {
            let _ = writeln!(s, "balanced accuracy (mean per-class): {:.2}%", 100.0 * b);
        }
        let _ = writeln!(s, "per-class accuracy:");
        let w = self.classes.saturating_sub(1).to_string().len();
        for c in 0..self.classes {
            let (k, n) = self.class_counts(c);
            let _ = writeln!(s, "  class {c:>w$}: {:>7} ({k}/{n})", pct(k, n));
        }
        if self.classes <= 32 {
            let biggest = self.confusion.iter().copied().max().unwrap_or(0);
            let cw = biggest.to_string().len().max(w).max(1);
            let _ = writeln!(s, "confusion matrix (rows: label, columns: predicted):");
            let _ = write!(s, "  {:>w$} ", "");
            for c in 0..self.classes {
                let _ = write!(s, " {c:>cw$}");
            }
            s.push('\n');
            for r in 0..self.classes {
                let _ = write!(s, "  {r:>w$} ");
                for c in 0..self.classes {
                    let _ = write!(s, " {:>cw$}", self.confusion[r * self.classes + c]);
                }
                s.push('\n');
            }
        } else {
            let _ = writeln!(
                s,
                "confusion matrix: not shown for {} classes (see the predictions CSV)",
                self.classes
            );
        }
        let _ = writeln!(s, "throughput: {}", self.timing());
        s
    }
}

impl Summary {
    /// The figures of [`Summary::report`] as one JSON object: fractions (not
    /// percentages) for accuracies, `null` where nothing was counted.
    pub fn json(&self) -> serde_json::Value {
        let frac = |k: u64, n: u64| (n > 0).then(|| k as f64 / n as f64);
        let per_class: Vec<serde_json::Value> = (0..self.classes)
            .map(|c| {
                let (k, n) = self.class_counts(c);
                serde_json::json!({"class": c, "correct": k, "inputs": n, "accuracy": frac(k, n)})
            })
            .collect();
        let confusion: Vec<&[u64]> = self.confusion.chunks(self.classes.max(1)).collect();
        serde_json::json!({
            "classes": self.classes,
            "inputs": self.total,
            "ran": self.ran,
            "skipped": self.skipped,
            "correct": self.correct(),
            "labeled": self.labeled(),
            "accuracy": self.accuracy(),
            "balanced_accuracy": self.balanced_accuracy(),
            "per_class": per_class,
            "confusion": confusion,
            "throughput": {
                "inputs_per_s": self.throughput(),
                "wall_s": self.wall_secs,
                "reading_files_s": self.load_secs,
                "model_s": self.model_secs,
                "threads": self.threads,
            },
            "input_spread": self.input_spread,
        })
    }

    /// A note for a model without folded input statistics whose inputs do not look
    /// normalized: it may have been converted without the `--statistics` it was
    /// trained with. (Whether it was trained on normalized inputs the blob cannot
    /// tell, so this is a note, not a warning.)
    pub fn normalization_note(&self) -> Option<String> {
        let spread = self.input_spread?;
        if (Spread::NORMALIZED_LOW..=Spread::NORMALIZED_HIGH).contains(&spread) {
            return None;
        }
        Some(format!(
            "note: this model has no input normalization folded in, and its inputs are not \
             normalized: each value varies by {spread:.3} across these {} inputs (mean \
             standard deviation per weight-space entry) where normalized inputs vary by \
             about 1. If it was trained on normalized inputs (upstream's \
             INRDataset(normalize=True)), convert it again with `--statistics \
             statistics.pth`; if it was trained on raw weights, this is as it should be.",
            self.ran
        ))
    }
}

/// How much the inputs of a dataset run vary, entry by entry: running sums per
/// element of the flat input.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    n: u64,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

impl Spread {
    /// Inputs needed before a spread is reported.
    pub const MIN_INPUTS: u64 = 8;
    /// The spread range that counts as normalized (inputs normalized with their
    /// training split's statistics vary by about 1).
    pub const NORMALIZED_LOW: f64 = 0.3;
    /// See [`Spread::NORMALIZED_LOW`].
    pub const NORMALIZED_HIGH: f64 = 3.0;

    /// Adds the inputs in `data` (`[n, len]`).
    pub fn add(&mut self, data: &[f32], len: usize) {
        if len == 0 {
            return;
        }
        if self.sum.len() != len {
            *self = Spread {
                n: 0,
                sum: vec![0.0; len],
                sum_sq: vec![0.0; len],
            };
        }
        for x in data.chunks_exact(len) {
            for ((s, q), &v) in self.sum.iter_mut().zip(&mut self.sum_sq).zip(x) {
                *s += v as f64;
                *q += v as f64 * v as f64;
            }
            self.n += 1;
        }
    }

    /// The mean over elements of each element's standard deviation across the
    /// inputs; `None` before [`Spread::MIN_INPUTS`] inputs.
    pub fn mean_std(&self) -> Option<f64> {
        if self.n < Self::MIN_INPUTS || self.sum.is_empty() {
            return None;
        }
        let n = self.n as f64;
        let total: f64 = self
            .sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, q)| ((q - s * s / n) / (n - 1.0)).max(0.0).sqrt())
            .sum();
        Some(total / self.sum.len() as f64)
    }
}

/// The number of classes of a classifier that reads INR files (one feature per entry);
/// a clear error for anything else.
pub fn classifier_classes(model: &(impl Contract + ?Sized)) -> Result<usize> {
    let Output::Logits { classes } = model.spec().output else {
        bail!(
            "this model is a DWSModel (its output is a weight space, not class logits): \
             datasets are evaluated with a DWSModelForClassification. \
             Run a DWSModel with `dws run MODEL inputs.safetensors -o out.safetensors`"
        );
    };
    let f = model.spec().input_features;
    if f != 1 {
        bail!(
            "this model takes {f} features per weight-space entry, but an INR file gives one \
             (upstream adds a single trailing feature axis)"
        );
    }
    Ok(classes as usize)
}

/// Index of the largest value (the first on ties; NaN counts as largest, as in torch).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in xs.iter().enumerate().skip(1) {
        let b = xs[best];
        if !b.is_nan() && (v.is_nan() || v > b) {
            best = i;
        }
    }
    best
}

/// Runs `model` over `entries` in batches, calling `sink(entry, logits, predicted)` for
/// every input that could be read, in order. Files that cannot be read or have the
/// wrong shapes are reported on stderr by path and skipped.
pub fn predict(
    model: &Model<'_>,
    entries: &[Entry],
    opts: &Options,
    sink: impl FnMut(&Entry, &[f32], usize) -> Result<()>,
) -> Result<Summary> {
    classifier_classes(model)?;
    let engine = runner::BatchRunner::new(model, opts.engine)?;
    let threads = opts.threads.max(1);
    predict_with(
        model,
        entries,
        opts,
        |inputs, n| engine.run(inputs, n, threads),
        sink,
    )
}

/// [`predict`] with the model run by `run(inputs, n)` (`n` inputs `[n, input_len]` in,
/// `[n, output_len]` out): an engine of this host, or a board over a serial link.
pub fn predict_with(
    model: &(impl Contract + ?Sized),
    entries: &[Entry],
    opts: &Options,
    mut run: impl FnMut(&[f32], usize) -> Result<Vec<f32>>,
    mut sink: impl FnMut(&Entry, &[f32], usize) -> Result<()>,
) -> Result<Summary> {
    let classes = classifier_classes(model)?;
    let start = Instant::now();
    let threads = opts.threads.max(1);
    let batch = opts.batch_size.max(1);
    let mut summary = Summary {
        classes,
        total: entries.len(),
        ran: 0,
        skipped: 0,
        confusion: vec![0; classes * classes],
        load_secs: 0.0,
        model_secs: 0.0,
        wall_secs: 0.0,
        threads,
        input_spread: None,
    };
    // Unknown (a board that did not say): no note.
    let normalized = model.normalizes_inputs().unwrap_or(true);
    let mut spread = Spread::default();
    let progress = Progress::new(entries.len(), batch, opts.progress);
    let (dims, ilen, olen) = (&model.spec().dims, model.input_len(), model.output_len());
    for chunk in entries.chunks(batch) {
        let t0 = Instant::now();
        let loaded = dataset::load_batch(chunk, dims, ilen, threads);
        summary.load_secs += t0.elapsed().as_secs_f64();
        for (i, e) in &loaded.failed {
            progress.warn(&skip_warning(&chunk[*i], e));
        }
        summary.skipped += loaded.failed.len();
        if !normalized {
            spread.add(&loaded.data, ilen);
        }
        let t1 = Instant::now();
        let out = run(&loaded.data, loaded.ok.len())?;
        summary.model_secs += t1.elapsed().as_secs_f64();
        for (&i, logits) in loaded.ok.iter().zip(out.chunks_exact(olen)) {
            let entry = &chunk[i];
            let p = argmax(logits);
            if let Some(l) = entry.label.and_then(|l| usize::try_from(l).ok()) {
                if l < classes {
                    summary.confusion[l * classes + p] += 1;
                }
            }
            summary.ran += 1;
            sink(entry, logits, p)?;
        }
        progress.advance(chunk.len());
    }
    progress.finish();
    summary.wall_secs = start.elapsed().as_secs_f64();
    summary.input_spread = spread.mean_std();
    Ok(summary)
}

/// `warning: skipping PATH: why`, naming the file read too when it differs from the path
/// as written.
pub fn skip_warning(entry: &Entry, e: &anyhow::Error) -> String {
    let file = entry.file.display().to_string();
    let msg = format!("{e:#}");
    let why = msg.strip_prefix(&format!("{file}: ")).unwrap_or(&msg);
    if Path::new(&entry.path) == entry.file {
        format!("warning: skipping {}: {why}", entry.path)
    } else {
        format!("warning: skipping {} (read as {file}): {why}", entry.path)
    }
}

/// Progress on stderr: a bar on a terminal (for runs of more than one batch), otherwise a
/// complete line every [`PLAIN_PROGRESS_EVERY`], so piped or logged stderr stays readable
/// and short runs print nothing.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    plain: Option<std::cell::Cell<(Instant, Instant, usize)>>,
    total: usize,
    /// Warnings printed so far (at most [`LISTED_SKIPS`] are).
    warned: std::cell::Cell<usize>,
}

impl Progress {
    pub(crate) fn new(total: usize, batch: usize, enabled: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (enabled && tty && total > batch).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{wide_bar} {pos}/{len} files [{elapsed_precise}, ETA {eta}]",
            ) {
                bar.set_style(style);
            }
            bar
        });
        let now = Instant::now();
        let plain = (enabled && !tty).then(|| std::cell::Cell::new((now, now, 0)));
        Progress {
            bar,
            plain,
            total,
            warned: std::cell::Cell::new(0),
        }
    }

    /// Prints `msg`, or for the first warning past [`LISTED_SKIPS`] a line saying that
    /// the rest are only counted.
    pub(crate) fn warn(&self, msg: &str) {
        let n = self.warned.get();
        self.warned.set(n + 1);
        let msg = match n.cmp(&LISTED_SKIPS) {
            std::cmp::Ordering::Less => msg,
            std::cmp::Ordering::Equal => {
                "warning: more files cannot be read: they are counted below, not listed"
            }
            std::cmp::Ordering::Greater => return,
        };
        match &self.bar {
            Some(bar) => bar.suspend(|| crate::stderr_line!("{msg}")),
            None => crate::stderr_line!("{msg}"),
        }
    }

    pub(crate) fn advance(&self, n: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        if let Some(cell) = &self.plain {
            let (start, last, done) = cell.get();
            let done = done + n;
            let now = Instant::now();
            let mut last = last;
            if now.duration_since(last) >= PLAIN_PROGRESS_EVERY && done < self.total {
                let secs = now.duration_since(start).as_secs_f64();
                let rate = done as f64 / secs.max(1e-9);
                let eta = (self.total - done) as f64 / rate.max(1e-9);
                crate::stderr_line!(
                    "progress: {done}/{} files ({:.0}%), {rate:.0} files/s, about {eta:.0} s left",
                    self.total,
                    100.0 * done as f64 / self.total.max(1) as f64
                );
                last = now;
            }
            cell.set((start, last, done));
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Quotes a CSV field when it holds a comma, quote, or line break (RFC 4180).
pub fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

/// Writes the predictions CSV (see the module docs).
pub struct CsvWriter<W: Write> {
    out: W,
    line: String,
}

impl<W: Write> CsvWriter<W> {
    /// Writes the header row for `classes` logits.
    pub fn new(mut out: W, classes: usize) -> Result<Self> {
        let mut line = String::from("path,label,predicted");
        for c in 0..classes {
            let _ = write!(line, ",logit_{c}");
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        Ok(CsvWriter { out, line })
    }

    /// Writes one row.
    pub fn row(&mut self, entry: &Entry, logits: &[f32], predicted: usize) -> Result<()> {
        let l = &mut self.line;
        l.clear();
        l.push_str(&csv_field(&entry.path));
        l.push(',');
        if let Some(label) = entry.label {
            let _ = write!(l, "{label}");
        }
        let _ = write!(l, ",{predicted}");
        for v in logits {
            let _ = write!(l, ",{v}");
        }
        l.push('\n');
        self.out.write_all(l.as_bytes())?;
        Ok(())
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Where the predictions CSV goes: stdout for `-`, else a file that replaces
/// `path` only when [`CsvOut::commit`]ted.
enum CsvOut {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(AtomicFile),
}

impl CsvOut {
    fn open(path: &Path) -> Result<Self> {
        Ok(if path == Path::new("-") {
            CsvOut::Stdout(std::io::BufWriter::new(std::io::stdout()))
        } else {
            CsvOut::File(AtomicFile::create(path)?)
        })
    }

    /// Flushes stdout, or puts the file in place.
    fn commit(self) -> Result<()> {
        match self {
            CsvOut::Stdout(mut w) => w.flush().context("writing to stdout"),
            CsvOut::File(f) => f.commit(),
        }
    }
}

impl Write for CsvOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            CsvOut::Stdout(w) => w.write(buf),
            CsvOut::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            CsvOut::Stdout(w) => w.flush(),
            CsvOut::File(f) => f.flush(),
        }
    }
}

/// Whether `dws run`'s input is a dataset (a directory of INR files, a splits JSON, or
/// one INR file saved by torch: `.pth`, `.pt`) rather than a batch of tensors (a
/// safetensors file, or a torch file that [`torch_batch`] reads).
pub fn is_dataset_input(path: &Path) -> bool {
    path.is_dir() || has_extension(path, &["json"]) || is_torch_file(path)
}

fn has_extension(path: &Path, any: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| any.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn is_torch_file(path: &Path) -> bool {
    path.is_file() && has_extension(path, &["pth", "pt"])
}

/// A batch in `dws run`'s tensor format (`weights.{i}`, `biases.{i}`) saved by
/// `torch.save` as a dict: its tensors; `None` for anything else (one INR file, a
/// safetensors batch, a dataset).
pub fn torch_batch(path: &Path) -> Option<crate::tensors::TensorMap> {
    if !is_torch_file(path) {
        return None;
    }
    crate::tensors::read_checkpoint(path)
        .ok()
        .filter(|t| t.contains_key("weights.0"))
}

/// The entries of a dataset input: a directory of INR files, one INR file, or split
/// `split` (default `test`) of a splits JSON whose files are looked for under
/// `data_root` too (see [`dataset::resolve`]). A note goes to stderr when files were
/// found elsewhere than their paths say.
pub fn dataset_entries(
    input: &Path,
    split: Option<&str>,
    data_root: Option<&Path>,
) -> Result<Vec<Entry>> {
    if input.is_dir() || is_torch_file(input) {
        if split.is_some() || data_root.is_some() {
            bail!(
                "--split and --data-root apply to a splits JSON, and {} is not one",
                input.display()
            );
        }
        if input.is_dir() {
            dataset::list_dir(input)
        } else {
            let path = input.to_string_lossy().into_owned();
            Ok(vec![Entry {
                path,
                file: input.to_path_buf(),
                label: None,
                relocated: false,
            }])
        }
    } else {
        let entries = dataset::read_splits(input, split.unwrap_or("test"), data_root)?;
        note_relocations(&entries);
        Ok(entries)
    }
}

/// Prints [`dataset::relocation_note`] on stderr when `entries` were found elsewhere
/// than their paths say.
pub fn note_relocations(entries: &[Entry]) {
    if let Some(note) = dataset::relocation_note(entries) {
        crate::stderr_line!("{note}");
    }
}

/// Arguments of `dws eval`.
#[derive(Debug, Clone)]
pub struct EvalArgs {
    /// The .dws blob.
    pub model: PathBuf,
    /// The splits JSON.
    pub splits: PathBuf,
    /// The split to evaluate.
    pub split: String,
    /// Where files the splits file lists are looked for when they are not where their
    /// paths say (see [`dataset::resolve`]).
    pub data_root: Option<PathBuf>,
    /// Predictions CSV (`-` for stdout).
    pub output: Option<PathBuf>,
    /// Print the report as one JSON document on stdout instead of text.
    pub json: bool,
    /// Loading and running options.
    pub options: Options,
}

/// `dws eval`: prints the report (to stdout, or to stderr when the CSV goes to stdout;
/// with `json`, one JSON document on stdout). Only the error when no input could be
/// read.
pub fn eval_command(args: &EvalArgs) -> Result<Summary> {
    let csv_to_stdout = args.output.as_deref() == Some(Path::new("-"));
    if args.json && csv_to_stdout {
        bail!(
            "--json writes the report to stdout, so `-o -` cannot: write the predictions to a file"
        );
    }
    let blob = AlignedBlob::read(&args.model)?;
    let model = blob.model()?;
    let classes = classifier_classes(&model)
        .with_context(|| format!("{} cannot be evaluated", args.model.display()))?;
    let entries = dataset::read_splits(&args.splits, &args.split, args.data_root.as_deref())?;
    note_relocations(&entries);
    if let Some((i, e)) = entries.iter().enumerate().find(|(_, e)| e.label.is_none()) {
        bail!(
            "{}: split `{}` has no label for entry {i} ({}): `dws eval` needs labels \
             (use `dws run` to predict without them)",
            args.splits.display(),
            args.split,
            e.path
        );
    }
    if let Some((i, e, l)) = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.label.map(|l| (i, e, l)))
        .find(|&(_, _, l)| l < 0 || l >= classes as i64)
    {
        bail!(
            "{}: split `{}`: label {l} of entry {i} ({}) is not a class of this model (0..{})",
            args.splits.display(),
            args.split,
            e.path,
            classes - 1
        );
    }
    if let Some(out) = &args.output {
        check_not_an_input(out, &[&args.model, &args.splits])?;
    }
    let mut csv = args
        .output
        .as_deref()
        .map(|p| CsvOut::open(p).and_then(|w| CsvWriter::new(w, classes)))
        .transpose()?;
    let summary = predict(
        &model,
        &entries,
        &args.options,
        |e, logits, p| match &mut csv {
            Some(w) => w.row(e, logits, p),
            None => Ok(()),
        },
    )?;
    if summary.ran == 0 {
        bail!(
            "no input could be read from the {} listed in split `{}` of {} (see the warnings \
             above)",
            crate::output::count(summary.total, "file"),
            args.split,
            args.splits.display()
        );
    }
    if let Some(w) = csv {
        w.finish()
            .and_then(CsvOut::commit)
            .context("writing the predictions CSV")?;
    }
    let note = summary.normalization_note();
    if args.json {
        let mut j = summary.json();
        j["model"] = serde_json::json!(args.model.display().to_string());
        j["splits"] = serde_json::json!(args.splits.display().to_string());
        j["split"] = serde_json::json!(args.split);
        j["predictions"] = serde_json::json!(args.output.as_ref().map(|p| p.display().to_string()));
        if let Some(note) = &note {
            crate::stderr_line!("{note}");
        }
        crate::output::print(format_args!("{j}\n"))?;
        return Ok(summary);
    }
    let mut report = format!(
        "model:    {} ({classes} classes)\nsplit:    `{}` of {}\n",
        args.model.display(),
        args.split,
        args.splits.display()
    );
    report.push_str(&summary.report());
    if summary.skipped > 0 {
        let _ = writeln!(
            report,
            "skipped:  {} of {} files could not be read (see the warnings on stderr)",
            summary.skipped, summary.total
        );
    }
    if let Some(p) = &args.output {
        if !csv_to_stdout {
            let _ = writeln!(report, "predictions: {}", p.display());
        }
    }
    if csv_to_stdout {
        crate::stderr_line!("{}", report.trim_end_matches('\n'));
    } else {
        crate::output::print(format_args!("{report}"))?;
    }
    if let Some(note) = &note {
        crate::stderr_line!("{note}");
    }
    Ok(summary)
}

/// What `dws run` refuses before it reads a batch of tensors (a safetensors file, or a
/// torch file that [`torch_batch`] reads): the dataset options `split` and `data_root`,
/// and an output other than a safetensors file (stdout, a `.csv`).
pub fn check_batch_output(
    output: &Path,
    split: Option<&str>,
    data_root: Option<&Path>,
) -> Result<()> {
    if split.is_some() || data_root.is_some() {
        bail!("--split and --data-root apply to a splits JSON input");
    }
    if output == Path::new("-") {
        bail!(
            "`-o -` (stdout) is for the predictions CSV of a dataset input; \
             a safetensors input needs an output file"
        );
    }
    if has_extension(output, &["csv"]) {
        bail!(
            "a batch of tensors gives safetensors outputs (`logits`, or \
             `weights.{{i}}` / `biases.{{i}}`), not {}: a predictions CSV comes from a \
             dataset input (a folder of INR files, a splits JSON or a .pth INR file)",
            output.display()
        );
    }
    Ok(())
}

/// `dws run` on a dataset: writes the predictions CSV to `output` (`-` for stdout) and a
/// one-line summary to stderr.
pub fn run_dataset_command(
    model_path: &Path,
    input: &Path,
    split: Option<&str>,
    data_root: Option<&Path>,
    output: &Path,
    options: &Options,
) -> Result<Summary> {
    let blob = AlignedBlob::read(model_path)?;
    let model = blob.model()?;
    let name = model_path.display().to_string();
    let run = DatasetRun {
        input,
        split,
        data_root,
        output,
        protected: &[model_path],
    };
    let entries = run.entries(&model, &name)?;
    let engine = runner::BatchRunner::new(&model, options.engine)?;
    let threads = options.threads.max(1);
    run.write_predictions(&model, &entries, options, |inputs, n| {
        engine.run(inputs, n, threads)
    })
}

/// The dataset mode of `dws run` (and `dws serial`) in two steps: [`DatasetRun::entries`]
/// checks the model and the output and lists the inputs, [`DatasetRun::write_predictions`]
/// runs them and writes the CSV.
#[derive(Debug, Clone, Copy)]
pub struct DatasetRun<'a> {
    /// A splits JSON, a folder of INR files or one INR file.
    pub input: &'a Path,
    /// The split of a splits JSON (default `test`).
    pub split: Option<&'a str>,
    /// Where moved files are looked for (see [`dataset::resolve`]).
    pub data_root: Option<&'a Path>,
    /// The predictions CSV (`-` for stdout).
    pub output: &'a Path,
    /// Files the output must not overwrite besides the input (the model).
    pub protected: &'a [&'a Path],
}

impl DatasetRun<'_> {
    /// Checks that `model` (called `name` in errors) is a classifier of INRs and that the
    /// output is a CSV that overwrites no input, then lists the entries.
    pub fn entries(&self, model: &(impl Contract + ?Sized), name: &str) -> Result<Vec<Entry>> {
        let (input, output) = (self.input, self.output);
        classifier_classes(model).with_context(|| format!("{name} cannot run on a dataset"))?;
        if has_extension(output, &["safetensors"]) {
            if is_torch_file(input) {
                bail!(
                    "{} holds no `weights.0` tensor, so it is read as one INR file, which \
                     writes a predictions CSV, not safetensors: use e.g. `-o predictions.csv`",
                    input.display()
                );
            }
            bail!(
                "a dataset input writes a predictions CSV, not safetensors: use e.g. \
                 `-o predictions.csv`"
            );
        }
        let mut protected = self.protected.to_vec();
        protected.push(input);
        check_not_an_input(output, &protected)?;
        dataset_entries(input, self.split, self.data_root)
    }

    /// Runs `entries` with `run` (as [`predict_with`] does), writes the predictions CSV
    /// (only once every input ran: an error leaves no file) and a one-line summary.
    pub fn write_predictions(
        &self,
        model: &(impl Contract + ?Sized),
        entries: &[Entry],
        options: &Options,
        run: impl FnMut(&[f32], usize) -> Result<Vec<f32>>,
    ) -> Result<Summary> {
        let output = self.output;
        let classes = classifier_classes(model)?;
        let mut csv = CsvWriter::new(CsvOut::open(output)?, classes)?;
        let summary = predict_with(model, entries, options, run, |e, logits, p| {
            csv.row(e, logits, p)
        })?;
        if summary.ran == 0 {
            bail!("no input could be read ({} skipped)", summary.skipped);
        }
        csv.finish()
            .and_then(CsvOut::commit)
            .context("writing the predictions CSV")?;
        let skipped = if summary.skipped > 0 {
            format!(", skipped {} unreadable files (see above)", summary.skipped)
        } else {
            String::new()
        };
        if let Some(note) = summary.normalization_note() {
            crate::stderr_line!("{note}");
        }
        crate::stderr_line!(
            "ran {}{skipped} -> {}",
            summary.timing(),
            if output == Path::new("-") {
                "stdout".to_string()
            } else {
                output.display().to_string()
            }
        );
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
        assert_eq!(argmax(&[0.0, f32::NAN, 5.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 5.0]), 0);
    }

    #[test]
    fn csv_quoting() -> Result<()> {
        assert_eq!(csv_field("a/b.pth"), "a/b.pth");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        let mut w = CsvWriter::new(Vec::new(), 2)?;
        let e = |path: &str, label| Entry {
            path: path.into(),
            file: path.into(),
            label,
            relocated: false,
        };
        w.row(&e("x,y.pth", Some(1)), &[0.5, -1e-7], 0)?;
        w.row(&e("z.pth", None), &[1.0, 2.0], 1)?;
        let text = String::from_utf8(w.finish()?)?;
        assert_eq!(
            text,
            "path,label,predicted,logit_0,logit_1\n\"x,y.pth\",1,0,0.5,-0.0000001\nz.pth,,1,1,2\n"
        );
        Ok(())
    }

    #[test]
    fn summary_numbers() {
        let s = Summary {
            classes: 2,
            total: 5,
            ran: 4,
            skipped: 1,
            confusion: vec![2, 1, 0, 1],
            load_secs: 0.5,
            model_secs: 0.5,
            wall_secs: 1.0,
            threads: 1,
            input_spread: None,
        };
        assert_eq!(s.correct(), 3);
        assert_eq!(s.accuracy(), Some(0.75));
        assert_eq!(s.class_counts(0), (2, 3));
        assert_eq!(s.balanced_accuracy(), Some((2.0 / 3.0 + 1.0) / 2.0));
        let r = s.report();
        assert!(r.contains("accuracy: 75.00% (3/4)"), "{r}");
        assert!(r.contains("class 1: 100.00% (1/1)"), "{r}");
    }
}
