"""The command line as a user meets it: --help documents every flag; bad input (damaged checkpoints, impossible
values, unwritable outputs, odd pictures) is one line on stderr and a non-zero exit, found before any long work;
Ctrl-C and non-finite losses keep a checkpoint; training and editing work on a folder of RGB pictures."""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ddpm_edu import cli
from ddpm_edu.cli import build_parser, main
from ddpm_edu.cli_apps import read_image
from ddpm_edu.train import NonFiniteLossError, TrainConfig, Trainer

REFERENCE_CONFIG = {"model": {"in_channels": 1, "image_size": 28}, "data": {"dataset": "mnist-subset"}}

COMMANDS = ("train", "sample", "denoise", "inpaint", "sdedit")


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def help_text(command, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_command_is_listed():
    assert set(subcommand_parsers()) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_documents_every_flag_and_its_default(command, capsys, monkeypatch):
    text = help_text(command, capsys, monkeypatch)
    parser = subcommand_parsers()[command]
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    chosen = {a for group in parser._mutually_exclusive_groups if group.required for a in group._group_actions}
    assert len(actions) >= 4
    lines = text.splitlines()
    for action in actions:
        flag = action.option_strings[-1]
        (start,) = [i for i, line in enumerate(lines) if re.match(rf"\s+{re.escape(flag)}(\s|,|$)", line)]
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("-")
                    or not lines[i].strip()), len(lines))
        line = " ".join(lines[start:end])  # the flag's entry: long invocations put the help on the next line
        assert action.help and len(action.help) > 10, f"{command} {flag}: no help"
        takes_value = action.nargs != 0
        if takes_value and not action.required and action not in chosen:
            assert "default" in line, f"{command} {flag}: --help does not say its default: {line.strip()}"


# ------------------------------------------------------------------------------- bad input: one line, exit != 0
def run_main(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code, err, words):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert words in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A checkpoint of the tiny preset after 2 steps (and its folder)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    Trainer(TrainConfig(preset="tiny", steps=2, batch_size=4, warmup_steps=1, log_every=1, checkpoint_every=0,
                        limit=20, out_dir=str(out), progress=False)).fit()
    return out


def damaged_copy(run: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(run, copy)
    damage(copy)
    return copy


def truncate(name):
    return lambda d: (d / name).write_bytes((d / name).read_bytes()[:100])


def zero_header(name):
    return lambda d: (d / name).write_bytes(b"\0" * 8 + (d / name).read_bytes()[8:])


def empty(name):
    return lambda d: (d / name).write_bytes(b"")


def edit_config(change):
    def damage(d):
        config = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps(change(config)))
    return damage


def without(key):
    return edit_config(lambda c: {k: v for k, v in c.items() if k != key})


@pytest.mark.parametrize("damage, words", [
    (truncate("model.safetensors"), "model.safetensors is damaged or not a safetensors file"),
    (zero_header("model.safetensors"), "model.safetensors is damaged or not a safetensors file"),
    (empty("model.safetensors"), "model.safetensors is damaged or not a safetensors file"),
    (without("model"), "config.json lacks 'model'"),
    (without("schedule"), "config.json lacks 'schedule'"),
    (without("prediction_type"), "config.json lacks 'prediction_type'"),
    (without("data"), "config.json lacks 'data'"),
    (lambda d: (d / "config.json").write_text("[1, 2, 3]"), "config.json must hold a JSON object, got a list"),
    (lambda d: (d / "config.json").write_text('{"format": "ddpm_edu.checkpoint/1", "model": }'),
     "config.json is not valid JSON (Expecting value"),
    (edit_config(lambda c: {**c, "model": {**c["model"], "base_channels": 16}}),
     "model.safetensors does not match the model in config.json"),
    (edit_config(lambda c: {**c, "model": {**c["model"], "base_channels": "wide"}}),
     "config.json describes no valid model or schedule (base_channels must be an int"),
])
def test_damaged_checkpoint_is_one_line_naming_the_file(tiny_run, tmp_path, capsys, damage, words):
    folder = damaged_copy(tiny_run, tmp_path, damage)
    code, _, err = run_main(["sample", "--checkpoint", folder, "--n", "2", "--steps", "1", "--no-progress",
                             "--out", tmp_path / "x.png"], capsys)
    assert_one_line(code, err, words)
    assert str(folder) in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("damage, words", [
    (truncate("state.safetensors"), "state.safetensors is damaged or not a safetensors file"),
    (zero_header("state.safetensors"), "state.safetensors is damaged or not a safetensors file"),
    (empty("state.safetensors"), "state.safetensors is damaged or not a safetensors file"),
])
def test_damaged_training_state_on_resume_is_one_line(tiny_run, tmp_path, capsys, damage, words):
    folder = damaged_copy(tiny_run, tmp_path, damage)
    code, _, err = run_main(["train", "--resume", "--out", folder, "--steps", "4", "--no-progress"], capsys)
    assert_one_line(code, err, words)


@pytest.mark.parametrize("args, words", [
    (["train", "--grad-clip", "nan"], "--grad-clip: expected a finite number, got 'nan'"),
    (["train", "--lr", "inf"], "--lr: expected a finite number, got 'inf'"),
    (["train", "--warmup-steps", "5", "--steps", "2"], "--warmup-steps must be an integer in [0, steps = 2]"),
    (["train", "--lr", "2"], "--lr must be a finite number in (0, 1), got 2.0"),
    (["train", "--dataset", "imagenet"], "--dataset: expected one of mnist-subset, mnist, fashion-mnist, cifar10 or "
                                         "folder:PATH, got 'imagenet'"),
    (["sample", "--guidance", "nan", "--out", "x.png"], "--guidance: expected a finite number, got 'nan'"),
    (["sample", "--guidance", "inf", "--out", "x.png"], "--guidance: expected a finite number, got 'inf'"),
    (["sample", "--label", "10", "--out", "x.png"], "--label must be in [0, 9], got 10"),
    (["sample", "--out", "x.jpg"], "--out must end in .png or .npy, got 'x.jpg'"),
    (["denoise", "in.png", "--out", "y.npy"], "--out must end in .png, got 'y.npy'"),
])
def test_impossible_values_are_refused_before_any_work(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(args, capsys)
    assert_one_line(code, err, words)
    assert list(tmp_path.iterdir()) == []


def test_output_is_checked_before_the_work_and_names_the_path(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    target = blocker / "grid.png"  # a folder that cannot exist

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded or sampled before --out was checked")

    monkeypatch.setattr(cli, "load_model", no_work)
    monkeypatch.setattr(cli, "sample_n", no_work)
    code, _, err = run_main(["sample", "--n", "1000", "--sampler", "ddpm", "--out", target], capsys)
    assert_one_line(code, err, f"the folder of --out {blocker} is a file, not a folder")
    assert ".tmp" not in err and blocker.read_text() == "keep me"
    code, _, err = run_main(["sample", "--n", "1000", "--out", "/proc/ddpm_edu/grid.png"], capsys)
    assert_one_line(code, err, "the folder of --out /proc/ddpm_edu is not writable")
    code, _, err = run_main(["sample", "--out", tmp_path], capsys)
    assert_one_line(code, err, f"--out {tmp_path} is a folder, not a file")


def test_train_out_pointing_at_a_file_fails_before_reading_data(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "run.txt"
    blocker.write_text("keep me")

    def no_work(*args, **kwargs):
        raise AssertionError("the dataset was read or the trainer built before --out was checked")

    monkeypatch.setattr(cli, "load_dataset", no_work)
    monkeypatch.setattr(cli, "Trainer", no_work)
    code, _, err = run_main(["train", "--preset", "tiny", "--steps", "2", "--out", blocker], capsys)
    assert_one_line(code, err, f"--out {blocker} is a file, not a folder")
    assert blocker.read_text() == "keep me"


def test_an_orphan_temporary_file_is_removed_by_the_next_save(tiny_run, tmp_path):
    folder = damaged_copy(tiny_run, tmp_path, lambda d: None)
    orphan = folder / ".state.safetensors.k1ll3d.tmp"
    orphan.write_bytes(b"half a file")
    trainer = Trainer(TrainConfig.from_dict({**json.loads((folder / "config.json").read_text())["train"],
                                             "out_dir": str(folder), "resume": True, "steps": 3}))
    trainer.fit()
    assert not orphan.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "state.safetensors"]


def test_resume_takes_the_run_settings_from_the_checkpoint(tiny_run, tmp_path, capsys):
    folder = damaged_copy(tiny_run, tmp_path, lambda d: None)
    code, out, err = run_main(["train", "--resume", "--out", folder, "--steps", "3", "--no-progress"], capsys)
    assert code == 0, err
    saved = json.loads((folder / "config.json").read_text())
    assert saved["step"] == 3 and saved["train"]["preset"] == "tiny" and saved["train"]["limit"] == 20
    code, _, err = run_main(["train", "--resume", "--out", folder, "--steps", "5", "--preset", "small"], capsys)
    assert_one_line(code, err, "--resume: --preset 'small' differs from the checkpoint")
    assert "(preset='tiny')" in err


def test_non_finite_loss_stops_before_the_update_and_keeps_the_checkpoint(tmp_path):
    trainer = Trainer(TrainConfig(preset="tiny", steps=6, batch_size=4, warmup_steps=1, log_every=1,
                                  checkpoint_every=2, limit=20, out_dir=str(tmp_path / "run"), progress=False))
    trainer.fit(until=2)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    checkpoint = (tmp_path / "run" / "model.safetensors").read_bytes()
    trainer.model.register_forward_hook(lambda module, inputs, output: output * float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"at step 3: training stopped before the update .* the "
                                                 r"checkpoint in .* \(step 2\) is kept"):
        trainer.fit()
    assert trainer.step == 2
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == checkpoint


def test_train_speed_flags_are_saved_and_logged(tmp_path, capsys):
    code, out, err = run_main(["train", "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--limit", "20",
                               "--channels-last", "--log-every", "1", "--no-progress", "--out", tmp_path / "run"],
                              capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["channels_last"] is True and saved["compile"] == "none" and saved["precision"] == "auto"
    lines = out.splitlines()
    assert lines[0].startswith("train: 1 x CPU") and "precision fp32, compile none, channels_last;" in lines[0]
    assert [line.split()[1] for line in lines[1:3]] == ["1/2", "2/2"]
    code, _, err = run_main(["train", "--compile", "max-autotune"], capsys)
    assert_one_line(code, err, "--compile: invalid choice: 'max-autotune' (choose from 'none', 'default', "
                               "'reduce-overhead')")


def test_ctrl_c_saves_a_checkpoint_and_says_which_step(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ddpm_edu", "train", "--preset", "tiny", "--steps", "100000",
                             "--batch-size", "4", "--limit", "50", "--checkpoint-every", "5", "--threads", "1",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (out / "config.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)  # the first checkpoint (step 5) says that training is under way
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    step = int(re.search(r"interrupted: at step (\d+): the checkpoint in \S+ holds step \1; continue with --resume",
                         last).group(1))
    assert step > 0 and "Traceback" not in stderr
    assert json.loads((out / "config.json").read_text())["step"] == step
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "state.safetensors"]


# ------------------------------------------------------------------------------- pictures in, pictures out
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 80)  # up to 62,640: far above 255
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    x, _, note = read_image(str(tmp_path / "deep.png"), REFERENCE_CONFIG, invert="no")
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535 * 2 - 1)
    assert torch.allclose(x[0, 0], expected, atol=1e-6) and "16-bit grey" in note


def test_decompression_bomb_is_one_line(tmp_path, capsys, monkeypatch):
    Image.new("L", (300, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 300 x 300 > 2 x 100: Pillow's bomb error
    code, _, err = run_main(["denoise", tmp_path / "big.png", "--out", tmp_path / "out.png"], capsys)
    assert_one_line(code, err, "IMAGE: " + str(tmp_path / "big.png") + " has more than 200 pixels")


@pytest.mark.parametrize("background, ink, inverted", [(255, 20, True), (128, 20, False), (150, 250, False)])
def test_only_dark_ink_on_light_paper_is_inverted(tmp_path, background, ink, inverted):
    image = Image.new("L", (56, 56), background)
    ImageDraw.Draw(image).line([(20, 10), (36, 10), (28, 46)], fill=ink, width=5)
    image.save(tmp_path / "pic.png")
    x, _, note = read_image(str(tmp_path / "pic.png"), REFERENCE_CONFIG)
    assert ("inverted" in note) == inverted
    corner = x[0, 0, 0, 0].item()
    assert (corner < -0.9) if inverted else corner == pytest.approx(background / 127.5 - 1, abs=0.02)


def test_non_square_pictures_are_centre_cropped_not_squashed(tmp_path):
    image = Image.new("L", (84, 28), 0)
    ImageDraw.Draw(image).rectangle([28, 0, 55, 27], fill=255)  # a white square in the middle third
    image.save(tmp_path / "wide.png")
    x, size, note = read_image(str(tmp_path / "wide.png"), REFERENCE_CONFIG, invert="no")
    assert size == (84, 28) and "centre-cropped 84x28 to 28x28" in note
    assert torch.all(x == 1), "the crop is the white square; squashing would have kept the black thirds"


def test_sigma_help_says_it_is_measured_at_the_model_size(capsys, monkeypatch):
    text = help_text("denoise", capsys, monkeypatch)
    assert "after its conversion to the model's size" in text


# ------------------------------------------------------------------------------- progress
def test_sample_shows_one_progress_bar_with_a_total(tmp_path, capsys):
    code, _, err = run_main(["sample", "--n", "4", "--batch-size", "2", "--steps", "3", "--out",
                             tmp_path / "x.npy"], capsys)
    assert code == 0, err
    assert "6/6" in err and "3/3" not in err, err  # 2 batches x 3 steps, not a bar per batch


def test_applications_take_device_and_show_progress(tmp_path, capsys):
    Image.new("L", (28, 28), 0).save(tmp_path / "black.png")
    code, out, err = run_main(["denoise", tmp_path / "black.png", "--sigma", "0.3", "--steps", "2", "--device", "cpu",
                               "--out", tmp_path / "y.png"], capsys)
    assert code == 0, err
    assert "2/2" in err and Image.open(tmp_path / "y.png").size == (28, 28)
    code, _, err = run_main(["denoise", tmp_path / "black.png", "--device", "tpu", "--out", tmp_path / "z.png"],
                            capsys)
    assert_one_line(code, err, "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'")


# ------------------------------------------------------------------------------- any dataset: folder:PATH
def write_rgb_folder(root: Path, classes=("cats", "dogs"), per_class=4) -> Path:
    """8 random RGB pictures of 12 x 10 pixels, in one subfolder per class (or flat with classes=())."""
    rng = np.random.default_rng(0)
    for cls in classes or ("",):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class if classes else 8):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_train_sample_and_edit_on_a_folder_of_rgb_pictures(tmp_path, capsys):
    pictures, run = write_rgb_folder(tmp_path / "pictures"), tmp_path / "run"
    code, _, err = run_main(["train", "--dataset", f"folder:{pictures}", "--image-size", "16", "--preset", "tiny",
                             "--steps", "3", "--batch-size", "4", "--no-progress", "--out", run], capsys)
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert {k: config["model"][k] for k in ("in_channels", "image_size", "num_classes")} == \
        {"in_channels": 3, "image_size": 16, "num_classes": 2}
    assert config["data"]["class_names"] == ["cats", "dogs"] and config["data"]["n_images"] == 8

    code, out, err = run_main(["sample", "--checkpoint", run, "--n", "4", "--steps", "2", "--no-progress",
                               "--out", tmp_path / "samples.npy"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "samples.npy").shape == (4, 16, 16, 3)
    code, _, err = run_main(["sample", "--checkpoint", run, "--label", "2", "--out", tmp_path / "x.png"], capsys)
    assert_one_line(code, err, "--label must be in [0, 1], got 2")

    for command in (["sdedit", "--strength", "0.5"], ["denoise", "--sigma", "0.2"], ["inpaint", "--mask-shape", "box"]):
        code, out, err = run_main([command[0], pictures / "cats" / "0.png", *command[1:], "--steps", "2",
                                   "--checkpoint", run, "--no-progress", "--out", tmp_path / "edited.png"], capsys)
        assert code == 0, err
        assert "centre-cropped 12x10 to 10x10" in out and "resized 10x10 to 16x16" in out and "inverted" not in out
        edited = Image.open(tmp_path / "edited.png")
        assert edited.size == (16, 16) and edited.mode == "RGB"


def test_a_flat_folder_trains_an_unconditional_model(tmp_path, capsys):
    pictures = write_rgb_folder(tmp_path / "flat", classes=())
    code, out, err = run_main(["train", "--dataset", f"folder:{pictures}", "--image-size", "8", "--preset", "tiny",
                               "--steps", "2", "--batch-size", "4", "--no-progress", "--out", tmp_path / "run"],
                              capsys)
    assert code == 0, err
    assert "has no class subfolders: training an unconditional model" in out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["num_classes"] is None


def test_the_digit_classifier_says_it_is_mnist_only():
    from ddpm_edu.evaluation import classify

    with pytest.raises(ValueError, match=r"MNIST-only \(1x28x28 grey digits\); got \(2, 3, 16, 16\)"):
        classify(torch.zeros(2, 3, 16, 16))


# ------------------------------------------------------------------------------- samplers from the registry
def test_sample_accepts_every_registered_sampler_and_lists_them(tmp_path, capsys, monkeypatch):
    from ddpm_edu.sampling import SAMPLERS

    text = help_text("sample", capsys, monkeypatch)
    for name in SAMPLERS:
        assert name in text
        code, out, err = run_main(["sample", "--sampler", name, "--n", "2", "--steps", "2", "--no-progress",
                                   "--out", tmp_path / f"{name}.npy"], capsys)
        assert code == 0, err
        assert np.load(tmp_path / f"{name}.npy").shape == (2, 28, 28)
    code, _, err = run_main(["sample", "--sampler", "ddpm", "--eta", "0.5", "--out", tmp_path / "x.npy"], capsys)
    assert_one_line(code, err, "--eta applies to --sampler ddim only")
    assert not (tmp_path / "x.npy").exists()
