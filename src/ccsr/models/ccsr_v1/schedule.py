"""Noise schedule of CCSR v1: SD's "scaled linear" betas, respaced IDDPM-style.

All arrays are float64 numpy (as the reference computes them); the sampler
casts single coefficients to float32 when it uses them, as the reference's
``_extract_into_tensor(...).float()`` does, so the same seed gives the same
numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ccsr.errors import InvalidParameter
# The training schedule is the model's; re-exported for the sampler's callers.
from ccsr.models.ccsr_v1.networks.betas import LINEAR_END, LINEAR_START, NUM_TRAIN_TIMESTEPS, train_betas  # noqa: F401


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """IDDPM ``space_timesteps(num_timesteps, str(count))`` with one section.

    Takes ``count`` steps with the fractional stride (num_timesteps-1)/(count-1),
    each rounded (Python's round, half to even), accumulating the stride as a
    float exactly as the improved-diffusion code does. Returned sorted.
    """
    if not 1 <= count <= num_timesteps:
        raise InvalidParameter("steps", f"must be between 1 and {num_timesteps}, got {count}")
    stride = 1 if count <= 1 else (num_timesteps - 1) / (count - 1)
    taken, cur = [], 0.0
    for _ in range(count):
        taken.append(round(cur))
        cur += stride
    return sorted(set(taken))


@dataclass(frozen=True)
class Schedule:
    """Coefficients of the respaced process, indexed by the spaced index i.

    ``timesteps[i]`` is the real timestep fed to the UNet for index i.
    """

    timesteps: np.ndarray  # int64, sorted ascending
    betas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    posterior_variance: np.ndarray  # "fixed_small"
    posterior_mean_coef1: np.ndarray  # multiplies the x0 prediction
    posterior_mean_coef2: np.ndarray  # multiplies x_t

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


def make_schedule(steps: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Schedule:
    """Spaced schedule for ``steps`` sampling steps (betas re-derived over the subset)."""
    ts = space_timesteps(num_timesteps, steps)
    ab_train = np.cumprod(1.0 - train_betas(num_timesteps))
    betas, last = [], 1.0
    for t in ts:
        betas.append(1.0 - ab_train[t] / last)
        last = ab_train[t]
    betas = np.array(betas, dtype=np.float64)
    alphas = 1.0 - betas
    ab = np.cumprod(alphas)
    ab_prev = np.append(1.0, ab[:-1])
    return Schedule(
        timesteps=np.array(ts, dtype=np.int64),
        betas=betas,
        alphas_cumprod=ab,
        alphas_cumprod_prev=ab_prev,
        sqrt_alphas_cumprod=np.sqrt(ab),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ab),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ab),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ab - 1.0),
        posterior_variance=betas * (1.0 - ab_prev) / (1.0 - ab),
        posterior_mean_coef1=betas * np.sqrt(ab_prev) / (1.0 - ab),
        posterior_mean_coef2=(1.0 - ab_prev) * np.sqrt(alphas) / (1.0 - ab),
    )
