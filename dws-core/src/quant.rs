//! The int8 arithmetic: the one definition every backend implements bit for bit.
//!
//! See `docs/int8.md` for the full specification. In short: int8 values are
//! symmetric (`real = q * scale`, `q` in `-127..=127`), accumulators are int32,
//! and every change of scale is a [`Requant`]: a fixed-point multiply with
//! round-half-up and an arithmetic shift. Softmax uses two exponential tables.

use serde::{Deserialize, Serialize};

use crate::plan::{MAX_FC_LAYERS, MAX_TENSORS};

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

    /// Whether the multiplier is well formed (checked when a blob is opened).
    pub fn is_valid(self) -> bool {
        self.m >= 0 && (1..=62).contains(&self.shift)
    }
}

/// Saturates to the symmetric int8 range `-127..=127`.
#[inline(always)]
pub fn sat8(v: i32) -> i8 {
    v.clamp(-127, 127) as i8
}

/// `round(2^30 * exp(-i))` for `i` in `0..16`.
pub const EXP_HI: [u32; 16] = [
    1073741824, 395007542, 145315154, 53458458, 19666268, 7234816, 2661540, 979126, 360200, 132510,
    48748, 17933, 6597, 2427, 893, 328,
];
/// `round(2^16 * exp(-f / 256))` for `f` in `0..256`.
pub const EXP_LO: [u32; 256] = [
    65536, 65280, 65026, 64772, 64520, 64268, 64018, 63768, 63520, 63272, 63025, 62780, 62535,
    62291, 62048, 61806, 61565, 61325, 61086, 60848, 60611, 60375, 60139, 59905, 59671, 59439,
    59207, 58976, 58746, 58517, 58289, 58062, 57835, 57610, 57385, 57162, 56939, 56717, 56496,
    56275, 56056, 55837, 55620, 55403, 55187, 54972, 54757, 54544, 54331, 54119, 53908, 53698,
    53489, 53280, 53073, 52866, 52660, 52454, 52250, 52046, 51843, 51641, 51440, 51239, 51039,
    50841, 50642, 50445, 50248, 50052, 49857, 49663, 49469, 49276, 49084, 48893, 48702, 48512,
    48323, 48135, 47947, 47760, 47574, 47389, 47204, 47020, 46836, 46654, 46472, 46291, 46110,
    45931, 45752, 45573, 45395, 45218, 45042, 44867, 44692, 44517, 44344, 44171, 43999, 43827,
    43656, 43486, 43317, 43148, 42980, 42812, 42645, 42479, 42313, 42148, 41984, 41820, 41657,
    41495, 41333, 41172, 41011, 40851, 40692, 40534, 40376, 40218, 40061, 39905, 39750, 39595,
    39440, 39286, 39133, 38981, 38829, 38677, 38527, 38376, 38227, 38078, 37929, 37781, 37634,
    37487, 37341, 37196, 37051, 36906, 36762, 36619, 36476, 36334, 36192, 36051, 35911, 35771,
    35631, 35492, 35354, 35216, 35079, 34942, 34806, 34670, 34535, 34400, 34266, 34133, 34000,
    33867, 33735, 33604, 33473, 33342, 33212, 33083, 32954, 32825, 32697, 32570, 32443, 32316,
    32190, 32065, 31940, 31815, 31691, 31568, 31445, 31322, 31200, 31078, 30957, 30836, 30716,
    30596, 30477, 30358, 30240, 30122, 30005, 29888, 29771, 29655, 29539, 29424, 29310, 29195,
    29081, 28968, 28855, 28743, 28631, 28519, 28408, 28297, 28187, 28077, 27967, 27858, 27750,
    27642, 27534, 27426, 27319, 27213, 27107, 27001, 26896, 26791, 26687, 26583, 26479, 26376,
    26273, 26170, 26068, 25967, 25866, 25765, 25664, 25564, 25465, 25365, 25266, 25168, 25070,
    24972, 24875, 24778, 24681, 24585, 24489, 24394, 24298, 24204,
];

/// Largest exponent argument in 1/256 units; `exp(-16)` and below count as 0.
pub const MAX_T: i64 = 16 * 256 - 1;

/// Integer softmax in place: `z` holds scores, `r` maps a score difference to
/// 1/256 units of the real exponent; the result is probabilities in Q15
/// (summing to about `2^15`), written back into `z`. `e` is scratch of `z.len()`.
pub fn softmax_q15(z: &mut [i32], r: Requant, e: &mut [u32]) {
    let max = z.iter().copied().max().unwrap_or(0);
    let mut sum = 0u64;
    for (zi, ei) in z.iter().zip(e.iter_mut()) {
        let diff = (max as i64 - *zi as i64).min(i32::MAX as i64) as i32;
        let t = (r.apply(diff) as i64).clamp(0, MAX_T) as usize;
        // Q30 * Q16 >> 16 = Q30.
        *ei = ((EXP_HI[t >> 8] as u64 * EXP_LO[t & 255] as u64) >> 16) as u32;
        sum += *ei as u64;
    }
    let div = Q15Divisor::new(sum.max(1));
    for (zi, ei) in z.iter_mut().zip(e.iter()) {
        *zi = div.quotient(((*ei as u64) << 15) + div.sum / 2) as i32;
    }
}

/// Exact `floor(n / sum)` for the softmax's `n = (e << 15) + sum / 2` with
/// `e <= sum` (so the quotient is at most `2^15`), cheaper than a 64-bit
/// division on 32-bit cores: a 32-bit estimate from the top 16 bits of `sum`,
/// then an exact correction.
struct Q15Divisor {
    sum: u64,
    /// `sum >> shift` fits in 16 bits.
    shift: u32,
    top: u32,
    /// Whether the estimate path is safe (`q * sum` cannot overflow).
    fast: bool,
}

impl Q15Divisor {
    fn new(sum: u64) -> Self {
        let shift = (64 - sum.leading_zeros()).saturating_sub(16);
        Q15Divisor {
            sum,
            shift,
            top: (sum >> shift) as u32,
            fast: sum < 1 << 46,
        }
    }

    /// `floor(n / sum)` for `n < sum * 2^16`.
    fn quotient(&self, n: u64) -> u64 {
        if !self.fast {
            return n / self.sum;
        }
        // n >> shift < 2^32 because n < sum * 2^16 and sum < 2^(shift + 16).
        let mut q = ((n >> self.shift) as u32 / self.top) as u64;
        let mut p = q * self.sum; // q < 2^17 and sum < 2^46: no overflow
        while p > n {
            q -= 1;
            p -= self.sum;
        }
        while n - p >= self.sum {
            q += 1;
            p += self.sum;
        }
        q
    }
}

/// Requantizations of an MLP: one per linear layer (`acc -> output scale`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MlpQ {
    /// Per linear layer.
    pub layers: heapless::Vec<Requant, MAX_FC_LAYERS>,
}

/// Requantizations inside a set layer or MLP map.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MapQ {
    /// An MLP; its last layer lands in the map output scale.
    Mlp(MlpQ),
    /// DeepSets: `Y = sat8(R_gamma(acc_gamma) - R_lambda(acc_lambda))`.
    DeepSets {
        /// Gamma layers; the last one maps to the output scale.
        gamma: MlpQ,
        /// Pooled sum / max / attention-weighted sum to the pooled scale.
        pooled: Requant,
        /// Attention pooling: score (`x . query`) to 1/256 exponent units.
        score: Requant,
        /// Lambda layers; the last one maps to the output scale.
        lambda: MlpQ,
    },
    /// Set attention.
    Attention {
        /// `fc_q` accumulator to the Q scale.
        q: Requant,
        /// `fc_k` accumulator to the K scale.
        k: Requant,
        /// `fc_v` accumulator to the V scale.
        v: Requant,
        /// `q . k` to 1/256 exponent units (includes `1/sqrt(dim_V)`).
        score: Requant,
        /// Q to the O scale.
        o_q: Requant,
        /// `A V` (Q15 times V) to the O scale.
        o_av: Requant,
        /// O to the output scale.
        y_o: Requant,
        /// `relu(fc_o(O))` accumulator to the output scale.
        y_fc: Requant,
    },
}

/// Requantizations of one block.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlockQ {
    /// Source (pooled: max, or sum) to the gathered scale (mean folds `1/count` in).
    pub x: Requant,
    /// The map.
    pub map: MapQ,
    /// Map output times the block's scale to the destination accumulator.
    pub contrib: Requant,
}

/// Requantizations of a down-sampled layer's `W_0` path.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResampleQ {
    /// The down-sampling set layer.
    pub down: MapQ,
    /// The up-sampling set layer.
    pub up: MapQ,
    /// The skip MLP (last layer to the skip scale).
    pub skip: MlpQ,
    /// Up-sampled values to the `W_0` output scale.
    pub out_up: Requant,
    /// Skip values to the `W_0` output scale.
    pub out_skip: Requant,
}

/// Quantization records of an int8 plan; each follows the op it annotates.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Quant {
    /// Scales of the input tensors (after normalization); first record after any `Normalize`.
    Input {
        /// One scale per weight-space tensor.
        scales: heapless::Vec<f32, MAX_TENSORS>,
    },
    /// After `Op::Dws`: destination accumulator to output int8, per tensor.
    Layer {
        /// Per destination tensor (for `W_0` of a down-sampled layer: to the inner scale).
        out: heapless::Vec<Requant, MAX_TENSORS>,
        /// The down-sampling path, when the layer has one.
        resample: Option<ResampleQ>,
    },
    /// After `Op::Block`.
    Block(BlockQ),
    /// After `Op::Affine` (whose refs hold i32 multipliers and offsets): the shift.
    Affine {
        /// `y = sat8((x * mult + offset) >> shift)`.
        shift: u8,
    },
    /// After `Op::InputSkip` (whose bias ref holds `n_tensors * fout` i32 biases).
    Skip {
        /// Per tensor: current values to the new scale.
        cur: heapless::Vec<Requant, MAX_TENSORS>,
        /// Per tensor: the skip accumulator to the new scale.
        lin: heapless::Vec<Requant, MAX_TENSORS>,
    },
    /// After `Op::Head`.
    Head {
        /// Per pooled segment (middle weights, `W_0`, `W_{L-1}`, biases, last bias) to the head scale.
        pooled: heapless::Vec<Requant, MAX_TENSORS>,
        /// The head MLP's hidden layers (the last entry is unused).
        mlp: MlpQ,
        /// Real value of one unit of the last layer's accumulator.
        logit_scale: f32,
    },
    /// Last record of a `DWSModel` plan: scales of the output tensors.
    Output {
        /// One scale per weight-space tensor.
        scales: heapless::Vec<f32, MAX_TENSORS>,
    },
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

    #[test]
    fn softmax_sums_to_one() {
        let mut z = [0, 100, 200, -50];
        let mut e = [0u32; 4];
        softmax_q15(
            &mut z,
            Requant {
                m: 1 << 30,
                shift: 30,
            },
            &mut e,
        );
        let sum: i32 = z.iter().sum();
        assert!((sum - (1 << 15)).abs() <= 2, "{z:?}");
        assert!(z[2] > z[1] && z[1] > z[0] && z[0] > z[3]);
    }

    /// The definition of `apply` in plain 64-bit arithmetic.
    fn apply_reference(r: Requant, x: i32) -> i32 {
        let v = (x as i64 * r.m as i64 + (1i64 << (r.shift - 1))) >> r.shift;
        v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
    }

    /// A small deterministic generator for the tests below.
    fn lcg(s: &mut u64) -> u64 {
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
                    assert_eq!(r.apply(x), apply_reference(r, x), "{r:?} x={x}");
                }
            }
        }
    }

    #[test]
    fn q15_divisor_is_exact_at_the_edges() {
        let mut s = 5;
        let sums = [
            1,
            2,
            3,
            (1 << 16) - 1,
            1 << 16,
            (1 << 16) + 1,
            (1 << 46) - 1,
            1 << 46,
            1 << 58,
        ];
        let mut all = sums.to_vec();
        for i in 0..2000 {
            let v = (lcg(&mut s) << 16) ^ lcg(&mut s);
            all.push(((v >> 5) >> (i % 59)) | 1); // sums of up to 2^28 exponents: < 2^59
        }
        for sum in all {
            let d = Q15Divisor::new(sum);
            let mut es = [0, 1, sum / 2, sum - 1, sum, lcg(&mut s) % sum];
            // Each exponent is at most 2^30 (Q30) and at most the sum.
            es.iter_mut().for_each(|e| *e = (*e).min(sum).min(1 << 30));
            for e in es {
                let n = (e << 15) + sum / 2;
                assert_eq!(d.quotient(n), n / sum, "sum {sum} e {e}");
            }
        }
    }

    #[test]
    fn softmax_division_matches_its_definition() {
        let mut s = 11;
        for case in 0..4000 {
            let n = 1 + (lcg(&mut s) % 40) as usize;
            // Scores spread over every scale of the exponent, including ties.
            let spread = 1i32 << (case % 31);
            let mut z: [i32; 40] = core::array::from_fn(|_| (lcg(&mut s) as i32) % spread);
            let r = Requant {
                m: ((lcg(&mut s) as i32) & i32::MAX) | (1 << 30),
                shift: 20 + (lcg(&mut s) % 24) as u8,
            };
            let original = z;
            let mut e = [0u32; 40];
            softmax_q15(&mut z[..n], r, &mut e);
            // Recompute the exponents and divide with plain 64-bit division.
            let max = original[..n].iter().copied().max().unwrap();
            let exps: [u64; 40] = core::array::from_fn(|i| {
                let diff = (max as i64 - original[i] as i64).min(i32::MAX as i64) as i32;
                let t = (r.apply(diff) as i64).clamp(0, MAX_T) as usize;
                (EXP_HI[t >> 8] as u64 * EXP_LO[t & 255] as u64) >> 16
            });
            let sum = exps[..n].iter().sum::<u64>().max(1);
            for i in 0..n {
                assert_eq!(
                    z[i] as u64,
                    ((exps[i] << 15) + sum / 2) / sum,
                    "case {case}"
                );
            }
        }
    }
}
