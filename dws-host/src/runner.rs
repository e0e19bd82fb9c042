//! Batch inference on the CPU, parallel over the batch.
//!
//! [`run_batch`] runs the core (one input at a time per thread);
//! [`BatchRunner`] / [`run_batch_with`] route to the engine chosen with
//! [`EngineKind`]: by default the [`fast`](crate::fast) batched f32 engine, or
//! for quantized blobs the core's executor with the host's SIMD kernels
//! ([`fast::quantized`](crate::fast::quantized)); the core alone when asked; or an
//! NVIDIA GPU through `dws-cuda` in a dws built with the `cuda` feature.

use crate::fast::quantized::QEngine;
use crate::fast::{FastModel, Isa};
use anyhow::{anyhow, Result};
use dws_core::blob::Precision;
use dws_core::Model;

/// Which engine runs batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineKind {
    /// The core's reference executor, one input at a time per thread.
    Core,
    /// The batched f32 engine (`dws_host::fast`); for quantized blobs, the
    /// core's executor with the host's SIMD kernels (`dws_host::fast::quantized`).
    #[default]
    #[value(alias = "cpu")]
    Fast,
    /// An NVIDIA GPU (`dws-cuda`; needs a dws built with `--features cuda`).
    Cuda,
}

/// A model ready to run batches on the chosen engine (the fast engine prepares
/// its packed weights once, here).
pub enum BatchRunner<'m, 'a> {
    /// The core.
    Core(&'m Model<'a>),
    /// The fast engine.
    Fast(FastModel),
    /// The core's quantized executor with the host's SIMD kernels.
    Quantized(QEngine<'m, 'a>),
    /// The GPU (device 0), loaded once; calls are serialized.
    #[cfg(any(feature = "cuda-13000", feature = "cuda-12080"))]
    Cuda(Box<std::sync::Mutex<dws_cuda::CudaModel>>),
}

impl<'m, 'a> BatchRunner<'m, 'a> {
    /// Prepares `model` for `kind`.
    pub fn new(model: &'m Model<'a>, kind: EngineKind) -> Result<Self> {
        Ok(match kind {
            EngineKind::Fast if model.precision() == Precision::F32 => {
                BatchRunner::Fast(FastModel::new(model)?)
            }
            EngineKind::Fast => BatchRunner::Quantized(QEngine::new(model, Isa::detect())?),
            EngineKind::Cuda => cuda_runner(model)?,
            _ => BatchRunner::Core(model),
        })
    }

    /// Runs `batch` inputs (`[batch, input_len]`) and returns `[batch, output_len]`.
    pub fn run(&self, inputs: &[f32], batch: usize, threads: usize) -> Result<Vec<f32>> {
        match self {
            BatchRunner::Core(m) => run_batch(m, inputs, batch, threads),
            BatchRunner::Fast(f) => f.run_batch(inputs, batch, threads),
            BatchRunner::Quantized(e) => e.run_batch(inputs, batch, threads),
            #[cfg(any(feature = "cuda-13000", feature = "cuda-12080"))]
            BatchRunner::Cuda(g) => {
                let mut g = g
                    .lock()
                    .map_err(|_| anyhow!("the GPU engine is poisoned"))?;
                Ok(g.run_batch(inputs, batch)?)
            }
        }
    }

    /// The engine's name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            BatchRunner::Core(_) => "core",
            BatchRunner::Fast(_) => "fast",
            BatchRunner::Quantized(e) => match e.precision() {
                Precision::Int16x8 => "fast-16x8",
                _ => "fast-int8",
            },
            #[cfg(any(feature = "cuda-13000", feature = "cuda-12080"))]
            BatchRunner::Cuda(_) => "cuda",
        }
    }

    /// Elements of one input.
    pub fn input_len(&self) -> usize {
        match self {
            BatchRunner::Core(m) => m.input_len(),
            BatchRunner::Fast(f) => f.input_len(),
            BatchRunner::Quantized(e) => e.input_len(),
            #[cfg(any(feature = "cuda-13000", feature = "cuda-12080"))]
            BatchRunner::Cuda(g) => g.lock().unwrap_or_else(|p| p.into_inner()).input_len(),
        }
    }

    /// Elements of one output.
    pub fn output_len(&self) -> usize {
        match self {
            BatchRunner::Core(m) => m.output_len(),
            BatchRunner::Fast(f) => f.output_len(),
            BatchRunner::Quantized(e) => e.output_len(),
            #[cfg(any(feature = "cuda-13000", feature = "cuda-12080"))]
            BatchRunner::Cuda(g) => g.lock().unwrap_or_else(|p| p.into_inner()).output_len(),
        }
    }
}

#[cfg(any(feature = "cuda-13000", feature = "cuda-12080"))]
fn cuda_runner<'m, 'a>(model: &'m Model<'a>) -> Result<BatchRunner<'m, 'a>> {
    let gpu = dws_cuda::CudaModel::load(model.blob())?;
    Ok(BatchRunner::Cuda(Box::new(std::sync::Mutex::new(gpu))))
}

#[cfg(not(any(feature = "cuda-13000", feature = "cuda-12080")))]
fn cuda_runner<'m, 'a>(_: &'m Model<'a>) -> Result<BatchRunner<'m, 'a>> {
    Err(anyhow!(
        "this dws was built without GPU support; rebuild it with \
         `cargo build --release -p dws-host --features cuda`"
    ))
}

/// Runs `batch` inputs on the engine `kind` (see [`BatchRunner`]).
pub fn run_batch_with(
    model: &Model<'_>,
    inputs: &[f32],
    batch: usize,
    threads: usize,
    kind: EngineKind,
) -> Result<Vec<f32>> {
    BatchRunner::new(model, kind)?.run(inputs, batch, threads)
}

/// Number of worker threads to use by default: all cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `batch` inputs (`[batch, input_len]`) on the core and returns `[batch, output_len]`.
pub fn run_batch(
    model: &Model<'_>,
    inputs: &[f32],
    batch: usize,
    threads: usize,
) -> Result<Vec<f32>> {
    per_input(model, inputs, batch, threads, || {
        let mut scratch = vec![0f32; model.scratch_len()];
        move |x: &[f32], y: &mut [f32]| model.run(x, &mut scratch, y).map(drop)
    })
}

/// Runs `batch` inputs one at a time, the batch split over `threads` threads:
/// each thread makes its runner once with `worker`, then runs its inputs
/// through it (`[input_len]` in, `[output_len]` out).
pub(crate) fn per_input<W, R>(
    model: &Model<'_>,
    inputs: &[f32],
    batch: usize,
    threads: usize,
    worker: W,
) -> Result<Vec<f32>>
where
    W: Fn() -> R + Sync,
    R: FnMut(&[f32], &mut [f32]) -> Result<(), dws_core::Error>,
{
    let (ilen, olen) = (model.input_len(), model.output_len());
    if inputs.len() != batch * ilen {
        return Err(anyhow!(
            "inputs hold {} values, expected {batch} x {ilen}",
            inputs.len()
        ));
    }
    let mut out = vec![0f32; batch * olen];
    if batch == 0 {
        return Ok(out);
    }
    let threads = threads.clamp(1, batch);
    if threads == 1 {
        let mut run = worker();
        for (x, y) in inputs.chunks(ilen).zip(out.chunks_mut(olen)) {
            run(x, y)?;
        }
        return Ok(out);
    }
    let per_thread = batch.div_ceil(threads);
    let worker = &worker;
    std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .chunks(per_thread * ilen)
            .zip(out.chunks_mut(per_thread * olen))
            .map(|(xs, ys)| {
                s.spawn(move || -> Result<()> {
                    let mut run = worker();
                    for (x, y) in xs.chunks(ilen).zip(ys.chunks_mut(olen)) {
                        run(x, y)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow!("worker thread panicked"))?)
    })?;
    Ok(out)
}
