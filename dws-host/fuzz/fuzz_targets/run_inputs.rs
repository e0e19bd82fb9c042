//! Fuzzes the `dws run` input path: safetensors bytes -> `tensors::parse_safetensors`
//! -> `weight_space::flatten_inputs` -> `runner::run_batch` (the core, 1 thread) and
//! the default engine of `dws run` (`runner::BatchRunner`, the fast engine), plus the
//! fast engine with the portable kernels and a chunk of 3 -> `weight_space::unflatten_outputs`,
//! against two fixed fixture models: `dws_ds_mean_uneven` (a `DWSModel`, dims
//! 3-5-7-2, 2 features) and `clf_nobias_sab` (a classifier with set attention, dims
//! 2-4-4-3, 1 feature).
//!
//! Properties: nothing panics; every rejection is an `Err`; inputs that
//! `flatten_inputs` accepts always run on every engine, the engines agree (within
//! 1e-3 of the output's scale, when the inputs are moderate), and
//! `unflatten_outputs` splits the outputs back into `[batch, ...]` tensors.
#![no_main]

use dws_core::Model;
use dws_host::blob_io::AlignedBlob;
use dws_host::fast::{FastModel, FastOptions, Isa};
use dws_host::runner::{self, BatchRunner, EngineKind};
use dws_host::{tensors, weight_space};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

struct Fixture {
    model: &'static Model<'static>,
    default: BatchRunner<'static, 'static>,
    portable: FastModel,
}

static MODELS: LazyLock<Vec<Fixture>> = LazyLock::new(|| {
    let blobs: [&[u8]; 2] = [
        include_bytes!("../../../tests/fixtures/dws_ds_mean_uneven/model.dws"),
        include_bytes!("../../../tests/fixtures/clf_nobias_sab/model.dws"),
    ];
    blobs
        .iter()
        .map(|b| {
            let blob: &'static AlignedBlob = Box::leak(Box::new(AlignedBlob::from_bytes(b)));
            let model: &'static Model<'static> =
                Box::leak(Box::new(blob.model().expect("fixture model opens")));
            let opts = FastOptions {
                chunk: 3,
                isa: Isa::Portable,
            };
            Fixture {
                model,
                default: BatchRunner::new(model, EngineKind::default()).expect("fast engine"),
                portable: FastModel::with_options(model, opts).expect("fast engine"),
            }
        })
        .collect()
});

/// Whether two engines' outputs agree, for inputs of moderate magnitude.
fn agree(core: &[f32], other: &[f32], inputs: &[f32], olen: usize) -> bool {
    if inputs.iter().any(|v| v.abs() > 100.0) {
        return true;
    }
    core.chunks(olen).zip(other.chunks(olen)).all(|(a, b)| {
        if !a.iter().all(|v| v.is_finite()) {
            return true;
        }
        let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-3 * scale)
    })
}

fuzz_target!(|data: &[u8]| {
    let named = match tensors::parse_safetensors(data) {
        Ok(t) => t,
        Err(e) => {
            assert!(!format!("{e:#}").is_empty());
            return;
        }
    };
    for f in MODELS.iter() {
        let m = f.model;
        let (batch, inputs) = match weight_space::flatten_inputs(m, &named) {
            Ok(x) => x,
            Err(e) => {
                assert!(!format!("{e:#}").is_empty());
                continue;
            }
        };
        let olen = m.output_len();
        assert_eq!(inputs.len(), batch * m.input_len());
        let out = runner::run_batch(m, &inputs, batch, 1)
            .unwrap_or_else(|e| panic!("accepted inputs failed to run: {e:#}"));
        assert_eq!(out.len(), batch * olen);
        for (name, other) in [
            ("default engine", f.default.run(&inputs, batch, 1)),
            (
                "portable fast engine",
                f.portable.run_batch(&inputs, batch, 1),
            ),
        ] {
            let other = other.unwrap_or_else(|e| panic!("{name} failed: {e:#}"));
            assert_eq!(other.len(), out.len());
            assert!(
                agree(&out, &other, &inputs, olen),
                "{name} differs from the core"
            );
        }
        let outputs = weight_space::unflatten_outputs(m, batch, &out)
            .unwrap_or_else(|e| panic!("outputs failed to unflatten: {e:#}"));
        let total: usize = outputs.values().map(|t| t.data.len()).sum();
        assert_eq!(total, out.len());
        assert!(outputs.values().all(|t| t.shape.first() == Some(&batch)));
    }
});
