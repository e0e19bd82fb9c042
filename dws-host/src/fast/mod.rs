//! The fast f32 engine: the same plan as the core, run a batch at a time
//! (and, in [`int8`], the SIMD kernels that int8 models run with).
//!
//! [`FastModel::new`] decodes a validated [`Model`]'s plan once into prepared ops
//! (weights transposed and packed into GEMM panels, gather/scatter index maps,
//! pooling and accumulator layouts, a following batch norm and ReLU fused into
//! each layer). [`FastModel::run_batch`] splits the batch over threads; each
//! thread runs its inputs in chunks, every block of the plan over the whole
//! chunk at once, so that the linears are GEMMs of `[chunk * rows, fin] x
//! [fin, fout]` (see `exec.rs` for the layer walk, [`gemm`] and [`attention`]
//! for the kernels, [`simd`] for how AVX2 is chosen at run time).
//!
//! Results match the core within the reference suite's tolerance and do not
//! depend on an input's position in the batch, the chunk size or the thread
//! count: every input goes through the same instruction sequence.
// SIMD kernels need `unsafe` (see `simd`); the rest of the crate denies it.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod attention;
mod exec;
pub mod gemm;
mod ops;
mod prepare;
pub mod quantized;
pub mod simd;

use anyhow::{anyhow, bail, Result};
use dws_core::Model;
use exec::Workspace;
use prepare::Prepared;
pub use simd::Isa;
use std::sync::Mutex;

/// Inputs a worker runs through each block together, unless told otherwise.
/// Chosen by measurement on the paper-default model (see docs/benchmarks.md).
pub const DEFAULT_CHUNK: usize = 8;

/// How the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastOptions {
    /// Inputs per chunk (at least 1).
    pub chunk: usize,
    /// The kernels' instruction set; falls back to portable if the CPU lacks it.
    pub isa: Isa,
}

impl Default for FastOptions {
    fn default() -> Self {
        FastOptions {
            chunk: DEFAULT_CHUNK,
            isa: Isa::detect(),
        }
    }
}

/// A model prepared for batched f32 inference. Owns its (packed) weights.
#[derive(Debug)]
pub struct FastModel {
    p: Prepared,
    opts: FastOptions,
    macs: u64,
    spare: Mutex<Vec<Workspace>>,
}

impl FastModel {
    /// Prepares `model` with the default options.
    pub fn new(model: &Model<'_>) -> Result<Self> {
        Self::with_options(model, FastOptions::default())
    }

    /// Prepares `model`.
    pub fn with_options(model: &Model<'_>, opts: FastOptions) -> Result<Self> {
        if opts.chunk == 0 {
            bail!("the chunk size must be at least 1");
        }
        let p = prepare::prepare(model)?;
        Ok(FastModel {
            p,
            opts: FastOptions {
                chunk: opts.chunk,
                isa: opts.isa.supported(),
            },
            macs: model.layout().macs,
            spare: Mutex::new(Vec::new()),
        })
    }

    /// The options in force (the instruction set as actually used).
    pub fn options(&self) -> FastOptions {
        self.opts
    }

    /// Elements of one input.
    pub fn input_len(&self) -> usize {
        self.p.input_len
    }

    /// Elements of one output.
    pub fn output_len(&self) -> usize {
        self.p.output_len
    }

    /// Multiply-adds per input (the core's count).
    pub fn macs(&self) -> u64 {
        self.macs
    }

    /// Runs `batch` inputs (`[batch, input_len]`) on `threads` threads and returns
    /// `[batch, output_len]`.
    pub fn run_batch(&self, inputs: &[f32], batch: usize, threads: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; batch * self.output_len()];
        self.run_into(inputs, batch, threads, &mut out)?;
        Ok(out)
    }

    /// Like [`run_batch`](Self::run_batch), writing into `out` (`[batch, output_len]`).
    pub fn run_into(
        &self,
        inputs: &[f32],
        batch: usize,
        threads: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let (ilen, olen) = (self.input_len(), self.output_len());
        if inputs.len() != batch * ilen {
            bail!(
                "inputs hold {} values, expected {batch} x {ilen}",
                inputs.len()
            );
        }
        if out.len() != batch * olen {
            bail!(
                "output holds {} values, expected {batch} x {olen}",
                out.len()
            );
        }
        if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
            bail!(
                "input {} holds a NaN or infinity (element {})",
                i / ilen,
                i % ilen
            );
        }
        if batch == 0 {
            return Ok(());
        }
        let threads = threads.clamp(1, batch);
        let per = batch.div_ceil(threads);
        if threads == 1 {
            self.run_range(inputs, batch, out);
            return Ok(());
        }
        std::thread::scope(|s| {
            let mut parts = inputs.chunks(per * ilen).zip(out.chunks_mut(per * olen));
            let first = parts.next();
            let handles: Vec<_> = parts
                .map(|(x, y)| s.spawn(move || self.run_range(x, x.len() / ilen, y)))
                .collect();
            if let Some((x, y)) = first {
                self.run_range(x, x.len() / ilen, y);
            }
            handles
                .into_iter()
                .try_for_each(|h| h.join().map_err(|_| anyhow!("worker thread panicked")))
        })
    }

    /// One worker: `n` inputs in chunks, with a workspace from the spare pool.
    fn run_range(&self, inputs: &[f32], n: usize, out: &mut [f32]) {
        let mut ws = self
            .spare
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        let (ilen, olen, chunk) = (self.input_len(), self.output_len(), self.opts.chunk);
        let mut b = 0;
        while b < n {
            let bc = chunk.min(n - b);
            exec::run_chunk(
                &self.p,
                self.opts.isa,
                &mut ws,
                &inputs[b * ilen..(b + bc) * ilen],
                bc,
                &mut out[b * olen..(b + bc) * olen],
            );
            b += bc;
        }
        if let Ok(mut v) = self.spare.lock() {
            v.push(ws);
        }
    }
}
