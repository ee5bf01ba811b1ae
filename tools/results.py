"""Regenerate every number the book reads with one command: retrain the reference model, score it, rebuild the
tables of chapters 3, 5 and 6 and the benchmark tables of the appendix.

    python tools/results.py                                    # one GPU, n = 1000 everywhere (goal: <= 10 minutes)
    python tools/results.py --only quality steps               # some parts (the others are kept as they are)
    python tools/results.py --device cpu --quick --work-dir /tmp/r --no-install   # the same pipeline, tiny sizes

Every part is one script, run as a subprocess whose output streams through, so each table is printed as it
finishes:

    train         tools/make_reference_model.py        the reference model, with RECIPE (below), and its card
    quality       benchmarks/reference_quality.py      reference_quality.json (chapter 5), scores on the card
    steps         benchmarks/steps_vs_fid.py           steps_vs_fid.json and ddim_clipping.npz (chapter 5)
    applications  benchmarks/applications_tables.py    applications_*.json (chapter 6)
    dit           benchmarks/dit_vs_unet.py            dit_vs_unet.json (chapter 3)
    bench-train   benchmarks/bench_train_throughput.py the training-throughput table (appendix)
    bench-sample  benchmarks/bench_sampling.py         the sampling-throughput table (appendix)

Everything is written under --work-dir first (model/, data/, bench/); a part that finished is recorded, with its
command and wall time, in <work-dir>/manifest.json and skipped when the command is run again (resumable part by
part; --recompute reruns them). When every part asked for has finished, the results are installed: the model into
ddpm_edu/pretrained/mnist_default/, the data files into book/data/, the benchmark results into
benchmarks/results/ (each file replaced atomically; --no-install leaves them in --work-dir). Nothing is merged by
hand. --quick runs every part at tiny sizes (a test runs it on the CPU) and never installs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python tools/results.py` from a checkout, installed or not
# ddpm_edu (and so torch) is imported only once there is work to do: a mistyped argument is refused at once.

MODEL_DEST = ROOT / "ddpm_edu" / "pretrained" / "mnist_default"
DATA_DEST = ROOT / "book" / "data"
BENCH_DEST = ROOT / "benchmarks" / "results"

# The reference model's recipe for a GPU run, chosen for quality: ~15x the CPU model's 256k training images; label
# dropout 0.2 (twice the CPU model's) so that the "no class" model the unconditional samples come from is trained
# on a fifth of the steps; a slower EMA to match the longer run. To be checked by the run itself: `quality` reports
# FID against the goals, and the memorization check (4,000 training digits seen ~900 times each).
RECIPE = ["--preset", "default", "--steps", "14000", "--batch-size", "256", "--lr", "0.002", "--warmup-steps", "500",
          "--ema-decay", "0.9995", "--label-dropout", "0.2"]
QUICK_RECIPE = ["--preset", "tiny", "--steps", "12", "--batch-size", "16", "--lr", "0.001", "--ema-decay", "0.9"]
PARTS = ("train", "quality", "steps", "applications", "dit", "bench-train", "bench-sample")
# Seconds each part is expected to take, for the plan printed before a run and for --budget: on one H200 (the
# 2026-12-04 run's manifest where a part finished there; train: ~45 s of compilation plus 14,000 x 256 images at the
# ~21,000 images/s measured with CUDA graphs; the others: estimates) and with --quick on the 2-core CPU.
ESTIMATES = {"train": (220, 40), "quality": (25, 15), "steps": (300, 40), "applications": (120, 60), "dit": (60, 30),
             "bench-train": (100, 30), "bench-sample": (60, 20)}


def part_commands(part: str, args, work: Path) -> list[list[str]]:
    """The command line(s) of one part (argv lists, run from the repository root)."""
    py, model, data, bench = sys.executable, str(work / "model"), str(work / "data"), str(work / "bench")
    quick, dev = args.quick, args.device
    if part == "train":
        recipe = QUICK_RECIPE if quick else RECIPE
        resume = ["--resume"] if (work / "run" / "state.safetensors").exists() else []
        graphs = ["--compile", "reduce-overhead"] if not quick and resolve_device(dev).startswith("cuda") else []
        return [[py, "tools/make_reference_model.py", "--device", dev, "--precision", args.precision,
                 "--threads", str(args.threads), "--out", str(work / "run"), "--dest", model, *resume, *recipe,
                 *graphs] + (["--card-steps", "2"] if quick else [])]
    checkpoint = ["--checkpoint", model] if args_has_model(args, work) else []
    if part == "quality":
        n = ["--n", "20", "--steps", "3", "--batch-size", "20"] if quick else ["--n", str(args.n), "--batch-size", "500"]
        return [[py, "benchmarks/reference_quality.py", "--device", dev, "--threads", str(args.threads),
                 *checkpoint, *n, "--out", f"{data}/reference_quality.json"] + ([] if checkpoint else ["--no-card"])]
    if part == "steps":
        size = (["--n", "20", "--steps", "2", "--solver-steps", "2", "--batch-size", "20", "--clipping-steps",
                 "2", "3", "--rows", "ddpm-small", "dpmpp-2m"] if quick
                else ["--n", str(args.n), "--batch-size", "1000"])
        return [[py, "benchmarks/steps_vs_fid.py", "--device", resolve_device(dev), *checkpoint, *size,
                 "--clipping-figure", "--out", f"{data}/steps_vs_fid.json"]]
    if part == "applications":
        size = ["--quick"] if quick else ["--n", str(args.n)]
        return [[py, "benchmarks/applications_tables.py", "--device", dev, *checkpoint, *size, "--out-dir", data]]
    if part == "dit":
        size = ["--quick"] if quick else []
        return [[py, "benchmarks/dit_vs_unet.py", "--device", resolve_device(dev), *size,
                 "--out", f"{data}/dit_vs_unet.json"]]
    device = resolve_device(dev)
    if part == "bench-train":
        size = ["--quick"] if quick else []
        return [[py, "benchmarks/bench_train_throughput.py", "--device", device, *size,
                 "--out", f"{bench}/bench_train_throughput_{device.split(':')[0]}.json"]]
    if part == "bench-sample":
        size = ["--quick"] if quick else []
        return [[py, "benchmarks/bench_sampling.py", "--device", device, *size,
                 "--out", f"{bench}/bench_sampling_{device.split(':')[0]}.json"]]
    raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def args_has_model(args, work: Path) -> bool:
    """Parts after `train` score the model it made; with `train` not asked for and never run, the shipped one."""
    return "train" in args.only or (work / "model" / "model.safetensors").exists()


def resolve_device(name: str) -> str:
    """'auto' made concrete (the scripts that take only 'cpu' or 'cuda' get the same device as the others)."""
    from ddpm_edu.utils import pick_device

    return str(pick_device(name))


def shown(command: list[str]) -> str:
    return "python " + shlex.join(command[1:])


def run_part(part: str, args, work: Path, manifest: dict) -> None:
    start = time.time()
    commands = part_commands(part, args, work)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for command in commands:
        print(f"\n=== {part}: {shown(command)}", flush=True)
        done = subprocess.run(command, cwd=ROOT, env=env)
        if done.returncode != 0:
            raise SystemExit(f"error: part '{part}' failed (exit {done.returncode}): {shown(command)}; "
                             f"finished parts are kept in {work}, rerun to continue")
    from ddpm_edu.checkpoint import write_json

    seconds = round(time.time() - start, 1)
    manifest["parts"][part] = {"commands": [shown(c) for c in commands], "seconds": seconds,
                               "finished": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    write_json(manifest, work / "manifest.json")
    print(f"=== {part} finished in {seconds:.0f} s", flush=True)


def install(work: Path, parts: list[str]) -> list[str]:
    """Copy the results of the finished parts to where the package and the book read them; each file atomically."""
    from ddpm_edu.utils import atomic_replace

    plan = []
    if "train" in parts:
        plan += [(p, MODEL_DEST / p.name) for p in sorted((work / "model").glob("*")) if p.is_file()]
    elif "quality" in parts and (work / "model").exists():  # the card of an installed model gained scores
        plan += [(work / "model" / name, MODEL_DEST / name) for name in ("config.json", "MODEL_CARD.md")]
    plan += [(p, DATA_DEST / p.name) for p in sorted((work / "data").glob("*")) if p.is_file() and ".tmp" not in p.name]
    plan += [(p, BENCH_DEST / p.name) for p in sorted((work / "bench").glob("*.json"))]
    for source, target in plan:
        atomic_replace(lambda tmp, source=source: shutil.copyfile(source, tmp), target)
    return [str(t.relative_to(ROOT)) for _, t in plan]


def plan(parts: list[str], quick: bool, budget: float | None) -> str:
    """The parts about to run, each with its expected seconds (ESTIMATES), and the total against --budget."""
    lines = ["=== plan (expected seconds, " + ("--quick on a CPU" if quick else "one H100/H200") + ")"]
    total = 0
    for part in parts:
        total += ESTIMATES[part][1 if quick else 0]
        lines.append(f"  {part:13s} {ESTIMATES[part][1 if quick else 0]:6d} s   (by then {total:5d} s)")
    lines.append(f"  {'total':13s} {total:6d} s" + ("" if budget is None else f"   budget {budget:.0f} s"))
    return "\n".join(lines)


def summary(work: Path, manifest: dict) -> None:
    print("\n=== results: wall time per part")
    for part, entry in manifest["parts"].items():
        print(f"  {part:13s} {entry['seconds']:8.0f} s")
    print(f"  {'total':13s} {sum(e['seconds'] for e in manifest['parts'].values()):8.0f} s")
    quality = work / "data" / "reference_quality.json"
    if quality.exists():
        result = json.loads(quality.read_text())
        for name, met in result.get("goals", {}).items():
            print(f"  goal: {name}: {'met' if met else 'NOT met'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", help="training precision (auto: the trainer's choice)")
    p.add_argument("--n", type=int, default=1000, help="samples per table cell (at most 1000, the held-out size)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the CPU parts")
    p.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "results")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a test of the pipeline, never installed")
    p.add_argument("--recompute", action="store_true", help="rerun parts the manifest says are finished")
    p.add_argument("--no-install", action="store_true", help="leave the results in --work-dir")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="stop cleanly before a part that would not finish within SECONDS of the start (by its estimate)")
    p.add_argument("--install-only", action="store_true",
                   help="run nothing: install what --work-dir holds (e.g. the results of tools/gpu_run.sh)")
    args = p.parse_args(argv)
    if not 1 <= args.n <= 1000:
        p.error(f"argument --n: expected an integer in [1, 1000] (the held-out set has 1000 digits), got {args.n}")
    work = args.work_dir
    if work.exists() and not work.is_dir():
        p.error(f"argument --work-dir: {work} is a file, not a folder")
    work.mkdir(parents=True, exist_ok=True)
    settings = {"quick": args.quick, "n": args.n, "device": args.device}
    manifest_path = work / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if args.install_only:
        finished = [part for part in PARTS if part in manifest.get("parts", {})]
        if not finished or manifest.get("settings", {}).get("quick"):
            p.error(f"argument --install-only: {work} holds no finished full-size parts")
        for path in install(work, finished):
            print(f"installed {path}")
        return 0
    if manifest and manifest.get("settings") != settings:
        if not args.recompute:
            p.error(f"argument --work-dir: {work} holds parts made with {manifest.get('settings')}, not {settings}: "
                    "use another --work-dir, or --recompute to start again")
        manifest = {}
    manifest = manifest or {"settings": settings, "parts": {}}
    manifest["hardware"] = f"{platform.node()}: {platform.processor() or platform.machine()}"
    todo = [part for part in PARTS if part in args.only and (args.recompute or part not in manifest["parts"])]
    print(plan(todo, args.quick, args.budget), flush=True)
    start = time.time()
    for part in PARTS:
        if part not in args.only:
            continue
        if part in manifest["parts"] and not args.recompute:
            print(f"=== {part}: finished earlier ({manifest['parts'][part]['seconds']:.0f} s), skipped", flush=True)
            continue
        expected = ESTIMATES[part][1 if args.quick else 0]
        if args.budget is not None and time.time() - start + expected > args.budget:
            left = todo[todo.index(part):]
            print(f"\n=== stopped by --budget {args.budget:.0f} s after {time.time() - start:.0f} s: {part} would take "
                  f"about {expected} s more; not run: {', '.join(left)}. Finished parts are in {work}; rerun to "
                  "continue", flush=True)
            summary(work, manifest)
            return 0
        run_part(part, args, work, manifest)
    print(f"\nall parts asked for finished; this run took {time.time() - start:.0f} s")
    summary(work, manifest)
    if args.quick or args.no_install:
        print(f"results left in {work}" + (" (--quick never installs)" if args.quick else ""))
    else:
        for path in install(work, args.only):
            print(f"installed {path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: finished parts are recorded; rerun the same command to continue", file=sys.stderr)
        sys.exit(130)
