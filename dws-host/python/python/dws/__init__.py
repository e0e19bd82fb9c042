"""dws: run trained DWSNets (networks whose input is another MLP's weights).

The runtime is Rust (``dws-core``/``dws-host``); this package is a thin PyO3 layer:

>>> import dws
>>> model = dws.Model.load("model.dws")
>>> logits = model(weights, biases)   # weights[i]: [B, d_i, d_{i+1}, F], biases[i]: [B, d_{i+1}, F]

* :class:`Model`: load (``Model.load``), call, ``quantize``, properties.
* :func:`convert`: ``dws convert`` (an upstream checkpoint + config to a model).
* :func:`read_inr_dataset`, :func:`read_inr_files`, :func:`dataset_entries`: INR
  datasets in upstream's layout (splits JSON or a folder of INR files).
* :func:`read_tensors`, :func:`write_safetensors`: the ``dws run`` file format.
* :mod:`dws.ray`: sharded scoring on Ray Data (``pip install 'ray[data]'``).

Every error is a :class:`DwsError` (a ``ValueError``) with the CLI's message.
See docs/python.md.
"""

from ._dws import (
    RELATIVE_TOLERANCE,
    DwsError,
    Model,
    __version__,
    convert,
    cuda_available,
    dataset_entries,
    default_threads,
    read_case,
    read_inr_dataset,
    read_inr_files,
    read_tensors,
    write_safetensors,
)

__all__ = [
    "RELATIVE_TOLERANCE",
    "DwsError",
    "Model",
    "__version__",
    "convert",
    "cuda_available",
    "dataset_entries",
    "default_threads",
    "read_case",
    "read_inr_dataset",
    "read_inr_files",
    "read_tensors",
    "write_safetensors",
]
