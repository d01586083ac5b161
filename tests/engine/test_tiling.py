import math

import pytest
import torch

from ccsr.errors import Cancelled
from ccsr.engine.tiling import (
    gaussian_weights, mix_decode, tile_origins, tiled_eps, uniform_weights, window_starts,
)


@pytest.mark.parametrize("length,tile,stride,expected", [
    (128, 64, 32, [0, 32, 64]),
    (100, 64, 32, [0, 32, 36]),
    (64, 64, 32, [0]),
    (40, 64, 32, [0]),
    (130, 64, 64, [0, 64, 66]),
    (192, 64, 64, [0, 64, 128]),
    (70, 64, 8, [0, 6]),
])
def test_window_starts(length, tile, stride, expected):
    assert window_starts(length, tile, stride) == expected


def test_tile_origins_order():
    assert tile_origins(96, 128, 64, 32) == [(0, 0), (0, 32), (0, 64), (32, 0), (32, 32), (32, 64)]


def test_gaussian_weights_formula():
    L = 16
    w = gaussian_weights(L)
    def g(k, mid):
        return math.exp(-(k - mid) ** 2 / L ** 2 / (2 * 0.01)) / math.sqrt(2 * math.pi * 0.01)
    for y in range(L):
        for x in range(L):
            assert w[y, x].item() == pytest.approx(g(y, L / 2) * g(x, (L - 1) / 2), rel=1e-12)
    # the asymmetry: x is symmetric, y is centred on L/2
    assert w[3, 0].item() == pytest.approx(w[3, -1].item(), rel=1e-12)
    assert w[0, 3] != pytest.approx(w[-1, 3].item(), rel=1e-3)
    assert torch.argmax(w[:, 0]).item() == L // 2
    assert torch.equal(uniform_weights(4), torch.ones(4, 4, dtype=torch.float64))


def eps_local(xb, cb, i):
    # a purely local function, so tiling must reproduce it exactly (up to fp rounding)
    return xb * 2 + cb - i


@pytest.mark.parametrize("weights", [gaussian_weights(8), uniform_weights(8)])
def test_blending_local_function(weights):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 20, 13, generator=g)
    c = torch.randn(1, 4, 20, 13, generator=g)
    out = tiled_eps(x, c, 3, eps_local, 8, 4, weights)
    torch.testing.assert_close(out, eps_local(x, c, 3), rtol=1e-5, atol=1e-5)


def test_constant_field_exact():
    x = torch.zeros(1, 4, 24, 16)
    out = tiled_eps(x, x, 0, lambda xb, cb, i: torch.full_like(xb, 0.25), 8, 3, gaussian_weights(8))
    assert torch.equal(out, torch.full_like(x, 0.25))


def test_batched_equals_unbatched():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 24, 20, generator=g)
    c = torch.randn(1, 4, 24, 20, generator=g)
    sizes = []
    def eps(xb, cb, i):
        sizes.append(xb.shape[0])
        # position-dependent so tiles differ: a non-local (tile-global) term
        return xb * xb.mean(dim=(1, 2, 3), keepdim=True) + cb
    a = tiled_eps(x, c, 0, eps, 8, 4, gaussian_weights(8), batch_size=1)
    n_tiles = len(sizes)
    sizes.clear()
    b = tiled_eps(x, c, 0, eps, 8, 4, gaussian_weights(8), batch_size=4)
    assert sizes == [4] * (n_tiles // 4) + ([n_tiles % 4] if n_tiles % 4 else [])
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_gaussian_and_uniform_differ_for_tile_global_fn():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 16, 16, generator=g)
    eps = lambda xb, cb, i: xb.mean(dim=(2, 3), keepdim=True).expand_as(xb)
    a = tiled_eps(x, x, 0, eps, 8, 4, gaussian_weights(8))
    b = tiled_eps(x, x, 0, eps, 8, 4, uniform_weights(8))
    assert not torch.allclose(a, b)


def test_cancel_before_batch():
    x = torch.zeros(1, 4, 16, 16)
    calls = []
    def eps(xb, cb, i):
        calls.append(1)
        return xb
    with pytest.raises(Cancelled):
        tiled_eps(x, x, 0, eps, 8, 4, uniform_weights(8), cancel=lambda: len(calls) == 2)
    assert len(calls) == 2


def test_too_small_latent_rejected():
    with pytest.raises(ValueError, match="8x8"):
        tiled_eps(torch.zeros(1, 4, 6, 16), torch.zeros(1, 4, 6, 16), 0, eps_local, 8, 4, uniform_weights(8))


def test_mix_decode_averages_fixed_tiles():
    z = torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(3))
    ref = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(4))
    # decode: nearest upsample of channel 0..2; fix: add the ref tile mean (tile-dependent)
    decode = lambda t: torch.nn.functional.interpolate(t[:, :3], scale_factor=8)
    fix = lambda pix, r: pix * 0 + r.mean()
    out = mix_decode(z, ref, 4, 2, decode, fix)
    # column block 0..15 is covered by tile x=0 only; 16..31 by tiles 0 and 2 (averaged)
    t0, t1 = ref[..., 0:32].mean(), ref[..., 16:48].mean()
    torch.testing.assert_close(out[0, 0, 0, 0], t0)
    torch.testing.assert_close(out[0, 0, 0, 20], (t0 + t1) / 2)
    torch.testing.assert_close(out[0, 0, 0, 40], t1)
