//! The reference suite on the CPU emulator of the CUDA kernels: the exact
//! launch list the GPU runs, the kernel sources compiled for the host (one
//! thread per block), GEMMs in plain Rust. This checks the lowering, the
//! buffer layout, the argument structs and the kernel arithmetic without a
//! GPU; it cannot check GPU concurrency, NVRTC or cuBLAS.

use dws_cuda::emulator::{self, EmulatedModel};
use dws_cuda::kernels::Kernel;
use dws_cuda::lower::Step;
use dws_reference::{run_golden_suite, run_suite, shared, Backend, Fixture, MODES};
use std::io::Write;

struct EmuBackend;

impl Backend for EmuBackend {
    fn name(&self) -> String {
        "cuda kernels on the CPU emulator".into()
    }
    fn run(&mut self, f: &Fixture, blob: &[u8]) -> anyhow::Result<Vec<f32>> {
        let mut m = EmulatedModel::load(blob)?;
        Ok(m.run_batch(&f.inputs, f.batch)?)
    }
}

/// Prints past the test harness's capture.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn skip_without_emulator() -> bool {
    if !emulator::available() {
        note("SKIPPED: kernel emulator not built (no C++ compiler)");
        return true;
    }
    false
}

#[test]
fn argument_structs_have_the_same_size_in_rust_and_cpp() {
    if skip_without_emulator() {
        return;
    }
    for &k in Kernel::ALL {
        assert_eq!(
            emulator::args_size(k).unwrap(),
            dws_cuda::args::size_of_args(k),
            "{}",
            k.name()
        );
    }
}

#[test]
fn every_launch_carries_its_kernels_argument_struct() {
    for f in shared() {
        for blob in [f.blob.bytes(), f.int8.blob.bytes(), f.x16.blob.bytes()] {
            let p = dws_cuda::lower_blob(blob).unwrap();
            for s in &p.steps {
                if let Step::Launch(l) = s {
                    assert_eq!(
                        l.args.bytes().len(),
                        dws_cuda::args::size_of_args(l.kernel),
                        "{}: {}",
                        f.name,
                        l.kernel.name()
                    );
                }
            }
        }
    }
}

#[test]
fn f32_reference_suite_on_the_emulator() {
    if skip_without_emulator() {
        return;
    }
    let fixtures = shared();
    let r = run_suite(&mut EmuBackend, fixtures);
    r.assert_all_passed(fixtures.len());
}

#[test]
fn quantized_reference_suites_on_the_emulator_are_bit_exact() {
    if skip_without_emulator() {
        return;
    }
    let fixtures = shared();
    for mode in MODES {
        let r = run_golden_suite(&mut EmuBackend, fixtures, mode);
        r.assert_all_passed(fixtures.len());
    }
}

/// Chunks of any size and any batch position give the same bits.
#[test]
fn results_do_not_depend_on_chunking_or_batch_position() {
    if skip_without_emulator() {
        return;
    }
    for f in shared().iter().filter(|f| f.batch >= 3) {
        for blob in [f.blob.bytes(), f.int8.blob.bytes(), f.x16.blob.bytes()] {
            let mut m = EmulatedModel::load(blob).unwrap();
            let whole = m.run_batch(&f.inputs, f.batch).unwrap();
            let chunked = m.run_chunked(&f.inputs, f.batch, 2).unwrap();
            assert_eq!(whole, chunked, "{}", f.name);
            let (il, ol) = (m.program().input_len, m.program().output_len);
            let last = f.batch - 1;
            let one = m
                .run_batch(&f.inputs[last * il..(last + 1) * il], 1)
                .unwrap();
            assert_eq!(one, whole[last * ol..], "{}", f.name);
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    if skip_without_emulator() {
        return;
    }
    let f = &shared()[0];
    let mut m = EmulatedModel::load(f.blob.bytes()).unwrap();
    let il = m.program().input_len;
    assert!(matches!(
        m.run_batch(&f.inputs[..il - 1], 1),
        Err(dws_cuda::Error::Input(_))
    ));
    let mut x = f.inputs[..il].to_vec();
    x[3] = f32::NAN;
    assert!(matches!(m.run_batch(&x, 1), Err(dws_cuda::Error::Input(_))));
    assert_eq!(m.run_batch(&[], 0).unwrap(), Vec::<f32>::new());
}

/// The one-block-per-row attention kernels (used for sets too large for the
/// per-set kernels) on every fixture.
#[test]
fn row_attention_kernels_pass_the_suites_too() {
    if skip_without_emulator() {
        return;
    }
    struct RowAttention;
    impl Backend for RowAttention {
        fn name(&self) -> String {
            "cuda kernels on the CPU emulator, per-row attention".into()
        }
        fn run(&mut self, f: &Fixture, blob: &[u8]) -> anyhow::Result<Vec<f32>> {
            let options = dws_cuda::lower::LowerOptions {
                row_attention: true,
            };
            let mut m = EmulatedModel::load_with(blob, options)?;
            Ok(m.run_batch(&f.inputs, f.batch)?)
        }
    }
    let fixtures = shared();
    let r = run_suite(&mut RowAttention, fixtures);
    r.assert_all_passed(fixtures.len());
    for mode in MODES {
        let r = run_golden_suite(&mut RowAttention, fixtures, mode);
        r.assert_all_passed(fixtures.len());
    }
}
