//! Running a [`Program`] on a runtime: the GPU (`gpu.rs`) or the CPU emulator
//! of the kernels (`emulator.rs`). Both see exactly the same launches.

use crate::args::{Ctx, RawArgs, PARAM_BIT};
use crate::kernels::Kernel;
use crate::lower::{Gemm, Program, Step};
use crate::Error;

/// A GEMM with device addresses: for `b` in `0..count`,
/// `Y_b[r, o] = sum_i X_b[r, i] W[o, i]` with `X_b = x + b * x_stride` and
/// `Y_b = y + b * y_stride` (elements), rows `rows` long (`fin` wide, contiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmCall {
    /// Address of X for b = 0.
    pub x: u64,
    /// Elements between consecutive X_b.
    pub x_stride: u64,
    /// Address of W, `[fout, fin]` row-major.
    pub w: u64,
    /// Address of Y for b = 0.
    pub y: u64,
    /// Elements between consecutive Y_b.
    pub y_stride: u64,
    /// Rows of each X_b and Y_b.
    pub rows: u64,
    /// Input width.
    pub fin: u64,
    /// Output width.
    pub fout: u64,
    /// Number of (X_b, Y_b) pairs.
    pub count: u64,
}

/// What a backend must do to run programs.
pub trait Runtime {
    /// Makes the arena at least `bytes` long and the parameters resident;
    /// returns the arena and parameter addresses.
    fn prepare(&mut self, arena_bytes: u64) -> Result<(u64, u64), Error>;
    /// Copies f32 values to a device address.
    fn upload(&mut self, at: u64, data: &[f32]) -> Result<(), Error>;
    /// Runs a kernel over `grid` blocks.
    fn launch(
        &mut self,
        kernel: Kernel,
        grid: (u32, u32, u32),
        smem: u32,
        args: &RawArgs,
    ) -> Result<(), Error>;
    /// Runs an f32 GEMM.
    fn gemm(&mut self, g: &GemmCall) -> Result<(), Error>;
    /// Copies f32 values from a device address (waits for the work before).
    fn download(&mut self, at: u64, out: &mut [f32]) -> Result<(), Error>;
}

/// The address of a location for a context.
pub fn resolve(loc: u64, ctx: &Ctx) -> u64 {
    if loc & PARAM_BIT != 0 {
        ctx.params + (loc & !PARAM_BIT)
    } else {
        ctx.arena + loc * ctx.batch as u64
    }
}

/// A GEMM step for a batch.
pub fn gemm_call(g: &Gemm, ctx: &Ctx) -> GemmCall {
    let b = ctx.batch as u64;
    let x = resolve(g.x, ctx) + 4 * g.x_off;
    let (rows, count, x_stride, y_stride) = if g.per_sample {
        (g.rows, b, g.x_stride, g.rows * g.fout as u64)
    } else {
        (g.rows * b, 1, 0, 0)
    };
    GemmCall {
        x,
        x_stride,
        w: resolve(g.w, ctx),
        y: resolve(g.y, ctx),
        y_stride,
        rows,
        fin: g.fin as u64,
        fout: g.fout as u64,
        count,
    }
}

/// Runs one chunk of `batch` inputs through the program.
pub fn run_chunk<R: Runtime + ?Sized>(
    rt: &mut R,
    p: &Program,
    inputs: &[f32],
    batch: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    debug_assert_eq!(inputs.len(), batch * p.input_len);
    debug_assert_eq!(out.len(), batch * p.output_len);
    if batch == 0 {
        return Ok(());
    }
    let (arena, params) = rt.prepare(p.arena_bytes(batch))?;
    let ctx = Ctx {
        arena,
        params,
        batch: batch as i64,
    };
    rt.upload(resolve(p.input, &ctx), inputs)?;
    for step in &p.steps {
        match step {
            Step::Launch(l) => {
                if let Some(grid) = l.grid.dims(batch as u64)? {
                    rt.launch(l.kernel, grid, l.smem, &l.args.with_ctx(ctx))?;
                }
            }
            Step::Gemm(g) => rt.gemm(&gemm_call(g, &ctx))?,
        }
    }
    rt.download(resolve(p.output, &ctx), out)
}

/// Checks the inputs as `dws_core::Model::run` would.
pub fn check_inputs(p: &Program, inputs: &[f32], batch: usize) -> Result<(), Error> {
    let want = batch.checked_mul(p.input_len);
    if want != Some(inputs.len()) {
        return Err(Error::Input(format!(
            "inputs hold {} values, expected {batch} x {}",
            inputs.len(),
            p.input_len
        )));
    }
    if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
        return Err(Error::Input(format!(
            "input {} element {} is {} ({})",
            i / p.input_len.max(1),
            i % p.input_len.max(1),
            inputs[i],
            dws_core::Error::NonFiniteInput
        )));
    }
    Ok(())
}

/// Runs `batch` inputs in chunks of at most `chunk`.
pub fn run_batch<R: Runtime + ?Sized>(
    rt: &mut R,
    p: &Program,
    inputs: &[f32],
    batch: usize,
    chunk: usize,
) -> Result<Vec<f32>, Error> {
    check_inputs(p, inputs, batch)?;
    let mut out = vec![0f32; batch * p.output_len];
    let chunk = chunk.max(1);
    let mut done = 0;
    while done < batch {
        let n = chunk.min(batch - done);
        let x = &inputs[done * p.input_len..(done + n) * p.input_len];
        let y = &mut out[done * p.output_len..(done + n) * p.output_len];
        run_chunk(rt, p, x, n, y)?;
        done += n;
    }
    Ok(out)
}

/// The reference GEMM (used by the emulator): the same summation order as
/// `dws_core::kernels::linear::linear_rows`.
///
/// # Safety
/// Every address of `g` must point to host memory holding the elements the
/// call reads or writes, and Y must not overlap X or W.
pub unsafe fn host_gemm(g: &GemmCall) {
    for b in 0..g.count {
        let x = (g.x as *const f32).add((b * g.x_stride) as usize);
        let y = (g.y as *mut f32).add((b * g.y_stride) as usize);
        let w = g.w as *const f32;
        for r in 0..g.rows as usize {
            let xr = std::slice::from_raw_parts(x.add(r * g.fin as usize), g.fin as usize);
            for o in 0..g.fout as usize {
                let wo = std::slice::from_raw_parts(w.add(o * g.fin as usize), g.fin as usize);
                let mut acc = 0f32;
                for (a, c) in xr.iter().zip(wo) {
                    acc += a * c;
                }
                *y.add(r * g.fout as usize + o) = acc;
            }
        }
    }
}
