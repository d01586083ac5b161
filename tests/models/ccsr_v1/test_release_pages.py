"""Releasing the pages of a memory-mapped checkpoint that the model no longer reads."""

from __future__ import annotations

import sys

import pytest
import torch

from ccsr.models.ccsr_v1.checkpoint import load_state_dict, release_mapped_pages, save_state_dict

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps and madvise are Linux-only")


def _mapped_rss_kb(path) -> int:
    """Resident kB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    import os

    target, total, inside = os.path.realpath(path), 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                inside = line.rstrip().endswith(target)
            elif inside and line.startswith("Rss:"):
                total += int(head[1])
    return total


@linux_only
def test_mapped_tensor_pages_are_released_and_read_back_intact(tmp_path):
    path = tmp_path / "w.safetensors"
    big = torch.arange(1 << 20, dtype=torch.float32)  # 4 MiB: many whole pages
    save_state_dict({"big": big, "small": torch.ones(3)}, path)
    sd = load_state_dict(path, validate=False)
    assert float(sd["big"].sum()) == float(big.sum())  # faults every page in
    before = _mapped_rss_kb(path)
    released = release_mapped_pages(path, [sd["big"]])
    assert released >= (4 << 20) - 2 * 4096 * 16  # all but the partial pages at the ends
    assert _mapped_rss_kb(path) < before - 3 * 1024  # the pages left this process
    assert torch.equal(sd["big"], big)  # and a later read gets the file's data back


@linux_only
def test_in_memory_tensors_are_never_advised(tmp_path):
    """MADV_DONTNEED would zero anonymous memory: only the named file's mapping is touched."""
    path = tmp_path / "w.safetensors"
    save_state_dict({"x": torch.ones(1 << 20)}, path)
    sd = load_state_dict(path, validate=False)
    other = torch.full((1 << 20,), 7.0)
    assert release_mapped_pages(path, [other]) == 0
    assert bool((other == 7).all())
    assert release_mapped_pages(tmp_path / "not-mapped.safetensors", [sd["x"]]) == 0
    assert bool((sd["x"] == 1).all())


@linux_only
def test_from_file_releases_the_text_tower_and_keeps_the_networks(tiny_checkpoint, tiny_config, monkeypatch):
    """The text tower is read once for the context, then offered for release;
    tensors the networks use as they are never are, and the model still runs."""
    from ccsr.models.ccsr_v1 import checkpoint
    from ccsr.models.ccsr_v1.networks.model import CCSRModel

    offered: list[torch.Tensor] = []
    real = checkpoint.release_mapped_pages

    def spy(path, tensors, ranges=None):
        tensors = list(tensors)
        offered.extend(tensors)
        return real(path, tensors, ranges)

    monkeypatch.setattr(checkpoint, "release_mapped_pages", spy)
    model = CCSRModel.from_file(tiny_checkpoint, tiny_config)
    sd = load_state_dict(tiny_checkpoint, validate=False)
    text = {k for k in sd if k.startswith("cond_stage_model.")}
    offered_ptrs = {t.data_ptr() for t in offered}
    assert len(offered) >= len(text) > 0
    used = {t.data_ptr() for t in model.state_dict().values()}
    assert not offered_ptrs & used  # nothing the networks read as is
    x = torch.randn(1, 4, 8, 8)
    ref = CCSRModel.from_state_dict({k: v.clone() for k, v in sd.items()}, tiny_config)
    assert torch.equal(model.eps(x, torch.tensor(500), x), ref.eps(x, torch.tensor(500), x))


@linux_only
def test_from_file_weights_own_their_memory(tiny_checkpoint, tiny_config):
    """No weight stays a view of the file mapping (reclaimable pages, re-read at every
    evaluation on a machine short of memory), and the values are the file's."""
    from ccsr.models.ccsr_v1.networks.model import CCSRModel
    from ccsr.models.ccsr_v1.checkpoint import is_mapped, mapped_ranges

    model = CCSRModel.from_file(tiny_checkpoint, tiny_config)
    sd = load_state_dict(tiny_checkpoint, validate=False)  # a second mapping of the same file
    ranges = mapped_ranges(tiny_checkpoint)
    assert ranges
    weights = model.state_dict()
    assert not [k for k, t in weights.items() if is_mapped(t, ranges)]
    from ccsr.models.ccsr_v1.networks import keymap

    copied = [e for e in keymap.entries(tiny_config) if e.op == keymap.COPY and e.module in ("unet", "controlnet", "vae")]
    assert len(copied) > 50
    for e in copied:
        assert torch.equal(weights[f"{e.module}.{e.target}"], sd[e.key]), e.key
