//! `dws quantize`: an f32 blob and calibration inputs become an int8 blob.
//!
//! Calibration runs the f32 model over the inputs and records the magnitudes
//! at every observation point of the core ([`dws_core::observe`]); each int8
//! value gets the symmetric scale `c / 127`, `c` the magnitude that 99.99% of the
//! calibration values do not exceed. Weights are
//! quantized per tensor (`max|W| / 127`), biases to int32 in the accumulator's
//! scale, and every change of scale becomes a fixed-point [`Requant`]. The
//! arithmetic is specified in `docs/int8.md`.

use crate::blob_io::{encode_parts, AlignedBlob};
use crate::fast::int8::Int8Engine;
use crate::fast::Isa;
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use dws_core::blob::Precision;
use dws_core::observe::{Observe, Part, Site, Stage};
use dws_core::plan::{
    Block, DwsLayer, Linear, Map, Mlp, Op, Output, ParamRef, Reduction, SetLayer, SetPooling, Spec,
};
use dws_core::quant::{BlockQ, MapQ, MlpQ, Quant, Requant, ResampleQ};
use dws_core::Model;
use std::collections::{BTreeMap, HashMap};

/// Magnitudes seen at every observation point, as a histogram over `log2 |x|`
/// (8 bins per octave), and the largest one.
#[derive(Debug, Default, Clone)]
pub struct Ranges(BTreeMap<Site, Histogram>);

/// A log-magnitude histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    max: f32,
    count: u64,
    bins: Vec<u64>,
}

const BINS_PER_OCTAVE: f32 = 8.0;
const LOWEST_OCTAVE: f32 = -40.0;
const N_BINS: usize = 640;

/// The calibrated magnitude of a value the calibration only saw as zero.
const DEAD_RANGE: f32 = 1.0;

/// Share of the magnitudes at a site that calibration covers without clipping.
pub const COVERAGE: f64 = 0.9999;

impl Histogram {
    fn new() -> Self {
        Histogram {
            max: 0.0,
            count: 0,
            bins: vec![0; N_BINS],
        }
    }

    fn bin(v: f32) -> usize {
        let b = ((v.max(1e-30).log2() - LOWEST_OCTAVE) * BINS_PER_OCTAVE).floor();
        b.clamp(0.0, (N_BINS - 1) as f32) as usize
    }

    /// The magnitude below which `COVERAGE` of the values lie (at most the max).
    fn clip(&self) -> f32 {
        let target = (self.count as f64 * COVERAGE).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.bins.iter().enumerate() {
            seen += n;
            if seen >= target {
                let upper = 2f32.powf((i as f32 + 1.0) / BINS_PER_OCTAVE + LOWEST_OCTAVE);
                return upper.min(self.max);
            }
        }
        self.max
    }
}

impl Observe for Ranges {
    fn observe(&mut self, site: Site, values: &[f32]) {
        let h = self.0.entry(site).or_insert_with(Histogram::new);
        for v in values {
            let a = v.abs();
            h.max = h.max.max(a);
            h.count += 1;
            h.bins[Histogram::bin(a)] += 1;
        }
    }
}

impl Ranges {
    fn scale(&self, site: Site) -> Result<f32> {
        let h = self
            .0
            .get(&site)
            .ok_or_else(|| anyhow!("no calibration data at {site:?}"))?;
        // A value that was zero on every calibration input (a dead ReLU) gets
        // the range of a normalized activation, +-1, so that the factors into
        // and out of it stay ordinary.
        let clip = if h.max > 0.0 { h.clip() } else { DEAD_RANGE };
        Ok(scale_of(clip))
    }
}

fn scale_of(max_abs: f32) -> f32 {
    max_abs.max(1e-8) / 127.0
}

/// The fixed-point form of a real multiplier `m` (see `docs/int8.md`).
pub fn requant(m: f64) -> Result<Requant> {
    if !(m.is_finite() && m >= 0.0) {
        bail!("multiplier {m} is not a finite non-negative number");
    }
    if m == 0.0 {
        return Ok(Requant { m: 0, shift: 1 });
    }
    let e = m.log2().floor() as i32;
    let mut shift = 30 - e;
    if shift < 1 {
        bail!(
            "requantization factor {m:.4e} is too large for fixed point (>= 2^30): a value's \
             calibrated range is tiny against its inputs'; calibrate on more typical inputs"
        );
    }
    shift = shift.min(62);
    let mut mant = (m * 2f64.powi(shift)).round() as i64;
    if mant >= 1 << 31 {
        if shift == 1 {
            // m rounded up to exactly 2^30: one unit less keeps shift >= 1.
            return Ok(Requant {
                m: i32::MAX,
                shift: 1,
            });
        }
        mant /= 2;
        shift -= 1;
    }
    Ok(Requant {
        m: mant as i32,
        shift: shift as u8,
    })
}

/// The calibration result: observed ranges and the scales of the inputs.
pub struct Calibration {
    /// Ranges per observation point.
    pub ranges: Ranges,
    /// Per input tensor: the scale after normalization.
    pub input_scales: Vec<f32>,
}

/// Runs the f32 model over `inputs` (`[n, input_len]`) recording ranges.
pub fn calibrate(model: &Model<'_>, inputs: &[f32]) -> Result<Calibration> {
    calibrate_with_progress(model, inputs, &mut || {})
}

/// [`calibrate`], calling `done` after each input.
pub fn calibrate_with_progress(
    model: &Model<'_>,
    inputs: &[f32],
    done: &mut dyn FnMut(),
) -> Result<Calibration> {
    let mut ranges = Ranges::default();
    let mut scratch = vec![0f32; model.scratch_len()];
    let mut out = vec![0f32; model.output_len()];
    let shape = model.shape();
    let f = model.spec().input_features as usize;
    let mut input_max = vec![0f32; shape.tensors()];
    let norm = normalization(model)?;
    for x in inputs.chunks(model.input_len()) {
        model
            .run_observed(x, &mut scratch, &mut out, &mut ranges)
            .map_err(|e| anyhow!("{e}"))?;
        for (t, m) in input_max.iter_mut().enumerate() {
            let at = shape.offset(t, f);
            for i in at..at + shape.cells(t) * f {
                let v = match &norm {
                    Some((mean, std)) => (x[i] - mean[i]) / std[i],
                    None => x[i],
                };
                *m = m.max(v.abs());
            }
        }
        done();
    }
    Ok(Calibration {
        ranges,
        input_scales: input_max.into_iter().map(scale_of).collect(),
    })
}

fn normalization(model: &Model<'_>) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    let p = model.params();
    for op in model.ops() {
        if let Op::Normalize { mean, std } = op.map_err(|e| anyhow!("{e}"))? {
            let get = |r: ParamRef| p[r.offset as usize..(r.offset + r.len) as usize].to_vec();
            return Ok(Some((get(mean), get(std))));
        }
    }
    Ok(None)
}

/// An int8 plan under construction.
struct Writer<'m> {
    f32s: &'m [f32],
    bytes: Vec<u8>,
    /// Quantized weights by their f32 reference: (int8 reference, scale).
    weights: HashMap<(u32, u32), (ParamRef, f32)>,
}

impl Writer<'_> {
    fn get(&self, r: ParamRef) -> &[f32] {
        &self.f32s[r.offset as usize..(r.offset + r.len) as usize]
    }

    fn align4(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn push_i8(&mut self, v: &[i8]) -> ParamRef {
        let r = ParamRef {
            offset: self.bytes.len() as u32,
            len: v.len() as u32,
        };
        self.bytes.extend(v.iter().map(|x| *x as u8));
        r
    }

    fn push_i32(&mut self, v: &[i32]) -> ParamRef {
        self.align4();
        let r = ParamRef {
            offset: self.bytes.len() as u32,
            len: v.len() as u32,
        };
        self.bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        r
    }

    fn push_f32(&mut self, v: &[f32]) -> ParamRef {
        self.align4();
        let r = ParamRef {
            offset: self.bytes.len() as u32,
            len: v.len() as u32,
        };
        self.bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        r
    }

    /// Per-tensor symmetric int8 weights, shared by every use of the same f32 tensor.
    fn weights(&mut self, r: ParamRef) -> (ParamRef, f32) {
        if let Some(w) = self.weights.get(&(r.offset, r.len)) {
            return *w;
        }
        let w = self.get(r).to_vec();
        let s = scale_of(w.iter().fold(0f32, |a, v| a.max(v.abs())));
        let q: Vec<i8> = w
            .iter()
            .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8)
            .collect();
        let out = (self.push_i8(&q), s);
        self.weights.insert((r.offset, r.len), out);
        out
    }

    fn bias(&mut self, b: Option<ParamRef>, acc_scale: f32) -> Option<ParamRef> {
        let b = b?;
        let q: Vec<i32> = self
            .get(b)
            .iter()
            .map(|v| quant_i32(*v as f64 / acc_scale as f64))
            .collect();
        Some(self.push_i32(&q))
    }

    /// A linear layer with input scale `s_in`: returns the int8 layer and its accumulator scale.
    fn linear(&mut self, l: &Linear, s_in: f32) -> (Linear, f32) {
        let (w, sw) = self.weights(l.weight);
        let acc = s_in * sw;
        let bias = self.bias(l.bias, acc);
        (
            Linear {
                weight: w,
                bias,
                ..*l
            },
            acc,
        )
    }

    /// An MLP with input scale `s_in`; hidden layer `k` lands in `hidden(k)`, the last in `s_out`.
    fn mlp(
        &mut self,
        m: &Mlp,
        s_in: f32,
        hidden: impl Fn(u8) -> Result<f32>,
        s_out: f32,
    ) -> Result<(Mlp, MlpQ, f32)> {
        let mut out = Mlp {
            layers: heapless::Vec::new(),
        };
        let mut q = MlpQ::default();
        let mut s = s_in;
        let mut last_acc = 1.0;
        for (k, l) in m.layers.iter().enumerate() {
            let (ql, acc) = self.linear(l, s);
            let to = if k + 1 == m.layers.len() {
                s_out
            } else {
                hidden(k as u8)?
            };
            let _ = out.layers.push(ql);
            let _ = q.layers.push(requant(acc as f64 / to as f64)?);
            last_acc = acc;
            s = to;
        }
        Ok((out, q, last_acc))
    }

    fn set_layer(
        &mut self,
        sl: &SetLayer,
        s_x: f32,
        n: usize,
        r: &Ranges,
        site: Site,
        s_y: f32,
    ) -> Result<(SetLayer, MapQ)> {
        Ok(match sl {
            SetLayer::DeepSets {
                gamma,
                lambda,
                pooling,
            } => {
                let (gamma, gq, _) =
                    self.mlp(gamma, s_x, |k| r.scale(site.at(Stage::Hidden(k))), s_y)?;
                let (pooling, s_p, pooled, score) = match pooling {
                    SetPooling::Reduce(Reduction::Max) => {
                        (*pooling, s_x, requant(1.0)?, requant(1.0)?)
                    }
                    SetPooling::Reduce(red) => {
                        let s_p = r.scale(site.at(Stage::Pooled))?;
                        let count = if *red == Reduction::Mean {
                            n as f64
                        } else {
                            1.0
                        };
                        (
                            *pooling,
                            s_p,
                            requant(s_x as f64 / (count * s_p as f64))?,
                            requant(1.0)?,
                        )
                    }
                    SetPooling::Attention { query } => {
                        let s_p = r.scale(site.at(Stage::Pooled))?;
                        let (q, s_q) = self.weights(*query);
                        let score = requant(s_x as f64 * s_q as f64 * 256.0)?;
                        (
                            SetPooling::Attention { query: q },
                            s_p,
                            requant(s_x as f64 / (32768.0 * s_p as f64))?,
                            score,
                        )
                    }
                };
                let (lambda, lq, _) = self.mlp(
                    lambda,
                    s_p,
                    |k| r.scale(site.at(Stage::LambdaHidden(k))),
                    s_y,
                )?;
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
                )
            }
            SetLayer::Attention {
                heads,
                fc_q,
                fc_k,
                fc_v,
                fc_o,
            } => {
                let (s_q, s_k, s_v, s_o) = (
                    r.scale(site.at(Stage::Q))?,
                    r.scale(site.at(Stage::K))?,
                    r.scale(site.at(Stage::V))?,
                    r.scale(site.at(Stage::O))?,
                );
                let dv = fc_o.fout as f64;
                let (fq, aq) = self.linear(fc_q, s_x);
                let (fk, ak) = self.linear(fc_k, s_x);
                let (fv, av) = self.linear(fc_v, s_x);
                let (fo, ao) = self.linear(fc_o, s_o);
                let q = MapQ::Attention {
                    q: requant(aq as f64 / s_q as f64)?,
                    k: requant(ak as f64 / s_k as f64)?,
                    v: requant(av as f64 / s_v as f64)?,
                    score: requant(s_q as f64 * s_k as f64 / dv.sqrt() * 256.0)?,
                    o_q: requant(s_q as f64 / s_o as f64)?,
                    o_av: requant(s_v as f64 / (32768.0 * s_o as f64))?,
                    y_o: requant(s_o as f64 / s_y as f64)?,
                    y_fc: requant(ao as f64 / s_y as f64)?,
                };
                (
                    SetLayer::Attention {
                        heads: *heads,
                        fc_q: fq,
                        fc_k: fk,
                        fc_v: fv,
                        fc_o: fo,
                    },
                    q,
                )
            }
        })
    }
}

fn quant_i32(v: f64) -> i32 {
    v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32
}

/// An int8 plan and where each f32 op ended in it (for truncated error reports).
pub struct Quantized {
    /// The int8 blob.
    pub blob: Vec<u8>,
    spec: Spec,
    ops: Vec<Op>,
    bytes: Vec<u8>,
    /// Per f32 DWS layer: (f32 op index, int8 op count after it, features, tensor scales).
    cuts: Vec<(usize, usize, u32, Vec<f32>)>,
}

/// Quantizes an f32 model with a calibration.
pub fn quantize(model: &Model<'_>, cal: &Calibration) -> Result<Quantized> {
    let ops: Vec<Op> = model
        .ops()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{e}"))?;
    let shape = model.shape();
    let r = &cal.ranges;
    let mut w = Writer {
        f32s: model.params(),
        bytes: Vec::new(),
        weights: HashMap::new(),
    };
    let mut out: Vec<Op> = Vec::new();
    let mut cuts = Vec::new();
    let t_count = shape.tensors();
    let mut scales = cal.input_scales.clone();
    let mut input_written = false;
    let mut feats = model.spec().input_features;
    let tensor_scales = |op: usize| -> Result<Vec<f32>> {
        (0..t_count)
            .map(|t| {
                r.scale(Site {
                    op: op as u32,
                    part: Part::Tensor(t as u8),
                    stage: Stage::Y,
                })
            })
            .collect()
    };
    let mut i = 0;
    while i < ops.len() {
        if !input_written && !matches!(ops[i], Op::Normalize { .. }) {
            out.push(Op::Quant(Quant::Input {
                scales: scales.iter().copied().collect(),
            }));
            input_written = true;
        }
        match &ops[i] {
            Op::Normalize { mean, std } => {
                let (m, s) = (w.get(*mean).to_vec(), w.get(*std).to_vec());
                out.push(Op::Normalize {
                    mean: w.push_f32(&m),
                    std: w.push_f32(&s),
                });
            }
            Op::Dws(l) => {
                let n_blocks = l.blocks as usize;
                let blocks: Vec<(usize, Block)> = (i + 1..i + 1 + n_blocks)
                    .map(|k| match &ops[k] {
                        Op::Block(b) => Ok((k, b.clone())),
                        _ => Err(anyhow!("malformed plan: DWS layer without its blocks")),
                    })
                    .collect::<Result<_>>()?;
                let out_scales = tensor_scales(i)?;
                layer(
                    &mut w,
                    r,
                    i,
                    l,
                    &blocks,
                    &shape,
                    &scales,
                    &out_scales,
                    &mut out,
                )?;
                scales = out_scales;
                feats = l.fout;
                i += n_blocks;
                cuts.push((i, out.len(), feats, scales.clone()));
            }
            Op::Affine { scale, shift } => {
                let new = tensor_scales(i)?;
                let (a, b) = (w.get(*scale).to_vec(), w.get(*shift).to_vec());
                let f = feats as usize;
                const S: u8 = 16;
                let mut mult = Vec::new();
                let mut off = Vec::new();
                for t in 0..t_count {
                    for c in 0..f {
                        let k = t * f + c;
                        mult.push(quant_i32(
                            a[k] as f64 * scales[t] as f64 / new[t] as f64 * 65536.0,
                        ));
                        off.push(quant_i32(b[k] as f64 / new[t] as f64 * 65536.0) + (1 << (S - 1)));
                    }
                }
                out.push(Op::Affine {
                    scale: w.push_i32(&mult),
                    shift: w.push_i32(&off),
                });
                out.push(Op::Quant(Quant::Affine { shift: S }));
                scales = new;
            }
            Op::Relu => out.push(Op::Relu),
            Op::InputSkip(l) => {
                let new = tensor_scales(i)?;
                let (wq, sw) = w.weights(l.weight);
                let mut bias = Vec::new();
                let (mut cur, mut lin) = (heapless::Vec::new(), heapless::Vec::new());
                for t in 0..t_count {
                    let acc = cal.input_scales[t] * sw;
                    if let Some(b) = l.bias {
                        bias.extend(w.get(b).iter().map(|v| quant_i32(*v as f64 / acc as f64)));
                    }
                    let _ = cur.push(requant(scales[t] as f64 / new[t] as f64)?);
                    let _ = lin.push(requant(acc as f64 / new[t] as f64)?);
                }
                let bias = l.bias.map(|_| w.push_i32(&bias));
                let bias_ref = bias.map(|b| ParamRef { len: b.len, ..b });
                out.push(Op::InputSkip(Linear {
                    weight: wq,
                    bias: bias_ref,
                    ..*l
                }));
                out.push(Op::Quant(Quant::Skip { cur, lin }));
                scales = new;
            }
            Op::Head(h) => {
                let site = Site {
                    op: i as u32,
                    part: Part::Head,
                    stage: Stage::X,
                };
                let s_h = r.scale(site)?;
                let l = shape.layers();
                let count = |n: usize| {
                    if h.reduction == Reduction::Mean {
                        n as f64
                    } else {
                        1.0
                    }
                };
                let mut segs: Vec<(f32, usize)> =
                    (1..l - 1).map(|t| (scales[t], shape.cells(t))).collect();
                segs.push((scales[0], shape.grid(0).1));
                segs.push((scales[l - 1], shape.grid(l - 1).0));
                segs.extend((0..l - 1).map(|b| (scales[l + b], shape.cells(l + b))));
                segs.push((scales[2 * l - 1], 1));
                let mut pooled = heapless::Vec::new();
                for (s, n) in segs {
                    let _ = pooled.push(requant(s as f64 / (count(n) * s_h as f64))?);
                }
                let (mlp, mq, logit_scale) =
                    w.mlp(&h.mlp, s_h, |k| r.scale(site.at(Stage::Hidden(k))), 1.0)?;
                out.push(Op::Head(dws_core::plan::Head {
                    reduction: h.reduction,
                    mlp,
                }));
                out.push(Op::Quant(Quant::Head {
                    pooled,
                    mlp: mq,
                    logit_scale,
                }));
            }
            Op::Block(_) | Op::Quant(_) => bail!("malformed f32 plan (op {i})"),
        }
        i += 1;
    }
    if let Output::WeightSpace { .. } = model.spec().output {
        out.push(Op::Quant(Quant::Output {
            scales: scales.iter().copied().collect(),
        }));
    }
    w.align4();
    let spec = Spec {
        ops: out.len() as u32,
        ..model.spec().clone()
    };
    let blob = encode_parts(Precision::Int8, &spec, &out, &w.bytes)?;
    AlignedBlob::from_bytes(&blob)
        .model()
        .context("the int8 model failed validation")?;
    Ok(Quantized {
        blob,
        spec,
        ops: out,
        bytes: w.bytes,
        cuts,
    })
}

/// One DWS layer: blocks regrouped by destination, cell-wise blocks last in each group.
#[allow(clippy::too_many_arguments)]
fn layer(
    w: &mut Writer<'_>,
    r: &Ranges,
    i: usize,
    l: &DwsLayer,
    blocks: &[(usize, Block)],
    shape: &dws_core::Shape,
    s_in: &[f32],
    s_out: &[f32],
    out: &mut Vec<Op>,
) -> Result<()> {
    let op = i as u32;
    let mut inner_scales = s_in.to_vec();
    let mut acc_scale: Vec<f32> = s_out.iter().map(|s| s / 256.0).collect();
    let mut outq: heapless::Vec<Requant, { dws_core::plan::MAX_TENSORS }> = heapless::Vec::new();
    for _ in 0..shape.tensors() {
        let _ = outq.push(requant(1.0 / 256.0)?);
    }
    let (resample, rq) = match &l.resample {
        Some(rs) => {
            let site = |part| Site {
                op,
                part,
                stage: Stage::Y,
            };
            let (s_skip, s_d, s_u, s_up) = (
                r.scale(site(Part::Skip))?,
                r.scale(site(Part::Down))?,
                r.scale(site(Part::Inner))?,
                r.scale(site(Part::Up))?,
            );
            let (skip, skipq, _) = w.mlp(
                &rs.skip,
                s_in[0],
                |k| {
                    r.scale(Site {
                        op,
                        part: Part::Skip,
                        stage: Stage::Hidden(k),
                    })
                },
                s_skip,
            )?;
            let d1 = shape.dim(1);
            let (down, downq) = w.set_layer(&rs.down, s_in[0], d1, r, site(Part::Down), s_d)?;
            let (up, upq) = w.set_layer(&rs.up, s_u, d1, r, site(Part::Up), s_up)?;
            inner_scales[0] = s_d;
            acc_scale[0] = s_u / 256.0;
            let q = ResampleQ {
                down: downq,
                up: upq,
                skip: skipq,
                out_up: requant(s_up as f64 / s_out[0] as f64)?,
                out_skip: requant(s_skip as f64 / s_out[0] as f64)?,
            };
            (
                Some(dws_core::plan::Resample {
                    rows: rs.rows,
                    down,
                    up,
                    skip,
                }),
                Some(q),
            )
        }
        None => (None, None),
    };
    let inner = match &l.resample {
        Some(rs) => shape.with_w0_rows(rs.rows as usize),
        None => *shape,
    };
    out.push(Op::Dws(DwsLayer {
        resample,
        ..l.clone()
    }));
    out.push(Op::Quant(Quant::Layer {
        out: outq,
        resample: rq,
    }));
    let mut order: Vec<&(usize, Block)> = blocks.iter().collect();
    order.sort_by_key(|(_, b)| (b.dst, b.set_axis == dws_core::plan::SetAxis::Cells));
    for (k, b) in order {
        let site = Site {
            op: *k as u32,
            part: Part::Block,
            stage: Stage::Y,
        };
        let d = dws_core::validate::block_dims(b, &inner, l.fin as usize, l.fout as usize)
            .map_err(|e| anyhow!("{e}"))?;
        let s_src = inner_scales[b.src as usize];
        let pooled_cells =
            (if b.pool.rows { d.src.0 } else { 1 }) * (if b.pool.cols { d.src.1 } else { 1 });
        let plain = !(b.pool.rows || b.pool.cols) || l.reduction == Reduction::Max;
        let (s_x, xq) = if plain {
            (s_src, requant(1.0)?)
        } else {
            let s_x = r.scale(site.at(Stage::X))?;
            let count = if l.reduction == Reduction::Mean {
                pooled_cells as f64
            } else {
                1.0
            };
            (s_x, requant(s_src as f64 / (count * s_x as f64))?)
        };
        let s_y = r.scale(site)?;
        let (map, mq) = match &b.map {
            Map::Mlp(m) => {
                let (m, q, _) = w.mlp(m, s_x, |h| r.scale(site.at(Stage::Hidden(h))), s_y)?;
                (Map::Mlp(m), MapQ::Mlp(q))
            }
            Map::Set(s) => {
                let (s, q) = w.set_layer(s, s_x, d.n, r, site, s_y)?;
                (Map::Set(s), q)
            }
        };
        let contrib = requant(s_y as f64 * b.scale as f64 / acc_scale[b.dst as usize] as f64)?;
        out.push(Op::Block(Block { map, ..b.clone() }));
        out.push(Op::Quant(Quant::Block(BlockQ {
            x: xq,
            map: mq,
            contrib,
        })));
    }
    Ok(())
}

/// Signal-to-quantization-noise ratio in dB of `q` against `x`.
pub fn sqnr(x: &[f32], q: &[f32]) -> f64 {
    let s: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
    let n: f64 = x
        .iter()
        .zip(q)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    if n == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (s / n).log10()
    }
}

/// Per DWS layer: SQNR (dB) of the int8 layer outputs against f32 over `inputs`, run
/// on `threads` threads.
pub fn layer_report(
    f32_model: &Model<'_>,
    q: &Quantized,
    inputs: &[f32],
    threads: usize,
) -> Result<Vec<(usize, f64)>> {
    let f32_ops: Vec<Op> = f32_model
        .ops()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{e}"))?;
    let mut report = Vec::new();
    for (layer, (f_end, q_end, feats, scales)) in q.cuts.iter().enumerate() {
        let spec_f = Spec {
            output: Output::WeightSpace { features: *feats },
            ops: (*f_end + 1) as u32,
            ..f32_model.spec().clone()
        };
        let fblob = encode_parts(
            Precision::F32,
            &spec_f,
            &f32_ops[..=*f_end],
            bytemuck::cast_slice(f32_model.params()),
        )?;
        let mut qops = q.ops[..*q_end].to_vec();
        qops.push(Op::Quant(Quant::Output {
            scales: scales.iter().copied().collect(),
        }));
        let spec_q = Spec {
            output: Output::WeightSpace { features: *feats },
            ops: qops.len() as u32,
            ..q.spec.clone()
        };
        let qblob = encode_parts(Precision::Int8, &spec_q, &qops, &q.bytes)?;
        let (fa, qa) = (
            AlignedBlob::from_bytes(&fblob),
            AlignedBlob::from_bytes(&qblob),
        );
        let (fm, qm) = (fa.model()?, qa.model()?);
        let n = inputs.len() / fm.input_len();
        let yf = run_f32(&fm, inputs, n, threads)?;
        let yq = Int8Engine::new(&qm, Isa::detect())?.run_batch(inputs, n, threads)?;
        report.push((layer, sqnr(&yf, &yq)));
    }
    Ok(report)
}

/// Runs an f32 model on the fast engine.
fn run_f32(model: &Model<'_>, inputs: &[f32], n: usize, threads: usize) -> Result<Vec<f32>> {
    crate::runner::run_batch_with(model, inputs, n, threads, crate::runner::EngineKind::Fast)
}

/// How `dws quantize` runs.
#[derive(Debug, Clone)]
pub struct CliOptions {
    /// Worker threads of the error report's runs.
    pub threads: usize,
    /// Progress on stderr (on a terminal; see [`crate::progress`]).
    pub progress: bool,
}

/// `dws quantize`: calibrate, quantize, write, and print the error report.
pub fn run_cli(
    model: &Model<'_>,
    n: usize,
    inputs: &[f32],
    output: &std::path::Path,
    opts: &CliOptions,
) -> Result<()> {
    if n == 0 {
        bail!("the calibration set is empty");
    }
    if model.precision() != Precision::F32 {
        bail!("the model is already int8");
    }
    crate::stderr_line!("calibrating on {n} inputs ...");
    let bar = Progress::bar(opts.progress, n as u64, "calibrating");
    let cal = calibrate_with_progress(model, inputs, &mut || bar.inc(1))?;
    drop(bar);
    let q = quantize(model, &cal)?;
    crate::output::write(output, &q.blob)?;
    let print = crate::output::print;
    print(format_args!(
        "wrote {} ({} bytes, int8)\n",
        output.display(),
        q.blob.len()
    ))?;
    print(format_args!(
        "per-layer SQNR against f32 on the calibration set:\n"
    ))?;
    let spinner = Progress::spinner(opts.progress, "measuring the error of every layer");
    let report = layer_report(model, &q, inputs, opts.threads)?;
    drop(spinner);
    for (layer, db) in report {
        print(format_args!("  dws layer {layer:<3} {db:7.2} dB\n"))?;
    }
    let qa = AlignedBlob::from_bytes(&q.blob);
    let qm = qa.model()?;
    let threads = opts.threads;
    let yf = run_f32(model, inputs, n, threads)?;
    let yq = Int8Engine::new(&qm, Isa::detect())?.run_batch(inputs, n, threads)?;
    print(format_args!("  output        {:7.2} dB\n", sqnr(&yf, &yq)))?;
    if let Output::Logits { classes } = model.spec().output {
        let c = classes as usize;
        let argmax = |v: &[f32]| {
            (0..v.len())
                .max_by(|&a, &b| v[a].total_cmp(&v[b]))
                .unwrap_or(0)
        };
        let agree = yf
            .chunks(c)
            .zip(yq.chunks(c))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        print(format_args!(
            "top-1 agreement with f32: {agree}/{n} ({:.2}%)\n",
            100.0 * agree as f64 / n as f64
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::requant;

    #[test]
    fn requant_represents_factors_and_clamps_huge_ones() {
        for m in [1.0, 0.5, 1.0 / 256.0, 3.7e-9, 123.456, 1e9] {
            let r = requant(m).unwrap();
            assert!(r.is_valid(), "{m}: {r:?}");
            let back = r.m as f64 / 2f64.powi(r.shift as i32);
            assert!((back - m).abs() <= m * 1e-9, "{m}: {back}");
        }
        assert!(requant(2.7e9).is_err());
        assert!(requant(2f64.powi(30) * (1.0 - 1e-12)).unwrap().is_valid());
        assert!(requant(f64::NAN).is_err() && requant(-1.0).is_err());
    }
}
