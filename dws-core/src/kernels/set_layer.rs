//! Set layers: DeepSets (`ds`) and multi-head set attention (`sab`).

use super::linear::{linear_rows, mlp_fout, mlp_macs, mlp_rows, mlp_tmp_len};
use super::reduce::reduce_into;
use super::{relu, softmax, Params};
use crate::observe::{Stage, Tap};
use crate::plan::{SetLayer, SetPooling};

/// Output row width of a set layer.
pub fn set_fout(s: &SetLayer) -> usize {
    match s {
        SetLayer::DeepSets { gamma, .. } => mlp_fout(gamma),
        SetLayer::Attention { fc_o, .. } => fc_o.fout as usize,
    }
}

/// Scratch a set layer needs for `n` rows of width `k`, besides its output.
pub fn set_tmp_len(s: &SetLayer, n: usize, k: usize) -> usize {
    match s {
        SetLayer::DeepSets {
            gamma,
            lambda,
            pooling,
        } => {
            let scores = match pooling {
                SetPooling::Attention { .. } => n,
                SetPooling::Reduce(_) => 0,
            };
            mlp_tmp_len(gamma, n) + k + mlp_fout(lambda) + mlp_tmp_len(lambda, 1) + scores
        }
        SetLayer::Attention { fc_o, .. } => {
            let dv = fc_o.fout as usize;
            3 * n * dv + n + dv
        }
    }
}

/// Multiply-adds of a set layer over `n` rows.
pub fn set_macs(s: &SetLayer, n: usize) -> u64 {
    match s {
        SetLayer::DeepSets { gamma, lambda, .. } => mlp_macs(gamma, n) + mlp_macs(lambda, 1),
        SetLayer::Attention {
            fc_q,
            fc_k,
            fc_v,
            fc_o,
            ..
        } => {
            let n = n as u64;
            let proj = |l: &crate::plan::Linear| n * l.fin as u64 * l.fout as u64;
            proj(fc_q) + proj(fc_k) + proj(fc_v) + proj(fc_o) + 2 * n * n * fc_o.fout as u64
        }
    }
}

/// Applies a set layer to the `n` rows of `x` (`[n, k]`), writing `y` (`[n, set_fout]`).
pub fn set_layer(
    s: &SetLayer,
    p: Params<'_>,
    x: &[f32],
    n: usize,
    k: usize,
    y: &mut [f32],
    tmp: &mut [f32],
    tap: &mut Tap<'_>,
) {
    match s {
        SetLayer::DeepSets {
            gamma,
            lambda,
            pooling,
        } => {
            let (gamma_tmp, rest) = tmp.split_at_mut(mlp_tmp_len(gamma, n));
            let (pooled, rest) = rest.split_at_mut(k);
            let kout = mlp_fout(lambda);
            let (lam, rest) = rest.split_at_mut(kout);
            let (lam_tmp, rest) = rest.split_at_mut(mlp_tmp_len(lambda, 1));
            match pooling {
                SetPooling::Reduce(red) => reduce_into(*red, n, pooled, |i| &x[i * k..(i + 1) * k]),
                SetPooling::Attention { query } => {
                    attention_pool(p.get(*query), x, k, pooled, &mut rest[..n])
                }
            }
            tap.at(Stage::Pooled, pooled);
            mlp_rows(lambda, p, pooled, 1, lam, lam_tmp, tap, Stage::LambdaHidden);
            mlp_rows(gamma, p, x, n, y, gamma_tmp, tap, Stage::Hidden);
            for row in y[..n * kout].chunks_exact_mut(kout) {
                row.iter_mut().zip(lam.iter()).for_each(|(v, l)| *v -= l);
            }
        }
        SetLayer::Attention {
            heads,
            fc_q,
            fc_k,
            fc_v,
            fc_o,
        } => {
            let dv = fc_o.fout as usize;
            let (q, rest) = tmp.split_at_mut(n * dv);
            let (kk, rest) = rest.split_at_mut(n * dv);
            let (v, rest) = rest.split_at_mut(n * dv);
            let (scores, row) = rest.split_at_mut(n);
            linear_rows(fc_q, p, x, n, q);
            linear_rows(fc_k, p, x, n, kk);
            linear_rows(fc_v, p, x, n, v);
            tap.at(Stage::Q, q);
            tap.at(Stage::K, kk);
            tap.at(Stage::V, v);
            let width = dv / *heads as usize;
            let norm = libm::sqrtf(dv as f32);
            for h in 0..*heads as usize {
                let cols = h * width..(h + 1) * width;
                for i in 0..n {
                    let qi = &q[i * dv..][cols.clone()];
                    for (j, s) in scores.iter_mut().enumerate() {
                        let kj = &kk[j * dv..][cols.clone()];
                        *s = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() / norm;
                    }
                    softmax(scores);
                    let yi = &mut y[i * dv..][cols.clone()];
                    for (c, out) in yi.iter_mut().enumerate() {
                        let mut acc = 0.0f32;
                        for (j, a) in scores.iter().enumerate() {
                            acc += a * v[j * dv + h * width + c];
                        }
                        *out = qi[c] + acc;
                    }
                }
            }
            tap.at(Stage::O, &y[..n * dv]);
            for i in 0..n {
                let yi = &mut y[i * dv..(i + 1) * dv];
                linear_rows(fc_o, p, yi, 1, &mut row[..dv]);
                relu(&mut row[..dv]);
                yi.iter_mut().zip(row.iter()).for_each(|(o, r)| *o += r);
            }
        }
    }
}

/// Attention pooling (upstream `Attn`): `out = sum_n softmax_n(x_n . query) x_n`.
fn attention_pool(query: &[f32], x: &[f32], k: usize, out: &mut [f32], scores: &mut [f32]) {
    for (i, s) in scores.iter_mut().enumerate() {
        *s = x[i * k..(i + 1) * k]
            .iter()
            .zip(query)
            .map(|(a, b)| a * b)
            .sum();
    }
    softmax(scores);
    out.fill(0.0);
    for (i, a) in scores.iter().enumerate() {
        out.iter_mut()
            .zip(&x[i * k..(i + 1) * k])
            .for_each(|(o, v)| *o += a * v);
    }
}
