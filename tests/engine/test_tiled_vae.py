import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from ccsr.engine.tiled_vae import plan_tiles, tiled_decode, tiled_encode


def make_vae(attention: bool, groups: int = 16) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=groups,
        latent_channels=4, mid_block_add_attention=attention,
    ).eval()


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(1)
    return F.avg_pool2d(torch.rand(1, 3, 96, 48, generator=g) * 2 - 1, 5, 1, 2)


@pytest.fixture(scope="module")
def latent():
    return torch.randn(1, 4, 40, 20, generator=torch.Generator().manual_seed(2))


def test_plan_partitions_and_aligns():
    plan = plan_tiles(100, 64, 30, 7, align=4)
    covered = torch.zeros(100, 64, dtype=torch.int32)
    for t in plan:
        y0, y1, x0, x1 = t.outer
        iy0, iy1, ix0, ix1 = t.inner
        assert all(v % 4 == 0 for v in (y0 + iy0, x0 + ix0))
        assert iy0 <= 7 and ix0 <= 7 and (y1 - y0) - iy1 <= 7 and (x1 - x0) - ix1 <= 7
        covered[y0 + iy0 : y0 + iy1, x0 + ix0 : x0 + ix1] += 1
    assert torch.equal(covered, torch.ones_like(covered))
    assert len(plan) == 4 * 3


@pytest.mark.parametrize("groups", [16, 32])
def test_exact_without_attention_when_margin_covers_receptive_field(image, latent, groups):
    # Convolutions are local and GroupNorm statistics are aggregated over tile
    # interiors, so with a wide margin tiling is exact up to float rounding.
    vae = make_vae(False, groups)
    with torch.no_grad():
        ref_z = vae.encode(image).latent_dist.mode()
        ref_x = vae.decode(latent).sample
    z = tiled_encode(vae, image, tile_size=32, pad=24)
    x = tiled_decode(vae, latent, tile_size=14, pad=12)
    assert z.shape == ref_z.shape and x.shape == ref_x.shape
    assert (z - ref_z).abs().max() < 1e-4
    assert (x - ref_x).abs().max() < 1e-4


def test_norm_statistics_matter(image):
    # Guard for the test above: per-tile statistics (what naive tiling does) are far off.
    vae = make_vae(False)
    with torch.no_grad():
        ref = vae.encode(image).latent_dist.mode()
        naive = torch.cat([vae.encode(image[:, :, :, :24]).latent_dist.mode(),
                           vae.encode(image[:, :, :, 24:]).latent_dist.mode()], dim=3)
    tiled = tiled_encode(vae, image, tile_size=32, pad=24)
    assert (naive - ref).abs().mean() > 10 * (tiled - ref).abs().mean()


def test_close_with_attention(image, latent):
    # Attention becomes per-tile; measured: mean |diff| ~3% of the output std, max ~20-35%.
    vae = make_vae(True)
    with torch.no_grad():
        ref_z = vae.encode(image).latent_dist.mode()
        ref_x = vae.decode(latent).sample
    z = tiled_encode(vae, image, tile_size=32, pad=16)
    x = tiled_decode(vae, latent, tile_size=12, pad=8)
    for out, ref in ((z, ref_z), (x, ref_x)):
        diff = (out - ref).abs()
        assert diff.mean() < 0.05 * ref.std()
        assert diff.max() < 0.5 * ref.std()


def test_small_inputs_take_plain_path(image, latent):
    vae = make_vae(True)
    with torch.no_grad():
        assert torch.equal(tiled_encode(vae, image, tile_size=32, pad=32), vae.encode(image).latent_dist.mode())
        assert torch.equal(tiled_decode(vae, latent, tile_size=40, pad=0), vae.decode(latent).sample)


def test_offload_gives_same_result(latent):
    vae = make_vae(True)
    a = tiled_decode(vae, latent, tile_size=12, pad=4)
    b = tiled_decode(vae, latent, tile_size=12, pad=4, offload="cpu")
    assert torch.equal(a, b)


def test_encoder_needs_divisible_size():
    vae = make_vae(False)
    with pytest.raises(ValueError, match="divisible by 2"):
        tiled_encode(vae, torch.zeros(1, 3, 97, 80), tile_size=16, pad=4)


class _NoFloat64(torch.utils._python_dispatch.TorchDispatchMode):
    """Fails any op that makes a float64 tensor: MPS has no float64."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                raise AssertionError(f"{func} made a float64 tensor")
        return out


def test_tiled_paths_never_use_float64(image, latent):
    vae = make_vae(True)
    with _NoFloat64():
        tiled_encode(vae, image, tile_size=32, pad=16)
        tiled_decode(vae, latent, tile_size=12, pad=8)


def test_statistics_stay_exact_for_large_offsets(latent):
    # Activations far from zero: float32 sum-of-squares would cancel badly; the
    # per-tile mean/variance combination must not.
    vae = make_vae(False)
    z = latent * 0.01 + 300.0
    with torch.no_grad():
        ref = vae.decode(z).sample
    x = tiled_decode(vae, z, tile_size=14, pad=12)
    assert (x - ref).abs().max() < 1e-3 * ref.abs().max()
