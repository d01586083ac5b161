"""Requests batched through the network (CCSRUpscaler.run_batch) equal the same requests run one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ccsr.models.ccsr_v1.params import UpscaleParams
from ccsr.models.ccsr_v1 import sampler
from ccsr.models.ccsr_v1 import schedule
from ccsr.models.ccsr_v1.engine import CCSRUpscaler



@pytest.fixture(scope="module")
def photos(fixtures_dir) -> list[Image.Image]:
    out = []
    for name, box in (("chelsea.png", None), ("astronaut.png", None), ("chelsea.png", (20, 10, 220, 160))):
        with Image.open(fixtures_dir / "images" / name) as im:
            im = im.convert("RGB")
            out.append((im.crop(box) if box else im).resize((64, 48), Image.BICUBIC))
    return out


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_batched_sampler_latents_equal_one_by_one(tiny_model):
    """The sampler alone, latents compared: batched item b == item b run by itself (fp32 noise only)."""
    sched = schedule.make_schedule(4)
    ts = torch.as_tensor(sched.timesteps)
    cond = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))

    def run(c: torch.Tensor, gens) -> torch.Tensor:
        return sampler.sample_ccsr(lambda x, i: tiny_model.eps(x, ts[i], c), sched, tuple(c.shape), 0.6667, 0.3333, gens)

    batched = run(cond, [torch.Generator().manual_seed(s) for s in (11, 12, 13)])
    single = torch.cat([run(cond[b : b + 1], torch.Generator().manual_seed(s)) for b, s in enumerate((11, 12, 13))])
    diff = (batched - single).abs().max().item()
    assert diff < 1e-4, diff  # measured 0 to a few 1e-6 (batched convolutions may sum in another order)
    assert not torch.equal(batched[0], batched[1])  # each item has its own seed's noise


@pytest.mark.parametrize("mode", ["none", "gaussian"])
def test_run_batch_equals_one_by_one(small, tiny_model, photos, mode):
    kw = dict(steps=4, scale=2, tile_diffusion=mode)
    if mode != "none":
        kw.update(tile_diffusion_size=128, tile_diffusion_stride=64)
    up = CCSRUpscaler(tiny_model, batch_size=4, auto_memory=False)
    params = [UpscaleParams(seed=s, **kw) for s in (1, 2, 3)]
    batched = up.run_batch(photos, params)
    single = [up.run(im, p) for im, p in zip(photos, params)]
    for b, s in zip(batched, single):
        assert b.seed == s.seed and b.image.size == s.image.size
        assert np.abs(_arr(b.image) - _arr(s.image)).max() <= 1  # uint8 rounding of fp32-noise differences
    assert not np.array_equal(_arr(batched[0].image), _arr(batched[1].image))


def test_batch_size_limits_the_network_batch(small, tiny_model, photos, monkeypatch):
    shapes = []
    eps = tiny_model.eps
    monkeypatch.setattr(tiny_model, "eps", lambda x, *a, **k: shapes.append(x.shape[0]) or eps(x, *a, **k))
    up = CCSRUpscaler(tiny_model, batch_size=2, auto_memory=False)
    steps = []
    out = up.run_batch(photos, [UpscaleParams(seed=s, steps=4, scale=2) for s in (1, 2, 3)],
                       progress=lambda s, t: steps.append(s))
    assert len(out) == 3 and shapes == [2, 2, 2, 1, 1, 1]
    assert steps == [1, 2, 3, 1, 2, 3]


def test_run_batch_refuses_mixed_requests(tiny_model, photos):
    up = CCSRUpscaler(tiny_model, auto_memory=False)
    with pytest.raises(ValueError, match="differ only in the seed"):
        up.run_batch(photos[:2], [UpscaleParams(seed=1, steps=4), UpscaleParams(seed=1, steps=5)])
    with pytest.raises(ValueError, match="one size"):
        up.run_batch([photos[0], photos[0].resize((32, 32))], [UpscaleParams(steps=4)] * 2)
    with pytest.raises(ValueError, match="one parameter set per image"):
        up.run_batch(photos, [UpscaleParams()])
