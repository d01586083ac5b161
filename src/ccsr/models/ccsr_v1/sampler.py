"""The truncated CCSR sampler (reference: ``SpacedSampler.sample_ccsr``).

One x0 prediction at t=999 (stage A), a jump back to index round((n-1)*t_max)
by re-noising that prediction, then plain DDPM steps from index
round(n*t_max)-1 down to round(n*t_min); the result is the last x0
prediction, not x. The one-index gap between the re-noise target and the
loop start is the reference's and is kept so a seed gives the same image.

Noise comes from a per-request ``torch.Generator`` on the CPU (float32, the
latent shape) and is then moved to the device, so CPU and CUDA runs see the
same numbers, in the reference's order:
x_T; [an unused draw, non-tiled path only]; the stage-A re-noise; one per step.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from ccsr.errors import Cancelled, InvalidParameter
from ccsr.models.ccsr_v1.params import sampling_range
from ccsr.models.ccsr_v1.schedule import Schedule

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]
Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


def loop_bounds(n: int, t_max: float, t_min: float) -> tuple[int, int, int]:
    """(k, u, m): stage-A re-noise index and the stage-B loop range [m, u).

    k is computed in float32 (``torch.round(index * t_max)`` on a long tensor
    in the reference); u and m with Python's round on floats, half to even.
    Raises InvalidParameter when the loop would be empty.
    """
    if not 0 <= t_min < t_max <= 1:
        raise InvalidParameter("t_min", f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    k = int(torch.round(torch.tensor(n - 1) * t_max))
    u, m = sampling_range(n, t_max, t_min)
    if u - m < 1:
        raise InvalidParameter("steps", f"{n} steps with t_max={t_max}, t_min={t_min} leave no sampling step")
    return k, u, m


def num_evaluations(n: int, t_max: float, t_min: float) -> int:
    """Network evaluations of one run: 1 (stage A) + u - m."""
    _, u, m = loop_bounds(n, t_max, t_min)
    return 1 + u - m


def _noise(shape, generator, device, dtype) -> torch.Tensor:
    """One draw of ``shape``; with a list of generators (a batch of requests), item
    b of the batch is drawn from generator b alone, so it equals the draw a run of
    that request by itself would make."""
    if isinstance(generator, (list, tuple)):
        one = (1, *shape[1:])
        noise = torch.cat([torch.randn(one, generator=g, dtype=torch.float32) for g in generator])
    else:
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


_COEFFICIENTS = (
    "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2", "posterior_variance",
)


def coefficients(s: Schedule, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The schedule's arrays as float32 tensors on the device, made once per run.

    Each entry is the reference's ``_extract_into_tensor(...).float()`` of the
    float64 value; the cast happens on the CPU (MPS has no float64), and
    indexing them per step costs no host-to-device copy.
    """
    return {name: torch.from_numpy(getattr(s, name)).float().to(device) for name in _COEFFICIENTS}


def predict_x0(c: dict[str, torch.Tensor], x: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
    return c["sqrt_recip_alphas_cumprod"][i] * x - c["sqrt_recipm1_alphas_cumprod"][i] * eps


def sample_ccsr(
    eps_fn: EpsFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    t_max: float,
    t_min: float,
    generator: Union[torch.Generator, Sequence[torch.Generator]],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    unused_draw: bool = True,
    progress: Optional[Progress] = None,
    cancel: Optional[Cancel] = None,
) -> torch.Tensor:
    """Run the CCSR sampler; return the final x0 latent (scaled latent space).

    ``eps_fn(x, i)`` predicts the noise at spaced index i (the caller maps i to
    the real timestep ``schedule.timesteps[i]``). ``unused_draw`` is True for
    the plain path (``sample_ccsr`` draws a noise it never uses) and False for
    tiled diffusion (gaussian and mix), which do not. ``progress(done, total)``
    runs after every evaluation; ``cancel()`` is checked before every
    evaluation and a true result raises :class:`Cancelled`. t_min = 0 runs the
    loop down to index 0 (the reference crashes there); that step adds no
    noise (nonzero mask) but still consumes a draw, like every step.
    The latent state is kept in ``dtype`` (float32 recommended, as the reference).
    ``generator`` may be one generator per batch item (``shape[0]`` of them).
    """
    if isinstance(generator, (list, tuple)) and len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    n = schedule.num_steps
    k, u, m = loop_bounds(n, t_max, t_min)
    total, done = 1 + u - m, 0

    def eps_at(x: torch.Tensor, i: int) -> torch.Tensor:
        nonlocal done
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        e = eps_fn(x, i).to(dtype)
        done += 1
        if progress is not None:
            progress(done, total)
        return e

    c = coefficients(schedule, device)
    x = _noise(shape, generator, device, dtype)
    x0 = predict_x0(c, x, eps_at(x, n - 1), n - 1)
    if unused_draw:
        _noise(shape, generator, device, dtype)
    noise = _noise(shape, generator, device, dtype)
    x = c["sqrt_alphas_cumprod"][k] * x0 + c["sqrt_one_minus_alphas_cumprod"][k] * noise
    for i in range(u - 1, m - 1, -1):
        x0 = predict_x0(c, x, eps_at(x, i), i)
        mean = c["posterior_mean_coef1"][i] * x0 + c["posterior_mean_coef2"][i] * x
        noise = _noise(shape, generator, device, dtype)
        std = torch.sqrt(c["posterior_variance"][i]) * float(i != 0)
        x = mean + std * noise
    return x0
