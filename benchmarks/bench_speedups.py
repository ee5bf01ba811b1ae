"""Candidate speed-ups suggested by profile_cpu.py, each timed against the unchanged 'default' U-Net, interleaved.

The package is not modified: each variant is a copy of the model (same weights) with one change.
- channels_last: model and inputs in torch.channels_last (NHWC) memory format, the layout oneDNN's convolutions
  use natively on the CPU (convolutions are ~80% of a training step in NCHW).
- no_input_checks: UNet.forward without check_model_inputs' validation (isfinite over x and t, range checks),
  patched on this copy only: measures what the checks cost.

    python benchmarks/bench_speedups.py                 # ~3-5 minutes
    python benchmarks/bench_speedups.py --precisions fp32 --repeats 7
"""
import _bench_common as common  # first: sets OMP_WAIT_POLICY before torch loads

import copy
import types

import torch

import ddpm_edu.unet as unet_module
from ddpm_edu.schedules import make_schedule
from ddpm_edu.models import make_model

SCRIPT = "bench_speedups"


def unchecked_forward(self, x, t, y=None):
    """UNet.forward with the input validation replaced by the bare conversions it returns."""
    t = torch.as_tensor(t, device=x.device).float().expand(x.shape[0])
    if y is None and self.config.num_classes is not None:
        y = torch.full((x.shape[0],), self.config.num_classes, dtype=torch.long, device=x.device)
    original = unet_module.check_model_inputs
    unet_module.check_model_inputs = lambda x, t_, y_, *args: (t, y)
    try:
        return unet_module.UNet.forward(self, x, t, y)
    finally:
        unet_module.check_model_inputs = original


def variants(base):
    channels_last = copy.deepcopy(base).to(memory_format=torch.channels_last)
    unchecked = copy.deepcopy(base)
    unchecked.forward = types.MethodType(unchecked_forward, unchecked)
    return {"baseline": (base, False), "channels_last": (channels_last, True), "no_input_checks": (unchecked, False)}


def main() -> None:
    parser = common.common_args(__doc__.splitlines()[0])
    parser.set_defaults(baselines="", repeats=5)
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="training steps / network evaluations per round")
    args = parser.parse_args()
    device = common.setup(args)
    schedule = make_schedule("linear", T=1000)
    torch.manual_seed(0)
    base = make_model("default").to(device)
    models = variants(base)
    x0, t, noise, y, xs, ts, ys = common.fixed_inputs(args.train_batch, args.sample_batch, device)

    with torch.no_grad():  # the variants compute the same function
        reference = base(xs, ts, ys)
        for name, (model, cl) in models.items():
            out = model(xs.contiguous(memory_format=torch.channels_last) if cl else xs, ts, ys)
            assert torch.allclose(out, reference, atol=1e-4), name

    results = {"runs": {}}
    for precision in args.precisions.split(","):
        for what in ("train_step", "sampling_step"):
            runs = {}
            for name, (model, cl) in models.items():
                fmt = torch.channels_last if cl else torch.contiguous_format
                xa, na, xsa = (v.contiguous(memory_format=fmt) for v in (x0, noise, xs))
                if what == "train_step":  # lr 0: the weights stay equal
                    step = common.make_train_step(model, schedule, device, precision, lr=0.0, memory_format=fmt)

                    def run(step=step, xa=xa, na=na):
                        for _ in range(args.steps):
                            step(xa, t, na, y)
                else:
                    @torch.no_grad()
                    def run(model=model, xsa=xsa):
                        for _ in range(args.steps):
                            with common.autocast(device, precision):
                                model(xsa, ts, ys)
                run()  # warm-up
                runs[name] = run
            times, loads = common.interleaved(runs, args.repeats, device, args.quiet_load, args.quiet_wait)
            base_times = times["baseline"]
            block = {"loadavg_per_round": loads, "variants": {}}
            for name, ts_ in times.items():
                paired = sorted(b / v for b, v in zip(base_times, ts_))
                block["variants"][name] = {"seconds": common.summary(ts_),
                                           "speedup_ratio_of_medians": common.summary(base_times)["median"]
                                           / common.summary(ts_)["median"],
                                           "speedup_paired_per_round": common.summary(paired)}
            results["runs"][f"{what}/{precision}"] = block
            print(f"\n== {what}, {precision}, load average {min(loads):.1f}-{max(loads):.1f} ==")
            common.print_table(["variant", "ms (median)", "spread", "speed-up (ratio of medians)",
                                "paired per-round speed-ups (min / median / max)"],
                               [[n, f"{1000 * v['seconds']['median'] / args.steps:.0f}",
                                 f"{1000 * v['seconds']['min'] / args.steps:.0f}-"
                                 f"{1000 * v['seconds']['max'] / args.steps:.0f}",
                                 f"{v['speedup_ratio_of_medians']:.2f}x",
                                 f"{v['speedup_paired_per_round']['min']:.2f} / "
                                 f"{v['speedup_paired_per_round']['median']:.2f} / "
                                 f"{v['speedup_paired_per_round']['max']:.2f}"]
                                for n, v in block["variants"].items()])
    path = common.write_results(args, SCRIPT, device, results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
