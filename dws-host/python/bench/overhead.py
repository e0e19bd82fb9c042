"""Python overhead: `model(weights, biases)` against `dws run` on the same batch.

    python bench/overhead.py --dws target/release/dws --model MODEL.dws -n 10000 --threads 2

Writes N random inputs (seed 0) as a `dws run` safetensors file, then times, best of
--repeat runs each:
  * `dws run MODEL inputs -o out --threads T`: the CLI's own "ran N inputs in X s"
    (the batch runner only) and the whole process (read, run, write);
  * `model(weights, biases, threads=T)` on the arrays read from the same file (array
    conversion, flattening, the same batch runner, output arrays), and the whole
    Python path (dws.read_tensors + call + dws.write_safetensors);
and checks that both give identical outputs.
"""

import argparse
import os
import re
import resource
import subprocess
import tempfile
import time

import numpy as np

import dws


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dws", required=True, help="the dws CLI binary")
    ap.add_argument("--model", required=True)
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=dws.default_threads())
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()

    model = dws.Model.load(a.model)
    ws, bs = model.input_shapes
    rng = np.random.default_rng(0)
    tensors = {
        f"weights.{i}": rng.standard_normal((a.n, *s)).astype(np.float32) for i, s in enumerate(ws)
    }
    tensors.update(
        {f"biases.{i}": rng.standard_normal((a.n, *s)).astype(np.float32) for i, s in enumerate(bs)}
    )
    tmp = tempfile.mkdtemp()
    inputs = os.path.join(tmp, "inputs.safetensors")
    dws.write_safetensors(inputs, tensors)
    cli_out = os.path.join(tmp, "cli.safetensors")
    py_out = os.path.join(tmp, "py.safetensors")

    L = model.layers
    cli_run, cli_wall, py_call, py_wall, cli_cpu, py_cpu = [], [], [], [], [], []
    # Interleaved, so that load from other jobs hits both sides alike.
    for _ in range(a.repeat):
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run(
            [a.dws, "run", a.model, inputs, "-o", cli_out, "--threads", str(a.threads)],
            check=True,
            capture_output=True,
            text=True,
        )
        cli_wall.append(time.perf_counter() - t0)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cli_cpu.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
        cli_run.append(float(re.search(r"ran \d+ inputs in ([0-9.]+) s", r.stderr).group(1)))

        p0 = time.process_time()
        t0 = time.perf_counter()
        t = dws.read_tensors(inputs)
        w = [t[f"weights.{i}"] for i in range(L)]
        b = [t[f"biases.{i}"] for i in range(L)]
        t1 = time.perf_counter()
        out = model(w, b, threads=a.threads)
        t2 = time.perf_counter()
        named = (
            {"logits": out}
            if model.is_classifier
            else {
                **{f"weights.{i}": x for i, x in enumerate(out[0])},
                **{f"biases.{i}": x for i, x in enumerate(out[1])},
            }
        )
        dws.write_safetensors(py_out, named)
        py_wall.append(time.perf_counter() - t0)
        py_cpu.append(time.process_time() - p0)
        py_call.append(t2 - t1)

    ref = dws.read_tensors(cli_out)
    got = dws.read_tensors(py_out)
    assert sorted(ref) == sorted(got) and all(np.array_equal(ref[k], got[k]) for k in ref)

    best = min
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    print(
        f"model {a.model}: {model.kind}, dims {model.dims}, {a.n} inputs, {a.threads} threads, best of {a.repeat}"
    )
    print(
        f"  dws run, batch runner:         {best(cli_run):8.4f} s  ({a.n / best(cli_run):9.0f} inputs/s)"
    )
    print(
        f"  model(weights, biases):        {best(py_call):8.4f} s  ({a.n / best(py_call):9.0f} inputs/s)  "
        f"{100 * (best(py_call) / best(cli_run) - 1):+.1f}%"
    )
    print(f"  dws run, whole process:        {best(cli_wall):8.4f} s")
    print(
        f"  read + model(...) + write:     {best(py_wall):8.4f} s  {100 * (best(py_wall) / best(cli_wall) - 1):+.1f}%"
    )
    print(
        f"  CPU time, whole path: dws run {best(cli_cpu):.4f} s, Python {best(py_cpu):.4f} s "
        f"({100 * (best(py_cpu) / best(cli_cpu) - 1):+.1f}%)"
    )
    one_w = [x[:1] for x in w]
    one_b = [x[:1] for x in b]
    model(one_w, one_b, threads=1)
    k = 200
    t0 = time.perf_counter()
    for _ in range(k):
        model(one_w, one_b, threads=1)
    per_call = (time.perf_counter() - t0) / k
    print(f"  model(...) on one input, threads=1: {1e6 * per_call:.0f} us per call")
    print(
        f"  medians: dws run {med(cli_run):.4f} s, model(...) {med(py_call):.4f} s "
        f"({100 * (med(py_call) / med(cli_run) - 1):+.1f}%)"
    )
    print("  outputs identical: yes")


if __name__ == "__main__":
    main()
