#!/usr/bin/env python3
"""Write ``statistics.pth`` for the digits INRs with upstream's own code.

Calls upstream DWSNets' ``experiments.mnist.compute_statistics.compute_stats``
(imported, not copied) on the train split of ``splits.json``. Upstream loads
every train INR through ``experiments.data.INRDataset(normalize=False)``:
each PyTorch weight ``[out, in]`` is transposed to ``[in, out]`` and every
tensor gets a trailing feature axis, so weights are ``[d_i, d_{i+1}, 1]`` and
biases ``[d_{i+1}, 1]``. It then takes one batch holding the whole train split
and stores the element-wise ``mean(0)`` and ``std(0)`` (unbiased, torch
default) of every tensor:

    {"weights": {"mean": [3 tensors], "std": [3 tensors]},
     "biases":  {"mean": [3 tensors], "std": [3 tensors]}}

The train loader shuffles, which only changes the summation order; the seed
is fixed so the file is reproducible bit for bit.

    python examples/digits/compute_statistics.py --upstream /path/to/DWSNets
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HERE, add_upstream  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, help="path of an upstream DWSNets checkout")
    p.add_argument("--splits", default=os.path.join(HERE, "splits.json"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.set_num_threads(1)
    add_upstream(args.upstream)
    from experiments.mnist.compute_statistics import compute_stats
    from experiments.utils import set_seed

    splits = os.path.abspath(args.splits)
    folder = os.path.dirname(splits)
    # paths in splits.json are relative to its folder; upstream opens them
    # relative to the working directory
    os.chdir(folder)
    set_seed(args.seed)
    compute_stats(data_path=splits, save_path=folder, batch_size=10000)

    stats = torch.load(os.path.join(folder, "statistics.pth"), map_location="cpu")
    for kind in ("weights", "biases"):
        for i, (m, s) in enumerate(zip(stats[kind]["mean"], stats[kind]["std"])):
            print(f"{kind}[{i}]: shape {tuple(m.shape)}, |mean| max {m.abs().max():.3e}, "
                  f"std min {s.min():.3e} max {s.max():.3e}")


if __name__ == "__main__":
    main()
