//! Fuzzes `CaseRepr::new_checked` and, for every case file it accepts, `input` and `check`.
//!
//! Properties: nothing panics; `input(k)` succeeds exactly for `k < batch` with a
//! buffer of at least `input_len` elements; `check` rejects out-of-range inputs, short
//! outputs and NaN outputs, and accepts the expected values themselves whenever the
//! stored scales and expected values are finite (and scales non-negative).
#![no_main]

use dws_core::case::CaseRepr;
use dws_core::Error;
use libfuzzer_sys::fuzz_target;

/// Largest `input_len`/`output_len` to allocate buffers for (a case with `batch = 0`
/// may announce any length with empty arrays).
const MAX_LEN: usize = 1 << 20;

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let c = match CaseRepr::new_checked(data) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let batch = c.batch as usize;
    let (n, o) = (c.input_len as usize, c.output_len as usize);
    assert!(c.input(batch, &mut []).is_err());
    assert!(c.check(batch, &[]).is_err());
    if n > MAX_LEN || o > MAX_LEN {
        return;
    }
    let mut buf = vec![0f32; n + 1];
    assert!(c.input(batch, &mut buf).is_err());
    assert!(c.check(batch, &vec![0.0; o]).is_err());
    let inputs = f32s(c.inputs);
    let expected = f32s(c.expected);
    let scales = f32s(c.scale);
    let exact_ok = scales.iter().all(|s| s.is_finite() && *s >= 0.0);
    for k in 0..batch.min(4) {
        let got = c
            .input(k, &mut buf)
            .expect("input k < batch into a large buffer");
        assert_eq!(got.len(), n);
        let want = &inputs[k * n..(k + 1) * n];
        assert!(got
            .iter()
            .zip(want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        if n > 0 {
            match c.input(k, &mut buf[..n - 1]) {
                Err(Error::InputLength { expected, actual }) => {
                    assert_eq!((expected, actual), (n, n - 1))
                }
                other => panic!("short input buffer: {other:?}"),
            }
        }
        let exp = &expected[k * o..(k + 1) * o];
        let r = c.check(k, exp);
        if exact_ok && exp.iter().all(|v| v.is_finite()) {
            assert_eq!(r, Ok(0.0), "expected values fail their own check");
        }
        let _ = c.check(k, &vec![0.0; o]);
        if o > 0 {
            assert!(c.check(k, &vec![f32::NAN; o]).is_err(), "NaN output passed");
            assert!(c.check(k, &exp[..o - 1]).is_err(), "short output passed");
        }
    }
});
