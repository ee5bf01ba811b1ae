"""Tests of ddpm_edu.configs, ddpm_edu.unet, ddpm_edu.dit and ddpm_edu.models (chapter 3): shapes, gradients,
conditioning, validation, configs."""

import json

import numpy as np
import pytest
import torch

from ddpm_edu.configs import PRESETS, DiTConfig, ModelConfig, UNetConfig, make_config
from ddpm_edu.dit import DiT, patchify, unpatchify
from ddpm_edu.models import architecture_summary, make_model
from ddpm_edu.unet import UNet, check_model_inputs, count_parameters, timestep_embedding

TINY_UNET = dict(base_channels=8, channel_mults=(1, 2, 2), attention_levels=(2,))
TINY_DIT = dict(patch_size=4, hidden_size=32, depth=2, num_heads=2)


def tiny_unet(**overrides) -> UNet:
    return UNet(UNetConfig(**{**TINY_UNET, **overrides}))


def tiny_dit(**overrides) -> DiT:
    return DiT(DiTConfig(**{**TINY_DIT, **overrides}))


def batch(b=4, c=1, h=28, w=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g) * 2 - 1
    t = torch.randint(0, 1000, (b,), generator=g)
    return x, t


def train_a_little(model, conditional=False, steps=3, seed=0):
    """A few Adam steps on a denoising-like objective, so that zero-initialized layers become non-zero."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, t = batch(8, model.config.in_channels, 16, 16)
    y = torch.arange(8) % (model.config.num_classes + 1) if conditional else None
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(x, t, y) - target).square().mean()
        loss.backward()
        optimizer.step()
    return x, t, y, target


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (16, 16), (20, 20), (27, 27), (13, 30), (1, 1)])
@pytest.mark.parametrize("channels", [1, 3])
def test_unet_output_shape_equals_input_shape(size, channels):
    model = tiny_unet(in_channels=channels)
    x, t = batch(2, channels, *size)
    assert model(x, t).shape == x.shape


@pytest.mark.parametrize("size", [28, 16, 32, 20])
@pytest.mark.parametrize("channels", [1, 3])
def test_dit_output_shape_equals_input_shape(size, channels):
    model = tiny_dit(in_channels=channels)
    x, t = batch(2, channels, size, size)
    assert model(x, t).shape == x.shape


def test_unet_with_more_levels_and_blocks():
    model = tiny_unet(channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(2, 3))
    x, t = batch(2, 1, 28, 28)
    assert model(x, t).shape == x.shape
    assert model.size_multiple == 8


def test_scalar_list_and_numpy_t_accepted():
    model = tiny_unet()
    x, _ = batch(3)
    assert model(x, torch.tensor(7)).shape == x.shape
    assert model(x, 7).shape == x.shape
    assert model(x, [0, 10, 999]).shape == x.shape
    assert model(x, np.array([0, 10, 999])).shape == x.shape


@pytest.mark.parametrize("build", [tiny_unet, tiny_dit])
def test_t_must_be_an_integer_step_the_model_was_trained_on(build):
    model = build(num_timesteps=50)
    x, _ = batch(2)
    assert model(x, torch.tensor([0, 49])).shape == x.shape
    with pytest.raises(ValueError, match=r"t must lie in \[0, num_timesteps\) = \[0, 50\), got values from 0 to 50"):
        model(x, torch.tensor([0, 50]))
    with pytest.raises(ValueError, match="t must hold integers, got dtype torch.float32"):
        model(x, torch.tensor([0.5, 10.0]))
    with pytest.raises(ValueError, match="t must lie in"):
        tiny_unet()(x, 5000)  # the default T = 1000


def test_patchify_round_trip():
    x, _ = batch(2, 3, 28, 28)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 49, 48)
    assert torch.equal(unpatchify(tokens, 4, 28, 28), x)


def test_timestep_embedding_properties():
    e = timestep_embedding(torch.arange(1000), 64)
    assert e.shape == (1000, 64)
    assert torch.allclose((e**2).sum(1), torch.full((1000,), 32.0), atol=1e-3)
    assert abs((e[10] @ e[20] - e[700] @ e[710]).item()) < 1e-3
    with pytest.raises(ValueError, match="dim"):
        timestep_embedding(torch.arange(3), 7)


# ---------------------------------------------------------------- initialization and gradients


@pytest.mark.parametrize("build", [tiny_unet, tiny_dit])
def test_untrained_model_outputs_zero(build):
    model = build()
    x, t = batch(2)
    assert (model(x, t) == 0).all()


@pytest.mark.parametrize("build", [tiny_unet, tiny_dit])
def test_every_parameter_gets_a_nonzero_gradient(build):
    # Zero-initialized layers (last convs, adaLN-Zero) block the gradient of the layers before them at step 0,
    # so take a few optimizer steps first; after that every parameter tensor must receive some gradient.
    model = build(num_classes=3, dropout=0.1) if build is tiny_unet else build(num_classes=3)
    x, t, y, target = train_a_little(model, conditional=True)
    model.zero_grad()
    (model(x, t, y) - target).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().max() > 0, f"{name} got an all-zero gradient"


@pytest.mark.parametrize("build", [tiny_unet, tiny_dit])
def test_output_depends_on_t_and_y(build):
    model = build(num_classes=3)
    train_a_little(model, conditional=True)
    model.eval()
    x = batch(4, 1, 16, 16)[0]
    t, y = torch.full((4,), 10), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        out = model(x, t, y)
        assert not torch.allclose(out, model(x, torch.full((4,), 900), y))
        assert not torch.allclose(out, model(x, t, torch.tensor([1, 2, 0, 1])))
        assert torch.equal(model(x, t), model(x, t, torch.full((4,), 3))), "y=None means label num_classes"


def test_eval_mode_is_deterministic_even_with_dropout():
    model = tiny_unet(dropout=0.5, num_classes=3)
    train_a_little(model, conditional=True)
    x, t = batch(4)
    model.train()
    assert not torch.equal(model(x, t), model(x, t)), "dropout should be active in training mode"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t))


def test_dit_eval_is_deterministic():
    model = tiny_dit(num_classes=3)
    train_a_little(model, conditional=True)
    model.eval()
    x, t = batch(4)
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t))


def test_padding_does_not_leak_into_the_output_size():
    model = tiny_unet()
    train_a_little(model)
    x, t = batch(2, 1, 27, 27)
    out = model(x, t)
    assert out.shape == x.shape and out.abs().sum() > 0


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("build", [tiny_unet, tiny_dit])
def test_bad_inputs_raise_value_errors_naming_the_argument(build):
    model = build(num_classes=3)
    x, t = batch(2)
    cases = [
        (dict(x=torch.zeros(2, 28, 28), t=t), "x"),
        (dict(x=torch.zeros(2, 2, 28, 28), t=t), "x must have 1 channel"),
        (dict(x=torch.full((2, 1, 28, 28), float("nan")), t=t), "x contains NaN"),
        (dict(x=torch.full((2, 1, 28, 28), float("inf")), t=t), "x contains NaN"),
        (dict(x=x, t=torch.zeros(3, dtype=torch.long)), "t must have shape"),
        (dict(x=x, t=torch.tensor([-1, 3])), "t must"),
        (dict(x=x, t=torch.tensor([True, False])), "t must"),
        (dict(x=x, t=t, y=torch.tensor([0, 4])), r"y must lie in \[0, 3\] \(3 = no class\), got values from 0 to 4"),
        (dict(x=x, t=t, y=torch.tensor([-1, 0])), "y must lie in"),
        (dict(x=x, t=t, y=torch.tensor([0.0, 1.0])), "y must hold integers"),
        (dict(x=x.double(), t=t), "x has dtype torch.float64 but the model's weights are torch.float32"),
        (dict(x=x, t=t, y=torch.tensor([0, 1, 2])), "y must have shape"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            model(**kwargs)


def test_labels_rejected_by_unconditional_model():
    x, t = batch(2)
    with pytest.raises(ValueError, match="y .*unconditional"):
        tiny_unet()(x, t, torch.tensor([0, 1]))


def test_dit_rejects_sizes_not_divisible_by_the_patch():
    x, t = batch(2, 1, 27, 27)
    with pytest.raises(ValueError, match="x has size 27x27.*patch_size=4"):
        tiny_dit()(x, t)


def test_unet_rejects_empty_images():
    with pytest.raises(ValueError, match="x must have H, W >= 1"):
        tiny_unet()(torch.zeros(1, 1, 0, 8), torch.tensor([1]))


@pytest.mark.parametrize("cls, kwargs, message", [
    (UNetConfig, dict(base_channels=0), "base_channels"),
    (UNetConfig, dict(channel_mults=()), "channel_mults"),
    (UNetConfig, dict(attention_levels=(5,)), "attention_levels"),
    (UNetConfig, dict(dropout=1.0), "dropout"),
    (UNetConfig, dict(num_classes=0), "num_classes"),
    (UNetConfig, dict(prediction_type="noise"), "prediction_type"),
    (UNetConfig, dict(in_channels=0), "in_channels"),
    (UNetConfig, dict(arch="dit"), "arch"),
    (DiTConfig, dict(hidden_size=30, num_heads=4), "hidden_size"),
    (DiTConfig, dict(patch_size=0), "patch_size"),
    (DiTConfig, dict(arch="unet"), "arch"),
])
def test_bad_configs_raise(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


# ---------------------------------------------------------------- configs, presets, make_model


@pytest.mark.parametrize("config", [UNetConfig(), UNetConfig(num_classes=10, channel_mults=(1, 2, 4), dropout=0.1),
                                    DiTConfig(), DiTConfig(num_classes=10, patch_size=2)])
def test_config_dict_round_trip(config):
    d = json.loads(json.dumps(config.to_dict()))  # JSON-serialisable
    assert type(config).from_dict(d) == config
    assert make_config(d) == config


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        UNetConfig.from_dict({"base_channels": 8, "width": 3})


def test_presets_sizes_and_types():
    sizes = {name: count_parameters(make_model(name)) for name in PRESETS}
    assert {"tiny", "default", "dit-tiny"} <= set(PRESETS)
    assert sizes["tiny"] < 100_000
    assert 1_500_000 <= sizes["default"] <= 2_000_000
    assert PRESETS["default"].num_classes == 10
    assert isinstance(make_model("tiny"), UNet) and isinstance(make_model("dit-tiny"), DiT)


def test_make_model_forms_and_overrides():
    model = make_model("tiny", num_classes=None, in_channels=3, prediction_type="v")
    assert model.config.num_classes is None and model.config.in_channels == 3
    assert model.config.prediction_type == "v"
    assert PRESETS["tiny"].in_channels == 1, "overrides must not change the preset"
    rebuilt = make_model(model.config.to_dict())
    assert isinstance(rebuilt, UNet) and rebuilt.config == model.config
    assert isinstance(make_model(DiTConfig(**TINY_DIT)), DiT)
    assert isinstance(make_model({"arch": "dit", **TINY_DIT}), DiT)
    same = make_model("tiny")
    same.load_state_dict(make_model("tiny").state_dict())  # same architecture, same parameter names


def test_make_model_errors():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*tiny"):
        make_model("huge")
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        make_model("tiny", width=3)
    with pytest.raises(ValueError, match="arch"):
        make_model({"arch": "resnet"})


def test_architecture_summary_accounts_for_every_parameter():
    for name in ("tiny", "dit-tiny"):
        model = make_model(name)
        rows = architecture_summary(model, torch.zeros(1, 1, 28, 28), torch.tensor([3]), torch.tensor([1]))
        assert sum(row[3] for row in rows) == count_parameters(model)
        names = [row[0] for row in rows]
        assert len(names) == len(set(names)) and "time_embed" in names and "class_embed" in names
    assert rows[-1][:3] == ("final_linear", "Linear", (1, 49, 16))
    rows = architecture_summary(make_model("tiny"), torch.zeros(1, 1, 28, 28), torch.tensor([3]))
    assert rows[-1][:3] == ("out_conv", "Conv2d", (1, 1, 28, 28))


@pytest.mark.parametrize("build", [tiny_unet, tiny_dit])
def test_float64_model(build):
    model = build(num_classes=3).double()
    x, t = batch(2)
    assert model(x.double(), t, torch.tensor([0, 3])).dtype == torch.float64


def test_check_model_inputs_fills_in_the_no_class_label():
    x, t = batch(3)
    t_out, y = check_model_inputs(x, t, None, UNetConfig(num_classes=4))
    assert t_out.dtype == torch.long and torch.equal(t_out, t) and torch.equal(y, torch.full((3,), 4))
    assert check_model_inputs(x, 5, None, UNetConfig())[1] is None


def test_both_configs_share_the_base_fields_and_its_dict_form():
    for cls in (UNetConfig, DiTConfig):
        assert issubclass(cls, ModelConfig)
        assert "to_dict" not in vars(cls) and "from_dict" not in vars(cls), "written once, on ModelConfig"
        config = cls(image_size=32, in_channels=3, num_classes=5, num_timesteps=500)
        assert cls.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="num_timesteps"):
        DiTConfig(num_timesteps=0)


@pytest.mark.parametrize("dim", [2, 8, 64, 128])
def test_timestep_frequencies_fall_from_one_to_max_period_power(dim):
    # sin(omega_i * 1) at t = 1 gives the frequencies back; the smallest is 10000^(-(d/2 - 1)/(d/2)), not 1/10000
    half = dim // 2
    omegas = torch.asin(timestep_embedding(torch.tensor([1]), dim)[0, :half].double())
    expected = 10000.0 ** (-np.arange(half) / half)
    np.testing.assert_allclose(omegas.numpy(), expected, rtol=1e-4, atol=1e-7)
    assert omegas[-1].item() == pytest.approx(10000.0 ** (-(half - 1) / half), rel=1e-4)


def test_dit_vs_unet_benchmark_models_have_matched_parameter_counts():
    # the comparison in chapter 3 (benchmarks/dit_vs_unet.py) is only fair at matched size: within 10%
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "dit_vs_unet.py"
    spec = importlib.util.spec_from_file_location("dit_vs_unet", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    reference = count_parameters(make_model(bench.MODELS[bench.REFERENCE][0], **bench.MODELS[bench.REFERENCE][1]))
    archs = set()
    for preset, overrides, _ in bench.MODELS.values():
        model = make_model(preset, **overrides)
        archs.add(model.config.arch)
        assert abs(count_parameters(model) / reference - 1) <= bench.MATCH_TOLERANCE
    assert archs == {"unet", "dit"}
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "resnet"])
