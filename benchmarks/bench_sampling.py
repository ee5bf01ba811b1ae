"""Sampling throughput: ddpm_edu.sampling.sample driving ddpm_edu's 'default' U-Net vs diffusers' DDPMScheduler /
DDIMScheduler driving UNet2DModel, 64 class-conditional images (labels 0..9 repeated), the same number of network
evaluations.

- DDIM-50 (eta 0, 'trailing' spacing, x0 clipped): the whole run is timed.
- DDPM-1000 is too slow to repeat on a 2-core CPU: by default only its last --ddpm-steps steps are timed (ours:
  sample(..., sampler='ddpm', t_start=N-1, x_T=noise); diffusers: DDPMScheduler with 1000 timesteps, the loop over
  its last N), and the time of the full 1000-step run is extrapolated as 1000 x (time per step). Every DDPM step
  costs the same (one network evaluation on 64 images plus elementwise work), so the extrapolation is linear.
  --ddpm-steps 1000 times the full run.

Models are timed interleaved (A, B, A, B, ...); the ratios are of medians. Each row is printed as soon as it is
timed. --variants runs several set-ups in one invocation, each model rebuilt for it: eager, channels-last,
compile (torch.compile, default mode) and reduce-overhead (torch.compile capturing CUDA graphs). On a GPU the
default is eager, reduce-overhead and channels-last, fp32 and bf16, DDPM timed over its last 200 steps, and a time
budget of 150 s (--budget: no new row starts after it; the rows not run are listed), so that the training and
sampling benchmarks fit in 3 minutes together. Without diffusers installed, only ours is timed.

    python benchmarks/bench_sampling.py                         # CPU, fp32, eager, ~4-6 minutes on 2 busy cores
    python benchmarks/bench_sampling.py --device cuda           # every variant, fp32 and bf16
    python benchmarks/bench_sampling.py --device cpu --quick    # a smoke test (seconds)
"""
import _bench_common as common  # first: sets OMP_WAIT_POLICY before torch loads

import copy
import sys
import time

import torch

from ddpm_edu.sampling import sample
from ddpm_edu.schedules import make_schedule

SCRIPT = "bench_sampling"


def ours_runner(model, schedule, x_T, labels, device, precision, sampler: str, steps: int):
    def run():
        with common.autocast(device, precision):
            if sampler == "ddim":
                return sample(model, schedule, x_T=x_T, sampler="ddim", steps=steps, labels=labels,
                              generator=torch.Generator().manual_seed(1))
            return sample(model, schedule, x_T=x_T, sampler="ddpm", t_start=steps - 1, labels=labels,
                          generator=torch.Generator().manual_seed(1))

    return run


def diffusers_runner(model, x_T, labels, device, precision, sampler: str, steps: int):
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler == "ddim":
        scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                                  timestep_spacing="trailing")
        scheduler.set_timesteps(steps)
        timesteps = scheduler.timesteps
    else:
        scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                                  variance_type="fixed_small")
        scheduler.set_timesteps(1000)
        timesteps = scheduler.timesteps[-steps:]  # the last `steps` steps of DDPM-1000: 'steps-1' .. 0

    @torch.no_grad()
    def run():
        generator = torch.Generator().manual_seed(1)
        x = x_T.clone()
        for t in timesteps:
            with common.autocast(device, precision):
                out = model(x, t.expand(x.shape[0]).to(device), labels)
            x = scheduler.step(out.float(), t, x, generator=generator).prev_sample
        return x

    return run


VARIANTS = common.VARIANTS


def variant_args(args, variant: str):
    """A copy of args set up for one variant (models are rebuilt per variant)."""
    if variant not in VARIANTS:
        raise SystemExit(f"error: --variants: expected a comma list of {', '.join(VARIANTS)}, got {variant!r}")
    mode, channels_last = VARIANTS[variant]
    v = copy.copy(args)
    v.channels_last = args.channels_last or channels_last
    v.compile = args.compile if mode == "none" else mode
    return v


def main() -> None:
    parser = common.common_args(__doc__.splitlines()[0])
    parser.set_defaults(precisions=None, repeats=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--ddpm-steps", type=int, default=None,
                        help="DDPM steps timed (1000 = the whole run; default 20 on a CPU, 200 on a GPU)")
    parser.add_argument("--samplers", default="ddim,ddpm", help="comma list of ddim, ddpm")
    parser.add_argument("--variants", default=None,
                        help=f"comma list of {', '.join(VARIANTS)} "
                             "(default: eager,reduce-overhead,channels-last on a GPU, eager on a CPU)")
    parser.add_argument("--budget", "--time-budget", dest="time_budget", type=float, default=None,
                        help="seconds; no new row starts after it (default on a GPU: 150)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--report", default=None, help="only print the tables of an earlier result JSON")
    args = parser.parse_args()
    if args.report:
        return report(common.load_saved(args), args)
    gpu = args.device.startswith("cuda")
    args.precisions = args.precisions or ("fp32,bf16" if gpu else "fp32")
    args.repeats = args.repeats or 3
    args.variants = args.variants or ("eager,reduce-overhead,channels-last" if gpu else "eager")
    args.ddpm_steps = args.ddpm_steps or (200 if gpu else 20)
    if args.time_budget is None and gpu:
        args.time_budget = 150.0
    if args.quick:
        args.batch_size, args.ddim_steps, args.ddpm_steps, args.repeats = 4, 2, 2, 1
        args.precisions, args.quiet_wait = "fp32", 0.0
    device = common.setup(args)
    schedule = make_schedule("linear", T=1000)
    started = time.perf_counter()
    results = {"batch_size": args.batch_size, "runs": {}, "not_run": []}
    for variant in args.variants.split(","):
        vargs = variant_args(args, variant)
        models = common.make_models(vargs, device)
        results.setdefault("parameters", common.parameter_counts(models))
        for model in models.values():
            model.eval()
        if vargs.compile:
            models = {name: torch.compile(model, mode=vargs.compile) for name, model in models.items()}
        x_T = torch.randn(args.batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
        if vargs.channels_last:
            x_T = x_T.contiguous(memory_format=torch.channels_last)
        labels = (torch.arange(args.batch_size) % 10).to(device)
        for precision in args.precisions.split(","):
            for sampler, steps in (("ddim", args.ddim_steps), ("ddpm", args.ddpm_steps)):
                if sampler not in args.samplers.split(","):
                    continue
                key = f"{sampler}-{steps}-{precision}-{variant}"
                if args.time_budget is not None and time.perf_counter() - started > args.time_budget:
                    results["not_run"].append(key)
                    print(f"(time budget of {args.time_budget:.0f} s spent: {key} not run)", flush=True)
                    continue
                runs = {}
                for name, model in models.items():
                    if name == "ours":
                        runs[name] = ours_runner(model, schedule, x_T, labels, device, precision, sampler, steps)
                    else:
                        runs[name] = diffusers_runner(model, x_T, labels, device, precision, sampler, steps)
                    with torch.no_grad(), common.autocast(device, precision):  # warm-up (and compilation)
                        for _ in range(3 if vargs.compile else 2):
                            model(x_T, torch.full((args.batch_size,), 500, device=device), labels)
                times, loads = common.interleaved(runs, args.repeats, device, args.quiet_load, args.quiet_wait)
                results["runs"][key] = {
                    "sampler": sampler, "steps_timed": steps, "precision": precision, "variant": variant,
                    "loadavg_per_round": loads,
                    "models": {name: {"seconds": common.summary(t), "seconds_per_step": common.summary(
                        [s / steps for s in t])} for name, t in times.items()}}
                report({"runs": {key: results["runs"][key]}}, args)  # print the row now
    results["seconds"] = round(time.perf_counter() - started, 1)
    path = common.write_results(args, SCRIPT, device, results)
    print(f"\n{results['seconds']:.0f} s in all; wrote {path}")


def report(results: dict, args) -> None:
    goal = 1.5 if args.device == "cpu" else 2.0
    for key, run in results["runs"].items():
        models, loads = run["models"], run["loadavg_per_round"]
        full = run["steps_timed"] if run["sampler"] == "ddim" else 1000
        print(f"\n== {run['sampler'].upper()}, {run['steps_timed']} steps timed, {args.batch_size} images, "
              f"{run['precision']}, {run.get('variant', 'eager')}, device {args.device}, "
              f"load average {min(loads):.1f}-{max(loads):.1f} ==")
        ours = models["ours"]["seconds_per_step"]["median"]
        ours_rounds = models["ours"]["seconds_per_step"]["values"]
        rows = []
        for name, m in models.items():
            per_step = m["seconds_per_step"]
            ratio = per_step["median"] / ours
            paired = sorted(b / a for a, b in zip(ours_rounds, per_step["values"]))
            label = f"DDIM-{full} s" if run["sampler"] == "ddim" else "DDPM-1000 s" + (" (extrap.)" if run["steps_timed"] < 1000 else "")
            rows.append([name, f"{1000 * per_step['median']:.2f}",
                         f"{1000 * per_step['min']:.2f}-{1000 * per_step['max']:.2f}",
                         f"{full * per_step['median']:.1f}", f"{args.batch_size / (full * per_step['median']):.2f}",
                         "-" if name == "ours" else f"{ratio:.2f}x (goal {goal}x: {'met' if ratio >= goal else 'not met'})",
                         "-" if name == "ours" else f"{paired[0]:.2f}-{paired[-1]:.2f}"])
        common.print_table(["model", "ms/step", "spread", label, "img/s", "ours / this (speed, medians)",
                            "per-round ratios"], rows)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
