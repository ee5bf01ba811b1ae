"""Unit tests of ddpm_edu.score (chapter 7): scores, Tweedie, Langevin, the VP-SDE, DDIM = Euler, guidance, EDM."""

import math

import numpy as np
import pytest
import torch

from ddpm_edu.diffusion import x0_from_eps
from ddpm_edu.sampling import ddim_step, model_output
from ddpm_edu.schedules import make_schedule
from ddpm_edu.score import (ClassifierGuidedModel, EpsDenoiser, GaussianMixture, NoisyDigitClassifier, VPSDE,
                            annealed_langevin, classifier_log_prob_grad, ddim_as_euler_step, edm_preconditioning,
                            edm_sample, eps_from_score, gaussians8_mixture, implicit_classifier_grad, karras_sigmas,
                            langevin, load_noisy_classifier, reverse_vp_sample, score_from_eps, train_noisy_classifier,
                            tweedie_x0, vp_preconditioning)

SCHEDULE = make_schedule("linear", T=1000)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- scores and Tweedie

def test_mixture_score_is_the_gradient_of_its_log_density():
    mixture = gaussians8_mixture().noised(0.6, 0.8)
    x = torch.randn(200, 2, dtype=torch.float64, generator=gen(), requires_grad=True)
    autograd = torch.autograd.grad(mixture.log_prob(x).sum(), x)[0]
    assert torch.allclose(mixture.score(x.detach()), autograd, atol=1e-10)


def test_mixture_log_prob_integrates_to_one():
    mixture = GaussianMixture(torch.tensor([[-1.0], [2.0]]), 0.5, torch.tensor([0.3, 0.7]))
    grid = torch.linspace(-8, 10, 20001, dtype=torch.float64)[:, None]
    total = mixture.log_prob(grid).exp().sum().item() * (18 / 20000)
    assert abs(total - 1) < 1e-6


def test_noised_mixture_matches_the_forward_process_moments():
    mixture = gaussians8_mixture()
    ab = 0.3
    noisy = mixture.noised(ab**0.5, (1 - ab) ** 0.5)
    x0 = mixture.sample(200_000, gen(1))
    x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(x0.shape, generator=gen(2), dtype=torch.float64)
    direct = noisy.sample(200_000, gen(3))
    assert torch.allclose(x_t.var(0), direct.var(0), atol=0.01)


def test_tweedie_with_the_eps_score_is_x0_hat():
    x_t = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=gen())
    eps = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=gen(1))
    t = 437
    ab = SCHEDULE.alpha_bars[t].item()
    got = tweedie_x0(x_t, score_from_eps(eps, ab), ab)
    assert torch.allclose(got, x0_from_eps(SCHEDULE, x_t, torch.full((3,), t), eps), atol=1e-12)
    assert torch.allclose(eps_from_score(score_from_eps(eps, ab), ab), eps, atol=1e-14)


def test_tweedie_gives_the_gaussian_posterior_mean():
    # x_0 ~ N(m, s^2): E[x_0 | x_t] = m + sqrt(ab) s^2 / (ab s^2 + 1 - ab) (x_t - sqrt(ab) m)
    m, s, ab = 0.7, 0.4, 0.55
    prior = GaussianMixture(torch.tensor([[m]]), s)
    x_t = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    score = prior.noised(ab**0.5, (1 - ab) ** 0.5).score(x_t)
    expected = m + ab**0.5 * s**2 / (ab * s**2 + 1 - ab) * (x_t - ab**0.5 * m)
    assert torch.allclose(tweedie_x0(x_t, score, ab), expected, atol=1e-12)


def test_gaussians8_mixture_is_the_law_of_the_chapter_1_toy():
    from ddpm_edu.data import make_toy_2d

    mixture = gaussians8_mixture()
    toy = make_toy_2d("gaussians8", n=4000).double()
    own = mixture.sample(4000, gen())
    assert abs(mixture.log_prob(toy).mean() - mixture.log_prob(own).mean()) < 0.05


# ---------------------------------------------------------------- Langevin and the SDE

def test_unadjusted_langevin_has_the_predicted_stationary_variance():
    s, delta = 0.5, 0.4  # variance s^2 / (1 - delta / 4 s^2) = 0.25 / 0.6
    target = GaussianMixture(torch.zeros(1, 1), s)
    x = langevin(target.score, torch.zeros(20000, 1, dtype=torch.float64), delta, 200, gen())
    assert abs(x.var().item() - s**2 / (1 - delta / (4 * s**2))) < 0.02


def test_annealed_langevin_reaches_every_mode():
    mixture = gaussians8_mixture()
    sigmas = [1.5, 0.8, 0.4, 0.2, 0.05]
    start = torch.full((1000, 2), 2.5, dtype=torch.float64)
    x = annealed_langevin(lambda y, sigma: mixture.noised(1.0, sigma).score(y), start, sigmas, 2e-3, 100, gen())
    share = torch.bincount(torch.cdist(x, mixture.means).argmin(1), minlength=8) / len(x)
    assert share.min() > 0.06


def test_vp_sde_alpha_bar_tracks_the_discrete_schedule():
    vp = VPSDE()
    gap = max(abs(vp.alpha_bar((i + 1) / 1000) - SCHEDULE.alpha_bars[i].item()) for i in range(1000))
    assert gap < 0.01


def test_probability_flow_ode_and_reverse_sde_reach_the_data_variance():
    vp, prior = VPSDE(), GaussianMixture(torch.zeros(1, 1), 0.5)

    def score(x, t):
        ab = vp.alpha_bar(t)
        return prior.noised(ab**0.5, (1 - ab) ** 0.5).score(x)

    x_T = torch.randn(20000, 1, dtype=torch.float64, generator=gen())
    for ode in (True, False):
        x = reverse_vp_sample(vp, score, x_T, 500, ode=ode, generator=gen(1))
        assert abs(x.var().item() - 0.25) < 0.02, ode


# ---------------------------------------------------------------- DDIM = Euler

def test_ddim_step_is_an_euler_step_of_the_probability_flow_ode():
    x_t = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=gen())
    eps = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=gen(1))
    for t, s in ((999, 899), (500, 100), (50, 0)):
        ab_t, ab_s = SCHEDULE.alpha_bars[t].item(), SCHEDULE.alpha_bars[s].item()
        x0_hat = x0_from_eps(SCHEDULE, x_t, torch.full((2,), t), eps)
        package = ddim_step(x0_hat, eps, ab_t, ab_s)
        euler = ddim_as_euler_step(x_t, eps, ab_t, ab_s)
        assert ((package - euler).norm() / package.norm()).item() <= 1e-12


# ---------------------------------------------------------------- guidance

class DummyConditional:
    """A conditional 'eps-model' of known form: eps = 0.1 x + 0.05 (y + 1)."""

    def __call__(self, x, t, y=None):
        y = torch.full((x.shape[0],), 10) if y is None else y
        return 0.1 * x + 0.05 * (y.float() + 1).view(-1, *[1] * (x.ndim - 1))


def test_classifier_free_guidance_is_guidance_by_the_implicit_classifier():
    model, x = DummyConditional(), torch.randn(3, 1, 4, 4, generator=gen())
    t, y = torch.full((3,), 300), torch.tensor([0, 4, 9])
    ab = SCHEDULE.alpha_bars[300].item()
    for w in (0.0, 1.0, 3.0):
        cfg = model_output(model, x, t, y, guidance_scale=w, null_label=10)
        via_bayes = model(x, t, torch.full_like(y, 10)) - w * (1 - ab) ** 0.5 * implicit_classifier_grad(
            model, x, t, y, ab, null_label=10)
        assert torch.allclose(cfg, via_bayes, atol=1e-6)


def test_classifier_gradient_and_guided_model():
    torch.manual_seed(0)
    classifier = NoisyDigitClassifier(channels=(4, 4, 4))
    x, t, y = torch.randn(2, 1, 28, 28, generator=gen()), torch.tensor([10, 900]), torch.tensor([3, 5])
    grad = classifier_log_prob_grad(classifier, x, t, y)
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    h = 1e-3 * torch.randn(x.shape, generator=gen(1))
    log_p = lambda z: classifier(z, t).log_softmax(1).gather(1, y[:, None]).sum()
    assert abs((log_p(x + h) - log_p(x - h)).item() / 2 - (grad * h).sum().item()) < 1e-4
    model = DummyConditional()
    unguided = ClassifierGuidedModel(model, classifier, SCHEDULE, 0.0)(x, t, y)
    assert torch.equal(unguided, model(x, t, torch.full_like(y, 10)))
    guided = ClassifierGuidedModel(model, classifier, SCHEDULE, 2.0, base="conditional")(x, t, y)
    ab = SCHEDULE.alpha_bars[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(guided, model(x, t, y) - 2.0 * (1 - ab).sqrt() * grad, atol=1e-6)


def test_noisy_classifier_trains_and_the_shipped_one_loads():
    images = torch.rand(16, 1, 28, 28) * 2 - 1
    classifier = train_noisy_classifier(SCHEDULE, images, torch.arange(16) % 10, steps=2, batch_size=4)
    assert classifier(images[:3], torch.tensor([0, 1, 2])).shape == (3, 10)
    shipped = load_noisy_classifier()
    with torch.no_grad():
        assert shipped(images[:2], torch.tensor([0, 999])).shape == (2, 10)


# ---------------------------------------------------------------- EDM

def test_karras_sigmas_endpoints_and_monotonicity():
    s = karras_sigmas(18, 0.002, 80.0)
    assert len(s) == 19 and s.dtype == torch.float64
    assert s[0].item() == pytest.approx(80.0, rel=1e-12) and s[-2].item() == pytest.approx(0.002, rel=1e-12)
    assert s[-1] == 0 and (s.diff() < 0).all()
    assert torch.allclose(karras_sigmas(5, 1.0, 5.0, rho=1.0, append_zero=False),
                          torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))
    assert len(karras_sigmas(1, 0.1, 1.0, append_zero=False)) == 1


def test_edm_preconditioning_gives_unit_variance_input_and_target():
    sd = 0.5
    for sigma in (0.01, 0.5, 3.0, 80.0):
        c = edm_preconditioning(sigma, sd)
        assert c["c_in"] ** 2 * (sigma**2 + sd**2) == pytest.approx(1.0)
        assert ((1 - c["c_skip"]) ** 2 * sd**2 + c["c_skip"] ** 2 * sigma**2) / c["c_out"] ** 2 == pytest.approx(1.0)


def test_eps_denoiser_is_the_x0_prediction():
    model = lambda x, t: 0.3 * x + 1e-4 * t.float().view(-1, 1, 1, 1)
    denoiser = EpsDenoiser(model, SCHEDULE)
    x_t = torch.randn(2, 1, 5, 5, dtype=torch.float64, generator=gen())
    for t in (0, 321, 999):
        ab = SCHEDULE.alpha_bars[t].item()
        tt = torch.full((2,), t)
        d = denoiser(x_t / ab**0.5, ((1 - ab) / ab) ** 0.5)
        assert torch.allclose(d, x0_from_eps(SCHEDULE, x_t, tt, model(x_t, tt)), atol=1e-10)
        assert vp_preconditioning(((1 - ab) / ab) ** 0.5, SCHEDULE)["c_noise"] == t
    assert denoiser.round_sigma(0.0) == 0.0 and denoiser.sigma_min < denoiser.sigma_max


def _ode_orders():
    s, lo, hi = 0.5, 0.002, 80.0
    denoiser = lambda x, sigma: x * s**2 / (s**2 + sigma**2)
    x = hi * torch.randn(100, dtype=torch.float64, generator=gen())
    exact = x * math.sqrt((s**2 + lo**2) / (s**2 + hi**2))
    ns = [32, 64, 128, 256]
    orders = {}
    for solver in ("euler", "heun"):
        errors = [(edm_sample(denoiser, x, karras_sigmas(n, lo, hi, append_zero=False), solver=solver) - exact).abs().max()
                  for n in ns]
        orders[solver] = -np.polyfit(np.log(ns), np.log([e.item() for e in errors]), 1)[0]
    return orders


def test_heun_is_second_order_and_euler_first_order():
    orders = _ode_orders()
    assert 1.8 < orders["heun"] < 2.3
    assert 0.9 < orders["euler"] < 1.1


def test_stochastic_sampler_without_churn_is_algorithm_1_and_is_reproducible():
    denoiser = lambda x, sigma: x * 0.25 / (0.25 + sigma**2)
    x = 10 * torch.randn(50, dtype=torch.float64, generator=gen())
    sigmas = karras_sigmas(8, 0.01, 10.0)
    assert torch.equal(edm_sample(denoiser, x, sigmas), edm_sample(denoiser, x, sigmas, s_churn=0.0, s_noise=1.003))
    a = edm_sample(denoiser, x, sigmas, s_churn=4.0, generator=gen(1))
    b = edm_sample(denoiser, x, sigmas, s_churn=4.0, generator=gen(1))
    assert torch.equal(a, b) and not torch.equal(a, edm_sample(denoiser, x, sigmas))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, name", [
    (lambda: score_from_eps(torch.zeros(2), 1.0), "alpha_bar"),
    (lambda: tweedie_x0(torch.zeros(2), torch.zeros(2), 0.0), "alpha_bar"),
    (lambda: ddim_as_euler_step(torch.zeros(2), torch.zeros(2), 0.5, 0.0), "alpha_bar_prev"),
    (lambda: GaussianMixture(torch.zeros(2, 2), 0.0), "std"),
    (lambda: GaussianMixture(torch.zeros(2), 1.0), "means"),
    (lambda: GaussianMixture(torch.zeros(2, 2), 1.0, torch.tensor([0.9, 0.9])), "weights"),
    (lambda: langevin(lambda x: x, torch.zeros(2), -1.0, 10), "step_size"),
    (lambda: langevin(lambda x: x, torch.zeros(2), 0.1, 0), "n_steps"),
    (lambda: annealed_langevin(lambda x, s: x, torch.zeros(2), [0.1, 1.0], 0.1, 10), "sigmas"),
    (lambda: reverse_vp_sample(VPSDE(), lambda x, t: x, torch.zeros(2), 10, t_end=0.0), "t_end"),
    (lambda: karras_sigmas(0, 0.1, 1.0), "n"),
    (lambda: karras_sigmas(5, 1.0, 0.5), "sigma_max"),
    (lambda: karras_sigmas(5, 0.1, 1.0, rho=0), "rho"),
    (lambda: edm_preconditioning(-1.0), "sigma"),
    (lambda: edm_sample(lambda x, s: x, torch.zeros(2), karras_sigmas(3, 0.1, 1.0), solver="rk4"), "solver"),
    (lambda: edm_sample(lambda x, s: x, torch.zeros(2), torch.tensor([1.0, 2.0])), "sigmas"),
    (lambda: ClassifierGuidedModel(None, None, SCHEDULE, 1.0, base="both"), "base"),
    (lambda: ClassifierGuidedModel(None, None, SCHEDULE, -1.0), "scale"),
    (lambda: train_noisy_classifier(SCHEDULE, torch.zeros(2, 1, 28, 28), torch.zeros(2), steps=0), "steps"),
    (lambda: load_noisy_classifier("/nonexistent/classifier"), "path"),
])
def test_bad_input_raises_a_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
