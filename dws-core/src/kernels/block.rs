//! One block of a DWS layer: gather, map, scatter (see [`crate::plan`]).

use super::linear::{mlp_fout, mlp_macs, mlp_rows, mlp_tmp_len};
use super::reduce::reduce_into;
use super::set_layer::{set_fout, set_layer, set_macs, set_tmp_len};
use super::Params;
use crate::observe::{Stage, Tap};
use crate::plan::{Axis, Block, Map, Reduction, SetAxis};

/// The sizes of a block's matrices, derived from its grids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Source grid `(rows, cols)`.
    pub src: (usize, usize),
    /// Destination grid `(rows, cols)`.
    pub dst: (usize, usize),
    /// Rows of the gathered matrix.
    pub n: usize,
    /// Width of a gathered row (`m * F_in`).
    pub k: usize,
    /// Width of a mapped row (`m' * F_out`).
    pub kout: usize,
}

/// Output row width of a map.
pub fn map_fout(m: &Map) -> usize {
    match m {
        Map::Mlp(mlp) => mlp_fout(mlp),
        Map::Set(s) => set_fout(s),
    }
}

/// Scratch a block needs: the gathered matrix, the mapped matrix and the map's own.
pub fn block_tmp_len(b: &Block, d: &Dims) -> usize {
    let map = match &b.map {
        Map::Mlp(m) => mlp_tmp_len(m, d.n),
        Map::Set(s) => set_tmp_len(s, d.n, d.k),
    };
    d.n * d.k + d.n * d.kout + map
}

/// Multiply-adds of a block.
pub fn block_macs(b: &Block, d: &Dims) -> u64 {
    match &b.map {
        Map::Mlp(m) => mlp_macs(m, d.n),
        Map::Set(s) => set_macs(s, d.n),
    }
}

/// The pooled grid size along one axis.
pub fn pooled(size: usize, pool: bool) -> usize {
    if pool {
        1
    } else {
        size
    }
}

/// Which source index (or all, when pooled) feeds row `i`, fold position `j`.
pub(crate) fn source_range(
    b: &Block,
    rows_axis: bool,
    size: usize,
    other: usize,
    i: usize,
    j: usize,
) -> (usize, usize) {
    let (pool, axis, set_here) = if rows_axis {
        (b.pool.rows, Axis::Rows, SetAxis::Rows)
    } else {
        (b.pool.cols, Axis::Cols, SetAxis::Cols)
    };
    if pool {
        return (0, size);
    }
    let at = if b.set_axis == set_here {
        i
    } else if b.fold == axis {
        j
    } else if b.set_axis == SetAxis::Cells {
        if rows_axis {
            i / other
        } else {
            i % other
        }
    } else {
        0
    };
    (at, at + 1)
}

/// Gathers `X[n, m * f]` from the source grid `src` (`[rows, cols, f]`).
pub fn gather(b: &Block, red: Reduction, src: &[f32], d: &Dims, f: usize, x: &mut [f32]) {
    let (rows, cols) = d.src;
    let pc = pooled(cols, b.pool.cols);
    let m = d.k / f;
    for i in 0..d.n {
        for j in 0..m {
            let (r0, r1) = source_range(b, true, rows, pc, i, j);
            let (c0, c1) = source_range(b, false, cols, pc, i, j);
            let out = &mut x[(i * m + j) * f..(i * m + j + 1) * f];
            let width = c1 - c0;
            if r1 - r0 == 1 && width == 1 {
                let at = (r0 * cols + c0) * f;
                out.copy_from_slice(&src[at..at + f]);
            } else {
                reduce_into(red, (r1 - r0) * width, out, |e| {
                    let at = ((r0 + e / width) * cols + c0 + e % width) * f;
                    &src[at..at + f]
                });
            }
        }
    }
}

/// Adds `scale * Y` into the destination grid `dst` (`[rows, cols, f]`).
pub fn scatter(b: &Block, y: &[f32], d: &Dims, f: usize, dst: &mut [f32]) {
    let (rows, cols) = d.dst;
    let m = d.kout / f;
    for r in 0..rows {
        for c in 0..cols {
            let i = match b.place {
                SetAxis::None => 0,
                SetAxis::Rows => r,
                SetAxis::Cols => c,
                SetAxis::Cells => r * cols + c,
            };
            let j = match b.unfold {
                Axis::None => 0,
                Axis::Rows => r,
                Axis::Cols => c,
            };
            let from = &y[(i * m + j) * f..(i * m + j + 1) * f];
            let to = &mut dst[(r * cols + c) * f..(r * cols + c + 1) * f];
            to.iter_mut().zip(from).for_each(|(t, v)| *t += b.scale * v);
        }
    }
}

/// Runs the block: `dst += scale * scatter(map(gather(src)))`.
#[allow(clippy::too_many_arguments)]
pub fn run_block(
    b: &Block,
    p: Params<'_>,
    red: Reduction,
    d: &Dims,
    fin: usize,
    fout: usize,
    src: &[f32],
    dst: &mut [f32],
    tmp: &mut [f32],
    tap: &mut Tap<'_>,
) {
    let (x, rest) = tmp.split_at_mut(d.n * d.k);
    let (y, rest) = rest.split_at_mut(d.n * d.kout);
    gather(b, red, src, d, fin, x);
    tap.at(Stage::X, x);
    match &b.map {
        Map::Mlp(m) => mlp_rows(m, p, x, d.n, y, rest, tap, Stage::Hidden),
        Map::Set(s) => set_layer(s, p, x, d.n, d.k, y, rest, tap),
    }
    tap.at(Stage::Y, y);
    scatter(b, y, d, fout, dst);
}
