//! `dws inspect`: what a blob holds and what it costs, as text or JSON.

use dws_core::plan::{Map, Op, Output, SetLayer};
use dws_core::Model;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Parameters of the folded input statistics (the mean and std of every input
/// element: `2 * input_len` with `dws convert --statistics`, else 0). A blob's
/// parameter count is upstream's model's plus these.
pub fn statistics_len(model: &Model<'_>) -> Result<usize, dws_core::Error> {
    for op in model.ops() {
        if let Op::Normalize { mean, std } = op? {
            return Ok(mean.len as usize + std.len as usize);
        }
    }
    Ok(0)
}

/// The parameter count in words: `555020 (552650 of the model + 2370 input
/// statistics)`, or just the count without statistics.
pub fn parameters(model: &Model<'_>) -> Result<String, dws_core::Error> {
    let all = model.params().len();
    Ok(match statistics_len(model)? {
        0 => all.to_string(),
        stats => format!(
            "{all} ({} of the model + {stats} input statistics)",
            all.saturating_sub(stats)
        ),
    })
}

/// The line on input normalization: folded in, or none (inputs run as given).
fn normalization(model: &Model<'_>) -> Result<&'static str, dws_core::Error> {
    Ok(if statistics_len(model)? > 0 {
        "folded in (dataset statistics: inputs are normalized inside the model)"
    } else {
        "none (converted without --statistics: inputs run as given)"
    })
}

fn precision_name(model: &Model<'_>) -> &'static str {
    model.precision().name()
}

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
    let _ = writeln!(s, "normalization:    {}", normalization(model)?);
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
        dws_core::blob::Precision::F32 => parameters(model)?,
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

/// The summary as one JSON object (the same figures as [`summary`]).
pub fn json(model: &Model<'_>, blob_bytes: usize) -> Result<serde_json::Value, dws_core::Error> {
    let spec = model.spec();
    let lay = model.layout();
    let (kind, classes, output_features) = match spec.output {
        Output::Logits { classes } => ("DWSModelForClassification", Some(classes), None),
        Output::WeightSpace { features } => ("DWSModel", None, Some(features)),
    };
    let mut layers = Vec::new();
    for op in model.ops() {
        if let Op::Dws(l) = op? {
            layers.push(json!({
                "in_features": l.fin,
                "out_features": l.fout,
                "blocks": l.blocks,
                "reduction": format!("{:?}", l.reduction).to_lowercase(),
                "downsampled_rows": l.resample.as_ref().map(|r| r.rows),
            }));
        }
    }
    let stats = statistics_len(model)?;
    let quantized = model.precision().is_quantized();
    Ok(json!({
        "model": kind,
        "classes": classes,
        "output_features": output_features,
        "dims": spec.dims,
        "weight_matrices": spec.dims.len().saturating_sub(1),
        "input_features": spec.input_features,
        "precision": precision_name(model),
        "normalization": stats > 0,
        "dws_layers": layers,
        "parameters": (!quantized).then(|| model.params().len()),
        "statistics_parameters": stats,
        "parameter_bytes": model.param_bytes().len(),
        "blob_bytes": blob_bytes,
        "scratch_bytes": model.scratch_len() * 4,
        "ram_bytes": quantized.then(|| model.qlayout().bytes()),
        "input_len": lay.input_len,
        "output_len": lay.output_len,
        "flops_per_input": lay.macs.saturating_mul(2),
    }))
}
