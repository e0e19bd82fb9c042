"""Sharded scoring on Ray Data: :func:`score_dataset`.

Needs ``pip install 'ray[data]' pyarrow`` (``import dws`` itself does not).

A dataset is a list of rows, each naming one input: an INR file of an upstream splits
JSON (or of a folder), or input ``index`` of a safetensors shard in the ``dws run``
format (``weights.{i}`` ``[B, d_i, d_{i+1}, F]``, ``biases.{i}`` ``[B, d_{i+1}, F]``).
The rows are scored by ``map_batches`` on a pool of ``num_workers`` actors, each of
which loads the ``.dws`` blob once and runs its batches on its own Rust threads, and
the predictions are written as Parquet (or CSV) files under ``output_dir``.

Every output row carries a stable row id: ``row`` (the input's position in the
dataset) plus ``path`` (INR datasets) or ``shard`` and ``index`` (safetensors
shards). A worker that dies mid-run (killed, OOM, node lost) is restarted by Ray
(``max_restarts``) and its unfinished batches are run again (``max_task_retries``);
a batch's output only exists once its task has finished, so no row is lost or
written twice. After writing, :func:`score_dataset` reads the row ids back and
raises if any row is missing or repeated (``verify=True``).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import DwsError, Model, cuda_available, dataset_entries, read_inr_files, read_tensors

__all__ = ["score_dataset", "dataset_rows", "shard_sizes", "read_row_ids", "read_predictions"]

PathLike = Union[str, "os.PathLike[str]"]


def shard_sizes(shards: Sequence[PathLike]) -> List[int]:
    """Number of inputs (``B`` of ``weights.0``) of each safetensors shard, from the
    file headers only."""
    sizes = []
    for shard in shards:
        with open(shard, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise DwsError(f"{shard}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise DwsError(f"{shard}: not a safetensors file (header length {n})")
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise DwsError(f"{shard}: not a safetensors file ({e})") from None
        w0 = header.get("weights.0")
        if not isinstance(w0, dict) or not w0.get("shape"):
            raise DwsError(
                f"{shard}: input tensor `weights.0` is missing (a `dws run` input "
                "holds weights.{i} [B, d_i, d_{i+1}, F] and biases.{i} [B, d_{i+1}, F])"
            )
        sizes.append(int(w0["shape"][0]))
    return sizes


def _is_shard_list(inputs: Any) -> bool:
    return not isinstance(inputs, (str, bytes, os.PathLike))


def dataset_rows(
    inputs: Any, split: str = "test", data_root: Optional[PathLike] = None
) -> List[Dict[str, Any]]:
    """The rows :func:`score_dataset` scores, in dataset order.

    ``inputs`` is an upstream splits JSON or a folder of INR files (rows ``row``,
    ``path``, ``file``, ``label``), or a list of safetensors shard files, or a glob
    pattern matching them (rows ``row``, ``shard``, ``index``). ``data_root`` is where
    the files of a splits JSON are looked for when they are not where their paths say
    (see :func:`dws.dataset_entries`).
    """
    if isinstance(inputs, (str, os.PathLike)) and any(c in os.fspath(inputs) for c in "*?["):
        import glob

        inputs = sorted(glob.glob(os.fspath(inputs)))
        if not inputs:
            raise DwsError(f"no shard files match {inputs!r}")
    if _is_shard_list(inputs):
        if data_root is not None:
            raise DwsError("data_root applies to a splits JSON, not to safetensors shards")
        # Absolute: Ray's workers do not share the driver's working directory.
        shards = [os.path.abspath(os.fspath(s)) for s in inputs]
        if not shards:
            raise DwsError("no shard files given")
        rows = []
        for shard, n in zip(shards, shard_sizes(shards)):
            base = len(rows)
            rows.extend({"row": base + k, "shard": shard, "index": k} for k in range(n))
        return rows
    entries = dataset_entries(inputs, split, data_root=data_root)
    return [
        {
            "row": i,
            "path": e["path"],
            "file": os.path.abspath(e["file"]),
            "label": -1 if e["label"] is None else int(e["label"]),
        }
        for i, e in enumerate(entries)
    ]


class _Scorer:
    """The map_batches actor: loads the blob once, scores batches of rows."""

    def __init__(self, blob, threads, device, fault=None):
        import ray

        if isinstance(blob, ray.ObjectRef):
            blob = ray.get(blob)
        self.model = Model.from_bytes(blob, device=device, threads=threads)
        self.shards: "OrderedDict[str, Dict[str, np.ndarray]]" = OrderedDict()
        self.calls = 0
        self.fault = fault

    def _shard(self, path: str) -> Dict[str, np.ndarray]:
        if path not in self.shards:
            self.shards[path] = read_tensors(path)
            while len(self.shards) > 2:
                self.shards.popitem(last=False)
        self.shards.move_to_end(path)
        return self.shards[path]

    def _inputs_from_shards(self, batch):
        L = self.model.layers
        shards = batch["shard"]
        index = batch["index"].astype(np.int64)
        ws: List[List[np.ndarray]] = [[] for _ in range(L)]
        bs: List[List[np.ndarray]] = [[] for _ in range(L)]
        # Contiguous runs of one shard (batches come in dataset order).
        start = 0
        n = len(shards)
        while start < n:
            stop = start
            while stop < n and shards[stop] == shards[start]:
                stop += 1
            t = self._shard(str(shards[start]))
            idx = index[start:stop]
            for i in range(L):
                for name, out in ((f"weights.{i}", ws[i]), (f"biases.{i}", bs[i])):
                    if name not in t:
                        raise DwsError(f"{shards[start]}: input tensor `{name}` is missing")
                    out.append(t[name][idx])
            start = stop
        return [np.concatenate(w) for w in ws], [np.concatenate(b) for b in bs]

    def __call__(self, batch: Dict[str, np.ndarray]):
        self.calls += 1
        n = len(batch["row"])
        errors = np.array([""] * n, dtype=object)
        ok = np.ones(n, dtype=bool)
        if "shard" in batch:
            weights, biases = self._inputs_from_shards(batch)
        else:
            files = [str(f) for f in batch["file"]]
            weights, biases, failed = read_inr_files(
                files, dims=self.model, threads=self.model.threads, skip_errors=True
            )
            for i, msg in failed.items():
                ok[i] = False
                errors[i] = msg
        out = self.model(weights, biases) if ok.any() else None
        import pyarrow as pa

        cols: Dict[str, Any] = {"row": pa.array(batch["row"].astype(np.int64))}
        if "shard" in batch:
            cols["shard"] = pa.array([str(s) for s in batch["shard"]], pa.string())
            cols["index"] = pa.array(batch["index"].astype(np.int64))
        else:
            cols["path"] = pa.array([str(s) for s in batch["path"]], pa.string())
            cols["label"] = pa.array(batch["label"].astype(np.int64))
        if self.model.is_classifier:
            c = self.model.classes
            logits = np.full((n, c), np.nan, dtype=np.float32)
            if out is not None:
                logits[ok] = out
            best = np.argmax(np.where(np.isnan(logits), -np.inf, logits), axis=1)
            cols["predicted"] = pa.array(np.where(ok, best, -1).astype(np.int64))
            for k in range(c):
                cols[f"logit_{k}"] = pa.array(logits[:, k])
        else:
            flat = np.full((n, self.model.output_len), np.nan, dtype=np.float32)
            if out is not None:
                ow, ob = out
                flat[ok] = np.concatenate(
                    [a.reshape(len(a), -1) for a in list(ow) + list(ob)], axis=1
                )
            cols["output"] = pa.FixedSizeListArray.from_arrays(
                pa.array(flat.reshape(-1)), self.model.output_len
            )
        if "file" in batch:
            cols["error"] = pa.array([str(e) for e in errors], pa.string())
        if self.fault is not None:
            _maybe_fail(self.fault, self.calls)
        return pa.table(cols)


def _maybe_fail(fault: Dict[str, Any], calls: int) -> None:
    """Test hooks. ``{"pid_dir": d, "sleep": s}``: each call records the worker's pid
    and call count in ``d/<pid>`` and sleeps ``s`` seconds (so a test can kill the
    worker from outside). ``{"marker": m, "after_batches": n}``: the first worker to
    reach its nth batch dies (once, guarded by the marker file) after computing that
    batch and before returning it."""
    if "pid_dir" in fault:
        with open(os.path.join(fault["pid_dir"], str(os.getpid())), "w") as f:
            f.write(str(calls))
        time.sleep(float(fault.get("sleep", 0)))
    if "marker" not in fault or calls < int(fault.get("after_batches", 1)):
        return
    marker = fault["marker"]
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


def score_dataset(
    model_path: PathLike,
    inputs: Any,
    output_dir: PathLike,
    num_workers: int = 2,
    batch_size: int = 256,
    use_gpu: bool = False,
    *,
    split: str = "test",
    data_root: Optional[PathLike] = None,
    format: str = "parquet",
    threads: Optional[int] = None,
    cpus_per_worker: float = 1,
    max_restarts: int = -1,
    max_task_retries: int = -1,
    overwrite: bool = False,
    verify: bool = True,
    _fault: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Scores a sharded dataset with a ``.dws`` model on Ray Data and writes predictions.

    Args:
        model_path: the ``.dws`` blob (read once by the driver, shipped to the
            workers through the object store).
        inputs: an upstream splits JSON (with ``split``) or a folder of INR files; or
            a list of safetensors shards in the ``dws run`` format, or a glob pattern.
        output_dir: where the prediction files go; must be empty or missing unless
            ``overwrite=True`` (which deletes what is there first).
        num_workers: actors in the pool, each holding one loaded model.
        batch_size: rows per ``map_batches`` call.
        use_gpu: give every actor a GPU (``num_gpus=1``) and run on ``device="cuda"``;
            needs the dws-cuda backend (``dws.cuda_available()``).
        split: the split of a splits JSON.
        data_root: where the files of a splits JSON are looked for when they are not
            where their paths say (see :func:`dws.dataset_entries`).
        format: ``"parquet"`` or ``"csv"`` (CSV only for classifiers).
        threads: Rust threads per actor (default: ``cpus_per_worker``, at least 1).
        cpus_per_worker: CPUs Ray reserves for each actor.
        max_restarts, max_task_retries: Ray's actor fault tolerance (-1: unlimited).
        overwrite: clear a non-empty ``output_dir`` instead of refusing it.
        verify: read the row ids back and check that every input is there once.

    Output columns: ``row``; ``path`` and ``label`` (-1 when unknown) and ``error``
    (why an INR file could not be read, else empty) for INR datasets, or ``shard``
    and ``index`` for shards; a classifier's ``predicted`` (-1 for unreadable files)
    and ``logit_0 .. logit_{C-1}``; a DWSModel's ``output`` (the flat output weight
    space, Parquet only).

    Returns a summary dict: ``rows``, ``files``, ``output_dir``, ``seconds``.
    """
    import ray

    if format not in ("parquet", "csv"):
        raise DwsError(f'format must be "parquet" or "csv", got {format!r}')
    if num_workers < 1 or batch_size < 1:
        raise DwsError("num_workers and batch_size must be at least 1")
    device = "cuda" if use_gpu else "cpu"
    if use_gpu and not cuda_available():
        raise DwsError(
            "use_gpu: dws-cuda backend not available in this build, or no usable GPU "
            "(dws.cuda_available() is False)"
        )
    with open(model_path, "rb") as f:
        blob = f.read()
    model = Model.from_bytes(blob)  # validates the blob before any worker starts
    if format == "csv" and not model.is_classifier:
        raise DwsError('a DWSModel\'s outputs are weight spaces: use format="parquet"')
    # Absolute: Ray's workers write it, and they do not share the driver's working
    # directory.
    out = os.path.abspath(os.fspath(output_dir))
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise DwsError(f"{out} is not empty (pass overwrite=True to replace it)")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)

    start = time.perf_counter()
    rows = dataset_rows(inputs, split, data_root)
    if not rows:
        raise DwsError("the dataset is empty")
    if threads is None:
        threads = max(1, int(cpus_per_worker))
    if not ray.is_initialized():
        ray.init()
    blob_ref = ray.put(blob)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size)))
    # Ray Data's own defaults for actor pools are unlimited restarts and task
    # retries (-1, -1): pass other values only (the **kwargs form is deprecated).
    remote: Dict[str, Any] = {}
    if max_restarts != -1:
        remote["max_restarts"] = max_restarts
    if max_task_retries != -1 and max_restarts != 0:
        remote["max_task_retries"] = max_task_retries
    scored = ds.map_batches(
        _Scorer,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        fn_constructor_kwargs={
            "blob": blob_ref,
            "threads": threads,
            "device": device,
            "fault": _fault,
        },
        num_cpus=cpus_per_worker,
        num_gpus=1 if use_gpu else None,
        **remote,
    )
    if format == "parquet":
        scored.write_parquet(out)
    else:
        scored.write_csv(out)
    seconds = time.perf_counter() - start
    files = sorted(os.path.join(out, f) for f in os.listdir(out) if not f.startswith((".", "_")))
    summary = {"rows": len(rows), "files": files, "output_dir": out, "seconds": seconds}
    if verify:
        got = read_row_ids(files, format)
        if len(got) != len(rows) or not np.array_equal(np.sort(got), np.arange(len(rows))):
            uniq, counts = np.unique(got, return_counts=True)
            missing = len(rows) - len(uniq)
            raise DwsError(
                f"{out}: {len(got)} rows written for {len(rows)} inputs "
                f"({missing} missing, {int((counts > 1).sum())} repeated)"
            )
    return summary


def read_row_ids(files: Sequence[str], format: str = "parquet") -> np.ndarray:
    """The ``row`` column of prediction files written by :func:`score_dataset`."""
    if format == "parquet":
        import pyarrow.parquet as pq

        cols = [pq.read_table(f, columns=["row"]).column("row").to_numpy() for f in files]
    else:
        import pyarrow.csv as pcsv

        cols = [pcsv.read_csv(f).column("row").to_numpy() for f in files]
    return np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)


def read_predictions(output_dir: PathLike):
    """All prediction files under ``output_dir`` as one pyarrow Table, sorted by ``row``."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out = os.fspath(output_dir)
    tables = []
    for f in sorted(os.listdir(out)):
        p = os.path.join(out, f)
        if f.endswith(".parquet"):
            tables.append(pq.read_table(p))
        elif f.endswith(".csv"):
            tables.append(pcsv.read_csv(p))
    if not tables:
        raise DwsError(f"{out}: no prediction files")
    t = pa.concat_tables(tables)
    return t.sort_by("row")
