"""3x3 convolutions through NNPACK's Winograd kernels on a CPU.

Why: on a CPU every heavy stage of CCSR is 3x3 convolutions (two thirds of a
CCSR-v2 request's time), and PyTorch runs them as direct convolutions
(oneDNN) at about 200 GFLOP/s in fp32 on two cores. NNPACK, which PyTorch
ships, computes the same convolution by Winograd's F(6x6, 3x3) transform:
fewer multiplications for the same result up to rounding (a relative
difference of about 1e-5 per layer). Measured on a 2-core Xeon with AVX-512
(fp32, one image; the machine was shared and runs varied): 1.1-1.7x faster
from 64 px feature maps up (the VAE at 512 px, the UNet's 64 px level),
slower below 32 px and for a batch in one call; hence the size rule and one
call per image. Its workspace, about 3.5x the input, stays allocated after
the call, so one image over ``STRIPE_BYTES`` (64 MiB: a 128-channel 512 px
map is 128 MiB) runs as horizontal stripes with a one-row halo; the retained
workspace then stays about 220 MB whatever the request's size (whole maps
held 5 GB more on a 1024 px request).

On by default (setting ``winograd``). Whole CCSR-v2 requests 256 -> 512 as
separate processes (``bench_v2.py --also-direct``, 2-core Xeon, medians of
three, two runs): two-step 0.91-0.92x and one-step 0.87-0.88x the direct
path's time, for 0.1-0.35 GiB more peak memory. Before the stripes the large
VAE maps stayed direct and the two-step gain was 0.84-0.98x. CPUs without AVX-512, where
the direct fp32 rate halves while NNPACK's AVX2 kernels do not, may gain
more. Both CCSR models' goldens pass with every qualifying convolution
routed.

Only plain ``nn.Conv2d`` modules with a 3x3 kernel, stride 1, padding 1,
no dilation or groups qualify (:func:`enable` swaps their class; the weights
and state dict stay as they are). Each call decides again: float32 on the
CPU, no gradient, not inside ``torch.compile``, both sides of the feature map
at least ``MIN_SIDE``, at least ``MIN_CHANNELS`` in and out; anything else runs PyTorch's own convolution.
NNPACK needs AVX2 and FMA (x86-64) or NEON; where it is not available
nothing changes. Its thread pool takes torch's thread count at the first
NNPACK call and keeps it (a later ``torch.set_num_threads`` does not reach
it), so a worker sets its thread count before the first request, as
``OMP_NUM_THREADS`` does.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ccsr.engine.fallback import FallbackLog
from ccsr.engine.swap import swap_classes

log = logging.getLogger("ccsr.winograd")

#: Feature maps with a side below this run the direct convolution (NNPACK loses at 32 px).
MIN_SIDE = 64
#: Convolutions with fewer input or output channels run direct: the VAE's first
#: (3 -> 128) and last (128 -> 3) took 44 and 105 ms by NNPACK against 31 and 75 ms
#: direct at 512 px on a 2-core AMD EPYC (Winograd's transforms cost per channel,
#: its saving grows with input times output channels).
MIN_CHANNELS = 8
#: Larger inputs (one image) run as horizontal stripes of about this size: NNPACK's
#: workspace is about 3.5x its input and stays allocated (a whole 128-channel 1024 px
#: map would hold 1.8 GB; a 64 MiB stripe holds about 220 MB).
STRIPE_BYTES = 64 << 20
#: Fewer rows per stripe waste NNPACK's 8-row input tiles; only maps wider than
#: 4096 px at 128 channels (2048 px at 256) reach this floor.
MIN_STRIPE_ROWS = 32


@functools.cache
def available() -> bool:
    """NNPACK is compiled in and works on this CPU. Asking also initialises it:
    until then every NNPACK call fails."""
    try:
        return bool(torch.backends.nnpack.is_available())
    except Exception:  # pragma: no cover - builds without the backend module
        return False


def qualifies(conv: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` (no subclass): 3x3, stride 1, padding 1, without
    dilation or groups."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            stripe_bytes: int | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` by NNPACK, one image per call
    (NNPACK's batched path is slower than the direct convolution).

    With ``stripe_bytes``, an image larger than that runs as horizontal stripes
    of about that size, each with a one-row halo, written into one output:
    NNPACK keeps its workspace (about 3.5x its input) for the life of the
    process, so the stripe, not the largest feature map, sets what stays held."""
    weight = weight.contiguous()
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype)
    x = x.contiguous()
    c, h, w = x.shape[1:]
    rows = h if stripe_bytes is None else max(stripe_bytes // (c * w * x.element_size()), MIN_STRIPE_ROWS)
    if x.shape[0] == 1 and rows >= h:
        return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
    out = x.new_empty((x.shape[0], weight.shape[0], h, w))
    stripes = -(-h // rows)
    rows = -(-h // stripes)  # even stripes: no thin last one
    for i in range(x.shape[0]):
        for top in range(0, h, rows):
            bottom = min(top + rows, h)
            # Rows next to a stripe's edge need their neighbours: take one more
            # row each side (where there is one) and drop its output.
            lo, hi = max(top - 1, 0), min(bottom + 1, h)
            part = x[i : i + 1, :, lo:hi].contiguous()
            y = torch._nnpack_spatial_convolution(part, weight, bias, [1, 1])
            out[i : i + 1, :, top:bottom] = y[:, :, top - lo : bottom - lo]
    return out


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs large float32 CPU feature maps through :func:`conv3x3`."""

    min_side: int = MIN_SIDE
    min_channels: int = MIN_CHANNELS
    stripe_bytes: int = STRIPE_BYTES

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and weight.dtype == torch.float32
            and x.dim() == 4
            and min(x.shape[-2:]) >= self.min_side
            and min(x.shape[1], weight.shape[0]) >= self.min_channels
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.compiler.is_compiling()
        ):
            try:
                return conv3x3(x, weight, bias, self.stripe_bytes)
            except RuntimeError as err:
                # NNPACK refused this call (a size it does not take, a workspace it
                # could not allocate): the direct convolution gives the same result,
                # so the request goes on rather than failing on a speed-up.
                _report_fallback(tuple(x.shape), err)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


fallbacks = FallbackLog(log)


def _report_fallback(shape: tuple, err: RuntimeError) -> None:
    fallbacks("NNPACK refused a %s convolution (%s); it ran as a direct convolution", "x".join(map(str, shape)), err)


def enable(*modules: nn.Module) -> int:
    """Route every qualifying convolution of the modules through NNPACK;
    returns how many (0 where NNPACK is not available)."""
    if not available():
        log.info("NNPACK is not available on this CPU: convolutions stay direct")
        return 0
    return swap_classes(modules, lambda m: WinogradConv2d if qualifies(m) else None)


def disable(*modules: nn.Module) -> int:
    """Undo :func:`enable`; returns how many convolutions went back."""
    return swap_classes(modules, lambda m: nn.Conv2d if type(m) is WinogradConv2d else None)
