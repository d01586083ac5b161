"""CCSR-v2's sampler: one pass at t=999, a re-noise, then a short DDPM loop.

A pure function over a model callable, as k-diffusion's samplers are: the
engine builds ``model(x, t, first)`` (the noise prediction of latents ``x``
at timestep ``t``; ``first`` says which text context and condition belong to
the pass) and this module does the arithmetic and the random draws, in the
official pipeline's order (docs/ccsr-v2.md):

request stream ``gen``: the start noise, then one variance draw per DDPM step
with t > 0; global stream ``glob``: (the engine's posterior sample), two
``randint(999, 1000)`` draws, the re-noise draw (``randn_like`` of the
latent: in the latent's memory layout).
A batch of requests passes one generator pair per item: item b draws from
its own pair only, so its numbers equal a run by itself.

The schedule is diffusers' DDPMScheduler as the official code builds it from
SD-2.1-base's scheduler config ("leading" spacing with steps_offset):
N = 1 gives [1]; N = 6 gives [831, 665, 499, 333, 167, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ccsr.errors import Cancelled

#: model(x, t, first) -> predicted noise of x at timestep t.
ModelFn = Callable[[torch.Tensor, int, bool], torch.Tensor]
Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


@dataclass(frozen=True)
class Schedule:
    """The DDPM noise schedule of the weights' ``scheduler_config.json``."""

    alphas_cumprod: torch.Tensor  # float32 [num_train]
    steps_offset: int = 1
    prediction_type: str = "epsilon"

    @classmethod
    def from_config(cls, cfg: dict) -> "Schedule":
        n = int(cfg.get("num_train_timesteps", 1000))
        start, end = float(cfg.get("beta_start", 0.00085)), float(cfg.get("beta_end", 0.012))
        kind = cfg.get("beta_schedule", "scaled_linear")
        if kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
        elif kind == "linear":
            betas = torch.linspace(start, end, n, dtype=torch.float32)
        else:
            raise ValueError(f"scheduler_config.json: beta_schedule {kind!r} is not supported (scaled_linear, linear)")
        prediction = cfg.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"scheduler_config.json: prediction_type {prediction!r} is not supported")
        return cls(torch.cumprod(1.0 - betas, dim=0), int(cfg.get("steps_offset", 0)), prediction)

    @property
    def num_train(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def timesteps(self, n: int) -> list[int]:
        """The N timesteps, high to low ("leading" spacing plus steps_offset)."""
        ratio = self.num_train // n
        return [k * ratio + self.steps_offset for k in reversed(range(n))]

    def alpha(self, t: int) -> torch.Tensor:
        """alpha-bar at t (float32; t < 0 is the clean end: 1)."""
        return self.alphas_cumprod[t] if t >= 0 else torch.tensor(1.0)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        a = self.alphas_cumprod.to(x0.dtype)[t]
        return a**0.5 * x0 + (1 - a) ** 0.5 * noise

    def predict_x0(self, x: torch.Tensor, t: int, out: torch.Tensor) -> torch.Tensor:
        a = self.alpha(t).to(x.device)
        if self.prediction_type == "v_prediction":
            return a**0.5 * x - (1 - a) ** 0.5 * out
        return (x - (1 - a) ** 0.5 * out) / a**0.5

    def step(self, x: torch.Tensor, t: int, out: torch.Tensor, n: int, noise: Optional[torch.Tensor]) -> torch.Tensor:
        """One DDPM step from t to t - num_train // n ("fixed_small" variance,
        no clipping), adding ``noise`` scaled by the variance when t > 0."""
        prev = t - self.num_train // n
        a_t, a_prev = self.alpha(t), self.alpha(prev)
        b_t, b_prev = 1 - a_t, 1 - a_prev
        cur_alpha = a_t / a_prev
        cur_beta = 1 - cur_alpha
        x0 = self.predict_x0(x, t, out)
        mean = (a_prev**0.5 * cur_beta / b_t) * x0 + (cur_alpha**0.5 * b_prev / b_t) * x
        if t > 0 and noise is not None:
            variance = torch.clamp(b_prev / b_t * cur_beta, min=1e-20)
            mean = mean + variance**0.5 * noise.to(mean.device, mean.dtype)
        return mean


def layout_of(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels-last (and not also plainly contiguous)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _draw(shape: Sequence[int], gens: Sequence[torch.Generator], channels_last: bool = False) -> torch.Tensor:
    """One standard-normal draw of ``shape`` per item, item b from ``gens[b]``
    (float32, on the CPU so every device sees the same numbers). With
    ``channels_last`` the numbers fill a channels-last tensor in memory order,
    as ``torch.randn_like`` of such a tensor does: other values at each index."""
    one = (1, *shape[1:])
    if channels_last:
        parts = [torch.empty(one, memory_format=torch.channels_last).normal_(generator=g).contiguous() for g in gens]
    else:
        parts = [torch.randn(one, generator=g, dtype=torch.float32) for g in gens]
    return torch.cat(parts)


def _randint(gens: Sequence[torch.Generator]) -> None:
    """The official pipeline's ``torch.randint(999, 1000, ...)`` on the global
    stream: always 999, but it advances the stream, so it is drawn here too."""
    for g in gens:
        torch.randint(999, 1000, (1,), generator=g)


def sample_v2(
    model: ModelFn,
    schedule: Schedule,
    z_lr: torch.Tensor,
    *,
    steps: int,
    t_max: float,
    t_min: float,
    guidance_scale: float,
    start_point: str,
    gens: Sequence[torch.Generator],
    globs: Sequence[torch.Generator],
    progress: Optional[Progress] = None,
    cancel: Optional[Cancel] = None,
) -> torch.Tensor:
    """The output latent (scaled, as the VAE decoder takes it after / 0.18215).

    ``z_lr``: the input's latent (a posterior sample, scaled), one per request
    [B, 4, h, w]. ``gens``/``globs``: one request and one "global" generator
    per request, seeded by the engine. Each pass calls ``cancel`` first and
    ``progress(done, total)`` after."""
    guided = guidance_scale > 1.0
    timesteps = schedule.timesteps(steps)
    kept, dropped = round(steps * t_max), round(steps * t_min)
    loop = timesteps[-kept:] if kept else list(timesteps)
    if t_min > 0:
        loop = loop[:-dropped] if dropped else []
    first_pass = t_max != 1
    total = (1 if first_pass else 0) + (len(loop) if steps > 1 else 0)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    def check() -> None:
        if cancel is not None and cancel():
            raise Cancelled("cancelled")

    x = _draw(z_lr.shape, gens).to(z_lr.device, z_lr.dtype)
    if start_point != "noise":
        _randint(globs)
        x = schedule.add_noise(z_lr, x, 999)
    x0 = x
    if first_pass:
        _randint(globs)
        check()
        eps = model(x, 999, True)
        tick()
        x0 = schedule.predict_x0(x, 999, eps)
        # The official code draws this with torch.randn_like(latents): the values follow
        # the latent's memory layout, which the CPU convolutions of the VAE encoder
        # decide (channels-last for its batch of two under guidance, here). The engine
        # computes the latent with the same operations and batch, so its layout tells.
        renoise = _draw(x.shape, globs, channels_last=layout_of(x)).to(x.device, x.dtype)
        x = schedule.add_noise(x0, renoise, timesteps[-kept] if kept else timesteps[0])
    if steps == 1:
        return x0
    last = None
    for t in loop:
        check()
        inp = torch.cat([x, x]) if guided else x
        eps = model(inp, t, False)
        if guided:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        last = (x, t, eps)
        noise = _draw(x.shape, gens) if t > 0 else None
        x = schedule.step(x, t, eps, steps, noise)
        tick()
    if t_min > 0 and last is not None:
        x = schedule.predict_x0(*last)
    return x
