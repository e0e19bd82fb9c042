//! The reference suite on the GPU. Without a usable CUDA device every test
//! here prints `SKIPPED: no CUDA device (<reason>)` to the real stderr (past
//! the harness's capture) and returns: a skip, not a pass.
//!
//! `DWS_FIXTURES_DIR` points the suite at a copy of `tests/fixtures` when the
//! test binary runs on another machine than the one that built it
//! (`gpu-check.sh`).

use dws_cuda::{CudaModel, Error, Options};
use dws_reference::{run_golden_suite, run_suite, Backend, Fixture, MODES};
use std::io::Write;
use std::sync::OnceLock;

/// Prints past the test harness's capture.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// `Ok` with the device name, or prints the skip line.
fn gpu(test: &str) -> Option<String> {
    match dws_cuda::device_info(0) {
        Ok(info) => Some(info.name),
        Err(e) => {
            note(&format!("SKIPPED: no CUDA device ({e}) [{test}]"));
            None
        }
    }
}

/// The fixtures, from `DWS_FIXTURES_DIR` when set.
fn fixtures() -> &'static [Fixture] {
    static ALL: OnceLock<Vec<Fixture>> = OnceLock::new();
    ALL.get_or_init(|| match std::env::var_os("DWS_FIXTURES_DIR") {
        None => dws_reference::load_all().expect("loading the fixtures"),
        Some(dir) => load_from(std::path::Path::new(&dir)).expect("loading DWS_FIXTURES_DIR"),
    })
}

/// `Fixture::load` for a fixtures folder elsewhere.
fn load_from(root: &std::path::Path) -> anyhow::Result<Vec<Fixture>> {
    dws_reference::fixture_names_in(root)?
        .iter()
        .map(|name| Fixture::load_from(root, name))
        .collect()
}

struct CudaBackend {
    device: String,
    options: Options,
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        format!("cuda ({}, tf32 {})", self.device, self.options.tf32)
    }
    fn run(&mut self, f: &Fixture, blob: &[u8]) -> anyhow::Result<Vec<f32>> {
        let mut m = CudaModel::load_with(blob, self.options.clone())?;
        Ok(m.run_batch(&f.inputs, f.batch)?)
    }
}

#[test]
fn gpu_f32_reference_suite() {
    let Some(device) = gpu("gpu_f32_reference_suite") else {
        return;
    };
    let fx = fixtures();
    let options = Options::default();
    let r = run_suite(&mut CudaBackend { device, options }, fx);
    r.assert_all_passed(fx.len());
}

#[test]
fn gpu_quantized_reference_suites_are_bit_exact() {
    let Some(device) = gpu("gpu_quantized_reference_suites_are_bit_exact") else {
        return;
    };
    let fx = fixtures();
    for mode in MODES {
        let options = Options::default();
        let device = device.clone();
        let r = run_golden_suite(&mut CudaBackend { device, options }, fx, mode);
        r.assert_all_passed(fx.len());
    }
}

/// Quantized results (int8, 16x8) are identical whatever the chunk and the batch position;
/// f32 results agree to float rounding.
#[test]
fn gpu_chunking_and_batch_position() {
    if gpu("gpu_chunking_and_batch_position").is_none() {
        return;
    }
    for f in fixtures().iter().filter(|f| f.batch >= 3) {
        for (blob, exact) in [
            (f.blob.bytes(), false),
            (f.int8.blob.bytes(), true),
            (f.x16.blob.bytes(), true),
        ] {
            let mut m = CudaModel::load(blob).unwrap();
            let whole = m.run_batch(&f.inputs, f.batch).unwrap();
            let small = Options {
                max_chunk: 2,
                ..Options::default()
            };
            let mut c = CudaModel::load_with(blob, small).unwrap();
            let chunked = c.run_batch(&f.inputs, f.batch).unwrap();
            let scale = whole.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
            for (a, b) in whole.iter().zip(&chunked) {
                if exact {
                    assert_eq!(a.to_bits(), b.to_bits(), "{}", f.name);
                } else {
                    assert!((a - b).abs() <= 1e-4 * scale, "{}: {a} vs {b}", f.name);
                }
            }
        }
    }
}

/// TF32 is opt-in and still lands near the f32 results.
#[test]
fn gpu_tf32_is_close() {
    let Some(device) = gpu("gpu_tf32_is_close") else {
        return;
    };
    let f = &fixtures()[0];
    let mut exact = CudaModel::load(f.blob.bytes()).unwrap();
    let mut fast = CudaModel::load_with(
        f.blob.bytes(),
        Options {
            tf32: true,
            ..Options::default()
        },
    )
    .unwrap();
    let a = exact.run_batch(&f.inputs, f.batch).unwrap();
    let b = fast.run_batch(&f.inputs, f.batch).unwrap();
    let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale));
    note(&format!(
        "{device}: TF32 worst relative difference {worst:.2e}"
    ));
    assert!(worst < 5e-2, "{worst}");
}

/// Without a GPU: errors, never panics; an invalid blob is reported as such
/// before the GPU is even looked for.
#[test]
fn no_gpu_is_an_error_not_a_panic() {
    let blob = fixtures()[0].blob.bytes();
    let mut bad = blob.to_vec();
    bad[40] ^= 0xff;
    assert!(matches!(CudaModel::load(&bad), Err(Error::Model(_))));
    if dws_cuda::available().is_ok() {
        note("SKIPPED: a CUDA device is present [no_gpu_is_an_error_not_a_panic]");
        return;
    }
    let e = CudaModel::load(blob).unwrap_err();
    assert!(matches!(e, Error::NoGpu(_)), "{e}");
    assert!(e.to_string().starts_with("no usable CUDA GPU"), "{e}");
    let e = dws_cuda::run_batch(blob, &fixtures()[0].inputs, fixtures()[0].batch).unwrap_err();
    assert!(matches!(e, Error::NoGpu(_)), "{e}");
    assert!(matches!(dws_cuda::available(), Err(Error::NoGpu(_))));
    assert!(matches!(
        dws_cuda::bench(blob, 8, 1, Options::default()),
        Err(Error::NoGpu(_))
    ));
}
