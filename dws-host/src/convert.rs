//! Conversion: an upstream config and state_dict become a plan and its parameters.
//!
//! This is the one place that knows upstream's module tree. Each upstream block
//! (`nn/layers/weight_to_weight.py`, `bias_to_bias.py`, `bias_to_weight.py`,
//! `weight_to_bias.py`) becomes one or more [`Block`]s of the gather / map /
//! scatter form described in [`dws_core::plan`]; the functions below are named
//! after the upstream classes and follow their branches.

use crate::config::{Config, ModelKind, ReductionKind, SetLayerKind};
use crate::fingerprint::Fingerprint;
use crate::lookalike::Contents;
use crate::tensors::TensorMap;
use anyhow::{bail, Result};
use dws_core::plan::{
    Axis, Block, BlockKind, DwsLayer, Head, Linear, Map, Mlp, Op, Output, ParamRef, Pool,
    Reduction, Resample, SetAxis, SetLayer, SetPooling, Spec,
};
use std::collections::BTreeSet;

/// A converted model before it is written as a blob.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Input/output contract.
    pub spec: Spec,
    /// The ops, in order.
    pub ops: Vec<Op>,
    /// The parameter section.
    pub params: Vec<f32>,
}

/// BatchNorm1d's default epsilon.
const BN_EPS: f64 = 1e-5;

/// Builds the plan of `config` from the state_dict `sd`, with optional input
/// normalization statistics (`weights.mean.{i}`, `weights.std.{i}`, `biases.mean.{i}`, ...).
///
/// A state_dict wrapped in a training checkpoint (`{"state_dict": sd, ...}`,
/// `{"model": sd, ...}`) or saved from `nn.DataParallel` (`module.` prefixes)
/// is found under its prefix; entries outside it are ignored (see [`find_state_dict`]).
pub fn convert(config: &Config, sd: &TensorMap, statistics: Option<&TensorMap>) -> Result<Plan> {
    if let Some(why) = Contents::of(sd).not_a_checkpoint(sd, &config.weight_shapes) {
        bail!("{why}");
    }
    let (_, sd) = find_state_dict(config, sd)?;
    let sd: &TensorMap = &sd;
    let mut b = Builder {
        config,
        sd,
        used: BTreeSet::new(),
        params: Vec::new(),
        problems: Vec::new(),
    };
    let mut ops = Vec::new();
    let dims = config.dims();
    let l = dims.len() - 1;
    if let Some(stats) = statistics {
        ops.push(normalize(
            &mut b.params,
            stats,
            &dims,
            config.input_features,
        )?);
    }
    let prefix = match config.model {
        ModelKind::Classifier => "layers.",
        ModelKind::Equivariant => "",
    };
    let out_features = config.output_features();
    let mut idx = 0;
    let mut fin = config.input_features;
    for h in 0..=config.n_hidden {
        if h > 0 {
            if config.bn {
                ops.push(b.batch_norm(&format!("{prefix}layers.{idx}."), l, config.hidden_dim));
                idx += 1;
            }
            ops.push(Op::Relu); // then Dropout: the identity (see README)
            idx += 2;
        }
        let last = h == config.n_hidden && h > 0;
        let fout = if last {
            out_features
        } else {
            config.hidden_dim
        };
        let heads = if last { 1 } else { config.num_heads };
        // A lone one-feature layer added to a wider skip: its feature repeated.
        let repeat = if config.layer_broadcasts() {
            out_features
        } else {
            1
        };
        let layer = LayerCfg {
            config,
            dims: &dims,
            fin,
            fout,
            repeat,
            heads,
            prefix: format!("{prefix}layers.{idx}."),
        };
        b.dws_layer(&layer, &mut ops)?;
        if b.swamped() {
            return Err(b.failure());
        }
        idx += 1;
        fin = fout * repeat;
    }
    if config.add_skip {
        let skip = format!("{prefix}skip");
        let lin = if config.skip_broadcasts() {
            b.linear_repeated(&skip, config.input_features, 1, config.bias, fin, 1)
        } else {
            b.linear(&skip, config.input_features, out_features, config.bias)
        };
        ops.push(Op::InputSkip(lin));
    }
    let output = match config.model {
        ModelKind::Classifier => {
            ops.push(Op::Relu);
            let width = head_width(&dims, fin);
            let mlp = b.mlp("clf.layer", width, config.n_classes, config.n_out_fc, true);
            ops.push(Op::Head(Head {
                reduction: reduction(config.reduction),
                mlp,
            }));
            Output::Logits {
                classes: config.n_classes as u32,
            }
        }
        ModelKind::Equivariant => Output::WeightSpace {
            features: fin as u32,
        },
    };
    let params = b.finish()?;
    let spec = Spec {
        dims: dims.iter().map(|&d| d as u32).collect(),
        input_features: config.input_features as u32,
        output,
        ops: ops.len() as u32,
    };
    Ok(Plan { spec, ops, params })
}

fn head_width(dims: &[usize], f: usize) -> usize {
    let l = dims.len() - 1;
    (2 * l - 3 + dims[0] + 2 * dims[l]) * f
}

fn reduction(r: ReductionKind) -> Reduction {
    match r {
        ReductionKind::Max => Reduction::Max,
        ReductionKind::Mean => Reduction::Mean,
        ReductionKind::Sum => Reduction::Sum,
    }
}

fn push(params: &mut Vec<f32>, data: &[f32]) -> ParamRef {
    let r = ParamRef {
        offset: params.len() as u32,
        len: data.len() as u32,
    };
    params.extend_from_slice(data);
    r
}

/// The `Normalize` op from upstream `statistics.pth` contents.
fn normalize(params: &mut Vec<f32>, stats: &TensorMap, dims: &[usize], f: usize) -> Result<Op> {
    let l = dims.len() - 1;
    let mut mean = Vec::new();
    let mut std = Vec::new();
    for (kind, count) in [("weights", l), ("biases", l)] {
        for i in 0..count {
            let cells = if kind == "weights" {
                dims[i] * dims[i + 1]
            } else {
                dims[i + 1]
            };
            for (stat, out) in [("mean", &mut mean), ("std", &mut std)] {
                let key = format!("{kind}.{stat}.{i}");
                let t = stats.get(&key).ok_or_else(|| {
                    anyhow::anyhow!(
                        "statistics: missing `{key}` (expected upstream's statistics.pth, as \
                         experiments/mnist/compute_statistics.py saves it: \
                         {{\"weights\": {{\"mean\": [...], \"std\": [...]}}, \"biases\": ...}} \
                         with one tensor per layer)"
                    )
                })?;
                if t.numel() != cells * f {
                    bail!("statistics: `{key}` has shape {:?}, expected {} elements ({} entries x {f} features)", t.shape, cells * f, cells);
                }
                let bad = |v: &f32| !v.is_finite() || (stat == "std" && *v == 0.0);
                if let Some(at) = t.data.iter().position(bad) {
                    let index: Vec<String> = t.index_of(at).iter().map(usize::to_string).collect();
                    bail!(
                        "statistics: `{key}` holds {} at [{}]",
                        if stat == "std" {
                            "a standard deviation that is zero, NaN or infinite"
                        } else {
                            "a NaN, an infinity or a value beyond the f32 range"
                        },
                        index.join(", ")
                    );
                }
                out.extend_from_slice(&t.data);
            }
        }
    }
    Ok(Op::Normalize {
        mean: push(params, &mean),
        std: push(params, &std),
    })
}

/// Finds upstream's state_dict inside a checkpoint: the key prefix (`""`,
/// `"module."`, `"state_dict."`, `"model.module."`, ...) under which the first
/// DWS layer's entries appear most often. Returns the prefix and the entries
/// under it with the prefix removed (borrowed unchanged for a plain state_dict).
///
/// A prefix ending in `layers.` is never taken (a classifier's state_dict
/// against a `DWSModel` config must not convert as its backbone), and two
/// equally good prefixes (say `model.` and `ema.`) are an error naming both.
pub fn find_state_dict<'s>(
    config: &Config,
    sd: &'s TensorMap,
) -> Result<(String, std::borrow::Cow<'s, TensorMap>)> {
    use std::borrow::Cow;
    let marker = match config.model {
        ModelKind::Classifier => "layers.layers.0.",
        ModelKind::Equivariant => "layers.0.",
    };
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for key in sd.keys() {
        for (at, _) in key.match_indices(marker) {
            let prefix = &key[..at];
            if (at == 0 || key.as_bytes()[at - 1] == b'.') && !prefix.ends_with("layers.") {
                *counts.entry(prefix).or_default() += 1;
            }
        }
    }
    let best = counts.values().copied().max().unwrap_or(0);
    let tied: Vec<&str> = counts
        .iter()
        .filter(|(_, &n)| n == best)
        .map(|(p, _)| *p)
        .collect();
    match tied.as_slice() {
        [] | [""] => Ok((String::new(), Cow::Borrowed(sd))),
        [prefix] => {
            let inner = sd
                .iter()
                .filter_map(|(k, t)| Some((k.strip_prefix(prefix)?.to_string(), t.clone())))
                .collect();
            Ok((prefix.to_string(), Cow::Owned(inner)))
        }
        several => bail!(
            "the checkpoint holds several state_dicts ({}); save the one to convert on its own",
            several
                .iter()
                .map(|p| format!("`{}`", p.trim_end_matches('.')))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The settings of one DWS layer.
struct LayerCfg<'c> {
    config: &'c Config,
    dims: &'c [usize],
    fin: usize,
    /// Output features of upstream's layer.
    fout: usize,
    /// How many times each output feature is repeated (1, or the width of a
    /// skip that upstream's broadcasting adds a one-feature layer to).
    repeat: usize,
    heads: usize,
    prefix: String,
}

/// Most problems a conversion reports.
const MAX_PROBLEMS: usize = 50;

struct Builder<'a> {
    /// The config being built (named in a failure's hint).
    config: &'a Config,
    sd: &'a TensorMap,
    used: BTreeSet<String>,
    params: Vec<f32>,
    problems: Vec<String>,
}

impl Builder<'_> {
    /// Copies state_dict entry `key` into the parameters, checking its shape.
    fn take(&mut self, key: &str, shape: &[usize]) -> ParamRef {
        self.take_spread(key, shape, 1, 1)
    }

    /// [`Self::take`], each entry along the first dimension copied `n` times
    /// in a row (the rows of a weight matrix, the values of a bias), and
    /// each value followed by `cols - 1` zeros: the weights of a linear whose
    /// input features each come `cols` times in a row, of which only the
    /// first copy counts.
    fn take_spread(&mut self, key: &str, shape: &[usize], n: usize, cols: usize) -> ParamRef {
        let Some(t) = self.sd.get(key) else {
            self.problems
                .push(format!("missing `{key}` (expected shape {shape:?})"));
            return ParamRef {
                offset: 0,
                // A placeholder (conversion fails in `finish`); saturating, as a
                // config may announce sizes whose product overflows.
                len: shape.iter().fold(1usize, |a, &d| a.saturating_mul(d)) as u32,
            };
        };
        self.used.insert(key.to_string());
        if let Some(what) = t.non_finite() {
            self.problems.push(format!("`{key}` holds {what}"));
        }
        if t.shape != shape {
            self.problems.push(format!(
                "`{key}` has shape {:?}, expected {shape:?}",
                t.shape
            ));
            return ParamRef {
                offset: 0,
                // A placeholder (conversion fails in `finish`); saturating, as a
                // config may announce sizes whose product overflows.
                len: shape.iter().fold(1usize, |a, &d| a.saturating_mul(d)) as u32,
            };
        }
        let offset = self.params.len();
        let row = t.data.len() / shape.first().copied().unwrap_or(1).max(1);
        for r in t.data.chunks(row.max(1)) {
            for _ in 0..n {
                for &v in r {
                    self.params.push(v);
                    self.params.extend((1..cols).map(|_| 0.0));
                }
            }
        }
        ParamRef {
            offset: offset as u32,
            len: (t.data.len() * n * cols) as u32,
        }
    }

    fn data(&mut self, key: &str, len: usize) -> Vec<f64> {
        match self.sd.get(key) {
            Some(t) if t.shape == [len] => {
                self.used.insert(key.to_string());
                if let Some(what) = t.non_finite() {
                    self.problems.push(format!("`{key}` holds {what}"));
                }
                t.data.iter().map(|&v| v as f64).collect()
            }
            Some(t) => {
                self.used.insert(key.to_string());
                self.problems
                    .push(format!("`{key}` has shape {:?}, expected [{len}]", t.shape));
                vec![1.0; len]
            }
            None => {
                self.problems
                    .push(format!("missing `{key}` (expected shape [{len}])"));
                vec![1.0; len]
            }
        }
    }

    /// Whether so much is wrong already that building on is pointless (a
    /// config with far more layers than the checkpoint, say).
    fn swamped(&self) -> bool {
        self.problems.len() >= MAX_PROBLEMS
    }

    /// The parameters, or every missing, mis-shaped and unused entry at once
    /// (see [`Self::failure`]).
    fn finish(self) -> Result<Vec<f32>> {
        if self.problems.is_empty() && self.sd.keys().all(|k| self.used.contains(k)) {
            Ok(self.params)
        } else {
            Err(self.failure())
        }
    }

    /// The error: first the config keys that the checkpoint's own structure
    /// contradicts ([`Fingerprint::hint`]: the likeliest fix), then the problems
    /// found and the unused entries, at most [`MAX_PROBLEMS`] of them (unused
    /// entries only when the build got through: a stopped one leaves most entries
    /// unused).
    fn failure(self) -> anyhow::Error {
        let mut problems = self.problems;
        let swamped = problems.len() >= MAX_PROBLEMS;
        if !swamped {
            let unused = self.sd.keys().filter(|k| !self.used.contains(*k));
            problems.extend(unused.map(|k| format!("unexpected `{k}`")));
        }
        let more = problems.len().saturating_sub(MAX_PROBLEMS);
        problems.truncate(MAX_PROBLEMS);
        if swamped || more > 0 {
            let more = if more > 0 {
                format!(" ({more} more)")
            } else {
                String::new()
            };
            problems.push(format!(
                "... stopped after {MAX_PROBLEMS} problems{more}: check the sizes in the config \
                 (n_hidden, hidden_dim, weight_shapes) against the checkpoint"
            ));
        }
        let mut lines: Vec<String> = Fingerprint::hint(self.sd, self.config)
            .into_iter()
            .collect();
        lines.extend(problems);
        anyhow::anyhow!(
            "the state_dict does not fit the config:\n  {}",
            lines.join("\n  ")
        )
    }

    /// Multiplies the weights and bias of `lin` by `s` (1: unchanged).
    fn scale(&mut self, lin: &Linear, s: f32) {
        if s == 1.0 {
            return;
        }
        for r in [Some(lin.weight), lin.bias].into_iter().flatten() {
            let (at, len) = (r.offset as usize, r.len as usize);
            if let Some(v) = self.params.get_mut(at..at + len) {
                v.iter_mut().for_each(|x| *x *= s);
            }
        }
    }

    /// `nn.Linear(fin, fout, bias)` at `prefix`.
    fn linear(&mut self, prefix: &str, fin: usize, fout: usize, bias: bool) -> Linear {
        self.linear_repeated(prefix, fin, fout, bias, 1, 1)
    }

    /// `nn.Linear(fin, fout, bias)` at `prefix` as a linear of `fout * n`
    /// outputs, each row (and bias) repeated `n` times in a row (what
    /// PyTorch's broadcasting makes of adding one output feature to `n`),
    /// on inputs whose features each come `cols` times in a row (the outputs
    /// of such a linear).
    fn linear_repeated(
        &mut self,
        prefix: &str,
        fin: usize,
        fout: usize,
        bias: bool,
        n: usize,
        cols: usize,
    ) -> Linear {
        let weight = self.take_spread(&format!("{prefix}.weight"), &[fout, fin], n, cols);
        let bias = bias.then(|| self.take_spread(&format!("{prefix}.bias"), &[fout], n, 1));
        Linear {
            fin: (fin * cols) as u32,
            fout: (fout * n) as u32,
            weight,
            bias,
        }
    }

    /// Upstream `_get_mlp`: linears at `prefix.0`, `prefix.2`, ... with ReLUs between.
    fn mlp(&mut self, prefix: &str, fin: usize, fout: usize, layers: usize, bias: bool) -> Mlp {
        self.mlp_repeated(prefix, fin, fout, layers, bias, 1)
    }

    /// [`Self::mlp`], every output repeated `n` times (each layer's by
    /// [`Self::linear_repeated`]: the hidden widths of upstream's MLPs equal
    /// their output widths, as the plan requires).
    fn mlp_repeated(
        &mut self,
        prefix: &str,
        fin: usize,
        fout: usize,
        layers: usize,
        bias: bool,
        n: usize,
    ) -> Mlp {
        let mut m = Mlp {
            layers: heapless::Vec::new(),
        };
        for k in 0..layers {
            let width = if k == 0 { fin } else { fout };
            let cols = if k == 0 { 1 } else { n };
            let lin =
                self.linear_repeated(&format!("{prefix}.{}", 2 * k), width, fout, bias, n, cols);
            // MAX_FC_LAYERS is checked in the config.
            let _ = m.layers.push(lin);
        }
        m
    }

    /// Upstream `GeneralSetLayer` at `prefix` (its module is `prefix.set_layer`).
    fn set_layer(
        &mut self,
        l: &LayerCfg<'_>,
        prefix: &str,
        fin: usize,
        fout: usize,
    ) -> Result<SetLayer> {
        let c = l.config;
        let p = format!("{prefix}.set_layer");
        Ok(match c.set_layer {
            SetLayerKind::Ds => SetLayer::DeepSets {
                gamma: self.mlp_repeated(
                    &format!("{p}.Gamma"),
                    fin,
                    fout,
                    c.n_fc_layers,
                    c.bias,
                    l.repeat,
                ),
                lambda: self.mlp_repeated(
                    &format!("{p}.Lambda"),
                    fin,
                    fout,
                    c.n_fc_layers,
                    false,
                    l.repeat,
                ),
                pooling: SetPooling::Reduce(reduction(c.reduction)),
            },
            SetLayerKind::Sab => {
                let split = fout / l.heads;
                if split == 0 || !fout.is_multiple_of(split) {
                    bail!(
                        "set attention at `{p}` has dim_V = {fout} and num_heads = {}: upstream cannot split \
                         {fout} channels into heads of {split} (choose num_heads dividing every set layer width)",
                        l.heads
                    );
                }
                // With each channel repeated `n` times (`l.repeat`), every head
                // keeps its channels, so Q, V, O and Y are the repeated ones;
                // a head's dot products are `n` times larger, and upstream
                // scales them by 1 / sqrt(dim_V), which grows by sqrt(n) only:
                // the keys, used nowhere else, take the remaining 1 / sqrt(n).
                let n = l.repeat;
                let fc_q = self.linear_repeated(&format!("{p}.mab.fc_q"), fin, fout, true, n, 1);
                let fc_k = self.linear_repeated(&format!("{p}.mab.fc_k"), fin, fout, true, n, 1);
                self.scale(&fc_k, 1.0 / (n as f32).sqrt());
                SetLayer::Attention {
                    heads: (fout / split) as u32,
                    fc_q,
                    fc_k,
                    fc_v: self.linear_repeated(&format!("{p}.mab.fc_v"), fin, fout, true, n, 1),
                    fc_o: self.linear_repeated(&format!("{p}.mab.fc_o"), fout, fout, true, n, n),
                }
            }
        })
    }

    /// The attention-pooled DeepSets layer of `DownSampleDWSLayer`.
    fn resample_set(
        &mut self,
        l: &LayerCfg<'_>,
        prefix: &str,
        fin: usize,
        fout: usize,
    ) -> SetLayer {
        let c = l.config;
        let p = format!("{prefix}.set_layer");
        SetLayer::DeepSets {
            gamma: self.mlp(&format!("{p}.Gamma"), fin, fout, c.n_fc_layers, c.bias),
            lambda: self.mlp(&format!("{p}.Lambda"), fin, fout, c.n_fc_layers, false),
            pooling: SetPooling::Attention {
                query: self.take(&format!("{p}.attn.query"), &[fin]),
            },
        }
    }

    /// Upstream `BN`: one `BatchNorm1d` per tensor, folded into an affine map.
    fn batch_norm(&mut self, prefix: &str, l: usize, f: usize) -> Op {
        let mut scale = Vec::new();
        let mut shift = Vec::new();
        for (kind, i) in (0..l)
            .map(|i| ("weights_bn", i))
            .chain((0..l).map(|i| ("biases_bn", i)))
        {
            let p = format!("{prefix}{kind}.{i}");
            let gamma = self.data(&format!("{p}.weight"), f);
            let beta = self.data(&format!("{p}.bias"), f);
            let mean = self.data(&format!("{p}.running_mean"), f);
            let var = self.data(&format!("{p}.running_var"), f);
            if self.sd.contains_key(&format!("{p}.num_batches_tracked")) {
                self.used.insert(format!("{p}.num_batches_tracked"));
            }
            for c in 0..f {
                let s = gamma[c] / (var[c] + BN_EPS).sqrt();
                scale.push(s as f32);
                shift.push((beta[c] - mean[c] * s) as f32);
            }
        }
        Op::Affine {
            scale: push(&mut self.params, &scale),
            shift: push(&mut self.params, &shift),
        }
    }

    /// One `DWSLayer` (or `DownSampleDWSLayer`): its header and all its blocks.
    fn dws_layer(&mut self, l: &LayerCfg<'_>, ops: &mut Vec<Op>) -> Result<()> {
        let c = l.config;
        let n = l.dims.len() - 1;
        let mut dims = l.dims.to_vec();
        let resample = match c.input_dim_downsample {
            Some(ds) => {
                let d0 = dims[0];
                dims[0] = ds;
                Some(Resample {
                    rows: ds as u32,
                    down: self.resample_set(l, &format!("{}down_sample", l.prefix), d0, ds),
                    up: self.resample_set(l, &format!("{}up_sample", l.prefix), ds, d0),
                    skip: self.mlp(
                        &format!("{}skip", l.prefix),
                        l.fin,
                        l.fout,
                        c.n_fc_layers,
                        c.bias,
                    ),
                })
            }
            None => None,
        };
        let g = Grids {
            dims: &dims,
            n,
            scale: 1.0 / (2 * n) as f32,
        };
        let mut blocks = Vec::new();
        for i in 0..n {
            for j in 0..n {
                if !c.diagonal || i.abs_diff(j) <= 1 {
                    self.weight_to_weight(l, &g, i, j, &mut blocks)?;
                }
                if !c.diagonal || i == j {
                    blocks.push(self.bias_to_bias(l, &g, i, j)?);
                }
                if !c.diagonal || i == j || i + 1 == j {
                    blocks.push(self.bias_to_weight(l, &g, i, j)?);
                }
                if !c.diagonal || i == j || i == j + 1 {
                    blocks.push(self.weight_to_bias(l, &g, i, j)?);
                }
            }
        }
        if c.add_layer_skip {
            let skip = match &resample {
                Some(r) => r.skip.clone(),
                None => self.mlp_repeated(
                    &format!("{}skip", l.prefix),
                    l.fin,
                    l.fout,
                    c.n_fc_layers,
                    c.bias,
                    l.repeat,
                ),
            };
            for t in 0..2 * n {
                blocks.push(Block {
                    kind: BlockKind::LayerSkip,
                    src: t as u8,
                    dst: t as u8,
                    pool: NO_POOL,
                    set_axis: SetAxis::Cells,
                    fold: Axis::None,
                    map: Map::Mlp(skip.clone()),
                    place: SetAxis::Cells,
                    unfold: Axis::None,
                    scale: 1.0,
                });
            }
        }
        ops.push(Op::Dws(DwsLayer {
            fin: l.fin as u32,
            fout: (l.fout * l.repeat) as u32,
            reduction: reduction(c.reduction),
            blocks: blocks.len() as u32,
            resample,
        }));
        ops.extend(blocks.into_iter().map(Op::Block));
        Ok(())
    }

    fn map_mlp(
        &mut self,
        l: &LayerCfg<'_>,
        prefix: String,
        fin: usize,
        fout: usize,
        layers: usize,
    ) -> Map {
        Map::Mlp(self.mlp_repeated(&prefix, fin, fout, layers, l.config.bias, l.repeat))
    }

    fn map_set(
        &mut self,
        l: &LayerCfg<'_>,
        prefix: String,
        fin: usize,
        fout: usize,
    ) -> Result<Map> {
        Ok(Map::Set(self.set_layer(l, &prefix, fin, fout)?))
    }

    /// `WeightToWeightBlock.layers["i_j"]`: `W_i -> W_j`.
    fn weight_to_weight(
        &mut self,
        l: &LayerCfg<'_>,
        g: &Grids<'_>,
        i: usize,
        j: usize,
        out: &mut Vec<Block>,
    ) -> Result<()> {
        use BlockKind::*;
        let (f, fo, n, nfc) = (l.fin, l.fout, g.n, l.config.n_fc_layers);
        let p = format!("{}weight_to_weight.layers.{i}_{j}", l.prefix);
        let d = g.dims;
        let ps = format!("{p}.set_layer");
        let pl = format!("{p}.layer");
        let (src, dst) = (i, j);
        let b = |kind, pool, set, fold, map, place, unfold| {
            g.block(kind, src, dst, pool, set, fold, map, place, unfold)
        };
        let blk = if i == j && i == 0 {
            // GeneralMatrixSetLayer, first_dim_is_input: rows of W_0 fold into the set over d_1.
            b(
                W2wGeneralMatrixSet,
                NO_POOL,
                SetAxis::Cols,
                Axis::Rows,
                self.map_set(l, ps, d[0] * f, d[0] * fo)?,
                SetAxis::Cols,
                Axis::Rows,
            )
        } else if i == j && j == n - 1 {
            // GeneralMatrixSetLayer on W_{L-1}: columns (d_L) fold into the set over d_{L-1}.
            b(
                W2wGeneralMatrixSet,
                NO_POOL,
                SetAxis::Rows,
                Axis::Cols,
                self.map_set(l, ps, d[n] * f, d[n] * fo)?,
                SetAxis::Rows,
                Axis::Cols,
            )
        } else if i == j {
            // SetKroneckerSetLayer: (all + rows pooled + cols pooled + both pooled) / 4.
            let parts = [
                ("lin_all", NO_POOL, SetAxis::Cells),
                ("lin_n", POOL_ROWS, SetAxis::Cols),
                ("lin_m", POOL_COLS, SetAxis::Rows),
                ("lin_both", POOL_BOTH, SetAxis::None),
            ];
            for (name, pool, set) in parts {
                let map = self.map_mlp(l, format!("{p}.{name}"), f, fo, nfc);
                let mut part = b(W2wSetKronecker, pool, set, Axis::None, map, set, Axis::None);
                part.scale = g.scale / 4.0;
                out.push(part);
            }
            return Ok(());
        } else if i + 1 == j && i == 0 {
            // W_0 -> W_1: the set over d_1 with d_0 folded in, broadcast over d_2.
            b(
                W2wGeneralMatrixSet,
                NO_POOL,
                SetAxis::Cols,
                Axis::Rows,
                self.map_set(l, ps, d[0] * f, fo)?,
                SetAxis::Rows,
                Axis::None,
            )
        } else if i + 1 == j {
            // Internal (also W_{L-2} -> W_{L-1}, built with last_dim_is_input upstream): pool rows.
            b(
                W2wGeneralMatrixSet,
                POOL_ROWS,
                SetAxis::Cols,
                Axis::None,
                self.map_set(l, ps, f, fo)?,
                SetAxis::Rows,
                Axis::None,
            )
        } else if i == j + 1 && j == 0 {
            // W_1 -> W_0: pool columns, the set over d_1 produces d_0 * F' per element.
            b(
                W2wGeneralMatrixSet,
                POOL_COLS,
                SetAxis::Rows,
                Axis::None,
                self.map_set(l, ps, f, d[0] * fo)?,
                SetAxis::Cols,
                Axis::Rows,
            )
        } else if i == j + 1 && i == n - 1 {
            // W_{L-1} -> W_{L-2}: the set over d_{L-1} with d_L folded in.
            b(
                W2wGeneralMatrixSet,
                NO_POOL,
                SetAxis::Rows,
                Axis::Cols,
                self.map_set(l, ps, d[n] * f, fo)?,
                SetAxis::Cols,
                Axis::None,
            )
        } else if i == j + 1 {
            b(
                W2wGeneralMatrixSet,
                POOL_COLS,
                SetAxis::Rows,
                Axis::None,
                self.map_set(l, ps, f, fo)?,
                SetAxis::Cols,
                Axis::None,
            )
        } else if i == 0 && j == n - 1 {
            // FromFirstLayer, last_dim_is_output.
            b(
                W2wFromFirst,
                POOL_COLS,
                SetAxis::None,
                Axis::Rows,
                self.map_mlp(l, pl, d[0] * f, d[n] * fo, nfc),
                SetAxis::None,
                Axis::Cols,
            )
        } else if i == 0 {
            b(
                W2wFromFirst,
                POOL_COLS,
                SetAxis::None,
                Axis::Rows,
                self.map_mlp(l, pl, d[0] * f, fo, nfc),
                SetAxis::None,
                Axis::None,
            )
        } else if j == 0 && i == n - 1 {
            // ToFirstLayer, first_dim_is_output.
            b(
                W2wToFirst,
                POOL_ROWS,
                SetAxis::None,
                Axis::Cols,
                self.map_mlp(l, pl, d[n] * f, d[0] * fo, nfc),
                SetAxis::None,
                Axis::Rows,
            )
        } else if j == 0 {
            b(
                W2wToFirst,
                POOL_BOTH,
                SetAxis::None,
                Axis::None,
                self.map_mlp(l, pl, f, d[0] * fo, nfc),
                SetAxis::None,
                Axis::Rows,
            )
        } else if i == n - 1 {
            b(
                W2wFromLast,
                POOL_ROWS,
                SetAxis::None,
                Axis::Cols,
                self.map_mlp(l, pl, d[n] * f, fo, nfc),
                SetAxis::None,
                Axis::None,
            )
        } else if j == n - 1 {
            b(
                W2wToLast,
                POOL_BOTH,
                SetAxis::None,
                Axis::None,
                self.map_mlp(l, pl, f, d[n] * fo, nfc),
                SetAxis::None,
                Axis::Cols,
            )
        } else {
            b(
                W2wNonNeighborInternal,
                POOL_BOTH,
                SetAxis::None,
                Axis::None,
                self.map_mlp(l, pl, f, fo, nfc),
                SetAxis::None,
                Axis::None,
            )
        };
        out.push(blk);
        Ok(())
    }

    /// `BiasToBiasBlock.layers["i_j"]`: `b_i -> b_j` (bias grids are `[d, 1]`).
    fn bias_to_bias(
        &mut self,
        l: &LayerCfg<'_>,
        g: &Grids<'_>,
        i: usize,
        j: usize,
    ) -> Result<Block> {
        use BlockKind::*;
        let (f, fo, n, nfc) = (l.fin, l.fout, g.n, l.config.n_fc_layers);
        let d = g.dims;
        let pl = format!("{}bias_to_bias.layers.{i}_{j}.layer", l.prefix);
        let (src, dst) = (n + i, n + j);
        let b = |kind, pool, set, fold, map, place, unfold| {
            g.block(kind, src, dst, pool, set, fold, map, place, unfold)
        };
        Ok(if i == j && j == n - 1 {
            b(
                B2bSelfToSelf,
                NO_POOL,
                SetAxis::None,
                Axis::Rows,
                self.map_mlp(l, pl, d[n] * f, d[n] * fo, nfc),
                SetAxis::None,
                Axis::Rows,
            )
        } else if i == j {
            b(
                B2bSelfToSelf,
                NO_POOL,
                SetAxis::Rows,
                Axis::None,
                self.map_set(l, pl, f, fo)?,
                SetAxis::Rows,
                Axis::None,
            )
        } else if i == n - 1 {
            b(
                B2bSelfToOther,
                NO_POOL,
                SetAxis::None,
                Axis::Rows,
                self.map_mlp(l, pl, d[n] * f, fo, nfc),
                SetAxis::None,
                Axis::None,
            )
        } else if j == n - 1 {
            b(
                B2bSelfToOther,
                POOL_ROWS,
                SetAxis::None,
                Axis::None,
                self.map_mlp(l, pl, f, d[n] * fo, nfc),
                SetAxis::None,
                Axis::Rows,
            )
        } else {
            b(
                B2bSelfToOther,
                POOL_ROWS,
                SetAxis::None,
                Axis::None,
                self.map_mlp(l, pl, f, fo, nfc),
                SetAxis::None,
                Axis::None,
            )
        })
    }

    /// `BiasToWeightBlock.layers["i_j"]`: `b_i -> W_j`.
    fn bias_to_weight(
        &mut self,
        l: &LayerCfg<'_>,
        g: &Grids<'_>,
        i: usize,
        j: usize,
    ) -> Result<Block> {
        use BlockKind::*;
        let (f, fo, n, nfc) = (l.fin, l.fout, g.n, l.config.n_fc_layers);
        let d = g.dims;
        let pl = format!("{}bias_to_weight.layers.{i}_{j}.layer", l.prefix);
        let (src, dst) = (n + i, j);
        let b = |kind, pool, set, fold, map, place, unfold| {
            g.block(kind, src, dst, pool, set, fold, map, place, unfold)
        };
        Ok(if i == j && i == 0 {
            // SameLayer, is_input_layer: b_0 (over d_1) -> W_0 with d_0 * F' per element.
            b(
                B2wSame,
                NO_POOL,
                SetAxis::Rows,
                Axis::None,
                self.map_set(l, pl, f, d[0] * fo)?,
                SetAxis::Cols,
                Axis::Rows,
            )
        } else if i == j && j == n - 1 {
            b(
                B2wSame,
                NO_POOL,
                SetAxis::None,
                Axis::Rows,
                self.map_mlp(l, pl, d[n] * f, d[n] * fo, nfc),
                SetAxis::None,
                Axis::Cols,
            )
        } else if i == j {
            b(
                B2wSame,
                NO_POOL,
                SetAxis::Rows,
                Axis::None,
                self.map_set(l, pl, f, fo)?,
                SetAxis::Cols,
                Axis::None,
            )
        } else if i + 1 == j && j == n - 1 {
            // SuccessiveLayers, last_dim_is_output.
            b(
                B2wSuccessive,
                NO_POOL,
                SetAxis::Rows,
                Axis::None,
                self.map_set(l, pl, f, d[n] * fo)?,
                SetAxis::Rows,
                Axis::Cols,
            )
        } else if i + 1 == j {
            b(
                B2wSuccessive,
                NO_POOL,
                SetAxis::Rows,
                Axis::None,
                self.map_set(l, pl, f, fo)?,
                SetAxis::Rows,
                Axis::None,
            )
        } else {
            // NonNeighborInternalLayer: upstream builds it without n_fc_layers (one linear).
            let (pool, fold, width) = if i == n - 1 {
                (NO_POOL, Axis::Rows, d[n] * f)
            } else {
                (POOL_ROWS, Axis::None, f)
            };
            let (out_w, unfold) = if j == 0 {
                (d[0] * fo, Axis::Rows)
            } else {
                (fo, Axis::None)
            };
            b(
                B2wNonNeighborInternal,
                pool,
                SetAxis::None,
                fold,
                self.map_mlp(l, pl, width, out_w, 1),
                SetAxis::None,
                unfold,
            )
        })
    }

    /// `WeightToBiasBlock.layers["i_j"]`: `W_i -> b_j`.
    fn weight_to_bias(
        &mut self,
        l: &LayerCfg<'_>,
        g: &Grids<'_>,
        i: usize,
        j: usize,
    ) -> Result<Block> {
        use BlockKind::*;
        let (f, fo, n, nfc) = (l.fin, l.fout, g.n, l.config.n_fc_layers);
        let d = g.dims;
        let pl = format!("{}weight_to_bias.layers.{i}_{j}.layer", l.prefix);
        let (src, dst) = (i, n + j);
        let b = |kind, pool, set, fold, map, place, unfold| {
            g.block(kind, src, dst, pool, set, fold, map, place, unfold)
        };
        Ok(if i == j && i == 0 {
            // SameLayer, is_input_layer: the set over d_1 with d_0 folded in.
            b(
                W2bSame,
                NO_POOL,
                SetAxis::Cols,
                Axis::Rows,
                self.map_set(l, pl, d[0] * f, fo)?,
                SetAxis::Rows,
                Axis::None,
            )
        } else if i == j && j == n - 1 {
            b(
                W2bSame,
                POOL_ROWS,
                SetAxis::None,
                Axis::Cols,
                self.map_mlp(l, pl, d[n] * f, d[n] * fo, nfc),
                SetAxis::None,
                Axis::Rows,
            )
        } else if i == j {
            b(
                W2bSame,
                POOL_ROWS,
                SetAxis::Cols,
                Axis::None,
                self.map_set(l, pl, f, fo)?,
                SetAxis::Rows,
                Axis::None,
            )
        } else if i == j + 1 && i == n - 1 {
            // SuccessiveLayers, first_dim_is_output: the set over d_{L-1} with d_L folded in.
            b(
                W2bSuccessive,
                NO_POOL,
                SetAxis::Rows,
                Axis::Cols,
                self.map_set(l, pl, d[n] * f, fo)?,
                SetAxis::Rows,
                Axis::None,
            )
        } else if i == j + 1 {
            b(
                W2bSuccessive,
                POOL_COLS,
                SetAxis::Rows,
                Axis::None,
                self.map_set(l, pl, f, fo)?,
                SetAxis::Rows,
                Axis::None,
            )
        } else {
            // NonNeighborInternalLayer: one linear regardless of n_fc_layers.
            let (pool, fold, width) = if i == 0 {
                (POOL_COLS, Axis::Rows, d[0] * f)
            } else if i == n - 1 {
                (POOL_ROWS, Axis::Cols, d[n] * f)
            } else {
                (POOL_BOTH, Axis::None, f)
            };
            let (out_w, unfold) = if j == n - 1 && i != n - 1 {
                (d[n] * fo, Axis::Rows)
            } else {
                (fo, Axis::None)
            };
            b(
                W2bNonNeighborInternal,
                pool,
                SetAxis::None,
                fold,
                self.map_mlp(l, pl, width, out_w, 1),
                SetAxis::None,
                unfold,
            )
        })
    }
}

const NO_POOL: Pool = Pool {
    rows: false,
    cols: false,
};
const POOL_ROWS: Pool = Pool {
    rows: true,
    cols: false,
};
const POOL_COLS: Pool = Pool {
    rows: false,
    cols: true,
};
const POOL_BOTH: Pool = Pool {
    rows: true,
    cols: true,
};

/// The grids of one layer (with `W_0`'s rows down-sampled where that applies).
struct Grids<'d> {
    dims: &'d [usize],
    n: usize,
    scale: f32,
}

impl Grids<'_> {
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        kind: BlockKind,
        src: usize,
        dst: usize,
        pool: Pool,
        set_axis: SetAxis,
        fold: Axis,
        map: Map,
        place: SetAxis,
        unfold: Axis,
    ) -> Block {
        Block {
            kind,
            src: src as u8,
            dst: dst as u8,
            pool,
            set_axis,
            fold,
            map,
            place,
            unfold,
            scale: self.scale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::{read_checkpoint, Tensor};
    use std::path::Path;

    fn fixture(name: &str) -> (Config, TensorMap) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name);
        let config = Config::load(&dir.join("config.json")).unwrap();
        (config, read_checkpoint(&dir.join("model.pt")).unwrap())
    }

    /// Training checkpoints and `nn.DataParallel` state_dicts convert to the same
    /// parameters as the plain state_dict; entries outside it are ignored.
    #[test]
    fn wrapped_and_prefixed_state_dicts_convert_alike() {
        for name in ["dws_bn_f3", "clf_sab_fc2_out2"] {
            let (config, sd) = fixture(name);
            let plain = convert(&config, &sd, None).unwrap();
            for prefix in ["module.", "state_dict.", "model.module."] {
                let mut wrapped: TensorMap = sd
                    .iter()
                    .map(|(k, t)| (format!("{prefix}{k}"), t.clone()))
                    .collect();
                let extra = sd.values().next().unwrap().clone();
                wrapped.insert("optimizer.state.0.exp_avg".into(), extra);
                assert_eq!(
                    find_state_dict(&config, &wrapped).unwrap().0,
                    prefix,
                    "{name}"
                );
                let p = convert(&config, &wrapped, None).unwrap();
                assert_eq!(p.params, plain.params, "{name} under {prefix}");
            }
            assert_eq!(find_state_dict(&config, &sd).unwrap().0, "", "{name}");
            // Two copies under different prefixes: an error naming both.
            let two: TensorMap = sd
                .iter()
                .flat_map(|(k, t)| {
                    [
                        (format!("model.{k}"), t.clone()),
                        (format!("ema.{k}"), t.clone()),
                    ]
                })
                .collect();
            let e = format!("{:#}", convert(&config, &two, None).unwrap_err());
            assert!(e.contains("`ema`, `model`"), "{e}");
        }
    }

    /// A classifier's state_dict against a DWSModel config is not taken apart
    /// into its backbone.
    #[test]
    fn a_classifier_state_dict_does_not_convert_as_a_dws_model() {
        let (_, sd) = fixture("clf_sab_fc2_out2");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/clf_sab_fc2_out2");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let obj = cfg.as_object_mut().unwrap();
        obj.insert("model".into(), "DWSModel".into());
        for k in ["n_classes", "n_out_fc", "equiv_out_features"] {
            obj.remove(k);
        }
        let config = Config::parse(&cfg.to_string()).unwrap();
        assert_eq!(find_state_dict(&config, &sd).unwrap().0, "");
        assert!(convert(&config, &sd, None).is_err());
    }

    /// A NaN or infinity in a checkpoint is named, not converted.
    #[test]
    fn non_finite_parameters_are_rejected_by_name() {
        let (config, mut sd) = fixture("dws_bn_f3");
        let (key, t) = sd.iter_mut().find(|(k, _)| k.ends_with("weight")).unwrap();
        let key = key.clone();
        t.data[3] = f32::INFINITY;
        let t_index = t.index_of(3);
        let e = format!("{:#}", convert(&config, &sd, None).unwrap_err());
        assert!(
            e.contains(&format!(
                "`{key}` holds an infinity (or a value beyond the f32 range) at [{}]",
                t_index
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            "{e}"
        );
    }

    /// A DWSModel without hidden layers whose skip has one output adds it to
    /// each of the layer's hidden_dim outputs (upstream's broadcasting): the
    /// same plan as a skip of hidden_dim equal rows.
    /// A bad statistic is named with its entry and index.
    #[test]
    fn bad_statistics_are_named() {
        let (config, sd) = fixture("paper_default");
        let dims = config.dims();
        let mut stats = TensorMap::new();
        for i in 0..dims.len() - 1 {
            for (kind, n) in [("weights", dims[i] * dims[i + 1]), ("biases", dims[i + 1])] {
                for (stat, v) in [("mean", 0.0), ("std", 1.0)] {
                    let t = Tensor {
                        shape: vec![n, 1],
                        data: vec![v; n],
                    };
                    stats.insert(format!("{kind}.{stat}.{i}"), t);
                }
            }
        }
        assert!(convert(&config, &sd, Some(&stats)).is_ok());
        let mut bad = stats.clone();
        bad.get_mut("weights.std.1").unwrap().data[5] = 0.0;
        let e = format!("{:#}", convert(&config, &sd, Some(&bad)).unwrap_err());
        assert!(
            e.contains("`weights.std.1` holds a standard deviation that is zero"),
            "{e}"
        );
        let mut bad = stats;
        bad.get_mut("biases.mean.0").unwrap().data[2] = f32::NAN;
        let e = format!("{:#}", convert(&config, &sd, Some(&bad)).unwrap_err());
        assert!(
            e.contains("`biases.mean.0` holds a NaN") && e.contains("at [2, 0]"),
            "{e}"
        );
    }

    #[test]
    fn a_one_feature_skip_without_hidden_layers_broadcasts() {
        let (config, sd) = fixture("dws_skips_sab");
        let hidden = config.hidden_dim;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dws_skips_sab");
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
        cfg["n_hidden"] = 0.into();
        let layer: TensorMap = sd
            .iter()
            .filter(|(k, _)| k.starts_with("layers.0."))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        let row = &sd["skip.weight"].data[..config.input_features];
        let b = sd["skip.bias"].data[0];
        let skip = |n: usize| {
            let mut m = layer.clone();
            let weight = Tensor {
                shape: vec![n, row.len()],
                data: row.repeat(n),
            };
            let bias = Tensor {
                shape: vec![n],
                data: vec![b; n],
            };
            m.insert("skip.weight".into(), weight);
            m.insert("skip.bias".into(), bias);
            m
        };
        cfg["output_features"] = hidden.into();
        let rows = Config::parse(&cfg.to_string()).unwrap();
        cfg["output_features"] = 1.into();
        let one = Config::parse(&cfg.to_string()).unwrap();
        let expected = convert(&rows, &skip(hidden), None).unwrap();
        let got = convert(&one, &skip(1), None).unwrap();
        assert_eq!(got.params, expected.params);
        assert_eq!(format!("{:?}", got.ops), format!("{:?}", expected.ops));
        assert_eq!(format!("{:?}", got.spec), format!("{:?}", expected.spec));
        // A skip stored with hidden_dim rows does not fit the one-output config.
        let e = format!("{:#}", convert(&one, &skip(hidden), None).unwrap_err());
        assert!(e.contains("`skip.weight` has shape"), "{e}");
    }
}
