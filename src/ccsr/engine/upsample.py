"""Nearest 2x upsampling followed by a 3x3 convolution, as four 2x2 convolutions.

Why: the VAE decoder doubles its feature maps three times, each time as
``conv3x3(nearest_upsample(x))``; those three convolutions are 0.7 of the
decoder's 2.5 TFLOP at 512 px. An output pixel of that pair reads only a 2x2
window of ``x`` (its 3x3 window over the upsampled map covers two rows and
two columns of ``x``), so each of the four output phases (even or odd row,
even or odd column) is a 2x2 convolution of ``x`` with taps summed from the
3x3 kernel: 16 multiplications per four outputs instead of 36, and the 4x
upsampled map is never written. All four phases run as one convolution with
four times the output channels, interleaved into the output. The result
equals the original up to rounding (the summed taps: a relative difference
of about 4e-7), much closer than the Winograd convolutions of
:mod:`ccsr.engine.winograd`.

Measured on a 2-core Xeon (fp32, one image, medians of five;
``benchmarks/bench_upsample.py``): 512 channels 64 -> 128 px 0.15 s against
0.18 s (upsample plus NNPACK's Winograd convolution, the default), 128 -> 256
px 0.50 s against 0.67 s, 256 channels 256 -> 512 px 0.55 s against 0.98 s.

:func:`enable` swaps the class of diffusers' ``Upsample2D`` modules that
interpolate (nearest, 2x) and then convolve (3x3, stride 1, padding 1), with
no norm; their weights and state dict stay as they are. Each call decides
again: float32 on the CPU, no gradient, not inside ``torch.compile``, an
output twice the input's size; anything else runs diffusers' own forward.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ccsr.engine.swap import swap_classes

log = logging.getLogger("ccsr.upsample")


def phase_weights(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 kernel [O, I, 3, 3] -> the four phases' 2x2 kernels [4 * O, I, 2, 2],
    in the order (even row, even column), (even, odd), (odd, even), (odd, odd).

    Over ``x`` padded by one, an even output row 2i reads rows i-1 (tap 0) and
    i (taps 1 and 2) of ``x``; an odd one, 2i+1, reads rows i (taps 0 and 1)
    and i+1 (tap 2). Columns alike."""
    w = weight.float()
    rows = (torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2),
            torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2))
    phases = []
    for r in rows:
        phases.append(torch.stack([r[..., 0], r[..., 1] + r[..., 2]], -1))
        phases.append(torch.stack([r[..., 0] + r[..., 1], r[..., 2]], -1))
    return torch.cat(phases, 0).to(weight.dtype)


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)``
    computed as four 2x2 convolutions of ``x`` (see the module docstring)."""
    n, _, h, w = x.shape
    o = weight.shape[0]
    # padding 1 with a 2x2 kernel: (h + 1) x (w + 1) outputs; phase (a, b) is the window at offset (a, b).
    y = F.conv2d(x, phase_weights(weight), None if bias is None else bias.repeat(4), padding=1)
    out = x.new_empty((n, o, 2 * h, 2 * w))
    grid = out.view(n, o, h, 2, w, 2)
    k = 0
    for a in (0, 1):
        for b in (0, 1):
            grid[:, :, :, a, :, b] = y[:, k * o : (k + 1) * o, a : a + h, b : b + w]
            k += 1
    return out


def _conv(module: nn.Module) -> nn.Module:
    return module.conv if getattr(module, "name", "conv") == "conv" else module.Conv2d_0


def qualifies(module: nn.Module) -> bool:
    """A diffusers ``Upsample2D`` (by its attributes: no import of diffusers here)
    that interpolates, then convolves 3x3 with stride 1 and padding 1, without a norm."""
    if type(module).__name__ != "Upsample2D":
        return False
    if not (getattr(module, "use_conv", False) and getattr(module, "interpolate", False)
            and not getattr(module, "use_conv_transpose", True) and getattr(module, "norm", None) is None):
        return False
    conv = _conv(module)
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


class _Fused:
    """The forward of a swapped ``Upsample2D`` (mixed into a subclass made per original class)."""

    #: Outputs whose smaller side is this or more run diffusers' own forward
    #: (set per module by :func:`enable`); None: every size runs as phases.
    below_side: int | None = None

    def forward(self, hidden_states: torch.Tensor, output_size=None, *args, **kwargs) -> torch.Tensor:
        x = hidden_states
        conv = _conv(self)
        n, c, h, w = x.shape if x.dim() == 4 else (0, 0, 0, 0)
        if (
            x.dim() == 4
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and conv.weight.dtype == torch.float32
            and c == self.channels
            and (self.below_side is None or 2 * min(h, w) < self.below_side)
            and (output_size is None or tuple(output_size) == (2 * h, 2 * w))
            and not args
            and kwargs.get("scale") is None
            and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
            and not torch.compiler.is_compiling()
        ):
            return upsample_conv3x3(x, conv.weight, conv.bias)
        return super().forward(hidden_states, output_size, *args, **kwargs)


_SUBCLASSES: dict[type, type] = {}


def _fused_class(m: nn.Module) -> type | None:
    if isinstance(m, _Fused) or not qualifies(m):
        return None
    cls = type(m)
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"Fused{cls.__name__}", (_Fused, cls), {"__module__": __name__})
    return _SUBCLASSES[cls]


def enable(*modules: nn.Module, below_side: int | None = None) -> int:
    """Run every qualifying upsampler of the modules as 2x2 convolutions;
    returns how many. ``below_side``: only outputs whose smaller side is below
    it (larger ones interpolate and convolve as diffusers does, where that
    convolution is faster, see :mod:`ccsr.engine.cpu_kernels`)."""
    for module in modules:
        for m in module.modules():
            if qualifies(m) or isinstance(m, _Fused):
                m.below_side = below_side
    return swap_classes(modules, _fused_class)


def disable(*modules: nn.Module) -> int:
    """Undo :func:`enable`; returns how many upsamplers went back."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, _Fused):
                m.__dict__.pop("below_side", None)
    return swap_classes(modules, lambda m: type(m).__mro__[2] if isinstance(m, _Fused) else None)
