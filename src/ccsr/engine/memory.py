"""What the memory plans of every model share: how much a device has free,
how many bytes a loaded model holds, and how to measure a peak.

A model's own plan (which stages it has, how their activations grow) lives in
its folder (``ccsr.models.ccsr_v1.memory`` for CCSR v1); the numbers it
needs from the device come from here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional

import torch

#: Fraction of the free memory a plan may use (the rest absorbs allocator fragmentation).
HEADROOM = 0.85
#: Peak activation bytes per unit of the SD-2 blocks both CCSR models use, measured
#: on a CPU in fp32 (tiny and full-size architecture) by benchmarks/bench_memory.py
#: and rounded up (results in benchmarks/results/memory-calibration-cpu.json).
K_NET = 40.0  # UNet + ControlNet: per latent pixel x first width x element size
K_DEC = 14.0  # VAE decoder, untiled: per output pixel x first width x element size
K_ENC = 10.0  # VAE encoder, untiled: per input pixel x first width x element size


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers a loaded model holds."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


# ---------------------------------------------------------------- free memory
def _meminfo_available() -> Optional[int]:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def _cgroup_available() -> Optional[int]:
    """Room left under a cgroup v2 memory limit (containers), if there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def free_memory(device: torch.device) -> Optional[int]:
    """Bytes a request may still allocate on ``device`` (None when unknown).

    CUDA: the driver's free memory plus what torch's caching allocator holds
    unused, capped by ``torch.cuda.set_per_process_memory_fraction`` where torch
    exposes it. CPU: MemAvailable, capped by a cgroup limit. MPS: the
    recommended working set minus what the driver has allocated.
    """
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        free += torch.cuda.memory_reserved(device) - allocated
        get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        if get_fraction is not None:
            free = min(free, int(get_fraction(device) * total) - allocated)
        return max(0, free)
    if device.type == "mps":
        try:
            return max(0, torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return None
    values = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return max(0, min(values)) if values else None


# ---------------------------------------------------------------- measurement
def status_kib(key: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    if m is None:
        raise OSError(f"{key} not in /proc/self/status")
    return int(m.group(1))


def measure_peak(fn: Callable[[], Any], device: torch.device) -> tuple[Any, int]:
    """Run ``fn`` and return (its result, the peak bytes it added on ``device``).

    CUDA: torch's allocator peak over what was allocated before. CPU (Linux):
    the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)
    over its resident set before; raises OSError where that is not available.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device) - before
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    out = fn()
    return out, (status_kib("VmHWM") - before) * 1024
