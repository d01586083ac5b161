"""The OpenCLIP text tower, read at its penultimate layer.

CCSR always uses the empty prompt, so this module runs exactly once per
checkpoint (at load) to produce a constant context tensor; afterwards it is
dropped. Parameter names follow OpenCLIP so official weights load by name.
Only the blocks that run (all but the last) are built.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ccsr.models.ccsr_v1.networks.config import TextConfig

SOT_TOKEN = 49406
EOT_TOKEN = 49407


def empty_prompt_tokens(context_length: int = 77) -> torch.Tensor:
    """OpenCLIP tokens of "": start, end, then zero padding. Shape [1, context_length]."""
    tokens = torch.zeros(1, context_length, dtype=torch.long)
    tokens[0, 0] = SOT_TOKEN
    tokens[0, 1] = EOT_TOKEN
    return tokens


class _Attention(nn.Module):
    """nn.MultiheadAttention's parameter layout, computed with SDPA (causal)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, w // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = _Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=nn.GELU(), c_proj=nn.Linear(4 * width, width))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, width: int, blocks: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(_Block(width, heads) for _ in range(blocks))


class TextTower(nn.Module):
    """Token + position embedding, all blocks but the last, ln_final."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = _Transformer(cfg.width, max(cfg.layers - 1, 0), cfg.heads)
        self.ln_final = nn.LayerNorm(cfg.width, eps=1e-5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        for block in self.transformer.resblocks:
            x = block(x)
        return self.ln_final(x)
