//! int8 models on the host: the core's int8 executor with SIMD kernels.
//!
//! The core's executor ([`Model::run_int8_with`]) walks the plan one input at a
//! time, as on a microcontroller; its hot loops ([`Int8Kernels`]: the linears,
//! the attention of set attention blocks, the block contributions) run here in
//! the [`avx2`] kernels where the CPU has AVX2 and FMA, else in the core's
//! portable ones. Both give the same bits (the reference suite checks every
//! int8 fixture against the core's golden outputs, and the tests below check
//! each kernel on random and extreme values); the batch is split over threads.

pub mod avx2;

use super::Isa;
use anyhow::{bail, Result};
use avx2::Avx2Int8;
use dws_core::blob::Precision;
use dws_core::int8::kernels::{AttentionQ, Int8Kernels, Portable};
use dws_core::plan::Reduction;
use dws_core::quant::Requant;
use dws_core::Model;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// The int8 kernels of one worker thread.
#[derive(Debug)]
pub enum HostInt8 {
    /// The core's own.
    Portable,
    /// AVX2 (only constructed on a CPU that has it).
    Avx2(Box<Avx2Int8>),
}

impl HostInt8 {
    /// The kernels for `isa`, or the portable ones if this CPU lacks it.
    pub fn new(isa: Isa) -> Self {
        match (isa, Avx2Int8::new()) {
            (Isa::Avx2Fma, Some(k)) => HostInt8::Avx2(Box::new(k)),
            _ => HostInt8::Portable,
        }
    }

    /// The instruction set in use.
    pub fn isa(&self) -> Isa {
        match self {
            HostInt8::Portable => Isa::Portable,
            HostInt8::Avx2(_) => Isa::Avx2Fma,
        }
    }
}

impl Int8Kernels for HostInt8 {
    fn linear(
        &mut self,
        w: &[i8],
        b: Option<&[i32]>,
        fin: usize,
        fout: usize,
        x: &[i8],
        rows: usize,
        out: impl FnMut(usize, usize, i32),
    ) {
        match self {
            HostInt8::Portable => Portable.linear(w, b, fin, fout, x, rows, out),
            HostInt8::Avx2(k) => k.linear(w, b, fin, fout, x, rows, out),
        }
    }

    fn linear8(
        &mut self,
        w: &[i8],
        b: Option<&[i32]>,
        fin: usize,
        fout: usize,
        x: &[i8],
        rows: usize,
        r: Requant,
        lo: i8,
        y: &mut [i8],
    ) {
        match self {
            HostInt8::Portable => Portable.linear8(w, b, fin, fout, x, rows, r, lo, y),
            HostInt8::Avx2(k) => k.linear8(w, b, fin, fout, x, rows, r, lo, y),
        }
    }

    fn fc_o_residual(
        &mut self,
        w: &[i8],
        b: Option<&[i32]>,
        dim: usize,
        x: &[i8],
        rows: usize,
        r_o: Requant,
        r_fc: Requant,
        y: &mut [i8],
    ) {
        match self {
            HostInt8::Portable => Portable.fc_o_residual(w, b, dim, x, rows, r_o, r_fc, y),
            HostInt8::Avx2(k) => k.fc_o_residual(w, b, dim, x, rows, r_o, r_fc, y),
        }
    }

    fn affine(&mut self, x: &mut [i8], mult: &[i32], off: &[i32], shift: u8) {
        match self {
            HostInt8::Portable => Portable.affine(x, mult, off, shift),
            HostInt8::Avx2(k) => k.affine(x, mult, off, shift),
        }
    }

    fn attention(
        &mut self,
        qm: &mut [i8],
        km: &[i8],
        vm: &[i8],
        dv: usize,
        heads: usize,
        r: AttentionQ,
        scores: &mut [i32],
        e: &mut [u32],
        av: &mut [i32],
    ) {
        match self {
            HostInt8::Portable => Portable.attention(qm, km, vm, dv, heads, r, scores, e, av),
            HostInt8::Avx2(k) => k.attention(qm, km, vm, dv, heads, r, scores, e, av),
        }
    }

    fn add_requant(&mut self, acc: &mut [i32], y: &[i8], width: usize, step: usize, r: Requant) {
        match self {
            HostInt8::Portable => Portable.add_requant(acc, y, width, step, r),
            HostInt8::Avx2(k) => k.add_requant(acc, y, width, step, r),
        }
    }

    fn requant(&mut self, acc: &[i32], r: Requant, out: &mut [i8]) {
        match self {
            HostInt8::Portable => Portable.requant(acc, r, out),
            HostInt8::Avx2(k) => k.requant(acc, r, out),
        }
    }

    fn requant_i8(&mut self, x: &[i8], r: Requant, out: &mut [i8]) {
        match self {
            HostInt8::Portable => Portable.requant_i8(x, r, out),
            HostInt8::Avx2(k) => k.requant_i8(x, r, out),
        }
    }

    fn pool(
        &mut self,
        red: Reduction,
        src: &[i8],
        cols: usize,
        rows: Range<usize>,
        cs: Range<usize>,
        r: Requant,
        out: &mut [i8],
    ) {
        match self {
            HostInt8::Portable => Portable.pool(red, src, cols, rows, cs, r, out),
            HostInt8::Avx2(k) => k.pool(red, src, cols, rows, cs, r, out),
        }
    }
}

/// Kernels (with their packed weights) and scratch of finished workers, kept
/// for the next call; one set per model. An [`Int8Engine`] owns one, or shares
/// one given to [`Int8Engine::with_spares`] (the Python binding keeps one per
/// model that way, so that every call does not pack the weights again).
#[derive(Debug, Default)]
pub struct Int8Spares(Mutex<Vec<(HostInt8, Vec<f32>)>>);

/// An int8 model ready to run batches on the CPU with the host's kernels.
#[derive(Debug)]
pub struct Int8Engine<'m, 'a> {
    model: &'m Model<'a>,
    isa: Isa,
    spare: Arc<Int8Spares>,
}

impl<'m, 'a> Int8Engine<'m, 'a> {
    /// `model` (int8) with the kernels of `isa` (portable if the CPU lacks it).
    pub fn new(model: &'m Model<'a>, isa: Isa) -> Result<Self> {
        Self::with_spares(model, isa, Arc::default())
    }

    /// [`Int8Engine::new`], keeping the workers' kernels and scratch in
    /// `spare` (which must only ever serve this model).
    pub fn with_spares(model: &'m Model<'a>, isa: Isa, spare: Arc<Int8Spares>) -> Result<Self> {
        if model.precision() != Precision::Int8 {
            bail!("the int8 engine runs int8 models; this one is f32");
        }
        Ok(Int8Engine {
            model,
            isa: isa.supported(),
            spare,
        })
    }

    /// The kernels' instruction set.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Elements of one input.
    pub fn input_len(&self) -> usize {
        self.model.input_len()
    }

    /// Elements of one output.
    pub fn output_len(&self) -> usize {
        self.model.output_len()
    }

    /// Runs `batch` inputs (`[batch, input_len]`) on `threads` threads and
    /// returns `[batch, output_len]`.
    pub fn run_batch(&self, inputs: &[f32], batch: usize, threads: usize) -> Result<Vec<f32>> {
        crate::runner::per_input(self.model, inputs, batch, threads, || {
            let mut w = Worker {
                engine: self,
                state: self.spare.0.lock().ok().and_then(|mut v| v.pop()),
            };
            move |x: &[f32], y: &mut [f32]| w.run(x, y)
        })
    }
}

/// One thread's kernels and scratch, back to the engine's spares when dropped.
struct Worker<'e, 'm, 'a> {
    engine: &'e Int8Engine<'m, 'a>,
    state: Option<(HostInt8, Vec<f32>)>,
}

impl Worker<'_, '_, '_> {
    fn run(&mut self, x: &[f32], y: &mut [f32]) -> Result<(), dws_core::Error> {
        let m = self.engine.model;
        let (k, scratch) = self
            .state
            .get_or_insert_with(|| (HostInt8::new(self.engine.isa), vec![0f32; m.scratch_len()]));
        m.run_int8_with(k, x, scratch, y).map(drop)
    }
}

impl Drop for Worker<'_, '_, '_> {
    fn drop(&mut self) {
        if let (Some(state), Ok(mut spare)) = (self.state.take(), self.engine.spare.0.lock()) {
            spare.push(state);
        }
    }
}

#[cfg(test)]
mod tests;
