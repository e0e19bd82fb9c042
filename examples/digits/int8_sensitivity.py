#!/usr/bin/env python3
"""Where int8 loses agreement on the digits example: a fake-quantization study
with upstream's own model code (not part of CI).

Rounds values of upstream's ``DWSModelForClassification`` (eval mode, no_grad)
to symmetric int8 at chosen points, with scales calibrated on the 256 inputs
of ``calibration.safetensors``, and reports top-1 agreement with the
unquantized model on the test split (the figure the int8 issue asks for),
accuracy, and the logits' SQNR. Points:

* ``input``: the normalized input tensors, one scale per tensor;
* ``tensors``: every weight-space tensor between layers (after each DWS layer,
  batch norm and ReLU), one scale per tensor (``--per-channel``: per tensor and
  feature channel);
* ``block``: the input and output of every ``nn.Linear`` inside the layers and
  the head, one scale each (the values inside a block);
* ``weights``: every ``nn.Linear`` weight, per tensor or per output channel.

dws's int8 path rounds at all of these points (``docs/quantization.md``); this
study shows how much each costs on its own. Calibration uses the maximum
magnitude (``--coverage`` for a percentile).

    python examples/digits/int8_sensitivity.py --upstream /path/to/DWSNets
"""

import argparse
import json
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HERE, add_upstream  # noqa: E402


def load_model():
    from nn.models import DWSModelForClassification

    cfg = json.load(open(os.path.join(HERE, "config.json")))
    assert cfg.pop("model") == "DWSModelForClassification"
    cfg["weight_shapes"] = tuple(map(tuple, cfg["weight_shapes"]))
    cfg["bias_shapes"] = tuple(map(tuple, cfg["bias_shapes"]))
    model = DWSModelForClassification(**cfg)
    model.load_state_dict(torch.load(os.path.join(HERE, "model.pt"), map_location="cpu"), strict=True)
    return model.eval()


def load_inputs():
    """(calibration, test, test labels) as upstream-layout normalized tuples."""
    from experiments.data import INRDataset
    from safetensors.torch import load_file

    stats = torch.load(os.path.join(HERE, "statistics.pth"), map_location="cpu")
    cal = load_file(os.path.join(HERE, "calibration.safetensors"))
    n = len(stats["weights"]["mean"])
    cal = (
        tuple((cal[f"weights.{i}"] - stats["weights"]["mean"][i]) / stats["weights"]["std"][i] for i in range(n)),
        tuple((cal[f"biases.{i}"] - stats["biases"]["mean"][i]) / stats["biases"]["std"][i] for i in range(n)),
    )
    cwd = os.getcwd()
    os.chdir(HERE)
    try:
        ds = INRDataset(path="splits_test.json", split="test", normalize=True,
                        statistics_path="statistics.pth")
        items = [ds[i] for i in range(len(ds))]
    finally:
        os.chdir(cwd)
    test = (
        tuple(torch.stack([it.weights[j] for it in items]) for j in range(n)),
        tuple(torch.stack([it.biases[j] for it in items]) for j in range(n)),
    )
    labels = torch.tensor([it.label for it in items])
    return cal, test, labels


def batches(x, size=64):
    for s in range(0, x[0][0].shape[0], size):
        yield tuple(t[s:s + size] for t in x[0]), tuple(t[s:s + size] for t in x[1])


def magnitude(x, per_channel, coverage):
    a = x.detach().abs()
    a = a.reshape(-1, a.shape[-1]) if per_channel else a.reshape(-1, 1)
    if coverage >= 1.0:
        return a.amax(dim=0)
    return a.quantile(coverage, dim=0) if a.shape[0] <= 1 << 24 else a.amax(dim=0)


def fake_quant(x, c):
    s = c.clamp(min=1e-8) / 127
    return (x / s).round().clamp(-127, 127) * s


class Rounder:
    """Records magnitudes per point while calibrating, then rounds at the chosen points."""

    def __init__(self, points, per_channel, coverage):
        self.points, self.per_channel, self.coverage = points, per_channel, coverage
        self.mag, self.calibrating = {}, True

    def at(self, kind, key, x, per_channel=False):
        if kind not in self.points:
            return x
        if self.calibrating:
            m = magnitude(x, per_channel, self.coverage)
            self.mag[key] = torch.maximum(self.mag[key], m) if key in self.mag else m
            return x
        return fake_quant(x, self.mag[key])

    def space(self, kind, key, ws):
        w, b = ws
        pc = self.per_channel
        return (tuple(self.at(kind, (key, "w", i), t, pc) for i, t in enumerate(w)),
                tuple(self.at(kind, (key, "b", i), t, pc) for i, t in enumerate(b)))


def run(model, rounder, x):
    hooks = []
    for name, m in model.layers.layers.named_children():
        hooks.append(m.register_forward_hook(lambda m, i, o, name=name: rounder.space("tensors", name, o)))
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            hooks.append(m.register_forward_pre_hook(
                lambda m, i, name=name: (rounder.at("block", (name, "in"), i[0]),)))
            hooks.append(m.register_forward_hook(
                lambda m, i, o, name=name: rounder.at("block", (name, "out"), o)))
    try:
        with torch.no_grad():
            return torch.cat([model(rounder.space("input", "input", xb)) for xb in batches(x)])
    finally:
        for h in hooks:
            h.remove()


def set_weights(model, original, mode):
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            w = original[name]
            if mode == "tensor":
                w = fake_quant(w, w.abs().amax())
            elif mode == "channel":
                w = fake_quant(w, w.abs().amax(dim=1, keepdim=True))
            m.weight.data = w.clone()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True)
    p.add_argument("--coverage", type=float, default=1.0,
                   help="calibrate to this quantile of |x| instead of the maximum")
    args = p.parse_args()
    torch.set_num_threads(2)
    add_upstream(args.upstream)
    model = load_model()
    cal, test, labels = load_inputs()
    original = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    ref = run(model, Rounder(set(), False, 1.0), test)
    print(f"f32: accuracy {100 * (ref.argmax(1) == labels).float().mean():.2f}% on {len(labels)} test inputs")
    studies = [
        ("weights per tensor", set(), "tensor", False),
        ("weights per output channel", set(), "channel", False),
        ("input tensors", {"input"}, None, False),
        ("weight-space tensors between layers", {"tensors"}, None, False),
        ("  the same, per feature channel", {"tensors"}, None, True),
        ("values inside blocks (Linear in/out)", {"block"}, None, False),
        ("everything, weights per tensor", {"input", "tensors", "block"}, "tensor", False),
        ("everything, weights per output channel", {"input", "tensors", "block"}, "channel", False),
    ]
    print(f"{'rounded to int8':42s} {'agreement':>10s} {'accuracy':>9s} {'logit SQNR':>11s}")
    for name, points, weights, per_channel in studies:
        set_weights(model, original, weights)
        r = Rounder(points, per_channel, args.coverage)
        run(model, r, cal)
        r.calibrating = False
        out = run(model, r, test)
        agree = (out.argmax(1) == ref.argmax(1)).float().mean()
        acc = (out.argmax(1) == labels).float().mean()
        sqnr = 10 * torch.log10((ref ** 2).sum() / ((out - ref) ** 2).sum().clamp(min=1e-30))
        print(f"{name:42s} {100 * agree:9.2f}% {100 * acc:8.2f}% {sqnr:8.1f} dB", flush=True)
    set_weights(model, original, None)


if __name__ == "__main__":
    main()
