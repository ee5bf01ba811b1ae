"""Score the shipped reference model with chapter 5's calibrated metric and add the scores to its model card.

    python benchmarks/reference_quality.py                          # the shipped model; ~15 min on a 2-core CPU
    python benchmarks/reference_quality.py --device cuda             # seconds on a GPU
    python benchmarks/reference_quality.py --checkpoint runs/x --out /tmp/q.json --n 100   # any checkpoint

Draws 1,000 DDIM-50 samples twice (classes 0-9 in turn, and without labels), scores each with
ddpm_edu.metrics (FID in the shipped classifier's feature space against the 4,000 training images, classifier
confidence, class coverage, median nearest-training-image distance) beside the calibration sets of the same size,
and writes book/data/reference_quality.json (--out) plus a "quality" entry in the checkpoint's config.json and
MODEL_CARD.md (when it has one). It also reads off the reference model's goals: conditional FID at most 1.5 x the held-out
floor, unconditional FID below the "held-out + noise sigma = 0.1" row, weights at most 20 MB.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ddpm_edu.checkpoint import load_model, reference_model_path, write_json
from ddpm_edu.utils import atomic_replace, pick_device
from ddpm_edu.metrics import calibration, memorization_check, quality_scores
from ddpm_edu.sampling import sample_n

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--bf16", action="store_true", help="network under bf16 autocast")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped reference model)")
    p.add_argument("--out", type=Path, default=ROOT / "book" / "data" / "reference_quality.json")
    p.add_argument("--no-card", action="store_true", help="leave the checkpoint's config.json and MODEL_CARD.md alone")
    p.add_argument("--card-only", action="store_true", help="rewrite the card from --out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.checkpoint) if args.checkpoint else reference_model_path()
    if args.card_only:
        update_card(json.loads(args.out.read_text()), folder)
        return
    device = pick_device(args.device)
    model, schedule, config = load_model(args.checkpoint, device=device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU {platform.machine()}, {args.threads} threads")
    result = {"n": args.n, "sampler": f"DDIM, eta = 0, {args.steps} steps, trailing spacing", "bf16_autocast": args.bf16,
              "hardware": f"{where}, torch {torch.__version__}", "checkpoint": args.checkpoint or "reference",
              "command": "python benchmarks/reference_quality.py " + " ".join(sys.argv[1:]),
              "weights_mb": round((folder / "model.safetensors").stat().st_size / 2**20, 2), "scores": {}}
    for name, labels in (("classes 0-9 in turn", torch.arange(args.n) % 10), ("no labels", None)):
        start = time.time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            x = sample_n(model, schedule, args.n, tuple(config["data"]["image_shape"]), batch_size=args.batch_size,
                         sampler="ddim", steps=args.steps, labels=None if labels is None else labels.to(device),
                         generator=torch.Generator(device).manual_seed(0), device=device).float().cpu()
        scores = quality_scores(x)
        scores["memorization"] = {k: v for k, v in memorization_check(x).items() if k != "distances"}
        scores["seconds"] = round(time.time() - start, 1)
        result["scores"][name] = scores
        print(name, {k: v for k, v in scores.items() if k not in ("histogram", "memorization")}, flush=True)
    result["calibration"] = {k: {kk: vv for kk, vv in v.items() if kk != "histogram"}
                             for k, v in calibration(args.n).items()}
    result["goals"] = goals(result)
    write_json(result, args.out)
    print(verdict(result), flush=True)
    if not args.no_card:
        update_card(result, folder)


def goals(result: dict) -> dict:
    """The reference model's goals, read off the numbers (True = met)."""
    cal = result["calibration"]
    floor = next(v["fid"] for k, v in cal.items() if "floor" in k)
    noisy = next(v["fid"] for k, v in cal.items() if "noise" in k and "pure" not in k)
    scores = result["scores"]
    return {"conditional FID <= 1.5 x floor": scores["classes 0-9 in turn"]["fid"] <= 1.5 * floor,
            "unconditional FID < held-out + noise 0.1": scores["no labels"]["fid"] < noisy,
            "weights <= 20 MB": result["weights_mb"] <= 20}


def update_card(result: dict, folder: Path) -> None:
    if not (folder / "MODEL_CARD.md").exists() or "card" not in json.loads((folder / "config.json").read_text()):
        print(f"{folder} has no model card: scores not added to it")
        return
    config = json.loads((folder / "config.json").read_text())
    cal = result["calibration"]
    names = list(cal)
    config["card"]["quality"] = {"n": result["n"], "sampler": result["sampler"],
                                 "samples": {k: {m: v[m] for m in ("fid", "confidence", "coverage")}
                                             for k, v in result["scores"].items()},
                                 "calibration": {k: {m: cal[k][m] for m in ("fid", "confidence", "coverage")}
                                                 for k in names}}
    write_json(config, folder / "config.json")
    rows = [f"| {k} (samples) | {v['fid']:.2f} | {v['confidence']:.3f} | {v['coverage']:.1f} |"
            for k, v in result["scores"].items()]
    rows += [f"| {k} (calibration) | {v['fid']:.2f} | {v['confidence']:.3f} | {v['coverage']:.1f} |"
             for k, v in cal.items()]
    text = (folder / "MODEL_CARD.md").read_text().split("## Quality")[0].rstrip()
    text = text.replace("Quality scores (chapter 5's calibrated metric) are added when chapter 5 measures them.", "")
    text += f"""

## Quality

Chapter 5's metric: Fréchet distance in the feature space of the shipped digit classifier (against the 4,000
training images), classifier confidence and class coverage; n = {result['n']} per row, {result['sampler']},
{result['hardware']}{', bf16 autocast' if result['bf16_autocast'] else ''}. Command: `{result.get('command', 'python benchmarks/reference_quality.py')}`.

| set | FID | confidence | coverage |
|---|---|---|---|
""" + "\n".join(rows) + "\n" + verdict(result)
    text = text.replace("\n\n\n", "\n\n")
    atomic_replace(lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), folder / "MODEL_CARD.md")


def verdict(result: dict) -> str:
    """The target, read off the numbers: DDIM-50 samples nearer the real floor than noisy held-out digits;
    then the reference model's goals."""
    cal, lines = result["calibration"], []
    floor = next(v["fid"] for k, v in cal.items() if "floor" in k)
    noisy = next(v["fid"] for k, v in cal.items() if "noise" in k and "pure" not in k)
    for name, s in result["scores"].items():
        closer = s["fid"] - floor < noisy - floor
        lines.append(f"- {name}: FID {s['fid']:.2f} is {'closer to' if closer else 'farther from'} the floor "
                     f"({floor:.2f}) than held-out digits with noise sigma = 0.1 ({noisy:.2f}); "
                     f"{round(s['coverage'] * 10)} of 10 classes present.")
    lines += [f"- goal: {name}: {'met' if ok else 'not met'}" for name, ok in goals(result).items()]
    return "\nTarget: DDIM-50 samples closer to the floor than noisy held-out digits, every class present.\n\n" + \
        "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
