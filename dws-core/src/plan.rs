//! The model plan: what a converted DWSNet computes, as plain data.
//!
//! A plan is decided once, at conversion time, from the upstream constructor
//! arguments and state_dict. Every backend walks the same plan. It is stored in
//! the blob as a postcard-encoded [`Spec`] followed by a sequence of [`Op`]
//! records; parameters live in a separate section and are referenced by
//! [`ParamRef`].
//!
//! # Weight-space tensors
//! An input network with weight matrices `W_0..W_{L-1}` (`W_i` is `[d_i, d_{i+1}]`)
//! and biases `b_0..b_{L-1}` (`b_i` is `[d_{i+1}]`) is a *weight space* of `2L`
//! tensors, each carrying `F` features per entry. Tensor `t < L` is `W_t`, tensor
//! `L + i` is `b_i`. Every tensor is viewed as a grid `[rows, cols, F]`: `W_i` has
//! `rows = d_i, cols = d_{i+1}`; `b_i` has `rows = d_{i+1}, cols = 1`. This is the
//! upstream layout (`weights[i]` is `[d_i, d_{i+1}, F]`, `biases[i]` is `[d_{i+1}, F]`).
//!
//! # Blocks
//! A DWS layer (the paper's block matrix) is a [`DwsLayer`] record followed by its
//! [`Block`] records. Every upstream block (weight-to-weight, bias-to-bias,
//! bias-to-weight, weight-to-bias) is expressed by the same three steps:
//! 1. *gather*: pool the source grid over the axes in [`Block::pool`] and lay it out
//!    as a matrix `X[n, m * F_in]` whose rows run over [`Block::set_axis`] and whose
//!    row vectors fold the [`Block::fold`] axis into the features;
//! 2. *map*: a row-wise MLP or a set layer (DeepSets or set attention) over the rows:
//!    `Y[n, m' * F_out]`;
//! 3. *scatter*: add `scale * Y` into the destination grid, rows going to
//!    [`Block::place`] and the unfolded `m'` axis to [`Block::unfold`]; destination
//!    axes that neither covers are broadcast.

// Records are decoded one at a time on the stack and there is no heap to box into,
// so variants of different sizes are fine here.
#![allow(clippy::large_enum_variant)]

use heapless::Vec;
use serde::{Deserialize, Serialize};

/// Most weight matrices an input network may have.
pub const MAX_LAYERS: usize = 16;
/// Most weight-space tensors (`2 * MAX_LAYERS`).
pub const MAX_TENSORS: usize = 2 * MAX_LAYERS;
/// Most linear layers in one MLP (`n_fc_layers`, `n_out_fc`).
pub const MAX_FC_LAYERS: usize = 8;

/// A slice of the parameter section: `len` elements starting at element `offset`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ParamRef {
    /// First element.
    pub offset: u32,
    /// Number of elements.
    pub len: u32,
}

/// A linear layer `y = W x + b`, `W` stored `[fout, fin]` row-major (PyTorch's layout).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Linear {
    /// Input width.
    pub fin: u32,
    /// Output width.
    pub fout: u32,
    /// `fout * fin` weights.
    pub weight: ParamRef,
    /// `fout` biases, if the layer has them.
    pub bias: Option<ParamRef>,
}

/// Linear layers with a ReLU between consecutive ones (upstream `_get_mlp`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Mlp {
    /// The layers, first to last; every hidden width equals the output width.
    pub layers: Vec<Linear, MAX_FC_LAYERS>,
}

/// Reduction over a set axis (upstream `reduction`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Reduction {
    /// Elementwise maximum.
    Max,
    /// Arithmetic mean.
    Mean,
    /// Sum.
    Sum,
}

/// How a DeepSets layer pools its set before `Lambda`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SetPooling {
    /// A plain reduction over the set.
    Reduce(Reduction),
    /// Attention pooling (upstream `Attn`): weights `softmax_n(x_n . query)`, then the
    /// weighted sum of the rows. `query` has the row width.
    Attention {
        /// The learned query vector.
        query: ParamRef,
    },
}

/// A permutation-equivariant map over the rows of a matrix.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SetLayer {
    /// DeepSets: `Gamma(x) - Lambda(pool(x))` (upstream `SetLayer`, `set_layer="ds"`).
    DeepSets {
        /// Per-row MLP with bias.
        gamma: Mlp,
        /// MLP on the pooled row, without bias.
        lambda: Mlp,
        /// The pooling before `lambda`.
        pooling: SetPooling,
    },
    /// Multi-head set attention (upstream `SAB`, `set_layer="sab"`):
    /// `O = Q + softmax(Q K^T / sqrt(dim_V)) V` per head, then `O + relu(fc_o(O))`.
    Attention {
        /// Number of heads; each has `dim_V / heads` channels.
        heads: u32,
        /// Query projection.
        fc_q: Linear,
        /// Key projection.
        fc_k: Linear,
        /// Value projection.
        fc_v: Linear,
        /// Output projection.
        fc_o: Linear,
    },
}

/// What a block applies to its gathered rows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Map {
    /// The same MLP on every row.
    Mlp(Mlp),
    /// A set layer over the rows.
    Set(SetLayer),
}

/// An axis of a `[rows, cols, F]` grid, or none.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Axis {
    /// No axis (size 1).
    None,
    /// The row axis.
    Rows,
    /// The column axis.
    Cols,
}

/// What the rows of a block's matrix run over.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SetAxis {
    /// A single row.
    None,
    /// The grid's rows.
    Rows,
    /// The grid's columns.
    Cols,
    /// Every cell of the grid, row-major.
    Cells,
}

/// Which grid axes a block reduces before its map.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pool {
    /// Reduce over the rows.
    pub rows: bool,
    /// Reduce over the columns.
    pub cols: bool,
}

/// The upstream module a block comes from; informational (for `inspect` and errors).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub enum BlockKind {
    W2wGeneralMatrixSet,
    W2wSetKronecker,
    W2wFromFirst,
    W2wToFirst,
    W2wFromLast,
    W2wToLast,
    W2wNonNeighborInternal,
    B2bSelfToSelf,
    B2bSelfToOther,
    B2wSame,
    B2wSuccessive,
    B2wNonNeighborInternal,
    W2bSame,
    W2bSuccessive,
    W2bNonNeighborInternal,
    /// `add_layer_skip`: the layer's skip MLP on every entry.
    LayerSkip,
}

/// One block of a DWS layer: `dst += scale * scatter(map(gather(src)))`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Block {
    /// Upstream origin.
    pub kind: BlockKind,
    /// Source tensor index.
    pub src: u8,
    /// Destination tensor index.
    pub dst: u8,
    /// Axes of the source reduced with the layer's reduction.
    pub pool: Pool,
    /// What the rows of the gathered matrix run over.
    pub set_axis: SetAxis,
    /// The source axis folded into each row (row width `size * F_in`).
    pub fold: Axis,
    /// The map.
    pub map: Map,
    /// Destination axis the rows go to (others broadcast).
    pub place: SetAxis,
    /// Destination axis the outer part of the output row goes to.
    pub unfold: Axis,
    /// Factor applied before adding (`1 / n_tensors`, `/4` for set-Kronecker parts).
    pub scale: f32,
}

/// Down- and up-sampling of `W_0`'s input dimension (upstream `input_dim_downsample`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Resample {
    /// `d_0` inside the layer (the down-sampled size).
    pub rows: u32,
    /// `d_0 -> rows`, a DeepSets layer with attention pooling over `d_1`, per feature.
    pub down: SetLayer,
    /// `rows -> d_0`, likewise.
    pub up: SetLayer,
    /// Per-entry MLP `F_in -> F_out` on the original `W_0`, added after up-sampling.
    pub skip: Mlp,
}

/// Header of one DWS layer; its blocks follow as [`Op::Block`] records.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DwsLayer {
    /// Input features.
    pub fin: u32,
    /// Output features.
    pub fout: u32,
    /// Reduction for block pooling.
    pub reduction: Reduction,
    /// Number of [`Op::Block`] records that follow.
    pub blocks: u32,
    /// Down-sampling of `W_0` around the blocks.
    pub resample: Option<Resample>,
}

/// The invariant head of a classifier (upstream `InvariantLayer`).
///
/// Pools, in this order: every middle weight over both axes, `W_0` over its
/// columns (`d_0 * F` values), `W_{L-1}` over its rows (`d_L * F`), every bias but the
/// last over its entries, then the last bias flattened (`d_L * F`); then the MLP.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Head {
    /// Reduction for the pooling.
    pub reduction: Reduction,
    /// The classifier MLP.
    pub mlp: Mlp,
}

/// One step of the plan.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op {
    /// `x = (x - mean) / std` per input element (dataset statistics); only first.
    Normalize {
        /// One mean per input element.
        mean: ParamRef,
        /// One standard deviation per input element.
        std: ParamRef,
    },
    /// A DWS layer header, followed by its blocks.
    Dws(DwsLayer),
    /// One block of the preceding DWS layer.
    Block(Block),
    /// `x = x * scale + shift` per tensor and feature (a folded batch norm), `[T, F]` each.
    Affine {
        /// Scales, `n_tensors * F`.
        scale: ParamRef,
        /// Shifts, `n_tensors * F`.
        shift: ParamRef,
    },
    /// Elementwise ReLU.
    Relu,
    /// `x += linear(input)` per entry (upstream `DWSModel.add_skip`).
    InputSkip(Linear),
    /// The invariant head; always last but for a [`Quant`](crate::quant::Quant) record.
    Head(Head),
    /// Quantization record of the preceding op (int8 plans only).
    Quant(crate::quant::Quant),
}

/// What the model returns.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Output {
    /// Class logits (`DWSModelForClassification`).
    Logits {
        /// Number of classes.
        classes: u32,
    },
    /// A weight space with this many features per entry (`DWSModel`).
    WeightSpace {
        /// Output features.
        features: u32,
    },
}

/// The input and output contract of a model.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Spec {
    /// `d_0 .. d_L` of the input network.
    pub dims: Vec<u32, { MAX_LAYERS + 1 }>,
    /// Features per input entry (`input_features`).
    pub input_features: u32,
    /// What the model returns.
    pub output: Output,
    /// Number of [`Op`] records in the plan.
    pub ops: u32,
}
