"""Nearest 2x upsampling + 3x3 convolution as four 2x2 convolutions
(engine/upsample.py): the same numbers up to rounding, only where it applies,
and both CCSR engines use it on a CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ccsr.engine import upsample


def _reference(x, weight, bias):
    return F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, bias, padding=1)


@pytest.mark.parametrize("n, c, o, h, w, bias", [(1, 8, 8, 5, 7, True), (2, 4, 6, 1, 1, False), (1, 16, 8, 12, 9, True)])
def test_the_four_phases_equal_upsampling_then_convolving(n, c, o, h, w, bias):
    g = torch.Generator().manual_seed(h * w)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(o, c, 3, 3, generator=g)
    b = torch.randn(o, generator=g) if bias else None
    ref, got = _reference(x, weight, b), upsample.upsample_conv3x3(x, weight, b)
    assert got.shape == ref.shape == (n, o, 2 * h, 2 * w)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), (got - ref).abs().max()


def _upsampler(channels=8, **kw):
    from diffusers.models.upsampling import Upsample2D

    torch.manual_seed(0)
    return Upsample2D(channels, use_conv=True, **kw).eval()


def test_enable_swaps_diffusers_upsamplers_and_keeps_their_weights():
    m = _upsampler()
    x = torch.randn(1, 8, 6, 10)
    with torch.no_grad():
        before = m(x)
        keys = list(m.state_dict())
        assert upsample.enable(m) == 1 and type(m).__name__ == "FusedUpsample2D"
        assert upsample.enable(m) == 0  # once
        after = m(x)
        assert list(m.state_dict()) == keys
        assert torch.allclose(after, before, rtol=1e-5, atol=1e-5) and not torch.equal(after, before)
        assert upsample.disable(m) == 1 and type(m).__name__ == "Upsample2D"
        assert torch.equal(m(x), before)


def test_where_it_does_not_apply_diffusers_forward_runs_unchanged():
    import copy

    m = _upsampler()
    half = copy.deepcopy(m).to(torch.bfloat16)
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        odd = m(x, output_size=(9, 10))  # the UNet's forward_upsample_size case: not 2x
        in_bf16 = half(x.bfloat16())
        upsample.enable(m, half)
        assert torch.equal(m(x, output_size=(9, 10)), odd)
        assert torch.equal(half(x.bfloat16()), in_bf16)
    xg = x.clone().requires_grad_(True)
    upsample.disable(m)
    ref = m(xg)
    upsample.enable(m)
    out = m(xg)
    assert torch.equal(out, ref) and out.requires_grad
    plain = _upsampler()
    plain.use_conv = False
    assert not upsample.qualifies(plain) and upsample.enable(plain) == 0


def test_both_engines_fuse_the_upsamplers_on_the_cpu(v2_upscaler, tiny_checkpoint, tiny_config_path):
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler

    def fused(*modules):
        return sum(type(m).__name__ == "FusedUpsample2D" for mod in modules for m in mod.modules())

    assert fused(v2_upscaler.nets.vae) == len(v2_upscaler.nets.vae.config.block_out_channels) - 1
    assert fused(v2_upscaler.nets.unet) > 0
    v1 = CCSRUpscaler.from_checkpoint(tiny_checkpoint, config=tiny_config_path, device="cpu")
    assert fused(v1.model.vae) > 0 and fused(v1.model.unet) > 0


def test_below_side_keeps_larger_outputs_on_diffusers_forward():
    """``below_side`` (AMD's rule, engine/cpu_kernels.py): outputs whose smaller
    side reaches it interpolate and convolve as diffusers does."""
    m = _upsampler()
    small, large = torch.randn(1, 8, 6, 10), torch.randn(1, 8, 8, 10)
    with torch.no_grad():
        ref_small, ref_large = m(small), m(large)
        assert upsample.enable(m, below_side=16) == 1 and m.below_side == 16
        assert torch.equal(m(large), ref_large)  # 16 x 20 output: diffusers' forward
        got = m(small)  # 12 x 20: the phases
        assert torch.allclose(got, ref_small, rtol=1e-5, atol=1e-5) and not torch.equal(got, ref_small)
        assert upsample.enable(m) == 0 and m.below_side is None  # enabling again resets the rule
        assert not torch.equal(m(large), ref_large)
        assert upsample.disable(m) == 1 and "below_side" not in vars(m)
