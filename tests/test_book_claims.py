"""Sentences of the book's plain pages (not notebooks, so no glue from a cell of their own) checked against the data
they state: the shipped reference model's config. When the model is retrained (tools/results.py), these fail until
the sentences are rewritten from the new card."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = json.loads((ROOT / "ddpm_edu" / "pretrained" / "mnist_default" / "config.json").read_text())
SUMMARY = re.sub(r"\s+", " ", (ROOT / "book" / "summary.md").read_text(encoding="utf-8"))


def test_summary_states_the_reference_models_training_as_its_card_does():
    params = f"{CONFIG['parameters'] / 1e6:.1f}M parameters"
    steps = f"{CONFIG['step']:,} steps of {CONFIG['train']['batch_size']} images"
    hardware = CONFIG["card"]["hardware"]
    on_cpu = CONFIG["train"]["device"] == "cpu"
    where = "on a 2-core CPU" if on_cpu else "on one " + hardware.removeprefix("1 x ").split(",")[0]
    precision = "in bf16 autocast" if CONFIG["train"]["precision"] == "bf16" else "in fp32"  # auto is fp32 (chapter 4)
    sentence = f"The shipped reference model ({params}) was trained for {steps} {where} {precision}."
    assert sentence in SUMMARY, f"summary.md should say: {sentence!r}"
    assert hardware.startswith("1 x CPU (2 threads)") == on_cpu


def test_summary_pastes_numbers_only_from_glue_keys_the_chapters_store():
    for path, key in re.findall(r"\{glue:text\}`([0-9a-z_]+\.ipynb)::([a-z0-9_]+)", SUMMARY):
        notebook = (ROOT / "book" / path).read_text(encoding="utf-8")
        assert f'"name": "{key}"' in notebook, f"summary.md pastes {path}::{key}, which {path} does not store"
