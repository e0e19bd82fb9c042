#!/usr/bin/env python3
"""Checks `dws convert`'s hint for a checkpoint that does not fit its config.

Builds random upstream models (``fuzz_configs.sample``), saves each state_dict, and
converts it once with its own config (which must work) and once per mutation of one
config key (``n_hidden``, ``hidden_dim``, ``bn``, ``set_layer``, ...). When a
mutated conversion fails because the state_dict does not fit, the hint
("the checkpoint's keys and shapes say the config is wrong in: ...") must name the
mutated key and no other. Not part of CI (it needs torch):

    cargo build --release -p dws-host
    python tests/reference/fuzz_hints.py --upstream /path/to/DWSNets --models 100

Prints one line per wrong hint and a summary: ``named`` (the mutated key, alone),
``wrong`` (another key named: a bug), ``no_hint`` (a fit failure without a hint: a
gap), ``other_error`` (the mutated config is itself invalid, so conversion stops
before the state_dict), ``converted`` (the mutation made no difference to the
state_dict's layout). Exits non-zero on any ``wrong`` or ``no_hint``.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def mutations(cfg):
    """(key, wrong value) pairs for `cfg`."""
    m = [("n_hidden", cfg["n_hidden"] + 1)]
    if cfg["n_hidden"] > 0:
        m.append(("n_hidden", cfg["n_hidden"] - 1))
    m += [
        ("hidden_dim", cfg["hidden_dim"] * 2 if cfg["set_layer"] == "sab" else cfg["hidden_dim"] + 1),
        ("bn", not cfg["bn"]),
        ("set_layer", "ds" if cfg["set_layer"] == "sab" else "sab"),
        ("add_skip", not cfg["add_skip"]),
        ("add_layer_skip", not cfg["add_layer_skip"]),
        ("bias", not cfg["bias"]),
        ("n_fc_layers", cfg["n_fc_layers"] + 1),
        ("diagonal", not cfg["diagonal"]),
        ("input_dim_downsample", None if cfg["input_dim_downsample"] else 2),
        ("input_features", cfg["input_features"] + 1),
        ("model", "DWSModel" if cfg["model"] != "DWSModel" else "DWSModelForClassification"),
        ("weight_shapes", cfg["weight_shapes"] + [[cfg["weight_shapes"][-1][1], 2]]),
    ]
    if cfg["model"] != "DWSModel":
        m += [("n_out_fc", cfg["n_out_fc"] + 1), ("n_classes", cfg["n_classes"] + 1)]
    return m


def mutated(base, key, value):
    c = dict(base)
    c[key] = value
    if key == "weight_shapes":
        c["bias_shapes"] = [[s[1]] for s in value]
    if key == "model" and value == "DWSModel":
        c.pop("n_classes", None)
        c.pop("n_out_fc", None)
        c["output_features"] = c.pop("equiv_out_features", None)
    elif key == "model":
        c["equiv_out_features"] = c.pop("output_features", None)
    return c


def convert(dws, work, sd_path, cfg):
    cfg_path = os.path.join(work, "config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    out = os.path.join(work, "model.dws")
    return subprocess.run([dws, "convert", sd_path, "--config", cfg_path, "-o", out],
                          capture_output=True, text=True)


def main():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "..", "target"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="an AvivNavon/DWSNets checkout")
    ap.add_argument("--dws", default=os.path.join(target, "release", "dws"), help="the dws binary")
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    sys.path.insert(0, args.upstream)
    import torch
    import fuzz_configs as FZ
    import generate as G

    rng = random.Random(args.seed)
    counts = dict(models=0, named=0, wrong=0, other_error=0, converted=0, no_hint=0)
    with tempfile.TemporaryDirectory() as work:
        sd_path = os.path.join(work, "model.pt")
        while counts["models"] < args.models:
            cfg = FZ.sample(rng)
            if cfg["reduction"] == "attn":
                continue  # not implemented upstream
            try:
                model = G.build(cfg)
            except Exception:
                continue  # upstream rejects the configuration
            torch.save(model.state_dict(), sd_path)
            base = {k: v for k, v in cfg.items() if k != "init_scale"}
            if convert(args.dws, work, sd_path, base).returncode != 0:
                continue  # unsupported by dws: fuzz_configs.py reports those
            counts["models"] += 1
            for key, value in mutations(cfg):
                r = convert(args.dws, work, sd_path, mutated(base, key, value))
                named = re.findall(r"^    `(\w+)`: the config says", r.stderr, re.M)
                if r.returncode == 0:
                    counts["converted"] += 1
                elif named == [key]:
                    counts["named"] += 1
                elif named:
                    counts["wrong"] += 1
                    print(f"WRONG: {key}={value!r} named {named}: {json.dumps(cfg)}", flush=True)
                elif "does not fit the config" in r.stderr:
                    counts["no_hint"] += 1
                else:
                    counts["other_error"] += 1
    print(counts)
    return 1 if counts["wrong"] or counts["no_hint"] else 0


if __name__ == "__main__":
    sys.exit(main())
