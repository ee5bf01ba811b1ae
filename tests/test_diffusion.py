import math

import numpy as np
import pytest
import torch

from ddpm_edu.diffusion import (check_int_batch, diffusion_loss, model_output_to_x0_eps, q_posterior, q_sample,
                                reverse_mean_from_eps, training_target)
from ddpm_edu.schedules import make_schedule


@pytest.fixture(scope="module")
def sched():
    return make_schedule("linear", T=1000)


def test_q_sample_is_the_closed_form(sched):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 500, 999])
    xt = q_sample(sched, x0, t, noise)
    for i, ti in enumerate(t.tolist()):
        ab = 1.0
        for s in range(ti + 1):
            ab *= 1 - (1e-4 + s * (0.02 - 1e-4) / 999)
        expected = math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * noise[i]
        assert torch.allclose(xt[i], expected, atol=1e-6)
    assert xt.dtype == torch.float32


def test_q_sample_statistics(sched):
    g = torch.Generator().manual_seed(2)
    x0 = torch.full((100_000, 1, 1, 1), 0.5, dtype=torch.float64)
    xt = q_sample(sched, x0, torch.tensor(300), generator=g)
    ab = sched.alpha_bars[300].item()
    assert xt.mean().item() == pytest.approx(0.5 * math.sqrt(ab), abs=0.01)
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.02)


def test_posterior_matches_bayes_rule_on_a_grid(sched):
    t, x0v, xtv = 250, 0.4, -0.3
    grid = torch.linspace(-3, 3, 60001, dtype=torch.float64)

    def pdf(x, m, v):
        return torch.exp(-(x - m) ** 2 / (2 * v)) / torch.sqrt(2 * math.pi * v)

    w = pdf(xtv, sched.alphas[t].sqrt() * grid, sched.betas[t]) * pdf(grid, sched.alpha_bars_prev[t].sqrt() * x0v,
                                                                       1 - sched.alpha_bars_prev[t])
    w = w / w.sum()
    mean_grid = (w * grid).sum()
    var_grid = (w * (grid - mean_grid) ** 2).sum()
    mean, var, _ = q_posterior(sched, torch.full((1, 1), x0v, dtype=torch.float64),
                               torch.full((1, 1), xtv, dtype=torch.float64), torch.tensor([t]))
    assert mean.item() == pytest.approx(mean_grid.item(), abs=1e-7)
    assert var.item() == pytest.approx(var_grid.item(), rel=1e-4)


def test_reverse_mean_with_true_noise_is_the_posterior_mean(sched):
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(5, 2, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 600, 999])
    xt = q_sample(sched, x0, t, eps)
    assert torch.allclose(reverse_mean_from_eps(sched, xt, t, eps), q_posterior(sched, x0, xt, t)[0], atol=1e-10)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_parameterizations_round_trip(sched, kind):
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(4, 1, 5, 5, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 100, 700, 999])
    xt = q_sample(sched, x0, t, eps)
    x0_hat, eps_hat = model_output_to_x0_eps(sched, xt, t, training_target(sched, x0, eps, t, kind), kind)
    assert torch.allclose(x0_hat, x0, atol=1e-8) and torch.allclose(eps_hat, eps, atol=1e-8)


def test_v_definition(sched):
    x0, eps, t = torch.ones(1, 1), torch.zeros(1, 1), torch.tensor([400])
    v = training_target(sched, x0, eps, t, "v")
    assert v.item() == pytest.approx(-math.sqrt(1 - sched.alpha_bars[400].item()), rel=1e-6)


def test_loss_of_oracle_and_zero_models(sched):
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(32, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (32,), generator=g)
    assert diffusion_loss(lambda xt, tt: noise, sched, x0, t, noise).item() == 0.0
    zero = diffusion_loss(lambda xt, tt: torch.zeros_like(xt), sched, x0, t, noise).item()
    assert zero == pytest.approx((noise ** 2).mean().item())
    seen = {}

    def conditional(xt, tt, labels):
        seen["labels"] = labels
        return torch.zeros_like(xt)

    diffusion_loss(conditional, sched, x0, labels=torch.arange(32), generator=g)
    assert torch.equal(seen["labels"], torch.arange(32))


@pytest.mark.parametrize("call, words", [
    (lambda s, x: q_sample(s, x, torch.tensor([0, 1000])), "t must lie in [0, T) = [0, 1000)"),
    (lambda s, x: q_sample(s, x, torch.tensor([-1, 0])), "t must lie in [0, T)"),
    (lambda s, x: q_sample(s, x, torch.tensor([0.5, 1.0])), "t must hold integers"),
    (lambda s, x: q_sample(s, x, torch.tensor([0, 1, 2])), "t must have shape (2,)"),
    (lambda s, x: q_sample(s, x, torch.tensor([0, 1]), noise=torch.zeros(2, 1, 3)), "x0 and noise must have the same shape"),
    (lambda s, x: q_sample(s, x * float("inf"), torch.tensor([0, 1])), "x0 contains NaN or infinite values"),
    (lambda s, x: q_posterior(s, x, x[:, :, :2], torch.tensor([0, 1])), "x0 and xt must have the same shape"),
    (lambda s, x: model_output_to_x0_eps(s, x, torch.tensor([0, 1]), x, "score"), "prediction_type must be one of"),
    (lambda s, x: diffusion_loss(lambda a, b: a, s, x, prediction_type="mu"), "prediction_type must be one of"),
    (lambda s, x: diffusion_loss(lambda a, b: a[:, :, :2], s, x), "model output must have the input's shape"),
])
def test_bad_input_names_the_argument(sched, call, words):
    x = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError) as info:
        call(sched, x)
    assert words in str(info.value)


def test_numpy_input_gets_a_clear_type_error(sched):
    hint = r"x0 must be a torch.Tensor, got ndarray \(convert an array with torch.from_numpy\)"
    with pytest.raises(TypeError, match=hint):
        q_sample(sched, np.zeros((2, 1, 3, 3), dtype=np.float32), torch.tensor([0, 1]))


@pytest.mark.parametrize("value, batch, expected", [
    (3, 2, [3, 3]), ([1, 2], 2, [1, 2]), (np.array([0, 9]), 2, [0, 9]), (torch.tensor(4), 3, [4, 4, 4])])
def test_check_int_batch_accepts_one_int_or_one_per_image(value, batch, expected):
    out = check_int_batch("y", value, batch, 0, 10)
    assert out.dtype == torch.long and out.tolist() == expected


@pytest.mark.parametrize("value, words", [
    (1.5, "y must hold integers"), (torch.tensor([True, False]), "y must hold integers"),
    ([1, 2, 3], "y must have shape (2,)"), ([0, 10], "y must lie in [0, 10), got values from 0 to 10"),
    ([-1, 0], "y must lie in"), ("ab", "y must be an int or integers of shape (2,)")])
def test_check_int_batch_names_the_argument(value, words):
    with pytest.raises(ValueError) as info:
        check_int_batch("y", value, 2, 0, 10)
    assert words in str(info.value)


def test_trusted_inputs_skips_only_value_checks_and_restores_them():
    from ddpm_edu.diffusion import check_int_batch, trusted_inputs

    schedule = make_schedule("linear", T=10)
    nan = torch.full((1, 1, 2, 2), float("nan"))
    with trusted_inputs():
        with trusted_inputs():
            q_sample(schedule, nan, torch.tensor([3]))  # value checks off, nested
        assert check_int_batch("t", torch.tensor([99]), 1, 0, 10).tolist() == [99]  # range not read
        with pytest.raises(ValueError, match="must have shape"):  # shapes and types are still checked
            check_int_batch("t", torch.tensor([1, 2]), 1, 0, 10)
        with pytest.raises(TypeError, match="must be a torch.Tensor"):
            q_sample(schedule, nan.numpy(), torch.tensor([3]))
    with pytest.raises(ValueError, match="contains NaN"):
        q_sample(schedule, nan, torch.tensor([3]))
    try:
        with trusted_inputs():
            raise KeyError("boom")
    except KeyError:
        pass
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\)"):  # restored after an exception too
        q_sample(schedule, torch.zeros(1, 1, 2, 2), torch.tensor([10]))
