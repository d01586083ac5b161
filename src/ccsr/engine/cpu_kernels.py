"""Which kernels a diffusion model's networks use on a CPU, chosen once at load.

Why: the fastest fp32 kernel for a convolution, an upsampler or a linear
layer depends on the CPU, not only on the shapes. Measured on two 2-core
VMs (fp32, one image; ``benchmarks/bench_upsample.py``, the engine's own
shapes):

- Intel Xeon (AVX-512 on 512-bit units): 3x3 convolutions of 64 px maps and
  up are faster by NNPACK's Winograd kernels than oneDNN's direct ones
  (:mod:`ccsr.engine.winograd`), and the VAE's upsamplers faster still as
  four 2x2 convolutions (:mod:`ccsr.engine.upsample`). MKL's and oneDNN's
  linears were alike.
- AMD EPYC (Zen 4: AVX-512 on 256-bit datapaths, where NNPACK's AVX2
  kernels run at the full rate): Winograd wins by more, and there it also
  beats the 2x2 phases (512 channels 64 -> 128 px: 0.13 against 0.18 s;
  256 channels 256 -> 512 px: 0.58 against 0.73 s; the UNet's 640 channels
  32 -> 64 px: 0.070 against 0.080 s), while the phases still win on maps
  under ``winograd.MIN_SIDE``, where Winograd is not used. oneDNN's linear
  took 0.86x MKL's time over a request's shapes (:mod:`ccsr.engine.linear`;
  ``benchmarks/bench_linear.py``, ``results/linear-cpu-amd.json`` and
  ``upsample-cpu-amd.json``).

So ``auto`` (the settings' default) picks by the CPU's vendor; ``on`` and
``off`` force a choice for a CPU not measured here. Everything is rounding:
each model's goldens pass with every combination.

Independent of the CPU: the VAE's SiLU runs in place (its input is always a
fresh group-norm output there, and the VAE has no time embedding that the
UNet's blocks share), saving a full-size write per resnet.
"""

from __future__ import annotations

import logging
from typing import Iterable, Literal, Optional

import torch
from torch import nn

from ccsr.engine import linear, upsample, winograd
from ccsr.engine.device import cpu_vendor

log = logging.getLogger("ccsr.cpu_kernels")

Choice = Literal["auto", "on", "off"]
AMD = "AuthenticAMD"


def fused_upsample_below(choice: Choice, winograd_on: bool, vendor: str) -> Optional[int]:
    """The output side under which upsamplers run as 2x2 phases: None for every
    size, 0 for none. ``auto`` on AMD with Winograd on: only maps Winograd does
    not take (under ``winograd.MIN_SIDE``)."""
    if choice == "off":
        return 0
    if choice == "on" or not winograd_on or vendor != AMD:
        return None
    return winograd.MIN_SIDE


def onednn_linear_on(choice: Choice, vendor: str) -> bool:
    """``auto``: on AMD only (measured faster there, not on Intel)."""
    return choice == "on" or (choice == "auto" and vendor == AMD)


def vae_silu_in_place(vae: nn.Module) -> int:
    """Make the VAE's ``nn.SiLU`` modules work in place; returns how many.
    Only the VAE: the UNet's resnets apply theirs to a time embedding they share."""
    n = 0
    for m in vae.modules():
        if type(m) is nn.SiLU and not m.inplace:
            m.inplace = True
            n += 1
    return n


def speed_up(networks: Iterable[nn.Module], vae: Optional[nn.Module], device: torch.device, dtype: torch.dtype, *,
             winograd_on: bool = True, fused_upsample: Choice = "auto", onednn_linear: Choice = "auto",
             vendor: Optional[str] = None) -> dict[str, int]:
    """Choose the CPU kernels of ``networks`` (every network of the model; the
    VAE among them) for fp32 inference on ``device``; returns how many modules
    each choice changed. Nothing changes on a GPU but the VAE's in-place SiLU.
    ``vendor``: the CPU's (default: this machine's, :func:`cpu_vendor`)."""
    nets = tuple(networks)
    done = {"silu_in_place": vae_silu_in_place(vae) if vae is not None else 0}
    if device.type != "cpu":
        return done
    vendor = cpu_vendor() if vendor is None else vendor
    fp32 = dtype == torch.float32
    use_winograd = winograd_on and fp32
    done["winograd"] = winograd.enable(*nets) if use_winograd else 0
    # Swapped in whatever the dtype: each call checks for fp32 (engine/upsample.py).
    below = fused_upsample_below(fused_upsample, use_winograd and winograd.available(), vendor)
    done["fused_upsample"] = upsample.enable(*nets, below_side=below) if below != 0 else 0
    done["onednn_linear"] = linear.enable(*nets) if fp32 and onednn_linear_on(onednn_linear, vendor) else 0
    log.debug("CPU kernels (%s, %s): %s", vendor or "unknown vendor", dtype, done)
    return done
