//! Shapes of weight spaces: which grid each tensor is and where it lives in a buffer.

use crate::plan::MAX_LAYERS;

/// The grid shapes of a weight space (see [`crate::plan`] for the layout).
///
/// Buffers hold the tensors back to back, `W_0..W_{L-1}` then `b_0..b_{L-1}`,
/// each `[rows, cols, features]` row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    dims: [usize; MAX_LAYERS + 1],
    layers: usize,
    w0_rows: usize,
}

impl Shape {
    /// The shape of the input network `d_0..d_L`. `dims` must have 2..=MAX_LAYERS+1 entries.
    pub(crate) fn new(dims: &[u32]) -> Self {
        let mut d = [0usize; MAX_LAYERS + 1];
        for (slot, &v) in d.iter_mut().zip(dims) {
            *slot = v as usize;
        }
        Shape {
            dims: d,
            layers: dims.len() - 1,
            w0_rows: d[0],
        }
    }

    /// The same shape with `W_0` holding `rows` rows (inside a down-sampling layer).
    pub fn with_w0_rows(mut self, rows: usize) -> Self {
        self.w0_rows = rows;
        self
    }

    /// Number of weight matrices `L`.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Number of tensors, `2L`.
    pub fn tensors(&self) -> usize {
        2 * self.layers
    }

    /// `d_i`.
    pub fn dim(&self, i: usize) -> usize {
        self.dims[i]
    }

    /// `(rows, cols)` of tensor `t`.
    pub fn grid(&self, t: usize) -> (usize, usize) {
        let l = self.layers;
        if t < l {
            let rows = if t == 0 { self.w0_rows } else { self.dims[t] };
            (rows, self.dims[t + 1])
        } else {
            (self.dims[t - l + 1], 1)
        }
    }

    /// Entries of tensor `t`.
    pub fn cells(&self, t: usize) -> usize {
        let (r, c) = self.grid(t);
        r * c
    }

    /// Entries of the whole weight space.
    pub fn total_cells(&self) -> usize {
        (0..self.tensors()).map(|t| self.cells(t)).sum()
    }

    /// Element offset of tensor `t` in a buffer with `features` per entry.
    pub fn offset(&self, t: usize, features: usize) -> usize {
        (0..t).map(|u| self.cells(u)).sum::<usize>() * features
    }
}
