//! The quantized executor (see `docs/quantization.md`), one for both modes.

use super::act::{Accum, Act};
use super::kernels::{mlp, mlp_hidden, mlp_tmp_len, pad, pool_rows, set_layer, take, Kernels};
use super::{is_cellwise, next_quant, QLayout, QParams};
use crate::kernels::block::{source_range, Dims};
use crate::plan::{
    Axis, Block, DwsLayer, Head, Linear, Map, Mlp, Op, Reduction, SetAxis, SetLayer,
};
use crate::quant::{BlockQ, LogitScale, MapQ, Quant, Requant, ResampleQ};
use crate::shape::Shape;
use crate::validate::block_dims;
use crate::{Error, Ops};
use core::mem::size_of;
use core::ops::Range;

/// The input of a quantized run.
#[derive(Debug, Clone, Copy)]
pub enum Input<'i, A> {
    /// f32 values, quantized with the model's input scales.
    F32(&'i [f32]),
    /// Already quantized values with one scale per tensor (dequantized, normalized
    /// if the model normalizes, and requantized to the model's input scales).
    Quantized(&'i [A], &'i [f32]),
}

/// One scratch region carved off the front of `buf`.
fn carve(buf: &mut [u8], n: usize) -> (&mut [u8], &mut [u8]) {
    buf.split_at_mut(n)
}

/// A region as activations (its length is a multiple of their size).
fn acts<A: Act>(b: &mut [u8]) -> &mut [A] {
    bytemuck::cast_slice_mut(b)
}

/// The first `n` activations of a region.
fn acts_n<A: Act>(b: &mut [u8], n: usize) -> &mut [A] {
    &mut acts::<A>(b)[..n]
}

/// Runs a quantized plan. The caller checked lengths; `scratch` holds
/// `l8.bytes()` bytes starting 4-aligned.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_q<A: Act>(
    k: &mut impl Kernels<A>,
    shape: &Shape,
    input_features: usize,
    ops: Ops<'_>,
    p: QParams<'_>,
    l8: &QLayout,
    input: Input<'_, A>,
    scratch: &mut [u8],
    output: &mut [f32],
) -> Result<(), Error> {
    // Align the regions: `slack` covers the distance to the next multiple of
    // the mode's alignment.
    let skip = scratch
        .as_ptr()
        .align_offset(super::align::<A>())
        .min(l8.slack);
    let scratch = &mut scratch[skip..l8.bytes() - l8.slack + skip];
    let (x0, rest) = carve(scratch, l8.x0);
    let (a, rest) = carve(rest, l8.act);
    let (b, rest) = carve(rest, l8.act);
    let (down, rest) = carve(rest, l8.down);
    let (up, rest) = carve(rest, l8.up);
    let (ystore, rest) = carve(rest, l8.ystore);
    // The accumulator row and the temporaries, one region: what each part of a
    // layer's work needs (`Kernels::join`).
    let work = &mut rest[..l8.accrow + l8.tmp];
    let (x0, a, b) = (acts::<A>(x0), acts::<A>(a), acts::<A>(b));
    let (down, up, ystore) = (acts::<A>(down), acts::<A>(up), acts::<A>(ystore));

    let mut ops = ops;
    let mut norm = None;
    let mut cur_is_a: Option<bool> = None;
    let mut feats = input_features;
    let t_count = shape.tensors();
    let cells = shape.total_cells();
    while let Some(op) = ops.next() {
        match op? {
            Op::Normalize { mean, std } => norm = Some((p.f32s(mean), p.f32s(std))),
            Op::Quant(Quant::Input { scales }) => {
                quantize_input(shape, input_features, input, norm, &scales, x0)
            }
            Op::Dws(l) => {
                let Quant::Layer { out, resample } = next_quant(&mut ops)? else {
                    return Err(Error::InvalidPlan("DWS layer without its quantization"));
                };
                let (src, dst): (&[A], &mut [A]) = match cur_is_a {
                    None => (&*x0, &mut *a),
                    Some(true) => (&*a, &mut *b),
                    Some(false) => (&*b, &mut *a),
                };
                let bufs = Bufs {
                    down: &mut *down,
                    up: &mut *up,
                    ystore: &mut *ystore,
                    work: &mut *work,
                    accrow: l8.accrow,
                };
                layer(
                    k,
                    shape,
                    p,
                    &l,
                    &out,
                    resample.as_ref(),
                    &mut ops,
                    src,
                    dst,
                    bufs,
                )?;
                cur_is_a = Some(cur_is_a != Some(true));
                feats = l.fout as usize;
            }
            Op::Affine {
                scale,
                shift: offset,
            } => {
                let Quant::Affine { shift } = next_quant(&mut ops)? else {
                    return Err(Error::InvalidPlan("affine without its quantization"));
                };
                let x = &mut current(cur_is_a, a, b)[..cells * feats];
                let (mult, off) = (p.i32s(scale), p.wides::<A>(offset));
                let ab = (&mult[..t_count * feats], &off[..t_count * feats]);
                // The entries in two halves.
                let (lo, hi) = x.split_at_mut(cells / 2 * feats);
                k.join(
                    &mut [],
                    |k, _| affine_entries(k, shape, feats, ab, shift, 0, lo),
                    |k, _| affine_entries(k, shape, feats, ab, shift, cells / 2, hi),
                );
            }
            Op::Relu => {
                for v in current(cur_is_a, a, b)[..cells * feats].iter_mut() {
                    *v = (*v).max(A::default());
                }
            }
            Op::InputSkip(l) => {
                let Quant::Skip { cur, lin } = next_quant(&mut ops)? else {
                    return Err(Error::InvalidPlan("skip without its quantization"));
                };
                let x = current(cur_is_a, a, b);
                let (fin, fout) = (l.fin as usize, l.fout as usize);
                let w = p.i8s(l.weight);
                let bias = l.bias.map(|r| p.wides::<A>(r));
                for t in 0..t_count {
                    let (ai, ao) = (shape.offset(t, fin), shape.offset(t, fout));
                    for e in 0..shape.cells(t) {
                        let xi = &x0[ai + e * fin..ai + (e + 1) * fin];
                        for o in 0..fout {
                            let acc = A::dot(
                                &w[o * fin..(o + 1) * fin],
                                xi,
                                bias.map_or(A::Acc::default(), |b| A::wide(b[t * fout + o])),
                            );
                            let v = &mut x[ao + e * fout + o];
                            *v = A::sat(cur[t].apply(v.get()).saturating_add(acc.requant(lin[t])));
                        }
                    }
                }
            }
            Op::Head(h) => {
                let Quant::Head {
                    pooled,
                    mlp,
                    logit_scale,
                } = next_quant(&mut ops)?
                else {
                    return Err(Error::InvalidPlan("head without its quantization"));
                };
                let x = current(cur_is_a, a, b);
                head(
                    k,
                    shape,
                    p,
                    &h,
                    &pooled,
                    &mlp,
                    &logit_scale,
                    x,
                    feats,
                    output,
                    &mut work[l8.accrow..],
                );
                return Ok(());
            }
            Op::Quant(Quant::Output { scales }) => {
                let x = current(cur_is_a, a, b);
                for t in 0..t_count {
                    let at = shape.offset(t, feats);
                    let n = shape.cells(t) * feats;
                    for (o, v) in output[at..at + n].iter_mut().zip(&x[at..at + n]) {
                        *o = v.get() as f32 * scales[t];
                    }
                }
                return Ok(());
            }
            Op::Block(_) | Op::Quant(_) => return Err(Error::InvalidPlan("unexpected record")),
        }
    }
    Err(Error::InvalidPlan(
        "quantized plan does not end with its output",
    ))
}

fn current<'s, A>(cur_is_a: Option<bool>, a: &'s mut [A], b: &'s mut [A]) -> &'s mut [A] {
    if cur_is_a == Some(false) {
        b
    } else {
        a
    }
}

/// The folded batch norm `(mult, off)` (per tensor and feature) on the
/// entries of `x`, which start at entry `first` of the weight space.
fn affine_entries<A: Act>(
    k: &mut impl Kernels<A>,
    shape: &Shape,
    feats: usize,
    (mult, off): (&[i32], &[A::Wide]),
    shift: u8,
    first: usize,
    x: &mut [A],
) {
    let end = first + x.len() / feats.max(1);
    let mut start = 0;
    for t in 0..shape.tensors() {
        let (t0, t1) = (start, start + shape.cells(t));
        start = t1;
        let (e0, e1) = (t0.max(first), t1.min(end));
        if e0 < e1 {
            let (m, o) = (t * feats, (t + 1) * feats);
            let x = &mut x[(e0 - first) * feats..(e1 - first) * feats];
            k.affine(x, &mult[m..o], &off[m..o], shift);
        }
    }
}

/// The input boundary: f32 (or dequantized) values, normalized when the
/// model has statistics, rounded to the input scales (round half away from
/// zero) and saturated to `-MAX..=MAX`.
fn quantize_input<A: Act>(
    shape: &Shape,
    f: usize,
    input: Input<'_, A>,
    norm: Option<(&[f32], &[f32])>,
    scales: &[f32],
    x0: &mut [A],
) {
    let max = A::MAX as f32;
    for t in 0..shape.tensors() {
        let at = shape.offset(t, f);
        for i in at..at + shape.cells(t) * f {
            let mut v = match input {
                Input::F32(x) => x[i],
                Input::Quantized(q, s) => q[i].get() as f32 * s[t],
            };
            if let Some((mean, std)) = norm {
                v = (v - mean[i]) / std[i];
            }
            x0[i] = A::sat(libm::roundf(v / scales[t]).clamp(-max, max) as i32);
        }
    }
}

/// Scratch regions of a DWS layer.
struct Bufs<'s, A> {
    down: &'s mut [A],
    up: &'s mut [A],
    ystore: &'s mut [A],
    /// An accumulator row (the first `accrow` bytes) and the temporaries.
    work: &'s mut [u8],
    accrow: usize,
}

/// Where a block's output goes in a destination row.
#[derive(Clone)]
enum Contrib<'a> {
    /// A map output stored at `off` (`len` values) in the block output store.
    Stored {
        /// The block's records.
        at: Ops<'a>,
        place: SetAxis,
        unfold: Axis,
        m: usize,
        /// Estimated time of its map ([`map_cost`]).
        cost: usize,
        /// Its output rows (`len` values in all).
        rows: usize,
        /// The first `first` of them are phase 1's part 0, the rest part 1.
        first: usize,
        off: usize,
        len: usize,
        contrib: Requant,
    },
    /// A cell-wise block, decoded again for every row from this position.
    Cells(Ops<'a>),
}

/// Estimated time of a stored block's map, in nanoseconds on one host core
/// (fitted to the time of the paper default's blocks): a fixed part, the
/// gathered rows, the multiply-accumulates and, in set attention, the scores
/// and the value sums.
fn map_cost(map: &Map, d: &Dims) -> usize {
    let macs = |ls: &[&Linear]| -> usize {
        ls.iter()
            .map(|l| (l.fin as usize).saturating_mul(l.fout as usize))
            .fold(0, usize::saturating_add)
    };
    let mlp = |m: &Mlp| {
        m.layers
            .iter()
            .map(|l| macs(&[l]))
            .fold(0, usize::saturating_add)
    };
    let (per_row, scores, dim) = match map {
        Map::Mlp(m) => (mlp(m), 0, 0),
        Map::Set(SetLayer::DeepSets { gamma, lambda, .. }) => {
            (mlp(gamma).saturating_add(mlp(lambda)), 0, 0)
        }
        Map::Set(SetLayer::Attention {
            heads,
            fc_q,
            fc_k,
            fc_v,
            fc_o,
        }) => (
            macs(&[fc_q, fc_k, fc_v, fc_o]),
            *heads as usize,
            fc_v.fout as usize,
        ),
    };
    let n2 = d.n.saturating_mul(d.n);
    (700 + 80 * d.n.min(1 << 24))
        .saturating_add(d.n.saturating_mul(per_row) / 40)
        .saturating_add(n2.saturating_mul(scores))
        .saturating_add(n2.saturating_mul(dim) / 5)
}

/// Deals the stored blocks to the two parts of phase 1: the costliest first,
/// each to the part with less work so far; with `split` (the parts run at the
/// same time), the costliest block of two rows or more is set aside first and
/// then split by rows to even out the rest. Sets the blocks' offsets in the
/// block output store (part 0's outputs first, then part 1's, the split
/// block's in between) and rows per part, and returns where part 1's outputs
/// start and where they end.
fn split_stored(cs: &mut [Contrib<'_>], split: bool) -> (usize, usize) {
    // `dealt` has a bit per block of a destination.
    const _: () = assert!(super::MAX_GROUP <= 64);
    let costliest = |cs: &[Contrib<'_>], dealt: u64, min_rows: usize| {
        cs.iter()
            .enumerate()
            .filter(|(i, _)| dealt & 1 << i == 0)
            .filter_map(|(i, c)| match c {
                Contrib::Stored { cost, rows, .. } if *rows >= min_rows => Some((i, *cost)),
                _ => None,
            })
            .max_by_key(|&(i, cost)| (cost, usize::MAX - i))
    };
    let straddle = if split { costliest(cs, 0, 2) } else { None };
    let mut dealt: u64 = straddle.map_or(0, |(i, _)| 1 << i);
    let mut load = [0usize; 2];
    while let Some((i, cost)) = costliest(cs, dealt, 0) {
        dealt |= 1 << i;
        let lighter = usize::from(load[1] < load[0]);
        load[lighter] = load[lighter].saturating_add(cost);
        if let Contrib::Stored { rows, first, .. } = &mut cs[i] {
            *first = if lighter == 0 { *rows } else { 0 };
        }
    }
    // The split block's rows in proportion to the work that evens the parts.
    let straddle = straddle.map(|(i, _)| i);
    if let Some(Contrib::Stored {
        cost, rows, first, ..
    }) = straddle.map(|i| &mut cs[i])
    {
        let total = load[1].saturating_add(*cost);
        let to0 = ((total - load[0].min(total)) / 2).min(*cost);
        let r = (to0 as u128 * *rows as u128 + *cost as u128 / 2) / (*cost as u128).max(1);
        *first = r as usize;
    }
    // Offsets: part 0's blocks, the split block, part 1's blocks.
    let (mut off, mut at) = (0, 0);
    for group in 0..3 {
        if group == 2 && straddle.is_none() {
            at = off;
        }
        for (i, c) in cs.iter_mut().enumerate() {
            let Contrib::Stored {
                off: o,
                len,
                rows,
                first,
                ..
            } = c
            else {
                continue;
            };
            let g = match (straddle == Some(i), *first == *rows) {
                (true, _) => 1,
                (false, true) => 0,
                (false, false) => 2,
            };
            if g == group {
                *o = off;
                if g == 1 {
                    at = off + *len / (*rows).max(1) * *first;
                }
                off += len.next_multiple_of(4);
            }
        }
    }
    (at, off)
}

/// The encoding's first bytes of an `Op::Block` and of an
/// `Op::Quant(Quant::Block)`: the variants' indices (checked by a test).
pub(crate) const BLOCK_TAG: [u8; 1] = [2];
pub(crate) const BLOCK_Q_TAG: [u8; 2] = [7, 2];

/// The next block and its quantization (decoded directly: this runs for
/// every block of every input, and more often for cell-wise blocks).
fn next_block(ops: &mut Ops<'_>) -> Result<(Block, BlockQ), Error> {
    // Any other encoding (postcard also reads over-long variant indices) takes
    // the general path, as validation did.
    let b = match ops.next_tagged::<Block>(&BLOCK_TAG) {
        Some(b) => b?,
        None => match ops.next().transpose()? {
            Some(Op::Block(b)) => b,
            _ => {
                return Err(Error::InvalidPlan(
                    "DWS layer has fewer blocks than announced",
                ))
            }
        },
    };
    let q = match ops.next_tagged::<BlockQ>(&BLOCK_Q_TAG) {
        Some(q) => q?,
        None => match next_quant(ops)? {
            Quant::Block(q) => q,
            _ => return Err(Error::InvalidPlan("block without its quantization")),
        },
    };
    Ok((b, q))
}

#[allow(clippy::too_many_arguments)]
fn layer<'a, A: Act, K: Kernels<A>>(
    k: &mut K,
    shape: &Shape,
    p: QParams<'_>,
    l: &DwsLayer,
    out: &[Requant],
    rq: Option<&ResampleQ>,
    ops: &mut Ops<'a>,
    src: &[A],
    dst: &mut [A],
    bufs: Bufs<'_, A>,
) -> Result<(), Error> {
    let Bufs {
        down,
        up,
        ystore,
        work,
        accrow,
    } = bufs;
    let (fin, fout) = (l.fin as usize, l.fout as usize);
    let (d0, d1) = (shape.dim(0), shape.dim(1));
    let resample = match (&l.resample, rq) {
        (Some(r), Some(q)) => Some((r, q)),
        _ => None,
    };
    let inner = match resample {
        Some((r, q)) => {
            let tmp = &mut work[accrow..];
            let ds = r.rows as usize;
            // The skip MLP on the original W_0, row by row, into the output W_0.
            for row in 0..d0 {
                let x = &src[row * d1 * fin..(row + 1) * d1 * fin];
                let y = &mut dst[row * d1 * fout..(row + 1) * d1 * fout];
                let skip_tmp = mlp_tmp_len::<A>(&r.skip, d1);
                mlp(
                    k,
                    &r.skip,
                    &q.skip,
                    p,
                    x,
                    d1,
                    y,
                    acts::<A>(&mut tmp[..skip_tmp]),
                );
            }
            resample_w0(
                k,
                &r.down,
                &q.down,
                p,
                &src[..d0 * d1 * fin],
                d0,
                ds,
                d1,
                fin,
                &mut down[..ds * d1 * fin],
                tmp,
                None,
            );
            shape.with_w0_rows(ds)
        }
        None => *shape,
    };
    let down = &*down;
    let source = |t: usize| -> &[A] {
        if resample.is_some() && t == 0 {
            &down[..inner.cells(0) * fin]
        } else {
            let at = shape.offset(t, fin);
            &src[at..at + shape.cells(t) * fin]
        }
    };
    let mut remaining = l.blocks;
    while remaining > 0 {
        // The blocks of one destination, and where their map outputs go.
        let mut contribs: heapless::Vec<Contrib<'a>, { super::MAX_GROUP }> = heapless::Vec::new();
        let mut j = None;
        while remaining > 0 {
            let at = ops.clone();
            let (blk, bq) = next_block(ops)?;
            if j.is_some_and(|j| j != blk.dst as usize) {
                *ops = at;
                break;
            }
            j = Some(blk.dst as usize);
            remaining -= 1;
            let c = if is_cellwise(&blk) {
                Contrib::Cells(at)
            } else {
                let d = block_dims(&blk, &inner, fin, fout)?;
                Contrib::Stored {
                    at,
                    place: blk.place,
                    unfold: blk.unfold,
                    m: d.kout / fout,
                    cost: map_cost(&blk.map, &d),
                    rows: d.n,
                    first: d.n,
                    off: 0,
                    len: d.n * d.kout,
                    contrib: bq.contrib,
                }
            };
            contribs
                .push(c)
                .map_err(|_| Error::InvalidPlan("too many blocks for one destination"))?;
        }
        let Some(j) = j else { break };
        let (at, end) = split_stored(&mut contribs, k.parallel());
        let ctx = Ctx {
            p,
            reduction: l.reduction,
            inner: &inner,
            fin,
            fout,
            source: &source,
        };
        // Phase 1: the map outputs of the stored blocks, in two parts.
        let (ya, yb) = ystore[..end].split_at_mut(at);
        let has = |part: usize| {
            contribs.iter().any(|c| match c {
                Contrib::Stored { rows, first, .. } => {
                    (part == 0 && *first > 0) || (part == 1 && first < rows)
                }
                Contrib::Cells(_) => false,
            })
        };
        if has(0) && has(1) {
            let (ra, rb) = k.join(
                work,
                |k, w| map_blocks(k, &ctx, &contribs, 0, 0, ya, w),
                |k, w| map_blocks(k, &ctx, &contribs, 1, at, yb, w),
            );
            ra?;
            rb?;
        } else {
            map_blocks(k, &ctx, &contribs, 0, 0, ya, work)?;
            map_blocks(k, &ctx, &contribs, 1, at, yb, work)?;
        }
        // Phase 2: destination rows, one int32 accumulator row at a time, in
        // two halves.
        let (rows, cols) = inner.grid(j);
        let out_j: &mut [A] = if resample.is_some() && j == 0 {
            &mut up[..inner.cells(0) * fout]
        } else {
            let at = shape.offset(j, fout);
            &mut dst[at..at + shape.cells(j) * fout]
        };
        let ystore = &*ystore;
        let run = |k: &mut K, rs: Range<usize>, out_rows: &mut [A], w: &mut [u8]| {
            dst_rows(k, &ctx, &contribs, ystore, out[j], (rs, cols), out_rows, w)
        };
        let h = rows / 2;
        if h > 0 {
            let (lo, hi) = out_j.split_at_mut(h * cols * fout);
            let (ra, rb) = k.join(
                work,
                |k, w| run(k, 0..h, lo, w),
                |k, w| run(k, h..rows, hi, w),
            );
            ra?;
            rb?;
        } else {
            run(k, 0..rows, out_j, work)?;
        }
    }
    if let Some((r, q)) = resample {
        let ds = r.rows as usize;
        let w0 = &mut dst[..d0 * d1 * fout];
        resample_w0(
            k,
            &r.up,
            &q.up,
            p,
            &up[..ds * d1 * fout],
            ds,
            d0,
            d1,
            fout,
            w0,
            &mut work[accrow..],
            Some((q.out_up, q.out_skip)),
        );
    }
    Ok(())
}

/// What the parts of a layer's work share.
struct Ctx<'c, S> {
    p: QParams<'c>,
    reduction: Reduction,
    /// The grid the blocks see (`W_0` down-sampled where the layer resamples).
    inner: &'c Shape,
    fin: usize,
    fout: usize,
    /// The input rows of tensor `t`.
    source: &'c S,
}

/// Maps part `part` of the stored blocks of `cs` (see [`split_stored`]) into
/// `y`, the block output store from offset `base` on.
fn map_blocks<'s, A: Act, S: Fn(usize) -> &'s [A]>(
    k: &mut impl Kernels<A>,
    ctx: &Ctx<'_, S>,
    cs: &[Contrib<'_>],
    part: usize,
    base: usize,
    y: &mut [A],
    tmp: &mut [u8],
) -> Result<(), Error> {
    for c in cs {
        let Contrib::Stored {
            at,
            off,
            rows,
            first,
            ..
        } = c
        else {
            continue;
        };
        let rs = if part == 0 { 0..*first } else { *first..*rows };
        if rs.is_empty() {
            continue;
        }
        let (blk, bq) = next_block(&mut at.clone())?;
        let d = block_dims(&blk, ctx.inner, ctx.fin, ctx.fout)?;
        let (lo, hi) = (off + rs.start * d.kout - base, off + rs.end * d.kout - base);
        map_block(
            k,
            &blk,
            &bq,
            ctx.p,
            ctx.reduction,
            (ctx.source)(blk.src as usize),
            &d,
            ctx.fin,
            rs,
            &mut y[lo..hi],
            tmp,
        );
    }
    Ok(())
}

/// Destination rows `rows.0` of a grid with `rows.1` columns into `out_rows`:
/// per row, the stored block outputs and the cell-wise blocks summed in an
/// int32 row (the first bytes of `work`; the temporaries after it), then
/// requantized with `r_out`.
#[allow(clippy::too_many_arguments)]
fn dst_rows<'s, A: Act, S: Fn(usize) -> &'s [A]>(
    k: &mut impl Kernels<A>,
    ctx: &Ctx<'_, S>,
    contribs: &[Contrib<'_>],
    ystore: &[A],
    r_out: Requant,
    (rows, cols): (Range<usize>, usize),
    out_rows: &mut [A],
    work: &mut [u8],
) -> Result<(), Error> {
    let (fin, fout) = (ctx.fin, ctx.fout);
    if cols * fout == 0 {
        return Ok(());
    }
    let (acc, tmp) = take::<A, i32>(work, cols * fout);
    let a = size_of::<A>();
    for (r, out_row) in rows.zip(out_rows.chunks_exact_mut(cols * fout)) {
        acc.fill(0);
        for c in contribs {
            match c {
                Contrib::Stored {
                    place,
                    unfold,
                    m,
                    off,
                    contrib,
                    ..
                } => {
                    // Row q of the store is `i(q) m + u(q)`: linear in q.
                    let i0 = match place {
                        SetAxis::None | SetAxis::Cols => 0,
                        SetAxis::Rows => r,
                        SetAxis::Cells => r * cols,
                    };
                    let u0 = if *unfold == Axis::Rows { r } else { 0 };
                    let along = |hit: bool, by: usize| if hit { by } else { 0 };
                    let step = along(matches!(place, SetAxis::Cols | SetAxis::Cells), *m)
                        + along(*unfold == Axis::Cols, 1);
                    if cols > 0 {
                        let at = off + (i0 * m + u0) * fout;
                        let y = &ystore[at..at + ((cols - 1) * step + 1) * fout];
                        k.add_requant(acc, y, fout, step * fout, *contrib);
                    }
                }
                Contrib::Cells(at) => {
                    let (blk, bq) = next_block(&mut at.clone())?;
                    let Map::Mlp(m) = &blk.map else { continue };
                    let MapQ::Mlp(mq) = &bq.map else { continue };
                    let s = (ctx.source)(blk.src as usize);
                    let (x, rest) = tmp.split_at_mut(pad::<A>(cols * fin * a));
                    let x = acts_n::<A>(x, cols * fin);
                    k.requant_act(&s[r * cols * fin..(r + 1) * cols * fin], bq.x, x);
                    let (y, rest) = rest.split_at_mut(pad::<A>(cols * fout * a));
                    let y = acts_n::<A>(y, cols * fout);
                    let mlp_tmp = mlp_tmp_len::<A>(m, cols);
                    mlp(k, m, mq, ctx.p, x, cols, y, acts::<A>(&mut rest[..mlp_tmp]));
                    k.add_requant(acc, y, fout, fout, bq.contrib);
                }
            }
        }
        k.requant(acc, r_out, out_row);
    }
    Ok(())
}

/// Gathers and maps one (not cell-wise) block: its output rows `rows` (of
/// `0..d.n`) into `y` (`[rows.len(), kout]`).
#[allow(clippy::too_many_arguments)]
fn map_block<A: Act>(
    k: &mut impl Kernels<A>,
    b: &Block,
    q: &BlockQ,
    p: QParams<'_>,
    red: Reduction,
    src: &[A],
    d: &Dims,
    f: usize,
    rows: Range<usize>,
    y: &mut [A],
    tmp: &mut [u8],
) {
    // A set layer needs every row it is applied to; an MLP only its own.
    let gathered = match b.map {
        Map::Set(_) => 0..d.n,
        Map::Mlp(_) => rows.clone(),
    };
    let len = gathered.len() * d.k;
    let (x, rest) = tmp.split_at_mut(pad::<A>(len * size_of::<A>()));
    let x = acts_n::<A>(x, len);
    gather(k, b, q.x, red, src, d, f, gathered, x);
    match (&b.map, &q.map) {
        (Map::Mlp(m), MapQ::Mlp(mq)) => {
            let mlp_tmp = mlp_tmp_len::<A>(m, rows.len());
            mlp(
                k,
                m,
                mq,
                p,
                x,
                rows.len(),
                y,
                acts::<A>(&mut rest[..mlp_tmp]),
            )
        }
        (Map::Set(s), q) => set_layer(k, s, q, p, x, d.n, d.k, rows, y, rest),
        _ => {}
    }
}

/// Gathers the rows `rows` of `X[n, m * f]` into `x`: pooled entries reduced
/// in int32, then requantized.
#[allow(clippy::too_many_arguments)]
fn gather<A: Act>(
    k: &mut impl Kernels<A>,
    b: &Block,
    rq: Requant,
    red: Reduction,
    src: &[A],
    d: &Dims,
    f: usize,
    rows: Range<usize>,
    x: &mut [A],
) {
    let (src_rows, cols) = d.src;
    let pc = if b.pool.cols { 1 } else { cols };
    let m = d.k / f;
    for (xi, i) in rows.enumerate() {
        for j in 0..m {
            let (r0, r1) = source_range(b, true, src_rows, pc, i, j);
            let (c0, c1) = source_range(b, false, cols, pc, i, j);
            let out = &mut x[(xi * m + j) * f..(xi * m + j + 1) * f];
            k.pool(red, src, cols, r0..r1, c0..c1, rq, out);
        }
    }
}

/// Resamples `W_0` (`[din, d1, f]`) to `[dout, d1, f]` per feature. Without
/// `combine` the result is stored; with it, `out = R_up(result) + R_skip(out)`.
#[allow(clippy::too_many_arguments)]
fn resample_w0<A: Act>(
    k: &mut impl Kernels<A>,
    s: &SetLayer,
    q: &MapQ,
    p: QParams<'_>,
    w0: &[A],
    din: usize,
    dout: usize,
    d1: usize,
    f: usize,
    out: &mut [A],
    tmp: &mut [u8],
    combine: Option<(Requant, Requant)>,
) {
    let a = size_of::<A>();
    let (x, rest) = tmp.split_at_mut(pad::<A>(d1 * din * a));
    let (y, rest) = rest.split_at_mut(pad::<A>(d1 * dout * a));
    let (x, y) = (acts_n::<A>(x, d1 * din), acts_n::<A>(y, d1 * dout));
    for ch in 0..f {
        for n in 0..d1 {
            for j in 0..din {
                x[n * din + j] = w0[(j * d1 + n) * f + ch];
            }
        }
        set_layer(k, s, q, p, x, d1, din, 0..d1, y, rest);
        for n in 0..d1 {
            for r in 0..dout {
                let o = &mut out[(r * d1 + n) * f + ch];
                let v = y[n * dout + r];
                *o = match combine {
                    None => v,
                    Some((r_up, r_skip)) => {
                        A::sat(r_up.apply(v.get()).saturating_add(r_skip.apply(o.get())))
                    }
                };
            }
        }
    }
}

/// The invariant head: pooled segments requantized to the head scale, the MLP,
/// and the last layer's accumulators scaled to f32 logits.
#[allow(clippy::too_many_arguments)]
fn head<A: Act>(
    k: &mut impl Kernels<A>,
    shape: &Shape,
    p: QParams<'_>,
    h: &Head,
    pooled: &[Requant],
    mq: &crate::quant::MlpQ,
    logit_scale: &LogitScale,
    x: &[A],
    f: usize,
    output: &mut [f32],
    tmp: &mut [u8],
) {
    let l = shape.layers();
    let width = crate::validate::head_width(shape, f);
    let (v, rest) = take::<A, A>(tmp, width);
    let (acc, rest) = take::<A, i32>(rest, f);
    let tensor = |t: usize| &x[shape.offset(t, f)..shape.offset(t, f) + shape.cells(t) * f];
    let mut pos = 0;
    let mut seg = 0;
    let emit = |acc: &[i32], r: Requant, v: &mut [A], pos: &mut usize| {
        for a in acc {
            v[*pos] = A::sat(r.apply(*a));
            *pos += 1;
        }
    };
    for t in 1..l - 1 {
        pool_rows(h.reduction, tensor(t), shape.cells(t), f, acc);
        emit(acc, pooled[seg], v, &mut pos);
        seg += 1;
    }
    let (d0, d1) = shape.grid(0);
    for r in 0..d0 {
        pool_rows(
            h.reduction,
            &tensor(0)[r * d1 * f..(r + 1) * d1 * f],
            d1,
            f,
            acc,
        );
        emit(acc, pooled[seg], v, &mut pos);
    }
    seg += 1;
    let (dl1, dl) = shape.grid(l - 1);
    let wl = tensor(l - 1);
    for c in 0..dl {
        acc.fill(if h.reduction == Reduction::Max {
            i32::MIN
        } else {
            0
        });
        for r in 0..dl1 {
            for (a, s) in acc
                .iter_mut()
                .zip(&wl[(r * dl + c) * f..(r * dl + c + 1) * f])
            {
                *a = if h.reduction == Reduction::Max {
                    (*a).max(s.get())
                } else {
                    a.wrapping_add(s.get())
                };
            }
        }
        emit(acc, pooled[seg], v, &mut pos);
    }
    seg += 1;
    for i in 0..l - 1 {
        pool_rows(h.reduction, tensor(l + i), shape.cells(l + i), f, acc);
        emit(acc, pooled[seg], v, &mut pos);
        seg += 1;
    }
    for chunk in tensor(2 * l - 1).chunks(f) {
        for (a, s) in acc.iter_mut().zip(chunk) {
            *a = s.get();
        }
        emit(acc, pooled[seg], v, &mut pos);
    }
    let n = h.mlp.layers.len();
    let mlp_tmp = mlp_tmp_len::<A>(&h.mlp, 1);
    let hidden = mlp_hidden(k, &h.mlp, mq, p, v, 1, acts::<A>(&mut rest[..mlp_tmp]));
    let last = &h.mlp.layers[n - 1];
    let (w, fin) = (p.i8s(last.weight), last.fin as usize);
    let b = last.bias.map(|r| p.wides::<A>(r));
    for (o, out) in output.iter_mut().enumerate().take(last.fout as usize) {
        let bias = b.map_or(A::Acc::default(), |b| A::wide(b[o]));
        let acc = A::dot(&w[o * fin..(o + 1) * fin], hidden, bias);
        *out = acc.to_f32() * p.logit_scale(logit_scale, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `BLOCK_TAG` and `BLOCK_Q_TAG` are how postcard starts those records
    /// (the variants' indices), and other records start otherwise.
    #[test]
    fn block_tags_match_the_encoding() {
        use crate::plan::{BlockKind, Linear, ParamRef, Pool};
        use crate::quant::{MlpQ, Requant};
        let lin = Linear {
            fin: 1,
            fout: 1,
            weight: ParamRef { offset: 0, len: 1 },
            bias: None,
        };
        let one = Requant {
            m: 1 << 30,
            shift: 30,
        };
        let block = Block {
            kind: BlockKind::W2wGeneralMatrixSet,
            src: 0,
            dst: 0,
            pool: Pool {
                rows: false,
                cols: false,
            },
            set_axis: SetAxis::Rows,
            fold: Axis::None,
            map: Map::Mlp(Mlp {
                layers: heapless::Vec::from_slice(&[lin]).unwrap(),
            }),
            place: SetAxis::Rows,
            unfold: Axis::None,
            scale: 1.0,
        };
        let block_q = BlockQ {
            x: one,
            map: MapQ::Mlp(MlpQ {
                layers: heapless::Vec::from_slice(&[crate::quant::LinearQ::Tensor(one)]).unwrap(),
            }),
            contrib: one,
        };
        let mut buf = [0u8; 1024];
        let mut encode = |op: &Op| postcard::to_slice(op, &mut buf).unwrap().to_vec();
        let b = encode(&Op::Block(block));
        let q = encode(&Op::Quant(Quant::Block(block_q)));
        assert!(b.starts_with(&BLOCK_TAG) && q.starts_with(&BLOCK_Q_TAG));
        for other in [
            Op::Relu,
            Op::InputSkip(lin),
            Op::Quant(Quant::Affine { shift: 16 }),
            Op::Quant(Quant::Skip {
                cur: heapless::Vec::new(),
                lin: heapless::Vec::new(),
            }),
        ] {
            let o = encode(&other);
            assert!(!o.starts_with(&BLOCK_TAG) && !o.starts_with(&BLOCK_Q_TAG));
        }
    }
}
