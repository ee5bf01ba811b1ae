"""Where the time goes: torch.profiler on one training step (batch 128: loss, backward, AdamW) and one sampling step
(one network evaluation on 64 images, no grad) of ddpm_edu's 'default' U-Net, and of diffusers' UNet2DModel for
comparison. Prints the top operators by self CPU time and a breakdown by kind of operator.

    python benchmarks/profile_cpu.py                       # ~1-2 minutes
    python benchmarks/profile_cpu.py --precisions fp32,bf16 --top 20
    python benchmarks/profile_cpu.py --device cuda         # adds CUDA time to the profile

A single profiled step is noisy on a shared CPU; the breakdown (shares of the step) is what to read, not the
absolute times. Speed-ups suggested by the profile are timed in benchmarks/bench_speedups.py.
"""
import _bench_common as common  # first: sets OMP_WAIT_POLICY before torch loads

import torch
from torch.profiler import ProfilerActivity, profile

from ddpm_edu.schedules import make_schedule

SCRIPT = "profile_cpu"

# kinds of operators, matched in order on the operator's name
KINDS = [
    ("convolution", ("conv", "mkldnn_convolution", "slow_conv", "_convolution")),
    ("group norm", ("group_norm", "native_group_norm")),
    ("attention", ("attention", "sdpa", "bmm", "softmax", "baddbmm")),
    ("linear / matmul", ("addmm", "mm", "linear", "matmul")),
    ("optimizer", ("adam", "_foreach", "lerp", "addcdiv", "addcmul", "sqrt", "maximum")),
    ("copy / cat / pad / interpolate", ("copy", "cat", "pad", "upsample", "clone", "contiguous", "to", "_to_copy",
                                        "fill", "zero", "empty", "index")),
    ("elementwise / activation", ("silu", "add", "mul", "sub", "div", "pow", "mse", "mean", "sum", "neg", "rsub",
                                  "where", "clamp", "isfinite", "all", "any", "sin", "cos", "exp", "threshold")),
]


def kind_of(name: str) -> str:
    short = name.removeprefix("aten::").lower()
    for kind, keys in KINDS:
        if any(key in short for key in keys):
            return kind
    return "other"


def profile_once(fn, device) -> list[dict]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        common.synchronize(device)
    rows = []
    for event in prof.key_averages():
        rows.append({"name": event.key, "calls": event.count, "self_cpu_ms": event.self_cpu_time_total / 1000,
                     "cpu_total_ms": event.cpu_time_total / 1000})
    rows.sort(key=lambda r: -r["self_cpu_ms"])
    return rows


def breakdown(rows: list[dict]) -> dict[str, float]:
    totals = {}
    for row in rows:
        kind = kind_of(row["name"])
        totals[kind] = totals.get(kind, 0.0) + row["self_cpu_ms"]
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = common.common_args(__doc__.splitlines()[0])
    parser.set_defaults(precisions="fp32", baselines="diffusers-mnist")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    device = common.setup(args)
    schedule = make_schedule("linear", T=1000)
    models = common.make_models(args, device)
    x0, t, noise, y, xs, ts, ys = common.fixed_inputs(args.train_batch, args.sample_batch, device)

    results = {"train_batch": args.train_batch, "sample_batch": args.sample_batch, "profiles": {}}
    for precision in args.precisions.split(","):
        for name, model in models.items():
            step = common.make_train_step(model, schedule, device, precision)

            def train_step(step=step):
                step(x0, t, noise, y)

            @torch.no_grad()
            def sample_step():
                with common.autocast(device, precision):
                    model(xs, ts, ys)

            for _ in range(2):  # warm-up
                train_step()
                sample_step()
            for what, fn in (("train_step", train_step), ("sampling_step", sample_step)):
                load = common.loadavg()
                rows = profile_once(fn, device)
                total = sum(r["self_cpu_ms"] for r in rows)
                results["profiles"][f"{name}/{what}/{precision}"] = {
                    "loadavg": load, "total_self_cpu_ms": total, "breakdown_ms": breakdown(rows),
                    "top": rows[:args.top]}
                print(f"\n== {name}: {what}, {precision}, total self CPU {total:.0f} ms, load average {load:.1f} ==")
                common.print_table(["kind", "ms", "share"], [[k, f"{v:.0f}", f"{100 * v / total:.0f}%"]
                                                             for k, v in breakdown(rows).items()])
                print()
                common.print_table(["operator", "calls", "self ms", "share"],
                                   [[r["name"], r["calls"], f"{r['self_cpu_ms']:.1f}",
                                     f"{100 * r['self_cpu_ms'] / total:.1f}%"] for r in rows[:args.top]])
    path = common.write_results(args, SCRIPT, device, results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
