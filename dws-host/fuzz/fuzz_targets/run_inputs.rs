//! Fuzzes the `dws run` input path: safetensors bytes -> `tensors::parse_safetensors`
//! -> `weight_space::flatten_inputs` -> `runner::run_batch` (1 thread) ->
//! `weight_space::unflatten_outputs`, against two fixed fixture models:
//! `dws_ds_mean_uneven` (a `DWSModel`, dims 3-5-7-2, 2 features) and
//! `clf_nobias_sab` (a classifier with set attention, dims 2-4-4-3, 1 feature).
//!
//! Properties: nothing panics; every rejection is an `Err`; inputs that
//! `flatten_inputs` accepts always run and give `[batch, output_len]` values that
//! `unflatten_outputs` splits back into tensors of the model's output shapes.
#![no_main]

use dws_core::Model;
use dws_host::blob_io::AlignedBlob;
use dws_host::{runner, tensors, weight_space};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static MODELS: LazyLock<Vec<Model<'static>>> = LazyLock::new(|| {
    let blobs: [&[u8]; 2] = [
        include_bytes!("../../../tests/fixtures/dws_ds_mean_uneven/model.dws"),
        include_bytes!("../../../tests/fixtures/clf_nobias_sab/model.dws"),
    ];
    blobs
        .iter()
        .map(|b| {
            let blob: &'static AlignedBlob = Box::leak(Box::new(AlignedBlob::from_bytes(b)));
            blob.model().expect("fixture model opens")
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let models = &*MODELS;
    let named = match tensors::parse_safetensors(data) {
        Ok(t) => t,
        Err(e) => {
            assert!(!format!("{e:#}").is_empty());
            return;
        }
    };
    for m in models {
        let (batch, inputs) = match weight_space::flatten_inputs(m, &named) {
            Ok(x) => x,
            Err(e) => {
                assert!(!format!("{e:#}").is_empty());
                continue;
            }
        };
        assert_eq!(inputs.len(), batch * m.input_len());
        let out = runner::run_batch(m, &inputs, batch, 1)
            .unwrap_or_else(|e| panic!("accepted inputs failed to run: {e:#}"));
        assert_eq!(out.len(), batch * m.output_len());
        let outputs = weight_space::unflatten_outputs(m, batch, &out)
            .unwrap_or_else(|e| panic!("outputs failed to unflatten: {e:#}"));
        let total: usize = outputs.values().map(|t| t.data.len()).sum();
        assert_eq!(total, out.len());
        assert!(outputs.values().all(|t| t.shape.first() == Some(&batch)));
    }
});
