//! Batches of weight spaces as named tensors (`weights.{i}`, `biases.{i}`) and
//! the flat per-input layout the core takes.

use crate::tensors::{Tensor, TensorMap};
use anyhow::{bail, Result};
use dws_core::plan::{Output, Spec};
use dws_core::Model;

/// What reading a model's inputs and writing its outputs needs to know: its
/// [`Spec`] and sizes. A [`Model`] knows them; so does a board that announced
/// its model over a serial link (`dws serial`).
pub trait Contract {
    /// Input-network widths, features, output kind.
    fn spec(&self) -> &Spec;
    /// f32 values of one input.
    fn input_len(&self) -> usize;
    /// f32 values of one output.
    fn output_len(&self) -> usize;
    /// Whether the model normalizes its inputs itself (dataset statistics
    /// folded in); `None` where that is not known.
    fn normalizes_inputs(&self) -> Option<bool>;
}

impl Contract for Model<'_> {
    fn spec(&self) -> &Spec {
        Model::spec(self)
    }
    fn input_len(&self) -> usize {
        Model::input_len(self)
    }
    fn output_len(&self) -> usize {
        Model::output_len(self)
    }
    fn normalizes_inputs(&self) -> Option<bool> {
        crate::inspect::statistics_len(self).ok().map(|n| n > 0)
    }
}

/// A board's identity (`dws_embedded::protocol::Identity`), whose sizes were
/// checked against its spec when it was decoded.
impl Contract for dws_embedded::protocol::Identity {
    fn spec(&self) -> &Spec {
        &self.spec
    }
    fn input_len(&self) -> usize {
        self.input_len as usize
    }
    fn output_len(&self) -> usize {
        self.output_len as usize
    }
    fn normalizes_inputs(&self) -> Option<bool> {
        None
    }
}

/// `weights.{i}` is `[B, d_i, d_{i+1}, F]`, `biases.{i}` is `[B, d_{i+1}, F]`:
/// the tensors' names and per-input shapes for features `f`.
pub fn tensor_shapes(dims: &[u32], f: usize) -> Vec<(String, Vec<usize>)> {
    let l = dims.len() - 1;
    let d = |i: usize| dims[i] as usize;
    let mut out: Vec<_> = (0..l)
        .map(|i| (format!("weights.{i}"), vec![d(i), d(i + 1), f]))
        .collect();
    out.extend((0..l).map(|i| (format!("biases.{i}"), vec![d(i + 1), f])));
    out
}

/// Flattens a batch of named input tensors into `[B, input_len]` in the core's order.
/// Returns the batch size and the data.
pub fn flatten_inputs(
    model: &(impl Contract + ?Sized),
    tensors: &TensorMap,
) -> Result<(usize, Vec<f32>)> {
    let shapes = tensor_shapes(&model.spec().dims, model.spec().input_features as usize);
    let mut batch = None;
    for (name, shape) in &shapes {
        let Some(t) = tensors.get(name) else {
            const LISTED: usize = 10;
            let mut present: Vec<String> = tensors
                .keys()
                .take(LISTED)
                .map(|k| format!("`{k}`"))
                .collect();
            if tensors.len() > LISTED {
                present.push(format!("... ({} more)", tensors.len() - LISTED));
            }
            let inr = tensors.keys().any(|k| k.ends_with(".weight"));
            bail!(
                "input tensor `{name}` is missing (expected shape [B, {}]); the file has {}{}",
                join(shape),
                if present.is_empty() {
                    "no tensors".to_string()
                } else {
                    present.join(", ")
                },
                if inr {
                    " (one INR's state_dict? INR files are read from a folder, a splits JSON \
                     or a .pth/.pt file: see docs/datasets.md)"
                } else {
                    ""
                }
            );
        };
        if t.shape.len() != shape.len() + 1 || t.shape[1..] != shape[..] {
            bail!(
                "input tensor `{name}` has shape {:?}, expected [B, {}]",
                t.shape,
                join(shape)
            );
        }
        match batch {
            None => batch = Some(t.shape[0]),
            Some(b) if b != t.shape[0] => bail!(
                "input tensor `{name}` has batch size {}, others have {b}",
                t.shape[0]
            ),
            _ => {}
        }
        if let Some(what) = t.non_finite() {
            bail!(
                "input tensor `{name}` holds {what} (the first index is the input's position in the batch)"
            );
        }
    }
    for name in tensors.keys() {
        if !shapes.iter().any(|(n, _)| n == name) {
            bail!("unexpected input tensor `{name}` (the model takes weights.0..{l} and biases.0..{l})", l = shapes.len() / 2 - 1);
        }
    }
    let batch = batch.unwrap_or(0);
    let per = model.input_len();
    let mut data = vec![0f32; batch * per];
    let mut at = 0;
    for (name, shape) in &shapes {
        let n: usize = shape.iter().product();
        let t = &tensors[name];
        for b in 0..batch {
            data[b * per + at..b * per + at + n].copy_from_slice(&t.data[b * n..(b + 1) * n]);
        }
        at += n;
    }
    Ok((batch, data))
}

/// Splits `[B, output_len]` outputs into named tensors: `logits` or `weights.{i}`/`biases.{i}`.
pub fn unflatten_outputs(
    model: &(impl Contract + ?Sized),
    batch: usize,
    data: &[f32],
) -> Result<TensorMap> {
    let per = model.output_len();
    let mut out = TensorMap::new();
    match model.spec().output {
        Output::Logits { classes } => {
            out.insert(
                "logits".into(),
                Tensor::new(vec![batch, classes as usize], data.to_vec())?,
            );
        }
        Output::WeightSpace { features } => {
            let mut at = 0;
            for (name, shape) in tensor_shapes(&model.spec().dims, features as usize) {
                let n: usize = shape.iter().product();
                let mut t = Vec::with_capacity(batch * n);
                for b in 0..batch {
                    t.extend_from_slice(&data[b * per + at..b * per + at + n]);
                }
                let mut full = vec![batch];
                full.extend(shape);
                out.insert(name, Tensor::new(full, t)?);
                at += n;
            }
        }
    }
    Ok(out)
}

fn join(s: &[usize]) -> String {
    s.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
