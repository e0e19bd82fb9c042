//! `dws bench`: batch throughput, GEMM peak and single-input latency of an engine
//! on seeded synthetic inputs, all measured in one run.
//!
//! The bench knows engines only through [`Engine`], so another engine (int8, a
//! GPU) plugs in by implementing it. Figures:
//! * throughput: `batch` inputs per call on `threads` threads after a warm-up,
//!   repeated for `seconds`; inputs/s from the median call time, GFLOP/s from the
//!   core's multiply-add count (`2 * layout().macs` FLOPs per input);
//! * GEMM peak: a `512 x 512 x 512` GEMM in the model's precision ([`Peak`]),
//!   with the kernels its engine uses and the same thread count (rows split
//!   over threads), the median of several timed runs; the model's GFLOP/s (for
//!   int8, GOP/s) is reported as a fraction of it;
//! * latency: one input on one thread, median (and 10th/90th percentiles) of
//!   many calls; with more threads, also one input on `threads` threads (the
//!   int8 engine runs one input on two).

use crate::fast::gemm::{gemm, Epi, PackedB};
use crate::fast::quantized::{HostQ, QEngine};
use crate::fast::{FastModel, FastOptions, Isa};
use crate::runner::{BatchRunner, EngineKind};
use anyhow::{bail, Result};
use dws_core::blob::Precision;
use dws_core::quant::Requant;
use dws_core::quant::Requants;
use dws_core::quantized::{Act, Kernels};
use dws_core::Model;
use std::time::{Duration, Instant};

/// Something that runs batches of inputs.
pub trait Engine: Sync {
    /// A short description for reports.
    fn name(&self) -> String;
    /// Elements of one input.
    fn input_len(&self) -> usize;
    /// Elements of one output.
    fn output_len(&self) -> usize;
    /// Runs `batch` inputs (`[batch, input_len]`) on `threads` threads into `out`.
    fn run(&self, inputs: &[f32], batch: usize, threads: usize, out: &mut [f32]) -> Result<()>;
}

/// The core, through the host runner (one input at a time per thread).
pub struct CoreEngine<'m, 'a>(pub &'m Model<'a>);

impl Engine for CoreEngine<'_, '_> {
    fn name(&self) -> String {
        format!("core ({:?})", self.0.precision()).to_lowercase()
    }
    fn input_len(&self) -> usize {
        self.0.input_len()
    }
    fn output_len(&self) -> usize {
        self.0.output_len()
    }
    fn run(&self, inputs: &[f32], batch: usize, threads: usize, out: &mut [f32]) -> Result<()> {
        let y = crate::runner::run_batch(self.0, inputs, batch, threads)?;
        out.copy_from_slice(&y);
        Ok(())
    }
}

/// Any [`BatchRunner`] (the GPU's way into the bench).
impl Engine for BatchRunner<'_, '_> {
    fn name(&self) -> String {
        BatchRunner::name(self).to_string()
    }
    fn input_len(&self) -> usize {
        BatchRunner::input_len(self)
    }
    fn output_len(&self) -> usize {
        BatchRunner::output_len(self)
    }
    fn run(&self, inputs: &[f32], batch: usize, threads: usize, out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(&BatchRunner::run(self, inputs, batch, threads)?);
        Ok(())
    }
}

impl Engine for FastModel {
    fn name(&self) -> String {
        let o = self.options();
        format!("fast f32 ({}, chunk {})", o.isa.name(), o.chunk)
    }
    fn input_len(&self) -> usize {
        FastModel::input_len(self)
    }
    fn output_len(&self) -> usize {
        FastModel::output_len(self)
    }
    fn run(&self, inputs: &[f32], batch: usize, threads: usize, out: &mut [f32]) -> Result<()> {
        self.run_into(inputs, batch, threads, out)
    }
}

impl Engine for QEngine<'_, '_> {
    fn name(&self) -> String {
        format!(
            "fast {} (core executor, {} kernels)",
            self.precision().name(),
            self.isa().name()
        )
    }
    fn input_len(&self) -> usize {
        QEngine::input_len(self)
    }
    fn output_len(&self) -> usize {
        QEngine::output_len(self)
    }
    fn run(&self, inputs: &[f32], batch: usize, threads: usize, out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(&self.run_batch(inputs, batch, threads)?);
        Ok(())
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Inputs per call.
    pub batch: usize,
    /// Worker threads.
    pub threads: usize,
    /// Seconds of timed batch calls (the GEMM peak and latency take up to as long again each).
    pub seconds: f64,
    /// Seed of the synthetic inputs.
    pub seed: u64,
    /// The model's precision (the unit of its rate, the GEMM of its peak).
    pub precision: Precision,
    /// Measure the GEMM peak.
    pub peak: bool,
    /// Measure single-input latency.
    pub latency: bool,
    /// Show what is being measured on stderr (on a terminal; see [`crate::progress`]).
    pub progress: bool,
}

/// The GEMM whose rate a model's is compared with: the fastest the engine's
/// own kernels do in the model's precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peak {
    /// f32 multiply-adds: the fast engine's GEMM kernel ([`gemm_peak`]).
    F32,
    /// int8 x int8 -> int32 multiply-adds, requantized to int8: the host's
    /// int8 linear kernel on non-negative inputs, its fastest path
    /// ([`quantized_gemm_peak`]).
    Int8,
    /// int16 x int8 multiply-adds, requantized to int16: the host's 16x8
    /// linear kernel on non-negative inputs ([`quantized_gemm_peak`]).
    Int16x8,
}

impl Peak {
    /// The peak for a model of `precision`.
    pub fn of(precision: Precision) -> Peak {
        match precision {
            Precision::F32 => Peak::F32,
            Precision::Int8 => Peak::Int8,
            Precision::Int16x8 => Peak::Int16x8,
        }
    }

    /// Measures the median rate in G operations (2 per multiply-add) per second.
    pub fn measure(self, threads: usize, secs: f64) -> f64 {
        match self {
            Peak::F32 => gemm_peak(threads, secs),
            Peak::Int8 => quantized_gemm_peak::<i8>(threads, secs),
            Peak::Int16x8 => quantized_gemm_peak::<i16>(threads, secs),
        }
    }

    /// What a multiply-add counts as two of: FLOP, or for int8 OP (integer
    /// operations).
    pub fn ops(self) -> &'static str {
        match self {
            Peak::F32 => "FLOP",
            Peak::Int8 | Peak::Int16x8 => "OP",
        }
    }

    /// What was measured, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Peak::F32 => "512x512x512 f32, the fast engine's kernel",
            Peak::Int8 => {
                "512x512x512 int8 to int8, the int8 kernels' linear on non-negative inputs"
            }
            Peak::Int16x8 => {
                "512x512x512 int16 x int8 to int16, the 16x8 kernels' linear on non-negative inputs"
            }
        }
    }

    /// The precision's name in JSON reports.
    pub fn name(self) -> &'static str {
        match self {
            Peak::F32 => "f32",
            Peak::Int8 => "int8",
            Peak::Int16x8 => "16x8",
        }
    }
}

/// Summary statistics of repeated timings, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Timed runs.
    pub runs: usize,
    /// Median.
    pub median: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
}

impl Timing {
    fn of(mut t: Vec<f64>) -> Timing {
        if t.is_empty() {
            return Timing::default();
        }
        t.sort_by(f64::total_cmp);
        let q = |f: f64| t[((t.len() - 1) as f64 * f).round() as usize];
        Timing {
            runs: t.len(),
            median: q(0.5),
            p10: q(0.1),
            p90: q(0.9),
        }
    }
}

/// The measured figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The engine's description.
    pub engine: String,
    /// Inputs per call.
    pub batch: usize,
    /// Worker threads.
    pub threads: usize,
    /// Multiply-adds per input.
    pub macs: u64,
    /// Batch call times.
    pub batch_time: Timing,
    /// Inputs per second (median call).
    pub inputs_per_s: f64,
    /// Model GFLOP/s, or GOP/s for int8 (median call).
    pub gflops: f64,
    /// The model's precision.
    pub precision: Precision,
    /// Its GEMM peak's rate in G operations per second (median), if measured.
    pub peak_gflops: Option<f64>,
    /// Single-input call times on one thread, if measured.
    pub latency: Option<Timing>,
    /// Single-input call times on `threads` threads, if measured and `threads > 1`.
    pub latency_threads: Option<Timing>,
}

impl BenchReport {
    /// `gflops / peak_gflops`.
    pub fn peak_fraction(&self) -> Option<f64> {
        self.peak_gflops.map(|p| self.gflops / p)
    }

    /// A human-readable report.
    pub fn text(&self) -> String {
        let k = Peak::of(self.precision);
        let mut s = format!(
            "engine:      {}, {} thread(s)\nwork:        {:.2} M{} per input\n",
            self.engine,
            self.threads,
            2.0 * self.macs as f64 / 1e6,
            k.ops(),
        );
        let t = &self.batch_time;
        s += &format!(
            "batch {:<5}  {:.0} inputs/s, {:.1} G{}/s ({:.2} ms per call: median of {} runs, p10 {:.2}, p90 {:.2})\n",
            self.batch,
            self.inputs_per_s,
            self.gflops,
            k.ops(),
            t.median * 1e3,
            t.runs,
            t.p10 * 1e3,
            t.p90 * 1e3
        );
        if let (Some(p), Some(f)) = (self.peak_gflops, self.peak_fraction()) {
            s += &format!(
                "gemm peak:   {p:.1} G{}/s ({}, {} thread(s)); model at {:.1}% of it\n",
                k.ops(),
                k.describe(),
                self.threads,
                100.0 * f
            );
        }
        let runs = [(&self.latency, 1), (&self.latency_threads, self.threads)];
        for (l, threads) in runs {
            let Some(l) = l else { continue };
            let unit = if threads == 1 { "thread" } else { "threads" };
            s += &format!(
                "latency:     {:.3} ms per input (batch 1, {threads} {unit}: median of {} runs, p10 {:.3}, p90 {:.3})\n",
                l.median * 1e3,
                l.runs,
                l.p10 * 1e3,
                l.p90 * 1e3
            );
        }
        s
    }

    /// The figures as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        let timing = |t: &Timing| serde_json::json!({"runs": t.runs, "median_s": t.median, "p10_s": t.p10, "p90_s": t.p90});
        serde_json::json!({
            "engine": self.engine,
            "batch": self.batch,
            "threads": self.threads,
            "flops_per_input": 2 * self.macs,
            "batch_time": timing(&self.batch_time),
            "inputs_per_s": self.inputs_per_s,
            "gflops": self.gflops,
            "precision": Peak::of(self.precision).name(),
            "peak_gflops": self.peak_gflops,
            "peak_fraction": self.peak_fraction(),
            "latency": self.latency.as_ref().map(timing),
            "latency_threads": self.latency_threads.as_ref().map(timing),
        })
    }
}

/// `batch` seeded synthetic inputs of `len` elements, uniform in `[-0.5, 0.5)`.
pub fn synthetic_inputs(len: usize, batch: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..len * batch)
        .map(|_| {
            // SplitMix64.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Calls `f` repeatedly for about `secs` (at least `min_runs` times) after
/// `warmup` untimed calls; returns each call's seconds.
fn repeat(
    secs: f64,
    min_runs: usize,
    warmup: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < min_runs || start.elapsed() < budget {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// Measures `engine` (whose inputs cost `macs` multiply-adds each).
pub fn bench(engine: &dyn Engine, macs: u64, cfg: &BenchConfig) -> Result<BenchReport> {
    if cfg.batch == 0 || cfg.threads == 0 {
        bail!("batch and threads must be at least 1");
    }
    let (ilen, olen) = (engine.input_len(), engine.output_len());
    // The batch's inputs and outputs must fit in memory (an error, not an abort).
    let floats = cfg.batch.checked_mul(ilen + olen);
    if floats.is_none_or(|n| Vec::<f32>::new().try_reserve_exact(n).is_err()) {
        bail!(
            "a batch of {} needs {:.1} GB for its inputs and outputs, more than this machine can allocate",
            cfg.batch,
            cfg.batch as f64 * (ilen + olen) as f64 * 4e-9
        );
    }
    let inputs = synthetic_inputs(ilen, cfg.batch, cfg.seed);
    let mut out = vec![0f32; cfg.batch * olen];
    let progress = crate::progress::Progress::spinner(
        cfg.progress,
        &format!("timing batches of {} (about {} s)", cfg.batch, cfg.seconds),
    );
    let times = repeat(cfg.seconds, 5, 3, || {
        engine.run(&inputs, cfg.batch, cfg.threads, &mut out)
    })?;
    let batch_time = Timing::of(times);
    let inputs_per_s = cfg.batch as f64 / batch_time.median;
    let gflops = inputs_per_s * 2.0 * macs as f64 / 1e9;
    let short = cfg.seconds.min(2.0);
    progress.set_message(&format!("measuring the GEMM peak (about {short} s)"));
    let peak_gflops = cfg
        .peak
        .then(|| Peak::of(cfg.precision).measure(cfg.threads, short));
    let latency_on = |threads: usize| -> Result<Timing> {
        progress.set_message(&format!(
            "timing single inputs on {} (about {short} s)",
            crate::output::count(threads, "thread")
        ));
        let one = &inputs[..ilen];
        let mut y = vec![0f32; olen];
        let t = repeat(short, 20, 5, || engine.run(one, 1, threads, &mut y))?;
        Ok(Timing::of(t))
    };
    let latency = cfg.latency.then(|| latency_on(1)).transpose()?;
    let latency_threads = (cfg.latency && cfg.threads > 1)
        .then(|| latency_on(cfg.threads))
        .transpose()?;
    Ok(BenchReport {
        engine: engine.name(),
        batch: cfg.batch,
        threads: cfg.threads,
        macs,
        batch_time,
        inputs_per_s,
        gflops,
        precision: cfg.precision,
        peak_gflops,
        latency,
        latency_threads,
    })
}

/// Median GFLOP/s of a `512 x 512 x 512` f32 GEMM with the fast engine's kernel,
/// rows split over `threads` threads, timed for about `secs`.
pub fn gemm_peak(threads: usize, secs: f64) -> f64 {
    const N: usize = 512;
    let a = synthetic_inputs(N * N, 1, 7);
    let w = synthetic_inputs(N * N, 1, 11);
    let b = PackedB::from_fn(N, N, |k, j| w[k * N + j], None);
    let threads = threads.clamp(1, N);
    let isa = Isa::detect();
    let rows = N.div_ceil(threads);
    let mut c = vec![0f32; N * N];
    // Each timed run: every thread does `reps` GEMMs on its rows.
    let mut run = |reps: usize| -> f64 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for (ai, ci) in a.chunks(rows * N).zip(c.chunks_mut(rows * N)) {
                let b = &b;
                s.spawn(move || {
                    for _ in 0..reps {
                        gemm(isa, ai.len() / N, ai, N, b, ci, N, Epi::Store);
                    }
                });
            }
        });
        t.elapsed().as_secs_f64()
    };
    run(2);
    timed_rates(2.0 * (N * N * N) as f64, secs, run)
}

/// Median GOP/s (2 per multiply-add) of a `512 x 512 x 512` GEMM of int8
/// weights and activations `A` (int8 or int16) with outputs of `A`, through
/// the host's kernels ([`Kernels::linear_q`]) on non-negative inputs, rows
/// split over `threads` threads, timed for about `secs`.
pub fn quantized_gemm_peak<A: Act>(threads: usize, secs: f64) -> f64
where
    HostQ: Kernels<A>,
{
    const N: usize = 512;
    // Inputs in 0..=MAX (as after a ReLU), weights in -127..=127 (the
    // synthetic values are in [-0.5, 0.5)).
    let x: Vec<A> = synthetic_inputs(N * N, 1, 7)
        .iter()
        .map(|&v| A::sat((v.abs() * 2.0 * A::MAX as f32) as i32))
        .collect();
    let w: Vec<i8> = synthetic_inputs(N * N, 1, 11)
        .iter()
        .map(|&v| (v * 254.0) as i8)
        .collect();
    let bias = vec![bytemuck::Zeroable::zeroed(); N];
    // Sums of up to 512 * MAX * 127 scaled to the activation range.
    let r = Requants::One(Requant {
        m: 1 << 30,
        shift: 44 + if A::MAX > 127 { 8 } else { 0 },
    });
    let threads = threads.clamp(1, N);
    let rows = N.div_ceil(threads);
    let mut kernels: Vec<HostQ> = (0..threads).map(|_| HostQ::new(Isa::detect())).collect();
    let mut y: Vec<A> = std::iter::repeat_n(A::default(), N * N).collect();
    let mut run = |reps: usize| -> f64 {
        let t = Instant::now();
        std::thread::scope(|s| {
            let parts = x.chunks(rows * N).zip(y.chunks_mut(rows * N));
            for ((xi, yi), k) in parts.zip(kernels.iter_mut()) {
                let (w, bias) = (&w, &bias);
                s.spawn(move || {
                    for _ in 0..reps {
                        k.linear_q(
                            w,
                            Some(bias),
                            N,
                            N,
                            xi,
                            xi.len() / N,
                            r,
                            A::sat(-A::MAX),
                            yi,
                        );
                    }
                });
            }
        });
        t.elapsed().as_secs_f64()
    };
    run(2);
    timed_rates(2.0 * (N * N * N) as f64, secs, run)
}

/// The median rate (G per second) of `ops` per repetition of `run(reps)`,
/// which returns its seconds: runs of about 0.1 s, repeated for about `secs`
/// (at least three).
fn timed_rates(ops: f64, secs: f64, mut run: impl FnMut(usize) -> f64) -> f64 {
    let once = run(1).max(1e-6);
    let reps = ((0.1 / once) as usize).max(1);
    let start = Instant::now();
    let mut rates = Vec::new();
    while rates.len() < 3 || start.elapsed().as_secs_f64() < secs {
        rates.push(ops * reps as f64 / run(reps) / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// The arguments of `dws bench`.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// The .dws blob.
    pub model: std::path::PathBuf,
    /// Inputs per call.
    pub batch: usize,
    /// Worker threads.
    pub threads: usize,
    /// Seconds of timed batch calls.
    pub seconds: f64,
    /// The engine.
    pub engine: EngineKind,
    /// The fast engine's chunk size (default [`crate::fast::DEFAULT_CHUNK`]).
    pub chunk: Option<usize>,
    /// Seed of the synthetic inputs.
    pub seed: u64,
    /// Print JSON.
    pub json: bool,
    /// Measure the GEMM peak.
    pub peak: bool,
    /// Measure single-input latency.
    pub latency: bool,
}

/// `dws bench`: opens the model, measures and prints.
pub fn bench_command(args: &BenchArgs) -> Result<()> {
    let blob = crate::blob_io::AlignedBlob::read(&args.model)?;
    let m = blob.model()?;
    let cfg = BenchConfig {
        batch: args.batch,
        threads: args.threads,
        seconds: args.seconds,
        seed: args.seed,
        precision: m.precision(),
        peak: args.peak,
        latency: args.latency,
        progress: true,
    };
    let macs = m.layout().macs;
    let report = match args.engine {
        EngineKind::Fast if m.precision() == Precision::F32 => {
            let opts = FastOptions {
                chunk: args.chunk.unwrap_or(crate::fast::DEFAULT_CHUNK),
                ..FastOptions::default()
            };
            bench(&FastModel::with_options(&m, opts)?, macs, &cfg)?
        }
        EngineKind::Fast => bench(&QEngine::new(&m, Isa::detect())?, macs, &cfg)?,
        EngineKind::Core => bench(&CoreEngine(&m), macs, &cfg)?,
        EngineKind::Cuda => {
            let gpu = BatchRunner::new(&m, EngineKind::Cuda)?;
            let cfg = BenchConfig { peak: false, ..cfg };
            bench(&gpu, macs, &cfg)?
        }
    };
    if args.json {
        let mut j = report.json();
        j["model"] = serde_json::json!(args.model.display().to_string());
        j["params"] = serde_json::json!(m.params().len());
        j["param_bytes"] = serde_json::json!(m.param_bytes().len());
        crate::output::print(format_args!("{j}\n"))?;
    } else {
        let size = match m.precision() {
            Precision::F32 => format!("{} parameters", m.params().len()),
            p => format!("{}, {} parameter bytes", p.name(), m.param_bytes().len()),
        };
        crate::output::print(format_args!(
            "model:       {} ({size})\n{}",
            args.model.display(),
            report.text()
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_inputs_are_seeded_and_bounded() {
        let a = synthetic_inputs(100, 3, 5);
        assert_eq!(a, synthetic_inputs(100, 3, 5));
        assert_ne!(a, synthetic_inputs(100, 3, 6));
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
    }

    #[test]
    fn timing_picks_the_median() {
        let t = Timing::of(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((t.runs, t.median, t.p10, t.p90), (5, 3.0, 1.0, 5.0));
    }

    #[test]
    fn int8_reports_measure_an_int8_peak_in_operations() {
        let peak = quantized_gemm_peak::<i8>(1, 0.0);
        assert!(peak.is_finite() && peak > 0.0);
        let report = BenchReport {
            engine: "int8".into(),
            batch: 1,
            threads: 1,
            macs: 10,
            batch_time: Timing::default(),
            inputs_per_s: 1.0,
            gflops: 2e-8,
            precision: Precision::Int8,
            peak_gflops: Some(peak),
            latency: None,
            latency_threads: None,
        };
        let text = report.text();
        assert!(
            text.contains("GOP/s") && text.contains("int8 to int8"),
            "{text}"
        );
        assert_eq!(report.json()["precision"], "int8");
    }
}
