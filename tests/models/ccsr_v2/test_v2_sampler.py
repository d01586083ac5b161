"""The v2 sampler against the arithmetic and draw order the official pipeline
uses, with a stand-in model (no network): the schedule, the one- and two-step
paths, guidance, progress, cancel and per-item generators in a batch."""

import pytest
import torch

from ccsr.errors import Cancelled
from ccsr.models.ccsr_v2.random_weights import SCHEDULER
from ccsr.models.ccsr_v2.sampler import Schedule, sample_v2

SCHED = Schedule.from_config(SCHEDULER)
SHAPE = (1, 4, 6, 5)


def _gens(seed, n=1):
    return [torch.Generator().manual_seed(seed) for _ in range(n)], [torch.Generator().manual_seed(seed) for _ in range(n)]


def test_the_schedule_is_sd_leading_spacing():
    assert SCHED.timesteps(1) == [1]
    assert SCHED.timesteps(6) == [831, 665, 499, 333, 167, 1]
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    assert torch.equal(SCHED.alphas_cumprod, torch.cumprod(1 - betas, 0))


def test_one_step_is_the_first_pass_prediction_with_the_official_draws():
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    seen = []

    def model(x, t, first):
        seen.append((t, first, x.shape[0]))
        return 0.1 * x

    gens, globs = _gens(5)
    out = sample_v2(model, SCHED, z, steps=1, t_max=0.6666, t_min=0.0, guidance_scale=1.0, start_point="lr",
                    gens=gens, globs=globs)
    assert seen == [(999, True, 1)]
    # By hand, in the official order: request stream n; global: two randint draws.
    g = torch.Generator().manual_seed(5)
    n = torch.randn(SHAPE, generator=g)
    a = SCHED.alphas_cumprod[999]
    x = a**0.5 * z + (1 - a) ** 0.5 * n
    expect = (x - (1 - a) ** 0.5 * 0.1 * x) / a**0.5
    assert torch.allclose(out, expect, atol=1e-6)


@pytest.mark.parametrize("channels_last", [True, False])
def test_two_step_guided_loop_uses_both_prompts_and_the_variance_draw(channels_last):
    """The re-noise draw follows the latent's memory layout, as the official
    torch.randn_like(latents) does (channels-last for the guided batch of two
    the official VAE encoder sees on a CPU)."""
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    calls = []

    def model(x, t, first):
        calls.append((t, first, x.shape[0]))
        if first:
            return 0.2 * x
        return torch.cat([0.1 * x[:1], 0.3 * x[1:]])  # uncond, cond

    gens, globs = _gens(3)
    done = []
    out = sample_v2(model, SCHED, z, steps=6, t_max=0.6667, t_min=0.5, guidance_scale=4.5, start_point="lr",
                    gens=gens, globs=globs, progress=lambda d, n: done.append((d, n)))
    assert calls == [(999, True, 1), (499, False, 2)] and done == [(1, 2), (2, 2)]
    g, glob = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    n = torch.randn(SHAPE, generator=g)
    torch.randint(999, 1000, (1,), generator=glob)
    a = SCHED.alphas_cumprod
    x = a[999] ** 0.5 * z + (1 - a[999]) ** 0.5 * n
    torch.randint(999, 1000, (1,), generator=glob)
    x0 = (x - (1 - a[999]) ** 0.5 * 0.2 * x) / a[999] ** 0.5
    layout = torch.channels_last if channels_last else torch.contiguous_format
    renoise = torch.empty(SHAPE, memory_format=layout).normal_(generator=glob)
    x = a[499] ** 0.5 * x0 + (1 - a[499]) ** 0.5 * renoise
    eps = 0.1 * x + 4.5 * (0.3 * x - 0.1 * x)
    expect = (x - (1 - a[499]) ** 0.5 * eps) / a[499] ** 0.5  # t_min > 0: the x0 at the last t
    assert torch.allclose(out, expect, atol=1e-5)


def test_the_renoise_draw_is_a_channels_last_tensor_not_a_plain_one():
    a = torch.empty(SHAPE, memory_format=torch.channels_last).normal_(generator=torch.Generator().manual_seed(0))
    b = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    # normal_ on a channels-last tensor fills memory in another order and with other
    # values (the doc: not even a permutation of the plain draw), so the engine must
    # draw it exactly that way to meet the official numbers.
    assert not torch.equal(a, b) and not torch.equal(torch.sort(a.flatten()).values, torch.sort(b.flatten()).values)


def test_noise_start_and_a_plain_ddpm_loop():
    z = torch.zeros(SHAPE)
    gens, globs = _gens(2)
    out = sample_v2(lambda x, t, first: torch.zeros_like(x), SCHED, z, steps=6, t_max=0.6667, t_min=0.0,
                    guidance_scale=1.0, start_point="noise", gens=gens, globs=globs)
    assert out.shape == SHAPE and torch.isfinite(out).all()
    assert not torch.equal(out, z)


def test_cancel_is_checked_before_each_pass():
    z = torch.zeros(SHAPE)
    calls = []
    gens, globs = _gens(0)
    with pytest.raises(Cancelled):
        sample_v2(lambda x, t, f: calls.append(t) or torch.zeros_like(x), SCHED, z, steps=6, t_max=0.6667,
                  t_min=0.0, guidance_scale=1.0, start_point="lr", gens=gens, globs=globs,
                  cancel=lambda: len(calls) >= 2)
    assert len(calls) == 2


def test_a_batch_item_equals_its_run_alone():
    z = torch.randn((2, *SHAPE[1:]), generator=torch.Generator().manual_seed(4))

    def model(x, t, first):
        return 0.05 * x + 0.01

    kw = dict(steps=6, t_max=0.6667, t_min=0.5, guidance_scale=1.0, start_point="lr")
    gens, globs = [torch.Generator().manual_seed(s) for s in (7, 8)], [torch.Generator().manual_seed(s) for s in (7, 8)]
    both = sample_v2(model, SCHED, z, gens=gens, globs=globs, **kw)
    for b, s in enumerate((7, 8)):
        g, gl = _gens(s)
        alone = sample_v2(model, SCHED, z[b : b + 1], gens=g, globs=gl, **kw)
        assert torch.allclose(both[b : b + 1], alone, atol=1e-6)
