"""Linear layers through oneDNN's matrix multiplication on a CPU.

Why: on a CPU ``F.linear`` in fp32 goes to MKL's GEMM. PyTorch also ships
oneDNN's, reachable as ``torch.ops.mkldnn._linear_pointwise`` (the op that
``torch.compile`` emits for CPU linears). On a 2-core AMD EPYC (Zen 4,
AVX-512 on 256-bit datapaths; fp32, one request's shapes: the UNet's and
ControlNet's projections and feed-forwards at 64 px and the text encoder's
[77, 1024] layers) oneDNN took 0.86x MKL's time over all of them, 0.73x on
the text encoder's (``benchmarks/bench_linear.py``). The result equals ``F.linear``'s up to rounding (a
different summation order: about 1e-7 relative). On Intel it was not
measured faster, so the setting's ``auto`` turns it on for AMD CPUs only
(:mod:`ccsr.engine.cpu_kernels`).

:func:`enable` swaps the class of plain ``nn.Linear`` modules; the weights
and state dict stay as they are. Each call decides again: float32 on the
CPU, no gradient, not inside ``torch.compile``; anything else, or an error
from the op (a build without it), runs ``F.linear``.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ccsr.engine.fallback import FallbackLog
from ccsr.engine.swap import swap_classes

log = logging.getLogger("ccsr.linear")


@functools.cache
def available() -> bool:
    """This PyTorch build has oneDNN and its CPU linear op."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except Exception:  # pragma: no cover - builds without the mkldnn namespace
        return False


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` by oneDNN (no fused activation)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinear(nn.Linear):
    """An ``nn.Linear`` that runs float32 CPU inputs through :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and w.dtype == torch.float32
            and x.dim() >= 2
            and x.numel() > 0
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
            and not torch.compiler.is_compiling()
        ):
            try:
                return linear(x, w, b)
            except RuntimeError as err:
                # Same result by the other library: a speed-up never fails a request.
                _report_fallback(tuple(x.shape), err)
        return F.linear(x, w, b)


fallbacks = FallbackLog(log)


def _report_fallback(shape: tuple, err: RuntimeError) -> None:
    fallbacks("oneDNN refused a %s linear (%s); it ran as F.linear", "x".join(map(str, shape)), err)


def enable(*modules: nn.Module) -> int:
    """Route every plain ``nn.Linear`` of the modules through oneDNN; returns
    how many (0 where the op is missing)."""
    if not available():
        log.info("oneDNN's linear op is not in this PyTorch build: linears stay on F.linear")
        return 0
    return swap_classes(modules, lambda m: OneDNNLinear if type(m) is nn.Linear else None)


def disable(*modules: nn.Module) -> int:
    """Undo :func:`enable`; returns how many linears went back."""
    return swap_classes(modules, lambda m: nn.Linear if type(m) is OneDNNLinear else None)
