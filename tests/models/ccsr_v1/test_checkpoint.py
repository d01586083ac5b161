"""Checkpoint reading/writing/validation: formats, round trips and clear errors."""

from __future__ import annotations

import logging
import os
import random

import pytest
import safetensors.torch
import torch

from ccsr.errors import CheckpointError
from ccsr.models.ccsr_v1.checkpoint import load_state_dict, save_state_dict, validate_state_dict
from ccsr.models.ccsr_v1.random_weights import random_state_dict


@pytest.fixture(scope="module")
def tiny_sd(tiny_config):
    return random_state_dict(tiny_config, seed=5)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_round_trip(tiny_sd, tmp_path, suffix):
    path = save_state_dict(tiny_sd, tmp_path / f"m{suffix}")
    _same(load_state_dict(path), tiny_sd)


def test_ckpt_is_lightning_layout(tiny_sd, tmp_path):
    path = save_state_dict(tiny_sd, tmp_path / "m.ckpt")
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"state_dict"}


def test_safetensors_interop_with_library(tiny_sd, tmp_path):
    ours = save_state_dict(tiny_sd, tmp_path / "ours.safetensors")
    _same(safetensors.torch.load_file(ours), tiny_sd)
    theirs = tmp_path / "theirs.safetensors"
    half = {k: v.half() for k, v in tiny_sd.items()}
    safetensors.torch.save_file(half, theirs, metadata={"format": "pt"})
    _same(load_state_dict(theirs), half)


def test_safetensors_tensors_are_memory_mapped(tiny_sd, tmp_path):
    path = save_state_dict(tiny_sd, tmp_path / "m.safetensors")
    sd = load_state_dict(path)
    ptrs = {v.untyped_storage().data_ptr() for v in sd.values()}
    assert len(ptrs) == 1  # every tensor is a view of one mapping of the file, not a copy


def test_missing_key_is_named(tiny_sd, tiny_config):
    sd = dict(tiny_sd)
    del sd["model.diffusion_model.input_blocks.1.0.in_layers.2.bias"]
    del sd["first_stage_model.encoder.conv_in.bias"]
    with pytest.raises(CheckpointError, match=r"missing 2 of \d+ expected keys.*in_layers\.2\.bias"):
        validate_state_dict(sd, tiny_config)


def test_wrong_shape_is_reported(tiny_sd, tiny_config):
    sd = dict(tiny_sd)
    sd["control_model.zero_convs.0.0.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="zero_convs.0.0.bias"):
        validate_state_dict(sd, tiny_config)


def test_unexpected_reported_ignorable_ignored(tiny_sd, caplog):
    sd = dict(tiny_sd)
    sd["decoder_loss.discriminator.main.0.weight"] = torch.zeros(2)
    sd["decoder_loss.perceptual_loss.net.slice1.0.weight"] = torch.zeros(2)
    sd["posterior_mean_coef1_inter"] = torch.zeros(2)
    sd["model.diffusion_model.surprise.weight"] = torch.zeros(2)
    with caplog.at_level(logging.WARNING, logger="ccsr.models.ccsr_v1.checkpoint"):
        unexpected = validate_state_dict(sd)
    assert unexpected == ["model.diffusion_model.surprise.weight"]
    assert "surprise" in caplog.text and "decoder_loss" not in caplog.text


def test_sd_checkpoint_without_controlnet(tiny_sd, tmp_path):
    sd = {k: v for k, v in tiny_sd.items() if not k.startswith("control_model.")}
    path = save_state_dict(sd, tmp_path / "sd21.safetensors")
    with pytest.raises(CheckpointError, match="no ControlNet weights"):
        load_state_dict(path)


def test_garbage_files(tmp_path):
    rnd = tmp_path / "random.ckpt"
    rnd.write_bytes(random.Random(0).randbytes(4096))  # seeded: the same bytes on every run
    brace = tmp_path / "brace.ckpt"  # random bytes with a "{" ninth, as one file in 256 has
    brace.write_bytes(random.Random(1).randbytes(8) + b"{" + random.Random(2).randbytes(4087))
    txt = tmp_path / "notes.safetensors"
    txt.write_text("hello, this is not a checkpoint\n" * 20)
    tiny = tmp_path / "tiny.ckpt"
    tiny.write_bytes(b"abc")
    for p in (rnd, brace, txt, tiny):
        with pytest.raises(CheckpointError, match="not a checkpoint|too small"):
            load_state_dict(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "absent.safetensors")


def test_truncated_files(tiny_sd, tmp_path):
    st = save_state_dict(tiny_sd, tmp_path / "m.safetensors")
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(st)
    st.write_bytes(data[:100])  # header cut
    with pytest.raises(CheckpointError, match="truncated|not a safetensors"):
        load_state_dict(st)
    ck = save_state_dict(tiny_sd, tmp_path / "m.ckpt")
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_state_dict(ck)


class Payload:
    """A custom class: unpickling it would run arbitrary code paths."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_pickled_object_is_refused(tiny_sd, tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": dict(tiny_sd), "callbacks": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(path)


def test_plain_state_dict_ckpt_accepted(tiny_sd, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(dict(tiny_sd), path)
    _same(load_state_dict(path), tiny_sd)
