"""The official key layout: coverage of the diffusers modules, sizes, random weights."""

from __future__ import annotations

import math

import torch

from ccsr.models.ccsr_v1.networks import keymap
from ccsr.models.ccsr_v1.networks.model import build_controlnet, build_unet, build_vae
from ccsr.models.ccsr_v1.checkpoint import load_state_dict
from ccsr.models.ccsr_v1.networks.config import CCSRConfig
from ccsr.models.ccsr_v1.random_weights import random_state_dict, write_random_checkpoint


def _targets(cfg, module):
    out = {}
    for e in keymap.entries(cfg):
        if e.module != module:
            continue
        if e.op == keymap.SPLIT_IN:
            c = cfg.unet.in_channels
            out["conv_in.weight"] = (e.shape[0], c, *e.shape[2:])
            out["controlnet_cond_embedding.weight"] = (e.shape[0], e.shape[1] - c, *e.shape[2:])
        elif e.op == keymap.CONV1X1:
            out[e.target] = e.shape[:2]
        else:
            out[e.target] = e.shape
    return out


def test_rules_cover_every_diffusers_parameter(tiny_config):
    with torch.device("meta"):
        mods = {
            "unet": build_unet(tiny_config.unet),
            "controlnet": build_controlnet(tiny_config.unet),
            "vae": build_vae(tiny_config.vae, tiny_config.scale_factor),
        }
    for name, mod in mods.items():
        want = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
        assert _targets(tiny_config, name) == want, name


def test_v1_parameter_counts():
    v1 = CCSRConfig.v1()
    per = {}
    for e in keymap.entries(v1):
        root = e.key.split(".")[0]
        per[root] = per.get(root, 0) + math.prod(e.shape)
    assert round(per["model"] / 1e6, 1) == 865.9
    assert round(per["control_model"] / 1e6, 1) == 363.2
    # 1.718 G in the official file, of which about 17.5 M are the training-only decoder_loss.*
    assert 1.69e9 < sum(per.values()) < 1.71e9
    assert tuple(next(e.shape for e in keymap.entries(v1) if e.key == "control_model.input_blocks.0.0.weight")) == (
        320, 8, 3, 3,
    )


def test_official_shapes_of_special_layers(tiny_config):
    shapes = {e.key: e.shape for e in keymap.entries(tiny_config)}
    assert shapes["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == (64, 64)  # linear
    assert shapes["first_stage_model.decoder.mid.attn_1.q.weight"] == (64, 64, 1, 1)
    assert shapes["cond_encoder.encoder.mid.attn_1.k.weight"] == (64, 64, 1, 1)
    assert shapes["control_model.zero_convs.0.0.weight"] == (64, 64, 1, 1)
    assert shapes["control_model.middle_block_out.0.weight"] == (128, 128, 1, 1)
    assert shapes["cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"] == (192, 64)
    assert shapes["cond_stage_model.model.logit_scale"] == ()
    assert "first_stage_model.encoder.conv_in.weight" in shapes
    assert "first_stage_model.quant_conv.weight" in shapes
    n_zero = sum(1 for k in shapes if k.startswith("control_model.zero_convs."))
    assert n_zero == 2 * (1 + 4 * 1 + 3)  # weight+bias for input conv, 4 levels x 1 block, 3 downsamples


def test_random_is_deterministic_and_seeded(tiny_config):
    a = random_state_dict(tiny_config, seed=0)
    b = random_state_dict(tiny_config, seed=0)
    c = random_state_dict(tiny_config, seed=1)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.diffusion_model.out.2.weight"], c["model.diffusion_model.out.2.weight"])
    for k in a:
        if k.startswith(("control_model.zero_convs.", "control_model.middle_block_out.")) and k.endswith("weight"):
            assert a[k].abs().max() > 0, k
    assert all(torch.isfinite(v).all() for v in a.values())
    assert "betas" in a and a["betas"].shape == (1000,)
    assert "betas" not in random_state_dict(tiny_config, include_schedule=False)


def test_random_fp16_and_streamed_file(tiny_config, tmp_path):
    sd16 = random_state_dict(tiny_config, seed=2, dtype=torch.float16)
    assert sd16["model.diffusion_model.out.2.weight"].dtype == torch.float16
    assert sd16["betas"].dtype == torch.float32
    path = write_random_checkpoint(tiny_config, tmp_path / "r.safetensors", seed=2, dtype=torch.float16)
    loaded = load_state_dict(path)
    assert loaded.keys() == sd16.keys()
    assert all(torch.equal(loaded[k], sd16[k]) for k in sd16)
