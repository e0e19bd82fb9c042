//! The shipped real-data example (`examples/digits`): the runtime reproduces
//! PyTorch input by input, and int8 stays within the accuracy budget.

use dws_host::blob_io::{encode, AlignedBlob};
use dws_host::config::Config;
use dws_host::{convert, dataset, quantize, runner, tensors, weight_space};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits")
}

/// PyTorch's test logits: path -> (label, logits).
fn torch_logits() -> HashMap<String, (i64, Vec<f32>)> {
    let text = std::fs::read_to_string(example().join("torch_test_logits.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..3], ["path", "label", "predicted"]);
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let logits = f[3..].iter().map(|v| v.parse::<f32>().unwrap()).collect();
            (f[0].to_string(), (f[1].parse().unwrap(), logits))
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

struct Run {
    paths: Vec<String>,
    labels: Vec<i64>,
    logits: Vec<f32>,
    classes: usize,
}

fn run(blob: &AlignedBlob) -> Run {
    let model = blob.model().unwrap();
    let entries = dataset::read_splits(&example().join("splits_test.json"), "test", None).unwrap();
    let loaded = dataset::load_batch(&entries, model.dims(), model.input_len(), 2);
    assert!(loaded.failed.is_empty(), "unreadable test INRs");
    let n = loaded.ok.len();
    let logits = runner::run_batch(&model, &loaded.data, n, 2).unwrap();
    Run {
        paths: loaded.ok.iter().map(|&i| entries[i].path.clone()).collect(),
        labels: loaded
            .ok
            .iter()
            .map(|&i| entries[i].label.unwrap())
            .collect(),
        logits,
        classes: model.output_len(),
    }
}

fn f32_blob() -> AlignedBlob {
    let dir = example();
    let cfg = Config::load(&dir.join("config.json")).unwrap();
    let sd = tensors::read_checkpoint(&dir.join("model.pt")).unwrap();
    let stats = tensors::read_checkpoint(&dir.join("statistics.pth")).unwrap();
    let plan = convert::convert(&cfg, &sd, Some(&stats)).unwrap();
    AlignedBlob::from_bytes(&encode(&plan).unwrap())
}

fn accuracy(r: &Run) -> f64 {
    let right = r
        .logits
        .chunks(r.classes)
        .zip(&r.labels)
        .filter(|(l, y)| argmax(l) as i64 == **y)
        .count();
    right as f64 / r.labels.len() as f64
}

#[test]
fn predictions_match_pytorch_input_by_input() {
    let torch = torch_logits();
    let r = run(&f32_blob());
    assert_eq!(r.paths.len(), torch.len());
    let mut worst = 0f32;
    for (path, logits) in r.paths.iter().zip(r.logits.chunks(r.classes)) {
        let (label, want) = &torch[path];
        assert_eq!(
            argmax(logits),
            argmax(want),
            "{path}: prediction differs from PyTorch"
        );
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (a, b) in logits.iter().zip(want) {
            worst = worst.max((a - b).abs() / scale);
        }
        let _ = label;
    }
    assert!(worst <= 1e-4, "worst relative logit error {worst}");
    let torch_acc = torch
        .values()
        .filter(|(y, l)| argmax(l) as i64 == *y)
        .count() as f64
        / torch.len() as f64;
    assert_eq!(accuracy(&r), torch_acc);
    println!("digits: {} test INRs, accuracy {:.4} (PyTorch {:.4}), worst relative logit error {worst:.2e}", r.paths.len(), accuracy(&r), torch_acc);
}

/// Quantizes the example with the quantizer's defaults in `mode` (calibrated
/// on `calibration.safetensors`) and returns (agreement with f32 on the test
/// split, test inputs, f32 accuracy, quantized accuracy).
fn quantized_agreement(mode: quantize::Activations) -> (usize, usize, f64, f64) {
    let f = f32_blob();
    let model = f.model().unwrap();
    let cal = tensors::read_safetensors(&example().join("calibration.safetensors")).unwrap();
    let (_, inputs) = weight_space::flatten_inputs(&model, &cal).unwrap();
    let opts = quantize::Options::new(mode);
    let c = quantize::calibrate(&model, &inputs, &opts).unwrap();
    let q = AlignedBlob::from_bytes(&quantize::quantize(&model, &c, &opts).unwrap().blob);
    let (rf, rq) = (run(&f), run(&q));
    let agree = quantize::agreement(&rf.logits, &rq.logits, rf.classes);
    (agree, rf.paths.len(), accuracy(&rf), accuracy(&rq))
}

#[test]
fn int8_agrees_with_f32_on_the_test_split() {
    let (agree, n, af, aq) = quantized_agreement(quantize::Activations::Int8);
    println!("digits int8: top-1 agreement {agree}/{n}, accuracy f32 {af:.4} int8 {aq:.4}");
    // Measured: 344/360 (95.6%) agreement, accuracy 66.94% -> 66.39% (per-tensor
    // weights rounded to nearest gave 339/360). About the most int8 activations
    // allow on this model (docs/quantization.md, "Accuracy"); this guards
    // against regressions.
    assert!(agree >= 344, "int8 agrees with f32 on only {agree}/{n}");
    assert!(
        af - aq <= 0.02,
        "int8 accuracy {aq} drops more than 2 points from {af}"
    );
}

#[test]
fn sixteen_by_eight_agrees_with_f32_on_the_test_split() {
    let (agree, n, af, aq) = quantized_agreement(quantize::Activations::Int16);
    println!("digits 16x8: top-1 agreement {agree}/{n}, accuracy f32 {af:.4} 16x8 {aq:.4}");
    // Measured: 359/360 (99.7%), accuracy 66.94% -> 66.94%.
    assert!(agree >= 359, "16x8 agrees with f32 on only {agree}/{n}");
    assert!(
        (af - aq).abs() <= 0.005,
        "16x8 accuracy {aq} is more than 0.5 points from {af}"
    );
}
