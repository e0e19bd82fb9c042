#!/usr/bin/env python3
"""Check the shipped digits example with upstream's code (needs only the test split).

1. Every test INR in ``splits_test.json`` loads strictly into upstream's
   ``INR(in_dim=2, n_layers=3, up_scale=16, out_channels=1)``; its
   reconstruction on upstream's ``make_coordinates((8, 8))`` grid is compared
   with the scikit-learn digit (index and label are in the file name).
2. ``model.pt`` loads strictly into ``DWSModelForClassification(**config)``;
   the test logits recomputed through upstream's
   ``INRDataset(normalize=True)`` (eval mode, no_grad) are compared with
   ``torch_test_logits.csv``.

    python examples/digits/verify.py --upstream /path/to/DWSNets
"""

import argparse
import csv
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HERE, IMAGE_SIZE, INR_KWARGS, add_upstream  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    add_upstream(args.upstream)
    from experiments.data import INRDataset
    from experiments.utils import make_coordinates
    from nn.inr import INR
    from nn.models import DWSModelForClassification
    from sklearn.datasets import load_digits

    os.chdir(HERE)
    split = json.load(open("splits_test.json"))["test"]
    images = torch.tensor(load_digits().images.reshape(-1, 64) / 16.0, dtype=torch.float32)
    targets = load_digits().target

    # 1. INRs
    inr = INR(**INR_KWARGS).eval()
    coords = make_coordinates(IMAGE_SIZE, 1)[0]
    mses = []
    for path, label in zip(split["path"], split["label"]):
        index, lab = os.path.basename(path)[:-4].split("_")
        assert int(lab) == label == targets[int(index)], path
        inr.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
        with torch.no_grad():
            mses.append(((inr(coords).squeeze(-1) - images[int(index)]) ** 2).mean())
    mses = torch.stack(mses)
    print(f"{len(mses)} test INRs: mean mse {mses.mean():.3e}, mean psnr {(-10 * mses.log10()).mean():.2f} dB, "
          f"min psnr {(-10 * mses.log10()).min():.2f} dB")
    assert mses.max() < 1e-2

    # 2. classifier
    cfg = json.load(open("config.json"))
    assert cfg.pop("model") == "DWSModelForClassification"
    cfg["weight_shapes"] = tuple(tuple(s) for s in cfg["weight_shapes"])
    cfg["bias_shapes"] = tuple(tuple(s) for s in cfg["bias_shapes"])
    model = DWSModelForClassification(**cfg)
    model.load_state_dict(torch.load("model.pt", map_location="cpu"), strict=True)
    model.eval()
    ds = INRDataset(path="splits_test.json", split="test", normalize=True, statistics_path="statistics.pth")
    rows = list(csv.DictReader(open("torch_test_logits.csv")))
    assert [r["path"] for r in rows] == list(ds.dataset["path"])
    max_diff, correct = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ds), 64):
            items = [ds[i] for i in range(s, min(s + 64, len(ds)))]
            w = tuple(torch.stack([it.weights[j] for it in items]) for j in range(len(items[0].weights)))
            b = tuple(torch.stack([it.biases[j] for it in items]) for j in range(len(items[0].biases)))
            logits = model((w, b))
            for k, it in enumerate(items):
                r = rows[s + k]
                ref = torch.tensor([float(r[f"logit_{c}"]) for c in range(logits.shape[1])])
                max_diff = max(max_diff, (ref - logits[k]).abs().max().item())
                assert int(r["label"]) == it.label and int(r["predicted"]) == int(logits[k].argmax())
                correct += int(logits[k].argmax()) == it.label
    print(f"classifier: test accuracy {correct / len(ds):.4f}, max |logit - csv| {max_diff:.3e}")
    assert max_diff < 1e-4
    print("ok")


if __name__ == "__main__":
    main()
