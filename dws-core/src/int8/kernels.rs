//! Integer kernels: linear layers, MLPs, pooling and set layers on int8 rows.
//!
//! Every function follows `docs/int8.md`; the slices are sized by the int8
//! validation, so they are indexed directly.

use super::P8;
use crate::plan::{Linear, Mlp, Reduction, SetLayer, SetPooling};
use crate::quant::{sat8, softmax_q15, MapQ, MlpQ, Requant};
use core::ops::Range;

/// The hot loops of the int8 executor, replaceable by a host's SIMD versions.
///
/// Each method's default body is its definition (and what [`Portable`] runs);
/// another implementation must produce the same bits for every input, so
/// that the executor's results never depend on the kernels it was given.
pub trait Int8Kernels {
    /// Calls `out(row, o, b[o] + w[o] . x[row])` (wrapping int32) once for
    /// every row of `x` (`[rows, fin]`) and output `o` of `w` (`[fout, fin]`),
    /// in any order.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        w: &[i8],
        b: Option<&[i32]>,
        fin: usize,
        fout: usize,
        x: &[i8],
        rows: usize,
        mut out: impl FnMut(usize, usize, i32),
    ) {
        for row in 0..rows {
            linear_row(w, fin, fout, b, &x[row * fin..(row + 1) * fin], |o, acc| {
                out(row, o, acc)
            });
        }
    }

    /// A linear layer requantized to int8: `y[row, o] = max(lo,
    /// sat8(r.apply(acc)))` for the accumulators `acc` of [`Int8Kernels::linear`]
    /// (`y` is `[rows, fout]`; `lo` is -127, or 0 for a ReLU).
    #[allow(clippy::too_many_arguments)]
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
        self.linear(w, b, fin, fout, x, rows, |row, o, acc| {
            y[row * fout + o] = sat8(r.apply(acc)).max(lo);
        });
    }

    /// The output of a set attention block, `Y = O + relu(fc_o(O))`: `y[row,
    /// o] = sat8(r_o.apply(x[row, o]) + r_fc.apply(max(acc, 0)))` for the
    /// accumulators `acc` of [`Int8Kernels::linear`] of the square `w` (`[dim,
    /// dim]`) over the rows of `x` (`[rows, dim]`).
    #[allow(clippy::too_many_arguments)]
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
        self.linear(w, b, dim, dim, x, rows, |row, o, acc| {
            let at = row * dim + o;
            y[at] = sat8(
                r_o.apply(x[at] as i32)
                    .saturating_add(r_fc.apply(acc.max(0))),
            );
        });
    }

    /// A folded batch norm on the entries of one tensor (`x`, rows of
    /// `mult.len()` features): `x = clamp((x * mult + off) >> shift, -127,
    /// 127)` per feature, in 64-bit arithmetic.
    fn affine(&mut self, x: &mut [i8], mult: &[i32], off: &[i32], shift: u8) {
        if mult.is_empty() {
            return;
        }
        for entry in x.chunks_exact_mut(mult.len()) {
            for ((v, &m), &o) in entry.iter_mut().zip(mult).zip(off) {
                let y = (*v as i64 * m as i64 + o as i64) >> shift;
                *v = y.clamp(-127, 127) as i8;
            }
        }
    }

    /// The attention sum of a set attention block, in place: every query row
    /// `q_i` of `qm` (`[m, dv]`, any `m`) becomes `O_i = sat8(o_q(q_i) +
    /// o_av(a_i))`, where, per head of `dv / heads` channels, `a_i = sum_j p_j
    /// v_j` over the first `n` value rows of `vm` and `p = softmax_q15(q_i .
    /// k_j, score)` over the first `n` key rows of `km`, `n = scores.len()`
    /// (`km` and `vm` hold at least `[n, dv]`; `e` holds `n` values, `av`
    /// holds `dv`).
    #[allow(clippy::too_many_arguments)]
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
        if dv == 0 {
            return;
        }
        let width = dv / heads;
        for qi in qm.chunks_exact_mut(dv) {
            for c0 in (0..heads).map(|h| h * width) {
                let av = &mut av[c0..c0 + width];
                // Eight heads of 32 features (the paper default): width 4, unrolled.
                if width == 4 {
                    attend_head::<4>(4, qi, km, vm, dv, c0, r.score, scores, e, av);
                } else {
                    attend_head::<0>(width, qi, km, vm, dv, c0, r.score, scores, e, av);
                }
                for (q, a) in qi[c0..c0 + width].iter_mut().zip(av.iter()) {
                    *q = sat8(r.o_q.apply(*q as i32).saturating_add(r.o_av.apply(*a)));
                }
            }
        }
    }

    /// Adds requantized rows: for every row `q` of `acc` (`width` values
    /// each), `acc[q][c] += r.apply(y[q * step + c])` (wrapping). `step` 0 adds
    /// the same row of `y` to every row.
    fn add_requant(&mut self, acc: &mut [i32], y: &[i8], width: usize, step: usize, r: Requant) {
        if width == 0 {
            return;
        }
        for (q, a) in acc.chunks_exact_mut(width).enumerate() {
            for (a, v) in a.iter_mut().zip(&y[q * step..q * step + width]) {
                *a = a.wrapping_add(r.apply(*v as i32));
            }
        }
    }

    /// `out[i] = sat8(r.apply(acc[i]))` over the shorter slice.
    fn requant(&mut self, acc: &[i32], r: Requant, out: &mut [i8]) {
        for (o, a) in out.iter_mut().zip(acc) {
            *o = sat8(r.apply(*a));
        }
    }

    /// `out[i] = sat8(r.apply(x[i]))` over the shorter slice (int8 values to
    /// another scale).
    fn requant_i8(&mut self, x: &[i8], r: Requant, out: &mut [i8]) {
        for (o, v) in out.iter_mut().zip(x) {
            *o = sat8(r.apply(*v as i32));
        }
    }

    /// One pooled entry of a gather: for each of the `out.len()` channels `c`,
    /// `out[c] = sat8(r.apply(v))` where `v` reduces `src[(row * cols + col) *
    /// out.len() + c]` over `rows` x `cs` (the max from `i32::MIN`, or the sum).
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
        let f = out.len();
        for (c, o) in out.iter_mut().enumerate() {
            let mut v = match red {
                Reduction::Max => i32::MIN,
                Reduction::Mean | Reduction::Sum => 0,
            };
            for row in rows.clone() {
                for col in cs.clone() {
                    let s = src[(row * cols + col) * f + c] as i32;
                    v = match red {
                        Reduction::Max => v.max(s),
                        Reduction::Mean | Reduction::Sum => v + s,
                    };
                }
            }
            *o = sat8(r.apply(v));
        }
    }

    /// Whether [`Int8Kernels::join`] runs its parts at the same time: the
    /// executor then also splits work that costs a little more in two parts
    /// (the rows of a set layer, whose keys and values both parts compute).
    fn parallel(&self) -> bool {
        false
    }

    /// Runs two independent parts of the executor's work, `a` and `b`, and
    /// returns their results. Each part gets kernels of this kind and
    /// `scratch.len()` bytes of scratch (4-aligned); the parts write disjoint
    /// memory, so they may run at the same time, on another instance and
    /// another scratch. The definition runs `a`, then `b`, on `self` and
    /// `scratch`.
    fn join<A, B, RA, RB>(&mut self, scratch: &mut [u8], a: A, b: B) -> (RA, RB)
    where
        Self: Sized,
        A: FnOnce(&mut Self, &mut [u8]) -> RA + Send,
        B: FnOnce(&mut Self, &mut [u8]) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        let ra = a(self, scratch);
        (ra, b(self, scratch))
    }
}

/// The requantizations of [`Int8Kernels::attention`].
#[derive(Debug, Clone, Copy)]
pub struct AttentionQ {
    /// Score differences to 1/256 units of the exponent.
    pub score: Requant,
    /// The query's part of `O`.
    pub o_q: Requant,
    /// The attention sum's part of `O`.
    pub o_av: Requant,
}

/// The portable kernels: the trait's definitions (with the DSP dot products
/// on Arm cores built with feature `dsp`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Portable;

impl Int8Kernels for Portable {}

/// `b[o] + sum_i x[i] * w[o, i]` in int32 (wrapping; over the shorter slice).
#[inline(always)]
pub fn dot_acc(w: &[i8], x: &[i8], bias: i32) -> i32 {
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    {
        dsp::dot_acc(w, x, bias)
    }
    #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
    {
        let mut acc = bias;
        for (a, b) in x.iter().zip(w) {
            // Wrapping: a blob may hold any int32 bias; overflow must not panic.
            acc = acc.wrapping_add(*a as i32 * *b as i32);
        }
        acc
    }
}

/// Two outputs over one input row: `(dot_acc(w0, x, b0), dot_acc(w1, x, b1))`.
#[inline(always)]
fn dot_acc2(w0: &[i8], w1: &[i8], x: &[i8], b0: i32, b1: i32) -> (i32, i32) {
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    {
        dsp::dot_acc2(w0, w1, x, b0, b1)
    }
    #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
    {
        (dot_acc(w0, x, b0), dot_acc(w1, x, b1))
    }
}

/// The int8 dot products with the Armv7E-M DSP extension (Cortex-M4, M7, M33
/// with DSP; feature `dsp`): four int8 products per word with `SXTB16` and
/// the dual 16-bit multiply-accumulate `SMLAD`, as CMSIS-NN does. Integer sums
/// wrap like the portable code, so the results are the same bits.
#[cfg(all(feature = "dsp", target_arch = "arm"))]
mod dsp {
    /// `acc + x0 w0 + x1 w1 + x2 w2 + x3 w3` (wrapping) for the int8 lanes of
    /// two little-endian words.
    #[inline(always)]
    #[allow(unsafe_code)]
    fn mac4(acc: i32, x: u32, w: u32) -> i32 {
        let out: i32;
        // SAFETY: register arithmetic only (`nomem`, `nostack`): SXTB16
        // sign-extends bytes 0, 2 (then, rotated, 1, 3) into 16-bit lanes and
        // SMLAD adds both lane products to the accumulator; the scratch
        // registers are declared outputs, and the only other state written is
        // the sticky Q flag (flags are not declared preserved). Both
        // instructions exist on every target this module compiles for (feature
        // `dsp`: the caller enables it for DSP-capable Arm cores only).
        unsafe {
            core::arch::asm!(
                "sxtb16 {xe}, {x}",
                "sxtb16 {we}, {w}",
                "smlad {acc}, {xe}, {we}, {acc}",
                "sxtb16 {xe}, {x}, ror #8",
                "sxtb16 {we}, {w}, ror #8",
                "smlad {acc}, {xe}, {we}, {acc}",
                acc = inout(reg) acc => out,
                x = in(reg) x,
                w = in(reg) w,
                xe = out(reg) _,
                we = out(reg) _,
                options(pure, nomem, nostack),
            );
        }
        out
    }

    /// The first `n` values (`n` rounded down to a multiple of 4) as words
    /// of four (any alignment), and the rest.
    #[inline(always)]
    fn words(v: &[i8], n: usize) -> (&[[u8; 4]], &[i8]) {
        let (head, tail) = v[..n].split_at(n & !3);
        (bytemuck::cast_slice(head), tail)
    }

    /// `super::dot_acc`.
    #[inline(always)]
    pub fn dot_acc(w: &[i8], x: &[i8], bias: i32) -> i32 {
        let n = x.len().min(w.len());
        let ((xs, xt), (ws, wt)) = (words(x, n), words(w, n));
        let mut acc = bias;
        for (a, b) in xs.iter().zip(ws) {
            acc = mac4(acc, u32::from_le_bytes(*a), u32::from_le_bytes(*b));
        }
        for (a, b) in xt.iter().zip(wt) {
            acc = acc.wrapping_add(*a as i32 * *b as i32);
        }
        acc
    }

    /// `super::dot_acc2`: each input word is loaded once for both outputs.
    #[inline(always)]
    pub fn dot_acc2(w0: &[i8], w1: &[i8], x: &[i8], b0: i32, b1: i32) -> (i32, i32) {
        let n = x.len().min(w0.len()).min(w1.len());
        let ((xs, xt), (w0s, w0t), (w1s, w1t)) = (words(x, n), words(w0, n), words(w1, n));
        let (mut a0, mut a1) = (b0, b1);
        for ((a, b), c) in xs.iter().zip(w0s).zip(w1s) {
            let xv = u32::from_le_bytes(*a);
            a0 = mac4(a0, xv, u32::from_le_bytes(*b));
            a1 = mac4(a1, xv, u32::from_le_bytes(*c));
        }
        for ((a, b), c) in xt.iter().zip(w0t).zip(w1t) {
            a0 = a0.wrapping_add(*a as i32 * *b as i32);
            a1 = a1.wrapping_add(*a as i32 * *c as i32);
        }
        (a0, a1)
    }
}

/// `out(o, b[o] + w[o] . x)` for every output `o` of one input row `x`
/// (`w` is `[fout, fin]`): two outputs at a time, no index checks inside.
#[inline(always)]
fn linear_row(
    w: &[i8],
    fin: usize,
    fout: usize,
    b: Option<&[i32]>,
    x: &[i8],
    mut out: impl FnMut(usize, i32),
) {
    let bias = |o: usize| b.map_or(0, |b| b[o]);
    if fin == 0 {
        (0..fout).for_each(|o| out(o, bias(o)));
        return;
    }
    let pairs = w[..fout * fin].chunks_exact(2 * fin);
    let last = pairs.remainder();
    for (k, wp) in pairs.enumerate() {
        let (w0, w1) = wp.split_at(fin);
        let (a0, a1) = dot_acc2(w0, w1, x, bias(2 * k), bias(2 * k + 1));
        out(2 * k, a0);
        out(2 * k + 1, a1);
    }
    if !last.is_empty() {
        out(fout - 1, dot_acc(last, x, bias(fout - 1)));
    }
}

/// One linear layer over `rows` rows with requantization to int8 (`relu` clamps at 0).
#[allow(clippy::too_many_arguments)]
pub fn linear8(
    k: &mut impl Int8Kernels,
    l: &Linear,
    p: P8<'_>,
    r: Requant,
    x: &[i8],
    rows: usize,
    y: &mut [i8],
    relu: bool,
) {
    let (fin, fout) = (l.fin as usize, l.fout as usize);
    let w = p.i8s(l.weight);
    let b = l.bias.map(|b| p.i32s(b));
    k.linear8(w, b, fin, fout, x, rows, r, if relu { 0 } else { -127 }, y);
}

/// Bytes an MLP needs besides its input and output: two hidden buffers.
pub fn mlp8_tmp_len(m: &Mlp, rows: usize) -> usize {
    if m.layers.len() > 1 {
        2 * rows * m.layers[0].fout as usize
    } else {
        0
    }
}

/// Runs every layer but the last (hidden layers with ReLU); returns the input of
/// the last layer (`x` itself when there is one layer).
pub fn mlp8_hidden<'t>(
    k: &mut impl Int8Kernels,
    m: &Mlp,
    q: &MlpQ,
    p: P8<'_>,
    x: &'t [i8],
    rows: usize,
    tmp: &'t mut [i8],
) -> &'t [i8] {
    let n = m.layers.len();
    if n <= 1 {
        return x;
    }
    let width = m.layers[0].fout as usize;
    let (a, b) = tmp.split_at_mut(rows * width);
    linear8(k, &m.layers[0], p, q.layers[0], x, rows, a, true);
    let mut in_a = true;
    for i in 1..n - 1 {
        if in_a {
            linear8(k, &m.layers[i], p, q.layers[i], a, rows, b, true);
        } else {
            linear8(k, &m.layers[i], p, q.layers[i], b, rows, a, true);
        }
        in_a = !in_a;
    }
    if in_a {
        a
    } else {
        b
    }
}

/// The whole MLP with its last layer requantized to int8 `y`.
#[allow(clippy::too_many_arguments)]
pub fn mlp8(
    k: &mut impl Int8Kernels,
    m: &Mlp,
    q: &MlpQ,
    p: P8<'_>,
    x: &[i8],
    rows: usize,
    y: &mut [i8],
    tmp: &mut [i8],
) {
    let n = m.layers.len();
    let h = mlp8_hidden(k, m, q, p, x, rows, tmp);
    linear8(k, &m.layers[n - 1], p, q.layers[n - 1], h, rows, y, false);
}

/// Bytes a set layer needs for `n` rows of width `k` besides input and output.
pub fn set8_tmp_len(s: &SetLayer, n: usize, k: usize) -> usize {
    match s {
        SetLayer::DeepSets {
            gamma,
            lambda,
            pooling,
        } => {
            let kout = gamma.layers.last().map_or(0, |l| l.fout as usize);
            let attn = match pooling {
                SetPooling::Attention { .. } => 8 * n,
                SetPooling::Reduce(_) => 0,
            };
            // pooled i32 + pooled i8 (padded) + lambda i32 + the MLPs' hidden buffers + attention.
            4 * k
                + k.next_multiple_of(4)
                + 4 * kout
                + mlp8_tmp_len(lambda, 1).next_multiple_of(4)
                + mlp8_tmp_len(gamma, n).next_multiple_of(4)
                + attn
        }
        SetLayer::Attention { fc_o, .. } => {
            let dv = fc_o.fout as usize;
            (3 * n * dv).next_multiple_of(4) + 8 * n + 4 * dv
        }
    }
}

/// Splits `n` i32 values off the front of a 4-aligned byte buffer.
pub fn take_i32(buf: &mut [u8], n: usize) -> (&mut [i32], &mut [u8]) {
    let (a, b) = buf.split_at_mut(4 * n);
    (bytemuck::cast_slice_mut(a), b)
}

/// Splits `n` i8 values (padded to 4 bytes) off the front of a byte buffer.
pub fn take_i8(buf: &mut [u8], n: usize) -> (&mut [i8], &mut [u8]) {
    let (a, b) = buf.split_at_mut(n.next_multiple_of(4));
    (bytemuck::cast_slice_mut(&mut a[..n]), b)
}

/// A set layer over the `n` rows of `x` (`[n, k]`), writing the int8 output
/// rows `rows` (of `0..n`) into `y` (`[rows.len(), k_out]`).
#[allow(clippy::too_many_arguments)]
pub fn set8(
    kern: &mut impl Int8Kernels,
    s: &SetLayer,
    q: &MapQ,
    p: P8<'_>,
    x: &[i8],
    n: usize,
    k: usize,
    rows: Range<usize>,
    y: &mut [i8],
    tmp: &mut [u8],
) {
    let m = rows.len();
    let xr = &x[rows.start * k..rows.end * k];
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
            let kout = gamma.layers.last().map_or(0, |l| l.fout as usize);
            let (pool32, rest) = take_i32(tmp, k);
            let (pool8, rest) = take_i8(rest, k);
            let (lam, rest) = take_i32(rest, kout);
            let (lam_tmp, rest) = rest.split_at_mut(mlp8_tmp_len(lambda, 1).next_multiple_of(4));
            let (gam_tmp, rest) = rest.split_at_mut(mlp8_tmp_len(gamma, n).next_multiple_of(4));
            match pooling {
                SetPooling::Reduce(red) => pool_rows(*red, x, n, k, pool32),
                SetPooling::Attention { query } => {
                    let (scores, rest) = take_i32(rest, n);
                    let (e, _) = take_i32(rest, n);
                    let qv = p.i8s(*query);
                    for (i, sc) in scores.iter_mut().enumerate() {
                        *sc = dot_acc(qv, &x[i * k..(i + 1) * k], 0);
                    }
                    softmax_q15(scores, *score, bytemuck::cast_slice_mut(e));
                    pool32.fill(0);
                    for (i, &pi) in scores.iter().enumerate() {
                        for (acc, &v) in pool32.iter_mut().zip(&x[i * k..(i + 1) * k]) {
                            *acc += pi * v as i32;
                        }
                    }
                }
            }
            for (o, &v) in pool8.iter_mut().zip(pool32.iter()) {
                *o = sat8(pooled.apply(v));
            }
            // Lambda: hidden layers, then the last layer's accumulator in the output scale.
            let lam_tmp = bytemuck::cast_slice_mut(lam_tmp);
            let lh = mlp8_hidden(kern, lambda, lq, p, pool8, 1, lam_tmp);
            let last = &lambda.layers[lambda.layers.len() - 1];
            let rl = lq.layers[lambda.layers.len() - 1];
            let (lw, lfin) = (p.i8s(last.weight), last.fin as usize);
            let lb = last.bias.map(|b| p.i32s(b));
            kern.linear(lw, lb, lfin, lam.len(), lh, 1, |_, o, acc| {
                lam[o] = rl.apply(acc)
            });
            // Gamma: hidden layers, then last layer minus Lambda.
            let gam_tmp = bytemuck::cast_slice_mut(gam_tmp);
            let gh = mlp8_hidden(kern, gamma, gq, p, xr, m, gam_tmp);
            let glast = &gamma.layers[gamma.layers.len() - 1];
            let rg = gq.layers[gamma.layers.len() - 1];
            let (gw, gfin) = (p.i8s(glast.weight), glast.fin as usize);
            let gb = glast.bias.map(|b| p.i32s(b));
            let lam = &*lam;
            kern.linear(gw, gb, gfin, kout, gh, m, |row, o, acc| {
                y[row * kout + o] = sat8(rg.apply(acc).saturating_sub(lam[o]));
            });
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
            let (qkv, rest) = tmp.split_at_mut((3 * n * dv).next_multiple_of(4));
            let qkv: &mut [i8] = bytemuck::cast_slice_mut(&mut qkv[..3 * n * dv]);
            let (qm, kv) = qkv.split_at_mut(n * dv);
            let (km, vm) = kv.split_at_mut(n * dv);
            let (scores, rest) = take_i32(rest, n);
            let (e, rest) = take_i32(rest, n);
            let (av, _) = take_i32(rest, dv);
            // Queries of the rows asked for; keys and values of all.
            let qm = &mut qm[..m * dv];
            linear8(kern, fc_q, p, *rq, xr, m, qm, false);
            linear8(kern, fc_k, p, *rk, x, n, km, false);
            linear8(kern, fc_v, p, *rv, x, n, vm, false);
            let e: &mut [u32] = bytemuck::cast_slice_mut(e);
            let r = AttentionQ {
                score: *score,
                o_q: *o_q,
                o_av: *o_av,
            };
            kern.attention(qm, km, vm, dv, *heads as usize, r, scores, e, av);
            // Y = O + relu(fc_o(O)), O in place of the queries.
            let ow = p.i8s(fc_o.weight);
            let ob = fc_o.bias.map(|b| p.i32s(b));
            kern.fc_o_residual(ow, ob, dv, qm, m, *y_o, *y_fc, y);
        }
        _ => {}
    }
}

/// One head of set attention for one query row `qi` (the head's `width`
/// channels from `c0` in rows of `dv`, here and in `km`, `vm`): scores against every key row of `km`,
/// `softmax_q15`, and the probability-weighted sum of the value rows of `vm`
/// into `av[..width]`. `W` is the width when known at compile time (0: `width`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_head<const W: usize>(
    width: usize,
    qi: &[i8],
    km: &[i8],
    vm: &[i8],
    dv: usize,
    c0: usize,
    score: Requant,
    scores: &mut [i32],
    e: &mut [u32],
    av: &mut [i32],
) {
    let width = if W > 0 { W } else { width };
    if dv == 0 {
        return;
    }
    let qi = &qi[c0..c0 + width];
    for (sc, kr) in scores.iter_mut().zip(km.chunks_exact(dv)) {
        *sc = dot_acc(&kr[c0..c0 + width], qi, 0);
    }
    softmax_q15(scores, score, e);
    let av = &mut av[..width];
    av.fill(0);
    for (&pj, vr) in scores.iter().zip(vm.chunks_exact(dv)) {
        for (acc, &v) in av.iter_mut().zip(&vr[c0..c0 + width]) {
            *acc += pj * v as i32;
        }
    }
}

/// Pools `n` rows of width `k` into int32: the max, or the sum (mean divides later).
pub fn pool_rows(red: Reduction, x: &[i8], n: usize, k: usize, out: &mut [i32]) {
    match red {
        Reduction::Max => {
            out.fill(-128);
            for i in 0..n {
                for (o, &v) in out.iter_mut().zip(&x[i * k..(i + 1) * k]) {
                    *o = (*o).max(v as i32);
                }
            }
        }
        Reduction::Mean | Reduction::Sum => {
            out.fill(0);
            for i in 0..n {
                for (o, &v) in out.iter_mut().zip(&x[i * k..(i + 1) * k]) {
                    *o += v as i32;
                }
            }
        }
    }
}
