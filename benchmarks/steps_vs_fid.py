"""Number of sampling steps vs sample quality for the reference model (chapter 5's table, like Table 1 of DDIM).

    python benchmarks/steps_vs_fid.py                       # full table: 1,000 samples per cell (use a GPU)
    python benchmarks/steps_vs_fid.py --n 100 --steps 10 20 # a quick look on a CPU

For each sampler row (DDIM eta=0; DDPM with the small variance, i.e. eta=1; DDPM with the large variance, the
DDIM paper's sigma-hat) and each number of steps, draws n unconditional samples from the same seed and scores them
with ddpm_edu.metrics (FID in the shipped classifier's feature space, confidence, coverage), beside the calibration
sets of the same size. Writes book/data/steps_vs_fid.json, which chapter 5 reads, with the hardware that produced it.
"""

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from ddpm_edu.checkpoint import load_model, write_json
from ddpm_edu.metrics import calibration, quality_scores
from ddpm_edu.sampling import sample_n

ROOT = Path(__file__).resolve().parent.parent
ROWS = {  # --rows key -> (name in the table, keyword arguments of ddpm_edu.sampling.sample)
    "ddim": ("DDIM, η = 0", {"sampler": "ddim", "eta": 0.0}),
    "ddpm-small": ("DDPM, small σ (η = 1)", {"sampler": "ddpm", "variance": "small"}),
    "ddpm-large": ("DDPM, large σ (σ̂)", {"sampler": "ddpm", "variance": "large"}),
}


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the reference model)")
    parser.add_argument("--n", type=int, default=1000, help="samples per cell (at most 1000: the held-out size)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 1000])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--long-steps", type=int, nargs="*", default=[],
                        help="step counts run only for the --long-rows (to save time on a CPU)")
    parser.add_argument("--long-rows", nargs="*", default=[], choices=list(ROWS))
    parser.add_argument("--merge", action="store_true",
                        help="add the computed cells to an existing --out file (same n and seed) instead of replacing it")
    parser.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast (CPU or GPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "book" / "data" / "steps_vs_fid.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    model, schedule, config = load_model(args.checkpoint, device=device)
    table = {}
    for key in args.rows:
        row, kwargs = ROWS[key]
        table[row] = {}
        for steps in args.steps:
            if steps in args.long_steps and key not in args.long_rows:
                continue
            start = time.time()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                x = sample_n(model, schedule, args.n, (1, 28, 28), batch_size=args.batch_size,
                             generator=torch.Generator(device).manual_seed(args.seed), steps=steps,
                             prediction_type=config["prediction_type"], **kwargs).float()
            seconds = time.time() - start
            scores = {k: v for k, v in quality_scores(x).items() if k != "histogram"}
            table[row][str(steps)] = {**scores, "seconds": round(seconds, 1)}
            print(f"{row:24s} {steps:5d} steps  FID {scores['fid']:7.2f}  confidence {scores['confidence']:.3f}  "
                  f"coverage {scores['coverage']:.1f}  ({seconds:.0f} s)", flush=True)
    calib = {name: {k: v for k, v in s.items() if k != "histogram"} for name, s in calibration(args.n).items()}
    result = {"n": args.n, "steps": args.steps, "rows": [ROWS[key][0] for key in args.rows], "seed": args.seed, "spacing": "trailing", "clip_x0": True,
              "labels": None, "bf16_autocast": args.bf16, "checkpoint": args.checkpoint or "reference", "hardware": hardware(device),
              "torch": torch.__version__, "table": table, "calibration": calib,
              "command": "python benchmarks/steps_vs_fid.py " + shlex.join(sys.argv[1:])}
    if args.merge and args.out.exists():
        result = merge(json.loads(args.out.read_text(encoding="utf-8")), result)
    write_json(result, args.out)
    print(f"wrote {args.out}")


def merge(old: dict, new: dict) -> dict:
    """Add new's cells to old's table; both runs must share n, seed and precision."""
    for key in ("n", "seed", "bf16_autocast"):
        if old.get(key) != new.get(key):
            raise SystemExit(f"--merge: {key} differs ({old.get(key)} in the file, {new.get(key)} now)")
    for row, cells in new["table"].items():
        old["table"].setdefault(row, {}).update(cells)
    old["rows"] = old["rows"] + [r for r in new["rows"] if r not in old["rows"]]
    old["steps"] = sorted(set(old["steps"]) | set(new["steps"]))
    old["command"] = old["command"] + "; then " + new["command"]
    return old


if __name__ == "__main__":
    main()
