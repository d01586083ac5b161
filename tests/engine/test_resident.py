"""Weight pages of a file-mapped CPU network leave the resident set when it
is done, and come back, unchanged, on its next use; nothing else is touched."""

from __future__ import annotations

import platform

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ccsr.engine import resident
from ccsr.engine.memory import status_kib

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="madvise and /proc/self: Linux only")

MB = 1 << 20


def _file_resident() -> int:
    """Bytes of file pages this process holds."""
    return status_kib("RssFile") * 1024


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
    touched = _file_resident()
    advised = resident.release(net)
    assert advised >= 15 * MB
    assert touched - _file_resident() >= 12 * MB  # other processes' mappings may move a little
    assert torch.equal(net(x), before)  # mapped again from the page cache: the same numbers
    assert resident.release(net, net) >= 15 * MB  # the same storage twice: one range


def test_memory_that_is_not_a_mapped_weights_file_is_never_dropped(tmp_path):
    torch.manual_seed(0)
    plain = nn.Linear(1024, 1024).requires_grad_(False)  # anonymous memory: madvise would zero it
    converted = _mapped_linear(tmp_path, 1024).to(torch.float64)  # a copy made on loading
    w, c = plain.weight.clone(), converted.weight.clone()
    assert resident.release(plain, converted) == 0
    assert torch.equal(plain.weight, w) and torch.equal(converted.weight, c)


def test_a_files_tensors_copied_to_another_dtype_give_their_pages_back(tmp_path):
    """What loading in bf16 from an fp32 file does (ccsr_v2.networks._into): the
    file's pages leave as their copies are made, not when the whole file does."""
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(4 << 20)}, str(path))  # 16 MiB
    sd = load_file(str(path))
    copy = sd["w"].to(torch.bfloat16)  # reads every page of the file
    touched = _file_resident()
    assert resident.release_tensors(list(sd.values())) >= 15 * MB
    assert touched - _file_resident() >= 12 * MB
    assert torch.equal(sd["w"].to(torch.bfloat16), copy)


class _Blocks(nn.Module):
    def __init__(self, n: int = 1024, device: str = "cpu"):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(n, n, device=device) for _ in range(4))  # no forward of its own

    def forward(self, x):  # noqa: ANN001
        for layer in self.layers:
            x = layer(x)
        return x


def test_a_network_is_resident_a_block_at_a_time_during_its_forward_pass(tmp_path):
    torch.manual_seed(0)
    net = _Blocks()
    path = tmp_path / "blocks.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    mapped = _Blocks(device="meta")
    mapped.load_state_dict(load_file(str(path)), assign=True)
    mapped.requires_grad_(False)
    x = torch.randn(2, 1024)
    with torch.no_grad():
        expected = net(x)
    assert resident.release_as_it_runs(mapped, min_bytes=2 * MB) == 4  # each 4 MiB layer, inside the ModuleList
    resident.release(mapped)
    before = _file_resident()
    with torch.no_grad():
        out = mapped(x)
    # 16 MiB of weights ran; at most about one layer's pages (4 MiB) are still resident
    assert _file_resident() - before < 6 * MB
    assert torch.allclose(out, expected)
