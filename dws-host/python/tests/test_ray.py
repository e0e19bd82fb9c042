"""dws.ray.score_dataset on a local two-CPU Ray cluster, checked row by row against
direct model calls, including runs where a worker process dies mid-run."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

import dws
from conftest import FIXTURES

if os.environ.get("DWS_REQUIRE_RAY"):
    # run-tests.sh (CI): a missing Ray is a failure, not a skip.
    import pyarrow  # noqa: F401
    import ray
else:
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
import dws.ray as dray  # noqa: E402

CLF = FIXTURES / "clf_sab_sum_5mats" / "model.dws"
EQUIV = FIXTURES / "dws_ds_mean_uneven" / "model.dws"
N = 3000
SHARD = 500


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Keep the progress output short in test logs.
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def synthetic(model, n, seed):
    rng = np.random.default_rng(seed)
    ws, bs = model.input_shapes
    weights = [rng.standard_normal((n, *s)).astype(np.float32) for s in ws]
    biases = [rng.standard_normal((n, *s)).astype(np.float32) for s in bs]
    return weights, biases


def write_shards(tmp_path, model, n, seed):
    weights, biases = synthetic(model, n, seed)
    shards = []
    for k, lo in enumerate(range(0, n, SHARD)):
        t = {f"weights.{i}": w[lo : lo + SHARD] for i, w in enumerate(weights)}
        t.update({f"biases.{i}": b[lo : lo + SHARD] for i, b in enumerate(biases)})
        p = tmp_path / f"part-{k:03}.safetensors"
        dws.write_safetensors(p, t)
        shards.append(str(p))
    return shards, weights, biases


def check_classifier_rows(table, model, weights, biases, shards, exact=True):
    n = len(weights[0])
    rows = table.column("row").to_numpy()
    # Every input exactly once.
    assert len(rows) == n
    assert np.array_equal(rows, np.arange(n))
    # Stable ids: shard + index name the same input as row.
    shard = table.column("shard").to_pylist()
    index = table.column("index").to_numpy()
    assert all(shard[r] == shards[r // SHARD] for r in range(n))
    assert np.array_equal(index, rows % SHARD)
    logits = np.stack([table.column(f"logit_{k}").to_numpy() for k in range(model.classes)], 1)
    expected = model(weights, biases)
    if exact:
        assert np.array_equal(logits, expected)
    else:
        np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)
    assert np.array_equal(table.column("predicted").to_numpy(), expected.argmax(1))


def test_worker_dies_mid_batch(cluster, tmp_path):
    model = dws.Model.load(CLF)
    shards, weights, biases = write_shards(tmp_path, model, N, seed=7)
    marker = tmp_path / "died"
    out = tmp_path / "out"
    summary = dray.score_dataset(
        CLF,
        shards,
        out,
        num_workers=2,
        batch_size=100,
        _fault={"marker": str(marker), "after_batches": 3},
    )
    assert marker.exists(), "the fault was not injected"
    assert summary["rows"] == N
    check_classifier_rows(dray.read_predictions(out), model, weights, biases, shards)


def test_worker_killed_from_outside_csv(cluster, tmp_path):
    model = dws.Model.load(CLF)
    shards, weights, biases = write_shards(tmp_path, model, N, seed=8)
    pids = tmp_path / "pids"
    pids.mkdir()
    killed = []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for f in pids.iterdir():
                try:
                    calls = int(f.read_text() or 0)
                except (OSError, ValueError):
                    continue
                if calls >= 4:
                    os.kill(int(f.name), signal.SIGKILL)
                    killed.append(int(f.name))
                    return
            time.sleep(0.02)

    t = threading.Thread(target=killer)
    t.start()
    out = tmp_path / "out"
    dray.score_dataset(
        CLF,
        str(tmp_path / "part-*.safetensors"),
        out,
        num_workers=2,
        batch_size=50,
        format="csv",
        _fault={"pid_dir": str(pids), "sleep": 0.05},
    )
    t.join()
    assert killed, "no worker was killed"
    table = dray.read_predictions(out)
    # CSV prints floats in decimal: compare with a tolerance.
    check_classifier_rows(table, model, weights, biases, shards, exact=False)


def test_inr_splits(cluster, tmp_path):
    model = dws.Model.load(CLF)
    rng = np.random.default_rng(3)
    (tmp_path / "inr").mkdir()
    paths, labels = [], []
    for i in range(240):
        t = {}
        for k in range(model.layers):
            d0, d1 = model.dims[k], model.dims[k + 1]
            t[f"seq.{k}.weight"] = rng.standard_normal((d1, d0)).astype(np.float32)
            t[f"seq.{k}.bias"] = rng.standard_normal(d1).astype(np.float32)
        p = f"inr/{i:04}.safetensors"
        dws.write_safetensors(tmp_path / p, t)
        paths.append(p)
        labels.append(i % 4)
    (tmp_path / "inr" / "0100.safetensors").write_bytes(b"truncated")
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"test": {"path": paths, "label": labels}}))
    out = tmp_path / "out"
    dray.score_dataset(CLF, splits, out, num_workers=2, batch_size=32)
    table = dray.read_predictions(out)
    assert table.column("row").to_pylist() == list(range(240))
    assert table.column("path").to_pylist() == paths
    assert table.column("label").to_pylist() == labels
    errors = table.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e] == [100]
    assert "inr/0100.safetensors" in errors[100]
    assert table.column("predicted")[100].as_py() == -1
    with pytest.warns(UserWarning, match="skipping inr/0100.safetensors"):
        w, b, _, _ = dws.read_inr_dataset(splits, skip_errors=True)
    keep = [i for i in range(240) if i != 100]
    logits = np.stack([table.column(f"logit_{k}").to_numpy() for k in range(4)], 1)
    assert np.array_equal(logits[keep], model(w, b))
    assert np.isnan(logits[100]).all()
    # The output directory is not silently appended to.
    with pytest.raises(dws.DwsError, match="not empty"):
        dray.score_dataset(CLF, splits, out)


def test_dws_model_outputs(cluster, tmp_path):
    model = dws.Model.load(EQUIV)
    shards, weights, biases = write_shards(tmp_path, model, 600, seed=9)
    out = tmp_path / "out"
    dray.score_dataset(EQUIV, shards, out, num_workers=2, batch_size=128)
    table = dray.read_predictions(out)
    flat = np.stack(table.column("output").to_numpy(zero_copy_only=False))
    ow, ob = model(weights, biases)
    expected = np.concatenate([a.reshape(600, -1) for a in ow + ob], axis=1)
    assert np.array_equal(flat, expected)
    with pytest.raises(dws.DwsError, match='use format="parquet"'):
        dray.score_dataset(EQUIV, shards, tmp_path / "csv", format="csv")
    with pytest.raises(dws.DwsError, match="dws-cuda backend not available"):
        dray.score_dataset(EQUIV, shards, tmp_path / "gpu", use_gpu=True)


def test_readme_ray_example_runs_as_written(cluster, tmp_path, monkeypatch, capsys):
    from test_docs import python_blocks, run_in_root_layout

    first, ray_example = python_blocks("README.md")[:2]
    assert "score_dataset(" in ray_example
    # The first example writes the digits.dws that the Ray one scores.
    run_in_root_layout(first + ray_example, tmp_path, monkeypatch, capsys)
    table = dray.read_predictions(tmp_path / "predictions")
    assert table.column("row").to_pylist() == list(range(360))
    labels = np.array(table.column("label").to_pylist())
    assert (table.column("predicted").to_numpy() == labels).sum() == 241
