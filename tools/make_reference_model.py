"""Train the reference MNIST model with the project's own command line and ship it inside the package.

    python tools/make_reference_model.py --steps 2000 --batch-size 128 --precision bf16   # as shipped (CPU)
    python tools/make_reference_model.py --device cuda --steps 12000 --batch-size 256 ... # via tools/results.py

1. runs `python -m ddpm_edu train --preset default ...` into runs/reference (resumable: rerun with --resume);
   options this script does not know (e.g. --label-dropout 0.2, --warmup-steps 500) go to the trainer as they are;
2. copies config.json and model.safetensors (EMA weights) to --dest (ddpm_edu/pretrained/mnist_default/), adding a
   "card" entry to config.json: the exact command, hardware, steps, wall time, images/s and final loss;
3. draws the card's sample grid (DDIM, 50 steps, rows = classes 0-9) and writes MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "ddpm_edu" / "pretrained" / "mnist_default"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto",
                   help="auto (the trainer's default for the device), fp32 or bf16 (autocast); the appendix measures both")
    p.add_argument("--ema-decay", type=float, default=0.998)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs" / "reference"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--skip-training", action="store_true", help="only package an existing run")
    p.add_argument("--dest", type=Path, default=DEST, help="where the packaged model goes (default: the shipped one)")
    p.add_argument("--preset", default="default")
    p.add_argument("--card-steps", type=int, default=50, help="DDIM steps of the card's sample grid")
    args, extra = p.parse_known_args()

    command = [sys.executable, "-m", "ddpm_edu", "train", "--preset", args.preset, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--device", args.device,
               "--precision", args.precision, "--ema-decay", str(args.ema_decay),
               "--threads", str(args.threads), "--checkpoint-every", "250", "--log-every", "50", "--no-progress",
               "--out", args.out] + extra + (["--resume"] if args.resume else [])
    shown = "python -m ddpm_edu " + shlex.join(command[3:]).replace(str(ROOT) + "/", "")
    if not args.skip_training:
        print("running:", shown, flush=True)
        start = time.time()
        subprocess.run(command, check=True, cwd=ROOT)
        print(f"training took {(time.time() - start) / 60:.1f} min", flush=True)
    package(Path(args.out), shown, args.dest, args.card_steps)
    return 0


def package(run: Path, command: str, dest: Path = DEST, card_steps: int = 50) -> None:
    import torch

    from ddpm_edu.checkpoint import read_config, read_safetensors, write_json
    from ddpm_edu.imageio import save_images
    from ddpm_edu.utils import atomic_replace

    config = read_config(run)
    _, meta = read_safetensors(run / "state.safetensors")
    history = meta["extra"]["history"]
    tail = history[-max(1, len(history) // 10):]  # the last tenth of the run
    rates = sorted(r["images_per_s"] for r in history)
    card = {"command": command, "final_loss": sum(r["loss"] for r in tail) / len(tail),
            "images_per_s": config["step"] * config["train"]["batch_size"] / config["train_seconds"],
            "images_per_s_median_window": rates[len(rates) // 2],
            "wall_time_min": config["train_seconds"] / 60, "hardware": config["hardware"],
            "date": datetime.date.today().isoformat(), "loss_history": [[r["step"], round(r["loss"], 5)] for r in history]}
    dest.mkdir(parents=True, exist_ok=True)
    atomic_replace(lambda tmp: shutil.copyfile(run / "model.safetensors", tmp), dest / "model.safetensors")
    state, _ = read_safetensors(run / "state.safetensors")  # the raw (non-averaged) weights, for comparison
    from ddpm_edu.checkpoint import write_safetensors
    write_safetensors({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")},
                      dest / "raw_model.safetensors", {"step": config["step"]})
    write_json({**config, "card": card}, dest / "config.json")

    from ddpm_edu.checkpoint import load_model
    from ddpm_edu.sampling import sample

    model, schedule, cfg = load_model(dest)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(10)
    images = sample(model, schedule, (100, 1, 28, 28), sampler="ddim", steps=card_steps, labels=labels, generator=g,
                    prediction_type=cfg["prediction_type"])
    save_images(images, dest / "samples.png", nrow=10)
    write_card(cfg, card, dest)
    print(json.dumps({k: v for k, v in card.items() if k != "loss_history"}, indent=2))


def write_card(cfg: dict, card: dict, dest: Path = DEST) -> None:
    text = f"""# Reference model: `mnist_default`

The model every later chapter of the book loads with `ddpm_edu.checkpoint.load_model()`.

| | |
|---|---|
| architecture | U-Net, preset `{cfg['train']['preset']}`, {cfg['parameters']:,} parameters, class-conditional (10 digits + "no class") |
| data | {cfg['data']['dataset']}, {cfg['data']['split']} split, {cfg['data']['n_images']} images of {cfg['data']['image_shape']} |
| objective | {cfg['prediction_type']}-prediction, $L_\\text{{simple}}$, {cfg['schedule']['name']} schedule, T = {cfg['schedule']['T']} |
| training | {cfg['step']} steps, batch {cfg['train']['batch_size']}, AdamW lr {cfg['train']['lr']} (warm-up {cfg['train']['warmup_steps']}, cosine), EMA {cfg['train']['ema_decay']}, label dropout {cfg['train']['label_dropout']} |
| command | `{card['command']}` |
| hardware | {card['hardware']} |
| wall time | {card['wall_time_min']:.1f} min: {card['images_per_s']:.0f} images/s on average, {card['images_per_s_median_window']:.0f} images/s in the median {cfg['train']['log_every']}-step window (the average includes start-up and checkpoints) |
| final loss | {card['final_loss']:.4f} (mean over the last tenth of the run) |
| date | {card['date']} |

Samples (DDIM, 50 steps, no guidance; row k is class k): `samples.png`.

Quality scores (chapter 5's calibrated metric) are added when chapter 5 measures them.
"""
    from ddpm_edu.utils import atomic_replace
    atomic_replace(lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), dest / "MODEL_CARD.md")


if __name__ == "__main__":
    sys.exit(main())
