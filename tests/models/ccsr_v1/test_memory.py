"""The memory estimate and the automatic plan (models/ccsr_v1/memory.py) on the tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ccsr.models.ccsr_v1.params import UpscaleParams
from ccsr.models.ccsr_v1 import memory
from ccsr.models.ccsr_v1.engine import CCSRUpscaler

FAST = dict(steps=4, scale=2)


@pytest.fixture(scope="module")
def photo(chelsea) -> Image.Image:
    return chelsea(64, 48)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def _untiled_peak(tiny_config, p: UpscaleParams, w: int, h: int) -> int:
    return memory.plan(tiny_config, torch.float32, p, w, h, tile_batch_size=4, budget=None).peak


def test_plan_keeps_the_request_when_memory_is_plentiful(tiny_config):
    p = UpscaleParams(**FAST)
    plan = memory.plan(tiny_config, torch.float32, p, 64, 48, tile_batch_size=4, budget=10 * 1024 ** 3)
    assert plan.fits and not plan.changed and not plan.tile_vae and plan.tile_batch_size == 4
    assert set(plan.stages) == {"encode", "sampling", "decode"} and plan.peak == max(plan.stages.values())


#: A request where tiled VAE helps the tiny model: 256 px at scale 4 (a 1024 px output).
BIG = dict(steps=4, scale=4)


def _budget_for(tiny_config, p: UpscaleParams, w: int, h: int, **candidate) -> int:
    """The smallest budget the given candidate fits in."""
    est = memory.estimate(tiny_config, torch.float32, p, w, h, tile_batch_size=4, **candidate)
    return int(max(est.values()) / memory.HEADROOM) + 1


def test_plan_tiles_the_vae_when_memory_is_short(tiny_config):
    p = UpscaleParams(**BIG)
    untiled = _untiled_peak(tiny_config, p, 256, 256)
    budget = _budget_for(tiny_config, p, 256, 256, tile_vae=True, encoder_tile=256, decoder_tile=32)
    assert budget * memory.HEADROOM < untiled  # the precondition: tiling helps here
    plan = memory.plan(tiny_config, torch.float32, p, 256, 256, tile_batch_size=4, budget=budget, allow_offload=False)
    assert plan.changed and plan.tile_vae and plan.fits, plan
    assert plan.peak <= budget * memory.HEADROOM < untiled
    assert plan.tile_batch_size == 4  # no tiled diffusion: no tile batch to lower
    assert "tiled VAE" in plan.describe()
    # nothing fits a budget of a few bytes: the smallest plan runs, and says so
    none = memory.plan(tiny_config, torch.float32, p, 256, 256, tile_batch_size=4, budget=1000, allow_offload=False)
    assert not none.fits and none.tile_vae and none.peak < untiled and "does not fit" in none.describe()


def test_plan_for_the_gpu_memory_cases_of_issue_9():
    """What the plan does for the full-size model in fp16 (checked on CUDA by benchmarks/gpu_check.py)."""
    from ccsr.models.ccsr_v1.networks.config import CCSRConfig

    cfg, weights = CCSRConfig.v1(), int(2.7 * 1024 ** 3)
    hd = memory.plan(cfg, torch.float16, UpscaleParams(scale=2), 1920, 1080, tile_batch_size=4, budget=10 * 1024 ** 3 - weights)
    assert hd.fits and hd.tile_vae and hd.offload_vae
    default = memory.plan(cfg, torch.float16, UpscaleParams(scale=2), 512, 512, tile_batch_size=4, budget=100 * 1024 ** 3)
    assert default.fits and not default.changed


def test_plan_lowers_the_tile_batch_and_offloads_only_where_allowed(tiny_config):
    p = UpscaleParams(steps=4, scale=4, tile_diffusion="gaussian", tile_diffusion_size=256, tile_diffusion_stride=128)
    est = memory.estimate(tiny_config, torch.float32, p, 256, 256, tile_batch_size=1, tile_vae=True,
                          encoder_tile=memory.MIN_ENCODER_TILE, decoder_tile=memory.MIN_DECODER_TILE, offload_vae=True)
    budget = int(max(est.values()) / memory.HEADROOM) + 1
    gpu = memory.plan(tiny_config, torch.float32, p, 256, 256, tile_batch_size=4, budget=budget)
    assert gpu.fits and gpu.offload_vae and gpu.tile_batch_size == 1
    cpu = memory.plan(tiny_config, torch.float32, p, 256, 256, tile_batch_size=4, budget=budget, allow_offload=False)
    assert not cpu.offload_vae


def test_half_precision_and_batches_change_the_estimate(tiny_config):
    p = UpscaleParams(**FAST)
    kw = dict(tile_batch_size=4, tile_vae=False, encoder_tile=1024, decoder_tile=226)
    fp32 = memory.estimate(tiny_config, torch.float32, p, 64, 48, **kw)
    fp16 = memory.estimate(tiny_config, torch.float16, p, 64, 48, **kw)
    four = memory.estimate(tiny_config, torch.float32, p, 64, 48, batch=4, **kw)
    fixed = memory.net_bytes(tiny_config, 0, torch.float32)  # the per-call weight copies
    assert fp16["sampling"] < fp32["sampling"] < four["sampling"]
    assert four["sampling"] - fixed == pytest.approx(4 * (fp32["sampling"] - fixed))
    assert four["decode"] == fp32["decode"]  # decoded one request at a time


def test_estimate_is_above_the_measured_peak_on_the_cpu(tiny_checkpoint, tiny_config):
    """The calibrated coefficients are conservative for the stages measured here (fp32, CPU),
    measured as benchmarks/bench_memory.py does: weights in process memory (not pages of
    the mapped file, which count as new when re-read), one warm-up call first."""
    from ccsr.models.ccsr_v1.networks.model import CCSRModel

    model = CCSRModel.from_file(tiny_checkpoint, tiny_config)
    for t in list(model.parameters()) + list(model.buffers()):
        t.data = t.data.clone()
    dev = torch.device("cpu")
    z = torch.randn(1, 4, 64, 64)
    x = torch.rand(1, 3, 512, 512)
    calls = {"decode": lambda: model.decode(z), "encode": lambda: model.encode_condition(x),
             "net": lambda: model.eps(z, torch.tensor(500), z)}
    peaks = {}
    for name, fn in calls.items():
        fn()
        try:
            _, peaks[name] = memory.measure_peak(fn, dev)
        except OSError:
            pytest.skip("no /proc/self/clear_refs: peak RSS cannot be reset on this system")
    assert peaks["decode"] <= memory.vae_bytes(tiny_config, 512 * 512, torch.float32, memory.K_DEC)
    assert peaks["encode"] <= memory.vae_bytes(tiny_config, 512 * 512, torch.float32, memory.K_ENC)
    assert peaks["net"] <= memory.net_bytes(tiny_config, 64 * 64, torch.float32), peaks


def test_free_memory_of_the_cpu_is_known_and_sane():
    free = memory.free_memory(torch.device("cpu"))
    assert free is not None and 0 < free
    total = int(open("/proc/meminfo").read().split()[1]) * 1024
    assert free <= total


def test_planned_request_matches_the_untiled_one(tiny_model, tiny_config, photo):
    """A small budget makes the upscaler tile the VAE on its own; the picture stays
    within the tiled-VAE tolerance of the untiled run (tests/models/ccsr_v1/test_upscaler.py)."""
    image = photo.resize((192, 192), Image.BICUBIC)
    budget = _budget_for(tiny_config, UpscaleParams(**BIG), 192, 192, tile_vae=True, encoder_tile=256, decoder_tile=32)
    logs = []
    planned = CCSRUpscaler(tiny_model, memory_budget=budget)(image, seed=2, log=logs.append, **BIG)
    plain = CCSRUpscaler(tiny_model, auto_memory=False)(image, seed=2, **BIG)
    assert planned.memory_plan is not None and planned.memory_plan.tile_vae
    assert plain.memory_plan is None
    assert any(m.startswith("memory plan:") for m in logs)
    diff = np.abs(_arr(planned.image) - _arr(plain.image))
    assert 0 < diff.mean() < 3.0, diff.mean()  # tiled (so not identical) but close


def test_plenty_of_memory_leaves_the_picture_unchanged(small, tiny_model, photo):
    a = CCSRUpscaler(tiny_model, memory_budget=10 * 1024 ** 3)(photo, seed=3, **FAST)
    b = CCSRUpscaler(tiny_model, auto_memory=False)(photo, seed=3, **FAST)
    assert a.memory_plan is not None and not a.memory_plan.changed
    assert np.array_equal(_arr(a.image), _arr(b.image))


def test_out_of_memory_with_a_tile_batch_retries_one_tile_at_a_time(tiny_model, photo, monkeypatch):
    kw = dict(seed=5, steps=4, scale=2, tile_diffusion="gaussian", tile_diffusion_size=256, tile_diffusion_stride=128)
    want = CCSRUpscaler(tiny_model, tile_batch_size=1, auto_memory=False)(photo, **kw)
    eps = tiny_model.eps
    calls = []

    def small_gpu(x, *a, **k):
        calls.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return eps(x, *a, **k)

    monkeypatch.setattr(tiny_model, "eps", small_gpu)
    logs = []
    got = CCSRUpscaler(tiny_model, tile_batch_size=4, auto_memory=False)(photo, log=logs.append, **kw)
    assert calls[0] > 1 and set(calls[1:]) == {1}  # one failed batch (of all tiles), then single tiles only
    assert any("retrying one at a time" in m for m in logs)
    assert np.array_equal(_arr(got.image), _arr(want.image))
