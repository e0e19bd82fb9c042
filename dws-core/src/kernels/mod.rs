//! The arithmetic: a handful of primitives every plan step is built from.
//!
//! Slices handed to these functions have been sized by the plan validation in
//! [`crate::model`]; the functions index them directly.

pub mod block;
pub mod linear;
pub mod reduce;
pub mod set_layer;

use crate::plan::ParamRef;

/// The parameter section viewed as f32.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a>(pub &'a [f32]);

impl<'a> Params<'a> {
    /// The referenced parameters (bounds checked at validation).
    pub fn get(&self, r: ParamRef) -> &'a [f32] {
        &self.0[r.offset as usize..(r.offset + r.len) as usize]
    }
}

/// `x = max(x, 0)` elementwise.
pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// Softmax in place, as PyTorch computes it: `exp(x - max) / sum`.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}
