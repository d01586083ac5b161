"""Random CCSR checkpoints in the official key layout, for tests and golden runs.

Each tensor is drawn from its own generator seeded by (seed, key), so values
do not depend on generation order and the full 1.7 G-parameter model can be
written tensor by tensor without holding it in memory. Values are scaled like
a fan-in init; layers that ldm zero-initialises (zero convs, residual output
convs, transformer proj_out) get small non-zero values so that every path,
the ControlNet included, affects the output.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ccsr.models.ccsr_v1.networks import keymap
from ccsr.models.ccsr_v1.networks.betas import train_betas
from ccsr.models.ccsr_v1.networks.config import CCSRConfig
from ccsr.models.ccsr_v1.networks.keymap import Entry


def _generator(seed: int, key: str) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2**63))


def random_tensor(entry: Entry, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The deterministic random value of one official tensor."""
    g = _generator(seed, entry.key)
    shape = entry.shape
    if entry.init == keymap.SCALE:
        return torch.tensor(math.log(1 / 0.07), dtype=dtype).reshape(shape)
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    if entry.init == keymap.WEIGHT:
        x *= 1.0 / math.sqrt(fan_in)
    elif entry.init == keymap.ZERO_W:
        x *= 0.5 / math.sqrt(fan_in)
    elif entry.init == keymap.BIAS:
        x *= 0.02
    elif entry.init == keymap.NORM_W:
        x = 1.0 + 0.05 * x
    elif entry.init == keymap.NORM_B:
        x *= 0.05
    elif entry.init == keymap.EMBED:
        x *= 0.02
    elif entry.init == keymap.POS:
        x *= 0.01
    return x.to(dtype)


def schedule_buffers(cfg: CCSRConfig) -> dict[str, torch.Tensor]:
    """The noise-schedule buffers an official LatentDiffusion checkpoint carries (float32)."""
    betas = train_betas(cfg.timesteps, cfg.linear_start, cfg.linear_end)
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    values = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        "logvar": np.zeros(cfg.timesteps),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}


def iter_random_tensors(
    config: CCSRConfig, seed: int = 0, dtype: torch.dtype = torch.float32, include_schedule: bool = True
) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) pairs of a random official checkpoint, generated lazily."""
    for entry in keymap.entries(config):
        yield entry.key, random_tensor(entry, seed, dtype)
    if include_schedule:
        yield from schedule_buffers(config).items()


def random_state_dict(
    config: CCSRConfig, seed: int = 0, dtype: torch.dtype = torch.float32, include_schedule: bool = True
) -> dict[str, torch.Tensor]:
    """A complete random state dict in the official layout (every key, deterministic per seed).

    Schedule buffers stay float32 like in the official checkpoint.
    """
    return dict(iter_random_tensors(config, seed, dtype, include_schedule))


def write_random_checkpoint(
    config: CCSRConfig,
    path: str | Path,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    include_schedule: bool = True,
) -> Path:
    """Write a random official-layout .safetensors file, one tensor in memory at a time.

    Suitable for the full v1 size (6.9 GB fp32 / 3.4 GB fp16 on disk). The
    file's metadata marks it as random (:func:`ccsr.models.ccsr_v1.weights.is_random`), so
    the CLI, the server and the playground can say so.
    """
    from ccsr.models.ccsr_v1.checkpoint import write_safetensors_stream
    from ccsr.models.ccsr_v1.weights import random_marker

    shapes: list[tuple[str, tuple[int, ...], torch.dtype]] = [(e.key, e.shape, dtype) for e in keymap.entries(config)]
    sched = schedule_buffers(config) if include_schedule else {}
    shapes += [(k, tuple(v.shape), v.dtype) for k, v in sched.items()]
    return write_safetensors_stream(
        Path(path), shapes, iter_random_tensors(config, seed, dtype, include_schedule), metadata=random_marker(seed)
    )
