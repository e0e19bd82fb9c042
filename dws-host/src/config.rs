//! The conversion config: upstream constructor keyword arguments as JSON.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// Which upstream class the checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ModelKind {
    /// `nn.models.DWSModelForClassification`: returns logits.
    #[serde(rename = "DWSModelForClassification")]
    Classifier,
    /// `nn.models.DWSModel`: returns a weight space.
    #[serde(rename = "DWSModel")]
    Equivariant,
}

/// Upstream `set_layer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetLayerKind {
    /// DeepSets.
    Ds,
    /// Set attention block.
    Sab,
}

/// Upstream `reduction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReductionKind {
    /// Max pooling.
    Max,
    /// Mean pooling.
    Mean,
    /// Sum pooling.
    Sum,
}

/// The keyword arguments of `DWSModel(...)` / `DWSModelForClassification(...)`,
/// under their upstream names and with upstream defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `"DWSModelForClassification"` or `"DWSModel"`.
    pub model: ModelKind,
    /// `(d_i, d_{i+1})` per weight matrix.
    pub weight_shapes: Vec<Vec<usize>>,
    /// `(d_{i+1},)` per bias; derived from `weight_shapes` when absent.
    #[serde(default)]
    pub bias_shapes: Option<Vec<Vec<usize>>>,
    /// Features per input entry.
    pub input_features: usize,
    /// Features of the hidden DWS layers.
    pub hidden_dim: usize,
    /// Number of DWS layers after the first.
    #[serde(default = "two")]
    pub n_hidden: usize,
    /// Classes of a classifier.
    #[serde(default = "ten")]
    pub n_classes: usize,
    /// Pooling reduction.
    #[serde(default = "max")]
    pub reduction: ReductionKind,
    /// Whether linear layers have biases.
    #[serde(default = "yes")]
    pub bias: bool,
    /// Linear layers per MLP inside a block.
    #[serde(default = "one")]
    pub n_fc_layers: usize,
    /// Attention heads of the set attention layers.
    #[serde(default = "eight")]
    pub num_heads: usize,
    /// Set layer kind.
    #[serde(default = "sab")]
    pub set_layer: SetLayerKind,
    /// Linear layers of the classifier head.
    #[serde(default = "one")]
    pub n_out_fc: usize,
    /// `W_0`'s input dimension inside each layer, if down-sampled.
    #[serde(default)]
    pub input_dim_downsample: Option<usize>,
    /// Model-level skip connection.
    #[serde(default)]
    pub add_skip: bool,
    /// Per-layer skip connections.
    #[serde(default)]
    pub add_layer_skip: bool,
    /// Batch norm between layers.
    #[serde(default)]
    pub bn: bool,
    /// Only near-diagonal blocks.
    #[serde(default)]
    pub diagonal: bool,
    /// Output features of a classifier's equivariant part.
    #[serde(default)]
    pub equiv_out_features: Option<usize>,
    /// Output features of a `DWSModel`.
    #[serde(default)]
    pub output_features: Option<usize>,
    /// Training only; ignored (upstream's dropout is the identity here, see the README).
    #[serde(default)]
    pub dropout_rate: Option<f64>,
    /// Training only; ignored.
    #[serde(default)]
    pub init_scale: Option<f64>,
    /// Training only; ignored.
    #[serde(default)]
    pub init_off_diag_scale_penalty: Option<f64>,
}

fn two() -> usize {
    2
}
fn ten() -> usize {
    10
}
fn one() -> usize {
    1
}
fn eight() -> usize {
    8
}
fn yes() -> bool {
    true
}
fn max() -> ReductionKind {
    ReductionKind::Max
}
fn sab() -> SetLayerKind {
    SetLayerKind::Sab
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading config {}", path.display()))?;
        let Ok(text) = String::from_utf8(bytes) else {
            use crate::lookalike::{describe_file, Contents};
            let (what, contents) = describe_file(path);
            let instead = match contents {
                Some(Contents::Statistics) => "; statistics go to `--statistics`",
                Some(Contents::DwsNet) => "; the checkpoint is `dws convert`'s first argument",
                _ => "",
            };
            anyhow::bail!(
                "{} is not a JSON config but {what}: `--config` takes a JSON file of upstream's \
                 constructor arguments, such as examples/digits/config.json (see the README, \
                 \"config.json\"){instead}",
                path.display(),
            );
        };
        Config::parse(&text).with_context(|| format!("in config {}", path.display()))
    }

    /// Parses and checks a config.
    pub fn parse(text: &str) -> Result<Config> {
        let c: Config = serde_json::from_str(text)
            .map_err(|e| {
                // No default upstream, and a state_dict does not tell the hidden widths.
                if e.to_string().starts_with("missing field `weight_shapes`") {
                    anyhow::anyhow!(
                        "{e}: the shapes [d_in, d_out] of the input networks' weight \
                         matrices, e.g. [[2, 32], [32, 32], [32, 1]] for MNIST INRs \
                         (upstream's trainer takes them from the dataset)"
                    )
                } else {
                    anyhow::Error::new(e)
                }
            })
            .context("parsing the config JSON")?;
        c.check()?;
        Ok(c)
    }

    /// `d_0 .. d_L`.
    pub fn dims(&self) -> Vec<usize> {
        let mut d = vec![self.weight_shapes[0][0]];
        d.extend(self.weight_shapes.iter().map(|s| s[1]));
        d
    }

    /// Whether the input skip's one output feature is added to each of the
    /// `hidden_dim` features that the model returns (PyTorch broadcasting): a
    /// `DWSModel` with no hidden layers, `add_skip` and `output_features` 1,
    /// whose single DWS layer has `hidden_dim` outputs.
    pub fn skip_broadcasts(&self) -> bool {
        self.model == ModelKind::Equivariant
            && self.n_hidden == 0
            && self.add_skip
            && self.output_features() == 1
    }

    /// Whether the single DWS layer's one output feature is added to each of
    /// the `output_features` (or `equiv_out_features`) features of the input
    /// skip (PyTorch broadcasting): no hidden layers, `add_skip`, `hidden_dim`
    /// 1 and a wider skip.
    pub fn layer_broadcasts(&self) -> bool {
        self.n_hidden == 0 && self.add_skip && self.hidden_dim == 1 && self.output_features() > 1
    }

    /// Features the equivariant part returns.
    pub fn output_features(&self) -> usize {
        match self.model {
            ModelKind::Classifier => self.equiv_out_features,
            ModelKind::Equivariant => self.output_features,
        }
        .unwrap_or(self.hidden_dim)
    }

    fn check(&self) -> Result<()> {
        let w = &self.weight_shapes;
        if w.len() < 3 {
            bail!(
                "weight_shapes has {} matrices; upstream DWSNets need at least 3",
                w.len()
            );
        }
        if w.len() > dws_core::plan::MAX_LAYERS {
            bail!(
                "weight_shapes has {} matrices; dws supports at most {}",
                w.len(),
                dws_core::plan::MAX_LAYERS
            );
        }
        for (i, s) in w.iter().enumerate() {
            if s.len() != 2 || s.contains(&0) {
                bail!("weight_shapes[{i}] must be two positive sizes, got {s:?}");
            }
            if i + 1 < w.len() && s[1] != w[i + 1][0] {
                bail!(
                    "weight_shapes[{i}] = {s:?} does not chain into weight_shapes[{}] = {:?}",
                    i + 1,
                    w[i + 1]
                );
            }
        }
        if let Some(b) = &self.bias_shapes {
            if b.len() != w.len() || b.iter().zip(w).any(|(b, w)| b.as_slice() != [w[1]]) {
                bail!(
                    "bias_shapes {b:?} do not match weight_shapes (expected [[d_1], [d_2], ...])"
                );
            }
        }
        for (name, v) in [
            ("input_features", self.input_features),
            ("hidden_dim", self.hidden_dim),
            ("n_fc_layers", self.n_fc_layers),
            ("num_heads", self.num_heads),
            ("n_out_fc", self.n_out_fc),
            ("n_classes", self.n_classes),
            ("output features", self.output_features()),
        ] {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        for (name, v) in [
            ("n_fc_layers", self.n_fc_layers),
            ("n_out_fc", self.n_out_fc),
        ] {
            if v > dws_core::plan::MAX_FC_LAYERS {
                bail!(
                    "{name} = {v}; dws supports at most {}",
                    dws_core::plan::MAX_FC_LAYERS
                );
            }
        }
        // dws-core rejects tensors of more than 2^28 elements: checking the same bound
        // here keeps every shape product of the conversion in range, the plan's u32
        // fields exact (a size of 2^32 + 5 must not silently become 5) and the
        // conversion's memory bounded.
        const MAX_SIZE: usize = 1 << 28;
        let cells = w.iter().try_fold(0usize, |acc, s| {
            acc.checked_add(s[0].checked_mul(s[1])?.checked_add(s[1])?)
        });
        for (name, f) in [
            ("input_features", self.input_features),
            ("hidden_dim", self.hidden_dim),
            ("output features", self.output_features()),
        ] {
            if cells
                .and_then(|c| c.checked_mul(f))
                .is_none_or(|n| n > MAX_SIZE)
            {
                bail!("a weight space with {name} = {f} has more than 2^28 elements (weight_shapes: {w:?}); dws supports at most 2^28");
            }
        }
        for (name, v) in [
            ("num_heads", self.num_heads),
            ("n_classes", self.n_classes),
            (
                "input_dim_downsample",
                self.input_dim_downsample.unwrap_or(1),
            ),
        ] {
            if v > MAX_SIZE {
                bail!("{name} = {v}; dws supports at most 2^28");
            }
        }
        if (self.add_skip || self.add_layer_skip) && !self.bias {
            bail!(
                "add_skip / add_layer_skip with bias=false: upstream crashes on this configuration"
            );
        }
        if self.input_dim_downsample == Some(0) {
            bail!("input_dim_downsample must be positive");
        }
        if self.n_hidden == 0
            && self.output_features() != self.hidden_dim
            && (self.add_skip || self.model == ModelKind::Classifier)
            && !self.skip_broadcasts()
            && !self.layer_broadcasts()
        {
            // Upstream's only layer then has hidden_dim outputs: a head sized for
            // equiv_out_features does not fit it, and a skip of another width
            // fits only by broadcasting. dws follows the broadcasts of a
            // one-feature skip (`skip_broadcasts`) or layer (`layer_broadcasts`).
            bail!(
                "n_hidden = 0 with {} = {} != hidden_dim = {}: upstream's single DWS layer \
                 outputs hidden_dim features, so this configuration runs upstream only by \
                 broadcasting the layer's output (or not at all); dws does not support it",
                match self.model {
                    ModelKind::Classifier => "equiv_out_features",
                    ModelKind::Equivariant => "output_features",
                },
                self.output_features(),
                self.hidden_dim
            );
        }
        if self.layer_broadcasts() && self.input_dim_downsample.is_some() {
            bail!(
                "n_hidden = 0 with hidden_dim = 1 and a skip of {} features: upstream adds the \
                 layer's one feature to each of them (broadcasting); dws repeats that feature, \
                 which it does without input_dim_downsample only",
                self.output_features()
            );
        }
        if self.model == ModelKind::Classifier && self.output_features.is_some() {
            bail!("output_features belongs to DWSModel; a classifier uses equiv_out_features");
        }
        if self.model == ModelKind::Equivariant && self.equiv_out_features.is_some() {
            bail!("equiv_out_features belongs to DWSModelForClassification; DWSModel uses output_features");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use serde_json::{json, Value};

    fn parse(overrides: Value) -> anyhow::Result<Config> {
        let mut c = json!({
            "model": "DWSModel", "weight_shapes": [[3, 5], [5, 7], [7, 2]],
            "input_features": 2, "hidden_dim": 6
        });
        for (k, v) in overrides.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        Config::parse(&c.to_string())
    }

    /// Sizes whose products overflowed usize in `convert` (a panic), or that did
    /// not fit the plan's u32 fields (silently truncated), are rejected up front.
    #[test]
    fn huge_sizes_are_rejected() {
        assert!(parse(json!({})).is_ok());
        let max = usize::MAX;
        for o in [
            json!({"weight_shapes": [[max, max], [max, max], [max, 2]]}),
            json!({"weight_shapes": [[3, 4294967301u64], [4294967301u64, 7], [7, 2]]}),
            json!({"hidden_dim": max}),
            json!({"input_features": max}),
            json!({"output_features": max}),
            json!({"num_heads": max}),
            json!({"input_dim_downsample": max}),
            json!({"hidden_dim": 1 << 28, "bn": true}),
        ] {
            let e = parse(o.clone()).err().map(|e| format!("{e:#}"));
            let e = e.unwrap_or_default();
            assert!(e.contains("at most 2^28"), "{o}: {e}");
        }
    }

    /// Without hidden layers upstream's one DWS layer has hidden_dim outputs; a
    /// head of another width does not fit it, and a skip of another width only
    /// by broadcasting: supported where the skip has one output, or the layer
    /// one output and DeepSets set layers.
    #[test]
    fn no_hidden_layers_with_another_output_width_is_rejected_when_it_matters() {
        assert!(parse(json!({"n_hidden": 0, "output_features": 3})).is_ok());
        for o in [
            json!({"n_hidden": 0, "output_features": 2, "add_skip": true}),
            json!({"n_hidden": 0, "hidden_dim": 2, "output_features": 6, "add_skip": true}),
            json!({"model": "DWSModelForClassification", "n_hidden": 0, "equiv_out_features": 8}),
            json!({"model": "DWSModelForClassification", "n_hidden": 0, "equiv_out_features": 1, "add_skip": true}),
        ] {
            let e = parse(o.clone()).err().map(|e| format!("{e:#}"));
            assert!(e.unwrap_or_default().contains("n_hidden = 0"), "{o}");
        }
        assert!(parse(json!({"n_hidden": 0, "output_features": 6, "add_skip": true})).is_ok());
        let c = parse(json!({"n_hidden": 0, "output_features": 1, "add_skip": true})).unwrap();
        assert!(c.skip_broadcasts());
        assert!(
            !parse(json!({"n_hidden": 1, "output_features": 1, "add_skip": true}))
                .unwrap()
                .skip_broadcasts()
        );
        let mut one =
            json!({"n_hidden": 0, "hidden_dim": 1, "output_features": 6, "add_skip": true});
        assert!(parse(one.clone()).unwrap().layer_broadcasts());
        one["set_layer"] = "ds".into();
        assert!(parse(one.clone()).unwrap().layer_broadcasts());
        one["model"] = "DWSModelForClassification".into();
        one["equiv_out_features"] = one["output_features"].take();
        assert!(parse(one.clone()).unwrap().layer_broadcasts());
        one["input_dim_downsample"] = 2.into();
        let e = parse(one.clone()).err().map(|e| format!("{e:#}"));
        assert!(e.unwrap_or_default().contains("broadcasting"), "{one}");
    }

    /// `weight_shapes` is the one key a state_dict cannot tell: its absence says what it is.
    #[test]
    fn missing_weight_shapes_is_explained() {
        let e = Config::parse(r#"{"model": "DWSModel"}"#).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("missing field `weight_shapes`") && e.contains("[[2, 32]"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            Config::parse(r#"{"weight_shapes": [[2, 3]]}"#).unwrap_err()
        );
        assert!(
            e.contains("missing field `model`") && !e.contains("[[2, 32]"),
            "{e}"
        );
    }
}
