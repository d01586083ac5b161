"""Checks that run only where CUDA is present (issue 9, point 1); benchmarks/gpu_check.py
measures the same at full sizes. Skipped without CUDA: they add to the CPU tests, which
cover the same code paths on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ccsr.models.ccsr_v1.networks.model import CCSRModel
from ccsr.models.ccsr_v1 import sampler
from ccsr.models.ccsr_v1.engine import CCSRUpscaler

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

#: fp16 against fp32 on the same device; measured on the CPU for the tiny model: see the report.
MIN_PSNR_DB = 30.0


@pytest.fixture(scope="module")
def photo(chelsea) -> Image.Image:
    return chelsea(128, 96)


def _psnr(a: Image.Image, b: Image.Image) -> float:
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_has_no_nan_or_inf(tiny_checkpoint, tiny_config, dtype):
    model = CCSRModel.from_file(tiny_checkpoint, tiny_config, device="cuda", dtype=dtype)
    for px in (1024, 2048):
        x = torch.randn(1, 4, px // 8, px // 8, device="cuda")
        assert torch.isfinite(model.eps(x, torch.tensor(999), x)).all()
        assert torch.isfinite(model.decode(x)).all()
        assert torch.isfinite(model.encode_condition(torch.rand(1, 3, px, px, device="cuda"))).all()


@pytest.mark.parametrize("arch", ["tiny", "v1"])
def test_fp16_agrees_with_fp32(arch, tiny_checkpoint, tiny_config, tmp_path_factory, photo):
    from ccsr.models.ccsr_v1.networks.config import CCSRConfig
    from ccsr.models.ccsr_v1.random_weights import write_random_checkpoint

    if arch == "v1":
        config = CCSRConfig.v1()
        path = write_random_checkpoint(config, tmp_path_factory.mktemp("v1") / "v1.safetensors", dtype=torch.float16)
    else:
        config, path = tiny_config, tiny_checkpoint
    out = {}
    for dtype in (torch.float32, torch.float16):
        model = CCSRModel.from_file(path, config, device="cuda", dtype=dtype)
        out[dtype] = CCSRUpscaler(model)(photo, seed=1, steps=50, scale=2).image
        del model
        torch.cuda.empty_cache()
    assert _psnr(out[torch.float16], out[torch.float32]) > MIN_PSNR_DB


def test_seed_noise_is_the_same_on_cpu_and_cuda():
    shape = (1, 4, 96, 64)
    a = sampler._noise(shape, torch.Generator("cpu").manual_seed(99), "cpu", torch.float32)
    b = sampler._noise(shape, torch.Generator("cpu").manual_seed(99), "cuda", torch.float32)
    assert torch.equal(a, b.cpu())
