//! The two activation types of the quantized modes and their dot products.
//!
//! int8 mode stores activations as `i8` and accumulates products with the
//! int8 weights in wrapping `i32`; 16x8 mode stores `i16` activations and
//! accumulates exactly in `i64` (`docs/quantization.md`).

use crate::blob::Precision;
use crate::quant::softmax::Score;
use crate::quant::{sat16, sat8, Requant};

/// An accumulator of products: `i32` in int8 mode, `i64` in 16x8 mode.
pub trait Accum: Score + bytemuck::Pod {
    /// `r` applied to the accumulator ([`Requant::apply`] / [`Requant::apply_wide`]).
    fn requant(self, r: Requant) -> i32;
    /// `max(self, 0)`.
    fn relu(self) -> Self;
    /// The nearest f32 (the logits).
    fn to_f32(self) -> f32;
}

impl Accum for i32 {
    #[inline(always)]
    fn requant(self, r: Requant) -> i32 {
        r.apply(self)
    }
    #[inline(always)]
    fn relu(self) -> Self {
        self.max(0)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl Accum for i64 {
    #[inline(always)]
    fn requant(self, r: Requant) -> i32 {
        r.apply_wide(self)
    }
    #[inline(always)]
    fn relu(self) -> Self {
        self.max(0)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// An activation type: `i8` (int8 mode) or `i16` (16x8 mode).
///
/// Values are symmetric, `-MAX..=MAX`; every kernel and the executor are
/// written once over this trait.
pub trait Act: bytemuck::Pod + Ord + Default + Send + Sync + core::fmt::Debug {
    /// The largest magnitude: 127 or 32767.
    const MAX: i32;
    /// The blob precision that uses these activations.
    const PRECISION: Precision;
    /// Accumulator of products with int8 weights, and of scores.
    type Acc: Accum;
    /// A bias or folded batch-norm offset as stored: `i32` or `i64`.
    type Wide: bytemuck::Pod + Send + Sync;
    /// Saturates to `-MAX..=MAX`.
    fn sat(v: i32) -> Self;
    /// The value.
    fn get(self) -> i32;
    /// A stored bias as an accumulator.
    fn wide(b: Self::Wide) -> Self::Acc;
    /// A stored offset in 64 bits.
    fn wide64(b: Self::Wide) -> i64;
    /// `acc + sum_i x[i] w[i]` over the shorter slice.
    fn dot(w: &[i8], x: &[Self], acc: Self::Acc) -> Self::Acc;
    /// Two outputs over one input row: `(dot(w0, x, b0), dot(w1, x, b1))`.
    #[inline(always)]
    fn dot2(
        w0: &[i8],
        w1: &[i8],
        x: &[Self],
        b0: Self::Acc,
        b1: Self::Acc,
    ) -> (Self::Acc, Self::Acc) {
        (Self::dot(w0, x, b0), Self::dot(w1, x, b1))
    }
    /// `sum_i a[i] b[i]` of two activation rows (attention scores).
    fn dot_act(a: &[Self], b: &[Self]) -> Self::Acc;
}

impl Act for i8 {
    const MAX: i32 = 127;
    const PRECISION: Precision = Precision::Int8;
    type Acc = i32;
    type Wide = i32;
    #[inline(always)]
    fn sat(v: i32) -> Self {
        sat8(v)
    }
    #[inline(always)]
    fn get(self) -> i32 {
        self as i32
    }
    #[inline(always)]
    fn wide(b: i32) -> i32 {
        b
    }
    #[inline(always)]
    fn wide64(b: i32) -> i64 {
        b as i64
    }
    #[inline(always)]
    fn dot(w: &[i8], x: &[i8], acc: i32) -> i32 {
        dot_acc(w, x, acc)
    }
    #[inline(always)]
    fn dot2(w0: &[i8], w1: &[i8], x: &[i8], b0: i32, b1: i32) -> (i32, i32) {
        dot_acc2(w0, w1, x, b0, b1)
    }
    #[inline(always)]
    fn dot_act(a: &[i8], b: &[i8]) -> i32 {
        dot_acc(a, b, 0)
    }
}

impl Act for i16 {
    const MAX: i32 = 32767;
    const PRECISION: Precision = Precision::Int16x8;
    type Acc = i64;
    type Wide = i64;
    #[inline(always)]
    fn sat(v: i32) -> Self {
        sat16(v)
    }
    #[inline(always)]
    fn get(self) -> i32 {
        self as i32
    }
    #[inline(always)]
    fn wide(b: i64) -> i64 {
        b
    }
    #[inline(always)]
    fn wide64(b: i64) -> i64 {
        b
    }
    /// Exact: partial sums of up to 512 products (each at most `32767 * 127`
    /// in magnitude for the values a valid plan produces) fit in `i32`, and
    /// are added in `i64` (wrapping, so that no blob can make it panic).
    #[inline(always)]
    fn dot(w: &[i8], x: &[i16], acc: i64) -> i64 {
        let mut acc = acc;
        for (wc, xc) in w.chunks(512).zip(x.chunks(512)) {
            let mut part = 0i32;
            for (a, b) in xc.iter().zip(wc) {
                part = part.wrapping_add(*a as i32 * *b as i32);
            }
            acc = acc.wrapping_add(part as i64);
        }
        acc
    }
    #[inline(always)]
    fn dot_act(a: &[i16], b: &[i16]) -> i64 {
        a.iter()
            .zip(b)
            .fold(0i64, |acc, (x, y)| acc + (*x as i32 * *y as i32) as i64)
    }
}

/// `bias + sum_i x[i] * w[i]` in int32 (wrapping; over the shorter slice).
#[inline(always)]
pub fn dot_acc(w: &[i8], x: &[i8], bias: i32) -> i32 {
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    {
        dsp::dot_acc(w, x, bias)
    }
    #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
    {
        let mut acc = bias;
        for (a, b) in x.iter().zip(w) {
            // Wrapping: a blob may hold any int32 bias; overflow must not panic.
            acc = acc.wrapping_add(*a as i32 * *b as i32);
        }
        acc
    }
}

/// Two outputs over one input row: `(dot_acc(w0, x, b0), dot_acc(w1, x, b1))`.
#[inline(always)]
fn dot_acc2(w0: &[i8], w1: &[i8], x: &[i8], b0: i32, b1: i32) -> (i32, i32) {
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    {
        dsp::dot_acc2(w0, w1, x, b0, b1)
    }
    #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
    {
        (dot_acc(w0, x, b0), dot_acc(w1, x, b1))
    }
}

/// The int8 dot products with the Armv7E-M DSP extension (Cortex-M4, M7, M33
/// with DSP; feature `dsp`): four int8 products per word with `SXTB16` and
/// the dual 16-bit multiply-accumulate `SMLAD`, as CMSIS-NN does. Integer sums
/// wrap like the portable code, so the results are the same bits.
#[cfg(all(feature = "dsp", target_arch = "arm"))]
mod dsp {
    /// `acc + x0 w0 + x1 w1 + x2 w2 + x3 w3` (wrapping) for the int8 lanes of
    /// two little-endian words.
    #[inline(always)]
    #[allow(unsafe_code)]
    fn mac4(acc: i32, x: u32, w: u32) -> i32 {
        let out: i32;
        // SAFETY: register arithmetic only (`nomem`, `nostack`): SXTB16
        // sign-extends bytes 0, 2 (then, rotated, 1, 3) into 16-bit lanes and
        // SMLAD adds both lane products to the accumulator; the scratch
        // registers are declared outputs, and the only other state written is
        // the sticky Q flag (flags are not declared preserved). Both
        // instructions exist on every target this module compiles for (feature
        // `dsp`: the caller enables it for DSP-capable Arm cores only).
        unsafe {
            core::arch::asm!(
                "sxtb16 {xe}, {x}",
                "sxtb16 {we}, {w}",
                "smlad {acc}, {xe}, {we}, {acc}",
                "sxtb16 {xe}, {x}, ror #8",
                "sxtb16 {we}, {w}, ror #8",
                "smlad {acc}, {xe}, {we}, {acc}",
                acc = inout(reg) acc => out,
                x = in(reg) x,
                w = in(reg) w,
                xe = out(reg) _,
                we = out(reg) _,
                options(pure, nomem, nostack),
            );
        }
        out
    }

    /// The first `n` values (`n` rounded down to a multiple of 4) as words
    /// of four (any alignment), and the rest.
    #[inline(always)]
    fn words(v: &[i8], n: usize) -> (&[[u8; 4]], &[i8]) {
        let (head, tail) = v[..n].split_at(n & !3);
        (bytemuck::cast_slice(head), tail)
    }

    /// `super::dot_acc`.
    #[inline(always)]
    pub fn dot_acc(w: &[i8], x: &[i8], bias: i32) -> i32 {
        let n = x.len().min(w.len());
        let ((xs, xt), (ws, wt)) = (words(x, n), words(w, n));
        let mut acc = bias;
        for (a, b) in xs.iter().zip(ws) {
            acc = mac4(acc, u32::from_le_bytes(*a), u32::from_le_bytes(*b));
        }
        for (a, b) in xt.iter().zip(wt) {
            acc = acc.wrapping_add(*a as i32 * *b as i32);
        }
        acc
    }

    /// `super::dot_acc2`: each input word is loaded once for both outputs.
    #[inline(always)]
    pub fn dot_acc2(w0: &[i8], w1: &[i8], x: &[i8], b0: i32, b1: i32) -> (i32, i32) {
        let n = x.len().min(w0.len()).min(w1.len());
        let ((xs, xt), (w0s, w0t), (w1s, w1t)) = (words(x, n), words(w0, n), words(w1, n));
        let (mut a0, mut a1) = (b0, b1);
        for ((a, b), c) in xs.iter().zip(w0s).zip(w1s) {
            let xv = u32::from_le_bytes(*a);
            a0 = mac4(a0, xv, u32::from_le_bytes(*b));
            a1 = mac4(a1, xv, u32::from_le_bytes(*c));
        }
        for ((a, b), c) in xt.iter().zip(w0t).zip(w1t) {
            a0 = a0.wrapping_add(*a as i32 * *b as i32);
            a1 = a1.wrapping_add(*a as i32 * *c as i32);
        }
        (a0, a1)
    }
}
