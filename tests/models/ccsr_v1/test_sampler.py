import numpy as np
import pytest
import torch

from ccsr.errors import Cancelled, InvalidParameter
from ccsr.models.ccsr_v1.sampler import num_evaluations, sample_ccsr
from ccsr.models.ccsr_v1.schedule import make_schedule

SHAPE = (1, 4, 6, 5)


def fake_eps(s, calls=None):
    def eps(x, i):
        if calls is not None:
            calls.append(i)
        t = float(s.timesteps[i])
        return 0.3 * x * np.cos(t / 100) + 0.01 * t / 1000
    return eps


def reference_replay(s, steps, t_max, t_min, seed, unused_draw):
    """The reference's procedure, re-stated with its own slicing, on the global RNG."""
    torch.manual_seed(seed)
    f = lambda a, i: torch.from_numpy(a)[torch.tensor([i])].float().view(1, 1, 1, 1)
    eps = fake_eps(s)
    img = torch.randn(SHAPE)  # x_T, drawn in process()
    n = len(s.timesteps)
    index = torch.full((1,), n - 1)
    e = eps(img, n - 1)
    x0 = f(s.sqrt_recip_alphas_cumprod, n - 1) * img - f(s.sqrt_recipm1_alphas_cumprod, n - 1) * e
    if unused_draw:
        torch.randn_like(img)
    tao = int(torch.round(index * t_max))
    img = f(s.sqrt_alphas_cumprod, tao) * x0 + f(s.sqrt_one_minus_alphas_cumprod, tao) * torch.randn_like(x0)
    time_range = np.flip(s.timesteps)
    time_range = time_range[-int(round(n * t_max)):]
    use = len(time_range)
    m = int(round(n * t_min))
    if m:
        time_range = time_range[:-m]
    for j, step in enumerate(time_range):
        idx = use - j - 1
        assert s.timesteps[idx] == step
        e = eps(img, idx)
        x0 = f(s.sqrt_recip_alphas_cumprod, idx) * img - f(s.sqrt_recipm1_alphas_cumprod, idx) * e
        mean = f(s.posterior_mean_coef1, idx) * x0 + f(s.posterior_mean_coef2, idx) * img
        mask = float(idx != 0)
        img = mean + mask * torch.sqrt(f(s.posterior_variance, idx)) * torch.randn_like(mean)
    return x0


@pytest.mark.parametrize("unused_draw", [True, False])
@pytest.mark.parametrize("steps,t_max,t_min", [(50, 0.6667, 0.3333), (45, 0.6667, 0.3333), (20, 0.9, 0.1)])
def test_matches_reference_replay(steps, t_max, t_min, unused_draw):
    s = make_schedule(steps)
    g = torch.Generator().manual_seed(1234)
    out = sample_ccsr(fake_eps(s), s, SHAPE, t_max, t_min, g, unused_draw=unused_draw)
    ref = reference_replay(s, steps, t_max, t_min, 1234, unused_draw)
    assert torch.equal(out, ref)


def test_unused_draw_changes_result():
    s = make_schedule(50)
    a = sample_ccsr(fake_eps(s), s, SHAPE, 0.6667, 0.3333, torch.Generator().manual_seed(1))
    b = sample_ccsr(fake_eps(s), s, SHAPE, 0.6667, 0.3333, torch.Generator().manual_seed(1), unused_draw=False)
    assert not torch.equal(a, b)


def test_evaluation_order_50_steps():
    s = make_schedule(50)
    calls = []
    sample_ccsr(fake_eps(s, calls), s, SHAPE, 0.6667, 0.3333, torch.Generator().manual_seed(0))
    assert calls == [49] + list(range(32, 16, -1))
    assert len(calls) == 17 == num_evaluations(50, 0.6667, 0.3333)
    assert s.timesteps[calls[-1]] == 347


def test_evaluation_count_45_steps():
    s = make_schedule(45)
    calls = []
    sample_ccsr(fake_eps(s, calls), s, SHAPE, 0.6667, 0.3333, torch.Generator().manual_seed(0))
    assert len(calls) == 16 == num_evaluations(45, 0.6667, 0.3333)


def test_t_min_zero_runs_to_index_zero():
    s = make_schedule(10)
    calls = []
    out = sample_ccsr(fake_eps(s, calls), s, SHAPE, 0.5, 0.0, torch.Generator().manual_seed(0))
    assert calls == [9, 4, 3, 2, 1, 0]
    assert torch.isfinite(out).all()
    # Draws: x_T, unused, re-noise, and one per step (5) -> 8 draws consumed.
    g = torch.Generator().manual_seed(0)
    sample_ccsr(fake_eps(s), s, SHAPE, 0.5, 0.0, g)
    g2 = torch.Generator().manual_seed(0)
    for _ in range(8):
        torch.randn(SHAPE, generator=g2)
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=g2))


def test_progress_totals():
    s = make_schedule(50)
    seen = []
    sample_ccsr(fake_eps(s), s, SHAPE, 0.6667, 0.3333, torch.Generator().manual_seed(0),
                progress=lambda d, t: seen.append((d, t)))
    assert seen == [(d, 17) for d in range(1, 18)]


def test_cancel_between_evaluations():
    s = make_schedule(50)
    calls = []
    with pytest.raises(Cancelled):
        sample_ccsr(fake_eps(s, calls), s, SHAPE, 0.6667, 0.3333, torch.Generator().manual_seed(0),
                    cancel=lambda: len(calls) >= 3)
    assert len(calls) == 3


@pytest.mark.parametrize("t_max,t_min,field", [(0.3, 0.3, "t_min"), (0.3, 0.5, "t_min"), (0.52, 0.5, "steps")])
def test_invalid_ranges(t_max, t_min, field):
    s = make_schedule(4)
    with pytest.raises(InvalidParameter) as e:
        sample_ccsr(fake_eps(s), s, SHAPE, t_max, t_min, torch.Generator().manual_seed(0))
    assert e.value.field == field


def test_device_dtype_of_noise():
    s = make_schedule(10)
    out = sample_ccsr(fake_eps(s), s, SHAPE, 0.6, 0.2, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert out.dtype == torch.float64
