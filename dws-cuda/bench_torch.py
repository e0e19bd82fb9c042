#!/usr/bin/env python3
"""Upstream PyTorch baseline for `dws bench --device cuda`.

Builds the upstream DWSNets model of a reference fixture
(`tests/fixtures/<name>/config.json` + `model.pt`) with the upstream code
(`--upstream /path/to/DWSNets`, package `nn`), and times batches of random
inputs on the GPU in eager mode and under `torch.compile`, TF32 off (as
dws-cuda's default) and on (eager only). Prints one line per configuration:

    torch eager  fp32  batch 4096: median 12.345 ms -> 331797 inputs/s

Usage (from the repository root):
    python3 dws-cuda/bench_torch.py --upstream /path/to/DWSNets \
        [--fixture tests/fixtures/paper_default] [--batch 4096] [--iters 20]
"""

import argparse
import json
import os
import statistics
import sys
import time


def build(cfg):
    from nn.models import DWSModel, DWSModelForClassification

    kw = {k: v for k, v in cfg.items() if k != "model"}
    kw["weight_shapes"] = tuple(tuple(s) for s in kw["weight_shapes"])
    kw["bias_shapes"] = tuple(tuple(s) for s in kw["bias_shapes"])
    cls = DWSModelForClassification if cfg["model"] == "DWSModelForClassification" else DWSModel
    return cls(**kw)


def inputs(cfg, batch, device, torch):
    g = torch.Generator(device="cpu").manual_seed(0)
    f = cfg["input_features"]
    ws = tuple(torch.randn(batch, a, b, f, generator=g).to(device) for a, b in cfg["weight_shapes"])
    bs = tuple(torch.randn(batch, b, f, generator=g).to(device) for (b,) in cfg["bias_shapes"])
    return ws, bs


def time_it(torch, fn, x, iters, include_copy):
    """Median and min seconds per call; with include_copy the inputs start on
    the host (as dws's run_batch), otherwise on the device."""
    host = (tuple(t.cpu() for t in x[0]), tuple(t.cpu() for t in x[1]))

    def once():
        if include_copy:
            y = fn((tuple(t.cuda() for t in host[0]), tuple(t.cuda() for t in host[1])))
        else:
            y = fn(x)
        (y if isinstance(y, torch.Tensor) else y[0][0]).cpu()

    for _ in range(3):
        once()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        once()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="path to the upstream DWSNets checkout")
    ap.add_argument("--fixture", default="tests/fixtures/paper_default")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = ap.parse_args()

    import torch

    sys.path.insert(0, os.path.abspath(args.upstream))
    if not torch.cuda.is_available():
        print("SKIPPED: torch sees no CUDA device")
        return 0
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
    with open(os.path.join(args.fixture, "config.json")) as f:
        cfg = json.load(f)
    model = build(cfg)
    sd = torch.load(os.path.join(args.fixture, "model.pt"), weights_only=True, map_location="cpu")
    model.load_state_dict(sd, strict=True)
    model = model.cuda().eval()
    x = inputs(cfg, args.batch, "cuda", torch)
    x1 = inputs(cfg, 1, "cuda", torch)
    configs = [("eager", model)]
    if not args.no_compile:
        try:
            configs.append(("compile", torch.compile(model)))
        except Exception as e:  # noqa: BLE001
            print(f"torch.compile unavailable: {e}")
    with torch.no_grad():
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            prec = "tf32" if tf32 else "fp32"
            for name, fn in configs:
                if name == "compile" and tf32:
                    continue  # one compiled configuration is enough (compiling takes minutes)
                try:
                    med, best = time_it(torch, fn, x, args.iters, include_copy=False)
                    print(f"torch {name:7} {prec} batch {args.batch}: median {med * 1e3:.3f} ms, "
                          f"min {best * 1e3:.3f} ms -> {args.batch / med:.0f} inputs/s (on-device inputs)")
                    med, _ = time_it(torch, fn, x, args.iters, include_copy=True)
                    print(f"torch {name:7} {prec} batch {args.batch}: median {med * 1e3:.3f} ms "
                          f"-> {args.batch / med:.0f} inputs/s (host->device copy included, as dws)")
                    med, _ = time_it(torch, fn, x1, args.iters, include_copy=True)
                    print(f"torch {name:7} {prec} batch 1 latency: median {med * 1e3:.3f} ms")
                except Exception as e:  # noqa: BLE001
                    print(f"torch {name} {prec}: failed: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
