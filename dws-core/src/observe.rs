//! Observation points of the f32 forward pass.
//!
//! Quantization needs the range of every value the int8 path stores as int8.
//! The f32 executor reports each such value to an [`Observe`] implementation
//! at a [`Site`]; `dws quantize` records the ranges over a calibration set.
//! [`Model::run`](crate::Model::run) passes a no-op observer.

/// Which part of an op a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// A block (the op is an [`Op::Block`](crate::plan::Op::Block)).
    Block,
    /// The down-sampling set layer of a DWS layer.
    Down,
    /// The output-side `W_0` of a down-sampled DWS layer, before up-sampling.
    Inner,
    /// The up-sampling set layer of a DWS layer.
    Up,
    /// The `W_0` skip MLP of a down-sampled DWS layer.
    Skip,
    /// The invariant head.
    Head,
    /// Weight-space tensor `t` after the op.
    Tensor(u8),
}

/// Which value within the part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The gathered (pooled, folded) input matrix of a block; the head's pooled vector.
    X,
    /// Output of hidden linear layer `l` (after its ReLU) of the map / Gamma MLP.
    Hidden(u8),
    /// The pooled row of a DeepSets layer.
    Pooled,
    /// Output of hidden linear layer `l` (after its ReLU) of the Lambda MLP.
    LambdaHidden(u8),
    /// Set attention queries (after `fc_q`).
    Q,
    /// Set attention keys.
    K,
    /// Set attention values.
    V,
    /// Set attention `Q + A V`, before the output projection.
    O,
    /// The output of a map or a whole tensor.
    Y,
}

/// An observation point: op index in the plan, part and stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site {
    /// Index of the op record.
    pub op: u32,
    /// Part of the op.
    pub part: Part,
    /// Value within the part.
    pub stage: Stage,
}

impl Site {
    /// The same op and part at another stage.
    pub fn at(self, stage: Stage) -> Site {
        Site { stage, ..self }
    }
}

/// Receives values of the f32 forward pass.
pub trait Observe {
    /// Called with every value computed at `site` (possibly in several calls).
    fn observe(&mut self, site: Site, values: &[f32]);
}

/// Observes nothing.
pub struct NoObserve;

impl Observe for NoObserve {
    fn observe(&mut self, _: Site, _: &[f32]) {}
}

/// An observer bound to one op and part, handed down the kernels.
pub struct Tap<'o> {
    obs: &'o mut dyn Observe,
    site: Site,
}

impl<'o> Tap<'o> {
    /// Observations at `op`/`part` go to `obs`.
    pub fn new(obs: &'o mut dyn Observe, op: u32, part: Part) -> Self {
        Tap {
            obs,
            site: Site {
                op,
                part,
                stage: Stage::Y,
            },
        }
    }

    /// Reports `values` at `stage`.
    pub fn at(&mut self, stage: Stage, values: &[f32]) {
        self.obs.observe(self.site.at(stage), values);
    }

    /// The underlying observer.
    pub fn observer(&mut self) -> &mut dyn Observe {
        &mut *self.obs
    }

    /// The same observer for another part of the same op.
    pub fn part(&mut self, part: Part) -> Tap<'_> {
        Tap {
            obs: &mut *self.obs,
            site: Site { part, ..self.site },
        }
    }
}
