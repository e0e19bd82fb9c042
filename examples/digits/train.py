#!/usr/bin/env python3
"""Train upstream's DWSModelForClassification on the digits INRs.

Model and data code are upstream DWSNets' (imported, not copied):
``nn.models.DWSModelForClassification`` and
``experiments.data.INRDataset(normalize=True, augmentation=False,
permutation=False)``, which for every INR state_dict

1. takes the ``*weight*`` entries in state_dict order and transposes each
   from PyTorch ``[out, in]`` to ``[in, out]``; takes the ``*bias*`` entries;
2. appends a trailing feature axis: weights ``[d_i, d_{i+1}, 1]``, biases
   ``[d_{i+1}, 1]``;
3. normalizes element-wise with ``statistics.pth``:
   ``(w - mean) / std`` per tensor (no epsilon).

The training loop follows upstream's ``experiments/mnist/trainer.py``
(which cannot be imported without wandb): AdamW(amsgrad=True,
weight_decay=5e-4), cross entropy, evaluation every epoch, keep the
checkpoint with the best validation accuracy (``>=``, as upstream). Because
no augmentation is used, every INR is loaded once through INRDataset and the
items are stacked exactly as ``DataLoader``'s default collate would.

Outputs (in this folder): ``model.pt`` (state_dict of the best-validation
checkpoint), ``config.json`` (constructor kwargs, upstream names),
``torch_test_logits.csv`` (eval mode, no_grad, every test INR, paths as in
``splits.json``) and ``train_log.json``.

    python examples/digits/train.py --upstream /path/to/DWSNets
"""

import argparse
import copy
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HERE, add_upstream  # noqa: E402

PAPER = dict(hidden_dim=32, n_hidden=4, set_layer="sab", num_heads=8)


def load_split(INRDataset, splits, split, stats):
    ds = INRDataset(path=splits, split=split, normalize=True, augmentation=False,
                    permutation=False, statistics_path=stats)
    items = [ds[i] for i in range(len(ds))]
    n_w = len(items[0].weights)
    weights = tuple(torch.stack([it.weights[j] for it in items]) for j in range(n_w))
    biases = tuple(torch.stack([it.biases[j] for it in items]) for j in range(n_w))
    labels = torch.tensor([it.label for it in items])
    return weights, biases, labels, list(ds.dataset["path"])


def batches(data, bs, perm=None):
    weights, biases, labels = data[:3]
    n = len(labels)
    order = torch.arange(n) if perm is None else perm
    for s in range(0, n, bs):
        ix = order[s:s + bs]
        yield tuple(w[ix] for w in weights), tuple(b[ix] for b in biases), labels[ix]


@torch.no_grad()
def evaluate(model, data, bs):
    model.eval()
    logits = torch.cat([model((w, b)) for w, b, _ in batches(data, bs)])
    model.train()
    labels = data[2]
    return dict(loss=F.cross_entropy(logits, labels).item(),
                acc=(logits.argmax(1) == labels).float().mean().item(), logits=logits)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, help="path of an upstream DWSNets checkout")
    p.add_argument("--splits", default=os.path.join(HERE, "splits.json"))
    p.add_argument("--statistics", default=os.path.join(HERE, "statistics.pth"))
    p.add_argument("--out", default=HERE)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=70)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden-dim", type=int, default=PAPER["hidden_dim"])
    p.add_argument("--n-hidden", type=int, default=PAPER["n_hidden"])
    p.add_argument("--set-layer", default=PAPER["set_layer"], choices=["sab", "ds"])
    p.add_argument("--num-heads", type=int, default=PAPER["num_heads"])
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after the epoch that passes this wall time")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    add_upstream(args.upstream)
    from experiments.data import INRDataset
    from experiments.utils import set_seed
    from nn.models import DWSModelForClassification

    splits = os.path.abspath(args.splits)
    stats = os.path.abspath(args.statistics)
    out = os.path.abspath(args.out)
    os.chdir(os.path.dirname(splits))  # split paths are relative to splits.json
    set_seed(args.seed)

    t0 = time.time()
    data = {s: load_split(INRDataset, splits, s, stats) for s in ("train", "val", "test")}
    print(f"loaded {', '.join(f'{s} {len(d[2])}' for s, d in data.items())} in {time.time() - t0:.1f}s", flush=True)

    w0 = data["train"][0]
    weight_shapes = [list(w.shape[1:3]) for w in w0]
    bias_shapes = [list(b.shape[1:2]) for b in data["train"][1]]
    config = dict(
        model="DWSModelForClassification",
        weight_shapes=weight_shapes,
        bias_shapes=bias_shapes,
        input_features=1,
        hidden_dim=args.hidden_dim,
        n_hidden=args.n_hidden,
        n_classes=10,
        reduction="max",
        bias=True,
        n_fc_layers=1,
        num_heads=args.num_heads,
        set_layer=args.set_layer,
        n_out_fc=1,
        dropout_rate=0.0,  # upstream's Dropout is active even in eval mode: keep 0
        input_dim_downsample=None,
        init_scale=1.0,
        init_off_diag_scale_penalty=1.0,
        bn=True,
        add_skip=False,
        add_layer_skip=False,
        equiv_out_features=None,
        diagonal=False,
    )
    kwargs = {k: v for k, v in config.items() if k != "model"}
    kwargs["weight_shapes"] = tuple(tuple(s) for s in weight_shapes)
    kwargs["bias_shapes"] = tuple(tuple(s) for s in bias_shapes)
    model = DWSModelForClassification(**kwargs)
    n_params = sum(q.numel() for q in model.parameters())
    print(f"config {json.dumps(config)}\nparameters {n_params}", flush=True)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, amsgrad=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(args.seed)
    history, best_val, best_state, best_epoch = [], -1.0, None, -1
    t_train = time.time()
    for epoch in range(args.epochs):
        te = time.time()
        model.train()
        tot_loss, correct, seen = 0.0, 0, 0
        perm = torch.randperm(len(data["train"][2]), generator=gen)
        for w, b, y in batches(data["train"], args.batch_size, perm):
            optimizer.zero_grad()
            logits = model((w, b))
            loss = F.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            tot_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        train_s = time.time() - te
        val = evaluate(model, data["val"], 128)
        rec = dict(epoch=epoch + 1, train_loss=tot_loss / seen, train_acc_running=correct / seen,
                   val_loss=val["loss"], val_acc=val["acc"], train_s=round(train_s, 1),
                   epoch_s=round(time.time() - te, 1))
        if val["acc"] >= best_val:
            best_val, best_epoch = val["acc"], epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        history.append(rec)
        print(json.dumps(rec), flush=True)
        if args.max_minutes is not None and time.time() - t_train > 60 * args.max_minutes:
            print("time limit reached", flush=True)
            break
    train_wall = time.time() - t_train

    model.load_state_dict(best_state)
    model.eval()
    results = {s: evaluate(model, data[s], 128) for s in ("train", "val", "test")}
    for s, r in results.items():
        print(f"best checkpoint (epoch {best_epoch}): {s} acc {r['acc']:.4f} loss {r['loss']:.4f}", flush=True)

    torch.save(model.state_dict(), os.path.join(out, "model.pt"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    logits, labels, paths = results["test"]["logits"], data["test"][2], data["test"][3]
    with open(os.path.join(out, "torch_test_logits.csv"), "w") as f:
        f.write("path,label,predicted," + ",".join(f"logit_{k}" for k in range(logits.shape[1])) + "\n")
        for pth, y, row in zip(paths, labels.tolist(), logits):
            f.write(f"{pth},{y},{int(row.argmax())}," + ",".join("%.9g" % v for v in row.tolist()) + "\n")
    log = dict(args=vars(args), config=config, parameters=n_params, torch=torch.__version__,
               best_epoch=best_epoch, train_wall_s=round(train_wall, 1),
               accuracy={s: r["acc"] for s, r in results.items()},
               loss={s: r["loss"] for s, r in results.items()}, history=history)
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)


if __name__ == "__main__":
    main()
