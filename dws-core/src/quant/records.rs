//! The quantization records of a plan (format 2): each follows the op it annotates.

// Records are decoded one at a time on the stack and there is no heap to box into,
// so variants of different sizes are fine here.
#![allow(clippy::large_enum_variant)]

use serde::{Deserialize, Serialize};

use super::Requant;
use crate::plan::{ParamRef, MAX_FC_LAYERS, MAX_TENSORS};

/// How a linear layer's accumulators reach its output scale.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinearQ {
    /// One multiplier for every output (weights with one scale per tensor).
    Tensor(Requant),
    /// One mantissa per output channel with a common shift (weights with one
    /// scale per output channel): `m` references `fout` i32 mantissas.
    Channel {
        /// The mantissas, `0..2^31` each.
        m: ParamRef,
        /// The common right shift, `1..=62`.
        shift: u8,
    },
}

/// Requantizations of an MLP: one per linear layer (`acc -> output scale`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MlpQ {
    /// Per linear layer.
    pub layers: heapless::Vec<LinearQ, MAX_FC_LAYERS>,
}

/// Requantizations inside a set layer or MLP map.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MapQ {
    /// An MLP; its last layer lands in the map output scale.
    Mlp(MlpQ),
    /// DeepSets: `Y = sat(R_gamma(acc_gamma) - R_lambda(acc_lambda))`.
    DeepSets {
        /// Gamma layers; the last one maps to the output scale.
        gamma: MlpQ,
        /// Pooled sum / max / attention-weighted sum to the pooled scale.
        pooled: Requant,
        /// Attention pooling: score (`x . query`) to 1/256 exponent units.
        score: Requant,
        /// Lambda layers; the last one maps to the output scale.
        lambda: MlpQ,
    },
    /// Set attention.
    Attention {
        /// `fc_q` accumulators to the Q scale.
        q: LinearQ,
        /// `fc_k` accumulators to the K scale.
        k: LinearQ,
        /// `fc_v` accumulators to the V scale.
        v: LinearQ,
        /// `q . k` to 1/256 exponent units (includes `1/sqrt(dim_V)`).
        score: Requant,
        /// Q to the O scale.
        o_q: Requant,
        /// `A V` (Q15 times V) to the O scale.
        o_av: Requant,
        /// O to the output scale.
        y_o: Requant,
        /// `relu(fc_o(O))` accumulators to the output scale.
        y_fc: LinearQ,
    },
}

/// Requantizations of one block.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlockQ {
    /// Source (pooled: max, or sum) to the gathered scale (mean folds `1/count` in).
    pub x: Requant,
    /// The map.
    pub map: MapQ,
    /// Map output times the block's scale to the destination accumulator.
    pub contrib: Requant,
}

/// Requantizations of a down-sampled layer's `W_0` path.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResampleQ {
    /// The down-sampling set layer.
    pub down: MapQ,
    /// The up-sampling set layer.
    pub up: MapQ,
    /// The skip MLP (last layer to the skip scale).
    pub skip: MlpQ,
    /// Up-sampled values to the `W_0` output scale.
    pub out_up: Requant,
    /// Skip values to the `W_0` output scale.
    pub out_skip: Requant,
}

/// The real value of one unit of the head's last accumulators.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LogitScale {
    /// The same for every class.
    Tensor(f32),
    /// One f32 per class (weights with one scale per output channel).
    Channel(ParamRef),
}

/// Quantization records of a quantized plan; each follows the op it annotates.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Quant {
    /// Scales of the input tensors (after normalization); first record after any `Normalize`.
    Input {
        /// One scale per weight-space tensor.
        scales: heapless::Vec<f32, MAX_TENSORS>,
    },
    /// After `Op::Dws`: destination accumulator to the output, per tensor.
    Layer {
        /// Per destination tensor (for `W_0` of a down-sampled layer: to the inner scale).
        out: heapless::Vec<Requant, MAX_TENSORS>,
        /// The down-sampling path, when the layer has one.
        resample: Option<ResampleQ>,
    },
    /// After `Op::Block`.
    Block(BlockQ),
    /// After `Op::Affine` (whose refs hold i32 multipliers and offsets of the
    /// accumulator type: i32 in int8, i64 in 16x8): the shift.
    Affine {
        /// `y = sat((x * mult + offset) >> shift)`.
        shift: u8,
    },
    /// After `Op::InputSkip` (whose bias ref holds `n_tensors * fout` biases).
    Skip {
        /// Per tensor: current values to the new scale.
        cur: heapless::Vec<Requant, MAX_TENSORS>,
        /// Per tensor: the skip accumulator to the new scale.
        lin: heapless::Vec<Requant, MAX_TENSORS>,
    },
    /// After `Op::Head`.
    Head {
        /// Per pooled segment (middle weights, `W_0`, `W_{L-1}`, biases, last bias) to the head scale.
        pooled: heapless::Vec<Requant, MAX_TENSORS>,
        /// The head MLP's hidden layers (the last entry is unused).
        mlp: MlpQ,
        /// Real value of one unit of the last layer's accumulators.
        logit_scale: LogitScale,
    },
    /// Last record of a `DWSModel` plan: scales of the output tensors.
    Output {
        /// One scale per weight-space tensor.
        scales: heapless::Vec<f32, MAX_TENSORS>,
    },
}
