//! The core of multi-head set attention: `O = Q + softmax(Q K^T) V` per head.
//!
//! Two vector layouts, both chosen so that the softmax runs down vector columns
//! (lane-wise max, exp and sum) and no lane depends on another:
//! * **heads in lanes** (the head count a multiple of 8, the paper's 8 heads): a
//!   group of 8 heads fills the 8 lanes. The query, key and value projections'
//!   output columns are permuted at load time ([`column`]) so that channel `c` of
//!   8 consecutive heads is one vector; then a score `S[i, j]` of 8 heads is `w`
//!   multiply-adds of whole vectors, and so is `O[i] += P[i, j] V[j]`;
//! * **queries in lanes** (any other head count): 8 queries fill the lanes; the
//!   queries are transposed per group and the scores of one head form a column of
//!   key rows, `S^T = K_h Q_h^T`, `O_h^T = V_h^T P^T`.
//!
//! The softmax is computed in base 2: the key projection is scaled at load time
//! by `log2(e) / sqrt(dim_V)` ([`key_scale`]), so `exp2(s - max)` is the upstream
//! `exp((q.k - max) / sqrt(dim_V))`.

use super::simd::{Isa, Portable, Simd};

/// Lanes per vector.
const L: usize = 8;

/// Whether `heads` heads use the heads-in-lanes layout.
pub fn heads_in_lanes(heads: usize) -> bool {
    heads.is_multiple_of(L)
}

/// The factor folded into the key projection (weights and bias).
pub fn key_scale(dv: usize) -> f32 {
    std::f32::consts::LOG2_E / (dv as f32).sqrt()
}

/// Where channel `c` of head `h` goes among the `dv` columns of the packed query,
/// key and value projections.
pub fn column(heads: usize, dv: usize, h: usize, c: usize) -> usize {
    let w = dv / heads;
    if heads_in_lanes(heads) {
        (h / L) * L * w + c * L + h % L
    } else {
        h * w + c
    }
}

/// Scratch floats [`attention`] needs.
pub fn scratch_len(n: usize, dv: usize) -> usize {
    let npad = n.div_ceil(L) * L;
    2 * dv * npad + 2 * L * n + L
}

/// `o[g*n + i, :] = q_i + sum_h softmax_j(q_i,h . k_j,h) v_j,h` for every group `g`.
///
/// `qkv` is `[groups * n, 3 * dv]`: queries, keys (scaled by [`key_scale`]) and
/// values side by side, each with its columns in [`column`] order; `o` is
/// `[groups * n, dv]` in the natural order (head-major); `tmp` holds at least
/// [`scratch_len`] floats.
///
/// # Panics
/// If a slice is too short or `heads` does not divide `dv`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    isa: Isa,
    groups: usize,
    n: usize,
    dv: usize,
    heads: usize,
    qkv: &[f32],
    o: &mut [f32],
    tmp: &mut [f32],
) {
    assert!(
        heads >= 1 && dv.is_multiple_of(heads),
        "heads must divide dim_V"
    );
    assert!(qkv.len() >= groups * n * 3 * dv && o.len() >= groups * n * dv);
    assert!(tmp.len() >= scratch_len(n, dv));
    if groups == 0 || n == 0 || dv == 0 {
        return;
    }
    match isa.supported() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `supported` returned Avx2Fma, so the CPU has AVX2 and FMA; the
        // lengths were checked above.
        Isa::Avx2Fma => unsafe { attention_avx2(groups, n, dv, heads, qkv, o, tmp) },
        // SAFETY: the lengths were checked above; `Portable` needs no CPU feature.
        _ => unsafe { attention_generic::<Portable>(groups, n, dv, heads, qkv, o, tmp) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_avx2(
    groups: usize,
    n: usize,
    dv: usize,
    heads: usize,
    qkv: &[f32],
    o: &mut [f32],
    tmp: &mut [f32],
) {
    // SAFETY: the same contract as the generic body, with AVX2+FMA present.
    unsafe { attention_generic::<super::simd::Avx2>(groups, n, dv, heads, qkv, o, tmp) }
}

/// # Safety
/// `S`'s instructions are available; the slices have the lengths checked in
/// [`attention`].
#[inline(always)]
unsafe fn attention_generic<S: Simd>(
    groups: usize,
    n: usize,
    dv: usize,
    heads: usize,
    qkv: &[f32],
    o: &mut [f32],
    tmp: &mut [f32],
) {
    let ld = 3 * dv;
    for g in 0..groups {
        let rows = &qkv[g * n * ld..(g + 1) * n * ld];
        let out = &mut o[g * n * dv..(g + 1) * n * dv];
        // SAFETY: `rows` is n x 3dv, `out` n x dv, `tmp` has `scratch_len` floats.
        unsafe {
            if heads_in_lanes(heads) {
                group_heads::<S>(n, dv, heads, rows, out, tmp);
            } else {
                group_queries::<S>(n, dv, heads, rows, out, tmp);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Heads in lanes.

/// One group, heads in lanes.
///
/// # Safety
/// `S`'s instructions are available; `rows` is `n x 3dv`, `out` `n x dv`, `tmp`
/// holds at least `2 L n + L` floats; `heads` is a multiple of 8 dividing `dv`.
#[inline(always)]
unsafe fn group_heads<S: Simd>(
    n: usize,
    dv: usize,
    heads: usize,
    rows: &[f32],
    out: &mut [f32],
    tmp: &mut [f32],
) {
    let w = dv / heads;
    for hg in 0..heads / L {
        let mut i = 0;
        while i < n {
            // SAFETY: forwarded; i + NI <= n.
            unsafe {
                if n - i >= 2 {
                    queries_heads::<S, 2>(n, dv, w, hg, i, rows, out, tmp);
                    i += 2;
                } else {
                    queries_heads::<S, 1>(n, dv, w, hg, i, rows, out, tmp);
                    i += 1;
                }
            }
        }
    }
}

/// Queries `i..i+NI` against all keys for the 8 heads of head group `hg`.
///
/// # Safety
/// As [`group_heads`], with `i + NI <= n`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn queries_heads<S: Simd, const NI: usize>(
    n: usize,
    dv: usize,
    w: usize,
    hg: usize,
    i: usize,
    rows: &[f32],
    out: &mut [f32],
    tmp: &mut [f32],
) {
    let ld = 3 * dv;
    let base = hg * L * w;
    // S[j][t]: the scores of query i+t against key j, 8 heads per vector.
    let s = tmp.as_mut_ptr();
    let rp = rows.as_ptr();
    // SAFETY: every column touched is base + c*L .. base + c*L + L with c < w, so
    // inside the head group's part of q, k (offset dv) or v (offset 2dv) of rows
    // < n; `s` holds n * 2L floats.
    unsafe {
        let mut mx = [S::splat(f32::NEG_INFINITY); NI];
        let mut c = 0;
        while c < w {
            let cb = (w - c).min(4);
            let (first, last) = (c == 0, c + cb == w);
            let col = base + c * L;
            match cb {
                4 => scores_heads::<S, NI, 4>(n, ld, rp, i, col, s, first, last, &mut mx),
                3 => scores_heads::<S, NI, 3>(n, ld, rp, i, col, s, first, last, &mut mx),
                2 => scores_heads::<S, NI, 2>(n, ld, rp, i, col, s, first, last, &mut mx),
                _ => scores_heads::<S, NI, 1>(n, ld, rp, i, col, s, first, last, &mut mx),
            }
            c += cb;
        }
        let mut sum = [S::zero(); NI];
        for j in 0..n {
            for t in 0..NI {
                let p = s.add((j * 2 + t) * L);
                let e = S::exp2(S::sub(S::load(p), mx[t]));
                S::store(p, e);
                sum[t] = S::add(sum[t], e);
            }
        }
        let one = S::splat(1.0);
        let inv: [S::V; NI] = std::array::from_fn(|t| S::div(one, sum[t]));
        // Heads of at most 8 channels: finished vectors are staged and transposed
        // into the natural order in registers; wider heads are stored lane by lane.
        let mut ys = [[S::zero(); L]; NI];
        let staged = w <= L;
        let mut c = 0;
        while c < w {
            let cb = (w - c).min(4);
            let a = WArgs {
                n,
                dv,
                w,
                hg,
                c,
                rows: rp,
                i,
                col: base + c * L,
                s,
                out: out.as_mut_ptr(),
            };
            let ys = if staged { Some(&mut ys) } else { None };
            match cb {
                4 => weighted_heads::<S, NI, 4>(a, &inv, ys),
                3 => weighted_heads::<S, NI, 3>(a, &inv, ys),
                2 => weighted_heads::<S, NI, 2>(a, &inv, ys),
                _ => weighted_heads::<S, NI, 1>(a, &inv, ys),
            }
            c += cb;
        }
        if staged {
            for (t, y) in ys.iter().enumerate() {
                let o = out.as_mut_ptr().add((i + t) * dv + hg * L * w);
                match w {
                    4 => {
                        let r = S::transpose4([y[0], y[1], y[2], y[3]]);
                        for (k, v) in r.iter().enumerate() {
                            S::store(o.add(k * L), *v);
                        }
                    }
                    8 => {
                        for (k, v) in S::transpose8(*y).iter().enumerate() {
                            S::store(o.add(k * L), *v);
                        }
                    }
                    _ => {
                        let mut lanes = [0f32; L];
                        for (cc, v) in y.iter().enumerate().take(w) {
                            S::store(lanes.as_mut_ptr(), *v);
                            for (l, x) in lanes.iter().enumerate() {
                                *o.add(l * w + cc) = *x;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The arguments of [`weighted_heads`].
#[derive(Clone, Copy)]
struct WArgs {
    n: usize,
    dv: usize,
    w: usize,
    hg: usize,
    c: usize,
    rows: *const f32,
    i: usize,
    col: usize,
    s: *const f32,
    out: *mut f32,
}

/// `S[j][t] (+)= sum_{cc < CB} Q'[i+t, col + cc L] * K'[j, col + cc L]`, tracking
/// the maximum in the last channel block.
///
/// # Safety
/// As [`queries_heads`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn scores_heads<S: Simd, const NI: usize, const CB: usize>(
    n: usize,
    ld: usize,
    rows: *const f32,
    i: usize,
    col: usize,
    s: *mut f32,
    first: bool,
    last: bool,
    mx: &mut [S::V; NI],
) {
    let dv = ld / 3;
    // SAFETY: see `queries_heads`.
    unsafe {
        let mut q = [[S::zero(); NI]; CB];
        for (cc, qc) in q.iter_mut().enumerate() {
            for (t, x) in qc.iter_mut().enumerate() {
                *x = S::load(rows.add((i + t) * ld + col + cc * L));
            }
        }
        for j in 0..n {
            let krow = rows.add(j * ld + dv + col);
            let mut acc = [S::zero(); NI];
            if !first {
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = S::load(s.add((j * 2 + t) * L));
                }
            }
            for (cc, qc) in q.iter().enumerate() {
                let k = S::load(krow.add(cc * L));
                for (a, &x) in acc.iter_mut().zip(qc) {
                    *a = S::fma(x, k, *a);
                }
            }
            for (t, a) in acc.iter().enumerate() {
                S::store(s.add((j * 2 + t) * L), *a);
                if last {
                    mx[t] = S::max(mx[t], *a);
                }
            }
        }
    }
}

/// `O[i+t, head h, channel c+cc] = Q + sum_j P[j][t] V'[j, col + cc L] * inv[t]`:
/// into `ys[t][c + cc]` (heads in lanes) when staging, else un-permuted into the
/// natural column order lane by lane.
///
/// # Safety
/// As [`queries_heads`]; `out` is `n x dv`; staging needs `c + CB <= 8`.
#[inline(always)]
unsafe fn weighted_heads<S: Simd, const NI: usize, const CB: usize>(
    a: WArgs,
    inv: &[S::V; NI],
    ys: Option<&mut [[S::V; L]; NI]>,
) {
    let WArgs {
        n,
        dv,
        w,
        hg,
        c,
        rows,
        i,
        col,
        s,
        out,
    } = a;
    let ld = 3 * dv;
    // SAFETY: see `queries_heads`; output columns (hg*L + l)*w + c + cc < dv.
    unsafe {
        let mut acc = [[S::zero(); NI]; CB];
        for j in 0..n {
            let vrow = rows.add(j * ld + 2 * dv + col);
            let mut p = [S::zero(); NI];
            for (t, x) in p.iter_mut().enumerate() {
                *x = S::load(s.add((j * 2 + t) * L));
            }
            for (cc, row) in acc.iter_mut().enumerate() {
                let v = S::load(vrow.add(cc * L));
                for (a, &x) in row.iter_mut().zip(&p) {
                    *a = S::fma(x, v, *a);
                }
            }
        }
        match ys {
            Some(ys) => {
                for (cc, row) in acc.iter().enumerate() {
                    for (t, a) in row.iter().enumerate() {
                        let q = S::load(rows.add((i + t) * ld + col + cc * L));
                        ys[t][c + cc] = S::fma(*a, inv[t], q);
                    }
                }
            }
            None => {
                let mut lanes = [0f32; L];
                for (cc, row) in acc.iter().enumerate() {
                    for (t, a) in row.iter().enumerate() {
                        let q = S::load(rows.add((i + t) * ld + col + cc * L));
                        S::store(lanes.as_mut_ptr(), S::fma(*a, inv[t], q));
                        let o = out.add((i + t) * dv + hg * L * w + c + cc);
                        for (l, v) in lanes.iter().enumerate() {
                            *o.add(l * w) = *v;
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Queries in lanes.

/// One group, queries in lanes.
///
/// # Safety
/// `S`'s instructions are available; `rows` is `n x 3dv`, `out` `n x dv`, `tmp`
/// holds at least [`scratch_len`] floats.
#[inline(always)]
unsafe fn group_queries<S: Simd>(
    n: usize,
    dv: usize,
    heads: usize,
    rows: &[f32],
    out: &mut [f32],
    tmp: &mut [f32],
) {
    let npad = n.div_ceil(L) * L;
    let w = dv / heads;
    let ld = 3 * dv;
    let (qt, rest) = tmp.split_at_mut(dv * npad);
    let (ot, rest) = rest.split_at_mut(dv * npad);
    let s = rest.as_mut_ptr();
    // SAFETY: Q^T and O^T are dv x npad; rows are n x 3dv; `s` holds 2 L n floats.
    unsafe {
        // Q^T, zero-padded to whole vectors of queries.
        let (rp, qp) = (rows.as_ptr(), qt.as_mut_ptr());
        for c in 0..dv {
            for i in 0..n {
                *qp.add(c * npad + i) = *rp.add(i * ld + c);
            }
            for i in n..npad {
                *qp.add(c * npad + i) = 0.0;
            }
        }
        let keys = rp.add(dv);
        let values = rp.add(2 * dv);
        for h in 0..heads {
            let mut q0 = 0;
            while q0 < npad {
                if npad - q0 >= 2 * L {
                    head_block::<S, 2>(
                        n,
                        npad,
                        ld,
                        h * w,
                        w,
                        keys,
                        values,
                        qp,
                        ot.as_mut_ptr(),
                        s,
                        q0,
                    );
                    q0 += 2 * L;
                } else {
                    head_block::<S, 1>(
                        n,
                        npad,
                        ld,
                        h * w,
                        w,
                        keys,
                        values,
                        qp,
                        ot.as_mut_ptr(),
                        s,
                        q0,
                    );
                    q0 += L;
                }
            }
        }
        // O = Q + (O_h^T)^T.
        let (op, otp) = (out.as_mut_ptr(), ot.as_ptr());
        for i in 0..n {
            for c in 0..dv {
                *op.add(i * dv + c) = *rp.add(i * ld + c) + *otp.add(c * npad + i);
            }
        }
    }
}

/// Scores, softmax and weighted values of one head for `L * NV` queries from `q0`.
///
/// # Safety
/// `S`'s instructions are available; `keys`/`values` point at n rows of stride
/// `ld` holding the head's columns `c0..c0+w`; `qt`/`ot` at dv rows of npad;
/// `s` at `2 L n` floats; `q0 + L NV <= npad`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn head_block<S: Simd, const NV: usize>(
    n: usize,
    npad: usize,
    ld: usize,
    c0: usize,
    w: usize,
    keys: *const f32,
    values: *const f32,
    qt: *const f32,
    ot: *mut f32,
    s: *mut f32,
    q0: usize,
) {
    // SAFETY: see above.
    unsafe {
        let mut mx = [S::splat(f32::NEG_INFINITY); NV];
        let mut c = 0;
        while c < w {
            let cb = (w - c).min(4);
            let (first, last) = (c == 0, c + cb == w);
            let a = (n, npad, ld, c0 + c, keys, qt, s, q0);
            match cb {
                4 => scores_queries::<S, NV, 4>(a, first, last, &mut mx),
                3 => scores_queries::<S, NV, 3>(a, first, last, &mut mx),
                2 => scores_queries::<S, NV, 2>(a, first, last, &mut mx),
                _ => scores_queries::<S, NV, 1>(a, first, last, &mut mx),
            }
            c += cb;
        }
        let mut sum = [S::zero(); NV];
        for j in 0..n {
            for v in 0..NV {
                let p = s.add((j * 2 + v) * L);
                let e = S::exp2(S::sub(S::load(p), mx[v]));
                S::store(p, e);
                sum[v] = S::add(sum[v], e);
            }
        }
        let one = S::splat(1.0);
        let inv: [S::V; NV] = std::array::from_fn(|v| S::div(one, sum[v]));
        let mut c = 0;
        while c < w {
            let cb = (w - c).min(4);
            let a = (n, npad, ld, c0 + c, values, ot, s, q0);
            match cb {
                4 => weighted_queries::<S, NV, 4>(a, &inv),
                3 => weighted_queries::<S, NV, 3>(a, &inv),
                2 => weighted_queries::<S, NV, 2>(a, &inv),
                _ => weighted_queries::<S, NV, 1>(a, &inv),
            }
            c += cb;
        }
    }
}

/// `(n, npad, ld, c, rows, transposed, s, q0)`.
type QArgs<P> = (usize, usize, usize, usize, *const f32, P, *mut f32, usize);

/// `s[j] (+)= sum_{cc < CB} K[j, c + cc] * Q^T[c + cc, q0..]`.
///
/// # Safety
/// As [`head_block`].
#[inline(always)]
unsafe fn scores_queries<S: Simd, const NV: usize, const CB: usize>(
    (n, npad, ld, c, keys, qt, s, q0): QArgs<*const f32>,
    first: bool,
    last: bool,
    mx: &mut [S::V; NV],
) {
    // SAFETY: rows c..c+CB of Q^T hold npad floats, q0 + L*NV <= npad; key rows
    // j < n have columns c..c+CB; `s` holds n rows of 2L.
    unsafe {
        let mut q = [[S::zero(); NV]; CB];
        for (cc, qv) in q.iter_mut().enumerate() {
            for (v, x) in qv.iter_mut().enumerate() {
                *x = S::load(qt.add((c + cc) * npad + q0 + L * v));
            }
        }
        for j in 0..n {
            let mut acc = [S::zero(); NV];
            if !first {
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = S::load(s.add((j * 2 + v) * L));
                }
            }
            for (cc, qv) in q.iter().enumerate() {
                let kb = S::splat(*keys.add(j * ld + c + cc));
                for (a, &x) in acc.iter_mut().zip(qv) {
                    *a = S::fma(kb, x, *a);
                }
            }
            for (v, a) in acc.iter().enumerate() {
                S::store(s.add((j * 2 + v) * L), *a);
                if last {
                    mx[v] = S::max(mx[v], *a);
                }
            }
        }
    }
}

/// `O^T[c + cc, q0..] = sum_j V[j, c + cc] * s[j] * inv` for `cc < CB`.
///
/// # Safety
/// As [`head_block`].
#[inline(always)]
unsafe fn weighted_queries<S: Simd, const NV: usize, const CB: usize>(
    (n, npad, ld, c, values, ot, s, q0): QArgs<*mut f32>,
    inv: &[S::V; NV],
) {
    // SAFETY: as in `scores_queries`, with O^T in place of Q^T and V in place of K.
    unsafe {
        let mut acc = [[S::zero(); NV]; CB];
        for j in 0..n {
            let mut p = [S::zero(); NV];
            for (v, x) in p.iter_mut().enumerate() {
                *x = S::load(s.add((j * 2 + v) * L));
            }
            for (cc, row) in acc.iter_mut().enumerate() {
                let vb = S::splat(*values.add(j * ld + c + cc));
                for (a, &x) in row.iter_mut().zip(&p) {
                    *a = S::fma(vb, x, *a);
                }
            }
        }
        for (cc, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                S::store(ot.add((c + cc) * npad + q0 + L * v), S::mul(*a, inv[v]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's arithmetic in f64 on natural-order q, k, v (`[n, 3dv]`).
    fn reference(n: usize, dv: usize, heads: usize, qkv: &[f64]) -> Vec<f64> {
        let w = dv / heads;
        let ld = 3 * dv;
        let mut o = vec![0f64; n * dv];
        for h in 0..heads {
            for i in 0..n {
                let sc: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..w)
                            .map(|c| qkv[i * ld + h * w + c] * qkv[j * ld + dv + h * w + c])
                            .sum::<f64>()
                            / (dv as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..w {
                    let a: f64 = (0..n)
                        .map(|j| e[j] / z * qkv[j * ld + 2 * dv + h * w + c])
                        .sum();
                    o[i * dv + h * w + c] = qkv[i * ld + h * w + c] + a;
                }
            }
        }
        o
    }

    #[test]
    fn matches_a_double_precision_reference() {
        for &(groups, n, dv, heads) in &[
            (1, 1, 1, 1),
            (2, 5, 6, 3),
            (3, 32, 32, 8),
            (1, 32, 64, 8),
            (2, 17, 32, 1),
            (1, 40, 12, 4),
            (1, 9, 10, 2),
            (2, 7, 48, 16),
            (1, 3, 40, 8),
            (1, 12, 200, 8),
        ] {
            let natural: Vec<f64> = (0..groups * n * 3 * dv)
                .map(|i| ((i * 2654435761usize) % 1000) as f64 / 250.0 - 2.0)
                .collect();
            // Pack as the engine does: permuted columns, keys scaled.
            let w = dv / heads;
            let mut packed = vec![0f32; natural.len()];
            for r in 0..groups * n {
                for part in 0..3 {
                    for h in 0..heads {
                        for c in 0..w {
                            let v = natural[r * 3 * dv + part * dv + h * w + c];
                            let scale = if part == 1 { key_scale(dv) as f64 } else { 1.0 };
                            packed[r * 3 * dv + part * dv + column(heads, dv, h, c)] =
                                (v * scale) as f32;
                        }
                    }
                }
            }
            for isa in [Isa::Portable, Isa::detect()] {
                let mut o = vec![0f32; groups * n * dv];
                let mut tmp = vec![0f32; scratch_len(n, dv)];
                attention(isa, groups, n, dv, heads, &packed, &mut o, &mut tmp);
                for g in 0..groups {
                    let want = reference(n, dv, heads, &natural[g * n * 3 * dv..]);
                    for (x, y) in o[g * n * dv..(g + 1) * n * dv].iter().zip(&want) {
                        assert!(
                            (*x as f64 - y).abs() <= 2e-5 * (1.0 + y.abs()),
                            "{isa:?} g{groups} n{n} dv{dv} h{heads}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}
