//! The quantized paths (int8 and 16x8): validation and memory layout of
//! quantized plans, and their executor.
//!
//! A quantized plan is an f32 plan whose ops are each followed by a
//! [`Quant`] record, with int8 weights, integer biases and fixed-point
//! requantizations; `docs/quantization.md` specifies the arithmetic. Both
//! modes share every line of the executor and kernels, written over the
//! activation type ([`Act`]: `i8` or `i16`). The executor streams every DWS
//! layer destination tensor by destination tensor and row by row, so it never
//! holds an accumulator per tensor.

mod act;
mod exec;
pub mod kernels;

pub use act::{dot_acc, Accum, Act};
pub(crate) use exec::run_q;
pub use exec::Input;
pub use kernels::{AttentionQ, Kernels, ModeSizes, Portable};

use crate::kernels::block::{block_macs, Dims};
use crate::kernels::linear::mlp_macs;
use crate::plan::{DwsLayer, Map, Mlp, Op, Output, ParamRef, SetAxis, SetLayer, Spec, MAX_TENSORS};
use crate::quant::{LinearQ, LogitScale, MapQ, MlpQ, Quant, Requant, Requants};
use crate::shape::Shape;
use crate::validate::{block_dims, elems, head_width, Checker, Kind, Layout};
use crate::{Error, Ops};
use core::mem::size_of;

/// Most blocks that target one tensor in one layer.
pub const MAX_GROUP: usize = 64;

/// Most entries of one weight-space tensor in a 16x8 plan: sums of that many
/// int16 values (pooling) fit in int32.
pub const MAX_CELLS_16X8: usize = 1 << 16;

/// The alignment of every scratch region of `A`'s mode (4 bytes; 8 in 16x8
/// mode, whose scores are `i64`).
pub fn align<A: Act>() -> usize {
    ModeSizes::of::<A>().align()
}

/// The parameter section of a quantized model: refs are byte offsets.
#[derive(Debug, Clone, Copy)]
pub struct QParams<'a>(pub &'a [u8]);

impl<'a> QParams<'a> {
    fn bytes(&self, r: ParamRef, size: usize) -> &'a [u8] {
        &self.0[r.offset as usize..r.offset as usize + size * r.len as usize]
    }

    /// int8 values.
    pub fn i8s(&self, r: ParamRef) -> &'a [i8] {
        bytemuck::cast_slice(self.bytes(r, 1))
    }

    /// int32 values (4-aligned, checked at validation).
    pub fn i32s(&self, r: ParamRef) -> &'a [i32] {
        bytemuck::cast_slice(self.bytes(r, 4))
    }

    /// f32 values (4-aligned, checked at validation).
    pub fn f32s(&self, r: ParamRef) -> &'a [f32] {
        bytemuck::cast_slice(self.bytes(r, 4))
    }

    /// Biases or offsets of `A`'s mode (aligned to their size, checked at validation).
    pub fn wides<A: Act>(&self, r: ParamRef) -> &'a [A::Wide] {
        bytemuck::cast_slice(self.bytes(r, size_of::<A::Wide>()))
    }

    /// The requantizations of a linear layer.
    pub fn requants(&self, q: &LinearQ) -> Requants<'a> {
        match *q {
            LinearQ::Tensor(r) => Requants::One(r),
            LinearQ::Channel { m, shift } => Requants::Channel {
                m: self.i32s(m),
                shift,
            },
        }
    }

    /// The real value of one unit of logit `o`.
    pub fn logit_scale(&self, s: &LogitScale, o: usize) -> f32 {
        match *s {
            LogitScale::Tensor(v) => v,
            LogitScale::Channel(r) => self.f32s(r)[o],
        }
    }
}

/// Byte sizes of the quantized scratch regions (each a multiple of [`align`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QLayout {
    /// The quantized input.
    pub x0: usize,
    /// Each of the two activation buffers.
    pub act: usize,
    /// Down-sampled `W_0` (input side).
    pub down: usize,
    /// Down-sampled `W_0` (output side).
    pub up: usize,
    /// Map outputs of the blocks of one destination tensor.
    pub ystore: usize,
    /// One destination row of int32 accumulators.
    pub accrow: usize,
    /// Temporaries of one step.
    pub tmp: usize,
    /// Bytes before the first region to align a 4-aligned scratch to
    /// [`align`] (4 in 16x8 mode, 0 in int8 mode).
    pub slack: usize,
}

impl QLayout {
    /// Total bytes.
    pub fn bytes(&self) -> usize {
        self.slack
            + self.x0
            + 2 * self.act
            + self.down
            + self.up
            + self.ystore
            + self.accrow
            + self.tmp
    }
}

fn check(cond: bool, what: &'static str) -> Result<(), Error> {
    if cond {
        Ok(())
    } else {
        Err(Error::InvalidPlan(what))
    }
}

fn requants_ok(r: &[Requant]) -> Result<(), Error> {
    check(
        r.iter().all(|r| r.is_valid()),
        "malformed requantization multiplier",
    )
}

/// Checks a linear layer's requantization against its `fout` outputs.
fn linearq_ok(c: &Checker, p: &[u8], q: &LinearQ, fout: u32) -> Result<(), Error> {
    match *q {
        LinearQ::Tensor(r) => requants_ok(&[r]),
        LinearQ::Channel { m, shift } => {
            c.param_of(m, fout as usize, Kind::I32)?;
            let ms: &[i32] =
                bytemuck::cast_slice(&p[m.offset as usize..m.offset as usize + 4 * m.len as usize]);
            check(
                (1..=62).contains(&shift) && ms.iter().all(|m| *m >= 0),
                "malformed requantization multiplier",
            )
        }
    }
}

fn mlpq_ok(c: &Checker, p: &[u8], m: &Mlp, q: &MlpQ) -> Result<(), Error> {
    check(
        q.layers.len() == m.layers.len(),
        "MLP quantization does not match the MLP",
    )?;
    m.layers
        .iter()
        .zip(&q.layers)
        .try_for_each(|(l, q)| linearq_ok(c, p, q, l.fout))
}

fn mapq_ok(c: &Checker, p: &[u8], map: &Map, q: &MapQ) -> Result<(), Error> {
    match (map, q) {
        (Map::Mlp(m), MapQ::Mlp(mq)) => mlpq_ok(c, p, m, mq),
        (Map::Set(s), q) => setq_ok(c, p, s, q),
        _ => Err(Error::InvalidPlan(
            "map quantization does not match the map",
        )),
    }
}

fn setq_ok(c: &Checker, p: &[u8], s: &SetLayer, q: &MapQ) -> Result<(), Error> {
    match (s, q) {
        (
            SetLayer::DeepSets { gamma, lambda, .. },
            MapQ::DeepSets {
                gamma: g,
                pooled,
                score,
                lambda: l,
            },
        ) => {
            mlpq_ok(c, p, gamma, g)?;
            mlpq_ok(c, p, lambda, l)?;
            requants_ok(&[*pooled, *score])
        }
        (
            SetLayer::Attention {
                fc_q,
                fc_k,
                fc_v,
                fc_o,
                ..
            },
            MapQ::Attention {
                q,
                k,
                v,
                score,
                o_q,
                o_av,
                y_o,
                y_fc,
            },
        ) => {
            linearq_ok(c, p, q, fc_q.fout)?;
            linearq_ok(c, p, k, fc_k.fout)?;
            linearq_ok(c, p, v, fc_v.fout)?;
            linearq_ok(c, p, y_fc, fc_o.fout)?;
            requants_ok(&[*score, *o_q, *o_av, *y_o])
        }
        _ => Err(Error::InvalidPlan(
            "set layer quantization does not match the set layer",
        )),
    }
}

pub(crate) fn next_quant(ops: &mut Ops<'_>) -> Result<Quant, Error> {
    match ops.next() {
        Some(Ok(Op::Quant(q))) => Ok(q),
        Some(Err(e)) => Err(e),
        _ => Err(Error::InvalidPlan(
            "quantized plan lacks a quantization record",
        )),
    }
}

/// Bytes to compute a block's map output (everything but the output itself).
pub(crate) fn block_tmp(z: ModeSizes, map: &Map, d: &Dims) -> usize {
    z.pad(d.n * d.k * z.act)
        + match map {
            Map::Mlp(m) => z.pad(z.mlp_tmp_len(m, d.n)),
            Map::Set(s) => z.set_tmp_len(s, d.n, d.k),
        }
}

/// Bytes to run a cell-wise block on one destination row of `cols` entries.
pub(crate) fn cells_tmp(z: ModeSizes, m: &Mlp, cols: usize, fin: usize, fout: usize) -> usize {
    z.pad(cols * fin * z.act) + z.pad(z.mlp_tmp_len(m, cols)) + z.pad(cols * fout * z.act)
}

/// Bytes to resample `W_0` per feature with a set layer (`din -> dout` rows over `d1`).
pub(crate) fn resample_tmp(
    z: ModeSizes,
    s: &SetLayer,
    din: usize,
    dout: usize,
    d1: usize,
) -> usize {
    z.pad(d1 * din * z.act) + z.pad(d1 * dout * z.act) + z.set_tmp_len(s, d1, din)
}

/// Whether a block maps every entry on its own (computed row by row).
pub(crate) fn is_cellwise(b: &crate::plan::Block) -> bool {
    b.set_axis == SetAxis::Cells
}

/// Validates a quantized plan of the mode with value sizes `z` over the
/// parameter section `p` and computes its layout.
pub(crate) fn validate_q(
    s: &Spec,
    shape: &Shape,
    mut ops: Ops<'_>,
    p: &[u8],
    z: ModeSizes,
) -> Result<(Layout, QLayout), Error> {
    let c = Checker {
        params_len: p.len() as u64,
        quantized: true,
        wide: if z.wide == 8 { Kind::I64 } else { Kind::I32 },
    };
    let (a, pad) = (z.act, |n| z.pad(n));
    let t = shape.tensors();
    let cells = shape.total_cells();
    if a > 1 {
        check(
            (0..t).all(|i| shape.cells(i) <= MAX_CELLS_16X8),
            "a 16x8 plan's tensors have at most 65,536 entries",
        )?;
    }
    let mut lay = Layout {
        input_len: cells * s.input_features as usize,
        ..Layout::default()
    };
    let mut l8 = QLayout {
        x0: pad(lay.input_len * a),
        slack: z.align() - 4,
        ..QLayout::default()
    };
    let mut feats = s.input_features as usize;
    let mut seen_dws = false;
    let mut input_done = false;
    let mut done = false;
    let mut first = true;
    while let Some(op) = ops.next() {
        let op = op?;
        check(!done, "ops after the last record")?;
        if first {
            first = false;
            if let Op::Normalize { mean, std } = &op {
                c.param_of(*mean, lay.input_len, Kind::F32)?;
                c.param_of(*std, lay.input_len, Kind::F32)?;
                lay.normalize = true;
                continue;
            }
        }
        if !input_done {
            let Op::Quant(Quant::Input { scales }) = &op else {
                return Err(Error::InvalidPlan(
                    "quantized plan must start with the input scales",
                ));
            };
            check(scales.len() == t, "one input scale per tensor")?;
            check(
                scales.iter().all(|v| v.is_finite() && *v > 0.0),
                "input scales must be positive",
            )?;
            input_done = true;
            continue;
        }
        match op {
            Op::Dws(l) => {
                check(l.fin as usize == feats, "DWS layer input features mismatch")?;
                check(l.fout >= 1, "DWS layer with no output features")?;
                let Quant::Layer { out, resample } = next_quant(&mut ops)? else {
                    return Err(Error::InvalidPlan("DWS layer without its quantization"));
                };
                check(out.len() == t, "one output requantization per tensor")?;
                requants_ok(&out)?;
                layer_q(
                    &c,
                    p,
                    z,
                    &l,
                    resample.as_ref(),
                    shape,
                    &mut ops,
                    &mut lay,
                    &mut l8,
                )?;
                feats = l.fout as usize;
                l8.act = l8.act.max(pad(elems(cells as u64 * feats as u64)? * a));
                lay.act_len = l8.act;
                lay.dws_layers += 1;
                seen_dws = true;
            }
            Op::Affine { scale, shift } => {
                check(seen_dws, "affine before the first DWS layer")?;
                c.param_of(scale, t * feats, Kind::I32)?;
                c.param_of(shift, t * feats, c.wide)?;
                let Quant::Affine { shift } = next_quant(&mut ops)? else {
                    return Err(Error::InvalidPlan("affine without its quantization"));
                };
                check((1..=62).contains(&shift), "affine shift out of range")?;
            }
            Op::Relu => check(seen_dws, "ReLU before the first DWS layer")?,
            Op::InputSkip(l) => {
                check(seen_dws, "skip before the first DWS layer")?;
                check(
                    l.fin == s.input_features && l.fout as usize == feats,
                    "skip width mismatch",
                )?;
                c.param_of(l.weight, (l.fin * l.fout) as usize, Kind::I8)?;
                if let Some(b) = l.bias {
                    c.param_of(b, t * feats, c.wide)?;
                }
                let Quant::Skip { cur, lin } = next_quant(&mut ops)? else {
                    return Err(Error::InvalidPlan("skip without its quantization"));
                };
                check(
                    cur.len() == t && lin.len() == t,
                    "one skip requantization per tensor",
                )?;
                requants_ok(&cur)?;
                requants_ok(&lin)?;
                lay.macs = lay
                    .macs
                    .saturating_add(cells as u64 * l.fin as u64 * l.fout as u64);
            }
            Op::Head(h) => {
                check(seen_dws, "head before the first DWS layer")?;
                let width = head_width(shape, feats);
                let out = c.mlp(&h.mlp, width)?;
                let Quant::Head {
                    pooled,
                    mlp,
                    logit_scale,
                } = next_quant(&mut ops)?
                else {
                    return Err(Error::InvalidPlan("head without its quantization"));
                };
                check(
                    pooled.len() == t,
                    "one head requantization per pooled segment",
                )?;
                requants_ok(&pooled)?;
                mlpq_ok(&c, p, &h.mlp, &mlp)?;
                let finite = match logit_scale {
                    LogitScale::Tensor(v) => v.is_finite(),
                    LogitScale::Channel(r) => {
                        c.param_of(r, out, Kind::F32)?;
                        QParams(p).f32s(r).iter().all(|v| v.is_finite())
                    }
                };
                check(finite, "logit scale is not finite")?;
                check(
                    matches!(s.output, Output::Logits { classes } if classes as usize == out),
                    "head width differs from the class count",
                )?;
                l8.tmp = l8
                    .tmp
                    .max(pad(width * a) + pad(4 * feats) + pad(z.mlp_tmp_len(&h.mlp, 1)));
                lay.macs = lay.macs.saturating_add(mlp_macs(&h.mlp, 1));
                lay.output_len = out;
                done = true;
            }
            Op::Quant(Quant::Output { scales }) => {
                check(seen_dws, "output before the first DWS layer")?;
                check(
                    scales.len() == t && scales.iter().all(|v| v.is_finite()),
                    "one output scale per tensor",
                )?;
                check(
                    matches!(s.output, Output::WeightSpace { features } if features as usize == feats),
                    "output features mismatch",
                )?;
                lay.output_len = cells * feats;
                done = true;
            }
            Op::Normalize { .. } => {
                return Err(Error::InvalidPlan("normalization must come first"))
            }
            Op::Block(_) => return Err(Error::InvalidPlan("block outside a DWS layer")),
            Op::Quant(_) => return Err(Error::InvalidPlan("unexpected quantization record")),
        }
    }
    check(done, "quantized plan does not end with its output")?;
    Ok((lay, l8))
}

/// Validates one DWS layer's blocks (reading them from `ops`) and grows the layout.
#[allow(clippy::too_many_arguments)]
fn layer_q(
    c: &Checker,
    p: &[u8],
    z: ModeSizes,
    l: &DwsLayer,
    rq: Option<&crate::quant::ResampleQ>,
    shape: &Shape,
    ops: &mut Ops<'_>,
    lay: &mut Layout,
    l8: &mut QLayout,
) -> Result<(), Error> {
    let (fin, fout) = (l.fin as usize, l.fout as usize);
    let (a, pad) = (z.act, |n| z.pad(n));
    let inner = match (&l.resample, rq) {
        (Some(r), Some(q)) => {
            let (d0, d1, ds) = (shape.dim(0), shape.dim(1), r.rows as usize);
            check(ds >= 1, "down-sampled size is zero")?;
            check(
                c.set_layer(&r.down, d0)? == ds,
                "down-sampling width mismatch",
            )?;
            check(c.set_layer(&r.up, ds)? == d0, "up-sampling width mismatch")?;
            check(c.mlp(&r.skip, fin)? == fout, "resample skip width mismatch")?;
            setq_ok(c, p, &r.down, &q.down)?;
            setq_ok(c, p, &r.up, &q.up)?;
            mlpq_ok(c, p, &r.skip, &q.skip)?;
            requants_ok(&[q.out_up, q.out_skip])?;
            check(
                matches!(r.down, SetLayer::DeepSets { .. })
                    && matches!(r.up, SetLayer::DeepSets { .. }),
                "resampling needs DeepSets layers",
            )?;
            l8.down = l8
                .down
                .max(pad(elems(ds as u64 * d1 as u64 * fin as u64)? * a));
            l8.up = l8
                .up
                .max(pad(elems(ds as u64 * d1 as u64 * fout as u64)? * a));
            elems(d0 as u64 * d1 as u64 * fout.max(fin) as u64)?;
            let skip = pad(d1 * fin * a) + pad(z.mlp_tmp_len(&r.skip, d1));
            l8.tmp = l8
                .tmp
                .max(skip)
                .max(resample_tmp(z, &r.down, d0, ds, d1))
                .max(resample_tmp(z, &r.up, ds, d0, d1));
            lay.macs = lay.macs.saturating_add(mlp_macs(&r.skip, d0 * d1));
            shape.with_w0_rows(ds)
        }
        (None, None) => *shape,
        _ => {
            return Err(Error::InvalidPlan(
                "resample quantization does not match the layer",
            ))
        }
    };
    let mut seen = [false; MAX_TENSORS];
    let mut group: Option<usize> = None;
    let mut group_len = 0usize;
    let mut ystore = 0usize;
    for _ in 0..l.blocks {
        let Some(Op::Block(b)) = ops.next().transpose()? else {
            return Err(Error::InvalidPlan(
                "DWS layer has fewer blocks than announced",
            ));
        };
        let Quant::Block(bq) = next_quant(ops)? else {
            return Err(Error::InvalidPlan("block without its quantization"));
        };
        let d = block_dims(&b, &inner, fin, fout)?;
        let out = match &b.map {
            Map::Mlp(m) => c.mlp(m, d.k)?,
            Map::Set(s) => c.set_layer(s, d.k)?,
        };
        check(
            out == d.kout,
            "block output width does not match the destination",
        )?;
        mapq_ok(c, p, &b.map, &bq.map)?;
        requants_ok(&[bq.x, bq.contrib])?;
        let j = b.dst as usize;
        if group != Some(j) {
            check(!seen[j], "quantized blocks must be grouped by destination")?;
            seen[j] = true;
            group = Some(j);
            group_len = 0;
            ystore = 0;
        }
        group_len += 1;
        check(
            group_len <= MAX_GROUP,
            "too many blocks for one destination",
        )?;
        let (_, cols) = inner.grid(j);
        l8.accrow = l8.accrow.max(pad(4 * elems(cols as u64 * fout as u64)?));
        elems((d.n as u64).saturating_mul(d.k as u64 + d.kout as u64))?;
        if is_cellwise(&b) {
            let Map::Mlp(m) = &b.map else {
                return Err(Error::InvalidPlan("cell-wise blocks must be MLPs"));
            };
            check(
                b.src == b.dst && b.place == SetAxis::Cells && !b.pool.rows && !b.pool.cols,
                "malformed cell-wise block",
            )?;
            l8.tmp = l8.tmp.max(cells_tmp(z, m, cols, fin, fout));
        } else {
            ystore += pad(d.n * d.kout * a);
            l8.ystore = l8.ystore.max(ystore);
            l8.tmp = l8.tmp.max(block_tmp(z, &b.map, &d));
        }
        lay.macs = lay.macs.saturating_add(block_macs(&b, &d));
        lay.blocks += 1;
    }
    Ok(())
}
