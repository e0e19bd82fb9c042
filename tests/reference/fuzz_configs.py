#!/usr/bin/env python3
"""Differential fuzzing of configurations: upstream DWSNets (PyTorch) against `dws`.

Samples random upstream configurations (3..6 weight matrices with widths 1..8,
both model classes, every option of the constructors; keys equal to upstream's
defaults are randomly left out of the config), builds upstream's model with
``generate.py``'s re-initialisation and per-stage gains, runs a batch of 3
random inputs, and checks `dws convert` + `dws run` on the fast and the core
engine against it (tolerance 1e-4 * max|upstream| per output tensor), then
that `dws quantize` and an int8 run succeed. Configurations upstream itself
rejects are counted, not tested. Not part of CI (it needs torch):

    cargo build --release -p dws-host
    python tests/reference/fuzz_configs.py --upstream /path/to/DWSNets --minutes 30

Every configuration is one line of ``WORK/results.jsonl``; a failing one keeps
its reproducer in ``WORK/<seed>/`` (config.json as given to dws,
config_full.json, model.pt, inputs.safetensors, expected.safetensors).
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import generate as G  # noqa: E402  (build, reinit, calibrate, make_inputs)

# Set by main() from the command line.
DWS = None
WORK = None
TOL = 1e-4
BATCH = 3

# upstream defaults (for randomly dropping keys equal to the default)
DEF_COMMON = dict(n_hidden=2, reduction="max", bias=True, n_fc_layers=1, num_heads=8,
                  set_layer="sab", input_dim_downsample=None, dropout_rate=0.0,
                  add_skip=False, add_layer_skip=False, bn=False, diagonal=False,
                  init_off_diag_scale_penalty=1.0)
DEF_DWS = dict(output_features=None)
DEF_CLF = dict(n_classes=10, n_out_fc=1, equiv_out_features=None)


def sample(rng):
    L = rng.randint(3, 6)
    widths = [rng.choice([1, 1, 2, 2, 3, 4, 5, 6, 7, 8]) for _ in range(L + 1)]
    model = rng.choice(["DWSModel", "DWSModelForClassification"])
    set_layer = rng.choice(["sab", "ds"])
    num_heads = rng.choice([1, 2, 3, 4, 8])
    if set_layer == "sab" and rng.random() < 0.8:
        hidden = num_heads * rng.randint(1, max(1, 16 // num_heads))
    else:
        hidden = rng.randint(1, 12)
    red = rng.choices(["max", "sum", "mean", "attn"], [3, 3, 3, 0.4])[0]
    bias = rng.random() < 0.85
    cfg = dict(
        model=model,
        weight_shapes=[[widths[i], widths[i + 1]] for i in range(L)],
        bias_shapes=[[widths[i + 1]] for i in range(L)],
        input_features=rng.randint(1, 3),
        hidden_dim=hidden,
        n_hidden=rng.choice([0, 1, 1, 2, 2, 3]),
        reduction=red,
        bias=bias,
        n_fc_layers=rng.choice([1, 1, 2, 3]),
        num_heads=num_heads,
        set_layer=set_layer,
        input_dim_downsample=None if rng.random() < 0.65 else rng.randint(1, widths[0] + 2),
        dropout_rate=0.0,
        add_skip=rng.random() < 0.25,
        add_layer_skip=rng.random() < 0.25,
        bn=rng.random() < 0.3,
        diagonal=rng.random() < 0.3,
        init_off_diag_scale_penalty=rng.choice([1.0, 1.0, 0.5, 2.0]),
    )
    outf = None if rng.random() < 0.5 else rng.randint(1, 9)
    if model == "DWSModel":
        cfg["output_features"] = outf
        cfg["init_scale"] = rng.choice([1e-4, 1.0])
    else:
        cfg["equiv_out_features"] = outf
        cfg["n_classes"] = rng.randint(1, 6)
        cfg["n_out_fc"] = rng.choice([1, 2, 3])
        cfg["init_scale"] = 1.0
    return cfg


def json_for_dws(cfg, rng):
    """Config as written for dws: randomly drop keys equal to upstream's defaults."""
    out = dict(cfg)
    defs = dict(DEF_COMMON, **(DEF_DWS if cfg["model"] == "DWSModel" else DEF_CLF))
    dropped = []
    for k, v in defs.items():
        if k in out and out[k] == v and rng.random() < 0.3:
            del out[k]
            dropped.append(k)
    if rng.random() < 0.2:
        del out["bias_shapes"]
        dropped.append("bias_shapes")
    if rng.random() < 0.5:
        out.pop("init_scale", None)
    return out, dropped


def sh(args, timeout=120):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return "timeout", ""


def crashed(rc, txt):
    return rc == "timeout" or (isinstance(rc, int) and rc < 0) or "panicked" in txt \
        or "RUST_BACKTRACE" in txt or rc == 101


def compare(exp, got):
    """per-tensor max|d| / max|e|; returns (worst_ratio, detail dict, problems list)."""
    probs = []
    worst = 0.0
    det = {}
    if set(exp) != set(got):
        probs.append(f"keys differ: expected {sorted(exp)} got {sorted(got)}")
    for k in exp:
        if k not in got:
            continue
        e, g = exp[k], got[k]
        if tuple(e.shape) != tuple(g.shape):
            probs.append(f"{k}: shape {tuple(g.shape)} != expected {tuple(e.shape)}")
            continue
        if not torch.isfinite(g).all():
            probs.append(f"{k}: non-finite output")
            worst = float("inf")
            continue
        m = e.abs().max().item()
        d = (e - g).abs().max().item()
        r = d / m if m > 0 else (0.0 if d == 0 else float("inf"))
        det[k] = (d, m, r)
        worst = max(worst, r)
    return worst, det, probs


def run_one(n, seed, cfg=None):
    rng = random.Random(seed)
    if cfg is None:
        cfg = sample(rng)
    dcfg, dropped = json_for_dws(cfg, rng)
    rec = dict(n=n, seed=seed, cfg=cfg, dropped=dropped)
    d = os.path.join(WORK, str(n))
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(seed)
    # ---- upstream
    try:
        model = G.build(cfg)
        G.reinit(model)
        model.eval()
        weights, biases = G.make_inputs(cfg, BATCH)
        # Fewer bisection steps than the fixtures: the gains' precision does not matter here.
        gains = G.calibrate(model, (weights, biases), iters=14)
        with torch.no_grad():
            out = model((weights, biases))
    except Exception as e:  # upstream rejects / crashes
        rec["status"] = "upstream_reject"
        rec["upstream_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        shutil.rmtree(d, ignore_errors=True)
        return rec
    rec["gains"] = gains
    if cfg["model"] == "DWSModel":
        ow, ob = out
        exp = {f"weights.{i}": t for i, t in enumerate(ow)}
        exp.update({f"biases.{i}": t for i, t in enumerate(ob)})
    else:
        exp = {"logits": out}
    exp = {k: v.detach().float().contiguous().clone() for k, v in exp.items()}
    if not all(torch.isfinite(v).all() for v in exp.values()):
        rec["status"] = "upstream_nonfinite"
        shutil.rmtree(d, ignore_errors=True)
        return rec
    rec["max_abs_upstream"] = min(v.abs().max().item() for v in exp.values())
    rec["batch_var"] = G.batch_variation(exp)
    inputs = {f"weights.{i}": w.float().contiguous() for i, w in enumerate(weights)}
    inputs.update({f"biases.{i}": b.float().contiguous() for i, b in enumerate(biases)})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dcfg, f, indent=1)
    with open(os.path.join(d, "config_full.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    torch.save(model.state_dict(), os.path.join(d, "model.pt"))
    save_file(inputs, os.path.join(d, "inputs.safetensors"))
    save_file(exp, os.path.join(d, "expected.safetensors"))
    # ---- dws
    problems = []
    blob = os.path.join(d, "model.dws")
    rc, txt = sh([DWS, "convert", os.path.join(d, "model.pt"), "--config",
                  os.path.join(d, "config.json"), "-o", blob])
    rec["convert"] = rc
    if rc == 1 and "error: in config" in txt and not crashed(rc, txt):
        # A documented limit of dws (README, "Features against upstream").
        rec["status"] = "unsupported"
        rec["dws_error"] = txt.strip()[-600:]
        return rec
    if rc != 0:
        problems.append(("convert", rc, txt.strip()[-600:], crashed(rc, txt)))
    else:
        for eng in ["fast", "core"]:
            o = os.path.join(d, f"out_{eng}.safetensors")
            rc, txt = sh([DWS, "run", "--threads", "1", "--engine", eng, blob,
                          os.path.join(d, "inputs.safetensors"), "-o", o])
            if rc != 0:
                problems.append((f"run_{eng}", rc, txt.strip()[-600:], crashed(rc, txt)))
                continue
            got = load_file(o)
            worst, det, probs = compare(exp, got)
            rec[f"err_{eng}"] = worst
            for p in probs:
                problems.append((f"run_{eng}", 0, p, False))
            if worst > TOL:
                bad = {k: v for k, v in det.items() if v[2] > TOL}
                problems.append((f"mismatch_{eng}", 0,
                                 f"worst rel {worst:.3g}; " + "; ".join(
                                     f"{k}: max|d|={v[0]:.3g} max|e|={v[1]:.3g}" for k, v in
                                     sorted(bad.items(), key=lambda kv: -kv[1][2])[:4]), False))
        # int8 quantization: only crash / sanity
        q = os.path.join(d, "model.int8.dws")
        rc, txt = sh([DWS, "quantize", blob, "--calibration",
                      os.path.join(d, "inputs.safetensors"), "-o", q])
        rec["quantize"] = rc
        if rc != 0:
            problems.append(("quantize", rc, txt.strip()[-600:], crashed(rc, txt)))
        else:
            o = os.path.join(d, "out_int8.safetensors")
            rc, txt = sh([DWS, "run", "--threads", "1", q, os.path.join(d, "inputs.safetensors"),
                          "-o", o])
            if rc != 0:
                problems.append(("run_int8", rc, txt.strip()[-600:], crashed(rc, txt)))
            else:
                got = load_file(o)
                worst, det, probs = compare(exp, got)
                rec["err_int8"] = worst
                for p in probs:
                    problems.append(("run_int8", 0, p, False))
    rec["problems"] = problems
    rec["status"] = "fail" if problems else "ok"
    if not problems:
        shutil.rmtree(d, ignore_errors=True)
    return rec


def main():
    global DWS, WORK
    root = os.path.dirname(os.path.dirname(HERE))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="an AvivNavon/DWSNets checkout")
    ap.add_argument("--dws", default=os.path.join(target, "release", "dws"), help="the dws binary")
    ap.add_argument("--work", default="/tmp/dws-fuzz-configs", help="results and reproducers")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seed", type=int, default=1000, help="first seed")
    ap.add_argument("--only-seed", type=int, nargs="*", help="rerun these seeds only")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.upstream))
    torch.set_num_threads(1)
    DWS, WORK = args.dws, args.work
    os.makedirs(WORK, exist_ok=True)
    out = os.path.join(WORK, "results.jsonl")
    t0 = time.time()
    seeds = args.only_seed if args.only_seed else range(args.seed, args.seed + 10**7)
    counts = {}
    with open(out, "a") as f:
        for n, seed in enumerate(seeds):
            if time.time() - t0 > args.minutes * 60:
                break
            try:
                rec = run_one(seed, seed)
            except Exception:
                rec = dict(n=seed, seed=seed, status="harness_error", tb=traceback.format_exc()[-1500:])
            f.write(json.dumps(rec, default=str) + "\n")
            f.flush()
            s = rec["status"]
            extra = ""
            if s == "fail":
                extra = " | ".join(f"{p[0]}: {p[2][:160]}" for p in rec["problems"])
            elif s == "upstream_reject":
                extra = rec["upstream_error"][:120]
            elif s == "unsupported":
                extra = rec["dws_error"][:160]
            elif s == "ok":
                extra = f"fast={rec.get('err_fast', 0):.1e} core={rec.get('err_core', 0):.1e} int8={rec.get('err_int8', 0):.1e}"
            print(f"[{time.time() - t0:6.0f}s] seed={seed} {s} {extra}", flush=True)
            counts[s] = counts.get(s, 0) + 1
    print("summary: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    sys.exit(1 if counts.get("fail") or counts.get("harness_error") else 0)


if __name__ == "__main__":
    main()
