"""SRVGGNetCompact, the small Real-ESRGAN network (realesr-animevideov3,
realesr-general-x4v3 and its wdn variant).

Written for this project in plain PyTorch; parameter names follow the
official checkpoints: one ``body`` list of conv, activation, conv,
activation, ..., conv, so ``body.0`` is the first conv, ``body.1`` its PReLU
and ``body.{2*num_conv+2}`` the last conv.

All convolutions run at the input resolution; the last one emits
``3 * upscale**2`` channels that a pixel shuffle turns into the output, and
the nearest-neighbour upscaled input is added as a residual. That is why it
is an order of magnitude cheaper than RRDBNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SRVGGNetCompact(nn.Module):
    """Args: channels in/out (3), num_feat (64), num_conv (16 for animevideov3,
    32 for general-x4v3), upscale (4), act_type ("prelu", "relu" or "leakyrelu")."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ):
        super().__init__()
        self.scale = upscale
        self.upscale = upscale
        self.body = nn.ModuleList([nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), self._act(act_type, num_feat)])
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(self._act(act_type, num_feat))
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))

    @staticmethod
    def _act(act_type: str, num_feat: int) -> nn.Module:
        if act_type == "prelu":
            return nn.PReLU(num_parameters=num_feat)
        if act_type == "relu":
            return nn.ReLU(inplace=True)
        if act_type == "leakyrelu":
            return nn.LeakyReLU(negative_slope=0.1, inplace=True)
        raise ValueError(f"act_type must be prelu, relu or leakyrelu, got {act_type!r}")

    @property
    def size_multiple(self) -> int:
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.upscale)
        return out.add_(F.interpolate(x, scale_factor=self.upscale, mode="nearest"))
