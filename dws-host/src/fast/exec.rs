//! Runs a [`Prepared`] model on a chunk of inputs at once.
//!
//! Activations are the core's layout, one input after another
//! (`[input][cell][feature]`). A DWS layer:
//! 1. zeroes its output and its broadcast accumulators, and pools every view of
//!    its input that some block reads (once per layer, not once per block);
//! 2. runs each block over the whole chunk: the gathered rows of every input are
//!    one `[chunk * n, k]` matrix, so each linear is one GEMM and set attention
//!    runs its projections as GEMMs and its core per input; cell-wise MLPs whose
//!    rows are the source tensor's cells run as GEMMs straight from the source
//!    into the destination;
//! 3. adds the mapped rows into the destination, or, when they are broadcast over
//!    an axis, into a small per-axis accumulator;
//! 4. in one last pass per tensor, adds the accumulators along their broadcast
//!    axes and applies a following folded batch norm and ReLU.

use super::attention;
use super::gemm::{gemm, Epi};
use super::ops;
use super::prepare::PoolSlot;
use super::prepare::{
    DsPool, FLayer, FMap, FMlp, FOp, FResample, FSet, Post, Prepared, Target, View,
};
use super::simd::Isa;
use dws_core::plan::Reduction;

/// Buffers one worker reuses from chunk to chunk; they grow to the sizes needed.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    x0: Vec<f32>,
    act: [Vec<f32>; 2],
    pools: Vec<f32>,
    accs: Vec<f32>,
    down: Vec<f32>,
    up: Vec<f32>,
    io: Io,
    s: Scratch,
}

/// A map's input and output.
#[derive(Debug, Default)]
struct Io {
    x: Vec<f32>,
    y: Vec<f32>,
}

/// Everything a map needs besides its input and output.
#[derive(Debug, Default)]
struct Scratch {
    h: [Vec<f32>; 2],
    qkv: Vec<f32>,
    o: Vec<f32>,
    att: Vec<f32>,
    pooled: Vec<f32>,
    lam: Vec<f32>,
}

/// The first `n` floats of `v`, growing it if needed (contents unspecified).
fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Cells per step of a tail block (a multiple of the GEMM's 6-row tile for
/// 32-column grids: 3 rows).
const TAIL_CELLS: usize = 96;

/// Which buffer holds the current activations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cur {
    Input,
    Act(usize),
}

/// Runs `bc` inputs (`[bc, input_len]`, all finite) into `out` (`[bc, output_len]`).
pub(crate) fn run_chunk(
    p: &Prepared,
    isa: Isa,
    ws: &mut Workspace,
    inputs: &[f32],
    bc: usize,
    out: &mut [f32],
) {
    let Workspace {
        x0,
        act,
        pools,
        accs,
        down,
        up,
        io,
        s,
    } = ws;
    let astride = p.cells * p.fmax;
    for a in act.iter_mut() {
        grow(a, bc * astride);
    }
    let ilen = p.input_len;
    let mut normalized = false;
    let mut cur = Cur::Input;
    let mut feats = p.input_features;
    for op in &p.ops {
        match op {
            FOp::Normalize { mean, std } => {
                let x0 = grow(x0, bc * ilen);
                for (xo, xi) in x0.chunks_exact_mut(ilen).zip(inputs.chunks_exact(ilen)) {
                    for (((o, x), m), s) in xo.iter_mut().zip(xi).zip(mean).zip(std) {
                        *o = (x - m) / s;
                    }
                }
                normalized = true;
            }
            FOp::Layer(l) => {
                let next = match cur {
                    Cur::Act(0) => 1,
                    _ => 0,
                };
                let [a0, a1] = act;
                let (src, sstride, dst): (&[f32], usize, &mut [f32]) = match cur {
                    Cur::Input if normalized => (&x0[..bc * ilen], ilen, a0),
                    Cur::Input => (inputs, ilen, a0),
                    Cur::Act(0) => (a0, astride, a1),
                    Cur::Act(_) => (a1, astride, a0),
                };
                let mut bufs = LayerBufs {
                    src,
                    sstride,
                    dst,
                    dstride: astride,
                    pools,
                    accs,
                    down,
                    up,
                    io,
                    s,
                };
                layer(p, isa, l, bc, &mut bufs);
                cur = Cur::Act(next);
                feats = l.fout;
            }
            FOp::Affine { scale, shift } => {
                let x = current(act, cur);
                for b in 0..bc {
                    for (t, &g) in p.grids.iter().enumerate() {
                        let at = b * astride + p.offsets[t] * feats;
                        ops::affine(
                            isa,
                            &mut x[at..at + g.0 * g.1 * feats],
                            &scale[t * feats..(t + 1) * feats],
                            &shift[t * feats..(t + 1) * feats],
                        );
                    }
                }
            }
            FOp::Relu => {
                let x = current(act, cur);
                for b in 0..bc {
                    ops::relu(isa, &mut x[b * astride..b * astride + p.cells * feats]);
                }
            }
            FOp::InputSkip(w) => {
                let x0: &[f32] = if normalized { &x0[..bc * ilen] } else { inputs };
                let x = current(act, cur);
                for b in 0..bc {
                    gemm(
                        isa,
                        p.cells,
                        &x0[b * ilen..(b + 1) * ilen],
                        w.k(),
                        w,
                        &mut x[b * astride..b * astride + p.cells * feats],
                        feats,
                        Epi::Accum,
                    );
                }
            }
            FOp::Head { red, mlp, width } => {
                let x = current(act, cur);
                let v = grow(&mut io.x, bc * width);
                for b in 0..bc {
                    head_pool(
                        p,
                        isa,
                        *red,
                        &x[b * astride..],
                        feats,
                        &mut v[b * width..(b + 1) * width],
                    );
                }
                mlp_rows(isa, mlp, v, bc, out, p.output_len, &mut s.h, Epi::Store);
                return;
            }
        }
    }
    let olen = p.output_len;
    let x: &[f32] = match cur {
        Cur::Input if normalized => x0,
        Cur::Input => inputs,
        Cur::Act(i) => &act[i],
    };
    let stride = if cur == Cur::Input { ilen } else { astride };
    for b in 0..bc {
        out[b * olen..(b + 1) * olen].copy_from_slice(&x[b * stride..b * stride + olen]);
    }
}

fn current(act: &mut [Vec<f32>; 2], cur: Cur) -> &mut [f32] {
    match cur {
        Cur::Act(1) => &mut act[1],
        _ => &mut act[0],
    }
}

/// The buffers of one layer's run.
struct LayerBufs<'a> {
    src: &'a [f32],
    sstride: usize,
    dst: &'a mut [f32],
    dstride: usize,
    pools: &'a mut Vec<f32>,
    accs: &'a mut Vec<f32>,
    down: &'a mut Vec<f32>,
    up: &'a mut Vec<f32>,
    io: &'a mut Io,
    s: &'a mut Scratch,
}

/// Cell offset and cell count of tensor `t` in a buffer laid out for `p`'s grids.
fn span(p: &Prepared, t: usize) -> (usize, usize) {
    let g = p.grids[t];
    (p.offsets[t], g.0 * g.1)
}

fn layer(p: &Prepared, isa: Isa, l: &FLayer, bc: usize, bb: &mut LayerBufs<'_>) {
    let (fin, fout) = (l.fin, l.fout);
    let (sstride, dstride) = (bb.sstride, bb.dstride);
    for b in 0..bc {
        for (t, _) in l.zero.iter().enumerate().filter(|(_, z)| **z) {
            let (off, cells) = span(p, t);
            bb.dst[b * dstride + off * fout..b * dstride + (off + cells) * fout].fill(0.0);
        }
    }
    // The inner W_0 of a resampling layer: down-sampled input, up-sampled output.
    let inner0 = l.grids[0].0 * l.grids[0].1;
    let resampled = l.resample.is_some();
    if let Some(r) = &l.resample {
        resample_in(p, isa, l, r, bc, bb);
        grow(bb.up, bc * inner0 * fout).fill(0.0);
    }
    let src: &[f32] = bb.src;
    let down: &[f32] = bb.down;
    let dst: &mut [f32] = bb.dst;
    let up: &mut [f32] = bb.up;
    let io: &mut Io = bb.io;
    let s: &mut Scratch = bb.s;
    let accs = grow(bb.accs, bc * l.acc_len);
    accs.fill(0.0);
    // Source tensor t of input b (inside the layer's grids).
    let source = |b: usize, t: usize| -> &[f32] {
        if resampled && t == 0 {
            &down[b * inner0 * fin..(b + 1) * inner0 * fin]
        } else {
            let (off, cells) = span(p, t);
            &src[b * sstride + off * fin..b * sstride + (off + cells) * fin]
        }
    };
    // Where destination tensor t of input b lives: (in `up`, start, cells).
    let dest = |b: usize, t: usize| -> (bool, usize, usize) {
        if resampled && t == 0 {
            (true, b * inner0 * fout, inner0)
        } else {
            let (off, cells) = span(p, t);
            (false, b * dstride + off * fout, cells)
        }
    };
    // Pool every view some block reads, once (unless the previous layer did).
    let pools = grow(bb.pools, bc * l.pool_len);
    for b in (0..bc).filter(|_| !l.fed) {
        for (t, slot) in l.pools.iter().enumerate() {
            if slot.over_rows.is_some() || slot.over_cols.is_some() || slot.over_both.is_some() {
                let (rows, cols) = l.grids[t];
                let area = &mut pools[b * l.pool_len..(b + 1) * l.pool_len];
                ops::pool_views(isa, l.red, source(b, t), (rows, cols, fin), slot, area);
            }
        }
    }
    let pools: &[f32] = pools;
    for blk in l.blocks.iter().filter(|b| !b.tail) {
        if blk.direct {
            let FMap::Mlp(mlp) = &blk.map else {
                unreachable!("direct blocks are MLPs")
            };
            for b in 0..bc {
                let x = source(b, blk.src);
                let (in_up, at, cells) = dest(b, blk.dst);
                let y = if in_up {
                    &mut up[at..at + cells * fout]
                } else {
                    &mut dst[at..at + cells * fout]
                };
                // One-to-one maps: the tensor's memory is the `[n, m * fin]`
                // matrix, the destination's the `[n, m_out * fout]` one.
                let epi = if blk.store { Epi::Store } else { Epi::Accum };
                mlp_rows(isa, mlp, x, blk.n, y, blk.m_out * fout, &mut s.h, epi);
            }
            continue;
        }
        // Gather.
        let (n, k) = (blk.n, blk.m * fin);
        let rows = bc * n;
        let view = |b: usize| -> &[f32] {
            match blk.view {
                View::Tensor => source(b, blk.src),
                View::Pool(off) => {
                    let at = b * l.pool_len + off;
                    &pools[at..at + blk.view_cells * fin]
                }
            }
        };
        let x: &[f32] = if bc == 1 && blk.gather.is_none() {
            view(0)
        } else {
            let x = grow(&mut io.x, rows * k);
            for b in 0..bc {
                let xb = &mut x[b * n * k..(b + 1) * n * k];
                ops::gather(isa, xb, view(b), fin, blk.gather.as_deref());
            }
            x
        };
        // Map.
        let kout = blk.m_out * fout;
        let y = grow(&mut io.y, rows * kout);
        match &blk.map {
            FMap::Mlp(mlp) => mlp_rows(isa, mlp, x, rows, y, kout, &mut s.h, Epi::Store),
            FMap::Set(set) => set_rows(isa, set, x, bc, n, k, y, s),
        }
        // Scatter.
        let y: &[f32] = y;
        for b in 0..bc {
            let yb = &y[b * n * kout..(b + 1) * n * kout];
            let tgt: &mut [f32] = match blk.target {
                Target::Full => {
                    let (in_up, at, cells) = dest(b, blk.dst);
                    if in_up {
                        &mut up[at..at + cells * fout]
                    } else {
                        &mut dst[at..at + cells * fout]
                    }
                }
                Target::Acc(off) => {
                    let at = b * l.acc_len + off;
                    &mut accs[at..at + blk.target_cells * fout]
                }
            };
            ops::scatter(isa, tgt, yb, fout, blk.scatter.as_deref(), blk.scale);
        }
    }
    // Broadcast the accumulators, apply what follows the layer and pool the
    // result for the next layer, in one pass per tensor. A tensor written by a
    // tail block gets it here, a few grid rows at a time, finished while in cache.
    let accs: &[f32] = accs;
    let nothing = Post::default();
    let base = grow(&mut s.pooled, fout);
    let feed = l.feed.as_ref();
    let feed_area = grow(bb.pools, bc * feed.map_or(0, |fd| fd.pool_len));
    let [h0, h1] = &mut s.h;
    let mut h = [std::mem::take(h0), std::mem::take(h1)];
    for b in 0..bc {
        let area = &accs[b * l.acc_len..(b + 1) * l.acc_len];
        let get = |o: Option<usize>, len: usize| o.map(|o| &area[o..o + len * fout]);
        let mut fa = feed.map(|fd| &mut feed_area[b * fd.pool_len..(b + 1) * fd.pool_len]);
        for (t, slot) in l.accs.iter().enumerate() {
            let (rows, cols) = l.grids[t];
            let (in_up, at, cells) = dest(b, t);
            let (x, post) = if in_up {
                (&mut up[at..at + cells * fout], &nothing)
            } else {
                (&mut dst[at..at + cells * fout], &l.post)
            };
            let post = ops::Post {
                affine: post
                    .affine
                    .as_ref()
                    .map(|(s, h)| (&s[t * fout..(t + 1) * fout], &h[t * fout..(t + 1) * fout])),
                relu: post.relu,
            };
            let accs = [get(slot.rows, rows), get(slot.cols, cols), get(slot.all, 1)];
            let dims = (rows, cols, fout);
            let mut pool = match (feed, fa.as_deref_mut()) {
                (Some(fd), Some(area)) if fd.pools[t] != PoolSlot::default() => {
                    Some(ops::Pooler::new(fd.red, dims, &fd.pools[t], area))
                }
                _ => None,
            };
            let tail = l.blocks.iter().find(|blk| blk.tail && blk.dst == t);
            if let Some(blk) = tail {
                let FMap::Mlp(mlp) = &blk.map else {
                    unreachable!("tail blocks are MLPs")
                };
                let xs = source(b, blk.src);
                let step = (TAIL_CELLS / cols).max(1);
                let mut r0 = 0;
                while r0 < rows {
                    let r1 = (r0 + step).min(rows);
                    let (q0, q1) = (r0 * cols, r1 * cols);
                    let y = &mut x[q0 * fout..q1 * fout];
                    mlp_rows(
                        isa,
                        mlp,
                        &xs[q0 * fin..q1 * fin],
                        q1 - q0,
                        y,
                        fout,
                        &mut h,
                        Epi::Store,
                    );
                    ops::finish_rows(isa, y, r0, dims, accs, &post, pool.as_mut(), base);
                    r0 = r1;
                }
            } else if accs.iter().any(Option::is_some) || post.affine.is_some() || post.relu {
                ops::finish_rows(isa, x, 0, dims, accs, &post, pool.as_mut(), base);
            } else if let Some(p) = pool.as_mut() {
                ops::pool_rows(isa, x, 0, cols * fout, p);
            }
            if let Some(p) = pool {
                p.end();
            }
        }
    }
    let [h0, h1] = h;
    s.h = [h0, h1];
    if let Some(r) = &l.resample {
        resample_out(p, isa, l, r, bc, bb);
    }
}

/// Applies an MLP to `rows` rows of `x` (`[rows, k]`): hidden layers with ReLU go
/// through `h`, the last lands in `y` (row stride `ldy`) through `last`.
#[allow(clippy::too_many_arguments)]
fn mlp_rows(
    isa: Isa,
    mlp: &FMlp,
    x: &[f32],
    rows: usize,
    y: &mut [f32],
    ldy: usize,
    h: &mut [Vec<f32>; 2],
    last: Epi<'_>,
) {
    let nl = mlp.layers.len();
    let [h0, h1] = h;
    // Which hidden buffer holds the current layer's input (`None`: `x`).
    let mut inp: Option<bool> = None;
    for (i, w) in mlp.layers.iter().enumerate() {
        let k = w.k();
        if i + 1 == nl {
            let a: &[f32] = match inp {
                None => x,
                Some(false) => h0,
                Some(true) => h1,
            };
            gemm(isa, rows, a, k, w, y, ldy, last);
        } else {
            let need = rows * w.n();
            match inp {
                None => gemm(isa, rows, x, k, w, grow(h0, need), w.n(), Epi::Relu),
                Some(false) => gemm(isa, rows, h0, k, w, grow(h1, need), w.n(), Epi::Relu),
                Some(true) => gemm(isa, rows, h1, k, w, grow(h0, need), w.n(), Epi::Relu),
            }
            inp = Some(inp == Some(false));
        }
    }
}

/// Applies a set layer to `groups` groups of `n` rows of `x` (`[groups * n, k]`),
/// writing `y` (`[groups * n, fout]`).
#[allow(clippy::too_many_arguments)]
fn set_rows(
    isa: Isa,
    set: &FSet,
    x: &[f32],
    groups: usize,
    n: usize,
    k: usize,
    y: &mut [f32],
    s: &mut Scratch,
) {
    let rows = groups * n;
    match set {
        FSet::DeepSets {
            gamma,
            lambda,
            pool,
        } => {
            let kout = gamma.fout();
            mlp_rows(isa, gamma, x, rows, y, kout, &mut s.h, Epi::Store);
            let pooled = grow(&mut s.pooled, groups * k);
            for g in 0..groups {
                let xs = &x[g * n * k..(g + 1) * n * k];
                let o = &mut pooled[g * k..(g + 1) * k];
                match pool {
                    DsPool::Reduce(red) => ops::pool_views(
                        isa,
                        *red,
                        xs,
                        (n, 1, k),
                        &PoolSlot {
                            over_rows: Some(0),
                            ..Default::default()
                        },
                        o,
                    ),
                    DsPool::Attention(q) => attention_pool(q, xs, n, k, o),
                }
            }
            let lam = grow(&mut s.lam, groups * kout);
            mlp_rows(
                isa,
                lambda,
                &s.pooled[..groups * k],
                groups,
                lam,
                kout,
                &mut s.h,
                Epi::Store,
            );
            for g in 0..groups {
                let l = &s.lam[g * kout..(g + 1) * kout];
                for row in y[g * n * kout..(g + 1) * n * kout].chunks_exact_mut(kout) {
                    row.iter_mut().zip(l).for_each(|(v, l)| *v -= l);
                }
            }
        }
        FSet::Sab { heads, dv, qkv, o } => {
            let dv = *dv;
            let q = grow(&mut s.qkv, rows * 3 * dv);
            gemm(isa, rows, x, k, qkv, q, 3 * dv, Epi::Store);
            let ov = grow(&mut s.o, rows * dv);
            let tmp = grow(&mut s.att, attention::scratch_len(n, dv));
            attention::attention(isa, groups, n, dv, *heads, &s.qkv[..rows * 3 * dv], ov, tmp);
            let ov: &[f32] = ov;
            gemm(
                isa,
                rows,
                ov,
                dv,
                o,
                y,
                dv,
                Epi::ResidualRelu { r: ov, ldr: dv },
            );
        }
    }
}

/// Attention pooling: `out = sum_i softmax_i(x_i . q) x_i`.
fn attention_pool(q: &[f32], x: &[f32], n: usize, k: usize, out: &mut [f32]) {
    let scores: Vec<f32> = (0..n)
        .map(|i| {
            x[i * k..(i + 1) * k]
                .iter()
                .zip(q)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
    let z: f32 = e.iter().sum();
    out.fill(0.0);
    for (i, a) in e.iter().enumerate() {
        let a = a / z;
        out.iter_mut()
            .zip(&x[i * k..(i + 1) * k])
            .for_each(|(o, v)| *o += a * v);
    }
}

/// The `W_0` input side of a resampling layer: `dst W_0 = skip(src W_0)` and
/// `down = resample(src W_0)` (a set layer over `d_1` per feature).
fn resample_in(
    p: &Prepared,
    isa: Isa,
    l: &FLayer,
    r: &FResample,
    bc: usize,
    bb: &mut LayerBufs<'_>,
) {
    let (fin, fout) = (l.fin, l.fout);
    let (d0, d1) = p.grids[0];
    let ds = r.rows;
    for b in 0..bc {
        let x = &bb.src[b * bb.sstride..b * bb.sstride + d0 * d1 * fin];
        let y = &mut bb.dst[b * bb.dstride..b * bb.dstride + d0 * d1 * fout];
        mlp_rows(isa, &r.skip, x, d0 * d1, y, fout, &mut bb.s.h, Epi::Store);
    }
    // Groups are (input, feature): rows n over d_1, width d_0.
    let groups = bc * fin;
    let x = grow(&mut bb.io.x, groups * d1 * d0);
    for b in 0..bc {
        let w0 = &bb.src[b * bb.sstride..];
        for ch in 0..fin {
            let g = b * fin + ch;
            for n in 0..d1 {
                for k in 0..d0 {
                    x[(g * d1 + n) * d0 + k] = w0[(k * d1 + n) * fin + ch];
                }
            }
        }
    }
    let y = grow(&mut bb.io.y, groups * d1 * ds);
    set_rows(
        isa,
        &r.down,
        &bb.io.x[..groups * d1 * d0],
        groups,
        d1,
        d0,
        y,
        bb.s,
    );
    let down = grow(bb.down, bc * ds * d1 * fin);
    for b in 0..bc {
        for ch in 0..fin {
            let g = b * fin + ch;
            for n in 0..d1 {
                for rr in 0..ds {
                    down[b * ds * d1 * fin + (rr * d1 + n) * fin + ch] =
                        bb.io.y[(g * d1 + n) * ds + rr];
                }
            }
        }
    }
}

/// The output side: `dst W_0 += resample(up)`, then what follows the layer.
fn resample_out(
    p: &Prepared,
    isa: Isa,
    l: &FLayer,
    r: &FResample,
    bc: usize,
    bb: &mut LayerBufs<'_>,
) {
    let fout = l.fout;
    let (d0, d1) = p.grids[0];
    let ds = r.rows;
    let groups = bc * fout;
    let x = grow(&mut bb.io.x, groups * d1 * ds);
    for b in 0..bc {
        let up = &bb.up[b * ds * d1 * fout..];
        for ch in 0..fout {
            let g = b * fout + ch;
            for n in 0..d1 {
                for k in 0..ds {
                    x[(g * d1 + n) * ds + k] = up[(k * d1 + n) * fout + ch];
                }
            }
        }
    }
    let y = grow(&mut bb.io.y, groups * d1 * d0);
    set_rows(
        isa,
        &r.up,
        &bb.io.x[..groups * d1 * ds],
        groups,
        d1,
        ds,
        y,
        bb.s,
    );
    for b in 0..bc {
        let w0 = &mut bb.dst[b * bb.dstride..];
        for ch in 0..fout {
            let g = b * fout + ch;
            for n in 0..d1 {
                for rr in 0..d0 {
                    w0[(rr * d1 + n) * fout + ch] += bb.io.y[(g * d1 + n) * d0 + rr];
                }
            }
        }
    }
    // Resampling layers do not fuse what follows (see `prepare`): the plan's
    // Affine and ReLU ops run next.
}

/// The invariant head's pooled vector of one input (`x` starts at its activations).
fn head_pool(p: &Prepared, isa: Isa, red: Reduction, x: &[f32], f: usize, v: &mut [f32]) {
    let l = p.dims.len() - 1;
    let tensor = |t: usize| {
        let (off, cells) = span(p, t);
        &x[off * f..(off + cells) * f]
    };
    let mut pos = 0;
    let both = PoolSlot {
        over_both: Some(0),
        ..Default::default()
    };
    for t in 1..l - 1 {
        let (r, c) = p.grids[t];
        ops::pool_views(isa, red, tensor(t), (r, c, f), &both, &mut v[pos..pos + f]);
        pos += f;
    }
    let (d0, d1) = p.grids[0];
    let over_cols = PoolSlot {
        over_cols: Some(0),
        ..Default::default()
    };
    ops::pool_views(
        isa,
        red,
        tensor(0),
        (d0, d1, f),
        &over_cols,
        &mut v[pos..pos + d0 * f],
    );
    pos += d0 * f;
    let (dl1, dl) = p.grids[l - 1];
    let over_rows = PoolSlot {
        over_rows: Some(0),
        ..Default::default()
    };
    ops::pool_views(
        isa,
        red,
        tensor(l - 1),
        (dl1, dl, f),
        &over_rows,
        &mut v[pos..pos + dl * f],
    );
    pos += dl * f;
    for i in 0..l - 1 {
        let (r, c) = p.grids[l + i];
        ops::pool_views(
            isa,
            red,
            tensor(l + i),
            (r, c, f),
            &both,
            &mut v[pos..pos + f],
        );
        pos += f;
    }
    let last = tensor(2 * l - 1);
    v[pos..pos + last.len()].copy_from_slice(last);
}
