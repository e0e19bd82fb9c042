//! Checks a plan once, completely, and computes the memory it needs.
//!
//! After [`validate`] succeeds every parameter reference is in bounds, every
//! shape agrees with its neighbours and the scratch layout is exact, so the
//! kernels index their slices without further checks.

use crate::kernels::block::{block_macs, block_tmp_len, map_fout, pooled, Dims};
use crate::kernels::linear::{mlp_fout, mlp_macs, mlp_tmp_len};
use crate::kernels::set_layer::{set_macs, set_tmp_len};
use crate::plan::{
    Axis, Block, DwsLayer, Head, Linear, Map, Mlp, Op, Output, ParamRef, Resample, SetAxis,
    SetLayer, SetPooling, Spec, MAX_LAYERS,
};
use crate::shape::Shape;
use crate::{Error, Ops};

/// Largest tensor, in elements, that a plan may describe.
const MAX_ELEMS: u64 = 1 << 28;

/// Memory and cost figures of a validated plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// Elements of one input.
    pub input_len: usize,
    /// Elements of one output.
    pub output_len: usize,
    /// Whether the plan starts with input normalization (its result is kept in scratch).
    pub normalize: bool,
    /// Elements of each of the two ping-pong activation buffers.
    pub act_len: usize,
    /// Elements of the down-sampled `W_0` buffer (input side).
    pub down_len: usize,
    /// Elements of the down-sampled `W_0` buffer (output side).
    pub up_len: usize,
    /// Elements of the per-step temporary region.
    pub tmp_len: usize,
    /// Multiply-adds per input.
    pub macs: u64,
    /// Number of DWS layers.
    pub dws_layers: usize,
    /// Number of blocks over all DWS layers.
    pub blocks: usize,
}

impl Layout {
    /// Total scratch elements for one inference.
    pub fn scratch_len(&self) -> usize {
        let x0 = if self.normalize { self.input_len } else { 0 };
        x0 + 2 * self.act_len + self.down_len + self.up_len + self.tmp_len
    }
}

fn check(cond: bool, what: &'static str) -> Result<(), Error> {
    if cond {
        Ok(())
    } else {
        Err(Error::InvalidPlan(what))
    }
}

pub(crate) fn elems(v: u64) -> Result<usize, Error> {
    check(v <= MAX_ELEMS, "tensor too large")?;
    Ok(v as usize)
}

/// Element type of a parameter reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    F32,
    I8,
    I32,
    I64,
}

/// Checks parameter references and layer shapes. In f32 plans references
/// count f32 elements; in quantized plans `offset` is in bytes and `len` in
/// elements of the referenced type, aligned to its size.
pub(crate) struct Checker {
    pub(crate) params_len: u64,
    pub(crate) quantized: bool,
    /// The type of biases (and folded batch-norm offsets) in quantized plans.
    pub(crate) wide: Kind,
}

impl Checker {
    fn param(&self, r: ParamRef, len: usize) -> Result<(), Error> {
        self.param_of(r, len, Kind::F32)
    }

    pub(crate) fn param_of(&self, r: ParamRef, len: usize, kind: Kind) -> Result<(), Error> {
        check(
            r.len as usize == len,
            "parameter length does not match its shape",
        )?;
        let (start, size) = if self.quantized {
            let size = match kind {
                Kind::I8 => 1,
                Kind::F32 | Kind::I32 => 4,
                Kind::I64 => 8,
            };
            check(
                (r.offset as u64).is_multiple_of(size),
                "misaligned parameter reference",
            )?;
            (r.offset as u64, size)
        } else {
            (r.offset as u64, 1)
        };
        if start + r.len as u64 * size > self.params_len {
            return Err(Error::ParamOutOfBounds);
        }
        Ok(())
    }

    pub(crate) fn linear(&self, l: &Linear, fin: usize) -> Result<usize, Error> {
        check(l.fin as usize == fin, "linear input width mismatch")?;
        check(l.fout >= 1, "linear with no outputs")?;
        self.param_of(l.weight, elems(l.fin as u64 * l.fout as u64)?, Kind::I8)?;
        if let Some(b) = l.bias {
            self.param_of(b, l.fout as usize, self.wide)?;
        }
        Ok(l.fout as usize)
    }

    pub(crate) fn mlp(&self, m: &Mlp, fin: usize) -> Result<usize, Error> {
        check(!m.layers.is_empty(), "empty MLP")?;
        let out = mlp_fout(m);
        let mut width = fin;
        for l in &m.layers {
            width = self.linear(l, width)?;
            check(
                width == out,
                "MLP hidden width differs from its output width",
            )?;
        }
        Ok(out)
    }

    pub(crate) fn set_layer(&self, s: &SetLayer, k: usize) -> Result<usize, Error> {
        match s {
            SetLayer::DeepSets {
                gamma,
                lambda,
                pooling,
            } => {
                let out = self.mlp(gamma, k)?;
                check(
                    self.mlp(lambda, k)? == out,
                    "DeepSets Lambda width differs from Gamma",
                )?;
                if let SetPooling::Attention { query } = pooling {
                    self.param_of(*query, k, Kind::I8)?;
                }
                Ok(out)
            }
            SetLayer::Attention {
                heads,
                fc_q,
                fc_k,
                fc_v,
                fc_o,
            } => {
                let dv = self.linear(fc_q, k)?;
                check(self.linear(fc_k, k)? == dv, "attention key width differs")?;
                check(self.linear(fc_v, k)? == dv, "attention value width differs")?;
                check(
                    self.linear(fc_o, dv)? == dv,
                    "attention output width differs",
                )?;
                check(
                    *heads >= 1 && dv % *heads as usize == 0,
                    "attention heads do not divide dim_V",
                )?;
                Ok(dv)
            }
        }
    }
}

/// Sizes of a block's matrices, checking that its axes fit the grids.
pub fn block_dims(b: &Block, shape: &Shape, fin: usize, fout: usize) -> Result<Dims, Error> {
    let t = shape.tensors();
    check(
        (b.src as usize) < t && (b.dst as usize) < t,
        "block tensor index out of range",
    )?;
    check(b.scale.is_finite(), "block scale is not finite")?;
    let src = shape.grid(b.src as usize);
    let dst = shape.grid(b.dst as usize);
    let (pr, pc) = (pooled(src.0, b.pool.rows), pooled(src.1, b.pool.cols));
    let clash = matches!(
        (b.set_axis, b.fold),
        (SetAxis::Rows, Axis::Rows)
            | (SetAxis::Cols, Axis::Cols)
            | (SetAxis::Cells, Axis::Rows | Axis::Cols)
    );
    check(!clash, "block set axis and fold axis overlap")?;
    let rows_used =
        b.pool.rows || matches!(b.set_axis, SetAxis::Rows | SetAxis::Cells) || b.fold == Axis::Rows;
    let cols_used =
        b.pool.cols || matches!(b.set_axis, SetAxis::Cols | SetAxis::Cells) || b.fold == Axis::Cols;
    check(
        (rows_used || src.0 == 1) && (cols_used || src.1 == 1),
        "block leaves a source axis unused",
    )?;
    let n = match b.set_axis {
        SetAxis::None => 1,
        SetAxis::Rows => pr,
        SetAxis::Cols => pc,
        SetAxis::Cells => pr * pc,
    };
    let m = match b.fold {
        Axis::None => 1,
        Axis::Rows => pr,
        Axis::Cols => pc,
    };
    let out_clash = matches!(
        (b.place, b.unfold),
        (SetAxis::Rows, Axis::Rows)
            | (SetAxis::Cols, Axis::Cols)
            | (SetAxis::Cells, Axis::Rows | Axis::Cols)
    );
    check(!out_clash, "block place axis and unfold axis overlap")?;
    let placed = match b.place {
        SetAxis::None => 1,
        SetAxis::Rows => dst.0,
        SetAxis::Cols => dst.1,
        SetAxis::Cells => dst.0 * dst.1,
    };
    check(placed == n, "block rows do not match the destination axis")?;
    let m_out = match b.unfold {
        Axis::None => 1,
        Axis::Rows => dst.0,
        Axis::Cols => dst.1,
    };
    Ok(Dims {
        src,
        dst,
        n,
        k: elems(m as u64 * fin as u64)?,
        kout: elems(m_out as u64 * fout as u64)?,
    })
}

fn block(
    c: &Checker,
    b: &Block,
    shape: &Shape,
    fin: usize,
    fout: usize,
) -> Result<(Dims, usize), Error> {
    let d = block_dims(b, shape, fin, fout)?;
    let out = match &b.map {
        Map::Mlp(m) => c.mlp(m, d.k)?,
        Map::Set(s) => c.set_layer(s, d.k)?,
    };
    check(
        out == d.kout && map_fout(&b.map) == d.kout,
        "block output width does not match the destination",
    )?;
    elems((d.n as u64) * (d.k as u64 + d.kout as u64))?;
    Ok((d, block_tmp_len(b, &d)))
}

/// Scratch of resampling `W_0` from `din` to `dout` rows over `d1` columns.
pub fn resample_tmp_len(s: &SetLayer, din: usize, dout: usize, d1: usize) -> usize {
    d1 * din + d1 * dout + set_tmp_len(s, d1, din)
}

fn resample(
    c: &Checker,
    r: &Resample,
    shape: &Shape,
    l: &DwsLayer,
    lay: &mut Layout,
) -> Result<usize, Error> {
    let (d0, d1) = (shape.dim(0), shape.dim(1));
    let ds = r.rows as usize;
    check(ds >= 1, "down-sampled size is zero")?;
    check(
        c.set_layer(&r.down, d0)? == ds,
        "down-sampling width mismatch",
    )?;
    check(c.set_layer(&r.up, ds)? == d0, "up-sampling width mismatch")?;
    check(
        c.mlp(&r.skip, l.fin as usize)? == l.fout as usize,
        "resample skip width mismatch",
    )?;
    let ds_d1 = (ds as u64).saturating_mul(d1 as u64);
    lay.down_len = lay.down_len.max(elems(ds_d1.saturating_mul(l.fin as u64))?);
    lay.up_len = lay.up_len.max(elems(ds_d1.saturating_mul(l.fout as u64))?);
    lay.macs = lay.macs.saturating_add(
        mlp_macs(&r.skip, d0 * d1)
            + set_macs(&r.down, d1) * l.fin as u64
            + set_macs(&r.up, d1) * l.fout as u64,
    );
    let down = resample_tmp_len(&r.down, d0, ds, d1);
    let up = resample_tmp_len(&r.up, ds, d0, d1);
    Ok(mlp_tmp_len(&r.skip, d0 * d1).max(down).max(up))
}

/// Width of the invariant head's pooled vector for `f` features.
pub fn head_width(shape: &Shape, f: usize) -> usize {
    let l = shape.layers();
    (2 * l - 3 + shape.dim(0) + 2 * shape.dim(l)) * f
}

fn head(c: &Checker, h: &Head, shape: &Shape, f: usize) -> Result<(usize, usize), Error> {
    let width = head_width(shape, f);
    let out = c.mlp(&h.mlp, width)?;
    Ok((out, width + out + mlp_tmp_len(&h.mlp, 1)))
}

/// Checks the spec.
pub fn check_spec(s: &Spec) -> Result<Shape, Error> {
    check(
        s.dims.len() >= 3 && s.dims.len() <= MAX_LAYERS + 1,
        "need 2..=16 weight matrices",
    )?;
    check(
        s.dims.iter().all(|&d| d >= 1),
        "zero-sized input network dimension",
    )?;
    check(s.input_features >= 1, "zero input features")?;
    // Counted in u64 with saturation before any usize arithmetic on the dims:
    // huge dims must give an error, not an overflow (also on 32-bit targets).
    let cells = s.dims.windows(2).fold(0u64, |acc, d| {
        acc.saturating_add(u64::from(d[0]) * u64::from(d[1]) + u64::from(d[1]))
    });
    elems(cells.saturating_mul(u64::from(s.input_features)))?;
    Ok(Shape::new(&s.dims))
}

/// Walks every op once, checking it, and returns the layout.
pub fn validate(s: &Spec, shape: &Shape, ops: Ops<'_>, params_len: usize) -> Result<Layout, Error> {
    let c = Checker {
        params_len: params_len as u64,
        quantized: false,
        wide: Kind::F32,
    };
    let cells = shape.total_cells();
    let tensors = shape.tensors();
    let mut lay = Layout {
        input_len: cells * s.input_features as usize,
        act_len: 0,
        ..Layout::default()
    };
    let mut feats = s.input_features as usize;
    let mut layer: Option<DwsLayer> = None;
    let mut pending = 0u32;
    let mut head_out = None;
    for (index, op) in ops.enumerate() {
        let op = op?;
        check(head_out.is_none(), "ops after the head")?;
        if pending > 0 {
            let Op::Block(b) = &op else {
                return Err(Error::InvalidPlan(
                    "DWS layer has fewer blocks than announced",
                ));
            };
            let l = layer
                .as_ref()
                .ok_or(Error::InvalidPlan("block outside a DWS layer"))?;
            let inner = match &l.resample {
                Some(r) => shape.with_w0_rows(r.rows as usize),
                None => *shape,
            };
            let (d, tmp) = block(&c, b, &inner, l.fin as usize, l.fout as usize)?;
            lay.tmp_len = lay.tmp_len.max(tmp);
            lay.macs = lay.macs.saturating_add(block_macs(b, &d));
            lay.blocks += 1;
            pending -= 1;
            continue;
        }
        match &op {
            Op::Normalize { mean, std } => {
                check(index == 0, "normalization must come first")?;
                c.param(*mean, lay.input_len)?;
                c.param(*std, lay.input_len)?;
                lay.normalize = true;
            }
            Op::Dws(l) => {
                check(l.fin as usize == feats, "DWS layer input features mismatch")?;
                check(l.fout >= 1, "DWS layer with no output features")?;
                if let Some(r) = &l.resample {
                    let tmp = resample(&c, r, shape, l, &mut lay)?;
                    lay.tmp_len = lay.tmp_len.max(tmp);
                }
                feats = l.fout as usize;
                lay.act_len = lay.act_len.max(elems(cells as u64 * feats as u64)?);
                lay.dws_layers += 1;
                pending = l.blocks;
                layer = Some(l.clone());
            }
            Op::Block(_) => return Err(Error::InvalidPlan("block outside a DWS layer")),
            Op::Affine { scale, shift } => {
                check(layer.is_some(), "affine before the first DWS layer")?;
                c.param(*scale, tensors * feats)?;
                c.param(*shift, tensors * feats)?;
            }
            Op::Relu => check(layer.is_some(), "ReLU before the first DWS layer")?,
            Op::InputSkip(l) => {
                check(layer.is_some(), "skip before the first DWS layer")?;
                check(
                    c.linear(l, s.input_features as usize)? == feats,
                    "skip output width mismatch",
                )?;
                lay.macs = lay
                    .macs
                    .saturating_add(cells as u64 * l.fin as u64 * l.fout as u64);
            }
            Op::Quant(_) => return Err(Error::InvalidPlan("quantization record in an f32 plan")),
            Op::Head(h) => {
                check(layer.is_some(), "head before the first DWS layer")?;
                check(h.mlp.layers.iter().all(|l| l.fout >= 1), "empty head")?;
                let (out, tmp) = head(&c, h, shape, feats)?;
                lay.tmp_len = lay.tmp_len.max(tmp);
                lay.macs = lay.macs.saturating_add(mlp_macs(&h.mlp, 1));
                head_out = Some(out);
            }
        }
    }
    check(pending == 0, "DWS layer has fewer blocks than announced")?;
    check(layer.is_some(), "plan has no DWS layer")?;
    lay.output_len = match (s.output, head_out) {
        (Output::Logits { classes }, Some(out)) => {
            check(
                classes as usize == out,
                "head width differs from the class count",
            )?;
            out
        }
        (Output::WeightSpace { features }, None) => {
            check(
                features as usize == feats,
                "final features differ from the output features",
            )?;
            cells * feats
        }
        _ => return Err(Error::InvalidPlan("output kind does not match the plan")),
    };
    Ok(lay)
}
