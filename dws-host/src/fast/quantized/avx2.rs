//! AVX2 versions of the core's quantized kernels, the same bits as its portable ones.
//!
//! Integer sums wrap in both, and wrapping addition does not depend on the
//! order of its terms, so the dot products may be summed in any order
//! (`vpmaddwd` pairs, lane sums, horizontal adds). Every rounding step is
//! the core's own: [`Requant::apply`] on eight lanes (`apply8`), the softmax's
//! exponentials from one table of the same products (`exp_table`), and its
//! `floor(n / sum)` computed in f64 and corrected to the exact integer
//! quotient (`probabilities`). `docs/quantization.md` ("Kernels") has the argument.

use super::super::simd::avx2_fma_available;
use core::arch::x86_64::*;
use dws_core::plan::Reduction;
use dws_core::quant::{sat8, Requant, Requants, EXP_HI, EXP_LO, MAX_T};
use dws_core::quantized::{AttentionQ, Kernels, Portable};
use std::collections::HashMap;
use std::ops::Range;

/// The AVX2 quantized kernels. A value exists only on a CPU with AVX2 and FMA
/// ([`Avx2Q::new`]): the invariant every `unsafe` call below relies on.
/// Holds the scratch of the attention kernel, so one value per thread.
#[derive(Debug)]
pub struct Avx2Q {
    /// The linears' buffers.
    lin: LinearScratch,
    /// One requantized row of `add_requant`.
    row: Vec<i32>,
    /// Key rows by head, channel pair and key: `[heads][pairs][n8][2]`.
    kt: Vec<i16>,
    /// Value rows transposed: `[dv][n8]`.
    vt: Vec<i32>,
    /// One query's scores, then probabilities: `[heads][n8]`.
    s: Vec<i32>,
    /// One query's exponentials: `[heads][n8]`.
    e: Vec<i32>,
    /// One query's channel pairs: `[heads][pairs]`.
    qp: Vec<i32>,
    /// One query's attention sums: `[dv]`.
    av: Vec<i32>,
    /// The softmax's exponentials by argument ([`exp_table`]).
    exp: Vec<i32>,
    /// One query's sums of exponentials: `[heads]`.
    sums: Vec<u64>,
}

impl Avx2Q {
    /// The kernels, if this CPU has AVX2 and FMA.
    pub fn new() -> Option<Self> {
        avx2_fma_available().then(|| Avx2Q {
            lin: LinearScratch::default(),
            row: Vec::new(),
            kt: Vec::new(),
            vt: Vec::new(),
            s: Vec::new(),
            e: Vec::new(),
            qp: Vec::new(),
            av: Vec::new(),
            exp: exp_table(),
            sums: Vec::new(),
        })
    }
}

impl Kernels<i8> for Avx2Q {
    fn linear(
        &mut self,
        w: &[i8],
        b: Option<&[i32]>,
        fin: usize,
        fout: usize,
        x: &[i8],
        rows: usize,
        mut out: impl FnMut(usize, usize, i32),
    ) {
        if !holds(w, fout, fin) || !holds(x, rows, fin) || b.is_some_and(|b| b.len() < fout) {
            // Outside the contract: the portable kernel's index checks report it.
            return Portable.linear(w, b, fin, fout, x, rows, out);
        }
        let epi = |row, o, group, sums| {
            for (j, s) in lanes(sums).iter().enumerate().take(group) {
                out(row, o + j, *s);
            }
        };
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA; the lengths
        // were checked above.
        unsafe { linear_groups(&mut self.lin, w, b, fin, fout, Rows::I8(x), rows, epi) }
    }

    fn linear_q(
        &mut self,
        w: &[i8],
        b: Option<&[i32]>,
        fin: usize,
        fout: usize,
        x: &[i8],
        rows: usize,
        r: Requants<'_>,
        lo: i8,
        y: &mut [i8],
    ) {
        let fits = holds(w, fout, fin)
            && holds(x, rows, fin)
            && holds(y, rows, fout)
            && b.is_none_or(|b| b.len() >= fout)
            && requants_hold(r, fout);
        if !fits {
            return Portable.linear_q(w, b, fin, fout, x, rows, r, lo, y);
        }
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA; the lengths
        // were checked above.
        unsafe { linear8(&mut self.lin, w, b, fin, fout, x, rows, r, lo, y) }
    }

    fn fc_o_residual(
        &mut self,
        w: &[i8],
        b: Option<&[i32]>,
        dim: usize,
        x: &[i8],
        rows: usize,
        r_o: Requant,
        r_fc: Requants<'_>,
        y: &mut [i8],
    ) {
        let fits = holds(w, dim, dim)
            && holds(x, rows, dim)
            && holds(y, rows, dim)
            && b.is_none_or(|b| b.len() >= dim)
            && requants_hold(r_fc, dim);
        if !fits {
            return Portable.fc_o_residual(w, b, dim, x, rows, r_o, r_fc, y);
        }
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA; the lengths
        // were checked above.
        unsafe { fc_o_residual(&mut self.lin, w, b, dim, x, rows, r_o, r_fc, y) }
    }

    fn affine(&mut self, x: &mut [i8], mult: &[i32], off: &[i32], shift: u8) {
        if mult.is_empty() || off.len() < mult.len() || !(1..=62).contains(&shift) {
            return Portable.affine(x, mult, off, shift);
        }
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA; the lengths
        // and the shift were checked above.
        unsafe { affine(x, mult, off, shift) }
    }

    fn attention(
        &mut self,
        qm: &mut [i8],
        km: &[i8],
        vm: &[i8],
        dv: usize,
        heads: usize,
        r: AttentionQ,
        scores: &mut [i32],
        p: &mut [u32],
        av: &mut [i32],
    ) {
        // `n` keys; the queries are the rows of `qm`.
        let n = scores.len();
        let fits = n > 0
            && dv > 0
            && heads > 0
            && dv.is_multiple_of(heads)
            && qm.len().is_multiple_of(dv)
            && holds(km, n, dv)
            && holds(vm, n, dv);
        if !fits {
            return Portable.attention(qm, km, vm, dv, heads, r, scores, p, av);
        }
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA; the shapes
        // were checked above.
        unsafe {
            let lanes8 = heads.is_multiple_of(8) && (1..1 << 20).contains(&n);
            match dv / heads {
                4 if lanes8 => self.attention_heads8::<4>(qm, km, vm, n, dv, r),
                8 if lanes8 => self.attention_heads8::<8>(qm, km, vm, n, dv, r),
                _ => self.attention_avx2(qm, km, vm, n, dv, heads, r),
            }
        }
    }

    fn add_requant(&mut self, acc: &mut [i32], y: &[i8], width: usize, step: usize, r: Requant) {
        let rows = acc.len().checked_div(width).unwrap_or(0);
        let need = (rows.saturating_sub(1))
            .checked_mul(step)
            .and_then(|n| n.checked_add(width));
        if rows == 0 || need.is_none_or(|n| y.len() < n) {
            return Portable.add_requant(acc, y, width, step, r);
        }
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA; `y` holds
        // every row read (checked above).
        unsafe {
            if step == 0 && rows > 1 {
                // One row for all: requantize it once.
                self.row.clear();
                self.row.resize(width, 0);
                add_requant(&mut self.row, &y[..width], r);
                for a in acc.chunks_exact_mut(width) {
                    add_rows(a, &self.row);
                }
            } else {
                for (q, a) in acc.chunks_exact_mut(width).enumerate() {
                    add_requant(a, &y[q * step..q * step + width], r);
                }
            }
        }
    }

    fn requant(&mut self, acc: &[i32], r: Requant, out: &mut [i8]) {
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA.
        unsafe { requant(acc, r, out) }
    }

    fn requant_act(&mut self, x: &[i8], r: Requant, out: &mut [i8]) {
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA.
        unsafe { requant_i8(x, r, out) }
    }

    fn pool(
        &mut self,
        red: Reduction,
        src: &[i8],
        cols: usize,
        rows: Range<usize>,
        cs: Range<usize>,
        r: Requant,
        out: &mut [i8],
    ) {
        let f = out.len();
        let fits = rows.start <= rows.end
            && cs.start <= cs.end
            && cs.end <= cols
            && cols
                .checked_mul(f)
                .and_then(|n| n.checked_mul(rows.end))
                .is_some_and(|n| n <= src.len());
        if !fits {
            return Portable.pool(red, src, cols, rows, cs, r, out);
        }
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA; every
        // `(row * cols + col) * f + c` read is below `rows.end * cols * f`,
        // within `src` (checked above).
        unsafe { pool(red, src, cols, rows, cs, r, out) }
    }
}

/// 16x8: the linear layers' products summed in int32 lanes (exact for up to
/// 512 inputs per output, as the specification allows) and added to the
/// int64 bias; every other kernel, and the requantizations (scalar, per
/// output), are the core's definitions.
impl Kernels<i16> for Avx2Q {
    fn linear(
        &mut self,
        w: &[i8],
        b: Option<&[i64]>,
        fin: usize,
        fout: usize,
        x: &[i16],
        rows: usize,
        mut out: impl FnMut(usize, usize, i64),
    ) {
        let fits = fin <= 512
            && holds(w, fout, fin)
            && holds(x, rows, fin)
            && b.is_none_or(|b| b.len() >= fout);
        if !fits {
            return Portable.linear(w, b, fin, fout, x, rows, out);
        }
        let epi = |row, o, group, sums| {
            for (j, s) in lanes(sums).iter().enumerate().take(group) {
                let bias: i64 = b.map_or(0, |b| b[o + j]);
                out(row, o + j, bias.wrapping_add(*s as i64));
            }
        };
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA; the lengths
        // were checked above.
        unsafe { linear_groups(&mut self.lin, w, None, fin, fout, Rows::I16(x), rows, epi) }
    }
}

/// `Kernels::fc_o_residual`: [`linear_groups`], then the residual sum eight
/// outputs at a time.
///
/// # Safety
/// As [`linear_groups`] with `fin = fout = dim`; `x` and `y` hold `rows * dim` values.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn fc_o_residual(
    scratch: &mut LinearScratch,
    w: &[i8],
    b: Option<&[i32]>,
    dim: usize,
    x: &[i8],
    rows: usize,
    r_o: Requant,
    r_fc: Requants<'_>,
    y: &mut [i8],
) {
    let ro8 = small_requant8(r_o);
    let epi = |row: usize, o: usize, group: usize, sums: __m256i| {
        let rfc8 = requant8_at(r_fc, o, dim);
        let at = row * dim + o;
        let mut res = [0i8; 8];
        if group == 8 {
            // Fixed-size copies compile to one load or store, not memmove calls.
            res.copy_from_slice(&x[at..at + 8]);
        } else {
            res[..group].copy_from_slice(&x[at..at + group]);
        }
        // SAFETY: `res` holds the 8 bytes read.
        let res = _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(res.as_ptr().cast()) });
        let fc = _mm256_max_epi32(sums, _mm256_setzero_si256());
        let v = sat8x8(add_sat(apply8_small(ro8, res), apply8(rfc8, fc)));
        if group == 8 {
            y[at..at + 8].copy_from_slice(&v);
        } else {
            y[at..at + group].copy_from_slice(&v[..group]);
        }
    };
    // SAFETY: this function's contract.
    unsafe { linear_groups(scratch, w, b, dim, dim, Rows::I8(x), rows, epi) }
}

/// `Kernels::affine`, eight features at a time (64-bit products of the
/// even and odd lanes, the offsets sign-extended by a product with 1).
///
/// # Safety
/// AVX2 and FMA; `off` holds at least `mult.len()` values (not 0); `shift` in 1..=62.
#[target_feature(enable = "avx2,fma")]
unsafe fn affine(x: &mut [i8], mult: &[i32], off: &[i32], shift: u8) {
    let f = mult.len();
    let f8 = f / 8 * 8;
    let cnt = _mm_cvtsi32_si128(shift as i32);
    let (lo, hi) = (_mm256_set1_epi64x(-127), _mm256_set1_epi64x(127));
    let one = _mm256_set1_epi32(1);
    let clamp = |v: __m256i| {
        let v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
        _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi))
    };
    for entry in x.chunks_exact_mut(f) {
        for c in (0..f8).step_by(8) {
            // SAFETY: `c + 8 <= f8 <= f`: within `entry`, `mult` and `off`.
            let (xv, m, o) = unsafe {
                (
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64(entry.as_ptr().add(c).cast())),
                    _mm256_loadu_si256(mult.as_ptr().add(c).cast()),
                    _mm256_loadu_si256(off.as_ptr().add(c).cast()),
                )
            };
            let odd = |v| _mm256_srli_epi64(v, 32);
            let even64 = _mm256_add_epi64(_mm256_mul_epi32(xv, m), _mm256_mul_epi32(o, one));
            let odd64 = _mm256_add_epi64(
                _mm256_mul_epi32(odd(xv), odd(m)),
                _mm256_mul_epi32(odd(o), one),
            );
            let (e, od) = (clamp(sra64(even64, cnt)), clamp(sra64(odd64, cnt)));
            let v = _mm256_blend_epi32(e, _mm256_slli_epi64(od, 32), 0b1010_1010);
            entry[c..c + 8].copy_from_slice(&sat8x8(v));
        }
        for ((v, &m), &o) in entry[f8..].iter_mut().zip(&mult[f8..]).zip(&off[f8..]) {
            let y = (*v as i64 * m as i64 + o as i64) >> shift;
            *v = y.clamp(-127, 127) as i8;
        }
    }
}

/// `acc[i] += b[i]` (wrapping) over the shorter slice.
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn add_rows(acc: &mut [i32], b: &[i32]) {
    let n = acc.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, within both slices.
        unsafe {
            let p = acc.as_mut_ptr().add(i).cast::<__m256i>();
            let v = _mm256_loadu_si256(b.as_ptr().add(i).cast());
            _mm256_storeu_si256(p, _mm256_add_epi32(_mm256_loadu_si256(p), v));
        }
        i += 8;
    }
    for (a, v) in acc[i..n].iter_mut().zip(&b[i..n]) {
        *a = a.wrapping_add(*v);
    }
}

/// `Kernels::requant`, eight values at a time.
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn requant(acc: &[i32], r: Requant, out: &mut [i8]) {
    let n = acc.len().min(out.len());
    let r8 = requant8(r);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n <= acc.len()`.
        let a = unsafe { _mm256_loadu_si256(acc.as_ptr().add(i).cast()) };
        out[i..i + 8].copy_from_slice(&sat8x8(apply8(r8, a)));
        i += 8;
    }
    for (o, a) in out[i..n].iter_mut().zip(&acc[i..n]) {
        *o = sat8(r.apply(*a));
    }
}

/// `Kernels::requant_i8`, eight values at a time.
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn requant_i8(x: &[i8], r: Requant, out: &mut [i8]) {
    let n = x.len().min(out.len());
    let r8 = small_requant8(r);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n <= x.len()`.
        let v = _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(x.as_ptr().add(i).cast()) });
        out[i..i + 8].copy_from_slice(&sat8x8(apply8_small(r8, v)));
        i += 8;
    }
    for (o, v) in out[i..n].iter_mut().zip(&x[i..n]) {
        *o = sat8(r.apply(*v as i32));
    }
}

/// `Kernels::pool`, eight channels at a time.
///
/// # Safety
/// AVX2 and FMA; `src` holds `rows.end * cols * out.len()` values, `cs.end <= cols`.
#[target_feature(enable = "avx2,fma")]
unsafe fn pool(
    red: Reduction,
    src: &[i8],
    cols: usize,
    rows: Range<usize>,
    cs: Range<usize>,
    r: Requant,
    out: &mut [i8],
) {
    let f = out.len();
    let (r8, small) = (requant8(r), small_requant8(r));
    let max = red == Reduction::Max;
    let mut c = 0;
    if max && !rows.is_empty() && !cs.is_empty() {
        // The max of int8 values is one of them: 32 channels per `vpmaxsb`,
        // widened once at the end.
        while c + 32 <= f {
            let mut v = _mm256_set1_epi8(i8::MIN);
            for row in rows.clone() {
                for col in cs.clone() {
                    let at = (row * cols + col) * f + c;
                    // SAFETY: `at + 32 <= rows.end * cols * f`.
                    let s = unsafe { _mm256_loadu_si256(src.as_ptr().add(at).cast()) };
                    v = _mm256_max_epi8(v, s);
                }
            }
            let bytes: [[u8; 8]; 4] = bytemuck::cast(v);
            for (k, b) in bytes.iter().enumerate() {
                let w = _mm256_cvtepi8_epi32(_mm_set1_epi64x(i64::from_le_bytes(*b)));
                out[c + 8 * k..c + 8 * k + 8].copy_from_slice(&sat8x8(apply8_small(small, w)));
            }
            c += 32;
        }
    }
    while c + 8 <= f {
        let mut v = _mm256_set1_epi32(if max { i32::MIN } else { 0 });
        for row in rows.clone() {
            for col in cs.clone() {
                // SAFETY: `(row * cols + col) * f + c + 8 <= rows.end * cols * f`.
                let s = unsafe {
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                        src.as_ptr().add((row * cols + col) * f + c).cast(),
                    ))
                };
                v = if max {
                    _mm256_max_epi32(v, s)
                } else {
                    _mm256_add_epi32(v, s)
                };
            }
        }
        out[c..c + 8].copy_from_slice(&sat8x8(apply8(r8, v)));
        c += 8;
    }
    // The last channels one at a time.
    for (c, o) in out.iter_mut().enumerate().skip(c) {
        let mut v = if max { i32::MIN } else { 0 };
        for row in rows.clone() {
            for col in cs.clone() {
                let s = src[(row * cols + col) * f + c] as i32;
                v = if max { v.max(s) } else { v + s };
            }
        }
        *o = sat8(r.apply(v));
    }
}

/// Whether `v` holds a `[rows, cols]` matrix (without overflow).
fn holds<T>(v: &[T], rows: usize, cols: usize) -> bool {
    rows.checked_mul(cols).is_some_and(|n| v.len() >= n)
}

/// [`Requant`]s of eight lanes (with one shift), for [`apply8`].
#[derive(Clone, Copy)]
struct Requant8 {
    /// The mantissas of the lanes.
    m: __m256i,
    /// The mantissas of the odd lanes in the even ones.
    m_odd: __m256i,
    round: __m256i,
    shift: i32,
}

#[target_feature(enable = "avx2,fma")]
fn requant8(r: Requant) -> Requant8 {
    let m = _mm256_set1_epi32(r.m);
    Requant8 {
        m,
        m_odd: m,
        round: _mm256_set1_epi64x(1i64 << (r.shift.clamp(1, 63) - 1)),
        shift: r.shift as i32,
    }
}

/// The requantizations of outputs `o .. o + 8` (lanes from `fout` on repeat
/// the last output's).
#[target_feature(enable = "avx2,fma")]
fn requant8_at(r: Requants<'_>, o: usize, fout: usize) -> Requant8 {
    match r {
        Requants::One(r) => requant8(r),
        Requants::Channel { m, shift } => {
            let ms: [i32; 8] = std::array::from_fn(|j| m[(o + j).min(fout - 1)]);
            let m = _mm256_setr_epi32(ms[0], ms[1], ms[2], ms[3], ms[4], ms[5], ms[6], ms[7]);
            Requant8 {
                m,
                m_odd: _mm256_srli_epi64(m, 32),
                round: _mm256_set1_epi64x(1i64 << (shift.clamp(1, 63) - 1)),
                shift: shift as i32,
            }
        }
    }
}

/// Whether `r` has a requantization for each of `fout` outputs.
fn requants_hold(r: Requants<'_>, fout: usize) -> bool {
    match r {
        Requants::One(_) => true,
        Requants::Channel { m, .. } => m.len() >= fout,
    }
}

/// [`Requant::apply`] on eight lanes: the 64-bit products of the even and odd
/// lanes (`vpmuldq`), rounded and shifted like the scalar code.
#[target_feature(enable = "avx2,fma")]
fn apply8(r: Requant8, x: __m256i) -> __m256i {
    let even = _mm256_add_epi64(_mm256_mul_epi32(x, r.m), r.round);
    let odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), r.m_odd), r.round);
    if r.shift >= 32 {
        // The high words, shifted as int32 (no clamp needed, as in the scalar code).
        let hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0b1010_1010);
        _mm256_sra_epi32(hi, _mm_cvtsi32_si128(r.shift - 32))
    } else {
        let cnt = _mm_cvtsi32_si128(r.shift);
        let (e, o) = (clamp_i32(sra64(even, cnt)), clamp_i32(sra64(odd, cnt)));
        _mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0b1010_1010)
    }
}

/// [`Requant`] for [`apply8_small`].
#[derive(Clone, Copy)]
enum SmallRequant8 {
    /// `m = mh 2^16 + ml` (`ml` in `0..2^16`), `round = 2^(shift - 17)`,
    /// `cnt = shift - 16`.
    Split {
        mh: __m256i,
        ml: __m256i,
        round: __m256i,
        cnt: __m128i,
    },
    /// Shifts outside `17..=46`.
    Wide(Requant8),
}

#[target_feature(enable = "avx2,fma")]
fn small_requant8(r: Requant) -> SmallRequant8 {
    if (17..=46).contains(&r.shift) {
        SmallRequant8::Split {
            mh: _mm256_set1_epi32(r.m >> 16),
            ml: _mm256_set1_epi32(r.m & 0xffff),
            round: _mm256_set1_epi32(1 << (r.shift - 17)),
            cnt: _mm_cvtsi32_si128(r.shift as i32 - 16),
        }
    } else {
        SmallRequant8::Wide(requant8(r))
    }
}

/// [`Requant::apply`] on eight lanes below 2^15 in magnitude (int8 values),
/// in 32-bit arithmetic: with `c = floor(x ml / 2^16)`,
/// `x m + 2^(s-1) = (x mh + c + 2^(s-17)) 2^16 + (x ml mod 2^16)`, so
/// `apply(x) = (x mh + c + 2^(s-17)) >> (s - 16)` exactly for `17 <= s <= 46`.
/// The terms are below 2^30, 2^15 and 2^29 in magnitude, so their sum fits in
/// 32 bits, and the result needs no saturation.
#[target_feature(enable = "avx2,fma")]
fn apply8_small(r: SmallRequant8, x: __m256i) -> __m256i {
    match r {
        SmallRequant8::Split { mh, ml, round, cnt } => {
            let c = _mm256_srai_epi32(_mm256_mullo_epi32(x, ml), 16);
            let sum = _mm256_add_epi32(_mm256_mullo_epi32(x, mh), c);
            _mm256_sra_epi32(_mm256_add_epi32(sum, round), cnt)
        }
        SmallRequant8::Wide(r) => apply8(r, x),
    }
}

/// Arithmetic right shift of 64-bit lanes (AVX2 has only the logical one).
#[target_feature(enable = "avx2,fma")]
fn sra64(v: __m256i, cnt: __m128i) -> __m256i {
    let sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
    _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(v, sign), cnt), sign)
}

/// 64-bit lanes saturated to the int32 range.
#[target_feature(enable = "avx2,fma")]
fn clamp_i32(v: __m256i) -> __m256i {
    let lo = _mm256_set1_epi64x(i32::MIN as i64);
    let hi = _mm256_set1_epi64x(i32::MAX as i64);
    let v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
    _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi))
}

/// Lane `j` is the (wrapping) sum of the lanes of `a[j]`.
#[target_feature(enable = "avx2,fma")]
fn reduce8(a: [__m256i; 8]) -> __m256i {
    let s01 = _mm256_hadd_epi32(a[0], a[1]);
    let s23 = _mm256_hadd_epi32(a[2], a[3]);
    let s45 = _mm256_hadd_epi32(a[4], a[5]);
    let s67 = _mm256_hadd_epi32(a[6], a[7]);
    let t0 = _mm256_hadd_epi32(s01, s23);
    let t1 = _mm256_hadd_epi32(s45, s67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(t0, t1, 0x20),
        _mm256_permute2x128_si256(t0, t1, 0x31),
    )
}

fn lanes(v: __m256i) -> [i32; 8] {
    bytemuck::cast(v)
}

/// The accumulators of `Kernels::linear`: for every row and group of up to
/// eight outputs from `o`, `epi(row, o, group, sums)` with the sums (bias
/// included) in the group's first lanes. [`linear_blocks`] per group.
///
/// # Safety
/// As [`linear_blocks`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn linear_groups(
    scratch: &mut LinearScratch,
    w: &[i8],
    b: Option<&[i32]>,
    fin: usize,
    fout: usize,
    x: Rows<'_>,
    rows: usize,
    mut epi: impl FnMut(usize, usize, usize, __m256i),
) {
    let emit = |r0: usize, o: usize, acc: &[[__m256i; 2]]| {
        for (r, acc) in acc.iter().enumerate() {
            for (h, a) in acc.iter().enumerate() {
                let oo = o + 8 * h;
                if oo < fout {
                    epi(r0 + r, oo, (fout - oo).min(8), *a);
                }
            }
        }
    };
    // SAFETY: this function's contract.
    unsafe { linear_blocks(scratch, w, b, fin, fout, x, rows, emit) }
}

/// The accumulators of `Kernels::linear` by register block: for rows
/// `r0 .. r0 + MR` (`MR <= 4`) and outputs `o .. o + 16`, `emit(r0, o, acc)`
/// with `acc[r][h]` the sums (bias included) of outputs `o + 8h .. o + 8h + 8`
/// of row `r0 + r` (outputs from `fout` on are padding: zero weights, no bias).
///
/// A register-blocked GEMM: the weights are packed once per thread (kept
/// while they are unchanged) as input pairs by output (`[fin / 2][n16][2]`,
/// int16) and as input quads (`[fin / 4][n16][4]`, int8). Rows of
/// non-negative values (after a ReLU: most inputs) take the
/// unsigned-by-signed byte products of [`block_u8`], read in place when `fin`
/// is a multiple of 4 (else copied, zero-padded); other rows are widened to
/// int16 once per call for [`block`]. Each step multiplies broadcast inputs
/// of up to four rows with the weights of sixteen outputs, so the sums land
/// in output order with no horizontal adds.
///
/// # Safety
/// AVX2 and FMA; `w` holds `fout * fin`, `x` `rows * fin`, `b` (if any) `fout` values.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn linear_blocks(
    scratch: &mut LinearScratch,
    w: &[i8],
    b: Option<&[i32]>,
    fin: usize,
    fout: usize,
    x: Rows<'_>,
    rows: usize,
    mut emit: impl FnMut(usize, usize, &[[__m256i; 2]]),
) {
    let (kp, kq, n16) = (fin.div_ceil(2), fin.div_ceil(4), fout.next_multiple_of(16));
    let LinearScratch { xs, xb, packed } = scratch;
    let w = &w[..fout * fin];
    // The packed weights of the last call with these weights, or packed now.
    let key = (w.as_ptr() as usize, fin, fout);
    if packed.len() >= 4096 && !packed.contains_key(&key) {
        // More weight sets than any model has: start over rather than grow.
        packed.clear();
    }
    let entry = packed.entry(key).or_default();
    if entry.copy != w {
        entry.copy = w.to_vec();
        entry.pairs = vec![0; kp * n16 * 2];
        entry.quads = vec![0; kq * n16 * 4];
        for (o, wo) in w.chunks_exact(fin.max(1)).enumerate() {
            for (k, &v) in wo.iter().enumerate() {
                entry.pairs[((k / 2) * n16 + o) * 2 + k % 2] = v as i16;
                entry.quads[((k / 4) * n16 + o) * 4 + k % 4] = v;
            }
        }
    }
    // Rows of non-negative bytes (after a ReLU: most int8 inputs) take the
    // unsigned-by-signed byte products, whose pair sums stay within int16
    // (|2 x 127 x 128| < 2^15), so they are exact. Other rows go as int16
    // pairs (int8 ones widened).
    let k2 = 2 * kp;
    let k4 = 4 * kq;
    let (x, widened) = match x {
        Rows::I8(x) => (&x[..rows * fin], false),
        Rows::I16(x) => {
            xs.clear();
            xs.resize(rows * k2, 0);
            for (xr, xw) in x[..rows * fin]
                .chunks_exact(fin.max(1))
                .zip(xs.chunks_exact_mut(k2.max(1)))
            {
                xw[..fin].copy_from_slice(xr);
            }
            (&[][..], true)
        }
    };
    let unsigned = !widened && x.iter().fold(0, |any, &v| any | v as u8) < 0x80;
    let xu: &[u8] = if !unsigned {
        if !widened {
            xs.clear();
            xs.resize(rows * k2, 0);
            for (xr, xw) in x
                .chunks_exact(fin.max(1))
                .zip(xs.chunks_exact_mut(k2.max(1)))
                .take(rows)
            {
                // SAFETY: AVX2 (this function's contract).
                unsafe { widen(&xr[..fin], xw) };
            }
        }
        &[]
    } else if k4 == fin {
        bytemuck::cast_slice(x)
    } else {
        xb.clear();
        xb.resize(rows * k4, 0);
        for (xr, xw) in x
            .chunks_exact(fin.max(1))
            .zip(xb.chunks_exact_mut(k4.max(1)))
        {
            xw[..fin].copy_from_slice(bytemuck::cast_slice(xr));
        }
        xb
    };
    let (wide, quads) = (&entry.pairs, &entry.quads);
    let mut bias = [0i32; 16];
    for o in (0..fout).step_by(16) {
        bias.fill(0);
        if let Some(b) = b {
            let n = (fout - o).min(16);
            bias[..n].copy_from_slice(&b[o..o + n]);
        }
        let bias: [__m256i; 2] = bytemuck::cast(bias);
        let mut emit = |r0: usize, acc: &mut [[__m256i; 2]]| {
            for a in acc.iter_mut() {
                a[0] = _mm256_add_epi32(a[0], bias[0]);
                a[1] = _mm256_add_epi32(a[1], bias[1]);
            }
            emit(r0, o, acc)
        };
        let mut r0 = 0;
        // SAFETY (every `block` and `block_u8` call): rows `r0 .. r0 + MR <=
        // rows` of `xs` (`k2` values each) or `xu` (`k4` each) and outputs
        // `o .. o + 16 <= n16` of `wide` or `quads`.
        if unsigned {
            while r0 + 4 <= rows {
                emit(r0, &mut unsafe {
                    block_u8::<4>(xu, r0, k4, quads, o, n16, kq)
                });
                r0 += 4;
            }
            match rows - r0 {
                3 => emit(r0, &mut unsafe {
                    block_u8::<3>(xu, r0, k4, quads, o, n16, kq)
                }),
                2 => emit(r0, &mut unsafe {
                    block_u8::<2>(xu, r0, k4, quads, o, n16, kq)
                }),
                1 => emit(r0, &mut unsafe {
                    block_u8::<1>(xu, r0, k4, quads, o, n16, kq)
                }),
                _ => {}
            }
            continue;
        }
        while r0 + 4 <= rows {
            emit(r0, &mut unsafe { block::<4>(xs, r0, k2, wide, o, n16, kp) });
            r0 += 4;
        }
        match rows - r0 {
            3 => emit(r0, &mut unsafe { block::<3>(xs, r0, k2, wide, o, n16, kp) }),
            2 => emit(r0, &mut unsafe { block::<2>(xs, r0, k2, wide, o, n16, kp) }),
            1 => emit(r0, &mut unsafe { block::<1>(xs, r0, k2, wide, o, n16, kp) }),
            _ => {}
        }
    }
}

/// Rows `r0 .. r0 + MR` of `xs` (`[rows][k2]`) times outputs `o .. o + 16` of
/// the packed weights (`[kp][n16][2]`): sixteen int32 sums per row.
///
/// # Safety
/// AVX2 and FMA; `(r0 + MR) * k2 <= xs.len()`, `o + 16 <= n16`, `kp * n16 * 2
/// <= wide.len()`, `2 * kp <= k2`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block<const MR: usize>(
    xs: &[i16],
    r0: usize,
    k2: usize,
    wide: &[i16],
    o: usize,
    n16: usize,
    kp: usize,
) -> [[__m256i; 2]; MR] {
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    let (xp, wp) = (xs.as_ptr(), wide.as_ptr());
    for p in 0..kp {
        // SAFETY: `(p * n16 + o) * 2 + 32 <= kp * n16 * 2` (the contract).
        let (w0, w1) = unsafe {
            let at = wp.add((p * n16 + o) * 2);
            (
                _mm256_loadu_si256(at.cast()),
                _mm256_loadu_si256(at.add(16).cast()),
            )
        };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: `(r0 + r) * k2 + 2p + 2 <= (r0 + MR) * k2` (the contract).
            let pair = unsafe { xp.add((r0 + r) * k2 + 2 * p).cast::<i32>().read_unaligned() };
            let xv = _mm256_set1_epi32(pair);
            a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(xv, w0));
            a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(xv, w1));
        }
    }
    acc
}

/// [`block`] for rows of non-negative bytes: rows `r0 .. r0 + MR` of `xb`
/// (`[rows][k4]`) times outputs `o .. o + 16` of the quad-packed weights
/// (`[kq][n16][4]`). Each step broadcasts four inputs of a row and multiplies
/// them with four weights of eight outputs per vector (`vpmaddubsw`: exact,
/// since the inputs are at most 127), then sums the pairs (`vpmaddwd` by 1).
///
/// # Safety
/// AVX2 and FMA; `(r0 + MR) * k4 <= xb.len()`, `o + 16 <= n16`, `kq * n16 * 4
/// <= quads.len()`, `4 * kq <= k4`. (The sums are exact only if every byte of
/// `xb` is at most 127.)
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block_u8<const MR: usize>(
    xb: &[u8],
    r0: usize,
    k4: usize,
    quads: &[i8],
    o: usize,
    n16: usize,
    kq: usize,
) -> [[__m256i; 2]; MR] {
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    let ones = _mm256_set1_epi16(1);
    let (xp, wp) = (xb.as_ptr(), quads.as_ptr());
    for q in 0..kq {
        // SAFETY: `(q * n16 + o) * 4 + 64 <= kq * n16 * 4` (the contract).
        let (w0, w1) = unsafe {
            let at = wp.add((q * n16 + o) * 4);
            (
                _mm256_loadu_si256(at.cast()),
                _mm256_loadu_si256(at.add(32).cast()),
            )
        };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: `(r0 + r) * k4 + 4q + 4 <= (r0 + MR) * k4` (the contract).
            let quad = unsafe { xp.add((r0 + r) * k4 + 4 * q).cast::<i32>().read_unaligned() };
            let xv = _mm256_set1_epi32(quad);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(xv, w0), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(xv, w1), ones);
            a[0] = _mm256_add_epi32(a[0], p0);
            a[1] = _mm256_add_epi32(a[1], p1);
        }
    }
    acc
}

/// `xs[..x.len()] = x` as int16, the rest of `xs` zero.
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn widen(x: &[i8], xs: &mut [i16]) {
    let n = x.len().min(xs.len());
    let n16 = n / 16 * 16;
    for k in (0..n16).step_by(16) {
        // SAFETY: `k + 16 <= n`, within both slices.
        unsafe {
            let v = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.as_ptr().add(k).cast()));
            _mm256_storeu_si256(xs.as_mut_ptr().add(k).cast(), v);
        }
    }
    for (d, &v) in xs[n16..n].iter_mut().zip(&x[n16..n]) {
        *d = v as i16;
    }
    xs[n..].fill(0);
}

/// The input rows of a linear layer: int8 (int8 mode) or int16 (16x8 mode).
#[derive(Clone, Copy)]
enum Rows<'x> {
    I8(&'x [i8]),
    I16(&'x [i16]),
}

/// A linear layer's weights as [`linear_groups`] uses them.
#[derive(Debug, Default)]
struct Packed {
    /// A copy of the int8 weights: the entry is used only while they match.
    copy: Vec<i8>,
    /// Widened to int16 and packed as input pairs, `[fin / 2][n16][2]`,
    /// zero-padded (for [`block`]).
    pairs: Vec<i16>,
    /// Packed as input quads, `[fin / 4][n16][4]`, zero-padded (for
    /// [`block_u8`]).
    quads: Vec<i8>,
}

/// The buffers of [`linear_groups`].
#[derive(Debug, Default)]
struct LinearScratch {
    /// The input rows widened to int16, each zero-padded to an even length.
    xs: Vec<i16>,
    /// The input rows (all non-negative) as bytes, each zero-padded to a
    /// multiple of 4.
    xb: Vec<u8>,
    /// Packed weights by address and shape.
    packed: HashMap<(usize, usize, usize), Packed>,
}

/// `Kernels::linear_q`: [`linear_blocks`], then the requantization to
/// int8 two rows of sixteen outputs at a time.
///
/// # Safety
/// As [`linear_blocks`]; `y` holds `rows * fout` values.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn linear8(
    scratch: &mut LinearScratch,
    w: &[i8],
    b: Option<&[i32]>,
    fin: usize,
    fout: usize,
    x: &[i8],
    rows: usize,
    r: Requants<'_>,
    lo: i8,
    y: &mut [i8],
) {
    // `sat8(max(v, lo))` is `max(clamp(v, -128, 127), max(lo, -127))`: the
    // saturating packs clamp to -128..=127, `vpmaxsb` does the rest.
    let lo = _mm256_set1_epi8(lo.max(-127));
    // The packs interleave the two rows' quarters; this puts each row's
    // sixteen bytes in order, row `2i` in the low half.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let emit = |r0: usize, o: usize, acc: &[[__m256i; 2]]| {
        let n = (fout - o).min(16);
        let (r0_8, r1_8) = (requant8_at(r, o, fout), requant8_at(r, o + 8, fout));
        for (i, two) in acc.chunks(2).enumerate() {
            let [a, b] = [two[0], two[two.len() - 1]];
            let pa = _mm256_packs_epi32(apply8(r0_8, a[0]), apply8(r1_8, a[1]));
            let pb = _mm256_packs_epi32(apply8(r0_8, b[0]), apply8(r1_8, b[1]));
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(pa, pb), order);
            let out: [[i8; 16]; 2] = bytemuck::cast(_mm256_max_epi8(bytes, lo));
            for (k, row) in out.iter().enumerate().take(two.len()) {
                let at = (r0 + 2 * i + k) * fout + o;
                if n == 16 {
                    // A fixed-size copy (one store), not a call to memmove.
                    y[at..at + 16].copy_from_slice(row);
                } else {
                    y[at..at + n].copy_from_slice(&row[..n]);
                }
            }
        }
    };
    // SAFETY: this function's contract.
    unsafe { linear_blocks(scratch, w, b, fin, fout, Rows::I8(x), rows, emit) }
}

/// `acc[i] += r.apply(y[i])` (wrapping) over the shorter slice, eight values at a time.
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn add_requant(acc: &mut [i32], y: &[i8], r: Requant) {
    let n = acc.len().min(y.len());
    let r8 = small_requant8(r);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, within both slices.
        unsafe {
            let x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(y.as_ptr().add(i).cast()));
            let p = acc.as_mut_ptr().add(i).cast::<__m256i>();
            _mm256_storeu_si256(
                p,
                _mm256_add_epi32(_mm256_loadu_si256(p), apply8_small(r8, x)),
            );
        }
        i += 8;
    }
    for (a, v) in acc[i..n].iter_mut().zip(&y[i..n]) {
        *a = a.wrapping_add(r.apply(*v as i32));
    }
}

impl Avx2Q {
    /// `Kernels::attention` for heads of `W` = 4 or 8 channels (the paper's
    /// default: eight heads of 32 or 64 features), eight heads in the lanes:
    /// per query and group of eight heads (`8 W` channels), one pass over the
    /// keys for the scores (`vpmaddwd` of the widened rows, then `vphaddd`
    /// until each lane holds one head, in the order of [`head_lanes`]), one for
    /// the exponentials, one for the divisions, and one per eight channels for
    /// the value sums, each key's probabilities spread to its heads' channels
    /// by `vpermd`.
    ///
    /// # Safety
    /// AVX2 and FMA; `W` is 4 or 8; `qm` holds rows of `dv` (the queries),
    /// `km` and `vm` at least `n` (the keys); `dv` is a multiple of `8 W`;
    /// `1 <= n < 2^20` (so every sum of exponentials is below 2^50).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn attention_heads8<const W: usize>(
        &mut self,
        qm: &mut [i8],
        km: &[i8],
        vm: &[i8],
        n: usize,
        dv: usize,
        r: AttentionQ,
    ) {
        let Avx2Q {
            kt, s, e, av, exp, ..
        } = self;
        let group = 8 * W;
        // The keys widened to int16, `[n][dv]`.
        kt.clear();
        kt.resize(n * dv, 0);
        for (kr, kw) in km.chunks_exact(dv).zip(kt.chunks_exact_mut(dv)) {
            // SAFETY: AVX2 (this function's contract).
            unsafe { widen(kr, kw) };
        }
        s.resize(8 * n, 0);
        e.resize(8 * n, 0);
        av.resize(dv, 0);
        let score = requant8(r.score);
        // Per vector of eight channels, the lane of each channel's head.
        let lane_of = head_lanes(W);
        let spread: [__m256i; 8] = core::array::from_fn(|g| {
            bytemuck::cast::<[i32; 8], __m256i>(core::array::from_fn(|c| {
                lane_of[(8 * g + c) / W % 8]
            }))
        });
        let mut q16 = [0i16; 64];
        for qi in qm.chunks_exact_mut(dv) {
            for c0 in (0..dv).step_by(group) {
                // SAFETY: AVX2; `group` channels from `c0 + group <= dv`.
                unsafe { widen(&qi[c0..c0 + group], &mut q16[..group]) };
                let qv: [__m256i; 4] = bytemuck::cast(q16);
                // Scores of the eight heads against every key, and their maximum.
                let mut m = _mm256_set1_epi32(i32::MIN);
                for (j, sj) in s.chunks_exact_mut(8).enumerate() {
                    let k = kt[j * dv + c0..j * dv + c0 + group].as_ptr();
                    // SAFETY: each load reads 16 of the `group` values at `k`.
                    let pairs: [__m256i; 4] = core::array::from_fn(|i| {
                        if i < W / 2 {
                            _mm256_madd_epi16(qv[i], unsafe {
                                _mm256_loadu_si256(k.add(16 * i).cast())
                            })
                        } else {
                            _mm256_setzero_si256()
                        }
                    });
                    let v = if W == 4 {
                        _mm256_hadd_epi32(pairs[0], pairs[1])
                    } else {
                        _mm256_hadd_epi32(
                            _mm256_hadd_epi32(pairs[0], pairs[1]),
                            _mm256_hadd_epi32(pairs[2], pairs[3]),
                        )
                    };
                    m = _mm256_max_epi32(m, v);
                    sj.copy_from_slice(&lanes(v));
                }
                // Exponentials (see `exponentials`) and their sums per head.
                let (mut sum_lo, mut sum_hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for (sj, ej) in s.chunks_exact(8).zip(e.chunks_exact_mut(8)) {
                    // SAFETY: `sj` holds 8 values.
                    let z = unsafe { _mm256_loadu_si256(sj.as_ptr().cast()) };
                    // SAFETY: `exp` is the exponential table.
                    let ex = unsafe { exp8(m, z, score, exp) };
                    ej.copy_from_slice(&lanes(ex));
                    let (lo, hi) = (_mm256_castsi256_si128(ex), _mm256_extracti128_si256(ex, 1));
                    sum_lo = _mm256_add_epi64(sum_lo, _mm256_cvtepu32_epi64(lo));
                    sum_hi = _mm256_add_epi64(sum_hi, _mm256_cvtepu32_epi64(hi));
                }
                // Probabilities (see `probabilities`) with a divisor per lane.
                let sums: [u64; 8] = bytemuck::cast([sum_lo, sum_hi]);
                let f = |g: fn(u64) -> f64| -> [__m256d; 2] {
                    bytemuck::cast(sums.map(|x| g(x.max(1))))
                };
                let [s_lo, s_hi] = f(|x| x as f64);
                let [inv_lo, inv_hi] = f(|x| 1.0 / x as f64);
                let [half_lo, half_hi] = f(|x| (x / 2) as f64);
                // The probabilities, in place of the scores.
                for (ej, pj) in e.chunks_exact(8).zip(s.chunks_exact_mut(8)) {
                    // SAFETY: `ej` holds 8 values.
                    let ex = unsafe { _mm256_loadu_si256(ej.as_ptr().cast()) };
                    let p = _mm256_set_m128i(
                        div4(_mm256_extracti128_si256(ex, 1), s_hi, inv_hi, half_hi),
                        div4(_mm256_castsi256_si128(ex), s_lo, inv_lo, half_lo),
                    );
                    pj.copy_from_slice(&lanes(p));
                }
                // The value sums, eight channels (one vector) at a time.
                for (g, spread) in spread.iter().enumerate().take(W) {
                    let mut acc = _mm256_setzero_si256();
                    for (j, pj) in s.chunks_exact(8).enumerate() {
                        let at = j * dv + c0 + 8 * g;
                        // SAFETY: `pj` holds 8 values; `vm` holds `n * dv >= at + 8`.
                        let (p, v) = unsafe {
                            (
                                _mm256_loadu_si256(pj.as_ptr().cast()),
                                _mm_loadl_epi64(vm[at..at + 8].as_ptr().cast()),
                            )
                        };
                        let pg = _mm256_permutevar8x32_epi32(p, *spread);
                        let prod = _mm256_mullo_epi32(pg, _mm256_cvtepi8_epi32(v));
                        acc = _mm256_add_epi32(acc, prod);
                    }
                    av[c0 + 8 * g..c0 + 8 * g + 8].copy_from_slice(&lanes(acc));
                }
            }
            // SAFETY: AVX2 and FMA; `av` holds `dv` values like `qi`.
            unsafe { attention_out(qi, av, r) };
        }
    }

    /// `Kernels::attention` with the keys in lanes: per query, the scores
    /// of every head, eight keys per `vpmaddwd` step; per head the softmax
    /// eight keys at a time; then the value sums per channel and `O`.
    ///
    /// # Safety
    /// AVX2 and FMA; `qm` holds rows of `dv` (the queries), `km` and `vm`
    /// at least `n` (the keys), and `heads` divides `dv`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn attention_avx2(
        &mut self,
        qm: &mut [i8],
        km: &[i8],
        vm: &[i8],
        n: usize,
        dv: usize,
        heads: usize,
        r: AttentionQ,
    ) {
        let width = dv / heads;
        let pairs = width.div_ceil(2);
        let n8 = n.next_multiple_of(8);
        let Avx2Q {
            kt,
            vt,
            s,
            e,
            qp,
            av,
            exp,
            sums,
            ..
        } = self;
        // Keys as int16 channel pairs per head (a head's odd last channel pairs
        // with 0), values transposed; the padding keys are 0.
        kt.clear();
        kt.resize(heads * pairs * n8 * 2, 0);
        for (j, kr) in km.chunks_exact(dv).take(n).enumerate() {
            for h in 0..heads {
                for c in 0..width {
                    kt[((h * pairs + c / 2) * n8 + j) * 2 + c % 2] = kr[h * width + c] as i16;
                }
            }
        }
        vt.clear();
        vt.resize(dv * n8, 0);
        for (j, vr) in vm.chunks_exact(dv).take(n).enumerate() {
            for (c, &v) in vr.iter().enumerate() {
                vt[c * n8 + j] = v as i32;
            }
        }
        s.resize(heads * n8, 0);
        e.resize(heads * n8, 0);
        qp.resize(heads * pairs, 0);
        av.resize(dv, 0);
        let score = requant8(r.score);
        for qi in qm.chunks_exact_mut(dv) {
            for (h, qp) in qp.chunks_exact_mut(pairs).enumerate() {
                let q = &qi[h * width..(h + 1) * width];
                for (p, v) in qp.iter_mut().enumerate() {
                    let lo = q[2 * p] as i16 as u16 as u32;
                    let hi = q.get(2 * p + 1).map_or(0, |&v| v as i16 as u16 as u32);
                    *v = (lo | hi << 16) as i32;
                }
            }
            // Scores of every head: s[h][j] = q_h . k_j.
            for (hp, sh) in s.chunks_exact_mut(n8).enumerate() {
                for jb in (0..n8).step_by(8) {
                    let mut acc = _mm256_setzero_si256();
                    for (p, &q2) in qp[hp * pairs..(hp + 1) * pairs].iter().enumerate() {
                        let at = ((hp * pairs + p) * n8 + jb) * 2;
                        // SAFETY: `at + 16 <= heads * pairs * n8 * 2 = kt.len()`.
                        let k = unsafe { _mm256_loadu_si256(kt.as_ptr().add(at).cast()) };
                        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(k, _mm256_set1_epi32(q2)));
                    }
                    // SAFETY: `jb + 8 <= n8 = sh.len()`.
                    unsafe { _mm256_storeu_si256(sh.as_mut_ptr().add(jb).cast(), acc) };
                }
            }
            // The softmax of every head, probabilities in place of the scores:
            // first every head's exponentials, then every head's divisions, so
            // that the heads' independent work overlaps.
            sums.clear();
            for (sh, eh) in s.chunks_exact_mut(n8).zip(e.chunks_exact_mut(n8)) {
                // SAFETY: AVX2 and FMA; `sh` and `eh` hold `n8 >= n` values.
                sums.push(unsafe { exponentials(sh, eh, n, score, exp) });
            }
            for ((sh, eh), &sum) in s.chunks_exact_mut(n8).zip(e.chunks_exact(n8)).zip(&*sums) {
                // SAFETY: as above.
                unsafe { probabilities(eh, sum, sh) };
            }
            // The value sums: av[c] = sum_j p[head(c)][j] v_j[c].
            for c in (0..dv).step_by(8) {
                let cw = (dv - c).min(8);
                let mut acc = [_mm256_setzero_si256(); 8];
                for (t, a) in acc.iter_mut().enumerate().take(cw) {
                    let ph = &s[(c + t) / width * n8..];
                    for jb in (0..n8).step_by(8) {
                        // SAFETY: `jb + 8 <= n8 <= ph.len()`; `(c + t) * n8 + jb + 8
                        // <= dv * n8 = vt.len()`.
                        let (p, v) = unsafe {
                            (
                                _mm256_loadu_si256(ph.as_ptr().add(jb).cast()),
                                _mm256_loadu_si256(vt.as_ptr().add((c + t) * n8 + jb).cast()),
                            )
                        };
                        *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(p, v));
                    }
                }
                let sums = lanes(reduce8(acc));
                if cw == 8 {
                    // A fixed-size copy: one store, not a memmove call.
                    av[c..c + 8].copy_from_slice(&sums);
                } else {
                    av[c..c + cw].copy_from_slice(&sums[..cw]);
                }
            }
            // SAFETY: AVX2 and FMA; `av` holds `dv` values like `qi`.
            unsafe { attention_out(qi, av, r) };
        }
    }
}

/// Where the scores of [`Avx2Q::attention_heads8`] put each of eight heads
/// of `w` (4 or 8) channels: `vphaddd` of the pair sums of 16 channels each
/// interleaves its operands per 128-bit half.
fn head_lanes(w: usize) -> [i32; 8] {
    if w == 4 {
        [0, 1, 4, 5, 2, 3, 6, 7]
    } else {
        [0, 4, 1, 5, 2, 6, 3, 7]
    }
}

/// `O_i = sat8(o_q(q_i) + o_av(a_i))` in place of the query row `q` (`a` holds
/// as many sums), eight channels at a time.
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn attention_out(q: &mut [i8], a: &[i32], r: AttentionQ) {
    let n = q.len().min(a.len());
    let (o_q, o_av) = (small_requant8(r.o_q), requant8(r.o_av));
    let mut c = 0;
    while c + 8 <= n {
        // SAFETY: `c + 8 <= n`, within both slices.
        let (qv, av) = unsafe {
            (
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(q.as_ptr().add(c).cast())),
                _mm256_loadu_si256(a.as_ptr().add(c).cast()),
            )
        };
        let bytes = sat8x8(add_sat(apply8_small(o_q, qv), apply8(o_av, av)));
        q[c..c + 8].copy_from_slice(&bytes);
        c += 8;
    }
    for (q, a) in q[c..n].iter_mut().zip(&a[c..n]) {
        *q = sat8(r.o_q.apply(*q as i32).saturating_add(r.o_av.apply(*a)));
    }
}

/// `i32::saturating_add` on eight lanes: a wrapped sum whose sign differs from
/// both operands' becomes the bound on the operands' side.
#[target_feature(enable = "avx2,fma")]
fn add_sat(a: __m256i, b: __m256i) -> __m256i {
    let s = _mm256_add_epi32(a, b);
    let over = _mm256_srai_epi32(
        _mm256_and_si256(_mm256_xor_si256(a, s), _mm256_xor_si256(b, s)),
        31,
    );
    let bound = _mm256_xor_si256(_mm256_srai_epi32(a, 31), _mm256_set1_epi32(i32::MAX));
    _mm256_blendv_epi8(s, bound, over)
}

/// `sat8` of eight lanes, as bytes.
#[target_feature(enable = "avx2,fma")]
fn sat8x8(v: __m256i) -> [i8; 8] {
    let v = _mm256_min_epi32(
        _mm256_max_epi32(v, _mm256_set1_epi32(-127)),
        _mm256_set1_epi32(127),
    );
    let v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let b: [i8; 16] = bytemuck::cast(_mm_packs_epi16(v16, v16));
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// The softmax's exponentials of the `n` scores of `s` into `e` (the padding
/// after them: `s[j] = i32::MIN`, `e[j] = 0`), as `softmax_q15` computes them;
/// returns their sum. `exp` is [`exp_table`].
///
/// # Safety
/// AVX2 and FMA; `s` and `e` hold the same multiple of 8 values, at least
/// `n`; `exp` holds `MAX_T + 1` values.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exponentials(
    s: &mut [i32],
    e: &mut [i32],
    n: usize,
    score: Requant8,
    exp: &[i32],
) -> u64 {
    s[n..].fill(i32::MIN);
    let mut m = _mm256_set1_epi32(i32::MIN);
    for jb in (0..s.len()).step_by(8) {
        // SAFETY: `jb + 8 <= s.len()`.
        m = _mm256_max_epi32(m, unsafe { _mm256_loadu_si256(s.as_ptr().add(jb).cast()) });
    }
    // The largest score (0 when there is none, as in `softmax_q15`), in every lane.
    let m = _mm256_max_epi32(m, _mm256_permute2x128_si256(m, m, 1));
    let m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0b01_00_11_10));
    let m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0b10_11_00_01));
    let maxv = if n == 0 { _mm256_setzero_si256() } else { m };
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut sum = _mm256_setzero_si256();
    for jb in (0..s.len()).step_by(8) {
        // SAFETY: `jb + 8 <= s.len() = e.len()`.
        let z = unsafe { _mm256_loadu_si256(s.as_ptr().add(jb).cast()) };
        // SAFETY: `exp` holds `MAX_T + 1` values (this function's contract).
        let mut ex = unsafe { exp8(maxv, z, score, exp) };
        if jb + 8 > n {
            let valid = _mm256_cmpgt_epi32(_mm256_set1_epi32((n - jb.min(n)) as i32), lane);
            ex = _mm256_and_si256(ex, valid);
        }
        // SAFETY: as above.
        unsafe { _mm256_storeu_si256(e.as_mut_ptr().add(jb).cast(), ex) };
        sum = _mm256_add_epi64(sum, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(ex)));
        sum = _mm256_add_epi64(sum, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(ex, 1)));
    }
    let l: [u64; 4] = bytemuck::cast(sum);
    l.iter().sum()
}

/// `softmax_q15`'s exponential of every argument `t` in `0..=MAX_T`,
/// `(EXP_HI[t >> 8] * EXP_LO[t & 255]) >> 16`, so that one gather replaces two
/// lookups and a product.
fn exp_table() -> Vec<i32> {
    (0..=MAX_T as usize)
        .map(|t| ((EXP_HI[t >> 8] as u64 * EXP_LO[t & 255] as u64) >> 16) as i32)
        .collect()
}

/// `p[j] = floor((e[j] * 2^15 + sum / 2) / sum)`, the softmax's exact division,
/// in f64: `q = floor(n * (1 / sum))`, plus one where the exact remainder
/// `n - q * sum` (one `fnmadd`) is still at least `sum`.
///
/// Why that is exact: `n` and `sum` are integers below 2^53 (exact in f64),
/// and the product is within `Q * 2^-52` of the quotient `Q = n / sum`, which
/// is less than `1 / sum` because `n < 2^52`. A quotient that is not an integer
/// is at least `1 / sum` from both neighbouring integers, so its floor comes
/// out right; an integer quotient may come out just below itself, and the
/// remainder test adds the one back. The tests check both cases.
///
/// # Safety
/// AVX2 and FMA; `e` and `p` hold the same multiple of 4 values.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn probabilities(e: &[i32], sum: u64, p: &mut [i32]) {
    let sum = sum.max(1);
    if sum >= 1 << 52 {
        for (p, &e) in p.iter_mut().zip(e) {
            *p = (((e as u64) << 15) + sum / 2).div_euclid(sum) as i32;
        }
        return;
    }
    // SAFETY: this function's contract, and `sum < 2^52`.
    unsafe { probabilities_avx2(e, sum, p) }
}

/// # Safety
/// AVX2 and FMA; `e` and `p` hold the same multiple of 4 values; `sum < 2^52`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn probabilities_avx2(e: &[i32], sum: u64, p: &mut [i32]) {
    let s = _mm256_set1_pd(sum as f64);
    let inv = _mm256_set1_pd(1.0 / sum as f64);
    let half = _mm256_set1_pd((sum / 2) as f64);
    for j in (0..e.len().min(p.len())).step_by(4) {
        // SAFETY: `j + 4 <= len` (a multiple of 4).
        let ev = unsafe { _mm_loadu_si128(e.as_ptr().add(j).cast()) };
        // SAFETY: as above.
        unsafe { _mm_storeu_si128(p.as_mut_ptr().add(j).cast(), div4(ev, s, inv, half)) };
    }
}

/// The division of [`probabilities`] on four lanes, each with its own
/// divisor: `floor((e * 2^15 + half) / s)` for `s` (below 2^52), `inv = 1 / s`
/// and `half = floor(s / 2)` as f64.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn div4(e: __m128i, s: __m256d, inv: __m256d, half: __m256d) -> __m128i {
    let num = _mm256_fmadd_pd(_mm256_cvtepi32_pd(e), _mm256_set1_pd(32768.0), half);
    let q = _mm256_floor_pd(_mm256_mul_pd(num, inv));
    let rem = _mm256_fnmadd_pd(q, s, num);
    let one = _mm256_set1_pd(1.0);
    _mm256_cvttpd_epi32(_mm256_add_pd(
        q,
        _mm256_and_pd(_mm256_cmp_pd(rem, s, _CMP_GE_OQ), one),
    ))
}

/// The softmax's exponential of eight scores `z` against their maximum `m`:
/// `max - z` (in 0..2^32) saturated at `i32::MAX` by an unsigned min, requantized
/// to 1/256 units, clamped to `0..=MAX_T` as `softmax_q15` does, looked up in
/// [`exp_table`].
///
/// # Safety
/// AVX2 and FMA; `exp` holds `MAX_T + 1` values.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp8(m: __m256i, z: __m256i, score: Requant8, exp: &[i32]) -> __m256i {
    let d = _mm256_min_epu32(_mm256_sub_epi32(m, z), _mm256_set1_epi32(i32::MAX));
    let t = _mm256_max_epi32(apply8(score, d), _mm256_setzero_si256());
    let t = _mm256_min_epi32(t, _mm256_set1_epi32(MAX_T as i32));
    // SAFETY: `t` is in `0..=MAX_T`, an index of the table's `MAX_T + 1` entries.
    unsafe { _mm256_i32gather_epi32(exp.as_ptr(), t, 4) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact on the hardest quotients: just below an integer (`n = q * sum -
    /// 1`, which needs `sum = 2t` with `t (2q - 1) = 1 (mod 2^15)`), around
    /// them, and integers (where the correction is needed).
    #[test]
    fn probabilities_are_exact_next_to_integers() {
        if !avx2_fma_available() {
            return;
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let q = next() % (1 << 15) + 1;
            let odd = 2 * q - 1;
            let inv = (1..1u64 << 15)
                .step_by(2)
                .find(|t| (t * odd) % (1 << 15) == 1);
            let inv = inv.expect("odd numbers are invertible mod 2^15");
            // e = (t (2q - 1) - 1) / 2^15 <= 2^30 (an exponential's bound).
            let tmax = ((1u64 << 45) / odd).max(inv + 1);
            let t = inv + (next() % ((tmax - inv) >> 15)) * (1 << 15);
            let sum = 2 * t;
            let e0 = ((t * odd - 1) >> 15) as i32;
            let e: Vec<i32> = (0..8).map(|d| (e0 + d - 4).clamp(0, 1 << 30)).collect();
            let mut p = vec![0; 8];
            // SAFETY: AVX2 and FMA (checked above), 8 values each, sum < 2^52.
            unsafe { probabilities_avx2(&e, sum, &mut p) };
            for (&e, &p) in e.iter().zip(&p) {
                let n = ((e as u64) << 15) + sum / 2;
                assert_eq!(p as u64, n / sum, "e {e} sum {sum}");
            }
            // Exact quotients: e = (2q - 1) k and sum = 2^16 k give n = q sum.
            let k = next() % ((1 << 30) / odd) + 1;
            let (e, sum) = ([(odd * k) as i32; 4], k << 16);
            let mut p = [0; 4];
            // SAFETY: as above.
            unsafe { probabilities_avx2(&e, sum, &mut p) };
            assert_eq!(p, [q as i32; 4], "e {} sum {sum}", e[0]);
        }
    }

    /// `apply8_small` against `Requant::apply` for every int8 value (and
    /// values up to 2^15 in magnitude), every shift and extreme multipliers.
    #[test]
    fn small_requantization_is_exact() {
        if !avx2_fma_available() {
            return;
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ms = vec![
            0,
            1,
            -1,
            0xffff,
            0x10000,
            1 << 30,
            i32::MAX,
            i32::MIN,
            -(1 << 30),
        ];
        ms.extend((0..40).map(|_| next() as i32));
        let mut xs: Vec<i32> = (-128..=127).collect();
        xs.extend([-(1 << 15) + 1, (1 << 15) - 1, 1000, -1000, 32767, -32767]);
        for shift in 1..=62u8 {
            for &m in &ms {
                let r = Requant { m, shift };
                // SAFETY: AVX2 and FMA (checked above).
                let small = unsafe { small_requant8(r) };
                for v in xs.chunks(8) {
                    let mut lanes8 = [0i32; 8];
                    lanes8[..v.len()].copy_from_slice(v);
                    // SAFETY: as above.
                    let got = lanes(unsafe { apply8_small(small, bytemuck::cast(lanes8)) });
                    for (g, &v) in got.iter().zip(&lanes8) {
                        assert_eq!(*g, r.apply(v), "x {v} m {m} shift {shift}");
                    }
                }
            }
        }
    }
}
