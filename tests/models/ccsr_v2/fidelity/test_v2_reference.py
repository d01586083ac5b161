"""CCSR-v2 against the official code: goldens in data/ were made by running
the official CCSR-v2.0 code in fp32 on a CPU (make_goldens.py, README.md) on
the tiny random weights the `v2_weights` fixture writes (seed 0). Each case:
mean |ours - official| < 0.25/255 and max <= 2/255; the tiled VAE decoder
(ours is not the official vaehook's algorithm): PSNR > 35 dB."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hashing import weights_sha256  # noqa: E402

REF = json.loads((HERE / "data" / "reference.json").read_text())


@pytest.fixture(scope="module")
def engine(v2_weights):
    if weights_sha256(v2_weights) != REF["weights_sha256"]:
        pytest.fail("the tiny random CCSR-v2 weights changed (random_weights.py or diffusers' parameter order): "
                    "make the goldens again (fidelity/README.md)")
    from ccsr.models.ccsr_v2.engine import V2Upscaler

    return V2Upscaler.from_folder(v2_weights, device="cpu", dtype="fp32", auto_memory=False)


@pytest.mark.parametrize("name", sorted(REF["cases"]))
def test_matches_the_official_code(engine, name):
    case = REF["cases"][name]
    threads = torch.get_num_threads()
    torch.set_num_threads(REF["threads"])  # float sums depend on the thread count: the goldens' own
    try:
        ours = engine(Image.open(HERE / "data" / case["input"]), **case["opts"]).image
    finally:
        torch.set_num_threads(threads)
    gold = np.asarray(Image.open(HERE / "data" / f"{name}.png").convert("RGB"), dtype=np.float64)
    a = np.asarray(ours, dtype=np.float64)
    assert a.shape == gold.shape and list(ours.size) == case["size"]
    diff = np.abs(a - gold)
    if "psnr" in case:
        psnr = 10 * np.log10(255**2 / max(float(((a - gold) ** 2).mean()), 1e-12))
        assert psnr > case["psnr"], f"{name}: PSNR {psnr:.1f} dB"
    else:
        assert diff.mean() < 0.25 and diff.max() <= 2, f"{name}: mean {diff.mean():.4f}, max {diff.max()}"
