"""ddpm_edu.sampling: golden values from diffusers' scheduler tests, sampler identities, hooks and errors."""

import pytest
import torch

from ddpm_edu.diffusion import eps_from_x0, v_from_eps_x0, x0_from_eps
from ddpm_edu.sampling import (SAMPLERS, DDIMSampler, DPMSolverPP2M, Sampler, Trajectory, ddim_step, ddpm_step,
                               make_sampler, model_output, predict_x0_eps, prediction_type_of, register_sampler, sample,
                               sample_n, sampling_timesteps)
from ddpm_edu.schedules import make_schedule


@pytest.fixture(scope="module")
def sched():
    return make_schedule("linear", T=1000)


def dummy_model(x, t):
    """diffusers' test model: x * t / (t + 1), t the integer timestep (a tensor (B,) here)."""
    t = t.reshape(-1, *([1] * (x.ndim - 1)))
    return x * t / (t + 1)


def dummy_sample_deter():
    """diffusers' dummy_sample_deter: arange(768).reshape(C, H, W, B) / 768, permuted to (B, C, H, W)."""
    return (torch.arange(768).reshape(3, 8, 8, 4) / 768).permute(3, 0, 1, 2)


# ---- golden values (diffusers tests/schedulers/test_scheduler_ddpm.py and test_scheduler_ddim.py) ----

def test_ddpm_full_loop_matches_diffusers(sched):
    x = sample(dummy_model, sched, x_T=dummy_sample_deter(), sampler="ddpm", variance="small", clip_x0=True,
               generator=torch.manual_seed(0))
    assert abs(x.abs().sum().item() - 258.9606) < 1e-2
    assert abs(x.abs().mean().item() - 0.3372) < 1e-3


@pytest.mark.parametrize("rederive_eps", [False, True])
def test_ddim_10_steps_matches_diffusers(sched, rederive_eps):
    # diffusers' published numbers are for its default pairing (clipped x0, raw eps); with this dummy model x0_hat
    # stays inside [-1, 1], so use_clipped_model_output=True gives the same sums (checked with diffusers 0.42.1)
    x = sample(dummy_model, sched, x_T=dummy_sample_deter(), sampler="ddim", steps=10, eta=0.0, spacing="leading",
               rederive_eps=rederive_eps)
    assert abs(x.abs().sum().item() - 172.0067) < 1e-2
    assert abs(x.abs().mean().item() - 0.223967) < 1e-3


# Reference numbers for DPM-Solver++(2M) from diffusers 0.42.1, computed once with
#   s = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
#                                   beta_schedule="linear", solver_order=2, algorithm_type="dpmsolver++")
#   s.set_timesteps(S); x = dummy_sample_deter; for t in s.timesteps: x = s.step(x * t / (t + 1), t, x).prev_sample
# (defaults: no thresholding, linspace spacing, lower_order_final, final_sigmas_type="zero", i.e. alpha_bar = 1 at
# the end, as in our loop). Their own test file pins a different configuration (final sigma = sigma_min).
DPM_GOLDEN = {
    10: ([999, 899, 799, 699, 599, 500, 400, 300, 200, 100], 185.0114, 0.240900),
    25: ([999, 959, 919, 879, 839, 799, 759, 719, 679, 639, 599, 559, 519, 480, 440, 400, 360, 320, 280, 240, 200,
          160, 120, 80, 40], 195.3936, 0.254419),
}


@pytest.mark.parametrize("steps", sorted(DPM_GOLDEN))
def test_dpm_solver_pp_2m_matches_diffusers(sched, steps):
    timesteps, ref_sum, ref_mean = DPM_GOLDEN[steps]
    x = sample(dummy_model, sched, x_T=dummy_sample_deter(), sampler="dpmpp-2m", timesteps=timesteps, clip_x0=False)
    assert abs(x.abs().sum().item() - ref_sum) < 1e-2
    assert abs(x.abs().mean().item() - ref_mean) < 1e-4


# SDE-DPM-Solver++(2M) against diffusers 0.42.1, computed once with the same scheduler and algorithm_type=
# "sde-dpmsolver++" (midpoint rule): x = s.step(x * t / (t + 1), t, x, generator=torch.manual_seed(0)).prev_sample.
# diffusers draws its noise from that generator at every step (the last draw is multiplied by sigma = 0); ours
# draws the same numbers in the same order and none at the last step.
SDE_DPM_GOLDEN = {10: (278.8483, 0.363084), 25: (298.5156, 0.388692)}


@pytest.mark.parametrize("steps", sorted(SDE_DPM_GOLDEN))
def test_sde_dpm_solver_pp_2m_matches_diffusers(sched, steps):
    ref_sum, ref_mean = SDE_DPM_GOLDEN[steps]
    x = sample(dummy_model, sched, x_T=dummy_sample_deter(), sampler="sde-dpmpp-2m", timesteps=DPM_GOLDEN[steps][0],
               clip_x0=False, generator=torch.manual_seed(0))
    assert abs(x.abs().sum().item() - ref_sum) < 1e-2
    assert abs(x.abs().mean().item() - ref_mean) < 1e-4


def test_sde_dpm_solver_pp_2m_matches_diffusers_live(sched):
    diffusers = pytest.importorskip("diffusers")
    s = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                                              beta_schedule="linear", solver_order=2, algorithm_type="sde-dpmsolver++")
    s.set_timesteps(15)
    g, x = torch.manual_seed(3), dummy_sample_deter()
    for t in s.timesteps:
        x = s.step(x * t / (t + 1), t, x, generator=g).prev_sample
    ours = sample(dummy_model, sched, x_T=dummy_sample_deter(), sampler="sde-dpmpp-2m",
                  timesteps=s.timesteps.tolist(), clip_x0=False, generator=torch.manual_seed(3))
    assert (ours - x).abs().max().item() < 1e-4


def test_sde_dpm_solver_first_order_step_is_ddpm_small():
    g = torch.Generator().manual_seed(0)
    x, x0_hat, z = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(3))
    from ddpm_edu.sampling import SDEDPMSolverPP2M
    for ab_t, ab_s in ((0.01, 0.2), (0.5, 0.9)):
        got = SDEDPMSolverPP2M().step(x, x0_hat, None, ab_t, ab_s, z)
        assert torch.allclose(got, ddpm_step(x, x0_hat, ab_t, ab_s, "small", z), atol=1e-6)


@pytest.mark.parametrize("spacing, expected", [
    ("trailing", [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ("linspace", [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
    ("leading", [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
])
def test_spacings_match_lin_et_al_table(spacing, expected):
    assert sampling_timesteps(1000, 10, spacing).tolist() == expected


def test_all_spacings_visit_every_step_when_steps_is_T():
    for spacing in ("trailing", "linspace", "leading"):
        assert sampling_timesteps(50, None, spacing).tolist() == list(range(49, -1, -1))


# ---- sampler identities ----

def gaussian_data_model(schedule, mu=0.3, s=0.2):
    """The exact eps-predictor for data x0 ~ N(mu, s^2): E[eps | x_t]."""
    def model(x, t):
        ab = schedule.alpha_bars[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)
    return model


def biased_gaussian_model(schedule, mu=0.3, s=0.5, bias=0.02):
    """The exact eps-predictor for x0 ~ N(mu, s^2) plus a small constant error, like an imperfect network: at high
    noise x0_hat = (x - sqrt(1 - ab) eps_hat) / sqrt(ab) is far outside [-1, 1] and gets clipped."""
    exact = gaussian_data_model(schedule, mu, s)
    return lambda x, t: exact(x, t) + bias


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_eta_one_is_ddpm_small_on_the_same_draws(clip_x0):
    """Also with clipping: the re-derived eps_hat keeps (x0_hat, eps_hat) consistent, and for a consistent pair the
    DDIM step with eta = 1 is the posterior mean plus the small variance's noise."""
    sched = make_schedule("cosine", T=100)
    model = biased_gaussian_model(sched, 0.3, 0.5, bias=0.05)  # x0_hat leaves [-1, 1] at high noise
    kw = dict(clip_x0=clip_x0, steps=25)
    ddpm = sample(model, sched, (512, 1, 1, 1), sampler="ddpm", generator=torch.Generator().manual_seed(0), **kw)
    ddim = sample(model, sched, (512, 1, 1, 1), sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.allclose(ddpm, ddim, atol=1e-4)
    if clip_x0:
        raw = sample(model, sched, (512, 1, 1, 1), sampler="ddim", eta=1.0, rederive_eps=False,
                     generator=torch.Generator().manual_seed(0), **kw)
        assert not torch.allclose(ddpm, raw, atol=1e-2)  # the old pairing breaks the identity


def test_samplers_on_gaussian_data_bracket_the_true_variance():
    """With the exact eps-predictor for x0 ~ N(0.3, 0.2^2), every sampler gets the mean; DDIM (eta=0) the spread;
    the small variance under- and the large variance over-estimates it (Ho et al. 2020, sec. 3.2)."""
    sched = make_schedule("cosine", T=100)
    model = gaussian_data_model(sched, 0.3, 0.2)
    stds = {}
    for name, kw in {"ddim": dict(sampler="ddim"), "small": dict(variance="small"), "large": dict(variance="large")}.items():
        x = sample(model, sched, (20000, 1, 1, 1), clip_x0=False, generator=torch.Generator().manual_seed(1), **kw)
        assert abs(x.mean().item() - 0.3) < 0.01
        stds[name] = x.std().item()
    assert abs(stds["ddim"] - 0.2) < 0.01
    assert stds["small"] < 0.2 < stds["large"]


@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddpm", 20), ("ddim", 10)])
def test_x0_and_v_models_give_the_eps_models_samples(sched, sampler, steps):
    def x0_model(x, t):
        return x0_from_eps(sched, x, t, dummy_model(x, t))

    def v_model(x, t):
        eps = dummy_model(x, t)
        return v_from_eps_x0(sched, t, eps, x0_from_eps(sched, x, t, eps))

    results = {}
    for name, m in (("eps", dummy_model), ("x0", x0_model), ("v", v_model)):
        results[name] = sample(m, sched, x_T=dummy_sample_deter(), sampler=sampler, steps=steps, prediction_type=name,
                               generator=torch.Generator().manual_seed(0))
    assert torch.allclose(results["x0"], results["eps"], atol=1e-3)
    assert torch.allclose(results["v"], results["eps"], atol=1e-3)


def test_steps_are_the_literal_formulas(sched):
    g = torch.Generator().manual_seed(3)
    x_t, eps, z = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(3))
    ab_t, ab_s = sched.alpha_bars[500].item(), sched.alpha_bars[499].item()
    x0 = x0_from_eps(sched, x_t, torch.tensor([500, 500]), eps)
    mean = sched.posterior_mean_coef1[500].item() * x0 + sched.posterior_mean_coef2[500].item() * x_t
    assert torch.allclose(ddpm_step(x_t, x0, ab_t, ab_s), mean, atol=1e-5)
    large = ddpm_step(x_t, x0, ab_t, ab_s, "large", z)
    assert torch.allclose(large, mean + sched.betas[500].sqrt().item() * z, atol=1e-5)
    assert torch.allclose(ddim_step(x0, eps, ab_t, 1.0), x0)  # a DDIM step to alpha_bar = 1 returns x0_hat


# ---- the loop: determinism, trajectory, hooks ----

def test_same_generator_seed_same_samples(sched):
    a = sample(dummy_model, sched, (2, 1, 4, 4), steps=10, generator=torch.Generator().manual_seed(7))
    b = sample(dummy_model, sched, (2, 1, 4, 4), steps=10, generator=torch.Generator().manual_seed(7))
    c = sample(dummy_model, sched, (2, 1, 4, 4), steps=10, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_trajectory_shapes_and_ends(sched):
    x_T = torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    x, traj = sample(dummy_model, sched, x_T=x_T, sampler="ddim", steps=10, return_trajectory=True)
    assert isinstance(traj, Trajectory)
    assert traj.timesteps.tolist() == sampling_timesteps(1000, 10).tolist()
    assert traj.xt.shape == (11, 3, 1, 5, 5) and traj.x0_hat.shape == (10, 3, 1, 5, 5)
    assert torch.equal(traj.xt[0], x_T) and torch.equal(traj.xt[-1], x)
    assert traj.x0_hat.abs().max() <= 1.0  # clipped


def test_t_start_starts_the_loop_at_that_step(sched):
    x_T = torch.zeros(2, 1, 4, 4)
    _, traj = sample(dummy_model, sched, x_T=x_T, sampler="ddim", steps=5, t_start=299, return_trajectory=True)
    assert traj.timesteps.tolist() == [299, 239, 179, 119, 59]
    _, traj = sample(dummy_model, sched, x_T=x_T, t_start=9, return_trajectory=True,
                     generator=torch.Generator().manual_seed(0))
    assert traj.timesteps.tolist() == list(range(9, -1, -1))


def test_on_step_sees_every_step_and_can_replace_x(sched):
    seen = []

    def on_step(i, t, x, x0_hat):
        seen.append((i, t, tuple(x.shape), tuple(x0_hat.shape)))
        return torch.full_like(x, 0.5)

    x = sample(dummy_model, sched, (2, 1, 4, 4), sampler="ddim", steps=4, on_step=on_step)
    assert [(i, t) for i, t, _, _ in seen] == [(0, 749), (1, 499), (2, 249), (3, -1)]
    assert all(s == (2, 1, 4, 4) for _, _, s, _ in seen)
    assert torch.equal(x, torch.full_like(x, 0.5))


def test_on_step_returning_none_keeps_x(sched):
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = sample(dummy_model, sched, (2, 1, 4, 4), steps=10, generator=g())
    b = sample(dummy_model, sched, (2, 1, 4, 4), steps=10, generator=g(), on_step=lambda *args: None)
    assert torch.equal(a, b)


class LabelModel(torch.nn.Module):
    """Outputs the label everywhere, so guidance arithmetic can be read off the output."""

    num_classes = 10

    def forward(self, x, t, y=None):
        y = torch.full((x.shape[0],), -1.0) if y is None else y.float()
        return y.reshape(-1, 1, 1, 1).expand_as(x).clone()


def test_classifier_free_guidance_formula():
    m = LabelModel()
    x, t, y = torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), torch.tensor([1, 2, 3])
    out = model_output(m, x, t, labels=y, guidance_scale=3.0)
    expected = 10 + 3.0 * (y.float() - 10)  # uncond (null label = num_classes = 10) + w (cond - uncond)
    assert torch.allclose(out[:, 0, 0, 0], expected)
    assert torch.equal(model_output(m, x, t, labels=y), y.float().reshape(-1, 1, 1, 1).expand_as(x))
    assert torch.allclose(model_output(m, x, t, labels=y, guidance_scale=2.0, null_label=0)[:, 0, 0, 0], 2 * y.float())
    assert torch.equal(model_output(m, x, t), torch.full_like(x, -1.0))


def test_guided_sampling_runs_and_int_labels_broadcast(sched):
    m = LabelModel()
    x = sample(m, sched, (3, 1, 2, 2), sampler="ddim", steps=3, labels=4, guidance_scale=2.0, clip_x0=False)
    assert x.shape == (3, 1, 2, 2) and torch.isfinite(x).all()


def test_predict_x0_eps_rederives_eps_from_the_clipped_x0(sched):
    x, t = torch.full((1, 1, 2, 2), 3.0), torch.tensor([500])
    no_noise = lambda x, t: torch.zeros_like(x)  # noqa: E731 - eps_hat = 0, so x0_hat = x / sqrt(ab) = 10.7
    x0, eps = predict_x0_eps(no_noise, sched, x, t)
    assert torch.equal(x0, torch.ones_like(x)) and (eps > 1).all()
    ab = sched.alpha_bars[500].item()
    assert torch.allclose(ab**0.5 * x0 + (1 - ab) ** 0.5 * eps, x, atol=1e-5)  # still a consistent pair
    x0_raw, eps_raw = predict_x0_eps(no_noise, sched, x, t, rederive_eps=False)
    assert torch.equal(x0_raw, x0) and torch.equal(eps_raw, torch.zeros_like(x))


def test_consistent_clipping_makes_ddim_converge_as_steps_grow(sched):
    """With x0_hat clipped but the raw eps_hat kept, every DDIM step adds about sqrt(ab) (clip(x0_hat) - x0_hat),
    an error that does not shrink with the step size: 1000 steps drift far from 50. Re-deriving eps_hat from the
    clipped x0_hat removes it, and the 1000-step answer agrees with the 50-step one."""
    model = biased_gaussian_model(sched)
    x_T = torch.randn(2000, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gap = {}
    for rederive in (True, False):
        runs = {n: sample(model, sched, x_T=x_T, sampler="ddim", steps=n, rederive_eps=rederive) for n in (50, 1000)}
        gap[rederive] = (runs[1000] - runs[50]).abs().mean().item()
    assert gap[True] < 0.05  # measured 0.018
    assert gap[False] > 0.15  # measured 0.25: the old pairing fails this test


def test_dpm_solver_is_second_order_on_an_ode_with_a_known_answer():
    sched = make_schedule("linear", T=1000)
    model = gaussian_data_model(sched, 0.3, 0.5)
    x_T = torch.randn(500, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = sample(model, sched, x_T=x_T, sampler="ddim", clip_x0=False)  # 1000 steps: the ODE's answer
    err = {(name, n): (sample(model, sched, x_T=x_T, sampler=name, steps=n, clip_x0=False) - exact).abs().max().item()
           for name in ("ddim", "dpmpp-2m") for n in (20, 50)}
    assert err[("dpmpp-2m", 20)] < err[("ddim", 20)] / 3
    assert err[("dpmpp-2m", 20)] / err[("dpmpp-2m", 50)] > 4  # 2.5x the steps: ~6x less error (second order)
    assert err[("ddim", 20)] / err[("ddim", 50)] < 3.5  # first order: ~2.5x


# ---- samplers as objects ----

def test_registry_lists_every_sampler_and_builds_them():
    assert {"ddpm", "ddim", "dpmpp-2m"} <= set(SAMPLERS)
    for name, cls in SAMPLERS.items():
        assert issubclass(cls, Sampler) and cls.name == name
        assert isinstance(make_sampler(name), cls)
    assert make_sampler("ddim", eta=0.5).needs_noise and not make_sampler("ddim").needs_noise
    with pytest.raises(ValueError, match="sampler must be one of"):
        make_sampler("euler")
    with pytest.raises(ValueError, match="eta is not an option of sampler='dpmpp-2m'"):
        make_sampler("dpmpp-2m", eta=0.3)


def test_a_new_sampler_is_one_registered_class(sched):
    class HalfwayDDIM(DDIMSampler):
        """DDIM with eta fixed at 0.5."""

        name = "test-halfway"

        def __init__(self):
            super().__init__(eta=0.5)

    try:
        register_sampler(HalfwayDDIM)
        g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
        a = sample(dummy_model, sched, (2, 1, 4, 4), sampler="test-halfway", steps=5, generator=g())
        b = sample(dummy_model, sched, (2, 1, 4, 4), sampler="ddim", eta=0.5, steps=5, generator=g())
        assert torch.equal(a, b)
        with pytest.raises(ValueError, match="already registered"):
            register_sampler(type("Other", (DDIMSampler,), {"name": "test-halfway"}))
    finally:
        SAMPLERS.pop("test-halfway", None)
    with pytest.raises(ValueError, match="Sampler subclass"):
        register_sampler(int)


def test_a_sampler_object_can_be_reused_and_restarts_its_memory(sched):
    solver = DPMSolverPP2M()
    a = sample(dummy_model, sched, x_T=dummy_sample_deter(), sampler=solver, steps=8, clip_x0=False)
    b = sample(dummy_model, sched, x_T=dummy_sample_deter(), sampler=solver, steps=8, clip_x0=False)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="set them on the sampler object"):
        sample(dummy_model, sched, x_T=dummy_sample_deter(), sampler=DDIMSampler(), eta=0.5)


def test_multistep_memory_is_forgotten_after_a_renoising_jump(sched):
    """A RePaint-style jump up re-noises x; DPM-Solver's next step must be first order (its previous x0_hat belongs
    to a different x), so it equals the run that starts fresh from the re-noised x."""
    x_T = dummy_sample_deter()
    seen = {}
    x = sample(dummy_model, sched, x_T=x_T, sampler="dpmpp-2m", timesteps=[999, 799, 899, 599, 399], clip_x0=False,
               generator=torch.Generator().manual_seed(0),
               on_step=lambda i, t, x, x0: seen.setdefault(t, x.clone()) if t == 799 else None)
    g = torch.Generator().manual_seed(0)
    renoised = torch.randn(x_T.shape, generator=g)  # the first draw of the run above is the jump's noise
    ab = sched.alpha_bars
    start = (ab[899] / ab[799]).sqrt().item() * seen[799] + (1 - ab[899] / ab[799]).sqrt().item() * renoised
    fresh = sample(dummy_model, sched, x_T=start, sampler="dpmpp-2m", timesteps=[899, 599, 399], clip_x0=False)
    assert torch.allclose(x, fresh, atol=1e-6)


def test_prediction_type_comes_from_the_models_config(sched):
    class X0Model(torch.nn.Module):
        class config:  # noqa: N801 - stands in for a UNetConfig
            prediction_type = "x0"
            num_classes = None

        def forward(self, x, t):
            return x0_from_eps(sched, x, t, dummy_model(x, t))

    assert prediction_type_of(X0Model()) == "x0" and prediction_type_of(dummy_model) == "eps"
    a = sample(X0Model(), sched, x_T=dummy_sample_deter(), sampler="ddim", steps=10)
    b = sample(dummy_model, sched, x_T=dummy_sample_deter(), sampler="ddim", steps=10)
    assert torch.allclose(a, b, atol=1e-4)


def test_sample_n_batches_and_labels(sched):
    x = sample_n(dummy_model, sched, 5, (1, 2, 2), batch_size=2, sampler="ddim", steps=3,
                 generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 2, 2)
    y = sample_n(LabelModel(), sched, 5, (1, 2, 2), batch_size=2, labels=torch.arange(5), sampler="ddim", steps=2,
                 clip_x0=False)
    assert y.shape == (5, 1, 2, 2)
    with pytest.raises(ValueError, match="labels must have n=5"):
        sample_n(LabelModel(), sched, 5, (1, 2, 2), labels=torch.arange(4))


def test_progress_bar_flag(sched, capsys):
    sample(dummy_model, sched, (1, 1, 2, 2), sampler="ddim", steps=3, progress=True)
    assert "ddim" in capsys.readouterr().err


def test_sample_n_shows_one_bar_with_the_total(sched, capsys):
    sample_n(dummy_model, sched, 5, (1, 2, 2), batch_size=2, sampler="ddim", steps=3, progress=True)
    err = capsys.readouterr().err
    assert "5 samples, 3 batches" in err and "9/9" in err and "3/3" not in err  # one bar: 3 batches x 3 steps


# ---- clear errors ----

@pytest.mark.parametrize("kwargs, match", [
    (dict(sampler="euler"), "sampler must be one of"),
    (dict(spacing="uniform"), "spacing must be one of"),
    (dict(variance="learned"), "variance must be one of"),
    (dict(prediction_type="score"), "prediction_type must be one of"),
    (dict(sampler="ddim", eta=1.5), "eta must be a number in"),
    (dict(sampler="ddpm", eta=0.5), "eta is not an option of sampler='ddpm'"),
    (dict(sampler="ddim", variance="large"), "variance is not an option of sampler='ddim'"),
    (dict(sampler=3), "sampler must be a Sampler or one of"),
    (dict(steps=0), r"steps must be an int in \[1, 1000\]"),
    (dict(steps=1001), r"steps must be an int in \[1, 1000\]"),
    (dict(steps=2.5), "steps must be an int"),
    (dict(guidance_scale=2.0), "needs labels"),
    (dict(t_start=10), "t_start needs x_T"),
    (dict(t_start=1000, x_T=torch.zeros(2, 1, 4, 4)), r"t_start must be an int step in \[0, 1000\)"),
    (dict(x_T=torch.zeros(3, 1, 4, 4)), "does not match x_T's shape"),
    (dict(x_T=torch.full((2, 1, 4, 4), float("nan"))), "x_T contains NaN"),
    (dict(labels=torch.tensor([1, 2, 3])), r"labels must have shape \(2,\)"),
    (dict(labels=torch.tensor([1.0, 2.0])), "labels must hold integers"),
])
def test_bad_arguments_raise_clear_errors(sched, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(dummy_model, sched, (2, 1, 4, 4), **kwargs)


def test_bad_shape_and_bad_model_output(sched):
    with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
        sample(dummy_model, sched, None)
    with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
        sample(dummy_model, sched, (2, 0, 4))
    with pytest.raises(ValueError, match="the model must return its input's shape"):
        sample(lambda x, t: x[:, :1], sched, (2, 3, 4, 4), steps=2)
    with pytest.raises(ValueError, match="no class"):
        sample(lambda x, t, y: x, sched, (2, 1, 4, 4), steps=2, labels=1, guidance_scale=2.0)
