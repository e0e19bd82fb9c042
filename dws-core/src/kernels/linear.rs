//! Linear layers and MLPs applied to every row of a matrix.

use super::{relu, Params};
use crate::observe::{Stage, Tap};
use crate::plan::{Linear, Mlp};

/// `y[r] = W x[r] + b` for `rows` rows; `x` is `[rows, fin]`, `y` is `[rows, fout]`.
pub fn linear_rows(l: &Linear, p: Params<'_>, x: &[f32], rows: usize, y: &mut [f32]) {
    let (fin, fout) = (l.fin as usize, l.fout as usize);
    let w = p.get(l.weight);
    let b = l.bias.map(|b| p.get(b));
    for r in 0..rows {
        let xr = &x[r * fin..(r + 1) * fin];
        let yr = &mut y[r * fout..(r + 1) * fout];
        for (o, out) in yr.iter_mut().enumerate() {
            let wo = &w[o * fin..(o + 1) * fin];
            let mut acc = 0.0f32;
            for (a, c) in xr.iter().zip(wo) {
                acc += a * c;
            }
            *out = acc + b.map_or(0.0, |b| b[o]);
        }
    }
}

/// Output width of an MLP.
pub fn mlp_fout(m: &Mlp) -> usize {
    m.layers.last().map_or(0, |l| l.fout as usize)
}

/// Scratch an MLP needs for `rows` rows besides its output.
pub fn mlp_tmp_len(m: &Mlp, rows: usize) -> usize {
    if m.layers.len() > 1 {
        rows * mlp_fout(m)
    } else {
        0
    }
}

/// Multiply-adds of an MLP over `rows` rows.
pub fn mlp_macs(m: &Mlp, rows: usize) -> u64 {
    m.layers
        .iter()
        .map(|l| rows as u64 * l.fin as u64 * l.fout as u64)
        .sum()
}

/// Applies the MLP to every row: `x` is `[rows, fin]`, `y` is `[rows, fout]`,
/// `tmp` holds [`mlp_tmp_len`] elements. Hidden activations ping-pong between
/// `y` and `tmp` so that the last layer lands in `y`. Hidden outputs are
/// reported to `tap` as `hidden(l)`.
pub fn mlp_rows(
    m: &Mlp,
    p: Params<'_>,
    x: &[f32],
    rows: usize,
    y: &mut [f32],
    tmp: &mut [f32],
    tap: &mut Tap<'_>,
    hidden: fn(u8) -> Stage,
) {
    let n = m.layers.len();
    for (k, l) in m.layers.iter().enumerate() {
        let len = rows * l.fout as usize;
        let into_y = (n - 1 - k).is_multiple_of(2);
        match (k == 0, into_y) {
            (true, true) => linear_rows(l, p, x, rows, y),
            (true, false) => linear_rows(l, p, x, rows, tmp),
            (false, true) => linear_rows(l, p, tmp, rows, y),
            (false, false) => linear_rows(l, p, y, rows, tmp),
        }
        if k + 1 < n {
            let h = if into_y {
                &mut y[..len]
            } else {
                &mut tmp[..len]
            };
            relu(h);
            tap.at(hidden(k as u8), h);
        }
    }
}
