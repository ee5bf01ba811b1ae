import math

import pytest
import torch

from ddpm_edu.schedules import NoiseSchedule, cosine_betas, linear_betas, make_schedule, sigmoid_betas


def test_linear_posterior_variance_matches_diffusers_reference_values():
    # Published in diffusers' DDPMScheduler tests: 0, 0.00979, 0.02 at t = 0, 487, 999.
    s = make_schedule("linear", T=1000)
    assert s.posterior_variance.dtype == torch.float64
    assert abs(s.posterior_variance[0].item() - 0.0) < 1e-10
    assert abs(s.posterior_variance[487].item() - 0.00979) < 1e-5
    assert abs(s.posterior_variance[999].item() - 0.02) < 1e-5


def test_linear_endpoints_and_alpha_bar_by_hand():
    s = make_schedule("linear", T=1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    by_hand = 1.0
    for t in range(10):
        by_hand *= 1 - (1e-4 + t * (0.02 - 1e-4) / 999)
    assert s.alpha_bars[9].item() == pytest.approx(by_hand, rel=1e-12)


def test_cosine_alpha_bar_follows_the_formula():
    T, s_off = 1000, 0.008
    s = make_schedule("cosine", T=T)

    def f(t):
        return math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2

    for t in (0, 100, 500, 900):  # code index t is paper step t+1
        assert s.alpha_bars[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.betas.max().item() == pytest.approx(0.999)


def test_sigmoid_is_symmetric_and_halfway_at_the_middle():
    s = make_schedule("sigmoid", T=1000)
    assert s.alpha_bars[499].item() == pytest.approx(0.5, abs=1e-9)  # tau = 0.5 with start = -end


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_derived_quantities_are_consistent(name):
    s = make_schedule(name, T=500)
    assert s.T == 500
    assert (s.alpha_bars[1:] < s.alpha_bars[:-1]).all()
    assert torch.allclose(s.alpha_bars_prev[1:], s.alpha_bars[:-1])
    assert torch.allclose(s.snr, s.alpha_bars / (1 - s.alpha_bars))
    assert (s.posterior_variance <= s.betas + 1e-15).all()
    rebuilt = make_schedule(**s.to_dict())
    assert torch.equal(rebuilt.betas, s.betas)


@pytest.mark.parametrize("call, words", [
    (lambda: make_schedule("quadratic"), "unknown schedule"),
    (lambda: linear_betas(T=1), "T (number of diffusion steps)"),
    (lambda: linear_betas(1000, beta_start=0.1, beta_end=0.01), "beta_start"),
    (lambda: linear_betas(1000, beta_end=1.5), "beta_end"),
    (lambda: cosine_betas(1000, s=-0.1), "s (cosine offset)"),
    (lambda: sigmoid_betas(1000, start=3, end=-3), "start < end"),
    (lambda: NoiseSchedule(torch.tensor([0.1, 1.2])), "(0, 1)"),
    (lambda: NoiseSchedule(torch.tensor([0.1, float("nan")])), "(0, 1)"),
])
def test_bad_parameters_name_the_argument(call, words):
    with pytest.raises(ValueError, match=None) as info:
        call()
    assert words in str(info.value)
