//! Elementwise and data-movement steps of a layer (pooling, gather, scatter,
//! the final broadcast-add with a fused batch norm and ReLU).
//!
//! They are plain safe Rust, each body compiled twice by [`simd_fn!`]: once as
//! is, once inside a `#[target_feature(enable = "avx2,fma")]` function so that
//! the compiler vectorizes it with AVX2. Both compile the same source without
//! floating-point contraction, so they compute identical results.

use super::prepare::PoolSlot;
#[cfg(target_arch = "x86_64")]
use super::simd::Avx2;
use super::simd::{Isa, Portable, Simd};
use dws_core::plan::Reduction;

/// Defines `fn name(isa: Isa, args..)` that runs `body` compiled for AVX2+FMA when
/// `isa` allows it (and the CPU has them), the portable build of it otherwise.
macro_rules! simd_fn {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub(crate) fn $name(isa: Isa, $($a: $t),*) {
            #[inline(always)]
            fn body($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($a: $t),*) {
                body($($a),*)
            }
            match isa.supported() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `supported` confirmed AVX2 and FMA on this CPU; the body
                // is safe code.
                Isa::Avx2Fma => unsafe { avx2($($a),*) },
                _ => body($($a),*),
            }
        }
    };
}

/// `max`. (`f32::max` vectorizes to `vmaxps` plus a NaN fix-up; a hand-written
/// `if b > a { b } else { a }` stored back becomes a masked store, which is
/// microcoded and slow on AMD.)
#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    a.max(b)
}

#[inline(always)]
fn reduce_into(red: Reduction, o: &mut [f32], v: &[f32]) {
    match red {
        Reduction::Max => o.iter_mut().zip(v).for_each(|(o, v)| *o = max(*o, *v)),
        Reduction::Mean | Reduction::Sum => o.iter_mut().zip(v).for_each(|(o, v)| *o += v),
    }
}

#[inline(always)]
fn init(red: Reduction) -> f32 {
    match red {
        Reduction::Max => f32::NEG_INFINITY,
        Reduction::Mean | Reduction::Sum => 0.0,
    }
}

#[inline(always)]
fn mean(red: Reduction, o: &mut [f32], count: usize) {
    if red == Reduction::Mean {
        let c = count as f32;
        o.iter_mut().for_each(|v| *v /= c);
    }
}

/// Splits `area` into the (disjoint) ranges asked for.
fn disjoint<const N: usize>(
    mut area: &mut [f32],
    parts: [Option<(usize, usize)>; N],
) -> [Option<&mut [f32]>; N] {
    let mut order: Vec<usize> = (0..N).filter(|&i| parts[i].is_some()).collect();
    order.sort_by_key(|&i| parts[i].map(|p| p.0));
    let mut out: [Option<&mut [f32]>; N] = std::array::from_fn(|_| None);
    let mut at = 0;
    for i in order {
        let (off, len) = parts[i].expect("filtered above");
        let rest = std::mem::take(&mut area);
        let (_, rest) = rest.split_at_mut(off - at);
        let (part, rest) = rest.split_at_mut(len);
        out[i] = Some(part);
        area = rest;
        at = off + len;
    }
    out
}

/// Pools the rows of a `[rows, cols, f]` grid as they go by, into the views of a
/// [`PoolSlot`], in the core's summation order.
pub(crate) struct Pooler<'a> {
    red: Reduction,
    dims: (usize, usize, usize),
    over_rows: Option<&'a mut [f32]>,
    over_cols: Option<&'a mut [f32]>,
    over_both: Option<&'a mut [f32]>,
}

impl<'a> Pooler<'a> {
    /// Starts pooling a `(rows, cols, f)` grid into `slot`'s views in `area`.
    pub(crate) fn new(
        red: Reduction,
        dims: (usize, usize, usize),
        slot: &PoolSlot,
        area: &'a mut [f32],
    ) -> Self {
        let (rows, cols, f) = dims;
        let [mut over_rows, over_cols, mut over_both] = disjoint(
            area,
            [
                slot.over_rows.map(|o| (o, cols * f)),
                slot.over_cols.map(|o| (o, rows * f)),
                slot.over_both.map(|o| (o, f)),
            ],
        );
        for o in [&mut over_rows, &mut over_both].into_iter().flatten() {
            o.fill(init(red));
        }
        Pooler {
            red,
            dims,
            over_rows,
            over_cols,
            over_both,
        }
    }

    /// Row `r` (`cols * f` floats).
    #[inline(always)]
    fn row(&mut self, r: usize, xr: &[f32]) {
        let (_, cols, f) = self.dims;
        let red = self.red;
        if let Some(o) = self.over_rows.as_deref_mut() {
            reduce_into(red, o, xr);
        }
        if let Some(o) = self.over_cols.as_deref_mut() {
            let or = &mut o[r * f..(r + 1) * f];
            or.fill(init(red));
            for e in xr.chunks_exact(f) {
                reduce_into(red, or, e);
            }
            mean(red, or, cols);
        }
        if let Some(o) = self.over_both.as_deref_mut() {
            for e in xr.chunks_exact(f) {
                reduce_into(red, o, e);
            }
        }
    }

    /// Whether its views have the sizes of its grid (for the vector code).
    fn fits(&self) -> bool {
        let (rows, cols, f) = self.dims;
        self.over_rows.as_ref().is_none_or(|o| o.len() == cols * f)
            && self.over_cols.as_ref().is_none_or(|o| o.len() == rows * f)
            && self.over_both.as_ref().is_none_or(|o| o.len() == f)
    }

    /// Finishes (the means).
    pub(crate) fn end(self) {
        let (rows, cols, _) = self.dims;
        if let Some(o) = self.over_rows {
            mean(self.red, o, rows);
        }
        if let Some(o) = self.over_both {
            mean(self.red, o, rows * cols);
        }
    }
}

simd_fn! {
    /// Pools `x` (`[rows, cols, f]`) into the views `slot` asks for, inside `area`:
    /// over the rows (`[cols, f]`), over the columns (`[rows, f]`), over both (`[f]`),
    /// in one pass and in the core's summation order.
    fn pool_views(red: Reduction, x: &[f32], dims: (usize, usize, usize), slot: &PoolSlot, area: &mut [f32]) {
        let (rows, cols, f) = dims;
        let mut pool = Pooler::new(red, dims, slot, area);
        for (r, xr) in x[..rows * cols * f].chunks_exact(cols * f).enumerate() {
            pool.row(r, xr);
        }
        pool.end();
    }
}

simd_fn! {
    /// Copies `f`-wide vectors: `x[q] = view[map[q]]` (or the first `x.len()`
    /// floats of `view` when `map` is `None`).
    fn gather(x: &mut [f32], view: &[f32], f: usize, map: Option<&[u32]>) {
        match map {
            None => x.copy_from_slice(&view[..x.len()]),
            Some(map) => {
                for (d, &cell) in x.chunks_exact_mut(f).zip(map) {
                    let c = cell as usize;
                    d.copy_from_slice(&view[c * f..(c + 1) * f]);
                }
            }
        }
    }
}

simd_fn! {
    /// `tgt[q] += scale * y[map[q]]` for `f`-wide vectors (one-to-one when `map`
    /// is `None`).
    fn scatter(tgt: &mut [f32], y: &[f32], f: usize, map: Option<&[u32]>, scale: f32) {
        match map {
            None => {
                let y = &y[..tgt.len()];
                tgt.iter_mut().zip(y).for_each(|(t, v)| *t += scale * v)
            }
            Some(map) => {
                for (d, &v) in tgt.chunks_exact_mut(f).zip(map) {
                    let v = v as usize;
                    d.iter_mut()
                        .zip(&y[v * f..(v + 1) * f])
                        .for_each(|(t, v)| *t += scale * v);
                }
            }
        }
    }
}

/// What follows a layer, applied in its last pass.
pub(crate) struct Post<'a> {
    /// The affine map (`scale`, `shift` per feature), if any.
    pub affine: Option<(&'a [f32], &'a [f32])>,
    /// Then ReLU.
    pub relu: bool,
}

simd_fn! {
    /// [`finish_rows`] for any entry width (the compiler's vectorization).
    #[allow(clippy::too_many_arguments)]
    fn finish_rows_auto(
        x: &mut [f32],
        r0: usize,
        dims: (usize, usize, usize),
        accs: [Option<&[f32]>; 3],
        post: &Post<'_>,
        pool: Option<&mut Pooler<'_>>,
        base: &mut [f32],
    ) {
        let (_, cols, f) = dims;
        let [racc, cacc, aacc] = accs;
        let (affine, relu) = (post.affine, post.relu);
        let mut pool = pool;
        let base = &mut base[..f];
        for (i, xr) in x.chunks_exact_mut(cols * f).enumerate() {
            let r = r0 + i;
            match aacc {
                Some(a) => base.copy_from_slice(&a[..f]),
                None => base.fill(0.0),
            }
            if let Some(ra) = racc {
                base.iter_mut().zip(&ra[r * f..(r + 1) * f]).for_each(|(b, v)| *b += v);
            }
            for (c, e) in xr.chunks_exact_mut(f).enumerate() {
                match cacc {
                    Some(ca) => e
                        .iter_mut()
                        .zip(&*base)
                        .zip(&ca[c * f..(c + 1) * f])
                        .for_each(|((v, b), w)| *v += b + w),
                    None => e.iter_mut().zip(&*base).for_each(|(v, b)| *v += b),
                }
                if let Some((s, h)) = affine {
                    e.iter_mut().zip(s).zip(h).for_each(|((v, s), h)| *v = *v * s + h);
                }
                if relu {
                    e.iter_mut().for_each(|v| *v = max(*v, 0.0));
                }
            }
            if let Some(p) = pool.as_deref_mut() {
                p.row(r, xr);
            }
        }
    }
}

/// For the grid rows `r0..` held in `x` (whole rows of `cols * f`):
/// `x[r, c] = post(x[r, c] + rows[r] + cols[c] + all)`, then each finished row goes
/// to `pool` (the next layer's views) when given; `base` is `f` floats of scratch.
/// Entries of 8, 16, 24 or 32 features take explicit vector code.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_rows(
    isa: Isa,
    x: &mut [f32],
    r0: usize,
    dims: (usize, usize, usize),
    accs: [Option<&[f32]>; 3],
    post: &Post<'_>,
    pool: Option<&mut Pooler<'_>>,
    base: &mut [f32],
) {
    let (rows, cols, f) = dims;
    let n = x.len() / (cols * f).max(1);
    // Everything the vector code reads and writes, checked once.
    let fits = f % 8 == 0
        && (8..=32).contains(&f)
        && r0 + n <= rows
        && x.len() == n * cols * f
        && accs[0].is_none_or(|a| a.len() >= rows * f)
        && accs[1].is_none_or(|a| a.len() >= cols * f)
        && accs[2].is_none_or(|a| a.len() >= f)
        && post
            .affine
            .is_none_or(|(s, h)| s.len() >= f && h.len() >= f)
        && pool.as_ref().is_none_or(|p| p.dims == dims && p.fits());
    if !fits {
        return finish_rows_auto(isa, x, r0, dims, accs, post, pool, base);
    }
    macro_rules! go {
        ($s:ty) => {
            match f / 8 {
                1 => finish_simd::<$s, 1>(x, r0, n, dims, accs, post, pool),
                2 => finish_simd::<$s, 2>(x, r0, n, dims, accs, post, pool),
                3 => finish_simd::<$s, 3>(x, r0, n, dims, accs, post, pool),
                _ => finish_simd::<$s, 4>(x, r0, n, dims, accs, post, pool),
            }
        };
    }
    match isa.supported() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `supported` confirmed AVX2 and FMA; the lengths were checked above.
        Isa::Avx2Fma => unsafe { finish_avx2(x, r0, n, dims, accs, post, pool) },
        // SAFETY: the lengths were checked above; `Portable` needs no CPU feature.
        _ => unsafe { go!(Portable) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_avx2(
    x: &mut [f32],
    r0: usize,
    n: usize,
    dims: (usize, usize, usize),
    accs: [Option<&[f32]>; 3],
    post: &Post<'_>,
    pool: Option<&mut Pooler<'_>>,
) {
    // SAFETY: forwarded contract, AVX2 and FMA present.
    unsafe {
        match dims.2 / 8 {
            1 => finish_simd::<Avx2, 1>(x, r0, n, dims, accs, post, pool),
            2 => finish_simd::<Avx2, 2>(x, r0, n, dims, accs, post, pool),
            3 => finish_simd::<Avx2, 3>(x, r0, n, dims, accs, post, pool),
            _ => finish_simd::<Avx2, 4>(x, r0, n, dims, accs, post, pool),
        }
    }
}

/// [`finish_rows`] with `f = 8 NV`, vectors held in registers.
///
/// # Safety
/// `S`'s instructions are available; the lengths are as checked in [`finish_rows`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn finish_simd<S: Simd, const NV: usize>(
    x: &mut [f32],
    r0: usize,
    n: usize,
    (_, cols, f): (usize, usize, usize),
    [racc, cacc, aacc]: [Option<&[f32]>; 3],
    post: &Post<'_>,
    pool: Option<&mut Pooler<'_>>,
) {
    // SAFETY: every pointer below is into a slice whose length `finish_rows`
    // checked against (rows, cols, f) and the row range r0..r0+n.
    unsafe {
        let zero = S::zero();
        let vecs = |p: Option<&[f32]>| -> Option<[S::V; NV]> {
            p.map(|p| std::array::from_fn(|v| S::load(p.as_ptr().add(8 * v))))
        };
        let (scale, shift) = match post.affine {
            Some((s, h)) => (vecs(Some(s)), vecs(Some(h))),
            None => (None, None),
        };
        let all = vecs(aacc).unwrap_or([zero; NV]);
        let (red, mut pool) = match pool {
            Some(p) => (p.red, Some(p)),
            None => (Reduction::Sum, None),
        };
        let combine = |a: S::V, b: S::V| {
            if red == Reduction::Max {
                S::max(a, b)
            } else {
                S::add(a, b)
            }
        };
        let start = S::splat(init(red));
        let xp = x.as_mut_ptr();
        for i in 0..n {
            let r = r0 + i;
            let mut base = all;
            if let Some(ra) = racc {
                for (v, b) in base.iter_mut().enumerate() {
                    *b = S::add(*b, S::load(ra.as_ptr().add(r * f + 8 * v)));
                }
            }
            let mut rowred = [start; NV];
            let over_rows = pool.as_deref_mut().and_then(|p| p.over_rows.as_deref_mut());
            let orp = over_rows.map(|o| o.as_mut_ptr());
            for c in 0..cols {
                let e = xp.add((i * cols + c) * f);
                for v in 0..NV {
                    let mut y = S::add(S::load(e.add(8 * v)), base[v]);
                    if let Some(ca) = cacc {
                        y = S::add(y, S::load(ca.as_ptr().add(c * f + 8 * v)));
                    }
                    if let (Some(s), Some(h)) = (&scale, &shift) {
                        y = S::fma(y, s[v], h[v]);
                    }
                    if post.relu {
                        y = S::max(y, zero);
                    }
                    S::store(e.add(8 * v), y);
                    if let Some(op) = orp {
                        let o = op.add(c * f + 8 * v);
                        S::store(o, combine(S::load(o), y));
                    }
                    rowred[v] = combine(rowred[v], y);
                }
            }
            if let Some(p) = pool.as_deref_mut() {
                if let Some(ob) = p.over_both.as_deref_mut() {
                    for (v, x) in rowred.iter().enumerate() {
                        let o = ob.as_mut_ptr().add(8 * v);
                        S::store(o, combine(S::load(o), *x));
                    }
                }
                if let Some(oc) = p.over_cols.as_deref_mut() {
                    let o = &mut oc[r * f..(r + 1) * f];
                    for (v, x) in rowred.iter().enumerate() {
                        S::store(o.as_mut_ptr().add(8 * v), *x);
                    }
                    mean(red, o, cols);
                }
            }
        }
    }
}

simd_fn! {
    /// Feeds the grid rows `r0..` held in `x` to `pool`.
    fn pool_rows(x: &[f32], r0: usize, cols_f: usize, pool: &mut Pooler<'_>) {
        for (i, xr) in x.chunks_exact(cols_f).enumerate() {
            pool.row(r0 + i, xr);
        }
    }
}

simd_fn! {
    /// `x = max(x, 0)`.
    fn relu(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = max(*v, 0.0));
    }
}

simd_fn! {
    /// `x[e] = x[e] * scale + shift` for every `f`-wide entry.
    fn affine(x: &mut [f32], scale: &[f32], shift: &[f32]) {
        let f = scale.len();
        for e in x.chunks_exact_mut(f) {
            e.iter_mut().zip(scale).zip(shift).for_each(|((v, s), h)| *v = *v * s + h);
        }
    }
}
