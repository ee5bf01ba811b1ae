"""Number of sampling steps vs sample quality for the reference model: chapter 5's table (like Table 1 of DDIM).

    python benchmarks/steps_vs_fid.py                              # the full table, n = 1000 per cell (use a GPU)
    python benchmarks/steps_vs_fid.py --n 200 --steps 10 20 50 100 # the CPU version the book shows now
    python benchmarks/steps_vs_fid.py --n 20 --steps 2 --solver-steps 2 --out /tmp/t.json   # a smoke test

Rows: every sampler setting of chapter 5 (DDPM with the small and the large variance; DDIM with eta = 0, 0.5, 1;
DPM-Solver++(2M)), by name from ddpm_edu.sampling's registry; a sampler registered later gets a row of its own. Columns: the number of network evaluations
(--steps; DPM-Solver++ at its own, smaller counts, --solver-steps). Conditions: 'classes in turn' (labels 0..9
repeating) and 'no labels'. Every cell draws n samples from the same seed and scores them with ddpm_edu.metrics
(FID in the shipped classifier's feature space, confidence, coverage, mean pixel value), beside the calibration sets
of the same n.

The table is written to book/data/steps_vs_fid.json after every cell, with the command, hardware, torch version and
seconds of each cell. Running the script again with other --rows/--steps/--conditions adds cells to the same file
(same n and seed required); cells already there are skipped unless --recompute. --clipping-figure also stores
the images of chapter 5's clipping lesson (DDIM with 50 and 1000 steps, eps re-derived or not, same x_T).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_edu.checkpoint import load_model, write_json
from ddpm_edu.metrics import calibration, calibration_sets, fid_interval, quality_scores
from ddpm_edu.sampling import SAMPLERS, sample, sample_n

ROOT = Path(__file__).resolve().parent.parent
ROWS = {  # --rows key -> (name in the table, registered sampler, its options)
    "ddpm-small": ("DDPM, small σ", "ddpm", {"variance": "small"}),
    "ddpm-large": ("DDPM, large σ", "ddpm", {"variance": "large"}),
    "ddim-0": ("DDIM, η = 0", "ddim", {"eta": 0.0}),
    "ddim-0.5": ("DDIM, η = 0.5", "ddim", {"eta": 0.5}),
    "ddim-1": ("DDIM, η = 1", "ddim", {"eta": 1.0}),
    "dpmpp-2m": ("DPM-Solver++(2M)", "dpmpp-2m", {}),
    "sde-dpmpp-2m": ("SDE-DPM-Solver++(2M)", "sde-dpmpp-2m", {}),
}
ROWS.update({name: (cls.__name__, name, {}) for name, cls in SAMPLERS.items()  # a newly registered sampler gets
             if name not in {sampler for _, sampler, _ in ROWS.values()}})  # a row with its default options
SOLVERS = {"dpmpp-2m", "sde-dpmpp-2m"}  # rows that run at --solver-steps instead of --steps
CONDITIONS = {"cond": "classes in turn", "uncond": "no labels"}


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def load_table(path: Path, n: int, seed: int) -> dict:
    if not path.exists():
        return {"n": n, "seed": seed, "rows": {}, "cells": {}, "commands": []}
    table = json.loads(path.read_text(encoding="utf-8"))
    for key, value in (("n", n), ("seed", seed)):
        if table.get(key) != value:
            raise SystemExit(f"{path} holds cells with {key} = {table.get(key)}, not {value}: pass --out elsewhere")
    return table


def scores_of(x: torch.Tensor, boot: int = 200) -> dict:
    """quality_scores (with the class histogram), the FID's 95% bootstrap interval and the mean pixel value."""
    scores = quality_scores(x)
    interval = fid_interval(x, boot=boot)
    scores["fid_ci"], scores["fid_boot_sd"] = interval["ci"], interval["boot_sd"]
    scores["mean_pixel"] = round(((x.float().clamp(-1, 1) + 1) / 2).mean().item(), 4)
    return scores


def clipping_figure(model, schedule, device, seed: int, path: Path, steps_pair=(50, 1000)) -> None:
    """DDIM (eta = 0) from one x_T for digits 0..7: 50 and 1000 steps, eps_hat re-derived from the clipped x0_hat
    or kept raw; saved as uint8 images (4, 8, 28, 28) with the mean pixel value of each run."""
    g = torch.Generator(device).manual_seed(seed)
    x_T = torch.randn(8, *model_image_shape(model), generator=g, device=device)
    runs, means = {}, {}
    for steps in steps_pair:
        for rederive in (True, False):
            name = f"DDIM-{steps}, eps {'re-derived' if rederive else 'raw'}"
            start = time.time()
            x = sample(model, schedule, x_T=x_T, sampler="ddim", steps=steps, rederive_eps=rederive,
                       labels=torch.arange(8, device=device)).float().cpu()
            runs[name] = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
            means[name] = round(((x.clamp(-1, 1) + 1) / 2).mean().item(), 4)
            print(f"clipping figure: {name:28s} mean pixel {means[name]:.4f}  ({time.time() - start:.0f} s)", flush=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, names=np.array(list(runs)), images=np.stack(list(runs.values())),
                        mean_pixel=np.array([means[k] for k in runs]))
    tmp.replace(path)
    print(f"wrote {path}")


def model_image_shape(model) -> tuple:
    config = model.config
    return (config.in_channels, config.image_size, config.image_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the reference model)")
    parser.add_argument("--n", type=int, default=1000, help="samples per cell (at most 1000: the held-out size)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 1000])
    parser.add_argument("--solver-steps", type=int, nargs="+", default=[5, 10, 15, 20, 25],
                        help="step counts of the high-order solvers (%(default)s)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--recompute", action="store_true", help="recompute cells already in --out")
    parser.add_argument("--clipping-figure", action="store_true", help="also store chapter 5's clipping lesson images")
    parser.add_argument("--clipping-steps", type=int, nargs=2, default=[50, 1000],
                        help="the two DDIM step counts of the clipping figure (chapter 5 reads 50 and 1000)")
    parser.add_argument("--boot", type=int, default=200, help="bootstrap resamplings of each FID's interval")
    parser.add_argument("--out", type=Path, default=ROOT / "book" / "data" / "steps_vs_fid.json")
    args = parser.parse_args()
    unknown = {ROWS[key][1] for key in args.rows} - set(SAMPLERS)
    if unknown:
        raise SystemExit(f"--rows: samplers {sorted(unknown)} are not registered in ddpm_edu.sampling")

    device = torch.device(args.device)
    model, schedule, config = load_model(args.checkpoint, device=device)
    if args.clipping_figure:
        clipping_figure(model, schedule, device, args.seed, args.out.with_name("ddim_clipping.npz"),
                        args.clipping_steps)
    table = load_table(args.out, args.n, args.seed)
    table["commands"].append("python benchmarks/steps_vs_fid.py " + shlex.join(sys.argv[1:]))
    table["checkpoint"] = args.checkpoint or "reference"
    table["calibration"] = {name: {k: v for k, v in s.items() if k != "histogram"}
                            for name, s in calibration(args.n).items()}
    for name, images in calibration_sets(args.n).items():
        interval = fid_interval(images, boot=args.boot)
        table["calibration"][name]["fid_ci"], table["calibration"][name]["fid_boot_sd"] = interval["ci"], interval["boot_sd"]
    image_shape = model_image_shape(model)
    num_classes = model.config.num_classes
    for condition in args.conditions:
        labels = torch.arange(args.n) % num_classes if condition == "cond" else None
        for key in args.rows:
            row, sampler, options = ROWS[key]
            table["rows"][key] = row
            for steps in (args.solver_steps if key in SOLVERS else args.steps):
                cell_key = f"{condition}/{key}/{steps}"
                if cell_key in table["cells"] and not args.recompute:
                    continue
                start = time.time()
                x = sample_n(model, schedule, args.n, image_shape, batch_size=args.batch_size, labels=labels,
                             generator=torch.Generator(device).manual_seed(args.seed), sampler=sampler, steps=steps,
                             **options)
                seconds = time.time() - start
                table["cells"][cell_key] = {**scores_of(x, args.boot), "seconds": round(seconds, 1), "hardware": hardware(device),
                                            "torch": torch.__version__,
                                            "date": datetime.date.today().isoformat()}
                print(f"{CONDITIONS[condition]:15s} {row:18s} {steps:5d} steps  FID {table['cells'][cell_key]['fid']:8.2f}"
                      f"  mean pixel {table['cells'][cell_key]['mean_pixel']:.3f}  ({seconds:.0f} s)", flush=True)
                write_json(table, args.out)
    write_json(table, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
