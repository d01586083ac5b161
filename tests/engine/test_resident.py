"""Weight pages of a file-mapped CPU network leave the resident set when it
is done, and come back, unchanged, on its next use; nothing else is touched."""

from __future__ import annotations

import platform

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ccsr.engine import resident

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="madvise and /proc/self: Linux only")

MB = 1 << 20


def _mapped_linear(tmp_path, n: int = 2048) -> nn.Linear:
    torch.manual_seed(0)
    net = nn.Linear(n, n)  # 16 MiB of fp32 weights
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    mapped = nn.Linear(n, n, device="meta")
    mapped.load_state_dict(load_file(str(path)), assign=True)
    return mapped.requires_grad_(False)


def test_a_mapped_network_leaves_the_resident_set_and_comes_back_unchanged(tmp_path):
    net = _mapped_linear(tmp_path)
    x = torch.randn(4, net.in_features)
    before = net(x)
    assert resident.weight_mappings(), "safetensors maps the file (this test relies on it)"
    touched = resident.resident_bytes()["file"]
    advised = resident.release(net)
    assert advised >= 15 * MB
    assert touched - resident.resident_bytes()["file"] >= 12 * MB  # other processes' mappings may move a little
    assert torch.equal(net(x), before)  # mapped again from the page cache: the same numbers
    assert resident.release(net, net) >= 15 * MB  # the same storage twice: one range


def test_memory_that_is_not_a_mapped_weights_file_is_never_dropped(tmp_path):
    torch.manual_seed(0)
    plain = nn.Linear(1024, 1024).requires_grad_(False)  # anonymous memory: madvise would zero it
    converted = _mapped_linear(tmp_path, 1024).to(torch.float64)  # a copy made on loading
    w, c = plain.weight.clone(), converted.weight.clone()
    assert resident.release(plain, converted) == 0
    assert torch.equal(plain.weight, w) and torch.equal(converted.weight, c)
