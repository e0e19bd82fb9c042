//! Lowering: a validated plan becomes a short list of kernel launches and
//! GEMMs over a whole batch.
//!
//! # Memory
//! Activations and temporaries live in one device *arena* whose every region
//! scales with the batch: a region is a per-sample byte offset `loc`, and its
//! address for a batch of `B` is `arena + loc * B` (`dws_ptr` in common.cuh).
//! So one lowering serves every batch size; a run only patches the arena and
//! parameter addresses and the batch into each launch's [`Ctx`]. Regions, in
//! order: the f32 input, the normalized or quantized input, two ping-pong
//! activation buffers, the down- and up-sampled `W_0`, the f32 output, then the
//! *Y store* (map outputs of the current DWS layer) and the *work* area
//! (temporaries of one block), each as large as its peak over the plan.
//!
//! Matrices are sample-major: a block's gathered rows are `[B * n, k]`, so one
//! GEMM covers the whole batch. Weight-space buffers hold each sample's
//! tensors back to back, as in the core.
//!
//! # Launches per DWS layer
//! Per block: a gather (pooling, folding) into `[B * n, k]`, then the map:
//! GEMMs for the linear layers (hidden biases and ReLU in `bias_act_f32`;
//! the last bias is fused into the consumer), or for a set layer its pooling
//! or attention kernel between the GEMMs. Cell-wise MLP blocks (the layer skip
//! and the set-Kronecker "all" part) read the activations in place through a
//! strided batched GEMM. Then one scatter per destination tensor sums every
//! block's contribution, with broadcasting, scale, the map's bias, DeepSets'
//! `- Lambda`, set attention's `O + relu(.)`, and the following batch norm and
//! ReLU fused in. Quantized plans (int8 and 16x8) follow the same structure
//! with integer kernels (`docs/quantization.md`): `linear_*` instead of the
//! GEMMs, with each layer's requantization (one multiplier, or one mantissa
//! per output channel read from the parameter image) in its epilogue.

use crate::args::*;
use crate::kernels::{Kernel, QuantKernels, LINEAR_TILE, MAX_DYN_SMEM, THREADS};
use crate::Error;
use dws_core::blob::Precision;
use dws_core::kernels::block::Dims;
use dws_core::plan::{
    Axis, Block, DwsLayer, Head, Linear, Map, Mlp, Op, Reduction, SetAxis, SetLayer, SetPooling,
};
use dws_core::quant::{LinearQ, LogitScale, MapQ, MlpQ, Quant, Requant};
use dws_core::validate::{block_dims, head_width};
use dws_core::{Model, Shape};

/// Most blocks a grid may have in x (grid-stride kernels are capped below it).
const MAX_GRID_X: u64 = (1 << 31) - 1;
/// Grid-stride kernels use at most this many blocks.
const MAX_STRIDE_BLOCKS: u64 = 1 << 20;

/// How a launch's grid grows with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// One thread per item, this many items per sample (grid-stride loop).
    Elems(u64),
    /// One block per item, this many items per sample.
    Blocks(u64),
    /// `linear_*` tiles: rows per sample, output columns.
    Tiles {
        /// Rows per sample.
        rows: u64,
        /// Output columns.
        cols: u64,
    },
}

impl Grid {
    /// The grid for a batch, or `None` when there is nothing to do.
    pub fn dims(self, batch: u64) -> Result<Option<(u32, u32, u32)>, Error> {
        let too_big = || Error::Unsupported(format!("grid too large for batch {batch}: {self:?}"));
        let d = match self {
            Grid::Elems(n) => {
                let items = batch.checked_mul(n).ok_or_else(too_big)?;
                if items == 0 {
                    return Ok(None);
                }
                (items.div_ceil(THREADS as u64).min(MAX_STRIDE_BLOCKS), 1, 1)
            }
            Grid::Blocks(n) => {
                let items = batch.checked_mul(n).ok_or_else(too_big)?;
                if items == 0 {
                    return Ok(None);
                }
                (items, 1, 1)
            }
            Grid::Tiles { rows, cols } => {
                let items = batch.checked_mul(rows).ok_or_else(too_big)?;
                if items == 0 || cols == 0 {
                    return Ok(None);
                }
                let t = LINEAR_TILE as u64;
                (items.div_ceil(t), cols.div_ceil(t), 1)
            }
        };
        if d.0 > MAX_GRID_X || d.1 > 65535 {
            return Err(too_big());
        }
        Ok(Some((d.0 as u32, d.1 as u32, d.2 as u32)))
    }
}

/// One kernel launch.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The kernel.
    pub kernel: Kernel,
    /// Its grid.
    pub grid: Grid,
    /// Dynamic shared memory in bytes.
    pub smem: u32,
    /// The argument struct (context patched at run time).
    pub args: RawArgs,
}

/// `Y[r, o] = sum_i X[r, i] W[o, i]` (f32, no bias) over `batch * rows` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemm {
    /// Location of X.
    pub x: u64,
    /// Elements from X's address to the first row of sample 0.
    pub x_off: u64,
    /// Elements between samples when `per_sample`.
    pub x_stride: u64,
    /// Parameter location of `W`, `[fout, fin]` row-major.
    pub w: u64,
    /// Location of Y, `[batch * rows, fout]` contiguous.
    pub y: u64,
    /// Rows per sample.
    pub rows: u64,
    /// Input width (X's row length, contiguous within a sample).
    pub fin: u32,
    /// Output width.
    pub fout: u32,
    /// X is a per-sample view into a larger buffer (a strided batched GEMM);
    /// otherwise X is contiguous `[batch * rows, fin]` (one GEMM).
    pub per_sample: bool,
}

/// One step of a program.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // steps live in one Vec, built once
pub enum Step {
    /// A kernel.
    Launch(Launch),
    /// An f32 GEMM (cuBLAS on the GPU).
    Gemm(Gemm),
}

/// A lowered plan.
#[derive(Debug, Clone)]
pub struct Program {
    /// f32, int8 or 16x8.
    pub precision: Precision,
    /// The launches, in order.
    pub steps: Vec<Step>,
    /// The device parameter image: the blob's parameter section, then derived
    /// arrays (concatenated Q/K/V weights, scatter tables, ...).
    pub params: Vec<u8>,
    /// Bytes of arena per sample.
    pub arena_per_sample: u64,
    /// Location of the f32 inputs, `[B, input_len]`.
    pub input: u64,
    /// Elements of one input.
    pub input_len: usize,
    /// Location of the f32 outputs, `[B, output_len]`.
    pub output: u64,
    /// Elements of one output.
    pub output_len: usize,
    /// Steps of each DWS layer (gathers, maps, scatters).
    pub layer_steps: Vec<usize>,
}

impl Program {
    /// Number of kernel launches and GEMMs per batch.
    pub fn launches(&self) -> usize {
        self.steps.len()
    }

    /// Arena bytes for a batch.
    pub fn arena_bytes(&self, batch: usize) -> u64 {
        self.arena_per_sample * batch as u64
    }
}

/// Choices of the lowering (the defaults are what the GPU runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// Always use the one-block-per-row attention kernels (normally only for
    /// sets whose scores do not fit in shared memory); for tests.
    pub row_attention: bool,
}

/// Lowers a validated model.
pub fn lower(model: &Model<'_>) -> Result<Program, Error> {
    lower_with(model, LowerOptions::default())
}

/// Lowers a validated model with explicit choices.
pub fn lower_with(model: &Model<'_>, options: LowerOptions) -> Result<Program, Error> {
    let ops = model.ops().collect::<Result<Vec<_>, _>>()?;
    // Pass 1 measures the Y store and work peaks; pass 2 places them.
    let first = Lowering::new(model, &ops, None, options)?.run()?;
    let (ys, _) = first.peaks;
    Lowering::new(model, &ops, Some(ys), options)?
        .run()
        .map(|d| d.program)
}

/// A bump allocator of per-sample bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Bump {
    top: u64,
    peak: u64,
}

impl Bump {
    fn alloc(&mut self, bytes: u64) -> u64 {
        let at = self.top.next_multiple_of(16);
        self.top = at + bytes;
        self.peak = self.peak.max(self.top);
        at
    }
}

/// The fixed arena regions.
#[derive(Debug, Clone, Copy)]
struct Regions {
    input: u64,
    x0: u64,
    act: [u64; 2],
    down: u64,
    up: u64,
    output: u64,
    end: u64,
}

/// An activation buffer: location and elements per sample.
#[derive(Debug, Clone, Copy)]
struct Act {
    loc: u64,
    stride: u64,
}

/// The input of a map: a contiguous `[B * rows, k]` matrix, or a per-sample
/// view (`k`-wide rows starting `off` elements into each sample's `stride`).
#[derive(Debug, Clone, Copy)]
enum XIn {
    Mat(u64),
    View { loc: u64, off: u64, stride: u64 },
}

/// Ops fused into the scatter that ends a DWS layer.
#[derive(Debug, Clone, Copy, Default)]
struct Post {
    /// f32: scale and shift refs; quantized: multiplier (int32) and offset
    /// (the mode's accumulator type) refs.
    affine: Option<(u64, u64)>,
    /// Quantized: the affine shift.
    shift: i32,
    relu: bool,
}

impl Post {
    /// Locations of tensor `t`'s `f` channels, whose offsets (the second
    /// array) are `off_bytes` long each (the first array's are 4).
    fn at(&self, t: usize, f: usize, off_bytes: u64) -> (u64, u64) {
        match self.affine {
            Some((a, b)) => {
                let i = (t * f) as u64;
                (a + 4 * i, b + off_bytes * i)
            }
            None => (NONE, NONE),
        }
    }
}

/// What `linear_*` does with each accumulator (`LINQ_*` in common.cuh).
#[derive(Debug, Clone, Copy)]
enum Epilogue<'q> {
    /// Requantized to activations (with a ReLU when `relu`).
    Out { q: &'q LinearQ, relu: bool },
    /// `sat(R(acc) - sub[row / n])`: DeepSets' Gamma minus the int32 Lambda of
    /// each group of `n` rows.
    Sub { q: &'q LinearQ, sub: u64, n: usize },
    /// Requantized, kept in int32 (Lambda).
    Req32(&'q LinearQ),
    /// f32 logits, `acc * scale[o]` (a per-tensor scale is repeated for
    /// every class in the parameter image).
    Logits(&'q LogitScale),
}

struct Done {
    program: Program,
    peaks: (u64, u64),
}

struct Lowering<'a, 'b> {
    model: &'a Model<'b>,
    options: LowerOptions,
    ops: &'a [Op],
    shape: Shape,
    /// The kernels of a quantized plan (`None`: f32).
    q: Option<&'static QuantKernels>,
    params: Vec<u8>,
    steps: Vec<Step>,
    regions: Regions,
    ys: Bump,
    wk: Bump,
    ys_base: u64,
    wk_base: u64,
    next_act: usize,
    layer_steps: Vec<usize>,
}

fn enc_red(r: Reduction) -> i32 {
    match r {
        Reduction::Max => 0,
        Reduction::Mean => 1,
        Reduction::Sum => 2,
    }
}

fn enc_set(s: SetAxis) -> i32 {
    match s {
        SetAxis::None => 0,
        SetAxis::Rows => 1,
        SetAxis::Cols => 2,
        SetAxis::Cells => 3,
    }
}

fn enc_axis(a: Axis) -> i32 {
    match a {
        Axis::None => 0,
        Axis::Rows => 1,
        Axis::Cols => 2,
    }
}

/// `POOL_ATTENTION` in common.cuh.
const POOL_ATTENTION: i32 = 3;

fn i32of(v: usize) -> Result<i32, Error> {
    i32::try_from(v).map_err(|_| Error::Unsupported(format!("dimension {v} exceeds 2^31")))
}

fn smem_check(bytes: usize, what: &str) -> Result<u32, Error> {
    if bytes > MAX_DYN_SMEM {
        return Err(Error::Unsupported(format!(
            "{what} needs {bytes} bytes of shared memory (limit {MAX_DYN_SMEM})"
        )));
    }
    Ok(bytes as u32)
}

fn bad(what: &'static str) -> Error {
    Error::Model(dws_core::Error::InvalidPlan(what))
}

impl<'a, 'b> Lowering<'a, 'b> {
    fn new(
        model: &'a Model<'b>,
        ops: &'a [Op],
        ys_size: Option<u64>,
        options: LowerOptions,
    ) -> Result<Self, Error> {
        let shape = model.shape();
        let q = QuantKernels::of(model.precision());
        let elem = q.map_or(4, |q| q.act_bytes);
        let cells = shape.total_cells() as u64;
        let (mut act, mut down, mut up) = (0u64, 0u64, 0u64);
        for op in ops {
            if let Op::Dws(l) = op {
                act = act.max(cells * l.fout as u64 * elem);
                if let Some(r) = &l.resample {
                    let inner = r.rows as u64 * shape.dim(1) as u64;
                    down = down.max(inner * l.fin as u64 * elem);
                    up = up.max(inner * l.fout as u64 * elem);
                }
            }
        }
        let input_len = model.input_len() as u64;
        let mut fixed = Bump::default();
        let input = fixed.alloc(4 * input_len);
        let x0 = fixed.alloc(input_len * elem);
        let act = [fixed.alloc(act), fixed.alloc(act)];
        let down = fixed.alloc(down);
        let up = fixed.alloc(up);
        let output = fixed.alloc(4 * model.output_len() as u64);
        let end = fixed.alloc(0);
        let ys_base = end;
        let wk_base = (end + ys_size.unwrap_or(0)).next_multiple_of(16);
        let mut params = model.param_bytes().to_vec();
        params.resize(params.len().next_multiple_of(16), 0);
        Ok(Lowering {
            model,
            options,
            ops,
            shape,
            q,
            params,
            steps: Vec::new(),
            regions: Regions {
                input,
                x0,
                act,
                down,
                up,
                output,
                end,
            },
            ys: Bump::default(),
            wk: Bump::default(),
            ys_base,
            wk_base,
            next_act: 0,
            layer_steps: Vec::new(),
        })
    }

    // ---- allocation --------------------------------------------------------

    fn y_alloc(&mut self, bytes: u64) -> u64 {
        self.ys_base + self.ys.alloc(bytes)
    }

    fn w_alloc(&mut self, bytes: u64) -> u64 {
        self.wk_base + self.wk.alloc(bytes)
    }

    /// Bytes of one activation.
    fn elem(&self) -> u64 {
        self.q.map_or(4, |q| q.act_bytes)
    }

    /// Bytes of one batch-norm offset (f32: shift; quantized: the accumulator type).
    fn off_bytes(&self) -> u64 {
        self.q.map_or(4, |q| q.acc_bytes)
    }

    /// A parameter reference of the blob as a location.
    fn param(&self, r: dws_core::plan::ParamRef) -> u64 {
        let bytes = if self.q.is_some() {
            r.offset as u64
        } else {
            4 * r.offset as u64
        };
        PARAM_BIT | bytes
    }

    fn opt_param(&self, r: Option<dws_core::plan::ParamRef>) -> u64 {
        r.map_or(NONE, |r| self.param(r))
    }

    /// Appends a derived array to the parameter image.
    fn push<T: bytemuck::Pod>(&mut self, values: &[T]) -> u64 {
        let at = self.params.len();
        self.params.extend_from_slice(bytemuck::cast_slice(values));
        self.params
            .resize(self.params.len().next_multiple_of(16), 0);
        PARAM_BIT | at as u64
    }

    fn launch<T: bytemuck::Pod>(&mut self, kernel: Kernel, grid: Grid, smem: u32, args: &T) {
        self.steps.push(Step::Launch(Launch {
            kernel,
            grid,
            smem,
            args: RawArgs::new(args),
        }));
    }

    /// Tensor boundaries in entries (`scale = 1`) or elements (`scale = F`).
    fn bounds(&mut self, scale: usize) -> u64 {
        let mut b = vec![0i32];
        let mut acc = 0usize;
        for t in 0..self.shape.tensors() {
            acc += self.shape.cells(t) * scale;
            b.push(acc as i32);
        }
        self.push(&b)
    }

    /// Most heads per pass of the one-block-per-set attention kernel whose
    /// shared memory fits (a divisor of `heads`), or `None` for the per-row
    /// kernel.
    fn heads_per_pass(&self, heads: usize, smem: impl Fn(usize) -> usize) -> Option<usize> {
        if self.options.row_attention {
            return None;
        }
        (1..=heads)
            .rev()
            .find(|&hp| heads.is_multiple_of(hp) && smem(hp) <= MAX_DYN_SMEM)
    }

    // ---- the walk ---------------------------------------------------------

    fn run(mut self) -> Result<Done, Error> {
        match self.q {
            Some(q) => self.walk_q(q)?,
            None => self.walk32()?,
        }
        let output_len = self.model.output_len();
        let program = Program {
            precision: self.model.precision(),
            steps: self.steps,
            params: self.params,
            arena_per_sample: (self.wk_base + self.wk.peak).next_multiple_of(16),
            input: self.regions.input,
            input_len: self.model.input_len(),
            output: self.regions.output,
            output_len,
            layer_steps: self.layer_steps,
        };
        let _ = self.regions.end;
        Ok(Done {
            program,
            peaks: (self.ys.peak, self.wk.peak),
        })
    }

    fn next_act(&mut self, stride: u64) -> Act {
        let a = Act {
            loc: self.regions.act[self.next_act],
            stride,
        };
        self.next_act ^= 1;
        a
    }

    /// The blocks of a DWS layer at `ops[i]` (f32 plans: consecutive).
    fn blocks32(&self, i: usize, l: &DwsLayer) -> Result<Vec<Block>, Error> {
        let mut out = Vec::new();
        for k in 0..l.blocks as usize {
            match self.ops.get(i + 1 + k) {
                Some(Op::Block(b)) => out.push(b.clone()),
                _ => return Err(bad("DWS layer has fewer blocks than announced")),
            }
        }
        Ok(out)
    }

    fn walk32(&mut self) -> Result<(), Error> {
        let ops = self.ops;
        let input_len = self.model.input_len() as u64;
        let mut cur = Act {
            loc: self.regions.input,
            stride: input_len,
        };
        let mut x0 = cur;
        let mut feats = self.model.spec().input_features as usize;
        let cells = self.shape.total_cells();
        let mut i = 0;
        while i < ops.len() {
            match &ops[i] {
                Op::Normalize { mean, std } => {
                    let args = NormArgs {
                        ctx: Ctx::default(),
                        x: self.regions.input,
                        mean: self.param(*mean),
                        std: self.param(*std),
                        out: self.regions.x0,
                        len: input_len as i64,
                    };
                    self.launch(Kernel::NormalizeF32, Grid::Elems(input_len), 0, &args);
                    x0 = Act {
                        loc: self.regions.x0,
                        stride: input_len,
                    };
                    cur = x0;
                }
                Op::Dws(l) => {
                    let blocks = self.blocks32(i, l)?;
                    i += blocks.len();
                    let mut post = Post::default();
                    if let Some(Op::Affine { scale, shift }) = ops.get(i + 1) {
                        post.affine = Some((self.param(*scale), self.param(*shift)));
                        i += 1;
                    }
                    if let Some(Op::Relu) = ops.get(i + 1) {
                        post.relu = true;
                        i += 1;
                    }
                    let before = self.steps.len();
                    cur = self.layer32(l, &blocks, cur, post)?;
                    self.layer_steps.push(self.steps.len() - before);
                    feats = l.fout as usize;
                }
                Op::Affine { scale, shift } => {
                    let relu = matches!(ops.get(i + 1), Some(Op::Relu));
                    let (scale, shift) = (self.param(*scale), self.param(*shift));
                    self.affine(cur, feats, Some((scale, shift)), 0, relu)?;
                    i += relu as usize;
                }
                Op::Relu => self.affine(cur, feats, None, 0, true)?,
                Op::InputSkip(l) => {
                    let bounds = self.bounds(1);
                    let args = SkipArgs {
                        ctx: Ctx::default(),
                        x0: x0.loc,
                        x: cur.loc,
                        w: self.param(l.weight),
                        bias: self.opt_param(l.bias),
                        bounds,
                        cur: NONE,
                        lin: NONE,
                        x0_stride: x0.stride as i64,
                        x_stride: cur.stride as i64,
                        cells_total: i32of(cells)?,
                        fin: l.fin as i32,
                        fout: l.fout as i32,
                        ntensors: self.shape.tensors() as i32,
                    };
                    let per = (cells * l.fout as usize) as u64;
                    self.launch(Kernel::InputSkipF32, Grid::Elems(per), 0, &args);
                }
                Op::Head(h) => {
                    self.head32(h, cur, feats)?;
                    return Ok(());
                }
                Op::Block(_) => return Err(bad("block outside a DWS layer")),
                Op::Quant(_) => return Err(bad("quantization record in an f32 plan")),
            }
            i += 1;
        }
        // A weight-space output: the last activation buffer is contiguous
        // [B, cells * F]; copy it into the output region.
        self.regions.output = cur.loc;
        if cur.stride as usize != self.model.output_len() {
            return Err(bad("output length differs from the last activations"));
        }
        Ok(())
    }

    fn affine(
        &mut self,
        cur: Act,
        f: usize,
        affine: Option<(u64, u64)>,
        shift: i32,
        relu: bool,
    ) -> Result<(), Error> {
        let cells = self.shape.total_cells();
        let bounds = self.bounds(1);
        let (scale, sh) = affine.unwrap_or((NONE, NONE));
        let args = AffineArgs {
            ctx: Ctx::default(),
            x: cur.loc,
            scale,
            shift: sh,
            bounds,
            stride: cur.stride as i64,
            cells_total: i32of(cells)?,
            f: f as i32,
            ntensors: self.shape.tensors() as i32,
            relu: relu as i32,
            has_affine: affine.is_some() as i32,
            shift_bits: shift,
        };
        let k = self.q.map_or(Kernel::AffineReluF32, |q| q.affine_relu);
        self.launch(k, Grid::Elems((cells * f) as u64), 0, &args);
        Ok(())
    }

    /// Where a block reads its source tensor: (location, stride, offset).
    fn source(&self, b: &Block, src: Act, fin: usize, resampled: Option<u64>) -> (u64, u64, u64) {
        match resampled {
            Some(down_stride) if b.src == 0 => (self.regions.down, down_stride, 0),
            _ => (
                src.loc,
                src.stride,
                self.shape.offset(b.src as usize, fin) as u64,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn gather(
        &mut self,
        b: &Block,
        d: &Dims,
        red: Reduction,
        src: (u64, u64, u64),
        fin: usize,
        req: Req,
    ) -> Result<u64, Error> {
        let x = self.w_alloc((d.n * d.k) as u64 * self.elem());
        let args = GatherArgs {
            ctx: Ctx::default(),
            src: src.0,
            out: x,
            src_stride: src.1 as i64,
            src_off: src.2 as i64,
            rows: i32of(d.src.0)?,
            cols: i32of(d.src.1)?,
            f: fin as i32,
            n: i32of(d.n)?,
            m: i32of(d.k / fin)?,
            pool_rows: b.pool.rows as i32,
            pool_cols: b.pool.cols as i32,
            set_axis: enc_set(b.set_axis),
            fold: enc_axis(b.fold),
            red: enc_red(red),
            req,
        };
        let k = self.q.map_or(Kernel::GatherF32, |q| q.gather);
        self.launch(k, Grid::Elems((d.n * d.k) as u64), 0, &args);
        Ok(x)
    }

    // ---- f32 ----------------------------------------------------------------

    /// Where the scatter of destination tensor `t` (a `rows x cols` grid of `fout`
    /// features) writes: `(buffer, per-sample stride, offset, fused affine
    /// refs, relu)`. A down-sampled layer's `W_0` goes to the up-sampling
    /// region, without the post-ops (they follow the up-sampling).
    fn scatter_target(
        &self,
        t: usize,
        (rows, cols): (usize, usize),
        fout: usize,
        down_sampled: bool,
        dst: Act,
        post: &Post,
    ) -> (u64, i64, i64, (u64, u64), bool) {
        if down_sampled && t == 0 {
            (
                self.regions.up,
                (rows * cols * fout) as i64,
                0,
                (NONE, NONE),
                false,
            )
        } else {
            (
                dst.loc,
                dst.stride as i64,
                self.shape.offset(t, fout) as i64,
                post.at(t, fout, self.off_bytes()),
                post.relu,
            )
        }
    }

    fn layer32(
        &mut self,
        l: &DwsLayer,
        blocks: &[Block],
        src: Act,
        post: Post,
    ) -> Result<Act, Error> {
        let shape = self.shape;
        let (fin, fout) = (l.fin as usize, l.fout as usize);
        let cells = shape.total_cells();
        let dst = self.next_act((cells * fout) as u64);
        let (d0, d1) = (shape.dim(0), shape.dim(1));
        self.ys = Bump { top: 0, ..self.ys };
        let mut skip = MapOut::none();
        let (inner, down_stride) = match &l.resample {
            Some(r) => {
                let ds = r.rows as usize;
                self.wk = Bump { top: 0, ..self.wk };
                let x = XIn::View {
                    loc: src.loc,
                    off: 0,
                    stride: src.stride,
                };
                skip = self.mlp32(&r.skip, x, (d0 * d1) as u64, fin)?;
                self.wk = Bump { top: 0, ..self.wk };
                let mo = self.resample_in32(&r.down, src, d0, d1, fin)?;
                let args = ResScatterArgs {
                    ctx: Ctx::default(),
                    mo,
                    skip: MapOut::none(),
                    out: self.regions.down,
                    affine_scale: NONE,
                    affine_shift: NONE,
                    out_stride: (ds * d1 * fin) as i64,
                    dout: ds as i32,
                    d1: d1 as i32,
                    f: fin as i32,
                    combine: 0,
                    relu: 0,
                    pad: 0,
                };
                let per = (ds * d1 * fin) as u64;
                self.launch(Kernel::ResampleScatterF32, Grid::Elems(per), 0, &args);
                (shape.with_w0_rows(ds), Some((ds * d1 * fin) as u64))
            }
            None => (shape, None),
        };
        let mut contribs: Vec<Vec<Contrib>> = vec![Vec::new(); shape.tensors()];
        for b in blocks {
            let d = block_dims(b, &inner, fin, fout)?;
            self.wk = Bump { top: 0, ..self.wk };
            let source = self.source(b, src, fin, down_stride);
            let view = matches!(b.map, Map::Mlp(_))
                && b.set_axis == SetAxis::Cells
                && b.fold == Axis::None
                && !b.pool.rows
                && !b.pool.cols;
            let x = if view {
                XIn::View {
                    loc: source.0,
                    off: source.2,
                    stride: source.1,
                }
            } else {
                XIn::Mat(self.gather(b, &d, l.reduction, source, fin, Req::default())?)
            };
            let mo = match &b.map {
                Map::Mlp(m) => self.mlp32(m, x, d.n as u64, d.k)?,
                Map::Set(s) => {
                    let XIn::Mat(x) = x else {
                        unreachable!("set layers always gather")
                    };
                    self.set32(s, x, 1, d.n, d.k)?
                }
            };
            contribs[b.dst as usize].push(Contrib {
                mo,
                n: i32of(d.n)?,
                m: i32of(d.kout / fout)?,
                place: enc_set(b.place),
                unfold: enc_axis(b.unfold),
                scale: b.scale,
                pad: 0,
            });
        }
        for (t, cs) in contribs.iter().enumerate() {
            let table = self.push(cs);
            let (rows, cols) = inner.grid(t);
            let (out, stride, off, (sc, sh), relu) =
                self.scatter_target(t, (rows, cols), fout, down_stride.is_some(), dst, &post);
            let args = ScatterArgs {
                ctx: Ctx::default(),
                out,
                contribs: table,
                affine_scale: sc,
                affine_shift: sh,
                out_stride: stride,
                out_off: off,
                rows: i32of(rows)?,
                cols: i32of(cols)?,
                f: fout as i32,
                ncontrib: cs.len() as i32,
                relu: relu as i32,
                pad: 0,
            };
            let per = (rows * cols * fout) as u64;
            self.launch(Kernel::ScatterF32, Grid::Elems(per), 0, &args);
        }
        if let Some(r) = &l.resample {
            let ds = r.rows as usize;
            self.wk = Bump { top: 0, ..self.wk };
            let up = Act {
                loc: self.regions.up,
                stride: (ds * d1 * fout) as u64,
            };
            let mo = self.resample_in32(&r.up, up, ds, d1, fout)?;
            let (sc, sh) = post.at(0, fout, 4);
            let args = ResScatterArgs {
                ctx: Ctx::default(),
                mo,
                skip,
                out: dst.loc,
                affine_scale: sc,
                affine_shift: sh,
                out_stride: dst.stride as i64,
                dout: d0 as i32,
                d1: d1 as i32,
                f: fout as i32,
                combine: 1,
                relu: post.relu as i32,
                pad: 0,
            };
            let per = (d0 * d1 * fout) as u64;
            self.launch(Kernel::ResampleScatterF32, Grid::Elems(per), 0, &args);
        }
        Ok(dst)
    }

    /// The per-feature set layer of a resampling over `W_0` (`din` rows).
    fn resample_in32(
        &mut self,
        s: &SetLayer,
        src: Act,
        din: usize,
        d1: usize,
        f: usize,
    ) -> Result<MapOut, Error> {
        let x = self.w_alloc((f * d1 * din * 4) as u64);
        let args = ResGatherArgs {
            ctx: Ctx::default(),
            src: src.loc,
            out: x,
            src_stride: src.stride as i64,
            din: din as i32,
            d1: d1 as i32,
            f: f as i32,
            pad: 0,
        };
        let per = (f * d1 * din) as u64;
        self.launch(Kernel::ResampleGatherF32, Grid::Elems(per), 0, &args);
        self.set32(s, x, f, d1, din)
    }

    fn gemm(&mut self, x: XIn, rows: u64, l: &Linear, w: u64, y: u64) {
        let (loc, off, stride, per_sample) = match x {
            XIn::Mat(loc) => (loc, 0, 0, false),
            XIn::View { loc, off, stride } => (loc, off, stride, true),
        };
        self.steps.push(Step::Gemm(Gemm {
            x: loc,
            x_off: off,
            x_stride: stride,
            w,
            y,
            rows,
            fin: l.fin,
            fout: l.fout,
            per_sample,
        }));
    }

    fn bias_act(&mut self, y: u64, bias: u64, rows: u64, cols: u32, relu: bool) {
        let args = BiasActArgs {
            ctx: Ctx::default(),
            y,
            bias,
            rows_per_sample: rows as i64,
            cols: cols as i32,
            relu: relu as i32,
        };
        self.launch(
            Kernel::BiasActF32,
            Grid::Elems(rows * cols as u64),
            0,
            &args,
        );
    }

    /// An MLP on `rows` rows per sample; the last layer's output goes to the
    /// Y store with its bias left to the consumer.
    fn mlp32(&mut self, m: &Mlp, x: XIn, rows: u64, _fin: usize) -> Result<MapOut, Error> {
        let n = m.layers.len();
        let mut h = x;
        let mut out = NONE;
        for (k, l) in m.layers.iter().enumerate() {
            let bytes = rows * l.fout as u64 * 4;
            out = if k + 1 == n {
                self.y_alloc(bytes)
            } else {
                self.w_alloc(bytes)
            };
            self.gemm(h, rows, l, self.param(l.weight), out);
            if k + 1 < n {
                self.bias_act(out, self.opt_param(l.bias), rows, l.fout, true);
            }
            h = XIn::Mat(out);
        }
        let last = m.layers.last().ok_or(bad("empty MLP"))?;
        let mut mo = MapOut::plain(out, last.fout as usize);
        mo.bias = self.opt_param(last.bias);
        Ok(mo)
    }

    /// An MLP whose output is final (bias applied) in the Y store.
    fn mlp32_final(&mut self, m: &Mlp, x: XIn, rows: u64) -> Result<u64, Error> {
        let mo = self.mlp32(m, x, rows, 0)?;
        if mo.bias != NONE {
            self.bias_act(mo.y, mo.bias, rows, mo.ld as u32, false);
        }
        Ok(mo.y)
    }

    /// A set layer over `groups` groups of `n` rows (per sample) of width `k`.
    fn set32(
        &mut self,
        s: &SetLayer,
        x: u64,
        groups: usize,
        n: usize,
        k: usize,
    ) -> Result<MapOut, Error> {
        let rows = (groups * n) as u64;
        match s {
            SetLayer::DeepSets {
                gamma,
                lambda,
                pooling,
            } => {
                let p = self.w_alloc((groups * k * 4) as u64);
                let (mode, query, smem) = match pooling {
                    SetPooling::Reduce(r) => (enc_red(*r), NONE, 0),
                    SetPooling::Attention { query } => (
                        POOL_ATTENTION,
                        self.param(*query),
                        smem_check(4 * n, "attention pooling")?,
                    ),
                };
                let args = SetPoolArgs {
                    ctx: Ctx::default(),
                    x,
                    out: p,
                    query,
                    groups_per_sample: groups as i64,
                    n: i32of(n)?,
                    k: i32of(k)?,
                    mode,
                    pad: 0,
                    pooled: Req::default(),
                    score: Req::default(),
                };
                self.launch(Kernel::SetPoolF32, Grid::Blocks(groups as u64), smem, &args);
                let lam = self.mlp32_final(lambda, XIn::Mat(p), groups as u64)?;
                let mut mo = self.mlp32(gamma, XIn::Mat(x), rows, k)?;
                mo.sub = lam;
                mo.n = i32of(n)?;
                Ok(mo)
            }
            SetLayer::Attention {
                heads,
                fc_q,
                fc_k,
                fc_v,
                fc_o,
            } => {
                let dv = fc_q.fout as usize;
                let (w, bias) = self.qkv32(fc_q, fc_k, fc_v);
                let qkv = self.w_alloc(rows * 3 * dv as u64 * 4);
                let cat = Linear {
                    fin: fc_q.fin,
                    fout: 3 * fc_q.fout,
                    weight: fc_q.weight,
                    bias: None,
                };
                self.gemm(XIn::Mat(x), rows, &cat, w, qkv);
                let o = self.y_alloc(rows * dv as u64 * 4);
                let mut args = AttnArgs {
                    ctx: Ctx::default(),
                    qkv,
                    bias,
                    out: o,
                    rows_per_sample: rows as i64,
                    n: i32of(n)?,
                    dv: dv as i32,
                    heads: *heads as i32,
                    heads_per_pass: 1,
                };
                let set_smem = |hp: usize| 4 * (3 * n * dv + hp * n * n);
                match self.heads_per_pass(*heads as usize, set_smem) {
                    Some(hp) => {
                        args.heads_per_pass = hp as i32;
                        let smem = set_smem(hp) as u32;
                        let grid = Grid::Blocks(groups as u64);
                        self.launch(Kernel::AttentionSetF32, grid, smem, &args);
                    }
                    None => {
                        let smem = smem_check(4 * (n + dv), "set attention")?;
                        self.launch(Kernel::AttentionF32, Grid::Blocks(rows), smem, &args);
                    }
                }
                let t = self.y_alloc(rows * dv as u64 * 4);
                self.gemm(XIn::Mat(o), rows, fc_o, self.param(fc_o.weight), t);
                let mut mo = MapOut::plain(t, dv);
                mo.bias = self.opt_param(fc_o.bias);
                mo.relu = 1;
                mo.resid = o;
                Ok(mo)
            }
        }
    }

    /// `[W_q; W_k; W_v]` (`[3 dv, k]`) and `[b_q; b_k; b_v]` (zeros for a
    /// missing bias) in the parameter image.
    fn qkv32(&mut self, q: &Linear, k: &Linear, v: &Linear) -> (u64, u64) {
        let p = self.model.params();
        let get = |r: dws_core::plan::ParamRef| &p[r.offset as usize..(r.offset + r.len) as usize];
        let mut w = Vec::new();
        let mut b = Vec::new();
        for l in [q, k, v] {
            w.extend_from_slice(get(l.weight));
            match l.bias {
                Some(r) => b.extend_from_slice(get(r)),
                None => b.extend(std::iter::repeat_n(0f32, l.fout as usize)),
            }
        }
        (self.push(&w), self.push(&b))
    }

    /// The invariant head's pooled segments (see [`dws_core::plan::Head`]).
    fn head_groups(&self, f: usize) -> Vec<HeadGroup> {
        let s = &self.shape;
        let l = s.layers();
        let mut g = Vec::new();
        let mut seg = 0;
        let mut push = |start: usize, count: usize, stride: usize, seg: i32| {
            g.push(HeadGroup {
                start: start as i32,
                count: count as i32,
                stride: stride as i32,
                seg,
            })
        };
        for t in 1..l - 1 {
            push(s.offset(t, f), s.cells(t), f, seg);
            seg += 1;
        }
        let (d0, d1) = s.grid(0);
        for r in 0..d0 {
            push(s.offset(0, f) + r * d1 * f, d1, f, seg);
        }
        seg += 1;
        let (dl1, dl) = s.grid(l - 1);
        for c in 0..dl {
            push(s.offset(l - 1, f) + c * f, dl1, dl * f, seg);
        }
        seg += 1;
        for i in 0..l - 1 {
            push(s.offset(l + i, f), s.cells(l + i), f, seg);
            seg += 1;
        }
        for e in 0..s.cells(2 * l - 1) {
            push(s.offset(2 * l - 1, f) + e * f, 1, f, seg);
        }
        g
    }

    fn head32(&mut self, h: &Head, cur: Act, f: usize) -> Result<(), Error> {
        let groups = self.head_groups(f);
        let width = groups.len() * f;
        debug_assert_eq!(width, head_width(&self.shape, f));
        self.wk = Bump { top: 0, ..self.wk };
        let v = self.w_alloc(width as u64 * 4);
        let table = self.push(&groups);
        let args = HeadPoolArgs {
            ctx: Ctx::default(),
            x: cur.loc,
            groups: table,
            reqs: NONE,
            out: v,
            x_stride: cur.stride as i64,
            f: f as i32,
            ngroups: i32of(groups.len())?,
            red: enc_red(h.reduction),
            pad: 0,
        };
        self.launch(Kernel::HeadPoolF32, Grid::Elems(width as u64), 0, &args);
        let n = h.mlp.layers.len();
        let mut x = v;
        for (k, l) in h.mlp.layers.iter().enumerate() {
            let last = k + 1 == n;
            let out = if last {
                self.regions.output
            } else {
                self.w_alloc(l.fout as u64 * 4)
            };
            self.gemm(XIn::Mat(x), 1, l, self.param(l.weight), out);
            if !last || l.bias.is_some() {
                self.bias_act(out, self.opt_param(l.bias), 1, l.fout, !last);
            }
            x = out;
        }
        Ok(())
    }

    // ---- quantized (int8, 16x8) ----------------------------------------------

    fn quant_at(&self, i: usize) -> Result<&'a Quant, Error> {
        match self.ops.get(i) {
            Some(Op::Quant(q)) => Ok(q),
            _ => Err(bad("quantized plan lacks a quantization record")),
        }
    }

    fn walk_q(&mut self, qk: &'static QuantKernels) -> Result<(), Error> {
        let ops = self.ops;
        let input_len = self.model.input_len() as u64;
        let mut i = 0;
        let mut norm = (NONE, NONE);
        if let Some(Op::Normalize { mean, std }) = ops.first() {
            norm = (self.param(*mean), self.param(*std));
            i = 1;
        }
        let Some(Op::Quant(Quant::Input { scales })) = ops.get(i) else {
            return Err(bad("quantized plan must start with the input scales"));
        };
        let f_in = self.model.spec().input_features as usize;
        let scales = self.push(scales.as_slice());
        let bounds = self.bounds(f_in);
        let args = QuantArgs {
            ctx: Ctx::default(),
            x: self.regions.input,
            mean: norm.0,
            std: norm.1,
            scales,
            bounds,
            out: self.regions.x0,
            len: input_len as i64,
            ntensors: self.shape.tensors() as i32,
            pad: 0,
        };
        self.launch(qk.quantize, Grid::Elems(input_len), 0, &args);
        let x0 = Act {
            loc: self.regions.x0,
            stride: input_len,
        };
        let mut cur = x0;
        let mut feats = f_in;
        let cells = self.shape.total_cells();
        i += 1;
        while i < ops.len() {
            match &ops[i] {
                Op::Dws(l) => {
                    let Quant::Layer { out, resample } = self.quant_at(i + 1)? else {
                        return Err(bad("DWS layer without its quantization"));
                    };
                    i += 1;
                    let mut blocks = Vec::new();
                    for _ in 0..l.blocks {
                        let Some(Op::Block(b)) = ops.get(i + 1) else {
                            return Err(bad("DWS layer has fewer blocks than announced"));
                        };
                        let Quant::Block(q) = self.quant_at(i + 2)? else {
                            return Err(bad("block without its quantization"));
                        };
                        blocks.push((b.clone(), q.clone()));
                        i += 2;
                    }
                    let mut post = Post::default();
                    if let Some(Op::Affine { scale, shift }) = ops.get(i + 1) {
                        let Quant::Affine { shift: bits } = self.quant_at(i + 2)? else {
                            return Err(bad("affine without its quantization"));
                        };
                        post.affine = Some((self.param(*scale), self.param(*shift)));
                        post.shift = *bits as i32;
                        i += 2;
                    }
                    if let Some(Op::Relu) = ops.get(i + 1) {
                        post.relu = true;
                        i += 1;
                    }
                    let before = self.steps.len();
                    let rq = resample.as_ref();
                    cur = self.layer_q(qk, l, out, rq, &blocks, cur, post)?;
                    self.layer_steps.push(self.steps.len() - before);
                    feats = l.fout as usize;
                }
                Op::Affine { scale, shift } => {
                    let Quant::Affine { shift: bits } = self.quant_at(i + 1)? else {
                        return Err(bad("affine without its quantization"));
                    };
                    i += 1;
                    let relu = matches!(ops.get(i + 1), Some(Op::Relu));
                    let (a, b) = (self.param(*scale), self.param(*shift));
                    self.affine(cur, feats, Some((a, b)), *bits as i32, relu)?;
                    i += relu as usize;
                }
                Op::Relu => self.affine(cur, feats, None, 0, true)?,
                Op::InputSkip(l) => {
                    let Quant::Skip { cur: rc, lin } = self.quant_at(i + 1)? else {
                        return Err(bad("skip without its quantization"));
                    };
                    i += 1;
                    let bounds = self.bounds(1);
                    let rc: Vec<Req> = rc.iter().map(|r| Req::from(*r)).collect();
                    let lin: Vec<Req> = lin.iter().map(|r| Req::from(*r)).collect();
                    let (rc, lin) = (self.push(&rc), self.push(&lin));
                    let args = SkipArgs {
                        ctx: Ctx::default(),
                        x0: x0.loc,
                        x: cur.loc,
                        w: self.param(l.weight),
                        bias: self.opt_param(l.bias),
                        bounds,
                        cur: rc,
                        lin,
                        x0_stride: x0.stride as i64,
                        x_stride: cur.stride as i64,
                        cells_total: i32of(cells)?,
                        fin: l.fin as i32,
                        fout: l.fout as i32,
                        ntensors: self.shape.tensors() as i32,
                    };
                    let per = (cells * l.fout as usize) as u64;
                    self.launch(qk.input_skip, Grid::Elems(per), 0, &args);
                }
                Op::Head(h) => {
                    let Quant::Head {
                        pooled,
                        mlp,
                        logit_scale,
                    } = self.quant_at(i + 1)?
                    else {
                        return Err(bad("head without its quantization"));
                    };
                    return self.head_q(qk, h, pooled, mlp, logit_scale, cur, feats);
                }
                Op::Quant(Quant::Output { scales }) => {
                    let scales = self.push(scales.as_slice());
                    let bounds = self.bounds(feats);
                    let len = (cells * feats) as u64;
                    let args = DequantArgs {
                        ctx: Ctx::default(),
                        x: cur.loc,
                        scales,
                        bounds,
                        out: self.regions.output,
                        x_stride: cur.stride as i64,
                        len: len as i64,
                        ntensors: self.shape.tensors() as i32,
                        pad: 0,
                    };
                    self.launch(qk.dequant, Grid::Elems(len), 0, &args);
                    return Ok(());
                }
                Op::Normalize { .. } => return Err(bad("normalization must come first")),
                Op::Block(_) => return Err(bad("block outside a DWS layer")),
                Op::Quant(_) => return Err(bad("unexpected quantization record")),
            }
            i += 1;
        }
        Err(bad("quantized plan does not end with its output"))
    }

    /// A linear layer's requantization as the kernels read it: the common
    /// multiplier (its `m` unused where there is one mantissa per output) and
    /// the location of the per-output mantissas (or none).
    fn lin_req(&self, q: &LinearQ) -> (Req, u64) {
        match *q {
            LinearQ::Tensor(r) => (r.into(), NONE),
            LinearQ::Channel { m, shift } => (
                Req {
                    m: 0,
                    shift: shift as i32,
                },
                self.param(m),
            ),
        }
    }

    /// One `linear_*` launch over `rows` rows per sample of `x` into `y`.
    fn linear_q(
        &mut self,
        qk: &QuantKernels,
        l: &Linear,
        x: u64,
        rows: u64,
        y: u64,
        epilogue: Epilogue<'_>,
    ) -> Result<(), Error> {
        let mut args = LinearQArgs {
            ctx: Ctx::default(),
            x,
            w: self.param(l.weight),
            bias: self.opt_param(l.bias),
            y,
            sub: NONE,
            req_m: NONE,
            logit_scales: NONE,
            rows_per_sample: rows as i64,
            fin: l.fin as i32,
            fout: l.fout as i32,
            req: Req::default(),
            mode: LINQ_OUT,
            relu: 0,
            sub_n: 1,
            pad: 0,
        };
        let q = match epilogue {
            Epilogue::Out { q, relu } => {
                args.relu = relu as i32;
                Some(q)
            }
            Epilogue::Sub { q, sub, n } => {
                args.mode = LINQ_SUB;
                args.sub = sub;
                args.sub_n = i32of(n.max(1))?;
                Some(q)
            }
            Epilogue::Req32(q) => {
                args.mode = LINQ_REQ32;
                Some(q)
            }
            Epilogue::Logits(s) => {
                args.mode = LINQ_LOGITS;
                args.logit_scales = match *s {
                    LogitScale::Tensor(v) => self.push(&vec![v; l.fout as usize]),
                    LogitScale::Channel(r) => self.param(r),
                };
                None
            }
        };
        if let Some(q) = q {
            (args.req, args.req_m) = self.lin_req(q);
        }
        let grid = Grid::Tiles {
            rows,
            cols: l.fout as u64,
        };
        self.launch(qk.linear, grid, 0, &args);
        Ok(())
    }

    /// Hidden layers of an MLP (ReLU); returns the last layer's input.
    fn hidden_q(
        &mut self,
        qk: &QuantKernels,
        m: &Mlp,
        q: &MlpQ,
        x: u64,
        rows: u64,
    ) -> Result<u64, Error> {
        let n = m.layers.len();
        if q.layers.len() != n {
            return Err(bad("MLP quantization does not match the MLP"));
        }
        let mut h = x;
        for (l, q) in m.layers.iter().zip(&q.layers).take(n.saturating_sub(1)) {
            let out = self.w_alloc(rows * l.fout as u64 * qk.act_bytes);
            self.linear_q(qk, l, h, rows, out, Epilogue::Out { q, relu: true })?;
            h = out;
        }
        Ok(h)
    }

    /// The last layer of an MLP (after [`Lowering::hidden_q`]).
    fn last_q<'m>(m: &'m Mlp, q: &'m MlpQ) -> Result<(&'m Linear, &'m LinearQ), Error> {
        match (m.layers.last(), q.layers.last()) {
            (Some(l), Some(q)) => Ok((l, q)),
            _ => Err(bad("empty MLP")),
        }
    }

    /// A whole MLP into the Y store.
    fn mlp_q(
        &mut self,
        qk: &QuantKernels,
        m: &Mlp,
        q: &MlpQ,
        x: u64,
        rows: u64,
    ) -> Result<u64, Error> {
        let h = self.hidden_q(qk, m, q, x, rows)?;
        let (last, lq) = Self::last_q(m, q)?;
        let y = self.y_alloc(rows * last.fout as u64 * qk.act_bytes);
        let out = Epilogue::Out { q: lq, relu: false };
        self.linear_q(qk, last, h, rows, y, out)?;
        Ok(y)
    }

    /// A set layer over `groups` groups of `n` rows of width `k`.
    #[allow(clippy::too_many_arguments)]
    fn set_q(
        &mut self,
        qk: &QuantKernels,
        s: &SetLayer,
        q: &MapQ,
        x: u64,
        groups: usize,
        n: usize,
        k: usize,
    ) -> Result<u64, Error> {
        let rows = (groups * n) as u64;
        let (act, acc) = (qk.act_bytes as usize, qk.acc_bytes as usize);
        match (s, q) {
            (
                SetLayer::DeepSets {
                    gamma,
                    lambda,
                    pooling,
                },
                MapQ::DeepSets {
                    gamma: gq,
                    pooled,
                    score,
                    lambda: lq,
                },
            ) => {
                let p = self.w_alloc((groups * k * act) as u64);
                let (mode, query, smem) = match pooling {
                    SetPooling::Reduce(r) => (enc_red(*r), NONE, 0),
                    SetPooling::Attention { query } => (
                        POOL_ATTENTION,
                        self.param(*query),
                        smem_check((acc + 4) * n, "attention pooling")?,
                    ),
                };
                let args = SetPoolArgs {
                    ctx: Ctx::default(),
                    x,
                    out: p,
                    query,
                    groups_per_sample: groups as i64,
                    n: i32of(n)?,
                    k: i32of(k)?,
                    mode,
                    pad: 0,
                    pooled: Req::from(*pooled),
                    score: Req::from(*score),
                };
                self.launch(qk.set_pool, Grid::Blocks(groups as u64), smem, &args);
                let g = groups as u64;
                let lh = self.hidden_q(qk, lambda, lq, p, g)?;
                let (ll, llq) = Self::last_q(lambda, lq)?;
                let lam = self.w_alloc(g * ll.fout as u64 * 4);
                self.linear_q(qk, ll, lh, g, lam, Epilogue::Req32(llq))?;
                let gh = self.hidden_q(qk, gamma, gq, x, rows)?;
                let (gl, glq) = Self::last_q(gamma, gq)?;
                let y = self.y_alloc(rows * gl.fout as u64 * qk.act_bytes);
                let sub = Epilogue::Sub {
                    q: glq,
                    sub: lam,
                    n,
                };
                self.linear_q(qk, gl, gh, rows, y, sub)?;
                Ok(y)
            }
            (
                SetLayer::Attention {
                    heads,
                    fc_q,
                    fc_k,
                    fc_v,
                    fc_o,
                },
                MapQ::Attention {
                    q: rq,
                    k: rk,
                    v: rv,
                    score,
                    o_q,
                    o_av,
                    y_o,
                    y_fc,
                },
            ) => {
                let dv = fc_o.fout as usize;
                let mut qkv = [NONE; 3];
                for (slot, (l, q)) in qkv.iter_mut().zip([(fc_q, rq), (fc_k, rk), (fc_v, rv)]) {
                    *slot = self.w_alloc(rows * (dv * act) as u64);
                    let out = Epilogue::Out { q, relu: false };
                    self.linear_q(qk, l, x, rows, *slot, out)?;
                }
                let y = self.y_alloc(rows * (dv * act) as u64);
                let (y_fc, y_fc_m) = self.lin_req(y_fc);
                let mut args = AttnQArgs {
                    ctx: Ctx::default(),
                    q: qkv[0],
                    k: qkv[1],
                    v: qkv[2],
                    out: y,
                    wo: self.param(fc_o.weight),
                    bo: self.opt_param(fc_o.bias),
                    y_fc_m,
                    rows_per_sample: rows as i64,
                    n: i32of(n)?,
                    dv: dv as i32,
                    heads: *heads as i32,
                    heads_per_pass: 1,
                    score: Req::from(*score),
                    o_q: Req::from(*o_q),
                    o_av: Req::from(*o_av),
                    y_o: Req::from(*y_o),
                    y_fc,
                };
                let set_smem = |hp: usize| 4 * 4 * n * dv + (acc + 4) * hp * n * n;
                match self.heads_per_pass(*heads as usize, set_smem) {
                    Some(hp) => {
                        args.heads_per_pass = hp as i32;
                        let smem = set_smem(hp) as u32;
                        let grid = Grid::Blocks(groups as u64);
                        self.launch(qk.attention_set, grid, smem, &args);
                    }
                    None => {
                        let smem = smem_check((acc + 4) * n + 4 * dv, "set attention")?;
                        self.launch(qk.attention, Grid::Blocks(rows), smem, &args);
                    }
                }
                Ok(y)
            }
            _ => Err(bad("set layer quantization does not match the set layer")),
        }
    }

    /// The per-feature set layer of a resampling, into the Y store.
    #[allow(clippy::too_many_arguments)]
    fn resample_in_q(
        &mut self,
        qk: &QuantKernels,
        s: &SetLayer,
        q: &MapQ,
        src: Act,
        din: usize,
        d1: usize,
        f: usize,
    ) -> Result<u64, Error> {
        let x = self.w_alloc((f * d1 * din) as u64 * qk.act_bytes);
        let args = ResGatherArgs {
            ctx: Ctx::default(),
            src: src.loc,
            out: x,
            src_stride: src.stride as i64,
            din: din as i32,
            d1: d1 as i32,
            f: f as i32,
            pad: 0,
        };
        let per = (f * d1 * din) as u64;
        self.launch(qk.resample_gather, Grid::Elems(per), 0, &args);
        self.set_q(qk, s, q, x, f, d1, din)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_q(
        &mut self,
        qk: &QuantKernels,
        l: &DwsLayer,
        out_reqs: &[Requant],
        rq: Option<&dws_core::quant::ResampleQ>,
        blocks: &[(Block, dws_core::quant::BlockQ)],
        src: Act,
        post: Post,
    ) -> Result<Act, Error> {
        let shape = self.shape;
        let (fin, fout) = (l.fin as usize, l.fout as usize);
        let cells = shape.total_cells();
        let dst = self.next_act((cells * fout) as u64);
        let (d0, d1) = (shape.dim(0), shape.dim(1));
        self.ys = Bump { top: 0, ..self.ys };
        let mut skip = NONE;
        let resample = match (&l.resample, rq) {
            (Some(r), Some(q)) => Some((r, q)),
            (None, None) => None,
            _ => return Err(bad("resample quantization does not match the layer")),
        };
        let (inner, down_stride) = match resample {
            Some((r, q)) => {
                let ds = r.rows as usize;
                // The skip MLP on the original W_0 (no requantization).
                self.wk = Bump { top: 0, ..self.wk };
                let cells0 = d0 * d1;
                let xs = self.w_alloc((cells0 * fin) as u64 * qk.act_bytes);
                let args = GatherArgs {
                    ctx: Ctx::default(),
                    src: src.loc,
                    out: xs,
                    src_stride: src.stride as i64,
                    src_off: 0,
                    rows: d0 as i32,
                    cols: d1 as i32,
                    f: fin as i32,
                    n: i32of(cells0)?,
                    m: 1,
                    pool_rows: 0,
                    pool_cols: 0,
                    set_axis: enc_set(SetAxis::Cells),
                    fold: enc_axis(Axis::None),
                    red: enc_red(Reduction::Sum),
                    req: Req::IDENTITY,
                };
                let per = (cells0 * fin) as u64;
                self.launch(qk.gather, Grid::Elems(per), 0, &args);
                skip = self.mlp_q(qk, &r.skip, &q.skip, xs, cells0 as u64)?;
                self.wk = Bump { top: 0, ..self.wk };
                let y = self.resample_in_q(qk, &r.down, &q.down, src, d0, d1, fin)?;
                let args = ResScatterQArgs {
                    ctx: Ctx::default(),
                    y,
                    skip: NONE,
                    out: self.regions.down,
                    mult: NONE,
                    offs: NONE,
                    out_stride: (ds * d1 * fin) as i64,
                    dout: ds as i32,
                    d1: d1 as i32,
                    f: fin as i32,
                    combine: 0,
                    r_up: Req::default(),
                    r_skip: Req::default(),
                    has_affine: 0,
                    affine_shift: 0,
                    relu: 0,
                    pad: 0,
                };
                let per = (ds * d1 * fin) as u64;
                self.launch(qk.resample_scatter, Grid::Elems(per), 0, &args);
                (shape.with_w0_rows(ds), Some((ds * d1 * fin) as u64))
            }
            None => (shape, None),
        };
        let mut contribs: Vec<Vec<ContribQ>> = vec![Vec::new(); shape.tensors()];
        for (b, bq) in blocks {
            let d = block_dims(b, &inner, fin, fout)?;
            self.wk = Bump { top: 0, ..self.wk };
            let source = self.source(b, src, fin, down_stride);
            let x = self.gather(b, &d, l.reduction, source, fin, Req::from(bq.x))?;
            let y = match (&b.map, &bq.map) {
                (Map::Mlp(m), MapQ::Mlp(mq)) => self.mlp_q(qk, m, mq, x, d.n as u64)?,
                (Map::Set(s), q) => self.set_q(qk, s, q, x, 1, d.n, d.k)?,
                _ => return Err(bad("map quantization does not match the map")),
            };
            contribs[b.dst as usize].push(ContribQ {
                y,
                n: i32of(d.n)?,
                m: i32of(d.kout / fout)?,
                place: enc_set(b.place),
                unfold: enc_axis(b.unfold),
                req: Req::from(bq.contrib),
            });
        }
        if out_reqs.len() != shape.tensors() {
            return Err(bad("one output requantization per tensor"));
        }
        for (t, cs) in contribs.iter().enumerate() {
            let table = self.push(cs);
            let (rows, cols) = inner.grid(t);
            let (out, stride, off, (mult, offs), relu) =
                self.scatter_target(t, (rows, cols), fout, down_stride.is_some(), dst, &post);
            let args = ScatterQArgs {
                ctx: Ctx::default(),
                out,
                contribs: table,
                mult,
                offs,
                out_stride: stride,
                out_off: off,
                rows: i32of(rows)?,
                cols: i32of(cols)?,
                f: fout as i32,
                ncontrib: cs.len() as i32,
                out_req: Req::from(out_reqs[t]),
                has_affine: (mult != NONE) as i32,
                affine_shift: post.shift,
                relu: relu as i32,
                pad: 0,
            };
            let per = (rows * cols * fout) as u64;
            self.launch(qk.scatter, Grid::Elems(per), 0, &args);
        }
        if let Some((r, q)) = resample {
            let ds = r.rows as usize;
            self.wk = Bump { top: 0, ..self.wk };
            let up = Act {
                loc: self.regions.up,
                stride: (ds * d1 * fout) as u64,
            };
            let y = self.resample_in_q(qk, &r.up, &q.up, up, ds, d1, fout)?;
            let (mult, offs) = post.at(0, fout, qk.acc_bytes);
            let args = ResScatterQArgs {
                ctx: Ctx::default(),
                y,
                skip,
                out: dst.loc,
                mult,
                offs,
                out_stride: dst.stride as i64,
                dout: d0 as i32,
                d1: d1 as i32,
                f: fout as i32,
                combine: 1,
                r_up: Req::from(q.out_up),
                r_skip: Req::from(q.out_skip),
                has_affine: (mult != NONE) as i32,
                affine_shift: post.shift,
                relu: post.relu as i32,
                pad: 0,
            };
            let per = (d0 * d1 * fout) as u64;
            self.launch(qk.resample_scatter, Grid::Elems(per), 0, &args);
        }
        Ok(dst)
    }

    #[allow(clippy::too_many_arguments)]
    fn head_q(
        &mut self,
        qk: &QuantKernels,
        h: &Head,
        pooled: &[Requant],
        mlp: &MlpQ,
        logit_scale: &LogitScale,
        cur: Act,
        f: usize,
    ) -> Result<(), Error> {
        let groups = self.head_groups(f);
        let width = groups.len() * f;
        self.wk = Bump { top: 0, ..self.wk };
        let v = self.w_alloc(width as u64 * qk.act_bytes);
        let table = self.push(&groups);
        let reqs: Vec<Req> = pooled.iter().map(|r| Req::from(*r)).collect();
        let reqs = self.push(&reqs);
        let args = HeadPoolArgs {
            ctx: Ctx::default(),
            x: cur.loc,
            groups: table,
            reqs,
            out: v,
            x_stride: cur.stride as i64,
            f: f as i32,
            ngroups: i32of(groups.len())?,
            red: enc_red(h.reduction),
            pad: 0,
        };
        self.launch(qk.head_pool, Grid::Elems(width as u64), 0, &args);
        let hidden = self.hidden_q(qk, &h.mlp, mlp, v, 1)?;
        let last = h.mlp.layers.last().ok_or(bad("empty MLP"))?;
        let out = self.regions.output;
        self.linear_q(qk, last, hidden, 1, out, Epilogue::Logits(logit_scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Module;
    use dws_reference::shared;

    fn programs() -> Vec<(String, Program)> {
        let mut out = Vec::new();
        for f in shared() {
            for (tag, blob) in [
                ("f32", f.blob.bytes()),
                ("int8", f.int8.blob.bytes()),
                ("16x8", f.x16.blob.bytes()),
            ] {
                let p = crate::lower_blob(blob).unwrap();
                out.push((format!("{} ({tag})", f.name), p));
            }
        }
        out
    }

    #[test]
    fn grids_scale_with_the_batch() {
        assert_eq!(Grid::Elems(0).dims(4096).unwrap(), None);
        assert_eq!(Grid::Elems(10).dims(0).unwrap(), None);
        assert_eq!(Grid::Elems(1000).dims(1).unwrap(), Some((4, 1, 1)));
        assert_eq!(
            Grid::Elems(1 << 20).dims(1 << 12).unwrap(),
            Some((MAX_STRIDE_BLOCKS as u32, 1, 1))
        );
        assert_eq!(Grid::Blocks(32).dims(4096).unwrap(), Some((131072, 1, 1)));
        assert_eq!(
            Grid::Tiles { rows: 33, cols: 65 }.dims(2).unwrap(),
            Some((3, 3, 1))
        );
        assert!(Grid::Blocks(1 << 20).dims(1 << 12).is_err());
        assert!(Grid::Elems(u64::MAX).dims(2).is_err());
    }

    #[test]
    fn every_program_launches_for_small_and_large_batches() {
        for (name, p) in programs() {
            for batch in [1u64, 7, 4096, 65536] {
                for s in &p.steps {
                    if let Step::Launch(l) = s {
                        let d = l.grid.dims(batch).unwrap().unwrap();
                        assert!(d.0 >= 1 && d.1 >= 1, "{name}: {l:?}");
                        assert!(l.smem as usize <= MAX_DYN_SMEM, "{name}: {l:?}");
                    }
                }
            }
            assert_eq!(p.arena_bytes(4096), 4096 * p.arena_per_sample, "{name}");
            assert_eq!(p.arena_per_sample % 16, 0, "{name}");
        }
    }

    /// A DWS layer is its blocks' gathers and maps, then one scatter per
    /// destination tensor; f32 plans have GEMMs and only f32 kernels,
    /// quantized plans no GEMMs and only their mode's kernels.
    #[test]
    fn layers_end_with_one_scatter_per_tensor() {
        for f in shared() {
            let tensors = 2 * (f.config.weight_shapes.len());
            for blob in [f.blob.bytes(), f.int8.blob.bytes(), f.x16.blob.bytes()] {
                let p = crate::lower_blob(blob).unwrap();
                let model = dws_core::Model::new_checked(blob).unwrap();
                let module = Module::of(model.precision());
                assert_eq!(p.precision, model.precision(), "{}", f.name);
                assert_eq!(p.layer_steps.len(), model.layout().dws_layers, "{}", f.name);
                let scatter =
                    QuantKernels::of(p.precision).map_or(Kernel::ScatterF32, |q| q.scatter);
                let scatters = p
                    .steps
                    .iter()
                    .filter(|s| matches!(s, Step::Launch(l) if l.kernel == scatter))
                    .count();
                assert_eq!(scatters, tensors * p.layer_steps.len(), "{}", f.name);
                for s in &p.steps {
                    match s {
                        Step::Gemm(_) => {
                            assert_eq!(module, Module::F32, "{}: GEMM in a quantized plan", f.name)
                        }
                        Step::Launch(l) => {
                            assert_eq!(l.kernel.module(), module, "{}: {}", f.name, l.kernel.name())
                        }
                    }
                }
            }
        }
    }

    /// Per-channel requantizations and logit scales reach the kernels as
    /// locations of the right length in the parameter image, holding the
    /// blob's values.
    #[test]
    fn channel_requantizations_point_at_their_mantissas() {
        let mut channels = 0;
        for f in shared() {
            for blob in [f.int8.blob.bytes(), f.x16.blob.bytes()] {
                let p = crate::lower_blob(blob).unwrap();
                let words = |loc: u64, n: usize| -> Vec<[u8; 4]> {
                    let at = (loc & !PARAM_BIT) as usize;
                    p.params[at..at + 4 * n]
                        .chunks_exact(4)
                        .map(|c| c.try_into().unwrap())
                        .collect()
                };
                let i32s = |loc, n| -> Vec<i32> {
                    words(loc, n).into_iter().map(i32::from_le_bytes).collect()
                };
                for s in &p.steps {
                    let Step::Launch(l) = s else { continue };
                    let b = l.args.bytes();
                    if matches!(l.kernel, Kernel::LinearI8 | Kernel::LinearI16) {
                        let a: LinearQArgs = bytemuck::pod_read_unaligned(b);
                        let n = a.fout as usize;
                        if a.req_m != NONE {
                            channels += 1;
                            let ms = i32s(a.req_m, n);
                            assert!(ms.iter().all(|m| *m >= 0), "{}", f.name);
                            assert!(ms.iter().any(|m| *m >= 1 << 30), "{}", f.name);
                            assert!((1..=62).contains(&a.req.shift), "{}", f.name);
                        }
                        if a.mode == LINQ_LOGITS {
                            let v = words(a.logit_scales, n).into_iter().map(f32::from_le_bytes);
                            let v: Vec<f32> = v.collect();
                            assert!(v.iter().all(|v| v.is_finite() && *v > 0.0), "{}", f.name);
                        }
                    }
                    if matches!(l.kernel, Kernel::AttentionSetI8 | Kernel::AttentionSetI16) {
                        let a: AttnQArgs = bytemuck::pod_read_unaligned(b);
                        if a.y_fc_m != NONE {
                            assert!(i32s(a.y_fc_m, a.dv as usize).iter().all(|m| *m >= 0));
                        }
                    }
                }
            }
        }
        assert!(channels > 0, "no fixture has per-channel requantization");
    }

    /// Every GEMM reads and writes inside the arena (per sample) and reads its
    /// weights inside the parameter image.
    #[test]
    fn gemm_operands_lie_inside_their_buffers() {
        for (name, p) in programs() {
            for s in &p.steps {
                let Step::Gemm(g) = s else { continue };
                let w = g.w & !PARAM_BIT;
                assert!(g.w & PARAM_BIT != 0, "{name}");
                assert!(
                    w + 4 * (g.fin as u64 * g.fout as u64) <= p.params.len() as u64,
                    "{name}"
                );
                assert!(g.y & PARAM_BIT == 0, "{name}");
                assert!(
                    g.y + 4 * g.rows * g.fout as u64 <= p.arena_per_sample,
                    "{name}"
                );
                if g.per_sample {
                    assert!(g.x_off + g.rows * g.fin as u64 <= g.x_stride, "{name}");
                } else {
                    assert!(
                        g.x + 4 * g.rows * g.fin as u64 <= p.arena_per_sample,
                        "{name}"
                    );
                }
                assert!(g.fin > 0 && g.fout > 0 && g.rows > 0, "{name}");
            }
            assert!(
                p.input + 4 * p.input_len as u64 <= p.arena_per_sample,
                "{name}"
            );
            assert!(
                p.output + 4 * p.output_len as u64 <= p.arena_per_sample,
                "{name}"
            );
        }
    }

    #[test]
    fn head_groups_cover_the_head_width() {
        for f in shared() {
            let model = f.blob.model().unwrap();
            let ops: Vec<Op> = model.ops().collect::<Result<_, _>>().unwrap();
            let l = Lowering::new(&model, &ops, None, LowerOptions::default()).unwrap();
            for feats in [1, 3, 32] {
                let g = l.head_groups(feats);
                assert_eq!(
                    g.len() * feats,
                    head_width(&model.shape(), feats),
                    "{}",
                    f.name
                );
                // One requantization segment per tensor, in order.
                let segs: Vec<i32> = g.iter().map(|g| g.seg).collect();
                assert!(segs.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
                assert_eq!(*segs.last().unwrap() as usize + 1, model.shape().tensors());
                let per = model.shape().total_cells() * feats;
                for h in &g {
                    let last = h.start as usize + (h.count as usize - 1) * h.stride as usize;
                    assert!(last + feats <= per, "{}: {h:?}", f.name);
                }
            }
        }
    }

    /// The paper's classifier: 39 blocks per layer in a short list of
    /// launches, small sets handled by the per-set attention kernel.
    #[test]
    fn paper_default_launch_list() {
        let f = shared().iter().find(|f| f.name == "paper_default").unwrap();
        let p = crate::lower_blob(f.blob.bytes()).unwrap();
        assert_eq!(p.layer_steps, vec![115; 5]);
        let count = |k: Kernel| {
            p.steps
                .iter()
                .filter(|s| matches!(s, Step::Launch(l) if l.kernel == k))
                .count()
        };
        assert_eq!(count(Kernel::AttentionSetF32), 80);
        assert_eq!(count(Kernel::AttentionF32), 0);
        assert_eq!(count(Kernel::ScatterF32), 30);
        let row = crate::lower_blob_with(
            f.blob.bytes(),
            LowerOptions {
                row_attention: true,
            },
        )
        .unwrap();
        assert_eq!(row.launches(), p.launches());
    }

    #[test]
    fn post_ops_address_each_tensors_channels() {
        let p = Post {
            affine: Some((PARAM_BIT | 64, PARAM_BIT | 1024)),
            shift: 16,
            relu: true,
        };
        assert_eq!(
            p.at(2, 8, 4),
            (PARAM_BIT | (64 + 64), PARAM_BIT | (1024 + 64))
        );
        // 16x8: int32 multipliers, int64 offsets.
        assert_eq!(
            p.at(2, 8, 8),
            (PARAM_BIT | (64 + 64), PARAM_BIT | (1024 + 128))
        );
        assert_eq!(Post::default().at(3, 4, 8), (NONE, NONE));
    }
}
