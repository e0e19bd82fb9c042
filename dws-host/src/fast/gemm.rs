//! `C = epilogue(A B + bias)` with a 6x16 register-tile microkernel.
//!
//! `B` (a layer's weights) is packed once, at load time, into panels of 16
//! columns (`[panel][k][16]`, zero-padded), so the kernel streams it with two
//! vector loads per `k`; `A` (activations) is read in place, row-major, one
//! broadcast per row and `k`. The tile keeps 12 accumulators (6 rows x 2 vectors)
//! in registers. `K` is processed in blocks of [`KC`].
//!
//! Every output row is computed by the same instruction sequence whatever its
//! position: a partial last tile of rows is copied into a zero-padded block and
//! goes through the same kernel, and partial column panels are handled by
//! zero-padded weights. So a row's result is independent of the batch around it.

use super::simd::{Isa, Portable, Simd};

/// Rows per register tile.
pub const MR: usize = 6;
/// Columns per register tile (two 8-lane vectors).
pub const NR: usize = 16;
/// `K` block.
pub const KC: usize = 256;

/// A `[k, n]` right-hand matrix packed into 16-column panels, with its bias.
#[derive(Debug, Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    /// `[panels][k][NR]`.
    data: Vec<f32>,
    /// `panels * NR` biases (zero where there is none).
    bias: Vec<f32>,
}

impl PackedB {
    /// Packs `b(kk, j)` for `kk < k`, `j < n`, with optional bias `[n]`.
    pub fn from_fn(
        k: usize,
        n: usize,
        b: impl Fn(usize, usize) -> f32,
        bias: Option<&[f32]>,
    ) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for p in 0..panels {
            for kk in 0..k {
                for jj in 0..NR {
                    let j = p * NR + jj;
                    if j < n {
                        data[(p * k + kk) * NR + jj] = b(kk, j);
                    }
                }
            }
        }
        let mut bv = vec![0f32; panels * NR];
        if let Some(bias) = bias {
            bv[..n].copy_from_slice(&bias[..n]);
        }
        PackedB {
            k,
            n,
            data,
            bias: bv,
        }
    }

    /// Packs a PyTorch linear weight `w` (`[n, k]`, row-major) as `w^T`.
    pub fn from_linear(w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Self {
        Self::from_fn(k, n, |kk, j| w[j * k + kk], bias)
    }

    /// Inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

/// What happens to `acc = A B + bias` on the way to `C`.
#[derive(Debug, Clone, Copy)]
pub enum Epi<'a> {
    /// `C = acc`.
    Store,
    /// `C = max(acc, 0)`.
    Relu,
    /// `C = C + acc` (the bias and the products are added to `C`'s old value).
    Accum,
    /// `C = R + max(acc, 0)`, `R` row-major with row stride `ldr`.
    ResidualRelu {
        /// The residual.
        r: &'a [f32],
        /// Its row stride.
        ldr: usize,
    },
}

/// `C[m, n] = epi(A[m, k] B + bias)`; `A` and `C` row-major with strides `lda`, `ldc`.
///
/// # Panics
/// If a slice is too short for its shape (checked once, before any work).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    isa: Isa,
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epi: Epi<'_>,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= k && ldc >= n, "gemm strides too small");
    assert!(a.len() >= (m - 1) * lda + k, "gemm: A too short");
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: C too short");
    if let Epi::ResidualRelu { r, ldr } = epi {
        assert!(
            ldr >= n && r.len() >= (m - 1) * ldr + n,
            "gemm: R too short"
        );
    }
    match isa.supported() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `supported` returned Avx2Fma, so the CPU has AVX2 and FMA; the
        // slice lengths were checked above against (m, k, n) and the strides.
        Isa::Avx2Fma => unsafe { gemm_avx2(m, a, lda, b, c, ldc, epi) },
        _ => {
            // SAFETY: the slice lengths were checked above; `Portable` needs no
            // CPU feature.
            unsafe { gemm_generic::<Portable>(m, a, lda, b, c, ldc, epi) }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_avx2(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epi: Epi<'_>,
) {
    // SAFETY: this function's contract (AVX2+FMA present, lengths checked) is the
    // generic one's.
    unsafe { gemm_generic::<super::simd::Avx2>(m, a, lda, b, c, ldc, epi) }
}

/// Epilogue codes for [`drive`] (a const parameter, so each is its own loop).
const STORE: u8 = 0;
const RELU: u8 = 1;
const ACCUM: u8 = 2;
const RESIDUAL: u8 = 3;

/// The driver: picks the epilogue, then runs [`drive`].
///
/// # Safety
/// `S`'s instructions are available; `a`, `c` (and a residual) hold their shapes
/// as checked in [`gemm`].
#[inline(always)]
unsafe fn gemm_generic<S: Simd>(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epi: Epi<'_>,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match epi {
            Epi::Store => drive::<S, STORE>(m, a, lda, b, c, ldc, &[], 0),
            Epi::Relu => drive::<S, RELU>(m, a, lda, b, c, ldc, &[], 0),
            Epi::Accum => drive::<S, ACCUM>(m, a, lda, b, c, ldc, &[], 0),
            Epi::ResidualRelu { r, ldr } => drive::<S, RESIDUAL>(m, a, lda, b, c, ldc, r, ldr),
        }
    }
}

/// `K` blocks, then column panels, then row tiles.
///
/// # Safety
/// As [`gemm_generic`]; `r` holds `m` rows of stride `ldr` when `E == RESIDUAL`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn drive<S: Simd, const E: u8>(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    r: &[f32],
    ldr: usize,
) {
    let (k, n) = (b.k, b.n);
    let full_rows = m / MR * MR;
    let rest = m - full_rows;
    // The last, partial row tile goes through a zero-padded copy.
    let mut pad = if rest > 0 {
        vec![0f32; MR * KC.min(k)]
    } else {
        Vec::new()
    };
    let mut kb = 0;
    while kb < k {
        let kc = KC.min(k - kb);
        let (first, last) = (kb == 0, kb + kc == k);
        if rest > 0 {
            for (i, row) in pad.chunks_exact_mut(kc).take(rest).enumerate() {
                row.copy_from_slice(&a[(full_rows + i) * lda + kb..][..kc]);
            }
        }
        for p in 0..b.panels() {
            let j0 = p * NR;
            let cols = NR.min(n - j0);
            let panel = &b.data[(p * k + kb) * NR..(p * k + kb + kc) * NR];
            let bias = &b.bias[j0..j0 + NR];
            let mut i0 = 0;
            while i0 < full_rows {
                // SAFETY: rows i0..i0+MR of A (kc floats from column kb each) are in
                // bounds by the length check; `panel` is kc x NR; the tile's rows and
                // columns of C (and R) are in bounds when `cols == NR`.
                unsafe {
                    let mut acc = [[S::zero(); 2]; MR];
                    let ap = a.as_ptr().add(i0 * lda + kb);
                    if cols == NR {
                        let cp = c.as_mut_ptr().add(i0 * ldc + j0);
                        init_full::<S, E>(&mut acc, cp, ldc, bias, first);
                        kernel::<S>(kc, ap, lda, panel.as_ptr(), &mut acc);
                        let rp = if E == RESIDUAL {
                            r.as_ptr().add(i0 * ldr + j0)
                        } else {
                            r.as_ptr()
                        };
                        store_full::<S, E>(&acc, cp, ldc, rp, ldr, last);
                    } else {
                        partial::<S, E>(
                            &mut acc,
                            kc,
                            ap,
                            lda,
                            panel.as_ptr(),
                            bias,
                            c,
                            ldc,
                            r,
                            ldr,
                            (i0, MR, j0, cols),
                            (first, last),
                        );
                    }
                }
                i0 += MR;
            }
            if rest > 0 {
                // SAFETY: `pad` holds MR rows of kc floats; `partial` checks its
                // C/R accesses through slices.
                unsafe {
                    let mut acc = [[S::zero(); 2]; MR];
                    partial::<S, E>(
                        &mut acc,
                        kc,
                        pad.as_ptr(),
                        kc,
                        panel.as_ptr(),
                        bias,
                        c,
                        ldc,
                        r,
                        ldr,
                        (full_rows, rest, j0, cols),
                        (first, last),
                    );
                }
            }
        }
        kb += kc;
    }
}

/// `acc += A[MR, kc] B[kc, NR]`.
///
/// # Safety
/// `S`'s instructions are available; `a` points at MR rows of `kc` floats with
/// stride `lda`, `b` at `kc * NR` floats.
#[inline(always)]
unsafe fn kernel<S: Simd>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    acc: &mut [[S::V; 2]; MR],
) {
    // SAFETY: all reads stay inside the ranges stated above.
    unsafe {
        for kk in 0..kc {
            let b0 = S::load(b.add(kk * NR));
            let b1 = S::load(b.add(kk * NR + 8));
            for (r, row) in acc.iter_mut().enumerate() {
                let x = S::splat(*a.add(r * lda + kk));
                row[0] = S::fma(x, b0, row[0]);
                row[1] = S::fma(x, b1, row[1]);
            }
        }
    }
}

/// Initial accumulators of a full tile: the bias (plus `C` for `ACCUM`) in the
/// first `K` block, the partial sums in `C` after it.
///
/// # Safety
/// `S`'s instructions are available; `c` points at MR rows of NR floats, stride `ldc`.
#[inline(always)]
unsafe fn init_full<S: Simd, const E: u8>(
    acc: &mut [[S::V; 2]; MR],
    c: *const f32,
    ldc: usize,
    bias: &[f32],
    first: bool,
) {
    // SAFETY: reads stay inside the tile of C and the NR biases.
    unsafe {
        let bv = [S::load(bias.as_ptr()), S::load(bias.as_ptr().add(8))];
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                *x = if !first {
                    S::load(c.add(r * ldc + 8 * v))
                } else if E == ACCUM {
                    S::add(S::load(c.add(r * ldc + 8 * v)), bv[v])
                } else {
                    bv[v]
                };
            }
        }
    }
}

/// Writes a full tile through the epilogue (`last`) or as partial sums.
///
/// # Safety
/// `S`'s instructions are available; `c` (and `r` for `RESIDUAL`) point at MR rows
/// of NR floats with strides `ldc` (`ldr`).
#[inline(always)]
unsafe fn store_full<S: Simd, const E: u8>(
    acc: &[[S::V; 2]; MR],
    c: *mut f32,
    ldc: usize,
    r: *const f32,
    ldr: usize,
    last: bool,
) {
    // SAFETY: accesses stay inside the tile of C (and R).
    unsafe {
        let zero = S::zero();
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let y = if !last {
                    x
                } else if E == RELU {
                    S::max(x, zero)
                } else if E == RESIDUAL {
                    S::add(S::load(r.add(i * ldr + 8 * v)), S::max(x, zero))
                } else {
                    x
                };
                S::store(c.add(i * ldc + 8 * v), y);
            }
        }
    }
}

/// A tile with fewer than MR rows or NR columns: the same arithmetic, with `C`
/// and `R` accessed through a staging block.
///
/// # Safety
/// `S`'s instructions are available; `a` points at MR rows of `kc` floats with
/// stride `lda`, `b` at `kc * NR` floats. `C`/`R` are accessed through slices.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn partial<S: Simd, const E: u8>(
    acc: &mut [[S::V; 2]; MR],
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    bias: &[f32],
    c: &mut [f32],
    ldc: usize,
    r: &[f32],
    ldr: usize,
    (i0, rows, j0, cols): (usize, usize, usize, usize),
    (first, last): (bool, bool),
) {
    let mut stage = [[0f32; NR]; MR];
    if !first || E == ACCUM {
        for (i, st) in stage.iter_mut().enumerate().take(rows) {
            st[..cols].copy_from_slice(&c[(i0 + i) * ldc + j0..][..cols]);
        }
    }
    let mut res = [[0f32; NR]; MR];
    if E == RESIDUAL && last {
        for (i, st) in res.iter_mut().enumerate().take(rows) {
            st[..cols].copy_from_slice(&r[(i0 + i) * ldr + j0..][..cols]);
        }
    }
    // SAFETY: `stage` and `res` are MR x NR; `a`/`b` as stated above.
    unsafe {
        init_full::<S, E>(acc, stage.as_ptr().cast(), NR, bias, first);
        kernel::<S>(kc, a, lda, b, acc);
        store_full::<S, E>(
            acc,
            stage.as_mut_ptr().cast(),
            NR,
            res.as_ptr().cast(),
            NR,
            last,
        );
    }
    for (i, st) in stage.iter().enumerate().take(rows) {
        c[(i0 + i) * ldc + j0..][..cols].copy_from_slice(&st[..cols]);
    }
}

/// A plain `C = A B` reference for tests.
#[cfg(test)]
pub(crate) fn gemm_reference(
    m: usize,
    a: &[f32],
    b: &PackedB,
    wb: impl Fn(usize, usize) -> f32,
) -> Vec<f32> {
    let (k, n) = (b.k, b.n);
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = b.bias[j] as f64;
            for kk in 0..k {
                s += a[i * k + kk] as f64 * wb(kk, j) as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(isa: Isa, m: usize, k: usize, n: usize) {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let w = |kk: usize, j: usize| ((kk * 31 + j * 17) % 23) as f32 / 11.0 - 1.0;
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01).collect();
        let b = PackedB::from_fn(k, n, w, Some(&bias));
        let want = gemm_reference(m, &a, &b, w);
        let tol = |x: f32| 1e-5 * (k as f32).sqrt() * (1.0 + x.abs());
        // Store.
        let mut c = vec![f32::NAN; m * n];
        gemm(isa, m, &a, k, &b, &mut c, n, Epi::Store);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() <= tol(*y), "{isa:?} {m}x{k}x{n}: {x} vs {y}");
        }
        // Accum onto ones, with a wider C.
        let ldc = n + 3;
        let mut c = vec![1f32; m * ldc];
        gemm(isa, m, &a, k, &b, &mut c, ldc, Epi::Accum);
        for i in 0..m {
            for j in 0..n {
                let (x, y) = (c[i * ldc + j], want[i * n + j] + 1.0);
                assert!((x - y).abs() <= tol(y), "accum {m}x{k}x{n}: {x} vs {y}");
            }
            assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == 1.0));
        }
        // Residual relu.
        let r: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.5).collect();
        let mut c = vec![0f32; m * n];
        gemm(
            isa,
            m,
            &a,
            k,
            &b,
            &mut c,
            n,
            Epi::ResidualRelu { r: &r, ldr: n },
        );
        for ((x, y), rv) in c.iter().zip(&want).zip(&r) {
            let y = rv + y.max(0.0);
            assert!((x - y).abs() <= tol(y), "residual {m}x{k}x{n}: {x} vs {y}");
        }
    }

    #[test]
    fn matches_the_reference_on_odd_shapes() {
        for isa in [Isa::Portable, Isa::detect()] {
            for &(m, k, n) in &[
                (1, 1, 1),
                (5, 3, 17),
                (6, 32, 16),
                (13, 64, 96),
                (37, 300, 40),
                (7, 513, 33),
            ] {
                check(isa, m, k, n);
            }
        }
    }

    #[test]
    fn a_row_does_not_depend_on_its_position() {
        let (k, n) = (70, 37);
        let w = |kk: usize, j: usize| ((kk * 13 + j * 5) % 19) as f32 / 7.0 - 1.3;
        let b = PackedB::from_fn(k, n, w, None);
        let row: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
        for isa in [Isa::Portable, Isa::detect()] {
            let mut alone = vec![0f32; n];
            gemm(isa, 1, &row, k, &b, &mut alone, n, Epi::Store);
            for m in [2, 6, 7, 13] {
                for at in 0..m {
                    let mut a = vec![0.5f32; m * k];
                    a[at * k..(at + 1) * k].copy_from_slice(&row);
                    let mut c = vec![0f32; m * n];
                    gemm(isa, m, &a, k, &b, &mut c, n, Epi::Store);
                    assert_eq!(&c[at * n..(at + 1) * n], &alone[..], "m {m} at {at}");
                }
            }
        }
    }
}
