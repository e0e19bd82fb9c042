#!/usr/bin/env python3
"""Upstream PyTorch vs ONNX Runtime vs `dws bench` on the same model, in one run.

Usage (from the repository root; not part of CI):

    cargo build --release -p dws-host                       # builds target/release/dws
    /opt/torchenv/bin/pip install onnxruntime onnx          # once, next to torch
    /opt/torchenv/bin/python examples/bench/compare.py \\
        --upstream /tmp/upstream --batch 64 --threads 2 --seconds 20

Options: --fixture DIR (default tests/fixtures/paper_default: config.json,
model.pt and model.dws), --dws PATH (the dws binary; default
$CARGO_TARGET_DIR/release/dws or target/release/dws), --rounds N (default 3),
--json PATH (also write the figures as JSON).

What it does:
1. builds upstream `DWSModelForClassification` (imported from --upstream, the
   AvivNavon/DWSNets checkout) from the fixture's config.json and loads model.pt;
2. exports it to ONNX twice with a fixed batch (upstream's attention bakes the
   batch size into the graph): --batch for throughput and 1 for latency;
3. checks that PyTorch, ONNX Runtime and `dws run` agree on one seeded batch;
4. times, in --rounds interleaved rounds so that load from other jobs hits every
   engine alike: PyTorch (`torch.set_num_threads`), ONNX Runtime (intra-op
   threads, all graph optimizations; once with its spinning thread pool, the
   default, and once without, which holds up much better when other jobs share
   the cores; the faster of the two is the baseline) and `dws bench` (a
   subprocess) at batch
   --batch on --threads threads, each for --seconds / --rounds per round; the
   figure of an engine is the median of its per-round medians;
5. measures single-input latency (batch 1, one thread) of each engine, and the
   GEMM peak `dws bench` measures in its last round;
6. prints a table with every figure and its ratio against ONNX Runtime.

The machine is shared: the script prints the load average before and after;
compare ratios from one run, not absolute figures across runs.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_model(upstream, fixture):
    sys.path.insert(0, upstream)
    from nn.models import DWSModel, DWSModelForClassification

    with open(os.path.join(fixture, "config.json")) as f:
        cfg = json.load(f)
    kw = {k: v for k, v in cfg.items() if k != "model"}
    kw["weight_shapes"] = tuple(tuple(s) for s in kw["weight_shapes"])
    kw["bias_shapes"] = tuple(tuple(s) for s in kw["bias_shapes"])
    cls = DWSModelForClassification if cfg["model"] == "DWSModelForClassification" else DWSModel
    model = cls(**kw)
    model.load_state_dict(torch.load(os.path.join(fixture, "model.pt"), map_location="cpu"))
    model.eval()
    return model, kw


class Flat(torch.nn.Module):
    """The model with its (weights, biases) tuple input as flat tensors."""

    def __init__(self, model, layers):
        super().__init__()
        self.model = model
        self.layers = layers

    def forward(self, *t):
        return self.model((tuple(t[: self.layers]), tuple(t[self.layers :])))


def make_inputs(kw, batch, seed):
    rng = np.random.default_rng(seed)
    f = kw["input_features"]
    shapes = [(batch, *w, f) for w in kw["weight_shapes"]] + [(batch, *b, f) for b in kw["bias_shapes"]]
    return [rng.uniform(-0.5, 0.5, size=s).astype(np.float32) for s in shapes]


def export(flat, inputs, path):
    args = tuple(torch.from_numpy(x) for x in inputs)
    names = [f"weights.{i}" for i in range(flat.layers)] + [f"biases.{i}" for i in range(flat.layers)]
    kwargs = dict(input_names=names, output_names=["logits"], opset_version=17)
    try:
        torch.onnx.export(flat, args, path, dynamo=False, **kwargs)
    except TypeError:  # an older torch without the `dynamo` argument
        torch.onnx.export(flat, args, path, **kwargs)


def ort_session(path, threads, spinning=True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def timed(fn, seconds, min_runs=5, warmup=2):
    """Per-call seconds of `fn` over about `seconds` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def dws_bench(dws, model, batch, threads, seconds, extra):
    cmd = [dws, "bench", model, "--batch-size", str(batch), "--threads", str(threads),
           "--seconds", str(seconds), "--json", *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def dws_run(dws, model, inputs, layers, threads):
    from safetensors.numpy import load_file, save_file

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.safetensors"), os.path.join(d, "out.safetensors")
        names = [f"weights.{i}" for i in range(layers)] + [f"biases.{i}" for i in range(layers)]
        save_file(dict(zip(names, inputs)), src)
        subprocess.run([dws, "run", model, src, "-o", dst, "--threads", str(threads)],
                       check=True, capture_output=True)
        return load_file(dst)["logits"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", default="/tmp/upstream")
    ap.add_argument("--fixture", default="tests/fixtures/paper_default")
    ap.add_argument("--dws", default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    target = os.environ.get("CARGO_TARGET_DIR", "target")
    dws = a.dws or os.path.join(target, "release", "dws")
    if not os.path.exists(dws):
        sys.exit(f"{dws} not found: run `cargo build --release -p dws-host` or pass --dws")
    dws_model = os.path.join(a.fixture, "model.dws")
    load_before = os.getloadavg()
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; load average {load_before[0]:.2f}")
    print(f"torch {torch.__version__}", end="")
    import onnxruntime

    print(f", onnxruntime {onnxruntime.__version__}; batch {a.batch}, {a.threads} threads, "
          f"{a.rounds} rounds of {a.seconds / a.rounds:.1f} s per engine")

    model, kw = build_model(a.upstream, a.fixture)
    layers = len(kw["weight_shapes"])
    flat = Flat(model, layers).eval()
    x = make_inputs(kw, a.batch, a.seed)
    x1 = [v[:1] for v in x]

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        export(flat, x, os.path.join(d, "batch.onnx"))
        export(flat, x1, os.path.join(d, "one.onnx"))
        print(f"exported ONNX (batch {a.batch} and 1) in {time.perf_counter() - t0:.0f} s")
        sess = ort_session(os.path.join(d, "batch.onnx"), a.threads)
        sess_ns = ort_session(os.path.join(d, "batch.onnx"), a.threads, spinning=False)
        sess1 = ort_session(os.path.join(d, "one.onnx"), 1)
    feed = {i.name: v for i, v in zip(sess.get_inputs(), x)}
    feed1 = {i.name: v for i, v in zip(sess1.get_inputs(), x1)}
    tx = [torch.from_numpy(v) for v in x]
    tx1 = [torch.from_numpy(v) for v in x1]

    # Agreement on the same inputs.
    torch.set_num_threads(a.threads)
    with torch.inference_mode():
        y_torch = flat(*tx).numpy()
    y_ort = sess.run(None, feed)[0]
    y_dws = dws_run(dws, dws_model, x, layers, a.threads)
    scale = float(np.abs(y_torch).max())
    err_ort = float(np.abs(y_ort - y_torch).max())
    err_dws = float(np.abs(y_dws - y_torch).max())
    print(f"agreement with PyTorch on batch {a.batch}: max |diff| ONNX Runtime {err_ort:.2e}, "
          f"dws {err_dws:.2e} (max |logit| {scale:.2f})")

    def run_torch():
        with torch.inference_mode():
            flat(*tx)

    def run_torch1():
        with torch.inference_mode():
            flat(*tx1)

    per_round = a.seconds / a.rounds
    med = {"pytorch": [], "onnxruntime": [], "onnxruntime-nospin": [], "dws": []}
    last = None
    for r in range(a.rounds):
        torch.set_num_threads(a.threads)
        med["pytorch"].append(statistics.median(timed(run_torch, per_round)))
        med["onnxruntime"].append(statistics.median(timed(lambda: sess.run(None, feed), per_round)))
        med["onnxruntime-nospin"].append(
            statistics.median(timed(lambda: sess_ns.run(None, feed), per_round)))
        final = r == a.rounds - 1
        extra = [] if final else ["--no-peak", "--no-latency"]
        rep = dws_bench(dws, dws_model, a.batch, a.threads, per_round, extra)
        med["dws"].append(rep["batch_time"]["median_s"])
        if final:
            last = rep
        print(f"  round {r + 1}: " + ", ".join(
            f"{k} {a.batch / v[-1]:.0f}/s" for k, v in med.items()))

    # Single-input latency, one thread.
    torch.set_num_threads(1)
    ort1 = statistics.median(timed(lambda: sess1.run(None, feed1), min(per_round, 5.0), min_runs=20))
    lat = {
        "pytorch": statistics.median(timed(run_torch1, min(per_round, 5.0), min_runs=20)),
        "onnxruntime": ort1,
        "onnxruntime-nospin": ort1,
        "dws": last["latency"]["median_s"],
    }
    load_after = os.getloadavg()

    ips = {k: a.batch / statistics.median(v) for k, v in med.items()}
    flops = last["flops_per_input"]
    # The baseline is ONNX Runtime's faster thread-pool setting in this run.
    base_name = max(("onnxruntime", "onnxruntime-nospin"), key=lambda k: ips[k])
    base, base_lat = ips[base_name], lat["onnxruntime"]
    print()
    print(f"paper-default f32 ({last['params'] if 'params' in last else '?'} parameters, "
          f"{flops / 1e6:.2f} MFLOP per input), batch {a.batch}, {a.threads} threads:")
    print(f"(ratios against {base_name}, the faster ONNX Runtime setting in this run)")
    print(f"{'engine':<19} {'inputs/s':>10} {'GFLOP/s':>9} {'vs ORT':>8}   {'latency (b1, 1 thr)':>20} {'vs ORT':>8}")
    for k in ("pytorch", "onnxruntime", "onnxruntime-nospin", "dws"):
        print(f"{k:<19} {ips[k]:>10.0f} {ips[k] * flops / 1e9:>9.1f} {ips[k] / base:>7.2f}x   "
              f"{lat[k] * 1e3:>17.3f} ms {base_lat / lat[k]:>7.2f}x")
    peak = last.get("peak_gflops")
    if peak:
        print(f"GEMM peak (512^3 f32, dws kernel, {a.threads} threads): {peak:.1f} GFLOP/s; "
              f"dws model throughput at {100 * ips['dws'] * flops / 1e9 / peak:.1f}% of it")
    print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({
                "cpu": cpu_model(), "batch": a.batch, "threads": a.threads, "rounds": a.rounds,
                "inputs_per_s": ips, "baseline": base_name, "round_medians_s": med, "latency_s": lat,
                "flops_per_input": flops, "peak_gflops": peak,
                "agreement_max_abs_diff": {"onnxruntime": err_ort, "dws": err_dws, "scale": scale},
                "load_average": [load_before[0], load_after[0]],
            }, f, indent=2)


if __name__ == "__main__":
    main()
