"""The full tables of chapter 6 (applications of the reference model), computed once and stored as JSON.

    python benchmarks/applications_tables.py                    # all four tables (about 15 minutes, one CPU thread)
    python benchmarks/applications_tables.py --only denoising   # one of them

Each part calls the same function of ddpm_edu.evaluation as the chapter's small version, with more images:
guidance sweep (synthesis), denoising PSNR/SSIM against classical baselines, inpainting (replacement vs RePaint,
three masks), SDEdit's realism-faithfulness curve. Writes book/data/applications_<part>.json, which chapter 6 reads,
with the hardware that produced it.
"""

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from ddpm_edu import applications as apps
from ddpm_edu import evaluation
from ddpm_edu.checkpoint import load_model, write_json
from ddpm_edu.data import load_dataset
from ddpm_edu.metrics import calibration

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("synthesis", "denoising", "inpainting", "sdedit")


def heldout_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n held-out digits (and labels) in a random order fixed by the seed."""
    heldout = load_dataset("mnist-subset", "heldout")
    idx = torch.randperm(len(heldout.images), generator=torch.Generator().manual_seed(seed))[:n]
    return heldout.images[idx], heldout.labels[idx]


def synthesis(model, schedule, pt, args) -> dict:
    scores, _ = evaluation.guidance_sweep(model, schedule, (0.0, 1.0, 2.0, 3.0, 5.0), per_class=args.per_class,
                                    steps=args.steps, prediction_type=pt)
    clipped, _ = evaluation.guidance_sweep(model, schedule, (1.0, 3.0), per_class=args.per_class, steps=args.steps,
                                     prediction_type=pt, clip_x0=True)
    floor = calibration(10 * args.per_class)["held-out real (floor)"]
    return {"per_class": args.per_class, "steps": args.steps, "sampler": "ddim", "clip_x0": False,
            "table": {str(w): s for w, s in scores.items()},
            "table_clip_x0": {str(w): s for w, s in clipped.items()}, "floor_fid": floor["fid"]}


def denoising(model, schedule, pt, args) -> dict:
    clean, _ = heldout_digits(args.n)
    table, _ = evaluation.denoising_table(model, schedule, clean, (0.1, 0.2, 0.3, 0.5), steps=5, n_samples=4,
                                    prediction_type=pt)
    return {"n": args.n, "table": {str(s): row for s, row in table.items()}}


def inpainting(model, schedule, pt, args) -> dict:
    clean, labels = heldout_digits(args.n)
    masks = {name: apps.make_mask(name, generator=torch.Generator().manual_seed(0)) for name in apps.MASK_SHAPES}
    methods = {"replacement, DDPM 20 steps": dict(method="replacement", steps=20),
               "replacement, DDPM 50 steps": dict(method="replacement", steps=50),
               "RePaint, 20 steps, jump 5, resample 3": dict(method="repaint", steps=20, jump_length=5, resample=3),
               "replacement, 20 steps, label given": dict(method="replacement", steps=20, conditional=True)}
    table, _ = evaluation.inpainting_table(model, schedule, clean, labels, masks, methods, per_image=2,
                                           prediction_type=pt)
    return {"n": args.n, "per_image": 2, "table": table}


def sdedit(model, schedule, pt, args) -> dict:
    g = torch.Generator().manual_seed(0)
    digits = torch.arange(10).repeat(args.n // 10)
    guides = torch.cat([evaluation.sketch_digit(int(d), jitter=1.5, generator=g) for d in digits])
    strengths = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
    curve, _ = evaluation.sdedit_curve(model, schedule, guides, digits, strengths, steps=20, prediction_type=pt)
    floor = calibration(len(guides))["held-out real (floor)"]
    return {"n": len(guides), "steps": 20, "sampler": "ddim", "curve": {str(s): c for s, c in curve.items()},
            "floor_fid": floor["fid"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--n", type=int, default=50, help="held-out digits or sketches per table")
    parser.add_argument("--per-class", type=int, default=10, help="samples per digit in the guidance sweep")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of the guidance sweep")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, schedule, config = load_model()
    for part in args.only:
        start = time.time()
        result = globals()[part](model, schedule, config["prediction_type"], args)
        result.update(seconds=round(time.time() - start), torch=torch.__version__,
                      hardware=f"CPU {platform.processor() or platform.machine()}, {args.threads} threads",
                      command="python benchmarks/applications_tables.py " + shlex.join(sys.argv[1:]))
        out = ROOT / "book" / "data" / f"applications_{part}.json"
        write_json(result, out)
        print(f"{part}: {result['seconds']} s, wrote {out}", flush=True)


if __name__ == "__main__":
    main()
