//! Integer kernels: linear layers, MLPs, pooling and set layers on rows of
//! activations (`i8` or `i16`, see [`Act`]).
//!
//! Every function follows `docs/quantization.md`; the slices are sized by the
//! quantized validation, so they are indexed directly.

use super::act::{Accum, Act};
use super::QParams;
use crate::plan::{Linear, Mlp, Reduction, SetLayer, SetPooling};
use crate::quant::{softmax_q15, LinearQ, MapQ, MlpQ, Requant, Requants};
use core::mem::size_of;
use core::ops::Range;

/// The hot loops of the quantized executor, replaceable by a host's SIMD versions.
///
/// Each method's default body is its definition (and what [`Portable`] runs);
/// another implementation must produce the same bits for every input, so
/// that the executor's results never depend on the kernels it was given.
pub trait Kernels<A: Act> {
    /// Calls `out(row, o, b[o] + w[o] . x[row])` (see [`Act::dot`]) once for
    /// every row of `x` (`[rows, fin]`) and output `o` of `w` (`[fout, fin]`),
    /// in any order.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        w: &[i8],
        b: Option<&[A::Wide]>,
        fin: usize,
        fout: usize,
        x: &[A],
        rows: usize,
        mut out: impl FnMut(usize, usize, A::Acc),
    ) {
        for row in 0..rows {
            linear_row(w, fin, fout, b, &x[row * fin..(row + 1) * fin], |o, acc| {
                out(row, o, acc)
            });
        }
    }

    /// A linear layer requantized to activations: `y[row, o] = max(lo,
    /// sat(acc.requant(r.get(o))))` for the accumulators `acc` of
    /// [`Kernels::linear`] (`y` is `[rows, fout]`; `lo` is `-MAX`, or 0 for a ReLU).
    #[allow(clippy::too_many_arguments)]
    fn linear_q(
        &mut self,
        w: &[i8],
        b: Option<&[A::Wide]>,
        fin: usize,
        fout: usize,
        x: &[A],
        rows: usize,
        r: Requants<'_>,
        lo: A,
        y: &mut [A],
    ) {
        self.linear(w, b, fin, fout, x, rows, |row, o, acc| {
            y[row * fout + o] = A::sat(acc.requant(r.get(o))).max(lo);
        });
    }

    /// The output of a set attention block, `Y = O + relu(fc_o(O))`: `y[row,
    /// o] = sat(r_o.apply(x[row, o]) + relu(acc).requant(r_fc.get(o)))` (a
    /// saturating int32 add) for the accumulators `acc` of
    /// [`Kernels::linear`] of the square `w` (`[dim, dim]`) over the rows of
    /// `x` (`[rows, dim]`).
    #[allow(clippy::too_many_arguments)]
    fn fc_o_residual(
        &mut self,
        w: &[i8],
        b: Option<&[A::Wide]>,
        dim: usize,
        x: &[A],
        rows: usize,
        r_o: Requant,
        r_fc: Requants<'_>,
        y: &mut [A],
    ) {
        self.linear(w, b, dim, dim, x, rows, |row, o, acc| {
            let at = row * dim + o;
            y[at] = A::sat(
                r_o.apply(x[at].get())
                    .saturating_add(acc.relu().requant(r_fc.get(o))),
            );
        });
    }

    /// A folded batch norm on the entries of one tensor (`x`, rows of
    /// `mult.len()` features): `x = sat((x * mult + off) >> shift)` per
    /// feature, in 64-bit (wrapping) arithmetic.
    fn affine(&mut self, x: &mut [A], mult: &[i32], off: &[A::Wide], shift: u8) {
        if mult.is_empty() {
            return;
        }
        for entry in x.chunks_exact_mut(mult.len()) {
            for ((v, &m), &o) in entry.iter_mut().zip(mult).zip(off) {
                let y = (v.get() as i64)
                    .wrapping_mul(m as i64)
                    .wrapping_add(A::wide64(o))
                    >> shift;
                *v = A::sat(y.clamp(-(A::MAX as i64), A::MAX as i64) as i32);
            }
        }
    }

    /// The attention sum of a set attention block, in place: every query row
    /// `q_i` of `qm` (`[m, dv]`, any `m`) becomes `O_i = sat(o_q(q_i) +
    /// o_av(a_i))`, where, per head of `dv / heads` channels, `a_i = sum_j p_j
    /// v_j` (wrapping int32) over the first `n` value rows of `vm` and `p =
    /// softmax_q15(q_i . k_j, score)` over the first `n` key rows of `km`,
    /// `n = scores.len()` (`km` and `vm` hold at least `[n, dv]`; `p` holds
    /// `n` values, `av` holds `dv`).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        qm: &mut [A],
        km: &[A],
        vm: &[A],
        dv: usize,
        heads: usize,
        r: AttentionQ,
        scores: &mut [A::Acc],
        p: &mut [u32],
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
                    attend_head::<A, 4>(4, qi, km, vm, dv, c0, r.score, scores, p, av);
                } else {
                    attend_head::<A, 0>(width, qi, km, vm, dv, c0, r.score, scores, p, av);
                }
                for (q, a) in qi[c0..c0 + width].iter_mut().zip(av.iter()) {
                    *q = A::sat(r.o_q.apply(q.get()).saturating_add(r.o_av.apply(*a)));
                }
            }
        }
    }

    /// Adds requantized rows: for every row `q` of `acc` (`width` values
    /// each), `acc[q][c] += r.apply(y[q * step + c])` (wrapping). `step` 0 adds
    /// the same row of `y` to every row.
    fn add_requant(&mut self, acc: &mut [i32], y: &[A], width: usize, step: usize, r: Requant) {
        if width == 0 {
            return;
        }
        for (q, a) in acc.chunks_exact_mut(width).enumerate() {
            for (a, v) in a.iter_mut().zip(&y[q * step..q * step + width]) {
                *a = a.wrapping_add(r.apply(v.get()));
            }
        }
    }

    /// `out[i] = sat(r.apply(acc[i]))` over the shorter slice.
    fn requant(&mut self, acc: &[i32], r: Requant, out: &mut [A]) {
        for (o, a) in out.iter_mut().zip(acc) {
            *o = A::sat(r.apply(*a));
        }
    }

    /// `out[i] = sat(r.apply(x[i]))` over the shorter slice (activations to
    /// another scale).
    fn requant_act(&mut self, x: &[A], r: Requant, out: &mut [A]) {
        for (o, v) in out.iter_mut().zip(x) {
            *o = A::sat(r.apply(v.get()));
        }
    }

    /// One pooled entry of a gather: for each of the `out.len()` channels `c`,
    /// `out[c] = sat(r.apply(v))` where `v` reduces `src[(row * cols + col) *
    /// out.len() + c]` over `rows` x `cs` (the max from `i32::MIN`, or the
    /// wrapping int32 sum).
    #[allow(clippy::too_many_arguments)]
    fn pool(
        &mut self,
        red: Reduction,
        src: &[A],
        cols: usize,
        rows: Range<usize>,
        cs: Range<usize>,
        r: Requant,
        out: &mut [A],
    ) {
        let f = out.len();
        for (c, o) in out.iter_mut().enumerate() {
            let mut v = match red {
                Reduction::Max => i32::MIN,
                Reduction::Mean | Reduction::Sum => 0,
            };
            for row in rows.clone() {
                for col in cs.clone() {
                    let s = src[(row * cols + col) * f + c].get();
                    v = match red {
                        Reduction::Max => v.max(s),
                        Reduction::Mean | Reduction::Sum => v.wrapping_add(s),
                    };
                }
            }
            *o = A::sat(r.apply(v));
        }
    }

    /// Whether [`Kernels::join`] runs its parts at the same time: the
    /// executor then also splits work that costs a little more in two parts
    /// (the rows of a set layer, whose keys and values both parts compute).
    fn parallel(&self) -> bool {
        false
    }

    /// Runs two independent parts of the executor's work, `a` and `b`, and
    /// returns their results. Each part gets kernels of this kind and
    /// `scratch.len()` bytes of scratch (aligned to [`super::ALIGN`]); the
    /// parts write disjoint memory, so they may run at the same time, on
    /// another instance and another scratch. The definition runs `a`, then
    /// `b`, on `self` and `scratch`.
    fn join<F, G, RA, RB>(&mut self, scratch: &mut [u8], a: F, b: G) -> (RA, RB)
    where
        Self: Sized,
        F: FnOnce(&mut Self, &mut [u8]) -> RA + Send,
        G: FnOnce(&mut Self, &mut [u8]) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        let ra = a(self, scratch);
        (ra, b(self, scratch))
    }
}

/// The requantizations of [`Kernels::attention`].
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

impl<A: Act> Kernels<A> for Portable {}

/// `out(o, b[o] + w[o] . x)` for every output `o` of one input row `x`
/// (`w` is `[fout, fin]`): two outputs at a time, no index checks inside.
#[inline(always)]
fn linear_row<A: Act>(
    w: &[i8],
    fin: usize,
    fout: usize,
    b: Option<&[A::Wide]>,
    x: &[A],
    mut out: impl FnMut(usize, A::Acc),
) {
    let bias = |o: usize| b.map_or(A::Acc::default(), |b| A::wide(b[o]));
    if fin == 0 {
        (0..fout).for_each(|o| out(o, bias(o)));
        return;
    }
    let pairs = w[..fout * fin].chunks_exact(2 * fin);
    let last = pairs.remainder();
    for (k, wp) in pairs.enumerate() {
        let (w0, w1) = wp.split_at(fin);
        let (a0, a1) = A::dot2(w0, w1, x, bias(2 * k), bias(2 * k + 1));
        out(2 * k, a0);
        out(2 * k + 1, a1);
    }
    if !last.is_empty() {
        out(fout - 1, A::dot(last, x, bias(fout - 1)));
    }
}

/// One linear layer over `rows` rows, requantized by `q` (`relu` clamps at 0).
#[allow(clippy::too_many_arguments)]
pub fn linear_q<A: Act>(
    k: &mut impl Kernels<A>,
    l: &Linear,
    q: &LinearQ,
    p: QParams<'_>,
    x: &[A],
    rows: usize,
    y: &mut [A],
    relu: bool,
) {
    let (fin, fout) = (l.fin as usize, l.fout as usize);
    let w = p.i8s(l.weight);
    let b = l.bias.map(|b| p.wides::<A>(b));
    let lo = if relu { A::default() } else { A::sat(-A::MAX) };
    k.linear_q(w, b, fin, fout, x, rows, p.requants(q), lo, y);
}

/// The byte sizes of one mode's scratch values, for the layout
/// computations that validation shares with the executor (written once, not
/// once per activation type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSizes {
    /// An activation: 1 or 2.
    pub act: usize,
    /// An accumulator or score: 4 or 8.
    pub acc: usize,
    /// A stored bias or offset: 4 or 8.
    pub wide: usize,
}

impl ModeSizes {
    /// The sizes of activation type `A`'s mode.
    pub const fn of<A: Act>() -> Self {
        ModeSizes {
            act: size_of::<A>(),
            acc: size_of::<A::Acc>(),
            wide: size_of::<A::Wide>(),
        }
    }

    /// The alignment of every scratch region: 4 bytes, or 8 where scores
    /// are `i64`.
    pub fn align(&self) -> usize {
        self.acc.max(4)
    }

    /// `n` bytes rounded up to [`ModeSizes::align`].
    pub fn pad(&self, n: usize) -> usize {
        n.next_multiple_of(self.align())
    }

    /// Bytes an MLP needs besides its input and output: two hidden buffers.
    pub fn mlp_tmp_len(&self, m: &Mlp, rows: usize) -> usize {
        if m.layers.len() > 1 {
            2 * rows * m.layers[0].fout as usize * self.act
        } else {
            0
        }
    }

    /// Bytes a set layer needs for `n` rows of width `k` besides input and output.
    pub fn set_tmp_len(&self, s: &SetLayer, n: usize, k: usize) -> usize {
        let (acc, pad) = (self.acc, |v| self.pad(v));
        match s {
            SetLayer::DeepSets {
                gamma,
                lambda,
                pooling,
            } => {
                let kout = gamma.layers.last().map_or(0, |l| l.fout as usize);
                let attn = match pooling {
                    SetPooling::Attention { .. } => pad(acc * n) + pad(4 * n),
                    SetPooling::Reduce(_) => 0,
                };
                // pooled i32 + pooled activations + lambda i32 + the MLPs' hidden
                // buffers + attention.
                pad(4 * k)
                    + pad(k * self.act)
                    + pad(4 * kout)
                    + pad(self.mlp_tmp_len(lambda, 1))
                    + pad(self.mlp_tmp_len(gamma, n))
                    + attn
            }
            SetLayer::Attention { fc_o, .. } => {
                let dv = fc_o.fout as usize;
                pad(3 * n * dv * self.act) + pad(acc * n) + pad(4 * n) + pad(4 * dv)
            }
        }
    }
}

/// [`ModeSizes::mlp_tmp_len`] of `A`'s mode.
pub fn mlp_tmp_len<A: Act>(m: &Mlp, rows: usize) -> usize {
    ModeSizes::of::<A>().mlp_tmp_len(m, rows)
}

/// Runs every layer but the last (hidden layers with ReLU); returns the input of
/// the last layer (`x` itself when there is one layer). `tmp` holds
/// [`mlp_tmp_len`] bytes' worth of activations.
pub fn mlp_hidden<'t, A: Act>(
    k: &mut impl Kernels<A>,
    m: &Mlp,
    q: &MlpQ,
    p: QParams<'_>,
    x: &'t [A],
    rows: usize,
    tmp: &'t mut [A],
) -> &'t [A] {
    let n = m.layers.len();
    if n <= 1 {
        return x;
    }
    let width = m.layers[0].fout as usize;
    let (a, b) = tmp.split_at_mut(rows * width);
    linear_q(k, &m.layers[0], &q.layers[0], p, x, rows, a, true);
    let mut in_a = true;
    for i in 1..n - 1 {
        if in_a {
            linear_q(k, &m.layers[i], &q.layers[i], p, a, rows, b, true);
        } else {
            linear_q(k, &m.layers[i], &q.layers[i], p, b, rows, a, true);
        }
        in_a = !in_a;
    }
    if in_a {
        a
    } else {
        b
    }
}

/// The whole MLP with its last layer requantized to `y`.
#[allow(clippy::too_many_arguments)]
pub fn mlp<A: Act>(
    k: &mut impl Kernels<A>,
    m: &Mlp,
    q: &MlpQ,
    p: QParams<'_>,
    x: &[A],
    rows: usize,
    y: &mut [A],
    tmp: &mut [A],
) {
    let n = m.layers.len();
    let h = mlp_hidden(k, m, q, p, x, rows, tmp);
    linear_q(k, &m.layers[n - 1], &q.layers[n - 1], p, h, rows, y, false);
}

/// `n` bytes rounded up to the scratch alignment of `A`'s mode.
pub fn pad<A: Act>(n: usize) -> usize {
    ModeSizes::of::<A>().pad(n)
}

/// Splits `n` values of `T` (the region padded to the scratch alignment of
/// `A`'s mode) off the front of an aligned byte buffer.
pub fn take<A: Act, T: bytemuck::Pod>(buf: &mut [u8], n: usize) -> (&mut [T], &mut [u8]) {
    let (a, b) = buf.split_at_mut(pad::<A>(n * size_of::<T>()));
    (bytemuck::cast_slice_mut(&mut a[..n * size_of::<T>()]), b)
}

/// A set layer over the `n` rows of `x` (`[n, k]`), writing the output rows
/// `rows` (of `0..n`) into `y` (`[rows.len(), k_out]`).
#[allow(clippy::too_many_arguments)]
pub fn set_layer<A: Act>(
    kern: &mut impl Kernels<A>,
    s: &SetLayer,
    q: &MapQ,
    p: QParams<'_>,
    x: &[A],
    n: usize,
    k: usize,
    rows: Range<usize>,
    y: &mut [A],
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
            let a = size_of::<A>();
            let (pool32, rest) = take::<A, i32>(tmp, k);
            let (pool_a, rest) = take::<A, A>(rest, k);
            let (lam, rest) = take::<A, i32>(rest, kout);
            let (lam_tmp, rest) = take::<A, A>(rest, mlp_tmp_len::<A>(lambda, 1) / a);
            let (gam_tmp, rest) = take::<A, A>(rest, mlp_tmp_len::<A>(gamma, n) / a);
            match pooling {
                SetPooling::Reduce(red) => pool_rows(*red, x, n, k, pool32),
                SetPooling::Attention { query } => {
                    let (scores, rest) = take::<A, A::Acc>(rest, n);
                    let (pr, _) = take::<A, u32>(rest, n);
                    let qv = p.i8s(*query);
                    for (i, sc) in scores.iter_mut().enumerate() {
                        *sc = A::dot(qv, &x[i * k..(i + 1) * k], A::Acc::default());
                    }
                    softmax_q15(scores, *score, pr);
                    pool32.fill(0);
                    for (i, &pi) in pr.iter().enumerate() {
                        for (acc, &v) in pool32.iter_mut().zip(&x[i * k..(i + 1) * k]) {
                            *acc = acc.wrapping_add((pi as i32).wrapping_mul(v.get()));
                        }
                    }
                }
            }
            for (o, &v) in pool_a.iter_mut().zip(pool32.iter()) {
                *o = A::sat(pooled.apply(v));
            }
            // Lambda: hidden layers, then the last layer's accumulator in the output scale.
            let lh = mlp_hidden(kern, lambda, lq, p, pool_a, 1, lam_tmp);
            let last = &lambda.layers[lambda.layers.len() - 1];
            let rl = p.requants(&lq.layers[lambda.layers.len() - 1]);
            let (lw, lfin) = (p.i8s(last.weight), last.fin as usize);
            let lb = last.bias.map(|b| p.wides::<A>(b));
            kern.linear(lw, lb, lfin, lam.len(), lh, 1, |_, o, acc| {
                lam[o] = acc.requant(rl.get(o))
            });
            // Gamma: hidden layers, then last layer minus Lambda.
            let gh = mlp_hidden(kern, gamma, gq, p, xr, m, gam_tmp);
            let glast = &gamma.layers[gamma.layers.len() - 1];
            let rg = p.requants(&gq.layers[gamma.layers.len() - 1]);
            let (gw, gfin) = (p.i8s(glast.weight), glast.fin as usize);
            let gb = glast.bias.map(|b| p.wides::<A>(b));
            let lam = &*lam;
            kern.linear(gw, gb, gfin, kout, gh, m, |row, o, acc| {
                y[row * kout + o] = A::sat(acc.requant(rg.get(o)).saturating_sub(lam[o]));
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
            let (qkv, rest) = take::<A, A>(tmp, 3 * n * dv);
            let (qm, kv) = qkv.split_at_mut(n * dv);
            let (km, vm) = kv.split_at_mut(n * dv);
            let (scores, rest) = take::<A, A::Acc>(rest, n);
            let (pr, rest) = take::<A, u32>(rest, n);
            let (av, _) = take::<A, i32>(rest, dv);
            // Queries of the rows asked for; keys and values of all.
            let qm = &mut qm[..m * dv];
            linear_q(kern, fc_q, rq, p, xr, m, qm, false);
            linear_q(kern, fc_k, rk, p, x, n, km, false);
            linear_q(kern, fc_v, rv, p, x, n, vm, false);
            let r = AttentionQ {
                score: *score,
                o_q: *o_q,
                o_av: *o_av,
            };
            kern.attention(qm, km, vm, dv, *heads as usize, r, scores, pr, av);
            // Y = O + relu(fc_o(O)), O in place of the queries.
            let ow = p.i8s(fc_o.weight);
            let ob = fc_o.bias.map(|b| p.wides::<A>(b));
            kern.fc_o_residual(ow, ob, dv, qm, m, *y_o, p.requants(y_fc), y);
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
fn attend_head<A: Act, const W: usize>(
    width: usize,
    qi: &[A],
    km: &[A],
    vm: &[A],
    dv: usize,
    c0: usize,
    score: Requant,
    scores: &mut [A::Acc],
    p: &mut [u32],
    av: &mut [i32],
) {
    let width = if W > 0 { W } else { width };
    if dv == 0 {
        return;
    }
    let qi = &qi[c0..c0 + width];
    for (sc, kr) in scores.iter_mut().zip(km.chunks_exact(dv)) {
        *sc = A::dot_act(&kr[c0..c0 + width], qi);
    }
    softmax_q15(scores, score, p);
    let av = &mut av[..width];
    av.fill(0);
    for (&pj, vr) in p[..scores.len()].iter().zip(vm.chunks_exact(dv)) {
        for (acc, &v) in av.iter_mut().zip(&vr[c0..c0 + width]) {
            *acc = acc.wrapping_add((pj as i32).wrapping_mul(v.get()));
        }
    }
}

/// Pools `n` rows of width `k` into int32: the max, or the (wrapping) sum
/// (mean divides later).
pub fn pool_rows<A: Act>(red: Reduction, x: &[A], n: usize, k: usize, out: &mut [i32]) {
    match red {
        Reduction::Max => {
            out.fill(i32::MIN);
            for i in 0..n {
                for (o, &v) in out.iter_mut().zip(&x[i * k..(i + 1) * k]) {
                    *o = (*o).max(v.get());
                }
            }
        }
        Reduction::Mean | Reduction::Sum => {
            out.fill(0);
            for i in 0..n {
                for (o, &v) in out.iter_mut().zip(&x[i * k..(i + 1) * k]) {
                    *o = o.wrapping_add(v.get());
                }
            }
        }
    }
}
