//! Reductions over a set axis.

use crate::plan::Reduction;

/// Reduces `count` vectors of width `out.len()` into `out`; `row(i)` yields vector `i`.
pub fn reduce_into<'a>(
    red: Reduction,
    count: usize,
    out: &mut [f32],
    row: impl Fn(usize) -> &'a [f32],
) {
    let init = match red {
        Reduction::Max => f32::NEG_INFINITY,
        Reduction::Mean | Reduction::Sum => 0.0,
    };
    out.fill(init);
    for i in 0..count {
        let r = row(i);
        match red {
            Reduction::Max => out.iter_mut().zip(r).for_each(|(o, v)| *o = o.max(*v)),
            Reduction::Mean | Reduction::Sum => out.iter_mut().zip(r).for_each(|(o, v)| *o += v),
        }
    }
    if red == Reduction::Mean {
        let n = count as f32;
        out.iter_mut().for_each(|o| *o /= n);
    }
}
