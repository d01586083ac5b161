"""Hashes shared by make_goldens.py (run in the official code's environment)
and the test: which random weights and which pixels a golden belongs to."""

import hashlib
from pathlib import Path

import numpy as np


def weights_sha256(root: Path) -> str:
    """sha256 over every tensor of a weights folder (files and keys sorted:
    the file, key, shape and dtype, then the raw bytes)."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for f in sorted(Path(root).rglob("*.safetensors")):
        sd = load_file(str(f))
        for k in sorted(sd):
            t = sd[k].contiguous()
            h.update(f"{f.relative_to(root)}:{k}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def pixels_sha256(image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
