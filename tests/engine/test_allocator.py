"""keep_freed_memory: large freed CPU buffers are reused instead of faulted in
again (checked in a child process: the setting is process-wide), and the
upscaler turns it on for CPU models only when asked."""

from __future__ import annotations

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
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
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
