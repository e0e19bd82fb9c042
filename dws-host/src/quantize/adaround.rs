//! AdaRound (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training
//! Quantization", ICML 2020): per linear layer, learn whether each weight
//! rounds up or down so that the layer's outputs on the calibration inputs
//! move least.
//!
//! For weights `w` (a row of `fin`, scale `s`) the rounded row is `s (floor(w
//! / s) + h)` with `h` in `{0, 1}` per weight. The objective of a row is
//! `d^T G d`, `d = floor(w / s) + h - w / s` (the rounding error in steps)
//! and `G = E[x x^T]` the second moments of the layer's inputs over the
//! calibration set ([`super::calibrate::Moments`]): exactly the mean squared
//! change of the row's output, in units of `s^2`. As in the paper, `h` is
//! relaxed to the rectified sigmoid `h(V) = clamp(sigmoid(V) (zeta - gamma) +
//! gamma, 0, 1)` and `V` is learned with Adam on the objective plus `lambda
//! sum(1 - |2h - 1|^beta)`, `beta` annealed from 20 to 2 after a warm-up, which
//! drives every `h` to 0 or 1; the result rounds `h` at 0.5. No data is
//! sampled (the moments are exact sums), so the result is deterministic; it
//! uses `libm` for the exponentials, so it is the same on every platform.

/// The stretch of the rectified sigmoid.
const ZETA: f32 = 1.1;
const GAMMA: f32 = -0.1;
/// The regularizer's weight (per weight, against the objective per weight,
/// which is about 1/12 for nearest rounding): strong enough that every `h`
/// ends at 0 or 1 (a weaker one leaves values between, and rounding them at
/// 0.5 can do worse than nearest rounding).
const LAMBDA: f32 = 1.0;
/// The share of iterations without the regularizer.
const WARMUP: f32 = 0.2;
const BETA_START: f32 = 20.0;
const BETA_END: f32 = 2.0;
const LEARNING_RATE: f32 = 0.01;

/// Iterations of the optimization per layer.
pub const ITERATIONS: usize = 500;

/// The rounded weights of `w` (`[fout, fin]`, row `o` in units of
/// `scales[o]`), clamped to `-127..=127`, rounding each weight up or down as
/// AdaRound learns on the input moments `g` (`fin x fin`); nearest rounding
/// where the inputs were all zero.
pub fn round(w: &[f32], fin: usize, scales: &[f32], g: &[f64], iterations: usize) -> Vec<i8> {
    let diag = (0..fin).map(|i| g[i * fin + i]).sum::<f64>() / fin.max(1) as f64;
    if fin == 0 || diag <= 0.0 || !diag.is_finite() {
        return nearest(w, fin, scales);
    }
    // Moments relative to their mean diagonal, so that the objective per
    // weight is about 1/12 for nearest rounding of uncorrelated inputs.
    let g: Vec<f32> = g.iter().map(|v| (v / diag) as f32).collect();
    w.chunks_exact(fin)
        .zip(scales)
        .flat_map(|(row, &s)| round_row(row, s, &g, iterations))
        .collect()
}

/// Nearest rounding (half away from zero), clamped to `-127..=127`.
pub fn nearest(w: &[f32], fin: usize, scales: &[f32]) -> Vec<i8> {
    w.chunks(fin.max(1))
        .zip(scales)
        .flat_map(|(row, &s)| row.iter().map(move |v| clamp8((v / s).round())))
        .collect()
}

fn clamp8(v: f32) -> i8 {
    v.clamp(-127.0, 127.0) as i8
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-v))
}

/// `ln((zeta - gamma) / -gamma - 1) = ln 11`: beyond `+-` this the rectified
/// sigmoid is clamped to 1 or 0.
const SATURATED: f32 = 2.397_895_3;

/// The rectified sigmoid and its derivative (0 where it is clamped).
fn rectified(v: f32) -> (f32, f32) {
    if v >= SATURATED {
        return (1.0, 0.0);
    }
    if v <= -SATURATED {
        return (0.0, 0.0);
    }
    let sg = sigmoid(v);
    let h = sg * (ZETA - GAMMA) + GAMMA;
    if h <= 0.0 {
        (0.0, 0.0)
    } else if h >= 1.0 {
        (1.0, 0.0)
    } else {
        (h, sg * (1.0 - sg) * (ZETA - GAMMA))
    }
}

/// One row: `w` in real units, scale `s`, normalized moments `g`.
fn round_row(w: &[f32], s: f32, g: &[f32], iterations: usize) -> Vec<i8> {
    let fin = w.len();
    let x: Vec<f32> = w.iter().map(|v| v / s).collect();
    let floor: Vec<f32> = x.iter().map(|v| v.floor()).collect();
    // Start at the real value: h(V) = x - floor(x).
    let mut v: Vec<f32> = x
        .iter()
        .zip(&floor)
        .map(|(x, f)| {
            let p = ((x - f - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1.0 - 1e-4);
            libm::logf(p / (1.0 - p))
        })
        .collect();
    let (mut m1, mut m2) = (vec![0f32; fin], vec![0f32; fin]);
    let (mut h, mut dh, mut d, mut gd) = (
        vec![0f32; fin],
        vec![0f32; fin],
        vec![0f32; fin],
        vec![0f32; fin],
    );
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let (mut p1, mut p2) = (1f32, 1f32);
    let warm = (iterations as f32 * WARMUP) as usize;
    for it in 0..iterations {
        for i in 0..fin {
            (h[i], dh[i]) = rectified(v[i]);
            d[i] = floor[i] + h[i] - x[i];
        }
        matvec(g, &d, &mut gd);
        let beta = (it >= warm).then(|| {
            let t = (it - warm) as f32 / (iterations - warm).max(1) as f32;
            BETA_END + 0.5 * (BETA_START - BETA_END) * (1.0 + libm::cosf(core::f32::consts::PI * t))
        });
        p1 *= b1;
        p2 *= b2;
        for i in 0..fin {
            // Where `h` is clamped no gradient reaches `V` (only Adam's
            // momentum moves it).
            let mut grad = 0.0;
            if dh[i] != 0.0 {
                grad = 2.0 * gd[i];
                if let Some(beta) = beta {
                    let u = 2.0 * h[i] - 1.0;
                    let a = u.abs();
                    if a > 0.0 {
                        // d/dh of -(|2h - 1|^beta).
                        grad -= LAMBDA * beta * libm::powf(a, beta - 1.0) * 2.0 * u.signum();
                    }
                }
                grad *= dh[i];
            }
            m1[i] = b1 * m1[i] + (1.0 - b1) * grad;
            m2[i] = b2 * m2[i] + (1.0 - b2) * grad * grad;
            let (mh, vh) = (m1[i] / (1.0 - p1), m2[i] / (1.0 - p2));
            v[i] -= LEARNING_RATE * mh / (vh.sqrt() + eps);
        }
    }
    v.iter()
        .zip(&floor)
        .map(|(v, f)| clamp8(f + if rectified(*v).0 >= 0.5 { 1.0 } else { 0.0 }))
        .collect()
}

/// `out = g d` for the symmetric `g` (`n x n`), eight independent partial
/// sums per output (vectorizable, and the same order on every machine).
fn matvec(g: &[f32], d: &[f32], out: &mut [f32]) {
    let n = d.len();
    for (row, o) in g.chunks_exact(n).zip(out.iter_mut()) {
        let mut acc = [0f32; 8];
        let (head, tail) = row.split_at(n / 8 * 8);
        let (dh, dt) = d.split_at(n / 8 * 8);
        for (gc, dc) in head.chunks_exact(8).zip(dh.chunks_exact(8)) {
            for k in 0..8 {
                acc[k] += gc[k] * dc[k];
            }
        }
        let mut sum = acc.iter().sum::<f32>();
        for (a, b) in tail.iter().zip(dt) {
            sum += a * b;
        }
        *o = sum;
    }
}

/// `d^T g d / n` for a row `q` (integers) of weights `w` in units of `s`.
#[cfg(test)]
fn objective(w: &[f32], s: f32, q: &[i8], g: &[f32]) -> f32 {
    let d: Vec<f32> = w.iter().zip(q).map(|(w, q)| *q as f32 - w / s).collect();
    let mut gd = vec![0f32; d.len()];
    matvec(g, &d, &mut gd);
    d.iter().zip(&gd).map(|(a, b)| a * b).sum::<f32>() / d.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible pseudo-random stream.
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn learned_rounding_moves_the_outputs_less_than_nearest() {
        let (fin, rows) = (24, 400);
        // Correlated inputs: x = z A, so that the rounding errors interact.
        let a = values(1, fin * fin);
        let z = values(2, rows * fin);
        let mut g = vec![0f64; fin * fin];
        for r in 0..rows {
            let x: Vec<f64> = (0..fin)
                .map(|j| {
                    (0..fin)
                        .map(|k| (z[r * fin + k] * a[k * fin + j]) as f64)
                        .sum()
                })
                .collect();
            for i in 0..fin {
                for j in 0..fin {
                    g[i * fin + j] += x[i] * x[j] / rows as f64;
                }
            }
        }
        let w = values(3, 2 * fin);
        let scales = [0.02f32, 0.03];
        let learned = round(&w, fin, &scales, &g, ITERATIONS);
        let plain = nearest(&w, fin, &scales);
        let diag = (0..fin).map(|i| g[i * fin + i]).sum::<f64>() / fin as f64;
        let gn: Vec<f32> = g.iter().map(|v| (v / diag) as f32).collect();
        for (o, &s) in scales.iter().enumerate() {
            let at = o * fin..(o + 1) * fin;
            let (ql, qn) = (&learned[at.clone()], &plain[at.clone()]);
            let (el, en) = (
                objective(&w[at.clone()], s, ql, &gn),
                objective(&w[at.clone()], s, qn, &gn),
            );
            assert!(el < 0.8 * en, "row {o}: learned {el} nearest {en}");
            // Every weight still rounds to one of its two neighbours.
            for (q, v) in ql.iter().zip(&w[at]) {
                let x = v / s;
                assert!(*q as f32 == x.floor() || *q as f32 == x.floor() + 1.0);
            }
        }
        // Deterministic.
        assert_eq!(learned, round(&w, fin, &scales, &g, ITERATIONS));
    }

    #[test]
    fn zero_inputs_round_to_nearest() {
        let w = [0.26f32, -0.74];
        assert_eq!(round(&w, 2, &[0.5], &[0.0; 4], 10), nearest(&w, 2, &[0.5]));
        assert_eq!(nearest(&w, 2, &[0.5]), [1, -1]);
    }
}
