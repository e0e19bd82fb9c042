//! The quantized arithmetic: the one definition every backend implements bit for bit.
//!
//! See `docs/quantization.md` for the full specification. In short: values are
//! symmetric integers (`real = q * scale`; `q` in `-127..=127` in int8 mode,
//! `-32767..=32767` in 16x8 mode), weights are int8, and every change of
//! scale is a [`Requant`]: a fixed-point multiply with round-half-up and an
//! arithmetic shift. Softmax uses two exponential tables ([`softmax`]).
//!
//! [`records`] holds the quantization records of a plan; `v1` (feature
//! `format-1`) reads the records of format-1 blobs.

mod records;
pub mod softmax;
#[cfg(feature = "format-1")]
pub(crate) mod v1;

pub use records::{BlockQ, LinearQ, LogitScale, MapQ, MlpQ, Quant, ResampleQ};
pub use softmax::{softmax_q15, EXP_HI, EXP_LO, MAX_T};

use serde::{Deserialize, Serialize};

/// A fixed-point multiplier `M = m / 2^shift`: `apply(x) = floor((x * m + 2^(shift-1)) / 2^shift)`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Requant {
    /// Multiplier mantissa, `0..2^31`.
    pub m: i32,
    /// Right shift, `1..=62`.
    pub shift: u8,
}

impl Requant {
    /// Applies the multiplier to a 32-bit value (exact in 64-bit arithmetic).
    #[inline(always)]
    pub fn apply(self, x: i32) -> i32 {
        let v = x as i64 * self.m as i64 + (1i64 << (self.shift - 1));
        if self.shift >= 32 {
            // |x m| < 2^62: the result fits in 31 bits, no clamp.
            ((v >> 32) as i32) >> (self.shift - 32)
        } else {
            let r = v >> self.shift;
            if r == r as i32 as i64 {
                r as i32
            } else if r < 0 {
                i32::MIN
            } else {
                i32::MAX
            }
        }
    }

    /// [`Requant::apply`] on a 64-bit value: the same definition,
    /// `floor((x * m + 2^(shift-1)) / 2^shift)` saturated to int32 (exact in
    /// 128-bit arithmetic; values that fit in 32 bits take [`Requant::apply`]).
    #[inline(always)]
    pub fn apply_wide(self, x: i64) -> i32 {
        match i32::try_from(x) {
            Ok(x) => self.apply(x),
            Err(_) => {
                let v = (x as i128 * self.m as i128 + (1i128 << (self.shift - 1))) >> self.shift;
                v.clamp(i32::MIN as i128, i32::MAX as i128) as i32
            }
        }
    }

    /// Whether the multiplier is well formed (checked when a blob is opened).
    pub fn is_valid(self) -> bool {
        self.m >= 0 && (1..=62).contains(&self.shift)
    }
}

/// The requantizations of a linear layer's outputs, as a kernel reads them:
/// one for every output, or one per output channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requants<'a> {
    /// The same multiplier for every output.
    One(Requant),
    /// Output `o` takes mantissa `m[o]` with the common `shift`.
    Channel {
        /// One mantissa per output.
        m: &'a [i32],
        /// The common shift.
        shift: u8,
    },
}

impl Requants<'_> {
    /// The requantization of output `o`.
    #[inline(always)]
    pub fn get(&self, o: usize) -> Requant {
        match *self {
            Requants::One(r) => r,
            Requants::Channel { m, shift } => Requant { m: m[o], shift },
        }
    }
}

/// Saturates to the symmetric int8 range `-127..=127`.
#[inline(always)]
pub fn sat8(v: i32) -> i8 {
    v.clamp(-127, 127) as i8
}

/// Saturates to the symmetric int16 range `-32767..=32767`.
#[inline(always)]
pub fn sat16(v: i32) -> i16 {
    v.clamp(-32767, 32767) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requant_rounds_half_up() {
        let half = Requant {
            m: 1 << 30,
            shift: 31,
        };
        assert_eq!([half.apply(3), half.apply(-3), half.apply(2)], [2, -1, 1]);
        let one = Requant {
            m: 1 << 30,
            shift: 30,
        };
        assert_eq!(one.apply(-77), -77);
    }

    /// The definition of `apply` in plain 128-bit arithmetic.
    fn apply_reference(r: Requant, x: i64) -> i32 {
        let v = (x as i128 * r.m as i128 + (1i128 << (r.shift - 1))) >> r.shift;
        v.clamp(i32::MIN as i128, i32::MAX as i128) as i32
    }

    /// A small deterministic generator for the tests below.
    pub(crate) fn lcg(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *s >> 16
    }

    #[test]
    fn requant_matches_its_definition() {
        let mut s = 7;
        let edges = [
            0,
            1,
            -1,
            i32::MAX,
            i32::MIN,
            i32::MIN + 1,
            1 << 30,
            -(1 << 30),
        ];
        for shift in 1..=62u8 {
            for m in [
                0,
                1,
                (1 << 30) + 12345,
                i32::MAX,
                (lcg(&mut s) as i32) & i32::MAX,
            ] {
                let r = Requant { m, shift };
                for x in edges
                    .into_iter()
                    .chain((0..200).map(|_| lcg(&mut s) as i32))
                {
                    assert_eq!(r.apply(x), apply_reference(r, x as i64), "{r:?} x={x}");
                }
            }
        }
    }

    #[test]
    fn wide_requant_matches_its_definition() {
        let mut s = 9;
        let edges = [
            0,
            1,
            -1,
            i32::MAX as i64,
            i32::MAX as i64 + 1,
            i32::MIN as i64,
            i32::MIN as i64 - 1,
            1 << 40,
            -(1 << 40),
            i64::MAX,
            i64::MIN,
        ];
        for shift in 1..=62u8 {
            for m in [0, 1, (1 << 30) + 777, i32::MAX] {
                let r = Requant { m, shift };
                for x in edges.into_iter().chain((0..200).map(|i| {
                    let v = ((lcg(&mut s) << 32) ^ lcg(&mut s)) as i64;
                    v >> (i % 40)
                })) {
                    assert_eq!(r.apply_wide(x), apply_reference(r, x), "{r:?} x={x}");
                }
            }
        }
    }

    #[test]
    fn channel_requants_share_the_shift() {
        let m = [1 << 30, 3 << 28];
        let r = Requants::Channel { m: &m, shift: 31 };
        assert_eq!(
            r.get(1),
            Requant {
                m: 3 << 28,
                shift: 31
            }
        );
        assert_eq!(r.get(0).apply(5), 3);
        assert_eq!(sat16(40000), 32767);
        assert_eq!(sat16(-40000), -32767);
    }
}
