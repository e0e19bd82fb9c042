//! Rust-side checks of the C ABI; `tests/c/run.sh` exercises it from C.

use super::*;
use core::ffi::CStr;
use std::vec;
use std::vec::Vec;

/// A fixture file as u32 words, so the blob is 4-byte aligned.
fn aligned(bytes: &[u8]) -> Vec<u32> {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    for (w, c) in words.iter_mut().zip(bytes.chunks(4)) {
        let mut b = [0u8; 4];
        b[..c.len()].copy_from_slice(c);
        *w = u32::from_ne_bytes(b);
    }
    words
}

const BLOB: &[u8] = include_bytes!("../../../tests/fixtures/clf_nobias_sab/model.dws");
const CASE: &[u8] = include_bytes!("../../../tests/fixtures/clf_nobias_sab/case.bin");
const BLOB_I8: &[u8] = include_bytes!("../../../tests/fixtures/clf_nobias_sab/model.int8.dws");

fn zero_model() -> dws_model {
    dws_model {
        _opaque: [0; DWS_MODEL_WORDS],
    }
}

fn zero_case() -> dws_case {
    dws_case {
        _opaque: [0; DWS_CASE_WORDS],
    }
}

#[test]
fn status_strings_are_distinct_and_static() {
    let mut seen = Vec::new();
    for s in DWS_OK..=DWS_ERR_UNKNOWN {
        // SAFETY: `dws_status_string` returns a static NUL-terminated string.
        let text = unsafe { CStr::from_ptr(dws_status_string(s)) };
        assert!(!text.is_empty());
        assert!(!seen.contains(&text), "duplicate text for {s}");
        seen.push(text);
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(dws_status_string(-7)) };
    assert_eq!(unknown, c"unknown dws status");
}

#[test]
fn versions() {
    // SAFETY: static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(dws_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        dws_blob_format_version(),
        u16::from_le_bytes([BLOB[4], BLOB[5]])
    );
}

#[test]
fn runs_a_fixture_through_the_abi() {
    let blob = aligned(BLOB);
    let mut m = zero_model();
    let mut c = zero_case();
    // SAFETY: valid storage and buffers that outlive their use in this test.
    unsafe {
        assert_eq!(
            dws_model_open(&mut m, blob.as_ptr().cast(), BLOB.len()),
            DWS_OK
        );
        assert_eq!(dws_case_open(&mut c, CASE.as_ptr(), CASE.len()), DWS_OK);
        let (ni, no) = (dws_model_input_len(&m), dws_model_output_len(&m));
        assert_eq!(ni, dws_case_input_len(&c));
        assert_eq!(no, dws_case_output_len(&c));
        let mut input = vec![0f32; ni];
        let mut scratch = vec![0f32; dws_model_scratch_len(&m)];
        let mut output = vec![0f32; no];
        for k in 0..dws_case_batch(&c) {
            assert_eq!(dws_case_input(&c, k, input.as_mut_ptr(), ni), DWS_OK);
            let st = dws_run_f32(
                &m,
                input.as_ptr(),
                ni,
                scratch.as_mut_ptr(),
                scratch.len(),
                output.as_mut_ptr(),
                no,
            );
            assert_eq!(st, DWS_OK);
            assert_eq!(dws_case_check(&c, k, output.as_ptr(), no), DWS_OK);
        }
        let mut name = [0 as c_char; 64];
        assert_eq!(dws_case_name(&c, name.as_mut_ptr(), name.len()), DWS_OK);
        assert_eq!(CStr::from_ptr(name.as_ptr()), c"clf_nobias_sab");
    }
}

#[test]
fn failed_open_closes_the_storage() {
    let blob = aligned(BLOB);
    let mut m = zero_model();
    // SAFETY: valid storage and buffers.
    unsafe {
        assert_eq!(
            dws_model_open(&mut m, blob.as_ptr().cast(), BLOB.len()),
            DWS_OK
        );
        assert!(dws_model_input_len(&m) > 0);
        assert_eq!(
            dws_model_open(&mut m, blob.as_ptr().cast(), BLOB.len() - 1),
            DWS_ERR_TRUNCATED
        );
        assert_eq!(dws_model_input_len(&m), 0);
        let mut info = core::mem::MaybeUninit::<dws_info>::uninit();
        assert_eq!(dws_model_info(&m, info.as_mut_ptr()), DWS_ERR_NOT_OPEN);
    }
}

#[test]
fn every_core_error_has_its_own_code() {
    let errors = [
        Error::Truncated,
        Error::BadMagic,
        Error::UnsupportedVersion(9),
        Error::Checksum,
        Error::TrailingBytes,
        Error::Misaligned,
        Error::Decode,
        Error::InvalidPlan("x"),
        Error::ParamOutOfBounds,
        Error::InputLength {
            expected: 1,
            actual: 2,
        },
        Error::NonFiniteInput,
        Error::OutputLength {
            expected: 1,
            actual: 0,
        },
        Error::ScratchTooSmall {
            expected: 1,
            actual: 0,
        },
        Error::WrongPrecision,
    ];
    let codes: Vec<dws_status> = errors.iter().map(|&e| status_of(e)).collect();
    for (i, c) in codes.iter().enumerate() {
        assert_ne!(*c, DWS_ERR_UNKNOWN);
        assert!(!codes[..i].contains(c), "{:?} shares a code", errors[i]);
    }
}

#[test]
fn overlap_detection() {
    let buf = [0f32; 8];
    let p = buf.as_ptr();
    assert!(overlaps(p, 4, p.wrapping_add(3), 4));
    assert!(!overlaps(p, 4, p.wrapping_add(4), 4));
    assert!(!overlaps(p, 0, p, 4));
}

#[test]
fn info_reports_precision() {
    for (bytes, precision) in [(BLOB, DWS_PRECISION_F32), (BLOB_I8, DWS_PRECISION_I8)] {
        let blob = aligned(bytes);
        let mut m = zero_model();
        let mut info = core::mem::MaybeUninit::<dws_info>::uninit();
        // SAFETY: valid storage and buffers that outlive their use.
        let info = unsafe {
            assert_eq!(
                dws_model_open(&mut m, blob.as_ptr().cast(), bytes.len()),
                DWS_OK
            );
            assert_eq!(dws_model_info(&m, info.as_mut_ptr()), DWS_OK);
            info.assume_init()
        };
        assert_eq!(info.precision, precision);
        assert!(info.param_bytes > 0 && info.param_bytes < bytes.len());
        assert!(info.is_classifier);
        assert_eq!(info.num_classes as usize, info.output_len);
        assert_eq!(info.num_weight_matrices, 3);
        assert_eq!(&info.dims[..4], &[2, 4, 4, 3]);
        assert!(info.dims[4..].iter().all(|&d| d == 0));
    }
}

/// `dws_run_i8` on an input quantized by the caller equals `dws_run_f32` on the
/// same values in f32, bit for bit; and it refuses f32 models and bad arguments.
#[test]
fn run_i8_matches_run_f32_on_the_dequantized_input() {
    let (words, words_f32) = (aligned(BLOB_I8), aligned(BLOB));
    let (mut m, mut mf) = (zero_model(), zero_model());
    // SAFETY: the storage is valid and the blobs outlive the models.
    unsafe {
        assert_eq!(
            dws_model_open(&mut m, words.as_ptr().cast(), BLOB_I8.len()),
            DWS_OK
        );
        assert_eq!(
            dws_model_open(&mut mf, words_f32.as_ptr().cast(), BLOB.len()),
            DWS_OK
        );
    }
    let case_words = aligned(CASE);
    let case =
        CaseRepr::new_checked(&bytemuck::cast_slice::<u32, u8>(&case_words)[..CASE.len()]).unwrap();
    // SAFETY: opened above.
    let (ni, ns, no) = unsafe {
        (
            dws_model_input_len(&m),
            dws_model_scratch_len(&m),
            dws_model_output_len(&m),
        )
    };
    let mut x = vec![0f32; ni];
    case.input(0, &mut x).unwrap();
    // Quantize per tensor as a sensor would: one scale per W_i and b_i.
    let model =
        dws_core::Model::new_checked(&bytemuck::cast_slice::<u32, u8>(&words)[..BLOB_I8.len()])
            .unwrap();
    let shape = model.shape();
    let mut q = vec![0i8; ni];
    let mut scales = vec![0f32; shape.tensors()];
    let mut deq = vec![0f32; ni];
    for (t, s) in scales.iter_mut().enumerate() {
        let at = shape.offset(t, 1);
        let r = at..at + shape.cells(t);
        *s = x[r.clone()].iter().fold(1e-6f32, |a, v| a.max(v.abs())) / 127.0;
        for i in r {
            q[i] = (x[i] / *s).round() as i8;
            deq[i] = q[i] as f32 * *s;
        }
    }
    let mut scratch = vec![0f32; ns];
    let (mut y8, mut yf) = (vec![0f32; no], vec![0f32; no]);
    // SAFETY: every buffer has the length passed with it.
    unsafe {
        let st = dws_run_i8(
            &m,
            q.as_ptr(),
            ni,
            scales.as_ptr(),
            scales.len(),
            scratch.as_mut_ptr(),
            ns,
            y8.as_mut_ptr(),
            no,
        );
        assert_eq!(st, DWS_OK);
        let st = dws_run_f32(
            &m,
            deq.as_ptr(),
            ni,
            scratch.as_mut_ptr(),
            ns,
            yf.as_mut_ptr(),
            no,
        );
        assert_eq!(st, DWS_OK);
        assert!(y8.iter().zip(&yf).all(|(a, b)| a.to_bits() == b.to_bits()));
        let bad_scales = dws_run_i8(
            &m,
            q.as_ptr(),
            ni,
            scales.as_ptr(),
            1,
            scratch.as_mut_ptr(),
            ns,
            y8.as_mut_ptr(),
            no,
        );
        assert_eq!(bad_scales, DWS_ERR_INPUT_LENGTH);
        let null = dws_run_i8(
            &m,
            q.as_ptr(),
            ni,
            core::ptr::null(),
            0,
            scratch.as_mut_ptr(),
            ns,
            y8.as_mut_ptr(),
            no,
        );
        assert_eq!(null, DWS_ERR_NULL);
        let nsf = dws_model_scratch_len(&mf).max(ns);
        let mut big = vec![0f32; nsf];
        let f32_model = dws_run_i8(
            &mf,
            q.as_ptr(),
            ni,
            scales.as_ptr(),
            scales.len(),
            big.as_mut_ptr(),
            nsf,
            y8.as_mut_ptr(),
            no,
        );
        assert_eq!(f32_model, DWS_ERR_WRONG_PRECISION);
    }
}
