"""Hand a CPU network's weight pages back to the kernel once it has had its turn.

Why: safetensors maps a weights file into memory instead of copying it, so a
network loaded on the CPU in the file's dtype holds its weights as pages of a
private file mapping: they count in the process's resident set once touched,
and the kernel's page cache holds the same pages. A CCSR-v2 request uses its
networks one after another (text encoder, VAE encoder, then per pass the
ControlNet and the UNet, then the VAE decoder). Dropping each network's pages
when it is done (``madvise(MADV_DONTNEED)``) keeps only the network at work
resident: fp32 SD-2.1 weights are 6.6 GB, the UNet alone 3.5 GB. The next use
maps the pages again from the page cache (minor faults, no copy, no disk read
unless the kernel reclaimed them under memory pressure, when it reads them
from the file again).

Only ranges inside private mappings of ``.safetensors`` files (read from
``/proc/self/maps``) are ever dropped: anonymous memory (where the call would
zero it) and tensors that were copied or converted on loading are left alone.
Weights are never written, so the file's contents are theirs. Linux only;
elsewhere nothing happens.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
from typing import Iterable, Optional

import torch
from torch import nn

from ccsr.engine.memory import weight_bytes

_MADV_DONTNEED = 4  # <sys/mman.h>
_PAGE = mmap.PAGESIZE
_libc: Optional[ctypes.CDLL] = None


def _madvise() -> Optional[ctypes.CDLL]:
    global _libc
    if _libc is None and platform.system() == "Linux":
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        except (OSError, AttributeError):
            return None
    return _libc


def weight_mappings(suffix: str = ".safetensors") -> list[tuple[int, int]]:
    """[start, end) of this process's private mappings of files ending in ``suffix``."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.readlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[1][3] == "p" and parts[5].rstrip("\n").endswith(suffix):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end))
    return out


def _ranges(tensors: Iterable[torch.Tensor]) -> list[tuple[int, int]]:
    storages = [t.untyped_storage() for t in tensors if t.device.type == "cpu" and t.numel()]
    spans = sorted((st.data_ptr(), st.data_ptr() + st.nbytes()) for st in storages)
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def release(*modules: nn.Module) -> int:
    """Drop the file-mapped weight pages of ``modules`` from the resident set;
    returns the bytes advised (0 when nothing is file-mapped, or not on Linux)."""
    return release_tensors([t for m in modules for t in (*m.parameters(), *m.buffers())])


def release_tensors(tensors: Iterable[torch.Tensor]) -> int:
    """:func:`release` for loose tensors (a file's tensors once they were
    converted to another dtype: their pages are not needed again)."""
    libc = _madvise()
    if libc is None:
        return 0
    maps = weight_mappings()
    if not maps:
        return 0
    done = 0
    for s, e in _ranges(tensors):
        for ms, me in maps:
            lo, hi = max(s, ms), min(e, me)
            lo = -(-lo // _PAGE) * _PAGE  # whole pages inside the range only: a neighbour may share an edge page
            hi = hi // _PAGE * _PAGE
            if hi > lo and libc.madvise(lo, hi - lo, _MADV_DONTNEED) == 0:
                done += hi - lo
    return done


def release_as_it_runs(module: nn.Module, min_bytes: int = 64 << 20) -> int:
    """Hand back each large part of ``module`` (a block holding ``min_bytes``
    of weights or more, split further while its own parts are that large) right
    after that part's forward pass: a network's weights are then resident a
    block at a time, not whole (a UNet's 3.5 GB in blocks of a few hundred MB).
    Returns the number of parts hooked. Only file-mapped pages are affected
    (:func:`release`); the hooks cost a read of /proc/self/maps per part."""

    def hook(m: nn.Module, args: object, out: object) -> None:
        release(m)

    hooked = 0
    stack = [(module, True)]
    while stack:
        m, top = stack.pop()
        if isinstance(m, (nn.ModuleList, nn.ModuleDict)):  # no forward of their own: their parts run
            stack.extend((c, False) for c in m.children() if weight_bytes(c) >= 1 << 20)
        elif top or any(weight_bytes(c) >= min_bytes for c in m.children()):
            stack.extend((c, False) for c in m.children() if weight_bytes(c) >= min_bytes)
        else:
            m.register_forward_hook(hook)
            hooked += 1
    return hooked
