//! Integer softmax with Q15 probabilities (`docs/quantization.md`, "softmax_q15").

use super::Requant;

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

/// A score of set attention or attention pooling: `i32` in int8 mode (products
/// of int8 values), `i64` in 16x8 mode.
pub trait Score: Copy + Ord + Default + Send + Sync + core::fmt::Debug + 'static {
    /// The exponent argument `t` of score `z` in a row whose largest score is
    /// `max`: `clamp(r(max - z), 0, MAX_T)` in 1/256 units of the real exponent.
    fn exp_arg(max: Self, z: Self, r: Requant) -> usize;
}

impl Score for i32 {
    /// The difference is first clamped to `2^31 - 1` (valid int8 plans never
    /// reach it: their scores stay below `2^30` in magnitude).
    #[inline(always)]
    fn exp_arg(max: i32, z: i32, r: Requant) -> usize {
        let diff = (max as i64 - z as i64).min(i32::MAX as i64) as i32;
        (r.apply(diff) as i64).clamp(0, MAX_T) as usize
    }
}

impl Score for i64 {
    /// The difference in 64 bits, requantized with [`Requant::apply_wide`].
    #[inline(always)]
    fn exp_arg(max: i64, z: i64, r: Requant) -> usize {
        (r.apply_wide(max.wrapping_sub(z)) as i64).clamp(0, MAX_T) as usize
    }
}

/// `exp(-t / 256)` in Q30: `(EXP_HI[t >> 8] * EXP_LO[t & 255]) >> 16` for `t <= MAX_T`.
#[inline(always)]
pub fn exp_q30(t: usize) -> u32 {
    ((EXP_HI[t >> 8] as u64 * EXP_LO[t & 255] as u64) >> 16) as u32
}

/// Integer softmax: `z` holds scores, `r` maps a score difference to 1/256
/// units of the real exponent; writes the probabilities in Q15 (summing to
/// about `2^15`, each at most `2^15`) into `p` (`z.len()` values).
pub fn softmax_q15<S: Score>(z: &[S], r: Requant, p: &mut [u32]) {
    let max = z.iter().copied().max().unwrap_or_default();
    let p = &mut p[..z.len()];
    let mut sum = 0u64;
    for (zi, pi) in z.iter().zip(p.iter_mut()) {
        *pi = exp_q30(S::exp_arg(max, *zi, r));
        sum += *pi as u64;
    }
    let div = Q15Divisor::new(sum.max(1));
    for pi in p.iter_mut() {
        *pi = div.quotient(((*pi as u64) << 15) + div.sum / 2) as u32;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let one = Requant {
            m: 1 << 30,
            shift: 30,
        };
        let mut p = [0u32; 4];
        softmax_q15(&[0i32, 100, 200, -50], one, &mut p);
        let sum: u32 = p.iter().sum();
        assert!(sum.abs_diff(1 << 15) <= 2, "{p:?}");
        assert!(p[2] > p[1] && p[1] > p[0] && p[0] > p[3]);
        // The same scores in 64 bits give the same probabilities.
        let mut p64 = [0u32; 4];
        softmax_q15(&[0i64, 100, 200, -50], one, &mut p64);
        assert_eq!(p, p64);
    }

    #[test]
    fn wide_scores_reach_past_32_bits() {
        // A score difference of 2^33 with a tiny multiplier is 2 units of the
        // exponent, not the 2^31 - 1 that a 32-bit clamp would leave.
        let r = Requant {
            m: 1 << 30,
            shift: 62,
        };
        let mut p = [0u32; 2];
        softmax_q15(&[1i64 << 40, (1i64 << 40) - (1i64 << 41)], r, &mut p);
        assert!(p[1] > 0 && p[0] > p[1], "{p:?}");
    }

    /// A small deterministic generator for the tests below.
    fn lcg(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *s >> 16
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
            let z: [i32; 40] = core::array::from_fn(|_| (lcg(&mut s) as i32) % spread);
            let r = Requant {
                m: ((lcg(&mut s) as i32) & i32::MAX) | (1 << 30),
                shift: 20 + (lcg(&mut s) % 24) as u8,
            };
            let original = z;
            let mut p = [0u32; 40];
            softmax_q15(&z[..n], r, &mut p);
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
                    p[i] as u64,
                    ((exps[i] << 15) + sum / 2) / sum,
                    "case {case}"
                );
            }
        }
    }
}
