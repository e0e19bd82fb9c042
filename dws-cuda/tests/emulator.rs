//! The reference suite on the CPU emulator of the CUDA kernels: the exact
//! launch list the GPU runs, the kernel sources compiled for the host (one
//! thread per block), GEMMs in plain Rust. This checks the lowering, the
//! buffer layout, the argument structs and the kernel arithmetic without a
//! GPU; it cannot check GPU concurrency, NVRTC or cuBLAS.

use dws_core::quant::softmax::Score;
use dws_core::quant::Requant;
use dws_cuda::args::{LinearQArgs, NONE};
use dws_cuda::emulator::{self, fixed, EmulatedModel};
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

/// A small deterministic generator.
fn lcg(s: &mut u64) -> u64 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *s >> 16
}

/// The kernels' requantization and softmax exponent argument (quant.cuh) are
/// the core's, for int32 and int64 values (the 128-bit product from 32-bit
/// halves included), every shift, the extreme mantissas and values.
#[test]
fn fixed_point_helpers_match_the_core() {
    if skip_without_emulator() {
        return;
    }
    let mut s = 3;
    let edges32 = [
        0,
        1,
        -1,
        i32::MAX,
        i32::MIN,
        i32::MIN + 1,
        1 << 30,
        -(1 << 30),
    ];
    let edges64 = [
        0,
        1,
        -1,
        i32::MAX as i64,
        i32::MAX as i64 + 1,
        i32::MIN as i64,
        i32::MIN as i64 - 1,
        1 << 32,
        -(1 << 32),
        (1 << 32) - 1,
        1 << 40,
        -(1 << 40),
        i64::MAX,
        i64::MIN,
        i64::MIN + 1,
    ];
    for shift in 1..=62u8 {
        let ms = [
            0,
            1,
            1 << 18,
            (1 << 30) + 777,
            i32::MAX,
            (lcg(&mut s) as i32) & i32::MAX,
        ];
        for m in ms {
            let r = Requant { m, shift };
            let xs32: Vec<i32> = edges32
                .into_iter()
                .chain((0..100).map(|_| lcg(&mut s) as i32))
                .collect();
            for x in xs32 {
                assert_eq!(fixed::requant(r, x), Some(r.apply(x)), "{r:?} x={x}");
                let z = lcg(&mut s) as i32;
                let (hi, lo) = (x.max(z), x.min(z));
                let want = <i32 as Score>::exp_arg(hi, lo, r);
                assert_eq!(fixed::exp_arg(hi, lo, r), Some(want), "{r:?} {hi} {lo}");
            }
            let xs64: Vec<i64> = edges64
                .into_iter()
                .chain((0..200).map(|i| {
                    let v = ((lcg(&mut s) << 32) ^ lcg(&mut s)) as i64;
                    v >> (i % 48)
                }))
                .collect();
            for x in xs64 {
                assert_eq!(
                    fixed::requant_wide(r, x),
                    Some(r.apply_wide(x)),
                    "{r:?} x={x}"
                );
                let z = ((lcg(&mut s) << 32) ^ lcg(&mut s)) as i64 >> (lcg(&mut s) % 40);
                let (hi, lo) = (x.max(z), x.min(z));
                let want = <i64 as Score>::exp_arg(hi, lo, r);
                assert_eq!(
                    fixed::exp_arg_wide(hi, lo, r),
                    Some(want),
                    "{r:?} {hi} {lo}"
                );
            }
        }
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

/// Blobs of format 1 (int8, one weight scale per tensor, kept in
/// `tests/fixtures/format1` with their golden outputs) on the emulator.
#[test]
fn format1_int8_blobs_are_bit_exact() {
    if skip_without_emulator() {
        return;
    }
    let dir = dws_reference::fixtures_dir().join("format1");
    for name in [
        "clf_ds_fc2_out2",
        "clf_sab_heads4_mean",
        "dws_downsample_ds",
    ] {
        let blob = std::fs::read(dir.join(format!("{name}.int8.dws"))).unwrap();
        let case = std::fs::read(dir.join(format!("{name}.case_int8.bin"))).unwrap();
        let case = dws_core::case::CaseRepr::new_checked(&case).unwrap();
        let mut m = EmulatedModel::load(&blob).unwrap();
        let il = m.program().input_len;
        let batch = case.batch as usize;
        let mut inputs = vec![0f32; batch * il];
        for (k, x) in inputs.chunks_mut(il).enumerate() {
            case.input(k, x).unwrap();
        }
        let out = m.run_batch(&inputs, batch).unwrap();
        dws_reference::check_outputs(&case, &out).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
}

/// One weight scale per tensor (`LinearQ::Tensor`, `LogitScale::Tensor`) in
/// both modes: fixtures quantized afresh with `--weights per-tensor`, the
/// emulator against the core, bit for bit.
#[test]
fn per_tensor_blobs_match_the_core_in_both_modes() {
    use dws_host::quantize::{self, Activations, Rounding, WeightScales};
    if skip_without_emulator() {
        return;
    }
    let names = [
        "clf_sab_heads4_mean",
        "dws_bn_f3",
        "dws_downsample_layer_skip",
    ];
    for f in shared().iter().filter(|f| names.contains(&f.name.as_str())) {
        for mode in [Activations::Int8, Activations::Int16] {
            let opts = quantize::Options {
                weights: WeightScales::PerTensor,
                rounding: Rounding::Nearest,
                threads: 1,
                ..quantize::Options::new(mode)
            };
            let model = f.blob.model().unwrap();
            let cal = quantize::calibrate(&model, &f.inputs, &opts).unwrap();
            let blob = quantize::quantize(&model, &cal, &opts).unwrap().blob;
            let aligned = dws_host::blob_io::AlignedBlob::from_bytes(&blob);
            let q = aligned.model().unwrap();
            let mut scratch = vec![0f32; q.scratch_len()];
            let mut core = vec![0f32; f.batch * q.output_len()];
            for (x, y) in f
                .inputs
                .chunks(q.input_len())
                .zip(core.chunks_mut(q.output_len()))
            {
                q.run(x, &mut scratch, y).unwrap();
            }
            let mut m = EmulatedModel::load(&blob).unwrap();
            for s in &m.program().steps {
                if let Step::Launch(l) = s {
                    if matches!(l.kernel, Kernel::LinearI8 | Kernel::LinearI16) {
                        let a: LinearQArgs = bytemuck::pod_read_unaligned(l.args.bytes());
                        assert_eq!(a.req_m, NONE, "{}", f.name);
                    }
                }
            }
            let gpu = m.run_batch(&f.inputs, f.batch).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&gpu), bits(&core), "{} ({mode:?})", f.name);
        }
    }
}
