"""The full tables of chapter 6 (applications), computed once and stored as JSON, one file per part.

    python benchmarks/applications_tables.py --n 100                      # every part, the shipped reference model
    python benchmarks/applications_tables.py --only inpainting --n 50     # one part
    python benchmarks/applications_tables.py --checkpoint DIR --device cuda --n 1000 --out-dir DIR   # on a GPU
    python benchmarks/applications_tables.py --device cpu --quick --out-dir /tmp/apps   # tiny sizes, < 1 minute

The committed tables: synthesis on one H200 at n = 1000 (`python tools/results.py`, part applications, cut short
there), the others on a shared 2-core CPU at n = 100 (inpainting 41 minutes under load) by
    python benchmarks/applications_tables.py --device cpu --n 100 --only denoising sdedit style inpainting

Each part calls the same function of ddpm_edu.evaluation as the chapter's small version, with more images:

    synthesis    guidance sweep (FID, confidence, agreement, diversity over w; with and without clipping x0_hat)
    denoising    PSNR/SSIM of the diffusion denoisers and four tuned classical filters at four noise levels
    inpainting   PSNR/SSIM inside the hole, FID, agreement, diversity: replacement, RePaint, label-given fills,
                 the mean of several fills, against scikit-image's biharmonic inpainting, on three masks
    sdedit       SDEdit of stroke sketches over strength (realism against faithfulness)
    style        typed-font digits carried into MNIST handwriting by SDEdit over strength

and writes <out-dir>/applications_<part>.json atomically (a temporary file, then os.replace), with its settings,
the exact command, the hardware, versions, date and wall time. A part whose JSON already exists with the same
settings is skipped (and its stored table printed), unless --recompute: an interrupted run resumes where it
stopped. Each table is printed as it finishes.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: no busy-waiting on a shared CPU

import argparse  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from ddpm_edu import applications as apps  # noqa: E402
from ddpm_edu import evaluation  # noqa: E402
from ddpm_edu.checkpoint import load_model, reference_model_path  # noqa: E402
from ddpm_edu.data import load_dataset  # noqa: E402
from ddpm_edu.metrics import calibration, frechet_distance  # noqa: E402
from ddpm_edu.utils import pick_device  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("synthesis", "denoising", "inpainting", "sdedit", "style")

# The sizes of each part: the full run, and --quick (a smoke test of the whole pipeline, not a measurement).
FULL = dict(steps=20, guidance_scales=(0.0, 1.0, 1.5, 2.0, 3.0), clip_scales=(3.0,),
            sigmas=(0.1, 0.2, 0.3, 0.5), denoise_steps=5, denoise_samples=4,
            inpaint_steps=10, repaint=(25, 1, 10), fills=2, mean_fills=4,
            strengths=(0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0), style_strengths=(0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
            style_label_strengths=(0.4, 0.6, 0.8, 1.0), style_guidance=2.0)
QUICK = dict(steps=2, guidance_scales=(0.0, 1.0, 3.0), clip_scales=(3.0,), sigmas=(0.2, 0.5), denoise_steps=2,
             denoise_samples=2, inpaint_steps=3, repaint=(4, 2, 2), fills=2, mean_fills=2,
             strengths=(0.0, 0.5, 1.0), style_strengths=(0.0, 0.5, 1.0), style_label_strengths=(1.0,),
             style_guidance=2.0)


def heldout_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n held-out digits (and labels) in a random order fixed by the seed (the chapter's order)."""
    heldout = load_dataset("mnist-subset", "heldout")
    idx = torch.randperm(len(heldout.images), generator=torch.Generator().manual_seed(seed))[:n]
    return heldout.images[idx], heldout.labels[idx]


def floor_fid(n: int) -> float:
    """FID of n held-out real digits (the calibration floor at the same n; FID is biased upwards at small n)."""
    return calibration(min(max(n, 2), 1000))["held-out real (floor)"]["fid"]


# ---- the five parts: each returns (result dict for the JSON, printable table) ----

def synthesis(ctx) -> tuple[dict, str]:
    s, per_class = ctx.sizes, max(2, ctx.n // 10)
    common = dict(per_class=per_class, steps=s["steps"], prediction_type=ctx.pt)
    scores, _ = evaluation.guidance_sweep(ctx.model, ctx.schedule, s["guidance_scales"], **common)
    clip_rederived, _ = evaluation.guidance_sweep(ctx.model, ctx.schedule, s["clip_scales"], clip_x0=True, **common)
    clip_raw, _ = evaluation.guidance_sweep(ctx.model, ctx.schedule, s["clip_scales"], clip_x0=True,
                                            rederive_eps=False, **common)
    result = {"per_class": per_class, "n": 10 * per_class, "steps": s["steps"], "sampler": "ddim",
              "table": {str(w): v for w, v in scores.items()},
              "table_clip_x0": {str(w): v for w, v in clip_rederived.items()},
              "table_clip_x0_raw_eps": {str(w): v for w, v in clip_raw.items()},
              "floor_fid": floor_fid(10 * per_class)}
    text = "\n".join([evaluation.format_guidance(scores), "x0_hat clipped, eps_hat re-derived from it:",
                      evaluation.format_guidance(clip_rederived), "x0_hat clipped, the network's eps_hat kept:",
                      evaluation.format_guidance(clip_raw), f"FID floor (n = {10 * per_class}): {result['floor_fid']:.1f}"])
    return result, text


def denoising(ctx) -> tuple[dict, str]:
    s = ctx.sizes
    clean, _ = heldout_digits(ctx.n)
    table, _ = evaluation.denoising_table(ctx.model, ctx.schedule, clean, s["sigmas"], steps=s["denoise_steps"],
                                          n_samples=s["denoise_samples"], prediction_type=ctx.pt)
    return {"n": ctx.n, "table": {str(k): v for k, v in table.items()}}, evaluation.format_denoising(table)


def repaint_evaluations(T: int, steps: int, jump: int, resample: int) -> int:
    """Network evaluations of one RePaint fill: the downward moves of its schedule (the jumps up cost none)."""
    plan = apps.repaint_timesteps(T, steps, jump, resample)
    return sum(1 for t, t_next in zip(plan, plan[1:] + [-1]) if t_next < t)


def inpainting_methods(s: dict, T: int = 1000) -> dict:
    """The diffusion rows of the inpainting table. RePaint follows the paper's setting (Lugmayr et al. 2022:
    jump j = 10 and r = 10 resamplings over T = 250 respaced steps) scaled to fewer steps: s['repaint'] =
    (respaced steps, j, r) keeps the jump at the same share of the trajectory (10 / 250 = 1 / 25) and r = 10.
    Replacement is also run with as many DDPM steps as RePaint's network evaluations (matched cost)."""
    steps, (rp_steps, j, r) = s["inpaint_steps"], s["repaint"]
    matched = repaint_evaluations(T, rp_steps, j, r)
    return {f"replacement, DDPM {steps} steps": dict(method="replacement", steps=steps, fills=s["mean_fills"],
                                                     mean_row=True),
            f"RePaint {rp_steps} steps, j {j}, r {r} ({matched} evals)":
                dict(method="repaint", steps=rp_steps, jump_length=j, resample=r, fills=1),
            f"replacement, DDPM {matched} steps (matched)": dict(method="replacement", steps=matched, fills=1),
            f"replacement, {steps} steps, label given": dict(method="replacement", steps=steps, label_given=True)}


def inpainting(ctx) -> tuple[dict, str]:
    s = ctx.sizes
    clean, labels = heldout_digits(ctx.n)
    masks = {name: apps.make_mask(name, generator=torch.Generator().manual_seed(0)) for name in apps.MASK_SHAPES}
    table, _ = evaluation.inpainting_table(ctx.model, ctx.schedule, clean, labels, masks, inpainting_methods(s, ctx.schedule.T),
                                           fills=s["fills"], prediction_type=ctx.pt)
    floor = frechet_distance(clean)
    result = {"n": ctx.n, "fills": s["fills"], "table": table, "floor_fid": floor,
              "hole_pixels": {name: int((~known).sum()) for name, known in masks.items()}}
    return result, evaluation.format_inpainting(table) + f"\nFID of the {ctx.n} original digits (floor): {floor:.1f}"


def sdedit(ctx) -> tuple[dict, str]:
    s = ctx.sizes
    g = torch.Generator().manual_seed(0)
    digits = torch.arange(10).repeat(-(-ctx.n // 10))[:ctx.n]
    guides = torch.cat([evaluation.sketch_digit(int(d), jitter=1.5, generator=g) for d in digits])
    curve, _ = evaluation.sdedit_curve(ctx.model, ctx.schedule, guides, digits, s["strengths"], steps=s["steps"],
                                       prediction_type=ctx.pt)
    result = {"n": len(guides), "steps": s["steps"], "sampler": "ddim", "jitter": 1.5,
              "curve": {str(k): v for k, v in curve.items()}, "floor_fid": floor_fid(len(guides))}
    return result, evaluation.format_sdedit(curve) + f"\nFID floor (n = {len(guides)}): {result['floor_fid']:.1f}"


def style(ctx) -> tuple[dict, str]:
    s = ctx.sizes
    g = torch.Generator().manual_seed(0)
    digits = torch.arange(10).repeat(-(-ctx.n // 10))[:ctx.n]
    typed = torch.cat([evaluation.typed_digit(int(d), generator=g) for d in digits])
    common = dict(steps=s["steps"], prediction_type=ctx.pt)
    curve, _ = evaluation.sdedit_curve(ctx.model, ctx.schedule, typed, digits, s["style_strengths"], **common)
    labelled, _ = evaluation.sdedit_curve(ctx.model, ctx.schedule, typed, digits, s["style_label_strengths"],
                                          labels=digits.to(ctx.device), guidance_scale=s["style_guidance"], **common)
    result = {"n": len(typed), "steps": s["steps"], "sampler": "ddim", "font": "Pillow ImageFont.load_default",
              "curve": {str(k): v for k, v in curve.items()},
              "curve_label_given": {str(k): v for k, v in labelled.items()},
              "label_guidance_scale": s["style_guidance"], "floor_fid": floor_fid(len(typed))}
    text = "\n".join([evaluation.format_sdedit(curve), f"with the typed digit's label, w = {s['style_guidance']:g}"
                      " (agreement circular):", evaluation.format_sdedit(labelled),
                      f"FID floor (n = {len(typed)}): {result['floor_fid']:.1f}"])
    return result, text


# ---- plumbing ----

class Context:
    def __init__(self, args):
        self.device = pick_device(args.device)
        self.model, self.schedule, config = load_model(args.checkpoint, device=self.device)
        self.pt = config["prediction_type"]
        self.n, self.sizes = args.n, QUICK if args.quick else FULL
        folder = reference_model_path() if args.checkpoint is None else Path(args.checkpoint)
        weights = (folder.parent if folder.is_file() else folder) / "model.safetensors"
        self.checkpoint = {"path": "reference (shipped with ddpm_edu)" if args.checkpoint is None else str(folder),
                           "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()[:16]}


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads (load average {os.getloadavg()[0]:.1f} at the start)"


def write_atomically(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, sort_keys=True)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a data file is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# The sizes each part depends on: changing one part's sizes recomputes that part only.
PART_SIZES = {"synthesis": ("steps", "guidance_scales", "clip_scales"),
              "denoising": ("sigmas", "denoise_steps", "denoise_samples"),
              "inpainting": ("inpaint_steps", "repaint", "fills", "mean_fills"),
              "sdedit": ("steps", "strengths"),
              "style": ("steps", "style_strengths", "style_label_strengths", "style_guidance")}


def settings_of(part: str, ctx) -> dict:
    """What determines a part's numbers: a stored JSON with equal settings is not recomputed."""
    sizes = {key: ctx.sizes[key] for key in PART_SIZES[part]}
    return {"part": part, "n": ctx.n, "quick": ctx.sizes is QUICK, "sizes": json.loads(json.dumps(sizes)),
            "checkpoint": ctx.checkpoint}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)")
    parser.add_argument("--n", type=int, default=None,
                        help="digits, samples or guides per table (default 100; 6 with --quick)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped reference model)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N, mps")
    parser.add_argument("--out-dir", default=str(ROOT / "book" / "data"), help="where the JSON files go")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in well under a minute")
    parser.add_argument("--recompute", action="store_true", help="recompute parts whose JSON has the same settings")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    args.n = args.n if args.n is not None else (6 if args.quick else 100)
    if args.n < 2:
        parser.error(f"--n must be at least 2, got {args.n}")
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Context(args)
    command = "python benchmarks/applications_tables.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    out_dir = Path(args.out_dir)
    for part in args.only:
        path = out_dir / f"applications_{part}.json"
        settings = settings_of(part, ctx)
        if path.is_file() and not args.recompute:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("settings") == settings:
                print(f"== {part}: {path} has these settings already (--recompute to redo); stored table:\n"
                      f"{stored.get('printed', '')}", flush=True)
                continue
        start = time.time()
        start_hardware = hardware(ctx.device)
        result, text = globals()[part](ctx)
        seconds = time.time() - start
        result.update(settings=settings, printed=text, seconds=round(seconds, 1), command=command,
                      hardware=start_hardware, torch=torch.__version__, python=platform.python_version(),
                      date=datetime.date.today().isoformat())
        write_atomically(result, path)
        print(f"== {part}: {seconds:.0f} s on {start_hardware}, wrote {path}\n{text}", flush=True)


if __name__ == "__main__":
    main()
