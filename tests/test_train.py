"""Trainer, checkpoints and the command line (tiny preset, CPU, a few steps)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddpm_edu import checkpoint as ckpt
from ddpm_edu.train import EMA, NonFiniteLossError, TrainConfig, Trainer, learning_rate
from ddpm_edu.utils import pick_device

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, env=None, **kw):
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ddpm_edu", *args], capture_output=True, text=True, env=e, **kw)


def tiny_config(out, **kw):
    base = dict(preset="tiny", steps=12, batch_size=8, warmup_steps=2, log_every=4, checkpoint_every=6,
                out_dir=str(out), progress=False, limit=200)
    base.update(kw)
    return TrainConfig(**base)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_learning_rate_warmup_and_decay():
    assert learning_rate(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert learning_rate(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert learning_rate(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert learning_rate(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert learning_rate(55, 1.0, 10, 100) == pytest.approx(0.55)


def test_ema_tracks_weights():
    lin = torch.nn.Linear(2, 1)
    ema = EMA(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.add_(1.0)
    before = ema.model.weight.clone()
    ema.update(lin)  # first update uses decay min(0.5, (1 + 1) / (10 + 1)) = 2/11
    assert torch.allclose(ema.model.weight, 2 / 11 * before + (1 - 2 / 11) * lin.weight)
    for _ in range(50):
        ema.update(lin)
    assert ema.current_decay() == 0.5
    assert torch.allclose(ema.model.weight, lin.weight, atol=1e-6)
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(lin, decay=1.0)


class SyncFreeTrainer(Trainer):
    """The GPU's code path on the CPU: fused AdamW, non-finite steps skipped on a device flag read at log steps."""
    SYNC_FREE_DEVICES = ("cpu", "cuda")


def test_generator_state_is_checkpointed_and_data_live_on_the_device(tmp_path):
    t = Trainer(tiny_config(tmp_path / "run", steps=4, checkpoint_every=4))
    assert t.images.device == t.device and t.images.shape == (200, 1, 28, 28) and t.generator.device == t.device
    t.fit()
    state, meta = ckpt.read_safetensors(tmp_path / "run" / "state.safetensors")
    assert torch.equal(state["rng.data"], t.generator.get_state())
    assert meta["extra"]["rng_device"] == "cpu"
    resumed = Trainer(tiny_config(tmp_path / "run", steps=6, resume=True))
    assert torch.equal(resumed.generator.get_state(), t.generator.get_state())
    x0, labels, steps, noise = resumed.next_batch()
    again = Trainer(tiny_config(tmp_path / "run", steps=6, resume=True)).next_batch()
    assert all(torch.equal(a, b) for a, b in zip((x0, labels, steps, noise), again))  # the batch is the state's
    assert x0.shape == noise.shape == (8, 1, 28, 28) and steps.dtype == torch.long


@pytest.mark.parametrize("kind", [Trainer, SyncFreeTrainer])
def test_resume_is_exact_in_both_step_modes(tmp_path, kind):
    straight = kind(tiny_config(tmp_path / "a", steps=8, checkpoint_every=4))
    straight.fit()
    first = kind(tiny_config(tmp_path / "b", steps=8, checkpoint_every=4))
    first.fit(until=4)
    resumed = kind(tiny_config(tmp_path / "b", steps=8, checkpoint_every=4, resume=True))
    assert bool(resumed.optimizer.defaults["fused"]) == (kind is SyncFreeTrainer)
    resumed.fit()
    for a, b in zip(weights(straight.model).values(), weights(resumed.model).values()):
        assert torch.equal(a, b)
    for a, b in zip(weights(straight.ema.model).values(), weights(resumed.ema.model).values()):
        assert torch.equal(a, b)
    assert [r["step"] for r in resumed.history] == [4, 8]


def test_sync_free_guard_skips_a_non_finite_step_and_keeps_the_checkpoint(tmp_path):
    """On a GPU the finite check is read every log_every steps: the bad step (3) and the one after it (4) are
    skipped on the device, and the trainer is rewound to step 2, the state it never left."""
    t = SyncFreeTrainer(tiny_config(tmp_path / "run", steps=8, log_every=4, checkpoint_every=2))
    t.fit(until=2)
    saved = (tmp_path / "run" / "state.safetensors").read_bytes()
    before, before_ema = weights(t.model), weights(t.ema.model)
    moments = [s["exp_avg"].clone() for s in t.optimizer.state.values()]
    hook = t.model.register_forward_hook(lambda module, inputs, output: output * float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"loss inf, gradient norm nan at step 3: training stopped before "
                                                 r"the update .* \(step 2\) is kept"):
        t.fit()
    assert t.step == 2 and t.ema.num_updates == 2
    assert all(torch.equal(before[k], v) for k, v in weights(t.model).items())
    assert all(torch.equal(before_ema[k], v) for k, v in weights(t.ema.model).items())
    assert all(torch.equal(m, s["exp_avg"]) for m, s in zip(moments, t.optimizer.state.values()))
    assert all(s["step"].item() == 2 for s in t.optimizer.state.values())
    assert (tmp_path / "run" / "state.safetensors").read_bytes() == saved
    hook.remove()  # the guard resets: training can go on from step 2
    t.fit()
    assert t.step == 8 and all(torch.isfinite(v).all() for v in weights(t.model).values())


def test_training_step_has_no_host_read_in_sync_free_mode(tmp_path, monkeypatch):
    """Tensor.item / tolist / __bool__ / __int__ / __float__ are the host reads a GPU would wait for; a whole step
    (batch, loss through the real U-Net, backward, clipping, AdamW, EMA) makes none: the input checks of chapters 2-3
    skip their value reads inside `trusted_inputs()`, which only the sync-free step enters."""
    from ddpm_edu.diffusion import q_sample, trusted_inputs

    t = SyncFreeTrainer(tiny_config(tmp_path / "run"))
    reads = []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name: reads.append(_n) or _o(self, *a))
    for _ in range(3):
        t.train_step()
    monkeypatch.undo()
    assert reads == [] and t.step == 3
    # the checks are only suspended: outside the block (and after it) a NaN image is refused again
    bad = torch.full((2, 1, 4, 4), float("nan"))
    with trusted_inputs():
        q_sample(t.schedule, bad, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="x0 contains NaN"):
        q_sample(t.schedule, bad, torch.tensor([1, 2]))


def test_channels_last_trains_resumes_and_is_saved(tmp_path):
    a = Trainer(tiny_config(tmp_path / "a", steps=4, checkpoint_every=2, channels_last=True))
    assert a.model.stem.weight.is_contiguous(memory_format=torch.channels_last)
    a.fit(until=2)
    b = Trainer(tiny_config(tmp_path / "a", steps=4, checkpoint_every=2, channels_last=True, resume=True))
    b.fit()
    c = Trainer(tiny_config(tmp_path / "c", steps=4, checkpoint_every=2, channels_last=True))
    c.fit()
    assert all(torch.equal(x, y) for x, y in zip(weights(b.model).values(), weights(c.model).values()))
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["channels_last"] is True


def test_compile_option_trains_and_saves(tmp_path, monkeypatch):
    """The trainer's torch.compile path (wrapping, saving the plain module, EMA, resume). Inductor's code generation
    takes minutes on a 2-core CPU, so the graphs run on the aot_eager backend here: Dynamo traces the model and
    AOTAutograd builds the backward graph, as they do for --compile default on a GPU."""
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    original = torch.compile
    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or
                        original(model, backend="aot_eager"))
    t = Trainer(tiny_config(tmp_path / "run", steps=3, checkpoint_every=3, compile="default"))
    t.fit()
    assert modes == ["default"] and t.train_model is not t.model
    eager = Trainer(tiny_config(tmp_path / "eager", steps=3, checkpoint_every=3))
    eager.fit()
    for a, b in zip(weights(t.model).values(), weights(eager.model).values()):
        assert torch.allclose(a, b, atol=1e-5)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["compile"] == "default"
    model, _, _ = ckpt.load_model(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), t.ema.model.state_dict().values()))


def test_old_boolean_compile_setting_is_read():
    assert TrainConfig.from_dict({"compile": False}).compile == "none"
    assert TrainConfig.from_dict({"compile": True}).compile == "default"


def test_resuming_a_cuda_run_on_another_device_warns_and_reseeds(tmp_path):
    Trainer(tiny_config(tmp_path / "run", steps=2, checkpoint_every=2)).fit()
    tensors, meta = ckpt.read_safetensors(tmp_path / "run" / "state.safetensors")
    meta["extra"]["rng_device"] = "cuda"
    tensors["rng.data"] = torch.zeros(16, dtype=torch.uint8)  # a Philox state: seed and offset
    ckpt.write_safetensors(tensors, tmp_path / "run" / "state.safetensors", meta)
    with pytest.warns(UserWarning, match="drawn on cuda, this run draws them on cpu"):
        t = Trainer(tiny_config(tmp_path / "run", steps=4, resume=True))
    assert t.step == 2
    t.fit()


def test_checkpoint_is_complete_and_pickle_free(tmp_path):
    t = Trainer(tiny_config(tmp_path / "run", steps=4, checkpoint_every=4))
    t.fit()
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["config.json", "model.safetensors", "state.safetensors"]  # no leftover temporary files
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["step"] == 4 and config["train"]["preset"] == "tiny" and config["schedule"]["name"] == "linear"
    assert config["data"]["n_images"] == 200 and config["package_version"]
    model, schedule, cfg = ckpt.load_model(tmp_path / "run")
    assert not model.training and schedule.T == 1000
    for a, b in zip(model.state_dict().values(), t.ema.model.state_dict().values()):
        assert torch.equal(a, b)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "state.safetensors", "config.json"):
        assert not (tmp_path / "run" / name).read_bytes().startswith(b"\x80")  # not a pickle
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "config.json"
    ckpt.write_json({"a": 1}, path)

    class Boom:
        pass

    with pytest.raises(TypeError):
        ckpt.write_json({"a": Boom()}, path)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_only_rank_zero_writes(tmp_path):
    from ddpm_edu.train import DistInfo

    t = Trainer(tiny_config(tmp_path / "run", steps=2, checkpoint_every=2))
    t.train_step()
    t.dist = DistInfo(rank=1, world_size=1)  # as if this process were the second one
    t.save()
    assert not (tmp_path / "run").exists()
    t.dist = DistInfo(rank=0, world_size=1)
    t.save()
    assert (tmp_path / "run" / "config.json").exists()


def test_resume_refuses_a_different_model(tmp_path):
    Trainer(tiny_config(tmp_path / "run", steps=2, checkpoint_every=2)).fit()
    with pytest.raises(ValueError, match=r"different model \(num_classes 10 there, None here; it was trained with "
                                         r"preset 'tiny'\)"):
        Trainer(tiny_config(tmp_path / "run", resume=True, class_conditional=False))


@pytest.mark.parametrize("kw, words", [
    ({"steps": 0}, "steps must be a positive integer"),
    ({"lr": 2.0}, "lr must be a finite number in (0, 1), got 2.0"),
    ({"lr": 0.0}, "lr must be a finite number in (0, 1)"),
    ({"grad_clip": float("nan")}, "grad_clip must be a finite number > 0, got nan"),
    ({"grad_clip": 0.0}, "grad_clip must be a finite number > 0"),
    ({"weight_decay": float("inf")}, "weight_decay must be a finite number >= 0"),
    ({"ema_decay": 1.0}, "ema_decay must be a finite number in [0, 1)"),
    ({"warmup_steps": 5, "steps": 2}, "warmup_steps must be an integer in [0, steps = 2]"),
    ({"limit": 0}, "limit must be a positive integer or None"),
    ({"dataset": "imagenet"}, "dataset must be one of"),
    ({"preset": "huge"}, "preset must be one of"),
    ({"schedule": "quadratic"}, "schedule must be one of"),
    ({"prediction_type": "score"}, "prediction_type must be one of"),
    ({"label_dropout": 1.5}, "label_dropout must be a finite number in [0, 1], got 1.5"),
    ({"precision": "fp8"}, "precision must be"),
    ({"compile": True}, "compile must be one of ('none', 'default', 'reduce-overhead'), got True"),
    ({"compile": "max-autotune"}, "compile must be one of"),
    ({"channels_last": "yes"}, "channels_last must be True or False"),
])
def test_bad_config_values(kw, words):
    with pytest.raises(ValueError) as info:
        TrainConfig(**kw).validate()
    assert words in str(info.value)


def test_warmup_defaults_to_a_tenth_of_the_run_at_most_100_steps():
    assert TrainConfig(steps=50).validate().warmup_steps == 5
    assert TrainConfig(steps=2000).validate().warmup_steps == 100
    assert TrainConfig(steps=50, warmup_steps=0).validate().warmup_steps == 0


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device must be"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


def test_cli_train_kill_and_resume_matches_uninterrupted(tmp_path):
    common = ["train", "--preset", "tiny", "--steps", "100", "--batch-size", "8", "--limit", "200",
              "--checkpoint-every", "20", "--log-every", "20", "--no-progress", "--threads", "1"]
    full = cli(*common, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    assert "done: step 100" in full.stdout

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ddpm_edu", *common, "--out", str(killed_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (killed_dir / "config.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = json.loads((killed_dir / "config.json").read_text())["step"]
    assert step_at_kill < 100, "the run finished before it could be killed; nothing was tested"

    resumed = cli(*common, "--out", str(killed_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, _ = ckpt.read_safetensors(tmp_path / "full" / "state.safetensors")
    b, _ = ckpt.read_safetensors(killed_dir / "state.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cli_train_shows_a_progress_bar_on_a_terminal(tmp_path):
    import pty

    import fcntl
    import struct
    import termios

    main_fd, terminal = pty.openpty()  # stderr is a terminal, as in an interactive shell
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns: room for the bar
    proc = subprocess.Popen([sys.executable, "-m", "ddpm_edu", "train", "--preset", "tiny", "--steps", "5",
                             "--batch-size", "4", "--limit", "50", "--out", str(tmp_path / "run"), "--log-every", "5"],
                            stdout=subprocess.PIPE, stderr=terminal, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        shown += chunk
    stdout, _ = proc.communicate(timeout=120)
    os.close(main_fd)
    assert proc.returncode == 0, shown.decode(errors="replace")
    assert b"train:" in shown and b"5/5" in shown  # tqdm's bar
    assert "images/s" not in stdout.split("done:")[0]  # no log lines beside the bar
    assert (tmp_path / "run" / "model.safetensors").exists()
    again = cli("train", "--preset", "tiny", "--steps", "5", "--out", str(tmp_path / "run"))
    assert again.returncode == 2 and "already holds a checkpoint" in again.stderr


@pytest.mark.parametrize("flags", [["--no-progress"], []])  # [] : no terminal (output captured), no bar either
def test_cli_train_logs_lines_without_a_progress_bar(tmp_path, flags):
    r = cli("train", "--preset", "tiny", "--steps", "6", "--batch-size", "4", "--limit", "50", "--log-every", "2",
            "--lr", "0.002", "--out", str(tmp_path / "run"), *flags)
    assert r.returncode == 0, r.stderr
    assert "train:" not in r.stderr and "6/6" not in r.stderr  # no bar
    lines = r.stdout.strip().splitlines()
    start = lines[0]
    assert re.fullmatch(r"train: 1 x CPU \(\d+ threads\), torch \S+; precision fp32, compile none, contiguous \(NCHW\); "
                        r"model tiny, 76,401 parameters; data mnist-subset, 50 images of 1x28x28; steps 0 to 6 of 6, "
                        r"batch 4", start), start
    pattern = (r"step (\d+)/6  loss (\d+\.\d{4})  ([\d,]+) images/s  lr (\S+)  elapsed (\d+:\d\d:\d\d)  "
               r"eta (\d+:\d\d:\d\d)")
    rows = [re.fullmatch(pattern, line) for line in lines[1:4]]
    assert all(rows), lines
    assert [int(m.group(1)) for m in rows] == [2, 4, 6]
    assert rows[-1].group(6) == "0:00:00"
    assert [m.group(4) for m in rows] == [f"{learning_rate(s - 1, 0.002, 0, 6):.3g}" for s in (2, 4, 6)]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    history = ckpt.read_safetensors(tmp_path / "run" / "state.safetensors")[1]["extra"]["history"]
    assert [f"{h['loss']:.4f}" for h in history] == [m.group(2) for m in rows]  # the logged losses are the saved ones
    assert saved["step"] == 6 and lines[4].startswith("done: step 6")


@pytest.mark.parametrize("args, words", [
    (["train", "--steps", "0"], "--steps: expected a positive integer"),
    (["train", "--preset", "huge"], "--preset: invalid choice"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--lr", "abc"], "--lr: expected a number"),
    (["train", "--resume", "--out", "/nonexistent/run"], "no checkpoint in"),
    (["train", "--limit", "0"], "--limit: expected a positive integer, got 0"),
    (["sample", "--checkpoint", "/nonexistent/run", "--out", "x.png"], "no checkpoint folder /nonexistent/run"),
    (["sample", "--out", "x.jpg"], "--out must end in .png or .npy"),
    (["sample"], "the following arguments are required: --out"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_cli_errors_are_one_line(args, words):
    r = cli(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert words in lines[0] and "Traceback" not in r.stderr


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    out = tmp_path / "ddp"
    with socket.socket() as probe:  # a free port, not a fixed one that another job may hold
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                        "-m", "ddpm_edu", "train", "--preset", "tiny", "--steps", "6", "--batch-size", "8",
                        "--limit", "100", "--device", "cpu", "--no-progress", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Warning" not in r.stderr, r.stderr[-2000:]
    # the two processes print at the same moment, so their lines may run together: match, don't split
    found = re.findall(r"rank (\d+): step \d+, weights checksum ([-+]?\d\.\d+e[-+]\d+)", r.stdout)
    sums = {int(rank): value for rank, value in found}
    assert set(sums) == {0, 1} and sums[0] == sums[1], r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "state.safetensors"]
    assert json.loads((out / "config.json").read_text())["hardware"].startswith("2 x CPU")


def test_training_benchmark_quick_path_writes_its_rows(tmp_path):
    """benchmarks/bench_train_throughput.py --quick: the Trainer's own step, ours and diffusers' UNet2DModel in the
    same trainer, one row printed and written to the JSON."""
    pytest.importorskip("diffusers")
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train_throughput.py"), "--quick",
                        "--out", str(out)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert (row["variant"], row["precision"], row["batch_size"]) == ("eager", "fp32", 8)
    assert set(row["models"]) == {"ours", "diffusers-mnist"} and not result["skipped"] and not result["failed"]
    assert all(m["images_per_s"]["median"] > 0 for m in row["models"].values())
    assert result["parameters"] == {"ours": 1905601, "diffusers-mnist": 1708417}
    assert 1.3e9 < result["flops_per_image"]["ours"] < 1.5e9 < result["flops_per_image"]["diffusers-mnist"]
    assert re.search(r"eager +fp32 +8 +diffusers-mnist +[\d,]+ .* [\d.]+x", r.stdout), r.stdout
