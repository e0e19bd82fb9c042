//! What a file given in the wrong place holds, so that an error can say it in one line
//! and point at the command that takes it.
//!
//! Users hand `dws convert` an INR instead of the DWSNet's checkpoint, `--config` the
//! statistics file, `dws run` a `.pt` checkpoint instead of a blob. The tensors' names
//! and shapes tell these apart ([`Contents::of`]); a file's first bytes tell a torch
//! file, a safetensors file and a blob apart ([`describe_file`]).

use crate::tensors::{self, TensorMap};
use std::path::Path;

/// Module names that only a DWSNet's state_dict has (upstream's `DWSLayer` blocks and
/// the classifier's invariant head).
const DWSNET_MODULES: [&str; 5] = [
    "weight_to_weight",
    "bias_to_bias",
    "bias_to_weight",
    "weight_to_bias",
    "clf",
];

/// What a set of named tensors is, told from its key names and shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// A DWSNet state_dict (a key names one of upstream's DWS blocks).
    DwsNet,
    /// An INR: an MLP's `nn.Linear` state_dict, with its weight matrices' shapes as
    /// DWSNets sees them (`[in, out]`, the transpose of PyTorch's).
    Inr(Vec<[usize; 2]>),
    /// Upstream's dataset statistics (`statistics.pth`: `weights.mean.{i}`, ...).
    Statistics,
    /// A batch of `dws run` inputs (`weights.{i}` `[B, d_i, d_{i+1}, F]`).
    InputBatch {
        /// Inputs in the batch.
        batch: usize,
    },
    /// No tensors at all.
    Empty,
    /// Anything else.
    Other,
}

impl Contents {
    /// Tells what `sd` holds.
    pub fn of(sd: &TensorMap) -> Contents {
        if sd.is_empty() {
            return Contents::Empty;
        }
        let dwsnet = sd
            .keys()
            .any(|k| k.split('.').any(|part| DWSNET_MODULES.contains(&part)));
        if dwsnet {
            return Contents::DwsNet;
        }
        if sd.contains_key("weights.mean.0") && sd.contains_key("weights.std.0") {
            return Contents::Statistics;
        }
        if let Some(t) = sd.get("weights.0").filter(|t| t.shape.len() == 4) {
            return Contents::InputBatch { batch: t.shape[0] };
        }
        match inr_shapes(sd) {
            Some(shapes) => Contents::Inr(shapes),
            None => Contents::Other,
        }
    }

    /// What it is, as a noun phrase: `an INR with 3 weight matrices (2,32),(32,32),(32,1)`.
    pub fn noun(&self) -> String {
        match self {
            Contents::DwsNet => "a DWSNet checkpoint (a state_dict)".into(),
            Contents::Inr(shapes) => {
                let list: Vec<String> = shapes.iter().map(|[i, o]| format!("({i},{o})")).collect();
                format!(
                    "an INR: {} weight matri{} {}",
                    shapes.len(),
                    if shapes.len() == 1 { "x" } else { "ces" },
                    list.join(",")
                )
            }
            Contents::Statistics => {
                "dataset statistics (weights.mean.{i}, weights.std.{i}, ...)".into()
            }
            Contents::InputBatch { batch } => {
                format!("a batch of {batch} inputs (weights.{{i}}, biases.{{i}})")
            }
            Contents::Empty => "no tensors at all".into(),
            Contents::Other => "tensors of no kind dws reads".into(),
        }
    }

    /// Why `dws convert` cannot take these tensors as a DWSNet state_dict, in one line,
    /// with the command meant; `None` for a DWSNet's. `weight_shapes` are the config's
    /// (an INR of those shapes is an input of the model being converted).
    pub fn not_a_checkpoint(&self, sd: &TensorMap, weight_shapes: &[Vec<usize>]) -> Option<String> {
        let why = match self {
            Contents::DwsNet => return None,
            Contents::Inr(shapes) => {
                let fits = shapes
                    .iter()
                    .map(|s| s.to_vec())
                    .eq(weight_shapes.iter().cloned());
                format!(
                    "it holds {}{} -- did you mean `dws run`? (`dws convert` takes the \
                     DWSNet's own state_dict; a converted model runs on INR files)",
                    self.noun(),
                    if fits {
                        ", an input network of this config's shapes"
                    } else {
                        ""
                    }
                )
            }
            Contents::Statistics => format!(
                "it holds {}: give them as `--statistics`, after the DWSNet's state_dict",
                self.noun()
            ),
            Contents::InputBatch { .. } => format!(
                "it holds {}: inputs for `dws run MODEL.dws INPUTS`",
                self.noun()
            ),
            Contents::Empty => "it holds no tensors".into(),
            Contents::Other => {
                const SHOWN: usize = 4;
                let mut keys: Vec<String> = sd
                    .iter()
                    .take(SHOWN)
                    .map(|(k, t)| format!("`{k}` {:?}", t.shape))
                    .collect();
                if sd.len() > SHOWN {
                    keys.push(format!("... ({} more)", sd.len() - SHOWN));
                }
                format!(
                    "none of its {} tensors ({}) belongs to a DWS layer ({}, ...)",
                    sd.len(),
                    keys.join(", "),
                    DWSNET_MODULES[..4].join(", ")
                )
            }
        };
        Some(format!("not a DWSNet checkpoint: {why}"))
    }

    /// Where a file with these contents goes, for a file given in the wrong place.
    pub fn belongs(&self, file: &Path) -> Option<String> {
        let f = file.display();
        match self {
            Contents::DwsNet => Some(format!(
                "convert it first with `dws convert {f} --config config.json -o model.dws`"
            )),
            Contents::Inr(_) => Some(format!(
                "did you mean `dws run MODEL.dws {f} -o predictions.csv`? (INR files are \
                 what a converted model runs on)"
            )),
            Contents::Statistics => Some(format!("give it to `dws convert` as `--statistics {f}`")),
            Contents::InputBatch { .. } => Some(format!(
                "inputs go after the model: `dws run MODEL.dws {f} -o outputs.safetensors`"
            )),
            Contents::Empty | Contents::Other => None,
        }
    }
}

/// The weight shapes (`[in, out]`) of an INR in `sd`: the keys ending in `weight` are
/// 2-D, those ending in `bias` 1-D, as many of each, and in layer order (as
/// [`crate::dataset::inr_to_input`] orders them) each layer's inputs are the
/// previous one's outputs.
fn inr_shapes(sd: &TensorMap) -> Option<Vec<[usize; 2]>> {
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let mut weights: Vec<&String> = sd.keys().filter(|k| last(k) == "weight").collect();
    let mut biases: Vec<&String> = sd.keys().filter(|k| last(k) == "bias").collect();
    weights.sort_by(|a, b| crate::dataset::natural_cmp(a, b));
    biases.sort_by(|a, b| crate::dataset::natural_cmp(a, b));
    if weights.is_empty() || weights.len() != biases.len() {
        return None;
    }
    let mut shapes = Vec::new();
    for (w, b) in weights.iter().zip(&biases) {
        let (w, b) = (&sd[*w].shape, &sd[*b].shape);
        let ([out, inp], [bout]) = (w.as_slice(), b.as_slice()) else {
            return None;
        };
        if out != bout || shapes.last().is_some_and(|[_, o]: &[usize; 2]| o != inp) {
            return None;
        }
        shapes.push([*inp, *out]);
    }
    Some(shapes)
}

/// What the file at `path` is, in words (`a PyTorch file (torch.save) holding an INR:
/// ...`), from its first bytes and, for a torch or safetensors file, its tensors (then
/// also returned).
pub fn describe_file(path: &Path) -> (String, Option<Contents>) {
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let head = &head[..n];
    if head.starts_with(&dws_core::blob::MAGIC) {
        return ("a dws model blob".into(), None);
    }
    let Some(kind) = tensors::container(head) else {
        let text = std::fs::read_to_string(path).is_ok();
        let what = if text { "a text file" } else { "binary data" };
        return (what.into(), None);
    };
    match tensors::read_checkpoint(path) {
        Ok(sd) => {
            let contents = Contents::of(&sd);
            (
                format!("{kind} holding {}", contents.noun()),
                Some(contents),
            )
        }
        Err(_) => (kind.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::Tensor;

    fn sd(entries: &[(&str, &[usize])]) -> TensorMap {
        entries
            .iter()
            .map(|&(k, shape)| {
                let n = shape.iter().product();
                (
                    k.to_string(),
                    Tensor::new(shape.to_vec(), vec![0.0; n]).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn tells_an_inr_by_its_chain_of_linears() {
        let inr = sd(&[
            ("seq.0.weight", &[32, 2]),
            ("seq.0.bias", &[32]),
            ("seq.1.weight", &[32, 32]),
            ("seq.1.bias", &[32]),
            ("seq.2.weight", &[1, 32]),
            ("seq.2.bias", &[1]),
        ]);
        let c = Contents::of(&inr);
        assert_eq!(c, Contents::Inr(vec![[2, 32], [32, 32], [32, 1]]));
        assert_eq!(c.noun(), "an INR: 3 weight matrices (2,32),(32,32),(32,1)");
        let hint = c.not_a_checkpoint(&inr, &[vec![2, 32], vec![32, 32], vec![32, 1]]);
        assert_eq!(
            hint.as_deref(),
            Some(
                "not a DWSNet checkpoint: it holds an INR: 3 weight matrices \
                 (2,32),(32,32),(32,1), an input network of this config's shapes -- did you \
                 mean `dws run`? (`dws convert` takes the DWSNet's own state_dict; a converted \
                 model runs on INR files)"
            )
        );
        // Widths that do not chain are not an MLP.
        let broken = sd(&[
            ("a.weight", &[4, 2]),
            ("a.bias", &[4]),
            ("b.weight", &[1, 3]),
            ("b.bias", &[1]),
        ]);
        assert_eq!(Contents::of(&broken), Contents::Other);
    }

    #[test]
    fn tells_dwsnets_statistics_batches_and_nothing() {
        let dws = sd(&[("layers.layers.0.weight_to_weight.layers.0_0.x", &[1])]);
        assert_eq!(Contents::of(&dws), Contents::DwsNet);
        let stats = sd(&[
            ("weights.mean.0", &[2, 32, 1]),
            ("weights.std.0", &[2, 32, 1]),
        ]);
        assert_eq!(Contents::of(&stats), Contents::Statistics);
        let batch = sd(&[("weights.0", &[5, 2, 32, 1]), ("biases.0", &[5, 32, 1])]);
        assert_eq!(Contents::of(&batch), Contents::InputBatch { batch: 5 });
        assert_eq!(Contents::of(&TensorMap::new()), Contents::Empty);
        assert_eq!(Contents::of(&sd(&[("x", &[3])])), Contents::Other);
    }
}
