"""The Python API over the shared reference suite (tests/fixtures), with the suite's
tolerances: f32 within 1e-4 of each output tensor's largest expected magnitude, int8
and 16x8 bit-exact against the core's golden outputs (case_int8.bin, case_16x8.bin)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import dws
from conftest import FIXTURES, fixture_names

NAMES = fixture_names()


def load_inputs(name):
    t = dws.read_tensors(FIXTURES / name / "inputs.safetensors")
    n = sum(1 for k in t if k.startswith("weights."))
    return [t[f"weights.{i}"] for i in range(n)], [t[f"biases.{i}"] for i in range(n)]


def named_outputs(model, out):
    """Model outputs as the fixture's named tensors."""
    if model.is_classifier:
        return {"logits": out}
    w, b = out
    named = {f"weights.{i}": a for i, a in enumerate(w)}
    named.update({f"biases.{i}": a for i, a in enumerate(b)})
    return named


def flat_outputs(model, out):
    """Model outputs in the core's flat layout, [B, output_len]."""
    if model.is_classifier:
        return out
    w, b = out
    return np.concatenate([a.reshape(len(a), -1) for a in list(w) + list(b)], axis=1)


@pytest.mark.parametrize("name", NAMES)
def test_f32_matches_upstream(name):
    model = dws.Model.load(FIXTURES / name / "model.dws")
    assert model.precision == "f32"
    weights, biases = load_inputs(name)
    out = named_outputs(model, model(weights, biases))
    expected = dws.read_tensors(FIXTURES / name / "expected.safetensors")
    assert sorted(out) == sorted(expected)
    for k, e in expected.items():
        assert out[k].shape == e.shape, k
        assert out[k].dtype == np.float32
        allowed = dws.RELATIVE_TOLERANCE * np.abs(e).max()
        diff = np.abs(out[k] - e).max()
        assert diff <= allowed, f"{name} {k}: |diff| {diff:.3e} > allowed {allowed:.3e}"


MODES = [("int8", "model.int8.dws", "case_int8.bin"), ("16x8", "model.16x8.dws", "case_16x8.bin")]


@pytest.mark.parametrize("mode", MODES, ids=[m[0] for m in MODES])
@pytest.mark.parametrize("name", NAMES)
def test_quantized_bit_exact(name, mode):
    precision, blob, golden = mode
    model = dws.Model.load(FIXTURES / name / blob)
    assert model.precision == precision
    case = dws.read_case(FIXTURES / name / golden)
    weights, biases = load_inputs(name)
    # The case holds the same inputs, in the core's flat layout.
    flat_in = np.concatenate([a.reshape(len(a), -1) for a in weights + biases], axis=1)
    assert np.array_equal(flat_in, case["inputs"])
    got = flat_outputs(model, model(weights, biases))
    assert got.shape == case["expected"].shape
    assert np.array_equal(got.view(np.uint32), case["expected"].view(np.uint32)), name
    # The flat entry point agrees.
    assert np.array_equal(model.run_flat(case["inputs"]), got)


@pytest.mark.parametrize("name", NAMES)
def test_convert_and_quantize_reproduce_blobs(name):
    d = FIXTURES / name
    converted = dws.convert(d / "model.pt", d / "config.json")
    assert converted.to_bytes() == (d / "model.dws").read_bytes()
    # A dict config is the same config.
    cfg = json.loads((d / "config.json").read_text())
    assert dws.convert(d / "model.pt", cfg).to_bytes() == converted.to_bytes()
    # `dws quantize` calibrated on the fixture inputs wrote model.int8.dws
    # and, with int16 activations, model.16x8.dws.
    q = converted.quantize(*load_inputs(name))
    assert q.precision == "int8"
    assert q.to_bytes() == (d / "model.int8.dws").read_bytes()
    q = converted.quantize(*load_inputs(name), activations="int16")
    assert q.precision == "16x8"
    assert q.to_bytes() == (d / "model.16x8.dws").read_bytes()


def test_convert_writes_output(tmp_path):
    d = FIXTURES / "clf_sab_sum_5mats"
    out = tmp_path / "m.dws"
    m = dws.convert(str(d / "model.pt"), str(d / "config.json"), output=str(out))
    assert out.read_bytes() == (d / "model.dws").read_bytes()
    assert m.path == str(out)


def test_convert_in_memory(tmp_path):
    """A state_dict (or the module) in memory converts like the file; so does a loaded
    statistics dict, nested as upstream saves it."""
    d = FIXTURES / "clf_sab_sum_5mats"
    sd = dws.read_tensors(d / "model.pt")  # {name: float32 array}, as state_dict() holds
    assert dws.convert(sd, d / "config.json").to_bytes() == (d / "model.dws").read_bytes()

    class Module:  # anything with a state_dict() method, like an nn.Module
        def state_dict(self):
            return {k: v.astype(np.float64) for k, v in sd.items()}

    assert dws.convert(Module(), d / "config.json").to_bytes() == (d / "model.dws").read_bytes()
    digits = Path(FIXTURES).resolve().parents[1] / "examples" / "digits"
    flat = dws.read_tensors(digits / "statistics.pth")  # weights.mean.0, ...
    nested = {
        kind: {stat: [flat[f"{kind}.{stat}.{i}"] for i in range(3)] for stat in ("mean", "std")}
        for kind in ("weights", "biases")
    }
    from_file = dws.convert(
        digits / "model.pt", digits / "config.json", statistics=digits / "statistics.pth"
    )
    in_memory = dws.convert(
        dws.read_tensors(digits / "model.pt"), digits / "config.json", statistics=nested
    )
    assert in_memory.to_bytes() == from_file.to_bytes()
    bad = dict(sd)
    bad.pop(next(iter(bad)))
    with pytest.raises(dws.DwsError, match="(?s)converting the state_dict: .*missing"):
        dws.convert(bad, d / "config.json")


def test_unbatched_threads_and_dtypes():
    for name in ("clf_sab_sum_5mats", "dws_ds_mean_uneven"):
        model = dws.Model.load(FIXTURES / name / "model.dws", threads=1)
        assert model.threads == 1
        weights, biases = load_inputs(name)
        full = model(weights, biases, threads=2)
        one = model([w[1] for w in weights], [b[1] for b in biases])
        f64 = model([w.astype(np.float64) for w in weights], [b.astype(np.float64) for b in biases])
        if model.is_classifier:
            assert one.shape == (model.classes,)
            assert np.array_equal(one, full[1])
            assert np.array_equal(f64, full)
        else:
            (fw, fb), (ow, ob) = full, one
            assert [a.shape for a in ow] == [a.shape[1:] for a in fw]
            for a, b in zip(fw + fb, ow + ob):
                assert np.array_equal(a[1], b)


def test_int8_single_inputs_on_two_threads_and_after_fork():
    """One int8 input with two threads runs on two (a helper thread takes half
    of the work); a process forked after that has no helper thread and must
    start its own, not wait for the parent's."""
    import os

    model = dws.Model.load(FIXTURES / "paper_default" / "model.int8.dws", threads=2)
    case = dws.read_case(FIXTURES / "paper_default" / "case_int8.bin")
    x = case["inputs"]
    one = [model.run_flat(x[i : i + 1], threads=2)[0] for i in range(len(x))]
    assert np.array_equal(np.stack(one), case["expected"])
    if not hasattr(os, "fork"):
        return
    pid = os.fork()
    if pid == 0:
        ok = np.array_equal(model.run_flat(x[:1], threads=2)[0], case["expected"][0])
        os._exit(0 if ok else 1)
    import signal
    import time

    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked process hung")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_properties():
    m = dws.Model.load(FIXTURES / "clf_sab_sum_5mats" / "model.dws")
    assert m.kind == "DWSModelForClassification" and m.is_classifier
    assert m.dims == [2, 6, 5, 4, 7, 3] and m.layers == 5
    assert m.classes == 4 and m.output_features is None
    assert m.input_features == 1 and m.precision == "f32" and m.device == "cpu"
    ws, bs = m.input_shapes
    assert ws[0] == [2, 6, 1] and bs[-1] == [3, 1]
    assert m.input_len == sum(np.prod(s) for s in ws + bs)
    assert m.output_len == 4
    assert m.scratch_bytes > 0 and m.blob_bytes == 38528 and m.parameters == 8724
    assert m.macs > 0 and m.threads == dws.default_threads()
    assert "DWSModelForClassification" in repr(m)
    assert "flops per input" in m.summary()
    e = dws.Model.load(FIXTURES / "dws_ds_mean_uneven" / "model.dws")
    assert e.kind == "DWSModel" and e.classes is None and e.output_features == 3


def test_errors_are_dws_errors_with_cli_messages(tmp_path):
    assert issubclass(dws.DwsError, ValueError)
    m = dws.Model.load(FIXTURES / "clf_sab_sum_5mats" / "model.dws")
    w, b = load_inputs("clf_sab_sum_5mats")
    with pytest.raises(
        dws.DwsError,
        match=r"input tensor `weights.1` has shape \[4, 5, 5, 1\], expected \[B, 6, 5, 1\]",
    ):
        m([w[0], w[1][:, :5]] + w[2:], b)
    with pytest.raises(
        dws.DwsError, match="input tensor `biases.0` has batch size 3, others have 4"
    ):
        m(w, [b[0][:3]] + b[1:])
    bad = [x.copy() for x in w]
    bad[2][1, 0, 0, 0] = np.nan
    with pytest.raises(dws.DwsError, match=r"input tensor `weights.2` holds a NaN at \[1, 0, 0, 0\]"):
        m(bad, b)
    with pytest.raises(dws.DwsError, match="weights has 4 arrays, expected 5"):
        m(w[:4], b)
    with pytest.raises(dws.DwsError, match="must be a list"):
        m(w[0], b)
    with pytest.raises(dws.DwsError, match="reading model .*missing.dws"):
        dws.Model.load(tmp_path / "missing.dws")
    junk = tmp_path / "junk.dws"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(dws.DwsError, match="opening model blob"):
        dws.Model.load(junk)
    with pytest.raises(dws.DwsError, match="dws-cuda backend not available in this build"):
        dws.Model.load(FIXTURES / "clf_sab_sum_5mats" / "model.dws", device="cuda")
    assert not dws.cuda_available()
    with pytest.raises(dws.DwsError, match="unknown device"):
        dws.Model.load(FIXTURES / "clf_sab_sum_5mats" / "model.dws", device="tpu")
    with pytest.raises(dws.DwsError, match="threads must be at least 1"):
        m(w, b, threads=0)
    q = dws.Model.load(FIXTURES / "clf_sab_sum_5mats" / "model.int8.dws")
    with pytest.raises(dws.DwsError, match=r"the model is already quantized \(int8\)"):
        q.quantize(w, b)
    with pytest.raises(dws.DwsError, match='activations must be one of "int8", "int16"'):
        m.quantize(w, b, activations="int4")
    with pytest.raises(dws.DwsError, match="the calibration set is empty"):
        m.quantize([x[:0] for x in w], [x[:0] for x in b])
    cfg = json.loads((FIXTURES / "clf_sab_sum_5mats" / "config.json").read_text())
    cfg["weight_shapes"] = cfg["weight_shapes"][:2]
    cfg.pop("bias_shapes")
    with pytest.raises(dws.DwsError, match="in the config dict: weight_shapes has 2 matrices"):
        dws.convert(FIXTURES / "clf_sab_sum_5mats" / "model.pt", cfg)


def test_save_and_from_bytes(tmp_path):
    m = dws.Model.load(FIXTURES / "clf_sab_sum_5mats" / "model.dws")
    p = tmp_path / "copy.dws"
    m.save(p)
    again = dws.Model.from_bytes(p.read_bytes())
    w, b = load_inputs("clf_sab_sum_5mats")
    assert np.array_equal(again(w, b), m(w, b))


def write_inr(path, model, rng):
    """An INR file: an nn.Linear MLP state_dict (weights [out, in]) as safetensors."""
    dims = model.dims
    t = {}
    for k in range(len(dims) - 1):
        t[f"seq.{k}.weight"] = rng.standard_normal((dims[k + 1], dims[k])).astype(np.float32)
        t[f"seq.{k}.bias"] = rng.standard_normal(dims[k + 1]).astype(np.float32)
    dws.write_safetensors(path, t)
    return t


def test_inr_dataset(tmp_path):
    m = dws.Model.load(FIXTURES / "clf_sab_sum_5mats" / "model.dws")
    rng = np.random.default_rng(1)
    sds, paths = [], []
    for i in range(12):
        p = f"inr/{i}.safetensors"
        (tmp_path / "inr").mkdir(exist_ok=True)
        sds.append(write_inr(tmp_path / p, m, rng))
        paths.append(p)
    splits = {
        "test": {"path": paths, "label": [i % 4 for i in range(12)]},
        "val": {"path": paths[:3]},
    }
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    weights, biases, labels, got_paths = dws.read_inr_dataset(tmp_path / "splits.json")
    assert got_paths == paths and labels.tolist() == [i % 4 for i in range(12)]
    L = m.layers
    for i in range(L):
        assert weights[i].shape == (12, m.dims[i], m.dims[i + 1], 1)
        # Upstream transposes nn.Linear's [out, in] to [in, out].
        assert np.array_equal(weights[i][5, :, :, 0], sds[5][f"seq.{i}.weight"].T)
        assert np.array_equal(biases[i][5, :, 0], sds[5][f"seq.{i}.bias"])
    logits = m(weights, biases)
    assert logits.shape == (12, 4)
    # The same inputs through the flat path.
    _, _, none, _ = dws.read_inr_dataset(tmp_path / "splits.json", split="val")
    assert none is None
    # A folder works too (labels unknown), and dims can come from a model.
    w2, _, l2, p2 = dws.read_inr_dataset(tmp_path / "inr", dims=m)
    assert l2 is None and len(p2) == 12
    # A broken file: raises by default, is skipped on request.
    (tmp_path / "inr" / "3.safetensors").write_bytes(b"garbage")
    with pytest.raises(dws.DwsError, match="3.safetensors"):
        dws.read_inr_dataset(tmp_path / "splits.json")
    with pytest.warns(UserWarning, match="skipping inr/3.safetensors"):
        w3, _, l3, p3 = dws.read_inr_dataset(tmp_path / "splits.json", skip_errors=True)
    assert len(p3) == 11 and "inr/3.safetensors" not in p3 and len(l3) == 11
    ws, bs, errors = dws.read_inr_files(
        [tmp_path / p for p in paths], dims=m.dims, skip_errors=True
    )
    assert list(errors) == [3] and ws[0].shape[0] == 11
    with pytest.raises(dws.DwsError, match="no split `train`"):
        dws.read_inr_dataset(tmp_path / "splits.json", split="train")


def test_inr_dataset_that_moved(tmp_path):
    """Upstream's splits files hold absolute paths: a copied dataset is found by the
    paths' trailing parts under the splits file's folder, or under ``data_root``."""
    m = dws.Model.load(FIXTURES / "clf_sab_sum_5mats" / "model.dws")
    rng = np.random.default_rng(2)
    data = tmp_path / "copy" / "dataset"
    (data / "inr").mkdir(parents=True)
    old = []
    for i in range(3):
        write_inr(data / "inr" / f"{i}.safetensors", m, rng)
        old.append(f"/home/alice/DWSNets/dataset/inr/{i}.safetensors")
    splits = {"test": {"path": old, "label": [0, 1, 2]}}
    (data / "splits.json").write_text(json.dumps(splits))
    w, _, labels, paths = dws.read_inr_dataset(data / "splits.json")
    assert paths == old and labels.tolist() == [0, 1, 2] and w[0].shape[0] == 3
    # The splits file elsewhere: found under data_root only.
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(dws.DwsError, match="/home/alice/DWSNets"):
        dws.read_inr_dataset(tmp_path / "splits.json")
    entries = dws.dataset_entries(tmp_path / "splits.json", data_root=tmp_path / "copy")
    assert [e["path"] for e in entries] == old
    assert entries[1]["file"] == str(data / "inr" / "1.safetensors")
    w2, _, _, _ = dws.read_inr_dataset(tmp_path / "splits.json", data_root=tmp_path / "copy")
    assert np.array_equal(w2[0], w[0])
    from dws.ray import dataset_rows  # what dws.ray.score_dataset scores

    rows = dataset_rows(tmp_path / "splits.json", data_root=tmp_path / "copy")
    assert [r["file"] for r in rows] == [e["file"] for e in entries]
    # data_root is for splits files only, as in the CLI.
    with pytest.raises(dws.DwsError, match="data_root applies to a splits JSON"):
        dws.dataset_entries(data / "inr", data_root=tmp_path)
    with pytest.raises(dws.DwsError, match="data_root applies to a splits JSON"):
        dataset_rows([data / "inr" / "0.safetensors"], data_root=tmp_path)


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    m = dws.Model.load(FIXTURES / "dws_ds_mean_uneven" / "model.dws")
    w, b = load_inputs("dws_ds_mean_uneven")
    ref_w, ref_b = m(w, b)
    tw, tb = m([torch.from_numpy(x).requires_grad_() for x in w], [torch.from_numpy(x) for x in b])
    assert all(isinstance(t, torch.Tensor) for t in tw + tb)
    for t, r in zip(tw + tb, ref_w + ref_b):
        assert np.array_equal(t.numpy(), r)
    c = dws.Model.load(FIXTURES / "clf_sab_sum_5mats" / "model.dws")
    w, b = load_inputs("clf_sab_sum_5mats")
    logits = c([torch.from_numpy(x).double() for x in w], [torch.from_numpy(x) for x in b])
    assert isinstance(logits, torch.Tensor) and logits.dtype == torch.float32


def test_torch_never_imported():
    # `import dws` and a NumPy call must not import torch.
    import subprocess

    code = (
        "import sys, numpy as np, dws\n"
        f"m = dws.Model.load({str(FIXTURES / 'clf_sab_sum_5mats' / 'model.dws')!r})\n"
        "w, b = m.input_shapes\n"
        "m([np.zeros([2] + s, np.float32) for s in w], [np.zeros([2] + s, np.float32) for s in b])\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
