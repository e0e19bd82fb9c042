#!/usr/bin/env python3
"""Generate dws-host/tests/data/inr_tiny: a tiny INR dataset and classifier for the
`dws eval` / `dws run` end-to-end tests. Run once; the Rust tests only read the output
and need no Python.

Upstream DWSNets (https://github.com/AvivNavon/DWSNets) is imported, never copied:
its INR class makes the INR files, its DWSModelForClassification makes the checkpoint,
its compute_stats writes statistics.pth and its INRDataset (normalize=True/False) feeds
the model to produce the expected logits.

    /opt/torchenv/bin/python dws-host/tests/data/make_inr_tiny.py --upstream /path/to/DWSNets

Written with torch 2.15.0 (CPU). Deterministic (fixed seeds).

Output (dws-host/tests/data/inr_tiny/):
  config.json, model.pt         a classifier for INRs with dims [2, 8, 8, 1], 3 classes
  inrs/{train,test}/*.pth       INR state_dicts (seq.{0,1,2}.{weight,bias})
  splits.json                   {"train": {"path", "label"}, "test": {...}}, paths
                                relative to this folder
  statistics.pth                upstream compute_stats over the train split
  bad/truncated.pth             the first half of a valid INR file
  bad/wrong_shape.pth           an INR with hidden width 6 instead of 8
  expected_logits.csv           upstream logits, normalize=True  (path,label,logit_0..)
  expected_logits_raw.csv       upstream logits, normalize=False
"""

import argparse
import csv
import json
import os
import shutil
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "inr_tiny")
INR_KWARGS = dict(in_dim=2, n_layers=3, up_scale=4, out_channels=1)  # dims [2, 8, 8, 1]
N_CLASSES = 3
N_TRAIN = 10
N_TEST = 8

CONFIG = {
    "model": "DWSModelForClassification",
    "weight_shapes": [[2, 8], [8, 8], [8, 1]],
    "bias_shapes": [[8], [8], [1]],
    "input_features": 1,
    "hidden_dim": 4,
    "n_hidden": 1,
    "n_classes": N_CLASSES,
    "reduction": "max",
    "bias": True,
    "n_fc_layers": 1,
    "num_heads": 1,
    "set_layer": "ds",
    "n_out_fc": 1,
    "dropout_rate": 0.0,  # upstream's Dropout is active even in eval mode
}


def add_upstream(path):
    sys.path.insert(0, os.path.abspath(path))
    try:
        import rff.layers  # noqa: F401
    except ImportError:  # only needed for positional encodings, unused here
        rff = types.ModuleType("rff")
        layers = types.ModuleType("rff.layers")
        layers.GaussianEncoding = layers.PositionalEncoding = None
        rff.layers = layers
        sys.modules["rff"] = rff
        sys.modules["rff.layers"] = layers


def make_inr(gen, label, hidden_scale=4):
    from nn.inr import INR

    inr = INR(**dict(INR_KWARGS, up_scale=hidden_scale))
    sd = inr.state_dict()
    # Stand in for fitting: zero Siren biases become random, and each class gets its
    # own scale so the classes differ in distribution.
    out = {}
    for k, v in sd.items():
        noise = torch.randn(v.shape, generator=gen) * 0.2
        out[k] = (v * (1.0 + 0.5 * label) + noise).contiguous()
    return out


def write_csv(path, rows, n_classes):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label"] + [f"logit_{c}" for c in range(n_classes)])
        for p, label, logits in rows:
            w.writerow([p, label] + [repr(float(x)) for x in logits])


def upstream_logits(model, splits, split, stats, normalize):
    from experiments.data import INRDataset

    ds = INRDataset(path=splits, split=split, normalize=normalize, statistics_path=stats)
    rows = []
    with torch.no_grad():
        for i in range(len(ds)):
            b = ds[i]
            w = tuple(t.unsqueeze(0) for t in b.weights)
            bb = tuple(t.unsqueeze(0) for t in b.biases)
            logits = model((w, bb))[0]
            rows.append((ds.dataset["path"][i], b.label, logits.tolist()))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True)
    args = p.parse_args()
    add_upstream(args.upstream)
    torch.set_num_threads(1)
    from experiments.mnist.compute_statistics import compute_stats
    from nn.models import DWSModelForClassification

    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    for d in ("inrs/train", "inrs/test", "bad"):
        os.makedirs(os.path.join(OUT, d))

    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    splits = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        paths, labels = [], []
        for i in range(n):
            label = int(torch.randint(N_CLASSES, (1,), generator=gen))
            rel = f"inrs/{split}/{i:03d}_{label}.pth"
            torch.save(make_inr(gen, label), os.path.join(OUT, rel))
            paths.append(rel)
            labels.append(label)
        splits[split] = {"path": paths, "label": labels}
    with open(os.path.join(OUT, "splits.json"), "w") as f:
        json.dump(splits, f, indent=1)

    good = os.path.join(OUT, splits["test"]["path"][0])
    data = open(good, "rb").read()
    open(os.path.join(OUT, "bad/truncated.pth"), "wb").write(data[: len(data) // 2])
    torch.save(make_inr(gen, 0, hidden_scale=3), os.path.join(OUT, "bad/wrong_shape.pth"))

    os.chdir(OUT)  # upstream opens split paths relative to the working directory
    compute_stats(data_path="splits.json", save_path=".", batch_size=10000)

    kwargs = {k: v for k, v in CONFIG.items() if k != "model"}
    kwargs["weight_shapes"] = tuple(tuple(s) for s in kwargs["weight_shapes"])
    kwargs["bias_shapes"] = tuple(tuple(s) for s in kwargs["bias_shapes"])
    model = DWSModelForClassification(**kwargs)
    # Upstream's small default init gives near-constant logits: re-initialise so the
    # logits depend on the input (Linear weight ~ N(0, 1/fan_in), bias ~ U(-0.2, 0.2)).
    for name, prm in model.named_parameters():
        with torch.no_grad():
            if prm.dim() >= 2:
                prm.normal_(0.0, prm.shape[-1] ** -0.5)
            else:
                prm.uniform_(-0.2, 0.2)
    model.eval()
    torch.save(model.state_dict(), "model.pt")
    with open("config.json", "w") as f:
        json.dump(CONFIG, f, indent=1)

    write_csv("expected_logits.csv", upstream_logits(model, "splits.json", "test", "statistics.pth", True), N_CLASSES)
    write_csv("expected_logits_raw.csv", upstream_logits(model, "splits.json", "test", "statistics.pth", False), N_CLASSES)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
