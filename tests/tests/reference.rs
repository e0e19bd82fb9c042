//! The reference suite over the in-process backends, its negative control,
//! the permutation properties and the freshness of the committed case files.

use dws_core::plan::{Op, Output};
use dws_core::quantized::{Act, Kernels};
use dws_host::blob_io::{decode, encode, AlignedBlob};
use dws_host::fast::{FastModel, FastOptions, Isa};
use dws_host::quantize::Activations;
use dws_reference::permute::{HiddenPermutation, SplitMix};
use dws_reference::{
    golden_case, golden_files, run_golden_suite, run_suite, run_suite_with, shared, Backend,
    CoreBackend, FastBackend, HostBackend, QHostBackend, MODES,
};

#[test]
fn core_backend_passes_every_fixture() {
    let fixtures = shared();
    assert!(fixtures.len() >= 10);
    let r = run_suite(&mut CoreBackend, fixtures);
    r.assert_all_passed(fixtures.len());
}

#[test]
fn host_backend_passes_every_fixture_with_one_and_two_threads() {
    let fixtures = shared();
    for threads in [1, 2] {
        let r = run_suite(&mut HostBackend { threads }, fixtures);
        r.assert_all_passed(fixtures.len());
    }
}

/// Drops the first block of the first DWS layer: every fixture must then fail.
#[test]
fn negative_control_a_broken_block_fails_every_fixture() {
    let fixtures = shared();
    let r = run_suite_with(&mut CoreBackend, fixtures, |_, blob| {
        let mut plan = decode(blob).unwrap();
        let first = plan.ops.iter_mut().find_map(|op| match op {
            Op::Block(b) => Some(b),
            _ => None,
        });
        first.unwrap().scale = 0.0;
        encode(&plan).unwrap()
    });
    assert_eq!((r.passed, r.failed), (0, fixtures.len()));
}

#[test]
fn permuting_hidden_neurons_commutes_with_every_fixture() {
    let mut rng = SplitMix(0x5eed);
    for f in shared() {
        let m = f.blob.model().unwrap();
        let fin = m.spec().input_features as usize;
        let mut scratch = vec![0f32; m.scratch_len()];
        let (mut y, mut yp) = (vec![0f32; m.output_len()], vec![0f32; m.output_len()]);
        for x in f.inputs.chunks(m.input_len()) {
            for _ in 0..3 {
                let perm = HiddenPermutation::random(m.dims(), &mut rng);
                m.run(x, &mut scratch, &mut y).unwrap();
                m.run(&perm.apply(x, fin), &mut scratch, &mut yp).unwrap();
                let want = match m.spec().output {
                    Output::Logits { .. } => y.clone(),
                    Output::WeightSpace { features } => perm.apply(&y, features as usize),
                };
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (a, b) in yp.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale,
                        "{}: {a} vs {b} (scale {scale})",
                        f.name
                    );
                }
            }
        }
    }
}

/// Firmware and C embed `model.dws` and `case.bin`: they must match what the
/// converter produces today (`cargo run -p dws-reference -- write-cases`).
#[test]
fn committed_case_files_are_up_to_date() {
    for f in shared() {
        let blob = std::fs::read(f.dir.join("model.dws")).unwrap();
        assert!(
            blob == f.blob.bytes(),
            "{}/model.dws is stale: run `cargo run -p dws-reference -- write-cases`",
            f.name
        );
        let case = std::fs::read(f.dir.join("case.bin")).unwrap();
        assert!(
            case == f.case,
            "{}/case.bin is stale: run `cargo run -p dws-reference -- write-cases`",
            f.name
        );
        AlignedBlob::from_bytes(&blob).model().unwrap();
    }
}

#[test]
fn quantized_core_and_host_match_the_golden_outputs_bit_for_bit() {
    let fixtures = shared();
    for mode in MODES {
        for r in [
            run_golden_suite(&mut CoreBackend, fixtures, mode),
            run_golden_suite(&mut HostBackend { threads: 1 }, fixtures, mode),
            run_golden_suite(&mut HostBackend { threads: 2 }, fixtures, mode),
        ] {
            r.assert_all_passed(fixtures.len());
        }
    }
}

/// The host's quantized kernels (AVX2 where the CPU has it, and the portable
/// ones) give the core's bits on every fixture, in both modes.
#[test]
fn quantized_host_kernels_match_the_golden_outputs_bit_for_bit() {
    let fixtures = shared();
    for mode in MODES {
        for isa in [Isa::Avx2Fma, Isa::Portable] {
            for threads in [1, 2] {
                for one_at_a_time in [false, true] {
                    let mut backend = QHostBackend {
                        threads,
                        isa,
                        one_at_a_time,
                    };
                    let r = run_golden_suite(&mut backend, fixtures, mode);
                    r.assert_all_passed(fixtures.len());
                }
            }
        }
    }
    // One input on two threads needs two cores (which CI has).
    let m = fixtures[0].int8.blob.model().unwrap();
    let engine = dws_host::fast::quantized::QEngine::new(&m, Isa::detect()).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(engine.pairs(1, 2), cores >= 2);
}

/// Kernels whose joins claim to run in parallel (so the executor also splits
/// a block by rows) but run the parts one after the other: the second part
/// first, with its own scratch full of garbage (`reversed`), or the first part
/// and then the second on the same scratch, filled with garbage between them
/// (as the host does when its helper thread has not taken the second part).
/// The executor's parts must not depend on each other or on leftover scratch.
struct Split {
    reversed: bool,
}

impl<A: Act> Kernels<A> for Split {
    fn parallel(&self) -> bool {
        true
    }

    fn join<F, G, RA, RB>(&mut self, scratch: &mut [u8], a: F, b: G) -> (RA, RB)
    where
        F: FnOnce(&mut Self, &mut [u8]) -> RA + Send,
        G: FnOnce(&mut Self, &mut [u8]) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        if !self.reversed {
            let ra = a(self, scratch);
            scratch.fill(0xa5);
            return (ra, b(self, scratch));
        }
        // An 8-aligned part of a byte buffer, as the executor needs.
        let mut other = vec![0xa5u8; scratch.len() + 8];
        let at = other.as_ptr().align_offset(8);
        let rb = b(self, &mut other[at..at + scratch.len()]);
        scratch.fill(0x5a);
        (a(self, scratch), rb)
    }
}

/// The executor split in two parts (blocks dealt to both, the costliest split
/// by rows) gives the sequential bits on every fixture, on any machine.
#[test]
fn quantized_parts_in_either_order_give_the_same_bits() {
    for (f, mode) in shared().iter().flat_map(|f| MODES.map(|m| (f, m))) {
        let m = f.golden(mode).blob.model().unwrap();
        let mut scratch = vec![0f32; m.scratch_len()];
        let (mut want, mut got) = (vec![0f32; m.output_len()], vec![0f32; m.output_len()]);
        for x in f.inputs.chunks(m.input_len()) {
            m.run(x, &mut scratch, &mut want).unwrap();
            for reversed in [true, false] {
                let split = &mut Split { reversed };
                match mode {
                    Activations::Int8 => {
                        m.run_quantized_with::<i8>(split, x, &mut scratch, &mut got)
                    }
                    Activations::Int16 => {
                        m.run_quantized_with::<i16>(split, x, &mut scratch, &mut got)
                    }
                }
                .unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{} reversed {reversed}", f.name);
            }
        }
    }
}

/// Integer arithmetic is exact, so relabeling hidden neurons changes int8 and
/// 16x8 outputs not even in the last bit (beyond relabeling them).
#[test]
fn quantized_is_bit_identical_under_hidden_permutations_and_batch_positions() {
    let mut rng = SplitMix(0x1178);
    for (f, mode) in shared().iter().flat_map(|f| MODES.map(|m| (f, m))) {
        let m = f.golden(mode).blob.model().unwrap();
        let fin = m.spec().input_features as usize;
        let mut scratch = vec![0f32; m.scratch_len()];
        let (mut y, mut yp) = (vec![0f32; m.output_len()], vec![0f32; m.output_len()]);
        for x in f.inputs.chunks(m.input_len()) {
            for _ in 0..3 {
                let perm = HiddenPermutation::random(m.dims(), &mut rng);
                m.run(x, &mut scratch, &mut y).unwrap();
                m.run(&perm.apply(x, fin), &mut scratch, &mut yp).unwrap();
                let want = match m.spec().output {
                    Output::Logits { .. } => y.clone(),
                    Output::WeightSpace { features } => perm.apply(&y, features as usize),
                };
                assert!(
                    yp.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{}",
                    f.name
                );
            }
        }
        // The same input at every position of a batch of 7, with 2 threads.
        let x = &f.inputs[..m.input_len()];
        let batch: Vec<f32> = (0..7).flat_map(|_| x.iter().copied()).collect();
        let out = dws_host::runner::run_batch(&m, &batch, 7, 2).unwrap();
        m.run(x, &mut scratch, &mut y).unwrap();
        for row in out.chunks(m.output_len()) {
            assert!(
                row.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}",
                f.name
            );
        }
    }
}

/// Blobs that earlier versions of dws wrote in format 1 (int8 with one weight
/// scale per tensor; kept in `tests/fixtures/format1` with their golden
/// outputs) still open and give the same bits on the core and the host.
#[test]
fn format1_int8_blobs_run_unchanged() {
    let dir = dws_reference::fixtures_dir().join("format1");
    for name in [
        "clf_ds_fc2_out2",
        "clf_sab_heads4_mean",
        "dws_downsample_ds",
    ] {
        let blob = AlignedBlob::read(&dir.join(format!("{name}.int8.dws"))).unwrap();
        let m = blob.model().unwrap();
        assert_eq!(m.format_version(), 1, "{name}");
        let case = std::fs::read(dir.join(format!("{name}.case_int8.bin"))).unwrap();
        let case = dws_core::case::CaseRepr::new_checked(&case).unwrap();
        let batch = case.batch as usize;
        let mut inputs = vec![0f32; batch * m.input_len()];
        for (k, x) in inputs.chunks_mut(m.input_len()).enumerate() {
            case.input(k, x).unwrap();
        }
        let mut core = vec![0f32; batch * m.output_len()];
        let mut scratch = vec![0f32; m.scratch_len()];
        for (x, y) in inputs
            .chunks(m.input_len())
            .zip(core.chunks_mut(m.output_len()))
        {
            m.run(x, &mut scratch, y).unwrap();
        }
        let host = dws_host::runner::run_batch(&m, &inputs, batch, 2).unwrap();
        for out in [core, host] {
            dws_reference::check_outputs(&case, &out).unwrap();
        }
    }
}

/// The committed quantized blobs are what the quantizer writes today (afresh,
/// with its defaults), and their golden cases what the core computes.
#[test]
fn committed_golden_files_are_up_to_date() {
    let stale = |file: &str, f: &dws_reference::Fixture| {
        format!(
            "{}/{file} is stale: run `cargo run -p dws-reference -- write-cases`",
            f.name
        )
    };
    for f in shared() {
        for mode in MODES {
            let (blob_file, case_file) = golden_files(mode);
            let fresh = AlignedBlob::from_bytes(&f.quantize(mode).unwrap());
            let committed = std::fs::read(f.dir.join(blob_file)).unwrap();
            assert!(committed == fresh.bytes(), "{}", stale(blob_file, f));
            let case = golden_case(&f.name, &fresh.model().unwrap(), f.batch, &f.inputs).unwrap();
            let committed = std::fs::read(f.dir.join(case_file)).unwrap();
            assert!(committed == case, "{}", stale(case_file, f));
        }
    }
}

#[test]
fn fast_backend_passes_every_fixture_with_one_and_two_threads() {
    let fixtures = shared();
    let mut backends = vec![FastBackend::new(1), FastBackend::new(2)];
    // The portable kernels too, where the AVX2 ones are the default.
    let portable = FastOptions {
        isa: Isa::Portable,
        ..FastOptions::default()
    };
    if FastOptions::default().isa != Isa::Portable {
        backends.push(FastBackend {
            threads: 2,
            options: portable,
        });
    }
    for mut b in backends {
        let r = run_suite(&mut b, fixtures);
        assert_eq!(
            (r.passed, r.failed),
            (fixtures.len(), 0),
            "{}: failures: {:?}",
            b.name(),
            r.failures
        );
    }
}

/// A batch of 37 inputs, the fixture's inputs repeated: every row must match the
/// same input run alone (within 1e-6 relative; in practice bit for bit), for
/// several chunk sizes and thread counts, and stay within the suite's tolerance.
#[test]
fn fast_backend_does_not_depend_on_batch_position_chunk_or_threads() {
    const N: usize = 37;
    for f in shared() {
        let m = f.blob.model().unwrap();
        let (ilen, olen) = (m.input_len(), m.output_len());
        let batch: Vec<f32> = (0..N)
            .flat_map(|k| {
                f.inputs[(k % f.batch) * ilen..(k % f.batch + 1) * ilen]
                    .iter()
                    .copied()
            })
            .collect();
        let alone = FastModel::new(&m).unwrap();
        let single: Vec<Vec<f32>> = (0..f.batch)
            .map(|k| {
                alone
                    .run_batch(&f.inputs[k * ilen..(k + 1) * ilen], 1, 1)
                    .unwrap()
            })
            .collect();
        let case = f.case();
        for (chunk, threads) in [(1, 1), (5, 2), (dws_host::fast::DEFAULT_CHUNK, 2), (N, 1)] {
            let opts = FastOptions {
                chunk,
                ..FastOptions::default()
            };
            let out = FastModel::with_options(&m, opts)
                .unwrap()
                .run_batch(&batch, N, threads)
                .unwrap();
            for (k, row) in out.chunks(olen).enumerate() {
                let want = &single[k % f.batch];
                let scale = want.iter().fold(f32::MIN_POSITIVE, |a, v| a.max(v.abs()));
                for (a, b) in row.iter().zip(want) {
                    assert!(
                        (a - b).abs() <= 1e-6 * scale,
                        "{}: chunk {chunk}, {threads} threads, position {k}: {a} vs {b}",
                        f.name
                    );
                }
                case.check(k % f.batch, row)
                    .unwrap_or_else(|e| panic!("{}: position {k} out of tolerance: {e:?}", f.name));
            }
        }
    }
}

#[test]
fn fast_engine_refuses_quantized_blobs_and_bad_inputs() {
    let f = &shared()[0];
    for mode in MODES {
        let q = f.golden(mode).blob.model().unwrap();
        assert!(FastModel::new(&q).is_err());
    }
    let m = f.blob.model().unwrap();
    let fast = FastModel::new(&m).unwrap();
    let mut x = f.inputs[..m.input_len()].to_vec();
    assert!(fast.run_batch(&x, 2, 1).is_err(), "wrong length");
    x[3] = f32::NAN;
    assert!(fast.run_batch(&x, 1, 1).is_err(), "NaN input");
    assert!(fast.run_batch(&[], 0, 2).unwrap().is_empty());
}
