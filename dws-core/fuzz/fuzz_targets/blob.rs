//! Fuzzes `Model::new_checked` and, for every blob it accepts, `Model::run`.
//!
//! Input: `[flags] ++ blob`.
//! * flags bit 0: after mutation, recompute the CRC-32 over `blob[32..]` and store it
//!   at offset 16, so mutated blobs get past the checksum into the plan decoder and
//!   the validator (without it nearly every mutation ends as `Error::Checksum`);
//! * flags bit 1: also set the header's parameter length so that the blob ends
//!   exactly after its parameter section (keeps insertions/deletions from ending
//!   as `Truncated`/`TrailingBytes`);
//! * flags bits 2-3: byte offset of the blob in its 16-aligned buffer (0-3), so
//!   misaligned parameter sections are exercised too.
//!
//! Properties checked (a failed `assert!` is a finding just like a panic in the core):
//! * `new_checked` never panics; an accepted blob's ops all decode again;
//! * `run` with finite inputs of the right size never fails and never panics, whatever
//!   the magnitudes (0, 1, 1e30, f32::MAX, 1e-30, subnormals, arbitrary finite bits);
//! * wrong input/scratch/output sizes and non-finite inputs give exactly the typed errors;
//! * the output does not depend on the scratch contents or on extra buffer room.
#![no_main]

use dws_core::blob::{params_offset, BlobView, HEADER_LEN};
use dws_core::{crc32, Error, Model};
use libfuzzer_sys::fuzz_target;

const FIX_CRC: u8 = 1;
const FIX_PARAMS_LEN: u8 = 2;

/// Largest input + scratch + output (f32 elements) an accepted model may need to be run.
const MAX_BUFFERS: usize = 1 << 21;
/// Largest estimated work per inference for a model to be run (keeps executions fast).
const MAX_WORK: u64 = 1 << 22;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, blob)) = data.split_first() else {
        return;
    };
    let shift = usize::from((flags >> 2) & 3);
    let mut words = vec![0u128; (blob.len() + shift).div_ceil(16)];
    let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    assert_eq!(buf.as_ptr() as usize % 16, 0);
    let bytes = &mut buf[shift..shift + blob.len()];
    bytes.copy_from_slice(blob);
    if bytes.len() >= HEADER_LEN {
        if flags & FIX_PARAMS_LEN != 0 {
            let plan_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            let start = params_offset(plan_len as usize);
            if let Some(len) = bytes.len().checked_sub(start) {
                bytes[12..16].copy_from_slice(&(len as u32).to_le_bytes());
            }
        }
        if flags & FIX_CRC != 0 {
            let crc = crc32(&bytes[HEADER_LEN..]);
            bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let bytes = &*bytes;
    let model = match Model::new_checked(bytes) {
        Ok(m) => m,
        Err(e) => {
            // Every error renders.
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    if shift % 4 != 0 {
        assert!(
            model.params().is_empty(),
            "a misaligned parameter section was accepted"
        );
    }
    roundtrip(bytes);
    exercise(&model, blob);
});

/// An accepted blob re-emits to the same header and sections. (The reserved header
/// bytes and the padding before the parameters are not checked to be zero, so the
/// CRC of a re-emitted blob may differ: only the meaningful bytes are compared.)
fn roundtrip(bytes: &[u8]) {
    let view = BlobView::new_checked(bytes).expect("container accepted by new_checked");
    let mut out = vec![0u8; bytes.len()];
    let out =
        dws_core::blob::emit(view.precision(), view.plan(), view.params(), &mut out).expect("emit");
    assert_eq!(out.len(), bytes.len());
    assert_eq!(out[..16], bytes[..16]);
    let plan_end = HEADER_LEN + view.plan().len();
    assert_eq!(out[HEADER_LEN..plan_end], bytes[HEADER_LEN..plan_end]);
    let start = params_offset(view.plan().len());
    assert_eq!(out[start..], bytes[start..]);
}

fn expect_err<T: core::fmt::Debug>(r: Result<T, Error>, want: Error) {
    match r {
        Err(e) if e == want => {}
        other => panic!("expected Err({want:?}), got {other:?}"),
    }
}

/// Finite input values for pattern `p`.
fn fill(input: &mut [f32], p: usize, seed: &[u8]) {
    let byte = |i: usize| seed.get(i % seed.len().max(1)).copied().unwrap_or(0);
    for (i, v) in input.iter_mut().enumerate() {
        let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
        *v = match p {
            0 => 0.0,
            1 => 1.0,
            2 => f32::from(byte(i) as i8) * 0.125,
            3 => sign * 1e30,
            4 => sign * f32::MAX,
            5 => sign * if i % 3 == 0 { 1e-42 } else { 1e-30 },
            _ => {
                // Arbitrary finite bit patterns from the fuzz bytes.
                let b = u32::from_le_bytes([
                    byte(4 * i),
                    byte(4 * i + 1),
                    byte(4 * i + 2),
                    byte(4 * i + 3),
                ]);
                let f = f32::from_bits(b);
                if f.is_finite() {
                    f
                } else {
                    f32::from_bits(b & !0x4000_0000)
                }
            }
        };
        debug_assert!(v.is_finite());
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn exercise(model: &Model<'_>, seed: &[u8]) {
    // The ops decode again, as many as announced, and nothing follows them.
    let mut count = 0u32;
    for op in model.ops() {
        op.expect("an op of an accepted plan fails to decode");
        count += 1;
    }
    assert_eq!(count, model.spec().ops);
    assert!(model.ops().rest_after_all().expect("ops decode").is_empty());
    let _ = (
        model.layout(),
        model.dims(),
        model.spec(),
        model.params().len(),
    );

    let lay = *model.layout();
    let (ilen, olen, slen) = (model.input_len(), model.output_len(), model.scratch_len());
    assert!(ilen >= 1 && olen >= 1 && slen >= 1);
    expect_err(
        model.run(&[], &mut [], &mut []),
        Error::InputLength {
            expected: ilen,
            actual: 0,
        },
    );
    let work = lay.macs.saturating_add(
        (u64::from(model.spec().ops) + 1).saturating_mul((ilen + slen + olen) as u64),
    );
    if ilen.saturating_add(slen).saturating_add(olen) > MAX_BUFFERS || work > MAX_WORK {
        return;
    }

    let mut input = vec![0f32; ilen + 1];
    let mut scratch = vec![0f32; slen + 7];
    let mut out = vec![0f32; olen + 3];

    // Finite inputs of every magnitude, exactly sized buffers.
    for p in 0..7 {
        fill(&mut input[..ilen], p, seed);
        let y = model
            .run(&input[..ilen], &mut scratch[..slen], &mut out[..olen])
            .unwrap_or_else(|e| panic!("run failed on finite input (pattern {p}): {e:?}"));
        assert_eq!(y.len(), olen);
    }

    // The output depends on neither the scratch contents nor extra buffer room.
    let reference = bits(&out[..olen]);
    scratch.fill(f32::NAN);
    out.fill(-7.0);
    let y = model
        .run(&input[..ilen], &mut scratch, &mut out)
        .expect("run with oversized buffers");
    assert_eq!(y.len(), olen);
    assert_eq!(bits(y), reference, "output depends on scratch contents");
    assert!(
        out[olen..].iter().all(|&v| v == -7.0),
        "wrote past output_len"
    );

    // Wrong sizes and non-finite inputs: exactly the documented errors.
    expect_err(
        model.run(&input, &mut scratch, &mut out),
        Error::InputLength {
            expected: ilen,
            actual: ilen + 1,
        },
    );
    expect_err(
        model.run(&input[..ilen - 1], &mut scratch, &mut out),
        Error::InputLength {
            expected: ilen,
            actual: ilen - 1,
        },
    );
    expect_err(
        model.run(&input[..ilen], &mut scratch[..slen - 1], &mut out),
        Error::ScratchTooSmall {
            expected: slen,
            actual: slen - 1,
        },
    );
    expect_err(
        model.run(&input[..ilen], &mut scratch, &mut out[..olen - 1]),
        Error::OutputLength {
            expected: olen,
            actual: olen - 1,
        },
    );
    let at = seed.first().map_or(0, |&b| usize::from(b)) % ilen;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let keep = input[at];
        input[at] = bad;
        expect_err(
            model.run(&input[..ilen], &mut scratch, &mut out),
            Error::NonFiniteInput,
        );
        input[at] = keep;
    }
}
