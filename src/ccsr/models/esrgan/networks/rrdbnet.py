"""RRDBNet, the ESRGAN generator behind RealESRGAN_x4plus, x2plus, RealESRNet
and the 6-block anime model.

Written for this project in plain PyTorch. Module and parameter names follow
the official checkpoints (``conv_first``, ``body.N.rdbK.convM``,
``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) so the
released ``.pth`` files load with ``strict=True`` and no key renaming.

The network works at the input resolution through the residual-in-residual
dense blocks, then doubles the size twice (nearest neighbour + 3x3 conv).
The x2 (and x1) variants fold the input into channels first
(pixel-unshuffle), so the same x4 tail produces a x2 (x1) output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Residual scaling of the dense blocks, as trained (ESRGAN paper: beta = 0.2).
RESIDUAL_SCALE = 0.2
LEAKY_SLOPE = 0.2


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs; each sees the block input and every earlier output."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = _conv(num_feat, num_grow_ch)
        self.conv2 = _conv(num_feat + num_grow_ch, num_grow_ch)
        self.conv3 = _conv(num_feat + 2 * num_grow_ch, num_grow_ch)
        self.conv4 = _conv(num_feat + 3 * num_grow_ch, num_grow_ch)
        self.conv5 = _conv(num_feat + 4 * num_grow_ch, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), LEAKY_SLOPE, inplace=True))
        out = self.conv5(torch.cat(feats, 1))
        return out.mul_(RESIDUAL_SCALE).add_(x)


class RRDB(nn.Module):
    """Three dense blocks in a row, with a scaled residual around them."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out.mul_(RESIDUAL_SCALE).add_(x)


class RRDBNet(nn.Module):
    """The ESRGAN generator.

    Args:
        num_in_ch / num_out_ch: image channels (3).
        scale: 4, 2 or 1; 2 and 1 pixel-unshuffle the input by 2 or 4.
        num_feat: feature channels (64 in every released model).
        num_block: RRDB blocks (23 for x4plus / x2plus / RealESRNet, 6 for anime_6B).
        num_grow_ch: growth channels of the dense blocks (32).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = _conv(num_in_ch * self.unshuffle**2, num_feat)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = _conv(num_feat, num_feat)
        self.conv_up1 = _conv(num_feat, num_feat)
        self.conv_up2 = _conv(num_feat, num_feat)
        self.conv_hr = _conv(num_feat, num_feat)
        self.conv_last = _conv(num_feat, num_out_ch)

    @property
    def size_multiple(self) -> int:
        """Input sides must be a multiple of this (the pixel-unshuffle factor)."""
        return self.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), LEAKY_SLOPE, inplace=True)
        feat = F.leaky_relu(self.conv_hr(feat), LEAKY_SLOPE, inplace=True)
        return self.conv_last(feat)
