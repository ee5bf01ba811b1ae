"""DiT vs U-Net at matched parameters and training budget (chapter 3's comparison).

Trains the `tiny` U-Net and two diffusion transformers sized to match its parameter count (within 10%): a DiT
with 4x4 patches (49 tokens) and one with 2x2 patches (196 tokens). Every model sees exactly the same training:
the same batches of the mnist-subset train split in the same order, the same steps t and noise, the same 10% of
labels dropped to "no class", the same optimizer (Adam), learning rate, number of steps and seed. Then it
measures, for each model:

- the held-out loss: L_simple on the 1,000 held-out digits, with t and the noise fixed by a seed (the same for
  every model), overall and in three ranges of t;
- the FID of the project's offline metric (`ddpm_edu.metrics.frechet_distance`) on --fid-samples DDIM samples
  (eta = 0, --ddim-steps steps, labels 0..9 in turn, guidance scale 1: plain conditional sampling);
- the wall time of training and of sampling.

It writes book/data/dit_vs_unet.json (with the command, hardware and versions) and prints the table. Chapter 3
reads the JSON; it never trains these models itself.

    python benchmarks/dit_vs_unet.py                   # CPU, ~5-10 min on 2 cores
    python benchmarks/dit_vs_unet.py --quick --out /tmp/dvu.json   # a few seconds: checks the plumbing
    python benchmarks/dit_vs_unet.py --device cuda     # the same budget on a GPU
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported from elsewhere (tests)
import _bench_common as common  # noqa: E402  (first: sets OMP_WAIT_POLICY before torch loads)

import argparse  # noqa: E402
import os  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from ddpm_edu.data import load_dataset  # noqa: E402
from ddpm_edu.diffusion import diffusion_loss, q_sample  # noqa: E402
from ddpm_edu.models import make_model  # noqa: E402
from ddpm_edu.schedules import make_schedule  # noqa: E402
from ddpm_edu.unet import count_parameters  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "book" / "data" / "dit_vs_unet.json"
# name -> (preset, overrides, description); the transformers are sized to the U-Net's parameter count
MODELS = {
    "unet-tiny": ("tiny", {}, "U-Net, preset tiny (channels 8/16/16, attention at 7x7)"),
    "dit-p4": ("dit-tiny", dict(patch_size=4, hidden_size=44, depth=2, num_heads=2),
               "DiT, 4x4 patches (49 tokens), D = 44, 2 blocks"),
    "dit-p2": ("dit-tiny", dict(patch_size=2, hidden_size=44, depth=2, num_heads=2),
               "DiT, 2x2 patches (196 tokens), D = 44, 2 blocks"),
}
REFERENCE = "unet-tiny"
MATCH_TOLERANCE = 0.10  # parameter counts within 10% of the reference
T_RANGES = ((0, 100), (100, 500), (500, 1000))  # code steps [low, high)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"result JSON (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--quick", action="store_true", help="a tiny run that checks the plumbing (seconds, no FID)")
    p.add_argument("--steps", type=int, default=600, help="training steps per model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the same for every model)")
    p.add_argument("--p-uncond", type=float, default=0.1, help="fraction of labels dropped to 'no class'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on a CPU")
    p.add_argument("--fid-samples", type=int, default=300, help="DDIM samples per model for the FID (0: skip)")
    p.add_argument("--ddim-steps", type=int, default=25)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {list(MODELS)}")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.fid_samples = 4, 8, 0
    for name in ("steps", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.fid_samples and args.fid_samples < 20:
        p.error("--fid-samples must be 0 (skip) or >= 20")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        p.error(f"--models must name some of {list(MODELS)}, got {unknown or args.models}")
    return args


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {common.cpu_name()}, {torch.get_num_threads()} threads ({os.cpu_count()} cores visible)"


def build(name: str, device: torch.device):
    preset, overrides, _ = MODELS[name]
    torch.manual_seed(0)  # the same initial weights every run
    return make_model(preset, **overrides).to(device)


def train(model, schedule, data, args, device) -> dict:
    """args.steps of Adam on L_simple; batches, t, noise and label dropout come from one seeded generator, so
    every model sees exactly the same training data."""
    g = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    null = model.config.num_classes
    losses = []
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        idx = torch.randint(0, len(data), (args.batch_size,), generator=g)
        x0, y = data.images[idx], data.labels[idx].clone()
        y[torch.rand(args.batch_size, generator=g) < args.p_uncond] = null
        t = torch.randint(0, schedule.T, (args.batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss = diffusion_loss(model, schedule, x0.to(device), t.to(device), noise.to(device), labels=y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10):]
    return {"train_seconds": round(seconds, 2), "seconds_per_step": round(seconds / args.steps, 4),
            "final_train_loss": round(sum(tail) / len(tail), 4)}


@torch.no_grad()
def heldout_loss(model, schedule, heldout, args, device, batch: int = 250) -> dict:
    """L_simple on every held-out digit, with its true label, at a step t and noise fixed by the seed."""
    g = torch.Generator().manual_seed(args.seed + 1)
    t = torch.randint(0, schedule.T, (len(heldout),), generator=g)
    noise = torch.randn(heldout.images.shape, generator=g)
    model.eval()
    per_image = []
    for i in range(0, len(heldout), batch):
        x0, y = heldout.images[i:i + batch].to(device), heldout.labels[i:i + batch].to(device)
        xt = q_sample(schedule, x0, t[i:i + batch].to(device), noise[i:i + batch].to(device))
        err = (model(xt, t[i:i + batch].to(device), y) - noise[i:i + batch].to(device)) ** 2
        per_image.append(err.flatten(1).mean(1).cpu())
    per_image = torch.cat(per_image)
    result = {"heldout_loss": round(per_image.mean().item(), 4),
              "heldout_loss_se": round((per_image.std() / len(per_image) ** 0.5).item(), 4)}
    for low, high in T_RANGES:
        keep = (t >= low) & (t < high)
        result[f"heldout_loss_t{low}_{high}"] = round(per_image[keep].mean().item(), 4)
    return result


def fid_of_samples(model, schedule, args, device) -> dict:
    from ddpm_edu.metrics import frechet_distance
    from ddpm_edu.sampling import sample_n

    g = torch.Generator(device=device).manual_seed(args.seed + 2)
    labels = torch.arange(args.fid_samples) % 10
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        x = sample_n(model, schedule, args.fid_samples, (1, 28, 28), batch_size=100, labels=labels.to(device),
                     generator=g, sampler="ddim", eta=0.0, steps=args.ddim_steps, device=device)
    seconds = time.perf_counter() - start
    return {"fid": round(frechet_distance(x.cpu()), 2), "sample_seconds": round(seconds, 2)}


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    schedule = make_schedule("linear", T=1000)
    data = load_dataset("mnist-subset", "train")
    heldout = load_dataset("mnist-subset", "heldout")
    if args.quick:
        heldout.images, heldout.labels = heldout.images[:64], heldout.labels[:64]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    reference_params = count_parameters(build(REFERENCE, device))
    results = {}
    for name in args.models:
        model = build(name, device)
        params = count_parameters(model)
        if abs(params / reference_params - 1) > MATCH_TOLERANCE:
            raise SystemExit(f"{name} has {params} parameters, not within {MATCH_TOLERANCE:.0%} of "
                             f"{REFERENCE}'s {reference_params}")
        row = {"description": MODELS[name][2], "config": model.config.to_dict(), "parameters": params}
        row |= train(model, schedule, data, args, device)
        row |= heldout_loss(model, schedule, heldout, args, device)
        if args.fid_samples:
            row |= fid_of_samples(model, schedule, args, device)
        results[name] = row
        print(f"{name}: {row['train_seconds']:.0f} s training, held-out loss {row['heldout_loss']:.4f}"
              + (f", FID {row['fid']:.1f}" if "fid" in row else ""), flush=True)
    return {
        "command": "python benchmarks/dit_vs_unet.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(device), "torch": torch.__version__, "python": platform.python_version(),
        "load_average_1min": {"start": load_before,
                              "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "quick": args.quick,
        "budget": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "optimizer": "Adam",
                   "p_uncond": args.p_uncond, "seed": args.seed, "data": "mnist-subset train (4,000 digits)",
                   "schedule": "linear, T = 1000", "heldout_images": len(heldout)},
        "fid": {"samples": args.fid_samples, "sampler": f"DDIM eta=0, {args.ddim_steps} steps",
                "labels": "0..9 in turn", "guidance_scale": 1.0},
        "reference": REFERENCE, "t_ranges": [list(r) for r in T_RANGES],
        "models": results,
    }


def table(result: dict) -> str:
    has_fid = any("fid" in r for r in result["models"].values())
    head = ["model", "parameters", "s/step", "train loss", "held-out loss"] + \
        [f"t in [{lo},{hi})" for lo, hi in result["t_ranges"]] + (["FID", "sampling s"] if has_fid else [])
    lines = [" | ".join(head)]
    for name, r in result["models"].items():
        cells = [name, f"{r['parameters']:,}", f"{r['seconds_per_step']:.3f}", f"{r['final_train_loss']:.4f}",
                 f"{r['heldout_loss']:.4f} ± {r['heldout_loss_se']:.4f}"] + \
            [f"{r[f'heldout_loss_t{lo}_{hi}']:.4f}" for lo, hi in result["t_ranges"]]
        if has_fid:
            cells += [f"{r['fid']:.1f}", f"{r['sample_seconds']:.0f}"]
        lines.append(" | ".join(cells))
    b = result["budget"]
    lines.append(f"{b['steps']} steps, batch {b['batch_size']}, Adam lr {b['lr']}, seed {b['seed']}; "
                 f"{result['hardware']}, torch {result['torch']}")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(table(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
