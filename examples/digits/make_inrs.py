#!/usr/bin/env python3
"""Fit one SIREN INR per scikit-learn 8x8 digit and write upstream-format splits.

Uses upstream DWSNets' ``nn.inr.INR`` (imported, not copied) with
``INR(in_dim=2, n_layers=3, up_scale=16, out_channels=1)``: weights
``seq.0`` [32,2], ``seq.1`` [32,32], ``seq.2`` [1,32] (PyTorch [out, in]),
i.e. (2,32),(32,32),(32,1) as DWSNets [in, out] weight shapes; biases 32, 32, 1.

* Data: ``sklearn.datasets.load_digits()`` (1797 bundled 8x8 images, values
  0..16, no download). Intensities are divided by 16 -> [0, 1], the range of
  upstream's MNIST images (torchvision ``ToTensor``); upstream's INR adds +0.5
  to its output, and ``experiments/mnist/plot_inr_reconstruction.py`` saves the
  INR output directly as an image in [0, 1].
* Coordinates: upstream ``experiments.utils.make_coordinates((8, 8), 1)``
  (x and y in linspace(-1, 1, 8), x varying fastest). The target for
  coordinate row ``r*8 + c`` is pixel ``image[r, c]``, matching upstream's
  ``INRImageDataset`` which reshapes the INR output with ``view(8, 8, -1)``.
* Shared initialisation: ``torch.manual_seed(seed)``, one ``INR(...)``; its
  initial state_dict is the starting point of EVERY INR (independent random
  inits make the weight spaces incomparable and the classifier fails).
* Fitting: all INRs at once, parameters stacked along a leading batch axis,
  forward written with batched matmuls that compute exactly upstream's
  ``INR.forward`` (``sin(30 * (x W^T + b))`` twice, then a linear layer, +0.5).
  Loss: per-INR MSE over the 64 pixels, summed over INRs (so INRs are
  independent; Adam is element-wise). Adam, ``--lr``, ``--steps`` steps.
* Output: ``inrs/{split}/{index:04d}_{label}.pth`` =
  ``torch.save(state_dict)`` with upstream's keys and order
  (``seq.{k}.weight``, ``seq.{k}.bias``), ``splits.json`` in upstream's format
  ``{split: {"path": [...], "label": [...]}}`` with paths relative to the
  folder of ``splits.json``, and ``splits_test.json`` with only the test
  split. Split: stratified 70/10/20 (train/val/test) with
  ``sklearn.model_selection.train_test_split(random_state=seed)``.

Every saved file is reloaded into a fresh upstream ``INR`` (strict
``load_state_dict``) and its reconstruction is checked against the batched fit.

    python examples/digits/make_inrs.py --upstream /path/to/DWSNets
"""

import argparse
import json
import math
import os
import sys
import time
from collections import OrderedDict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HERE, IMAGE_SIZE, INR_KWARGS, add_upstream  # noqa: E402


def batched_forward(params, coords):
    """Upstream INR.forward for a stack of INRs. params: [N, out, in] / [N, out]."""
    w0, b0, w1, b1, w2, b2 = params
    h = torch.sin(30.0 * (torch.matmul(coords, w0.transpose(1, 2)) + b0.unsqueeze(1)))
    h = torch.sin(30.0 * (torch.matmul(h, w1.transpose(1, 2)) + b1.unsqueeze(1)))
    return (torch.matmul(h, w2.transpose(1, 2)) + b2.unsqueeze(1)).squeeze(-1) + 0.5


def psnr(mse):
    # peak = 1 (images in [0, 1])
    return -10.0 * torch.log10(mse)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, help="path of an upstream DWSNets checkout")
    p.add_argument("--out", default=HERE, help="output folder (default: this folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    add_upstream(args.upstream)
    from experiments.utils import make_coordinates
    from nn.inr import INR
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images.reshape(len(digits.images), -1) / 16.0, dtype=torch.float32)
    labels = digits.target.astype(int)
    n = len(labels)

    # deterministic stratified 70/10/20 split
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=0.2, random_state=args.seed, stratify=labels)
    train, val = train_test_split(rest, test_size=round(0.1 * n), random_state=args.seed, stratify=labels[rest])
    split_of = {}
    for name, ids in (("train", train), ("val", val), ("test", test)):
        for i in ids:
            split_of[int(i)] = name

    # one shared initialisation
    torch.manual_seed(args.seed)
    init = INR(**INR_KWARGS).state_dict()
    keys = list(init.keys())
    assert keys == ["seq.0.weight", "seq.0.bias", "seq.1.weight", "seq.1.bias", "seq.2.weight", "seq.2.bias"], keys
    coords = make_coordinates(IMAGE_SIZE, 1)[0]  # [64, 2]

    params = [init[k].unsqueeze(0).repeat(n, *([1] * init[k].dim())).clone().requires_grad_(True) for k in keys]
    opt = torch.optim.Adam(params, lr=args.lr)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        mse = ((batched_forward(params, coords) - images) ** 2).mean(1)
        opt.zero_grad()
        mse.sum().backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}: mean mse {mse.mean().item():.3e} ({time.time() - t0:.1f}s)", flush=True)
    fit_s = time.time() - t0

    with torch.no_grad():
        final = [q.detach() for q in params]
        recon = batched_forward(final, coords)
        mse = ((recon - images) ** 2).mean(1)

    # save, then reload every file into upstream's INR and check it
    splits = {s: {"path": [], "label": []} for s in ("train", "val", "test")}
    inr = INR(**INR_KWARGS)
    inr.eval()
    max_diff = 0.0
    for i in range(n):
        s = split_of[i]
        rel = f"inrs/{s}/{i:04d}_{labels[i]}.pth"
        full = os.path.join(args.out, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        sd = OrderedDict((k, final[j][i].clone().contiguous()) for j, k in enumerate(keys))
        torch.save(sd, full)
        splits[s]["path"].append(rel)
        splits[s]["label"].append(int(labels[i]))
        inr.load_state_dict(torch.load(full, map_location="cpu"), strict=True)
        with torch.no_grad():
            out = inr(coords).squeeze(-1)
        max_diff = max(max_diff, (out - recon[i]).abs().max().item())
    assert max_diff < 1e-4, max_diff

    with open(os.path.join(args.out, "splits.json"), "w") as f:
        json.dump(splits, f, indent=1)
    with open(os.path.join(args.out, "splits_test.json"), "w") as f:
        json.dump({"test": splits["test"]}, f, indent=1)

    summary = {
        "seed": args.seed,
        "lr": args.lr,
        "steps": args.steps,
        "inr_kwargs": INR_KWARGS,
        "pixel_range": "[0, 1] (sklearn digit / 16)",
        "fit_seconds": round(fit_s, 1),
        "reload_max_abs_diff": max_diff,
        "torch": torch.__version__,
    }
    for s in ("train", "val", "test", "all"):
        ids = np.arange(n) if s == "all" else np.array([i for i in range(n) if split_of[i] == s])
        m = mse[ids]
        summary[s] = {
            "count": int(len(ids)),
            "mean_mse": float(m.mean()),
            "max_mse": float(m.max()),
            "psnr_of_mean_mse": float(psnr(m.mean())),
            "mean_psnr": float(psnr(m).mean()),
            "min_psnr": float(psnr(m).min()),
        }
    with open(os.path.join(args.out, "inr_fit_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
