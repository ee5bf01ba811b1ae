"""tools/results.py, the one command that regenerates every number in the book: its --quick CPU path runs every
part end to end, resumes part by part, and leaves the committed model and data files alone."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = [sys.executable, str(ROOT / "tools" / "results.py")]
TRACKED = [ROOT / "book" / "data", ROOT / "ddpm_edu" / "pretrained", ROOT / "benchmarks" / "results"]


def fingerprint() -> dict:
    """Hash of every file the results command may install over."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in TRACKED if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(*args, timeout=900):
    return subprocess.run([*RESULTS, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_quick_pipeline_runs_every_part_and_resumes(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    from results import PARTS

    before = fingerprint()
    work = tmp_path / "work"
    done = run("--device", "cpu", "--quick", "--threads", "1", "--work-dir", str(work))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = json.loads((work / "manifest.json").read_text())
    assert sorted(manifest["parts"]) == sorted(PARTS)
    assert all(entry["seconds"] > 0 and entry["commands"] for entry in manifest["parts"].values())

    # the model it trained, with its card, and the tables scored on that model at the quick sizes
    config = json.loads((work / "model" / "config.json").read_text())
    assert config["train"]["preset"] == "tiny" and config["step"] == 12 and "card" in config
    assert (work / "model" / "MODEL_CARD.md").read_text().count("## Quality") == 1
    quality = json.loads((work / "data" / "reference_quality.json").read_text())
    assert quality["n"] == 20 and quality["checkpoint"] == str(work / "model")
    assert set(quality["goals"]) == {"conditional FID <= 1.5 x floor", "unconditional FID < held-out + noise 0.1",
                                     "weights <= 20 MB"}
    steps = json.loads((work / "data" / "steps_vs_fid.json").read_text())
    assert steps["n"] == 20 and len(steps["cells"]) == 2 * 2  # 2 conditions x (DDPM at 2 steps, DPM-Solver at 2)
    assert (work / "data" / "ddim_clipping.npz").is_file()
    data = sorted(p.name for p in (work / "data").glob("*.json"))
    assert any(name.startswith("applications_") for name in data), data
    assert "dit_vs_unet.json" in data
    assert sorted(p.name for p in (work / "bench").glob("*.json")) == [
        "bench_sampling_cpu.json", "bench_train_throughput_cpu.json"]
    assert "--quick never installs" in done.stdout
    assert fingerprint() == before, "a --quick run changed a committed model or data file"

    # run again: every part is already finished, so nothing runs
    again = run("--device", "cpu", "--quick", "--threads", "1", "--work-dir", str(work), timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped") == len(PARTS)
    assert "===" in again.stdout and "finished in" not in again.stdout


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "argument --n: expected an integer in [1, 1000]"),
    (["--n", "1001"], "argument --n: expected an integer in [1, 1000]"),
    (["--only", "nothing"], "argument --only: invalid choice"),
    (["--install-only"], "argument --install-only:"),
])
def test_bad_arguments_get_one_line(args, message, tmp_path):
    done = run("--work-dir", str(tmp_path / "w"), *args, timeout=60)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in done.stderr


def test_work_dir_made_with_other_settings_is_refused(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "manifest.json").write_text(json.dumps({"settings": {"quick": True, "n": 1000, "device": "cpu"},
                                                    "parts": {}}))
    done = run("--work-dir", str(work), "--device", "cpu", "--only", "train", timeout=60)
    assert done.returncode == 2 and "holds parts made with" in done.stderr.strip().splitlines()[-1]
    file = tmp_path / "a_file"
    file.write_text("x")
    done = run("--work-dir", str(file), timeout=60)
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr


def test_plan_is_printed_and_budget_stops_between_parts(tmp_path):
    work = tmp_path / "w"
    done = run("--device", "cpu", "--quick", "--threads", "1", "--work-dir", str(work), "--only", "quality", "steps",
               "--budget", "20", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "=== plan" in done.stdout and "quality" in done.stdout.split("=== plan")[1].split("===")[0]
    assert "stopped by --budget 20 s" in done.stdout and "not run: steps" in done.stdout
    manifest = json.loads((work / "manifest.json").read_text())
    assert list(manifest["parts"]) == ["quality"]  # the part that fitted ran and was recorded; nothing installed
