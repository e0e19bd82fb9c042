//! What a state_dict's key names and shapes say about the config that built it.
//!
//! When a checkpoint does not fit its config, the list of missing and mis-shaped
//! entries rarely names the config key that is wrong (a missing `bn` shifts every
//! layer index; a wrong `set_layer` turns every set layer's keys into others). Upstream's
//! module tree tells most of the constructor's arguments directly:
//!
//! * `clf.layer.{j}` (the invariant head's `n_out_fc` linears) only in
//!   `DWSModelForClassification`, whose `DWSModel` sits under `layers.`;
//! * `layers.{i}` of the `DWSModel` are its DWS layers (`n_hidden + 1`), with `BN`
//!   modules (`weights_bn`, `biases_bn`, over `hidden_dim` channels) between them;
//! * the first DWS layer's middle weight-to-weight block (`weight_to_weight.layers.1_1`,
//!   present for every input network, which upstream needs to have 3 weights or more)
//!   is a `lin_all` MLP of `n_fc_layers` linears from `input_features` to `hidden_dim`;
//! * the first DWS layer's bias-to-bias blocks `layers.{i}_{j}`: one per pair of the
//!   input networks' biases, or with `diagonal` only `i == j`; so they count the weight
//!   matrices;
//! * set attention (`.mab.`) or DeepSets (`.Gamma.`) set layers, a `down_sample` layer
//!   (`input_dim_downsample` outputs), the model's `skip` linear, a layer's `skip` MLP
//!   (`add_layer_skip`, where layers are not down-sampled) and linear biases (`bias`).
//!
//! `num_heads`, `reduction` and the input networks' hidden widths `d_1..d_{L-1}` leave no
//! trace.

use crate::config::{Config, ModelKind, SetLayerKind};
use crate::tensors::TensorMap;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The constructor arguments a state_dict shows; `None` where it does not tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    /// The upstream class.
    pub model: Option<ModelKind>,
    /// DWS layers after the first.
    pub n_hidden: Option<usize>,
    /// Output features of the first DWS layer.
    pub hidden_dim: Option<usize>,
    /// Features per input entry.
    pub input_features: Option<usize>,
    /// Linear layers per block MLP.
    pub n_fc_layers: Option<usize>,
    /// The set layer kind.
    pub set_layer: Option<SetLayerKind>,
    /// Batch norm between the DWS layers (known once there are two layers).
    pub bn: Option<bool>,
    /// Biases in the linear layers.
    pub bias: Option<bool>,
    /// The model-level skip linear.
    pub add_skip: Option<bool>,
    /// A skip MLP in every DWS layer (told only without down-sampling, whose layers
    /// always have one).
    pub add_layer_skip: Option<bool>,
    /// Weight matrices of the input networks (`weight_shapes.len()`).
    pub n_weights: Option<usize>,
    /// Only near-diagonal blocks.
    pub diagonal: Option<bool>,
    /// Down-sampled `W_0` width, or `Some(None)` when the layers are not down-sampled.
    pub input_dim_downsample: Option<Option<usize>>,
    /// Linear layers of the classifier head.
    pub n_out_fc: Option<usize>,
    /// Classes of a classifier.
    pub n_classes: Option<usize>,
}

impl Fingerprint {
    /// Reads what `sd`'s keys and shapes tell (the state_dict may sit under a prefix).
    pub fn read(sd: &TensorMap) -> Fingerprint {
        let mut f = Fingerprint::default();
        let Some((model, root)) = find_root(sd) else {
            return f;
        };
        f.model = Some(model);
        if model == ModelKind::Classifier {
            let head = mlp_shapes(sd, &format!("{root}clf.layer"));
            f.n_out_fc = (!head.is_empty()).then_some(head.len());
            f.n_classes = head.last().and_then(|s| s.first().copied());
        }
        let dws = match model {
            ModelKind::Classifier => format!("{root}layers."),
            ModelKind::Equivariant => root.to_string(),
        };
        // Indices of `dws`'s `layers.{i}` modules: DWS layers and batch norms.
        let (mut layers, mut norms) = (BTreeSet::new(), BTreeSet::new());
        for key in sd.keys() {
            let Some(rest) = key
                .strip_prefix(&dws)
                .and_then(|r| r.strip_prefix("layers."))
            else {
                continue;
            };
            let Some((i, inner)) = rest.split_once('.') else {
                continue;
            };
            let Ok(i) = i.parse::<usize>() else { continue };
            if inner.starts_with("weights_bn.") || inner.starts_with("biases_bn.") {
                norms.insert(i);
            } else {
                layers.insert(i);
            }
        }
        let Some(&first) = layers.first() else {
            return f;
        };
        f.n_hidden = Some(layers.len() - 1);
        if layers.len() > 1 {
            f.bn = Some(!norms.is_empty());
        }
        let at = format!("{dws}layers.{first}.");
        let lin_all = mlp_shapes(sd, &format!("{at}weight_to_weight.layers.1_1.lin_all"));
        if !lin_all.is_empty() {
            let bias = format!("{at}weight_to_weight.layers.1_1.lin_all.0.bias");
            f.bias = Some(sd.contains_key(&bias));
            f.n_fc_layers = Some(lin_all.len());
            f.input_features = lin_all[0].get(1).copied();
            f.hidden_dim = lin_all.last().and_then(|s| s.first().copied());
        }
        let b2b = format!("{at}bias_to_bias.layers.");
        let pairs: BTreeSet<(usize, usize)> = sd
            .keys()
            .filter_map(|k| {
                let (i, rest) = k.strip_prefix(&b2b)?.split_once('_')?;
                let (j, _) = rest.split_once('.')?;
                Some((i.parse().ok()?, j.parse().ok()?))
            })
            .collect();
        if let Some(n) = pairs.iter().map(|&(i, j)| i.max(j) + 1).max() {
            f.n_weights = Some(n);
            f.diagonal = (n > 1).then(|| pairs.iter().all(|&(i, j)| i == j));
        }
        let under_dws = || sd.keys().filter(|k| k.starts_with(&dws));
        f.set_layer = if under_dws().any(|k| k.contains(".mab.")) {
            Some(SetLayerKind::Sab)
        } else if under_dws().any(|k| k.contains(".Gamma.") && !k.contains("_sample.")) {
            Some(SetLayerKind::Ds)
        } else {
            None
        };
        let down = mlp_shapes(sd, &format!("{at}down_sample.set_layer.Gamma"));
        f.input_dim_downsample = Some(down.last().and_then(|s| s.first().copied()));
        if down.is_empty() {
            let layer_skip = format!("{at}skip.");
            f.add_layer_skip = Some(sd.keys().any(|k| k.starts_with(&layer_skip)));
        }
        let skip = sd
            .get(&format!("{dws}skip.weight"))
            .map(|t| t.shape.as_slice());
        f.add_skip = Some(skip.is_some());
        if let Some([_, fin]) = skip {
            f.input_features.get_or_insert(*fin);
        }
        f
    }

    /// The config keys whose values this fingerprint contradicts, as
    /// `` `key`: the config says A, the checkpoint B ``.
    pub fn contradictions(&self, c: &Config) -> Vec<String> {
        let model = |m: ModelKind| match m {
            ModelKind::Classifier => "\"DWSModelForClassification\"".to_string(),
            ModelKind::Equivariant => "\"DWSModel\"".to_string(),
        };
        let set_layer = |s: SetLayerKind| match s {
            SetLayerKind::Ds => "\"ds\"".to_string(),
            SetLayerKind::Sab => "\"sab\"".to_string(),
        };
        let downsample = |d: Option<usize>| d.map_or("null".to_string(), |d| d.to_string());
        let matrices = |n: usize| format!("{n} weight matrices");
        let text = |v: Option<usize>| v.map(|n| n.to_string());
        let flag = |v: Option<bool>| v.map(|b| b.to_string());
        // (key, what the config says, what the checkpoint says if it tells)
        let mut keys = vec![
            ("model", model(c.model), self.model.map(model)),
            ("n_hidden", c.n_hidden.to_string(), text(self.n_hidden)),
            (
                "hidden_dim",
                c.hidden_dim.to_string(),
                text(self.hidden_dim),
            ),
            (
                "input_features",
                c.input_features.to_string(),
                text(self.input_features),
            ),
            (
                "n_fc_layers",
                c.n_fc_layers.to_string(),
                text(self.n_fc_layers),
            ),
            (
                "set_layer",
                set_layer(c.set_layer),
                self.set_layer.map(set_layer),
            ),
            ("bn", c.bn.to_string(), flag(self.bn)),
            ("bias", c.bias.to_string(), flag(self.bias)),
            ("add_skip", c.add_skip.to_string(), flag(self.add_skip)),
            (
                "add_layer_skip",
                c.add_layer_skip.to_string(),
                flag(self.add_layer_skip),
            ),
            (
                "weight_shapes",
                matrices(c.weight_shapes.len()),
                self.n_weights.map(matrices),
            ),
            ("diagonal", c.diagonal.to_string(), flag(self.diagonal)),
            (
                "input_dim_downsample",
                downsample(c.input_dim_downsample),
                self.input_dim_downsample.map(downsample),
            ),
        ];
        if c.model == ModelKind::Classifier {
            keys.push(("n_out_fc", c.n_out_fc.to_string(), text(self.n_out_fc)));
            keys.push(("n_classes", c.n_classes.to_string(), text(self.n_classes)));
        }
        keys.into_iter()
            .filter_map(|(key, config, checkpoint)| {
                let ck = checkpoint.filter(|ck| *ck != config)?;
                Some(format!(
                    "`{key}`: the config says {config}, the checkpoint {ck}"
                ))
            })
            .collect()
    }

    /// A hint for a checkpoint that does not fit `config`: the config keys its
    /// fingerprint contradicts, or `None` when it contradicts none.
    pub fn hint(sd: &TensorMap, config: &Config) -> Option<String> {
        let found = Fingerprint::read(sd).contradictions(config);
        if found.is_empty() {
            return None;
        }
        let mut s = String::from("the checkpoint's keys and shapes say the config is wrong in:");
        for line in &found {
            let _ = write!(s, "\n    {line}");
        }
        Some(s)
    }
}

/// The weight shapes of upstream's MLP at `prefix` (a `Sequential` of linears with a
/// ReLU between each two): `{prefix}.0.weight`, `{prefix}.2.weight`, ...
fn mlp_shapes<'a>(sd: &'a TensorMap, prefix: &str) -> Vec<&'a [usize]> {
    (0..)
        .map_while(|j| sd.get(&format!("{prefix}.{}.weight", 2 * j)))
        .map(|t| t.shape.as_slice())
        .collect()
}

/// The class of the model in `sd` and the prefix its keys sit under, found by its first
/// DWS layer (`layers.0.weight_to_weight.`: every DWS layer has that block). Under a
/// prefix `P` that is a `DWSModel` at `P`; where `P` is `Q` + `layers.` and `Q` holds an
/// invariant head (`clf.layer.0.weight`), a `DWSModelForClassification` at `Q`.
fn find_root(sd: &TensorMap) -> Option<(ModelKind, &str)> {
    const FIRST_BLOCK: &str = "layers.0.weight_to_weight.";
    let dws = sd.keys().find_map(|k| {
        let at = k.find(FIRST_BLOCK)?;
        (at == 0 || k.as_bytes()[at - 1] == b'.').then(|| &k[..at])
    })?;
    match dws.strip_suffix("layers.") {
        Some(outer) if sd.contains_key(&format!("{outer}clf.layer.0.weight")) => {
            Some((ModelKind::Classifier, outer))
        }
        _ => Some((ModelKind::Equivariant, dws)),
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
                    Tensor {
                        shape: shape.to_vec(),
                        data: vec![0.0; n],
                    },
                )
            })
            .collect()
    }

    #[test]
    fn reads_a_classifier_under_a_prefix() {
        let m = "model.layers.layers.";
        let keys = [
            (
                format!("{m}0.weight_to_weight.layers.1_1.lin_all.0.weight"),
                &[5, 2][..],
            ),
            (
                format!("{m}0.weight_to_weight.layers.1_1.lin_all.2.weight"),
                &[16, 5],
            ),
            (
                format!("{m}0.weight_to_weight.layers.0_0.set_layer.set_layer.mab.fc_q.weight"),
                &[32, 2],
            ),
            (
                format!("{m}0.bias_to_bias.layers.2_0.layer.0.weight"),
                &[16, 2],
            ),
            (format!("{m}1.weights_bn.0.running_mean"), &[16]),
            (
                format!("{m}4.bias_to_bias.layers.0_1.layer.0.weight"),
                &[16, 16],
            ),
            ("model.layers.skip.weight".to_string(), &[16, 2]),
            ("model.clf.layer.0.weight".to_string(), &[32, 64]),
            ("model.clf.layer.2.weight".to_string(), &[7, 32]),
        ];
        let keys: Vec<(&str, &[usize])> = keys.iter().map(|(k, s)| (k.as_str(), *s)).collect();
        let f = Fingerprint::read(&sd(&keys));
        assert_eq!(
            f,
            Fingerprint {
                model: Some(ModelKind::Classifier),
                n_hidden: Some(1),
                hidden_dim: Some(16),
                input_features: Some(2),
                n_fc_layers: Some(2),
                set_layer: Some(SetLayerKind::Sab),
                bn: Some(true),
                bias: Some(false),
                add_skip: Some(true),
                add_layer_skip: Some(false),
                n_weights: Some(3),
                diagonal: Some(false),
                input_dim_downsample: Some(None),
                n_out_fc: Some(2),
                n_classes: Some(7),
            }
        );
    }

    #[test]
    fn reads_a_dws_model_and_names_contradictions() {
        let f = Fingerprint::read(&sd(&[
            (
                "layers.0.weight_to_weight.layers.1_1.lin_all.0.weight",
                &[6, 1],
            ),
            ("layers.0.down_sample.set_layer.Gamma.0.weight", &[3, 6]),
            ("layers.0.weight_to_weight.layers.1_1.lin_all.0.bias", &[6]),
            ("layers.0.skip.0.weight", &[6, 1]),
            (
                "layers.0.weight_to_weight.layers.0_0.set_layer.set_layer.Gamma.0.weight",
                &[6, 1],
            ),
            ("layers.0.bias_to_bias.layers.0_0.layer.0.weight", &[6, 1]),
            ("layers.0.bias_to_bias.layers.3_3.layer.0.weight", &[6, 1]),
            ("layers.3.bias_to_bias.layers.0_0.layer.0.weight", &[6, 6]),
        ]));
        assert_eq!((f.n_weights, f.diagonal), (Some(4), Some(true)));
        assert_eq!(f.model, Some(ModelKind::Equivariant));
        assert_eq!(
            (f.n_hidden, f.bn, f.hidden_dim),
            (Some(1), Some(false), Some(6))
        );
        assert_eq!(f.set_layer, Some(SetLayerKind::Ds));
        assert_eq!(f.input_dim_downsample, Some(Some(3)));
        assert_eq!(
            (f.add_skip, f.bias, f.add_layer_skip),
            (Some(false), Some(true), None)
        );
        let config = Config::parse(
            r#"{"model": "DWSModel", "weight_shapes": [[6, 4], [4, 4], [4, 2]],
                "input_features": 1, "hidden_dim": 8, "n_hidden": 1, "bn": true,
                "set_layer": "ds", "input_dim_downsample": 3}"#,
        )
        .unwrap();
        assert_eq!(
            f.contradictions(&config),
            [
                "`hidden_dim`: the config says 8, the checkpoint 6",
                "`bn`: the config says true, the checkpoint false",
                "`weight_shapes`: the config says 3 weight matrices, the checkpoint 4 weight matrices",
                "`diagonal`: the config says false, the checkpoint true",
            ]
        );
        // A state_dict of something else tells nothing.
        assert_eq!(
            Fingerprint::read(&sd(&[
                ("seq.0.weight", &[3, 2]),
                ("layers.0.weight", &[3, 2])
            ])),
            Fingerprint::default()
        );
    }

    /// Every upstream checkpoint of the reference suite fits its own config, so its
    /// fingerprint must contradict nothing (and tell the basics).
    #[test]
    fn upstream_checkpoints_contradict_their_own_configs_nowhere() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let mut seen = 0;
        for dir in std::fs::read_dir(&fixtures).unwrap() {
            let dir = dir.unwrap().path();
            let (config, model) = (dir.join("config.json"), dir.join("model.pt"));
            if !config.exists() || !model.exists() {
                continue;
            }
            let config = Config::load(&config).unwrap();
            let sd = crate::tensors::read_checkpoint(&model).unwrap();
            let f = Fingerprint::read(&sd);
            assert_eq!(
                f.contradictions(&config),
                Vec::<String>::new(),
                "{}",
                dir.display()
            );
            assert!(f.model.is_some() && f.n_hidden.is_some() && f.hidden_dim.is_some());
            seen += 1;
        }
        assert!(seen >= 20, "only {seen} fixtures");
    }
}
