//! The parameter section of a quantized plan under construction: int8
//! weights (one scale per tensor or per output channel, rounded to nearest or
//! as AdaRound learned), integer biases in the accumulators' scales, and the
//! requantizations of linear layers, MLPs and set layers.

use super::adaround;
use super::requant::{requant, requant_channels};
use super::{Activations, Options, Scales, WeightScales};
use anyhow::Result;
use dws_core::observe::{Site, Stage};
use dws_core::plan::{Linear, Mlp, ParamRef, Reduction, SetLayer, SetPooling};
use dws_core::quant::{LinearQ, MapQ, MlpQ};
use std::collections::HashMap;

/// The largest ratio between the weight scales of two output channels of a
/// layer: a channel whose weights are all smaller is quantized on the
/// coarser scale, so that every channel's requantization mantissa keeps at
/// least 18 bits under the layer's common shift.
pub const MAX_CHANNEL_RATIO: f32 = 4096.0;

/// Quantized weights: where they are and their scale per output channel.
#[derive(Debug, Clone)]
pub struct QWeights {
    /// The int8 values in the parameter section.
    pub at: ParamRef,
    /// One scale per output row.
    pub scales: Vec<f32>,
}

/// Weights rounded ahead of writing (AdaRound runs on every layer at once).
#[derive(Debug, Clone)]
pub struct Rounded {
    /// `[fout, fin]` int8 values.
    pub q: Vec<i8>,
    /// One scale per output row.
    pub scales: Vec<f32>,
}

/// The scales of the rows of `w` (`[fout, fin]`): one per tensor, or one per
/// output channel (each at least the largest over [`MAX_CHANNEL_RATIO`]).
pub fn weight_scales(w: &[f32], fin: usize, per_channel: bool) -> Vec<f32> {
    let rows = w.len() / fin.max(1);
    let max_abs = |v: &[f32]| v.iter().fold(0f32, |a, v| a.max(v.abs()));
    let tensor = max_abs(w).max(1e-8) / 127.0;
    if !per_channel || fin == 0 {
        return vec![tensor; rows.max(1)];
    }
    w.chunks_exact(fin)
        .map(|row| (max_abs(row) / 127.0).max(tensor / MAX_CHANNEL_RATIO))
        .collect()
}

/// Rounds `w` (`[fout, fin]`) with the `scales` of its rows: AdaRound on the
/// input moments `g` when given, else to nearest.
pub fn round_weights(w: &[f32], fin: usize, scales: &[f32], g: Option<&[f64]>) -> Vec<i8> {
    match g {
        Some(g) if g.len() == fin * fin => adaround::round(w, fin, scales, g, adaround::ITERATIONS),
        _ => adaround::nearest(w, fin, scales),
    }
}

/// A quantized plan's parameters under construction.
pub struct Writer<'m> {
    f32s: &'m [f32],
    /// The parameter section.
    pub bytes: Vec<u8>,
    opts: Options,
    scales: &'m Scales<'m>,
    /// Weights rounded ahead of writing, by their f32 reference.
    rounded: HashMap<(u32, u32), Rounded>,
    /// Weights written, by their f32 reference and whether per channel.
    written: HashMap<(u32, u32, bool), QWeights>,
}

impl<'m> Writer<'m> {
    /// A writer over the f32 parameters `f32s`.
    pub fn new(
        f32s: &'m [f32],
        opts: Options,
        scales: &'m Scales<'m>,
        rounded: HashMap<(u32, u32), Rounded>,
    ) -> Self {
        Writer {
            f32s,
            bytes: Vec::new(),
            opts,
            scales,
            rounded,
            written: HashMap::new(),
        }
    }

    /// The f32 values of a reference.
    pub fn get(&self, r: ParamRef) -> &'m [f32] {
        &self.f32s[r.offset as usize..(r.offset + r.len) as usize]
    }

    fn align(&mut self, to: usize) {
        while !self.bytes.len().is_multiple_of(to) {
            self.bytes.push(0);
        }
    }

    fn push_bytes(
        &mut self,
        align: usize,
        len: usize,
        bytes: impl Iterator<Item = u8>,
    ) -> ParamRef {
        self.align(align);
        let r = ParamRef {
            offset: self.bytes.len() as u32,
            len: len as u32,
        };
        self.bytes.extend(bytes);
        r
    }

    /// int8 values.
    pub fn push_i8(&mut self, v: &[i8]) -> ParamRef {
        self.push_bytes(1, v.len(), v.iter().map(|x| *x as u8))
    }

    /// int32 values (4-aligned).
    pub fn push_i32(&mut self, v: &[i32]) -> ParamRef {
        self.push_bytes(4, v.len(), v.iter().flat_map(|x| x.to_le_bytes()))
    }

    /// int64 values (8-aligned).
    pub fn push_i64(&mut self, v: &[i64]) -> ParamRef {
        self.push_bytes(8, v.len(), v.iter().flat_map(|x| x.to_le_bytes()))
    }

    /// f32 values (4-aligned).
    pub fn push_f32(&mut self, v: &[f32]) -> ParamRef {
        self.push_bytes(4, v.len(), v.iter().flat_map(|x| x.to_le_bytes()))
    }

    /// Biases or offsets in the mode's accumulator type (int32 or int64),
    /// rounded to nearest and saturated.
    pub fn push_wide(&mut self, v: &[f64]) -> ParamRef {
        match self.opts.activations {
            Activations::Int8 => {
                let q: Vec<i32> = v.iter().map(|x| quant_i32(*x)).collect();
                self.push_i32(&q)
            }
            Activations::Int16 => {
                let q: Vec<i64> = v.iter().map(|x| quant_i64(*x)).collect();
                self.push_i64(&q)
            }
        }
    }

    /// Quantized weights of the f32 tensor `r` (`[fout, fin]`), shared by
    /// every use of the same tensor; one scale per output channel where
    /// `per_channel` (else one per tensor).
    pub fn weights(&mut self, r: ParamRef, fin: usize, per_channel: bool) -> QWeights {
        let key = (r.offset, r.len, per_channel);
        if let Some(w) = self.written.get(&key) {
            return w.clone();
        }
        let mode_per_channel = self.opts.weights == WeightScales::PerChannel;
        let (q, scales) = match self.rounded.get(&(r.offset, r.len)) {
            Some(p) if per_channel == mode_per_channel => (p.q.clone(), p.scales.clone()),
            _ => {
                let w = self.get(r);
                let scales = weight_scales(w, fin, per_channel);
                (adaround::nearest(w, fin, &scales), scales)
            }
        };
        let out = QWeights {
            at: self.push_i8(&q),
            scales,
        };
        self.written.insert(key, out.clone());
        out
    }

    /// A linear layer with input scale `s_in`: the quantized layer and the
    /// scale of each output's accumulator.
    pub fn linear(&mut self, l: &Linear, s_in: f32) -> (Linear, Vec<f32>) {
        let per_channel = self.opts.weights == WeightScales::PerChannel;
        let w = self.weights(l.weight, l.fin as usize, per_channel);
        let acc: Vec<f32> = w.scales.iter().map(|s| s_in * s).collect();
        let bias = l.bias.map(|b| {
            let v: Vec<f64> = self
                .get(b)
                .iter()
                .zip(&acc)
                .map(|(b, a)| *b as f64 / *a as f64)
                .collect();
            self.push_wide(&v)
        });
        (
            Linear {
                weight: w.at,
                bias,
                ..*l
            },
            acc,
        )
    }

    /// The requantization of accumulators of scales `acc` to the scale `to`:
    /// one mantissa per channel (per-channel weights) or one for all.
    pub fn linear_q(&mut self, acc: &[f32], to: f32) -> Result<LinearQ> {
        let ms: Vec<f64> = acc.iter().map(|a| *a as f64 / to as f64).collect();
        if self.opts.weights == WeightScales::PerChannel {
            let (m, shift) = requant_channels(&ms)?;
            Ok(LinearQ::Channel {
                m: self.push_i32(&m),
                shift,
            })
        } else {
            Ok(LinearQ::Tensor(requant(
                ms.first().copied().unwrap_or(0.0),
            )?))
        }
    }

    /// An MLP with input scale `s_in`; hidden layer `k` lands in `hidden(k)`,
    /// the last in `s_out`. Returns the last layer's accumulator scales too.
    pub fn mlp(
        &mut self,
        m: &Mlp,
        s_in: f32,
        hidden: impl Fn(u8) -> Result<f32>,
        s_out: f32,
    ) -> Result<(Mlp, MlpQ, Vec<f32>)> {
        let mut out = Mlp {
            layers: heapless::Vec::new(),
        };
        let mut q = MlpQ::default();
        let mut s = s_in;
        let mut last_acc = Vec::new();
        for (k, l) in m.layers.iter().enumerate() {
            let (ql, acc) = self.linear(l, s);
            let to = if k + 1 == m.layers.len() {
                s_out
            } else {
                hidden(k as u8)?
            };
            let _ = out.layers.push(ql);
            let _ = q.layers.push(self.linear_q(&acc, to)?);
            last_acc = acc;
            s = to;
        }
        Ok((out, q, last_acc))
    }

    /// A set layer over `n` rows with input scale `s_x` and output scale `s_y`
    /// (its inner values calibrated at `site`).
    pub fn set_layer(
        &mut self,
        sl: &SetLayer,
        s_x: f32,
        n: usize,
        site: Site,
        s_y: f32,
    ) -> Result<(SetLayer, MapQ)> {
        let sc = self.scales;
        Ok(match sl {
            SetLayer::DeepSets {
                gamma,
                lambda,
                pooling,
            } => {
                let (gamma, gq, _) =
                    self.mlp(gamma, s_x, |k| sc.of(site.at(Stage::Hidden(k))), s_y)?;
                let (pooling, s_p, pooled, score) = match pooling {
                    SetPooling::Reduce(Reduction::Max) => {
                        (*pooling, s_x, requant(1.0)?, requant(1.0)?)
                    }
                    SetPooling::Reduce(red) => {
                        let s_p = sc.of(site.at(Stage::Pooled))?;
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
                        let s_p = sc.of(site.at(Stage::Pooled))?;
                        let q = self.weights(*query, query.len as usize, false);
                        let score = requant(s_x as f64 * q.scales[0] as f64 * 256.0)?;
                        (
                            SetPooling::Attention { query: q.at },
                            s_p,
                            requant(s_x as f64 / (32768.0 * s_p as f64))?,
                            score,
                        )
                    }
                };
                let (lambda, lq, _) =
                    self.mlp(lambda, s_p, |k| sc.of(site.at(Stage::LambdaHidden(k))), s_y)?;
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
                    sc.of(site.at(Stage::Q))?,
                    sc.of(site.at(Stage::K))?,
                    sc.of(site.at(Stage::V))?,
                    sc.of(site.at(Stage::O))?,
                );
                let dv = fc_o.fout as f64;
                let (fq, aq) = self.linear(fc_q, s_x);
                let (fk, ak) = self.linear(fc_k, s_x);
                let (fv, av) = self.linear(fc_v, s_x);
                let (fo, ao) = self.linear(fc_o, s_o);
                let q = MapQ::Attention {
                    q: self.linear_q(&aq, s_q)?,
                    k: self.linear_q(&ak, s_k)?,
                    v: self.linear_q(&av, s_v)?,
                    score: requant(s_q as f64 * s_k as f64 / dv.sqrt() * 256.0)?,
                    o_q: requant(s_q as f64 / s_o as f64)?,
                    o_av: requant(s_v as f64 / (32768.0 * s_o as f64))?,
                    y_o: requant(s_o as f64 / s_y as f64)?,
                    y_fc: self.linear_q(&ao, s_y)?,
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

/// `v` rounded to nearest and saturated to int32.
pub fn quant_i32(v: f64) -> i32 {
    v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32
}

/// `v` rounded to nearest and saturated to `+-2^62` (headroom for the
/// accumulator sums).
pub fn quant_i64(v: f64) -> i64 {
    const LIMIT: f64 = (1u64 << 62) as f64;
    v.round().clamp(-LIMIT, LIMIT) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_scales_follow_their_rows_within_the_ratio() {
        let w = [1.27f32, -0.5, 0.0, 0.0, 0.0001, 0.0];
        let s = weight_scales(&w, 2, true);
        assert_eq!(s[0], 0.01);
        assert_eq!(s[1], 0.01 / MAX_CHANNEL_RATIO);
        assert_eq!(s[2], 0.01 / MAX_CHANNEL_RATIO);
        assert_eq!(weight_scales(&w, 2, false), [0.01; 3]);
    }
}
