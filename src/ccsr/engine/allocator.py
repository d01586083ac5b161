"""Keep large freed CPU buffers in the process instead of handing them back to the kernel.

Why: glibc serves every allocation above its mmap threshold (at most 32 MiB
with its default dynamic threshold) with fresh pages from the kernel and
unmaps them again on free. A CPU request allocates activation buffers of that
size in every network call (a full-size 512 px VAE decoder layer alone holds
67-134 MB), so each call faults its buffers in again, page by page: one
full-size 256 -> 512 request on a 2-core AMD EPYC took 11.4 M minor page
faults and 35 s of system time. With the thresholds raised the freed buffers
stay in the heap and the next call reuses them: the same request took 141.9 s
instead of 172.1 s (0.44 M faults, 5.6 s of system time), for a peak resident
set of 7.17 GB instead of 6.67 GB (``benchmarks/results/vs-official-cpu-amd-full.json``
has the whole-process figures).

Linux with glibc only; elsewhere nothing changes. The setting ``tune_malloc``
turns it off.

:func:`use_huge_pages` is the other half: PyTorch backs CPU tensors of 2 MiB
or more with transparent huge pages when ``THP_MEM_ALLOC_ENABLE`` is set, so a
fresh buffer costs one page fault per 2 MiB instead of one per 4 KiB. PyTorch
reads that variable once, at its first CPU tensor allocation, so it must be
set before anything allocates one: the package sets it on import (setting
``huge_pages``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger("ccsr.allocator")

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: The variable PyTorch's CPU allocator reads (c10's alloc_cpu) to madvise large buffers MADV_HUGEPAGE.
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"
#: Where Linux says whether transparent huge pages are on (always, madvise or never).
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"

#: Allocations below this come from the heap (and are reused) rather than from mmap.
MMAP_THRESHOLD = 1 << 30
#: Free memory at the top of the heap is given back only above this much.
TRIM_THRESHOLD = 1 << 31


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module
    docstring); returns whether they were set. Calling it again is harmless."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok
    except (OSError, AttributeError):
        return False
    if not ok:
        log.debug("glibc refused the malloc thresholds; left as they were")
    return ok


def use_huge_pages(enabled: bool = True) -> bool:
    """Ask PyTorch to back large CPU tensors with transparent huge pages (see
    the module docstring); returns whether this process's allocations get them.

    Sets ``THP_MEM_ALLOC_ENABLE=1`` unless the environment already says
    otherwise, so child processes (model workers) inherit it. PyTorch reads it
    at its first CPU tensor allocation (importing torch alone makes none;
    importing diffusers does), and it does something only where the kernel
    has huge pages on ("always" or "madvise"). Why: a full-size CCSR-v2
    one-step request on a 2-core VM took 0.35-0.38x the page faults, 0.6-0.9x
    the system time and 0.94-0.98x the wall time with it (two A/B runs;
    ``benchmarks/bench_process.py``, ``benchmarks/results/process-cpu.json``)."""
    if not enabled or platform.system() != "Linux" or not thp_available():
        return False
    os.environ.setdefault(HUGE_PAGES_ENV, "1")
    return os.environ[HUGE_PAGES_ENV] not in ("", "0")


def thp_available(path: str = THP_MODE_FILE) -> bool:
    """Whether the kernel gives transparent huge pages to memory that asks for them."""
    try:
        with open(path) as fh:
            mode = fh.read()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode
