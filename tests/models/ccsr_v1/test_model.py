"""CCSRModel: shapes, numerics that must follow ldm, ControlNet split, text context, dtypes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ccsr.models.ccsr_v1.networks import text as text_mod
from ccsr.models.ccsr_v1.networks.model import CCSRModel, GroupNorm32
from ccsr.models.ccsr_v1.checkpoint import load_state_dict
from ccsr.models.ccsr_v1.random_weights import random_state_dict
from ccsr.models.ccsr_v1.networks.text import empty_prompt_tokens


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 64, 64, generator=g)
    x = torch.randn(2, 4, 8, 8, generator=g)
    return img, x


def test_shapes_and_finite(tiny_model, inputs):
    img, x = inputs
    cond = tiny_model.encode_condition(img)
    assert cond.shape == (2, 4, 8, 8) and cond.dtype == torch.float32
    ctx = tiny_model.text_context()
    assert ctx.shape == (1, 77, 64)
    e = tiny_model.eps(x, torch.tensor([999, 500]), cond, ctx)
    assert e.shape == x.shape and torch.isfinite(e).all()
    out = tiny_model.decode(cond)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    assert tiny_model.scale_factor == pytest.approx(0.18215)
    assert tiny_model.unexpected_keys == []


def test_eps_is_batched(tiny_model, inputs):
    img, x = inputs
    cond = tiny_model.encode_condition(img)
    t = torch.tensor([999, 347])
    both = tiny_model.eps(x, t, cond)
    one = torch.cat([tiny_model.eps(x[i : i + 1], t[i : i + 1], cond[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(both, one, atol=1e-5, rtol=1e-5)


def test_condition_is_mode_times_scale(tiny_model, inputs):
    img, _ = inputs
    vae = tiny_model.vae
    with torch.no_grad():
        mean = vae.encode(img * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(tiny_model.encode_condition(img), mean * 0.18215)


def test_decode_divides_by_scale_and_is_unclamped(tiny_model, inputs):
    _, x = inputs
    with torch.no_grad():
        ref = tiny_model.vae.decode(x * 3 / 0.18215).sample
    out = tiny_model.decode(x * 3)
    torch.testing.assert_close(out, ref)


def test_controlnet_matters(tiny_model, inputs):
    img, x = inputs
    cond = tiny_model.encode_condition(img)
    t = torch.tensor([600, 600])
    a = tiny_model.eps(x, t, cond)
    b = tiny_model.eps(x, t, torch.zeros_like(cond))
    assert (a - b).abs().max() > 1e-3


def test_controlnet_first_conv_split_is_exact(tiny_model, tiny_checkpoint, inputs):
    """eps with the official 8-channel conv over cat[x, c] equals the split conv_in + cond conv."""
    img, x = inputs
    sd = load_state_dict(tiny_checkpoint)
    w8, b8 = sd["control_model.input_blocks.0.0.weight"], sd["control_model.input_blocks.0.0.bias"]
    assert w8.shape[1] == 8
    cond = tiny_model.encode_condition(img)
    t = torch.tensor([999, 100])
    split = tiny_model.eps(x, t, cond)

    manual = copy.deepcopy(tiny_model)
    cat_holder = {}

    class CatConv(nn.Module):
        def forward(self, h):
            return F.conv2d(torch.cat([h, cat_holder["c"]], dim=1), w8, b8, padding=1)

    class Zero(nn.Module):
        def forward(self, c):
            return torch.zeros((), dtype=c.dtype)

    manual.controlnet.conv_in = CatConv()
    manual.controlnet.controlnet_cond_embedding = Zero()
    cat_holder["c"] = cond
    ref = manual.eps(x, t, cond)
    torch.testing.assert_close(split, ref, atol=2e-5, rtol=1e-5)
    assert (split - tiny_model.eps(x, t, torch.zeros_like(cond))).abs().max() > 1e-3


def test_timestep_embedding_is_cos_then_sin(tiny_model):
    t = torch.tensor([0.0, 347.0, 999.0])
    dim = tiny_model.config.unet.model_channels
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None] * freqs[None]
    ref = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    for net in (tiny_model.unet, tiny_model.controlnet):
        torch.testing.assert_close(net.time_proj(t), ref)


def test_norm_eps_and_upcast(tiny_model):
    unet = tiny_model.unet
    r = unet.down_blocks[0].resnets[0]
    assert isinstance(r.norm1, GroupNorm32) and r.norm1.eps == 1e-5 and r.norm1.num_groups == 32
    assert unet.down_blocks[0].attentions[0].norm.eps == 1e-6
    assert unet.down_blocks[0].attentions[0].transformer_blocks[0].norm1.eps == 1e-5
    assert tiny_model.vae.decoder.conv_norm_out.eps == 1e-6
    x = torch.randn(1, 64, 4, 4, dtype=torch.float16)
    norm = copy.deepcopy(r.norm1).half()
    ref = F.group_norm(x.float(), 32, norm.weight.float(), norm.bias.float(), 1e-5).half()
    assert torch.equal(norm(x), ref)


def _reference_text(sd, cfg):
    """Independent OpenCLIP-style text forward (nn.MultiheadAttention, LND, -inf mask)."""
    p = "cond_stage_model.model."
    w = cfg.text.width
    tokens = empty_prompt_tokens()
    x = sd[p + "token_embedding.weight"][tokens] + sd[p + "positional_embedding"]
    x = x.permute(1, 0, 2)
    mask = torch.full((77, 77), float("-inf")).triu(1)
    for i in range(cfg.text.layers - 1):
        s = f"{p}transformer.resblocks.{i}."
        mha = nn.MultiheadAttention(w, cfg.text.heads)
        mha.in_proj_weight.data = sd[s + "attn.in_proj_weight"].clone()
        mha.in_proj_bias.data = sd[s + "attn.in_proj_bias"].clone()
        mha.out_proj.weight.data = sd[s + "attn.out_proj.weight"].clone()
        mha.out_proj.bias.data = sd[s + "attn.out_proj.bias"].clone()
        h = F.layer_norm(x, (w,), sd[s + "ln_1.weight"], sd[s + "ln_1.bias"], 1e-5)
        x = x + mha(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = F.layer_norm(x, (w,), sd[s + "ln_2.weight"], sd[s + "ln_2.bias"], 1e-5)
        h = F.gelu(F.linear(h, sd[s + "mlp.c_fc.weight"], sd[s + "mlp.c_fc.bias"]))
        x = x + F.linear(h, sd[s + "mlp.c_proj.weight"], sd[s + "mlp.c_proj.bias"])
    x = x.permute(1, 0, 2)
    return F.layer_norm(x, (w,), sd[p + "ln_final.weight"], sd[p + "ln_final.bias"], 1e-5)


def test_text_context_once_and_correct(tiny_config, monkeypatch):
    assert empty_prompt_tokens()[0, :3].tolist() == [49406, 49407, 0]
    assert empty_prompt_tokens().shape == (1, 77) and empty_prompt_tokens()[0, 2:].eq(0).all()
    calls = []
    orig = text_mod.TextTower.forward

    def counting(self, tokens):
        calls.append(tokens.clone())
        return orig(self, tokens)

    monkeypatch.setattr(text_mod.TextTower, "forward", counting)
    cfg = tiny_config.replace(text=tiny_config.text.__class__(width=64, layers=3, heads=1))
    sd = random_state_dict(cfg, seed=7)
    model = CCSRModel.from_state_dict(sd, cfg)
    a, b = model.text_context(), model.text_context()
    assert len(calls) == 1 and a is b
    assert not any(isinstance(m, text_mod.TextTower) for m in model.modules())
    torch.testing.assert_close(a, _reference_text(sd, cfg), atol=1e-5, rtol=1e-5)
    # penultimate: the last block's weights do not matter
    sd2 = dict(sd)
    sd2["cond_stage_model.model.transformer.resblocks.2.mlp.c_fc.weight"] = torch.randn(256, 64)
    assert torch.equal(CCSRModel.from_state_dict(sd2, cfg).text_context(), a)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_fp32(tiny_model, tiny_checkpoint, inputs, dtype):
    img, x = inputs
    half = CCSRModel.from_file(tiny_checkpoint, dtype=dtype)
    assert half.dtype == dtype and half.unet.conv_in.weight.dtype == dtype
    assert half.text_context().dtype == dtype
    cond32 = tiny_model.encode_condition(img)
    cond = half.encode_condition(img)
    assert cond.dtype == torch.float32  # outputs follow the input dtype
    t = torch.tensor([999, 347])
    e32, e = tiny_model.eps(x, t, cond32), half.eps(x, t, cond32)
    tol = 0.05 if dtype == torch.float16 else 0.15
    assert torch.isfinite(e).all() and (e - e32).abs().max() < tol * e32.abs().max()
    d32, d = tiny_model.decode(cond32), half.decode(cond32)
    assert torch.isfinite(d).all() and (d - d32).abs().max() < tol * d32.abs().max()
    assert (cond - cond32).abs().max() < tol * cond32.abs().max()
