"""Shared helpers for the digits example scripts (not upstream code).

Puts the upstream DWSNets checkout on ``sys.path`` and, if the optional
``rff`` package (``random-fourier-features-pytorch``, only used by upstream's
INR for positional encodings) is not installed, registers an empty stand-in
so that ``nn.inr`` can be imported. The stand-in is never used here: every
INR in this example is built with ``pe_features=None``.
"""

import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))

# Upstream INR(in_dim=2, n_layers=3, up_scale=16, out_channels=1):
# hidden = in_dim * up_scale = 32, weights (2,32),(32,32),(32,1) as [in, out].
INR_KWARGS = dict(in_dim=2, n_layers=3, up_scale=16, out_channels=1)
IMAGE_SIZE = (8, 8)


def add_upstream(path):
    path = os.path.abspath(path)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        import rff.layers  # noqa: F401
    except ImportError:
        rff = types.ModuleType("rff")
        layers = types.ModuleType("rff.layers")

        class _Unavailable:
            def __init__(self, *a, **k):
                raise ImportError("rff (random-fourier-features-pytorch) is not installed")

        layers.GaussianEncoding = _Unavailable
        layers.PositionalEncoding = _Unavailable
        rff.layers = layers
        sys.modules["rff"] = rff
        sys.modules["rff.layers"] = layers
