"""keep_freed_memory: large freed CPU buffers are reused instead of faulted in
again (checked in a child process: the setting is process-wide), and the
upscaler turns it on for CPU models only when asked."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from ccsr.engine import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Convolutions over 64 MiB activations, three times after a warm-up; prints the page faults of the three.
CHILD = """
import resource, sys, torch
torch.set_num_threads(1)
if sys.argv[1] == "tuned":
    from ccsr.engine.allocator import keep_freed_memory
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
x = torch.randn(1, 16, 1024, 1024)
with torch.no_grad():
    conv(conv(x))
    start = faults()
    for _ in range(3):
        y = torch.nn.functional.silu(conv(conv(x)))
        del y
print(faults() - start)
"""


def _faults(mode: str) -> int:
    # 4 KiB pages, so that the fault counts measure reuse alone (huge pages would cut them too).
    env = {**os.environ, allocator.HUGE_PAGES_ENV: "0"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt: Linux with glibc only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    default, tuned = _faults("default"), _faults("tuned")
    buffers = 3 * 3 * 64 * 2**20 // 4096  # pages of the nine 64 MiB outputs
    assert default >= buffers, default  # measured 344,102: every buffer faulted in again
    assert tuned < default / 5, (tuned, default)  # measured 17 to 32,781: reused from the heap


def test_elsewhere_it_changes_nothing(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert allocator.keep_freed_memory() is False


@pytest.mark.parametrize("tune, calls", [(True, 1), (False, 0)])
def test_the_upscaler_tunes_the_allocator_for_cpu_models_when_asked(tiny_checkpoint, tiny_config_path, monkeypatch,
                                                                     tune, calls):
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler

    seen = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: seen.append(1) or True)
    CCSRUpscaler.from_checkpoint(tiny_checkpoint, config=tiny_config_path, device="cpu", tune_malloc=tune)
    assert len(seen) == calls


# Imports ccsr (or torch first), then fills a 64 MiB tensor; prints the variable and the huge pages it got.
HUGE_CHILD = """
import os, re, sys
if sys.argv[1] == "torch-first":
    import torch
import ccsr
import torch
x = torch.ones(16 << 20)
huge = sum(int(k) for k in re.findall(r"AnonHugePages:\\s+(\\d+) kB", open("/proc/self/smaps").read()))
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge)
"""
LINUX_THP = platform.system() == "Linux" and allocator.thp_available()
MADVISE_ONLY = LINUX_THP and "[madvise]" in open(allocator.THP_MODE_FILE).read()


def _huge_child(mode: str = "ccsr-first", **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in (allocator.HUGE_PAGES_ENV, "CCSR_HUGE_PAGES")}
    out = subprocess.run([sys.executable, "-c", HUGE_CHILD, mode], capture_output=True, text=True, timeout=120,
                         env={**clean, **env})
    assert out.returncode == 0, out.stderr
    var, huge = out.stdout.split()
    return var, int(huge)


@pytest.mark.skipif(not LINUX_THP, reason="transparent huge pages: Linux with them on")
def test_importing_ccsr_gives_large_tensors_huge_pages():
    var, huge = _huge_child()
    assert var == "1"
    assert huge >= 32 * 1024, huge  # kB: at least half of the 64 MiB tensor (2 MiB aligned) is huge pages


@pytest.mark.skipif(not MADVISE_ONLY, reason="needs THP in madvise mode (with 'always' every process gets them)")
def test_huge_pages_setting_off_leaves_the_allocator_alone():
    var, huge = _huge_child(CCSR_HUGE_PAGES="0")
    assert var == "None" and huge == 0


@pytest.mark.skipif(not MADVISE_ONLY, reason="needs THP in madvise mode (with 'always' every process gets them)")
def test_a_variable_set_by_hand_wins():
    var, huge = _huge_child(THP_MEM_ALLOC_ENABLE="0")
    assert var == "0" and huge == 0


@pytest.mark.skipif(not LINUX_THP, reason="transparent huge pages: Linux with them on")
def test_torch_imported_first_still_gets_them_before_its_first_tensor():
    # PyTorch reads the variable at its first CPU allocation, not at import.
    var, huge = _huge_child("torch-first")
    assert var == "1" and huge >= 32 * 1024, (var, huge)


def test_huge_pages_are_only_asked_for_where_the_kernel_has_them(monkeypatch, tmp_path):
    mode = tmp_path / "enabled"
    for text, on in (("always madvise [never]", False), ("always [madvise] never", True), ("[always] madvise never", True)):
        mode.write_text(text + "\n")
        assert allocator.thp_available(str(mode)) is on
    assert allocator.thp_available(str(tmp_path / "missing")) is False
    monkeypatch.delenv(allocator.HUGE_PAGES_ENV, raising=False)
    monkeypatch.setattr(allocator, "thp_available", lambda: False)
    assert allocator.use_huge_pages() is False and allocator.HUGE_PAGES_ENV not in os.environ
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(allocator, "thp_available", lambda: True)
    assert allocator.use_huge_pages() is False and allocator.HUGE_PAGES_ENV not in os.environ
