"""Per-stage wall time of a request, measured where the device has finished
its queued work (CUDA and MPS run asynchronously: without a synchronise the
time lands in whichever stage next waits on the device)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextmanager
def stage_timer(timings: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    """Add the block's seconds to ``timings[name]`` (summed over the items of a batch)."""
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
