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
the call, so inputs over ``MAX_INPUT_BYTES`` (64 MiB: a 128-channel 512 px
map is 128 MiB) keep the direct convolution (without that cap a 1024 px
request held 5 GB more).

Off by default (setting ``winograd``): the layer-level gain mostly does not
reach a whole request. A two-step CCSR-v2 request 256 -> 512 took 0.84-0.98x
the direct path's time as separate processes (``bench_v2.py --also-direct``)
and 0.96x in a warm engine (``bench_winograd.py``), for 0.2-1.2 GiB more peak
memory. CPUs without AVX-512, where the direct fp32 rate halves while NNPACK's
AVX2 kernels do not, may gain more. Both CCSR models' goldens pass with every
qualifying convolution routed.

Only plain ``nn.Conv2d`` modules with a 3x3 kernel, stride 1, padding 1,
no dilation or groups qualify (:func:`enable` swaps their class; the weights
and state dict stay as they are). Each call decides again: float32 on the
CPU, no gradient, not inside ``torch.compile``, both sides of the feature map
at least ``MIN_SIDE``, one image at most ``MAX_INPUT_BYTES``; anything else
runs PyTorch's own convolution. NNPACK needs AVX2 and FMA (x86-64) or NEON;
where it is not available nothing changes.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("ccsr.winograd")

#: Feature maps with a side below this run the direct convolution (NNPACK loses at 32 px).
MIN_SIDE = 64
#: Larger inputs (one image) run the direct convolution: NNPACK's workspace is about
#: 3.5x the input and stays allocated (a 128-channel 1024 px map would hold 1.8 GB).
MAX_INPUT_BYTES = 64 << 20


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


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` by NNPACK, one image per call
    (NNPACK's batched path is slower than the direct convolution)."""
    weight = weight.contiguous()
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype)
    x = x.contiguous()
    if x.shape[0] == 1:
        return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
    return torch.cat([torch._nnpack_spatial_convolution(x[i : i + 1], weight, bias, [1, 1]) for i in range(x.shape[0])])


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs large float32 CPU feature maps through :func:`conv3x3`."""

    min_side: int = MIN_SIDE
    max_input_bytes: int = MAX_INPUT_BYTES

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and weight.dtype == torch.float32
            and x.dim() == 4
            and min(x.shape[-2:]) >= self.min_side
            and x[0].numel() * 4 <= self.max_input_bytes
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.compiler.is_compiling()
        ):
            return conv3x3(x, weight, bias)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def enable(*modules: nn.Module) -> int:
    """Route every qualifying convolution of the modules through NNPACK;
    returns how many (0 where NNPACK is not available)."""
    if not available():
        log.info("NNPACK is not available on this CPU: convolutions stay direct")
        return 0
    n = 0
    for module in modules:
        for m in module.modules():
            if qualifies(m):
                m.__class__ = WinogradConv2d
                n += 1
    return n


def disable(*modules: nn.Module) -> int:
    """Undo :func:`enable`; returns how many convolutions went back."""
    n = 0
    for module in modules:
        for m in module.modules():
            if type(m) is WinogradConv2d:
                m.__class__ = nn.Conv2d
                n += 1
    return n
