"""Change the class of matching submodules in place.

Why: the CPU speed-ups (:mod:`ccsr.engine.winograd`, :mod:`ccsr.engine.upsample`)
replace a module's ``forward`` without rebuilding the network, so the weights,
the state dict and any hooks stay where they are, and undoing it is swapping back.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn


def swap_classes(modules: tuple[nn.Module, ...], new_class: Callable[[nn.Module], Optional[type]]) -> int:
    """Give every submodule of ``modules`` for which ``new_class`` returns a class
    that class; returns how many changed."""
    n = 0
    for module in modules:
        for m in module.modules():
            cls = new_class(m)
            if cls is not None:
                m.__class__ = cls
                n += 1
    return n
