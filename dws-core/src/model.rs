//! A validated model and its f32 forward pass (the quantized passes live in
//! [`crate::quantized`]).

use crate::blob::{BlobView, Precision};
use crate::kernels::block::run_block;
use crate::kernels::linear::mlp_rows;
use crate::kernels::reduce::reduce_into;
use crate::kernels::set_layer::set_layer;
use crate::kernels::{relu, Params};
use crate::observe::{NoObserve, Observe, Part, Stage, Tap};
use crate::plan::{DwsLayer, Head, Linear, Op, SetLayer, Spec};
use crate::quantized::{
    run_q, validate_q, Act, Input, Kernels, ModeSizes, Portable, QLayout, QParams,
};
use crate::shape::Shape;
use crate::validate::{block_dims, check_spec, head_width, resample_tmp_len, validate, Layout};
use crate::{Error, Ops};

/// A DWSNet read from a blob: checked once, then run any number of times.
#[derive(Debug, Clone)]
pub struct Model<'a> {
    spec: Spec,
    shape: Shape,
    ops: &'a [u8],
    precision: Precision,
    params: &'a [f32],
    bytes: &'a [u8],
    blob: &'a [u8],
    version: u16,
    layout: Layout,
    qlayout: QLayout,
}

/// Which buffer holds the current activations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cur {
    Input,
    A,
    B,
}

impl<'a> Model<'a> {
    /// Opens a blob: checks the container, decodes and validates the whole plan.
    ///
    /// The parameter section must be 4-byte aligned in memory, 8-byte aligned
    /// for a 16x8 model ([`Error::Misaligned`]).
    pub fn new_checked(blob: &'a [u8]) -> Result<Self, Error> {
        let view = BlobView::new_checked(blob)?;
        let (spec, ops) =
            postcard::take_from_bytes::<Spec>(view.plan()).map_err(|_| Error::Decode)?;
        let shape = check_spec(&spec)?;
        let bytes = view.params();
        let precision = view.precision();
        let align = if precision == Precision::Int16x8 {
            8
        } else {
            4
        };
        if !(bytes.as_ptr() as usize).is_multiple_of(align) {
            return Err(Error::Misaligned);
        }
        let version = view.version();
        let plan = Ops::new(ops, spec.ops, version);
        let (params, layout, qlayout) = match precision {
            Precision::F32 => {
                let params: &[f32] =
                    bytemuck::try_cast_slice(bytes).map_err(|_| Error::Truncated)?;
                let layout = validate(&spec, &shape, plan.clone(), params.len())?;
                (params, layout, QLayout::default())
            }
            Precision::Int8 => {
                let z = ModeSizes::of::<i8>();
                let (layout, q) = validate_q(&spec, &shape, plan.clone(), bytes, z)?;
                (&[][..], layout, q)
            }
            Precision::Int16x8 => {
                let z = ModeSizes::of::<i16>();
                let (layout, q) = validate_q(&spec, &shape, plan.clone(), bytes, z)?;
                (&[][..], layout, q)
            }
        };
        if !plan.rest_after_all()?.is_empty() {
            return Err(Error::TrailingBytes);
        }
        Ok(Model {
            spec,
            shape,
            ops,
            precision,
            params,
            bytes,
            blob,
            version,
            layout,
            qlayout,
        })
    }

    /// The input/output contract.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Memory and cost figures.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The plan's ops, decoded one at a time.
    pub fn ops(&self) -> Ops<'a> {
        Ops::new(self.ops, self.spec.ops, self.version)
    }

    /// The blob format version the model was written in.
    pub fn format_version(&self) -> u16 {
        self.version
    }

    /// The parameter section of an f32 model (empty for quantized models).
    pub fn params(&self) -> &'a [f32] {
        self.params
    }

    /// The whole blob the model was opened from.
    pub fn blob(&self) -> &'a [u8] {
        self.blob
    }

    /// The raw parameter section.
    pub fn param_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The model's arithmetic.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Byte sizes of the quantized scratch regions (all zero for f32 models).
    pub fn qlayout(&self) -> &QLayout {
        &self.qlayout
    }

    /// Elements of one input: the weight space flattened in upstream order.
    pub fn input_len(&self) -> usize {
        self.layout.input_len
    }

    /// Elements of one output (logits, or the output weight space).
    pub fn output_len(&self) -> usize {
        self.layout.output_len
    }

    /// Elements (f32) of scratch one inference needs.
    pub fn scratch_len(&self) -> usize {
        match self.precision {
            Precision::F32 => self.layout.scratch_len(),
            Precision::Int8 | Precision::Int16x8 => self.qlayout.bytes().div_ceil(4),
        }
    }

    /// The grid shapes of the weight space.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// `d_0 .. d_L` of the input network.
    pub fn dims(&self) -> &[u32] {
        &self.spec.dims
    }

    /// Runs one input.
    ///
    /// `input` is the weight space in upstream layout, tensors back to back:
    /// `W_0..W_{L-1}` (`[d_i, d_{i+1}, F]`), then `b_0..b_{L-1}` (`[d_{i+1}, F]`).
    /// Returns the written part of `output`.
    pub fn run<'o>(
        &self,
        input: &[f32],
        scratch: &mut [f32],
        output: &'o mut [f32],
    ) -> Result<&'o [f32], Error> {
        match self.precision {
            Precision::F32 => self.run_observed(input, scratch, output, &mut NoObserve),
            Precision::Int8 => self.run_q::<i8>(&mut Portable, Input::F32(input), scratch, output),
            Precision::Int16x8 => {
                self.run_q::<i16>(&mut Portable, Input::F32(input), scratch, output)
            }
        }
    }

    /// [`Model::run`] for a quantized model whose activations are `A` (`i8`
    /// for int8, `i16` for 16x8), with the hot loops run by `kernels` (a
    /// host's SIMD [`Kernels`]; the results are the same bits as with
    /// [`Portable`], which [`Model::run`] uses). [`Error::WrongPrecision`] for
    /// a model of another precision.
    pub fn run_quantized_with<'o, A: Act>(
        &self,
        kernels: &mut impl Kernels<A>,
        input: &[f32],
        scratch: &mut [f32],
        output: &'o mut [f32],
    ) -> Result<&'o [f32], Error> {
        self.run_q(kernels, Input::F32(input), scratch, output)
    }

    /// Runs a quantized model on an input that is already quantized:
    /// `input[i] * scales[t]` is the value of element `i` of tensor `t` (one
    /// scale per weight-space tensor, `W_0..W_{L-1}` then `b_0..b_{L-1}`).
    /// `A` is the model's activation type: `i8` for an int8 model, `i16` for
    /// a 16x8 model ([`Error::WrongPrecision`] otherwise).
    pub fn run_quantized<'o, A: Act>(
        &self,
        input: &[A],
        scales: &[f32],
        scratch: &mut [f32],
        output: &'o mut [f32],
    ) -> Result<&'o [f32], Error> {
        if scales.len() != self.shape.tensors() {
            return Err(Error::InputLength {
                expected: self.shape.tensors(),
                actual: scales.len(),
            });
        }
        if !scales.iter().all(|s| s.is_finite()) {
            return Err(Error::NonFiniteInput);
        }
        self.run_q(
            &mut Portable,
            Input::Quantized(input, scales),
            scratch,
            output,
        )
    }

    fn run_q<'o, A: Act>(
        &self,
        kernels: &mut impl Kernels<A>,
        input: Input<'_, A>,
        scratch: &mut [f32],
        output: &'o mut [f32],
    ) -> Result<&'o [f32], Error> {
        if self.precision != A::PRECISION {
            return Err(Error::WrongPrecision);
        }
        let lay = &self.layout;
        let input_len = match input {
            Input::F32(x) => x.len(),
            Input::Quantized(q, _) => q.len(),
        };
        if input_len != lay.input_len {
            return Err(Error::InputLength {
                expected: lay.input_len,
                actual: input_len,
            });
        }
        if let Input::F32(x) = input {
            if !x.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFiniteInput);
            }
        }
        if output.len() < lay.output_len {
            return Err(Error::OutputLength {
                expected: lay.output_len,
                actual: output.len(),
            });
        }
        let need = self.scratch_len();
        if scratch.len() < need {
            return Err(Error::ScratchTooSmall {
                expected: need,
                actual: scratch.len(),
            });
        }
        let output = &mut output[..lay.output_len];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut scratch[..need]);
        run_q(
            kernels,
            &self.shape,
            self.spec.input_features as usize,
            self.ops(),
            QParams(self.bytes),
            &self.qlayout,
            input,
            &mut bytes[..self.qlayout.bytes()],
            output,
        )?;
        Ok(output)
    }

    /// [`Model::run`], reporting every value the int8 path quantizes to `obs`
    /// (see [`crate::observe`]).
    pub fn run_observed<'o>(
        &self,
        input: &[f32],
        scratch: &mut [f32],
        output: &'o mut [f32],
        obs: &mut dyn Observe,
    ) -> Result<&'o [f32], Error> {
        if self.precision != Precision::F32 {
            return Err(Error::WrongPrecision);
        }
        let lay = &self.layout;
        if input.len() != lay.input_len {
            return Err(Error::InputLength {
                expected: lay.input_len,
                actual: input.len(),
            });
        }
        if !input.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteInput);
        }
        if output.len() < lay.output_len {
            return Err(Error::OutputLength {
                expected: lay.output_len,
                actual: output.len(),
            });
        }
        let need = lay.scratch_len();
        if scratch.len() < need {
            return Err(Error::ScratchTooSmall {
                expected: need,
                actual: scratch.len(),
            });
        }
        let output = &mut output[..lay.output_len];
        let p = Params(self.params);
        let x0_len = if lay.normalize { lay.input_len } else { 0 };
        let (x0buf, rest) = scratch.split_at_mut(x0_len);
        let (a, rest) = rest.split_at_mut(lay.act_len);
        let (b, rest) = rest.split_at_mut(lay.act_len);
        let (down, rest) = rest.split_at_mut(lay.down_len);
        let (up, rest) = rest.split_at_mut(lay.up_len);
        let tmp = &mut rest[..lay.tmp_len];

        let mut cur = Cur::Input;
        let mut feats = self.spec.input_features as usize;
        let mut ops = self.ops();
        let mut index = 0u32;
        while let Some(op) = ops.next() {
            let x0: &[f32] = if lay.normalize { x0buf } else { input };
            let here = index;
            index += 1;
            let mut tap = Tap::new(obs, here, Part::Block);
            let op = op?;
            let observe_tensors = matches!(op, Op::Dws(_) | Op::Affine { .. } | Op::InputSkip(_));
            match op {
                Op::Normalize { mean, std } => {
                    let (mean, std) = (p.get(mean), p.get(std));
                    for (((o, x), m), s) in x0buf.iter_mut().zip(input).zip(mean).zip(std) {
                        *o = (x - m) / s;
                    }
                }
                Op::Dws(l) => {
                    let (src, dst): (&[f32], &mut [f32]) = match cur {
                        Cur::Input => (x0, &mut *a),
                        Cur::A => (&*a, &mut *b),
                        Cur::B => (&*b, &mut *a),
                    };
                    self.dws_layer(&l, &mut ops, &mut index, src, dst, down, up, tmp, &mut tap)?;
                    cur = if cur == Cur::A { Cur::B } else { Cur::A };
                    feats = l.fout as usize;
                }
                Op::Block(_) => return Err(Error::InvalidPlan("block outside a DWS layer")),
                Op::Affine { scale, shift } => {
                    let x = self.current(cur, a, b);
                    let (scale, shift) = (p.get(scale), p.get(shift));
                    for t in 0..self.shape.tensors() {
                        let at = self.shape.offset(t, feats);
                        let tensor = &mut x[at..at + self.shape.cells(t) * feats];
                        let (sc, sh) = (
                            &scale[t * feats..(t + 1) * feats],
                            &shift[t * feats..(t + 1) * feats],
                        );
                        for entry in tensor.chunks_exact_mut(feats) {
                            for ((v, s), h) in entry.iter_mut().zip(sc).zip(sh) {
                                *v = *v * s + h;
                            }
                        }
                    }
                }
                Op::Relu => relu(&mut self.current(cur, a, b)[..self.shape.total_cells() * feats]),
                Op::InputSkip(l) => {
                    let x = self.current(cur, a, b);
                    input_skip(&l, p, x0, &mut x[..self.shape.total_cells() * feats]);
                }
                Op::Quant(_) => {
                    return Err(Error::InvalidPlan("quantization record in an f32 plan"))
                }
                Op::Head(h) => {
                    let x = self.current(cur, a, b);
                    self.head(&h, x, feats, output, tmp, &mut tap.part(Part::Head));
                    return Ok(output);
                }
            }
            if observe_tensors {
                let x: &[f32] = if cur == Cur::B { b } else { a };
                for t in 0..self.shape.tensors() {
                    let at = self.shape.offset(t, feats);
                    tap.part(Part::Tensor(t as u8))
                        .at(Stage::Y, &x[at..at + self.shape.cells(t) * feats]);
                }
            }
        }
        let x: &[f32] = match cur {
            Cur::Input => input,
            Cur::A => a,
            Cur::B => b,
        };
        output.copy_from_slice(&x[..output.len()]);
        Ok(output)
    }

    fn current<'s>(&self, cur: Cur, a: &'s mut [f32], b: &'s mut [f32]) -> &'s mut [f32] {
        if cur == Cur::B {
            b
        } else {
            a
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dws_layer(
        &self,
        l: &DwsLayer,
        ops: &mut Ops<'a>,
        index: &mut u32,
        src: &[f32],
        dst: &mut [f32],
        down: &mut [f32],
        up: &mut [f32],
        tmp: &mut [f32],
        tap: &mut Tap<'_>,
    ) -> Result<(), Error> {
        let p = Params(self.params);
        let (fin, fout) = (l.fin as usize, l.fout as usize);
        let shape = &self.shape;
        dst[..shape.total_cells() * fout].fill(0.0);
        let (d0, d1) = (shape.dim(0), shape.dim(1));
        let inner = match &l.resample {
            Some(r) => {
                let ds = r.rows as usize;
                let skip_out = &mut dst[..d0 * d1 * fout];
                let w0 = &src[..d0 * d1 * fin];
                let mut skip_tap = tap.part(Part::Skip);
                mlp_rows(
                    &r.skip,
                    p,
                    w0,
                    d0 * d1,
                    skip_out,
                    tmp,
                    &mut skip_tap,
                    Stage::Hidden,
                );
                skip_tap.at(Stage::Y, skip_out);
                let d = &mut down[..ds * d1 * fin];
                d.fill(0.0);
                let mut down_tap = tap.part(Part::Down);
                resample(&r.down, p, w0, d0, ds, d1, fin, d, tmp, &mut down_tap);
                down_tap.at(Stage::Y, d);
                up[..ds * d1 * fout].fill(0.0);
                shape.with_w0_rows(ds)
            }
            None => *shape,
        };
        let resampled = l.resample.is_some();
        for _ in 0..l.blocks {
            let Some(Op::Block(blk)) = ops.next().transpose()? else {
                return Err(Error::InvalidPlan(
                    "DWS layer has fewer blocks than announced",
                ));
            };
            let mut btap = Tap::new(tap.observer(), *index, Part::Block);
            *index += 1;
            let d = block_dims(&blk, &inner, fin, fout)?;
            let (s, t) = (blk.src as usize, blk.dst as usize);
            let from: &[f32] = if resampled && s == 0 {
                &down[..inner.cells(0) * fin]
            } else {
                let at = shape.offset(s, fin);
                &src[at..at + shape.cells(s) * fin]
            };
            let to: &mut [f32] = if resampled && t == 0 {
                &mut up[..inner.cells(0) * fout]
            } else {
                let at = shape.offset(t, fout);
                &mut dst[at..at + shape.cells(t) * fout]
            };
            run_block(
                &blk,
                p,
                l.reduction,
                &d,
                fin,
                fout,
                from,
                to,
                tmp,
                &mut btap,
            );
        }
        if let Some(r) = &l.resample {
            let ds = r.rows as usize;
            let u = &up[..ds * d1 * fout];
            tap.part(Part::Inner).at(Stage::Y, u);
            let w0 = &mut dst[..d0 * d1 * fout];
            resample(
                &r.up,
                p,
                u,
                ds,
                d0,
                d1,
                fout,
                w0,
                tmp,
                &mut tap.part(Part::Up),
            );
        }
        Ok(())
    }

    fn head(
        &self,
        h: &Head,
        x: &[f32],
        f: usize,
        output: &mut [f32],
        tmp: &mut [f32],
        tap: &mut Tap<'_>,
    ) {
        let shape = &self.shape;
        let l = shape.layers();
        let width = head_width(shape, f);
        let (v, rest) = tmp.split_at_mut(width);
        let mut pos = 0;
        let tensor = |t: usize| &x[shape.offset(t, f)..shape.offset(t, f) + shape.cells(t) * f];
        // Middle weights, pooled over both axes.
        for t in 1..l - 1 {
            let w = tensor(t);
            reduce_into(h.reduction, shape.cells(t), &mut v[pos..pos + f], |e| {
                &w[e * f..(e + 1) * f]
            });
            pos += f;
        }
        // W_0 pooled over its columns: d_0 * F values.
        let (d0, d1) = shape.grid(0);
        let w0 = tensor(0);
        for r in 0..d0 {
            reduce_into(h.reduction, d1, &mut v[pos..pos + f], |c| {
                &w0[(r * d1 + c) * f..(r * d1 + c + 1) * f]
            });
            pos += f;
        }
        // W_{L-1} pooled over its rows: d_L * F values.
        let (dl1, dl) = shape.grid(l - 1);
        let wl = tensor(l - 1);
        for c in 0..dl {
            reduce_into(h.reduction, dl1, &mut v[pos..pos + f], |r| {
                &wl[(r * dl + c) * f..(r * dl + c + 1) * f]
            });
            pos += f;
        }
        // Every bias but the last, pooled over its entries.
        for i in 0..l - 1 {
            let bias = tensor(l + i);
            reduce_into(h.reduction, shape.cells(l + i), &mut v[pos..pos + f], |e| {
                &bias[e * f..(e + 1) * f]
            });
            pos += f;
        }
        // The last bias, flattened.
        let last = tensor(2 * l - 1);
        v[pos..pos + last.len()].copy_from_slice(last);
        tap.at(Stage::X, v);
        let (out_tmp, mlp_tmp) = rest.split_at_mut(output.len());
        mlp_rows(
            &h.mlp,
            Params(self.params),
            v,
            1,
            out_tmp,
            mlp_tmp,
            tap,
            Stage::Hidden,
        );
        output.copy_from_slice(&out_tmp[..output.len()]);
    }
}

/// `x += linear(x0)` for every entry of the weight space.
fn input_skip(l: &Linear, p: Params<'_>, x0: &[f32], x: &mut [f32]) {
    let (fin, fout) = (l.fin as usize, l.fout as usize);
    let w = p.get(l.weight);
    let bias = l.bias.map(|b| p.get(b));
    for (xi, yo) in x0.chunks_exact(fin).zip(x.chunks_exact_mut(fout)) {
        for (o, y) in yo.iter_mut().enumerate() {
            let dot: f32 = xi
                .iter()
                .zip(&w[o * fin..(o + 1) * fin])
                .map(|(a, b)| a * b)
                .sum();
            *y += dot + bias.map_or(0.0, |b| b[o]);
        }
    }
}

/// Resamples `W_0` (`[din, d1, f]`) to `[dout, d1, f]` with a set layer over `d1`
/// applied to every feature separately, adding into `out`.
#[allow(clippy::too_many_arguments)]
fn resample(
    s: &SetLayer,
    p: Params<'_>,
    w0: &[f32],
    din: usize,
    dout: usize,
    d1: usize,
    f: usize,
    out: &mut [f32],
    tmp: &mut [f32],
    tap: &mut Tap<'_>,
) {
    let tmp = &mut tmp[..resample_tmp_len(s, din, dout, d1)];
    let (x, rest) = tmp.split_at_mut(d1 * din);
    let (y, rest) = rest.split_at_mut(d1 * dout);
    for ch in 0..f {
        for n in 0..d1 {
            for k in 0..din {
                x[n * din + k] = w0[(k * d1 + n) * f + ch];
            }
        }
        tap.at(Stage::X, x);
        set_layer(s, p, x, d1, din, y, rest, tap);
        tap.at(Stage::Y, y);
        for n in 0..d1 {
            for r in 0..dout {
                out[(r * d1 + n) * f + ch] += y[n * dout + r];
            }
        }
    }
}
