//! `dws inspect`: what a blob holds and what it costs.

use dws_core::plan::{Map, Op, Output, SetLayer};
use dws_core::Model;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A multi-line, human-readable summary of the model.
pub fn summary(model: &Model<'_>, blob_bytes: usize) -> Result<String, dws_core::Error> {
    let spec = model.spec();
    let lay = model.layout();
    let mut s = String::new();
    let dims: Vec<String> = spec.dims.iter().map(|d| d.to_string()).collect();
    let kind = match spec.output {
        Output::Logits { classes } => format!("DWSModelForClassification, {classes} classes"),
        Output::WeightSpace { features } => format!("DWSModel, {features} output features"),
    };
    let _ = writeln!(s, "model:            {kind}");
    let _ = writeln!(
        s,
        "input network:    dims {} ({} weight matrices), {} input feature(s)",
        dims.join("-"),
        dims.len() - 1,
        spec.input_features
    );
    let precision = match model.precision() {
        dws_core::blob::Precision::F32 => "f32",
        dws_core::blob::Precision::Int8 => {
            "int8 (int8 weights and activations, int32 accumulators)"
        }
        dws_core::blob::Precision::Int16x8 => {
            "16x8 (int8 weights, int16 activations, int32/int64 accumulators)"
        }
    };
    let _ = writeln!(s, "precision:        {precision}");
    let mut layer = 0;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let describe = |kinds: &mut BTreeMap<String, usize>, s: &mut String| {
        if !kinds.is_empty() {
            let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            let _ = writeln!(s, "                    blocks: {}", list.join(", "));
            kinds.clear();
        }
    };
    for op in model.ops() {
        match op? {
            Op::Normalize { .. } => {
                let _ = writeln!(
                    s,
                    "  normalize        input statistics (mean/std per element)"
                );
            }
            Op::Dws(l) => {
                describe(&mut kinds, &mut s);
                let rs = l.resample.as_ref().map_or(String::new(), |r| {
                    format!(", W_0 down-sampled to {} rows", r.rows)
                });
                let _ = writeln!(
                    s,
                    "  dws layer {layer:<6} {} -> {} features, {} blocks, reduction {:?}{rs}",
                    l.fin, l.fout, l.blocks, l.reduction
                );
                layer += 1;
            }
            Op::Block(b) => {
                let map = match &b.map {
                    Map::Mlp(m) => format!("mlp{}", m.layers.len()),
                    Map::Set(SetLayer::DeepSets { .. }) => "ds".into(),
                    Map::Set(SetLayer::Attention { heads, .. }) => format!("sab{heads}"),
                };
                *kinds.entry(format!("{:?}/{map}", b.kind)).or_default() += 1;
            }
            Op::Affine { .. } => {
                describe(&mut kinds, &mut s);
                let _ = writeln!(s, "  batch norm       (folded affine)");
            }
            Op::Relu => {
                describe(&mut kinds, &mut s);
                let _ = writeln!(s, "  relu");
            }
            Op::InputSkip(l) => {
                describe(&mut kinds, &mut s);
                let _ = writeln!(s, "  input skip       linear {} -> {}", l.fin, l.fout);
            }
            Op::Quant(_) => {}
            Op::Head(h) => {
                describe(&mut kinds, &mut s);
                let widths: Vec<String> = h
                    .mlp
                    .layers
                    .iter()
                    .map(|l| format!("{}->{}", l.fin, l.fout))
                    .collect();
                let _ = writeln!(
                    s,
                    "  invariant head   reduction {:?}, mlp {}",
                    h.reduction,
                    widths.join(", ")
                );
            }
        }
    }
    describe(&mut kinds, &mut s);
    let params = match model.precision() {
        dws_core::blob::Precision::F32 => format!("{}", model.params().len()),
        dws_core::blob::Precision::Int8 => format!(
            "{} bytes (int8 weights, int32 biases, requantization)",
            model.param_bytes().len()
        ),
        dws_core::blob::Precision::Int16x8 => format!(
            "{} bytes (int8 weights, int64 biases, requantization)",
            model.param_bytes().len()
        ),
    };
    let _ = writeln!(s, "parameters:       {params}");
    let _ = writeln!(s, "blob bytes:       {blob_bytes}");
    let _ = writeln!(
        s,
        "scratch bytes:    {} ({} f32)",
        model.scratch_len() * 4,
        model.scratch_len()
    );
    if model.precision().is_quantized() {
        let l8 = model.qlayout();
        let _ = writeln!(
            s,
            "  {} regions:   input {} + activations 2 x {} + resample {} + block outputs {} + accumulator row {} + temporaries {}",
            model.precision().name(), l8.x0, l8.act, l8.down + l8.up, l8.ystore, l8.accrow, l8.tmp
        );
        let _ = writeln!(
            s,
            "RAM per inference: {} bytes (scratch; the blob stays in flash)",
            l8.bytes()
        );
    }
    let _ = writeln!(
        s,
        "input / output:   {} / {} f32",
        lay.input_len, lay.output_len
    );
    let _ = writeln!(
        s,
        "flops per input:  {} ({:.2} MFLOP)",
        lay.macs.saturating_mul(2),
        2.0 * lay.macs as f64 / 1e6
    );
    Ok(s)
}
