"""ddpm_edu.applications and ddpm_edu.evaluation (chapter 6) and the command line: hooks into the one reverse
loop, exact known pixels, strength 0, denoising that helps, RePaint's schedule, clear errors, and each command on
a PNG drawn here."""

import json
import math

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
    (lambda m, s: apps.denoise(m, s, torch.zeros(1, 1, 28, 28), 0.2, sampler="ddim", n_samples=2), "stochastic"),
    (lambda m, s: evaluation.typed_digit(10), "digit"),
])
def test_bad_arguments(tiny, call, match):
    with pytest.raises(ValueError, match=match):
        call(*tiny)


def test_one_step_denoising_returns_the_clipped_x0_hat(tiny):
    from ddpm_edu.sampling import predict_x0_eps

    model, schedule = tiny
    noisy = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.8
    t = apps.sigma_to_timestep(schedule, 0.3)
    x_t = schedule.alpha_bars[t].sqrt() * noisy
    x0_hat, _ = predict_x0_eps(model, schedule, x_t, torch.full((2,), t), clip_x0=False)
    assert x0_hat.abs().max() > 1  # an untrained model's x0_hat leaves the image range: clipping shows
    for sampler in ("ddim", "ddpm"):
        out = apps.denoise(model, schedule, noisy, 0.3, steps=1, sampler=sampler)
        torch.testing.assert_close(out, x0_hat.clamp(-1, 1), rtol=0, atol=1e-5)


def test_guidance_scale_is_one_plus_ho_salimans_w():
    """model_output's w is Ho & Salimans' eq. 6 with w_paper = w - 1: (1 + w_p) eps(y) - w_p eps(null)."""
    from ddpm_edu.sampling import model_output

    cond, uncond = torch.full((1, 1, 2, 2), 3.0), torch.full((1, 1, 2, 2), -1.0)

    def two_valued(x, t, y):
        return torch.where((y == 10).view(-1, 1, 1, 1), uncond.expand_as(x), cond.expand_as(x))

    two_valued.num_classes = 10
    for w in (0.0, 1.0, 1.3, 3.0):
        w_paper = w - 1
        out = model_output(two_valued, torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long),
                           torch.tensor([4]), guidance_scale=w)
        torch.testing.assert_close(out, (1 + w_paper) * cond - w_paper * uncond)


def test_hole_scores_look_only_inside_the_hole():
    reference = torch.zeros(2, 1, 28, 28)
    known = torch.ones(1, 1, 28, 28, dtype=torch.bool)
    known[..., 7:21, 7:21] = False
    x = reference.clone()
    x[:, :, 7:21, 7:21] += 0.2  # 0.1 on [0, 1] pixels inside the hole: MSE 0.01, PSNR 20 dB
    x[known.expand_as(x)] = 1.0  # known pixels far off: must not count
    torch.testing.assert_close(evaluation.hole_psnr(x, reference, ~known), torch.full((2,), 20.0, dtype=x.dtype))
    assert torch.equal(evaluation.hole_ssim(reference, reference, ~known), torch.ones(2, dtype=torch.float64))
    assert (evaluation.hole_ssim(x, reference, ~known) < 1).all()


def test_inpainting_table_rows(tiny, digits):
    model, schedule = tiny
    clean, labels = digits
    masks = {"box": apps.make_mask("box")}
    methods = {"fill": dict(method="replacement", steps=2, fills=3, mean_row=True),
               "told": dict(method="replacement", steps=2, label_given=True)}
    table, outputs = evaluation.inpainting_table(model, schedule, clean, labels, masks, methods, fills=2, fid=False)
    rows = table["box"]
    assert set(rows) == {"hole left black", "hole filled with the mean digit", "biharmonic (scikit-image)", "fill",
                         "fill, mean of 3", "told"}
    assert [name for name, r in rows.items() if r["label_given"]] == ["told"]
    assert rows["fill"]["fills"] == 3 and rows["told"]["fills"] == 2 and rows["fill, mean of 3"]["fills"] == 1
    assert math.isnan(rows["fill"]["fid"]) and math.isnan(rows["biharmonic (scikit-image)"]["diversity"])
    fills = outputs["box"]["fill"].view(3, *clean.shape)
    torch.testing.assert_close(outputs["box"]["fill, mean of 3"], fills.mean(0))
    assert "*" in evaluation.format_inpainting(table)


def test_typed_digit_is_a_centred_glyph_of_the_asked_height():
    for digit in range(10):
        x = evaluation.typed_digit(digit, height=20, jitter=0, scale=0)
        assert x.shape == (1, 1, 28, 28) and x.min() == -1 and x.max() == 1
        rows = torch.nonzero((x[0, 0] > -1).any(1)).flatten()
        assert 17 <= rows[-1] - rows[0] + 1 <= 22, (digit, rows)  # 20 rows, give or take hinting
        assert abs((rows[0] + rows[-1]).item() / 2 - 13.5) <= 1
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(evaluation.typed_digit(3, generator=g), evaluation.typed_digit(3, generator=g))


def test_results_script_quick_part_is_written_once(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "applications_tables.py"
    spec = importlib.util.spec_from_file_location("applications_tables", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--device", "cpu", "--quick", "--only", "sdedit", "--out-dir", str(tmp_path)]
    script.main(args)
    written = json.loads((tmp_path / "applications_sdedit.json").read_text())
    assert written["command"] == "python benchmarks/applications_tables.py " + " ".join(args)
    assert written["settings"]["quick"] and written["n"] == 6 and "hardware" in written
    assert set(written["curve"]) == {"0.0", "0.5", "1.0"}
    assert not list(tmp_path.glob("*.tmp"))
    capsys.readouterr()
    script.main(args)  # same settings: skipped
    assert "has these settings already" in capsys.readouterr().out
    assert json.loads((tmp_path / "applications_sdedit.json").read_text()) == written


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
