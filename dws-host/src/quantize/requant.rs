//! Real multipliers as the fixed-point [`Requant`]s of `docs/quantization.md`.

use anyhow::{bail, Result};
use dws_core::quant::Requant;

/// The fixed-point form of a real multiplier `m`: `m ~= mant / 2^shift` with
/// `mant` in `[2^30, 2^31)` (smaller only when `shift` reaches 62).
pub fn requant(m: f64) -> Result<Requant> {
    let (mant, shift) = fixed_point(&[m])?;
    Ok(Requant { m: mant[0], shift })
}

/// One mantissa per multiplier with a common shift: the largest multiplier's
/// mantissa lies in `[2^30, 2^31)`, the others keep as many bits as their
/// ratio to it leaves (the quantizer bounds that ratio, see
/// [`super::writer::MAX_CHANNEL_RATIO`]).
pub fn requant_channels(ms: &[f64]) -> Result<(Vec<i32>, u8)> {
    fixed_point(ms)
}

fn fixed_point(ms: &[f64]) -> Result<(Vec<i32>, u8)> {
    if let Some(m) = ms.iter().find(|m| !(m.is_finite() && **m >= 0.0)) {
        bail!("multiplier {m} is not a finite non-negative number");
    }
    let max = ms.iter().fold(0f64, |a, m| a.max(*m));
    if max == 0.0 {
        return Ok((vec![0; ms.len()], 1));
    }
    let mut shift = 30 - max.log2().floor() as i32;
    if shift < 1 {
        bail!(
            "requantization factor {max:.4e} is too large for fixed point (>= 2^30): a value's \
             calibrated range is tiny against its inputs'; calibrate on more typical inputs"
        );
    }
    shift = shift.min(62);
    let mant = |shift: i32| -> Vec<i64> {
        ms.iter()
            .map(|m| (m * 2f64.powi(shift)).round() as i64)
            .collect()
    };
    let mut ints = mant(shift);
    if ints.iter().any(|v| *v >= 1 << 31) {
        if shift == 1 {
            // The largest rounded up to exactly 2^31: one unit less keeps shift >= 1.
            return Ok((
                ints.iter()
                    .map(|v| (*v).min(i32::MAX as i64) as i32)
                    .collect(),
                1,
            ));
        }
        shift -= 1;
        ints = mant(shift);
    }
    Ok((ints.iter().map(|v| *v as i32).collect(), shift as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requant_represents_factors_and_clamps_huge_ones() {
        for m in [1.0, 0.5, 1.0 / 256.0, 3.7e-9, 123.456, 1e9] {
            let r = requant(m).unwrap();
            assert!(r.is_valid(), "{m}: {r:?}");
            let back = r.m as f64 / 2f64.powi(r.shift as i32);
            assert!((back - m).abs() <= m * 1e-9, "{m}: {back}");
        }
        assert!(requant(2.7e9).is_err());
        assert!(requant(2f64.powi(30) * (1.0 - 1e-12)).unwrap().is_valid());
        assert!(requant(f64::NAN).is_err() && requant(-1.0).is_err());
    }

    #[test]
    fn channels_share_the_largest_multipliers_shift() {
        let (m, shift) = requant_channels(&[0.5, 0.25, 0.5 / 4096.0, 0.0]).unwrap();
        assert_eq!(shift, 31);
        assert_eq!(m, [1 << 30, 1 << 29, 1 << 18, 0]);
        let (m, shift) = requant_channels(&[0.0, 0.0]).unwrap();
        assert_eq!((m, shift), (vec![0, 0], 1));
    }
}
