"""CCSRConfig: official YAML parsing, v1 sizes, inference from tensor shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ccsr.errors import CheckpointError
from ccsr.models.ccsr_v1.networks import keymap
from ccsr.models.ccsr_v1.networks.config import CCSRConfig
from ccsr.models.ccsr_v1.random_weights import random_state_dict

PACKAGED = Path(__file__).resolve().parents[3] / "src" / "ccsr" / "models" / "ccsr_v1" / "configs"


def test_tiny_yaml_values(tiny_config):
    u, v, t = tiny_config.unet, tiny_config.vae, tiny_config.text
    assert (u.model_channels, u.channel_mult, u.num_res_blocks) == (64, (1, 2, 2, 2), 1)
    assert u.attention_resolutions == (4, 2, 1) and u.num_head_channels == 64
    assert (u.context_dim, u.transformer_depth, u.hint_channels) == (64, 1, 4)
    assert u.use_linear_in_transformer
    assert (v.ch, v.ch_mult, v.num_res_blocks, v.z_channels, v.embed_dim) == (32, (1, 2, 2, 2), 1, 4, 4)
    assert v.attn_resolutions == ()
    assert (t.width, t.layers, t.heads, t.context_length, t.vocab_size) == (64, 2, 1, 77, 49408)
    assert tiny_config.scale_factor == pytest.approx(0.18215)
    assert (tiny_config.linear_start, tiny_config.linear_end) == (0.00085, 0.012)
    assert (tiny_config.t_max, tiny_config.t_min) == (0.6667, 0.3333)


def test_packaged_tiny_matches_fixture(tiny_config):
    assert CCSRConfig.tiny() == tiny_config


def test_v1_yaml_without_text_sizes_is_vit_h14():
    cfg = CCSRConfig.from_yaml(PACKAGED / "ccsr-v1.yaml")
    assert cfg == CCSRConfig.v1()
    assert (cfg.text.width, cfg.text.layers, cfg.text.heads) == (1024, 24, 16)
    assert cfg.unet.level_channels == [320, 640, 1280, 1280]
    assert [cfg.unet.heads(c) for c in cfg.unet.level_channels] == [5, 10, 20, 20]


def test_from_state_dict_equals_yaml(tiny_config):
    sd = random_state_dict(tiny_config, seed=1)
    assert CCSRConfig.from_state_dict(sd) == tiny_config


def test_from_state_dict_v1_shapes_only():
    v1 = CCSRConfig.v1()
    sd = {e.key: torch.empty(e.shape, device="meta") for e in keymap.entries(v1)}
    assert CCSRConfig.from_state_dict(sd) == v1


def test_from_state_dict_missing_core_key(tiny_config):
    sd = random_state_dict(tiny_config, include_schedule=False)
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(CheckpointError, match="model.diffusion_model.out.2.weight"):
        CCSRConfig.from_state_dict(sd)


def test_bad_yaml_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("params:\n  unet_config: 3\n")
    with pytest.raises(CheckpointError, match="unet_config"):
        CCSRConfig.from_yaml(p)
    p.write_text("{ not yaml: [")
    with pytest.raises(CheckpointError, match="not valid YAML"):
        CCSRConfig.from_yaml(p)


@pytest.mark.parametrize(
    "old, new, needle",
    [
        ("attn_resolutions: []", "attn_resolutions: [16]", "attn_resolutions"),
        ("embed_dim: 4", "embed_dim: 8", "embed_dim"),
        ("ch: 32", "ch: thirty-two", "bad value"),
    ],
)
def test_unsupported_or_bad_yaml_values_are_checkpoint_errors(tmp_path, tiny_config_path, old, new, needle):
    text = tiny_config_path.read_text()
    assert old in text
    p = tmp_path / "edited.yaml"
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(CheckpointError, match=needle) as exc:
        CCSRConfig.from_yaml(p)
    assert str(exc.value).startswith(str(p))


def test_text_width_must_match_context_dim(tiny_config):
    from dataclasses import replace

    with pytest.raises(CheckpointError, match="context_dim"):
        tiny_config.replace(text=replace(tiny_config.text, width=tiny_config.text.width * 2))
