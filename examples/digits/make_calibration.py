"""Write calibration.safetensors: 256 training-split INRs in the `dws run` input
format (raw weights; the converted model normalizes them itself), for
`dws quantize --calibration`.

    /opt/torchenv/bin/python examples/digits/make_calibration.py [--splits examples/digits/splits.json]

The training INRs are not committed (only the test split is); run this where
make_inrs.py left them.
"""
import argparse
import json
import os
import random

import torch
from safetensors.torch import save_file

ap = argparse.ArgumentParser()
here = os.path.dirname(os.path.abspath(__file__))
ap.add_argument("--splits", default=os.path.join(here, "splits.json"))
ap.add_argument("--count", type=int, default=256)
ap.add_argument("--out", default=os.path.join(here, "calibration.safetensors"))
args = ap.parse_args()

split = json.load(open(args.splits))["train"]
paths = list(split["path"])
random.Random(0).shuffle(paths)
base = os.path.dirname(os.path.abspath(args.splits))
weights, biases = None, None
for p in paths[: args.count]:
    sd = torch.load(os.path.join(base, p), map_location="cpu")
    keys = sorted({k.rsplit(".", 1)[0] for k in sd}, key=lambda k: int(k.split(".")[1]))
    w = [sd[k + ".weight"].T.unsqueeze(-1) for k in keys]  # [in, out, 1], as upstream
    b = [sd[k + ".bias"].unsqueeze(-1) for k in keys]  # [out, 1]
    if weights is None:
        weights, biases = [[] for _ in w], [[] for _ in b]
    for acc, t in zip(weights, w):
        acc.append(t)
    for acc, t in zip(biases, b):
        acc.append(t)
tensors = {f"weights.{i}": torch.stack(ts).contiguous().float() for i, ts in enumerate(weights)}
tensors.update({f"biases.{i}": torch.stack(ts).contiguous().float() for i, ts in enumerate(biases)})
save_file(tensors, args.out)
print(f"wrote {args.out}: {args.count} inputs", {k: list(v.shape) for k, v in tensors.items()})
