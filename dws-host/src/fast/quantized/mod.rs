//! Quantized models (int8 and 16x8) on the host: the core's executor with SIMD kernels.
//!
//! The core's executor ([`Model::run_quantized_with`]) walks the plan one input at a
//! time, as on a microcontroller; its hot loops ([`Kernels`]: the linears,
//! the attention of set attention blocks, the block contributions) run here in
//! the [`avx2`] kernels where the CPU has AVX2 and FMA, else in the core's
//! portable ones. Both give the same bits (the reference suite checks every
//! quantized fixture against the core's golden outputs, and the tests below check
//! each kernel on random and extreme values). The batch is split over threads;
//! with at least two threads per input, each input also runs on two: the
//! executor's [`Kernels::join`] hands half of each step to a helper
//! thread (`helper.rs`).

pub mod avx2;
mod helper;

use super::Isa;
use anyhow::{bail, Result};
use avx2::Avx2Q;
use dws_core::blob::Precision;
use dws_core::plan::Reduction;
use dws_core::quant::{Requant, Requants};
use dws_core::quantized::{AttentionQ, Kernels, Portable};
use dws_core::Model;
use helper::Helper;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

/// The quantized kernels of one worker thread, and the helper thread that
/// runs half of each of its joins, if it has one.
#[derive(Debug)]
pub struct HostQ {
    kernels: Isas,
    helper: Option<Helper>,
}

/// The instruction set's kernels.
#[derive(Debug)]
enum Isas {
    /// The core's own.
    Portable,
    /// AVX2 (only constructed on a CPU that has it).
    Avx2(Box<Avx2Q>),
}

impl HostQ {
    /// The kernels for `isa`, or the portable ones if this CPU lacks it.
    pub fn new(isa: Isa) -> Self {
        let kernels = match (isa, Avx2Q::new()) {
            (Isa::Avx2Fma, Some(k)) => Isas::Avx2(Box::new(k)),
            _ => Isas::Portable,
        };
        HostQ {
            kernels,
            helper: None,
        }
    }

    /// The instruction set in use.
    pub fn isa(&self) -> Isa {
        match self.kernels {
            Isas::Portable => Isa::Portable,
            Isas::Avx2(_) => Isa::Avx2Fma,
        }
    }
}

/// Delegates every kernel to the instruction set's implementation.
impl Kernels<i8> for HostQ {
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
        match &mut self.kernels {
            Isas::Portable => Portable.linear(w, b, fin, fout, x, rows, out),
            Isas::Avx2(k) => k.linear(w, b, fin, fout, x, rows, out),
        }
    }

    fn linear_q(
        &mut self,
        w: &[i8],
        b: Option<&[i32]>,
        fin: usize,
        fout: usize,
        x: &[i8],
        rows: usize,
        r: Requants<'_>,
        lo: i8,
        y: &mut [i8],
    ) {
        match &mut self.kernels {
            Isas::Portable => Portable.linear_q(w, b, fin, fout, x, rows, r, lo, y),
            Isas::Avx2(k) => k.linear_q(w, b, fin, fout, x, rows, r, lo, y),
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
        r_fc: Requants<'_>,
        y: &mut [i8],
    ) {
        match &mut self.kernels {
            Isas::Portable => Portable.fc_o_residual(w, b, dim, x, rows, r_o, r_fc, y),
            Isas::Avx2(k) => k.fc_o_residual(w, b, dim, x, rows, r_o, r_fc, y),
        }
    }

    fn affine(&mut self, x: &mut [i8], mult: &[i32], off: &[i32], shift: u8) {
        match &mut self.kernels {
            Isas::Portable => Portable.affine(x, mult, off, shift),
            Isas::Avx2(k) => k.affine(x, mult, off, shift),
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
        p: &mut [u32],
        av: &mut [i32],
    ) {
        match &mut self.kernels {
            Isas::Portable => Portable.attention(qm, km, vm, dv, heads, r, scores, p, av),
            Isas::Avx2(k) => k.attention(qm, km, vm, dv, heads, r, scores, p, av),
        }
    }

    fn add_requant(&mut self, acc: &mut [i32], y: &[i8], width: usize, step: usize, r: Requant) {
        match &mut self.kernels {
            Isas::Portable => Portable.add_requant(acc, y, width, step, r),
            Isas::Avx2(k) => k.add_requant(acc, y, width, step, r),
        }
    }

    fn requant(&mut self, acc: &[i32], r: Requant, out: &mut [i8]) {
        match &mut self.kernels {
            Isas::Portable => Kernels::<i8>::requant(&mut Portable, acc, r, out),
            Isas::Avx2(k) => Kernels::<i8>::requant(k.as_mut(), acc, r, out),
        }
    }

    fn requant_act(&mut self, x: &[i8], r: Requant, out: &mut [i8]) {
        match &mut self.kernels {
            Isas::Portable => Portable.requant_act(x, r, out),
            Isas::Avx2(k) => k.requant_act(x, r, out),
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
        match &mut self.kernels {
            Isas::Portable => Portable.pool(red, src, cols, rows, cs, r, out),
            Isas::Avx2(k) => k.pool(red, src, cols, rows, cs, r, out),
        }
    }

    fn parallel(&self) -> bool {
        self.helper.is_some()
    }

    fn join<F, G, RA, RB>(&mut self, scratch: &mut [u8], a: F, b: G) -> (RA, RB)
    where
        F: FnOnce(&mut Self, &mut [u8]) -> RA + Send,
        G: FnOnce(&mut Self, &mut [u8]) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        self.join_parts(scratch, a, b)
    }
}

/// 16x8: the linear layers' products in the instruction set's kernels, the
/// rest the portable definitions (the trait's), with the helper thread's joins.
impl Kernels<i16> for HostQ {
    fn linear(
        &mut self,
        w: &[i8],
        b: Option<&[i64]>,
        fin: usize,
        fout: usize,
        x: &[i16],
        rows: usize,
        out: impl FnMut(usize, usize, i64),
    ) {
        match &mut self.kernels {
            Isas::Portable => Portable.linear(w, b, fin, fout, x, rows, out),
            Isas::Avx2(k) => k.linear(w, b, fin, fout, x, rows, out),
        }
    }

    fn parallel(&self) -> bool {
        self.helper.is_some()
    }

    fn join<F, G, RA, RB>(&mut self, scratch: &mut [u8], a: F, b: G) -> (RA, RB)
    where
        F: FnOnce(&mut Self, &mut [u8]) -> RA + Send,
        G: FnOnce(&mut Self, &mut [u8]) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        self.join_parts(scratch, a, b)
    }
}

impl HostQ {
    /// `Kernels::join`: the second part on the helper thread, if there is one.
    fn join_parts<F, G, RA, RB>(&mut self, scratch: &mut [u8], a: F, b: G) -> (RA, RB)
    where
        F: FnOnce(&mut Self, &mut [u8]) -> RA + Send,
        G: FnOnce(&mut Self, &mut [u8]) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        // Without the helper for the time of the join: the parts run one
        // after the other if they join again.
        let Some(mut helper) = self.helper.take() else {
            let ra = a(self, scratch);
            return (ra, b(self, scratch));
        };
        let mut rb = None;
        let ra = catch_unwind(AssertUnwindSafe(|| {
            helper.run(self, scratch, |k, s| rb = Some(b(k, s)), a)
        }));
        self.helper = Some(helper);
        match (ra, rb) {
            (Ok(ra), Some(rb)) => (ra, rb),
            (Err(p), _) => resume_unwind(p),
            (Ok(_), None) => unreachable!("the helper ran the second part"),
        }
    }
}

/// Kernels (with their packed weights) and scratch of finished workers, and
/// idle helper threads (each with its own kernels), kept for the next call;
/// one set per model. A [`QEngine`] owns one, or shares one given to
/// [`QEngine::with_spares`] (the Python binding keeps one per model that
/// way, so that every call does not pack the weights again). The helper
/// threads end when the spares are dropped.
#[derive(Debug, Default)]
pub struct QSpares {
    kernels: Mutex<Vec<(HostQ, Vec<f32>)>>,
    helpers: Mutex<Vec<Helper>>,
}

/// A quantized model (int8 or 16x8) ready to run batches on the CPU with the
/// host's kernels.
#[derive(Debug)]
pub struct QEngine<'m, 'a> {
    model: &'m Model<'a>,
    isa: Isa,
    spare: Arc<QSpares>,
}

impl<'m, 'a> QEngine<'m, 'a> {
    /// `model` (int8 or 16x8) with the kernels of `isa` (portable if the CPU lacks it).
    pub fn new(model: &'m Model<'a>, isa: Isa) -> Result<Self> {
        Self::with_spares(model, isa, Arc::default())
    }

    /// [`QEngine::new`], keeping the workers' kernels and scratch in
    /// `spare` (which must only ever serve this model).
    pub fn with_spares(model: &'m Model<'a>, isa: Isa, spare: Arc<QSpares>) -> Result<Self> {
        if !model.precision().is_quantized() {
            bail!("the quantized engine runs int8 and 16x8 models; this one is f32");
        }
        Ok(QEngine {
            model,
            isa: isa.supported(),
            spare,
        })
    }

    /// The kernels' instruction set.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The model's precision (int8 or 16x8).
    pub fn precision(&self) -> Precision {
        self.model.precision()
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
    /// returns `[batch, output_len]`. Where there are at least two threads
    /// (and cores) per input, each input runs on two: half of each of the
    /// executor's joins runs on a helper thread.
    pub fn run_batch(&self, inputs: &[f32], batch: usize, threads: usize) -> Result<Vec<f32>> {
        if !self.pairs(batch, threads) {
            return crate::runner::per_input(self.model, inputs, batch, threads, || {
                self.worker(None)
            });
        }
        let helpers: Vec<Helper> = (0..batch).map_while(|_| self.helper()).collect();
        let free = Mutex::new(helpers);
        let out = crate::runner::per_input(self.model, inputs, batch, batch, || {
            self.worker(free.lock().ok().and_then(|mut v| v.pop()))
        });
        // Helpers no worker took (the workers return theirs when dropped).
        if let (Ok(mut idle), Ok(free)) = (self.spare.helpers.lock(), free.into_inner()) {
            idle.extend(free);
        }
        out
    }

    /// Whether [`QEngine::run_batch`] runs each of `batch` inputs on two
    /// threads: with at least two threads, and two cores, per input.
    pub fn pairs(&self, batch: usize, threads: usize) -> bool {
        static CORES: OnceLock<usize> = OnceLock::new();
        let cores =
            *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        batch > 0 && batch.saturating_mul(2) <= threads.min(cores)
    }

    /// An idle helper thread, or a new one (`None` if none can be started).
    fn helper(&self) -> Option<Helper> {
        let idle = self.spare.helpers.lock().ok().and_then(|mut v| v.pop());
        idle.filter(Helper::in_this_process)
            .or_else(|| Helper::spawn(self.isa))
    }

    /// A worker's run function, with kernels from the spares and `helper`.
    fn worker(
        &self,
        helper: Option<Helper>,
    ) -> impl FnMut(&[f32], &mut [f32]) -> Result<(), dws_core::Error> + '_ {
        let (mut k, scratch) = self
            .spare
            .kernels
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(|| (HostQ::new(self.isa), Vec::new()));
        k.helper = helper;
        let mut w = Worker {
            engine: self,
            state: Some((k, scratch)),
        };
        move |x: &[f32], y: &mut [f32]| w.run(x, y)
    }
}

/// One thread's kernels (with its helper, if any) and scratch, back to the
/// engine's spares when dropped (also when a panic unwinds).
struct Worker<'e, 'm, 'a> {
    engine: &'e QEngine<'m, 'a>,
    /// `Some` until dropped.
    state: Option<(HostQ, Vec<f32>)>,
}

impl Worker<'_, '_, '_> {
    fn run(&mut self, x: &[f32], y: &mut [f32]) -> Result<(), dws_core::Error> {
        let m = self.engine.model;
        let (k, scratch) = self.state.as_mut().expect("kernels until dropped");
        if scratch.len() < m.scratch_len() {
            scratch.resize(m.scratch_len(), 0.0);
        }
        match m.precision() {
            Precision::Int16x8 => m.run_quantized_with::<i16>(k, x, scratch, y).map(drop),
            _ => m.run_quantized_with::<i8>(k, x, scratch, y).map(drop),
        }
    }
}

impl Drop for Worker<'_, '_, '_> {
    fn drop(&mut self) {
        let Some((mut k, scratch)) = self.state.take() else {
            return;
        };
        let spare = &self.engine.spare;
        if let (Some(h), Ok(mut idle)) = (k.helper.take(), spare.helpers.lock()) {
            idle.push(h);
        }
        if let Ok(mut kernels) = spare.kernels.lock() {
            kernels.push((k, scratch));
        }
    }
}

#[cfg(test)]
mod tests;
