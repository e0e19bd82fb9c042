//! `dws quantize`: an f32 blob and calibration inputs become a quantized
//! blob, int8 (the default) or 16x8 (int16 activations).
//!
//! Calibration runs the f32 model over the inputs and records the magnitudes
//! at every observation point of the core ([`dws_core::observe`]). In int8
//! mode each value gets the symmetric scale `c / 127`, `c` the magnitude that
//! 99.99% of the calibration values do not exceed; in 16x8 mode `2 max /
//! 32767` (twice the calibrated maximum: clipping costs more than the
//! resolution it buys there). Weights are int8 with one scale per output
//! channel (or per tensor), rounded as AdaRound learns on the calibration
//! inputs ([`adaround`]) or to nearest; biases are integers in the
//! accumulator's scale (int32, or int64 in 16x8 mode), and every change of
//! scale is a fixed-point [`Requant`]. The arithmetic is specified in
//! `docs/quantization.md`.

mod adaround;
pub mod calibrate;
mod linears;
mod requant;
mod writer;

pub use calibrate::{Calibration, LinearInputs, Ranges};
pub use requant::{requant, requant_channels};

use crate::blob_io::{encode_parts, AlignedBlob};
use crate::fast::quantized::QEngine;
use crate::fast::Isa;
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use dws_core::blob::Precision;
use dws_core::observe::{Part, Site, Stage};
use dws_core::plan::{Block, DwsLayer, Linear, Map, Op, Output, ParamRef, Reduction, Spec};
use dws_core::quant::{BlockQ, LogitScale, MapQ, Quant, Requant, ResampleQ};
use dws_core::Model;
use std::collections::HashMap;
use writer::{round_weights, weight_scales, Rounded, Writer};

/// The activations of the quantized model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Activations {
    /// int8 activations ("int8" mode): the smallest blob and scratch.
    Int8,
    /// int16 activations ("16x8" mode): twice the activation memory, close
    /// to f32's predictions.
    Int16,
}

impl Activations {
    /// The blob precision of this mode.
    pub fn precision(self) -> Precision {
        match self {
            Activations::Int8 => Precision::Int8,
            Activations::Int16 => Precision::Int16x8,
        }
    }
}

/// How many scales each weight tensor gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightScales {
    /// One scale per tensor.
    PerTensor,
    /// One scale per output channel (row).
    PerChannel,
}

/// How weights are rounded to int8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rounding {
    /// To nearest.
    Nearest,
    /// Up or down as AdaRound learns on the calibration inputs.
    Adaround,
}

/// The choices of `dws quantize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// int8 or int16 activations.
    pub activations: Activations,
    /// Scales per tensor or per output channel.
    pub weights: WeightScales,
    /// Nearest or learned rounding.
    pub rounding: Rounding,
    /// Threads for calibration and rounding (the result does not depend on it).
    pub threads: usize,
}

impl Options {
    /// The defaults of a mode: per-channel weight scales, AdaRound, every core.
    pub fn new(activations: Activations) -> Self {
        Options {
            activations,
            weights: WeightScales::PerChannel,
            rounding: Rounding::Adaround,
            threads: crate::runner::default_threads(),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new(Activations::Int8)
    }
}

/// The calibrated magnitude of a value the calibration only saw as zero.
const DEAD_RANGE: f32 = 1.0;

/// Share of the magnitudes at a site that int8 calibration covers without clipping.
pub const COVERAGE: f64 = 0.9999;

/// The factor by which 16x8 scales exceed the calibrated maximum.
pub const HEADROOM_16X8: f32 = 2.0;

/// The scale of every calibrated value in one mode.
pub struct Scales<'c> {
    ranges: &'c Ranges,
    activations: Activations,
}

impl Scales<'_> {
    /// The scale of the values seen at `site`.
    pub fn of(&self, site: Site) -> Result<f32> {
        // A value that was zero on every calibration input (a dead ReLU) gets
        // the range of a normalized activation, +-1, so that the factors into
        // and out of it stay ordinary.
        let max = self.ranges.max(site)?;
        Ok(match self.activations {
            Activations::Int8 => {
                let clip = if max > 0.0 {
                    self.ranges.clip(site, COVERAGE)?
                } else {
                    DEAD_RANGE
                };
                clip.max(1e-8) / 127.0
            }
            Activations::Int16 => self.of_max(if max > 0.0 { max } else { DEAD_RANGE }),
        })
    }

    /// The scale of a value whose largest magnitude is `max` (the input tensors).
    pub fn of_max(&self, max: f32) -> f32 {
        match self.activations {
            Activations::Int8 => max.max(1e-8) / 127.0,
            Activations::Int16 => HEADROOM_16X8 * max.max(1e-8) / 32767.0,
        }
    }
}

/// Runs the f32 model over `inputs` (`[n, input_len]`) recording what
/// quantizing it with `opts` needs: the ranges, and for AdaRound the second
/// moments of every linear layer's inputs.
pub fn calibrate(model: &Model<'_>, inputs: &[f32], opts: &Options) -> Result<Calibration> {
    calibrate_with_progress(model, inputs, opts, &|| {})
}

/// [`calibrate`], calling `done` after each input (from any thread).
pub fn calibrate_with_progress(
    model: &Model<'_>,
    inputs: &[f32],
    opts: &Options,
    done: &(dyn Fn() + Sync),
) -> Result<Calibration> {
    let ops = plan_ops(model)?;
    let lin = linears::linear_inputs(&ops);
    let moments = (opts.rounding == Rounding::Adaround).then_some(&lin);
    calibrate::calibrate(model, inputs, moments, opts.threads, done)
}

fn plan_ops(model: &Model<'_>) -> Result<Vec<Op>> {
    model
        .ops()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{e}"))
}

/// Rounds every linear layer's weights of `ops` ahead of writing: their
/// scales per the options, and AdaRound where the calibration has their
/// inputs' moments; the layers are shared out over `opts.threads` threads
/// (the result does not depend on how many).
fn round_all(
    model: &Model<'_>,
    ops: &[Op],
    cal: &Calibration,
    opts: &Options,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> HashMap<(u32, u32), Rounded> {
    let lin = linears::linear_inputs(ops);
    let mut todo: Vec<(ParamRef, usize)> = Vec::new();
    linears::each_linear(ops, |l, _| {
        if !todo.iter().any(|(r, _)| *r == l.weight) {
            todo.push((l.weight, l.fin as usize));
        }
    });
    let p = model.params();
    let per_channel = opts.weights == WeightScales::PerChannel;
    let learn = opts.rounding == Rounding::Adaround;
    let round_one = |(r, fin): &(ParamRef, usize)| {
        let w = &p[r.offset as usize..(r.offset + r.len) as usize];
        let scales = weight_scales(w, *fin, per_channel);
        let g = learn.then(|| cal.moments.of(&lin, *r)).flatten();
        let q = round_weights(w, *fin, &scales, g.as_deref());
        ((r.offset, r.len), Rounded { q, scales })
    };
    let threads = opts.threads.clamp(1, todo.len().max(1));
    let done = std::sync::atomic::AtomicUsize::new(0);
    let round_one = |job: &(ParamRef, usize)| {
        let r = round_one(job);
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        progress(n, todo.len());
        r
    };
    let mut out = HashMap::new();
    std::thread::scope(|s| {
        let jobs: Vec<_> = (0..threads)
            .map(|t| {
                let (todo, round_one) = (&todo, &round_one);
                s.spawn(move || {
                    todo.iter()
                        .skip(t)
                        .step_by(threads)
                        .map(round_one)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for j in jobs {
            match j.join() {
                Ok(done) => out.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    out
}

/// A quantized plan and where each f32 op ended in it (for truncated error reports).
pub struct Quantized {
    /// The quantized blob.
    pub blob: Vec<u8>,
    precision: Precision,
    spec: Spec,
    ops: Vec<Op>,
    bytes: Vec<u8>,
    /// Per f32 DWS layer: (f32 op index, quantized op count after it, features, tensor scales).
    cuts: Vec<(usize, usize, u32, Vec<f32>)>,
}

/// Quantizes an f32 model with a calibration (from [`calibrate`] with the
/// same `opts`).
pub fn quantize(model: &Model<'_>, cal: &Calibration, opts: &Options) -> Result<Quantized> {
    quantize_with_progress(model, cal, opts, &|_, _| {})
}

/// [`quantize`], calling `rounded(done, of)` as the weight tensors are
/// rounded (from any thread).
pub fn quantize_with_progress(
    model: &Model<'_>,
    cal: &Calibration,
    opts: &Options,
    rounded: &(dyn Fn(usize, usize) + Sync),
) -> Result<Quantized> {
    if model.precision() != Precision::F32 {
        bail!(
            "the model is already quantized ({})",
            model.precision().name()
        );
    }
    let ops = plan_ops(model)?;
    let shape = model.shape();
    let t_count = shape.tensors();
    if opts.activations == Activations::Int16 {
        let most = (0..t_count).map(|t| shape.cells(t)).max().unwrap_or(0);
        if most > dws_core::quantized::MAX_CELLS_16X8 {
            bail!(
                "16x8 needs every weight-space tensor to have at most {} entries (sums of that \
                 many int16 values fit in int32); this model's largest has {most}: quantize it \
                 to int8 instead",
                dws_core::quantized::MAX_CELLS_16X8
            );
        }
    }
    let sc = Scales {
        ranges: &cal.ranges,
        activations: opts.activations,
    };
    let rounded = round_all(model, &ops, cal, opts, rounded);
    let mut w = Writer::new(model.params(), *opts, &sc, rounded);
    let mut out: Vec<Op> = Vec::new();
    let mut cuts = Vec::new();
    let mut scales: Vec<f32> = cal.input_max.iter().map(|m| sc.of_max(*m)).collect();
    let input_scales = scales.clone();
    let mut input_written = false;
    let mut feats = model.spec().input_features;
    let tensor_scales = |op: usize| -> Result<Vec<f32>> {
        (0..t_count)
            .map(|t| {
                sc.of(Site {
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
                let (m, s) = (w.get(*mean), w.get(*std));
                out.push(Op::Normalize {
                    mean: w.push_f32(m),
                    std: w.push_f32(s),
                });
            }
            Op::Dws(l) => {
                let n_blocks = l.blocks as usize;
                let blocks: Vec<(usize, Block)> = (i + 1..i + 1 + n_blocks)
                    .map(|k| match ops.get(k) {
                        Some(Op::Block(b)) => Ok((k, b.clone())),
                        _ => Err(anyhow!("malformed plan: DWS layer without its blocks")),
                    })
                    .collect::<Result<_>>()?;
                let out_scales = tensor_scales(i)?;
                layer(
                    &mut w,
                    &sc,
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
                let (a, b) = (w.get(*scale), w.get(*shift));
                let f = feats as usize;
                let ratio = |k: usize| a[k] as f64 * scales[k / f] as f64 / new[k / f] as f64;
                // int8: 16 fractional bits; 16x8: as many as the largest
                // multiplier leaves in int32 (at most 30).
                let s = match opts.activations {
                    Activations::Int8 => 16,
                    Activations::Int16 => {
                        let most = (0..t_count * f).fold(0f64, |m, k| m.max(ratio(k).abs()));
                        (30 - most.max(1e-30).log2().ceil().max(0.0) as i32).clamp(1, 30)
                    }
                };
                let unit = 2f64.powi(s);
                let mult: Vec<i32> = (0..t_count * f)
                    .map(|k| writer::quant_i32(ratio(k) * unit))
                    .collect();
                let off: Vec<f64> = (0..t_count * f)
                    .map(|k| (b[k] as f64 / new[k / f] as f64 * unit).round() + unit / 2.0)
                    .collect();
                out.push(Op::Affine {
                    scale: w.push_i32(&mult),
                    shift: w.push_wide(&off),
                });
                out.push(Op::Quant(Quant::Affine { shift: s as u8 }));
                scales = new;
            }
            Op::Relu => out.push(Op::Relu),
            Op::InputSkip(l) => {
                let new = tensor_scales(i)?;
                let q = w.weights(l.weight, l.fin as usize, false);
                let sw = q.scales[0];
                let mut bias = Vec::new();
                let (mut cur, mut lin) = (heapless::Vec::new(), heapless::Vec::new());
                for t in 0..t_count {
                    let acc = input_scales[t] * sw;
                    if let Some(b) = l.bias {
                        bias.extend(w.get(b).iter().map(|v| *v as f64 / acc as f64));
                    }
                    let _ = cur.push(requant(scales[t] as f64 / new[t] as f64)?);
                    let _ = lin.push(requant(acc as f64 / new[t] as f64)?);
                }
                let bias = l.bias.map(|_| w.push_wide(&bias));
                out.push(Op::InputSkip(Linear {
                    weight: q.at,
                    bias,
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
                let s_h = sc.of(site)?;
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
                let (mlp, mq, logit) =
                    w.mlp(&h.mlp, s_h, |k| sc.of(site.at(Stage::Hidden(k))), 1.0)?;
                let logit_scale = match opts.weights {
                    WeightScales::PerTensor => LogitScale::Tensor(logit[0]),
                    WeightScales::PerChannel => LogitScale::Channel(w.push_f32(&logit)),
                };
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
    // The parameter section's length a multiple of 8 (16x8 reads int64 values).
    let mut bytes = w.bytes;
    bytes.resize(bytes.len().next_multiple_of(8), 0);
    let spec = Spec {
        ops: out.len() as u32,
        ..model.spec().clone()
    };
    let precision = opts.activations.precision();
    let blob = encode_parts(precision, &spec, &out, &bytes)?;
    AlignedBlob::from_bytes(&blob)
        .model()
        .context("the quantized model failed validation")?;
    Ok(Quantized {
        blob,
        precision,
        spec,
        ops: out,
        bytes,
        cuts,
    })
}

/// One DWS layer: blocks regrouped by destination, cell-wise blocks last in each group.
#[allow(clippy::too_many_arguments)]
fn layer(
    w: &mut Writer<'_>,
    sc: &Scales<'_>,
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
                sc.of(site(Part::Skip))?,
                sc.of(site(Part::Down))?,
                sc.of(site(Part::Inner))?,
                sc.of(site(Part::Up))?,
            );
            let (skip, skipq, _) = w.mlp(
                &rs.skip,
                s_in[0],
                |k| sc.of(site(Part::Skip).at(Stage::Hidden(k))),
                s_skip,
            )?;
            let d1 = shape.dim(1);
            let (down, downq) = w.set_layer(&rs.down, s_in[0], d1, site(Part::Down), s_d)?;
            let (up, upq) = w.set_layer(&rs.up, s_u, d1, site(Part::Up), s_up)?;
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
            let s_x = sc.of(site.at(Stage::X))?;
            let count = if l.reduction == Reduction::Mean {
                pooled_cells as f64
            } else {
                1.0
            };
            (s_x, requant(s_src as f64 / (count * s_x as f64))?)
        };
        let s_y = sc.of(site)?;
        let (map, mq) = match &b.map {
            Map::Mlp(m) => {
                let (m, q, _) = w.mlp(m, s_x, |h| sc.of(site.at(Stage::Hidden(h))), s_y)?;
                (Map::Mlp(m), MapQ::Mlp(q))
            }
            Map::Set(s) => {
                let (s, q) = w.set_layer(s, s_x, d.n, site, s_y)?;
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

/// Per DWS layer: SQNR (dB) of the quantized layer outputs against f32 over
/// `inputs`, run on `threads` threads.
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
        let qblob = encode_parts(q.precision, &spec_q, &qops, &q.bytes)?;
        let (fa, qa) = (
            AlignedBlob::from_bytes(&fblob),
            AlignedBlob::from_bytes(&qblob),
        );
        let (fm, qm) = (fa.model()?, qa.model()?);
        let n = inputs.len() / fm.input_len();
        let yf = run_f32(&fm, inputs, n, threads)?;
        let yq = QEngine::new(&qm, Isa::detect())?.run_batch(inputs, n, threads)?;
        report.push((layer, sqnr(&yf, &yq)));
    }
    Ok(report)
}

/// Runs an f32 model on the fast engine.
fn run_f32(model: &Model<'_>, inputs: &[f32], n: usize, threads: usize) -> Result<Vec<f32>> {
    crate::runner::run_batch_with(model, inputs, n, threads, crate::runner::EngineKind::Fast)
}

/// `dws quantize`: calibrate, quantize, write, and print the error report
/// (per-layer SQNR, and for a classifier top-1 agreement with f32 on the
/// calibration inputs), with progress on a terminal when `progress`.
pub fn run_cli(
    model: &Model<'_>,
    n: usize,
    inputs: &[f32],
    output: &std::path::Path,
    opts: &Options,
    progress: bool,
) -> Result<()> {
    if n == 0 {
        bail!("the calibration set is empty");
    }
    if model.precision() != Precision::F32 {
        bail!(
            "the model is already quantized ({})",
            model.precision().name()
        );
    }
    let mode = opts.activations.precision().name();
    crate::stderr_line!("calibrating on {n} inputs ({mode}) ...");
    let t = std::time::Instant::now();
    let bar = Progress::bar(progress, n as u64, "calibrating");
    let cal = calibrate_with_progress(model, inputs, opts, &|| bar.inc(1))?;
    drop(bar);
    let calibrated = t.elapsed().as_secs_f64();
    let learn = opts.rounding == Rounding::Adaround;
    if learn {
        crate::stderr_line!("calibrated in {calibrated:.1} s; rounding the weights (AdaRound) ...");
    }
    let t = std::time::Instant::now();
    let bar = Progress::bar(progress && learn, 0, "rounding (AdaRound), weight tensors");
    let q = quantize_with_progress(model, &cal, opts, &|done, of| {
        bar.set(done as u64, of as u64);
    })?;
    drop(bar);
    if learn {
        crate::stderr_line!("rounded in {:.1} s", t.elapsed().as_secs_f64());
    }
    crate::output::write(output, &q.blob)?;
    let print = crate::output::print;
    print(format_args!(
        "wrote {} ({} bytes, {mode})\n",
        output.display(),
        q.blob.len()
    ))?;
    print(format_args!(
        "per-layer SQNR against f32 on the calibration set:\n"
    ))?;
    let spinner = Progress::spinner(progress, "measuring the error of every layer");
    let report = layer_report(model, &q, inputs, opts.threads)?;
    drop(spinner);
    for (layer, db) in report {
        print(format_args!("  dws layer {layer:<3} {db:7.2} dB\n"))?;
    }
    let qa = AlignedBlob::from_bytes(&q.blob);
    let qm = qa.model()?;
    let threads = opts.threads;
    let yf = run_f32(model, inputs, n, threads)?;
    let yq = QEngine::new(&qm, Isa::detect())?.run_batch(inputs, n, threads)?;
    print(format_args!("  output        {:7.2} dB\n", sqnr(&yf, &yq)))?;
    if let Output::Logits { classes } = model.spec().output {
        let agree = agreement(&yf, &yq, classes as usize);
        print(format_args!(
            "top-1 agreement with f32: {agree}/{n} ({:.2}%)\n",
            100.0 * agree as f64 / n as f64
        ))?;
    }
    Ok(())
}

/// How many rows of `a` and `b` (`classes` logits each) have the same argmax.
pub fn agreement(a: &[f32], b: &[f32], classes: usize) -> usize {
    let argmax = |v: &[f32]| {
        (0..v.len())
            .max_by(|&i, &j| v[i].total_cmp(&v[j]))
            .unwrap_or(0)
    };
    a.chunks(classes.max(1))
        .zip(b.chunks(classes.max(1)))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count()
}
