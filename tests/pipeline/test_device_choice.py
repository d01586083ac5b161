"""Device and dtype auto-selection (CUDA, then MPS, then CPU; fp16 off the CPU)."""

from __future__ import annotations

import pytest
import torch

from ccsr.errors import InvalidParameter
from ccsr.pipeline.upscaler import pick_device, pick_dtype


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    assert pick_device(None).type == "cpu"


def test_asking_for_a_missing_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(InvalidParameter, match="device: CUDA"):
        pick_device("cuda:1")
    with pytest.raises(InvalidParameter, match="device: MPS"):
        pick_device("mps")


def test_dtype_auto_and_names():
    assert pick_dtype("auto", torch.device("cpu")) is torch.float32
    assert pick_dtype(None, torch.device("cuda")) is torch.float16
    assert pick_dtype("auto", torch.device("mps")) is torch.float16
    assert pick_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert pick_dtype(torch.float16, torch.device("cpu")) is torch.float16
    with pytest.raises(InvalidParameter, match="dtype"):
        pick_dtype("int8", torch.device("cpu"))


def test_unknown_or_absent_device_names_are_clear_errors(monkeypatch):
    with pytest.raises(InvalidParameter, match="device: expected auto, cpu"):
        pick_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(InvalidParameter, match="cuda:3 does not exist"):
        pick_device("cuda:3")
