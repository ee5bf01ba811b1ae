"""ddpm_edu.applications and ddpm_edu.evaluation (chapter 6) and the command line: hooks into the one reverse
loop, exact known pixels, strength 0, denoising that helps, RePaint's schedule, clear errors, and each command on
a PNG drawn here."""

import pytest
import torch
from PIL import Image, ImageDraw

from ddpm_edu import applications as apps
from ddpm_edu import evaluation
from ddpm_edu.cli import main
from ddpm_edu.models import make_model
from ddpm_edu.sampling import sample
from ddpm_edu.schedules import make_schedule


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return make_model("tiny").eval(), make_schedule("linear", T=1000)


@pytest.fixture(scope="module")
def reference():
    from ddpm_edu.checkpoint import load_model

    model, schedule, config = load_model()
    return model, schedule, config["prediction_type"]


@pytest.fixture(scope="module")
def digits():
    from ddpm_edu.data import load_dataset

    heldout = load_dataset("mnist-subset", "heldout")
    return heldout.images[::250][:4], heldout.labels[::250][:4]


# ---- the reverse loop's explicit timesteps (RePaint's jumps) ----

def test_explicit_monotonic_timesteps_equal_steps(tiny):
    model, schedule = tiny
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ts = [999, 666, 332]  # sampling_timesteps(1000, 3), trailing
    a = sample(model, schedule, x_T=x_T, sampler="ddim", steps=3)
    b = sample(model, schedule, x_T=x_T, sampler="ddim", timesteps=ts)
    assert torch.equal(a, b)


def test_jumps_back_up_renoise_without_calling_the_model(tiny):
    model, schedule = tiny
    calls = []

    def counting(x, t, y=None):
        calls.append(int(t[0]))
        return model(x, t, y)

    steps = apps.repaint_timesteps(1000, 6, jump_length=2, resample=3)
    _, traj = sample(counting, schedule, (1, 1, 28, 28), sampler="ddpm", timesteps=steps,
                     generator=torch.Generator().manual_seed(0), return_trajectory=True)
    model_steps = [t for i, t in enumerate(steps) if i + 1 == len(steps) or steps[i + 1] < t]
    assert calls == model_steps == traj.timesteps.tolist()
    assert len(traj.xt) == len(model_steps) + 1


def test_repaint_schedule():
    assert apps.repaint_timesteps(1000, 4, jump_length=2, resample=1) == [999, 749, 499, 249]
    assert apps.repaint_timesteps(1000, 4, jump_length=2, resample=2) == [999, 749, 499, 999, 749, 499, 249]
    with pytest.raises(ValueError, match="jump_length"):
        apps.repaint_timesteps(1000, 4, jump_length=0)


def test_bad_timesteps(tiny):
    model, schedule = tiny
    with pytest.raises(ValueError, match="timesteps"):
        sample(model, schedule, (1, 1, 28, 28), timesteps=[999, 999])
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        sample(model, schedule, (1, 1, 28, 28), timesteps=[1000, 10])
    with pytest.raises(ValueError, match="replaces steps"):
        sample(model, schedule, (1, 1, 28, 28), timesteps=[10, 5], steps=2)


# ---- the applications with an untrained tiny model (mechanics) ----

@pytest.mark.parametrize("method", ["replacement", "repaint"])
@pytest.mark.parametrize("shape", apps.MASK_SHAPES)
def test_inpainting_keeps_known_pixels_exactly(tiny, method, shape):
    model, schedule = tiny
    image = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    known = apps.make_mask(shape, generator=torch.Generator().manual_seed(0))
    assert known.any() and not known.all()
    out = apps.inpaint(model, schedule, image, known, method=method, steps=4, jump_length=2, resample=2,
                       generator=torch.Generator().manual_seed(0))
    k = known.expand_as(image)
    assert torch.equal(out[k], image[k])
    assert not torch.equal(out[~k], image[~k])


def test_strength_zero_returns_the_input(tiny):
    model, schedule = tiny
    guide = evaluation.sketch_digit(7)
    assert torch.equal(apps.sdedit(model, schedule, guide, 0.0), guide)
    assert not torch.equal(apps.sdedit(model, schedule, guide, 0.3, steps=4), guide)


def test_sigma_maps_to_matching_step():
    schedule = make_schedule("linear", T=1000)
    for sigma in (0.05, 0.1, 0.3, 0.5, 1.0):
        t = apps.sigma_to_timestep(schedule, sigma)
        ab = schedule.alpha_bars[t].item()
        assert abs(((1 - ab) / ab) ** 0.5 / 2 - sigma) < 0.02 * sigma + 1e-3
    assert apps.sigma_to_timestep(schedule, 0.1) < apps.sigma_to_timestep(schedule, 0.2)


def test_estimate_sigma(digits):
    clean, _ = digits
    for sigma in (0.1, 0.3):
        noisy = clean + 2 * sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
        assert abs(apps.estimate_sigma(noisy) - sigma) < 0.2 * sigma


@pytest.mark.parametrize("call, match", [
    (lambda m, s: apps.sdedit(m, s, evaluation.sketch_digit(1), 1.5), "strength"),
    (lambda m, s: apps.denoise(m, s, torch.zeros(1, 1, 28, 28), 0.0), "sigma"),
    (lambda m, s: apps.denoise(m, s, torch.zeros(1, 1, 28, 28), 2.0), "sigma"),
    (lambda m, s: apps.inpaint(m, s, torch.zeros(1, 1, 28, 28), torch.ones(1, 1, 8, 8, dtype=torch.bool)), "size"),
    (lambda m, s: apps.inpaint(m, s, torch.zeros(1, 1, 28, 28), apps.make_mask("box"), method="x"), "method"),
    (lambda m, s: apps.make_mask("circle"), "mask shape"),
    (lambda m, s: apps.estimate_sigma(torch.full((1, 1, 28, 28), float("nan"))), "noisy contains NaN"),
    (lambda m, s: apps.denoise(m, s, torch.full((1, 1, 28, 28), float("nan")), 0.2), "noisy contains NaN"),
    (lambda m, s: apps.denoise(m, s, torch.full((1, 1, 28, 28), float("nan"))), "noisy contains NaN"),
])
def test_bad_arguments(tiny, call, match):
    with pytest.raises(ValueError, match=match):
        call(*tiny)


# ---- with the reference model ----

def test_denoising_raises_psnr_at_every_sigma(reference, digits):
    model, schedule, prediction_type = reference
    clean, _ = digits
    g = torch.Generator().manual_seed(0)
    for sigma in (0.1, 0.3, 0.5):
        noisy = clean + 2 * sigma * torch.randn(clean.shape, generator=g)
        out = apps.denoise(model, schedule, noisy, sigma, steps=3, generator=g, prediction_type=prediction_type)
        gain = evaluation.psnr(out, clean) - evaluation.psnr(noisy.clamp(-1, 1), clean)
        assert (gain > 3).all(), (sigma, gain)


def test_synthesize_guidance_zero_is_one_pass(tiny):
    model, schedule = tiny
    batches = []

    def spy(x, t, y=None):
        batches.append(len(x))
        return model(x, t, y)

    spy.num_classes = 10
    apps.synthesize(spy, schedule, torch.arange(3), guidance_scale=0.0, steps=2)
    apps.synthesize(spy, schedule, torch.arange(3), guidance_scale=3.0, steps=2)
    assert batches == [3, 3, 6, 6]


# ---- the command line on a PNG made outside the package ----

@pytest.fixture
def drawn(tmp_path):
    """A dark '7' on a light, RGB, 64 x 80 canvas, and a half mask of the same size."""
    image = Image.new("RGB", (64, 80), "white")
    ImageDraw.Draw(image).line([(16, 14), (50, 14), (28, 68)], fill=(20, 20, 20), width=7)
    image.save(tmp_path / "seven.png")
    mask = Image.new("L", (64, 80), 0)
    ImageDraw.Draw(mask).rectangle([0, 40, 64, 80], fill=255)
    mask.save(tmp_path / "mask.png")
    return tmp_path


@pytest.mark.parametrize("args", [
    ["denoise", "--steps", "2"],
    ["denoise", "--sigma", "0.2", "--samples", "2", "--steps", "2"],
    ["inpaint", "--mask", "MASK", "--steps", "4", "--jump-length", "2", "--resample", "2"],
    ["inpaint", "--mask-shape", "box", "--method", "replacement", "--steps", "3", "--n", "2"],
    ["sdedit", "--strength", "0.4", "--steps", "5"],
])
def test_cli_commands_write_their_output(drawn, capsys, args):
    out = drawn / "out.png"
    args = [str(drawn / "mask.png") if a == "MASK" else a for a in args]
    assert main([args[0], str(drawn / "seven.png"), "--out", str(out), *args[1:]]) == 0
    printed = capsys.readouterr().out
    assert "centre-cropped 64x80 to 64x64" in printed and "resized 64x64 to 28x28" in printed
    assert "inverted" in printed and "colour converted to grey" in printed
    written = Image.open(out)
    assert written.size == (28, 28) if "--n" not in args else written.size[0] > 28


@pytest.mark.parametrize("args, message", [
    (["denoise", "IMG", "--sigma", "1.5"], "--sigma"),
    (["denoise", "IMG", "--sigma", "0"], "--sigma"),
    (["sdedit", "IMG", "--strength", "-0.1"], "--strength"),
    (["sdedit", "IMG"], "--strength"),
    (["inpaint", "IMG", "--mask", "SMALL"], "same size"),
    (["inpaint", "IMG"], "--mask"),
    (["denoise", "JUNK"], "cannot read"),
    (["denoise", "MISSING"], "no such file"),
])
def test_cli_errors_are_one_line(drawn, capsys, args, message):
    Image.new("L", (10, 10), 0).save(drawn / "small.png")
    (drawn / "junk.png").write_text("not an image")
    names = {"IMG": "seven.png", "SMALL": "small.png", "JUNK": "junk.png", "MISSING": "missing.png"}
    args = [str(drawn / names[a]) if a in names else a for a in args]
    assert main([*args, "--out", str(drawn / "out.png")]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (drawn / "out.png").exists()
