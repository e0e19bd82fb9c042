//! Integer kernels: linear layers, MLPs, pooling and set layers on int8 rows.
//!
//! Every function follows `docs/int8.md`; the slices are sized by the int8
//! validation, so they are indexed directly.

use super::P8;
use crate::plan::{Linear, Mlp, Reduction, SetLayer, SetPooling};
use crate::quant::{sat8, softmax_q15, MapQ, MlpQ, Requant};

/// `b[o] + sum_i x[i] * w[o, i]` in int32.
#[inline(always)]
pub fn dot_acc(w: &[i8], x: &[i8], bias: i32) -> i32 {
    let mut acc = bias;
    for (a, b) in x.iter().zip(w) {
        // Wrapping: a blob may hold any int32 bias; overflow must not panic.
        acc = acc.wrapping_add(*a as i32 * *b as i32);
    }
    acc
}

/// One linear layer over `rows` rows with requantization to int8 (`relu` clamps at 0).
pub fn linear8(l: &Linear, p: P8<'_>, r: Requant, x: &[i8], rows: usize, y: &mut [i8], relu: bool) {
    let (fin, fout) = (l.fin as usize, l.fout as usize);
    let w = p.i8s(l.weight);
    let b = l.bias.map(|b| p.i32s(b));
    let lo = if relu { 0 } else { -127 };
    for row in 0..rows {
        let xr = &x[row * fin..(row + 1) * fin];
        for o in 0..fout {
            let acc = dot_acc(&w[o * fin..(o + 1) * fin], xr, b.map_or(0, |b| b[o]));
            y[row * fout + o] = (sat8(r.apply(acc)) as i32).max(lo) as i8;
        }
    }
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
    linear8(&m.layers[0], p, q.layers[0], x, rows, a, true);
    let mut in_a = true;
    for k in 1..n - 1 {
        if in_a {
            linear8(&m.layers[k], p, q.layers[k], a, rows, b, true);
        } else {
            linear8(&m.layers[k], p, q.layers[k], b, rows, a, true);
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
pub fn mlp8(m: &Mlp, q: &MlpQ, p: P8<'_>, x: &[i8], rows: usize, y: &mut [i8], tmp: &mut [i8]) {
    let n = m.layers.len();
    let h = mlp8_hidden(m, q, p, x, rows, tmp);
    linear8(&m.layers[n - 1], p, q.layers[n - 1], h, rows, y, false);
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
            (3 * n * dv).next_multiple_of(4) + 8 * n + 4 * dv + dv.next_multiple_of(4)
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

/// A set layer over the `n` rows of `x` (`[n, k]`), writing int8 `y`.
#[allow(clippy::too_many_arguments)]
pub fn set8(
    s: &SetLayer,
    q: &MapQ,
    p: P8<'_>,
    x: &[i8],
    n: usize,
    k: usize,
    y: &mut [i8],
    tmp: &mut [u8],
) {
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
            let lh = mlp8_hidden(lambda, lq, p, pool8, 1, bytemuck::cast_slice_mut(lam_tmp));
            let last = &lambda.layers[lambda.layers.len() - 1];
            let rl = lq.layers[lambda.layers.len() - 1];
            let (lw, lfin) = (p.i8s(last.weight), last.fin as usize);
            let lb = last.bias.map(|b| p.i32s(b));
            for (o, l) in lam.iter_mut().enumerate() {
                *l = rl.apply(dot_acc(
                    &lw[o * lfin..(o + 1) * lfin],
                    lh,
                    lb.map_or(0, |b| b[o]),
                ));
            }
            // Gamma: hidden layers, then last layer minus Lambda.
            let gh = mlp8_hidden(gamma, gq, p, x, n, bytemuck::cast_slice_mut(gam_tmp));
            let glast = &gamma.layers[gamma.layers.len() - 1];
            let rg = gq.layers[gamma.layers.len() - 1];
            let (gw, gfin) = (p.i8s(glast.weight), glast.fin as usize);
            let gb = glast.bias.map(|b| p.i32s(b));
            for row in 0..n {
                let xr = &gh[row * gfin..(row + 1) * gfin];
                for o in 0..kout {
                    let acc = dot_acc(&gw[o * gfin..(o + 1) * gfin], xr, gb.map_or(0, |b| b[o]));
                    y[row * kout + o] = sat8(rg.apply(acc).saturating_sub(lam[o]));
                }
            }
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
            let (av, rest) = take_i32(rest, dv);
            let (orow, _) = take_i8(rest, dv);
            linear8(fc_q, p, *rq, x, n, qm, false);
            linear8(fc_k, p, *rk, x, n, km, false);
            linear8(fc_v, p, *rv, x, n, vm, false);
            let width = dv / *heads as usize;
            let (ow, ofin) = (p.i8s(fc_o.weight), fc_o.fin as usize);
            let ob = fc_o.bias.map(|b| p.i32s(b));
            for i in 0..n {
                for h in 0..*heads as usize {
                    let c0 = h * width;
                    let qi = &qm[i * dv + c0..i * dv + c0 + width];
                    for (j, sc) in scores.iter_mut().enumerate() {
                        *sc = dot_acc(&km[j * dv + c0..j * dv + c0 + width], qi, 0);
                    }
                    softmax_q15(scores, *score, bytemuck::cast_slice_mut(e));
                    av[..width].fill(0);
                    for (j, &pj) in scores.iter().enumerate() {
                        for (acc, &v) in av[..width]
                            .iter_mut()
                            .zip(&vm[j * dv + c0..j * dv + c0 + width])
                        {
                            *acc += pj * v as i32;
                        }
                    }
                    for c in 0..width {
                        orow[c0 + c] = sat8(o_q.apply(qi[c] as i32) + o_av.apply(av[c]));
                    }
                }
                for c in 0..dv {
                    let acc = dot_acc(&ow[c * ofin..(c + 1) * ofin], orow, ob.map_or(0, |b| b[c]));
                    y[i * dv + c] = sat8(y_o.apply(orow[c] as i32) + y_fc.apply(acc.max(0)));
                }
            }
        }
        _ => {}
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
