#!/usr/bin/env python3
"""Generate PyTorch reference fixtures for the `dws` Rust runtime.

The fixtures are produced by the *upstream* DWSNets PyTorch implementation
(Navon et al., "Equivariant Architectures for Learning in Deep Weight Spaces",
https://github.com/AvivNavon/DWSNets). Upstream code is only imported, never
copied: pass the path of an upstream checkout with ``--upstream`` (its package
is ``nn``, e.g. ``from nn.models import DWSModel``).

Generated with torch 2.15.0 (CPU), numpy and safetensors. Exact command, run
from the repository root:

    python tests/reference/generate.py --upstream /path/to/DWSNets --out tests/fixtures

For every case it writes ``<out>/<name>/{config.json, model.pt,
inputs.safetensors, expected.safetensors}`` plus ``<out>/MANIFEST.json``.
See tests/reference/README.md for the format.

Everything is deterministic: each case seeds ``torch.manual_seed`` with its own
seed (crc32 of its name, so independent of case order) before building the
model, re-initialising parameters and drawing inputs; running it twice gives
byte-identical files. Parameters are re-initialised (upstream's default
init_scale=1e-4 would make outputs ~0): Linear weight ~ N(0, 1/fan_in), bias ~
U(-0.2, 0.2), Attn.query ~ N(0, 1), BatchNorm1d weight ~ U(0.5, 1.5), bias ~
0.2 N(0, 1), running_mean ~ 0.3 N(0, 1), running_var ~ U(0.5, 2). Then a
data-dependent scalar gain per equivariant layer (and head) multiplies that
stage's Linear weights so its output RMS on the fixture inputs is ~1 (see
``calibrate``), so outputs stay O(1) and input-dependent at every depth. Outputs are computed with ``model.eval()`` under
``torch.no_grad()``. ``dropout_rate`` is always 0.0 because upstream's
``Dropout`` calls ``F.dropout`` without ``training=`` and is thus active even
in eval mode.
"""

import argparse
import json
import math
import os
import shutil
import sys
import zlib

import torch
from torch import nn

# Upstream constructor defaults (input_features and hidden_dim have none upstream:
# every case must set them).
REQUIRED = ("input_features", "hidden_dim")
DEFAULTS_COMMON = dict(
    n_hidden=2,
    reduction="max",
    bias=True,
    n_fc_layers=1,
    num_heads=8,
    set_layer="sab",
    input_dim_downsample=None,
    dropout_rate=0.0,
    add_skip=False,
    add_layer_skip=False,
    bn=False,
    diagonal=False,
    init_off_diag_scale_penalty=1.0,
)
# Upstream constructor defaults that differ per model kind.
DEFAULTS_DWS = dict(output_features=None, init_scale=1e-4)
DEFAULTS_CLF = dict(n_classes=10, n_out_fc=1, equiv_out_features=None, init_scale=1.0)


def shapes_of(widths):
    """[d0, d1, ..., dL] -> weight_shapes [[d_i, d_{i+1}]], bias_shapes [[d_{i+1}]]."""
    ws = [[widths[i], widths[i + 1]] for i in range(len(widths) - 1)]
    bs = [[widths[i + 1]] for i in range(len(widths) - 1)]
    return ws, bs


def case(name, model, widths, description, batch=4, seed=None, **kw):
    return dict(name=name, model=model, widths=widths, description=description,
                batch=batch, seed=seed, kwargs=kw)


CLF = "DWSModelForClassification"
DWS = "DWSModel"

CASES = [
    case("paper_default", CLF, [2, 32, 32, 1],
         "Paper INR classifier: sab (8 heads), max, bn, hidden 32, 4 hidden layers, 10 classes",
         input_features=1, hidden_dim=32, n_hidden=4, reduction="max", set_layer="sab",
         num_heads=8, bn=True, n_fc_layers=1, n_out_fc=1, n_classes=10),
    case("dws_ds_mean_uneven", DWS, [3, 5, 7, 2],
         "DWSModel, ds set layer, mean reduction, 3 uneven matrices, F_in=2, output_features=3",
         input_features=2, output_features=3, hidden_dim=6, n_hidden=2, reduction="mean",
         set_layer="ds", num_heads=8),
    case("clf_sab_sum_5mats", CLF, [2, 6, 5, 4, 7, 3],
         "Classifier, sab (2 heads), sum reduction, 5 uneven matrices, n_hidden=0 (one equivariant layer)",
         input_features=1, hidden_dim=8, n_hidden=0, reduction="sum", set_layer="sab",
         num_heads=2, n_classes=4),
    case("clf_ds_max_6mats_f2", CLF, [3, 4, 5, 3, 6, 4, 2],
         "Classifier, ds, max reduction, 6 matrices, F_in=2, n_hidden=0",
         input_features=2, hidden_dim=6, n_hidden=0, reduction="max", set_layer="ds",
         n_classes=5),
    case("clf_ds_fc2_out2", CLF, [3, 5, 4, 2],
         "Classifier, ds, mean, n_fc_layers=2 (2-layer set MLPs), n_out_fc=2 (2-layer head)",
         input_features=1, hidden_dim=6, n_hidden=1, reduction="mean", set_layer="ds",
         n_fc_layers=2, n_out_fc=2, n_classes=3),
    case("clf_sab_fc2_out2", CLF, [2, 3, 4, 2],
         "Classifier, sab (2 heads), max, n_fc_layers=2, n_out_fc=2",
         input_features=1, hidden_dim=8, n_hidden=1, reduction="max", set_layer="sab",
         num_heads=2, n_fc_layers=2, n_out_fc=2, n_classes=4),
    case("dws_diagonal_5mats", DWS, [2, 4, 3, 5, 4, 2],
         "DWSModel, diagonal=True (only |i-j|<=1 blocks), ds, sum, 5 matrices",
         input_features=1, output_features=2, hidden_dim=6, n_hidden=1, reduction="sum",
         set_layer="ds", diagonal=True),
    case("clf_diagonal_sab", CLF, [3, 4, 5, 4, 2],
         "Classifier, diagonal=True, sab (2 heads), mean, 4 matrices",
         input_features=1, hidden_dim=8, n_hidden=1, reduction="mean", set_layer="sab",
         num_heads=2, diagonal=True, n_classes=3),
    case("dws_skips_sab", DWS, [3, 5, 4, 2],
         "DWSModel, add_skip and add_layer_skip, sab (2 heads), max, F_in=2",
         input_features=2, output_features=2, hidden_dim=8, n_hidden=1, reduction="max",
         set_layer="sab", num_heads=2, add_skip=True, add_layer_skip=True),
    case("clf_layer_skip_ds", CLF, [2, 5, 4, 3],
         "Classifier, add_layer_skip only, ds, mean",
         input_features=1, hidden_dim=6, n_hidden=1, reduction="mean", set_layer="ds",
         add_layer_skip=True, n_classes=4),
    case("dws_nobias_ds", DWS, [3, 4, 5, 2],
         "DWSModel, bias=False everywhere (no skips), ds, sum, n_fc_layers=2",
         input_features=2, output_features=2, hidden_dim=6, n_hidden=1, reduction="sum",
         set_layer="ds", bias=False, n_fc_layers=2),
    case("clf_nobias_sab", CLF, [2, 4, 4, 3],
         "Classifier, bias=False in the equivariant layers (head keeps bias), sab (2 heads), max, n_hidden=0",
         input_features=1, hidden_dim=8, n_hidden=0, reduction="max", set_layer="sab",
         num_heads=2, bias=False, n_classes=3),
    case("dws_downsample_ds", DWS, [6, 4, 5, 2],
         "DWSModel, input_dim_downsample 6->3 (DownSampleDWSLayer, attn set layers), ds, mean",
         input_features=1, output_features=2, hidden_dim=6, n_hidden=1, reduction="mean",
         set_layer="ds", input_dim_downsample=3),
    case("clf_downsample_ds", CLF, [6, 5, 4, 3],
         "Classifier, input_dim_downsample 6->3, ds, max, F_in=2",
         input_features=2, hidden_dim=6, n_hidden=1, reduction="max", set_layer="ds",
         input_dim_downsample=3, n_classes=4),
    case("dws_downsample_layer_skip", DWS, [6, 4, 3, 2],
         "DWSModel, input_dim_downsample 6->3 with add_layer_skip, ds, sum",
         input_features=1, output_features=3, hidden_dim=6, n_hidden=1, reduction="sum",
         set_layer="ds", input_dim_downsample=3, add_layer_skip=True),
    case("clf_downsample_sab", CLF, [6, 4, 4, 2],
         "Classifier, input_dim_downsample 6->3, sab (2 heads), mean",
         input_features=1, hidden_dim=8, n_hidden=1, reduction="mean", set_layer="sab",
         num_heads=2, input_dim_downsample=3, n_classes=3),
    case("clf_equiv_out", CLF, [3, 5, 4, 2],
         "Classifier with equiv_out_features=5 (last equivariant layer 8->5, head reads 5), ds, sum",
         input_features=1, hidden_dim=8, n_hidden=1, reduction="sum", set_layer="ds",
         equiv_out_features=5, n_classes=4),
    case("dws_bn_f3", DWS, [3, 4, 5, 2],
         "DWSModel, bn=True with non-trivial running stats, F_in=3, ds, max, 2 hidden layers (2 BN blocks)",
         input_features=3, output_features=2, hidden_dim=6, n_hidden=2, reduction="max",
         set_layer="ds", bn=True),
    case("clf_sab_heads4_mean", CLF, [2, 3, 3, 2],
         "Classifier, sab with num_heads=4 and hidden 12, mean reduction",
         input_features=1, hidden_dim=12, n_hidden=1, reduction="mean", set_layer="sab",
         num_heads=4, n_classes=5),
    case("dws_width1_middle", DWS, [3, 1, 4, 2],
         "DWSModel with a width-1 hidden layer in the input network, sab (2 heads), mean",
         input_features=1, output_features=2, hidden_dim=8, n_hidden=1, reduction="mean",
         set_layer="sab", num_heads=2),
    case("dws_one_feature_layer", DWS, [3, 4, 5, 2],
         "DWSModel, n_hidden=0 with hidden_dim=1 and add_skip to 3 features (PyTorch broadcasts "
         "the layer's one feature onto the skip's three), ds, max, n_fc_layers=2, add_layer_skip, F_in=2",
         input_features=2, output_features=3, hidden_dim=1, n_hidden=0, reduction="max",
         set_layer="ds", n_fc_layers=2, add_skip=True, add_layer_skip=True),
    case("clf_one_feature_layer_sab", CLF, [2, 5, 4, 3],
         "Classifier, n_hidden=0 with hidden_dim=1 and add_skip to equiv_out_features=4 (the layer's "
         "one feature broadcast onto the skip's four), sab (1 head), mean",
         input_features=1, hidden_dim=1, n_hidden=0, reduction="mean", set_layer="sab",
         num_heads=1, add_skip=True, equiv_out_features=4, n_classes=3),
]

ALL_KEYS_ORDER = [
    "weight_shapes", "bias_shapes", "input_features", "hidden_dim", "n_hidden",
    "output_features", "n_classes", "reduction", "bias", "n_fc_layers", "num_heads",
    "set_layer", "n_out_fc", "input_dim_downsample", "dropout_rate", "add_skip",
    "add_layer_skip", "equiv_out_features", "bn", "diagonal", "init_scale",
    "init_off_diag_scale_penalty",
]


def full_config(c):
    ws, bs = shapes_of(c["widths"])
    assert all(k in c["kwargs"] for k in REQUIRED), c["name"]
    cfg = dict(DEFAULTS_COMMON, **{k: None for k in REQUIRED})
    cfg.update(DEFAULTS_DWS if c["model"] == DWS else DEFAULTS_CLF)
    unknown = set(c["kwargs"]) - set(cfg)
    assert not unknown, f"{c['name']}: unknown keys {unknown}"
    cfg.update(c["kwargs"])
    cfg["weight_shapes"] = ws
    cfg["bias_shapes"] = bs
    assert cfg["dropout_rate"] == 0.0
    ordered = {"model": c["model"]}
    for k in ALL_KEYS_ORDER:
        if k in cfg:
            ordered[k] = cfg[k]
    assert set(ordered) == set(cfg) | {"model"}
    return ordered


def build(cfg):
    from nn.models import DWSModel, DWSModelForClassification

    kw = {k: v for k, v in cfg.items() if k != "model"}
    kw["weight_shapes"] = tuple(tuple(s) for s in kw["weight_shapes"])
    kw["bias_shapes"] = tuple(tuple(s) for s in kw["bias_shapes"])
    cls = DWSModel if cfg["model"] == DWS else DWSModelForClassification
    return cls(**kw)


BIAS_RANGE = 0.2  # Linear biases ~ U(-BIAS_RANGE, BIAS_RANGE)
TARGET_RMS = 1.0  # RMS each equivariant layer's (and the head's) output is calibrated to


@torch.no_grad()
def reinit(model):
    """Base re-initialisation: Linear weight ~ N(0, 1/fan_in), bias ~ U(-0.2, 0.2),
    Attn.query ~ N(0, 1), BatchNorm1d with non-trivial affine params and running stats."""
    from nn.layers.base import Attn

    done = set()
    for _, m in model.named_modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, 1.0 / math.sqrt(m.weight.shape[1]))
            done.add(id(m.weight))
            if m.bias is not None:
                m.bias.uniform_(-BIAS_RANGE, BIAS_RANGE)
                done.add(id(m.bias))
        elif isinstance(m, nn.BatchNorm1d):
            m.running_mean.normal_().mul_(0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_().mul_(0.2)
            done.update({id(m.weight), id(m.bias)})
        elif isinstance(m, Attn):
            m.query.normal_()
            done.add(id(m.query))
    for n, p in model.named_parameters():
        if id(p) not in done:  # any other free parameter (none expected upstream)
            print(f"  note: re-initialising extra parameter {n} uniform(-0.5, 0.5)")
            p.uniform_(-0.5, 0.5)


def stages(model):
    """The equivariant layers (in order) and, for a classifier, the invariant head."""
    from nn.layers.layers import DWSLayer

    dws = model.layers if hasattr(model, "clf") else model
    out = [m for m in dws.layers if isinstance(m, DWSLayer)]
    if hasattr(model, "clf"):
        out.append(model.clf)
    return out


def _rms(out):
    if isinstance(out, torch.Tensor):
        ts = [out]
    else:
        ts = list(out[0]) + list(out[1])
    return torch.sqrt(sum(t.pow(2).sum() for t in ts) / sum(t.numel() for t in ts)).item()


@torch.no_grad()
def calibrate(model, x, iters=30):
    """LSUV-like, data-dependent gain: stage by stage, scale all Linear weights of
    that stage by one scalar gain (found by bisection in log space) so the stage's
    output RMS on the fixture inputs is TARGET_RMS. Upstream divides every
    equivariant layer's output by the number of matrices, so plain init decays
    the signal geometrically with depth; this keeps the outputs input-dependent
    and puts BatchNorm inputs at O(1) scale. ``iters`` bisection steps per
    stage. Returns the gains found."""
    gains = []
    for st in stages(model):
        lins = [m for m in st.modules() if isinstance(m, nn.Linear)]
        base = [m.weight.clone() for m in lins]
        seen = {}
        hook = st.register_forward_hook(lambda mod, inp, out: seen.__setitem__("rms", _rms(out)))

        def rms_at(log_g):
            for m, w in zip(lins, base):
                m.weight.copy_(w * math.exp(log_g))
            model(x)
            return seen["rms"]

        lo, hi = math.log(0.05), math.log(20.0)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            if rms_at(mid) < TARGET_RMS:
                lo = mid
            else:
                hi = mid
        g = 0.5 * (lo + hi)
        rms_at(g)
        hook.remove()
        gains.append(round(math.exp(g), 4))
    return gains


def make_inputs(cfg, batch):
    F = cfg["input_features"]
    weights, biases = [], []
    for (a, b) in cfg["weight_shapes"]:
        scale = float(torch.empty(()).uniform_(0.5, 1.5))
        weights.append((torch.randn(batch, a, b, F) * scale).contiguous())
    for (b,) in cfg["bias_shapes"]:
        scale = float(torch.empty(()).uniform_(0.5, 1.5))
        biases.append((torch.randn(batch, b, F) * scale).contiguous())
    return tuple(weights), tuple(biases)


def batch_variation(expected):
    """min over output tensors of mean(std over batch) / rms: how input-dependent outputs are."""
    return min((t.std(0).mean() / t.pow(2).mean().sqrt()).item() for t in expected.values())


def check(name, key, t):
    assert t.dtype == torch.float32, (name, key, t.dtype)
    assert torch.isfinite(t).all(), f"{name}/{key}: non-finite output"
    mx = t.abs().max().item()
    assert mx >= 0.1, f"{name}/{key}: max |value| {mx} < 0.1"
    return mx


def run_case(c, index, out_dir):
    from safetensors.torch import save_file

    name = c["name"]
    cfg = full_config(c)
    seed = c["seed"] if c["seed"] is not None else zlib.crc32(name.encode()) % 100_000
    torch.manual_seed(seed)
    model = build(cfg)
    reinit(model)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    if name == "paper_default":
        assert n_params == 552_650, n_params

    weights, biases = make_inputs(cfg, c["batch"])
    gains = calibrate(model, (weights, biases))
    with torch.no_grad():
        out = model((weights, biases))

    inputs = {f"weights.{i}": w for i, w in enumerate(weights)}
    inputs.update({f"biases.{i}": b for i, b in enumerate(biases)})
    expected = {}
    if cfg["model"] == CLF:
        assert out.shape == (c["batch"], cfg["n_classes"]), out.shape
        expected["logits"] = out
    else:
        ow, ob = out
        f_out = cfg["output_features"] if cfg["output_features"] is not None else cfg["hidden_dim"]
        assert len(ow) == len(weights) and len(ob) == len(biases)
        for i, (w, o) in enumerate(zip(weights, ow)):
            assert o.shape == w.shape[:3] + (f_out,), (i, o.shape)
            expected[f"weights.{i}"] = o
        for i, (b, o) in enumerate(zip(biases, ob)):
            assert o.shape == b.shape[:2] + (f_out,), (i, o.shape)
            expected[f"biases.{i}"] = o
    expected = {k: v.detach().float().contiguous().clone() for k, v in expected.items()}
    inputs = {k: v.float().contiguous().clone() for k, v in inputs.items()}
    maxes = {k: check(name, k, v) for k, v in expected.items()}

    # Determinism sanity check: a second forward gives identical results.
    with torch.no_grad():
        out2 = model((weights, biases))
    flat2 = [out2] if cfg["model"] == CLF else list(out2[0]) + list(out2[1])
    for a, b in zip(expected.values(), flat2):
        assert torch.equal(a, b.float()), f"{name}: non-deterministic forward"

    case_dir = os.path.join(out_dir, name)
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    with open(os.path.join(case_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    torch.save(model.state_dict(), os.path.join(case_dir, "model.pt"))
    save_file(inputs, os.path.join(case_dir, "inputs.safetensors"))
    save_file(expected, os.path.join(case_dir, "expected.safetensors"))

    verify(case_dir)

    print(f"{name:28s} {cfg['model']:26s} params={n_params:7d} B={c['batch']} "
          f"min(max|out|)={min(maxes.values()):.3f} max={max(maxes.values()):.2f} "
          f"batch-var={batch_variation(expected):.3f} gains={gains}")
    return dict(
        name=name,
        model=cfg["model"],
        parameters=n_params,
        batch=c["batch"],
        seed=seed,
        stage_gains=gains,
        n_weight_matrices=len(cfg["weight_shapes"]),
        description=c["description"],
    )


@torch.no_grad()
def verify(case_dir):
    """Round trip: rebuild from config.json, load model.pt strictly, re-run on
    inputs.safetensors and compare with expected.safetensors (rtol=atol=1e-5)."""
    from safetensors.torch import load_file

    with open(os.path.join(case_dir, "config.json")) as f:
        cfg = json.load(f)
    model = build(cfg)
    model.load_state_dict(torch.load(os.path.join(case_dir, "model.pt"), weights_only=True), strict=True)
    model.eval()
    inp = load_file(os.path.join(case_dir, "inputs.safetensors"))
    exp = load_file(os.path.join(case_dir, "expected.safetensors"))
    n = len(cfg["weight_shapes"])
    x = (tuple(inp[f"weights.{i}"] for i in range(n)), tuple(inp[f"biases.{i}"] for i in range(n)))
    out = model(x)
    if cfg["model"] == CLF:
        got = {"logits": out}
    else:
        got = {f"weights.{i}": t for i, t in enumerate(out[0])}
        got.update({f"biases.{i}": t for i, t in enumerate(out[1])})
    assert set(got) == set(exp), (case_dir, set(got), set(exp))
    for k in exp:
        assert exp[k].is_contiguous()
        # Not bit-exact: safetensors-loaded buffers may be aligned differently,
        # which changes SIMD summation order (differences of ~1 ulp).
        torch.testing.assert_close(got[k], exp[k], rtol=1e-5, atol=1e-5,
                                   msg=lambda m: f"{case_dir}/{k}: round trip mismatch: {m}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="path to the upstream DWSNets checkout")
    ap.add_argument("--out", default="tests/fixtures", help="output directory")
    ap.add_argument("--only", nargs="*", help="generate only these cases (manifest untouched)")
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(args.upstream))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}")

    os.makedirs(args.out, exist_ok=True)
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    manifest = []
    for i, c in enumerate(CASES):
        if args.only and c["name"] not in args.only:
            continue
        manifest.append(run_case(c, i, args.out))

    if not args.only:
        with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
            json.dump(dict(
                generator="tests/reference/generate.py",
                torch_version=torch.__version__.split("+")[0],
                upstream="https://github.com/AvivNavon/DWSNets",
                cases=manifest,
            ), f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
