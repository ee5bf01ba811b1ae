"""Sampling throughput: ddpm_edu.sampling.sample driving ddpm_edu's 'default' U-Net vs diffusers' DDPMScheduler /
DDIMScheduler driving UNet2DModel, 64 class-conditional images (labels 0..9 repeated), the same number of network
evaluations.

- DDIM-50 (eta 0, 'trailing' spacing, x0 clipped): the whole run is timed.
- DDPM-1000 is too slow to repeat on a 2-core CPU: by default only its last --ddpm-steps steps are timed (ours:
  sample(..., sampler='ddpm', t_start=N-1, x_T=noise); diffusers: DDPMScheduler with 1000 timesteps, the loop over
  its last N), and the time of the full 1000-step run is extrapolated as 1000 x (time per step). Every DDPM step
  costs the same (one network evaluation on 64 images plus elementwise work), so the extrapolation is linear.
  --ddpm-steps 1000 times the full run.

Models are timed interleaved (A, B, A, B, ...); the ratios are of medians.

    python benchmarks/bench_sampling.py                         # CPU, fp32, ~4-6 minutes on 2 busy cores
    python benchmarks/bench_sampling.py --device cuda --ddpm-steps 1000 --precisions fp32,bf16
    python benchmarks/bench_sampling.py --device cuda --precisions bf16 --channels-last --compile reduce-overhead
"""
import _bench_common as common  # first: sets OMP_WAIT_POLICY before torch loads


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


def main() -> None:
    parser = common.common_args(__doc__.splitlines()[0])
    parser.set_defaults(precisions="fp32", repeats=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--ddpm-steps", type=int, default=20, help="DDPM steps timed (1000 = the whole run)")
    parser.add_argument("--samplers", default="ddim,ddpm", help="comma list of ddim, ddpm")
    parser.add_argument("--report", default=None, help="only print the tables of an earlier result JSON")
    args = parser.parse_args()
    if args.report:
        return report(common.load_saved(args), args)
    device = common.setup(args)
    schedule = make_schedule("linear", T=1000)
    models = common.make_models(args, device)
    for model in models.values():
        model.eval()
    if args.compile:
        models = {name: torch.compile(model, mode=args.compile) for name, model in models.items()}
    x_T = torch.randn(args.batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    if args.channels_last:
        x_T = x_T.contiguous(memory_format=torch.channels_last)
    labels = (torch.arange(args.batch_size) % 10).to(device)

    results = {"batch_size": args.batch_size, "parameters": common.parameter_counts(models), "runs": {}}
    for precision in args.precisions.split(","):
        for sampler, steps in (("ddim", args.ddim_steps), ("ddpm", args.ddpm_steps)):
            if sampler not in args.samplers.split(","):
                continue
            runs = {}
            for name, model in models.items():
                if name == "ours":
                    runs[name] = ours_runner(model, schedule, x_T, labels, device, precision, sampler, steps)
                else:
                    runs[name] = diffusers_runner(model, x_T, labels, device, precision, sampler, steps)
                with torch.no_grad(), common.autocast(device, precision):  # warm-up: two network evaluations
                    for _ in range(2):
                        model(x_T, torch.full((args.batch_size,), 500, device=device), labels)
            times, loads = common.interleaved(runs, args.repeats, device, args.quiet_load, args.quiet_wait)
            key = f"{sampler}-{steps}-{precision}"
            results["runs"][key] = {
                "sampler": sampler, "steps_timed": steps, "precision": precision, "loadavg_per_round": loads,
                "models": {name: {"seconds": common.summary(t), "seconds_per_step": common.summary(
                    [s / steps for s in t])} for name, t in times.items()}}

    path = common.write_results(args, SCRIPT, device, results)
    report(results, args)
    print(f"\nwrote {path}")


def report(results: dict, args) -> None:
    goal = 1.5 if args.device == "cpu" else 2.0
    for key, run in results["runs"].items():
        models, loads = run["models"], run["loadavg_per_round"]
        full = 50 if run["sampler"] == "ddim" else 1000
        print(f"\n== {run['sampler'].upper()}, {run['steps_timed']} steps timed, {args.batch_size} images, "
              f"{run['precision']}, device {args.device}, load average {min(loads):.1f}-{max(loads):.1f} ==")
        ours = models["ours"]["seconds_per_step"]["median"]
        ours_rounds = models["ours"]["seconds_per_step"]["values"]
        rows = []
        for name, m in models.items():
            per_step = m["seconds_per_step"]
            ratio = per_step["median"] / ours
            paired = sorted(b / a for a, b in zip(ours_rounds, per_step["values"]))
            label = "DDIM-50 s" if run["sampler"] == "ddim" else "DDPM-1000 s (extrap.)"
            rows.append([name, f"{1000 * per_step['median']:.0f}",
                         f"{1000 * per_step['min']:.0f}-{1000 * per_step['max']:.0f}",
                         f"{full * per_step['median']:.1f}", f"{args.batch_size / (full * per_step['median']):.2f}",
                         "-" if name == "ours" else f"{ratio:.2f}x (goal {goal}x: {'met' if ratio >= goal else 'not met'})",
                         "-" if name == "ours" else f"{paired[0]:.2f}-{paired[-1]:.2f}"])
        common.print_table(["model", "ms/step", "spread", label, "img/s", "ours / this (speed, medians)",
                            "per-round ratios"], rows)


if __name__ == "__main__":
    main()
