"""The training noise schedule (betas) of the model.

It belongs to the model: an official checkpoint carries the buffers derived
from it (see :func:`ccsr.models.ccsr_v1.random_weights.schedule_buffers`), and the sampler in
:mod:`ccsr.models.ccsr_v1.schedule` respaces it. Keeping it here lets both import
it without the model layer reaching up into the pipeline.
"""

from __future__ import annotations

import numpy as np

NUM_TRAIN_TIMESTEPS = 1000
LINEAR_START = 0.00085
LINEAR_END = 0.012


def train_betas(
    num_timesteps: int = NUM_TRAIN_TIMESTEPS, linear_start: float = LINEAR_START, linear_end: float = LINEAR_END
) -> np.ndarray:
    """SD's "linear" schedule: linear in sqrt(beta), squared (float64)."""
    return np.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=np.float64) ** 2
