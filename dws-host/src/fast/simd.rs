//! Eight-lane f32 vectors: AVX2+FMA where the CPU has them, plain arrays elsewhere.
//!
//! The hot kernels ([`super::gemm`], [`super::attention`]) are written once,
//! generic over [`Simd`], as `#[inline(always)]` functions. Each has two entry
//! points: one compiled with `#[target_feature(enable = "avx2,fma")]`, where the
//! generic body (and the `#[inline(always)]` methods of [`Avx2`]) are inlined and
//! become AVX2 code, and a portable one over [`Portable`]. [`Isa`] picks the entry
//! point at run time; the AVX2 one is taken only after `is_x86_feature_detected!`
//! confirmed both features, which is the invariant every AVX2 `unsafe` block
//! relies on.
//!
//! Both implementations compute every lane with the same sequence of operations,
//! so a value does not depend on which lane or which position in a batch it
//! occupies. They differ from each other (FMA rounds once, the portable `fma`
//! twice), well within the reference suite's tolerance.

/// The instruction set the fast engine's kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust (whatever the compiler makes of it for the build target).
    Portable,
    /// x86-64 AVX2 and FMA; used only when the CPU reports both.
    Avx2Fma,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        if avx2_fma_available() {
            Isa::Avx2Fma
        } else {
            Isa::Portable
        }
    }

    /// `self`, or [`Isa::Portable`] if the CPU lacks it.
    pub fn supported(self) -> Isa {
        match self {
            Isa::Avx2Fma if avx2_fma_available() => Isa::Avx2Fma,
            _ => Isa::Portable,
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2+fma",
        }
    }
}

/// Whether this CPU has AVX2 and FMA (cached by the standard library).
pub fn avx2_fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Eight f32 lanes. Every method is `unsafe`: the AVX2 implementation may only
/// run on a CPU with AVX2 and FMA, and `load`/`store` access 8 floats at a raw
/// pointer, which must be valid for that.
pub(crate) trait Simd: Copy {
    /// The vector.
    type V: Copy;
    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// Loads 8 floats (any alignment).
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores 8 floats (any alignment).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a` as a 4 x 8 matrix (one vector per row) transposed: 8 rows of 4, row-major,
    /// in 4 vectors.
    unsafe fn transpose4(a: [Self::V; 4]) -> [Self::V; 4];
    /// `a` as an 8 x 8 matrix (one vector per row) transposed.
    unsafe fn transpose8(a: [Self::V; 8]) -> [Self::V; 8];
    /// `max(a, b)` (inputs are never NaN here).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` (fused where the hardware has it).
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `2^a` for `a <= 0` (softmax arguments in base 2), relative error below 3e-7.
    unsafe fn exp2(a: Self::V) -> Self::V;
}

/// `2^x` for `x <= 0`: `x = n + f`, `n = round(x)`, `|f| <= 1/2`, `2^f` by a
/// degree-5 polynomial (relative error 1.6e-7, fitted for this range), `2^n`
/// added to the exponent bits. Arguments below -125 give `~2^-125` instead of
/// smaller values: softmax weights that small are zero to f32 anyway next to
/// the maximum's weight of 1.
mod exp2c {
    pub const LO: f32 = -125.0;
    pub const C0: f32 = 1.000_000_1;
    pub const C1: f32 = 0.693_146_94;
    pub const C2: f32 = 0.240_221_2;
    pub const C3: f32 = 0.055_507_13;
    pub const C4: f32 = 0.009_675_541;
    pub const C5: f32 = 0.001_327_647_1;
}

/// Portable lanes: a plain array the compiler may vectorize for the build target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Portable;

#[inline(always)]
fn lanes(f: impl Fn(usize) -> f32) -> [f32; 8] {
    std::array::from_fn(f)
}

/// The scalar `2^x` with the same steps as the AVX2 one.
#[inline(always)]
fn exp2_scalar(x: f32) -> f32 {
    use exp2c::*;
    let x = if x > LO { x } else { LO };
    let n = x.round_ties_even();
    let f = x - n;
    let mut p = C5;
    p = p * f + C4;
    p = p * f + C3;
    p = p * f + C2;
    p = p * f + C1;
    p = p * f + C0;
    f32::from_bits(p.to_bits().wrapping_add(((n as i32) << 23) as u32))
}

impl Simd for Portable {
    type V = [f32; 8];
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees 8 readable floats at `p`.
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        lanes(|i| a[i] + b[i])
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        lanes(|i| a[i] - b[i])
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        lanes(|i| a[i] * b[i])
    }
    #[inline(always)]
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V {
        lanes(|i| a[i] / b[i])
    }
    #[inline(always)]
    unsafe fn transpose4(a: [Self::V; 4]) -> [Self::V; 4] {
        // out[k][j] is element 8k + j of the 8 x 4 transpose: row (8k+j)/4, column (8k+j)%4.
        std::array::from_fn(|k| lanes(|j| a[(8 * k + j) % 4][(8 * k + j) / 4]))
    }
    #[inline(always)]
    unsafe fn transpose8(a: [Self::V; 8]) -> [Self::V; 8] {
        std::array::from_fn(|k| lanes(|j| a[j][k]))
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        lanes(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        lanes(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn exp2(a: Self::V) -> Self::V {
        lanes(|i| exp2_scalar(a[i]))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{exp2c, Simd};
    use std::arch::x86_64::*;

    /// AVX2+FMA lanes. Its methods are only reached from functions compiled with
    /// `#[target_feature(enable = "avx2,fma")]` that run after detection.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Avx2;

    // SAFETY (for every block below): the intrinsics need AVX2/FMA, which the
    // trait's contract guarantees (these methods only run after detection);
    // `load`/`store` additionally rely on the caller's 8 valid floats.
    impl Simd for Avx2 {
        type V = __m256;
        #[inline(always)]
        unsafe fn zero() -> Self::V {
            // SAFETY: AVX is available (see above).
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self::V {
            // SAFETY: AVX is available.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self::V {
            // SAFETY: AVX is available; the caller guarantees 8 readable floats.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self::V) {
            // SAFETY: AVX is available; the caller guarantees 8 writable floats.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: AVX is available.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: AVX is available.
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: AVX is available.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: AVX is available.
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn transpose4(a: [Self::V; 4]) -> [Self::V; 4] {
            // SAFETY: AVX is available. Pairs, then quads within 128-bit halves,
            // then the halves.
            unsafe {
                let t0 = _mm256_unpacklo_ps(a[0], a[1]);
                let t1 = _mm256_unpackhi_ps(a[0], a[1]);
                let t2 = _mm256_unpacklo_ps(a[2], a[3]);
                let t3 = _mm256_unpackhi_ps(a[2], a[3]);
                // Columns 0|4, 1|5, 2|6, 3|7 of the input, four rows each.
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                [
                    _mm256_permute2f128_ps::<0x20>(u0, u1),
                    _mm256_permute2f128_ps::<0x20>(u2, u3),
                    _mm256_permute2f128_ps::<0x31>(u0, u1),
                    _mm256_permute2f128_ps::<0x31>(u2, u3),
                ]
            }
        }
        #[inline(always)]
        unsafe fn transpose8(a: [Self::V; 8]) -> [Self::V; 8] {
            // SAFETY: AVX is available. The 4 x 8 transposes of rows 0..4 and 4..8,
            // then their halves interleaved.
            unsafe {
                let quads = |a0, a1, a2, a3| {
                    let t0 = _mm256_unpacklo_ps(a0, a1);
                    let t1 = _mm256_unpackhi_ps(a0, a1);
                    let t2 = _mm256_unpacklo_ps(a2, a3);
                    let t3 = _mm256_unpackhi_ps(a2, a3);
                    [
                        _mm256_shuffle_ps::<0x44>(t0, t2),
                        _mm256_shuffle_ps::<0xEE>(t0, t2),
                        _mm256_shuffle_ps::<0x44>(t1, t3),
                        _mm256_shuffle_ps::<0xEE>(t1, t3),
                    ]
                };
                let lo = quads(a[0], a[1], a[2], a[3]);
                let hi = quads(a[4], a[5], a[6], a[7]);
                [
                    _mm256_permute2f128_ps::<0x20>(lo[0], hi[0]),
                    _mm256_permute2f128_ps::<0x20>(lo[1], hi[1]),
                    _mm256_permute2f128_ps::<0x20>(lo[2], hi[2]),
                    _mm256_permute2f128_ps::<0x20>(lo[3], hi[3]),
                    _mm256_permute2f128_ps::<0x31>(lo[0], hi[0]),
                    _mm256_permute2f128_ps::<0x31>(lo[1], hi[1]),
                    _mm256_permute2f128_ps::<0x31>(lo[2], hi[2]),
                    _mm256_permute2f128_ps::<0x31>(lo[3], hi[3]),
                ]
            }
        }
        #[inline(always)]
        unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: AVX is available.
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            // SAFETY: FMA is available.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn exp2(a: Self::V) -> Self::V {
            use exp2c::*;
            // SAFETY: AVX2 and FMA are available. The same steps as `exp2_scalar`,
            // with the polynomial's multiply-adds fused.
            unsafe {
                let x = _mm256_max_ps(a, _mm256_set1_ps(LO));
                let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                let f = _mm256_sub_ps(x, n);
                let mut p = _mm256_set1_ps(C5);
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C4));
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C3));
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C2));
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C1));
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C0));
                let e = _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(n));
                _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_agree_with_the_portable_ones() {
        // SAFETY: `Portable` needs no CPU feature; arrays hold 8 floats per vector.
        let (t4, t8) = unsafe {
            let a: [[f32; 8]; 8] =
                std::array::from_fn(|r| std::array::from_fn(|c| (r * 8 + c) as f32));
            let t4 = Portable::transpose4([a[0], a[1], a[2], a[3]]);
            (t4, Portable::transpose8(a))
        };
        // 4 x 8 -> 8 x 4 row-major: element (row l, column c) = input (c, l).
        for l in 0..8 {
            for c in 0..4 {
                assert_eq!(t4[(l * 4 + c) / 8][(l * 4 + c) % 8], (c * 8 + l) as f32);
            }
        }
        for (l, row) in t8.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert_eq!(*v, (c * 8 + l) as f32);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if avx2_fma_available() {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn both(a: &[[f32; 8]; 8]) -> ([[f32; 8]; 4], [[f32; 8]; 8]) {
                // SAFETY: called after detection; every array holds 8 floats per row.
                unsafe {
                    let v: [_; 8] = std::array::from_fn(|r| Avx2::load(a[r].as_ptr()));
                    let mut o4 = [[0f32; 8]; 4];
                    let mut o8 = [[0f32; 8]; 8];
                    for (o, x) in o4
                        .iter_mut()
                        .zip(Avx2::transpose4([v[0], v[1], v[2], v[3]]))
                    {
                        Avx2::store(o.as_mut_ptr(), x);
                    }
                    for (o, x) in o8.iter_mut().zip(Avx2::transpose8(v)) {
                        Avx2::store(o.as_mut_ptr(), x);
                    }
                    (o4, o8)
                }
            }
            let a: [[f32; 8]; 8] =
                std::array::from_fn(|r| std::array::from_fn(|c| (r * 8 + c) as f32));
            // SAFETY: AVX2 and FMA were detected just above.
            let (o4, o8) = unsafe { both(&a) };
            assert_eq!(o4, t4);
            assert_eq!(o8, t8);
        }
    }

    #[test]
    fn exp2_is_accurate_on_softmax_arguments() {
        let check = |x: f32, got: f32| {
            let want = (x as f64).exp2();
            let rel = ((got as f64 - want) / want).abs();
            assert!(
                rel < 3e-7,
                "2^{x} = {got}, want {want} (relative error {rel:e})"
            );
        };
        for i in 0..=125_000 {
            let x = (-(i as f32) * 0.001).max(-125.0);
            check(x, exp2_scalar(x));
        }
        #[cfg(target_arch = "x86_64")]
        if avx2_fma_available() {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn exp8(x: &[f32; 8]) -> [f32; 8] {
                let mut out = [0f32; 8];
                // SAFETY: called only after detection; both arrays hold 8 floats.
                unsafe { Avx2::store(out.as_mut_ptr(), Avx2::exp2(Avx2::load(x.as_ptr()))) };
                out
            }
            for i in 0..15_625 {
                let x: [f32; 8] =
                    std::array::from_fn(|l| (-((i * 8 + l) as f32) * 0.001).max(-125.0));
                // SAFETY: AVX2 and FMA were detected just above.
                let got = unsafe { exp8(&x) };
                for (g, v) in got.iter().zip(&x) {
                    check(*v, *g);
                }
            }
        }
    }
}
