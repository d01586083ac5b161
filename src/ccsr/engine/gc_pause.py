"""Pause Python's cyclic garbage collector while a model is imported and built.

Why: importing diffusers and transformers and building a UNet, ControlNet, VAE
and text encoder creates a few hundred thousand long-lived Python objects and
no garbage worth collecting. CPython's generational collector runs after
every 700 net allocations and keeps walking those objects as they age: about
0.8 s of a 3.4 s CCSR-v2 load on a 2-core Xeon (measured with the collector
off: 2.5-2.6 s), all on one core while the other waits. Reference counting
still frees everything that is not in a cycle; the collector runs again as
soon as the block ends.

The collector's switch is process-wide: another thread's cyclic garbage
waits for the end of a load too. Overlapping loads in several threads leave
it on once the one that found it on has finished.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic collection inside the block; the collector's previous state
    (on, or already off) comes back after it, also on an exception. Nests.
    Also a decorator (``@paused_gc()``), as every contextmanager is."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
