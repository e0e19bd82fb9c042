//! The records of format-1 blobs (int8 only, weights with one scale per
//! tensor), read and turned into the current records as they are decoded.
//! Only the quantization records changed in format 2; every other record is
//! the current type.

// Records are decoded one at a time on the stack and there is no heap to box into,
// so variants of different sizes are fine here.
#![allow(clippy::large_enum_variant)]

use serde::Deserialize;

use super::{records, LinearQ, LogitScale, Requant};
use crate::plan::{self, DwsLayer, Head, Linear, ParamRef, MAX_FC_LAYERS, MAX_TENSORS};

/// A format-1 op record.
#[derive(Deserialize)]
pub(crate) enum Op {
    Normalize { mean: ParamRef, std: ParamRef },
    Dws(DwsLayer),
    Block(plan::Block),
    Affine { scale: ParamRef, shift: ParamRef },
    Relu,
    InputSkip(Linear),
    Head(Head),
    Quant(Quant),
}

#[derive(Deserialize)]
pub(crate) enum Quant {
    Input {
        scales: heapless::Vec<f32, MAX_TENSORS>,
    },
    Layer {
        out: heapless::Vec<Requant, MAX_TENSORS>,
        resample: Option<ResampleQ>,
    },
    Block(BlockQ),
    Affine {
        shift: u8,
    },
    Skip {
        cur: heapless::Vec<Requant, MAX_TENSORS>,
        lin: heapless::Vec<Requant, MAX_TENSORS>,
    },
    Head {
        pooled: heapless::Vec<Requant, MAX_TENSORS>,
        mlp: MlpQ,
        logit_scale: f32,
    },
    Output {
        scales: heapless::Vec<f32, MAX_TENSORS>,
    },
}

#[derive(Deserialize)]
pub(crate) struct MlpQ {
    layers: heapless::Vec<Requant, MAX_FC_LAYERS>,
}

#[derive(Deserialize)]
pub(crate) enum MapQ {
    Mlp(MlpQ),
    DeepSets {
        gamma: MlpQ,
        pooled: Requant,
        score: Requant,
        lambda: MlpQ,
    },
    Attention {
        q: Requant,
        k: Requant,
        v: Requant,
        score: Requant,
        o_q: Requant,
        o_av: Requant,
        y_o: Requant,
        y_fc: Requant,
    },
}

#[derive(Deserialize)]
pub(crate) struct BlockQ {
    x: Requant,
    map: MapQ,
    contrib: Requant,
}

#[derive(Deserialize)]
pub(crate) struct ResampleQ {
    down: MapQ,
    up: MapQ,
    skip: MlpQ,
    out_up: Requant,
    out_skip: Requant,
}

impl From<MlpQ> for records::MlpQ {
    fn from(q: MlpQ) -> Self {
        records::MlpQ {
            layers: q.layers.iter().map(|r| LinearQ::Tensor(*r)).collect(),
        }
    }
}

impl From<MapQ> for records::MapQ {
    fn from(q: MapQ) -> Self {
        match q {
            MapQ::Mlp(m) => records::MapQ::Mlp(m.into()),
            MapQ::DeepSets {
                gamma,
                pooled,
                score,
                lambda,
            } => records::MapQ::DeepSets {
                gamma: gamma.into(),
                pooled,
                score,
                lambda: lambda.into(),
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
            } => records::MapQ::Attention {
                q: LinearQ::Tensor(q),
                k: LinearQ::Tensor(k),
                v: LinearQ::Tensor(v),
                score,
                o_q,
                o_av,
                y_o,
                y_fc: LinearQ::Tensor(y_fc),
            },
        }
    }
}

impl From<BlockQ> for records::BlockQ {
    fn from(q: BlockQ) -> Self {
        records::BlockQ {
            x: q.x,
            map: q.map.into(),
            contrib: q.contrib,
        }
    }
}

impl From<ResampleQ> for records::ResampleQ {
    fn from(q: ResampleQ) -> Self {
        records::ResampleQ {
            down: q.down.into(),
            up: q.up.into(),
            skip: q.skip.into(),
            out_up: q.out_up,
            out_skip: q.out_skip,
        }
    }
}

impl From<Quant> for records::Quant {
    fn from(q: Quant) -> Self {
        match q {
            Quant::Input { scales } => records::Quant::Input { scales },
            Quant::Layer { out, resample } => records::Quant::Layer {
                out,
                resample: resample.map(Into::into),
            },
            Quant::Block(b) => records::Quant::Block(b.into()),
            Quant::Affine { shift } => records::Quant::Affine { shift },
            Quant::Skip { cur, lin } => records::Quant::Skip { cur, lin },
            Quant::Head {
                pooled,
                mlp,
                logit_scale,
            } => records::Quant::Head {
                pooled,
                mlp: mlp.into(),
                logit_scale: LogitScale::Tensor(logit_scale),
            },
            Quant::Output { scales } => records::Quant::Output { scales },
        }
    }
}

impl From<Op> for plan::Op {
    fn from(op: Op) -> Self {
        match op {
            Op::Normalize { mean, std } => plan::Op::Normalize { mean, std },
            Op::Dws(l) => plan::Op::Dws(l),
            Op::Block(b) => plan::Op::Block(b),
            Op::Affine { scale, shift } => plan::Op::Affine { scale, shift },
            Op::Relu => plan::Op::Relu,
            Op::InputSkip(l) => plan::Op::InputSkip(l),
            Op::Head(h) => plan::Op::Head(h),
            Op::Quant(q) => plan::Op::Quant(q.into()),
        }
    }
}
