import numpy as np
import pytest

from ccsr.errors import InvalidParameter
from ccsr.models.ccsr_v1.schedule import make_schedule, space_timesteps


def _expected(count: int) -> list[int]:
    # The definition, written independently: k-th step is round(k * 999 / (count-1)),
    # with the stride accumulated as a float the way IDDPM does.
    out, acc = [], 0.0
    for _ in range(count):
        out.append(int(round(acc)))
        acc += 999 / (count - 1)
    return sorted(set(out))


@pytest.mark.parametrize("steps", [2, 10, 45, 50, 200, 1000])
def test_space_timesteps_matches_definition(steps):
    ts = space_timesteps(1000, steps)
    assert ts == _expected(steps)
    assert len(ts) == steps and ts[0] == 0 and ts[-1] == 999


def test_known_values_50_steps():
    ts = make_schedule(50).timesteps
    # index 17 is the last x0 of the default request (t_min 0.3333) -> t=347.
    assert ts[17] == 347
    assert ts[32] == round(32 * 999 / 49)
    assert list(ts[:4]) == [0, 20, 41, 61]


def test_schedule_coefficients():
    s = make_schedule(50)
    base = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    ab_full = np.cumprod(1 - base)
    np.testing.assert_allclose(s.alphas_cumprod, ab_full[s.timesteps], rtol=1e-12)
    ab, abp = s.alphas_cumprod, np.append(1.0, s.alphas_cumprod[:-1])
    np.testing.assert_allclose(s.betas, 1 - ab / abp, rtol=1e-12)
    np.testing.assert_allclose(s.posterior_variance, s.betas * (1 - abp) / (1 - ab))
    assert s.posterior_variance[0] == 0.0
    # Posterior mean reproduces x0 when x_t is exactly on the forward path (no noise).
    x0 = 0.7
    for i in range(1, 50):
        xt = np.sqrt(ab[i]) * x0
        mean = s.posterior_mean_coef1[i] * x0 + s.posterior_mean_coef2[i] * xt
        np.testing.assert_allclose(mean, np.sqrt(abp[i]) * x0, rtol=1e-10)
    np.testing.assert_allclose(s.sqrt_recip_alphas_cumprod * np.sqrt(ab), 1.0)


def test_bad_steps():
    with pytest.raises(InvalidParameter, match="steps"):
        make_schedule(1001)
    with pytest.raises(InvalidParameter, match="steps"):
        make_schedule(0)
